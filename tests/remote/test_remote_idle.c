/*
 * Host threads that idle keep a working handle: a second host thread calls,
 * idles 10 s (several keepalive periods) and calls again, through local and
 * grpc://. Its connection must be serviced while nobody calls on it, or the
 * keepalive watchdog ends it and the handle dies for every thread. CTest
 * also runs this with GRPC_POLL_STRATEGY=poll, the poller an application may
 * choose, under which gRPC polls only what a waiting thread asks for.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "moat_test.h"
#include "moatd_helper.h"
#include "remote_enclave.h"

#define IDLE_MS 10000

static int one_call(moat_enclave *e)
{
	moat_msg *in = test_msg(), *out = test_msg();
	int rc;

	moat_msg_push_u64(in, 1);
	rc = moat_enclave_call(e, R_SLEEP, in, out);
	moat_msg_free(in);
	moat_msg_free(out);
	return rc;
}

typedef struct idler {
	moat_enclave *e;
	int first, second;
	char why[400]; /* the second call's error (thread-local, so copied here) */
} idler;

static void *idle_thread(void *arg)
{
	idler *t = arg;
	struct timespec ts = {IDLE_MS / 1000, 0};

	t->first = one_call(t->e);
	while (nanosleep(&ts, &ts) != 0)
		;
	t->second = one_call(t->e);
	if (t->second != 0)
		snprintf(t->why, sizeof(t->why), "%s", moat_error_last()->message);
	return NULL;
}

static void idle_then_call(const char *uri)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e;
	pthread_t th;
	idler t = {0};

	o.backend = uri;
	e = test_load(TEST_ENCLAVE("remote_enclave"), &o);
	/* The first host thread's stream rides on the session's first connection (the lease's). */
	assert_moat_ok(one_call(e));
	t.e = e;
	assert_int_equal(pthread_create(&th, NULL, idle_thread, &t), 0);
	assert_int_equal(pthread_join(th, NULL), 0);
	assert_int_equal(t.first, 0);
	if (t.second != 0)
		fail_msg("call after %d ms idle: %d (%s)", IDLE_MS, t.second, t.why);
	/* And the handle still works for the first thread, which idled as long. */
	assert_moat_ok(one_call(e));
	moat_enclave_destroy(e);
}

static void test_idle_local(void **state)
{
	idle_then_call("local");
}

static void test_idle_grpc(void **state)
{
	test_moatd m;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", NULL), 0);
	idle_then_call(m.uri);
	assert_int_equal(test_moatd_stop(&m), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_idle_local),
	    cmocka_unit_test(test_idle_grpc),
	};

	return cmocka_run_group_tests_name("remote_idle", tests, NULL, NULL);
}
