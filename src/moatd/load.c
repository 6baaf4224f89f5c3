/*
 * Load: start a session. moatd loads the named or uploaded image in its
 * local backend, makes the session's id and token, and answers with a load
 * report signed by its identity key. The backend loads the image through
 * an open descriptor (/proc/self/fd/N), so that what the host hears of it
 * names it the way the host did, never by moatd's own paths.
 */
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "moat/v1/target.pb-c.h"
#include "moatd/moatd.h"

#define PROTOCOL_MINOR 0
#define REPORT_FORMAT  "moat-simulated-attestation-v1"

static int name_ok(const char *name)
{
	return name && *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
	       strlen(name) < 256;
}

/*
 * Open the image the request names: the descriptor goes to *fd, its path
 * (for moatd's log) to path, how the host named it to shown, and for an
 * uploaded one its SHA-256 in hex to image. Answers the call itself and
 * returns -1 when there is none.
 */
static int image_open(moatd *d, const Moat__V1__LoadRequest *req, int *fd, char *path, size_t cap,
                      char shown[300], char image[65], moat_rpc_call *call)
{
	const moatd_config *cfg = &d->cfg;
	char hex[65];

	if (req->image_case == MOAT__V1__LOAD_REQUEST__IMAGE_NAME) {
		if (!cfg->enclave_dir) {
			moatd_refuse(call, MOAT_ENOENT,
			             "this target has no enclave directory (start moatd with --enclave-dir)");
			return -1;
		}
		if (!name_ok(req->name)) {
			moatd_refuse(
			    call, MOAT_EINVAL,
			    "'%.64s%s' is not an image name (1 to %d characters, no '/', not '.' or '..')",
			    req->name, strlen(req->name) > 64 ? "..." : "", 255);
			return -1;
		}
		snprintf(shown, 300, "'%s'", req->name);
		snprintf(path, cap, "%s/%s", cfg->enclave_dir, req->name);
		*fd = open(path, O_RDONLY | O_CLOEXEC);
		if (*fd < 0) {
			snprintf(path, cap, "%s/%s.so", cfg->enclave_dir, req->name);
			*fd = open(path, O_RDONLY | O_CLOEXEC);
		}
		if (*fd < 0) {
			moatd_refuse(call, MOAT_ENOENT, "no image '%s' in this target's enclave directory",
			             req->name);
			return -1;
		}
		return 0;
	}
	if (req->image_case == MOAT__V1__LOAD_REQUEST__IMAGE_SHA256 && req->sha256.len == 32) {
		moat__hex(hex, req->sha256.data, 32);
		snprintf(shown, 300, "uploaded image %s", hex);
		snprintf(path, cap, "%s/images/%s.so", cfg->state_dir, hex);
		*fd = moatd_store_open(d, hex);
		if (*fd < 0) {
			moatd_refuse(call, MOAT_ENOENT, "no uploaded image with SHA-256 %s", hex);
			return -1;
		}
		memcpy(image, hex, sizeof(hex));
		return 0;
	}
	if (req->image_case == MOAT__V1__LOAD_REQUEST__IMAGE_SHA256)
		moatd_refuse(call, MOAT_EINVAL, "LoadRequest.sha256 must be 32 bytes, not %zu",
		             req->sha256.len);
	else
		moatd_refuse(call, MOAT_EINVAL, "LoadRequest names no image");
	return -1;
}

/*
 * libmoat's own diagnostics (and, at --log-level debug, its trace of every
 * entry and exit call) go to moatd's log, named by the session whose stream
 * the thread serves.
 */
static void libmoat_log(void *payload, moat_log_level level, const char *message)
{
	const char *id = moatd_current_session();

	(void)payload;
	if (id)
		moatd_log((int)level, "session %s: %s", id, message);
	else
		moatd_log((int)level, "%s", message);
}

static pthread_once_t log_once = PTHREAD_ONCE_INIT;

static void libmoat_log_init(void)
{
	moat_log_set(libmoat_log, NULL);
}

