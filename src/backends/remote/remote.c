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

#include "backends/remote/agent.h"
#include "codec/conv.h"
#include "codec/protocol.h"
#include "core/chancache.h"
#include "core/internal.h"
#include "moat/v1/target.pb-c.h"
#include "rpc/rpc.h"

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

	if (selector == MOAT_PROTOCOL_SELECTOR_START)
		snprintf(what, sizeof(what), "the enclave's init");
	else
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
		moat__remote_mark_dead(r, MOAT_ETIMEDOUT);
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
		return moat__remote_status_error(r, &s->st, what);
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
		moat__remote_mark_dead(r, rc);
		moat_error_set(rc, fin->origin ? (moat_origin)fin->origin : MOAT_ORIGIN_TARGET,
		               "entry call %llu: call_timeout_ms (%u ms) ran out on the target: %s",
		               (unsigned long long)selector, r->call_timeout_ms, fin->message);
	} else {
		moat_error_set(rc, fin->origin ? (moat_origin)fin->origin : MOAT_ORIGIN_TARGET, "%s",
		               fin->message);
		moat__error_set_enclave_code(fin->enclave_code);
		if (moat__code_is_fatal(rc))
			moat__remote_mark_dead(r, rc);
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

static void remote_close(moat_backend *b);

/* A handle's state before it connects; NULL when out of memory. */
static remote_backend *agent_new(const moat_backend_params *params)
{
	const moat_load_options *o = params->options;
	remote_backend *r = calloc(1, sizeof(*r));
	pthread_condattr_t ca;

	if (!r)
		return NULL;
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
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&r->watch_wake, &ca);
	pthread_condattr_destroy(&ca);
	snprintf(r->where, sizeof(r->where), "%s", params->uri);
	return r;
}

int moat__remote_channel_opts(moat_rpc_channel_opts *co, const char *target, int tls,
                              const moat_load_options *o, const char *uri)
{
	if (!tls && (o->tls_ca_file || o->tls_cert_file || o->tls_key_file))
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		                      "TLS files are set but '%s' is not a grpcs:// URI", uri);
	memset(co, 0, sizeof(*co));
	co->target = target;
	co->tls = tls;
	co->ca_file = o->tls_ca_file;
	co->cert_file = o->tls_cert_file;
	co->key_file = o->tls_key_file;
	co->server_name = o->tls_server_name;
	co->max_receive_bytes = -1;
	return 0;
}

/*
 * Start a private moatd for "local", then open the channel to the target
 * and load there; a fleet URI first picks the target. Records errors.
 */
static int agent_connect(remote_backend *r, const moat_backend_params *params)
{
	const moat_load_options *o = params->options;
	moat_rpc_channel_opts co = {0};
	char target[320];
	int rc;

	if (strcmp(params->scheme, "local") == 0) {
		if (o->flags & MOAT_LOAD_BY_NAME)
			return moat_error_set(
			    MOAT_EINVAL, MOAT_ORIGIN_API,
			    "the local backend uploads the image; MOAT_LOAD_BY_NAME needs a running moatd");
		if ((rc = moat__local_target_start(&r->local, LOCAL_START_TIMEOUT_MS)) < 0)
			return rc;
		r->has_local = 1;
		snprintf(target, sizeof(target), "%s", r->local.target);
	} else {
		/* The core split the URI: grpc and grpcs name host:port, unix a socket path. */
		r->tls = strncmp(params->scheme, "grpcs", 5) == 0;
		snprintf(target, sizeof(target), "%s%s", strcmp(params->scheme, "unix") == 0 ? "unix:" : "",
		         params->address);
	}
	if ((rc = moat__remote_channel_opts(&co, target, r->tls, o, params->uri)) < 0)
		return rc;
	snprintf(r->target, sizeof(r->target), "%s", target); /* a fleet's load names its pick instead */
	r->parent.target = r->target;
	moat__rpc_init();
	r->rpc_inited = 1;
	co.keepalive_ms = r->keepalive_ms;
	/* Generous on a slow machine (valgrind runs raise the keepalive period), bounded everywhere. */
	co.connect_timeout_ms = r->keepalive_ms > 1250 ? 4 * r->keepalive_ms : 5000;
	if (!r->has_local && moat__remote_is_fleet(params))
		return moat__remote_fleet_load(r, params, &co);
	if ((rc = moat__rpc_channel_open(&r->ch, &co)) < 0)
		return rc;
	return moat__remote_load(r, params);
}

