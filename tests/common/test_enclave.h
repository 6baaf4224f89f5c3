/*
 * Selectors of tests/enclaves/test_enclave.c, shared by the image and the
 * tests. Integers travel as 8-byte little-endian items (moat_msg_push_u64);
 * signed results are sent as their two's-complement u64.
 */
#ifndef MOAT_TEST_ENCLAVE_H
#define MOAT_TEST_ENCLAVE_H

/* items... -> the same items, copied */
#define T_ECHO (MOAT_SELECTOR_USER + 1)
/* u64 id, u64 v -> u64 id, u64 (state[id] += v); state lives in the enclave */
#define T_ADD (MOAT_SELECTOR_USER + 2)
/* u64 v: set the instance-wide value */
#define T_GLOBAL_SET (MOAT_SELECTOR_USER + 3)
/* -> u64 instance-wide value (0 until set) */
#define T_GLOBAL_GET (MOAT_SELECTOR_USER + 4)
/* u64 code [, anything]: the handler returns (int)code; with a second item it first appends a reply item */
#define T_FAIL (MOAT_SELECTOR_USER + 5)
/* u64 selector, items... -> u64 result of moat_exit_call(selector, items), then its reply items */
#define T_EXIT (MOAT_SELECTOR_USER + 6)
/* -> the config bytes init received, as one item */
#define T_CONFIG (MOAT_SELECTOR_USER + 7)
/* u64 n -> u64 threads started, u64 threads whose work was seen finished after join */
#define T_THREADS (MOAT_SELECTOR_USER + 8)

/* -> u64 (as int64) what moat_thread_start() returned inside init, when the config was T_SPAWN_IN_INIT_CONFIG
 */
#define T_INIT_SPAWN           (MOAT_SELECTOR_USER + 9)
#define T_SPAWN_IN_INIT_CONFIG "spawn-in-init"

/* u64 selector: when destroyed, the finalizer makes exit call selector with one u64 item,
 * what moat_thread_start() returned in the finalizer */
#define T_ON_FINI (MOAT_SELECTOR_USER + 10)

/* -> u64 host wall-clock time from moat_host_time() (ns since the epoch) */
#define T_TIME (MOAT_SELECTOR_USER + 11)

/* -> moat_host_identity(): backend string, u64 isolation, u64 debug, u64 simulated_attestation */
#define T_HOST (MOAT_SELECTOR_USER + 12)

/*
 * With this config init logs T_INIT_EXIT_LOG through the host, then makes
 * exit call T_INIT_EXIT_SELECTOR (no items) and keeps its result and its
 * u64 reply; T_INIT_EXIT returns them: u64 (as int64) result, u64 reply (0
 * when none). Only an application's own handler answers that selector.
 */
#define T_INIT_EXIT_CONFIG   "init-exit"
#define T_INIT_EXIT_SELECTOR (MOAT_SELECTOR_USER + 700)
#define T_INIT_EXIT_LOG      "test enclave: init says hello"
#define T_INIT_EXIT          (MOAT_SELECTOR_USER + 13)

/* init refuses to load (returns T_INIT_FAIL_CODE) when the config is exactly this string */
#define T_INIT_FAIL_CONFIG "fail-init"
#define T_INIT_FAIL_CODE   7

/* Environment variable naming the file test_marker.so creates from its constructor. */
#define T_MARKER_ENV "MOAT_TEST_MARKER"

#endif
