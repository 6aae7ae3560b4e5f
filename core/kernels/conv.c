/* SPDX-License-Identifier: MIT */
/*
 * conv.c - f32 convolution as an implicit GEMM batched over samples
 * (conv.h): window packing straight from the images, MR x NR micro-kernels
 * for AVX-512, AVX2 and plain C, bias and relu in the store, and the
 * weight gradient as the same kind of product.
 *
 * Forward, stride 1 and 2 on AVX-512 and AVX2 (forward_direct): the
 * weights are read as they are. A stride-2 image is first split by row and
 * column phase (struct planes), after which a tap's values for a row of
 * outputs are consecutive as with stride 1 and the same kernels run on it.
 * Output positions are taken a padded image row wide, so
 * a tap's window values for consecutive positions are consecutive floats
 * of the image; the kernels read them there against MR weight rows, and
 * compress the real columns into the output as they store (bias first,
 * relu last). Each task is one sample, or a share of its channel panels
 * for a small batch; it prefetches the next sample's image as it goes.
 * With whole samples a task, 32 <= K <= KPMAX and a tenth of the wide
 * columns to save, only the real positions are computed instead: a strip
 * of 32 of them (AVX2: 24) is packed from the image (two loads and a
 * permute a tap and 16 positions; AVX2: two loads, two permutes and a
 * blend a tap and 8) and every panel runs over it, no column wasted, no
 * load across a cache line; and when the epilogue reads only part of each
 * plane (a 2x2 pool of an odd size), only that part. A first layer (one
 * input channel, 3x3) whose epilogue is a 2x2 pool of its relu pools in
 * registers and stores only the pooled values (conv1_pool_avx512, _avx2).
 *
 * Forward, otherwise: the columns j of the product are (sample, oh, ow) of
 * the whole batch, cut into strips of NR. A strip's window values are
 * packed k-major (kc x NR, from the images, padding as 0) a K block at a
 * time, and every MR-channel panel of the packed weights runs over it:
 * out[o][j] starts at bias[o] and takes one FMA per k in order, blocks
 * continuing from where the last one stored (a store and a load of a float
 * change nothing), relu at the last. Threads take whole tiles (strips, or
 * strips x channel panels when a batch has few strips).
 *
 * dW of a 3x3 stride-1 convolution on AVX-512 and AVX2 (dw_direct): window
 * values broadcast straight from the image against dy^T, 32 output
 * channels a tile. Otherwise: each task owns a strip of NR columns of k (a
 * bias column of ones at k = K makes db the same product) and all samples
 * in order: it packs the windows of its k range per sample, [P][NR], and
 * runs MR output channels at a time with dy broadcast from its rows.
 * With dy from a source (mc_convf_dw_src: a first layer's relu and pool
 * backward), each task makes the dy it is about to read, a group of
 * channels of one sample, in its slot (the direct path's items that share
 * a group, in blocks of samples the team makes first), never all of it.
 *
 * Every output is the same chain whichever path, blocking or thread
 * computes it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/tensor.h>

#include "kernels/conv.h"
#include "kernels/cpu.h"

#define KCMAX	256 /* depth of a packed block: NR x KCMAX floats stay in L1 */
#define KPMAX	320 /* deepest K of the packed forward (one block: NRMAX x KPMAX floats) */
#define NRMAX	32  /* widest strip of any path */
#define MRMAX	8   /* tallest panel of any path */
#define SLOTS	16  /* at most this many threads, each with a slot of the workspace */
#define PAR_MIN 1e6 /* multiply-adds below which one thread is faster than a team */

/*
 * fwd: c[rows][cols] (row stride ldc) = over kc: acc = fma(a[k][i], b[k][j], acc),
 * acc starting at bias[i] (bias != NULL) or at c; relu: max(acc, 0) before the store.
 * dw: c[rows][cols] += over p < np: fma(dy_i[p], b[p][j], c), with dy_i = dyr[i].
 */
typedef void (*fwd_fn)(int kc, const float *a, const float *b, float *c, size_t ldc, int rows,
		       int cols, const float *bias, int relu);
typedef void (*dw_fn)(int np, const float *const *dyr, const float *b, float *c, size_t ldc,
		      int rows, int cols);

struct path {
	const char *name;
	int mr, nr;
	fwd_fn fwd;
	dw_fn dw;
};

/* ---------------------------------------------------------------- portable */

static void fwd_portable(int kc, const float *a, const float *b, float *c, size_t ldc, int rows,
			 int cols, const float *bias, int relu)
{
	float acc[4][16];

	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 16; j++)
			acc[i][j] = bias ? bias[i] : i < rows && j < cols ? c[i * ldc + j] : 0.0f;
	for (int k = 0; k < kc; k++, a += 4, b += 16)
		for (int i = 0; i < 4; i++)
			for (int j = 0; j < 16; j++)
				acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
	for (int i = 0; i < rows; i++)
		for (int j = 0; j < cols; j++)
			c[i * ldc + j] = relu ? (acc[i][j] > 0.0f ? acc[i][j] : 0.0f) : acc[i][j];
}

static void dw_portable(int np, const float *const *dyr, const float *b, float *c, size_t ldc,
			int rows, int cols)
{
	float acc[4][16];

	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 16; j++)
			acc[i][j] = i < rows && j < cols ? c[i * ldc + j] : 0.0f;
	for (int p = 0; p < np; p++, b += 16)
		for (int i = 0; i < 4; i++)
			for (int j = 0; j < 16; j++)
				acc[i][j] = fmaf(dyr[i][p], b[j], acc[i][j]);
	for (int i = 0; i < rows; i++)
		for (int j = 0; j < cols; j++)
			c[i * ldc + j] = acc[i][j];
}

#if defined(__x86_64__)
#include <immintrin.h>

/* ---------------------------------------------------------------- AVX-512: 8 x 32 */

#define Z_INIT(i)                                                                                  \
	do {                                                                                       \
		if (bias) {                                                                        \
			c##i##0 = c##i##1 = _mm512_set1_ps(bias[i]);                               \
		} else if ((i) < rows) {                                                           \
			c##i##0 = _mm512_maskz_loadu_ps(m0, c + (i)*ldc);                          \
			c##i##1 = _mm512_maskz_loadu_ps(m1, c + (i)*ldc + 16);                     \
		} else {                                                                           \
			c##i##0 = c##i##1 = _mm512_setzero_ps();                                   \
		}                                                                                  \
	} while (0)
#define Z_FMA(i, ai)                                                                               \
	do {                                                                                       \
		__m512 t_ = _mm512_set1_ps(ai);                                                    \
		c##i##0 = _mm512_fmadd_ps(t_, b0, c##i##0);                                        \
		c##i##1 = _mm512_fmadd_ps(t_, b1, c##i##1);                                        \
	} while (0)
#define Z_STORE(i)                                                                                 \
	do {                                                                                       \
		if ((i) < rows) {                                                                  \
			if (relu) {                                                                \
				c##i##0 = _mm512_max_ps(c##i##0, zero);                            \
				c##i##1 = _mm512_max_ps(c##i##1, zero);                            \
			}                                                                          \
			_mm512_mask_storeu_ps(c + (i)*ldc, m0, c##i##0);                           \
			_mm512_mask_storeu_ps(c + (i)*ldc + 16, m1, c##i##1);                      \
		}                                                                                  \
	} while (0)
#define Z_ALL(M)                                                                                   \
	M(0);                                                                                      \
	M(1);                                                                                      \
	M(2);                                                                                      \
	M(3);                                                                                      \
	M(4);                                                                                      \
	M(5);                                                                                      \
	M(6);                                                                                      \
	M(7)

__attribute__((target("avx512f,fma"))) static void fwd_avx512(int kc, const float *a,
							      const float *b, float *c, size_t ldc,
							      int rows, int cols, const float *bias,
							      int relu)
{
	__mmask16 m0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
	__mmask16 m1 = cols >= 32 ? 0xffff : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1) : 0;
	__m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
	__m512 zero = _mm512_setzero_ps();

	Z_ALL(Z_INIT);
	for (int k = 0; k < kc; k++, a += 8, b += 32) {
		__m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);

		Z_FMA(0, a[0]);
		Z_FMA(1, a[1]);
		Z_FMA(2, a[2]);
		Z_FMA(3, a[3]);
		Z_FMA(4, a[4]);
		Z_FMA(5, a[5]);
		Z_FMA(6, a[6]);
		Z_FMA(7, a[7]);
	}
	Z_ALL(Z_STORE);
}

/*
 * fwd_avx512 with B read straight from the image: row k of the strip is
 * xb + off[k] (cols columns; the rest are not loaded). Of the columns,
 * those whose bit is set in valid are real: each row's real values are
 * compressed together and stored at c + i * ldc on (the output positions
 * of a sample are consecutive).
 */
