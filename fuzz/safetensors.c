// SPDX-License-Identifier: MIT
/*
 * safetensors.c - fuzzes the safetensors reader (mc_st_parse): the 8-byte
 * header length, the JSON header, dtypes, shapes, data offsets and the
 * metadata, on raw file bytes. A refusal must carry a message; what is
 * accepted must be self-consistent: every tensor lies inside the file (each
 * byte is read, so ASan sees any that does not) and is found by its name.
 */
#include "fuzz.h"

#include <mcomp/safetensors.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mc_err err = { 0 };
	struct mc_st_file *f;
	void *buf = malloc(size ? size : 1);
	const uint8_t *lo, *hi;

	if (!buf)
		return 0;
	memcpy(buf, data, size);
	f = mc_st_parse(buf, size, "fuzz.safetensors", &err); /* owns buf now */
	if (!f) {
		fz_refused("safetensors", &err);
		return 0;
	}
	fz_accepted("safetensors");
	lo = f->buf;
	hi = lo + f->len;
	for (int i = 0; i < f->n; i++) {
		const struct mc_st_entry *e = &f->entries[i];
		const uint8_t *p = e->data;
		volatile uint8_t sum = 0;

		if (e->nbytes && (p < lo || p > hi || e->nbytes > (size_t)(hi - p)))
			abort(); /* a tensor outside the file */
		for (size_t k = 0; k < e->nbytes; k++)
			sum ^= p[k];
		if (mc_st_find(f, e->name) == NULL)
			abort();
		(void)sum;
	}
	for (int i = 0; i < f->n_meta; i++)
		if (!mc_st_meta(f, f->meta_keys[i]))
			abort();
	mc_st_free(f);
	return 0;
}
