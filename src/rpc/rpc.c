/*
 * The rpc layer over gRPC core's C API (see rpc.h). Measured facts that
 * shaped it: a thread that plucks its own queue does its own I/O (no
 * hand-off); at most one outstanding op of each kind per call;
 * a NULL received message means "ended" for every reason, so the status
 * (client) or the cancelled flag (server) tells why.
 */
#include "rpc/rpc.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/log.h>
#include <grpc/support/time.h>

#include <moat/sys/backend.h>

#define MD_MAX 8

struct moat_rpc_channel {
	grpc_channel *channel;
	int tls;
};

struct moat_rpc_call {
	grpc_call *call;
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
	char tag_batch, tag_status, tag_close;

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
	char *md_value; /* last value returned by moat__rpc_call_md */
};

/* ---- library set-up ---- */

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int init_count;

/*
 * Message size limits, the same for channels and the server: receive up to
 * max_receive_bytes (<= 0 or too large for gRPC: no limit), send anything
 * (the peer enforces its own limit and says so). Returns the new count.
 */
static int message_size_args(grpc_arg *args, int n, long max_receive_bytes)
{
	int max = max_receive_bytes > 0 && max_receive_bytes < 0x7fffffff ? (int)max_receive_bytes : -1;

	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = max}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = -1}};
	return n;
}

void moat__rpc_init(void)
{
	pthread_mutex_lock(&init_lock);
	if (init_count++ == 0) {
		/* gRPC logs every transport hiccup; Moat reports failures through its own errors. */
		if (!getenv("GRPC_VERBOSITY"))
			gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
		/*
		 * gRPC's default poller (epoll1) polls every connection from one
		 * global epoll set: whichever thread polls reads every stream's
		 * frames and hands them over, a few context switches per call, so
		 * 8 host threads made no more calls/s than one. With "poll" a
		 * thread waiting on its own queue polls only the connections its
		 * calls use; with a connection per host thread (remote.c) it reads
		 * its own replies (8 threads: ~22K -> ~40-50K calls/s here, one
		 * thread unchanged). A strategy the user set is kept; it is read
		 * once, when gRPC first starts in the process.
		 */
		setenv("GRPC_POLL_STRATEGY", "poll", 0);
		grpc_init();
	}
	pthread_mutex_unlock(&init_lock);
}

void moat__rpc_shutdown(void)
{
	pthread_mutex_lock(&init_lock);
	if (init_count > 0 && --init_count == 0)
		grpc_shutdown_blocking();
	pthread_mutex_unlock(&init_lock);
}

static gpr_timespec deadline_ms(unsigned int ms)
{
	if (ms == 0)
		return gpr_inf_future(GPR_CLOCK_MONOTONIC);
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Read a PEM file into a NUL-terminated string. */
static int read_pem(char **out, const char *path, const char *what)
{
	FILE *f;
	char *buf = NULL;
	size_t len = 0, cap = 0;

	*out = NULL;
	f = fopen(path, "rb");
	if (!f)
		return moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "cannot read %s '%s': %s", what, path,
		                      strerror(errno));
	for (;;) {
		size_t got;

		if (len + 4096 + 1 > cap) {
			char *nb = realloc(buf, cap = cap ? cap * 2 : 8192);

			if (!nb) {
				free(buf);
				fclose(f);
				return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
			}
			buf = nb;
		}
		got = fread(buf + len, 1, cap - len - 1, f);
		len += got;
		if (got == 0)
			break;
	}
	fclose(f);
	buf[len] = '\0';
	*out = buf;
	return 0;
}

/* ---- channels ---- */

