/*
 * Faults: the enclave crashes, exits or hangs; the host survives, the
 * handle fails fast, destroy reaps the child and the next load works.
 */
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>

#include <cmocka.h>

#include "proc_test.h"

static void expect_crash(uint64_t selector, int code, const char *words)
{
	moat_enclave *e = load_probe(NULL, 0);
	int rc;

	assert_non_null(e);
	rc = call_str(e, selector, NULL, NULL, 0);
	if (rc != code || !strstr(moat_error_last()->message, words))
		fprintf(stderr, "selector %llu: rc %d: %s\n", (unsigned long long)selector, rc,
		        moat_error_last()->message);
	assert_int_equal(rc, code);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	assert_non_null(strstr(moat_error_last()->message, words));
	assert_int_equal(call_str(e, PROBE_ECHO, "x", NULL, 0), code);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	moat_enclave_destroy(e);
	assert_int_equal(count_children(NULL), 0);
	/* The host is fine and loads again. */
	e = load_probe(NULL, 0);
	assert_non_null(e);
	assert_int_equal(call_str(e, PROBE_ECHO, "x", NULL, 0), 0);
	moat_enclave_destroy(e);
}

static void test_segv(void **state)
{
	expect_crash(PROBE_SEGV, MOAT_ECRASHED, "SIGSEGV");
}

static void test_abort(void **state)
{
	expect_crash(PROBE_ABORT, MOAT_ECRASHED, "SIGABRT");
}

static void test_exit(void **state)
{
	expect_crash(PROBE_EXIT, MOAT_ECRASHED, "exited with status 3");
}

/* Bytes that are no frame on the channel: the host stops the runner instead of trusting it. */
static void test_garbage_on_channel(void **state)
{
	expect_crash(PROBE_GARBAGE, MOAT_ECRASHED, "broke the frame protocol");
}

static void test_crash_in_init(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;

	o.backend = "proc";
	o.config = "crash";
	o.config_len = 5;
	assert_int_equal(moat_enclave_load(&e, PROBE_PATH, &o), MOAT_ECRASHED);
	assert_null(e);
	assert_non_null(strstr(moat_error_last()->message, "SIGSEGV"));
	assert_int_equal(count_children(NULL), 0);
}

typedef struct hung {
	moat_enclave *e;
	int rc;
	char message[512];
} hung;

static void *hang_main(void *arg)
{
	hung *h = arg;

	h->rc = call_str(h->e, PROBE_HANG, NULL, NULL, 0);
	snprintf(h->message, sizeof(h->message), "%s", moat_error_last()->message);
	return NULL;
}

/* A crash on one thread fails the calls in flight on the others. */
static void test_crash_fails_calls_in_flight(void **state)
{
	moat_enclave *e = load_probe(NULL, 0);
	hung h = {e, 0, ""};
	pthread_t t;
	struct timespec ms = {0, 50 * 1000 * 1000};

	assert_non_null(e);
	assert_int_equal(pthread_create(&t, NULL, hang_main, &h), 0);
	nanosleep(&ms, NULL);
	assert_int_equal(call_str(e, PROBE_SEGV, NULL, NULL, 0), MOAT_ECRASHED);
	pthread_join(t, NULL);
	assert_int_equal(h.rc, MOAT_ECRASHED);
	assert_non_null(strstr(h.message, "SIGSEGV"));
	moat_enclave_destroy(e);
	assert_int_equal(count_children(NULL), 0);
}

/* The enclave dies while no call is in flight: the next call (and a new thread's) fail, no SIGPIPE. */
static void test_crash_while_idle(void **state)
{
	moat_enclave *e = load_probe(NULL, 0);
	pthread_t t;
	hung h;
	int i, rc = 0;

	assert_non_null(e);
	/* SIGPIPE's default action would end this test process. */
	signal(SIGPIPE, SIG_DFL);
	assert_int_equal(call_str(e, PROBE_LATER, NULL, NULL, 0), 0);
	for (i = 0; i < 1000 && rc == 0; i++) {
		struct timespec ms = {0, 10 * 1000 * 1000};

		nanosleep(&ms, NULL);
		rc = call_str(e, PROBE_ECHO, "x", NULL, 0);
	}
	assert_int_equal(rc, MOAT_ECRASHED);
	assert_non_null(strstr(moat_error_last()->message, "SIGSEGV"));
	/* A thread with no channel yet fails the same way. */
	h.e = e;
	assert_int_equal(pthread_create(&t, NULL, hang_main, &h), 0);
	pthread_join(t, NULL);
	assert_int_equal(h.rc, MOAT_ECRASHED);
	moat_enclave_destroy(e);
	assert_int_equal(count_children(NULL), 0);
}

