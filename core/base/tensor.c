/* SPDX-License-Identifier: MIT */
/*
 * tensor.c - the dtype traits table and dense tensor allocation.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/tensor.h>

#include "base/base_int.h"

/* One row per dtype: a new format is one row here plus its kernels. */
static const struct mc_dtype_traits traits[] = {
	[MC_F32] = { .name = "f32", .st_name = "F32", .bits = 32 },
	[MC_S8] = { .name = "s8", .st_name = "I8", .bits = 8 },
	[MC_U8] = { .name = "u8", .st_name = "U8", .bits = 8 },
	[MC_S32] = { .name = "s32", .st_name = "I32", .bits = 32 },
	[MC_Q4] = { .name = "q4", .st_name = "U8", .bits = 4 },
};
static_assert(sizeof(traits) / sizeof(traits[0]) == MC_DTYPE_COUNT,
	      "every enum mc_dtype needs a row in traits[]");

const struct mc_dtype_traits *mc_dtype_traits(enum mc_dtype t)
{
	if ((unsigned)t >= MC_DTYPE_COUNT)
		return NULL;
	return &traits[t];
}

/* ceil(numel * bits / 8), or -1 on overflow. */
static int payload_bytes(int64_t numel, int bits, size_t *out)
{
	size_t b;

	if (mc_mul_overflow((size_t)numel, (size_t)bits, &b) || b > SIZE_MAX - 7)
		return -1;
	*out = (b + 7) / 8;
	return 0;
}

/* A tensor of the given shape; its zeroed data only when alloc is set. */
static struct mc_tensor *tensor_make(const char *name, enum mc_dtype dtype, int ndim,
				     const int64_t *shape, int alloc, struct mc_err *err)
{
	const struct mc_dtype_traits *tr = mc_dtype_traits(dtype);
	const char *what = name ? name : "tensor";
	struct mc_tensor *t;
	size_t numel = 1, bytes;
	char buf[256];

	if (!tr) {
		mc_err_set(err, MC_EINVAL, "%s: unknown dtype %d; use one of enum mc_dtype", what,
			   (int)dtype);
		return NULL;
	}
	if (ndim < 0 || ndim > MC_MAX_DIMS || (ndim > 0 && !shape)) {
		mc_err_set(err, MC_EINVAL, "%s: %d dimensions; a tensor has 0 to %d", what, ndim,
			   MC_MAX_DIMS);
		return NULL;
	}
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || (uint64_t)shape[i] > INT64_MAX ||
		    mc_mul_overflow(numel, (size_t)shape[i], &numel) || numel > (size_t)INT64_MAX) {
			mc_err_set(err, MC_EINVAL,
				   "%s: bad shape %s; dimensions must be >= 0 and their product fit in memory",
				   what, mc_shape_text(ndim, shape, buf, sizeof(buf)));
			return NULL;
		}
	}
	if (payload_bytes((int64_t)numel, tr->bits, &bytes)) {
		mc_err_set(err, MC_EINVAL, "%s: shape %s is too large", what,
			   mc_shape_text(ndim, shape, buf, sizeof(buf)));
		return NULL;
	}
	t = calloc(1, sizeof(*t));
	if (!t)
		goto nomem;
	if (name && !(t->name = strdup(name)))
		goto nomem_t;
	t->dtype = dtype;
	t->ndim = ndim;
	for (int i = 0; i < ndim; i++)
		t->shape[i] = shape[i];
	t->numel = (int64_t)numel;
	if (!alloc)
		return t;
	/* Always allocate something, so data is never NULL even for numel 0. */
	t->data = mc_calloc(bytes ? bytes : 1, 1);
	if (!t->data)
		goto nomem_name;
	return t;

nomem_name:
	free(t->name);
nomem_t:
	free(t);
nomem:
	mc_err_set(err, MC_ENOMEM, "%s: out of memory allocating %s %s", what, tr->name,
		   mc_shape_text(ndim, shape, buf, sizeof(buf)));
	return NULL;
}

struct mc_tensor *mc_tensor_new(const char *name, enum mc_dtype dtype, int ndim,
				const int64_t *shape, struct mc_err *err)
{
	return tensor_make(name, dtype, ndim, shape, 1, err);
}

struct mc_tensor *mc_tensor_new_shape(const char *name, enum mc_dtype dtype, int ndim,
				      const int64_t *shape, struct mc_err *err)
{
	return tensor_make(name, dtype, ndim, shape, 0, err);
}

int mc_tensor_alloc(struct mc_tensor *t, struct mc_err *err)
{
	size_t bytes = mc_tensor_nbytes(t);
	char buf[256];

	if (t->data)
		return 0;
	t->data = mc_calloc(bytes ? bytes : 1, 1);
	if (!t->data)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory allocating %s %s",
				  t->name ? t->name : "tensor", mc_dtype_traits(t->dtype)->name,
				  mc_shape_text(t->ndim, t->shape, buf, sizeof(buf)));
	return 0;
}

void mc_tensor_free(struct mc_tensor *t)
{
	if (!t)
		return;
	mc_free(t->data);
	free(t->name);
	free(t);
}

struct mc_tensor *mc_tensor_dup(const struct mc_tensor *t, struct mc_err *err)
{
	struct mc_tensor *d = mc_tensor_new(t->name, t->dtype, t->ndim, t->shape, err);

	if (d)
		memcpy(d->data, t->data, mc_tensor_nbytes(t));
	return d;
}

size_t mc_tensor_nbytes(const struct mc_tensor *t)
{
	const struct mc_dtype_traits *tr = mc_dtype_traits(t->dtype);
	size_t b;

	if (!tr || t->numel < 0 || payload_bytes(t->numel, tr->bits, &b))
		return 0;
	return b;
}

const char *mc_shape_text(int ndim, const int64_t *shape, char *buf, size_t n)
{
	size_t len = 0;

	if (!n)
		return buf;
	buf[0] = '\0';
	len += (size_t)snprintf(buf, n, "[");
	for (int i = 0; i < ndim && len < n; i++)
		len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? ", " : "",
					(long long)shape[i]);
	if (len < n)
		snprintf(buf + len, n - len, "]");
	return buf;
}
