/* SPDX-License-Identifier: MIT */
/*
 * conv_geo.h - the geometry of a 2-D sliding window over per-sample
 * [C, H, W] images, shared by conv2d (ops_conv.c), qconv2d (ops_qconv.c)
 * and pooling (ops_pool.c): output sizes, the shapes of one convolution,
 * and im2col into the window-per-row layout; and what conv2d lends qconv2d
 * (defined in ops_conv.c): the checks of setup, col2im and the transpose.
 * Not installed.
 */
#ifndef MCOMP_CONV_GEO_H
#define MCOMP_CONV_GEO_H

#include <string.h>

#include <mcomp/model.h>

/* Output size of a window of k sliding over n with padding p and stride s. */
static inline int64_t mc_conv_out(int64_t n, int k, int s, int p)
{
	return (n + 2 * (int64_t)p - k) / s + 1;
}

/* The geometry of a convolution node, from its weight and shapes. */
struct mc_conv_geo {
	int C, H, W, O, OH, OW, k, s, p, g;
	int Cg, Og, Kg; /* per group: in channels, out channels, C/g*k*k */
	int64_t P;	/* OH * OW */
};

/*
 * q for a node with weight w [O, C/g, k, k] and output out_shape [O, OH, OW]
 * over inputs of H x W (kept by its setup); kernel k, stride s, padding p
 * and g groups come from its attributes.
 */
static inline void mc_conv_geo_init(struct mc_conv_geo *q, const struct mc_tensor *w,
				    const int64_t *out_shape, int k, int s, int p, int g, int H,
				    int W)
{
	q->O = (int)w->shape[0];
	q->Cg = (int)w->shape[1];
	q->k = k;
	q->s = s;
	q->p = p;
	q->g = g;
	q->C = q->Cg * q->g;
	q->Og = q->O / q->g;
	q->Kg = q->Cg * q->k * q->k;
	q->OH = (int)out_shape[1];
	q->OW = (int)out_shape[2];
	q->P = (int64_t)q->OH * q->OW;
	q->H = H;
	q->W = W;
}

/*
 * The checks conv2d and qconv2d share, after their own: the k x k window
 * (stride s, padding p) fits the padded in[C, H, W], padding p < k leaves
 * no window of zeros only, and the weight [out, C/g, k, k] (at most kmax
 * inputs a window, INT_MAX weights) and the output positions fit the
 * kernels. Messages start with pfx; a too large layer's ends with hint.
 * Sets node's output shape [out, OH, OW] and *in_h, *in_w. 0 or MC_EINVAL.
 */
int mc_conv_setup(struct mc_node *node, const char *pfx, const int64_t *in, int out, int k, int s,
		  int p, int g, size_t kmax, const char *hint, int *in_h, int *in_w,
		  struct mc_err *err);
/* dx[C, H, W] of one sample = the sum of dcol[C*k*k, P] over the windows reading each pixel. */
void mc_conv_col2im(const struct mc_conv_geo *q, const float *dcol, float *dx);
/* t[cols, rows] = a[rows, cols]^T */
void mc_transpose(int64_t rows, int cols, const float *a, float *t);

/*
 * MC_DEFINE_IM2COL_T(name, T) defines
 *
 *	static void name(const struct mc_conv_geo *q, const T *x, T pad, T *ct)
 *
 * colT[OH * OW, C * k * k] from one sample x[C, H, W] (k x k windows, stride
 * s, padding p): row oh * OW + ow holds the window of that output position,
 * taps outside the image hold pad. One body for every element type the
 * convolutions use (f32 for conv2d, u8 for qconv2d); 3x3 windows inside the
 * image, the common case, take an unrolled path.
 */
#define MC_DEFINE_IM2COL_T(name, T)                                                              \
	static void name(const struct mc_conv_geo *q, const T *x, T pad, T *ct)                  \
	{                                                                                        \
		const int C = q->C, H = q->H, W = q->W, OH = q->OH, OW = q->OW;                  \
		const int k = q->k, s = q->s, p = q->p;                                          \
                                                                                                 \
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

#endif
