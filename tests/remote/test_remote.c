/*
 * Remote-only behaviour against real moatd processes on loopback: identity
 * and the signed load report, loading by name, pins, target limits, TLS and
 * mutual TLS, per-call deadlines, isolation between sessions.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "fib_raw.h"
#include "kv_raw.h"
#include "moat_test.h"
#include "moatd_helper.h"
#include "remote_enclave.h"
#include "rpc/rpc.h"
#include "test_enclave.h"

static test_moatd shared;

static int group_setup(void **state)
{
	return test_moatd_start(&shared, "grpc", "--enclave-dir", MOAT_TEST_ENCLAVES, "--allow-upload",
	                        "--max-message-bytes", "65536", NULL);
}

static int group_teardown(void **state)
{
	/* moatd must exit 0 on SIGTERM after destroying what is left. */
	return test_moatd_stop(&shared) == 0 ? 0 : -1;
}

static moat_enclave *load_on(const char *uri, const char *path, moat_load_options *o)
{
	moat_load_options d = MOAT_LOAD_OPTIONS_INIT;

	if (!o)
		o = &d;
	o->backend = uri;
	return test_load(path, o);
}

static int load_fails(const char *uri, const char *path, moat_load_options *o, int code, moat_origin origin)
{
	moat_load_options d = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;
	int rc;

	if (!o)
		o = &d;
	o->backend = uri;
	rc = moat_enclave_load(&e, path, o);
	if (rc != code || moat_error_last()->origin != origin)
		print_error("load %s: rc %d origin %s: %s\n", path, rc,
		            moat_origin_name(moat_error_last()->origin), moat_error_last()->message);
	assert_int_equal(rc, code);
	assert_int_equal(moat_error_last()->origin, origin);
	assert_null(e);
	return rc;
}

static void hello_works(moat_enclave *e)
{
	moat_msg *in = test_msg(), *out = test_msg();

	moat_msg_push_str(in, "remote");
	assert_moat_ok(moat_enclave_call(e, MOAT_SELECTOR_RUN, in, out));
	test_assert_item_str(out, 0, "Hello, remote!");
	moat_msg_free(in);
	moat_msg_free(out);
}

static void test_identity(void **state)
{
	moat_enclave *e = load_on(shared.uri, TEST_ENCLAVE("hello_enclave"), NULL);
	uint8_t m[MOAT_MEASUREMENT_LEN];
	moat_identity id;

	assert_moat_ok(moat_enclave_identity(e, &id));
	assert_moat_ok(moat_measure_file(m, TEST_ENCLAVE("hello_enclave")));
	assert_memory_equal(id.measurement, m, sizeof(m));
	assert_string_equal(id.backend, "remote");
	assert_true(id.has_target_key);
	assert_true(id.isolation & MOAT_ISOLATION_REMOTE);
	hello_works(e);
	moat_enclave_destroy(e);
}

static void test_load_by_name(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e;

	o.flags = MOAT_LOAD_BY_NAME;
	e = load_on(shared.uri, "hello_enclave", &o);
	hello_works(e);
	moat_enclave_destroy(e);
	o.flags = MOAT_LOAD_BY_NAME;
	e = load_on(shared.uri, "hello_enclave.so", &o);
	moat_enclave_destroy(e);

	o.flags = MOAT_LOAD_BY_NAME;
	load_fails(shared.uri, "no_such_enclave", &o, MOAT_ENOENT, MOAT_ORIGIN_TARGET);
	o.flags = MOAT_LOAD_BY_NAME;
	load_fails(shared.uri, "../enclaves/hello_enclave.so", &o, MOAT_EINVAL, MOAT_ORIGIN_TARGET);
}

