/* SPDX-License-Identifier: MIT */
/*
 * ops_int.h - what the op files share: the ops themselves, for the table in
 * ops.c, and helpers for creating and initialising parameters. Not installed.
 *
 * An op lives in the file of its family (ops_dense.c: flatten, relu,
 * linear; ops_conv.c: conv2d; ops_pool.c: maxpool2d, avgpool2d,
 * global_avgpool; ops_norm.c: batch norm and dropout; ops_misc.c: add,
 * softmax, log-softmax; ops_act.c: leaky_relu, sigmoid, clip, relu6,
 * hardsigmoid, hardswish, mul; ops_pad.c: pad2d;
 * ops_concat.c: concat; ops_qlinear.c: qlinear; ops_qconv.c: qconv2d;
 * ops_qelem.c: qadd, qglobal_avgpool;
 * ops_fakequant.c: fake_quant);
 * adding one is a struct mc_op there, its declaration here, and a row in
 * the table in ops.c. Convolution and pooling share their window geometry
 * (conv_geo.h); the quantized ops share their int8 path (ops_quant_int.h).
 */
#ifndef MCOMP_OPS_INT_H
#define MCOMP_OPS_INT_H

#include <mcomp/model.h>

/* Elementwise loops smaller than this run on the calling thread. */
#define MC_PAR_MIN 32768
#define MC_CHUNK 8192 /* elements per work item of an elementwise loop */

extern const struct mc_param_def mc_no_attrs[];

/* Creates parameter p of node as "<node>.<what>" of the given shape. */
int mc_node_new_param(struct mc_node *node, int p, const char *what, int ndim,
		      const int64_t *shape, struct mc_err *err);
/* t = U(lo, hi) from (seed, stream); value i is a pure function of i. */
void mc_fill_uniform(struct mc_tensor *t, uint64_t seed, uint64_t stream, float lo, float hi);
/*
 * Like PyTorch's nn.Linear and nn.Conv2d: weight (param 0) and bias (param 1,
 * if any) ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = weights per output.
 */
void mc_fan_in_init(struct mc_node *node, uint64_t seed, uint64_t stream);
/* Output shape = input shape (elementwise ops). */
int mc_same_shape_setup(struct mc_node *node, const int *in_ndim,
			const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err);
int64_t mc_zero_flops(const struct mc_node *node);
/* One operation per output value (elementwise ops). */
int64_t mc_numel_flops(const struct mc_node *node);

/*
 * dst[0..n) = src[0..n) (src NULL: 0), in MC_COPY_PIECES pieces on the team
 * when n is at least MC_PAR_MIN: a memcpy or memset of a batch's tensor that
 * one thread would do while the others wait (flatten, zeroing gradients).
 */
#define MC_COPY_PIECES 64
void mc_par_copy(float *dst, const float *src, int64_t n);

/* Philox streams of dropout masks, apart from init (1 << 56), shuffling (2 << 56)
 * and augmentation (4 << 56, train.c). */
#define MC_STREAM_DROPOUT (3ull << 56)

/* A stable 32-bit hash of a node's name (FNV-1a): its stream for run-time randomness. */
uint32_t mc_node_hash(const struct mc_node *node);

extern const struct mc_op mc_op_flatten, mc_op_relu, mc_op_linear;
extern const struct mc_op mc_op_conv2d, mc_op_maxpool2d, mc_op_avgpool2d, mc_op_global_avgpool;
extern const struct mc_op mc_op_batchnorm, mc_op_dropout;
extern const struct mc_op mc_op_add, mc_op_softmax, mc_op_log_softmax;
extern const struct mc_op mc_op_qlinear, mc_op_qconv2d, mc_op_qadd, mc_op_qglobal_avgpool;
extern const struct mc_op mc_op_leaky_relu, mc_op_sigmoid, mc_op_clip, mc_op_relu6;
extern const struct mc_op mc_op_hardsigmoid, mc_op_hardswish, mc_op_mul;
extern const struct mc_op mc_op_pad2d, mc_op_concat, mc_op_fake_quant;

/* A linear layer's forward with relu applied to its output in place (the executor's
 * fusion at inference): the values of linear then relu. */
void mc_linear_forward_relu(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out);

/*
 * conv2d's forward with max(out, 0) applied as the tiles are stored: the
 * executor runs it in place of a conv2d and the relu that alone reads it
 * (exec.c), and skips the relu's forward.
 */
void mc_conv2d_forward_relu(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out);
/*
 * Inference: conv2d, its relu and a 2x2, stride 2 maxpool2d (pool) in one
 * pass, each sample pooled while its convolution is in cache; out is the
 * pool's output. The bits of the three run one after another.
 */
void mc_conv2d_forward_relu_pool(const struct mc_node *node, const struct mc_node *pool,
				 const struct mc_run *run, int n, const float *const *in,
				 float *conv_out, float *out);
