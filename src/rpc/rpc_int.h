/*
 * Internals shared by the files of the rpc layer (init.c, channel.c,
 * call.c, server.c). Nothing outside src/rpc includes this.
 */
#ifndef MOAT_RPC_RPC_INT_H
#define MOAT_RPC_RPC_INT_H

#include "rpc/rpc.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#define MD_MAX 8

/* What a tag on the server loop's queue stands for. */
enum { TAG_OP = 0, TAG_REQUEST, TAG_RECV, TAG_SEND, TAG_FINISH, TAG_CLOSE };

/* One outstanding operation of a call; its address is the gRPC tag. */
typedef struct rpc_tag {
	moat_rpc_call *call;
	int what;
} rpc_tag;

struct moat_rpc_channel {
	grpc_channel *channel;
	int tls;
};

struct moat_rpc_call {
	grpc_call *call;
	/*
	 * The call's own completion queue (for pluck), read only by the thread
	 * that drives the call: it does its own socket I/O, and no completion is
	 * handed from one thread to another on the hot path.
	 */
	grpc_completion_queue *cq;
	int server;
	int batch_pending;  /* tag_batch outstanding */
	int status_pending; /* client: tag_status outstanding */
	int close_pending;  /* server: tag_close outstanding */
	int md_sent;
	int md_received;
	int ended;
	grpc_byte_buffer *watch_msg; /* moat__rpc_watch's receive slot */
	/* The outstanding batch's buffers live here: a timed-out batch completes later. */
	grpc_byte_buffer *send_buf, *recv_buf;
	rpc_tag tag_batch, tag_status, tag_close;

	/* Client. */
	grpc_metadata md[MD_MAX];
	size_t n_md;
	grpc_metadata_array initial_md;
	grpc_metadata_array trailing_md;
	grpc_status_code status;
	grpc_slice status_details;

	/* Server. */
	int cancelled;
	grpc_call_details details;
	grpc_metadata_array request_md;
	char *method;
	char *md_value;        /* last value returned by moat__rpc_call_md */
	struct worker *worker; /* its handler thread's slot (server.c) */
	void *data;            /* the handler's (moat__rpc_call_set_data) */
	size_t method_index;   /* in srv->methods; n_methods for an unknown method */
	rpc_tag tag_request;

	/* A call driven by the server loop (server_event.c); fields guarded by srv->lock. */
	moat_rpc_server *srv;
	int event;                      /* bound to the loop's queue */
	unsigned int ev_ops;            /* its operations outstanding on the loop's queue */
	int ev_owned;                   /* a handler has it and has not freed it yet */
	int ev_expired;                 /* its request did not arrive in time */
	int ev_closed;                  /* RECV_CLOSE_ON_SERVER completed (cancelled says how) */
	int ev_parked;                  /* in srv->parked */
	int ev_sent;                    /* a park's first message went out */
	int ev_sending;                 /* a SEND_MESSAGE is outstanding */
	grpc_byte_buffer *ev_next_send; /* the newest broadcast, waiting for that send */
	grpc_byte_buffer *ev_msg[2];    /* the request, and a second message if one came */
	unsigned int ev_n_msg, ev_next_msg;
	int64_t ev_deadline;
	uint8_t *ev_at_stop;
	size_t ev_at_stop_len;
	grpc_slice ev_details, ev_trailer;
	int ev_has_details, ev_has_trailer;
	grpc_byte_buffer *ev_fin_buf; /* the reply that goes with the status */
	gpr_timespec req_deadline;    /* the peer's deadline, as gRPC gives it */
	rpc_tag tag_recv, tag_send, tag_finish;
	struct moat_rpc_call *ev_next; /* in srv->waiting or srv->parked */
};

/* Deadlines in milliseconds of CLOCK_MONOTONIC. */
#define RPC_FOREVER INT64_MAX
#define RPC_NOW     0                                /* do not block: poll once */
int64_t moat__rpc_deadline(unsigned int timeout_ms); /* 0: forever */

/*
 * Wait until tag completes or the deadline passes. Returns 1 on success,
 * 0 on failure, -1 on time-out (the tag stays outstanding).
 */
int moat__rpc_wait(moat_rpc_call *c, rpc_tag *tag, int64_t deadline);

moat_rpc_call *moat__rpc_call_new(void);
/* Copy a received message into one malloc'd buffer. */
int moat__rpc_buffer_take(grpc_byte_buffer *bb, uint8_t **out, size_t *len);

/* Message size channel arguments into args[n...]; returns the new count. */
int moat__rpc_message_size_args(grpc_arg *args, int n, long max_receive_bytes);
/* Read a PEM file into a NUL-terminated malloc'd string; records a moat error on failure. */
int moat__rpc_read_pem(char **out, const char *path, const char *what);
grpc_byte_buffer *moat__rpc_buffer_from(const void *data, size_t len);

