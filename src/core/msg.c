/*
 * Messages. Compiled into libmoat and, separately, into libmoat_enclave, so
 * that hosts and enclaves share the type without an enclave linking libmoat.
 */
#include <moat/msg.h>

#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

typedef moat__msg_item msg_item;

int moat_msg_new(moat_msg **out)
{
	moat_msg *m;

	if (!out)
		return MOAT_EINVAL;
	*out = NULL;
	m = calloc(1, sizeof(*m));
	if (!m)
		return MOAT_ENOMEM;
	*out = m;
	return 0;
}

void moat_msg_reset(moat_msg *msg)
{
	size_t i;

	if (!msg)
		return;
	for (i = 0; i < msg->count; i++)
		if (msg->items[i].owned)
			free((void *)msg->items[i].data);
	msg->count = 0;
}

void moat__msg_truncate(moat_msg *msg, size_t count)
{
	size_t i;

	if (!msg || count >= msg->count)
		return;
	for (i = count; i < msg->count; i++)
		if (msg->items[i].owned)
			free((void *)msg->items[i].data);
	msg->count = count;
}

void moat__msg_release(moat_msg *msg)
{
	moat_msg_reset(msg);
	free(msg->items);
	msg->items = NULL;
	msg->cap = 0;
}

void moat_msg_free(moat_msg *msg)
{
	if (!msg)
		return;
	moat__msg_release(msg);
	free(msg);
}

static int msg_append(moat_msg *msg, const void *data, size_t len, int owned)
{
	if (msg->count == msg->cap) {
		size_t cap = msg->cap ? msg->cap * 2 : 4;
		msg_item *items;

		if (cap > SIZE_MAX / sizeof(*items))
			return MOAT_ENOMEM;
		items = realloc(msg->items, cap * sizeof(*items));
		if (!items)
			return MOAT_ENOMEM;
		msg->items = items;
		msg->cap = cap;
	}
	msg->items[msg->count].data = data;
	msg->items[msg->count].len = len;
	msg->items[msg->count].owned = owned;
	msg->count++;
	return 0;
}

int moat_msg_push(moat_msg *msg, const void *data, size_t len)
{
	uint8_t *copy = NULL;
	int rc;

	if (!msg || (!data && len))
		return MOAT_EINVAL;
	if (len) {
		copy = malloc(len);
		if (!copy)
			return MOAT_ENOMEM;
		memcpy(copy, data, len);
	}
	rc = msg_append(msg, copy, len, copy != NULL);
	if (rc < 0)
		free(copy);
	return rc;
}

int moat_msg_push_borrowed(moat_msg *msg, const void *data, size_t len)
{
	if (!msg || (!data && len))
		return MOAT_EINVAL;
	return msg_append(msg, data, len, 0);
}

int moat_msg_push_str(moat_msg *msg, const char *str)
{
	if (!str)
		return MOAT_EINVAL;
	return moat_msg_push(msg, str, strlen(str));
}

int moat_msg_push_u64(moat_msg *msg, uint64_t value)
{
	uint8_t b[8];
	int i;

	for (i = 0; i < 8; i++)
		b[i] = (uint8_t)(value >> (8 * i));
	return moat_msg_push(msg, b, sizeof(b));
}

size_t moat_msg_count(const moat_msg *msg)
{
	return msg ? msg->count : 0;
}

int moat_msg_item(const moat_msg *msg, size_t i, const void **data, size_t *len)
{
	if (!msg || i >= msg->count)
		return MOAT_EINVAL;
	if (data)
		*data = msg->items[i].data ? msg->items[i].data : (const void *)"";
	if (len)
		*len = msg->items[i].len;
	return 0;
}

int moat_msg_item_u64(const moat_msg *msg, size_t i, uint64_t *value)
{
	const uint8_t *b;
	uint64_t v = 0;
	int k;

	if (!msg || i >= msg->count || msg->items[i].len != 8 || !value)
		return MOAT_EINVAL;
	b = msg->items[i].data;
	for (k = 7; k >= 0; k--)
		v = (v << 8) | b[k];
	*value = v;
	return 0;
}

int moat_msg_item_strdup(const moat_msg *msg, size_t i, char **out)
{
	char *s;

	if (!out)
		return MOAT_EINVAL;
	*out = NULL;
	if (!msg || i >= msg->count)
		return MOAT_EINVAL;
	s = malloc(msg->items[i].len + 1);
	if (!s)
		return MOAT_ENOMEM;
	if (msg->items[i].len)
		memcpy(s, msg->items[i].data, msg->items[i].len);
	s[msg->items[i].len] = '\0';
	*out = s;
	return 0;
}

int moat__msg_append(moat_msg *out, const moat_msg *in)
{
	size_t i, had = out->count;
	int rc = 0;

	for (i = 0; in && i < in->count && rc == 0; i++)
		rc = moat_msg_push(out, in->items[i].data, in->items[i].len);
	/* All or nothing: a failed call leaves out as it was, on every backend. */
	if (rc < 0)
		moat__msg_truncate(out, had);
	return rc;
}
