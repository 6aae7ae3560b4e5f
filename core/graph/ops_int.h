/* SPDX-License-Identifier: MIT */
/*
 * ops_int.h - what the op files share: the ops themselves, for the table in
 * ops.c, and helpers for creating and initialising parameters. Not installed.
 *
 * An op lives in the file of its family (ops_dense.c: flatten, relu,
 * linear; ops_conv.c: conv2d and pooling; ops_norm.c: batch norm and
 * dropout; ops_misc.c: add, softmax, log-softmax; ops_quant.c: qlinear, qconv2d);
 * adding one is a struct mc_op there, its declaration here, and a row in the table in ops.c.
 */
#ifndef MCOMP_OPS_INT_H
#define MCOMP_OPS_INT_H

#include <mcomp/model.h>

/* Elementwise loops smaller than this run on the calling thread. */
#define MC_PAR_MIN 32768
#define MC_CHUNK 8192 /* elements per work item of an elementwise loop */

/*
 * MC_DEFINE_IM2COL_T(name, T) defines
 *
 *	static void name(int C, int H, int W, int OH, int OW, int k, int s, int p,
 *			 const T *x, T pad, T *ct)
 *
 * colT[OH * OW, C * k * k] from one sample x[C, H, W] (k x k windows, stride
 * s, padding p): row oh * OW + ow holds the window of that output position,
 * taps outside the image hold pad. One body for every element type the
 * convolutions use (f32 for conv2d, u8 for qconv2d); 3x3 windows inside the
 * image, the common case, take an unrolled path.
 */
#define MC_DEFINE_IM2COL_T(name, T)                                                              \
	static void name(int C, int H, int W, int OH, int OW, int k, int s, int p, const T *x,   \
			 T pad, T *ct)                                                           \
	{                                                                                        \
		for (int oh = 0; oh < OH; oh++) {                                                \
			int h0 = oh * s - p;                                                     \
                                                                                                 \
			for (int ow = 0; ow < OW; ow++) {                                        \
				int w0 = ow * s - p;                                             \
				int inside = h0 >= 0 && h0 + k <= H && w0 >= 0 && w0 + k <= W;  \
				T *dst = ct + ((size_t)oh * OW + ow) * (size_t)C * k * k;        \
                                                                                                 \
				if (inside) {                                                    \
					const T *img = x + (int64_t)h0 * W + w0;                 \
                                                                                                 \
					for (int c = 0; c < C; c++, img += (size_t)H * W) {      \
						if (k == 3) {                                    \
							dst[0] = img[0];                         \
							dst[1] = img[1];                         \
							dst[2] = img[2];                         \
							dst[3] = img[W];                         \
							dst[4] = img[W + 1];                     \
							dst[5] = img[W + 2];                     \
							dst[6] = img[2 * W];                     \
							dst[7] = img[2 * W + 1];                 \
							dst[8] = img[2 * W + 2];                 \
							dst += 9;                                \
							continue;                                \
						}                                                \
						for (int ki = 0; ki < k; ki++, dst += k)         \
							memcpy(dst, img + (size_t)ki * W,        \
							       (size_t)k * sizeof(T));           \
					}                                                        \
					continue;                                                \
				}                                                                \
				for (int c = 0; c < C; c++)                                      \
					for (int ki = 0; ki < k; ki++)                           \
						for (int kj = 0; kj < k; kj++) {                 \
							int h = h0 + ki, w = w0 + kj;            \
                                                                                                 \
							*dst++ = h >= 0 && h < H && w >= 0 &&    \
									 w < W                   \
								 ? x[((size_t)c * H + h) * W + w] \
								 : pad;                          \
						}                                                \
			}                                                                        \
		}                                                                                \
	}

extern const struct mc_param_def mc_no_attrs[];

/* Creates parameter p of node as "<node>.<what>" of the given shape. */
int mc_node_new_param(struct mc_node *node, int p, const char *what, int ndim,
		      const int64_t *shape, struct mc_err *err);
/* t = U(lo, hi) from (seed, stream); value i is a pure function of i. */
void mc_fill_uniform(struct mc_tensor *t, uint64_t seed, uint64_t stream, float lo, float hi);
/* Output shape = input shape (elementwise ops). */
int mc_same_shape_setup(struct mc_node *node, const int *in_ndim,
			const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err);
int64_t mc_zero_flops(const struct mc_node *node);

/* Philox streams of dropout masks, apart from init (1 << 56), shuffling (2 << 56)
 * and augmentation (4 << 56, train.c). */
#define MC_STREAM_DROPOUT (3ull << 56)

/* A stable 32-bit hash of a node's name (FNV-1a): its stream for run-time randomness. */
uint32_t mc_node_hash(const struct mc_node *node);

extern const struct mc_op mc_op_flatten, mc_op_relu, mc_op_linear;
extern const struct mc_op mc_op_conv2d, mc_op_maxpool2d, mc_op_avgpool2d, mc_op_global_avgpool;
extern const struct mc_op mc_op_batchnorm, mc_op_dropout;
extern const struct mc_op mc_op_add, mc_op_softmax, mc_op_log_softmax;
extern const struct mc_op mc_op_qlinear, mc_op_qconv2d; /* ops_quant.c */

#endif
