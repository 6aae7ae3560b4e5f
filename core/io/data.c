// SPDX-License-Identifier: MIT
/*
 * data.c - data sets whatever their format: the table of formats, making
 * and slicing data sets, and the preprocessing every reader applies as it
 * fills a data set (mcomp/data.h states the rules).
 *
 * A format is one row of the table below and its loader and header peek,
 * in a file of its own (idx.c, npy.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/data_int.h"

static struct mc_dataset *idx_load(const struct mc_data_source *src, struct mc_err *err)
{
	return mc_idx_load_pre(src->x, src->y, &src->pre, err);
}

static int idx_peek(const struct mc_data_source *src, int64_t *n, int *ndim, int64_t shape[3],
		    struct mc_err *err)
{
	int ret = mc_idx_peek(src->x, n, shape, err);

	if (ret)
		return ret;
	*ndim = 3;
	return mc_preprocess_check(&src->pre, shape[0], src->x, err);
}

static const struct data_format {
	const char *name;
	struct mc_dataset *(*load)(const struct mc_data_source *src, struct mc_err *err);
	int (*peek)(const struct mc_data_source *src, int64_t *n, int *ndim, int64_t shape[3],
		    struct mc_err *err);
} formats[] = {
    [MC_DATA_IDX] = {"idx", idx_load, idx_peek},
    [MC_DATA_NPY] = {"npy", mc_npy_load, mc_npy_peek},
    [MC_DATA_NPZ] = {"npz", mc_npy_load, mc_npy_peek},
};
_Static_assert(sizeof(formats) / sizeof(formats[0]) == MC_DATA_FORMAT_COUNT,
	       "one row of formats per enum mc_data_format");

MC_API const char *mc_data_format_name(enum mc_data_format f)
{
	return (unsigned)f < MC_DATA_FORMAT_COUNT ? formats[f].name : "?";
}

static int bad_format(const struct mc_data_source *src, struct mc_err *err)
{
	return mc_err_set(err, MC_EINVAL, "data source of unknown format %d", (int)src->format);
}

MC_API struct mc_dataset *mc_data_load(const struct mc_data_source *src, struct mc_err *err)
{
	if ((unsigned)src->format >= MC_DATA_FORMAT_COUNT) {
		bad_format(src, err);
		return NULL;
	}
	return formats[src->format].load(src, err);
}

MC_API int mc_data_peek(const struct mc_data_source *src, int64_t *n, int *ndim, int64_t shape[3],
			struct mc_err *err)
{
	if ((unsigned)src->format >= MC_DATA_FORMAT_COUNT)
		return bad_format(src, err);
	return formats[src->format].peek(src, n, ndim, shape, err);
}

/* ---------------------------------------------------------------- data sets */

MC_API void mc_dataset_free(struct mc_dataset *d)
{
	if (!d)
		return;
	free(d->source);
	mc_free(d->x);
	mc_free(d->y);
	free(d);
}

struct mc_dataset *mc_dataset_new(const char *source, int64_t n, int ndim, const int64_t *shape,
				  struct mc_err *err)
{
	struct mc_dataset *d = calloc(1, sizeof(*d));
	size_t numel = 1, total;

	if (!d)
		goto oom;
	d->source = strdup(source);
	d->n = n;
	d->ndim = ndim;
	for (int i = 0; i < ndim; i++) {
		d->shape[i] = shape[i];
		if (mc_mul_overflow(numel, (size_t)shape[i], &numel))
			goto oom;
	}
	d->sample_numel = (int64_t)numel;
	if (mc_mul_overflow((size_t)n, numel, &total))
		goto oom;
	d->x = mc_calloc(total, sizeof(float));
	d->y = mc_calloc((size_t)n, 1);
	if (!d->source || !d->x || !d->y)
		goto oom;
	return d;
oom:
	mc_err_set(err, MC_ENOMEM, "%s: out of memory for %lld samples", source, (long long)n);
	mc_dataset_free(d);
	return NULL;
}

MC_API struct mc_dataset *mc_dataset_slice(const struct mc_dataset *d, int64_t first, int64_t count,
					   struct mc_err *err)
{
	struct mc_dataset *s;

	if (first < 0 || first > d->n)
		goto range;
	if (count < 0)
		count = d->n - first;
	if (count > d->n - first)
		goto range;
	if (count == 0) {
		mc_err_set(err, MC_EINVAL,
			   "%s: slice of 0 samples from sample %lld; a data split needs at least "
			   "one sample",
			   d->source, (long long)first);
		return NULL;
	}
	s = mc_dataset_new(d->source, count, d->ndim, d->shape, err);
	if (!s)
		return NULL;
	memcpy(s->x, d->x + first * d->sample_numel,
	       (size_t)count * (size_t)d->sample_numel * sizeof(float));
	memcpy(s->y, d->y + first, (size_t)count);
	/* The classes of the data set, not of the slice: a model's output width
	 * must not depend on which samples were taken. */
	s->n_classes = d->n_classes;
	return s;

range:
	mc_err_set(err, MC_EINVAL,
		   "%s: slice of %lld samples from sample %lld is out of range; the data set "
		   "has %lld samples",
		   d->source, (long long)count, (long long)first, (long long)d->n);
	return NULL;
}

