/*
 * A hostile enclave against the proc sandbox: every way out it tries is
 * stopped with MOAT_ESANDBOX (or refused), and nothing outside is harmed:
 * the host, another process of the same user, and, when the enclave runs
 * on a shared moatd (MOAT_TEST_HOSTILE=moatd), moatd and another tenant's
 * session on it.
 */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/wait.h>

#include <cmocka.h>

#include "hostile.h"
#include "moatd_helper.h"
#include "proc_test.h"

#define HOSTILE_PATH MOAT_TEST_ENCLAVES "/proc_hostile_enclave.so"

static struct {
	int on_moatd;
	test_moatd moatd;
	moat_enclave *bystander; /* another tenant's session on the same moatd */
	pid_t victim;            /* another process of the same user */
} g;

static moat_enclave *load_hostile(void)
{
	return load_with(HOSTILE_PATH, g.on_moatd ? g.moatd.uri : "proc", NULL, 0);
}

static int call_u64(moat_enclave *e, uint64_t selector, uint64_t arg, moat_msg *out)
{
	moat_msg *in = NULL;
	int rc;

	moat_msg_new(&in);
	moat_msg_push_u64(in, arg);
	rc = moat_enclave_call(e, selector, in, out);
	moat_msg_free(in);
	return rc;
}

static int alive(pid_t pid)
{
	return pid > 0 && waitpid(pid, NULL, WNOHANG) == 0 && kill(pid, 0) == 0;
}

/* What the enclave must not have touched; and, on proc, no runner left behind. */
static void check_nothing_harmed(void)
{
	int tries;

	assert_true(alive(g.victim));
	if (!g.on_moatd) {
		assert_int_equal(count_children(NULL), 1); /* the victim only */
		return;
	}
	assert_true(alive(g.moatd.pid));
	assert_int_equal(call_str(g.bystander, HOSTILE_ECHO, "still here", NULL, 0), 0);
	/* The hostile session's runner is gone: only the bystander's keeper is left under moatd. */
	for (tries = 0; tries < 500 && count_children_of(g.moatd.pid, NULL) != 1; tries++)
		test_sleep_ms(10);
	assert_int_equal(count_children_of(g.moatd.pid, NULL), 1);
}

/* The call must stop the enclave for the forbidden system call name. */
static void expect_stopped(uint64_t selector, uint64_t arg, const char *name)
{
	moat_enclave *e = load_hostile();
	moat_msg *out = NULL;
	char want[64];
	int rc;

	assert_non_null(e);
	moat_msg_new(&out);
	rc = call_u64(e, selector, arg, out);
	if (rc != MOAT_ESANDBOX)
		fprintf(stderr, "selector %llu: rc %d, error '%s'\n", (unsigned long long)selector, rc,
		        moat_error_last()->message);
	assert_int_equal(rc, MOAT_ESANDBOX);
	assert_non_null(strstr(moat_error_last()->message, "forbidden system call"));
	snprintf(want, sizeof(want), ", %s)", name);
	if (!strstr(moat_error_last()->message, want))
		fprintf(stderr, "wanted '%s' in '%s'\n", want, moat_error_last()->message);
	assert_non_null(strstr(moat_error_last()->message, want));
	assert_int_equal(call_str(e, HOSTILE_ECHO, "x", NULL, 0), MOAT_ESANDBOX);
	moat_msg_free(out);
	moat_enclave_destroy(e);
	check_nothing_harmed();
}

#if !defined(__SANITIZE_ADDRESS__)
/* A call that must be refused without stopping the enclave; returns the reply's first item. */
static void expect_reply(uint64_t selector, uint64_t arg, const char *want)
{
	moat_enclave *e = load_hostile();
	moat_msg *out = NULL;
	const void *d;
	size_t len;

	assert_non_null(e);
	moat_msg_new(&out);
	assert_int_equal(call_u64(e, selector, arg, out), 0);
	assert_int_equal(moat_msg_item(out, 0, &d, &len), 0);
	assert_int_equal(len, strlen(want));
	assert_memory_equal(d, want, len);
	assert_int_equal(call_str(e, HOSTILE_ECHO, "x", NULL, 0), 0);
	moat_msg_free(out);
	moat_enclave_destroy(e);
	check_nothing_harmed();
}
#endif

