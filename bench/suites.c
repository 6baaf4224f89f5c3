/*
 * moat-bench: what the sim, proc, remote, concurrency and setup groups
 * measure, each against its baseline in the same run.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <moat/moat.h>

#include "bench.h"
#include "bench_selectors.h"

/* ---- sim and proc ---- */

void run_sim(void)
{
	unsigned char *out = malloc(MIB);
	fnptr_ctx f;
	moat_rows m;
	lane l[3];
	size_t s, n;

	if (!out) {
		rows_na("sim.", "failed", "out of memory");
		return;
	}
	moat_rows_open(&m, "sim", "sim");
	for (s = 0; s < NSIZES; s++) {
		n = 0;
		fnptr_init(&f, out, bench_sizes[s]);
		if (lane_begin(&l[n], row_find("sim.fnptr.%s", bench_size_names[s]), fnptr_op, &f) == 0)
			n++;
		n += moat_rows_lanes(&m, s, l + n);
		lanes_run(l, n);
	}
	moat_rows_close(&m);
	free(out);
}

/*
 * Where the scheduler puts two processes that ping-pong (one CPU or two,
 * which ones) changes their round trip by up to 1.7x on a small virtual
 * machine, and it stays put for a pair's life. So each proc size is timed
 * over PROC_PAIRS fresh pairs on both sides (a new socketpair helper, a new
 * runner), slices of the same interleaved rounds, so that one pair's luck
 * does not decide the ratio.
 */
#define PROC_PAIRS 3

/* Give the lanes of size s fresh processes: a new helper and a new runner. */
static void proc_renew(raw_pingpong *p, int sp_live, moat_rows *m, lane *l, size_t n, size_t s)
{
	size_t i;

	if (sp_live) {
		raw_close(p);
		if (raw_socketpair_open(p, bench_sizes[s]) < 0)
			lane_drop(&l[0], bench_error);
	}
	if (m->e && moat_rows_reload(m, "proc") < 0) {
		for (i = sp_live ? 1 : 0; i < n; i++)
			lane_drop(&l[i], bench_error);
	}
	lanes_warm(l, n);
}

void run_proc(void)
{
	int pairs = bench_cfg.smoke ? 1 : PROC_PAIRS, k, sp_live;
	raw_pingpong p;
	moat_rows m;
	lane l[3];
	size_t s, n;

	moat_rows_open(&m, "proc", "proc");
	for (s = 0; s < NSIZES; s++) {
		row *r = row_find("proc.socketpair.%s", bench_size_names[s]);

		n = 0;
		bench_error[0] = '\0';
		if (raw_socketpair_open(&p, bench_sizes[s]) < 0)
			row_na(r, "failed", bench_error);
		else if (lane_begin(&l[n], r, raw_pingpong_op, &p) == 0)
			n++;
		sp_live = n;
		n += moat_rows_lanes(&m, s, l + n);
		for (k = 0; k < pairs; k++) {
			if (k > 0)
				proc_renew(&p, sp_live, &m, l, n, s);
			lanes_run_slice(l, n, k, pairs);
		}
		raw_close(&p);
	}
	moat_rows_close(&m);
}

/* ---- remote ---- */

/* The gRPC core baselines of the remote rows. */
static const struct {
	const char *fmt;
	int kind, tls;
} remote_bases[] = {
    {"base.grpc_bidi.%s", GRPC_BASE_BIDI, 0},
    {"base.grpc_bidi_mtls.%s", GRPC_BASE_BIDI, 1},
    {"base.grpc_bidi_thr.%s", GRPC_BASE_BIDI_THREADED, 0},
    {"base.asylo_2rpc.%s", GRPC_BASE_ASYLO, 0},
};
#define NB (sizeof(remote_bases) / sizeof(remote_bases[0]))

/* The moatd targets of the remote rows (local, the last, starts its own). */
static const struct {
	const char *prefix;
	int tls;
	const char *backend;
} remote_targets[] = {{"grpc_sim", 0, "sim"}, {"grpc", 0, NULL}, {"grpcs", 1, NULL}};
#define NT (sizeof(remote_targets) / sizeof(remote_targets[0]))

/* Start a moatd for each target and open the bench enclave on it; rows of one that fails are n/a. */
static void remote_targets_open(moat_rows *m, bench_moatd *d)
{
	char uri[160], fmt[24];
	size_t i;

	for (i = 0; i < NT; i++) {
		memset(&m[i], 0, sizeof(m[i]));
		if (moatd_start(&d[i], remote_targets[i].tls, remote_targets[i].backend) < 0) {
			snprintf(fmt, sizeof(fmt), "%s.call.", remote_targets[i].prefix);
			rows_na(fmt, "n/a (backend not available", bench_error);
			snprintf(fmt, sizeof(fmt), "%s.exit.", remote_targets[i].prefix);
			rows_na(fmt, "n/a (backend not available", bench_error);
			continue;
		}
		moatd_uri(&d[i], uri, sizeof(uri), remote_targets[i].tls);
		moat_rows_open(&m[i], remote_targets[i].prefix, uri);
	}
}

