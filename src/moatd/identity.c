/*
 * moatd's identity: an Ed25519 key kept in the state directory, made on
 * first start. Load reports are signed with it and hosts may pin it. The
 * state directory must be moatd's own: owned by its user, and no one
 * else's to write (a key or image put there would be trusted) or read.
 * A CA may endorse the key (moat endorse); moatd sends that endorsement with
 * every LoadResponse so hosts that pin the CA accept it.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "moatd/moatd.h"
#include "util/util.h"

/* Make a new key and store it at path (mode 0600, never over an existing file). */
static int make_identity(moatd *d, const char *path)
{
	EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	FILE *f;
	int fd;

	if (!kc || EVP_PKEY_keygen_init(kc) <= 0 || EVP_PKEY_keygen(kc, &d->key) <= 0) {
		EVP_PKEY_CTX_free(kc);
		moatd_log(MOATD_LOG_ERROR, "cannot generate an Ed25519 key");
		return -1;
	}
	EVP_PKEY_CTX_free(kc);
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	f = fd >= 0 ? fdopen(fd, "w") : NULL;
	if (!f || !PEM_write_PrivateKey(f, d->key, NULL, NULL, 0, NULL, NULL)) {
		moatd_log(MOATD_LOG_ERROR, "cannot write %s: %s", path, strerror(errno));
		if (f)
			fclose(f);
		else if (fd >= 0)
			close(fd);
		return -1;
	}
	fclose(f);
	moatd_log(MOATD_LOG_INFO, "made a new identity key in %s", path);
	return 0;
}

/*
 * Make the state directory, or check an existing one: refused when it is
 * not moatd's user's or others may write it; made 0700 (saying so) when
 * others may only read or search it. Returns 0 or -1 (logged).
 */
static int state_dir_check(const char *dir)
{
	struct stat st;

	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		moatd_log(MOATD_LOG_ERROR, "cannot create state directory %s: %s", dir, strerror(errno));
		return -1;
	}
	if (stat(dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		moatd_log(MOATD_LOG_ERROR, "state directory %s is not a directory", dir);
		return -1;
	}
	if (st.st_uid != geteuid()) {
		moatd_log(MOATD_LOG_ERROR,
		          "state directory %s belongs to uid %u, not to moatd's user (uid %u); it holds the "
		          "identity key: use a directory of moatd's own (--state-dir)",
		          dir, (unsigned int)st.st_uid, (unsigned int)geteuid());
		return -1;
	}
	if (st.st_mode & 022) {
		moatd_log(
		    MOATD_LOG_ERROR,
		    "state directory %s is writable by others (mode %03o), so its identity key and images "
		    "cannot be trusted; check its contents, then chmod 700 it (or use a new --state-dir)",
		    dir, (unsigned int)(st.st_mode & 0777));
		return -1;
	}
	if (st.st_mode & 077) {
		if (chmod(dir, 0700) < 0) {
			moatd_log(MOATD_LOG_ERROR, "state directory %s is open to others (mode %03o): %s",
			          dir, (unsigned int)(st.st_mode & 0777), strerror(errno));
			return -1;
		}
		moatd_log(MOATD_LOG_WARN,
		          "state directory %s was open to others (mode %03o); made it 0700 (it holds the "
		          "identity key)",
		          dir, (unsigned int)(st.st_mode & 0777));
	}
	return 0;
}

int moatd_identity_load(moatd *d)
{
	char path[4200];
	size_t n = 32;
	FILE *f;

	if (state_dir_check(d->cfg.state_dir) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/identity.pem", d->cfg.state_dir);
	f = fopen(path, "r");
	if (f) {
		d->key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
		fclose(f);
		if (!d->key || EVP_PKEY_get_id(d->key) != EVP_PKEY_ED25519) {
			moatd_log(MOATD_LOG_ERROR, "%s is not an Ed25519 private key", path);
			return -1;
		}
	} else if (make_identity(d, path) < 0) {
		return -1;
	}
	if (EVP_PKEY_get_raw_public_key(d->key, d->public_key, &n) <= 0 || n != 32)
		return -1;
	return 0;
}

int moatd_sign(moatd *d, uint8_t sig[64], const uint8_t *data, size_t len)
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	size_t n = 64;
	int ok;

	ok = c && EVP_DigestSignInit(c, NULL, NULL, NULL, d->key) > 0 &&
	     EVP_DigestSign(c, sig, &n, data, len) > 0;
	EVP_MD_CTX_free(c);
	return ok && n == 64 ? 0 : -1;
}

int moatd_endorsement_load(moatd *d)
{
	const char *path = d->cfg.endorsement;
	char text[160];
	size_t n;
	FILE *f;

	if (!path)
		return 0;
	if (!(f = fopen(path, "r"))) {
		moatd_log(MOATD_LOG_ERROR, "cannot read the identity endorsement %s: %s", path,
		          strerror(errno));
		return -1;
	}
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	/* The file is moat endorse's output: the signature in hex, perhaps with a newline. */
	while (n && isspace((unsigned char)text[n - 1]))
		n--;
	text[n] = '\0';
	if (n != 2 * sizeof(d->endorsement) ||
	    moat__unhex(d->endorsement, sizeof(d->endorsement), text) < 0) {
		moatd_log(
		    MOATD_LOG_ERROR,
		    "%s is not an identity endorsement: it must hold a 64-byte Ed25519 signature as %zu "
		    "hex digits, as `moat endorse` writes it",
		    path, 2 * sizeof(d->endorsement));
		return -1;
	}
	d->has_endorsement = 1;
	return 0;
}
