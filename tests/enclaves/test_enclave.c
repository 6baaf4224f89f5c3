/*
 * The general-purpose test enclave: echo, per-id state, instance state,
 * failing handlers, exit calls on the host's behalf, config, and donated
 * threads. See tests/common/test_enclave.h for the selectors.
 */
#include <moat/enclave.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "test_enclave.h"

#define STATE_SLOTS 256
#define THREADS_MAX 16

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t state[STATE_SLOTS];
static uint64_t global_value;
static uint8_t *config_copy;
static size_t config_copy_len;

static int on_echo(void *payload, const moat_msg *in, moat_msg *out)
{
	size_t i, n = moat_msg_count(in);
	int rc = 0;

	for (i = 0; i < n && rc == 0; i++) {
		const void *d;
		size_t len;

		rc = moat_msg_item(in, i, &d, &len);
		if (rc == 0)
			rc = moat_msg_push(out, d, len);
	}
	return rc;
}

static int on_add(void *payload, const moat_msg *in, moat_msg *out)
{
	uint64_t id, v, now;
	int rc;

	if (moat_msg_item_u64(in, 0, &id) < 0 || moat_msg_item_u64(in, 1, &v) < 0 || id >= STATE_SLOTS)
		return MOAT_EINVAL;
	pthread_mutex_lock(&lock);
	state[id] += v;
	now = state[id];
	pthread_mutex_unlock(&lock);
	rc = moat_msg_push_u64(out, id);
	return rc ? rc : moat_msg_push_u64(out, now);
}

static int on_global_set(void *payload, const moat_msg *in, moat_msg *out)
{
	uint64_t v;

	if (moat_msg_item_u64(in, 0, &v) < 0)
		return MOAT_EINVAL;
	pthread_mutex_lock(&lock);
	global_value = v;
	pthread_mutex_unlock(&lock);
	return 0;
}

static int on_global_get(void *payload, const moat_msg *in, moat_msg *out)
{
	uint64_t v;

	pthread_mutex_lock(&lock);
	v = global_value;
	pthread_mutex_unlock(&lock);
	return moat_msg_push_u64(out, v);
}

static int on_fail(void *payload, const moat_msg *in, moat_msg *out)
{
	uint64_t code;

	if (moat_msg_item_u64(in, 0, &code) < 0)
		return MOAT_EINVAL;
	/* A partial reply before failing: the host must not see it. */
	if (moat_msg_count(in) > 1 && moat_msg_push_str(out, "partial reply") < 0)
		return MOAT_ENOMEM;
	return (int)(int64_t)code;
}

static int on_exit_call(void *payload, const moat_msg *in, moat_msg *out)
{
	moat_msg *sub_in = NULL, *sub_out = NULL;
	uint64_t selector;
	size_t i, n = moat_msg_count(in);
	int rc, result;

	if (moat_msg_item_u64(in, 0, &selector) < 0)
		return MOAT_EINVAL;
	if ((rc = moat_msg_new(&sub_in)) < 0 || (rc = moat_msg_new(&sub_out)) < 0)
		goto out;
	for (i = 1; i < n && rc == 0; i++) {
		const void *d;
		size_t len;

		if ((rc = moat_msg_item(in, i, &d, &len)) == 0)
			rc = moat_msg_push_borrowed(sub_in, d, len);
	}
	if (rc < 0)
		goto out;
	result = moat_exit_call(selector, sub_in, sub_out);
	/* Report the result instead of failing, so the host sees exactly what the enclave saw. */
	if ((rc = moat_msg_push_u64(out, (uint64_t)(int64_t)result)) < 0)
		goto out;
	for (i = 0; i < moat_msg_count(sub_out) && rc == 0; i++) {
		const void *d;
		size_t len;

		if ((rc = moat_msg_item(sub_out, i, &d, &len)) == 0)
			rc = moat_msg_push(out, d, len);
	}
out:
	moat_msg_free(sub_in);
	moat_msg_free(sub_out);
	return rc;
}

static int on_config(void *payload, const moat_msg *in, moat_msg *out)
{
	return moat_msg_push(out, config_copy, config_copy_len);
}

typedef struct work {
	uint64_t index;
	uint64_t sum;
	int finished;
} work;

static void worker(void *arg)
{
	work *w = arg;
	uint64_t i;

	for (i = 1; i <= 1000; i++)
		w->sum += i * (w->index + 1);
	w->finished = 1;
}

static int on_threads(void *payload, const moat_msg *in, moat_msg *out)
{
	work w[THREADS_MAX];
	moat_thread ids[THREADS_MAX];
	uint64_t n, i, started = 0, finished = 0;
	int rc = 0;

	if (moat_msg_item_u64(in, 0, &n) < 0 || n > THREADS_MAX)
		return MOAT_EINVAL;
	memset(w, 0, sizeof(w));
	for (i = 0; i < n; i++) {
		w[i].index = i;
		if ((rc = moat_thread_start(&ids[i], worker, &w[i])) < 0)
			break;
		started++;
	}
	for (i = 0; i < started; i++) {
		moat_thread_join(ids[i]);
		/* The worker's result must be the one only it could have computed. */
		if (w[i].finished && w[i].sum == 500500 * (i + 1))
			finished++;
	}
	if (rc < 0)
		return rc;
	rc = moat_msg_push_u64(out, started);
	return rc ? rc : moat_msg_push_u64(out, finished);
}

