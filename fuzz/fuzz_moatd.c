/*
 * Fuzz target for moatd's request handling (src/moatd/ but main.c): the
 * input is a script of calls made one after another, each handed to
 * moatd_handle_call() over the fake rpc layer (fake_rpc.c), so no network
 * and no threads are involved. moatd hosts the enclaves with the sim
 * backend, loading by name from a private directory of the tree's test
 * enclaves and storing uploads in a temporary state directory.
 *
 * Script: byte 0 sets the limits (bits 0-1 --max-sessions 8/1/2/0, bits
 * 2-3 --max-threads-per-session 0/1/2/4, bits 4-5 --max-nesting 1/2/4/16,
 * bit 6 uploads off, bit 7 --max-image-bytes 64). Then one byte per step,
 * op = byte % 10:
 *   0 Load      mode byte (bits 0-2 image: test_enclave, a name from a list,
 *               a fuzzed name, the uploaded hash, test_enclave's hash, a
 *               fuzzed hash, none, a raw request; bit 3 config blob, bit 4
 *               a protocol byte, bit 5 target key pin, bit 6 measurement
 *               pin, bit 7 a nonce), then the end byte
 *   1 Upload    mode byte (bits 0-1: test_enclave.so in chunks, the same
 *               with a wrong hash or size, fuzzed chunks, raw chunks; bits
 *               2-4 how many; bit 5 cancel instead of half-close)
 *   2,3 Attach  auth bytes, then the stream byte (bit 0 lease, bit 1 the
 *               lease ends cancelled, bit 2 a fuzzed moat-stream value);
 *               then frames are read from the script as moatd waits for them
 *   4 Destroy   auth bytes, end byte
 *   5 Health    mode byte (service "", moat.v1.Target, a fuzzed one, a raw
 *               request), end byte
 *   6 a fuzzed method name
 *   7 moatd_tick (the grace period is 0: leased sessions whose lease ended go)
 *   8 moatd stops (d->stop, moatd_target_stopping): calls that follow see it
 *   9 Attach
 * Auth: byte a, a % 8 = 0-2 the id and token of session a / 8 % loaded
 * (every session Load answered, destroyed ones included), 3 its token in
 * upper case, 4 a wrong token, 5 no token, 6 no session id, 7 a fuzzed id
 * and token. End byte of a unary call: 0-1 the request then half-close, 2
 * half-close with no request, 3 cancel. Blobs are a length byte (255: two
 * more, little-endian) and that many bytes.
 *
 * Attach frames, byte f % 8: 0-2 a Call (selector byte: the test enclave's
 * selectors, Destroy, reserved ones or 8 fuzzed bytes; bit 3 of f a fuzzed
 * seq; items), 3 a Return for moatd's innermost exit call (code byte,
 * items), 4 a Return with a fuzzed seq, 5 raw frame bytes, 6 half-close, 7
 * cancel; the end of the script half-closes. A SPAWN exit call is always
 * refused by the driver: a host that accepts one must donate a thread on
 * another stream, which a sequential script cannot do, and the enclave's
 * join would wait for it forever.
 *
 * Checked on every input: no crash or sanitizer report; each call is freed
 * once and finished at most once, and exactly once unless the peer or
 * moatd cancelled it (or a unary call's peer half-closed before sending its
 * request, see unary_done); moatd sends only frames that decode, its exit
 * calls numbered 1, 2, 3... and each Return answering the innermost Call
 * of the host; every Load answer has a 32-hex-digit id, a 32-byte token
 * and a report signed by moatd's key; an upload leaves no temporary file;
 * after moatd_target_stopping and moatd_target_shutdown no session is
 * left.
 */
#include <dirent.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "codec/frame.h"
#include "fake_rpc.h"
#include "grpc/health/v1/health.pb-c.h"
#include "moat/v1/target.pb-c.h"
#include "moatd/moatd.h"
#include "replay.h"

#ifndef MOAT_TEST_ENCLAVES
#define MOAT_TEST_ENCLAVES "enclaves"
#endif

#define MAX_SLOTS   16
#define MAX_STACK   256
#define MAX_LOADS   12
#define MAX_UPLOADS 6

/* Selectors of tests/enclaves/test_enclave.c (tests/common/test_enclave.h). */
#define T_ECHO       (MOAT_SELECTOR_USER + 1)
#define T_ADD        (MOAT_SELECTOR_USER + 2)
#define T_GLOBAL_SET (MOAT_SELECTOR_USER + 3)
#define T_GLOBAL_GET (MOAT_SELECTOR_USER + 4)
#define T_FAIL       (MOAT_SELECTOR_USER + 5)
#define T_EXIT       (MOAT_SELECTOR_USER + 6)
#define T_CONFIG     (MOAT_SELECTOR_USER + 7)
#define T_THREADS    (MOAT_SELECTOR_USER + 8)
#define T_INIT_SPAWN (MOAT_SELECTOR_USER + 9)
#define T_ON_FINI    (MOAT_SELECTOR_USER + 10)
#define T_TIME       (MOAT_SELECTOR_USER + 11)

static const char *const load_names[] = {"test_enclave.so",
                                         "hello_enclave",
                                         "kv_raw_enclave",
                                         "test_noentry",
                                         "test_abi",
                                         "nothing",
                                         "..",
                                         ".",
                                         "a/b",
                                         ""};
/* Images moatd may load by name: ones that behave (test_abi and test_noentry are refused at load). */
static const char *const safe_images[] = {"test_enclave", "hello_enclave", "kv_raw_enclave", "test_noentry",
                                          "test_abi"};

