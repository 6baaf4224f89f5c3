/*
 * gRPC core baselines, built with the same libgrpc as Moat's remote backend:
 *  - bidi: one bidi stream, one message each way per round trip (the floor
 *    for a call over gRPC; Moat's Attach stream does the same plus framing);
 *  - asylo: the pattern of Asylo's RemoteBackend for one call, two unary
 *    RPCs: the host's request RPC (acknowledged at once), then the enclave
 *    side's reply RPC back to a server in the host (acknowledged too).
 * The server side runs in a helper process (moat-bench --helper grpc), one
 * thread draining one completion queue; the client side runs on the timing
 * thread with its own queue, so no thread hand-off sits on either path.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "bench.h"

#define METHOD_STREAM  "/bench.Echo/Stream"
#define METHOD_REQUEST "/bench.Asylo/Request"
#define METHOD_REPLY   "/bench.Asylo/Reply"

/* ---- TLS material (mTLS: both sides present certificates from one throwaway CA) ---- */

static char *read_text(const char *dir, const char *name)
{
	char path[512];
	FILE *f;
	char *buf = NULL;
	long n;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "rb");
	if (!f) {
		bench_fail("%s: %s", path, strerror(errno));
		return NULL;
	}
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (buf = calloc(1, (size_t)n + 1)) != NULL && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	if (!buf)
		bench_fail("%s: cannot read", path);
	return buf;
}

static grpc_server_credentials *server_creds(const char *tls_dir)
{
	grpc_ssl_server_certificate_config *cfg;
	grpc_ssl_server_credentials_options *opts;
	grpc_ssl_pem_key_cert_pair pair;
	grpc_server_credentials *creds = NULL;
	char *ca, *cert, *key;

	if (!tls_dir)
		return grpc_insecure_server_credentials_create();
	ca = read_text(tls_dir, "ca.pem");
	cert = read_text(tls_dir, "server.pem");
	key = read_text(tls_dir, "server.key");
	if (ca && cert && key) {
		pair.private_key = key;
		pair.cert_chain = cert;
		cfg = grpc_ssl_server_certificate_config_create(ca, &pair, 1);
		opts = grpc_ssl_server_credentials_create_options_using_config(
		    GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY, cfg);
		creds = grpc_ssl_server_credentials_create_with_options(opts);
	}
	free(ca);
	free(cert);
	free(key);
	return creds;
}

static grpc_channel *open_channel(const char *target, const char *tls_dir)
{
	grpc_channel_credentials *creds;
	grpc_channel *ch = NULL;
	grpc_arg arg;
	grpc_channel_args args = {0, NULL};

	if (!tls_dir) {
		creds = grpc_insecure_credentials_create();
	} else {
		char *ca = read_text(tls_dir, "ca.pem"), *cert = read_text(tls_dir, "client.pem"),
		     *key = read_text(tls_dir, "client.key");
		grpc_ssl_pem_key_cert_pair pair = {key, cert};

		creds = ca && cert && key ? grpc_ssl_credentials_create(ca, &pair, NULL, NULL) : NULL;
		free(ca);
		free(cert);
		free(key);
		if (!creds)
			return NULL;
		arg.type = GRPC_ARG_STRING;
		arg.key = (char *)GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
		arg.value.string = (char *)"localhost";
		args.num_args = 1;
		args.args = &arg;
	}
	ch = grpc_channel_create(target, creds, &args);
	grpc_channel_credentials_release(creds);
	return ch;
}

static size_t buffer_len(grpc_byte_buffer *bb)
{
	return bb ? grpc_byte_buffer_length(bb) : 0;
}

/* ---- server side (helper process) ---- */

enum srv_op {
	SRV_NEW,   /* request_call matched a new call */
	SRV_RECV,  /* stream: a message (or the end) arrived */
	SRV_SEND,  /* stream: our echo went out */
	SRV_CLOSE, /* stream: RECV_CLOSE_ON_SERVER */
	SRV_UREQ,  /* unary request: its message arrived */
	SRV_DONE,  /* unary request or unknown method: ack and status sent */
	SRV_REPLY, /* our reply RPC to the host finished */
};

typedef struct srv_call srv_call;
typedef struct srv_tag {
	enum srv_op op;
	srv_call *c;
} srv_tag;

