/*
 * How the remote backend names what went wrong: a handle's fatal error, the
 * likeliest cause of a failed connection, and a call's gRPC and Moat status
 * turned into one Moat error (one error model with sim and proc).
 */
#include <stdatomic.h>
#include <string.h>

#include "backends/remote/agent.h"
#include "core/internal.h"
#include "rpc/rpc.h"

/* Record the handle's fatal error; the first one stays (an abort, a timeout, a lost target). */
void moat__remote_mark_dead(remote_backend *r, int code)
{
	int none = 0;

	atomic_compare_exchange_strong((_Atomic int *)&r->parent.dead, &none, code);
}

/* The likeliest cause of a failed connection, from what gRPC said. */
const char *moat__remote_transport_hint(const remote_backend *r, const char *detail)
{
	if (r->has_local)
		return "the private moatd went away";
	if (strstr(detail, "DNS resolution failed"))
		return "the host name does not resolve: check it (DNS, /etc/hosts)";
	if (!r->tls)
		return "is moatd running and reachable there (and not serving TLS only)?";
	if (strstr(detail, "certificate verify failed"))
		return "TLS: the target's certificate is not signed by tls_ca_file (or the system roots)";
	if (strstr(detail, "is not in peer certificate"))
		return "TLS: the name checked (tls_server_name, else the URI's host) is not in the target's "
		       "certificate";
	if (strstr(detail, "Socket closed") || strstr(detail, "Connection reset"))
		return "TLS: the target closed the handshake; it probably requires a client certificate "
		       "(set tls_cert_file and tls_key_file to one its --tls-client-ca signed)";
	return "is moatd running there with TLS? If so the TLS handshake failed: check tls_ca_file, "
	       "tls_server_name "
	       "and, when the target requires client certificates, tls_cert_file/tls_key_file";
}

/* Turn how a call ended into a Moat error. Marks the handle dead when the target is gone. */
int moat__remote_status_error(remote_backend *r, const moat_rpc_status *st, const char *what)
{
	int code;

	if (st->moat_code < 0) {
		code = st->moat_code;
		/*
		 * One error model on every backend: what is wrong with the image
		 * the application gave, or with its pin, is the application's (as
		 * sim and proc find it); what the enclave's own code did, the
		 * enclave's. The target's message names the image as the host did,
		 * so it is the same message as sim's and proc's.
		 */
		if (code == MOAT_EBADIMAGE || code == MOAT_ENOENTRY || code == MOAT_EABI ||
		    code == MOAT_EMEASUREMENT)
			return moat_error_set(code, MOAT_ORIGIN_API, "%s", st->message);
		if (code == MOAT_EINIT || code == MOAT_ECRASHED || code == MOAT_ESANDBOX)
			return moat_error_set(code, MOAT_ORIGIN_ENCLAVE, "%s", st->message);
		return moat_error_set(code, MOAT_ORIGIN_TARGET, "%s refused by the target: %s", what,
		                      st->message);
	}
	switch (st->code) {
	case MOAT_RPC_PERMISSION_DENIED:
	case MOAT_RPC_UNAUTHENTICATED:
		return moat_error_set(MOAT_EPERM, MOAT_ORIGIN_TARGET, "%s refused by the target: %s", what,
		                      st->message);
	case MOAT_RPC_RESOURCE_EXHAUSTED:
		return moat_error_set(MOAT_ELIMIT, MOAT_ORIGIN_TARGET, "%s refused by the target: %s", what,
		                      st->message);
	case MOAT_RPC_DEADLINE_EXCEEDED:
		return moat_error_set(MOAT_ETIMEDOUT, MOAT_ORIGIN_TRANSPORT, "%s timed out: %s", what,
		                      st->message);
	case MOAT_RPC_UNIMPLEMENTED:
		return moat_error_set(MOAT_EPROTO, MOAT_ORIGIN_TARGET,
		                      "%s: %s does not speak the Moat protocol (%s)", what, r->where,
		                      st->message);
	case MOAT_RPC_UNAVAILABLE:
	case MOAT_RPC_CANCELLED:
	case MOAT_RPC_UNKNOWN:
	case MOAT_RPC_INTERNAL:
		moat__remote_mark_dead(r, MOAT_ETRANSPORT);
		return moat_error_set(MOAT_ETRANSPORT, MOAT_ORIGIN_TRANSPORT,
		                      "%s: connection to %s failed or was lost (%s; %s)", what, r->where,
		                      st->message[0] ? st->message : "no detail",
		                      moat__remote_transport_hint(r, st->message));
	default:
		return moat_error_set(MOAT_ETARGET, MOAT_ORIGIN_TARGET,
		                      "%s refused by the target (gRPC status %d): %s", what, st->code,
		                      st->message);
	}
}
