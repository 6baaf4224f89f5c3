/*
 * moatd's configuration file (--config FILE), read with inih: INI lines
 * "key = value", each key a long option's name (listen = 127.0.0.1:7070,
 * allow-upload = true), at the top of the file or in a [moatd] section;
 * "#" or ";" start a comment. The command line is applied after the file,
 * so its options win.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "moatd/moatd.h"

/* Every value a file gave: the configuration points into them until exit. */
typedef struct kept_value {
	struct kept_value *next;
	char value[];
} kept_value;

static kept_value *kept;

static const char *keep(const char *value)
{
	size_t n = strlen(value) + 1;
	kept_value *k = malloc(sizeof(*k) + n);

	if (!k)
		return NULL;
	memcpy(k->value, value, n);
	k->next = kept;
	kept = k;
	return k->value;
}

typedef struct file_ctx {
	moatd_config *c;
	const char *path;
	int reported; /* on_entry reported an error */
} file_ctx;

static int on_entry(void *user, const char *section, const char *name, const char *value)
{
	file_ctx *f = user;
	const char *v;
	int rc;

	if (*section && strcmp(section, "moatd") != 0) {
		fprintf(stderr, "moatd: %s: unknown section [%s] (keys go at the top or in [moatd])\n",
		        f->path, section);
		f->reported = 1;
		return 0;
	}
	if (!(v = keep(value))) {
		fprintf(stderr, "moatd: %s: out of memory\n", f->path);
		f->reported = 1;
		return 0;
	}
	rc = moatd_option_set(f->c, name, v);
	if (rc == -2)
		fprintf(stderr, "moatd: %s: unknown key '%s' (keys are moatd's long options, see --help)\n",
		        f->path, name);
	else if (rc < 0)
		fprintf(stderr, "moatd: %s: bad value '%s' for %s\n", f->path, value, name);
	f->reported |= rc < 0;
	return rc == 0;
}

int moatd_config_file_load(moatd_config *c, const char *path)
{
	file_ctx f = {c, path, 0};
	int rc = ini_parse(path, on_entry, &f);

	if (rc == -1)
		fprintf(stderr, "moatd: cannot read --config %s: %s\n", path, strerror(errno));
	else if (rc == -2)
		fprintf(stderr, "moatd: %s: out of memory\n", path);
	else if (rc > 0 && !f.reported)
		fprintf(stderr, "moatd: %s:%d: not a \"key = value\" line\n", path, rc);
	return rc == 0 ? 0 : -1;
}

void moatd_config_file_free(void)
{
	while (kept) {
		kept_value *next = kept->next;

		free(kept);
		kept = next;
	}
}
