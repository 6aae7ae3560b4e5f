/* SPDX-License-Identifier: MIT */
/*
 * ops_act.c - the activations beyond relu, as ONNX defines them: leaky_relu,
 * sigmoid, clip (and relu6, clip to [0, 6]), hardsigmoid and hardswish; and
 * mul, the product of two inputs where the second may be one value per
 * channel (the gate of a squeeze-and-excitation block).
 *
 * Every kernel computes each output element from its own inputs alone
 * (mul's parameter-free backward sums each channel on one thread, in one
 * order), so results are the same for any thread count. Backward passes
 * read the forward's input where the derivative is not a function of the
 * output. At a kink (clip's bounds, hardsigmoid's ends) the gradient is
 * that of the flat side, as relu's is at 0.
 */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "graph/ops_int.h"

/* What ONNX's Clip means by no bound: float's lowest and highest. */
#define F32_LOWEST "-3.4028234663852886e+38"
#define F32_MAX	   "3.4028234663852886e+38"

/* i over every element of a batch: total = n * out_numel; values are independent. */
#define EACH(total) _Pragma("omp parallel for schedule(static) if (total >= MC_PAR_MIN)")

/* ---------------------------------------------------------------- leaky_relu */

struct leaky_attrs {
	double alpha;
};

static const struct mc_param_def leaky_attrs[] = {
    MC_PARAM_FLOAT(struct leaky_attrs, alpha, "0.01", -1000, 1000, "slope below zero"),
    MC_PARAM_END,
};

/* out[n, d] = x > 0 ? x : alpha x */
static void leaky_forward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, float *out)
{
	const float *x = in[0];
	float alpha = (float)((const struct leaky_attrs *)node->attrs)->alpha;
	int64_t total = (int64_t)n * node->out_numel;

	EACH(total)
	for (int64_t i = 0; i < total; i++)
		out[i] = x[i] > 0.0f ? x[i] : alpha * x[i];
}

/* din = dout where x > 0, alpha dout elsewhere */
static void leaky_backward(const struct mc_node *node, const struct mc_run *run, int n,
			   const float *const *in, const float *out, const float *dout,
			   float *const *din, float *const *grads)
{
	const float *x = in[0];
	float alpha = (float)((const struct leaky_attrs *)node->attrs)->alpha, *dx = din[0];
	int64_t total = (int64_t)n * node->out_numel;

	if (!dx)
		return;
	EACH(total)
	for (int64_t i = 0; i < total; i++)
		dx[i] = x[i] > 0.0f ? dout[i] : alpha * dout[i];
}

const struct mc_op mc_op_leaky_relu = {
    .name = "leaky_relu",
    .help = "x where x > 0, alpha x elsewhere (ONNX LeakyRelu)",
    .attr_size = sizeof(struct leaky_attrs),
    .attrs = leaky_attrs,
    .n_inputs = 1,
    .setup = mc_same_shape_setup,
    .forward = leaky_forward,
    .backward = leaky_backward,
    .flops = mc_numel_flops,
};

/* ---------------------------------------------------------------- sigmoid */

/* 1 / (1 + e^-x), through e^x for x < 0 so that neither side overflows to NaN */
static inline float sigmoid1(float x)
{
	float e;

	if (x >= 0.0f)
		return 1.0f / (1.0f + expf(-x));
	e = expf(x);
	return e / (1.0f + e);
}

/* out[n, d] = 1 / (1 + e^-x) */
static void sigmoid_forward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	const float *x = in[0];
	int64_t total = (int64_t)n * node->out_numel;

	EACH(total)
	for (int64_t i = 0; i < total; i++)
		out[i] = sigmoid1(x[i]);
}

/* din = dout y (1 - y) */
static void sigmoid_backward(const struct mc_node *node, const struct mc_run *run, int n,
			     const float *const *in, const float *out, const float *dout,
			     float *const *din, float *const *grads)
{
	float *dx = din[0];
	int64_t total = (int64_t)n * node->out_numel;

	if (!dx)
		return;
	EACH(total)
	for (int64_t i = 0; i < total; i++)
		dx[i] = dout[i] * out[i] * (1.0f - out[i]);
}

static int64_t sigmoid_flops(const struct mc_node *node)
{
	return 3 * node->out_numel; /* exp, add, divide */
}