/* Open the raw TCP and gRPC baselines at size index s and add their lanes; returns how many. */
static size_t remote_base_lanes(size_t s, raw_pingpong *tcp, grpc_base **g, lane *l)
{
	row *r = row_find("base.tcp.%s", bench_size_names[s]);
	size_t n = 0, i;

	bench_error[0] = '\0';
	if (raw_tcp_open(tcp, bench_sizes[s]) < 0)
		row_na(r, "failed", bench_error);
	else if (lane_begin(&l[n], r, raw_pingpong_op, tcp) == 0)
		n++;
	for (i = 0; i < NB; i++) {
		r = row_find(remote_bases[i].fmt, bench_size_names[s]);
		g[i] = NULL;
		bench_error[0] = '\0';
		if (remote_bases[i].tls && !bench_cfg.tls_dir[0])
			row_na(r, "n/a (no certificates", bench_cfg.tls_problem);
		else if (grpc_base_open(&g[i], remote_bases[i].kind, bench_sizes[s],
		                        remote_bases[i].tls ? bench_cfg.tls_dir : NULL) < 0)
			row_na(r, "failed", bench_error);
		else if (lane_begin(&l[n], r, grpc_base_op, g[i]) == 0)
			n++;
	}
	return n;
}

void run_remote(void)
{
	grpc_base *g[NB];
	moat_rows m[NT + 1];
	bench_moatd d[NT];
	raw_pingpong tcp;
	lane l[1 + NB + 2 * (NT + 1)];
	size_t s, n, i;

	remote_targets_open(m, d);
	moat_rows_open(&m[NT], "local", "local");
	for (s = 0; s < NSIZES; s++) {
		n = remote_base_lanes(s, &tcp, g, l);
		for (i = 0; i < NT + 1; i++)
			n += moat_rows_lanes(&m[i], s, l + n);
		lanes_run(l, n);
		raw_close(&tcp);
		for (i = 0; i < NB; i++)
			grpc_base_close(g[i]);
	}
	for (i = 0; i < NT + 1; i++)
		moat_rows_close(&m[i]);
	for (i = 0; i < NT; i++)
		moatd_stop(&d[i]);
}

/* ---- concurrency: N host threads calling one remote enclave ---- */

typedef struct conc_shared {
	moat_enclave *e;
	pthread_barrier_t start;
	atomic_int stop;
	atomic_int failed;
} conc_shared;

typedef struct conc_thread {
	conc_shared *sh;
	pthread_t tid;
	uint64_t calls;
	char error[200];
} conc_thread;

static void *conc_main(void *arg)
{
	conc_thread *t = arg;
	int rc;

	/* The first call opens this thread's stream; pay it before the clock starts. */
	rc = moat_enclave_call(t->sh->e, BENCH_SEL_EMPTY, NULL, NULL);
	if (rc < 0) {
		snprintf(t->error, sizeof(t->error), "%s", moat_error_last()->message);
		atomic_store(&t->sh->failed, 1);
	}
	pthread_barrier_wait(&t->sh->start);
	while (rc == 0 && !atomic_load_explicit(&t->sh->stop, memory_order_relaxed)) {
		rc = moat_enclave_call(t->sh->e, BENCH_SEL_EMPTY, NULL, NULL);
		if (rc < 0) {
			snprintf(t->error, sizeof(t->error), "%s", moat_error_last()->message);
			atomic_store(&t->sh->failed, 1);
			break;
		}
		t->calls++;
	}
	return NULL;
}

/*
 * One turn: n threads call for a slice of the time. Adds to *calls and *ns;
 * returns 0, -1 when a call failed (why in err), -2 when out of memory.
 */
static int conc_turn(conc_shared *sh, int n, int rounds, uint64_t *calls, uint64_t *ns, char *err,
                     size_t err_len)
{
	conc_thread *th = calloc((size_t)n, sizeof(*th));
	uint64_t t0, t1, total = 0;
	int i;

	if (!th)
		return -2;
	atomic_store(&sh->stop, 0);
	atomic_store(&sh->failed, 0);
	pthread_barrier_init(&sh->start, NULL, (unsigned)n + 1);
	for (i = 0; i < n; i++) {
		th[i].sh = sh;
		if (pthread_create(&th[i].tid, NULL, conc_main, &th[i]) != 0)
			abort(); /* the barrier would never open */
	}
	pthread_barrier_wait(&sh->start);
	t0 = bench_now_ns();
	usleep((useconds_t)(bench_cfg.row_seconds * 1.5e6 / rounds));
	atomic_store(&sh->stop, 1);
	t1 = bench_now_ns();
	for (i = 0; i < n; i++) {
		pthread_join(th[i].tid, NULL);
		total += th[i].calls;
	}
	pthread_barrier_destroy(&sh->start);
	if (atomic_load(&sh->failed)) {
		for (i = 0; i < n && !th[i].error[0]; i++)
			;
		snprintf(err, err_len, "%s", i < n ? th[i].error : "a call failed");
		free(th);
		return -1;
	}
	*calls += total;
	*ns += t1 - t0;
	free(th);
	return 0;
}

