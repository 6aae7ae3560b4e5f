/* SPDX-License-Identifier: MIT */
/*
 * s8_ops.h - the int8 kernels beside the GEMM, for a model that runs
 * integer end to end (core/graph/ops_qconv.c, ops_qelem.c): grouped and
 * depthwise convolution of u8 activations with s8 weights, the residual add
 * of two u8 tensors requantized to a third scale, and global average
 * pooling of a u8 tensor. Not installed.
 *
 * Every kernel takes and gives f32 activations: it quantizes its input to
 * u8 at the calibrated scale and zero point (mc_quantize_u8), computes in
 * integers, and writes its requantized result as f32; the _io forms take
 * and give the u8 values instead, the same bytes without the f32 tensor
 * between two integer ops (struct mc_qconv_io). Results are exact
 * integer sums followed by the same float rounding on every path:
 *
 *	conv  acc   = sum over the window's taps inside the image, all input
 *	              channels of the group, of (q(x) - za) * w   (s32, exact)
 *	      y     = (sa * sw[o]) * (float)acc + bias[o], rounded as written
 *	              (no fma), then max(y, 0) with MC_S8_RELU and min(y, 6)
 *	              after it with MC_S8_RELU6 (NaN becomes 0)
 *	add   d     = (q(a) - za) * ma + (q(b) - zb) * mb          (s32, exact)
 *	      q     = clamp(zo + ((d + 2^(S-1)) >> S), 0, 255), >> arithmetic
 *	      y     = so * (float)(q - zo)
 *	gap   acc   = sum over the channel's H*W of (q(x) - zi)    (exact)
 *	      q     = clamp(zo + ((acc * m + 2^(S-1)) >> S), 0, 255) (64-bit)
 *	      y     = so * (float)(q - zo)
 *
 * where ma, mb and m are the ratios sa / so, sb / so and si / (so H W) as
 * fixed-point multipliers of S fraction bits (mc_qmul). The SIMD path is the
 * int8 GEMM's (MCOMP_GEMM_S8, mc_gemm_s8_use): "portable" runs the plain
 * loops, "avx2" and "avx-vnni" the AVX2 kernels, "avx512-vnni" and "amx"
 * the AVX-512 ones; each gives the bits of the _ref functions (the
 * definitions as plain loops, ground truth for tests) for any thread
 * count, threads splitting samples, never a sum.
 */
#ifndef MCOMP_KERNELS_S8_OPS_H
#define MCOMP_KERNELS_S8_OPS_H

#include <stddef.h>
#include <stdint.h>

#include <mcomp/tensor.h>

/* The SIMD level the int8 GEMM's kernel implies: 0 portable, 1 AVX2, 2 AVX-512 (gemm_s8.c). */
int mc_s8_simd(void);

/* A convolution of g groups: C channels of H x W to O of OH x OW, k x k windows, stride s, padding
 * p. */
struct mc_qconv {
	int C, H, W, O, OH, OW, k, s, p, g;
};

/* The input's quantization and the output's requantization of a convolution. */
struct mc_qconv_q {
	float sa;	   /* input scale */
	int za;		   /* input zero point, 0..255 */
	const float *sw;   /* [O] weight scales */
	const float *bias; /* [O], or NULL */
	unsigned flags;	   /* MC_S8_RELU, MC_S8_RELU6 */
};

/* 1 when cv is depthwise (one input and one output channel a group): the fast kernel's case. */
int mc_qconv_is_dw(const struct mc_qconv *cv);
/*
 * 1 when cv runs plane by plane through the flat kernel: depthwise, or of a
 * single input channel (a stem), at stride 1 with an output the input's
 * size (a k x k window of padding (k - 1) / 2, k <= 7).
 */
int mc_qconv_is_plane(const struct mc_qconv *cv);
/* 1 when cv is pointwise (1x1, stride 1, no padding, one group): the kernel of channel pairs. */
int mc_qconv_is_pw(const struct mc_qconv *cv);
/* Bytes of workspace mc_qconv_forward needs for n samples (64-byte aligned); SIZE_MAX on overflow.
 */
size_t mc_qconv_work(const struct mc_qconv *cv, int n);
/*
 * y[n][O][OH][OW] = the requantized convolution of u8(x[n][C][H][W]) with
 * w[O][C/g][k][k] (s8, symmetric). Depthwise layers and stems
 * (mc_qconv_is_plane) run a direct kernel vectorized across each output
 * plane's positions (threads split (sample, output channel) planes), other
 * depthwise layers one vectorized across each row; pointwise ones a kernel vectorized across
 * positions, channel pairs multiplied by vpmaddwd (exact: u8 x s8 products
 * fit s16 inputs); other groups a direct loop.
 */
