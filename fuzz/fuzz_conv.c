/*
 * Fuzz target for the conversation engine (src/codec/conv.c): the input is
 * a script for the peer. Byte 0 picks the side the engine plays (bit 0:
 * caller or server) and its nesting limit (bits 1-3); then the engine's
 * recv callback takes frames from the script (2-byte little-endian length,
 * then that many bytes of an encoded frame; a frame that does not decode
 * is a protocol error, the end of the script is the end of the stream),
 * and its serve callback takes one byte per served Call (bit 0: make a
 * nested call of its own first; bits 1-2: the result code).
 *
 * Checked on every input: each Return the engine sends answers the
 * innermost Call it is serving, with that Call's seq; its own Calls are
 * numbered 1, 2, 3...; nesting never passes the limit; the engine ends
 * (no hang: the script is finite) and frees everything (ASan/valgrind).
 */
#include <string.h>

#include "codec/conv.h"
#include "replay.h"

#define MAX_SERVED 64

typedef struct script {
	const uint8_t *p;
	size_t n;
	moat_conv conv;
	uint64_t served[MAX_SERVED]; /* seqs of the peer's Calls being served, innermost last */
	size_t nserved;
	uint64_t last_sent_seq;
	unsigned int nested_calls; /* calls the serve callback made, to bound the work */
} script;

static int take(script *s, uint8_t *b)
{
	if (!s->n)
		return -1;
	*b = *s->p++;
	s->n--;
	return 0;
}

static int fz_send(void *io, const moat_frame *f)
{
	script *s = io;

	if (f->kind == MOAT_FRAME_RETURN) {
		/* A Return answers the innermost Call being served. */
		CHECK(s->nserved > 0);
		CHECK(f->seq == s->served[s->nserved - 1]);
		s->nserved--;
		CHECK(f->code == 0 || f->items == NULL);
	} else {
		CHECK(f->kind == MOAT_FRAME_CALL);
		CHECK(f->seq == s->last_sent_seq + 1);
		s->last_sent_seq = f->seq;
	}
	return 0;
}

static int fz_recv(void *io, moat_frame_in **out, int64_t deadline_ns)
{
	script *s = io;
	size_t len;
	int rc;

	if (s->n < 2)
		return MOAT_ETRANSPORT;
	len = (size_t)s->p[0] | (size_t)s->p[1] << 8;
	s->p += 2;
	s->n -= 2;
	if (len > s->n)
		len = s->n;
	rc = moat__frame_decode(out, s->p, len);
	s->p += len;
	s->n -= len;
	if (rc == 0 && (*out)->kind == MOAT_FRAME_CALL) {
		CHECK(s->nserved < MAX_SERVED);
		s->served[s->nserved++] = (*out)->seq;
	}
	return rc;
}

static void fz_serve(void *ctx, const moat_frame_in *call, moat_msg *out, moat_conv_result *res)
{
	static const int codes[] = {0, MOAT_EHANDLER, MOAT_ENOSELECTOR, MOAT_ECRASHED};
	script *s = ctx;
	uint8_t b = 0;

	CHECK(s->conv.max_depth == 0 || s->conv.depth <= s->conv.max_depth);
	take(s, &b);
	if ((b & 1) && s->nested_calls < 16) {
		moat_frame_in *ret = NULL;

		s->nested_calls++;
		if (moat__conv_call(&s->conv, call->selector + 1, call->items, 0, &ret) == 0)
			moat__frame_in_free(ret);
	}
	res->code = codes[(b >> 1) & 3];
	if (res->code) {
		res->origin = MOAT_ORIGIN_ENCLAVE;
		strcpy(res->message, "failed");
	} else {
		CHECK(moat_msg_push_str(out, "reply") == 0);
	}
}

static const moat_conv_ops fz_ops = {fz_send, fz_recv, fz_serve};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	script s;
	moat_frame_in *ret = NULL;
	int rc;

	if (size < 1)
		return 0;
	memset(&s, 0, sizeof(s));
	s.p = data + 1;
	s.n = size - 1;
	moat__conv_init(&s.conv, &fz_ops, &s, &s);
	s.conv.max_depth = (data[0] >> 1) & 7;
	if (data[0] & 1) {
		rc = moat__conv_serve(&s.conv);
		CHECK(rc == 0 || rc == MOAT_ETRANSPORT || rc == MOAT_EPROTO || rc == MOAT_ENOMEM);
	} else {
		rc = moat__conv_call(&s.conv, 1024, NULL, 0, &ret);
		CHECK((rc == 0) == (ret != NULL));
		if (rc == 0) {
			CHECK(ret->kind == MOAT_FRAME_RETURN && ret->seq == 1);
			moat__frame_in_free(ret);
		}
	}
	/* Every Call the engine began to serve was answered, unless the stream broke. */
	CHECK(s.nserved == 0 || s.conv.broken);
	CHECK(s.conv.depth == 0);
	return 0;
}

