/*
 * The fake rpc layer (see fake_rpc.h): the server-side functions of
 * src/rpc/rpc.h that moatd's handlers call, with the real layer's results
 * (src/rpc/call.c, server.c) and no gRPC underneath.
 */
#include <stdlib.h>
#include <string.h>

#include <moat/moat.h>

#include "fake_rpc.h"
#include "replay.h"

#define MAX_MD 8

struct moat_rpc_call {
	char *method;
	char *md[2 * MAX_MD];
	size_t n_md;
	char *md_value; /* the last metadata lookup's copy, valid until the next one */
	const fake_peer_ops *ops;
	void *peer;
	fake_outcome *out;
	int ended;    /* the peer's stream ended (END was returned) */
	int end_code; /* ... with this code */
	void *data;   /* moat__rpc_call_set_data */
};

static char *copy_str(const char *s)
{
	size_t n = strlen(s);
	char *c = malloc(n + 1);

	CHECK(c != NULL);
	memcpy(c, s, n + 1);
	return c;
}

moat_rpc_call *fake_call_new(const char *method, const char *const *md, const fake_peer_ops *ops, void *peer,
                             fake_outcome *out)
{
	moat_rpc_call *c = calloc(1, sizeof(*c));

	CHECK(c != NULL);
	c->method = copy_str(method);
	for (; md && md[0] && md[1] && c->n_md < MAX_MD; md += 2) {
		c->md[2 * c->n_md] = copy_str(md[0]);
		c->md[2 * c->n_md + 1] = copy_str(md[1]);
		c->n_md++;
	}
	c->ops = ops;
	c->peer = peer;
	c->out = out;
	memset(out, 0, sizeof(*out));
	return c;
}

static int call_ended(moat_rpc_call *c, moat_rpc_status *st)
{
	if (st) {
		memset(st, 0, sizeof(*st));
		st->code = c->out->cancelled ? MOAT_RPC_CANCELLED : c->end_code;
	}
	return MOAT_RPC_END;
}

int moat__rpc_exchange(moat_rpc_call *c, const void *send, size_t send_len, uint8_t **recv, size_t *recv_len,
                       unsigned int timeout_ms, moat_rpc_status *st)
{
	int rc, code = MOAT_RPC_CANCELLED;

	if (recv) {
		*recv = NULL;
		*recv_len = 0;
	}
	/* A handler sends nothing after its final status. */
	CHECK(!c->out->finished);
	if (c->out->cancelled) {
		c->ended = 1;
		c->end_code = MOAT_RPC_CANCELLED;
	}
	/* As in the real layer, a stream that ended stays ended: nothing more goes out. */
	if (c->ended)
		return call_ended(c, st);
	if (send) {
		c->out->sent++;
		if (c->ops->sent)
			c->ops->sent(c->peer, send, send_len);
	}
	if (!recv)
		return 0;
	rc = c->ops->next(c->peer, recv, recv_len, &code);
	if (rc == 0) {
		CHECK(*recv != NULL || *recv_len == 0);
		c->out->received++;
		return 0;
	}
	CHECK(rc == MOAT_RPC_END);
	CHECK(*recv == NULL);
	c->ended = 1;
	c->end_code = code;
	if (code == MOAT_RPC_OK)
		c->out->peer_closed = 1;
	else
		c->out->peer_cancelled = 1;
	return call_ended(c, st);
}

int moat__rpc_recv(moat_rpc_call *c, uint8_t **buf, size_t *len, moat_rpc_status *st)
{
	/* The request deadline has no meaning in a script: the next message or the end comes at once. */
	return moat__rpc_exchange(c, NULL, 0, buf, len, 0, st);
}

void moat__rpc_call_set_data(moat_rpc_call *c, void *data)
{
	c->data = data;
}

void *moat__rpc_call_data(const moat_rpc_call *c)
{
	return c->data;
}

int moat__rpc_park(moat_rpc_call *c, const void *first, size_t first_len, const void *at_stop,
                   size_t at_stop_len)
{
	/* As the real layer would end it: the first message, then (the server stopping) the last and OK. */
	CHECK(!c->out->finished);
	if (c->ops->sent)
		c->ops->sent(c->peer, first, first_len);
	c->out->sent++;
	return moat__rpc_finish(c, at_stop, at_stop_len, MOAT_RPC_OK, 0, NULL);
}

int moat__rpc_watch(moat_rpc_call *c, moat_rpc_status *st)
{
	CHECK(!c->out->finished);
	if (!c->ended) {
		c->ended = 1;
		c->end_code = c->ops->watch_end ? c->ops->watch_end(c->peer) : MOAT_RPC_CANCELLED;
		if (c->end_code == MOAT_RPC_OK)
			c->out->peer_closed = 1;
		else
			c->out->peer_cancelled = 1;
	}
	return call_ended(c, st);
}

void moat__rpc_call_cancel(moat_rpc_call *c)
{
	if (c)
		c->out->cancelled = 1;
}

void moat__rpc_call_free(moat_rpc_call *c)
{
	size_t i;

	if (!c)
		return;
	c->out->freed++;
	for (i = 0; i < 2 * c->n_md; i++)
		free(c->md[i]);
	free(c->md_value);
	free(c->method);
	free(c);
}

const char *moat__rpc_call_method(const moat_rpc_call *c)
{
	return c->method;
}

const char *moat__rpc_call_md(moat_rpc_call *c, const char *key)
{
	size_t i;

	for (i = 0; i < c->n_md; i++) {
		if (strcmp(c->md[2 * i], key) == 0) {
			/* A fresh copy each time, the last one freed: a value kept too long shows under ASan.
			 */
			free(c->md_value);
			c->md_value = copy_str(c->md[2 * i + 1]);
			return c->md_value;
		}
	}
	return NULL;
}

int moat__rpc_finish(moat_rpc_call *c, const void *reply, size_t reply_len, int code, int moat_code,
                     const char *message)
{
	fake_outcome *o = c->out;

	/* Every call is answered once at most. */
	CHECK(o->finished == 0);
	CHECK(code >= MOAT_RPC_OK && code <= MOAT_RPC_UNAUTHENTICATED);
	CHECK(moat_code <= 0);
	CHECK(!message || strlen(message) < 4096);
	o->finished = 1;
	if (o->cancelled || o->peer_cancelled)
		return MOAT_ETRANSPORT;
	o->delivered = 1;
	o->code = code;
	o->moat_code = moat_code;
	if (reply) {
		o->reply = malloc(reply_len ? reply_len : 1);
		CHECK(o->reply != NULL);
		memcpy(o->reply, reply, reply_len);
		o->reply_len = reply_len;
	}
	return 0;
}

int moat__rpc_call_cancelled(moat_rpc_call *c)
{
	return c->out->cancelled || c->out->peer_cancelled;
}

void moat__rpc_server_broadcast(moat_rpc_server *srv, const void *msg, size_t len)
{
	/* The fake ends a parked call at once (moat__rpc_park): nothing stays to broadcast to. */
	(void)srv;
	(void)msg;
	(void)len;
}
