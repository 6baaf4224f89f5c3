/*
 * Host for the fib example: fib_host [N] [ENCLAVE.so] prints F(N), answering
 * the enclave's exit calls (Host.Fib) by calling it again (Enclave.Fib).
 */
#include <moat/moat.h>

#include <stdio.h>
#include <stdlib.h>

#include "fib.moat.h"

static int answer(void *payload, const Fib__V1__FibRequest *request, Fib__V1__FibReply *reply)
{
	Fib__V1__FibReply *sub = NULL;
	int rc;

	/* Nesting: the exit call's function makes an entry call on the same enclave and thread. */
	if ((rc = fib__v1__enclave__fib__call(payload, request, &sub)) == 0) {
		reply->value = sub->value;
		reply->previous = sub->previous;
	}
	fib__v1__enclave__fib__reply_free(sub);
	return rc;
}

int main(int argc, char **argv)
{
	Fib__V1__Host_MoatServer host = {NULL, answer};
	Fib__V1__FibRequest request = FIB__V1__FIB_REQUEST__INIT;
	Fib__V1__FibReply *reply = NULL;
	moat_enclave *e = NULL;
	int rc;

	request.n = argc > 1 ? strtoull(argv[1], NULL, 10) : 50;
	if ((rc = moat_enclave_load(&e, argc > 2 ? argv[2] : EXAMPLE_ENCLAVE, NULL)) < 0)
		goto fail;
	host.payload = e;
	if ((rc = fib__v1__host__moat_register(e, &host)) < 0 ||
	    (rc = fib__v1__enclave__fib__call(e, &request, &reply)) < 0)
		goto fail;
	printf("fib(%llu) = %llu\n", (unsigned long long)request.n, (unsigned long long)reply->value);
fail:
	if (rc < 0)
		fprintf(stderr, "fib_host: %s\n", moat_error_last()->message);
	fib__v1__enclave__fib__reply_free(reply);
	moat_enclave_destroy(e);
	return rc < 0;
}