const struct mc_op mc_op_sigmoid = {
    .name = "sigmoid",
    .help = "1 / (1 + exp(-x)), elementwise",
    .attr_size = 0,
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = mc_same_shape_setup,
    .forward = sigmoid_forward,
    .backward = sigmoid_backward,
    .flops = sigmoid_flops,
};

/* ---------------------------------------------------------------- clip, relu6 */

struct clip_attrs {
	double min, max;
};

static const struct mc_param_def clip_attrs[] = {
    MC_PARAM_FLOAT(struct clip_attrs, min, F32_LOWEST, -FLT_MAX, FLT_MAX,
		   "lower bound (default: none, float's lowest as in ONNX)"),
    MC_PARAM_FLOAT(struct clip_attrs, max, F32_MAX, -FLT_MAX, FLT_MAX,
		   "upper bound (default: none, float's highest as in ONNX)"),
    MC_PARAM_END,
};

static int clip_setup(struct mc_node *node, const int *in_ndim,
		      const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	const struct clip_attrs *a = node->attrs;

	if (!(a->min <= a->max))
		return mc_err_set(err, MC_EINVAL, "clip needs min <= max, got min %g and max %g",
				  a->min, a->max);
	return mc_same_shape_setup(node, in_ndim, in_shape, err);
}

/* relu6 is clip with its bounds fixed: setup writes them, as softmax writes its length. */
static int relu6_setup(struct mc_node *node, const int *in_ndim,
		       const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct clip_attrs *a = node->attrs;

	a->min = 0;
	a->max = 6;
	return mc_same_shape_setup(node, in_ndim, in_shape, err);
}

/* out[n, d] = min(max(x, min), max); NaN stays NaN */
static void clip_forward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, float *out)
{
	const struct clip_attrs *a = node->attrs;
	const float *x = in[0];
	float lo = (float)a->min, hi = (float)a->max;
	int64_t total = (int64_t)n * node->out_numel;

#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < total; c += MC_CHUNK) {
		int64_t i = c, end = c + MC_CHUNK < total ? c + MC_CHUNK : total;
#ifdef __SSE2__
		/* Selects, exact: the scalar loop's values, NaN included. */
		__m128 vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi);

		for (; i + 4 <= end; i += 4) {
			__m128 v = _mm_loadu_ps(x + i), m = _mm_cmplt_ps(v, vlo);

			v = _mm_or_ps(_mm_and_ps(m, vlo), _mm_andnot_ps(m, v));
			m = _mm_cmpgt_ps(v, vhi);
			_mm_storeu_ps(out + i, _mm_or_ps(_mm_and_ps(m, vhi), _mm_andnot_ps(m, v)));
		}
#endif
		for (; i < end; i++) {
			float v = x[i] < lo ? lo : x[i];

			out[i] = v > hi ? hi : v;
		}
	}
}

/* din = dout strictly inside (min, max), 0 outside and on the bounds */
static void clip_backward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, const float *out, const float *dout,
			  float *const *din, float *const *grads)
{
	const struct clip_attrs *a = node->attrs;
	const float *x = in[0];
	float lo = (float)a->min, hi = (float)a->max, *dx = din[0];
	int64_t total = (int64_t)n * node->out_numel;

	if (!dx)
		return;
#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < total; c += MC_CHUNK) {
		int64_t i = c, end = c + MC_CHUNK < total ? c + MC_CHUNK : total;
#ifdef __SSE2__
		__m128 vlo = _mm_set1_ps(lo), vhi = _mm_set1_ps(hi);

		for (; i + 4 <= end; i += 4) {
			__m128 v = _mm_loadu_ps(x + i);
			__m128 keep = _mm_and_ps(_mm_cmpgt_ps(v, vlo), _mm_cmplt_ps(v, vhi));

			_mm_storeu_ps(dx + i, _mm_and_ps(keep, _mm_loadu_ps(dout + i)));
		}
#endif
		for (; i < end; i++)
			dx[i] = x[i] > lo && x[i] < hi ? dout[i] : 0.0f;
	}
}

int mc_clip_bounds(const struct mc_node *node, float *lo, float *hi)
{
	const struct clip_attrs *a = node->attrs;

	if (node->op != &mc_op_clip && node->op != &mc_op_relu6)
		return 0;
	*lo = (float)a->min;
	*hi = (float)a->max;
	return 1;
}

