/*
 * The image store: uploaded images live in STATE_DIR/images as <sha>.so,
 * within --max-store-bytes. An upload that needs room evicts the images no
 * live session runs, least recently loaded first (Load sets an image's
 * mtime); one that cannot fit is refused. At most --max-uploads uploads are
 * received at once.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "moatd/moatd.h"

/* How long an upload waits for one of the --max-uploads slots before it is refused. */
#define UPLOAD_SLOT_WAIT_MS 2000

typedef struct stored {
	char hex[65];
	size_t size;
	struct timespec loaded; /* mtime: stored or last loaded */
	int gone;
} stored;

void moatd_store_init(moatd *d)
{
	pthread_condattr_t ca;
	char dir[4200];
	struct dirent *e;
	DIR *dp;

	pthread_mutex_init(&d->store_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&d->store_slot, &ca);
	pthread_condattr_destroy(&ca);
	d->uploads = 0;
	d->store_reserved = 0;
	/* Uploads cut short by a crash leave their temporary files: they count for nothing, remove them. */
	snprintf(dir, sizeof(dir), "%s/images", d->cfg.state_dir);
	dp = opendir(dir);
	while (dp && (e = readdir(dp)) != NULL)
		if (strncmp(e->d_name, ".upload-", 8) == 0)
			unlinkat(dirfd(dp), e->d_name, 0);
	if (dp)
		closedir(dp);
}

int moatd_store_dir(const moatd_config *cfg, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/images", cfg->state_dir);

	if (n < 0 || (size_t)n >= cap)
		return -1;
	if (mkdir(out, 0700) < 0 && errno != EEXIST) {
		moatd_log(MOATD_LOG_ERROR, "cannot create the image store %s: %s", out, strerror(errno));
		return -1;
	}
	return 0;
}

int moatd_store_upload_begin(moatd *d, moat_rpc_call *call)
{
	struct timespec until;
	int ok;

	clock_gettime(CLOCK_MONOTONIC, &until);
	until.tv_sec += UPLOAD_SLOT_WAIT_MS / 1000;
	until.tv_nsec += (UPLOAD_SLOT_WAIT_MS % 1000) * 1000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&d->store_lock);
	while (d->uploads >= d->cfg.max_uploads && !d->stop)
		if (pthread_cond_timedwait(&d->store_slot, &d->store_lock, &until) == ETIMEDOUT)
			break;
	ok = d->uploads < d->cfg.max_uploads;
	if (ok)
		d->uploads++;
	pthread_mutex_unlock(&d->store_lock);
	if (!ok)
		moatd_refuse(
		    call, MOAT_ELIMIT,
		    "this target already receives %u uploads at once (--max-uploads %u); try again later",
		    d->cfg.max_uploads, d->cfg.max_uploads);
	return ok ? 0 : -1;
}

void moatd_store_upload_end(moatd *d)
{
	pthread_mutex_lock(&d->store_lock);
	d->uploads--;
	pthread_cond_signal(&d->store_slot);
	pthread_mutex_unlock(&d->store_lock);
}

static int is_image_name(const char *name, char hex[65])
{
	size_t i;

	if (strlen(name) != 67 || strcmp(name + 64, ".so") != 0)
		return 0;
	for (i = 0; i < 64; i++)
		if (!((name[i] >= '0' && name[i] <= '9') || (name[i] >= 'a' && name[i] <= 'f')))
			return 0;
	memcpy(hex, name, 64);
	hex[64] = '\0';
	return 1;
}