struct srv_call {
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array md;
	grpc_byte_buffer *recv, *sending, *queued;
	int cancelled, pending, ended, status_sent;
	srv_tag t_new, t_recv, t_send, t_close, t_ureq, t_done, t_reply;
	/* reply RPC */
	grpc_call *reply;
	grpc_metadata_array reply_md, reply_trailers;
	grpc_byte_buffer *reply_ack;
	grpc_status_code reply_status;
	grpc_slice reply_details;
};

typedef struct srv_state {
	grpc_server *server;
	grpc_completion_queue *cq;
	grpc_channel *reply_channel;
} srv_state;

static srv_call *srv_call_new(void)
{
	srv_call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->md);
	grpc_metadata_array_init(&c->reply_md);
	grpc_metadata_array_init(&c->reply_trailers);
	c->t_new = (srv_tag){SRV_NEW, c};
	c->t_recv = (srv_tag){SRV_RECV, c};
	c->t_send = (srv_tag){SRV_SEND, c};
	c->t_close = (srv_tag){SRV_CLOSE, c};
	c->t_ureq = (srv_tag){SRV_UREQ, c};
	c->t_done = (srv_tag){SRV_DONE, c};
	c->t_reply = (srv_tag){SRV_REPLY, c};
	return c;
}

static void srv_call_release(srv_call *c)
{
	if (--c->pending > 0)
		return;
	if (c->call)
		grpc_call_unref(c->call);
	if (c->reply)
		grpc_call_unref(c->reply);
	grpc_call_details_destroy(&c->details);
	grpc_metadata_array_destroy(&c->md);
	grpc_metadata_array_destroy(&c->reply_md);
	grpc_metadata_array_destroy(&c->reply_trailers);
	grpc_byte_buffer_destroy(c->recv);
	grpc_byte_buffer_destroy(c->sending);
	grpc_byte_buffer_destroy(c->queued);
	grpc_byte_buffer_destroy(c->reply_ack);
	grpc_slice_unref(c->reply_details);
	free(c);
}

static void srv_request(srv_state *s)
{
	srv_call *c = srv_call_new();

	if (!c)
		abort();
	c->pending = 1;
	if (grpc_server_request_call(s->server, &c->call, &c->details, &c->md, s->cq, s->cq, &c->t_new) !=
	    GRPC_CALL_OK)
		abort();
}

static void srv_start(srv_call *c, const grpc_op *ops, size_t n, srv_tag *tag)
{
	grpc_call_error err;

	c->pending++;
	if ((err = grpc_call_start_batch(c->call, ops, n, tag, NULL)) != GRPC_CALL_OK) {
		fprintf(stderr, "moat-bench grpc helper: start_batch failed (%d, op %d)\n", (int)err,
		        (int)tag->op);
		abort();
	}
}

static void srv_send(srv_call *c, grpc_byte_buffer *bb)
{
	grpc_op op = {0};

	op.op = GRPC_OP_SEND_MESSAGE;
	op.data.send_message.send_message = bb;
	c->sending = bb;
	srv_start(c, &op, 1, &c->t_send);
}

static void srv_status(srv_call *c, grpc_status_code code, grpc_byte_buffer *msg)
{
	grpc_op ops[3] = {{0}};
	size_t n = 0;

	if (msg) {
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n++].data.send_message.send_message = msg;
	}
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = code;
	n++;
	c->status_sent = 1;
	srv_start(c, ops, n, &c->t_done);
}

static void srv_on_new(srv_state *s, srv_call *c)
{
	grpc_op ops[2] = {{0}};

	if (grpc_slice_str_cmp(c->details.method, METHOD_STREAM) == 0) {
		ops[0].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
		ops[0].data.recv_close_on_server.cancelled = &c->cancelled;
		srv_start(c, ops, 1, &c->t_close);
		memset(ops, 0, sizeof(ops)); /* the union still holds the cancelled pointer */
		ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
		ops[1].op = GRPC_OP_RECV_MESSAGE;
		ops[1].data.recv_message.recv_message = &c->recv;
		srv_start(c, ops, 2, &c->t_recv);
	} else if (grpc_slice_str_cmp(c->details.method, METHOD_REQUEST) == 0 && s->reply_channel) {
		ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
		ops[1].op = GRPC_OP_RECV_MESSAGE;
		ops[1].data.recv_message.recv_message = &c->recv;
		srv_start(c, ops, 2, &c->t_ureq);
	} else {
		ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
		srv_start(c, ops, 1, &c->t_close);
		srv_status(c, GRPC_STATUS_UNIMPLEMENTED, NULL);
	}
}

