/*
 * grpc.health.v1.Health: moatd knows two services, "" (the server) and
 * "moat.v1.Target"; both are SERVING while moatd takes new sessions and
 * NOT_SERVING while it is full (--max-sessions) or once it stops, so that
 * a balancer (gRPC's round_robin with client-side health checking) skips it. Check answers once; Watch sends
 * the status, and again when it changes, until the client goes away. Any other service name is NOT_FOUND, as
 * the health protocol says. Both run on the rpc loop (they never block).
 */
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "moat/v1/target.pb-c.h"
#include "moatd/moatd.h"

/* Parse a HealthCheckRequest and check its service. Answers the call and returns -1 when refused. */
static int known_service(const uint8_t *buf, size_t len, moat_rpc_call *call)
{
	Grpc__Health__V1__HealthCheckRequest *req =
	    grpc__health__v1__health_check_request__unpack(NULL, len, buf);
	int rc = 0;

	if (!req) {
		moatd_refuse(call, MOAT_EPROTO, "malformed HealthCheckRequest");
		return -1;
	}
	if (req->service[0] && strcmp(req->service, "moat.v1.Target") != 0) {
		moatd_refuse(call, MOAT_ENOENT, "unknown service '%s' (this server has moat.v1.Target)",
		             req->service);
		rc = -1;
	}
	grpc__health__v1__health_check_request__free_unpacked(req, NULL);
	return rc;
}

int moatd_serving(moatd *d)
{
	int full;

	pthread_mutex_lock(&d->lock);
	full = d->cfg.max_sessions && d->n_sessions >= d->cfg.max_sessions;
	pthread_mutex_unlock(&d->lock);
	return !d->stop && !d->draining && !full;
}

/* HealthCheckResponse for moatd's state into out (at least 16 bytes); returns its length. */
static size_t status_message(moatd *d, uint8_t *out, int *serving)
{
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;

	*serving = moatd_serving(d);
	resp.status = *serving ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
	                       : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	return grpc__health__v1__health_check_response__pack(&resp, out);
}

void moatd_handle_health_watch(moatd *d, moat_rpc_call *call)
{
	Grpc__Health__V1__HealthCheckResponse down = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	uint8_t *buf = NULL, now[16], last[16];
	moat_rpc_status st;
	size_t len, last_len;
	int serving;

	/*
	 * A server-streaming call: one request (the client may keep its side
	 * open). The status now, then every change (moatd_health_tick) and
	 * NOT_SERVING when moatd stops; meanwhile the call is parked in the rpc
	 * loop and holds no thread.
	 */
	if (moat__rpc_recv(call, &buf, &len, &st) != 0 || known_service(buf, len, call) < 0)
		goto out;
	len = status_message(d, now, &serving);
	down.status = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
	last_len = grpc__health__v1__health_check_response__pack(&down, last);
	/* Once moatd stops nothing changes any more; while it serves (or is full), changes follow. */
	if (d->stop)
		moat__rpc_finish(call, now, len, MOAT_RPC_OK, 0, NULL);
	else
		moat__rpc_park(call, now, len, last, last_len);
out:
	free(buf);
}

void moatd_health_tick(moatd *d)
{
	uint8_t msg[16];
	size_t len;
	int serving;

	len = status_message(d, msg, &serving);
	/* Watch sends every change; moatd stopping is sent by the rpc loop itself (the park's last message).
	 */
	if (serving != d->health_sent && d->srv && !d->stop) {
		moat__rpc_server_broadcast(d->srv, msg, len);
		moatd_log(MOATD_LOG_INFO, "health: %s",
		          serving       ? "SERVING"
		          : d->draining ? "NOT_SERVING (draining)"
		                        : "NOT_SERVING (full)");
	}
	d->health_sent = serving;
}

void moatd_handle_health(moatd *d, moat_rpc_call *call)
{
	uint8_t *buf = NULL, reply[16];
	size_t len;
	int serving;

	if (moatd_recv_one(call, &buf, &len) == 0 && known_service(buf, len, call) == 0) {
		len = status_message(d, reply, &serving);
		moat__rpc_finish(call, reply, len, MOAT_RPC_OK, 0, NULL);
	}
	free(buf);
}

void moatd_handle_status(moatd *d, moat_rpc_call *call)
{
	Moat__V1__StatusResponse resp = MOAT__V1__STATUS_RESPONSE__INIT;
	uint8_t *buf = NULL, *reply = NULL;
	char *metrics = NULL;
	size_t len, mlen = 0;

	if (moatd_recv_one(call, &buf, &len) < 0)
		goto out;
	metrics = moatd_metrics_render(d, &mlen);
	resp.version = (char *)moat_version();
	resp.serving = moatd_serving(d);
	resp.draining = d->draining != 0;
	resp.sessions = moatd_session_count(d);
	resp.max_sessions = d->cfg.max_sessions;
	resp.metrics = metrics ? metrics : "";
	reply = malloc(moat__v1__status_response__get_packed_size(&resp) + 1);
	if (!reply) {
		moatd_refuse(call, MOAT_ENOMEM, "out of memory");
		goto out;
	}
	len = moat__v1__status_response__pack(&resp, reply);
	moat__rpc_finish(call, reply, len, MOAT_RPC_OK, 0, NULL);
out:
	free(reply);
	free(metrics);
	free(buf);
}