static const uint64_t selectors[] = {T_ECHO,
                                     T_ADD,
                                     T_GLOBAL_SET,
                                     T_GLOBAL_GET,
                                     T_FAIL,
                                     T_EXIT,
                                     T_CONFIG,
                                     T_THREADS,
                                     T_INIT_SPAWN,
                                     T_ON_FINI,
                                     T_TIME,
                                     MOAT_PROTOCOL_SELECTOR_DESTROY,
                                     MOAT_SELECTOR_RUN,
                                     MOAT_SELECTOR_LOG,
                                     MOAT_SELECTOR_TIME,
                                     MOAT_SELECTOR_SPAWN,
                                     MOAT_SELECTOR_DONATE,
                                     MOAT_SELECTOR_SPAWN_STATUS,
                                     MOAT_SELECTOR_USER,
                                     MOAT_SELECTOR_USER + 100};

static const int32_t codes[] = {0, MOAT_EHANDLER, MOAT_ENOHANDLER, MOAT_EINVAL, MOAT_ELIMIT, -1, -100000, 7};

static const char *const methods[] = {"/moat.v1.Target/Load", "/moat.v1.Target/Upload",
                                      "/moat.v1.Target/Attach", "/moat.v1.Target/Destroy",
                                      "/grpc.health.v1.Health/Check"};

typedef struct slot {
	char id[80];
	char token[65];
} slot;

/* The daemon and what lives as long as the process. */
typedef struct world {
	moatd d;
	char root[200];   /* temporary directory: state/ and enclaves/ */
	char images[300]; /* state/images */
	uint8_t *image;   /* test_enclave.so, for uploads */
	size_t image_len;
	uint8_t image_sha[32];
} world;

/* One input's run. */
typedef struct fz {
	world *w;
	const uint8_t *p;
	size_t n;
	slot slots[MAX_SLOTS];
	unsigned int nslots, next_slot;
	uint8_t uploaded[32];
	int have_upload;
	unsigned int loads, uploads;
} fz;

/* The peer of one call. */
typedef struct peer {
	fz *z;
	/* Unary and Upload: messages prepared in advance, then the end. */
	uint8_t *msgs[16];
	size_t lens[16];
	unsigned int nmsgs, next;
	int end_code;
	/* Attach: frames come from the script. */
	int attach;
	int lease_end;
	uint64_t host_seq;              /* the last seq of the host's structured Calls */
	uint64_t moatd_seq;             /* the last seq of moatd's Calls */
	uint64_t host_calls[MAX_STACK]; /* the host's Calls moatd has not answered, innermost last */
	unsigned int nhost;
	uint64_t moatd_calls[MAX_STACK][2]; /* moatd's Calls (seq, selector) the host has not answered */
	unsigned int nmoatd;
} peer;

static world the_world;
/* FUZZ_MOATD_TRACE: say what became of every call. */
static int trace;

/* ---- Reading the script ---- */

static uint8_t take(fz *z)
{
	uint8_t b;

	if (!z->n)
		return 0;
	b = *z->p++;
	z->n--;
	return b;
}

static uint64_t take_u64(fz *z)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v |= (uint64_t)take(z) << (8 * i);
	return v;
}

/* A blob of the script (borrowed). */
static size_t take_blob(fz *z, const uint8_t **out)
{
	size_t len = take(z);

	if (len == 255) {
		len = take(z);
		len |= (size_t)take(z) << 8;
	}
	if (len > z->n)
		len = z->n;
	*out = z->p;
	z->p += len;
	z->n -= len;
	return len;
}

/* A blob as a C string (up to its first NUL) in buf. */
static char *take_str(fz *z, char *buf, size_t cap)
{
	const uint8_t *b;
	size_t len = take_blob(z, &b);

	if (len >= cap)
		len = cap - 1;
	memcpy(buf, b, len);
	buf[len] = '\0';
	return buf;
}

static uint8_t *dup_bytes(const void *p, size_t len)
{
	uint8_t *c = malloc(len ? len : 1);

	CHECK(c != NULL);
	if (len)
		memcpy(c, p, len);
	return c;
}

/* ---- The peer ---- */

static void peer_init(peer *pr, fz *z)
{
	memset(pr, 0, sizeof(*pr));
	pr->z = z;
	pr->end_code = MOAT_RPC_OK;
}

static void peer_queue(peer *pr, uint8_t *msg, size_t len)
{
	CHECK(pr->nmsgs < 16);
	pr->msgs[pr->nmsgs] = msg;
	pr->lens[pr->nmsgs++] = len;
}

static void peer_free(peer *pr)
{
	unsigned int i;

	for (i = pr->next; i < pr->nmsgs; i++)
		free(pr->msgs[i]);
}

/* Encode f into *buf; remember what the host is waiting for. */
static void host_frame(peer *pr, const moat_frame *f, uint8_t **buf, size_t *len)
{
	CHECK(moat__frame_encode(f, 0, buf, len) == 0);
}

/* Items of a Call or Return from the script. */
static moat_msg *take_items(fz *z)
{
	moat_msg *m = NULL;
	unsigned int i, n = take(z) % 4;

	CHECK(moat_msg_new(&m) == 0);
	for (i = 0; i < n; i++) {
		uint8_t k = take(z);
		const uint8_t *b;
		size_t len;

		switch (k % 4) {
		case 0: CHECK(moat_msg_push_u64(m, k >> 2) == 0); break;
		case 1: CHECK(moat_msg_push_u64(m, take_u64(z)) == 0); break;
		case 2:
			CHECK(moat_msg_push_u64(m, selectors[(k >> 2) % (sizeof(selectors) / 8)]) == 0);
			break;
		default:
			len = take_blob(z, &b);
			CHECK(moat_msg_push(m, b, len) == 0);
			break;
		}
	}
	return m;
}