static void test_measurement_pin(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	uint8_t m[MOAT_MEASUREMENT_LEN], wrong[MOAT_MEASUREMENT_LEN] = {0};
	moat_enclave *e;

	assert_moat_ok(moat_measure_file(m, TEST_ENCLAVE("hello_enclave")));
	o.expected_measurement = m;
	e = load_on(shared.uri, TEST_ENCLAVE("hello_enclave"), &o);
	moat_enclave_destroy(e);

	/* The target checks the pin before loading, by name and after upload alike (origin api, as on sim and
	 * proc). */
	o.expected_measurement = wrong;
	load_fails(shared.uri, TEST_ENCLAVE("hello_enclave"), &o, MOAT_EMEASUREMENT, MOAT_ORIGIN_API);
	o.expected_measurement = wrong;
	o.flags = MOAT_LOAD_BY_NAME;
	load_fails(shared.uri, "hello_enclave", &o, MOAT_EMEASUREMENT, MOAT_ORIGIN_API);
}

/* A wrong pin leaves no trace of the image having run (its ELF constructor writes a file). */
static void test_measurement_pin_nothing_runs(void **state)
{
	char marker[160];
	uint8_t wrong[MOAT_MEASUREMENT_LEN] = {1};
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	test_moatd m;

	snprintf(marker, sizeof(marker), "/tmp/moat-marker-%d", (int)getpid());
	unlink(marker);
	setenv(T_MARKER_ENV, marker, 1);
	/* sim inside moatd, so the image's constructor can leave its file where the test sees it. */
	assert_int_equal(
	    test_moatd_start(&m, "grpc", "--enclave-dir", MOAT_TEST_ENCLAVES, "--backend", "sim", NULL), 0);
	unsetenv(T_MARKER_ENV);
	o.expected_measurement = wrong;
	o.flags = MOAT_LOAD_BY_NAME;
	load_fails(m.uri, "test_marker", &o, MOAT_EMEASUREMENT, MOAT_ORIGIN_API);
	assert_int_not_equal(access(marker, F_OK), 0);
	/* The same image without a pin does run (so the marker would have shown it). */
	o.expected_measurement = NULL;
	moat_enclave_destroy(load_on(m.uri, "test_marker", &o));
	assert_int_equal(access(marker, F_OK), 0);
	unlink(marker);
	assert_int_equal(test_moatd_stop(&m), 0);
}

static void test_target_key_pin(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = load_on(shared.uri, TEST_ENCLAVE("hello_enclave"), NULL);
	uint8_t key[MOAT_TARGET_KEY_LEN];
	moat_identity id;

	assert_moat_ok(moat_enclave_identity(e, &id));
	memcpy(key, id.target_key, sizeof(key));
	moat_enclave_destroy(e);

	o.target_key = key;
	e = load_on(shared.uri, TEST_ENCLAVE("hello_enclave"), &o);
	hello_works(e);
	moat_enclave_destroy(e);

	key[0] ^= 0xff;
	o.target_key = key;
	load_fails(shared.uri, TEST_ENCLAVE("hello_enclave"), &o, MOAT_EKEY, MOAT_ORIGIN_TARGET);
}

static void test_upload_refused(void **state)
{
	test_moatd m;

	assert_int_equal(test_moatd_start(&m, "grpc", NULL), 0);
	load_fails(m.uri, TEST_ENCLAVE("hello_enclave"), NULL, MOAT_EPERM, MOAT_ORIGIN_TARGET);
	assert_non_null(strstr(moat_error_last()->message, "--allow-upload"));
	assert_int_equal(test_moatd_stop(&m), 0);
}

static void test_image_too_big(void **state)
{
	test_moatd m;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-image-bytes", "1000", NULL),
	                 0);
	load_fails(m.uri, TEST_ENCLAVE("hello_enclave"), NULL, MOAT_ELIMIT, MOAT_ORIGIN_TARGET);
	assert_int_equal(test_moatd_stop(&m), 0);
}

