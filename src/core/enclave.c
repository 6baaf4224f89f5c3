/*
 * The enclave handle: argument checks, thread limit, load, deferred start
 * and destroy, then dispatch to the backend (exit calls: exits.c).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/handle.h"
#include "core/internal.h"

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
	       : options->version == 3 ? offsetof(moat_load_options, target_ca_keys)
	                               : sizeof(*opts));
	if (opts->n_target_keys && !opts->target_keys)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		                      "n_target_keys is set but target_keys is NULL");
	if (opts->n_target_ca_keys && !opts->target_ca_keys)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		                      "n_target_ca_keys is set but target_ca_keys is NULL");
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
	params.exit_dispatch = moat__enclave_exit_dispatch;
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
