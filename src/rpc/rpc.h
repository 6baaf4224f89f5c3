/*
 * The rpc layer: the only code in Moat that includes grpc.h. It wraps gRPC
 * core's C API into what the remote backend and moatd need: channels (plain,
 * TLS, mutual TLS; TCP and unix sockets), unary calls, client streams, bidi
 * streams, and a server whose loop reads unary requests without a thread
 * and gives a thread of its own only to a stream it admitted.
 *
 * A call driven by a thread of its own has a completion queue of its own,
 * which only that thread reads (init.c says why); a call the server loop
 * drives is bound to the loop's queue. The layer never changes the process
 * environment. Files: init.c (set-up, waiting), channel.c, call.c (client
 * calls, streams, exchange), server.c (the loop, threads), server_event.c
 * (calls served without a thread), server_call.c (a handler's view),
 * listen.c (the accept thread).
 *
 * Two code spaces that never overlap: what the functions return (0, a
 * negative MOAT_E* code from moat/errors.h, or a MOAT_RPC_END/TIMEOUT
 * result, <= -1000) and gRPC status codes (>= 0, moat_rpc_code), which
 * appear in moat_rpc_status.code and as the return value of the functions
 * that end a call (moat__rpc_unary, moat__rpc_stream_finish).
 */
#ifndef MOAT_RPC_RPC_H
#define MOAT_RPC_RPC_H

#include <stddef.h>
#include <stdint.h>

/* gRPC status codes (the wire values, the same in every gRPC language). */
typedef enum moat_rpc_code {
	MOAT_RPC_OK = 0,
	MOAT_RPC_CANCELLED = 1,
	MOAT_RPC_UNKNOWN = 2,
	MOAT_RPC_INVALID_ARGUMENT = 3,
	MOAT_RPC_DEADLINE_EXCEEDED = 4,
	MOAT_RPC_NOT_FOUND = 5,
	MOAT_RPC_PERMISSION_DENIED = 7,
	MOAT_RPC_RESOURCE_EXHAUSTED = 8,
	MOAT_RPC_FAILED_PRECONDITION = 9,
	MOAT_RPC_UNIMPLEMENTED = 12,
	MOAT_RPC_INTERNAL = 13,
	MOAT_RPC_UNAVAILABLE = 14,
	MOAT_RPC_UNAUTHENTICATED = 16
} moat_rpc_code;

/*
 * Results of the stream functions besides 0 and MOAT_E* (see
 * moat__rpc_exchange). Negative and below every MOAT_E* code, so neither a
 * gRPC status nor a Moat error can be mistaken for them.
 */
typedef enum moat_rpc_result {
	MOAT_RPC_END = -1001,    /* the call ended; the status says why */
	MOAT_RPC_TIMEOUT = -1002 /* the wait timed out; the call is still open */
} moat_rpc_result;

/* How a call ended. moat_code is the "moat-error" trailer, 0 when absent. */
typedef struct moat_rpc_status {
	int code;
	int moat_code;
	char message[4096]; /* MOAT__MESSAGE_MAX: a target's refusal may carry a crash report */
} moat_rpc_status;

typedef struct moat_rpc_channel moat_rpc_channel;
typedef struct moat_rpc_call moat_rpc_call;
typedef struct moat_rpc_server moat_rpc_server;

/* Channel options; NULL strings mean "not set". */
typedef struct moat_rpc_channel_opts {
	const char *target;    /* "host:port", "unix:/path" */
	int tls;               /* grpcs */
	const char *ca_file;   /* PEM; NULL: system roots */
	const char *cert_file; /* PEM client certificate (mTLS) */
	const char *key_file;
	const char *server_name; /* name checked in the server certificate */
	unsigned int keepalive_ms;
	unsigned int connect_timeout_ms; /* each connection attempt, handshakes included; 0: 5 s */
	long max_receive_bytes;          /* -1: unlimited */
	/*
	 * A target that resolves to several addresses ("ipv4:A:P,B:P",
	 * "dns:///name:port"): calls go round-robin to the addresses whose
	 * health service says health_service is SERVING (gRPC's own
	 * round_robin policy and client-side health checking).
	 */
	const char *health_service;
} moat_rpc_channel_opts;