static void test_oversized_message(void **state)
{
	moat_enclave *e = load_on(shared.uri, TEST_ENCLAVE("remote_enclave"), NULL);
	moat_msg *in = test_msg(), *out = test_msg();
	static uint8_t big[100000];

	assert_int_equal(moat_msg_push(in, big, sizeof(big)), 0);
	assert_int_equal(moat_enclave_call(e, R_SIZE, in, out), MOAT_ELIMIT);
	assert_int_equal(moat_error_last()->origin, MOAT_ORIGIN_TARGET);
	/* The session is still fine afterwards. */
	moat_msg_reset(in);
	assert_int_equal(moat_msg_push(in, big, 1000), 0);
	assert_moat_ok(moat_enclave_call(e, R_SIZE, in, out));
	assert_int_equal(test_item_u64(out, 0), 1000);
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(e);
}

static void test_max_sessions(void **state)
{
	moat_enclave *a, *b;
	test_moatd m;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-sessions", "2", NULL), 0);
	a = load_on(m.uri, TEST_ENCLAVE("hello_enclave"), NULL);
	b = load_on(m.uri, TEST_ENCLAVE("hello_enclave"), NULL);
	load_fails(m.uri, TEST_ENCLAVE("hello_enclave"), NULL, MOAT_ELIMIT, MOAT_ORIGIN_TARGET);
	assert_non_null(strstr(moat_error_last()->message, "max-sessions"));
	moat_enclave_destroy(a);
	/* A destroyed session frees its slot at once. */
	a = load_on(m.uri, TEST_ENCLAVE("hello_enclave"), NULL);
	moat_enclave_destroy(a);
	moat_enclave_destroy(b);
	assert_int_equal(test_moatd_stop(&m), 0);
}

typedef struct held_thread {
	moat_enclave *e;
	pthread_barrier_t *called, *release;
	int rc;
} held_thread;

static void *hold_stream(void *arg)
{
	held_thread *h = arg;
	moat_msg *in = NULL, *out = NULL;

	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_u64(in, 1);
	h->rc = moat_enclave_call(h->e, T_GLOBAL_GET, in, out);
	pthread_barrier_wait(h->called);
	/* Keep this thread (and its stream) alive until the test is done. */
	pthread_barrier_wait(h->release);
	moat_msg_free(in);
	moat_msg_free(out);
	return NULL;
}

static void test_max_threads_per_session(void **state)
{
	pthread_barrier_t called, release;
	held_thread h[3];
	pthread_t t[3];
	test_moatd m;
	moat_enclave *e;
	int i, refused = 0;

	assert_int_equal(
	    test_moatd_start(&m, "grpc", "--allow-upload", "--max-threads-per-session", "2", NULL), 0);
	e = load_on(m.uri, TEST_ENCLAVE("test_enclave"), NULL);
	pthread_barrier_init(&called, NULL, 4);
	pthread_barrier_init(&release, NULL, 4);
	for (i = 0; i < 3; i++) {
		h[i].e = e;
		h[i].called = &called;
		h[i].release = &release;
		pthread_create(&t[i], NULL, hold_stream, &h[i]);
	}
	pthread_barrier_wait(&called);
	for (i = 0; i < 3; i++) {
		if (h[i].rc == MOAT_ELIMIT)
			refused++;
		else
			assert_int_equal(h[i].rc, 0);
	}
	assert_int_equal(refused, 1);
	pthread_barrier_wait(&release);
	for (i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&called);
	pthread_barrier_destroy(&release);
	moat_enclave_destroy(e);
	assert_int_equal(test_moatd_stop(&m), 0);
}

static void test_two_sessions_isolated(void **state)
{
	moat_enclave *a = load_on(shared.uri, TEST_ENCLAVE("kv_raw_enclave"), NULL);
	moat_enclave *b = load_on(shared.uri, TEST_ENCLAVE("kv_raw_enclave"), NULL);
	moat_msg *in = test_msg(), *out = test_msg();

	moat_msg_push_str(in, "k");
	moat_msg_push_str(in, "in-a");
	assert_moat_ok(moat_enclave_call(a, KV_PUT, in, out));
	moat_msg_reset(in);
	moat_msg_push_str(in, "k");
	assert_int_equal(moat_enclave_call(b, KV_GET, in, out), MOAT_EHANDLER);
	assert_int_equal(moat_error_last()->enclave_code, KV_NOT_FOUND);
	assert_moat_ok(moat_enclave_call(a, KV_GET, in, out));
	test_assert_item_str(out, 0, "in-a");
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(a);
	moat_enclave_destroy(b);
}

