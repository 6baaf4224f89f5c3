/*
 * moatd's request handling seen by a raw gRPC client (the rpc layer, no
 * libmoat host agent): wrong token, unknown session, bad upload hash,
 * protocol version, unknown methods, health check.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <moat/moat.h>

#include "codec/frame.h"
#include "moat/v1/target.pb-c.h"
#include "moat_test.h"
#include "moatd_helper.h"
#include "codec/protocol.h"
#include "rpc/rpc.h"
#include "test_enclave.h"

static test_moatd m;
static moat_rpc_channel *ch;

static int setup(void **state)
{
	moat_rpc_channel_opts o = {0};

	if (test_moatd_start(&m, "grpc", "--enclave-dir", MOAT_TEST_ENCLAVES, "--allow-upload", NULL) < 0)
		return -1;
	moat__rpc_init();
	o.target = m.addr;
	o.keepalive_ms = 1000;
	o.max_receive_bytes = -1;
	return moat__rpc_channel_open(&ch, &o);
}

static int teardown(void **state)
{
	moat__rpc_channel_close(ch);
	moat__rpc_shutdown();
	return test_moatd_stop(&m) == 0 ? 0 : -1;
}

typedef struct session {
	char id[64];
	char token[65];
} session;

/*
 * Load image name with config (may be NULL), deferring init when defer is
 * set; *deferred (may be NULL) gets LoadResponse.init_deferred.
 */
static int raw_load_image(session *s, uint32_t major, const char *name, const char *config, int defer,
                          int *deferred, moat_rpc_status *st)
{
	Moat__V1__LoadRequest req = MOAT__V1__LOAD_REQUEST__INIT;
	Moat__V1__LoadResponse *resp;
	uint8_t buf[256], *reply = NULL;
	size_t n, len;
	int rc, i;

	req.protocol_major = major;
	req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_NAME;
	req.name = (char *)name;
	req.config.data = (uint8_t *)config;
	req.config.len = config ? strlen(config) : 0;
	req.defer_init = defer;
	n = moat__v1__load_request__pack(&req, buf);
	rc = moat__rpc_unary(ch, "/moat.v1.Target/Load", NULL, buf, n, &reply, &len, 10000, st);
	if (rc != MOAT_RPC_OK)
		return rc;
	resp = moat__v1__load_response__unpack(NULL, len, reply);
	assert_non_null(resp);
	if (deferred)
		*deferred = resp->init_deferred;
	snprintf(s->id, sizeof(s->id), "%s", resp->session_id);
	for (i = 0; i < 32; i++)
		snprintf(s->token + 2 * i, 3, "%02x", resp->session_token.data[i]);
	moat__v1__load_response__free_unpacked(resp, NULL);
	free(reply);
	return 0;
}

static int raw_load(session *s, uint32_t major, moat_rpc_status *st)
{
	return raw_load_image(s, major, "test_enclave", NULL, 0, NULL, st);
}

/* One entry call over a fresh Attach stream with the given credentials. */
static int raw_call(const char *id, const char *token, uint64_t selector, moat_msg *out, moat_rpc_status *st)
{
	const char *md[] = {"moat-session", id, "moat-token", token, NULL};
	moat_frame f = {0};
	moat_frame_in *fin = NULL;
	moat_rpc_call *call = NULL;
	uint8_t *send = NULL, *recv = NULL;
	size_t send_len, recv_len;
	int rc;

	assert_int_equal(moat__rpc_stream_open(&call, ch, "/moat.v1.Target/Attach", md), 0);
	f.kind = MOAT_FRAME_CALL;
	f.seq = 1;
	f.selector = selector;
	assert_int_equal(moat__frame_encode(&f, 0, &send, &send_len), 0);
	rc = moat__rpc_exchange(call, send, send_len, &recv, &recv_len, 10000, st);
	free(send);
	if (rc == 0) {
		assert_int_equal(moat__frame_decode(&fin, recv, recv_len), 0);
		assert_int_equal(fin->kind, MOAT_FRAME_RETURN);
		rc = fin->code;
		if (rc == 0 && out) {
			const void *d;
			size_t l;

			moat_msg_item(fin->items, 0, &d, &l);
			moat_msg_push(out, d, l);
		}
		moat__frame_in_free(fin);
		free(recv);
	}
	moat__rpc_call_free(call);
	return rc;
}