#define Z_CSTORE(i)                                                                                \
	do {                                                                                       \
		if ((i) < rows) {                                                                  \
			if (relu) {                                                                \
				c##i##0 = _mm512_max_ps(c##i##0, zero);                            \
				c##i##1 = _mm512_max_ps(c##i##1, zero);                            \
			}                                                                          \
			_mm512_mask_storeu_ps(c + (i)*ldc, s0,                                     \
					      _mm512_maskz_compress_ps(v0, c##i##0));              \
			_mm512_mask_storeu_ps(c + (i)*ldc + n0, s1,                                \
					      _mm512_maskz_compress_ps(v1, c##i##1));              \
		}                                                                                  \
	} while (0)

__attribute__((target("avx512f,fma"))) static void
fwd_direct_avx512(int kc, const float *const *wr, const float *xb, const int *off, float *c,
		  size_t ldc, int rows, int cols, uint32_t valid, const float *bias, int relu)
{
	const float *w0 = wr[0], *w1 = wr[1], *w2 = wr[2], *w3 = wr[3], *w4 = wr[4], *w5 = wr[5],
		    *w6 = wr[6], *w7 = wr[7];
	__mmask16 m0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
	__mmask16 m1 = cols >= 32 ? 0xffff : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1) : 0;
	__mmask16 v0 = (__mmask16)(valid & m0), v1 = (__mmask16)((valid >> 16) & m1);
	int n0 = __builtin_popcount(v0), n1 = __builtin_popcount(v1);
	__mmask16 s0 = (__mmask16)((1u << n0) - 1), s1 = (__mmask16)((1u << n1) - 1);
	__m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
	__m512 zero = _mm512_setzero_ps();

	Z_ALL(Z_INIT);
#define Z_STEP(LOAD0, LOAD1)                                              \
	for (int k = 0; k < kc; k++) {                                    \
		const float *b = xb + off[k];                             \
		__m512 b0 = LOAD0, b1 = LOAD1;                            \
                                                                          \
		Z_FMA(0, w0[k]);                                          \
		Z_FMA(1, w1[k]);                                          \
		Z_FMA(2, w2[k]);                                          \
		Z_FMA(3, w3[k]);                                          \
		Z_FMA(4, w4[k]);                                          \
		Z_FMA(5, w5[k]);                                          \
		Z_FMA(6, w6[k]);                                          \
		Z_FMA(7, w7[k]);                                          \
	}
	/* a whole strip needs no masks in the loop (they would live on the stack) */
	if (cols == 32)
		Z_STEP(_mm512_loadu_ps(b), _mm512_loadu_ps(b + 16))
	else
		Z_STEP(_mm512_maskz_loadu_ps(m0, b), _mm512_maskz_loadu_ps(m1, b + 16))
#undef Z_STEP
	Z_ALL(Z_CSTORE);
}

/* The same for at most 16 columns: half the work of a strip's last few columns. */
#define H_INIT(i)    c##i##0 = (i) < rows ? _mm512_set1_ps(bias[i]) : _mm512_setzero_ps()
#define H_FMA(i, ai) c##i##0 = _mm512_fmadd_ps(_mm512_set1_ps(ai), b0, c##i##0)
#define H_STORE(i)                                                                                 \
	do {                                                                                       \
		if ((i) < rows) {                                                                  \
			if (relu)                                                                  \
				c##i##0 = _mm512_max_ps(c##i##0, zero);                            \
			_mm512_mask_storeu_ps(c + (i)*ldc, s0,                                     \
					      _mm512_maskz_compress_ps(v0, c##i##0));              \
		}                                                                                  \
	} while (0)

__attribute__((target("avx512f,fma"))) static void
fwd_direct16_avx512(int kc, const float *const *wr, const float *xb, const int *off, float *c,
		    size_t ldc, int rows, int cols, uint32_t valid, const float *bias, int relu)
{
	const float *w0 = wr[0], *w1 = wr[1], *w2 = wr[2], *w3 = wr[3], *w4 = wr[4], *w5 = wr[5],
		    *w6 = wr[6], *w7 = wr[7];
	__mmask16 m0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
	__mmask16 v0 = (__mmask16)(valid & m0),
		  s0 = (__mmask16)((1u << __builtin_popcount(v0)) - 1);
	__m512 c00, c10, c20, c30, c40, c50, c60, c70;
	__m512 zero = _mm512_setzero_ps();

	Z_ALL(H_INIT);
#define H_STEP(LOAD)                                      \
	for (int k = 0; k < kc; k++) {                    \
		const float *b = xb + off[k];             \
		__m512 b0 = LOAD;                         \
                                                          \
		H_FMA(0, w0[k]);                          \
		H_FMA(1, w1[k]);                          \
		H_FMA(2, w2[k]);                          \
		H_FMA(3, w3[k]);                          \
		H_FMA(4, w4[k]);                          \
		H_FMA(5, w5[k]);                          \
		H_FMA(6, w6[k]);                          \
		H_FMA(7, w7[k]);                          \
	}
	if (cols == 16)
		H_STEP(_mm512_loadu_ps(b))
	else
		H_STEP(_mm512_maskz_loadu_ps(m0, b))
#undef H_STEP
	Z_ALL(H_STORE);
}

#undef Z_INIT
#define Z_INIT(i)                                                                                  \
	do {                                                                                       \
		if ((i) < rows) {                                                                  \
			c##i##0 = _mm512_maskz_loadu_ps(m0, c + (i)*ldc);                          \
			c##i##1 = _mm512_maskz_loadu_ps(m1, c + (i)*ldc + 16);                     \
		} else {                                                                           \
			c##i##0 = c##i##1 = _mm512_setzero_ps();                                   \
		}                                                                                  \
	} while (0)

__attribute__((target("avx512f,fma"))) static void
dw_avx512(int np, const float *const *dyr, const float *b, float *c, size_t ldc, int rows, int cols)
{
	__mmask16 m0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
	__mmask16 m1 = cols >= 32 ? 0xffff : cols > 16 ? (__mmask16)((1u << (cols - 16)) - 1) : 0;
	__m512 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71;
	__m512 zero = _mm512_setzero_ps();
	const float *d0 = dyr[0], *d1 = dyr[1], *d2 = dyr[2], *d3 = dyr[3];
	const float *d4 = dyr[4], *d5 = dyr[5], *d6 = dyr[6], *d7 = dyr[7];
	int relu = 0;

	Z_ALL(Z_INIT);
	for (int p = 0; p < np; p++, b += 32) {
		__m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);

		Z_FMA(0, d0[p]);
		Z_FMA(1, d1[p]);
		Z_FMA(2, d2[p]);
		Z_FMA(3, d3[p]);
		Z_FMA(4, d4[p]);
		Z_FMA(5, d5[p]);
		Z_FMA(6, d6[p]);
		Z_FMA(7, d7[p]);
	}
	Z_ALL(Z_STORE);
}

/* ---------------------------------------------------------------- AVX2: 4 x 24 */

static const int lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

#define Y_MASKS                                                                                    \
	__m256i m0 = _mm256_loadu_si256((const __m256i *)(lanes + 8 - (cols >= 8 ? 8 : cols)));    \
	__m256i m1 = _mm256_loadu_si256((const __m256i *)(lanes + 8 -                              \
							  (cols >= 16 ? 8                          \
							   : cols > 8 ? cols - 8                   \
								      : 0)));                      \
	__m256i m2 = _mm256_loadu_si256((const __m256i *)(lanes + 8 -                              \
							  (cols >= 24  ? 8                         \
							   : cols > 16 ? cols - 16                 \
								       : 0)))
#define Y_LOAD(i)                                                                                  \
	do {                                                                                       \
		if ((i) < rows) {                                                                  \
			c##i##0 = _mm256_maskload_ps(c + (i)*ldc, m0);                             \
			c##i##1 = _mm256_maskload_ps(c + (i)*ldc + 8, m1);                         \
			c##i##2 = _mm256_maskload_ps(c + (i)*ldc + 16, m2);                        \
		} else {                                                                           \
			c##i##0 = c##i##1 = c##i##2 = _mm256_setzero_ps();                         \
		}                                                                                  \
	} while (0)
#define Y_INIT(i)                                                                                  \
	do {                                                                                       \
		if (bias)                                                                          \
			c##i##0 = c##i##1 = c##i##2 = _mm256_set1_ps(bias[i]);                     \
		else                                                                               \
			Y_LOAD(i);                                                                 \
	} while (0)
#define Y_FMA(i, ai)                                                                               \
	do {                                                                                       \
		__m256 t_ = _mm256_set1_ps(ai);                                                    \
		c##i##0 = _mm256_fmadd_ps(t_, b0, c##i##0);                                        \
		c##i##1 = _mm256_fmadd_ps(t_, b1, c##i##1);                                        \
		c##i##2 = _mm256_fmadd_ps(t_, b2, c##i##2);                                        \
	} while (0)
#define Y_STORE(i)                                                                                 \
	do {                                                                                       \
		if ((i) < rows) {                                                                  \
			if (relu) {                                                                \
				c##i##0 = _mm256_max_ps(c##i##0, zero);                            \
				c##i##1 = _mm256_max_ps(c##i##1, zero);                            \
				c##i##2 = _mm256_max_ps(c##i##2, zero);                            \
			}                                                                          \
			_mm256_maskstore_ps(c + (i)*ldc, m0, c##i##0);                             \
			_mm256_maskstore_ps(c + (i)*ldc + 8, m1, c##i##1);                         \
			_mm256_maskstore_ps(c + (i)*ldc + 16, m2, c##i##2);                        \
		}                                                                                  \
	} while (0)
#define Y_ALL(M)                                                                                   \
	M(0);                                                                                      \
	M(1);                                                                                      \
	M(2);                                                                                      \
	M(3)

__attribute__((target("avx2,fma"))) static void fwd_avx2(int kc, const float *a, const float *b,
							 float *c, size_t ldc, int rows, int cols,
							 const float *bias, int relu)
{
	Y_MASKS;
	__m256 c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;
	__m256 zero = _mm256_setzero_ps();

	Y_ALL(Y_INIT);
	for (int k = 0; k < kc; k++, a += 4, b += 24) {
		__m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
		__m256 b2 = _mm256_loadu_ps(b + 16);

		Y_FMA(0, a[0]);
		Y_FMA(1, a[1]);
		Y_FMA(2, a[2]);
		Y_FMA(3, a[3]);
	}
	Y_ALL(Y_STORE);
}

/*
 * fwd_avx2 with B read straight from the image (see fwd_direct_avx512);
 * the real columns are gathered to the front of each vector by perm[v]
 * (cnt[v] of them) and stored one after another.
 */
#define Y_CSTORE(i)                                                                                \
	do {                                                                                       \
		if ((i) < rows) {                                                                  \
			float *d_ = c + (i)*ldc;                                                   \
			if (relu) {                                                                \
				c##i##0 = _mm256_max_ps(c##i##0, zero);                            \
				c##i##1 = _mm256_max_ps(c##i##1, zero);                            \
				c##i##2 = _mm256_max_ps(c##i##2, zero);                            \
			}                                                                          \
			_mm256_maskstore_ps(d_, s0, _mm256_permutevar8x32_ps(c##i##0, q0));        \
			_mm256_maskstore_ps(d_ + cnt[0], s1,                                       \
					    _mm256_permutevar8x32_ps(c##i##1, q1));                \
			_mm256_maskstore_ps(d_ + cnt[0] + cnt[1], s2,                              \
					    _mm256_permutevar8x32_ps(c##i##2, q2));                \
		}                                                                                  \
	} while (0)

__attribute__((target("avx2,fma"))) static void
fwd_direct_avx2(int kc, const float *const *wr, const float *xb, const int *off, float *c,
		size_t ldc, int rows, int cols, const int *perm, const int *cnt, const float *bias,
		int relu)
{
	const float *w0 = wr[0], *w1 = wr[1], *w2 = wr[2], *w3 = wr[3];
	Y_MASKS;
	__m256 c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;
	__m256 zero = _mm256_setzero_ps();
	__m256i q0 = _mm256_loadu_si256((const __m256i *)perm);
	__m256i q1 = _mm256_loadu_si256((const __m256i *)(perm + 8));
	__m256i q2 = _mm256_loadu_si256((const __m256i *)(perm + 16));
	__m256i s0 = _mm256_loadu_si256((const __m256i *)(lanes + 8 - cnt[0]));
	__m256i s1 = _mm256_loadu_si256((const __m256i *)(lanes + 8 - cnt[1]));
	__m256i s2 = _mm256_loadu_si256((const __m256i *)(lanes + 8 - cnt[2]));

	Y_ALL(Y_INIT);
	if (cols == 24) {
		for (int k = 0; k < kc; k++) {
			const float *b = xb + off[k];
			__m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
			__m256 b2 = _mm256_loadu_ps(b + 16);

			Y_FMA(0, w0[k]);
			Y_FMA(1, w1[k]);
			Y_FMA(2, w2[k]);
			Y_FMA(3, w3[k]);
		}
	} else {
		for (int k = 0; k < kc; k++) {
			const float *b = xb + off[k];
			__m256 b0 = _mm256_maskload_ps(b, m0), b1 = _mm256_maskload_ps(b + 8, m1);
			__m256 b2 = _mm256_maskload_ps(b + 16, m2);

			Y_FMA(0, w0[k]);
			Y_FMA(1, w1[k]);
			Y_FMA(2, w2[k]);
			Y_FMA(3, w3[k]);
		}
	}
	Y_ALL(Y_CSTORE);
}

__attribute__((target("avx2,fma"))) static void
dw_avx2(int np, const float *const *dyr, const float *b, float *c, size_t ldc, int rows, int cols)
{
	Y_MASKS;
	__m256 c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;
	__m256 zero = _mm256_setzero_ps();
	const float *d0 = dyr[0], *d1 = dyr[1], *d2 = dyr[2], *d3 = dyr[3];
	int relu = 0;

	Y_ALL(Y_LOAD);
	for (int p = 0; p < np; p++, b += 24) {
		__m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
		__m256 b2 = _mm256_loadu_ps(b + 16);

		Y_FMA(0, d0[p]);
		Y_FMA(1, d1[p]);
		Y_FMA(2, d2[p]);
		Y_FMA(3, d3[p]);
	}
	Y_ALL(Y_STORE);
}
#endif

static const struct path paths[] = {
#if defined(__x86_64__)
    {"avx512", 8, 32, fwd_avx512, dw_avx512},
    {"avx2", 4, 24, fwd_avx2, dw_avx2},
#endif
    {"portable", 4, 16, fwd_portable, dw_portable},
};

/* The path of the f32 GEMM's kernel (MCOMP_GEMM forces both); plain C for any other name. */
static const struct path *path(void)
{
	const char *name = mc_sgemm_kernel();

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (!strcmp(paths[i].name, name))
			return &paths[i];
	return &paths[sizeof(paths) / sizeof(paths[0]) - 1];
}

/* A hint that the line at p is read soon (nothing where there is no such instruction). */
static inline void prefetch(const void *p)
{
	__builtin_prefetch(p, 0, 3);
}

static size_t align16(size_t v)
{
	return (v + 15) & ~(size_t)15;
}

static int threads(double macs, int units)
{
	int nt = omp_in_parallel() || macs < PAR_MIN ? 1 : omp_get_max_threads();

	if (nt > SLOTS)
		nt = SLOTS;
	return nt < units ? nt : units;
}

/* ---------------------------------------------------------------- forward */

/* A run of a strip's columns in one output row: columns jj .. jj + len - 1 are (n, oh, ow ..). */
struct run {
	int jj, len, n, oh, ow;
};

/* The runs of columns [j0, j1) of the batch, at most NRMAX + 1. */
static int strip_runs(const struct mc_convf *cv, int64_t j0, int64_t j1, struct run *r)
{
	int64_t P = (int64_t)cv->OH * cv->OW;
	int nr = 0;

	for (int64_t j = j0; j < j1;) {
		int64_t pos = j % P;
		int oh = (int)(pos / cv->OW), ow = (int)(pos % cv->OW);
		int len = cv->OW - ow < j1 - j ? cv->OW - ow : (int)(j1 - j);

		r[nr++] = (struct run){(int)(j - j0), len, (int)(j / P), oh, ow};
		j += len;
	}
	return nr;
}

/*
 * b[kk][jj] (row stride nr), kk < kc: rows k0 .. k0 + kc - 1 of the windows
 * of the strip's runs; taps in the padding, and columns past the runs, 0.
 */
static void pack_strip(const struct mc_convf *cv, const float *x, const struct run *r, int nrun,
		       int width, int k0, int kc, int nr, float *b)
{
	const int k = cv->k, s = cv->s, p = cv->p, H = cv->H, W = cv->W;
	int c = k0 / (k * k), ki = k0 / k % k, kj = k0 % k;

	for (int kk = 0; kk < kc; kk++, b += nr) {
		const float *img = x + (size_t)c * H * W;
		/* outputs ow whose tap ow * s - p + kj lies in [0, W) */
		int lo = p - kj > 0 ? (p - kj + s - 1) / s : 0;
		int hi = (W - 1 + p - kj) >= 0 ? (W - 1 + p - kj) / s + 1 : 0;

		for (int i = 0; i < nrun; i++) {
			float *d = b + r[i].jj;
			int h = r[i].oh * s - p + ki, a = r[i].ow, e = r[i].ow + r[i].len;
			int va = a > lo ? a : lo, ve = e < hi ? e : hi;
			const float *src;

			if (h < 0 || h >= H || ve <= va) {
				memset(d, 0, (size_t)r[i].len * sizeof(float));
				continue;
			}
			src = img + (size_t)r[i].n * cv->xs + (size_t)h * W - p + kj;
			if (va > a)
				memset(d, 0, (size_t)(va - a) * sizeof(float));
			if (s == 1)
				memcpy(d + (va - a), src + va, (size_t)(ve - va) * sizeof(float));
			else
				for (int ow = va; ow < ve; ow++)
					d[ow - a] = src[(size_t)ow * s];
			if (ve < e)
				memset(d + (ve - a), 0, (size_t)(e - ve) * sizeof(float));
		}
		if (width < nr)
			memset(b + width, 0, (size_t)(nr - width) * sizeof(float));
		if (++kj == k) {
			kj = 0;
			if (++ki == k) {
				ki = 0;
				c++;
			}
		}
	}
}

#if defined(__x86_64__)
/*
 * pack_strip for stride 1 with AVX-512: each run's row is one or two
 * masked copies (a run is at most NRMAX = 32 columns), the padding masked
 * out to zeros. The same values as pack_strip.
 */
__attribute__((target("avx512f"))) static void
pack_strip_avx512(const struct mc_convf *cv, const float *x, const struct run *r, int nrun,
		  int width, int k0, int kc, int nr, float *b)
{
	const int k = cv->k, p = cv->p, H = cv->H, W = cv->W;
	int c = k0 / (k * k), ki = k0 / k % k, kj = k0 % k;
	const float *base[NRMAX + 1];

	for (int i = 0; i < nrun; i++)
		base[i] = x + (size_t)r[i].n * cv->xs;
	for (int kk = 0; kk < kc; kk++, b += nr) {
		size_t plane = (size_t)c * H * W;
		int lo = p - kj > 0 ? p - kj : 0, hi = W + p - kj;

		for (int i = 0; i < nrun; i++) {
			float *d = b + r[i].jj;
			int h = r[i].oh - p + ki, a = r[i].ow, e = r[i].ow + r[i].len;
			int va = a > lo ? a : lo, ve = e < hi ? e : hi;
			const float *src = base[i] + plane + (size_t)h * W - p + kj + a;
			uint32_t m = 0;
			__mmask16 m0, m1;

			/* lanes t < len whose column a + t is inside the image row */
			if (h >= 0 && h < H && ve > va)
				m = (uint32_t)(((uint64_t)1 << (ve - a)) -
					       ((uint64_t)1 << (va - a)));
			m0 = (__mmask16)m;
			m1 = (__mmask16)(m >> 16);
			_mm512_mask_storeu_ps(
			    d, (__mmask16)((1u << (r[i].len < 16 ? r[i].len : 16)) - 1),
			    _mm512_maskz_loadu_ps(m0, src));
			if (r[i].len > 16)
				_mm512_mask_storeu_ps(d + 16,
						      (__mmask16)((1u << (r[i].len - 16)) - 1),
						      _mm512_maskz_loadu_ps(m1, src + 16));
		}
		if (width < nr)
			memset(b + width, 0, (size_t)(nr - width) * sizeof(float));
		if (++kj == k) {
			kj = 0;
			if (++ki == k) {
				ki = 0;
				c++;
			}
		}
	}
}
#endif

/*
 * The image the direct forward reads for one sample: for stride 1 the
 * padded image, [C][Hp][Wp]; for stride 2 the padded image split by row
 * and column phase, ph = min(s, k) of each: planes [C][ph][ph][Hq][Wq],
 * plane (c, a, b) holding padded (s i + a, s j + b) at row i, column j.
 * The values of tap (c, ki, kj) for outputs (oh, ow ..) are then
 * consecutive floats at row oh + ki / s, column ow + kj / s of plane
 * (c, ki % s, kj % s), as they are with stride 1: the same kernels run.
 */
struct planes {
	int ph, Hq, Wq;
	size_t floats;
};

static struct planes planes(const struct mc_convf *cv)
{
	struct planes g;

	g.ph = cv->s < cv->k ? cv->s : cv->k;
	g.Hq = cv->OH + (cv->k - 1) / cv->s;
	g.Wq = cv->OW + (cv->k - 1) / cv->s;
	g.floats = (size_t)cv->C * g.ph * g.ph * (size_t)g.Hq * g.Wq;
	return g;
}

/* Floats of the row buffer image() needs for stride 2: the padded row, rounded up to 32. */
static size_t split_row_floats(const struct mc_convf *cv, const struct planes *g)
{
	size_t wp = (size_t)cv->W + 2 * (size_t)cv->p, w2 = 2 * (size_t)g->Wq;

	return ((wp > w2 ? wp : w2) + 31) & ~(size_t)31;
}

#if defined(__x86_64__)
/* d0[j] = t[2 j], and with d1, d1[j] = t[2 j + 1], j < n (t readable to 2 n rounded up to 32) */
__attribute__((target("avx512f"))) static void split2_avx512(const float *t, int n, float *d0,
							     float *d1)
{
	const __m512i even =
	    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
	const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));

	for (int j = 0; j < n; j += 16) {
		__mmask16 m = n - j >= 16 ? 0xffff : (__mmask16)((1u << (n - j)) - 1);
		__m512 v0 = _mm512_loadu_ps(t + 2 * j), v1 = _mm512_loadu_ps(t + 2 * j + 16);

		_mm512_mask_storeu_ps(d0 + j, m, _mm512_permutex2var_ps(v0, even, v1));
		if (d1)
			_mm512_mask_storeu_ps(d1 + j, m, _mm512_permutex2var_ps(v0, odd, v1));
	}
}

__attribute__((target("avx2"))) static void split2_avx2(const float *t, int n, float *d0, float *d1)
{
	for (int j = 0; j < n; j += 8) {
		__m256 a = _mm256_loadu_ps(t + 2 * j), b = _mm256_loadu_ps(t + 2 * j + 8);
		/* a0 a2 b0 b2 | a4 a6 b4 b6, then the middle quarters swapped */
		__m256 e = _mm256_castpd_ps(
		    _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xd8));
		__m256 o = _mm256_castpd_ps(
		    _mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xdd)), 0xd8));

		if (n - j >= 8) {
			_mm256_storeu_ps(d0 + j, e);
			if (d1)
				_mm256_storeu_ps(d1 + j, o);
		} else {
			__m256i m = _mm256_loadu_si256((const __m256i *)(lanes + 8 - (n - j)));

			_mm256_maskstore_ps(d0 + j, m, e);
			if (d1)
				_mm256_maskstore_ps(d1 + j, m, o);
		}
	}
}
#endif

/*
 * xp = the image of sample xs (struct planes), zeros where the padding is;
 * t is a row buffer of split_row_floats() for stride 2. Moves only: the
 * values are the image's.
 */
static void image(const struct mc_convf *cv, const struct planes *g, const float *xs, float *xp,
		  float *t, int avx512)
{
	const int C = cv->C, H = cv->H, W = cv->W, p = cv->p, ph = g->ph, Hq = g->Hq, Wq = g->Wq;
	const size_t plane = (size_t)Hq * Wq;
	size_t tl;

	if (cv->s == 1) {
		memset(xp, 0, g->floats * sizeof(float));
		for (int c = 0; c < C; c++)
			for (int h = 0; h < H; h++)
				memcpy(xp + ((size_t)c * Hq + h + p) * Wq + p,
				       xs + ((size_t)c * H + h) * W, (size_t)W * sizeof(float));
		return;
	}
	/* stride 2: each padded row in t (its padding zeroed once), split into its phases */
	tl = split_row_floats(cv, g);
	memset(t, 0, tl * sizeof(float));
	for (int c = 0; c < C; c++)
		for (int a = 0; a < ph; a++)
			for (int i = 0; i < Hq; i++) {
				float *d0 = xp + (size_t)(c * ph + a) * ph * plane + (size_t)i * Wq;
				float *d1 = ph > 1 ? d0 + plane : NULL;
				int h = 2 * i + a - p;

				if (h < 0 || h >= H) {
					memset(d0, 0, (size_t)Wq * sizeof(float));
					if (d1)
						memset(d1, 0, (size_t)Wq * sizeof(float));
					continue;
				}
				memcpy(t + p, xs + ((size_t)c * H + h) * W,
				       (size_t)W * sizeof(float));
#if defined(__x86_64__)
				(avx512 ? split2_avx512 : split2_avx2)(t, Wq, d0, d1);
#else
				(void)avx512;
				for (int j = 0; j < Wq; j++) {
					d0[j] = t[2 * j];
					if (d1)
						d1[j] = t[2 * j + 1];
				}
#endif
			}
}

static int kblocks(int K)
{
	return (K + KCMAX - 1) / KCMAX;
}

/* Floats of one thread's slot: a packed block and a tile buffer, or a tile buffer and a padded
 * image. */
static size_t slot_floats(const struct mc_convf *cv)
{
	size_t op = (size_t)cv->O + MRMAX;
	size_t img = planes(cv).floats;
	size_t pack = align16((size_t)KCMAX * NRMAX) + align16(op * NRMAX);
	size_t direct = align16((size_t)cv->O * cv->OH * cv->OW) + align16(img) +
			align16((size_t)KPMAX * NRMAX);

	return pack > direct ? pack : direct;
}

size_t mc_convf_work(const struct mc_convf *cv)
{
	size_t K = (size_t)cv->C * cv->k * cv->k, op = (size_t)cv->O + MRMAX, total;

	/* packed weights and bias, the slots, then the direct kernel's offsets (of the image
	 * and of a packed block) */
	if (K > SIZE_MAX / 8 / op ||
	    (size_t)cv->C * (cv->H + 2 * cv->p) >
		SIZE_MAX / 64 / SLOTS / ((size_t)cv->W + 2 * cv->p + op) ||
	    (size_t)cv->O * cv->OH > SIZE_MAX / 64 / SLOTS / ((size_t)cv->OW + 1))
		return SIZE_MAX;
	total = align16(op * K) + align16(op) + SLOTS * slot_floats(cv) + align16(K + KPMAX);
	return total > SIZE_MAX / sizeof(float) ? SIZE_MAX : total * sizeof(float);
}

/* a[O/mr][K][mr] (rows past O zero) and bias[O/mr * mr]. */
static void pack_weights(const float *w, const float *bias, int O, int K, int mr, float *a,
			 float *pb)
{
	for (int o0 = 0; o0 < O; o0 += mr, a += (size_t)K * mr)
		for (int k = 0; k < K; k++)
			for (int i = 0; i < mr; i++)
				a[(size_t)k * mr + i] =
				    o0 + i < O ? w[(size_t)(o0 + i) * K + k] : 0.0f;
	for (int o = 0; o < (O + mr - 1) / mr * mr; o++)
		pb[o] = bias && o < O ? bias[o] : 0.0f;
}

#if defined(__x86_64__)
/*
 * Wide index of output position q in the (padded) image: the tap-0 value of
 * (oh, ow) is at oh * Wp + ow, of tap k at that + off[k].
 */
static int wide(int q, int OW, int Wp)
{
	return q / OW * Wp + q % OW;
}

/* 1 when any 16 consecutive output positions lie within 32 consecutive wide columns. */
static int packable(int OW, int Wp)
{
	return 15 + (Wp - OW) * ((15 + OW - 1) / OW) < 32;
}

/*
 * b[kk][0..32), kk < kc: the window values of taps k0 + kk (off[kk] from
 * the image's origin) at the cols <= 32 real output positions q0 .. of a
 * sample at xs (padded, Wp wide). Each half of 16 positions spans at most
 * 32 floats of the image (packable): two masked loads (no float past the
 * span is read) and a two-source permute put them in order. Lanes past
 * cols hold values never stored.
 */
__attribute__((target("avx512f"))) static void pack_real_avx512(const float *xs, const int *off,
								int OW, int Wp, int q0, int cols,
								int kc, float *b)
{
	int32_t idx[32];
	int base[2] = {0, 0};
	__mmask16 lo[2] = {0, 0}, hi[2] = {0, 0};
	__m512i ix0, ix1;

	for (int h = 0; h < 2; h++) {
		int n = cols - 16 * h < 16 ? cols - 16 * h : 16, span;

		if (n <= 0) {
			memset(idx + 16 * h, 0, 16 * sizeof(int32_t));
			continue;
		}
		base[h] = wide(q0 + 16 * h, OW, Wp);
		for (int l = 0; l < 16; l++)
			idx[16 * h + l] = l < n ? wide(q0 + 16 * h + l, OW, Wp) - base[h] : 0;
		span = idx[16 * h + n - 1] + 1;
		lo[h] = span >= 16 ? 0xffff : (__mmask16)((1u << span) - 1);
		hi[h] = span > 16 ? (__mmask16)((1u << (span - 16)) - 1) : 0;
	}
	ix0 = _mm512_loadu_si512(idx);
	ix1 = _mm512_loadu_si512(idx + 16);
	for (int kk = 0; kk < kc; kk++, b += 32) {
		const float *s0 = xs + off[kk] + base[0], *s1 = xs + off[kk] + base[1];

		_mm512_storeu_ps(b, _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo[0], s0), ix0,
							   _mm512_maskz_loadu_ps(hi[0], s0 + 16)));
		_mm512_storeu_ps(b + 16,
				 _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo[1], s1), ix1,
							_mm512_maskz_loadu_ps(hi[1], s1 + 16)));
	}
}
#endif

#if defined(__x86_64__)
/*
 * A first layer (one input channel, 3x3, stride 1) with relu and a 2x2,
 * stride 2 max pool after it, on AVX-512, one sample: nothing but the
 * pooled values is stored. Lanes are 16 pooled columns of a pooled row;
 * for each of 4 output channels, four accumulators hold the window's four
 * outputs (a b / c d). Each output is its chain (bias, the 9 taps in order,
 * relu as max(y, 0)); the pool then takes m = a, b, c, d in order, each
 * where it is greater (vmaxps, as maxpool2_row_avx512), so the bits of
 * conv, relu and pool one after the other.
 *
 * A tap's values for the 16 windows are every other column of an image
 * row: the image rows are first split into even and odd columns (de: two
 * planes [Hp][wd], zero past the row), after which they are consecutive.
 */
__attribute__((target("avx512f,fma"))) static void conv1_pool_avx512(const float *xs, int Hp,
								     int Wp, const float *w,
								     const float *pb, int O, int PH,
								     int PW, float *out, float *de)
{
	const int wd = (PW + 15) / 16 * 16 + 16;
	const __m512i even =
	    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
	const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
	const __m512 zero = _mm512_setzero_ps();
	float *dp[2] = {de, de + (size_t)Hp * wd};

	for (int r = 0; r < Hp; r++)
		for (int j0 = 0; j0 < wd; j0 += 16) {
			int left = Wp - 2 * j0;
			__mmask16 l0 = left >= 16 ? 0xffff
				       : left > 0 ? (__mmask16)((1u << left) - 1)
						  : 0;
			__mmask16 l1 = left >= 32  ? 0xffff
				       : left > 16 ? (__mmask16)((1u << (left - 16)) - 1)
						   : 0;
			const float *src = xs + (size_t)r * Wp + 2 * j0;
			__m512 v0 = _mm512_maskz_loadu_ps(l0, src),
			       v1 = _mm512_maskz_loadu_ps(l1, src + 16);

			_mm512_storeu_ps(dp[0] + (size_t)r * wd + j0,
					 _mm512_permutex2var_ps(v0, even, v1));
			_mm512_storeu_ps(dp[1] + (size_t)r * wd + j0,
					 _mm512_permutex2var_ps(v0, odd, v1));
		}
	for (int ph = 0; ph < PH; ph++)
		for (int pw0 = 0; pw0 < PW; pw0 += 16) {
			__mmask16 st =
			    PW - pw0 >= 16 ? 0xffff : (__mmask16)((1u << (PW - pw0)) - 1);

			for (int o0 = 0; o0 < O; o0 += 4) {
				int rows = O - o0 < 4 ? O - o0 : 4;
				const float *wr[4];
				__m512 a[4], b[4], c[4], d[4];

				for (int i = 0; i < 4; i++) {
					wr[i] = w + (size_t)(o0 + (i < rows ? i : 0)) * 9;
					a[i] = b[i] = c[i] = d[i] =
					    _mm512_set1_ps(pb[o0 + (i < rows ? i : 0)]);
				}
#pragma GCC unroll 3
				for (int ki = 0; ki < 3; ki++) {
#pragma GCC unroll 3
					for (int kj = 0; kj < 3; kj++) {
						/* column 2 pw + dx + kj of rows 2 ph + dy + ki */
						size_t row0 = (size_t)(2 * ph + ki) * wd + pw0,
						       row1 = row0 + wd;
						__m512 va =
						    _mm512_loadu_ps(dp[kj & 1] + row0 + kj / 2);
						__m512 vb = _mm512_loadu_ps(dp[(kj + 1) & 1] +
									    row0 + (kj + 1) / 2);
						__m512 vc =
						    _mm512_loadu_ps(dp[kj & 1] + row1 + kj / 2);
						__m512 vd = _mm512_loadu_ps(dp[(kj + 1) & 1] +
									    row1 + (kj + 1) / 2);

#pragma GCC unroll 4
						for (int i = 0; i < 4; i++) {
							__m512 t =
							    _mm512_set1_ps(wr[i][ki * 3 + kj]);

							a[i] = _mm512_fmadd_ps(t, va, a[i]);
							b[i] = _mm512_fmadd_ps(t, vb, b[i]);
							c[i] = _mm512_fmadd_ps(t, vc, c[i]);
							d[i] = _mm512_fmadd_ps(t, vd, d[i]);
						}
					}
				}
				for (int i = 0; i < rows; i++) {
					__m512 m = _mm512_max_ps(a[i], zero);

					m = _mm512_max_ps(_mm512_max_ps(b[i], zero), m);
					m = _mm512_max_ps(_mm512_max_ps(c[i], zero), m);
					m = _mm512_max_ps(_mm512_max_ps(d[i], zero), m);
					_mm512_mask_storeu_ps(
					    out + ((size_t)(o0 + i) * PH + ph) * PW + pw0, st, m);
				}
			}
		}
}

/*
 * conv1_pool_avx512 on AVX2: 8 pooled columns a vector, 2 output channels
 * at a time (8 accumulators); the image split into even and odd columns
 * (planes [Hp][wd]) in plain C. The same chains and comparisons.
 */
__attribute__((target("avx2,fma"))) static void conv1_pool_avx2(const float *xs, int Hp, int Wp,
								const float *w, const float *pb,
								int O, int PH, int PW, float *out,
								float *de)
{
	const int wd = (PW + 7) / 8 * 8 + 8;
	const __m256 zero = _mm256_setzero_ps();
	float *dp[2] = {de, de + (size_t)Hp * wd};

	for (int r = 0; r < Hp; r++)
		for (int j = 0; j < wd; j++) {
			dp[0][(size_t)r * wd + j] = 2 * j < Wp ? xs[(size_t)r * Wp + 2 * j] : 0.0f;
			dp[1][(size_t)r * wd + j] =
			    2 * j + 1 < Wp ? xs[(size_t)r * Wp + 2 * j + 1] : 0.0f;
		}
	for (int ph = 0; ph < PH; ph++)
		for (int pw0 = 0; pw0 < PW; pw0 += 8) {
			__m256i st = _mm256_loadu_si256(
			    (const __m256i *)(lanes + 8 - (PW - pw0 < 8 ? PW - pw0 : 8)));

			for (int o0 = 0; o0 < O; o0 += 2) {
				int rows = O - o0 < 2 ? O - o0 : 2;
				const float *wr[2];
				__m256 a[2], b[2], c[2], d[2];

				for (int i = 0; i < 2; i++) {
					wr[i] = w + (size_t)(o0 + (i < rows ? i : 0)) * 9;
					a[i] = b[i] = c[i] = d[i] =
					    _mm256_set1_ps(pb[o0 + (i < rows ? i : 0)]);
				}
#pragma GCC unroll 3
				for (int ki = 0; ki < 3; ki++) {
#pragma GCC unroll 3
					for (int kj = 0; kj < 3; kj++) {
						size_t row0 = (size_t)(2 * ph + ki) * wd + pw0,
						       row1 = row0 + wd;
						__m256 va =
						    _mm256_loadu_ps(dp[kj & 1] + row0 + kj / 2);
						__m256 vb = _mm256_loadu_ps(dp[(kj + 1) & 1] +
									    row0 + (kj + 1) / 2);
						__m256 vc =
						    _mm256_loadu_ps(dp[kj & 1] + row1 + kj / 2);
						__m256 vd = _mm256_loadu_ps(dp[(kj + 1) & 1] +
									    row1 + (kj + 1) / 2);

#pragma GCC unroll 2
						for (int i = 0; i < 2; i++) {
							__m256 t =
							    _mm256_set1_ps(wr[i][ki * 3 + kj]);

							a[i] = _mm256_fmadd_ps(t, va, a[i]);
							b[i] = _mm256_fmadd_ps(t, vb, b[i]);
							c[i] = _mm256_fmadd_ps(t, vc, c[i]);
							d[i] = _mm256_fmadd_ps(t, vd, d[i]);
						}
					}
				}
				for (int i = 0; i < rows; i++) {
					__m256 m = _mm256_max_ps(a[i], zero);

					m = _mm256_max_ps(_mm256_max_ps(b[i], zero), m);
					m = _mm256_max_ps(_mm256_max_ps(c[i], zero), m);
					m = _mm256_max_ps(_mm256_max_ps(d[i], zero), m);
					_mm256_maskstore_ps(
					    out + ((size_t)(o0 + i) * PH + ph) * PW + pw0, st, m);
				}
			}
		}
}
#endif

/*
 * Stride 1 and 2 on AVX-512 and AVX2 (the wide path): no packing. Output
 * positions are taken "wide", a row of Wq columns of the image (struct
 * planes; Wq = W + 2p for stride 1) per output row of which the first OW
 * are real, so that the window values of tap (c, ki, kj) for consecutive
 * wide columns j are consecutive floats of the image, at j + off[k]: with
 * stride 1 off[k] = (c * Hq + ki) * Wq + kj, with stride 2 row ki / 2 and
 * column kj / 2 of the tap's phase plane. The kernel reads them there; the
 * columns past OW cost work and are dropped as the tile is stored. A task
 * is one sample (and, for a small batch, a share of the channel panels);
 * with padding or stride 2, the task first writes its sample's image into
 * its own slot.
 */
/* A strip of wide columns: which are real, where the first goes, and (AVX2) how to gather them. */
struct strip {
	int64_t first;
	uint32_t valid;
	int perm[24], cnt[3];
};

#define NSTRIPS 64 /* strips whose masks are worked out once per call */

static void strip_masks(const struct mc_convf *cv, int Wp, int64_t j0, int width, int avx512,
			struct strip *st)
{
	st->first = -1;
	st->valid = 0;
	for (int jj = 0, oh = (int)(j0 / Wp), ow = (int)(j0 % Wp); jj < width; jj++) {
		if (ow < cv->OW) {
			st->valid |= 1u << jj;
			if (st->first < 0)
				st->first = (int64_t)oh * cv->OW + ow;
		}
		if (++ow == Wp) {
			ow = 0;
			oh++;
		}
	}
	if (avx512)
		return;
	/* per vector of 8 columns: where its real ones come from, and how many */
	for (int v = 0; v < 3; v++) {
		int m = 0;

		for (int l = 0; l < 8; l++)
			if (st->valid >> (8 * v + l) & 1)
				st->perm[8 * v + m++] = l;
		st->cnt[v] = m;
		while (m < 8)
			st->perm[8 * v + m++] = 0;
	}
}

/* The epilogue over samples written to y. */
/* The epilogue over each sample of y, or its part over [O][q] per sample (q = OH * OW: fn). */
static void run_epi(const struct mc_convf *cv, int n, const float *y,
		    const struct mc_convf_epi *epi, int64_t q)
{
	int nt = threads((double)n * cv->O * cv->OH * cv->OW * 8, n);
	void (*fn)(void *, int, const float *) = q < (int64_t)cv->OH * cv->OW ? epi->part : epi->fn;

#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
	for (int s = 0; s < n; s++)
		fn(epi->ctx, s, y + (size_t)s * cv->ys);
}

/* packable for AVX2: any 8 consecutive output positions lie within 16 consecutive wide columns. */
static int packable8(int OW, int Wp)
{
	return 7 + (Wp - OW) * ((7 + OW - 1) / OW) < 16;
}

/*
 * pack_real_avx512 on AVX2, strips of 24 (b rows of 24): each 8 positions
 * span at most 16 floats of the image (packable8): two masked loads, a
 * permute of each and a blend.
 */
__attribute__((target("avx2"))) static void pack_real_avx2(const float *xs, const int *off, int OW,
							   int Wp, int q0, int cols, int kc,
							   float *b, const float *xend)
{
	int32_t idx[24];
	int base[3] = {0, 0, 0};
	__m256i lo[3], hi[3], ix[3], sel[3];

	for (int h = 0; h < 3; h++) {
		int n = cols - 8 * h < 8 ? cols - 8 * h : 8, span = 1;

		if (n > 0) {
			base[h] = wide(q0 + 8 * h, OW, Wp);
			for (int l = 0; l < 8; l++)
				idx[8 * h + l] = l < n ? wide(q0 + 8 * h + l, OW, Wp) - base[h] : 0;
			span = idx[8 * h + n - 1] + 1;
		} else {
			for (int l = 0; l < 8; l++)
				idx[8 * h + l] = 0;
		}
		lo[h] = _mm256_loadu_si256((const __m256i *)(lanes + 8 - (span < 8 ? span : 8)));
		hi[h] =
		    _mm256_loadu_si256((const __m256i *)(lanes + 8 - (span > 8 ? span - 8 : 0)));
		ix[h] = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(idx + 8 * h)),
					 _mm256_set1_epi32(7));
		sel[h] = _mm256_cmpgt_epi32(_mm256_loadu_si256((const __m256i *)(idx + 8 * h)),
					    _mm256_set1_epi32(7));
	}
	for (int kk = 0; kk < kc; kk++, b += 24)
		for (int h = 0; h < 3; h++) {
			const float *src = xs + off[kk] + base[h];
			__m256 v0, v1;

			/* whole loads where they stay inside the image (the lanes past the span
			 * are not used; masked loads cost more) */
			if (src + 16 <= xend) {
				v0 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(src), ix[h]);
				v1 = _mm256_permutevar8x32_ps(_mm256_loadu_ps(src + 8), ix[h]);
			} else {
				v0 =
				    _mm256_permutevar8x32_ps(_mm256_maskload_ps(src, lo[h]), ix[h]);
				v1 = _mm256_permutevar8x32_ps(_mm256_maskload_ps(src + 8, hi[h]),
							      ix[h]);
			}
			_mm256_storeu_ps(b + 8 * h,
					 _mm256_blendv_ps(v0, v1, _mm256_castsi256_ps(sel[h])));
		}
}