/* The host answers moatd's innermost exit call (a Return the driver makes itself). */
static void host_return(peer *pr, int32_t code, moat_msg *items, uint8_t **buf, size_t *len)
{
	moat_frame f;

	memset(&f, 0, sizeof(f));
	f.kind = MOAT_FRAME_RETURN;
	f.seq = pr->nmoatd ? pr->moatd_calls[pr->nmoatd - 1][0] : 1;
	f.code = code;
	f.origin = code ? MOAT_ORIGIN_API : 0;
	f.message = code ? "refused by the fuzz host" : NULL;
	f.items = code ? NULL : items;
	host_frame(pr, &f, buf, len);
}

/* The next frame of an Attach stream from the script. */
static int attach_next(peer *pr, uint8_t **buf, size_t *len, int *end_code)
{
	fz *z = pr->z;
	moat_msg *items = NULL;
	moat_frame f;
	char message[128];
	const uint8_t *b;
	uint8_t op;

	memset(&f, 0, sizeof(f));
	if (pr->nmoatd && pr->moatd_calls[pr->nmoatd - 1][1] == MOAT_SELECTOR_SPAWN) {
		host_return(pr, MOAT_ELIMIT, NULL, buf, len);
		goto decoded;
	}
	if (!z->n) {
		*end_code = MOAT_RPC_OK;
		return MOAT_RPC_END;
	}
	op = take(z);
	switch (op % 8) {
	case 0:
	case 1:
	case 2: {
		uint8_t s = take(z);

		f.kind = MOAT_FRAME_CALL;
		f.seq = (op & 8) ? take(z) : pr->host_seq + 1;
		f.selector = s < 0xf0 ? selectors[s % (sizeof(selectors) / 8)] : take_u64(z);
		if (!(op & 8))
			pr->host_seq = f.seq;
		f.items = items = take_items(z);
		host_frame(pr, &f, buf, len);
		break;
	}
	case 3: {
		uint8_t c = take(z);

		items = take_items(z);
		host_return(pr, codes[c % (sizeof(codes) / sizeof(codes[0]))], items, buf, len);
		break;
	}
	case 4:
		f.kind = MOAT_FRAME_RETURN;
		f.seq = take(z);
		f.code = (int32_t)(int8_t)take(z);
		f.origin = take(z) % 6;
		f.enclave_code = (int64_t)take_u64(z);
		f.message = take_str(z, message, sizeof(message));
		f.items = items = take_items(z);
		host_frame(pr, &f, buf, len);
		break;
	case 5:
		*len = take_blob(z, &b);
		*buf = dup_bytes(b, *len);
		break;
	case 6: *end_code = MOAT_RPC_OK; return MOAT_RPC_END;
	default: *end_code = MOAT_RPC_CANCELLED; return MOAT_RPC_END;
	}
	moat_msg_free(items);
decoded : {
	/* Keep track of what is outstanding, as moatd will see it. */
	moat_frame_in *in = NULL;

	if (moat__frame_decode(&in, *buf, *len) == 0) {
		if (in->kind == MOAT_FRAME_CALL && pr->nhost < MAX_STACK)
			pr->host_calls[pr->nhost++] = in->seq;
		else if (in->kind == MOAT_FRAME_RETURN && pr->nmoatd &&
		         pr->moatd_calls[pr->nmoatd - 1][0] == in->seq)
			pr->nmoatd--;
		moat__frame_in_free(in);
	}
}
	return 0;
}

static int peer_next(void *io, uint8_t **buf, size_t *len, int *end_code)
{
	peer *pr = io;

	if (pr->attach)
		return attach_next(pr, buf, len, end_code);
	if (pr->next < pr->nmsgs) {
		*buf = pr->msgs[pr->next];
		*len = pr->lens[pr->next++];
		return 0;
	}
	*end_code = pr->end_code;
	return MOAT_RPC_END;
}

/* moatd sent a frame on an Attach stream: it must be well formed and follow the Call/Return rules. */
static void peer_sent(void *io, const uint8_t *buf, size_t len)
{
	peer *pr = io;
	moat_frame_in *f = NULL;

	CHECK(pr->attach);
	CHECK(moat__frame_decode(&f, buf, len) == 0);
	if (f->kind == MOAT_FRAME_RETURN) {
		/* A Return answers the host's innermost Call. */
		CHECK(pr->nhost > 0);
		CHECK(f->seq == pr->host_calls[pr->nhost - 1]);
		CHECK(f->code == 0 || moat_msg_count(f->items) == 0);
		pr->nhost--;
	} else {
		CHECK(f->kind == MOAT_FRAME_CALL);
		CHECK(f->seq == pr->moatd_seq + 1);
		pr->moatd_seq = f->seq;
		if (pr->nmoatd < MAX_STACK) {
			pr->moatd_calls[pr->nmoatd][0] = f->seq;
			pr->moatd_calls[pr->nmoatd++][1] = f->selector;
		}
	}
	moat__frame_in_free(f);
}

static int peer_watch_end(void *io)
{
	peer *pr = io;

	return pr->lease_end;
}

static const fake_peer_ops peer_ops = {peer_next, peer_sent, peer_watch_end};

