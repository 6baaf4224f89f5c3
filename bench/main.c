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
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <moat/moat.h>

#include "bench.h"
#include "bench_selectors.h"

#ifndef MOAT_BENCH_BINDIR
#define MOAT_BENCH_BINDIR "."
#endif
#ifndef MOAT_BENCH_ENCLAVE
#define MOAT_BENCH_ENCLAVE "bench_enclave.so"
#endif

#define MIB ((size_t)1 << 20)
static const size_t sizes[] = {0, 64, 4096, MIB};
static const char *const size_names[] = {"0", "64", "4K", "1M"};
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))
static const int thread_counts[] = {1, 2, 8, 32};
#define NTHREADS (sizeof(thread_counts) / sizeof(thread_counts[0]))

/* ---- configuration ---- */

static struct {
	int smoke;
	double row_seconds; /* time cap per latency row */
	const char *json;
	const char *only;
	const char *bindir;
	const char *enclave;
	char tls_dir[256]; /* throwaway CA, server and client certificates; "" when not made */
	const char *tls_problem;
} cfg;

static int group_on(const char *group)
{
	const char *p;
	size_t n = strlen(group);

	if (!cfg.only)
		return 1;
	for (p = cfg.only; (p = strstr(p, group)) != NULL; p += n) {
		if ((p == cfg.only || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
			return 1;
	}
	return 0;
}

/* ---- rows ---- */

enum row_kind { ROW_LAT, ROW_RATE, ROW_KIB };
enum row_state { ROW_PENDING, ROW_DONE, ROW_NA };

typedef struct row {
	const char *group;
	char id[48];
	char label[96];
	size_t size;
	int has_size;
	enum row_kind kind;
	char base[48]; /* id of the baseline row this one is compared with */
	enum row_state state;
	double p50, p99, cps, kib; /* us, us, calls/s, KiB */
	size_t samples;
	char note[256];
} row;

#define MAX_ROWS 160
static row rows[MAX_ROWS];
static size_t nrows;

static row *row_add(const char *group, enum row_kind kind, size_t size_idx, const char *base_fmt,
                    const char *id_fmt, const char *label)
{
	row *r = &rows[nrows++];
	const char *sn = size_idx < NSIZES ? size_names[size_idx] : "";

	if (nrows > MAX_ROWS)
		abort();
	r->group = group;
	r->kind = kind;
	r->has_size = size_idx < NSIZES;
	r->size = size_idx < NSIZES ? sizes[size_idx] : 0;
	snprintf(r->id, sizeof(r->id), id_fmt, sn);
	if (base_fmt)
		snprintf(r->base, sizeof(r->base), base_fmt, sn);
	snprintf(r->label, sizeof(r->label), "%s", label);
	return r;
}

static row *row_find(const char *fmt, const char *arg)
{
	char id[48];
	size_t i;

	snprintf(id, sizeof(id), fmt, arg);
	for (i = 0; i < nrows; i++) {
		if (strcmp(rows[i].id, id) == 0)
			return &rows[i];
	}
	fprintf(stderr, "moat-bench: no row %s\n", id);
	abort();
}

static void row_na(row *r, const char *what, const char *why)
{
	if (r->state == ROW_DONE)
		return;
	r->state = ROW_NA;
	/* what is "failed" or an opening "n/a (reason", which this closes. */
	snprintf(r->note, sizeof(r->note), "%s: %.200s%s", what, why && why[0] ? why : "unknown",
	         strncmp(what, "n/a (", 5) == 0 ? ")" : "");
}

/* Mark every still-pending row of a group whose id starts with prefix as not available. */
static void rows_na(const char *prefix, const char *what, const char *why)
{
	size_t i, n = strlen(prefix);

	for (i = 0; i < nrows; i++) {
		if (rows[i].state == ROW_PENDING && strncmp(rows[i].id, prefix, n) == 0)
			row_na(&rows[i], what, why);
	}
}

static void plan_rows(void)
{
	size_t s, t;
	static const char *const remotes[][3] = {
	    {"grpc_sim", "base.grpc_bidi.%s", "grpc:// to moatd --backend sim"},
	    {"grpc", "base.grpc_bidi.%s", "grpc:// to moatd (default backend)"},
	    {"grpcs", "base.grpc_bidi_mtls.%s", "grpcs:// mTLS to moatd (default backend)"},
	    {"local", "base.grpc_bidi.%s", "local (private moatd, unix socket)"}};
	char id[48], label[96];

	for (s = 0; s < NSIZES; s++)
		row_add("sim", ROW_LAT, s, NULL, "sim.fnptr.%s",
		        "baseline: direct call through a function pointer");
	for (s = 0; s < NSIZES; s++)
		row_add("sim", ROW_LAT, s, "sim.fnptr.%s", "sim.call.%s",
		        s == 0 ? "sim: empty entry call" : "sim: entry call, echo");
	for (s = 0; s < NSIZES; s++)
		row_add("sim", ROW_LAT, s, "sim.fnptr.%s", "sim.exit.%s", "sim: entry call + one exit call");

	for (s = 0; s < NSIZES; s++)
		row_add("proc", ROW_LAT, s, NULL, "proc.socketpair.%s",
		        "baseline: socketpair ping-pong, 2 processes");
	for (s = 0; s < NSIZES; s++)
		row_add("proc", ROW_LAT, s, "proc.socketpair.%s", "proc.call.%s",
		        s == 0 ? "proc: empty entry call" : "proc: entry call, echo");
	for (s = 0; s < NSIZES; s++)
		row_add("proc", ROW_LAT, s, "proc.socketpair.%s", "proc.exit.%s",
		        "proc: entry call + one exit call");

	for (s = 0; s < NSIZES; s++)
		row_add("remote", ROW_LAT, s, NULL, "base.tcp.%s",
		        "baseline: raw TCP ping-pong, TCP_NODELAY");
	for (s = 0; s < NSIZES; s++)
		row_add("remote", ROW_LAT, s, "base.tcp.%s", "base.grpc_bidi.%s",
		        "baseline: gRPC core bidi stream ping-pong, TCP");
	for (s = 0; s < NSIZES; s++)
		row_add("remote", ROW_LAT, s, "base.tcp.%s", "base.grpc_bidi_mtls.%s",
		        "baseline: gRPC core bidi stream ping-pong, mTLS");
	for (s = 0; s < NSIZES; s++)
		row_add("remote", ROW_LAT, s, "base.grpc_bidi.%s", "base.grpc_bidi_thr.%s",
		        "baseline: gRPC bidi, server shaped like moatd (accept thread + thread per stream)");
	for (s = 0; s < NSIZES; s++)
		row_add("remote", ROW_LAT, s, "base.tcp.%s", "base.asylo_2rpc.%s",
		        "baseline: Asylo RemoteBackend pattern, 2 unary RPCs, TCP");
	for (t = 0; t < sizeof(remotes) / sizeof(remotes[0]); t++) {
		for (s = 0; s < NSIZES; s++) {
			snprintf(id, sizeof(id), "%s.call.%%s", remotes[t][0]);
			snprintf(label, sizeof(label), "%s: %s", remotes[t][2],
			         s == 0 ? "empty entry call" : "entry call, echo");
			row_add("remote", ROW_LAT, s, remotes[t][1], id, label);
		}
		for (s = 0; s < NSIZES; s++) {
			snprintf(id, sizeof(id), "%s.exit.%%s", remotes[t][0]);
			snprintf(label, sizeof(label), "%s: entry call + one exit call", remotes[t][2]);
			row_add("remote", ROW_LAT, s, remotes[t][1], id, label);
		}
	}

	for (t = 0; t < NTHREADS; t++) {
		snprintf(id, sizeof(id), "conc.grpc.t%d", thread_counts[t]);
		snprintf(label, sizeof(label),
		         "grpc:// moatd --backend sim: %d host thread%s, empty calls, one enclave",
		         thread_counts[t], thread_counts[t] > 1 ? "s" : "");
		row_add("concurrency", ROW_RATE, NSIZES, "conc.grpc.t1", id, label);
	}

	row_add("setup", ROW_LAT, NSIZES, NULL, "setup.sim", "sim: load + first call + destroy");
	row_add("setup", ROW_LAT, NSIZES, "setup.sim", "setup.proc", "proc: load + first call + destroy");
	row_add("setup", ROW_LAT, NSIZES, "setup.sim", "setup.local",
	        "local: load (starts moatd) + first call + destroy");
	row_add("setup", ROW_LAT, NSIZES, "setup.sim", "setup.grpc",
	        "grpc:// (moatd default backend): load + first call + destroy");
	row_add("setup", ROW_LAT, NSIZES, "setup.sim", "setup.grpcs",
	        "grpcs:// mTLS (moatd default backend): load + first call + destroy");

	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd.0",
	        "moatd VmRSS, 0 sessions (sessions in-process, --backend sim)");
	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd.1", "moatd VmRSS, 1 idle session");
	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd.100", "moatd VmRSS, 100 idle sessions");
	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd.per_session", "moatd: VmRSS per idle session");
	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd_proc.per_session",
	        "moatd --backend proc: its own VmRSS per idle session");
	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd_proc.child_rss",
	        "moatd --backend proc: enclave host process VmRSS per idle session");
}

