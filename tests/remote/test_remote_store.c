/*
 * moatd's image store seen by a raw gRPC client: the --max-store-bytes
 * quota (least recently loaded images evicted first, never one a live
 * session runs; refused when an image cannot fit), the --max-uploads bound,
 * and refusals that name the host's image, never moatd's paths.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>

#include <moat/moat.h>

#include "moat/v1/target.pb-c.h"
#include "moat_test.h"
#include "moatd_helper.h"
#include "rpc/rpc.h"

#define BLOB 20000 /* bytes of each test image */

static moat_rpc_channel *ch;
/* Nothing reads the keepalive acks while a test sleeps: a test that sleeps long makes the period longer. */
static unsigned int keepalive_ms = 1000;

/* gRPC starts after moatd: a process must not fork once gRPC runs in it. */
static void connect_to(const test_moatd *m)
{
	moat_rpc_channel_opts o = {0};

	moat__rpc_init();
	o.target = m->addr;
	o.keepalive_ms = keepalive_ms;
	o.max_receive_bytes = -1;
	assert_int_equal(moat__rpc_channel_open(&ch, &o), 0);
}

static void disconnect(test_moatd *m)
{
	moat__rpc_channel_close(ch);
	ch = NULL;
	moat__rpc_shutdown();
	assert_int_equal(test_moatd_stop(m), 0);
}

/* A test image: len bytes that differ with tag (not an ELF file: loading it fails after the store). */
static uint8_t *blob(int tag, size_t len, uint8_t sha[32], char hex[65])
{
	uint8_t *b = malloc(len);
	unsigned int mdlen = 32;
	size_t i;

	assert_non_null(b);
	for (i = 0; i < len; i++)
		b[i] = (uint8_t)(tag * 31 + i * 7);
	assert_int_equal(EVP_Digest(b, len, sha, &mdlen, EVP_sha256(), NULL), 1);
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", sha[i]);
	return b;
}

