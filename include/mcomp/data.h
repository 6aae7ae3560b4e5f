/* SPDX-License-Identifier: MIT */
/*
 * mcomp/data.h - labelled data sets, read from IDX files (the MNIST family).
 *
 * A split is named by a path prefix: "DIR/train" means
 * DIR/train-images-idx3-ubyte and DIR/train-labels-idx1-ubyte, each gzip'd
 * (".gz") or not. Pixels are scaled to [0, 1] floats.
 */
#ifndef MCOMP_DATA_H
#define MCOMP_DATA_H

#include <mcomp/common.h>

#ifdef __cplusplus
extern "C" {
#endif

struct mc_dataset {
	char *source; /* what was loaded, for messages */
	int64_t n;
	int ndim;
	int64_t shape[3]; /* per sample: [channels, height, width] */
	int64_t sample_numel;
	float *x;	/* [n, sample_numel], values in [0, 1] */
	uint8_t *y;	/* [n] */
	int n_classes;	/* 1 + the largest label */
};

/* Loads images and labels from IDX files (gzip'd or not), checking every
 * header field against the file size. NULL with err (MC_EIO, MC_ECORRUPT). */
MC_API struct mc_dataset *mc_idx_load(const char *images, const char *labels,
				      struct mc_err *err);
/* Reads only the header of an IDX image file: the number of images and the
 * per-sample shape [1, rows, cols]. Cheap enough for validation. */
MC_API int mc_idx_peek(const char *images, int64_t *n, int64_t shape[3], struct mc_err *err);
/* Loads the split at prefix (see above), trying .gz first. */
MC_API struct mc_dataset *mc_idx_load_prefix(const char *prefix, struct mc_err *err);
/* Samples [first, first + count) as a new data set; count < 0: to the end. */
MC_API struct mc_dataset *mc_dataset_slice(const struct mc_dataset *d, int64_t first,
					   int64_t count, struct mc_err *err);
MC_API void mc_dataset_free(struct mc_dataset *d);

#ifdef __cplusplus
}
#endif
#endif