int moat__rpc_channel_open(moat_rpc_channel **out, const moat_rpc_channel_opts *o)
{
	grpc_arg args[12];
	grpc_channel_args ca;
	grpc_channel_credentials *creds = NULL;
	moat_rpc_channel *ch;
	char *ca_pem = NULL, *cert_pem = NULL, *key_pem = NULL;
	int n = 0, rc = 0;
	unsigned int ka = o->keepalive_ms ? o->keepalive_ms : 1000;
	unsigned int connect_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;

	*out = NULL;
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	/* Keepalive pings find a dead or frozen target while a call waits. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = (int)ka}};
	/* Twice the period to answer: a busy machine may be slow to read a ping's ack. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = (int)(2 * ka)}};
	/* Without this the client stops pinging after two pings without data. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, {.integer = 0}};
	n = message_size_args(args, n, o->max_receive_bytes);
	/* Each session has its own connection: calls of one session never queue behind another's. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, "grpc.use_local_subchannel_pool", {.integer = 1}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_RETRIES, {.integer = 0}};
	/*
	 * Bound every new connection, TLS and HTTP/2 handshakes included: a
	 * frozen target accepts TCP but never finishes the handshake, and gRPC
	 * waits 20 s by default. In gRPC core (1.51 subchannel.cc) an attempt's
	 * deadline is max(next backoff time, now + GRPC_ARG_MIN_RECONNECT_BACKOFF_MS),
	 * so the backoff is capped as well to keep later attempts bounded too.
	 */
	args[n++] =
	    (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, {.integer = (int)connect_ms}};
	args[n++] =
	    (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, {.integer = (int)connect_ms}};
	if (o->tls && o->server_name)
		args[n++] = (grpc_arg){
		    GRPC_ARG_STRING, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, {.string = (char *)o->server_name}};
	ca.num_args = (size_t)n;
	ca.args = args;

	if (o->tls) {
		grpc_ssl_pem_key_cert_pair pair;

		if (o->ca_file && (rc = read_pem(&ca_pem, o->ca_file, "TLS CA file")) < 0)
			goto fail;
		if ((o->cert_file == NULL) != (o->key_file == NULL)) {
			rc = moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
			                    "mutual TLS needs both tls_cert_file and tls_key_file");
			goto fail;
		}
		if (o->cert_file) {
			if ((rc = read_pem(&cert_pem, o->cert_file, "TLS certificate")) < 0 ||
			    (rc = read_pem(&key_pem, o->key_file, "TLS key")) < 0)
				goto fail;
			pair.private_key = key_pem;
			pair.cert_chain = cert_pem;
		}
		creds = grpc_ssl_credentials_create(ca_pem, o->cert_file ? &pair : NULL, NULL, NULL);
		ch->tls = 1;
	} else {
		creds = grpc_insecure_credentials_create();
	}
	if (!creds) {
		rc = moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		                    "cannot create gRPC credentials for %s", o->target);
		goto fail;
	}
	ch->channel = grpc_channel_create(o->target, creds, &ca);
	grpc_channel_credentials_release(creds);
	if (!ch->channel) {
		rc = moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		                    "cannot create a gRPC channel to %s", o->target);
		goto fail;
	}
	*out = ch;
	ch = NULL;
fail:
	free(ca_pem);
	free(cert_pem);
	if (key_pem) {
		memset(key_pem, 0, strlen(key_pem));
		free(key_pem);
	}
	free(ch);
	return rc;
}

void moat__rpc_channel_close(moat_rpc_channel *ch)
{
	if (!ch)
		return;
	grpc_channel_destroy(ch->channel);
	free(ch);
}

/* ---- calls ---- */

/* Wait for one tag of this call's own queue. Returns 1 on success, 0 on failure, -1 on timeout. */
static int wait_tag(moat_rpc_call *c, void *tag, gpr_timespec deadline)
{
	grpc_event ev = grpc_completion_queue_pluck(c->cq, tag, deadline, NULL);

	if (ev.type == GRPC_QUEUE_TIMEOUT)
		return -1;
	return ev.type == GRPC_OP_COMPLETE && ev.success;
}

static moat_rpc_call *call_new(void)
{
	moat_rpc_call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->cq = grpc_completion_queue_create_for_pluck(NULL);
	grpc_metadata_array_init(&c->initial_md);
	grpc_metadata_array_init(&c->trailing_md);
	grpc_metadata_array_init(&c->request_md);
	grpc_call_details_init(&c->details);
	c->status_details = grpc_empty_slice();
	return c;
}

static void set_md(moat_rpc_call *c, const char *const *md)
{
	size_t i;

	for (i = 0; md && md[2 * i] && i < MD_MAX; i++) {
		c->md[i].key = grpc_slice_from_copied_string(md[2 * i]);
		c->md[i].value = grpc_slice_from_copied_string(md[2 * i + 1]);
	}
	c->n_md = i;
}

static grpc_byte_buffer *buffer_from(const void *data, size_t len)
{
	grpc_slice s = grpc_slice_from_copied_buffer(data, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);

	grpc_slice_unref(s);
	return bb;
}

