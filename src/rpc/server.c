/*
 * The server: one loop takes new calls, admits them against the limits
 * and starts a thread per admitted call; the handler drives its call with
 * call.c's functions. Without TLS an accept thread takes the connections
 * (listen.c); a handler's view of its call is in server_call.c.
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

void moat__rpc_server_report(moat_rpc_server *s, int error, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	if (!s->report)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	s->report(s->ctx, error, msg);
}

/*
 * Bind the listening socket for "unix:/path" or "host:port" ourselves.
 * Returns the descriptor (non-blocking) or -1; *port gets the TCP port.
 */
static int post_request(moat_rpc_server *s)
{
	moat_rpc_call *c = moat__rpc_call_new();

	if (!c)
		return MOAT_ENOMEM;
	c->server = 1;
	if (grpc_server_request_call(s->server, &c->call, &c->details, &c->request_md, c->cq, s->cq, c) !=
	    GRPC_CALL_OK) {
		moat__rpc_call_free(c);
		return MOAT_EPROTO;
	}
	s->pending = c;
	return 0;
}

int moat__rpc_server_start(moat_rpc_server **out, const moat_rpc_server_opts *o, int *port, char *err,
                           size_t err_len)
{
	grpc_arg args[8];
	grpc_channel_args ca;
	grpc_server_credentials *creds = NULL;
	moat_rpc_server *s;
	int n = 0, rc = MOAT_EINVAL;

	*out = NULL;
	*port = 0;
	s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, err_len, "out of memory");
		return MOAT_ENOMEM;
	}
	pthread_mutex_init(&s->lock, NULL);
	s->listen_fd = -1;
	s->handler = o->handler;
	s->ctx = o->ctx;
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
	/* Hosts ping every keepalive period (1 s by default): accept that instead of sending GOAWAY. */
	args[n++] = (grpc_arg){
	    GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, {.integer = 50}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PING_STRIKES, {.integer = 0}};
	/* Our own pings find a host that froze; a host that died closes its connection anyway. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = 5000}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = 5000}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, {.integer = 0}};
	n = moat__rpc_message_size_args(args, n, o->max_receive_bytes);
	ca.num_args = (size_t)n;
	ca.args = args;
	s->server = grpc_server_create(&ca, NULL);
	s->cq = grpc_completion_queue_create_for_next(NULL);
	grpc_server_register_completion_queue(s->server, s->cq, NULL);

	if (o->tls_cert_file) {
		/* Reloadable (server_tls.c). */
		if (!(creds = moat__rpc_server_tls_creds(o, err, err_len))) {
			rc = MOAT_EIO;
			goto fail;
		}
	} else {
		creds = grpc_insecure_server_credentials_create();
	}
	if (!creds) {
		snprintf(err, err_len, "cannot create server credentials (check the certificate and key)");
		rc = MOAT_EINVAL;
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
	}
	if (*port == 0) {
		snprintf(err, err_len, "cannot listen on '%s' (address in use, bad address or bad TLS files)",
		         o->listen);
		rc = MOAT_ETRANSPORT;
		goto fail;
	}
	grpc_server_start(s->server);
	s->started = 1;
	if (post_request(s) < 0) {
		snprintf(err, err_len, "cannot request calls from gRPC");
		rc = MOAT_EPROTO;
		goto fail;
	}
	if (s->listen_fd >= 0) {
		if (pthread_create(&s->acceptor, NULL, moat__rpc_acceptor_main, s) != 0) {
			snprintf(err, err_len, "cannot start the accept thread");
			rc = MOAT_ENOMEM;
			goto fail;
		}
		s->accepting = 1;
	}
	rc = 0;
	*out = s;
	s = NULL;
fail:
	if (s)
		moat__rpc_server_free(s);
	return rc;
}

