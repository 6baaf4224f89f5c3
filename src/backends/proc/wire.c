/*
 * Length-prefixed frames on a stream socket, shared by libmoat's proc
 * backend and the runner. The codec stays free of I/O; this is the I/O.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "backends/proc/proc.h"

/* A reader keeps at most this much buffer between frames (a 1 MiB item fits). */
#define WIRE_KEEP (2u << 20)

int moat__proc_wire_send(int fd, const moat_frame *f)
{
	uint8_t *buf;
	size_t len, done = 0;
	uint32_t n;
	int rc = 0;

	if (moat__frame_encode(f, 4, &buf, &len) < 0)
		return MOAT_ENOMEM;
	if (len - 4 > MOAT_PROC_FRAME_MAX) {
		free(buf);
		return MOAT_ELIMIT;
	}
	n = (uint32_t)(len - 4);
	buf[0] = (uint8_t)n;
	buf[1] = (uint8_t)(n >> 8);
	buf[2] = (uint8_t)(n >> 16);
	buf[3] = (uint8_t)(n >> 24);
	while (done < len) {
		/* MSG_NOSIGNAL: a dead peer must be an error here, never SIGPIPE. */
		ssize_t k = send(fd, buf + done, len - done, MSG_NOSIGNAL);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0) {
			rc = MOAT_ETRANSPORT;
			break;
		}
		done += (size_t)k;
	}
	free(buf);
	return rc;
}

/* Wait until fd is readable or the deadline passes. */
static int wire_wait(int fd, int64_t deadline_ns)
{
	struct pollfd p = {fd, POLLIN, 0};

	for (;;) {
		int64_t left = deadline_ns - moat__now_ns();
		int r;

		if (left <= 0)
			return MOAT_ETIMEDOUT;
		r = poll(&p, 1,
		         (int)((left + 999999) / 1000000 > 1000000 ? 1000000 : (left + 999999) / 1000000));
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return MOAT_ETRANSPORT;
	}
}

int moat__proc_wire_recv(moat_proc_wire *w, moat_frame_in **out, int64_t deadline_ns)
{
	*out = NULL;
	for (;;) {
		ssize_t k;

		if (w->have >= 4) {
			uint32_t n = (uint32_t)w->buf[0] | (uint32_t)w->buf[1] << 8 |
			             (uint32_t)w->buf[2] << 16 | (uint32_t)w->buf[3] << 24;
			int rc;

			if (n > MOAT_PROC_FRAME_MAX)
				return MOAT_EPROTO;
			if (w->have >= 4 + (size_t)n) {
				rc = moat__frame_decode(out, w->buf + 4, n);
				/* Decoding copies what it keeps, so the bytes can go now. */
				w->have -= 4 + (size_t)n;
				if (w->have)
					memmove(w->buf, w->buf + 4 + n, w->have);
				else if (w->cap > WIRE_KEEP) {
					free(w->buf);
					w->buf = NULL;
					w->cap = 0;
				}
				return rc;
			}
			if (w->cap < 4 + (size_t)n) {
				uint8_t *b = realloc(w->buf, 4 + (size_t)n);

				if (!b)
					return MOAT_ENOMEM;
				w->buf = b;
				w->cap = 4 + (size_t)n;
			}
		} else if (w->cap < 4096) {
			uint8_t *b = realloc(w->buf, 4096);

			if (!b)
				return MOAT_ENOMEM;
			w->buf = b;
			w->cap = 4096;
		}
		if (deadline_ns) {
			int rc = wire_wait(w->fd, deadline_ns);

			if (rc < 0)
				return rc;
		}
		k = recv(w->fd, w->buf + w->have, w->cap - w->have, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return MOAT_ETRANSPORT;
		w->have += (size_t)k;
	}
}

void moat__proc_wire_release(moat_proc_wire *w)
{
	free(w->buf);
	w->buf = NULL;
	w->have = w->cap = 0;
}
