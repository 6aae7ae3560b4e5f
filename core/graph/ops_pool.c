/* SPDX-License-Identifier: MIT */
/*
 * ops_pool.c - pooling over per-sample [C, H, W] images: maxpool2d,
 * avgpool2d and global_avgpool.
 *
 * Every kernel splits over (sample, channel) planes, each written by one
 * thread: no atomics, and the same bits for any thread count. The common
 * 2x2, stride 2 max pool takes an unrolled path (SSE2 where present) that
 * makes the same comparisons in the same order as the general loop.
 */
#include <math.h>
#include <string.h>

#include <omp.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "graph/conv_geo.h"
#include "graph/ops_int.h"
#include "kernels/cpu.h"

/* ---------------------------------------------------------------- pooling */

struct pool_attrs {
	int kernel, stride, padding;
	int in_h, in_w; /* set by setup from the input shape; not attributes */
};

static const struct mc_param_def pool_attrs[] = {
    MC_PARAM_INT(struct pool_attrs, kernel, NULL, 1, 1024, "window height and width"),
    MC_PARAM_INT(struct pool_attrs, stride, "0", 0, 1024,
		 "step between windows; 0 means the kernel size"),
    MC_PARAM_INT(struct pool_attrs, padding, "0", 0, 512,
		 "padding on each side, at most half the kernel"),
    MC_PARAM_END,
};

struct pool_geo {
	int C, H, W, OH, OW, k, s, p;
};

static void pool_geo(const struct mc_node *node, struct pool_geo *q)
{
	const struct pool_attrs *a = node->attrs;

	q->k = a->kernel;
	q->s = a->stride ? a->stride : a->kernel;
	q->p = a->padding;
	q->C = (int)node->out_shape[0];
	q->OH = (int)node->out_shape[1];
	q->OW = (int)node->out_shape[2];
	q->H = a->in_h;
	q->W = a->in_w;
}

/* The taps of window (oh, ow) inside the image: rows [h0, h1), columns [w0, w1). */
struct pool_win {
	int h0, h1, w0, w1;
};

static struct pool_win pool_win(const struct pool_geo *q, int oh, int ow)
{
	int h = oh * q->s - q->p, w = ow * q->s - q->p;

	return (struct pool_win){h > 0 ? h : 0, h + q->k < q->H ? h + q->k : q->H, w > 0 ? w : 0,
				 w + q->k < q->W ? w + q->k : q->W};
}

