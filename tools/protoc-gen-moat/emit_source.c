/*
 * protoc-gen-moat: NAME.moat.c (the host's side: entry stubs, exit servers)
 * and NAME.moat-enclave.c (the enclave's side: entry servers, exit stubs).
 * The helpers are static in each file, so a program can link the code of
 * several interfaces, and the text compiles as C11 and as C++.
 */
#include "gen.h"

/* Which helpers a side uses: stubs call, servers decode, run and answer. */
static void side_uses(const gen_file *f, int host_side, int *stubs, int *servers)
{
	size_t i;

	*stubs = *servers = 0;
	for (i = 0; i < f->n_service; i++) {
		if (f->service[i].n_method == 0)
			continue;
		if (f->service[i].host == host_side)
			*servers = 1;
		else
			*stubs = 1;
	}
}

static void emit_codec(gen_buf *b)
{
	gen_buf_printf(
	    b, "/* A typed call carries one item: the packed message (NULL: every field at its default). */\n"
	       "static int moat_gen_pack(const ProtobufCMessage *m, moat_msg *msg)\n"
	       "{\n"
	       "\tsize_t len = m ? protobuf_c_message_get_packed_size(m) : 0;\n"
	       "\tuint8_t *buf = (uint8_t *)malloc(len ? len : 1);\n"
	       "\tint rc;\n\n"
	       "\tif (!buf)\n\t\treturn MOAT_ENOMEM;\n"
	       "\tif (m)\n\t\tprotobuf_c_message_pack(m, buf);\n"
	       "\trc = moat_msg_push(msg, buf, len);\n"
	       "\tfree(buf);\n"
	       "\treturn rc;\n"
	       "}\n\n"
	       "/* Exactly one item that decodes as d, or MOAT_EPROTO. */\n"
	       "static int moat_gen_unpack(const ProtobufCMessageDescriptor *d, const moat_msg *msg, "
	       "ProtobufCMessage **out)\n"
	       "{\n"
	       "\tconst void *data;\n"
	       "\tsize_t len;\n\n"
	       "\t*out = NULL;\n"
	       "\tif (!msg || moat_msg_count(msg) != 1 || moat_msg_item(msg, 0, &data, &len) < 0)\n"
	       "\t\treturn MOAT_EPROTO;\n"
	       "\t*out = protobuf_c_message_unpack(d, NULL, len, (const uint8_t *)data);\n"
	       "\treturn *out ? 0 : MOAT_EPROTO;\n"
	       "}\n\n");
}

static void emit_serve_helpers(gen_buf *b)
{
	gen_buf_printf(
	    b, "/* Decode the request and make a reply at its defaults for a server function. */\n"
	       "static int moat_gen_begin(const ProtobufCMessageDescriptor *rq, const moat_msg *in,\n"
	       "                          const ProtobufCMessageDescriptor *rp, ProtobufCMessage **request,\n"
	       "                          ProtobufCMessage **reply)\n"
	       "{\n"
	       "\tint rc = moat_gen_unpack(rq, in, request);\n\n"
	       "\t*reply = NULL;\n"
	       "\tif (rc < 0)\n\t\treturn rc;\n"
	       "\tif (!(*reply = (ProtobufCMessage *)malloc(rp->sizeof_message)))\n"
	       "\t\treturn MOAT_ENOMEM;\n"
	       "\trp->message_init(*reply);\n"
	       "\treturn 0;\n"
	       "}\n\n"
	       "/* Pack the reply of a server function that returned rc, and free both messages. */\n"
	       "static int moat_gen_end(int rc, ProtobufCMessage *request, ProtobufCMessage *reply, "
	       "moat_msg *out)\n"
	       "{\n"
	       "\tif (rc == 0)\n\t\trc = moat_gen_pack(reply, out);\n"
	       "\tprotobuf_c_message_free_unpacked(request, NULL);\n"
	       "\tprotobuf_c_message_free_unpacked(reply, NULL);\n"
	       "\treturn rc;\n"
	       "}\n\n");
}

static void emit_call_helper(gen_buf *b, int host_side)
{
	gen_buf_printf(
	    b,
	    "/* Pack the request, make the call, decode the reply (when wanted). */\n"
	    "static int moat_gen_call(%suint64_t selector, const ProtobufCMessage *request,\n"
	    "                         const ProtobufCMessageDescriptor *rp, ProtobufCMessage **reply)\n"
	    "{\n"
	    "\tmoat_msg *in = NULL, *out = NULL;\n"
	    "\tProtobufCMessage *r = NULL;\n"
	    "\tint rc;\n\n"
	    "\tif ((rc = moat_msg_new(&in)) < 0 || (rc = moat_msg_new(&out)) < 0 ||\n"
	    "\t    (rc = moat_gen_pack(request, in)) < 0)\n"
	    "\t\tgoto done;\n",
	    host_side ? "moat_enclave *enclave, " : "");
	if (host_side)
		gen_buf_printf(
		    b, "\trc = moat_enclave_call(enclave, selector, in, out);\n"
		       "\t/* The enclave refuses a request it cannot decode before any function runs. */\n"
		       "\tif (rc == MOAT_EHANDLER && moat_error_last()->enclave_code == MOAT_EPROTO)\n"
		       "\t\trc = MOAT_EPROTO;\n");
	else
		gen_buf_printf(b, "\trc = moat_exit_call(selector, in, out);\n");
	gen_buf_printf(b, "\tif (rc == 0 && reply)\n"
	                  "\t\trc = moat_gen_unpack(rp, out, &r);\n"
	                  "done:\n"
	                  "\tif (reply)\n\t\t*reply = r;\n"
	                  "\tmoat_msg_free(in);\n"
	                  "\tmoat_msg_free(out);\n"
	                  "\treturn rc;\n"
	                  "}\n\n");
}

