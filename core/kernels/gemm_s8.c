/* SPDX-License-Identifier: MIT */
/*
 * gemm_s8.c - integer GEMM for quantized inference: u8 activations times
 * packed s8 weights, exact s32 sums, per-channel requantization to f32;
 * activation quantization helpers; the reference loops beside them.
 *
 * Packed layout: output columns in groups of 64 (four strips of 16), K in
 * quads of 4, zero-padded in both (quads to a multiple of 16). Group g is one block of K4 * 256 bytes:
 * for each quad, strip 0's 16 columns x 4 bytes, then strips 1, 2, 3. That
 * is what vpdpbusd wants (each s32 lane sums 4 u8 x s8 products), what
 * the ymm and widened AVX2 kernels read 32 bytes at a time, and, read with
 * a stride of 256 bytes, an AMX B tile (16 quads x 16 columns).
 *
 * A kernel computes a block of up to MR rows x the first ns strips of 16
 * columns of a group (ns = 4 but for the last group of a matrix of fewer
 * columns: a layer of 16 channels computes 16, not 64) into an s32 tile;
 * one epilogue per ISA turns the tile into outputs. Weights that all lie in
 * [-64, 64] (7 bits: the quantize pass's reduce_range) are marked at
 * packing; the AVX2 path then multiplies them with vpmaddubsw. Work items
 * are (column group, row block), groups outermost so a thread keeps its
 * group's weights in cache; integer sums are exact, so no order matters and the result is
 * the same for any thread count and every kernel.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/tensor.h>

#include "kernels/cpu.h"
#include "kernels/s8_ops.h"

#define GROUP 64	   /* output columns per packed group */
#define MAX_K 65536	   /* 255 * 128 * K must fit in s32 */
#define MR_MAX 32	   /* rows per block, at most (AMX) */
#define QPAD 16	   /* K quads padded to a multiple of 16: AMX reads 64 bytes of K */
#define PAR_MIN_S8 4e6	   /* multiply-adds below which one thread is faster */
#define S7_MAX 64	   /* |w| <= 64: 2 * 255 * 64 = 32640, a u8 x s8 pair sum fits s16 */

struct mc_s8_weights {
	int n, k, k4, groups;
	int8_t *w;	 /* groups * k4 * 256 bytes, 64-byte aligned */
	float *scale;	 /* [groups * 64], zero past n */
	float *bias;	 /* [groups * 64], zero past n or without bias */
	int32_t *colsum; /* [groups * 64] */
	int k2;		 /* pairs of K, (k + 1) / 2 */
	int16_t *w16;	 /* the AVX2 kernel's copy, made on its first use (w16_of) */
	int s7;		 /* every weight in [-64, 64]: the AVX2 kernel takes vpmaddubsw (S7_MAX) */
};

/* One output block: rows [m0, m0 + mr) of a, strips [0, ns) of group g, into t[mr][64]. */
typedef void (*s8_kernel_fn)(int mr, int ns, int k, const uint8_t *a, size_t lda,
			     const int8_t *b, int32_t *t);

struct s8_kernel {
	const char *name;
	int mr; /* rows per block */
	s8_kernel_fn fn;
	int epi;  /* 0: portable epilogue, 1: AVX2/FMA, 2: AVX-512 */
	int wide; /* b is the group's block of the s16 copy (w16), not of w */
};

/* The 4 bytes of a row at quad q; the last quad of an odd K is read with zeros past K. */
static inline uint32_t quad(const uint8_t *a, int q, int k)
{
	uint32_t v = 0;
	int n = k - 4 * q < 4 ? k - 4 * q : 4;

	memcpy(&v, a + 4 * q, (size_t)n);
	return v;
}

/* ---------------------------------------------------------------- portable */

static void kernel_portable(int mr, int ns, int k, const uint8_t *a, size_t lda,
			    const int8_t *b, int32_t *t)
{
	int k4 = (k + 3) / 4;

	for (int i = 0; i < mr; i++) {
		uint32_t acc[GROUP] = { 0 };

		for (int q = 0; q < k4; q++) {
			uint32_t v = quad(a + i * lda, q, k);
			const int8_t *bq = b + (size_t)q * 256;

			for (int s = 0; s < ns; s++)
				for (int j = 0; j < 16; j++)
					for (int u = 0; u < 4; u++)
						acc[s * 16 + j] += (uint32_t)((v >> (8 * u)) & 255) *
								   (uint32_t)(int32_t)bq[s * 64 + j * 4 + u];
		}
		for (int j = 0; j < 16 * ns; j++)
			t[i * GROUP + j] = (int32_t)acc[j];
	}
}

/* ---------------------------------------------------------------- x86 */

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

/*
 * The VNNI kernels: a row's quad of K broadcast against the weights of a
 * quad (each s32 lane sums 4 u8 x s8 products), named accumulators per row
 * so that they stay in registers (with arrays the compiler kept them in
 * memory, a load and a store around every vpdpbusd), one copy per row
 * count. The last quad of an odd K is read with zeros past K (quad()).
 */
