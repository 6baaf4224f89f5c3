/*
 * Calls the server loop drives, with no thread of their own: a unary
 * call's request is read here (within the server's receive deadline, and
 * counted against max_pending meanwhile), then its handler runs; a parked
 * call stays open with nothing but its close operation outstanding. Every
 * operation of such a call completes on the loop's queue, so the loop
 * frees the call once no operation is outstanding and no handler holds it.
 *
 * A call is held by its outstanding operations (ev_ops) and by its owner
 * (ev_owned: the loop until the request is in, then the handler until it
 * frees the call); both are guarded by srv->lock.
 */
#include "rpc/rpc_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <moat/sys/backend.h>

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void ev_free(moat_rpc_call *c)
{
	unsigned int i;

	for (i = 0; i < 2; i++)
		if (c->ev_msg[i])
			grpc_byte_buffer_destroy(c->ev_msg[i]);
	if (c->ev_fin_buf)
		grpc_byte_buffer_destroy(c->ev_fin_buf);
	if (c->ev_next_send)
		grpc_byte_buffer_destroy(c->ev_next_send);
	if (c->ev_has_details)
		grpc_slice_unref(c->ev_details);
	if (c->ev_has_trailer)
		grpc_slice_unref(c->ev_trailer);
	free(c->ev_at_stop);
	/* Nothing is outstanding: the common release path finds a finished call. */
	c->event = 0;
	c->ended = 1;
	c->batch_pending = c->close_pending = 0;
	moat__rpc_call_free(c);
}

/* Drop one hold on c (an operation completed, or its owner let go); free it when none is left. */
static void ev_put(moat_rpc_call *c, int owner)
{
	moat_rpc_server *s = c->srv;
	int last;

	pthread_mutex_lock(&s->lock);
	if (owner)
		c->ev_owned = 0;
	else
		c->ev_ops--;
	last = c->ev_ops == 0 && !c->ev_owned;
	pthread_mutex_unlock(&s->lock);
	if (last)
		ev_free(c);
}

/* Start a batch on the loop's queue, counted in ev_ops. Returns 0 or -1. */
static int ev_batch(moat_rpc_call *c, const grpc_op *ops, size_t n, rpc_tag *tag)
{
	pthread_mutex_lock(&c->srv->lock);
	c->ev_ops++;
	pthread_mutex_unlock(&c->srv->lock);
	if (grpc_call_start_batch(c->call, ops, n, tag, NULL) == GRPC_CALL_OK)
		return 0;
	pthread_mutex_lock(&c->srv->lock);
	c->ev_ops--;
	pthread_mutex_unlock(&c->srv->lock);
	return -1;
}

void moat__rpc_event_adopt(moat_rpc_server *s, moat_rpc_call *c)
{
	c->event = 1;
	c->srv = s;
	c->ev_owned = 1;
	c->tag_recv = (rpc_tag){c, TAG_RECV};
	c->tag_send = (rpc_tag){c, TAG_SEND};
	c->tag_finish = (rpc_tag){c, TAG_FINISH};
	c->tag_close = (rpc_tag){c, TAG_CLOSE};
}

static int post_recv(moat_rpc_call *c)
{
	grpc_op op;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_MESSAGE;
	op.data.recv_message.recv_message = &c->recv_buf;
	return ev_batch(c, &op, 1, &c->tag_recv);
}

/* Take c off the waiting list (when it is on it). Called with the lock held. */
static void unwait_locked(moat_rpc_server *s, moat_rpc_call *c)
{
	moat_rpc_call **p;

	for (p = &s->waiting; *p; p = &(*p)->ev_next) {
		if (*p == c) {
			*p = c->ev_next;
			c->ev_next = NULL;
			s->n_pending--;
			return;
		}
	}
}

/* End c at a limit: RESOURCE_EXHAUSTED, moat-error MOAT_ELIMIT, the limit's message (logged too). */
static void refuse_at_limit(moat_rpc_server *s, moat_rpc_call *c, int refusal, const char *limit)
{
	moat__rpc_server_report(s, 0, refusal, 1, "refused a call: %s", limit);
	moat__rpc_event_finish(c, NULL, 0, GRPC_STATUS_RESOURCE_EXHAUSTED, MOAT_ELIMIT, limit);
}

