/* SPDX-License-Identifier: MIT */
/*
 * ops_dense.c - the dense ops: flatten, relu and linear, each with its
 * shape rule, initialisation, forward and backward side by side, and FLOP
 * count.
 *
 * Kernels see a batch of n samples, row-major, per-sample shapes in the
 * trailing comments. Backward passes split work over output elements (or
 * call mc_sgemm, which does), so gradients are bit-identical for any thread
 * count.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "ops_int.h"

/* ---------------------------------------------------------------- flatten */

static int flatten_setup(struct mc_node *node, const int *in_ndim,
			 const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	int64_t n = 1;

	for (int i = 0; i < in_ndim[0]; i++)
		n *= in_shape[0][i]; /* the model checked the product */
	node->out_ndim = 1;
	node->out_shape[0] = n;
	return 0;
}

/* out[n, numel] = in[n, numel] */
static void flatten_forward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	memcpy(out, in[0], (size_t)n * (size_t)node->out_numel * sizeof(float));
}

static void flatten_backward(const struct mc_node *node, const struct mc_run *run, int n,
			     const float *const *in, const float *out, const float *dout,
			     float *const *din, float *const *grads)
{
	if (din[0])
		memcpy(din[0], dout, (size_t)n * (size_t)node->out_numel * sizeof(float));
}

const struct mc_op mc_op_flatten = {
    .name = "flatten",
    .help = "reshapes each sample to one dimension",
    .attr_size = 0,
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = flatten_setup,
    .forward = flatten_forward,
    .backward = flatten_backward,
    .flops = mc_zero_flops,
};

/* ---------------------------------------------------------------- relu */

/* out[n, d] = max(in, 0) */
static void relu_forward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, float *out)
{
	const float *x = in[0];
	int64_t total = (int64_t)n * node->out_numel;

#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < total; c += MC_CHUNK) {
		int64_t i = c, end = c + MC_CHUNK < total ? c + MC_CHUNK : total;
#ifdef __SSE2__
		/* A select, exact: the same values as the scalar loop (NaN -> 0). */
		for (; i + 4 <= end; i += 4) {
			__m128 v = _mm_loadu_ps(x + i);

			_mm_storeu_ps(out + i, _mm_and_ps(_mm_cmpgt_ps(v, _mm_setzero_ps()), v));
		}
#endif
		for (; i < end; i++)
			out[i] = x[i] > 0.0f ? x[i] : 0.0f;
	}
}

/* din[n, d] = dout where out > 0 */
static void relu_backward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, const float *out, const float *dout,
			  float *const *din, float *const *grads)
{
	float *dx = din[0];
	int64_t total = (int64_t)n * node->out_numel;

	if (!dx)
		return;
#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < total; c += MC_CHUNK) {
		int64_t i = c, end = c + MC_CHUNK < total ? c + MC_CHUNK : total;
#ifdef __SSE2__
		for (; i + 4 <= end; i += 4) {
			__m128 on = _mm_cmpgt_ps(_mm_loadu_ps(out + i), _mm_setzero_ps());

			_mm_storeu_ps(dx + i, _mm_and_ps(on, _mm_loadu_ps(dout + i)));
		}
#endif
		for (; i < end; i++)
			dx[i] = out[i] > 0.0f ? dout[i] : 0.0f;
	}
}

const struct mc_op mc_op_relu = {
    .name = "relu",
    .help = "max(x, 0), elementwise",
    .attr_size = 0,
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = mc_same_shape_setup,
    .forward = relu_forward,
    .backward = relu_backward,
    .flops = mc_zero_flops,
};

/* ---------------------------------------------------------------- linear */

struct linear_attrs {
	int out;
};

static const struct mc_param_def linear_attrs[] = {
    MC_PARAM_INT(struct linear_attrs, out, NULL, 1, INT_MAX, "output features"),
    MC_PARAM_END,
};

