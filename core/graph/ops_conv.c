/* SPDX-License-Identifier: MIT */
/*
 * ops_conv.c - convolution over per-sample [C, H, W] images: conv2d.
 *
 * Groups of 4 or more output channels run on the batched kernels of
 * kernels/conv.h: the forward pass as one implicit GEMM over the whole
 * batch with bias (and, when the executor fuses it, relu and a 2x2 max
 * pool) applied as tiles are stored; dW and db as one product over the
 * batch's positions; dX of a stride-1 convolution as the convolution of
 * dout with the flipped weights. Each output is one FMA chain in a fixed
 * order: the same bits on every kernel path and for any thread count.
 *
 * Depthwise groups (one input and one output channel each) run on the
 * direct kernels of kernels/dwconv.h, forward and backward, which form
 * every output with the chain the per-sample GEMMs below give it.
 *
 * Other narrower groups keep the per-sample GEMMs: im2col of one
 * sample, one GEMM per group with W^T, samples spread over threads with a
 * slot of the workspace each; the backward pass sums dW per fixed group of
 * samples and adds the groups in order, and folds dcol back into the image
 * (col2im) with each thread owning whole samples: no atomics, and the same
 * bits for any thread count.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include <omp.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "graph/conv_geo.h"
#include "graph/ops_int.h"
#include "kernels/conv.h"
#include "kernels/cpu.h"
#include "kernels/dwconv.h"

/* ---------------------------------------------------------------- conv2d */

struct conv_attrs {
	int out, kernel, stride, padding, groups, bias;
	int in_h, in_w; /* set by setup from the input shape; not attributes */
};

static const struct mc_param_def conv_attrs[] = {
    MC_PARAM_INT(struct conv_attrs, out, NULL, 1, 1 << 20, "output channels"),
    MC_PARAM_INT(struct conv_attrs, kernel, "3", 1, 1024, "kernel height and width"),
    MC_PARAM_INT(struct conv_attrs, stride, "1", 1, 1024, "step between windows"),
    MC_PARAM_INT(struct conv_attrs, padding, "0", 0, 1024, "zeros added on each side"),
    MC_PARAM_INT(struct conv_attrs, groups, "1", 1, 1 << 20,
		 "channel groups (in channels for depthwise)"),
    { .name = "bias", .type = MC_PARAM_TBOOL, .elem = MC_PARAM_TBOOL,
      .offset = offsetof(struct conv_attrs, bias), .def = "true", .min = 0, .max = 1,
      .help = "add a learned bias per output channel", .flags = MC_PARAM_FOMIT },
    MC_PARAM_END,
};

/* The geometry of a conv2d node, from its weight and shapes. */
static void conv_geo(const struct mc_node *node, struct mc_conv_geo *q)
{
	const struct conv_attrs *a = node->attrs;

	mc_conv_geo_init(q, node->params[0], node->out_shape, a->kernel, a->stride, a->padding,
			 a->groups, a->in_h, a->in_w);
}

int mc_conv_setup(struct mc_node *node, const char *pfx, const int64_t *in, int out, int k, int s,
		  int p, int g, size_t kmax, const char *hint, int *in_h, int *in_w,
		  struct mc_err *err)
{
	int64_t C = in[0], H = in[1], W = in[2], OH, OW;
	size_t kn, wn, cols;

	if (H + 2 * (int64_t)p < k || W + 2 * (int64_t)p < k)
		return mc_err_set(err, MC_EINVAL,
				  "%skernel %d is larger than the padded input %lldx%lld; use a "
				  "smaller kernel or more padding",
				  pfx, k, (long long)(H + 2 * p), (long long)(W + 2 * p));
	if (p >= k)
		return mc_err_set(err, MC_EINVAL,
				  "%spadding %d leaves windows of zeros only; use padding below "
				  "the kernel %d",
				  pfx, p, k);
	OH = mc_conv_out(H, k, s, p);
	OW = mc_conv_out(W, k, s, p);
	/* weight [out, C/g, k, k]; one column of im2col per output position */
	if (C / g < 1 || mc_mul_overflow((size_t)(C / g), (size_t)k * k, &kn) || kn > kmax ||
	    mc_mul_overflow(kn, (size_t)out, &wn) || wn > INT_MAX ||
	    mc_mul_overflow((size_t)OH, (size_t)OW, &cols) || cols > INT_MAX / 4096 ||
	    H > INT_MAX || W > INT_MAX)
		return mc_err_set(err, MC_EINVAL,
				  "%s of %lld channels to %d with kernel %d is too large; %s",
				  node->op->name, (long long)C, out, k, hint);
	*in_h = (int)H;
	*in_w = (int)W;
	node->out_ndim = 3;
	node->out_shape[0] = out;
	node->out_shape[1] = OH;
	node->out_shape[2] = OW;
	return 0;
}

