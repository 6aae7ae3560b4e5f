/* SPDX-License-Identifier: MIT */
/*
 * gemm.c - single-precision GEMM: a packed, cache-blocked kernel with SIMD
 * micro-kernels chosen at run time, a GEMV path for a few rows, and the
 * reference loop beside them.
 *
 * Blocking (after BLIS / Goto): K is cut into KC-deep slices, one at a
 * time: per slice (and block of MCC rows / NCC columns) the team packs B
 * into NR-wide strips and A into MR-tall strips, meets at one barrier, and
 * runs the MR x NR micro-kernel over the block. Packing goes into the other
 * of two buffers, so the next slice's packing need not wait for this one's
 * tiles. Each thread owns a fixed rectangle of the block (the team's grid
 * depends only on the shape), packs and runs its own part first, so its A,
 * B and C stay in its caches from slice to slice, then takes over work
 * other threads have not started. Every output element is computed as: for
 * each K slice in order, acc = sum over k in order (FMA), then
 * C = alpha * acc + beta' * C. That sequence depends neither on which thread
 * runs the tile nor on the team's size, so the result is bit-identical for
 * any thread count.
 *
 * One to three rows of A (a batch-1 forward pass) take the GEMV path: no
 * packing, and no thread team unless the product is large. Its sums are
 * ordered by the shape alone, so they too do not depend on the thread count.
 */
#include <stdlib.h>
#include <string.h>

#include <omp.h>
#include <pthread.h>

#include <mcomp/tensor.h>

#include "kernels/cpu.h"
#include "kernels/gemm.h"

#define KC MC_SGEMM_KC /* depth of a packed slice, 256: an NR strip of B (32 KB) stays in L1 */
#define MCC 1152       /* rows of A packed at once (a multiple of every MR) */
#define NCC 2048       /* columns of B packed at once */
#define MB 8	       /* a unit of tile work: up to 8 MR strips of A against one NR strip of B */
#define PAR_MIN 1e6    /* multiply-adds below which one thread is faster than a team */
#define PB_PAR_MIN 1.5e5 /* the same with B packed beforehand: no packing, no barrier */
#define GEMV_ROWS 3    /* at most this many rows of A take the GEMV path */
#define GEMV_COLS 64   /* columns of C per GEMV work item */
#define GEMV_PAR_B 65536 /* elements of B (256 KB) from which the GEMV splits over threads */

/*
 * A micro-kernel: acc[mr][nr] = sum_k a[k][i] * b[k][j] over packed strips,
 * then c = alpha * acc + beta * c for the top-left rows x cols of the tile,
 * where beta == 0 leaves c unread. The SIMD kernels round the update the
 * same way (one FMA: alpha * acc + (beta * c)) in full and edge tiles.
 * With lda > 0, a is not packed: element (i, k) is a[i * lda + k], the rows
 * of A read where they are (all mr of them must exist); the sums are the
 * same, in the same order. With bias (the tile's columns of it), every row
 * of c is taken to hold bias (c is then not read: a bias copied into C
 * first, without the copy); with relu, the updated value v is stored as
 * max(v, 0), the select v > 0 ? v : +0 (NaN -> +0) of the relu op (no pass
 * over the tile after it).
 */
typedef void (*ukernel_fn)(int kc, const float *a, size_t lda, const float *b, float *c, int ldc,
			   int rows, int cols, float alpha, float beta, const float *bias,
			   int relu);
typedef void (*gemv_fn)(int K, const float *a, const float *B, size_t ldb, int n, float *c,
			float alpha, float beta);

struct ukernel {
	const char *name;
	int mr, nr;
	ukernel_fn fn;
	gemv_fn gemv_t, gemv_n; /* op(B) = B^T (dot products) and op(B) = B */
};

/*
 * The portable kernels round exactly as the SIMD ones: every multiply-add
 * is one fmaf, the dot products keep 16 partial sums (lane k % 16) added
 * in the same tree, so every path gives the same bytes. On x86 they are
 * also built for FMA (target_clones), where fmaf is one instruction; without
 * FMA hardware fmaf is the C library's, slower and still exact.
 */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && defined(__ELF__) && \
    !defined(MC_NO_TARGET_CLONES) /* the fuzz build (configure --enable-fuzz): the clones'
				   * ifunc resolvers would run, instrumented, while libmcomp
				   * is relocated, before what they call is bound */
#define PORTABLE_CLONES __attribute__((target_clones("fma", "default")))
#else
#define PORTABLE_CLONES
#endif

PORTABLE_CLONES static void ukernel_portable(int kc, const float *restrict a, size_t lda,
					     const float *restrict b, float *restrict c, int ldc,
					     int rows, int cols, float alpha, float beta,
					     const float *bias, int relu)
{
	float acc[4][16] = { { 0 } };
	size_t ars = lda ? lda : 1, aks = lda ? 1 : 4;

	for (int k = 0; k < kc; k++, a += aks, b += 16)
		for (int i = 0; i < 4; i++)
			for (int j = 0; j < 16; j++)
				acc[i][j] = __builtin_fmaf(a[i * ars], b[j], acc[i][j]);
	for (int i = 0; i < rows; i++)
		for (int j = 0; j < cols; j++) {
			float *cij = c + i * ldc + j;
			float v = beta != 0.0f ? __builtin_fmaf(alpha, acc[i][j],
								beta * (bias ? bias[j] : *cij))
					       : alpha * acc[i][j];

			*cij = relu && !(v > 0.0f) ? 0.0f : v;
		}
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX2_ROW(i)                                                   \
	do {                                                          \
		__m256 ai = _mm256_broadcast_ss(a + (i) * ars);       \
		c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);           \
		c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);           \
	} while (0)

#define AVX2_SPILL(i)                                          \
	do {                                                   \
		_mm256_storeu_ps(t + (i) * 16, c##i##0);       \
		_mm256_storeu_ps(t + (i) * 16 + 8, c##i##1);   \
	} while (0)

/* The edge of a tile, element by element with the same rounding as the vectors. */
#define EDGE_UPDATE(nr)                                                                            \
	for (int i = 0; i < rows; i++)                                                             \
		for (int j = 0; j < cols; j++) {                                                   \
			float *cij = c + i * ldc + j;                                              \
			float v = beta != 0.0f ? __builtin_fmaf(alpha, t[i * (nr) + j],            \
								beta * (bias ? bias[j] : *cij))    \
					       : alpha * t[i * (nr) + j];                          \
			*cij = relu && !(v > 0.0f) ? 0.0f : v;                                     \
		}

/*
 * 6 x 16: twelve accumulators, two B vectors and one broadcast fill the 16
 * ymm registers exactly, so the K loop is a function of its own that takes
 * nothing else: with alpha and beta live beside it the compiler spilled an
 * accumulator, and its store and reload on every k halved the speed.
 */
__attribute__((target("avx2,fma"), always_inline)) static inline void
avx2_sums(int kc, const float *restrict a, size_t ars, size_t aks, const float *restrict b,
	  float *restrict t)
{
	__m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
	__m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;

#pragma GCC unroll 4
	for (int k = 0; k < kc; k++, a += aks, b += 16) {
		__m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);

		AVX2_ROW(0);
		AVX2_ROW(1);
		AVX2_ROW(2);
		AVX2_ROW(3);
		AVX2_ROW(4);
		AVX2_ROW(5);
	}
	AVX2_SPILL(0);
	AVX2_SPILL(1);
	AVX2_SPILL(2);
	AVX2_SPILL(3);
	AVX2_SPILL(4);
	AVX2_SPILL(5);
}

/* The sums of packed strips of A, and of A's rows as they are (stride lda). */
__attribute__((target("avx2,fma"), noinline)) static void
avx2_sums_p(int kc, const float *restrict a, const float *restrict b, float *restrict t)
{
	avx2_sums(kc, a, 1, 6, b, t);
}

__attribute__((target("avx2,fma"), noinline)) static void
avx2_sums_d(int kc, const float *restrict a, size_t lda, const float *restrict b,
	    float *restrict t)
{
	avx2_sums(kc, a, lda, 1, b, t);
}

#define AVX2_STORE(i)                                                                              \
	do {                                                                                       \
		float *ci = c + (i)*ldc;                                                           \
		const float *ri = bias ? bias : ci; /* what C holds before the update */           \
		__m256 s0 = _mm256_load_ps(t + (i)*16), s1 = _mm256_load_ps(t + (i)*16 + 8);       \
		if (beta != 0.0f) {                                                                \
			s0 = _mm256_fmadd_ps(va, s0, _mm256_mul_ps(vb, _mm256_loadu_ps(ri)));      \
			s1 = _mm256_fmadd_ps(va, s1, _mm256_mul_ps(vb, _mm256_loadu_ps(ri + 8)));  \
		} else {                                                                           \
			s0 = _mm256_mul_ps(va, s0);                                                \
			s1 = _mm256_mul_ps(va, s1);                                                \
		}                                                                                  \
		if (relu) {                                                                        \
			s0 = _mm256_max_ps(s0, _mm256_setzero_ps());                               \
			s1 = _mm256_max_ps(s1, _mm256_setzero_ps());                               \
		}                                                                                  \
		_mm256_storeu_ps(ci, s0);                                                          \
		_mm256_storeu_ps(ci + 8, s1);                                                      \
	} while (0)

__attribute__((target("avx2,fma"))) static void ukernel_avx2(int kc, const float *restrict a,
							     size_t lda, const float *restrict b,
							     float *restrict c, int ldc, int rows,
							     int cols, float alpha, float beta,
							     const float *bias, int relu)
{
	float t[6 * 16] __attribute__((aligned(32)));

	for (int i = 0; i < rows; i++) {
		__builtin_prefetch(c + i * ldc, 1, 3);
		__builtin_prefetch(c + i * ldc + 15, 1, 3);
	}
	if (lda)
		avx2_sums_d(kc, a, lda, b, t);
	else
		avx2_sums_p(kc, a, b, t);
	if (rows == 6 && cols == 16) {
		__m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);

		AVX2_STORE(0);
		AVX2_STORE(1);
		AVX2_STORE(2);
		AVX2_STORE(3);
		AVX2_STORE(4);
		AVX2_STORE(5);
		return;
	}
	EDGE_UPDATE(16)
}

