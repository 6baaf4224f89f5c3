/*
 * moatd: the target server. It hosts enclaves for remote hosts through the
 * public Moat API (each session's enclave runs in a local backend) and
 * serves the moat.v1.Target gRPC service (proto/moat/v1/target.proto).
 */
#ifndef MOAT_MOATD_H
#define MOAT_MOATD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#include "rpc/rpc.h"

typedef struct moatd_config {
	const char *listen;
	const char *tls_cert, *tls_key, *tls_client_ca;
	const char *enclave_dir;
	const char *state_dir;
	const char *ready_file;
	const char *backend;
	int allow_upload;
	unsigned int max_sessions;
	unsigned int max_threads;
	size_t max_message;
	size_t max_image;
	unsigned int grace_ms;
	unsigned int shutdown_s;
	int parent_fd;
	int log_level; /* 0 error, 1 warn, 2 info, 3 debug */
} moatd_config;

typedef struct moatd {
	moatd_config cfg;
	EVP_PKEY *key;
	uint8_t public_key[32];
	volatile int stop;
} moatd;

enum { MOATD_LOG_ERROR, MOATD_LOG_WARN, MOATD_LOG_INFO, MOATD_LOG_DEBUG };

void moatd_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
extern int moatd_log_level;

/* The service (target.c). */
void moatd_target_init(moatd *d);
void moatd_handle_call(void *ctx, moat_rpc_call *call);
void moatd_tick(void *ctx);
/*
 * moatd stops: end the enclaves of sessions with calls still running, so
 * that every handler thread returns (before the server waits for them).
 */
void moatd_target_stopping(moatd *d);
/* Destroy every session that is left (at shutdown, after all handlers ended). */
void moatd_target_shutdown(moatd *d);
/* Counters for logs and tests. */
unsigned int moatd_session_count(void);

/* Identity key (main.c). */
int moatd_sign(moatd *d, uint8_t sig[64], const uint8_t *data, size_t len);

#endif
