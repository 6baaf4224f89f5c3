/*
 * A hostile enclave for the sandbox tests: every handler tries one way to
 * reach outside the proc sandbox (aim a signal at another process, hold
 * memory outside the limit, run code it wrote, make processes or
 * namespaces, forge the host's crash report). The sandbox must stop each
 * one; a handler that returns "got out" means it did not.
 */
#include <moat/enclave.h>

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "hostile.h"

/* The proc runner's control socket (src/backends/proc/proc.h) and its note layout. */
#define CTL_FD 3
struct note {
	uint32_t magic, kind, isolation;
	int32_t value, ns_errno, reserved;
};

static int *volatile nowhere = (int *)8;

static int got_out(moat_msg *out)
{
	return moat_msg_push_str(out, "got out");
}

static int echo(void *p, const moat_msg *in, moat_msg *out)
{
	size_t i;
	int rc = 0;

	for (i = 0; i < moat_msg_count(in) && rc == 0; i++) {
		const void *d;
		size_t len;

		moat_msg_item(in, i, &d, &len);
		rc = moat_msg_push(out, d, len);
	}
	return rc;
}

static pid_t arg_pid(const moat_msg *in)
{
	uint64_t v = 0;

	moat_msg_item_u64(in, 0, &v);
	return (pid_t)v;
}

/* fcntl(fd, cmd, arg) on every socket it holds; the sockets' next I/O would deliver the signal. */
static int on_sockets(int cmd, long arg, moat_msg *out)
{
	struct stat st;
	int fd, done = 0;

	for (fd = 0; fd < 64; fd++)
		if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && fcntl(fd, cmd, arg) == 0)
			done++;
	return done ? got_out(out) : moat_msg_push_str(out, "refused");
}

static int setown(void *p, const moat_msg *in, moat_msg *out)
{
	return on_sockets(F_SETOWN, arg_pid(in), out);
}

static int setown_ex(void *p, const moat_msg *in, moat_msg *out)
{
	struct f_owner_ex o = {F_OWNER_PID, arg_pid(in)};
	struct stat st;
	int fd;

	for (fd = 0; fd < 64; fd++)
		if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && fcntl(fd, F_SETOWN_EX, &o) == 0)
			return got_out(out);
	return moat_msg_push_str(out, "refused");
}

static int setsig(void *p, const moat_msg *in, moat_msg *out)
{
	return on_sockets(F_SETSIG, SIGKILL, out);
}

static int async(void *p, const moat_msg *in, moat_msg *out)
{
	return on_sockets(F_SETFL, O_ASYNC | O_NONBLOCK, out);
}

static int do_kill(void *p, const moat_msg *in, moat_msg *out)
{
	return kill(arg_pid(in), SIGKILL) == 0 ? got_out(out) : moat_msg_push_str(out, "refused");
}

static int kill_all(void *p, const moat_msg *in, moat_msg *out)
{
	return kill(-1, SIGKILL) == 0 ? got_out(out) : moat_msg_push_str(out, "refused");
}

static int memfd(void *p, const moat_msg *in, moat_msg *out)
{
	int fd = memfd_create("hoard", 0);

	if (fd < 0)
		return moat_msg_push_str(out, "refused");
	close(fd);
	return got_out(out);
}

static int shared_big(void *p, const moat_msg *in, moat_msg *out)
{
	size_t len = (size_t)64 << 30;
	void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);

	if (m == MAP_FAILED)
		return moat_msg_push_str(out, "refused");
	munmap(m, len);
	return moat_msg_push_str(out, "mapped");
}

static void *sleeper(void *arg)
{
	for (;;) {
		struct timespec t = {3600, 0};

		nanosleep(&t, NULL);
	}
	return NULL;
}

static int threads(void *p, const moat_msg *in, moat_msg *out)
{
	pthread_attr_t attr;
	uint64_t n = 0;

	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 << 10);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	for (n = 0; n < 5000; n++) {
		pthread_t t;

		if (pthread_create(&t, &attr, sleeper, NULL) != 0)
			break;
	}
	pthread_attr_destroy(&attr);
	return moat_msg_push_u64(out, n);
}

static int rwx(void *p, const moat_msg *in, moat_msg *out)
{
	void *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE | PROT_EXEC, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m == MAP_FAILED)
		return moat_msg_push_str(out, "refused");
	munmap(m, 4096);
	return got_out(out);
}

static int wx_flip(void *p, const moat_msg *in, moat_msg *out)
{
	unsigned char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int r;

	if (m == MAP_FAILED)
		return moat_msg_push_str(out, "refused");
	m[0] = 0xc3; /* ret */
	r = mprotect(m, 4096, PROT_READ | PROT_EXEC);
	munmap(m, 4096);
	return r == 0 ? got_out(out) : moat_msg_push_str(out, "refused");
}

