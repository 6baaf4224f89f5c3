/*
 * Loading enclave images.
 *
 * Each load dlopens a private copy of the image held in a memfd. The dynamic
 * loader shares one instance of an object among all dlopen calls that name
 * the same file, so loading one image twice from its path would make two
 * enclave handles share globals; a private copy per load gives each handle
 * its own state. The copy is also the exact bytes that were measured, so the
 * file cannot change between measurement and load, and no temporary file is
 * left behind after a crash.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "core/internal.h"

static int reserved_memfd = -1;
/* The pid that names a reserved memfd's copy (/proc/PID/fd/N) instead of "self", or 0. */
static long reserved_pid;

void moat__image_name_by_pid(long pid)
{
	reserved_pid = pid;
}

int moat__image_reserve_memfd(void)
{
	int fd = memfd_create("moat-enclave", MFD_CLOEXEC | MFD_ALLOW_SEALING), old;

	if (fd < 0)
		return -errno;
	old = __atomic_exchange_n(&reserved_memfd, fd, __ATOMIC_ACQ_REL);
	if (old >= 0)
		close(old);
	return 0;
}

void moat__sha256(uint8_t out[MOAT_MEASUREMENT_LEN], const void *data, size_t len)
{
	unsigned int n = MOAT_MEASUREMENT_LEN;

	EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

int moat__read_file(uint8_t **out, size_t *len, const char *path)
{
	struct stat st;
	uint8_t *buf = NULL;
	size_t got = 0;
	int fd, rc = 0;

	*out = NULL;
	*len = 0;
	/* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			return moat_error_set(MOAT_ENOENT, MOAT_ORIGIN_API, "%s: no such file", path);
		return moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "%s: %s", path, strerror(errno));
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		rc = moat_error_set(MOAT_EBADIMAGE, MOAT_ORIGIN_API, "%s: not a regular file", path);
		goto out;
	}
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	if (!buf) {
		rc = moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "%s: out of memory", path);
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "%s: read failed", path);
			goto out;
		}
		got += (size_t)n;
	}
	*out = buf;
	*len = got;
	buf = NULL;
out:
	free(buf);
	close(fd);
	return rc;
}

/* Write the image into img->fd (a new memfd unless one was reserved) and seal it. Records errors. */
static int image_copy(moat_image *img, const void *bytes, size_t len)
{
	size_t done = 0;

	if (img->fd < 0)
		img->fd = memfd_create("moat-enclave", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	if (img->fd < 0)
		return moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "memfd_create: %s", strerror(errno));
	while (done < len) {
		ssize_t n = write(img->fd, (const uint8_t *)bytes + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "writing the image copy: %s",
			                      strerror(errno));
		done += (size_t)n;
	}
	/* The copy is the measured bytes for good: nobody can write, grow or shrink it any more. */
	if (fcntl(img->fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) < 0)
		return moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "sealing the image copy: %s",
		                      strerror(errno));
	return 0;
}

int moat__image_open_bytes(moat_image **out, const void *bytes, size_t len, const char *what,
                           const uint8_t *pin)
{
	moat_image *img;
	const struct moat_enclave_entry *entry;
	char fdpath[64];
	int rc, sandboxed;

	*out = NULL;
	img = calloc(1, sizeof(*img));
	if (!img)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	img->fd = -1;
	moat__sha256(img->measurement, bytes, len);
	if (pin && memcmp(pin, img->measurement, MOAT_MEASUREMENT_LEN) != 0) {
		char want[2 * MOAT_MEASUREMENT_LEN + 1], got[2 * MOAT_MEASUREMENT_LEN + 1];

		moat__hex(want, pin, MOAT_MEASUREMENT_LEN);
		moat__hex(got, img->measurement, MOAT_MEASUREMENT_LEN);
		rc = moat_error_set(MOAT_EMEASUREMENT, MOAT_ORIGIN_API,
		                    "%s: measurement %s does not match the expected %s; nothing was run",
		                    what, got, want);
		goto fail;
	}
	if (len < 4 || memcmp(bytes, "\177ELF", 4) != 0) {
		rc = moat_error_set(MOAT_EBADIMAGE, MOAT_ORIGIN_API, "%s: not an ELF shared object", what);
		goto fail;
	}
	img->fd = __atomic_exchange_n(&reserved_memfd, -1, __ATOMIC_ACQ_REL);
	sandboxed = img->fd >= 0;
	if ((rc = image_copy(img, bytes, len)) < 0)
		goto fail;
	/*
	 * In the host (sim) the copy is named by this process's pid, not
	 * "self": a debugger resolves the name in its own process, where
	 * /proc/self/fd/N is some file of the debugger's (gdb then hangs reading
	 * a pipe). The proc runner's sandbox answers only /proc/self/fd/N, and
	 * in debug mode /proc/PID/fd/N with its pid as the debugger sees it.
	 */
	if (sandboxed && reserved_pid)
		snprintf(fdpath, sizeof(fdpath), "/proc/%ld/fd/%d", reserved_pid, img->fd);
	else if (sandboxed)
		snprintf(fdpath, sizeof(fdpath), "/proc/self/fd/%d", img->fd);
	else
		snprintf(fdpath, sizeof(fdpath), "/proc/%ld/fd/%d", (long)getpid(), img->fd);
	img->dl = dlopen(fdpath, RTLD_NOW | RTLD_LOCAL);
	if (!img->dl) {
		const char *why = dlerror();

		rc = moat_error_set(MOAT_EBADIMAGE, MOAT_ORIGIN_API, "%s: cannot load: %s", what,
		                    why ? why : "?");
		goto fail;
	}
	entry = dlsym(img->dl, MOAT_ENCLAVE_SYMBOL);
	if (!entry) {
		rc = moat_error_set(
		    MOAT_ENOENTRY, MOAT_ORIGIN_API,
		    "%s: no '%s' symbol: build the image with MOAT_ENCLAVE() and libmoat_enclave", what,
		    MOAT_ENCLAVE_SYMBOL);
		goto fail;
	}
	if (entry->abi_version != MOAT_ENCLAVE_ABI_VERSION || entry->size < sizeof(*entry)) {
		rc = moat_error_set(
		    MOAT_EABI, MOAT_ORIGIN_API,
		    "%s: enclave ABI version %u, this loader speaks version %u; rebuild the enclave", what,
		    entry->abi_version, MOAT_ENCLAVE_ABI_VERSION);
		goto fail;
	}
	img->entry = entry;
	*out = img;
	return 0;

fail:
	moat__image_close(img);
	return rc;
}

int moat__image_open(moat_image **out, const char *path, const uint8_t *pin)
{
	uint8_t *bytes;
	size_t len;
	int rc;

	*out = NULL;
	if ((rc = moat__read_file(&bytes, &len, path)) < 0)
		return rc;
	rc = moat__image_open_bytes(out, bytes, len, path, pin);
	free(bytes);
	return rc;
}

void moat__image_close(moat_image *image)
{
	if (!image)
		return;
	if (image->dl)
		dlclose(image->dl);
	if (image->fd >= 0)
		close(image->fd);
	free(image);
}

int moat_measure_file(uint8_t out[MOAT_MEASUREMENT_LEN], const char *path)
{
	uint8_t *bytes;
	size_t len;
	int rc;

	if (!out || !path)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "moat_measure_file: NULL argument");
	if ((rc = moat__read_file(&bytes, &len, path)) < 0)
		return rc;
	moat__sha256(out, bytes, len);
	free(bytes);
	return 0;
}