/*
 * Inference: conv2d and the layers that alone read it (a batchnorm, an
 * activation, a residual add, an activation: exec.c), post their
 * expressions (kernels/conv.h), applied to each output channel as it is
 * stored; res is the residual add's other input. conv_out is scratch the
 * convolution may write (its own output), out the last fused layer's.
 * The bits of the layers one after another.
 */
struct mc_conv_post;
void mc_conv2d_forward_post(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, const struct mc_conv_post *post,
			    const float *res, float *conv_out, float *out);
/* A batchnorm's per-channel scale and shift at inference, as its forward computes them. */
void mc_batchnorm_affine(const struct mc_node *node, float *scale, float *shift);
/* 1 and the bounds for a clip or relu6 node, else 0. */
int mc_clip_bounds(const struct mc_node *node, float *lo, float *hi);
/*
 * The same for a qconv2d with its relu fused (relu: true; 1 from
 * mc_qconv2d_fuses_pool) and the 2x2 maxpool2d that alone reads it.
 */
int mc_qconv2d_fuses_pool(const struct mc_node *node);
void mc_qconv2d_forward_pool(const struct mc_node *node, const struct mc_node *pool,
			     const struct mc_run *run, int n, const float *const *in,
			     float *conv_out, float *out);

/*
 * u8 activations between int8 ops, for the executor at inference
 * (exec.c): whether node can take input k as u8 values, and the scale and
 * zero point it quantizes that input at (its calibrated, static pair);
 * whether it can write its output as the u8 values a reader quantizes it
 * to; and the forward with either: in8[k] set means input k is u8 (in[k]
 * unused), out8 set means the output is written as u8 at (so, zo) (out
 * unused). The bytes are those of the f32 forward followed by the reader's
 * quantization (mc_quantize_u8). The int8 depthwise and pointwise qconv2d,
 * qadd and (input only) qglobal_avgpool take part.
 */
int mc_qop_takes_u8(const struct mc_node *node, int k, float *s, int *z);
int mc_qop_gives_u8(const struct mc_node *node);
void mc_qop_forward_u8(const struct mc_node *node, const struct mc_run *run, int n,
		       const float *const *in, const uint8_t *const *in8, float *out,
		       uint8_t *out8, float so, int zo);
/* qconv2d's part of them (ops_qconv.c). */
int mc_qconv2d_takes_u8(const struct mc_node *node, float *s, int *z);
int mc_qconv2d_gives_u8(const struct mc_node *node);
void mc_qconv2d_forward_u8(const struct mc_node *node, const struct mc_run *run, int n,
			   const float *x, const uint8_t *xq, float *out, uint8_t *out8, float so,
			   int zo);
/* 1 for a maxpool2d of 2x2 windows, stride 2, no padding (the one conv2d can take in). */
int mc_maxpool2_fusable(const struct mc_node *node);
/* That pool over one sample x [C, H, W] into y [C, H/2, W/2]. */
void mc_maxpool2_sample(const struct mc_node *node, const float *x, float *y);
/* The same from x [C][2 OH][2 OW]: only the rows and columns its windows read. */
void mc_maxpool2_sample_part(const struct mc_node *node, const float *x, float *y);
/*
 * Training: the gradient of a relu's output x through a 2x2 maxpool2d
 * (node, mc_maxpool2_fusable) and then through the relu, in one pass: dx
 * is the relu's input gradient, dy the pool's output gradient; the bits of
 * maxpool2d's backward then relu's.
 */
void mc_maxpool2_backward_relu(const struct mc_node *node, int n, const float *x,
			       const float *dy, float *dx);
/* The same for planes [C][H][W] of x and dx ([C][OH][OW] of dy), on the calling thread. */
void mc_maxpool2_backward_relu_planes(const struct mc_node *node, int64_t planes, const float *x,
				      const float *dy, float *dx);
/*
 * Training: 1 when conv2d's backward can take its output gradient from the
 * relu and 2x2 maxpool2d that alone read it (mc_conv2d_backward_relu_pool)
 * instead of from memory: one group, dW on the batched kernels, and no
 * input gradient wanted (the caller's to know: a first layer).
 */
int mc_conv2d_dw_fuses_pool(const struct mc_node *node);
/*
 * conv2d's dW and db (grads) for the input x, its output gradient being
 * the relu's and maxpool2d's (pool) backward of the relu's output y and the
 * pool's output gradient dpool, made a few channels and samples at a time
 * where they stay in cache and never written whole: the bits of the pool's
 * backward, then conv2d's.
 */
void mc_conv2d_backward_relu_pool(const struct mc_node *node, const struct mc_node *pool,
				  const struct mc_run *run, int n, const float *x, const float *y,
				  const float *dpool, float *const *grads);

#endif
