/*
 * Moat: the host API. An application loads an enclave image, calls it by
 * selector with messages, answers its exit calls, and destroys it. The same
 * calls work whichever backend hosts the enclave: in this process ("sim"), in
 * a sandboxed child process ("proc"), or on a target server ("local",
 * "grpc://", "grpcs://", "unix:").
 */
#ifndef MOAT_MOAT_H
#define MOAT_MOAT_H

#include "common.h"
#include "errors.h"
#include "msg.h"

MOAT_BEGIN_DECL

/** A loaded enclave. Opaque; thread-safe for calls. */
typedef struct moat_enclave moat_enclave;

/* Selectors (MOAT_SELECTOR_*) are defined in common.h, shared with enclave.h. */

/** What a call does when max_threads threads are already inside the enclave. */
typedef enum moat_thread_policy {
	MOAT_THREADS_WAIT = 0, /**< wait until a thread leaves (the default) */
	MOAT_THREADS_FAIL = 1  /**< fail at once with MOAT_EBUSY */
} moat_thread_policy;

/** Load flags. */
#define MOAT_LOAD_BY_NAME 0x1u /**< remote: path names an image in the target's enclave directory */
/**
 * proc: let the enclave make memory writable and executable (a JIT). Without
 * it only the measured image's own code is executable (MOAT_ISOLATION_WXORX).
 */
#define MOAT_LOAD_ALLOW_JIT 0x2u
/**
 * Debug mode (also set by $MOAT_DEBUG=1): the enclave's process stays
 * attachable by a debugger of the host's user (proc; moatd's proc sessions
 * when moatd runs with --allow-debug), with the image named so that gdb finds
 * its symbols; moat_identity.debug_pid says where to attach. It weakens the
 * sandbox (a debugger can read and change the enclave): never in production.
 */
#define MOAT_LOAD_DEBUG 0x4u
/**
 * Trace every entry and exit call (also set by $MOAT_TRACE=1): one line per
 * call through moat_log_set()'s function at MOAT_LOG_DEBUG level, with the
 * backend, selector, item counts and bytes, result and duration.
 */
#define MOAT_LOAD_TRACE 0x8u
/**
 * Return from moat_enclave_load() before the enclave's init function has
 * run. The application sets its exit handlers on the handle, then calls
 * moat_enclave_start(), which runs init with every exit call it makes
 * answered by those handlers, on every backend. Until init has run, entry
 * calls fail with MOAT_EINVAL (origin api) but those nested in an exit
 * handler of init on the starting thread, threads cannot be donated, and
 * moat_enclave_destroy() does not run the enclave's finalizer.
 */
#define MOAT_LOAD_DEFER_INIT 0x10u
/**
 * For a server that hosts enclaves on behalf of remote hosts (moatd): the
 * enclave's moat_host_identity() says backend "remote", with this
 * backend's isolation layers plus MOAT_ISOLATION_REMOTE, which is what the
 * remote host's moat_identity says of it.
 */
#define MOAT_LOAD_FOR_REMOTE_HOST 0x20u

/* 2 added image_name, 3 target_keys, 4 target_ca_keys; libmoat still takes the older structs. */
#define MOAT_LOAD_OPTIONS_VERSION 4

/**
 * Options for moat_enclave_load(). Initialise with MOAT_LOAD_OPTIONS_INIT and
 * set only what you need; every pointer is borrowed for the duration of the
 * load call only.
 */
typedef struct moat_load_options {
	unsigned int version; /**< MOAT_LOAD_OPTIONS_VERSION */
	/** Backend URI; NULL means $MOAT_BACKEND, else "sim". */
	const char *backend;
	/** Configuration bytes handed to the enclave's init function. */
	const void *config;
	size_t config_len;
	/** When non-NULL, the 32-byte measurement the image must have. */
	const uint8_t *expected_measurement;
	/**
	 * Most application threads inside the enclave at once; 0 means no limit.
	 * Threads the enclave starts itself (moat_thread_start) are not counted.
	 */
	unsigned int max_threads;
	/** What a call does at the limit (moat_thread_policy). */
	int thread_policy;
	/** Per-call time limit in milliseconds; 0 means none (not enforced by sim). */
	unsigned int call_timeout_ms;
	/** MOAT_LOAD_* flags. */
	unsigned int flags;
	/** grpcs://: CA bundle to verify the target (PEM file); NULL means system roots. */
	const char *tls_ca_file;
	/** grpcs://: client certificate and key (PEM files) for mutual TLS. */
	const char *tls_cert_file;
	const char *tls_key_file;
	/** grpcs://: name to check in the target's certificate instead of the host name. */
	const char *tls_server_name;
	/** Remote: when non-NULL, the 32-byte Ed25519 public key the target must have. */
	const uint8_t *target_key;
	/** Remote: keepalive period in ms used to detect a dead target; 0 means the default (1000). */
	unsigned int keepalive_ms;
	/**
	 * How errors and crash reports name the image; NULL means path. A
	 * server that loads images for others (moatd) names them as its clients
	 * did, not by its own files.
	 */
	const char *image_name;
	/**
	 * Remote: n_target_keys 32-byte Ed25519 public keys, one after another,
	 * any of which the target may have (a fleet whose targets each have
	 * their own key); with target_key set too, that one also counts. A
	 * fleet's load skips a target with another key and tries the next.
	 */
	const uint8_t *target_keys;
	size_t n_target_keys;
	/**
	 * Remote: n_target_ca_keys 32-byte Ed25519 public keys of CAs, one
	 * after another. A target whose key one of them endorsed (moat endorse,
	 * moatd --identity-endorsement) passes the key check too, besides
	 * target_key and target_keys; a fleet's load skips a target without
	 * such an endorsement and tries the next.
	 */
	const uint8_t *target_ca_keys;
	size_t n_target_ca_keys;
} moat_load_options;

