/* moat-bench: the rows a run plans, --only's groups, and looking rows up. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

const size_t bench_sizes[NSIZES] = {0, 64, 4096, MIB};
const char *const bench_size_names[NSIZES] = {"0", "64", "4K", "1M"};
const int bench_thread_counts[NTHREADS] = {1, 2, 8, 32};

row bench_rows[MAX_ROWS];
size_t bench_nrows;

int group_on(const char *group)
{
	const char *p;
	size_t n = strlen(group);

	if (!bench_cfg.only)
		return 1;
	for (p = bench_cfg.only; (p = strstr(p, group)) != NULL; p += n) {
		if ((p == bench_cfg.only || p[-1] == ',') && (p[n] == '\0' || p[n] == ','))
			return 1;
	}
	return 0;
}

static row *row_add(const char *group, enum row_kind kind, size_t size_idx, const char *base_fmt,
                    const char *id_fmt, const char *label)
{
	row *r = &bench_rows[bench_nrows++];
	const char *sn = size_idx < NSIZES ? bench_size_names[size_idx] : "";

	if (bench_nrows > MAX_ROWS)
		abort();
	r->group = group;
	r->kind = kind;
	r->has_size = size_idx < NSIZES;
	r->size = size_idx < NSIZES ? bench_sizes[size_idx] : 0;
	snprintf(r->id, sizeof(r->id), id_fmt, sn);
	if (base_fmt)
		snprintf(r->base, sizeof(r->base), base_fmt, sn);
	snprintf(r->label, sizeof(r->label), "%s", label);
	return r;
}

row *row_find(const char *fmt, const char *arg)
{
	char id[48];
	size_t i;

	snprintf(id, sizeof(id), fmt, arg);
	for (i = 0; i < bench_nrows; i++) {
		if (strcmp(bench_rows[i].id, id) == 0)
			return &bench_rows[i];
	}
	fprintf(stderr, "moat-bench: no row %s\n", id);
	abort();
}

void row_na(row *r, const char *what, const char *why)
{
	if (r->state == ROW_DONE)
		return;
	r->state = ROW_NA;
	/* what is "failed" or an opening "n/a (reason", which this closes. */
	snprintf(r->note, sizeof(r->note), "%s: %.200s%s", what, why && why[0] ? why : "unknown",
	         strncmp(what, "n/a (", 5) == 0 ? ")" : "");
}

void rows_na(const char *prefix, const char *what, const char *why)
{
	size_t i, n = strlen(prefix);

	for (i = 0; i < bench_nrows; i++) {
		if (bench_rows[i].state == ROW_PENDING && strncmp(bench_rows[i].id, prefix, n) == 0)
			row_na(&bench_rows[i], what, why);
	}
}

const row *row_get(const char *id)
{
	size_t i;

	for (i = 0; i < bench_nrows; i++) {
		if (strcmp(bench_rows[i].id, id) == 0)
			return &bench_rows[i];
	}
	return NULL;
}

/* sim and proc: each with its physical baseline, at every size. */
static void plan_local_rows(void)
{
	size_t s;

	for (s = 0; s < NSIZES; s++)
		row_add("sim", ROW_LAT, s, NULL, "sim.fnptr.%s",
		        "baseline: direct call through a function pointer");
	for (s = 0; s < NSIZES; s++)
		row_add("sim", ROW_LAT, s, "sim.fnptr.%s", "sim.call.%s",
		        s == 0 ? "sim: empty entry call" : "sim: entry call, echo");
	for (s = 0; s < NSIZES; s++)
		row_add("sim", ROW_LAT, s, "sim.fnptr.%s", "sim.exit.%s", "sim: entry call + one exit call");

	for (s = 0; s < NSIZES; s++)
		row_add("proc", ROW_LAT, s, NULL, "proc.socketpair.%s",
		        "baseline: socketpair ping-pong, 2 processes");
	for (s = 0; s < NSIZES; s++)
		row_add("proc", ROW_LAT, s, "proc.socketpair.%s", "proc.call.%s",
		        s == 0 ? "proc: empty entry call" : "proc: entry call, echo");
	for (s = 0; s < NSIZES; s++)
		row_add("proc", ROW_LAT, s, "proc.socketpair.%s", "proc.exit.%s",
		        "proc: entry call + one exit call");
}