static void test_call_timeout(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e;
	moat_msg *in = test_msg();

	o.call_timeout_ms = 300;
	e = load_on(shared.uri, TEST_ENCLAVE("remote_enclave"), &o);
	moat_msg_push_u64(in, 3000);
	assert_int_equal(moat_enclave_call(e, R_SLEEP, in, NULL), MOAT_ETIMEDOUT);
	assert_non_null(strstr(moat_error_last()->message, "call_timeout_ms"));
	/* The target stopped the enclave (proc): as on proc, the handle is dead from now on. */
	moat_msg_reset(in);
	moat_msg_push_u64(in, 1);
	assert_int_equal(moat_enclave_call(e, R_SLEEP, in, NULL), MOAT_ETIMEDOUT);
	moat_msg_free(in);
	moat_enclave_destroy(e);
}

static void test_unix_socket(void **state)
{
	char sock[320];
	moat_enclave *e;
	test_moatd m;

	assert_int_equal(test_moatd_start(&m, "unix", "--allow-upload", NULL), 0);
	assert_int_equal(strncmp(m.uri, "unix:/", 6), 0);
	e = load_on(m.uri, TEST_ENCLAVE("hello_enclave"), NULL);
	hello_works(e);
	moat_enclave_destroy(e);
	snprintf(sock, sizeof(sock), "%s", m.uri + 5);
	assert_int_equal(access(sock, F_OK), 0);
	assert_int_equal(test_moatd_stop(&m), 0);
	/* moatd removes its socket file when it exits. */
	assert_int_not_equal(access(sock, F_OK), 0);
}

/* An idle handle stays usable across many keepalive periods (something must read the pings' acks). */
static void test_idle_keepalive(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e;

	o.keepalive_ms = 200;
	e = load_on(shared.uri, TEST_ENCLAVE("hello_enclave"), &o);
	hello_works(e);
	test_sleep_ms(2500);
	hello_works(e);
	moat_enclave_destroy(e);
}

static void test_no_target(void **state)
{
	/* Nothing listens on port 1: a clear transport error with a hint, at load. */
	load_fails("grpc://127.0.0.1:1", TEST_ENCLAVE("hello_enclave"), NULL, MOAT_ETRANSPORT,
	           MOAT_ORIGIN_TRANSPORT);
	assert_non_null(strstr(moat_error_last()->message, "moatd"));
}

/* ---- nested calls from many threads ---- */

static int fib_exit(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	return moat_enclave_call(payload, FIB_ENTRY, in, out);
}

typedef struct fib_thread {
	moat_enclave *e;
	uint64_t n, result;
	int rc;
} fib_thread;

static void *fib_main(void *arg)
{
	fib_thread *f = arg;
	moat_msg *in = NULL, *out = NULL;

	moat_msg_new(&in);
	moat_msg_new(&out);
	moat_msg_push_u64(in, f->n);
	f->rc = moat_enclave_call(f->e, FIB_ENTRY, in, out);
	if (f->rc == 0)
		moat_msg_item_u64(out, 0, &f->result);
	moat_msg_free(in);
	moat_msg_free(out);
	return NULL;
}