/* Reference-counted gRPC library set-up. */
void moat__rpc_init(void);
void moat__rpc_shutdown(void);

/* Open a channel; records a moat error (TRANSPORT/API origin) on failure. */
int moat__rpc_channel_open(moat_rpc_channel **out, const moat_rpc_channel_opts *opts);
void moat__rpc_channel_close(moat_rpc_channel *ch);

/*
 * Metadata lists are NULL-terminated arrays of key, value pairs:
 * {"moat-session", id, "moat-token", hex, NULL}.
 */

/*
 * Unary call. On MOAT_RPC_OK *resp is a malloc'd copy of the reply.
 * Returns the gRPC status code (st filled) or a negative MOAT_E* code.
 */
int moat__rpc_unary(moat_rpc_channel *ch, const char *method, const char *const *md, const void *req,
                    size_t req_len, uint8_t **resp, size_t *resp_len, unsigned int timeout_ms,
                    moat_rpc_status *st);

/*
 * moat__rpc_unary, and the address of the server that answered into peer
 * (gRPC's form, e.g. "ipv4:127.0.0.1:7070"; "" when unknown).
 */
int moat__rpc_unary_peer(moat_rpc_channel *ch, const char *method, const char *const *md, const void *req,
                         size_t req_len, uint8_t **resp, size_t *resp_len, unsigned int timeout_ms,
                         moat_rpc_status *st, char *peer, size_t peer_cap);

/* Start a streaming call (client or bidi). The initial metadata is sent with the first message. */
int moat__rpc_stream_open(moat_rpc_call **out, moat_rpc_channel *ch, const char *method,
                          const char *const *md);

/*
 * Send one message (send may be NULL: receive only) and, when recv is not
 * NULL, wait for the next message from the peer (*recv malloc'd). Waits at
 * most timeout_ms (0: forever). Returns 0, MOAT_RPC_END when the call ended
 * (st filled on the client; on the server st->code is MOAT_RPC_CANCELLED
 * or MOAT_RPC_OK for a clean half-close), MOAT_RPC_TIMEOUT, or a negative
 * MOAT_E* code. After END or TIMEOUT the call can only be cancelled and freed.
 */
int moat__rpc_exchange(moat_rpc_call *call, const void *send, size_t send_len, uint8_t **recv,
                       size_t *recv_len, unsigned int timeout_ms, moat_rpc_status *st);

/*
 * Watch a stream without blocking (client or server): the first call starts a receive,
 * every call polls the connection once (reading pings and acks) and returns
 * 0 while the stream is open or MOAT_RPC_END (st filled) once it ended.
 * For a thread that must keep an idle connection serviced without becoming
 * the poller that other threads' replies are handed through.
 */
int moat__rpc_watch(moat_rpc_call *call, moat_rpc_status *st);

/* Client: half-close and wait for the final status (and reply, when reply is not NULL). */
int moat__rpc_stream_finish(moat_rpc_call *call, uint8_t **reply, size_t *reply_len, unsigned int timeout_ms,
                            moat_rpc_status *st);

/* Cancel the call (safe at any time from the thread that drives it). */
void moat__rpc_call_cancel(moat_rpc_call *call);
/* Release a call: cancels it if still open, drains and frees its queue. */
void moat__rpc_call_free(moat_rpc_call *call);

/* ---- Server ---- */

/*
 * Serves a call; it must end the call (moat__rpc_finish, or moat__rpc_park)
 * and free it. Where it runs depends on its method's serving.
 */
typedef void (*moat_rpc_handler)(void *ctx, moat_rpc_call *call);

/* How the server serves a method's calls. */
typedef enum moat_rpc_serving {
	/*
	 * A unary request: the server loop reads it with no thread (at most
	 * recv_timeout_ms, counted against max_pending), then the handler runs
	 * on a thread of its own (counted against max_calls) and finds the
	 * request with moat__rpc_recv. Sends never block.
	 */
	MOAT_RPC_SERVE_UNARY = 0,
	/* The same, but the handler runs on the server loop itself: it must not block. */
	MOAT_RPC_SERVE_INLINE = 1,
	/*
	 * A stream: admit runs on the server loop with the call's metadata (no
	 * message read yet); an admitted call is then served on a thread of its
	 * own, with a stack of thread_stack_bytes.
	 */
	MOAT_RPC_SERVE_THREAD = 2
} moat_rpc_serving;

