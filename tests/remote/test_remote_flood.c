/*
 * moatd under a hostile host: run with 256 file descriptors (setrlimit in
 * the child before exec: this program re-runs itself as the wrapper),
 * flooded by 2,000 calls on 400 connections that never send their
 * request. Every call must end in bounded time, refused
 * (RESOURCE_EXHAUSTED, moat-error -17), timed out by the server
 * (--request-timeout-ms) or, for connections past the descriptor reserve,
 * closed (UNAVAILABLE); none may hang. Afterwards a legitimate host must
 * be served. And a Load with two request messages is refused.
 *
 * None of it holds a thread of moatd's: a unary call's request is read by
 * the rpc loop, an Attach stream is authenticated there, and an open
 * Health/Watch is parked there; moatd's own threads are counted while the
 * flood lasts.
 *
 * The flood's calls send their metadata and nothing else (moat__rpc_watch).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "moat_test.h"
#include "moatd_helper.h"
#include "rpc/rpc.h"
#include "test_enclave.h"

#define N_CONN    400
#define PER_CONN  5
#define N_CALLS   (N_CONN * PER_CONN)
#define FD_LIMIT  256
#define WRAP_FLAG "--exec-with-fd-limit"
#define BOUND_S   40 /* every flood call ends within this */

static char self_path[512];
static test_moatd m;
static char log_path[200];

/* Start moatd through this program as a wrapper that lowers RLIMIT_NOFILE before exec. */
static int start_limited(void)
{
	char ready[200], state[200];
	const char *argv[40];
	moat_launch_opts o = MOAT_LAUNCH_OPTS_INIT;
	moat_launch l;
	int a = 0;

	memset(&m, 0, sizeof(m));
	snprintf(m.dir, sizeof(m.dir), "/tmp/moat-flood-XXXXXX");
	if (!mkdtemp(m.dir))
		return -1;
	snprintf(ready, sizeof(ready), "%s/ready", m.dir);
	snprintf(state, sizeof(state), "%s/state", m.dir);
	snprintf(log_path, sizeof(log_path), "%s/log", m.dir);
	argv[a++] = self_path;
	argv[a++] = WRAP_FLAG;
	argv[a++] = MOAT_TEST_BINDIR "/moatd";
	argv[a++] = "--listen";
	argv[a++] = "127.0.0.1:0";
	argv[a++] = "--state-dir";
	argv[a++] = state;
	argv[a++] = "--enclave-dir";
	argv[a++] = MOAT_TEST_ENCLAVES;
	argv[a++] = "--allow-upload";
	/* Need: 4 x 16 + 16 + 32 + 64 = 176 descriptors, within 256. */
	argv[a++] = "--max-sessions";
	argv[a++] = "4";
	argv[a++] = "--max-threads-per-session";
	argv[a++] = "8";
	argv[a++] = "--max-attached-threads";
	argv[a++] = "16";
	argv[a++] = "--max-pending-calls";
	argv[a++] = "32";
	argv[a++] = "--request-timeout-ms";
	argv[a++] = "3000";
	argv[a++] = "--max-health-watches";
	argv[a++] = "8";
	argv[a++] = "--max-connections";
	argv[a++] = "50";
	argv[a++] = "--log-level";
	argv[a++] = "warn";
	argv[a] = NULL;
	o.argv = argv;
	o.ready_file = ready;
	o.log_file = log_path;
	o.death_signal = SIGKILL;
	o.timeout_ms = 12000;
	if (moat__launch_start(&l, &o) < 0)
		return -1;
	m.pid = l.pid;
	snprintf(m.addr, sizeof(m.addr), "%.*s", (int)sizeof(m.addr) - 1, l.addr);
	snprintf(m.uri, sizeof(m.uri), "grpc://%s", m.addr);
	return 0;
}

static int setup(void **state)
{
	(void)state;
	if (start_limited() < 0)
		return -1;
	moat__rpc_init();
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	moat__rpc_shutdown();
	return test_moatd_stop(&m) == 0 ? 0 : -1;
}

/* A channel of its own connection (the rpc layer gives every channel a private subchannel pool). */
static moat_rpc_channel *open_channel(void)
{
	moat_rpc_channel_opts o = {0};
	moat_rpc_channel *ch = NULL;

	o.target = m.addr;
	o.keepalive_ms = 1000;
	o.max_receive_bytes = -1;
	return moat__rpc_channel_open(&ch, &o) == 0 ? ch : NULL;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A legitimate host loads an enclave and calls it; retried while the flood's connections close. */
static int legit_host(void)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	int attempt;

	o.backend = m.uri;
	for (attempt = 0; attempt < 20; attempt++) {
		moat_enclave *e = NULL;
		moat_msg *in = NULL, *out = NULL;
		int rc;

		if (moat_enclave_load(&e, TEST_ENCLAVE("test_enclave"), &o) == 0) {
			moat_msg_new(&in);
			moat_msg_new(&out);
			moat_msg_push_str(in, "still here");
			rc = moat_enclave_call(e, T_ECHO, in, out);
			moat_msg_free(in);
			moat_msg_free(out);
			moat_enclave_destroy(e);
			if (rc == 0)
				return 0;
		}
		print_message("legitimate host, attempt %d: %s\n", attempt, moat_error_last()->message);
		test_sleep_ms(500);
	}
	return -1;
}

