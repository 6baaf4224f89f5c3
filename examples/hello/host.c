/* Host for the hello enclave: hello_host [NAME] [ENCLAVE.so]; MOAT_BACKEND picks the backend. */
#include <moat/moat.h>

#include <stdio.h>

int main(int argc, char **argv)
{
	moat_enclave *e = NULL;
	moat_msg *in = NULL, *out = NULL;
	const void *reply;
	size_t len;
	int rc;

	if ((rc = moat_enclave_load(&e, argc > 2 ? argv[2] : EXAMPLE_ENCLAVE, NULL)) < 0)
		goto fail;
	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_str(in, argc > 1 ? argv[1] : "world");
	if ((rc = moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out)) < 0)
		goto fail;
	moat_msg_item(out, 0, &reply, &len);
	printf("%.*s\n", (int)len, (const char *)reply);
fail:
	if (rc < 0)
		fprintf(stderr, "hello_host: %s (%s)\n", moat_error_last()->message, moat_strerror(rc));
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
	return rc < 0;
}