/* ---- Calls ---- */

/* Run one call through moatd and check how it was answered; the caller frees o->reply. */
static void run_call(fz *z, const char *method, const char *const *md, peer *pr, fake_outcome *o)
{
	moat_rpc_call *call = fake_call_new(method, md, &peer_ops, pr, o);

	/* As the rpc loop does: a stream is admitted first, and a refused one is answered and freed. */
	if (moatd_admit_call(&z->w->d, call) == 0)
		moatd_handle_call(&z->w->d, call);
	else
		moat__rpc_call_free(call);
	peer_free(pr);
	if (trace)
		fprintf(stderr,
		        "fuzz_moatd: %s: finished %d delivered %d code %d moat %d, %u in %u out%s%s\n",
		        method, o->finished, o->delivered, o->code, o->moat_code, o->received, o->sent,
		        o->cancelled ? ", cancelled" : "", o->peer_cancelled ? ", peer cancelled" : "");
	CHECK(o->freed == 1);
	CHECK(o->finished <= 1);
	/* A call is answered unless it was cancelled: the host is waiting for its status. */
	if (!o->cancelled && !o->peer_cancelled &&
	    !(o->peer_closed && o->received == 0 && !pr->attach && strcmp(method, methods[1]) != 0))
		CHECK(o->finished == 1);
	CHECK(o->delivered || !o->reply);
	CHECK(!o->reply || o->code == MOAT_RPC_OK);
}

/* The end of a unary call's request stream, from the end byte. */
static void unary_end(fz *z, peer *pr, uint8_t *req, size_t len)
{
	uint8_t e = take(z) % 4;

	if (e < 2)
		peer_queue(pr, req, len);
	else
		free(req);
	pr->end_code = e == 3 ? MOAT_RPC_CANCELLED : MOAT_RPC_OK;
}

/* Metadata naming a session, from the auth bytes. */
static void take_auth(fz *z, const char **md, size_t *n, char *id, char *token)
{
	uint8_t a = take(z);
	const slot *s = z->nslots ? &z->slots[(a >> 3) % z->nslots] : NULL;
	size_t i;

	if (s) {
		snprintf(id, 80, "%s", s->id);
		snprintf(token, 80, "%s", s->token);
	} else {
		snprintf(id, 80, "0123456789abcdef0123456789abcdef");
		snprintf(token, 80, "%064d", 0);
	}
	switch (a % 8) {
	case 3:
		for (i = 0; token[i]; i++)
			if (token[i] >= 'a' && token[i] <= 'f')
				token[i] = (char)(token[i] - 'a' + 'A');
		break;
	case 4: token[63] = token[63] == '0' ? '1' : '0'; break;
	case 7:
		take_str(z, id, 80);
		take_str(z, token, 80);
		break;
	default: break;
	}
	if (a % 8 != 6) {
		md[(*n)++] = "moat-session";
		md[(*n)++] = id;
	}
	if (a % 8 != 5) {
		md[(*n)++] = "moat-token";
		md[(*n)++] = token;
	}
}

/* A Load answer: well formed, signed by moatd, and a session to use later. */
static void check_load(fz *z, const fake_outcome *o)
{
	Moat__V1__LoadResponse *r = moat__v1__load_response__unpack(NULL, o->reply_len, o->reply);
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	slot *s;
	size_t i;

	CHECK(r != NULL && c != NULL);
	CHECK(strlen(r->session_id) == 32 && r->session_token.len == 32);
	for (i = 0; i < 32; i++)
		CHECK(strchr("0123456789abcdef", r->session_id[i]) != NULL);
	CHECK(r->target_key.len == 32 && memcmp(r->target_key.data, z->w->d.public_key, 32) == 0);
	CHECK(r->report_signature.len == 64);
	CHECK(EVP_DigestVerifyInit(c, NULL, NULL, NULL, z->w->d.key) == 1);
	CHECK(EVP_DigestVerify(c, r->report_signature.data, 64, r->report.data, r->report.len) == 1);
	EVP_MD_CTX_free(c);
	s = &z->slots[z->next_slot];
	z->next_slot = (z->next_slot + 1) % MAX_SLOTS;
	if (z->nslots < MAX_SLOTS)
		z->nslots++;
	snprintf(s->id, sizeof(s->id), "%s", r->session_id);
	moat__hex(s->token, r->session_token.data, 32);
	moat__v1__load_response__free_unpacked(r, NULL);
}

