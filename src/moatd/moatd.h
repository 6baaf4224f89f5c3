/*
 * moatd: the target server. It hosts enclaves for remote hosts through the
 * public Moat API (each session's enclave runs in a local backend) and
 * serves the moat.v1.Target gRPC service (proto/moat/v1/target.proto).
 *
 * The daemon's state is one moatd, handed to every handler as the rpc
 * layer's ctx. The files, one job each:
 *   main.c      signals and the server loop
 *   options.c   the command line
 *   startup.c   the default state directory, the URI to announce, start-up warnings
 *   config.c    the configuration file (--config)
 *   reload.c    SIGHUP: what can change while serving
 *   notify.c    systemd: readiness, reload, watchdog
 *   metrics.c   counters and the Prometheus text; metrics_http.c serves it (--metrics-listen)
 *   log.c       the log
 *   identity.c  the Ed25519 identity key and signing
 *   service.c   method dispatch and the reply helpers every handler uses
 *   health.c    grpc.health.v1.Health/Check and Watch
 *   session.c   the session table, authentication, references, lease and reclaim rules, Destroy
 *   load.c      Load and its signed report
 *   upload.c    Upload
 *   store.c     the uploaded images: quota, eviction, the bound on uploads at once
 *   attach.c    Attach streams: entry calls and the enclave's exit calls over the stream
 */
#ifndef MOAT_MOATD_H
#define MOAT_MOATD_H

#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <openssl/evp.h>

#include <moat/moat.h>

#include "codec/protocol.h"
#include "rpc/rpc.h"
#include "util/util.h"

#ifndef MOATD_DEFAULT_BACKEND
#define MOATD_DEFAULT_BACKEND "sim"
#endif

/*
 * Default of --max-nesting: the same budget as the proc runner's
 * (MOAT_PROC_MAX_NESTING). Every level lives on the stack of the thread
 * that serves the Attach stream, sized for it: MOATD_STACK_BASE plus
 * MOATD_STACK_PER_LEVEL a level. With --backend sim a level took about
 * 1.2 KiB (enclave frames included) in a normal build; sanitizer builds
 * take several times that, so 8 KiB leaves room (only touched pages cost
 * memory). tests/remote's nesting test goes to the limit.
 */
#define MOATD_DEFAULT_MAX_NESTING 1024
#define MOATD_STACK_BASE          ((size_t)512 << 10)
#define MOATD_STACK_PER_LEVEL     ((size_t)8 << 10)
/* The stack of a thread that serves an Attach stream, for --max-nesting levels. */
#define moatd_stack_bytes(levels) (MOATD_STACK_BASE + (size_t)(levels)*MOATD_STACK_PER_LEVEL)

/* Defaults of --max-store-bytes, --max-uploads and --socket-mode. */
#define MOATD_DEFAULT_MAX_STORE   ((size_t)1 << 30)
#define MOATD_DEFAULT_MAX_UPLOADS 4
#define MOATD_DEFAULT_SOCKET_MODE 0600

typedef struct moatd_config {
	const char *listen;
	const char *tls_cert, *tls_key, *tls_client_ca;
	const char *enclave_dir;
	const char *state_dir;
	const char *endorsement; /* --identity-endorsement FILE (moat endorse's output), or NULL */
	int print_key;           /* --print-key: print the identity key and exit */
	const char *ready_file;
	const char *backend;
	int allow_upload;
	int allow_debug;          /* --allow-debug: sessions may run in debug mode */
	int insecure_upload;      /* --allow-upload on a plaintext listener others can reach */
	size_t max_store;         /* bytes of uploaded images kept */
	unsigned int max_uploads; /* uploads received at once */
	unsigned int socket_mode; /* of a unix: listener's socket file */
	unsigned int max_sessions;
	unsigned int max_threads;
	unsigned int max_nesting; /* host entry calls nested at once on one Attach stream */
	size_t max_message;
	size_t max_image;
	unsigned int grace_ms;
	unsigned int shutdown_s;
	int parent_fd;
	int log_level;              /* 0 error, 1 warn, 2 info, 3 debug */
	int log_format;             /* MOATD_LOG_TEXT or MOATD_LOG_JSON */
	const char *config_file;    /* --config FILE, read before the command line */
	const char *metrics_listen; /* --metrics-listen HOST:PORT, or NULL */
	/* The serving core's bounds (main.c, service.c). */
	unsigned int max_attached;       /* attached streams (host threads and leases) in all */
	unsigned int max_pending;        /* unary calls waiting for their request */
	unsigned int max_watches;        /* open Health/Watch streams */
	unsigned int max_connections;    /* open connections (plaintext listeners) */
	unsigned int request_timeout_ms; /* longest wait for a request message */
	int ignore_fd_limit;             /* start even when the limits need more descriptors */
} moatd_config;

