/*
 * moat-bench: shared declarations. The harness (main.c) owns the rows and
 * the timing loop; raw.c and grpc_base.c are the baselines Moat's call paths
 * are built on, measured in the same run so that ratios are meaningful on a
 * noisy machine.
 */
#ifndef MOAT_BENCH_H
#define MOAT_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One timed operation: 0 on success, negative on failure (message in bench_error). */
typedef int (*bench_op)(void *ctx);

/* Last failure of a baseline, for the "n/a (...)" note. */
extern char bench_error[256];
void bench_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

uint64_t bench_now_ns(void);

/* Helper processes: moat-bench re-executes itself with --helper MODE. */
int bench_helper_main(int argc, char **argv);
/* Start this program as a helper; its first stdout line is returned in line. */
int bench_spawn_helper(pid_t *pid, char *line, size_t line_len, const char *const *args, int keep_fd);
void bench_reap(pid_t pid);

/* Raw byte ping-pong (length-prefixed echo) over a connected socket. */
typedef struct raw_pingpong {
	int fd;
	pid_t pid;
	size_t size;
	unsigned char *buf;
	unsigned char *reply;
} raw_pingpong;

int raw_socketpair_open(raw_pingpong *out, size_t size);
int raw_tcp_open(raw_pingpong *out, size_t size);
int raw_pingpong_op(void *ctx);
void raw_close(raw_pingpong *p);
int raw_helper_socketpair(int fd);
int raw_helper_tcp(void);

/* gRPC core baselines, each against a helper server process. */
typedef struct grpc_base grpc_base;
enum grpc_base_kind {
	GRPC_BASE_BIDI = 0,          /* one bidi stream, one message each way per round trip */
	GRPC_BASE_ASYLO = 1,         /* Asylo's RemoteBackend: request RPC + reply RPC, each acknowledged */
	GRPC_BASE_BIDI_THREADED = 2, /* bidi, server in moatd's shape: accept thread + thread per stream */
};
/* tls_dir: NULL for insecure, else a directory with ca.pem, server/client .pem/.key (mTLS). */
int grpc_base_open(grpc_base **out, int kind, size_t size, const char *tls_dir);
int grpc_base_op(void *ctx);
void grpc_base_close(grpc_base *g);
int grpc_base_helper(const char *tls_dir, const char *reply_target, int threaded);

#endif
