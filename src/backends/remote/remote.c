/*
 * The remote backend (host agent): the enclave runs inside moatd, reached
 * over gRPC. Load uploads the image (or names one the target has), checks
 * the signed load report and opens the session's lease stream. Every host
 * thread that calls gets its own Attach stream on first use and drives it
 * itself: it sends the Call frame, waits on the stream's own completion
 * queue, answers the enclave's exit calls (which may nest entry calls on
 * the same stream) and returns when the Return arrives. No other thread
 * touches a call on the hot path.
 */
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "backends/remote/remote.h"
#include "codec/conv.h"
#include "codec/protocol.h"
#include "core/chancache.h"
#include "core/internal.h"
#include "moat/v1/target.pb-c.h"
#include "rpc/rpc.h"

/* Well under the smallest message limit moatd accepts (64 KiB). */
#define UPLOAD_CHUNK           (32u << 10)
#define LOAD_TIMEOUT_MS        60000u
#define LOCAL_START_TIMEOUT_MS 10000u
/*
 * The target stops a call that runs out of call_timeout_ms and answers
 * MOAT_ETIMEDOUT; the host waits this much longer before it gives up by
 * itself (a target that froze, or whose backend cannot stop calls).
 */
#define CALL_TIMEOUT_MARGIN_MS 2000u
/* Destroy: each answer of a live target on the Attach stream (finalizer bounded by the target, 5 s). */
#define DESTROY_WAIT_MS (5000u + CALL_TIMEOUT_MARGIN_MS)
/* Destroy: the unary fallback to a target that answers (it ends running calls at once)... */
#define DESTROY_RPC_MS 3000u
/* ... and one short try when the target is known lost (it reclaims the session by itself). */
#define DESTROY_LOST_MS 1000u

typedef struct remote_backend remote_backend;

/* One host thread's Attach stream to one session, used by that thread alone (core/chancache.h). */
typedef struct stream {
	moat_chan link; /* first: the cache's */
	remote_backend *owner;
	moat_rpc_call *call;
	moat_conv conv;     /* the Call/Return exchange; broken once the stream ended */
	unsigned int depth; /* entry calls of this thread in progress on the stream */
	/* The engine's transport: the frame to send with the next receive, and how the stream ended. */
	uint8_t *pending;
	size_t pending_len;
	int rpc_rc;
	moat_rpc_status st;
} stream;

struct remote_backend {
	moat_backend parent;
	moat_chan_owner streams; /* every host thread's Attach stream of this session */
	moat_exit_dispatch exit_dispatch;
	void *exit_ctx;
	char where[320]; /* what to name in messages: the URI */
	int tls;
	/*
	 * One connection per session: every host thread's stream shares it, so
	 * one read brings the frames of several streams (see src/rpc/init.c).
	 */
	moat_rpc_channel *ch;
	const char *md[7];
	char session_id[64];
	char token_hex[65];
	unsigned int call_timeout_ms;
	unsigned int wait_ms; /* how long a call waits for the target: call_timeout_ms plus a margin */
	uint64_t max_message;

	moat_rpc_call *lease;
	pthread_t watcher;
	int has_watcher;
	unsigned int keepalive_ms;
	pthread_mutex_t watch_lock;
	pthread_cond_t watch_wake; /* CLOCK_MONOTONIC */
	atomic_int closing;
	atomic_int session_ended; /* remote_abort destroyed the session on the target */

	int has_local;
	moat_local_target local;
	int rpc_inited;
};

static void stream_free(stream *s)
{
	moat__rpc_call_free(s->call);
	free(s->pending);
	free(s);
}

/* ---- the stream's transport and the enclave's exit calls, for the conversation engine ---- */

/* Encode f now; it leaves with the next receive, in the same gRPC batch. */
static int stream_send(void *io, const moat_frame *f)
{
	stream *s = io;
	uint8_t *buf;
	size_t len;

	if (moat__frame_encode(f, 0, &buf, &len) < 0)
		return MOAT_ENOMEM;
	if (s->owner->max_message && len > s->owner->max_message) {
		free(buf);
		return MOAT_ELIMIT;
	}
	free(s->pending);
	s->pending = buf;
	s->pending_len = len;
	return 0;
}

