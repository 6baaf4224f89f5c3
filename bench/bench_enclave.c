/*
 * The benchmark enclave: the three handlers moat-bench times on every
 * backend. They do as little as they can so that the numbers are the cost
 * of Moat's call path, not of the work.
 */
#include <moat/enclave.h>

#include "bench_selectors.h"

/* An entry call that does nothing: the floor of a backend's call cost. */
static int bench_empty(void *payload, const moat_msg *in, moat_msg *out)
{
	return 0;
}

/* Return every input item, copied, as a handler that builds a reply would. */
static int bench_echo(void *payload, const moat_msg *in, moat_msg *out)
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

/* Pass the input items to one exit call and return the host's reply items. */
static int bench_exit(void *payload, const moat_msg *in, moat_msg *out)
{
	return moat_exit_call(BENCH_EXIT_ECHO, in, out);
}

static int bench_init(const void *config, size_t len)
{
	int rc;

	if ((rc = moat_entry_register(BENCH_SEL_EMPTY, bench_empty, NULL)) < 0 ||
	    (rc = moat_entry_register(BENCH_SEL_ECHO, bench_echo, NULL)) < 0 ||
	    (rc = moat_entry_register(BENCH_SEL_EXIT, bench_exit, NULL)) < 0)
		return rc;
	return 0;
}

MOAT_ENCLAVE(bench_init)
