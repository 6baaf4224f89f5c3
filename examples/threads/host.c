/* Host for the threads example: threads_host [N]; the enclave starts N threads through the host. */
#include <moat/moat.h>

#include <stdio.h>

int main(int argc, char **argv)
{
	moat_enclave *e = NULL;
	moat_msg *in = NULL, *out = NULL;
	const void *sum;
	size_t len;
	int rc;

	if ((rc = moat_enclave_load(&e, argc > 2 ? argv[2] : EXAMPLE_ENCLAVE, NULL)) < 0)
		goto fail;
	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_str(in, argc > 1 ? argv[1] : "4");
	if ((rc = moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out)) < 0)
		goto fail;
	moat_msg_item(out, 0, &sum, &len);
	printf("sum = %.*s\n", (int)len, (const char *)sum);
fail:
	if (rc < 0)
		fprintf(stderr, "threads_host: %s\n", moat_error_last()->message);
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
	return rc < 0;
}
