/*
 * The moat.v1.Target service: sessions, Load, Upload, Attach, Destroy and
 * grpc.health.v1.Health/Check. Every call runs on its own thread (the rpc
 * layer starts one per call); an Attach stream's thread runs the host's
 * entry calls itself and forwards the enclave's exit calls back over the
 * same stream, so one stream is one host thread, nested calls included.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include <moat/moat.h>

#include "codec/frame.h"
#include "moat/v1/target.pb-c.h"
#include "moatd/moatd.h"

#define PROTOCOL_MINOR 0
#define REPORT_FORMAT  "moat-simulated-attestation-v1"

typedef struct stream_ref {
	moat_rpc_call *call;
	struct stream_ref *next;
} stream_ref;

typedef struct session {
	char id[33];
	char token_hex[65];
	moat_enclave *enclave;
	unsigned int refs;    /* the table's reference plus one per running handler */
	unsigned int streams; /* Attach streams serving host threads */
	unsigned int busy;    /* entry calls running in the enclave (nested ones included) */
	int stopped;          /* moatd_target_stopping ended its calls */
	int removed;
	int leased;
	struct timespec since; /* load time, or when the lease broke */
	int lease_broken;
	stream_ref *calls; /* every open stream, so Destroy can end them */
	pthread_cond_t idle;
	struct session *next;
} session;

static moatd *daemon_ctx;
static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static session *table;
static unsigned int n_sessions;

/* The Attach stream served by this thread, for the exit-call forwarder. */
typedef struct stream_ctx {
	moat_rpc_call *call;
	uint64_t seq;
	int broken;
} stream_ctx;

static _Thread_local stream_ctx *current_stream;

static void hexs(char *out, const uint8_t *b, size_t n)
{
	static const char d[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = d[b[i] >> 4];
		out[2 * i + 1] = d[b[i] & 15];
	}
	out[2 * n] = '\0';
}

static double elapsed_ms(const struct timespec *t)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (double)(now.tv_sec - t->tv_sec) * 1e3 + (double)(now.tv_nsec - t->tv_nsec) / 1e6;
}

void moatd_target_init(moatd *d)
{
	daemon_ctx = d;
}

unsigned int moatd_session_count(void)
{
	unsigned int n;

	pthread_mutex_lock(&table_lock);
	n = n_sessions;
	pthread_mutex_unlock(&table_lock);
	return n;
}

static void session_free(session *s)
{
	moatd_log(MOATD_LOG_INFO, "session %s: destroying the enclave", s->id);
	moat_enclave_destroy(s->enclave);
	pthread_cond_destroy(&s->idle);
	OPENSSL_cleanse(s->token_hex, sizeof(s->token_hex));
	free(s);
}

/* Drop a reference; the last one destroys the enclave (outside the lock). */
static void session_unref(session *s)
{
	int last;

	pthread_mutex_lock(&table_lock);
	last = --s->refs == 0;
	pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&table_lock);
	if (last)
		session_free(s);
}

/*
 * Unlink s from the table and end its streams but keep (may be NULL).
 * Called with table_lock held; returns 1 when the caller now holds the
 * table's reference.
 */
static int session_remove_keep_locked(session *s, moat_rpc_call *keep)
{
	session **p;
	stream_ref *r;

	if (s->removed)
		return 0;
	for (p = &table; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	s->removed = 1;
	n_sessions--;
	for (r = s->calls; r; r = r->next)
		if (r->call != keep)
			moat__rpc_call_cancel(r->call);
	/* The lease thread waits on this too. */
	pthread_cond_broadcast(&s->idle);
	return 1;
}

static int session_remove_locked(session *s)
{
	return session_remove_keep_locked(s, NULL);
}

/*
 * A session is going away (destroyed, reclaimed, moatd stopping) while
 * entry calls still run in its enclave: their host gave up on them or is
 * gone. End the enclave now (proc kills its process) so that their worker
 * threads return at once instead of when the calls end, which may be never.
 * The caller holds a reference and not table_lock.
 */
static void end_running_calls(session *s, const char *why)
{
	moat_enclave *e;

	pthread_mutex_lock(&table_lock);
	e = s->busy ? s->enclave : NULL;
	pthread_mutex_unlock(&table_lock);
	if (!e)
		return;
	moatd_log(MOATD_LOG_INFO, "session %s: %s with calls still running; stopping the enclave", s->id,
	          why);
	moat_enclave_abort(e);
}

/* Wait (bounded) until only the caller's reference is left. Called with table_lock held. */
static void wait_alone_locked(session *s)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	while (s->refs > 1)
		if (pthread_cond_timedwait(&s->idle, &table_lock, &deadline) != 0)
			break;
}

