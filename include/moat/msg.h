/*
 * Moat: messages, the ordered lists of byte items that entry and exit calls
 * carry. The same type is used by hosts and enclaves.
 */
#ifndef MOAT_MSG_H
#define MOAT_MSG_H

#include "common.h"
#include "errors.h"

MOAT_BEGIN_DECL

/** An ordered list of byte items. Opaque. */
typedef struct moat_msg moat_msg;

/**
 * Create an empty message in *out. Returns 0 or MOAT_ENOMEM/MOAT_EINVAL.
 * The caller owns the message and frees it with moat_msg_free().
 */
MOAT_EXTERN(int) moat_msg_new(moat_msg **out);

/** Free a message and every item it copied. NULL is accepted. */
MOAT_EXTERN(void) moat_msg_free(moat_msg *msg);

/** Remove all items, keeping the message for reuse. */
MOAT_EXTERN(void) moat_msg_reset(moat_msg *msg);

/**
 * Append a copy of len bytes at data (data may be NULL when len is 0).
 * Returns 0, MOAT_EINVAL or MOAT_ENOMEM.
 */
MOAT_EXTERN(int) moat_msg_push(moat_msg *msg, const void *data, size_t len);

/**
 * Append an item that refers to the caller's bytes without copying them.
 * The bytes must stay valid and unchanged until the message is reset or
 * freed. Returns 0, MOAT_EINVAL or MOAT_ENOMEM.
 */
MOAT_EXTERN(int) moat_msg_push_borrowed(moat_msg *msg, const void *data, size_t len);

/** Append a copy of a NUL-terminated string, without the NUL. */
MOAT_EXTERN(int) moat_msg_push_str(moat_msg *msg, const char *str);

/** Append a 64-bit unsigned integer as 8 little-endian bytes. */
MOAT_EXTERN(int) moat_msg_push_u64(moat_msg *msg, uint64_t value);

/** Return the number of items. */
MOAT_EXTERN(size_t) moat_msg_count(const moat_msg *msg);

/**
 * Borrow item i: *data and *len describe it until the message is changed.
 * Returns 0 or MOAT_EINVAL when i is out of range.
 */
MOAT_EXTERN(int) moat_msg_item(const moat_msg *msg, size_t i, const void **data, size_t *len);

/**
 * Read item i as an 8-byte little-endian integer. Returns 0 or MOAT_EINVAL
 * when i is out of range or the item is not 8 bytes long.
 */
MOAT_EXTERN(int) moat_msg_item_u64(const moat_msg *msg, size_t i, uint64_t *value);

/**
 * Copy item i into a newly allocated NUL-terminated string in *out, which
 * the caller frees with free(). Returns 0, MOAT_EINVAL or MOAT_ENOMEM.
 */
MOAT_EXTERN(int) moat_msg_item_strdup(const moat_msg *msg, size_t i, char **out);

MOAT_END_DECL

#endif
