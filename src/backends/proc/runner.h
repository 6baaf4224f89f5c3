/* Internal interfaces of the runner `moat-enclave-host`. */
#ifndef MOAT_BACKENDS_PROC_RUNNER_H
#define MOAT_BACKENDS_PROC_RUNNER_H

#include "backends/proc/proc.h"
#include "core/internal.h"

/*
 * Enter the sandbox (sandbox.c). note_fd is where a death note goes when a
 * forbidden system call stops the enclave. Sets *isolation to the layers
 * applied and *ns_errno to why namespaces could not be made (or 0).
 * Returns 0, or a negative errno when seccomp could not be set up.
 */
int moat__runner_sandbox_enter(int note_fd, unsigned int *isolation, int *ns_errno);

#endif
