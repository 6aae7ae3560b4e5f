/* SPDX-License-Identifier: MIT */
/*
 * ops_misc.c - add (the join of a residual block), softmax and log-softmax
 * over the last dimension.
 *
 * Each kernel splits rows among threads; a row's sums run in one order, so
 * results do not depend on the thread count.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "graph/ops_int.h"

/* ---------------------------------------------------------------- add */

static int add_setup(struct mc_node *node, const int *in_ndim,
		     const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	char a[256], b[256];

	if (in_ndim[0] != in_ndim[1] ||
	    memcmp(in_shape[0], in_shape[1], (size_t)in_ndim[0] * sizeof(int64_t)))
		return mc_err_set(err, MC_EINVAL,
				  "add needs inputs of one shape, got %s and %s; add a conv2d or "
				  "linear that maps one onto the other",
				  mc_shape_text(in_ndim[0], in_shape[0], a, sizeof(a)),
				  mc_shape_text(in_ndim[1], in_shape[1], b, sizeof(b)));
	return mc_same_shape_setup(node, in_ndim, in_shape, err);
}

/* out[n, d] = a[n, d] + b[n, d] */
static void add_forward(const struct mc_node *node, const struct mc_run *run, int n,
			const float *const *in, float *out)
{
	int64_t total = (int64_t)n * node->out_numel;

#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t i = 0; i < total; i++)
		out[i] = in[0][i] + in[1][i];
}

/* da = db = dout */
static void add_backward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, const float *out, const float *dout,
			 float *const *din, float *const *grads)
{
	size_t bytes = (size_t)n * (size_t)node->out_numel * sizeof(float);

	for (int k = 0; k < 2; k++)
		if (din[k])
			memcpy(din[k], dout, bytes);
}

const struct mc_op mc_op_add = {
    .name = "add",
    .help = "elementwise sum of two inputs of one shape (a residual connection)",
    .attr_size = 0,
    .attrs = mc_no_attrs,
    .n_inputs = 2,
    .setup = add_setup,
    .forward = add_forward,
    .backward = add_backward,
    .flops = mc_numel_flops,
};

/* ---------------------------------------------------------------- softmax */

struct softmax_state {
	int64_t len; /* the last dimension, set by setup; the ops have no attributes */
};

static int softmax_setup(struct mc_node *node, const int *in_ndim,
			 const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct softmax_state *st = node->attrs;

	st->len = in_shape[0][in_ndim[0] - 1];
	return mc_same_shape_setup(node, in_ndim, in_shape, err);
}

/* y = z - logsumexp(z) of one row, or exp of it (softmax), in double */
static void row_forward(const float *z, float *y, int64_t L, int log_out)
{
	double mx = z[0], sum = 0, lse;

	for (int64_t c = 1; c < L; c++)
		if (z[c] > mx)
			mx = z[c];
	for (int64_t c = 0; c < L; c++)
		sum += exp((double)z[c] - mx);
	lse = mx + log(sum);
	for (int64_t c = 0; c < L; c++)
		y[c] = (float)(log_out ? z[c] - lse : exp(z[c] - lse));
}

/* dz of one row from y and dy: softmax's y * (dy - sum(dy * y)), log-softmax's
 * dy - exp(y) * sum(dy), in double */
static void row_backward(const float *y, const float *dy, float *dz, int64_t L, int log_out)
{
	double sum = 0;

	for (int64_t c = 0; c < L; c++)
		sum += log_out ? dy[c] : (double)dy[c] * y[c];
	for (int64_t c = 0; c < L; c++)
		dz[c] = (float)(log_out ? dy[c] - exp((double)y[c]) * sum : y[c] * (dy[c] - sum));
}

/* Every row of [n, .., L]: forward (dy NULL) dst = f(x), backward dst = dz from x = y and dy. */
static void rows_run(const struct mc_node *node, int n, const float *x, const float *dy,
		     float *dst, int log_out)
{
	int64_t L = ((const struct softmax_state *)node->attrs)->len;
	int64_t rows = (int64_t)n * node->out_numel / L;

#pragma omp parallel for schedule(static) if (rows * L >= MC_PAR_MIN)
	for (int64_t r = 0; r < rows; r++) {
		if (dy)
			row_backward(x + r * L, dy + r * L, dst + r * L, L, log_out);
		else
			row_forward(x + r * L, dst + r * L, L, log_out);
	}
}

/* out[n, .., L] = softmax over L */
static void softmax_forward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	rows_run(node, n, in[0], NULL, out, 0);
}

/* dz = y * (dy - sum(dy * y)) */
static void softmax_backward(const struct mc_node *node, const struct mc_run *run, int n,
			     const float *const *in, const float *out, const float *dout,
			     float *const *din, float *const *grads)
{
	if (din[0])
		rows_run(node, n, out, dout, din[0], 0);
}

static int64_t softmax_flops(const struct mc_node *node)
{
	return 3 * node->out_numel;
}

const struct mc_op mc_op_softmax = {
    .name = "softmax",
    .help = "exp(z) / sum(exp(z)) over the last dimension",
    .attr_size = sizeof(struct softmax_state),
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = softmax_setup,
    .forward = softmax_forward,
    .backward = softmax_backward,
    .flops = softmax_flops,
};

/* out[n, .., L] = z - logsumexp(z) over L */
static void log_softmax_forward(const struct mc_node *node, const struct mc_run *run, int n,
				const float *const *in, float *out)
{
	rows_run(node, n, in[0], NULL, out, 1);
}

/* dz = dy - softmax(z) * sum(dy), softmax(z) = exp(y) */
static void log_softmax_backward(const struct mc_node *node, const struct mc_run *run, int n,
				 const float *const *in, const float *out, const float *dout,
				 float *const *din, float *const *grads)
{
	if (din[0])
		rows_run(node, n, out, dout, din[0], 1);
}

const struct mc_op mc_op_log_softmax = {
    .name = "log_softmax",
    .help = "z - log(sum(exp(z))) over the last dimension",
    .attr_size = sizeof(struct softmax_state),
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = softmax_setup,
    .forward = log_softmax_forward,
    .backward = log_softmax_backward,
    .flops = softmax_flops,
};
