/*
 * Attach: one stream is one host thread. The stream's handler thread runs
 * the host's entry calls itself and sends the enclave's exit calls back
 * over the same stream, where the host may call in again, nested. The
 * Call/Return rules are the conversation engine's (codec/conv.h); this file
 * is its transport (frames over the gRPC stream) and what a served Call
 * does (an entry call, or destroying the session).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/conv.h"
#include "moatd/moatd.h"

typedef struct attach_stream {
	session *s;
	moat_rpc_call *call;
	moat_conv conv;
	/*
	 * The frame to send, held until the next receive so that both go in
	 * one gRPC batch: one round trip per call on the hot path.
	 */
	uint8_t *pending;
	size_t pending_len;
	int ended;       /* the gRPC call ended (cancelled, or half-closed by the host) */
	int half_closed; /* ... cleanly, by the host */
	int mid_call;    /* ... while an exit call waited for its Return */
	int finished;    /* the final status went out */
	char limit_name[96];
} attach_stream;

/* The Attach stream served by this thread, for the exit-call forwarder. */
static _Thread_local attach_stream *current_stream;

const char *moatd_current_session(void)
{
	return current_stream ? current_stream->s->id : NULL;
}

/* Send the pending frame with no receive (the last Return of a stream). */
static int stream_flush(attach_stream *as)
{
	moat_rpc_status st;
	int rc;

	if (!as->pending)
		return 0;
	rc = moat__rpc_exchange(as->call, as->pending, as->pending_len, NULL, NULL, 0, &st);
	free(as->pending);
	as->pending = NULL;
	return rc == 0 ? 0 : MOAT_ETRANSPORT;
}

static int stream_send(void *io, const moat_frame *f)
{
	attach_stream *as = io;
	int rc;

	/* The engine always receives after it sends, but two sends in a row would still go out in order. */
	if (as->pending && (rc = stream_flush(as)) < 0)
		return rc;
	return moat__frame_encode(f, 0, &as->pending, &as->pending_len);
}

static int stream_recv(void *io, moat_frame_in **out, int64_t deadline_ns)
{
	attach_stream *as = io;
	moat_rpc_status st;
	unsigned int timeout_ms = 0;
	uint8_t *buf = NULL;
	size_t len = 0;
	int rc;

	if (deadline_ns) {
		int64_t left = deadline_ns - moat__now_ns();

		timeout_ms = left <= 0 ? 1 : (unsigned int)((left + 999999) / 1000000);
	}
	st.code = MOAT_RPC_CANCELLED;
	rc = moat__rpc_exchange(as->call, as->pending, as->pending_len, &buf, &len, timeout_ms, &st);
	free(as->pending);
	as->pending = NULL;
	if (rc == MOAT_RPC_TIMEOUT)
		return MOAT_ETIMEDOUT;
	if (rc != 0) {
		as->ended = 1;
		as->half_closed = rc == MOAT_RPC_END && st.code == MOAT_RPC_OK;
		/* Only the engine's own Calls (exit calls) wait inside a served Call. */
		as->mid_call = as->conv.depth > 0;
		return MOAT_ETRANSPORT;
	}
	rc = moat__frame_decode(out, buf, len);
	free(buf);
	return rc;
}

/* The host asks to destroy the session on this stream: the finalizer's exit calls come back on it. */
static void serve_destroy(attach_stream *as, moat_conv_result *res)
{
	moat_enclave *e;

	if (as->conv.depth > 1) {
		res->code = MOAT_EINVAL;
		res->origin = MOAT_ORIGIN_TARGET;
		snprintf(res->message, sizeof(res->message),
		         "a session cannot be destroyed from inside one of its own calls");
		return;
	}
	e = moatd_session_take_for_destroy(as->s, as->call);
	moat_enclave_destroy(e);
	res->code = 0;
	as->conv.done = 1;
}

/* Run one Call from the host: an entry call into the enclave, its deferred init, or the session's
 * destruction. */
static void serve(void *ctx, const moat_frame_in *f, moat_msg *out, moat_conv_result *res)
{
	attach_stream *as = ctx;
	const moat_error *e;
	int64_t t0;

	if (f->selector == MOAT_PROTOCOL_SELECTOR_DESTROY) {
		serve_destroy(as, res);
		return;
	}
	if ((res->code = moatd_session_enter(as->s)) < 0) {
		res->origin = MOAT_ORIGIN_TARGET;
		snprintf(res->message, sizeof(res->message),
		         "the session is being destroyed or the target is stopping");
		return;
	}
	t0 = moat__now_ns();
	if (f->selector == MOAT_PROTOCOL_SELECTOR_START) {
		/* A Load that deferred init: it runs now, its exit calls forwarded on this stream. */
		res->code = moat_enclave_start(as->s->enclave);
	} else {
		res->code = moat_enclave_call(as->s->enclave, f->selector, f->items, out);
		moatd_metrics_entry(res->code, (uint64_t)(moat__now_ns() - t0), f->items, out);
	}
	moatd_session_leave(as->s);
	if (res->code < 0) {
		e = moat_error_last();
		res->origin = e->origin;
		res->enclave_code = e->enclave_code;
		snprintf(res->message, sizeof(res->message), "%s", e->message);
		/* The enclave is dead: the target's log keeps the report too. */
		if (res->code == MOAT_ECRASHED || res->code == MOAT_ESANDBOX)
			moatd_log(MOATD_LOG_WARN, "session %s: %s", as->s->id, e->message);
	}
}