static int stream_recv(void *io, moat_frame_in **out, int64_t deadline_ns)
{
	stream *s = io;
	uint8_t *recv = NULL;
	size_t recv_len;
	unsigned int wait_ms = 0;
	int rc;

	if (deadline_ns) {
		int64_t left = deadline_ns - moat__now_ns();

		if (left <= 0)
			return MOAT_ETIMEDOUT;
		wait_ms = (unsigned int)((left + 999999) / 1000000);
	}
	rc = moat__rpc_exchange(s->call, s->pending, s->pending_len, &recv, &recv_len, wait_ms, &s->st);
	free(s->pending);
	s->pending = NULL;
	if (rc != 0) {
		s->rpc_rc = rc;
		return rc == MOAT_RPC_TIMEOUT ? MOAT_ETIMEDOUT : MOAT_ETRANSPORT;
	}
	rc = moat__frame_decode(out, recv, recv_len);
	free(recv);
	return rc;
}

/* An exit call: answered on this thread, like sim does. */
static void stream_serve(void *ctx, const moat_frame_in *f, moat_msg *out, moat_conv_result *res)
{
	remote_backend *r = ctx;

	res->code = r->exit_dispatch(r->exit_ctx, f->selector, f->items, out);
}

static const moat_conv_ops stream_ops = {stream_send, stream_recv, stream_serve};

/* The cache's release of a stream (the target ends its worker). */
static void stream_release(moat_chan *link)
{
	stream_free((stream *)link);
}

/* ---- errors ---- */

/* Record the handle's fatal error; the first one stays (an abort, a timeout, a lost target). */
static void mark_dead(remote_backend *r, int code)
{
	int none = 0;

	atomic_compare_exchange_strong((_Atomic int *)&r->parent.dead, &none, code);
}

/* The likeliest cause of a failed connection, from what gRPC said. */
static const char *transport_hint(const remote_backend *r, const char *detail)
{
	if (r->has_local)
		return "the private moatd went away";
	if (!r->tls)
		return "is moatd running and reachable there (and not serving TLS only)?";
	if (strstr(detail, "certificate verify failed"))
		return "TLS: the target's certificate is not signed by tls_ca_file (or the system roots)";
	if (strstr(detail, "is not in peer certificate"))
		return "TLS: the name checked (tls_server_name, else the URI's host) is not in the target's "
		       "certificate";
	if (strstr(detail, "Socket closed") || strstr(detail, "Connection reset"))
		return "TLS: the target closed the handshake; it probably requires a client certificate "
		       "(set tls_cert_file and tls_key_file to one its --tls-client-ca signed)";
	return "is moatd running there with TLS? If so the TLS handshake failed: check tls_ca_file, "
	       "tls_server_name "
	       "and, when the target requires client certificates, tls_cert_file/tls_key_file";
}

/* Turn how a call ended into a Moat error. Marks the handle dead when the target is gone. */
static int status_error(remote_backend *r, const moat_rpc_status *st, const char *what)
{
	int code;

	if (st->moat_code < 0) {
		code = st->moat_code;
		if (code == MOAT_EINIT || code == MOAT_EBADIMAGE || code == MOAT_ENOENTRY ||
		    code == MOAT_EABI)
			return moat_error_set(code, MOAT_ORIGIN_ENCLAVE, "%s: %s", what, st->message);
		return moat_error_set(code, MOAT_ORIGIN_TARGET, "%s refused by the target: %s", what,
		                      st->message);
	}
	switch (st->code) {
	case MOAT_RPC_PERMISSION_DENIED:
	case MOAT_RPC_UNAUTHENTICATED:
		return moat_error_set(MOAT_EPERM, MOAT_ORIGIN_TARGET, "%s refused by the target: %s", what,
		                      st->message);
	case MOAT_RPC_RESOURCE_EXHAUSTED:
		return moat_error_set(MOAT_ELIMIT, MOAT_ORIGIN_TARGET, "%s refused by the target: %s", what,
		                      st->message);
	case MOAT_RPC_DEADLINE_EXCEEDED:
		return moat_error_set(MOAT_ETIMEDOUT, MOAT_ORIGIN_TRANSPORT, "%s timed out: %s", what,
		                      st->message);
	case MOAT_RPC_UNIMPLEMENTED:
		return moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TARGET,
		                      "%s: %s does not speak the Moat protocol (%s)", what, r->where,
		                      st->message);
	case MOAT_RPC_UNAVAILABLE:
	case MOAT_RPC_CANCELLED:
	case MOAT_RPC_UNKNOWN:
	case MOAT_RPC_INTERNAL:
		mark_dead(r, MOAT_ETRANSPORT);
		return moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		                      "%s: connection to %s failed or was lost (%s; %s)", what, r->where,
		                      st->message[0] ? st->message : "no detail",
		                      transport_hint(r, st->message));
	default:
		return moat_error_set(MOAT_ETARGET, MOAT_ORIGIN_TARGET,
		                      "%s refused by the target (gRPC status %d): %s", what, st->code,
		                      st->message);
	}
}

