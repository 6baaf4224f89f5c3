/*
 * --metrics-listen ADDR: moatd's metrics (metrics.c) over HTTP for
 * Prometheus, GET /metrics, served by libmicrohttpd on a thread of its own.
 */
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "moatd/moatd.h"

static struct MHD_Daemon *daemon_;

static enum MHD_Result answer(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_len, void **con_cls)
{
	static const char not_found[] = "only GET /metrics is served here\n";
	struct MHD_Response *r;
	enum MHD_Result ok;
	unsigned int status = MHD_HTTP_OK;
	char *body = NULL;
	size_t len = 0;

	(void)version;
	(void)upload;
	(void)con_cls;
	if (*upload_len)
		return MHD_NO; /* no request bodies */
	if (strcmp(method, "GET") == 0 && strcmp(url, "/metrics") == 0)
		body = moatd_metrics_render(cls, &len);
	if (body) {
		r = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
		if (r)
			MHD_add_response_header(r, "Content-Type",
			                        "text/plain; version=0.0.4; charset=utf-8");
	} else {
		status = MHD_HTTP_NOT_FOUND;
		r = MHD_create_response_from_buffer(sizeof(not_found) - 1, (void *)not_found,
		                                    MHD_RESPMEM_PERSISTENT);
	}
	if (!r) {
		free(body);
		return MHD_NO;
	}
	ok = MHD_queue_response(conn, status, r);
	MHD_destroy_response(r);
	return ok;
}

int moatd_metrics_start(moatd *d, const char *listen)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV | AI_PASSIVE},
	                *ai = NULL;
	char host[256], uri[300];
	const union MHD_DaemonInfo *info;
	const char *colon = strrchr(listen, ':');
	int n, rc = -1;

	n = colon ? (int)(colon - listen) : 0;
	if (n >= 2 && listen[0] == '[' && listen[n - 1] == ']') {
		listen++;
		n -= 2;
	}
	snprintf(host, sizeof(host), "%.*s", n, listen);
	if (!colon || getaddrinfo(*host ? host : NULL, colon + 1, &hints, &ai) != 0 || !ai) {
		moatd_log(MOATD_LOG_ERROR, "--metrics-listen %s: not a HOST:PORT this machine has", listen);
		goto out;
	}
	daemon_ = MHD_start_daemon(
	    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL | (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0),
	    0, NULL, NULL, answer, d, MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, 64u,
	    MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
	if (!daemon_) {
		moatd_log(MOATD_LOG_ERROR, "--metrics-listen %s: cannot listen there (in use?)", listen);
		goto out;
	}
	info = MHD_get_daemon_info(daemon_, MHD_DAEMON_INFO_BIND_PORT);
	snprintf(uri, sizeof(uri),
	         ai->ai_family == AF_INET6 ? "http://[%s]:%u/metrics" : "http://%s:%u/metrics", host,
	         info ? (unsigned int)info->port : 0u);
	moatd_log(MOATD_LOG_INFO, "metrics on %s", uri);
	rc = 0;
out:
	if (ai)
		freeaddrinfo(ai);
	return rc;
}

void moatd_metrics_stop(void)
{
	if (daemon_)
		MHD_stop_daemon(daemon_);
	daemon_ = NULL;
}
