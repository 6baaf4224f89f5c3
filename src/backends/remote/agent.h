/*
 * The remote backend's host agent, inside libmoat: what its files share.
 * remote.c: streams, calls, abort, destroy; load.c: upload, Load, report,
 * lease watcher; fleet.c: placement over a fleet of targets; local.c:
 * local provisioning of a private moatd.
 */
#ifndef MOAT_BACKENDS_REMOTE_AGENT_H
#define MOAT_BACKENDS_REMOTE_AGENT_H

#include <pthread.h>
#include <stdatomic.h>

#include "backends/remote/remote.h"
#include "codec/conv.h"
#include "core/chancache.h"
#include "core/internal.h"
#include "rpc/rpc.h"

typedef struct remote_backend remote_backend;
typedef struct moat_fleet moat_fleet;

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
	char where[320];  /* what to name in messages: the URI */
	char target[320]; /* the address of the target hosting the session (parent.target) */
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
	int init_deferred; /* the target deferred the enclave's init (LoadResponse.init_deferred) */

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
	moat_fleet *fleet; /* the fleet the session was placed from (fleet.c), or NULL */
};

/* Record the handle's fatal error; the first one stays (an abort, a timeout, a lost target). */
void moat__remote_mark_dead(remote_backend *r, int code);

/* What to check when a connection failed, from gRPC's detail (TLS names, CA, client certificate). */
const char *moat__remote_transport_hint(const remote_backend *r, const char *detail);
/* Turn how a call ended into a Moat error. Marks the handle dead when the target is gone. */
int moat__remote_status_error(remote_backend *r, const moat_rpc_status *st, const char *what);

/* Upload (unless by name), Load, and check the answer and its signed report; fills r. Records errors. */
int moat__remote_load(remote_backend *r, const moat_backend_params *params);

/*
 * The channel options for target (gRPC's form) with the TLS files of o;
 * refuses TLS files on a target without TLS (uri names it). Records errors.
 */
int moat__remote_channel_opts(moat_rpc_channel_opts *co, const char *target, int tls,
                              const moat_load_options *o, const char *uri);

/* Does the URI name a fleet (a list of addresses, or a name resolved to all of its addresses)? */
int moat__remote_is_fleet(const moat_backend_params *params);
/*
 * Place the session on a serving target of the fleet (gRPC's round_robin
 * with health checks), open r->ch pinned to it and load there; co is the
 * channel options but the target. Records errors.
 */
int moat__remote_fleet_load(remote_backend *r, const moat_backend_params *params,
                            const moat_rpc_channel_opts *co);

/* End the handle's session on its target (a load the host then refused); the last error stays. */
void moat__remote_end_session(remote_backend *r);

/* Let go of the handle's reference to its fleet's shared channel (NULL: none). */
void moat__remote_fleet_release(moat_fleet *f);

/* The lease watcher thread (arg: the remote_backend). */
void *moat__remote_watch_lease(void *arg);

#endif
