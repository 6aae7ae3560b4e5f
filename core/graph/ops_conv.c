/* SPDX-License-Identifier: MIT */
/*
 * ops_conv.c - convolution and pooling over per-sample [C, H, W] images:
 * conv2d, maxpool2d, avgpool2d, global_avgpool.
 *
 * conv2d goes through the GEMM. im2col lays a chunk of m samples out as
 * one matrix col[C*kh*kw, m*P] (P = output positions per sample, sample s
 * in columns s*P ..), so each group is one GEMM: out^T[O, m*P] = W[O, K]
 * col[K, m*P]. Chunks hold about 1 MiB of col and out^T, so both stay in
 * cache (conv_chunk). The backward pass recomputes col (the workspace is
 * shared by all nodes), adds dW from one GEMM per chunk in chunk order,
 * gets dcol = W^T dout^T from another, and folds dcol back into the image
 * (col2im) with each thread owning whole (sample, channel) planes: no
 * atomics, and the same bits for any thread count.
 *
 * Pooling splits over (sample, channel) planes the same way.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <omp.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "graph/ops_int.h"

/* Output size of a window sliding over n with padding p and stride s. */
static int64_t slide(int64_t n, int k, int s, int p)
{
	return (n + 2 * (int64_t)p - k) / s + 1;
}

static const char *shape_text(int ndim, const int64_t *shape, char *buf, size_t n)
{
	return mc_shape_text(ndim, shape, buf, n);
}

/* ---------------------------------------------------------------- conv2d */

struct conv_attrs {
	int out, kernel, stride, padding, groups;
	int in_h, in_w; /* set by setup from the input shape; not attributes */
};

static const struct mc_param_def conv_attrs[] = {
    MC_PARAM_INT(struct conv_attrs, out, NULL, 1, 1 << 20, "output channels"),
    MC_PARAM_INT(struct conv_attrs, kernel, "3", 1, 1024, "kernel height and width"),
    MC_PARAM_INT(struct conv_attrs, stride, "1", 1, 1024, "step between windows"),
    MC_PARAM_INT(struct conv_attrs, padding, "0", 0, 1024, "zeros added on each side"),
    MC_PARAM_INT(struct conv_attrs, groups, "1", 1, 1 << 20,
		 "channel groups (in channels for depthwise)"),
    MC_PARAM_END,
};

/* The geometry of a conv2d node, from its weight and shapes. */
struct conv_geo {
	int C, H, W, O, OH, OW, k, s, p, g;
	int Cg, Og, Kg; /* per group: in channels, out channels, C/g*k*k */
	int64_t P;	/* OH * OW */
};

static void conv_geo(const struct mc_node *node, struct conv_geo *q)
{
	const struct conv_attrs *a = node->attrs;
	const struct mc_tensor *w = node->params[0];

	q->O = (int)w->shape[0];
	q->Cg = (int)w->shape[1];
	q->k = a->kernel;
	q->s = a->stride;
	q->p = a->padding;
	q->g = a->groups;
	q->C = q->Cg * q->g;
	q->Og = q->O / q->g;
	q->Kg = q->Cg * q->k * q->k;
	q->OH = (int)node->out_shape[1];
	q->OW = (int)node->out_shape[2];
	q->P = (int64_t)q->OH * q->OW;
	q->H = a->in_h;
	q->W = a->in_w;
}