/* ---- streams ---- */

static int stream_open(stream **out, remote_backend *r)
{
	stream *s = calloc(1, sizeof(*s));
	int rc;

	*out = NULL;
	if (!s)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	s->owner = r;
	moat__conv_init(&s->conv, &stream_ops, s, r);
	rc = moat__rpc_stream_open(&s->call, r->ch, "/moat.v1.Target/Attach", r->md);
	if (rc < 0) {
		free(s);
		return rc;
	}
	if (moat__chan_add(&r->streams, &s->link) < 0) {
		stream_free(s);
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	}
	/* remote_abort cancels the streams it finds in the cache; one added after it looked is cancelled
	 * here. */
	if (atomic_load((_Atomic int *)&r->parent.dead) == MOAT_ECANCELED)
		moat__rpc_call_cancel(s->call);
	*out = s;
	return 0;
}

/* Record why the stream failed a call: the engine's code, with the stream's own detail. */
static int stream_failed(remote_backend *r, stream *s, int rc, uint64_t selector)
{
	char what[64];

	snprintf(what, sizeof(what), "entry call %llu", (unsigned long long)selector);
	if (rc == MOAT_ELIMIT)
		return moat_error_set(MOAT_ELIMIT, MOAT_ORIGIN_TARGET,
		                      "%s: the message exceeds the target's limit of %llu bytes "
		                      "(moatd --max-message-bytes)",
		                      what, (unsigned long long)r->max_message);
	if (rc == MOAT_ENOMEM && !s->conv.broken)
		return moat_error_set(rc, MOAT_ORIGIN_API, "out of memory");
	moat__rpc_call_cancel(s->call);
	if (atomic_load((_Atomic int *)&r->parent.dead) == MOAT_ECANCELED)
		return moat_error_set(MOAT_ECANCELED, MOAT_ORIGIN_API,
		                      "%s: the enclave was stopped by moat_enclave_abort()", what);
	if (rc == MOAT_ETIMEDOUT) {
		/* The target should have stopped the call itself: it is frozen or cannot stop calls. */
		mark_dead(r, MOAT_ETIMEDOUT);
		return moat_error_set(
		    MOAT_ETIMEDOUT, MOAT_ORIGIN_TRANSPORT,
		    "%s: the target did not answer within %u ms (call_timeout_ms %u ms plus "
		    "a margin); the handle is no longer usable",
		    what, r->wait_ms, r->call_timeout_ms);
	}
	if (rc == MOAT_EPROTO)
		return moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TRANSPORT, "%s: the target sent %s", what,
		                      s->conv.why ? s->conv.why : "a malformed frame");
	if (s->rpc_rc == MOAT_RPC_END)
		return status_error(r, &s->st, what);
	if (s->rpc_rc < 0)
		return moat_error_set(s->rpc_rc, MOAT_ORIGIN_TRANSPORT, "%s: the stream to %s failed", what,
		                      r->where);
	return moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
	                      "%s: this thread's stream to the target ended in a nested call", what);
}

