/* SPDX-License-Identifier: MIT */
/*
 * ops_concat.c - concat: 2 to MC_NODE_MAX_INPUTS inputs joined along their
 * first per-sample dimension, the channels of [C, H, W] images (a Fire
 * module's or an Inception block's join) or the features of [F] vectors.
 * The other dimensions must agree.
 *
 * A sample's first dimension is its outermost, so a sample of the output is
 * its inputs' samples one after the other: out[s] = in0[s] | in1[s] | ...
 * Each output row (one channel of one sample, H * W values) is copied from
 * its input by one thread, forward and backward (the backward splits dout
 * back into the inputs' gradients), so results are the same for any thread
 * count.
 */
#include <stdio.h>
#include <string.h>

#include "graph/ops_int.h"

/* Set by setup from the input shapes; concat has no attributes. */
struct concat_state {
	int64_t ch[MC_NODE_MAX_INPUTS]; /* first dimension of each input */
	int64_t inner;			/* values per channel: the other dimensions' product */
};

static int concat_setup(struct mc_node *node, const int *in_ndim,
			const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct concat_state *st = node->attrs;
	char a[256], b[256];
	int64_t ch = 0, inner = 1;

	if (in_ndim[0] < 1)
		return mc_err_set(err, MC_EINVAL, "concat joins inputs of at least one dimension");
	for (int d = 1; d < in_ndim[0]; d++)
		inner *= in_shape[0][d];
	for (int k = 0; k < node->n_inputs; k++) {
		if (in_ndim[k] != in_ndim[0] || memcmp(in_shape[k] + 1, in_shape[0] + 1,
						       (size_t)(in_ndim[0] - 1) * sizeof(int64_t)))
			return mc_err_set(
			    err, MC_EINVAL,
			    "concat joins inputs along their first dimension (channels or "
			    "features), the others alike; input 1 is %s and input %d %s: resize "
			    "one (a pool, a conv2d stride or a pad2d) to match",
			    mc_shape_text(in_ndim[0], in_shape[0], a, sizeof(a)), k + 1,
			    mc_shape_text(in_ndim[k], in_shape[k], b, sizeof(b)));
		st->ch[k] = in_shape[k][0];
		ch += in_shape[k][0];
	}
	if (ch > INT32_MAX)
		return mc_err_set(err, MC_EINVAL, "concat: %lld channels are too many",
				  (long long)ch);
	st->inner = inner;
	node->out_ndim = in_ndim[0];
	memcpy(node->out_shape, in_shape[0], sizeof(node->out_shape));
	node->out_shape[0] = ch;
	return 0;
}

/* Row r of the output (sample r / C, channel r % C): its input k and channel there. */
static int row_source(const struct concat_state *st, int n_in, int64_t c, int64_t *kc)
{
	int k = 0;

	while (k < n_in - 1 && c >= st->ch[k])
		c -= st->ch[k++];
	*kc = c;
	return k;
}

/* out[s, off_k + c, ...] = in_k[s, c, ...] */
static void concat_forward(const struct mc_node *node, const struct mc_run *run, int n,
			   const float *const *in, float *out)
{
	const struct concat_state *st = node->attrs;
	int64_t C = node->out_shape[0], D = st->inner, rows = (int64_t)n * C;

#pragma omp parallel for schedule(static) if (rows * D >= MC_PAR_MIN)
	for (int64_t r = 0; r < rows; r++) {
		int64_t s = r / C, c;
		int k = row_source(st, node->n_inputs, r % C, &c);

		memcpy(out + r * D, in[k] + (s * st->ch[k] + c) * D, (size_t)D * sizeof(float));
	}
}

/* din_k[s, c, ...] = dout[s, off_k + c, ...]: each input gets its slice of the gradient */
static void concat_backward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, const float *out, const float *dout,
			    float *const *din, float *const *grads)
{
	const struct concat_state *st = node->attrs;
	int64_t C = node->out_shape[0], D = st->inner, rows = (int64_t)n * C;

#pragma omp parallel for schedule(static) if (rows * D >= MC_PAR_MIN)
	for (int64_t r = 0; r < rows; r++) {
		int64_t s = r / C, c;
		int k = row_source(st, node->n_inputs, r % C, &c);

		if (din[k])
			memcpy(din[k] + (s * st->ch[k] + c) * D, dout + r * D,
			       (size_t)D * sizeof(float));
	}
}

const struct mc_op mc_op_concat = {
    .name = "concat",
    .help = "2 to 4 inputs joined along channels ([C, H, W]) or features ([F]), the other "
	    "dimensions alike",
    .attr_size = sizeof(struct concat_state),
    .attrs = mc_no_attrs,
    .n_inputs = MC_OP_VARIADIC,
    .setup = concat_setup,
    .forward = concat_forward,
    .backward = concat_backward,
    .flops = mc_zero_flops,
};
