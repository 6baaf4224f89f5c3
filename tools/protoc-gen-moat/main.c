/*
 * protoc-gen-moat: reads a CodeGeneratorRequest from protoc on stdin and
 * answers a CodeGeneratorResponse on stdout with, for every .proto named on
 * protoc's command line, NAME.moat.h, NAME.moat.c (the host's side) and
 * NAME.moat-enclave.c (the enclave's side). Errors the user can fix go back
 * in the response, and protoc prints them.
 *
 *     protoc --plugin=protoc-gen-moat=PATH --c_out=DIR --moat_out=DIR iface.proto
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen.h"

typedef Google__Protobuf__Compiler__CodeGeneratorRequest gen_request;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse gen_response;
typedef Google__Protobuf__Compiler__CodeGeneratorResponse__File gen_out_file;

static int read_all(FILE *f, uint8_t **out, size_t *len)
{
	size_t cap = 65536, n = 0, got;
	uint8_t *buf = malloc(cap), *grown;

	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap && (grown = realloc(buf, cap * 2)) == NULL) {
			free(buf);
			buf = NULL;
		} else if (n == cap) {
			buf = grown;
			cap *= 2;
		}
	}
	if (!buf || ferror(f)) {
		free(buf);
		return -1;
	}
	*out = buf;
	*len = n;
	return 0;
}

static const Google__Protobuf__FileDescriptorProto *find_file(const gen_request *req, const char *name)
{
	size_t i;

	for (i = 0; i < req->n_proto_file; i++)
		if (strcmp(req->proto_file[i]->name, name) == 0)
			return req->proto_file[i];
	return NULL;
}

/* Append one output file named stem + suffix whose content is taken from b. */
static int add_file(gen_response *resp, const char *stem, const char *suffix, gen_buf *b)
{
	gen_out_file *f = NULL, **grown;
	size_t len = strlen(stem) + strlen(suffix) + 1;

	if (b->failed || !(f = malloc(sizeof(*f))))
		goto fail;
	google__protobuf__compiler__code_generator_response__file__init(f);
	f->content = b->data;
	b->data = NULL;
	if (!(f->name = malloc(len)))
		goto fail;
	snprintf(f->name, len, "%s%s", stem, suffix);
	grown = realloc(resp->file, (resp->n_file + 1) * sizeof(*grown));
	if (!grown)
		goto fail;
	resp->file = grown;
	resp->file[resp->n_file++] = f;
	return 0;
fail:
	if (f) {
		free(f->name);
		free(f->content);
	}
	free(f);
	gen_buf_free(b);
	return -1;
}

static int emit_file(gen_response *resp, const gen_file *f)
{
	gen_buf h = {0}, c = {0}, e = {0};
	int rc = 0;

	gen_emit_header(&h, f);
	gen_emit_host(&c, f);
	gen_emit_enclave(&e, f);
	if (add_file(resp, f->stem, ".moat.h", &h) < 0 || add_file(resp, f->stem, ".moat.c", &c) < 0 ||
	    add_file(resp, f->stem, ".moat-enclave.c", &e) < 0)
		rc = -1;
	gen_buf_free(&h);
	gen_buf_free(&c);
	gen_buf_free(&e);
	return rc;
}

/* Fill resp from req; what the user must fix goes into err. Returns -1 only when out of memory. */
static int generate(gen_response *resp, const gen_request *req, gen_buf *err)
{
	gen_file *files = calloc(req->n_file_to_generate + 1, sizeof(*files));
	size_t i, built = 0;
	int rc = 0;

	if (!files)
		return -1;
	for (i = 0; i < req->n_file_to_generate && !err->len; i++) {
		const Google__Protobuf__FileDescriptorProto *fd = find_file(req, req->file_to_generate[i]);

		if (!fd)
			gen_buf_printf(err, "%s: not in the request", req->file_to_generate[i]);
		else if (gen_model_build(&files[built], req, fd, err) == 0)
			built++;
	}
	if (!err->len)
		gen_model_check(files, built, err);
	for (i = 0; i < built && !err->len && rc == 0; i++)
		rc = emit_file(resp, &files[i]);
	for (i = 0; i < built; i++)
		gen_model_free(&files[i]);
	free(files);
	return rc;
}

int main(void)
{
	gen_response resp = GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__INIT;
	gen_request *req = NULL;
	gen_buf err = {0};
	uint8_t *in = NULL, *packed = NULL;
	size_t len, i;
	int rc = 1;

	if (read_all(stdin, &in, &len) < 0) {
		fprintf(stderr, "protoc-gen-moat: cannot read the request from stdin\n");
		goto out;
	}
	req = google__protobuf__compiler__code_generator_request__unpack(NULL, len, in);
	if (!req) {
		fprintf(stderr,
		        "protoc-gen-moat: stdin is not a CodeGeneratorRequest (run it through protoc)\n");
		goto out;
	}
	resp.has_supported_features = 1;
	resp.supported_features =
	    GOOGLE__PROTOBUF__COMPILER__CODE_GENERATOR_RESPONSE__FEATURE__FEATURE_PROTO3_OPTIONAL;
	if (generate(&resp, req, &err) < 0 || err.failed) {
		fprintf(stderr, "protoc-gen-moat: out of memory\n");
		goto out;
	}
	if (err.len) {
		for (i = 0; i < resp.n_file; i++)
			protobuf_c_message_free_unpacked(&resp.file[i]->base, NULL);
		resp.n_file = 0;
		resp.error = err.data;
	}
	len = google__protobuf__compiler__code_generator_response__get_packed_size(&resp);
	if (!(packed = malloc(len ? len : 1)))
		goto out;
	google__protobuf__compiler__code_generator_response__pack(&resp, packed);
	if (fwrite(packed, 1, len, stdout) != len || fflush(stdout) != 0) {
		fprintf(stderr, "protoc-gen-moat: cannot write the response\n");
		goto out;
	}
	rc = 0;
out:
	for (i = 0; i < resp.n_file; i++)
		protobuf_c_message_free_unpacked(&resp.file[i]->base, NULL);
	free(resp.file);
	if (req)
		google__protobuf__compiler__code_generator_request__free_unpacked(req, NULL);
	gen_buf_free(&err);
	free(packed);
	free(in);
	return rc;
}