/* sample_packed on AVX2: strips of 24 real positions, 4-row panels (fwd_direct_avx2). */
__attribute__((target("avx2,fma"))) static void
sample_packed_avx2(const struct mc_convf *cv, const float *xs, const float *w, const float *pb,
		   int relu, float *ys, int rh, int rw, int Wp, int p0, int p1, const int *off,
		   const int *offb, float *bk, const char *nx, const float *xend)
{
	static const int ident[24] = {0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3,
				      4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7};
	const int O = cv->O, K = cv->C * cv->k * cv->k, mr = 4;
	const int Q = rh * rw, nstrips = (Q + 23) / 24;
	size_t lines = (size_t)cv->xs * sizeof(float) / 64 + 1, done = 0;

	for (int q0 = 0, si = 0; q0 < Q; q0 += 24, si++) {
		int cols = Q - q0 < 24 ? Q - q0 : 24, cnt[3];

		for (size_t to = nx ? lines * (size_t)(si + 1) / (size_t)nstrips : 0; done < to;
		     done++)
			prefetch(nx + done * 64);
		for (int v = 0; v < 3; v++)
			cnt[v] = cols - 8 * v >= 8 ? 8 : cols - 8 * v > 0 ? cols - 8 * v : 0;
		pack_real_avx2(xs, off, rw, Wp, q0, cols, K, bk, xend);
		for (int pi = p0; pi < p1; pi++) {
			int o0 = pi * mr, rows = O - o0 < mr ? O - o0 : mr;
			const float *wr[MRMAX];

			for (int i = 0; i < mr; i++)
				wr[i] = w + (size_t)(o0 + (i < rows ? i : 0)) * K;
			fwd_direct_avx2(K, wr, bk, offb, ys + (size_t)o0 * Q + q0, (size_t)Q, rows,
					cols, ident, cnt, pb + o0, relu);
		}
	}
}