void moat__rpc_event_start(moat_rpc_server *s, moat_rpc_call *c)
{
	grpc_op op;
	int full;

	pthread_mutex_lock(&s->lock);
	full = s->max_pending && s->n_pending >= s->max_pending;
	if (!full) {
		s->n_pending++;
		c->ev_deadline = s->recv_timeout_ms ? now_ms() + s->recv_timeout_ms : INT64_MAX;
		c->ev_next = s->waiting;
		s->waiting = c;
	}
	pthread_mutex_unlock(&s->lock);
	if (full) {
		refuse_at_limit(s, c, MOAT_RPC_REFUSED_PENDING, s->pending_limit);
		ev_put(c, 1);
		return;
	}
	/* The close tells later whether the peer cancelled; it completes once the status went out. */
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &c->cancelled;
	if (ev_batch(c, &op, 1, &c->tag_close) < 0 || post_recv(c) < 0) {
		grpc_call_cancel(c->call, NULL);
		pthread_mutex_lock(&s->lock);
		unwait_locked(s, c);
		pthread_mutex_unlock(&s->lock);
		ev_put(c, 1);
	}
}

/*
 * A receive completed. The request is taken and then one more receive
 * tells whether the peer half-closed (a unary call carries exactly one
 * message; a server-streaming one is served at its request); then the
 * handler gets the call.
 */
static void ev_received(moat_rpc_server *s, moat_rpc_call *c, int success)
{
	grpc_byte_buffer *m = success ? c->recv_buf : NULL;

	if (!success && c->recv_buf)
		grpc_byte_buffer_destroy(c->recv_buf);
	c->recv_buf = NULL;
	if (m)
		c->ev_msg[c->ev_n_msg++] = m;
	if (m && c->ev_n_msg < 2 && !c->ev_expired && !s->methods[c->method_index].streams_reply &&
	    post_recv(c) == 0)
		return;
	pthread_mutex_lock(&s->lock);
	unwait_locked(s, c);
	pthread_mutex_unlock(&s->lock);
	if (!success || c->ev_expired) {
		/* Cancelled, gone, or too late: no handler will answer it. */
		grpc_call_cancel(c->call, NULL);
		ev_put(c, 1);
		return;
	}
	if (s->methods[c->method_index].serving == MOAT_RPC_SERVE_INLINE)
		s->handler(s->ctx, c);
	else
		moat__rpc_start_worker(s, c);
}

/* Take a parked call off the list. Called with the lock held. */
static void unpark_locked(moat_rpc_server *s, moat_rpc_call *c)
{
	moat_rpc_call **p;

	if (!c->ev_parked)
		return;
	for (p = &s->parked; *p; p = &(*p)->ev_next) {
		if (*p == c) {
			*p = c->ev_next;
			break;
		}
	}
	c->ev_next = NULL;
	c->ev_parked = 0;
	s->n_parked--;
}

/* Send bb (taken over) on a parked call; only the loop calls this. */
static void send_parked(moat_rpc_call *c, grpc_byte_buffer *bb)
{
	grpc_op op;

	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_SEND_MESSAGE;
	op.data.send_message.send_message = bb;
	c->send_buf = bb;
	pthread_mutex_lock(&c->srv->lock);
	c->ev_sending = 1;
	pthread_mutex_unlock(&c->srv->lock);
	if (ev_batch(c, &op, 1, &c->tag_send) < 0) {
		grpc_byte_buffer_destroy(bb);
		c->send_buf = NULL;
		pthread_mutex_lock(&c->srv->lock);
		c->ev_sending = 0;
		pthread_mutex_unlock(&c->srv->lock);
	}
}

void moat__rpc_server_broadcast(moat_rpc_server *s, const void *msg, size_t len)
{
	moat_rpc_call *c, **all;
	unsigned int n = 0, i;

	/* As moat__rpc_event_stop: only the loop frees a parked call, so the snapshot stays valid. */
	pthread_mutex_lock(&s->lock);
	all = calloc(s->n_parked + 1, sizeof(*all));
	for (c = s->parked; c && all; c = c->ev_next)
		if (!c->ended)
			all[n++] = c;
	pthread_mutex_unlock(&s->lock);
	for (i = 0; i < n; i++) {
		grpc_byte_buffer *bb = moat__rpc_buffer_from(msg, len);
		int busy;

		c = all[i];
		pthread_mutex_lock(&s->lock);
		busy = c->ev_sending;
		pthread_mutex_unlock(&s->lock);
		if (busy) {
			if (c->ev_next_send)
				grpc_byte_buffer_destroy(c->ev_next_send);
			c->ev_next_send = bb;
		} else {
			send_parked(c, bb);
		}
	}
	free(all);
}

