/*
 * The moat.v1.Target service's front: every admitted call runs on its own
 * thread (the rpc layer starts one per call, within --max-pending-calls)
 * and goes to its method's handler with the daemon's state; and the reply
 * helpers the handlers share. An Attach stream holds its thread for as
 * long as the host thread behind it lives, so the streams of all sessions
 * together are bounded here (--max-attached-threads) before one is served.
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
	char msg[384];
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

static pthread_mutex_t attached_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int attached; /* Attach streams being served, of every session */

unsigned int moatd_attached_count(void)
{
	unsigned int n;

	pthread_mutex_lock(&attached_lock);
	n = attached;
	pthread_mutex_unlock(&attached_lock);
	return n;
}

/* Serve an Attach stream if --max-attached-threads allows one more, else refuse it. */
static void attach(moatd *d, moat_rpc_call *call)
{
	int ok;

	pthread_mutex_lock(&attached_lock);
	ok = attached < d->cfg.max_attached;
	if (ok)
		attached++;
	pthread_mutex_unlock(&attached_lock);
	if (!ok) {
		moatd_refuse(
		    call, MOAT_ELIMIT,
		    "this target already serves %u attached host threads (--max-attached-threads %u)",
		    d->cfg.max_attached, d->cfg.max_attached);
		return;
	}
	/* Authentication needs only the metadata at hand: nothing is waited for before it. */
	moat__rpc_call_admit(call);
	moatd_handle_attach(d, call);
	pthread_mutex_lock(&attached_lock);
	attached--;
	pthread_mutex_unlock(&attached_lock);
}

void moatd_handle_call(void *ctx, moat_rpc_call *call)
{
	moatd *d = ctx;
	const char *m = moat__rpc_call_method(call);

	moatd_log(MOATD_LOG_DEBUG, "call %s", m);
	moatd_metrics_call(m);
	if (strcmp(m, "/moat.v1.Target/Attach") == 0)
		attach(d, call);
	else if (strcmp(m, "/moat.v1.Target/Load") == 0)
		moatd_handle_load(d, call);
	else if (strcmp(m, "/moat.v1.Target/Upload") == 0)
		moatd_handle_upload(d, call);
	else if (strcmp(m, "/moat.v1.Target/Destroy") == 0)
		moatd_handle_destroy(d, call);
	else if (strcmp(m, "/grpc.health.v1.Health/Check") == 0)
		moatd_handle_health(d, call);
	else if (strcmp(m, "/grpc.health.v1.Health/Watch") == 0)
		moatd_handle_health_watch(d, call);
	else
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_UNIMPLEMENTED, 0, "unknown method");
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