static void op_load(fz *z)
{
	Moat__V1__LoadRequest req = MOAT__V1__LOAD_REQUEST__INIT;
	uint8_t m = take(z), *buf, sha[32], key[32], meas[32];
	char name[300];
	const uint8_t *b;
	fake_outcome o;
	size_t len;
	peer pr;

	peer_init(&pr, z);
	if (++z->loads > MAX_LOADS) {
		/* Bound the work of one input: a Load is a dlopen. */
		return;
	}
	req.protocol_major = MOAT__V1__PROTOCOL_VERSION__PROTOCOL_MAJOR;
	switch (m & 7) {
	case 0:
		req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_NAME;
		req.name = "test_enclave";
		break;
	case 1:
		req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_NAME;
		req.name = (char *)load_names[take(z) % (sizeof(load_names) / sizeof(load_names[0]))];
		break;
	case 2:
		req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_NAME;
		req.name = take_str(z, name, sizeof(name));
		break;
	case 3:
	case 4:
		req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_SHA256;
		memcpy(sha, (m & 7) == 3 && z->have_upload ? z->uploaded : z->w->image_sha, 32);
		req.sha256.data = sha;
		req.sha256.len = 32;
		break;
	case 5:
		req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_SHA256;
		req.sha256.len = take_blob(z, &b);
		req.sha256.data = (uint8_t *)b;
		break;
	case 6: break;
	default:
		len = take_blob(z, &b);
		unary_end(z, &pr, dup_bytes(b, len), len);
		goto run;
	}
	if (m & 8) {
		req.config.len = take_blob(z, &b);
		req.config.data = (uint8_t *)b;
	}
	if (m & 16) {
		req.protocol_major = take(z);
		req.protocol_minor = take(z);
	}
	if (m & 32) {
		if (take(z) & 1) {
			req.expected_target_key.len = take_blob(z, &b);
			req.expected_target_key.data = (uint8_t *)b;
		} else {
			memcpy(key, z->w->d.public_key, 32);
			req.expected_target_key.data = key;
			req.expected_target_key.len = 32;
		}
	}
	if (m & 64) {
		if (take(z) & 1) {
			req.expected_measurement.len = take_blob(z, &b);
			req.expected_measurement.data = (uint8_t *)b;
		} else {
			memcpy(meas, z->w->image_sha, 32);
			req.expected_measurement.data = meas;
			req.expected_measurement.len = 32;
		}
	}
	if (m & 128) {
		req.nonce.len = take_blob(z, &b);
		req.nonce.data = (uint8_t *)b;
	}
	buf = malloc(moat__v1__load_request__get_packed_size(&req) + 1);
	CHECK(buf != NULL);
	len = moat__v1__load_request__pack(&req, buf);
	unary_end(z, &pr, buf, len);
run:
	run_call(z, methods[0], NULL, &pr, &o);
	if (o.delivered && o.code == MOAT_RPC_OK)
		check_load(z, &o);
	free(o.reply);
}

static uint8_t *pack_chunk(const uint8_t *sha, size_t sha_len, uint64_t total, const uint8_t *data,
                           size_t len, size_t *out_len)
{
	Moat__V1__UploadChunk c = MOAT__V1__UPLOAD_CHUNK__INIT;
	uint8_t *buf;

	c.sha256.data = (uint8_t *)sha;
	c.sha256.len = sha_len;
	c.total_size = total;
	c.data.data = (uint8_t *)data;
	c.data.len = len;
	buf = malloc(moat__v1__upload_chunk__get_packed_size(&c) + 1);
	CHECK(buf != NULL);
	*out_len = moat__v1__upload_chunk__pack(&c, buf);
	return buf;
}

static void op_upload(fz *z)
{
	const world *w = z->w;
	uint8_t m = take(z), sha[32], *buf;
	unsigned int i, k = ((m >> 2) & 7) + 1;
	uint64_t total = w->image_len;
	const uint8_t *b;
	fake_outcome o;
	size_t len;
	peer pr;

	peer_init(&pr, z);
	if (++z->uploads > MAX_UPLOADS)
		return;
	memcpy(sha, w->image_sha, 32);
	if ((m & 3) == 1) {
		/* Wrong in one byte of the hash, or in the size. */
		uint8_t at = take(z);

		if (at & 1)
			sha[at % 32] ^= 1 << (at % 8);
		else
			total += (int8_t)take(z);
	}
	for (i = 0; i < k; i++) {
		if ((m & 3) < 2) {
			size_t from = w->image_len * i / k, to = w->image_len * (i + 1) / k;

			buf = pack_chunk(i == 0 ? sha : NULL, i == 0 ? 32 : 0, i == 0 ? total : 0,
			                 w->image + from, to - from, &len);
		} else if ((m & 3) == 2) {
			const uint8_t *s, *d;
			size_t slen = take_blob(z, &s), dlen;
			uint64_t t = take(z);

			dlen = take_blob(z, &d);
			buf = pack_chunk(s, slen, t, d, dlen, &len);
		} else {
			len = take_blob(z, &b);
			buf = dup_bytes(b, len);
		}
		peer_queue(&pr, buf, len);
	}
	pr.end_code = (m & 32) ? MOAT_RPC_CANCELLED : MOAT_RPC_OK;
	run_call(z, methods[1], NULL, &pr, &o);
	if (o.delivered && o.code == MOAT_RPC_OK) {
		Moat__V1__UploadResponse *r = moat__v1__upload_response__unpack(NULL, o.reply_len, o.reply);

		CHECK(r != NULL && r->sha256.len == 32 && r->size == w->image_len);
		CHECK(memcmp(r->sha256.data, w->image_sha, 32) == 0);
		memcpy(z->uploaded, r->sha256.data, 32);
		z->have_upload = 1;
		moat__v1__upload_response__free_unpacked(r, NULL);
	}
	free(o.reply);
}

static void op_attach(fz *z)
{
	const char *md[16];
	char id[80], token[80], kind[80];
	size_t n = 0;
	fake_outcome o;
	uint8_t s;
	peer pr;

	peer_init(&pr, z);
	pr.attach = 1;
	take_auth(z, md, &n, id, token);
	s = take(z);
	pr.lease_end = (s & 2) ? MOAT_RPC_CANCELLED : MOAT_RPC_OK;
	if (s & 4) {
		md[n++] = "moat-stream";
		md[n++] = take_str(z, kind, sizeof(kind));
	} else if (s & 1) {
		md[n++] = "moat-stream";
		md[n++] = "lease";
	}
	md[n] = NULL;
	run_call(z, methods[2], md, &pr, &o);
	free(o.reply);
}

