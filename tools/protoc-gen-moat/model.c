/*
 * protoc-gen-moat: from a FileDescriptorProto to the services, methods,
 * C names and selectors the emitters write out; the checks that refuse what
 * typed Moat calls cannot carry (streaming, selectors out of range or shared).
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"
#include "names.h"

typedef Google__Protobuf__FileDescriptorProto file_proto;
typedef Google__Protobuf__DescriptorProto msg_proto;

/* Read a varint at p (n bytes); returns the bytes used, 0 when malformed. */
static size_t varint(const uint8_t *p, size_t n, uint64_t *v)
{
	size_t i;

	*v = 0;
	for (i = 0; i < n && i < 10; i++) {
		*v |= (uint64_t)(p[i] & 0x7f) << (7 * i);
		if (!(p[i] & 0x80))
			return i + 1;
	}
	return 0;
}

/*
 * Find a varint option among a message's unknown fields (custom options are
 * extensions, which protobuf-c keeps there). Returns 1 and the last value
 * (protobuf's rule for repeated scalars), 0 when absent.
 */
static int option_varint(const ProtobufCMessage *opts, uint32_t tag, uint64_t *v)
{
	unsigned i;
	int found = 0;

	for (i = 0; opts && i < opts->n_unknown_fields; i++) {
		const ProtobufCMessageUnknownField *u = &opts->unknown_fields[i];

		if (u->tag == tag && u->wire_type == PROTOBUF_C_WIRE_TYPE_VARINT &&
		    varint(u->data, u->len, v))
			found = 1;
	}
	return found;
}