/* moat_enclave_abort from another thread ends a call that would never return, and the runner with it. */
static void test_abort_stops_call(void **state)
{
	moat_enclave *e = load_probe(NULL, 0);
	hung h = {e, 0, ""};
	pthread_t t;
	struct timespec ms = {0, 100 * 1000 * 1000};

	assert_non_null(e);
	assert_int_equal(pthread_create(&t, NULL, hang_main, &h), 0);
	nanosleep(&ms, NULL);
	assert_int_equal(moat_enclave_abort(e), 0);
	pthread_join(t, NULL);
	assert_int_equal(h.rc, MOAT_ECANCELED);
	assert_non_null(strstr(h.message, "moat_enclave_abort"));
	/* The runner is gone before destroy, and the handle fails fast. */
	assert_int_equal(count_children(NULL), 0);
	assert_int_equal(call_str(e, PROBE_ECHO, "x", NULL, 0), MOAT_ECANCELED);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_API);
	/* A second abort has nothing left to stop. */
	assert_int_equal(moat_enclave_abort(e), 0);
	moat_enclave_destroy(e);
	assert_int_equal(moat_enclave_abort(NULL), MOAT_EINVAL);
}

static void test_timeout(void **state)
{
	moat_enclave *e = load_probe(NULL, 300);

	assert_non_null(e);
	assert_int_equal(call_str(e, PROBE_ECHO, "x", NULL, 0), 0);
	assert_int_equal(call_str(e, PROBE_HANG, NULL, NULL, 0), MOAT_ETIMEDOUT);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	assert_non_null(strstr(moat_error_last()->message, "300 ms"));
	/* The enclave was stopped: the handle is dead. */
	assert_int_equal(call_str(e, PROBE_ECHO, "x", NULL, 0), MOAT_ETIMEDOUT);
	moat_enclave_destroy(e);
	assert_int_equal(count_children(NULL), 0);
}

static int slow_handler(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	struct timespec t = {0, 600 * 1000 * 1000};

	nanosleep(&t, NULL);
	return 0;
}

/* The time limit counts the enclave's time, not the host's own exit handlers. */
static void test_timeout_excludes_exit_handlers(void **state)
{
	moat_enclave *e = load_probe(NULL, 300);

	assert_non_null(e);
	assert_int_equal(moat_enclave_set_exit_handler(e, PROBE_HOST, slow_handler, NULL), 0);
	assert_int_equal(call_str(e, PROBE_EXIT_CALL, "x", NULL, 0), 0);
	moat_enclave_destroy(e);
}

static int crash_handler(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	return moat_enclave_call(payload, PROBE_SEGV, NULL, NULL);
}

/* A crash inside a nested call fails the nested and the outer call alike. */
static void test_crash_while_nested(void **state)
{
	moat_enclave *e = load_probe(NULL, 0);

	assert_non_null(e);
	assert_int_equal(moat_enclave_set_exit_handler(e, PROBE_HOST, crash_handler, e), 0);
	assert_int_equal(call_str(e, PROBE_EXIT_CALL, "x", NULL, 0), MOAT_ECRASHED);
	assert_non_null(strstr(moat_error_last()->message, "SIGSEGV"));
	moat_enclave_destroy(e);
	assert_int_equal(count_children(NULL), 0);
}

/* Running, not a zombie and not gone. */
static int running(pid_t pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	int alive = 0;

	snprintf(path, sizeof(path), "/proc/%ld/stat", (long)pid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) != NULL)
		alive = p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
	fclose(f);
	return alive;
}

/* The host dies without destroying its enclave: the runner dies with it. */
static void test_host_death_kills_runner(void **state)
{
	pid_t host, runner = 0;
	int p[2], tries;

	assert_int_equal(pipe(p), 0);
	host = fork();
	assert_true(host >= 0);
	if (host == 0) {
		moat_enclave *e;

		/* A failed assertion in the test must not leave this one behind. */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		e = load_probe(NULL, 0);
		pid_t r = 0;

		/* The process that runs the enclave, below the one libmoat started. */
		if (e && count_children(&r) == 1)
			r = runner_pid(r);
		if (write(p[1], &r, sizeof(r)) != sizeof(r))
			_exit(1);
		for (;;)
			pause();
	}
	close(p[1]);
	assert_int_equal(read(p[0], &runner, sizeof(runner)), sizeof(runner));
	close(p[0]);
	assert_true(runner > 0);
	assert_true(running(runner));
	kill(host, SIGKILL);
	assert_int_equal(waitpid(host, NULL, 0), host);
	for (tries = 0; tries < 500 && running(runner); tries++) {
		struct timespec ms = {0, 10 * 1000 * 1000};

		nanosleep(&ms, NULL);
	}
	assert_false(running(runner));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_segv),
	    cmocka_unit_test(test_abort),
	    cmocka_unit_test(test_exit),
	    cmocka_unit_test(test_garbage_on_channel),
	    cmocka_unit_test(test_crash_in_init),
	    cmocka_unit_test(test_crash_fails_calls_in_flight),
	    cmocka_unit_test(test_crash_while_idle),
	    cmocka_unit_test(test_abort_stops_call),
	    cmocka_unit_test(test_timeout),
	    cmocka_unit_test(test_timeout_excludes_exit_handlers),
	    cmocka_unit_test(test_crash_while_nested),
	    cmocka_unit_test(test_host_death_kills_runner),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