#define AVX512_ROW(i)                                                 \
	do {                                                          \
		__m512 ai = _mm512_set1_ps(a[(i) * ars]);             \
		c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);           \
		c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);           \
	} while (0)

#define AVX512_STORE(i)                                                                            \
	do {                                                                                       \
		float *ci = c + (i)*ldc;                                                           \
		const float *ri = bias ? bias : ci; /* what C holds before the update */           \
		__m512 v0, v1;                                                                     \
		if (beta != 0.0f) {                                                                \
			v0 = _mm512_fmadd_ps(va, c##i##0, _mm512_mul_ps(vb, _mm512_loadu_ps(ri))); \
			v1 = _mm512_fmadd_ps(va, c##i##1,                                          \
					     _mm512_mul_ps(vb, _mm512_loadu_ps(ri + 16)));         \
		} else {                                                                           \
			v0 = _mm512_mul_ps(va, c##i##0);                                           \
			v1 = _mm512_mul_ps(va, c##i##1);                                           \
		}                                                                                  \
		if (relu) {                                                                        \
			v0 = _mm512_max_ps(v0, _mm512_setzero_ps());                               \
			v1 = _mm512_max_ps(v1, _mm512_setzero_ps());                               \
		}                                                                                  \
		_mm512_storeu_ps(ci, v0);                                                          \
		_mm512_storeu_ps(ci + 16, v1);                                                     \
	} while (0)

#define AVX512_SPILL(i)                                         \
	do {                                                    \
		_mm512_storeu_ps(t + (i) * 32, c##i##0);        \
		_mm512_storeu_ps(t + (i) * 32 + 16, c##i##1);   \
	} while (0)

/* Row i of a strip of 16 columns: one accumulator. */
#define AVX512_ROW16(i)                                               \
	do {                                                          \
		__m512 ai = _mm512_set1_ps(a[(i) * ars]);             \
		c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);           \
	} while (0)

/*
 * R x 32, R = 4, 8 or 12 (12 x 32: twenty-four accumulators of the 32 zmm
 * registers). R is a constant at each call, so the rows past it are not
 * computed at all: the edge strip of 4 rows of a batch of 256 (21 x 12 + 4)
 * costs a third of a full one. Each element's sums are the same chain
 * whatever R is.
 */
#define AVX512_ROWS_W(R, ROW)                  \
	do {                                   \
		ROW(0);                        \
		ROW(1);                        \
		ROW(2);                        \
		ROW(3);                        \
		if ((R) > 4) {                 \
			ROW(4);                \
			ROW(5);                \
			ROW(6);                \
			ROW(7);                \
		}                              \
		if ((R) > 8) {                 \
			ROW(8);                \
			ROW(9);                \
			ROW(10);               \
			ROW(11);               \
		}                              \
	} while (0)
#define AVX512_ROWS(R) AVX512_ROWS_W(R, AVX512_ROW)

__attribute__((target("avx512f,fma"), always_inline)) static inline void
avx512_tile(const int R, int kc, const float *restrict a, size_t ars, size_t aks,
	    const float *restrict b, float *restrict c, int ldc, int rows, int cols, float alpha,
	    float beta, const float *bias, int relu)
{
	__m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
	__m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
	__m512 c60 = c00, c61 = c00, c70 = c00, c71 = c00, c80 = c00, c81 = c00;
	__m512 c90 = c00, c91 = c00, c100 = c00, c101 = c00, c110 = c00, c111 = c00;
	__m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
	float t[12 * 32];

	/* C is read (or written) at the end: fetch its rows meanwhile. */
	for (int i = 0; i < rows; i++) {
		__builtin_prefetch(c + i * ldc, 1, 3);
		__builtin_prefetch(c + i * ldc + 31, 1, 3);
	}
	for (int k = 0; k < kc; k++, a += aks, b += 32) {
		__m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);

		AVX512_ROWS(R);
	}
	if (rows == R && cols == 32) {
		AVX512_STORE(0);
		AVX512_STORE(1);
		AVX512_STORE(2);
		AVX512_STORE(3);
		if (R > 4) {
			AVX512_STORE(4);
			AVX512_STORE(5);
			AVX512_STORE(6);
			AVX512_STORE(7);
		}
		if (R > 8) {
			AVX512_STORE(8);
			AVX512_STORE(9);
			AVX512_STORE(10);
			AVX512_STORE(11);
		}
		return;
	}
	AVX512_SPILL(0);
	AVX512_SPILL(1);
	AVX512_SPILL(2);
	AVX512_SPILL(3);
	if (R > 4) {
		AVX512_SPILL(4);
		AVX512_SPILL(5);
		AVX512_SPILL(6);
		AVX512_SPILL(7);
	}
	if (R > 8) {
		AVX512_SPILL(8);
		AVX512_SPILL(9);
		AVX512_SPILL(10);
		AVX512_SPILL(11);
	}
	EDGE_UPDATE(32)
}

#define AVX512_STORE16(i)                                                                          \
	do {                                                                                       \
		float *ci = c + (i)*ldc;                                                           \
		const float *ri = bias ? bias : ci; /* what C holds before the update */           \
		if ((i) < rows) {                                                                  \
			__m512 v =                                                                 \
			    beta != 0.0f                                                           \
				? _mm512_fmadd_ps(va, c##i##0,                                     \
						  _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, ri))) \
				: _mm512_mul_ps(va, c##i##0);                                      \
			if (relu)                                                                  \
				v = _mm512_max_ps(v, _mm512_setzero_ps());                         \
			_mm512_mask_storeu_ps(ci, m, v);                                           \
		}                                                                                  \
	} while (0)

/*
 * The same for a tile of at most 16 columns (a layer of 10 outputs): the
 * strip's other 16 columns are zeros of the packing, not computed at all.
 * Each element's chain and its update are those of avx512_tile (the masked
 * lanes are the edge loop's elements, one FMA or multiply each).
 */
__attribute__((target("avx512f,fma"), always_inline)) static inline void
avx512_tile16(const int R, int kc, const float *restrict a, size_t ars, size_t aks,
	      const float *restrict b, float *restrict c, int ldc, int rows, int cols, float alpha,
	      float beta, const float *bias, int relu)
{
	__m512 c00 = _mm512_setzero_ps(), c10 = c00, c20 = c00, c30 = c00, c40 = c00, c50 = c00;
	__m512 c60 = c00, c70 = c00, c80 = c00, c90 = c00, c100 = c00, c110 = c00;
	__m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
	__mmask16 m = (__mmask16)((1u << cols) - 1);

	for (int i = 0; i < rows; i++)
		__builtin_prefetch(c + i * ldc, 1, 3);
	for (int k = 0; k < kc; k++, a += aks, b += 32) {
		__m512 b0 = _mm512_load_ps(b);

		AVX512_ROWS_W(R, AVX512_ROW16);
	}
	AVX512_STORE16(0);
	AVX512_STORE16(1);
	AVX512_STORE16(2);
	AVX512_STORE16(3);
	if (R > 4) {
		AVX512_STORE16(4);
		AVX512_STORE16(5);
		AVX512_STORE16(6);
		AVX512_STORE16(7);
	}
	if (R > 8) {
		AVX512_STORE16(8);
		AVX512_STORE16(9);
		AVX512_STORE16(10);
		AVX512_STORE16(11);
	}
}

/* A strip packed with its row stride of 12 (lda 0), or A's rows read in place. */
#define AVX512_TILE(F, R)                                                                          \
	do {                                                                                       \
		if (lda)                                                                           \
			F(R, kc, a, lda, 1, b, c, ldc, rows, cols, alpha, beta, bias, relu);       \
		else                                                                               \
			F(R, kc, a, 1, 12, b, c, ldc, rows, cols, alpha, beta, bias, relu);        \
	} while (0)

__attribute__((target("avx512f,fma"))) static void
ukernel_avx512(int kc, const float *restrict a, size_t lda, const float *restrict b,
	       float *restrict c, int ldc, int rows, int cols, float alpha, float beta,
	       const float *bias, int relu)
{
	if (cols <= 16) {
		if (rows <= 4)
			AVX512_TILE(avx512_tile16, 4);
		else if (rows <= 8)
			AVX512_TILE(avx512_tile16, 8);
		else
			AVX512_TILE(avx512_tile16, 12);
	} else if (rows <= 4) {
		AVX512_TILE(avx512_tile, 4);
	} else if (rows <= 8) {
		AVX512_TILE(avx512_tile, 8);
	} else {
		AVX512_TILE(avx512_tile, 12);
	}
}
/*
 * Packing with a transpose: dst[k][i] = src[i][k] for R rows (R <= 32) read
 * from src + i * ld, rows from `valid` on taken as zero. Blocks of 8 x 8
 * are transposed in registers; a group of fewer than 8 rows is stored with
 * a mask, so nothing is written past the strip. Pure data movement: the
 * packed values are the same as the scalar loop's.
 */
__attribute__((target("avx2"))) static void pack_t_avx2(const float *src, size_t ld, int valid,
							 int R, int kc, float *restrict dst)
{
	static const int lanes[16] = { -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0 };
	int k = 0;

	for (; k + 8 <= kc; k += 8) {
		for (int g = 0; g < R; g += 8) {
			__m256 r[8], t[8], u[8];
			int w = R - g < 8 ? R - g : 8;
			__m256i mask = _mm256_loadu_si256((const __m256i *)(lanes + 8 - w));

			for (int i = 0; i < 8; i++)
				r[i] = g + i < valid && i < w ? _mm256_loadu_ps(src + (size_t)(g + i) * ld + k)
							      : _mm256_setzero_ps();
			for (int i = 0; i < 8; i += 2) {
				t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
				t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
			}
			for (int i = 0; i < 8; i += 4) {
				u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
				u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
				u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
				u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
			}
			for (int i = 0; i < 4; i++) {
				__m256 lo = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
				__m256 hi = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
				float *d0 = dst + (size_t)(k + i) * R + g, *d1 = d0 + (size_t)4 * R;

				if (w == 8) {
					_mm256_storeu_ps(d0, lo);
					_mm256_storeu_ps(d1, hi);
				} else {
					_mm256_maskstore_ps(d0, mask, lo);
					_mm256_maskstore_ps(d1, mask, hi);
				}
			}
		}
	}
	for (; k < kc; k++)
		for (int i = 0; i < R; i++)
			dst[(size_t)k * R + i] = i < valid ? src[(size_t)i * ld + k] : 0.0f;
}

/* A full strip without a transpose: dst[k][0..R) = src[k * ld + 0..R), R a multiple of 8. */
__attribute__((target("avx2"))) static void pack_n_avx2(const float *src, size_t ld, int R, int kc,
							 float *restrict dst)
{
	for (int k = 0; k < kc; k++, src += ld, dst += R)
		for (int j = 0; j < R; j += 8)
			_mm256_storeu_ps(dst + j, _mm256_loadu_ps(src + j));
}

/*
 * GEMV kernels: c[j] = alpha * sum_k a[k] * op(B)[k][j] + beta * c[j] for
 * j < n (beta == 0 leaves c unread). With tb, column j of op(B) is the row
 * B + j * ldb and each c[j] is a dot product (16 or 8 partial sums, added
 * in a fixed tree); without, the rows of B are combined, k in order.
 */
__attribute__((target("avx512f,fma"))) static void gemv_t_avx512(int K, const float *a,
								  const float *B, size_t ldb, int n,
								  float *c, float alpha, float beta)
{
	__mmask16 tail = (__mmask16)((1u << (K & 15)) - 1);
	int kv = K & ~15, j = 0;

	for (; j + 4 <= n; j += 4, B += 4 * ldb) {
		const float *b1 = B + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
		__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
		float r[4];

		for (int k = 0; k < kv; k += 16) {
			__m512 x = _mm512_loadu_ps(a + k);

			s0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(B + k), s0);
			s1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(b1 + k), s1);
			s2 = _mm512_fmadd_ps(x, _mm512_loadu_ps(b2 + k), s2);
			s3 = _mm512_fmadd_ps(x, _mm512_loadu_ps(b3 + k), s3);
		}
		if (tail) {
			__m512 x = _mm512_maskz_loadu_ps(tail, a + kv);

			s0 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(tail, B + kv), s0);
			s1 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(tail, b1 + kv), s1);
			s2 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(tail, b2 + kv), s2);
			s3 = _mm512_fmadd_ps(x, _mm512_maskz_loadu_ps(tail, b3 + kv), s3);
		}
		r[0] = _mm512_reduce_add_ps(s0);
		r[1] = _mm512_reduce_add_ps(s1);
		r[2] = _mm512_reduce_add_ps(s2);
		r[3] = _mm512_reduce_add_ps(s3);
		for (int i = 0; i < 4; i++)
			c[j + i] = beta != 0.0f ? __builtin_fmaf(alpha, r[i], beta * c[j + i])
						: alpha * r[i];
	}
	for (; j < n; j++, B += ldb) {
		__m512 s0 = _mm512_setzero_ps();
		float r;

		for (int k = 0; k < kv; k += 16)
			s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(B + k), s0);
		if (tail)
			s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, a + kv),
					     _mm512_maskz_loadu_ps(tail, B + kv), s0);
		r = _mm512_reduce_add_ps(s0);
		c[j] = beta != 0.0f ? __builtin_fmaf(alpha, r, beta * c[j]) : alpha * r;
	}
}

