/*
 * Faults: the target killed or frozen mid-call, the host killed mid-call.
 * Every waiting host call must fail with MOAT_ETRANSPORT (never hang), the
 * handle must stay dead and destroyable, and moatd must reclaim the
 * sessions of a host that vanished.
 */
#include <dirent.h>
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

/* The child half of test_host_killed: load, report, then sit in a long call (mode "spin": one that never
 * ends). */
static int host_child(const char *uri, const char *mode)
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
	if (mode && strcmp(mode, "spin") == 0) {
		moat_enclave_call(e, R_SPIN, in, NULL);
		return 0;
	}
	moat_msg_push_u64(in, 60000);
	moat_enclave_call(e, R_SLOW, in, NULL);
	return 0;
}

/* A host that loaded on uri and sits in a long call (mode: see host_child); returns its pid. */
static pid_t start_host_child_mode(const char *uri, const char *mode)
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
		execl(self_path, self_path, "--host-child", uri, mode, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	assert_true(read(p[0], line, sizeof(line) - 1) > 0);
	close(p[0]);
	assert_non_null(strstr(line, "loaded"));
	return child;
}

static pid_t start_host_child(test_moatd *m)
{
	return start_host_child_mode(m->uri, "slow");
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

/*
 * Start a host child that loads an enclave on "local" in its own TMPDIR (tmp,
 * made here) and runs mode; returns once it is in its call, with the child's
 * pid and its private moatd's.
 */
static void start_local_host(const char *mode, char *tmp, pid_t *child, pid_t *moatd)
{
	char path[96], line[32] = "";
	int p[2], n;
	FILE *f;

	assert_non_null(mkdtemp(tmp));
	assert_int_equal(pipe(p), 0);
	*child = fork();
	assert_true(*child >= 0);
	if (*child == 0) {
		dup2(p[1], STDOUT_FILENO);
		close(p[0]);
		setenv("TMPDIR", tmp, 1);
		execl(self_path, self_path, "--host-child", "local", mode, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	assert_true(read(p[0], line, sizeof(line) - 1) > 0);
	close(p[0]);
	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)*child, (int)*child);
	f = fopen(path, "r");
	assert_non_null(f);
	n = fscanf(f, "%d", moatd);
	fclose(f);
	assert_int_equal(n, 1);
	assert_true(*moatd > 0);
}

/* A host using "local" is killed: its private moatd exits and removes the private directory. */
static void test_local_host_killed(void **state)
{
	char tmp[64] = "/tmp/moat-lk-XXXXXX";
	pid_t child, moatd = 0;
	int i;

	start_local_host("slow", tmp, &child, &moatd);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	for (i = 0; i < 100 && !proc_gone(moatd); i++)
		test_sleep_ms(100);
	assert_true(proc_gone(moatd));
	for (i = 0; i < 50 && rmdir(tmp) != 0; i++)
		test_sleep_ms(100);
	assert_int_equal(access(tmp, F_OK), -1);
}

/* ---- a call the host stopped stops on the target ---- */

/* Live processes below pid (children, their children...): enclave runners below moatd. */
static int descendants(pid_t pid)
{
	char path[128];
	struct dirent *d;
	DIR *tasks;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	tasks = opendir(path);
	if (!tasks)
		return 0;
	while ((d = readdir(tasks)) != NULL) {
		FILE *f;
		int child;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.20s/children", (int)pid, d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fscanf(f, "%d", &child) == 1)
			if (!proc_gone(child))
				n += 1 + descendants(child);
		fclose(f);
	}
	closedir(tasks);
	return n;
}

/* Wait up to ms for moatd to have at most n processes below it (a proc runner is up to three). */
static int runners_at_most(pid_t moatd, int n, long ms)
{
	long i;

	for (i = 0; i <= ms / 50; i++) {
		if (descendants(moatd) <= n)
			return 1;
		test_sleep_ms(50);
	}
	return 0;
}

/* Wait up to ms for moatd's own threads to come down to n (and all its threads to about base_all). */
static int threads_back(pid_t moatd, int n, int base_all, long ms)
{
	long i;

	for (i = 0; i <= ms / 50; i++) {
		if (test_own_threads(moatd) <= n && test_proc_count(moatd, "task") <= base_all + 2)
			return 1;
		test_sleep_ms(50);
	}
	print_message("moatd has %d threads of its own (%d at start), %d in all (%d at start)\n",
	              test_own_threads(moatd), n, test_proc_count(moatd, "task"), base_all);
	return 0;
}

/* moatd's threads once idle, after one session (gRPC starts its own threads on first use). */
static void idle_threads(test_moatd *m, int *own, int *all)
{
	moat_enclave *e = load_on(m->uri, 0);
	moat_msg *in = test_msg();
	int i, n, prev = -1;

	moat_msg_push_u64(in, 1);
	assert_moat_ok(moat_enclave_call(e, R_SLEEP, in, NULL));
	moat_enclave_destroy(e);
	moat_msg_free(in);
	assert_true(runners_at_most(m->pid, 0, 5000));
	/* The session's threads end a moment after destroy returned: wait until the count settles. */
	for (i = 0; i < 40; i++) {
		test_sleep_ms(100);
		n = test_own_threads(m->pid);
		if (n == prev)
			break;
		prev = n;
	}
	*own = prev;
	*all = test_proc_count(m->pid, "task");
}

static double ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t0->tv_sec) * 1e3 + (double)(now.tv_nsec - t0->tv_nsec) / 1e6;
}

