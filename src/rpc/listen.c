/*
 * The server's own listener, without TLS: an accept thread takes the
 * connections and hands them to gRPC, closing at once a connection that
 * would eat into the descriptors kept free (gRPC 1.51 closes its listener
 * for good when accept fails with EMFILE).
 */
#include "rpc/rpc_int.h"

#include <dirent.h>
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
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <grpc/grpc_posix.h>
#include <grpc/grpc_security.h>
#include <grpc/support/log.h>

#include <moat/sys/backend.h>

int moat__rpc_own_listener(const char *addr, int *port)
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
 * Is there room for one more connection (max_connections)? Forgets the
 * connections gRPC closed since: a descriptor that is closed, or now
 * names another socket, no longer counts.
 */
static int room_for_connection(moat_rpc_server *s)
{
	unsigned int i = 0;

	if (!s->max_connections)
		return 1;
	if (!s->conns) {
		s->conns = calloc(s->max_connections, sizeof(*s->conns));
		if (!s->conns)
			return 0;
	}
	while (i < s->n_conns) {
		struct stat st;
		rpc_conn *c = &s->conns[i];

		if (fstat(c->fd, &st) == 0 && st.st_dev == c->dev && st.st_ino == c->ino)
			i++;
		else
			*c = s->conns[--s->n_conns];
	}
	return s->n_conns < s->max_connections;
}

/* Count the connection on fd (room_for_connection said there is room). */
static void count_connection(moat_rpc_server *s, int fd)
{
	struct stat st;

	if (!s->max_connections || !s->conns || fstat(fd, &st) < 0)
		return;
	s->conns[s->n_conns++] = (rpc_conn){fd, st.st_dev, st.st_ino};
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
			moat__rpc_server_report(s, 1, MOAT_RPC_REFUSED_NOTHING, 0,
			                        "cannot accept a connection: %s", strerror(errno));
			poll(NULL, 0, 50);
			return;
		}
		if ((rlim_t)fd + s->fd_reserve >= ceiling) {
			close(fd);
			moat__rpc_server_report(
			    s, 1, MOAT_RPC_REFUSED_DESCRIPTORS, 1,
			    "refused a connection: %u of %lu file descriptors are kept for sessions "
			    "(too many connections)",
			    s->fd_reserve, (unsigned long)ceiling);
			continue;
		}
		if (!room_for_connection(s)) {
			close(fd);
			moat__rpc_server_report(s, 1, MOAT_RPC_REFUSED_CONNECTION, 1,
			                        "refused a connection: %s", s->connections_limit);
			continue;
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails harmlessly on unix */
		count_connection(s, fd);
		grpc_server_add_channel_from_fd(s->server, fd, s->fd_creds);
	}
}

/* Is fd a connection accepted on gRPC's own listener? */
static int grpc_connection(const moat_rpc_server *s, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int listening = 0;
	socklen_t ol = sizeof(listening);

	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
	    getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ol) < 0 || listening)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port) == s->grpc_port;
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port) == s->grpc_port;
	if (ss.ss_family == AF_UNIX)
		return s->grpc_path[0] && strcmp(((struct sockaddr_un *)&ss)->sun_path, s->grpc_path) == 0;
	return 0;
}

static int by_fd_desc(const void *a, const void *b)
{
	return *(const int *)b - *(const int *)a;
}

/*
 * gRPC's own listener (TLS: gRPC 1.51 takes no TLS connection from us)
 * accepts by itself, so --max-connections is enforced after the fact:
 * every 250 ms, when the process has more descriptors open than
 * max_connections, its connections are counted and the newest past the
 * limit shut down (gRPC sees the peer leave). A burst between two checks
 * is what the descriptor headroom checked at start is for.
 */
void moat__rpc_shed_connections(moat_rpc_server *s)
{
	struct timespec ts;
	struct dirent *e;
	unsigned int n = 0, cap = 0, i;
	int64_t now;
	int *fds = NULL;
	DIR *d;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	if (!s->max_connections || now - s->last_shed_ms < 250)
		return;
	s->last_shed_ms = now;
	d = opendir("/proc/self/fd");
	if (!d)
		return;
	while ((e = readdir(d)) != NULL)
		cap += e->d_name[0] != '.';
	if (cap > s->max_connections && (fds = malloc(cap * sizeof(*fds))) != NULL) {
		rewinddir(d);
		while ((e = readdir(d)) != NULL && n < cap) {
			int fd = (int)strtol(e->d_name, NULL, 10);

			if (e->d_name[0] != '.' && fd != dirfd(d) && grpc_connection(s, fd))
				fds[n++] = fd;
		}
	}
	closedir(d);
	if (n > s->max_connections) {
		qsort(fds, n, sizeof(*fds), by_fd_desc);
		for (i = 0; i < n - s->max_connections; i++)
			shutdown(fds[i], SHUT_RDWR);
		moat__rpc_server_report(s, 1, MOAT_RPC_REFUSED_CONNECTION,
		                        (unsigned int)(n - s->max_connections), "closed %u connections: %s",
		                        n - s->max_connections, s->connections_limit);
	}
	free(fds);
}

void *moat__rpc_acceptor_main(void *arg)
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

void moat__rpc_stop_accepting(moat_rpc_server *s)
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