/*
 * The last cols <= 4 output positions of a sample (wide indices at[0..4))
 * with the channels in lanes instead: 4 vectors of 16 channels (of
 * wt [K][O], the weights transposed) x 4 positions, each tap's value
 * broadcast from the image: a 16-lane strip for 4 positions would do four
 * times the work. The same chains (bias, taps in order, relu); each
 * channel's values are scattered to ys[o][q0 ..] (row stride ldc).
 */
__attribute__((target("avx512f,fma"))) static void
tail4_avx512(int K, const float *wt, int O, const float *xs, const int *off, const int *at,
	     int cols, const float *pb, int relu, float *ys, size_t ldc)
{
	const __m512 zero = _mm512_setzero_ps();
	const __m512i lane =
	    _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	const int a0 = at[0], a1 = at[1], a2 = at[2], a3 = at[3];

	for (int o0 = 0; o0 < O; o0 += 64) {
		__mmask16 m[4];
		__m512 acc[4][4];

		for (int v = 0; v < 4; v++) {
			int r = O - o0 - 16 * v;

			m[v] = r >= 16 ? 0xffff : r > 0 ? (__mmask16)((1u << r) - 1) : 0;
			acc[v][0] = acc[v][1] = acc[v][2] = acc[v][3] =
			    _mm512_maskz_loadu_ps(m[v], pb + o0 + 16 * v);
		}
		for (int k = 0; k < K; k++) {
			const float *xk = xs + off[k], *wk = wt + (size_t)k * O + o0;
			__m512 b0 = _mm512_set1_ps(xk[a0]), b1 = _mm512_set1_ps(xk[a1]);
			__m512 b2 = _mm512_set1_ps(xk[a2]), b3 = _mm512_set1_ps(xk[a3]);

#pragma GCC unroll 4
			for (int v = 0; v < 4; v++) {
				__m512 wv = _mm512_maskz_loadu_ps(m[v], wk + 16 * v);

				acc[v][0] = _mm512_fmadd_ps(wv, b0, acc[v][0]);
				acc[v][1] = _mm512_fmadd_ps(wv, b1, acc[v][1]);
				acc[v][2] = _mm512_fmadd_ps(wv, b2, acc[v][2]);
				acc[v][3] = _mm512_fmadd_ps(wv, b3, acc[v][3]);
			}
		}
		for (int v = 0; v < 4; v++) {
			__m512i idx = _mm512_mullo_epi32(
			    _mm512_add_epi32(lane, _mm512_set1_epi32(o0 + 16 * v)),
			    _mm512_set1_epi32((int)ldc));

			for (int j = 0; j < cols; j++)
				_mm512_mask_i32scatter_ps(
				    ys + j, m[v], idx,
				    relu ? _mm512_max_ps(acc[v][j], zero) : acc[v][j], 4);
		}
	}
}

/*
 * The packed path of one task (sample s, panels p0 .. p1 - 1, image at xs):
 * strips of NRMAX real output positions q = (q / rw, q % rw), rw columns of
 * rh rows, each packed whole (K <= KPMAX) from the image, every panel run
 * over it; tile rows go to ys [O][rh * rw]. The next sample's image (nx,
 * when not NULL) is prefetched a share per strip.
 */