/*
 * call_timeout_ms on remote: the target stops the enclave (proc kills its
 * runner) and answers MOAT_ETIMEDOUT; no runner keeps spinning, and after
 * destroy moatd is back to its idle thread count.
 */
static void test_call_timeout_stops_target(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	test_moatd m;
	moat_enclave *e;
	moat_msg *in = test_msg();
	int i, base, base_all;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", NULL), 0);
	idle_threads(&m, &base, &base_all);
	o.backend = m.uri;
	o.call_timeout_ms = 500;
	for (i = 0; i < 3; i++) {
		e = test_load(TEST_ENCLAVE("remote_enclave"), &o);
		assert_true(descendants(m.pid) >= 1); /* the runner (with its keeper and init) */
		assert_int_equal(moat_enclave_call(e, R_SPIN, in, NULL), MOAT_ETIMEDOUT);
		/* Stopped by the target, not given up by the host. */
		assert_non_null(strstr(moat_error_last()->message, "on the target"));
		/* The runner is gone already, before destroy. */
		assert_true(runners_at_most(m.pid, 0, 3000));
		assert_int_equal(moat_enclave_call(e, R_SPIN, in, NULL), MOAT_ETIMEDOUT);
		moat_enclave_destroy(e);
	}
	assert_true(threads_back(m.pid, base, base_all, 5000));
	moat_msg_free(in);
	assert_int_equal(test_moatd_stop(&m), 0);
}

/*
 * A host killed in a call that never ends: moatd reclaims the session after
 * the grace period and stops the enclave then, not when the call ends.
 */
static void test_host_killed_in_endless_call(void **state)
{
	test_moatd m;
	pid_t child;
	int base, base_all;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-sessions", "2",
	                                  "--session-grace-ms", "200", NULL),
	                 0);
	idle_threads(&m, &base, &base_all);
	child = start_host_child_mode(m.uri, "spin");
	test_sleep_ms(300);
	assert_true(descendants(m.pid) >= 1); /* the runner (with its keeper and init) */
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	/* Grace (200 ms) plus a few seconds. */
	assert_true(runners_at_most(m.pid, 0, 4000));
	assert_true(threads_back(m.pid, base, base_all, 5000));
	assert_int_equal(test_moatd_stop(&m), 0);
}

/* moat_enclave_abort on remote: a call blocked on another thread returns MOAT_ECANCELED, the runner goes. */
static void test_abort_remote(void **state)
{
	test_moatd m;
	moat_enclave *e;
	waiter w = {0};
	pthread_t t;
	moat_msg *in = test_msg();
	struct timespec t0;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", NULL), 0);
	e = load_on(m.uri, 0);
	w.e = e;
	w.selector = R_SPIN;
	pthread_create(&t, NULL, wait_main, &w);
	test_sleep_ms(300);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_moat_ok(moat_enclave_abort(e));
	pthread_join(t, NULL);
	assert_true(ms_since(&t0) < 5000.0);
	assert_int_equal(w.rc, MOAT_ECANCELED);
	assert_int_equal(moat_enclave_call(e, R_SPIN, in, NULL), MOAT_ECANCELED);
	assert_true(runners_at_most(m.pid, 0, 3000));
	moat_enclave_destroy(e);
	moat_msg_free(in);
	assert_int_equal(test_moatd_stop(&m), 0);
}

/*
 * Destroy just after the target froze (before keepalive noticed): bounded
 * to a few seconds, not a connection timeout.
 */
