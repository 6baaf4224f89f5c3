/* host ENCLAVE.so NAME: call the enclave's run selector with NAME and print the reply. */
#include <moat/moat.h>

#include <stdio.h>

int main(int argc, char **argv)
{
	moat_enclave *e = NULL;
	moat_msg *in = NULL, *out = NULL;
	const void *reply;
	size_t len;
	int rc;

	if (argc != 3) {
		fprintf(stderr, "usage: host ENCLAVE.so NAME\n");
		return 2;
	}
	if ((rc = moat_enclave_load(&e, argv[1], NULL)) < 0)
		goto out;
	if ((rc = moat_msg_new(&in)) < 0 || (rc = moat_msg_new(&out)) < 0 ||
	    (rc = moat_msg_push_str(in, argv[2])) < 0)
		goto out;
	if ((rc = moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out)) < 0 ||
	    (rc = moat_msg_item(out, 0, &reply, &len)) < 0)
		goto out;
	printf("%.*s\n", (int)len, (const char *)reply);
out:
	if (rc < 0)
		fprintf(stderr, "host: %s (%s)\n", moat_error_last()->message, moat_strerror(rc));
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
	return rc < 0;
}