static int conv_setup(struct mc_node *node, const int *in_ndim,
		      const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct conv_attrs *a = node->attrs;
	int64_t C = in_shape[0][0], ws[4] = { a->out, C / a->groups, a->kernel, a->kernel };
	char buf[256];
	int r;

	if (in_ndim[0] != 3)
		return mc_err_set(err, MC_EINVAL,
				  "conv2d needs per-sample [channels, height, width], got %s; "
				  "give the model input such a shape (e.g. [1, 28, 28])",
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	if (C % a->groups || a->out % a->groups)
		return mc_err_set(err, MC_EINVAL,
				  "groups %d must divide the %lld input and %d output channels; "
				  "use a divisor of both",
				  a->groups, (long long)C, a->out);
	r = mc_conv_setup(node, "", in_shape[0], a->out, a->kernel, a->stride, a->padding,
			  a->groups, INT_MAX / 64, "use fewer channels or a smaller kernel",
			  &a->in_h, &a->in_w, err);
	if (!r)
		r = mc_node_new_param(node, 0, "weight", 4, ws, err);
	if (!r && a->bias)
		r = mc_node_new_param(node, 1, "bias", 1, ws, err);
	return r;
}

/* The outputs ow in [*lo, *hi) whose window column ow * s - p + kj lies inside [0, W). */
static void valid_cols(const struct mc_conv_geo *q, int kj, int *lo, int *hi)
{
	int first = q->p - kj > 0 ? (q->p - kj + q->s - 1) / q->s : 0;
	int last = (q->W - 1 + q->p - kj) >= 0 ? (q->W - 1 + q->p - kj) / q->s + 1 : 0;

	*lo = first < q->OW ? first : q->OW;
	*hi = last < q->OW ? last : q->OW;
	if (*hi < *lo)
		*hi = *lo;
}

/* col[C*k*k, P] from one sample x[C, H, W]: row (c, ki, kj) holds what that tap sees. */
static void im2col(const struct mc_conv_geo *q, const float *x, float *col)
{
	for (int c = 0; c < q->C; c++) {
		const float *img = x + (size_t)c * q->H * q->W;

		for (int ki = 0; ki < q->k; ki++)
			for (int kj = 0; kj < q->k; kj++) {
				int64_t row = ((int64_t)c * q->k + ki) * q->k + kj;
				float *dst = col + row * q->P;
				int lo, hi;

				valid_cols(q, kj, &lo, &hi);
				for (int oh = 0; oh < q->OH; oh++, dst += q->OW) {
					int h = oh * q->s - q->p + ki;
					const float *src = img + (int64_t)h * q->W - q->p + kj;

					if (h < 0 || h >= q->H) {
						memset(dst, 0, (size_t)q->OW * sizeof(float));
						continue;
					}
					memset(dst, 0, (size_t)lo * sizeof(float));
					if (q->s == 1)
						memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
					else
						for (int ow = lo; ow < hi; ow++)
							dst[ow] = src[ow * q->s];
					memset(dst + hi, 0, (size_t)(q->OW - hi) * sizeof(float));
				}
			}
	}
}

/* colT[P, C*k*k] from one sample: row p holds the window of output position p. */
MC_DEFINE_IM2COL_T(im2col_t, float)

/* dst[0..n) += src[0..n): each element one add, so SIMD or not, the same bits. */
static inline void add_to(float *restrict dst, const float *restrict src, int n)
{
	int i = 0;

#ifdef __SSE2__
	for (; i + 4 <= n; i += 4)
		_mm_storeu_ps(dst + i, _mm_add_ps(_mm_loadu_ps(dst + i), _mm_loadu_ps(src + i)));
#endif
	for (; i < n; i++)
		dst[i] += src[i];
}

void mc_conv_col2im(const struct mc_conv_geo *q, const float *dcol, float *dx)
{
	memset(dx, 0, (size_t)q->C * q->H * q->W * sizeof(float));
	for (int c = 0; c < q->C; c++) {
		float *img = dx + (size_t)c * q->H * q->W;

		for (int ki = 0; ki < q->k; ki++)
			for (int kj = 0; kj < q->k; kj++) {
				int64_t row = ((int64_t)c * q->k + ki) * q->k + kj;
				const float *src = dcol + row * q->P;
				int lo, hi;

				valid_cols(q, kj, &lo, &hi);
				for (int oh = 0; oh < q->OH; oh++, src += q->OW) {
					int h = oh * q->s - q->p + ki;
					float *dst = img + (int64_t)h * q->W - q->p + kj;

					if (h < 0 || h >= q->H)
						continue;
					if (q->s == 1)
						add_to(dst + lo, src + lo, hi - lo);
					else
						for (int ow = lo; ow < hi; ow++)
							dst[ow * q->s] += src[ow];
				}
			}
	}
}

/* t[O, P] (row stride ldt) = y[P, O]^T, scalar */
static void transpose_ref(const float *y, int64_t P, int O, float *t, int64_t ldt)
{
	for (int64_t p0 = 0; p0 < P; p0 += 16) {
		int64_t pn = P - p0 < 16 ? P - p0 : 16;

		for (int o = 0; o < O; o++)
			for (int64_t p = 0; p < pn; p++)
				t[(size_t)o * ldt + p0 + p] = y[(size_t)(p0 + p) * O + o];
	}
}

#if defined(__x86_64__)
/* The same with 8x8 blocks in registers; the edges go through transpose_ref. */
__attribute__((target("avx2"))) static void transpose_avx2(const float *y, int64_t P, int O,
							   float *t, int64_t ldt)
{
	int64_t P8 = P & ~(int64_t)7;
	int O8 = O & ~7;

	for (int64_t p = 0; p < P8; p += 8)
		for (int o = 0; o < O8; o += 8) {
			const float *src = y + (size_t)p * O + o;
			__m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + O);
			__m256 r2 = _mm256_loadu_ps(src + 2 * O), r3 = _mm256_loadu_ps(src + 3 * O);
			__m256 r4 = _mm256_loadu_ps(src + 4 * O), r5 = _mm256_loadu_ps(src + 5 * O);
			__m256 r6 = _mm256_loadu_ps(src + 6 * O), r7 = _mm256_loadu_ps(src + 7 * O);
			__m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
			__m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
			__m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
			__m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
			__m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
			__m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
			__m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
			__m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
			float *dst = t + (size_t)o * ldt + p;

			_mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
			_mm256_storeu_ps(dst + ldt, _mm256_permute2f128_ps(u1, u5, 0x20));
			_mm256_storeu_ps(dst + 2 * ldt, _mm256_permute2f128_ps(u2, u6, 0x20));
			_mm256_storeu_ps(dst + 3 * ldt, _mm256_permute2f128_ps(u3, u7, 0x20));
			_mm256_storeu_ps(dst + 4 * ldt, _mm256_permute2f128_ps(u0, u4, 0x31));
			_mm256_storeu_ps(dst + 5 * ldt, _mm256_permute2f128_ps(u1, u5, 0x31));
			_mm256_storeu_ps(dst + 6 * ldt, _mm256_permute2f128_ps(u2, u6, 0x31));
			_mm256_storeu_ps(dst + 7 * ldt, _mm256_permute2f128_ps(u3, u7, 0x31));
		}
	if (O8 < O)
		for (int64_t p = 0; p < P8; p++)
			for (int o = O8; o < O; o++)
				t[(size_t)o * ldt + p] = y[(size_t)p * O + o];
	if (P8 < P)
		transpose_ref(y + (size_t)P8 * O, P - P8, O, t + P8, ldt);
}
#endif

