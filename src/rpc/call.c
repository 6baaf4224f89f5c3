/*
 * Client calls and streams, and the exchange that server calls share. A
 * NULL received message means "ended" for every reason (clean end, cancel,
 * reset, keepalive time-out), so the status (client) or the cancelled flag
 * (server) tells why. At most one outstanding op of each kind per call.
 */
#include "rpc/rpc_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/support/alloc.h>

#include <moat/sys/backend.h>

moat_rpc_call *moat__rpc_call_new(void)
{
	moat_rpc_call *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->cq = grpc_completion_queue_create_for_pluck(NULL);
	c->tag_batch.call = c->tag_status.call = c->tag_close.call = c;
	grpc_metadata_array_init(&c->initial_md);
	grpc_metadata_array_init(&c->trailing_md);
	grpc_metadata_array_init(&c->request_md);
	grpc_call_details_init(&c->details);
	c->status_details = grpc_empty_slice();
	return c;
}

/* A call's own deadline, for gRPC (0: none). */
static gpr_timespec call_deadline(unsigned int ms)
{
	if (ms == 0)
		return gpr_inf_future(GPR_CLOCK_MONOTONIC);
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
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

grpc_byte_buffer *moat__rpc_buffer_from(const void *data, size_t len)
{
	grpc_slice s = grpc_slice_from_copied_buffer(data, len);
	grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);

	grpc_slice_unref(s);
	return bb;
}

/* Copy a received message into one malloc'd buffer (a single copy, slice by slice). */
int moat__rpc_buffer_take(grpc_byte_buffer *bb, uint8_t **out, size_t *len)
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
		if (moat__rpc_wait(c, &c->tag_status, moat__rpc_deadline(10000)) < 0) {
			grpc_call_cancel(c->call, NULL);
			moat__rpc_wait(c, &c->tag_status, RPC_FOREVER);
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
	return moat__rpc_unary_peer(ch, method, md, req, req_len, resp, resp_len, timeout_ms, st, NULL, 0);
}

int moat__rpc_unary_peer(moat_rpc_channel *ch, const char *method, const char *const *md, const void *req,
                         size_t req_len, uint8_t **resp, size_t *resp_len, unsigned int timeout_ms,
                         moat_rpc_status *st, char *peer, size_t peer_cap)
{
	grpc_op ops[6];
	grpc_byte_buffer *send, *recv = NULL;
	moat_rpc_call *c;
	grpc_slice m;
	int rc;

	*resp = NULL;
	*resp_len = 0;
	memset(st, 0, sizeof(*st));
	c = moat__rpc_call_new();
	if (!c)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	m = grpc_slice_from_static_string(method);
	c->call = grpc_channel_create_call(ch->channel, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq, m, NULL,
	                                   call_deadline(timeout_ms), NULL);
	set_md(c, md);
	send = moat__rpc_buffer_from(req, req_len);
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
	moat__rpc_wait(c, &c->tag_batch, RPC_FOREVER);
	grpc_byte_buffer_destroy(send);
	if (peer && peer_cap) {
		char *p = grpc_call_get_peer(c->call);

		snprintf(peer, peer_cap, "%s", p ? p : "");
		gpr_free(p);
	}
	client_status(c, st);
	rc = st->code;
	if (rc == MOAT_RPC_OK) {
		if (!recv)
			rc = MOAT_RPC_INTERNAL;
		else if (moat__rpc_buffer_take(recv, resp, resp_len) < 0)
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
	c = moat__rpc_call_new();
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
	if (c->close_pending && moat__rpc_wait(c, &c->tag_close, RPC_NOW) >= 0)
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
		c->send_buf = moat__rpc_buffer_from(send, send_len);
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
	ok = moat__rpc_wait(c, &c->tag_batch, moat__rpc_deadline(timeout_ms));
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
		rc = moat__rpc_buffer_take(c->recv_buf, recv, recv_len);
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
	ok = moat__rpc_wait(c, &c->tag_batch, RPC_NOW);
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
	ok = moat__rpc_wait(c, &c->tag_batch, moat__rpc_deadline(timeout_ms));
	if (ok < 0) {
		grpc_call_cancel(c->call, NULL);
		moat__rpc_wait(c, &c->tag_batch, RPC_FOREVER);
	}
	c->batch_pending = 0;
	client_status(c, st);
	rc = st->code;
	if (rc == MOAT_RPC_OK && reply) {
		if (!rbuf)
			rc = MOAT_RPC_INTERNAL;
		else if (moat__rpc_buffer_take(rbuf, reply, reply_len) < 0)
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

	if (!c)
		return;
	if (c->event) {
		/* The loop frees it once its operations completed (server_event.c). */
		moat__rpc_event_release(c);
		return;
	}
	if (c->call) {
		if (c->batch_pending || c->status_pending || c->close_pending || !c->ended)
			grpc_call_cancel(c->call, NULL);
		if (c->batch_pending)
			moat__rpc_wait(c, &c->tag_batch, RPC_FOREVER);
		if (c->status_pending)
			moat__rpc_wait(c, &c->tag_status, RPC_FOREVER);
		if (c->close_pending)
			moat__rpc_wait(c, &c->tag_close, RPC_FOREVER);
		grpc_call_unref(c->call);
	}
	grpc_completion_queue_shutdown(c->cq);
	while (grpc_completion_queue_pluck(c->cq, NULL, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type !=
	       GRPC_QUEUE_SHUTDOWN)
		;
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
