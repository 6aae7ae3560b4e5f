/* SPDX-License-Identifier: MIT */
/*
 * ops_qconv.c - the qconv2d op: a conv2d whose weight is int8 and whose
 * input is quantized to u8 (dynamic: the batch's range; static: the
 * calibrated one; docs/quantize.md):
 *
 *	param 0  NAME.weight         I8 [out, C / groups, k, k], symmetric
 *	param 1  NAME.weight_scale   F32 [1] per tensor or [out] per channel
 *	param 2  NAME.bias           F32 [out]
 *	param 3  NAME.input_qparams  F32 [2]: input scale, zero point (static only)
 *
 * The input is quantized once, then a chunk of samples is laid out as the u8
 * matrix colT[m*P, C*k*k] (row p: the window of output position p; padding
 * holds the zero point, which stands for 0.0) and multiplied on the int8 GEMM
 * with the packed weights: y[m*P, out], requantized per channel with the
 * bias added, then transposed into [out, OH, OW] per sample (as f32, or as
 * the u8 its reader takes). Every output is one exact s32 sum: the same for
 * any thread count. That route serves a fused pool, and dense layers where
 * the int8 GEMM is not AVX-512 VNNI (qconv_on_gemm); the others run the int8
 * kernels of core/kernels/s8_ops.h: a depthwise kernel vectorized across
 * each channel's positions, a pointwise one across positions (dense layers:
 * on their windows' taps as channels), a direct loop for other groups; the
 * same requantization, bit for bit. Both take a u8 input and give a u8
 * output where the executor chains them (mc_qconv2d_forward_u8).
 *
 * The packed weights, the input's quantization and the parameters are
 * qlinear's (ops_qlinear.c); the window geometry, the checks of setup, im2col,
 * col2im and the transpose are conv2d's (conv_geo.h).
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "graph/conv_geo.h"
#include "graph/ops_quant_int.h"
#include "kernels/s8_ops.h"

struct qconv_attrs {
	int out, kernel, stride, padding;
	int mode;
	int granularity;
	int relu;
	int groups;
	int relu6;
	int in_h, in_w; /* set by setup from the input shape; not attributes */
};

static const struct mc_param_def qconv_attrs[] = {
    MC_PARAM_INT(struct qconv_attrs, out, NULL, 1, 1 << 20, "output channels"),
    MC_PARAM_INT(struct qconv_attrs, kernel, "3", 1, 1024, "kernel height and width"),
    MC_PARAM_INT(struct qconv_attrs, stride, "1", 1, 1024, "step between windows"),
    MC_PARAM_INT(struct qconv_attrs, padding, "0", 0, 1024, "zeros added on each side"),
    MC_PARAM_ENUM(struct qconv_attrs, mode, "dynamic", mc_qmodes,
		  "activations: u8 from each batch's range (dynamic) or calibrated (static)"),
    MC_PARAM_ENUM(struct qconv_attrs, granularity, "per-channel", mc_qgrans,
		  "what one weight scale covers: per-tensor or per-channel"),
    MC_PARAM_BOOL(struct qconv_attrs, relu, "false",
		  "max(y, 0) applied in the requantization: a fused conv2d + relu"),
    MC_PARAM_INT(struct qconv_attrs, groups, "1", 1, 1 << 20,
		 "channel groups (in channels for depthwise), as conv2d's",
		 .flags = MC_PARAM_FOMIT),
    MC_PARAM_BOOL(struct qconv_attrs, relu6, "false",
		  "min(max(y, 0), 6) applied in the requantization: a fused conv2d + relu6",
		  .flags = MC_PARAM_FOMIT),
    MC_PARAM_END,
};

/* The geometry of a qconv2d node: Kg = C / groups * k * k. */
static void qconv_geo(const struct mc_node *node, struct mc_conv_geo *q)
{
	const struct qconv_attrs *a = node->attrs;

	mc_conv_geo_init(q, node->params[QP_WEIGHT], node->out_shape, a->kernel, a->stride,
			 a->padding, a->groups, a->in_h, a->in_w);
}

/* The same for the grouped kernels (s8_ops.h). */
static struct mc_qconv qconv_kgeo(const struct mc_node *node)
{
	struct mc_conv_geo q;