static void raw_destroy(const session *s)
{
	const char *md[] = {"moat-session", s->id, "moat-token", s->token, NULL};
	moat_rpc_status st;
	uint8_t *reply = NULL;
	size_t len;

	assert_int_equal(moat__rpc_unary(ch, "/moat.v1.Target/Destroy", md, "", 0, &reply, &len, 10000, &st),
	                 MOAT_RPC_OK);
	free(reply);
}

static void test_wrong_token_leaves_session_alone(void **state)
{
	moat_rpc_status st;
	session s;
	char bad[65];
	moat_msg *out = test_msg();

	assert_int_equal(raw_load(&s, 1, &st), 0);
	assert_int_equal(raw_call(s.id, s.token, T_GLOBAL_GET, out, &st), 0);

	memcpy(bad, s.token, sizeof(bad));
	bad[0] = bad[0] == '0' ? '1' : '0';
	assert_int_equal(raw_call(s.id, bad, T_GLOBAL_GET, NULL, &st), MOAT_RPC_END);
	assert_int_equal(st.code, MOAT_RPC_PERMISSION_DENIED);
	assert_int_equal(st.moat_code, MOAT_EPERM);
	assert_int_equal(raw_call(s.id, "", T_GLOBAL_GET, NULL, &st), MOAT_RPC_END);
	assert_int_equal(st.code, MOAT_RPC_PERMISSION_DENIED);

	/* Destroy with a wrong token is refused too, and the session still answers. */
	{
		const char *md[] = {"moat-session", s.id, "moat-token", bad, NULL};
		uint8_t *reply = NULL;
		size_t len;

		assert_int_equal(
		    moat__rpc_unary(ch, "/moat.v1.Target/Destroy", md, "", 0, &reply, &len, 10000, &st),
		    MOAT_RPC_PERMISSION_DENIED);
	}
	assert_int_equal(raw_call(s.id, s.token, T_GLOBAL_GET, out, &st), 0);
	raw_destroy(&s);
	/* Gone now. */
	assert_int_equal(raw_call(s.id, s.token, T_GLOBAL_GET, NULL, &st), MOAT_RPC_END);
	assert_int_equal(st.code, MOAT_RPC_NOT_FOUND);
	moat_msg_free(out);
}

static void test_unknown_session(void **state)
{
	moat_rpc_status st;

	assert_int_equal(raw_call("00000000000000000000000000000000",
	                          "0000000000000000000000000000000000000000000000000000000000000000",
	                          T_GLOBAL_GET, NULL, &st),
	                 MOAT_RPC_END);
	assert_int_equal(st.code, MOAT_RPC_NOT_FOUND);
	assert_int_equal(st.moat_code, MOAT_ETARGET);
}

static void test_protocol_mismatch(void **state)
{
	moat_rpc_status st;
	session s;

	assert_int_equal(raw_load(&s, 2, &st), MOAT_RPC_FAILED_PRECONDITION);
	assert_int_equal(st.moat_code, MOAT_EPROTO);
	assert_non_null(strstr(st.message, "protocol"));
}

/* Send one frame on an Attach stream and wait for moatd's next frame (*fin) or the stream's end. */
/* Send f on call and receive the next frame into *fin. Returns 0 or how the stream ended. */
static int raw_send(moat_rpc_call *call, const moat_frame *f, moat_frame_in **fin, moat_rpc_status *st)
{
	uint8_t *send = NULL, *recv = NULL;
	size_t send_len, recv_len;
	int rc;

	*fin = NULL;
	assert_int_equal(moat__frame_encode(f, 0, &send, &send_len), 0);
	rc = moat__rpc_exchange(call, send, send_len, &recv, &recv_len, 10000, st);
	free(send);
	if (rc == 0) {
		assert_int_equal(moat__frame_decode(fin, recv, recv_len), 0);
		free(recv);
	}
	return rc;
}

