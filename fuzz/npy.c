// SPDX-License-Identifier: MIT
/*
 * npy.c - fuzzes the NumPy readers (mc_data_peek, mc_data_load): .npy
 * headers (versions 1 to 3, the dict literal, dtypes, shapes, order) and
 * .npz archives (zip records, zip64 extras, stored and deflated members).
 *
 * An input starting with "PK" is an .npz archive read for its arrays "x"
 * and "y" (members x.npy and y.npy); any other is an .npy file of inputs,
 * then (after FZ_SEP, optional) one of labels.
 *
 * What loads must agree with what peek said, hold finite values only and
 * labels below n_classes, and survive a round trip: the inputs written with
 * mc_npy_write_f32 read back as the same floats.
 */
#include "fuzz.h"

#include <mcomp/data.h>

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	return 0;
}

static void round_trip(const struct mc_dataset *d)
{
	struct mc_err err = { 0 };
	struct mc_data_source src = { .format = MC_DATA_NPY };
	struct mc_dataset *back;
	int64_t shape[4] = { d->n };
	char path[4352];

	for (int i = 0; i < d->ndim; i++)
		shape[1 + i] = d->shape[i];
	fz_path(path, sizeof(path), "again.npy");
	if (d->ndim == 3 && d->shape[0] == 1) /* [N, 1, H, W] reads back as [N, H, W] */
		shape[1] = shape[2], shape[2] = shape[3], shape[3] = 1;
	if (mc_npy_write_f32(path, d->ndim == 3 && d->shape[0] == 1 ? 3 : 1 + d->ndim, shape,
			     d->x, &err))
		abort();
	src.x = path;
	back = mc_data_load(&src, &err);
	if (!back) {
		fprintf(stderr, "written inputs do not read back: %s\n", err.msg);
		abort();
	}
	if (back->n != d->n || back->sample_numel != d->sample_numel ||
	    memcmp(back->x, d->x, (size_t)(d->n * d->sample_numel) * sizeof(float))) {
		fprintf(stderr, "written inputs read back as others\n");
		abort();
	}
	mc_dataset_free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mc_err err = { 0 }, perr = { 0 };
	struct mc_data_source src = { .format = MC_DATA_NPY };
	struct fz_part parts[2];
	char x[4352], y[4352];
	struct mc_dataset *d;
	int64_t n = -1, shape[3] = { 0 };
	int ndim = 0, peeked;

	if (size >= 2 && data[0] == 'P' && data[1] == 'K') {
		fz_write(x, sizeof(x), "data.npz", data, size);
		src.format = MC_DATA_NPZ;
		src.file = x;
		src.x = "x";
		src.y = "y";
	} else {
		int np = fz_split(data, size, parts, 2);

		fz_write(x, sizeof(x), "x.npy", parts[0].p, parts[0].n);
		src.x = x;
		if (np == 2) {
			fz_write(y, sizeof(y), "y.npy", parts[1].p, parts[1].n);
			src.y = y;
		}
	}
	peeked = mc_data_peek(&src, &n, &ndim, shape, &perr) == 0;
	if (!peeked)
		fz_refused("peek", &perr);
	d = mc_data_load(&src, &err);
	if (!d) {
		fz_refused("load", &err);
		return 0;
	}
	fz_accepted("load");
	if (!peeked || n != d->n || ndim != d->ndim)
		abort();
	for (int i = 0; i < ndim; i++)
		if (shape[i] != d->shape[i])
			abort();
	for (int64_t i = 0; i < d->n * d->sample_numel; i++)
		if (d->x[i] - d->x[i] != 0.0f) /* NaN or inf */
			abort();
	for (int64_t i = 0; i < d->n; i++)
		if (src.y ? d->y[i] >= d->n_classes : d->y[i] != 0)
			abort();
	if (d->n > 0)
		round_trip(d);
	mc_dataset_free(d);
	return 0;
}