/* Copy a received message into one malloc'd buffer (a single copy, slice by slice). */
static int buffer_take(grpc_byte_buffer *bb, uint8_t **out, size_t *len)
{
	grpc_byte_buffer_reader r;
	grpc_slice s;
	size_t n = grpc_byte_buffer_length(bb), off = 0;

	*out = NULL;
	*len = 0;
	if (!grpc_byte_buffer_reader_init(&r, bb))
		return MOAT_ENOMEM;
	*out = malloc(n ? n : 1);
	if (!*out) {
		grpc_byte_buffer_reader_destroy(&r);
		return MOAT_ENOMEM;
	}
	while (grpc_byte_buffer_reader_next(&r, &s)) {
		size_t l = GRPC_SLICE_LENGTH(s);

		if (l > n - off)
			l = n - off;
		memcpy(*out + off, GRPC_SLICE_START_PTR(s), l);
		off += l;
		grpc_slice_unref(s);
	}
	grpc_byte_buffer_reader_destroy(&r);
	*len = off;
	return 0;
}

static void slice_to(char *out, size_t cap, grpc_slice s)
{
	size_t n = GRPC_SLICE_LENGTH(s);

	if (n >= cap)
		n = cap - 1;
	memcpy(out, GRPC_SLICE_START_PTR(s), n);
	out[n] = '\0';
}

static void batch_buffers_free(moat_rpc_call *c)
{
	if (c->send_buf)
		grpc_byte_buffer_destroy(c->send_buf);
	if (c->recv_buf)
		grpc_byte_buffer_destroy(c->recv_buf);
	c->send_buf = c->recv_buf = NULL;
}

/* Fill st from the client call's final status; waits for it when still pending. */
static void client_status(moat_rpc_call *c, moat_rpc_status *st)
{
	size_t i;

	if (c->status_pending) {
		/* After a failed batch the status follows at once; bound the wait anyway. */
		if (wait_tag(c, &c->tag_status, deadline_ms(10000)) < 0) {
			grpc_call_cancel(c->call, NULL);
			wait_tag(c, &c->tag_status, gpr_inf_future(GPR_CLOCK_MONOTONIC));
		}
		c->status_pending = 0;
	}
	c->ended = 1;
	if (!st)
		return;
	memset(st, 0, sizeof(*st));
	st->code = (int)c->status;
	slice_to(st->message, sizeof(st->message), c->status_details);
	for (i = 0; i < c->trailing_md.count; i++) {
		if (grpc_slice_str_cmp(c->trailing_md.metadata[i].key, "moat-error") == 0) {
			char v[24];

			slice_to(v, sizeof(v), c->trailing_md.metadata[i].value);
			st->moat_code = (int)strtol(v, NULL, 10);
		}
	}
}

int moat__rpc_unary(moat_rpc_channel *ch, const char *method, const char *const *md, const void *req,
                    size_t req_len, uint8_t **resp, size_t *resp_len, unsigned int timeout_ms,
                    moat_rpc_status *st)
{
	grpc_op ops[6];
	grpc_byte_buffer *send, *recv = NULL;
	moat_rpc_call *c;
	grpc_slice m;
	int rc;

	*resp = NULL;
	*resp_len = 0;
	memset(st, 0, sizeof(*st));
	c = call_new();
	if (!c)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	m = grpc_slice_from_static_string(method);
	c->call = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, m, NULL,
	                                   deadline_ms(timeout_ms), NULL);
	set_md(c, md);
	send = buffer_from(req, req_len);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[0].data.send_initial_metadata.count = c->n_md;
	ops[0].data.send_initial_metadata.metadata = c->md;
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = send;
	ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
	ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
	ops[4].op = GRPC_OP_RECV_MESSAGE;
	ops[4].data.recv_message.recv_message = &recv;
	ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	ops[5].data.recv_status_on_client.trailing_metadata = &c->trailing_md;
	ops[5].data.recv_status_on_client.status = &c->status;
	ops[5].data.recv_status_on_client.status_details = &c->status_details;
	if (grpc_call_start_batch(c->call, ops, 6, &c->tag_batch, NULL) != GRPC_CALL_OK) {
		grpc_byte_buffer_destroy(send);
		moat__rpc_call_free(c);
		return moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TRANSPORT, "cannot start gRPC call %s",
		                      method);
	}
	wait_tag(c, &c->tag_batch, gpr_inf_future(GPR_CLOCK_MONOTONIC));
	grpc_byte_buffer_destroy(send);
	client_status(c, st);
	rc = st->code;
	if (rc == MOAT_RPC_OK) {
		if (!recv)
			rc = MOAT_RPC_INTERNAL;
		else if (buffer_take(recv, resp, resp_len) < 0)
			rc = moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	}
	if (recv)
		grpc_byte_buffer_destroy(recv);
	c->ended = 1;
	moat__rpc_call_free(c);
	return rc;
}