#define MOAT_LOAD_OPTIONS_INIT                                                                               \
	{                                                                                                    \
		MOAT_LOAD_OPTIONS_VERSION, NULL, NULL, 0, NULL, 0, 0, 0, 0, NULL, NULL, NULL, NULL, NULL, 0, \
		    NULL, NULL, 0, NULL, 0                                                                   \
	}

/* Sandbox layers (MOAT_ISOLATION_*) are defined in common.h, shared with enclave.h. */

/** Identity of a loaded enclave. */
typedef struct moat_identity {
	/** SHA-256 of the enclave image bytes that were loaded. */
	uint8_t measurement[MOAT_MEASUREMENT_LEN];
	/** Backend name ("sim", "proc", "remote"); borrowed from the handle. */
	const char *backend;
	/** Remote only: the target server's Ed25519 public key. */
	int has_target_key;
	uint8_t target_key[MOAT_TARGET_KEY_LEN];
	/** MOAT_ISOLATION_* bits describing what separates the enclave from the host. */
	unsigned int isolation;
	/** 1 when the enclave runs in debug mode (MOAT_LOAD_DEBUG): a debugger may attach. */
	int debug;
	/**
	 * Debug mode: the process a debugger attaches to (gdb -p), as the machine
	 * that runs the enclave numbers it (the target's, for remote backends); 0
	 * otherwise.
	 */
	long debug_pid;
} moat_identity;

/**
 * Exit handler: answers an exit call made by the enclave. It runs on the
 * host thread whose entry call led to the exit call and may itself make
 * entry calls on the same enclave (nesting). Return 0 on success or a
 * negative value, which the enclave's moat_exit_call() returns; items
 * appended to out before a failure are dropped. out is never NULL.
 */
typedef int (*moat_exit_handler)(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out);

/**
 * Load the enclave image at path with the given options (NULL means
 * defaults) and return the handle in *out, which the caller destroys with
 * moat_enclave_destroy(). The image's measurement is checked against
 * options->expected_measurement before any code in it runs.
 * Returns 0 or a negative code; details in moat_error_last().
 */
MOAT_EXTERN(int) moat_enclave_load(moat_enclave **out, const char *path, const moat_load_options *options);

/**
 * Run the enclave's init function on the calling thread, after a load with
 * MOAT_LOAD_DEFER_INIT (see there). Its exit calls are answered by the
 * handlers set on the handle and may make entry calls on this thread
 * (nesting), as for any call. Returns 0, or init's failure as
 * moat_enclave_load() returns it without the flag (MOAT_EINIT with origin
 * enclave for a non-zero return, MOAT_ECRASHED for a crash...): the handle
 * is then good only for moat_enclave_destroy(), every call failing with
 * that code. MOAT_EINVAL (origin api) when enclave is NULL, was loaded
 * without the flag, or was started already.
 */
MOAT_EXTERN(int) moat_enclave_start(moat_enclave *enclave);

/**
 * Make an entry call: run the enclave's handler for selector with items
 * from in (may be NULL) and append its reply items to out (may be NULL).
 * When the call fails, out keeps exactly the items it had before (a
 * handler's partial reply is dropped). Returns 0 or a negative code. After a fatal error (MOAT_ECRASHED,
 * MOAT_ETRANSPORT, MOAT_ETIMEDOUT on backends that kill the enclave) every
 * later call fails at once with the same code.
 */
MOAT_EXTERN(int)
moat_enclave_call(moat_enclave *enclave, uint64_t selector, const moat_msg *in, moat_msg *out);