/* F_SETOWN + F_SETSIG + O_ASYNC would make the kernel signal any process of the runner's user. */
static void test_no_signal_reaches_out(void **state)
{
	expect_stopped(HOSTILE_SETOWN, (uint64_t)g.victim, "fcntl");
	expect_stopped(HOSTILE_SETOWN, (uint64_t)getpid(), "fcntl");
	if (g.on_moatd)
		expect_stopped(HOSTILE_SETOWN, (uint64_t)g.moatd.pid, "fcntl");
	expect_stopped(HOSTILE_SETOWN_EX, (uint64_t)g.victim, "fcntl");
	expect_stopped(HOSTILE_SETSIG, 0, "fcntl");
	expect_stopped(HOSTILE_ASYNC, 0, "fcntl");
	expect_stopped(HOSTILE_KILL, (uint64_t)g.victim, "kill");
	expect_stopped(HOSTILE_KILL, 1, "kill");
	expect_stopped(HOSTILE_KILL_ALL, 0, "kill");
}

/* No memory outside the address-space limit: no memfd; shared memory counts against the limit. */
static void test_no_memory_outside_the_limit(void **state)
{
	expect_stopped(HOSTILE_MEMFD, 0, "memfd_create");
#if !defined(__SANITIZE_ADDRESS__)
	/* Sanitizer builds run without the address-space limit (the shadow needs terabytes). */
	expect_reply(HOSTILE_SHARED_BIG, 0, "refused");
#endif
	expect_stopped(HOSTILE_FTRUNCATE, 0, "ftruncate");
}

/* Threads stop at the kernel-enforced limit; the enclave keeps working, nobody else notices. */
static void test_thread_limit(void **state)
{
	moat_enclave *e = load_hostile();
	moat_identity id;
	moat_msg *out = NULL;
	uint64_t n = 0;

	assert_non_null(e);
	assert_int_equal(moat_enclave_identity(e, &id), 0);
	assert_true(id.isolation & MOAT_ISOLATION_TASKS);
	moat_msg_new(&out);
	assert_int_equal(call_u64(e, HOSTILE_THREADS, 0, out), 0);
	assert_int_equal(moat_msg_item_u64(out, 0, &n), 0);
	fprintf(stderr, "the enclave started %llu threads before the limit\n", (unsigned long long)n);
	assert_true(n > 16);
	assert_true(n < 5000);
	assert_true(n <= 512);
	assert_int_equal(call_str(e, HOSTILE_ECHO, "x", NULL, 0), 0);
	moat_msg_free(out);
	moat_enclave_destroy(e);
	check_nothing_harmed();
}

/* Only the measured image's code runs: no writable+executable memory, no flipping RW to RX. */
static void test_no_code_of_its_own(void **state)
{
	expect_stopped(HOSTILE_RWX, 0, "mmap");
	expect_stopped(HOSTILE_WX_FLIP, 0, "mprotect");
}