void moat__rpc_event_done(moat_rpc_server *s, rpc_tag *tag, int success)
{
	moat_rpc_call *c = tag->call;

	switch (tag->what) {
	case TAG_RECV: ev_received(s, c, success); break;
	case TAG_SEND:
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
		pthread_mutex_lock(&s->lock);
		c->ev_sent = success;
		c->ev_sending = 0;
		pthread_mutex_unlock(&s->lock);
		if (success && c->ev_next_send) {
			grpc_byte_buffer *next = c->ev_next_send;

			c->ev_next_send = NULL;
			send_parked(c, next);
		}
		break;
	case TAG_FINISH: break; /* its buffers go with the call */
	case TAG_CLOSE:
		/* The call is over: a parked one has nothing more to wait for. */
		pthread_mutex_lock(&s->lock);
		c->ev_closed = 1;
		unpark_locked(s, c);
		pthread_mutex_unlock(&s->lock);
		break;
	default: break;
	}
	ev_put(c, 0);
}

void moat__rpc_event_expire(moat_rpc_server *s)
{
	int64_t now = now_ms();
	moat_rpc_call *late[16];
	size_t n = 0, i;
	moat_rpc_call *c;

	pthread_mutex_lock(&s->lock);
	for (c = s->waiting; c && n < sizeof(late) / sizeof(late[0]); c = c->ev_next) {
		if (!c->ev_expired && c->ev_deadline <= now) {
			c->ev_expired = 1;
			late[n++] = c;
		}
	}
	pthread_mutex_unlock(&s->lock);
	/* The outstanding receive completes with the cancel and releases the call (ev_received). */
	for (i = 0; i < n; i++) {
		grpc_call_cancel_with_status(late[i]->call, GRPC_STATUS_DEADLINE_EXCEEDED,
		                             s->recv_timeout_message, NULL);
		moat__rpc_server_report(s, 0, MOAT_RPC_REFUSED_REQUEST_TIMEOUT, 1, "ended a call: %s",
		                        s->recv_timeout_message);
	}
}

int moat__rpc_event_finish(moat_rpc_call *c, const void *reply, size_t reply_len, int code, int moat_code,
                           const char *message)
{
	grpc_op ops[3];
	grpc_metadata trailer;
	char codebuf[24];
	size_t n = 0;

	if (c->ended)
		return MOAT_EPROTO;
	c->ended = 1;
	memset(ops, 0, sizeof(ops));
	if (!c->md_sent) {
		ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
		c->md_sent = 1;
	}
	if (reply) {
		c->ev_fin_buf = moat__rpc_buffer_from(reply, reply_len);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n].data.send_message.send_message = c->ev_fin_buf;
		n++;
	}
	/* What the batch points to lives until the call is freed: the batch completes later. */
	c->ev_details = grpc_slice_from_copied_string(message ? message : "");
	c->ev_has_details = 1;
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)code;
	ops[n].data.send_status_from_server.status_details = &c->ev_details;
	if (moat_code) {
		snprintf(codebuf, sizeof(codebuf), "%d", moat_code);
		c->ev_trailer = grpc_slice_from_copied_string(codebuf);
		c->ev_has_trailer = 1;
		trailer.key = grpc_slice_from_static_string("moat-error");
		trailer.value = c->ev_trailer;
		ops[n].data.send_status_from_server.trailing_metadata_count = 1;
		ops[n].data.send_status_from_server.trailing_metadata = &trailer;
	}
	n++;
	if (ev_batch(c, ops, n, &c->tag_finish) < 0) {
		grpc_call_cancel(c->call, NULL);
		return MOAT_ETRANSPORT;
	}
	return 0;
}