/* ---- timing ---- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/*
 * A lane is one row being timed. The rows a comparison is made between run
 * as lanes side by side: each lane gets a slice of time in turn, round after
 * round, so that noise from other work on a shared machine lands on all of
 * them alike instead of on whichever row happened to run at a bad moment.
 */
typedef struct lane {
	row *r;
	bench_op op;
	void *ctx;
	int live;
	size_t batch, n, max;
	double *s;        /* per-call time of each sample, ns */
	uint64_t ops, ns; /* calls made and time spent making them while timing */
} lane;

#define ROUNDS 5

/*
 * Warm up and size the batches: operations under a microsecond are timed in
 * batches (each sample is the mean of a batch) so that reading the clock
 * does not dominate them.
 */
static int lane_begin(lane *l, row *r, bench_op op, void *ctx)
{
	size_t warm, i;
	uint64_t t0, t1;

	memset(l, 0, sizeof(*l));
	l->r = r;
	l->op = op;
	l->ctx = ctx;
	l->batch = 1;
	if (r->size >= MIB) {
		l->max = cfg.smoke ? 5 : 400;
		warm = cfg.smoke ? 1 : 10;
	} else {
		l->max = cfg.smoke ? 200 : 20000;
		warm = cfg.smoke ? 20 : 1000;
	}
	bench_error[0] = '\0';
	t0 = bench_now_ns();
	for (i = 0; i < warm; i++) {
		if (op(ctx) < 0)
			goto fail;
	}
	t1 = bench_now_ns();
	if ((double)(t1 - t0) / (double)warm < 1000.0) {
		l->batch = (size_t)(2000.0 * (double)warm / (double)(t1 - t0 + 1)) + 1;
		if (l->batch > 10000)
			l->batch = 10000;
	}
	l->s = malloc(l->max * sizeof(*l->s));
	if (!l->s) {
		bench_fail("out of memory");
		goto fail;
	}
	l->live = 1;
	return 0;
fail:
	row_na(r, "failed", bench_error[0] ? bench_error : "operation failed");
	return -1;
}