/* The session's lease stream and the thread that watches it. Records errors. */
static int agent_lease(remote_backend *r)
{
	const char *lease_md[] = {MOAT_MD_SESSION, r->session_id, MOAT_MD_TOKEN, r->token_hex,
	                          MOAT_MD_STREAM,  MOAT_MD_LEASE, NULL};
	int rc;

	r->md[0] = MOAT_MD_SESSION;
	r->md[1] = r->session_id;
	r->md[2] = MOAT_MD_TOKEN;
	r->md[3] = r->token_hex;
	r->md[4] = NULL;
	if ((rc = moat__rpc_stream_open(&r->lease, r->ch, "/moat.v1.Target/Attach", lease_md)) < 0)
		return rc;
	if (pthread_create(&r->watcher, NULL, moat__remote_watch_lease, r) != 0)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "cannot start the lease thread");
	r->has_watcher = 1;
	return 0;
}

/*
 * Run the enclave's init on the target (a Load that deferred it) over this
 * thread's Attach stream, so its exit calls reach this host's handlers as
 * an entry call's do. Records errors as a Load that ran init would have.
 */
static int remote_start(moat_backend *b)
{
	return remote_call(b, MOAT_PROTOCOL_SELECTOR_START, NULL, NULL);
}

/*
 * libmoat asks every target to defer init (LoadRequest.defer_init) and,
 * unless the application asked to start it itself, starts it here over the
 * loading thread's stream: init's exit calls (its log lines too) reach this
 * host as on sim and proc. A target that ran init at Load already (one
 * from before defer_init) says so. Records errors.
 */
static int agent_start(remote_backend *r, const moat_load_options *o)
{
	moat_rpc_status st;
	stream *s;
	int rc;

	if (!r->init_deferred && (o->flags & MOAT_LOAD_DEFER_INIT))
		return moat_error_set(
		    MOAT_EPROTO, MOAT_ORIGIN_TARGET,
		    "%s ran the enclave's init at load: it cannot defer it "
		    "(MOAT_LOAD_DEFER_INIT needs a moatd that knows LoadRequest.defer_init)",
		    r->where);
	if (!r->init_deferred || (o->flags & MOAT_LOAD_DEFER_INIT))
		return 0;
	rc = remote_start(&r->parent);
	/*
	 * The loading thread may never call: its stream would hold one of the
	 * session's host threads on the target (max_threads) while it lives.
	 * End it cleanly: the target frees the slot before it says the stream
	 * ended, so a thread that calls next is not refused.
	 */
	if ((s = (stream *)moat__chan_find(&r->streams)) != NULL) {
		if (rc == 0 && !s->conv.broken)
			moat__rpc_stream_finish(s->call, NULL, NULL, LOCAL_START_TIMEOUT_MS, &st);
		moat__chan_drop(&s->link);
	}
	return rc;
}

static int remote_open(moat_backend **out, const moat_backend_params *params)
{
	remote_backend *r = agent_new(params);
	int rc;

	*out = NULL;
	if (!r)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	if ((rc = agent_connect(r, params)) < 0 || (rc = agent_lease(r)) < 0 ||
	    (rc = agent_start(r, params->options)) < 0) {
		moat_error saved = *moat_error_last();
		char msg[MOAT__MESSAGE_MAX];

		snprintf(msg, sizeof(msg), "%s", saved.message);
		remote_close(&r->parent);
		moat_error_set(saved.code, saved.origin, "%s", msg);
		return rc;
	}
	*out = &r->parent;
	return 0;
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
	char saved[MOAT__MESSAGE_MAX];
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

void moat__remote_end_session(remote_backend *r)
{
	destroy_session(r);
	r->session_id[0] = '\0';
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
	char saved[MOAT__MESSAGE_MAX];
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
	moat__remote_fleet_release(r->fleet);
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
    remote_start,
};
