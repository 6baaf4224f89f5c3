/*
 * moatd's command line: every option takes "--opt value" and "--opt=value"
 * (getopt_long); --help lists them all with their defaults.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moatd/moatd.h"

enum {
	OPT_LISTEN = 256,
	OPT_TLS_CERT,
	OPT_TLS_KEY,
	OPT_TLS_CLIENT_CA,
	OPT_ENCLAVE_DIR,
	OPT_ALLOW_UPLOAD,
	OPT_ALLOW_DEBUG,
	OPT_BACKEND,
	OPT_MAX_SESSIONS,
	OPT_MAX_THREADS,
	OPT_MAX_NESTING,
	OPT_MAX_MESSAGE,
	OPT_MAX_IMAGE,
	OPT_GRACE,
	OPT_SHUTDOWN,
	OPT_STATE_DIR,
	OPT_READY_FILE,
	OPT_LOG_LEVEL,
	OPT_PARENT_FD,
	OPT_VERSION,
	/* The serving core's bounds. */
	OPT_MAX_ATTACHED,
	OPT_MAX_PENDING,
	OPT_MAX_WATCHES,
	OPT_MAX_CONNECTIONS,
	OPT_REQUEST_TIMEOUT,
	OPT_IGNORE_FD_LIMIT,
	/* The image store and who may fill it. */
	OPT_MAX_STORE,
	OPT_MAX_UPLOADS,
	OPT_INSECURE_UPLOAD,
	OPT_SOCKET_MODE,
	/* Operating it (config.c, log.c). */
	OPT_CONFIG,
	OPT_LOG_FORMAT,
	OPT_METRICS_LISTEN,
	/* Its identity across a fleet (identity.c). */
	OPT_ENDORSEMENT,
	OPT_PRINT_KEY
};

static const struct option long_options[] = {
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"tls-cert", required_argument, NULL, OPT_TLS_CERT},
    {"tls-key", required_argument, NULL, OPT_TLS_KEY},
    {"tls-client-ca", required_argument, NULL, OPT_TLS_CLIENT_CA},
    {"enclave-dir", required_argument, NULL, OPT_ENCLAVE_DIR},
    {"allow-upload", no_argument, NULL, OPT_ALLOW_UPLOAD},
    {"allow-debug", no_argument, NULL, OPT_ALLOW_DEBUG},
    {"backend", required_argument, NULL, OPT_BACKEND},
    {"max-sessions", required_argument, NULL, OPT_MAX_SESSIONS},
    {"max-threads-per-session", required_argument, NULL, OPT_MAX_THREADS},
    {"max-nesting", required_argument, NULL, OPT_MAX_NESTING},
    {"max-message-bytes", required_argument, NULL, OPT_MAX_MESSAGE},
    {"max-image-bytes", required_argument, NULL, OPT_MAX_IMAGE},
    {"session-grace-ms", required_argument, NULL, OPT_GRACE},
    {"shutdown-timeout", required_argument, NULL, OPT_SHUTDOWN},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"ready-file", required_argument, NULL, OPT_READY_FILE},
    {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
    {"parent-fd", required_argument, NULL, OPT_PARENT_FD}, /* internal: local provisioning */
    {"max-attached-threads", required_argument, NULL, OPT_MAX_ATTACHED},
    {"max-pending-calls", required_argument, NULL, OPT_MAX_PENDING},
    {"max-health-watches", required_argument, NULL, OPT_MAX_WATCHES},
    {"max-connections", required_argument, NULL, OPT_MAX_CONNECTIONS},
    {"request-timeout-ms", required_argument, NULL, OPT_REQUEST_TIMEOUT},
    {"ignore-fd-limit", no_argument, NULL, OPT_IGNORE_FD_LIMIT},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {"max-store-bytes", required_argument, NULL, OPT_MAX_STORE},
    {"max-uploads", required_argument, NULL, OPT_MAX_UPLOADS},
    {"insecure-upload", no_argument, NULL, OPT_INSECURE_UPLOAD},
    {"socket-mode", required_argument, NULL, OPT_SOCKET_MODE},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"log-format", required_argument, NULL, OPT_LOG_FORMAT},
    {"metrics-listen", required_argument, NULL, OPT_METRICS_LISTEN},
    {"identity-endorsement", required_argument, NULL, OPT_ENDORSEMENT},
    {"print-key", no_argument, NULL, OPT_PRINT_KEY},
    {NULL, 0, NULL, 0}};

