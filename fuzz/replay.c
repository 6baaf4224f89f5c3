/* The replay driver of the fuzz targets (see replay.h). */
#include <dirent.h>
#include <string.h>
#include <sys/stat.h>

#include "replay.h"

static int read_all(const char *path, uint8_t **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL;
	size_t cap = 0, n = 0;

	if (!f)
		return -1;
	for (;;) {
		size_t got;

		if (n == cap) {
			uint8_t *nb = realloc(buf, cap ? 2 * cap : 4096);

			if (!nb) {
				free(buf);
				fclose(f);
				return -1;
			}
			buf = nb;
			cap = cap ? 2 * cap : 4096;
		}
		got = fread(buf + n, 1, cap - n, f);
		n += got;
		if (got == 0)
			break;
	}
	fclose(f);
	*out = buf;
	*len = n;
	return 0;
}

/* Run one seed, every prefix of it, and (for small seeds) every single-byte corruption. */
static int replay_file(const char *name, const char *path)
{
	uint8_t *data = NULL, *copy;
	size_t len = 0, i;

	if (read_all(path, &data, &len) < 0) {
		fprintf(stderr, "%s: cannot read %s\n", name, path);
		return -1;
	}
	LLVMFuzzerTestOneInput(data, len);
	copy = malloc(len ? len : 1);
	CHECK(copy != NULL);
	for (i = 0; i < len; i++) {
		memcpy(copy, data, i);
		LLVMFuzzerTestOneInput(copy, i);
	}
	if (len <= 4096) {
		static const uint8_t values[] = {0x00, 0x01, 0x7f, 0x80, 0xff};

		for (i = 0; i < len; i++) {
			size_t v;

			for (v = 0; v < sizeof(values); v++) {
				memcpy(copy, data, len);
				copy[i] = values[v];
				LLVMFuzzerTestOneInput(copy, len);
				copy[i] = data[i] ^ 0x01;
				LLVMFuzzerTestOneInput(copy, len);
			}
		}
	}
	free(copy);
	free(data);
	return 0;
}

int moat_fuzz_replay(const char *name, int argc, char **argv)
{
	int i, files = 0, failed = 0;

	for (i = 1; i < argc; i++) {
		struct stat st;
		DIR *d;
		struct dirent *ent;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "%s: %s: no such file or directory\n", name, argv[i]);
			failed = 1;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			failed |= replay_file(name, argv[i]) < 0;
			files++;
			continue;
		}
		d = opendir(argv[i]);
		if (!d) {
			failed = 1;
			continue;
		}
		while ((ent = readdir(d)) != NULL) {
			char path[4096];

			if (ent->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s", argv[i], ent->d_name);
			failed |= replay_file(name, path) < 0;
			files++;
		}
		closedir(d);
	}
	/* The empty input is always worth a try. */
	LLVMFuzzerTestOneInput((const uint8_t *)"", 0);
	printf("%s: replayed %d seed file(s) with truncations and corruptions\n", name, files);
	return failed || files == 0;
}
