/*
 * moat: the command-line tool. A thin user of libmoat's public API.
 *   moat run [--backend URI] [--config STRING] [--expect HEX] ENCLAVE.so [ARGS...]
 *   moat debug [run's options] ENCLAVE.so [ARGS...]
 *   moat measure ENCLAVE.so
 *   moat status [--tls-ca F ...] URI
 *   moat endorse --ca-key CA.pem TARGET_KEY (endorse.c)
 */
#include <moat/moat.h>

#include "cli/cli.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage_main[] = "usage: moat <command> [options]\n"
                                 "\n"
                                 "Commands:\n"
                                 "  run       load an enclave and call its run selector with arguments\n"
                                 "  debug     as run, in debug mode: wait for a debugger to attach first\n"
                                 "  measure   print the measurement (SHA-256) of an enclave image\n"
                                 "  status    show what a target server (moatd) says of itself\n"
                                 "  endorse   sign a target's identity key with a CA key (for "
                                 "--target-ca-key)\n"
                                 "\n"
                                 "Options:\n"
                                 "  -h, --help     show this help (also: moat <command> --help)\n"
                                 "  -V, --version  show the version\n";

static const char usage_run[] =
    "usage: moat run [--backend URI] [--config STRING] [--expect HEX] [--timeout MS]\n"
    "                [--tls-ca F] [--tls-cert F] [--tls-key F] [--tls-server-name N]\n"
    "                [--target-key HEX] [--target-ca-key HEX]... [--by-name] [--verbose]\n"
    "                ENCLAVE [ARGS...]\n"
    "\n"
    "Load ENCLAVE, call its run selector (MOAT_SELECTOR_RUN) with each ARG as an\n"
    "item, and print every item it returns on its own line.\n"
    "\n"
    "  -b, --backend URI     sim, proc, local, grpc://HOST:PORT, grpcs://HOST:PORT,\n"
    "                        unix:PATH, or a fleet: grpc://IP:PORT,IP:PORT,... or\n"
    "                        grpc+dns://NAME:PORT (default: $MOAT_BACKEND, else sim)\n"
    "  -c, --config STRING   configuration bytes handed to the enclave's init\n"
    "  -e, --expect HEX      refuse to run unless the image's measurement is HEX\n"
    "  -t, --timeout MS      per-call time limit (not enforced by sim)\n"
    "      --tls-ca F        CA bundle that signed the target's certificate (grpcs)\n"
    "      --tls-cert F      client certificate for mutual TLS (grpcs)\n"
    "      --tls-key F       client key for mutual TLS (grpcs)\n"
    "      --tls-server-name N  name expected in the target's certificate\n"
    "      --target-key HEX  refuse unless the target's Ed25519 key is HEX\n"
    "      --target-ca-key HEX  accept a target whose key the CA with Ed25519 public key\n"
    "                        HEX endorsed (moat endorse); repeat for more CAs (up to 16)\n"
    "      --by-name         ENCLAVE names an image in the target's enclave directory\n"
    "  -v, --verbose         say on stderr where the enclave runs: backend, and for\n"
    "                        remote ones the target's address and key (a fleet's pick)\n"
    "  -h, --help            show this help\n";

static const char usage_debug[] =
    "usage: moat debug [run's options] ENCLAVE [ARGS...]\n"
    "\n"
    "As moat run, with the enclave in debug mode (MOAT_LOAD_DEBUG; backend proc unless\n"
    "--backend or $MOAT_BACKEND says otherwise): print the process to attach to, wait\n"
    "until a debugger has attached to it, then call the run selector. In another\n"
    "terminal: gdb -p PID -ex 'break HANDLER' -ex continue\n";

static const char usage_status[] =
    "usage: moat status [--tls-ca F] [--tls-cert F --tls-key F] [--tls-server-name N] URI\n"
    "\n"
    "Ask the moatd at URI (grpc://HOST:PORT, grpcs://HOST:PORT or unix:PATH) what it\n"
    "says of itself: its version, whether it takes new sessions, its sessions, and the\n"
    "counters it also serves on --metrics-listen (Prometheus text).\n";

static const char usage_measure[] = "usage: moat measure ENCLAVE\n"
                                    "\n"
                                    "Print the measurement (SHA-256 of the image bytes) in hex.\n";

