/* protoc-gen-moat: C names of protobuf things (names.c). */
#ifndef MOAT_GEN_NAMES_H
#define MOAT_GEN_NAMES_H

#include "gen.h"

typedef enum gen_case {
	GEN_CAMEL, /* "pkg.v1.get_value" -> "Pkg__V1__GetValue" (types) */
	GEN_LOWER, /* "pkg.v1.GetValue" -> "pkg__v1__get_value" (functions) */
	GEN_UPPER  /* "pkg.v1.GetValue" -> "PKG__V1__GET_VALUE" (macros) */
} gen_case;

/** The C spelling of a dotted name; the caller frees it. NULL when out of memory. */
char *gen_name(const char *full, gen_case c);

/** strdup (not in C11). */
char *gen_strdup(const char *s);

#endif
