/*
 * Local provisioning: the "local" backend starts a private moatd for each
 * enclave handle, on a unix socket inside a fresh 0700 directory, and stops
 * it at destroy. util/launch.c starts it and waits for its ready file (in
 * the same directory) to name the socket.
 *
 * moatd learns that its parent died through a pipe, not PR_SET_PDEATHSIG:
 * the death signal fires when the *thread* that forked exits, so a host
 * that loads from a short-lived thread would lose its enclave. The pipe's
 * write end lives in the host process (close-on-exec, so no other child
 * holds it) and closes only when the process is gone or destroys the handle.
 *
 * The directory is named moat-<host pid>-XXXXXX. moatd removes it when its
 * host dies; if moatd could not (it was killed too), the next local start
 * of this user removes it: its host is dead and no moatd listens in it.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <dirent.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "backends/remote/remote.h"
#include "core/internal.h"
#include "util/launch.h"

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

/* Does a server listen on this unix socket (a moatd still alive, even if frozen)? */
static int listening(const char *path)
{
	struct sockaddr_un a;
	int fd, ok;

	if (strlen(path) >= sizeof(a.sun_path))
		return 1; /* cannot tell: leave it alone */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return 1;
	memset(&a, 0, sizeof(a));
	a.sun_family = AF_UNIX;
	memcpy(a.sun_path, path, strlen(path) + 1);
	ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0 || errno == EAGAIN || errno == EINPROGRESS;
	close(fd);
	return ok;
}

/*
 * Remove private directories left in tmp by local hosts of this user that
 * died with their moatd (a crash, SIGKILL of both): moat-<pid>-XXXXXX, ours
 * (uid, 0700), its pid gone, and no moatd listening in it. They hold a
 * moatd identity key and uploaded images.
 */
static void remove_stale_dirs(const char *tmp)
{
	struct dirent *d;
	DIR *dir = opendir(tmp);

	if (!dir)
		return;
	while ((d = readdir(dir)) != NULL) {
		char path[PATH_MAX], sock[PATH_MAX + 16];
		struct stat st;
		long pid;
		char *end;

		if (strncmp(d->d_name, "moat-", 5) != 0)
			continue;
		errno = 0;
		pid = strtol(d->d_name + 5, &end, 10);
		if (errno || end == d->d_name + 5 || pid <= 0 || pid > INT_MAX || *end != '-' ||
		    strlen(end + 1) != 6 || pid == (long)getpid())
			continue;
		if (snprintf(path, sizeof(path), "%s/%s", tmp, d->d_name) >= (int)sizeof(path) ||
		    lstat(path, &st) != 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
		    (st.st_mode & 07777) != 0700)
			continue;
		if (kill((pid_t)pid, 0) == 0 || errno != ESRCH)
			continue; /* its host still runs (or is not ours to judge) */
		snprintf(sock, sizeof(sock), "%s/moatd.sock", path);
		if (access(sock, F_OK) == 0 && listening(sock))
			continue;
		nftw(path, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
	}
	closedir(dir);
}

/* Report why the launcher could not bring moatd up, in libmoat's terms. */
static int start_error(const char *moatd, const moat_launch *l, unsigned int timeout_ms)
{
	int status = l->status;

	if (errno == ETIMEDOUT)
		return moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		                      "the private moatd (%s) did not become ready within %u ms", moatd,
		                      timeout_ms);
	if (errno == ECHILD)
		return moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		                      "the private moatd (%s) exited during start-up (status %d); see "
		                      "its messages above",
		                      moatd,
		                      WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
	return moat_error_set(MOAT_ENOBACKEND, MOAT_ORIGIN_API, "cannot start %s: %s", moatd,
	                      strerror(errno));
}

int moat__local_target_start(moat_local_target *lt, unsigned int timeout_ms)
{
	char moatd[PATH_MAX], listen[320], state[300], ready[300], fdarg[16];
	const char *argv[16];
	const char *tmp = getenv("TMPDIR");
	moat_launch_opts o = MOAT_LAUNCH_OPTS_INIT;
	moat_launch l;
	int parent[2] = {-1, -1}, a = 0, rc;

	memset(lt, 0, sizeof(*lt));
	lt->pid = -1;
	lt->parent_fd = -1;
	if ((rc = moat__find_helper(moatd, sizeof(moatd), "moatd", "MOAT_MOATD")) < 0)
		return rc;
	if (!tmp || !*tmp || strlen(tmp) > 100)
		tmp = "/tmp";
	remove_stale_dirs(tmp);
	snprintf(lt->dir, sizeof(lt->dir), "%s/moat-%d-XXXXXX", tmp, (int)getpid());
	if (!mkdtemp(lt->dir)) {
		lt->dir[0] = '\0';
		return moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "cannot make a private directory in %s: %s",
		                      tmp, strerror(errno));
	}
	snprintf(lt->target, sizeof(lt->target), "unix:%s/moatd.sock", lt->dir);
	snprintf(listen, sizeof(listen), "%s", lt->target);
	snprintf(state, sizeof(state), "%s/state", lt->dir);
	snprintf(ready, sizeof(ready), "%s/ready", lt->dir);
	if (pipe2(parent, O_CLOEXEC) < 0) {
		rc = moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "pipe: %s", strerror(errno));
		goto fail;
	}
	snprintf(fdarg, sizeof(fdarg), "%d", parent[0]);
	argv[a++] = moatd;
	argv[a++] = "--listen";
	argv[a++] = listen;
	argv[a++] = "--state-dir";
	argv[a++] = state;
	argv[a++] = "--allow-upload";
	/* Only this process can reach its private moatd: debug mode is the application's own choice. */
	argv[a++] = "--allow-debug";
	argv[a++] = "--parent-fd";
	argv[a++] = fdarg;
	argv[a++] = "--session-grace-ms";
	argv[a++] = "0";
	argv[a++] = "--log-level";
	argv[a++] = getenv("MOAT_MOATD_LOG") ? getenv("MOAT_MOATD_LOG") : "error";
	argv[a] = NULL;

	/* moatd keeps only the pipe's read end; no death signal (see the top of this file). */
	o.argv = argv;
	o.ready_file = ready;
	o.keep_fd = parent[0];
	o.timeout_ms = timeout_ms;
	if (moat__launch_start(&l, &o) < 0) {
		rc = start_error(moatd, &l, timeout_ms);
		goto fail;
	}
	lt->pid = l.pid;
	close(parent[0]);
	lt->parent_fd = parent[1];
	return 0;

fail:
	if (parent[0] >= 0)
		close(parent[0]);
	if (parent[1] >= 0)
		close(parent[1]);
	moat__local_target_stop(lt);
	return rc;
}

void moat__local_target_stop(moat_local_target *lt)
{
	if (lt->parent_fd >= 0) {
		close(lt->parent_fd);
		lt->parent_fd = -1;
	}
	/* moatd destroys what is left and exits on SIGTERM; give it a moment, then insist. */
	moat__launch_stop(lt->pid, 5000);
	lt->pid = -1;
	if (lt->dir[0]) {
		nftw(lt->dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
		lt->dir[0] = '\0';
	}
}