__attribute__((target("avx512f,fma"))) static void gemv_n_avx512(int K, const float *a,
								  const float *B, size_t ldb, int n,
								  float *c, float alpha, float beta)
{
	__m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
	int j = 0;

	for (; j + 64 <= n; j += 64) {
		__m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
		const float *b = B + j;

		for (int k = 0; k < K; k++, b += ldb) {
			__m512 x = _mm512_set1_ps(a[k]);

			s0 = _mm512_fmadd_ps(x, _mm512_loadu_ps(b), s0);
			s1 = _mm512_fmadd_ps(x, _mm512_loadu_ps(b + 16), s1);
			s2 = _mm512_fmadd_ps(x, _mm512_loadu_ps(b + 32), s2);
			s3 = _mm512_fmadd_ps(x, _mm512_loadu_ps(b + 48), s3);
		}
		if (beta != 0.0f) {
			s0 = _mm512_fmadd_ps(va, s0, _mm512_mul_ps(vb, _mm512_loadu_ps(c + j)));
			s1 = _mm512_fmadd_ps(va, s1, _mm512_mul_ps(vb, _mm512_loadu_ps(c + j + 16)));
			s2 = _mm512_fmadd_ps(va, s2, _mm512_mul_ps(vb, _mm512_loadu_ps(c + j + 32)));
			s3 = _mm512_fmadd_ps(va, s3, _mm512_mul_ps(vb, _mm512_loadu_ps(c + j + 48)));
		} else {
			s0 = _mm512_mul_ps(va, s0);
			s1 = _mm512_mul_ps(va, s1);
			s2 = _mm512_mul_ps(va, s2);
			s3 = _mm512_mul_ps(va, s3);
		}
		_mm512_storeu_ps(c + j, s0);
		_mm512_storeu_ps(c + j + 16, s1);
		_mm512_storeu_ps(c + j + 32, s2);
		_mm512_storeu_ps(c + j + 48, s3);
	}
	for (; j < n; j += 16) {
		__mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1);
		__m512 s0 = _mm512_setzero_ps();
		const float *b = B + j;

		for (int k = 0; k < K; k++, b += ldb)
			s0 = _mm512_fmadd_ps(_mm512_set1_ps(a[k]), _mm512_maskz_loadu_ps(m, b), s0);
		if (beta != 0.0f)
			s0 = _mm512_fmadd_ps(va, s0, _mm512_mul_ps(vb, _mm512_maskz_loadu_ps(m, c + j)));
		else
			s0 = _mm512_mul_ps(va, s0);
		_mm512_mask_storeu_ps(c + j, m, s0);
	}
}

