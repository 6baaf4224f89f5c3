/*
 * The proc backend: the enclave runs in `moat-enclave-host`, a separate
 * process that enters a seccomp sandbox (plus namespaces and limits where the
 * kernel allows) before the image is loaded. Calls are Call/Return frames on
 * a socketpair, one channel per host thread, so exit calls run on the host
 * thread that waits for its entry call and nesting works as in sim.
 *
 * What it protects against: an enclave that is buggy or hostile cannot read
 * or write the host's memory, open files, start programs, open sockets or
 * take the host down by crashing. It is process isolation, not hardware
 * isolation: the kernel and anyone who can ptrace the runner as root can
 * still see the enclave's memory.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "backends/proc/proc.h"
#include "core/chancache.h"
#include "core/internal.h"

#define RUNNER_NAME "moat-enclave-host"
/* How long the runner may take to start and enter its sandbox. */
#define START_TIMEOUT_MS 30000
/*
 * How long the finalizer may run at destroy when the load set no call
 * timeout: destroy must end the runner whatever the enclave is doing.
 */
#define STOP_TIMEOUT_MS 5000
/* How long a runner that closed its channel gets to finish dying before it is killed. */
#define EXIT_GRACE_MS 2000

typedef struct proc_backend proc_backend;

/* One host thread's channel to one instance, used by that thread alone (core/chancache.h). */
typedef struct proc_chan {
	moat_chan link; /* first: the cache's */
	moat_proc_wire wire;
	moat_conv conv;
} proc_chan;

struct proc_backend {
	moat_backend parent;
	moat_chan_owner chans; /* every host thread's channel to this instance */
	char *path;
	pid_t pid;
	int ctl;
	unsigned int timeout_ms;
	unsigned int flags; /* MOAT_LOAD_* */
	moat_exit_dispatch exit_dispatch;
	void *exit_ctx;
	pthread_mutex_t ctl_lock; /* sending channels on ctl */
	pthread_mutex_t reap_lock;
	int reaped;
	int image_fd;                  /* a copy of the image's bytes, to symbolize a crash report, or -1 */
	char death[MOAT__MESSAGE_MAX]; /* why the instance is dead; written once under reap_lock before
	                                  parent.dead */
};

static atomic_flag ns_warned = ATOMIC_FLAG_INIT;

static int proc_lost(proc_backend *b, int why, uint64_t selector);

/* ---- The channel's transport and the enclave's exit calls, for the conversation engine ---- */

static int host_send(void *io, const moat_frame *f)
{
	return moat__proc_wire_send(((proc_chan *)io)->wire.fd, f);
}

static int host_recv(void *io, moat_frame_in **out, int64_t deadline_ns)
{
	return moat__proc_wire_recv(&((proc_chan *)io)->wire, out, deadline_ns);
}

/* An exit call: answered here, on the host thread that waits for its entry call. */
static void host_serve(void *ctx, const moat_frame_in *f, moat_msg *out, moat_conv_result *res)
{
	proc_backend *b = ctx;

	res->code = b->exit_dispatch(b->exit_ctx, f->selector, f->items, out);
}

static const moat_conv_ops host_ops = {host_send, host_recv, host_serve};

/* ---- Channels ---- */

/* The cache's release: closing the channel ends the runner's worker for it. */
static void chan_release(moat_chan *link)
{
	proc_chan *ch = (proc_chan *)link;

	close(ch->wire.fd);
	moat__proc_wire_release(&ch->wire);
	free(ch);
}

/* Hand the runner its end of a new channel over the control socket. */
static int send_channel(proc_backend *b, int fd)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	char byte = 'C';
	struct iovec iov = {&byte, 1};
	struct msghdr mh;
	struct cmsghdr *c;
	ssize_t n;

	memset(&u, 0, sizeof(u));
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof(u.buf);
	c = CMSG_FIRSTHDR(&mh);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	pthread_mutex_lock(&b->ctl_lock);
	do
		n = sendmsg(b->ctl, &mh, MSG_NOSIGNAL);
	while (n < 0 && errno == EINTR);
	pthread_mutex_unlock(&b->ctl_lock);
	return n == 1 ? 0 : MOAT_ETRANSPORT;
}

