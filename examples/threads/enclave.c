/*
 * threads: the enclave starts its own threads. Each moat_thread_start() asks
 * the host for a thread that enters the enclave through the reserved donate
 * selector, on every backend alike. RUN: decimal thread count in item 0 ->
 * sum of 1..1000000 computed in slices, one slice per thread, and the number
 * of threads started, both as decimal strings.
 */
#include <moat/enclave.h>

#include <stdio.h>
#include <stdlib.h>

#define THREADS_MAX 64
#define THREADS_N   1000000ull

typedef struct slice {
	unsigned long long from, to, sum;
	int index;
} slice;

static void work(void *arg)
{
	slice *s = arg;
	unsigned long long i;

	for (i = s->from; i <= s->to; i++)
		s->sum += i;
	moat_host_log("threads enclave: worker %d summed %llu..%llu", s->index, s->from, s->to);
}

static int run(void *payload, const moat_msg *in, moat_msg *out)
{
	slice slices[THREADS_MAX] = {{0}};
	moat_thread ids[THREADS_MAX];
	unsigned long long total = 0;
	char *arg = NULL, buf[64];
	int i, n = 4, started = 0, rc = 0;

	if (moat_msg_count(in) > 0 && moat_msg_item_strdup(in, 0, &arg) == 0)
		n = (int)strtol(arg, NULL, 10);
	free(arg);
	if (n < 1 || n > THREADS_MAX)
		return MOAT_EINVAL;
	for (i = 0; i < n; i++) {
		slices[i].index = i;
		slices[i].from = THREADS_N * (unsigned long long)i / (unsigned long long)n + 1;
		slices[i].to = THREADS_N * (unsigned long long)(i + 1) / (unsigned long long)n;
		if ((rc = moat_thread_start(&ids[i], work, &slices[i])) < 0)
			break;
		started++;
	}
	for (i = 0; i < started; i++) {
		int joined = moat_thread_join(ids[i]);

		if (joined < 0 && rc == 0)
			rc = joined; /* the host could not give us that thread */
		total += slices[i].sum;
	}
	if (rc < 0)
		return rc;
	/* Text items, so `moat run` prints them readably: the sum, then the thread count. */
	snprintf(buf, sizeof(buf), "%llu", total);
	rc = moat_msg_push_str(out, buf);
	if (rc == 0) {
		snprintf(buf, sizeof(buf), "%d", started);
		rc = moat_msg_push_str(out, buf);
	}
	return rc;
}

static int init(const void *config, size_t len)
{
	return moat_entry_register(MOAT_SELECTOR_RUN, run, NULL);
}

MOAT_ENCLAVE(init)
