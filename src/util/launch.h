/*
 * Start a moatd (or any program that takes --ready-file) and wait until it
 * serves; stop it by pid. Shared by libmoat's local provisioning, the tests
 * and moat-bench. It prints nothing: failures come back as errno values for
 * the caller to report in its own way.
 */
#ifndef MOAT_UTIL_LAUNCH_H
#define MOAT_UTIL_LAUNCH_H

#include <stddef.h>
#include <sys/types.h>

typedef struct moat_launch_opts {
	/* Program path first, then its arguments, NULL-terminated. The launcher adds --ready-file. */
	const char *const *argv;
	/* Where the program writes its address, one line, once it serves (write then rename). */
	const char *ready_file;
	/* NULL: stdout goes to /dev/null and stderr is inherited; else both go to this file (0600). */
	const char *log_file;
	/* -1, or a descriptor the program inherits even though it is close-on-exec here. */
	int keep_fd;
	/*
	 * 0, or a signal the program gets when the thread that started it exits
	 * (PR_SET_PDEATHSIG). Only for callers whose starting thread lives as long
	 * as they do: a test's or a benchmark's main thread, never a library's.
	 */
	int death_signal;
	/* How long to wait for the ready file. */
	unsigned int timeout_ms;
} moat_launch_opts;

#define MOAT_LAUNCH_OPTS_INIT                  \
	{                                      \
		NULL, NULL, NULL, -1, 0, 10000 \
	}

typedef struct moat_launch {
	pid_t pid;      /* the running program; -1 when none */
	int status;     /* wait status when it exited during start-up (errno ECHILD) */
	char addr[300]; /* the ready file's first line, without its newline */
} moat_launch;

/*
 * Start o->argv[0] with o->argv[1...] and --ready-file o->ready_file, and
 * wait until the ready file holds a line. Returns 0 with out->pid running and
 * out->addr set, or -1 with errno: ECHILD (it exited first; out->status has
 * its wait status), ETIMEDOUT (not ready within o->timeout_ms; it was killed
 * and reaped), or why it could not be started (ENOENT, EACCES, EAGAIN, ...).
 * On failure nothing is left running.
 */
int moat__launch_start(moat_launch *out, const moat_launch_opts *o);

/*
 * Stop pid and reap it: SIGCONT (a stopped program cannot exit), SIGTERM,
 * wait up to grace_ms, then SIGKILL. Returns its wait status when it exited
 * within grace_ms, or -1 when it had to be killed or could not be waited for;
 * 0 when pid <= 0 (nothing to stop).
 */
int moat__launch_stop(pid_t pid, unsigned int grace_ms);

#endif