/*
 * Find the session named in the call's metadata and take a reference.
 * Answers the call itself and returns NULL when it is unknown or the
 * token is wrong (the session is not touched then).
 */
static session *session_auth(moat_rpc_call *call)
{
	const char *id = moat__rpc_call_md(call, "moat-session");
	char idbuf[33] = "";
	session *s;
	const char *token;

	if (id)
		snprintf(idbuf, sizeof(idbuf), "%s", id);
	token = moat__rpc_call_md(call, "moat-token");
	pthread_mutex_lock(&table_lock);
	for (s = table; s; s = s->next)
		if (strcmp(s->id, idbuf) == 0)
			break;
	if (!s) {
		pthread_mutex_unlock(&table_lock);
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_NOT_FOUND, MOAT_ETARGET,
		                 idbuf[0] ? "unknown session (destroyed, reclaimed, or from another moatd)"
		                          : "no moat-session metadata");
		return NULL;
	}
	if (!token || strlen(token) != 64 || CRYPTO_memcmp(token, s->token_hex, 64) != 0) {
		pthread_mutex_unlock(&table_lock);
		moatd_log(MOATD_LOG_WARN, "session %s: refused a call with a wrong or missing token", idbuf);
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_PERMISSION_DENIED, MOAT_EPERM,
		                 "wrong or missing session token");
		return NULL;
	}
	s->refs++;
	pthread_mutex_unlock(&table_lock);
	return s;
}

static void track_call(session *s, stream_ref *r, moat_rpc_call *call)
{
	r->call = call;
	pthread_mutex_lock(&table_lock);
	r->next = s->calls;
	s->calls = r;
	if (s->removed)
		moat__rpc_call_cancel(call);
	pthread_mutex_unlock(&table_lock);
}

static void untrack_call(session *s, stream_ref *r)
{
	stream_ref **p;

	pthread_mutex_lock(&table_lock);
	for (p = &s->calls; *p; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			break;
		}
	}
	pthread_mutex_unlock(&table_lock);
}

/* ---- status helpers ---- */

static int status_for(int code)
{
	switch (code) {
	case MOAT_ENOENT: return MOAT_RPC_NOT_FOUND;
	case MOAT_EPERM:
	case MOAT_EKEY: return MOAT_RPC_PERMISSION_DENIED;
	case MOAT_ELIMIT: return MOAT_RPC_RESOURCE_EXHAUSTED;
	case MOAT_EINVAL: return MOAT_RPC_INVALID_ARGUMENT;
	case MOAT_EPROTO:
	case MOAT_EMEASUREMENT:
	case MOAT_EBADIMAGE:
	case MOAT_ENOENTRY:
	case MOAT_EABI:
	case MOAT_EINIT:
	case MOAT_ENOBACKEND: return MOAT_RPC_FAILED_PRECONDITION;
	default: return MOAT_RPC_INTERNAL;
	}
}

