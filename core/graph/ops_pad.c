/* SPDX-License-Identifier: MIT */
/*
 * ops_pad.c - pad2d: zeros around each [C, H, W] image, a number of rows or
 * columns per side (top, left, bottom, right). conv2d and the pools pad all
 * four sides alike; pad2d in front of one with padding 0 gives the uneven
 * padding of TensorFlow's 'SAME' at stride 2 or of an ONNX Pad.
 *
 * Each output row is written from its own input row by one thread, forward
 * and backward (the backward crops), so results are the same for any
 * thread count.
 */
#include <stdio.h>
#include <string.h>

#include "graph/ops_int.h"

struct pad2d_attrs {
	int top, left, bottom, right;
	int in_h, in_w; /* set by setup from the input shape; not attributes */
};

static const struct mc_param_def pad2d_attrs[] = {
    MC_PARAM_INT(struct pad2d_attrs, top, "0", 0, 1024, "rows of zeros above"),
    MC_PARAM_INT(struct pad2d_attrs, left, "0", 0, 1024, "columns of zeros on the left"),
    MC_PARAM_INT(struct pad2d_attrs, bottom, "0", 0, 1024, "rows of zeros below"),
    MC_PARAM_INT(struct pad2d_attrs, right, "0", 0, 1024, "columns of zeros on the right"),
    MC_PARAM_END,
};

static int pad2d_setup(struct mc_node *node, const int *in_ndim,
		       const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct pad2d_attrs *a = node->attrs;
	char buf[256];
	int64_t oh, ow;

	if (in_ndim[0] != 3)
		return mc_err_set(err, MC_EINVAL,
				  "pad2d pads [C, H, W] images, got %s; put it where the "
				  "activations are images",
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	oh = in_shape[0][1] + a->top + a->bottom;
	ow = in_shape[0][2] + a->left + a->right;
	if (oh > (1 << 24) || ow > (1 << 24) || in_shape[0][0] * oh * ow > INT32_MAX)
		return mc_err_set(err, MC_EINVAL, "pad2d: a padded image of %lldx%lld is too large",
				  (long long)oh, (long long)ow);
	a->in_h = (int)in_shape[0][1];
	a->in_w = (int)in_shape[0][2];
	node->out_ndim = 3;
	node->out_shape[0] = in_shape[0][0];
	node->out_shape[1] = oh;
	node->out_shape[2] = ow;
	return 0;
}

/* out[n, c, top + h, left + w] = x[n, c, h, w]; zeros elsewhere */
static void pad2d_forward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, float *out)
{
	const struct pad2d_attrs *a = node->attrs;
	const float *x = in[0];
	int64_t OH = node->out_shape[1], OW = node->out_shape[2], H = a->in_h, W = a->in_w;
	int64_t rows = (int64_t)n * node->out_shape[0] * OH;

#pragma omp parallel for schedule(static) if (rows * OW >= MC_PAR_MIN)
	for (int64_t r = 0; r < rows; r++) {
		int64_t plane = r / OH, h = r % OH - a->top;
		float *y = out + r * OW;

		if (h < 0 || h >= H) {
			memset(y, 0, (size_t)OW * sizeof(float));
			continue;
		}
		memset(y, 0, (size_t)a->left * sizeof(float));
		memcpy(y + a->left, x + (plane * H + h) * W, (size_t)W * sizeof(float));
		memset(y + a->left + W, 0, (size_t)a->right * sizeof(float));
	}
}

/* dx[n, c, h, w] = dout[n, c, top + h, left + w]: the padding's gradient is dropped */
static void pad2d_backward(const struct mc_node *node, const struct mc_run *run, int n,
			   const float *const *in, const float *out, const float *dout,
			   float *const *din, float *const *grads)
{
	const struct pad2d_attrs *a = node->attrs;
	int64_t OH = node->out_shape[1], OW = node->out_shape[2], H = a->in_h, W = a->in_w;
	int64_t rows = (int64_t)n * node->out_shape[0] * H;
	float *dx = din[0];

	if (!dx)
		return;
#pragma omp parallel for schedule(static) if (rows * W >= MC_PAR_MIN)
	for (int64_t r = 0; r < rows; r++) {
		int64_t plane = r / H, h = r % H;

		memcpy(dx + r * W, dout + (plane * OH + h + a->top) * OW + a->left,
		       (size_t)W * sizeof(float));
	}
}

const struct mc_op mc_op_pad2d = {
    .name = "pad2d",
    .help = "zeros around each [C, H, W] image, top/left/bottom/right rows and columns",
    .attr_size = sizeof(struct pad2d_attrs),
    .attrs = pad2d_attrs,
    .n_inputs = 1,
    .setup = pad2d_setup,
    .forward = pad2d_forward,
    .backward = pad2d_backward,
    .flops = mc_zero_flops,
};
