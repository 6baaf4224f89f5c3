/*
 * Test helper: start a real moatd on a free loopback port (or a unix
 * socket), learn its address from --ready-file, stop it by PID and reap it,
 * through util/launch.c (tests that include this link moat_launch).
 * Header-only; include after <cmocka.h>.
 */
#ifndef MOAT_TEST_MOATD_HELPER_H
#define MOAT_TEST_MOATD_HELPER_H

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/launch.h"

typedef struct test_moatd {
	pid_t pid;
	char dir[128];
	char addr[256]; /* host:port */
	char uri[300];  /* grpc://host:port */
} test_moatd;

static inline void test_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/*
 * Start moatd with extra arguments (NULL-terminated). scheme is "grpc" or
 * "grpcs". Returns 0 or -1 when it did not become ready.
 */
static inline int test_moatd_start_v(test_moatd *m, const char *scheme, const char *const *extra)
{
	char ready[200], state[200], listen[200];
	const char *argv[48];
	moat_launch_opts o = MOAT_LAUNCH_OPTS_INIT;
	moat_launch l;
	int a = 0, i;

	memset(m, 0, sizeof(*m));
	snprintf(m->dir, sizeof(m->dir), "/tmp/moat-rtest-XXXXXX");
	if (!mkdtemp(m->dir))
		return -1;
	snprintf(ready, sizeof(ready), "%s/ready", m->dir);
	snprintf(state, sizeof(state), "%s/state", m->dir);
	argv[a++] = MOAT_TEST_BINDIR "/moatd";
	/* scheme "unix": listen on a socket in the private directory instead of loopback TCP. */
	if (strcmp(scheme, "unix") == 0)
		snprintf(listen, sizeof(listen), "unix:%s/moatd.sock", m->dir);
	else
		snprintf(listen, sizeof(listen), "127.0.0.1:0");
	argv[a++] = "--listen";
	argv[a++] = listen;
	argv[a++] = "--state-dir";
	argv[a++] = state;
	argv[a++] = "--log-level";
	argv[a++] = "error";
	for (i = 0; extra && extra[i] && a < 46; i++)
		argv[a++] = extra[i];
	argv[a] = NULL;
	o.argv = argv;
	o.ready_file = ready;
	/*
	 * A failed assertion ends the test without test_moatd_stop(); moatd
	 * must not outlive it, or it keeps the test's stderr open and the
	 * test runner waits for it until its time-out.
	 */
	o.death_signal = SIGKILL;
	o.timeout_ms = 12000;
	if (moat__launch_start(&l, &o) < 0)
		return -1;
	m->pid = l.pid;
	snprintf(m->addr, sizeof(m->addr), "%.*s", (int)sizeof(m->addr) - 1, l.addr);
	if (strcmp(scheme, "unix") == 0)
		snprintf(m->uri, sizeof(m->uri), "%s", m->addr);
	else
		snprintf(m->uri, sizeof(m->uri), "%s://%s", scheme, m->addr);
	return 0;
}

static inline int test_moatd_start(test_moatd *m, const char *scheme, ...)
{
	const char *extra[32];
	va_list ap;
	int n = 0;

	va_start(ap, scheme);
	while (n < 31 && (extra[n] = va_arg(ap, const char *)) != NULL)
		n++;
	va_end(ap);
	extra[n] = NULL;
	return test_moatd_start_v(m, scheme, extra);
}

/* Stop moatd with SIGTERM and return its exit status (-1 if it had to be killed). */
static inline int test_moatd_stop(test_moatd *m)
{
	char cmd[200];
	int status, rc = 0;

	if (m->pid > 0) {
		status = moat__launch_stop(m->pid, 15000);
		rc = status >= 0 && WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		m->pid = 0;
	}
	if (m->dir[0]) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", m->dir);
		if (system(cmd) != 0)
			rc = -1;
		m->dir[0] = '\0';
	}
	return rc;
}

/* Kill moatd with sig and reap it (for fault tests). */
static inline void test_moatd_kill(test_moatd *m, int sig)
{
	kill(m->pid, sig);
	if (sig == SIGKILL) {
		waitpid(m->pid, NULL, 0);
		m->pid = 0;
	}
}

/* Number of entries in /proc/PID/<what> ("fd" or "task"). */
static inline int test_proc_count(pid_t pid, const char *what)
{
	char path[64];
	struct dirent *d;
	DIR *dir;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, what);
	dir = opendir(path);
	if (!dir)
		return -1;
	while ((d = readdir(dir)) != NULL)
		if (d->d_name[0] != '.')
			n++;
	closedir(dir);
	return n;
}

/*
 * moatd's own threads: the main one, one per open call, and the proc
 * backend's; gRPC names its internal threads (executor, timers, event
 * engine), whose number gRPC itself grows and shrinks.
 */
static inline int test_own_threads(pid_t pid)
{
	char path[128], comm[32];
	struct dirent *d;
	DIR *tasks;
	int n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	tasks = opendir(path);
	if (!tasks)
		return -1;
	while ((d = readdir(tasks)) != NULL) {
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.20s/comm", (int)pid, d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f) && strcmp(comm, "moatd\n") == 0)
			n++;
		fclose(f);
	}
	closedir(tasks);
	return n;
}

#endif