const struct mc_op mc_op_clip = {
    .name = "clip",
    .help = "min(max(x, min), max), elementwise (ONNX Clip)",
    .attr_size = sizeof(struct clip_attrs),
    .attrs = clip_attrs,
    .n_inputs = 1,
    .setup = clip_setup,
    .forward = clip_forward,
    .backward = clip_backward,
    .flops = mc_zero_flops,
};

const struct mc_op mc_op_relu6 = {
    .name = "relu6",
    .help = "min(max(x, 0), 6), elementwise: clip to [0, 6]",
    .attr_size = sizeof(struct clip_attrs),
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = relu6_setup,
    .forward = clip_forward,
    .backward = clip_backward,
    .flops = mc_zero_flops,
};

/* ---------------------------------------------------------------- hardsigmoid, hardswish */

struct hsig_attrs {
	double alpha, beta;
};

static const struct mc_param_def hsig_attrs[] = {
    MC_PARAM_FLOAT(struct hsig_attrs, alpha, "0.2", -1000, 1000, "slope"),
    MC_PARAM_FLOAT(struct hsig_attrs, beta, "0.5", -1000, 1000, "offset"),
    MC_PARAM_END,
};

/* out[n, d] = max(0, min(1, alpha x + beta)) */
static void hsig_forward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, float *out)
{
	const struct hsig_attrs *a = node->attrs;
	const float *x = in[0];
	float alpha = (float)a->alpha, beta = (float)a->beta;
	int64_t total = (int64_t)n * node->out_numel;

	EACH(total)
	for (int64_t i = 0; i < total; i++)
		out[i] = fmaxf(0.0f, fminf(1.0f, alpha * x[i] + beta));
}

/* din = alpha dout where 0 < alpha x + beta < 1 */
static void hsig_backward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, const float *out, const float *dout,
			  float *const *din, float *const *grads)
{
	const struct hsig_attrs *a = node->attrs;
	const float *x = in[0];
	float alpha = (float)a->alpha, beta = (float)a->beta, *dx = din[0];
	int64_t total = (int64_t)n * node->out_numel;

	if (!dx)
		return;
	EACH(total)
	for (int64_t i = 0; i < total; i++) {
		float t = alpha * x[i] + beta;

		dx[i] = t > 0.0f && t < 1.0f ? alpha * dout[i] : 0.0f;
	}
}

static int64_t two_flops(const struct mc_node *node)
{
	return 2 * node->out_numel;
}

const struct mc_op mc_op_hardsigmoid = {
    .name = "hardsigmoid",
    .help = "max(0, min(1, alpha x + beta)), elementwise (ONNX HardSigmoid)",
    .attr_size = sizeof(struct hsig_attrs),
    .attrs = hsig_attrs,
    .n_inputs = 1,
    .setup = mc_same_shape_setup,
    .forward = hsig_forward,
    .backward = hsig_backward,
    .flops = two_flops,
};

/* out[n, d] = x max(0, min(1, x / 6 + 1/2)), ONNX's alpha 1/6 and beta 0.5 */
static void hswish_forward(const struct mc_node *node, const struct mc_run *run, int n,
			   const float *const *in, float *out)
{
	const float *x = in[0];
	int64_t total = (int64_t)n * node->out_numel;

	EACH(total)
	for (int64_t i = 0; i < total; i++)
		out[i] = x[i] * fmaxf(0.0f, fminf(1.0f, x[i] * (1.0f / 6.0f) + 0.5f));
}

/* din = dout (0 below -3, x / 3 + 1/2 between, 1 above 3) */
static void hswish_backward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, const float *out, const float *dout,
			    float *const *din, float *const *grads)
{
	const float *x = in[0];
	float *dx = din[0];
	int64_t total = (int64_t)n * node->out_numel;

	if (!dx)
		return;
	EACH(total)
	for (int64_t i = 0; i < total; i++) {
		float t = x[i] * (1.0f / 6.0f) + 0.5f;

		dx[i] = t <= 0.0f ? 0.0f : t >= 1.0f ? dout[i] : dout[i] * (2.0f * t - 0.5f);
	}
}

