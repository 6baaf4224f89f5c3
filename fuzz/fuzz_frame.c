/*
 * Fuzz target for the frame codec (src/codec/frame.c): decode arbitrary
 * bytes; whatever decodes is re-encoded, decoded again and compared field by
 * field, and the second encoding must be byte-identical to the first (the
 * encoder is canonical, so encode(decode(encode(x))) == encode(x)).
 *
 * Built with -DMOAT_FUZZ=ON and clang, this is a libFuzzer target. Otherwise
 * main() below replays files and directories given on the command line (the
 * seed corpus) plus every truncation and single-byte corruption of each
 * seed, so the codec's robustness is checked by ctest on every build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/frame.h"
#include "replay.h"

static void same_items(const moat_msg *a, const moat_msg *b)
{
	size_t i, n = moat_msg_count(a);

	CHECK(moat_msg_count(b) == n);
	for (i = 0; i < n; i++) {
		const void *da, *db;
		size_t la, lb;

		CHECK(moat_msg_item(a, i, &da, &la) == 0);
		CHECK(moat_msg_item(b, i, &db, &lb) == 0);
		CHECK(la == lb);
		CHECK(la == 0 || memcmp(da, db, la) == 0);
	}
}

/* Re-encode a decoded frame. */
static void encode_again(const moat_frame_in *in, uint8_t **buf, size_t *len)
{
	moat_frame f;

	memset(&f, 0, sizeof(f));
	f.kind = in->kind;
	f.seq = in->seq;
	f.selector = in->selector;
	f.code = in->code;
	f.origin = in->origin;
	f.enclave_code = in->enclave_code;
	f.message = in->message;
	f.items = in->items;
	CHECK(moat__frame_encode(&f, 3, buf, len) == 0);
	CHECK(*len >= 3);
	/* The size and pack entry points agree with encode. */
	CHECK(moat__frame_size(&f) == *len - 3);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	moat_frame_in *a = NULL, *b = NULL, *c = NULL;
	uint8_t *buf1 = NULL, *buf2 = NULL, *packed = NULL;
	size_t len1, len2;
	int rc;

	rc = moat__frame_decode(&a, data, size);
	if (rc < 0) {
		CHECK(rc == MOAT_EPROTO || rc == MOAT_ENOMEM);
		CHECK(a == NULL);
		return 0;
	}
	CHECK(a != NULL);
	CHECK(a->kind == MOAT_FRAME_CALL || a->kind == MOAT_FRAME_RETURN);
	CHECK(a->message != NULL);
	CHECK(a->items != NULL);

	encode_again(a, &buf1, &len1);
	CHECK(moat__frame_decode(&b, buf1 + 3, len1 - 3) == 0);
	CHECK(b->kind == a->kind);
	CHECK(b->seq == a->seq);
	if (a->kind == MOAT_FRAME_CALL) {
		CHECK(b->selector == a->selector);
	} else {
		CHECK(b->code == a->code);
		CHECK(b->origin == a->origin);
		CHECK(b->enclave_code == a->enclave_code);
		CHECK(strcmp(b->message, a->message) == 0);
	}
	same_items(a->items, b->items);

	encode_again(b, &buf2, &len2);
	CHECK(len2 == len1);
	CHECK(memcmp(buf1 + 3, buf2 + 3, len1 - 3) == 0);

	/* moat__frame_pack into an exact-size buffer writes the same bytes. */
	packed = malloc(len1 - 3 + 1);
	CHECK(packed != NULL);
	{
		moat_frame f;

		memset(&f, 0, sizeof(f));
		f.kind = b->kind;
		f.seq = b->seq;
		f.selector = b->selector;
		f.code = b->code;
		f.origin = b->origin;
		f.enclave_code = b->enclave_code;
		f.message = b->message;
		f.items = b->items;
		CHECK(moat__frame_pack(&f, packed) == len1 - 3);
		CHECK(memcmp(packed, buf1 + 3, len1 - 3) == 0);
	}
	CHECK(moat__frame_decode(&c, packed, len1 - 3) == 0);
	same_items(a->items, c->items);

	free(packed);
	moat__frame_in_free(c);
	free(buf2);
	free(buf1);
	moat__frame_in_free(b);
	moat__frame_in_free(a);
	return 0;
}

#ifndef MOAT_LIBFUZZER
static void write_seed(const char *dir, const char *name, const moat_frame *f)
{
	char path[4096];
	uint8_t *buf = NULL;
	size_t len = 0;
	FILE *out;

	CHECK(moat__frame_encode(f, 0, &buf, &len) == 0);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	out = fopen(path, "wb");
	CHECK(out != NULL);
	CHECK(fwrite(buf, 1, len, out) == len);
	CHECK(fclose(out) == 0);
	free(buf);
}

/* fuzz_frame --make-seeds DIR: write the seed corpus (kept in fuzz/corpus/frame). */
static int make_seeds(const char *dir)
{
	static uint8_t blob[1000];
	moat_frame f;
	moat_msg *items = NULL;
	size_t i;

	for (i = 0; i < sizeof(blob); i++)
		blob[i] = (uint8_t)(i * 37);
	CHECK(moat_msg_new(&items) == 0);
	memset(&f, 0, sizeof(f));
	f.kind = MOAT_FRAME_CALL;
	f.seq = 1;
	f.selector = 1024;
	write_seed(dir, "call-empty", &f);
	moat_msg_push_str(items, "world");
	moat_msg_push(items, NULL, 0);
	moat_msg_push_u64(items, 0x0102030405060708ull);
	f.items = items;
	f.seq = 7;
	f.selector = 1025;
	write_seed(dir, "call-items", &f);
	f.seq = UINT64_MAX;
	f.selector = UINT64_MAX;
	write_seed(dir, "call-max", &f);
	memset(&f, 0, sizeof(f));
	f.kind = MOAT_FRAME_RETURN;
	f.seq = 7;
	f.items = items;
	write_seed(dir, "return-ok", &f);
	moat_msg_reset(items);
	f.code = MOAT_EHANDLER;
	f.origin = MOAT_ORIGIN_ENCLAVE;
	f.enclave_code = -1234;
	f.message = "the enclave's handler for selector 1025 returned -1234";
	f.items = NULL;
	write_seed(dir, "return-ehandler", &f);
	moat_msg_push_borrowed(items, blob, sizeof(blob));
	moat_msg_push_str(items, "tail");
	f.code = 0;
	f.origin = 0;
	f.enclave_code = INT64_MIN;
	f.message = NULL;
	f.items = items;
	write_seed(dir, "return-blob", &f);
	moat_msg_free(items);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--make-seeds") == 0)
		return make_seeds(argv[2]);
	return moat_fuzz_replay("fuzz_frame", argc, argv);
}
#endif
