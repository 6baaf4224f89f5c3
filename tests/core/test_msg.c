/* Message items: empty, zero-length, many, large, borrowed versus copied. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <moat/msg.h>

static void test_empty(void **state)
{
	moat_msg *m = NULL;
	const void *d;
	size_t len;

	assert_int_equal(moat_msg_new(&m), 0);
	assert_int_equal(moat_msg_count(m), 0);
	assert_int_equal(moat_msg_item(m, 0, &d, &len), MOAT_EINVAL);
	moat_msg_free(m);
	moat_msg_free(NULL);
}

static void test_zero_length(void **state)
{
	moat_msg *m = NULL;
	const void *d = NULL;
	size_t len = 99;

	assert_int_equal(moat_msg_new(&m), 0);
	assert_int_equal(moat_msg_push(m, NULL, 0), 0);
	assert_int_equal(moat_msg_push_borrowed(m, NULL, 0), 0);
	assert_int_equal(moat_msg_push(m, NULL, 1), MOAT_EINVAL);
	assert_int_equal(moat_msg_count(m), 2);
	assert_int_equal(moat_msg_item(m, 0, &d, &len), 0);
	assert_non_null(d);
	assert_int_equal(len, 0);
	moat_msg_free(m);
}

static void test_many(void **state)
{
	moat_msg *m = NULL;
	uint64_t i, v;

	assert_int_equal(moat_msg_new(&m), 0);
	for (i = 0; i < 100000; i++)
		assert_int_equal(moat_msg_push_u64(m, i * 7), 0);
	assert_int_equal(moat_msg_count(m), 100000);
	for (i = 0; i < 100000; i++) {
		assert_int_equal(moat_msg_item_u64(m, i, &v), 0);
		assert_int_equal(v, i * 7);
	}
	moat_msg_reset(m);
	assert_int_equal(moat_msg_count(m), 0);
	moat_msg_free(m);
}

static void test_large(void **state)
{
	const size_t n = 64u << 20;
	uint8_t *big = malloc(n);
	moat_msg *m = NULL;
	const void *d;
	size_t len, i;

	assert_non_null(big);
	for (i = 0; i < n; i++)
		big[i] = (uint8_t)(i * 31 + 7);
	assert_int_equal(moat_msg_new(&m), 0);
	assert_int_equal(moat_msg_push(m, big, n), 0);
	assert_int_equal(moat_msg_item(m, 0, &d, &len), 0);
	assert_int_equal(len, n);
	assert_ptr_not_equal(d, big);
	assert_memory_equal(d, big, n);
	moat_msg_free(m);
	free(big);
}

static void test_borrowed_vs_copied(void **state)
{
	char buf[8] = "abcdefg";
	moat_msg *m = NULL;
	const void *copied, *borrowed;
	size_t len;
	char *s = NULL;

	assert_int_equal(moat_msg_new(&m), 0);
	assert_int_equal(moat_msg_push(m, buf, 7), 0);
	assert_int_equal(moat_msg_push_borrowed(m, buf, 7), 0);
	buf[0] = 'X';
	assert_int_equal(moat_msg_item(m, 0, &copied, &len), 0);
	assert_int_equal(moat_msg_item(m, 1, &borrowed, &len), 0);
	assert_ptr_equal(borrowed, buf);
	assert_memory_equal(copied, "abcdefg", 7);
	assert_memory_equal(borrowed, "Xbcdefg", 7);
	assert_int_equal(moat_msg_item_strdup(m, 1, &s), 0);
	assert_string_equal(s, "Xbcdefg");
	free(s);
	assert_int_equal(moat_msg_item_u64(m, 0, NULL), MOAT_EINVAL);
	moat_msg_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_empty),
	    cmocka_unit_test(test_zero_length),
	    cmocka_unit_test(test_many),
	    cmocka_unit_test(test_large),
	    cmocka_unit_test(test_borrowed_vs_copied),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