/**
 * Register fn to answer exit calls with this selector (fn NULL removes it).
 * Selectors below MOAT_SELECTOR_USER replace the runtime's own services.
 * Returns 0, MOAT_EINVAL or MOAT_ENOMEM.
 */
MOAT_EXTERN(int)
moat_enclave_set_exit_handler(moat_enclave *enclave, uint64_t selector, moat_exit_handler fn, void *payload);

/**
 * Register fn to answer every exit call that has no handler of its own,
 * including the runtime's services (log, time, thread spawn). Servers that
 * forward exit calls elsewhere use this. fn NULL removes it. Returns 0 or
 * MOAT_EINVAL.
 */
MOAT_EXTERN(int)
moat_enclave_set_fallback_handler(moat_enclave *enclave, moat_exit_handler fn, void *payload);

/**
 * Ask the target server at uri (grpc://, grpcs:// or unix:, one target) what
 * it says of itself: *out gets a malloc'd text (free it with free()): its
 * version, whether it takes new sessions, its sessions, and its metrics in
 * the Prometheus text format. TLS files come from options (NULL: none).
 * Returns 0, or MOAT_EINVAL, MOAT_ETRANSPORT, MOAT_ETARGET.
 */
MOAT_EXTERN(int) moat_target_status(char **out, const char *uri, const moat_load_options *options);

/**
 * Fill *out with the enclave's identity. Strings in it are borrowed from the
 * handle. Returns 0 or MOAT_EINVAL.
 */
MOAT_EXTERN(int) moat_enclave_identity(const moat_enclave *enclave, moat_identity *out);

/**
 * Run the enclave's finalizer, wait for threads the enclave started, release
 * the backend and free the handle. NULL is accepted. The caller must not
 * destroy a handle while other threads are calling it; after destroy the
 * pointer is gone, so no call on it can be made.
 */
MOAT_EXTERN(void) moat_enclave_destroy(moat_enclave *enclave);

/**
 * End the enclave now, from any thread, whatever it is doing. Calls running
 * on other threads return MOAT_ECANCELED as soon as the backend can stop
 * them, and so does every later call; the handle must still be destroyed,
 * and its finalizer no longer runs. On proc the enclave's process is killed
 * at once, on remote backends the target ends the session; sim cannot stop
 * code running in the host's own process, so its calls in progress run to
 * their end. Returns 0, or MOAT_EINVAL for a NULL enclave.
 */
MOAT_EXTERN(int) moat_enclave_abort(moat_enclave *enclave);

/**
 * The address of the target that hosts the enclave's session, for remote
 * backends: the one a fleet's load was placed on ("10.0.0.2:7070",
 * "[fd00::3]:7070"), or the one a single-target URI names ("HOST:PORT",
 * "unix:/PATH"; local: the private moatd's socket). NULL for backends that
 * run the enclave on this machine (sim, proc) and for a NULL enclave. The
 * string is borrowed from the handle.
 */
MOAT_EXTERN(const char *) moat_enclave_target(const moat_enclave *enclave);

/**
 * Compute the measurement (SHA-256) of the enclave image at path into out.
 * Returns 0, MOAT_EINVAL, MOAT_ENOENT, MOAT_EBADIMAGE (not a regular file)
 * or MOAT_EIO.
 */
MOAT_EXTERN(int) moat_measure_file(uint8_t out[MOAT_MEASUREMENT_LEN], const char *path);

/** How much a diagnostic matters (moat_log_fn). */
typedef enum moat_log_level {
	MOAT_LOG_ERROR = 0,
	MOAT_LOG_WARN = 1,
	MOAT_LOG_INFO = 2,
	MOAT_LOG_DEBUG = 3
} moat_log_level;

/**
 * Receives libmoat's diagnostics (a sandbox layer the system does not
 * allow, a donated thread that could not start...): one line, no newline.
 * It may be called from any thread, including libmoat's own.
 */
typedef void (*moat_log_fn)(void *payload, moat_log_level level, const char *message);

/**
 * Route libmoat's diagnostics to fn (NULL restores the default). By default
 * libmoat writes nothing, unless $MOAT_LOG names a level ("error", "warn",
 * "info", "debug"): then lines at that level or above go to stderr. Without
 * $MOAT_LOG, $MOAT_TRACE=1 sends debug lines (the call trace) there and
 * $MOAT_DEBUG=1 warnings (the line that says where to attach a debugger). What an
 * enclave logs with moat_host_log() is not a diagnostic: it goes to stderr
 * unless the application answers MOAT_SELECTOR_LOG itself.
 */
MOAT_EXTERN(void) moat_log_set(moat_log_fn fn, void *payload);

/** Return the library version string, e.g. "0.1.0". */
MOAT_EXTERN(const char *) moat_version(void);

MOAT_END_DECL

#endif
