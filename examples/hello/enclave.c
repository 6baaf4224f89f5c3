/* hello: an entry call with a name; the enclave logs through the host and returns a greeting. */
#include <moat/enclave.h>

#include <stdio.h>

static int greet(void *payload, const moat_msg *in, moat_msg *out)
{
	const void *name = "world";
	size_t len = 5;
	char reply[256];
	int n;

	if (moat_msg_count(in) > 0)
		moat_msg_item(in, 0, &name, &len);
	moat_host_log("hello enclave: greeting %.*s", (int)len, (const char *)name);
	n = snprintf(reply, sizeof(reply), "Hello, %.*s!", (int)len, (const char *)name);
	return moat_msg_push(out, reply, (size_t)n < sizeof(reply) ? (size_t)n : sizeof(reply) - 1);
}

static int init(const void *config, size_t len)
{
	return moat_entry_register(MOAT_SELECTOR_RUN, greet, NULL);
}

MOAT_ENCLAVE(init)
