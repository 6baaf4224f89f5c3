/*
 * The server: one loop takes new calls. A unary call's request is read
 * by the loop itself (server_event.c) before its handler gets a thread; a
 * stream is admitted by the loop (authentication, limits) before it gets
 * one; an unknown method is answered from the loop. Handlers drive their
 * calls with call.c's functions. Without TLS an accept thread takes the
 * connections (listen.c); a handler's view of its call is in
 * server_call.c.
 */
#include "rpc/rpc_int.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/log.h>

#include <moat/sys/backend.h>

static gpr_timespec in_ms(unsigned int ms)
{
	return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

void moat__rpc_server_report(moat_rpc_server *s, int error, int refusal, unsigned int count, const char *fmt,
                             ...)
{
	char msg[256];
	va_list ap;

	if (!s->report)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->report(s->ctx, error, refusal, count, msg);
}

/* Post the request slot of method i (n_methods: any unknown method). */
static int post_request(moat_rpc_server *s, size_t i)
{
	moat_rpc_call *c = moat__rpc_call_new();
	int thread = i < s->n_methods && s->methods[i].serving == MOAT_RPC_SERVE_THREAD;
	grpc_call_error e;

	if (!c)
		return MOAT_ENOMEM;
	c->server = 1;
	c->method_index = i;
	c->tag_request = (rpc_tag){c, TAG_REQUEST};
	/* A stream's thread reads its own queue; the loop reads every other call's. */
	if (i < s->n_methods)
		e = grpc_server_request_registered_call(s->server, s->registered[i], &c->call,
		                                        &c->req_deadline, &c->request_md, NULL,
		                                        thread ? c->cq : s->cq, s->cq, &c->tag_request);
	else
		e = grpc_server_request_call(s->server, &c->call, &c->details, &c->request_md, s->cq, s->cq,
		                             &c->tag_request);
	if (e != GRPC_CALL_OK) {
		moat__rpc_call_free(c);
		return MOAT_EPROTO;
	}
	s->slots[i] = c;
	return 0;
}

/* Copy the methods and register them with gRPC (before it starts). */
static int register_methods(moat_rpc_server *s, const moat_rpc_server_opts *o)
{
	size_t i;

	s->n_methods = o->n_methods;
	s->methods = calloc(o->n_methods + 1, sizeof(*s->methods));
	s->registered = calloc(o->n_methods + 1, sizeof(*s->registered));
	s->slots = calloc(o->n_methods + 1, sizeof(*s->slots));
	if (!s->methods || !s->registered || !s->slots)
		return -1;
	for (i = 0; i < o->n_methods; i++) {
		s->methods[i] = o->methods[i];
		s->registered[i] = grpc_server_register_method(s->server, o->methods[i].name, NULL,
		                                               GRPC_SRM_PAYLOAD_NONE, 0);
		if (!s->registered[i])
			return -1;
	}
	return 0;
}

/* The server's settings from o. */
static void copy_opts(moat_rpc_server *s, const moat_rpc_server_opts *o)
{
	s->listen_fd = -1;
	s->handler = o->handler;
	s->admit = o->admit;
	s->dropped = o->dropped;
	s->stack_bytes = o->thread_stack_bytes;
	s->ctx = o->ctx;
	s->max_parked = o->max_parked;
	s->parked_limit = o->parked_limit ? o->parked_limit : "too many parked calls";
	s->tick = o->tick;
	s->stopping = o->stopping;
	s->max_pending = o->max_pending;
	s->max_calls = o->max_calls;
	s->pending_limit = o->pending_limit ? o->pending_limit : "too many calls waiting for their request";
	s->calls_limit = o->calls_limit ? o->calls_limit : "too many calls at once";
	s->recv_timeout_ms = o->recv_timeout_ms;
	s->recv_timeout_message =
	    o->recv_timeout_message ? o->recv_timeout_message : "the request did not arrive in time";
	s->report = o->report;
	s->fd_reserve = o->tls_cert_file ? 0 : o->fd_reserve;
	s->max_connections = o->max_connections;
	s->connections_limit = o->connections_limit ? o->connections_limit : "too many connections";
}

/* The server's channel arguments into args (at least 8); returns how many. */
static int server_args(grpc_arg *args, const moat_rpc_server_opts *o)
{
	int n = 0;

	/* Hosts ping every keepalive period (1 s by default): accept that instead of sending GOAWAY. */
	args[n++] = (grpc_arg){
	    GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, {.integer = 50}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PING_STRIKES, {.integer = 0}};
	/* Our own pings find a host that froze; a host that died closes its connection anyway. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = 5000}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = 5000}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, {.integer = 0}};
	return moat__rpc_message_size_args(args, n, o->max_receive_bytes);
}

/* TLS (or plaintext) credentials from o's files. Returns them, or NULL with err filled. */
static grpc_server_credentials *server_credentials(const moat_rpc_server_opts *o, char *err, size_t err_len)
{
	if (!o->tls_cert_file)
		return grpc_insecure_server_credentials_create();
	/* Reloadable (server_tls.c). */
	return moat__rpc_server_tls_creds(o, err, err_len);
}

int moat__rpc_server_start(moat_rpc_server **out, const moat_rpc_server_opts *o, int *port, char *err,
                           size_t err_len)
{
	grpc_arg args[8];
	grpc_channel_args ca;
	grpc_server_credentials *creds;
	moat_rpc_server *s;
	int n, rc = MOAT_EINVAL;

	*out = NULL;
	*port = 0;
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, err_len, "out of memory");
		return MOAT_ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	copy_opts(s, o);
	n = server_args(args, o);
	ca.num_args = (size_t)n;
	ca.args = args;
	s->server = grpc_server_create(&ca, NULL);
	s->cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(s->server, s->cq, NULL);
	if (register_methods(s, o) < 0) {
		snprintf(err, err_len, "cannot register the served methods with gRPC");
		rc = MOAT_ENOMEM;
		goto fail;
	}
	creds = server_credentials(o, err, err_len);
	if (!creds) {
		rc = o->tls_cert_file ? MOAT_EIO : MOAT_EINVAL;
		goto fail;
	}
	if (s->fd_reserve) {
		/* Kept for the connections handed to gRPC (insecure credentials: no handshake to do). */
		s->fd_creds = creds;
		s->listen_fd = moat__rpc_own_listener(o->listen, port);
		if (s->listen_fd < 0)
			*port = 0;
	} else {
		*port = grpc_server_add_http2_port(s->server, o->listen, creds);
		grpc_server_credentials_release(creds);
		s->grpc_port = *port;
		if (strncmp(o->listen, "unix:", 5) == 0)
			snprintf(s->grpc_path, sizeof(s->grpc_path), "%s", o->listen + 5);
	}
	if (*port == 0) {
		snprintf(err, err_len, "cannot listen on '%s' (address in use, bad address or bad TLS files)",
		         o->listen);
		rc = MOAT_ETRANSPORT;
		goto fail;
	}
	grpc_server_start(s->server);
	s->started = 1;
	for (n = 0; n <= (int)s->n_methods; n++) {
		if (post_request(s, (size_t)n) < 0) {
			snprintf(err, err_len, "cannot request calls from gRPC");
			rc = MOAT_EPROTO;
			goto fail;
		}
	}
	if (s->listen_fd >= 0) {
		if (pthread_create(&s->acceptor, NULL, moat__rpc_acceptor_main, s) != 0) {
			snprintf(err, err_len, "cannot start the accept thread");
			rc = MOAT_ENOMEM;
			goto fail;
		}
		s->accepting = 1;
	}
	*out = s;
	return 0;
fail:
	moat__rpc_server_free(s);
	return rc;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	moat_rpc_call *c = w->call;
	grpc_op op;

	/* The close op tells us later whether the peer cancelled (the loop posted it for its own calls). */
	if (!c->event) {
		memset(&op, 0, sizeof(op));
		op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
		op.data.recv_close_on_server.cancelled = &c->cancelled;
		if (grpc_call_start_batch(c->call, &op, 1, &c->tag_close, NULL) == GRPC_CALL_OK)
			c->close_pending = 1;
	}
	w->srv->handler(w->srv->ctx, c);
	pthread_mutex_lock(&w->srv->lock);
	w->done = 1;
	w->srv->n_workers--;
	pthread_mutex_unlock(&w->srv->lock);
	return NULL;
}

static void reap_workers(moat_rpc_server *s, int all)
{
	for (;;) {
		worker **p, *w = NULL;

		pthread_mutex_lock(&s->lock);
		for (p = &s->workers; *p; p = &(*p)->next) {
			if (all || (*p)->done) {
				w = *p;
				*p = w->next;
				break;
			}
		}
		pthread_mutex_unlock(&s->lock);
		if (!w)
			return;
		pthread_join(w->thread, NULL);
		free(w);
	}
}

/*
 * Refuse a call that never got a thread: the status goes out from the
 * server loop, so the wait for it is bounded (a peer that does not read
 * cannot hold the loop), and the call is freed.
 */
static void refuse(moat_rpc_call *c, const char *message)
{
	grpc_op ops[2];
	grpc_metadata trailer;
	grpc_slice details = grpc_slice_from_copied_string(message);
	char codebuf[24];

	if (c->event) {
		moat__rpc_event_finish(c, NULL, 0, GRPC_STATUS_RESOURCE_EXHAUSTED, MOAT_ELIMIT, message);
		grpc_slice_unref(details);
		moat__rpc_call_free(c);
		return;
	}
	snprintf(codebuf, sizeof(codebuf), "%d", MOAT_ELIMIT);
	trailer.key = grpc_slice_from_static_string("moat-error");
	trailer.value = grpc_slice_from_copied_string(codebuf);
	memset(ops, 0, sizeof(ops));
	ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
	ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[1].data.send_status_from_server.status = GRPC_STATUS_RESOURCE_EXHAUSTED;
	ops[1].data.send_status_from_server.status_details = &details;
	ops[1].data.send_status_from_server.trailing_metadata_count = 1;
	ops[1].data.send_status_from_server.trailing_metadata = &trailer;
	c->md_sent = 1;
	if (grpc_call_start_batch(c->call, ops, 2, &c->tag_batch, NULL) == GRPC_CALL_OK) {
		c->batch_pending = 1;
		if (moat__rpc_wait(c, &c->tag_batch, moat__rpc_deadline(1000)) >= 0)
			c->batch_pending = 0;
	}
	c->ended = 1;
	grpc_slice_unref(details);
	grpc_slice_unref(trailer.value);
	moat__rpc_call_free(c); /* cancels the call when the status could not go out in time */
}

void moat__rpc_start_worker(moat_rpc_server *s, moat_rpc_call *c)
{
	worker *w;
	pthread_attr_t attr;
	const char *limit = NULL;
	int thread = !c->event, rc;

	/* The limit first: a refused call costs no thread. */
	pthread_mutex_lock(&s->lock);
	if (s->max_calls && s->n_workers >= s->max_calls)
		limit = s->calls_limit;
	pthread_mutex_unlock(&s->lock);
	if (limit) {
		moat__rpc_server_report(s, 0, MOAT_RPC_REFUSED_CALLS, 1, "refused a call: %s", limit);
		goto refused;
	}
	w = calloc(1, sizeof(*w));
	if (!w)
		goto refused;
	w->srv = s;
	w->call = c;
	c->worker = w;
	pthread_attr_init(&attr);
	/* A stream's stack is sized for what it may nest (the owner's choice); unary work takes the default.
	 */
	if (thread && s->stack_bytes)
		pthread_attr_setstacksize(&attr, s->stack_bytes);
	pthread_mutex_lock(&s->lock);
	rc = pthread_create(&w->thread, &attr, worker_main, w);
	if (rc == 0) {
		s->n_workers++;
		w->next = s->workers;
		s->workers = w;
	}
	pthread_mutex_unlock(&s->lock);
	pthread_attr_destroy(&attr);
	if (rc == 0)
		return;
	free(w);
	c->worker = NULL;
	moat__rpc_server_report(s, 1, MOAT_RPC_REFUSED_THREAD, 1, "refused a call: cannot start a thread");
	limit = "the target cannot start a thread";
refused:
	/* An admitted stream's admission is undone: its handler will not run. */
	if (thread && s->dropped)
		s->dropped(s->ctx, c);
	refuse(c, limit ? limit : "out of memory");
}

/* The method's name as the handler sees it. Returns 0 or -1 (out of memory). */
static int name_call(moat_rpc_server *s, moat_rpc_call *c)
{
	const char *name;
	size_t n;

	if (c->method_index < s->n_methods) {
		name = s->methods[c->method_index].name;
		n = strlen(name);
	} else {
		name = (const char *)GRPC_SLICE_START_PTR(c->details.method);
		n = GRPC_SLICE_LENGTH(c->details.method);
	}
	c->method = malloc(n + 1);
	if (!c->method)
		return -1;
	memcpy(c->method, name, n);
	c->method[n] = '\0';
	return 0;
}

/* A call arrived: serve it the way its method is served. */
static void new_call(moat_rpc_server *s, moat_rpc_call *c)
{
	size_t i = c->method_index;

	if (i >= s->n_methods || s->methods[i].serving != MOAT_RPC_SERVE_THREAD)
		moat__rpc_event_adopt(s, c);
	if (name_call(s, c) < 0) {
		moat__rpc_call_free(c);
	} else if (i >= s->n_methods) {
		moat__rpc_event_finish(c, NULL, 0, GRPC_STATUS_UNIMPLEMENTED, 0, "unknown method");
		moat__rpc_call_free(c);
	} else if (c->event) {
		moat__rpc_event_start(s, c);
	} else if (s->admit && s->admit(s->ctx, c) < 0) {
		moat__rpc_call_free(c); /* the admission answered it */
	} else {
		moat__rpc_start_worker(s, c);
	}
}

/* One completion on the loop's queue. */
static void dispatch(moat_rpc_server *s, grpc_event *ev, int serving)
{
	rpc_tag *tag = ev->tag;
	moat_rpc_call *c = tag->call;
	size_t i = c->method_index;

	if (tag->what != TAG_REQUEST) {
		moat__rpc_event_done(s, tag, ev->success);
		return;
	}
	s->slots[i] = NULL;
	if (ev->success && serving)
		new_call(s, c);
	else
		moat__rpc_call_free(c); /* failed, or arrived while stopping: cancelled */
	if (serving)
		post_request(s, i);
}

static void (*log_fn)(int severity, const char *file, int line, const char *msg);

static void log_trampoline(gpr_log_func_args *a)
{
	int sev = a->severity == GPR_LOG_SEVERITY_ERROR ? 2 : a->severity == GPR_LOG_SEVERITY_INFO ? 1 : 0;

	if (log_fn)
		log_fn(sev, a->file, a->line, a->message);
}

void moat__rpc_set_log(void (*fn)(int severity, const char *file, int line, const char *msg))
{
	/* Once routed, gRPC's lines stay with log_trampoline (1.51 does not export its default). */
	log_fn = fn;
	if (fn)
		gpr_set_log_function(log_trampoline);
}

void moat__rpc_server_run(moat_rpc_server *s, volatile int *stop)
{
	char shutdown_tag;
	grpc_event ev;

	while (!*stop) {
		int busy;

		/*
		 * While handlers wait, one of them reads the shared queue and
		 * polls the connections (init.c); a thread blocked here would
		 * compete with it and often read a stream's frame only to hand it
		 * over (a context switch per call). So only look for new calls
		 * then, without blocking; block here only when no handler runs.
		 */
		pthread_mutex_lock(&s->lock);
		busy = s->workers != NULL;
		pthread_mutex_unlock(&s->lock);
		/* A short wait: a stop request (signal) is seen within 20 ms. */
		ev = grpc_completion_queue_next(s->cq, busy ? gpr_inf_past(GPR_CLOCK_MONOTONIC) : in_ms(20),
		                                NULL);
		if (busy && ev.type == GRPC_QUEUE_TIMEOUT) {
			struct timespec nap = {0, 2 * 1000000L};

			nanosleep(&nap, NULL);
		}
		if (ev.type == GRPC_OP_COMPLETE)
			dispatch(s, &ev, !*stop);
		moat__rpc_event_expire(s);
		if (s->listen_fd < 0)
			moat__rpc_shed_connections(s);
		if (s->tick)
			s->tick(s->ctx);
		reap_workers(s, 0);
	}
	if (s->stopping)
		s->stopping(s->ctx);
	moat__rpc_event_stop(s);
	moat__rpc_stop_accepting(s);
	/* Stop taking calls, end the open ones, and wait for every handler. */
	grpc_server_shutdown_and_notify(s->server, s->cq, &shutdown_tag);
	grpc_server_cancel_all_calls(s->server);
	for (;;) {
		ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type != GRPC_OP_COMPLETE || ev.tag == &shutdown_tag)
			break;
		dispatch(s, &ev, 0);
	}
	grpc_server_cancel_all_calls(s->server);
	reap_workers(s, 1);
	s->started = 0;
}