#ifndef MOAT_LIBFUZZER
/* Append one frame of the script. */
static size_t put_frame(uint8_t *buf, size_t at, const moat_frame *f)
{
	uint8_t *enc = NULL;
	size_t len = 0;

	CHECK(moat__frame_encode(f, 0, &enc, &len) == 0);
	buf[at] = (uint8_t)len;
	buf[at + 1] = (uint8_t)(len >> 8);
	memcpy(buf + at + 2, enc, len);
	free(enc);
	return at + 2 + len;
}

static void write_seed(const char *dir, const char *name, const uint8_t *buf, size_t len)
{
	char path[4096];
	FILE *out;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	out = fopen(path, "wb");
	CHECK(out != NULL);
	CHECK(fwrite(buf, 1, len, out) == len);
	CHECK(fclose(out) == 0);
}

static moat_frame frame(moat_frame_kind kind, uint64_t seq)
{
	moat_frame f;

	memset(&f, 0, sizeof(f));
	f.kind = kind;
	f.seq = seq;
	f.selector = 1024;
	return f;
}

/* fuzz_conv --make-seeds DIR: write the seed corpus (kept in fuzz/corpus/conv). */
static int make_seeds(const char *dir)
{
	uint8_t buf[1024];
	moat_frame f;
	size_t n;

	/* Caller: the Return comes at once. */
	buf[0] = 0;
	f = frame(MOAT_FRAME_RETURN, 1);
	n = put_frame(buf, 1, &f);
	write_seed(dir, "call-return", buf, n);
	/* Caller: the peer makes a nested call (served with a nested call of ours), then returns. */
	buf[0] = 2 << 1;
	f = frame(MOAT_FRAME_CALL, 1);
	n = put_frame(buf, 1, &f);
	buf[n++] = 1; /* serve: call back */
	f = frame(MOAT_FRAME_RETURN, 2);
	n = put_frame(buf, n, &f);
	f = frame(MOAT_FRAME_RETURN, 1);
	n = put_frame(buf, n, &f);
	write_seed(dir, "call-nested", buf, n);
	/* Caller: a Return with the wrong seq. */
	buf[0] = 0;
	f = frame(MOAT_FRAME_RETURN, 9);
	n = put_frame(buf, 1, &f);
	write_seed(dir, "call-stray-return", buf, n);
	/* Server: two Calls, the second failing, then the end of the stream. */
	buf[0] = 1 | 3 << 1;
	f = frame(MOAT_FRAME_CALL, 1);
	n = put_frame(buf, 1, &f);
	buf[n++] = 0;
	f = frame(MOAT_FRAME_CALL, 2);
	n = put_frame(buf, n, &f);
	buf[n++] = 2;
	write_seed(dir, "serve-two", buf, n);
	/* Server with a nesting limit of 1: a nested Call past it is refused. */
	buf[0] = 1 | 1 << 1;
	f = frame(MOAT_FRAME_CALL, 1);
	n = put_frame(buf, 1, &f);
	buf[n++] = 1;
	f = frame(MOAT_FRAME_CALL, 5);
	n = put_frame(buf, n, &f);
	f = frame(MOAT_FRAME_RETURN, 1);
	n = put_frame(buf, n, &f);
	write_seed(dir, "serve-too-deep", buf, n);
	/* Server: a Return at top level, and bytes that do not decode. */
	buf[0] = 1;
	f = frame(MOAT_FRAME_RETURN, 1);
	n = put_frame(buf, 1, &f);
	write_seed(dir, "serve-stray-return", buf, n);
	memcpy(buf, "\x01\x04\x00\xff\xff\xff\xff", 7);
	write_seed(dir, "serve-garbage", buf, 7);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "--make-seeds") == 0)
		return make_seeds(argv[2]);
	return moat_fuzz_replay("fuzz_conv", argc, argv);
}
#endif
