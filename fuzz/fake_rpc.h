/*
 * A fake of the rpc layer's server side (src/rpc/rpc.h) for fuzzing moatd's
 * handlers without a network: a call is a method, request metadata and a
 * scripted peer. The peer hands the handler its messages and the end of its
 * stream; the fake records how the handler answered, and checks the call
 * contract on the way (one final status at most, nothing sent after it, a
 * metadata value not used after the next lookup, the call freed once).
 */
#ifndef MOAT_FUZZ_FAKE_RPC_H
#define MOAT_FUZZ_FAKE_RPC_H

#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"

/* The scripted peer of a call. */
typedef struct fake_peer_ops {
	/*
	 * The handler waits for the peer's next message: return 0 with *buf
	 * (malloc'd, the fake hands it over) and *len, or MOAT_RPC_END with
	 * *end_code MOAT_RPC_OK (the peer half-closed) or MOAT_RPC_CANCELLED.
	 */
	int (*next)(void *peer, uint8_t **buf, size_t *len, int *end_code);
	/* The handler sent a message on the stream (borrowed). May be NULL. */
	void (*sent)(void *peer, const uint8_t *buf, size_t len);
	/* A watched stream (a lease) ends: the gRPC code it ends with. May be NULL (cancelled). */
	int (*watch_end)(void *peer);
} fake_peer_ops;

/* What became of a call; filled as the handler runs, read after it returned. */
typedef struct fake_outcome {
	int finished;   /* moat__rpc_finish calls (never more than one) */
	int delivered;  /* ... and the peer got the status (the call was not cancelled) */
	int code;       /* the gRPC status sent */
	int moat_code;  /* its moat-error trailer */
	uint8_t *reply; /* malloc'd copy of the reply, or NULL; the driver frees it */
	size_t reply_len;
	int cancelled;         /* the handler cancelled the call (moat__rpc_call_cancel) */
	int peer_cancelled;    /* the peer's stream ended with CANCELLED */
	int peer_closed;       /* the peer half-closed its side */
	unsigned int received; /* messages the handler received */
	unsigned int sent;     /* messages the handler sent */
	int freed;             /* moat__rpc_call_free calls */
} fake_outcome;

/*
 * A new server call of method with request metadata md ({key, value, ...,
 * NULL}; copied), driven by ops and peer; what happens goes to *out. The
 * handler frees it with moat__rpc_call_free as the real layer's do.
 */
moat_rpc_call *fake_call_new(const char *method, const char *const *md, const fake_peer_ops *ops, void *peer,
                             fake_outcome *out);

#endif