static int pool_setup(struct mc_node *node, const int *in_ndim,
		      const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct pool_attrs *a = node->attrs;
	int s = a->stride ? a->stride : a->kernel;
	int64_t H, W;
	char buf[256];

	if (in_ndim[0] != 3)
		return mc_err_set(err, MC_EINVAL,
				  "%s needs per-sample [channels, height, width], got %s; pool "
				  "the output of a conv2d",
				  node->op->name,
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	H = in_shape[0][1];
	W = in_shape[0][2];
	if (2 * a->padding > a->kernel)
		return mc_err_set(err, MC_EINVAL,
				  "padding %d is more than half the kernel %d; use padding <= %d",
				  a->padding, a->kernel, a->kernel / 2);
	if (H + 2 * (int64_t)a->padding < a->kernel || W + 2 * (int64_t)a->padding < a->kernel)
		return mc_err_set(err, MC_EINVAL,
				  "kernel %d is larger than the input %lldx%lld; use a smaller "
				  "kernel",
				  a->kernel, (long long)H, (long long)W);
	node->out_ndim = 3;
	node->out_shape[0] = in_shape[0][0];
	node->out_shape[1] = mc_conv_out(H, a->kernel, s, a->padding);
	node->out_shape[2] = mc_conv_out(W, a->kernel, s, a->padding);
	a->in_h = (int)H;
	a->in_w = (int)W;
	return 0;
}

#ifdef __SSE2__
/* m ? a : b, lane by lane (m all ones or all zeros) */
static inline __m128 sel4(__m128 m, __m128 a, __m128 b)
{
	return _mm_or_ps(_mm_and_ps(m, a), _mm_andnot_ps(m, b));
}

/* The even and odd elements of p[0..8): four windows' left and right pixels. */
static inline void split4(const float *p, __m128 *even, __m128 *odd)
{
	__m128 lo = _mm_loadu_ps(p), hi = _mm_loadu_ps(p + 4);

	*even = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
	*odd = _mm_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
}
#endif

#if defined(__x86_64__)
#include <immintrin.h>

/*
 * Sixteen windows of one output row at a time with AVX-512: the same
 * comparisons as selects (ordered greater-than, false for NaN: vmaxps), so
 * the same bits as the loops below.
 */
__attribute__((target("avx512f"))) static int maxpool2_row_avx512(const float *r0, const float *r1,
								   int OW, float *y)
{
	const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
					       28, 30);
	const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
	int ow = 0;

	for (; ow < OW; ow += 16) {
		/* the last windows of a row: masked, nothing read or written past them */
		int w = OW - ow < 16 ? OW - ow : 16;
		__mmask16 l0 = 2 * w >= 16 ? 0xffff : (__mmask16)((1u << (2 * w)) - 1);
		__mmask16 l1 = 2 * w >= 32 ? 0xffff : 2 * w > 16 ? (__mmask16)((1u << (2 * w - 16)) - 1) : 0;
		__m512 a0 = _mm512_maskz_loadu_ps(l0, r0 + 2 * ow);
		__m512 a1 = _mm512_maskz_loadu_ps(l1, r0 + 2 * ow + 16);
		__m512 b0 = _mm512_maskz_loadu_ps(l0, r1 + 2 * ow);
		__m512 b1 = _mm512_maskz_loadu_ps(l1, r1 + 2 * ow + 16);
		__m512 v0 = _mm512_permutex2var_ps(a0, even, a1), v1 = _mm512_permutex2var_ps(a0, odd, a1);
		__m512 v2 = _mm512_permutex2var_ps(b0, even, b1), v3 = _mm512_permutex2var_ps(b0, odd, b1);
		/* vmaxps a, b is a > b ? a : b, b when either is NaN: the select in one */
		__m512 m = _mm512_max_ps(v1, v0);

		m = _mm512_max_ps(v2, m);
		m = _mm512_max_ps(v3, m);
		_mm512_mask_storeu_ps(y + ow, (__mmask16)((1u << w) - 1), m);
	}
	return OW;
}
#endif

/*
 * The common 2x2, stride 2 case without bounds checks. The same comparisons
 * in the same order as the general loop (first maximum wins), so the same
 * results and the same routing of gradients.
 */
/* plane [H, W] (H >= 2 OH) -> [OH, OW]: its 2x2, stride 2 windows (wide: with AVX-512). */
static void maxpool2_plane(int W, int OH, int OW, const float *x, float *y, int wide)
{
	(void)wide; /* without x86 */
	for (int oh = 0; oh < OH; oh++) {
		const float *r0 = x + 2 * oh * W, *r1 = r0 + W;
		int ow = 0;

#if defined(__x86_64__)
		if (wide)
			ow = maxpool2_row_avx512(r0, r1, OW, y + oh * OW);
#endif
#ifdef __SSE2__
		/* Four windows at a time, the same comparisons as below as
		 * selects (not max, whose NaN rule differs): the same bits. */
		for (; ow + 4 <= OW; ow += 4) {
			__m128 v0, v1, v2, v3, m;

			split4(r0 + 2 * ow, &v0, &v1);
			split4(r1 + 2 * ow, &v2, &v3);
			m = sel4(_mm_cmpgt_ps(v1, v0), v1, v0);
			m = sel4(_mm_cmpgt_ps(v2, m), v2, m);
			_mm_storeu_ps(y + oh * OW + ow, sel4(_mm_cmpgt_ps(v3, m), v3, m));
		}
#endif
		for (; ow < OW; ow++) {
			float m = r0[2 * ow];

			m = r0[2 * ow + 1] > m ? r0[2 * ow + 1] : m;
			m = r1[2 * ow] > m ? r1[2 * ow] : m;
			y[oh * OW + ow] = r1[2 * ow + 1] > m ? r1[2 * ow + 1] : m;
		}
	}
}

