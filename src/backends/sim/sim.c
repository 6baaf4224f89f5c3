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
	char *image_name; /* the image, as init's failure names it */
	/* MOAT_LOAD_DEFER_INIT: a copy of the config bytes for init, until it ran. */
	uint8_t *config;
	size_t config_len;
	int started; /* init succeeded: the finalizer runs at destroy */
} sim_backend;

/* The runtime's exit call: the enclave's thread is the host's thread, so dispatch directly. */
static int sim_exit_call(void *ctx, uint64_t selector, const moat_msg *in, moat_msg *out)
{
	sim_backend *s = ctx;

	return s->exit_dispatch(s->exit_ctx, selector, in, out);
}

/* Run the enclave's init; name is the image for the message. */
static int sim_init(sim_backend *s, const void *config, size_t config_len, const char *name)
{
	int rc = s->image->entry->start(&s->runtime, config, config_len);

	if (rc != 0)
		return moat_error_set(MOAT_EINIT, MOAT_ORIGIN_ENCLAVE,
		                      "%s: the enclave's init function failed (%d)", name, rc);
	s->started = 1;
	return 0;
}

static void sim_close(moat_backend *b)
{
	sim_backend *s = (sim_backend *)b;

	if (!s)
		return;
	if (s->image)
		moat__image_close(s->image);
	free(s->config);
	free(s->image_name);
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
	/* A server's enclave sees what its remote host's identity says (moatd). */
	s->runtime.backend = (o->flags & MOAT_LOAD_FOR_REMOTE_HOST) ? "remote" : "sim";
	s->runtime.isolation = (o->flags & MOAT_LOAD_FOR_REMOTE_HOST) ? MOAT_ISOLATION_REMOTE : 0;
	s->runtime.flags = (o->flags & MOAT_LOAD_DEBUG) ? MOAT_RUNTIME_DEBUG : 0;
	/* Messages name the image as the application asked (moatd: as its host did). */
	if (!(s->image_name = strdup(o->image_name ? o->image_name : params->path))) {
		rc = moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
		goto fail;
	}
	if (o->flags & MOAT_LOAD_DEFER_INIT) {
		/* The options are the caller's only during the load: keep the config for init. */
		s->config = malloc(o->config_len ? o->config_len : 1);
		s->config_len = o->config_len;
		if (!s->config) {
			rc = moat_error_set(MOAT_ENOMEM, MOAT_ORIGIN_API, "out of memory");
			goto fail;
		}
		if (o->config_len)
			memcpy(s->config, o->config, o->config_len);
	} else if ((rc = sim_init(s, o->config, o->config_len, s->image_name)) < 0) {
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

	/* The finalizer only after an init that succeeded (a deferred one may never have run). */
	if (s->started)
		s->image->entry->stop();
	sim_close(b);
}

static int sim_start(moat_backend *b)
{
	sim_backend *s = (sim_backend *)b;
	int rc = sim_init(s, s->config_len ? s->config : NULL, s->config_len, s->image_name);

	free(s->config);
	s->config = NULL;
	return rc;
}

const moat_backend_vtable moat__backend_sim = {
    MOAT_BACKEND_VERSION, "sim", 0, sim_open, sim_call, sim_destroy, NULL, sim_start,
};