static void test_nested_fib_threads(void **state)
{
	static const uint64_t fibs[] = {0,    1,    1,    2,     3,     5,     8,     13,    21,
	                                34,   55,   89,   144,   233,   377,   610,   987,   1597,
	                                2584, 4181, 6765, 10946, 17711, 28657, 46368, 75025, 121393};
	moat_enclave *e = load_on(shared.uri, TEST_ENCLAVE("fib_raw_enclave"), NULL);
	fib_thread f[20];
	pthread_t t[20];
	int i;

	moat_enclave_set_exit_handler(e, FIB_EXIT, fib_exit, e);
	for (i = 0; i < 20; i++) {
		f[i].e = e;
		f[i].n = 6 + (uint64_t)i; /* up to 25 levels of nesting each way */
		pthread_create(&t[i], NULL, fib_main, &f[i]);
	}
	for (i = 0; i < 20; i++) {
		pthread_join(t[i], NULL);
		assert_int_equal(f[i].rc, 0);
		assert_int_equal(f[i].result, fibs[f[i].n]);
	}
	moat_enclave_destroy(e);
}

/* ---- TLS ---- */

typedef struct nester {
	moat_enclave *e;
	unsigned int depth, deepest, stop_at;
	int refused;       /* the first failure's code */
	char message[512]; /* and its message */
} nester;

/* The host's exit handler calls back into the enclave: one more level each time, up to stop_at. */
static int nest_again(void *payload, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	nester *n = payload;
	int rc;

	if (n->depth >= n->stop_at)
		return 0;
	if (++n->depth > n->deepest)
		n->deepest = n->depth;
	rc = moat_enclave_call(n->e, R_NEST, in, out);
	if (rc < 0 && !n->refused) {
		n->refused = rc;
		snprintf(n->message, sizeof(n->message), "%s", moat_error_last()->message);
	}
	n->depth--;
	return rc;
}

/* Nest as deep as the host likes on one stream of m; moatd refuses past limit. */
static void nest_until_refused(test_moatd *m, unsigned int limit)
{
	nester n = {NULL, 0, 0, 100000, 0, ""};
	moat_enclave *bystander = load_on(m->uri, TEST_ENCLAVE("kv_raw_enclave"), NULL);
	moat_msg *in = test_msg(), *out = test_msg();

	n.e = load_on(m->uri, TEST_ENCLAVE("remote_enclave"), NULL);
	assert_non_null(n.e);
	assert_int_equal(moat_enclave_set_exit_handler(n.e, R_EXIT_NEST, nest_again, &n), 0);
	assert_true(moat_enclave_call(n.e, R_NEST, NULL, NULL) < 0);
	fprintf(stderr, "nesting refused at depth %u: %s\n", n.deepest, n.message);
	assert_int_equal(n.refused, MOAT_ELIMIT);
	assert_non_null(strstr(n.message, "nested more than"));
	assert_non_null(strstr(n.message, "--max-nesting"));
	assert_int_equal(n.deepest, limit);
	assert_int_equal(n.depth, 0);
	/* Nothing was lost: the same handle, on the same thread, works, and nests within the budget. */
	n.stop_at = limit / 2;
	n.deepest = 0;
	n.refused = 0;
	assert_moat_ok(moat_enclave_call(n.e, R_NEST, NULL, NULL));
	assert_int_equal(n.deepest, limit / 2);
	/* And the other session on the same moatd never noticed. */
	moat_msg_push_str(in, "k");
	moat_msg_push_str(in, "v");
	assert_moat_ok(moat_enclave_call(bystander, KV_PUT, in, out));
	moat_msg_reset(in);
	moat_msg_push_str(in, "k");
	assert_moat_ok(moat_enclave_call(bystander, KV_GET, in, out));
	test_assert_item_str(out, 0, "v");
	moat_msg_free(in);
	moat_msg_free(out);
	moat_enclave_destroy(n.e);
	moat_enclave_destroy(bystander);
}

/*
 * A host that nests 100,000 deep gets MOAT_ELIMIT naming moatd's limit
 * (sim runs every level on moatd's own stack); moatd and its other sessions
 * go on. The options are given as --opt=value.
 */
