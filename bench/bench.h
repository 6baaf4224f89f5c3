/*
 * moat-bench: shared declarations. The harness is split by job: main.c
 * (options), rows.c (the rows every run plans), lanes.c (timing, and the
 * in-process operations timed: a function pointer, Moat calls), moatd.c (a
 * moatd and TLS material for the remote rows), suites.c and memory.c (what
 * each group measures), report.c (ratios, targets, table, JSON). raw.c and
 * grpc_base.c are the baselines Moat's call paths are built on, measured in
 * the same run so that ratios are meaningful on a noisy machine.
 */
#ifndef MOAT_BENCH_H
#define MOAT_BENCH_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>

#include <moat/moat.h>

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

/* ---- the harness ---- */

#ifndef MOAT_BENCH_BINDIR
#define MOAT_BENCH_BINDIR "."
#endif
#ifndef MOAT_BENCH_ENCLAVE
#define MOAT_BENCH_ENCLAVE "bench_enclave.so"
#endif

#define MIB      ((size_t)1 << 20)
#define NSIZES   4 /* message sizes of the call rows: 0, 64, 4K, 1M */
#define NTHREADS 4 /* host thread counts of the concurrency rows: 1, 2, 8, 32 */
extern const size_t bench_sizes[NSIZES];
extern const char *const bench_size_names[NSIZES];
extern const int bench_thread_counts[NTHREADS];

/* Options (main.c). */
typedef struct bench_config {
	int smoke;
	double row_seconds; /* time cap per latency row */
	const char *json;
	const char *only;
	const char *bindir;
	const char *enclave;
	char tls_dir[256]; /* throwaway CA, server and client certificates; "" when not made */
	const char *tls_problem;
} bench_config;
extern bench_config bench_cfg;
extern unsigned char *bench_payload; /* MIB bytes every row sends from */

/* ---- rows (rows.c) ---- */

enum row_kind { ROW_LAT, ROW_RATE, ROW_KIB };
enum row_state { ROW_PENDING, ROW_DONE, ROW_NA };

typedef struct row {
	const char *group;
	char id[48];
	char label[96];
	size_t size;
	int has_size;
	enum row_kind kind;
	char base[48]; /* id of the baseline row this one is compared with */
	enum row_state state;
	double p50, p99, cps, kib; /* us, us, calls/s, KiB */
	size_t samples;
	char note[256];
} row;

#define MAX_ROWS 160
extern row bench_rows[MAX_ROWS];
extern size_t bench_nrows;

/* Is group selected by --only (every group is without it)? */
int group_on(const char *group);
/* Add every row a full run measures, in the order they are printed. */
void plan_rows(void);
/* The row whose id is fmt with arg; aborts when there is none (a bug in the plan). */
row *row_find(const char *fmt, const char *arg);
/* The row with this id, or NULL. */
const row *row_get(const char *id);
/* Mark r not available: what is "failed" or an opening "n/a (reason", which this closes. */
void row_na(row *r, const char *what, const char *why);
/* Mark every still-pending row whose id starts with prefix as not available. */
void rows_na(const char *prefix, const char *what, const char *why);

/* ---- timing (lanes.c) ---- */

/*
 * A lane is one row being timed. The rows a comparison is made between run
 * as lanes side by side: each lane gets a slice of time in turn, round after
 * round, so that noise from other work on a shared machine lands on all of
 * them alike instead of on whichever row happened to run at a bad moment.
 */
typedef struct lane {
	row *r;
	bench_op op;
	void *ctx;
	int live;
	size_t batch, n, max;
	double *s;        /* per-call time of each sample, ns */
	uint64_t ops, ns; /* calls made and time spent making them while timing */
} lane;

#define ROUNDS 5

int cmp_double(const void *a, const void *b);
/* Fill r from n one-shot times in microseconds (sorted here): p50, p99, their rate, done. */
void row_set_times(row *r, double *us, int n);
/* Warm up op and size its batches; 0, or -1 with r marked failed. */
int lane_begin(lane *l, row *r, bench_op op, void *ctx);
/* Time every live lane, interleaved round by round, and fill in their rows. */
void lanes_run(lane *l, size_t n);
/*
 * lanes_run in slices: slice k of slices runs its share of the rounds; the
 * last one fills in the rows. Between slices a caller may give the lanes
 * fresh processes (their ctx must stay the same objects), then lanes_warm.
 */
void lanes_run_slice(lane *l, size_t n, int slice, int slices);
/* A few untimed operations on every live lane (after its process was replaced). */
void lanes_warm(lane *l, size_t n);
/* Stop timing a lane whose operation can no longer run; its row says why. */
void lane_drop(lane *l, const char *why);

/* The baseline of the sim rows: a copy through a function pointer the compiler cannot see through. */
typedef struct fnptr_ctx {
	int (*volatile fn)(const void *in, size_t len, void *out);
	const void *in;
	void *out;
	size_t len;
} fnptr_ctx;
void fnptr_init(fnptr_ctx *f, void *out, size_t len);
int fnptr_op(void *ctx);

/* ---- Moat calls (lanes.c) ---- */

typedef struct call_ctx {
	moat_enclave *e;
	uint64_t selector;
	size_t size;
	size_t want_items;
	moat_msg *in, *out;
} call_ctx;

/* One backend's enclave, with the messages its call and call+exit rows use. */
typedef struct moat_rows {
	const char *prefix; /* row ids start with it: "sim", "grpc", ... */
	moat_enclave *e;
	call_ctx call, exit;
} moat_rows;

/* Load the bench enclave on uri (TLS files from bench_cfg for grpcs) with its exit handler. */
int enclave_open(moat_enclave **out, const char *uri);
/* Load the bench enclave on uri; on failure mark the backend's rows n/a with the reason. */
int moat_rows_open(moat_rows *m, const char *prefix, const char *uri);
/* Add the call and call+exit lanes of an open backend at size index s; returns how many. */
size_t moat_rows_lanes(moat_rows *m, size_t s, lane *l);
void moat_rows_close(moat_rows *m);
/* Load the bench enclave on uri again in place of m's (its lanes keep their contexts); 0 or -1. */
int moat_rows_reload(moat_rows *m, const char *uri);

/* ---- moatd and TLS material (moatd.c) ---- */

typedef struct bench_moatd {
	pid_t pid;
	char addr[128]; /* what its ready file said: host:port */
	char dir[64];
} bench_moatd;

/* Start moatd on 127.0.0.1:0 (mTLS when tls; backend NULL: its default); 0 or -1 (bench_error). */
int moatd_start(bench_moatd *d, int tls, const char *backend);
/* Stop and reap it and remove its directory. */
void moatd_stop(bench_moatd *d);
/* Its grpc:// or grpcs:// URI. */
void moatd_uri(const bench_moatd *d, char *uri, size_t len, int tls);
/* Make throwaway certificates into bench_cfg.tls_dir (or say why not in bench_cfg.tls_problem). */
void certs_make(void);
void certs_remove(void);

/* ---- what each group measures (suites.c, memory.c) ---- */

void run_sim(void);
void run_proc(void);
void run_remote(void);
void run_concurrency(void);
void run_setup(void);
void run_fleet(void); /* fleet.c */
void run_memory(void);

/* ---- report (report.c) ---- */

void print_table(FILE *f);
int write_json(const char *path);

#endif
