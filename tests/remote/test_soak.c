/*
 * Soak: N host processes x M threads against one moatd for a fixed time,
 * with random faults: hosts killed, calls stopped with moat_enclave_abort,
 * enclaves crashing, oversized messages. Afterwards moatd's threads, file
 * descriptors, children and memory are back to where they were, and every
 * healthy call's result was right.
 *
 * Label `soak`, not part of the default run: `ctest -L soak` (or run the
 * binary). MOAT_SOAK_SECONDS (default 30), MOAT_SOAK_HOSTS (4) and
 * MOAT_SOAK_THREADS (4) size it.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "moatd_helper.h"
#include "../proc/probe.h"

#define PROBE_PATH    MOAT_TEST_ENCLAVES "/proc_probe_enclave.so"
#define MAX_MESSAGE   (256 * 1024)
#define MAX_HOSTS     32
#define MAX_THREADS   32
#define SETTLE_MS     15000
#define RSS_GROWTH_KB (64 * 1024)
#define GRPC_THREADS  8

static unsigned int env_uint(const char *name, unsigned int def, unsigned int max)
{
	const char *v = getenv(name);
	unsigned long n = v ? strtoul(v, NULL, 10) : 0;

	return n > 0 && n <= max ? (unsigned int)n : def;
}

/* ---- a host process ---- */

typedef struct worker {
	const char *uri;
	unsigned int seed;
	time_t until;
	unsigned int calls, faults, wrong;
	char first[256]; /* what went wrong first */
} worker;

/* Count a wrong result; keep the first one's story. */
static void wrong(worker *w, const char *what)
{
	if (!w->wrong++)
		snprintf(w->first, sizeof(w->first), "%s: %s", what, moat_error_last()->message);
}

typedef struct hanger {
	moat_enclave *e;
	int rc;
} hanger;

static void *hang_main(void *arg)
{
	hanger *h = arg;

	h->rc = moat_enclave_call(h->e, PROBE_HANG, NULL, NULL);
	return NULL;
}

static moat_enclave *load(const char *uri)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;

	o.backend = uri;
	return moat_enclave_load(&e, PROBE_PATH, &o) == 0 ? e : NULL;
}

/* An echo of random bytes must come back unchanged. */
static int echo_ok(moat_enclave *e, unsigned int *seed, size_t len)
{
	static _Thread_local uint8_t buf[8192];
	moat_msg *in = NULL, *out = NULL;
	const void *d;
	size_t i, got;
	int ok;

	for (i = 0; i < len; i++)
		buf[i] = (uint8_t)rand_r(seed);
	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push(in, buf, len);
	ok = moat_enclave_call(e, PROBE_ECHO, in, out) == 0 && moat_msg_item(out, 0, &d, &got) == 0 &&
	     got == len && memcmp(d, buf, len) == 0;
	moat_msg_free(in);
	moat_msg_free(out);
	return ok;
}

/* One fault on e; returns 1 when e is still usable afterwards, and counts what went wrong. */
static int fault(worker *w, moat_enclave *e)
{
	unsigned int kind = (unsigned int)rand_r(&w->seed) % 3;

	w->faults++;
	if (kind == 0) {
		/* Too large for the target: refused, the handle goes on. */
		moat_msg *in = NULL;
		uint8_t *big = calloc(1, 2 * MAX_MESSAGE);
		int rc;

		moat_msg_new(&in);
		moat_msg_push(in, big, 2 * MAX_MESSAGE);
		rc = moat_enclave_call(e, PROBE_ECHO, in, NULL);
		moat_msg_free(in);
		free(big);
		if (rc != MOAT_ELIMIT)
			wrong(w, "oversized message");
		return 1;
	}
	if (kind == 1) {
		if (moat_enclave_call(e, PROBE_SEGV, NULL, NULL) != MOAT_ECRASHED)
			wrong(w, "crash");
		return 0;
	}
	{
		/* A call that never ends, stopped from another thread. */
		hanger h = {e, 0};
		pthread_t t;
		struct timespec ms = {0, 50 * 1000 * 1000};

		if (pthread_create(&t, NULL, hang_main, &h) != 0)
			return 0;
		nanosleep(&ms, NULL);
		moat_enclave_abort(e);
		pthread_join(t, NULL);
		if (h.rc != MOAT_ECANCELED)
			wrong(w, "abort");
		return 0;
	}
}