/* The --help text: one fprintf, as long as the text (the man page is made from it). */
static void usage(FILE *f)
{
	fprintf(f,
	        "usage: moatd --listen ADDR [options]\n"
	        "Host Moat enclaves for remote hosts (gRPC service moat.v1.Target).\n"
	        "Every option takes its value as --opt VALUE or --opt=VALUE.\n\n"
	        "  --listen ADDR                 host:port (port 0 picks a free one) or unix:/path\n"
	        "  --tls-cert F --tls-key F      serve TLS with this certificate and key (PEM)\n"
	        "  --tls-client-ca F             require client certificates signed by this CA (mutual TLS)\n"
	        "  --enclave-dir DIR             images hosts may load by name (default: none)\n"
	        "  --allow-upload                accept images uploaded by hosts (content-addressed, SHA-256 "
	        "checked;\n"
	        "                                default off). Whoever can upload can run code here: on a "
	        "plaintext\n"
	        "                                listener other than loopback or unix: it also needs "
	        "--insecure-upload\n"
	        "  --insecure-upload             allow --allow-upload on a plaintext non-loopback listener "
	        "(anyone\n"
	        "                                who reaches the port can run code on this machine)\n"
	        "  --allow-debug                 let hosts load enclaves in debug mode (MOAT_LOAD_DEBUG): a "
	        "debugger\n"
	        "                                of moatd's user can attach to their processes (never in "
	        "production)\n"
	        "  --max-store-bytes N           uploaded images kept, in bytes (default %zu); unused ones "
	        "are\n"
	        "                                evicted least recently loaded first\n"
	        "  --max-uploads N               most uploads received at once (default %d)\n"
	        "  --backend sim|proc            local backend that hosts the enclaves (default %s)\n"
	        "  --max-sessions N              most sessions at once (default 64)\n"
	        "  --max-threads-per-session N   most attached host threads per session (default 256)\n"
	        "  --max-nesting N               most host entry calls nested at once on one host thread\n"
	        "                                (default %d); deeper ones fail with MOAT_ELIMIT\n"
	        "  --max-attached-threads N      most attached host threads (and leases) of all sessions "
	        "together\n"
	        "                                (default 1024)\n"
	        "  --max-pending-calls N         most calls waiting for their request (default 128); more "
	        "are\n"
	        "                                refused with RESOURCE_EXHAUSTED\n"
	        "  --max-health-watches N        most open grpc.health.v1.Health/Watch streams (default "
	        "1024;\n"
	        "                                a fleet's host holds one per target while it has a "
	        "session)\n"
	        "  --max-connections N           most connections open at once on a plaintext listener "
	        "(default\n"
	        "                                1024); more are closed at once\n"
	        "  --request-timeout-ms N        end a call whose request message does not arrive in time "
	        "(default 10000)\n"
	        "  --ignore-fd-limit             start even when the limits above may need more file "
	        "descriptors\n"
	        "                                than RLIMIT_NOFILE allows\n"
	        "  --max-message-bytes N         largest call message accepted (default 67108864)\n"
	        "  --max-image-bytes N           largest uploaded image (default 268435456)\n"
	        "  --session-grace-ms N          reclaim a session this long after its host vanished "
	        "(default 2000)\n"
	        "  --shutdown-timeout S          on SIGTERM/SIGINT, exit anyway after S seconds if an "
	        "enclave call\n"
	        "                                still runs (default 10; a second signal exits at once);\n"
	        "                                SIGUSR2 drains: no new sessions, stop once the last one "
	        "ended\n"
	        "                                (or after S seconds)\n"
	        "  --state-dir DIR               identity key and uploaded images (default $STATE_DIRECTORY "
	        "under\n"
	        "                                systemd, " MOATD_SYSTEM_STATE_DIR " as root, else "
	        "$XDG_STATE_HOME/moatd or\n"
	        "                                ~/.local/state/moatd)\n"
	        "  --identity-endorsement F      send F, a CA's endorsement of the identity key (moat "
	        "endorse\n"
	        "                                --ca-key CA.pem KEY), with every Load: hosts that pin "
	        "the CA\n"
	        "                                (target_ca_keys, moat run --target-ca-key) accept this "
	        "target\n"
	        "  --print-key                   print the identity key in hex (made on first use) "
	        "and exit;\n"
	        "                                needs no --listen\n"
	        "  --ready-file F                write the bound address to F once serving (default: none)\n"
	        "  --socket-mode MODE            mode of a unix: listener's socket, octal (default %04o, "
	        "owner only)\n"
	        "  --log-level L                 error, warn, info or debug (default warn; debug logs "
	        "every\n"
	        "                                session event and refusal)\n"
	        "  --log-format F                text (time, level, message; the journal's own form "
	        "under\n"
	        "                                systemd) or json, one object per line (default text)\n"
	        "  --metrics-listen ADDR         serve metrics for Prometheus on http://ADDR/metrics "
	        "(HOST:PORT;\n"
	        "                                port 0 picks a free one; default: none)\n"
	        "  --config FILE                 read options from FILE first: one \"key = value\" per "
	        "line, keys\n"
	        "                                named as the options (allow-upload = true); the command "
	        "line wins\n"
	        "  --parent-fd FD                internal (local provisioning): stop when FD reports "
	        "hang-up\n"
	        "  --help, -h, --version\n"
	        "SIGHUP reloads the log level and format, the enclave directory and the TLS files "
	        "(from the\n"
	        "command line and --config FILE again) without ending sessions.\n",
	        MOATD_DEFAULT_MAX_STORE, MOATD_DEFAULT_MAX_UPLOADS, MOATD_DEFAULT_BACKEND,
	        MOATD_DEFAULT_MAX_NESTING, MOATD_DEFAULT_SOCKET_MODE);
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

static int parse_mode(const char *s, unsigned int *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 8);
	if (errno || end == s || *end || s[0] == '-' || v > 0777)
		return -1;
	*out = (unsigned int)v;
	return 0;
}

