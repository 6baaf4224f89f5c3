/* Helpers shared by the proc backend's tests. */
#ifndef MOAT_TESTS_PROC_TEST_H
#define MOAT_TESTS_PROC_TEST_H

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <moat/moat.h>

#include "probe.h"

#define PROBE_PATH         MOAT_TEST_ENCLAVES "/proc_probe_enclave.so"
#define CTOR_PATH          MOAT_TEST_ENCLAVES "/proc_ctor_enclave.so"
#define EXAMPLE_PATH(name) MOAT_TEST_ENCLAVES "/" name "_enclave.so"

static inline moat_enclave *load_with(const char *path, const char *backend, const char *config,
                                      unsigned int timeout_ms)
{
	moat_load_options o = MOAT_LOAD_OPTIONS_INIT;
	moat_enclave *e = NULL;
	int rc;

	o.backend = backend;
	o.config = config;
	o.config_len = config ? strlen(config) : 0;
	o.call_timeout_ms = timeout_ms;
	rc = moat_enclave_load(&e, path, &o);
	if (rc < 0)
		fprintf(stderr, "load %s on %s: %s\n", path, backend, moat_error_last()->message);
	return e;
}

static inline moat_enclave *load_probe(const char *config, unsigned int timeout_ms)
{
	return load_with(PROBE_PATH, "proc", config, timeout_ms);
}

/* Call selector with one string item (may be NULL); the first reply item goes to reply (may be NULL). */
static inline int call_str(moat_enclave *e, uint64_t selector, const char *arg, char *reply, size_t size)
{
	moat_msg *in = NULL, *out = NULL;
	int rc;

	moat_msg_new(&in);
	moat_msg_new(&out);
	if (arg)
		moat_msg_push_str(in, arg);
	rc = moat_enclave_call(e, selector, in, out);
	if (reply && size) {
		const void *d;
		size_t len;

		reply[0] = '\0';
		if (rc == 0 && moat_msg_item(out, 0, &d, &len) == 0)
			snprintf(reply, size, "%.*s", (int)len, (const char *)d);
	}
	moat_msg_free(in);
	moat_msg_free(out);
	return rc;
}

/* Open file descriptors of this process. */
static inline int count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)) != NULL)
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own fd */
}

/* Children of process parent, zombies included; the first one's pid goes to *first. */
static inline int count_children_of(pid_t parent, pid_t *first)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int n = 0;

	if (first)
		*first = 0;
	if (!d)
		return -1;
	while ((de = readdir(d)) != NULL) {
		char path[300], buf[512], *p;
		long ppid;
		FILE *f;

		if (de->d_name[0] < '0' || de->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%s/stat", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fgets(buf, sizeof(buf), f) && (p = strrchr(buf, ')')) != NULL &&
		    sscanf(p + 1, " %*c %ld", &ppid) == 1 && ppid == (long)parent) {
			if (first && !*first)
				*first = (pid_t)strtol(de->d_name, NULL, 10);
			n++;
		}
		fclose(f);
	}
	closedir(d);
	return n;
}

/* Children of this process, zombies included; the first one's pid goes to *first. */
static inline int count_children(pid_t *first)
{
	return count_children_of(getpid(), first);
}

/*
 * The process that runs the enclave, given the one libmoat started: in a PID
 * namespace that is the keeper's grandchild (keeper -> init -> runner).
 */
static inline pid_t runner_pid(pid_t keeper)
{
	pid_t p = keeper, c;
	int depth;

	for (depth = 0; depth < 2 && count_children_of(p, &c) > 0; depth++)
		p = c;
	return p;
}

/* Threads of process pid, or -1. */
static inline int count_threads(pid_t pid)
{
	char path[64], line[256];
	FILE *f;
	int n = -1;

	snprintf(path, sizeof(path), "/proc/%ld/status", (long)pid);
	f = fopen(path, "r");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	fclose(f);
	return n;
}

#endif
