/*
 * moat-bench: the moatd instances the remote, concurrency, setup and memory
 * rows talk to (started through util/launch.c, as libmoat and the tests
 * start theirs), and the throwaway TLS material of the grpcs rows (made by
 * the tests' make_certs.sh, so that both use the same certificates).
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"
#include "util/launch.h"

#ifndef MOAT_BENCH_MAKE_CERTS
#define MOAT_BENCH_MAKE_CERTS "make_certs.sh"
#endif

extern char **environ;

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 ? -1 : 0;
}

static void remove_tree(const char *dir)
{
	nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}

/* ---- moatd ---- */

void moatd_stop(bench_moatd *d)
{
	moat__launch_stop(d->pid, 5000);
	d->pid = -1;
	if (d->dir[0]) {
		/* Its ready file, log, identity key and uploaded images: all ours, in our temp dir. */
		remove_tree(d->dir);
		d->dir[0] = '\0';
	}
}

/* Why moatd exited at start: its status and the last line of its log. */
static void start_failed(const char *logpath, int status)
{
	char last[200] = "", line[200];
	FILE *f;

	if ((f = fopen(logpath, "r")) != NULL) {
		while (fgets(line, sizeof(line), f))
			if (line[0] != '\n')
				memcpy(last, line, sizeof(last));
		fclose(f);
	}
	last[strcspn(last, "\n")] = '\0';
	bench_fail("moatd exited at start (status %d): %s", WIFEXITED(status) ? WEXITSTATUS(status) : -1,
	           last);
}

/* moatd's arguments; its TLS files are written to tls_args. Returns argc. */
static int moatd_args(const char **argv, char (*tls_args)[300], const char *exe, const char *state, int tls,
                      const char *backend)
{
	int n = 0;

	argv[n++] = exe;
	argv[n++] = "--listen";
	argv[n++] = "127.0.0.1:0";
	argv[n++] = "--allow-upload";
	argv[n++] = "--max-sessions";
	argv[n++] = "1000";
	argv[n++] = "--state-dir";
	argv[n++] = state;
	if (backend) {
		argv[n++] = "--backend";
		argv[n++] = backend;
	}
	if (tls) {
		snprintf(tls_args[0], sizeof(tls_args[0]), "%s/server.pem", bench_cfg.tls_dir);
		snprintf(tls_args[1], sizeof(tls_args[1]), "%s/server.key", bench_cfg.tls_dir);
		snprintf(tls_args[2], sizeof(tls_args[2]), "%s/ca.pem", bench_cfg.tls_dir);
		argv[n++] = "--tls-cert";
		argv[n++] = tls_args[0];
		argv[n++] = "--tls-key";
		argv[n++] = tls_args[1];
		argv[n++] = "--tls-client-ca";
		argv[n++] = tls_args[2];
	}
	argv[n] = NULL;
	return n;
}

int moatd_start(bench_moatd *d, int tls, const char *backend)
{
	char exe[512], ready[128], state[128], logpath[128], tls_args[3][300];
	const char *argv[20];
	moat_launch_opts o = MOAT_LAUNCH_OPTS_INIT;
	moat_launch l;
	struct stat st;

	memset(d, 0, sizeof(*d));
	d->pid = -1;
	snprintf(exe, sizeof(exe), "%s/moatd", bench_cfg.bindir);
	if (stat(exe, &st) != 0) {
		bench_fail("moatd is not built (%s)", exe);
		return -1;
	}
	if (tls && !bench_cfg.tls_dir[0]) {
		bench_fail("no TLS certificates: %s",
		           bench_cfg.tls_problem ? bench_cfg.tls_problem : "not made");
		return -1;
	}
	snprintf(d->dir, sizeof(d->dir), "/tmp/moat-bench-moatd-XXXXXX");
	if (!mkdtemp(d->dir)) {
		bench_fail("mkdtemp: %s", strerror(errno));
		d->dir[0] = '\0';
		return -1;
	}
	snprintf(ready, sizeof(ready), "%s/ready", d->dir);
	snprintf(state, sizeof(state), "%s/state", d->dir);
	snprintf(logpath, sizeof(logpath), "%s/log", d->dir);
	moatd_args(argv, tls_args, exe, state, tls, backend);
	o.argv = argv;
	o.ready_file = ready;
	/* Its chatter goes to a log in its temp dir; the last line explains a failed start. */
	o.log_file = logpath;
	o.death_signal = SIGTERM; /* dies with us even if we are killed */
	o.timeout_ms = 10000;
	if (moat__launch_start(&l, &o) == 0) {
		d->pid = l.pid;
		snprintf(d->addr, sizeof(d->addr), "%.*s", (int)sizeof(d->addr) - 1, l.addr);
		return 0;
	}
	if (errno == ECHILD)
		start_failed(logpath, l.status);
	else if (errno == ETIMEDOUT)
		bench_fail("moatd did not write %s within 10 s", ready);
	else
		bench_fail("cannot start %s: %s", exe, strerror(errno));
	moatd_stop(d);
	return -1;
}

/* The ready file may hold "HOST:PORT", "grpc://HOST:PORT" or just the port. */
void moatd_uri(const bench_moatd *d, char *uri, size_t len, int tls)
{
	const char *a = d->addr, *sep = strstr(a, "://");

	if (sep)
		a = sep + 3;
	if (strchr(a, ':'))
		snprintf(uri, len, "%s://%s", tls ? "grpcs" : "grpc", a);
	else
		snprintf(uri, len, "%s://127.0.0.1:%s", tls ? "grpcs" : "grpc", a);
}

/* ---- TLS material: the tests' make_certs.sh, in a temporary directory ---- */

/* Run make_certs.sh DIR quietly; 0 when it succeeded. */
static int run_make_certs(const char *dir)
{
	const char *argv[] = {"bash", MOAT_BENCH_MAKE_CERTS, dir, NULL};
	posix_spawn_file_actions_t fa;
	int rc, status = 0;
	pid_t pid;

	if (posix_spawn_file_actions_init(&fa) != 0)
		return -1;
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
	rc = posix_spawnp(&pid, "bash", &fa, NULL, (char *const *)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0)
		return -1;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

void certs_make(void)
{
	char dir[] = "/tmp/moat-bench-tls-XXXXXX";

	if (!mkdtemp(dir)) {
		bench_cfg.tls_problem = "mkdtemp failed";
		return;
	}
	if (run_make_certs(dir) < 0) {
		bench_cfg.tls_problem =
		    "make_certs.sh (the openssl CLI) failed to make throwaway certificates";
		remove_tree(dir);
		return;
	}
	snprintf(bench_cfg.tls_dir, sizeof(bench_cfg.tls_dir), "%s", dir);
}

void certs_remove(void)
{
	if (!bench_cfg.tls_dir[0])
		return;
	remove_tree(bench_cfg.tls_dir);
	bench_cfg.tls_dir[0] = '\0';
}
