/* A test enclave for the remote backend: long calls with and without exit calls. */
#include <moat/enclave.h>

#include <time.h>

#include "remote_enclave.h"

static int on_slow(void *payload, const moat_msg *in, moat_msg *out)
{
	uint64_t ms, start, now, calls = 0;
	int rc;

	if (moat_msg_item_u64(in, 0, &ms) < 0)
		return MOAT_EINVAL;
	if ((rc = moat_host_time(&start)) < 0)
		return rc;
	calls++;
	do {
		struct timespec ts = {0, 20 * 1000000L};

		nanosleep(&ts, NULL);
		if ((rc = moat_host_time(&now)) < 0)
			return rc;
		calls++;
		if (calls % 25 == 0) {
			if ((rc = moat_host_log("remote enclave: %llu ms of %llu",
			                        (unsigned long long)((now - start) / 1000000u),
			                        (unsigned long long)ms)) < 0)
				return rc;
			calls++;
		}
	} while (now - start < ms * 1000000u);
	return moat_msg_push_u64(out, calls);
}

static int on_sleep(void *payload, const moat_msg *in, moat_msg *out)
{
	uint64_t ms;
	struct timespec ts;

	if (moat_msg_item_u64(in, 0, &ms) < 0)
		return MOAT_EINVAL;
	ts.tv_sec = (time_t)(ms / 1000);
	ts.tv_nsec = (long)(ms % 1000) * 1000000L;
	while (nanosleep(&ts, &ts) != 0)
		;
	return 0;
}

static int on_size(void *payload, const moat_msg *in, moat_msg *out)
{
	uint64_t total = 0;
	size_t i;

	for (i = 0; i < moat_msg_count(in); i++) {
		const void *d;
		size_t l;

		moat_msg_item(in, i, &d, &l);
		total += l;
	}
	return moat_msg_push_u64(out, total);
}

static int on_spin(void *payload, const moat_msg *in, moat_msg *out)
{
	volatile uint64_t n = 0;

	for (;;)
		n++;
	return 0;
}

static int on_nest(void *payload, const moat_msg *in, moat_msg *out)
{
	return moat_exit_call(R_EXIT_NEST, in, out);
}

static int init(const void *config, size_t len)
{
	int rc = moat_entry_register(R_SLOW, on_slow, NULL);

	rc |= moat_entry_register(R_SLEEP, on_sleep, NULL);
	rc |= moat_entry_register(R_SPIN, on_spin, NULL);
	rc |= moat_entry_register(R_NEST, on_nest, NULL);
	return rc | moat_entry_register(R_SIZE, on_size, NULL);
}

MOAT_ENCLAVE(init)
