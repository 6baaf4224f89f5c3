/*
 * Typed calls generated from alltypes.proto, on the backend in $MOAT_BACKEND:
 * every field type there and back (entry calls and exit calls), defaults,
 * failing functions on both sides, messages that do not decode (refused with
 * MOAT_EPROTO before any function runs), selectors. `test_typed limit`
 * instead runs a reply larger than a moatd's --max-message-bytes.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "alltypes.moat.h"
#include "moat_test.h"
#include "moatd_helper.h"
#include "typed_test.h"

static moat_enclave *enclave;
static int host_runs;

static int mirror_same(void *p, const TypedTest__V1__All *request, TypedTest__V1__All *reply)
{
	size_t len = typed_test__v1__all__get_packed_size(request);
	uint8_t *buf = malloc(len ? len : 1);
	TypedTest__V1__All *c;

	host_runs++;
	assert_non_null(buf);
	typed_test__v1__all__pack(request, buf);
	c = typed_test__v1__all__unpack(NULL, len, buf);
	free(buf);
	assert_non_null(c);
	*reply = *c;
	free(c);
	return 0;
}

static int mirror_fail(void *p, const TypedTest__V1__FailRequest *request, TypedTest__V1__Empty *reply)
{
	host_runs++;
	return request->code;
}

static int mirror_big(void *p, const TypedTest__V1__BigRequest *request, TypedTest__V1__BigReply *reply)
{
	host_runs++;
	reply->data.data = malloc(request->size + 1);
	assert_non_null(reply->data.data);
	memset(reply->data.data, 'y', request->size);
	reply->data.len = request->size;
	return 0;
}

static TypedTest__V1__Mirror_MoatServer mirror = {NULL, mirror_same, mirror_fail, mirror_big};

static int setup(void **state)
{
	enclave = test_load(TEST_ENCLAVE("typed_test_enclave"), NULL);
	return 0;
}

static int teardown(void **state)
{
	moat_enclave_destroy(enclave);
	enclave = NULL;
	return 0;
}

/* Fill a with a value in every field; which picks the oneof member (1, 2, 3). */
typedef struct all_store {
	TypedTest__V1__All__Inner inner, child, r_inner[2], o_inner;
	TypedTest__V1__All__Inner *r_inner_p[2];
	TypedTest__V1__All__MCountsEntry counts[2];
	TypedTest__V1__All__MCountsEntry *counts_p[2];
	int32_t values[3];
	int64_t r_int64[3];
	double r_double[2];
	char *r_string[3];
	ProtobufCBinaryData r_bytes[2];
	TypedTest__V1__Colour r_enum[2];
	uint8_t bytes[300];
} all_store;

static void fill_inner(all_store *s, TypedTest__V1__All *a)
{
	static const TypedTest__V1__All__Inner inner_init = TYPED_TEST__V1__ALL__INNER__INIT;
	static const TypedTest__V1__All__MCountsEntry entry_init = TYPED_TEST__V1__ALL__MCOUNTS_ENTRY__INIT;
	size_t i;

	s->inner = s->child = s->r_inner[0] = s->r_inner[1] = s->o_inner = inner_init;
	s->values[0] = -1;
	s->values[1] = 0;
	s->values[2] = INT32_MAX;
	s->child.label = "child";
	s->inner.label = "inner";
	s->inner.n_values = 3;
	s->inner.values = s->values;
	s->inner.child = &s->child;
	s->r_inner[0].label = "r0";
	s->r_inner[1].label = "";
	s->o_inner.label = "oneof inner";
	for (i = 0; i < 2; i++) {
		s->r_inner_p[i] = &s->r_inner[i];
		s->counts[i] = entry_init;
		s->counts_p[i] = &s->counts[i];
	}
	s->counts[0].key = "apples";
	s->counts[0].value = 3;
	s->counts[1].key = "pears";
	s->counts[1].value = -4;
	a->f_inner = &s->inner;
	a->n_r_inner = 2;
	a->r_inner = s->r_inner_p;
	a->n_m_counts = 2;
	a->m_counts = s->counts_p;
}

