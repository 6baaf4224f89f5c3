/* Host for the kv example: stores, reads and deletes keys that live only in the enclave. */
#include <moat/moat.h>

#include <stdio.h>

#include "kv.h"

static int call(moat_enclave *e, uint64_t sel, moat_msg *in, moat_msg *out)
{
	int rc = moat_enclave_call(e, sel, in, out);

	moat_msg_reset(in);
	return rc;
}

int main(int argc, char **argv)
{
	moat_enclave *e = NULL;
	moat_msg *in = NULL, *out = NULL;
	const void *v;
	size_t vl;
	int rc;

	if ((rc = moat_enclave_load(&e, argc > 1 ? argv[1] : EXAMPLE_ENCLAVE, NULL)) < 0)
		goto fail;
	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_str(in, "colour");
	moat_msg_push_str(in, "blue");
	if ((rc = call(e, KV_PUT, in, out)) < 0)
		goto fail;
	moat_msg_push_str(in, "colour");
	if ((rc = call(e, KV_GET, in, out)) < 0)
		goto fail;
	moat_msg_item(out, 0, &v, &vl);
	printf("colour = %.*s\n", (int)vl, (const char *)v);
	moat_msg_push_str(in, "colour");
	if ((rc = call(e, KV_DEL, in, out)) < 0)
		goto fail;
	moat_msg_push_str(in, "colour");
	rc = call(e, KV_GET, in, out);
	printf("after delete: %s (enclave code %lld)\n", rc == MOAT_EHANDLER ? "not found" : "still there",
	       (long long)moat_error_last()->enclave_code);
	rc = 0;
fail:
	if (rc < 0)
		fprintf(stderr, "kv_host: %s\n", moat_error_last()->message);
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
	return rc < 0;
}