/* Asylo: acknowledge the request RPC, then send the enclave's reply as a second RPC to the host. */
static void srv_on_unary_request(srv_state *s, srv_call *c)
{
	grpc_slice empty = grpc_empty_slice();
	grpc_byte_buffer *ack = grpc_raw_byte_buffer_create(&empty, 1);
	grpc_op ops[6] = {{0}};

	srv_status(c, GRPC_STATUS_OK, ack);
	c->sending = ack;
	c->reply = grpc_channel_create_call(s->reply_channel, NULL, GRPC_PROPAGATE_DEFAULTS, s->cq,
	                                    grpc_slice_from_static_string(METHOD_REPLY), NULL,
	                                    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = c->recv; /* the echo: the request's payload */
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->reply_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &c->reply_ack;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &c->reply_trailers;
	ops[5].data.recv_status_on_client.status = &c->reply_status;
	ops[5].data.recv_status_on_client.status_details = &c->reply_details;
	c->pending++;
	if (grpc_call_start_batch(c->reply, ops, 6, &c->t_reply, NULL) != GRPC_CALL_OK)
		abort();
}

/*
 * The same echo served in moatd's shape: an accept thread waiting on the
 * server's queue, and a thread per stream that plucks a queue of its own.
 * Comparing it with the one-thread server shows what that shape costs.
 */
typedef struct thr_call {
	grpc_call *call;
	grpc_call_details details;
	grpc_metadata_array md;
	grpc_completion_queue *cq;
} thr_call;

static int thr_batch(thr_call *c, const grpc_op *ops, size_t n)
{
	grpc_event ev;

	if (grpc_call_start_batch(c->call, ops, n, c, NULL) != GRPC_CALL_OK)
		return 0;
	ev = grpc_completion_queue_pluck(c->cq, c, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static void *thr_worker(void *arg)
{
	thr_call *c = arg;
	grpc_byte_buffer *msg = NULL;
	grpc_op ops[2];
	int cancelled = 0, first = 1;
	grpc_event ev;

	for (;;) {
		memset(ops, 0, sizeof(ops));
		ops[0].op = GRPC_OP_RECV_MESSAGE;
		ops[0].data.recv_message.recv_message = &msg;
		if (!thr_batch(c, ops, 1) || !msg)
			break;
		memset(ops, 0, sizeof(ops));
		ops[0].op = GRPC_OP_SEND_MESSAGE;
		ops[0].data.send_message.send_message = msg;
		ops[1].op = GRPC_OP_SEND_INITIAL_METADATA; /* only with the first reply */
		if (!thr_batch(c, ops, first ? 2 : 1))
			break;
		first = 0;
		grpc_byte_buffer_destroy(msg);
		msg = NULL;
	}
	grpc_byte_buffer_destroy(msg);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[0].data.send_status_from_server.status = GRPC_STATUS_OK;
	ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	ops[1].data.recv_close_on_server.cancelled = &cancelled;
	thr_batch(c, ops, 2);
	grpc_call_unref(c->call);
	grpc_call_details_destroy(&c->details);
	grpc_metadata_array_destroy(&c->md);
	grpc_completion_queue_shutdown(c->cq);
	do
		ev = grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	while (ev.type != GRPC_QUEUE_SHUTDOWN);
	grpc_completion_queue_destroy(c->cq);
	free(c);
	return NULL;
}

static thr_call *thr_request(grpc_server *server, grpc_completion_queue *notify)
{
	thr_call *c = calloc(1, sizeof(*c));

	if (!c)
		abort();
	grpc_call_details_init(&c->details);
	grpc_metadata_array_init(&c->md);
	c->cq = grpc_completion_queue_create_for_pluck(NULL);
	if (grpc_server_request_call(server, &c->call, &c->details, &c->md, c->cq, notify, c) != GRPC_CALL_OK)
		abort();
	return c;
}

static int grpc_base_helper_threaded(grpc_server *server, grpc_completion_queue *cq)
{
	thr_call *pending = thr_request(server, cq);

	for (;;) {
		/* Like moatd's accept loop: wake up now and then even when nothing arrives. */
		grpc_event ev = grpc_completion_queue_next(
		    cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(100, GPR_TIMESPAN)),
		    NULL);
		pthread_t t;

		if (ev.type == GRPC_QUEUE_SHUTDOWN)
			break;
		if (ev.type != GRPC_OP_COMPLETE || ev.tag != pending)
			continue;
		if (ev.success && pthread_create(&t, NULL, thr_worker, pending) == 0)
			pthread_detach(t);
		pending = thr_request(server, cq);
	}
	return 0;
}

int grpc_base_helper(const char *tls_dir, const char *reply_target, int threaded)
{
	grpc_server_credentials *creds;
	srv_state s = {0};
	int port, i;

	grpc_init();
	s.cq = grpc_completion_queue_create_for_next(NULL);
	s.server = grpc_server_create(NULL, NULL);
	grpc_server_register_completion_queue(s.server, s.cq, NULL);
	creds = server_creds(tls_dir);
	if (!creds) {
		fprintf(stderr, "moat-bench grpc helper: %s\n", bench_error);
		return 1;
	}
	port = grpc_server_add_http2_port(s.server, "127.0.0.1:0", creds);
	grpc_server_credentials_release(creds);
	if (port <= 0) {
		fprintf(stderr, "moat-bench grpc helper: cannot bind 127.0.0.1\n");
		return 1;
	}
	grpc_server_start(s.server);
	if (threaded) {
		printf("%d\n", port);
		fflush(stdout);
		return grpc_base_helper_threaded(s.server, s.cq);
	}
	if (reply_target)
		s.reply_channel = open_channel(reply_target, NULL);
	/* Several outstanding requests so a new call never waits for us to re-arm. */
	for (i = 0; i < 4; i++)
		srv_request(&s);
	printf("%d\n", port);
	fflush(stdout);
	/* Serve until killed: the bench reaps this process with SIGTERM. */
	for (;;) {
		grpc_event ev = grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		srv_tag *t;
		srv_call *c;

		if (ev.type != GRPC_OP_COMPLETE)
			break;
		t = ev.tag;
		c = t->c;
		switch (t->op) {
		case SRV_NEW:
			srv_request(&s);
			if (ev.success)
				srv_on_new(&s, c);
			break;
		case SRV_RECV:
			if (!ev.success || !c->recv) {
				/* Client closed its side (or the stream broke): finish with a status. */
				if (!c->status_sent && ev.success)
					srv_status(c, GRPC_STATUS_OK, NULL);
			} else if (c->sending) {
				/* Our previous echo has not completed yet: one SEND_MESSAGE at a time. */
				c->queued = c->recv;
				c->recv = NULL;
			} else {
				grpc_op op = {0};

				srv_send(c, c->recv);
				c->recv = NULL;
				op.op = GRPC_OP_RECV_MESSAGE;
				op.data.recv_message.recv_message = &c->recv;
				srv_start(c, &op, 1, &c->t_recv);
			}
			break;
		case SRV_SEND:
			grpc_byte_buffer_destroy(c->sending);
			c->sending = NULL;
			if (c->queued && ev.success) {
				grpc_op op = {0};

				srv_send(c, c->queued);
				c->queued = NULL;
				op.op = GRPC_OP_RECV_MESSAGE;
				op.data.recv_message.recv_message = &c->recv;
				srv_start(c, &op, 1, &c->t_recv);
			}
			break;
		case SRV_UREQ:
			if (ev.success && c->recv)
				srv_on_unary_request(&s, c);
			else
				srv_status(c, GRPC_STATUS_INVALID_ARGUMENT, NULL);
			break;
		case SRV_CLOSE:
		case SRV_DONE:
		case SRV_REPLY: break;
		}
		srv_call_release(c);
	}
	return 0;
}

/* ---- client side (timing thread) ---- */

struct grpc_base {
	int kind;
	size_t size;
	pid_t pid;
	grpc_completion_queue *cq;
	grpc_channel *channel;
	grpc_slice payload;
	/* bidi */
	grpc_call *call;
	grpc_metadata_array md, trailers;
	grpc_status_code status;
	grpc_slice details;
	int got_md;
	/* asylo: the host's server that receives reply RPCs */
	grpc_server *server;
	grpc_call *srv_call;
	grpc_call_details srv_details;
	grpc_metadata_array srv_md;
	int srv_armed, inited;
};

enum { TAG_START = 1, TAG_STATUS, TAG_MSG, TAG_CLOSE, TAG_A, TAG_B_NEW, TAG_B_RECV, TAG_B_ACK, TAG_SHUTDOWN };

/* Wait on our own queue for one tag; anything else there is a failure of the stream. */
static int wait_tag(grpc_completion_queue *cq, intptr_t tag, int seconds)
{
	grpc_event ev = grpc_completion_queue_next(
	    cq, gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(seconds, GPR_TIMESPAN)),
	    NULL);

	if (ev.type != GRPC_OP_COMPLETE) {
		bench_fail("gRPC: no completion within %d s", seconds);
		return -1;
	}
	if ((intptr_t)ev.tag != tag || !ev.success) {
		bench_fail("gRPC: operation %ld failed (got tag %ld, success %d)", (long)tag,
		           (long)(intptr_t)ev.tag, ev.success);
		return -1;
	}
	return 0;
}

static int bidi_open(grpc_base *g)
{
	grpc_op ops[1] = {{0}};

	g->call = grpc_channel_create_call(g->channel, NULL, GRPC_PROPAGATE_DEFAULTS, g->cq,
	                                   grpc_slice_from_static_string(METHOD_STREAM), NULL,
	                                   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].flags = GRPC_INITIAL_METADATA_WAIT_FOR_READY;
	if (grpc_call_start_batch(g->call, ops, 1, (void *)TAG_START, NULL) != GRPC_CALL_OK ||
	    wait_tag(g->cq, TAG_START, 10) < 0)
		return -1;
	ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[0].flags = 0;
	ops[0].data.recv_status_on_client.trailing_metadata = &g->trailers;
	ops[0].data.recv_status_on_client.status = &g->status;
	ops[0].data.recv_status_on_client.status_details = &g->details;
	if (grpc_call_start_batch(g->call, ops, 1, (void *)TAG_STATUS, NULL) != GRPC_CALL_OK) {
		bench_fail("gRPC: cannot post RECV_STATUS_ON_CLIENT");
		return -1;
	}
	return 0;
}

static int bidi_op(grpc_base *g)
{
	grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&g->payload, 1), *recv = NULL;
	grpc_op ops[3] = {{0}};
	size_t n = 0;
	int rc = -1;

	if (!g->got_md) {
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n++].data.recv_initial_metadata.recv_initial_metadata = &g->md;
		g->got_md = 1;
	}
	ops[n].op = GRPC_OP_SEND_MESSAGE;
	ops[n++].data.send_message.send_message = send;
	ops[n].op = GRPC_OP_RECV_MESSAGE;
	ops[n++].data.recv_message.recv_message = &recv;
	if (grpc_call_start_batch(g->call, ops, n, (void *)TAG_MSG, NULL) == GRPC_CALL_OK &&
	    wait_tag(g->cq, TAG_MSG, 30) == 0) {
		if (recv && buffer_len(recv) == g->size)
			rc = 0;
		else
			bench_fail("gRPC bidi: stream ended or reply of the wrong size");
	}
	grpc_byte_buffer_destroy(send);
	grpc_byte_buffer_destroy(recv);
	return rc;
}

