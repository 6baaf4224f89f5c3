/*
 * Tracing (MOAT_LOAD_TRACE, $MOAT_TRACE=1): one line per entry and exit
 * call through libmoat's log (moat_log_set) at debug level: the backend,
 * the direction and selector, the items and bytes each way, the result and
 * how long the call took (for an entry call, including the exit calls it
 * made).
 */
#include <stdio.h>
#include <time.h>

#include "core/internal.h"

int64_t moat__trace_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Items from index from on, and their bytes. */
static size_t bytes_of(const moat_msg *m, size_t from, size_t *items)
{
	size_t i, n = 0;

	*items = m && m->count > from ? m->count - from : 0;
	for (i = from; m && i < m->count; i++)
		n += m->items[i].len;
	return n;
}

void moat__trace(const char *backend, const char *kind, uint64_t selector, const moat_msg *in,
                 const moat_msg *out, size_t out_before, int rc, int64_t start_ns)
{
	size_t in_items, out_items, in_bytes = bytes_of(in, 0, &in_items);
	size_t out_bytes = rc == 0 ? bytes_of(out, out_before, &out_items) : (out_items = 0);
	double us = (double)(moat__trace_now() - start_ns) / 1000.0;
	char result[64];

	if (rc == 0)
		snprintf(result, sizeof(result), "0");
	else
		snprintf(result, sizeof(result), "%d (%s)", rc, moat_strerror(rc));
	moat__log(MOAT_LOG_DEBUG,
	          "trace %s: %s call %llu: in %zu item%s %zu B, out %zu item%s %zu B, result %s, %.1f us",
	          backend, kind, (unsigned long long)selector, in_items, in_items == 1 ? "" : "s", in_bytes,
	          out_items, out_items == 1 ? "" : "s", out_bytes, result, us);
}