__attribute__((target("avx512f"))) static void
sample_packed(const struct mc_convf *cv, const float *xs, const float *w, const float *pb, int relu,
	      float *ys, int rh, int rw, int Wp, int p0, int p1, const int *off, const int *offb,
	      float *bk, const char *nx, const float *wt)
{
	const int O = cv->O, K = cv->C * cv->k * cv->k, mr = 8;
	const int Q = rh * rw, nstrips = (Q + NRMAX - 1) / NRMAX;
	size_t lines = (size_t)cv->xs * sizeof(float) / 64 + 1, done = 0;

	for (int q0 = 0, si = 0; q0 < Q; q0 += NRMAX, si++) {
		int cols = Q - q0 < NRMAX ? Q - q0 : NRMAX;
		uint32_t valid = cols == 32 ? 0xffffffffu : (1u << cols) - 1;

		for (size_t to = nx ? lines * (size_t)(si + 1) / (size_t)nstrips : 0; done < to;
		     done++)
			prefetch(nx + done * 64);
		if (cols <= 4 && wt) {
			int at[4];

			for (int j = 0; j < 4; j++)
				at[j] = wide(q0 + (j < cols ? j : cols - 1), rw, Wp);
			tail4_avx512(K, wt, O, xs, off, at, cols, pb, relu, ys + q0, (size_t)Q);
			continue;
		}
		pack_real_avx512(xs, off, rw, Wp, q0, cols, K, bk);
		for (int pi = p0; pi < p1; pi++) {
			int o0 = pi * mr, rows = O - o0 < mr ? O - o0 : mr;
			const float *wr[MRMAX];

			/* the panel's weight rows as they are; rows past O repeat row o0 */
			for (int i = 0; i < mr; i++)
				wr[i] = w + (size_t)(o0 + (i < rows ? i : 0)) * K;
			/* a narrow last strip: half the work */
			(cols <= 16 ? fwd_direct16_avx512 : fwd_direct_avx512)(
			    K, wr, bk, offb, ys + (size_t)o0 * Q + q0, (size_t)Q, rows, cols, valid,
			    pb + o0, relu);
		}
	}
}

/* Columns computed for m of them in strips of nr (a last one of at most 16 in 16 on AVX-512). */
static int64_t strip_cols(int64_t m, int nr, int avx512)
{
	int64_t tail = m % nr;

	return m - tail + (tail == 0 ? 0 : avx512 && tail <= 16 ? 16 : nr);
}

static void forward_direct(const struct mc_convf *cv, int n, const float *x, const float *w,
			   const float *pb, int relu, float *y, float *slots, size_t slot, int mr,
			   int nr, int *off, int avx512, float *wt, const struct mc_convf_epi *epi)
{
	const int O = cv->O, K = cv->C * cv->k * cv->k, p = cv->p, OW = cv->OW;
	const struct planes g = planes(cv);
	const int Hq = g.Hq, Wq = g.Wq, ph = g.ph, S = cv->s, panels = (O + mr - 1) / mr;
	const int64_t P = (int64_t)cv->OH * OW, jw = (int64_t)(cv->OH - 1) * Wq + OW;
	const int copy = p || S > 1;
	int osplit = 1, nt, packed = 0, pooled = 0, rh = cv->OH, rw = OW, *offb = off + K;

	struct strip strips[NSTRIPS];

	for (int kk = 0; kk < K; kk++) {
		int c = kk / (cv->k * cv->k), ki = kk / cv->k % cv->k, kj = kk % cv->k;

		off[kk] = (((c * ph + ki % S) * ph + kj % S) * Hq + ki / S) * Wq + kj / S;
	}
	/* the same for every sample */
	for (int64_t j0 = 0, si = 0; j0 < jw && si < NSTRIPS; j0 += nr, si++)
		strip_masks(cv, Wq, j0, jw - j0 < nr ? (int)(jw - j0) : nr, avx512, &strips[si]);
	nt = threads((double)n * P * O * K, n * panels);
	if (n < 2 * nt) {
		osplit = (2 * nt + n - 1) / n;
		if (osplit > panels)
			osplit = panels;
	}
#if defined(__x86_64__)
	/* an epilogue that reads only part of a sample: only that part (a sample split by
	 * channels leaves it in y, [O][part], for the epilogue after the tasks) */
	if (epi && epi->part && epi->oh > 0 && epi->oh <= cv->OH && epi->ow > 0 && epi->ow <= OW) {
		rh = epi->oh;
		rw = epi->ow;
	}
	/* a first layer whose relu and pool are all the epilogue does: pooled as computed */
	pooled = osplit == 1 && S == 1 && cv->C == 1 && cv->k == 3 && relu && epi && epi->pool2 &&
		 epi->oh >= 2 && epi->oh <= cv->OH && epi->ow >= 2 && epi->ow <= OW &&
		 (size_t)2 * Hq * ((epi->ow / 2 + 15) / 16 * 16 + 16) <= (size_t)KPMAX * NRMAX;
	/* real positions packed, where a layer's K is deep enough to amortize the packing, in one
	 * K block, and where that saves a tenth of the wide path's columns at least (a transposed
	 * convolution's dx, K = 576 and 169 outputs a sample: 20% slower packed); a sample split
	 * by channels is packed by each of its tasks */
	packed = K >= 32 && K <= KPMAX && (avx512 ? packable(rw, Wq) : packable8(rw, Wq)) &&
		 10 * strip_cols(jw, nr, avx512) > 11 * strip_cols((int64_t)rh * rw, nr, avx512);
	if (!packed) {
		rh = cv->OH;
		rw = OW;
	} else if (osplit > 1) {
		/* every task packs its sample's positions: one task a thread */
		osplit = (nt + n - 1) / n;
		if (osplit > panels)
			osplit = panels;
	}
	for (int kk = 0; packed && kk < KPMAX; kk++)
		offb[kk] = kk * nr;
	/* a last strip of a few positions, in a batch that pays for transposing the weights */
	if (packed && avx512 && rh * rw % NRMAX && rh * rw % NRMAX <= 4 && n >= 16) {
		for (int o = 0; o < O; o++)
			for (int kk = 0; kk < K; kk++)
				wt[(size_t)kk * O + o] = w[(size_t)o * K + kk];
	} else {
		wt = NULL;
	}
#endif
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
	for (int t = 0; t < n * osplit; t++) {
		float *own = slots + (size_t)omp_get_thread_num() * slot;
		float *xp = own + align16((size_t)O * P);
		int s = t / osplit, q = t % osplit;
		int p0 = q * panels / osplit, p1 = (q + 1) * panels / osplit;
		const float *xs = x + (size_t)s * cv->xs;
		/* a whole sample with an epilogue: into this thread's scratch, then the epilogue */
		float *ys = epi && osplit == 1 ? own : y + (size_t)s * cv->ys;
		/* the next sample's image, prefetched while this one computes (one task does) */
		const char *nx =
		    s + 1 < n && q == 0 ? (const char *)(x + (size_t)(s + 1) * cv->xs) : NULL;

		if (copy) {
			image(cv, &g, xs, xp, xp + align16(g.floats), avx512);
			xs = xp;
		}
#if defined(__x86_64__)
		if (pooled) {
			(avx512 ? conv1_pool_avx512 : conv1_pool_avx2)(
			    xs, Hq, Wq, w, pb, O, epi->oh / 2, epi->ow / 2,
			    epi->pool2 + (size_t)s * epi->pool2_ys, xp + align16(g.floats));
			continue;
		}
		if (packed) {
			if (avx512)
				sample_packed(cv, xs, w, pb, relu, ys, rh, rw, Wq, p0, p1, off,
					      offb, xp + align16(g.floats), nx, wt);
			else
				sample_packed_avx2(cv, xs, w, pb, relu, ys, rh, rw, Wq, p0, p1, off,
						   offb, xp + align16(g.floats), nx, xs + g.floats);
			if (epi && osplit == 1)
				(rh * rw < P ? epi->part : epi->fn)(epi->ctx, s, ys);
			continue;
		}
#endif
		/* the end of what may be read: loads past a strip's columns only feed columns that
		 * are never stored, so a strip reads whole vectors when they stay inside it */
		const float *xend = copy ? xp + g.floats : x + (size_t)(n - 1) * cv->xs + g.floats;
		size_t lines = (size_t)cv->xs * sizeof(float) / 64 + 1, done = 0;

		for (int64_t j0 = 0, si = 0; j0 < jw; j0 += nr, si++) {
			int width = jw - j0 < nr ? (int)(jw - j0) : nr;
			int whole = width <= 16 && avx512 ? 16 : nr, reads;
			struct strip st;
			const struct strip *sp = si < NSTRIPS ? &strips[si] : &st;

			for (size_t to =
				 nx ? lines * (size_t)(si + 1) / (size_t)((jw + nr - 1) / nr) : 0;
			     done < to; done++)
				prefetch(nx + done * 64);
			if (si >= NSTRIPS)
				strip_masks(cv, Wq, j0, width, avx512, &st);
			if (!sp->valid)
				continue;
			reads = xs + j0 + off[K - 1] + whole <= xend ? whole : width;
			for (int pi = p0; pi < p1; pi++) {
				int o0 = pi * mr, rows = O - o0 < mr ? O - o0 : mr;
				const float *wr[MRMAX];

				/* the panel's weight rows as they are; rows past O repeat row o0 */
				for (int i = 0; i < mr; i++)
					wr[i] = w + (size_t)(o0 + (i < rows ? i : 0)) * K;
				if (avx512)
					(width <= 16 ? fwd_direct16_avx512 : fwd_direct_avx512)(
					    K, wr, xs + j0, off, ys + (size_t)o0 * P + sp->first,
					    (size_t)P, rows, reads, sp->valid, pb + o0, relu);
				else
					fwd_direct_avx2(K, wr, xs + j0, off,
							ys + (size_t)o0 * P + sp->first, (size_t)P,
							rows, reads, sp->perm, sp->cnt, pb + o0, relu);
			}
		}
		if (epi && osplit == 1)
			epi->fn(epi->ctx, s, ys);
	}
	if (epi && osplit > 1)
		run_epi(cv, n, y, epi, (int64_t)rh * rw);
}

#if defined(__x86_64__)
/* pack_weights for mr = 8 with gathers: two k at a time, one vector of 16. The same values. */
__attribute__((target("avx512f"))) static void pack_weights8_avx512(const float *w, int O, int K,
								    float *a)
{
	for (int o0 = 0; o0 < O; o0 += 8, a += (size_t)K * 8) {
		int rows = O - o0 < 8 ? O - o0 : 8;
		__mmask16 m = (__mmask16)(((1u << rows) - 1) | (((1u << rows) - 1) << 8));
		__m512i idx = _mm512_setr_epi32(0, K, 2 * K, 3 * K, 4 * K, 5 * K, 6 * K, 7 * K, 1,
						K + 1, 2 * K + 1, 3 * K + 1, 4 * K + 1, 5 * K + 1,
						6 * K + 1, 7 * K + 1);
		const float *src = w + (size_t)o0 * K;
		int k = 0;

		for (; k + 2 <= K; k += 2)
			_mm512_storeu_ps(
			    a + (size_t)k * 8,
			    _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, src + k, 4));
		if (k < K)
			_mm256_storeu_ps(
			    a + (size_t)k * 8,
			    _mm512_castps512_ps256(_mm512_mask_i32gather_ps(
				_mm512_setzero_ps(), (__mmask16)(m & 0xff), idx, src + k, 4)));
	}
}
#endif

void mc_convf_forward(const struct mc_convf *cv, int n, const float *x, const float *w,
		      const float *b, int relu, float *y, void *work,
		      const struct mc_convf_epi *epi)
{
	const struct path *pt = path();
	const int mr = pt->mr, nr = pt->nr, O = cv->O, K = cv->C * cv->k * cv->k;
	const int64_t P = (int64_t)cv->OH * cv->OW, cols = (int64_t)n * P;
	const int nkb = kblocks(K), kc0 = (K + nkb - 1) / nkb;
	const int panels = (O + mr - 1) / mr;
	size_t op = (size_t)O + MRMAX, slot = slot_floats(cv);
	float *a = work, *pb = a + align16(op * K), *slots = pb + align16(op);
	int64_t strips = (cols + nr - 1) / nr, tasks;
	int osplit = 1, nt, fast_pack = 0;
	const struct planes g = planes(cv);

	if (n < 1)
		return;
#if defined(__x86_64__)
	/* stride 1, or 2 through the image split by phase (planes) */
	if ((cv->s == 1 || (cv->s == 2 && split_row_floats(cv, &g) <= (size_t)KPMAX * NRMAX)) &&
	    (pt->fwd == fwd_avx512 || pt->fwd == fwd_avx2) && g.floats < INT32_MAX) {
		/* the weights are read as they are; only the bias is padded to whole panels */
		for (int o = 0; o < panels * mr; o++)
			pb[o] = b && o < O ? b[o] : 0.0f;
		forward_direct(cv, n, x, w, pb, relu, y, slots, slot, mr, nr,
			       (int *)(slots + SLOTS * slot), pt->fwd == fwd_avx512, a, epi);
		return;
	}
	if (mr == 8 && (int64_t)O * K < INT32_MAX / 2) {
		pack_weights8_avx512(w, O, K, a);
		for (int o = 0; o < panels * mr; o++)
			pb[o] = b && o < O ? b[o] : 0.0f;
	} else
#endif
		pack_weights(w, b, O, K, mr, a, pb);
#if defined(__x86_64__)
	fast_pack = cv->s == 1 && mc_cpu_has(MC_CPU_AVX512F);
#endif
	nt = threads((double)cols * O * K, (int)(strips < SLOTS ? strips * panels : SLOTS));
	/* Few strips (a small batch): channel panels too are split, so every thread has work. */
	if (strips < 4 * nt) {
		osplit = (int)((4 * nt + strips - 1) / strips);
		if (osplit > panels)
			osplit = panels;
	}
	tasks = strips * osplit;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
	for (int64_t t = 0; t < tasks; t++) {
		float *bp = slots + (size_t)omp_get_thread_num() * slot;
		float *ct = bp + align16((size_t)KCMAX * NRMAX);
		int64_t j0 = t / osplit * nr, j1 = j0 + nr < cols ? j0 + nr : cols;
		int q = (int)(t % osplit), p0 = q * panels / osplit, p1 = (q + 1) * panels / osplit;
		struct run r[NRMAX + 1];
		int nrun = strip_runs(cv, j0, j1, r), width = (int)(j1 - j0);
		/* one sample: tiles go straight to y[n][o][pos ..] */
		int direct = r[0].n == r[nrun - 1].n;
		float *c =
		    direct ? y + (size_t)r[0].n * cv->ys + (size_t)(j0 - (int64_t)r[0].n * P) : ct;
		size_t ldc = direct ? (size_t)P : (size_t)nr;

		for (int k0 = 0; k0 < K; k0 += kc0) {
			int kc = K - k0 < kc0 ? K - k0 : kc0;

#if defined(__x86_64__)
			if (fast_pack)
				pack_strip_avx512(cv, x, r, nrun, width, k0, kc, nr, bp);
			else
#endif
				pack_strip(cv, x, r, nrun, width, k0, kc, nr, bp);
			for (int pi = p0; pi < p1; pi++) {
				int o0 = pi * mr, rows = O - o0 < mr ? O - o0 : mr;

				pt->fwd(kc, a + (size_t)o0 * K + (size_t)k0 * mr, bp,
					c + (size_t)o0 * ldc, ldc, rows, width,
					k0 == 0 ? pb + o0 : NULL, relu && k0 + kc == K);
			}
		}
		if (direct)
			continue;
		/* across samples: the tile buffer's rows into each sample's part */
		for (int o = p0 * mr; o < O && o < p1 * mr; o++)
			for (int i = 0; i < nrun;) {
				int e = i + 1, len = r[i].len;
				int64_t pos = (int64_t)r[i].oh * cv->OW + r[i].ow;

				while (e < nrun && r[e].n == r[i].n)
					len += r[e++].len;
				memcpy(y + (size_t)r[i].n * cv->ys + (size_t)o * P + pos,
				       ct + (size_t)o * nr + r[i].jj, (size_t)len * sizeof(float));
				i = e;
			}
	}
	if (epi)
		run_epi(cv, n, y, epi, P);
}