/* 8 lanes of x summed in a fixed tree. */
__attribute__((target("avx2"))) static inline float hsum_avx2(__m256 x)
{
	__m128 s = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));

	s = _mm_add_ps(s, _mm_movehl_ps(s, s));
	s = _mm_add_ss(s, _mm_movehdup_ps(s));
	return _mm_cvtss_f32(s);
}

__attribute__((target("avx2,fma"))) static void gemv_t_avx2(int K, const float *a, const float *B,
							     size_t ldb, int n, float *c, float alpha,
							     float beta)
{
	static const int lanes[16] = { -1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0 };
	__m256i tail = _mm256_loadu_si256((const __m256i *)(lanes + 8 - (K & 7)));
	int kv = K & ~7;

	for (int j = 0; j < n; j++, B += ldb) {
		__m256 s0 = _mm256_setzero_ps(), s1 = s0;
		float r;
		int k = 0;

		for (; k + 16 <= kv; k += 16) {
			s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(B + k), s0);
			s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(B + k + 8),
					     s1);
		}
		if (k < kv)
			s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(B + k), s0);
		/* the tail's lanes are k % 16, as in the 16-lane kernels: s0 below 8, s1 from 8 */
		if ((K & 7) && !(K & 8)) {
			s0 = _mm256_fmadd_ps(_mm256_maskload_ps(a + kv, tail),
					     _mm256_maskload_ps(B + kv, tail), s0);
			/* the 16-lane tail adds +0 to the lanes it does not use (-0 becomes +0) */
			s1 = _mm256_add_ps(s1, _mm256_setzero_ps());
		} else if (K & 7)
			s1 = _mm256_fmadd_ps(_mm256_maskload_ps(a + kv, tail),
					     _mm256_maskload_ps(B + kv, tail), s1);
		r = hsum_avx2(_mm256_add_ps(s0, s1));
		c[j] = beta != 0.0f ? __builtin_fmaf(alpha, r, beta * c[j]) : alpha * r;
	}
}

__attribute__((target("avx2,fma"))) static void gemv_n_avx2(int K, const float *a, const float *B,
							     size_t ldb, int n, float *c, float alpha,
							     float beta)
{
	int j = 0;

	for (; j + 32 <= n; j += 32) {
		__m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
		__m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
		const float *b = B + j;

		for (int k = 0; k < K; k++, b += ldb) {
			__m256 x = _mm256_set1_ps(a[k]);

			s0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b), s0);
			s1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 8), s1);
			s2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 16), s2);
			s3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(b + 24), s3);
		}
		if (beta != 0.0f) {
			s0 = _mm256_fmadd_ps(va, s0, _mm256_mul_ps(vb, _mm256_loadu_ps(c + j)));
			s1 = _mm256_fmadd_ps(va, s1, _mm256_mul_ps(vb, _mm256_loadu_ps(c + j + 8)));
			s2 = _mm256_fmadd_ps(va, s2, _mm256_mul_ps(vb, _mm256_loadu_ps(c + j + 16)));
			s3 = _mm256_fmadd_ps(va, s3, _mm256_mul_ps(vb, _mm256_loadu_ps(c + j + 24)));
		} else {
			s0 = _mm256_mul_ps(va, s0);
			s1 = _mm256_mul_ps(va, s1);
			s2 = _mm256_mul_ps(va, s2);
			s3 = _mm256_mul_ps(va, s3);
		}
		_mm256_storeu_ps(c + j, s0);
		_mm256_storeu_ps(c + j + 8, s1);
		_mm256_storeu_ps(c + j + 16, s2);
		_mm256_storeu_ps(c + j + 24, s3);
	}
	for (; j < n; j++) {
		float acc = 0.0f;

		for (int k = 0; k < K; k++)
			acc = __builtin_fmaf(a[k], B[(size_t)k * ldb + j], acc);
		c[j] = beta != 0.0f ? __builtin_fmaf(alpha, acc, beta * c[j]) : alpha * acc;
	}
}
#endif


/* sum_k a[k] * b[k] as the SIMD dot products do: lane k % 16, then halves added, 8, 4, 2, 1. */
static inline float dot16(int K, const float *a, const float *b)
{
	float l[16] = { 0 };

	for (int k = 0; k < K; k++)
		l[k & 15] = __builtin_fmaf(a[k], b[k], l[k & 15]);
	/* the SIMD tail adds +0 (a masked-off product) to the lanes it does not use */
	if (K & 15)
		for (int i = K & 15; i < 16; i++)
			l[i] = l[i] + 0.0f;
	for (int w = 8; w > 0; w /= 2)
		for (int i = 0; i < w; i++)
			l[i] = l[i] + l[i + w];
	return l[0];
}

PORTABLE_CLONES static void gemv_t_portable(int K, const float *a, const float *B, size_t ldb,
					    int n, float *c, float alpha, float beta)
{
	for (int j = 0; j < n; j++, B += ldb) {
		float r = dot16(K, a, B);

		c[j] = beta != 0.0f ? __builtin_fmaf(alpha, r, beta * c[j]) : alpha * r;
	}
}

PORTABLE_CLONES static void gemv_n_portable(int K, const float *a, const float *B, size_t ldb,
					    int n, float *c, float alpha, float beta)
{
	for (int j = 0; j < n; j++) {
		float acc = 0.0f;

		for (int k = 0; k < K; k++)
			acc = __builtin_fmaf(a[k], B[(size_t)k * ldb + j], acc);
		c[j] = beta != 0.0f ? __builtin_fmaf(alpha, acc, beta * c[j]) : alpha * acc;
	}
}

static const struct ukernel kernels[] = {
#if defined(__x86_64__) || defined(__i386__)
	{ "avx512", 12, 32, ukernel_avx512, gemv_t_avx512, gemv_n_avx512 },
	{ "avx2", 6, 16, ukernel_avx2, gemv_t_avx2, gemv_n_avx2 },
#endif
	{ "portable", 4, 16, ukernel_portable, gemv_t_portable, gemv_n_portable },
};

static int supported(const struct ukernel *k)
{
#if defined(__x86_64__) || defined(__i386__)
	if (!strcmp(k->name, "avx512"))
		return mc_cpu_has(MC_CPU_AVX512F);
	if (!strcmp(k->name, "avx2"))
		return mc_cpu_has(MC_CPU_AVX2) && mc_cpu_has(MC_CPU_FMA);
#endif
	return 1;
}

static const struct ukernel *find_kernel(const char *name)
{
	for (size_t i = 0; i < sizeof(kernels) / sizeof(kernels[0]); i++)
		if ((!name || !strcmp(kernels[i].name, name)) && supported(&kernels[i]))
			return &kernels[i];
	return NULL;
}

