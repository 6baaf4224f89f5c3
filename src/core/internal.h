/*
 * Internal interfaces of libmoat shared between the core, the backends and
 * the helper programs. Nothing here is installed.
 */
#ifndef MOAT_CORE_INTERNAL_H
#define MOAT_CORE_INTERNAL_H

#include <stdarg.h>

#include <moat/enclave.h>
#include <moat/sys/backend.h>

#include "util/util.h"

/*
 * Drop every item after the first count (msg.c). A failed handler's partial
 * reply is undone with it, so on every backend a failed call leaves out as
 * it was.
 */
void moat__msg_truncate(moat_msg *msg, size_t count);

/*
 * The message layout, for messages that live on the stack of a call path:
 * a handler that gets no reply message from its caller appends to one of
 * these, which costs nothing until it appends.
 */
typedef struct moat__msg_item {
	const uint8_t *data;
	size_t len;
	int owned;
} moat__msg_item;

struct moat_msg {
	moat__msg_item *items;
	size_t count;
	size_t cap;
};

#define MOAT__MSG_INIT     \
	{                  \
		NULL, 0, 0 \
	}

/* Append copies of every item of in (may be NULL) to out; on failure out is left as it was. */
int moat__msg_append(moat_msg *out, const moat_msg *in);

/* Free what a stack message holds (not the message itself). */
void moat__msg_release(moat_msg *msg);

/* Errors (errors.c). */
int moat__error_vset(int code, moat_origin origin, const char *fmt, va_list ap);
void moat__error_set_enclave_code(int64_t value);

/*
 * Record the error for a failed entry call result coming back from an
 * enclave dispatcher, with the same wording on every backend. Returns code.
 */
int moat__error_from_enclave(int code, uint64_t selector, int64_t handler_code, const char *detail);

/*
 * Find helper program name: $env (read with secure_getenv), next to libmoat
 * (., bin/, ../libexec/, ../bin/), next to the running program, the build
 * tree, then the install's libexec and bin directories. Returns 0 with the
 * path in out, or MOAT_ENOBACKEND (error recorded, naming env).
 */
int moat__find_helper(char *out, size_t cap, const char *name, const char *env);

/* Is the environment variable name set to something other than "" or "0"? (log.c) */
int moat__env_on(const char *name);

/* A diagnostic for the application's log function (log.c); printf-style, one line. */
void moat__log(moat_log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Tracing (trace.c): a monotonic clock in ns, and one line for a finished call ("entry" or "exit"). */
int64_t moat__trace_now(void);
void moat__trace(const char *backend, const char *kind, uint64_t selector, const moat_msg *in,
                 const moat_msg *out, size_t out_before, int rc, int64_t start_ns);

/* Is this code fatal for the instance (every later call must fail with it)? */
int moat__code_is_fatal(int code);

/* A loaded enclave image (image.c): used by the sim backend and the proc runner. */
typedef struct moat_image {
	void *dl;
	int fd; /* memfd holding the private copy that was loaded */
	const struct moat_enclave_entry *entry;
	uint8_t measurement[MOAT_MEASUREMENT_LEN];
} moat_image;

/*
 * Read the image at path into a private in-memory file, measure the bytes,
 * check them against pin (may be NULL) and the ELF magic, dlopen the private
 * copy and check the entry symbol and ABI. No code in the image runs before
 * the pin and magic checks pass. Records the error and returns a code.
 */
int moat__image_open(moat_image **out, const char *path, const uint8_t *pin);
/* Same, from bytes already in memory. */
int moat__image_open_bytes(moat_image **out, const void *bytes, size_t len, const char *what,
                           const uint8_t *pin);
void moat__image_close(moat_image *image);
/*
 * Make now the memfd that the next moat__image_open_bytes() in this process
 * will use (for a sandbox that cannot make one later). Returns 0 or -errno.
 */
int moat__image_reserve_memfd(void);
/*
 * Name the reserved memfd's copy /proc/PID/fd/N instead of /proc/self/fd/N
 * (the proc runner's debug mode: a debugger resolves the name in its own
 * process, where PID is the runner's pid in its /proc).
 */
void moat__image_name_by_pid(long pid);

/* Read a whole file; *out is malloc'd. Records the error and returns a code. */
int moat__read_file(uint8_t **out, size_t *len, const char *path);

/* SHA-256 of a buffer. */
void moat__sha256(uint8_t out[MOAT_MEASUREMENT_LEN], const void *data, size_t len);

/* Hex helpers: out needs 2 * len + 1 bytes. */

/* Split "scheme:rest" / "scheme://rest"; returns the backend vtable or NULL. */
/* A backend URI split by the backend table (backend.c); address points into the URI or is NULL. */
typedef struct moat__backend_uri {
	const moat_backend_vtable *vtable;
	const char *scheme;
	const char *address;
} moat__backend_uri;

/* Split uri and find its backend. Returns 0, MOAT_EINVAL or MOAT_ENOBACKEND (error recorded). */
int moat__backend_parse(moat__backend_uri *out, const char *uri);

/* Backends compiled into libmoat. Weak, so a build without one says "not available". */
extern const moat_backend_vtable moat__backend_sim;
extern const moat_backend_vtable moat__backend_proc __attribute__((weak));
extern const moat_backend_vtable moat__backend_remote __attribute__((weak));

#endif
