/*
 * moat-enclave-host: the runner of the proc backend. libmoat starts it with
 * a control socket on fd 3 (see proc.h). It enters the sandbox before it
 * reads anything from the host, then serves one worker thread per channel.
 * The enclave image arrives in the first Call and is measured, checked and
 * loaded inside the sandbox.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/prctl.h>
#include <sys/sysinfo.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "backends/proc/runner.h"

typedef struct channel {
	moat_proc_wire wire;
	moat_conv conv;
} channel;

/* A worker's stack: room for MOAT_PROC_MAX_NESTING levels of 16 KiB each (virtual; touched only as used). */
#define WORKER_STACK ((size_t)MOAT_PROC_MAX_NESTING * 16 * 1024)

static moat_image *image;
static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static struct moat_runtime runtime;
/* What the enclave learns of where it runs (moat_host_identity): the layers this runner applied. */
static unsigned int runner_isolation;
static int runner_debug;
static int runner_remote;
/*
 * A load that deferred init (MOAT_LOAD_DEFER_INIT): the config and name
 * kept for START. init_state: 0 before the load, 1 deferred, 2 init ran
 * (or is running), 3 init succeeded (the finalizer may run).
 */
static uint8_t *init_config;
static size_t init_config_len;
static char *init_name;
static int init_state;
/* The channel of the worker running on this thread; enclave exit calls go there. */
static _Thread_local channel *current;

#if defined(__SANITIZE_ADDRESS__)
/*
 * In sanitizer builds the enclave's crashes must look as they do in plain
 * builds (killed by the signal), and the sanitizer must not try to open
 * files or start a symbolizer inside the sandbox.
 */
#define RUNNER_SANITIZER_OPTIONS \
	"handle_segv=0:handle_sigbus=0:handle_abort=0:handle_sigfpe=0:handle_sigill=0:symbolize=0"
const char *__asan_default_options(void);
const char *__ubsan_default_options(void);
__attribute__((visibility("default"))) const char *__asan_default_options(void)
{
	return "detect_leaks=0:" RUNNER_SANITIZER_OPTIONS;
}
/* MOAT_ASAN builds pair AddressSanitizer with UBSan, whose runtime has its own signal handlers. */
__attribute__((visibility("default"))) const char *__ubsan_default_options(void)
{
	return RUNNER_SANITIZER_OPTIONS;
}
#endif

static int runner_exit_call(void *ctx, uint64_t selector, const moat_msg *in, moat_msg *out);

/* Run the enclave's init (load_lock held). Returns 0 or MOAT_EINIT with the message. */
static int run_init(const char *name, const void *config, size_t config_len, moat_origin *origin,
                    char *message, size_t size)
{
	int rc;

	init_state = 2;
	rc = image->entry->start(&runtime, config_len ? config : NULL, config_len);
	if (rc != 0) {
		snprintf(message, size, "%s: the enclave's init function failed (%d)", name, rc);
		*origin = MOAT_ORIGIN_ENCLAVE;
		return MOAT_EINIT;
	}
	init_state = 3;
	return 0;
}

/* START: run the init a LOAD deferred. */
static int start(moat_origin *origin, char *message, size_t size)
{
	int rc;

	pthread_mutex_lock(&load_lock);
	if (init_state != 1) {
		snprintf(message, size, "start without a load that deferred init");
		*origin = MOAT_ORIGIN_TRANSPORT;
		rc = MOAT_EPROTO;
	} else {
		rc = run_init(init_name, init_config, init_config_len, origin, message, size);
	}
	free(init_config);
	init_config = NULL;
	pthread_mutex_unlock(&load_lock);
	return rc;
}

/*
 * LOAD: items are name, image bytes, pin (0 or 32 bytes), config, and
 * optionally a u64 of MOAT_PROC_LOAD_* flags.
 */