/* A transpose only moves values: either kernel gives the same bits. */
void mc_transpose(int64_t rows, int cols, const float *a, float *t)
{
#if defined(__x86_64__)
	if (mc_cpu_has(MC_CPU_AVX2)) {
		transpose_avx2(a, rows, cols, t, rows);
		return;
	}
#endif
	transpose_ref(a, rows, cols, t, rows);
}

/*
 * Samples are spread over at most CONV_SLOTS threads, each with a slot of
 * the workspace of its own; the weight gradient is summed per fixed group
 * of CONV_GROUP samples and the groups added in order. Both are functions
 * of the batch size alone, so the workspace (sized for the largest batch)
 * always has room, and the order of every sum is the same for any thread
 * count.
 */
#define CONV_SLOTS 16
#define CONV_GROUP 8
_Static_assert(CONV_GROUP == MC_DWCONV_GROUP, "depthwise dW must sum the groups of samples "
					       "the per-sample GEMMs sum");

static int conv_slots(int n)
{
	return n < CONV_SLOTS ? n : CONV_SLOTS;
}

static int conv_groups(int n)
{
	return (n + CONV_GROUP - 1) / CONV_GROUP;
}

/* Floats of one slot: col (forward), or colT, dY^T and dcol (backward). */
static size_t conv_slot_floats(const struct mc_conv_geo *q)
{
	size_t ckk = (size_t)q->C * q->k * q->k;

	return (size_t)q->P * (2 * ckk + (size_t)q->O);
}