	qconv_geo(node, &q);
	return (struct mc_qconv){.C = q.C,
				 .H = q.H,
				 .W = q.W,
				 .O = q.O,
				 .OH = q.OH,
				 .OW = q.OW,
				 .k = q.k,
				 .s = q.s,
				 .p = q.p,
				 .g = q.g};
}

/* The requantization flags of the node's attributes. */
static unsigned qconv_flags(const struct qconv_attrs *a)
{
	return (a->relu ? MC_S8_RELU : 0) | (a->relu6 ? MC_S8_RELU6 : 0);
}

static int qconv_setup(struct mc_node *node, const int *in_ndim,
		       const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct qconv_attrs *a = node->attrs;
	int64_t ws[4] = {a->out, in_shape[0][0] / a->groups, a->kernel, a->kernel};
	int64_t ss[1] = {a->granularity == QGRAN_TENSOR ? 1 : a->out};
	char buf[256];
	int r;

	if (in_ndim[0] != 3)
		return mc_err_set(err, MC_EINVAL,
				  "qconv2d needs per-sample [channels, height, width], got %s; "
				  "give the model input such a shape (e.g. [1, 28, 28])",
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	if (a->mode == QMODE_WEIGHT_ONLY || a->granularity == QGRAN_GROUP)
		return mc_err_set(err, MC_EINVAL,
				  "qconv2d runs on the int8 GEMM, which takes u8 inputs and "
				  "weights scaled per tensor or per channel; use mode dynamic or "
				  "static and granularity per-tensor or per-channel");
	if (in_shape[0][0] % a->groups || a->out % a->groups)
		return mc_err_set(err, MC_EINVAL,
				  "qconv2d: groups %d must divide the %lld input and %d output "
				  "channels; use a divisor of both",
				  a->groups, (long long)in_shape[0][0], a->out);
	r = mc_conv_setup(node, "qconv2d: ", in_shape[0], a->out, a->kernel, a->stride, a->padding,
			  a->groups, 65536,
			  "the int8 kernels take at most 65536 inputs a window and 2^31 weights",
			  &a->in_h, &a->in_w, err);
	return r ? r : mc_qop_new_params(node, MC_S8, 4, ws, 1, ss, 0, a->mode, err);
}

/* colT[P, K] from one u8 sample x[C, H, W]; taps outside the image hold pad. */
MC_DEFINE_IM2COL_T(im2col_u8, uint8_t)

#define QCONV_CHUNK_BYTES (1 << 20) /* u8 input, colT and y of one chunk of samples */
#define QCONV_SLOTS	  16	    /* at most this many threads, each with a slot */

/* Samples per chunk: a function of the geometry and n alone. */
static int qconv_chunk(const struct mc_conv_geo *q, int n)
{
	size_t per = (size_t)q->C * q->H * q->W +
		     (size_t)q->P * ((size_t)q->Kg + (size_t)q->O * sizeof(float));
	size_t m = QCONV_CHUNK_BYTES / (per ? per : 1);

	if (m < 1)
		m = 1;
	return m < (size_t)n ? (int)m : n;
}

static size_t align64(size_t v)
{
	return (v + 63) & ~(size_t)63;
}

/* Bytes of one slot: the u8 input, colT and y of a chunk of m samples; SIZE_MAX on overflow. */
static size_t qconv_slot_bytes(const struct mc_conv_geo *q, int m)
{
	size_t xq, ct, y, total;

	if (mc_mul_overflow((size_t)m, (size_t)q->C * q->H * q->W, &xq) ||
	    mc_mul_overflow((size_t)m * (size_t)q->P, (size_t)q->Kg, &ct) ||
	    mc_mul_overflow((size_t)m * (size_t)q->P, (size_t)q->O * sizeof(float), &y) ||
	    __builtin_add_overflow(align64(xq), align64(ct), &total) ||
	    __builtin_add_overflow(total, align64(y), &total) ||
	    /* one sample's [O, P] for a pool that follows (mc_qconv2d_forward_pool) */
	    __builtin_add_overflow(total, align64((size_t)q->P * (size_t)q->O * sizeof(float)),
				   &total))
		return SIZE_MAX;
	return total;
}

static int qconv_slots(const struct mc_conv_geo *q, int n)
{
	int chunks = (n + qconv_chunk(q, n) - 1) / qconv_chunk(q, n);

	return chunks < QCONV_SLOTS ? chunks : QCONV_SLOTS;
}

static size_t qconv_workspace(const struct mc_node *node, int n)
{
	struct mc_conv_geo q;
	struct mc_qconv cv;
	size_t slot, total;

	qconv_geo(node, &q);
	if (n < 1)
		n = 1;
	cv = qconv_kgeo(node);
	if (q.g != 1)
		return mc_qconv_work(&cv, n);
	slot = qconv_slot_bytes(&q, qconv_chunk(&q, n));
	if (slot == SIZE_MAX || mc_mul_overflow(slot, (size_t)qconv_slots(&q, n), &total))
		return SIZE_MAX;
	/* the kernels of s8_ops.h, or the GEMM when a pool is fused */
	if (mc_qconv_work(&cv, n) > total)
		total = mc_qconv_work(&cv, n);
	return total;
}

/*
 * Samples s0 .. s0 + mm - 1 through one slot: quantize (unless the input is
 * u8 already: xq), im2col, the int8 GEMM, and the transpose into [O, P] per
 * sample, written as f32 (out) or quantized to u8 at (so, zo) (out8: the
 * bytes mc_quantize_u8 gives of out).
 */
static void qconv_chunk_run(const struct mc_conv_geo *q, const struct mc_s8_weights *pk,
			    unsigned flags, float sa, int za, const float *x, const uint8_t *x8,
			    int mm, uint8_t *slot, int m, float *out, uint8_t *out8, float so,
			    int zo, const struct mc_node *pool, float *pout)
{
	size_t xs = (size_t)q->C * q->H * q->W;
	uint8_t *xq = slot, *ct = xq + align64((size_t)m * xs);
	float *y = (float *)(ct + align64((size_t)m * (size_t)q->P * q->Kg));
	float *one =
	    (float *)((uint8_t *)y + align64((size_t)m * (size_t)q->P * q->O * sizeof(float)));
	int64_t rows = (int64_t)mm * q->P;

	if (!x8) {
		mc_quantize_u8(x, (size_t)mm * xs, sa, za, xq);
		x8 = xq;
	}
	for (int i = 0; i < mm; i++)
		im2col_u8(q, x8 + (size_t)i * xs, (uint8_t)za, ct + (size_t)i * q->P * q->Kg);
	mc_gemm_u8s8((int)rows, ct, q->Kg, sa, za, pk, flags, y, q->O);
	for (int i = 0; i < mm; i++) {
		/* with a pool or a u8 output: each sample through a scratch in cache */
		float *dst = pool || out8 ? one : out + (size_t)i * q->O * q->P;

		mc_transpose(q->P, q->O, y + (size_t)i * q->P * q->O, dst);
		if (pool)
			mc_maxpool2_sample(pool, dst, pout + (size_t)i * pool->out_numel);
		if (out8)
			mc_quantize_u8(dst, (size_t)q->O * q->P, so, zo,
				       out8 + (size_t)i * q->O * q->P);
	}
}

/*
 * A grouped, depthwise, pointwise or stem qconv2d: the input's quantization and the
 * per-channel scales handed to the int8 kernels of s8_ops.h, which quantize
 * each sample and split samples over threads. With io's xq the input is u8
 * already (static mode), with its yq the output goes as u8 to its reader.
 */
static void qconv_grouped(const struct mc_node *node, const struct mc_run *run, int n,
			  struct mc_qconv_io *io)
{
	const struct qconv_attrs *a = node->attrs;
	const struct mc_tensor *st = node->params[QP_SCALE];
	struct mc_qconv cv = qconv_kgeo(node);
	size_t xs = (size_t)cv.C * cv.H * cv.W, ys = (size_t)cv.O * cv.OH * cv.OW;
	float *sw = malloc((size_t)cv.O * sizeof(float)), sa;
	int za = mc_qop_input_qparams(node, io->xq ? QMODE_STATIC : a->mode, io->x,
				      (int64_t)n * (int64_t)xs, &sa),
	    ok = 1;

	for (int o = 0; sw && o < cv.O; o++) {
		sw[o] = ((const float *)st->data)[st->numel == 1 ? 0 : o];
		ok &= sw[o] > 0.0f && isfinite(sw[o]);
	}
	if (ok && sw && za >= 0 && run->work) {
		struct mc_qconv_q q = {.sa = sa,
				       .za = za,
				       .sw = sw,
				       .bias = node->params[QP_BIAS]->data,
				       .flags = qconv_flags(a)};

		ok = !mc_qconv_forward_io(&cv, &q, n, io, node->params[QP_WEIGHT]->data, run->work);
	} else {
		ok = 0;
	}
	if (!ok) {
		/* A file with scales the kernels refuse: say so in the outputs (NaN, as u8: 0). */
		for (size_t i = 0; io->y && i < (size_t)n * ys; i++)
			io->y[i] = NAN;
		if (io->yq)
			memset(io->yq, 0, (size_t)n * ys);
	}
	free(sw);
}

int mc_qconv2d_takes_u8(const struct mc_node *node, float *s, int *z)
{
	const struct qconv_attrs *a = node->attrs;
	struct mc_qconv cv = qconv_kgeo(node);

	if (node->op != &mc_op_qconv2d || a->mode != QMODE_STATIC || !mc_qconv_io_ok(&cv))
		return 0;
	*z = mc_qop_input_qparams(node, QMODE_STATIC, NULL, 0, s);
	return *z >= 0;
}

int mc_qconv2d_gives_u8(const struct mc_node *node)
{
	struct mc_qconv cv;

	if (node->op != &mc_op_qconv2d)
		return 0;
	cv = qconv_kgeo(node);
	return mc_qconv_io_ok(&cv);
}

/* Chunk s0 of m samples (of n) of io through one slot. */
static void qconv_chunk_io(const struct mc_conv_geo *q, const struct mc_s8_weights *pk,
			   unsigned flags, float sa, int za, const struct mc_qconv_io *io, int s0,
			   int n, uint8_t *slot, int m, const struct mc_node *pool, float *pout)
{
	size_t xs = (size_t)q->C * q->H * q->W, ys = (size_t)q->O * q->P;
	int mm = n - s0 < m ? n - s0 : m;

	qconv_chunk_run(q, pk, flags, sa, za, io->x ? io->x + (size_t)s0 * xs : NULL,
			io->xq ? io->xq + (size_t)s0 * xs : NULL, mm, slot, m,
			io->y ? io->y + (size_t)s0 * ys : NULL,
			io->yq ? io->yq + (size_t)s0 * ys : NULL, io->so, io->zo, pool,
			pool ? pout + (size_t)s0 * pool->out_numel : NULL);
}

/*
 * Whether a dense layer (one group, not pointwise, not a stem) runs on the
 * int8 GEMM rather than s8_ops.h's kernel of taps (the same bits either
 * way): the kernel of taps is the faster with AVX-512 VNNI (ResNet-14's 3x3
 * layers at batch 256, 2 threads: 4.5 ms against 10 on 28x28, 4.3 against
 * 6.8 on 14x14, 1x1 stride-2 projections 0.6 against 1.3), but for strided
 * windows onto planes of fewer than 64 outputs (ResNet-14's stage-3 conv1,
 * 3x3 stride 2 to 7x7: 1.7 ms on the GEMM against 3.0), where it gathers
 * short rows tap by tap and fills 64 lanes for 49 positions while the
 * GEMM's rows run across samples; the GEMM also on AVX2 (13 ms against 22
 * on 28x28), whose kernel of taps multiplies 4 channels at a time.
 */
static int qconv_on_gemm(const struct mc_qconv *cv)
{
	if (mc_qconv_is_pw(cv) || mc_qconv_is_plane(cv))
		return 0;
	return mc_s8_simd() != 2 || (cv->s > 1 && cv->k > 1 && cv->OH * cv->OW < 64);
}

/*
 * io->y (or io->yq) [n, O, OH, OW] = requant(u8(in) * W) + b on the int8
 * GEMM. Chunks of samples are spread over threads, each with a slot of the
 * workspace (the GEMM inside runs on that thread); a single chunk runs on
 * the calling thread with the GEMM split over the team. Every output is an
 * exact s32 sum requantized alone: the bits do not depend on the thread
 * count. With a pool, io->y is the conv's output and pout the pool's.
 */
static void qconv_run(const struct mc_node *node, const struct mc_run *run, int n,
		      struct mc_qconv_io *io, const struct mc_node *pool, float *pout)
{
	const struct qconv_attrs *a = node->attrs;
	const struct mc_s8_weights *pk = mc_qop_packed(node);
	const float *x = io->x;
	const uint8_t *x8 = io->xq;
	struct mc_conv_geo q;
	struct mc_qconv cv;
	size_t xs, ys, slot;
	int64_t total;
	float sa;
	int za, m, chunks, nt;
	unsigned flags = qconv_flags(a);

	if (n < 1)
		return;
	qconv_geo(node, &q);
	cv = qconv_kgeo(node);
	/* the kernels of s8_ops.h, unless a pool is fused */
	if (q.g != 1 || (!pool && !qconv_on_gemm(&cv))) {
		qconv_grouped(node, run, n, io);
		return;
	}
	xs = (size_t)q.C * q.H * q.W;
	ys = (size_t)q.O * q.P;
	total = (int64_t)n * (int64_t)xs;
	m = qconv_chunk(&q, n);
	chunks = (n + m - 1) / m;
	slot = qconv_slot_bytes(&q, m);
	za = mc_qop_input_qparams(node, x8 ? QMODE_STATIC : a->mode, x, total, &sa);
	if (!pk || za < 0 || !run->work) {
		/* A file with scales the kernels refuse: say so in the outputs. */
		for (int64_t i = 0; io->y && i < (int64_t)n * (int64_t)ys; i++)
			io->y[i] = NAN;
		if (io->yq)
			memset(io->yq, 0, (size_t)n * ys);
		if (pool) {
			const float *pin[1] = {io->y};

			pool->op->forward(pool, run, n, pin, pout);
		}
		return;
	}
	nt = omp_in_parallel() ? 1 : omp_get_max_threads();
	if (nt > qconv_slots(&q, n))
		nt = qconv_slots(&q, n);
	/* one thread: the calling one, no team around the GEMM's own (a nested team costs) */
	if (nt <= 1) {
		for (int c = 0; c < chunks; c++)
			qconv_chunk_io(&q, pk, flags, sa, za, io, c * m, n, run->work, m, pool,
				       pout);
		return;
	}
#pragma omp parallel num_threads(nt)
	{
		uint8_t *mine = (uint8_t *)run->work + (size_t)omp_get_thread_num() * slot;

#pragma omp for schedule(static)
		for (int c = 0; c < chunks; c++)
			qconv_chunk_io(&q, pk, flags, sa, za, io, c * m, n, mine, m, pool, pout);
	}
}

void mc_qconv2d_forward_u8(const struct mc_node *node, const struct mc_run *run, int n,
			   const float *x, const uint8_t *xq, float *out, uint8_t *out8, float so,
			   int zo)
{
	struct mc_qconv_io io = {
	    .x = xq ? NULL : x, .xq = xq, .y = out8 ? NULL : out, .yq = out8, .so = so, .zo = zo};

	qconv_run(node, run, n, &io, NULL, NULL);
}

static void qconv_forward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, float *out)
{
	struct mc_qconv_io io = {.x = in[0], .y = out};

	qconv_run(node, run, n, &io, NULL, NULL);
}

