/*
 * Host for the kv example: stores, reads and deletes a key that lives only in
 * the enclave, through the calls generated from kv.proto.
 */
#include <moat/moat.h>

#include <stdio.h>

#include "kv.moat.h"

int main(int argc, char **argv)
{
	Kv__V1__PutRequest put = KV__V1__PUT_REQUEST__INIT;
	Kv__V1__GetRequest get = KV__V1__GET_REQUEST__INIT;
	Kv__V1__DelRequest del = KV__V1__DEL_REQUEST__INIT;
	Kv__V1__GetReply *got = NULL;
	moat_enclave *e = NULL;
	int rc;

	if ((rc = moat_enclave_load(&e, argc > 1 ? argv[1] : EXAMPLE_ENCLAVE, NULL)) < 0)
		goto fail;
	put.key = get.key = del.key = "colour";
	put.value.data = (uint8_t *)"blue";
	put.value.len = 4;
	/* A NULL reply: Put's (empty) reply is not wanted. */
	if ((rc = kv__v1__store__put__call(e, &put, NULL)) < 0 ||
	    (rc = kv__v1__store__get__call(e, &get, &got)) < 0)
		goto fail;
	printf("colour = %.*s\n", (int)got->value.len, (const char *)got->value.data);
	if ((rc = kv__v1__store__del__call(e, &del, NULL)) < 0)
		goto fail;
	/* The enclave's Get fails with NOT_FOUND now: MOAT_EHANDLER, the code in moat_error_last(). */
	rc = kv__v1__store__get__call(e, &get, NULL);
	printf("after delete: %s (enclave code %lld)\n",
	       rc == MOAT_EHANDLER && moat_error_last()->enclave_code == KV__V1__ERROR__NOT_FOUND
	           ? "not found"
	           : "still there",
	       (long long)moat_error_last()->enclave_code);
	rc = 0;
fail:
	if (rc < 0)
		fprintf(stderr, "kv_host: %s\n", moat_error_last()->message);
	kv__v1__store__get__reply_free(got);
	moat_enclave_destroy(e);
	return rc < 0;
}