/*
 * Groups of at least BATCHED_MIN_OG output channels run on the batched
 * kernels (kernels/conv.h); narrower ones (depthwise) on the per-sample
 * GEMMs below. The choice depends on the shape alone.
 */
#define BATCHED_MIN_OG 4

static int batched(const struct mc_conv_geo *q)
{
	return q->Og >= BATCHED_MIN_OG;
}

/*
 * Depthwise (one input and one output channel a group): forward and
 * backward run on kernels/dwconv.h, whose chains are those of the
 * per-sample GEMMs below, so the bits are the same either way.
 */
static int depthwise(const struct mc_conv_geo *q)
{
	return q->Cg == 1 && q->Og == 1;
}

static struct mc_dwconv dwconv(const struct mc_conv_geo *q)
{
	return (struct mc_dwconv){ .C = q->C, .H = q->H, .W = q->W, .OH = q->OH, .OW = q->OW,
				   .k = q->k, .s = q->s, .p = q->p };
}

/* Group g's convolution for the batched kernels. */
static struct mc_convf convf(const struct mc_conv_geo *q)
{
	return (struct mc_convf){ .C = q->Cg, .H = q->H, .W = q->W, .O = q->Og, .OH = q->OH,
				  .OW = q->OW, .k = q->k, .s = q->s, .p = q->p,
				  .xs = (int64_t)q->C * q->H * q->W, .ys = (int64_t)q->O * q->P };
}

/*
 * The input gradient of a stride-1 convolution is itself one: dy [Og, OH,
 * OW] convolved with the flipped, transposed weights W'[c][o][k-1-ki][k-1-kj]
 * under padding k-1-p gives dx [Cg, H, W].
 */
static struct mc_convf convf_t(const struct mc_conv_geo *q)
{
	return (struct mc_convf){ .C = q->Og, .H = q->OH, .W = q->OW, .O = q->Cg, .OH = q->H,
				  .OW = q->W, .k = q->k, .s = 1, .p = q->k - 1 - q->p,
				  .xs = (int64_t)q->O * q->P, .ys = (int64_t)q->C * q->H * q->W };
}

static size_t max3(size_t a, size_t b, size_t c)
{
	return a > b ? (a > c ? a : c) : (b > c ? b : c);
}

/* The batched kernels' workspace for n samples: forward, dW, or dX behind the flipped weights. */
static size_t batched_workspace(const struct mc_conv_geo *q, int n)
{
	struct mc_convf f = convf(q), t = convf_t(q);
	size_t wf = ((size_t)q->Og * q->Kg * sizeof(float) + 63) & ~(size_t)63, fw = mc_convf_work(&f);
	size_t dw = mc_convf_dw_work(&f, n), dx = q->s == 1 ? mc_convf_work(&t) : 0;

	if (fw == SIZE_MAX || dw == SIZE_MAX || dx == SIZE_MAX || dx > SIZE_MAX - wf)
		return SIZE_MAX;
	return max3(fw, dw, dx ? dx + wf : 0);
}

/* W^T per group, then the slots, then per group of samples dW^T and db partial sums */
static size_t conv_workspace(const struct mc_node *node, int n)
{
	struct mc_conv_geo q;
	size_t wk, slots, parts, total, b = 0;

	conv_geo(node, &q);
	if (batched(&q)) {
		b = batched_workspace(&q, n);
		/* dX of a strided convolution goes through the per-sample GEMMs too */
		if (q.s == 1 || b == SIZE_MAX)
			return b;
	}
	wk = (size_t)q.O * q.Kg;
	if (n < 1)
		n = 1;
	if (mc_mul_overflow(conv_slot_floats(&q), (size_t)conv_slots(n), &slots) ||
	    mc_mul_overflow(wk + (size_t)q.O, (size_t)conv_groups(n), &parts) ||
	    __builtin_add_overflow(slots, parts, &total) || __builtin_add_overflow(total, wk, &total) ||
	    mc_mul_overflow(total, sizeof(float), &total))
		return SIZE_MAX;
	if (depthwise(&q)) {
		struct mc_dwconv d = dwconv(&q);
		size_t fw = mc_dwconv_work(&d), bw = mc_dwconv_bwd_work(&d, n);

		if (fw == SIZE_MAX || bw == SIZE_MAX)
			return SIZE_MAX;
		total = max3(total, fw, bw);
	}
	return total > b ? total : b;
}

/*
 * Threads for units of work that each need a slot: 1 means one thread at a
 * time (small products are not worth waking the team for).
 */
