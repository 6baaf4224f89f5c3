/*
 * libmoat_enclave: the trusted runtime linked into every enclave image.
 * It keeps the entry handler table, forwards exit calls through the table
 * of functions the loader handed over, and runs donated threads.
 */
#include <moat/enclave.h>

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/internal.h"

typedef struct entry_slot {
	uint64_t selector;
	moat_entry_handler fn;
	void *payload;
} entry_slot;

/* A thread the enclave asked the host for (moat_thread_start). */
typedef struct task {
	uint64_t id;
	void (*fn)(void *);
	void *arg;
	int state; /* TASK_PENDING, TASK_RUNNING, TASK_DONE, TASK_FAILED */
	int code;  /* TASK_FAILED: why the host's thread could not enter */
	struct task *next;
} task;

enum { TASK_PENDING, TASK_RUNNING, TASK_DONE, TASK_FAILED };

/* How often a join asks the host about a task that has not started yet. */
#define JOIN_POLL_MS 50

static const struct moat_runtime *runtime;
static entry_slot *entries;
static size_t n_entries;
static int initialising;
static void (*finalizer)(void);

static pthread_mutex_t tasks_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t tasks_done = PTHREAD_COND_INITIALIZER;
static task *tasks;
static uint64_t next_task_id = 1;

int moat_entry_register(uint64_t selector, moat_entry_handler fn, void *payload)
{
	entry_slot *e;
	size_t i;

	/* The table is read without locks once init has returned, so it is frozen then. */
	if (!initialising || !fn || selector < MOAT_SELECTOR_USER)
		return MOAT_EINVAL;
	for (i = 0; i < n_entries; i++) {
		if (entries[i].selector == selector) {
			entries[i].fn = fn;
			entries[i].payload = payload;
			return 0;
		}
	}
	e = realloc(entries, (n_entries + 1) * sizeof(*e));
	if (!e)
		return MOAT_ENOMEM;
	entries = e;
	entries[n_entries].selector = selector;
	entries[n_entries].fn = fn;
	entries[n_entries].payload = payload;
	n_entries++;
	return 0;
}

void moat_finalizer_set(void (*fn)(void))
{
	finalizer = fn;
}

int moat__enclave_start(const struct moat_runtime *rt, const void *config, size_t config_len)
{
	int rc;

	/* A loader from before the host fields is still ABI 1: the enclave then knows less of its host. */
	if (!rt || rt->abi_version != MOAT_ENCLAVE_ABI_VERSION ||
	    rt->size < offsetof(struct moat_runtime, backend))
		return MOAT_EABI;
	runtime = rt;
	initialising = 1;
	rc = moat__enclave_user_init(config, config_len);
	initialising = 0;
	if (rc != 0) {
		/* The loader never calls stop after a refused init: release the table here. */
		free(entries);
		entries = NULL;
		n_entries = 0;
	}
	return rc;
}

static task *task_find(uint64_t id)
{
	task *t;

	for (t = tasks; t; t = t->next)
		if (t->id == id)
			return t;
	return NULL;
}

static int run_donated(const moat_msg *in)
{
	uint64_t id;
	task *t;

	if (moat_msg_item_u64(in, 0, &id) < 0)
		return MOAT_EINVAL;
	pthread_mutex_lock(&tasks_lock);
	t = task_find(id);
	/* Only a task the enclave itself queued runs, and only once. */
	if (!t || t->state != TASK_PENDING) {
		pthread_mutex_unlock(&tasks_lock);
		return MOAT_EINVAL;
	}
	t->state = TASK_RUNNING;
	pthread_mutex_unlock(&tasks_lock);

	t->fn(t->arg);

	pthread_mutex_lock(&tasks_lock);
	t->state = TASK_DONE;
	pthread_cond_broadcast(&tasks_done);
	pthread_mutex_unlock(&tasks_lock);
	return 0;
}

static int dispatch(uint64_t selector, const moat_msg *in, moat_msg *out, int64_t *handler_code)
{
	size_t i;
	int rc;

	if (selector == MOAT_SELECTOR_DONATE) {
		rc = run_donated(in);
		if (rc < 0) {
			*handler_code = rc;
			return MOAT_EHANDLER;
		}
		return 0;
	}
	for (i = 0; i < n_entries; i++) {
		if (entries[i].selector == selector) {
			rc = entries[i].fn(entries[i].payload, in, out);
			if (rc != 0) {
				*handler_code = rc;
				return MOAT_EHANDLER;
			}
			return 0;
		}
	}
	return MOAT_ENOSELECTOR;
}

int moat__enclave_call(uint64_t selector, const moat_msg *in, moat_msg *out, int64_t *handler_code)
{
	moat_msg scratch = MOAT__MSG_INIT;
	size_t had;
	int rc;

	*handler_code = 0;
	/*
	 * The host may pass out NULL to drop the reply; handlers always get a
	 * message to append to, so they behave the same on every backend.
	 */
	if (!out)
		out = &scratch;
	had = moat_msg_count(out);
	rc = dispatch(selector, in, out, handler_code);
	/* A failed call delivers no reply, even if the handler appended some before failing. */
	if (rc != 0)
		moat__msg_truncate(out, had);
	moat__msg_release(&scratch);
	return rc;
}

void moat__enclave_stop(void)
{
	if (finalizer)
		finalizer();
	free(entries);
	entries = NULL;
	n_entries = 0;
}

