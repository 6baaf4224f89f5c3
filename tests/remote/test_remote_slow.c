/* A 15 s call that keeps making host time and log exit calls, through local and grpc://. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "moat_test.h"
#include "moatd_helper.h"
#include "remote_enclave.h"

static int logs;

static int count_log(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	logs++;
	return 0;
}

static void slow_call(const char *uri)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_msg *in = test_msg(), *out = test_msg();
	moat_enclave *e;
	uint64_t calls;

	o.backend = uri;
	e = test_load(TEST_ENCLAVE("remote_enclave"), &o);
	moat_enclave_set_exit_handler(e, MOAT_SELECTOR_LOG, count_log, NULL);
	logs = 0;
	moat_msg_push_u64(in, 15000);
	assert_moat_ok(moat_enclave_call(e, R_SLOW, in, out));
	calls = test_item_u64(out, 0);
	/* About one time call per 20 ms and a log line every 25 calls. */
	assert_true(calls > 100);
	assert_true(logs > 4);
	moat_enclave_destroy(e);
	moat_msg_free(in);
	moat_msg_free(out);
}

static void test_slow_local(void **state)
{
	slow_call("local");
}

static void test_slow_grpc(void **state)
{
	test_moatd m;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", NULL), 0);
	slow_call(m.uri);
	assert_int_equal(test_moatd_stop(&m), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_slow_local),
	    cmocka_unit_test(test_slow_grpc),
	};

	return cmocka_run_group_tests_name("remote_slow", tests, NULL, NULL);
}
