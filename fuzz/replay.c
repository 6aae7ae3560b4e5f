// SPDX-License-Identifier: MIT
/*
 * replay.c - runs a harness of fuzz/ without libFuzzer: each file named on
 * the command line, and each file of each folder named (in name order), is
 * read and handed to LLVMFuzzerTestOneInput once. make check builds every
 * harness with this driver and replays the seed corpora and the crashes
 * found so far (fuzz/regress/) through it (tests/fuzz_replay.sh), so any
 * compiler and any build replays them; under make check-sanitize, ASan and
 * UBSan watch.
 *
 * Exits 0 when every input ran, 1 when one could not be read; a crash is
 * the harness's own (abort, a signal, a sanitizer report). The memory is
 * limited (limit_memory below).
 */
#include "fuzz.h"

#include <errno.h>
#include <sys/resource.h>

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif

/*
 * A big allocation that an input only claims costs nothing until touched,
 * so it would go unseen here, where libFuzzer's -malloc_limit_mb is not:
 * the address space is limited to FUZZ_REPLAY_MEMORY_MB (default 2048), so
 * that it fails, and the harness aborts on the MC_ENOMEM (fz_refused).
 * Under ASan (which reserves terabytes of shadow) tests/fuzz_replay.sh sets
 * max_allocation_size_mb instead.
 */
static void limit_memory(void)
{
#ifndef SANITIZED
	const char *s = getenv("FUZZ_REPLAY_MEMORY_MB");
	struct rlimit rl;
	long mb = s ? atol(s) : 2048;

	if (mb <= 0 || getrlimit(RLIMIT_AS, &rl))
		return;
	if (rl.rlim_max == RLIM_INFINITY || (rlim_t)mb << 20 < rl.rlim_max)
		rl.rlim_cur = (rlim_t)mb << 20;
	setrlimit(RLIMIT_AS, &rl);
#endif
}

int fz_replaying = 1;

static int replay_file(const char *path, int verbose)
{
	FILE *f = fopen(path, "rb");
	uint8_t *buf = NULL, *in;
	size_t n = 0, cap = 0, r;

	if (!f) {
		fprintf(stderr, "%s: cannot open: %s\n", path, strerror(errno));
		return -1;
	}
	do {
		if (n == cap) {
			cap = cap ? 2 * cap : 65536;
			buf = realloc(buf, cap);
			if (!buf)
				abort();
		}
		r = fread(buf + n, 1, cap - n, f);
		n += r;
	} while (r);
	if (ferror(f)) {
		fprintf(stderr, "%s: read error\n", path);
		fclose(f);
		free(buf);
		return -1;
	}
	fclose(f);
	if (verbose)
		fprintf(stderr, "replay: %s (%zu bytes)\n", path, n);
	/* a copy of exactly n bytes, so ASan sees any read past the input */
	in = malloc(n ? n : 1);
	if (!in)
		abort();
	memcpy(in, buf, n);
	free(buf);
	LLVMFuzzerTestOneInput(in, n);
	free(in);
	return 0;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

int main(int argc, char **argv)
{
	int verbose = getenv("FUZZ_REPLAY_VERBOSE") != NULL, bad = 0, ran = 0;

	limit_memory();
	LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++) {
		struct dirent **ents;
		struct stat st;
		int n;

		if (stat(argv[i], &st) < 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			bad = 1;
			continue;
		}
		if (!S_ISDIR(st.st_mode)) {
			bad |= replay_file(argv[i], verbose) < 0;
			ran++;
			continue;
		}
		n = scandir(argv[i], &ents, NULL, by_name);
		if (n < 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			bad = 1;
			continue;
		}
		for (int k = 0; k < n; k++) {
			char path[8192];

			snprintf(path, sizeof(path), "%s/%s", argv[i], ents[k]->d_name);
			if (ents[k]->d_name[0] != '.' && stat(path, &st) == 0 &&
			    S_ISREG(st.st_mode)) {
				bad |= replay_file(path, verbose) < 0;
				ran++;
			}
			free(ents[k]);
		}
		free(ents);
	}
	printf("replayed %d inputs\n", ran);
	return bad;
}
