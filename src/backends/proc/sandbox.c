/*
 * The runner's sandbox: its own user, PID, IPC, UTS, mount and network
 * namespaces where the kernel allows, an unprivileged identity, resource
 * limits, no capabilities, no new privileges, not dumpable (but in debug
 * mode, for a debugger to attach), and a seccomp allow-list that checks
 * arguments where a call could reach outside.
 *
 * In its own PID namespace the runner cannot be PID 1: the kernel drops the
 * signals PID 1 sends itself, so abort() or a trapped system call would not
 * end it. So the process libmoat started (the keeper) makes the namespaces
 * and forks a small init (PID 1), which forks the runner (PID 2) and passes
 * its wait status back to the keeper, which ends the same way. The host thus
 * learns how the enclave ended from the kernel, through processes the
 * enclave cannot reach, never from what the enclave could have written.
 *
 * A system call outside the list traps (SIGSYS): trap.c's handler reports
 * it to the host, or answers the few the loader makes that the list cannot
 * decide by argument alone. The image is loaded only after the filter is in
 * place, so no code in it (not even an ELF constructor) runs outside the
 * sandbox.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <ucontext.h>
#include <unistd.h>

#include <seccomp.h>

#include "backends/proc/runner.h"

/* Address space limit: generous, it only stops runaway allocation. */
#define SANDBOX_AS_LIMIT ((rlim_t)16 << 30)
/*
 * Most tasks (threads) in the runner's user namespace: the keeper, init, and
 * the runner's threads (one per host thread's channel, plus the enclave's own).
 */
#define SANDBOX_MAX_TASKS ((rlim_t)MOAT_PROC_MAX_TASKS)
/* The id a runner started by root takes before anything else: nobody. */
#define SANDBOX_NOBODY ((uid_t)65534)
/* The exact clone() flags of a thread as glibc's pthread_create makes it. */
#define THREAD_FLAGS                                                                                       \
	(CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SYSVSEM | CLONE_SIGHAND | CLONE_THREAD | CLONE_SETTLS | \
	 CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID)

/* Write one short string to a /proc file. */
static int write_proc(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -1;
	n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

/*
 * A new user namespace in which this process is nobody, mapped to its
 * current ids outside: it can name no other id, and what it may do outside
 * is what those ids may do. Returns MOAT_ISOLATION_USERNS or 0.
 */
static unsigned int enter_userns(int *ns_errno)
{
	char map[64];
	uid_t uid = geteuid();
	gid_t gid = getegid();

	if (unshare(CLONE_NEWUSER) < 0) {
		*ns_errno = errno;
		return 0;
	}
	snprintf(map, sizeof(map), "%u %u 1", (unsigned)SANDBOX_NOBODY, (unsigned)gid);
	if (write_proc("/proc/self/setgroups", "deny") < 0 || write_proc("/proc/self/gid_map", map) < 0)
		goto fail;
	snprintf(map, sizeof(map), "%u %u 1", (unsigned)SANDBOX_NOBODY, (unsigned)uid);
	if (write_proc("/proc/self/uid_map", map) < 0)
		goto fail;
	return MOAT_ISOLATION_USERNS;
fail:
	/* An unmapped namespace still separates; its ids just read as the overflow id. */
	*ns_errno = errno;
	return MOAT_ISOLATION_USERNS;
}

/*
 * Root's runner becomes nobody before it can run anything of the enclave's:
 * with root's ids it could signal or touch anything the kernel lets root
 * touch without a capability. Changing ids clears the parent-death signal:
 * set it again and check that the host is still there.
 */
static int drop_root(pid_t parent)
{
	if (setgroups(0, NULL) < 0 || setresgid(SANDBOX_NOBODY, SANDBOX_NOBODY, SANDBOX_NOBODY) < 0 ||
	    setresuid(SANDBOX_NOBODY, SANDBOX_NOBODY, SANDBOX_NOBODY) < 0)
		return -errno;
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != parent)
		_exit(2);
	return 0;
}

static unsigned int enter_namespaces(pid_t parent, int *ns_errno, int *err)
{
	unsigned int bits = 0;
	int root = geteuid() == 0;

	*ns_errno = 0;
	*err = 0;
	/* Unprivileged, a user namespace comes first: it lets the runner make the others. */
	if (!root)
		bits |= enter_userns(ns_errno);
	if (unshare(CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS) == 0)
		bits |= MOAT_ISOLATION_PIDNS;
	else
		*ns_errno = errno;
	if (unshare(CLONE_NEWNS) == 0)
		bits |= MOAT_ISOLATION_MOUNTNS;
	else
		*ns_errno = errno;
	if (unshare(CLONE_NEWNET) == 0)
		bits |= MOAT_ISOLATION_NETNS;
	else
		*ns_errno = errno;
	/* Root made the namespaces with its own rights; now it becomes nobody, in a namespace of its own. */
	if (root) {
		if ((*err = drop_root(parent)) < 0)
			return bits;
		/* New ids made the process non-dumpable, which gives /proc/self to root: take it back to map
		 * ids. */
		prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
		bits |= enter_userns(ns_errno);
	}
	return bits;
}

