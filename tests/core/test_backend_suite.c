/*
 * The backend-generic suite: every behaviour of the public API that must hold
 * on every backend. Enclaves are loaded with backend NULL, so libmoat takes
 * the backend from $MOAT_BACKEND; CTest registers this one binary once per
 * backend. Nothing here may assume the enclave shares the host's address
 * space: state is only observed through calls.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "fib_raw.h"
#include "kv_raw.h"
#include "moat_test.h"
#include "test_enclave.h"

#define HOST_BLOCK     (MOAT_SELECTOR_USER + 600) /* exit: blocks until the test releases it */
#define HOST_FAIL      (MOAT_SELECTOR_USER + 601) /* exit: returns HOST_FAIL_CODE */
#define HOST_PONG      (MOAT_SELECTOR_USER + 602) /* exit: replies "pong" plus its input items */
#define HOST_NONE      (MOAT_SELECTOR_USER + 603) /* exit: never has a handler */
#define HOST_FAIL_CODE (-77)

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* ---- examples ---- */

typedef struct log_capture {
	pthread_mutex_t lock;
	char line[256];
	int lines;
} log_capture;

static int capture_log(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	log_capture *c = payload;
	const void *d;
	size_t len;

	if (moat_msg_item(in, 0, &d, &len) < 0)
		return MOAT_EINVAL;
	pthread_mutex_lock(&c->lock);
	if (len >= sizeof(c->line))
		len = sizeof(c->line) - 1;
	memcpy(c->line, d, len);
	c->line[len] = '\0';
	c->lines++;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

static void test_hello(void **state)
{
	log_capture cap = {PTHREAD_MUTEX_INITIALIZER, "", 0};
	moat_enclave *e = test_load(TEST_ENCLAVE("hello_enclave"), NULL);
	moat_msg *in = test_msg(), *out = test_msg();

	/* A handler for a reserved selector replaces the runtime's log service. */
	assert_moat_ok(moat_enclave_set_exit_handler(e, MOAT_SELECTOR_LOG, capture_log, &cap));
	assert_int_equal(moat_msg_push_str(in, "Moat"), 0);
	assert_moat_ok(moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out));
	assert_int_equal(moat_msg_count(out), 1);
	test_assert_item_str(out, 0, "Hello, Moat!");
	assert_int_equal(cap.lines, 1);
	assert_string_equal(cap.line, "hello enclave: greeting Moat");

	/* Without arguments the enclave greets the world; out is appended to. */
	assert_moat_ok(moat_enclave_call(e, MOAT_SELECTOR_RUN, NULL, out));
	assert_int_equal(moat_msg_count(out), 2);
	test_assert_item_str(out, 1, "Hello, world!");
	assert_int_equal(cap.lines, 2);
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static int kv_call(moat_enclave *e, uint64_t sel, const char *k, const char *v, moat_msg *out)
{
	moat_msg *in = test_msg();
	int rc;

	if (k)
		assert_int_equal(moat_msg_push_str(in, k), 0);
	if (v)
		assert_int_equal(moat_msg_push_str(in, v), 0);
	rc = moat_enclave_call(e, sel, in, out);
	moat_msg_free(in);
	return rc;
}

static uint64_t kv_count(moat_enclave *e)
{
	moat_msg *out = test_msg();
	uint64_t n;

	assert_moat_ok(kv_call(e, KV_COUNT, NULL, NULL, out));
	n = test_item_u64(out, 0);
	moat_msg_free(out);
	return n;
}

static void test_kv(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("kv_raw_enclave"), NULL);
	moat_msg *out = test_msg();
	const moat_error *err;

	assert_int_equal(kv_count(e), 0);
	assert_moat_ok(kv_call(e, KV_PUT, "alpha", "1", NULL));
	assert_moat_ok(kv_call(e, KV_PUT, "beta", "2", NULL));
	assert_moat_ok(kv_call(e, KV_PUT, "alpha", "one", NULL));
	assert_int_equal(kv_count(e), 2);
	assert_moat_ok(kv_call(e, KV_GET, "alpha", NULL, out));
	test_assert_item_str(out, 0, "one");
	moat_msg_reset(out);
	assert_moat_ok(kv_call(e, KV_DEL, "alpha", NULL, NULL));
	assert_int_equal(kv_count(e), 1);

	assert_int_equal(kv_call(e, KV_GET, "alpha", NULL, out), MOAT_EHANDLER);
	err = moat_error_last();
	assert_int_equal(err->code, MOAT_EHANDLER);
	assert_int_equal(err->origin, MOAT_ORIGIN_ENCLAVE);
	assert_int_equal(err->enclave_code, KV_NOT_FOUND);
	assert_int_equal(moat_msg_count(out), 0);
	assert_int_equal(kv_call(e, KV_DEL, "alpha", NULL, NULL), MOAT_EHANDLER);
	assert_int_equal(moat_error_last()->enclave_code, KV_NOT_FOUND);

	assert_moat_ok(kv_call(e, KV_GET, "beta", NULL, out));
	test_assert_item_str(out, 0, "2");
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

typedef struct fib_ctx {
	moat_enclave *e;
	int exits;
	int depth, max_depth;
	int rc;
} fib_ctx;

static int fib_exit(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	fib_ctx *c = payload;
	int rc;

	c->exits++;
	if (++c->depth > c->max_depth)
		c->max_depth = c->depth;
	/* Nesting: the exit handler makes an entry call on the same enclave and thread. */
	rc = moat_enclave_call(c->e, FIB_ENTRY, in, out);
	c->depth--;
	return rc;
}

static void *fib_thread(void *arg)
{
	fib_ctx *c = arg;
	moat_msg *in = NULL, *out = NULL;
	uint64_t a = 0, b = 1, i, f = 0, f1 = 0;

	c->rc = -1;
	if (moat_msg_new(&in) < 0 || moat_msg_new(&out) < 0 || moat_msg_push_u64(in, 1000) < 0)
		goto done;
	c->rc = moat_enclave_call(c->e, FIB_ENTRY, in, out);
	if (c->rc < 0) {
		fprintf(stderr, "fib: %s\n", moat_error_last()->message);
		goto done;
	}
	for (i = 0; i < 1000; i++) {
		uint64_t t = a + b;

		a = b;
		b = t;
	}
	/* a = F(1000), and F(999) = b - a, modulo 2^64. */
	c->rc = -2;
	if (moat_msg_item_u64(out, 0, &f) < 0 || moat_msg_item_u64(out, 1, &f1) < 0)
		goto done;
	c->rc = (f == a && f1 == b - a) ? 0 : -3;
done:
	moat_msg_free(in);
	moat_msg_free(out);
	return NULL;
}

static void test_fib_nesting(void **state)
{
	fib_ctx c = {0};
	pthread_attr_t attr;
	pthread_t t;

	c.e = test_load(TEST_ENCLAVE("fib_raw_enclave"), NULL);
	assert_moat_ok(moat_enclave_set_exit_handler(c.e, FIB_EXIT, fib_exit, &c));
	/* 1000 nested entry+exit pairs; a large stack keeps sanitizer builds from overflowing. */
	assert_int_equal(pthread_attr_init(&attr), 0);
	assert_int_equal(pthread_attr_setstacksize(&attr, 256u << 20), 0);
	assert_int_equal(pthread_create(&t, &attr, fib_thread, &c), 0);
	pthread_join(t, NULL);
	pthread_attr_destroy(&attr);
	assert_int_equal(c.rc, 0);
	assert_int_equal(c.exits, 999);
	assert_int_equal(c.max_depth, 999);
	assert_int_equal(c.depth, 0);
	moat_enclave_destroy(c.e);
}

static void test_threads_example(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("threads_enclave"), NULL);
	moat_msg *in = test_msg(), *out = test_msg();

	assert_int_equal(moat_msg_push_str(in, "4"), 0);
	assert_moat_ok(moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out));
	test_assert_item_str(out, 0, "500000500000");
	test_assert_item_str(out, 1, "4");
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

