#include <string.h>

#include "core/internal.h"

static const struct {
	const char *scheme;
	const moat_backend_vtable *vtable;
	int needs_rest; /* URI must carry an address after the scheme */
} backends[] = {
    {"sim", &moat__backend_sim, 0},      {"proc", &moat__backend_proc, 0},
    {"local", &moat__backend_remote, 0}, {"grpc", &moat__backend_remote, 1},
    {"grpcs", &moat__backend_remote, 1}, {"unix", &moat__backend_remote, 1},
};

const moat_backend_vtable *moat__backend_lookup(const char *uri)
{
	size_t i, n = strcspn(uri, ":");
	int has_rest = uri[n] == ':' && uri[n + 1] != '\0';

	for (i = 0; i < sizeof(backends) / sizeof(backends[0]); i++) {
		if (strlen(backends[i].scheme) != n || strncmp(uri, backends[i].scheme, n) != 0)
			continue;
		if (backends[i].needs_rest != has_rest || (!has_rest && uri[n] == ':')) {
			moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API,
			               backends[i].needs_rest
			                   ? "backend URI '%s' needs an address, e.g. %s://127.0.0.1:7070"
			                   : "backend URI '%s' takes no address (%s)",
			               uri, backends[i].scheme);
			return NULL;
		}
		if (!backends[i].vtable) {
			moat_error_set(MOAT_ENOBACKEND, MOAT_ORIGIN_API,
			               "backend '%s' is not available in this build of libmoat",
			               backends[i].scheme);
			return NULL;
		}
		return backends[i].vtable;
	}
	moat_error_set(
	    MOAT_ENOBACKEND, MOAT_ORIGIN_API,
	    "unknown backend '%s' (known: sim, proc, local, grpc://HOST:PORT, grpcs://HOST:PORT, unix:PATH)",
	    uri);
	return NULL;
}
