/*
 * The moat.v1.Target service's front: how each method is served, what is
 * checked before a call gets a thread, and the reply helpers the handlers
 * share. Unary calls (Load, Destroy, Health) get a thread only once their
 * request is in (the rpc loop reads it, within --request-timeout-ms); an
 * Attach stream is authenticated on the rpc loop, from its metadata, and
 * counted against --max-attached-threads and --max-threads-per-session
 * before it gets the thread that serves it for as long as the host thread
 * behind it lives.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moatd/moatd.h"

/* The gRPC status a refusal with Moat code code goes with. */
static int status_for(int code)
{
	switch (code) {
	case MOAT_ENOENT: return MOAT_RPC_NOT_FOUND;
	case MOAT_EPERM:
	case MOAT_EKEY: return MOAT_RPC_PERMISSION_DENIED;
	case MOAT_ELIMIT: return MOAT_RPC_RESOURCE_EXHAUSTED;
	case MOAT_EINVAL: return MOAT_RPC_INVALID_ARGUMENT;
	case MOAT_EPROTO:
	case MOAT_EMEASUREMENT:
	case MOAT_EBADIMAGE:
	case MOAT_ENOENTRY:
	case MOAT_EABI:
	case MOAT_EINIT:
	case MOAT_ENOBACKEND: return MOAT_RPC_FAILED_PRECONDITION;
	default: return MOAT_RPC_INTERNAL;
	}
}

void moatd_refuse(moat_rpc_call *call, int code, const char *fmt, ...)
{
	char msg[MOAT__MESSAGE_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	moatd_log(MOATD_LOG_INFO, "%s refused: %s", moat__rpc_call_method(call), msg);
	moatd_metrics_refusal(code);
	moat__rpc_finish(call, NULL, 0, status_for(code), code, msg);
}

int moatd_recv_one(moat_rpc_call *call, uint8_t **buf, size_t *len)
{
	moat_rpc_status st;
	uint8_t *extra = NULL;
	size_t n;
	int rc;

	/* Each wait is bounded (--request-timeout-ms); a call that times out is ended by the rpc layer. */
	rc = moat__rpc_recv(call, buf, len, &st);
	if (rc == MOAT_RPC_END && st.code == MOAT_RPC_OK) {
		/* The host closed its side without a request: say so rather than leave the call unanswered.
		 */
		moatd_refuse(call, MOAT_EPROTO,
		             "a unary call carries exactly one request message; this one sent none");
		return -1;
	}
	if (rc != 0)
		return -1;
	/* The request must be the only message: the host half-closes right after it (in the same frame). */
	rc = moat__rpc_recv(call, &extra, &n, &st);
	free(extra);
	if (rc == MOAT_RPC_END && st.code == MOAT_RPC_OK)
		return 0;
	if (rc == 0) {
		moatd_log(MOATD_LOG_INFO, "%s refused: more than one request message",
		          moat__rpc_call_method(call));
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_INVALID_ARGUMENT, MOAT_EPROTO,
		                 "a unary call carries exactly one request message; this one sent more");
	}
	free(*buf);
	*buf = NULL;
	return -1;
}

const moat_rpc_method moatd_methods[] = {
    {"/moat.v1.Target/Attach", MOAT_RPC_SERVE_THREAD, 0},
    {"/moat.v1.Target/Upload", MOAT_RPC_SERVE_THREAD, 0},
    {"/moat.v1.Target/Load", MOAT_RPC_SERVE_UNARY, 0},
    {"/moat.v1.Target/Destroy", MOAT_RPC_SERVE_UNARY, 0},
    {"/grpc.health.v1.Health/Check", MOAT_RPC_SERVE_INLINE, 0},
    {"/moat.v1.Target/Status", MOAT_RPC_SERVE_INLINE, 0},
    {"/grpc.health.v1.Health/Watch", MOAT_RPC_SERVE_INLINE, 1},
};
const size_t moatd_n_methods = sizeof(moatd_methods) / sizeof(moatd_methods[0]);

static int is_lease(moat_rpc_call *call)
{
	const char *kind = moat__rpc_call_md(call, MOAT_MD_STREAM);

	return kind && strcmp(kind, MOAT_MD_LEASE) == 0;
}

/* Undo what admit_attach counted: the stream ended, or never got its thread. */
void moatd_attach_done(moatd *d, moat_rpc_call *call)
{
	session *s = moat__rpc_call_data(call);

	if (!is_lease(call))
		moatd_session_detach_thread(s);
	pthread_mutex_lock(&d->lock);
	d->attached--;
	pthread_mutex_unlock(&d->lock);
	moatd_session_unref(s);
	moat__rpc_call_set_data(call, NULL);
}