static void *worker_main(void *arg)
{
	worker *w = arg;

	while (time(NULL) < w->until) {
		moat_enclave *e = load(w->uri);
		int usable = e != NULL, i;

		if (!e) {
			wrong(w, "load");
			continue;
		}
		for (i = 0; i < 50 && usable && time(NULL) < w->until; i++) {
			if (rand_r(&w->seed) % 20 == 0) {
				usable = fault(w, e);
				continue;
			}
			w->calls++;
			if (!echo_ok(e, &w->seed, 1 + (size_t)rand_r(&w->seed) % 8192))
				wrong(w, "echo");
		}
		moat_enclave_destroy(e);
	}
	return NULL;
}

/* A host: M threads until the deadline; exits with the number of wrong results (at most 255). */
static void __attribute__((noreturn))
host_main(const char *uri, unsigned int threads, unsigned int seed, time_t until)
{
	worker w[MAX_THREADS];
	pthread_t t[MAX_THREADS];
	unsigned int i, wrong = 0;

	prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* The test framework's handlers would hide how a host crashed: die by the signal (or ASan's report).
	 */
#if !defined(__SANITIZE_ADDRESS__)
	signal(SIGSEGV, SIG_DFL);
#endif
	signal(SIGABRT, SIG_DFL);
	signal(SIGBUS, SIG_DFL);
	signal(SIGILL, SIG_DFL);
	signal(SIGFPE, SIG_DFL);
	for (i = 0; i < threads; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].uri = uri;
		w[i].seed = seed * 7919u + i;
		w[i].until = until;
		pthread_create(&t[i], NULL, worker_main, &w[i]);
	}
	for (i = 0; i < threads; i++) {
		pthread_join(t[i], NULL);
		wrong += w[i].wrong;
		if (w[i].wrong)
			fprintf(stderr,
			        "soak host %d thread %u: %u wrong of %u calls, %u faults; first: %s\n",
			        (int)getpid(), i, w[i].wrong, w[i].calls, w[i].faults, w[i].first);
	}
	_exit(wrong > 255 ? 255 : (int)wrong);
}

/* ---- moatd's resources ---- */

typedef struct usage {
	int threads, own, fds, children; /* own: moatd's threads, not gRPC's (named "moatd") */
	long rss_kb;
} usage;

static long rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static int children_of(pid_t pid)
{
	char path[96];
	FILE *f;
	int n = 0, child;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/children", (int)pid, (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fscanf(f, "%d", &child) == 1)
		n++;
	fclose(f);
	return n;
}

static usage measure(pid_t pid)
{
	usage u;

	u.threads = test_proc_count(pid, "task");
	u.own = test_own_threads(pid);
	u.fds = test_proc_count(pid, "fd");
	u.children = children_of(pid);
	u.rss_kb = rss_kb(pid);
	return u;
}

/* moatd's threads by name, for the report when they did not come back. */
static void print_threads(pid_t pid)
{
	char path[128], comm[32];
	struct dirent *d;
	DIR *dir;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((d = readdir(dir)) != NULL) {
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.20s/comm", (int)pid, d->d_name);
		f = fopen(path, "r");
		if (f && fgets(comm, sizeof(comm), f))
			print_message("soak: moatd thread %s: %s", d->d_name, comm);
		if (f)
			fclose(f);
	}
	closedir(dir);
}

static int settled(const usage *now, const usage *base)
{
	/*
	 * moatd's own threads come back exactly. gRPC keeps a few threads of its
	 * own (executor, timers) that it starts under load and keeps idle, up to
	 * a bound of its own: allow those.
	 */
	return now->own == base->own && now->threads <= base->threads + GRPC_THREADS &&
	       now->fds <= base->fds + 2 && now->children == 0 && now->rss_kb <= base->rss_kb + RSS_GROWTH_KB;
}

