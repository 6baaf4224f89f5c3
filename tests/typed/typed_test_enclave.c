/*
 * The enclave of the typed-call tests: serves Echo (alltypes.proto) through
 * the generated table, Broken through a raw handler that answers garbage, and
 * raw selectors that make exit calls the tests inspect.
 */
#include <moat/enclave.h>

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "alltypes.moat.h"
#include "typed_test.h"

static atomic_ulong runs;

/* A deep copy by packing and unpacking: what the reply holds must come from malloc(). */
static TypedTest__V1__All *copy(const TypedTest__V1__All *a)
{
	size_t len = typed_test__v1__all__get_packed_size(a);
	uint8_t *buf = malloc(len ? len : 1);
	TypedTest__V1__All *c = NULL;

	if (buf) {
		typed_test__v1__all__pack(a, buf);
		c = typed_test__v1__all__unpack(NULL, len, buf);
	}
	free(buf);
	return c;
}

/* Move c's fields into reply (an All at its defaults), then free the shell of c. */
static int give(TypedTest__V1__All *reply, TypedTest__V1__All *c)
{
	if (!c)
		return MOAT_ENOMEM;
	*reply = *c;
	free(c);
	return 0;
}

static int same(void *p, const TypedTest__V1__All *request, TypedTest__V1__All *reply)
{
	runs++;
	return give(reply, copy(request));
}

static int via_host(void *p, const TypedTest__V1__All *request, TypedTest__V1__All *reply)
{
	TypedTest__V1__All *answer = NULL;
	int rc;

	runs++;
	if ((rc = typed_test__v1__mirror__same__call(request, &answer)) == 0)
		rc = give(reply, answer);
	return rc;
}

static int fail(void *p, const TypedTest__V1__FailRequest *request, TypedTest__V1__Empty *reply)
{
	runs++;
	return request->code;
}

static int big(void *p, const TypedTest__V1__BigRequest *request, TypedTest__V1__BigReply *reply)
{
	runs++;
	if (!(reply->data.data = malloc(request->size ? request->size : 1)))
		return MOAT_ENOMEM;
	memset(reply->data.data, 'x', request->size);
	reply->data.len = request->size;
	return 0;
}

static int host_big(void *p, const TypedTest__V1__BigRequest *request, TypedTest__V1__BigReply *reply)
{
	TypedTest__V1__BigReply *answer = NULL;
	int rc;

	runs++;
	if ((rc = typed_test__v1__mirror__big__call(request, &answer)) == 0) {
		*reply = *answer;
		free(answer);
	}
	return rc;
}

static int count(void *p, const TypedTest__V1__Empty *request, TypedTest__V1__CountReply *reply)
{
	reply->runs = runs;
	return 0;
}

static int garbage(void *p, const moat_msg *in, moat_msg *out)
{
	static const uint8_t bad[] = {0xff, 0xff, 0xff};

	return moat_msg_push(out, bad, sizeof(bad));
}

static int raw_exit(void *p, const moat_msg *in, moat_msg *out)
{
	const void *d = NULL;
	size_t len = 0;
	moat_msg *x = NULL;
	int rc;

	if ((rc = moat_msg_new(&x)) == 0 && moat_msg_item(in, 0, &d, &len) == 0)
		rc = moat_msg_push(x, d, len);
	if (rc == 0)
		rc = moat_exit_call(TYPED_TEST__V1__MIRROR__SAME__SELECTOR, x, NULL);
	moat_msg_free(x);
	return moat_msg_push_u64(out, (uint64_t)(int64_t)rc);
}

static int exit_fail(void *p, const moat_msg *in, moat_msg *out)
{
	TypedTest__V1__FailRequest f = TYPED_TEST__V1__FAIL_REQUEST__INIT;
	TypedTest__V1__Empty *e = NULL;
	uint64_t code = 0;
	int rc;

	moat_msg_item_u64(in, 0, &code);
	f.code = (int32_t)(int64_t)code;
	rc = typed_test__v1__mirror__fail__call(&f, &e);
	if (rc == 0 && !e)
		rc = MOAT_EINVAL; /* a successful call must hand back a reply */
	typed_test__v1__mirror__fail__reply_free(e);
	return moat_msg_push_u64(out, (uint64_t)(int64_t)rc);
}

static const TypedTest__V1__Echo_MoatServer echo = {NULL, same, via_host, fail, big, host_big, count};

static int init(const void *config, size_t len)
{
	int rc = typed_test__v1__echo__moat_register(&echo);

	if (rc == 0)
		rc = moat_entry_register(TYPED_TEST__V1__BROKEN__GARBAGE__SELECTOR, garbage, NULL);
	if (rc == 0)
		rc = moat_entry_register(TT_RAW_EXIT, raw_exit, NULL);
	if (rc == 0)
		rc = moat_entry_register(TT_EXIT_FAIL, exit_fail, NULL);
	return rc;
}

MOAT_ENCLAVE(init)