static void fill(all_store *s, TypedTest__V1__All *a, int which)
{
	size_t i;

	typed_test__v1__all__init(a);
	memset(s, 0, sizeof(*s));
	for (i = 0; i < sizeof(s->bytes); i++)
		s->bytes[i] = (uint8_t)i; /* zeros and high bytes included */
	a->f_double = -1.5e300;
	a->f_float = 3.25f;
	a->f_int32 = INT32_MIN;
	a->f_int64 = INT64_MIN;
	a->f_uint32 = UINT32_MAX;
	a->f_uint64 = UINT64_MAX;
	a->f_sint32 = -123456;
	a->f_sint64 = -1234567890123ll;
	a->f_fixed32 = 0xdeadbeef;
	a->f_fixed64 = 0x0123456789abcdefull;
	a->f_sfixed32 = -7;
	a->f_sfixed64 = -8;
	a->f_bool = 1;
	a->f_string = "h\xc3\xa9llo, w\xc3\xb6rld";
	a->f_bytes.data = s->bytes;
	a->f_bytes.len = sizeof(s->bytes);
	a->f_enum = TYPED_TEST__V1__COLOUR__COLOUR_BLUE;
	s->r_int64[0] = -1;
	s->r_int64[1] = 0;
	s->r_int64[2] = INT64_MAX;
	a->n_r_int64 = 3;
	a->r_int64 = s->r_int64;
	s->r_double[0] = 0.5;
	s->r_double[1] = -0.0;
	a->n_r_double = 2;
	a->r_double = s->r_double;
	s->r_string[0] = "a";
	s->r_string[1] = "";
	s->r_string[2] = "ccc";
	a->n_r_string = 3;
	a->r_string = s->r_string;
	s->r_bytes[0].data = s->bytes;
	s->r_bytes[0].len = 1;
	a->n_r_bytes = 2;
	a->r_bytes = s->r_bytes;
	s->r_enum[0] = TYPED_TEST__V1__COLOUR__COLOUR_RED;
	a->n_r_enum = 2;
	a->r_enum = s->r_enum;
	fill_inner(s, a);
	if (which == 1) {
		a->choice_case = TYPED_TEST__V1__ALL__CHOICE_O_TEXT;
		a->o_text = "one of them";
	} else if (which == 2) {
		a->choice_case = TYPED_TEST__V1__ALL__CHOICE_O_NUMBER;
		a->o_number = 42;
	} else {
		a->choice_case = TYPED_TEST__V1__ALL__CHOICE_O_INNER;
		a->o_inner = &s->o_inner;
	}
}

/* Every field of b equals a's: same encoding, plus a few read directly. */
static void assert_same(const TypedTest__V1__All *a, const TypedTest__V1__All *b)
{
	size_t la = typed_test__v1__all__get_packed_size(a), lb = typed_test__v1__all__get_packed_size(b);
	uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);

	assert_non_null(b);
	assert_true(pa && pb);
	assert_int_equal(la, lb);
	typed_test__v1__all__pack(a, pa);
	typed_test__v1__all__pack(b, pb);
	assert_memory_equal(pa, pb, la);
	free(pa);
	free(pb);
	assert_true(b->f_double == a->f_double);
	assert_int_equal(b->f_sint64, a->f_sint64);
	assert_int_equal(b->f_uint64, UINT64_MAX);
	assert_string_equal(b->f_string, a->f_string);
	assert_int_equal(b->f_bytes.len, a->f_bytes.len);
	assert_memory_equal(b->f_bytes.data, a->f_bytes.data, a->f_bytes.len);
	assert_string_equal(b->f_inner->child->label, "child");
	assert_int_equal(b->n_m_counts, 2);
	assert_int_equal(b->m_counts[1]->value, -4);
	assert_int_equal(b->choice_case, a->choice_case);
}

static void test_round_trip(void **state)
{
	int which;

	for (which = 1; which <= 3; which++) {
		TypedTest__V1__All a, *b = NULL, *c = NULL;
		all_store s;

		fill(&s, &a, which);
		assert_moat_ok(typed_test__v1__echo__same__call(enclave, &a, &b));
		assert_same(&a, b);
		/* Through the host and back: an entry call that makes a typed exit call. */
		assert_moat_ok(typed_test__v1__mirror__moat_register(enclave, &mirror));
		assert_moat_ok(typed_test__v1__echo__via_host__call(enclave, &a, &c));
		assert_same(&a, c);
		typed_test__v1__echo__same__reply_free(b);
		typed_test__v1__echo__via_host__reply_free(c);
	}
}

