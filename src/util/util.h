/*
 * Small stateless helpers shared by libmoat, the proc runner, moatd, the
 * CLI and the benchmarks: hex, time. No state, no errors recorded.
 */
#ifndef MOAT_UTIL_UTIL_H
#define MOAT_UTIL_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/*
 * The longest error message Moat carries, NUL included: moat_error.message,
 * a Return's message, a target's refusal (gRPC status message) and what
 * libmoat and moatd copy them into. Room for a whole crash report: the
 * call, signal, address and a symbolized backtrace of up to 24 frames.
 */
#define MOAT__MESSAGE_MAX 4096

/* Lower-case hex of len bytes into out (2 * len + 1 bytes, NUL-terminated). */
void moat__hex(char *out, const uint8_t *data, size_t len);

/* Parse exactly 2 * len hex digits (either case). Returns 0 or -1. */
int moat__unhex(uint8_t *out, size_t len, const char *hex);

/* CLOCK_MONOTONIC now, in nanoseconds. */
int64_t moat__now_ns(void);

/* Milliseconds since t0 (CLOCK_MONOTONIC). */
double moat__ms_since(const struct timespec *t0);

#endif