static const struct ukernel *chosen;

/* The fastest kernel (the table is in that order), or the one MCOMP_GEMM names. */
static const struct ukernel *kernel(void)
{
	const struct ukernel *p = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);

	if (!p) {
		p = find_kernel(getenv("MCOMP_GEMM"));
		if (!p)
			p = find_kernel(NULL);
		__atomic_store_n(&chosen, p, __ATOMIC_RELEASE);
	}
	return p;
}

int mc_sgemm_use(const char *name)
{
	const struct ukernel *p = name ? find_kernel(name) : NULL;

	if (!p)
		return MC_EINVAL;
	__atomic_store_n(&chosen, p, __ATOMIC_RELEASE);
	return 0;
}

const char *mc_sgemm_kernel(void)
{
	return kernel()->name;
}

/* Element (i, k) of op(A) and (k, j) of op(B). */
#define OPA(i, k) (ta ? A[(size_t)(k) * lda + (i)] : A[(size_t)(i) * lda + (k)])
#define OPB(k, j) (tb ? B[(size_t)(j) * ldb + (k)] : B[(size_t)(k) * ldb + (j)])

void mc_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
		  const float *B, int ldb, float beta, float *C, int ldc)
{
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++) {
			double acc = 0;
			float *c = &C[(size_t)i * ldc + j];

			for (int k = 0; k < K; k++)
				acc += (double)OPA(i, k) * OPB(k, j);
			*c = (float)(alpha * acc + (beta != 0.0f ? (double)beta * *c : 0.0));
		}
}

/* Rows [r0, r0 + mr) (zero past M) of op(A), columns [p0, p0 + kc), as dst[k][i]. */
static void pack_a(int ta, const float *A, int lda, int M, int r0, int p0, int kc, int mr,
		   float *restrict dst)
{
	int rows = M - r0 < mr ? M - r0 : mr;

	if (ta) {
		for (int k = 0; k < kc; k++) {
			const float *src = A + (size_t)(p0 + k) * lda + r0;
			float *d = dst + (size_t)k * mr;
			int i;

			for (i = 0; i < rows; i++)
				d[i] = src[i];
			for (; i < mr; i++)
				d[i] = 0.0f;
		}
		return;
	}
#if defined(__x86_64__) || defined(__i386__)
	if (mc_cpu_has(MC_CPU_AVX2)) {
		pack_t_avx2(A + (size_t)r0 * lda + p0, (size_t)lda, rows, mr, kc, dst);
		return;
	}
#endif
	for (int i = 0; i < mr; i++) {
		if (i < rows) {
			const float *src = A + (size_t)(r0 + i) * lda + p0;

			for (int k = 0; k < kc; k++)
				dst[(size_t)k * mr + i] = src[k];
		} else {
			for (int k = 0; k < kc; k++)
				dst[(size_t)k * mr + i] = 0.0f;
		}
	}
}

/* Columns [c0, c0 + nr) (zero past N) of op(B), rows [p0, p0 + kc), as dst[k][j]. */
static void pack_b(int tb, const float *B, int ldb, int N, int c0, int p0, int kc, int nr,
		   float *restrict dst)
{
	int cols = N - c0 < nr ? N - c0 : nr;

	if (!tb) {
#if defined(__x86_64__) || defined(__i386__)
		if (cols == nr && nr % 8 == 0 && mc_cpu_has(MC_CPU_AVX2)) {
			pack_n_avx2(B + (size_t)p0 * ldb + c0, (size_t)ldb, nr, kc, dst);
			return;
		}
#endif
		for (int k = 0; k < kc; k++) {
			const float *src = B + (size_t)(p0 + k) * ldb + c0;
			float *d = dst + (size_t)k * nr;
			int j;

			for (j = 0; j < cols; j++)
				d[j] = src[j];
			for (; j < nr; j++)
				d[j] = 0.0f;
		}
		return;
	}
#if defined(__x86_64__) || defined(__i386__)
	if (mc_cpu_has(MC_CPU_AVX2)) {
		pack_t_avx2(B + (size_t)c0 * ldb + p0, (size_t)ldb, cols, nr, kc, dst);
		return;
	}
#endif
	for (int j = 0; j < nr; j++) {
		if (j < cols) {
			const float *src = B + (size_t)(c0 + j) * ldb + p0;

			for (int k = 0; k < kc; k++)
				dst[(size_t)k * nr + j] = src[k];
		} else {
			for (int k = 0; k < kc; k++)
				dst[(size_t)k * nr + j] = 0.0f;
		}
	}
}

/* C = beta * C, for K == 0 or alpha == 0; beta == 0 clears C (NaN included). */
static void scale_c(int M, int N, float beta, float *C, int ldc)
{
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++)
			C[(size_t)i * ldc + j] = beta != 0.0f ? beta * C[(size_t)i * ldc + j] : 0.0f;
}

static size_t round_up(size_t x, size_t m)
{
	return (x + m - 1) / m * m;
}

/* Rows of A (not transposed) times op(B): columns in items of GEMV_COLS. */
static void gemv(const struct ukernel *uk, int tb, int M, int N, int K, float alpha,
		 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc)
{
	int items = (N + GEMV_COLS - 1) / GEMV_COLS;

	/*
	 * Split when B is large, not only when the work is: a batch-1 forward
	 * pass is bound by reading B, and a static split keeps each thread's
	 * columns of B in its own L2 from one call to the next.
	 */
#pragma omp parallel for schedule(static) if ((double)N * K >= GEMV_PAR_B && items > 1)
	for (int t = 0; t < items * M; t++) {
		int i = t / items, j = (t % items) * GEMV_COLS;
		int n = N - j < GEMV_COLS ? N - j : GEMV_COLS;
		const float *a = A + (size_t)i * lda;
		float *c = C + (size_t)i * ldc + j;

		if (tb)
			uk->gemv_t(K, a, B + (size_t)j * ldb, (size_t)ldb, n, c, alpha, beta);
		else
			uk->gemv_n(K, a, B + j, (size_t)ldb, n, c, alpha, beta);
	}
}

/*
 * How a team of `threads` shares a block of mstrips x nstrips strips: a
 * grid of pm x pn rectangles, one per thread, with the largest rectangle as
 * small as it can be (then the squarest). Fixed by the shape and the team
 * size, so each thread keeps its rows of A, its columns of B and its part
 * of C, in its own cache, from one K slice to the next.
 */
static void team_grid(int mstrips, int nstrips, int mr, int nr, int threads, int *pm, int *pn)
{
	long best = -1, skew = 0;

	*pm = 1;
	*pn = threads;

	for (int a = 1; a <= threads; a++) {
		int b = threads / a;
		long w, d;

		if (threads % a)
			continue;
		w = (long)((mstrips + a - 1) / a) * ((nstrips + b - 1) / b);
		d = labs((long)((mstrips + a - 1) / a) * mr - (long)((nstrips + b - 1) / b) * nr);
		if (best < 0 || w < best || (w == best && d < skew)) {
			best = w;
			skew = d;
			*pm = a;
			*pn = b;
		}
	}
}

/* Part p of P near-equal parts of [0, n): [*lo, *hi). */
static void part(int n, int p, int P, int *lo, int *hi)
{
	*lo = (int)((long)n * p / P);
	*hi = (int)((long)n * (p + 1) / P);
}

/*
 * Packing space, kept per calling thread from one call to the next: a fresh
 * allocation of a few MB per call costs page faults (glibc returns it to
 * the system on free), which at 512 took a third of the time. Freed when
 * the thread exits, and for the thread that unloads the library.
 */
struct pack_space {
	void *p;
	size_t size;
};

static pthread_key_t space_key;
static pthread_once_t space_once = PTHREAD_ONCE_INIT;
static int space_key_ok;

static void space_free(void *p)
{
	struct pack_space *s = p;

	free(s->p);
	free(s);
}

static void space_init(void)
{
	space_key_ok = !pthread_key_create(&space_key, space_free);
}

__attribute__((destructor)) static void space_exit(void)
{
	struct pack_space *s;

	if (!space_key_ok)
		return;
	s = pthread_getspecific(space_key);
	if (s) {
		pthread_setspecific(space_key, NULL);
		space_free(s);
	}
	pthread_key_delete(space_key);
	space_key_ok = 0;
}