int moat__rpc_event_recv(moat_rpc_call *c, uint8_t **buf, size_t *len, moat_rpc_status *st)
{
	grpc_byte_buffer *m;
	int rc;

	*buf = NULL;
	*len = 0;
	if (c->ev_next_msg >= c->ev_n_msg) {
		/* The loop saw the end of the peer's messages before the handler ran. */
		if (st) {
			memset(st, 0, sizeof(*st));
			st->code = MOAT_RPC_OK;
		}
		return MOAT_RPC_END;
	}
	m = c->ev_msg[c->ev_next_msg];
	c->ev_msg[c->ev_next_msg++] = NULL;
	rc = moat__rpc_buffer_take(m, buf, len);
	grpc_byte_buffer_destroy(m);
	return rc;
}

void moat__rpc_event_release(moat_rpc_call *c)
{
	int cancel;

	pthread_mutex_lock(&c->srv->lock);
	/* A handler that neither answered nor parked the call leaves the peer nothing to wait for. */
	cancel = !c->ended && !c->ev_parked;
	pthread_mutex_unlock(&c->srv->lock);
	if (cancel)
		grpc_call_cancel(c->call, NULL);
	ev_put(c, 1);
}

int moat__rpc_park(moat_rpc_call *c, const void *first, size_t first_len, const void *at_stop,
                   size_t at_stop_len)
{
	moat_rpc_server *s = c->srv;
	grpc_op ops[2];
	int full;

	if (!c->event || c->ended)
		return MOAT_EPROTO;
	pthread_mutex_lock(&s->lock);
	full = s->max_parked && s->n_parked >= s->max_parked;
	if (!full && !c->ev_closed) {
		s->n_parked++;
		c->ev_parked = 1;
		c->ev_next = s->parked;
		s->parked = c;
	}
	pthread_mutex_unlock(&s->lock);
	if (full) {
		refuse_at_limit(s, c, MOAT_RPC_REFUSED_PARKED, s->parked_limit);
		return MOAT_ELIMIT;
	}
	if (at_stop) {
		c->ev_at_stop = malloc(at_stop_len ? at_stop_len : 1);
		if (c->ev_at_stop) {
			memcpy(c->ev_at_stop, at_stop, at_stop_len);
			c->ev_at_stop_len = at_stop_len;
		}
	}
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	c->md_sent = 1;
	c->send_buf = moat__rpc_buffer_from(first, first_len);
	ops[1].op = GRPC_OP_SEND_MESSAGE;
	ops[1].data.send_message.send_message = c->send_buf;
	pthread_mutex_lock(&s->lock);
	c->ev_sending = 1;
	pthread_mutex_unlock(&s->lock);
	if (ev_batch(c, ops, 2, &c->tag_send) < 0) {
		grpc_byte_buffer_destroy(c->send_buf);
		c->send_buf = NULL;
		pthread_mutex_lock(&s->lock);
		c->ev_sending = 0;
		pthread_mutex_unlock(&s->lock);
		grpc_call_cancel(c->call, NULL);
	}
	return 0;
}

void moat__rpc_event_stop(moat_rpc_server *s)
{
	moat_rpc_call *c, **all;
	unsigned int n = 0, i;
	int *state;

	/*
	 * Only the loop (this thread) frees a parked call (its close is
	 * outstanding until the loop sees it complete), so the snapshot stays
	 * valid once the lock is dropped; finishing takes the lock itself.
	 */
	pthread_mutex_lock(&s->lock);
	all = calloc(s->n_parked + 1, sizeof(*all));
	state = calloc(s->n_parked + 1, sizeof(*state));
	for (c = s->parked; c && all && state; c = c->ev_next) {
		state[n] = c->ev_sending ? 2 : c->ev_sent;
		all[n++] = c;
	}
	pthread_mutex_unlock(&s->lock);
	for (i = 0; i < n; i++) {
		c = all[i];
		/* Its close completes once the status went out (or the cancel), which unparks it. */
		if (state[i] == 1)
			moat__rpc_event_finish(c, c->ev_at_stop, c->ev_at_stop_len, GRPC_STATUS_OK, 0, NULL);
		else if (state[i] == 2) /* a message is on its way: the status alone follows it */
			moat__rpc_event_finish(c, NULL, 0, GRPC_STATUS_OK, 0, NULL);
		else
			grpc_call_cancel(c->call, NULL);
	}
	free(all);
	free(state);
}
