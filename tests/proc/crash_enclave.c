/* An enclave that faults two calls below its run handler: crash reports from the command line. */
#include <moat/enclave.h>

/*
 * An unmapped address the compiler cannot see (volatile), so the store stays;
 * not NULL, which UBSan builds would report before the fault.
 */
static int *volatile nowhere = (int *)8;

/* Each call keeps its frame (no inlining, cloning or tail call), so the backtrace is the same at any -O. */
static void __attribute__((noinline, noclone)) store(int *to, int value)
{
	*to = value;
}

static void __attribute__((noinline, noclone)) remember(int value)
{
	store(nowhere, value);
	__asm__ volatile("");
}

static int run(void *p, const moat_msg *in, moat_msg *out)
{
	remember(42);
	return 0;
}

static int init(const void *cfg, size_t len)
{
	return moat_entry_register(MOAT_SELECTOR_RUN, run, NULL);
}

MOAT_ENCLAVE(init)
