/*
 * Upload: a host streams an enclave image in chunks; moatd stores it under
 * its SHA-256 (checked against the one the host declared) in the state
 * directory, where Load finds it by hash.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moat/v1/target.pb-c.h"
#include "moatd/moatd.h"

typedef struct upload {
	const moatd_config *cfg;
	moat_rpc_call *call;
	EVP_MD_CTX *md;
	uint8_t declared[32];
	char dir[4096], tmp[4200], hex[65];
	size_t total, expected;
	int fd;
	int started; /* the first chunk came */
} upload;

static int images_dir(const moatd_config *cfg, char *out, size_t cap)
{
	int n = snprintf(out, cap, "%s/images", cfg->state_dir);

	if (n < 0 || (size_t)n >= cap)
		return -1;
	if (mkdir(out, 0700) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

/* The first chunk declares the hash and size: check them and open the temporary file. */
static int upload_start(upload *u, const Moat__V1__UploadChunk *chunk)
{
	u->started = 1;
	if (chunk->sha256.len != 32) {
		moatd_refuse(u->call, MOAT_EPROTO, "the first UploadChunk must name the image's SHA-256");
		return -1;
	}
	memcpy(u->declared, chunk->sha256.data, 32);
	u->expected = (size_t)chunk->total_size;
	if (u->expected > u->cfg->max_image) {
		moatd_refuse(
		    u->call, MOAT_ELIMIT,
		    "image of %zu bytes exceeds this target's limit of %zu bytes (--max-image-bytes)",
		    u->expected, u->cfg->max_image);
		return -1;
	}
	moat__hex(u->hex, u->declared, 32);
	snprintf(u->tmp, sizeof(u->tmp), "%s/.upload-XXXXXX", u->dir);
	u->fd = mkstemp(u->tmp);
	if (u->fd < 0) {
		u->tmp[0] = '\0';
		moatd_refuse(u->call, MOAT_EIO, "cannot create a file in %s: %s", u->dir, strerror(errno));
		return -1;
	}
	return 0;
}

static int upload_chunk(upload *u, const Moat__V1__UploadChunk *chunk)
{
	if (!u->started && upload_start(u, chunk) < 0)
		return -1;
	if (u->total + chunk->data.len > u->expected || u->total + chunk->data.len > u->cfg->max_image) {
		moatd_refuse(u->call, MOAT_ELIMIT,
		             "upload is longer than its declared size or the --max-image-bytes limit");
		return -1;
	}
	EVP_DigestUpdate(u->md, chunk->data.data, chunk->data.len);
	if (chunk->data.len && write(u->fd, chunk->data.data, chunk->data.len) != (ssize_t)chunk->data.len) {
		moatd_refuse(u->call, MOAT_EIO, "cannot store the image: %s", strerror(errno));
		return -1;
	}
	u->total += chunk->data.len;
	return 0;
}

/* Take chunks until the host half-closes. Returns 0, or -1 when refused or the host went away. */
static int upload_receive(upload *u)
{
	for (;;) {
		Moat__V1__UploadChunk *chunk;
		moat_rpc_status st;
		uint8_t *buf = NULL;
		size_t len;
		int rc = moat__rpc_recv(u->call, &buf, &len, &st);

		if (rc == MOAT_RPC_END && st.code == MOAT_RPC_OK)
			break;
		if (rc != 0)
			return -1; /* the host went away */
		chunk = moat__v1__upload_chunk__unpack(NULL, len, buf);
		free(buf);
		if (!chunk) {
			moatd_refuse(u->call, MOAT_EPROTO, "malformed UploadChunk");
			return -1;
		}
		rc = upload_chunk(u, chunk);
		moat__v1__upload_chunk__free_unpacked(chunk, NULL);
		if (rc < 0)
			return -1;
	}
	if (!u->started) {
		moatd_refuse(u->call, MOAT_EPROTO, "empty upload");
		return -1;
	}
	return 0;
}

/* Check the hash, move the image in place under it and answer. */
static void upload_store(upload *u)
{
	Moat__V1__UploadResponse resp = MOAT__V1__UPLOAD_RESPONSE__INIT;
	char final[4200], ghex[65];
	uint8_t got[32], *reply;
	unsigned int mdlen = 32;
	size_t len;

	EVP_DigestFinal_ex(u->md, got, &mdlen);
	if (u->total != u->expected || memcmp(got, u->declared, 32) != 0) {
		moat__hex(ghex, got, 32);
		moatd_refuse(u->call, MOAT_EMEASUREMENT,
		             "uploaded image (%zu bytes) has SHA-256 %s, not the declared %s", u->total, ghex,
		             u->hex);
		return;
	}
	close(u->fd);
	u->fd = -1;
	snprintf(final, sizeof(final), "%s/%s.so", u->dir, u->hex);
	if (rename(u->tmp, final) < 0) {
		moatd_refuse(u->call, MOAT_EIO, "cannot store the image: %s", strerror(errno));
		return;
	}
	u->tmp[0] = '\0';
	moatd_log(MOATD_LOG_INFO, "stored uploaded image %s (%zu bytes)", u->hex, u->total);
	resp.sha256.data = got;
	resp.sha256.len = 32;
	resp.size = u->total;
	reply = malloc(moat__v1__upload_response__get_packed_size(&resp) + 1);
	if (!reply) {
		moatd_refuse(u->call, MOAT_ENOMEM, "out of memory");
		return;
	}
	len = moat__v1__upload_response__pack(&resp, reply);
	moat__rpc_finish(u->call, reply, len, MOAT_RPC_OK, 0, NULL);
	free(reply);
}

void moatd_handle_upload(moatd *d, moat_rpc_call *call)
{
	upload u;

	memset(&u, 0, sizeof(u));
	u.cfg = &d->cfg;
	u.call = call;
	u.fd = -1;
	if (!u.cfg->allow_upload) {
		moatd_refuse(call, MOAT_EPERM,
		             "uploads are off on this target (start moatd with --allow-upload)");
		return;
	}
	if (images_dir(u.cfg, u.dir, sizeof(u.dir)) < 0) {
		moatd_refuse(call, MOAT_EIO, "cannot create the image store under %s", u.cfg->state_dir);
		return;
	}
	u.md = EVP_MD_CTX_new();
	if (!u.md || !EVP_DigestInit_ex(u.md, EVP_sha256(), NULL))
		moatd_refuse(call, MOAT_ENOMEM, "out of memory");
	else if (upload_receive(&u) == 0)
		upload_store(&u);
	if (u.fd >= 0)
		close(u.fd);
	if (u.tmp[0])
		unlink(u.tmp);
	EVP_MD_CTX_free(u.md);
}