/* One turn: samples until this round's share of the time cap or of the sample limit. */
static void lane_round(lane *l, int round, int rounds)
{
	size_t limit = l->max * (size_t)(round + 1) / (size_t)rounds, b;
	double cap = cfg.row_seconds * 1e9 / rounds;
	uint64_t start = bench_now_ns(), t0, t1 = start;

	if (!l->live)
		return;
	while (l->n < limit) {
		t0 = bench_now_ns();
		for (b = 0; b < l->batch; b++) {
			if (l->op(l->ctx) < 0) {
				l->live = 0;
				row_na(l->r, "failed", bench_error[0] ? bench_error : "operation failed");
				return;
			}
		}
		t1 = bench_now_ns();
		l->s[l->n++] = (double)(t1 - t0) / (double)l->batch;
		l->ops += l->batch;
		if ((double)(t1 - start) > cap && l->n >= 4 * (size_t)(round + 1))
			break;
	}
	l->ns += t1 - start;
}

static void lane_end(lane *l)
{
	row *r = l->r;
	size_t n = l->n;

	if (l->live && n > 0) {
		qsort(l->s, n, sizeof(*l->s), cmp_double);
		r->p50 = l->s[n / 2] / 1000.0;
		r->p99 = l->s[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1] / 1000.0;
		r->cps = l->ns ? (double)l->ops * 1e9 / (double)l->ns : 0;
		r->samples = n;
		r->state = ROW_DONE;
		r->note[0] = '\0';
		if (l->batch > 1)
			snprintf(r->note, sizeof(r->note), "batches of %zu", l->batch);
	}
	free(l->s);
	l->s = NULL;
	l->live = 0;
}

/* Time every live lane, interleaved round by round. */
static void lanes_run(lane *l, size_t n)
{
	int rounds = cfg.smoke ? 1 : ROUNDS, k;
	size_t i;

	for (k = 0; k < rounds; k++) {
		for (i = 0; i < n; i++)
			lane_round(&l[i], k, rounds);
	}
	for (i = 0; i < n; i++)
		lane_end(&l[i]);
}

/* ---- sim baseline: a call through a function pointer the compiler cannot see through ---- */

typedef struct fnptr_ctx {
	int (*volatile fn)(const void *in, size_t len, void *out);
	const void *in;
	void *out;
	size_t len;
} fnptr_ctx;

__attribute__((noinline)) static int direct_echo(const void *in, size_t len, void *out)
{
	if (len)
		memcpy(out, in, len);
	/* Tell the compiler the bytes are used, so neither the call nor the copy can go. */
	__asm__ __volatile__("" : : "r"(out) : "memory");
	return 0;
}

static int fnptr_op(void *ctx)
{
	fnptr_ctx *c = ctx;

	return c->fn(c->in, c->len, c->out);
}

/* ---- Moat calls ---- */

typedef struct call_ctx {
	moat_enclave *e;
	uint64_t selector;
	size_t size;
	size_t want_items;
	moat_msg *in, *out;
} call_ctx;

static int host_exit_echo(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	size_t i, n = moat_msg_count(in);
	const void *data;
	size_t len;
	int rc;

	for (i = 0; i < n; i++) {
		if ((rc = moat_msg_item(in, i, &data, &len)) < 0 || (rc = moat_msg_push(out, data, len)) < 0)
			return rc;
	}
	return 0;
}

static int call_op(void *ctx)
{
	call_ctx *c = ctx;
	const void *data;
	size_t len;
	int rc;

	if (c->selector == BENCH_SEL_EMPTY) {
		/* The empty call: no messages at all, the bare cost of the call path. */
		rc = moat_enclave_call(c->e, c->selector, NULL, NULL);
		if (rc < 0)
			bench_fail("%s (%s)", moat_error_last()->message, moat_strerror(rc));
		return rc < 0 ? -1 : 0;
	}
	moat_msg_reset(c->out);
	rc = moat_enclave_call(c->e, c->selector, c->in, c->out);
	if (rc < 0) {
		bench_fail("%s (%s)", moat_error_last()->message, moat_strerror(rc));
		return -1;
	}
	if (moat_msg_count(c->out) != c->want_items ||
	    (c->want_items && (moat_msg_item(c->out, 0, &data, &len) < 0 || len != c->size))) {
		bench_fail("wrong reply: %zu items", moat_msg_count(c->out));
		return -1;
	}
	return 0;
}

/* Load options for one backend URI; TLS files for grpcs. */
static void load_options(moat_load_options *o, const char *uri, char (*paths)[300])
{
	*o = (moat_load_options)MOAT_LOAD_OPTIONS_INIT;
	o->backend = uri;
	if (strncmp(uri, "grpcs://", 8) == 0 && cfg.tls_dir[0]) {
		snprintf(paths[0], sizeof(paths[0]), "%s/ca.pem", cfg.tls_dir);
		snprintf(paths[1], sizeof(paths[1]), "%s/client.pem", cfg.tls_dir);
		snprintf(paths[2], sizeof(paths[2]), "%s/client.key", cfg.tls_dir);
		o->tls_ca_file = paths[0];
		o->tls_cert_file = paths[1];
		o->tls_key_file = paths[2];
		o->tls_server_name = "localhost";
	}
}

