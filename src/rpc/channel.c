/*
 * Client channels: credentials (plain, TLS, mutual TLS), keepalive and
 * connection arguments. Also the PEM and message-size helpers the server
 * shares.
 */
#include "rpc/rpc_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>

#include <moat/sys/backend.h>

/*
 * Message size limits, the same for channels and the server: receive up to
 * max_receive_bytes (<= 0 or too large for gRPC: no limit), send anything
 * (the peer enforces its own limit and says so). Returns the new count.
 */
int moat__rpc_message_size_args(grpc_arg *args, int n, long max_receive_bytes)
{
	int max = max_receive_bytes > 0 && max_receive_bytes < 0x7fffffff ? (int)max_receive_bytes : -1;

	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, {.integer = max}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, {.integer = -1}};
	return n;
}

/* Read a PEM file into a NUL-terminated string. */
int moat__rpc_read_pem(char **out, const char *path, const char *what)
{
	FILE *f;
	char *buf = NULL;
	size_t len = 0, cap = 0;

	*out = NULL;
	f = fopen(path, "rb");
	if (!f)
		return moat_error_set(MOAT_EIO, MOAT_ORIGIN_API, "cannot read %s '%s': %s", what, path,
		                      strerror(errno));
	for (;;) {
		size_t got;

		if (len + 4096 + 1 > cap) {
			char *nb = realloc(buf, cap = cap ? cap * 2 : 8192);

			if (!nb) {
				free(buf);
				fclose(f);
				return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
			}
			buf = nb;
		}
		got = fread(buf + len, 1, cap - len - 1, f);
		len += got;
		if (got == 0)
			break;
	}
	fclose(f);
	buf[len] = '\0';
	*out = buf;
	return 0;
}

/* ---- channels ---- */

/* The channel's arguments into args (at least 14); returns how many. */
static int channel_args(grpc_arg *args, const moat_rpc_channel_opts *o, char *service_config)
{
	unsigned int ka = o->keepalive_ms ? o->keepalive_ms : 1000;
	unsigned int connect_ms = o->connect_timeout_ms ? o->connect_timeout_ms : 5000;
	int n = 0;

	/* Keepalive pings find a dead or frozen target while a call waits. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIME_MS, {.integer = (int)ka}};
	/* Twice the period to answer: a busy machine may be slow to read a ping's ack. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_KEEPALIVE_TIMEOUT_MS, {.integer = (int)(2 * ka)}};
	/* Without this the client stops pinging after two pings without data. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, {.integer = 0}};
	n = moat__rpc_message_size_args(args, n, o->max_receive_bytes);
	/* Each session has its own connection: calls of one session never queue behind another's. */
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, "grpc.use_local_subchannel_pool", {.integer = 1}};
	args[n++] = (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_ENABLE_RETRIES, {.integer = 0}};
	/*
	 * Bound every new connection, TLS and HTTP/2 handshakes included: a
	 * frozen target accepts TCP but never finishes the handshake, and gRPC
	 * waits 20 s by default. In gRPC core (1.51 subchannel.cc) an attempt's
	 * deadline is max(next backoff time, now + GRPC_ARG_MIN_RECONNECT_BACKOFF_MS),
	 * so the backoff is capped as well to keep later attempts bounded too.
	 */
	args[n++] =
	    (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, {.integer = (int)connect_ms}};
	args[n++] =
	    (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, {.integer = (int)connect_ms}};
	if (o->tls && o->server_name)
		args[n++] = (grpc_arg){
		    GRPC_ARG_STRING, GRPC_SSL_TARGET_NAME_OVERRIDE_ARG, {.string = (char *)o->server_name}};
	if (service_config) {
		args[n++] = (grpc_arg){GRPC_ARG_STRING, GRPC_ARG_SERVICE_CONFIG, {.string = service_config}};
		/* A name's DNS TXT record (_grpc_config.NAME) must not replace the balancing policy. */
		args[n++] =
		    (grpc_arg){GRPC_ARG_INTEGER, GRPC_ARG_SERVICE_CONFIG_DISABLE_RESOLUTION, {.integer = 1}};
	}
	return n;
}

/* TLS or plaintext credentials for o; NULL with the error recorded. */
static grpc_channel_credentials *channel_creds(const moat_rpc_channel_opts *o)
{
	grpc_channel_credentials *creds = NULL;
	grpc_ssl_pem_key_cert_pair pair;
	char *ca_pem = NULL, *cert_pem = NULL, *key_pem = NULL;

	if (!o->tls)
		return grpc_insecure_credentials_create();
	if (o->ca_file && moat__rpc_read_pem(&ca_pem, o->ca_file, "TLS CA file") < 0)
		goto out;
	if ((o->cert_file == NULL) != (o->key_file == NULL)) {
		moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
		               "mutual TLS needs both tls_cert_file and tls_key_file");
		goto out;
	}
	if (o->cert_file) {
		if (moat__rpc_read_pem(&cert_pem, o->cert_file, "TLS certificate") < 0 ||
		    moat__rpc_read_pem(&key_pem, o->key_file, "TLS key") < 0)
			goto out;
		pair.private_key = key_pem;
		pair.cert_chain = cert_pem;
	}
	creds = grpc_ssl_credentials_create(ca_pem, o->cert_file ? &pair : NULL, NULL, NULL);
	if (!creds)
		moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		               "cannot create gRPC credentials for %s", o->target);
out:
	free(ca_pem);
	free(cert_pem);
	if (key_pem) {
		memset(key_pem, 0, strlen(key_pem));
		free(key_pem);
	}
	return creds;
}

int moat__rpc_channel_open(moat_rpc_channel **out, const moat_rpc_channel_opts *o)
{
	grpc_arg args[14];
	grpc_channel_args ca;
	grpc_channel_credentials *creds;
	moat_rpc_channel *ch;
	char config[256];

	*out = NULL;
	ch = calloc(1, sizeof(*ch));
	if (!ch)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	/* gRPC's own placement: round robin over the addresses its health checks find serving. */
	if (o->health_service)
		snprintf(config, sizeof(config),
		         "{\"loadBalancingConfig\": [{\"round_robin\": {}}], "
		         "\"healthCheckConfig\": {\"serviceName\": \"%s\"}}",
		         o->health_service);
	ca.num_args = (size_t)channel_args(args, o, o->health_service ? config : NULL);
	ca.args = args;
	if (!(creds = channel_creds(o))) {
		free(ch);
		return moat_error_last()->code;
	}
	ch->tls = o->tls;
	ch->channel = grpc_channel_create(o->target, creds, &ca);
	grpc_channel_credentials_release(creds);
	if (!ch->channel) {
		free(ch);
		return moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		                      "cannot create a gRPC channel to %s", o->target);
	}
	*out = ch;
	return 0;
}

void moat__rpc_channel_close(moat_rpc_channel *ch)
{
	if (!ch)
		return;
	grpc_channel_destroy(ch->channel);
	free(ch);
}