/* protobuf-c's (pb_c_file).c_package of a file, or NULL. The result points into the options. */
static const char *c_package(const file_proto *f, size_t *len)
{
	const ProtobufCMessage *opts = f->options ? &f->options->base : NULL;
	const char *found = NULL;
	unsigned i;

	for (i = 0; opts && i < opts->n_unknown_fields; i++) {
		const ProtobufCMessageUnknownField *u = &opts->unknown_fields[i];
		uint64_t n, key;
		size_t at, used;

		if (u->tag != GEN_PBC_FILE_OPTION || u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
			continue;
		at = varint(u->data, u->len, &n); /* the length prefix */
		while (at && at < u->len && (used = varint(u->data + at, u->len - at, &key)) != 0) {
			at += used;
			if ((key & 7) == 0) { /* a varint field: skip it */
				used = varint(u->data + at, u->len - at, &n);
			} else if ((key & 7) == 2 && (used = varint(u->data + at, u->len - at, &n)) != 0 &&
			           n <= u->len - at - used) {
				if (key >> 3 == 6) {
					found = (const char *)u->data + at + used;
					*len = (size_t)n;
				}
				used += (size_t)n;
			} else {
				break;
			}
			at = used ? at + used : 0;
		}
	}
	return found;
}

/* full ("pkg.Name") as protoc-gen-c names it in C: with f's c_package in place of its package. */
static void c_full_name(gen_buf *out, const file_proto *f, const char *full)
{
	size_t plen = f->package ? strlen(f->package) : 0, cplen = 0;
	const char *cp = c_package(f, &cplen);

	if (cp)
		gen_buf_printf(out, "%.*s%s%s", (int)cplen, cp, plen ? "" : ".", full + plen);
	else
		gen_buf_printf(out, "%s", full);
}

/* Is ".pkg.Outer.Inner" (full) the message m, whose enclosing scope is scope ("pkg.Outer")? */
static int find_in(const msg_proto *m, const char *scope, const char *full, gen_buf *path)
{
	size_t i, mark = path->len;

	gen_buf_printf(path, "%s%s", scope[0] || path->len ? "." : "", m->name);
	if (!path->failed && strcmp(path->data, full) == 0)
		return 1;
	for (i = 0; i < m->n_nested_type; i++)
		if (find_in(m->nested_type[i], scope, full, path))
			return 1;
	path->len = mark;
	if (path->data)
		path->data[mark] = '\0';
	return 0;
}

/*
 * The C type and descriptor of the message named type (".pkg.Msg"), spelled
 * as protoc-gen-c does, with its file's c_package applied.
 */
static int type_names(const Google__Protobuf__Compiler__CodeGeneratorRequest *req, const char *type,
                      char **ctype, char **desc, gen_buf *err)
{
	const char *full = type[0] == '.' ? type + 1 : type;
	gen_buf path = {0}, renamed = {0};
	size_t i, j;
	char *lower = NULL;
	int rc = -1;

	for (i = 0; i < req->n_proto_file; i++) {
		const file_proto *f = req->proto_file[i];
		const char *pkg = f->package ? f->package : "";

		for (j = 0; j < f->n_message_type; j++) {
			gen_buf_free(&path);
			gen_buf_printf(&path, "%s", pkg);
			if (!find_in(f->message_type[j], pkg, full, &path))
				continue;
			c_full_name(&renamed, f, full);
			goto found;
		}
	}
	gen_buf_printf(err, "message %s: not found in the request", type);
	goto out;
found:
	if (renamed.failed || !(*ctype = gen_name(renamed.data, GEN_CAMEL)) ||
	    !(lower = gen_name(renamed.data, GEN_LOWER)))
		goto out;
	gen_buf_free(&path);
	gen_buf_printf(&path, "%s__descriptor", lower);
	if (path.failed)
		goto out;
	*desc = path.data;
	path.data = NULL;
	rc = 0;
out:
	gen_buf_free(&path);
	gen_buf_free(&renamed);
	free(lower);
	return rc;
}

/* FNV-1a, 64 bits, of s: the documented derivation of selectors (docs/TYPED-CALLS.md). */
static uint64_t fnv1a64(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

static int build_method(gen_method *m, const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                        const gen_service *s, const Google__Protobuf__MethodDescriptorProto *md, gen_buf *err)
{
	gen_buf full = {0};
	uint64_t sel;

	if (md->client_streaming || md->server_streaming) {
		gen_buf_printf(err, "%s/%s: streaming methods are not supported (a Moat call is unary)",
		               s->full, md->name);
		return -1;
	}
	gen_buf_printf(&full, "%s/%s", s->full, md->name);
	m->full = full.data;
	if (full.failed || !(m->lower = gen_name(md->name, GEN_LOWER)) ||
	    !(m->upper = gen_name(md->name, GEN_UPPER)))
		return -1;
	if (type_names(req, md->input_type, &m->in_type, &m->in_desc, err) < 0 ||
	    type_names(req, md->output_type, &m->out_type, &m->out_desc, err) < 0)
		return -1;
	if (option_varint(md->options ? &md->options->base : NULL, GEN_OPTION_FIELD, &sel)) {
		if (sel < GEN_SELECTOR_USER) {
			gen_buf_printf(err, "%s: selector %llu is reserved (below MOAT_SELECTOR_USER, 1024)",
			               m->full, (unsigned long long)sel);
			return -1;
		}
		m->explicit_sel = 1;
	} else {
		sel = GEN_DERIVED_BASE | (fnv1a64(m->full) & (GEN_DERIVED_BASE - 1));
	}
	m->selector = sel;
	return 0;
}

static int build_service(gen_service *s, const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                         const file_proto *fd, const Google__Protobuf__ServiceDescriptorProto *sd,
                         gen_buf *err)
{
	gen_buf full = {0}, c = {0};
	uint64_t host = 0;
	size_t i;

	gen_buf_printf(&full, "%s%s%s", fd->package ? fd->package : "", fd->package ? "." : "", sd->name);
	s->full = full.data;
	if (full.failed)
		return -1;
	c_full_name(&c, fd, s->full);
	if (c.failed || !(s->lower = gen_name(c.data, GEN_LOWER)) ||
	    !(s->upper = gen_name(c.data, GEN_UPPER)) || !(s->ctype = gen_name(c.data, GEN_CAMEL))) {
		gen_buf_free(&c);
		return -1;
	}
	gen_buf_free(&c);
	s->host = option_varint(sd->options ? &sd->options->base : NULL, GEN_OPTION_FIELD, &host) && host;
	if (!(s->method = calloc(sd->n_method + 1, sizeof(*s->method))))
		return -1;
	for (i = 0; i < sd->n_method; i++) {
		if (build_method(&s->method[i], req, s, sd->method[i], err) < 0)
			return -1;
		s->n_method++;
		if (strcmp(s->method[i].lower, "moat_register") == 0) {
			gen_buf_printf(
			    err, "%s: the name MoatRegister is taken by the generated register function",
			    s->method[i].full);
			return -1;
		}
	}
	return 0;
}

/* "dir/iface.proto" -> stem "dir/iface", base "iface", guard "MOAT_GEN_DIR_IFACE_PROTO". */
static int file_names(gen_file *out, const char *name)
{
	size_t n = strlen(name), i;
	const char *slash = strrchr(name, '/');
	gen_buf g = {0};

	if (n > 6 && strcmp(name + n - 6, ".proto") == 0)
		n -= 6;
	if (!(out->name = gen_strdup(name)) || !(out->stem = gen_strdup(name)))
		return -1;
	out->stem[n] = '\0';
	if (!(out->base = gen_strdup(out->stem + (slash ? (size_t)(slash - name) + 1 : 0))))
		return -1;
	gen_buf_printf(&g, "MOAT_GEN_");
	for (i = 0; name[i]; i++)
		gen_buf_printf(&g, "%c",
		               isalnum((unsigned char)name[i]) ? toupper((unsigned char)name[i]) : '_');
	out->guard = g.data;
	return g.failed ? -1 : 0;
}

int gen_model_build(gen_file *out, const Google__Protobuf__Compiler__CodeGeneratorRequest *req,
                    const file_proto *file, gen_buf *err)
{
	size_t i;

	memset(out, 0, sizeof(*out));
	if (file_names(out, file->name) < 0 ||
	    !(out->service = calloc(file->n_service + 1, sizeof(*out->service))))
		goto fail;
	for (i = 0; i < file->n_service; i++) {
		int rc = build_service(&out->service[i], req, file, file->service[i], err);

		out->n_service++;
		if (rc < 0)
			goto fail;
	}
	return 0;
fail:
	if (!err->len)
		gen_buf_printf(err, "%s: out of memory", file->name);
	gen_model_free(out);
	return -1;
}

void gen_model_free(gen_file *f)
{
	size_t i, j;

	for (i = 0; i < f->n_service; i++) {
		gen_service *s = &f->service[i];

		for (j = 0; j < s->n_method + 1 && s->method; j++) {
			gen_method *m = &s->method[j];

			free(m->full);
			free(m->lower);
			free(m->upper);
			free(m->in_type);
			free(m->in_desc);
			free(m->out_type);
			free(m->out_desc);
		}
		free(s->method);
		free(s->full);
		free(s->lower);
		free(s->upper);
		free(s->ctype);
	}
	free(f->service);
	free(f->name);
	free(f->stem);
	free(f->base);
	free(f->guard);
	memset(f, 0, sizeof(*f));
}

typedef struct gen_ref {
	const gen_service *s;
	const gen_method *m;
} gen_ref;

int gen_model_check(const gen_file *files, size_t n, gen_buf *err)
{
	size_t f, i, j, count = 0;
	gen_ref *all;
	int rc = 0;

	for (f = 0; f < n; f++)
		for (i = 0; i < files[f].n_service; i++)
			count += files[f].service[i].n_method;
	if (!(all = calloc(count + 1, sizeof(*all)))) {
		gen_buf_printf(err, "out of memory");
		return -1;
	}
	count = 0;
	for (f = 0; f < n; f++)
		for (i = 0; i < files[f].n_service; i++)
			for (j = 0; j < files[f].service[i].n_method; j++) {
				all[count].s = &files[f].service[i];
				all[count++].m = &files[f].service[i].method[j];
			}
	/* Entry selectors and exit selectors are separate spaces: only the same direction collides. */
	for (i = 0; i < count && rc == 0; i++)
		for (j = i + 1; j < count && rc == 0; j++)
			if (all[i].s->host == all[j].s->host && all[i].m->selector == all[j].m->selector) {
				gen_buf_printf(
				    err,
				    "%s and %s: both have selector %llu; give one another with option "
				    "(moat.v1.selector)",
				    all[i].m->full, all[j].m->full, (unsigned long long)all[i].m->selector);
				rc = -1;
			}
	free(all);
	return rc;
}
