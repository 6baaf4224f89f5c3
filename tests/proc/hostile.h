/*
 * Selectors of the hostile enclave (hostile_enclave.c): each tries one way
 * out of the proc sandbox. Item 0, when there is one, is a u64 argument.
 */
#ifndef MOAT_TESTS_PROC_HOSTILE_H
#define MOAT_TESTS_PROC_HOSTILE_H

#define HOSTILE_ECHO       (MOAT_SELECTOR_USER + 1)  /* items back unchanged */
#define HOSTILE_SETOWN     (MOAT_SELECTOR_USER + 10) /* F_SETOWN to pid item 0 on its sockets */
#define HOSTILE_SETOWN_EX  (MOAT_SELECTOR_USER + 11) /* F_SETOWN_EX to pid item 0 */
#define HOSTILE_SETSIG     (MOAT_SELECTOR_USER + 12) /* F_SETSIG SIGKILL on its sockets */
#define HOSTILE_ASYNC      (MOAT_SELECTOR_USER + 13) /* O_ASYNC through F_SETFL */
#define HOSTILE_KILL       (MOAT_SELECTOR_USER + 14) /* kill(item 0, SIGKILL) */
#define HOSTILE_KILL_ALL   (MOAT_SELECTOR_USER + 15) /* kill(-1, SIGKILL) */
#define HOSTILE_MEMFD      (MOAT_SELECTOR_USER + 20) /* memfd_create */
#define HOSTILE_SHARED_BIG (MOAT_SELECTOR_USER + 21) /* map 64 GiB of shared memory: "mapped"/"refused" */
#define HOSTILE_THREADS    (MOAT_SELECTOR_USER + 22) /* start sleeping threads until refused: the count */
#define HOSTILE_RWX        (MOAT_SELECTOR_USER + 30) /* anonymous read+write+exec mapping */
#define HOSTILE_WX_FLIP    (MOAT_SELECTOR_USER + 31) /* write code into RW memory, mprotect it RX */
#define HOSTILE_CLONE_NS   (MOAT_SELECTOR_USER + 32) /* a thread clone with CLONE_NEWNET */
#define HOSTILE_PRLIMIT    (MOAT_SELECTOR_USER + 33) /* read the limits of pid item 0 */
#define HOSTILE_RAISE_LIM  (MOAT_SELECTOR_USER + 34) /* raise its own RLIMIT_NPROC */
#define HOSTILE_FTRUNCATE  (MOAT_SELECTOR_USER + 35) /* ftruncate its stderr */
#define HOSTILE_SPAWN_HANG    \
	(MOAT_SELECTOR_USER + \
	 36) /* start a thread that never ends; item 0 = 1: a finalizer that never ends instead */
#define HOSTILE_NEST \
	(MOAT_SELECTOR_USER + 37) /* exit call HOSTILE_EXIT_NEST, whose handler calls this again */
#define HOSTILE_EXIT_NEST  (MOAT_SELECTOR_USER + 100)
#define HOSTILE_WHO        (MOAT_SELECTOR_USER + 40) /* pid, parent pid, uid, gid as u64 items */
#define HOSTILE_FORGE_SEGV (MOAT_SELECTOR_USER + 50) /* write a fake death note, then segfault */
#define HOSTILE_FORGE_SYS  (MOAT_SELECTOR_USER + 51) /* write a fake death note, then raise SIGSYS */

#endif
