/*
 * moatd: command line, identity key, signals and the server loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>

#include <moat/moat.h>

#include "moatd/moatd.h"

#ifndef MOATD_DEFAULT_BACKEND
#define MOATD_DEFAULT_BACKEND "sim"
#endif

int moatd_log_level = MOATD_LOG_WARN;
static moatd the_daemon;

void moatd_log(int level, const char *fmt, ...)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	char line[1024];
	va_list ap;

	if (level > moatd_log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "moatd[%d] %s: %s\n", (int)getpid(), names[level], line);
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: moatd --listen ADDR [options]\n"
	        "Host Moat enclaves for remote hosts (gRPC service moat.v1.Target).\n\n"
	        "  --listen ADDR                 host:port (port 0 picks a free one) or unix:/path\n"
	        "  --tls-cert F --tls-key F      serve TLS with this certificate and key (PEM)\n"
	        "  --tls-client-ca F             require client certificates signed by this CA (mutual TLS)\n"
	        "  --enclave-dir DIR             images hosts may load by name\n"
	        "  --allow-upload                accept images uploaded by hosts (content-addressed, SHA-256 "
	        "checked)\n"
	        "  --backend sim|proc            local backend that hosts the enclaves (default %s)\n"
	        "  --max-sessions N              most sessions at once (default 64)\n"
	        "  --max-threads-per-session N   most attached host threads per session (default 256)\n"
	        "  --max-message-bytes N         largest call message accepted (default 67108864)\n"
	        "  --max-image-bytes N           largest uploaded image (default 268435456)\n"
	        "  --session-grace-ms N          reclaim a session this long after its host vanished "
	        "(default 2000)\n"
	        "  --shutdown-timeout S          on SIGTERM/SIGINT, exit anyway after S seconds if an "
	        "enclave call\n"
	        "                                still runs (default 10; a second signal exits at once)\n"
	        "  --state-dir DIR               identity key and uploaded images (default ./moatd-state)\n"
	        "  --ready-file F                write the bound address to F once serving\n"
	        "  --log-level L                 error, warn, info or debug (default warn)\n"
	        "  --help, --version\n",
	        MOATD_DEFAULT_BACKEND);
}

static int takes_value(const char *opt)
{
	static const char *const names[] = {"--listen",
	                                    "--tls-cert",
	                                    "--tls-key",
	                                    "--tls-client-ca",
	                                    "--enclave-dir",
	                                    "--state-dir",
	                                    "--ready-file",
	                                    "--backend",
	                                    "--max-sessions",
	                                    "--max-threads-per-session",
	                                    "--max-message-bytes",
	                                    "--max-image-bytes",
	                                    "--session-grace-ms",
	                                    "--shutdown-timeout",
	                                    "--parent-fd",
	                                    "--log-level"};
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(opt, names[i]) == 0)
			return 1;
	return 0;
}

static int parse_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-')
		return -1;
	*out = (size_t)v;
	return 0;
}

static int parse_uint(const char *s, unsigned int *out)
{
	size_t v;

	if (parse_size(s, &v) < 0 || v > UINT_MAX)
		return -1;
	*out = (unsigned int)v;
	return 0;
}

/* Load the Ed25519 identity key from the state directory, making one on first start. */
static int load_identity(moatd *d)
{
	char path[4200];
	size_t n = 32;
	FILE *f;
	int fd;

	if (mkdir(d->cfg.state_dir, 0700) < 0 && errno != EEXIST) {
		moatd_log(MOATD_LOG_ERROR, "cannot create state directory %s: %s", d->cfg.state_dir,
		          strerror(errno));
		return -1;
	}
	snprintf(path, sizeof(path), "%s/identity.pem", d->cfg.state_dir);
	f = fopen(path, "r");
	if (f) {
		d->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
		if (!d->key || EVP_PKEY_get_id(d->key) != EVP_PKEY_ED25519) {
			moatd_log(MOATD_LOG_ERROR, "%s is not an Ed25519 private key", path);
			return -1;
		}
	} else {
		EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);

		if (!kc || EVP_PKEY_keygen_init(kc) <= 0 || EVP_PKEY_keygen(kc, &d->key) <= 0) {
			EVP_PKEY_CTX_free(kc);
			moatd_log(MOATD_LOG_ERROR, "cannot generate an Ed25519 key");
			return -1;
		}
		EVP_PKEY_CTX_free(kc);
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		f = fd >= 0 ? fdopen(fd, "w") : NULL;
		if (!f || !PEM_write_PrivateKey(f, d->key, NULL, NULL, 0, NULL, NULL)) {
			moatd_log(MOATD_LOG_ERROR, "cannot write %s: %s", path, strerror(errno));
			if (f)
				fclose(f);
			else if (fd >= 0)
				close(fd);
			return -1;
		}
		fclose(f);
		moatd_log(MOATD_LOG_INFO, "made a new identity key in %s", path);
	}
	if (EVP_PKEY_get_raw_public_key(d->key, d->public_key, &n) <= 0 || n != 32)
		return -1;
	return 0;
}