int moat__rpc_stream_open(moat_rpc_call **out, moat_rpc_channel *ch, const char *method,
                          const char *const *md)
{
	grpc_op op;
	moat_rpc_call *c;
	grpc_slice m;

	*out = NULL;
	c = call_new();
	if (!c)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	m = grpc_slice_from_static_string(method);
	c->call = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, m, NULL,
	                                   gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
	set_md(c, md);
	/* The status stays pending for the whole stream: it is how we learn why a stream ended. */
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
	op.data.recv_status_on_client.trailing_metadata = &c->trailing_md;
	op.data.recv_status_on_client.status = &c->status;
	op.data.recv_status_on_client.status_details = &c->status_details;
	if (grpc_call_start_batch(c->call, &op, 1, &c->tag_status, NULL) != GRPC_CALL_OK) {
		moat__rpc_call_free(c);
		return moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TRANSPORT, "cannot start gRPC stream %s",
		                      method);
	}
	c->status_pending = 1;
	*out = c;
	return 0;
}

/* The call ended: fill st and report MOAT_RPC_END. */
static int call_ended(moat_rpc_call *c, moat_rpc_status *st)
{
	if (!c->server) {
		client_status(c, st);
		return MOAT_RPC_END;
	}
	c->ended = 1;
	if (c->close_pending && wait_tag(c, &c->tag_close, gpr_inf_past(GPR_CLOCK_MONOTONIC)) >= 0)
		c->close_pending = 0;
	if (st) {
		memset(st, 0, sizeof(*st));
		st->code = c->cancelled || c->close_pending == 0 ? MOAT_RPC_CANCELLED : MOAT_RPC_OK;
		if (st->code == MOAT_RPC_CANCELLED)
			snprintf(st->message, sizeof(st->message),
			         "the peer cancelled the call or went away");
	}
	return MOAT_RPC_END;
}

int moat__rpc_exchange(moat_rpc_call *c, const void *send, size_t send_len, uint8_t **recv, size_t *recv_len,
                       unsigned int timeout_ms, moat_rpc_status *st)
{
	grpc_op ops[4];
	size_t n = 0;
	int ok, rc = 0;

	if (recv) {
		*recv = NULL;
		*recv_len = 0;
	}
	if (c->ended || c->batch_pending)
		return call_ended(c, st);
	memset(ops, 0, sizeof(ops));
	if (!c->md_sent && (send || !c->server)) {
		ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
		ops[n].data.send_initial_metadata.count = c->n_md;
		ops[n].data.send_initial_metadata.metadata = c->md;
		n++;
		c->md_sent = 1;
	}
	if (send) {
		c->send_buf = buffer_from(send, send_len);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n].data.send_message.send_message = c->send_buf;
		n++;
	}
	if (recv && !c->server && !c->md_received) {
		ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
		ops[n].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
		n++;
		c->md_received = 1;
	}
	if (recv) {
		ops[n].op = GRPC_OP_RECV_MESSAGE;
		ops[n].data.recv_message.recv_message = &c->recv_buf;
		n++;
	}
	if (n == 0)
		return 0;
	if (grpc_call_start_batch(c->call, ops, n, &c->tag_batch, NULL) != GRPC_CALL_OK) {
		batch_buffers_free(c);
		return moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TRANSPORT, "gRPC refused a stream operation");
	}
	c->batch_pending = 1;
	ok = wait_tag(c, &c->tag_batch, deadline_ms(timeout_ms));
	if (ok < 0) {
		/* The batch stays pending (its buffers with it); the caller cancels and frees the call. */
		c->ended = 1;
		return MOAT_RPC_TIMEOUT;
	}
	c->batch_pending = 0;
	if (!ok || (recv && !c->recv_buf)) {
		batch_buffers_free(c);
		return call_ended(c, st);
	}
	if (c->recv_buf)
		rc = buffer_take(c->recv_buf, recv, recv_len);
	batch_buffers_free(c);
	return rc;
}

