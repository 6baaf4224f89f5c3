/*
 * Fleets of targets: grpc://A:P,B:P,... (a static list of IP addresses)
 * and grpc+dns://NAME:PORT (every address NAME resolves to, resolved
 * again by gRPC when a target's connection fails), with grpcs for TLS.
 * Placement is gRPC's own, not a scheduler of ours: a Health/Check of
 * moat.v1.Target on a channel with the round_robin policy and client-side
 * health checking lands on a target that is up and takes sessions (moatd
 * reports NOT_SERVING while it is full or stopping), and the call's peer says
 * which one. The session is then loaded on, and pinned to, that target:
 * its Attach streams and lease use a channel to that address alone. A
 * Load the target refuses because it is full, or that cannot reach it, is
 * tried on the next pick, at most once per listed address (three times for
 * a name); any other failure is the load's answer.
 *
 * The balancing channel of a fleet is shared by the handles placed on it
 * while any of them lives, so that consecutive loads take turns over the
 * targets (a fresh channel picks whichever target is ready first, which is
 * why a listed fleet's addresses are given to gRPC in a random order).
 * With TLS, a name's channels all check the name; a list's check the host
 * its addresses share (tls_names).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backends/remote/agent.h"
#include "codec/protocol.h"

#include <openssl/rand.h>

#define PICK_TIMEOUT_MS 10000u
#define DNS_ATTEMPTS    3u
#define MAX_ATTEMPTS    16u
#define PICK_AGAIN_MS   2000u

/* A fleet's balancing channel, shared by the handles of this process placed on it. */
struct moat_fleet {
	char key[1400]; /* the target and every TLS setting: handles with the same key share the channel */
	moat_rpc_channel *ch;
	unsigned int refs;
	struct moat_fleet *next;
};

static pthread_mutex_t fleets_lock = PTHREAD_MUTEX_INITIALIZER;
static moat_fleet *fleets;

/* The shared channel for o (opened on first use), with a reference for the caller. Records errors. */
static int fleet_acquire(moat_fleet **out, const char *uri, const moat_rpc_channel_opts *o)
{
	char key[sizeof(((moat_fleet *)0)->key)];
	moat_fleet *f;
	int rc = 0;

	snprintf(key, sizeof(key), "%s|%d|%s|%s|%s|%s", uri, o->tls, o->ca_file ? o->ca_file : "",
	         o->cert_file ? o->cert_file : "", o->key_file ? o->key_file : "",
	         o->server_name ? o->server_name : "");
	pthread_mutex_lock(&fleets_lock);
	for (f = fleets; f && strcmp(f->key, key) != 0; f = f->next)
		;
	if (!f && (f = calloc(1, sizeof(*f))) != NULL) {
		memcpy(f->key, key, sizeof(key));
		if ((rc = moat__rpc_channel_open(&f->ch, o)) < 0) {
			free(f);
			f = NULL;
		} else {
			f->next = fleets;
			fleets = f;
		}
	} else if (!f) {
		rc = moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	}
	if (f)
		f->refs++;
	pthread_mutex_unlock(&fleets_lock);
	*out = f;
	return rc;
}

void moat__remote_fleet_release(moat_fleet *f)
{
	moat_fleet **p;

	if (!f)
		return;
	pthread_mutex_lock(&fleets_lock);
	if (--f->refs > 0) {
		f = NULL;
	} else {
		for (p = &fleets; *p != f; p = &(*p)->next)
			;
		*p = f->next;
	}
	pthread_mutex_unlock(&fleets_lock);
	if (f) {
		moat__rpc_channel_close(f->ch);
		free(f);
	}
}

int moat__remote_is_fleet(const moat_backend_params *params)
{
	return strstr(params->scheme, "+dns") != NULL ||
	       (strncmp(params->scheme, "grpc", 4) == 0 && strchr(params->address, ',') != NULL);
}

