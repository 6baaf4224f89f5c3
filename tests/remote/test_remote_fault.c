/*
 * Faults: the target killed or frozen mid-call, the host killed mid-call.
 * Every waiting host call must fail with MOAT_ETRANSPORT (never hang), the
 * handle must stay dead and destroyable, and moatd must reclaim the
 * sessions of a host that vanished.
 */
#include <pthread.h>
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

static char self_path[512];

static moat_enclave *load_on(const char *uri, unsigned int keepalive_ms)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;

	o.backend = uri;
	o.keepalive_ms = keepalive_ms;
	return test_load(TEST_ENCLAVE("remote_enclave"), &o);
}

typedef struct waiter {
	moat_enclave *e;
	uint64_t selector, ms;
	int rc;
	moat_origin origin;
} waiter;

static void *wait_main(void *arg)
{
	waiter *w = arg;
	moat_msg *in = NULL;

	moat_msg_new(&in);
	moat_msg_push_u64(in, w->ms);
	w->rc = moat_enclave_call(w->e, w->selector, in, NULL);
	w->origin = moat_error_last()->origin;
	moat_msg_free(in);
	return NULL;
}

/* Start n threads in a long call, wait until they are inside, apply the fault, check they all fail. */
static void fault_mid_call(int sig, uint64_t selector)
{
	test_moatd m;
	moat_enclave *e;
	waiter w[3];
	pthread_t t[3];
	moat_msg *in = test_msg();
	int i;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", NULL), 0);
	e = load_on(m.uri, 500);
	for (i = 0; i < 3; i++) {
		w[i].e = e;
		w[i].selector = selector;
		w[i].ms = 8000;
		pthread_create(&t[i], NULL, wait_main, &w[i]);
	}
	test_sleep_ms(500);
	test_moatd_kill(&m, sig);
	for (i = 0; i < 3; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(w[i].rc, MOAT_ETRANSPORT);
		assert_int_equal(w[i].origin, MOAT_ORIGIN_TRANSPORT);
	}
	/* Dead from now on: later calls fail at once with the same code. */
	moat_msg_push_u64(in, 1);
	assert_int_equal(moat_enclave_call(e, R_SLEEP, in, NULL), MOAT_ETRANSPORT);
	moat_enclave_destroy(e);
	moat_msg_free(in);
	test_moatd_stop(&m);
}

static void test_target_killed_mid_call(void **state)
{
	fault_mid_call(SIGKILL, R_SLEEP);
}

static void test_target_killed_during_exit_calls(void **state)
{
	fault_mid_call(SIGKILL, R_SLOW);
}

static void test_target_stopped_mid_call(void **state)
{
	/* SIGSTOP keeps the TCP connection up: only keepalive can tell. */
	fault_mid_call(SIGSTOP, R_SLEEP);
}

/*
 * SIGTERM while an enclave call never returns (sim inside moatd: nothing can
 * kill the call): moatd still exits, after --shutdown-timeout, and the
 * waiting host call fails instead of hanging.
 */
static void test_target_stop_with_stuck_call(void **state)
{
	test_moatd m;
	moat_enclave *e;
	waiter w = {0};
	pthread_t t;
	int i, status = 0, exited = 0;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--backend", "sim",
	                                  "--shutdown-timeout", "1", NULL),
	                 0);
	e = load_on(m.uri, 500);
	w.e = e;
	w.selector = R_SLEEP;
	w.ms = 3600 * 1000;
	pthread_create(&t, NULL, wait_main, &w);
	test_sleep_ms(500);
	kill(m.pid, SIGTERM);
	for (i = 0; i < 1500 && !exited; i++) {
		if (waitpid(m.pid, &status, WNOHANG) == m.pid)
			exited = 1;
		else
			test_sleep_ms(10);
	}
	if (!exited)
		test_moatd_kill(&m, SIGKILL);
	else
		m.pid = 0;
	assert_true(exited);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
	pthread_join(t, NULL);
	assert_int_equal(w.rc, MOAT_ETRANSPORT);
	moat_enclave_destroy(e);
	test_moatd_stop(&m);
}

/* An idle handle notices a dead target too (the lease stream), and fails fast. */
static void test_target_killed_while_idle(void **state)
{
	test_moatd m;
	moat_enclave *e;
	moat_msg *in = test_msg();

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", NULL), 0);
	e = load_on(m.uri, 0);
	moat_msg_push_u64(in, 1);
	assert_moat_ok(moat_enclave_call(e, R_SLEEP, in, NULL));
	test_moatd_kill(&m, SIGKILL);
	assert_int_equal(moat_enclave_call(e, R_SLEEP, in, NULL), MOAT_ETRANSPORT);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_TRANSPORT);
	moat_enclave_destroy(e);
	moat_msg_free(in);
	test_moatd_stop(&m);
}