/* ---- test enclave ---- */

static void test_donated_threads(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	moat_msg *in = test_msg(), *out = test_msg();
	int round;

	assert_int_equal(moat_msg_push_u64(in, 4), 0);
	for (round = 0; round < 3; round++) {
		moat_msg_reset(out);
		assert_moat_ok(moat_enclave_call(e, T_THREADS, in, out));
		assert_int_equal(test_item_u64(out, 0), 4);
		assert_int_equal(test_item_u64(out, 1), 4);
	}
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

#define MT_THREADS 32
#define MT_CALLS   1000

typedef struct mt_arg {
	moat_enclave *e;
	uint64_t id;
	int failures;
	char why[160];
} mt_arg;

static void *mt_main(void *p)
{
	mt_arg *a = p;
	moat_msg *in = NULL, *out = NULL;
	uint64_t expect = 0, got_id, got, k;
	char mine[32];

	if (moat_msg_new(&in) < 0 || moat_msg_new(&out) < 0) {
		a->failures++;
		goto done;
	}
	snprintf(mine, sizeof(mine), "thread-%llu", (unsigned long long)a->id);
	for (k = 0; k < MT_CALLS && !a->failures; k++) {
		const void *d;
		size_t len;
		uint64_t v = a->id * 1000003u + k;

		moat_msg_reset(in);
		moat_msg_reset(out);
		if (k % 10 == 9) {
			/* Every tenth call is an echo of bytes only this thread sends. */
			moat_msg_push_str(in, mine);
			if (moat_enclave_call(a->e, T_ECHO, in, out) < 0 || moat_msg_count(out) != 1 ||
			    moat_msg_item(out, 0, &d, &len) < 0 || len != strlen(mine) ||
			    memcmp(d, mine, len)) {
				snprintf(a->why, sizeof(a->why), "echo %llu failed: %s",
				         (unsigned long long)k, moat_error_last()->message);
				a->failures++;
			}
			continue;
		}
		moat_msg_push_u64(in, a->id);
		moat_msg_push_u64(in, v);
		expect += v;
		if (moat_enclave_call(a->e, T_ADD, in, out) < 0 || moat_msg_item_u64(out, 0, &got_id) < 0 ||
		    moat_msg_item_u64(out, 1, &got) < 0) {
			snprintf(a->why, sizeof(a->why), "call %llu failed: %s", (unsigned long long)k,
			         moat_error_last()->message);
			a->failures++;
		} else if (got_id != a->id || got != expect) {
			snprintf(a->why, sizeof(a->why),
			         "call %llu: got id %llu sum %llu, want id %llu sum %llu",
			         (unsigned long long)k, (unsigned long long)got_id, (unsigned long long)got,
			         (unsigned long long)a->id, (unsigned long long)expect);
			a->failures++;
		}
	}
done:
	moat_msg_free(in);
	moat_msg_free(out);
	return NULL;
}

static void test_many_threads(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	pthread_t t[MT_THREADS];
	mt_arg a[MT_THREADS];
	moat_msg *in = test_msg(), *out = test_msg();
	uint64_t i, per_thread_sum;
	int started = 0, failures = 0;

	memset(a, 0, sizeof(a));
	for (i = 0; i < MT_THREADS; i++) {
		a[i].e = e;
		a[i].id = i + 1;
		if (pthread_create(&t[i], NULL, mt_main, &a[i]) != 0)
			break;
		started++;
	}
	for (i = 0; i < (uint64_t)started; i++) {
		pthread_join(t[i], NULL);
		if (a[i].failures) {
			print_error("thread %llu: %s\n", (unsigned long long)a[i].id, a[i].why);
			failures++;
		}
	}
	assert_int_equal(started, MT_THREADS);
	assert_int_equal(failures, 0);

	/* The enclave's final state for each id is what that thread alone added. */
	for (i = 0; i < MT_THREADS; i++) {
		uint64_t k;

		per_thread_sum = 0;
		for (k = 0; k < MT_CALLS; k++)
			if (k % 10 != 9)
				per_thread_sum += (i + 1) * 1000003u + k;
		moat_msg_reset(in);
		moat_msg_reset(out);
		moat_msg_push_u64(in, i + 1);
		moat_msg_push_u64(in, 0);
		assert_moat_ok(moat_enclave_call(e, T_ADD, in, out));
		assert_int_equal(test_item_u64(out, 1), per_thread_sum);
	}
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static uint64_t global_get(moat_enclave *e)
{
	moat_msg *out = test_msg();
	uint64_t v;

	assert_moat_ok(moat_enclave_call(e, T_GLOBAL_GET, NULL, out));
	v = test_item_u64(out, 0);
	moat_msg_free(out);
	return v;
}

static void global_set(moat_enclave *e, uint64_t v)
{
	moat_msg *in = test_msg();

	assert_int_equal(moat_msg_push_u64(in, v), 0);
	assert_moat_ok(moat_enclave_call(e, T_GLOBAL_SET, in, NULL));
	moat_msg_free(in);
}

static void test_two_instances(void **state)
{
	moat_enclave *a = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	moat_enclave *b = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	moat_enclave *ka = test_load(TEST_ENCLAVE("kv_raw_enclave"), NULL);
	moat_enclave *kb = test_load(TEST_ENCLAVE("kv_raw_enclave"), NULL);

	global_set(a, 111);
	assert_int_equal(global_get(a), 111);
	assert_int_equal(global_get(b), 0);
	global_set(b, 222);
	assert_int_equal(global_get(a), 111);
	assert_int_equal(global_get(b), 222);

	assert_moat_ok(kv_call(ka, KV_PUT, "k", "v", NULL));
	assert_int_equal(kv_count(ka), 1);
	assert_int_equal(kv_count(kb), 0);
	assert_int_equal(kv_call(kb, KV_GET, "k", NULL, NULL), MOAT_EHANDLER);

	/* Destroying one instance leaves the other working. */
	moat_enclave_destroy(a);
	assert_int_equal(global_get(b), 222);
	moat_enclave_destroy(b);
	moat_enclave_destroy(ka);
	assert_int_equal(kv_count(kb), 0);
	moat_enclave_destroy(kb);
}

static void test_unknown_selector(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	moat_msg *out = test_msg();
	const moat_error *err;

	assert_int_equal(moat_enclave_call(e, MOAT_SELECTOR_USER + 999, NULL, out), MOAT_ENOSELECTOR);
	err = moat_error_last();
	assert_int_equal(err->code, MOAT_ENOSELECTOR);
	assert_int_equal(err->origin, MOAT_ORIGIN_ENCLAVE);
	assert_non_null(strstr(err->message, "2023")); /* names the selector */
	assert_int_equal(moat_msg_count(out), 0);
	/* The enclave is still usable. */
	assert_int_equal(global_get(e), 0);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static void test_null_messages(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	moat_msg *in = test_msg(), *out = test_msg();

	/* in NULL is an empty message; out NULL drops the reply, and the handler still succeeds. */
	assert_moat_ok(moat_enclave_call(e, T_ECHO, NULL, out));
	assert_int_equal(moat_msg_count(out), 0);
	assert_int_equal(moat_msg_push_str(in, "dropped"), 0);
	assert_moat_ok(moat_enclave_call(e, T_ECHO, in, NULL));
	assert_moat_ok(moat_enclave_call(e, T_GLOBAL_GET, NULL, NULL));
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static void fail_with(moat_enclave *e, int64_t code, int partial)
{
	moat_msg *in = test_msg(), *out = test_msg();
	const moat_error *err;

	assert_int_equal(moat_msg_push_u64(in, (uint64_t)code), 0);
	if (partial)
		assert_int_equal(moat_msg_push_str(in, "partial"), 0);
	assert_int_equal(moat_msg_push_str(out, "kept"), 0);
	assert_int_equal(moat_enclave_call(e, T_FAIL, in, out), MOAT_EHANDLER);
	err = moat_error_last();
	assert_int_equal(err->code, MOAT_EHANDLER);
	assert_int_equal(err->origin, MOAT_ORIGIN_ENCLAVE);
	assert_int_equal(err->enclave_code, code);
	assert_true(err->message[0] != '\0');
	/* A failed call leaves out as it was: no partial reply, earlier items kept. */
	assert_int_equal(moat_msg_count(out), 1);
	test_assert_item_str(out, 0, "kept");
	moat_msg_free(in);
	moat_msg_free(out);
}

static void test_handler_error(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);

	fail_with(e, 42, 0);
	fail_with(e, -1234, 1);
	fail_with(e, MOAT_ENOMEM, 1);
	/* A failed call leaves the enclave usable and the last error is cleared by the next success. */
	assert_int_equal(global_get(e), 0);
	assert_int_equal(moat_error_last()->code, MOAT_OK);
	moat_enclave_destroy(e);
}

/* Ask the enclave to make exit call selector; return what moat_exit_call returned there. */
static int64_t enclave_exit(moat_enclave *e, uint64_t selector, const char *arg, moat_msg *reply)
{
	moat_msg *in = test_msg(), *out = test_msg();
	int64_t result;
	size_t i;

	assert_int_equal(moat_msg_push_u64(in, selector), 0);
	if (arg)
		assert_int_equal(moat_msg_push_str(in, arg), 0);
	assert_moat_ok(moat_enclave_call(e, T_EXIT, in, out));
	result = (int64_t)test_item_u64(out, 0);
	for (i = 1; reply && i < moat_msg_count(out); i++) {
		const void *d;
		size_t len;

		assert_int_equal(moat_msg_item(out, i, &d, &len), 0);
		assert_int_equal(moat_msg_push(reply, d, len), 0);
	}
	moat_msg_free(in);
	moat_msg_free(out);
	return result;
}

static int host_fail(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	(*(int *)payload)++;
	/* A partial reply before failing: the enclave must not see it. */
	moat_msg_push_str(out, "partial reply");
	return HOST_FAIL_CODE;
}

static int host_pong(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	size_t i;
	int rc;

	(*(int *)payload)++;
	if (selector != HOST_PONG)
		return MOAT_EINVAL;
	rc = moat_msg_push_str(out, "pong");
	for (i = 0; i < moat_msg_count(in) && rc == 0; i++) {
		const void *d;
		size_t len;

		if ((rc = moat_msg_item(in, i, &d, &len)) == 0)
			rc = moat_msg_push(out, d, len);
	}
	return rc;
}

static void test_exit_no_handler(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);

	assert_int_equal(enclave_exit(e, HOST_NONE, "x", NULL), MOAT_ENOHANDLER);
	moat_enclave_destroy(e);
}

static void test_exit_handler_error(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	moat_msg *reply = test_msg();
	int fails = 0, pongs = 0;

	assert_moat_ok(moat_enclave_set_exit_handler(e, HOST_FAIL, host_fail, &fails));
	assert_moat_ok(moat_enclave_set_exit_handler(e, HOST_PONG, host_pong, &pongs));
	assert_int_equal(enclave_exit(e, HOST_FAIL, NULL, reply), HOST_FAIL_CODE);
	assert_int_equal(fails, 1);
	assert_int_equal(moat_msg_count(reply), 0);

	/* A handler that succeeds: its reply items reach the enclave. */
	assert_int_equal(enclave_exit(e, HOST_PONG, "ping", reply), 0);
	assert_int_equal(pongs, 1);
	assert_int_equal(moat_msg_count(reply), 2);
	test_assert_item_str(reply, 0, "pong");
	test_assert_item_str(reply, 1, "ping");

	/* Removing the handler makes the selector unanswered again. */
	assert_moat_ok(moat_enclave_set_exit_handler(e, HOST_FAIL, NULL, NULL));
	assert_int_equal(enclave_exit(e, HOST_FAIL, NULL, NULL), MOAT_ENOHANDLER);
	assert_int_equal(fails, 1);
	moat_msg_free(reply);
	moat_enclave_destroy(e);
}

static void test_fallback_handler(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	int calls = 0, fails = 0;

	/* The fallback answers selectors without their own handler, including runtime services. */
	assert_moat_ok(moat_enclave_set_fallback_handler(e, host_pong, &calls));
	assert_moat_ok(moat_enclave_set_exit_handler(e, HOST_FAIL, host_fail, &fails));
	assert_int_equal(enclave_exit(e, HOST_PONG, NULL, NULL), 0);
	assert_int_equal(enclave_exit(e, HOST_NONE, NULL, NULL), MOAT_EINVAL); /* host_pong refuses it */
	assert_int_equal(enclave_exit(e, HOST_FAIL, NULL, NULL), HOST_FAIL_CODE);
	assert_int_equal(calls, 2);
	assert_int_equal(fails, 1);
	assert_moat_ok(moat_enclave_set_fallback_handler(e, NULL, NULL));
	assert_int_equal(enclave_exit(e, HOST_PONG, NULL, NULL), MOAT_ENOHANDLER);
	moat_enclave_destroy(e);
}

typedef struct churn {
	moat_enclave *e;
	atomic_int stop;
	int pongs;
	int calls, answered, unanswered, bad;
} churn;

static void *churn_caller(void *p)
{
	churn *c = p;
	moat_msg *in = NULL, *out = NULL;
	int i;

	if (moat_msg_new(&in) < 0 || moat_msg_new(&out) < 0 || moat_msg_push_u64(in, HOST_PONG) < 0) {
		c->bad++;
		goto done;
	}
	for (i = 0; i < 200; i++) {
		uint64_t v;

		moat_msg_reset(out);
		c->calls++;
		if (moat_enclave_call(c->e, T_EXIT, in, out) < 0 || moat_msg_item_u64(out, 0, &v) < 0)
			c->bad++;
		else if ((int64_t)v == 0 && moat_msg_count(out) == 2)
			c->answered++;
		else if ((int64_t)v == MOAT_ENOHANDLER && moat_msg_count(out) == 1)
			c->unanswered++;
		else
			c->bad++;
	}
done:
	moat_msg_free(in);
	moat_msg_free(out);
	return NULL;
}

static void *churn_setter(void *p)
{
	churn *c = p;
	static int pongs;
	int i;

	/* Keep the handler flipping while the callers run (bounded, in case they stall). */
	for (i = 0; i < 1000000 && !atomic_load(&c->stop); i++) {
		if (moat_enclave_set_exit_handler(c->e, HOST_PONG, (i & 1) ? NULL : host_pong, &pongs) < 0)
			break;
		if (moat_enclave_set_exit_handler(c->e, HOST_FAIL + 100 + (uint64_t)(i % 7),
		                                  (i & 1) ? host_fail : NULL, &pongs) < 0)
			break;
	}
	return NULL;
}

static void test_handlers_change_during_calls(void **state)
{
	churn c[2];
	pthread_t callers[2], setter;
	int i;

	memset(c, 0, sizeof(c));
	c[0].e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	c[1].e = c[0].e;
	/*
	 * Exit handlers are added and removed while other threads' exit calls
	 * look them up: each call sees either the handler or none, never
	 * anything else (and TSan/ASan builds see no race or stale read).
	 */
	assert_int_equal(pthread_create(&setter, NULL, churn_setter, &c[0]), 0);
	for (i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&callers[i], NULL, churn_caller, &c[i]), 0);
	for (i = 0; i < 2; i++)
		pthread_join(callers[i], NULL);
	atomic_store(&c[0].stop, 1);
	pthread_join(setter, NULL);
	for (i = 0; i < 2; i++) {
		assert_int_equal(c[i].bad, 0);
		assert_int_equal(c[i].answered + c[i].unanswered, 200);
	}
	moat_enclave_destroy(c[0].e);
}

typedef struct cycle_arg {
	int index;
	int failures;
} cycle_arg;

static void *cycle_main(void *p)
{
	cycle_arg *a = p;
	int i;

	for (i = 0; i < 8; i++) {
		moat_enclave *e = NULL;
		moat_msg *in = NULL, *out = NULL;
		uint64_t v = 1, mine = (uint64_t)a->index * 1000 + (uint64_t)i + 1;

		/* A fresh instance starts at 0 and then holds exactly what this thread set. */
		if (moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), NULL) < 0 || moat_msg_new(&in) < 0 ||
		    moat_msg_new(&out) < 0 || moat_enclave_call(e, T_GLOBAL_GET, NULL, out) < 0 ||
		    moat_msg_item_u64(out, 0, &v) < 0 || v != 0 || moat_msg_push_u64(in, mine) < 0 ||
		    moat_enclave_call(e, T_GLOBAL_SET, in, NULL) < 0) {
			fprintf(stderr, "cycle %d: fresh value %llu: %s\n", i, (unsigned long long)v,
			        moat_error_last()->message);
			a->failures++;
		}
		moat_msg_reset(out);
		if (e && (moat_enclave_call(e, T_GLOBAL_GET, NULL, out) < 0 ||
		          moat_msg_item_u64(out, 0, &v) < 0 || v != mine)) {
			fprintf(stderr, "cycle %d: got %llu, set %llu\n", i, (unsigned long long)v,
			        (unsigned long long)mine);
			a->failures++;
		}
		moat_msg_free(in);
		moat_msg_free(out);
		moat_enclave_destroy(e);
	}
	return NULL;
}

