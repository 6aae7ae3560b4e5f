/* SPDX-License-Identifier: MIT */
/*
 * ops_qelem.c - the int8 forms of add and global_avgpool, which the
 * quantize pass (mode static) puts in place of those f32 ops so that a
 * network of residual blocks runs integer end to end (docs/quantize.md):
 *
 *	qadd             param 0  NAME.qparams  F32 [6]: the scale and zero
 *	                          point of input a, of input b, of the output
 *	qglobal_avgpool  param 0  NAME.qparams  F32 [4]: of the input, of the output
 *
 * Each quantizes its inputs to u8 at their calibrated scales, computes in
 * integers with the output requantized to its own u8 scale (fixed-point
 * multipliers, core/kernels/s8_ops.h), and writes the u8 result as f32
 * (scale * (q - zero point)), the form every op takes. Nothing learns:
 * backward passes gradients straight through, as add's and
 * global_avgpool's do.
 */
#include <math.h>
#include <string.h>

#include "graph/ops_int.h"
#include "kernels/s8_ops.h"

/* Creates the qparams buffer of n / 2 (scale, zero point) pairs: scales 1, zero points 0. */
static int qparams_new(struct mc_node *node, int64_t n, struct mc_err *err)
{
	int r = mc_node_new_param(node, 0, "qparams", 1, &n, err);
	float *v;

	if (r)
		return r;
	v = node->params[0]->data;
	for (int64_t i = 0; v && i < n; i += 2)
		v[i] = 1.0f;
	node->n_buffers = node->n_params;
	return 0;
}

/* Pair i of qparams: 0 with *s and *z set, -1 when it is no u8 quantization. */
static int qpair(const struct mc_node *node, int i, float *s, int *z)
{
	const float *v = node->params[0]->data;
	float zf = v[2 * i + 1];

	*s = v[2 * i];
	if (!(*s > 0.0f) || !isfinite(*s) || !(zf >= 0.0f && zf <= 255.0f) || zf != nearbyintf(zf))
		return -1;
	*z = (int)zf;
	return 0;
}

static void fill_nan(float *out, int64_t total)
{
	for (int64_t i = 0; i < total; i++)
		out[i] = NAN;
}

/* ---------------------------------------------------------------- qadd */

static int qadd_setup(struct mc_node *node, const int *in_ndim,
		      const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	char a[256], b[256];
	int r;

	if (in_ndim[0] != in_ndim[1] ||
	    memcmp(in_shape[0], in_shape[1], (size_t)in_ndim[0] * sizeof(int64_t)))
		return mc_err_set(err, MC_EINVAL, "qadd needs inputs of one shape, got %s and %s",
				  mc_shape_text(in_ndim[0], in_shape[0], a, sizeof(a)),
				  mc_shape_text(in_ndim[1], in_shape[1], b, sizeof(b)));
	r = mc_same_shape_setup(node, in_ndim, in_shape, err);
	return r ? r : qparams_new(node, 6, err);
}

/* out[n, d] = requant(u8(a) + u8(b)): scales from qparams */
static void qadd_forward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, float *out)
{
	int64_t total = (int64_t)n * node->out_numel;
	struct mc_qadd_q q;

	if (qpair(node, 0, &q.sa, &q.za) || qpair(node, 1, &q.sb, &q.zb) ||
	    qpair(node, 2, &q.so, &q.zo) || !run->work ||
	    mc_qadd(&q, total, in[0], in[1], out, run->work))
		fill_nan(out, total); /* a file with qparams the kernel refuses: say so */
}

static void qadd_backward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, const float *out, const float *dout,
			  float *const *din, float *const *grads)
{
	size_t bytes = (size_t)n * (size_t)node->out_numel * sizeof(float);

	for (int k = 0; k < 2; k++)
		if (din[k])
			memcpy(din[k], dout, bytes);
}

static size_t qadd_workspace(const struct mc_node *node, int n)
{
	return mc_qadd_work((int64_t)(n < 1 ? 1 : n) * node->out_numel);
}

const struct mc_op mc_op_qadd = {
    .name = "qadd",
    .help = "int8 add: u8 inputs at calibrated scales, requantized sum (docs/quantize.md)",
    .attr_size = 0,
    .attrs = mc_no_attrs,
    .n_inputs = 2,
    .setup = qadd_setup,
    .forward = qadd_forward,
    .backward = qadd_backward,
    .flops = mc_numel_flops,
    .workspace = qadd_workspace,
};

/* ---------------------------------------------------------------- qglobal_avgpool */

struct qgap_state {
	int64_t area; /* values per channel, set by setup; the op has no attributes */
};