void run_concurrency(void)
{
	uint64_t calls[NTHREADS] = {0}, ns[NTHREADS] = {0};
	int failed[NTHREADS] = {0}, rounds = bench_cfg.smoke ? 1 : ROUNDS, round, rc;
	conc_shared sh;
	char uri[160], id[48], why[200];
	bench_moatd d;
	size_t k;

	if (moatd_start(&d, 0, "sim") < 0) {
		rows_na("conc.", "n/a (backend not available", bench_error);
		return;
	}
	moatd_uri(&d, uri, sizeof(uri), 0);
	memset(&sh, 0, sizeof(sh));
	if (enclave_open(&sh.e, uri) < 0) {
		rows_na("conc.", "n/a (backend not available", bench_error);
		goto out;
	}
	/* Thread counts take turns, round after round, so that noise lands on all of them alike. */
	for (round = 0; round < rounds; round++) {
		for (k = 0; k < NTHREADS; k++) {
			if (failed[k])
				continue;
			rc = conc_turn(&sh, bench_thread_counts[k], rounds, &calls[k], &ns[k], why,
			               sizeof(why));
			if (rc == -2)
				break;
			if (rc == -1) {
				snprintf(id, sizeof(id), "conc.grpc.t%d", bench_thread_counts[k]);
				row_na(row_find("%s", id), "failed", why);
				failed[k] = 1;
			}
		}
	}
	for (k = 0; k < NTHREADS; k++) {
		row *r;

		snprintf(id, sizeof(id), "conc.grpc.t%d", bench_thread_counts[k]);
		r = row_find("%s", id);
		if (failed[k] || !ns[k])
			continue;
		r->cps = (double)calls[k] * 1e9 / (double)ns[k];
		r->samples = calls[k];
		r->state = ROW_DONE;
	}
out:
	moat_enclave_destroy(sh.e);
	moatd_stop(&d);
}

/* ---- setup costs ---- */

static void setup_one(const char *id, const char *uri)
{
	int reps = bench_cfg.smoke                                                          ? 2
	           : strncmp(id, "setup.sim", 9) == 0 || strncmp(id, "setup.proc", 10) == 0 ? 40
	                                                                                    : 15;
	double *tot = calloc((size_t)reps, sizeof(double)), *ld = calloc((size_t)reps, sizeof(double)),
	       *fc = calloc((size_t)reps, sizeof(double)), *ds = calloc((size_t)reps, sizeof(double));
	row *r = row_find("%s", id);
	int i;

	if (!tot || !ld || !fc || !ds) {
		row_na(r, "failed", "out of memory");
		goto out;
	}
	for (i = 0; i < reps; i++) {
		moat_enclave *e = NULL;
		uint64_t t0, t1, t2, t3;
		int rc;

		t0 = bench_now_ns();
		if (enclave_open(&e, uri) < 0) {
			row_na(r, i == 0 ? "n/a (backend not available" : "failed", bench_error);
			goto out;
		}
		t1 = bench_now_ns();
		rc = moat_enclave_call(e, BENCH_SEL_EMPTY, NULL, NULL);
		t2 = bench_now_ns();
		if (rc < 0) {
			row_na(r, "failed", moat_error_last()->message);
			moat_enclave_destroy(e);
			goto out;
		}
		moat_enclave_destroy(e);
		t3 = bench_now_ns();
		tot[i] = (double)(t3 - t0) / 1000.0;
		ld[i] = (double)(t1 - t0) / 1000.0;
		fc[i] = (double)(t2 - t1) / 1000.0;
		ds[i] = (double)(t3 - t2) / 1000.0;
	}
	qsort(ld, (size_t)reps, sizeof(double), cmp_double);
	qsort(fc, (size_t)reps, sizeof(double), cmp_double);
	qsort(ds, (size_t)reps, sizeof(double), cmp_double);
	row_set_times(r, tot, reps);
	snprintf(r->note, sizeof(r->note), "p50 load %.0f us, first call %.0f us, destroy %.0f us",
	         ld[reps / 2], fc[reps / 2], ds[reps / 2]);
out:
	free(tot);
	free(ld);
	free(fc);
	free(ds);
}

void run_setup(void)
{
	char uri[160];
	bench_moatd d;

	setup_one("setup.sim", "sim");
	setup_one("setup.proc", "proc");
	setup_one("setup.local", "local");
	if (moatd_start(&d, 0, NULL) < 0) {
		rows_na("setup.grpc", "n/a (backend not available", bench_error);
	} else {
		moatd_uri(&d, uri, sizeof(uri), 0);
		setup_one("setup.grpc", uri);
		moatd_stop(&d);
	}
	if (moatd_start(&d, 1, NULL) < 0) {
		rows_na("setup.grpcs", "n/a (backend not available", bench_error);
	} else {
		moatd_uri(&d, uri, sizeof(uri), 1);
		setup_one("setup.grpcs", uri);
		moatd_stop(&d);
	}
}