static int conv_threads(const struct mc_conv_geo *q, int n, int units)
{
	int nt = omp_in_parallel() ? 1 : omp_get_max_threads();

	if ((double)n * q->O * q->Kg * (double)q->P < 1e6)
		nt = 1;

	if (nt > conv_slots(n))
		nt = conv_slots(n);
	return nt < units ? nt : units;
}

/* y[O, P] = W col + b for one sample; wt holds W^T per group, col the slot. */
static void conv_fwd_sample(const struct mc_conv_geo *q, const float *wt, const float *b,
			    const float *x, float *col, float *y)
{
	int64_t P = q->P; /* in a local: stores to y could alias q, and the loop would reload it */

	im2col(q, x, col);
	for (int o = 0; o < q->O; o++) {
		float *yo = y + o * P, bias = b ? b[o] : 0.0f;
		int64_t p = 0;

#ifdef __SSE2__
		for (__m128 bo = _mm_set1_ps(bias); p + 4 <= P; p += 4)
			_mm_storeu_ps(yo + p, bo);
#endif
		for (; p < P; p++)
			yo[p] = bias;
	}
	for (int g = 0; g < q->g; g++)
		mc_sgemm(1, 0, q->Og, (int)q->P, q->Kg, 1.0f, wt + (size_t)g * q->Og * q->Kg, q->Og,
			 col + (size_t)g * q->Kg * q->P, (int)q->P, 1.0f, y + (size_t)g * q->Og * q->P,
			 (int)q->P);
}

/* out = max(out, 0), in place */
static void relu_inplace(float *out, int64_t total)
{
#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < total; c += MC_CHUNK) {
		int64_t end = c + MC_CHUNK < total ? c + MC_CHUNK : total;

		for (int64_t i = c; i < end; i++)
			out[i] = out[i] > 0.0f ? out[i] : 0.0f;
	}
}

static void conv_forward_gemm(const struct mc_node *node, const struct mc_run *run, int n,
			      const float *const *in, float *out);

/*
 * out[n, O, OH, OW] = conv(in[n, C, H, W], W[O, C/g, k, k]) + b[O], then
 * max(out, 0) with relu: the batched kernels, group by group, or the
 * per-sample GEMMs for narrow groups.
 */
static void conv_run(const struct mc_node *node, const struct mc_run *run, int n,
		     const float *const *in, float *out, int relu, const struct mc_convf_epi *epi)
{
	const float *w = node->params[0]->data;
	const float *b = node->n_params > 1 ? node->params[1]->data : NULL;
	struct mc_conv_geo q;

	if (n < 1)
		return;
	conv_geo(node, &q);
	if (depthwise(&q)) {
		struct mc_dwconv d = dwconv(&q);

		mc_dwconv_forward(&d, n, in[0], w, b, relu, out, run->work);
		return;
	}
	if (!batched(&q)) {
		conv_forward_gemm(node, run, n, in, out);
		if (relu)
			relu_inplace(out, (int64_t)n * node->out_numel);
		return;
	}
	for (int g = 0; g < q.g; g++) {
		struct mc_convf f = convf(&q);

		mc_convf_forward(&f, n, in[0] + (size_t)g * q.Cg * q.H * q.W,
				 w + (size_t)g * q.Og * q.Kg, b ? b + (size_t)g * q.Og : NULL, relu,
				 out + (size_t)g * q.Og * q.P, run->work, q.g == 1 ? epi : NULL);
	}
}

static void conv_forward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, float *out)
{
	conv_run(node, run, n, in, out, 0, NULL);
}

void mc_conv2d_forward_relu(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	conv_run(node, run, n, in, out, 1, NULL);
}

struct pool_epi {
	const struct mc_node *pool;
	float *out;
};

static void pool_sample(void *ctx, int s, const float *ys)
{
	const struct pool_epi *pe = ctx;

	mc_maxpool2_sample(pe->pool, ys, pe->out + (size_t)s * pe->pool->out_numel);
}

/* The same from ys [C][2 OH][2 OW]: the rows and columns the windows read, no more. */
static void pool_sample_part(void *ctx, int s, const float *ys)
{
	const struct pool_epi *pe = ctx;

	mc_maxpool2_sample_part(pe->pool, ys, pe->out + (size_t)s * pe->pool->out_numel);
}

void mc_conv2d_forward_relu_pool(const struct mc_node *node, const struct mc_node *pool,
				 const struct mc_run *run, int n, const float *const *in,
				 float *conv_out, float *out)
{
	struct pool_epi pe = { pool, out };
	struct mc_convf_epi epi = { pool_sample,
				    &pe,
				    pool_sample_part,
				    2 * (int)pool->out_shape[1],
				    2 * (int)pool->out_shape[2],
				    out,
				    pool->out_numel };
	struct mc_conv_geo q;
	const float *pin[1] = { conv_out };

	conv_geo(node, &q);
	if (n >= 1 && batched(&q) && q.g == 1) {
		conv_run(node, run, n, in, conv_out, 1, &epi);
		return;
	}
	conv_run(node, run, n, in, conv_out, 1, NULL);
	pool->op->forward(pool, run, n, pin, out);
}