/* The child half of test_host_killed: load, report, then sit in a long call. */
static int host_child(const char *uri)
{
	moat_enclave *e = NULL;
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_msg *in = NULL;

	o.backend = uri;
	if (moat_enclave_load(&e, TEST_ENCLAVE("remote_enclave"), &o) < 0) {
		fprintf(stderr, "host child: %s\n", moat_error_last()->message);
		return 1;
	}
	printf("loaded\n");
	fflush(stdout);
	moat_msg_new(&in);
	moat_msg_push_u64(in, 60000);
	moat_enclave_call(e, R_SLOW, in, NULL);
	return 0;
}

/* A host that loaded on m and sits in a long call; returns its pid. */
static pid_t start_host_child(test_moatd *m)
{
	char line[32] = "";
	int p[2];
	pid_t child;

	assert_int_equal(pipe(p), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		dup2(p[1], STDOUT_FILENO);
		close(p[0]);
		execl(self_path, self_path, "--host-child", m->uri, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	assert_true(read(p[0], line, sizeof(line) - 1) > 0);
	close(p[0]);
	assert_non_null(strstr(line, "loaded"));
	return child;
}

/* Wait until the only session slot of m is free again, i.e. moatd reclaimed the host's session. */
static void assert_reclaimed(test_moatd *m, int tries)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;
	int i, rc = -1;

	o.backend = m->uri;
	for (i = 0; i < tries; i++) {
		rc = moat_enclave_load(&e, TEST_ENCLAVE("remote_enclave"), &o);
		if (rc == 0)
			break;
		assert_int_equal(rc, MOAT_ELIMIT);
		test_sleep_ms(100);
	}
	assert_int_equal(rc, 0);
	moat_enclave_destroy(e);
}

static void test_host_killed(void **state)
{
	test_moatd m;
	moat_enclave *e = NULL;
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	pid_t child;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-sessions", "1",
	                                  "--session-grace-ms", "200", NULL),
	                 0);
	child = start_host_child(&m);
	test_sleep_ms(300);
	/* The only session slot is taken. */
	o.backend = m.uri;
	assert_int_equal(moat_enclave_load(&e, TEST_ENCLAVE("remote_enclave"), &o), MOAT_ELIMIT);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	/* moatd reclaims the vanished host's session after the grace period. */
	assert_reclaimed(&m, 100);
	assert_int_equal(test_moatd_stop(&m), 0);
}

/* A frozen host keeps its TCP connection: moatd's own keepalive finds it, then reclaims the session. */
static void test_host_frozen(void **state)
{
	test_moatd m;
	pid_t child;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-sessions", "1",
	                                  "--session-grace-ms", "200", NULL),
	                 0);
	child = start_host_child(&m);
	kill(child, SIGSTOP);
	assert_reclaimed(&m, 300);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	assert_int_equal(test_moatd_stop(&m), 0);
}

static int proc_gone(pid_t pid)
{
	char path[64], state = 0;
	FILE *f;
	int gone;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return 1;
	/* A zombie waiting for init to reap it is gone too. */
	gone = fscanf(f, "%*d %*s %c", &state) == 1 && (state == 'Z' || state == 'X');
	fclose(f);
	return gone;
}

/* A host using "local" is killed: its private moatd exits and removes the private directory. */
static void test_local_host_killed(void **state)
{
	char tmp[64] = "/tmp/moat-lk-XXXXXX", path[96], line[32] = "";
	int p[2], i, n = 0;
	pid_t child, moatd = 0;
	FILE *f;

	assert_non_null(mkdtemp(tmp));
	assert_int_equal(pipe(p), 0);
	child = fork();
	assert_true(child >= 0);
	if (child == 0) {
		dup2(p[1], STDOUT_FILENO);
		close(p[0]);
		setenv("TMPDIR", tmp, 1);
		execl(self_path, self_path, "--host-child", "local", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	assert_true(read(p[0], line, sizeof(line) - 1) > 0);
	close(p[0]);
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)child, (int)child);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fscanf(f, "%d", &moatd);
	fclose(f);
	assert_int_equal(n, 1);
	assert_true(moatd > 0);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	for (i = 0; i < 100 && !proc_gone(moatd); i++)
		test_sleep_ms(100);
	assert_true(proc_gone(moatd));
	for (i = 0; i < 50 && rmdir(tmp) != 0; i++)
		test_sleep_ms(100);
	assert_int_equal(access(tmp, F_OK), -1);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_target_killed_mid_call),
	    cmocka_unit_test(test_target_killed_during_exit_calls),
	    cmocka_unit_test(test_target_stopped_mid_call),
	    cmocka_unit_test(test_target_killed_while_idle),
	    cmocka_unit_test(test_target_stop_with_stuck_call),
	    cmocka_unit_test(test_host_killed),
	    cmocka_unit_test(test_host_frozen),
	    cmocka_unit_test(test_local_host_killed),
	};
	ssize_t n;

	if (argc == 3 && strcmp(argv[1], "--host-child") == 0)
		return host_child(argv[2]);
	n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
	if (n <= 0)
		return 1;
	self_path[n] = '\0';
	return cmocka_run_group_tests_name("remote_fault", tests, NULL, NULL);
}
