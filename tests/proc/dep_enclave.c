/*
 * An enclave that needs a library found only through its own run path (the
 * build tree): sim loads it, the proc runner cannot, and the load says which.
 */
#include <moat/enclave.h>

int moat_test_dep_answer(void);

static int answer(void *p, const moat_msg *in, moat_msg *out)
{
	return moat_msg_push_u64(out, (uint64_t)moat_test_dep_answer());
}

static int init(const void *cfg, size_t len)
{
	return moat_entry_register(MOAT_SELECTOR_USER, answer, NULL);
}

MOAT_ENCLAVE(init)
