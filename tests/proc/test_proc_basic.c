/*
 * The proc backend does what sim does: the examples, nesting, thread
 * donation, many threads, separate instances, the same errors.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "fib_raw.h"
#include "proc_test.h"
#include "test_enclave.h"

static void test_identity(void **state)
{
	uint8_t m[MOAT_MEASUREMENT_LEN];
	moat_identity id;
	moat_enclave *e = load_probe(NULL, 0);

	assert_non_null(e);
	assert_int_equal(moat_enclave_identity(e, &id), 0);
	assert_string_equal(id.backend, "proc");
	assert_true(id.isolation & MOAT_ISOLATION_PROCESS);
	assert_true(id.isolation & MOAT_ISOLATION_SECCOMP);
	assert_true(id.isolation & MOAT_ISOLATION_RLIMITS);
	assert_false(id.isolation & MOAT_ISOLATION_REMOTE);
	assert_int_equal(moat_measure_file(m, PROBE_PATH), 0);
	assert_memory_equal(id.measurement, m, sizeof(m));
	assert_int_equal(id.debug, 0);
	assert_int_equal(id.debug_pid, 0);
	moat_enclave_destroy(e);
}

/* Debug mode: the identity says so and names the runner, which is dumpable and still sandboxed. */
static void test_debug_identity(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;
	moat_identity id;
	char path[64], line[256];
	int seccomp_seen = 0, seccomp = -1;
	moat_msg *out;
	uint64_t debug = 0;
	FILE *f;

	o.backend = "proc";
	o.flags = MOAT_LOAD_DEBUG;
	assert_int_equal(moat_enclave_load(&e, EXAMPLE_PATH("hello"), &o), 0);
	assert_int_equal(moat_enclave_identity(e, &id), 0);
	assert_int_equal(id.debug, 1);
	assert_true(id.debug_pid > 0);
	assert_true(id.isolation & MOAT_ISOLATION_SECCOMP);
	/* The pid is the runner's (its command line is the runner's) and it is in seccomp filter mode. */
	snprintf(path, sizeof(path), "/proc/%ld/status", id.debug_pid);
	f = fopen(path, "r");
	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Seccomp: %d", &seccomp) == 1)
			seccomp_seen = 1;
	fclose(f);
	assert_true(seccomp_seen);
	assert_int_equal(seccomp, 2);
	moat_enclave_destroy(e);
	/* The enclave knows it too (moat_host_identity). */
	assert_int_equal(moat_enclave_load(&e, MOAT_TEST_ENCLAVES "/test_enclave.so", &o), 0);
	out = NULL;
	assert_int_equal(moat_msg_new(&out), 0);
	assert_int_equal(moat_enclave_call(e, T_HOST, NULL, out), 0);
	assert_int_equal(moat_msg_item_u64(out, 2, &debug), 0);
	assert_int_equal(debug, 1);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static void test_hello(void **state)
{
	moat_enclave *e = load_with(EXAMPLE_PATH("hello"), "proc", NULL, 0);
	char reply[64];

	assert_non_null(e);
	assert_int_equal(call_str(e, MOAT_SELECTOR_RUN, "proc", reply, sizeof(reply)), 0);
	assert_string_equal(reply, "Hello, proc!");
	moat_enclave_destroy(e);
}

static int fib_exit(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	return moat_enclave_call(payload, FIB_ENTRY, in, out);
}

/* Depth 1000: every level is an exit call whose handler makes a nested entry call. */
static void test_fib_nesting(void **state)
{
	moat_enclave *e = load_with(EXAMPLE_PATH("fib_raw"), "proc", NULL, 0);
	moat_msg *in = NULL, *out = NULL;
	uint64_t a = 0, b = 1, i, got = 0;

	assert_non_null(e);
	for (i = 0; i < 1000; i++) {
		uint64_t t = a + b;

		a = b;
		b = t;
	}
	assert_int_equal(moat_enclave_set_exit_handler(e, FIB_EXIT, fib_exit, e), 0);
	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_u64(in, 1000);
	assert_int_equal(moat_enclave_call(e, FIB_ENTRY, in, out), 0);
	assert_int_equal(moat_msg_item_u64(out, 0, &got), 0);
	assert_true(got == a);
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

/* The enclave starts its own threads: the host donates threads that enter by MOAT_SELECTOR_DONATE. */
static void test_thread_donation(void **state)
{
	moat_enclave *e = load_with(EXAMPLE_PATH("threads"), "proc", NULL, 0);
	moat_msg *in = NULL, *out = NULL;
	const void *d;
	size_t len;

	assert_non_null(e);
	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_str(in, "8");
	assert_int_equal(moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out), 0);
	assert_int_equal(moat_msg_item(out, 0, &d, &len), 0);
	assert_int_equal(len, 12);
	assert_memory_equal(d, "500000500000", 12);
	assert_int_equal(moat_msg_item(out, 1, &d, &len), 0);
	assert_int_equal(len, 1);
	assert_memory_equal(d, "8", 1);
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static int kv_run(moat_enclave *e, const char *a, const char *b, const char *c, char *reply, size_t size)
{
	moat_msg *in = NULL, *out = NULL;
	const void *d;
	size_t len;
	int rc;

	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_str(in, a);
	moat_msg_push_str(in, b);
	if (c)
		moat_msg_push_str(in, c);
	rc = moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out);
	reply[0] = '\0';
	if (rc == 0 && moat_msg_item(out, 0, &d, &len) == 0)
		snprintf(reply, size, "%.*s", (int)len, (const char *)d);
	moat_msg_free(in);
	moat_msg_free(out);
	return rc;
}

/* Two loads of one image are two processes: nothing is shared. */
static void test_two_instances(void **state)
{
	moat_enclave *a = load_with(EXAMPLE_PATH("kv_raw"), "proc", NULL, 0);
	moat_enclave *b = load_with(EXAMPLE_PATH("kv_raw"), "proc", NULL, 0);
	char reply[64];

	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(kv_run(a, "put", "colour", "blue", reply, sizeof(reply)), 0);
	assert_int_equal(kv_run(a, "get", "colour", NULL, reply, sizeof(reply)), 0);
	assert_string_equal(reply, "blue");
	assert_int_equal(kv_run(b, "get", "colour", NULL, reply, sizeof(reply)), 0);
	assert_string_equal(reply, "(not found)");
	moat_enclave_destroy(a);
	assert_int_equal(kv_run(b, "put", "colour", "red", reply, sizeof(reply)), 0);
	assert_int_equal(kv_run(b, "get", "colour", NULL, reply, sizeof(reply)), 0);
	assert_string_equal(reply, "red");
	moat_enclave_destroy(b);
}

#define N_THREADS 32
#define N_CALLS   1000

typedef struct worker {
	moat_enclave *e;
	int index;
	int failures;
	pthread_t thread;
} worker;

static void *many_main(void *arg)
{
	worker *w = arg;
	int i;

	for (i = 0; i < N_CALLS; i++) {
		char msg[64], reply[64];

		snprintf(msg, sizeof(msg), "thread %d call %d", w->index, i);
		if (call_str(w->e, PROBE_ECHO, msg, reply, sizeof(reply)) != 0 || strcmp(msg, reply) != 0) {
			if (!w->failures++)
				fprintf(stderr, "thread %d call %d: %s\n", w->index, i,
				        moat_error_last()->message);
		}
	}
	return NULL;
}

static void test_many_threads(void **state)
{
	moat_enclave *e = load_probe(NULL, 0);
	worker w[N_THREADS];
	int i;

	assert_non_null(e);
	for (i = 0; i < N_THREADS; i++) {
		w[i].e = e;
		w[i].index = i;
		w[i].failures = 0;
		assert_int_equal(pthread_create(&w[i].thread, NULL, many_main, &w[i]), 0);
	}
	for (i = 0; i < N_THREADS; i++)
		pthread_join(w[i].thread, NULL);
	for (i = 0; i < N_THREADS; i++)
		assert_int_equal(w[i].failures, 0);
	moat_enclave_destroy(e);
}

/* Failures read the same on proc as on sim. */
static void test_errors_match_sim(void **state)
{
	const char *backends[] = {"sim", "proc"};
	char messages[2][512];
	int i;

	for (i = 0; i < 2; i++) {
		moat_enclave *e = load_with(PROBE_PATH, backends[i], NULL, 0);

		assert_non_null(e);
		assert_int_equal(call_str(e, PROBE_FAIL, NULL, NULL, 0), MOAT_EHANDLER);
		assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
		assert_true(moat_error_last()->enclave_code == 7);
		snprintf(messages[i], sizeof(messages[i]), "%s", moat_error_last()->message);
		assert_int_equal(call_str(e, MOAT_SELECTOR_USER + 999, NULL, NULL, 0), MOAT_ENOSELECTOR);
		/* The handle stays usable after a handler's failure. */
		assert_int_equal(call_str(e, PROBE_ECHO, "x", NULL, 0), 0);
		moat_enclave_destroy(e);
	}
	assert_string_equal(messages[0], messages[1]);
}

static void test_pin(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	uint8_t pin[MOAT_MEASUREMENT_LEN];
	moat_enclave *e = NULL;

	o.backend = "proc";
	assert_int_equal(moat_measure_file(pin, PROBE_PATH), 0);
	o.expected_measurement = pin;
	assert_int_equal(moat_enclave_load(&e, PROBE_PATH, &o), 0);
	moat_enclave_destroy(e);
	pin[0] ^= 1;
	e = NULL;
	assert_int_equal(moat_enclave_load(&e, PROBE_PATH, &o), MOAT_EMEASUREMENT);
	assert_null(e);
	assert_non_null(strstr(moat_error_last()->message, "nothing was run"));
	assert_int_equal(count_children(NULL), 0);
}

static void test_init_and_config(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;
	char reply[64];

	o.backend = "proc";
	o.config = "fail";
	o.config_len = 4;
	assert_int_equal(moat_enclave_load(&e, PROBE_PATH, &o), MOAT_EINIT);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	assert_non_null(strstr(moat_error_last()->message, "init function failed (5)"));
	/* init makes an exit call (log) before the load has returned. */
	e = load_probe("log", 0);
	assert_non_null(e);
	assert_int_equal(call_str(e, PROBE_CONFIG, NULL, reply, sizeof(reply)), 0);
	assert_string_equal(reply, "log");
	moat_enclave_destroy(e);
}

/* printf, threads and large allocations inside the enclave are allowed. */
static void test_ordinary_code(void **state)
{
	moat_enclave *e = load_probe(NULL, 0);
	moat_msg *out = NULL;
	uint64_t v = 0;

	assert_non_null(e);
	moat_msg_new(&out);
	assert_int_equal(moat_enclave_call(e, PROBE_STDIO, NULL, out), 0);
	assert_int_equal(moat_msg_item_u64(out, 0, &v), 0);
	assert_true(v == 42);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

/* Large items both ways; the runner's allocator grows and shrinks its heaps. */
static void test_large_items(void **state)
{
	moat_enclave *e = load_probe(NULL, 0);
	size_t len = 4u << 20;
	uint8_t *big = malloc(len);
	int i;

	assert_non_null(e);
	assert_non_null(big);
	for (i = 0; i < 10; i++) {
		moat_msg *in = NULL, *out = NULL;
		const void *d;
		size_t got;

		memset(big, 'a' + i, len);
		moat_msg_new(&in);
		moat_msg_new(&out);
		moat_msg_push_borrowed(in, big, len);
		assert_int_equal(moat_enclave_call(e, PROBE_ECHO, in, out), 0);
		assert_int_equal(moat_msg_item(out, 0, &d, &got), 0);
		assert_int_equal(got, len);
		assert_memory_equal(d, big, len);
		moat_msg_free(in);
		moat_msg_free(out);
	}
	free(big);
	moat_enclave_destroy(e);
}

static int host_handler(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	moat_enclave *e = payload;
	const void *d;
	size_t len;
	int rc;

	if (moat_msg_item(in, 0, &d, &len) < 0)
		return -42;
	/* A nested entry call from the exit handler, on the same thread and channel. */
	if ((rc = moat_enclave_call(e, PROBE_ECHO, in, out)) < 0)
		return rc;
	return moat_msg_push_str(out, "from host");
}

static void test_exit_calls(void **state)
{
	moat_enclave *e = load_probe(NULL, 0);
	moat_msg *in = NULL, *out = NULL;
	const void *d;
	size_t len;

	assert_non_null(e);
	assert_int_equal(moat_enclave_set_exit_handler(e, PROBE_HOST, host_handler, e), 0);
	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_str(in, "ping");
	assert_int_equal(moat_enclave_call(e, PROBE_EXIT_CALL, in, out), 0);
	assert_int_equal(moat_msg_count(out), 2);
	moat_msg_item(out, 0, &d, &len);
	assert_int_equal(len, 4);
	assert_memory_equal(d, "ping", 4);
	moat_msg_item(out, 1, &d, &len);
	assert_int_equal(len, 9);
	assert_memory_equal(d, "from host", 9);
	/* The handler's failure code reaches the enclave, whose handler returns it. */
	moat_msg_reset(in);
	moat_msg_reset(out);
	assert_int_equal(moat_enclave_call(e, PROBE_EXIT_CALL, in, out), MOAT_EHANDLER);
	assert_true(moat_error_last()->enclave_code == -42);
	/* No handler: MOAT_ENOHANDLER comes back to the enclave. */
	assert_int_equal(moat_enclave_set_exit_handler(e, PROBE_HOST, NULL, NULL), 0);
	assert_int_equal(moat_enclave_call(e, PROBE_EXIT_CALL, in, out), MOAT_EHANDLER);
	assert_true(moat_error_last()->enclave_code == MOAT_ENOHANDLER);
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static void test_missing(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;

	o.backend = "proc";
	assert_int_equal(moat_enclave_load(&e, MOAT_TEST_ENCLAVES "/no_such_enclave.so", &o), MOAT_ENOENT);
	assert_int_equal(setenv("MOAT_ENCLAVE_HOST", "/nonexistent/moat-enclave-host", 1), 0);
	assert_int_equal(moat_enclave_load(&e, PROBE_PATH, &o), MOAT_ENOBACKEND);
	assert_non_null(strstr(moat_error_last()->message, "MOAT_ENCLAVE_HOST"));
	unsetenv("MOAT_ENCLAVE_HOST");
	assert_int_equal(count_children(NULL), 0);
}

static void *one_call(void *arg)
{
	return (void *)(intptr_t)call_str(arg, PROBE_ECHO, "x", NULL, 0);
}

/* A host thread's channel (and the runner's worker for it) goes away when the thread exits. */
static void test_thread_exit_releases(void **state)
{
	moat_enclave *e = load_probe(NULL, 0);
	pthread_t t[8];
	pid_t runner;
	int fds, threads, i, tries;

	assert_non_null(e);
	assert_int_equal(count_children(&runner), 1);
	runner = runner_pid(runner);
	fds = count_fds();
	threads = count_threads(runner);
	assert_true(threads >= 2);
	for (i = 0; i < 8; i++)
		assert_int_equal(pthread_create(&t[i], NULL, one_call, e), 0);
	for (i = 0; i < 8; i++) {
		void *r;

		pthread_join(t[i], &r);
		assert_int_equal((intptr_t)r, 0);
	}
	assert_int_equal(count_fds(), fds);
	/* The runner's workers notice the closed channels on their own time. */
	for (tries = 0; tries < 500 && count_threads(runner) != threads; tries++) {
		struct timespec ms = {0, 10 * 1000 * 1000};

		nanosleep(&ms, NULL);
	}
	assert_int_equal(count_threads(runner), threads);
	moat_enclave_destroy(e);
	assert_int_equal(count_children(NULL), 0);
}

/* A library the image needs is loaded by the runner before its sandbox (the image names it). */
static void test_needed_library(void **state)
{
	moat_enclave *e = load_with(MOAT_TEST_ENCLAVES "/proc_elf_enclave.so", "proc", NULL, 0);
	moat_msg *out = NULL;
	uint64_t v = 0;

	assert_non_null(e);
	assert_int_equal(moat_msg_new(&out), 0);
	assert_int_equal(moat_enclave_call(e, MOAT_SELECTOR_USER, NULL, out), 0);
	assert_int_equal(moat_msg_item_u64(out, 0, &v), 0);
	assert_true(v != 0); /* EV_NONE would mean libelf refused */
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

/* One the runner cannot load fails the load naming it, with sim's code and origin. */
static void test_missing_library(void **state)
{
	const char *path = MOAT_TEST_ENCLAVES "/proc_dep_enclave.so";
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;

	/* sim finds it through the image's run path. */
	o.backend = "sim";
	assert_int_equal(moat_enclave_load(&e, path, &o), 0);
	moat_enclave_destroy(e);
	e = NULL;
	o.backend = "proc";
	assert_int_equal(moat_enclave_load(&e, path, &o), MOAT_EBADIMAGE);
	assert_null(e);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_API);
	fprintf(stderr, "[load] %s\n", moat_error_last()->message);
	assert_non_null(strstr(moat_error_last()->message, "proc_dep_enclave.so: cannot load"));
	assert_non_null(strstr(moat_error_last()->message, "libmoat_test_dep.so"));
	assert_int_equal(count_children(NULL), 0);
}

/* An enclave that links libm loads: the runner has it before the sandbox closes the file system. */
static void test_libm_enclave(void **state)
{
	moat_enclave *e = load_with(MOAT_TEST_ENCLAVES "/proc_libm_enclave.so", "proc", NULL, 0);
	moat_msg *in = NULL, *out = NULL;
	const void *d;
	size_t len;

	assert_non_null(e);
	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_u64(in, 27000);
	assert_int_equal(moat_enclave_call(e, MOAT_SELECTOR_USER, in, out), 0);
	assert_int_equal(moat_msg_item(out, 0, &d, &len), 0);
	assert_int_equal(len, 2);
	assert_memory_equal(d, "30", 2);
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static void *loader_main(void *arg)
{
	*(moat_enclave **)arg = load_probe(NULL, 0);
	return NULL;
}

/*
 * A server loads enclaves on threads that come and go. The runner's parent
 * death signal follows the thread that forked it, so libmoat forks from a
 * thread of its own: the loading thread's exit must not end the enclave.
 */
static void test_loading_thread_exits(void **state)
{
	struct timespec pause = {0, 200 * 1000 * 1000};
	moat_enclave *e = NULL;
	pthread_t t;

	assert_int_equal(pthread_create(&t, NULL, loader_main, &e), 0);
	pthread_join(t, NULL);
	assert_non_null(e);
	nanosleep(&pause, NULL);
	assert_int_equal(count_children(NULL), 1);
	assert_int_equal(call_str(e, PROBE_ECHO, "still here", NULL, 0), 0);
	moat_enclave_destroy(e);
	assert_int_equal(count_children(NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_identity),
	    cmocka_unit_test(test_debug_identity),
	    cmocka_unit_test(test_needed_library),
	    cmocka_unit_test(test_missing_library),
	    cmocka_unit_test(test_hello),
	    cmocka_unit_test(test_fib_nesting),
	    cmocka_unit_test(test_thread_donation),
	    cmocka_unit_test(test_two_instances),
	    cmocka_unit_test(test_many_threads),
	    cmocka_unit_test(test_errors_match_sim),
	    cmocka_unit_test(test_pin),
	    cmocka_unit_test(test_init_and_config),
	    cmocka_unit_test(test_ordinary_code),
	    cmocka_unit_test(test_large_items),
	    cmocka_unit_test(test_exit_calls),
	    cmocka_unit_test(test_missing),
	    cmocka_unit_test(test_thread_exit_releases),
	    cmocka_unit_test(test_loading_thread_exits),
	    cmocka_unit_test(test_libm_enclave),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
