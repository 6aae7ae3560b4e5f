/* SPDX-License-Identifier: MIT */
/*
 * mcomp/data.h - labelled data sets: IDX files (the MNIST family) and NumPy
 * arrays (.npy files, or arrays of an .npz archive), with the preprocessing
 * of each split.
 *
 * A split is a source (struct mc_data_source) and a preprocessing (struct
 * mc_preprocess) applied to every input value x as it is loaded:
 *
 *	x' = (x * scale - mean[c]) / std[c]		c: the channel of x
 *
 * computed in double and rounded once to float. scale defaults to 1/255 for
 * uint8 inputs (IDX images, uint8 arrays: x' in [0, 1]) and to 1 for float32
 * arrays; mean to 0 and std to 1. (1/255 in double gives the float x / 255
 * exactly, as IDX data always had.)
 *
 * Inputs. IDX images [N, rows, cols] and arrays are read as samples of
 *
 *	array [N, C, H, W] (NCHW)   sample [C, H, W]   channels: C
 *	array [N, H, W]             sample [1, H, W]   one channel (as IDX)
 *	array [N, features]         sample [features]  each feature a channel
 *
 * Arrays are C order (Fortran order is refused), inputs of dtype uint8 or
 * little-endian float32 (finite values only). Labels are an integer array
 * [N] (uint8, int32 or int64) of class indices in [0, 255]; n_classes is 1
 * + the largest. An IDX split is named by a path prefix: "DIR/train" means
 * DIR/train-images-idx3-ubyte and DIR/train-labels-idx1-ubyte, each gzip'd
 * (".gz") or not. Every size, count and offset of every file is checked
 * before it is used: these are untrusted files.
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
	int64_t shape[3]; /* per sample: [channels, height, width], or [features] */
	int64_t sample_numel;
	float *x;	/* [n, sample_numel], preprocessed */
	uint8_t *y;	/* [n]; all 0 for a source without labels */
	int n_classes;	/* 1 + the largest label; 0 without labels */
};

enum mc_data_format {
	MC_DATA_IDX, /* x, y: the IDX images and labels files */
	MC_DATA_NPY, /* x, y: two .npy files */
	MC_DATA_NPZ, /* file: the .npz archive; x, y: the names of two of its arrays */
	MC_DATA_FORMAT_COUNT,
};

/* The preprocessing of a split's inputs (see above). */
struct mc_preprocess {
	double scale;		  /* > 0; 0: the default of the input dtype */
	int n_mean, n_std;	  /* 0 (default), 1 (every channel) or one per channel */
	const double *mean, *std; /* borrowed; std > 0 */
};

/* Where a split's samples come from. Strings are borrowed. */
struct mc_data_source {
	enum mc_data_format format;
	const char *file;	  /* MC_DATA_NPZ: the archive; else NULL */
	const char *x, *y;	  /* inputs and labels (see the formats); y NULL: inputs only */
	struct mc_preprocess pre;
};

/* "idx", "npy", "npz". */
MC_API const char *mc_data_format_name(enum mc_data_format f);

/*
 * Loads the split src describes, preprocessed. NULL with err set: MC_EIO (a
 * file cannot be read), MC_ECORRUPT (a malformed file, a shape or count that
 * does not add up, a dtype or order mcomp does not read, a label out of
 * range, a non-finite input), MC_EINVAL (a bad preprocessing: a mean or std
 * list that does not match the channels, std <= 0), MC_ENOMEM. Without
 * labels (src->y NULL) y is all 0 and n_classes 0.
 */
MC_API struct mc_dataset *mc_data_load(const struct mc_data_source *src, struct mc_err *err);
/*
 * Reads only the headers of src's files: the number of samples and the
 * per-sample shape (*ndim dimensions into shape), checking what headers
 * tell (dtypes, order, ranks, the label count, the preprocessing lists
 * against the channels). Cheap enough for validation. 0, or an error as
 * mc_data_load's.
 */
MC_API int mc_data_peek(const struct mc_data_source *src, int64_t *n, int *ndim,
			int64_t shape[3], struct mc_err *err);

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

/*
 * Writes data, a float32 array of ndim (1 to 8) dimensions shape, as a .npy
 * file (version 1.0, '<f4', C order) to path, atomically: a temporary file
 * beside it renamed into place. 0, or MC_EIO / MC_ENOMEM / MC_EINVAL.
 */
MC_API int mc_npy_write_f32(const char *path, int ndim, const int64_t *shape, const float *data,
			    struct mc_err *err);

#ifdef __cplusplus
}
#endif
#endif