typedef struct session session;

typedef struct moatd {
	moatd_config cfg;
	EVP_PKEY *key;
	uint8_t public_key[32];
	uint8_t endorsement[64]; /* a CA's signature over public_key, sent with every LoadResponse */
	int has_endorsement;
	volatile int stop;
	volatile sig_atomic_t draining; /* SIGUSR2: no new sessions, stop once the last one ended */
	/* The session table (session.c). lock also guards every session's counters and flags. */
	pthread_mutex_t lock;
	session *sessions;
	unsigned int n_sessions; /* sessions in the table plus Loads under way */
	/* The image store (store.c); store_lock is taken before lock, never after. */
	pthread_mutex_t store_lock;
	pthread_cond_t store_slot; /* an upload ended */
	unsigned int uploads;      /* uploads under way */
	size_t store_reserved;     /* bytes reserved by uploads under way */
	unsigned int attached;     /* Attach streams admitted, of every session (guarded by lock) */
	moat_rpc_server *srv;      /* the rpc server, once it serves */
	int health_sent;           /* the status last sent to Health/Watch streams (1 SERVING) */
} moatd;

/* An open call of a session, so that Destroy can end it. */
typedef struct stream_ref {
	moat_rpc_call *call;
	struct stream_ref *next;
} stream_ref;

struct session {
	moatd *d;
	char id[33];
	char token_hex[65];
	moat_enclave *enclave;
	char image[65];       /* SHA-256 (hex) of the uploaded image it runs; "" for a named one */
	unsigned int refs;    /* the table's reference plus one per running handler */
	unsigned int streams; /* Attach streams serving host threads */
	unsigned int busy;    /* entry calls running in the enclave (nested ones included) */
	int stopped;          /* moatd_target_stopping ended its calls */
	int removed;
	/*
	 * The lease rule: a session lives while one of its lease streams is
	 * open, and for the grace period after the last one closed (a new lease
	 * within it keeps the session). A host that never opens a lease keeps
	 * its session alive with its Attach streams instead, and has 10 s more
	 * than the grace period after Load and after its last stream closed.
	 */
	unsigned int leases;   /* open lease streams */
	int lease_seen;        /* a lease was opened: leases alone keep the session */
	struct timespec since; /* load time, or when the last stream that held it closed */
	stream_ref *calls;     /* every open stream, so Destroy can end them */
	pthread_cond_t idle;
	struct session *next;
};

/* ---- Log (log.c) ---- */

enum { MOATD_LOG_ERROR, MOATD_LOG_WARN, MOATD_LOG_INFO, MOATD_LOG_DEBUG };
enum { MOATD_LOG_TEXT, MOATD_LOG_JSON };

void moatd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* moatd_log with lines rate-limited by key (any address) instead of by fmt: kinds of line that share a
 * format. */