typedef struct flood_tally {
	int ended, exhausted, timed_out, closed, other;
	int named; /* the first refusal named the option that sets the limit */
} flood_tally;

/* Count how a flood call ended. */
static void tally(flood_tally *t, const moat_rpc_status *s)
{
	t->ended++;
	switch (s->code) {
	case MOAT_RPC_RESOURCE_EXHAUSTED:
		assert_int_equal(s->moat_code, MOAT_ELIMIT);
		if (t->exhausted++ == 0) {
			print_message("refused: %s\n", s->message);
			t->named = strstr(s->message, "--max-pending-calls") != NULL;
		}
		break;
	case MOAT_RPC_DEADLINE_EXCEEDED: t->timed_out++; break;
	case MOAT_RPC_UNAVAILABLE: t->closed++; break;
	default: print_message("unexpected status %d: %s\n", s->code, s->message); t->other++;
	}
}

static void test_flood_keeps_serving(void **state)
{
	static moat_rpc_call *calls[N_CALLS];
	static int done[N_CALLS];
	static moat_rpc_channel *chans[N_CONN];
	flood_tally t = {0, 0, 0, 0, 0, 0};
	int base = test_own_threads(m.pid), peak = base, i;
	int64_t until;
	struct stat st;

	(void)state;
	assert_true(base > 0);
	for (i = 0; i < N_CONN; i++) {
		chans[i] = open_channel();
		assert_non_null(chans[i]);
	}
	/* Load and Health (unary: they wait for their request), both silent: metadata only. */
	for (i = 0; i < N_CALLS; i++) {
		moat_rpc_status s;

		assert_int_equal(moat__rpc_stream_open(
		                     &calls[i], chans[i / PER_CONN],
		                     i % 2 ? "/moat.v1.Target/Load" : "/grpc.health.v1.Health/Check", NULL),
		                 0);
		/* The first watch sends the metadata and starts a receive; it does not wait. */
		if (moat__rpc_watch(calls[i], &s) != 0) {
			done[i] = 1;
			tally(&t, &s);
		}
	}
	until = now_ms() + BOUND_S * 1000;
	while (t.ended < N_CALLS && now_ms() < until) {
		for (i = 0; i < N_CALLS; i++) {
			moat_rpc_status s;

			if (done[i] || moat__rpc_watch(calls[i], &s) == 0)
				continue;
			done[i] = 1;
			tally(&t, &s);
		}
		i = test_own_threads(m.pid);
		peak = i > peak ? i : peak;
		test_sleep_ms(5);
	}
	print_message("flood: %d calls ended (%d refused, %d timed out by moatd, %d on closed connections, "
	              "%d other); moatd's own threads: %d before, at most %d during\n",
	              t.ended, t.exhausted, t.timed_out, t.closed, t.other, base, peak);
	/* Never a hang: every call ended within the bound. */
	for (i = 0; i < N_CALLS; i++)
		moat__rpc_call_free(calls[i]);
	for (i = 0; i < N_CONN; i++)
		moat__rpc_channel_close(chans[i]);
	assert_int_equal(t.ended, N_CALLS);
	assert_int_equal(t.other, 0);
	assert_true(t.exhausted > 0);
	assert_int_equal(t.named, 1);
	/* Calls waiting for their request held no thread. */
	assert_int_equal(peak, base);

	/* The listener lives on: a legitimate host is served. */
	assert_int_equal(kill(m.pid, 0), 0);
	assert_int_equal(legit_host(), 0);
	/* The log did not flood (repeated lines are rate-limited). */
	assert_int_equal(stat(log_path, &st), 0);
	print_message("moatd log: %lld bytes\n", (long long)st.st_size);
	assert_true(st.st_size < 256 * 1024);
}

