/*
 * moat-bench: the memory group, moatd's resident size with 0, 1 and many
 * idle sessions, and that of the enclave host processes its proc backend
 * starts, read from /proc.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <moat/moat.h>

#include "bench.h"
#include "bench_selectors.h"

/* VmRSS of pid in KiB, or -1. */
static long rss_kib(pid_t pid)
{
	char path[64], line[256];
	long kib = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "VmRSS:", 6) == 0) {
			kib = strtol(line + 6, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kib;
}

/* Sum of VmRSS over every descendant of pid (children of all its threads, recursively). */
static long children_rss_kib(pid_t pid, int depth)
{
	char path[96], buf[4096];
	struct dirent *de;
	long sum = 0;
	DIR *d;

	if (depth > 4)
		return 0;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	d = opendir(path);
	if (!d)
		return 0;
	while ((de = readdir(d)) != NULL) {
		FILE *f;
		char *p, *end;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.16s/children", (int)pid, de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f)) {
			for (p = buf;; p = end) {
				long child = strtol(p, &end, 10);
				long kib;

				if (end == p)
					break;
				if ((kib = rss_kib((pid_t)child)) > 0)
					sum += kib;
				sum += children_rss_kib((pid_t)child, depth + 1);
			}
		}
		fclose(f);
	}
	closedir(d);
	return sum;
}

/*
 * Load nsess sessions on a fresh moatd (its local backend given) and read
 * VmRSS: moatd's own at 0, 1 and nsess sessions, and its children's (the
 * proc backend's enclave hosts) at nsess.
 */
static int memory_one(const char *backend, int nsess, long *rss0, long *rss1, long *rssn, long *kids)
{
	moat_enclave **e = calloc((size_t)nsess, sizeof(*e));
	long kids0;
	char uri[160];
	bench_moatd d;
	int i, rc = -1;

	if (!e) {
		bench_fail("out of memory");
		return -1;
	}
	if (moatd_start(&d, 0, backend) < 0)
		goto out;
	moatd_uri(&d, uri, sizeof(uri), 0);
	usleep(200000);
	*rss0 = rss_kib(d.pid);
	kids0 = children_rss_kib(d.pid, 0);
	for (i = 0; i < nsess; i++) {
		if (enclave_open(&e[i], uri) < 0 ||
		    moat_enclave_call(e[i], BENCH_SEL_EMPTY, NULL, NULL) < 0) {
			char why[300];

			snprintf(why, sizeof(why), "session %d: %.200s", i + 1,
			         e[i] ? moat_error_last()->message : bench_error);
			bench_fail("%s", why);
			goto out;
		}
		if (i == 0) {
			usleep(100000);
			*rss1 = rss_kib(d.pid);
		}
	}
	usleep(200000);
	*rssn = rss_kib(d.pid);
	*kids = children_rss_kib(d.pid, 0) - kids0;
	rc = 0;
out:
	for (i = 0; i < nsess; i++)
		moat_enclave_destroy(e[i]);
	moatd_stop(&d);
	free(e);
	return rc;
}

void run_memory(void)
{
	enum { NSESS = 100, NPROC = 20 };
	long rss0 = 0, rss1 = 0, rssn = 0, kids = 0;
	int i;

	if (memory_one("sim", NSESS, &rss0, &rss1, &rssn, &kids) < 0) {
		rows_na("mem.moatd.", "n/a (backend not available", bench_error);
	} else {
		row_find("%s", "mem.moatd.0")->kib = (double)rss0;
		row_find("%s", "mem.moatd.1")->kib = (double)rss1;
		row_find("%s", "mem.moatd.100")->kib = (double)rssn;
		row_find("%s", "mem.moatd.per_session")->kib = (double)(rssn - rss0) / NSESS;
	}
	if (memory_one("proc", NPROC, &rss0, &rss1, &rssn, &kids) < 0) {
		rows_na("mem.moatd_proc.", "n/a (backend not available", bench_error);
	} else {
		row_find("%s", "mem.moatd_proc.per_session")->kib = (double)(rssn - rss0) / NPROC;
		row_find("%s", "mem.moatd_proc.child_rss")->kib = (double)kids / NPROC;
		snprintf(row_find("%s", "mem.moatd_proc.child_rss")->note, sizeof(bench_rows[0].note),
		         "%d sessions, children total %ld KiB", NPROC, kids);
	}
	for (i = (int)bench_nrows - 1; i >= 0; i--) {
		if (strncmp(bench_rows[i].id, "mem.", 4) == 0 && bench_rows[i].state == ROW_PENDING)
			bench_rows[i].state = ROW_DONE;
	}
}