/* A name a host gave for messages: printable, not too long. */
static int name_printable(const char *name)
{
	size_t i;

	if (!name || !*name || strlen(name) > 200)
		return 0;
	for (i = 0; name[i]; i++)
		if ((unsigned char)name[i] < 0x20 || name[i] == 0x7f)
			return 0;
	return 1;
}

static long debug_pid(session *s)
{
	moat_identity id;

	return moat_enclave_identity(s->enclave, &id) == 0 ? id.debug_pid : 0;
}

/* Check what the host asks for before loading anything. Answers the call and returns -1 when refused. */
static int check_request(moatd *d, const Moat__V1__LoadRequest *req, moat_rpc_call *call)
{
	if (req->protocol_major != MOAT__V1__PROTOCOL_VERSION__PROTOCOL_MAJOR) {
		moatd_refuse(call, MOAT_EPROTO, "host speaks Moat protocol %u.%u; this target speaks %d.%d",
		             req->protocol_major, req->protocol_minor,
		             MOAT__V1__PROTOCOL_VERSION__PROTOCOL_MAJOR, PROTOCOL_MINOR);
		return -1;
	}
	if (req->expected_target_key.len && req->expected_target_key.len != 32) {
		moatd_refuse(call, MOAT_EINVAL, "expected_target_key must be 32 bytes");
		return -1;
	}
	if (req->expected_target_key.len && memcmp(req->expected_target_key.data, d->public_key, 32) != 0) {
		moatd_refuse(call, MOAT_EKEY, "this target's identity key is not the one the host pinned");
		return -1;
	}
	if (req->debug && !d->cfg.allow_debug) {
		moatd_refuse(call, MOAT_EPERM,
		             "this target does not allow debug mode (start moatd with --allow-debug)");
		return -1;
	}
	if (req->expected_measurement.len && req->expected_measurement.len != 32) {
		moatd_refuse(call, MOAT_EINVAL, "expected_measurement must be 32 bytes");
		return -1;
	}
	return 0;
}

/*
 * Copy the library's message to out with the image's descriptor path
 * (fdpath) named as the host named the image (shown), and any other
 * absolute path left out (but for keep, the name the host gave the image):
 * a host learns nothing of moatd's files.
 */
static void redact(char *out, size_t cap, const char *msg, const char *fdpath, const char *shown,
                   const char *keep)
{
	size_t o = 0, flen = strlen(fdpath), klen = strlen(keep);
	const char *p = msg;

	while (*p && o + 1 < cap) {
		const char *put = NULL;

		if (strncmp(p, fdpath, flen) == 0 && !(p[flen] >= '0' && p[flen] <= '9')) {
			put = shown;
			p += flen;
		} else if (klen && strncmp(p, keep, klen) == 0) {
			put = keep; /* the image as the host named it (image_name) */
			p += klen;
		} else if (*p == '/' && (p == msg || strchr(" ('\"=", p[-1]))) {
			put = "<path>";
			while (*p && !strchr(" :,)'\"", *p))
				p++;
		}
		if (put) {
			int n = snprintf(out + o, cap - o, "%s", put);

			o = n < 0 || (size_t)n >= cap - o ? cap - 1 : o + (size_t)n;
		} else {
			out[o++] = *p++;
		}
	}
	out[o] = '\0';
}

/*
 * Load the image open as fd (found at path) into a new session with a
 * fresh id and token (image: the uploaded image's SHA-256 in hex, or "").
 * Answers the call on failure.
 */