static int conv_setup(struct mc_node *node, const int *in_ndim,
		      const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct conv_attrs *a = node->attrs;
	int64_t C, H, W, OH, OW, wshape[4], bshape[1];
	size_t wn, cols;
	char buf[256];
	int r;

	if (in_ndim[0] != 3)
		return mc_err_set(err, MC_EINVAL,
				  "conv2d needs per-sample [channels, height, width], got %s; "
				  "give the model input such a shape (e.g. [1, 28, 28])",
				  shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	C = in_shape[0][0];
	H = in_shape[0][1];
	W = in_shape[0][2];
	if (C % a->groups || a->out % a->groups)
		return mc_err_set(err, MC_EINVAL,
				  "groups %d must divide the %lld input and %d output channels; "
				  "use a divisor of both",
				  a->groups, (long long)C, a->out);
	if (H + 2 * (int64_t)a->padding < a->kernel || W + 2 * (int64_t)a->padding < a->kernel)
		return mc_err_set(err, MC_EINVAL,
				  "kernel %d is larger than the padded input %lldx%lld; use a "
				  "smaller kernel or more padding",
				  a->kernel, (long long)(H + 2 * a->padding),
				  (long long)(W + 2 * a->padding));
	if (a->padding >= a->kernel)
		return mc_err_set(err, MC_EINVAL,
				  "padding %d leaves windows of zeros only; use padding below "
				  "the kernel %d",
				  a->padding, a->kernel);
	OH = slide(H, a->kernel, a->stride, a->padding);
	OW = slide(W, a->kernel, a->stride, a->padding);
	/* weight [out, C/g, k, k]; one column of im2col per output position */
	if (mc_mul_overflow((size_t)(C / a->groups), (size_t)a->kernel * a->kernel, &wn) ||
	    wn > INT_MAX / 64 || mc_mul_overflow(wn, (size_t)a->out, &wn) || wn > INT_MAX ||
	    mc_mul_overflow((size_t)OH, (size_t)OW, &cols) || cols > INT_MAX / 4096)
		return mc_err_set(err, MC_EINVAL,
				  "conv2d of %lld channels to %d with kernel %d is too large; use "
				  "fewer channels or a smaller kernel",
				  (long long)C, a->out, a->kernel);
	wshape[0] = a->out;
	wshape[1] = C / a->groups;
	wshape[2] = a->kernel;
	wshape[3] = a->kernel;
	bshape[0] = a->out;
	r = mc_node_new_param(node, 0, "weight", 4, wshape, err);
	if (!r)
		r = mc_node_new_param(node, 1, "bias", 1, bshape, err);
	if (r)
		return r;
	a->in_h = (int)H; /* the model input's dimensions are at most INT_MAX */
	a->in_w = (int)W;
	node->out_ndim = 3;
	node->out_shape[0] = a->out;
	node->out_shape[1] = OH;
	node->out_shape[2] = OW;
	return 0;
}

/* Like PyTorch's nn.Conv2d: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = C/g*k*k. */
static void conv_init(struct mc_node *node, uint64_t seed, uint64_t stream)
{
	const struct mc_tensor *w = node->params[0];
	float bound = (float)(1.0 / sqrt((double)(w->shape[1] * w->shape[2] * w->shape[3])));

	mc_fill_uniform(node->params[0], seed, stream + 0, -bound, bound);
	mc_fill_uniform(node->params[1], seed, stream + 1, -bound, bound);
}

/* The outputs ow in [*lo, *hi) whose window column ow * s - p + kj lies inside [0, W). */
static void valid_cols(const struct conv_geo *q, int kj, int *lo, int *hi)
{
	int first = q->p - kj > 0 ? (q->p - kj + q->s - 1) / q->s : 0;
	int last = (q->W - 1 + q->p - kj) >= 0 ? (q->W - 1 + q->p - kj) / q->s + 1 : 0;

	*lo = first < q->OW ? first : q->OW;
	*hi = last < q->OW ? last : q->OW;
	if (*hi < *lo)
		*hi = *lo;
}

/* col[C*k*k, P] from one sample x[C, H, W]: row (c, ki, kj) holds what that tap sees. */
static void im2col(const struct conv_geo *q, const float *x, float *col)
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
MC_DEFINE_IM2COL_T(im2col_t_f32, float)

static void im2col_t(const struct conv_geo *q, const float *x, float *ct)
{
	im2col_t_f32(q->C, q->H, q->W, q->OH, q->OW, q->k, q->s, q->p, x, 0.0f, ct);
}

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

/* dx[C, H, W] of one sample = the sum of dcol[C*k*k, P] over the windows reading each pixel. */
static void col2im(const struct conv_geo *q, const float *dcol, float *dx)
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

/* t[cols, rows] = a[rows, cols]^T */
static void transpose(int rows, int cols, const float *a, float *t)
{
	for (int i0 = 0; i0 < rows; i0 += 16)
		for (int j0 = 0; j0 < cols; j0 += 16) {
			int i1 = i0 + 16 < rows ? i0 + 16 : rows, j1 = j0 + 16 < cols ? j0 + 16 : cols;

#ifdef __SSE2__
			/* A whole 16 x 16 block as sixteen 4 x 4 register transposes. */
			if (i1 - i0 == 16 && j1 - j0 == 16) {
				for (int i = i0; i < i1; i += 4)
					for (int j = j0; j < j1; j += 4) {
						const float *s = a + (size_t)i * cols + j;
						float *d = t + (size_t)j * rows + i;
						__m128 r0 = _mm_loadu_ps(s), r1 = _mm_loadu_ps(s + cols);
						__m128 r2 = _mm_loadu_ps(s + 2 * (size_t)cols);
						__m128 r3 = _mm_loadu_ps(s + 3 * (size_t)cols);

						_MM_TRANSPOSE4_PS(r0, r1, r2, r3);
						_mm_storeu_ps(d, r0);
						_mm_storeu_ps(d + rows, r1);
						_mm_storeu_ps(d + 2 * (size_t)rows, r2);
						_mm_storeu_ps(d + 3 * (size_t)rows, r3);
					}
				continue;
			}
#endif
			for (int j = j0; j < j1; j++)
				for (int i = i0; i < i1; i++)
					t[(size_t)j * rows + i] = a[(size_t)i * cols + j];
		}
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

static int conv_slots(int n)
{
	return n < CONV_SLOTS ? n : CONV_SLOTS;
}

static int conv_groups(int n)
{
	return (n + CONV_GROUP - 1) / CONV_GROUP;
}

/* Floats of one slot: col (forward), or colT, dY^T and dcol (backward). */
static size_t conv_slot_floats(const struct conv_geo *q)
{
	size_t ckk = (size_t)q->C * q->k * q->k;

	return (size_t)q->P * (2 * ckk + (size_t)q->O);
}

/* W^T per group, then the slots, then per group of samples dW^T and db partial sums */
static size_t conv_workspace(const struct mc_node *node, int n)
{
	struct conv_geo q;
	size_t wk, slots, parts, total;

	conv_geo(node, &q);
	wk = (size_t)q.O * q.Kg;
	if (n < 1)
		n = 1;
	if (mc_mul_overflow(conv_slot_floats(&q), (size_t)conv_slots(n), &slots) ||
	    mc_mul_overflow(wk + (size_t)q.O, (size_t)conv_groups(n), &parts) ||
	    __builtin_add_overflow(slots, parts, &total) || __builtin_add_overflow(total, wk, &total) ||
	    mc_mul_overflow(total, sizeof(float), &total))
		return SIZE_MAX;
	return total;
}

/*
 * Threads for units of work that each need a slot: 1 means one thread at a
 * time (small products are not worth waking the team for).
 */
static int conv_threads(const struct conv_geo *q, int n, int units)
{
	int nt = omp_in_parallel() ? 1 : omp_get_max_threads();

	if ((double)n * q->O * q->Kg * (double)q->P < 1e6)
		nt = 1;

	if (nt > conv_slots(n))
		nt = conv_slots(n);
	return nt < units ? nt : units;
}

/* y[O, P] = W col + b for one sample; wt holds W^T per group, col the slot. */
static void conv_fwd_sample(const struct conv_geo *q, const float *wt, const float *b,
			    const float *x, float *col, float *y)
{
	int64_t P = q->P; /* in a local: stores to y could alias q, and the loop would reload it */

	im2col(q, x, col);
	for (int o = 0; o < q->O; o++) {
		float *yo = y + o * P;
		int64_t p = 0;

#ifdef __SSE2__
		for (__m128 bo = _mm_set1_ps(b[o]); p + 4 <= P; p += 4)
			_mm_storeu_ps(yo + p, bo);
#endif
		for (; p < P; p++)
			yo[p] = b[o];
	}
	for (int g = 0; g < q->g; g++)
		mc_sgemm(1, 0, q->Og, (int)q->P, q->Kg, 1.0f, wt + (size_t)g * q->Og * q->Kg, q->Og,
			 col + (size_t)g * q->Kg * q->P, (int)q->P, 1.0f, y + (size_t)g * q->Og * q->P,
			 (int)q->P);
}

/* out[n, O, OH, OW] = conv(in[n, C, H, W], W[O, C/g, k, k]) + b[O], samples in parallel */
static void conv_forward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, float *out)
{
	const float *w = node->params[0]->data, *b = node->params[1]->data;
	float *wt = run->work, *slots;
	struct conv_geo q;
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
		transpose(q.Og, q.Kg, w + (size_t)g * q.Og * q.Kg, wt + (size_t)g * q.Og * q.Kg);
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
static void conv_bwd_group(const struct conv_geo *q, const float *w, int s0, int m,
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
			transpose(q->O, (int)q->P, dy, dt);
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
			im2col_t(q, x + (s0 + i) * xs, ct);
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
			col2im(q, dcol, dx + (s0 + i) * xs);
		}
	}
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
	struct conv_geo q;

	if (n < 1 || (!want_w && !want_b && !din[0]))
		return;
	conv_geo(node, &q);
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
    .init = conv_init,
    .forward = conv_forward,
    .backward = conv_backward,
    .flops = conv_flops,
    .workspace = conv_workspace,
};

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
				  node->op->name, shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
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
	node->out_shape[1] = slide(H, a->kernel, s, a->padding);
	node->out_shape[2] = slide(W, a->kernel, s, a->padding);
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

