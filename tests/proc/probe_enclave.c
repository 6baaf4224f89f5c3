/*
 * Probe enclave for the proc tests: handlers that try what the sandbox must
 * stop, crash in various ways, or just work. Config "fail" makes init
 * refuse, "crash" makes it segfault, "log" makes it log through the host.
 */
#include <moat/enclave.h>

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "probe.h"

/*
 * Written through a volatile pointer so the compiler cannot see the fault
 * coming; not NULL, so UBSan's null check does not report it before the
 * fault happens.
 */
static int *volatile nowhere = (int *)8;
static char config_seen[256];
static size_t config_len_seen;

static int copy_items(const moat_msg *in, moat_msg *out)
{
	size_t i, n = moat_msg_count(in);
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		const void *d;
		size_t len;

		moat_msg_item(in, i, &d, &len);
		rc = moat_msg_push(out, d, len);
	}
	return rc;
}

static int echo(void *p, const moat_msg *in, moat_msg *out)
{
	return copy_items(in, out);
}

static int fail(void *p, const moat_msg *in, moat_msg *out)
{
	return 7;
}

static int config(void *p, const moat_msg *in, moat_msg *out)
{
	return moat_msg_push(out, config_seen, config_len_seen);
}

static int try_open(void *p, const moat_msg *in, moat_msg *out)
{
	char *path = NULL;
	int fd;

	if (moat_msg_item_strdup(in, 0, &path) < 0)
		return MOAT_EINVAL;
	fd = open(path, O_RDONLY);
	free(path);
	if (fd >= 0)
		close(fd);
	return moat_msg_push_str(out, fd >= 0 ? "opened" : "refused");
}

static int try_exec(void *p, const moat_msg *in, moat_msg *out)
{
	char *argv[] = {"/bin/true", NULL};

	execv(argv[0], argv);
	return moat_msg_push_str(out, "exec failed");
}

static int try_socket(void *p, const moat_msg *in, moat_msg *out)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd >= 0)
		close(fd);
	return moat_msg_push_str(out, fd >= 0 ? "socket" : "refused");
}

static int try_stat(void *p, const moat_msg *in, moat_msg *out)
{
	struct stat st;
	char *path = NULL;
	int r;

	if (moat_msg_item_strdup(in, 0, &path) < 0)
		return MOAT_EINVAL;
	r = stat(path, &st);
	free(path);
	return moat_msg_push_str(out, r == 0 ? "stat" : "refused");
}

static int try_fork(void *p, const moat_msg *in, moat_msg *out)
{
	pid_t pid = fork();

	if (pid == 0)
		_exit(0);
	return moat_msg_push_str(out, pid > 0 ? "forked" : "refused");
}

static int try_kill(void *p, const moat_msg *in, moat_msg *out)
{
	int r = kill(getppid(), SIGKILL);

	return moat_msg_push_str(out, r == 0 ? "killed" : "refused");
}

static int try_vmread(void *p, const moat_msg *in, moat_msg *out)
{
	uint64_t addr;
	char buf[64];
	struct iovec local = {buf, sizeof(buf)}, remote;
	ssize_t n;

	if (moat_msg_item_u64(in, 0, &addr) < 0)
		return MOAT_EINVAL;
	remote.iov_base = (void *)(uintptr_t)addr;
	remote.iov_len = sizeof(buf);
	n = process_vm_readv(getppid(), &local, 1, &remote, 1, 0);
	return n > 0 ? moat_msg_push(out, buf, (size_t)n) : moat_msg_push_str(out, "refused");
}

static int peek(void *p, const moat_msg *in, moat_msg *out)
{
	uint64_t addr, len;

	if (moat_msg_item_u64(in, 0, &addr) < 0 || moat_msg_item_u64(in, 1, &len) < 0 || len > 4096)
		return MOAT_EINVAL;
	/* The host's address means nothing here: this reads the enclave's own memory, or faults. */
	return moat_msg_push(out, (const void *)(uintptr_t)addr, (size_t)len);
}

/* Fault PROBE_DEEP_FRAMES calls down (init's "crash-deep"): a report longer than any one line. */
static int __attribute__((noinline, noclone)) deep(int levels)
{
	if (levels == 0)
		*nowhere = 1;
	else
		deep(levels - 1);
	__asm__ volatile("");
	return levels;
}

