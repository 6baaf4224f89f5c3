/*
 * moatd under systemd (Type=notify): READY=1 once it serves, RELOADING=1 and
 * READY=1 around a SIGHUP reload, STOPPING=1 at shutdown, a STATUS= line,
 * and the watchdog kept alive from the server loop. Outside systemd
 * ($NOTIFY_SOCKET unset) every call does nothing.
 */
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "moatd/moatd.h"

/* Half the watchdog period systemd asked for (0: no watchdog), and the last ping. */
static uint64_t watchdog_ns;
static uint64_t last_ping_ns;

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void moatd_notify_ready(const char *uri)
{
	uint64_t usec = 0;

	/* 0 keeps $WATCHDOG_USEC for the enclave processes' sake: they never talk to systemd. */
	if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
		watchdog_ns = usec * 1000u / 2;
		moatd_log(MOATD_LOG_INFO, "systemd watchdog: a ping every %llu ms",
		          (unsigned long long)(watchdog_ns / 1000000u));
	}
	last_ping_ns = now_ns();
	sd_notifyf(0, "READY=1\nSTATUS=serving on %s", uri);
}

void moatd_notify_reloading(int done)
{
	sd_notify(0, done ? "READY=1" : "RELOADING=1");
}

void moatd_notify_stopping(void)
{
	sd_notify(0, "STOPPING=1\nSTATUS=stopping");
}

void moatd_notify_tick(void)
{
	uint64_t now;

	if (!watchdog_ns)
		return;
	now = now_ns();
	if (now - last_ping_ns >= watchdog_ns) {
		sd_notify(0, "WATCHDOG=1");
		last_ping_ns = now;
	}
}
