/*
 * The remote backend's session set-up: upload the image (or name one the
 * target has), Load it, check the signed load report; and the lease
 * watcher that keeps an idle session's connection serviced.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "backends/remote/agent.h"
#include "codec/protocol.h"
#include "core/internal.h"
#include "moat/v1/target.pb-c.h"

/* Well under the smallest message limit moatd accepts (64 KiB). */
#define UPLOAD_CHUNK    (32u << 10)
#define LOAD_TIMEOUT_MS 60000u

/*
 * The lease watcher polls the connection a few times per keepalive period
 * without blocking in gRPC: something must read keepalive acks while no
 * host thread calls (else the keepalive watchdog closes an idle
 * connection), and it notices a lost target while idle. It never waits
 * inside gRPC, so it never becomes the poller through which a calling
 * thread's reply would be handed over (which cost ~15 us per call).
 */
void *moat__remote_watch_lease(void *arg)
{
	remote_backend *r = arg;
	moat_rpc_status st;
	struct timespec until;
	unsigned int period = r->keepalive_ms / 4;

	if (period < 20)
		period = 20;
	if (period > 1000)
		period = 1000;
	pthread_mutex_lock(&r->watch_lock);
	while (!atomic_load(&r->closing)) {
		pthread_mutex_unlock(&r->watch_lock);
		if (moat__rpc_watch(r->lease, &st) != 0) {
			if (!atomic_load(&r->closing))
				moat__remote_mark_dead(r, MOAT_ETRANSPORT);
			pthread_mutex_lock(&r->watch_lock);
			break;
		}
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_nsec += (long)period * 1000000L;
		until.tv_sec += until.tv_nsec / 1000000000L;
		until.tv_nsec %= 1000000000L;
		pthread_mutex_lock(&r->watch_lock);
		if (!atomic_load(&r->closing))
			pthread_cond_timedwait(&r->watch_wake, &r->watch_lock, &until);
	}
	pthread_mutex_unlock(&r->watch_lock);
	return NULL;
}

static int upload(remote_backend *r, const uint8_t *image, size_t len, const uint8_t sha[32])
{
	Moat__V1__UploadChunk c = MOAT__V1__UPLOAD_CHUNK__INIT;
	moat_rpc_call *call = NULL;
	moat_rpc_status st;
	uint8_t *buf = NULL;
	size_t off = 0, n;
	int rc;

	if ((rc = moat__rpc_stream_open(&call, r->ch, "/moat.v1.Target/Upload", NULL)) < 0)
		return rc;
	do {
		size_t chunk = len - off < UPLOAD_CHUNK ? len - off : UPLOAD_CHUNK;

		moat__v1__upload_chunk__init(&c);
		if (off == 0) {
			c.sha256.data = (uint8_t *)sha;
			c.sha256.len = 32;
			c.total_size = len;
		}
		c.data.data = (uint8_t *)image + off;
		c.data.len = chunk;
		n = moat__v1__upload_chunk__get_packed_size(&c);
		buf = malloc(n + 1);
		if (!buf) {
			rc = moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
			goto out;
		}
		moat__v1__upload_chunk__pack(&c, buf);
		rc = moat__rpc_exchange(call, buf, n, NULL, NULL, LOAD_TIMEOUT_MS, &st);
		free(buf);
		buf = NULL;
		if (rc != 0)
			break; /* the target ended the upload; its status says why */
		off += chunk;
	} while (off < len);
	rc = moat__rpc_stream_finish(call, &buf, &n, LOAD_TIMEOUT_MS, &st);
	if (rc != MOAT_RPC_OK) {
		rc = rc < 0 ? rc : moat__remote_status_error(r, &st, "image upload");
		goto out;
	}
	rc = 0;
out:
	free(buf);
	moat__rpc_call_free(call);
	return rc;
}

/* Check the signed load report against what the host asked for and what the target answered. */
static int verify_report(const Moat__V1__LoadResponse *resp, const uint8_t nonce[32])
{
	Moat__V1__LoadReport *rep = NULL;
	EVP_PKEY *key = NULL;
	EVP_MD_CTX *c = NULL;
	int ok = 0;

	if (resp->target_key.len != 32 || resp->report_signature.len != 64 || resp->measurement.len != 32)
		goto out;
	key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, resp->target_key.data, 32);
	c = EVP_MD_CTX_new();
	if (!key || !c || EVP_DigestVerifyInit(c, NULL, NULL, NULL, key) <= 0 ||
	    EVP_DigestVerify(c, resp->report_signature.data, 64, resp->report.data, resp->report.len) != 1)
		goto out;
	rep = moat__v1__load_report__unpack(NULL, resp->report.len, resp->report.data);
	if (!rep || !rep->format || strcmp(rep->format, MOAT_REPORT_FORMAT) != 0)
		goto out;
	ok = rep->nonce.len == 32 && memcmp(rep->nonce.data, nonce, 32) == 0 && rep->measurement.len == 32 &&
	     memcmp(rep->measurement.data, resp->measurement.data, 32) == 0 && rep->target_key.len == 32 &&
	     memcmp(rep->target_key.data, resp->target_key.data, 32) == 0 && rep->session_id &&
	     strcmp(rep->session_id, resp->session_id) == 0;