static session *open_session(moatd *d, int fd, const char *path, const char *shown, const char *image,
                             const Moat__V1__LoadRequest *req, uint8_t token[32], moat_rpc_call *call)
{
	moat_load_options opts = MOAT_LOAD_OPTIONS_INIT;
	char fdpath[64], msg[MOAT__MESSAGE_MAX];
	uint8_t raw[16];
	session *s;
	int rc;

	opts.backend = d->cfg.backend;
	opts.config = req->config.len ? req->config.data : NULL;
	opts.config_len = req->config.len;
	opts.expected_measurement = req->expected_measurement.len ? req->expected_measurement.data : NULL;
	/* The backend stops a call that runs out of time (proc kills the enclave's process). */
	opts.call_timeout_ms = req->call_timeout_ms;
	if (req->debug)
		opts.flags |= MOAT_LOAD_DEBUG;
	/*
	 * The enclave sees what its host's identity says (backend "remote"). Its
	 * init runs once the session's exit handler is set: here for a host
	 * that did not ask to defer it (its exit calls answered by moatd), or at
	 * the host's START on an Attach stream (forwarded to the host).
	 */
	opts.flags |= MOAT_LOAD_FOR_REMOTE_HOST | MOAT_LOAD_DEFER_INIT;
	/* At debug level every entry and exit call of the session is logged (libmoat's trace). */
	if (moatd_log_level >= MOATD_LOG_DEBUG)
		opts.flags |= MOAT_LOAD_TRACE;
	pthread_once(&log_once, libmoat_log_init);
	/* Errors and crash reports name the image as the host did (its path, else how it asked). */
	opts.image_name = name_printable(req->display_name) ? req->display_name : shown;
	s = calloc(1, sizeof(*s));
	if (!s) {
		moatd_refuse(call, MOAT_ENOMEM, "out of memory");
		return NULL;
	}
	s->d = d;
	snprintf(s->image, sizeof(s->image), "%s", image);
	pthread_cond_init(&s->idle, NULL);
	snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", fd);
	if (RAND_bytes(raw, sizeof(raw)) != 1 || RAND_bytes(token, 32) != 1) {
		moatd_refuse(call, MOAT_EIO, "no randomness for the session id");
		goto fail;
	}
	moat__hex(s->id, raw, sizeof(raw));
	moat__hex(s->token_hex, token, 32);
	rc = moat_enclave_load(&s->enclave, fdpath, &opts);
	if (rc == 0) {
		moat_enclave_set_fallback_handler(s->enclave, moatd_forward_exit, s);
		if (!req->defer_init)
			rc = moat_enclave_start(s->enclave);
	}
	if (rc < 0) {
		moatd_log(MOATD_LOG_INFO, "cannot load %s (%s): %s", path, fdpath,
		          moat_error_last()->message);
		redact(msg, sizeof(msg), moat_error_last()->message, fdpath, shown, opts.image_name);
		moatd_refuse(call, rc, "%s", msg);
		goto fail;
	}
	return s;
fail:
	moat_enclave_destroy(s->enclave);
	pthread_cond_destroy(&s->idle);
	free(s);
	return NULL;
}

/*
 * The signed report and the answer, packed into *reply (malloc'd). Returns
 * 0, or -1 after answering the call.
 */