/* The calling thread's channel to b, made on first use. Records the error on failure. */
static proc_chan *chan_get(proc_backend *b)
{
	proc_chan *ch = (proc_chan *)moat__chan_find(&b->chans);
	int sv[2];

	if (ch)
		return ch;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT, "proc: socketpair: %s",
		               strerror(errno));
		return NULL;
	}
	if (send_channel(b, sv[1]) < 0) {
		close(sv[0]);
		close(sv[1]);
		proc_lost(b, MOAT_PROC_LOST_GONE, 0);
		return NULL;
	}
	close(sv[1]);
	ch = calloc(1, sizeof(*ch));
	if (ch) {
		ch->wire.fd = sv[0];
		moat__conv_init(&ch->conv, &host_ops, ch, b);
	}
	if (!ch || moat__chan_add(&b->chans, &ch->link) < 0) {
		/* The runner's worker ends when this end closes. */
		close(sv[0]);
		free(ch);
		moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
		return NULL;
	}
	return ch;
}

/* ---- Starting the runner ---- */

/* Read one note from the control socket, waiting up to timeout_ms (0: don't wait). Returns 1 if read. */
static int read_note(proc_backend *b, moat_proc_note *note, int timeout_ms)
{
	struct pollfd p = {b->ctl, POLLIN, 0};
	ssize_t n;
	int r;

	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r <= 0)
		return 0;
	do
		n = recv(b->ctl, note, sizeof(*note), MSG_WAITALL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*note) && note->magic == MOAT_PROC_NOTE_MAGIC;
}

/* ---- Death of the runner ---- */

/* Wait for the runner to end, killing it after grace_ms. Returns its wait status or -1. */
static int wait_runner(proc_backend *b, int grace_ms, int *killed)
{
	struct timespec ms = {0, 1000000};
	int st, i;

	*killed = 0;
	for (i = 0;; i++) {
		pid_t r = waitpid(b->pid, &st, grace_ms > 0 && i < grace_ms ? WNOHANG : 0);

		if (r == b->pid)
			return st;
		if (r < 0 && errno != EINTR)
			return -1;
		if (r == 0) {
			nanosleep(&ms, NULL);
			if (i + 1 == grace_ms) {
				kill(b->pid, SIGKILL);
				*killed = 1;
			}
		}
	}
}

