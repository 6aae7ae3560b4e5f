/* SPDX-License-Identifier: MIT */
/*
 * ops_fakequant.c - fake_quant: the u8 round trip that a static qlinear or
 * qconv2d applies to its input, kept in f32, for quantization-aware training
 * (passes/quantize/qat.c, docs/quantize.md).
 *
 *	param 0  NAME.range  F32 [2]: lo, hi
 *
 * With s, z = mc_u8_qparams(lo, hi) (the map of [min(lo, 0), max(hi, 0)]
 * onto [0, 255], 0.0 exact):
 *
 *	v = nearbyint(x / s) + z,  q = clamp(v, 0, 255) (NaN: 0),  y = (q - z) s
 *
 * q is bit for bit what mc_quantize_u8 gives the integer kernels, so a layer
 * trained behind fake_quant sees the values its static integer form sees.
 *
 * Backward is the straight-through estimator: dx = dy where the clamp did
 * not act (0 <= v <= 255), 0 where it did. With learn: true the range is
 * trained (not a buffer) by the step-size gradient of LSQ (Esser et al.),
 * z held: dy/ds = (q - z) - x/s inside the range (rounding passed straight
 * through), q - z where clamped; ds/dhi = 1/255 when hi > 0, ds/dlo =
 * -1/255 when lo < 0, else 0 (a bound on the wrong side of 0 is not used).
 * Its sums run over fixed chunks of the batch, added in order, so they do
 * not depend on the thread count.
 */
#include <math.h>
#include <string.h>

#include "graph/ops_int.h"

struct fq_attrs {
	int learn;
};

static const struct mc_param_def fq_attrs[] = {
    {.name = "learn",
     .type = MC_PARAM_TBOOL,
     .elem = MC_PARAM_TBOOL,
     .offset = offsetof(struct fq_attrs, learn),
     .def = "false",
     .min = 0,
     .max = 1,
     .help = "train the range (LSQ step-size gradient); false: a fixed buffer",
     .flags = MC_PARAM_FOMIT},
    MC_PARAM_END,
};

static int fq_setup(struct mc_node *node, const int *in_ndim,
		    const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	const struct fq_attrs *a = node->attrs;
	int64_t two = 2;
	int r = mc_node_new_param(node, 0, "range", 1, &two, err);

	if (r)
		return r;
	node->n_buffers = a->learn ? 0 : 1;
	return mc_same_shape_setup(node, in_ndim, in_shape, err);
}

static void fq_qparams(const struct mc_node *node, float *s, float *z)
{
	const float *r = node->params[0]->data;
	int zi;

	mc_u8_qparams(r[0], r[1], s, &zi);
	*z = (float)zi;
}

/* out[n, d] = (clamp(nearbyint(x / s) + z, 0, 255) - z) s */
static void fq_forward(const struct mc_node *node, const struct mc_run *run, int n,
		       const float *const *in, float *out)
{
	const float *x = in[0];
	int64_t total = (int64_t)n * node->out_numel;
	float s, z;

	fq_qparams(node, &s, &z);
#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t i = 0; i < total; i++) {
		float v = nearbyintf(x[i] / s) + z;
		float q = !(v > 0.0f) ? 0.0f : v > 255.0f ? 255.0f : v;

		out[i] = (q - z) * s;
	}
}

static size_t fq_workspace(const struct mc_node *node, int n)
{
	const struct fq_attrs *a = node->attrs;
	int64_t total = (int64_t)n * node->out_numel;

	return a->learn ? (size_t)((total + MC_CHUNK - 1) / MC_CHUNK) * sizeof(double) : 0;
}

/* din = dout where 0 <= v <= 255; learn: grads[0] += (dlo, dhi) as above */
static void fq_backward(const struct mc_node *node, const struct mc_run *run, int n,
			const float *const *in, const float *out, const float *dout,
			float *const *din, float *const *grads)
{
	const struct fq_attrs *a = node->attrs;
	const float *x = in[0], *r = node->params[0]->data;
	int64_t total = (int64_t)n * node->out_numel, chunks = (total + MC_CHUNK - 1) / MC_CHUNK;
	double *part = run->work, gs = 0.0;
	float *dx = din[0], s, z;

	fq_qparams(node, &s, &z);
	if (!a->learn)
		part = NULL;
	if (!dx && !part)
		return;
#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < chunks; c++) {
		int64_t end = (c + 1) * MC_CHUNK < total ? (c + 1) * MC_CHUNK : total;
		double acc = 0.0;

		for (int64_t i = c * MC_CHUNK; i < end; i++) {
			float u = x[i] / s, v = nearbyintf(u) + z;
			int inside = v >= 0.0f && v <= 255.0f;

			if (dx)
				dx[i] = inside ? dout[i] : 0.0f;
			if (part) {
				float q = inside ? v : v > 255.0f ? 255.0f : 0.0f;

				acc += (double)dout[i] * ((double)(q - z) - (inside ? u : 0.0f));
			}
		}
		if (part)
			part[c] = acc;
	}
	if (!part || !grads || !grads[0])
		return;
	for (int64_t c = 0; c < chunks; c++)
		gs += part[c];
	if (r[0] < 0.0f)
		grads[0][0] -= (float)(gs / 255.0);
	if (r[1] > 0.0f)
		grads[0][1] += (float)(gs / 255.0);
}

static int64_t fq_flops(const struct mc_node *node)
{
	return 4 * node->out_numel; /* divide, round, clamp, scale */
}

const struct mc_op mc_op_fake_quant = {
    .name = "fake_quant",
    .help = "u8 quantize then dequantize over a range (quantization-aware training)",
    .attr_size = sizeof(struct fq_attrs),
    .attrs = fq_attrs,
    .n_inputs = 1,
    .setup = fq_setup,
    .forward = fq_forward,
    .backward = fq_backward,
    .flops = fq_flops,
    .workspace = fq_workspace,
};