/*
 * The common 2x2, stride 2 case without bounds checks. The same comparisons
 * in the same order as the general loop (first maximum wins), so the same
 * results and the same routing of gradients.
 */
static void maxpool2_forward(const struct pool_geo *q, int n, const float *x0, float *y0)
{
#pragma omp parallel for schedule(static) if ((int64_t)n * q->C * q->H * q->W >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * q->C; pl++) {
		const float *x = x0 + pl * q->H * q->W;
		float *y = y0 + pl * q->OH * q->OW;

		for (int oh = 0; oh < q->OH; oh++) {
			const float *r0 = x + 2 * oh * q->W, *r1 = r0 + q->W;
			int ow = 0;

#ifdef __SSE2__
			/* Four windows at a time, the same comparisons as below as
			 * selects (not max, whose NaN rule differs): the same bits. */
			for (; ow + 4 <= q->OW; ow += 4) {
				__m128 v0, v1, v2, v3, m;

				split4(r0 + 2 * ow, &v0, &v1);
				split4(r1 + 2 * ow, &v2, &v3);
				m = sel4(_mm_cmpgt_ps(v1, v0), v1, v0);
				m = sel4(_mm_cmpgt_ps(v2, m), v2, m);
				_mm_storeu_ps(y + oh * q->OW + ow, sel4(_mm_cmpgt_ps(v3, m), v3, m));
			}
#endif
			for (; ow < q->OW; ow++) {
				float m = r0[2 * ow];

				m = r0[2 * ow + 1] > m ? r0[2 * ow + 1] : m;
				m = r1[2 * ow] > m ? r1[2 * ow] : m;
				y[oh * q->OW + ow] = r1[2 * ow + 1] > m ? r1[2 * ow + 1] : m;
			}
		}
	}
}

