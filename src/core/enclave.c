/*
 * The enclave handle: argument checks, exit handler table, thread limit,
 * the runtime's host services, then dispatch to the backend.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"

typedef struct exit_entry {
	uint64_t selector;
	moat_exit_handler fn;
	void *payload;
} exit_entry;

typedef struct donated_thread {
	pthread_t thread;
	struct moat_enclave *enclave;
	uint64_t task;
	atomic_int done;
	struct donated_thread *next;
} donated_thread;

struct moat_enclave {
	moat_backend *backend;
	const moat_backend_vtable *vtable;

	pthread_rwlock_t handlers_lock;
	exit_entry *handlers;
	size_t n_handlers;
	moat_exit_handler fallback;
	void *fallback_payload;

	/* Host threads inside the enclave (nested entries on one thread count once). */
	pthread_mutex_t lock;
	pthread_cond_t slot_free;
	unsigned int max_threads;
	int thread_policy;
	unsigned int inside;
	donated_thread *donated;
	/* Tasks whose donated thread could not enter, until the enclave asks (SPAWN_STATUS). */
	struct failed_task {
		uint64_t task;
		int code;
	} * failed;
	size_t n_failed;
	int ready; /* the backend is open and init has run: threads may enter */
	int closing;
	int trace; /* MOAT_LOAD_TRACE: log every entry and exit call */
	/* INIT_*: MOAT_LOAD_DEFER_INIT's state; read on the call path with __atomic_load_n. */
	int init;
};

/* Where the enclave's init is (moat_enclave.init). */
enum { INIT_DONE, INIT_PENDING, INIT_RUNNING, INIT_FAILED };

/*
 * The entry calls in progress on this thread, innermost first, so a nested
 * entry call knows that its thread already holds a slot in the enclave.
 */
typedef struct call_frame {
	struct moat_enclave *enclave;
	struct call_frame *prev;
} call_frame;

static _Thread_local call_frame *current_frame;

const char *moat_version(void)
{
	return MOAT_VERSION_STRING;
}

static int thread_is_inside(const struct moat_enclave *e)
{
	const call_frame *f;

	for (f = current_frame; f; f = f->prev)
		if (f->enclave == e)
			return 1;
	return 0;
}

static int slot_acquire(struct moat_enclave *e)
{
	int rc = 0;

	pthread_mutex_lock(&e->lock);
	while (e->max_threads && e->inside >= e->max_threads) {
		if (e->thread_policy == MOAT_THREADS_FAIL) {
			rc = moat_error_set(MOAT_EBUSY, MOAT_ORIGIN_API,
			                    "%u host threads are already inside the enclave (max_threads)",
			                    e->inside);
			break;
		}
		pthread_cond_wait(&e->slot_free, &e->lock);
	}
	if (rc == 0)
		e->inside++;
	pthread_mutex_unlock(&e->lock);
	return rc;
}

static void slot_release(struct moat_enclave *e)
{
	pthread_mutex_lock(&e->lock);
	e->inside--;
	pthread_cond_signal(&e->slot_free);
	pthread_mutex_unlock(&e->lock);
}

int moat_enclave_call(moat_enclave *e, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	call_frame frame;
	int nested, counted, dead, rc;

	if (!e)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "moat_enclave_call: NULL enclave");
	if (selector < MOAT_SELECTOR_USER && selector != MOAT_SELECTOR_DONATE)
		return moat_error_set(
		    MOAT_EINVAL, MOAT_ORIGIN_API,
		    "selector %llu is reserved for the runtime (user selectors start at %llu)",
		    (unsigned long long)selector, (unsigned long long)MOAT_SELECTOR_USER);
	dead = __atomic_load_n(&e->backend->dead, __ATOMIC_ACQUIRE);
	if (dead)
		return moat_error_set(dead,
		                      dead == MOAT_ETRANSPORT  ? MOAT_ORIGIN_TRANSPORT
		                      : dead == MOAT_ECANCELED ? MOAT_ORIGIN_API
		                                               : MOAT_ORIGIN_ENCLAVE,
		                      "the enclave is no longer usable after an earlier failure: %s",
		                      moat_strerror(dead));
	/*
	 * Before a deferred init has run only the thread running it may enter
	 * (from an exit handler of init: nesting).
	 */
	if (__atomic_load_n(&e->init, __ATOMIC_ACQUIRE) != INIT_DONE && !thread_is_inside(e))
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		                      "entry call %llu: the enclave's init has not run yet (it was loaded "
		                      "with MOAT_LOAD_DEFER_INIT: call moat_enclave_start() first)",
		                      (unsigned long long)selector);
	/*
	 * A thread the enclave asked for (donate) takes no slot: max_threads
	 * bounds the application's callers, and an enclave that starts and joins
	 * a thread while a caller holds the last slot would otherwise hang
	 * (WAIT) or lose the task (FAIL).
	 */
	nested = thread_is_inside(e) || selector == MOAT_SELECTOR_DONATE;
	/*
	 * Without a limit there is nothing to count (max_threads is fixed at
	 * load): keep the mutex off the call path, where it was a quarter of
	 * a sim call.
	 */
	counted = !nested && e->max_threads;
	if (counted && (rc = slot_acquire(e)) < 0)
		return rc;
	frame.enclave = e;
	frame.prev = current_frame;
	current_frame = &frame;
	moat_error_clear();
	if (e->trace) {
		int64_t start = moat__trace_now();
		size_t had = out ? moat_msg_count(out) : 0;

		rc = e->vtable->call(e->backend, selector, in, out);
		moat__trace(e->vtable->name, "entry", selector, in, out, had, rc, start);
	} else {
		rc = e->vtable->call(e->backend, selector, in, out);
	}
	current_frame = frame.prev;
	if (counted)
		slot_release(e);
	return rc;
}

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
static int exit_dispatch(void *ctx, uint64_t selector, const moat_msg *in, moat_msg *out)
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