/* At least size bytes, 64-byte aligned, owned by the calling thread; NULL when out of memory. */
static void *pack_space(size_t size)
{
	struct pack_space *s;

	pthread_once(&space_once, space_init);
	if (!space_key_ok)
		return NULL;
	s = pthread_getspecific(space_key);
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return NULL;
		if (pthread_setspecific(space_key, s)) {
			free(s);
			return NULL;
		}
	}
	if (s->size < size) {
		free(s->p);
		s->p = aligned_alloc(64, size);
		s->size = s->p ? size : 0;
	}
	return s->p;
}

/* A work counter on a cache line of its own. */
struct share {
	int next;
	char pad[64 - sizeof(int)];
};

/* The parts of a block that thread v owns: its rectangle and its share of the packing. */
struct own {
	int m0, m1, n0, n1; /* strips of A and of B its tiles use */
	int a0, a1, b0, b1; /* strips of A and of B it packs */
};

static void owned(int v, int pm, int pn, int mstrips, int nstrips, int pack_b_too, struct own *o)
{
	int r = v / pn, q = v % pn, lo, hi;

	part(mstrips, r, pm, &o->m0, &o->m1);
	part(nstrips, q, pn, &o->n0, &o->n1);
	part(o->m1 - o->m0, q, pn, &lo, &hi);
	o->a0 = o->m0 + lo;
	o->a1 = o->m0 + hi;
	part(o->n1 - o->n0, r, pm, &lo, &hi);
	o->b0 = o->n0 + lo;
	o->b1 = pack_b_too ? o->n0 + hi : o->b0;
}

/* The next unit of work: the thread's own first, then other threads' left over. */
static int next_unit(struct share *cnt, int me, int threads, int *v, int *w,
		     int (*count)(const void *, int), const void *ctx)
{
	for (; *v < threads; ++*v) {
		int u;

		*w = (me + *v) % threads;
		u = __atomic_fetch_add(&cnt[*w].next, 1, __ATOMIC_RELAXED);
		if (u < count(ctx, *w))
			return u;
	}
	return -1;
}

struct block {
	int pm, pn, mstrips, nstrips, pack_b;
};

static int pack_count(const void *ctx, int w)
{
	const struct block *b = ctx;
	struct own o;

	owned(w, b->pm, b->pn, b->mstrips, b->nstrips, b->pack_b, &o);
	return (o.b1 - o.b0) + (o.a1 - o.a0);
}

static int tile_count(const void *ctx, int w)
{
	const struct block *b = ctx;
	struct own o;

	owned(w, b->pm, b->pn, b->mstrips, b->nstrips, 0, &o);
	return (o.m1 - o.m0 + MB - 1) / MB * (o.n1 - o.n0);
}

/*
 * B packed once (mc_sgemm_pack_b): for each K slice of KC (the last one
 * shorter), its NR-wide strips one after another, zero past N: the slice
 * at depth pk starts at pk * round_up(N, NR), strip s of it at s * kc * NR,
 * exactly as the GEMM packs them for itself, so the product is the same.
 */
size_t mc_sgemm_packed_size(const char *kernel_name, int N, int K)
{
	const struct ukernel *uk = find_kernel(kernel_name);

	if (!uk || N <= 0 || K <= 0)
		return 0;
	return round_up((size_t)N, (size_t)uk->nr) * (size_t)K;
}

void mc_sgemm_pack_b(const char *kernel_name, int tb, int N, int K, const float *B, int ldb,
		     float *dst)
{
	const struct ukernel *uk = find_kernel(kernel_name);
	int nr, strips;
	size_t npad;

	if (!uk || N <= 0 || K <= 0)
		return;
	nr = uk->nr;
	strips = (N + nr - 1) / nr;
	npad = (size_t)strips * (size_t)nr;
#pragma omp parallel for schedule(static) if ((double)N * K >= PAR_MIN)
	for (int s = 0; s < strips; s++)
		for (int pk = 0; pk < K; pk += KC) {
			int kc = K - pk < KC ? K - pk : KC;

			pack_b(tb, B, ldb, N, s * nr, pk, kc, nr,
			       dst + (size_t)pk * npad + (size_t)s * kc * nr);
		}
}

static void sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
		  const float *B, int ldb, float beta, float *C, int ldc);

void mc_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
	      const float *B, int ldb, float beta, float *C, int ldc)
{
	sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/*
 * A 4 x 16 tile of mc_sgemm_tn_chain at (i0, j0), held in registers over
 * the K rows: each element one FMA per k, in order. The portable loop and
 * the AVX2 one (chosen when the GEMM runs an x86 SIMD kernel) give the
 * same bytes: an FMA rounds once either way.
 */
PORTABLE_CLONES static void chain_tile(int K, const float *restrict A, int lda,
				       const float *restrict B, int ldb, float *restrict C,
				       int ldc)
{
	float acc[4][16];

	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 16; j++)
			acc[i][j] = C[(size_t)i * ldc + j];
	for (int k = 0; k < K; k++, A += lda, B += ldb)
		for (int i = 0; i < 4; i++)
			for (int j = 0; j < 16; j++)
				acc[i][j] = __builtin_fmaf(A[i], B[j], acc[i][j]);
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 16; j++)
			C[(size_t)i * ldc + j] = acc[i][j];
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2,fma"))) static void chain_tile_avx2(int K, const float *A, int lda,
								 const float *B, int ldb, float *C,
								 int ldc)
{
	__m256 c00 = _mm256_loadu_ps(C), c01 = _mm256_loadu_ps(C + 8);
	__m256 c10 = _mm256_loadu_ps(C + ldc), c11 = _mm256_loadu_ps(C + ldc + 8);
	__m256 c20 = _mm256_loadu_ps(C + 2 * ldc), c21 = _mm256_loadu_ps(C + 2 * ldc + 8);
	__m256 c30 = _mm256_loadu_ps(C + 3 * ldc), c31 = _mm256_loadu_ps(C + 3 * ldc + 8);

	for (int k = 0; k < K; k++, A += lda, B += ldb) {
		__m256 b0 = _mm256_loadu_ps(B), b1 = _mm256_loadu_ps(B + 8), a;

		a = _mm256_broadcast_ss(A);
		c00 = _mm256_fmadd_ps(a, b0, c00);
		c01 = _mm256_fmadd_ps(a, b1, c01);
		a = _mm256_broadcast_ss(A + 1);
		c10 = _mm256_fmadd_ps(a, b0, c10);
		c11 = _mm256_fmadd_ps(a, b1, c11);
		a = _mm256_broadcast_ss(A + 2);
		c20 = _mm256_fmadd_ps(a, b0, c20);
		c21 = _mm256_fmadd_ps(a, b1, c21);
		a = _mm256_broadcast_ss(A + 3);
		c30 = _mm256_fmadd_ps(a, b0, c30);
		c31 = _mm256_fmadd_ps(a, b1, c31);
	}
	_mm256_storeu_ps(C, c00);
	_mm256_storeu_ps(C + 8, c01);
	_mm256_storeu_ps(C + ldc, c10);
	_mm256_storeu_ps(C + ldc + 8, c11);
	_mm256_storeu_ps(C + 2 * ldc, c20);
	_mm256_storeu_ps(C + 2 * ldc + 8, c21);
	_mm256_storeu_ps(C + 3 * ldc, c30);
	_mm256_storeu_ps(C + 3 * ldc + 8, c31);
}
#endif

/* The same for a tile at the edge, rows x cols (at most 4 x 16), element by element. */
PORTABLE_CLONES static void chain_edge(int K, const float *A, int lda, const float *B, int ldb,
				       float *C, int ldc, int rows, int cols)
{
	for (int i = 0; i < rows; i++)
		for (int j = 0; j < cols; j++) {
			float acc = C[(size_t)i * ldc + j];

			for (int k = 0; k < K; k++)
				acc = __builtin_fmaf(A[(size_t)k * lda + i], B[(size_t)k * ldb + j], acc);
			C[(size_t)i * ldc + j] = acc;
		}
}