/* The moat handler of one method: decode, run the server's function, answer. */
static void emit_dispatch(gen_buf *b, const gen_service *s, const gen_method *m, int host_side)
{
	gen_buf_printf(b,
	               "static int %s__%s__serve(void *p, %sconst moat_msg *in, moat_msg *out)\n"
	               "{\n"
	               "\tconst %s_MoatServer *server = (const %s_MoatServer *)p;\n"
	               "\tProtobufCMessage *request, *reply;\n"
	               "\tint rc = moat_gen_begin(&%s, in, &%s, &request, &reply);\n\n"
	               "%s"
	               "\tif (rc == 0)\n"
	               "\t\trc = server->%s(server->payload, (const %s *)request, (%s *)reply);\n"
	               "\treturn moat_gen_end(rc, request, reply, out);\n"
	               "}\n\n",
	               s->lower, m->lower, host_side ? "uint64_t selector, " : "", s->ctype, s->ctype,
	               m->in_desc, m->out_desc, host_side ? "\t(void)selector;\n" : "", m->lower, m->in_type,
	               m->out_type);
}

static void emit_register(gen_buf *b, const gen_service *s, int host_side)
{
	size_t i;

	if (host_side)
		gen_buf_printf(b,
		               "int %s__moat_register(moat_enclave *enclave, const %s_MoatServer *server)\n",
		               s->lower, s->ctype);
	else
		gen_buf_printf(b, "int %s__moat_register(const %s_MoatServer *server)\n", s->lower, s->ctype);
	/* The table is const to its user; moat's payload is not (uintptr_t keeps -Wcast-qual quiet). */
	gen_buf_printf(b, "{\n\tint rc = server ? 0 : MOAT_EINVAL;\n\n%s",
	               host_side ? "\t(void)enclave;\n" : "");
	for (i = 0; i < s->n_method; i++) {
		const gen_method *m = &s->method[i];

		gen_buf_printf(b, "\tif (rc == 0 && server->%s)\n", m->lower);
		if (host_side)
			gen_buf_printf(b,
			               "\t\trc = moat_enclave_set_exit_handler(enclave, %s__%s__SELECTOR, "
			               "%s__%s__serve,\n"
			               "\t\t                                   (void *)(uintptr_t)server);\n",
			               s->upper, m->upper, s->lower, m->lower);
		else
			gen_buf_printf(b,
			               "\t\trc = moat_entry_register(%s__%s__SELECTOR, %s__%s__serve,\n"
			               "\t\t                         (void *)(uintptr_t)server);\n",
			               s->upper, m->upper, s->lower, m->lower);
	}
	gen_buf_printf(b, "\treturn rc;\n}\n\n");
}

static void emit_server(gen_buf *b, const gen_service *s, int host_side)
{
	size_t i;

	for (i = 0; i < s->n_method; i++)
		emit_dispatch(b, s, &s->method[i], host_side);
	emit_register(b, s, host_side);
}

static void emit_stub(gen_buf *b, const gen_service *s, const gen_method *m, int host_side)
{
	gen_buf_printf(b,
	               "int %s__%s__call(%sconst %s *request, %s **reply)\n"
	               "{\n"
	               "\tProtobufCMessage *r = NULL;\n"
	               "\tint rc = moat_gen_call(%s%s__%s__SELECTOR, request ? &request->base : NULL, &%s,\n"
	               "\t                       reply ? &r : NULL);\n\n"
	               "\tif (reply)\n\t\t*reply = (%s *)r;\n"
	               "\treturn rc;\n"
	               "}\n\n",
	               s->lower, m->lower, host_side ? "moat_enclave *enclave, " : "", m->in_type,
	               m->out_type, host_side ? "enclave, " : "", s->upper, m->upper, m->out_desc,
	               m->out_type);
}

static void emit_side(gen_buf *b, const gen_file *f, int host_side)
{
	int stubs, servers;
	size_t i, j;

	gen_emit_prologue(b, f, host_side ? "the host's side" : "the enclave's side");
	gen_buf_printf(b, "#include <stdlib.h>\n\n#include <moat/%s.h>\n\n#include \"%s.moat.h\"\n\n",
	               host_side ? "moat" : "enclave", f->base);
	side_uses(f, host_side, &stubs, &servers);
	if (stubs || servers)
		emit_codec(b);
	if (servers)
		emit_serve_helpers(b);
	if (stubs)
		emit_call_helper(b, host_side);
	for (i = 0; i < f->n_service; i++) {
		const gen_service *s = &f->service[i];

		if (s->host == host_side)
			emit_server(b, s, host_side);
		else
			for (j = 0; j < s->n_method; j++)
				emit_stub(b, s, &s->method[j], host_side);
	}
}

void gen_emit_host(gen_buf *b, const gen_file *f)
{
	emit_side(b, f, 1);
}

void gen_emit_enclave(gen_buf *b, const gen_file *f)
{
	emit_side(b, f, 0);
}