/* Make an entry call on s; the engine answers the enclave's exit calls on this thread meanwhile. */
static int drive(remote_backend *r, stream *s, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	moat_frame_in *fin = NULL;
	int rc = moat__conv_call(&s->conv, selector, in, r->wait_ms, &fin);

	if (rc < 0)
		return stream_failed(r, s, rc, selector);
	rc = fin->code;
	if (rc == 0) {
		rc = out ? moat__msg_append(out, fin->items) : 0;
		if (rc < 0)
			moat_error_set(rc, MOAT_ORIGIN_API, "out of memory");
	} else if (fin->origin == MOAT_ORIGIN_ENCLAVE && (rc == MOAT_ENOSELECTOR || rc == MOAT_EHANDLER)) {
		moat__error_from_enclave(rc, selector, fin->enclave_code, NULL);
	} else if (rc == MOAT_ETIMEDOUT && r->call_timeout_ms) {
		/* The target stopped the enclave: as on proc, the handle is dead now. */
		mark_dead(r, rc);
		moat_error_set(rc, fin->origin ? (moat_origin)fin->origin : MOAT_ORIGIN_TARGET,
		               "entry call %llu: call_timeout_ms (%u ms) ran out on the target: %s",
		               (unsigned long long)selector, r->call_timeout_ms, fin->message);
	} else {
		moat_error_set(rc, fin->origin ? (moat_origin)fin->origin : MOAT_ORIGIN_TARGET, "%s",
		               fin->message);
		moat__error_set_enclave_code(fin->enclave_code);
		if (moat__code_is_fatal(rc))
			mark_dead(r, rc);
	}
	moat__frame_in_free(fin);
	return rc;
}

static int remote_call(moat_backend *b, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	remote_backend *r = (remote_backend *)b;
	stream *s = (stream *)moat__chan_find(&r->streams);
	int rc;

	if (s && s->conv.broken && s->depth == 0) {
		moat__chan_drop(&s->link);
		s = NULL;
	}
	if (!s && (rc = stream_open(&s, r)) < 0)
		return rc;
	s->depth++;
	rc = drive(r, s, selector, in, out);
	s->depth--;
	return rc;
}

/* ---- load ---- */

/*
 * The lease watcher polls the connection a few times per keepalive period
 * without blocking in gRPC: something must read keepalive acks while no
 * host thread calls (else the keepalive watchdog closes an idle
 * connection), and it notices a lost target while idle. It never waits
 * inside gRPC, so it never becomes the poller through which a calling
 * thread's reply would be handed over (which cost ~15 us per call).
 */
