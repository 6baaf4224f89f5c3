/*
 * The conversation engine: the Call/Return exchange on one stream, with no
 * I/O of its own. Either side of a stream can call the other (the host makes
 * entry calls, the enclave exit calls), and a side waiting for its Return
 * serves the peer's Calls meanwhile, so calls nest in strict LIFO order on
 * one thread. The proc host, the proc runner, the remote host and moatd's
 * Attach all run their streams through it; they differ only in the
 * transport (the send and recv callbacks) and in what a served Call does.
 *
 * The rules it owns:
 * - every Call is answered by exactly one Return carrying the Call's seq;
 *   a side's own Calls are numbered 1, 2, 3... on the stream;
 * - a Return whose seq is not that of the innermost Call waiting, or a
 *   Return when no Call waits, is a protocol error (MOAT_EPROTO), as is a
 *   frame the transport could not decode;
 * - a served Call that fails is answered with its code and no items, so a
 *   failed call leaves the caller's out as it was;
 * - the peer's Calls may nest at most max_depth deep on the stream; deeper
 *   ones are answered MOAT_ELIMIT without being run;
 * - a time limit counts the time the peer takes, not the time this side
 *   spends serving the peer's Calls.
 * After a transport or protocol error the stream is broken: every later
 * call on it fails at once with MOAT_ETRANSPORT.
 */
#ifndef MOAT_CODEC_CONV_H
#define MOAT_CODEC_CONV_H

#include "codec/frame.h"
#include "util/util.h"

/* What a served Call produced, for its Return (besides the items). */
typedef struct moat_conv_result {
	int code;                        /* 0 or a negative Moat code */
	moat_origin origin;              /* where a failure came from */
	int64_t enclave_code;            /* MOAT_EHANDLER: the handler's own value */
	char message[MOAT__MESSAGE_MAX]; /* a failure's detail, or "" (room for a crash report) */
} moat_conv_result;

typedef struct moat_conv_ops {
	/* Send one frame. Returns 0 or a negative Moat code (MOAT_ETRANSPORT, MOAT_ENOMEM, MOAT_ELIMIT). */
	int (*send)(void *io, const moat_frame *f);
	/*
	 * Receive the next frame into *out, waiting until deadline_ns
	 * (CLOCK_MONOTONIC, 0 for no limit). Returns 0, MOAT_ETRANSPORT (the
	 * stream ended), MOAT_ETIMEDOUT, MOAT_EPROTO (undecodable) or
	 * MOAT_ENOMEM.
	 */
	int (*recv)(void *io, moat_frame_in **out, int64_t deadline_ns);
	/*
	 * Run a Call from the peer: append reply items to out and fill res
	 * (res->code 0 for success). It may make calls on the same stream
	 * (nesting). The engine sends the Return.
	 */
	void (*serve)(void *ctx, const moat_frame_in *call, moat_msg *out, moat_conv_result *res);
} moat_conv_ops;

typedef struct moat_conv {
	const moat_conv_ops *ops;
	void *io;  /* for send and recv */
	void *ctx; /* for serve */
	/* Deepest nesting of the peer's Calls served at once; 0 means no limit. */
	unsigned int max_depth;
	/* Who answers MOAT_ELIMIT past max_depth, for the message. */
	const char *depth_limit_name;
	moat_origin depth_limit_origin;
	/* State. */
	uint64_t seq;       /* the last seq this side used */
	unsigned int depth; /* the peer's Calls being served now */
	int broken;         /* a transport or protocol error ended the stream */
	int done;           /* set by serve: moat__conv_serve returns after this Call's Return */
	const char *why;    /* detail of the last protocol error (static) */
} moat_conv;

/* Set up c; ops, io and ctx are borrowed. */
void moat__conv_init(moat_conv *c, const moat_conv_ops *ops, void *io, void *ctx);

/*
 * Send a Call and wait for its Return, serving the peer's Calls meanwhile.
 * timeout_ms (0: none) bounds the time the peer takes. On 0, *ret is the
 * Return (the caller frees it with moat__frame_in_free and interprets its
 * code). Otherwise returns MOAT_ETRANSPORT, MOAT_ETIMEDOUT, MOAT_EPROTO
 * (c->why says what was wrong), MOAT_ENOMEM or MOAT_ELIMIT (the Call was
 * too large for the transport), and the stream is broken, except for
 * MOAT_ELIMIT, which sent nothing.
 */
int moat__conv_call(moat_conv *c, uint64_t selector, const moat_msg *in, unsigned int timeout_ms,
                    moat_frame_in **ret);

/*
 * Serve the peer's Calls until the stream ends: the loop of the side that
 * only answers. Returns 0 when serve set c->done, MOAT_ETRANSPORT when the
 * stream ended between calls, MOAT_EPROTO when the peer broke the protocol (c->why), or
 * another transport error.
 */
int moat__conv_serve(moat_conv *c);

#endif
