/*
 * SIGHUP: parse the command line and the --config file again and apply what
 * can change while moatd serves, without touching a session: the log level
 * and format, the enclave directory (for Loads from then on) and the TLS
 * certificate, key and client CA (for connections from then on). The log
 * says what changed, and which other changes wait for a restart. The
 * signal handler only sets a flag; the server loop does the work.
 */
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "moatd/moatd.h"

static int saved_argc;
static char **saved_argv;
static volatile sig_atomic_t requested;

void moatd_reload_init(int argc, char **argv)
{
	saved_argc = argc;
	saved_argv = argv;
}

void moatd_reload_request(void)
{
	requested = 1;
}

static int same_str(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* Options that take effect only at start-up, with where they live in the configuration. */
#define FIELD(option, field, is_str)                                                              \
	{                                                                                         \
		option, offsetof(moatd_config, field), sizeof(((moatd_config *)0)->field), is_str \
	}
static const struct {
	const char *name;
	size_t off, size;
	int is_str;
} restart_only[] = {
    FIELD("--listen", listen, 1),
    FIELD("--backend", backend, 1),
    FIELD("--state-dir", state_dir, 1),
    FIELD("--identity-endorsement", endorsement, 1),
    FIELD("--ready-file", ready_file, 1),
    FIELD("--metrics-listen", metrics_listen, 1),
    FIELD("--allow-upload", allow_upload, 0),
    FIELD("--insecure-upload", insecure_upload, 0),
    FIELD("--allow-debug", allow_debug, 0),
    FIELD("--ignore-fd-limit", ignore_fd_limit, 0),
    FIELD("--socket-mode", socket_mode, 0),
    FIELD("--max-sessions", max_sessions, 0),
    FIELD("--max-threads-per-session", max_threads, 0),
    FIELD("--max-nesting", max_nesting, 0),
    FIELD("--session-grace-ms", grace_ms, 0),
    FIELD("--shutdown-timeout", shutdown_s, 0),
    FIELD("--max-attached-threads", max_attached, 0),
    FIELD("--max-pending-calls", max_pending, 0),
    FIELD("--max-connections", max_connections, 0),
    FIELD("--request-timeout-ms", request_timeout_ms, 0),
    FIELD("--max-uploads", max_uploads, 0),
    FIELD("--max-message-bytes", max_message, 0),
    FIELD("--max-image-bytes", max_image, 0),
    FIELD("--max-store-bytes", max_store, 0),
};

static int field_same(const moatd_config *a, const moatd_config *b, size_t i)
{
	const char *pa = (const char *)a + restart_only[i].off, *pb = (const char *)b + restart_only[i].off;
	const char *sa, *sb;

	if (!restart_only[i].is_str)
		return memcmp(pa, pb, restart_only[i].size) == 0;
	memcpy(&sa, pa, sizeof(sa));
	memcpy(&sb, pb, sizeof(sb));
	return same_str(sa, sb);
}

/* Append "; what" (or "what" first) to the report. */
static void add(char *out, size_t cap, const char *what)
{
	size_t n = strlen(out);

	snprintf(out + n, cap - n, "%s%s", n ? "; " : "", what);
}

/* The TLS files: re-read (they may have changed in place) whenever moatd serves TLS. */
static void reload_tls(moatd *d, const moatd_config *f, char *done, size_t cap, char *later, size_t lcap)
{
	moatd_config *c = &d->cfg;
	char err[600], what[600];

	if (!c->tls_cert && !f->tls_cert)
		return;
	if (!c->tls_cert != !f->tls_cert || !c->tls_client_ca != !f->tls_client_ca) {
		add(later, lcap,
		    c->tls_cert && f->tls_cert ? "requiring client certificates or not" : "TLS on or off");
		return;
	}
	if (moat__rpc_server_tls_load(f->tls_cert, f->tls_key, f->tls_client_ca, err, sizeof(err)) < 0) {
		moatd_log(MOATD_LOG_ERROR, "reload: TLS files not reloaded, the old ones stay: %s", err);
		return;
	}
	c->tls_cert = f->tls_cert;
	c->tls_key = f->tls_key;
	c->tls_client_ca = f->tls_client_ca;
	snprintf(what, sizeof(what), "TLS certificate %s and key %s%s%s reloaded for new connections",
	         f->tls_cert, f->tls_key, f->tls_client_ca ? " and client CA " : "",
	         f->tls_client_ca ? f->tls_client_ca : "");
	add(done, cap, what);
}

static void reload(moatd *d)
{
	static const char *const levels[] = {"error", "warn", "info", "debug"};
	moatd_config *c = &d->cfg, f;
	char done[2000] = "", later[1000] = "", what[1200];
	size_t i;

	memset(&f, 0, sizeof(f));
	if (moatd_options_parse(&f, saved_argc, saved_argv) != 0) {
		moatd_log(MOATD_LOG_ERROR,
		          "reload (SIGHUP): the command line or --config file has errors (above); "
		          "nothing changed");
		return;
	}
	if (f.log_level != c->log_level) {
		snprintf(what, sizeof(what), "log level %s -> %s", levels[c->log_level], levels[f.log_level]);
		add(done, sizeof(done), what);
		c->log_level = f.log_level;
		__atomic_store_n(&moatd_log_level, f.log_level, __ATOMIC_RELAXED);
	}
	if (f.log_format != c->log_format) {
		add(done, sizeof(done),
		    f.log_format == MOATD_LOG_JSON ? "log format json" : "log format text");
		c->log_format = f.log_format;
		moatd_log_set_format(f.log_format);
	}
	if (!same_str(f.enclave_dir, c->enclave_dir)) {
		if (!f.enclave_dir) {
			/* A Load under way may be reading it: it can change, not go. */
			add(later, sizeof(later), "no --enclave-dir");
		} else {
			snprintf(what, sizeof(what), "enclave directory %s -> %s",
			         c->enclave_dir ? c->enclave_dir : "(none)", f.enclave_dir);
			add(done, sizeof(done), what);
			__atomic_store_n(&c->enclave_dir, f.enclave_dir, __ATOMIC_RELEASE);
		}
	}
	reload_tls(d, &f, done, sizeof(done), later, sizeof(later));
	for (i = 0; i < sizeof(restart_only) / sizeof(restart_only[0]); i++)
		if (!field_same(c, &f, i))
			add(later, sizeof(later), restart_only[i].name);
	moatd_log(MOATD_LOG_WARN, "reloaded (SIGHUP): %s; %u sessions kept", *done ? done : "nothing changed",
	          moatd_session_count(d));
	if (*later)
		moatd_log(MOATD_LOG_WARN, "reload: these changes need a restart and were not applied: %s",
		          later);
	moatd_startup_warnings(c);
}

void moatd_reload_poll(moatd *d)
{
	if (!requested)
		return;
	requested = 0;
	moatd_notify_reloading(0);
	moatd_metrics_reload();
	reload(d);
	moatd_notify_reloading(1);
}