static void *worker_main(void *arg)
{
	worker *w = arg;
	moat_rpc_call *c = w->call;
	grpc_op op;

	/* The close op tells us later whether the peer cancelled. */
	memset(&op, 0, sizeof(op));
	op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
	op.data.recv_close_on_server.cancelled = &c->cancelled;
	if (grpc_call_start_batch(c->call, &op, 1, &c->tag_close, NULL) == GRPC_CALL_OK)
		c->close_pending = 1;
	w->srv->handler(w->srv->ctx, c);
	pthread_mutex_lock(&w->srv->lock);
	w->done = 1;
	w->srv->n_workers--;
	if (w->pending)
		w->srv->n_pending--;
	w->pending = 0;
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

static void start_worker(moat_rpc_server *s, moat_rpc_call *c)
{
	worker *w;
	size_t n = GRPC_SLICE_LENGTH(c->details.method);
	const char *limit = NULL;

	/* The limits first: a refused call costs no thread and no memory beyond its own. */
	pthread_mutex_lock(&s->lock);
	if (s->max_calls && s->n_workers >= s->max_calls)
		limit = s->calls_limit;
	else if (s->max_pending && s->n_pending >= s->max_pending)
		limit = s->pending_limit;
	pthread_mutex_unlock(&s->lock);
	if (limit) {
		moat__rpc_server_report(s, 0, "refused a call: %s", limit);
		refuse(c, limit);
		return;
	}
	w = calloc(1, sizeof(*w));
	c->method = malloc(n + 1);
	if (!w || !c->method) {
		free(w);
		moat__rpc_call_free(c);
		return;
	}
	memcpy(c->method, GRPC_SLICE_START_PTR(c->details.method), n);
	c->method[n] = '\0';
	w->srv = s;
	w->call = c;
	w->pending = 1;
	c->worker = w;
	pthread_mutex_lock(&s->lock);
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
		pthread_mutex_unlock(&s->lock);
		free(w);
		c->worker = NULL;
		moat__rpc_server_report(s, 1, "refused a call: cannot start a thread");
		refuse(c, "the target cannot start a thread");
		return;
	}
	s->n_workers++;
	s->n_pending++;
	w->next = s->workers;
	s->workers = w;
	pthread_mutex_unlock(&s->lock);
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
		if (ev.type == GRPC_OP_COMPLETE && ev.tag == s->pending) {
			moat_rpc_call *c = s->pending;

			s->pending = NULL;
			if (ev.success)
				start_worker(s, c);
			else
				moat__rpc_call_free(c);
			if (!*stop)
				post_request(s);
		}
		if (s->tick)
			s->tick(s->ctx);
		reap_workers(s, 0);
	}
	if (s->stopping)
		s->stopping(s->ctx);
	moat__rpc_stop_accepting(s);
	/* Stop taking calls, end the open ones, and wait for every handler. */
	grpc_server_shutdown_and_notify(s->server, s->cq, &shutdown_tag);
	grpc_server_cancel_all_calls(s->server);
	for (;;) {
		ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		if (ev.type != GRPC_OP_COMPLETE)
			break;
		if (ev.tag == &shutdown_tag)
			break;
		if (ev.tag == s->pending) {
			moat_rpc_call *c = s->pending;

			s->pending = NULL;
			if (ev.success)
				start_worker(s, c);
			else
				moat__rpc_call_free(c);
		}
	}
	grpc_server_cancel_all_calls(s->server);
	reap_workers(s, 1);
	s->started = 0;
}

void moat__rpc_server_free(moat_rpc_server *s)
{
	grpc_event ev;

	if (!s)
		return;
	moat__rpc_stop_accepting(s);
	if (s->started) {
		char tag;

		grpc_server_shutdown_and_notify(s->server, s->cq, &tag);
		grpc_server_cancel_all_calls(s->server);
		do
			ev = grpc_completion_queue_next(s->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
		while (ev.type == GRPC_OP_COMPLETE && ev.tag != &tag);
		reap_workers(s, 1);
	}
	if (s->pending) {
		/* A request that never completed comes back during shutdown; free its slot. */
		s->pending->call = NULL;
		moat__rpc_call_free(s->pending);
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
	free(s);
}