static void *watch_lease(void *arg)
{
	remote_backend *r = arg;
	moat_rpc_status st;
	struct timespec until;
	unsigned int period = r->keepalive_ms / 4;

	if (period < 20)
		period = 20;
	if (period > 1000)
		period = 1000;
	pthread_mutex_lock(&r->watch_lock);
	while (!atomic_load(&r->closing)) {
		pthread_mutex_unlock(&r->watch_lock);
		if (moat__rpc_watch(r->lease, &st) != 0) {
			if (!atomic_load(&r->closing))
				mark_dead(r, MOAT_ETRANSPORT);
			pthread_mutex_lock(&r->watch_lock);
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += (long)period * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_mutex_lock(&r->watch_lock);
		if (!atomic_load(&r->closing))
			pthread_cond_timedwait(&r->watch_wake, &r->watch_lock, &until);
	}
	pthread_mutex_unlock(&r->watch_lock);
	return NULL;
}

static int upload(remote_backend *r, const uint8_t *image, size_t len, const uint8_t sha[32])
{
	Moat__V1__UploadChunk c = MOAT__V1__UPLOAD_CHUNK__INIT;
	moat_rpc_call *call = NULL;
	moat_rpc_status st;
	uint8_t *buf = NULL;
	size_t off = 0, n;
	int rc;

	if ((rc = moat__rpc_stream_open(&call, r->ch, "/moat.v1.Target/Upload", NULL)) < 0)
		return rc;
	do {
		size_t chunk = len - off < UPLOAD_CHUNK ? len - off : UPLOAD_CHUNK;

		moat__v1__upload_chunk__init(&c);
		if (off == 0) {
			c.sha256.data = (uint8_t *)sha;
			c.sha256.len = 32;
			c.total_size = len;
		}
		c.data.data = (uint8_t *)image + off;
		c.data.len = chunk;
		n = moat__v1__upload_chunk__get_packed_size(&c);
		buf = malloc(n + 1);
		if (!buf) {
			rc = moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
			goto out;
		}
		moat__v1__upload_chunk__pack(&c, buf);
		rc = moat__rpc_exchange(call, buf, n, NULL, NULL, LOAD_TIMEOUT_MS, &st);
		free(buf);
		buf = NULL;
		if (rc != 0)
			break; /* the target ended the upload; its status says why */
		off += chunk;
	} while (off < len);
	rc = moat__rpc_stream_finish(call, &buf, &n, LOAD_TIMEOUT_MS, &st);
	if (rc != MOAT_RPC_OK) {
		rc = rc < 0 ? rc : status_error(r, &st, "image upload");
		goto out;
	}
	rc = 0;
out:
	free(buf);
	moat__rpc_call_free(call);
	return rc;
}

/* Check the signed load report against what the host asked for and what the target answered. */
static int verify_report(const Moat__V1__LoadResponse *resp, const uint8_t nonce[32])
{
	Moat__V1__LoadReport *rep = NULL;
	EVP_PKEY *key = NULL;
	EVP_MD_CTX *c = NULL;
	int ok = 0;

	if (resp->target_key.len != 32 || resp->report_signature.len != 64 || resp->measurement.len != 32)
		goto out;
	key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, resp->target_key.data, 32);
	c = EVP_MD_CTX_new();
	if (!key || !c || EVP_DigestVerifyInit(c, NULL, NULL, NULL, key) <= 0 ||
	    EVP_DigestVerify(c, resp->report_signature.data, 64, resp->report.data, resp->report.len) != 1)
		goto out;
	rep = moat__v1__load_report__unpack(NULL, resp->report.len, resp->report.data);
	if (!rep || !rep->format || strcmp(rep->format, MOAT_REPORT_FORMAT) != 0)
		goto out;
	ok = rep->nonce.len == 32 && memcmp(rep->nonce.data, nonce, 32) == 0 && rep->measurement.len == 32 &&
	     memcmp(rep->measurement.data, resp->measurement.data, 32) == 0 && rep->target_key.len == 32 &&
	     memcmp(rep->target_key.data, resp->target_key.data, 32) == 0 && rep->session_id &&
	     strcmp(rep->session_id, resp->session_id) == 0;
out:
	if (rep)
		moat__v1__load_report__free_unpacked(rep, NULL);
	EVP_MD_CTX_free(c);
	EVP_PKEY_free(key);
	return ok;
}

static void remote_close(moat_backend *b);

