/*
 * moatd's log: one line per event on stderr, tagged with the PID and level.
 * A line that repeats (the same format, say a refusal during a flood) is
 * written at most LOG_BURST times per LOG_WINDOW_S seconds; the next one
 * written says how many were left out. Debug lines (--log-level debug,
 * which traces every call) are never left out.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <time.h>
#include <unistd.h>

#include "moatd/moatd.h"

#define LOG_BURST    20
#define LOG_WINDOW_S 10
#define LOG_SLOTS    64

int moatd_log_level = MOATD_LOG_WARN;

typedef struct log_slot {
	const char *fmt;
	time_t window;
	unsigned int written;
	unsigned long dropped;
} log_slot;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static log_slot slots[LOG_SLOTS];

/* May a line with format fmt be written now? *dropped gets the lines left out before it. */
static int log_allowed(const char *fmt, unsigned long *dropped)
{
	log_slot *sl = &slots[((uintptr_t)fmt >> 3) % LOG_SLOTS];
	struct timespec now;
	int ok;

	clock_gettime(CLOCK_MONOTONIC, &now);
	pthread_mutex_lock(&log_lock);
	*dropped = 0;
	if (sl->fmt != fmt || now.tv_sec - sl->window >= LOG_WINDOW_S) {
		/* A new window (or another format took the slot): report what the last one left out. */
		*dropped = sl->fmt == fmt ? sl->dropped : 0;
		sl->fmt = fmt;
		sl->window = now.tv_sec;
		sl->written = 0;
		sl->dropped = 0;
	}
	ok = sl->written < LOG_BURST;
	if (ok)
		sl->written++;
	else
		sl->dropped++;
	pthread_mutex_unlock(&log_lock);
	return ok;
}

void moatd_log(int level, const char *fmt, ...)
{
	static const char *names[] = {"error", "warn", "info", "debug"};
	char line[1024];
	unsigned long dropped;
	va_list ap;

	/* Debug level is asked for on purpose (it traces every call): it is not rate-limited. */
	dropped = 0;
	if (level > moatd_log_level || (level < MOATD_LOG_DEBUG && !log_allowed(fmt, &dropped)))
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (dropped)
		fprintf(stderr, "moatd[%d] %s: %s (and %lu more like it left out)\n", (int)getpid(),
		        names[level], line, dropped);
	else
		fprintf(stderr, "moatd[%d] %s: %s\n", (int)getpid(), names[level], line);
}