/* gRPC's target for the whole fleet, and how many picks a load may take. */
static unsigned int fleet_target(const moat_backend_params *params, char *out, size_t cap)
{
	char list[MAX_ATTEMPTS][128], *save = NULL, *tok, copy[600];
	unsigned int n = 0, i;
	size_t off;

	if (strstr(params->scheme, "+dns")) {
		snprintf(out, cap, "dns:///%s", params->address);
		return DNS_ATTEMPTS;
	}
	/*
	 * The addresses in a random order: every subchannel connects at once
	 * and the first one ready takes the first pick, so a process that
	 * loads once would otherwise always land on the first address listed.
	 */
	snprintf(copy, sizeof(copy), "%s", params->address);
	for (tok = strtok_r(copy, ",", &save); tok && n < MAX_ATTEMPTS; tok = strtok_r(NULL, ",", &save))
		snprintf(list[n++], sizeof(list[0]), "%s", tok);
	for (i = n; i > 1; i--) {
		unsigned int j = 0;
		char tmp[128];

		if (RAND_bytes((unsigned char *)&j, sizeof(j)) != 1)
			break;
		j %= i;
		memcpy(tmp, list[i - 1], sizeof(tmp));
		memcpy(list[i - 1], list[j], sizeof(tmp));
		memcpy(list[j], tmp, sizeof(tmp));
	}
	/* gRPC's ipv4: and ipv6: resolvers take a comma-separated list of literal addresses. */
	off = (size_t)snprintf(out, cap, "%s:", strchr(params->address, '[') ? "ipv6" : "ipv4");
	for (i = 0; i < n && off < cap; i++)
		off += (size_t)snprintf(out + off, cap - off, "%s%s", i ? "," : "", list[i]);
	return n ? n : 1;
}

/* Ask the fleet's balancer for a serving target: its address goes to peer. Records errors. */
static int pick(remote_backend *r, moat_rpc_channel *balanced, char *peer, size_t cap)
{
	/* HealthCheckRequest{service: "moat.v1.Target"} */
	static const uint8_t req[] = {0x0a, 14,  'm', 'o', 'a', 't', '.', 'v',
	                              '1',  '.', 'T', 'a', 'r', 'g', 'e', 't'};
	moat_rpc_status st;
	uint8_t *resp = NULL;
	size_t len = 0;
	int rc, serving;

	rc = moat__rpc_unary_peer(balanced, "/grpc.health.v1.Health/Check", NULL, req, sizeof(req), &resp,
	                          &len, PICK_TIMEOUT_MS, &st, peer, cap);
	/* HealthCheckResponse{status: SERVING} is 08 01. */
	serving = rc == MOAT_RPC_OK && len == 2 && resp[0] == 0x08 && resp[1] == 0x01;
	free(resp);
	if (rc < 0)
		return rc;
	if (rc != MOAT_RPC_OK)
		return moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		                      "no target of %s is serving (%s; %s)", r->where, st.message,
		                      moat__remote_transport_hint(r, st.message));
	if (!serving || !peer[0])
		return moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		                      "no target of %s is serving (the one picked is not serving)", r->where);
	return 0;
}

/*
 * A pick that is none of the n targets tried already. Right after the
 * channel is made only the targets whose health check answered first are
 * in the rotation, so the balancer may name a tried one again: ask again
 * a moment later, for at most PICK_AGAIN_MS. Records errors.
 */
static int pick_untried(remote_backend *r, char *peer, size_t cap, char (*tried)[128], unsigned int n)
{
	struct timespec nap = {0, 10 * 1000000L};
	unsigned int waited = 0, i;
	int rc;

	for (;;) {
		if ((rc = pick(r, r->fleet->ch, peer, cap)) < 0)
			return rc;
		for (i = 0; i < n && strcmp(tried[i], peer) != 0; i++)
			;
		if (i == n)
			return 0;
		if (waited >= PICK_AGAIN_MS)
			return moat_error_last()->code
			           ? moat_error_last()->code
			           : moat_error_set(MOAT_ELIMIT, MOAT_ORIGIN_TARGET,
			                            "no other target of %s takes the session", r->where);
		nanosleep(&nap, NULL);
		waited += 10;
	}
}

