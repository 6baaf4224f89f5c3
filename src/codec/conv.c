/*
 * The conversation engine (see conv.h). No I/O here: the transport is the
 * send and recv callbacks, so the same rules hold on a socketpair and on a
 * gRPC stream, and a fuzzer can drive both sides.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/conv.h"

void moat__conv_init(moat_conv *c, const moat_conv_ops *ops, void *io, void *ctx)
{
	memset(c, 0, sizeof(*c));
	c->ops = ops;
	c->io = io;
	c->ctx = ctx;
	c->depth_limit_name = "the limit";
	c->depth_limit_origin = MOAT_ORIGIN_TARGET;
}

static int broken(moat_conv *c, int rc, const char *why)
{
	c->broken = 1;
	if (why)
		c->why = why;
	return rc;
}

/* Answer a Call of the peer with a failed Return made here (origin: this side's limits). */
static int refuse_call(moat_conv *c, const moat_frame_in *call, int code, const char *why)
{
	moat_frame ret;
	int rc;

	memset(&ret, 0, sizeof(ret));
	ret.kind = MOAT_FRAME_RETURN;
	ret.seq = call->seq;
	ret.code = code;
	ret.origin = (uint32_t)c->depth_limit_origin;
	ret.message = why;
	rc = c->broken ? MOAT_ETRANSPORT : c->ops->send(c->io, &ret);
	return rc < 0 ? broken(c, rc, NULL) : 0;
}

/* Run one Call of the peer (or refuse it past the depth limit) into res and send its Return. */
static int answer_into(moat_conv *c, const moat_frame_in *call, moat_conv_result *res)
{
	moat_msg *out = NULL;
	moat_frame ret;
	int rc;

	res->code = 0;
	res->origin = MOAT_ORIGIN_NONE;
	res->enclave_code = 0;
	res->message[0] = '\0';
	if (c->max_depth && c->depth >= c->max_depth) {
		res->code = MOAT_ELIMIT;
		res->origin = c->depth_limit_origin;
		snprintf(res->message, sizeof(res->message),
		         "calls nested more than %u deep on one thread (%s); the innermost was not run",
		         c->max_depth, c->depth_limit_name);
	} else if (moat_msg_new(&out) < 0) {
		res->code = MOAT_ENOMEM;
		res->origin = c->depth_limit_origin;
		snprintf(res->message, sizeof(res->message), "out of memory");
	} else {
		c->depth++;
		c->ops->serve(c->ctx, call, out, res);
		c->depth--;
	}
	memset(&ret, 0, sizeof(ret));
	ret.kind = MOAT_FRAME_RETURN;
	ret.seq = call->seq;
	ret.code = res->code;
	if (res->code) {
		ret.origin = (uint32_t)res->origin;
		ret.enclave_code = res->enclave_code;
		ret.message = res->message;
	} else {
		/* A failed call's partial reply is dropped: the caller's out stays as it was. */
		ret.items = out;
	}
	rc = c->broken ? MOAT_ETRANSPORT : c->ops->send(c->io, &ret);
	moat_msg_free(out);
	if (rc == MOAT_ELIMIT) /* the reply was too large for the transport: say so instead */
		return refuse_call(c, call, MOAT_ELIMIT, "the reply is larger than the stream's frame limit");
	return rc < 0 ? broken(c, rc, NULL) : 0;
}

/* The outermost Call of the peer: its result (a crash report's room) on this stack. */
__attribute__((noinline)) static int answer_outermost(moat_conv *c, const moat_frame_in *call)
{
	moat_conv_result res;

	return answer_into(c, call, &res);
}

/*
 * Run one Call of the peer and send its Return. Nested Calls keep their
 * result on the heap: every level of nesting lives on one thread's stack,
 * sized per level (the proc runner, moatd), and a result holds
 * MOAT__MESSAGE_MAX bytes of message.
 */
static int answer(moat_conv *c, const moat_frame_in *call)
{
	moat_conv_result *res;
	int rc;

	if (c->depth == 0)
		return answer_outermost(c, call);
	if ((res = malloc(sizeof(*res))) != NULL) {
		rc = answer_into(c, call, res);
		free(res);
		return rc;
	}
	/* No room for a result: refuse the Call without running it, as past the depth limit. */
	return refuse_call(c, call, MOAT_ENOMEM, "out of memory");
}

int moat__conv_call(moat_conv *c, uint64_t selector, const moat_msg *in, unsigned int timeout_ms,
                    moat_frame_in **ret)
{
	moat_frame call;
	uint64_t seq;
	int64_t deadline = timeout_ms ? moat__now_ns() + (int64_t)timeout_ms * 1000000 : 0;
	int rc;

	*ret = NULL;
	if (c->broken)
		return MOAT_ETRANSPORT;
	seq = c->seq + 1;
	memset(&call, 0, sizeof(call));
	call.kind = MOAT_FRAME_CALL;
	call.seq = seq;
	call.selector = selector;
	call.items = in;
	if ((rc = c->ops->send(c->io, &call)) < 0)
		return rc == MOAT_ELIMIT ? rc : broken(c, rc, NULL);
	c->seq = seq;
	for (;;) {
		moat_frame_in *f;
		int64_t t0;

		if ((rc = c->ops->recv(c->io, &f, deadline)) < 0)
			return broken(c, rc, rc == MOAT_EPROTO ? "an undecodable frame" : NULL);
		if (f->kind == MOAT_FRAME_RETURN) {
			if (f->seq != seq) {
				moat__frame_in_free(f);
				return broken(c, MOAT_EPROTO, "a Return that answers no Call waiting for it");
			}
			*ret = f;
			return 0;
		}
		/* The peer's Call, nested in ours: answer it here; its time does not count against ours. */
		t0 = moat__now_ns();
		rc = answer(c, f);
		moat__frame_in_free(f);
		if (rc < 0)
			return rc;
		if (c->broken)
			return MOAT_ETRANSPORT;
		if (deadline)
			deadline += moat__now_ns() - t0;
	}
}

int moat__conv_serve(moat_conv *c)
{
	for (;;) {
		moat_frame_in *f;
		int rc;

		if (c->broken)
			return MOAT_ETRANSPORT;
		if ((rc = c->ops->recv(c->io, &f, 0)) < 0)
			return broken(c, rc, rc == MOAT_EPROTO ? "an undecodable frame" : NULL);
		if (f->kind != MOAT_FRAME_CALL) {
			moat__frame_in_free(f);
			return broken(c, MOAT_EPROTO, "a Return when no Call was waiting");
		}
		rc = answer(c, f);
		moat__frame_in_free(f);
		if (rc < 0)
			return rc;
		if (c->done)
			return 0;
	}
}