static void test_nesting_has_a_budget(void **state)
{
	char limit[32];
	test_moatd m;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--backend=sim", NULL), 0);
	nest_until_refused(&m, 1024);
	assert_int_equal(test_moatd_stop(&m), 0);
	snprintf(limit, sizeof(limit), "--max-nesting=%d", 100);
	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--backend=sim", limit, NULL), 0);
	nest_until_refused(&m, 100);
	assert_int_equal(test_moatd_stop(&m), 0);
}

static char certs[128];

static void cert(char *out, size_t cap, const char *name)
{
	snprintf(out, cap, "%s/%s", certs, name);
}

static int tls_setup(void **state)
{
	char cmd[400];

	snprintf(certs, sizeof(certs), "/tmp/moat-certs-XXXXXX");
	if (!mkdtemp(certs))
		return -1;
	snprintf(cmd, sizeof(cmd), "bash %s/tests/remote/make_certs.sh %s", MOAT_TEST_SOURCE_DIR, certs);
	return system(cmd) == 0 ? 0 : -1;
}

static int tls_teardown(void **state)
{
	char cmd[200];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", certs);
	return system(cmd) == 0 ? 0 : -1;
}

static void test_tls(void **state)
{
	char ca[200], other[200], scert[200], skey[200];
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e;
	test_moatd m;

	cert(ca, sizeof(ca), "ca.pem");
	cert(other, sizeof(other), "other-ca.pem");
	cert(scert, sizeof(scert), "server.pem");
	cert(skey, sizeof(skey), "server.key");
	assert_int_equal(
	    test_moatd_start(&m, "grpcs", "--allow-upload", "--tls-cert", scert, "--tls-key", skey, NULL), 0);

	o.tls_ca_file = ca;
	e = load_on(m.uri, TEST_ENCLAVE("hello_enclave"), &o);
	hello_works(e);
	moat_enclave_destroy(e);

	/* The certificate names localhost too. */
	o.tls_server_name = "localhost";
	e = load_on(m.uri, TEST_ENCLAVE("hello_enclave"), &o);
	moat_enclave_destroy(e);

	o.tls_server_name = "wrong.example";
	load_fails(m.uri, TEST_ENCLAVE("hello_enclave"), &o, MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT);
	assert_non_null(strstr(moat_error_last()->message, "tls_server_name"));

	o.tls_server_name = NULL;
	o.tls_ca_file = other;
	load_fails(m.uri, TEST_ENCLAVE("hello_enclave"), &o, MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT);
	assert_non_null(strstr(moat_error_last()->message, "tls_ca_file"));

	/* Plain gRPC to a TLS target. */
	{
		char plain[300];

		snprintf(plain, sizeof(plain), "grpc://%s", m.addr);
		load_fails(plain, TEST_ENCLAVE("hello_enclave"), NULL, MOAT_ETRANSPORT,
		           MOAT_ORIGIN_TRANSPORT);
	}
	assert_int_equal(test_moatd_stop(&m), 0);
}

/*
 * With TLS gRPC accepts connections itself; moatd shuts the newest past
 * --max-connections within a moment, so its descriptors come back to
 * what that many connections hold.
 */