void mc_qconv_forward(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n, const float *x,
		      const int8_t *w, float *y, void *work);
void mc_qconv_forward_ref(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n,
			  const float *x, const int8_t *w, float *y);

/*
 * Where a kernel's activations come from and go, for a graph that chains
 * u8 tensors between integer ops (core/graph/exec.c): exactly one of x (f32,
 * quantized at the input's scale and zero point) and xq (those u8 values
 * already) is set, and one of y (f32) and yq: u8(y) at (so, zo), the bytes
 * mc_quantize_u8 would give of y, which the reader of y would compute.
 */
struct mc_qconv_io {
	const float *x;
	const uint8_t *xq;
	float *y;
	uint8_t *yq;
	float so; /* yq's scale and zero point */
	int zo;
};

/*
 * Whether the 3x3 depthwise kernels on AVX-512 VNNI (stride 1 from u8 to
 * u8, stride 2) build window rows with vpermb where the CPU has AVX-512 VBMI:
 * on 1 (the default) yes, 0 no, -1 leaves it; returns whether it did
 * before the call, on this CPU. The bytes are the same either way; tests
 * run both.
 */
int mc_s8_dw_vbmi(int on);

/*
 * 1 when mc_qconv_forward_io takes xq and yq for cv: depthwise layers and
 * those of one group (pointwise, stems, and dense ones: the window's taps
 * laid out as the channels of a pointwise layer, k k C of them).
 */
int mc_qconv_io_ok(const struct mc_qconv *cv);
/* mc_qconv_forward through io. -1 (nothing written) for an io cv cannot take, or a bad (so, zo). */
int mc_qconv_forward_io(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n,
			const struct mc_qconv_io *io, const int8_t *w, void *work);

/*
 * A positive ratio r as *mul / 2^*shift, *mul < 2^bits, with the most
 * fraction bits (at most 30) that keep it so. -1 when r is not finite and
 * positive or too large for bits.
 */
int mc_qmul(double r, int bits, int32_t *mul, int *shift);

/* The quantization of a requantizing add: inputs a and b, output o. */
struct mc_qadd_q {
	float sa, sb, so;
	int za, zb, zo;
};

/* Bytes of workspace mc_qadd needs for n values. */
size_t mc_qadd_work(int64_t n);
/* y[n] = the requantized sum of u8(a) and u8(b). -1 (y untouched) when q's scales are unusable. */
int mc_qadd(const struct mc_qadd_q *q, int64_t n, const float *a, const float *b, float *y,
	    void *work);
/*
 * The same with u8 inputs and output where given: aq (bq) instead of a (b),
 * yq = u8(y) at (so, zo) instead of y (as struct mc_qconv_io). -1 also for
 * a bad (so, zo) or not exactly one of each pair.
 */
struct mc_qadd_io {
	const float *a, *b;
	const uint8_t *aq, *bq;
	float *y;
	uint8_t *yq;
	float so;
	int zo;
};
int mc_qadd_io(const struct mc_qadd_q *q, int64_t n, const struct mc_qadd_io *io, void *work);
int mc_qadd_ref(const struct mc_qadd_q *q, int64_t n, const float *a, const float *b, float *y);
/* The add's multipliers ma, mb and shift S (the ONNX export writes them). -1 as mc_qadd. */
int mc_qadd_fixed(const struct mc_qadd_q *q, int32_t *ma, int32_t *mb, int *shift);

/* The quantization of global average pooling: input i, output o. */
struct mc_qgap_q {
	float si, so;
	int zi, zo;
};

/* Bytes of workspace mc_qgap needs for n samples of C * HW values. */
size_t mc_qgap_work(int n, int C, int64_t HW);
/* y[n][C] = the requantized mean over HW of u8(x[n][C][HW]). -1 when q's scales are unusable. */
int mc_qgap(const struct mc_qgap_q *q, int n, int C, int64_t HW, const float *x, float *y,
	    void *work);
/* The same from x's u8 values xq (at q's si, zi) instead of x. */
int mc_qgap_u8(const struct mc_qgap_q *q, int n, int C, int64_t HW, const uint8_t *xq, float *y);
int mc_qgap_ref(const struct mc_qgap_q *q, int n, int C, int64_t HW, const float *x, float *y);
/* The pool's multiplier m and shift S for channels of HW values. -1 as mc_qgap. */
int mc_qgap_fixed(const struct mc_qgap_q *q, int64_t HW, int32_t *m, int *shift);

#endif