/* The size and SHA-256 of the file at path. */
static size_t file_sha(const char *path, uint8_t sha[32], char hex[65])
{
	unsigned int mdlen = 32;
	uint8_t *b;
	size_t len;
	FILE *f = fopen(path, "rb");
	int i;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	len = (size_t)ftell(f);
	rewind(f);
	b = malloc(len);
	assert_non_null(b);
	assert_int_equal(fread(b, 1, len, f), len);
	fclose(f);
	assert_int_equal(EVP_Digest(b, len, sha, &mdlen, EVP_sha256(), NULL), 1);
	for (i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", sha[i]);
	free(b);
	return len;
}

/* Send the first chunk (hash, total size, the first n bytes) of an upload and leave it open. */
static moat_rpc_call *upload_open(const uint8_t *data, size_t len, size_t n, const uint8_t sha[32],
                                  moat_rpc_status *st)
{
	Moat__V1__UploadChunk c = MOAT__V1__UPLOAD_CHUNK__INIT;
	moat_rpc_call *call = NULL;
	uint8_t *buf = malloc(n + 256);
	size_t packed;

	assert_non_null(buf);
	c.sha256.data = (uint8_t *)sha;
	c.sha256.len = 32;
	c.total_size = len;
	c.data.data = (uint8_t *)data;
	c.data.len = n;
	packed = moat__v1__upload_chunk__pack(&c, buf);
	assert_int_equal(moat__rpc_stream_open(&call, ch, "/moat.v1.Target/Upload", NULL), 0);
	moat__rpc_exchange(call, buf, packed, NULL, NULL, 10000, st);
	free(buf);
	return call;
}

/* Send the rest of an upload, half-close, and return its gRPC status. */
static int upload_close(moat_rpc_call *call, const uint8_t *rest, size_t n, moat_rpc_status *st)
{
	Moat__V1__UploadChunk c = MOAT__V1__UPLOAD_CHUNK__INIT;
	uint8_t *buf = malloc(n + 256);
	int rc;

	assert_non_null(buf);
	if (n) {
		c.data.data = (uint8_t *)rest;
		c.data.len = n;
		moat__rpc_exchange(call, buf, moat__v1__upload_chunk__pack(&c, buf), NULL, NULL, 10000, st);
	}
	free(buf);
	buf = NULL;
	rc = moat__rpc_stream_finish(call, &buf, &n, 10000, st);
	free(buf);
	moat__rpc_call_free(call);
	return rc;
}

static int upload(const uint8_t *data, size_t len, const uint8_t sha[32], moat_rpc_status *st)
{
	return upload_close(upload_open(data, len, len, sha, st), NULL, 0, st);
}

/* Load an uploaded image by hash; returns the gRPC status (test blobs never load: not an ELF file). */
static int load_sha(const uint8_t sha[32], moat_rpc_status *st)
{
	Moat__V1__LoadRequest req = MOAT__V1__LOAD_REQUEST__INIT;
	uint8_t buf[256], *reply = NULL;
	size_t len;
	int rc;

	req.protocol_major = 1;
	req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_SHA256;
	req.sha256.data = (uint8_t *)sha;
	req.sha256.len = 32;
	rc = moat__rpc_unary(ch, "/moat.v1.Target/Load", NULL, buf, moat__v1__load_request__pack(&req, buf),
	                     &reply, &len, 10000, st);
	free(reply);
	return rc;
}

static int load_name(const char *name, moat_rpc_status *st)
{
	Moat__V1__LoadRequest req = MOAT__V1__LOAD_REQUEST__INIT;
	uint8_t buf[256], *reply = NULL;
	size_t len;
	int rc;

	req.protocol_major = 1;
	req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_NAME;
	req.name = (char *)name;
	rc = moat__rpc_unary(ch, "/moat.v1.Target/Load", NULL, buf, moat__v1__load_request__pack(&req, buf),
	                     &reply, &len, 10000, st);
	free(reply);
	return rc;
}

static int stored(const test_moatd *m, const char *hex)
{
	char path[400];

	snprintf(path, sizeof(path), "%s/state/images/%s.so", m->dir, hex);
	return access(path, F_OK) == 0;
}

static void assert_store_full(const moat_rpc_status *st)
{
	assert_int_equal(st->code, MOAT_RPC_RESOURCE_EXHAUSTED);
	assert_int_equal(st->moat_code, MOAT_ELIMIT);
	assert_non_null(strstr(st->message, "--max-store-bytes"));
}

/*
 * Four images fit in the quota, not five: each upload past that evicts the
 * least recently loaded (or stored) one. Loading the oldest keeps it.
 */
static void test_quota_evicts_least_recently_loaded(void **state)
{
	char quota[32], hex[6][65];
	uint8_t sha[6][32], *b[6];
	moat_rpc_status st;
	test_moatd m;
	int i;

	snprintf(quota, sizeof(quota), "%d", 4 * BLOB + BLOB / 2);
	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-store-bytes", quota, NULL), 0);
	connect_to(&m);
	for (i = 0; i < 6; i++)
		b[i] = blob(i, BLOB, sha[i], hex[i]);
	/* File times are as coarse as the kernel's clock tick: space the uploads out. */
	for (i = 0; i < 4; i++) {
		assert_int_equal(upload(b[i], BLOB, sha[i], &st), MOAT_RPC_OK);
		test_sleep_ms(30);
	}
	/* A Load of image 0 (it fails: not an ELF file) makes it the most recently loaded. */
	assert_int_equal(load_sha(sha[0], &st), MOAT_RPC_FAILED_PRECONDITION);
	assert_int_equal(st.moat_code, MOAT_EBADIMAGE);
	test_sleep_ms(30);

	assert_int_equal(upload(b[4], BLOB, sha[4], &st), MOAT_RPC_OK);
	assert_true(stored(&m, hex[0]));
	assert_false(stored(&m, hex[1]));
	assert_true(stored(&m, hex[2]) && stored(&m, hex[3]) && stored(&m, hex[4]));
	test_sleep_ms(30);
	assert_int_equal(upload(b[5], BLOB, sha[5], &st), MOAT_RPC_OK);
	assert_false(stored(&m, hex[2]));
	assert_true(stored(&m, hex[0]) && stored(&m, hex[3]) && stored(&m, hex[4]) && stored(&m, hex[5]));

	/* An evicted image is simply not there any more. */
	assert_int_equal(load_sha(sha[1], &st), MOAT_RPC_NOT_FOUND);
	assert_int_equal(st.moat_code, MOAT_ENOENT);
	assert_non_null(strstr(st.message, hex[1]));
	/* The same image again replaces itself: nothing is evicted for it. */
	assert_int_equal(upload(b[5], BLOB, sha[5], &st), MOAT_RPC_OK);
	assert_true(stored(&m, hex[0]) && stored(&m, hex[3]) && stored(&m, hex[4]) && stored(&m, hex[5]));
	for (i = 0; i < 6; i++)
		free(b[i]);
	disconnect(&m);
}

/* An image larger than the whole store is refused before any byte is kept; nothing is evicted for it. */
static void test_image_larger_than_store(void **state)
{
	char quota[32], hex[2][65];
	uint8_t sha[2][32], *small, *big;
	moat_rpc_status st;
	test_moatd m;

	snprintf(quota, sizeof(quota), "%d", 2 * BLOB);
	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-store-bytes", quota, NULL), 0);
	connect_to(&m);
	small = blob(1, BLOB, sha[0], hex[0]);
	big = blob(2, 2 * BLOB + 1, sha[1], hex[1]);
	assert_int_equal(upload(small, BLOB, sha[0], &st), MOAT_RPC_OK);
	assert_int_equal(upload(big, 2 * BLOB + 1, sha[1], &st), MOAT_RPC_RESOURCE_EXHAUSTED);
	assert_store_full(&st);
	fprintf(stderr, "too big for the store: %s\n", st.message);
	assert_true(stored(&m, hex[0]));
	assert_false(stored(&m, hex[1]));
	free(small);
	free(big);
	disconnect(&m);
}

/*
 * An image a live session runs is never evicted: an upload that would need
 * its room is refused; once the session is gone the upload evicts it.
 */
static void test_image_in_use_not_evicted(void **state)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	char quota[32], hex[65], hello_hex[65];
	uint8_t sha[32], hello_sha[32], *b;
	moat_rpc_status st;
	moat_enclave *e;
	test_moatd m;
	size_t hello_len = file_sha(TEST_ENCLAVE("hello_enclave"), hello_sha, hello_hex);

	/* Room for hello_enclave and a blob of BLOB bytes, but not one of 2 * BLOB beside it. */
	snprintf(quota, sizeof(quota), "%zu", hello_len + 2 * BLOB - 1);
	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-store-bytes", quota, NULL), 0);
	connect_to(&m);
	o.backend = m.uri;
	e = test_load(TEST_ENCLAVE("hello_enclave"), &o);
	assert_true(stored(&m, hello_hex));

	b = blob(7, 2 * BLOB, sha, hex);
	assert_int_equal(upload(b, 2 * BLOB, sha, &st), MOAT_RPC_RESOURCE_EXHAUSTED);
	assert_store_full(&st);
	fprintf(stderr, "store full of images in use: %s\n", st.message);
	assert_true(stored(&m, hello_hex));
	assert_false(stored(&m, hex));

	moat_enclave_destroy(e);
	assert_int_equal(upload(b, 2 * BLOB, sha, &st), MOAT_RPC_OK);
	assert_false(stored(&m, hello_hex));
	assert_true(stored(&m, hex));
	free(b);
	disconnect(&m);
}