void moat__rpc_server_free(moat_rpc_server *s)
{
	grpc_event ev;
	size_t i;

	if (!s)
		return;
	moat__rpc_stop_accepting(s);
	if (s->started) {
		char tag;

		grpc_server_shutdown_and_notify(s->server, s->cq, &tag);
		grpc_server_cancel_all_calls(s->server);
		for (;;) {
			ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
			if (ev.type != GRPC_OP_COMPLETE || ev.tag == &tag)
				break;
			dispatch(s, &ev, 0);
		}
		reap_workers(s, 1);
	}
	for (i = 0; s->slots && i <= s->n_methods; i++) {
		/* A request that never completed comes back during shutdown; free its slot. */
		if (s->slots[i]) {
			s->slots[i]->call = NULL;
			moat__rpc_call_free(s->slots[i]);
		}
	}
	grpc_server_destroy(s->server);
	grpc_completion_queue_shutdown(s->cq);
	do
		ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
	while (ev.type != GRPC_QUEUE_SHUTDOWN);
	grpc_completion_queue_destroy(s->cq);
	if (s->fd_creds)
		grpc_server_credentials_release(s->fd_creds);
	moat__rpc_server_tls_free();
	pthread_mutex_destroy(&s->lock);
	free(s->conns);
	free(s->methods);
	free(s->registered);
	free(s->slots);
	free(s);
}
