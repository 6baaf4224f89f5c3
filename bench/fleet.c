/*
 * The fleet group: what placing a session over 1, 2 and 4 targets costs
 * (load latency through gRPC's round robin and health checks, next to a
 * load on one target named alone), and the calls/s 8 sessions make
 * together when they are spread over those targets. All targets run on
 * this machine (moatd --backend sim on loopback), so more targets add no
 * CPU: the calls/s rows show what placement costs, not what more machines
 * would bring.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "bench_selectors.h"

#define FLEET_MAX      4
#define FLEET_SESSIONS 8

static const int fleet_sizes[] = {1, 2, 4};

/* The URI of the first n targets: a fleet URI even for one (grpc+dns:// of its address). */
static void fleet_uri(char *out, size_t cap, bench_moatd *d, int n)
{
	size_t off;
	int i;

	off = (size_t)snprintf(out, cap, n == 1 ? "grpc+dns://" : "grpc://");
	for (i = 0; i < n && off < cap; i++)
		off += (size_t)snprintf(out + off, cap - off, "%s%s", i ? "," : "", d[i].addr);
}

/* Load latency on uri: p50/p99 of reps loads (each destroyed again) into row id. */
static void fleet_load_row(const char *id, const char *uri)
{
	int reps = bench_cfg.smoke ? 2 : 20, i;
	double *us = calloc((size_t)reps, sizeof(double));
	row *r = row_find("%s", id);

	if (!us) {
		row_na(r, "failed", "out of memory");
		return;
	}
	for (i = 0; i < reps; i++) {
		moat_enclave *e = NULL;
		uint64_t t0 = bench_now_ns();

		if (enclave_open(&e, uri) < 0) {
			row_na(r, "failed", bench_error);
			free(us);
			return;
		}
		us[i] = (double)(bench_now_ns() - t0) / 1000.0;
		moat_enclave_destroy(e);
	}
	row_set_times(r, us, reps);
	free(us);
}

typedef struct fleet_caller {
	moat_enclave *e;
	pthread_t tid;
	atomic_int *stop;
	uint64_t calls;
	int failed;
} fleet_caller;

static void *caller_main(void *arg)
{
	fleet_caller *c = arg;

	while (!atomic_load_explicit(c->stop, memory_order_relaxed)) {
		if (moat_enclave_call(c->e, BENCH_SEL_EMPTY, NULL, NULL) < 0) {
			c->failed = 1;
			break;
		}
		c->calls++;
	}
	return NULL;
}

/* FLEET_SESSIONS sessions placed on uri, a thread each calling its own: calls/s into row id. */
static void fleet_calls_row(const char *id, const char *uri)
{
	fleet_caller c[FLEET_SESSIONS];
	atomic_int stop = 0;
	row *r = row_find("%s", id);
	uint64_t t0, t1, total = 0;
	int i, n = 0, failed = 0;

	memset(c, 0, sizeof(c));
	for (n = 0; n < FLEET_SESSIONS; n++) {
		c[n].stop = &stop;
		/* The first call opens the thread's stream: paid here, before the clock starts. */
		if (enclave_open(&c[n].e, uri) < 0 ||
		    moat_enclave_call(c[n].e, BENCH_SEL_EMPTY, NULL, NULL) < 0) {
			row_na(r, "failed", c[n].e ? moat_error_last()->message : bench_error);
			goto out;
		}
	}
	t0 = bench_now_ns();
	for (i = 0; i < n; i++)
		if (pthread_create(&c[i].tid, NULL, caller_main, &c[i]) != 0)
			abort();
	usleep((useconds_t)(bench_cfg.row_seconds * 1e6));
	atomic_store(&stop, 1);
	for (i = 0; i < n; i++) {
		pthread_join(c[i].tid, NULL);
		total += c[i].calls;
		failed |= c[i].failed;
	}
	t1 = bench_now_ns();
	if (failed) {
		row_na(r, "failed", "a call failed");
		goto out;
	}
	r->cps = (double)total * 1e9 / (double)(t1 - t0);
	r->samples = total;
	r->state = ROW_DONE;
out:
	for (i = 0; i < FLEET_SESSIONS; i++)
		moat_enclave_destroy(c[i].e);
}

void run_fleet(void)
{
	bench_moatd d[FLEET_MAX];
	char uri[600], id[48];
	size_t k;
	int i, started = 0;

	for (i = 0; i < FLEET_MAX; i++) {
		if (moatd_start(&d[i], 0, "sim") < 0) {
			rows_na("fleet.", "n/a (backend not available", bench_error);
			goto out;
		}
		started++;
	}
	moatd_uri(&d[0], uri, sizeof(uri), 0);
	fleet_load_row("fleet.load.one", uri);
	for (k = 0; k < sizeof(fleet_sizes) / sizeof(fleet_sizes[0]); k++) {
		fleet_uri(uri, sizeof(uri), d, fleet_sizes[k]);
		snprintf(id, sizeof(id), "fleet.load.t%d", fleet_sizes[k]);
		fleet_load_row(id, uri);
	}
	moatd_uri(&d[0], uri, sizeof(uri), 0);
	fleet_calls_row("fleet.calls.one", uri);
	for (k = 0; k < sizeof(fleet_sizes) / sizeof(fleet_sizes[0]); k++) {
		fleet_uri(uri, sizeof(uri), d, fleet_sizes[k]);
		snprintf(id, sizeof(id), "fleet.calls.t%d", fleet_sizes[k]);
		fleet_calls_row(id, uri);
	}
out:
	for (i = 0; i < started; i++)
		moatd_stop(&d[i]);
}