static int enclave_open(moat_enclave **out, const char *uri)
{
	char paths[3][300];
	moat_load_options o;
	int rc;

	load_options(&o, uri, paths);
	rc = moat_enclave_load(out, cfg.enclave, &o);
	if (rc < 0) {
		bench_fail("%s", moat_error_last()->message);
		return rc;
	}
	rc = moat_enclave_set_exit_handler(*out, BENCH_EXIT_ECHO, host_exit_echo, NULL);
	if (rc < 0) {
		bench_fail("%s", moat_error_last()->message);
		moat_enclave_destroy(*out);
		*out = NULL;
	}
	return rc;
}

/* One backend's enclave, with the messages its call and call+exit rows use. */
typedef struct moat_rows {
	const char *prefix; /* row ids start with it: "sim", "grpc", ... */
	moat_enclave *e;
	call_ctx call, exit;
} moat_rows;

static unsigned char *payload; /* MIB bytes every row sends from */

static void moat_rows_close(moat_rows *m)
{
	moat_msg_free(m->call.in);
	moat_msg_free(m->call.out);
	moat_msg_free(m->exit.in);
	moat_msg_free(m->exit.out);
	moat_enclave_destroy(m->e);
	memset(m, 0, sizeof(*m));
}

/* Load the bench enclave on uri; on failure mark the backend's rows n/a with the reason. */
static int moat_rows_open(moat_rows *m, const char *prefix, const char *uri)
{
	char fmt[48];

	memset(m, 0, sizeof(*m));
	m->prefix = prefix;
	if (enclave_open(&m->e, uri) < 0) {
		snprintf(fmt, sizeof(fmt), "%s.call.", prefix);
		rows_na(fmt, "n/a (backend not available", bench_error);
		snprintf(fmt, sizeof(fmt), "%s.exit.", prefix);
		rows_na(fmt, "n/a (backend not available", bench_error);
		return -1;
	}
	if (moat_msg_new(&m->call.in) < 0 || moat_msg_new(&m->call.out) < 0 ||
	    moat_msg_new(&m->exit.in) < 0 || moat_msg_new(&m->exit.out) < 0) {
		snprintf(fmt, sizeof(fmt), "%s.", prefix);
		rows_na(fmt, "failed", "out of memory");
		moat_rows_close(m);
		return -1;
	}
	m->call.e = m->exit.e = m->e;
	return 0;
}

/* Add the call and call+exit lanes of an open backend at size index s. */
static size_t moat_rows_lanes(moat_rows *m, size_t s, lane *l)
{
	char fmt[48];
	size_t n = 0;
	int k;

	if (!m->e)
		return 0;
	for (k = 0; k < 2; k++) {
		call_ctx *c = k == 0 ? &m->call : &m->exit;

		moat_msg_reset(c->in);
		c->size = sizes[s];
		c->want_items = sizes[s] ? 1 : 0;
		if (sizes[s])
			moat_msg_push_borrowed(c->in, payload, sizes[s]);
		c->selector = k == 1 ? BENCH_SEL_EXIT : sizes[s] ? BENCH_SEL_ECHO : BENCH_SEL_EMPTY;
		snprintf(fmt, sizeof(fmt), "%s.%s.%%s", m->prefix, k == 0 ? "call" : "exit");
		if (lane_begin(&l[n], row_find(fmt, size_names[s]), call_op, c) == 0)
			n++;
	}
	return n;
}

static void run_sim(void)
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
		f.fn = direct_echo;
		f.in = payload;
		f.out = out;
		f.len = sizes[s];
		if (lane_begin(&l[n], row_find("sim.fnptr.%s", size_names[s]), fnptr_op, &f) == 0)
			n++;
		n += moat_rows_lanes(&m, s, l + n);
		lanes_run(l, n);
	}
	moat_rows_close(&m);
	free(out);
}

static void run_proc(void)
{
	raw_pingpong p;
	moat_rows m;
	lane l[3];
	size_t s, n;

	moat_rows_open(&m, "proc", "proc");
	for (s = 0; s < NSIZES; s++) {
		row *r = row_find("proc.socketpair.%s", size_names[s]);

		n = 0;
		bench_error[0] = '\0';
		if (raw_socketpair_open(&p, sizes[s]) < 0)
			row_na(r, "failed", bench_error);
		else if (lane_begin(&l[n], r, raw_pingpong_op, &p) == 0)
			n++;
		n += moat_rows_lanes(&m, s, l + n);
		lanes_run(l, n);
		raw_close(&p);
	}
	moat_rows_close(&m);
}

/* ---- moatd ---- */

typedef struct moatd {
	pid_t pid;
	char addr[128]; /* what its ready file said: host:port */
	char dir[64];
} moatd;

static int file_exists(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0;
}

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path) < 0 ? -1 : 0;
}