int moat__rpc_watch(moat_rpc_call *c, moat_rpc_status *st)
{
	grpc_op ops[3];
	size_t n = 0;
	int ok;

	if (c->ended)
		return call_ended(c, st);
	if (!c->batch_pending) {
		memset(ops, 0, sizeof(ops));
		if (!c->server) {
			ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
			ops[n].data.send_initial_metadata.count = c->n_md;
			ops[n].data.send_initial_metadata.metadata = c->md;
			n++;
			ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
			ops[n].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
			n++;
		}
		ops[n].op = GRPC_OP_RECV_MESSAGE;
		ops[n].data.recv_message.recv_message = &c->watch_msg;
		n++;
		if ((!c->server && c->md_sent) ||
		    grpc_call_start_batch(c->call, ops, n, &c->tag_batch, NULL) != GRPC_CALL_OK)
			return moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TRANSPORT,
			                      "gRPC refused a stream operation");
		if (!c->server)
			c->md_sent = c->md_received = 1;
		c->batch_pending = 1;
	}
	ok = wait_tag(c, &c->tag_batch, gpr_inf_past(GPR_CLOCK_MONOTONIC));
	if (ok < 0)
		return 0;
	c->batch_pending = 0;
	if (c->watch_msg) {
		/* The lease carries no messages; one arriving is a protocol error, treated as the end. */
		grpc_byte_buffer_destroy(c->watch_msg);
		c->watch_msg = NULL;
		grpc_call_cancel(c->call, NULL);
	}
	return call_ended(c, st);
}

int moat__rpc_stream_finish(moat_rpc_call *c, uint8_t **reply, size_t *reply_len, unsigned int timeout_ms,
                            moat_rpc_status *st)
{
	grpc_op ops[3];
	grpc_byte_buffer *rbuf = NULL;
	size_t n = 0;
	int ok, rc = 0;

	if (reply) {
		*reply = NULL;
		*reply_len = 0;
	}
	if (c->ended || c->batch_pending)
		return call_ended(c, st) == MOAT_RPC_END ? st->code : MOAT_RPC_INTERNAL;
	memset(ops, 0, sizeof(ops));
	if (!c->md_sent) {
		ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
		ops[n].data.send_initial_metadata.count = c->n_md;
		ops[n].data.send_initial_metadata.metadata = c->md;
		n++;
		c->md_sent = 1;
	}
	ops[n++].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
	if (reply) {
		if (!c->md_received) {
			ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
			ops[n].data.recv_initial_metadata.recv_initial_metadata = &c->initial_md;
			n++;
			c->md_received = 1;
		}
		ops[n].op = GRPC_OP_RECV_MESSAGE;
		ops[n].data.recv_message.recv_message = &rbuf;
		n++;
	}
	if (grpc_call_start_batch(c->call, ops, n, &c->tag_batch, NULL) != GRPC_CALL_OK)
		return moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TRANSPORT, "gRPC refused a stream operation");
	c->batch_pending = 1;
	ok = wait_tag(c, &c->tag_batch, deadline_ms(timeout_ms));
	if (ok < 0) {
		grpc_call_cancel(c->call, NULL);
		wait_tag(c, &c->tag_batch, gpr_inf_future(GPR_CLOCK_MONOTONIC));
	}
	c->batch_pending = 0;
	client_status(c, st);
	rc = st->code;
	if (rc == MOAT_RPC_OK && reply) {
		if (!rbuf)
			rc = MOAT_RPC_INTERNAL;
		else if (buffer_take(rbuf, reply, reply_len) < 0)
			rc = moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	}
	if (rbuf)
		grpc_byte_buffer_destroy(rbuf);
	return rc;
}

void moat__rpc_call_cancel(moat_rpc_call *c)
{
	if (c && c->call)
		grpc_call_cancel(c->call, NULL);
}