/*
 * planes [planes, H, W] -> [planes, OH, OW]: the 2x2, stride 2 windows of
 * each plane; split over a team when par and large enough. The per-sample
 * calls of a fused pool, from inside a team, are not: there even a team of
 * one costs microseconds.
 */
static void maxpool2_planes(int64_t planes, int H, int W, int OH, int OW, const float *x0,
			    float *y0, int par)
{
	int wide = 0;

#if defined(__x86_64__)
	wide = mc_cpu_has(MC_CPU_AVX512F);
#endif
	if (!par || planes * H * W < MC_PAR_MIN) {
		for (int64_t pl = 0; pl < planes; pl++)
			maxpool2_plane(W, OH, OW, x0 + pl * H * W, y0 + pl * OH * OW, wide);
		return;
	}
#pragma omp parallel for schedule(static)
	for (int64_t pl = 0; pl < planes; pl++)
		maxpool2_plane(W, OH, OW, x0 + pl * H * W, y0 + pl * OH * OW, wide);
}

static void maxpool2_forward(const struct pool_geo *q, int n, const float *x0, float *y0)
{
	maxpool2_planes((int64_t)n * q->C, q->H, q->W, q->OH, q->OW, x0, y0, 1);
}

int mc_maxpool2_fusable(const struct mc_node *node)
{
	struct pool_geo q;

	if (node->op != &mc_op_maxpool2d)
		return 0;
	pool_geo(node, &q);
	return q.k == 2 && q.s == 2 && q.p == 0;
}

void mc_maxpool2_sample(const struct mc_node *node, const float *x, float *y)
{
	struct pool_geo q;

	pool_geo(node, &q);
	maxpool2_planes(q.C, q.H, q.W, q.OH, q.OW, x, y, !omp_in_parallel());
}

void mc_maxpool2_sample_part(const struct mc_node *node, const float *x, float *y)
{
	struct pool_geo q;

	pool_geo(node, &q);
	maxpool2_planes(q.C, 2 * q.OH, 2 * q.OW, q.OH, q.OW, x, y, 0);
}

/*
 * dx = the 2x2 max pool's gradient: dy to each window's first maximum, 0
 * elsewhere. With relu, x is a relu's output and dx goes through that
 * relu's backward too (0 where x <= 0), in the same pass: the bits of the
 * two one after the other.
 */
