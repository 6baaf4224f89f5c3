/*
 * Moat: the enclave SDK. An enclave is a shared object built against this
 * header and linked with the static runtime libmoat_enclave (never with
 * libmoat). It defines its single entry point with MOAT_ENCLAVE(init_fn);
 * init_fn registers entry handlers and receives the load-time config bytes.
 *
 *     static int hello(void *p, const moat_msg *in, moat_msg *out) { ... }
 *     static int init(const void *cfg, size_t len)
 *     {
 *         return moat_entry_register(MOAT_SELECTOR_USER, hello, NULL);
 *     }
 *     MOAT_ENCLAVE(init)
 */
#ifndef MOAT_ENCLAVE_H
#define MOAT_ENCLAVE_H

#include "common.h"
#include "errors.h"
#include "msg.h"

MOAT_BEGIN_DECL

/** ABI version of the loader/enclave interface below. */
#define MOAT_ENCLAVE_ABI_VERSION 1u
/** Name of the one symbol an enclave image exports. */
#define MOAT_ENCLAVE_SYMBOL "moat_enclave_entry"

/**
 * Entry handler: runs an entry call. Append reply items to out (never
 * NULL). Return 0 on success; any other value fails the host's call with
 * MOAT_EHANDLER, is reported to the host as moat_error.enclave_code, and
 * drops the items the handler appended.
 */
typedef int (*moat_entry_handler)(void *payload, const moat_msg *in, moat_msg *out);

/** Enclave-side handle of a thread started with moat_thread_start(). */
typedef uint64_t moat_thread;

/**
 * Register fn for entry calls with selector (>= MOAT_SELECTOR_USER). Call it
 * from init_fn. Returns 0, MOAT_EINVAL or MOAT_ENOMEM.
 */
MOAT_EXTERN(int) moat_entry_register(uint64_t selector, moat_entry_handler fn, void *payload);

/** Set a function to run once when the host destroys the enclave. */
MOAT_EXTERN(void) moat_finalizer_set(void (*fn)(void));

/**
 * Make an exit call to the host's handler for selector with items from in
 * (may be NULL); the reply items are appended to out (may be NULL). Returns
 * the handler's result: 0, a negative value the handler returned, or
 * MOAT_ENOHANDLER when the host has none. On failure out is unchanged.
 */
MOAT_EXTERN(int) moat_exit_call(uint64_t selector, const moat_msg *in, moat_msg *out);

/** Write a printf-style line to the host's stderr. Returns 0 or a negative code. */
MOAT_EXTERN(int) moat_host_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/** Read the host's wall-clock time in nanoseconds since the epoch. */
MOAT_EXTERN(int) moat_host_time(uint64_t *ns);

/**
 * Ask the host to donate a thread that runs fn(arg) inside the enclave. The
 * thread enters through MOAT_SELECTOR_DONATE on every backend. Returns 0 and
 * the thread in *out, or a negative code. Join every started thread. Not
 * available in init_fn or the finalizer (MOAT_EINVAL): the host's handle
 * does not exist yet, or is going away.
 */
MOAT_EXTERN(int) moat_thread_start(moat_thread *out, void (*fn)(void *), void *arg);

/**
 * Wait until a thread started with moat_thread_start() has finished. Returns
 * 0, MOAT_EINVAL for an unknown thread, or the negative code with which the
 * host's thread failed to enter the enclave (e.g. MOAT_ELIMIT from a target's
 * thread limit): then fn never ran and never will.
 */
MOAT_EXTERN(int) moat_thread_join(moat_thread thread);