static void moatd_stop(moatd *d)
{
	bench_reap(d->pid);
	d->pid = -1;
	if (d->dir[0]) {
		/* Its ready file, identity key and uploaded images: all ours, in our temp dir. */
		nftw(d->dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
		d->dir[0] = '\0';
	}
}

/* Start moatd on 127.0.0.1:0 (mTLS when tls; backend NULL: its default), wait for its ready file and read the
 * address from it. */
static int moatd_start(moatd *d, int tls, const char *backend)
{
	char exe[512], ready[128], state[128], logpath[128], tls_args[4][300];
	char *argv[20];
	int n = 0, i;
	pid_t pid;

	memset(d, 0, sizeof(*d));
	d->pid = -1;
	snprintf(exe, sizeof(exe), "%s/moatd", cfg.bindir);
	if (!file_exists(exe)) {
		bench_fail("moatd is not built (%s)", exe);
		return -1;
	}
	if (tls && !cfg.tls_dir[0]) {
		bench_fail("no TLS certificates: %s", cfg.tls_problem ? cfg.tls_problem : "not made");
		return -1;
	}
	snprintf(d->dir, sizeof(d->dir), "/tmp/moat-bench-moatd-XXXXXX");
	if (!mkdtemp(d->dir)) {
		bench_fail("mkdtemp: %s", strerror(errno));
		d->dir[0] = '\0';
		return -1;
	}
	snprintf(ready, sizeof(ready), "%s/ready", d->dir);
	snprintf(state, sizeof(state), "%s/state", d->dir);
	snprintf(logpath, sizeof(logpath), "%s/log", d->dir);
	argv[n++] = exe;
	argv[n++] = (char *)"--listen";
	argv[n++] = (char *)"127.0.0.1:0";
	argv[n++] = (char *)"--ready-file";
	argv[n++] = ready;
	argv[n++] = (char *)"--allow-upload";
	argv[n++] = (char *)"--max-sessions";
	argv[n++] = (char *)"1000";
	argv[n++] = (char *)"--state-dir";
	argv[n++] = state;
	if (backend) {
		argv[n++] = (char *)"--backend";
		argv[n++] = (char *)backend;
	}
	if (tls) {
		snprintf(tls_args[0], sizeof(tls_args[0]), "%s/server.pem", cfg.tls_dir);
		snprintf(tls_args[1], sizeof(tls_args[1]), "%s/server.key", cfg.tls_dir);
		snprintf(tls_args[2], sizeof(tls_args[2]), "%s/ca.pem", cfg.tls_dir);
		argv[n++] = (char *)"--tls-cert";
		argv[n++] = tls_args[0];
		argv[n++] = (char *)"--tls-key";
		argv[n++] = tls_args[1];
		argv[n++] = (char *)"--tls-client-ca";
		argv[n++] = tls_args[2];
	}
	argv[n] = NULL;
	pid = fork();
	if (pid < 0) {
		bench_fail("fork: %s", strerror(errno));
		return -1;
	}
	if (pid == 0) {
		/* Its chatter goes to a log in its temp dir; the last line explains a failed start. */
		int log = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);

		prctl(PR_SET_PDEATHSIG, SIGTERM); /* dies with us even if we are killed */

		if (log >= 0) {
			dup2(log, STDOUT_FILENO);
			dup2(log, STDERR_FILENO);
		}
		execv(exe, argv);
		_exit(127);
	}
	d->pid = pid;
	for (i = 0; i < 1000; i++) {
		FILE *f;
		int status;

		if (waitpid(pid, &status, WNOHANG) == pid) {
			char last[200] = "", line[200];

			if ((f = fopen(logpath, "r")) != NULL) {
				while (fgets(line, sizeof(line), f))
					if (line[0] != '\n')
						memcpy(last, line, sizeof(last));
				fclose(f);
			}
			last[strcspn(last, "\n")] = '\0';
			d->pid = -1;
			bench_fail("moatd exited at start (status %d): %s",
			           WIFEXITED(status) ? WEXITSTATUS(status) : -1, last);
			moatd_stop(d);
			return -1;
		}
		f = fopen(ready, "r");
		if (f) {
			int ok = fgets(d->addr, sizeof(d->addr), f) != NULL;

			fclose(f);
			d->addr[strcspn(d->addr, "\r\n \t")] = '\0';
			if (ok && d->addr[0])
				return 0;
		}
		usleep(10000);
	}
	bench_fail("moatd did not write %s within 10 s", ready);
	moatd_stop(d);
	return -1;
}

/* The ready file may hold "HOST:PORT", "grpc://HOST:PORT" or just the port. */
static void moatd_uri(const moatd *d, char *uri, size_t len, int tls)
{
	const char *a = d->addr, *sep = strstr(a, "://");

	if (sep)
		a = sep + 3;
	if (strchr(a, ':'))
		snprintf(uri, len, "%s://%s", tls ? "grpcs" : "grpc", a);
	else
		snprintf(uri, len, "%s://127.0.0.1:%s", tls ? "grpcs" : "grpc", a);
}

/* ---- TLS material, made with the openssl CLI in a temporary directory ---- */

static int run_openssl(const char *const *args)
{
	char *argv[32];
	int n = 0, status;
	pid_t pid;

	argv[n++] = (char *)"openssl";
	while (*args && n < 31)
		argv[n++] = (char *)*args++;
	argv[n] = NULL;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);

		if (devnull >= 0) {
			dup2(devnull, STDOUT_FILENO);
			dup2(devnull, STDERR_FILENO);
		}
		execvp("openssl", argv);
		_exit(127);
	}
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

