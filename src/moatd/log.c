/*
 * moatd's log: one line per event on stderr, tagged with the PID and level.
 */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "moatd/moatd.h"

int moatd_log_level = MOATD_LOG_WARN;

void moatd_log(int level, const char *fmt, ...)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	char line[1024];
	va_list ap;

	if (level > moatd_log_level)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "moatd[%d] %s: %s\n", (int)getpid(), names[level], line);
}
