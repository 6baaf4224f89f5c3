/*
 * Frame codec: Call and Return frames to and from bytes. No I/O happens
 * here, so the same code serves the proc and remote backends and can be fed
 * straight from a fuzzer.
 */
#ifndef MOAT_CODEC_FRAME_H
#define MOAT_CODEC_FRAME_H

#include <moat/moat.h>

typedef enum moat_frame_kind { MOAT_FRAME_CALL = 1, MOAT_FRAME_RETURN = 2 } moat_frame_kind;

/** A frame to encode; items are read in place (no copy until packing). */
typedef struct moat_frame {
	moat_frame_kind kind;
	uint64_t seq;
	uint64_t selector;     /* Call */
	int32_t code;          /* Return */
	uint32_t origin;       /* Return */
	int64_t enclave_code;  /* Return */
	const char *message;   /* Return, may be NULL */
	const moat_msg *items; /* may be NULL */
} moat_frame;

/**
 * A decoded frame. items borrows from the decoded buffers and lives until
 * moat__frame_in_free(). message is never NULL.
 */
typedef struct moat_frame_in {
	moat_frame_kind kind;
	uint64_t seq;
	uint64_t selector;
	int32_t code;
	uint32_t origin;
	int64_t enclave_code;
	const char *message;
	moat_msg *items;
	void *pb; /* the unpacked protobuf message */
} moat_frame_in;

/** Bytes moat__frame_pack() will write for f. */
size_t moat__frame_size(const moat_frame *f);

/** Pack f into buf, which has moat__frame_size(f) bytes; returns bytes written. */
size_t moat__frame_pack(const moat_frame *f, uint8_t *buf);

/**
 * Encode f into a new malloc'd buffer (*buf, *len) with room for prefix
 * bytes before the frame (e.g. a length header). Returns 0 or MOAT_ENOMEM.
 */
int moat__frame_encode(const moat_frame *f, size_t prefix, uint8_t **buf, size_t *len);

/**
 * Decode len bytes at buf into *out (caller frees with moat__frame_in_free).
 * Returns 0, MOAT_EPROTO for malformed input, or MOAT_ENOMEM.
 */
int moat__frame_decode(moat_frame_in **out, const uint8_t *buf, size_t len);

void moat__frame_in_free(moat_frame_in *f);

#endif