/* The crash report that follows a CRASH note, if the whole of it is there. */
static int read_crash(proc_backend *b, moat_proc_crash *c)
{
	ssize_t n;

	do
		n = recv(b->ctl, c, sizeof(*c), MSG_WAITALL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(*c);
}

/* The path a SYSCALL note says follows it: bytes up to a NUL. */
static void read_path(proc_backend *b, char *path, size_t cap)
{
	size_t n = 0;
	char c;

	while (n + 1 < cap && recv(b->ctl, &c, 1, MSG_DONTWAIT) == 1 && c != '\0')
		path[n++] = c;
	path[n] = '\0';
}

/*
 * The runner is gone or must go: reap it once, record why as the instance's
 * fatal error, and return that error for the calling thread.
 */
static int proc_lost(proc_backend *b, int why, uint64_t selector)
{
	int code;

	pthread_mutex_lock(&b->reap_lock);
	if (!b->reaped) {
		moat_proc_death d = {b->path,  why,           -1,   0,          -1, NULL,
		                     selector, b->timeout_ms, NULL, b->image_fd};
		moat_proc_crash *crash = calloc(1, sizeof(*crash));
		char path[MOAT_PROC_NOTE_TEXT];
		moat_proc_note note;

		if (why != MOAT_PROC_LOST_GONE)
			kill(b->pid, SIGKILL);
		d.status = wait_runner(b, why != MOAT_PROC_LOST_GONE ? 0 : EXIT_GRACE_MS, &d.killed);
		b->reaped = 1;
		while (read_note(b, &note, 0)) {
			if (note.kind == MOAT_PROC_NOTE_SYSCALL) {
				d.syscall_nr = note.value;
				if (note.aux) {
					read_path(b, path, sizeof(path));
					d.syscall_path = path;
				}
			} else if (note.kind == MOAT_PROC_NOTE_CRASH && crash && !d.crash &&
			           read_crash(b, crash))
				d.crash = crash;
		}
		code = moat__proc_describe_death(b->death, sizeof(b->death), &d);
		free(crash);
		__atomic_store_n(&b->parent.dead, code, __ATOMIC_RELEASE);
	}
	code = __atomic_load_n(&b->parent.dead, __ATOMIC_ACQUIRE);
	pthread_mutex_unlock(&b->reap_lock);
	return moat_error_set(code, code == MOAT_ECANCELED ? MOAT_ORIGIN_API : MOAT_ORIGIN_ENCLAVE, "%s",
	                      b->death);
}

/* ---- Calls ---- */

/*
 * Send a Call on ch and wait for its Return; the engine answers the
 * enclave's exit calls on this thread meanwhile (they may nest entry calls
 * on the same channel). The time limit counts the enclave's time only, not
 * the time the host spends in exit handlers. On success *ret is the Return.
 */
static int chan_call(proc_backend *b, proc_chan *ch, uint64_t selector, const moat_msg *in,
                     unsigned int timeout_ms, moat_frame_in **ret)
{
	int rc = moat__conv_call(&ch->conv, selector, in, timeout_ms, ret);

	switch (rc) {
	case 0: return 0;
	case MOAT_ETIMEDOUT: return proc_lost(b, MOAT_PROC_LOST_TIMEOUT, selector);
	case MOAT_EPROTO: return proc_lost(b, MOAT_PROC_LOST_PROTOCOL, selector);
	case MOAT_ENOMEM: return moat_error_set(rc, MOAT_ORIGIN_API, "out of memory");
	case MOAT_ELIMIT:
		return moat_error_set(
		    rc, MOAT_ORIGIN_API,
		    "entry call %llu: the message is larger than the proc frame limit (%u bytes)",
		    (unsigned long long)selector, (unsigned)MOAT_PROC_FRAME_MAX);
	default: return proc_lost(b, MOAT_PROC_LOST_GONE, selector);
	}
}

static int proc_dead_error(proc_backend *b, int dead)
{
	return moat_error_set(dead, MOAT_ORIGIN_ENCLAVE, "%s", b->death);
}

static int proc_call(moat_backend *base, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	proc_backend *b = (proc_backend *)base;
	moat_frame_in *ret;
	proc_chan *ch;
	int dead = __atomic_load_n(&b->parent.dead, __ATOMIC_ACQUIRE);
	int rc;

	if (dead)
		return proc_dead_error(b, dead);
	if (!(ch = chan_get(b)))
		return moat_error_last()->code;
	if ((rc = chan_call(b, ch, selector, in, b->timeout_ms, &ret)) < 0)
		return rc;
	rc = ret->code;
	if (rc == 0 && out) {
		if ((rc = moat__msg_append(out, ret->items)) < 0)
			moat_error_set(rc, MOAT_ORIGIN_API, "out of memory");
	} else if (rc < 0) {
		moat__error_from_enclave(rc, selector, ret->enclave_code,
		                         *ret->message ? ret->message : NULL);
	}
	moat__frame_in_free(ret);
	return rc;
}

/* ---- Open and close ---- */

static void proc_free(proc_backend *b)
{
	if (!b)
		return;
	moat__chan_release_all(&b->chans);
	if (b->ctl >= 0)
		close(b->ctl);
	if (b->image_fd >= 0)
		close(b->image_fd);
	if (b->pid > 0 && !b->reaped) {
		int st;

		/* The finalizer has run (or cannot): nothing in the runner needs to finish. */
		kill(b->pid, SIGKILL);
		while (waitpid(b->pid, &st, 0) < 0 && errno == EINTR)
			;
	}
	pthread_mutex_destroy(&b->ctl_lock);
	pthread_mutex_destroy(&b->reap_lock);
	free(b->path);
	free(b);
}

static void warn_namespaces(const moat_proc_note *hello)
{
	static const unsigned int all =
	    MOAT_ISOLATION_USERNS | MOAT_ISOLATION_PIDNS | MOAT_ISOLATION_MOUNTNS | MOAT_ISOLATION_NETNS;

	if ((hello->isolation & all) == all || atomic_flag_test_and_set(&ns_warned))
		return;
	moat__log(MOAT_LOG_WARN,
	          "proc: this system does not allow new user/PID/mount/network namespaces (%s); enclaves run "
	          "without the ones missing (isolation 0x%x)",
	          strerror(hello->ns_errno), hello->isolation);
}

/* Start the runner and wait for its hello: the sandbox layers it applied. Records the error. */
static int runner_up(proc_backend *b, const char *runner, const uint8_t *bytes, size_t len)
{
	moat_proc_note hello;
	char **needed = NULL;
	size_t n_needed = 0;
	int rc;

	memset(&hello, 0, sizeof(hello));
	if ((rc = moat__proc_needed(bytes, len, &needed, &n_needed)) < 0)
		return moat_error_set(rc, MOAT_ORIGIN_API, "out of memory");
	rc = moat__proc_start_runner(runner, b->flags, needed, n_needed, &b->ctl, &b->pid);
	moat__proc_needed_free(needed, n_needed);
	if (rc < 0)
		return rc;
	if (read_note(b, &hello, START_TIMEOUT_MS) && hello.kind == MOAT_PROC_NOTE_LIBRARY) {
		char why[MOAT_PROC_NOTE_TEXT];

		/* As on sim, where the dynamic loader says the same (MOAT_EBADIMAGE, origin api). */
		if (recv(b->ctl, why, sizeof(why), MSG_WAITALL | MSG_DONTWAIT) != (ssize_t)sizeof(why))
			why[0] = '\0';
		why[sizeof(why) - 1] = '\0';
		return moat_error_set(
		    MOAT_EBADIMAGE, MOAT_ORIGIN_API,
		    "%s: cannot load: a library it needs does not load in the proc runner: %s", b->path,
		    *why ? why : "(no detail)");
	}
	if (hello.magic != MOAT_PROC_NOTE_MAGIC || hello.kind != MOAT_PROC_NOTE_HELLO) {
		int exec_errno =
		    hello.magic == MOAT_PROC_NOTE_MAGIC && hello.kind == MOAT_PROC_NOTE_EXEC_FAILED
		        ? hello.value
		        : 0;

		proc_lost(b, MOAT_PROC_LOST_GONE, 0);
		return moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT, "proc: %s did not start: %s",
		                      runner, exec_errno ? strerror(exec_errno) : b->death);
	}
	if (!(hello.isolation & MOAT_ISOLATION_SECCOMP))
		return moat_error_set(
		    MOAT_ESANDBOX, MOAT_ORIGIN_API,
		    "proc: the runner could not install its seccomp filter (%s); nothing was loaded",
		    strerror(hello.value));
	warn_namespaces(&hello);
	b->parent.isolation = hello.isolation;
	if (b->flags & MOAT_LOAD_DEBUG) {
		b->parent.debug = 1;
		b->parent.debug_pid = hello.aux;
		moat__log(MOAT_LOG_WARN, "proc: debug mode: %s runs in process %ld; attach with: gdb -p %ld",
		          b->path, (long)hello.aux, (long)hello.aux);
	}
	return 0;
}