static void op_destroy(fz *z)
{
	const char *md[16];
	char id[80], token[80];
	size_t n = 0;
	fake_outcome o;
	peer pr;

	peer_init(&pr, z);
	take_auth(z, md, &n, id, token);
	md[n] = NULL;
	if (take(z) & 1) {
		const uint8_t *b;
		size_t len = take_blob(z, &b);

		unary_end(z, &pr, dup_bytes(b, len), len);
	} else {
		unary_end(z, &pr, dup_bytes("", 0), 0);
	}
	run_call(z, methods[3], md, &pr, &o);
	CHECK(!o.reply || o.reply_len == 0);
	free(o.reply);
}

static void op_health(fz *z)
{
	Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
	uint8_t m = take(z), *buf;
	char service[128];
	const uint8_t *b;
	fake_outcome o;
	size_t len;
	peer pr;

	peer_init(&pr, z);
	if ((m & 3) == 3) {
		len = take_blob(z, &b);
		buf = dup_bytes(b, len);
	} else {
		req.service = (m & 3) == 0   ? ""
		              : (m & 3) == 1 ? "moat.v1.Target"
		                             : take_str(z, service, sizeof(service));
		buf = malloc(grpc__health__v1__health_check_request__get_packed_size(&req) + 1);
		CHECK(buf != NULL);
		len = grpc__health__v1__health_check_request__pack(&req, buf);
	}
	unary_end(z, &pr, buf, len);
	run_call(z, methods[4], NULL, &pr, &o);
	if (o.delivered && o.code == MOAT_RPC_OK) {
		Grpc__Health__V1__HealthCheckResponse *r =
		    grpc__health__v1__health_check_response__unpack(NULL, o.reply_len, o.reply);

		/* NOT_SERVING while moatd stops, drains or is full (max sessions), so balancers skip it. */
		int down = z->w->d.stop || z->w->d.draining ||
		           (z->w->d.cfg.max_sessions && z->w->d.n_sessions >= z->w->d.cfg.max_sessions);

		CHECK(r != NULL);
		CHECK(r->status == (down
		                        ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
		                        : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING));
		grpc__health__v1__health_check_response__free_unpacked(r, NULL);
	}
	free(o.reply);
}

static void op_unknown(fz *z)
{
	char method[128];
	fake_outcome o;
	peer pr;

	peer_init(&pr, z);
	take_str(z, method, sizeof(method));
	/* A known method name here would run its handler without its script: skip those. */
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strcmp(method, methods[i]) == 0)
			return;
	run_call(z, method, NULL, &pr, &o);
	CHECK(o.delivered && o.code == MOAT_RPC_UNIMPLEMENTED);
	free(o.reply);
}

/* ---- Set-up ---- */

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

