/* protoc-gen-moat: a growable string for the generated text and error messages. */
#include <stdio.h>
#include <stdlib.h>

#include "gen.h"

void gen_buf_printf(gen_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->failed)
		return;
	for (;;) {
		size_t room = b->cap - b->len;
		char *grown;

		va_start(ap, fmt);
		n = vsnprintf(b->data ? b->data + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->failed = 1;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		grown = realloc(b->data, b->cap * 2 + (size_t)n + 256);
		if (!grown) {
			b->failed = 1;
			return;
		}
		b->data = grown;
		b->cap = b->cap * 2 + (size_t)n + 256;
	}
}

void gen_buf_free(gen_buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}