static int asylo_arm(grpc_base *g)
{
	if (g->srv_armed)
		return 0;
	grpc_call_details_destroy(&g->srv_details);
	grpc_metadata_array_destroy(&g->srv_md);
	grpc_call_details_init(&g->srv_details);
	grpc_metadata_array_init(&g->srv_md);
	g->srv_call = NULL;
	if (grpc_server_request_call(g->server, &g->srv_call, &g->srv_details, &g->srv_md, g->cq, g->cq,
	                             (void *)TAG_B_NEW) != GRPC_CALL_OK) {
		bench_fail("gRPC: request_call failed");
		return -1;
	}
	g->srv_armed = 1;
	return 0;
}

/* One Asylo-style call: request RPC to the enclave side, its reply RPC back to us, both acknowledged. */
static int asylo_op(grpc_base *g)
{
	grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&g->payload, 1), *ack = NULL, *reply = NULL,
	                 *reply_ack = NULL;
	grpc_metadata_array md, trailers;
	grpc_status_code status = GRPC_STATUS_UNKNOWN;
	grpc_slice details = grpc_empty_slice();
	grpc_op ops[6] = {{0}};
	grpc_call *a;
	int a_done = 0, b_done = 0, cancelled = 0, rc = -1;

	grpc_metadata_array_init(&md);
	grpc_metadata_array_init(&trailers);
	if (asylo_arm(g) < 0)
		goto out;
	a = grpc_channel_create_call(g->channel, NULL, GRPC_PROPAGATE_DEFAULTS, g->cq,
	                             grpc_slice_from_static_string(METHOD_REQUEST), NULL,
	                             gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &ack;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &trailers;
	ops[5].data.recv_status_on_client.status = &status;
	ops[5].data.recv_status_on_client.status_details = &details;
	if (grpc_call_start_batch(a, ops, 6, (void *)TAG_A, NULL) != GRPC_CALL_OK) {
		grpc_call_unref(a);
		bench_fail("gRPC: cannot start the request RPC");
		goto out;
	}
	while (!a_done || !b_done) {
		grpc_event ev = grpc_completion_queue_next(
		    g->cq,
		    gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_seconds(30, GPR_TIMESPAN)),
		    NULL);

		if (ev.type != GRPC_OP_COMPLETE) {
			bench_fail("gRPC asylo: no completion within 30 s");
			goto out; /* the request call leaks here; the run is broken anyway */
		}
		switch ((intptr_t)ev.tag) {
		case TAG_A:
			grpc_call_unref(a);
			a_done = 1;
			if (!ev.success || status != GRPC_STATUS_OK) {
				bench_fail("gRPC asylo: request RPC failed (status %d)", (int)status);
				goto out;
			}
			break;
		case TAG_B_NEW:
			g->srv_armed = 0;
			if (!ev.success) {
				bench_fail("gRPC asylo: reply server failed");
				goto out;
			}
			memset(ops, 0, sizeof(ops));
			ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
			ops[1].op = GRPC_OP_RECV_MESSAGE;
			ops[1].data.recv_message.recv_message = &reply;
			if (grpc_call_start_batch(g->srv_call, ops, 2, (void *)TAG_B_RECV, NULL) !=
			    GRPC_CALL_OK)
				goto out;
			break;
		case TAG_B_RECV: {
			grpc_slice empty = grpc_empty_slice();

			if (!ev.success || buffer_len(reply) != g->size) {
				bench_fail("gRPC asylo: reply RPC of the wrong size");
				goto out;
			}
			reply_ack = grpc_raw_byte_buffer_create(&empty, 1);
			memset(ops, 0, sizeof(ops));
			ops[0].op = GRPC_OP_SEND_MESSAGE;
			ops[0].data.send_message.send_message = reply_ack;
			ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
			ops[1].data.send_status_from_server.status = GRPC_STATUS_OK;
			ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
			ops[2].data.recv_close_on_server.cancelled = &cancelled;
			if (grpc_call_start_batch(g->srv_call, ops, 3, (void *)TAG_B_ACK, NULL) !=
			    GRPC_CALL_OK)
				goto out;
			break;
		}
		case TAG_B_ACK:
			grpc_call_unref(g->srv_call);
			g->srv_call = NULL;
			b_done = 1;
			break;
		default: bench_fail("gRPC asylo: unexpected completion"); goto out;
		}
	}
	rc = 0;
