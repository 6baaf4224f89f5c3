/*
 * grpc.health.v1.Health/Check: moatd knows two services, "" (the server)
 * and "moat.v1.Target"; both are SERVING while moatd serves and
 * NOT_SERVING once it stops. Any other name is NOT_FOUND, as the health
 * protocol says.
 */
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "moatd/moatd.h"

void moatd_handle_health(moatd *d, moat_rpc_call *call)
{
	Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
	Grpc__Health__V1__HealthCheckRequest *req = NULL;
	uint8_t *buf = NULL, reply[16];
	size_t len;

	if (moatd_recv_one(call, &buf, &len) < 0)
		goto out;
	req = grpc__health__v1__health_check_request__unpack(NULL, len, buf);
	if (!req) {
		moatd_refuse(call, MOAT_EPROTO, "malformed HealthCheckRequest");
		goto out;
	}
	if (req->service[0] && strcmp(req->service, "moat.v1.Target") != 0) {
		moatd_refuse(call, MOAT_ENOENT, "unknown service '%s' (this server has moat.v1.Target)",
		             req->service);
		goto out;
	}
	resp.status = d->stop ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
	                      : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
	len = grpc__health__v1__health_check_response__pack(&resp, reply);
	moat__rpc_finish(call, reply, len, MOAT_RPC_OK, 0, NULL);
out:
	if (req)
		grpc__health__v1__health_check_request__free_unpacked(req, NULL);
	free(buf);
}
