/*
 * The runner's seccomp trap handler. A system call outside the allow-list
 * traps (SIGSYS) instead of killing the process outright, so the handler
 * can tell the host which call it was before the process dies. The same
 * handler brokers the calls the dynamic loader makes that the list cannot
 * allow by argument alone: opening "/proc/self/fd/N" (answered with a
 * duplicate of fd N, a file the runner already holds) and fstat through
 * newfstatat(fd, "", AT_EMPTY_PATH). Neither gives the enclave anything it
 * does not already have. A few files glibc reads to tune itself are
 * answered "not found".
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#include "backends/proc/runner.h"

#if defined(__x86_64__)
#define REG_ARG(uc, i)                                 \
	((i) == 0   ? (uc)->uc_mcontext.gregs[REG_RDI] \
	 : (i) == 1 ? (uc)->uc_mcontext.gregs[REG_RSI] \
	 : (i) == 2 ? (uc)->uc_mcontext.gregs[REG_RDX] \
	            : (uc)->uc_mcontext.gregs[REG_R10])
#define REG_RESULT(uc) ((uc)->uc_mcontext.gregs[REG_RAX])
#elif defined(__aarch64__)
#define REG_ARG(uc, i) ((uc)->uc_mcontext.regs[(i)])
#define REG_RESULT(uc) ((uc)->uc_mcontext.regs[0])
#else
#error "the proc backend's sandbox supports x86_64 and aarch64"
#endif

#ifndef SYS_SECCOMP
#define SYS_SECCOMP 1 /* si_code of a seccomp trap */
#endif

static int note_fd = -1;
/* Debug mode: the runner's pid in the host's /proc (the image copy is loaded as /proc/PID/fd/N), or 0. */
static long debug_pid;

/* Parse a decimal number ending at *end (NUL or '/'); returns it or -1. Async-signal-safe. */
static long parse_number(const char **p)
{
	long n = 0;

	if (**p < '0' || **p > '9')
		return -1;
	for (; **p >= '0' && **p <= '9'; (*p)++) {
		if (n > 100000000)
			return -1;
		n = n * 10 + (**p - '0');
	}
	return n;
}

/*
 * Parse "/proc/self/fd/N", or in debug mode "/proc/PID/fd/N" with this
 * runner's own outer pid; returns N or -1. Async-signal-safe.
 */
static int self_fd_path(const char *p)
{
	static const char prefix[] = "/proc/", self[] = "self";
	size_t i;
	long n;

	for (i = 0; i < sizeof(prefix) - 1; i++)
		if (p[i] != prefix[i])
			return -1;
	p += sizeof(prefix) - 1;
	for (i = 0; i < sizeof(self) - 1 && p[i] == self[i]; i++)
		;
	if (i == sizeof(self) - 1)
		p += i;
	else if (!debug_pid || parse_number(&p) != debug_pid)
		return -1;
	if (p[0] != '/' || p[1] != 'f' || p[2] != 'd' || p[3] != '/')
		return -1;
	p += 4;
	n = parse_number(&p);
	return *p || n < 0 || n > 100000 ? -1 : (int)n;
}

/*
 * Files glibc reads on its own to tune itself (CPU count for malloc arenas
 * and sysconf, whether a heap may shrink). Opening them fails with ENOENT,
 * which glibc handles with a default, instead of stopping the enclave.
 */
static const char *const libc_probes[] = {
    "/proc/sys/vm/overcommit_memory",
    "/sys/devices/system/cpu/online",
    "/sys/devices/system/cpu/possible",
    "/sys/devices/system/cpu",
    "/proc/stat",
};

static int same(const char *a, const char *b)
{
	while (*a && *a == *b)
		a++, b++;
	return *a == *b;
}

