/*
 * moatd's start-up conventions: where its state lives when --state-dir is
 * not given, the URI a host uses to reach it, and the warnings about a
 * configuration that can serve nothing.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moatd/moatd.h"

/* Make the missing parents of path (mode 0700, as the XDG base directories are made). */
static void make_parents(const char *path)
{
	char p[PATH_MAX];
	char *s;

	snprintf(p, sizeof(p), "%s", path);
	for (s = strchr(p + 1, '/'); s; s = strchr(s + 1, '/')) {
		*s = '\0';
		if (mkdir(p, 0700) < 0 && errno != EEXIST)
			return; /* the state directory's own check reports what is wrong */
		*s = '/';
	}
}

int moatd_state_dir_default(moatd_config *c)
{
	/* A reload computes it again: the same text, written only when it differs. */
	static char dir[PATH_MAX];
	char fresh[PATH_MAX];
	const char *v = getenv("STATE_DIRECTORY");
	int n;

	if (v && *v) {
		/* systemd's StateDirectory=: a colon-separated list, moatd's is the first. */
		const char *colon = strchr(v, ':');

		n = snprintf(fresh, sizeof(fresh), "%.*s", colon ? (int)(colon - v) : (int)strlen(v), v);
	} else if (geteuid() == 0) {
		n = snprintf(fresh, sizeof(fresh), "%s", MOATD_SYSTEM_STATE_DIR);
	} else if ((v = getenv("XDG_STATE_HOME")) && v[0] == '/') {
		n = snprintf(fresh, sizeof(fresh), "%s/moatd", v);
	} else if ((v = getenv("HOME")) && v[0] == '/') {
		n = snprintf(fresh, sizeof(fresh), "%s/.local/state/moatd", v);
	} else {
		fprintf(stderr, "moatd: give --state-dir (no $STATE_DIRECTORY, $XDG_STATE_HOME or $HOME to "
		                "find a default)\n");
		return -1;
	}
	if (n < 0 || (size_t)n >= sizeof(fresh)) {
		fprintf(stderr, "moatd: the default state directory's path is too long; give --state-dir\n");
		return -1;
	}
	if (strcmp(fresh, dir) != 0) {
		make_parents(fresh);
		memcpy(dir, fresh, (size_t)n + 1);
	}
	c->state_dir = dir;
	return 0;
}

/* Is host one of the addresses that mean every interface? */
static int wildcard(const char *host, size_t n)
{
	static const char *const any[] = {"", "0.0.0.0", "[::]", "::", "*"};
	size_t i;

	for (i = 0; i < sizeof(any) / sizeof(any[0]); i++)
		if (strlen(any[i]) == n && strncmp(host, any[i], n) == 0)
			return 1;
	return 0;
}

void moatd_listen_uri(const moatd_config *c, const char *addr, char *out, size_t cap)
{
	const char *colon, *host = addr;
	char name[256];
	size_t n;

	if (strncmp(addr, "unix:", 5) == 0 || strncmp(addr, "unix-abstract:", 14) == 0) {
		snprintf(out, cap, "%s", addr);
		return;
	}
	if (strncmp(host, "ipv4:", 5) == 0 || strncmp(host, "ipv6:", 5) == 0)
		host += 5;
	colon = strrchr(host, ':');
	n = colon ? (size_t)(colon - host) : strlen(host);
	/* A host on another machine cannot dial 0.0.0.0: name this machine instead. */
	if (wildcard(host, n) && gethostname(name, sizeof(name)) == 0) {
		name[sizeof(name) - 1] = '\0';
		snprintf(out, cap, "%s://%s%s", c->tls_cert ? "grpcs" : "grpc", name, colon ? colon : "");
		return;
	}
	snprintf(out, cap, "%s://%s", c->tls_cert ? "grpcs" : "grpc", host);
}

void moatd_startup_warnings(const moatd_config *c)
{
	struct stat st;
	int bad = 0;

	if (c->enclave_dir && stat(c->enclave_dir, &st) < 0)
		bad = errno;
	else if (c->enclave_dir && !S_ISDIR(st.st_mode))
		bad = ENOTDIR;
	if (!c->enclave_dir && !c->allow_upload) {
		moatd_log(MOATD_LOG_WARN,
		          "nothing can be served: there is no --enclave-dir and uploads are off "
		          "(--allow-upload), so every Load is refused");
	} else if (bad) {
		moatd_log(MOATD_LOG_WARN, "--enclave-dir %s: %s; %s", c->enclave_dir, strerror(bad),
		          c->allow_upload ? "only uploaded images can be loaded" : "nothing can be served");
	} else if (c->enclave_dir && access(c->enclave_dir, R_OK | X_OK) < 0) {
		moatd_log(MOATD_LOG_WARN, "--enclave-dir %s cannot be read by moatd's user: %s",
		          c->enclave_dir, strerror(errno));
	}
}