static void test_destroy_after_target_stopped(void **state)
{
	test_moatd m;
	moat_enclave *e;
	moat_msg *in = test_msg();
	struct timespec t0;
	double ms;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", NULL), 0);
	e = load_on(m.uri, 0);
	moat_msg_push_u64(in, 1);
	assert_moat_ok(moat_enclave_call(e, R_SLEEP, in, NULL));
	kill(m.pid, SIGSTOP);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	moat_enclave_destroy(e);
	ms = ms_since(&t0);
	kill(m.pid, SIGCONT);
	print_message("destroy with a stopped target took %.0f ms\n", ms);
	assert_true(ms < 8000.0);
	moat_msg_free(in);
	assert_int_equal(test_moatd_stop(&m), 0);
}

/*
 * "local" host killed in a call that never ends: the private moatd stops
 * within a few seconds, its runner with it, and its directory (identity
 * key, images) is removed.
 */
static void test_local_host_killed_in_endless_call(void **state)
{
	char tmp[64] = "/tmp/moat-lk-XXXXXX", path[96];
	pid_t child, moatd = 0, runner = 0;
	FILE *f;
	int i;

	start_local_host("spin", tmp, &child, &moatd);
	/* The runner of the enclave, below moatd. */
	for (i = 0; i < 20 && runner == 0; i++) {
		DIR *tasks;
		struct dirent *d;

		snprintf(path, sizeof(path), "/proc/%d/task", (int)moatd);
		tasks = opendir(path);
		while (tasks && (d = readdir(tasks)) != NULL && runner == 0) {
			if (d->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%d/task/%.20s/children", (int)moatd, d->d_name);
			f = fopen(path, "r");
			if (f) {
				if (fscanf(f, "%d", &runner) != 1)
					runner = 0;
				fclose(f);
			}
		}
		if (tasks)
			closedir(tasks);
		if (runner == 0)
			test_sleep_ms(50);
	}
	assert_true(runner > 0);
	test_sleep_ms(300);
	kill(child, SIGKILL);
	waitpid(child, NULL, 0);
	for (i = 0; i < 50 && !(proc_gone(moatd) && proc_gone(runner)); i++)
		test_sleep_ms(100);
	assert_true(proc_gone(moatd));
	assert_true(proc_gone(runner));
	/* The private directory went with moatd: only our own empty TMPDIR is left. */
	for (i = 0; i < 20 && rmdir(tmp) != 0; i++)
		test_sleep_ms(100);
	assert_int_equal(access(tmp, F_OK), -1);
}

/* A private directory left by a local host that died with its moatd is removed at the next local start. */
static void test_local_removes_stale_dirs(void **state)
{
	char tmp[64] = "/tmp/moat-st-XXXXXX", stale[128], alive[128], key[160], cmd[200];
	const char *old = getenv("TMPDIR");
	char saved[256] = "";
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e;
	pid_t dead;
	FILE *f;

	assert_non_null(mkdtemp(tmp));
	/* A pid that is surely gone: a child that exited and was reaped. */
	dead = fork();
	assert_true(dead >= 0);
	if (dead == 0)
		_exit(0);
	waitpid(dead, NULL, 0);
	snprintf(stale, sizeof(stale), "%s/moat-%d-AbC123", tmp, (int)dead);
	snprintf(alive, sizeof(alive), "%s/moat-%d-AbC123", tmp, (int)getppid());
	assert_int_equal(mkdir(stale, 0700), 0);
	assert_int_equal(mkdir(alive, 0700), 0);
	snprintf(key, sizeof(key), "%s/identity.pem", stale);
	f = fopen(key, "w");
	assert_non_null(f);
	fputs("not a real key\n", f);
	fclose(f);
	if (old)
		snprintf(saved, sizeof(saved), "%s", old);
	setenv("TMPDIR", tmp, 1);
	o.backend = "local";
	e = test_load(TEST_ENCLAVE("remote_enclave"), &o);
	moat_enclave_destroy(e);
	if (old)
		setenv("TMPDIR", saved, 1);
	else
		unsetenv("TMPDIR");
	assert_int_equal(access(stale, F_OK), -1);
	/* The directory of a host that still runs stays. */
	assert_int_equal(access(alive, F_OK), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
	assert_int_equal(system(cmd), 0);
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
	    cmocka_unit_test(test_call_timeout_stops_target),
	    cmocka_unit_test(test_host_killed_in_endless_call),
	    cmocka_unit_test(test_abort_remote),
	    cmocka_unit_test(test_destroy_after_target_stopped),
	    cmocka_unit_test(test_local_host_killed_in_endless_call),
	    cmocka_unit_test(test_local_removes_stale_dirs),
	};
	ssize_t n;

	if (argc >= 3 && strcmp(argv[1], "--host-child") == 0)
		return host_child(argv[2], argc > 3 ? argv[3] : NULL);
	n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
	if (n <= 0)
		return 1;
	self_path[n] = '\0';
	return cmocka_run_group_tests_name("remote_fault", tests, NULL, NULL);
}