void moat__rpc_call_free(moat_rpc_call *c)
{
	size_t i;
	grpc_event ev;

	if (!c)
		return;
	if (c->call) {
		if (c->batch_pending || c->status_pending || c->close_pending || !c->ended)
			grpc_call_cancel(c->call, NULL);
		if (c->batch_pending)
			wait_tag(c, &c->tag_batch, gpr_inf_future(GPR_CLOCK_MONOTONIC));
		if (c->status_pending)
			wait_tag(c, &c->tag_status, gpr_inf_future(GPR_CLOCK_MONOTONIC));
		if (c->close_pending)
			wait_tag(c, &c->tag_close, gpr_inf_future(GPR_CLOCK_MONOTONIC));
		grpc_call_unref(c->call);
	}
	grpc_completion_queue_shutdown(c->cq);
	do
		ev = grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
	while (ev.type != GRPC_QUEUE_SHUTDOWN);
	grpc_completion_queue_destroy(c->cq);
	if (c->watch_msg)
		grpc_byte_buffer_destroy(c->watch_msg);
	batch_buffers_free(c);
	for (i = 0; i < c->n_md; i++) {
		grpc_slice_unref(c->md[i].key);
		grpc_slice_unref(c->md[i].value);
	}
	grpc_metadata_array_destroy(&c->initial_md);
	grpc_metadata_array_destroy(&c->trailing_md);
	grpc_metadata_array_destroy(&c->request_md);
	grpc_call_details_destroy(&c->details);
	grpc_slice_unref(c->status_details);
	free(c->method);
	free(c->md_value);
	free(c);
}

/* ---- server ---- */

typedef struct worker {
	pthread_t thread;
	moat_rpc_server *srv;
	moat_rpc_call *call;
	int done; /* guarded by srv->lock */
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
	int started;
};

static int post_request(moat_rpc_server *s)
{
	moat_rpc_call *c = call_new();

	if (!c)
		return MOAT_ENOMEM;
	c->server = 1;
	if (grpc_server_request_call(s->server, &c->call, &c->details, &c->request_md, c->cq, s->cq, c) !=
	    GRPC_CALL_OK) {
		moat__rpc_call_free(c);
		return MOAT_EPROTO;
	}
	s->pending = c;
	return 0;
}

int moat__rpc_server_start(moat_rpc_server **out, const moat_rpc_server_opts *o, int *port, char *err,
                           size_t err_len)
{
	grpc_arg args[8];
	grpc_channel_args ca;
	grpc_server_credentials *creds = NULL;
	moat_rpc_server *s;
	char *cert = NULL, *key = NULL, *client_ca = NULL;
	int n = 0, rc = MOAT_EINVAL;

	*out = NULL;
	*port = 0;
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, err_len, "out of memory");
		return MOAT_ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->handler = o->handler;
	s->ctx = o->ctx;
	s->tick = o->tick;
	s->stopping = o->stopping;
	/* Hosts ping every keepalive period (1 s by default): accept that instead of sending GOAWAY. */
	args[n++] = (grpc_arg){
	    GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, {.integer = 50}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PING_STRIKES, {.integer = 0}};
	/* Our own pings find a host that froze; a host that died closes its connection anyway. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = 5000}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = 5000}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, {.integer = 0}};
	n = message_size_args(args, n, o->max_receive_bytes);
	ca.num_args = (size_t)n;
	ca.args = args;
	s->server = grpc_server_create(&ca, NULL);
	s->cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(s->server, s->cq, NULL);

	if (o->tls_cert_file) {
		grpc_ssl_pem_key_cert_pair pair;
		grpc_ssl_server_certificate_config *cfg;
		grpc_ssl_server_credentials_options *opts;

		if (read_pem(&cert, o->tls_cert_file, "TLS certificate") < 0 ||
		    read_pem(&key, o->tls_key_file, "TLS key") < 0 ||
		    (o->tls_client_ca && read_pem(&client_ca, o->tls_client_ca, "TLS client CA") < 0)) {
			snprintf(err, err_len, "%s", moat_error_last()->message);
			rc = MOAT_EIO;
			goto fail;
		}
		pair.private_key = key;
		pair.cert_chain = cert;
		cfg = grpc_ssl_server_certificate_config_create(client_ca, &pair, 1);
		opts = grpc_ssl_server_credentials_create_options_using_config(
		    client_ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
		              : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
		    cfg);
		creds = grpc_ssl_server_credentials_create_with_options(opts);
	} else {
		creds = grpc_insecure_server_credentials_create();
	}
	if (!creds) {
		snprintf(err, err_len, "cannot create server credentials (check the certificate and key)");
		rc = MOAT_EINVAL;
		goto fail;
	}
	*port = grpc_server_add_http2_port(s->server, o->listen, creds);
	grpc_server_credentials_release(creds);
	if (*port == 0) {
		snprintf(err, err_len, "cannot listen on '%s' (address in use, bad address or bad TLS files)",
		         o->listen);
		rc = MOAT_ETRANSPORT;
		goto fail;
	}
	grpc_server_start(s->server);
	s->started = 1;
	if (post_request(s) < 0) {
		snprintf(err, err_len, "cannot request calls from gRPC");
		rc = MOAT_EPROTO;
		goto fail;
	}
	rc = 0;
	*out = s;
	s = NULL;
fail:
	free(cert);
	if (key) {
		memset(key, 0, strlen(key));
		free(key);
	}
	free(client_ca);
	if (s)
		moat__rpc_server_free(s);
	return rc;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	moat_rpc_call *c = w->call;
	grpc_op op;

	/* The close op tells us later whether the peer cancelled. */
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &c->cancelled;
	if (grpc_call_start_batch(c->call, &op, 1, &c->tag_close, NULL) == GRPC_CALL_OK)
		c->close_pending = 1;
	w->srv->handler(w->srv->ctx, c);
	pthread_mutex_lock(&w->srv->lock);
	w->done = 1;
	pthread_mutex_unlock(&w->srv->lock);
	return NULL;
}

