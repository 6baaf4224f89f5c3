/* Selectors of the proc tests' probe enclave (probe_enclave.c). */
#ifndef MOAT_TESTS_PROC_PROBE_H
#define MOAT_TESTS_PROC_PROBE_H

#define PROBE_ECHO   (MOAT_SELECTOR_USER + 1)  /* items back unchanged */
#define PROBE_FAIL   (MOAT_SELECTOR_USER + 2)  /* handler returns 7 */
#define PROBE_CONFIG (MOAT_SELECTOR_USER + 3)  /* the config bytes init saw */
#define PROBE_OPEN   (MOAT_SELECTOR_USER + 10) /* open(item 0) */
#define PROBE_EXEC   (MOAT_SELECTOR_USER + 11) /* execve("/bin/true") */
#define PROBE_SOCKET (MOAT_SELECTOR_USER + 12) /* socket(AF_INET) */
#define PROBE_STAT   (MOAT_SELECTOR_USER + 13) /* stat(item 0) */
#define PROBE_FORK   (MOAT_SELECTOR_USER + 14) /* fork() */
#define PROBE_KILL   (MOAT_SELECTOR_USER + 15) /* kill(getppid(), SIGKILL) */
#define PROBE_VMREAD (MOAT_SELECTOR_USER + 16) /* process_vm_readv(getppid(), address item 0) */
#define PROBE_PEEK   (MOAT_SELECTOR_USER + 17) /* copy item-1 bytes at address item 0 */
/* Config "crash-deep": init faults this many frames of deep() down (#0 to #15, then init, #16). */
#define PROBE_DEEP_FRAMES 16
#define PROBE_SEGV        (MOAT_SELECTOR_USER + 20) /* write through NULL */
#define PROBE_ABORT       (MOAT_SELECTOR_USER + 21) /* abort() */
#define PROBE_EXIT        (MOAT_SELECTOR_USER + 22) /* exit(3) */
#define PROBE_HANG        (MOAT_SELECTOR_USER + 23) /* sleep forever */
#define PROBE_LATER       (MOAT_SELECTOR_USER + 24) /* an enclave thread segfaults a little later */
#define PROBE_GARBAGE \
	(MOAT_SELECTOR_USER + 25) /* write garbage on every socket but the control one, then hang */
#define PROBE_STDIO     (MOAT_SELECTOR_USER + 30)  /* printf, a pthread, malloc: ordinary code works */
#define PROBE_EXIT_CALL (MOAT_SELECTOR_USER + 31)  /* exit call PROBE_HOST with the items */
#define PROBE_HOST      (MOAT_SELECTOR_USER + 100) /* exit selector answered by the tests */

#endif