/* The keeper ends the way the runner ended, so the host's wait status is the runner's. */
static void __attribute__((noreturn)) end_like(int st)
{
	if (WIFSIGNALED(st)) {
		int sig = WTERMSIG(st);
		struct sigaction sa;
		sigset_t set;

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = SIG_DFL;
		sigaction(sig, &sa, NULL);
		sigemptyset(&set);
		sigaddset(&set, sig);
		sigprocmask(SIG_UNBLOCK, &set, NULL);
		kill(getpid(), sig);
		_exit(128 + sig);
	}
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 1);
}

/* The keeper: outside the new PID namespace, waiting for init's word on the runner. */
static void __attribute__((noreturn)) keep(pid_t init, int from_init)
{
	struct rlimit none = {0, 0};
	int st = 0;
	ssize_t n;

	/* It ends by the runner's signal: no core file of its own. */
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	setrlimit(RLIMIT_CORE, &none);
	close_range(0, 1, 0);
	close_range(MOAT_PROC_CTL_FD, (unsigned)from_init - 1, 0);
	close_range((unsigned)from_init + 1, ~0U, 0);
	do
		n = read(from_init, &st, sizeof(st));
	while (n < 0 && errno == EINTR);
	while (waitpid(init, NULL, 0) < 0 && errno == EINTR)
		;
	/* Init ended without a word: it was killed, and the runner with it. */
	end_like(n == (ssize_t)sizeof(st) ? st : SIGKILL);
}

/* Init (PID 1 of the namespace): reap the runner and pass its status on. */
static void __attribute__((noreturn)) init_main(pid_t runner, int to_keeper)
{
	int st;

	close_range(0, (unsigned)to_keeper - 1, 0);
	close_range((unsigned)to_keeper + 1, ~0U, 0);
	for (;;) {
		pid_t got = waitpid(-1, &st, 0);

		if (got == runner) {
			if (write(to_keeper, &st, sizeof(st)) < 0)
				_exit(1);
			_exit(0);
		}
		if (got < 0 && errno != EINTR)
			_exit(1);
	}
}

/*
 * Fork init and the runner into the new PID namespace; returns 0 in the
 * runner, a negative errno if that could not be done.
 */
static int enter_pid_namespace(void)
{
	pid_t init, runner;
	int p[2];

	if (pipe2(p, O_CLOEXEC) < 0)
		return -errno;
	init = fork();
	if (init < 0) {
		close(p[0]);
		close(p[1]);
		return -errno;
	}
	if (init > 0) {
		close(p[1]);
		keep(init, p[0]);
	}
	close(p[0]);
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	runner = fork();
	if (runner < 0)
		_exit(127);
	if (runner > 0)
		init_main(runner, p[1]);
	close(p[1]);
	return 0;
}

unsigned int moat__runner_contain(pid_t parent, int *ns_errno, int *err)
{
	unsigned int bits = enter_namespaces(parent, ns_errno, err);

	if (*err == 0 && (bits & MOAT_ISOLATION_PIDNS))
		*err = enter_pid_namespace();
	return MOAT_ISOLATION_PROCESS | bits;
}

static unsigned int set_limits(unsigned int isolation)
{
	struct rlimit none = {0, 0}, tasks = {SANDBOX_MAX_TASKS, SANDBOX_MAX_TASKS};
	unsigned int bits = 0;

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
	bits |= MOAT_ISOLATION_RLIMITS;
	/*
	 * The kernel counts RLIMIT_NPROC per user per user namespace: in a
	 * namespace of its own, the count is this runner's tasks alone. Outside
	 * one it would be shared with every process of the same user.
	 */
	if ((isolation & MOAT_ISOLATION_USERNS) && setrlimit(RLIMIT_NPROC, &tasks) == 0)
		bits |= MOAT_ISOLATION_TASKS;
	return bits;
}

/* No capabilities, even in the runner's own user namespace. */
static int drop_capabilities(void)
{
	struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
	struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];

	memset(d, 0, sizeof(d));
	return syscall(SYS_capset, &h, d) < 0 ? -errno : 0;
}

#define ALLOW(name)         rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(name), 0)
#define ALLOW_IF(name, ...) rc |= seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(name), __VA_ARGS__)

/*
 * The allow-list, in groups; docs/proc.md says why each call is allowed.
 * Each group returns 0 or a negative errno from libseccomp.
 */

