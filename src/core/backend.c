/*
 * The backend table and the one parser of backend URIs. Each row carries
 * its scheme and what separates the scheme from an address, so every
 * backend gets the URI already split and no two parsers can disagree.
 */
#include <string.h>

#include "core/internal.h"

static const struct {
	const char *scheme;
	const char *sep; /* between scheme and address; NULL: the URI is the scheme alone */
	const moat_backend_vtable *vtable;
	const char *example;
} backends[] = {
    {"sim", NULL, &moat__backend_sim, "sim"},
    {"proc", NULL, &moat__backend_proc, "proc"},
    {"local", NULL, &moat__backend_remote, "local"},
    {"grpc", "://", &moat__backend_remote, "grpc://127.0.0.1:7070"},
    {"grpcs", "://", &moat__backend_remote, "grpcs://target.example:7443"},
    {"grpc+dns", "://", &moat__backend_remote, "grpc+dns://targets.example:7070"},
    {"grpcs+dns", "://", &moat__backend_remote, "grpcs+dns://targets.example:7443"},
    {"unix", ":", &moat__backend_remote, "unix:/run/moatd.sock"},
};

int moat__backend_parse(moat__backend_uri *out, const char *uri)
{
	size_t i, n = strcspn(uri, ":");

	memset(out, 0, sizeof(*out));
	for (i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		const char *rest = uri + n, *sep = backends[i].sep;

		if (strlen(backends[i].scheme) != n || strncmp(uri, backends[i].scheme, n) != 0)
			continue;
		if (sep ? strncmp(rest, sep, strlen(sep)) != 0 || !rest[strlen(sep)] : *rest != '\0')
			return moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
			                      sep ? "backend URI '%s' needs an address: %s"
			                          : "backend URI '%s' takes no address: %s",
			                      uri, backends[i].example);
		if (!backends[i].vtable)
			return moat_error_set(MOAT_ENOBACKEND, MOAT_ORIGIN_API,
			                      "backend '%s' is not available in this build of libmoat",
			                      backends[i].scheme);
		out->vtable = backends[i].vtable;
		out->scheme = backends[i].scheme;
		out->address = sep ? rest + strlen(sep) : NULL;
		return 0;
	}
	return moat_error_set(
	    MOAT_ENOBACKEND, MOAT_ORIGIN_API,
	    "unknown backend '%s' (known: sim, proc, local, grpc://HOST:PORT[,HOST:PORT...], grpcs://..., "
	    "grpc+dns://NAME:PORT, grpcs+dns://NAME:PORT, unix:PATH)",
	    uri);
}
