/*
 * moatd's log: one line per event on stderr, with its time (UTC), PID and
 * level; under systemd (stderr is the journal's stream) in the journal's
 * own form, "<priority>level: message", the journal adding the rest; with
 * --log-format json one object per line {"time","level","pid","msg"}.
 * A line that repeats (the same format, say a refusal during a flood) is
 * written at most LOG_BURST times per LOG_WINDOW_S seconds; the next one
 * written says how many were left out. Debug lines (--log-level debug,
 * which traces every call) are never left out.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "moatd/moatd.h"

/* A line's message: room for a crash report (MOAT__MESSAGE_MAX) and the session that names it. */
#define MOATD_LOG_LINE (MOAT__MESSAGE_MAX + 128)
#define LOG_BURST      20
#define LOG_WINDOW_S   10
#define LOG_SLOTS      64

int moatd_log_level = MOATD_LOG_WARN;
static int log_format = MOATD_LOG_TEXT;
static int log_journal; /* stderr is the journal's stream */

typedef struct log_slot {
	const void *fmt; /* the kind of line: its format, or the key moatd_log_keyed was given */
	time_t window;
	unsigned int written;
	unsigned long dropped;
} log_slot;

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static log_slot slots[LOG_SLOTS];

/* May a line of kind fmt (a format, or another key) be written now? *dropped gets the lines left out before
 * it. */
static int log_allowed(const void *fmt, unsigned long *dropped)
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

void moatd_log_set_format(int format)
{
	const char *js = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	/* systemd names the device and inode of the stream it gave as stderr. */
	log_journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0 &&
	              (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
	log_format = format;
}

/* s as the inside of a JSON string into out. */
static void json_escape(char *out, size_t cap, const char *s)
{
	size_t n = 0;

	for (; *s && n + 7 < cap; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			out[n++] = '\\';
			out[n++] = (char)ch;
		} else if (ch < 0x20) {
			n += (size_t)snprintf(out + n, cap - n, "\\u%04x", ch);
		} else {
			out[n++] = (char)ch;
		}
	}
	out[n] = '\0';
}

/* Write one line for message msg at level (the lines left out before it already in msg). */
static void emit(int level, const char *msg)
{
	static const char *const names[] = {"error", "warn", "info", "debug"};
	static const int priority[] = {3, 4, 6, 7}; /* syslog's err, warning, info, debug */
	char out[2 * MOATD_LOG_LINE + 200], when[40], esc[2 * MOATD_LOG_LINE + 100];
	struct timespec ts;
	struct tm tm;
	int n;

	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = (int)strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(when + n, sizeof(when) - (size_t)n, ".%03ldZ", ts.tv_nsec / 1000000);
	if (log_format == MOATD_LOG_JSON) {
		json_escape(esc, sizeof(esc), msg);
		n = snprintf(out, sizeof(out),
		             "{\"time\":\"%s\",\"level\":\"%s\",\"pid\":%d,\"msg\":\"%s\"}\n", when,
		             names[level], (int)getpid(), esc);
	} else if (log_journal) {
		n = snprintf(out, sizeof(out), "<%d>%s: %s\n", priority[level], names[level], msg);
	} else {
		n = snprintf(out, sizeof(out), "%s moatd[%d] %s: %s\n", when, (int)getpid(), names[level],
		             msg);
	}
	if (n > (int)sizeof(out) - 1) {
		n = (int)sizeof(out) - 1;
		out[n - 1] = '\n';
	}
	/* One write per line, so that threads' lines do not interleave. */
	fwrite(out, 1, (size_t)n, stderr);
}

static void vlog(int level, const void *key, const char *fmt, va_list ap)
{
	char line[MOATD_LOG_LINE], full[MOATD_LOG_LINE + 64];
	unsigned long dropped;

	/* Debug level is asked for on purpose (it traces every call): it is not rate-limited. */
	dropped = 0;
	if (level > moatd_log_level || (level < MOATD_LOG_DEBUG && !log_allowed(key, &dropped)))
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	if (dropped) {
		snprintf(full, sizeof(full), "%s (and %lu more like it left out)", line, dropped);
		emit(level, full);
	} else {
		emit(level, line);
	}
}

void moatd_log(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(level, fmt, fmt, ap);
	va_end(ap);
}

void moatd_log_keyed(int level, const void *key, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog(level, key, fmt, ap);
	va_end(ap);
}
