/*
 * Sessions: the table of loaded enclaves, who may use them (the session id
 * and token in every call's metadata), the references that keep a session
 * alive while handlers use it, and the rules that end it: Destroy, the
 * host's lease breaking (reclaimed after --session-grace-ms), a session
 * never leased, and moatd stopping.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "moatd/moatd.h"

/* How long beyond the grace period a host without a lease may have no stream open (after Load, say). */
#define LOAD_ATTACH_MS 10000.0

void moatd_sessions_init(moatd *d)
{
	pthread_mutex_init(&d->lock, NULL);
	d->sessions = NULL;
	d->n_sessions = 0;
}

unsigned int moatd_session_count(moatd *d)
{
	unsigned int n;

	pthread_mutex_lock(&d->lock);
	n = d->n_sessions;
	pthread_mutex_unlock(&d->lock);
	return n;
}

int moatd_session_reserve(moatd *d)
{
	int rc = 0;

	pthread_mutex_lock(&d->lock);
	if (d->cfg.max_sessions && d->n_sessions >= d->cfg.max_sessions)
		rc = MOAT_ELIMIT;
	else
		d->n_sessions++;
	pthread_mutex_unlock(&d->lock);
	return rc;
}

void moatd_session_unreserve(moatd *d)
{
	pthread_mutex_lock(&d->lock);
	d->n_sessions--;
	pthread_mutex_unlock(&d->lock);
}

void moatd_session_add(moatd *d, session *s)
{
	pthread_mutex_lock(&d->lock);
	s->next = d->sessions;
	d->sessions = s;
	pthread_mutex_unlock(&d->lock);
}

static void session_free(session *s)
{
	moatd_log(MOATD_LOG_INFO, "session %s: destroying the enclave", s->id);
	moat_enclave_destroy(s->enclave);
	pthread_cond_destroy(&s->idle);
	OPENSSL_cleanse(s->token_hex, sizeof(s->token_hex));
	free(s);
}

void moatd_session_unref(session *s)
{
	moatd *d = s->d;
	int last;

	pthread_mutex_lock(&d->lock);
	last = --s->refs == 0;
	pthread_cond_broadcast(&s->idle);
	pthread_mutex_unlock(&d->lock);
	if (last)
		session_free(s);
}

/*
 * Unlink s from the table and end its streams but keep (may be NULL).
 * Called with the lock held; returns 1 when the caller now holds the
 * table's reference.
 */
static int remove_keep_locked(session *s, moat_rpc_call *keep)
{
	moatd *d = s->d;
	session **p;
	stream_ref *r;

	if (s->removed)
		return 0;
	for (p = &d->sessions; *p; p = &(*p)->next) {
		if (*p == s) {
			*p = s->next;
			break;
		}
	}
	s->removed = 1;
	d->n_sessions--;
	for (r = s->calls; r; r = r->next)
		if (r->call != keep)
			moat__rpc_call_cancel(r->call);
	/* The lease thread waits on this too. */
	pthread_cond_broadcast(&s->idle);
	return 1;
}

/*
 * A session is going away (destroyed, reclaimed, moatd stopping) while
 * entry calls still run in its enclave: their host gave up on them or is
 * gone. End the enclave now (proc kills its process) so that their worker
 * threads return at once instead of when the calls end, which may be never.
 * The caller holds a reference and not the lock.
 */
static void end_running_calls(session *s, const char *why)
{
	moat_enclave *e;

	pthread_mutex_lock(&s->d->lock);
	e = s->busy ? s->enclave : NULL;
	pthread_mutex_unlock(&s->d->lock);
	if (!e)
		return;
	moatd_log(MOATD_LOG_INFO, "session %s: %s with calls still running; stopping the enclave", s->id,
	          why);
	moat_enclave_abort(e);
}

/* Wait (bounded) until only the caller's reference is left. Called with the lock held. */
static void wait_alone_locked(session *s)
{
	struct timespec deadline;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 10;
	while (s->refs > 1)
		if (pthread_cond_timedwait(&s->idle, &s->d->lock, &deadline) != 0)
			break;
}

