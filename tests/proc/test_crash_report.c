/*
 * Crash reports: when the enclave dies by a signal on proc, or on a moatd's
 * proc session (MOAT_TEST_CRASH_BACKEND=local), the host's error names the
 * call that was running, the signal, the fault address and a symbolized
 * backtrace of the crashed thread; remote errors name the image as the host
 * did, never moatd's files.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>

#include "proc_test.h"

static const char *backend(void)
{
	const char *b = getenv("MOAT_TEST_CRASH_BACKEND");

	return b && *b ? b : "proc";
}

/* Load the probe, make the call, and return the error message of its failure (static storage). */
static const char *crash(uint64_t selector, const char *config, int *code)
{
	static char message[1024];
	moat_enclave *e = load_with(PROBE_PATH, backend(), config, 0);

	assert_non_null(e);
	*code = call_str(e, selector, NULL, NULL, 0);
	snprintf(message, sizeof(message), "%s", moat_error_last()->message);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	/* Every later call fails at once with the same code. */
	assert_int_equal(call_str(e, PROBE_ECHO, "x", NULL, 0), *code);
	moat_enclave_destroy(e);
	fprintf(stderr, "[report] %s\n", message);
	return message;
}

static void test_segv(void **state)
{
	int code;
	const char *m = crash(PROBE_SEGV, NULL, &code);

	assert_int_equal(code, MOAT_ECRASHED);
	assert_non_null(strstr(m, "proc_probe_enclave.so: the enclave crashed in entry call 1044"));
	assert_non_null(strstr(m, "killed by signal 11 (SIGSEGV"));
	assert_non_null(strstr(m, "at address 0x8"));
	/* The faulting frame, symbolized with its source line, and the runtime that called it. */
	assert_non_null(strstr(m, "backtrace: #0 segv (probe_enclave.c:"));
	assert_non_null(strstr(m, "moat__enclave_call (runtime.c:"));
	/* Never moatd's own files. */
	assert_null(strstr(m, "/proc/self/fd"));
	assert_null(strstr(m, "images/"));
}

static void test_abort(void **state)
{
	int code;
	const char *m = crash(PROBE_ABORT, NULL, &code);

	assert_int_equal(code, MOAT_ECRASHED);
	assert_non_null(strstr(m, "in entry call 1045"));
	assert_non_null(strstr(m, "killed by signal 6 (SIGABRT"));
	/* abort() is libc's, called from the enclave's handler. */
	assert_non_null(strstr(m, "abort"));
	assert_non_null(strstr(m, "do_abort (probe_enclave.c:"));
}

/* A crash in the enclave's init fails the load with the same report. */
static void test_init(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;
	const char *m;

	o.backend = backend();
	o.config = "crash";
	o.config_len = 5;
	assert_int_equal(moat_enclave_load(&e, PROBE_PATH, &o), MOAT_ECRASHED);
	assert_null(e);
	m = moat_error_last()->message;
	fprintf(stderr, "[report] %s\n", m);
	assert_non_null(strstr(m, "the enclave crashed in its init function: killed by signal 11 (SIGSEGV"));
	assert_non_null(strstr(m, "backtrace: #0 "));
	assert_non_null(strstr(m, "(probe_enclave.c:"));
}

/*
 * A crash in init deep down a stack: the whole report, not its first few
 * hundred bytes, reaches the host, from a load and from a deferred start
 * (on local through the target's Attach stream).
 */
static void check_deep_report(const char *m)
{
	char frame[64];

	assert_non_null(strstr(m, "the enclave crashed in its init function: killed by signal 11 (SIGSEGV"));
	assert_non_null(strstr(m, "at address 0x8"));
	assert_non_null(strstr(m, "backtrace: #0 deep (probe_enclave.c:"));
	snprintf(frame, sizeof(frame), "#%d deep (probe_enclave.c:", PROBE_DEEP_FRAMES - 1);
	assert_non_null(strstr(m, frame));
	/* Then init (inlined into the runtime's moat__enclave_user_init, or not), and the runtime. */
	snprintf(frame, sizeof(frame), "#%d ", PROBE_DEEP_FRAMES);
	assert_non_null(strstr(strstr(m, frame), "(probe_enclave.c:"));
	assert_non_null(strstr(strstr(m, frame), " moat__enclave_start (runtime.c:"));
	assert_true(strlen(m) > 700);
	assert_null(strstr(m, "/proc/self/fd"));
}

static void test_init_deep(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;
	static char first[4096];

	o.backend = backend();
	o.config = "crash-deep";
	o.config_len = 10;
	assert_int_equal(moat_enclave_load(&e, PROBE_PATH, &o), MOAT_ECRASHED);
	assert_null(e);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	snprintf(first, sizeof(first), "%s", moat_error_last()->message);
	fprintf(stderr, "[report] %s\n", first);
	check_deep_report(first);
	/* The same report from moat_enclave_start(); the handle is then good only for destroy. */
	o.flags = MOAT_LOAD_DEFER_INIT;
	assert_int_equal(moat_enclave_load(&e, PROBE_PATH, &o), 0);
	assert_int_equal(moat_enclave_start(e), MOAT_ECRASHED);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	check_deep_report(moat_error_last()->message);
	assert_int_equal(call_str(e, PROBE_ECHO, "x", NULL, 0), MOAT_ECRASHED);
	moat_enclave_destroy(e);
}

/* A thread the enclave started itself has no call behind it. */
static void test_own_thread(void **state)
{
	moat_enclave *e = load_with(PROBE_PATH, backend(), NULL, 0);
	struct timespec t = {0, 20 * 1000 * 1000};
	const char *m;
	int i, rc = 0;

	assert_non_null(e);
	assert_int_equal(call_str(e, PROBE_LATER, NULL, NULL, 0), 0);
	for (i = 0; i < 250 && rc == 0; i++) {
		nanosleep(&t, NULL);
		rc = call_str(e, PROBE_ECHO, "x", NULL, 0);
	}
	assert_int_equal(rc, MOAT_ECRASHED);
	m = moat_error_last()->message;
	fprintf(stderr, "[report] %s\n", m);
	/* The report may reach the host by the call that saw the death or a later one. */
	assert_non_null(strstr(m, "SIGSEGV"));
	moat_enclave_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_segv),      cmocka_unit_test(test_abort),      cmocka_unit_test(test_init),
	    cmocka_unit_test(test_init_deep), cmocka_unit_test(test_own_thread),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