static void print_hex(const uint8_t *b, size_t n)
{
	char hex[2 * MOAT_MEASUREMENT_LEN + 1];

	moat__hex(hex, b, n);
	printf("%s\n", hex);
}

static int fail(const char *what, int rc)
{
	const moat_error *err = moat_error_last();

	fprintf(stderr, "moat: %s: %s\n", what,
	        err->code == rc && *err->message ? err->message : moat_strerror(rc));
	return 1;
}

static int cmd_measure(int argc, char **argv)
{
	uint8_t m[MOAT_MEASUREMENT_LEN];
	int rc;

	if (argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		fputs(usage_measure, stdout);
		return 0;
	}
	if (argc != 2) {
		fputs(usage_measure, stderr);
		return 2;
	}
	if ((rc = moat_measure_file(m, argv[1])) < 0)
		return fail("measure", rc);
	print_hex(m, sizeof(m));
	return 0;
}

#define MAX_CA_KEYS 16

/* What run's options pin, which its load options point to. */
typedef struct run_pins {
	uint8_t expect[MOAT_MEASUREMENT_LEN];
	uint8_t tkey[MOAT_TARGET_KEY_LEN];
	uint8_t ca_keys[MAX_CA_KEYS * MOAT_TARGET_KEY_LEN];
} run_pins;

/* --target-ca-key HEX: one more CA key. Returns 0, or 2 (said why). */
static int add_ca_key(moat_load_options *opts, run_pins *pins, const char *hex)
{
	if (opts->n_target_ca_keys == MAX_CA_KEYS) {
		fprintf(stderr, "moat: run: at most %d --target-ca-key\n", MAX_CA_KEYS);
		return 2;
	}
	if (moat__unhex(pins->ca_keys + MOAT_TARGET_KEY_LEN * opts->n_target_ca_keys, MOAT_TARGET_KEY_LEN,
	                hex) < 0) {
		fprintf(stderr,
		        "moat: run: --target-ca-key wants %d hex digits (moat endorse --print-ca-key)\n",
		        2 * MOAT_TARGET_KEY_LEN);
		return 2;
	}
	opts->target_ca_keys = pins->ca_keys;
	opts->n_target_ca_keys++;
	return 0;
}

/*
 * Parse run's options into opts (pins holds what it points to). Returns -1
 * to go on, or the exit status (help, bad option).
 */
static int run_options(int argc, char **argv, moat_load_options *opts, run_pins *pins, int *verbose)
{
	enum { OPT_CA = 256, OPT_CERT, OPT_KEY, OPT_NAME, OPT_TKEY, OPT_TCA, OPT_BYNAME };
	static const struct option longopts[] = {{"backend", required_argument, NULL, 'b'},
	                                         {"config", required_argument, NULL, 'c'},
	                                         {"expect", required_argument, NULL, 'e'},
	                                         {"timeout", required_argument, NULL, 't'},
	                                         {"tls-ca", required_argument, NULL, OPT_CA},
	                                         {"tls-cert", required_argument, NULL, OPT_CERT},
	                                         {"tls-key", required_argument, NULL, OPT_KEY},
	                                         {"tls-server-name", required_argument, NULL, OPT_NAME},
	                                         {"target-key", required_argument, NULL, OPT_TKEY},
	                                         {"target-ca-key", required_argument, NULL, OPT_TCA},
	                                         {"by-name", no_argument, NULL, OPT_BYNAME},
	                                         {"verbose", no_argument, NULL, 'v'},
	                                         {"help", no_argument, NULL, 'h'},
	                                         {NULL, 0, NULL, 0}};
	char *end;
	int c;

	while ((c = getopt_long(argc, argv, "+b:c:e:t:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'b': opts->backend = optarg; break;
		case 'c':
			opts->config = optarg;
			opts->config_len = strlen(optarg);
			break;
		case 'e':
			if (moat__unhex(pins->expect, MOAT_MEASUREMENT_LEN, optarg) < 0) {
				fprintf(stderr, "moat: run: --expect wants %d hex digits\n",
				        2 * MOAT_MEASUREMENT_LEN);
				return 2;
			}
			opts->expected_measurement = pins->expect;
			break;
		case 't': {
			unsigned long ms;

			/* strtoul alone would take "-1" as ULONG_MAX and wrap large values. */
			errno = 0;
			ms = strtoul(optarg, &end, 10);
			if (*end || !*optarg || *optarg == '-' || *optarg == '+' || errno || ms > UINT_MAX) {
				fprintf(stderr, "moat: run: --timeout wants milliseconds, got '%s'\n",
				        optarg);
				return 2;
			}
			opts->call_timeout_ms = (unsigned int)ms;
			break;
		}
		case OPT_CA: opts->tls_ca_file = optarg; break;
		case OPT_CERT: opts->tls_cert_file = optarg; break;
		case OPT_KEY: opts->tls_key_file = optarg; break;
		case OPT_NAME: opts->tls_server_name = optarg; break;
		case OPT_TKEY:
			if (moat__unhex(pins->tkey, MOAT_TARGET_KEY_LEN, optarg) < 0) {
				fprintf(stderr, "moat: run: --target-key wants %d hex digits\n",
				        2 * MOAT_TARGET_KEY_LEN);
				return 2;
			}
			opts->target_key = pins->tkey;
			break;
		case OPT_TCA:
			if (add_ca_key(opts, pins, optarg) != 0)
				return 2;
			break;
		case OPT_BYNAME: opts->flags |= MOAT_LOAD_BY_NAME; break;
		case 'v': *verbose = 1; break;
		case 'h': fputs(usage_run, stdout); return 0;
		default: fputs(usage_run, stderr); return 2;
		}
	}
	return -1;
}

/* The tracer of one task (TracerPid in its status), 0 for none, -1 when it is gone. */
static long tracer_of(const char *status)
{
	char line[256];
	long tracer = -1;
	FILE *f = fopen(status, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "TracerPid: %ld", &tracer) == 1)
			break;
	fclose(f);
	return tracer;
}

