/*
 * Starting runners, for libmoat's proc backend: their files and command
 * line, and the fork. The runner is forked by one long-lived thread of
 * libmoat: PR_SET_PDEATHSIG fires when the thread that forked the child
 * exits, not the process, so forking from whatever thread
 * loads an enclave would kill the runner as soon as that thread ended, which
 * a server's worker threads do.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "backends/proc/proc.h"
#include "core/internal.h"

static pthread_mutex_t spawn_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t spawn_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t spawn_done = PTHREAD_COND_INITIALIZER;
static spawn_req *spawn_queue;
static int spawner_running;
static pthread_once_t spawn_once = PTHREAD_ONCE_INIT;

static void spawn_atfork_prepare(void)
{
	pthread_mutex_lock(&spawn_lock);
}

static void spawn_atfork_parent(void)
{
	pthread_mutex_unlock(&spawn_lock);
}

/* A forked copy of the host has no spawner thread. */
static void spawn_atfork_child(void)
{
	spawner_running = 0;
	spawn_queue = NULL;
	pthread_mutex_unlock(&spawn_lock);
}

static void spawn_init(void)
{
	pthread_atfork(spawn_atfork_prepare, spawn_atfork_parent, spawn_atfork_child);
}

/* In the child between fork and exec: async-signal-safe calls only. */
static void __attribute__((noreturn)) spawn_child(const spawn_req *r)
{
	static char *const envp[] = {NULL};
	moat_proc_note note;

	/* The parent made every fd here 10 or higher, so these never clobber each other. */
	if (dup2(r->ctl_fd, MOAT_PROC_CTL_FD) < 0 || dup2(r->null_fd, 0) < 0 || dup2(r->null_fd, 1) < 0 ||
	    dup2(r->err_fd, 2) < 0)
		_exit(127);
	close_range(MOAT_PROC_CTL_FD + 1, ~0U, 0);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	execve(r->path, r->argv, envp);
	memset(&note, 0, sizeof(note));
	note.magic = MOAT_PROC_NOTE_MAGIC;
	note.kind = MOAT_PROC_NOTE_EXEC_FAILED;
	note.value = errno;
	if (write(MOAT_PROC_CTL_FD, &note, sizeof(note)) < 0)
		_exit(127);
	_exit(127);
}

static void spawn_now(spawn_req *r)
{
	r->pid = fork();
	if (r->pid == 0)
		spawn_child(r);
	r->err = r->pid < 0 ? errno : 0;
}

static void *spawner_main(void *arg)
{
	sigset_t all;

	/* Signals are for the application's threads. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pthread_mutex_lock(&spawn_lock);
	for (;;) {
		spawn_req *r;

		while (!spawn_queue)
			pthread_cond_wait(&spawn_wake, &spawn_lock);
		r = spawn_queue;
		spawn_queue = r->next;
		pthread_mutex_unlock(&spawn_lock);
		spawn_now(r);
		pthread_mutex_lock(&spawn_lock);
		r->done = 1;
		pthread_cond_broadcast(&spawn_done);
	}
	return NULL;
}

void moat__proc_spawn(spawn_req *r)
{
	pthread_once(&spawn_once, spawn_init);
	pthread_mutex_lock(&spawn_lock);
	if (!spawner_running) {
		pthread_attr_t attr;
		pthread_t t;

		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		spawner_running = pthread_create(&t, &attr, spawner_main, NULL) == 0;
		pthread_attr_destroy(&attr);
	}
	if (!spawner_running) {
		/* No thread to spare: fork here, the runner then lives as long as this thread. */
		pthread_mutex_unlock(&spawn_lock);
		spawn_now(r);
		return;
	}
	r->next = spawn_queue;
	spawn_queue = r;
	pthread_cond_signal(&spawn_wake);
	while (!r->done)
		pthread_cond_wait(&spawn_done, &spawn_lock);
	pthread_mutex_unlock(&spawn_lock);
}

/* Duplicate fd to a number of 10 or more (close-on-exec) and close the original. */
static int fd_high(int fd)
{
	int hi;

	if (fd < 0 || fd >= 10)
		return fd;
	hi = fcntl(fd, F_DUPFD_CLOEXEC, 10);
	close(fd);
	return hi;
}

int moat__proc_start_runner(const char *runner, unsigned int flags, char *const *needed, size_t n_needed,
                            int *ctl, pid_t *pid)
{
	char pid_arg[32];
	char *argv[9 + 2 * MOAT_PROC_MAX_NEEDED] = {(char *)runner, "--moat-proc", MOAT_PROC_PROTOCOL,
	                                            "--parent", pid_arg};
	spawn_req r;
	int sv[2] = {-1, -1}, null_fd, err_fd, rc = 0, a = 5;
	size_t i;

	if (flags & MOAT_LOAD_ALLOW_JIT)
		argv[a++] = "--jit";
	if (flags & MOAT_LOAD_DEBUG)
		argv[a++] = "--debug";
	if (flags & MOAT_LOAD_FOR_REMOTE_HOST)
		argv[a++] = "--remote";
	for (i = 0; i < n_needed && i < MOAT_PROC_MAX_NEEDED; i++) {
		argv[a++] = "--needed";
		argv[a++] = needed[i];
	}
	argv[a] = NULL;
	snprintf(pid_arg, sizeof(pid_arg), "%ld", (long)getpid());
	null_fd = fd_high(open("/dev/null", O_RDWR | O_CLOEXEC));
	/*
	 * The runner's stderr is the host's, reopened write-only and appending:
	 * a terminal opened read-write must not become readable by the enclave.
	 */
	err_fd = fd_high(open("/proc/self/fd/2", O_WRONLY | O_APPEND | O_CLOEXEC | O_NOCTTY));
	if (err_fd < 0)
		err_fd = fd_high(fcntl(null_fd, F_DUPFD_CLOEXEC, 10));
	if (null_fd < 0 || err_fd < 0 || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		rc = moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		                    "proc: cannot set up the runner's files: %s", strerror(errno));
		goto out;
	}
	*ctl = sv[0];
	sv[1] = fd_high(sv[1]);
	memset(&r, 0, sizeof(r));
	r.path = runner;
	r.argv = argv;
	r.ctl_fd = sv[1];
	r.null_fd = null_fd;
	r.err_fd = err_fd;
	moat__proc_spawn(&r);
	if (r.pid < 0)
		rc =
		    moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT, "proc: fork: %s", strerror(r.err));
	else
		*pid = r.pid;
out:
	if (sv[1] >= 0)
		close(sv[1]);
	if (null_fd >= 0)
		close(null_fd);
	if (err_fd >= 0)
		close(err_fd);
	return rc;
}
