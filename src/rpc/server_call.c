/*
 * A server call as its handler sees it: admission, receiving the request
 * (with the server's deadline), metadata, and the final status.
 */
#include "rpc/rpc_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/log.h>

#include <moat/sys/backend.h>

void moat__rpc_call_set_data(moat_rpc_call *c, void *data)
{
	c->data = data;
}

void *moat__rpc_call_data(const moat_rpc_call *c)
{
	return c->data;
}

int moat__rpc_recv(moat_rpc_call *c, uint8_t **buf, size_t *len, moat_rpc_status *st)
{
	moat_rpc_server *s = c->worker ? c->worker->srv : NULL;
	int rc;

	if (c->event)
		return moat__rpc_event_recv(c, buf, len, st);
	rc = moat__rpc_exchange(c, NULL, 0, buf, len, s ? s->recv_timeout_ms : 0, st);
	if (rc == MOAT_RPC_TIMEOUT) {
		/* The receive stays outstanding; ending the call completes it (the handler frees the call).
		 */
		grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, s->recv_timeout_message,
		                             NULL);
		if (st) {
			memset(st, 0, sizeof(*st));
			st->code = MOAT_RPC_DEADLINE_EXCEEDED;
			snprintf(st->message, sizeof(st->message), "%s", s->recv_timeout_message);
		}
		moat__rpc_server_report(s, 0, MOAT_RPC_REFUSED_REQUEST_TIMEOUT, 1, "ended a call: %s",
		                        s->recv_timeout_message);
	}
	return rc;
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

	if (c->event)
		return moat__rpc_event_finish(c, reply, reply_len, code, moat_code, message);
	if (c->batch_pending)
		return MOAT_EPROTO;
	memset(ops, 0, sizeof(ops));
	if (!c->md_sent) {
		ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
		n++;
		c->md_sent = 1;
	}
	if (reply) {
		bb = moat__rpc_buffer_from(reply, reply_len);
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
		/*
		 * A status is not flow-controlled, so it goes out at once; bound the
		 * wait anyway (to 1 s on the server loop, which admission refusals
		 * run on) so that no peer can hold the thread.
		 */
		ok = moat__rpc_wait(c, &c->tag_batch, moat__rpc_deadline(c->worker ? 10000 : 1000));
		if (ok < 0) {
			grpc_call_cancel(c->call, NULL);
			moat__rpc_wait(c, &c->tag_batch, RPC_FOREVER);
			ok = 0;
		}
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
	if (c->event) {
		int cancelled;

		pthread_mutex_lock(&c->srv->lock);
		cancelled = c->ev_closed && c->cancelled;
		pthread_mutex_unlock(&c->srv->lock);
		return cancelled;
	}
	if (c->close_pending && moat__rpc_wait(c, &c->tag_close, RPC_NOW) >= 0)
		c->close_pending = 0;
	return !c->close_pending && c->cancelled;
}
