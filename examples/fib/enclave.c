/*
 * fib: recursive Fibonacci that bounces between enclave and host at every
 * level, through the calls generated from fib.proto: Enclave.Fib for n asks
 * the host's Host.Fib for n - 1 (an exit call), which calls Enclave.Fib again.
 */
#include <moat/enclave.h>

#include "fib.moat.h"

static int fib(void *payload, const Fib__V1__FibRequest *request, Fib__V1__FibReply *reply)
{
	Fib__V1__FibRequest below = FIB__V1__FIB_REQUEST__INIT;
	Fib__V1__FibReply *sub = NULL;
	int rc;

	if (request->n <= 1) {
		reply->value = request->n;
		return 0;
	}
	below.n = request->n - 1;
	if ((rc = fib__v1__host__fib__call(&below, &sub)) == 0) {
		reply->value = sub->value + sub->previous;
		reply->previous = sub->value;
	}
	fib__v1__host__fib__reply_free(sub);
	return rc;
}

static const Fib__V1__Enclave_MoatServer server = {NULL, fib};

static int init(const void *config, size_t len)
{
	return fib__v1__enclave__moat_register(&server);
}

MOAT_ENCLAVE(init)