struct post_epi {
	mc_conv_post_fn fn;
	const struct mc_conv_post *post;
	int O;
	int64_t P;
	const float *res;
	float *out;
};

/* post over sample s's output ys [O][P] into out, while ys is in cache. */
static void post_sample(void *ctx, int s, const float *ys)
{
	const struct post_epi *pe = ctx;
	size_t at = (size_t)s * pe->O * pe->P;

	for (int o = 0; o < pe->O; o++, at += pe->P, ys += pe->P)
		pe->fn(pe->post, o, ys, pe->post->add ? pe->res + at : NULL, pe->out + at, pe->P);
}

void mc_conv2d_forward_post(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, const struct mc_conv_post *post,
			    const float *res, float *conv_out, float *out)
{
	struct post_epi pe = { mc_conv_post_path(), post, 0, 0, res, out };
	struct mc_convf_epi epi = { post_sample, &pe, NULL, 0, 0, NULL, 0 };
	struct mc_conv_geo q;
	int64_t rows = (int64_t)n * node->out_shape[0];

	if (n < 1)
		return;
	conv_geo(node, &q);
	pe.O = q.O;
	pe.P = q.P;
	if (depthwise(&q)) {
		struct mc_dwconv d = dwconv(&q);

		mc_dwconv_forward_post(&d, n, in[0], node->params[0]->data,
				       node->n_params > 1 ? node->params[1]->data : NULL, 0, post,
				       res, out, run->work);
		return;
	}
	if (batched(&q) && q.g == 1) {
		conv_run(node, run, n, in, conv_out, 0, &epi);
		return;
	}
	conv_run(node, run, n, in, conv_out, 0, NULL);
#pragma omp parallel for schedule(static) if (rows * q.P >= MC_PAR_MIN)
	for (int64_t r = 0; r < rows; r++)
		pe.fn(post, (int)(r % q.O), conv_out + r * q.P, post->add ? res + r * q.P : NULL,
		      out + r * q.P, q.P);
}

/* The per-sample GEMMs: samples in parallel. */
static void conv_forward_gemm(const struct mc_node *node, const struct mc_run *run, int n,
			      const float *const *in, float *out)
{
	const float *w = node->params[0]->data;
	const float *b = node->n_params > 1 ? node->params[1]->data : NULL;
	float *wt = run->work, *slots;
	struct mc_conv_geo q;
	size_t slot, xs, ys;
	int nt;

	if (n < 1)
		return;
	conv_geo(node, &q);
	slots = wt + (size_t)q.O * q.Kg;
	slot = conv_slot_floats(&q);
	xs = (size_t)q.C * q.H * q.W;
	ys = (size_t)q.O * q.P;
	/* Both GEMM operands read along rows (no transposing packs): W^T per group. */
	for (int g = 0; g < q.g; g++)
		mc_transpose(q.Og, q.Kg, w + (size_t)g * q.Og * q.Kg, wt + (size_t)g * q.Og * q.Kg);
	nt = conv_threads(&q, n, n);
	if (nt <= 1) {
		/* one sample at a time, each GEMM split over the threads */
		for (int s = 0; s < n; s++)
			conv_fwd_sample(&q, wt, b, in[0] + s * xs, slots, out + s * ys);
		return;
	}
#pragma omp parallel num_threads(nt)
	{
		float *col = slots + (size_t)omp_get_thread_num() * slot;

#pragma omp for schedule(static)
		for (int s = 0; s < n; s++)
			conv_fwd_sample(&q, wt, b, in[0] + s * xs, col, out + s * ys);
	}
}

/*
 * One group of samples: its dW^T and db partial sums (sample by sample, in
 * order), and each sample's input gradient.
 */