static void test_concurrent_load_destroy(void **state)
{
	pthread_t t[4];
	cycle_arg a[4];
	int i;

	/* Loads, calls and destroys on several threads at once, each instance with its own state. */
	memset(a, 0, sizeof(a));
	for (i = 0; i < 4; i++) {
		a[i].index = i + 1;
		assert_int_equal(pthread_create(&t[i], NULL, cycle_main, &a[i]), 0);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(a[i].failures, 0);
	}
}

/* ---- thread limit ---- */

typedef struct blocker {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int entered, released;
	moat_enclave *e;
	int rc;          /* the blocked call's result */
	int64_t seen;    /* what the enclave's exit call returned */
	atomic_int done; /* the second caller (WAIT test) finished */
	int second_rc;
} blocker;

static int host_block(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	blocker *b = payload;

	pthread_mutex_lock(&b->lock);
	b->entered = 1;
	pthread_cond_broadcast(&b->cond);
	while (!b->released)
		pthread_cond_wait(&b->cond, &b->lock);
	pthread_mutex_unlock(&b->lock);
	return 0;
}

static void *blocked_caller(void *p)
{
	blocker *b = p;
	moat_msg *in = NULL, *out = NULL;
	uint64_t v = 1;

	b->rc = -1;
	if (moat_msg_new(&in) == 0 && moat_msg_new(&out) == 0 && moat_msg_push_u64(in, HOST_BLOCK) == 0) {
		b->rc = moat_enclave_call(b->e, T_EXIT, in, out);
		if (b->rc == 0 && moat_msg_item_u64(out, 0, &v) == 0)
			b->seen = (int64_t)v;
	}
	moat_msg_free(in);
	moat_msg_free(out);
	return NULL;
}

