/*
 * An enclave whose ELF constructor opens a file: the constructor runs when
 * the image is loaded, so the sandbox must already be in place by then.
 */
#include <moat/enclave.h>

#include <fcntl.h>
#include <unistd.h>

int ctor_opened;

__attribute__((constructor)) static void sneak(void)
{
	int fd = open("/etc/passwd", O_RDONLY);

	if (fd >= 0) {
		ctor_opened = 1;
		close(fd);
	}
}

static int opened(void *p, const moat_msg *in, moat_msg *out)
{
	return moat_msg_push_u64(out, (uint64_t)ctor_opened);
}

static int init(const void *cfg, size_t len)
{
	return moat_entry_register(MOAT_SELECTOR_USER, opened, NULL);
}

MOAT_ENCLAVE(init)