/*
 * Is a debugger attached to every thread of process pid? A debugger attaches
 * thread by thread: until it has them all, one of them could still run the
 * call past a breakpoint that is not set yet. Returns 1, 0, or -1 when the
 * process is gone.
 */
static int traced(long pid)
{
	char path[320];
	struct dirent *de;
	int all = 1, any = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%ld/task", pid);
	if (!(d = opendir(path)))
		return -1;
	while ((de = readdir(d)) != NULL && all) {
		long t;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%ld/task/%.32s/status", pid, de->d_name);
		t = tracer_of(path);
		any = 1;
		if (t == 0)
			all = 0;
	}
	closedir(d);
	return any ? all : -1;
}

/* Debug mode: say where to attach and wait until a debugger has. Returns 0, or 1 when it cannot. */
static int wait_for_debugger(moat_enclave *e, const char *image)
{
	struct timespec tick = {0, 50 * 1000000};
	moat_identity id;
	int t;

	if (moat_enclave_identity(e, &id) < 0 || !id.debug || id.debug_pid <= 0) {
		fprintf(stderr, "moat: debug: the %s backend gives no process to attach to\n",
		        moat_enclave_identity(e, &id) == 0 ? id.backend : "?");
		return 1;
	}
	fprintf(stderr,
	        "moat: debug: %s runs in process %ld (%s); waiting for a debugger:\n"
	        "  gdb -p %ld -ex 'break HANDLER' -ex continue\n",
	        image, id.debug_pid, id.backend, id.debug_pid);
	while ((t = traced(id.debug_pid)) == 0)
		nanosleep(&tick, NULL);
	if (t < 0) {
		fprintf(stderr, "moat: debug: process %ld is gone\n", id.debug_pid);
		return 1;
	}
	fprintf(stderr, "moat: debug: debugger attached; calling the run selector\n");
	return 0;
}

/* --verbose: where the enclave runs (a fleet's pick: the target's address and key), on stderr. */
static void say_where(const moat_enclave *e)
{
	char key[2 * MOAT_TARGET_KEY_LEN + 1] = "";
	const char *target = moat_enclave_target(e);
	moat_identity id;
	size_t i;

	if (moat_enclave_identity(e, &id) < 0)
		return;
	for (i = 0; id.has_target_key && i < MOAT_TARGET_KEY_LEN; i++)
		snprintf(key + 2 * i, 3, "%02x", id.target_key[i]);
	if (target)
		fprintf(stderr, "moat: the enclave runs on target %s (backend %s, key ed25519:%s)\n", target,
		        id.backend, key);
	else
		fprintf(stderr, "moat: the enclave runs on this machine (backend %s)\n", id.backend);
}