typedef struct moat_rpc_method {
	const char *name; /* "/package.Service/Method" */
	moat_rpc_serving serving;
	/*
	 * Server streaming (UNARY, INLINE): the handler runs once the request
	 * is in, without waiting for the peer to half-close.
	 */
	int streams_reply;
} moat_rpc_method;

typedef struct moat_rpc_server_opts {
	const char *listen;        /* "host:port", "unix:/path" */
	const char *tls_cert_file; /* PEM; TLS when set */
	const char *tls_key_file;
	const char *tls_client_ca; /* PEM; mutual TLS when set */
	long max_receive_bytes;
	moat_rpc_handler handler;
	void *ctx;
	/* The methods served; any other answers UNIMPLEMENTED from the loop. */
	const moat_rpc_method *methods;
	size_t n_methods;
	/*
	 * For MOAT_RPC_SERVE_THREAD calls, on the server loop before any thread
	 * is taken: return 0 to admit the call (it may keep state with
	 * moat__rpc_call_set_data), or end it with moat__rpc_finish and return
	 * a negative code. Must not block. NULL: admit every call.
	 */
	int (*admit)(void *ctx, moat_rpc_call *call);
	/* An admitted call whose handler will not run (no thread could start): undo admit. May be NULL. */
	void (*dropped)(void *ctx, moat_rpc_call *call);
	size_t thread_stack_bytes; /* of a THREAD call's thread; 0: the system's default */
	void (*tick)(void *ctx);   /* called on every turn of the server loop (every 2-20 ms) */
	/*
	 * Called once when *stop is seen, before the open calls are cancelled
	 * and their handlers waited for: end whatever could keep a handler
	 * from returning. May be NULL.
	 */
	void (*stopping)(void *ctx);
	/*
	 * Admission, checked when a call arrives, before anything is taken
	 * for it (0: no limit). Past max_pending unary calls waiting for their
	 * request, or max_calls handler threads in all, a call is refused at
	 * once: RESOURCE_EXHAUSTED with the "moat-error" trailer MOAT_ELIMIT
	 * and pending_limit / calls_limit as its message (which should name
	 * the option that sets the limit). Past max_parked parked calls,
	 * moat__rpc_park refuses the same way with parked_limit.
	 */
	unsigned int max_pending;
	unsigned int max_calls;
	const char *pending_limit;
	const char *calls_limit;
	unsigned int max_parked;
	const char *parked_limit;
	/*
	 * A unary request, and every moat__rpc_recv on a THREAD call, may take
	 * at most this long (0: forever); then the call ends with
	 * DEADLINE_EXCEEDED and recv_timeout_message.
	 */
	unsigned int recv_timeout_ms;
	const char *recv_timeout_message;
	/*
	 * Without TLS the server accepts connections itself and keeps fd_reserve
	 * descriptors below RLIMIT_NOFILE free for everything else: a
	 * connection that would use one of them is closed at once (the host
	 * sees UNAVAILABLE), so accept never fails for want of descriptors and
	 * the listener lives on. 0: let gRPC accept (as with TLS, where gRPC
	 * 1.51 offers nothing else).
	 */
	unsigned int fd_reserve;
	/*
	 * At most this many connections open at once (0: no limit). With the
	 * server's own listener (fd_reserve set) one more is closed on
	 * arrival; with gRPC's (TLS) the newest past the limit are shut down
	 * within 250 ms. connections_limit (naming the option) goes to report.
	 */
	unsigned int max_connections;
	const char *connections_limit;
	/*
	 * Called (from any thread) with a line for the log: refused connections
	 * and the like. refusal is a MOAT_RPC_REFUSED_* kind (0 for a line that
	 * refuses nothing) and count how many it refused. May be NULL.
	 */
	void (*report)(void *ctx, int error, int refusal, unsigned int count, const char *msg);
} moat_rpc_server_opts;