/* Row i's quad q of K as an s32 (the full quads); the last, partial one is read before the loop. */
#define VNNI_X(i)                                                                           \
	int32_t v##i;                                                                       \
	if (q < kq)                                                                         \
		memcpy(&v##i, a + (i) * lda + 4 * (size_t)q, 4);                            \
	else                                                                                \
		v##i = vt[i]
#define VNNI_TAIL()                                                                         \
	int32_t vt[6] = { 0 };                                                              \
	if (kq < k4)                                                                        \
		for (int i = 0; i < R; i++)                                                 \
			vt[i] = (int32_t)quad(a + i * lda, kq, k)

/* 6 rows x 64 columns (S strips of 16: S = 4 but in a narrow last group):
 * 24 zmm accumulators, 4 weight vectors, one broadcast. */
#define VNNI512_ROW(i)                                                                      \
	if (R > (i)) {                                                                      \
		VNNI_X(i);                                                               \
		__m512i x = _mm512_set1_epi32(v##i);                                        \
		c##i##0 = _mm512_dpbusd_epi32(c##i##0, x, b0);                              \
		if (S > 1)                                                                  \
			c##i##1 = _mm512_dpbusd_epi32(c##i##1, x, b1);                      \
		if (S > 2)                                                                  \
			c##i##2 = _mm512_dpbusd_epi32(c##i##2, x, b2);                      \
		if (S > 3)                                                                  \
			c##i##3 = _mm512_dpbusd_epi32(c##i##3, x, b3);                      \
	}
#define VNNI512_DECL(i) __m512i c##i##0 = _mm512_setzero_si512(), c##i##1 = c##i##0, \
			c##i##2 = c##i##0, c##i##3 = c##i##0
#define VNNI512_OUT(i)                                                                      \
	if (R > (i)) {                                                                      \
		_mm512_storeu_si512(t + (i) * GROUP, c##i##0);                              \
		if (S > 1)                                                                  \
			_mm512_storeu_si512(t + (i) * GROUP + 16, c##i##1);                 \
		if (S > 2)                                                                  \
			_mm512_storeu_si512(t + (i) * GROUP + 32, c##i##2);                 \
		if (S > 3)                                                                  \
			_mm512_storeu_si512(t + (i) * GROUP + 48, c##i##3);                 \
	}

__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline void
vnni512_block(const int R, const int S, int k, const uint8_t *a, size_t lda, const int8_t *b,
	      int32_t *t)
{
	int kq = k / 4, k4 = (k + 3) / 4;
	VNNI_TAIL();
	VNNI512_DECL(0);
	VNNI512_DECL(1);
	VNNI512_DECL(2);
	VNNI512_DECL(3);
	VNNI512_DECL(4);
	VNNI512_DECL(5);

	for (int q = 0; q < k4; q++, b += 256) {
		__m512i b0 = _mm512_load_si512(b);
		__m512i b1 = S > 1 ? _mm512_load_si512(b + 64) : b0;
		__m512i b2 = S > 2 ? _mm512_load_si512(b + 128) : b0;
		__m512i b3 = S > 3 ? _mm512_load_si512(b + 192) : b0;

		VNNI512_ROW(0);
		VNNI512_ROW(1);
		VNNI512_ROW(2);
		VNNI512_ROW(3);
		VNNI512_ROW(4);
		VNNI512_ROW(5);
	}
	VNNI512_OUT(0);
	VNNI512_OUT(1);
	VNNI512_OUT(2);
	VNNI512_OUT(3);
	VNNI512_OUT(4);
	VNNI512_OUT(5);
}

#define VNNI512_COPY(R, S)                                                                  \
	__attribute__((target("avx512f,avx512bw,avx512vnni"), noinline)) static void        \
		vnni512_##R##_##S(int k, const uint8_t *a, size_t lda, const int8_t *b,     \
				  int32_t *t)                                               \
	{                                                                                   \
		vnni512_block(R, S, k, a, lda, b, t);                                       \
	}
#define VNNI512_COPIES(R)                                                                   \
	VNNI512_COPY(R, 1) VNNI512_COPY(R, 2) VNNI512_COPY(R, 3) VNNI512_COPY(R, 4)
VNNI512_COPIES(1)
VNNI512_COPIES(2)
VNNI512_COPIES(3)
VNNI512_COPIES(4)
VNNI512_COPIES(5)
VNNI512_COPIES(6)
#define VNNI512_ROWS(R) { vnni512_##R##_1, vnni512_##R##_2, vnni512_##R##_3, vnni512_##R##_4 }

static void kernel_vnni512(int mr, int ns, int k, const uint8_t *a, size_t lda, const int8_t *b,
			   int32_t *t)
{
	static void (*const copy[6][4])(int, const uint8_t *, size_t, const int8_t *, int32_t *) = {
		VNNI512_ROWS(1), VNNI512_ROWS(2), VNNI512_ROWS(3),
		VNNI512_ROWS(4), VNNI512_ROWS(5), VNNI512_ROWS(6)
	};

	copy[(mr < 6 ? mr : 6) - 1][ns - 1](k, a, lda, b, t);
}

/* 6 rows x 16 columns per pass, four passes per group: 12 ymm accumulators. */
#define AVXVNNI_ROW(i)                                                                      \
	if (R > (i)) {                                                                      \
		VNNI_X(i);                                                               \
		__m256i x = _mm256_set1_epi32(v##i);                                        \
		c##i##0 = _mm256_dpbusd_avx_epi32(c##i##0, x, b0);                          \
		c##i##1 = _mm256_dpbusd_avx_epi32(c##i##1, x, b1);                          \
	}
#define AVXVNNI_DECL(i) __m256i c##i##0 = _mm256_setzero_si256(), c##i##1 = c##i##0
#define AVXVNNI_OUT(i)                                                                      \
	if (R > (i)) {                                                                      \
		_mm256_storeu_si256((__m256i *)(t + (i) * GROUP), c##i##0);                 \
		_mm256_storeu_si256((__m256i *)(t + (i) * GROUP + 8), c##i##1);             \
	}

__attribute__((target("avx2,avxvnni"), always_inline)) static inline void
avxvnni_strip(const int R, int k, const uint8_t *a, size_t lda, const int8_t *b, int32_t *t)
{
	int kq = k / 4, k4 = (k + 3) / 4;
	VNNI_TAIL();
	AVXVNNI_DECL(0);
	AVXVNNI_DECL(1);
	AVXVNNI_DECL(2);
	AVXVNNI_DECL(3);
	AVXVNNI_DECL(4);
	AVXVNNI_DECL(5);

	for (int q = 0; q < k4; q++, b += 256) {
		__m256i b0 = _mm256_load_si256((const __m256i *)b);
		__m256i b1 = _mm256_load_si256((const __m256i *)(b + 32));

		AVXVNNI_ROW(0);
		AVXVNNI_ROW(1);
		AVXVNNI_ROW(2);
		AVXVNNI_ROW(3);
		AVXVNNI_ROW(4);
		AVXVNNI_ROW(5);
	}
	AVXVNNI_OUT(0);
	AVXVNNI_OUT(1);
	AVXVNNI_OUT(2);
	AVXVNNI_OUT(3);
	AVXVNNI_OUT(4);
	AVXVNNI_OUT(5);
}

#define AVXVNNI_COPY(R)                                                                     \
	__attribute__((target("avx2,avxvnni"), noinline)) static void avxvnni_##R(          \
		int ns, int k, const uint8_t *a, size_t lda, const int8_t *b, int32_t *t)   \
	{                                                                                   \
		for (int s = 0; s < ns; s++)                                                \
			avxvnni_strip(R, k, a, lda, b + s * 64, t + s * 16);                \
	}
AVXVNNI_COPY(1)
AVXVNNI_COPY(2)
AVXVNNI_COPY(3)
AVXVNNI_COPY(4)
AVXVNNI_COPY(5)
AVXVNNI_COPY(6)

static void kernel_avxvnni(int mr, int ns, int k, const uint8_t *a, size_t lda,
			   const int8_t *b, int32_t *t)
{
	static void (*const copy[6])(int, int, const uint8_t *, size_t, const int8_t *,
				     int32_t *) = { avxvnni_1, avxvnni_2, avxvnni_3,
						    avxvnni_4, avxvnni_5, avxvnni_6 };

	copy[(mr < 6 ? mr : 6) - 1](ns, k, a, lda, b, t);
}


#if defined(__linux__) && defined(__x86_64__)
/*
 * AMX (Sapphire Rapids on): 32 rows x 64 columns per block in two passes
 * of 32 x 32: four C tiles (2 x 2 of 16 x 16 s32), two A tiles (16 rows x
 * 64 bytes of K, read from a in place), two B tiles. A K tail shorter than
 * 64 bytes is copied into a zero-padded buffer. Blocks of fewer than 32
 * rows go to the VNNI kernel: the same exact sums.
 */
struct amx_config {
	uint8_t palette, start_row, reserved[14];
	uint16_t colsb[16];
	uint8_t rows[16];
};

__attribute__((target("amx-tile,amx-int8,avx512f"))) static void
kernel_amx(int mr, int ns, int k, const uint8_t *a, size_t lda, const int8_t *b, int32_t *t)
{
	struct amx_config cfg __attribute__((aligned(64))) = { .palette = 1 };
	uint8_t tail[32 * 64] __attribute__((aligned(64)));
	int kfull = k / 64, krest = k % 64;

	if (mr < 32) {
		for (int i = 0; i < mr; i += 6)
			kernel_vnni512(mr - i < 6 ? mr - i : 6, ns, k, a + i * lda, lda, b,
				       t + i * GROUP);
		return;
	}
	for (int i = 0; i < 8; i++) {
		cfg.rows[i] = 16;
		cfg.colsb[i] = 64;
	}
	if (krest) {
		memset(tail, 0, sizeof(tail));
		for (int i = 0; i < 32; i++)
			memcpy(tail + i * 64, a + i * lda + (size_t)kfull * 64, (size_t)krest);
	}
	_tile_loadconfig(&cfg);
	for (int h = 0; h < (ns + 1) / 2; h++) { /* 32 columns a pass */
		const int8_t *bh = b + h * 128;

		_tile_zero(0);
		_tile_zero(1);
		_tile_zero(2);
		_tile_zero(3);
		for (int kb = 0; kb <= kfull; kb++) {
			const uint8_t *a0 = a + (size_t)kb * 64, *a1 = a0 + 16 * lda;
			size_t sa = lda;

			if (kb == kfull) {
				if (!krest)
					break;
				a0 = tail;
				a1 = tail + 16 * 64;
				sa = 64;
			}
			_tile_loadd(4, a0, sa);
			_tile_loadd(5, a1, sa);
			_tile_loadd(6, bh + (size_t)kb * 16 * 256, 256);
			_tile_loadd(7, bh + (size_t)kb * 16 * 256 + 64, 256);
			_tile_dpbusd(0, 4, 6);
			_tile_dpbusd(1, 4, 7);
			_tile_dpbusd(2, 5, 6);
			_tile_dpbusd(3, 5, 7);
		}
		_tile_stored(0, t + h * 32, GROUP * 4);
		_tile_stored(1, t + h * 32 + 16, GROUP * 4);
		_tile_stored(2, t + 16 * GROUP + h * 32, GROUP * 4);
		_tile_stored(3, t + 16 * GROUP + h * 32 + 16, GROUP * 4);
	}
	_tile_release();
}
#endif

/*
 * AVX2 without VNNI. vpmaddubsw would take 32 u8 x s8 products at once,
 * but its s16 pair sums saturate (2 * 255 * -128 does not fit), so this
 * kernel multiplies s16 by s16 with vpmaddwd, whose s32 pair sums are
 * exact: 16 products per instruction and one vpaddd, the fewest
 * instructions per product an exact sum can take without VNNI (a split of
 * the bytes into halves that vpmaddubsw cannot saturate needs two
 * vpmaddubsw and two adds for 32 products: as many; weights in [-64, 64]
 * take the vpmaddubsw kernel below, three). The weights are
 * widened once, into a copy laid out per group as four strips of 16
 * columns, each K pair by K pair: (w[c][2p], w[c][2p + 1]) for c < 16, so
 * one s32 lane of the product is one column. The rows of A are widened per
 * chunk of K into a buffer on the stack; a pair of them, broadcast, meets
 * the 16 columns in two vpmaddwd. Up to 6 rows x 16 columns: twelve
 * accumulators, two weight vectors and the broadcast in 16 ymm registers.
 */
#define AVX2_KCH 512 /* K per chunk of widened rows: 6 KB */

#define AVX2_ROW(i)                                                                         \
	do {                                                                                \
		int32_t v;                                                                  \
		__m256i x;                                                                  \
		if (R > (i)) {                                                              \
			memcpy(&v, r + (i) * AVX2_KCH, 4);                                  \
			x = _mm256_set1_epi32(v);                                           \
			c##i##0 = _mm256_add_epi32(c##i##0, _mm256_madd_epi16(x, w0));      \
			c##i##1 = _mm256_add_epi32(c##i##1, _mm256_madd_epi16(x, w1));      \
		}                                                                           \
	} while (0)
#define AVX2_IN(i)                                                                          \
	if (R > (i)) {                                                                      \
		c##i##0 = _mm256_loadu_si256((const __m256i *)(t + (i) * 16));              \
		c##i##1 = _mm256_loadu_si256((const __m256i *)(t + (i) * 16 + 8));          \
	}
#define AVX2_OUT(i)                                                                         \
	if (R > (i)) {                                                                      \
		_mm256_storeu_si256((__m256i *)(t + (i) * 16), c##i##0);                    \
		_mm256_storeu_si256((__m256i *)(t + (i) * 16 + 8), c##i##1);                \
	}

/*
 * t[R][16] += R rows of a16 (pairs [0, np)) times one strip of weights
 * (pairs from w); R is a constant in each copy, so the accumulators live in
 * registers.
 */
__attribute__((target("avx2"), always_inline)) static inline void
avx2_strip(const int R, int np, const int16_t *a16, const int16_t *w, int32_t *t)
{
	__m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00;
	__m256i c21 = c00, c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;

	AVX2_IN(0);
	AVX2_IN(1);
	AVX2_IN(2);
	AVX2_IN(3);
	AVX2_IN(4);
	AVX2_IN(5);
#pragma GCC unroll 4
	for (int p = 0; p < np; p++, w += 32) {
		__m256i w0 = _mm256_load_si256((const __m256i *)w);
		__m256i w1 = _mm256_load_si256((const __m256i *)(w + 16));
		const int16_t *r = a16 + 2 * p;

		AVX2_ROW(0);
		AVX2_ROW(1);
		AVX2_ROW(2);
		AVX2_ROW(3);
		AVX2_ROW(4);
		AVX2_ROW(5);
	}
	AVX2_OUT(0);
	AVX2_OUT(1);
	AVX2_OUT(2);
	AVX2_OUT(3);
	AVX2_OUT(4);
	AVX2_OUT(5);
}

#define AVX2_STRIP_COPY(R)                                                                  \
	__attribute__((target("avx2"), noinline)) static void avx2_strip##R(                \
		int np, const int16_t *a16, const int16_t *w, int32_t *t)                   \
	{                                                                                   \
		avx2_strip(R, np, a16, w, t);                                               \
	}
AVX2_STRIP_COPY(1)
AVX2_STRIP_COPY(2)
AVX2_STRIP_COPY(3)
AVX2_STRIP_COPY(4)
AVX2_STRIP_COPY(5)
AVX2_STRIP_COPY(6)

/*
 * Rows [0, mr) of a, K from k0 (even) to k1, zero-extended to s16 in
 * dst[i][k - k0], padded to a pair.
 */
__attribute__((target("avx2"))) static void avx2_widen(int mr, const uint8_t *a, size_t lda,
							int k0, int k1, int16_t *dst)
{
	for (int i = 0; i < mr; i++) {
		const uint8_t *src = a + i * lda;
		int16_t *d = dst + i * AVX2_KCH;
		int k = k0;

		for (; k + 16 <= k1; k += 16)
			_mm256_storeu_si256((__m256i *)(d + k - k0),
					    _mm256_cvtepu8_epi16(
						    _mm_loadu_si128((const __m128i *)(src + k))));
		for (; k < k1; k++)
			d[k - k0] = src[k];
		if ((k1 - k0) & 1)
			d[k1 - k0] = 0;
	}
}

/* Up to 6 rows x ns strips of 16 columns into t[mr][64]. */
__attribute__((target("avx2"))) static void kernel_avx2(int mr, int ns, int k, const uint8_t *a,
							 size_t lda, const int8_t *b, int32_t *t)
{
	static void (*const strip[6])(int, const int16_t *, const int16_t *, int32_t *) = {
		avx2_strip1, avx2_strip2, avx2_strip3, avx2_strip4, avx2_strip5, avx2_strip6
	};
	const int16_t *w = (const int16_t *)(const void *)b;
	int16_t a16[6 * AVX2_KCH] __attribute__((aligned(32)));
	int32_t acc[4][6 * 16] __attribute__((aligned(32))) = { { 0 } };
	size_t sw = (size_t)(k + 1) / 2 * 32;

	for (int k0 = 0; k0 < k; k0 += AVX2_KCH) {
		int k1 = k - k0 < AVX2_KCH ? k : k0 + AVX2_KCH;

		avx2_widen(mr, a, lda, k0, k1, a16);
		for (int s = 0; s < ns; s++)
			strip[mr - 1]((k1 - k0 + 1) / 2, a16, w + s * sw + (size_t)k0 / 2 * 32,
				      acc[s]);
	}
	for (int i = 0; i < mr; i++)
		for (int s = 0; s < ns; s++)
			memcpy(t + i * GROUP + s * 16, acc[s] + i * 16, 16 * sizeof(int32_t));
}

/*
 * AVX2 without VNNI, 7-bit weights: every weight of the matrix in [-64, 64]
 * (mc_s8_pack records it; the quantize pass's reduce_range makes such
 * weights). Then a u8 x s8 pair sum is at most 2 * 255 * 64 = 32640 in
 * magnitude, so vpmaddubsw cannot saturate and its s16 pair sums are
 * exact; vpmaddwd against ones adds the pairs of a quad into one s32 lane,
 * the lane vpdpbusd would give, and vpaddd accumulates: three instructions
 * per 32 products, against the widened kernel's four, and the packed
 * weights are read as they are (the VNNI layout, no s16 copy). Up to 5
 * rows x 16 columns per pass, four passes per group: ten accumulators, two
 * weight vectors, the broadcast row, the ones and one product in 15 ymm
 * registers (6 rows spilled an accumulator, and were no faster).
 */
#define S7_ROW(i, v)                                                                        \
	if (R > (i)) {                                                                      \
		__m256i x = _mm256_set1_epi32(v);                                           \
		c##i##0 = _mm256_add_epi32(                                                 \
			c##i##0, _mm256_madd_epi16(_mm256_maddubs_epi16(x, b0), ones));      \
		c##i##1 = _mm256_add_epi32(                                                 \
			c##i##1, _mm256_madd_epi16(_mm256_maddubs_epi16(x, b1), ones));      \
	}
/* Row i's full quad q of K, as an s32. */
#define S7_Q(i) load_s32(a + (i) * lda + 4 * (size_t)q)

static inline int32_t load_s32(const uint8_t *p)
{
	int32_t v;

	memcpy(&v, p, 4);
	return v;
}

__attribute__((target("avx2"), always_inline)) static inline void
avx2s7_strip(const int R, int k, const uint8_t *a, size_t lda, const int8_t *b, int32_t *t)
{
	int kq = k / 4, q;
	const __m256i ones = _mm256_set1_epi16(1);
	AVXVNNI_DECL(0);
	AVXVNNI_DECL(1);
	AVXVNNI_DECL(2);
	AVXVNNI_DECL(3);
	AVXVNNI_DECL(4);

	for (q = 0; q < kq; q++, b += 256) {
		__m256i b0 = _mm256_load_si256((const __m256i *)b);
		__m256i b1 = _mm256_load_si256((const __m256i *)(b + 32));

		S7_ROW(0, S7_Q(0));
		S7_ROW(1, S7_Q(1));
		S7_ROW(2, S7_Q(2));
		S7_ROW(3, S7_Q(3));
		S7_ROW(4, S7_Q(4));
	}
	if (kq * 4 < k) { /* the last, partial quad, read with zeros past K */
		__m256i b0 = _mm256_load_si256((const __m256i *)b);
		__m256i b1 = _mm256_load_si256((const __m256i *)(b + 32));

		S7_ROW(0, (int32_t)quad(a, q, k));
		S7_ROW(1, (int32_t)quad(a + lda, q, k));
		S7_ROW(2, (int32_t)quad(a + 2 * lda, q, k));
		S7_ROW(3, (int32_t)quad(a + 3 * lda, q, k));
		S7_ROW(4, (int32_t)quad(a + 4 * lda, q, k));
	}
	AVXVNNI_OUT(0);
	AVXVNNI_OUT(1);
	AVXVNNI_OUT(2);
	AVXVNNI_OUT(3);
	AVXVNNI_OUT(4);
}

#define AVX2S7_COPY(R)                                                                      \
	__attribute__((target("avx2"), noinline)) static void avx2s7_##R(                   \
		int ns, int k, const uint8_t *a, size_t lda, const int8_t *b, int32_t *t)   \
	{                                                                                   \
		for (int s = 0; s < ns; s++)                                                \
			avx2s7_strip(R, k, a, lda, b + s * 64, t + s * 16);                 \
	}
AVX2S7_COPY(1)
AVX2S7_COPY(2)
AVX2S7_COPY(3)
AVX2S7_COPY(4)
AVX2S7_COPY(5)

static void kernel_avx2s7(int mr, int ns, int k, const uint8_t *a, size_t lda,
			  const int8_t *b, int32_t *t)
{
	static void (*const copy[5])(int, int, const uint8_t *, size_t, const int8_t *,
				     int32_t *) = { avx2s7_1, avx2s7_2, avx2s7_3, avx2s7_4,
						    avx2s7_5 };

	copy[(mr < 5 ? mr : 5) - 1](ns, k, a, lda, b, t);
}
#endif

/* ---------------------------------------------------------------- epilogues */

/*
 * Rows of the s32 tile t[mr][64] to y (row m0, column n0): d = acc - za *
 * colsum in wrapping s32 (the true value fits), then (sa * sw) * d + bias
 * and the optional relu. Every epilogue rounds the same way.
 */
typedef void (*epi_fn)(int mr, int cols, const int32_t *t, const struct mc_s8_weights *w, int n0,
		       float sa, int za, unsigned flags, float *y, size_t ldy);

static void epi_portable(int mr, int cols, const int32_t *t, const struct mc_s8_weights *w,
			 int n0, float sa, int za, unsigned flags, float *y, size_t ldy)
{
	for (int i = 0; i < mr; i++)
		for (int j = 0; j < cols; j++) {
			uint32_t d = (uint32_t)t[i * GROUP + j] -
				     (uint32_t)za * (uint32_t)w->colsum[n0 + j];
			float v = sa * w->scale[n0 + j] * (float)(int32_t)d + w->bias[n0 + j];

			if ((flags & (MC_S8_RELU | MC_S8_RELU6)) && !(v > 0.0f))
				v = 0.0f;
			if ((flags & MC_S8_RELU6) && v > 6.0f)
				v = 6.0f;
			y[i * ldy + j] = v;
		}
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f"))) static void
epi_avx512(int mr, int cols, const int32_t *t, const struct mc_s8_weights *w, int n0, float sa,
	   int za, unsigned flags, float *y, size_t ldy)
{
	__m512 vsa = _mm512_set1_ps(sa), zero = _mm512_setzero_ps();
	__m512i vza = _mm512_set1_epi32(za);

	for (int j = 0; j < cols; j += 16) {
		__mmask16 m = cols - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (cols - j)) - 1);
		__m512 s = _mm512_mul_ps(vsa, _mm512_loadu_ps(w->scale + n0 + j));
		__m512 b = _mm512_loadu_ps(w->bias + n0 + j);
		__m512i zc = _mm512_mullo_epi32(vza, _mm512_loadu_si512(w->colsum + n0 + j));

		for (int i = 0; i < mr; i++) {
			__m512i d = _mm512_sub_epi32(_mm512_loadu_si512(t + i * GROUP + j), zc);
			__m512 v = _mm512_add_ps(_mm512_mul_ps(s, _mm512_cvtepi32_ps(d)), b);

			if (flags & (MC_S8_RELU | MC_S8_RELU6))
				v = _mm512_max_ps(v, zero);
			if (flags & MC_S8_RELU6)
				v = _mm512_min_ps(v, _mm512_set1_ps(6.0f));
			_mm512_mask_storeu_ps(y + i * ldy + j, m, v);
		}
	}
}

__attribute__((target("avx2,fma"))) static void
epi_avx2(int mr, int cols, const int32_t *t, const struct mc_s8_weights *w, int n0, float sa,
	 int za, unsigned flags, float *y, size_t ldy)
{
	__m256 vsa = _mm256_set1_ps(sa), zero = _mm256_setzero_ps();
	__m256i vza = _mm256_set1_epi32(za);
	int j = 0;

	for (; j + 8 <= cols; j += 8) {
		__m256 s = _mm256_mul_ps(vsa, _mm256_loadu_ps(w->scale + n0 + j));
		__m256 b = _mm256_loadu_ps(w->bias + n0 + j);
		__m256i zc = _mm256_mullo_epi32(
			vza, _mm256_loadu_si256((const __m256i *)(w->colsum + n0 + j)));

		for (int i = 0; i < mr; i++) {
			__m256i d = _mm256_sub_epi32(
				_mm256_loadu_si256((const __m256i *)(t + i * GROUP + j)), zc);
			__m256 v = _mm256_add_ps(_mm256_mul_ps(s, _mm256_cvtepi32_ps(d)), b);

			if (flags & (MC_S8_RELU | MC_S8_RELU6))
				v = _mm256_max_ps(v, zero);
			if (flags & MC_S8_RELU6)
				v = _mm256_min_ps(v, _mm256_set1_ps(6.0f));
			_mm256_storeu_ps(y + i * ldy + j, v);
		}
	}
	for (; j < cols; j++)
		for (int i = 0; i < mr; i++) {
			uint32_t d = (uint32_t)t[i * GROUP + j] -
				     (uint32_t)za * (uint32_t)w->colsum[n0 + j];
			float v = sa * w->scale[n0 + j] * (float)(int32_t)d + w->bias[n0 + j];

			if ((flags & (MC_S8_RELU | MC_S8_RELU6)) && !(v > 0.0f))
				v = 0.0f;
			if ((flags & MC_S8_RELU6) && v > 6.0f)
				v = 6.0f;
			y[i * ldy + j] = v;
		}
}
#endif

static const epi_fn epilogues[] = {
	epi_portable,
#if defined(__x86_64__) || defined(__i386__)
	epi_avx2,
	epi_avx512,
#endif
};

/* ---------------------------------------------------------------- dispatch */

static const struct s8_kernel kernels[] = {
#if defined(__x86_64__) || defined(__i386__)
#if defined(__linux__) && defined(__x86_64__)
	{ "amx", 32, kernel_amx, 2, 0 },
#endif
	{ "avx512-vnni", 6, kernel_vnni512, 2, 0 },
	{ "avx-vnni", 6, kernel_avxvnni, 1, 0 },
	{ "avx2", 6, kernel_avx2, 1, 1 },
#endif
	{ "portable", 4, kernel_portable, 0, 0 },
};

#if defined(__x86_64__) || defined(__i386__)
/* What "avx2" runs on weights that fit 7 bits (mc_s8_weights.s7): same name, same sums. */
static const struct s8_kernel avx2s7 = { "avx2", 5, kernel_avx2s7, 1, 0 };
#endif

static int supported(const struct s8_kernel *k)
{
#if defined(__x86_64__) || defined(__i386__)
	int vnni512 = mc_cpu_has(MC_CPU_AVX512F) && mc_cpu_has(MC_CPU_AVX512BW) &&
		      mc_cpu_has(MC_CPU_AVX512VNNI);

	if (!strcmp(k->name, "amx"))
		return mc_cpu_has(MC_CPU_AMX_INT8) && vnni512;
	if (!strcmp(k->name, "avx512-vnni"))
		return vnni512;
	if (!strcmp(k->name, "avx-vnni"))
		return mc_cpu_has(MC_CPU_AVX2) && mc_cpu_has(MC_CPU_FMA) &&
		       mc_cpu_has(MC_CPU_AVXVNNI);
	if (!strcmp(k->name, "avx2"))
		return mc_cpu_has(MC_CPU_AVX2) && mc_cpu_has(MC_CPU_FMA);
#endif
	return 1;
}

static const struct s8_kernel *find_kernel(const char *name)
{
	for (size_t i = 0; i < sizeof(kernels) / sizeof(kernels[0]); i++)
		if ((!name || !strcmp(kernels[i].name, name)) && supported(&kernels[i]))
			return &kernels[i];
	return NULL;
}

static const struct s8_kernel *chosen;

/* The fastest kernel (the table is in that order), or the one MCOMP_GEMM_S8 names. */
static const struct s8_kernel *kernel(void)
{
	const struct s8_kernel *p = __atomic_load_n(&chosen, __ATOMIC_ACQUIRE);

	if (!p) {
		p = find_kernel(getenv("MCOMP_GEMM_S8"));
		if (!p)
			p = find_kernel(NULL);
		__atomic_store_n(&chosen, p, __ATOMIC_RELEASE);
	}
	return p;
}

int mc_s8_simd(void)
{
	return kernel()->epi;
}

const char *mc_gemm_s8_kernel(void)
{
	return kernel()->name;
}

int mc_gemm_s8_use(const char *name)
{
	const struct s8_kernel *p = name ? find_kernel(name) : NULL;

	if (!p)
		return MC_EINVAL;
	__atomic_store_n(&chosen, p, __ATOMIC_RELEASE);
	return 0;
}

/* ---------------------------------------------------------------- packing */

struct mc_s8_weights *mc_s8_pack(const int8_t *w, int N, int K, int ldw, const float *sw,
				 const float *bias, struct mc_err *err)
{
	struct mc_s8_weights *p;
	size_t bytes, cols;
	int s7 = 1;

	if (N < 1 || K < 1 || K > MAX_K || ldw < K || !w || !sw) {
		mc_err_set(err, MC_EINVAL,
			   "int8 weights [%d, %d] (row stride %d): need N >= 1, 1 <= K <= %d, "
			   "stride >= K and per-channel scales",
			   N, K, ldw, MAX_K);
		return NULL;
	}
	for (int n = 0; n < N; n++)
		if (!(sw[n] > 0.0f) || !isfinite(sw[n])) {
			mc_err_set(err, MC_EINVAL,
				   "int8 weights: scale of channel %d is %g; scales must be positive "
				   "and finite",
				   n, (double)sw[n]);
			return NULL;
		}
	p = calloc(1, sizeof(*p));
	if (!p)
		goto nomem;
	p->n = N;
	p->k = K;
	p->k4 = ((K + 3) / 4 + QPAD - 1) / QPAD * QPAD;
	p->k2 = (K + 1) / 2;
	p->groups = (int)(((int64_t)N + GROUP - 1) / GROUP);
	cols = (size_t)p->groups * GROUP;
	if (mc_mul_overflow(cols * 4, (size_t)p->k4, &bytes))
		goto nomem;
	p->w = mc_calloc(bytes, 1);
	p->scale = mc_calloc(cols, sizeof(float));
	p->bias = mc_calloc(cols, sizeof(float));
	p->colsum = mc_calloc(cols, sizeof(int32_t));
	if (!p->w || !p->scale || !p->bias || !p->colsum)
		goto nomem;
	for (int n = 0; n < N; n++) {
		const int8_t *row = w + (size_t)n * ldw;
		int8_t *dst = p->w + (size_t)(n / GROUP) * p->k4 * 256 + (n % GROUP / 16) * 64 +
			      (n % 16) * 4;
		int32_t sum = 0;

		for (int k = 0; k < K; k++) {
			dst[(size_t)(k / 4) * 256 + k % 4] = row[k];
			sum += row[k];
			s7 &= row[k] >= -S7_MAX && row[k] <= S7_MAX;
		}
		p->colsum[n] = sum;
		p->scale[n] = sw[n];
		p->bias[n] = bias ? bias[n] : 0.0f;
	}
	p->s7 = s7;
	return p;

nomem:
	mc_s8_free(p);
	mc_err_set(err, MC_ENOMEM, "out of memory packing int8 weights [%d, %d]", N, K);
	return NULL;
}

void mc_s8_free(struct mc_s8_weights *p)
{
	if (!p)
		return;
	mc_free(p->w);
	mc_free(p->scale);
	mc_free(p->bias);
	mc_free(p->colsum);
	mc_free(p->w16);
	free(p);
}

int mc_s8_n(const struct mc_s8_weights *p)
{
	return p->n;
}

int mc_s8_k(const struct mc_s8_weights *p)
{
	return p->k;
}

int mc_s8_7bit(const struct mc_s8_weights *p)
{
	return p->s7;
}

/* ---------------------------------------------------------------- GEMM */

/*
 * The weights widened to s16 for the AVX2 kernel (its layout is there),
 * made on the first call that uses that kernel and kept with the weights:
 * other kernels never pay for it. Two threads may both make it; one copy
 * stays. NULL when out of memory.
 */
static const int16_t *w16_of(const struct mc_s8_weights *cw)
{
	struct mc_s8_weights *w = (struct mc_s8_weights *)cw;
	int16_t *p = __atomic_load_n(&w->w16, __ATOMIC_ACQUIRE), *none = NULL;
	size_t strip;

	if (p)
		return p;
	strip = (size_t)w->k2 * 32;
	p = mc_calloc((size_t)w->groups * 4 * strip, sizeof(int16_t));
	if (!p)
		return NULL;
	for (int n = 0; n < w->n; n++) {
		int16_t *d = p + (size_t)(n / 16) * strip + (n % 16) * 2;
		const int8_t *src = w->w + (size_t)(n / GROUP) * w->k4 * 256 + (n % GROUP / 16) * 64 +
				    (n % 16) * 4;

		for (int k = 0; k < w->k; k++)
			d[(size_t)(k / 2) * 32 + k % 2] = src[(size_t)(k / 4) * 256 + k % 4];
	}
	if (!__atomic_compare_exchange_n(&w->w16, &none, p, 0, __ATOMIC_ACQ_REL,
					 __ATOMIC_ACQUIRE)) {
		mc_free(p);
		return none;
	}
	return p;
}

/* Shares (group, row block) items out; writes y (requantized) or c (s32 sums). */
static void run(int M, const uint8_t *a, int lda, float sa, int za, const struct mc_s8_weights *w,
		unsigned flags, float *y, int ldy, int32_t *c, int ldc)
{
	const struct s8_kernel *kn = kernel();
	const int8_t *wb = NULL;
	size_t gbytes;
	epi_fn epi;
	int mr, rb, items;

	if (M <= 0)
		return;
#if defined(__x86_64__) || defined(__i386__)
	if (kn->wide && w->s7)
		kn = &avx2s7;
#endif
	if (kn->wide) {
		wb = (const int8_t *)(const void *)w16_of(w);
		if (!wb) /* out of memory for the copy: the portable kernel, same sums */
			kn = find_kernel("portable");
	}
	if (!kn->wide)
		wb = w->w;
	gbytes = kn->wide ? (size_t)4 * w->k2 * 32 * sizeof(int16_t) : (size_t)w->k4 * 256;
	epi = epilogues[kn->epi];
	mr = kn->mr;
	rb = (M + mr - 1) / mr;
	items = w->groups * rb;
#pragma omp parallel for schedule(static) if ((double)M * w->n * w->k >= PAR_MIN_S8 && items > 1)
	for (int it = 0; it < items; it++) {
		int32_t t[MR_MAX * GROUP] __attribute__((aligned(64)));
		int g = it / rb, m0 = (it % rb) * mr, n0 = g * GROUP;
		int rows = M - m0 < mr ? M - m0 : mr, cols = w->n - n0 < GROUP ? w->n - n0 : GROUP;

		kn->fn(rows, (cols + 15) / 16, w->k, a + (size_t)m0 * lda, (size_t)lda,
		       wb + (size_t)g * gbytes, t);
		if (c) {
			for (int i = 0; i < rows; i++)
				memcpy(c + (size_t)(m0 + i) * ldc + n0, t + i * GROUP,
				       (size_t)cols * sizeof(int32_t));
		} else {
			epi(rows, cols, t, w, n0, sa, za, flags, y + (size_t)m0 * ldy + n0,
			    (size_t)ldy);
		}
	}
}

void mc_gemm_u8s8(int M, const uint8_t *a, int lda, float sa, int za,
		  const struct mc_s8_weights *w, unsigned flags, float *y, int ldy)
{
	run(M, a, lda, sa, za, w, flags, y, ldy, NULL, 0);
}

void mc_gemm_u8s8_s32(int M, const uint8_t *a, int lda, const struct mc_s8_weights *w, int32_t *c,
		      int ldc)
{
	run(M, a, lda, 0.0f, 0, w, 0, NULL, 0, c, ldc);
}

void mc_gemm_u8s8_s32_ref(int M, int N, int K, const uint8_t *a, int lda, const int8_t *w,
			  int ldw, int32_t *c, int ldc)
{
	for (int m = 0; m < M; m++)
		for (int n = 0; n < N; n++) {
			int64_t acc = 0;

			for (int k = 0; k < K; k++)
				acc += (int64_t)a[(size_t)m * lda + k] * w[(size_t)n * ldw + k];
			c[(size_t)m * ldc + n] = (int32_t)acc;
		}
}

void mc_gemm_u8s8_ref(int M, int N, int K, const uint8_t *a, int lda, float sa, int za,
		      const int8_t *w, int ldw, const float *sw, const float *bias, unsigned flags,
		      float *y, int ldy)
{
	for (int n = 0; n < N; n++) {
		int64_t colsum = 0;

		for (int k = 0; k < K; k++)
			colsum += w[(size_t)n * ldw + k];
		for (int m = 0; m < M; m++) {
			int64_t acc = 0;
			float v;

			for (int k = 0; k < K; k++)
				acc += (int64_t)a[(size_t)m * lda + k] * w[(size_t)n * ldw + k];
			v = sa * sw[n] * (float)(acc - za * colsum) + (bias ? bias[n] : 0.0f);
			if ((flags & (MC_S8_RELU | MC_S8_RELU6)) && !(v > 0.0f))
				v = 0.0f;
			if ((flags & MC_S8_RELU6) && v > 6.0f)
				v = 6.0f;
			y[(size_t)m * ldy + n] = v;
		}
	}
}

/* ---------------------------------------------------------------- quantization */

void mc_u8_qparams(float lo, float hi, float *scale, int *zero_point)
{
	float l = lo < 0.0f ? lo : 0.0f, h = hi > 0.0f ? hi : 0.0f, s = (h - l) / 255.0f, z;

	if (!(s > 0.0f) || !isfinite(s)) {
		*scale = 1.0f;
		*zero_point = 0;
		return;
	}
	z = nearbyintf(-l / s);
	*scale = s;
	*zero_point = z < 0.0f ? 0 : z > 255.0f ? 255 : (int)z;
}

static inline uint8_t quantize1(float x, float scale, float zp)
{
	float v = nearbyintf(x / scale) + zp;

	if (!(v > 0.0f))
		return 0;
	return v > 255.0f ? 255 : (uint8_t)v;
}

void mc_quantize_u8_ref(const float *x, size_t n, float scale, int zero_point, uint8_t *q)
{
	for (size_t i = 0; i < n; i++)
		q[i] = quantize1(x[i], scale, (float)zero_point);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx512f"))) static void quantize_avx512(const float *x, size_t n,
							       float scale, int zero_point,
							       uint8_t *q)
{
	__m512 s = _mm512_set1_ps(scale), z = _mm512_set1_ps((float)zero_point);
	__m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
	size_t i = 0;

	for (; i + 16 <= n; i += 16) {
		__m512 v = _mm512_roundscale_ps(_mm512_div_ps(_mm512_loadu_ps(x + i), s),
						_MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);

		/* max(v, 0) takes 0 for NaN, as the scalar !(v > 0) does */
		v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, z), lo), hi);
		_mm_storeu_si128((__m128i *)(q + i), _mm512_cvtusepi32_epi8(_mm512_cvtps_epu32(v)));
	}
	for (; i < n; i++)
		q[i] = quantize1(x[i], scale, (float)zero_point);
}
#endif

#if defined(__x86_64__) || defined(__i386__)
/* The same with 8 lanes: the AVX2 kernels' (avx2, avx-vnni) machines may lack AVX-512. */
__attribute__((target("avx2"))) static void quantize_avx2(const float *x, size_t n, float scale,
							   int zero_point, uint8_t *q)
{
	__m256 s = _mm256_set1_ps(scale), z = _mm256_set1_ps((float)zero_point);
	__m256 lo = _mm256_setzero_ps(), hi = _mm256_set1_ps(255.0f);
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), s),
					   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		__m256i iv;
		__m128i w;

		/* max(v, 0) takes 0 for NaN (the second operand), as the scalar !(v > 0) does */
		v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, z), lo), hi);
		iv = _mm256_cvtps_epi32(v);
		w = _mm_packus_epi32(_mm256_castsi256_si128(iv), _mm256_extracti128_si256(iv, 1));
		_mm_storel_epi64((__m128i *)(q + i), _mm_packus_epi16(w, w));
	}
	for (; i < n; i++)
		q[i] = quantize1(x[i], scale, (float)zero_point);
}
#endif

void mc_quantize_u8(const float *x, size_t n, float scale, int zero_point, uint8_t *q)
{
#if defined(__x86_64__) || defined(__i386__)
	if (kernel()->epi == 2) {
		quantize_avx512(x, n, scale, zero_point, q);
		return;
	}
	if (mc_cpu_has(MC_CPU_AVX2)) {
		quantize_avx2(x, n, scale, zero_point, q);
		return;
	}
#endif
	mc_quantize_u8_ref(x, n, scale, zero_point, q);
}

void mc_minmax(const float *x, size_t n, float *lo, float *hi)
{
	float l = 0.0f, h = 0.0f;
	size_t i = 0;

	while (i < n && isnan(x[i]))
		i++;
	if (i < n)
		l = h = x[i];
	for (; i < n; i++) {
		l = x[i] < l ? x[i] : l;
		h = x[i] > h ? x[i] : h;
	}
	*lo = l;
	*hi = h;
}