out:
	grpc_byte_buffer_destroy(send);
	grpc_byte_buffer_destroy(ack);
	grpc_byte_buffer_destroy(reply);
	grpc_byte_buffer_destroy(reply_ack);
	grpc_metadata_array_destroy(&md);
	grpc_metadata_array_destroy(&trailers);
	grpc_slice_unref(details);
	return rc;
}

int grpc_base_op(void *ctx)
{
	grpc_base *g = ctx;

	return g->kind == GRPC_BASE_ASYLO ? asylo_op(g) : bidi_op(g);
}

int grpc_base_open(grpc_base **out, int kind, size_t size, const char *tls_dir)
{
	const char *args[8] = {"grpc", NULL, NULL, NULL, NULL, NULL, NULL, NULL};
	char line[64], target[96], reply_target[64];
	unsigned char *bytes = NULL;
	grpc_server_credentials *creds;
	grpc_base *g;
	int n = 1, port;

	*out = NULL;
	g = calloc(1, sizeof(*g));
	if (!g) {
		bench_fail("out of memory");
		return -1;
	}
	g->kind = kind;
	g->size = size;
	g->pid = -1;
	grpc_init();
	g->inited = 1;
	grpc_metadata_array_init(&g->md);
	grpc_metadata_array_init(&g->trailers);
	grpc_call_details_init(&g->srv_details);
	grpc_metadata_array_init(&g->srv_md);
	g->details = grpc_empty_slice();
	bytes = malloc(size ? size : 1);
	if (!bytes)
		goto fail;
	memset(bytes, 0xa5, size);
	g->payload = grpc_slice_from_copied_buffer((const char *)bytes, size);
	free(bytes);
	g->cq = grpc_completion_queue_create_for_next(NULL);
	if (kind == GRPC_BASE_ASYLO) {
		g->server = grpc_server_create(NULL, NULL);
		grpc_server_register_completion_queue(g->server, g->cq, NULL);
		creds = grpc_insecure_server_credentials_create();
		port = grpc_server_add_http2_port(g->server, "127.0.0.1:0", creds);
		grpc_server_credentials_release(creds);
		if (port <= 0) {
			bench_fail("gRPC: cannot bind the reply server");
			goto fail;
		}
		grpc_server_start(g->server);
		snprintf(reply_target, sizeof(reply_target), "127.0.0.1:%d", port);
		args[n++] = "--reply-target";
		args[n++] = reply_target;
	}
	if (tls_dir) {
		args[n++] = "--tls";
		args[n++] = tls_dir;
	}
	if (kind == GRPC_BASE_BIDI_THREADED) {
		args[n++] = "--threaded";
		args[n++] = "1";
	}
	if (bench_spawn_helper(&g->pid, line, sizeof(line), args, -1) < 0)
		goto fail;
	snprintf(target, sizeof(target), "127.0.0.1:%s", line);
	g->channel = open_channel(target, tls_dir);
	if (!g->channel)
		goto fail;
	if (kind != GRPC_BASE_ASYLO && bidi_open(g) < 0)
		goto fail;
	/* Pay the connection set-up (and TLS handshake) before timing starts. */
	if (kind == GRPC_BASE_ASYLO && asylo_op(g) < 0)
		goto fail;
	*out = g;
	return 0;
fail:
	if (!bench_error[0])
		bench_fail("gRPC baseline set-up failed");
	grpc_base_close(g);
	return -1;
}

