/* SPDX-License-Identifier: MIT */
/*
 * base_int.h - what the base layer offers the layers above beyond the
 * public headers. Not installed.
 */
#ifndef MCOMP_BASE_INT_H
#define MCOMP_BASE_INT_H

#include <mcomp/tensor.h>

/* A tensor with a shape and no data (data NULL): the parameters of a model
 * of shapes only. NULL with err set, as mc_tensor_new. */
struct mc_tensor *mc_tensor_new_shape(const char *name, enum mc_dtype dtype, int ndim,
				      const int64_t *shape, struct mc_err *err);
/* Gives a tensor without data its zeroed data. 0, or MC_ENOMEM with err set. */
int mc_tensor_alloc(struct mc_tensor *t, struct mc_err *err);

#endif
