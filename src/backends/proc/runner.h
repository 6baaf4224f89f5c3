/* Internal interfaces of the runner `moat-enclave-host`. */
#ifndef MOAT_BACKENDS_PROC_RUNNER_H
#define MOAT_BACKENDS_PROC_RUNNER_H

#include "backends/proc/proc.h"
#include "core/internal.h"

/*
 * Leave the host's namespaces (sandbox.c): called first thing, while the
 * runner is still one thread. parent is the host's pid. Returns the
 * MOAT_ISOLATION_* layers applied, sets *ns_errno to why a namespace could
 * not be made (or 0) and *err to a negative errno when the runner must not
 * go on. With a PID namespace it returns in a new process, PID 2 in it; the
 * process that called it stays outside and never returns.
 */
unsigned int moat__runner_contain(pid_t parent, int *ns_errno, int *err);

/* How the host asked the runner to start (its command line). */
typedef struct moat_runner_mode {
	int jit;    /* writable+executable memory allowed */
	int debug;  /* debug mode: stays dumpable so a debugger of the host's user can attach */
	int remote; /* hosted for a remote host (moatd): the enclave's moat_host_identity() says "remote" */
	/* Debug mode: this process's pid in the host's /proc, which also names the image copy. */
	long outer_pid;
	/* The libraries the image needs (DT_NEEDED names), loaded before the sandbox. */
	char **needed;
	int n_needed;
} moat_runner_mode;

/*
 * Enter the sandbox (sandbox.c): limits, no capabilities, seccomp. note_fd
 * is where a note goes when a forbidden system call stops the enclave.
 * Adds the layers applied to *isolation. Returns 0, or a negative errno
 * when seccomp could not be set up.
 */
int moat__runner_sandbox_enter(int note_fd, const moat_runner_mode *mode, unsigned int *isolation);

/*
 * The seccomp trap handler (trap.c): reports a forbidden call on note_fd and
 * brokers the loader's harmless ones. outer_pid, when not 0, is the pid that
 * also names the runner's own files (/proc/PID/fd/N, debug mode). Returns 0
 * or a negative errno.
 */
int moat__runner_trap_init(int note_fd, long outer_pid);

/* The innermost Call this thread serves (fault.c reads them in its handler). */
extern _Thread_local uint64_t moat__runner_selector;
extern _Thread_local int moat__runner_depth;

/*
 * Crash reports (fault.c). Before the sandbox: install the fault handlers,
 * which write a MOAT_PROC_NOTE_CRASH note and report on note_fd. Returns 0
 * or a negative errno.
 */
int moat__runner_fault_init(int note_fd);
/* After the image is loaded: the table of loaded modules the handler matches addresses against. */
void moat__runner_fault_modules(void *image_dl);
/* A worker thread's alternate signal stack (so a stack overflow is reported); returns it or NULL. */
void *moat__runner_fault_thread_begin(void);
void moat__runner_fault_thread_end(void *stack);

#endif