static void test_tls_connections_bounded(void **state)
{
	enum { MAX = 3, N = 8 };
	char ca[200], scert[200], skey[200];
	moat_rpc_channel_opts co = {0};
	moat_rpc_channel *ch[N];
	test_moatd m;
	int base, fds = 0, i, tries;

	(void)state;
	cert(ca, sizeof(ca), "ca.pem");
	cert(scert, sizeof(scert), "server.pem");
	cert(skey, sizeof(skey), "server.key");
	assert_int_equal(test_moatd_start(&m, "grpcs", "--tls-cert", scert, "--tls-key", skey,
	                                  "--max-connections=3", "--backend=sim", NULL),
	                 0);
	moat__rpc_init();
	base = test_proc_count(m.pid, "fd");
	co.target = m.addr;
	co.tls = 1;
	co.ca_file = ca;
	co.max_receive_bytes = -1;
	for (i = 0; i < N; i++) {
		moat_rpc_status st;
		uint8_t *resp = NULL;
		size_t len;

		assert_int_equal(moat__rpc_channel_open(&ch[i], &co), 0);
		/* Connects; the connection may already be shut when the check runs (it then fails). */
		moat__rpc_unary(ch[i], "/grpc.health.v1.Health/Check", NULL, "", 0, &resp, &len, 5000, &st);
		free(resp);
	}
	for (tries = 0; tries < 50; tries++) {
		fds = test_proc_count(m.pid, "fd");
		if (fds <= base + MAX)
			break;
		test_sleep_ms(100);
	}
	print_message(
	    "%d TLS connections with --max-connections %d: moatd's descriptors %d before, %d after\n", N, MAX,
	    base, fds);
	assert_true(fds <= base + MAX);
	for (i = 0; i < N; i++)
		moat__rpc_channel_close(ch[i]);
	moat__rpc_shutdown();
	assert_int_equal(test_moatd_stop(&m), 0);
}

static void test_mtls(void **state)
{
	char ca[200], scert[200], skey[200], ccert[200], ckey[200];
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e;
	test_moatd m;

	cert(ca, sizeof(ca), "ca.pem");
	cert(scert, sizeof(scert), "server.pem");
	cert(skey, sizeof(skey), "server.key");
	cert(ccert, sizeof(ccert), "client.pem");
	cert(ckey, sizeof(ckey), "client.key");
	assert_int_equal(test_moatd_start(&m, "grpcs", "--allow-upload", "--tls-cert", scert, "--tls-key",
	                                  skey, "--tls-client-ca", ca, NULL),
	                 0);
	o.tls_ca_file = ca;
	load_fails(m.uri, TEST_ENCLAVE("hello_enclave"), &o, MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT);
	assert_non_null(strstr(moat_error_last()->message, "client certificate"));

	o.tls_cert_file = ccert;
	o.tls_key_file = ckey;
	e = load_on(m.uri, TEST_ENCLAVE("hello_enclave"), &o);
	hello_works(e);
	moat_enclave_destroy(e);

	/* TLS files on a plain URI are a mistake the API reports. */
	load_fails("grpc://127.0.0.1:1", TEST_ENCLAVE("hello_enclave"), &o, MOAT_EINVAL, MOAT_ORIGIN_API);
	assert_int_equal(test_moatd_stop(&m), 0);
}

int main(void)
{
	const struct CMUnitTest shared_tests[] = {
	    cmocka_unit_test(test_identity),
	    cmocka_unit_test(test_load_by_name),
	    cmocka_unit_test(test_measurement_pin),
	    cmocka_unit_test(test_measurement_pin_nothing_runs),
	    cmocka_unit_test(test_target_key_pin),
	    cmocka_unit_test(test_upload_refused),
	    cmocka_unit_test(test_image_too_big),
	    cmocka_unit_test(test_oversized_message),
	    cmocka_unit_test(test_max_sessions),
	    cmocka_unit_test(test_max_threads_per_session),
	    cmocka_unit_test(test_two_sessions_isolated),
	    cmocka_unit_test(test_call_timeout),
	    cmocka_unit_test(test_idle_keepalive),
	    cmocka_unit_test(test_unix_socket),
	    cmocka_unit_test(test_no_target),
	    cmocka_unit_test(test_nested_fib_threads),
	    cmocka_unit_test(test_nesting_has_a_budget),
	};
	const struct CMUnitTest tls_tests[] = {
	    cmocka_unit_test(test_tls),
	    cmocka_unit_test(test_mtls),
	    cmocka_unit_test(test_tls_connections_bounded),
	};
	int failed = cmocka_run_group_tests_name("remote", shared_tests, group_setup, group_teardown);

	return failed | cmocka_run_group_tests_name("remote_tls", tls_tests, tls_setup, tls_teardown);
}
