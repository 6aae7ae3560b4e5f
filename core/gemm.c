/* SPDX-License-Identifier: MIT */
/*
 * gemm.c - single-precision GEMM: a packed, cache-blocked kernel with SIMD
 * micro-kernels chosen at run time, and the reference loop beside it.
 *
 * Blocking (after BLIS / Goto): K is cut into KC-deep slices; for up to
 * KCC_SLICES slices at a time, B is packed into NR-wide strips and A into
 * MR-tall strips; then tiles of MB x NB outputs are shared out among OpenMP
 * threads, and each tile runs through the slices, a loop of MR x NR
 * micro-kernel calls per slice. Few barriers per call keep it fast on a
 * busy machine too. Every output element is computed by one
 * thread as: for each K slice in order, acc = sum over k in order (FMA),
 * then C = alpha * acc + beta' * C. That sequence does not depend on which
 * thread runs the tile nor on the micro-kernel's width, so the result is
 * bit-identical for any thread count and for the AVX2 and AVX-512 kernels.
 */
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/tensor.h>

#define KC 256	     /* depth of a packed slice: an NR strip of B (16 KB) stays in L1 */
#define TILE_STRIPS 8 /* a thread's tile is 8 MR strips x 8 NR strips */
#define MCC_TILES 12  /* rows of A packed at once, in tiles of MR * TILE_STRIPS rows */
#define NCC 2048      /* columns of B packed at once */
#define KCC_SLICES 4  /* slices of K packed at once: at most 8 MB of B, 4.5 MB of A */

/*
 * A micro-kernel: acc[mr][nr] = sum_k a[k][i] * b[k][j] over packed strips,
 * then c = alpha * acc + beta * c for the top-left rows x cols of the tile,
 * where beta == 0 leaves c unread. The SIMD kernels round the update the
 * same way (one FMA: alpha * acc + (beta * c)) in full and edge tiles.
 */
typedef void (*ukernel_fn)(int kc, const float *a, const float *b, float *c, int ldc, int rows,
			   int cols, float alpha, float beta);

struct ukernel {
	const char *name;
	int mr, nr;
	ukernel_fn fn;
};

static void ukernel_portable(int kc, const float *restrict a, const float *restrict b,
			     float *restrict c, int ldc, int rows, int cols, float alpha, float beta)
{
	float acc[4][16] = { { 0 } };

	for (int k = 0; k < kc; k++, a += 4, b += 16)
		for (int i = 0; i < 4; i++)
			for (int j = 0; j < 16; j++)
				acc[i][j] += a[i] * b[j];
	for (int i = 0; i < rows; i++)
		for (int j = 0; j < cols; j++) {
			float r = alpha * acc[i][j];

			if (beta != 0.0f)
				r += beta * c[i * ldc + j];
			c[i * ldc + j] = r;
		}
}

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#define AVX2_ROW(i)                                                   \
	do {                                                          \
		__m256 ai = _mm256_broadcast_ss(a + (i));             \
		c##i##0 = _mm256_fmadd_ps(ai, b0, c##i##0);           \
		c##i##1 = _mm256_fmadd_ps(ai, b1, c##i##1);           \
	} while (0)

