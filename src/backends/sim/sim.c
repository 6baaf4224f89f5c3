/*
 * The sim backend: the enclave image is loaded into the host process and
 * entry calls are plain function calls. No isolation at all; the fastest
 * path and the one to develop with.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/internal.h"

typedef struct sim_backend {
	moat_backend parent;
	moat_image *image;
	struct moat_runtime runtime;
	moat_exit_dispatch exit_dispatch;
	void *exit_ctx;
} sim_backend;

/* The runtime's exit call: the enclave's thread is the host's thread, so dispatch directly. */
static int sim_exit_call(void *ctx, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	sim_backend *s = ctx;

	return s->exit_dispatch(s->exit_ctx, selector, in, out);
}

static void sim_close(moat_backend *b)
{
	sim_backend *s = (sim_backend *)b;

	if (!s)
		return;
	if (s->image)
		moat__image_close(s->image);
	free(s);
}

static int sim_open(moat_backend **out, const moat_backend_params *params)
{
	const moat_load_options *o = params->options;
	sim_backend *s;
	int rc;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
	s->parent.vtable = &moat__backend_sim;
	s->exit_dispatch = params->exit_dispatch;
	s->exit_ctx = params->exit_ctx;
	if (o->flags & MOAT_LOAD_BY_NAME) {
		rc = moat_error_set(MOAT_EINVAL, MOAT_ORIGIN_API, "MOAT_LOAD_BY_NAME needs a remote backend");
		goto fail;
	}
	if ((rc = moat__image_open(&s->image, params->path, o->expected_measurement)) < 0)
		goto fail;
	memcpy(s->parent.measurement, s->image->measurement, MOAT_MEASUREMENT_LEN);
	/* The enclave is the host's own code: a debugger of the host debugs it already. */
	if (o->flags & MOAT_LOAD_DEBUG) {
		s->parent.debug = 1;
		s->parent.debug_pid = (long)getpid();
	}
	s->runtime.abi_version = MOAT_ENCLAVE_ABI_VERSION;
	s->runtime.size = sizeof(s->runtime);
	s->runtime.ctx = s;
	s->runtime.exit_call = sim_exit_call;
	s->runtime.backend = "sim";
	s->runtime.isolation = 0;
	s->runtime.flags = (o->flags & MOAT_LOAD_DEBUG) ? MOAT_RUNTIME_DEBUG : 0;
	rc = s->image->entry->start(&s->runtime, o->config, o->config_len);
	if (rc != 0) {
		rc = moat_error_set(MOAT_EINIT, MOAT_ORIGIN_ENCLAVE,
		                    "%s: the enclave's init function failed (%d)", params->path, rc);
		goto fail;
	}
	*out = &s->parent;
	return 0;

fail:
	sim_close(&s->parent);
	return rc;
}

static int sim_call(moat_backend *b, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	sim_backend *s = (sim_backend *)b;
	int64_t handler_code = 0;
	int rc;

	rc = s->image->entry->call(selector, in, out, &handler_code);
	if (rc < 0)
		return moat__error_from_enclave(rc, selector, handler_code, NULL);
	return 0;
}

static void sim_destroy(moat_backend *b)
{
	sim_backend *s = (sim_backend *)b;

	s->image->entry->stop();
	sim_close(b);
}

const moat_backend_vtable moat__backend_sim = {
    MOAT_BACKEND_VERSION, "sim", 0, sim_open, sim_call, sim_destroy, NULL,
};