static void refuse(moat_rpc_call *call, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void refuse(moat_rpc_call *call, int code, const char *fmt, ...)
{
	char msg[384];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	moatd_log(MOATD_LOG_INFO, "%s refused: %s", moat__rpc_call_method(call), msg);
	moat__rpc_finish(call, NULL, 0, status_for(code), code, msg);
}

/* Receive the single request message of a unary call. */
static int recv_one(moat_rpc_call *call, uint8_t **buf, size_t *len)
{
	moat_rpc_status st;

	if (moat__rpc_recv(call, buf, len, &st) != 0)
		return -1;
	return 0;
}

/* ---- Health ---- */

static void handle_health(moat_rpc_call *call)
{
	/* grpc.health.v1.HealthCheckResponse{status: SERVING}: field 1, varint 1. */
	static const uint8_t serving[] = {0x08, 0x01};
	uint8_t *req = NULL;
	size_t len;

	if (recv_one(call, &req, &len) == 0)
		moat__rpc_finish(call, serving, sizeof(serving), MOAT_RPC_OK, 0, NULL);
	free(req);
}

/* ---- Upload ---- */

static int images_dir(char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/images", daemon_ctx->cfg.state_dir);

	if (n < 0 || (size_t)n >= cap)
		return -1;
	if (mkdir(out, 0700) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

static void handle_upload(moat_rpc_call *call)
{
	const moatd_config *cfg = &daemon_ctx->cfg;
	Moat__V1__UploadChunk *chunk = NULL;
	Moat__V1__UploadResponse resp = MOAT__V1__UPLOAD_RESPONSE__INIT;
	EVP_MD_CTX *md = NULL;
	uint8_t declared[32], got[32], *buf = NULL, *reply = NULL;
	char dir[4096], tmp[4200], final[4200], hex[65];
	size_t len, total = 0, expected = 0;
	unsigned int mdlen = 32;
	int fd = -1, first = 1, rc;
	moat_rpc_status st;

	tmp[0] = '\0';
	if (!cfg->allow_upload) {
		refuse(call, MOAT_EPERM, "uploads are off on this target (start moatd with --allow-upload)");
		return;
	}
	if (images_dir(dir, sizeof(dir)) < 0) {
		refuse(call, MOAT_EIO, "cannot create the image store under %s", cfg->state_dir);
		return;
	}
	md = EVP_MD_CTX_new();
	if (!md || !EVP_DigestInit_ex(md, EVP_sha256(), NULL)) {
		refuse(call, MOAT_ENOMEM, "out of memory");
		goto out;
	}
	for (;;) {
		rc = moat__rpc_recv(call, &buf, &len, &st);
		if (rc == MOAT_RPC_END && st.code == MOAT_RPC_OK)
			break;
		if (rc != 0)
			goto out; /* the host went away */
		chunk = moat__v1__upload_chunk__unpack(NULL, len, buf);
		free(buf);
		buf = NULL;
		if (!chunk) {
			refuse(call, MOAT_EPROTO, "malformed UploadChunk");
			goto out;
		}
		if (first) {
			first = 0;
			if (chunk->sha256.len != 32) {
				refuse(call, MOAT_EPROTO,
				       "the first UploadChunk must name the image's SHA-256");
				goto out;
			}
			memcpy(declared, chunk->sha256.data, 32);
			expected = (size_t)chunk->total_size;
			if (expected > cfg->max_image) {
				refuse(call, MOAT_ELIMIT,
				       "image of %zu bytes exceeds this target's limit of %zu bytes "
				       "(--max-image-bytes)",
				       expected, cfg->max_image);
				goto out;
			}
			hexs(hex, declared, 32);
			snprintf(tmp, sizeof(tmp), "%s/.upload-XXXXXX", dir);
			fd = mkstemp(tmp);
			if (fd < 0) {
				tmp[0] = '\0';
				refuse(call, MOAT_EIO, "cannot create a file in %s: %s", dir,
				       strerror(errno));
				goto out;
			}
		}
		if (total + chunk->data.len > expected || total + chunk->data.len > cfg->max_image) {
			refuse(call, MOAT_ELIMIT,
			       "upload is longer than its declared size or the --max-image-bytes limit");
			goto out;
		}
		EVP_DigestUpdate(md, chunk->data.data, chunk->data.len);
		if (chunk->data.len &&
		    write(fd, chunk->data.data, chunk->data.len) != (ssize_t)chunk->data.len) {
			refuse(call, MOAT_EIO, "cannot store the image: %s", strerror(errno));
			goto out;
		}
		total += chunk->data.len;
		moat__v1__upload_chunk__free_unpacked(chunk, NULL);
		chunk = NULL;
	}
	if (first) {
		refuse(call, MOAT_EPROTO, "empty upload");
		goto out;
	}
	EVP_DigestFinal_ex(md, got, &mdlen);
	if (total != expected || memcmp(got, declared, 32) != 0) {
		char ghex[65];

		hexs(ghex, got, 32);
		refuse(call, MOAT_EMEASUREMENT,
		       "uploaded image (%zu bytes) has SHA-256 %s, not the declared %s", total, ghex, hex);
		goto out;
	}
	close(fd);
	fd = -1;
	snprintf(final, sizeof(final), "%s/%s.so", dir, hex);
	if (rename(tmp, final) < 0) {
		refuse(call, MOAT_EIO, "cannot store the image: %s", strerror(errno));
		goto out;
	}
	tmp[0] = '\0';
	moatd_log(MOATD_LOG_INFO, "stored uploaded image %s (%zu bytes)", hex, total);
	resp.sha256.data = got;
	resp.sha256.len = 32;
	resp.size = total;
	reply = malloc(moat__v1__upload_response__get_packed_size(&resp) + 1);
	if (!reply) {
		refuse(call, MOAT_ENOMEM, "out of memory");
		goto out;
	}
	len = moat__v1__upload_response__pack(&resp, reply);
	moat__rpc_finish(call, reply, len, MOAT_RPC_OK, 0, NULL);
out:
	if (fd >= 0)
		close(fd);
	if (tmp[0])
		unlink(tmp);
	if (chunk)
		moat__v1__upload_chunk__free_unpacked(chunk, NULL);
	free(buf);
	free(reply);
	EVP_MD_CTX_free(md);
}

/* ---- exit-call forwarding ---- */

static int run_entry(session *s, const moat_frame_in *f, uint8_t **reply, size_t *reply_len);

/*
 * The enclave's exit calls (every one, the runtime's log/time/spawn too) go
 * to the host over the stream this thread serves; entry calls the host
 * makes meanwhile run here, nested.
 */
static int forward_exit(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	session *s = payload;
	stream_ctx *sc = current_stream;
	moat_frame f = {0};
	uint8_t *send = NULL, *recv = NULL;
	size_t send_len, recv_len, i;
	uint64_t seq;
	int rc;

	if (!sc) {
		/* An exit call outside any host call (init, finalizer): answer log and time here. */
		if (selector == MOAT_SELECTOR_LOG) {
			const void *d;
			size_t l;

			if (moat_msg_item(in, 0, &d, &l) == 0)
				moatd_log(MOATD_LOG_INFO, "session %s: [enclave] %.*s", s->id, (int)l,
				          (const char *)d);
			return 0;
		}
		if (selector == MOAT_SELECTOR_TIME) {
			struct timespec ts;

			clock_gettime(CLOCK_REALTIME, &ts);
			return out ? moat_msg_push_u64(out, (uint64_t)ts.tv_sec * 1000000000u +
			                                        (uint64_t)ts.tv_nsec)
			           : 0;
		}
		return MOAT_ENOHANDLER;
	}
	if (sc->broken)
		return MOAT_ETRANSPORT;
	seq = ++sc->seq;
	f.kind = MOAT_FRAME_CALL;
	f.seq = seq;
	f.selector = selector;
	f.items = in;
	if ((rc = moat__frame_encode(&f, 0, &send, &send_len)) < 0)
		return rc;
	for (;;) {
		moat_frame_in *fin = NULL;
		moat_rpc_status st;

		rc = moat__rpc_exchange(sc->call, send, send_len, &recv, &recv_len, 0, &st);
		free(send);
		send = NULL;
		if (rc != 0) {
			sc->broken = 1;
			return MOAT_ETRANSPORT;
		}
		rc = moat__frame_decode(&fin, recv, recv_len);
		free(recv);
		recv = NULL;
		if (rc < 0) {
			sc->broken = 1;
			moat__rpc_call_cancel(sc->call);
			return MOAT_EPROTO;
		}
		if (fin->kind == MOAT_FRAME_RETURN) {
			if (fin->seq != seq) {
				moat__frame_in_free(fin);
				sc->broken = 1;
				moat__rpc_call_cancel(sc->call);
				return MOAT_EPROTO;
			}
			rc = fin->code;
			for (i = 0; out && rc == 0 && i < moat_msg_count(fin->items); i++) {
				const void *d;
				size_t l;

				moat_msg_item(fin->items, i, &d, &l);
				rc = moat_msg_push(out, d, l);
			}
			moat__frame_in_free(fin);
			return rc;
		}
		/* A nested entry call from the host's exit handler. */
		rc = run_entry(s, fin, &send, &send_len);
		moat__frame_in_free(fin);
		if (rc < 0)
			return rc;
	}
}

/* Run one entry call frame and encode its Return in *reply. */
static int run_entry(session *s, const moat_frame_in *f, uint8_t **reply, size_t *reply_len)
{
	moat_frame r = {0};
	moat_msg *out = NULL;
	int rc;

	if ((rc = moat_msg_new(&out)) < 0)
		return rc;
	r.kind = MOAT_FRAME_RETURN;
	r.seq = f->seq;
	/* No new call once the session is going away: end_running_calls must see every one. */
	pthread_mutex_lock(&table_lock);
	if (!s->removed && !daemon_ctx->stop)
		s->busy++;
	else
		rc = MOAT_ECANCELED;
	pthread_mutex_unlock(&table_lock);
	if (rc < 0) {
		r.code = rc;
		r.origin = MOAT_ORIGIN_TARGET;
		r.message = "the session is being destroyed or the target is stopping";
	} else {
		rc = moat_enclave_call(s->enclave, f->selector, f->items, out);
		pthread_mutex_lock(&table_lock);
		s->busy--;
		pthread_mutex_unlock(&table_lock);
		r.code = rc;
		if (rc < 0) {
			const moat_error *e = moat_error_last();

			r.origin = (uint32_t)e->origin;
			r.message = e->message;
			r.enclave_code = e->enclave_code;
		} else {
			r.items = out;
		}
	}
	rc = moat__frame_encode(&r, 0, reply, reply_len);
	moat_msg_free(out);
	return rc;
}

/* ---- Attach ---- */

static void serve_lease(session *s, moat_rpc_call *call)
{
	moat_rpc_status st;

	pthread_mutex_lock(&table_lock);
	s->leased = 1;
	pthread_mutex_unlock(&table_lock);
	/*
	 * The lease carries no frames; it ends when the host destroys the
	 * session or goes away. Check it without blocking in gRPC: a thread
	 * blocked there would take part in polling and steal other streams'
	 * frames (see moat__rpc_server_run).
	 */
	pthread_mutex_lock(&table_lock);
	while (!s->removed && !daemon_ctx->stop) {
		struct timespec until;
		int open;

		pthread_mutex_unlock(&table_lock);
		open = moat__rpc_watch(call, &st) == 0;
		pthread_mutex_lock(&table_lock);
		if (!open)
			break;
		/* Destroy wakes us at once (session_remove_keep_locked); else look again in 100 ms. */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 100 * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		if (!s->removed)
			pthread_cond_timedwait(&s->idle, &table_lock, &until);
	}
	pthread_mutex_unlock(&table_lock);
	pthread_mutex_lock(&table_lock);
	if (!s->removed) {
		s->lease_broken = 1;
		clock_gettime(CLOCK_MONOTONIC, &s->since);
		moatd_log(MOATD_LOG_INFO, "session %s: host connection lost; reclaiming in %u ms", s->id,
		          daemon_ctx->cfg.grace_ms);
	}
	pthread_mutex_unlock(&table_lock);
	if (!moat__rpc_call_cancelled(call))
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_OK, 0, NULL);
}

/*
 * Destroy the session from its Attach stream, so the finalizer's exit calls
 * reach the host like any other. Answers with a Return frame.
 */
static void destroy_here(session *s, stream_ctx *sc, moat_rpc_call *call, uint64_t seq)
{
	moat_frame r = {0};
	moat_enclave *e = NULL;
	uint8_t *buf = NULL;
	size_t len;
	moat_rpc_status st;

	pthread_mutex_lock(&table_lock);
	if (session_remove_keep_locked(s, call))
		s->refs--;
	pthread_mutex_unlock(&table_lock);
	end_running_calls(s, "destroyed by the host");
	pthread_mutex_lock(&table_lock);
	wait_alone_locked(s);
	if (s->refs == 1) {
		e = s->enclave;
		s->enclave = NULL;
	}
	pthread_mutex_unlock(&table_lock);
	moatd_log(MOATD_LOG_INFO, "session %s: destroyed by the host", s->id);
	/* current_stream is this stream: the finalizer's exit calls go to the host. */
	moat_enclave_destroy(e);
	r.kind = MOAT_FRAME_RETURN;
	r.seq = seq;
	if (moat__frame_encode(&r, 0, &buf, &len) == 0 && !sc->broken)
		moat__rpc_exchange(call, buf, len, NULL, NULL, 0, &st);
	free(buf);
}

static void handle_attach(moat_rpc_call *call)
{
	const moatd_config *cfg = &daemon_ctx->cfg;
	const char *kind;
	stream_ref ref;
	stream_ctx sc = {0};
	session *s;
	uint8_t *send = NULL, *recv = NULL;
	size_t send_len = 0, recv_len;
	int rc, lease, counted = 0;

	s = session_auth(call);
	if (!s)
		return;
	kind = moat__rpc_call_md(call, "moat-stream");
	lease = kind && strcmp(kind, "lease") == 0;
	track_call(s, &ref, call);
	if (lease) {
		serve_lease(s, call);
		goto out;
	}
	pthread_mutex_lock(&table_lock);
	if (cfg->max_threads && s->streams >= cfg->max_threads) {
		pthread_mutex_unlock(&table_lock);
		refuse(call, MOAT_ELIMIT,
		       "session already has %u host threads attached (--max-threads-per-session %u)",
		       cfg->max_threads, cfg->max_threads);
		goto out;
	}
	s->streams++;
	counted = 1;
	pthread_mutex_unlock(&table_lock);

	sc.call = call;
	current_stream = &sc;
	for (;;) {
		moat_frame_in *f = NULL;
		moat_rpc_status st;

		rc = moat__rpc_exchange(call, send, send_len, &recv, &recv_len, 0, &st);
		free(send);
		send = NULL;
		if (rc != 0)
			break;
		rc = moat__frame_decode(&f, recv, recv_len);
		free(recv);
		recv = NULL;
		if (rc < 0 || f->kind != MOAT_FRAME_CALL) {
			moat__frame_in_free(f);
			refuse(call, MOAT_EPROTO, "expected a Call frame on the Attach stream");
			break;
		}
		if (f->selector == MOAT_PROTOCOL_SELECTOR_DESTROY) {
			uint64_t seq = f->seq;

			moat__frame_in_free(f);
			destroy_here(s, &sc, call, seq);
			break;
		}
		rc = run_entry(s, f, &send, &send_len);
		moat__frame_in_free(f);
		if (rc < 0 || sc.broken)
			break;
	}
	free(send);
	current_stream = NULL;
	if (!moat__rpc_call_cancelled(call))
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_OK, 0, NULL);
out:
	untrack_call(s, &ref);
	if (counted) {
		pthread_mutex_lock(&table_lock);
		s->streams--;
		pthread_mutex_unlock(&table_lock);
	}
	session_unref(s);
}

/* ---- Load ---- */

static int name_ok(const char *name)
{
	return name && *name && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0 &&
	       strlen(name) < 256;
}

static int image_path(char *out, size_t cap, const Moat__V1__LoadRequest *req, moat_rpc_call *call)
{
	const moatd_config *cfg = &daemon_ctx->cfg;
	char hex[65];

	if (req->image_case == MOAT__V1__LOAD_REQUEST__IMAGE_NAME) {
		if (!cfg->enclave_dir) {
			refuse(call, MOAT_ENOENT,
			       "this target has no enclave directory (start moatd with --enclave-dir)");
			return -1;
		}
		if (!name_ok(req->name)) {
			refuse(call, MOAT_EINVAL, "'%s' is not an image name (no directories allowed)",
			       req->name);
			return -1;
		}
		snprintf(out, cap, "%s/%s", cfg->enclave_dir, req->name);
		if (access(out, R_OK) != 0) {
			snprintf(out, cap, "%s/%s.so", cfg->enclave_dir, req->name);
			if (access(out, R_OK) != 0) {
				refuse(call, MOAT_ENOENT, "no image '%s' in this target's enclave directory",
				       req->name);
				return -1;
			}
		}
		return 0;
	}
	if (req->image_case == MOAT__V1__LOAD_REQUEST__IMAGE_SHA256 && req->sha256.len == 32) {
		hexs(hex, req->sha256.data, 32);
		snprintf(out, cap, "%s/images/%s.so", cfg->state_dir, hex);
		if (access(out, R_OK) != 0) {
			refuse(call, MOAT_ENOENT, "no uploaded image with SHA-256 %s", hex);
			return -1;
		}
		return 0;
	}
	refuse(call, MOAT_EINVAL, "LoadRequest names no image");
	return -1;
}

static void handle_load(moat_rpc_call *call)
{
	const moatd_config *cfg = &daemon_ctx->cfg;
	moat_load_options opts = MOAT_LOAD_OPTIONS_INIT;
	Moat__V1__LoadRequest *req = NULL;
	Moat__V1__LoadResponse resp = MOAT__V1__LOAD_RESPONSE__INIT;
	Moat__V1__LoadReport rep = MOAT__V1__LOAD_REPORT__INIT;
	moat_identity id;
	session *s = NULL;
	uint8_t *buf = NULL, *report = NULL, *reply = NULL, raw[16], token[32], sig[64];
	char path[4400];
	size_t len, rlen;
	struct timespec now;
	int rc;

	if (recv_one(call, &buf, &len) < 0)
		goto out;
	req = moat__v1__load_request__unpack(NULL, len, buf);
	if (!req) {
		refuse(call, MOAT_EPROTO, "malformed LoadRequest");
		goto out;
	}
	if (req->protocol_major != MOAT__V1__PROTOCOL_VERSION__PROTOCOL_MAJOR) {
		refuse(call, MOAT_EPROTO, "host speaks Moat protocol %u.%u; this target speaks %d.%d",
		       req->protocol_major, req->protocol_minor, MOAT__V1__PROTOCOL_VERSION__PROTOCOL_MAJOR,
		       PROTOCOL_MINOR);
		goto out;
	}
	if (req->expected_target_key.len &&
	    (req->expected_target_key.len != 32 ||
	     memcmp(req->expected_target_key.data, daemon_ctx->public_key, 32) != 0)) {
		refuse(call, MOAT_EKEY, "this target's identity key is not the one the host pinned");
		goto out;
	}
	if (req->expected_measurement.len && req->expected_measurement.len != 32) {
		refuse(call, MOAT_EINVAL, "expected_measurement must be 32 bytes");
		goto out;
	}
	pthread_mutex_lock(&table_lock);
	if (cfg->max_sessions && n_sessions >= cfg->max_sessions) {
		pthread_mutex_unlock(&table_lock);
		refuse(call, MOAT_ELIMIT, "this target already hosts %u sessions (--max-sessions %u)",
		       cfg->max_sessions, cfg->max_sessions);
		goto out;
	}
	n_sessions++; /* reserve the slot while loading */
	pthread_mutex_unlock(&table_lock);
	if (image_path(path, sizeof(path), req, call) < 0)
		goto unreserve;
	opts.backend = cfg->backend;
	opts.config = req->config.len ? req->config.data : NULL;
	opts.config_len = req->config.len;
	opts.expected_measurement = req->expected_measurement.len ? req->expected_measurement.data : NULL;
	/* The backend stops a call that runs out of time (proc kills the enclave's process). */
	opts.call_timeout_ms = req->call_timeout_ms;
	s = calloc(1, sizeof(*s));
	if (!s) {
		refuse(call, MOAT_ENOMEM, "out of memory");
		goto unreserve;
	}
	pthread_cond_init(&s->idle, NULL);
	rc = moat_enclave_load(&s->enclave, path, &opts);
	if (rc < 0) {
		refuse(call, rc, "%s", moat_error_last()->message);
		goto unreserve;
	}
	moat_enclave_set_fallback_handler(s->enclave, forward_exit, s);
	moat_enclave_identity(s->enclave, &id);
	if (RAND_bytes(raw, sizeof(raw)) != 1 || RAND_bytes(token, sizeof(token)) != 1) {
		refuse(call, MOAT_EIO, "no randomness for the session id");
		goto unreserve;
	}
	hexs(s->id, raw, sizeof(raw));
	hexs(s->token_hex, token, sizeof(token));

	clock_gettime(CLOCK_REALTIME, &now);
	rep.format = REPORT_FORMAT;
	rep.hardware_rooted = 0;
	rep.measurement.data = id.measurement;
	rep.measurement.len = 32;
	rep.session_id = s->id;
	rep.nonce = req->nonce;
	rep.target_key.data = daemon_ctx->public_key;
	rep.target_key.len = 32;
	rep.backend = (char *)id.backend;
	rep.isolation = id.isolation;
	rep.time_unix_ns = (uint64_t)now.tv_sec * 1000000000u + (uint64_t)now.tv_nsec;
	rlen = moat__v1__load_report__get_packed_size(&rep);
	report = malloc(rlen + 1);
	if (!report || moatd_sign(daemon_ctx, sig, report, moat__v1__load_report__pack(&rep, report)) < 0) {
		refuse(call, MOAT_EIO, "cannot sign the load report");
		goto unreserve;
	}
	resp.protocol_major = MOAT__V1__PROTOCOL_VERSION__PROTOCOL_MAJOR;
	resp.protocol_minor = PROTOCOL_MINOR;
	resp.session_id = s->id;
	resp.session_token.data = token;
	resp.session_token.len = sizeof(token);
	resp.measurement = rep.measurement;
	resp.target_key = rep.target_key;
	resp.report.data = report;
	resp.report.len = rlen;
	resp.report_signature.data = sig;
	resp.report_signature.len = 64;
	resp.isolation = id.isolation;
	resp.max_message_bytes = cfg->max_message;
	resp.max_threads = cfg->max_threads;
	reply = malloc(moat__v1__load_response__get_packed_size(&resp) + 1);
	if (!reply) {
		refuse(call, MOAT_ENOMEM, "out of memory");
		goto unreserve;
	}
	len = moat__v1__load_response__pack(&resp, reply);

	s->refs = 1;
	clock_gettime(CLOCK_MONOTONIC, &s->since);
	pthread_mutex_lock(&table_lock);
	s->next = table;
	table = s;
	pthread_mutex_unlock(&table_lock);
	moatd_log(MOATD_LOG_INFO, "session %s: loaded %s", s->id, path);
	if (moat__rpc_finish(call, reply, len, MOAT_RPC_OK, 0, NULL) < 0)
		moatd_log(MOATD_LOG_WARN,
		          "session %s: the host left before the load answer; reclaiming later", s->id);
	s = NULL;
	goto out;

unreserve:
	pthread_mutex_lock(&table_lock);
	n_sessions--;
	pthread_mutex_unlock(&table_lock);
out:
	if (s) {
		moat_enclave_destroy(s->enclave);
		pthread_cond_destroy(&s->idle);
		free(s);
	}
	OPENSSL_cleanse(token, sizeof(token));
	if (req)
		moat__v1__load_request__free_unpacked(req, NULL);
	free(buf);
	free(report);
	free(reply);
}

/* ---- Destroy ---- */

static void handle_destroy(moat_rpc_call *call)
{
	static const uint8_t empty[1];
	uint8_t *buf = NULL;
	size_t len;
	session *s;
	int drop;

	if (recv_one(call, &buf, &len) < 0)
		goto out;
	s = session_auth(call);
	if (!s)
		goto out;
	pthread_mutex_lock(&table_lock);
	drop = session_remove_locked(s);
	if (drop)
		s->refs--;
	pthread_mutex_unlock(&table_lock);
	end_running_calls(s, "destroyed by the host");
	pthread_mutex_lock(&table_lock);
	/* Let the session's streams end so its enclave is gone when the host hears back. */
	wait_alone_locked(s);
	pthread_mutex_unlock(&table_lock);
	moatd_log(MOATD_LOG_INFO, "session %s: destroyed by the host", s->id);
	session_unref(s);
	moat__rpc_finish(call, empty, 0, MOAT_RPC_OK, 0, NULL);
out:
	free(buf);
}

void moatd_handle_call(void *ctx, moat_rpc_call *call)
{
	const char *m = moat__rpc_call_method(call);

	if (strcmp(m, "/moat.v1.Target/Attach") == 0)
		handle_attach(call);
	else if (strcmp(m, "/moat.v1.Target/Load") == 0)
		handle_load(call);
	else if (strcmp(m, "/moat.v1.Target/Upload") == 0)
		handle_upload(call);
	else if (strcmp(m, "/moat.v1.Target/Destroy") == 0)
		handle_destroy(call);
	else if (strcmp(m, "/grpc.health.v1.Health/Check") == 0)
		handle_health(call);
	else
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_UNIMPLEMENTED, 0, "unknown method");
	moat__rpc_call_free(call);
}