void mc_sgemm_tn_chain(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
		       float *C, int ldc, int last)
{
	int mb = (M + 3) / 4, nb = (N + 15) / 16;
	void (*tile)(int, const float *, int, const float *, int, float *, int) = chain_tile;

#if defined(__x86_64__) || defined(__i386__)
	if (strcmp(kernel()->name, "portable"))
		tile = chain_tile_avx2;
#endif

#pragma omp parallel for schedule(static) if ((double)M * N * K >= PAR_MIN)
	for (int t = 0; t < mb * nb; t++) {
		int i0 = t / nb * 4, j0 = t % nb * 16;
		int rows = M - i0 < 4 ? M - i0 : 4, cols = N - j0 < 16 ? N - j0 : 16;
		float *c = C + (size_t)i0 * ldc + j0;

		if (rows == 4 && cols == 16)
			tile(K, A + i0, lda, B + j0, ldb, c, ldc);
		else
			chain_edge(K, A + i0, lda, B + j0, ldb, c, ldc, rows, cols);
		/* stored as the kernels store C = acc + C onto a zeroed C */
		for (int i = 0; last && i < rows; i++)
			for (int j = 0; j < cols; j++)
				c[(size_t)i * ldc + j] += 0.0f;
	}
}

/* C[M, N] = bias in every row (zeros without): the start of a product with beta 1. */
static void fill_bias(int M, int N, const float *bias, float *C, int ldc)
{
	for (int i = 0; i < M; i++)
		memcpy(C + (size_t)i * ldc, bias, (size_t)N * sizeof(float));
}

/*
 * C = max(C, 0) as a select (NaN -> 0, -0 -> 0), like the relu op: maxps
 * returns its second operand (0) unless the first is greater, the same
 * select. Vectors, not a branch per element: the signs of a layer's outputs
 * are a coin toss, and the mispredicted branches took a tenth of an MLP's
 * forward pass.
 */
static void relu_rows_scalar(int M, int N, float *C, int ldc)
{
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++) {
			float *c = C + (size_t)i * ldc + j;

			*c = *c > 0.0f ? *c : 0.0f;
		}
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f"))) static void relu_rows_avx512(int M, int N, float *C, int ldc)
{
	__m512 z = _mm512_setzero_ps();

	for (int i = 0; i < M; i++) {
		float *c = C + (size_t)i * ldc;
		int j = 0;

		for (; j + 16 <= N; j += 16)
			_mm512_storeu_ps(c + j, _mm512_max_ps(_mm512_loadu_ps(c + j), z));
		if (j < N) {
			__mmask16 m = (__mmask16)((1u << (N - j)) - 1);

			_mm512_mask_storeu_ps(c + j, m, _mm512_max_ps(_mm512_maskz_loadu_ps(m, c + j), z));
		}
	}
}

__attribute__((target("avx2"))) static void relu_rows_avx2(int M, int N, float *C, int ldc)
{
	__m256 z = _mm256_setzero_ps();

	for (int i = 0; i < M; i++) {
		float *c = C + (size_t)i * ldc;
		int j = 0;

		for (; j + 8 <= N; j += 8)
			_mm256_storeu_ps(c + j, _mm256_max_ps(_mm256_loadu_ps(c + j), z));
		for (; j < N; j++)
			c[j] = c[j] > 0.0f ? c[j] : 0.0f;
	}
}
#endif

static void relu_rows(int M, int N, float *C, int ldc)
{
#if defined(__x86_64__) || defined(__i386__)
	const char *k = kernel()->name;

	if (!strcmp(k, "avx512")) {
		relu_rows_avx512(M, N, C, ldc);
		return;
	}
	if (!strcmp(k, "avx2")) {
		relu_rows_avx2(M, N, C, ldc);
		return;
	}
#endif
	relu_rows_scalar(M, N, C, ldc);
}

static void sgemm_prepacked(const struct ukernel *uk, int M, int N, int K, float alpha,
			    const float *A, int lda, const float *bpre, const float *bias, int relu,
			    float beta, float *C, int ldc, int par,
			    const struct mc_sgemm_side *side);

