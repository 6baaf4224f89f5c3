/*
 * Finding libmoat's helper programs (the proc runner, moatd for local
 * provisioning): one search order for all of them.
 */
#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/internal.h"

/* An install's libexec and bin directories seen from its libdir (cmake/MoatInstallDirs.cmake). */
#ifndef MOAT_LIBDIR_TO_LIBEXECDIR
#define MOAT_LIBDIR_TO_LIBEXECDIR "../libexec"
#endif
#ifndef MOAT_LIBDIR_TO_BINDIR
#define MOAT_LIBDIR_TO_BINDIR "../bin"
#endif

static int executable(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0;
}

/* Try each of dir/rels[i]/name; on success the path is in out. */
static int try_in(char *out, size_t cap, const char *dir, const char *name)
{
	static const char *const rels[] = {
	    "", "bin/", MOAT_LIBDIR_TO_LIBEXECDIR "/", MOAT_LIBDIR_TO_BINDIR "/", "../libexec/", "../bin/"};
	size_t i;

	for (i = 0; i < sizeof(rels) / sizeof(rels[0]); i++) {
		int n = snprintf(out, cap, "%s/%s%s", dir, rels[i], name);

		if (n > 0 && (size_t)n < cap && executable(out))
			return 1;
	}
	return 0;
}

/* The directory part of path into out. */
static void dir_of(char *out, size_t cap, const char *path)
{
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;

	if (n >= cap)
		n = cap - 1;
	memcpy(out, path, n);
	out[n] = '\0';
}

static int find_helper(char *out, size_t cap, const char *name, const char *env)
{
	/* Never from the environment of a set-id program. */
	const char *given = secure_getenv(env);
	char dir[PATH_MAX], exe[PATH_MAX];
	Dl_info info;
	ssize_t n;

	if (given && *given) {
		if (executable(given) && snprintf(out, cap, "%s", given) < (int)cap)
			return 0;
		return moat_error_set(MOAT_ENOBACKEND, MOAT_ORIGIN_API, "%s=%s is not an executable file",
		                      env, given);
	}
	/* Next to libmoat: the build tree's bin/, an install's ../libexec or ../bin. */
	if (dladdr((void *)moat__find_helper, &info) && info.dli_fname && strchr(info.dli_fname, '/')) {
		dir_of(dir, sizeof(dir), info.dli_fname);
		if (try_in(out, cap, dir, name))
			return 0;
	}
	/* Next to the running program. */
	n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = '\0';
		dir_of(dir, sizeof(dir), exe);
		if (try_in(out, cap, dir, name))
			return 0;
	}
	if (try_in(out, cap, MOAT_BUILD_BINDIR, name) || try_in(out, cap, MOAT_LIBEXECDIR, name) ||
	    try_in(out, cap, MOAT_BINDIR, name))
		return 0;
	return moat_error_set(MOAT_ENOBACKEND, MOAT_ORIGIN_API,
	                      "cannot find %s (looked next to libmoat, next to this program, in %s, %s "
	                      "and %s); set %s",
	                      name, MOAT_BUILD_BINDIR, MOAT_LIBEXECDIR, MOAT_BINDIR, env);
}

int moat__find_helper(char *out, size_t cap, const char *name, const char *env)
{
	int rc = find_helper(out, cap, name, env);

	if (rc == 0)
		moat__log(MOAT_LOG_DEBUG, "using %s", out);
	return rc;
}