static void maxpool2_backward_plane(const struct pool_geo *q, const float *x, const float *dy,
				    float *dx, int relu)
{
	/* Every pixel of a window is written (the gradient or 0): no clearing
	 * pass, except for an odd last row or column no window covers. */
	for (int oh = 0; oh < q->OH; oh++) {
		const float *a = x + 2 * oh * q->W, *c = a + q->W;
		float *da = dx + 2 * oh * q->W, *dc = da + q->W;
		int ow = 0;

#ifdef __SSE2__
		/* Four windows at a time, the masks of the loop below. */
		for (; ow + 4 <= q->OW; ow += 4) {
			__m128 g = _mm_loadu_ps(dy + oh * q->OW + ow), v0, v1, v2, v3, m;
			__m128 b1, b2, b3, any, r0, r1, r2, r3;

			split4(a + 2 * ow, &v0, &v1);
			split4(c + 2 * ow, &v2, &v3);
			/* relu's mask (all ones without relu) */
			r0 = relu ? _mm_cmpgt_ps(v0, _mm_setzero_ps())
				  : _mm_castsi128_ps(_mm_set1_epi32(-1));
			r1 = relu ? _mm_cmpgt_ps(v1, _mm_setzero_ps()) : r0;
			r2 = relu ? _mm_cmpgt_ps(v2, _mm_setzero_ps()) : r0;
			r3 = relu ? _mm_cmpgt_ps(v3, _mm_setzero_ps()) : r0;
			b1 = _mm_cmpgt_ps(v1, v0);
			m = sel4(b1, v1, v0);
			b2 = _mm_cmpgt_ps(v2, m);
			m = sel4(b2, v2, m);
			b3 = _mm_cmpgt_ps(v3, m);
			b2 = _mm_andnot_ps(b3, b2);
			b1 = _mm_andnot_ps(_mm_or_ps(b2, b3), b1);
			any = _mm_or_ps(b1, _mm_or_ps(b2, b3));
			v0 = _mm_and_ps(r0, _mm_andnot_ps(any, g));
			v1 = _mm_and_ps(r1, _mm_and_ps(b1, g));
			v2 = _mm_and_ps(r2, _mm_and_ps(b2, g));
			v3 = _mm_and_ps(r3, _mm_and_ps(b3, g));
			_mm_storeu_ps(da + 2 * ow, _mm_unpacklo_ps(v0, v1));
			_mm_storeu_ps(da + 2 * ow + 4, _mm_unpackhi_ps(v0, v1));
			_mm_storeu_ps(dc + 2 * ow, _mm_unpacklo_ps(v2, v3));
			_mm_storeu_ps(dc + 2 * ow + 4, _mm_unpackhi_ps(v2, v3));
		}
#endif
		for (; ow < q->OW; ow++) {
			float g = dy[oh * q->OW + ow], v0 = a[2 * ow], v1 = a[2 * ow + 1];
			float v2 = c[2 * ow], v3 = c[2 * ow + 1], m;
			int b1 = v1 > v0, b2, b3;

			/* selects, not branches: which pixel wins is data, not pattern */
			m = b1 ? v1 : v0;
			b2 = v2 > m;
			m = b2 ? v2 : m;
			b3 = v3 > m;
			b2 &= !b3;
			b1 &= !b2 & !b3;
			da[2 * ow] = b1 | b2 | b3 || (relu && !(v0 > 0.0f)) ? 0.0f : g;
			da[2 * ow + 1] = b1 && !(relu && !(v1 > 0.0f)) ? g : 0.0f;
			dc[2 * ow] = b2 && !(relu && !(v2 > 0.0f)) ? g : 0.0f;
			dc[2 * ow + 1] = b3 && !(relu && !(v3 > 0.0f)) ? g : 0.0f;
		}
		if (q->W & 1) {
			da[q->W - 1] = 0.0f;
			dc[q->W - 1] = 0.0f;
		}
	}
	if (q->H & 1)
		memset(dx + (size_t)(q->H - 1) * q->W, 0, (size_t)q->W * sizeof(float));
}

static void maxpool2_backward(const struct pool_geo *q, int n, const float *x0, const float *dy0,
			      float *dx0, int relu)
{
#pragma omp parallel for schedule(static) if ((int64_t)n * q->C * q->H * q->W >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * q->C; pl++)
		maxpool2_backward_plane(q, x0 + pl * q->H * q->W, dy0 + pl * q->OH * q->OW,
					dx0 + pl * q->H * q->W, relu);
}

void mc_maxpool2_backward_relu(const struct mc_node *node, int n, const float *x,
			       const float *dy, float *dx)
{
	struct pool_geo q;

	pool_geo(node, &q);
	maxpool2_backward(&q, n, x, dy, dx, 1);
}

void mc_maxpool2_backward_relu_planes(const struct mc_node *node, int64_t planes, const float *x,
				      const float *dy, float *dx)
{
	struct pool_geo q;

	pool_geo(node, &q);
	for (int64_t pl = 0; pl < planes; pl++)
		maxpool2_backward_plane(&q, x + pl * q.H * q.W, dy + pl * q.OH * q.OW,
					dx + pl * q.H * q.W, 1);
}

