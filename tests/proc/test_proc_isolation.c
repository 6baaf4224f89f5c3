/*
 * The sandbox stops what an enclave must not do, with a clear error, and
 * the host's memory is out of the enclave's reach.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>

#include <cmocka.h>

#include "proc_test.h"

/* Make a call the sandbox must stop; check the error, the fail-fast after it and the cleanup. */
static void expect_stopped(uint64_t selector, const char *arg, const char *syscall_name)
{
	moat_enclave *e = load_probe(NULL, 0);
	char reply[64] = "";
	char want[64];
	int rc;

	assert_non_null(e);
	rc = call_str(e, selector, arg, reply, sizeof(reply));
	if (rc != MOAT_ESANDBOX)
		fprintf(stderr, "selector %llu: rc %d reply '%s' error '%s'\n", (unsigned long long)selector,
		        rc, reply, moat_error_last()->message);
	assert_int_equal(rc, MOAT_ESANDBOX);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	assert_non_null(strstr(moat_error_last()->message, "forbidden system call"));
	snprintf(want, sizeof(want), ", %s)", syscall_name);
	/* A call that takes a path names it: ", openat \"/etc/passwd\")". */
	if (arg && arg[0] == '/')
		snprintf(want, sizeof(want), ", %s \"%s\")", syscall_name, arg);
	if (!strstr(moat_error_last()->message, want))
		fprintf(stderr, "want '%s' in '%s'\n", want, moat_error_last()->message);
	assert_non_null(strstr(moat_error_last()->message, want));
	/* Later calls fail at once with the same code. */
	assert_int_equal(call_str(e, PROBE_ECHO, "x", NULL, 0), MOAT_ESANDBOX);
	moat_enclave_destroy(e);
	assert_int_equal(count_children(NULL), 0);
}

static void test_open(void **state)
{
	moat_enclave *e;
	char reply[16];

	expect_stopped(PROBE_OPEN, "/etc/passwd", "openat");
	expect_stopped(PROBE_OPEN, "/proc/1/environ", "openat");
	/*
	 * The loader's way of opening the image copy is answered, but only with
	 * files the runner already holds: fd 999 does not exist, so it fails.
	 */
	e = load_probe(NULL, 0);
	assert_non_null(e);
	assert_int_equal(call_str(e, PROBE_OPEN, "/proc/self/fd/999", reply, sizeof(reply)), 0);
	assert_string_equal(reply, "refused");
	moat_enclave_destroy(e);
}

static void test_exec(void **state)
{
	expect_stopped(PROBE_EXEC, "/bin/true", "execve");
}

static void test_socket(void **state)
{
	expect_stopped(PROBE_SOCKET, NULL, "socket");
}

static void test_stat(void **state)
{
	expect_stopped(PROBE_STAT, "/etc/passwd", "newfstatat");
}

static void test_fork(void **state)
{
	expect_stopped(PROBE_FORK, NULL, "clone");
}

static void test_kill_host(void **state)
{
	expect_stopped(PROBE_KILL, NULL, "kill");
}

static void test_read_host_memory(void **state)
{
	static char secret[] = "MOAT-SECRET-4f1c2a9e-do-not-leak";
	moat_enclave *e = load_probe(NULL, 0);
	moat_msg *in = NULL, *out = NULL;
	int rc;

	assert_non_null(e);
	moat_msg_new(&in);
	moat_msg_new(&out);
	/* Another process's memory through the kernel: refused. */
	moat_msg_push_u64(in, (uint64_t)(uintptr_t)secret);
	assert_int_equal(moat_enclave_call(e, PROBE_VMREAD, in, out), MOAT_ESANDBOX);
	assert_non_null(strstr(moat_error_last()->message, "process_vm_readv"));
	moat_enclave_destroy(e);

	/* The same address in the enclave's own address space: a fault or other bytes, never the secret. */
	e = load_probe(NULL, 0);
	assert_non_null(e);
	moat_msg_reset(in);
	moat_msg_reset(out);
	moat_msg_push_u64(in, (uint64_t)(uintptr_t)secret);
	moat_msg_push_u64(in, sizeof(secret));
	rc = moat_enclave_call(e, PROBE_PEEK, in, out);
	if (rc == 0) {
		const void *d;
		size_t len;

		assert_int_equal(moat_msg_item(out, 0, &d, &len), 0);
		assert_int_equal(len, sizeof(secret));
		assert_memory_not_equal(d, secret, sizeof(secret));
	} else {
		assert_int_equal(rc, MOAT_ECRASHED);
		assert_null(strstr(moat_error_last()->message, secret));
	}
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

/* On sim the same probe does read the secret: the test above proves something. */
static void test_sim_has_no_isolation(void **state)
{
	static char secret[] = "MOAT-SECRET-sim";
	moat_enclave *e = load_with(PROBE_PATH, "sim", NULL, 0);
	moat_msg *in = NULL, *out = NULL;
	const void *d;
	size_t len;

	assert_non_null(e);
	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_u64(in, (uint64_t)(uintptr_t)secret);
	moat_msg_push_u64(in, sizeof(secret));
	assert_int_equal(moat_enclave_call(e, PROBE_PEEK, in, out), 0);
	assert_int_equal(moat_msg_item(out, 0, &d, &len), 0);
	assert_memory_equal(d, secret, sizeof(secret));
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

/* An ELF constructor runs inside dlopen: the sandbox is already in place then. */
static void test_constructor_is_sandboxed(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;

	o.backend = "proc";
	assert_int_equal(moat_enclave_load(&e, CTOR_PATH, &o), MOAT_ESANDBOX);
	assert_null(e);
	assert_non_null(strstr(moat_error_last()->message, "openat"));
	assert_int_equal(count_children(NULL), 0);
	/* The host is fine and loads the next enclave. */
	e = load_probe(NULL, 0);
	assert_non_null(e);
	assert_int_equal(call_str(e, PROBE_ECHO, "x", NULL, 0), 0);
	moat_enclave_destroy(e);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_open),
	    cmocka_unit_test(test_exec),
	    cmocka_unit_test(test_socket),
	    cmocka_unit_test(test_stat),
	    cmocka_unit_test(test_fork),
	    cmocka_unit_test(test_kill_host),
	    cmocka_unit_test(test_read_host_memory),
	    cmocka_unit_test(test_sim_has_no_isolation),
	    cmocka_unit_test(test_constructor_is_sandboxed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
