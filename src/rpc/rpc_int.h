/*
 * Internals shared by the files of the rpc layer (init.c, channel.c,
 * call.c, server.c). Nothing outside src/rpc includes this.
 */
#ifndef MOAT_RPC_RPC_INT_H
#define MOAT_RPC_RPC_INT_H

#include "rpc/rpc.h"

#include <pthread.h>
#include <stdint.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/support/time.h>

#define MD_MAX 8

/* One outstanding operation of a call; its address is the gRPC tag on the call's own queue. */
typedef struct rpc_tag {
	moat_rpc_call *call;
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
	int done;    /* guarded by srv->lock */
	int pending; /* counted in srv->n_pending; guarded by srv->lock */
	struct worker *next;
} worker;

struct moat_rpc_server {
	grpc_server *server;
	grpc_completion_queue *cq; /* for_next: new-call notifications and shutdown */
	moat_rpc_call *pending;    /* the call slot of the outstanding request */
	moat_rpc_handler handler;
	void *ctx;
	void (*tick)(void *ctx);
	void (*stopping)(void *ctx);
	pthread_mutex_t lock;
	worker *workers;
	unsigned int n_workers, n_pending; /* guarded by lock */
	unsigned int max_pending, max_calls, recv_timeout_ms;
	const char *pending_limit, *calls_limit, *recv_timeout_message;
	void (*report)(void *ctx, int error, const char *msg);
	int started;

	/* Our own listener (no TLS): the accept thread hands connections to gRPC. */
	int listen_fd;
	unsigned int fd_reserve;
	grpc_server_credentials *fd_creds;
	pthread_t acceptor;
	int accepting;
	volatile int accept_stop;
};

/* Log through the server's report function (printf-style). */
void moat__rpc_server_report(moat_rpc_server *s, int error, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Bind addr ourselves (TCP or unix); returns the fd and the bound port, or -1. */
int moat__rpc_own_listener(const char *addr, int *port);
/* The accept thread (arg: the server), and stopping it. */
void *moat__rpc_acceptor_main(void *arg);
void moat__rpc_stop_accepting(moat_rpc_server *s);

#endif