/*
 * y[n, C, OH, OW] = the max (padding never wins) or, avg, the mean (padding
 * counted as zeros, PyTorch's default) of each window of x[n, C, H, W].
 *
 * The mean adds its window row by row, left to right, and divides the sum
 * by the window's size: the bits ONNX Runtime's blocked-layout (NCHWc)
 * pooling computes, which it runs at its default optimization level
 * wherever the channels are a multiple of its block (8 with AVX2, 16 with
 * AVX-512), so that an exported model, int8 ones included, computes
 * mcomp's bits there (an int8 model requantizes the mean: a last-bit
 * difference moves a value to the next integer). ONNX Runtime's plain
 * kernel (other channel counts) sums a stride-1 or -2 window column by
 * column instead; docs/interop.md says what that costs.
 */
static float window_mean(const struct pool_geo *q, const float *x, struct pool_win b)
{
	float m = x[b.h0 * q->W + b.w0];

	for (int h = b.h0; h < b.h1; h++)
		for (int w = h == b.h0 ? b.w0 + 1 : b.w0; w < b.w1; w++)
			m += x[h * q->W + w];
	return m / (float)(q->k * q->k);
}

static void pool_forward(const struct pool_geo *q, int n, const float *x0, float *y0, int avg)
{

#pragma omp parallel for schedule(static) \
	if ((int64_t)n * q->C * q->OH * q->OW * q->k * q->k >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * q->C; pl++) {
		const float *x = x0 + pl * q->H * q->W;
		float *y = y0 + pl * q->OH * q->OW;

		for (int oh = 0; oh < q->OH; oh++)
			for (int ow = 0; ow < q->OW; ow++) {
				struct pool_win b = pool_win(q, oh, ow);
				float m = -INFINITY;

				if (avg) {
					y[oh * q->OW + ow] = window_mean(q, x, b);
					continue;
				}
				for (int h = b.h0; h < b.h1; h++)
					for (int w = b.w0; w < b.w1; w++)
						if (x[h * q->W + w] > m)
							m = x[h * q->W + w];
				y[oh * q->OW + ow] = m;
			}
	}
}

static void maxpool_forward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	struct pool_geo q;

	pool_geo(node, &q);
	if (q.k == 2 && q.s == 2 && q.p == 0)
		maxpool2_forward(&q, n, in[0], out);
	else
		pool_forward(&q, n, in[0], out, 0);
}

/* din = dout routed to the first maximum of each window */
static void maxpool_backward(const struct mc_node *node, const struct mc_run *run, int n,
			     const float *const *in, const float *out, const float *dout,
			     float *const *din, float *const *grads)
{
	struct pool_geo q;

	if (!din[0])
		return;
	pool_geo(node, &q);
	if (q.k == 2 && q.s == 2 && q.p == 0) {
		maxpool2_backward(&q, n, in[0], dout, din[0], 0);
		return;
	}
#pragma omp parallel for schedule(static) if ((int64_t)n * q.C * q.OH * q.OW * q.k * q.k >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * q.C; pl++) {
		const float *x = in[0] + pl * q.H * q.W, *dy = dout + pl * q.OH * q.OW;
		float *dx = din[0] + pl * q.H * q.W;

		memset(dx, 0, (size_t)q.H * q.W * sizeof(float));
		for (int oh = 0; oh < q.OH; oh++)
			for (int ow = 0; ow < q.OW; ow++) {
				struct pool_win b = pool_win(&q, oh, ow);
				float m = -INFINITY;
				int at = -1;

				for (int h = b.h0; h < b.h1; h++)
					for (int w = b.w0; w < b.w1; w++)
						if (at < 0 || x[h * q.W + w] > m) {
							m = x[h * q.W + w];
							at = h * q.W + w;
						}
				if (at >= 0)
					dx[at] += dy[oh * q.OW + ow];
			}
	}
}

static int64_t pool_flops(const struct mc_node *node)
{
	const struct pool_attrs *a = node->attrs;

	return node->out_numel * a->kernel * a->kernel;
}

const struct mc_op mc_op_maxpool2d = {
    .name = "maxpool2d",
    .help = "max over k x k windows of [C, H, W]: kernel, stride, padding",
    .attr_size = sizeof(struct pool_attrs),
    .attrs = pool_attrs,
    .n_inputs = 1,
    .setup = pool_setup,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
    .flops = pool_flops,
};