static void *second_caller(void *p)
{
	blocker *b = p;

	b->second_rc = moat_enclave_call(b->e, T_GLOBAL_GET, NULL, NULL);
	atomic_store(&b->done, 1);
	return NULL;
}

static void blocker_wait_entered(blocker *b)
{
	pthread_mutex_lock(&b->lock);
	while (!b->entered)
		pthread_cond_wait(&b->cond, &b->lock);
	pthread_mutex_unlock(&b->lock);
}

static void blocker_release(blocker *b)
{
	pthread_mutex_lock(&b->lock);
	b->released = 1;
	pthread_cond_broadcast(&b->cond);
	pthread_mutex_unlock(&b->lock);
}

static void test_max_threads_fail(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	blocker b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL, 0, 1, 0, 0};
	pthread_t t;

	o.max_threads = 1;
	o.thread_policy = MOAT_THREADS_FAIL;
	b.e = test_load(TEST_ENCLAVE("test_enclave"), &o);
	assert_moat_ok(moat_enclave_set_exit_handler(b.e, HOST_BLOCK, host_block, &b));
	assert_int_equal(pthread_create(&t, NULL, blocked_caller, &b), 0);
	blocker_wait_entered(&b);

	/* One thread is inside (parked in an exit call): a second one is refused at once. */
	assert_int_equal(moat_enclave_call(b.e, T_GLOBAL_GET, NULL, NULL), MOAT_EBUSY);
	assert_int_equal(moat_error_last()->code, MOAT_EBUSY);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_API);

	blocker_release(&b);
	pthread_join(t, NULL);
	assert_int_equal(b.rc, 0);
	assert_int_equal(b.seen, 0);
	/* The slot is free again. */
	assert_int_equal(global_get(b.e), 0);
	moat_enclave_destroy(b.e);
}

