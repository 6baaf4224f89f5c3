/*
 * Exit calls on the host: the application's handler table, the runtime's
 * own host services (log, time, donated threads for moat_thread_start) and
 * the dispatcher the backends call.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/handle.h"
#include "core/internal.h"

static void *donated_main(void *arg)
{
	donated_thread *t = arg;
	moat_msg *in = NULL;

	int rc = moat_msg_new(&in);

	if (rc == 0)
		rc = moat_msg_push_u64(in, t->task);
	if (rc == 0)
		rc = moat_enclave_call(t->enclave, MOAT_SELECTOR_DONATE, in, NULL);
	moat_msg_free(in);
	if (rc < 0) {
		struct moat_enclave *e = t->enclave;
		struct failed_task *f;

		moat__log(MOAT_LOG_WARN, "donated thread for task %llu failed: %s",
		          (unsigned long long)t->task, moat_error_last()->message);
		/*
		 * The enclave may be waiting in moat_thread_join() for a task that
		 * will now never run; keep the reason until it asks for it.
		 */
		pthread_mutex_lock(&e->lock);
		f = realloc(e->failed, (e->n_failed + 1) * sizeof(*f));
		if (f) {
			e->failed = f;
			f[e->n_failed].task = t->task;
			f[e->n_failed].code = rc;
			e->n_failed++;
		}
		pthread_mutex_unlock(&e->lock);
	}
	atomic_store(&t->done, 1);
	return NULL;
}

/* Join donated threads that have finished. Called with e->lock held. */
static void reap_finished(struct moat_enclave *e)
{
	donated_thread **p = &e->donated;

	while (*p) {
		donated_thread *t = *p;

		if (atomic_load(&t->done)) {
			*p = t->next;
			pthread_join(t->thread, NULL);
			free(t);
		} else {
			p = &t->next;
		}
	}
}

static int service_spawn(struct moat_enclave *e, const moat_msg *in)
{
	donated_thread *t;
	uint64_t task;
	int rc = 0;

	if (moat_msg_item_u64(in, 0, &task) < 0)
		return MOAT_EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return MOAT_ENOMEM;
	t->enclave = e;
	t->task = task;
	pthread_mutex_lock(&e->lock);
	reap_finished(e);
	if (!e->ready || e->closing) {
		/*
		 * During init the handle has no backend yet (or, with
		 * MOAT_LOAD_DEFER_INIT, no entry table), and during destroy it is
		 * going away: no thread can enter the enclave then.
		 */
		rc = MOAT_EINVAL;
	} else if ((errno = pthread_create(&t->thread, NULL, donated_main, t)) != 0) {
		rc = MOAT_ENOMEM;
	} else {
		t->next = e->donated;
		e->donated = t;
		t = NULL;
	}
	pthread_mutex_unlock(&e->lock);
	free(t);
	return rc;
}

static int service_spawn_status(struct moat_enclave *e, const moat_msg *in, moat_msg *out)
{
	uint64_t task, status = 0;
	size_t i;

	if (moat_msg_item_u64(in, 0, &task) < 0)
		return MOAT_EINVAL;
	pthread_mutex_lock(&e->lock);
	for (i = 0; i < e->n_failed; i++) {
		if (e->failed[i].task == task) {
			status = (uint64_t)(int64_t)e->failed[i].code;
			e->failed[i] = e->failed[--e->n_failed];
			break;
		}
	}
	pthread_mutex_unlock(&e->lock);
	return moat_msg_push_u64(out, status);
}

/* The runtime's own answers to reserved exit calls. */
static int builtin_service(struct moat_enclave *e, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	switch (selector) {
	case MOAT_SELECTOR_LOG: {
		const void *data;
		size_t len;

		if (moat_msg_item(in, 0, &data, &len) < 0)
			return MOAT_EINVAL;
		fprintf(stderr, "[enclave] %.*s\n", (int)len, (const char *)data);
		return 0;
	}
	case MOAT_SELECTOR_TIME: {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		return out ? moat_msg_push_u64(out, (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec)
		           : 0;
	}
	case MOAT_SELECTOR_SPAWN: return service_spawn(e, in);
	case MOAT_SELECTOR_SPAWN_STATUS: return service_spawn_status(e, in, out);
	default: return MOAT_ENOHANDLER;
	}
}

/* Exit dispatcher handed to the backend: user handler, else fallback, else built-in service. */
int moat__enclave_exit_dispatch(void *ctx, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	struct moat_enclave *e = ctx;
	moat_exit_handler fn = NULL;
	moat_msg scratch = MOAT__MSG_INIT;
	void *payload = NULL;
	size_t i, had;
	int64_t start;
	int rc;

	pthread_rwlock_rdlock(&e->handlers_lock);
	for (i = 0; i < e->n_handlers; i++) {
		if (e->handlers[i].selector == selector) {
			fn = e->handlers[i].fn;
			payload = e->handlers[i].payload;
			break;
		}
	}
	if (!fn) {
		fn = e->fallback;
		payload = e->fallback_payload;
	}
	pthread_rwlock_unlock(&e->handlers_lock);
	/* The enclave may drop the reply (out NULL); handlers always get a message to append to. */
	if (!out)
		out = &scratch;
	had = moat_msg_count(out);
	start = e->trace ? moat__trace_now() : 0;
	rc = fn ? fn(payload, selector, in, out) : builtin_service(e, selector, in, out);
	if (e->trace)
		moat__trace(e->vtable->name, "exit", selector, in, out, had, rc, start);
	/* A failed exit call delivers no reply, even if the handler appended some before failing. */
	if (rc != 0)
		moat__msg_truncate(out, had);
	moat__msg_release(&scratch);
	return rc;
}

int moat_enclave_set_exit_handler(moat_enclave *e, uint64_t selector, moat_exit_handler fn, void *payload)
{
	size_t i;
	int rc = 0;

	if (!e)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		                      "moat_enclave_set_exit_handler: NULL enclave");
	pthread_rwlock_wrlock(&e->handlers_lock);
	for (i = 0; i < e->n_handlers; i++)
		if (e->handlers[i].selector == selector)
			break;
	if (!fn) {
		if (i < e->n_handlers)
			e->handlers[i] = e->handlers[--e->n_handlers];
	} else if (i < e->n_handlers) {
		e->handlers[i].fn = fn;
		e->handlers[i].payload = payload;
	} else {
		exit_entry *h = realloc(e->handlers, (e->n_handlers + 1) * sizeof(*h));

		if (!h) {
			rc = moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
		} else {
			e->handlers = h;
			h[e->n_handlers].selector = selector;
			h[e->n_handlers].fn = fn;
			h[e->n_handlers].payload = payload;
			e->n_handlers++;
		}
	}
	pthread_rwlock_unlock(&e->handlers_lock);
	return rc;
}

int moat_enclave_set_fallback_handler(moat_enclave *e, moat_exit_handler fn, void *payload)
{
	if (!e)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		                      "moat_enclave_set_fallback_handler: NULL enclave");
	pthread_rwlock_wrlock(&e->handlers_lock);
	e->fallback = fn;
	e->fallback_payload = payload;
	pthread_rwlock_unlock(&e->handlers_lock);
	return 0;
}
