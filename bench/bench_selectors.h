/* Selectors shared by moat-bench and its enclave. */
#ifndef MOAT_BENCH_SELECTORS_H
#define MOAT_BENCH_SELECTORS_H

#define BENCH_SEL_EMPTY (MOAT_SELECTOR_USER + 0)   /* entry: no work, no reply */
#define BENCH_SEL_ECHO  (MOAT_SELECTOR_USER + 1)   /* entry: reply with copies of the input items */
#define BENCH_SEL_EXIT  (MOAT_SELECTOR_USER + 2)   /* entry: one exit call with the input, return its reply */
#define BENCH_EXIT_ECHO (MOAT_SELECTOR_USER + 100) /* exit: the host echoes the items back */

#endif