out:
	if (rep)
		moat__v1__load_report__free_unpacked(rep, NULL);
	EVP_MD_CTX_free(c);
	EVP_PKEY_free(key);
	return ok;
}

/* Upload the image (unless by name) and send the LoadRequest; *reply is the answer. Records errors. */
static int send_load(remote_backend *r, const moat_backend_params *params, uint8_t sha[32],
                     const uint8_t nonce[32], uint8_t **reply, size_t *reply_len)
{
	const moat_load_options *o = params->options;
	Moat__V1__LoadRequest req = MOAT__V1__LOAD_REQUEST__INIT;
	moat_rpc_status st;
	uint8_t *image = NULL, *buf;
	size_t image_len = 0, n;
	int rc;

	if (!(o->flags & MOAT_LOAD_BY_NAME)) {
		if ((rc = moat__read_file(&image, &image_len, params->path)) < 0)
			return rc;
		moat__sha256(sha, image, image_len);
		rc = upload(r, image, image_len, sha);
		free(image);
		if (rc < 0)
			return rc;
		req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_SHA256;
		req.sha256.data = sha;
		req.sha256.len = 32;
	} else {
		req.image_case = MOAT__V1__LOAD_REQUEST__IMAGE_NAME;
		req.name = (char *)params->path;
	}
	req.protocol_major = MOAT_PROTOCOL_MAJOR;
	req.protocol_minor = MOAT_PROTOCOL_MINOR;
	req.config.data = (uint8_t *)o->config;
	req.config.len = o->config_len;
	if (o->expected_measurement) {
		req.expected_measurement.data = (uint8_t *)o->expected_measurement;
		req.expected_measurement.len = MOAT_MEASUREMENT_LEN;
	}
	/* One key the target can check itself; a set or a CA only the host checks (after the Load). */
	if (o->target_key && !o->n_target_keys && !o->n_target_ca_keys) {
		req.expected_target_key.data = (uint8_t *)o->target_key;
		req.expected_target_key.len = MOAT_TARGET_KEY_LEN;
	}
	req.nonce.data = (uint8_t *)nonce;
	req.nonce.len = 32;
	req.call_timeout_ms = o->call_timeout_ms;
	req.debug = (o->flags & MOAT_LOAD_DEBUG) != 0;
	/* Init runs over an Attach stream of the host's (remote.c), so its exit calls reach the host. */
	req.defer_init = 1;
	req.display_name = (char *)(o->image_name ? o->image_name : params->path);
	n = moat__v1__load_request__get_packed_size(&req);
	if (!(buf = malloc(n + 1)))
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	moat__v1__load_request__pack(&req, buf);
	rc = moat__rpc_unary(r->ch, "/moat.v1.Target/Load", NULL, buf, n, reply, reply_len, LOAD_TIMEOUT_MS,
	                     &st);
	free(buf);
	if (rc == MOAT_RPC_OK)
		return 0;
	return rc > 0 ? moat__remote_status_error(r, &st, "load") : rc;
}

/* Does sig, over the endorsement domain and key, verify under the CA key ca? */
static int endorsed_by(const uint8_t ca[32], const uint8_t sig[64], const uint8_t key[32])
{
	uint8_t msg[MOAT_ENDORSE_DOMAIN_LEN + 32];
	EVP_PKEY *pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, ca, 32);
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	int ok;

	memcpy(msg, MOAT_ENDORSE_DOMAIN, MOAT_ENDORSE_DOMAIN_LEN);
	memcpy(msg + MOAT_ENDORSE_DOMAIN_LEN, key, 32);
	ok = pk && c && EVP_DigestVerifyInit(c, NULL, NULL, NULL, pk) > 0 &&
	     EVP_DigestVerify(c, sig, 64, msg, sizeof(msg)) == 1;
	EVP_MD_CTX_free(c);
	EVP_PKEY_free(pk);
	return ok;
}

/*
 * Is the target's key one the host pinned, or endorsed by a pinned CA (or
 * did the host pin none)? Returns 0, or MOAT_EKEY recorded with the reason.
 */