void mc_convf_forward_ref(const struct mc_convf *cv, int n, const float *x, const float *w,
			  const float *b, int relu, float *y)
{
	const int k = cv->k, K = cv->C * k * k;

	for (int s = 0; s < n; s++)
		for (int o = 0; o < cv->O; o++)
			for (int oh = 0; oh < cv->OH; oh++)
				for (int ow = 0; ow < cv->OW; ow++) {
					float acc = b ? b[o] : 0.0f;

					for (int kk = 0; kk < K; kk++) {
						int c = kk / (k * k), ki = kk / k % k, kj = kk % k;
						int h = oh * cv->s - cv->p + ki;
						int v = ow * cv->s - cv->p + kj;
						float xv =
						    h >= 0 && h < cv->H && v >= 0 && v < cv->W
							? x[(size_t)s * cv->xs +
							    ((size_t)c * cv->H + h) * cv->W + v]
							: 0.0f;

						acc = fmaf(w[(size_t)o * K + kk], xv, acc);
					}
					if (relu)
						acc = acc > 0.0f ? acc : 0.0f;
					y[(size_t)s * cv->ys + ((size_t)o * cv->OH + oh) * cv->OW +
					  ow] = acc;
				}
}

/* ---------------------------------------------------------------- weight gradient */

/*
 * b[pos][kk] (row stride nr) for pos < P and k = k0 + kk < k1 of sample x:
 * the window value of tap k at output position pos; k == K is the bias
 * column (1), columns from k1 on are 0.
 */
static void pack_windows_t(const struct mc_convf *cv, const float *x, int k0, int k1, int nr,
			   float *b)
{
	const int k = cv->k, K = cv->C * k * k, OW = cv->OW;

	for (int kk = 0; kk < nr; kk++) {
		int kx = k0 + kk, c = kx / (k * k), ki = kx / k % k, kj = kx % k;
		float *d = b + kk;

		if (kx >= k1 || kx >= K) {
			float v = kx == K && kx < k1 ? 1.0f : 0.0f;

			for (int pos = 0; pos < cv->OH * OW; pos++)
				d[(size_t)pos * nr] = v;
			continue;
		}
		for (int oh = 0; oh < cv->OH; oh++) {
			int h = oh * cv->s - cv->p + ki;
			const float *src = x + ((size_t)c * cv->H + h) * cv->W;

			for (int ow = 0; ow < OW; ow++, d += nr) {
				int v = ow * cv->s - cv->p + kj;

				*d = h >= 0 && h < cv->H && v >= 0 && v < cv->W ? src[v] : 0.0f;
			}
		}
	}
}

#if defined(__x86_64__)
/*
 * dW of a 3x3, stride-1 convolution on AVX-512 (AVX2 below) without packing: the tile
 * is the 9 taps of one input channel c (rows) x 32 output channels (two
 * vectors), in dW^T [K][Opad]; per output position p in order, dy^T[p]
 * (32 channels) times the 9 window values broadcast straight from the
 * (padded) image. The chain of each dw[o][k] is the reference's: over the
 * batch's positions in order, starting from its value.
 */
#define D_ROW(r, xv)                                                                               \
	do {                                                                                       \
		__m512 t_ = _mm512_set1_ps(xv);                                                    \
		a##r##0 = _mm512_fmadd_ps(t_, d0, a##r##0);                                        \
		a##r##1 = _mm512_fmadd_ps(t_, d1, a##r##1);                                        \
	} while (0)
#define D_ALL(M)                                                                                   \
	M(0);                                                                                      \
	M(1);                                                                                      \
	M(2);                                                                                      \
	M(3);                                                                                      \
	M(4);                                                                                      \
	M(5);                                                                                      \
	M(6);                                                                                      \
	M(7);                                                                                      \
	M(8)
#define D_LOAD(r)                                                                                  \
	do {                                                                                       \
		a##r##0 = _mm512_loadu_ps(acc + (size_t)(r)*ld);                                   \
		a##r##1 = _mm512_loadu_ps(acc + (size_t)(r)*ld + 16);                              \
	} while (0)
