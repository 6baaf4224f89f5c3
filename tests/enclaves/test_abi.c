/*
 * An image that exports the entry symbol by hand with an ABI version no
 * loader speaks (999). Loading it must fail with MOAT_EABI before any of its
 * functions is called; each of them fails loudly if it is.
 */
#include <moat/enclave.h>

#include <stdlib.h>

static int bad_start(const struct moat_runtime *rt, const void *config, size_t config_len)
{
	abort();
}

static int bad_call(uint64_t selector, const moat_msg *in, moat_msg *out, int64_t *handler_code)
{
	abort();
}

static void bad_stop(void)
{
	abort();
}

__attribute__((visibility("default"))) const struct moat_enclave_entry moat_enclave_entry = {
    999, sizeof(struct moat_enclave_entry), bad_start, bad_call, bad_stop};