/*
 * The name TLS checks when tls_server_name is not set. A name's
 * certificates name the name, not the address a session is pinned to:
 * every channel checks NAME. A list's balancing channel checks one name for
 * all its targets (left to itself, gRPC would check the whole list): the
 * host the addresses share, while each pinned channel checks its own
 * address, as for one target. A list over several hosts needs
 * tls_server_name. Records errors.
 */
static int tls_names(const moat_backend_params *params, moat_rpc_channel_opts *bo, moat_rpc_channel_opts *po,
                     char *host, size_t cap)
{
	char copy[600], *save = NULL, *tok, *colon;
	int n = 0;

	if (!bo->tls || bo->server_name)
		return 0;
	if (strstr(params->scheme, "+dns")) {
		snprintf(host, cap, "%.*s", (int)strcspn(params->address, ":"), params->address);
		po->server_name = bo->server_name = host;
		return 0;
	}
	snprintf(copy, sizeof(copy), "%s", params->address);
	for (tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save), n++) {
		if ((colon = strrchr(tok, ':')) != NULL)
			*colon = '\0';
		if (tok[0] == '[' && (colon = strchr(tok, ']')) != NULL) {
			*colon = '\0';
			tok++;
		}
		if (n == 0)
			snprintf(host, cap, "%s", tok);
		else if (strcmp(host, tok) != 0)
			return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
			                      "%s: a TLS fleet listed on several hosts needs "
			                      "tls_server_name, a name every target's "
			                      "certificate carries (gRPC checks one name on the fleet's "
			                      "channel); or name the fleet by "
			                      "DNS (grpcs+dns://NAME:PORT)",
			                      params->uri);
	}
	bo->server_name = host;
	return 0;
}

int moat__remote_fleet_load(remote_backend *r, const moat_backend_params *params,
                            const moat_rpc_channel_opts *co)
{
	moat_rpc_channel_opts bo = *co, po = *co;
	char target[340], peer[128], host[256], tried[MAX_ATTEMPTS][128];
	unsigned int attempts = fleet_target(params, target, sizeof(target)), i;
	int rc;

	bo.target = target;
	bo.health_service = "moat.v1.Target";
	if ((rc = tls_names(params, &bo, &po, host, sizeof(host))) < 0 ||
	    (rc = fleet_acquire(&r->fleet, params->uri, &bo)) < 0)
		return rc;
	for (i = 0; i < attempts; i++) {
		if ((rc = pick_untried(r, peer, sizeof(peer), tried, i)) < 0)
			break;
		snprintf(tried[i], sizeof(tried[i]), "%s", peer);
		po.target = peer;
		if ((rc = moat__rpc_channel_open(&r->ch, &po)) < 0)
			break;
		/* gRPC names the peer "ipv4:A:P" or "ipv6:[A]:P"; the handle names it "A:P", "[A]:P". */
		snprintf(r->target, sizeof(r->target), "%s",
		         strncmp(peer, "ipv4:", 5) == 0 || strncmp(peer, "ipv6:", 5) == 0 ? peer + 5 : peer);
		snprintf(r->where, sizeof(r->where), "%s (target %.127s)", params->uri, r->target);
		rc = moat__remote_load(r, params);
		/* Full, gone since the pick, or not one of the pinned keys: the next pick goes elsewhere. */
		if (rc == 0 || (rc != MOAT_ELIMIT && rc != MOAT_ETRANSPORT && rc != MOAT_EKEY) ||
		    i + 1 == attempts)
			break;
		if (rc == MOAT_EKEY && r->session_id[0])
			moat__remote_end_session(r); /* loaded on a target the host does not trust */
		moat__rpc_channel_close(r->ch);
		r->ch = NULL;
		r->parent.dead = 0;
		r->session_id[0] = '\0';
		snprintf(r->where, sizeof(r->where), "%s", params->uri);
	}
	return rc;
}