/*
 * With --max-uploads 1, an upload while another one is under way waits for
 * its slot (about 2 s), then is refused; once the first is done, uploads
 * go through again.
 */
static void test_max_uploads(void **state)
{
	char hex[2][65];
	uint8_t sha[2][32], *b[2];
	moat_rpc_status st, st2;
	moat_rpc_call *held;
	test_moatd m;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-uploads", "1", NULL), 0);
	connect_to(&m);
	b[0] = blob(0, BLOB, sha[0], hex[0]);
	b[1] = blob(1, BLOB, sha[1], hex[1]);
	held = upload_open(b[0], BLOB, BLOB / 2, sha[0], &st);
	test_sleep_ms(300);
	assert_int_equal(upload(b[1], BLOB, sha[1], &st2), MOAT_RPC_RESOURCE_EXHAUSTED);
	assert_int_equal(st2.moat_code, MOAT_ELIMIT);
	assert_non_null(strstr(st2.message, "--max-uploads"));
	fprintf(stderr, "upload bound: %s\n", st2.message);
	assert_int_equal(upload_close(held, b[0] + BLOB / 2, BLOB - BLOB / 2, &st), MOAT_RPC_OK);
	assert_int_equal(upload(b[1], BLOB, sha[1], &st2), MOAT_RPC_OK);
	assert_true(stored(&m, hex[0]) && stored(&m, hex[1]));
	free(b[0]);
	free(b[1]);
	disconnect(&m);
}

