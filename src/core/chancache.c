/* The per-thread channel cache (see chancache.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/chancache.h"
#include "core/internal.h"

struct moat_chan_thread {
	moat_chan *chans;
};

/* Links between channels, threads and owners change only under this lock. */
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t key;
static pthread_once_t key_once = PTHREAD_ONCE_INIT;
static int key_ok;
static atomic_uint_fast64_t next_serial = 1;

/* The channel this thread used last: serials are never reused, so a stale entry never matches. */
static _Thread_local uint64_t last_serial;
static _Thread_local moat_chan *last_chan;
static _Thread_local moat_chan_thread *self;

static void unlink_from(moat_chan **head, moat_chan *ch, int by_owner)
{
	moat_chan **p;

	for (p = head; *p; p = by_owner ? &(*p)->next_owner : &(*p)->next_thread) {
		if (*p == ch) {
			*p = by_owner ? ch->next_owner : ch->next_thread;
			return;
		}
	}
}

/* A thread exits: release its channels (the peer ends what served them). */
static void thread_exit(void *arg)
{
	moat_chan_thread *t = arg;
	moat_chan *list = NULL, *ch;

	pthread_mutex_lock(&lock);
	while ((ch = t->chans) != NULL) {
		t->chans = ch->next_thread;
		unlink_from(&ch->owner->chans, ch, 1);
		ch->next_thread = list;
		list = ch;
	}
	pthread_mutex_unlock(&lock);
	while (list) {
		ch = list->next_thread;
		list->release(list);
		list = ch;
	}
	free(t);
	self = NULL;
	last_serial = 0;
	last_chan = NULL;
}

static void key_make(void)
{
	key_ok = pthread_key_create(&key, thread_exit) == 0;
}

void moat__chan_owner_init(moat_chan_owner *o, void (*release)(moat_chan *))
{
	o->serial = atomic_fetch_add(&next_serial, 1);
	o->chans = NULL;
	o->release = release;
}

moat_chan *moat__chan_find(moat_chan_owner *o)
{
	moat_chan *ch = NULL;

	if (last_serial == o->serial)
		return last_chan;
	if (!self)
		return NULL;
	pthread_mutex_lock(&lock);
	for (ch = self->chans; ch; ch = ch->next_thread)
		if (ch->serial == o->serial)
			break;
	pthread_mutex_unlock(&lock);
	if (ch) {
		last_serial = o->serial;
		last_chan = ch;
	}
	return ch;
}

int moat__chan_add(moat_chan_owner *o, moat_chan *ch)
{
	if (!self) {
		pthread_once(&key_once, key_make);
		if (!key_ok || !(self = calloc(1, sizeof(*self))))
			return MOAT_ENOMEM;
		pthread_setspecific(key, self);
	}
	ch->serial = o->serial;
	ch->release = o->release;
	ch->owner = o;
	ch->thread = self;
	pthread_mutex_lock(&lock);
	ch->next_thread = self->chans;
	self->chans = ch;
	ch->next_owner = o->chans;
	o->chans = ch;
	pthread_mutex_unlock(&lock);
	last_serial = o->serial;
	last_chan = ch;
	return 0;
}

void moat__chan_drop(moat_chan *ch)
{
	pthread_mutex_lock(&lock);
	unlink_from(&ch->thread->chans, ch, 0);
	unlink_from(&ch->owner->chans, ch, 1);
	pthread_mutex_unlock(&lock);
	if (last_chan == ch) {
		last_chan = NULL;
		last_serial = 0;
	}
	ch->release(ch);
}

void moat__chan_each(moat_chan_owner *o, void (*fn)(moat_chan *ch, void *arg), void *arg)
{
	moat_chan *ch;

	pthread_mutex_lock(&lock);
	for (ch = o->chans; ch; ch = ch->next_owner)
		fn(ch, arg);
	pthread_mutex_unlock(&lock);
}

void moat__chan_release_all(moat_chan_owner *o)
{
	moat_chan *list, *ch;

	pthread_mutex_lock(&lock);
	list = o->chans;
	o->chans = NULL;
	for (ch = list; ch; ch = ch->next_owner)
		unlink_from(&ch->thread->chans, ch, 0);
	pthread_mutex_unlock(&lock);
	while (list) {
		ch = list->next_owner;
		list->release(list);
		list = ch;
	}
	/* This thread's cached entry, if it was one of them, can never match again (serial). */
}