int moat_exit_call(uint64_t selector, const moat_msg *in, moat_msg *out)
{
	if (!runtime)
		return MOAT_EINVAL;
	return runtime->exit_call(runtime->ctx, selector, in, out);
}

int moat_host_log(const char *fmt, ...)
{
	char small[256], *line = small;
	moat_msg *m = NULL;
	va_list ap;
	int n, rc;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		return MOAT_EINVAL;
	if ((size_t)n >= sizeof(small)) {
		line = malloc((size_t)n + 1);
		if (!line)
			return MOAT_ENOMEM;
		va_start(ap, fmt);
		vsnprintf(line, (size_t)n + 1, fmt, ap);
		va_end(ap);
	}
	rc = moat_msg_new(&m);
	if (rc == 0)
		rc = moat_msg_push_borrowed(m, line, (size_t)n);
	if (rc == 0)
		rc = moat_exit_call(MOAT_SELECTOR_LOG, m, NULL);
	moat_msg_free(m);
	if (line != small)
		free(line);
	return rc;
}

int moat_host_identity(moat_host_info *out)
{
	if (!out || !runtime)
		return MOAT_EINVAL;
	memset(out, 0, sizeof(*out));
	out->simulated_attestation = 1;
	if (runtime->size < sizeof(*runtime)) {
		out->backend = "unknown";
		return 0;
	}
	out->backend = runtime->backend ? runtime->backend : "unknown";
	out->isolation = runtime->isolation;
	out->debug = (runtime->flags & MOAT_RUNTIME_DEBUG) != 0;
	return 0;
}

int moat_host_time(uint64_t *ns)
{
	moat_msg *out = NULL;
	int rc;

	if (!ns)
		return MOAT_EINVAL;
	if ((rc = moat_msg_new(&out)) < 0)
		return rc;
	rc = moat_exit_call(MOAT_SELECTOR_TIME, NULL, out);
	if (rc == 0)
		rc = moat_msg_item_u64(out, 0, ns);
	moat_msg_free(out);
	return rc;
}

int moat_thread_start(moat_thread *out, void (*fn)(void *), void *arg)
{
	moat_msg *in = NULL;
	task *t, **p;
	int rc;

	if (!out || !fn)
		return MOAT_EINVAL;
	t = calloc(1, sizeof(*t));
	if (!t)
		return MOAT_ENOMEM;
	t->fn = fn;
	t->arg = arg;
	t->state = TASK_PENDING;
	pthread_mutex_lock(&tasks_lock);
	t->id = next_task_id++;
	t->next = tasks;
	tasks = t;
	pthread_mutex_unlock(&tasks_lock);

	rc = moat_msg_new(&in);
	if (rc == 0)
		rc = moat_msg_push_u64(in, t->id);
	if (rc == 0)
		rc = moat_exit_call(MOAT_SELECTOR_SPAWN, in, NULL);
	moat_msg_free(in);
	if (rc < 0) {
		pthread_mutex_lock(&tasks_lock);
		for (p = &tasks; *p; p = &(*p)->next) {
			if (*p == t) {
				*p = t->next;
				break;
			}
		}
		pthread_mutex_unlock(&tasks_lock);
		free(t);
		return rc;
	}
	*out = t->id;
	return 0;
}

/*
 * Ask the host whether the thread it started for a still pending task
 * failed to enter (a target's thread limit, a lost connection). Called
 * without tasks_lock. Returns 0 while there is nothing to report.
 */
static int task_status(uint64_t id)
{
	moat_msg *in = NULL, *out = NULL;
	uint64_t status = 0;
	int rc;

	rc = moat_msg_new(&in);
	if (rc == 0)
		rc = moat_msg_new(&out);
	if (rc == 0)
		rc = moat_msg_push_u64(in, id);
	if (rc == 0)
		rc = moat_exit_call(MOAT_SELECTOR_SPAWN_STATUS, in, out);
	if (rc == 0)
		rc = moat_msg_item_u64(out, 0, &status);
	moat_msg_free(in);
	moat_msg_free(out);
	/* A host too old to answer, or a failed query, reports nothing. */
	return rc == 0 && (int64_t)status < 0 ? (int)(int64_t)status : 0;
}

int moat_thread_join(moat_thread thread)
{
	task *t, **p;
	int rc = 0;

	pthread_mutex_lock(&tasks_lock);
	t = task_find(thread);
	if (!t) {
		pthread_mutex_unlock(&tasks_lock);
		return MOAT_EINVAL;
	}
	/*
	 * A task the host never manages to run would otherwise be waited for
	 * forever: while it is still pending, ask the host now and then.
	 */
	while (t->state != TASK_DONE && t->state != TASK_FAILED) {
		struct timespec until;

		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += JOIN_POLL_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		if (pthread_cond_timedwait(&tasks_done, &tasks_lock, &until) == ETIMEDOUT &&
		    t->state == TASK_PENDING) {
			int status;

			pthread_mutex_unlock(&tasks_lock);
			status = task_status(t->id);
			pthread_mutex_lock(&tasks_lock);
			if (status < 0 && t->state == TASK_PENDING) {
				t->state = TASK_FAILED;
				t->code = status;
			}
		}
	}
	if (t->state == TASK_FAILED)
		rc = t->code;
	for (p = &tasks; *p; p = &(*p)->next) {
		if (*p == t) {
			*p = t->next;
			break;
		}
	}
	pthread_mutex_unlock(&tasks_lock);
	free(t);
	return rc;
}
