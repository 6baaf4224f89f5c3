/*
 * moat-bench: the report. Each row's ratio to its baseline, the targets
 * (ratios with the limit a change should stay within; informational), and
 * the table on stdout and the JSON file.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <moat/moat.h>

#include "bench.h"

/* Ratio of a row to its baseline: latency p50 over p50, or rate over rate. */
static double row_ratio(const row *r)
{
	const row *b = r->base[0] ? row_get(r->base) : NULL;

	if (!b || r->state != ROW_DONE || b->state != ROW_DONE)
		return NAN;
	if (r->kind == ROW_RATE)
		return b->cps > 0 ? r->cps / b->cps : NAN;
	return b->p50 > 0 ? r->p50 / b->p50 : NAN;
}

typedef struct target {
	const char *name;
	const char *num, *den;
	int rate;     /* compare calls/s instead of p50 latency */
	int at_least; /* ratio must be >= limit (else <=) */
	double limit;
} target;

static const target targets[] = {
    {"sim empty call vs function pointer (p50)", "sim.call.0", "sim.fnptr.0", 0, 0, 3.0},
    {"proc 64 B round trip vs raw socketpair ping-pong (p50)", "proc.call.64", "proc.socketpair.64", 0, 0,
     1.3},
    {"grpc:// (sim) 64 B call vs raw gRPC bidi ping-pong (p50)", "grpc_sim.call.64", "base.grpc_bidi.64", 0,
     0, 1.15},
    {"grpc:// (sim) 64 B call vs Asylo two-RPC pattern (p50)", "grpc_sim.call.64", "base.asylo_2rpc.64", 0, 0,
     0.5},
    {"grpc:// (sim) 1 MiB throughput vs raw TCP (calls/s)", "grpc_sim.call.1M", "base.tcp.1M", 1, 1, 0.5},
    {"grpc:// (sim) 8 threads vs 1 thread (aggregate calls/s)", "conc.grpc.t8", "conc.grpc.t1", 1, 1, 1.6},
};
#define NTARGETS (sizeof(targets) / sizeof(targets[0]))

static double target_ratio(const target *t)
{
	const row *a = row_get(t->num), *b = row_get(t->den);

	if (!a || !b || a->state != ROW_DONE || b->state != ROW_DONE)
		return NAN;
	if (t->rate)
		return b->cps > 0 ? a->cps / b->cps : NAN;
	return b->p50 > 0 ? a->p50 / b->p50 : NAN;
}

static const char *target_verdict(const target *t, double ratio)
{
	if (isnan(ratio))
		return "n/a";
	return (t->at_least ? ratio >= t->limit : ratio <= t->limit) ? "PASS" : "MISS";
}