#define D_STORE(r)                                                                                 \
	do {                                                                                       \
		_mm512_storeu_ps(acc + (size_t)(r)*ld, a##r##0);                                   \
		_mm512_storeu_ps(acc + (size_t)(r)*ld + 16, a##r##1);                              \
	} while (0)

__attribute__((target("avx512f,fma"))) static void
dw9_avx512(int OH, int OW, int Wp, const float *xc, const float *dyt, float *acc, size_t ld)
{
	__m512 a00, a01, a10, a11, a20, a21, a30, a31, a40, a41, a50, a51, a60, a61, a70, a71;
	__m512 a80, a81;

	D_ALL(D_LOAD);
	for (int oh = 0; oh < OH; oh++) {
		const float *x0 = xc + (size_t)oh * Wp, *x1 = x0 + Wp, *x2 = x1 + Wp;

		for (int ow = 0; ow < OW; ow++, dyt += 32) {
			__m512 d0 = _mm512_loadu_ps(dyt), d1 = _mm512_loadu_ps(dyt + 16);

			D_ROW(0, x0[ow]);
			D_ROW(1, x0[ow + 1]);
			D_ROW(2, x0[ow + 2]);
			D_ROW(3, x1[ow]);
			D_ROW(4, x1[ow + 1]);
			D_ROW(5, x1[ow + 2]);
			D_ROW(6, x2[ow]);
			D_ROW(7, x2[ow + 1]);
			D_ROW(8, x2[ow + 2]);
		}
	}
	D_ALL(D_STORE);
}

/*
 * R rows of taps (c, ki .. ki + R - 1, 0..2) x 16 output channels (one
 * vector each), dy^T of 16 channels (dyt rows of 16): a half (R = 3) or a
 * sixth (R = 1) of dw9_avx512's tile, for layers whose whole dW is one or
 * two of those tiles (a first layer: C = 1 or 3), so that more threads can
 * share it. The same chains.
 */
__attribute__((target("avx512f,fma"), always_inline)) static inline void
dw16_avx512(const int R, int OH, int OW, int Wp, const float *xr, const float *dyt, float *acc,
	    size_t ld)
{
	__m512 a[9];

#pragma GCC unroll 9
	for (int r = 0; r < 3 * R; r++)
		a[r] = _mm512_loadu_ps(acc + (size_t)r * ld);
	for (int oh = 0; oh < OH; oh++) {
		const float *x0 = xr + (size_t)oh * Wp;

		for (int ow = 0; ow < OW; ow++, dyt += 16) {
			__m512 d = _mm512_loadu_ps(dyt);

#pragma GCC unroll 3
			for (int i = 0; i < R; i++)
#pragma GCC unroll 3
				for (int j = 0; j < 3; j++)
					a[3 * i + j] = _mm512_fmadd_ps(
					    _mm512_set1_ps(x0[(size_t)i * Wp + ow + j]), d, a[3 * i + j]);
		}
	}
#pragma GCC unroll 9
	for (int r = 0; r < 3 * R; r++)
		_mm512_storeu_ps(acc + (size_t)r * ld, a[r]);
}

__attribute__((target("avx512f,fma"))) static void
dw9_16_avx512(int OH, int OW, int Wp, const float *xc, const float *dyt, float *acc, size_t ld)
{
	dw16_avx512(3, OH, OW, Wp, xc, dyt, acc, ld);
}

__attribute__((target("avx512f,fma"))) static void
dw3_16_avx512(int OH, int OW, int Wp, const float *xr, const float *dyt, float *acc, size_t ld)
{
	dw16_avx512(1, OH, OW, Wp, xr, dyt, acc, ld);
}

/*
 * The same on AVX2: the tile is the 3 taps (c, ki, 0..2) x 32 channels
 * (four vectors), dW^T rows r0 .. r0 + 2.
 */
#define E_ROW(r, xv)                                                                               \
	do {                                                                                       \
		__m256 t_ = _mm256_set1_ps(xv);                                                    \
		a##r##0 = _mm256_fmadd_ps(t_, d0, a##r##0);                                        \
		a##r##1 = _mm256_fmadd_ps(t_, d1, a##r##1);                                        \
		a##r##2 = _mm256_fmadd_ps(t_, d2, a##r##2);                                        \
		a##r##3 = _mm256_fmadd_ps(t_, d3, a##r##3);                                        \
	} while (0)
#define E_ALL(M)                                                                                   \
	M(0);                                                                                      \
	M(1);                                                                                      \
	M(2)
#define E_LOAD(r)                                                                                  \
	do {                                                                                       \
		a##r##0 = _mm256_loadu_ps(acc + (size_t)(r)*ld);                                   \
		a##r##1 = _mm256_loadu_ps(acc + (size_t)(r)*ld + 8);                               \
		a##r##2 = _mm256_loadu_ps(acc + (size_t)(r)*ld + 16);                              \
		a##r##3 = _mm256_loadu_ps(acc + (size_t)(r)*ld + 24);                              \
	} while (0)
#define E_STORE(r)                                                                                 \
	do {                                                                                       \
		_mm256_storeu_ps(acc + (size_t)(r)*ld, a##r##0);                                   \
		_mm256_storeu_ps(acc + (size_t)(r)*ld + 8, a##r##1);                               \
		_mm256_storeu_ps(acc + (size_t)(r)*ld + 16, a##r##2);                              \
		_mm256_storeu_ps(acc + (size_t)(r)*ld + 24, a##r##3);                              \
	} while (0)

__attribute__((target("avx2,fma"))) static void dw3_avx2(int OH, int OW, int Wp, const float *xr,
							 const float *dyt, float *acc, size_t ld)
{
	__m256 a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23;

	E_ALL(E_LOAD);
	for (int oh = 0; oh < OH; oh++) {
		const float *x0 = xr + (size_t)oh * Wp;

		for (int ow = 0; ow < OW; ow++, dyt += 32) {
			__m256 d0 = _mm256_loadu_ps(dyt), d1 = _mm256_loadu_ps(dyt + 8);
			__m256 d2 = _mm256_loadu_ps(dyt + 16), d3 = _mm256_loadu_ps(dyt + 24);

			E_ROW(0, x0[ow]);
			E_ROW(1, x0[ow + 1]);
			E_ROW(2, x0[ow + 2]);
		}
	}
	E_ALL(E_STORE);
}

/*
 * One row of taps (c, ki, 0..2) x 8 output channels (one 8-wide vector),
 * dy^T rows of 8: for a first layer (1 input channel, 32 outputs) at 12
 * or more threads, twelve items (4 groups of 8 x 3 rows) instead of six,
 * each reading half as much of dy^T. The same chains as dw3_16_avx512.
 */
__attribute__((target("avx2,fma"))) static void dw3_8_avx2(int OH, int OW, int Wp, const float *xr,
							   const float *dyt, float *acc, size_t ld)
{
	__m256 a0 = _mm256_loadu_ps(acc), a1 = _mm256_loadu_ps(acc + ld);
	__m256 a2 = _mm256_loadu_ps(acc + 2 * ld);

	for (int oh = 0; oh < OH; oh++) {
		const float *x0 = xr + (size_t)oh * Wp;

		for (int ow = 0; ow < OW; ow++, dyt += 8) {
			__m256 d = _mm256_loadu_ps(dyt);

			a0 = _mm256_fmadd_ps(_mm256_set1_ps(x0[ow]), d, a0);
			a1 = _mm256_fmadd_ps(_mm256_set1_ps(x0[ow + 1]), d, a1);
			a2 = _mm256_fmadd_ps(_mm256_set1_ps(x0[ow + 2]), d, a2);
		}
	}
	_mm256_storeu_ps(acc, a0);
	_mm256_storeu_ps(acc + ld, a1);
	_mm256_storeu_ps(acc + 2 * ld, a2);
}

/* dy_t32 and db_t32 in plain C for L lanes (moves and adds: the same values on any path). */
static void dy_t_c(const float *dy, int O, int o0, int P, int L, float *dyt)
{
	for (int i = 0; i < L; i++) {
		const float *src = dy + (size_t)(o0 + i) * P;

		for (int p = 0; p < P; p++)
			dyt[(size_t)p * L + i] = o0 + i < O ? src[p] : 0.0f;
	}
}

static void db_t_c(const float *dyt, int P, int L, float *db)
{
	for (int p = 0; p < P; p++, dyt += L)
		for (int i = 0; i < L; i++)
			db[i] += dyt[i];
}

/*
 * Rows r[0..16) of 16 floats become columns: r[j][i] = old r[i][j]. Two
 * rounds of unpacks put each row's column 4k + c in lane k of s[4b + c]
 * (rows 4b .. 4b + 3), two rounds of 128-bit shuffles gather the lanes.
 */
__attribute__((target("avx512f"), always_inline)) static inline void tr16(__m512 *r)
{
	__m512 t[16], s[16];

	for (int i = 0; i < 16; i += 2) {
		t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
		t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
	}
	for (int b = 0; b < 16; b += 4) {
		s[b] = _mm512_castpd_ps(
		    _mm512_unpacklo_pd(_mm512_castps_pd(t[b]), _mm512_castps_pd(t[b + 2])));
		s[b + 1] = _mm512_castpd_ps(
		    _mm512_unpackhi_pd(_mm512_castps_pd(t[b]), _mm512_castps_pd(t[b + 2])));
		s[b + 2] = _mm512_castpd_ps(
		    _mm512_unpacklo_pd(_mm512_castps_pd(t[b + 1]), _mm512_castps_pd(t[b + 3])));
		s[b + 3] = _mm512_castpd_ps(
		    _mm512_unpackhi_pd(_mm512_castps_pd(t[b + 1]), _mm512_castps_pd(t[b + 3])));
	}
	for (int c = 0; c < 4; c++) {
		__m512 u = _mm512_shuffle_f32x4(s[c], s[4 + c], 0x88);
		__m512 v = _mm512_shuffle_f32x4(s[c], s[4 + c], 0xDD);
		__m512 u2 = _mm512_shuffle_f32x4(s[8 + c], s[12 + c], 0x88);
		__m512 v2 = _mm512_shuffle_f32x4(s[8 + c], s[12 + c], 0xDD);

		r[c] = _mm512_shuffle_f32x4(u, u2, 0x88);
		r[8 + c] = _mm512_shuffle_f32x4(u, u2, 0xDD);
		r[4 + c] = _mm512_shuffle_f32x4(v, v2, 0x88);
		r[12 + c] = _mm512_shuffle_f32x4(v, v2, 0xDD);
	}
}

/*
 * dyt[p][l0 .. l0 + 16) (rows of ld floats) = dy[o0 + i][p] for o0 + i < O,
 * else 0, positions p0 .. p0 + 15: one 16 x 16 block of dy^T.
 */
__attribute__((target("avx512f"), always_inline)) static inline void
dy_block16(const float *dy, int O, int o0, int P, int p0, float *dyt, int ld)
{
	__m512 r[16];

	for (int i = 0; i < 16; i++)
		r[i] = o0 + i < O ? _mm512_loadu_ps(dy + (size_t)(o0 + i) * P + p0)
				  : _mm512_setzero_ps();
	tr16(r);
	for (int j = 0; j < 16; j++)
		_mm512_storeu_ps(dyt + (size_t)(p0 + j) * ld, r[j]);
}

/*
 * dyt[p][0..32) = dy[o0 + i][p] for o0 + i < O, else 0: dy^T of 32 channels
 * of one sample; blocks of 16 positions by register transposes, the last
 * P % 16 by gathers (moves either way: the same values).
 */
__attribute__((target("avx512f"))) static void dy_t32(const float *dy, int O, int o0, int P,
						      float *dyt)
{
	__m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	__m512i i0 =
	    _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(o0)), _mm512_set1_epi32(P));
	__m512i i1 = _mm512_add_epi32(i0, _mm512_set1_epi32(16 * P));
	int r0 = O - o0 < 16 ? O - o0 : 16, r1 = O - o0 - 16 < 16 ? O - o0 - 16 : 16;
	__mmask16 m0 = (__mmask16)((1u << r0) - 1);
	__mmask16 m1 = r1 > 0 ? (__mmask16)((1u << r1) - 1) : 0;
	__m512i one = _mm512_set1_epi32(1);
	int p = 0;

	for (; p + 16 <= P; p += 16) {
		dy_block16(dy, O, o0, P, p, dyt, 32);
		dy_block16(dy, O, o0 + 16, P, p, dyt + 16, 32);
	}
	i0 = _mm512_add_epi32(i0, _mm512_set1_epi32(p));
	i1 = _mm512_add_epi32(i1, _mm512_set1_epi32(p));
	for (dyt += (size_t)p * 32; p < P; p++, dyt += 32) {
		_mm512_storeu_ps(dyt, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m0, i0, dy, 4));
		_mm512_storeu_ps(dyt + 16,
				 _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m1, i1, dy, 4));
		i0 = _mm512_add_epi32(i0, one);
		i1 = _mm512_add_epi32(i1, one);
	}
}

/* dyt[p][0..16) = dy[o0 + i][p] for o0 + i < O, else 0: dy^T of 16 channels of one sample. */
__attribute__((target("avx512f"))) static void dy_t16(const float *dy, int O, int o0, int P,
						      float *dyt)
{
	__m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
	__m512i i0 =
	    _mm512_mullo_epi32(_mm512_add_epi32(lane, _mm512_set1_epi32(o0)), _mm512_set1_epi32(P));
	int r0 = O - o0 < 16 ? O - o0 : 16;
	__mmask16 m0 = r0 > 0 ? (__mmask16)((1u << r0) - 1) : 0;
	__m512i one = _mm512_set1_epi32(1);
	int p = 0;

	for (; p + 16 <= P; p += 16)
		dy_block16(dy, O, o0, P, p, dyt, 16);
	i0 = _mm512_add_epi32(i0, _mm512_set1_epi32(p));
	for (dyt += (size_t)p * 16; p < P; p++, dyt += 16) {
		_mm512_storeu_ps(dyt, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m0, i0, dy, 4));
		i0 = _mm512_add_epi32(i0, one);
	}
}

/* db[0..32) += dyt[p] for p in order: the reference's chain of adds, 32 channels at once. */
__attribute__((target("avx512f"))) static void db_t32(const float *dyt, int P, float *db)
{
	__m512 s0 = _mm512_loadu_ps(db), s1 = _mm512_loadu_ps(db + 16);

	for (int p = 0; p < P; p++, dyt += 32) {
		s0 = _mm512_add_ps(s0, _mm512_loadu_ps(dyt));
		s1 = _mm512_add_ps(s1, _mm512_loadu_ps(dyt + 16));
	}
	_mm512_storeu_ps(db, s0);
	_mm512_storeu_ps(db + 16, s1);
}

/* dy^T of channels o0 .. o0 + L - 1 of one sample (dy_t32, dy_t16, or dy_t_c: L = 8 or AVX2). */
static void dy_t(const float *dy, int O, int o0, int P, int L, int avx512, float *dyt)
{
	if (avx512 && L == 32)
		dy_t32(dy, O, o0, P, dyt);
	else if (avx512 && L == 16)
		dy_t16(dy, O, o0, P, dyt);
	else
		dy_t_c(dy, O, o0, P, L, dyt);
}

/*
 * dyt[p][0..L) = dy^T of channels o0 .. o0 + L - 1 of sample s (0 past O):
 * read from dy, or (src) written by src into tmp [L][P] first. Moves
 * either way: the same values.
 */
static void dyt_of(const struct mc_convf *cv, const float *dy, const struct mc_convf_dysrc *src,
		   int s, int o0, int L, int avx512, float *tmp, float *dyt)
{
	const int P = cv->OH * cv->OW;

	if (src) {
		int m = cv->O - o0 < L ? cv->O - o0 : L;

		src->fn(src->ctx, s, o0, m, tmp);
		dy_t(tmp, m, 0, P, L, avx512, dyt);
	} else {
		dy_t(dy + (size_t)s * cv->ys, cv->O, o0, P, L, avx512, dyt);
	}
}

/*
 * Floats of the direct dW's workspace: dW^T, db, then per slot dy^T, dy
 * of L channels (from a mc_convf_dysrc) and a padded image; *all (when
 * not NULL) gets the floats of dy^T of n whole samples that follow them,
 * SIZE_MAX on overflow.
 */
static size_t dw_direct_floats(const struct mc_convf *cv, int n, size_t *slot, size_t *all)
{
	size_t op = ((size_t)cv->O + 31) / 32 * 32, K = (size_t)cv->C * 9;
	size_t img = (size_t)cv->C * (size_t)(cv->H + 2 * cv->p) * (size_t)(cv->W + 2 * cv->p);
	size_t P = (size_t)cv->OH * cv->OW, t;

	*slot = 2 * align16(P * 32) + align16(img);
	if (all)
		*all = __builtin_mul_overflow(P * op, (size_t)(n > 0 ? n : 1), &t) ||
			       t > SIZE_MAX / 2 / sizeof(float)
			   ? SIZE_MAX
			   : align16(t);
	return align16(K * op) + align16(op) + SLOTS * *slot;
}

static int dw_direct_fits(const struct mc_convf *cv)
{
	return cv->k == 3 && cv->s == 1 && (int64_t)cv->O * cv->OH * cv->OW < INT32_MAX / 2 &&
	       (int64_t)cv->C * (cv->H + 2 * cv->p) * (cv->W + 2 * cv->p) < INT32_MAX;
}

/* What the items of one dw_direct share. */
struct dwd {
	const struct mc_convf *cv;
	const float *x;
	float *dw, *db, *dwt, *dbt;
	int op, L, kparts, rows, avx512;
};

/* Item t's group of L channels, input channels [c0, c1), tap rows [k0, k1) of 9, and db or not. */
struct dw_item {
	int g, c0, c1, k0, k1, r, own_b;
};

static struct dw_item dw_item(const struct dwd *d, int t)
{
	int C = d->cv->C, kp = t / d->rows % d->kparts, r = t % d->rows;

	return (struct dw_item){t / (d->kparts * d->rows), kp * C / d->kparts,
				(kp + 1) * C / d->kparts,  r * 9 / d->rows,
				(r + 1) * 9 / d->rows,	   r,
				kp == 0 && r == 0};
}

/*
 * The item's own rows of dW^T (taps k0 .. k1 - 1 of each of its channels,
 * its L lanes) and of db start from dw and db, in the team, not before it.
 */
static void dw_item_begin(const struct dwd *d, int t)
{
	const struct dw_item it = dw_item(d, t);
	const int O = d->cv->O, K = d->cv->C * 9, L = d->L;

	for (int c = it.c0; c < it.c1; c++)
		for (int k = c * 9 + it.k0; k < c * 9 + it.k1; k++)
			for (int o = it.g * L; o < it.g * L + L; o++)
				d->dwt[(size_t)k * d->op + o] =
				    d->dw && o < O ? d->dw[(size_t)o * K + k] : 0.0f;
	for (int o = it.g * L; it.own_b && o < it.g * L + L; o++)
		d->dbt[o] = d->db && o < O ? d->db[o] : 0.0f;
}

/* Sample s of item t: dyt its group's dy^T, xp the padded image (borders 0). */
static void dw_item_sample(const struct dwd *d, int t, int s, const float *dyt, float *xp)
{
	const struct mc_convf *cv = d->cv;
	const struct dw_item it = dw_item(d, t);
	const int p = cv->p, Hp = cv->H + 2 * p, Wp = cv->W + 2 * p, P = cv->OH * cv->OW;
	const int L = d->L, rows = d->rows, r = it.r, avx512 = d->avx512, op = d->op;
	const float *xs = d->x + (size_t)s * cv->xs;

	if (p) {
		for (int c = it.c0; c < it.c1; c++)
			for (int h = 0; h < cv->H; h++)
				memcpy(xp + ((size_t)c * Hp + h + p) * Wp + p,
				       xs + ((size_t)c * cv->H + h) * cv->W,
				       (size_t)cv->W * sizeof(float));
		xs = xp;
	}
	for (int c = it.c0; c < it.c1; c++) {
		const float *xc = xs + (size_t)c * Hp * Wp;
		float *ac = d->dwt + (size_t)c * 9 * op + it.g * L;

		if (avx512 && L == 32) {
			dw9_avx512(cv->OH, cv->OW, Wp, xc, dyt, ac, (size_t)op);
		} else if (avx512 && L == 8) {
			for (int ki = r; ki < (rows == 1 ? 3 : r + 1); ki++)
				dw3_8_avx2(cv->OH, cv->OW, Wp, xc + (size_t)ki * Wp, dyt,
					   ac + (size_t)ki * 3 * op, (size_t)op);
		} else if (avx512 && rows == 1) {
			dw9_16_avx512(cv->OH, cv->OW, Wp, xc, dyt, ac, (size_t)op);
		} else if (avx512) {
			dw3_16_avx512(cv->OH, cv->OW, Wp, xc + (size_t)r * Wp, dyt,
				      ac + (size_t)r * 3 * op, (size_t)op);
		} else {
			for (int ki = r; ki < (rows == 1 ? 3 : r + 1); ki++)
				dw3_avx2(cv->OH, cv->OW, Wp, xc + (size_t)ki * Wp, dyt,
					 ac + (size_t)ki * 3 * op, (size_t)op);
		}
	}
	if (d->db && it.own_b) {
		if (avx512 && L == 32)
			db_t32(dyt, P, d->dbt + it.g * 32);
		else
			db_t_c(dyt, P, L, d->dbt + it.g * L);
	}
}

/* The item's sums back into dw and db. */
static void dw_item_end(const struct dwd *d, int t)
{
	const struct dw_item it = dw_item(d, t);
	const int O = d->cv->O, K = d->cv->C * 9, L = d->L;

	for (int o = it.g * L; o < it.g * L + L && o < O; o++) {
		for (int c = it.c0; d->dw && c < it.c1; c++)
			for (int k = c * 9 + it.k0; k < c * 9 + it.k1; k++)
				d->dw[(size_t)o * K + k] = d->dwt[(size_t)k * d->op + o];
		if (d->db && it.own_b)
			d->db[o] = d->dbt[o];
	}
}

/* Floats of dy^T that a dysrc's blocks of samples take at most (a few in the L2 of each core). */
#define DW_BLOCK_FLOATS (1 << 18)

/*
 * Work items: a group of L output channels (32: two vectors on AVX-512,
 * four on AVX2) x a part of the input channels x, when that leaves threads
 * idle (a first layer has 1 or 3 input channels), a row ki of the taps.
 * With too few items for the team, AVX-512 groups are of 16 channels, and
 * with threads enough for three times as many items, the rows are split
 * too (each row's item transposes dy again): a layer of 32 outputs and 1
 * input is two or six items instead of one, and twelve (groups of 8
 * channels, one 8-wide vector) where six would leave threads idle. Each
 * item runs whole chains, so the split changes no value.
 *
 * Every item of a group reads the same dy^T. When a group has more than
 * one item (kparts x rows > 1: many threads), dy^T of every sample and
 * group is written once into dyall, split over (sample, group), before the
 * items start, instead of by each item again: at 16 threads a layer of 64
 * outputs and 32 inputs has 16 items a group, whose own transposes cost
 * about as much as their products, and a first layer's 6 items left the
 * transposes, most of its dW, to 6 threads. The values read are the same.
 *
 * With dy from src (never in memory), an item of a group alone makes its
 * dy^T sample by sample in its slot; items that share a group take it in
 * blocks of samples that stay in cache: the team writes the block's dy^T
 * (sample, group), then the items run over it, each its samples in order.
 */
static void dw_direct(const struct mc_convf *cv, int n, const float *x, const float *dy,
		      const struct mc_convf_dysrc *src, float *dw, float *db, float *work,
		      int avx512)
{
	const int O = cv->O, C = cv->C, K = C * 9, P = cv->OH * cv->OW, p = cv->p;
	const int Hp = cv->H + 2 * p, Wp = cv->W + 2 * p, op = (O + 31) / 32 * 32;
	size_t slot;
	float *dwt = work, *dbt = dwt + align16((size_t)K * op);
	float *slots = dbt + align16((size_t)op);
	int kparts = 1, rows = 1, L = 32, groups, nt, shared, team, items, blocked, B;
	float *dyall = work + dw_direct_floats(cv, n, &slot, NULL);
	struct dwd d;

	nt = threads((double)n * P * O * K, (avx512 ? 12 : 6) * (op / 32) * C);
	if (nt > 1 && avx512 && op / 32 * C < 2 * nt)
		L = 16;
	/* even split by tap rows, groups of 16 leave threads idle: groups of 8 */
	if (L == 16 && 3 * ((O + 15) / 16) * C < nt)
		L = 8;
	groups = (O + L - 1) / L; /* no group wholly past O */
	if (nt > 1 && 3 * groups * C <= nt)
		rows = 3;
	if (groups * rows < 2 * nt)
		kparts = (2 * nt + groups * rows - 1) / (groups * rows) < C
			     ? (2 * nt + groups * rows - 1) / (groups * rows)
			     : C;
	shared = kparts * rows > 1;
	blocked = shared && src;
	items = groups * kparts * rows;
	B = DW_BLOCK_FLOATS / ((size_t)groups * L * P);
	B = B < 1 ? 1 : B > n ? n : B;
	/* the transposes are n x groups items: the whole team, even when the
	 * products have fewer (a first layer's six) */
	team = shared ? threads((double)n * P * O * K, n * groups > nt ? n * groups : nt) : nt;
	d = (struct dwd){cv, x, dw, db, dwt, dbt, op, L, kparts, rows, avx512};
#pragma omp parallel num_threads(team) if (team > 1)
	{
		float *dyt = slots + (size_t)omp_get_thread_num() * slot;
		float *tmp = dyt + align16((size_t)P * 32), *xp = tmp + align16((size_t)P * 32);

		if (p)
			memset(xp, 0, (size_t)C * Hp * Wp * sizeof(float));
		if (shared && !src) {
#pragma omp for schedule(static)
			for (int t = 0; t < n * groups; t++)
				dy_t(dy + (size_t)(t / groups) * cv->ys, O, t % groups * L, P, L,
				     avx512, dyall + (size_t)t * P * L);
		}
		if (!blocked) {
#pragma omp for schedule(static)
			for (int t = 0; t < items; t++) {
				int g = t / (kparts * rows);

				dw_item_begin(&d, t);
				for (int s = 0; s < n; s++) {
					const float *ds = dyt;

					if (shared)
						ds = dyall + ((size_t)s * groups + g) * P * L;
					else
						dyt_of(cv, dy, src, s, g * L, L, avx512, tmp, dyt);
					dw_item_sample(&d, t, s, ds, xp);
				}
				dw_item_end(&d, t);
			}
		} else {
#pragma omp for schedule(static)
			for (int t = 0; t < items; t++)
				dw_item_begin(&d, t);
			for (int s0 = 0; s0 < n; s0 += B) {
				int b = n - s0 < B ? n - s0 : B;

#pragma omp for schedule(static)
				for (int u = 0; u < b * groups; u++)
					dyt_of(cv, NULL, src, s0 + u / groups, u % groups * L, L,
					       avx512, tmp, dyall + (size_t)u * P * L);
#pragma omp for schedule(static)
				for (int t = 0; t < items; t++) {
					int g = t / (kparts * rows);

					for (int s = s0; s < s0 + b; s++)
						dw_item_sample(
						    &d, t, s,
						    dyall + ((size_t)(s - s0) * groups + g) * P * L,
						    xp);
				}
			}
#pragma omp for schedule(static)
			for (int t = 0; t < items; t++)
				dw_item_end(&d, t);
		}
	}
}
#endif

/* Floats of one slot of the packed dW: windows [P][NRMAX], dy of MRMAX channels (from a dysrc). */
static size_t dw_slot_floats(const struct mc_convf *cv)
{
	size_t P = (size_t)cv->OH * cv->OW;

	return align16(P * NRMAX) + align16(P * MRMAX);
}

size_t mc_convf_dw_work(const struct mc_convf *cv, int n)
{
	size_t K1 = (size_t)cv->C * cv->k * cv->k + 1, P = (size_t)cv->OH * cv->OW, acc, slot;
	size_t total;

	if (P > SIZE_MAX / 64 / NRMAX || K1 > SIZE_MAX / 8 / ((size_t)cv->O + 32))
		return SIZE_MAX;
	acc = align16((size_t)cv->O * K1);
	slot = dw_slot_floats(cv);
	if (slot > (SIZE_MAX / sizeof(float) - acc) / SLOTS)
		return SIZE_MAX;
	total = acc + SLOTS * slot;
#if defined(__x86_64__)
	if (dw_direct_fits(cv)) {
		size_t all, d = dw_direct_floats(cv, n, &slot, &all);

		if (all > SIZE_MAX / sizeof(float) - d)
			return SIZE_MAX;
		d += all;
		total = total > d ? total : d;
	}
#endif
	return total * sizeof(float);
}

/* mc_convf_dw with dy from dy or, when src is set, from src (conv.h). */
static void dw_any(const struct mc_convf *cv, int n, const float *x, const float *dy,
		   const struct mc_convf_dysrc *src, float *dw, float *db, void *work)
{
	const struct path *pt = path();
	const int mr = pt->mr, nr = pt->nr, O = cv->O, K = cv->C * cv->k * cv->k;
	const int K1 = db ? K + 1 : K, P = cv->OH * cv->OW;
	const int kstrips = (K1 + nr - 1) / nr, panels = (O + mr - 1) / mr;
	float *acc = work, *slots = acc + align16((size_t)O * (K + 1));
	size_t slot = dw_slot_floats(cv);
	int osplit = 1, nt;

	if (n < 1 || (!dw && !db))
		return;
#if defined(__x86_64__)
	if ((pt->fwd == fwd_avx512 || pt->fwd == fwd_avx2) && dw_direct_fits(cv)) {
		dw_direct(cv, n, x, dy, src, dw, db, work, pt->fwd == fwd_avx512);
		return;
	}
#endif
	/* acc[O][K1]: the sums start from what dw and db hold */
	for (int o = 0; o < O; o++) {
		if (dw)
			memcpy(acc + (size_t)o * K1, dw + (size_t)o * K, (size_t)K * sizeof(float));
		else
			memset(acc + (size_t)o * K1, 0, (size_t)K * sizeof(float));
		if (db)
			acc[(size_t)o * K1 + K] = db[o];
	}
	nt = threads((double)n * P * O * K1, kstrips * panels);
	if (kstrips < 2 * nt)
		osplit = panels < 2 * nt ? panels : 2 * nt;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
	for (int t = 0; t < kstrips * osplit; t++) {
		float *bp = slots + (size_t)omp_get_thread_num() * slot;
		float *dyp = bp + align16((size_t)P * NRMAX);
		int k0 = t / osplit * nr, k1 = k0 + nr < K1 ? k0 + nr : K1, q = t % osplit;
		int p0 = q * panels / osplit, p1 = (q + 1) * panels / osplit;

		for (int s = 0; s < n; s++) {
			const float *ds = src ? NULL : dy + (size_t)s * cv->ys;

			pack_windows_t(cv, x + (size_t)s * cv->xs, k0, k1, nr, bp);
			for (int pi = p0; pi < p1; pi++) {
				int o0 = pi * mr, rows = O - o0 < mr ? O - o0 : mr;
				const float *dyr[MRMAX];

				/* the panel's channels of dy, made here when not in memory */
				if (src)
					src->fn(src->ctx, s, o0, rows, dyp);
				for (int i = 0; i < mr; i++)
					dyr[i] = src ? dyp + (size_t)(i < rows ? i : 0) * P
						     : ds + (size_t)(o0 + (i < rows ? i : 0)) * P;
				pt->dw(P, dyr, bp, acc + (size_t)o0 * K1 + k0, (size_t)K1, rows,
				       k1 - k0);
			}
		}
	}
	for (int o = 0; o < O; o++) {
		if (dw)
			memcpy(dw + (size_t)o * K, acc + (size_t)o * K1, (size_t)K * sizeof(float));
		if (db)
			db[o] = acc[(size_t)o * K1 + K];
	}
}

void mc_convf_dw(const struct mc_convf *cv, int n, const float *x, const float *dy, float *dw,
		 float *db, void *work)
{
	dw_any(cv, n, x, dy, NULL, dw, db, work);
}

void mc_convf_dw_src(const struct mc_convf *cv, int n, const float *x,
		     const struct mc_convf_dysrc *src, float *dw, float *db, void *work)
{
	dw_any(cv, n, x, NULL, src, dw, db, work);
}

void mc_convf_dw_ref(const struct mc_convf *cv, int n, const float *x, const float *dy, float *dw,
		     float *db)
{
	const int k = cv->k, K = cv->C * k * k, P = cv->OH * cv->OW;

	for (int o = 0; o < cv->O; o++) {
		for (int kk = 0; dw && kk < K; kk++) {
			int c = kk / (k * k), ki = kk / k % k, kj = kk % k;
			float acc = dw[(size_t)o * K + kk];

			for (int s = 0; s < n; s++)
				for (int pos = 0; pos < P; pos++) {
					int h = pos / cv->OW * cv->s - cv->p + ki;
					int v = pos % cv->OW * cv->s - cv->p + kj;
					float xv = h >= 0 && h < cv->H && v >= 0 && v < cv->W
						       ? x[(size_t)s * cv->xs +
							   ((size_t)c * cv->H + h) * cv->W + v]
						       : 0.0f;

					acc = fmaf(dy[(size_t)s * cv->ys + (size_t)o * P + pos], xv,
						   acc);
				}
			dw[(size_t)o * K + kk] = acc;
		}
		if (db) {
			float acc = db[o];

			for (int s = 0; s < n; s++)
				for (int pos = 0; pos < P; pos++)
					acc += dy[(size_t)s * cv->ys + (size_t)o * P + pos];
			db[o] = acc;
		}
	}
}

/* ---------------------------------------------------------------- epilogue */

static inline float post_act(int act, float y, float lo, float hi)
{
	if (act == MC_POST_RELU)
		return y > 0.0f ? y : 0.0f;
	if (act == MC_POST_CLIP) {
		float v = y < lo ? lo : y;

		return v > hi ? hi : v;
	}
	return y;
}

void mc_conv_post_run_ref(const struct mc_conv_post *pp, int o, const float *src,
			  const float *res, float *dst, int64_t len)
{
	for (int64_t i = 0; i < len; i++) {
		float y = src[i];

		if (pp->scale) {
			float t = y * pp->scale[o];

			y = t + pp->shift[o];
		}
		y = post_act(pp->act1, y, pp->lo1, pp->hi1);
		if (pp->add)
			y = pp->res_first ? res[i] + y : y + res[i];
		dst[i] = post_act(pp->act2, y, pp->lo2, pp->hi2);
	}
}

#if defined(__x86_64__)
/*
 * The same on 16 lanes (AVX-512) and 8 (AVX2), the last vector masked: the
 * selects as compares that are false for NaN, as the scalar ones. The
 * fields are read into locals once (stores to dst may alias anything).
 */
#define POST_LOCALS                                                                                \
	const int bn = pp->scale != NULL, a1 = pp->act1, add = pp->add, rf = pp->res_first;       \
	const int a2 = pp->act2;                                                                   \
	const float fsc = bn ? pp->scale[o] : 1.0f, fsh = bn ? pp->shift[o] : 0.0f

__attribute__((target("avx512f"), always_inline)) static inline __m512 post_act16(int act,
										  __m512 y,
										  __m512 lo,
										  __m512 hi)
{
	if (act == MC_POST_RELU)
		return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ),
					   y);
	if (act == MC_POST_CLIP) {
		y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(y, lo, _CMP_LT_OQ), lo);
		return _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask(y, hi, _CMP_GT_OQ), hi);
	}
	return y;
}