static const moat_conv_ops attach_ops = {stream_send, stream_recv, serve};

/* Send the stream's final status (once): a broken protocol is reported as such, never as OK. */
static void end_stream(attach_stream *as)
{
	if (as->finished)
		return;
	as->finished = 1;
	if (as->conv.why)
		moatd_refuse(as->call, MOAT_EPROTO, "protocol error on the Attach stream: %s", as->conv.why);
	else if (as->half_closed && as->mid_call)
		moatd_refuse(as->call, MOAT_EPROTO,
		             "protocol error on the Attach stream: the host half-closed it while an exit "
		             "call waited for its Return");
	else if (as->conv.broken && !as->ended)
		moatd_refuse(as->call, MOAT_ENOMEM, "out of memory on the Attach stream");
	else if (!moat__rpc_call_cancelled(as->call))
		moat__rpc_finish(as->call, NULL, 0, MOAT_RPC_OK, 0, NULL);
}

/* An exit call outside any host call (init, finalizer, the enclave's own threads): log and time are answered
 * here. */
static int answer_locally(session *s, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	const void *d;
	size_t l;

	if (selector == MOAT_SELECTOR_LOG) {
		if (moat_msg_item(in, 0, &d, &l) == 0)
			moatd_log(MOATD_LOG_INFO, "session %s: [enclave] %.*s", s->id, (int)l,
			          (const char *)d);
		return 0;
	}
	if (selector == MOAT_SELECTOR_TIME) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		return out ? moat_msg_push_u64(out, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec)
		           : 0;
	}
	return MOAT_ENOHANDLER;
}

/*
 * The enclave's exit calls (every one, the runtime's log/time/spawn too) go
 * to the host over the stream this thread serves; the engine runs the entry
 * calls the host makes meanwhile here, nested.
 */
int moatd_forward_exit(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	session *s = payload;
	attach_stream *as = current_stream;
	moat_frame_in *f;
	size_t i;
	int rc;

	if (!as || as->s != s)
		return answer_locally(s, selector, in, out);
	rc = moat__conv_call(&as->conv, selector, in, 0, &f);
	if (rc < 0) {
		/* Tell the host now, not when the enclave's call ends (which may take long). */
		if (as->conv.why || (as->half_closed && as->mid_call))
			end_stream(as);
		return rc;
	}
	rc = f->code;
	/* A failed exit call leaves out as it was. */
	for (i = 0; out && rc == 0 && i < moat_msg_count(f->items); i++) {
		const void *d;
		size_t l;

		moat_msg_item(f->items, i, &d, &l);
		rc = moat_msg_push(out, d, l);
	}
	moat__frame_in_free(f);
	return rc;
}

/* Serve the host thread behind this stream until it goes or destroys the session; as says how it ended. */
static void serve_stream(session *s, moat_rpc_call *call, attach_stream *as)
{
	memset(as, 0, sizeof(*as));
	as->s = s;
	as->call = call;
	moat__conv_init(&as->conv, &attach_ops, as, as);
	as->conv.max_depth = s->d->cfg.max_nesting;
	snprintf(as->limit_name, sizeof(as->limit_name), "moatd's limit, --max-nesting %u",
	         s->d->cfg.max_nesting);
	as->conv.depth_limit_name = as->limit_name;
	as->conv.depth_limit_origin = MOAT_ORIGIN_TARGET;
	current_stream = as;
	if (moat__conv_serve(&as->conv) == 0)
		stream_flush(as); /* the Return of the session's destruction */
	current_stream = NULL;
	free(as->pending);
	as->pending = NULL;
}

void moatd_handle_attach(moatd *d, moat_rpc_call *call, session *s, int lease)
{
	attach_stream as;
	stream_ref ref;

	moatd_session_track(s, &ref, call);
	if (lease)
		moatd_session_serve_lease(s, call);
	else
		serve_stream(s, call, &as);
	moatd_session_untrack(s, &ref);
	/*
	 * The host thread's slot is free before the host hears that its stream
	 * ended: a thread it starts next (after libmoat's load ended the
	 * loading thread's stream, say) is not refused for it.
	 */
	moatd_attach_done(d, call);
	if (!lease)
		end_stream(&as);
}