session *moatd_session_auth(moatd *d, moat_rpc_call *call)
{
	/* A metadata value lives until the next lookup on the call: keep the id. */
	const char *md = moat__rpc_call_md(call, MOAT_MD_SESSION);
	char id[sizeof(((session *)0)->id) + 1], want[65];
	const char *token;
	session *s;
	size_t i;

	/* The whole id must match: a longer one with the right prefix is another session. */
	if (md && strlen(md) < sizeof(id))
		memcpy(id, md, strlen(md) + 1);
	else
		snprintf(id, sizeof(id), "%s", md ? "?" : "");
	token = moat__rpc_call_md(call, MOAT_MD_TOKEN);
	pthread_mutex_lock(&d->lock);
	for (s = d->sessions; s && md; s = s->next)
		if (strcmp(s->id, id) == 0)
			break;
	if (!md || !s) {
		pthread_mutex_unlock(&d->lock);
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_NOT_FOUND, MOAT_ETARGET,
		                 md ? "unknown session (destroyed, reclaimed, or from another moatd)"
		                    : "no moat-session metadata");
		return NULL;
	}
	/* The token is hex of 32 bytes, in either case. */
	for (i = 0; token && i < 64 && token[i]; i++)
		want[i] = token[i] >= 'A' && token[i] <= 'F' ? (char)(token[i] - 'A' + 'a') : token[i];
	if (!token || strlen(token) != 64 || CRYPTO_memcmp(want, s->token_hex, 64) != 0) {
		pthread_mutex_unlock(&d->lock);
		moatd_log(MOATD_LOG_WARN, "session %s: refused a call with a wrong or missing token", s->id);
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_PERMISSION_DENIED, MOAT_EPERM,
		                 "wrong or missing session token");
		return NULL;
	}
	s->refs++;
	pthread_mutex_unlock(&d->lock);
	return s;
}

void moatd_session_track(session *s, stream_ref *r, moat_rpc_call *call)
{
	r->call = call;
	pthread_mutex_lock(&s->d->lock);
	r->next = s->calls;
	s->calls = r;
	if (s->removed)
		moat__rpc_call_cancel(call);
	pthread_mutex_unlock(&s->d->lock);
}

void moatd_session_untrack(session *s, stream_ref *r)
{
	stream_ref **p;

	pthread_mutex_lock(&s->d->lock);
	for (p = &s->calls; *p; p = &(*p)->next) {
		if (*p == r) {
			*p = r->next;
			break;
		}
	}
	pthread_mutex_unlock(&s->d->lock);
}

/* The last stream that kept s alive closed: the grace period starts. Called with the lock held. */
static void grace_starts_locked(session *s, const char *what)
{
	if (s->removed)
		return;
	clock_gettime(CLOCK_MONOTONIC, &s->since);
	moatd_log(MOATD_LOG_INFO, "session %s: %s; reclaiming in %u ms unless the host comes back", s->id,
	          what, s->d->cfg.grace_ms);
}

/* Does s live on? Called with the lock held. */
static int alive_locked(const session *s, unsigned int grace_ms)
{
	unsigned int open = s->lease_seen ? s->leases : s->streams;

	/* Without a lease, a host gets LOAD_ATTACH_MS more: its lease may be on its way. */
	return open > 0 || moat__ms_since(&s->since) < (s->lease_seen ? 0.0 : LOAD_ATTACH_MS) + grace_ms;
}

int moatd_session_attach_thread(session *s)
{
	unsigned int max = s->d->cfg.max_threads, now;
	int rc = 0;

	pthread_mutex_lock(&s->d->lock);
	if (max && s->streams >= max) {
		rc = MOAT_ELIMIT;
	} else {
		s->streams++;
	}
	now = s->streams;
	pthread_mutex_unlock(&s->d->lock);
	if (rc == 0)
		moatd_log(MOATD_LOG_DEBUG, "session %s: a host thread attached (%u now)", s->id, now);
	return rc;
}

void moatd_session_detach_thread(session *s)
{
	unsigned int left;

	pthread_mutex_lock(&s->d->lock);
	if ((left = --s->streams) == 0 && !s->lease_seen)
		grace_starts_locked(s, "its last stream closed");
	pthread_mutex_unlock(&s->d->lock);
	moatd_log(MOATD_LOG_DEBUG, "session %s: a host thread detached (%u left)", s->id, left);
}

int moatd_session_enter(session *s)
{
	int rc = 0;

	/* No new call once the session is going away: end_running_calls must see every one. */
	pthread_mutex_lock(&s->d->lock);
	if (!s->removed && !s->d->stop)
		s->busy++;
	else
		rc = MOAT_ECANCELED;
	pthread_mutex_unlock(&s->d->lock);
	return rc;
}

void moatd_session_leave(session *s)
{
	pthread_mutex_lock(&s->d->lock);
	s->busy--;
	pthread_mutex_unlock(&s->d->lock);
}

/* Wait until the lease stream ends, the session goes or moatd stops. */
static void watch_lease(session *s, moat_rpc_call *call)
{
	moatd *d = s->d;
	moat_rpc_status st;

	/*
	 * The lease carries no frames; it ends when the host destroys the
	 * session or goes away. Check it without blocking in gRPC: a thread
	 * blocked there would take part in polling and steal other streams'
	 * frames (see moat__rpc_server_run).
	 */
	pthread_mutex_lock(&d->lock);
	while (!s->removed && !d->stop) {
		struct timespec until;
		int open;

		pthread_mutex_unlock(&d->lock);
		open = moat__rpc_watch(call, &st) == 0;
		pthread_mutex_lock(&d->lock);
		if (!open)
			break;
		/* Destroy wakes us at once (remove_keep_locked); else look again in 100 ms. */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 100 * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		if (!s->removed)
			pthread_cond_timedwait(&s->idle, &d->lock, &until);
	}
	pthread_mutex_unlock(&d->lock);
}

