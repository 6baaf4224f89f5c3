/* Selectors of tests/remote/remote_enclave.c. */
#ifndef MOAT_TEST_REMOTE_ENCLAVE_H
#define MOAT_TEST_REMOTE_ENCLAVE_H
/* u64 ms -> u64 exit calls made: loops on host time and host log until ms of host time passed */
#define R_SLOW (MOAT_SELECTOR_USER + 1)
/* u64 ms: sleeps inside the enclave without any exit call */
#define R_SLEEP (MOAT_SELECTOR_USER + 2)
/* items... -> u64 total bytes received */
#define R_SIZE (MOAT_SELECTOR_USER + 3)
/* spins a CPU forever, with no exit call: only stopping the enclave ends it */
#define R_SPIN (MOAT_SELECTOR_USER + 4)
/* makes exit call R_EXIT_NEST (whose host handler may call R_NEST again) and returns its result */
#define R_NEST      (MOAT_SELECTOR_USER + 5)
#define R_EXIT_NEST (MOAT_SELECTOR_USER + 100)
#endif