static int load(const moat_frame_in *f, moat_origin *origin, char *message, size_t size)
{
	const void *bytes, *pin, *config;
	size_t len, pin_len, config_len, n = moat_msg_count(f->items);
	uint64_t flags = 0;
	char *name = NULL;
	moat_image *img = NULL;
	int rc;

	*origin = MOAT_ORIGIN_API;
	pthread_mutex_lock(&load_lock);
	if (image || (n != 4 && n != 5) || moat_msg_item_strdup(f->items, 0, &name) < 0 ||
	    moat_msg_item(f->items, 1, &bytes, &len) < 0 || moat_msg_item(f->items, 2, &pin, &pin_len) < 0 ||
	    (pin_len != 0 && pin_len != MOAT_MEASUREMENT_LEN) ||
	    moat_msg_item(f->items, 3, &config, &config_len) < 0 ||
	    (n == 5 && moat_msg_item_u64(f->items, 4, &flags) < 0)) {
		snprintf(message, size, "malformed load request");
		*origin = MOAT_ORIGIN_TRANSPORT;
		rc = MOAT_EPROTO;
		goto out;
	}
	/* Measure and check the pin before anything in the image runs. */
	rc = moat__image_open_bytes(&img, bytes, len, name, pin_len ? pin : NULL);
	if (rc < 0) {
		snprintf(message, size, "%s", moat_error_last()->message);
		*origin = moat_error_last()->origin;
		goto out;
	}
	runtime.abi_version = MOAT_ENCLAVE_ABI_VERSION;
	runtime.size = sizeof(runtime);
	runtime.exit_call = runner_exit_call;
	/* Hosted for a remote host (moatd), the enclave sees what that host's identity says. */
	runtime.backend = runner_remote ? "remote" : "proc";
	runtime.isolation = runner_isolation | (runner_remote ? MOAT_ISOLATION_REMOTE : 0);
	runtime.flags = runner_debug ? MOAT_RUNTIME_DEBUG : 0;
	image = img;
	moat__runner_fault_modules(img->dl);
	if (flags & MOAT_PROC_LOAD_DEFER_INIT) {
		/* The frame goes when this Call returns: keep what init needs until START. */
		init_config = malloc(config_len ? config_len : 1);
		if (!init_config) {
			snprintf(message, size, "out of memory");
			rc = MOAT_ENOMEM;
			goto out;
		}
		if (config_len)
			memcpy(init_config, config, config_len);
		init_config_len = config_len;
		init_name = name;
		name = NULL;
		init_state = 1;
		rc = 0;
	} else {
		rc = run_init(name, config, config_len, origin, message, size);
	}
out:
	pthread_mutex_unlock(&load_lock);
	free(name);
	return rc;
}

/* Run one Call from the host: load, stop, or an entry call into the enclave. */
static void serve(void *ctx, const moat_frame_in *f, moat_msg *out, moat_conv_result *res)
{
	uint64_t outer = moat__runner_selector;

	/* What a crash report names: the innermost Call of this thread. */
	moat__runner_selector = f->selector;
	moat__runner_depth++;
	res->origin = MOAT_ORIGIN_ENCLAVE;
	if (f->selector == MOAT_PROC_SELECTOR_LOAD) {
		res->code = load(f, &res->origin, res->message, sizeof(res->message));
	} else if (!image) {
		res->code = MOAT_EPROTO;
		res->origin = MOAT_ORIGIN_TRANSPORT;
		snprintf(res->message, sizeof(res->message), "no enclave image is loaded");
	} else if (f->selector == MOAT_PROTOCOL_SELECTOR_START) {
		res->code = start(&res->origin, res->message, sizeof(res->message));
	} else if (f->selector == MOAT_PROC_SELECTOR_STOP) {
		/* The finalizer only after an init that succeeded (a deferred one may never have run). */
		if (init_state == 3)
			image->entry->stop();
		res->code = 0;
	} else {
		res->code = image->entry->call(f->selector, f->items, out, &res->enclave_code);
	}
	moat__runner_depth--;
	moat__runner_selector = outer;
}

static int chan_send(void *io, const moat_frame *f)
{
	return moat__proc_wire_send(((channel *)io)->wire.fd, f);
}

static int chan_recv(void *io, moat_frame_in **out, int64_t deadline_ns)
{
	return moat__proc_wire_recv(&((channel *)io)->wire, out, deadline_ns);
}

static const moat_conv_ops runner_ops = {chan_send, chan_recv, serve};

/*
 * The enclave's exit calls: a Call to the host on this thread's channel; the
 * engine serves the host's nested Calls until the Return comes.
 */
static int runner_exit_call(void *ctx, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	channel *ch = current;
	moat_frame_in *f;
	int rc;

	/* Threads the enclave made itself have no host thread to answer them. */
	if (!ch)
		return MOAT_EINVAL;
	rc = moat__conv_call(&ch->conv, selector, in, 0, &f);
	if (rc == MOAT_ELIMIT)
		return rc; /* too large to send; nothing was sent */
	if (rc < 0)
		_exit(0); /* the host is gone, or broke the protocol */
	rc = f->code;
	/* A failed exit call leaves out as it was, as on sim. */
	if (rc == 0 && out)
		rc = moat__msg_append(out, f->items);
	moat__frame_in_free(f);
	return rc;
}

