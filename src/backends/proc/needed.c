/*
 * The libraries an enclave image needs (its DT_NEEDED entries), read by the
 * host from the bytes it measured. The runner loads them before it enters
 * its sandbox, where nothing can be opened from disk, so a missing one
 * fails the load naming it instead of stopping the enclave at its first
 * open. Only plain names are passed (the runner finds them in the system's
 * library path): a name with a directory in it is left to the image's own
 * load, which the sandbox refuses with the path in the error.
 */
#include <gelf.h>
#include <libelf.h>
#include <stdlib.h>
#include <string.h>

#include "backends/proc/proc.h"
#include "core/internal.h"

#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define NATIVE_DATA ELFDATA2LSB
#else
#define NATIVE_DATA ELFDATA2MSB
#endif

/* A name the runner may be given on its command line. */
static int plain_name(const char *name)
{
	size_t i, len = name ? strlen(name) : 0;

	if (len == 0 || len > 200)
		return 0;
	for (i = 0; i < len; i++)
		if (name[i] == '/' || (unsigned char)name[i] <= 0x20 || name[i] == 0x7f)
			return 0;
	return 1;
}

/* Add the DT_NEEDED names of one dynamic section to list (at most MOAT_PROC_MAX_NEEDED). */
static int add_section(Elf *elf, Elf_Scn *scn, const GElf_Shdr *sh, char **list, size_t *n)
{
	Elf_Data *data = elf_getdata(scn, NULL);
	GElf_Dyn dyn;
	size_t i;

	for (i = 0; data && sh->sh_entsize && i < sh->sh_size / sh->sh_entsize; i++) {
		const char *name;

		if (!gelf_getdyn(data, (int)i, &dyn) || dyn.d_tag != DT_NEEDED)
			continue;
		name = elf_strptr(elf, sh->sh_link, dyn.d_un.d_val);
		if (!plain_name(name) || *n == MOAT_PROC_MAX_NEEDED)
			continue;
		if (!(list[*n] = strdup(name)))
			return MOAT_ENOMEM;
		(*n)++;
	}
	return 0;
}

int moat__proc_needed(const uint8_t *bytes, size_t len, char ***out, size_t *count)
{
	char **list = calloc(MOAT_PROC_MAX_NEEDED, sizeof(*list));
	Elf_Scn *scn = NULL;
	size_t n = 0;
	Elf *elf;
	int rc = 0;

	*out = NULL;
	*count = 0;
	if (!list)
		return MOAT_ENOMEM;
	elf_version(EV_CURRENT);
	/*
	 * Not an ELF file, a damaged one or one of the other byte order (which
	 * libelf would convert in place, in bytes the runner still measures):
	 * the runner's own checks report it.
	 */
	elf = len > EI_DATA && memcmp(bytes, ELFMAG, SELFMAG) == 0 && bytes[EI_DATA] == NATIVE_DATA
	          ? elf_memory((char *)bytes, len)
	          : NULL;
	while (elf && rc == 0 && (scn = elf_nextscn(elf, scn)) != NULL) {
		GElf_Shdr sh;

		if (gelf_getshdr(scn, &sh) && sh.sh_type == SHT_DYNAMIC)
			rc = add_section(elf, scn, &sh, list, &n);
	}
	if (elf)
		elf_end(elf);
	if (rc < 0) {
		moat__proc_needed_free(list, n);
		return rc;
	}
	*out = list;
	*count = n;
	return 0;
}

void moat__proc_needed_free(char **names, size_t count)
{
	size_t i;

	for (i = 0; names && i < count; i++)
		free(names[i]);
	free(names);
}