void moatd_log_keyed(int level, const void *key, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The id of the session whose Attach stream this thread serves, or NULL (attach.c). */
const char *moatd_current_session(void);
/* Process-wide, like stderr itself; set from the command line (and again on SIGHUP). */
extern int moatd_log_level;
/*
 * Write lines in format (MOATD_LOG_TEXT: time, level and message, or the
 * journal's "<priority>message" when stderr is the journal's stream;
 * MOATD_LOG_JSON: one object per line). Called at start-up and on reload.
 */
void moatd_log_set_format(int format);

/* ---- Command line (options.c) ---- */

/*
 * Fill c from --config FILE, then argv (again on reload: it starts getopt
 * afresh). Returns 0 to go on, 1 when done (--help, --version), 2 on a usage
 * error (reported on stderr).
 */
int moatd_options_parse(moatd_config *c, int argc, char **argv);
/*
 * Set option name (a long option's name without "--") to value, as a
 * configuration file does; flags take true/false, yes/no, on/off, 1/0.
 * Returns 0, -1 for a bad value, -2 for no such key (or one a file may not set).
 */
int moatd_option_set(moatd_config *c, const char *name, const char *value);

/* ---- Configuration file (config.c) ---- */

/* Apply the keys of INI file path to c (values kept until moatd_config_file_free). Returns 0 or -1
 * (reported). */
int moatd_config_file_load(moatd_config *c, const char *path);
void moatd_config_file_free(void);

/* ---- Metrics (metrics.c, metrics_http.c) ---- */

/* Count a call of gRPC method (its full path). */
void moatd_metrics_call(const char *method);
/* Count a refusal with Moat code code. */
void moatd_metrics_refusal(int code);
/* Count count refusals the rpc server made itself, of kind refusal (MOAT_RPC_REFUSED_*). */
void moatd_metrics_server_refusal(int refusal, unsigned int count);
/* Count an entry call that ended with code after ns nanoseconds, and its items' bytes. */
void moatd_metrics_entry(int code, uint64_t ns, const moat_msg *in, const moat_msg *out);
void moatd_metrics_reload(void);
/* The metrics in the Prometheus text format (malloc'd, *len bytes), or NULL. */
char *moatd_metrics_render(moatd *d, size_t *len);
/* Serve GET /metrics on listen (HOST:PORT) from a thread of its own. Returns 0 or -1 (logged). */
int moatd_metrics_start(moatd *d, const char *listen);
void moatd_metrics_stop(void);

/* ---- SIGHUP (reload.c) and systemd (notify.c) ---- */

/* Remember the command line a reload parses again. */
void moatd_reload_init(int argc, char **argv);
/* From a signal handler: reload on the server loop's next turn. */
void moatd_reload_request(void);
/* On the server loop: reload when asked (log level and format, enclave directory, TLS files). */
void moatd_reload_poll(moatd *d);

/* Tell systemd (when it started moatd) that moatd serves on uri, and start the watchdog pings. */
void moatd_notify_ready(const char *uri);
/* Around a reload: RELOADING=1 (done 0), then READY=1 (done 1). */
void moatd_notify_reloading(int done);
void moatd_notify_stopping(void);
/* On every turn of the server loop: ping systemd's watchdog when it is due. */
void moatd_notify_tick(void);

/* ---- Start-up conventions (startup.c) ---- */

/* The state directory of moatd run as root, when systemd does not name one. */
#define MOATD_SYSTEM_STATE_DIR "/var/lib/moatd"

/*
 * Set c->state_dir to the default: $STATE_DIRECTORY (systemd), /var/lib/moatd
 * as root, else $XDG_STATE_HOME/moatd or ~/.local/state/moatd (parents made).
 * Returns 0, or -1 when there is none (reported on stderr).
 */
int moatd_state_dir_default(moatd_config *c);
/* The URI a host dials to reach bound address addr: grpc://, grpcs:// or unix:. */
void moatd_listen_uri(const moatd_config *c, const char *addr, char *out, size_t cap);
/* Warn about a configuration that can serve nothing (no enclave directory, no uploads). */
void moatd_startup_warnings(const moatd_config *c);

/* ---- Identity key (identity.c) ---- */

/* Load the Ed25519 identity key from the state directory, making one on first start. Returns 0 or -1. */
int moatd_identity_load(moatd *d);

/*
 * Read --identity-endorsement into d->endorsement (when one is given).
 * moatd cannot check whose CA signed it; it checks the form: 128 hex digits.
 * Returns 0 or -1 (logged).
 */
int moatd_endorsement_load(moatd *d);
int moatd_sign(moatd *d, uint8_t sig[64], const uint8_t *data, size_t len);

/* ---- Service (service.c and the handlers) ---- */

/* The methods moatd serves, and how (for the rpc server). */
extern const moat_rpc_method moatd_methods[];
extern const size_t moatd_n_methods;
/*
 * The rpc layer's admission of a stream, on its loop (ctx is the moatd):
 * authenticates an Attach stream and counts it. Returns 0, or a negative
 * code after answering the call.
 */
int moatd_admit_call(void *ctx, moat_rpc_call *call);
/* An admitted call whose handler will not run: undo its admission. */
void moatd_dropped_call(void *ctx, moat_rpc_call *call);
/* The rpc layer's handler: ctx is the moatd. Answers and frees the call. */
void moatd_handle_call(void *ctx, moat_rpc_call *call);
void moatd_handle_health(moatd *d, moat_rpc_call *call);
/* moat.v1.Target/Status: version, serving, sessions and the metrics text (health.c). */
void moatd_handle_status(moatd *d, moat_rpc_call *call);
void moatd_handle_health_watch(moatd *d, moat_rpc_call *call);
/* Is moatd serving new sessions (not stopping, not full)? */
int moatd_serving(moatd *d);
/* On every server loop turn: tell Health/Watch streams when that changed. */
void moatd_health_tick(moatd *d);
void moatd_handle_load(moatd *d, moat_rpc_call *call);
void moatd_handle_upload(moatd *d, moat_rpc_call *call);
/*
 * Serve an admitted Attach stream of session s (a lease, or a host thread);
 * it undoes the admission (moatd_attach_done) before the final status.
 */
void moatd_handle_attach(moatd *d, moat_rpc_call *call, session *s, int lease);
/* Undo an Attach stream's admission: its counts and its session reference (service.c). Once. */
void moatd_attach_done(moatd *d, moat_rpc_call *call);
void moatd_handle_destroy(moatd *d, moat_rpc_call *call);

/* End the call with the gRPC status that goes with Moat code code, and the message. */
void moatd_refuse(moat_rpc_call *call, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/*
 * Does protobuf message buf carry a NUL byte in length-delimited field
 * number field (protobuf-c would cut that string short)?
 */
int moatd_pb_field_has_nul(const uint8_t *buf, size_t len, uint32_t field);
/* Receive the single request message of a unary call (*buf malloc'd). Returns 0 or -1. */
int moatd_recv_one(moat_rpc_call *call, uint8_t **buf, size_t *len);

/* The fallback exit handler of every session's enclave (attach.c); payload is the session. */
int moatd_forward_exit(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out);

/* ---- Image store (store.c) ---- */

void moatd_store_init(moatd *d);
/* STATE_DIR/images, made if missing. Returns 0 or -1 (logged). */
int moatd_store_dir(const moatd_config *cfg, char *out, size_t cap);
/*
 * Take one of the --max-uploads slots, waiting a little for one. Answers
 * the call itself and returns -1 when none came free.
 */
int moatd_store_upload_begin(moatd *d, moat_rpc_call *call);
void moatd_store_upload_end(moatd *d);
/*
 * Make room for an image of size bytes stored as hex (evicting unused
 * images, least recently loaded first) and reserve it until
 * moatd_store_release. Answers the call and returns -1 when it cannot fit.
 */
int moatd_store_reserve(moatd *d, const char *hex, size_t size, moat_rpc_call *call);
void moatd_store_release(moatd *d, size_t size);
/*
 * Open uploaded image hex for a Load and record the load time (its mtime),
 * under the store's lock so that eviction cannot take it in between.
 * Returns the open descriptor, or -1 when there is no such image.
 */
int moatd_store_open(moatd *d, const char *hex);

/* ---- Sessions (session.c) ---- */

void moatd_sessions_init(moatd *d);
unsigned int moatd_session_count(moatd *d);
/* Reserve a slot for a Load under way; MOAT_ELIMIT when --max-sessions are there. */
int moatd_session_reserve(moatd *d);
void moatd_session_unreserve(moatd *d);
/* Put a loaded session (refs 1, the table's) into the table, in the slot reserved for it. */
void moatd_session_add(moatd *d, session *s);
/*
 * Find the session named in the call's metadata and take a reference.
 * Answers the call itself and returns NULL when it is unknown or the token
 * is wrong (the session is not touched then).
 */
session *moatd_session_auth(moatd *d, moat_rpc_call *call);
/* Drop a reference; the last one destroys the enclave. */
void moatd_session_unref(session *s);
/* Track an open call of s in r (Destroy cancels it); untrack before r goes away. */
void moatd_session_track(session *s, stream_ref *r, moat_rpc_call *call);
void moatd_session_untrack(session *s, stream_ref *r);
/* Count one more host thread; MOAT_ELIMIT past --max-threads-per-session. */
int moatd_session_attach_thread(session *s);
void moatd_session_detach_thread(session *s);
/* An entry call starts (MOAT_ECANCELED when the session or moatd is going away) or ends. */
int moatd_session_enter(session *s);
void moatd_session_leave(session *s);
/* Serve a lease stream until the host destroys the session or goes away. */
void moatd_session_serve_lease(session *s, moat_rpc_call *call);
/*
 * Destroy s from its own Attach stream keep: unlink it, end its other
 * calls, wait for their handlers and take its enclave, which the caller
 * destroys (so the finalizer's exit calls reach the host on keep). The
 * caller's reference stays; the table's is dropped.
 */
moat_enclave *moatd_session_take_for_destroy(session *s, moat_rpc_call *keep);

/* Reclaim sessions whose host went away, or that were never leased (every server loop turn). */
void moatd_tick(moatd *d);
/*
 * moatd stops: end the enclaves of sessions with calls still running, so
 * that every handler thread returns (before the server waits for them).
 */
void moatd_target_stopping(moatd *d);
/* Destroy every session that is left (at shutdown, after all handlers ended). */
void moatd_target_shutdown(moatd *d);

#endif