static void conv_bwd_group(const struct mc_conv_geo *q, const float *w, int s0, int m,
			   const float *x, const float *dout, float *dx, int want_w, int want_b,
			   float *slot, float *part)
{
	size_t ckk = (size_t)q->C * q->k * q->k, xs = (size_t)q->C * q->H * q->W;
	size_t ys = (size_t)q->O * q->P;
	float *ct = slot, *dt = ct + ckk * q->P, *dcol = dt + (size_t)q->O * q->P;
	float *pw = part, *pb = part + (size_t)q->O * q->Kg;

	for (int i = 0; i < m; i++) {
		const float *dy = dout + (s0 + i) * ys;

		if (want_w || want_b)
			mc_transpose(q->O, (int)q->P, dy, dt);
		/* db: over the group's positions in order, all channels side by side */
		if (want_b)
			for (int64_t p = 0; p < q->P; p++) {
				const float *r = dt + p * q->O;

				if (i == 0 && p == 0)
					memcpy(pb, r, (size_t)q->O * sizeof(float));
				else
					add_to(pb, r, q->O);
			}
		if (want_w) {
			im2col_t(q, x + (s0 + i) * xs, 0.0f, ct);
			for (int g = 0; g < q->g; g++)
				mc_sgemm(1, 0, q->Kg, q->Og, (int)q->P, 1.0f, ct + (size_t)g * q->Kg,
					 (int)ckk, dt + (size_t)g * q->Og, q->O, i ? 1.0f : 0.0f,
					 pw + (size_t)g * q->Kg * q->Og, q->Og);
		}
		if (dx) {
			for (int g = 0; g < q->g; g++)
				mc_sgemm(1, 0, q->Kg, (int)q->P, q->Og, 1.0f,
					 w + (size_t)g * q->Og * q->Kg, q->Kg,
					 dy + (size_t)g * q->Og * q->P, (int)q->P, 0.0f,
					 dcol + (size_t)g * q->Kg * q->P, (int)q->P);
			mc_conv_col2im(q, dcol, dx + (s0 + i) * xs);
		}
	}
}

/*
 * The batched kernels' backward: dW and db per group (kernels/conv.h), and
 * for stride 1 dX as the convolution of dout with the flipped weights.
 */
static void conv_backward_batched(const struct mc_node *node, const struct mc_run *run, int n,
				  const float *const *in, const float *dout, float *const *din,
				  float *const *grads)
{
	const float *w = node->params[0]->data;
	struct mc_conv_geo q;
	float *wf, *work;
	size_t wfs;

	conv_geo(node, &q);
	for (int g = 0; grads && (grads[0] || grads[1]) && g < q.g; g++) {
		struct mc_convf f = convf(&q);

		mc_convf_dw(&f, n, in[0] + (size_t)g * q.Cg * q.H * q.W,
			    dout + (size_t)g * q.Og * q.P,
			    grads[0] ? grads[0] + (size_t)g * q.Og * q.Kg : NULL,
			    grads[1] ? grads[1] + (size_t)g * q.Og : NULL, run->work);
	}
	if (!din[0] || q.s != 1)
		return;
	wfs = ((size_t)q.Og * q.Kg * sizeof(float) + 63) & ~(size_t)63;
	wf = run->work;
	work = (float *)((char *)run->work + wfs);
	for (int g = 0; g < q.g; g++) {
		struct mc_convf t = convf_t(&q);
		const float *wg = w + (size_t)g * q.Og * q.Kg;
		const int k = q.k, kk = k * k;

		/* W'[c][o][ki][kj] = W[o][c][k-1-ki][k-1-kj] */
		for (int c = 0; c < q.Cg; c++)
			for (int o = 0; o < q.Og; o++)
				for (int t2 = 0; t2 < kk; t2++)
					wf[((size_t)c * q.Og + o) * kk + t2] =
					    wg[((size_t)o * q.Cg + c) * kk + (kk - 1 - t2)];
		mc_convf_forward(&t, n, dout + (size_t)g * q.Og * q.P, wf, NULL, 0,
				 din[0] + (size_t)g * q.Cg * q.H * q.W, work, NULL);
	}
}

int mc_conv2d_dw_fuses_pool(const struct mc_node *node)
{
	struct mc_conv_geo q;

	if (node->op != &mc_op_conv2d)
		return 0;
	conv_geo(node, &q);
	return q.g == 1 && batched(&q) && !depthwise(&q);
}

/* Where mc_convf_dw_src finds the conv's dy: the pool's backward of y and dpool. */
struct dy_pool {
	const struct mc_node *pool;
	const float *y, *dpool;
	int64_t ys, ps, P, PP; /* floats a sample, a plane: of y and of dpool */
};

static void dy_from_pool(void *ctx, int s, int o0, int m, float *dst)
{
	const struct dy_pool *d = ctx;

	mc_maxpool2_backward_relu_planes(d->pool, m, d->y + s * d->ys + o0 * d->P,
					 d->dpool + s * d->ps + o0 * d->PP, dst);
}

