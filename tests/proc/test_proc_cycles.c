/*
 * 200 loads and destroys leave no process, zombie or file descriptor
 * behind, including loads that fail and instances that crashed.
 */
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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cycles),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
