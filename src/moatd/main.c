/*
 * moatd: signals and the server loop. The command line is options.c, the
 * service the other files (see moatd.h).
 */
#include <errno.h>
#include <ftw.h>
#include <libgen.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moatd/moatd.h"

/* The one daemon of the process: the signal handlers reach it here; everything else gets it as ctx. */
static moatd the_daemon;

/*
 * A clean stop cancels the streams and destroys every enclave, but an
 * enclave call that never returns (a handler stuck in a loop, with the sim
 * backend) would hold it forever. So the first signal also arms a deadline,
 * and a second signal, or the deadline, ends the process at once; enclave
 * host processes die with it (parent-death signal).
 */
static void on_shutdown_deadline(int sig)
{
	static const char msg[] =
	    "moatd: shutdown did not finish in time (an enclave call is still running); "
	    "exiting without it\n";

	(void)sig;
	if (write(STDERR_FILENO, msg, sizeof(msg) - 1) < 0) {
		/* Nothing more can be done from a signal handler. */
	}
	_exit(1);
}

static void on_signal(int sig)
{
	if (the_daemon.stop)
		on_shutdown_deadline(sig);
	the_daemon.stop = 1;
	alarm(the_daemon.cfg.shutdown_s);
}

/* SIGHUP: reload on the server loop's next turn (reload.c). */
static void on_reload(int sig)
{
	(void)sig;
	moatd_reload_request();
}

/* SIGUSR2: drain (no new sessions; stop once the last one ended, or after --shutdown-timeout). */
static void on_drain(int sig)
{
	(void)sig;
	the_daemon.draining = 1;
}

static void install_signals(void)
{
	struct sigaction sa;

	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_drain;
	sigaction(SIGUSR2, &sa, NULL);
	sa.sa_handler = on_shutdown_deadline;
	sigaction(SIGALRM, &sa, NULL);
	sa.sa_handler = on_reload;
	sigaction(SIGHUP, &sa, NULL);
}

/* A drain ends when the last session did, or after --shutdown-timeout; then moatd stops as on SIGTERM. */
static void drain_tick(moatd *d)
{
	static struct timespec since;
	unsigned int left;

	if (!d->draining || d->stop)
		return;
	left = moatd_session_count(d);
	if (since.tv_sec == 0) {
		clock_gettime(CLOCK_MONOTONIC, &since);
		moatd_log(MOATD_LOG_INFO,
		          "draining: no new sessions; stopping once the %u left have ended "
		          "(at most %u s)",
		          left, d->cfg.shutdown_s);
	}
	if (left == 0 || moat__ms_since(&since) >= 1000.0 * d->cfg.shutdown_s) {
		moatd_log(MOATD_LOG_INFO, "drained (%u sessions left): stopping", left);
		d->stop = 1;
		alarm(d->cfg.shutdown_s);
	}
}

/* Called on every turn of the server loop (every 2-20 ms). */
static void tick(void *ctx)
{
	moatd *d = ctx;

	/* A private moatd (local provisioning) ends when the process that started it is gone. */
	if (d->cfg.parent_fd >= 0) {
		struct pollfd p = {d->cfg.parent_fd, POLLIN, 0};

		if (poll(&p, 1, 0) > 0 && !d->stop) {
			d->stop = 1;
			alarm(d->cfg.shutdown_s);
		}
	}
	moatd_reload_poll(d);
	moatd_notify_tick();
	moatd_tick(d);
	drain_tick(d);
	moatd_health_tick(d);
}