/* Answer a trapped call that is harmless after all; returns 1 with *res set. */
static int broker(int nr, ucontext_t *uc, long *res)
{
	if (nr == __NR_openat) {
		int dirfd = (int)REG_ARG(uc, 0);
		const char *path = (const char *)REG_ARG(uc, 1);
		int flags = (int)REG_ARG(uc, 2), fd;

		size_t i;

		if (dirfd != AT_FDCWD || !path || (flags & O_ACCMODE) != O_RDONLY ||
		    (flags & (O_CREAT | O_TRUNC | O_TMPFILE)))
			return 0;
		for (i = 0; i < sizeof(libc_probes) / sizeof(libc_probes[0]); i++) {
			if (same(path, libc_probes[i])) {
				*res = -ENOENT;
				return 1;
			}
		}
		if ((fd = self_fd_path(path)) < 0)
			return 0;
		/* A duplicate shares the file offset that a real reopen would not: rewind it. */
		*res = syscall(__NR_fcntl, fd, (flags & O_CLOEXEC) ? F_DUPFD_CLOEXEC : F_DUPFD, 0);
		if (*res < 0)
			*res = -errno;
		else
			syscall(__NR_lseek, (int)*res, 0L, SEEK_SET);
		return 1;
	}
#ifdef __NR_newfstatat
	if (nr == __NR_newfstatat) {
		const char *path = (const char *)REG_ARG(uc, 1);

		if (!path || path[0] != '\0' || !(REG_ARG(uc, 3) & AT_EMPTY_PATH))
			return 0;
		*res = syscall(__NR_fstat, (int)REG_ARG(uc, 0), (void *)REG_ARG(uc, 2));
		if (*res < 0)
			*res = -errno;
		return 1;
	}
#endif
	return 0;
}

/* The argument that holds a path, for the calls that take one; -1 for the others. */
static int path_arg(int nr)
{
	switch (nr) {
#ifdef __NR_open
	case __NR_open:
	case __NR_stat:
	case __NR_lstat:
	case __NR_access:
	case __NR_readlink:
	case __NR_mkdir:
	case __NR_unlink:
	case __NR_creat:
	case __NR_rename:
#endif
	case __NR_execve:
	case __NR_chdir:
	case __NR_truncate: return 0;
	case __NR_openat:
	case __NR_newfstatat:
	case __NR_faccessat:
	case __NR_readlinkat:
	case __NR_mkdirat:
	case __NR_unlinkat:
	case __NR_statx:
	case __NR_execveat:
#ifdef __NR_renameat
	case __NR_renameat:
#endif
	case __NR_openat2: return 1;
	default: return -1;
	}
}

/*
 * Send the forbidden call's path to the host after its note, byte by byte
 * up to a NUL: the kernel copies each byte from the enclave's memory and
 * fails the send cleanly (EFAULT) where that memory is not readable, so a
 * bad pointer cannot fault in this handler. Async-signal-safe.
 */
static void send_path(const char *path)
{
	static const char end = '\0';
	int i;

	for (i = 0; path && i < MOAT_PROC_NOTE_TEXT - 1; i++)
		if (send(note_fd, path + i, 1, MSG_DONTWAIT | MSG_NOSIGNAL) != 1 || path[i] == '\0')
			return;
	send(note_fd, &end, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

static void on_sigsys(int sig, siginfo_t *si, void *ucv)
{
	ucontext_t *uc = ucv;
	moat_proc_note note;
	struct sigaction sa;
	sigset_t set;
	int saved = errno;
	long res;

	if (si->si_code == SYS_SECCOMP && broker(si->si_syscall, uc, &res)) {
		REG_RESULT(uc) = res;
		errno = saved;
		return;
	}
	memset(&note, 0, sizeof(note));
	note.magic = MOAT_PROC_NOTE_MAGIC;
	note.kind = MOAT_PROC_NOTE_SYSCALL;
	note.value = si->si_code == SYS_SECCOMP ? si->si_syscall : -1;
	note.aux = note.value >= 0 && path_arg(note.value) >= 0;
	if (send(note_fd, &note, sizeof(note), MSG_DONTWAIT | MSG_NOSIGNAL) == (ssize_t)sizeof(note) &&
	    note.aux)
		send_path((const char *)REG_ARG(uc, path_arg(note.value)));
	/* Die by SIGSYS so the host sees what stopped the enclave. */
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_DFL;
	sigaction(SIGSYS, &sa, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGSYS);
	pthread_sigmask(SIG_UNBLOCK, &set, NULL);
	raise(SIGSYS);
	_exit(128 + SIGSYS);
}

int moat__runner_trap_init(int fd, long outer_pid)
{
	struct sigaction sa;

	note_fd = fd;
	debug_pid = outer_pid;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsys;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	return sigaction(SIGSYS, &sa, NULL) < 0 ? -errno : 0;
}
