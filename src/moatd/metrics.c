/*
 * moatd's metrics: counters the handlers bump (lock-free, relaxed atomics)
 * and their rendering in the Prometheus text format. metrics_http.c serves
 * the text on --metrics-listen.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "moatd/moatd.h"

#define add1(p)    __atomic_fetch_add((p), 1, __ATOMIC_RELAXED)
#define addn(p, n) __atomic_fetch_add((p), (n), __ATOMIC_RELAXED)
#define get(p)     __atomic_load_n((p), __ATOMIC_RELAXED)

/* Methods by the last part of their gRPC path; the last slot counts unknown ones. */
static const char *const methods[] = {"Load", "Upload", "Attach", "Destroy", "Check", "Watch", "other"};
#define N_METHODS (sizeof(methods) / sizeof(methods[0]))
/* Moat codes 0..-25 by name, for refusals. */
static const char *const codes[] = {
    "OK",           "EINVAL",     "ENOMEM",     "ENOENT",      "EBADIMAGE", "ENOENTRY",   "EABI",
    "EMEASUREMENT", "EVERSION",   "ENOBACKEND", "ENOSELECTOR", "EHANDLER",  "ENOHANDLER", "EBUSY",
    "ETIMEDOUT",    "ETRANSPORT", "EPERM",      "ELIMIT",      "ECRASHED",  "EPROTO",     "EIO",
    "EKEY",         "EINIT",      "ESANDBOX",   "ETARGET",     "ECANCELED"};
#define N_CODES ((int)(sizeof(codes) / sizeof(codes[0])))
/* The rpc server's own refusals by MOAT_RPC_REFUSED_* kind (0, nothing refused, is not shown). */
static const char *const server_refusals[MOAT_RPC_N_REFUSED] = {
    "nothing", "connection", "descriptors", "pending", "calls", "parked", "request_timeout", "thread"};
/* Entry-call latency buckets, seconds (le), and +Inf. */
static const double bounds[] = {0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 1, 10};
#define N_BOUNDS (sizeof(bounds) / sizeof(bounds[0]))

static struct {
	uint64_t calls[N_METHODS];
	uint64_t refusals[N_CODES];
	uint64_t server_refusals[MOAT_RPC_N_REFUSED]; /* by MOAT_RPC_REFUSED_* */
	uint64_t entry_buckets[2][N_BOUNDS + 1]; /* [ok, error][bucket]: counts per bucket, not cumulative */
	uint64_t entry_ns[2];
	uint64_t bytes_in, bytes_out, crashes, reloads;
} m;

void moatd_metrics_call(const char *method)
{
	const char *last = strrchr(method, '/');
	size_t i;

	last = last ? last + 1 : method;
	for (i = 0; i + 1 < N_METHODS && strcmp(methods[i], last) != 0; i++)
		;
	add1(&m.calls[i]);
}

void moatd_metrics_refusal(int code)
{
	add1(&m.refusals[code <= 0 && code > -N_CODES ? -code : 0]);
}

void moatd_metrics_server_refusal(int refusal, unsigned int count)
{
	if (refusal > 0 && refusal < MOAT_RPC_N_REFUSED)
		addn(&m.server_refusals[refusal], count);
}

static uint64_t msg_bytes(const moat_msg *msg)
{
	size_t i, n = msg ? moat_msg_count(msg) : 0, len;
	const void *p;
	uint64_t total = 0;

	for (i = 0; i < n; i++)
		if (moat_msg_item(msg, i, &p, &len) == 0)
			total += len;
	return total;
}

void moatd_metrics_entry(int code, uint64_t ns, const moat_msg *in, const moat_msg *out)
{
	int err = code < 0;
	size_t b;

	for (b = 0; b < N_BOUNDS && (double)ns / 1e9 > bounds[b]; b++)
		;
	add1(&m.entry_buckets[err][b]);
	addn(&m.entry_ns[err], ns);
	addn(&m.bytes_in, msg_bytes(in));
	if (!err)
		addn(&m.bytes_out, msg_bytes(out));
	if (code == MOAT_ECRASHED)
		add1(&m.crashes);
}

void moatd_metrics_reload(void)
{
	add1(&m.reloads);
}

typedef struct text {
	char *buf;
	size_t len, cap;
	int failed;
} text;

static void put(text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(text *t, const char *fmt, ...)
{
	va_list ap;
	char *nb;
	int n;

	if (t->failed)
		return;
	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
		va_end(ap);
		if (n < 0) {
			t->failed = 1;
			return;
		}
		if ((size_t)n < t->cap - t->len)
			break;
		if (!(nb = realloc(t->buf, t->cap * 2 + (size_t)n))) {
			t->failed = 1;
			return;
		}
		t->buf = nb;
		t->cap = t->cap * 2 + (size_t)n;
	}
	t->len += (size_t)n;
}

static void metric(text *t, const char *name, const char *type, const char *help)
{
	put(t, "# HELP moatd_%s %s\n# TYPE moatd_%s %s\n", name, help, name, type);
}