/* ---------------------------------------------------------------- preprocessing */

static int check_list(const char *what, const char *key, int n, const double *v, int64_t channels,
		      int positive, struct mc_err *err)
{
	if (n && (n != 1 && n != channels))
		return mc_err_set(err, MC_EINVAL,
				  "%s: %s has %d values but the samples have %lld channel%s; give "
				  "one value (every channel) or %lld",
				  what, key, n, (long long)channels, channels == 1 ? "" : "s",
				  (long long)channels);
	for (int i = 0; i < n; i++)
		if (!isfinite(v[i]) || (positive && !(v[i] > 0)))
			return mc_err_set(err, MC_EINVAL, "%s: %s[%d] is %g; it must be %s", what,
					  key, i, v[i],
					  positive ? "a finite number above 0" : "a finite number");
	return 0;
}

int mc_preprocess_check(const struct mc_preprocess *pre, int64_t channels, const char *what,
			struct mc_err *err)
{
	int ret;

	if (!pre)
		return 0;
	if (pre->scale < 0 || !isfinite(pre->scale))
		return mc_err_set(err, MC_EINVAL,
				  "%s: scale is %g; it must be a finite number "
				  "above 0",
				  what, pre->scale);
	ret = check_list(what, "mean", pre->n_mean, pre->mean, channels, 0, err);
	return ret ? ret : check_list(what, "std", pre->n_std, pre->std, channels, 1, err);
}

static uint32_t le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Element i of a raw little-endian array of type t, as a double. */
static double raw_at(const unsigned char *raw, enum mc_raw_type t, size_t i)
{
	uint32_t u;
	float f;

	switch (t) {
	case MC_RAW_U8:
		return raw[i];
	case MC_RAW_F32:
		u = le32(raw + 4 * i);
		memcpy(&f, &u, sizeof(f));
		return f;
	case MC_RAW_I32:
		return (int32_t)le32(raw + 4 * i);
	case MC_RAW_I64:
		return (double)(int64_t)((uint64_t)le32(raw + 8 * i) |
					 (uint64_t)le32(raw + 8 * i + 4) << 32);
	}
	return 0;
}

int mc_data_fill_x(struct mc_dataset *d, const void *raw, enum mc_raw_type t,
		   const struct mc_preprocess *pre, const char *what, struct mc_err *err)
{
	const unsigned char *r = raw;
	int64_t ch = d->shape[0], plane = d->sample_numel / d->shape[0], bad = -1;
	double scale = t == MC_RAW_U8 ? 1.0 / 255 : 1.0;
	int ret = mc_preprocess_check(pre, ch, what, err);

	if (ret)
		return ret;
	if (pre && pre->scale > 0)
		scale = pre->scale;
		/* Samples split among threads: each value depends on its own input only. */
#pragma omp parallel for schedule(static) reduction(max : bad)
	for (int64_t s = 0; s < d->n; s++) {
		for (int64_t c = 0; c < ch; c++) {
			double m = pre && pre->n_mean ? pre->mean[pre->n_mean == 1 ? 0 : c] : 0.0;
			double sd = pre && pre->n_std ? pre->std[pre->n_std == 1 ? 0 : c] : 1.0;
			size_t at = (size_t)s * (size_t)d->sample_numel + (size_t)(c * plane);

			for (int64_t k = 0; k < plane; k++) {
				double v = raw_at(r, t, at + (size_t)k);
				float f = (float)((v * scale - m) / sd);

				d->x[at + (size_t)k] = f;
				if (!isfinite(f) && (int64_t)(at + (size_t)k) > bad)
					bad = (int64_t)(at + (size_t)k);
			}
		}
	}
	if (bad >= 0) {
		double v = raw_at(r, t, (size_t)bad);

		if (!isfinite(v))
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: sample %lld holds %s (value %lld of the sample); "
					  "mcomp takes finite inputs",
					  what, (long long)(bad / d->sample_numel),
					  isnan(v) ? "NaN" : "an infinity",
					  (long long)(bad % d->sample_numel));
		return mc_err_set(err, MC_EINVAL,
				  "%s: sample %lld: %g becomes %g after the preprocessing; check "
				  "scale, mean and std",
				  what, (long long)(bad / d->sample_numel), v, (double)d->x[bad]);
	}
	return 0;
}

int mc_data_fill_y(struct mc_dataset *d, const void *raw, enum mc_raw_type t, const char *what,
		   struct mc_err *err)
{
	int maxl = 0;

	for (int64_t i = 0; i < d->n; i++) {
		double v = raw_at(raw, t, (size_t)i);

		if (v < 0 || v > 255)
			return mc_err_set(
			    err, MC_ECORRUPT,
			    "%s: label %.0f of sample %lld is out of range; labels are "
			    "class indices in [0, 255]",
			    what, v, (long long)i);
		d->y[i] = (uint8_t)v;
		if (d->y[i] > maxl)
			maxl = d->y[i];
	}
	d->n_classes = maxl + 1;
	return 0;
}
