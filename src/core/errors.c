#include <moat/sys/backend.h>

#include <stdarg.h>
#include <stdio.h>

#include "core/internal.h"

static _Thread_local moat_error last_error = {0, MOAT_ORIGIN_NONE, "", 0};
static _Thread_local char last_message[MOAT__MESSAGE_MAX];

const char *moat_strerror(int code)
{
	switch (code) {
	case MOAT_OK: return "success";
	case MOAT_EINVAL: return "invalid argument";
	case MOAT_ENOMEM: return "out of memory";
	case MOAT_ENOENT: return "enclave image not found";
	case MOAT_EBADIMAGE: return "not a loadable enclave image";
	case MOAT_ENOENTRY: return "image has no Moat entry symbol";
	case MOAT_EABI: return "enclave ABI version mismatch";
	case MOAT_EMEASUREMENT: return "enclave measurement mismatch";
	case MOAT_EVERSION: return "unsupported options version";
	case MOAT_ENOBACKEND: return "backend not available";
	case MOAT_ENOSELECTOR: return "unknown entry selector";
	case MOAT_EHANDLER: return "enclave handler failed";
	case MOAT_ENOHANDLER: return "no host handler for exit call";
	case MOAT_EBUSY: return "enclave thread limit reached";
	case MOAT_ETIMEDOUT: return "call timed out";
	case MOAT_ETRANSPORT: return "transport failure";
	case MOAT_EPERM: return "permission denied";
	case MOAT_ELIMIT: return "limit exceeded";
	case MOAT_ECRASHED: return "enclave crashed";
	case MOAT_EPROTO: return "protocol error";
	case MOAT_EIO: return "input/output error";
	case MOAT_EKEY: return "target key or load report did not verify";
	case MOAT_EINIT: return "enclave init failed";
	case MOAT_ESANDBOX: return "system call refused by the sandbox";
	case MOAT_ETARGET: return "target server refused the request";
	case MOAT_ECANCELED: return "enclave stopped by moat_enclave_abort()";
	default: return "unknown error";
	}
}

const char *moat_origin_name(moat_origin origin)
{
	switch (origin) {
	case MOAT_ORIGIN_API: return "api";
	case MOAT_ORIGIN_TRANSPORT: return "transport";
	case MOAT_ORIGIN_TARGET: return "target";
	case MOAT_ORIGIN_ENCLAVE: return "enclave";
	default: return "none";
	}
}

const moat_error *moat_error_last(void)
{
	return &last_error;
}

void moat_error_clear(void)
{
	/* Every call clears the record; reading it first keeps that to one load when it is clear. */
	if (last_error.code == MOAT_OK && last_error.enclave_code == 0 &&
	    last_error.message == last_message && last_message[0] == '\0')
		return;
	last_message[0] = '\0';
	last_error.code = MOAT_OK;
	last_error.origin = MOAT_ORIGIN_NONE;
	last_error.message = last_message;
	last_error.enclave_code = 0;
}

int moat__error_vset(int code, moat_origin origin, const char *fmt, va_list ap)
{
	vsnprintf(last_message, sizeof(last_message), fmt, ap);
	last_error.code = code;
	last_error.origin = origin;
	last_error.message = last_message;
	last_error.enclave_code = 0;
	return code;
}

int moat_error_set(int code, moat_origin origin, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	moat__error_vset(code, origin, fmt, ap);
	va_end(ap);
	return code;
}

void moat__error_set_enclave_code(int64_t value)
{
	last_error.enclave_code = value;
}

int moat__error_from_enclave(int code, uint64_t selector, int64_t handler_code, const char *detail)
{
	const char *sep = detail && *detail ? ": " : "";

	if (!detail)
		detail = "";
	switch (code) {
	case MOAT_ENOSELECTOR:
		return moat_error_set(code, MOAT_ORIGIN_ENCLAVE,
		                      "the enclave has no entry handler for selector %llu%s%s",
		                      (unsigned long long)selector, sep, detail);
	case MOAT_EHANDLER:
		moat_error_set(code, MOAT_ORIGIN_ENCLAVE,
		               "the enclave's handler for selector %llu returned %lld%s%s",
		               (unsigned long long)selector, (long long)handler_code, sep, detail);
		moat__error_set_enclave_code(handler_code);
		return code;
	default:
		return moat_error_set(code, MOAT_ORIGIN_ENCLAVE, "entry call %llu failed: %s%s%s",
		                      (unsigned long long)selector, moat_strerror(code), sep, detail);
	}
}

int moat__code_is_fatal(int code)
{
	return code == MOAT_ECRASHED || code == MOAT_ETRANSPORT || code == MOAT_ESANDBOX ||
	       code == MOAT_ECANCELED;
}