static void test_defaults(void **state)
{
	TypedTest__V1__All *b = NULL;

	/* NULL request: every field at its default; NULL reply: not wanted. */
	assert_moat_ok(typed_test__v1__echo__same__call(enclave, NULL, &b));
	assert_non_null(b);
	assert_int_equal(b->f_int64, 0);
	assert_string_equal(b->f_string, "");
	assert_null(b->f_inner);
	assert_int_equal(b->n_r_string, 0);
	assert_int_equal(b->choice_case, TYPED_TEST__V1__ALL__CHOICE__NOT_SET);
	typed_test__v1__echo__same__reply_free(b);
	assert_moat_ok(typed_test__v1__echo__same__call(enclave, NULL, NULL));
}

static uint64_t runs(void)
{
	TypedTest__V1__CountReply *r = NULL;
	uint64_t n;

	assert_moat_ok(typed_test__v1__echo__runs__call(enclave, NULL, &r));
	n = r->runs;
	typed_test__v1__echo__runs__reply_free(r);
	return n;
}

static void test_function_fails(void **state)
{
	TypedTest__V1__FailRequest f = TYPED_TEST__V1__FAIL_REQUEST__INIT;
	TypedTest__V1__Empty *e = (TypedTest__V1__Empty *)&f; /* must come back NULL */

	f.code = 7;
	assert_int_equal(typed_test__v1__echo__fail__call(enclave, &f, &e), MOAT_EHANDLER);
	assert_null(e);
	assert_int_equal(moat_error_last()->enclave_code, 7);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	/* The enclave is fine afterwards. */
	assert_moat_ok(typed_test__v1__echo__same__call(enclave, NULL, NULL));
}

static uint64_t raw_u64(uint64_t selector, uint64_t arg)
{
	moat_msg *in = test_msg(), *out = test_msg();
	uint64_t v;

	assert_int_equal(moat_msg_push_u64(in, arg), 0);
	assert_moat_ok(moat_enclave_call(enclave, selector, in, out));
	v = test_item_u64(out, 0);
	moat_msg_free(in);
	moat_msg_free(out);
	return v;
}

static void test_exit_function_fails(void **state)
{
	/* No Mirror on the host yet: the enclave's stub gets MOAT_ENOHANDLER. */
	assert_int_equal((int64_t)raw_u64(TT_EXIT_FAIL, 0), MOAT_ENOHANDLER);
	assert_moat_ok(typed_test__v1__mirror__moat_register(enclave, &mirror));
	host_runs = 0;
	assert_int_equal((int64_t)raw_u64(TT_EXIT_FAIL, (uint64_t)-42), -42);
	assert_int_equal((int64_t)raw_u64(TT_EXIT_FAIL, 0), 0);
	assert_int_equal(host_runs, 2);
}

/* Raw calls to a typed selector with items no function should see. */
static void test_request_not_decoded(void **state)
{
	static const uint8_t garbage[] = {0x0a, 0x80}; /* field 1, a length that never ends */
	moat_msg *in = test_msg(), *out = test_msg();
	uint64_t before = runs();
	int round;

	for (round = 0; round < 3; round++) {
		moat_msg_reset(in);
		if (round == 0)
			assert_int_equal(moat_msg_push(in, garbage, sizeof(garbage)), 0);
		if (round == 2) { /* two messages where one belongs */
			assert_int_equal(moat_msg_push(in, NULL, 0), 0);
			assert_int_equal(moat_msg_push(in, NULL, 0), 0);
		}
		assert_int_equal(moat_enclave_call(enclave, TYPED_TEST__V1__ECHO__SAME__SELECTOR, in, out),
		                 MOAT_EHANDLER);
		assert_int_equal(moat_error_last()->enclave_code, MOAT_EPROTO);
		assert_int_equal(moat_msg_count(out), 0);
	}
	/* None of them reached Echo's functions. */
	assert_int_equal(runs(), before);
	moat_msg_free(in);
	moat_msg_free(out);
}

static void test_reply_not_decoded(void **state)
{
	TypedTest__V1__All *b = (TypedTest__V1__All *)&b;

	assert_int_equal(typed_test__v1__broken__garbage__call(enclave, NULL, &b), MOAT_EPROTO);
	assert_null(b);
}

static void test_exit_request_not_decoded(void **state)
{
	moat_msg *in = test_msg(), *out = test_msg();
	static const uint8_t garbage[] = {0xff};

	assert_moat_ok(typed_test__v1__mirror__moat_register(enclave, &mirror));
	host_runs = 0;
	assert_int_equal(moat_msg_push(in, garbage, sizeof(garbage)), 0);
	assert_moat_ok(moat_enclave_call(enclave, TT_RAW_EXIT, in, out));
	assert_int_equal((int64_t)test_item_u64(out, 0), MOAT_EPROTO);
	assert_int_equal(host_runs, 0);
	moat_msg_free(in);
	moat_msg_free(out);
}

