/*
 * moat-bench: the timing loop (lanes), and the in-process operations it
 * times: the function-pointer baseline and Moat calls on any backend.
 */
#include <stdlib.h>
#include <string.h>

#include <moat/moat.h>

#include "bench.h"
#include "bench_selectors.h"

/* ---- timing ---- */

int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

void row_set_times(row *r, double *us, int n)
{
	qsort(us, (size_t)n, sizeof(double), cmp_double);
	r->p50 = us[n / 2];
	r->p99 = us[n - 1 - n / 100];
	r->cps = 1e6 / r->p50;
	r->samples = (size_t)n;
	r->state = ROW_DONE;
}

/*
 * Warm up and size the batches: operations under a microsecond are timed in
 * batches (each sample is the mean of a batch) so that reading the clock
 * does not dominate them.
 */
int lane_begin(lane *l, row *r, bench_op op, void *ctx)
{
	size_t warm, i;
	uint64_t t0, t1;

	memset(l, 0, sizeof(*l));
	l->r = r;
	l->op = op;
	l->ctx = ctx;
	l->batch = 1;
	if (r->size >= MIB) {
		l->max = bench_cfg.smoke ? 5 : 400;
		warm = bench_cfg.smoke ? 1 : 10;
	} else {
		l->max = bench_cfg.smoke ? 200 : 20000;
		warm = bench_cfg.smoke ? 20 : 1000;
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
	double cap = bench_cfg.row_seconds * 1e9 / rounds;
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

void lanes_run_slice(lane *l, size_t n, int slice, int slices)
{
	int rounds = bench_cfg.smoke ? 1 : ROUNDS, k;
	size_t i;

	for (k = 0; k < rounds; k++) {
		for (i = 0; i < n; i++)
			lane_round(&l[i], slice * rounds + k, slices * rounds);
	}
	if (slice + 1 < slices)
		return;
	for (i = 0; i < n; i++)
		lane_end(&l[i]);
}

void lanes_run(lane *l, size_t n)
{
	lanes_run_slice(l, n, 0, 1);
}

void lanes_warm(lane *l, size_t n)
{
	size_t i, k, warm = bench_cfg.smoke ? 2 : 100;

	for (i = 0; i < n; i++) {
		for (k = 0; l[i].live && k < warm; k++) {
			if (l[i].op(l[i].ctx) < 0) {
				l[i].live = 0;
				row_na(l[i].r, "failed", bench_error[0] ? bench_error : "operation failed");
			}
		}
	}
}

void lane_drop(lane *l, const char *why)
{
	if (!l->live)
		return;
	l->live = 0;
	row_na(l->r, "failed", why);
}

/* ---- the sim baseline ---- */

__attribute__((noinline)) static int direct_echo(const void *in, size_t len, void *out)
{
	if (len)
		memcpy(out, in, len);
	/* Tell the compiler the bytes are used, so neither the call nor the copy can go. */
	__asm__ __volatile__("" : : "r"(out) : "memory");
	return 0;
}

void fnptr_init(fnptr_ctx *f, void *out, size_t len)
{
	f->fn = direct_echo;
	f->in = bench_payload;
	f->out = out;
	f->len = len;
}

int fnptr_op(void *ctx)
{
	fnptr_ctx *c = ctx;

	return c->fn(c->in, c->len, c->out);
}

/* ---- Moat calls ---- */

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
	if (strncmp(uri, "grpcs://", 8) == 0 && bench_cfg.tls_dir[0]) {
		snprintf(paths[0], sizeof(paths[0]), "%s/ca.pem", bench_cfg.tls_dir);
		snprintf(paths[1], sizeof(paths[1]), "%s/client.pem", bench_cfg.tls_dir);
		snprintf(paths[2], sizeof(paths[2]), "%s/client.key", bench_cfg.tls_dir);
		o->tls_ca_file = paths[0];
		o->tls_cert_file = paths[1];
		o->tls_key_file = paths[2];
		o->tls_server_name = "localhost";
	}
}

int enclave_open(moat_enclave **out, const char *uri)
{
	char paths[3][300];
	moat_load_options o;
	int rc;

	load_options(&o, uri, paths);
	rc = moat_enclave_load(out, bench_cfg.enclave, &o);
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
void moat_rows_close(moat_rows *m)
{
	moat_msg_free(m->call.in);
	moat_msg_free(m->call.out);
	moat_msg_free(m->exit.in);
	moat_msg_free(m->exit.out);
	moat_enclave_destroy(m->e);
	memset(m, 0, sizeof(*m));
}

int moat_rows_open(moat_rows *m, const char *prefix, const char *uri)
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

int moat_rows_reload(moat_rows *m, const char *uri)
{
	moat_enclave *e;

	if (!m->e || enclave_open(&e, uri) < 0)
		return -1;
	moat_enclave_destroy(m->e);
	m->e = m->call.e = m->exit.e = e;
	return 0;
}

size_t moat_rows_lanes(moat_rows *m, size_t s, lane *l)
{
	char fmt[48];
	size_t n = 0;
	int k;

	if (!m->e)
		return 0;
	for (k = 0; k < 2; k++) {
		call_ctx *c = k == 0 ? &m->call : &m->exit;

		moat_msg_reset(c->in);
		c->size = bench_sizes[s];
		c->want_items = bench_sizes[s] ? 1 : 0;
		if (bench_sizes[s])
			moat_msg_push_borrowed(c->in, bench_payload, bench_sizes[s]);
		c->selector = k == 1 ? BENCH_SEL_EXIT : bench_sizes[s] ? BENCH_SEL_ECHO : BENCH_SEL_EMPTY;
		snprintf(fmt, sizeof(fmt), "%s.%s.%%s", m->prefix, k == 0 ? "call" : "exit");
		if (lane_begin(&l[n], row_find(fmt, bench_size_names[s]), call_op, c) == 0)
			n++;
	}
	return n;
}