static void certs_make(void)
{
	char dir[] = "/tmp/moat-bench-tls-XXXXXX";
	char p[8][300];
	static const char *names[] = {"ca.key",     "ca.pem",     "server.key",
	                              "server.pem", "client.key", "client.pem"};
	int i;

	if (!mkdtemp(dir)) {
		cfg.tls_problem = "mkdtemp failed";
		return;
	}
	for (i = 0; i < 6; i++)
		snprintf(p[i], sizeof(p[i]), "%s/%s", dir, names[i]);
	{
		const char *ca[] = {"req",    "-x509",    "-newkey",
		                    "ec",     "-pkeyopt", "ec_paramgen_curve:prime256v1",
		                    "-nodes", "-keyout",  p[0],
		                    "-out",   p[1],       "-days",
		                    "2",      "-subj",    "/CN=moat-bench-ca",
		                    NULL};
		const char *srv[] = {"req",
		                     "-x509",
		                     "-CA",
		                     p[1],
		                     "-CAkey",
		                     p[0],
		                     "-newkey",
		                     "ec",
		                     "-pkeyopt",
		                     "ec_paramgen_curve:prime256v1",
		                     "-nodes",
		                     "-keyout",
		                     p[2],
		                     "-out",
		                     p[3],
		                     "-days",
		                     "2",
		                     "-subj",
		                     "/CN=localhost",
		                     "-addext",
		                     "subjectAltName=DNS:localhost,IP:127.0.0.1",
		                     "-addext",
		                     "basicConstraints=critical,CA:FALSE",
		                     NULL};
		const char *cli[] = {"req",
		                     "-x509",
		                     "-CA",
		                     p[1],
		                     "-CAkey",
		                     p[0],
		                     "-newkey",
		                     "ec",
		                     "-pkeyopt",
		                     "ec_paramgen_curve:prime256v1",
		                     "-nodes",
		                     "-keyout",
		                     p[4],
		                     "-out",
		                     p[5],
		                     "-days",
		                     "2",
		                     "-subj",
		                     "/CN=moat-bench-client",
		                     "-addext",
		                     "basicConstraints=critical,CA:FALSE",
		                     "-addext",
		                     "extendedKeyUsage=clientAuth",
		                     NULL};

		if (run_openssl(ca) < 0 || run_openssl(srv) < 0 || run_openssl(cli) < 0) {
			cfg.tls_problem = "the openssl CLI failed to make throwaway certificates";
			for (i = 0; i < 6; i++)
				unlink(p[i]);
			rmdir(dir);
			return;
		}
	}
	snprintf(cfg.tls_dir, sizeof(cfg.tls_dir), "%s", dir);
}

static void certs_remove(void)
{
	static const char *names[] = {"ca.key",     "ca.pem",     "server.key", "server.pem",
	                              "client.key", "client.pem", "ca.srl"};
	char p[300];
	size_t i;

	if (!cfg.tls_dir[0])
		return;
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		snprintf(p, sizeof(p), "%s/%s", cfg.tls_dir, names[i]);
		unlink(p);
	}
	rmdir(cfg.tls_dir);
	cfg.tls_dir[0] = '\0';
}

/* ---- remote ---- */