/* An enclave loaded with MOAT_LOAD_ALLOW_JIT may map writable+executable memory, and its identity says so. */
static void test_jit_on_request(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;
	moat_identity id;
	char reply[32];

	if (g.on_moatd)
		skip(); /* a remote host cannot ask a target for JIT yet */
	o.backend = "proc";
	o.flags = MOAT_LOAD_ALLOW_JIT;
	assert_int_equal(moat_enclave_load(&e, HOSTILE_PATH, &o), 0);
	assert_int_equal(moat_enclave_identity(e, &id), 0);
	assert_false(id.isolation & MOAT_ISOLATION_WXORX);
	assert_true(id.isolation & MOAT_ISOLATION_SECCOMP);
	assert_int_equal(call_str(e, HOSTILE_RWX, NULL, reply, sizeof(reply)), 0);
	assert_string_equal(reply, "got out");
	assert_int_equal(call_str(e, HOSTILE_WX_FLIP, NULL, reply, sizeof(reply)), 0);
	assert_string_equal(reply, "got out");
	/* Everything else stays closed. */
	assert_int_equal(call_str(e, HOSTILE_MEMFD, NULL, NULL, 0), MOAT_ESANDBOX);
	moat_enclave_destroy(e);
	check_nothing_harmed();
}

static void test_no_processes_namespaces_or_other_limits(void **state)
{
	expect_stopped(HOSTILE_CLONE_NS, 0, "clone");
	expect_stopped(HOSTILE_PRLIMIT, 1, "prlimit64");
	expect_stopped(HOSTILE_PRLIMIT, (uint64_t)g.victim, "prlimit64");
	expect_stopped(HOSTILE_RAISE_LIM, 0, "prlimit64");
}

/* Destroy ends the enclave whatever it is doing: a thread it started that never ends, a finalizer that hangs.
 */
static void test_destroy_is_bounded(void **state)
{
	uint64_t fini;

	for (fini = 0; fini < 2; fini++) {
		moat_enclave *e = load_hostile();
		struct timespec t0, t1;

		assert_non_null(e);
		assert_int_equal(call_u64(e, HOSTILE_SPAWN_HANG, fini, NULL), 0);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		moat_enclave_destroy(e);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		/* A bound against hanging forever (5 s per stage), not a speed check. */
		assert_true(t1.tv_sec - t0.tv_sec < 60);
		check_nothing_harmed();
	}
}

typedef struct nester {
	moat_enclave *e;
	unsigned int depth, deepest, stop_at;
	int refused;       /* the first failure's code */
	char message[512]; /* and its message */
} nester;

/* The host's exit handler calls back into the enclave: one more level each time, up to stop_at. */
static int nest_again(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	nester *n = payload;
	int rc;

	if (n->depth >= n->stop_at)
		return 0;
	if (++n->depth > n->deepest)
		n->deepest = n->depth;
	rc = moat_enclave_call(n->e, HOSTILE_NEST, in, out);
	if (rc < 0 && !n->refused) {
		n->refused = rc;
		snprintf(n->message, sizeof(n->message), "%s", moat_error_last()->message);
	}
	n->depth--;
	return rc;
}

/* A host that nests 100,000 deep gets MOAT_ELIMIT naming the limit; the enclave, and everyone else, go on. */
static void test_nesting_has_a_budget(void **state)
{
	nester n = {NULL, 0, 0, 100000, 0, ""};

	n.e = load_hostile();
	assert_non_null(n.e);
	assert_int_equal(moat_enclave_set_exit_handler(n.e, HOSTILE_EXIT_NEST, nest_again, &n), 0);
	assert_true(moat_enclave_call(n.e, HOSTILE_NEST, NULL, NULL) < 0);
	fprintf(stderr, "nesting refused at depth %u: %s\n", n.deepest, n.message);
	assert_int_equal(n.refused, MOAT_ELIMIT);
	assert_non_null(strstr(n.message, "nested more than"));
	assert_true(n.deepest < n.stop_at);
	assert_int_equal(n.depth, 0);
	/* Nothing was lost: the same handle, on the same thread, works, and nests within the budget. */
	assert_int_equal(call_str(n.e, HOSTILE_ECHO, "x", NULL, 0), 0);
	n.stop_at = 500;
	n.deepest = 0;
	n.refused = 0;
	assert_int_equal(moat_enclave_call(n.e, HOSTILE_NEST, NULL, NULL), 0);
	assert_int_equal(n.deepest, 500);
	moat_enclave_destroy(n.e);
	check_nothing_harmed();
}