static int clone_ns(void *p, const moat_msg *in, moat_msg *out)
{
	/* A thread's flags plus a new network namespace; the filter must stop it before it runs. */
	long flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SYSVSEM | CLONE_SIGHAND | CLONE_THREAD |
	             CLONE_SETTLS | CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID | CLONE_NEWNET;
	long r = syscall(SYS_clone, flags, 0L, 0L, 0L, 0L);

	return r >= 0 ? got_out(out) : moat_msg_push_str(out, "refused");
}

static int prlimit_other(void *p, const moat_msg *in, moat_msg *out)
{
	struct rlimit r;

	return prlimit(arg_pid(in), RLIMIT_NOFILE, NULL, &r) == 0 ? got_out(out)
	                                                          : moat_msg_push_str(out, "refused");
}

static int raise_limit(void *p, const moat_msg *in, moat_msg *out)
{
	struct rlimit r = {RLIM_INFINITY, RLIM_INFINITY};

	return prlimit(0, RLIMIT_NPROC, &r, NULL) == 0 ? got_out(out) : moat_msg_push_str(out, "refused");
}

static int trunc_stderr(void *p, const moat_msg *in, moat_msg *out)
{
	return ftruncate(2, 0) == 0 ? got_out(out) : moat_msg_push_str(out, "refused");
}

static void forever(void *arg)
{
	sleeper(arg);
}

static void hang_fini(void)
{
	sleeper(NULL);
}

static int spawn_hang(void *p, const moat_msg *in, moat_msg *out)
{
	moat_thread t;
	uint64_t fini = 0;

	moat_msg_item_u64(in, 0, &fini);
	if (fini) {
		moat_finalizer_set(hang_fini);
		return 0;
	}
	return moat_thread_start(&t, forever, NULL);
}

static int nest(void *p, const moat_msg *in, moat_msg *out)
{
	return moat_exit_call(HOSTILE_EXIT_NEST, in, out);
}

static int who(void *p, const moat_msg *in, moat_msg *out)
{
	int rc = moat_msg_push_u64(out, (uint64_t)getpid());

	if (rc == 0)
		rc = moat_msg_push_u64(out, (uint64_t)getppid());
	if (rc == 0)
		rc = moat_msg_push_u64(out, (uint64_t)getuid());
	if (rc == 0)
		rc = moat_msg_push_u64(out, (uint64_t)getgid());
	return rc;
}

/* A note that says "the sandbox stopped execve", written where the runner writes its own. */
static void forge_note(void)
{
	struct note n = {0x4d4f4154u, 2, 0, 59, 0, 0};

	if (send(CTL_FD, &n, sizeof(n), MSG_NOSIGNAL) < 0)
		return;
}

static int forge_segv(void *p, const moat_msg *in, moat_msg *out)
{
	forge_note();
	*nowhere = 1;
	return 0;
}

static int forge_sys(void *p, const moat_msg *in, moat_msg *out)
{
	signal(SIGSYS, SIG_DFL);
	forge_note();
	raise(SIGSYS);
	return got_out(out);
}

static int init(const void *cfg, size_t len)
{
	static const struct {
		uint64_t selector;
		moat_entry_handler fn;
	} table[] = {
	    {HOSTILE_ECHO, echo},
	    {HOSTILE_SETOWN, setown},
	    {HOSTILE_SETOWN_EX, setown_ex},
	    {HOSTILE_SETSIG, setsig},
	    {HOSTILE_ASYNC, async},
	    {HOSTILE_KILL, do_kill},
	    {HOSTILE_KILL_ALL, kill_all},
	    {HOSTILE_MEMFD, memfd},
	    {HOSTILE_SHARED_BIG, shared_big},
	    {HOSTILE_THREADS, threads},
	    {HOSTILE_RWX, rwx},
	    {HOSTILE_WX_FLIP, wx_flip},
	    {HOSTILE_CLONE_NS, clone_ns},
	    {HOSTILE_PRLIMIT, prlimit_other},
	    {HOSTILE_RAISE_LIM, raise_limit},
	    {HOSTILE_FTRUNCATE, trunc_stderr},
	    {HOSTILE_SPAWN_HANG, spawn_hang},
	    {HOSTILE_NEST, nest},
	    {HOSTILE_WHO, who},
	    {HOSTILE_FORGE_SEGV, forge_segv},
	    {HOSTILE_FORGE_SYS, forge_sys},
	};
	size_t i;
	int rc;

	for (i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if ((rc = moat_entry_register(table[i].selector, table[i].fn, NULL)) < 0)
			return rc;
	return 0;
}

MOAT_ENCLAVE(init)