static void run_remote(void)
{
	static const struct {
		const char *fmt;
		int kind, tls;
	} bases[] = {
	    {"base.grpc_bidi.%s", GRPC_BASE_BIDI, 0},
	    {"base.grpc_bidi_mtls.%s", GRPC_BASE_BIDI, 1},
	    {"base.grpc_bidi_thr.%s", GRPC_BASE_BIDI_THREADED, 0},
	    {"base.asylo_2rpc.%s", GRPC_BASE_ASYLO, 0},
	};
	enum { NB = sizeof(bases) / sizeof(bases[0]) };
	static const struct {
		const char *prefix;
		int tls;
		const char *backend;
	} targets_[] = {{"grpc_sim", 0, "sim"}, {"grpc", 0, NULL}, {"grpcs", 1, NULL}};
	enum { NT = sizeof(targets_) / sizeof(targets_[0]) };
	grpc_base *g[NB];
	moat_rows m[NT + 1];
	moatd d[NT];
	raw_pingpong tcp;
	char uri[160];
	lane l[1 + NB + 2 * (NT + 1)];
	size_t s, n, i;

	for (i = 0; i < NT; i++) {
		memset(&m[i], 0, sizeof(m[i]));
		if (moatd_start(&d[i], targets_[i].tls, targets_[i].backend) < 0) {
			char fmt[24];

			snprintf(fmt, sizeof(fmt), "%s.call.", targets_[i].prefix);
			rows_na(fmt, "n/a (backend not available", bench_error);
			snprintf(fmt, sizeof(fmt), "%s.exit.", targets_[i].prefix);
			rows_na(fmt, "n/a (backend not available", bench_error);
			continue;
		}
		moatd_uri(&d[i], uri, sizeof(uri), targets_[i].tls);
		moat_rows_open(&m[i], targets_[i].prefix, uri);
	}
	moat_rows_open(&m[NT], "local", "local");
	for (s = 0; s < NSIZES; s++) {
		row *r = row_find("base.tcp.%s", size_names[s]);

		n = 0;
		bench_error[0] = '\0';
		if (raw_tcp_open(&tcp, sizes[s]) < 0)
			row_na(r, "failed", bench_error);
		else if (lane_begin(&l[n], r, raw_pingpong_op, &tcp) == 0)
			n++;
		for (i = 0; i < NB; i++) {
			r = row_find(bases[i].fmt, size_names[s]);
			g[i] = NULL;
			bench_error[0] = '\0';
			if (bases[i].tls && !cfg.tls_dir[0])
				row_na(r, "n/a (no certificates", cfg.tls_problem);
			else if (grpc_base_open(&g[i], bases[i].kind, sizes[s],
			                        bases[i].tls ? cfg.tls_dir : NULL) < 0)
				row_na(r, "failed", bench_error);
			else if (lane_begin(&l[n], r, grpc_base_op, g[i]) == 0)
				n++;
		}
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

static void run_concurrency(void)
{
	uint64_t calls[NTHREADS] = {0}, ns[NTHREADS] = {0};
	int failed[NTHREADS] = {0}, rounds = cfg.smoke ? 1 : ROUNDS, round;
	conc_thread *th = NULL;
	conc_shared sh;
	char uri[160], id[48];
	moatd d;
	size_t k;
	int i, n;

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
			uint64_t t0, t1, total = 0;

			n = thread_counts[k];
			if (failed[k])
				continue;
			th = calloc((size_t)n, sizeof(*th));
			if (!th)
				break;
			atomic_store(&sh.stop, 0);
			atomic_store(&sh.failed, 0);
			pthread_barrier_init(&sh.start, NULL, (unsigned)n + 1);
			for (i = 0; i < n; i++) {
				th[i].sh = &sh;
				if (pthread_create(&th[i].tid, NULL, conc_main, &th[i]) != 0)
					abort(); /* the barrier would never open */
			}
			pthread_barrier_wait(&sh.start);
			t0 = bench_now_ns();
			usleep((useconds_t)(cfg.row_seconds * 1.5e6 / rounds));
			atomic_store(&sh.stop, 1);
			t1 = bench_now_ns();
			for (i = 0; i < n; i++) {
				pthread_join(th[i].tid, NULL);
				total += th[i].calls;
			}
			pthread_barrier_destroy(&sh.start);
			snprintf(id, sizeof(id), "conc.grpc.t%d", n);
			if (atomic_load(&sh.failed)) {
				for (i = 0; i < n && !th[i].error[0]; i++)
					;
				row_na(row_find("%s", id), "failed", i < n ? th[i].error : "a call failed");
				failed[k] = 1;
			} else {
				calls[k] += total;
				ns[k] += t1 - t0;
			}
			free(th);
			th = NULL;
		}
	}
	for (k = 0; k < NTHREADS; k++) {
		row *r;

		snprintf(id, sizeof(id), "conc.grpc.t%d", thread_counts[k]);
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
	int reps = cfg.smoke                                                                ? 2
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
	qsort(tot, (size_t)reps, sizeof(double), cmp_double);
	qsort(ld, (size_t)reps, sizeof(double), cmp_double);
	qsort(fc, (size_t)reps, sizeof(double), cmp_double);
	qsort(ds, (size_t)reps, sizeof(double), cmp_double);
	r->p50 = tot[reps / 2];
	r->p99 = tot[reps - 1 - reps / 100];
	r->cps = 1e6 / r->p50;
	r->samples = (size_t)reps;
	r->state = ROW_DONE;
	snprintf(r->note, sizeof(r->note), "p50 load %.0f us, first call %.0f us, destroy %.0f us",
	         ld[reps / 2], fc[reps / 2], ds[reps / 2]);
out:
	free(tot);
	free(ld);
	free(fc);
	free(ds);
}

static void run_setup(void)
{
	char uri[160];
	moatd d;

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

/* ---- memory ---- */

/* VmRSS of pid in KiB, or -1. */
static long rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "VmRSS:", 6) == 0) {
			kib = strtol(line + 6, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kib;
}

/* Sum of VmRSS over every descendant of pid (children of all its threads, recursively). */
static long children_rss_kib(pid_t pid, int depth)
{
	char path[96], buf[4096];
	struct dirent *de;
	long sum = 0;
	DIR *d;

	if (depth > 4)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		FILE *f;
		char *p, *end;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.16s/children", (int)pid, de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f)) {
			for (p = buf;; p = end) {
				long child = strtol(p, &end, 10);
				long kib;

				if (end == p)
					break;
				if ((kib = rss_kib((pid_t)child)) > 0)
					sum += kib;
				sum += children_rss_kib((pid_t)child, depth + 1);
			}
		}
		fclose(f);
	}
	closedir(d);
	return sum;
}

/*
 * Load nsess sessions on a fresh moatd (its local backend given) and read
 * VmRSS: moatd's own at 0, 1 and nsess sessions, and its children's (the
 * proc backend's enclave hosts) at nsess.
 */
static int memory_one(const char *backend, int nsess, long *rss0, long *rss1, long *rssn, long *kids)
{
	moat_enclave **e = calloc((size_t)nsess, sizeof(*e));
	long kids0;
	char uri[160];
	moatd d;
	int i, rc = -1;

	if (!e) {
		bench_fail("out of memory");
		return -1;
	}
	if (moatd_start(&d, 0, backend) < 0)
		goto out;
	moatd_uri(&d, uri, sizeof(uri), 0);
	usleep(200000);
	*rss0 = rss_kib(d.pid);
	kids0 = children_rss_kib(d.pid, 0);
	for (i = 0; i < nsess; i++) {
		if (enclave_open(&e[i], uri) < 0 ||
		    moat_enclave_call(e[i], BENCH_SEL_EMPTY, NULL, NULL) < 0) {
			char why[300];

			snprintf(why, sizeof(why), "session %d: %.200s", i + 1,
			         e[i] ? moat_error_last()->message : bench_error);
			bench_fail("%s", why);
			goto out;
		}
		if (i == 0) {
			usleep(100000);
			*rss1 = rss_kib(d.pid);
		}
	}
	usleep(200000);
	*rssn = rss_kib(d.pid);
	*kids = children_rss_kib(d.pid, 0) - kids0;
	rc = 0;
out:
	for (i = 0; i < nsess; i++)
		moat_enclave_destroy(e[i]);
	moatd_stop(&d);
	free(e);
	return rc;
}

