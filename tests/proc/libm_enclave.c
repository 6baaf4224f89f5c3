/* An enclave that links libm: the runner has to have it loaded before the sandbox. */
#include <moat/enclave.h>

#include <math.h>
#include <stdio.h>

static int cube_root(void *p, const moat_msg *in, moat_msg *out)
{
	uint64_t n;
	char buf[32];

	if (moat_msg_item_u64(in, 0, &n) < 0)
		return MOAT_EINVAL;
	snprintf(buf, sizeof(buf), "%.0f", cbrt((double)n));
	return moat_msg_push_str(out, buf);
}

static int init(const void *cfg, size_t len)
{
	return moat_entry_register(MOAT_SELECTOR_USER, cube_root, NULL);
}

MOAT_ENCLAVE(init)
