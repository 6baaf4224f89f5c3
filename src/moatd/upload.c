/*
 * Upload: a host streams an enclave image in chunks; moatd stores it under
 * its SHA-256 (checked against the one the host declared) in the image
 * store (store.c), where Load finds it by hash. Refusals name what the host
 * sent, never moatd's paths (those go to moatd's log).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "moat/v1/target.pb-c.h"
#include "moatd/moatd.h"

/* A host that sends no chunk for this long gives its upload slot up. */
#define UPLOAD_IDLE_MS 10000

typedef struct upload {
	moatd *d;
	const moatd_config *cfg;
	moat_rpc_call *call;
	EVP_MD_CTX *md;
	uint8_t declared[32];
	char dir[4096], tmp[4200], hex[65];
	size_t total, expected;
	int fd;
	size_t reserved; /* bytes reserved in the store */
	int started;     /* the first chunk came */
} upload;

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
	if (moatd_store_reserve(u->d, u->hex, u->expected, u->call) < 0)
		return -1;
	u->reserved = u->expected;
	snprintf(u->tmp, sizeof(u->tmp), "%s/.upload-XXXXXX", u->dir);
	u->fd = mkstemp(u->tmp);
	if (u->fd < 0) {
		int err = errno;

		moatd_log(MOATD_LOG_ERROR, "cannot create %s: %s", u->tmp, strerror(err));
		u->tmp[0] = '\0';
		moatd_refuse(u->call, MOAT_EIO, "cannot store image %s: %s", u->hex, strerror(err));
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
		moatd_refuse(u->call, MOAT_EIO, "cannot store image %s: %s", u->hex, strerror(errno));
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
		int rc = moat__rpc_exchange(u->call, NULL, 0, &buf, &len, UPLOAD_IDLE_MS, &st);

		if (rc == MOAT_RPC_END && st.code == MOAT_RPC_OK)
			break;
		if (rc == MOAT_RPC_TIMEOUT) {
			/* A receive that timed out stays pending: the call can only be cancelled (when
			 * freed). */
			moatd_log(MOATD_LOG_INFO, "upload of %s: no chunk for %d s; cancelling it",
			          u->started ? u->hex : "an image", UPLOAD_IDLE_MS / 1000);
			return -1;
		}
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
	if (u->total != u->expected) {
		moatd_refuse(
		    u->call, MOAT_EMEASUREMENT,
		    "uploaded image has %zu bytes, not the %zu its first chunk declared (total_size)",
		    u->total, u->expected);
		return;
	}
	if (memcmp(got, u->declared, 32) != 0) {
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
		int err = errno;

		moatd_log(MOATD_LOG_ERROR, "cannot rename %s to %s: %s", u->tmp, final, strerror(err));
		moatd_refuse(u->call, MOAT_EIO, "cannot store image %s: %s", u->hex, strerror(err));
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
	u.d = d;
	u.cfg = &d->cfg;
	u.call = call;
	u.fd = -1;
	if (!u.cfg->allow_upload) {
		moatd_refuse(call, MOAT_EPERM,
		             "uploads are off on this target (start moatd with --allow-upload)");
		return;
	}
	if (moatd_store_upload_begin(d, call) < 0)
		return;
	if (moatd_store_dir(u.cfg, u.dir, sizeof(u.dir)) < 0) {
		moatd_refuse(call, MOAT_EIO, "this target cannot open its image store");
		moatd_store_upload_end(d);
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
	if (u.reserved)
		moatd_store_release(d, u.reserved);
	moatd_store_upload_end(d);
	EVP_MD_CTX_free(u.md);
}