/* A unary Load carrying two request messages is refused: INVALID_ARGUMENT, moat-error -19. */
static void test_second_request_refused(void **state)
{
	moat_rpc_channel *ch = open_channel();
	moat_rpc_call *call = NULL;
	moat_rpc_status st;
	uint8_t *reply = NULL;
	size_t len = 0;

	(void)state;
	assert_non_null(ch);
	assert_int_equal(moat__rpc_stream_open(&call, ch, "/moat.v1.Target/Load", NULL), 0);
	assert_int_equal(moat__rpc_exchange(call, "", 0, NULL, NULL, 10000, &st), 0);
	assert_int_equal(moat__rpc_exchange(call, "", 0, NULL, NULL, 10000, &st), 0);
	moat__rpc_stream_finish(call, &reply, &len, 10000, &st);
	print_message("second request: status %d, moat-error %d: %s\n", st.code, st.moat_code, st.message);
	assert_int_equal(st.code, MOAT_RPC_INVALID_ARGUMENT);
	assert_int_equal(st.moat_code, MOAT_EPROTO);
	free(reply);
	moat__rpc_call_free(call);
	moat__rpc_channel_close(ch);
}

/* A Health/Check on ch: the gRPC status (or a negative code). */
static int health_check(moat_rpc_channel *ch)
{
	moat_rpc_status st;
	uint8_t *resp = NULL;
	size_t len = 0;
	int rc = moat__rpc_unary(ch, "/grpc.health.v1.Health/Check", NULL, "", 0, &resp, &len, 5000, &st);

	free(resp);
	return rc;
}

/* Does moatd's log hold text? */
static int log_has(const char *text)
{
	static char buf[1 << 20];
	FILE *f = fopen(log_path, "r");
	size_t n;

	if (!f)
		return 0;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return strstr(buf, text) != NULL;
}

/*
 * At most --max-connections connections are open at once: one more is
 * closed on arrival (the host sees UNAVAILABLE, moatd's log names the
 * limit), and a closed one makes room again.
 */
static void test_connections_bounded(void **state)
{
	enum { MAX = 50 };
	moat_rpc_channel *chans[MAX], *extra;
	int i, tries, rc = -1;

	(void)state;
	for (i = 0; i < MAX; i++) {
		chans[i] = open_channel();
		assert_non_null(chans[i]);
		/* The earlier tests' connections are forgotten once moatd's gRPC closed them. */
		for (tries = 0; tries < 50 && (rc = health_check(chans[i])) != MOAT_RPC_OK; tries++)
			test_sleep_ms(100);
		assert_int_equal(rc, MOAT_RPC_OK);
	}
	extra = open_channel();
	assert_non_null(extra);
	rc = health_check(extra);
	print_message("connection %d: status %d\n", MAX + 1, rc);
	assert_int_equal(rc, MOAT_RPC_UNAVAILABLE);
	/* moatd writes the line just after it closed the connection: the host may see the close first. */
	for (tries = 0; tries < 100 && !log_has("--max-connections 50"); tries++)
		test_sleep_ms(50);
	assert_true(log_has("--max-connections 50"));
	moat__rpc_channel_close(extra);
	for (i = 0; i < 10; i++)
		moat__rpc_channel_close(chans[i]);
	extra = open_channel();
	for (tries = 0; tries < 50 && (rc = health_check(extra)) != MOAT_RPC_OK; tries++)
		test_sleep_ms(100);
	print_message("after closing 10: status %d (%d tries)\n", rc, tries);
	assert_int_equal(rc, MOAT_RPC_OK);
	moat__rpc_channel_close(extra);
	for (i = 10; i < MAX; i++)
		moat__rpc_channel_close(chans[i]);
}

/* Attach streams that fail authentication are answered by the rpc loop: no thread is started for them. */
static void test_unauthenticated_attach_holds_no_thread(void **state)
{
	static const char *const md[] = {"moat-session", "0123456789abcdef0123456789abcdef", "moat-token",
	                                 "0000000000000000000000000000000000000000000000000000000000000000",
	                                 NULL};
	enum { N = 200 };
	static moat_rpc_call *calls[N];
	static int done[N];
	moat_rpc_channel *ch = open_channel();
	int base = test_own_threads(m.pid), peak = base, ended = 0, not_found = 0, i;
	int64_t until = now_ms() + BOUND_S * 1000;

	(void)state;
	assert_non_null(ch);
	memset(done, 0, sizeof(done));
	for (i = 0; i < N; i++)
		assert_int_equal(moat__rpc_stream_open(&calls[i], ch, "/moat.v1.Target/Attach", md), 0);
	while (ended < N && now_ms() < until) {
		for (i = 0; i < N; i++) {
			moat_rpc_status s;

			if (done[i] || moat__rpc_watch(calls[i], &s) == 0)
				continue;
			done[i] = 1;
			ended++;
			not_found += s.code == MOAT_RPC_NOT_FOUND;
		}
		i = test_own_threads(m.pid);
		peak = i > peak ? i : peak;
		test_sleep_ms(2);
	}
	print_message("%d Attach streams with an unknown session: %d ended, %d NOT_FOUND; moatd's own "
	              "threads %d before, at most %d during\n",
	              N, ended, not_found, base, peak);
	for (i = 0; i < N; i++)
		moat__rpc_call_free(calls[i]);
	moat__rpc_channel_close(ch);
	assert_int_equal(ended, N);
	assert_int_equal(not_found, N);
	assert_int_equal(peak, base);
}

