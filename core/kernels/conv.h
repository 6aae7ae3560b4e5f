/* SPDX-License-Identifier: MIT */
/*
 * conv.h - f32 2-D convolution kernels over batches of per-sample [C, H, W]
 * images (NCHW), for conv2d (core/graph/ops_conv.c). Not installed.
 *
 * The forward pass is an implicit GEMM batched over samples: the columns of
 * the product are the output positions of all n samples one after another
 * (sample, oh, ow), cut into strips of NR columns; each strip's window
 * values are packed straight from the images (the im2col of those columns
 * only, never of a whole batch) and multiplied against the weights packed
 * MR output channels at a time, bias and relu applied as the tile is
 * stored. The weight gradient is the same kind of product with the roles
 * turned: dW[o][k] over all the batch's columns.
 *
 * Every output is one chain of fused multiply-adds in a fixed order, the
 * same on every path (avx512, avx2, portable; chosen as the f32 GEMM's,
 * MCOMP_GEMM) and for any thread count or blocking:
 *
 *	forward  y[n][o][p] = relu?( fma chain over k = (c, ki, kj) in order,
 *	                             starting from bias[o] (0 without) )
 *	dW       dw[o][k]   = fma chain over (n, p) in order, starting from
 *	                      dw[o][k] (it adds to what is there); db[o] the
 *	                      same chain of plain adds of dy
 *
 * where taps in the padding count as x = 0 (an fma with 0, as the kernels
 * do it). The _ref functions are these definitions as plain loops, ground
 * truth for tests.
 */
#ifndef MCOMP_KERNELS_CONV_H
#define MCOMP_KERNELS_CONV_H

#include <stddef.h>
#include <stdint.h>

/* One group of a convolution: k x k windows, stride s, padding p. */
struct mc_convf {
	int C, H, W;   /* input channels and size, per sample */
	int O, OH, OW; /* output channels and size */
	int k, s, p;
	int64_t xs, ys; /* floats from one sample to the next in x and in y */
};

/*
 * What is done with each sample's output [O][OH*OW] once it is complete
 * (a pooling that follows): fn(ctx, s, ys), on any thread, samples in any
 * order. With one, y may be left unwritten (each sample going through a
 * scratch that stays in cache).
 *
 * When fn reads only rows < oh and columns < ow of each output plane (a
 * 2x2 pool of an odd-sized output drops the last row and column), part
 * may say so: a kernel may then compute only those outputs and call
 * part(ctx, s, ys) with ys [O][oh][ow] instead of fn. The values are the
 * same; only the ones no one reads are not computed.
 *
 * When, besides, fn is no more than a 2x2, stride 2 max pool (of relu's
 * output: relu set) of sample s into pool2 + s * pool2_ys [O][oh/2][ow/2],
 * pool2 may say so: a kernel may then pool as it computes and store only
 * the pooled values there, the same bits.
 */
struct mc_convf_epi {
	void (*fn)(void *ctx, int s, const float *ys);
	void *ctx;
	void (*part)(void *ctx, int s, const float *ys); /* NULL: none */
	int oh, ow;
	float *pool2; /* NULL: none */
	int64_t pool2_ys;
};

/*
 * What the inference executor applies to each output value of a
 * convolution before it leaves the cache: the layers that alone read it
 * (exec.c fuses conv2d -> batchnorm -> relu/relu6/clip -> add -> relu ...),
 * each the expression of the separate layer, in their order:
 *
 *	y = y * scale[o] + shift[o]	(scale set: a batch norm at inference;
 *					 a rounded product, then a rounded sum)
 *	y = act1(y)
 *	y = y + r, or r + y with res_first	(a residual add: r read beside y)
 *	y = act2(y)
 *
 * where act is MC_POST_RELU: y > 0 ? y : 0, or MC_POST_CLIP: v = y < lo ? lo
 * : y, then v > hi ? hi : v (NaN stays NaN); MC_POST_NONE leaves y. Every
 * step is one IEEE operation or a select, so SIMD or not, the bits are
 * those of the layers run one after another.
 */
enum mc_post_act { MC_POST_NONE, MC_POST_RELU, MC_POST_CLIP };

struct mc_conv_post {
	const float *scale, *shift; /* [O], or NULL: no batch norm */
	int act1, act2;		    /* enum mc_post_act */
	float lo1, hi1, lo2, hi2;   /* MC_POST_CLIP's bounds */
	int add, res_first;	    /* a residual add; its other operand comes first */
};

/*
 * dst[0..len) = post(src[0..len)) for output channel o, res[0..len) the
 * residual at the same places (read only with post->add). dst may be src.
 * On the f32 GEMM's path (avx512, avx2, plain C; MCOMP_GEMM), the same bits
 * on each; mc_conv_post_path is that path's function, for loops that call
 * it often.
 */
typedef void (*mc_conv_post_fn)(const struct mc_conv_post *post, int o, const float *src,
				const float *res, float *dst, int64_t len);
mc_conv_post_fn mc_conv_post_path(void);
void mc_conv_post_run(const struct mc_conv_post *post, int o, const float *src, const float *res,
		      float *dst, int64_t len);
void mc_conv_post_run_ref(const struct mc_conv_post *post, int o, const float *src,
			  const float *res, float *dst, int64_t len);

/* Bytes of workspace mc_convf_forward needs (64-byte aligned); SIZE_MAX on overflow. */
size_t mc_convf_work(const struct mc_convf *cv);
/*
 * y[n][O][OH*OW] = conv(x[n][C][H][W], w[O][C*k*k]) + b[O] (b may be NULL),
 * then max(y, 0) when relu, then epi (may be NULL) per sample. Threads
 * split output tiles (never a sum).
 */
void mc_convf_forward(const struct mc_convf *cv, int n, const float *x, const float *w,
		      const float *b, int relu, float *y, void *work,
		      const struct mc_convf_epi *epi);
void mc_convf_forward_ref(const struct mc_convf *cv, int n, const float *x, const float *w,
			  const float *b, int relu, float *y);

/* Bytes of workspace mc_convf_dw needs for batches of up to n samples; SIZE_MAX on overflow. */
size_t mc_convf_dw_work(const struct mc_convf *cv, int n);
/* dw[O][C*k*k] += sum over the batch of dy x window, db[O] += sum of dy (either may be NULL). */
void mc_convf_dw(const struct mc_convf *cv, int n, const float *x, const float *dy, float *dw,
		 float *db, void *work);
void mc_convf_dw_ref(const struct mc_convf *cv, int n, const float *x, const float *dy, float *dw,
		     float *db);

/*
 * dy that is not in memory: fn(ctx, s, o0, m, dst) writes dy of channels
 * o0 .. o0 + m - 1 of sample s to dst [m][OH*OW], on any thread, samples and
 * channels in any order and some more than once; each value the bits it
 * stands for (a first layer's relu and 2x2 max pool backward, exec.c, whose
 * output gradient no one else reads).
 */
struct mc_convf_dysrc {
	void (*fn)(void *ctx, int s, int o0, int m, float *dst);
	void *ctx;
};

/*
 * mc_convf_dw with dy from src, a few channels and samples at a time into
 * the workspace (mc_convf_dw_work's) where they stay in cache: the same
 * chains, the same bits, on every path.
 */
void mc_convf_dw_src(const struct mc_convf *cv, int n, const float *x,
		     const struct mc_convf_dysrc *src, float *dw, float *db, void *work);

#endif