static void test_soak(void **state)
{
	unsigned int seconds = env_uint("MOAT_SOAK_SECONDS", 30, 3600);
	unsigned int hosts = env_uint("MOAT_SOAK_HOSTS", 4, MAX_HOSTS);
	unsigned int threads = env_uint("MOAT_SOAK_THREADS", 4, MAX_THREADS);
	char maxmsg[32];
	pid_t pid[MAX_HOSTS];
	unsigned int i, killed = 0, seed = (unsigned int)time(NULL), bad = 0;
	time_t until;
	test_moatd m;
	usage base, now;
	pid_t warm_pid;
	int tries, warm_status;

	snprintf(maxmsg, sizeof(maxmsg), "%d", MAX_MESSAGE);
	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-sessions", "256",
	                                  "--max-message-bytes", maxmsg, "--session-grace-ms", "500", NULL),
	                 0);
	/*
	 * The baseline after one session (gRPC starts moatd's threads on first
	 * use), made by a child: gRPC is not fork-safe, so this process must not
	 * use it before it forks the hosts.
	 */
	warm_pid = fork();
	assert_true(warm_pid >= 0);
	if (warm_pid == 0) {
		moat_enclave *warm = load(m.uri);

		moat_enclave_destroy(warm);
		_exit(warm ? 0 : 1);
	}
	assert_int_equal(waitpid(warm_pid, &warm_status, 0), warm_pid);
	assert_true(WIFEXITED(warm_status) && WEXITSTATUS(warm_status) == 0);
	test_sleep_ms(1000);
	base = measure(m.pid);
	print_message("soak: %u s, %u hosts x %u threads; moatd at start: %d threads, %d fds, %ld kB\n",
	              seconds, hosts, threads, base.threads, base.fds, base.rss_kb);

	until = time(NULL) + seconds;
	for (i = 0; i < hosts; i++) {
		pid[i] = fork();
		assert_true(pid[i] >= 0);
		if (pid[i] == 0)
			host_main(m.uri, threads, seed + i, until);
	}
	/* Kill a host now and then (mid-call, most likely) and start another in its place. */
	while (time(NULL) + 2 < until) {
		unsigned int k = (unsigned int)rand_r(&seed) % hosts;

		test_sleep_ms(1000 + rand_r(&seed) % 1000);
		kill(pid[k], SIGKILL);
		waitpid(pid[k], NULL, 0);
		killed++;
		pid[k] = fork();
		assert_true(pid[k] >= 0);
		if (pid[k] == 0)
			host_main(m.uri, threads, seed + 1000 + killed, until);
	}
	for (i = 0; i < hosts; i++) {
		int status = 0;

		for (tries = 0; tries < 600 && waitpid(pid[i], &status, WNOHANG) == 0; tries++)
			test_sleep_ms(100);
		if (tries == 600) {
			kill(pid[i], SIGKILL);
			waitpid(pid[i], &status, 0);
		}
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
			print_message("soak: host %d ended with %s %d\n", (int)pid[i],
			              WIFEXITED(status) ? "status" : "signal",
			              WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
			bad++;
		}
	}
	/* moatd reclaims the killed hosts' sessions after the grace period, then is back to its baseline. */
	for (tries = 0; tries < SETTLE_MS / 100; tries++) {
		now = measure(m.pid);
		if (settled(&now, &base))
			break;
		test_sleep_ms(100);
	}
	print_message(
	    "soak: %u hosts killed, %u hosts with wrong results; moatd after: %d threads (%d its own, %d at "
	    "start), %d fds, %d children, %ld kB\n",
	    killed, bad, now.threads, now.own, base.own, now.fds, now.children, now.rss_kb);
	if (!settled(&now, &base))
		print_threads(m.pid);
	assert_int_equal(bad, 0);
	assert_true(settled(&now, &base));
	assert_int_equal(test_moatd_stop(&m), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_soak),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