/*
 * An Attach stream is authenticated and counted (all sessions', then its
 * session's host threads) on the rpc loop, before it gets a thread.
 */
static int admit_attach(moatd *d, moat_rpc_call *call)
{
	session *s = moatd_session_auth(d, call);
	int ok;

	if (!s)
		return MOAT_EPERM;
	pthread_mutex_lock(&d->lock);
	ok = d->attached < d->cfg.max_attached;
	if (ok)
		d->attached++;
	pthread_mutex_unlock(&d->lock);
	if (!ok) {
		moatd_session_unref(s);
		moatd_refuse(
		    call, MOAT_ELIMIT,
		    "this target already serves %u attached host threads (--max-attached-threads %u)",
		    d->cfg.max_attached, d->cfg.max_attached);
		return MOAT_ELIMIT;
	}
	if (!is_lease(call) && moatd_session_attach_thread(s) < 0) {
		pthread_mutex_lock(&d->lock);
		d->attached--;
		pthread_mutex_unlock(&d->lock);
		moatd_session_unref(s);
		moatd_refuse(call, MOAT_ELIMIT,
		             "session already has %u host threads attached (--max-threads-per-session %u)",
		             d->cfg.max_threads, d->cfg.max_threads);
		return MOAT_ELIMIT;
	}
	moat__rpc_call_set_data(call, s);
	return 0;
}

int moatd_admit_call(void *ctx, moat_rpc_call *call)
{
	moatd *d = ctx;
	const char *m = moat__rpc_call_method(call);

	if (strcmp(m, "/moat.v1.Target/Attach") == 0)
		return admit_attach(d, call);
	if (strcmp(m, "/moat.v1.Target/Upload") == 0 && !d->cfg.allow_upload) {
		moatd_refuse(call, MOAT_EPERM,
		             "uploads are off on this target (start moatd with --allow-upload)");
		return MOAT_EPERM;
	}
	return 0;
}

void moatd_dropped_call(void *ctx, moat_rpc_call *call)
{
	if (moat__rpc_call_data(call))
		moatd_attach_done(ctx, call);
}

void moatd_handle_call(void *ctx, moat_rpc_call *call)
{
	moatd *d = ctx;
	const char *m = moat__rpc_call_method(call);

	moatd_log(MOATD_LOG_DEBUG, "call %s", m);
	moatd_metrics_call(m);
	if (strcmp(m, "/moat.v1.Target/Attach") == 0) {
		if (moat__rpc_call_data(call))
			moatd_handle_attach(d, call, moat__rpc_call_data(call), is_lease(call));
		if (moat__rpc_call_data(call))
			moatd_attach_done(d, call);
	} else if (strcmp(m, "/moat.v1.Target/Load") == 0) {
		moatd_handle_load(d, call);
	} else if (strcmp(m, "/moat.v1.Target/Upload") == 0) {
		moatd_handle_upload(d, call);
	} else if (strcmp(m, "/moat.v1.Target/Destroy") == 0) {
		moatd_handle_destroy(d, call);
	} else if (strcmp(m, "/grpc.health.v1.Health/Check") == 0) {
		moatd_handle_health(d, call);
	} else if (strcmp(m, "/moat.v1.Target/Status") == 0) {
		moatd_handle_status(d, call);
	} else if (strcmp(m, "/grpc.health.v1.Health/Watch") == 0) {
		moatd_handle_health_watch(d, call);
	} else {
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_UNIMPLEMENTED, 0, "unknown method");
	}
	moat__rpc_call_free(call);
}

/* Read a varint at *p (before end); returns 0 or -1. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
	unsigned int shift;

	*v = 0;
	for (shift = 0; *p < end && shift < 64; shift += 7) {
		uint8_t b = *(*p)++;

		*v |= (uint64_t)(b & 0x7f) << shift;
		if (!(b & 0x80))
			return 0;
	}
	return -1;
}

int moatd_pb_field_has_nul(const uint8_t *buf, size_t len, uint32_t field)
{
	const uint8_t *p = buf, *end = buf + len;

	while (p < end) {
		uint64_t key, n;

		if (varint(&p, end, &key) < 0)
			return 0;
		switch (key & 7) {
		case 0:
			if (varint(&p, end, &n) < 0)
				return 0;
			break;
		case 1: p += 8; break;
		case 5: p += 4; break;
		case 2:
			if (varint(&p, end, &n) < 0 || n > (uint64_t)(end - p))
				return 0;
			if ((key >> 3) == field && memchr(p, 0, (size_t)n))
				return 1;
			p += n;
			break;
		default: return 0; /* groups and the like: protobuf-c refused it already */
		}
	}
	return 0;
}
