/*
 * Moat: error codes and the thread-local last error.
 *
 * Every function returns 0 on success or one of the negative codes below.
 * Details about the most recent failure on the calling thread are kept in
 * a thread-local record read with moat_error_last().
 */
#ifndef MOAT_ERRORS_H
#define MOAT_ERRORS_H

#include "common.h"

MOAT_BEGIN_DECL

/** Error codes. Values are stable across releases. */
typedef enum moat_error_code {
	MOAT_OK = 0,
	MOAT_EINVAL = -1,       /**< invalid argument */
	MOAT_ENOMEM = -2,       /**< out of memory */
	MOAT_ENOENT = -3,       /**< enclave image (or named image) not found */
	MOAT_EBADIMAGE = -4,    /**< file is not a loadable enclave image */
	MOAT_ENOENTRY = -5,     /**< image has no Moat entry symbol */
	MOAT_EABI = -6,         /**< enclave ABI version differs from the loader's */
	MOAT_EMEASUREMENT = -7, /**< measurement differs from the pinned one */
	MOAT_EVERSION = -8,     /**< options struct version not supported */
	MOAT_ENOBACKEND = -9,   /**< backend unknown or not available */
	MOAT_ENOSELECTOR = -10, /**< no entry handler for the selector */
	MOAT_EHANDLER = -11,    /**< the enclave's entry handler returned an error */
	MOAT_ENOHANDLER = -12,  /**< the host has no exit handler for the selector */
	MOAT_EBUSY = -13,       /**< enclave thread limit reached */
	MOAT_ETIMEDOUT = -14,   /**< the call did not finish in time */
	MOAT_ETRANSPORT = -15,  /**< connection to the enclave failed or was lost */
	MOAT_EPERM = -16,       /**< authentication or authorisation refused */
	MOAT_ELIMIT = -17,      /**< a size or count limit was exceeded */
	MOAT_ECRASHED = -18,    /**< the enclave crashed */
	MOAT_EPROTO = -19,      /**< protocol error or version mismatch */
	MOAT_EIO = -20,         /**< input/output error on a local file */
	MOAT_EKEY = -21,        /**< target key or load report did not verify */
	MOAT_EINIT = -22,       /**< the enclave's init function failed */
	MOAT_ESANDBOX = -23,    /**< the sandbox refused a system call */
	MOAT_ETARGET = -24,     /**< the target server refused the request */
	MOAT_ECANCELED = -25    /**< the enclave was stopped by moat_enclave_abort() */
} moat_error_code;

/** Where an error came from (like GlobalPlatform's TEEC origin). */
typedef enum moat_origin {
	MOAT_ORIGIN_NONE = 0,
	MOAT_ORIGIN_API = 1,       /**< bad argument or local misuse */
	MOAT_ORIGIN_TRANSPORT = 2, /**< connection, TLS or peer gone */
	MOAT_ORIGIN_TARGET = 3,    /**< the target server refused */
	MOAT_ORIGIN_ENCLAVE = 4    /**< the enclave failed or crashed */
} moat_origin;

/** The last error recorded on the calling thread. */
typedef struct moat_error {
	int code;             /**< one of moat_error_code */
	moat_origin origin;   /**< where it came from */
	const char *message;  /**< human-readable detail, never NULL */
	int64_t enclave_code; /**< for MOAT_EHANDLER: the handler's return value */
} moat_error;

/**
 * Return a static description of an error code. Never returns NULL.
 */
MOAT_EXTERN(const char *) moat_strerror(int code);

/**
 * Return the last error recorded on the calling thread. The record is
 * borrowed and stays valid until the next Moat call on this thread. When no
 * error was recorded, code is MOAT_OK and message is "".
 */
MOAT_EXTERN(const moat_error *) moat_error_last(void);

/** Return the name of an origin ("api", "transport", "target", "enclave"). */
MOAT_EXTERN(const char *) moat_origin_name(moat_origin origin);

/** Clear the calling thread's last error. */
MOAT_EXTERN(void) moat_error_clear(void);

MOAT_END_DECL

#endif