static int load(remote_backend *r, const moat_backend_params *params)
{
	const moat_load_options *o = params->options;
	Moat__V1__LoadRequest req = MOAT__V1__LOAD_REQUEST__INIT;
	Moat__V1__LoadResponse *resp = NULL;
	moat_rpc_status st;
	uint8_t *image = NULL, *buf = NULL, *reply = NULL, sha[32], nonce[32];
	size_t image_len = 0, n, reply_len;
	int rc;

	if (!(o->flags & MOAT_LOAD_BY_NAME)) {
		if ((rc = moat__read_file(&image, &image_len, params->path)) < 0)
			return rc;
		moat__sha256(sha, image, image_len);
		rc = upload(r, image, image_len, sha);
		free(image);
		if (rc < 0)
			return rc;
		req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_SHA256;
		req.sha256.data = sha;
		req.sha256.len = 32;
	} else {
		req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_NAME;
		req.name = (char *)params->path;
	}
	if (RAND_bytes(nonce, sizeof(nonce)) != 1)
		return moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "no randomness for the load nonce");
	req.protocol_major = MOAT__V1__PROTOCOL_VERSION__PROTOCOL_MAJOR;
	req.protocol_minor = MOAT_PROTOCOL_MINOR;
	req.config.data = (uint8_t *)o->config;
	req.config.len = o->config_len;
	if (o->expected_measurement) {
		req.expected_measurement.data = (uint8_t *)o->expected_measurement;
		req.expected_measurement.len = MOAT_MEASUREMENT_LEN;
	}
	if (o->target_key) {
		req.expected_target_key.data = (uint8_t *)o->target_key;
		req.expected_target_key.len = MOAT_TARGET_KEY_LEN;
	}
	req.nonce.data = nonce;
	req.nonce.len = sizeof(nonce);
	req.call_timeout_ms = o->call_timeout_ms;
	n = moat__v1__load_request__get_packed_size(&req);
	buf = malloc(n + 1);
	if (!buf)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	moat__v1__load_request__pack(&req, buf);
	rc = moat__rpc_unary(r->ch, "/moat.v1.Target/Load", NULL, buf, n, &reply, &reply_len, LOAD_TIMEOUT_MS,
	                     &st);
	free(buf);
	if (rc != MOAT_RPC_OK) {
		if (rc > 0)
			rc = status_error(r, &st, "load");
		goto out;
	}
	resp = moat__v1__load_response__unpack(NULL, reply_len, reply);
	if (!resp || !resp->session_id || resp->session_token.len != 32) {
		rc = moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TARGET, "malformed LoadResponse from %s",
		                    r->where);
		goto out;
	}
	snprintf(r->session_id, sizeof(r->session_id), "%s", resp->session_id);
	moat__hex(r->token_hex, resp->session_token.data, 32);
	if (resp->protocol_major != MOAT__V1__PROTOCOL_VERSION__PROTOCOL_MAJOR) {
		rc = moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TARGET,
		                    "the target speaks Moat protocol %u, this host %d", resp->protocol_major,
		                    MOAT__V1__PROTOCOL_VERSION__PROTOCOL_MAJOR);
		goto out;
	}
	if (o->target_key &&
	    (resp->target_key.len != 32 || memcmp(resp->target_key.data, o->target_key, 32) != 0)) {
		rc = moat_error_set(MOAT_EKEY, MOAT_ORIGIN_TARGET,
		                    "the target's identity key is not the pinned one");
		goto out;
	}
	if (!verify_report(resp, nonce)) {
		rc = moat_error_set(MOAT_EKEY, MOAT_ORIGIN_TARGET,
		                    "the target's load report did not verify against its key (signature, "
		                    "nonce or measurement)");
		goto out;
	}
	if ((o->expected_measurement && memcmp(resp->measurement.data, o->expected_measurement, 32) != 0) ||
	    (!(o->flags & MOAT_LOAD_BY_NAME) && memcmp(resp->measurement.data, sha, 32) != 0)) {
		rc = moat_error_set(
		    MOAT_EMEASUREMENT, MOAT_ORIGIN_TARGET,
		    "the target loaded an image whose measurement differs from the expected one");
		goto out;
	}
	memcpy(r->parent.measurement, resp->measurement.data, 32);
	memcpy(r->parent.target_key, resp->target_key.data, 32);
	r->parent.has_target_key = 1;
	r->parent.isolation = MOAT_ISOLATION_REMOTE | resp->isolation;
	r->max_message = resp->max_message_bytes;
	rc = 0;
out:
	if (resp)
		moat__v1__load_response__free_unpacked(resp, NULL);
	free(reply);
	return rc;
}

