/* SPDX-License-Identifier: MIT */
/*
 * dwconv.h - the f32 depthwise 2-D convolution (one input and one output
 * channel a group) over batches of per-sample [C, H, W] images, for conv2d
 * (core/graph/ops_conv.c). Not installed.
 *
 * Each output is the chain the per-sample GEMMs of ops_conv.c form for a
 * group of one channel (im2col, then mc_sgemm with W^T and beta 1 over C
 * prefilled with the bias), so switching to this kernel changes no bit:
 *
 *	for each slice of KC = 256 taps t = ki * k + kj, in order:
 *		acc = +0; acc = fma(w[c][t], x(t), acc) over the slice's taps
 *		y   = acc + y            (y starts at bias[c], +0 without)
 *	y = y > 0 ? y : 0 with relu  (the relu the executor fuses, a select)
 *
 * where taps in the padding count as x = 0 (an fma with 0, as the GEMM does
 * it). The kernels vectorize across the output positions of one channel,
 * never within a sum; threads split (sample, channel) items. The path is
 * the f32 GEMM's (avx512, avx2, portable; MCOMP_GEMM forces both), and
 * every path gives the same bits for any thread count. The _ref function
 * is the definition as plain loops, ground truth for tests.
 */
#ifndef MCOMP_KERNELS_DWCONV_H
#define MCOMP_KERNELS_DWCONV_H

#include <stddef.h>
#include <stdint.h>

/* A depthwise convolution: C channels of H x W to OH x OW, k x k windows, stride s, padding p. */
struct mc_dwconv {
	int C, H, W, OH, OW, k, s, p;
};

/* Bytes of workspace mc_dwconv_forward needs (64-byte aligned); SIZE_MAX on overflow. */
size_t mc_dwconv_work(const struct mc_dwconv *d);
/*
 * y[n][C][OH][OW] = dwconv(x[n][C][H][W], w[C][k*k]) + b[C] (b may be NULL),
 * then max(y, 0) when relu.
 */
void mc_dwconv_forward(const struct mc_dwconv *d, int n, const float *x, const float *w,
		       const float *b, int relu, float *y, void *work);
/*
 * The same, then post (kernels/conv.h; may be NULL) applied to each
 * channel's output while it is in cache, res [n][C][OH][OW] its residual
 * (read only with post->add).
 */
struct mc_conv_post;
void mc_dwconv_forward_post(const struct mc_dwconv *d, int n, const float *x, const float *w,
			    const float *b, int relu, const struct mc_conv_post *post,
			    const float *res, float *y, void *work);
void mc_dwconv_forward_ref(const struct mc_dwconv *d, int n, const float *x, const float *w,
			   const float *b, int relu, float *y);

/*
 * The backward pass, as the per-sample GEMMs and col2im formed it:
 *
 *	dx[h][w]  = +0, then + (w[c][t] * dy[oh][ow]) for each tap t = (ki, kj)
 *	            in order whose window (oh, ow) covers (h, w) (the product one
 *	            fma with 0, the sum plain adds; taps in the padding add nothing)
 *	dw[c][t] += the sum, over groups of MC_DWCONV_GROUP samples in order
 *	            (a chain of adds, starting from group 0's), of the group's
 *	            part: per sample in order, per slice of KC positions in order,
 *	            acc = fma chain over the slice from +0 of x(t, p) * dy[p],
 *	            part = acc (the group's first) or acc + part
 *	db[c]    += the same chain of groups of parts that are plain adds of dy
 *	            over the group's samples and positions, in order
 */
#define MC_DWCONV_GROUP 8

/* Bytes of workspace mc_dwconv_backward needs for n samples; SIZE_MAX on overflow. */
size_t mc_dwconv_bwd_work(const struct mc_dwconv *d, int n);
/*
 * dx[n][C][H][W] = the input gradient of dy[n][C][OH][OW] (dx may be NULL),
 * dw[C][k*k] and db[C] += the parameters' (either may be NULL).
 */
void mc_dwconv_backward(const struct mc_dwconv *d, int n, const float *x, const float *w,
			const float *dy, float *dx, float *dw, float *db, void *work);
void mc_dwconv_backward_ref(const struct mc_dwconv *d, int n, const float *x, const float *w,
			    const float *dy, float *dx, float *dw, float *db);

#endif