int moat_enclave_identity(const moat_enclave *e, moat_identity *out)
{
	if (!e || !out)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "moat_enclave_identity: NULL argument");
	memset(out, 0, sizeof(*out));
	memcpy(out->measurement, e->backend->measurement, MOAT_MEASUREMENT_LEN);
	out->backend = e->vtable->name;
	out->has_target_key = e->backend->has_target_key;
	memcpy(out->target_key, e->backend->target_key, MOAT_TARGET_KEY_LEN);
	out->isolation = e->backend->isolation;
	out->debug = e->backend->debug;
	out->debug_pid = e->backend->debug_pid;
	return 0;
}

const char *moat_enclave_target(const moat_enclave *e)
{
	return e ? e->backend->target : NULL;
}

/* Claim the start of a deferred init: 0, or MOAT_EINVAL (recorded) when there is none to start. */
static int start_claim(struct moat_enclave *e)
{
	int state;

	pthread_mutex_lock(&e->lock);
	state = e->init;
	if (state == INIT_PENDING)
		__atomic_store_n(&e->init, INIT_RUNNING, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&e->lock);
	if (state == INIT_PENDING)
		return 0;
	return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "moat_enclave_start: %s",
	                      state == INIT_DONE
	                          ? "the enclave's init has run already (start follows a load with "
	                            "MOAT_LOAD_DEFER_INIT, once)"
	                          : "the enclave was started already");
}

int moat_enclave_start(moat_enclave *e)
{
	call_frame frame;
	int rc, dead, none = 0;

	moat_error_clear();
	if (!e)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "moat_enclave_start: NULL enclave");
	if ((rc = start_claim(e)) < 0)
		return rc;
	/* This thread is inside while init runs: its exit handlers may call in (nesting). */
	frame.enclave = e;
	frame.prev = current_frame;
	current_frame = &frame;
	dead = __atomic_load_n(&e->backend->dead, __ATOMIC_ACQUIRE);
	if (dead)
		rc = moat_error_set(dead,
		                    dead == MOAT_ETRANSPORT  ? MOAT_ORIGIN_TRANSPORT
		                    : dead == MOAT_ECANCELED ? MOAT_ORIGIN_API
		                                             : MOAT_ORIGIN_ENCLAVE,
		                    "the enclave is no longer usable (%s): its init cannot run",
		                    moat_strerror(dead));
	else
		rc = e->vtable->start(e->backend);
	current_frame = frame.prev;
	pthread_mutex_lock(&e->lock);
	__atomic_store_n(&e->init, rc == 0 ? INIT_DONE : INIT_FAILED, __ATOMIC_RELEASE);
	e->ready = rc == 0;
	pthread_mutex_unlock(&e->lock);
	/* A failed init leaves the handle to destroy: calls fail with its code (or an earlier one). */
	if (rc < 0)
		__atomic_compare_exchange_n(&e->backend->dead, &none, rc, 0, __ATOMIC_ACQ_REL,
		                            __ATOMIC_ACQUIRE);
	return rc;
}

static void enclave_free(struct moat_enclave *e)
{
	pthread_rwlock_destroy(&e->handlers_lock);
	pthread_mutex_destroy(&e->lock);
	pthread_cond_destroy(&e->slot_free);
	free(e->handlers);
	free(e->failed);
	free(e);
}

/*
 * Check the caller's options and copy them into *opts, with what the
 * environment adds. Returns 0 or a negative code (recorded).
 */
