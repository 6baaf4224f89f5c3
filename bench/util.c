/* moat-bench: clock, error note, and helper processes. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "util/launch.h"

char bench_error[256];

void bench_fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(bench_error, sizeof(bench_error), fmt, ap);
	va_end(ap);
}

uint64_t bench_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * Fork and exec /proc/self/exe --helper ARGS... with stdout on a pipe and
 * read the helper's first line (its address, or "ready"). Only exec-safe
 * calls run between fork and exec because gRPC threads may exist.
 */
int bench_spawn_helper(pid_t *pid, char *line, size_t line_len, const char *const *args, int keep_fd)
{
	char *argv[16];
	int fds[2], n = 0, i;
	size_t got = 0;
	pid_t child;

	*pid = -1;
	argv[n++] = (char *)"moat-bench";
	argv[n++] = (char *)"--helper";
	for (i = 0; args[i] && n < 15; i++)
		argv[n++] = (char *)args[i];
	argv[n] = NULL;
	if (pipe2(fds, O_CLOEXEC) < 0) {
		bench_fail("pipe: %s", strerror(errno));
		return -1;
	}
	child = fork();
	if (child < 0) {
		bench_fail("fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (child == 0) {
		/* Die with us even if we are killed before we can reap the helper. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		dup2(fds[1], STDOUT_FILENO);
		if (keep_fd >= 0)
			fcntl(keep_fd, F_SETFD, 0);
		execv("/proc/self/exe", argv);
		_exit(127);
	}
	close(fds[1]);
	while (got + 1 < line_len) {
		ssize_t r = read(fds[0], line + got, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || line[got] == '\n')
			break;
		got++;
	}
	line[got] = '\0';
	close(fds[0]);
	*pid = child;
	if (got == 0) {
		bench_fail("helper %s did not start", args[0]);
		bench_reap(child);
		*pid = -1;
		return -1;
	}
	return 0;
}

/* Stop a helper we started: SIGTERM, wait up to 5 s, then SIGKILL (as every moatd we start). */
void bench_reap(pid_t pid)
{
	moat__launch_stop(pid, 5000);
}