void mc_conv2d_backward_relu_pool(const struct mc_node *node, const struct mc_node *pool,
				  const struct mc_run *run, int n, const float *x, const float *y,
				  const float *dpool, float *const *grads)
{
	struct mc_conv_geo q;
	struct mc_convf f;
	struct dy_pool d;
	struct mc_convf_dysrc src = {dy_from_pool, &d};

	if (n < 1 || !grads || (!grads[0] && !grads[1]))
		return;
	conv_geo(node, &q);
	f = convf(&q);
	d = (struct dy_pool){
	    pool, y, dpool, (int64_t)q.O * q.P, pool->out_numel, q.P, pool->out_numel / q.O};
	mc_convf_dw_src(&f, n, x, &src, grads[0], grads[1], run->work);
}

/*
 * dW += dout col^T, db += sums of dout, din = col2im(W^T dout): groups of
 * samples in parallel, then the groups' partial sums added in order.
 */
static void conv_backward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, const float *out, const float *dout,
			  float *const *din, float *const *grads)
{
	const float *w = node->params[0]->data;
	int want_w = grads && grads[0], want_b = grads && grads[1], ng, nt;
	float *slots, *parts;
	size_t slot, psz;
	struct mc_conv_geo q;

	if (n < 1 || (!want_w && !want_b && !din[0]))
		return;
	conv_geo(node, &q);
	if (depthwise(&q)) {
		struct mc_dwconv d = dwconv(&q);

		mc_dwconv_backward(&d, n, in[0], w, dout, din[0], want_w ? grads[0] : NULL,
				   want_b ? grads[1] : NULL, run->work);
		return;
	}
	if (batched(&q)) {
		conv_backward_batched(node, run, n, in, dout, din, grads);
		if (q.s == 1 || !din[0])
			return;
		/* a strided dX: the per-sample GEMMs below, without dW */
		want_w = want_b = 0;
	}
	slot = conv_slot_floats(&q);
	slots = (float *)run->work + (size_t)q.O * q.Kg;
	parts = slots + (size_t)conv_slots(n) * slot;
	psz = (size_t)q.O * q.Kg + (size_t)q.O;
	ng = conv_groups(n);
	nt = conv_threads(&q, n, ng);
	if (nt <= 1) {
		for (int t = 0; t < ng; t++) {
			int s0 = t * CONV_GROUP, m = n - s0 < CONV_GROUP ? n - s0 : CONV_GROUP;

			conv_bwd_group(&q, w, s0, m, in[0], dout, din[0], want_w, want_b, slots,
				       parts + t * psz);
		}
	} else {
#pragma omp parallel num_threads(nt)
		{
			float *mine = slots + (size_t)omp_get_thread_num() * slot;

#pragma omp for schedule(static)
			for (int t = 0; t < ng; t++) {
				int s0 = t * CONV_GROUP, m = n - s0 < CONV_GROUP ? n - s0 : CONV_GROUP;

				conv_bwd_group(&q, w, s0, m, in[0], dout, din[0], want_w, want_b,
					       mine, parts + t * psz);
			}
		}
	}
	if (want_b)
		for (int o = 0; o < q.O; o++) {
			float acc = parts[(size_t)q.O * q.Kg + o];

			for (int t = 1; t < ng; t++)
				acc += parts[t * psz + (size_t)q.O * q.Kg + o];
			grads[1][o] += acc;
		}
	if (!want_w)
		return;
	/* dW[g*Og + o][kk] += the groups' dW^T_g[kk][o] in order */
#pragma omp parallel for schedule(static) if ((size_t)ng * q.O * q.Kg >= MC_PAR_MIN)
	for (int o = 0; o < q.O; o++) {
		int g = o / q.Og, ol = o % q.Og;
		const float *p0 = parts + (size_t)g * q.Kg * q.Og + ol;
		float *dw = grads[0] + (size_t)o * q.Kg;

		for (int kk = 0; kk < q.Kg; kk++) {
			float acc = p0[(size_t)kk * q.Og];

			for (int t = 1; t < ng; t++)
				acc += p0[t * psz + (size_t)kk * q.Og];
			dw[kk] += acc;
		}
	}
}

static int64_t conv_flops(const struct mc_node *node)
{
	return 2 * node->params[0]->numel * node->out_shape[1] * node->out_shape[2];
}

const struct mc_op mc_op_conv2d = {
    .name = "conv2d",
    .help = "2-D convolution over [C, H, W]: out, kernel, stride, padding, groups",
    .attr_size = sizeof(struct conv_attrs),
    .attrs = conv_attrs,
    .n_inputs = 1,
    .setup = conv_setup,
    .init = mc_fan_in_init,
    .forward = conv_forward,
    .backward = conv_backward,
    .flops = conv_flops,
    .workspace = conv_workspace,
};