static int remote_open(moat_backend **out, const moat_backend_params *params)
{
	const moat_load_options *o = params->options;
	moat_rpc_channel_opts co = {0};
	const char *uri = params->uri;
	remote_backend *r;
	char target[320];
	int rc;

	*out = NULL;
	r = calloc(1, sizeof(*r));
	if (!r)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	r->parent.vtable = &moat__backend_remote;
	moat__chan_owner_init(&r->streams, stream_release);
	r->exit_dispatch = params->exit_dispatch;
	r->exit_ctx = params->exit_ctx;
	r->call_timeout_ms = o->call_timeout_ms;
	r->wait_ms = r->call_timeout_ms == 0 ? 0
	             : r->call_timeout_ms > UINT_MAX - CALL_TIMEOUT_MARGIN_MS
	                 ? UINT_MAX
	                 : r->call_timeout_ms + CALL_TIMEOUT_MARGIN_MS;
	r->keepalive_ms = o->keepalive_ms;
	if (!r->keepalive_ms) {
		/* $MOAT_KEEPALIVE_MS changes the default, e.g. for hosts slowed down by valgrind. */
		const char *env = getenv("MOAT_KEEPALIVE_MS");
		unsigned long v = env ? strtoul(env, NULL, 10) : 0;

		r->keepalive_ms = v > 0 && v < 3600000 ? (unsigned int)v : 1000;
	}
	pthread_mutex_init(&r->watch_lock, NULL);
	{
		pthread_condattr_t ca;

		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&r->watch_wake, &ca);
		pthread_condattr_destroy(&ca);
	}
	snprintf(r->where, sizeof(r->where), "%s", uri);

	if (strcmp(params->scheme, "local") == 0) {
		if (o->flags & MOAT_LOAD_BY_NAME) {
			rc = moat_error_set(
			    MOAT_EINVAL, MOAT_ORIGIN_API,
			    "the local backend uploads the image; MOAT_LOAD_BY_NAME needs a running moatd");
			goto fail;
		}
		if ((rc = moat__local_target_start(&r->local, LOCAL_START_TIMEOUT_MS)) < 0)
			goto fail;
		r->has_local = 1;
		snprintf(target, sizeof(target), "%s", r->local.target);
	} else {
		/* The core split the URI: grpc and grpcs name host:port, unix a socket path. */
		r->tls = strcmp(params->scheme, "grpcs") == 0;
		snprintf(target, sizeof(target), "%s%s", strcmp(params->scheme, "unix") == 0 ? "unix:" : "",
		         params->address);
	}
	if (!r->tls && (o->tls_ca_file || o->tls_cert_file || o->tls_key_file)) {
		rc = moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		                    "TLS files are set but '%s' is not a grpcs:// URI", uri);
		goto fail;
	}
	moat__rpc_init();
	r->rpc_inited = 1;
	co.target = target;
	co.tls = r->tls;
	co.ca_file = o->tls_ca_file;
	co.cert_file = o->tls_cert_file;
	co.key_file = o->tls_key_file;
	co.server_name = o->tls_server_name;
	co.keepalive_ms = r->keepalive_ms;
	/* Generous on a slow machine (valgrind runs raise the keepalive period), bounded everywhere. */
	co.connect_timeout_ms = r->keepalive_ms > 1250 ? 4 * r->keepalive_ms : 5000;
	co.max_receive_bytes = -1;
	if ((rc = moat__rpc_channel_open(&r->ch, &co)) < 0)
		goto fail;
	if ((rc = load(r, params)) < 0)
		goto fail;

	r->md[0] = MOAT_MD_SESSION;
	r->md[1] = r->session_id;
	r->md[2] = MOAT_MD_TOKEN;
	r->md[3] = r->token_hex;
	r->md[4] = NULL;
	{
		const char *lease_md[] = {MOAT_MD_SESSION, r->session_id, MOAT_MD_TOKEN, r->token_hex,
		                          MOAT_MD_STREAM,  MOAT_MD_LEASE, NULL};

		if ((rc = moat__rpc_stream_open(&r->lease, r->ch, "/moat.v1.Target/Attach", lease_md)) < 0)
			goto fail;
	}
	if (pthread_create(&r->watcher, NULL, watch_lease, r) != 0) {
		rc = moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "cannot start the lease thread");
		goto fail;
	}
	r->has_watcher = 1;
	*out = &r->parent;
	return 0;

fail : {
	moat_error saved = *moat_error_last();
	char msg[512];

	snprintf(msg, sizeof(msg), "%s", saved.message);
	remote_close(&r->parent);
	moat_error_set(saved.code, saved.origin, "%s", msg);
}
	return rc;
}

/*
 * End the session on the target. Done from an Attach stream of this thread
 * so the enclave's finalizer can make exit calls to the host as usual; the
 * unary Destroy is the fallback (dead enclave, thread limit reached). Every
 * wait is bounded, whatever state the target is in: a frozen or unreachable
 * target costs a few seconds, not a connection timeout.
 */