/* An upload that sends nothing for 10 s is cancelled, and gives its slot up. */
static void test_idle_upload_ended(void **state)
{
	char hex[2][65];
	uint8_t sha[2][32], *b[2];
	moat_rpc_status st, st2;
	moat_rpc_call *held;
	test_moatd m;
	int rc;

	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--max-uploads", "1", NULL), 0);
	keepalive_ms = 60000;
	connect_to(&m);
	keepalive_ms = 1000;
	b[0] = blob(0, BLOB, sha[0], hex[0]);
	b[1] = blob(1, BLOB, sha[1], hex[1]);
	held = upload_open(b[0], BLOB, BLOB / 2, sha[0], &st);
	test_sleep_ms(10500);
	assert_int_equal(upload(b[1], BLOB, sha[1], &st2), MOAT_RPC_OK);
	rc = upload_close(held, NULL, 0, &st);
	fprintf(stderr, "idle upload: status %d, moat-error %d: %s\n", rc, st.moat_code, st.message);
	assert_int_equal(rc, MOAT_RPC_CANCELLED);
	assert_false(stored(&m, hex[0]));
	assert_true(stored(&m, hex[1]));
	free(b[0]);
	free(b[1]);
	disconnect(&m);
}

/* Refusals name the image as the host named it (its name or SHA-256), never a path of moatd's. */
static void test_errors_name_no_paths(void **state)
{
	char dir[200], path[300], hex[65];
	uint8_t sha[32], *b;
	moat_rpc_status st;
	test_moatd m;
	FILE *f;

	snprintf(dir, sizeof(dir), "/tmp/moat-store-XXXXXX");
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/not_elf.so", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs("not an enclave image\n", f);
	fclose(f);
	assert_int_equal(test_moatd_start(&m, "grpc", "--allow-upload", "--enclave-dir", dir, NULL), 0);
	connect_to(&m);

	assert_int_equal(load_name("not_elf", &st), MOAT_RPC_FAILED_PRECONDITION);
	fprintf(stderr, "by name: %s\n", st.message);
	assert_int_equal(st.moat_code, MOAT_EBADIMAGE);
	assert_non_null(strstr(st.message, "'not_elf'"));
	assert_null(strchr(st.message, '/'));

	b = blob(3, BLOB, sha, hex);
	assert_int_equal(upload(b, BLOB, sha, &st), MOAT_RPC_OK);
	assert_int_equal(load_sha(sha, &st), MOAT_RPC_FAILED_PRECONDITION);
	fprintf(stderr, "by hash: %s\n", st.message);
	assert_int_equal(st.moat_code, MOAT_EBADIMAGE);
	assert_non_null(strstr(st.message, hex));
	assert_null(strchr(st.message, '/'));
	assert_null(strstr(st.message, "state"));

	assert_int_equal(load_name("missing", &st), MOAT_RPC_NOT_FOUND);
	assert_null(strchr(st.message, '/'));
	free(b);
	disconnect(&m);
	unlink(path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_quota_evicts_least_recently_loaded),
	    cmocka_unit_test(test_image_larger_than_store),
	    cmocka_unit_test(test_image_in_use_not_evicted),
	    cmocka_unit_test(test_max_uploads),
	    cmocka_unit_test(test_idle_upload_ended),
	    cmocka_unit_test(test_errors_name_no_paths),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
