/* SPDX-License-Identifier: MIT */
/*
 * data_int.h - what the data set readers share (core/io/data.c, idx.c,
 * npy.c): making a data set, filling it from raw arrays with the
 * preprocessing, and each format's loader. Not installed.
 */
#ifndef MCOMP_DATA_INT_H
#define MCOMP_DATA_INT_H

#include <mcomp/data.h>

/* The element type of a raw array of inputs or labels, as read from a file. */
enum mc_raw_type { MC_RAW_U8, MC_RAW_F32, MC_RAW_I32, MC_RAW_I64 };

/* An empty data set of n samples of shape[0..ndim), storage allocated
 * (x and y zeroed, n_classes 0). NULL with err on ENOMEM. */
struct mc_dataset *mc_dataset_new(const char *source, int64_t n, int ndim, const int64_t *shape,
				  struct mc_err *err);
/* Checks pre (scale, std > 0, the list lengths) against channels; what names
 * the data for messages. 0 or MC_EINVAL. */
int mc_preprocess_check(const struct mc_preprocess *pre, int64_t channels, const char *what,
			struct mc_err *err);
/*
 * Fills d->x from raw (d->n samples of d->sample_numel little-endian values
 * of type t, MC_RAW_U8 or MC_RAW_F32) with the preprocessing pre (NULL: the
 * defaults). MC_ECORRUPT for a non-finite input or result, MC_EINVAL for a
 * bad pre; what names the data for messages.
 */
int mc_data_fill_x(struct mc_dataset *d, const void *raw, enum mc_raw_type t,
		   const struct mc_preprocess *pre, const char *what, struct mc_err *err);
/* Fills d->y and d->n_classes from raw (d->n little-endian integers of type
 * t); MC_ECORRUPT for a label outside [0, 255]. */
int mc_data_fill_y(struct mc_dataset *d, const void *raw, enum mc_raw_type t, const char *what,
		   struct mc_err *err);

/* idx.c: mc_idx_load with a preprocessing; labels NULL: inputs only. */
struct mc_dataset *mc_idx_load_pre(const char *images, const char *labels,
				   const struct mc_preprocess *pre, struct mc_err *err);
/* npy.c: the loaders of MC_DATA_NPY and MC_DATA_NPZ sources. */
struct mc_dataset *mc_npy_load(const struct mc_data_source *src, struct mc_err *err);
int mc_npy_peek(const struct mc_data_source *src, int64_t *n, int *ndim, int64_t shape[3],
		struct mc_err *err);

#endif