/* The images in the store (*out malloc'd, *n of them). Returns 0 or -1. */
static int scan(const char *dir, stored **out, size_t *n)
{
	stored *v = NULL, *grown;
	size_t cap = 0;
	struct dirent *e;
	struct stat st;
	DIR *dp = opendir(dir);

	*out = NULL;
	*n = 0;
	if (!dp)
		return -1;
	while ((e = readdir(dp)) != NULL) {
		char hex[65];

		if (!is_image_name(e->d_name, hex) ||
		    fstatat(dirfd(dp), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (*n == cap) {
			cap = cap ? 2 * cap : 64;
			grown = realloc(v, cap * sizeof(*v));
			if (!grown) {
				free(v);
				closedir(dp);
				return -1;
			}
			v = grown;
		}
		memcpy(v[*n].hex, hex, sizeof(hex));
		v[*n].size = (size_t)st.st_size;
		v[*n].loaded = st.st_mtim;
		v[*n].gone = 0;
		(*n)++;
	}
	closedir(dp);
	*out = v;
	return 0;
}

/* Does a live session run uploaded image hex? */
static int in_use(moatd *d, const char *hex)
{
	session *s;
	int used = 0;

	pthread_mutex_lock(&d->lock);
	for (s = d->sessions; s && !used; s = s->next)
		used = strcmp(s->image, hex) == 0;
	pthread_mutex_unlock(&d->lock);
	return used;
}

static int older(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/*
 * Evict until an image of size bytes stored as hex fits beside the others
 * and the reservations of the uploads under way (store_lock held). Returns
 * 0, or MOAT_ELIMIT when it cannot fit, MOAT_EIO when the store cannot be
 * read.
 */
static int make_room(moatd *d, const char *dir, const char *hex, size_t size)
{
	size_t n, i, used = 0, max = d->cfg.max_store;
	char path[4300];
	stored *v;

	if (scan(dir, &v, &n) < 0)
		return MOAT_EIO;
	/* The image itself is replaced by its upload (same bytes): it counts once, in size. */
	for (i = 0; i < n; i++)
		if (strcmp(v[i].hex, hex) != 0)
			used += v[i].size;
	while (used + d->store_reserved + size > max) {
		stored *oldest = NULL;

		for (i = 0; i < n; i++)
			if (!v[i].gone && strcmp(v[i].hex, hex) != 0 &&
			    (!oldest || older(&v[i].loaded, &oldest->loaded)))
				oldest = &v[i];
		if (!oldest)
			break;
		oldest->gone = 1;
		if (in_use(d, oldest->hex))
			continue;
		snprintf(path, sizeof(path), "%s/%s.so", dir, oldest->hex);
		if (unlink(path) < 0 && errno != ENOENT) {
			moatd_log(MOATD_LOG_WARN, "cannot evict %s: %s", path, strerror(errno));
			continue;
		}
		used -= oldest->size;
		moatd_log(MOATD_LOG_INFO, "evicted uploaded image %s (%zu bytes, least recently loaded)",
		          oldest->hex, oldest->size);
	}
	free(v);
	return used + d->store_reserved + size > max ? MOAT_ELIMIT : 0;
}

int moatd_store_reserve(moatd *d, const char *hex, size_t size, moat_rpc_call *call)
{
	char dir[4200];
	int rc;

	if (size > d->cfg.max_store) {
		moatd_refuse(call, MOAT_ELIMIT,
		             "image of %zu bytes is larger than this target's image store of %zu bytes "
		             "(--max-store-bytes)",
		             size, d->cfg.max_store);
		return -1;
	}
	if (moatd_store_dir(&d->cfg, dir, sizeof(dir)) < 0) {
		moatd_refuse(call, MOAT_EIO, "this target cannot open its image store");
		return -1;
	}
	pthread_mutex_lock(&d->store_lock);
	rc = make_room(d, dir, hex, size);
	if (rc == 0)
		d->store_reserved += size;
	pthread_mutex_unlock(&d->store_lock);
	if (rc == MOAT_ELIMIT)
		moatd_refuse(call, MOAT_ELIMIT,
		             "no room for an image of %zu bytes in this target's image store of %zu bytes "
		             "(--max-store-bytes): the images it keeps are in use or being uploaded",
		             size, d->cfg.max_store);
	else if (rc < 0)
		moatd_refuse(call, MOAT_EIO, "this target cannot read its image store");
	return rc < 0 ? -1 : 0;
}

void moatd_store_release(moatd *d, size_t size)
{
	pthread_mutex_lock(&d->store_lock);
	d->store_reserved -= size;
	pthread_mutex_unlock(&d->store_lock);
}

int moatd_store_open(moatd *d, const char *hex)
{
	char path[4300];
	int fd;

	snprintf(path, sizeof(path), "%s/images/%s.so", d->cfg.state_dir, hex);
	pthread_mutex_lock(&d->store_lock);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	/* The load time, which eviction goes by (least recently loaded first). */
	if (fd >= 0 && futimens(fd, NULL) < 0)
		moatd_log(MOATD_LOG_WARN, "cannot set the load time of %s: %s", path, strerror(errno));
	pthread_mutex_unlock(&d->store_lock);
	return fd;
}
