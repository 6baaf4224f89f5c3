/*
 * An enclave that starts threads on a target that will not attach them
 * (--max-threads-per-session 1): moat_thread_join() must report the refusal
 * instead of waiting forever for a task that can never run.
 */
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

static void run_threads(const char *uri, const char *threads, int *rc, int64_t *code, char *sum,
                        size_t sum_len)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_msg *in = test_msg(), *out = test_msg();
	moat_enclave *e;
	const void *data;
	size_t len;

	o.backend = uri;
	e = test_load(TEST_ENCLAVE("threads_enclave"), &o);
	moat_msg_push_str(in, threads);
	*rc = moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out);
	*code = moat_error_last()->enclave_code;
	sum[0] = '\0';
	if (*rc == 0 && moat_msg_item(out, 0, &data, &len) == 0 && len < sum_len) {
		memcpy(sum, data, len);
		sum[len] = '\0';
	}
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

/* libmoat's diagnostics, caught through moat_log_set(). */
static int warnings_seen;

static void count_warnings(void *payload, moat_log_level level, const char *message)
{
	if (level == MOAT_LOG_WARN && strstr(message, "donated thread") &&
	    strstr(message, (const char *)payload))
		warnings_seen++;
}

static void test_join_reports_refused_thread(void **state)
{
	char sum[64];
	test_moatd m;
	int64_t code;
	int rc;

	assert_int_equal(
	    test_moatd_start(&m, "grpc", "--allow-upload", "--max-threads-per-session", "1", NULL), 0);
	moat_log_set(count_warnings, "max-threads-per-session");
	run_threads(m.uri, "2", &rc, &code, sum, sizeof(sum));
	moat_log_set(NULL, NULL);
	/* The threads example returns the first join failure from its handler. */
	assert_int_equal(rc, MOAT_EHANDLER);
	assert_int_equal(code, MOAT_ELIMIT);
	/* The host's diagnostic went to the application's log function, naming the limit. */
	assert_true(warnings_seen >= 1);
	assert_int_equal(test_moatd_stop(&m), 0);

	/* Control: with room for the threads the same call succeeds. */
	assert_int_equal(
	    test_moatd_start(&m, "grpc", "--allow-upload", "--max-threads-per-session", "3", NULL), 0);
	run_threads(m.uri, "2", &rc, &code, sum, sizeof(sum));
	assert_int_equal(rc, 0);
	assert_string_equal(sum, "500000500000");
	assert_int_equal(test_moatd_stop(&m), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_join_reports_refused_thread),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