static void maxpool2_backward(const struct pool_geo *q, int n, const float *x0, const float *dy0,
			      float *dx0)
{
#pragma omp parallel for schedule(static) if ((int64_t)n * q->C * q->H * q->W >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * q->C; pl++) {
		const float *x = x0 + pl * q->H * q->W, *dy = dy0 + pl * q->OH * q->OW;
		float *dx = dx0 + pl * q->H * q->W;

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
				__m128 b1, b2, b3, any;

				split4(a + 2 * ow, &v0, &v1);
				split4(c + 2 * ow, &v2, &v3);
				b1 = _mm_cmpgt_ps(v1, v0);
				m = sel4(b1, v1, v0);
				b2 = _mm_cmpgt_ps(v2, m);
				m = sel4(b2, v2, m);
				b3 = _mm_cmpgt_ps(v3, m);
				b2 = _mm_andnot_ps(b3, b2);
				b1 = _mm_andnot_ps(_mm_or_ps(b2, b3), b1);
				any = _mm_or_ps(b1, _mm_or_ps(b2, b3));
				v0 = _mm_andnot_ps(any, g);
				v1 = _mm_and_ps(b1, g);
				v2 = _mm_and_ps(b2, g);
				v3 = _mm_and_ps(b3, g);
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
				da[2 * ow] = b1 | b2 | b3 ? 0.0f : g;
				da[2 * ow + 1] = b1 ? g : 0.0f;
				dc[2 * ow] = b2 ? g : 0.0f;
				dc[2 * ow + 1] = b3 ? g : 0.0f;
			}
			if (q->W & 1) {
				da[q->W - 1] = 0.0f;
				dc[q->W - 1] = 0.0f;
			}
		}
		if (q->H & 1)
			memset(dx + (size_t)(q->H - 1) * q->W, 0, (size_t)q->W * sizeof(float));
	}
}