static int segv(void *p, const moat_msg *in, moat_msg *out)
{
	*nowhere = 1;
	return 0;
}

static int do_abort(void *p, const moat_msg *in, moat_msg *out)
{
	abort();
}

static int do_exit(void *p, const moat_msg *in, moat_msg *out)
{
	exit(3);
}

static int hang(void *p, const moat_msg *in, moat_msg *out)
{
	for (;;) {
		struct timespec t = {1, 0};

		nanosleep(&t, NULL);
	}
	return 0;
}

static void *crash_later(void *arg)
{
	struct timespec t = {0, 50 * 1000 * 1000};

	nanosleep(&t, NULL);
	*nowhere = 1;
	return NULL;
}

static int later(void *p, const moat_msg *in, moat_msg *out)
{
	pthread_t t;

	if (pthread_create(&t, NULL, crash_later, NULL) != 0)
		return 1;
	pthread_detach(t);
	return 0;
}

static int garbage(void *p, const moat_msg *in, moat_msg *out)
{
	static const unsigned char junk[] = {0xff, 0xff, 0xff, 0xff, 'j', 'u', 'n', 'k'};
	struct stat st;
	int fd;

	/* fd 3 is the runner's control socket; the channels come after it. */
	for (fd = 4; fd < 256; fd++)
		if (fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode) && write(fd, junk, sizeof(junk)) < 0)
			return 1;
	return hang(p, in, out);
}

static void *add_one(void *arg)
{
	int *v = arg;

	(*v)++;
	return NULL;
}

static int stdio(void *p, const moat_msg *in, moat_msg *out)
{
	pthread_t t;
	int v = 41;
	char *big;

	/* glibc reads /sys and /proc for these; the sandbox answers "not found" and glibc copes. */
	if (sysconf(_SC_NPROCESSORS_ONLN) < 1 || sysconf(_SC_NPROCESSORS_CONF) < 1)
		return 3;
	printf("probe enclave: printf works\n");
	fflush(stdout);
	if (pthread_create(&t, NULL, add_one, &v) != 0 || pthread_join(t, NULL) != 0)
		return 1;
	big = malloc(64u << 20);
	if (!big)
		return 2;
	memset(big, 1, 64u << 20);
	free(big);
	return moat_msg_push_u64(out, (uint64_t)v);
}

static int exit_call(void *p, const moat_msg *in, moat_msg *out)
{
	return moat_exit_call(PROBE_HOST, in, out);
}

static int init(const void *cfg, size_t len)
{
	static const struct {
		uint64_t selector;
		moat_entry_handler fn;
	} table[] = {
	    {PROBE_ECHO, echo},           {PROBE_FAIL, fail},       {PROBE_CONFIG, config},
	    {PROBE_OPEN, try_open},       {PROBE_EXEC, try_exec},   {PROBE_SOCKET, try_socket},
	    {PROBE_STAT, try_stat},       {PROBE_FORK, try_fork},   {PROBE_KILL, try_kill},
	    {PROBE_VMREAD, try_vmread},   {PROBE_PEEK, peek},       {PROBE_SEGV, segv},
	    {PROBE_ABORT, do_abort},      {PROBE_EXIT, do_exit},    {PROBE_HANG, hang},
	    {PROBE_LATER, later},         {PROBE_GARBAGE, garbage}, {PROBE_STDIO, stdio},
	    {PROBE_EXIT_CALL, exit_call},
	};
	size_t i;
	int rc;

	if (len > sizeof(config_seen))
		return 9;
	if (len)
		memcpy(config_seen, cfg, len);
	config_len_seen = len;
	if (len == 4 && memcmp(cfg, "fail", 4) == 0)
		return 5;
	if (len == 5 && memcmp(cfg, "crash", 5) == 0)
		*nowhere = 1;
	if (len == 10 && memcmp(cfg, "crash-deep", 10) == 0)
		deep(PROBE_DEEP_FRAMES - 1);
	if (len == 3 && memcmp(cfg, "log", 3) == 0)
		moat_host_log("probe enclave: init with config log");
	for (i = 0; i < sizeof(table) / sizeof(table[0]); i++)
		if ((rc = moat_entry_register(table[i].selector, table[i].fn, NULL)) < 0)
			return rc;
	return 0;
}

MOAT_ENCLAVE(init)
