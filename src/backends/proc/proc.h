/*
 * The proc backend: what libmoat and the runner `moat-enclave-host` share.
 *
 * libmoat starts the runner with one end of a control socket on fd 3. The
 * runner enters its sandbox, then writes a hello note on the control socket
 * saying which layers it applied. After that the host passes one socket per
 * host thread over the control socket (SCM_RIGHTS); the runner starts a
 * worker thread for each. On a channel both sides exchange Call and Return
 * frames (src/codec/frame.h), each preceded by its length as 4 little-endian
 * bytes, in strict LIFO order: the same protocol as a remote Attach stream.
 * The first Call on the first channel loads the image; the runner writes a
 * death note on the control socket when the sandbox stops the enclave.
 */
#ifndef MOAT_BACKENDS_PROC_PROC_H
#define MOAT_BACKENDS_PROC_PROC_H

#include <stdint.h>
#include <sys/types.h>

#include "codec/conv.h"
#include "codec/protocol.h"

/* Version of this protocol; the host passes it on the runner's command line. */
#define MOAT_PROC_PROTOCOL "1"
/* The control socket's fd number in the runner. */
#define MOAT_PROC_CTL_FD 3

/* Its private selectors, MOAT_PROC_SELECTOR_LOAD and _STOP, are in codec/protocol.h. */

/*
 * Most tasks (threads, and the runner's two keeper processes) one runner may
 * have, enforced by the kernel (RLIMIT_NPROC in the runner's own user
 * namespace). A thread the enclave asks for beyond it fails to start.
 */
#define MOAT_PROC_MAX_TASKS 512

/*
 * Deepest nesting of the host's calls on one channel (host -> enclave ->
 * exit handler -> enclave ...). A deeper call fails with MOAT_ELIMIT
 * without running; the runner's worker stacks are sized for it.
 */
#define MOAT_PROC_MAX_NESTING 1024

/* Largest frame either side accepts; an image travels in one frame. */
#define MOAT_PROC_FRAME_MAX ((uint32_t)1 << 30)

#define MOAT_PROC_NOTE_MAGIC 0x4d4f4154u /* "MOAT" */

enum {
	MOAT_PROC_NOTE_HELLO = 1,       /* sandbox is up: isolation, ns_errno */
	MOAT_PROC_NOTE_SYSCALL = 2,     /* the sandbox stopped a system call: value (written from inside) */
	MOAT_PROC_NOTE_EXEC_FAILED = 3, /* the runner could not be executed: value is errno */
	MOAT_PROC_NOTE_CRASH = 4,       /* a fatal signal: a moat_proc_crash follows (written from inside) */
	MOAT_PROC_NOTE_LIBRARY =
	    5 /* a library the image needs did not load: MOAT_PROC_NOTE_TEXT bytes follow */
};

/* The text that follows a LIBRARY note, and the longest path after a SYSCALL note. */
#define MOAT_PROC_NOTE_TEXT 256

/* A fixed-size record on the control socket, runner to host. */
typedef struct moat_proc_note {
	uint32_t magic;
	uint32_t kind;
	uint32_t isolation; /* HELLO: MOAT_ISOLATION_* applied */
	int32_t value;      /* SYSCALL: number; EXEC_FAILED: errno */
	int32_t ns_errno;   /* HELLO: why new namespaces could not be made, or 0 */
	/*
	 * HELLO in debug mode: the runner's pid as the host's /proc numbers it.
	 * SYSCALL: 1 when the call's path follows (up to a NUL, at most
	 * MOAT_PROC_NOTE_TEXT bytes).
	 */
	int32_t aux;
} moat_proc_note;

/* Frames and module name length of a crash report. */
#define MOAT_PROC_CRASH_FRAMES 24
#define MOAT_PROC_CRASH_NAME   112

/* Where the crashed thread was. */
enum {
	MOAT_PROC_CRASH_OUTSIDE = 0, /* a thread the enclave started itself: no call */
	MOAT_PROC_CRASH_CALL = 1     /* serving a Call from the host: selector */
};

/* Frame flags. */
#define MOAT_PROC_FRAME_IMAGE  0x1u /* in the enclave image (module is "") */
#define MOAT_PROC_FRAME_RETURN 0x2u /* a return address: the call is the instruction before it */

/*
 * What the runner's fault handler reports after a MOAT_PROC_NOTE_CRASH note:
 * the crashed thread's innermost call, the signal, and its stack as
 * (module, offset from the module's load address) pairs, which the host
 * symbolizes from the files themselves (report.c).
 */