/* The entry-call latency histogram, by result. */
static void histogram(text *t)
{
	static const char *const results[] = {"ok", "error"};
	size_t r, b;

	metric(t, "entry_call_seconds", "histogram",
	       "Entry calls run in enclaves, by result, and their duration.");
	for (r = 0; r < 2; r++) {
		uint64_t cum = 0;

		for (b = 0; b <= N_BOUNDS; b++) {
			cum += get(&m.entry_buckets[r][b]);
			if (b < N_BOUNDS)
				put(t, "moatd_entry_call_seconds_bucket{result=\"%s\",le=\"%g\"} %llu\n",
				    results[r], bounds[b], (unsigned long long)cum);
			else
				put(t, "moatd_entry_call_seconds_bucket{result=\"%s\",le=\"+Inf\"} %llu\n",
				    results[r], (unsigned long long)cum);
		}
		put(t, "moatd_entry_call_seconds_sum{result=\"%s\"} %.9f\n", results[r],
		    (double)get(&m.entry_ns[r]) / 1e9);
		put(t, "moatd_entry_call_seconds_count{result=\"%s\"} %llu\n", results[r],
		    (unsigned long long)cum);
	}
}

static void limits(text *t, const moatd_config *c)
{
	metric(t, "limit", "gauge", "moatd's limits, as configured (0: none).");
	put(t, "moatd_limit{name=\"max_sessions\"} %u\n", c->max_sessions);
	put(t, "moatd_limit{name=\"max_threads_per_session\"} %u\n", c->max_threads);
	put(t, "moatd_limit{name=\"max_attached_threads\"} %u\n", c->max_attached);
	put(t, "moatd_limit{name=\"max_pending_calls\"} %u\n", c->max_pending);
	put(t, "moatd_limit{name=\"max_message_bytes\"} %zu\n", c->max_message);
	put(t, "moatd_limit{name=\"max_image_bytes\"} %zu\n", c->max_image);
	put(t, "moatd_limit{name=\"max_store_bytes\"} %zu\n", c->max_store);
	put(t, "moatd_limit{name=\"max_uploads\"} %u\n", c->max_uploads);
}

char *moatd_metrics_render(moatd *d, size_t *len)
{
	text t = {malloc(8192), 0, 8192, 0};
	unsigned int attached;
	size_t i;

	if (!t.buf)
		return NULL;
	metric(&t, "info", "gauge", "moatd's version.");
	put(&t, "moatd_info{version=\"%s\"} 1\n", moat_version());
	metric(&t, "sessions", "gauge", "Sessions loaded now (and Loads under way).");
	put(&t, "moatd_sessions %u\n", moatd_session_count(d));
	metric(&t, "attached_threads", "gauge", "Attach streams served now (host threads and leases).");
	pthread_mutex_lock(&d->lock);
	attached = d->attached;
	pthread_mutex_unlock(&d->lock);
	put(&t, "moatd_attached_threads %u\n", attached);
	metric(&t, "calls_total", "counter", "gRPC calls received, by method (Upload counts uploads).");
	for (i = 0; i < N_METHODS; i++)
		put(&t, "moatd_calls_total{method=\"%s\"} %llu\n", methods[i],
		    (unsigned long long)get(&m.calls[i]));
	metric(&t, "refusals_total", "counter", "Calls refused, by reason (the Moat error code).");
	for (i = 1; i < (size_t)N_CODES; i++)
		put(&t, "moatd_refusals_total{reason=\"%s\"} %llu\n", codes[i],
		    (unsigned long long)get(&m.refusals[i]));
	metric(&t, "server_refusals_total", "counter",
	       "Connections and calls the server refused or ended before a handler ran, by limit: connection "
	       "(--max-connections), descriptors (the fd reserve), pending (--max-pending-calls), calls, "
	       "parked (--max-health-watches), request_timeout (--request-timeout-ms), thread.");
	for (i = 1; i < MOAT_RPC_N_REFUSED; i++)
		put(&t, "moatd_server_refusals_total{reason=\"%s\"} %llu\n", server_refusals[i],
		    (unsigned long long)get(&m.server_refusals[i]));
	histogram(&t);
	metric(&t, "entry_bytes_in_total", "counter", "Bytes of items hosts sent into entry calls.");
	put(&t, "moatd_entry_bytes_in_total %llu\n", (unsigned long long)get(&m.bytes_in));
	metric(&t, "entry_bytes_out_total", "counter", "Bytes of items entry calls returned to hosts.");
	put(&t, "moatd_entry_bytes_out_total %llu\n", (unsigned long long)get(&m.bytes_out));
	metric(&t, "enclave_crashes_total", "counter", "Entry calls that ended with the enclave crashed.");
	put(&t, "moatd_enclave_crashes_total %llu\n", (unsigned long long)get(&m.crashes));
	metric(&t, "reloads_total", "counter", "SIGHUP reloads.");
	put(&t, "moatd_reloads_total %llu\n", (unsigned long long)get(&m.reloads));
	limits(&t, &d->cfg);
	if (t.failed) {
		free(t.buf);
		return NULL;
	}
	*len = t.len;
	return t.buf;
}