int mc_qconv2d_fuses_pool(const struct mc_node *node)
{
	const struct qconv_attrs *a = node->attrs;

	return node->op == &mc_op_qconv2d && (a->relu || a->relu6) && a->groups == 1;
}

void mc_qconv2d_forward_pool(const struct mc_node *node, const struct mc_node *pool,
			     const struct mc_run *run, int n, const float *const *in,
			     float *conv_out, float *out)
{
	struct mc_qconv_io io = {.x = in[0], .y = conv_out};

	qconv_run(node, run, n, &io, pool, out);
}

/* dx[C, H, W] of one sample of a grouped layer: each tap adds w * dy, in a fixed order. */
static void grouped_dx(const struct mc_conv_geo *q, const float *wd, const float *dy, float *dx)
{
	memset(dx, 0, (size_t)q->C * q->H * q->W * sizeof(float));
	for (int o = 0; o < q->O; o++) {
		int c0 = o / q->Og * q->Cg;

		for (int oh = 0; oh < q->OH; oh++)
			for (int ow = 0; ow < q->OW; ow++) {
				float g = dy[(size_t)o * q->P + (size_t)oh * q->OW + ow];

				for (int cl = 0; cl < q->Cg; cl++)
					for (int ki = 0; ki < q->k; ki++)
						for (int kj = 0; kj < q->k; kj++) {
							int h = oh * q->s - q->p + ki,
							    x = ow * q->s - q->p + kj;

							if (h < 0 || h >= q->H || x < 0 ||
							    x >= q->W)
								continue;
							dx[((size_t)(c0 + cl) * q->H + h) * q->W +
							   x] +=
							    wd[(size_t)o * q->Kg +
							       ((size_t)cl * q->k + ki) * q->k +
							       kj] *
							    g;
						}
			}
	}
}