void moatd_session_serve_lease(session *s, moat_rpc_call *call)
{
	moatd *d = s->d;

	pthread_mutex_lock(&d->lock);
	s->leases++;
	s->lease_seen = 1;
	pthread_mutex_unlock(&d->lock);
	moatd_log(MOATD_LOG_DEBUG, "session %s: lease opened", s->id);
	watch_lease(s, call);
	moatd_log(MOATD_LOG_DEBUG, "session %s: lease closed", s->id);
	pthread_mutex_lock(&d->lock);
	if (--s->leases == 0)
		grace_starts_locked(s, "its lease ended (host connection lost)");
	pthread_mutex_unlock(&d->lock);
	if (!moat__rpc_call_cancelled(call))
		moat__rpc_finish(call, NULL, 0, MOAT_RPC_OK, 0, NULL);
}

moat_enclave *moatd_session_take_for_destroy(session *s, moat_rpc_call *keep)
{
	moatd *d = s->d;
	moat_enclave *e = NULL;

	pthread_mutex_lock(&d->lock);
	if (remove_keep_locked(s, keep))
		s->refs--;
	pthread_mutex_unlock(&d->lock);
	end_running_calls(s, "destroyed by the host");
	pthread_mutex_lock(&d->lock);
	wait_alone_locked(s);
	if (s->refs == 1) {
		e = s->enclave;
		s->enclave = NULL;
	}
	pthread_mutex_unlock(&d->lock);
	moatd_log(MOATD_LOG_INFO, "session %s: destroyed by the host", s->id);
	return e;
}

void moatd_handle_destroy(moatd *d, moat_rpc_call *call)
{
	static const uint8_t empty[1];
	uint8_t *buf = NULL;
	size_t len;
	session *s;
	int drop;

	if (moatd_recv_one(call, &buf, &len) < 0)
		goto out;
	s = moatd_session_auth(d, call);
	if (!s)
		goto out;
	pthread_mutex_lock(&d->lock);
	drop = remove_keep_locked(s, NULL);
	if (drop)
		s->refs--;
	pthread_mutex_unlock(&d->lock);
	end_running_calls(s, "destroyed by the host");
	pthread_mutex_lock(&d->lock);
	/* Let the session's streams end so its enclave is gone when the host hears back. */
	wait_alone_locked(s);
	pthread_mutex_unlock(&d->lock);
	moatd_log(MOATD_LOG_INFO, "session %s: destroyed by the host", s->id);
	moatd_session_unref(s);
	moat__rpc_finish(call, empty, 0, MOAT_RPC_OK, 0, NULL);
out:
	free(buf);
}

void moatd_tick(moatd *d)
{
	session *s, *next, *drop = NULL;

	pthread_mutex_lock(&d->lock);
	for (s = d->sessions; s; s = next) {
		next = s->next;
		if (!alive_locked(s, d->cfg.grace_ms)) {
			moatd_log(MOATD_LOG_INFO, "session %s: reclaimed (host gone)", s->id);
			if (remove_keep_locked(s, NULL)) {
				s->next = drop;
				drop = s;
			}
		}
	}
	pthread_mutex_unlock(&d->lock);
	while (drop) {
		next = drop->next;
		end_running_calls(drop, "reclaimed");
		moatd_session_unref(drop);
		drop = next;
	}
}

void moatd_target_stopping(moatd *d)
{
	session *s;

	for (;;) {
		/* One session at a time: end_running_calls needs a reference and no lock. */
		pthread_mutex_lock(&d->lock);
		for (s = d->sessions; s; s = s->next)
			if (s->busy && !s->stopped)
				break;
		if (s) {
			s->stopped = 1;
			s->refs++;
		}
		pthread_mutex_unlock(&d->lock);
		if (!s)
			break;
		end_running_calls(s, "moatd stops");
		moatd_session_unref(s);
	}
}

void moatd_target_shutdown(moatd *d)
{
	session *s;

	for (;;) {
		pthread_mutex_lock(&d->lock);
		s = d->sessions;
		if (s && !remove_keep_locked(s, NULL))
			s = NULL;
		pthread_mutex_unlock(&d->lock);
		if (!s)
			break;
		end_running_calls(s, "moatd stops");
		moatd_session_unref(s);
	}
}
