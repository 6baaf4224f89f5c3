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

/*
 * Enter the sandbox (sandbox.c): limits, no capabilities, seccomp. note_fd
 * is where a note goes when a forbidden system call stops the enclave; jit
 * allows writable+executable memory. Adds the layers applied to *isolation.
 * Returns 0, or a negative errno when seccomp could not be set up.
 */
int moat__runner_sandbox_enter(int note_fd, int jit, unsigned int *isolation);

#endif
