/*
 * protoc-gen-moat: C names as protoc-gen-c spells them (its c_helpers.cc:
 * FullNameToC, FullNameToLower, FullNameToUpper), so the generated calls
 * name the same types and descriptors as the message code beside them.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "names.h"

/* "GetValue" -> "get_value" (lower) or "GET_VALUE" (upper), as CamelToLower/CamelToUpper. */
static void camel_to(gen_buf *b, const char *s, size_t n, int upper)
{
	int was_upper = 1;
	size_t i;

	for (i = 0; i < n; i++) {
		int is_upper = isupper((unsigned char)s[i]) != 0;

		if (is_upper && !was_upper)
			gen_buf_printf(b, "_");
		gen_buf_printf(b, "%c", upper ? toupper((unsigned char)s[i]) : tolower((unsigned char)s[i]));
		was_upper = is_upper;
	}
}

/* "get_value" -> "GetValue", as ToCamel. */
static void to_camel(gen_buf *b, const char *s, size_t n)
{
	int next_upper = 1;
	size_t i;

	for (i = 0; i < n; i++) {
		if (s[i] == '_') {
			next_upper = 1;
		} else {
			gen_buf_printf(b, "%c", next_upper ? toupper((unsigned char)s[i]) : s[i]);
			next_upper = 0;
		}
	}
}

char *gen_name(const char *full, gen_case c)
{
	gen_buf b = {0};
	const char *p = full, *dot;

	gen_buf_printf(&b, "%s", "");
	while (*p) {
		size_t n;

		dot = strchr(p, '.');
		n = dot ? (size_t)(dot - p) : strlen(p);
		if (n > 0) {
			if (b.len)
				gen_buf_printf(&b, "__");
			if (c == GEN_CAMEL)
				to_camel(&b, p, n);
			else
				camel_to(&b, p, n, c == GEN_UPPER);
		}
		p += n + (dot ? 1 : 0);
	}
	if (b.failed) {
		gen_buf_free(&b);
		return NULL;
	}
	return b.data;
}

char *gen_strdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = malloc(n);

	if (d)
		memcpy(d, s, n);
	return d;
}
