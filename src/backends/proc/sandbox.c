/*
 * The runner's sandbox: new namespaces where the kernel allows, resource
 * limits, no new privileges, not dumpable, and a seccomp allow-list.
 *
 * A system call outside the list traps (SIGSYS) instead of killing the
 * process outright, so the handler can tell the host which call it was
 * before the process dies. The same handler brokers the two calls the
 * dynamic loader makes that the list cannot allow by argument alone:
 * opening "/proc/self/fd/N" (answered with a duplicate of fd N, a file the
 * runner already holds) and fstat through newfstatat(fd, "", AT_EMPTY_PATH).
 * Neither gives the enclave anything it does not already have. A few files
 * glibc reads to tune itself are answered "not found". The image is loaded
 * only after the filter is in place, so no code in it (not even an ELF
 * constructor) runs outside the sandbox.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <termios.h>
#include <ucontext.h>
#include <unistd.h>

#include <seccomp.h>

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

/* Address space limit: generous, it only stops runaway allocation. */
#define SANDBOX_AS_LIMIT ((rlim_t)16 << 30)

static int note_fd = -1;

/* Parse "/proc/self/fd/N"; returns N or -1. Async-signal-safe. */
static int self_fd_path(const char *p)
{
	static const char prefix[] = "/proc/self/fd/";
	size_t i;
	int n = 0;

	for (i = 0; i < sizeof(prefix) - 1; i++)
		if (p[i] != prefix[i])
			return -1;
	p += sizeof(prefix) - 1;
	if (!*p)
		return -1;
	for (; *p; p++) {
		if (*p < '0' || *p > '9' || n > 100000)
			return -1;
		n = n * 10 + (*p - '0');
	}
	return n;
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
	send(note_fd, &note, sizeof(note), MSG_DONTWAIT | MSG_NOSIGNAL);
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

static unsigned int enter_namespaces(int *ns_errno)
{
	unsigned int bits = 0;

	*ns_errno = 0;
	/* A user namespace first: it lets an unprivileged runner make the others. */
	if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET) == 0)
		return MOAT_ISOLATION_USERNS | MOAT_ISOLATION_MOUNTNS | MOAT_ISOLATION_NETNS;
	*ns_errno = errno;
	if (unshare(CLONE_NEWUSER) == 0)
		bits |= MOAT_ISOLATION_USERNS;
	if (unshare(CLONE_NEWNS) == 0)
		bits |= MOAT_ISOLATION_MOUNTNS;
	if (unshare(CLONE_NEWNET) == 0)
		bits |= MOAT_ISOLATION_NETNS;
	return bits;
}

static unsigned int set_limits(void)
{
	struct rlimit none = {0, 0};

	if (setrlimit(RLIMIT_CORE, &none) < 0)
		return 0;
#if !defined(__SANITIZE_ADDRESS__)
	/* AddressSanitizer reserves terabytes of shadow; only plain builds get the limit. */
	{
		struct rlimit as = {SANDBOX_AS_LIMIT, SANDBOX_AS_LIMIT};

		if (setrlimit(RLIMIT_AS, &as) < 0)
			return 0;
	}
#endif
	return MOAT_ISOLATION_RLIMITS;
}

#define ALLOW(name) rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(name), 0)

static int install_filter(void)
{
	scmp_filter_ctx ctx;
	pid_t self = getpid();
	int rc = 0;

	ctx = seccomp_init(SCMP_ACT_TRAP);
	if (!ctx)
		return -ENOMEM;
	/* 32-bit system calls from this 64-bit process are never legitimate. */
	rc |= seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	/* I/O on descriptors the runner already holds: its sockets and the image copy. */
	ALLOW(read);
	ALLOW(write);
	ALLOW(readv);
	ALLOW(writev);
	ALLOW(pread64);
	ALLOW(pwrite64);
	ALLOW(lseek);
	ALLOW(close);
	ALLOW(fstat);
	ALLOW(fcntl);
	ALLOW(dup);
	ALLOW(recvmsg);
	ALLOW(sendmsg);
	ALLOW(recvfrom);
	ALLOW(sendto);
	ALLOW(shutdown);
	ALLOW(poll);
	ALLOW(ppoll);
	ALLOW(memfd_create);
	ALLOW(ftruncate);
	/* stdio asks whether an output is a terminal. */
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, SCMP_A1(SCMP_CMP_EQ, TCGETS));
	/* Memory. */
	ALLOW(mmap);
	ALLOW(munmap);
	ALLOW(mremap);
	ALLOW(mprotect);
	ALLOW(brk);
	ALLOW(madvise);
	/* Threads: only threads of this process, never a new process. */
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
	                       SCMP_A0(SCMP_CMP_MASKED_EQ, CLONE_THREAD, CLONE_THREAD));
	/* clone3 passes its flags in memory the filter cannot read: glibc falls back to clone. */
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	ALLOW(futex);
	ALLOW(set_robust_list);
	ALLOW(rseq);
	ALLOW(sched_yield);
	ALLOW(sched_getaffinity);
	ALLOW(getrandom);
	ALLOW(exit);
	ALLOW(exit_group);
	/* Time. */
	ALLOW(clock_gettime);
	ALLOW(clock_getres);
	ALLOW(gettimeofday);
	ALLOW(time);
	ALLOW(nanosleep);
	ALLOW(clock_nanosleep);
	/* Signals, only to this process (abort() and raise() need them). */
	ALLOW(rt_sigaction);
	ALLOW(rt_sigprocmask);
	ALLOW(rt_sigreturn);
	ALLOW(sigaltstack);
	ALLOW(restart_syscall);
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(tgkill), 1,
	                       SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)self));
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(kill), 1,
	                       SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)self));
	/* Harmless questions about this process. */
	ALLOW(getpid);
	ALLOW(gettid);
	ALLOW(getppid);
	ALLOW(getuid);
	ALLOW(geteuid);
	ALLOW(getgid);
	ALLOW(getegid);
	ALLOW(uname);
	ALLOW(sysinfo);
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prlimit64), 1, SCMP_A2(SCMP_CMP_EQ, 0));
	ALLOW(getrlimit);
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(prctl), 1, SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME));
#if defined(__SANITIZE_ADDRESS__)
	/* The sanitizer runtime looks up its own binary's name when reporting; let that fail quietly. */
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(readlink), 0);
#endif
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	return rc;
}

int moat__runner_sandbox_enter(int fd, unsigned int *isolation, int *ns_errno)
{
	struct sigaction sa;
	int rc;

	note_fd = fd;
	*isolation = MOAT_ISOLATION_PROCESS;
	*isolation |= enter_namespaces(ns_errno);
	*isolation |= set_limits();
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 || prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	memset(&sa, 0, sizeof(sa));
	sa.sa_sigaction = on_sigsys;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSYS, &sa, NULL) < 0)
		return -errno;
	if ((rc = install_filter()) != 0)
		return rc < 0 ? rc : -EINVAL;
	*isolation |= MOAT_ISOLATION_SECCOMP;
	return 0;
}
