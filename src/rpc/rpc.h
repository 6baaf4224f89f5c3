/*
 * The rpc layer: the only code in Moat that includes grpc.h. It wraps gRPC
 * core's C API into what the remote backend and moatd need: channels (plain,
 * TLS, mutual TLS; TCP and unix sockets), unary calls, client streams, bidi
 * streams, and a server that runs every admitted call on its own thread.
 *
 * Every call is bound to one completion queue of the process that the
 * waiting threads take turns to read (init.c says why): a lone thread reads
 * its own replies, and with many threads one reads and hands each
 * completion to its owner, whatever poller gRPC uses. The layer never
 * changes the process environment. Files: init.c (set-up, the queue),
 * channel.c, call.c (client calls, streams, exchange), server.c.
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
	char message[384];
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

/* Runs on a fresh thread for every incoming call; it must finish and free the call. */
typedef void (*moat_rpc_handler)(void *ctx, moat_rpc_call *call);

typedef struct moat_rpc_server_opts {
	const char *listen;        /* "host:port", "unix:/path" */
	const char *tls_cert_file; /* PEM; TLS when set */
	const char *tls_key_file;
	const char *tls_client_ca; /* PEM; mutual TLS when set */
	long max_receive_bytes;
	moat_rpc_handler handler;
	void *ctx;
	void (*tick)(void *ctx); /* called on every turn of the server loop (every 2-20 ms) */
	/*
	 * Called once when *stop is seen, before the open calls are cancelled
	 * and their handlers waited for: end whatever could keep a handler
	 * from returning. May be NULL.
	 */
	void (*stopping)(void *ctx);
	/*
	 * Admission, checked when a call arrives, before a thread is started
	 * for it (0: no limit). A call is pending until its first request
	 * message arrives or its handler admits it (moat__rpc_call_admit).
	 * Past max_pending pending calls, or max_calls handler threads in all,
	 * a call is refused at once: RESOURCE_EXHAUSTED with the "moat-error"
	 * trailer MOAT_ELIMIT and pending_limit / calls_limit as its message
	 * (which should name the option that sets the limit).
	 */
	unsigned int max_pending;
	unsigned int max_calls;
	const char *pending_limit;
	const char *calls_limit;
	/*
	 * moat__rpc_recv on a server call waits at most this long (0: forever);
	 * then the call ends with DEADLINE_EXCEEDED and recv_timeout_message.
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
	/* Called (from any thread) with a line for the log: refused connections and the like. May be NULL. */
	void (*report)(void *ctx, int error, const char *msg);
} moat_rpc_server_opts;

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

/* The handler vouches for a pending call (authenticated): it no longer counts against max_pending. */
void moat__rpc_call_admit(moat_rpc_call *call);

/* Server call accessors. */
const char *moat__rpc_call_method(const moat_rpc_call *call);
/* Value of request metadata key, or NULL: a copy kept in the call until the next lookup. */
const char *moat__rpc_call_md(moat_rpc_call *call, const char *key);
/*
 * Server: receive one message; same results as moat__rpc_exchange. Waits
 * at most the server's recv_timeout_ms, then ends the call
 * (DEADLINE_EXCEEDED) and returns MOAT_RPC_TIMEOUT. The first message
 * admits a pending call.
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