static int make_reply(moatd *d, session *s, const Moat__V1__LoadRequest *req, uint8_t token[32],
                      uint8_t **reply, size_t *len, moat_rpc_call *call)
{
	Moat__V1__LoadResponse resp = MOAT__V1__LOAD_RESPONSE__INIT;
	Moat__V1__LoadReport rep = MOAT__V1__LOAD_REPORT__INIT;
	moat_identity id;
	uint8_t *report, sig[64];
	struct timespec now;
	size_t rlen;

	moat_enclave_identity(s->enclave, &id);
	clock_gettime(CLOCK_REALTIME, &now);
	rep.format = REPORT_FORMAT;
	rep.hardware_rooted = 0;
	rep.measurement.data = id.measurement;
	rep.measurement.len = 32;
	rep.session_id = s->id;
	rep.nonce = req->nonce;
	rep.target_key.data = d->public_key;
	rep.target_key.len = 32;
	rep.backend = (char *)id.backend;
	rep.isolation = id.isolation;
	rep.time_unix_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	rep.debug = id.debug;
	rlen = moat__v1__load_report__get_packed_size(&rep);
	report = malloc(rlen + 1);
	if (!report || moatd_sign(d, sig, report, moat__v1__load_report__pack(&rep, report)) < 0) {
		free(report);
		moatd_refuse(call, MOAT_EIO, "cannot sign the load report");
		return -1;
	}
	resp.protocol_major = MOAT__V1__PROTOCOL_VERSION__PROTOCOL_MAJOR;
	resp.protocol_minor = PROTOCOL_MINOR;
	resp.session_id = s->id;
	resp.session_token.data = token;
	resp.session_token.len = 32;
	resp.measurement = rep.measurement;
	resp.target_key = rep.target_key;
	resp.report.data = report;
	resp.report.len = rlen;
	resp.report_signature.data = sig;
	resp.report_signature.len = 64;
	resp.isolation = id.isolation;
	resp.max_message_bytes = d->cfg.max_message;
	resp.max_threads = d->cfg.max_threads;
	resp.debug = id.debug;
	resp.debug_pid = id.debug_pid;
	resp.init_deferred = req->defer_init;
	if (d->has_endorsement) {
		resp.target_endorsement.data = d->endorsement;
		resp.target_endorsement.len = sizeof(d->endorsement);
	}
	*reply = malloc(moat__v1__load_response__get_packed_size(&resp) + 1);
	if (*reply)
		*len = moat__v1__load_response__pack(&resp, *reply);
	free(report);
	if (!*reply) {
		moatd_refuse(call, MOAT_ENOMEM, "out of memory");
		return -1;
	}
	return 0;
}

void moatd_handle_load(moatd *d, moat_rpc_call *call)
{
	Moat__V1__LoadRequest *req = NULL;
	session *s = NULL;
	uint8_t *buf = NULL, *reply = NULL, token[32];
	char path[4400], shown[300], image[65] = "";
	size_t len;
	int fd = -1;

	memset(token, 0, sizeof(token));
	if (moatd_recv_one(call, &buf, &len) < 0)
		goto out;
	req = moat__v1__load_request__unpack(NULL, len, buf);
	if (!req) {
		moatd_refuse(call, MOAT_EPROTO, "malformed LoadRequest");
		goto out;
	}
	if (moatd_pb_field_has_nul(buf, len, 3 /* LoadRequest.name */)) {
		moatd_refuse(call, MOAT_EINVAL, "the image name contains a NUL byte");
		goto out;
	}
	if (check_request(d, req, call) < 0)
		goto out;
	if (d->draining) {
		moatd_refuse(call, MOAT_ELIMIT, "this target is draining (it takes no new sessions)");
		goto out;
	}
	if (moatd_session_reserve(d) < 0) {
		moatd_refuse(call, MOAT_ELIMIT, "this target already hosts %u sessions (--max-sessions %u)",
		             d->cfg.max_sessions, d->cfg.max_sessions);
		goto out;
	}
	if (image_open(d, req, &fd, path, sizeof(path), shown, image, call) < 0 ||
	    !(s = open_session(d, fd, path, shown, image, req, token, call)) ||
	    make_reply(d, s, req, token, &reply, &len, call) < 0) {
		moatd_session_unreserve(d);
		goto out;
	}
	s->refs = 1;
	clock_gettime(CLOCK_MONOTONIC, &s->since);
	moatd_session_add(d, s);
	moatd_log(MOATD_LOG_INFO, "session %s: loaded %s", s->id, path);
	if (req->debug)
		moatd_log(MOATD_LOG_WARN, "session %s: debug mode: attach with: gdb -p %ld", s->id,
		          debug_pid(s));
	if (moat__rpc_finish(call, reply, len, MOAT_RPC_OK, 0, NULL) < 0)
		moatd_log(MOATD_LOG_WARN,
		          "session %s: the host left before the load answer; reclaiming later", s->id);
	s = NULL;
out:
	if (fd >= 0)
		close(fd);
	if (s) {
		moat_enclave_destroy(s->enclave);
		pthread_cond_destroy(&s->idle);
		free(s);
	}
	OPENSSL_cleanse(token, sizeof(token));
	if (req)
		moat__v1__load_request__free_unpacked(req, NULL);
	free(buf);
	free(reply);
}
