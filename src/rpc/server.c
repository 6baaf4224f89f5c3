/*
 * The server: one loop takes new calls, admits them against the limits
 * and starts a thread per admitted call; the handler drives its call with
 * call.c's functions. Without TLS an accept thread takes the connections
 * (gRPC 1.51 closes its listener for good when accept fails with EMFILE).
 * Server call accessors and the final status are here too.
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

typedef struct worker {
	pthread_t thread;
	moat_rpc_server *srv;
	moat_rpc_call *call;
	int done;    /* guarded by srv->lock */
	int pending; /* counted in srv->n_pending; guarded by srv->lock */
	struct worker *next;
} worker;

struct moat_rpc_server {
	grpc_server *server;
	grpc_completion_queue *cq; /* for_next: new-call notifications and shutdown */
	moat_rpc_call *pending;    /* the call slot of the outstanding request */
	moat_rpc_handler handler;
	void *ctx;
	void (*tick)(void *ctx);
	void (*stopping)(void *ctx);
	pthread_mutex_t lock;
	worker *workers;
	unsigned int n_workers, n_pending; /* guarded by lock */
	unsigned int max_pending, max_calls, recv_timeout_ms;
	const char *pending_limit, *calls_limit, *recv_timeout_message;
	void (*report)(void *ctx, int error, const char *msg);
	int started;

	/* Our own listener (no TLS): the accept thread hands connections to gRPC. */
	int listen_fd;
	unsigned int fd_reserve;
	grpc_server_credentials *fd_creds;
	pthread_t acceptor;
	int accepting;
	volatile int accept_stop;
};

static void report(moat_rpc_server *s, int error, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void report(moat_rpc_server *s, int error, const char *fmt, ...)
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
static int own_listener(const char *addr, int *port)
{
	struct addrinfo hints, *res = NULL, *ai;
	char host[256];
	const char *colon;
	int fd = -1, one = 1;

	if (strncmp(addr, "unix:", 5) == 0) {
		struct sockaddr_un sun;

		memset(&sun, 0, sizeof(sun));
		sun.sun_family = AF_UNIX;
		if (strlen(addr + 5) >= sizeof(sun.sun_path) || addr[5] != '/')
			return -1;
		memcpy(sun.sun_path, addr + 5, strlen(addr + 5) + 1);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		unlink(sun.sun_path); /* as gRPC does: a stale socket file of an earlier run */
		if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 1024) < 0) {
			if (fd >= 0)
				close(fd);
			return -1;
		}
		*port = 1;
		return fd;
	}
	colon = strrchr(addr, ':');
	if (!colon || (size_t)(colon - addr) >= sizeof(host))
		return -1;
	memcpy(host, addr, (size_t)(colon - addr));
	host[colon - addr] = '\0';
	if (host[0] == '[' && host[strlen(host) - 1] == ']') {
		memmove(host, host + 1, strlen(host));
		host[strlen(host) - 1] = '\0';
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if (getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &res) != 0)
		return -1;
	for (ai = res; ai; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
		if (fd < 0)
			continue;
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 1024) == 0)
			break;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd >= 0) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);

		if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0) {
			close(fd);
			return -1;
		}
		*port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
		                                       : ((struct sockaddr_in *)&ss)->sin_port);
	}
	return fd;
}

/*
 * Take the connections waiting on the listener. accept returns the lowest
 * free descriptor, so its number is at least the count of descriptors in
 * use: one at or above the soft limit less the reserve is closed again at
 * once, which keeps the reserve for sessions, files and gRPC itself.
 */
static void accept_ready(moat_rpc_server *s)
{
	struct rlimit rl;
	rlim_t ceiling = 1024;
	int i;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
		ceiling = rl.rlim_cur;
	else if (rl.rlim_cur == RLIM_INFINITY)
		ceiling = (rlim_t)1 << 30;
	for (i = 0; i < 256 && !s->accept_stop; i++) {
		int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC), one = 1;

		if (fd < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
			    errno == ECONNABORTED)
				return;
			/* Out of descriptors or memory despite the reserve: try again shortly, never give up.
			 */
			report(s, 1, "cannot accept a connection: %s", strerror(errno));
			poll(NULL, 0, 50);
			return;
		}
		if ((rlim_t)fd + s->fd_reserve >= ceiling) {
			close(fd);
			report(s, 1,
			       "refused a connection: %u of %lu file descriptors are kept for sessions "
			       "(too many connections)",
			       s->fd_reserve, (unsigned long)ceiling);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails harmlessly on unix */
		grpc_server_add_channel_from_fd(s->server, fd, s->fd_creds);
	}
}

static void *acceptor_main(void *arg)
{
	moat_rpc_server *s = arg;

	while (!s->accept_stop) {
		struct pollfd p = {s->listen_fd, POLLIN, 0};

		/* A short wait: the stop flag is seen within 50 ms. */
		if (poll(&p, 1, 50) > 0)
			accept_ready(s);
	}
	return NULL;
}

