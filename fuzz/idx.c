// SPDX-License-Identifier: MIT
/*
 * idx.c - fuzzes the IDX reader (mc_idx_peek, mc_idx_load), gzip'd or raw:
 * zlib reads both, so the corpus holds each kind. The input is the images
 * file, then (after FZ_SEP, optional) the labels file.
 *
 * What it accepts must agree with itself: peek and load see the same
 * shape, every value is in [0, 1] (bytes / 255) and every label below
 * n_classes.
 */
#include "fuzz.h"

#include <mcomp/data.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mc_err err = { 0 }, perr = { 0 };
	struct fz_part parts[2];
	char images[4352], labels[4352];
	struct mc_dataset *d;
	int64_t n = -1, shape[3] = { 0 };
	int np = fz_split(data, size, parts, 2), peeked;

	fz_write(images, sizeof(images), "data-images-idx3-ubyte", parts[0].p, parts[0].n);
	if (np == 2)
		fz_write(labels, sizeof(labels), "data-labels-idx1-ubyte", parts[1].p, parts[1].n);
	peeked = mc_idx_peek(images, &n, shape, &perr) == 0;
	if (!peeked)
		fz_refused("peek", &perr);
	d = mc_idx_load(images, np == 2 ? labels : NULL, &err);
	if (!d) {
		fz_refused("load", &err);
		return 0;
	}
	fz_accepted("load");
	/* what loads, peeks the same */
	if (!peeked || n != d->n || shape[0] != d->shape[0] || shape[1] != d->shape[1] ||
	    shape[2] != d->shape[2] || d->sample_numel != shape[0] * shape[1] * shape[2])
		abort();
	for (int64_t i = 0; i < d->n * d->sample_numel; i++)
		if (!(d->x[i] >= 0.0f && d->x[i] <= 1.0f))
			abort();
	for (int64_t i = 0; i < d->n; i++)
		if (np == 2 ? d->y[i] >= d->n_classes : d->y[i] != 0)
			abort();
	mc_dataset_free(d);
	return 0;
}
