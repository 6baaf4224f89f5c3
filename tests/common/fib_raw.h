/*
 * Selectors of fib_raw_enclave (tests/enclaves/fib_raw_enclave.c), the fib
 * example as it was before it moved to typed calls, kept as a raw-message
 * fixture of the tests. The enclave computes (F(n), F(n-1)) by
 * asking the host for (F(n-1), F(n-2)); the host answers by calling the
 * enclave again, so a call for n nests n entry calls and n exit calls.
 * Values wrap modulo 2^64.
 */
#ifndef MOAT_TEST_FIB_RAW_H
#define MOAT_TEST_FIB_RAW_H
#define FIB_ENTRY (MOAT_SELECTOR_USER + 1) /* entry: u64 n -> u64 F(n), u64 F(n-1) */
#define FIB_EXIT  (MOAT_SELECTOR_USER + 1) /* exit: u64 n -> u64 F(n), u64 F(n-1) */
#endif
