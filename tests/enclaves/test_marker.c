/*
 * An enclave whose ELF constructor leaves a trace: when $MOAT_TEST_MARKER
 * names a file, the constructor creates it. Loading this image with a wrong
 * measurement pin must leave no such file, which shows that no code in the
 * image ran (the constructor is the first code dlopen would run).
 */
#include <moat/enclave.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "test_enclave.h"

__attribute__((constructor)) static void leave_marker(void)
{
	const char *path = getenv(T_MARKER_ENV);
	int fd;

	if (!path || !*path)
		return;
	fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd >= 0)
		close(fd);
}

static int ping(void *payload, const moat_msg *in, moat_msg *out)
{
	return moat_msg_push_str(out, "marker");
}

static int init(const void *config, size_t len)
{
	return moat_entry_register(MOAT_SELECTOR_USER, ping, NULL);
}

MOAT_ENCLAVE(init)
