/*
 * One way to start moatd and wait until it serves, for libmoat (local
 * provisioning), the tests and moat-bench.
 *
 * Readiness is the ready file: moatd writes its bound address to a temporary
 * name and renames it, so a reader sees all of the line or nothing. The
 * launcher polls for it every few milliseconds and watches the process with
 * waitpid, so a moatd that dies at start-up is noticed at once rather than at
 * the time-out.
 *
 * Without a death signal the program is started with posix_spawn, which
 * does not copy the caller's page tables (libmoat may live in a large host).
 * PR_SET_PDEATHSIG has to be set in the child, so with one it is fork and
 * exec, with only async-signal-safe calls in between (the caller may have
 * threads: gRPC's, the test's).
 */
#include "util/launch.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "util/util.h"

extern char **environ;

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* argv with --ready-file FILE after the program path; the caller frees it. */
static char **with_ready_file(const moat_launch_opts *o)
{
	size_t n = 0, i, a = 0;
	char **argv;

	while (o->argv[n])
		n++;
	argv = calloc(n + 3, sizeof(*argv));
	if (!argv)
		return NULL;
	argv[a++] = (char *)o->argv[0];
	argv[a++] = (char *)"--ready-file";
	argv[a++] = (char *)o->ready_file;
	for (i = 1; i < n; i++)
		argv[a++] = (char *)o->argv[i];
	argv[a] = NULL;
	return argv;
}

/* posix_spawn: stdout (and stderr with a log file) redirected, keep_fd inherited. Returns 0 or an errno. */
static int spawn_plain(pid_t *pid, char **argv, const moat_launch_opts *o)
{
	posix_spawn_file_actions_t fa;
	int rc;

	if ((rc = posix_spawn_file_actions_init(&fa)) != 0)
		return rc;
	if (o->log_file) {
		rc = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, o->log_file,
		                                      O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (rc == 0)
			rc = posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
	} else {
		rc = posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	}
	/* dup2 onto itself clears close-on-exec: the program inherits just this one. */
	if (rc == 0 && o->keep_fd >= 0)
		rc = posix_spawn_file_actions_adddup2(&fa, o->keep_fd, o->keep_fd);
	if (rc == 0)
		rc = posix_spawn(pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	return rc;
}

/* In the child after fork: async-signal-safe calls only. Never returns. */
static void child_exec(char **argv, const moat_launch_opts *o, pid_t parent, int err_fd)
{
	int fd, e;

	if (prctl(PR_SET_PDEATHSIG, o->death_signal) < 0 || getppid() != parent)
		_exit(127); /* the parent is already gone: do not outlive it */
	fd =
	    o->log_file ? open(o->log_file, O_WRONLY | O_CREAT | O_TRUNC, 0600) : open("/dev/null", O_WRONLY);
	if (fd >= 0) {
		dup2(fd, STDOUT_FILENO);
		if (o->log_file)
			dup2(fd, STDERR_FILENO);
		if (fd > STDERR_FILENO)
			close(fd);
	}
	if (o->keep_fd >= 0)
		fcntl(o->keep_fd, F_SETFD, 0);
	execv(argv[0], argv);
	e = errno;
	if (write(err_fd, &e, sizeof(e)) < 0)
		_exit(127);
	_exit(127);
}

/*
 * fork and exec with a death signal. A close-on-exec pipe carries exec's
 * errno back, so that a program that cannot be run is reported as such and
 * not as one that died at start-up. Returns 0 or an errno.
 */
static int spawn_fork(pid_t *pid, char **argv, const moat_launch_opts *o)
{
	pid_t parent = getpid(), child;
	int err[2], e = 0, status;
	ssize_t n;

	if (pipe2(err, O_CLOEXEC) < 0)
		return errno;
	child = fork();
	if (child < 0) {
		e = errno;
		close(err[0]);
		close(err[1]);
		return e;
	}
	if (child == 0)
		child_exec(argv, o, parent, err[1]);
	close(err[1]);
	while ((n = read(err[0], &e, sizeof(e))) < 0 && errno == EINTR)
		;
	close(err[0]);
	if (n == (ssize_t)sizeof(e)) {
		while (waitpid(child, &status, 0) < 0 && errno == EINTR)
			;
		return e ? e : ENOEXEC;
	}
	*pid = child;
	return 0;
}

/* 1 when file holds a whole non-empty first line (copied to addr), else 0. */
static int read_ready(const char *file, char *addr, size_t len)
{
	ssize_t n;
	int fd = open(file, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	while ((n = read(fd, addr, len - 1)) < 0 && errno == EINTR)
		;
	close(fd);
	if (n <= 0)
		return 0;
	addr[n] = '\0';
	if (!strchr(addr, '\n'))
		return 0;
	addr[strcspn(addr, "\r\n")] = '\0';
	return addr[0] != '\0';
}

/* Poll the ready file until it names an address, the program exits, or time runs out. */
static int wait_ready(moat_launch *out, const moat_launch_opts *o)
{
	struct timespec t0;
	double ms;
	pid_t r;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		if (read_ready(o->ready_file, out->addr, sizeof(out->addr)))
			return 0;
		r = waitpid(out->pid, &out->status, WNOHANG);
		if (r == out->pid || (r < 0 && errno != EINTR)) {
			/* Exited, or reaped by someone else (SIGCHLD ignored): either way it is gone. */
			out->pid = -1;
			errno = ECHILD;
			return -1;
		}
		ms = moat__ms_since(&t0);
		if (ms >= (double)o->timeout_ms) {
			kill(out->pid, SIGKILL);
			while (waitpid(out->pid, &out->status, 0) < 0 && errno == EINTR)
				;
			out->pid = -1;
			errno = ETIMEDOUT;
			return -1;
		}
		/* Poll finely while a normal start-up is likely, then back off. */
		sleep_ms(ms < 1000 ? 2 : 10);
	}
}

int moat__launch_start(moat_launch *out, const moat_launch_opts *o)
{
	char **argv;
	int rc;

	memset(out, 0, sizeof(*out));
	out->pid = -1;
	if (!o || !o->argv || !o->argv[0] || !o->ready_file) {
		errno = EINVAL;
		return -1;
	}
	/* A ready file left by an earlier run would name a dead address. */
	if (unlink(o->ready_file) < 0 && errno != ENOENT)
		return -1;
	if (!(argv = with_ready_file(o))) {
		errno = ENOMEM;
		return -1;
	}
	rc = o->death_signal ? spawn_fork(&out->pid, argv, o) : spawn_plain(&out->pid, argv, o);
	free(argv);
	if (rc != 0) {
		out->pid = -1;
		errno = rc;
		return -1;
	}
	return wait_ready(out, o);
}

int moat__launch_stop(pid_t pid, unsigned int grace_ms)
{
	struct timespec t0;
	int status = 0;
	pid_t r;

	if (pid <= 0)
		return 0;
	kill(pid, SIGCONT);
	kill(pid, SIGTERM);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		r = waitpid(pid, &status, WNOHANG);
		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return -1;
		if (moat__ms_since(&t0) > (double)grace_ms)
			break;
		sleep_ms(2);
	}
	kill(pid, SIGKILL);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return -1;
}