typedef struct moat_proc_crash {
	uint64_t selector; /* CALL: the innermost Call's selector */
	uint64_t addr;     /* si_addr */
	int32_t where;     /* MOAT_PROC_CRASH_* */
	int32_t signo, code;
	uint32_t nframes;
	struct moat_proc_crash_frame {
		uint64_t offset; /* from the module's load address; the raw address when module is unknown */
		uint32_t flags;  /* MOAT_PROC_FRAME_* */
		char module[MOAT_PROC_CRASH_NAME]; /* the module's path as the runner loaded it, or "" */
	} frames[MOAT_PROC_CRASH_FRAMES];
} moat_proc_crash;

/* Why the host gives a runner up. */
enum {
	MOAT_PROC_LOST_GONE,     /* its channel or control socket closed: find out how it ended */
	MOAT_PROC_LOST_TIMEOUT,  /* a call ran out of time: stop it */
	MOAT_PROC_LOST_PROTOCOL, /* it sent what no runner sends: stop it */
	MOAT_PROC_LOST_ABORT     /* the application stopped it (moat_enclave_abort) */
};

/* What the host knows of a runner's end (report.c). */
typedef struct moat_proc_death {
	const char *path;             /* the image, as messages name it */
	int why;                      /* MOAT_PROC_LOST_* */
	int status;                   /* its wait status, or -1 when it could not be had */
	int killed;                   /* the host had to kill it after it closed its channel */
	int syscall_nr;               /* the SYSCALL note's number, or -1 */
	const char *syscall_path;     /* the path it reported for that call, or NULL */
	uint64_t selector;            /* TIMEOUT: the call */
	unsigned int timeout_ms;      /* TIMEOUT: the limit */
	const moat_proc_crash *crash; /* the CRASH note's report, or NULL */
	int image_fd;                 /* the host's copy of the image (for symbols), or -1 */
} moat_proc_death;

/* Write why the runner is dead into out; returns the instance's fatal code. */
int moat__proc_describe_death(char *out, size_t cap, const moat_proc_death *d);

/* A runner to start (spawn.c, libmoat only): the child gets ctl_fd as fd 3, null_fd as 0 and 1, err_fd as 2.
 */
typedef struct spawn_req {
	const char *path;
	char *const *argv;
	int ctl_fd, null_fd, err_fd; /* all 10 or higher, so the child's dup2s never clobber each other */
	pid_t pid;                   /* out: the child, or -1 */
	int err;                     /* out: errno when pid is -1 */
	int done;
	struct spawn_req *next;
} spawn_req;

/* Fork and exec r's program from libmoat's spawner thread (or this one when no thread can be had). */
void moat__proc_spawn(spawn_req *r);

/*
 * Start the runner at path with the load's MOAT_LOAD_* flags and the
 * libraries it must load before its sandbox (spawn.c): *ctl gets the host's
 * end of its control socket, *pid the process. Records the error and
 * returns a code.
 */
int moat__proc_start_runner(const char *path, unsigned int flags, char *const *needed, size_t n_needed,
                            int *ctl, pid_t *pid);

/* Most DT_NEEDED libraries the runner loads for an image before its sandbox. */
#define MOAT_PROC_MAX_NEEDED 32

/*
 * The plain names (no directory) of the libraries the image in bytes needs
 * (needed.c); *out is freed with moat__proc_needed_free(). Returns 0 (an
 * empty list for what is not an ELF file) or MOAT_ENOMEM.
 */
int moat__proc_needed(const uint8_t *bytes, size_t len, char ***out, size_t *count);
void moat__proc_needed_free(char **names, size_t count);

/* Buffered reader of length-prefixed frames on one socket. */
typedef struct moat_proc_wire {
	int fd;
	uint8_t *buf;
	size_t have, cap;
} moat_proc_wire;

/*
 * Encode f with its length header and send it whole (MSG_NOSIGNAL).
 * Returns 0, MOAT_ENOMEM or MOAT_ETRANSPORT (peer gone); records no error.
 */
int moat__proc_wire_send(int fd, const moat_frame *f);

/*
 * Receive the next frame into *out. deadline_ns is a CLOCK_MONOTONIC time
 * or 0 for none. Returns 0, MOAT_ETRANSPORT (end of stream or error),
 * MOAT_ETIMEDOUT, MOAT_EPROTO or MOAT_ENOMEM; records no error.
 */
int moat__proc_wire_recv(moat_proc_wire *w, moat_frame_in **out, int64_t deadline_ns);

/* Free the reader's buffer (not the fd). */
void moat__proc_wire_release(moat_proc_wire *w);

#endif