static int raw_frame(moat_rpc_call *call, int kind, uint64_t seq, uint64_t selector, moat_frame_in **fin,
                     moat_rpc_status *st)
{
	moat_frame f = {0};
	uint8_t *send = NULL, *recv = NULL;
	size_t send_len, recv_len;
	int rc;

	*fin = NULL;
	f.kind = kind;
	f.seq = seq;
	f.selector = selector;
	assert_int_equal(moat__frame_encode(&f, 0, &send, &send_len), 0);
	rc = moat__rpc_exchange(call, send, send_len, &recv, &recv_len, 10000, st);
	free(send);
	if (rc == 0) {
		assert_int_equal(moat__frame_decode(fin, recv, recv_len), 0);
		free(recv);
	}
	return rc;
}

static moat_rpc_call *raw_attach(const session *s)
{
	const char *md[] = {"moat-session", s->id, "moat-token", s->token, NULL};
	moat_rpc_call *call = NULL;

	assert_int_equal(moat__rpc_stream_open(&call, ch, "/moat.v1.Target/Attach", md), 0);
	return call;
}

/* Start entry call T_TIME on a new stream: moatd's first frame is the enclave's exit call. */
static moat_rpc_call *raw_exit_call_waiting(const session *s)
{
	moat_rpc_call *call = raw_attach(s);
	moat_frame_in *fin;
	moat_rpc_status st;

	assert_int_equal(raw_frame(call, MOAT_FRAME_CALL, 1, T_TIME, &fin, &st), 0);
	assert_int_equal(fin->kind, MOAT_FRAME_CALL);
	moat__frame_in_free(fin);
	return call;
}

/*
 * LoadRequest.defer_init: entry calls wait for START (selector 1002) on an
 * Attach stream, and init's exit calls (its log line, a call only the host
 * answers) come to the host on that stream before START's Return.
 */