static uint64_t derived(const char *full)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *full; full++)
		h = (h ^ (uint8_t)*full) * 0x100000001b3ull;
	return ((uint64_t)1 << 52) | (h & (((uint64_t)1 << 52) - 1));
}

static void test_selectors(void **state)
{
	/* The derivation documented in docs/TYPED-CALLS.md, and an explicit selector. */
	assert_int_equal(TYPED_TEST__V1__ECHO__SAME__SELECTOR, derived("typed_test.v1.Echo/Same"));
	assert_int_equal(TYPED_TEST__V1__ECHO__VIA_HOST__SELECTOR, derived("typed_test.v1.Echo/ViaHost"));
	assert_int_equal(TYPED_TEST__V1__MIRROR__SAME__SELECTOR, derived("typed_test.v1.Mirror/Same"));
	assert_int_equal(TYPED_TEST__V1__ECHO__RUNS__SELECTOR, 5000);
	assert_true(TYPED_TEST__V1__BROKEN__GARBAGE__SELECTOR >= MOAT_SELECTOR_USER);
}

static void test_big_reply(void **state)
{
	TypedTest__V1__BigRequest q = TYPED_TEST__V1__BIG_REQUEST__INIT;
	TypedTest__V1__BigReply *r = NULL;

	q.size = 1u << 20;
	assert_moat_ok(typed_test__v1__echo__big__call(enclave, &q, &r));
	assert_int_equal(r->data.len, q.size);
	assert_int_equal(r->data.data[q.size - 1], 'x');
	typed_test__v1__echo__big__reply_free(r);
}

/*
 * moatd's --max-message-bytes bounds what the target receives: a request, or
 * the host's reply to an exit call. Over it, the call fails with MOAT_ELIMIT
 * (for an exit call's reply, in the enclave's stub) and the session goes on.
 */
static void test_reply_over_limit(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	TypedTest__V1__BigRequest q = TYPED_TEST__V1__BIG_REQUEST__INIT;
	TypedTest__V1__BigReply *r = (TypedTest__V1__BigReply *)&q;
	TypedTest__V1__All a = TYPED_TEST__V1__ALL__INIT;
	static uint8_t big[100000];
	moat_enclave *e;
	test_moatd m;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-message-bytes", "65536", NULL),
	                 0);
	o.backend = m.uri;
	e = test_load(TEST_ENCLAVE("typed_test_enclave"), &o);
	assert_moat_ok(typed_test__v1__mirror__moat_register(e, &mirror));
	/* The host's reply to Mirror.Big is over the limit: the enclave's stub gets MOAT_ELIMIT. */
	q.size = 100000;
	assert_int_equal(typed_test__v1__echo__host_big__call(e, &q, &r), MOAT_EHANDLER);
	assert_null(r);
	assert_int_equal(moat_error_last()->enclave_code, MOAT_ELIMIT);
	/* A request over the limit: refused by the target. */
	a.f_bytes.data = big;
	a.f_bytes.len = sizeof(big);
	assert_int_equal(typed_test__v1__echo__same__call(e, &a, NULL), MOAT_ELIMIT);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_TARGET);
	/* Under the limit, and replies from the enclave (which the host receives), work. */
	q.size = 1000;
	assert_moat_ok(typed_test__v1__echo__host_big__call(e, &q, &r));
	assert_int_equal(r->data.len, 1000);
	assert_int_equal(r->data.data[999], 'y');
	typed_test__v1__echo__host_big__reply_free(r);
	q.size = 100000;
	assert_moat_ok(typed_test__v1__echo__big__call(e, &q, &r));
	assert_int_equal(r->data.len, 100000);
	typed_test__v1__echo__big__reply_free(r);
	moat_enclave_destroy(e);
	assert_int_equal(test_moatd_stop(&m), 0);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_round_trip, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_function_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_exit_function_fails, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_request_not_decoded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reply_not_decoded, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_exit_request_not_decoded, setup, teardown),
	    cmocka_unit_test(test_selectors),
	    cmocka_unit_test_setup_teardown(test_big_reply, setup, teardown),
	};
	const struct CMUnitTest limit[] = {
	    cmocka_unit_test(test_reply_over_limit),
	};

	if (argc > 1 && strcmp(argv[1], "limit") == 0)
		return cmocka_run_group_tests_name("typed_limit", limit, NULL, NULL);
	return cmocka_run_group_tests_name("typed", tests, NULL, NULL);
}