static int64_t init_spawn_rc = 1; /* 1: not tried */

static int on_init_spawn(void *payload, const moat_msg *in, moat_msg *out)
{
	return moat_msg_push_u64(out, (uint64_t)init_spawn_rc);
}

static int on_time(void *payload, const moat_msg *in, moat_msg *out)
{
	uint64_t ns;
	int rc = moat_host_time(&ns);

	return rc ? rc : moat_msg_push_u64(out, ns);
}

static uint64_t fini_selector;

static int on_on_fini(void *payload, const moat_msg *in, moat_msg *out)
{
	uint64_t sel;

	if (moat_msg_item_u64(in, 0, &sel) < 0)
		return MOAT_EINVAL;
	pthread_mutex_lock(&lock);
	fini_selector = sel;
	pthread_mutex_unlock(&lock);
	return 0;
}

static void fini(void)
{
	if (fini_selector) {
		static work w;
		moat_msg *m = NULL;
		moat_thread t;
		int rc = moat_thread_start(&t, worker, &w);

		if (rc == 0)
			moat_thread_join(t);
		if (moat_msg_new(&m) == 0 && moat_msg_push_u64(m, (uint64_t)(int64_t)rc) == 0)
			moat_exit_call(fini_selector, m, NULL);
		moat_msg_free(m);
	}
	free(config_copy);
	config_copy = NULL;
}

static int on_host(void *p, const moat_msg *in, moat_msg *out)
{
	moat_host_info h;
	int rc = moat_host_identity(&h);

	if (rc < 0)
		return rc;
	rc = moat_msg_push_str(out, h.backend);
	rc |= moat_msg_push_u64(out, h.isolation);
	rc |= moat_msg_push_u64(out, (uint64_t)h.debug);
	rc |= moat_msg_push_u64(out, (uint64_t)h.simulated_attestation);
	return rc;
}

static int64_t init_exit_rc = 1; /* 1: not tried */
static uint64_t init_exit_value;

static int on_init_exit(void *p, const moat_msg *in, moat_msg *out)
{
	int rc = moat_msg_push_u64(out, (uint64_t)init_exit_rc);

	return rc ? rc : moat_msg_push_u64(out, init_exit_value);
}

/* Init's exit calls: a log line, then a call only the application answers (T_INIT_EXIT_CONFIG). */
static void init_exit_calls(void)
{
	moat_msg *out = NULL;

	moat_host_log("%s", T_INIT_EXIT_LOG);
	if (moat_msg_new(&out) < 0)
		return;
	init_exit_rc = moat_exit_call(T_INIT_EXIT_SELECTOR, NULL, out);
	if (init_exit_rc == 0 && moat_msg_item_u64(out, 0, &init_exit_value) < 0)
		init_exit_value = 0;
	moat_msg_free(out);
}

static int init(const void *config, size_t len)
{
	int rc = 0;

	/* Register something first, so a refused load also shows the runtime cleaning up after init. */
	rc = moat_entry_register(T_ECHO, on_echo, NULL);
	if (rc == 0 && len == strlen(T_INIT_FAIL_CONFIG) && memcmp(config, T_INIT_FAIL_CONFIG, len) == 0)
		return T_INIT_FAIL_CODE;
	if (rc == 0 && len == strlen(T_SPAWN_IN_INIT_CONFIG) &&
	    memcmp(config, T_SPAWN_IN_INIT_CONFIG, len) == 0) {
		static work w;
		moat_thread t;

		init_spawn_rc = moat_thread_start(&t, worker, &w);
		if (init_spawn_rc == 0)
			moat_thread_join(t);
	}
	if (rc == 0 && len == strlen(T_INIT_EXIT_CONFIG) && memcmp(config, T_INIT_EXIT_CONFIG, len) == 0)
		init_exit_calls(); /* T_ECHO is registered: the application's handler may call it */
	config_copy = malloc(len ? len : 1);
	if (!config_copy)
		return MOAT_ENOMEM;
	if (len)
		memcpy(config_copy, config, len);
	config_copy_len = len;
	moat_finalizer_set(fini);
	rc |= moat_entry_register(T_ADD, on_add, NULL);
	rc |= moat_entry_register(T_GLOBAL_SET, on_global_set, NULL);
	rc |= moat_entry_register(T_GLOBAL_GET, on_global_get, NULL);
	rc |= moat_entry_register(T_FAIL, on_fail, NULL);
	rc |= moat_entry_register(T_EXIT, on_exit_call, NULL);
	rc |= moat_entry_register(T_CONFIG, on_config, NULL);
	rc |= moat_entry_register(T_THREADS, on_threads, NULL);
	rc |= moat_entry_register(T_INIT_SPAWN, on_init_spawn, NULL);
	rc |= moat_entry_register(T_ON_FINI, on_on_fini, NULL);
	rc |= moat_entry_register(T_TIME, on_time, NULL);
	rc |= moat_entry_register(T_HOST, on_host, NULL);
	rc |= moat_entry_register(T_INIT_EXIT, on_init_exit, NULL);
	return rc;
}

MOAT_ENCLAVE(init)
