/* Host for the fib example: fib_host [N] answers the enclave's exit calls by calling it again. */
#include <moat/moat.h>

#include <stdio.h>
#include <stdlib.h>

#include "fib.h"

static int fib_exit(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	/* Nesting: the exit handler makes an entry call on the same enclave and thread. */
	return moat_enclave_call(payload, FIB_ENTRY, in, out);
}

int main(int argc, char **argv)
{
	moat_enclave *e = NULL;
	moat_msg *in = NULL, *out = NULL;
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 50, f = 0;
	int rc;

	if ((rc = moat_enclave_load(&e, argc > 2 ? argv[2] : EXAMPLE_ENCLAVE, NULL)) < 0)
		goto fail;
	moat_enclave_set_exit_handler(e, FIB_EXIT, fib_exit, e);
	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_u64(in, n);
	if ((rc = moat_enclave_call(e, FIB_ENTRY, in, out)) < 0)
		goto fail;
	moat_msg_item_u64(out, 0, &f);
	printf("fib(%llu) = %llu\n", (unsigned long long)n, (unsigned long long)f);
fail:
	if (rc < 0)
		fprintf(stderr, "fib_host: %s\n", moat_error_last()->message);
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
	return rc < 0;
}