static int parse_log_format(const char *v, int *out)
{
	if (strcmp(v, "text") == 0 || strcmp(v, "json") == 0) {
		*out = strcmp(v, "json") == 0 ? MOATD_LOG_JSON : MOATD_LOG_TEXT;
		return 0;
	}
	return -1;
}

static int parse_log_level(const char *v, int *out)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	int i;

	for (i = 0; i < 4; i++) {
		if (strcmp(v, names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	return -1;
}

/* Apply one option with a value. Returns 0, or -1 for a bad value. */
static int apply(moatd_config *c, int opt, const char *v)
{
	unsigned int fd = 0;

	switch (opt) {
	case OPT_LISTEN: c->listen = v; return 0;
	case OPT_TLS_CERT: c->tls_cert = v; return 0;
	case OPT_TLS_KEY: c->tls_key = v; return 0;
	case OPT_TLS_CLIENT_CA: c->tls_client_ca = v; return 0;
	case OPT_ENCLAVE_DIR: c->enclave_dir = v; return 0;
	case OPT_STATE_DIR: c->state_dir = v; return 0;
	case OPT_ENDORSEMENT: c->endorsement = v; return 0;
	case OPT_READY_FILE: c->ready_file = v; return 0;
	case OPT_BACKEND: c->backend = v; return 0;
	case OPT_MAX_SESSIONS: return parse_uint(v, &c->max_sessions);
	case OPT_MAX_THREADS: return parse_uint(v, &c->max_threads);
	case OPT_MAX_NESTING: return parse_uint(v, &c->max_nesting) < 0 || c->max_nesting == 0 ? -1 : 0;
	case OPT_MAX_MESSAGE: return parse_size(v, &c->max_message);
	case OPT_MAX_IMAGE: return parse_size(v, &c->max_image);
	case OPT_GRACE: return parse_uint(v, &c->grace_ms);
	case OPT_SHUTDOWN: return parse_uint(v, &c->shutdown_s) < 0 || c->shutdown_s == 0 ? -1 : 0;
	case OPT_LOG_LEVEL: return parse_log_level(v, &c->log_level);
	case OPT_LOG_FORMAT: return parse_log_format(v, &c->log_format);
	case OPT_CONFIG: return 0; /* read before the command line (moatd_options_parse) */
	case OPT_METRICS_LISTEN: c->metrics_listen = v; return 0;
	case OPT_MAX_ATTACHED: return parse_uint(v, &c->max_attached) < 0 || c->max_attached == 0 ? -1 : 0;
	case OPT_MAX_PENDING: return parse_uint(v, &c->max_pending) < 0 || c->max_pending == 0 ? -1 : 0;
	case OPT_MAX_WATCHES: return parse_uint(v, &c->max_watches) < 0 || c->max_watches == 0 ? -1 : 0;
	case OPT_MAX_CONNECTIONS:
		return parse_uint(v, &c->max_connections) < 0 || c->max_connections == 0 ? -1 : 0;
	case OPT_REQUEST_TIMEOUT:
		return parse_uint(v, &c->request_timeout_ms) < 0 || c->request_timeout_ms == 0 ? -1 : 0;
	case OPT_MAX_STORE: return parse_size(v, &c->max_store) < 0 || c->max_store == 0 ? -1 : 0;
	case OPT_MAX_UPLOADS: return parse_uint(v, &c->max_uploads) < 0 || c->max_uploads == 0 ? -1 : 0;
	case OPT_SOCKET_MODE: return parse_mode(v, &c->socket_mode);
	case OPT_PARENT_FD:
		if (parse_uint(v, &fd) < 0 || fd > INT_MAX)
			return -1;
		c->parent_fd = (int)fd;
		return 0;
	default: return -1;
	}
}

/* Can only this machine reach the listener (unix: or a loopback address)? */
static int listen_is_local(const char *listen)
{
	const char *colon;
	char host[256];
	int n;

	if (strncmp(listen, "unix:", 5) == 0 || strncmp(listen, "unix-abstract:", 14) == 0)
		return 1;
	if (strncmp(listen, "ipv4:", 5) == 0 || strncmp(listen, "ipv6:", 5) == 0)
		listen += 5;
	colon = strrchr(listen, ':');
	n = colon ? (int)(colon - listen) : (int)strlen(listen);
	if (n >= 2 && listen[0] == '[' && listen[n - 1] == ']') {
		listen++;
		n -= 2;
	}
	snprintf(host, sizeof(host), "%.*s", n, listen);
	return strcmp(host, "localhost") == 0 || strncmp(host, "127.", 4) == 0 || strcmp(host, "::1") == 0;
}

/* The options that only make sense together, and the limits' floors. */
static int check(moatd_config *c)
{
	if (!c->listen && !c->print_key) {
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
	if (!c->state_dir && moatd_state_dir_default(c) < 0)
		return 2;
	if (c->max_message < 65536) {
		/* Image uploads come in 32 KiB chunks. */
		fprintf(stderr, "moatd: --max-message-bytes must be at least 65536\n");
		return 2;
	}
	if (c->max_message > 0x7fffffff)
		c->max_message = 0x7fffffff;
	if (c->print_key)
		return 0;
	if (c->allow_upload && !c->tls_cert && !c->insecure_upload && !listen_is_local(c->listen)) {
		fprintf(
		    stderr,
		    "moatd: --allow-upload on the plaintext listener %s lets anyone who reaches the port run "
		    "code on this machine; serve TLS with --tls-client-ca, listen on loopback or unix:, or "
		    "add --insecure-upload if that is what you mean\n",
		    c->listen);
		return 2;
	}
	return 0;
}

/* A flag's value in a configuration file. */
static int parse_bool(const char *v, int *out)
{
	static const char *const yes[] = {"true", "yes", "on", "1"}, *const no[] = {"false", "no", "off",
	                                                                            "0"};
	size_t i;

	for (i = 0; i < 4; i++) {
		if (strcmp(v, yes[i]) == 0 || strcmp(v, no[i]) == 0) {
			*out = strcmp(v, yes[i]) == 0;
			return 0;
		}
	}
	return -1;
}

int moatd_option_set(moatd_config *c, const char *name, const char *value)
{
	size_t i;

	for (i = 0; long_options[i].name; i++) {
		int v = long_options[i].val;

		if (strcmp(long_options[i].name, name) != 0)
			continue;
		switch (v) {
		case 'h':
		case OPT_VERSION:
		case OPT_CONFIG:
		case OPT_PARENT_FD: return -2;
		case OPT_ALLOW_UPLOAD: return parse_bool(value, &c->allow_upload);
		case OPT_IGNORE_FD_LIMIT: return parse_bool(value, &c->ignore_fd_limit);
		case OPT_INSECURE_UPLOAD: return parse_bool(value, &c->insecure_upload);
		case OPT_ALLOW_DEBUG: return parse_bool(value, &c->allow_debug);
		default: return long_options[i].has_arg == required_argument ? apply(c, v, value) : -2;
		}
	}
	return -2;
}

/* The value of --config FILE or --config=FILE in argv, or NULL. */
static const char *config_file(int argc, char **argv)
{
	int i;

	for (i = 1; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			return argv[i + 1];
		if (strncmp(argv[i], "--config=", 9) == 0)
			return argv[i] + 9;
	}
	return NULL;
}

int moatd_options_parse(moatd_config *c, int argc, char **argv)
{
	int opt, idx = 0;

	c->backend = MOATD_DEFAULT_BACKEND;
	c->max_sessions = 64;
	c->max_threads = 256;
	c->max_nesting = MOATD_DEFAULT_MAX_NESTING;
	c->max_message = 64u << 20;
	c->max_image = 256u << 20;
	c->grace_ms = 2000;
	c->shutdown_s = 10;
	c->parent_fd = -1;
	c->log_level = MOATD_LOG_WARN;
	c->max_attached = 1024;
	c->max_pending = 128;
	c->max_watches = 1024;
	c->max_connections = 1024;
	c->request_timeout_ms = 10000;
	c->max_store = MOATD_DEFAULT_MAX_STORE;
	c->max_uploads = MOATD_DEFAULT_MAX_UPLOADS;
	c->socket_mode = MOATD_DEFAULT_SOCKET_MODE;
	c->config_file = config_file(argc, argv);
	if (c->config_file && moatd_config_file_load(c, c->config_file) < 0)
		return 2;
	opterr = 0;
	optind = 0; /* getopt starts afresh: a reload parses the command line again */
	/* The leading ':' makes a missing value ':' rather than '?', to say which it was. */
	while ((opt = getopt_long(argc, argv, ":h", long_options, &idx)) != -1) {
		switch (opt) {
		case 'h': usage(stdout); return 1;
		case OPT_VERSION: printf("moatd %s\n", moat_version()); return 1;
		case OPT_ALLOW_UPLOAD: c->allow_upload = 1; break;
		case OPT_ALLOW_DEBUG: c->allow_debug = 1; break;
		case OPT_IGNORE_FD_LIMIT: c->ignore_fd_limit = 1; break;
		case OPT_INSECURE_UPLOAD: c->insecure_upload = 1; break;
		case OPT_PRINT_KEY: c->print_key = 1; break;
		case ':':
			fprintf(stderr, "moatd: %s needs a value (see --help)\n", argv[optind - 1]);
			return 2;
		case '?':
			fprintf(stderr, "moatd: unknown option %s (see --help)\n", argv[optind - 1]);
			return 2;
		default:
			if (apply(c, opt, optarg) < 0) {
				fprintf(stderr, "moatd: bad value '%s' for --%s\n", optarg,
				        long_options[idx].name);
				return 2;
			}
		}
	}
	if (optind < argc) {
		fprintf(stderr, "moatd: unknown option %s (see --help)\n", argv[optind]);
		return 2;
	}
	return check(c);
}