static void run_memory(void)
{
	enum { NSESS = 100, NPROC = 20 };
	long rss0 = 0, rss1 = 0, rssn = 0, kids = 0;
	int i;

	if (memory_one("sim", NSESS, &rss0, &rss1, &rssn, &kids) < 0) {
		rows_na("mem.moatd.", "n/a (backend not available", bench_error);
	} else {
		row_find("%s", "mem.moatd.0")->kib = (double)rss0;
		row_find("%s", "mem.moatd.1")->kib = (double)rss1;
		row_find("%s", "mem.moatd.100")->kib = (double)rssn;
		row_find("%s", "mem.moatd.per_session")->kib = (double)(rssn - rss0) / NSESS;
	}
	if (memory_one("proc", NPROC, &rss0, &rss1, &rssn, &kids) < 0) {
		rows_na("mem.moatd_proc.", "n/a (backend not available", bench_error);
	} else {
		row_find("%s", "mem.moatd_proc.per_session")->kib = (double)(rssn - rss0) / NPROC;
		row_find("%s", "mem.moatd_proc.child_rss")->kib = (double)kids / NPROC;
		snprintf(row_find("%s", "mem.moatd_proc.child_rss")->note, sizeof(rows[0].note),
		         "%d sessions, children total %ld KiB", NPROC, kids);
	}
	for (i = (int)nrows - 1; i >= 0; i--) {
		if (strncmp(rows[i].id, "mem.", 4) == 0 && rows[i].state == ROW_PENDING)
			rows[i].state = ROW_DONE;
	}
}

/* ---- output ---- */

static const row *row_get(const char *id)
{
	size_t i;

	for (i = 0; i < nrows; i++) {
		if (strcmp(rows[i].id, id) == 0)
			return &rows[i];
	}
	return NULL;
}

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

static void print_table(FILE *f)
{
	const char *group = "";
	struct utsname u;
	size_t i;

	uname(&u);
	fprintf(f, "moat-bench %s%s: %s %s, %ld CPUs online; p50/p99 in microseconds per call\n",
	        moat_version(),
	        cfg.smoke ? " (SMOKE MODE: tiny iteration counts, numbers are meaningless)" : "", u.sysname,
	        u.release, sysconf(_SC_NPROCESSORS_ONLN));
	for (i = 0; i < nrows; i++) {
		const row *r = &rows[i];
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

static int write_json(const char *path)
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
	fprintf(f, ",\n  \"smoke\": %s,\n  \"machine\": {\"sysname\": ", cfg.smoke ? "true" : "false");
	json_str(f, u.sysname);
	fprintf(f, ", \"release\": ");
	json_str(f, u.release);
	fprintf(f, ", \"cpus\": %ld},\n  \"rows\": [\n", sysconf(_SC_NPROCESSORS_ONLN));
	for (i = 0; i < nrows; i++) {
		const row *r = &rows[i];

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
		fprintf(f, "}%s\n", i + 1 < nrows ? "," : "");
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

/* ---- main ---- */

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: moat-bench [--smoke] [--json FILE] [--only GROUPS] [--time SECONDS]\n"
	        "                  [--bindir DIR] [--enclave PATH] [--list]\n"
	        "  --smoke        a few hundred iterations per row: checks that every row runs\n"
	        "  --json FILE    also write the results as JSON\n"
	        "  --only GROUPS  comma list of sim,proc,remote,concurrency,setup,memory\n"
	        "  --time S       time cap per latency row in seconds (default 1.0)\n"
	        "  --bindir DIR   where moatd is (default %s)\n"
	        "  --enclave P    the benchmark enclave (default %s)\n"
	        "  --list         print the row ids and exit\n",
	        MOAT_BENCH_BINDIR, MOAT_BENCH_ENCLAVE);
}

int main(int argc, char **argv)
{
	int i, list = 0;

	if (argc > 1 && strcmp(argv[1], "--helper") == 0)
		return bench_helper_main(argc - 2, argv + 2);
	cfg.row_seconds = 1.0;
	cfg.bindir = MOAT_BENCH_BINDIR;
	cfg.enclave = MOAT_BENCH_ENCLAVE;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (strcmp(a, "--smoke") == 0) {
			cfg.smoke = 1;
		} else if (strcmp(a, "--list") == 0) {
			list = 1;
		} else if (strcmp(a, "--json") == 0 && v) {
			cfg.json = v;
			i++;
		} else if (strcmp(a, "--only") == 0 && v) {
			cfg.only = v;
			i++;
		} else if (strcmp(a, "--time") == 0 && v) {
			char *end;

			cfg.row_seconds = strtod(v, &end);
			if (*end || cfg.row_seconds <= 0) {
				usage(stderr);
				return 2;
			}
			i++;
		} else if (strcmp(a, "--bindir") == 0 && v) {
			cfg.bindir = v;
			i++;
		} else if (strcmp(a, "--enclave") == 0 && v) {
			cfg.enclave = v;
			i++;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}
	if (cfg.smoke && cfg.row_seconds > 0.2)
		cfg.row_seconds = 0.2;
	plan_rows();
	if (list) {
		for (i = 0; i < (int)nrows; i++) {
			if (group_on(rows[i].group))
				printf("%s\n", rows[i].id);
		}
		return 0;
	}
	/* A helper that dies must not kill us through a write on its socket. */
	signal(SIGPIPE, SIG_IGN);
	payload = malloc(MIB);
	if (!payload) {
		fprintf(stderr, "moat-bench: out of memory\n");
		return 1;
	}
	memset(payload, 0xa5, MIB);
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
	if (group_on("memory"))
		run_memory();
	certs_remove();
	free(payload);
	for (i = (int)nrows - 1; i >= 0; i--) {
		if (!group_on(rows[i].group)) {
			memmove(&rows[i], &rows[i + 1], (nrows - (size_t)i - 1) * sizeof(rows[0]));
			nrows--;
		}
	}
	print_table(stdout);
	if (cfg.json && write_json(cfg.json) < 0)
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