static int qgap_setup(struct mc_node *node, const int *in_ndim,
		      const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct qgap_state *st = node->attrs;
	char buf[256];

	if (in_ndim[0] < 2)
		return mc_err_set(err, MC_EINVAL,
				  "qglobal_avgpool needs per-sample [channels, height, width], got "
				  "%s",
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	st->area = 1;
	for (int d = 1; d < in_ndim[0]; d++)
		st->area *= in_shape[0][d];
	if (st->area > (1 << 24) || in_shape[0][0] > INT32_MAX)
		return mc_err_set(err, MC_EINVAL,
				  "qglobal_avgpool takes at most 2^24 values a channel (its sums "
				  "are 64-bit fixed point), got %lld",
				  (long long)st->area);
	node->out_ndim = 1;
	node->out_shape[0] = in_shape[0][0];
	return qparams_new(node, 4, err);
}

/* out[n, C] = requant(mean over H*W of u8(in[n, C, H*W])) */
static void qgap_forward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, float *out)
{
	int64_t C = node->out_shape[0], S = ((const struct qgap_state *)node->attrs)->area;
	struct mc_qgap_q q;

	if (qpair(node, 0, &q.si, &q.zi) || qpair(node, 1, &q.so, &q.zo) || !run->work ||
	    mc_qgap(&q, n, (int)C, S, in[0], out, run->work))
		fill_nan(out, (int64_t)n * C);
}

/* din[n, C, H*W] = dout[n, C] / (H*W) */
static void qgap_backward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, const float *out, const float *dout,
			  float *const *din, float *const *grads)
{
	int64_t C = node->out_shape[0], S = ((const struct qgap_state *)node->attrs)->area;

	if (!din[0])
		return;
	for (int64_t pl = 0; pl < (int64_t)n * C; pl++) {
		float g = dout[pl] / (float)S;

		for (int64_t j = 0; j < S; j++)
			din[0][pl * S + j] = g;
	}
}

static size_t qgap_workspace(const struct mc_node *node, int n)
{
	return mc_qgap_work(n, (int)node->out_shape[0],
			    ((const struct qgap_state *)node->attrs)->area);
}

static int64_t qgap_flops(const struct mc_node *node)
{
	return node->out_numel * ((const struct qgap_state *)node->attrs)->area;
}

const struct mc_op mc_op_qglobal_avgpool = {
    .name = "qglobal_avgpool",
    .help = "int8 global average pooling: u8 input, requantized mean (docs/quantize.md)",
    .attr_size = sizeof(struct qgap_state),
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = qgap_setup,
    .forward = qgap_forward,
    .backward = qgap_backward,
    .flops = qgap_flops,
    .workspace = qgap_workspace,
};

/* ---------------------------------------------------------------- u8 between int8 ops */

int mc_qop_takes_u8(const struct mc_node *node, int k, float *s, int *z)
{
	if (node->op == &mc_op_qconv2d)
		return k == 0 && mc_qconv2d_takes_u8(node, s, z);
	if (node->op == &mc_op_qadd)
		return k >= 0 && k < 2 && !qpair(node, k, s, z);
	if (node->op == &mc_op_qglobal_avgpool)
		return k == 0 && !qpair(node, 0, s, z);
	return 0;
}

int mc_qop_gives_u8(const struct mc_node *node)
{
	return node->op == &mc_op_qadd || mc_qconv2d_gives_u8(node);
}

void mc_qop_forward_u8(const struct mc_node *node, const struct mc_run *run, int n,
		       const float *const *in, const uint8_t *const *in8, float *out,
		       uint8_t *out8, float so, int zo)
{
	if (node->op == &mc_op_qconv2d) {
		mc_qconv2d_forward_u8(node, run, n, in[0], in8[0], out, out8, so, zo);
	} else if (node->op == &mc_op_qadd) {
		int64_t total = (int64_t)n * node->out_numel;
		struct mc_qadd_io io = { .a = in8[0] ? NULL : in[0], .b = in8[1] ? NULL : in[1],
					 .aq = in8[0], .bq = in8[1], .y = out8 ? NULL : out,
					 .yq = out8, .so = so, .zo = zo };
		struct mc_qadd_q q;

		if (qpair(node, 0, &q.sa, &q.za) || qpair(node, 1, &q.sb, &q.zb) ||
		    qpair(node, 2, &q.so, &q.zo) || !run->work || mc_qadd_io(&q, total, &io, run->work)) {
			/* as qadd_forward: NaN, which its reader quantizes to 0 */
			if (out8)
				memset(out8, 0, (size_t)total);
			else
				fill_nan(out, total);
		}
	} else if (node->op == &mc_op_qglobal_avgpool) {
		int64_t C = node->out_shape[0], S = ((const struct qgap_state *)node->attrs)->area;
		struct mc_qgap_q q;

		if (!in8[0])
			qgap_forward(node, run, n, in, out);
		else if (qpair(node, 0, &q.si, &q.zi) || qpair(node, 1, &q.so, &q.zo) ||
			 mc_qgap_u8(&q, n, (int)C, S, in8[0], out))
			fill_nan(out, (int64_t)n * C);
	}
}