static void *worker_main(void *arg)
{
	channel *ch = arg;
	void *alt = moat__runner_fault_thread_begin();

	current = ch;
	moat__conv_serve(&ch->conv);
	moat__runner_fault_thread_end(alt);
	/* The host thread behind this channel has gone (or broke the protocol). */
	current = NULL;
	close(ch->wire.fd);
	moat__proc_wire_release(&ch->wire);
	free(ch);
	return NULL;
}

/* Receive one channel fd from the control socket; returns it, or -1 when the host is gone. */
static int receive_channel(int ctl)
{
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	char byte;
	struct iovec iov = {&byte, 1};
	struct msghdr mh;
	struct cmsghdr *c;
	ssize_t n;
	int fd = -1;

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = &iov;
	mh.msg_iovlen = 1;
	mh.msg_control = u.buf;
	mh.msg_controllen = sizeof(u.buf);
	do
		n = recvmsg(ctl, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n <= 0)
		return -1;
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS &&
		    c->cmsg_len == CMSG_LEN(sizeof(int)))
			memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd < 0 ? -2 : fd;
}

/* Before the sandbox: what the enclave may use but could not open inside it. */
static void prepare(void)
{
	static const char *const preload[] = {"libm.so.6", "libgcc_s.so.1", "libstdc++.so.6"};
	uint8_t warm[MOAT_MEASUREMENT_LEN];
	size_t i;

	/*
	 * Nothing can be opened from disk inside the sandbox, so an enclave can
	 * only link libraries that are loaded already. Besides libc, load the
	 * ones enclaves commonly need (system libraries, not enclave code).
	 */
	for (i = 0; i < sizeof(preload) / sizeof(preload[0]); i++)
		dlopen(preload[i], RTLD_NOW | RTLD_LOCAL);
	/* OpenSSL reads its configuration on first use: do that before the sandbox. */
	moat__sha256(warm, "", 0);
	/*
	 * malloc counts the CPUs (reading /sys) when a thread first needs an
	 * arena of its own, unless the limit is set: set it here to glibc's own
	 * default, 8 per CPU.
	 */
	mallopt(M_ARENA_MAX, 8 * get_nprocs());
	/*
	 * Large items are copied through a few buffers per call; serving them
	 * from the heap rather than fresh mappings saves the page faults of
	 * every call. The runner's memory is the enclave's alone, so keeping it
	 * costs nobody else.
	 */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 128 << 20);
}

/*
 * Before the sandbox: load the libraries the image needs, which cannot be
 * opened from disk inside it. A library that does not load is reported on
 * the control socket by name and reason; the load then fails in the host.
 * Returns 0 or -1.
 */
static int load_needed(const moat_runner_mode *mode, int ctl)
{
	static const moat_proc_note head = {MOAT_PROC_NOTE_MAGIC, MOAT_PROC_NOTE_LIBRARY, 0, 0, 0, 0};
	char why[MOAT_PROC_NOTE_TEXT];
	struct iovec iov[2] = {{(void *)&head, sizeof(head)}, {why, sizeof(why)}};
	int i;

	for (i = 0; i < mode->n_needed; i++) {
		if (dlopen(mode->needed[i], RTLD_NOW | RTLD_LOCAL))
			continue;
		memset(why, 0, sizeof(why));
		snprintf(why, sizeof(why), "%s", dlerror());
		/* The host learns of it from the note, or from the runner's exit when even that failed. */
		(void)!writev(ctl, iov, 2);
		return -1;
	}
	return 0;
}

/* A worker thread for each channel the host passes, until the host closes the control socket. */
static void serve_channels(int ctl)
{
	for (;;) {
		pthread_attr_t attr;
		pthread_t thread;
		channel *ch;
		int fd = receive_channel(ctl);

		if (fd == -1)
			return;
		if (fd < 0)
			continue;
		ch = calloc(1, sizeof(*ch));
		if (!ch) {
			close(fd);
			continue;
		}
		ch->wire.fd = fd;
		moat__conv_init(&ch->conv, &runner_ops, ch, NULL);
		ch->conv.max_depth = MOAT_PROC_MAX_NESTING;
		ch->conv.depth_limit_name = "the proc runner's limit, MOAT_PROC_MAX_NESTING";
		ch->conv.depth_limit_origin = MOAT_ORIGIN_ENCLAVE;
		pthread_attr_init(&attr);
		pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
		/* Sized for the nesting limit: each level is a few runtime frames plus the enclave's own. */
		pthread_attr_setstacksize(&attr, WORKER_STACK);
		if (pthread_create(&thread, &attr, worker_main, ch) != 0) {
			/* The host sees its channel close and reports the enclave lost. */
			close(fd);
			free(ch);
		}
		pthread_attr_destroy(&attr);
	}
}

