/*
 * grpc.health.v1.Health/Check: moatd answers SERVING while it serves.
 */
#include <stdlib.h>

#include "moatd/moatd.h"

void moatd_handle_health(moatd *d, moat_rpc_call *call)
{
	/* grpc.health.v1.HealthCheckResponse{status: SERVING}: field 1, varint 1. */
	static const uint8_t serving[] = {0x08, 0x01};
	uint8_t *req = NULL;
	size_t len;

	(void)d;
	if (moatd_recv_one(call, &req, &len) == 0)
		moat__rpc_finish(call, serving, sizeof(serving), MOAT_RPC_OK, 0, NULL);
	free(req);
}
