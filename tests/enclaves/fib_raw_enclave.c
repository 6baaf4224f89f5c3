/* fib_raw_enclave: the fib example in raw messages (a test fixture; the example itself is typed now). */
#include <moat/enclave.h>

#include <stdio.h>
#include <stdlib.h>

#include "fib_raw.h"

static int fib(void *payload, const moat_msg *in, moat_msg *out)
{
	moat_msg *sub_in = NULL, *sub_out = NULL;
	uint64_t n, a = 0, b = 0;
	int rc;

	if (moat_msg_item_u64(in, 0, &n) < 0)
		return MOAT_EINVAL;
	if (n <= 1) {
		moat_msg_push_u64(out, n);
		return moat_msg_push_u64(out, 0);
	}
	if ((rc = moat_msg_new(&sub_in)) < 0 || (rc = moat_msg_new(&sub_out)) < 0)
		goto out;
	moat_msg_push_u64(sub_in, n - 1);
	if ((rc = moat_exit_call(FIB_EXIT, sub_in, sub_out)) < 0)
		goto out;
	if ((rc = moat_msg_item_u64(sub_out, 0, &a)) < 0 || (rc = moat_msg_item_u64(sub_out, 1, &b)) < 0)
		goto out;
	moat_msg_push_u64(out, a + b);
	rc = moat_msg_push_u64(out, a);
out:
	moat_msg_free(sub_in);
	moat_msg_free(sub_out);
	return rc;
}

/* RUN (for `moat run`, which has no FIB_EXIT handler): decimal n in item 0 -> F(n), computed in place. */
static int run(void *payload, const moat_msg *in, moat_msg *out)
{
	unsigned long long n = 10, a = 0, b = 1, i;
	char *s = NULL, buf[32];

	if (moat_msg_count(in) > 0 && moat_msg_item_strdup(in, 0, &s) == 0)
		n = strtoull(s, NULL, 10);
	free(s);
	for (i = 0; i < n; i++) {
		unsigned long long t = a + b;

		a = b;
		b = t;
	}
	snprintf(buf, sizeof(buf), "%llu", a);
	return moat_msg_push_str(out, buf);
}

static int init(const void *config, size_t len)
{
	int rc = moat_entry_register(FIB_ENTRY, fib, NULL);

	return rc ? rc : moat_entry_register(MOAT_SELECTOR_RUN, run, NULL);
}

MOAT_ENCLAVE(init)