/*
 * A Call of the runner's own (load, start) on this thread's channel; the
 * enclave's init runs in it, its exit calls answered here. Records errors.
 */
static int runner_request(proc_backend *b, uint64_t selector, const moat_msg *in)
{
	moat_frame_in *ret = NULL;
	proc_chan *ch;
	int rc;

	if (!(ch = chan_get(b)))
		return moat_error_last()->code;
	rc = chan_call(b, ch, selector, in, b->timeout_ms, &ret);
	if (rc == 0 && (rc = ret->code) < 0)
		moat_error_set(rc, ret->origin ? (moat_origin)ret->origin : MOAT_ORIGIN_ENCLAVE, "%s",
		               ret->message);
	moat__frame_in_free(ret);
	return rc;
}

/*
 * Send the image in the first Call: the runner measures, checks the pin and
 * runs the enclave's init, unless the load defers it to proc_start.
 */
static int runner_load(proc_backend *b, const moat_backend_params *params, const uint8_t *bytes, size_t len)
{
	const moat_load_options *o = params->options;
	moat_msg *load = NULL;
	int rc;

	if ((rc = moat_msg_new(&load)) < 0 ||
	    (rc = moat_msg_push_borrowed(load, b->path, strlen(b->path))) < 0 ||
	    (rc = moat_msg_push_borrowed(load, bytes, len)) < 0 ||
	    (rc = moat_msg_push_borrowed(load, o->expected_measurement,
	                                 o->expected_measurement ? MOAT_MEASUREMENT_LEN : 0)) < 0 ||
	    (rc = moat_msg_push_borrowed(load, o->config, o->config_len)) < 0 ||
	    ((o->flags & MOAT_LOAD_DEFER_INIT) &&
	     (rc = moat_msg_push_u64(load, MOAT_PROC_LOAD_DEFER_INIT)) < 0)) {
		moat_msg_free(load);
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	}
	rc = runner_request(b, MOAT_PROC_SELECTOR_LOAD, load);
	moat_msg_free(load);
	return rc;
}