/* Send a HealthCheckRequest for moat.v1.Target on a new Watch; returns what the exchange returned. */
static int open_watch(moat_rpc_channel *ch, moat_rpc_call **call, uint8_t **msg, size_t *len,
                      moat_rpc_status *st)
{
	static const uint8_t target[] = {0x0a, 14,  'm', 'o', 'a', 't', '.', 'v',
	                                 '1',  '.', 'T', 'a', 'r', 'g', 'e', 't'};

	*call = NULL;
	if (moat__rpc_stream_open(call, ch, "/grpc.health.v1.Health/Watch", NULL) != 0)
		return -1;
	return moat__rpc_exchange(*call, target, sizeof(target), msg, len, 10000, st);
}

/*
 * Open Health/Watch streams are parked in the rpc loop (no thread each),
 * and there are at most --max-health-watches of them.
 */
static void test_watches_are_parked_and_bounded(void **state)
{
	enum { N = 10, MAX = 8 };
	moat_rpc_call *calls[N];
	moat_rpc_channel *ch = open_channel();
	int base = test_own_threads(m.pid), served = 0, refused = 0, named = 0, i, rc;

	(void)state;
	assert_non_null(ch);
	for (i = 0; i < N; i++) {
		moat_rpc_status st;
		uint8_t *msg = NULL;
		size_t len = 0;

		rc = open_watch(ch, &calls[i], &msg, &len, &st);
		if (rc == 0 && len == 2 && msg[1] == 0x01) {
			served++;
		} else if (rc == MOAT_RPC_END && st.code == MOAT_RPC_RESOURCE_EXHAUSTED) {
			refused++;
			assert_int_equal(st.moat_code, MOAT_ELIMIT);
			named += strstr(st.message, "--max-health-watches 8") != NULL;
		}
		free(msg);
	}
	print_message("%d watches: %d served, %d refused; moatd's own threads %d before, %d with them open\n",
	              N, served, refused, base, test_own_threads(m.pid));
	assert_int_equal(served, MAX);
	assert_int_equal(refused, N - MAX);
	assert_int_equal(named, N - MAX);
	assert_int_equal(test_own_threads(m.pid), base);
	for (i = 0; i < N; i++)
		moat__rpc_call_free(calls[i]);

	/* The slots come back once the watchers leave (moatd sees each close within a loop turn or so). */
	for (i = 0, rc = -1; i < 100 && rc != 0; i++) {
		moat_rpc_call *again[MAX];
		moat_rpc_status st;
		uint8_t *msg = NULL;
		size_t len = 0;
		int j;

		test_sleep_ms(50);
		for (j = 0, rc = 0; j < MAX; j++) {
			if (open_watch(ch, &again[j], &msg, &len, &st) != 0)
				rc = -1;
			free(msg);
			msg = NULL;
		}
		for (j = 0; j < MAX; j++)
			moat__rpc_call_free(again[j]);
	}
	assert_int_equal(rc, 0);
	moat__rpc_channel_close(ch);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_second_request_refused),
	    cmocka_unit_test(test_unauthenticated_attach_holds_no_thread),
	    cmocka_unit_test(test_watches_are_parked_and_bounded),
	    cmocka_unit_test(test_connections_bounded),
	    cmocka_unit_test(test_flood_keeps_serving),
	};
	ssize_t n;
	int i;

	/*
	 * As the wrapper: lower the descriptor limit (soft and hard), then become
	 * moatd. The launcher put --ready-file F before our flag: pass it on.
	 */
	for (i = 1; i + 1 < argc; i++) {
		if (strcmp(argv[i], WRAP_FLAG) == 0) {
			struct rlimit rl = {FD_LIMIT, FD_LIMIT};
			char *args[64];
			int a = 0, j;

			args[a++] = argv[i + 1];
			for (j = 1; j < i && a < 62; j++)
				args[a++] = argv[j];
			for (j = i + 2; j < argc && a < 63; j++)
				args[a++] = argv[j];
			args[a] = NULL;
			if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
				perror("setrlimit");
				return 127;
			}
			execv(args[0], args);
			perror("execv");
			return 127;
		}
	}
	n = readlink("/proc/self/exe", self_path, sizeof(self_path) - 1);
	if (n <= 0)
		return 1;
	self_path[n] = '\0';
	return cmocka_run_group_tests(tests, setup, teardown);
}