__attribute__((target("avx512f"))) static void post_avx512(const struct mc_conv_post *pp, int o,
							   const float *src, const float *res,
							   float *dst, int64_t len)
{
	POST_LOCALS;
	const __m512 sc = _mm512_set1_ps(fsc), sh = _mm512_set1_ps(fsh);
	const __m512 lo1 = _mm512_set1_ps(pp->lo1), hi1 = _mm512_set1_ps(pp->hi1);
	const __m512 lo2 = _mm512_set1_ps(pp->lo2), hi2 = _mm512_set1_ps(pp->hi2);

	for (int64_t i = 0; i < len; i += 16) {
		__mmask16 m = len - i >= 16 ? 0xffff : (__mmask16)((1u << (len - i)) - 1);
		__m512 y = _mm512_maskz_loadu_ps(m, src + i);

		if (bn)
			y = _mm512_add_ps(_mm512_mul_ps(y, sc), sh);
		y = post_act16(a1, y, lo1, hi1);
		if (add) {
			__m512 r = _mm512_maskz_loadu_ps(m, res + i);

			y = rf ? _mm512_add_ps(r, y) : _mm512_add_ps(y, r);
		}
		_mm512_mask_storeu_ps(dst + i, m, post_act16(a2, y, lo2, hi2));
	}
}

__attribute__((target("avx2"), always_inline)) static inline __m256 post_act8(int act, __m256 y,
									     __m256 lo, __m256 hi)
{
	if (act == MC_POST_RELU)
		return _mm256_and_ps(_mm256_cmp_ps(y, _mm256_setzero_ps(), _CMP_GT_OQ), y);
	if (act == MC_POST_CLIP) {
		y = _mm256_blendv_ps(y, lo, _mm256_cmp_ps(y, lo, _CMP_LT_OQ));
		return _mm256_blendv_ps(y, hi, _mm256_cmp_ps(y, hi, _CMP_GT_OQ));
	}
	return y;
}

static const int post_lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

__attribute__((target("avx2"))) static void post_avx2(const struct mc_conv_post *pp, int o,
						      const float *src, const float *res, float *dst,
						      int64_t len)
{
	POST_LOCALS;
	const __m256 sc = _mm256_set1_ps(fsc), sh = _mm256_set1_ps(fsh);
	const __m256 lo1 = _mm256_set1_ps(pp->lo1), hi1 = _mm256_set1_ps(pp->hi1);
	const __m256 lo2 = _mm256_set1_ps(pp->lo2), hi2 = _mm256_set1_ps(pp->hi2);

	for (int64_t i = 0; i < len; i += 8) {
		__m256i m = _mm256_loadu_si256(
		    (const __m256i *)(post_lanes + 8 - (len - i >= 8 ? 8 : (int)(len - i))));
		__m256 y = _mm256_maskload_ps(src + i, m);

		if (bn)
			y = _mm256_add_ps(_mm256_mul_ps(y, sc), sh);
		y = post_act8(a1, y, lo1, hi1);
		if (add) {
			__m256 r = _mm256_maskload_ps(res + i, m);

			y = rf ? _mm256_add_ps(r, y) : _mm256_add_ps(y, r);
		}
		_mm256_maskstore_ps(dst + i, m, post_act8(a2, y, lo2, hi2));
	}
}
#endif

mc_conv_post_fn mc_conv_post_path(void)
{
#if defined(__x86_64__)
	const char *name = mc_sgemm_kernel();

	if (!strcmp(name, "avx512"))
		return post_avx512;
	if (!strcmp(name, "avx2"))
		return post_avx2;
#endif
	return mc_conv_post_run_ref;
}

void mc_conv_post_run(const struct mc_conv_post *pp, int o, const float *src, const float *res,
		      float *dst, int64_t len)
{
	mc_conv_post_path()(pp, o, src, res, dst, len);
}