static void reap_workers(moat_rpc_server *s, int all)
{
	for (;;) {
		worker **p, *w = NULL;

		pthread_mutex_lock(&s->lock);
		for (p = &s->workers; *p; p = &(*p)->next) {
			if (all || (*p)->done) {
				w = *p;
				*p = w->next;
				break;
			}
		}
		pthread_mutex_unlock(&s->lock);
		if (!w)
			return;
		pthread_join(w->thread, NULL);
		free(w);
	}
}

static void start_worker(moat_rpc_server *s, moat_rpc_call *c)
{
	worker *w = calloc(1, sizeof(*w));
	size_t n = GRPC_SLICE_LENGTH(c->details.method);

	c->method = malloc(n + 1);
	if (!w || !c->method) {
		free(w);
		moat__rpc_call_free(c);
		return;
	}
	memcpy(c->method, GRPC_SLICE_START_PTR(c->details.method), n);
	c->method[n] = '\0';
	w->srv = s;
	w->call = c;
	pthread_mutex_lock(&s->lock);
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
		pthread_mutex_unlock(&s->lock);
		free(w);
		moat__rpc_finish(c, NULL, 0, MOAT_RPC_RESOURCE_EXHAUSTED, MOAT_ELIMIT,
		                 "the target cannot start a thread");
		moat__rpc_call_free(c);
		return;
	}
	w->next = s->workers;
	s->workers = w;
	pthread_mutex_unlock(&s->lock);
}

void moat__rpc_server_run(moat_rpc_server *s, volatile int *stop)
{
	char shutdown_tag;
	grpc_event ev;

	while (!*stop) {
		int busy;

		/*
		 * While handler threads wait on their own queues they poll the
		 * connections; a thread blocked here would compete with them and
		 * often read a stream's frame only to hand it over (a context
		 * switch per call). So only look for new calls then, without
		 * blocking; block here only when no handler runs.
		 */
		pthread_mutex_lock(&s->lock);
		busy = s->workers != NULL;
		pthread_mutex_unlock(&s->lock);
		/* A short wait: a stop request (signal) is seen within 20 ms. */
		ev = grpc_completion_queue_next(
		    s->cq, busy ? gpr_inf_past(GPR_CLOCK_MONOTONIC) : deadline_ms(20), NULL);
		if (busy && ev.type == GRPC_QUEUE_TIMEOUT) {
			struct timespec nap = {0, 2 * 1000000L};

			nanosleep(&nap, NULL);
		}
		if (ev.type == GRPC_OP_COMPLETE && ev.tag == s->pending) {
			moat_rpc_call *c = s->pending;

			s->pending = NULL;
			if (ev.success)
				start_worker(s, c);
			else
				moat__rpc_call_free(c);
			if (!*stop)
				post_request(s);
		}
		if (s->tick)
			s->tick(s->ctx);
		reap_workers(s, 0);
	}
	if (s->stopping)
		s->stopping(s->ctx);
	/* Stop taking calls, end the open ones, and wait for every handler. */
	grpc_server_shutdown_and_notify(s->server, s->cq, &shutdown_tag);
	grpc_server_cancel_all_calls(s->server);
	for (;;) {
		ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			break;
		if (ev.tag == &shutdown_tag)
			break;
		if (ev.tag == s->pending) {
			moat_rpc_call *c = s->pending;

			s->pending = NULL;
			if (ev.success)
				start_worker(s, c);
			else
				moat__rpc_call_free(c);
		}
	}
	grpc_server_cancel_all_calls(s->server);
	reap_workers(s, 1);
	s->started = 0;
}

