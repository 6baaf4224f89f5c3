/*
 * Selectors of kv_raw_enclave (tests/enclaves/kv_raw_enclave.c): the kv example as it was before it
 * moved to typed calls, kept as a raw-message fixture of the tests.
 */
#ifndef MOAT_TEST_KV_RAW_H
#define MOAT_TEST_KV_RAW_H
#define KV_PUT       (MOAT_SELECTOR_USER + 1) /* items: key, value */
#define KV_GET       (MOAT_SELECTOR_USER + 2) /* items: key -> value; handler fails with KV_NOT_FOUND */
#define KV_DEL       (MOAT_SELECTOR_USER + 3) /* items: key; fails with KV_NOT_FOUND */
#define KV_COUNT     (MOAT_SELECTOR_USER + 4) /* -> u64 number of keys */
#define KV_NOT_FOUND 2
#endif