/* Reclaim sessions whose host went away, or that were never leased. */
void moatd_tick(void *ctx)
{
	moatd *d = ctx;
	session *s, *next, *drop = NULL;

	pthread_mutex_lock(&table_lock);
	for (s = table; s; s = next) {
		next = s->next;
		if ((s->lease_broken && elapsed_ms(&s->since) >= d->cfg.grace_ms) ||
		    (!s->leased && elapsed_ms(&s->since) >= 10000.0 + d->cfg.grace_ms)) {
			moatd_log(MOATD_LOG_INFO, "session %s: reclaimed (host gone)", s->id);
			if (session_remove_locked(s)) {
				s->next = drop;
				drop = s;
			}
		}
	}
	pthread_mutex_unlock(&table_lock);
	while (drop) {
		next = drop->next;
		end_running_calls(drop, "reclaimed");
		session_unref(drop);
		drop = next;
	}
}

void moatd_target_stopping(moatd *d)
{
	session *s;

	for (;;) {
		/* One session at a time: end_running_calls needs a reference and no lock. */
		pthread_mutex_lock(&table_lock);
		for (s = table; s; s = s->next)
			if (s->busy && !s->stopped)
				break;
		if (s) {
			s->stopped = 1;
			s->refs++;
		}
		pthread_mutex_unlock(&table_lock);
		if (!s)
			break;
		end_running_calls(s, "moatd stops");
		session_unref(s);
	}
	(void)d;
}

void moatd_target_shutdown(moatd *d)
{
	session *s;

	for (;;) {
		pthread_mutex_lock(&table_lock);
		s = table;
		if (s && !session_remove_locked(s))
			s = NULL;
		pthread_mutex_unlock(&table_lock);
		if (!s)
			break;
		end_running_calls(s, "moatd stops");
		session_unref(s);
	}
	(void)d;
}