/** Where the enclave runs, as the process that loaded it reports it (moat_host_identity). */
typedef struct moat_host_info {
	/**
	 * "sim" (inside the application's own process), "proc" (a sandboxed
	 * process of its own) or "remote" (on a target server, for a host
	 * elsewhere), as the host's moat_identity.backend names it.
	 */
	const char *backend;
	/**
	 * MOAT_ISOLATION_* layers applied to this enclave where it runs; on a
	 * target server those of the target's local backend plus
	 * MOAT_ISOLATION_REMOTE, as the host's moat_identity.isolation.
	 */
	unsigned int isolation;
	/** 1 when loaded in debug mode (MOAT_LOAD_DEBUG): a debugger may read and change it. */
	int debug;
	/**
	 * 1 when no hardware vouches for this enclave: its attestation (a
	 * target's signed load report) is simulated. Always 1 in this version.
	 */
	int simulated_attestation;
} moat_host_info;

/**
 * Fill *out with where the enclave runs. Strings in it are static. Returns
 * 0, or MOAT_EINVAL for a NULL out or before the enclave was started. The
 * answer comes from the loader, not from the application (no exit call).
 */
MOAT_EXTERN(int) moat_host_identity(moat_host_info *out);

/* ---- Loader interface (used by MOAT_ENCLAVE and by backends) ---- */

/** Functions the loader hands to the enclave. */
struct moat_runtime {
	uint32_t abi_version; /**< MOAT_ENCLAVE_ABI_VERSION */
	uint32_t size;        /**< sizeof(struct moat_runtime) */
	void *ctx;            /**< loader's context, passed back to exit_call */
	int (*exit_call)(void *ctx, uint64_t selector, const moat_msg *in, moat_msg *out);
	/* Since these fields: where the enclave runs (moat_host_identity); size says whether they are there.
	 */
	const char *backend; /**< "sim", "proc", "remote" */
	uint32_t isolation;  /**< MOAT_ISOLATION_* */
	uint32_t flags;      /**< MOAT_RUNTIME_* */
};

/** moat_runtime.flags: loaded in debug mode. */
#define MOAT_RUNTIME_DEBUG 0x1u

/** The enclave's exported entry point (MOAT_ENCLAVE_SYMBOL). */
struct moat_enclave_entry {
	uint32_t abi_version; /**< MOAT_ENCLAVE_ABI_VERSION of the SDK it was built with */
	uint32_t size;        /**< sizeof(struct moat_enclave_entry) */
	/** Run init_fn with the config bytes. Returns 0 or the init function's failure. */
	int (*start)(const struct moat_runtime *rt, const void *config, size_t config_len);
	/** Dispatch an entry call; on MOAT_EHANDLER the handler's value is in *handler_code. */
	int (*call)(uint64_t selector, const moat_msg *in, moat_msg *out, int64_t *handler_code);
	/** Run the finalizer. */
	void (*stop)(void);
};

int moat__enclave_start(const struct moat_runtime *rt, const void *config, size_t config_len);
int moat__enclave_call(uint64_t selector, const moat_msg *in, moat_msg *out, int64_t *handler_code);
void moat__enclave_stop(void);
int moat__enclave_user_init(const void *config, size_t config_len);

#ifdef __cplusplus
#define MOAT__ENCLAVE_LINKAGE extern "C"
#else
#define MOAT__ENCLAVE_LINKAGE extern
#endif

/**
 * Define the enclave's entry point; init_fn(config, len) returns 0 or
 * non-zero to refuse the load. Write it at file scope without a trailing
 * semicolon. The symbols get C linkage and default visibility, so the macro
 * also works in a C++ translation unit (where a namespace-scope const object
 * would otherwise have internal linkage and not be exported).
 */
#define MOAT_ENCLAVE(init_fn)                                                                    \
	MOAT__ENCLAVE_LINKAGE int moat__enclave_user_init(const void *config, size_t config_len) \
	{                                                                                        \
		return (init_fn)(config, config_len);                                            \
	}                                                                                        \
	MOAT__ENCLAVE_LINKAGE __attribute__((visibility("default")))                             \
	const struct moat_enclave_entry moat_enclave_entry;                                      \
	const struct moat_enclave_entry moat_enclave_entry = {                                   \
	    MOAT_ENCLAVE_ABI_VERSION, sizeof(struct moat_enclave_entry), moat__enclave_start,    \
	    moat__enclave_call, moat__enclave_stop};

MOAT_END_DECL

#endif