static void test_deferred_init(void **state)
{
	moat_frame f = {0};
	moat_frame_in *fin;
	moat_rpc_status st;
	moat_rpc_call *call;
	moat_msg *reply = NULL;
	session s;
	int deferred = 0;
	uint64_t v;

	assert_int_equal(raw_load_image(&s, 1, "test_enclave", T_INIT_EXIT_CONFIG, 1, &deferred, &st), 0);
	assert_int_equal(deferred, 1);
	call = raw_attach(&s);
	assert_int_equal(raw_frame(call, MOAT_FRAME_CALL, 1, T_ECHO, &fin, &st), 0);
	assert_int_equal(fin->kind, MOAT_FRAME_RETURN);
	assert_int_equal(fin->code, MOAT_EINVAL);
	assert_int_equal(fin->origin, MOAT_ORIGIN_API);
	moat__frame_in_free(fin);
	/* START: init logs (exit call 1), then makes the host's own exit call. */
	assert_int_equal(raw_frame(call, MOAT_FRAME_CALL, 2, MOAT_PROTOCOL_SELECTOR_START, &fin, &st), 0);
	assert_int_equal(fin->kind, MOAT_FRAME_CALL);
	assert_int_equal(fin->selector, MOAT_SELECTOR_LOG);
	f.seq = fin->seq;
	moat__frame_in_free(fin);
	f.kind = MOAT_FRAME_RETURN;
	assert_int_equal(raw_send(call, &f, &fin, &st), 0);
	assert_int_equal(fin->kind, MOAT_FRAME_CALL);
	assert_int_equal(fin->selector, T_INIT_EXIT_SELECTOR);
	f.seq = fin->seq;
	moat__frame_in_free(fin);
	assert_int_equal(moat_msg_new(&reply), 0);
	assert_int_equal(moat_msg_push_u64(reply, 99), 0);
	f.items = reply;
	assert_int_equal(raw_send(call, &f, &fin, &st), 0);
	assert_int_equal(fin->kind, MOAT_FRAME_RETURN);
	assert_int_equal(fin->seq, 2);
	assert_int_equal(fin->code, 0);
	moat__frame_in_free(fin);
	/* Init kept what the host answered. */
	assert_int_equal(raw_frame(call, MOAT_FRAME_CALL, 3, T_INIT_EXIT, &fin, &st), 0);
	assert_int_equal(fin->code, 0);
	assert_int_equal(moat_msg_item_u64(fin->items, 0, &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(moat_msg_item_u64(fin->items, 1, &v), 0);
	assert_int_equal(v, 99);
	moat__frame_in_free(fin);
	moat_msg_free(reply);
	moat__rpc_call_free(call);
	raw_destroy(&s);
}

/*
 * A host that does not defer init: a crash in init refuses the Load with
 * the whole crash report in the status message (it was cut at 384 bytes).
 */
static void test_init_crash_report(void **state)
{
	moat_rpc_status st;
	session s;

	assert_int_equal(raw_load_image(&s, 1, "proc_probe_enclave", "crash-deep", 0, NULL, &st),
	                 MOAT_RPC_INTERNAL);
	fprintf(stderr, "[report] %s\n", st.message);
	assert_int_equal(st.moat_code, MOAT_ECRASHED);
	assert_non_null(strstr(st.message, "'proc_probe_enclave': the enclave crashed in its init function"));
	assert_non_null(strstr(st.message, "backtrace: #0 deep (probe_enclave.c:"));
	assert_non_null(strstr(st.message, "#15 deep (probe_enclave.c:"));
	assert_non_null(strstr(strstr(st.message, "#15 "), " moat__enclave_start (runtime.c:"));
	assert_true(strlen(st.message) > 700);
}

static void assert_protocol_error(const moat_rpc_status *st)
{
	assert_int_equal(st->code, MOAT_RPC_FAILED_PRECONDITION);
	assert_int_equal(st->moat_code, MOAT_EPROTO);
	assert_non_null(strstr(st->message, "protocol error"));
}

/*
 * A Return that answers nothing, a Return with the wrong seq while an exit
 * call waits, and a half-close while one waits end the stream with a
 * protocol error said as such (not a bare CANCELLED, not OK); the session
 * goes on.
 */
static void test_attach_protocol_errors(void **state)
{
	moat_rpc_status st;
	moat_frame_in *fin;
	moat_rpc_call *call;
	session s;

	assert_int_equal(raw_load(&s, 1, &st), 0);
	call = raw_attach(&s);
	assert_int_equal(raw_frame(call, MOAT_FRAME_RETURN, 1, 0, &fin, &st), MOAT_RPC_END);
	assert_protocol_error(&st);
	moat__rpc_call_free(call);

	call = raw_exit_call_waiting(&s);
	assert_int_equal(raw_frame(call, MOAT_FRAME_RETURN, 99, 0, &fin, &st), MOAT_RPC_END);
	assert_protocol_error(&st);
	fprintf(stderr, "stray Return: %s\n", st.message);
	moat__rpc_call_free(call);

	call = raw_exit_call_waiting(&s);
	assert_int_equal(moat__rpc_stream_finish(call, NULL, NULL, 10000, &st), MOAT_RPC_FAILED_PRECONDITION);
	assert_protocol_error(&st);
	fprintf(stderr, "half-close: %s\n", st.message);
	moat__rpc_call_free(call);

	assert_int_equal(raw_call(s.id, s.token, T_GLOBAL_GET, NULL, &st), 0);
	raw_destroy(&s);
}

static void upload(const uint8_t *data, size_t len, const uint8_t sha[32], moat_rpc_status *st)
{
	Moat__V1__UploadChunk c = MOAT__V1__UPLOAD_CHUNK__INIT;
	moat_rpc_call *call = NULL;
	uint8_t buf[512];
	size_t n;

	c.sha256.data = (uint8_t *)sha;
	c.sha256.len = 32;
	c.total_size = len;
	c.data.data = (uint8_t *)data;
	c.data.len = len;
	n = moat__v1__upload_chunk__pack(&c, buf);
	assert_int_equal(moat__rpc_stream_open(&call, ch, "/moat.v1.Target/Upload", NULL), 0);
	assert_int_equal(moat__rpc_exchange(call, buf, n, NULL, NULL, 10000, st), 0);
	moat__rpc_stream_finish(call, NULL, NULL, 10000, st);
	moat__rpc_call_free(call);
}

static void test_upload_bad_hash(void **state)
{
	static const uint8_t data[] = "not really an image";
	uint8_t sha[32] = {0};
	moat_rpc_status st;

	upload(data, sizeof(data), sha, &st);
	assert_int_equal(st.code, MOAT_RPC_FAILED_PRECONDITION);
	assert_int_equal(st.moat_code, MOAT_EMEASUREMENT);
	assert_non_null(strstr(st.message, "SHA-256"));
}

/* Health/Watch streams the status (SERVING) and keeps the stream open; an unknown service is NOT_FOUND. */
static void test_health_watch(void **state)
{
	static const uint8_t target[] = {0x0a, 14,  'm', 'o', 'a', 't', '.', 'v',
	                                 '1',  '.', 'T', 'a', 'r', 'g', 'e', 't'};
	static const uint8_t nosuch[] = {0x0a, 6, 'n', 'o', 's', 'u', 'c', 'h'};
	moat_rpc_call *call = NULL;
	moat_rpc_status st;
	uint8_t *msg = NULL;
	size_t len;

	assert_int_equal(moat__rpc_stream_open(&call, ch, "/grpc.health.v1.Health/Watch", NULL), 0);
	assert_int_equal(moat__rpc_exchange(call, target, sizeof(target), &msg, &len, 10000, &st), 0);
	/* HealthCheckResponse{status: SERVING} */
	assert_int_equal(len, 2);
	assert_int_equal(msg[0], 0x08);
	assert_int_equal(msg[1], 0x01);
	free(msg);
	/* Nothing more while nothing changes: the stream stays open. */
	assert_int_equal(moat__rpc_exchange(call, NULL, 0, &msg, &len, 300, &st), MOAT_RPC_TIMEOUT);
	moat__rpc_call_free(call);

	call = NULL;
	assert_int_equal(moat__rpc_stream_open(&call, ch, "/grpc.health.v1.Health/Watch", NULL), 0);
	assert_int_equal(moat__rpc_exchange(call, nosuch, sizeof(nosuch), &msg, &len, 10000, &st),
	                 MOAT_RPC_END);
	assert_int_equal(st.code, MOAT_RPC_NOT_FOUND);
	moat__rpc_call_free(call);
}

/* The whole session id must match; the token is hex in either case. */
static void test_session_id_and_token(void **state)
{
	moat_rpc_status st;
	session s;
	char longer[80], upper[65];
	size_t i;

	assert_int_equal(raw_load(&s, 1, &st), 0);
	snprintf(longer, sizeof(longer), "%szzzz", s.id);
	assert_int_equal(raw_call(longer, s.token, T_GLOBAL_GET, NULL, &st), MOAT_RPC_END);
	assert_int_equal(st.code, MOAT_RPC_NOT_FOUND);
	for (i = 0; i < sizeof(upper); i++)
		upper[i] =
		    s.token[i] >= 'a' && s.token[i] <= 'f' ? (char)(s.token[i] - 'a' + 'A') : s.token[i];
	assert_int_equal(raw_call(s.id, upper, T_GLOBAL_GET, NULL, &st), 0);
	raw_destroy(&s);
}

/* A NUL inside an image name is refused, not cut short into another name. */
static void test_name_with_nul(void **state)
{
	/* LoadRequest{protocol_major: 1, name: "test_enclave\0x"}, encoded by hand. */
	static const uint8_t req[] = {0x08, 0x01, 0x1a, 14,  't', 'e', 's', 't', '_',
	                              'e',  'n',  'c',  'l', 'a', 'v', 'e', 0,   'x'};
	moat_rpc_status st;
	uint8_t *reply = NULL;
	size_t len;

	assert_int_equal(
	    moat__rpc_unary(ch, "/moat.v1.Target/Load", NULL, req, sizeof(req), &reply, &len, 10000, &st),
	    MOAT_RPC_INVALID_ARGUMENT);
	assert_int_equal(st.moat_code, MOAT_EINVAL);
	assert_non_null(strstr(st.message, "NUL"));
	free(reply);
}

/* Send a hand-encoded LoadRequest; it must be refused INVALID_ARGUMENT (-1) with a message holding what. */
static void load_invalid(const uint8_t *req, size_t n, const char *what)
{
	moat_rpc_status st;
	uint8_t *reply = NULL;
	size_t len;

	assert_int_equal(moat__rpc_unary(ch, "/moat.v1.Target/Load", NULL, req, n, &reply, &len, 10000, &st),
	                 MOAT_RPC_INVALID_ARGUMENT);
	print_message("refused: %s\n", st.message);
	assert_int_equal(st.moat_code, MOAT_EINVAL);
	assert_non_null(strstr(st.message, what));
	free(reply);
}

/* Fields of the wrong length, and names that are no file names, are refused saying so. */
static void test_load_field_rules(void **state)
{
	/* LoadRequest{protocol_major: 1, sha256: 5 bytes} */
	static const uint8_t short_sha[] = {0x08, 0x01, 0x22, 5, 1, 2, 3, 4, 5};
	/* LoadRequest{protocol_major: 1, name: "test_enclave", expected_target_key: 3 bytes} */
	static const uint8_t short_key[] = {0x08, 0x01, 0x1a, 12,  't', 'e',  's', 't', '_', 'e', 'n',
	                                    'c',  'l',  'a',  'v', 'e', 0x3a, 3,   1,   2,   3};
	/* LoadRequest{protocol_major: 1, name: ".."} */
	static const uint8_t dotdot[] = {0x08, 0x01, 0x1a, 2, '.', '.'};

	(void)state;
	load_invalid(short_sha, sizeof(short_sha), "sha256 must be 32 bytes, not 5");
	load_invalid(short_key, sizeof(short_key), "expected_target_key must be 32 bytes");
	load_invalid(dotdot, sizeof(dotdot), "is not an image name");
}

/* Open a lease stream of s (it carries no frames; opening it sends the metadata). */
static moat_rpc_call *raw_lease(const session *s)
{
	const char *md[] = {"moat-session", s->id, "moat-token", s->token, "moat-stream", "lease", NULL};
	moat_rpc_call *call = NULL;
	moat_rpc_status st;

	assert_int_equal(moat__rpc_stream_open(&call, ch, "/moat.v1.Target/Attach", md), 0);
	assert_int_equal(moat__rpc_watch(call, &st), 0);
	return call;
}

/* Wait ms while servicing the open leases (as libmoat's lease watcher does), so their frames go out. */
static void hold(long ms, moat_rpc_call *a, moat_rpc_call *b)
{
	moat_rpc_status st;
	long t;

	for (t = 0; t < ms; t += 50) {
		if (a)
			moat__rpc_watch(a, &st);
		if (b)
			moat__rpc_watch(b, &st);
		test_sleep_ms(50);
	}
}

static int session_alive(const session *s)
{
	moat_rpc_status st;

	return raw_call(s->id, s->token, T_GLOBAL_GET, NULL, &st) == 0;
}

/*
 * The lease rule: a session lives while one of its leases is open, and for
 * the grace period (2 s here) after the last one closed; a new lease in
 * that time keeps it.
 */
static void test_lease_rule(void **state)
{
	moat_rpc_call *a, *b, *c;
	moat_rpc_status st;
	session s;

	assert_int_equal(raw_load(&s, 1, &st), 0);
	a = raw_lease(&s);
	b = raw_lease(&s);
	/* One lease ends; the other still holds the session past the grace period. */
	hold(200, a, b);
	moat__rpc_call_free(a);
	hold(3000, b, NULL);
	assert_true(session_alive(&s));
	/* The last one ends and a new one comes within the grace period. */
	moat__rpc_call_free(b);
	hold(300, NULL, NULL);
	c = raw_lease(&s);
	hold(3000, c, NULL);
	assert_true(session_alive(&s));
	/* Without a lease, the session goes after the grace period. */
	moat__rpc_call_free(c);
	test_sleep_ms(3500);
	assert_false(session_alive(&s));
}

static void test_unknown_method(void **state)
{
	moat_rpc_status st;
	uint8_t *reply = NULL;
	size_t len;

	assert_int_equal(
	    moat__rpc_unary(ch, "/moat.v1.Target/NoSuchMethod", NULL, "", 0, &reply, &len, 10000, &st),
	    MOAT_RPC_UNIMPLEMENTED);
	assert_int_equal(moat__rpc_unary(ch, "/other.Service/Call", NULL, "", 0, &reply, &len, 10000, &st),
	                 MOAT_RPC_UNIMPLEMENTED);
}

static void test_health(void **state)
{
	/* HealthCheckRequest{service: "moat.v1.Target"} and {service: "nosuch"}. */
	static const uint8_t target[] = {0x0a, 14,  'm', 'o', 'a', 't', '.', 'v',
	                                 '1',  '.', 'T', 'a', 'r', 'g', 'e', 't'};
	static const uint8_t nosuch[] = {0x0a, 6, 'n', 'o', 's', 'u', 'c', 'h'};
	moat_rpc_status st;
	uint8_t *reply = NULL;
	size_t len;

	assert_int_equal(
	    moat__rpc_unary(ch, "/grpc.health.v1.Health/Check", NULL, "", 0, &reply, &len, 10000, &st),
	    MOAT_RPC_OK);
	/* HealthCheckResponse{status: SERVING} */
	assert_int_equal(len, 2);
	assert_int_equal(reply[0], 0x08);
	assert_int_equal(reply[1], 0x01);
	free(reply);
	assert_int_equal(moat__rpc_unary(ch, "/grpc.health.v1.Health/Check", NULL, target, sizeof(target),
	                                 &reply, &len, 10000, &st),
	                 MOAT_RPC_OK);
	assert_int_equal(len, 2);
	assert_int_equal(reply[1], 0x01);
	free(reply);
	/* The health protocol: an unknown service is NOT_FOUND. */
	assert_int_equal(moat__rpc_unary(ch, "/grpc.health.v1.Health/Check", NULL, nosuch, sizeof(nosuch),
	                                 &reply, &len, 10000, &st),
	                 MOAT_RPC_NOT_FOUND);
	free(reply);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_wrong_token_leaves_session_alone),
	    cmocka_unit_test(test_unknown_session),
	    cmocka_unit_test(test_protocol_mismatch),
	    cmocka_unit_test(test_attach_protocol_errors),
	    cmocka_unit_test(test_upload_bad_hash),
	    cmocka_unit_test(test_unknown_method),
	    cmocka_unit_test(test_health),
	    cmocka_unit_test(test_health_watch),
	    cmocka_unit_test(test_session_id_and_token),
	    cmocka_unit_test(test_name_with_nul),
	    cmocka_unit_test(test_load_field_rules),
	    cmocka_unit_test(test_lease_rule),
	    cmocka_unit_test(test_deferred_init),
	    cmocka_unit_test(test_init_crash_report),
	};

	return cmocka_run_group_tests_name("remote_raw", tests, setup, teardown);
}