void grpc_base_close(grpc_base *g)
{
	grpc_event ev;

	if (!g)
		return;
	if (g->call) {
		grpc_call_cancel(g->call, NULL);
		/* Collect the pending RECV_STATUS_ON_CLIENT (and anything else) before the queue goes. */
		grpc_call_unref(g->call);
	}
	if (g->srv_call)
		grpc_call_unref(g->srv_call);
	if (g->channel)
		grpc_channel_destroy(g->channel);
	if (g->server) {
		grpc_server_shutdown_and_notify(g->server, g->cq, (void *)TAG_SHUTDOWN);
		grpc_server_cancel_all_calls(g->server);
		do {
			ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		} while (ev.type == GRPC_OP_COMPLETE && (intptr_t)ev.tag != TAG_SHUTDOWN);
		grpc_server_destroy(g->server);
	}
	if (g->cq) {
		grpc_completion_queue_shutdown(g->cq);
		do {
			ev = grpc_completion_queue_next(g->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
		} while (ev.type != GRPC_QUEUE_SHUTDOWN);
		grpc_completion_queue_destroy(g->cq);
	}
	bench_reap(g->pid);
	grpc_metadata_array_destroy(&g->md);
	grpc_metadata_array_destroy(&g->trailers);
	grpc_metadata_array_destroy(&g->srv_md);
	grpc_call_details_destroy(&g->srv_details);
	grpc_slice_unref(g->details);
	grpc_slice_unref(g->payload);
	if (g->inited)
		grpc_shutdown();
	free(g);
}
