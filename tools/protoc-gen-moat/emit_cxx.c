/*
 * protoc-gen-moat: the C++ part of NAME.moat.h (under #ifdef __cplusplus).
 * One type per method, in namespaces named after the .proto's package and
 * the service: typed.v1.Book/Find is typed::v1::Book::Find. The types only
 * name things the C part declares (the message types, the selector, the
 * stub, the server table and its register function), for the templates of
 * <moat/moat.hpp>: moat::enclave::call<M>() and on_exit<M>().
 */
#include <string.h>

#include "gen.h"

/*
 * C++ keywords (through C++20) and the names of the method types' members: a
 * name from the .proto that is one of them gets a '_' (as protobuf's C++
 * generator does with keywords), so that it stays a valid, distinct name.
 */
static const char *const taken[] = {
    "alignas", "alignof", "and", "and_eq", "asm", "auto", "bitand", "bitor", "bool", "break", "case", "catch",
    "char", "char8_t", "char16_t", "char32_t", "class", "compl", "concept", "const", "consteval", "constexpr",
    "constinit", "const_cast", "continue", "co_await", "co_return", "co_yield", "decltype", "default",
    "delete", "do", "double", "dynamic_cast", "else", "enum", "explicit", "export", "extern", "false",
    "float", "for", "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace", "new",
    "noexcept", "not", "not_eq", "nullptr", "operator", "or", "or_eq", "private", "protected", "public",
    "register", "reinterpret_cast", "requires", "return", "short", "signed", "sizeof", "static",
    "static_assert", "static_cast", "struct", "switch", "template", "this", "thread_local", "throw", "true",
    "try", "typedef", "typeid", "typename", "union", "unsigned", "using", "virtual", "void", "volatile",
    "wchar_t", "while", "xor", "xor_eq",
    /* members of the generated method types */
    "request_type", "reply_type", "server_type", "host", "name", "selector", "request", "call", "reply_free",
    "set", "serve"};

/* Write the n bytes at s as a C++ identifier. */
static void cxx_name(gen_buf *b, const char *s, size_t n)
{
	size_t i;
	int clash = 0;

	for (i = 0; i < sizeof(taken) / sizeof(taken[0]) && !clash; i++)
		clash = strlen(taken[i]) == n && memcmp(taken[i], s, n) == 0;
	gen_buf_printf(b, "%.*s%s", (int)n, s, clash ? "_" : "");
}

/* "pkg.v1.Service" -> "namespace pkg {\nnamespace v1 {\nnamespace Service {\n"; the depth into *depth. */
static void open_namespaces(gen_buf *b, const char *full, size_t *depth)
{
	const char *p = full, *dot;

	*depth = 0;
	for (;;) {
		size_t n;

		dot = strchr(p, '.');
		n = dot ? (size_t)(dot - p) : strlen(p);
		gen_buf_printf(b, "namespace ");
		cxx_name(b, p, n);
		gen_buf_printf(b, " {\n");
		(*depth)++;
		if (!dot)
			break;
		p = dot + 1;
	}
}

/* The C++ name of method name of service s, as "pkg::v1::Service::Method". */
static void cxx_full(gen_buf *b, const gen_service *s, const char *name)
{
	const char *p = s->full, *dot;

	while ((dot = strchr(p, '.')) != NULL) {
		cxx_name(b, p, (size_t)(dot - p));
		gen_buf_printf(b, "::");
		p = dot + 1;
	}
	cxx_name(b, p, strlen(p));
	gen_buf_printf(b, "::");
	cxx_name(b, name, strlen(name));
}

static void emit_method(gen_buf *b, const gen_service *s, const gen_method *m)
{
	const char *name = strchr(m->full, '/') + 1;

	gen_buf_printf(b, "/** %s, an %s call: ", m->full, s->host ? "exit" : "entry");
	if (!s->host) {
		gen_buf_printf(b, "auto reply = enclave.call<");
		cxx_full(b, s, name);
		gen_buf_printf(b, ">(request); */\n");
	} else {
		gen_buf_printf(b, "enclave.on_exit<");
		cxx_full(b, s, name);
		gen_buf_printf(b, ">(handler); */\n");
	}
	gen_buf_printf(b, "struct ");
	cxx_name(b, name, strlen(name));
	gen_buf_printf(b,
	               " {\n"
	               "\ttypedef %s request_type;\n"
	               "\ttypedef %s reply_type;\n"
	               "\t/** true: the host serves it (option moat.v1.host); false: the enclave does. */\n"
	               "\tstatic constexpr bool host = %s;\n"
	               "\tstatic const char *name()\n\t{\n\t\treturn \"%s\";\n\t}\n"
	               "\tstatic uint64_t selector()\n\t{\n\t\treturn %s__%s__SELECTOR;\n\t}\n"
	               "\t/** A request at its defaults (what the INIT macro gives, without its casts). */\n"
	               "\tstatic request_type request()\n\t{\n\t\trequest_type r;\n\n"
	               "\t\t%.*s__init(&r);\n\t\treturn r;\n\t}\n",
	               m->in_type, m->out_type, s->host ? "true" : "false", m->full, s->upper, m->upper,
	               (int)(strlen(m->in_desc) - strlen("__descriptor")), m->in_desc);
	if (!s->host)
		gen_buf_printf(
		    b,
		    "\tstatic int call(moat_enclave *enclave, const request_type *request, reply_type "
		    "**reply)\n\t{\n\t\treturn %s__%s__call(enclave, request, reply);\n\t}\n"
		    "\tstatic void reply_free(reply_type *reply)\n\t{\n\t\t%s__%s__reply_free(reply);\n\t}\n",
		    s->lower, m->lower, s->lower, m->lower);
	else
		gen_buf_printf(
		    b,
		    "\ttypedef %s_MoatServer server_type;\n"
		    "\t/** Set this method's function in a table of the service. */\n"
		    "\tstatic void set(server_type &server, int (*fn)(void *, const request_type *, "
		    "reply_type *))\n\t{\n\t\tserver.%s = fn;\n\t}\n"
		    "\t/** Answer the exit calls of the table's non-NULL functions on enclave. */\n"
		    "\tstatic int serve(moat_enclave *enclave, const server_type *server)\n\t{\n"
		    "\t\treturn %s__moat_register(enclave, server);\n\t}\n",
		    s->ctype, m->lower, s->lower);
	gen_buf_printf(b, "};\n\n");
}

void gen_emit_cxx(gen_buf *b, const gen_file *f)
{
	size_t i, j, depth;

	gen_buf_printf(b, "#ifdef __cplusplus\n"
	                  "/*\n"
	                  " * C++: a type per method, for moat::enclave's call<M>() (entry calls) and\n"
	                  " * on_exit<M>() (exit calls) in <moat/moat.hpp> (docs/TYPED-CALLS.md, C++).\n"
	                  " */\n\n");
	for (i = 0; i < f->n_service; i++) {
		const gen_service *s = &f->service[i];

		if (s->n_method == 0)
			continue;
		open_namespaces(b, s->full, &depth);
		gen_buf_printf(b, "\n");
		for (j = 0; j < s->n_method; j++)
			emit_method(b, s, &s->method[j]);
		while (depth--)
			gen_buf_printf(b, "}");
		gen_buf_printf(b, " // namespace %s\n\n", s->full);
	}
	gen_buf_printf(b, "#endif\n\n");
}
