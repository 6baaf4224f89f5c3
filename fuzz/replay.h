/*
 * What the fuzz targets share: their entry point, a check that aborts (so
 * libFuzzer and the replay driver both see a failure), and the replay
 * driver used when the targets are built without libFuzzer.
 */
#ifndef MOAT_FUZZ_REPLAY_H
#define MOAT_FUZZ_REPLAY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                      \
	do {                                                                                             \
		if (!(cond)) {                                                                           \
			fprintf(stderr, "fuzz: check failed at %s:%d: %s\n", __FILE__, __LINE__, #cond); \
			abort();                                                                         \
		}                                                                                        \
	} while (0)

/*
 * Replay the files and directories on the command line (the seed corpus),
 * every truncation of each seed and, for small seeds, every single-byte
 * corruption. Returns the process's exit status.
 */
int moat_fuzz_replay(const char *name, int argc, char **argv);

#endif