#define AVX2_STORE(i)                                                                       \
	do {                                                                                \
		float *ci = c + (i) * ldc;                                                  \
		if (beta != 0.0f) {                                                         \
			_mm256_storeu_ps(ci, _mm256_fmadd_ps(va, c##i##0,                   \
					 _mm256_mul_ps(vb, _mm256_loadu_ps(ci))));          \
			_mm256_storeu_ps(ci + 8, _mm256_fmadd_ps(va, c##i##1,               \
					 _mm256_mul_ps(vb, _mm256_loadu_ps(ci + 8))));      \
		} else {                                                                    \
			_mm256_storeu_ps(ci, _mm256_mul_ps(va, c##i##0));                   \
			_mm256_storeu_ps(ci + 8, _mm256_mul_ps(va, c##i##1));               \
		}                                                                           \
	} while (0)

#define AVX2_SPILL(i)                                          \
	do {                                                   \
		_mm256_storeu_ps(t + (i) * 16, c##i##0);       \
		_mm256_storeu_ps(t + (i) * 16 + 8, c##i##1);   \
	} while (0)

/* The edge of a tile, element by element with the same rounding as the vectors. */
#define EDGE_UPDATE(nr)                                                                    \
	for (int i = 0; i < rows; i++)                                                     \
		for (int j = 0; j < cols; j++) {                                           \
			float *cij = c + i * ldc + j;                                      \
			*cij = beta != 0.0f ? __builtin_fmaf(alpha, t[i * (nr) + j], beta * *cij) \
					    : alpha * t[i * (nr) + j];                     \
		}

/* 6 x 16: twelve accumulators, two B vectors and one broadcast of 16 ymm. */
__attribute__((target("avx2,fma"))) static void
ukernel_avx2(int kc, const float *restrict a, const float *restrict b, float *restrict c, int ldc,
	     int rows, int cols, float alpha, float beta)
{
	__m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
	__m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
	__m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
	float t[6 * 16];

	for (int k = 0; k < kc; k++, a += 6, b += 16) {
		__m256 b0 = _mm256_load_ps(b), b1 = _mm256_load_ps(b + 8);

		AVX2_ROW(0);
		AVX2_ROW(1);
		AVX2_ROW(2);
		AVX2_ROW(3);
		AVX2_ROW(4);
		AVX2_ROW(5);
	}
	if (rows == 6 && cols == 16) {
		AVX2_STORE(0);
		AVX2_STORE(1);
		AVX2_STORE(2);
		AVX2_STORE(3);
		AVX2_STORE(4);
		AVX2_STORE(5);
		return;
	}
	AVX2_SPILL(0);
	AVX2_SPILL(1);
	AVX2_SPILL(2);
	AVX2_SPILL(3);
	AVX2_SPILL(4);
	AVX2_SPILL(5);
	EDGE_UPDATE(16)
}

#define AVX512_ROW(i)                                                 \
	do {                                                          \
		__m512 ai = _mm512_set1_ps(a[i]);                     \
		c##i##0 = _mm512_fmadd_ps(ai, b0, c##i##0);           \
		c##i##1 = _mm512_fmadd_ps(ai, b1, c##i##1);           \
	} while (0)

#define AVX512_STORE(i)                                                                     \
	do {                                                                                \
		float *ci = c + (i) * ldc;                                                  \
		if (beta != 0.0f) {                                                         \
			_mm512_storeu_ps(ci, _mm512_fmadd_ps(va, c##i##0,                   \
					 _mm512_mul_ps(vb, _mm512_loadu_ps(ci))));          \
			_mm512_storeu_ps(ci + 16, _mm512_fmadd_ps(va, c##i##1,              \
					 _mm512_mul_ps(vb, _mm512_loadu_ps(ci + 16))));     \
		} else {                                                                    \
			_mm512_storeu_ps(ci, _mm512_mul_ps(va, c##i##0));                   \
			_mm512_storeu_ps(ci + 16, _mm512_mul_ps(va, c##i##1));              \
		}                                                                           \
	} while (0)

#define AVX512_SPILL(i)                                         \
	do {                                                    \
		_mm512_storeu_ps(t + (i) * 32, c##i##0);        \
		_mm512_storeu_ps(t + (i) * 32 + 16, c##i##1);   \
	} while (0)

/* 12 x 32: twenty-four accumulators of the 32 zmm registers. */
__attribute__((target("avx512f,fma"))) static void
ukernel_avx512(int kc, const float *restrict a, const float *restrict b, float *restrict c,
	       int ldc, int rows, int cols, float alpha, float beta)
{
	__m512 c00 = _mm512_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
	__m512 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
	__m512 c60 = c00, c61 = c00, c70 = c00, c71 = c00, c80 = c00, c81 = c00;
	__m512 c90 = c00, c91 = c00, c100 = c00, c101 = c00, c110 = c00, c111 = c00;
	__m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
	float t[12 * 32];

	for (int k = 0; k < kc; k++, a += 12, b += 32) {
		__m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);

		AVX512_ROW(0);
		AVX512_ROW(1);
		AVX512_ROW(2);
		AVX512_ROW(3);
		AVX512_ROW(4);
		AVX512_ROW(5);
		AVX512_ROW(6);
		AVX512_ROW(7);
		AVX512_ROW(8);
		AVX512_ROW(9);
		AVX512_ROW(10);
		AVX512_ROW(11);
	}
	if (rows == 12 && cols == 32) {
		AVX512_STORE(0);
		AVX512_STORE(1);
		AVX512_STORE(2);
		AVX512_STORE(3);
		AVX512_STORE(4);
		AVX512_STORE(5);
		AVX512_STORE(6);
		AVX512_STORE(7);
		AVX512_STORE(8);
		AVX512_STORE(9);
		AVX512_STORE(10);
		AVX512_STORE(11);
		return;
	}
	AVX512_SPILL(0);
	AVX512_SPILL(1);
	AVX512_SPILL(2);
	AVX512_SPILL(3);
	AVX512_SPILL(4);
	AVX512_SPILL(5);
	AVX512_SPILL(6);
	AVX512_SPILL(7);
	AVX512_SPILL(8);
	AVX512_SPILL(9);
	AVX512_SPILL(10);
	AVX512_SPILL(11);
	EDGE_UPDATE(32)
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
#endif

static int use_avx2_pack;

static const struct ukernel *pick_kernel(void)
{
	static const struct ukernel portable = { "portable", 4, 16, ukernel_portable };
#if defined(__x86_64__) || defined(__i386__)
	static const struct ukernel avx2 = { "avx2", 6, 16, ukernel_avx2 };
	static const struct ukernel avx512 = { "avx512", 12, 32, ukernel_avx512 };
	const char *force = getenv("MCOMP_GEMM");

	__builtin_cpu_init();
	if (force && !strcmp(force, "portable"))
		return &portable;
	use_avx2_pack = __builtin_cpu_supports("avx2");
	if (__builtin_cpu_supports("avx512f") && !(force && !strcmp(force, "avx2")))
		return &avx512;
	if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
		return &avx2;
#endif
	return &portable;
}

static const struct ukernel *kernel(void)
{
	static const struct ukernel *k;
	const struct ukernel *p = __atomic_load_n(&k, __ATOMIC_ACQUIRE);

	if (!p) {
		p = pick_kernel();
		__atomic_store_n(&k, p, __ATOMIC_RELEASE);
	}
	return p;
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
	if (use_avx2_pack) {
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
	if (use_avx2_pack) {
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

void mc_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
	      const float *B, int ldb, float beta, float *C, int ldc)
{
	const struct ukernel *uk = kernel();
	const int mr = uk->mr, nr = uk->nr, mb = mr * TILE_STRIPS, nb = nr * TILE_STRIPS;
	size_t mcc, ncc, kcc;
	float *ap, *bp;

	if (M <= 0 || N <= 0)
		return;
	if (K <= 0 || alpha == 0.0f) {
		scale_c(M, N, beta, C, ldc);
		return;
	}
	mcc = round_up((size_t)M, (size_t)mr);
	if (mcc > (size_t)mb * MCC_TILES)
		mcc = (size_t)mb * MCC_TILES;
	ncc = round_up((size_t)N, (size_t)nr);
	if (ncc > NCC)
		ncc = NCC;
	kcc = (size_t)K < (size_t)KC * KCC_SLICES ? (size_t)K : (size_t)KC * KCC_SLICES;
	ap = aligned_alloc(64, mcc * kcc * sizeof(float));
	bp = aligned_alloc(64, ncc * kcc * sizeof(float));
	if (!ap || !bp) {
		/* Out of memory for a few MB of packing space: slower, still correct. */
		free(ap);
		free(bp);
		mc_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
		return;
	}

	/*
	 * One parallel region; per block of up to KCC_SLICES slices of K, one
	 * barrier after packing B, one after packing A, one after the tiles.
	 * Packed slice q starts at q * KC * (rows or columns of the block).
	 * Small products are not worth waking the team; the result is the same.
	 */
#pragma omp parallel if ((double)M * N * K >= 65536.0)
	for (int pk = 0; pk < K; pk += (int)kcc) {
		int kb = K - pk < (int)kcc ? K - pk : (int)kcc;
		int nslices = (kb + KC - 1) / KC;

		for (int jc = 0; jc < N; jc += (int)ncc) {
			int nc = N - jc < (int)ncc ? N - jc : (int)ncc;
			int nstrips = (nc + nr - 1) / nr;
			size_t bslice = (size_t)nstrips * nr * KC;

#pragma omp for schedule(static)
			for (int t = 0; t < nslices * nstrips; t++) {
				int q = t / nstrips, s = t % nstrips, pc = q * KC;
				int kc = kb - pc < KC ? kb - pc : KC;

				pack_b(tb, B, ldb, N, jc + s * nr, pk + pc, kc, nr,
				       bp + q * bslice + (size_t)s * kc * nr);
			}

			for (int ic = 0; ic < M; ic += (int)mcc) {
				int mc = M - ic < (int)mcc ? M - ic : (int)mcc;
				int mstrips = (mc + mr - 1) / mr;
				int tm = (mc + mb - 1) / mb, tn = (nc + nb - 1) / nb;
				size_t aslice = (size_t)mstrips * mr * KC;

#pragma omp for schedule(static)
				for (int t = 0; t < nslices * mstrips; t++) {
					int q = t / mstrips, s = t % mstrips, pc = q * KC;
					int kc = kb - pc < KC ? kb - pc : KC;

					pack_a(ta, A, lda, M, ic + s * mr, pk + pc, kc, mr,
					       ap + q * aslice + (size_t)s * kc * mr);
				}

				/* Each tile runs through the slices in order: the sum
				 * for an element never depends on who computes it. */
#pragma omp for schedule(dynamic, 1)
				for (int t = 0; t < tm * tn; t++) {
					int i0 = (t / tn) * mb, j0 = (t % tn) * nb;
					int i1 = i0 + mb < mc ? i0 + mb : mc;
					int j1 = j0 + nb < nc ? j0 + nb : nc;

					for (int q = 0; q < nslices; q++) {
						int pc = q * KC, kc = kb - pc < KC ? kb - pc : KC;
						float beta_k = pk + pc == 0 ? beta : 1.0f;
						const float *aq = ap + q * aslice, *bq = bp + q * bslice;

						for (int j = j0; j < j1; j += nr)
							for (int i = i0; i < i1; i += mr)
								uk->fn(kc, aq + (size_t)(i / mr) * kc * mr,
								       bq + (size_t)(j / nr) * kc * nr,
								       C + (size_t)(ic + i) * ldc + jc + j,
								       ldc, i1 - i < mr ? i1 - i : mr,
								       j1 - j < nr ? j1 - j : nr, alpha,
								       beta_k);
					}
				}
			}
		}
	}
	free(ap);
	free(bp);
}
