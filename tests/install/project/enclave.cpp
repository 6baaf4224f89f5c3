// A C++ enclave: greets the name it is given, through std::string.
#include <moat/enclave.h>

#include <string>

static int greet(void *payload, const moat_msg *in, moat_msg *out)
{
	const void *p;
	size_t n;

	(void)payload;
	if (moat_msg_item(in, 0, &p, &n) < 0)
		return 1;
	std::string reply = "Hello, " + std::string(static_cast<const char *>(p), n) + ", from C++!";
	return moat_msg_push_str(out, reply.c_str());
}

static int init(const void *config, size_t len)
{
	(void)config;
	(void)len;
	return moat_entry_register(MOAT_SELECTOR_RUN, greet, nullptr);
}

MOAT_ENCLAVE(init)