static void world_cleanup(void)
{
	if (the_world.root[0])
		nftw(the_world.root, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void read_image(world *w, const char *path)
{
	FILE *f = fopen(path, "rb");
	unsigned int mdlen = 32;
	long n;

	if (!f) {
		fprintf(stderr,
		        "fuzz_moatd: cannot open %s (build the test enclaves, or set MOAT_TEST_ENCLAVES)\n",
		        path);
		abort();
	}
	CHECK(fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0);
	w->image = malloc((size_t)n);
	CHECK(w->image != NULL && fread(w->image, 1, (size_t)n, f) == (size_t)n);
	w->image_len = (size_t)n;
	fclose(f);
	CHECK(EVP_Digest(w->image, w->image_len, w->image_sha, &mdlen, EVP_sha256(), NULL) == 1);
}

static world *world_get(void)
{
	static char state_dir[256], enclave_dir[256];
	world *w = &the_world;
	const char *src = getenv("MOAT_TEST_ENCLAVES");
	const char *tmp = getenv("TMPDIR");
	char from[4200], to[4200];
	size_t i;

	if (w->root[0])
		return w;
	if (!src || !*src)
		src = MOAT_TEST_ENCLAVES;
	snprintf(w->root, sizeof(w->root), "%s/fuzz_moatd.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	CHECK(mkdtemp(w->root) != NULL);
	atexit(world_cleanup);
	CHECK(snprintf(state_dir, sizeof(state_dir), "%s/state", w->root) < (int)sizeof(state_dir));
	CHECK(snprintf(enclave_dir, sizeof(enclave_dir), "%s/enclaves", w->root) < (int)sizeof(enclave_dir));
	CHECK(snprintf(w->images, sizeof(w->images), "%s/images", state_dir) < (int)sizeof(w->images));
	CHECK(mkdir(enclave_dir, 0700) == 0);
	/* Only images that behave: the tree's enclaves dir also has hostile ones for the proc tests. */
	for (i = 0; i < sizeof(safe_images) / sizeof(safe_images[0]); i++) {
		snprintf(from, sizeof(from), "%s/%s.so", src, safe_images[i]);
		snprintf(to, sizeof(to), "%s/%s.so", enclave_dir, safe_images[i]);
		if (access(from, R_OK) == 0)
			CHECK(symlink(from, to) == 0);
	}
	snprintf(from, sizeof(from), "%s/test_enclave.so", src);
	read_image(w, from);

	trace = getenv("FUZZ_MOATD_TRACE") != NULL;
	moatd_log_level = getenv("FUZZ_MOATD_LOG") ? MOATD_LOG_DEBUG : MOATD_LOG_ERROR - 1;
	w->d.cfg.listen = "unix:/nonexistent";
	w->d.cfg.backend = "sim";
	w->d.cfg.enclave_dir = enclave_dir;
	w->d.cfg.state_dir = state_dir;
	w->d.cfg.max_message = 64 << 20;
	w->d.cfg.parent_fd = -1;
	w->d.cfg.shutdown_s = 5;
	/* moatd's defaults for the bounds (options.c is not linked here). */
	w->d.cfg.max_store = MOATD_DEFAULT_MAX_STORE;
	w->d.cfg.max_uploads = MOATD_DEFAULT_MAX_UPLOADS;
	w->d.cfg.max_attached = 1024;
	w->d.cfg.max_pending = 128;
	w->d.cfg.request_timeout_ms = 10000;
	CHECK(moatd_identity_load(&w->d) == 0);
	moatd_sessions_init(&w->d);
	moatd_store_init(&w->d);
	return w;
}

/* Set the limits of this input from its first byte; forget the last input's upload. */
static void world_reset(world *w, uint8_t limits)
{
	static const unsigned int sessions[] = {8, 1, 2, 0}, threads[] = {0, 1, 2, 4},
	                          nesting[] = {1, 2, 4, 16};
	char path[400], hex[65];
	moatd_config *c = &w->d.cfg;

	c->max_sessions = sessions[limits & 3];
	c->max_threads = threads[(limits >> 2) & 3];
	c->max_nesting = nesting[(limits >> 4) & 3];
	c->allow_upload = !(limits & 64);
	c->max_image = (limits & 128) ? 64 : 1 << 20;
	c->grace_ms = 0;
	w->d.stop = 0;
	moat__hex(hex, w->image_sha, 32);
	CHECK(snprintf(path, sizeof(path), "%s/%s.so", w->images, hex) < (int)sizeof(path));
	unlink(path);
}

/* An upload leaves nothing behind but the images it stored. */
static void check_images_dir(const world *w)
{
	DIR *dir = opendir(w->images);
	struct dirent *e;

	if (!dir)
		return;
	while ((e = readdir(dir)) != NULL)
		CHECK(strncmp(e->d_name, ".upload-", 8) != 0);
	closedir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	world *w = world_get();
	fz z;

	if (size < 1)
		return 0;
	memset(&z, 0, sizeof(z));
	z.w = w;
	z.p = data + 1;
	z.n = size - 1;
	world_reset(w, data[0]);
	if (trace)
		fprintf(stderr, "fuzz_moatd: input of %zu bytes\n", size);
	while (z.n) {
		switch (take(&z) % 10) {
		case 0: op_load(&z); break;
		case 1: op_upload(&z); break;
		case 2:
		case 3:
		case 9: op_attach(&z); break;
		case 4: op_destroy(&z); break;
		case 5: op_health(&z); break;
		case 6: op_unknown(&z); break;
		case 7: moatd_tick(&w->d); break;
		default:
			w->d.stop = 1;
			moatd_target_stopping(&w->d);
			break;
		}
	}
	/* moatd stops: every session goes. */
	w->d.stop = 1;
	moatd_target_stopping(&w->d);
	moatd_target_shutdown(&w->d);
	CHECK(w->d.sessions == NULL);
	CHECK(moatd_session_count(&w->d) == 0);
	check_images_dir(w);
	w->d.stop = 0;
	return 0;
}

#ifndef MOAT_LIBFUZZER
/* A seed being written. */
typedef struct seed {
	uint8_t b[1024];
	size_t n;
} seed;

static void put(seed *s, int nbytes, ...)
{
	va_list ap;
	int i;

	va_start(ap, nbytes);
	for (i = 0; i < nbytes; i++) {
		CHECK(s->n < sizeof(s->b));
		s->b[s->n++] = (uint8_t)va_arg(ap, int);
	}
	va_end(ap);
}

static void put_blob(seed *s, const char *str)
{
	size_t len = strlen(str);

	CHECK(len < 255 && s->n + 1 + len <= sizeof(s->b));
	s->b[s->n++] = (uint8_t)len;
	memcpy(s->b + s->n, str, len);
	s->n += len;
}

/* Index of a selector in selectors[] (the Call frame's selector byte). */
static int sel(uint64_t selector)
{
	int i;

	for (i = 0; i < (int)(sizeof(selectors) / 8); i++)
		if (selectors[i] == selector)
			return i;
	abort();
}

/* An items kind byte pushing selectors[sel(selector)] as a u64. */
static int item_sel(uint64_t selector)
{
	return sel(selector) << 2 | 2;
}

static void write_seed(const char *dir, const char *name, const seed *s)
{
	char path[4096];
	FILE *out;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	out = fopen(path, "wb");
	CHECK(out != NULL);
	CHECK(fwrite(s->b, 1, s->n, out) == s->n);
	CHECK(fclose(out) == 0);
}

enum { OP_LOAD, OP_UPLOAD, OP_ATTACH, OP_DESTROY = 4, OP_HEALTH, OP_METHOD, OP_TICK, OP_STOP };
enum { F_CALL, F_RETURN = 3, F_RETURN_SEQ, F_RAW, F_CLOSE, F_CANCEL };

/* fuzz_moatd --make-seeds DIR: write the seed corpus (kept in fuzz/corpus/moatd). */
static int make_seeds(const char *dir)
{
	seed s;

	/* Load test_enclave by name. */
	memset(&s, 0, sizeof(s));
	put(&s, 4, 0, OP_LOAD, 0, 0);
	write_seed(dir, "load", &s);

	/*
	 * Load, then Attach: an echo, an exit call the host answers (a log line
	 * forwarded from the enclave), half-close; then Destroy.
	 */
	memset(&s, 0, sizeof(s));
	put(&s, 4, 0, OP_LOAD, 0, 0);
	put(&s, 3, OP_ATTACH, 0, 0);
	put(&s, 4, F_CALL, sel(T_ECHO), 1, 3);
	put_blob(&s, "hello");
	put(&s, 5, F_CALL, sel(T_EXIT), 2, item_sel(MOAT_SELECTOR_LOG), 3);
	put_blob(&s, "from the enclave");
	put(&s, 3, F_RETURN, 0, 0);
	put(&s, 1, F_CLOSE);
	put(&s, 4, OP_DESTROY, 0, 0, 0);
	write_seed(dir, "load-attach-call", &s);

	/*
	 * Upload test_enclave.so in 3 chunks, Load it by hash, set a finalizer
	 * exit call and destroy the session on the stream: the finalizer's
	 * exit call comes back on it (after its thread start was refused).
	 */
	memset(&s, 0, sizeof(s));
	put(&s, 1, 0);
	put(&s, 2, OP_UPLOAD, 2 << 2);
	put(&s, 3, OP_LOAD, 3, 0);
	put(&s, 3, OP_ATTACH, 0, 0);
	put(&s, 4, F_CALL, sel(T_ON_FINI), 1, item_sel(MOAT_SELECTOR_USER + 100));
	put(&s, 3, F_CALL, sel(MOAT_PROTOCOL_SELECTOR_DESTROY), 0);
	put(&s, 3, F_RETURN, 0, 0);
	put(&s, 3, OP_HEALTH, 0, 0);
	write_seed(dir, "upload-load-sha-destroy", &s);

	/*
	 * Tokens: a wrong one, none, one in upper case (accepted), a missing
	 * session id, fuzzed ones; calls to a destroyed session; health for
	 * an unknown service; an unknown method.
	 */
	memset(&s, 0, sizeof(s));
	put(&s, 4, 0, OP_LOAD, 0, 0);
	put(&s, 3, OP_ATTACH, 4, 0);
	put(&s, 3, OP_ATTACH, 5, 0);
	put(&s, 4, OP_DESTROY, 6, 0, 0);
	put(&s, 4, OP_DESTROY, 3, 0, 0);
	put(&s, 3, OP_ATTACH, 0, 0);
	put(&s, 2, OP_DESTROY, 7);
	put_blob(&s, "0123456789abcdef0123456789abcdef");
	put_blob(&s, "not a token");
	put(&s, 2, 0, 0);
	put(&s, 2, OP_HEALTH, 2);
	put_blob(&s, "nope");
	put(&s, 1, 0);
	put(&s, 1, OP_METHOD);
	put_blob(&s, "/moat.v1.Target/Nothing");
	write_seed(dir, "bad-token", &s);

	/*
	 * Malformed: a raw LoadRequest, bytes that are not a frame, a raw
	 * UploadChunk, a raw health request, Load ended early (half-close,
	 * cancel), an Upload cancelled half-way.
	 */
	memset(&s, 0, sizeof(s));
	put(&s, 3, 0, OP_LOAD, 7);
	put_blob(&s, "\x08\x01\x1a\xff");
	put(&s, 1, 0);
	put(&s, 3, OP_LOAD, 0, 0);
	put(&s, 4, OP_ATTACH, 0, 0, F_RAW);
	put_blob(&s, "\x0a\x05\x08\x01\x10");
	put(&s, 2, OP_UPLOAD, 3);
	put_blob(&s, "\x0a\x03\x01");
	put(&s, 2, OP_HEALTH, 3);
	put_blob(&s, "\x0a\x80");
	put(&s, 1, 0);
	put(&s, 3, OP_LOAD, 0, 2);
	put(&s, 3, OP_LOAD, 0, 3);
	put(&s, 2, OP_UPLOAD, 32 | 1 << 2);
	write_seed(dir, "malformed", &s);

	/*
	 * A lease that ends, reclaimed at the next tick; nesting past a limit of
	 * 1 (the host calls in from an exit call); an enclave starting threads
	 * (the spawns are refused); moatd stops.
	 */
	memset(&s, 0, sizeof(s));
	put(&s, 4, 0, OP_LOAD, 0, 0);
	put(&s, 3, OP_ATTACH, 0, 1);
	put(&s, 1, OP_TICK);
	put(&s, 3, OP_ATTACH, 0, 0);
	put(&s, 3, OP_LOAD, 0, 0);
	put(&s, 3, OP_ATTACH, 1 << 3, 0);
	put(&s, 4, F_CALL, sel(T_EXIT), 1, item_sel(MOAT_SELECTOR_USER + 100));
	put(&s, 3, F_CALL, sel(T_ECHO), 0);
	put(&s, 3, F_RETURN, 0, 0);
	put(&s, 4, F_CALL, sel(T_THREADS), 1, 2 << 2);
	put(&s, 1, F_CLOSE);
	put(&s, 1, OP_STOP);
	put(&s, 5, OP_ATTACH, 1 << 3, 0, F_CALL, sel(T_ECHO));
	put(&s, 2, 0, F_CLOSE);
	put(&s, 3, OP_HEALTH, 1, 0);
	write_seed(dir, "lease-nesting-stop", &s);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--make-seeds") == 0)
		return make_seeds(argv[2]);
	return moat_fuzz_replay("fuzz_moatd", argc, argv);
}
#endif
