/*
 * moat-bench: Moat's call paths next to the physical baselines they are
 * built on, measured side by side in one run. Ratios between rows of the
 * same run are the numbers to read: absolute figures on a shared machine
 * drift from run to run, ratios much less.
 *
 *   moat-bench [--smoke] [--json FILE] [--only GROUPS] [--time SECONDS]
 *              [--bindir DIR] [--enclave PATH] [--list]
 *
 * Benchmarks, not tests: nothing here compares a time with a limit; the
 * targets table is informational and never changes the exit status.
 *
 * This file: options, the order the groups run in, and the helper modes
 * moat-bench re-executes itself in. See bench.h for the other files.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

bench_config bench_cfg;
unsigned char *bench_payload;

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: moat-bench [--smoke] [--json FILE] [--only GROUPS] [--time SECONDS]\n"
	        "                  [--bindir DIR] [--enclave PATH] [--list]\n"
	        "  --smoke        a few hundred iterations per row: checks that every row runs\n"
	        "  --json FILE    also write the results as JSON\n"
	        "  --only GROUPS  comma list of sim,proc,remote,concurrency,setup,fleet,memory\n"
	        "  --time S       time cap per latency row in seconds (default 1.0)\n"
	        "  --bindir DIR   where moatd is (default %s)\n"
	        "  --enclave P    the benchmark enclave (default %s)\n"
	        "  --list         print the row ids and exit\n",
	        MOAT_BENCH_BINDIR, MOAT_BENCH_ENCLAVE);
}

/* Parse the options into bench_cfg; -1 to go on, else the exit status (--help, a bad option). */
static int parse_args(int argc, char **argv, int *list)
{
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--smoke") == 0) {
			bench_cfg.smoke = 1;
		} else if (strcmp(a, "--list") == 0) {
			*list = 1;
		} else if (strcmp(a, "--json") == 0 && v) {
			bench_cfg.json = v;
			i++;
		} else if (strcmp(a, "--only") == 0 && v) {
			bench_cfg.only = v;
			i++;
		} else if (strcmp(a, "--time") == 0 && v) {
			char *end;

			bench_cfg.row_seconds = strtod(v, &end);
			if (*end || bench_cfg.row_seconds <= 0) {
				usage(stderr);
				return 2;
			}
			i++;
		} else if (strcmp(a, "--bindir") == 0 && v) {
			bench_cfg.bindir = v;
			i++;
		} else if (strcmp(a, "--enclave") == 0 && v) {
			bench_cfg.enclave = v;
			i++;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	return -1;
}

/* Measure the selected groups, in the order they are printed. */
static void run_groups(void)
{
	if (group_on("remote") || group_on("setup"))
		certs_make();
	if (group_on("sim"))
		run_sim();
	if (group_on("proc"))
		run_proc();
	if (group_on("remote"))
		run_remote();
	if (group_on("concurrency"))
		run_concurrency();
	if (group_on("setup"))
		run_setup();
	if (group_on("fleet"))
		run_fleet();
	if (group_on("memory"))
		run_memory();
	certs_remove();
}

/* Drop the rows of groups --only left out, so that they are neither printed nor written. */
static void drop_unselected(void)
{
	int i;

	for (i = (int)bench_nrows - 1; i >= 0; i--) {
		if (!group_on(bench_rows[i].group)) {
			memmove(&bench_rows[i], &bench_rows[i + 1],
			        (bench_nrows - (size_t)i - 1) * sizeof(bench_rows[0]));
			bench_nrows--;
		}
	}
}

int main(int argc, char **argv)
{
	size_t i;
	int list = 0, rc;

	if (argc > 1 && strcmp(argv[1], "--helper") == 0)
		return bench_helper_main(argc - 2, argv + 2);
	bench_cfg.row_seconds = 1.0;
	bench_cfg.bindir = MOAT_BENCH_BINDIR;
	bench_cfg.enclave = MOAT_BENCH_ENCLAVE;
	if ((rc = parse_args(argc, argv, &list)) >= 0)
		return rc;
	if (bench_cfg.smoke && bench_cfg.row_seconds > 0.2)
		bench_cfg.row_seconds = 0.2;
	plan_rows();
	if (list) {
		for (i = 0; i < bench_nrows; i++) {
			if (group_on(bench_rows[i].group))
				printf("%s\n", bench_rows[i].id);
		}
		return 0;
	}
	/* A helper that dies must not kill us through a write on its socket. */
	signal(SIGPIPE, SIG_IGN);
	bench_payload = malloc(MIB);
	if (!bench_payload) {
		fprintf(stderr, "moat-bench: out of memory\n");
		return 1;
	}
	memset(bench_payload, 0xa5, MIB);
	run_groups();
	free(bench_payload);
	drop_unselected();
	print_table(stdout);
	if (bench_cfg.json && write_json(bench_cfg.json) < 0)
		return 1;
	return 0;
}

int bench_helper_main(int argc, char **argv)
{
	const char *tls = NULL, *reply = NULL;
	int i, threaded = 0;

	if (argc < 1)
		return 2;
	if (strcmp(argv[0], "socketpair") == 0 && argc == 2)
		return raw_helper_socketpair((int)strtol(argv[1], NULL, 10));
	if (strcmp(argv[0], "tcp") == 0)
		return raw_helper_tcp();
	if (strcmp(argv[0], "grpc") == 0) {
		for (i = 1; i + 1 < argc; i += 2) {
			if (strcmp(argv[i], "--tls") == 0)
				tls = argv[i + 1];
			else if (strcmp(argv[i], "--reply-target") == 0)
				reply = argv[i + 1];
			else if (strcmp(argv[i], "--threaded") == 0)
				threaded = 1;
		}
		return grpc_base_helper(tls, reply, threaded);
	}
	return 2;
}