static void test_max_threads_wait(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	blocker b = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, NULL, 0, 1, 0, 0};
	pthread_t t1, t2;
	int early;

	o.max_threads = 1;
	o.thread_policy = MOAT_THREADS_WAIT;
	b.e = test_load(TEST_ENCLAVE("test_enclave"), &o);
	assert_moat_ok(moat_enclave_set_exit_handler(b.e, HOST_BLOCK, host_block, &b));
	assert_int_equal(pthread_create(&t1, NULL, blocked_caller, &b), 0);
	blocker_wait_entered(&b);
	assert_int_equal(pthread_create(&t2, NULL, second_caller, &b), 0);
	/*
	 * The second call must not get in while the first is inside. Give it time
	 * to (wrongly) finish; if the limit works, it is still waiting.
	 */
	sleep_ms(200);
	early = atomic_load(&b.done);
	blocker_release(&b);
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	assert_int_equal(early, 0);
	assert_int_equal(b.rc, 0);
	assert_int_equal(b.second_rc, 0);
	assert_int_equal(atomic_load(&b.done), 1);
	moat_enclave_destroy(b.e);
}

static void test_max_threads_donated(void **state)
{
	static const int policies[] = {MOAT_THREADS_FAIL, MOAT_THREADS_WAIT};
	moat_msg *in = test_msg(), *out = test_msg();
	size_t i;

	/*
	 * max_threads limits the application's callers. Threads the enclave
	 * starts itself must still run at the limit, or an enclave that starts
	 * and joins a thread would hang (WAIT) or lose the task (FAIL).
	 */
	assert_int_equal(moat_msg_push_u64(in, 4), 0);
	for (i = 0; i < 2; i++) {
		moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
		moat_enclave *e;

		o.max_threads = 1;
		o.thread_policy = policies[i];
		e = test_load(TEST_ENCLAVE("test_enclave"), &o);
		moat_msg_reset(out);
		assert_moat_ok(moat_enclave_call(e, T_THREADS, in, out));
		assert_int_equal(test_item_u64(out, 0), 4);
		assert_int_equal(test_item_u64(out, 1), 4);
		moat_enclave_destroy(e);
	}
	moat_msg_free(in);
	moat_msg_free(out);
}

/* ---- lifecycle, sizes, config ---- */

static void test_destroy_idle(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	int i;

	/* Never called. */
	moat_enclave_destroy(e);
	/* Called, then idle; repeated so leaks or fd exhaustion would show. */
	for (i = 0; i < 20; i++) {
		e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
		global_set(e, (uint64_t)i + 1);
		assert_int_equal(global_get(e), (uint64_t)i + 1);
		moat_enclave_destroy(e);
	}
	moat_enclave_destroy(NULL);

	/* A new instance never inherits the state of a destroyed one. */
	for (i = 0; i < 5; i++) {
		e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
		assert_int_equal(global_get(e), 0);
		global_set(e, 77);
		moat_enclave_destroy(e);
	}
}

#define LARGE_LEN ((size_t)3 << 20)