/* out[n, C, OH, OW] = max over each window of in[n, C, H, W] (padding never wins) */
static void maxpool_forward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	struct pool_geo q;

	pool_geo(node, &q);
	if (q.k == 2 && q.s == 2 && q.p == 0) {
		maxpool2_forward(&q, n, in[0], out);
		return;
	}
#pragma omp parallel for schedule(static) if ((int64_t)n * q.C * q.OH * q.OW * q.k * q.k >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * q.C; pl++) {
		const float *x = in[0] + pl * q.H * q.W;
		float *y = out + pl * q.OH * q.OW;

		for (int oh = 0; oh < q.OH; oh++)
			for (int ow = 0; ow < q.OW; ow++) {
				float m = -INFINITY;

				for (int ki = 0; ki < q.k; ki++) {
					int h = oh * q.s - q.p + ki;

					if (h < 0 || h >= q.H)
						continue;
					for (int kj = 0; kj < q.k; kj++) {
						int w = ow * q.s - q.p + kj;

						if (w >= 0 && w < q.W && x[h * q.W + w] > m)
							m = x[h * q.W + w];
					}
				}
				y[oh * q.OW + ow] = m;
			}
	}
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
		maxpool2_backward(&q, n, in[0], dout, din[0]);
		return;
	}
#pragma omp parallel for schedule(static) if ((int64_t)n * q.C * q.OH * q.OW * q.k * q.k >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * q.C; pl++) {
		const float *x = in[0] + pl * q.H * q.W, *dy = dout + pl * q.OH * q.OW;
		float *dx = din[0] + pl * q.H * q.W;

		memset(dx, 0, (size_t)q.H * q.W * sizeof(float));
		for (int oh = 0; oh < q.OH; oh++)
			for (int ow = 0; ow < q.OW; ow++) {
				float m = -INFINITY;
				int at = -1;

				for (int ki = 0; ki < q.k; ki++) {
					int h = oh * q.s - q.p + ki;

					if (h < 0 || h >= q.H)
						continue;
					for (int kj = 0; kj < q.k; kj++) {
						int w = ow * q.s - q.p + kj;

						if (w >= 0 && w < q.W && (at < 0 || x[h * q.W + w] > m)) {
							m = x[h * q.W + w];
							at = h * q.W + w;
						}
					}
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

/* out = mean over each k x k window, padding counted as zeros (PyTorch's default) */
static void avgpool_forward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	struct pool_geo q;
	float inv;

	pool_geo(node, &q);
	inv = 1.0f / (float)(q.k * q.k);
#pragma omp parallel for schedule(static) if ((int64_t)n * q.C * q.OH * q.OW * q.k * q.k >= MC_PAR_MIN)
	for (int64_t pl = 0; pl < (int64_t)n * q.C; pl++) {
		const float *x = in[0] + pl * q.H * q.W;
		float *y = out + pl * q.OH * q.OW;

		for (int oh = 0; oh < q.OH; oh++)
			for (int ow = 0; ow < q.OW; ow++) {
				float sum = 0.0f;

				for (int ki = 0; ki < q.k; ki++) {
					int h = oh * q.s - q.p + ki;

					if (h < 0 || h >= q.H)
						continue;
					for (int kj = 0; kj < q.k; kj++) {
						int w = ow * q.s - q.p + kj;

						if (w >= 0 && w < q.W)
							sum += x[h * q.W + w];
					}
				}
				y[oh * q.OW + ow] = sum * inv;
			}
	}
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
				float g = dy[oh * q.OW + ow] * inv;

				for (int ki = 0; ki < q.k; ki++) {
					int h = oh * q.s - q.p + ki;

					if (h < 0 || h >= q.H)
						continue;
					for (int kj = 0; kj < q.k; kj++) {
						int w = ow * q.s - q.p + kj;

						if (w >= 0 && w < q.W)
							dx[h * q.W + w] += g;
					}
				}
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
				  shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
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
