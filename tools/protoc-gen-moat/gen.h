/*
 * protoc-gen-moat: the protoc plugin that turns the services of a .proto into
 * typed Moat entry and exit calls (docs/TYPED-CALLS.md). Internal header.
 */
#ifndef MOAT_GEN_H
#define MOAT_GEN_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "google/protobuf/compiler/plugin.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"

/** Field number of the (moat.v1.host) and (moat.v1.selector) options (proto/moat/v1/options.proto). */
#define GEN_OPTION_FIELD 51870u
/** Field number of protobuf-c's own file options (pb_c_file), whose c_package renames C types. */
#define GEN_PBC_FILE_OPTION 1019u
/** Derived selectors are 2^52 + the low 52 bits of the FNV-1a hash of the method's full name. */
#define GEN_DERIVED_BASE ((uint64_t)1 << 52)
/** The lowest user selector (MOAT_SELECTOR_USER). */
#define GEN_SELECTOR_USER ((uint64_t)1024)

/** A growable NUL-terminated string. */
typedef struct gen_buf {
	char *data;
	size_t len, cap;
	int failed; /* an allocation failed: the text is incomplete */
} gen_buf;

void gen_buf_printf(gen_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void gen_buf_free(gen_buf *b);

/** One method of a service, with the C names of everything generated for it. */
typedef struct gen_method {
	char *full;        /* "pkg.Service/Method" */
	char *lower;       /* "method_name" */
	char *upper;       /* "METHOD_NAME" */
	char *in_type;     /* C type of the request, e.g. "Pkg__Req" */
	char *in_desc;     /* its descriptor, e.g. "pkg__req__descriptor" */
	char *out_type;    /* C type of the reply */
	char *out_desc;    /* its descriptor */
	uint64_t selector; /* the selector */
	int explicit_sel;  /* 1 when set with (moat.v1.selector) */
} gen_method;

/** One service: host = 1 for a service the host implements (exit calls). */
typedef struct gen_service {
	char *full;  /* "pkg.Service" */
	char *lower; /* "pkg__service" */
	char *upper; /* "PKG__SERVICE" */
	char *ctype; /* "Pkg__Service" */
	int host;
	size_t n_method;
	gen_method *method;
} gen_service;

/** What protoc-gen-moat generates for one .proto file. */
typedef struct gen_file {
	char *name;  /* "dir/iface.proto" */
	char *stem;  /* "dir/iface" */
	char *base;  /* "iface" */
	char *guard; /* include guard */
	size_t n_service;
	gen_service *service;
} gen_file;

/**
 * Build the model of file (one of req->proto_file) into *out. Returns 0, or
 * -1 with a message for the user in err.
 */
int gen_model_build(gen_file *out, const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                    const Google__Protobuf__FileDescriptorProto *file, gen_buf *err);
void gen_model_free(gen_file *f);

/**
 * Check that no two methods of the same direction share a selector across
 * every file of the request. Returns 0 or -1 with a message in err.
 */
int gen_model_check(const gen_file *files, size_t n, gen_buf *err);

/** Write iface.moat.h, iface.moat.c (host side) and iface.moat-enclave.c. */
void gen_emit_header(gen_buf *b, const gen_file *f);
void gen_emit_host(gen_buf *b, const gen_file *f);
void gen_emit_enclave(gen_buf *b, const gen_file *f);

/** The C++ part of iface.moat.h: a type per method for <moat/moat.hpp> (emit_cxx.c). */
void gen_emit_cxx(gen_buf *b, const gen_file *f);

/** The comment at the top of each generated file (emit_header.c). */
void gen_emit_prologue(gen_buf *b, const gen_file *f, const char *side);

#endif