int moatd_sign(moatd *d, uint8_t sig[64], const uint8_t *data, size_t len)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	size_t n = 64;
	int ok;

	ok = c && EVP_DigestSignInit(c, NULL, NULL, NULL, d->key) > 0 &&
	     EVP_DigestSign(c, sig, &n, data, len) > 0;
	EVP_MD_CTX_free(c);
	return ok && n == 64 ? 0 : -1;
}

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
	moatd_tick(d);
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

int main(int argc, char **argv)
{
	moatd *d = &the_daemon;
	moatd_config *c = &d->cfg;
	moat_rpc_server_opts so = {0};
	moat_rpc_server *srv = NULL;
	struct sigaction sa;
	char err[512], addr[4200], keyhex[65];
	int i, port, rc = 1;

	c->backend = MOATD_DEFAULT_BACKEND;
	c->max_sessions = 64;
	c->max_threads = 256;
	c->max_message = 64u << 20;
	c->max_image = 256u << 20;
	c->grace_ms = 2000;
	c->shutdown_s = 10;
	c->state_dir = "moatd-state";
	c->parent_fd = -1;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		int bad = 0;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(a, "--version") == 0) {
			printf("moatd %s\n", moat_version());
			return 0;
		} else if (strcmp(a, "--allow-upload") == 0) {
			c->allow_upload = 1;
			continue;
		}
		if (!takes_value(a)) {
			fprintf(stderr, "moatd: unknown option %s (see --help)\n", a);
			return 2;
		}
		if (!v) {
			fprintf(stderr, "moatd: %s needs a value (see --help)\n", a);
			return 2;
		}
		i++;
		if (strcmp(a, "--listen") == 0)
			c->listen = v;
		else if (strcmp(a, "--tls-cert") == 0)
			c->tls_cert = v;
		else if (strcmp(a, "--tls-key") == 0)
			c->tls_key = v;
		else if (strcmp(a, "--tls-client-ca") == 0)
			c->tls_client_ca = v;
		else if (strcmp(a, "--enclave-dir") == 0)
			c->enclave_dir = v;
		else if (strcmp(a, "--state-dir") == 0)
			c->state_dir = v;
		else if (strcmp(a, "--ready-file") == 0)
			c->ready_file = v;
		else if (strcmp(a, "--backend") == 0)
			c->backend = v;
		else if (strcmp(a, "--max-sessions") == 0)
			bad = parse_uint(v, &c->max_sessions);
		else if (strcmp(a, "--max-threads-per-session") == 0)
			bad = parse_uint(v, &c->max_threads);
		else if (strcmp(a, "--max-message-bytes") == 0)
			bad = parse_size(v, &c->max_message);
		else if (strcmp(a, "--max-image-bytes") == 0)
			bad = parse_size(v, &c->max_image);
		else if (strcmp(a, "--session-grace-ms") == 0)
			bad = parse_uint(v, &c->grace_ms);
		else if (strcmp(a, "--shutdown-timeout") == 0)
			bad = parse_uint(v, &c->shutdown_s) < 0 || c->shutdown_s == 0;
		else if (strcmp(a, "--parent-fd") == 0) { /* internal: local provisioning */
			unsigned int fd = 0;

			bad = parse_uint(v, &fd) < 0 || fd > INT_MAX;
			c->parent_fd = (int)fd;
		} else if (strcmp(a, "--log-level") == 0) {
			if (strcmp(v, "error") == 0)
				moatd_log_level = MOATD_LOG_ERROR;
			else if (strcmp(v, "warn") == 0)
				moatd_log_level = MOATD_LOG_WARN;
			else if (strcmp(v, "info") == 0)
				moatd_log_level = MOATD_LOG_INFO;
			else if (strcmp(v, "debug") == 0)
				moatd_log_level = MOATD_LOG_DEBUG;
			else
				bad = -1;
		} else {
			fprintf(stderr, "moatd: unknown option %s (see --help)\n", a);
			return 2;
		}
		if (bad) {
			fprintf(stderr, "moatd: bad value '%s' for %s\n", v, a);
			return 2;
		}
	}
	if (!c->listen) {
		fprintf(stderr, "moatd: --listen ADDR is required (see --help)\n");
		return 2;
	}
	if ((c->tls_cert == NULL) != (c->tls_key == NULL) || (c->tls_client_ca && !c->tls_cert)) {
		fprintf(stderr,
		        "moatd: TLS needs --tls-cert and --tls-key (and --tls-client-ca only with them)\n");
		return 2;
	}
	if (strcmp(c->backend, "sim") != 0 && strcmp(c->backend, "proc") != 0) {
		fprintf(stderr, "moatd: --backend must be sim or proc\n");
		return 2;
	}
	if (c->max_message < 65536) {
		/* Image uploads come in 32 KiB chunks. */
		fprintf(stderr, "moatd: --max-message-bytes must be at least 65536\n");
		return 2;
	}
	if (c->max_message > 0x7fffffff)
		c->max_message = 0x7fffffff;

	/*
	 * Large call items are allocated and freed on every call; above glibc's
	 * default mmap threshold each one would be mapped, faulted in and
	 * unmapped again. Keep them on the heap (this is moatd's own process).
	 */
	mallopt(M_MMAP_THRESHOLD, 64 << 20);
	mallopt(M_TRIM_THRESHOLD, 256 << 20);
	signal(SIGPIPE, SIG_IGN);
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = on_shutdown_deadline;
	sigaction(SIGALRM, &sa, NULL);

	if (load_identity(d) < 0)
		goto out;
	moatd_target_init(d);
	moat__rpc_init();
	so.listen = c->listen;
	so.tls_cert_file = c->tls_cert;
	so.tls_key_file = c->tls_key;
	so.tls_client_ca = c->tls_client_ca;
	so.max_receive_bytes = (long)c->max_message;
	so.handler = moatd_handle_call;
	so.ctx = d;
	so.tick = tick;
	so.stopping = stopping;
	if (moat__rpc_server_start(&srv, &so, &port, err, sizeof(err)) < 0) {
		moatd_log(MOATD_LOG_ERROR, "%s", err);
		goto out_rpc;
	}
	if (strncmp(c->listen, "unix:", 5) == 0) {
		snprintf(addr, sizeof(addr), "%s", c->listen);
	} else {
		const char *colon = strrchr(c->listen, ':');
		int hl = colon ? (int)(colon - c->listen) : (int)strlen(c->listen);

		snprintf(addr, sizeof(addr), "%.*s:%d", hl, c->listen, port);
	}
	for (i = 0; i < 32; i++)
		snprintf(keyhex + 2 * i, 3, "%02x", d->public_key[i]);
	if (moatd_log_level >= MOATD_LOG_WARN)
		fprintf(stderr, "moatd %s: identity key ed25519:%s\n", moat_version(), keyhex);
	if (c->ready_file && write_ready(c->ready_file, addr) < 0) {
		moatd_log(MOATD_LOG_ERROR, "cannot write %s: %s", c->ready_file, strerror(errno));
		goto out_srv;
	}
	printf("%s\n", addr);
	fflush(stdout);
	moatd_log(MOATD_LOG_INFO, "serving on %s (backend %s%s%s)", addr, c->backend,
	          c->tls_cert ? ", TLS" : "", c->tls_client_ca ? ", client certificates required" : "");

	moat__rpc_server_run(srv, &d->stop);
	moatd_log(MOATD_LOG_INFO, "stopping: %u sessions left", moatd_session_count());
	moatd_target_shutdown(d);
	rc = 0;
out_srv:
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
	return rc;
}