static void test_large_items(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	moat_msg *in = test_msg(), *out = test_msg();
	uint8_t *big = malloc(LARGE_LEN), *big2 = malloc(LARGE_LEN / 3);
	const void *d;
	size_t i, len;

	assert_non_null(big);
	assert_non_null(big2);
	for (i = 0; i < LARGE_LEN; i++)
		big[i] = (uint8_t)(i * 131 + (i >> 12));
	for (i = 0; i < LARGE_LEN / 3; i++)
		big2[i] = (uint8_t) ~(i * 7);
	assert_int_equal(moat_msg_push_borrowed(in, big, LARGE_LEN), 0);
	assert_int_equal(moat_msg_push(in, NULL, 0), 0);
	assert_int_equal(moat_msg_push_str(in, "tail"), 0);
	assert_int_equal(moat_msg_push_borrowed(in, big2, LARGE_LEN / 3), 0);
	assert_moat_ok(moat_enclave_call(e, T_ECHO, in, out));
	assert_int_equal(moat_msg_count(out), 4);
	assert_int_equal(moat_msg_item(out, 0, &d, &len), 0);
	assert_int_equal(len, LARGE_LEN);
	assert_memory_equal(d, big, LARGE_LEN);
	assert_int_equal(moat_msg_item(out, 1, &d, &len), 0);
	assert_int_equal(len, 0);
	test_assert_item_str(out, 2, "tail");
	assert_int_equal(moat_msg_item(out, 3, &d, &len), 0);
	assert_int_equal(len, LARGE_LEN / 3);
	assert_memory_equal(d, big2, LARGE_LEN / 3);
	free(big);
	free(big2);
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static void check_config(const void *cfg, size_t len)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e;
	moat_msg *out = test_msg();
	const void *d;
	size_t got;

	o.config = cfg;
	o.config_len = len;
	e = test_load(TEST_ENCLAVE("test_enclave"), &o);
	assert_moat_ok(moat_enclave_call(e, T_CONFIG, NULL, out));
	assert_int_equal(moat_msg_item(out, 0, &d, &got), 0);
	assert_int_equal(got, len);
	if (len)
		assert_memory_equal(d, cfg, len);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static void test_config(void **state)
{
	static const char cfg[] = "mode=test\0binary\xff\x00tail";
	uint8_t *big = malloc(100000);
	size_t i;

	assert_non_null(big);
	check_config(cfg, sizeof(cfg)); /* embedded NULs and high bytes survive */
	check_config(NULL, 0);
	for (i = 0; i < 100000; i++)
		big[i] = (uint8_t)(i ^ (i >> 8));
	check_config(big, 100000);
	free(big);
}

static void test_init_failure(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = (moat_enclave *)&o; /* must be overwritten with NULL */
	const moat_error *err;

	o.config = T_INIT_FAIL_CONFIG;
	o.config_len = strlen(T_INIT_FAIL_CONFIG);
	assert_int_equal(moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), &o), MOAT_EINIT);
	assert_null(e);
	err = moat_error_last();
	assert_int_equal(err->code, MOAT_EINIT);
	assert_int_equal(err->origin, MOAT_ORIGIN_ENCLAVE);
	assert_true(err->message[0] != '\0');
	/* The image is fine with another config. */
	check_config("ok", 2);
}

static void test_spawn_in_init(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e;
	moat_msg *in = test_msg(), *out = test_msg();

	/*
	 * The handle does not exist yet while init runs, so a thread cannot
	 * enter the enclave: moat_thread_start() from init is refused (and the
	 * load itself still works).
	 */
	o.config = T_SPAWN_IN_INIT_CONFIG;
	o.config_len = strlen(T_SPAWN_IN_INIT_CONFIG);
	e = test_load(TEST_ENCLAVE("test_enclave"), &o);
	assert_moat_ok(moat_enclave_call(e, T_INIT_SPAWN, NULL, out));
	assert_int_equal((int64_t)test_item_u64(out, 0), MOAT_EINVAL);
	/* Threads work once the load has finished. */
	moat_msg_reset(out);
	assert_int_equal(moat_msg_push_u64(in, 2), 0);
	assert_moat_ok(moat_enclave_call(e, T_THREADS, in, out));
	assert_int_equal(test_item_u64(out, 1), 2);
	moat_enclave_destroy(e);
	moat_msg_free(in);
	moat_msg_free(out);
}

/* ---- init's exit calls answered by the application's handlers (MOAT_LOAD_DEFER_INIT) ---- */

typedef struct init_exit_ctx {
	moat_enclave *e;
	int calls;
	int nested_rc;
} init_exit_ctx;

/* Only the application answers T_INIT_EXIT_SELECTOR: with 4242, echoed by an entry call nested in init. */
static int init_exit_handler(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	init_exit_ctx *c = payload;
	moat_msg *echo_in = NULL;
	int rc;

	c->calls++;
	if ((rc = moat_msg_new(&echo_in)) < 0 || (rc = moat_msg_push_u64(echo_in, 4242)) < 0) {
		moat_msg_free(echo_in);
		return rc;
	}
	c->nested_rc = moat_enclave_call(c->e, T_ECHO, echo_in, out);
	moat_msg_free(echo_in);
	return c->nested_rc;
}

static moat_enclave *load_deferred(const char *config, unsigned int flags)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;

	o.flags = flags;
	o.config = config;
	o.config_len = strlen(config);
	return test_load(TEST_ENCLAVE("test_enclave"), &o);
}

/* The two u64s T_INIT_EXIT returns: what init's exit call returned and what its reply said. */
static void expect_init_exit(moat_enclave *e, int64_t rc, uint64_t value)
{
	moat_msg *out = test_msg();

	assert_moat_ok(moat_enclave_call(e, T_INIT_EXIT, NULL, out));
	assert_int_equal((int64_t)test_item_u64(out, 0), rc);
	assert_int_equal(test_item_u64(out, 1), value);
	moat_msg_free(out);
}