static void stop_accepting(moat_rpc_server *s)
{
	if (s->accepting) {
		s->accept_stop = 1;
		pthread_join(s->acceptor, NULL);
		s->accepting = 0;
	}
	if (s->listen_fd >= 0) {
		close(s->listen_fd);
		s->listen_fd = -1;
	}
}

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
	char *cert = NULL, *key = NULL, *client_ca = NULL;
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
		grpc_ssl_pem_key_cert_pair pair;
		grpc_ssl_server_certificate_config *cfg;
		grpc_ssl_server_credentials_options *opts;

		if (moat__rpc_read_pem(&cert, o->tls_cert_file, "TLS certificate") < 0 ||
		    moat__rpc_read_pem(&key, o->tls_key_file, "TLS key") < 0 ||
		    (o->tls_client_ca &&
		     moat__rpc_read_pem(&client_ca, o->tls_client_ca, "TLS client CA") < 0)) {
			snprintf(err, err_len, "%s", moat_error_last()->message);
			rc = MOAT_EIO;
			goto fail;
		}
		pair.private_key = key;
		pair.cert_chain = cert;
		cfg = grpc_ssl_server_certificate_config_create(client_ca, &pair, 1);
		opts = grpc_ssl_server_credentials_create_options_using_config(
		    client_ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
		              : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
		    cfg);
		creds = grpc_ssl_server_credentials_create_with_options(opts);
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
		s->listen_fd = own_listener(o->listen, port);
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
		if (pthread_create(&s->acceptor, NULL, acceptor_main, s) != 0) {
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
	free(cert);
	if (key) {
		memset(key, 0, strlen(key));
		free(key);
	}
	free(client_ca);
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
		report(s, 0, "refused a call: %s", limit);
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
		report(s, 1, "refused a call: cannot start a thread");
		refuse(c, "the target cannot start a thread");
		return;
	}
	s->n_workers++;
	s->n_pending++;
	w->next = s->workers;
	s->workers = w;
	pthread_mutex_unlock(&s->lock);
}

void moat__rpc_call_admit(moat_rpc_call *c)
{
	worker *w = c->worker;

	if (!w)
		return;
	pthread_mutex_lock(&w->srv->lock);
	if (w->pending)
		w->srv->n_pending--;
	w->pending = 0;
	pthread_mutex_unlock(&w->srv->lock);
}

int moat__rpc_recv(moat_rpc_call *c, uint8_t **buf, size_t *len, moat_rpc_status *st)
{
	moat_rpc_server *s = c->worker ? c->worker->srv : NULL;
	int rc = moat__rpc_exchange(c, NULL, 0, buf, len, s ? s->recv_timeout_ms : 0, st);

	if (rc == MOAT_RPC_TIMEOUT) {
		/* The receive stays outstanding; ending the call completes it (the handler frees the call).
		 */
		grpc_call_cancel_with_status(c->call, GRPC_STATUS_DEADLINE_EXCEEDED, s->recv_timeout_message,
		                             NULL);
		if (st) {
			memset(st, 0, sizeof(*st));
			st->code = MOAT_RPC_DEADLINE_EXCEEDED;
			snprintf(st->message, sizeof(st->message), "%s", s->recv_timeout_message);
		}
		report(s, 0, "ended a call: %s", s->recv_timeout_message);
	} else if (rc == 0) {
		moat__rpc_call_admit(c);
	}
	return rc;
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
	stop_accepting(s);
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
	stop_accepting(s);
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
	pthread_mutex_destroy(&s->lock);
	free(s);
}

const char *moat__rpc_call_method(const moat_rpc_call *c)
{
	return c->method ? c->method : "";
}

const char *moat__rpc_call_md(moat_rpc_call *c, const char *key)
{
	size_t i;

	for (i = 0; i < c->request_md.count; i++) {
		const grpc_metadata *m = &c->request_md.metadata[i];

		if (grpc_slice_str_cmp(m->key, key) == 0) {
			size_t n = GRPC_SLICE_LENGTH(m->value);
			char *v = malloc(n + 1);

			if (!v)
				return NULL;
			memcpy(v, GRPC_SLICE_START_PTR(m->value), n);
			v[n] = '\0';
			free(c->md_value);
			c->md_value = v;
			return v;
		}
	}
	return NULL;
}

int moat__rpc_finish(moat_rpc_call *c, const void *reply, size_t reply_len, int code, int moat_code,
                     const char *message)
{
	grpc_op ops[3];
	grpc_metadata trailer;
	grpc_byte_buffer *bb = NULL;
	grpc_slice details;
	char codebuf[24];
	size_t n = 0;
	int ok;

	if (c->batch_pending)
		return MOAT_EPROTO;
	memset(ops, 0, sizeof(ops));
	if (!c->md_sent) {
		ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
		n++;
		c->md_sent = 1;
	}
	if (reply) {
		bb = moat__rpc_buffer_from(reply, reply_len);
		ops[n].op = GRPC_OP_SEND_MESSAGE;
		ops[n].data.send_message.send_message = bb;
		n++;
	}
	details = grpc_slice_from_copied_string(message ? message : "");
	ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
	ops[n].data.send_status_from_server.status = (grpc_status_code)code;
	ops[n].data.send_status_from_server.status_details = &details;
	if (moat_code) {
		snprintf(codebuf, sizeof(codebuf), "%d", moat_code);
		trailer.key = grpc_slice_from_static_string("moat-error");
		trailer.value = grpc_slice_from_copied_string(codebuf);
		ops[n].data.send_status_from_server.trailing_metadata_count = 1;
		ops[n].data.send_status_from_server.trailing_metadata = &trailer;
	}
	n++;
	if (grpc_call_start_batch(c->call, ops, n, &c->tag_batch, NULL) != GRPC_CALL_OK) {
		ok = 0;
	} else {
		ok = moat__rpc_wait(c, &c->tag_batch, RPC_FOREVER);
	}
	if (bb)
		grpc_byte_buffer_destroy(bb);
	grpc_slice_unref(details);
	if (moat_code)
		grpc_slice_unref(trailer.value);
	c->ended = 1;
	return ok > 0 ? 0 : MOAT_ETRANSPORT;
}

int moat__rpc_call_cancelled(moat_rpc_call *c)
{
	if (c->close_pending && moat__rpc_wait(c, &c->tag_close, RPC_NOW) >= 0)
		c->close_pending = 0;
	return !c->close_pending && c->cancelled;
}