void print_table(FILE *f)
{
	const char *group = "";
	struct utsname u;
	size_t i;

	uname(&u);
	fprintf(f, "moat-bench %s%s: %s %s, %ld CPUs online; p50/p99 in microseconds per call\n",
	        moat_version(),
	        bench_cfg.smoke ? " (SMOKE MODE: tiny iteration counts, numbers are meaningless)" : "",
	        u.sysname, u.release, sysconf(_SC_NPROCESSORS_ONLN));
	for (i = 0; i < bench_nrows; i++) {
		const row *r = &bench_rows[i];
		char size[16] = "";
		double ratio = row_ratio(r);
		char rs[16] = "";

		if (strcmp(group, r->group) != 0) {
			group = r->group;
			fprintf(f, "\n== %s\n", group);
			if (r->kind == ROW_KIB)
				fprintf(f, "%-26s %6s %12s  %s\n", "row", "", "KiB", "what");
			else
				fprintf(f, "%-26s %6s %10s %10s %12s %8s  %s\n", "row", "size", "p50 us",
				        "p99 us", "calls/s", "x base", "what");
		}
		if (r->has_size)
			snprintf(size, sizeof(size), "%s",
			         r->size >= MIB    ? "1MiB"
			         : r->size >= 1024 ? "4KiB"
			                           : "");
		if (r->has_size && r->size < 1024)
			snprintf(size, sizeof(size), "%zuB", r->size);
		if (!isnan(ratio))
			snprintf(rs, sizeof(rs), "%.2fx", ratio);
		if (r->state != ROW_DONE) {
			fprintf(f, "%-26s %6s  %s  [%s]\n", r->id, size,
			        r->state == ROW_NA ? r->note : "NOT MEASURED", r->label);
		} else if (r->kind == ROW_KIB) {
			fprintf(f, "%-26s %6s %12.0f  %s%s%s\n", r->id, "", r->kib, r->label,
			        r->note[0] ? "; " : "", r->note);
		} else if (r->kind == ROW_RATE) {
			fprintf(f, "%-26s %6s %10s %10s %12.0f %8s  %s\n", r->id, "", "-", "-", r->cps, rs,
			        r->label);
		} else {
			fprintf(f, "%-26s %6s %10.3f %10.3f %12.0f %8s  %s%s%s\n", r->id, size, r->p50,
			        r->p99, r->cps, rs, r->label, r->note[0] ? "; " : "", r->note);
		}
	}
	fprintf(f, "\n== targets (ratios measured in this run; informational, exit status unaffected)\n");
	for (i = 0; i < NTARGETS; i++) {
		double ratio = target_ratio(&targets[i]);
		char rs[16] = "n/a";

		if (!isnan(ratio))
			snprintf(rs, sizeof(rs), "%.2f", ratio);
		fprintf(f, "%-58s %s %4.2f  measured %6s  %s\n", targets[i].name,
		        targets[i].at_least ? ">=" : "<=", targets[i].limit, rs,
		        target_verdict(&targets[i], ratio));
	}
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void json_num(FILE *f, const char *key, double v)
{
	if (isnan(v) || isinf(v))
		fprintf(f, ", \"%s\": null", key);
	else
		fprintf(f, ", \"%s\": %.3f", key, v);
}

int write_json(const char *path)
{
	struct utsname u;
	FILE *f = fopen(path, "w");
	size_t i;

	if (!f) {
		fprintf(stderr, "moat-bench: %s: %s\n", path, strerror(errno));
		return -1;
	}
	uname(&u);
	fprintf(f, "{\n  \"moat_version\": ");
	json_str(f, moat_version());
	fprintf(f, ",\n  \"smoke\": %s,\n  \"machine\": {\"sysname\": ", bench_cfg.smoke ? "true" : "false");
	json_str(f, u.sysname);
	fprintf(f, ", \"release\": ");
	json_str(f, u.release);
	fprintf(f, ", \"cpus\": %ld},\n  \"rows\": [\n", sysconf(_SC_NPROCESSORS_ONLN));
	for (i = 0; i < bench_nrows; i++) {
		const row *r = &bench_rows[i];

		fprintf(f, "    {\"id\": ");
		json_str(f, r->id);
		fprintf(f, ", \"group\": ");
		json_str(f, r->group);
		fprintf(f, ", \"what\": ");
		json_str(f, r->label);
		if (r->has_size)
			fprintf(f, ", \"size\": %zu", r->size);
		fprintf(f, ", \"status\": \"%s\"", r->state == ROW_DONE ? "ok" : "na");
		if (r->state == ROW_DONE && r->kind == ROW_LAT) {
			json_num(f, "p50_us", r->p50);
			json_num(f, "p99_us", r->p99);
		}
		if (r->state == ROW_DONE && r->kind != ROW_KIB)
			json_num(f, "calls_per_s", r->cps);
		if (r->state == ROW_DONE && r->kind == ROW_KIB)
			json_num(f, "kib", r->kib);
		if (r->base[0]) {
			fprintf(f, ", \"baseline\": ");
			json_str(f, r->base);
			json_num(f, "ratio", row_ratio(r));
		}
		fprintf(f, ", \"note\": ");
		json_str(f, r->note);
		fprintf(f, "}%s\n", i + 1 < bench_nrows ? "," : "");
	}
	fprintf(f, "  ],\n  \"targets\": [\n");
	for (i = 0; i < NTARGETS; i++) {
		double ratio = target_ratio(&targets[i]);

		fprintf(f, "    {\"name\": ");
		json_str(f, targets[i].name);
		fprintf(
		    f, ", \"numerator\": \"%s\", \"denominator\": \"%s\", \"metric\": \"%s\", \"op\": \"%s\"",
		    targets[i].num, targets[i].den, targets[i].rate ? "calls_per_s" : "p50_us",
		    targets[i].at_least ? ">=" : "<=");
		json_num(f, "limit", targets[i].limit);
		json_num(f, "ratio", ratio);
		fprintf(f, ", \"verdict\": \"%s\"}%s\n", target_verdict(&targets[i], ratio),
		        i + 1 < NTARGETS ? "," : "");
	}
	fprintf(f, "  ]\n}\n");
	return fclose(f) == 0 ? 0 : -1;
}