static void test_deferred_init(void **state)
{
	log_capture cap = {PTHREAD_MUTEX_INITIALIZER, "", 0};
	init_exit_ctx c = {NULL, 0, 1};
	moat_msg *out = test_msg();
	moat_enclave *e = load_deferred(T_INIT_EXIT_CONFIG, MOAT_LOAD_DEFER_INIT);

	/* Init has not run: entry calls are refused (the application's mistake). */
	assert_int_equal(moat_enclave_call(e, T_ECHO, NULL, out), MOAT_EINVAL);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_API);
	assert_non_null(strstr(moat_error_last()->message, "moat_enclave_start"));
	/* The handlers set now answer init's exit calls, its log line too, on every backend. */
	c.e = e;
	assert_moat_ok(moat_enclave_set_exit_handler(e, T_INIT_EXIT_SELECTOR, init_exit_handler, &c));
	assert_moat_ok(moat_enclave_set_exit_handler(e, MOAT_SELECTOR_LOG, capture_log, &cap));
	assert_moat_ok(moat_enclave_start(e));
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.nested_rc, 0); /* the handler's entry call, nested in init, ran */
	assert_int_equal(cap.lines, 1);
	assert_string_equal(cap.line, T_INIT_EXIT_LOG);
	/* What the handler answered is what init kept; the config reached init. */
	expect_init_exit(e, 0, 4242);
	assert_moat_ok(moat_enclave_call(e, T_CONFIG, NULL, out));
	test_assert_item_str(out, 0, T_INIT_EXIT_CONFIG);
	/* Once only. */
	assert_int_equal(moat_enclave_start(e), MOAT_EINVAL);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_API);
	moat_enclave_destroy(e);

	/* Without the flag init ran in the load, before any handler could be set: none answered. */
	e = load_deferred(T_INIT_EXIT_CONFIG, 0);
	expect_init_exit(e, MOAT_ENOHANDLER, 0);
	assert_int_equal(moat_enclave_start(e), MOAT_EINVAL);
	moat_enclave_destroy(e);
	/* A deferred load that is never started is destroyed all the same (no finalizer runs). */
	e = load_deferred(T_INIT_EXIT_CONFIG, MOAT_LOAD_DEFER_INIT);
	moat_enclave_destroy(e);
	moat_msg_free(out);
}

/* A failing init after a deferred load: the load's error, and the handle good only for destroy. */
static void test_deferred_init_failure(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;
	char want[1024];

	o.config = T_INIT_FAIL_CONFIG;
	o.config_len = strlen(T_INIT_FAIL_CONFIG);
	assert_int_equal(moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), &o), MOAT_EINIT);
	snprintf(want, sizeof(want), "%s", moat_error_last()->message);
	e = load_deferred(T_INIT_FAIL_CONFIG, MOAT_LOAD_DEFER_INIT);
	assert_int_equal(moat_enclave_start(e), MOAT_EINIT);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	assert_string_equal(moat_error_last()->message, want);
	assert_int_equal(moat_enclave_call(e, T_ECHO, NULL, NULL), MOAT_EINIT);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_ENCLAVE);
	assert_int_equal(moat_enclave_start(e), MOAT_EINVAL);
	moat_enclave_destroy(e);
	assert_int_equal(moat_enclave_start(NULL), MOAT_EINVAL);
}

typedef struct fini_seen {
	int calls;
	int64_t spawn_rc;
} fini_seen;

static int host_fini(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	fini_seen *f = payload;
	uint64_t v = 0;

	f->calls++;
	if (moat_msg_item_u64(in, 0, &v) == 0)
		f->spawn_rc = (int64_t)v;
	return 0;
}