static int linear_setup(struct mc_node *node, const int *in_ndim,
			const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	const struct linear_attrs *a = node->attrs;
	int64_t in = in_shape[0][0], wshape[2], bshape[1];
	char buf[256];
	size_t wn;
	int r;

	if (in_ndim[0] != 1)
		return mc_err_set(err, MC_EINVAL,
				  "linear needs one value per feature, got input shape %s; "
				  "put a flatten before it",
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	if (in < 1 || in > INT_MAX || mc_mul_overflow((size_t)in, (size_t)a->out, &wn) ||
	    wn > (size_t)INT64_MAX / sizeof(float))
		return mc_err_set(err, MC_EINVAL,
				  "linear of %lld inputs and %d outputs is too large; use fewer",
				  (long long)in, a->out);
	wshape[0] = a->out;
	wshape[1] = in;
	bshape[0] = a->out;
	r = mc_node_new_param(node, 0, "weight", 2, wshape, err);
	if (!r)
		r = mc_node_new_param(node, 1, "bias", 1, bshape, err);
	if (r)
		return r;
	node->out_ndim = 1;
	node->out_shape[0] = a->out;
	return 0;
}

/* Like PyTorch's nn.Linear: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)). */
static void linear_init(struct mc_node *node, uint64_t seed, uint64_t stream)
{
	float bound = (float)(1.0 / sqrt((double)node->params[0]->shape[1]));

	mc_fill_uniform(node->params[0], seed, stream + 0, -bound, bound);
	mc_fill_uniform(node->params[1], seed, stream + 1, -bound, bound);
}

/* out[n, O] = in[n, I] W[O, I]^T + b[O] */
static void linear_forward(const struct mc_node *node, const struct mc_run *run, int n,
			   const float *const *in, float *out)
{
	const struct mc_tensor *w = node->params[0];
	const float *b = node->params[1]->data;
	int O = (int)w->shape[0], I = (int)w->shape[1];

	for (int i = 0; i < n; i++)
		memcpy(out + (size_t)i * O, b, (size_t)O * sizeof(float));
	mc_sgemm(0, 1, n, O, I, 1.0f, in[0], I, w->data, I, 1.0f, out, O);
}

/* dW[O, I] += dout^T x, db[O] += column sums of dout, din[n, I] = dout W */
static void linear_backward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, const float *out, const float *dout,
			    float *const *din, float *const *grads)
{
	const struct mc_tensor *w = node->params[0];
	int O = (int)w->shape[0], I = (int)w->shape[1];

	if (grads && grads[0])
		mc_sgemm(1, 0, O, I, n, 1.0f, dout, O, in[0], I, 1.0f, grads[0], I);
	if (grads && grads[1]) {
		float *db = grads[1];

		/* Each thread owns a range of outputs and sums the batch in order. */
#pragma omp parallel for schedule(static) if ((int64_t)n * O >= MC_PAR_MIN)
		for (int o0 = 0; o0 < O; o0 += 64) {
			int o1 = o0 + 64 < O ? o0 + 64 : O;

			for (int i = 0; i < n; i++)
				for (int o = o0; o < o1; o++)
					db[o] += dout[(size_t)i * O + o];
		}
	}
	if (din[0])
		mc_sgemm(0, 0, n, I, O, 1.0f, dout, O, w->data, I, 0.0f, din[0], I);
}

static int64_t linear_flops(const struct mc_node *node)
{
	return 2 * node->params[0]->numel;
}

const struct mc_op mc_op_linear = {
    .name = "linear",
    .help = "fully connected layer: y = x W^T + b",
    .attr_size = sizeof(struct linear_attrs),
    .attrs = linear_attrs,
    .n_inputs = 1,
    .setup = linear_setup,
    .init = linear_init,
    .forward = linear_forward,
    .backward = linear_backward,
    .flops = linear_flops,
};

/* ---------------------------------------------------------------- the table */