static int copy_options(moat_load_options *opts, const moat_load_options *options)
{
	if (options->version < 1 || options->version > MOAT_LOAD_OPTIONS_VERSION)
		return moat_error_set(
		    MOAT_EVERSION, MOAT_ORIGIN_API,
		    "moat_load_options version %u is not supported (this library speaks 1 to %u); "
		    "initialise options with MOAT_LOAD_OPTIONS_INIT",
		    options->version, MOAT_LOAD_OPTIONS_VERSION);
	if (options->config_len && !options->config)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "config_len is set but config is NULL");
	if (options->thread_policy != MOAT_THREADS_WAIT && options->thread_policy != MOAT_THREADS_FAIL)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "unknown thread_policy %d",
		                      options->thread_policy);
	/* An older struct ends before the fields added since: read no further than it goes. */
	memset(opts, 0, sizeof(*opts));
	memcpy(opts, options,
	       options->version == 1   ? offsetof(moat_load_options, image_name)
	       : options->version == 2 ? offsetof(moat_load_options, target_keys)
	                               : sizeof(*opts));
	if (opts->n_target_keys && !opts->target_keys)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		                      "n_target_keys is set but target_keys is NULL");
	/* The environment can turn debug mode and tracing on for an application that does not ask. */
	if (moat__env_on("MOAT_DEBUG"))
		opts->flags |= MOAT_LOAD_DEBUG;
	if (moat__env_on("MOAT_TRACE"))
		opts->flags |= MOAT_LOAD_TRACE;
	return 0;
}

int moat_enclave_load(moat_enclave **out, const char *path, const moat_load_options *options)
{
	static const moat_load_options defaults = MOAT_LOAD_OPTIONS_INIT;
	moat_load_options opts;
	moat_backend_params params;
	moat__backend_uri parsed;
	struct moat_enclave *e;
	const char *uri;
	int rc;

	moat_error_clear();
	if (!out)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "moat_enclave_load: out is NULL");
	*out = NULL;
	if (!path || !*path)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "moat_enclave_load: no image path");
	if (!options)
		options = &defaults;
	if ((rc = copy_options(&opts, options)) < 0)
		return rc;
	options = &opts;
	uri = options->backend;
	if (!uri || !*uri)
		uri = getenv("MOAT_BACKEND");
	if (!uri || !*uri)
		uri = "sim";

	e = calloc(1, sizeof(*e));
	if (!e)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	pthread_rwlock_init(&e->handlers_lock, NULL);
	pthread_mutex_init(&e->lock, NULL);
	pthread_cond_init(&e->slot_free, NULL);
	e->max_threads = options->max_threads;
	e->trace = (options->flags & MOAT_LOAD_TRACE) != 0;
	e->thread_policy = options->thread_policy;
	if ((rc = moat__backend_parse(&parsed, uri)) < 0)
		goto fail;
	e->vtable = parsed.vtable;

	params.uri = uri;
	params.scheme = parsed.scheme;
	params.address = parsed.address;
	params.path = path;
	params.options = options;
	params.exit_dispatch = exit_dispatch;
	params.exit_ctx = e;
	if ((options->flags & MOAT_LOAD_DEFER_INIT) && !e->vtable->start) {
		rc = moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		                    "the %s backend cannot defer the enclave's init (MOAT_LOAD_DEFER_INIT)",
		                    e->vtable->name);
		goto fail;
	}
	rc = e->vtable->open(&e->backend, &params);
	if (rc < 0)
		goto fail;
	pthread_mutex_lock(&e->lock);
	e->init = (options->flags & MOAT_LOAD_DEFER_INIT) ? INIT_PENDING : INIT_DONE;
	e->ready = e->init == INIT_DONE;
	pthread_mutex_unlock(&e->lock);
	*out = e;
	return 0;

fail:
	enclave_free(e);
	return rc;
}

/*
 * How long destroy waits for a thread the enclave started before it stops
 * the enclave, on backends that can: destroy must end whatever the enclave
 * is doing. Sim cannot stop code in the host's own process, so it waits.
 */
#define DONATED_JOIN_MS 5000

static void join_donated(struct moat_enclave *e, pthread_t thread)
{
	struct timespec until;

	if (e->vtable->abort) {
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += DONATED_JOIN_MS / 1000;
		if (pthread_timedjoin_np(thread, NULL, &until) == 0)
			return;
		moat_enclave_abort(e);
	}
	pthread_join(thread, NULL);
}

int moat_enclave_abort(moat_enclave *e)
{
	int none = 0;

	if (!e)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "moat_enclave_abort: NULL enclave");
	/* The first fatal error stays the handle's; an abort after it has nothing left to stop. */
	if (!__atomic_compare_exchange_n(&e->backend->dead, &none, MOAT_ECANCELED, 0, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_ACQUIRE))
		return 0;
	if (e->vtable->abort)
		e->vtable->abort(e->backend);
	return 0;
}

void moat_enclave_destroy(moat_enclave *e)
{
	if (!e)
		return;
	/* Threads the enclave started may still be inside: let them finish first. */
	pthread_mutex_lock(&e->lock);
	e->closing = 1;
	pthread_mutex_unlock(&e->lock);
	for (;;) {
		donated_thread *list;

		pthread_mutex_lock(&e->lock);
		list = e->donated;
		e->donated = NULL;
		pthread_mutex_unlock(&e->lock);
		if (!list)
			break;
		while (list) {
			donated_thread *next = list->next;

			join_donated(e, list->thread);
			free(list);
			list = next;
		}
	}
	e->vtable->close(e->backend);
	enclave_free(e);
}
