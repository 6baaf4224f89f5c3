/*
 * The remote backend's pieces: the host agent (remote.c) and local
 * provisioning of a private moatd (local.c).
 */
#ifndef MOAT_BACKENDS_REMOTE_H
#define MOAT_BACKENDS_REMOTE_H

#include <sys/types.h>

/* A private moatd started for one enclave handle ("local" backend). */
typedef struct moat_local_target {
	pid_t pid;
	int parent_fd;    /* write end of the pipe whose closing tells moatd we are gone */
	char dir[256];    /* private 0700 directory: socket, state, uploaded image */
	char target[300]; /* "unix:/.../moatd.sock" */
} moat_local_target;

/* Start moatd on a unix socket in a private directory and wait until it serves. */
int moat__local_target_start(moat_local_target *lt, unsigned int timeout_ms);
/* Stop and reap it, and remove its directory. Safe on a target that failed to start. */
void moat__local_target_stop(moat_local_target *lt);

#endif
