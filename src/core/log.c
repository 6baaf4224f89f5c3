/*
 * libmoat's diagnostics: to the application's log function when it set
 * one, else to stderr only when $MOAT_LOG asks. A library must not write to
 * its host's stderr on its own.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

static struct {
	moat_log_fn fn;
	void *payload;
} sink;
static pthread_mutex_t sink_lock = PTHREAD_MUTEX_INITIALIZER;

void moat_log_set(moat_log_fn fn, void *payload)
{
	pthread_mutex_lock(&sink_lock);
	sink.fn = fn;
	sink.payload = payload;
	pthread_mutex_unlock(&sink_lock);
}

int moat__env_on(const char *name)
{
	const char *v = getenv(name);

	return v && *v && strcmp(v, "0") != 0;
}

/* The level $MOAT_LOG asks for, or -1 for none. */
static int env_level(void)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	const char *v = getenv("MOAT_LOG");
	int i;

	/*
	 * Tracing asks for its lines (debug level) and debug mode for the one
	 * that says where to attach (a warning): without $MOAT_LOG they go to stderr.
	 */
	if (!v) {
		if (moat__env_on("MOAT_TRACE"))
			return MOAT_LOG_DEBUG;
		return moat__env_on("MOAT_DEBUG") ? MOAT_LOG_WARN : -1;
	}
	for (i = 0; i < 4; i++)
		if (strcmp(v, names[i]) == 0)
			return i;
	return MOAT_LOG_WARN; /* MOAT_LOG=1 or any other value: warnings and errors */
}

void moat__log(moat_log_level level, const char *fmt, ...)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	char line[512];
	moat_log_fn fn;
	void *payload;
	va_list ap;

	pthread_mutex_lock(&sink_lock);
	fn = sink.fn;
	payload = sink.payload;
	pthread_mutex_unlock(&sink_lock);
	if (!fn && (int)level > env_level())
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (fn)
		fn(payload, level, line);
	else
		fprintf(stderr, "moat: %s: %s\n", names[level], line);
}
