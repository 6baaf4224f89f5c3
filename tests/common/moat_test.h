/* Small helpers shared by the tests (header-only; include after <cmocka.h>). */
#ifndef MOAT_TEST_H
#define MOAT_TEST_H

#include <moat/moat.h>

/* Path of an enclave image built for the tests or the examples. */
#define TEST_ENCLAVE(name) MOAT_TEST_ENCLAVES "/" name ".so"

/* Assert a Moat call returned 0, printing the last error when it did not. */
#define assert_moat_ok(expr)                                                                            \
	do {                                                                                            \
		int moat_test_rc_ = (expr);                                                             \
		if (moat_test_rc_ != 0)                                                                 \
			print_error("%s = %d: %s\n", #expr, moat_test_rc_, moat_error_last()->message); \
		assert_int_equal(moat_test_rc_, 0);                                                     \
	} while (0)

/* Load an enclave image with defaults plus the backend from $MOAT_BACKEND. */
static inline moat_enclave *test_load(const char *path, const moat_load_options *opts)
{
	moat_enclave *e = NULL;

	assert_moat_ok(moat_enclave_load(&e, path, opts));
	assert_non_null(e);
	return e;
}

static inline moat_msg *test_msg(void)
{
	moat_msg *m = NULL;

	assert_int_equal(moat_msg_new(&m), 0);
	return m;
}

static inline uint64_t test_item_u64(const moat_msg *m, size_t i)
{
	uint64_t v = 0;

	assert_int_equal(moat_msg_item_u64(m, i, &v), 0);
	return v;
}

/* Assert item i of m is exactly the string s. */
static inline void test_assert_item_str(const moat_msg *m, size_t i, const char *s)
{
	const void *d = NULL;
	size_t len = 0;

	assert_int_equal(moat_msg_item(m, i, &d, &len), 0);
	assert_int_equal(len, strlen(s));
	assert_memory_equal(d, s, len);
}

#endif