static void avgpool_forward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	struct pool_geo q;

	pool_geo(node, &q);
	pool_forward(&q, n, in[0], out, 1);
}

static void avgpool_backward(const struct mc_node *node, const struct mc_run *run, int n,
			     const float *const *in, const float *out, const float *dout,
			     float *const *din, float *const *grads)
{
	struct pool_geo q;
	float inv;

	if (!din[0])
		return;
	pool_geo(node, &q);
	inv = 1.0f / (float)(q.k * q.k);
#pragma omp parallel for schedule(static) if ((int64_t)n * q.C * q.OH * q.OW * q.k * q.k >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * q.C; pl++) {
		const float *dy = dout + pl * q.OH * q.OW;
		float *dx = din[0] + pl * q.H * q.W;

		memset(dx, 0, (size_t)q.H * q.W * sizeof(float));
		for (int oh = 0; oh < q.OH; oh++)
			for (int ow = 0; ow < q.OW; ow++) {
				struct pool_win b = pool_win(&q, oh, ow);
				float g = dy[oh * q.OW + ow] * inv;

				for (int h = b.h0; h < b.h1; h++)
					for (int w = b.w0; w < b.w1; w++)
						dx[h * q.W + w] += g;
			}
	}
}

const struct mc_op mc_op_avgpool2d = {
    .name = "avgpool2d",
    .help = "mean over k x k windows of [C, H, W]: kernel, stride, padding",
    .attr_size = sizeof(struct pool_attrs),
    .attrs = pool_attrs,
    .n_inputs = 1,
    .setup = pool_setup,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
    .flops = pool_flops,
};

/* ---------------------------------------------------------------- global average pool */

struct gap_state {
	int64_t area; /* values per channel, set by setup; global_avgpool has no attributes */
};

static int gap_setup(struct mc_node *node, const int *in_ndim,
		     const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct gap_state *st = node->attrs;
	char buf[256];

	if (in_ndim[0] < 2)
		return mc_err_set(err, MC_EINVAL,
				  "global_avgpool needs per-sample [channels, height, width], got "
				  "%s; pool the output of a conv2d",
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	st->area = 1;
	for (int d = 1; d < in_ndim[0]; d++)
		st->area *= in_shape[0][d]; /* the model checked the product */
	node->out_ndim = 1;
	node->out_shape[0] = in_shape[0][0];
	return 0;
}

/* out[n, C] = mean of in[n, C, H*W] over H*W */
static void gap_forward(const struct mc_node *node, const struct mc_run *run, int n,
			const float *const *in, float *out)
{
	int64_t C = node->out_shape[0], S = ((const struct gap_state *)node->attrs)->area;

#pragma omp parallel for schedule(static) if ((int64_t)n * C * S >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * C; pl++) {
		const float *x = in[0] + pl * S;
		float sum = 0.0f;

		for (int64_t j = 0; j < S; j++)
			sum += x[j];
		out[pl] = sum / (float)S;
	}
}

/* din[n, C, H*W] = dout[n, C] / (H*W) */
static void gap_backward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, const float *out, const float *dout,
			 float *const *din, float *const *grads)
{
	int64_t C = node->out_shape[0], S = ((const struct gap_state *)node->attrs)->area;

	if (!din[0])
		return;
#pragma omp parallel for schedule(static) if ((int64_t)n * C * S >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * C; pl++) {
		float g = dout[pl] / (float)S;

		for (int64_t j = 0; j < S; j++)
			din[0][pl * S + j] = g;
	}
}

static int64_t gap_flops(const struct mc_node *node)
{
	return node->out_numel * ((const struct gap_state *)node->attrs)->area;
}

const struct mc_op mc_op_global_avgpool = {
    .name = "global_avgpool",
    .help = "mean of each channel: [C, H, W] -> [C]",
    .attr_size = sizeof(struct gap_state),
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = gap_setup,
    .forward = gap_forward,
    .backward = gap_backward,
    .flops = gap_flops,
};
