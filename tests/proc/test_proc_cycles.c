/*
 * 200 loads and destroys leave no process, zombie or file descriptor
 * behind, including loads that fail and instances that crashed.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "proc_test.h"

#define CYCLES 200

static void test_cycles(void **state)
{
	int fds, i;

	/* The first load starts libmoat's spawner thread and reads the runner's path: not a leak. */
	moat_enclave_destroy(load_probe(NULL, 0));
	fds = count_fds();
	for (i = 0; i < CYCLES; i++) {
		moat_enclave *e = load_probe(NULL, 0);
		char reply[16];

		assert_non_null(e);
		assert_int_equal(call_str(e, PROBE_ECHO, "x", reply, sizeof(reply)), 0);
		assert_string_equal(reply, "x");
		/* Every tenth instance crashes first; every seventh is destroyed untouched after load. */
		if (i % 10 == 0)
			assert_int_equal(call_str(e, PROBE_SEGV, NULL, NULL, 0), MOAT_ECRASHED);
		moat_enclave_destroy(e);
		if (i % 7 == 0) {
			moat_load_options o = MOAT_LOAD_OPTIONS_INIT;

			o.backend = "proc";
			o.config = "fail";
			o.config_len = 4;
			assert_int_equal(moat_enclave_load(&e, PROBE_PATH, &o), MOAT_EINIT);
		}
	}
	assert_int_equal(count_fds(), fds);
	assert_int_equal(count_children(NULL), 0);
	/* Every child was reaped by libmoat: none is left to wait for. */
	assert_int_equal(waitpid(-1, NULL, WNOHANG), -1);
}

#define LOADERS 8
#define LOADS   10

static void *loader_main(void *arg)
{
	int *failures = arg, i;

	for (i = 0; i < LOADS; i++) {
		moat_enclave *e = load_probe(NULL, 0);

		if (!e || call_str(e, PROBE_ECHO, "x", NULL, 0) != 0)
			(*failures)++;
		moat_enclave_destroy(e);
	}
	return NULL;
}

/* Loads and destroys on many threads at once share libmoat's one spawner thread. */
static void test_parallel_loads(void **state)
{
	pthread_t t[LOADERS];
	int failures[LOADERS] = {0}, fds = count_fds(), i;

	for (i = 0; i < LOADERS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, loader_main, &failures[i]), 0);
	for (i = 0; i < LOADERS; i++)
		pthread_join(t[i], NULL);
	for (i = 0; i < LOADERS; i++)
		assert_int_equal(failures[i], 0);
	assert_int_equal(count_fds(), fds);
	assert_int_equal(count_children(NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_cycles),
	    cmocka_unit_test(test_parallel_loads),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
