/*
 * moat_target_status: ask a target server what it says of itself
 * (moat.v1.Target/Status) and put it in words, for `moat status`.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backends/remote/agent.h"
#include "moat/v1/target.pb-c.h"

#define STATUS_TIMEOUT_MS 10000u

/* The status in words: a few lines, then the metrics text as the target gave it. */
static int describe(char **out, const char *uri, const Moat__V1__StatusResponse *r)
{
	const char *metrics = r->metrics ? r->metrics : "";
	size_t cap = strlen(uri) + strlen(metrics) + 512;
	char max[24];

	*out = malloc(cap);
	if (!*out)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	snprintf(max, sizeof(max), "%u", r->max_sessions);
	snprintf(*out, cap,
	         "target:   %s\n"
	         "version:  moatd %s\n"
	         "serving:  %s\n"
	         "sessions: %u of %s\n"
	         "\n%s",
	         uri, r->version ? r->version : "?",
	         r->serving    ? "yes"
	         : r->draining ? "no (draining)"
	                       : "no (full or stopping)",
	         r->sessions, r->max_sessions ? max : "no limit", metrics);
	return 0;
}

int moat_target_status(char **out, const char *uri, const moat_load_options *options)
{
	static const moat_load_options defaults = MOAT_LOAD_OPTIONS_INIT;
	moat_rpc_channel_opts co;
	moat_rpc_channel *ch = NULL;
	Moat__V1__StatusResponse *r = NULL;
	moat__backend_uri parsed;
	moat_rpc_status st;
	uint8_t *reply = NULL;
	char target[320];
	size_t len = 0;
	int rc;

	if (!out || !uri)
		return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "moat_target_status: out or uri is NULL");
	*out = NULL;
	if (!options)
		options = &defaults;
	if ((rc = moat__backend_parse(&parsed, uri)) < 0)
		return rc;
	if (!parsed.address || strstr(parsed.scheme, "+dns") || strchr(parsed.address, ','))
		return moat_error_set(
		    MOAT_EINVAL, MOAT_ORIGIN_API,
		    "moat_target_status: '%s' names no single target (grpc://, grpcs:// or unix:)", uri);
	snprintf(target, sizeof(target), "%s%s", strcmp(parsed.scheme, "unix") == 0 ? "unix:" : "",
	         parsed.address);
	if ((rc = moat__remote_channel_opts(&co, target, strcmp(parsed.scheme, "grpcs") == 0, options, uri)) <
	    0)
		return rc;
	moat__rpc_init();
	if ((rc = moat__rpc_channel_open(&ch, &co)) < 0)
		goto out;
	rc = moat__rpc_unary(ch, "/moat.v1.Target/Status", NULL, "", 0, &reply, &len, STATUS_TIMEOUT_MS, &st);
	if (rc != MOAT_RPC_OK) {
		rc = rc < 0 ? rc
		            : moat_error_set(st.code == MOAT_RPC_UNAVAILABLE ? MOAT_ETRANSPORT : MOAT_ETARGET,
		                             st.code == MOAT_RPC_UNAVAILABLE ? MOAT_ORIGIN_TRANSPORT
		                                                             : MOAT_ORIGIN_TARGET,
		                             "status of %s: %s (gRPC status %d)", uri, st.message, st.code);
		goto out;
	}
	if (!(r = moat__v1__status_response__unpack(NULL, len, reply))) {
		rc = moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TARGET, "malformed StatusResponse from %s", uri);
		goto out;
	}
	rc = describe(out, uri, r);
out:
	if (r)
		moat__v1__status_response__free_unpacked(r, NULL);
	free(reply);
	moat__rpc_channel_close(ch);
	moat__rpc_shutdown();
	return rc;
}
