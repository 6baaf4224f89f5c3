/*
 * Library set-up, time, and waiting for a call's completions.
 *
 * Every call has a completion queue of its own (for pluck), read only by
 * the thread that drives the call, so a call's thread does its own socket
 * I/O and no completion is handed from one thread to another on the hot
 * path. libmoat never chooses gRPC's poller (a library must not set its
 * host's environment): with the default one (epoll1), whichever thread
 * polls reads every connection of the process. A session's host threads
 * share one connection, so the lease watcher's periodic poll also reads the
 * keepalive acks of idle threads' streams, whatever poller the application
 * chose for its own gRPC (docs/PERFORMANCE.md has the measurements).
 */
#include "rpc/rpc_int.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include <grpc/support/log.h>

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int init_count;

void moat__rpc_init(void)
{
	pthread_mutex_lock(&init_lock);
	if (init_count++ == 0) {
		/* gRPC's log settings are the process's: libmoat leaves them as the application has them. */
		grpc_init();
	}
	pthread_mutex_unlock(&init_lock);
}

void moat__rpc_shutdown(void)
{
	pthread_mutex_lock(&init_lock);
	if (init_count > 0 && --init_count == 0)
		grpc_shutdown_blocking();
	pthread_mutex_unlock(&init_lock);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t moat__rpc_deadline(unsigned int timeout_ms)
{
	return timeout_ms ? now_ms() + timeout_ms : RPC_FOREVER;
}

/* gRPC's monotonic clock has its own epoch: convert through the time left. */
static gpr_timespec gpr_deadline(int64_t deadline)
{
	int64_t left;

	if (deadline == RPC_FOREVER)
		return gpr_inf_future(GPR_CLOCK_MONOTONIC);
	left = deadline - now_ms();
	if (left <= 0)
		return gpr_inf_past(GPR_CLOCK_MONOTONIC);
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(left, GPR_TIMESPAN));
}

int moat__rpc_wait(moat_rpc_call *c, rpc_tag *tag, int64_t deadline)
{
	gpr_timespec until = deadline == RPC_NOW ? gpr_inf_past(GPR_CLOCK_MONOTONIC) : gpr_deadline(deadline);
	grpc_event ev = grpc_completion_queue_pluck(c->cq, tag, until, NULL);

	if (ev.type == GRPC_QUEUE_TIMEOUT)
		return -1;
	return ev.type == GRPC_OP_COMPLETE && ev.success;
}