/* Alone in its PID namespace (it sees itself as PID 2 under an init), as nobody. */
static void test_nothing_to_aim_at(void **state)
{
	moat_enclave *e = load_hostile();
	moat_identity id;
	moat_msg *out = NULL;
	uint64_t pid, ppid, uid, gid;

	assert_non_null(e);
	assert_int_equal(moat_enclave_identity(e, &id), 0);
	assert_true(id.isolation & MOAT_ISOLATION_PIDNS);
	assert_true(id.isolation & MOAT_ISOLATION_USERNS);
	assert_true(id.isolation & MOAT_ISOLATION_WXORX);
	moat_msg_new(&out);
	assert_int_equal(call_u64(e, HOSTILE_WHO, 0, out), 0);
	assert_int_equal(moat_msg_item_u64(out, 0, &pid), 0);
	assert_int_equal(moat_msg_item_u64(out, 1, &ppid), 0);
	assert_int_equal(moat_msg_item_u64(out, 2, &uid), 0);
	assert_int_equal(moat_msg_item_u64(out, 3, &gid), 0);
	assert_int_equal(pid, 2);
	assert_int_equal(ppid, 1);
	assert_int_equal(uid, 65534);
	assert_int_equal(gid, 65534);
	moat_msg_free(out);
	moat_enclave_destroy(e);
	check_nothing_harmed();
}

/* The crash report comes from the kernel's wait status; a note the enclave wrote is labelled as its own. */
static void test_forged_death_notes(void **state)
{
	moat_enclave *e = load_hostile();

	assert_non_null(e);
	assert_int_equal(call_str(e, HOSTILE_FORGE_SEGV, NULL, NULL, 0), MOAT_ECRASHED);
	assert_non_null(strstr(moat_error_last()->message, "SIGSEGV"));
	assert_null(strstr(moat_error_last()->message, "execve"));
	moat_enclave_destroy(e);
	check_nothing_harmed();

	e = load_hostile();
	assert_non_null(e);
	assert_int_equal(call_str(e, HOSTILE_FORGE_SYS, NULL, NULL, 0), MOAT_ESANDBOX);
	assert_non_null(strstr(moat_error_last()->message, "as the enclave's process reported it"));
	moat_enclave_destroy(e);
	check_nothing_harmed();
}

static int setup(void **state)
{
	g.on_moatd = getenv("MOAT_TEST_HOSTILE") && strcmp(getenv("MOAT_TEST_HOSTILE"), "moatd") == 0;
	g.victim = fork();
	if (g.victim < 0)
		return -1;
	if (g.victim == 0) {
		for (;;)
			sleep(60);
	}
	if (!g.on_moatd)
		return 0;
	if (test_moatd_start(&g.moatd, "unix", "--allow-upload", NULL) < 0)
		return -1;
	g.bystander = load_hostile();
	return g.bystander ? 0 : -1;
}

static int teardown(void **state)
{
	moat_enclave_destroy(g.bystander);
	if (g.on_moatd && g.moatd.pid > 0)
		test_moatd_stop(&g.moatd);
	if (g.victim > 0) {
		kill(g.victim, SIGKILL);
		waitpid(g.victim, NULL, 0);
	}
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_no_signal_reaches_out),
	    cmocka_unit_test(test_no_memory_outside_the_limit),
	    cmocka_unit_test(test_thread_limit),
	    cmocka_unit_test(test_no_code_of_its_own),
	    cmocka_unit_test(test_jit_on_request),
	    cmocka_unit_test(test_no_processes_namespaces_or_other_limits),
	    cmocka_unit_test(test_destroy_is_bounded),
	    cmocka_unit_test(test_nesting_has_a_budget),
	    cmocka_unit_test(test_nothing_to_aim_at),
	    cmocka_unit_test(test_forged_death_notes),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