static int key_pinned(const moat_load_options *o, const Moat__V1__LoadResponse *resp)
{
	const ProtobufCBinaryData *sig = &resp->target_endorsement;
	const char *reason;
	size_t i;

	if (!o->target_key && !o->n_target_keys && !o->n_target_ca_keys)
		return 0;
	if (resp->target_key.len != 32)
		return moat_error_set(MOAT_EKEY, MOAT_ORIGIN_TARGET, "the target sent no identity key");
	if (o->target_key && memcmp(resp->target_key.data, o->target_key, 32) == 0)
		return 0;
	for (i = 0; i < o->n_target_keys; i++)
		if (memcmp(resp->target_key.data, o->target_keys + 32 * i, 32) == 0)
			return 0;
	for (i = 0; sig->len == 64 && i < o->n_target_ca_keys; i++)
		if (endorsed_by(o->target_ca_keys + 32 * i, sig->data, resp->target_key.data))
			return 0;
	if (!o->n_target_ca_keys)
		return moat_error_set(MOAT_EKEY, MOAT_ORIGIN_TARGET, "the target's identity key is not %s",
		                      o->n_target_keys ? "one of the pinned ones" : "the pinned one");
	if (!sig->len)
		reason = "the target sent no endorsement (its moatd runs without --identity-endorsement)";
	else if (sig->len != 64)
		reason = "the target's endorsement is malformed (not a 64-byte signature)";
	else
		reason = "the target's endorsement is by another CA (or for another key)";
	return moat_error_set(MOAT_EKEY, MOAT_ORIGIN_TARGET,
	                      "the target's identity key is not endorsed by a pinned CA%s: %s",
	                      o->target_key || o->n_target_keys ? " nor pinned itself" : "", reason);
}

/* Check the LoadResponse against what was asked (pins, nonce, signature) and fill r. Records errors. */
static int check_answer(remote_backend *r, const moat_load_options *o, const Moat__V1__LoadResponse *resp,
                        const uint8_t sha[32], const uint8_t nonce[32])
{
	snprintf(r->session_id, sizeof(r->session_id), "%s", resp->session_id);
	moat__hex(r->token_hex, resp->session_token.data, 32);
	if (resp->protocol_major != MOAT_PROTOCOL_MAJOR)
		return moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TARGET,
		                      "the target speaks Moat protocol %u, this host %d",
		                      resp->protocol_major, MOAT_PROTOCOL_MAJOR);
	if (key_pinned(o, resp) < 0)
		return MOAT_EKEY;
	if (!verify_report(resp, nonce))
		return moat_error_set(MOAT_EKEY, MOAT_ORIGIN_TARGET,
		                      "the target's load report did not verify against its key (signature, "
		                      "nonce or measurement)");
	if ((o->expected_measurement && memcmp(resp->measurement.data, o->expected_measurement, 32) != 0) ||
	    (!(o->flags & MOAT_LOAD_BY_NAME) && memcmp(resp->measurement.data, sha, 32) != 0))
		return moat_error_set(
		    MOAT_EMEASUREMENT, MOAT_ORIGIN_TARGET,
		    "the target loaded an image whose measurement differs from the expected one");
	memcpy(r->parent.measurement, resp->measurement.data, 32);
	memcpy(r->parent.target_key, resp->target_key.data, 32);
	r->parent.has_target_key = 1;
	r->parent.isolation = MOAT_ISOLATION_REMOTE | resp->isolation;
	r->parent.debug = resp->debug;
	r->parent.debug_pid = (long)resp->debug_pid;
	r->max_message = resp->max_message_bytes;
	r->init_deferred = resp->init_deferred;
	return 0;
}

int moat__remote_load(remote_backend *r, const moat_backend_params *params)
{
	Moat__V1__LoadResponse *resp = NULL;
	uint8_t *reply = NULL, sha[32], nonce[32];
	size_t reply_len = 0;
	int rc;

	if (RAND_bytes(nonce, sizeof(nonce)) != 1)
		return moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "no randomness for the load nonce");
	if ((rc = send_load(r, params, sha, nonce, &reply, &reply_len)) < 0)
		goto out;
	resp = moat__v1__load_response__unpack(NULL, reply_len, reply);
	if (!resp || !resp->session_id || resp->session_token.len != 32 || resp->measurement.len != 32) {
		rc = moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TARGET, "malformed LoadResponse from %s",
		                    r->where);
		goto out;
	}
	rc = check_answer(r, params->options, resp, sha, nonce);
out:
	if (resp)
		moat__v1__load_response__free_unpacked(resp, NULL);
	free(reply);
	return rc;
}
