/*
 * Raw ping-pong baselines: a length-prefixed echo over a socketpair between
 * two processes (what the proc backend is built on) and over loopback TCP
 * with TCP_NODELAY (what gRPC runs on). A 4-byte length then the payload,
 * written with one writev, read back in full.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "bench.h"

static int read_full(int fd, void *buf, size_t n)
{
	unsigned char *p = buf;

	while (n > 0) {
		ssize_t r = read(fd, p, n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Write a header and a payload, starting with one writev so small messages go out in one segment. */
static int write_msg(int fd, const void *hdr, size_t hdr_len, const void *data, size_t len)
{
	struct iovec iov[2] = {{(void *)hdr, hdr_len}, {(void *)data, len}};
	int cnt = 2, first = 0;

	while (first < cnt) {
		ssize_t r = writev(fd, iov + first, cnt - first);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		while (first < cnt && (size_t)r >= iov[first].iov_len) {
			r -= (ssize_t)iov[first].iov_len;
			first++;
		}
		if (first < cnt) {
			iov[first].iov_base = (char *)iov[first].iov_base + r;
			iov[first].iov_len -= (size_t)r;
		}
	}
	return 0;
}

static int echo_loop(int fd)
{
	unsigned char *buf = NULL;
	size_t cap = 0;
	uint32_t hdr;
	int rc = 0;

	for (;;) {
		size_t len;

		if (read_full(fd, &hdr, sizeof(hdr)) < 0)
			break; /* peer closed: done */
		len = ntohl(hdr);
		if (len > cap) {
			unsigned char *nb = realloc(buf, len);

			if (!nb) {
				rc = 1;
				break;
			}
			buf = nb;
			cap = len;
		}
		if (read_full(fd, buf, len) < 0 || write_msg(fd, &hdr, sizeof(hdr), buf, len) < 0) {
			rc = 1;
			break;
		}
	}
	free(buf);
	close(fd);
	return rc;
}

int raw_helper_socketpair(int fd)
{
	printf("ready\n");
	fflush(stdout);
	return echo_loop(fd);
}

int raw_helper_tcp(void)
{
	struct sockaddr_in sa = {0};
	socklen_t sl = sizeof(sa);
	int one = 1, lfd, fd;

	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0) {
		perror("moat-bench tcp helper");
		return 1;
	}
	printf("%u\n", (unsigned)ntohs(sa.sin_port));
	fflush(stdout);
	fd = accept(lfd, NULL, NULL);
	close(lfd);
	if (fd < 0)
		return 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return echo_loop(fd);
}

static int raw_alloc(raw_pingpong *p, size_t size)
{
	p->size = size;
	p->buf = malloc(size ? size : 1);
	p->reply = malloc(size ? size : 1);
	if (!p->buf || !p->reply) {
		bench_fail("out of memory");
		return -1;
	}
	memset(p->buf, 0xa5, size);
	return 0;
}

int raw_socketpair_open(raw_pingpong *out, size_t size)
{
	const char *args[] = {"socketpair", NULL, NULL};
	char fdstr[16], line[64];
	int sv[2];

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	out->pid = -1;
	if (raw_alloc(out, size) < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
		bench_fail("socketpair: %s", strerror(errno));
		return -1;
	}
	snprintf(fdstr, sizeof(fdstr), "%d", sv[1]);
	args[1] = fdstr;
	if (bench_spawn_helper(&out->pid, line, sizeof(line), args, sv[1]) < 0) {
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	close(sv[1]);
	out->fd = sv[0];
	return 0;
}

int raw_tcp_open(raw_pingpong *out, size_t size)
{
	const char *args[] = {"tcp", NULL};
	struct sockaddr_in sa = {0};
	char line[64];
	int one = 1;

	memset(out, 0, sizeof(*out));
	out->fd = -1;
	out->pid = -1;
	if (raw_alloc(out, size) < 0)
		return -1;
	if (bench_spawn_helper(&out->pid, line, sizeof(line), args, -1) < 0)
		return -1;
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)strtoul(line, NULL, 10));
	out->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (out->fd < 0 || connect(out->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		bench_fail("connect 127.0.0.1:%s: %s", line, strerror(errno));
		return -1;
	}
	setsockopt(out->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return 0;
}

int raw_pingpong_op(void *ctx)
{
	raw_pingpong *p = ctx;
	uint32_t hdr = htonl((uint32_t)p->size);

	if (write_msg(p->fd, &hdr, sizeof(hdr), p->buf, p->size) < 0 ||
	    read_full(p->fd, &hdr, sizeof(hdr)) < 0 || ntohl(hdr) != p->size ||
	    read_full(p->fd, p->reply, p->size) < 0) {
		bench_fail("raw ping-pong failed: %s", strerror(errno));
		return -1;
	}
	return 0;
}

void raw_close(raw_pingpong *p)
{
	if (p->fd >= 0)
		close(p->fd);
	p->fd = -1;
	/* The helper exits on EOF; bench_reap only waits, or kills a stuck one. */
	bench_reap(p->pid);
	p->pid = -1;
	free(p->buf);
	free(p->reply);
	p->buf = p->reply = NULL;
}