int mc_sgemm_pb_side(const char *kernel_name, int tb, int M, int N, int K, float alpha,
		     const float *A, int lda, const float *B, int ldb, const float *packed,
		     const float *bias, int relu, float beta, float *C, int ldc,
		     const struct mc_sgemm_side *side)
{
	const struct ukernel *uk = kernel();

	if (strcmp(kernel_name, uk->name))
		return -1;
	if (M <= 0 || N <= 0 || M <= GEMV_ROWS || K <= 0 || alpha == 0.0f) {
		/* No tiles to run the items beside: one after another, first. */
		for (int64_t i = 0; side && i < side->items; i++)
			side->fn(side->arg, i);
		side = NULL;
	}
	if (M <= 0 || N <= 0)
		return 0;
	if (bias)
		beta = 1.0f;
	if (M <= GEMV_ROWS || K <= 0 || alpha == 0.0f) {
		/* What the caller would do around mc_sgemm, step by step. */
		if (bias)
			fill_bias(M, N, bias, C, ldc);
		sgemm(0, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
		if (relu)
			relu_rows(M, N, C, ldc);
		return 0;
	}
	sgemm_prepacked(uk, M, N, K, alpha, A, lda, packed, bias, relu, beta, C, ldc,
			(double)M * N * K >= PB_PAR_MIN, side);
	return 0;
}

int mc_sgemm_pb(const char *kernel_name, int tb, int M, int N, int K, float alpha, const float *A,
		int lda, const float *B, int ldb, const float *packed, const float *bias, int relu,
		float beta, float *C, int ldc)
{
	return mc_sgemm_pb_side(kernel_name, tb, M, N, K, alpha, A, lda, B, ldb, packed, bias, relu,
				beta, C, ldc, NULL);
}

/*
 * The largest of parts parts of n elements cut at strips of s (part()'s
 * cuts, the last strip shorter when s does not divide n).
 */
static int largest_part(int n, int s, int parts)
{
	int strips = (n + s - 1) / s, most = 0;

	for (int p = 0; p < parts; p++) {
		int lo, hi, len;

		part(strips, p, parts, &lo, &hi);
		len = (hi * s < n ? hi * s : n) - lo * s;
		if (len > most)
			most = len;
	}
	return most;
}

/*
 * team_grid for a product whose threads share nothing but a K loop each:
 * the grid whose largest rectangle has the fewest elements of C, counted
 * in rows and columns rather than strips (a last strip of A of 4 rows is
 * a third of a full one: at 256 x 256 and two threads, halves of 22 x 8
 * strips were 132 and 124 rows, halves of the columns are equal), then
 * the squarest.
 */
static void team_grid_exact(int M, int N, int threads, int *pm, int *pn, int mr, int nr)
{
	long best = -1, skew = 0;

	*pm = 1;
	*pn = threads;
	for (int a = 1; a <= threads; a++) {
		int b = threads / a, rows, cols;
		long w, d;

		if (threads % a)
			continue;
		rows = largest_part(M, mr, a);
		cols = largest_part(N, nr, b);
		w = (long)rows * cols;
		d = labs((long)rows - cols);
		if (best < 0 || w < best || (w == best && d < skew)) {
			best = w;
			skew = d;
			*pm = a;
			*pn = b;
		}
	}
}

#define PB_ROWS 96 /* strips of A a thread runs against B's strips before the next ones */

/*
 * A not transposed and B packed beforehand: nothing is shared, so each
 * thread runs its own rectangle of C (the team's grid over the whole
 * product) through every K slice in order, with no barrier and no
 * packing but that of a last strip of fewer than MR rows, into the
 * thread's own buffer. Each element gets the sequence of the blocked
 * loop in sgemm: for each K slice in order, its sums, then alpha and beta.
 * With bias, the micro-kernel's first slice reads the bias where it would
 * read C (the product then adds to it with beta 1), and with relu its last
 * slice clamps the values it stores: those of a bias copied into C first
 * and a relu pass after, without the copy, the pass, or a reload of the
 * tile for either.
 */
static void sgemm_prepacked(const struct ukernel *uk, int M, int N, int K, float alpha,
			    const float *A, int lda, const float *bpre, const float *bias, int relu,
			    float beta, float *C, int ldc, int par,
			    const struct mc_sgemm_side *side)
{
	const int mr = uk->mr, nr = uk->nr;
	const int mstrips = (M + mr - 1) / mr, nstrips = (N + nr - 1) / nr;
	const size_t npad = (size_t)nstrips * (size_t)nr;
	int maxt = par ? omp_get_max_threads() : 1;

#pragma omp parallel if (par) num_threads(maxt)
	{
		int threads = omp_get_num_threads(), me = omp_get_thread_num();
		int pm, pn, m0, m1, n0, n1;
		float edge[KC * 12] __attribute__((aligned(64))); /* MR is at most 12 */

		team_grid_exact(M, N, threads, &pm, &pn, mr, nr);
		part(mstrips, me / pn, pm, &m0, &m1);
		part(nstrips, me % pn, pn, &n0, &n1);
		/* The side items first: one stream of reads, the prefetchers' best case. */
		for (int64_t i = side ? side->items * me / threads : 0,
			     e = side ? side->items * (me + 1) / threads : 0;
		     i < e; i++)
			side->fn(side->arg, i);
		for (int ib = m0; ib < m1; ib += PB_ROWS) {
			int ie = ib + PB_ROWS < m1 ? ib + PB_ROWS : m1;

			for (int pk = 0; pk < K; pk += KC) {
				int kc = K - pk < KC ? K - pk : KC, packed = 0;
				float beta_k = pk == 0 ? beta : 1.0f;
				const float *bs = bpre + (size_t)pk * npad;

				for (int j = n0; j < n1; j++)
					for (int i = ib; i < ie; i++) {
						int rows = M - i * mr < mr ? M - i * mr : mr;
						int cols = N - j * nr < nr ? N - j * nr : nr;

						float *ct = C + (size_t)i * mr * ldc + (size_t)j * nr;

						if (rows < mr && !packed) {
							pack_a(0, A, lda, M, i * mr, pk, kc, mr, edge);
							packed = 1;
						}
						/* the bias with the first slice, the relu with the
						 * last */
						uk->fn(kc,
						       rows < mr ? edge
								 : A + (size_t)i * mr * lda + pk,
						       rows < mr ? 0 : (size_t)lda,
						       bs + (size_t)j * kc * nr, ct, ldc, rows,
						       cols, alpha, beta_k,
						       pk == 0 && bias ? bias + (size_t)j * nr
								       : NULL,
						       relu && pk + kc >= K);
					}
			}
		}
	}
}

static void sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
		  const float *B, int ldb, float beta, float *C, int ldc)
{
	const struct ukernel *uk = kernel();
	const int mr = uk->mr, nr = uk->nr;
	size_t mcc, ncc, kc0, abuf, bbuf, asz, bsz;
	int par, maxt, direct;
	float *ap, *bp;
	struct share *cnt;

	if (M <= 0 || N <= 0)
		return;
	if (K <= 0 || alpha == 0.0f) {
		scale_c(M, N, beta, C, ldc);
		return;
	}
	if (M <= GEMV_ROWS && !ta) {
		gemv(uk, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
		return;
	}
	/* Small products are not worth waking the team; the result is the same. */
	par = (double)M * N * K >= PAR_MIN;
	mcc = round_up((size_t)M, (size_t)mr);
	if (mcc > MCC)
		mcc = MCC;
	ncc = round_up((size_t)N, (size_t)nr);
	if (ncc > NCC)
		ncc = NCC;
	kc0 = (size_t)K < KC ? (size_t)K : KC;
	abuf = mcc * kc0;
	bbuf = ncc * kc0;
	/* A not transposed is read where it is, but for a last strip of fewer than MR rows. */
	direct = !ta;
	maxt = par ? omp_get_max_threads() : 1;
	/* Two buffers each: a slice is packed while the last one may still be read. */
	asz = round_up(2 * abuf * sizeof(float), 64);
	bsz = round_up(2 * bbuf * sizeof(float), 64);
	ap = pack_space(asz + bsz + 4 * (size_t)maxt * sizeof(*cnt));
	if (!ap) {
		/* Out of memory for a few MB of packing space: slower, still correct. */
		mc_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
		return;
	}
	bp = (float *)((char *)ap + asz);
	cnt = (struct share *)((char *)bp + bsz);
	memset(cnt, 0, 4 * (size_t)maxt * sizeof(*cnt));

	/*
	 * Steps of (K slice, block of columns, block of rows), in that order.
	 * Per step the team packs the slice of A (and of B, with the first
	 * block of rows) into the buffers the step before last used, meets at
	 * one barrier, then runs the tiles. Each thread owns a rectangle of
	 * the block, fixed by its shape, and packs and runs that first, so its
	 * A, B and C stay in its cache from one slice to the next; then it
	 * takes what other threads have not started (a thread the OS put
	 * aside delays no one). Who runs a tile does not matter to its result:
	 * the barrier orders the slices, and every element is, for each K
	 * slice in order, acc = sum over k in order (FMA), then
	 * C = alpha * acc + beta' * C, for any thread count.
	 *
	 * Counters: cnt[(step % 2) * 2 * maxt + maxt * phase + thread]; a
	 * thread resets its counters of the next packing and of this step's
	 * tiles before the barrier, when nobody uses them any more.
	 */
#pragma omp parallel if (par) num_threads(maxt)
	{
		int threads = omp_get_num_threads(), me = omp_get_thread_num();
		int step = 0, nb = 0;

		for (int pk = 0; pk < K; pk += KC) {
			int kc = K - pk < KC ? K - pk : KC;
			float beta_k = pk == 0 ? beta : 1.0f;

			for (int jc = 0; jc < N; jc += (int)ncc, nb++) {
				int nc = N - jc < (int)ncc ? N - jc : (int)ncc;
				float *bq = bp + (size_t)(nb % 2) * bbuf;

				for (int ic = 0; ic < M; ic += (int)mcc, step++) {
					int mc = M - ic < (int)mcc ? M - ic : (int)mcc;
					float *aq = ap + (size_t)(step % 2) * abuf;
					struct share *pc = cnt + (size_t)(step % 2) * 2 * maxt;
					struct share *tc = pc + maxt;
					struct block blk;
					struct own o;
					int v = 0, w, u;

					blk.mstrips = (mc + mr - 1) / mr;
					blk.nstrips = (nc + nr - 1) / nr;
					blk.pack_b = ic == 0;
					team_grid(blk.mstrips, blk.nstrips, mr, nr, threads, &blk.pm,
						  &blk.pn);
					while ((u = next_unit(pc, me, threads, &v, &w, pack_count,
							      &blk)) >= 0) {
						owned(w, blk.pm, blk.pn, blk.mstrips, blk.nstrips,
						      blk.pack_b, &o);
						if (u < o.b1 - o.b0) {
							int s = o.b0 + u;

							pack_b(tb, B, ldb, N, jc + s * nr, pk, kc, nr,
							       bq + (size_t)s * kc * nr);
						} else {
							int s = o.a0 + u - (o.b1 - o.b0);

							if (!direct || ic + (s + 1) * mr > M)
								pack_a(ta, A, lda, M, ic + s * mr, pk, kc,
								       mr, aq + (size_t)s * kc * mr);
						}
					}
					tc[me].next = 0;
					cnt[(size_t)((step + 1) % 2) * 2 * maxt + me].next = 0;
#pragma omp barrier
					v = 0;
					while ((u = next_unit(tc, me, threads, &v, &w, tile_count,
							      &blk)) >= 0) {
						int nj, ib, j;

						owned(w, blk.pm, blk.pn, blk.mstrips, blk.nstrips, 0,
						      &o);
						nj = o.n1 - o.n0;
						ib = o.m0 + u / nj * MB;
						j = o.n0 + u % nj;
						for (int i = ib; i < o.m1 && i < ib + MB; i++)
							uk->fn(
							    kc,
							    direct && ic + (i + 1) * mr <= M
								? A + (size_t)(ic + i * mr) * lda +
								      pk
								: aq + (size_t)i * kc * mr,
							    direct && ic + (i + 1) * mr <= M
								? (size_t)lda
								: 0,
							    bq + (size_t)j * kc * nr,
							    C + (size_t)(ic + i * mr) * ldc + jc +
								j * nr,
							    ldc,
							    mc - i * mr < mr ? mc - i * mr : mr,
							    nc - j * nr < nr ? nc - j * nr : nr,
							    alpha, beta_k, NULL, 0);
					}
				}
			}
		}
	}
}