/* ---- The server's internals (server.c, listen.c, server_call.c, server_tls.c) ---- */

/* TLS server credentials from o's files, replaceable with moat__rpc_server_tls_load; NULL with err set. */
grpc_server_credentials *moat__rpc_server_tls_creds(const moat_rpc_server_opts *o, char *err, size_t err_len);
/* Forget the TLS files (the server is gone). */
void moat__rpc_server_tls_free(void);

typedef struct worker {
	pthread_t thread;
	moat_rpc_server *srv;
	moat_rpc_call *call;
	int done; /* guarded by srv->lock */
	struct worker *next;
} worker;

struct moat_rpc_server {
	grpc_server *server;
	grpc_completion_queue *cq; /* for_next: new calls, the loop's own calls, shutdown */
	/* The served methods; one outstanding request slot each, the last for unknown methods. */
	moat_rpc_method *methods;
	void **registered;
	moat_rpc_call **slots;
	size_t n_methods;
	moat_rpc_handler handler;
	int (*admit)(void *ctx, moat_rpc_call *call);
	void (*dropped)(void *ctx, moat_rpc_call *call);
	size_t stack_bytes;
	void *ctx;
	/* The loop's calls (server_event.c), guarded by lock. */
	moat_rpc_call *waiting; /* unary calls waiting for their request */
	moat_rpc_call *parked;
	unsigned int n_parked, max_parked;
	const char *parked_limit;
	void (*tick)(void *ctx);
	void (*stopping)(void *ctx);
	pthread_mutex_t lock;
	worker *workers;
	unsigned int n_workers, n_pending; /* guarded by lock; n_pending: calls in waiting */
	unsigned int max_pending, max_calls, recv_timeout_ms;
	const char *pending_limit, *calls_limit, *recv_timeout_message;
	void (*report)(void *ctx, int error, int refusal, unsigned int count, const char *msg);
	int started;

	/* Our own listener (no TLS): the accept thread hands connections to gRPC. */
	int listen_fd;
	unsigned int fd_reserve;
	grpc_server_credentials *fd_creds;
	pthread_t acceptor;
	int accepting;
	/* The connections handed to gRPC, as the accept thread last saw them (listen.c). */
	struct rpc_conn *conns;
	unsigned int n_conns, max_connections;
	const char *connections_limit;
	/* gRPC's own listener (TLS): where it listens, so that its connections can be told apart. */
	int grpc_port;
	char grpc_path[108];
	int64_t last_shed_ms;
	volatile int accept_stop;
};

/* server_event.c: the calls the loop drives. */
/* A new call bound to the loop's queue: the loop owns it until a handler does. */
void moat__rpc_event_adopt(moat_rpc_server *s, moat_rpc_call *c);
/* A new UNARY or INLINE call: start reading its request (or refuse it). */
void moat__rpc_event_start(moat_rpc_server *s, moat_rpc_call *c);
/* A completion on the loop's queue for one of its calls. */
void moat__rpc_event_done(moat_rpc_server *s, rpc_tag *tag, int success);
/* End the waiting calls whose request is late (every loop turn). */
void moat__rpc_event_expire(moat_rpc_server *s);
/* The server stops: parked calls get their last message and status. */
void moat__rpc_event_stop(moat_rpc_server *s);
/* End a call the loop drives, without blocking: moat__rpc_finish's work for such calls. */
int moat__rpc_event_finish(moat_rpc_call *c, const void *reply, size_t reply_len, int code, int moat_code,
                           const char *message);
/* moat__rpc_recv's work for such calls: the request the loop read. */
int moat__rpc_event_recv(moat_rpc_call *c, uint8_t **buf, size_t *len, moat_rpc_status *st);
/* The handler of a call the loop drives is done with it. */
void moat__rpc_event_release(moat_rpc_call *c);
/* server.c: run a call's handler on a thread of its own (the limits checked first). */
void moat__rpc_start_worker(moat_rpc_server *s, moat_rpc_call *c);

/* A connection handed to gRPC: its descriptor and socket inode tell whether it is still open. */
typedef struct rpc_conn {
	int fd;
	dev_t dev;
	ino_t ino;
} rpc_conn;

/* Log through the server's report function (printf-style); refusal and count as for report. */
void moat__rpc_server_report(moat_rpc_server *s, int error, int refusal, unsigned int count, const char *fmt,
                             ...) __attribute__((format(printf, 5, 6)));
/* Bind addr ourselves (TCP or unix); returns the fd and the bound port, or -1. */
int moat__rpc_own_listener(const char *addr, int *port);
/* The accept thread (arg: the server), and stopping it. */
void *moat__rpc_acceptor_main(void *arg);
void moat__rpc_stop_accepting(moat_rpc_server *s);
/* With gRPC's own listener: shut the newest connections past max_connections (every loop turn). */
void moat__rpc_shed_connections(moat_rpc_server *s);

#endif