/* The server loop saw the stop request: calls that would never return must not hold the exit. */
static void stopping(void *ctx)
{
	moatd_target_stopping(ctx);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/*
 * A private moatd whose host died cleans up after itself: its state
 * directory, and the host's private directory around it once empty.
 */
static void remove_private_state(const char *state_dir)
{
	char parent[4200];

	snprintf(parent, sizeof(parent), "%s", state_dir);
	nftw(state_dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	rmdir(dirname(parent));
}

static int write_ready(const char *file, const char *addr)
{
	char tmp[4200];
	FILE *f;

	/* Write then rename, so a reader never sees half an address. */
	snprintf(tmp, sizeof(tmp), "%s.tmp", file);
	f = fopen(tmp, "w");
	if (!f)
		return -1;
	fprintf(f, "%s\n", addr);
	if (fclose(f) != 0)
		return -1;
	return rename(tmp, file);
}

/*
 * File descriptors moatd may need, by what holds them: a session (its
 * enclave's process and pipes with --backend proc, and the up to 8
 * connections plus lease of its host), an attached host thread or a
 * pending call or health watch (at worst a connection each), and a headroom for gRPC
 * itself, the log and the state directory's files.
 */
#define FDS_PER_SESSION 16
#define FDS_PER_THREAD  1
#define FDS_HEADROOM    64
/* With TLS gRPC accepts by itself, and connections past --max-connections are shut a moment later. */
#define FDS_TLS_BURST 1024

/* Descriptors kept from connections for the sessions' own (the accept thread's reserve). */
static unsigned int fd_reserve;

/*
 * Raise the soft RLIMIT_NOFILE to the hard one and check that the limits
 * fit in it. Returns 0, or -1 (reported) when they do not and
 * --ignore-fd-limit was not given.
 */
static int check_fd_limit(const moatd_config *c)
{
	unsigned long long sessions = c->max_sessions ? c->max_sessions : 1000000ull;
	unsigned long long threads = c->max_threads ? c->max_threads : 1000000ull;
	unsigned long long attached = sessions * threads, need, conns;
	struct rlimit rl;
	unsigned long long have;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0) {
		moatd_log(MOATD_LOG_ERROR, "cannot read RLIMIT_NOFILE: %s", strerror(errno));
		return -1;
	}
	if (rl.rlim_cur < rl.rlim_max) {
		rlim_t was = rl.rlim_cur;

		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			rl.rlim_cur = was;
	}
	have = rl.rlim_cur == RLIM_INFINITY ? (1ull << 30) : (unsigned long long)rl.rlim_cur;
	if (attached > c->max_attached)
		attached = c->max_attached;
	/* Each attached thread, pending call or health watch holds at worst a connection of its own. */
	conns = (attached + c->max_pending + c->max_watches) * FDS_PER_THREAD;
	if (conns > c->max_connections)
		conns = c->max_connections;
	need = sessions * FDS_PER_SESSION + conns + FDS_HEADROOM + (c->tls_cert ? FDS_TLS_BURST : 0);
	fd_reserve = (unsigned int)(sessions * FDS_PER_SESSION + FDS_HEADROOM < have / 2
	                                ? sessions * FDS_PER_SESSION + FDS_HEADROOM
	                                : have / 2);
	moatd_log(MOATD_LOG_INFO,
	          "file descriptors: %llu allowed (RLIMIT_NOFILE), the limits need up to %llu; %u kept from "
	          "connections",
	          have, need, fd_reserve);
	if (need <= have)
		return 0;
	moatd_log(
	    c->ignore_fd_limit ? MOATD_LOG_WARN : MOATD_LOG_ERROR,
	    "the limits need up to %llu file descriptors (%s sessions x %u + %llu connections (attached "
	    "threads, pending calls and health watches, at most --max-connections) + %u%s) but "
	    "RLIMIT_NOFILE allows %llu: lower --max-sessions, --max-connections, "
	    "--max-attached-threads or --max-pending-calls, or raise the hard limit (ulimit -Hn)%s",
	    need, c->max_sessions ? "--max-sessions" : "unlimited", FDS_PER_SESSION, conns, FDS_HEADROOM,
	    c->tls_cert ? " + 1024 for a burst of TLS connections" : "", have,
	    c->ignore_fd_limit ? "; going on (--ignore-fd-limit): connections past the limit are "
	                         "refused"
	                       : "; or start with --ignore-fd-limit to go on anyway");
	return c->ignore_fd_limit ? 0 : -1;
}

/*
 * The rpc server's reports (refused connections and calls): counted, and
 * logged rate-limited by kind, so that a flood of one (request timeouts)
 * does not hide the lines of another (a refused connection).
 */
static void server_report(void *ctx, int error, int refusal, unsigned int count, const char *msg)
{
	static const uint64_t kinds[MOAT_RPC_N_REFUSED]; /* one rate-limit key per kind: the addresses */

	(void)ctx;
	moatd_metrics_server_refusal(refusal, count);
	moatd_log_keyed(error ? MOATD_LOG_WARN : MOATD_LOG_INFO,
	                refusal >= 0 && refusal < MOAT_RPC_N_REFUSED ? (const void *)&kinds[refusal] : NULL,
	                "server: %s", msg);
}

/* gRPC's own log lines go to moatd's log, rate-limited like every other line. */
static void grpc_log(int severity, const char *file, int line, const char *msg)
{
	moatd_log(severity == 2 ? MOATD_LOG_WARN : MOATD_LOG_DEBUG, "grpc: %s (%s:%d)", msg, file, line);
}

/* Start serving; on success the bound address is in addr. */
static int start_server(moatd *d, moat_rpc_server **srv, char *addr, size_t cap)
{
	const moatd_config *c = &d->cfg;
	moat_rpc_server_opts so = {0};
	/* The server keeps pointers to these: they live as long as the process. */
	static char pending_limit[200], calls_limit[200], parked_limit[160], conn_limit[120],
	    timeout_message[120];
	char err[512];
	int port;

	so.listen = c->listen;
	so.tls_cert_file = c->tls_cert;
	so.tls_key_file = c->tls_key;
	so.tls_client_ca = c->tls_client_ca;
	so.max_receive_bytes = (long)c->max_message;
	so.handler = moatd_handle_call;
	so.methods = moatd_methods;
	so.n_methods = moatd_n_methods;
	so.admit = moatd_admit_call;
	so.dropped = moatd_dropped_call;
	so.thread_stack_bytes = moatd_stack_bytes(c->max_nesting);
	so.max_parked = c->max_watches;
	so.ctx = d;
	so.tick = tick;
	so.stopping = stopping;
	so.max_pending = c->max_pending;
	/* Threads: one per attached stream; Load, Destroy and Upload end soon after their request. */
	so.max_calls = c->max_pending + c->max_attached + (c->max_sessions ? c->max_sessions : 64);
	snprintf(pending_limit, sizeof(pending_limit),
	         "this target already has %u calls waiting for their request (--max-pending-calls %u)",
	         c->max_pending, c->max_pending);
	snprintf(calls_limit, sizeof(calls_limit),
	         "this target already runs %u calls on threads (--max-attached-threads %u plus "
	         "--max-pending-calls %u and a call per session)",
	         so.max_calls, c->max_attached, c->max_pending);
	snprintf(timeout_message, sizeof(timeout_message),
	         "the request message did not arrive within %u ms (--request-timeout-ms)",
	         c->request_timeout_ms);
	snprintf(parked_limit, sizeof(parked_limit),
	         "this target already has %u Health/Watch streams open (--max-health-watches %u)",
	         c->max_watches, c->max_watches);
	so.parked_limit = parked_limit;
	snprintf(conn_limit, sizeof(conn_limit), "%u connections are open (--max-connections %u)",
	         c->max_connections, c->max_connections);
	so.max_connections = c->max_connections;
	so.connections_limit = conn_limit;
	so.pending_limit = pending_limit;
	so.calls_limit = calls_limit;
	so.recv_timeout_ms = c->request_timeout_ms;
	so.recv_timeout_message = timeout_message;
	so.fd_reserve = fd_reserve;
	so.report = server_report;
	if (moat__rpc_server_start(srv, &so, &port, err, sizeof(err)) < 0) {
		moatd_log(MOATD_LOG_ERROR, "%s", err);
		return -1;
	}
	if (strncmp(c->listen, "unix:", 5) == 0) {
		snprintf(addr, cap, "%s", c->listen);
	} else {
		const char *colon = strrchr(c->listen, ':');
		int hl = colon ? (int)(colon - c->listen) : (int)strlen(c->listen);

		snprintf(addr, cap, "%.*s:%d", hl, c->listen, port);
	}
	return 0;
}

/*
 * Start serving with a unix: listener's socket file made owner-only and
 * then given --socket-mode, whatever moatd's umask: whoever can connect can
 * load enclaves.
 */
static int start_listener(moatd *d, moat_rpc_server **srv, char *addr, size_t cap)
{
	const char *listen = d->cfg.listen;
	mode_t old = umask(077);
	int rc = start_server(d, srv, addr, cap);

	umask(old);
	if (rc == 0 && strncmp(listen, "unix:", 5) == 0 && chmod(listen + 5, d->cfg.socket_mode) < 0) {
		moatd_log(MOATD_LOG_ERROR, "cannot set the mode of %s: %s", listen + 5, strerror(errno));
		moat__rpc_server_free(*srv);
		*srv = NULL;
		return -1;
	}
	return rc;
}

/* Say where moatd serves and with which key: stderr, the ready file, then stdout. */
static int announce(moatd *d, const char *addr)
{
	const moatd_config *c = &d->cfg;
	char keyhex[65], uri[4300];

	moat__hex(keyhex, d->public_key, 32);
	if (moatd_log_level >= MOATD_LOG_WARN)
		fprintf(stderr, "moatd %s: identity key ed25519:%s%s\n", moat_version(), keyhex,
		        d->has_endorsement ? " (endorsed)" : "");
	if (c->ready_file && write_ready(c->ready_file, addr) < 0) {
		moatd_log(MOATD_LOG_ERROR, "cannot write %s: %s", c->ready_file, strerror(errno));
		return -1;
	}
	/* stdout says what a host passes as its backend; the ready file keeps the bare address. */
	moatd_listen_uri(c, addr, uri, sizeof(uri));
	printf("%s\n", uri);
	fflush(stdout);
	moatd_log(MOATD_LOG_INFO, "serving on %s (backend %s%s%s)", uri, c->backend,
	          c->tls_cert ? ", TLS" : "", c->tls_client_ca ? ", client certificates required" : "");
	moatd_notify_ready(uri);
	return 0;
}

/* --print-key: the identity key in hex on stdout (made on first use), for moat endorse and --target-key. */
static int print_key(moatd *d)
{
	char keyhex[65];
	int rc = 1;

	if (moatd_identity_load(d) == 0) {
		moat__hex(keyhex, d->public_key, 32);
		printf("%s\n", keyhex);
		rc = 0;
	}
	EVP_PKEY_free(d->key);
	moatd_config_file_free();
	return rc;
}

int main(int argc, char **argv)
{
	moatd *d = &the_daemon;
	moatd_config *c = &d->cfg;
	moat_rpc_server *srv = NULL;
	char addr[4200];
	int rc;

	rc = moatd_options_parse(c, argc, argv);
	if (rc) {
		moatd_config_file_free();
		return rc == 1 ? 0 : rc;
	}
	rc = 1;
	moatd_log_level = c->log_level;
	moatd_log_set_format(c->log_format);
	if (c->print_key)
		return print_key(d);
	moatd_reload_init(argc, argv);

	/*
	 * Large call items are allocated and freed on every call; above glibc's
	 * default mmap threshold each one would be mapped, faulted in and
	 * unmapped again. Keep them on the heap (this is moatd's own process).
	 */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	install_signals();
	moatd_startup_warnings(c);
	if (check_fd_limit(c) < 0)
		return 2;

	if (moatd_identity_load(d) < 0 || moatd_endorsement_load(d) < 0)
		goto out;
	moatd_sessions_init(d);
	moatd_store_init(d);
	moat__rpc_init();
	moat__rpc_set_log(grpc_log);
	if (start_listener(d, &srv, addr, sizeof(addr)) < 0)
		goto out_rpc;
	d->srv = srv;
	if ((c->metrics_listen && moatd_metrics_start(d, c->metrics_listen) < 0) || announce(d, addr) < 0)
		goto out_srv;

	moat__rpc_server_run(srv, &d->stop);
	moatd_notify_stopping();
	moatd_log(MOATD_LOG_INFO, "stopping: %u sessions left", moatd_session_count(d));
	moatd_target_shutdown(d);
	rc = 0;
out_srv:
	moatd_metrics_stop();
	moat__rpc_server_free(srv);
	if (c->ready_file && rc == 0)
		unlink(c->ready_file);
	/* Leave no socket file behind. */
	if (strncmp(c->listen, "unix:", 5) == 0 && c->listen[5] == '/')
		unlink(c->listen + 5);
	if (c->parent_fd >= 0 && rc == 0)
		remove_private_state(c->state_dir);
out_rpc:
	moat__rpc_shutdown();
out:
	EVP_PKEY_free(d->key);
	moatd_config_file_free();
	return rc;
}