/* I/O on descriptors the runner already holds: its sockets, stdio and the sealed image copy. */
static int allow_io(scmp_filter_ctx ctx)
{
	static const int fcntl_cmds[] = {F_GETFD,         F_SETFD,     F_GETFL,    F_DUPFD,
	                                 F_DUPFD_CLOEXEC, F_GET_SEALS, F_ADD_SEALS};
	size_t i;
	int rc = 0;

	ALLOW(read);
	ALLOW(write);
	ALLOW(readv);
	ALLOW(writev);
	ALLOW(pread64);
	ALLOW(pwrite64);
	ALLOW(lseek);
	ALLOW(close);
	ALLOW(fstat);
	ALLOW(dup);
	ALLOW(recvmsg);
	ALLOW(recvfrom);
	ALLOW_IF(sendto, 1, SCMP_A4(SCMP_CMP_EQ, 0));
	ALLOW(shutdown);
	ALLOW(poll);
	ALLOW(ppoll);
	/* fcntl without F_SETOWN, F_SETOWN_EX, F_SETSIG or O_ASYNC: no signal can be aimed anywhere. */
	for (i = 0; i < sizeof(fcntl_cmds) / sizeof(fcntl_cmds[0]); i++)
		ALLOW_IF(fcntl, 1, SCMP_A1(SCMP_CMP_EQ, (scmp_datum_t)fcntl_cmds[i]));
	ALLOW_IF(fcntl, 2, SCMP_A1(SCMP_CMP_EQ, F_SETFL), SCMP_A2(SCMP_CMP_MASKED_EQ, O_ASYNC, 0));
	/* stdio asks whether an output is a terminal. */
	ALLOW_IF(ioctl, 1, SCMP_A1(SCMP_CMP_EQ, TCGETS));
	return rc;
}

/* Memory. Without JIT, executable memory comes only from a file: the sealed image copy. */
static int allow_memory(scmp_filter_ctx ctx, int jit)
{
	int rc = 0;

	if (jit) {
		ALLOW(mmap);
		ALLOW(mprotect);
	} else {
		ALLOW_IF(mmap, 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
		ALLOW_IF(mmap, 2, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC | PROT_WRITE, PROT_EXEC),
		         SCMP_A3(SCMP_CMP_MASKED_EQ, MAP_ANONYMOUS, 0));
		ALLOW_IF(mprotect, 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0));
	}
	ALLOW(munmap);
	ALLOW(mremap);
	ALLOW(brk);
	ALLOW(madvise);
	return rc;
}

/* Threads, time, signals to itself, and questions about itself. */
static int allow_process(scmp_filter_ctx ctx)
{
	pid_t self = getpid();
	int rc = 0;

	/* Threads of this process with glibc's exact flags: no new process, no new namespace. */
	ALLOW_IF(clone, 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)THREAD_FLAGS));
	/* clone3 passes its flags in memory the filter cannot read: glibc falls back to clone. */
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
	ALLOW(futex);
	ALLOW(set_robust_list);
	ALLOW(rseq);
	ALLOW(sched_yield);
	/* Reading a CPU mask; the sanitizers ask it of a thread by id. */
	ALLOW(sched_getaffinity);
	ALLOW(getrandom);
	ALLOW(exit);
	ALLOW(exit_group);
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
	ALLOW_IF(tgkill, 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)self));
	ALLOW_IF(kill, 1, SCMP_A0(SCMP_CMP_EQ, (scmp_datum_t)self));
	ALLOW(getpid);
	ALLOW(gettid);
	ALLOW(getppid);
	ALLOW(getuid);
	ALLOW(geteuid);
	ALLOW(getgid);
	ALLOW(getegid);
	ALLOW(uname);
	ALLOW(sysinfo);
	/* Limits: read, and only this process's. */
	ALLOW_IF(prlimit64, 2, SCMP_A0(SCMP_CMP_EQ, 0), SCMP_A2(SCMP_CMP_EQ, 0));
	ALLOW(getrlimit);
	ALLOW_IF(prctl, 1, SCMP_A0(SCMP_CMP_EQ, PR_SET_NAME));
	ALLOW_IF(prctl, 1, SCMP_A0(SCMP_CMP_EQ, PR_GET_NAME));
#if defined(__SANITIZE_ADDRESS__)
	/* The sanitizer runtime looks up its own binary's name when reporting; let that fail quietly. */
	rc |= seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), SCMP_SYS(readlink), 0);
#endif
	return rc;
}

static int install_filter(int jit)
{
	scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_TRAP);
	int rc;

	if (!ctx)
		return -ENOMEM;
	/* 32-bit system calls from this 64-bit process are never legitimate. */
	rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
	rc |= allow_io(ctx);
	rc |= allow_memory(ctx, jit);
	rc |= allow_process(ctx);
	if (rc == 0)
		rc = seccomp_load(ctx);
	seccomp_release(ctx);
	return rc;
}

int moat__runner_sandbox_enter(int fd, const moat_runner_mode *mode, unsigned int *isolation)
{
	int rc, jit = mode->jit;

	*isolation |= set_limits(*isolation);
	if ((rc = drop_capabilities()) < 0)
		return rc;
	/*
	 * Not dumpable: no process of the host's user can ptrace it or read its
	 * memory through /proc. Debug mode keeps it dumpable for exactly that.
	 */
	if (prctl(PR_SET_DUMPABLE, mode->debug ? 1 : 0, 0, 0, 0) < 0 ||
	    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if ((rc = moat__runner_trap_init(fd, mode->debug ? mode->outer_pid : 0)) < 0)
		return rc;
	if ((rc = install_filter(jit)) != 0)
		return rc < 0 ? rc : -EINVAL;
	*isolation |= MOAT_ISOLATION_SECCOMP;
	if (!jit)
		*isolation |= MOAT_ISOLATION_WXORX;
	return 0;
}
