/*
 * An enclave that links a system library the runner does not load itself
 * (elfutils' libelf): the runner loads it before the sandbox because the
 * image names it (DT_NEEDED).
 */
#include <moat/enclave.h>

#include <libelf.h>

static int version(void *p, const moat_msg *in, moat_msg *out)
{
	return moat_msg_push_u64(out, elf_version(EV_CURRENT));
}

static int init(const void *cfg, size_t len)
{
	return moat_entry_register(MOAT_SELECTOR_USER, version, NULL);
}

MOAT_ENCLAVE(init)