/* The runner's pid as the host's /proc numbers it (it may be PID 2 of its own namespace); 0 if unknown. */
static long outer_pid(void)
{
	char link[32];
	ssize_t n = readlink("/proc/self", link, sizeof(link) - 1);
	char *end;
	long pid;

	if (n <= 0)
		return 0;
	link[n] = '\0';
	pid = strtol(link, &end, 10);
	return *end || pid <= 0 ? 0 : pid;
}

/*
 * Parse "--moat-proc PROTOCOL --parent PID [--jit] [--debug] [--remote] [--needed NAME
 * --needed NAME ...]"; returns the parent's pid or -1. The needed names
 * are collected at the end of argv.
 */
static long parse_args(int argc, char **argv, moat_runner_mode *mode)
{
	char *end;
	long parent;
	int i;

	memset(mode, 0, sizeof(*mode));
	if (argc < 5 || strcmp(argv[1], "--moat-proc") != 0 || strcmp(argv[2], MOAT_PROC_PROTOCOL) != 0 ||
	    strcmp(argv[3], "--parent") != 0)
		return -1;
	mode->needed = argv + 5;
	for (i = 5; i < argc; i++) {
		if (strcmp(argv[i], "--jit") == 0)
			mode->jit = 1;
		else if (strcmp(argv[i], "--debug") == 0)
			mode->debug = 1;
		else if (strcmp(argv[i], "--remote") == 0)
			mode->remote = 1;
		else if (strcmp(argv[i], "--needed") == 0 && i + 1 < argc && !strchr(argv[i + 1], '/'))
			mode->needed[mode->n_needed++] = argv[++i];
		else
			return -1;
	}
	parent = strtol(argv[4], &end, 10);
	return *end || parent <= 0 ? -1 : parent;
}

int main(int argc, char **argv)
{
	moat_runner_mode mode;
	moat_proc_note hello;
	unsigned int isolation = 0;
	int ns_errno = 0, sig, rc, ctl = MOAT_PROC_CTL_FD;
	sigset_t none;
	long parent = parse_args(argc, argv, &mode);

	if (parent < 0) {
		fprintf(stderr, "moat-enclave-host: started by libmoat only (protocol %s)\n",
		        MOAT_PROC_PROTOCOL);
		return 2;
	}
	/* Die with the host; the check after it closes the race with a host that died already. */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != (pid_t)parent)
		return 2;
	/* Start from default signal handling whatever the host had. */
	for (sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			signal(sig, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
	/* Namespaces first, while this is one small thread; from here on this may be PID 2 of its own. */
	isolation = moat__runner_contain((pid_t)parent, &ns_errno, &rc);
	/* The image copy is made now: inside the sandbox nothing can hold memory outside its limit. */
	if (rc == 0)
		rc = moat__image_reserve_memfd();
	if (mode.debug && (mode.outer_pid = outer_pid()) > 0)
		moat__image_name_by_pid(mode.outer_pid);
	prepare();
	if (rc == 0 && load_needed(&mode, ctl) < 0)
		_exit(1);
	if (rc == 0)
		rc = moat__runner_fault_init(ctl);
	if (rc == 0)
		rc = moat__runner_sandbox_enter(ctl, &mode, &isolation);
	memset(&hello, 0, sizeof(hello));
	hello.magic = MOAT_PROC_NOTE_MAGIC;
	hello.kind = MOAT_PROC_NOTE_HELLO;
	hello.isolation = isolation;
	hello.value = rc < 0 ? -rc : 0;
	hello.ns_errno = ns_errno;
	hello.aux = (int32_t)mode.outer_pid;
	runner_isolation = isolation;
	runner_debug = mode.debug;
	runner_remote = mode.remote;
	if (send(ctl, &hello, sizeof(hello), MSG_NOSIGNAL) != (ssize_t)sizeof(hello) || rc < 0)
		_exit(1);
	serve_channels(ctl);
	/* The host closed the control socket: destroy, or the host died. */
	_exit(0);
}
