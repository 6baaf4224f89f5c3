/*
 * Moat: the backend interface. A backend hosts enclave instances for the
 * core: the core checks arguments, keeps exit handlers and thread limits, and
 * dispatches each load, call and destroy to the backend chosen by the URI.
 * An implementation embeds struct moat_backend first in its own instance.
 */
#ifndef MOAT_SYS_BACKEND_H
#define MOAT_SYS_BACKEND_H

#include "../moat.h"

MOAT_BEGIN_DECL

/* 2 added start. */
#define MOAT_BACKEND_VERSION 2u

/** Capability bits of a backend. */
#define MOAT_BACKEND_CAP_ISOLATED 0x1u /**< enclave has its own address space */
#define MOAT_BACKEND_CAP_REMOTE   0x2u /**< enclave runs on a target server */
#define MOAT_BACKEND_CAP_TIMEOUT  0x4u /**< enforces call_timeout_ms */
#define MOAT_BACKEND_CAP_CRASH    0x8u /**< the host survives an enclave crash */

/**
 * Dispatcher for exit calls, provided by the core. Backends call it on the
 * host thread whose entry call is waiting, so nesting and thread affinity
 * hold on every backend.
 */
typedef int (*moat_exit_dispatch)(void *ctx, uint64_t selector, const moat_msg *in, moat_msg *out);

/** What a backend needs to open an instance. All pointers are borrowed. */
typedef struct moat_backend_params {
	const char *uri;                  /**< the backend URI as given */
	const char *path;                 /**< image path (or name with MOAT_LOAD_BY_NAME) */
	const moat_load_options *options; /**< never NULL */
	moat_exit_dispatch exit_dispatch; /**< answers the enclave's exit calls */
	void *exit_ctx;
	const char *scheme;  /**< the URI's scheme ("sim", "grpc", "unix"...) */
	const char *address; /**< what follows "scheme://" or "unix:", or NULL */
} moat_backend_params;

typedef struct moat_backend moat_backend;

/** Function table of a backend. */
typedef struct moat_backend_vtable {
	unsigned int version; /**< MOAT_BACKEND_VERSION */
	const char *name;     /**< "sim", "proc", "remote" */
	unsigned int caps;    /**< MOAT_BACKEND_CAP_* */
	/**
	 * Load the image, check the measurement pin before running anything in
	 * it, run the enclave's init (unless the options' flags have
	 * MOAT_LOAD_DEFER_INIT), and return the instance in *out.
	 */
	int (*open)(moat_backend **out, const moat_backend_params *params);
	/** Make an entry call on the calling thread. */
	int (*call)(moat_backend *backend, uint64_t selector, const moat_msg *in, moat_msg *out);
	/** Run the finalizer, release everything and free the instance. */
	void (*close)(moat_backend *backend);
	/**
	 * End the enclave at once, from any thread, while calls may be running
	 * on others: those calls and every later one return with the code the
	 * core stored in dead. close() is still called afterwards. NULL when
	 * the backend cannot stop code that is running (sim).
	 */
	void (*abort)(moat_backend *backend);
	/**
	 * Run the enclave's init on the calling thread after an open with
	 * MOAT_LOAD_DEFER_INIT; its exit calls go to exit_dispatch on this
	 * thread. Returns 0 or init's failure, recorded as open would have
	 * recorded it. close() must not run the finalizer of an instance whose
	 * init has not succeeded. Called at most once.
	 */
	int (*start)(moat_backend *backend);
} moat_backend_vtable;

/** Base of every backend instance. */
struct moat_backend {
	const moat_backend_vtable *vtable;
	uint8_t measurement[MOAT_MEASUREMENT_LEN];
	int has_target_key;
	uint8_t target_key[MOAT_TARGET_KEY_LEN];
	unsigned int isolation; /**< MOAT_ISOLATION_* */
	int debug;              /**< runs in debug mode (MOAT_LOAD_DEBUG) */
	long debug_pid;         /**< debug mode: the process to attach a debugger to, or 0 */
	/**
	 * 0 while usable; once a fatal error happened, its code. The core then
	 * fails every call with it. Backends write it with
	 * __atomic_store_n(&b->dead, code, __ATOMIC_RELEASE).
	 */
	int dead;
	/**
	 * Remote: the address of the target that hosts the session
	 * ("HOST:PORT", "unix:/PATH"), kept by the backend for the handle's
	 * life; NULL for backends that run the enclave on this machine.
	 */
	const char *target;
};

/**
 * Record an error on the calling thread's last-error record and return code.
 * For backends; fmt is printf-style.
 */
MOAT_EXTERN(int)
moat_error_set(int code, moat_origin origin, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

MOAT_END_DECL

#endif