static int proc_start(moat_backend *base)
{
	proc_backend *b = (proc_backend *)base;
	int dead = __atomic_load_n(&b->parent.dead, __ATOMIC_ACQUIRE);

	if (dead)
		return proc_dead_error(b, dead);
	return runner_request(b, MOAT_PROTOCOL_SELECTOR_START, NULL);
}

/*
 * A copy of the image for the symbolizer of crash reports (the path may
 * change or be gone by then: moatd's is a descriptor it closes). Returns
 * its descriptor, or -1: reports then name offsets in the image only.
 */
static int image_copy(const uint8_t *bytes, size_t len)
{
	int fd = memfd_create("moat-enclave-symbols", MFD_CLOEXEC);
	size_t done = 0;

	while (fd >= 0 && done < len) {
		ssize_t n = write(fd, bytes + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			close(fd);
			fd = -1;
		} else {
			done += (size_t)n;
		}
	}
	return fd;
}

static int proc_open(moat_backend **out, const moat_backend_params *params)
{
	const moat_load_options *o = params->options;
	char runner[PATH_MAX];
	uint8_t *bytes = NULL;
	size_t len = 0;
	proc_backend *b;
	int rc;

	*out = NULL;
	if (o->flags & MOAT_LOAD_BY_NAME)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		                      "MOAT_LOAD_BY_NAME needs a remote backend");
	b = calloc(1, sizeof(*b));
	/* Messages name the image as the application asked (moatd: as its host did). */
	if (!b || !(b->path = strdup(o->image_name ? o->image_name : params->path))) {
		free(b);
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	}
	b->parent.vtable = &moat__backend_proc;
	moat__chan_owner_init(&b->chans, chan_release);
	b->ctl = -1;
	b->pid = -1;
	b->image_fd = -1;
	b->timeout_ms = o->call_timeout_ms;
	b->flags = o->flags;
	b->exit_dispatch = params->exit_dispatch;
	b->exit_ctx = params->exit_ctx;
	pthread_mutex_init(&b->ctl_lock, NULL);
	pthread_mutex_init(&b->reap_lock, NULL);

	if ((rc = moat__find_helper(runner, sizeof(runner), RUNNER_NAME, "MOAT_ENCLAVE_HOST")) < 0 ||
	    (rc = moat__read_file(&bytes, &len, params->path)) < 0)
		goto fail;
	/* The identity comes from the bytes the host read, never from what the runner says. */
	moat__sha256(b->parent.measurement, bytes, len);
	b->image_fd = image_copy(bytes, len);
	if ((rc = runner_up(b, runner, bytes, len)) < 0 || (rc = runner_load(b, params, bytes, len)) < 0)
		goto fail;
	free(bytes);
	*out = &b->parent;
	return 0;

fail:
	free(bytes);
	proc_free(b);
	return rc;
}

static void proc_close(moat_backend *base)
{
	proc_backend *b = (proc_backend *)base;
	moat_frame_in *ret = NULL;
	proc_chan *ch;

	if (!b)
		return;
	/* Run the finalizer; it may make exit calls, answered on this thread. */
	if (!__atomic_load_n(&b->parent.dead, __ATOMIC_ACQUIRE) && (ch = chan_get(b)) != NULL &&
	    chan_call(b, ch, MOAT_PROC_SELECTOR_STOP, NULL, b->timeout_ms ? b->timeout_ms : STOP_TIMEOUT_MS,
	              &ret) == 0)
		moat__frame_in_free(ret);
	proc_free(b);
}

/* Kill the runner now; calls blocked on its channels see them close and return the recorded death. */
static void proc_abort(moat_backend *base)
{
	proc_backend *b = (proc_backend *)base;
	moat_error saved = *moat_error_last();
	char msg[MOAT__MESSAGE_MAX];

	snprintf(msg, sizeof(msg), "%s", saved.message);
	proc_lost(b, MOAT_PROC_LOST_ABORT, 0);
	/* Aborting reports nothing: the caller's last error stays as it was. */
	if (saved.code)
		moat_error_set(saved.code, saved.origin, "%s", msg);
	else
		moat_error_clear();
}

const moat_backend_vtable moat__backend_proc = {
    MOAT_BACKEND_VERSION,
    "proc",
    MOAT_BACKEND_CAP_ISOLATED | MOAT_BACKEND_CAP_TIMEOUT | MOAT_BACKEND_CAP_CRASH,
    proc_open,
    proc_call,
    proc_close,
    proc_abort,
    proc_start,
};
