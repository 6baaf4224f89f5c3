/*
 * Library set-up and the completion queue that every call of the process
 * is bound to.
 *
 * Why one shared queue read by one thread at a time. gRPC core's default
 * poller on Linux (epoll1) watches every connection of the process from one
 * epoll set, and only one thread at a time (its "designated poller") waits
 * in it. When each call has a queue of its own and eight threads wait on
 * eight queues, every reply is read by whichever thread polls; that thread
 * first wakes another waiter to take over the polling, then hands the
 * completion to the thread it belongs to: two or three context switches per
 * reply, a chain of wake-ups with the CPUs mostly idle (8 host threads made
 * no more calls/s than one). Earlier versions switched the process to
 * gRPC's "poll" poller through the environment, which a library must not
 * do, and under which nobody read an idle thread's connection (its keepalive
 * acks went unread and the keepalive watchdog killed the connection).
 *
 * Here the waiting threads take turns (leader/followers): one of them, the
 * reader, waits in grpc_completion_queue_next on the shared queue and is the
 * only thread of the process inside gRPC's poller, so gRPC never passes the
 * polling role around; it records each completion in its tag and wakes the
 * thread that owns it (one hand-off), and keeps reading until its own
 * completion arrives. Then it wakes one of the waiting threads to read next.
 * A single thread therefore reads its own replies with no hand-off at all.
 * Because every call is bound to this queue, whoever reads it polls every
 * connection that has a call, with any poller gRPC picked: an idle stream's
 * keepalive acks are read as long as someone waits or polls (remote.c's
 * lease watcher does, a few times per keepalive period).
 */
#include "rpc/rpc_int.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include <grpc/support/log.h>

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned int init_count;

/* A thread waiting for one of its tags while another reads the queue. */
typedef struct waiter {
	moat_rpc_call *call;
	struct waiter *next;
} waiter;

static struct {
	pthread_mutex_t lock;
	grpc_completion_queue *cq; /* for_next; set while init_count > 0 */
	int reading;               /* a thread is inside grpc_completion_queue_next */
	waiter *waiters;
} hub = {PTHREAD_MUTEX_INITIALIZER, NULL, 0, NULL};

void moat__rpc_init(void)
{
	pthread_mutex_lock(&init_lock);
	if (init_count++ == 0) {
		/* gRPC logs every transport hiccup; Moat reports failures through its own errors. */
		if (!getenv("GRPC_VERBOSITY"))
			gpr_set_log_verbosity(GPR_LOG_SEVERITY_ERROR);
		grpc_init();
		hub.cq = grpc_completion_queue_create_for_next(NULL);
	}
	pthread_mutex_unlock(&init_lock);
}

void moat__rpc_shutdown(void)
{
	pthread_mutex_lock(&init_lock);
	if (init_count > 0 && --init_count == 0) {
		grpc_event ev;

		/* Every call is freed by now: nothing is left to complete on the queue. */
		grpc_completion_queue_shutdown(hub.cq);
		do
			ev = grpc_completion_queue_next(hub.cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		while (ev.type != GRPC_QUEUE_SHUTDOWN);
		grpc_completion_queue_destroy(hub.cq);
		hub.cq = NULL;
		grpc_shutdown_blocking();
	}
	pthread_mutex_unlock(&init_lock);
}

grpc_completion_queue *moat__rpc_queue(void)
{
	return hub.cq;
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

/* Sleep on the call's condition variable until woken or the deadline (hub.lock held). */
static void follow(moat_rpc_call *c, int64_t deadline)
{
	waiter me = {c, hub.waiters}, **p;

	hub.waiters = &me;
	if (deadline == RPC_FOREVER) {
		pthread_cond_wait(&c->wake, &hub.lock);
	} else {
		struct timespec ts = {(time_t)(deadline / 1000), (long)(deadline % 1000) * 1000000L};

		pthread_cond_timedwait(&c->wake, &hub.lock, &ts);
	}
	for (p = &hub.waiters; *p; p = &(*p)->next) {
		if (*p == &me) {
			*p = me.next;
			break;
		}
	}
}

int moat__rpc_wait(moat_rpc_call *c, rpc_tag *tag, int64_t deadline)
{
	int rc, polled = 0;

	pthread_mutex_lock(&hub.lock);
	for (;;) {
		grpc_event ev;

		if (tag->done) {
			tag->done = 0;
			rc = tag->success;
			break;
		}
		if (deadline == RPC_NOW ? polled : deadline != RPC_FOREVER && now_ms() >= deadline) {
			rc = -1;
			break;
		}
		if (hub.reading) {
			/* Someone reads the queue and will wake us; a poll need not wait for it. */
			if (deadline == RPC_NOW) {
				rc = -1;
				break;
			}
			follow(c, deadline);
			continue;
		}
		hub.reading = 1;
		pthread_mutex_unlock(&hub.lock);
		ev = grpc_completion_queue_next(hub.cq, gpr_deadline(deadline), NULL);
		pthread_mutex_lock(&hub.lock);
		hub.reading = 0;
		polled = 1;
		if (ev.type == GRPC_OP_COMPLETE) {
			rpc_tag *t = ev.tag;

			t->done = 1;
			t->success = ev.success;
			if (t->call != c)
				pthread_cond_broadcast(&t->call->wake);
		}
	}
	/* Leaving: if nobody reads the queue now, one of the waiting threads must. */
	if (!hub.reading && hub.waiters)
		pthread_cond_signal(&hub.waiters->call->wake);
	pthread_mutex_unlock(&hub.lock);
	return rc;
}
