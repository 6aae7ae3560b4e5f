// SPDX-License-Identifier: MIT
/*
 * cascade.c - fuzzes cascade files (mc_cascade_load): the "mcomp.cascade"
 * metadata (format, confidence, stages, thresholds, each stage's
 * architecture) and the stage-prefixed tensors of every member.
 *
 * As for fuzz/model.c, an input starting with '{' is the JSON header,
 * FZ_SEP, then the data section (the harness prepends the length); any
 * other is a whole file. What loads is saved and loaded again and must give
 * the same bytes; mc_file_is_cascade must agree.
 */
#include "fuzz.h"

#include <mcomp/cascade.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static void write_file(char *path, size_t size, const uint8_t *data, size_t n)
{
	struct fz_part parts[2];
	uint8_t *file;
	size_t len;

	if (!n || data[0] != '{' || fz_split(data, n, parts, 2) != 2) {
		fz_write(path, size, "cascade.safetensors", data, n);
		return;
	}
	len = 8 + parts[0].n + parts[1].n;
	file = malloc(len);
	if (!file)
		abort();
	for (int i = 0; i < 8; i++)
		file[i] = (uint8_t)((uint64_t)parts[0].n >> (8 * i));
	memcpy(file + 8, parts[0].p, parts[0].n);
	memcpy(file + 8 + parts[0].n, parts[1].p, parts[1].n);
	fz_write(path, size, "cascade.safetensors", file, len);
	free(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mc_err err = { 0 };
	struct mc_cascade *c, *back;
	void *a = NULL, *b = NULL;
	size_t na, nb;
	char path[4352];

	write_file(path, sizeof(path), data, size);
	c = mc_cascade_load(path, &err);
	if (!c) {
		fz_refused("cascade", &err);
		return 0;
	}
	fz_accepted("cascade");
	if (!mc_file_is_cascade(path))
		abort();
	if (c->n_stages < 1 || c->n_stages > MC_CASCADE_MAX_STAGES)
		abort();
	if (mc_cascade_serialize(c, &a, &na, &err)) {
		fprintf(stderr, "a cascade that loaded cannot be written: %s\n", err.msg);
		abort();
	}
	fz_write(path, sizeof(path), "again.safetensors", a, na);
	back = mc_cascade_load(path, &err);
	if (!back) {
		fprintf(stderr, "saved cascade does not load: %s\n", err.msg);
		abort();
	}
	if (mc_cascade_serialize(back, &b, &nb, &err) || na != nb || memcmp(a, b, na)) {
		fprintf(stderr, "saved cascade loads as another one\n");
		abort();
	}
	free(a);
	free(b);
	mc_cascade_free(back);
	mc_cascade_free(c);
	return 0;
}