/* What the server refused or ended by itself, before a handler ran (moat_rpc_server_opts.report). */
enum moat_rpc_refusal {
	MOAT_RPC_REFUSED_NOTHING = 0,
	MOAT_RPC_REFUSED_CONNECTION,      /* max_connections */
	MOAT_RPC_REFUSED_DESCRIPTORS,     /* a connection refused to keep fd_reserve descriptors */
	MOAT_RPC_REFUSED_PENDING,         /* max_pending: calls waiting for their request */
	MOAT_RPC_REFUSED_CALLS,           /* max_calls: calls with a thread */
	MOAT_RPC_REFUSED_PARKED,          /* max_parked: parked streams (health watches) */
	MOAT_RPC_REFUSED_REQUEST_TIMEOUT, /* a request not in within recv_timeout_ms */
	MOAT_RPC_REFUSED_THREAD,          /* no thread could be started */
	MOAT_RPC_N_REFUSED
};

/* Create, bind and start a server. *port gets the bound TCP port (0 for unix). */
int moat__rpc_server_start(moat_rpc_server **out, const moat_rpc_server_opts *opts, int *port, char *err,
                           size_t err_len);
/* Serve until *stop becomes non-zero, then cancel every call and join every handler thread. */
void moat__rpc_server_run(moat_rpc_server *srv, volatile int *stop);
void moat__rpc_server_free(moat_rpc_server *srv);
/*
 * Replace the TLS server's certificate, key and client CA with these files'
 * (checked first: the key must go with the certificate). New handshakes get
 * them, open connections keep theirs. Returns 0, or -1 with the reason in
 * err and the old ones kept.
 */
int moat__rpc_server_tls_load(const char *cert_file, const char *key_file, const char *client_ca_file,
                              char *err, size_t err_len);

/*
 * Route gRPC's own log lines to fn (severity 0 debug, 1 info, 2 error)
 * instead of stderr; fn must be safe to call from any thread.
 */
void moat__rpc_set_log(void (*fn)(int severity, const char *file, int line, const char *msg));

/*
 * Send msg on every parked call (from the server loop's tick): a parked
 * call busy sending gets it once that send is done; only the newest
 * message is kept.
 */
void moat__rpc_server_broadcast(moat_rpc_server *srv, const void *msg, size_t len);

/* State of the handler's (set by admit, say); NULL until set. */
void moat__rpc_call_set_data(moat_rpc_call *call, void *data);
void *moat__rpc_call_data(const moat_rpc_call *call);

/*
 * A server-streaming reply with no thread: send first now, then keep the
 * call open, held by no thread, until the peer leaves or the server stops;
 * then send at_stop (when not NULL) and an OK status. For UNARY and INLINE
 * calls; the handler still frees the call. Returns 0, or MOAT_ELIMIT after
 * refusing the call (max_parked).
 */
int moat__rpc_park(moat_rpc_call *call, const void *first, size_t first_len, const void *at_stop,
                   size_t at_stop_len);

/* Server call accessors. */
const char *moat__rpc_call_method(const moat_rpc_call *call);
/* Value of request metadata key, or NULL: a copy kept in the call until the next lookup. */
const char *moat__rpc_call_md(moat_rpc_call *call, const char *key);
/*
 * Server: receive one message; same results as moat__rpc_exchange. On a
 * THREAD call, waits at most the server's recv_timeout_ms, then ends the
 * call (DEADLINE_EXCEEDED) and returns MOAT_RPC_TIMEOUT. On a UNARY or
 * INLINE call it never waits: the loop read the request (and whether a
 * second message followed) before the handler ran.
 */
int moat__rpc_recv(moat_rpc_call *call, uint8_t **buf, size_t *len, moat_rpc_status *st);
/*
 * Server: send the final status (with reply when not NULL). moat_code != 0
 * is sent as the "moat-error" trailer. Returns 0 or a negative code.
 */
int moat__rpc_finish(moat_rpc_call *call, const void *reply, size_t reply_len, int code, int moat_code,
                     const char *message);
/* Server: has the peer cancelled (or the connection dropped)? */
int moat__rpc_call_cancelled(moat_rpc_call *call);

#endif