static int64_t three_flops(const struct mc_node *node)
{
	return 3 * node->out_numel;
}

const struct mc_op mc_op_hardswish = {
    .name = "hardswish",
    .help = "x hardsigmoid(x) with alpha 1/6, beta 1/2, elementwise (ONNX HardSwish)",
    .attr_size = 0,
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = mc_same_shape_setup,
    .forward = hswish_forward,
    .backward = hswish_backward,
    .flops = three_flops,
};

/* ---------------------------------------------------------------- mul */

/*
 * mul's broadcast: a [C, ...] times b, where b is
 *   - of a's shape: the elementwise product; or
 *   - [C] or [C, 1, ..., 1] (at most a's rank): one factor per channel, the
 *     first dimension of a (squeeze-and-excitation's x [C, H, W] * s [C]).
 * Either way b[j] multiplies the elements i of a sample with
 * (i / inner) % len == j, len = b's numel and inner = a's numel / len.
 */
struct mul_state {
	int64_t len, inner; /* set by setup; the op has no attributes */
};

static int mul_setup(struct mc_node *node, const int *in_ndim,
		     const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct mul_state *st = node->attrs;
	int same = in_ndim[0] == in_ndim[1] &&
		   !memcmp(in_shape[0], in_shape[1], (size_t)in_ndim[0] * sizeof(int64_t));
	int per_channel = in_ndim[1] <= in_ndim[0] && in_shape[1][0] == in_shape[0][0];
	int64_t an = 1;
	char a[256], b[256];

	for (int d = 1; d < in_ndim[1]; d++)
		per_channel &= in_shape[1][d] == 1;
	if (!same && !per_channel)
		return mc_err_set(err, MC_EINVAL,
				  "mul multiplies a by b of a's shape or of one value per channel "
				  "([C] or [C, 1, 1] for a [C, H, W]), got a %s and b %s",
				  mc_shape_text(in_ndim[0], in_shape[0], a, sizeof(a)),
				  mc_shape_text(in_ndim[1], in_shape[1], b, sizeof(b)));
	for (int d = 0; d < in_ndim[0]; d++)
		an *= in_shape[0][d]; /* the model checked the product */
	st->len = same ? an : in_shape[1][0];
	st->inner = same ? 1 : an / in_shape[1][0];
	return mc_same_shape_setup(node, in_ndim, in_shape, err);
}

/* out[n, C, ...] = a[n, C, ...] * b[n, C, ...] or b[n, C] */
static void mul_forward(const struct mc_node *node, const struct mc_run *run, int n,
			const float *const *in, float *out)
{
	const struct mul_state *st = node->attrs;
	const float *a = in[0], *b = in[1];
	int64_t total = (int64_t)n * node->out_numel, d = node->out_numel;

	EACH(total)
	for (int64_t i = 0; i < total; i++)
		out[i] = a[i] * b[i / d * st->len + i % d / st->inner];
}

/* da = dout * b; db[n, j] = sum of dout * a over the inner elements of j, in order */
static void mul_backward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, const float *out, const float *dout,
			 float *const *din, float *const *grads)
{
	const struct mul_state *st = node->attrs;
	const float *a = in[0], *b = in[1];
	int64_t total = (int64_t)n * node->out_numel, d = node->out_numel,
		nb = (int64_t)n * st->len;

	if (din[0]) {
		float *da = din[0];

		EACH(total)
		for (int64_t i = 0; i < total; i++)
			da[i] = dout[i] * b[i / d * st->len + i % d / st->inner];
	}
	if (din[1]) {
		float *db = din[1];

#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
		for (int64_t j = 0; j < nb; j++) {
			const float *g = dout + j * st->inner, *x = a + j * st->inner;
			double s = 0;

			for (int64_t k = 0; k < st->inner; k++)
				s += (double)g[k] * x[k];
			db[j] = (float)s;
		}
	}
}

const struct mc_op mc_op_mul = {
    .name = "mul",
    .help = "a * b, b of a's shape or one value per channel ([C] or [C, 1, 1])",
    .attr_size = sizeof(struct mul_state),
    .attrs = mc_no_attrs,
    .n_inputs = 2,
    .setup = mul_setup,
    .forward = mul_forward,
    .backward = mul_backward,
    .flops = mc_numel_flops,
};
