#include "frame.h"

#include <stdlib.h>
#include <string.h>

#include "moat/v1/frame.pb-c.h"

/* Items of a frame being packed point into the caller's message: no copy. */
typedef struct pack_state {
	Moat__V1__Frame frame;
	Moat__V1__Call call;
	Moat__V1__Return ret;
	ProtobufCBinaryData inline_items[8];
	ProtobufCBinaryData *items;
	size_t n_items;
} pack_state;

static int pack_state_init(pack_state *s, const moat_frame *f)
{
	size_t i, n = f->items ? moat_msg_count(f->items) : 0;

	moat__v1__frame__init(&s->frame);
	s->items = n <= 8 ? s->inline_items : malloc(n * sizeof(*s->items));
	if (!s->items)
		return MOAT_ENOMEM;
	s->n_items = n;
	for (i = 0; i < n; i++) {
		const void *data;
		size_t len;

		moat_msg_item(f->items, i, &data, &len);
		s->items[i].data = (uint8_t *)data;
		s->items[i].len = len;
	}
	if (f->kind == MOAT_FRAME_CALL) {
		moat__v1__call__init(&s->call);
		s->call.seq = f->seq;
		s->call.selector = f->selector;
		s->call.n_items = n;
		s->call.items = s->items;
		s->frame.kind_case = MOAT__V1__FRAME__KIND_CALL;
		s->frame.call = &s->call;
	} else {
		moat__v1__return__init(&s->ret);
		s->ret.seq = f->seq;
		s->ret.code = f->code;
		s->ret.origin = f->origin;
		s->ret.enclave_code = f->enclave_code;
		/* protobuf-c packs a proto3 string only when it differs from "". */
		s->ret.message = (char *)(f->message ? f->message : "");
		s->ret.n_items = n;
		s->ret.items = s->items;
		s->frame.kind_case = MOAT__V1__FRAME__KIND_RET;
		s->frame.ret = &s->ret;
	}
	return 0;
}

static void pack_state_release(pack_state *s)
{
	if (s->items != s->inline_items)
		free(s->items);
}

size_t moat__frame_size(const moat_frame *f)
{
	pack_state s;
	size_t n;

	if (pack_state_init(&s, f) < 0)
		return 0;
	n = moat__v1__frame__get_packed_size(&s.frame);
	pack_state_release(&s);
	return n;
}

size_t moat__frame_pack(const moat_frame *f, uint8_t *buf)
{
	pack_state s;
	size_t n;

	if (pack_state_init(&s, f) < 0)
		return 0;
	n = moat__v1__frame__pack(&s.frame, buf);
	pack_state_release(&s);
	return n;
}

int moat__frame_encode(const moat_frame *f, size_t prefix, uint8_t **buf, size_t *len)
{
	pack_state s;
	size_t n;
	uint8_t *b;
	int rc;

	if ((rc = pack_state_init(&s, f)) < 0)
		return rc;
	n = moat__v1__frame__get_packed_size(&s.frame);
	b = malloc(prefix + n + 1);
	if (!b) {
		pack_state_release(&s);
		return MOAT_ENOMEM;
	}
	moat__v1__frame__pack(&s.frame, b + prefix);
	pack_state_release(&s);
	*buf = b;
	*len = prefix + n;
	return 0;
}

int moat__frame_decode(moat_frame_in **out, const uint8_t *buf, size_t len)
{
	Moat__V1__Frame *pb;
	moat_frame_in *f;
	ProtobufCBinaryData *items;
	size_t i, n;
	int rc = MOAT_ENOMEM;

	*out = NULL;
	pb = moat__v1__frame__unpack(NULL, len, buf);
	if (!pb)
		return MOAT_EPROTO;
	if (pb->kind_case != MOAT__V1__FRAME__KIND_CALL && pb->kind_case != MOAT__V1__FRAME__KIND_RET) {
		moat__v1__frame__free_unpacked(pb, NULL);
		return MOAT_EPROTO;
	}
	f = calloc(1, sizeof(*f));
	if (!f || moat_msg_new(&f->items) < 0)
		goto fail;
	f->pb = pb;
	if (pb->kind_case == MOAT__V1__FRAME__KIND_CALL) {
		f->kind = MOAT_FRAME_CALL;
		f->seq = pb->call->seq;
		f->selector = pb->call->selector;
		f->message = "";
		items = pb->call->items;
		n = pb->call->n_items;
	} else {
		f->kind = MOAT_FRAME_RETURN;
		f->seq = pb->ret->seq;
		f->code = pb->ret->code;
		f->origin = pb->ret->origin;
		f->enclave_code = pb->ret->enclave_code;
		f->message = pb->ret->message ? pb->ret->message : "";
		items = pb->ret->items;
		n = pb->ret->n_items;
	}
	for (i = 0; i < n; i++)
		if ((rc = moat_msg_push_borrowed(f->items, items[i].data, items[i].len)) < 0)
			goto fail;
	*out = f;
	return 0;

fail:
	if (f) {
		moat_msg_free(f->items);
		free(f);
	}
	moat__v1__frame__free_unpacked(pb, NULL);
	return rc;
}

void moat__frame_in_free(moat_frame_in *f)
{
	if (!f)
		return;
	moat_msg_free(f->items);
	if (f->pb)
		moat__v1__frame__free_unpacked(f->pb, NULL);
	free(f);
}