/*
 * din = the transposed convolution of dout with deq(W): straight through;
 * nothing learns. With relu (relu6), dout is first zeroed where out <= 0
 * (or >= 6).
 */
static void qconv_backward(const struct mc_node *node, const struct mc_run *run, int n,
			   const float *const *in, const float *out, const float *dout,
			   float *const *din, float *const *grads)
{
	const struct qconv_attrs *a = node->attrs;
	const struct mc_tensor *w = node->params[QP_WEIGHT], *st = node->params[QP_SCALE];
	struct mc_conv_geo q;
	float *wd, *dcol, *dm = NULL;
	size_t xs, ys;

	if (!din[0])
		return;
	qconv_geo(node, &q);
	xs = (size_t)q.C * q.H * q.W;
	ys = (size_t)q.O * (size_t)q.P;
	wd = malloc((size_t)q.O * (size_t)q.Kg * sizeof(float));
	dcol = malloc((size_t)q.Kg * (size_t)q.P * sizeof(float));
	if (a->relu || a->relu6)
		dm = malloc(ys * sizeof(float));
	if (!wd || !dcol || ((a->relu || a->relu6) && !dm)) {
		memset(din[0], 0, (size_t)n * xs * sizeof(float));
		goto out;
	}
	for (int o = 0; o < q.O; o++)
		for (int kk = 0; kk < q.Kg; kk++)
			wd[(size_t)o * q.Kg + kk] =
			    (float)((const int8_t *)w->data)[(size_t)o * q.Kg + kk] *
			    ((const float *)st->data)[st->numel == 1 ? 0 : o];
	for (int s = 0; s < n; s++) {
		const float *d = dout + (size_t)s * ys;

		if (dm) {
			for (size_t i = 0; i < ys; i++) {
				float y = out[(size_t)s * ys + i];

				dm[i] = y > 0.0f && !(a->relu6 && y >= 6.0f) ? d[i] : 0.0f;
			}
			d = dm;
		}
		if (q.g != 1) {
			grouped_dx(&q, wd, d, din[0] + (size_t)s * xs);
			continue;
		}
		mc_sgemm(1, 0, q.Kg, (int)q.P, q.O, 1.0f, wd, q.Kg, d, (int)q.P, 0.0f, dcol,
			 (int)q.P);
		mc_conv_col2im(&q, dcol, din[0] + (size_t)s * xs);
	}
out:
	free(wd);
	free(dcol);
	free(dm);
}

static int64_t qconv_flops(const struct mc_node *node)
{
	return 2 * node->params[QP_WEIGHT]->numel * node->out_shape[1] * node->out_shape[2];
}

const struct mc_op mc_op_qconv2d = {
    .name = "qconv2d",
    .help = "quantized 2-D convolution: int8 weights, u8 inputs, int8 GEMM (docs/quantize.md)",
    .attr_size = sizeof(struct qconv_attrs),
    .attrs = qconv_attrs,
    .n_inputs = 1,
    .setup = qconv_setup,
    .forward = qconv_forward,
    .backward = qconv_backward,
    .flops = qconv_flops,
    .workspace = qconv_workspace,
    .release = mc_qop_release,
};