static int cmd_run(int argc, char **argv, int debug)
{
	moat_load_options opts = MOAT_LOAD_OPTIONS_INIT;
	run_pins pins;
	moat_enclave *e = NULL;
	moat_msg *in = NULL, *out = NULL;
	size_t i;
	int c, rc, status = 1, verbose = 0;

	if (debug && argc == 2 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		fputs(usage_debug, stdout);
		return 0;
	}
	if ((rc = run_options(argc, argv, &opts, &pins, &verbose)) >= 0)
		return rc;
	if (optind >= argc) {
		fprintf(stderr, "moat: run: no enclave image given\n%s", usage_run);
		return 2;
	}
	if (debug) {
		opts.flags |= MOAT_LOAD_DEBUG;
		if (!opts.backend && !getenv("MOAT_BACKEND"))
			opts.backend = "proc";
	}
	if ((rc = moat_enclave_load(&e, argv[optind], &opts)) < 0)
		return fail("load", rc);
	if (verbose)
		say_where(e);
	if (debug && wait_for_debugger(e, argv[optind]) != 0)
		goto out;
	if (moat_msg_new(&in) < 0 || moat_msg_new(&out) < 0) {
		fprintf(stderr, "moat: out of memory\n");
		goto out;
	}
	for (c = optind + 1; c < argc; c++)
		moat_msg_push_borrowed(in, argv[c], strlen(argv[c]));
	if ((rc = moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out)) < 0) {
		fail("run", rc);
		goto out;
	}
	for (i = 0; i < moat_msg_count(out); i++) {
		const void *data;
		size_t len;

		moat_msg_item(out, i, &data, &len);
		fwrite(data, 1, len, stdout);
		fputc('\n', stdout);
	}
	status = 0;
out:
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
	return status;
}

static int cmd_status(int argc, char **argv)
{
	enum { OPT_CA = 256, OPT_CERT, OPT_KEY, OPT_NAME };
	static const struct option longopts[] = {{"tls-ca", required_argument, NULL, OPT_CA},
	                                         {"tls-cert", required_argument, NULL, OPT_CERT},
	                                         {"tls-key", required_argument, NULL, OPT_KEY},
	                                         {"tls-server-name", required_argument, NULL, OPT_NAME},
	                                         {"help", no_argument, NULL, 'h'},
	                                         {NULL, 0, NULL, 0}};
	moat_load_options opts = MOAT_LOAD_OPTIONS_INIT;
	char *text = NULL;
	int c, rc;

	while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_CA: opts.tls_ca_file = optarg; break;
		case OPT_CERT: opts.tls_cert_file = optarg; break;
		case OPT_KEY: opts.tls_key_file = optarg; break;
		case OPT_NAME: opts.tls_server_name = optarg; break;
		case 'h': fputs(usage_status, stdout); return 0;
		default: fputs(usage_status, stderr); return 2;
		}
	}
	if (optind + 1 != argc) {
		fputs(usage_status, stderr);
		return 2;
	}
	rc = moat_target_status(&text, argv[optind], &opts);
	if (rc < 0)
		return fail("status", rc);
	fputs(text, stdout);
	free(text);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fputs(usage_main, stderr);
		return 2;
	}
	if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
		fputs(usage_main, stdout);
		return 0;
	}
	if (!strcmp(argv[1], "-V") || !strcmp(argv[1], "--version")) {
		printf("moat %s\n", moat_version());
		return 0;
	}
	if (!strcmp(argv[1], "run"))
		return cmd_run(argc - 1, argv + 1, 0);
	if (!strcmp(argv[1], "debug"))
		return cmd_run(argc - 1, argv + 1, 1);
	if (!strcmp(argv[1], "measure"))
		return cmd_measure(argc - 1, argv + 1);
	if (!strcmp(argv[1], "status"))
		return cmd_status(argc - 1, argv + 1);
	if (!strcmp(argv[1], "endorse"))
		return moat__cli_endorse(argc - 1, argv + 1);
	fprintf(stderr, "moat: unknown command '%s'\n%s", argv[1], usage_main);
	return 2;
}