static void destroy_session(remote_backend *r)
{
	const char *md[] = {MOAT_MD_SESSION, r->session_id, MOAT_MD_TOKEN, r->token_hex, NULL};
	const int dead = atomic_load((_Atomic int *)&r->parent.dead);
	const moat_error *last = moat_error_last();
	int saved_code = last->code, lost = dead == MOAT_ETRANSPORT;
	moat_origin saved_origin = last->origin;
	char saved[512];
	moat_rpc_status st;
	uint8_t *reply = NULL;
	size_t len;
	stream *s;

	snprintf(saved, sizeof(saved), "%s", last->message);
	if (atomic_load(&r->session_ended))
		goto out;
	if (!dead && r->md[0] && (s = calloc(1, sizeof(*s))) != NULL) {
		int rc = -1;

		s->owner = r;
		s->depth = 1;
		moat__conv_init(&s->conv, &stream_ops, s, r);
		if (moat__rpc_stream_open(&s->call, r->ch, "/moat.v1.Target/Attach", r->md) == 0) {
			/* The target bounds the finalizer (call_timeout_ms, else 5 s on proc). */
			if (r->call_timeout_ms == 0)
				r->wait_ms = DESTROY_WAIT_MS;
			rc = drive(r, s, MOAT_PROTOCOL_SELECTOR_DESTROY, NULL, NULL);
		}
		stream_free(s);
		if (rc == 0)
			goto out;
		/* A target that did not answer on the stream will not answer a Destroy either: try briefly.
		 */
		lost = rc == MOAT_ETRANSPORT || rc == MOAT_ETIMEDOUT;
	}
	moat__rpc_unary(r->ch, "/moat.v1.Target/Destroy", md, "", 0, &reply, &len,
	                lost ? DESTROY_LOST_MS : DESTROY_RPC_MS, &st);
	free(reply);
out:
	/* Destroy reports nothing: keep the caller's last error as it was. */
	if (saved_code)
		moat_error_set(saved_code, saved_origin, "%s", saved);
	else
		moat_error_clear();
}

/*
 * moat_enclave_abort, from any thread: the core has marked the handle dead
 * (MOAT_ECANCELED). Cancel this handle's streams so that host threads
 * waiting in calls return now, and end the session on the target, which
 * stops the calls still running there (proc kills the enclave's process).
 */
static void cancel_stream(moat_chan *link, void *arg)
{
	(void)arg;
	moat__rpc_call_cancel(((stream *)link)->call);
}

static void remote_abort(moat_backend *b)
{
	remote_backend *r = (remote_backend *)b;
	const char *md[] = {MOAT_MD_SESSION, r->session_id, MOAT_MD_TOKEN, r->token_hex, NULL};
	const moat_error *last = moat_error_last();
	int saved_code = last->code;
	moat_origin saved_origin = last->origin;
	char saved[512];
	moat_rpc_status st;
	uint8_t *reply = NULL;
	size_t len;

	snprintf(saved, sizeof(saved), "%s", last->message);
	/* Streams are released only after the cache unlinked them under its lock: each one seen is alive. */
	moat__chan_each(&r->streams, cancel_stream, NULL);
	if (moat__rpc_unary(r->ch, "/moat.v1.Target/Destroy", md, "", 0, &reply, &len, DESTROY_RPC_MS, &st) ==
	    MOAT_RPC_OK)
		atomic_store(&r->session_ended, 1);
	free(reply);
	/* Aborting reports nothing: the caller's last error stays as it was. */
	if (saved_code)
		moat_error_set(saved_code, saved_origin, "%s", saved);
	else
		moat_error_clear();
}

static void remote_close(moat_backend *b)
{
	remote_backend *r = (remote_backend *)b;

	if (!r)
		return;
	atomic_store(&r->closing, 1);
	/* Release every host thread's stream of this session (those threads are not calling). */
	moat__chan_release_all(&r->streams);
	if (r->session_id[0] && r->ch)
		destroy_session(r);
	if (r->has_watcher) {
		pthread_mutex_lock(&r->watch_lock);
		pthread_cond_signal(&r->watch_wake);
		pthread_mutex_unlock(&r->watch_lock);
		pthread_join(r->watcher, NULL);
	}
	moat__rpc_call_free(r->lease);
	moat__rpc_channel_close(r->ch);
	if (r->rpc_inited)
		moat__rpc_shutdown();
	if (r->has_local)
		moat__local_target_stop(&r->local);
	OPENSSL_cleanse(r->token_hex, sizeof(r->token_hex));
	pthread_mutex_destroy(&r->watch_lock);
	pthread_cond_destroy(&r->watch_wake);
	free(r);
}

const moat_backend_vtable moat__backend_remote = {
    MOAT_BACKEND_VERSION,
    "remote",
    MOAT_BACKEND_CAP_ISOLATED | MOAT_BACKEND_CAP_REMOTE | MOAT_BACKEND_CAP_TIMEOUT | MOAT_BACKEND_CAP_CRASH,
    remote_open,
    remote_call,
    remote_close,
    remote_abort,
};
