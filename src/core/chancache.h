/*
 * The per-thread channel cache shared by the proc and remote backends. A
 * host thread that calls an enclave gets a channel of its own to it (a
 * socketpair to the runner, an Attach stream to moatd), made on its first
 * call and used by that thread alone. The cache finds the calling thread's
 * channel for an instance (lock-free when it is the one used last),
 * releases a thread's channels when the thread exits, and every channel of
 * an instance when the instance is destroyed.
 *
 * Lock order: the cache's lock is a leaf; release callbacks run outside it.
 */
#ifndef MOAT_CORE_CHANCACHE_H
#define MOAT_CORE_CHANCACHE_H

#include <stdint.h>

typedef struct moat_chan moat_chan;
typedef struct moat_chan_thread moat_chan_thread;

/* Embedded first in a backend's channel. */
struct moat_chan {
	uint64_t serial;              /* the owner's */
	void (*release)(moat_chan *); /* closes and frees the channel */
	struct moat_chan_owner *owner;
	moat_chan_thread *thread;
	moat_chan *next_owner, *next_thread;
};

/* Embedded in a backend instance. */
typedef struct moat_chan_owner {
	uint64_t serial; /* unique for the life of the process, never reused */
	moat_chan *chans;
	void (*release)(moat_chan *);
} moat_chan_owner;

/* Set up o; release closes and frees one of its channels. */
void moat__chan_owner_init(moat_chan_owner *o, void (*release)(moat_chan *));

/* The calling thread's channel to o, or NULL. */
moat_chan *moat__chan_find(moat_chan_owner *o);

/* Make ch the calling thread's channel to o. Returns 0, or MOAT_ENOMEM (ch is not released then). */
int moat__chan_add(moat_chan_owner *o, moat_chan *ch);

/* Forget the calling thread's channel ch and release it (it broke). */
void moat__chan_drop(moat_chan *ch);

/* Run fn on every channel of o, under the cache's lock (fn must not call back into the cache). */
void moat__chan_each(moat_chan_owner *o, void (*fn)(moat_chan *ch, void *arg), void *arg);

/* Release every channel of o, whichever thread made it; no thread may be using them. */
void moat__chan_release_all(moat_chan_owner *o);

#endif