static void test_finalizer_exit_call(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	moat_msg *in = test_msg();
	fini_seen f = {0, 1};

	/* The finalizer runs at destroy and can still make exit calls; it cannot start threads. */
	assert_moat_ok(moat_enclave_set_exit_handler(e, HOST_PONG, host_fini, &f));
	assert_int_equal(moat_msg_push_u64(in, HOST_PONG), 0);
	assert_moat_ok(moat_enclave_call(e, T_ON_FINI, in, NULL));
	assert_int_equal(f.calls, 0);
	moat_enclave_destroy(e);
	assert_int_equal(f.calls, 1);
	assert_int_equal(f.spawn_rc, MOAT_EINVAL);
	moat_msg_free(in);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void test_host_time(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	moat_msg *out = test_msg();
	uint64_t before, after, t;

	/* The time service is answered by this host: its clock, read during the call. */
	before = now_ns();
	assert_moat_ok(moat_enclave_call(e, T_TIME, NULL, out));
	after = now_ns();
	t = test_item_u64(out, 0);
	/* 1 s of slack only covers a wall-clock step during the call; a wrong source is far off. */
	assert_true(t + 1000000000u >= before);
	assert_true(t <= after + 1000000000u);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static void test_identity(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	uint8_t m[MOAT_MEASUREMENT_LEN];
	moat_identity id;

	assert_moat_ok(moat_enclave_identity(e, &id));
	assert_moat_ok(moat_measure_file(m, TEST_ENCLAVE("test_enclave")));
	assert_memory_equal(id.measurement, m, MOAT_MEASUREMENT_LEN);
	assert_non_null(id.backend);
	assert_true(id.backend[0] != '\0');
	moat_enclave_destroy(e);
}

/* ---- the enclave's view of its host ---- */

/* moat_host_identity(): the backend and layers the host's identity reports, from inside. */
static void test_host_identity(void **state)
{
	moat_enclave *e = test_load(TEST_ENCLAVE("test_enclave"), NULL);
	moat_msg *out = test_msg();
	moat_identity id;
	const void *d;
	size_t len;
	char backend[16];

	assert_moat_ok(moat_enclave_identity(e, &id));
	assert_moat_ok(moat_enclave_call(e, T_HOST, NULL, out));
	assert_int_equal(moat_msg_item(out, 0, &d, &len), 0);
	snprintf(backend, sizeof(backend), "%.*s", (int)len, (const char *)d);
	/*
	 * On a target server too the enclave sees what the host sees: "remote",
	 * with the target's local layers and MOAT_ISOLATION_REMOTE.
	 */
	assert_string_equal(backend, id.backend);
	assert_int_equal(test_item_u64(out, 1), id.isolation);
	if (strcmp(id.backend, "remote") == 0)
		assert_true(id.isolation & MOAT_ISOLATION_REMOTE);
	assert_int_equal(test_item_u64(out, 2), 0);
	assert_int_equal(test_item_u64(out, 3), 1);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

/* ---- one error model ---- */

/* Load path with a pin (or none) and expect code and origin, whatever the backend. */
static void expect_load(const char *path, const uint8_t *pin, int code, moat_origin origin)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;
	int rc;

	o.expected_measurement = pin;
	rc = moat_enclave_load(&e, path, &o);
	if (rc != code || moat_error_last()->origin != origin)
		fprintf(stderr, "%s: %d, origin %s: %s\n", path, rc,
		        moat_origin_name(moat_error_last()->origin), moat_error_last()->message);
	assert_int_equal(rc, code);
	assert_int_equal(moat_error_last()->origin, origin);
	assert_null(e);
}

/*
 * The same failure has the same code and origin on every backend: what is
 * wrong with the image the application gave (or its pin) is the
 * application's (api), what the enclave's own code did is the enclave's.
 */
static void test_error_model(void **state)
{
	uint8_t pin[MOAT_MEASUREMENT_LEN];

	expect_load(TEST_ENCLAVE("no_such_enclave"), NULL, MOAT_ENOENT, MOAT_ORIGIN_API);
	expect_load(MOAT_TEST_SOURCE_DIR "/README.md", NULL, MOAT_EBADIMAGE, MOAT_ORIGIN_API);
	expect_load(TEST_ENCLAVE("test_noentry"), NULL, MOAT_ENOENTRY, MOAT_ORIGIN_API);
	expect_load(TEST_ENCLAVE("test_abi"), NULL, MOAT_EABI, MOAT_ORIGIN_API);
	memset(pin, 0xab, sizeof(pin));
	expect_load(TEST_ENCLAVE("test_enclave"), pin, MOAT_EMEASUREMENT, MOAT_ORIGIN_API);
}

/* ---- tracing ---- */

typedef struct trace_capture {
	pthread_mutex_t lock;
	char lines[16][256];
	int n;
} trace_capture;

static void capture_trace(void *payload, moat_log_level level, const char *message)
{
	trace_capture *c = payload;

	if (level != MOAT_LOG_DEBUG || strncmp(message, "trace ", 6) != 0)
		return;
	pthread_mutex_lock(&c->lock);
	if (c->n < 16)
		snprintf(c->lines[c->n++], sizeof(c->lines[0]), "%s", message);
	pthread_mutex_unlock(&c->lock);
}

/* The traced line that starts with prefix, or NULL. */
static const char *trace_find(trace_capture *c, const char *prefix)
{
	int i;

	for (i = 0; i < c->n; i++)
		if (strncmp(c->lines[i], prefix, strlen(prefix)) == 0)
			return c->lines[i];
	return NULL;
}

/* MOAT_LOAD_TRACE: every entry and exit call, with the backend, sizes and result, through the log. */
static void test_trace(void **state)
{
	static trace_capture cap = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0};
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_msg *in = test_msg(), *out = test_msg();
	char want[128];
	const char *line;
	moat_identity id;
	moat_enclave *e;

	o.flags = MOAT_LOAD_TRACE;
	e = test_load(TEST_ENCLAVE("hello_enclave"), &o);
	assert_moat_ok(moat_enclave_identity(e, &id));
	moat_log_set(capture_trace, &cap);
	assert_int_equal(moat_msg_push_str(in, "trace"), 0);
	assert_moat_ok(moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out));
	assert_int_equal(moat_enclave_call(e, MOAT_SELECTOR_USER + 999, NULL, NULL), MOAT_ENOSELECTOR);
	moat_log_set(NULL, NULL);
	moat_enclave_destroy(e);
	/* "Hello, trace!" (13 bytes) for "trace" (5 bytes); the greeting's log line is an exit call. */
	snprintf(want, sizeof(want), "trace %s: entry call 1024: in 1 item 5 B, out 1 item 13 B, result 0, ",
	         id.backend);
	line = trace_find(&cap, want);
	if (!line)
		fprintf(stderr, "no '%s' among %d traced lines (first: '%s')\n", want, cap.n, cap.lines[0]);
	assert_non_null(line);
	assert_non_null(strstr(line, " us"));
	snprintf(want, sizeof(want), "trace %s: exit call 1: in 1 item ", id.backend);
	assert_non_null(trace_find(&cap, want));
	snprintf(want, sizeof(want),
	         "trace %s: entry call 2023: in 0 items 0 B, out 0 items 0 B, result -10 (", id.backend);
	assert_non_null(trace_find(&cap, want));
	/* Without the flag nothing is traced. */
	cap.n = 0;
	e = test_load(TEST_ENCLAVE("hello_enclave"), NULL);
	moat_log_set(capture_trace, &cap);
	assert_moat_ok(moat_enclave_call(e, MOAT_SELECTOR_RUN, in, NULL));
	moat_log_set(NULL, NULL);
	moat_enclave_destroy(e);
	assert_int_equal(cap.n, 0);
	moat_msg_free(in);
	moat_msg_free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hello),
	    cmocka_unit_test(test_kv),
	    cmocka_unit_test(test_fib_nesting),
	    cmocka_unit_test(test_threads_example),
	    cmocka_unit_test(test_donated_threads),
	    cmocka_unit_test(test_many_threads),
	    cmocka_unit_test(test_two_instances),
	    cmocka_unit_test(test_unknown_selector),
	    cmocka_unit_test(test_handler_error),
	    cmocka_unit_test(test_null_messages),
	    cmocka_unit_test(test_exit_no_handler),
	    cmocka_unit_test(test_exit_handler_error),
	    cmocka_unit_test(test_fallback_handler),
	    cmocka_unit_test(test_handlers_change_during_calls),
	    cmocka_unit_test(test_concurrent_load_destroy),
	    cmocka_unit_test(test_max_threads_fail),
	    cmocka_unit_test(test_max_threads_wait),
	    cmocka_unit_test(test_max_threads_donated),
	    cmocka_unit_test(test_destroy_idle),
	    cmocka_unit_test(test_large_items),
	    cmocka_unit_test(test_config),
	    cmocka_unit_test(test_init_failure),
	    cmocka_unit_test(test_spawn_in_init),
	    cmocka_unit_test(test_finalizer_exit_call),
	    cmocka_unit_test(test_host_time),
	    cmocka_unit_test(test_identity),
	    cmocka_unit_test(test_trace),
	    cmocka_unit_test(test_error_model),
	    cmocka_unit_test(test_host_identity),
	    cmocka_unit_test(test_deferred_init),
	    cmocka_unit_test(test_deferred_init_failure),
	};
	const char *env = getenv("MOAT_BACKEND");
	moat_enclave *e = NULL;
	moat_identity id;

	/* Say which backend this run exercises, as libmoat resolved it. */
	if (moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), NULL) < 0 ||
	    moat_enclave_identity(e, &id) < 0) {
		fprintf(stderr, "test_backend_suite: cannot load the test enclave on MOAT_BACKEND=%s: %s\n",
		        env ? env : "(unset)", moat_error_last()->message);
		return 1;
	}
	printf("test_backend_suite: backend %s (MOAT_BACKEND=%s, isolation 0x%x)\n", id.backend,
	       env ? env : "(unset)", id.isolation);
	fflush(stdout);
	moat_enclave_destroy(e);
	return cmocka_run_group_tests_name("backend_suite", tests, NULL, NULL);
}