/* remote: the transport baselines, then each remote target's call and call+exit rows. */
static void plan_remote_rows(void)
{
	size_t s, t;
	static const char *const remotes[][3] = {
	    {"grpc_sim", "base.grpc_bidi.%s", "grpc:// to moatd --backend sim"},
	    {"grpc", "base.grpc_bidi.%s", "grpc:// to moatd (default backend)"},
	    {"grpcs", "base.grpc_bidi_mtls.%s", "grpcs:// mTLS to moatd (default backend)"},
	    {"local", "base.grpc_bidi.%s", "local (private moatd, unix socket)"}};
	char id[48], label[96];

	for (s = 0; s < NSIZES; s++)
		row_add("remote", ROW_LAT, s, NULL, "base.tcp.%s",
		        "baseline: raw TCP ping-pong, TCP_NODELAY");
	for (s = 0; s < NSIZES; s++)
		row_add("remote", ROW_LAT, s, "base.tcp.%s", "base.grpc_bidi.%s",
		        "baseline: gRPC core bidi stream ping-pong, TCP");
	for (s = 0; s < NSIZES; s++)
		row_add("remote", ROW_LAT, s, "base.tcp.%s", "base.grpc_bidi_mtls.%s",
		        "baseline: gRPC core bidi stream ping-pong, mTLS");
	for (s = 0; s < NSIZES; s++)
		row_add("remote", ROW_LAT, s, "base.grpc_bidi.%s", "base.grpc_bidi_thr.%s",
		        "baseline: gRPC bidi, server shaped like moatd (accept thread + thread per stream)");
	for (s = 0; s < NSIZES; s++)
		row_add("remote", ROW_LAT, s, "base.tcp.%s", "base.asylo_2rpc.%s",
		        "baseline: Asylo RemoteBackend pattern, 2 unary RPCs, TCP");
	for (t = 0; t < sizeof(remotes) / sizeof(remotes[0]); t++) {
		for (s = 0; s < NSIZES; s++) {
			snprintf(id, sizeof(id), "%s.call.%%s", remotes[t][0]);
			snprintf(label, sizeof(label), "%s: %s", remotes[t][2],
			         s == 0 ? "empty entry call" : "entry call, echo");
			row_add("remote", ROW_LAT, s, remotes[t][1], id, label);
		}
		for (s = 0; s < NSIZES; s++) {
			snprintf(id, sizeof(id), "%s.exit.%%s", remotes[t][0]);
			snprintf(label, sizeof(label), "%s: entry call + one exit call", remotes[t][2]);
			row_add("remote", ROW_LAT, s, remotes[t][1], id, label);
		}
	}
}

/* concurrency, setup and memory: one row each, no sizes. */
static void plan_other_rows(void)
{
	size_t t;
	char id[48], label[96];

	for (t = 0; t < NTHREADS; t++) {
		snprintf(id, sizeof(id), "conc.grpc.t%d", bench_thread_counts[t]);
		snprintf(label, sizeof(label),
		         "grpc:// moatd --backend sim: %d host thread%s, empty calls, one enclave",
		         bench_thread_counts[t], bench_thread_counts[t] > 1 ? "s" : "");
		row_add("concurrency", ROW_RATE, NSIZES, "conc.grpc.t1", id, label);
	}

	row_add("setup", ROW_LAT, NSIZES, NULL, "setup.sim", "sim: load + first call + destroy");
	row_add("setup", ROW_LAT, NSIZES, "setup.sim", "setup.proc", "proc: load + first call + destroy");
	row_add("setup", ROW_LAT, NSIZES, "setup.sim", "setup.local",
	        "local: load (starts moatd) + first call + destroy");
	row_add("setup", ROW_LAT, NSIZES, "setup.sim", "setup.grpc",
	        "grpc:// (moatd default backend): load + first call + destroy");
	row_add("setup", ROW_LAT, NSIZES, "setup.sim", "setup.grpcs",
	        "grpcs:// mTLS (moatd default backend): load + first call + destroy");

	row_add("fleet", ROW_LAT, NSIZES, NULL, "fleet.load.one",
	        "grpc:// one target named alone: load (upload, Load, report check)");
	row_add("fleet", ROW_LAT, NSIZES, "fleet.load.one", "fleet.load.t1",
	        "fleet of 1 (grpc+dns://): load, placed by round robin + health checks");
	row_add("fleet", ROW_LAT, NSIZES, "fleet.load.one", "fleet.load.t2", "fleet of 2 targets: load");
	row_add("fleet", ROW_LAT, NSIZES, "fleet.load.one", "fleet.load.t4", "fleet of 4 targets: load");
	row_add("fleet", ROW_RATE, NSIZES, NULL, "fleet.calls.one",
	        "grpc:// one target: 8 sessions, a thread each, empty calls");
	row_add("fleet", ROW_RATE, NSIZES, "fleet.calls.one", "fleet.calls.t1", "fleet of 1: the same");
	row_add("fleet", ROW_RATE, NSIZES, "fleet.calls.one", "fleet.calls.t2",
	        "fleet of 2 (same machine): the same");
	row_add("fleet", ROW_RATE, NSIZES, "fleet.calls.one", "fleet.calls.t4",
	        "fleet of 4 (same machine): the same");

	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd.0",
	        "moatd VmRSS, 0 sessions (sessions in-process, --backend sim)");
	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd.1", "moatd VmRSS, 1 idle session");
	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd.100", "moatd VmRSS, 100 idle sessions");
	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd.per_session", "moatd: VmRSS per idle session");
	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd_proc.per_session",
	        "moatd --backend proc: its own VmRSS per idle session");
	row_add("memory", ROW_KIB, NSIZES, NULL, "mem.moatd_proc.child_rss",
	        "moatd --backend proc: enclave host process VmRSS per idle session");
}

void plan_rows(void)
{
	plan_local_rows();
	plan_remote_rows();
	plan_other_rows();
}