void moat__rpc_server_free(moat_rpc_server *s)
{
	grpc_event ev;

	if (!s)
		return;
	if (s->started) {
		char tag;

		grpc_server_shutdown_and_notify(s->server, s->cq, &tag);
		grpc_server_cancel_all_calls(s->server);
		do
			ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		while (ev.type == GRPC_OP_COMPLETE && ev.tag != &tag);
		reap_workers(s, 1);
	}
	if (s->pending) {
		/* A request that never completed comes back during shutdown; free its slot. */
		s->pending->call = NULL;
		moat__rpc_call_free(s->pending);
	}
	grpc_server_destroy(s->server);
	grpc_completion_queue_shutdown(s->cq);
	do
		ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
	while (ev.type != GRPC_QUEUE_SHUTDOWN);
	grpc_completion_queue_destroy(s->cq);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

const char *moat__rpc_call_method(const moat_rpc_call *c)
{
	return c->method ? c->method : "";
}

const char *moat__rpc_call_md(moat_rpc_call *c, const char *key)
{
	size_t i;

	for (i = 0; i < c->request_md.count; i++) {
		const grpc_metadata *m = &c->request_md.metadata[i];

		if (grpc_slice_str_cmp(m->key, key) == 0) {
			size_t n = GRPC_SLICE_LENGTH(m->value);
			char *v = malloc(n + 1);

			if (!v)
				return NULL;
			memcpy(v, GRPC_SLICE_START_PTR(m->value), n);
			v[n] = '\0';
			free(c->md_value);
			c->md_value = v;
			return v;
		}
	}
	return NULL;
}

int moat__rpc_finish(moat_rpc_call *c, const void *reply, size_t reply_len, int code, int moat_code,
                     const char *message)
{
	grpc_op ops[3];
	grpc_metadata trailer;
	grpc_byte_buffer *bb = NULL;
	grpc_slice details;
	char codebuf[24];
	size_t n = 0;
	int ok;

	if (c->batch_pending)
		return MOAT_EPROTO;
	memset(ops, 0, sizeof(ops));
	if (!c->md_sent) {
		ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
		n++;
		c->md_sent = 1;
	}
	if (reply) {
		bb = buffer_from(reply, reply_len);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n].data.send_message.send_message = bb;
		n++;
	}
	details = grpc_slice_from_copied_string(message ? message : "");
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)code;
	ops[n].data.send_status_from_server.status_details = &details;
	if (moat_code) {
		snprintf(codebuf, sizeof(codebuf), "%d", moat_code);
		trailer.key = grpc_slice_from_static_string("moat-error");
		trailer.value = grpc_slice_from_copied_string(codebuf);
		ops[n].data.send_status_from_server.trailing_metadata_count = 1;
		ops[n].data.send_status_from_server.trailing_metadata = &trailer;
	}
	n++;
	if (grpc_call_start_batch(c->call, ops, n, &c->tag_batch, NULL) != GRPC_CALL_OK) {
		ok = 0;
	} else {
		ok = wait_tag(c, &c->tag_batch, gpr_inf_future(GPR_CLOCK_MONOTONIC));
	}
	if (bb)
		grpc_byte_buffer_destroy(bb);
	grpc_slice_unref(details);
	if (moat_code)
		grpc_slice_unref(trailer.value);
	c->ended = 1;
	return ok > 0 ? 0 : MOAT_ETRANSPORT;
}

int moat__rpc_call_cancelled(moat_rpc_call *c)
{
	if (c->close_pending && wait_tag(c, &c->tag_close, gpr_inf_past(GPR_CLOCK_MONOTONIC)) >= 0)
		c->close_pending = 0;
	return !c->close_pending && c->cancelled;
}
