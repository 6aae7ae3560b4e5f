/* SPDX-License-Identifier: MIT */
/*
 * check_gemm.c - every GEMM kernel this CPU can run against its reference:
 * f32 (packed and GEMV paths) within a stated tolerance, int8 bit for bit
 * (s32 sums and requantized f32), activation quantization bit for bit and
 * on hand-computed cases, and results independent of the thread count.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/tensor.h>

#include "kernels/gemm.h"

static const char *const f32_kernels[] = { "avx512", "avx2", "portable" };
static const char *const s8_kernels[] = { "amx", "avx512-vnni", "avx-vnni", "avx2", "portable" };
#define NF32 (int)(sizeof(f32_kernels) / sizeof(f32_kernels[0]))
#define NS8 (int)(sizeof(s8_kernels) / sizeof(s8_kernels[0]))

static float *random_f32(size_t n, uint64_t stream)
{
	float *x = malloc((n ? n : 1) * sizeof(float));

	for (size_t i = 0; i < n; i++)
		x[i] = 2.0f * mc_rand_uniform(11, stream, i) - 1.0f;
	return x;
}

/* Bytes with the extremes (0, 255 / -128, 127) over-represented. */
static void *random_bytes(size_t n, uint64_t stream, int is_signed)
{
	uint8_t *x = malloc(n ? n : 1);

	for (size_t i = 0; i < n; i++) {
		uint32_t w[4];

		mc_philox(12, stream, i, w);
		if (w[1] % 8 == 0)
			x[i] = w[2] & 1 ? 0x7f + !is_signed * 0x80 : 0x80 * is_signed;
		else
			x[i] = (uint8_t)w[0];
	}
	return x;
}

/* ---------------------------------------------------------------- f32 */

static void check_sgemm(int ta, int tb, int M, int N, int K, float alpha, float beta)
{
	int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
	float *A = random_f32((size_t)(ta ? K : M) * lda, 1);
	float *B = random_f32((size_t)(tb ? N : K) * ldb, 2);
	float *C = random_f32((size_t)M * ldc, 3), *R = malloc((size_t)M * ldc * sizeof(float));

	memcpy(R, C, (size_t)M * ldc * sizeof(float));
	mc_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
	mc_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
	for (int i = 0; i < M; i++)
		for (int j = 0; j < ldc; j++) {
			float c = C[(size_t)i * ldc + j], r = R[(size_t)i * ldc + j];

			if (j >= N) /* the padding between rows is left alone */
				ck_assert(memcmp(&c, &r, sizeof(c)) == 0);
			else
				ck_assert_msg(fabsf(c - r) <= 1e-5f * (float)K + 1e-6f,
					      "%s ta=%d tb=%d %dx%dx%d: C[%d][%d] = %g, ref %g",
					      mc_sgemm_kernel(), ta, tb, M, N, K, i, j, c, r);
		}
	free(R);
	free(C);
	free(B);
	free(A);
}

START_TEST(sgemm_every_kernel)
{
	static const int rows[] = { 1, 2, 3, 4, 13, 37 };
	int tested = 0;

	for (int kn = 0; kn < NF32; kn++) {
		if (mc_sgemm_use(f32_kernels[kn]))
			continue;
		tested++;
		ck_assert_str_eq(mc_sgemm_kernel(), f32_kernels[kn]);
		for (int t = 0; t < 4; t++)
			for (int r = 0; r < 6; r++) {
				/* GEMV rows (1-3), odd K tails of 16, 8 and 4 lanes */
				check_sgemm(t & 1, t >> 1, rows[r], 77, 23, 1.0f, 0.0f);
				check_sgemm(t & 1, t >> 1, rows[r], 130, 301, 0.5f, -1.5f);
				check_sgemm(t & 1, t >> 1, rows[r], 5, 784, 1.0f, 1.0f);
			}
		check_sgemm(0, 1, 129, 65, 520, 1.0f, 1.0f);
	}
	ck_assert_int_ge(tested, 1);
	ck_assert_int_eq(mc_sgemm_use("portable"), 0);
	ck_assert_int_eq(mc_sgemm_use("sse9"), MC_EINVAL);
	ck_assert_int_eq(mc_sgemm_use(NULL), MC_EINVAL);
	ck_assert_str_eq(mc_sgemm_kernel(), "portable"); /* unchanged by a refused name */
	for (int kn = 0; kn < NF32 && mc_sgemm_use(f32_kernels[kn]); kn++)
		; /* back to the fastest */
}
END_TEST

/*
 * Every kernel gives the same bytes: each output is, per K slice of 256 in
 * order, a chain of FMAs from zero, then one FMA with alpha and beta * C;
 * the dot products (GEMV with B transposed) keep 16 lanes added in one
 * tree. Shapes cover the GEMV rows, edge tiles, several K slices and
 * every K tail of 16 lanes.
 */
static void same_bytes(int ta, int tb, int M, int N, int K, float alpha, float beta)
{
	int lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3, first = -1;
	float *A = random_f32((size_t)(ta ? K : M) * lda, 6);
	float *B = random_f32((size_t)(tb ? N : K) * ldb, 7);
	float *C0 = random_f32((size_t)M * ldc, 8), *C = malloc((size_t)M * ldc * sizeof(float));
	float *C1 = malloc((size_t)M * ldc * sizeof(float));

	for (int kn = 0; kn < NF32; kn++) {
		if (mc_sgemm_use(f32_kernels[kn]))
			continue;
		memcpy(C, C0, (size_t)M * ldc * sizeof(float));
		mc_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
		if (first < 0) {
			first = kn;
			memcpy(C1, C, (size_t)M * ldc * sizeof(float));
			continue;
		}
		for (size_t i = 0; i < (size_t)M * ldc; i++)
			ck_assert_msg(memcmp(&C[i], &C1[i], sizeof(float)) == 0,
				      "%s and %s differ: ta=%d tb=%d %dx%dx%d C[%zu] = %a, %a",
				      f32_kernels[kn], f32_kernels[first], ta, tb, M, N, K, i, C[i],
				      C1[i]);
	}
	free(C1);
	free(C);
	free(C0);
	free(B);
	free(A);
}

START_TEST(sgemm_every_kernel_same_bytes)
{
	static const int rows[] = { 1, 2, 3, 7, 25, 64 }, ks[] = { 1, 5, 8, 13, 16, 23, 31, 300, 777 };

	for (int t = 0; t < 4; t++)
		for (int r = 0; r < 6; r++)
			for (int k = 0; k < 9; k++)
				same_bytes(t & 1, t >> 1, rows[r], 37 + 20 * (k & 3), ks[k],
					   k & 1 ? 0.75f : 1.0f, (float)(k % 3) - 1.0f);
	same_bytes(0, 0, 130, 290, 600, 1.0f, 1.0f);
	for (int kn = 0; kn < NF32 && mc_sgemm_use(f32_kernels[kn]); kn++)
		; /* back to the fastest */
}
END_TEST

/*
 * B packed once (kernels/gemm.h, a linear layer at inference) gives
 * mc_sgemm's bytes on every kernel, for B as it is and transposed, edge
 * strips of M (tiles of fewer rows) and N, several K slices, and with the
 * bias and relu it applies tile by tile the bytes of a bias copied into C,
 * mc_sgemm with beta 1 and a relu select after; a kernel changed since the
 * packing is refused.
 */
/*
 * Data-parallel training's weight gradient (mc_sgemm_tn_chain): the batch's
 * K rows in 1 to 4 parts, each continuing the chain where the last left it,
 * give the bytes of one mc_sgemm(1, 0, ..., beta 1) onto a zeroed C, with
 * every kernel: edge tiles (M, N not multiples of 4 and 16), parts of 1 to
 * 3 rows, zero rows of B (the sign of a zero sum).
 */
START_TEST(sgemm_chain_in_parts_same_bytes)
{
	static const int shapes[][3] = { { 10, 784, 128 }, { 37, 45, 256 }, { 4, 16, 7 },
					 { 3, 5, 64 } };
	int tested = 0;

	for (int kn = 0; kn < NF32; kn++) {
		if (mc_sgemm_use(f32_kernels[kn]))
			continue;
		tested++;
		for (size_t sh = 0; sh < sizeof(shapes) / sizeof(shapes[0]); sh++) {
			int M = shapes[sh][0], N = shapes[sh][1], K = shapes[sh][2];
			float *A = random_f32((size_t)K * M, 20), *B = random_f32((size_t)K * N, 21);
			float *want = calloc((size_t)M * N, sizeof(float));
			float *got = malloc((size_t)M * N * sizeof(float));

			for (int k = 0; k < K; k++) /* a pixel that is always 0 */
				B[(size_t)k * N] = 0.0f;
			mc_sgemm(1, 0, M, N, K, 1.0f, A, M, B, N, 1.0f, want, N);
			for (int parts = 1; parts <= 4; parts++) {
				memset(got, 0, (size_t)M * N * sizeof(float));
				for (int p = 0; p < parts; p++) {
					int lo = K * p / parts, hi = K * (p + 1) / parts;

					mc_sgemm_tn_chain(M, N, hi - lo, A + (size_t)lo * M, M,
							  B + (size_t)lo * N, N, got, N, p == parts - 1);
				}
				ck_assert_msg(!memcmp(got, want, (size_t)M * N * sizeof(float)),
					      "kernel %s, %dx%dx%d in %d parts: other bytes",
					      f32_kernels[kn], M, N, K, parts);
			}
			free(A);
			free(B);
			free(want);
			free(got);
		}
	}
	ck_assert_int_ge(tested, 1);
	for (int kn = 0; kn < NF32 && mc_sgemm_use(f32_kernels[kn]); kn++)
		; /* back to the fastest */
}
END_TEST

static void fill_bias_ref(int M, int N, const float *bias, float *C, int ldc)
{
	for (int i = 0; i < M; i++)
		memcpy(C + (size_t)i * ldc, bias, (size_t)N * sizeof(float));
}

static void relu_ref(int M, int N, float *C, int ldc)
{
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++)
			C[(size_t)i * ldc + j] = C[(size_t)i * ldc + j] > 0.0f ? C[(size_t)i * ldc + j]
									: 0.0f;
}

START_TEST(sgemm_packed_b_same_bytes)
{
	static const int shapes[][3] = { { 1, 37, 23 },	   { 4, 64, 784 },  { 25, 130, 301 },
					 { 256, 10, 64 },  { 130, 290, 600 }, { 8, 40, 70 },
					 { 20, 33, 300 },  { 256, 96, 520 } };
	int tested = 0;

	for (int kn = 0; kn < NF32; kn++) {
		if (mc_sgemm_use(f32_kernels[kn]))
			continue;
		for (int v = 0; v < 8; v++)
			for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
				int tb = v & 1, with_bias = v & 2, relu = (v & 4) != 0;
				int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
				int lda = K + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
				float *A = random_f32((size_t)M * lda, 21);
				float *B = random_f32((size_t)(tb ? N : K) * ldb, 22);
				float *C = random_f32((size_t)M * ldc, 23);
				float *bias = with_bias ? random_f32((size_t)N, 24) : NULL;
				float *P = malloc((size_t)M * ldc * sizeof(float));
				size_t size = mc_sgemm_packed_size(f32_kernels[kn], N, K);
				float *packed = aligned_alloc(64, (size * sizeof(float) + 63) / 64 * 64);

				ck_assert(size >= (size_t)N * K);
				memcpy(P, C, (size_t)M * ldc * sizeof(float));
				mc_sgemm_pack_b(f32_kernels[kn], tb, N, K, B, ldb, packed);
				if (bias)
					fill_bias_ref(M, N, bias, C, ldc);
				mc_sgemm(0, tb, M, N, K, 1.0f, A, lda, B, ldb, 1.0f, C, ldc);
				if (relu)
					relu_ref(M, N, C, ldc);
				ck_assert_int_eq(mc_sgemm_pb(f32_kernels[kn], tb, M, N, K, 1.0f, A,
							     lda, B, ldb, packed, bias, relu,
							     bias ? 0.0f : 1.0f, P, ldc),
						 0);
				ck_assert_msg(memcmp(C, P, (size_t)M * ldc * sizeof(float)) == 0,
					      "%s tb=%d bias=%d relu=%d %dx%dx%d: packed B differs",
					      f32_kernels[kn], tb, !!bias, relu, M, N, K);
				tested++;
				free(packed);
				free(P);
				free(bias);
				free(C);
				free(B);
				free(A);
			}
	}
	ck_assert_int_ge(tested, 64);
	/* packed for another kernel than the one now in use: refused, nothing computed */
	ck_assert_int_eq(mc_sgemm_use("portable"), 0);
	{
		float a[4] = { 1, 2, 3, 4 }, b[4] = { 1, 1, 1, 1 }, c[4] = { 7, 7, 7, 7 };

		ck_assert_int_eq(mc_sgemm_pb("avx2", 0, 2, 2, 2, 1.0f, a, 2, b, 2, b, NULL, 0, 0.0f, c, 2),
				 -1);
		ck_assert(c[0] == 7.0f && c[3] == 7.0f);
	}
	for (int kn = 0; kn < NF32 && mc_sgemm_use(f32_kernels[kn]); kn++)
		; /* back to the fastest */
}
END_TEST

static void count_item(void *arg, int64_t item)
{
	__atomic_fetch_add((int *)arg + item, 1, __ATOMIC_RELAXED);
}

/*
 * The side items of mc_sgemm_pb_side run once each beside the product, on
 * the team or (a few rows: the GEMV path) before it, for any thread count,
 * and leave the product's bytes as they are.
 */
START_TEST(sgemm_packed_b_side_items)
{
	static const int shapes[][3] = {{256, 70, 300}, {2, 40, 30}, {13, 10, 600}};
	int saved = omp_get_max_threads();
	const char *k = mc_sgemm_kernel();

	for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++) {
		int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
		float *A = random_f32((size_t)M * K, 31), *B = random_f32((size_t)N * K, 32);
		float *C = malloc((size_t)M * N * sizeof(float)),
		      *D = malloc((size_t)M * N * sizeof(float));
		size_t size = mc_sgemm_packed_size(k, N, K);
		float *packed = aligned_alloc(64, (size * sizeof(float) + 63) / 64 * 64);

		mc_sgemm_pack_b(k, 1, N, K, B, K, packed);
		ck_assert_int_eq(
		    mc_sgemm_pb(k, 1, M, N, K, 1.0f, A, K, B, K, packed, NULL, 1, 0.0f, C, N), 0);
		for (int t = 1; t <= 3; t++)
			for (int c = 0; c < 3; c++) {
				int items = c == 0 ? 0 : c == 1 ? 1 : 37, seen[37] = {0};
				struct mc_sgemm_side side = {count_item, seen, items};

				omp_set_num_threads(t);
				ck_assert_int_eq(mc_sgemm_pb_side(k, 1, M, N, K, 1.0f, A, K, B, K,
								  packed, NULL, 1, 0.0f, D, N,
								  &side),
						 0);
				for (int i = 0; i < items; i++)
					ck_assert_msg(seen[i] == 1,
						      "%dx%dx%d, %d threads: item %d ran %d times",
						      M, N, K, t, i, seen[i]);
				ck_assert(memcmp(C, D, (size_t)M * N * sizeof(float)) == 0);
			}
		free(packed);
		free(D);
		free(C);
		free(B);
		free(A);
	}
	omp_set_num_threads(saved);
}
END_TEST

/* One row of A on the GEMV path, wide enough to use the whole team. */
START_TEST(sgemv_thread_count_invariant)
{
	const int N = 5003, K = 1001;
	float *A = random_f32(K, 4), *B = random_f32((size_t)N * K, 5);
	float *C1 = calloc(N, sizeof(float)), *C3 = calloc(N, sizeof(float));
	int saved = omp_get_max_threads();

	for (int tb = 0; tb < 2; tb++) {
		omp_set_num_threads(1);
		mc_sgemm(0, tb, 1, N, K, 1.0f, A, K, B, tb ? K : N, 0.0f, C1, N);
		omp_set_num_threads(3);
		mc_sgemm(0, tb, 1, N, K, 1.0f, A, K, B, tb ? K : N, 0.0f, C3, N);
		ck_assert_mem_eq(C1, C3, (size_t)N * sizeof(float));
	}
	omp_set_num_threads(saved);
	free(C3);
	free(C1);
	free(B);
	free(A);
}
END_TEST

/* ---------------------------------------------------------------- int8 */

/*
 * Every kernel against the reference on one shape: s32 sums, then y, bit
 * for bit. s7: weights in [-64, 64] (reduce_range), both ends present,
 * which "avx2" multiplies with vpmaddubsw; else the full range.
 */
static void check_s8w(int M, int N, int K, int za, int relu, int with_bias, int s7)
{
	int lda = K + 5, ldw = K + 3, ldc = N + 1;
	uint8_t *a = random_bytes((size_t)M * lda, 20, 0);
	int8_t *w = random_bytes((size_t)N * ldw, 21, 1);
	float *sw = malloc(N * sizeof(float)), *bias = random_f32(N, 22);
	int32_t *c = malloc((size_t)M * ldc * sizeof(int32_t)), *cr = malloc((size_t)M * ldc * 4);
	float *y = malloc((size_t)M * ldc * sizeof(float)), *yr = malloc((size_t)M * ldc * 4);
	struct mc_err err = { 0 };
	struct mc_s8_weights *p;
	float sa = 0.0173f;

	for (int n = 0; n < N; n++)
		sw[n] = 0.001f + 0.01f * mc_rand_uniform(13, 0, (uint64_t)n);
	if (s7) {
		for (size_t i = 0; i < (size_t)N * ldw; i++)
			w[i] = (int8_t)(w[i] % 65); /* [-64, 64] */
		w[0] = -64;
		w[(size_t)(N - 1) * ldw + K - 1] = 64;
	}
	p = mc_s8_pack(w, N, K, ldw, sw, with_bias ? bias : NULL, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	if (s7)
		ck_assert_int_eq(mc_s8_7bit(p), 1);
	ck_assert_int_eq(mc_s8_n(p), N);
	ck_assert_int_eq(mc_s8_k(p), K);
	mc_gemm_u8s8_s32_ref(M, N, K, a, lda, w, ldw, cr, ldc);
	mc_gemm_u8s8_ref(M, N, K, a, lda, sa, za, w, ldw, sw, with_bias ? bias : NULL,
			 relu ? MC_S8_RELU : 0, yr, ldc);
	for (int kn = 0; kn < NS8; kn++) {
		if (mc_gemm_s8_use(s8_kernels[kn]))
			continue;
		memset(c, 0x5a, (size_t)M * ldc * sizeof(int32_t));
		memset(y, 0x5a, (size_t)M * ldc * sizeof(float));
		mc_gemm_u8s8_s32(M, a, lda, p, c, ldc);
		mc_gemm_u8s8(M, a, lda, sa, za, p, relu ? MC_S8_RELU : 0, y, ldc);
		for (int m = 0; m < M; m++) {
			for (int n = 0; n < N; n++) {
				size_t i = (size_t)m * ldc + n;

				ck_assert_msg(c[i] == cr[i], "%s %dx%dx%d: acc[%d][%d] = %d, ref %d",
					      s8_kernels[kn], M, N, K, m, n, c[i], cr[i]);
				ck_assert_msg(memcmp(&y[i], &yr[i], sizeof(float)) == 0,
					      "%s %dx%dx%d za=%d: y[%d][%d] = %a, ref %a",
					      s8_kernels[kn], M, N, K, za, m, n, y[i], yr[i]);
			}
			/* nothing written past N */
			ck_assert_uint_eq((uint32_t)c[(size_t)m * ldc + N], 0x5a5a5a5au);
		}
	}
	mc_s8_free(p);
	free(yr);
	free(y);
	free(cr);
	free(c);
	free(bias);
	free(sw);
	free(w);
	free(a);
}

static void check_s8(int M, int N, int K, int za, int relu, int with_bias)
{
	check_s8w(M, N, K, za, relu, with_bias, 0);
}

START_TEST(s8_every_kernel_exact)
{
	static const int ms[] = { 1, 2, 3, 5, 7, 13 }, ns[] = { 1, 10, 17, 63, 64, 65, 130 };
	static const int ks[] = { 1, 3, 4, 5, 17, 64, 255 };
	int tested = 0;

	for (int kn = 0; kn < NS8; kn++)
		tested += mc_gemm_s8_use(s8_kernels[kn]) == 0;
	ck_assert_int_ge(tested, 1);
	for (int i = 0; i < 6; i++)
		for (int j = 0; j < 7; j++)
			check_s8(ms[i], ns[j], ks[(i + j) % 7], (i * 37 + j * 11) % 256, j & 1, i & 1);
	check_s8(130, 33, 784, 128, 1, 1);
	/* full 32-row AMX blocks, K a multiple of 64 and not */
	check_s8(64, 70, 128, 7, 0, 1);
	check_s8(97, 129, 200, 255, 1, 0);
	ck_assert_int_eq(mc_gemm_s8_use("mmx"), MC_EINVAL);
	ck_assert_int_eq(mc_gemm_s8_use(NULL), MC_EINVAL);
}
END_TEST

/*
 * 7-bit weights (reduce_range): every kernel, "avx2" on its vpmaddubsw
 * path, bit for bit with the reference; edge row blocks (M not a multiple
 * of 5 or 6), edge strips and groups (N not a multiple of 16 or 64), K not
 * a multiple of 4 or 32, K over one 512 chunk.
 */
START_TEST(s8_7bit_every_kernel_exact)
{
	static const int ms[] = { 1, 4, 5, 6, 11, 13 }, ns[] = { 1, 10, 17, 63, 64, 65, 130 };
	static const int ks[] = { 1, 3, 4, 5, 33, 64, 255 };

	for (int i = 0; i < 6; i++)
		for (int j = 0; j < 7; j++)
			check_s8w(ms[i], ns[j], ks[(i + j) % 7], (i * 37 + j * 11) % 256, j & 1,
				  i & 1, 1);
	check_s8w(130, 33, 784, 128, 1, 1, 1);
	check_s8w(64, 70, 128, 7, 0, 1, 1);
	check_s8w(97, 129, 1031, 255, 1, 0, 1);
}
END_TEST

/*
 * Where the 7-bit range ends: activations 255 against weights -64 and 64
 * in both places of a pair (pair sums -32640 and 32640, the s16 edge
 * vpmaddubsw must not pass) give exact sums on every kernel; one weight of
 * 65 (or -65) makes the matrix full range, and the widened path is taken,
 * still exact (a pair of 65s would saturate vpmaddubsw).
 */
START_TEST(s8_7bit_edges_exact)
{
	const int M = 7, N = 70, K = 4099, ldc = N;
	uint8_t *a = malloc((size_t)M * K);
	int8_t *w = malloc((size_t)N * K);
	float *sw = malloc(N * sizeof(float));
	int32_t *c = malloc((size_t)M * N * sizeof(int32_t)), *cr = malloc((size_t)M * N * 4);

	for (int m = 0; m < M; m++)
		for (int k = 0; k < K; k++)
			a[(size_t)m * K + k] = m < 4 ? 255 : (uint8_t)(k % 3 ? 255 : 200 + m);
	for (int n = 0; n < N; n++) {
		sw[n] = 1.0f;
		for (int k = 0; k < K; k++)
			w[(size_t)n * K + k] = n % 3 == 0 ? -64 : n % 3 == 1 ? 64
							    : (k / 2 + n) % 2 ? -64 : 64;
	}
	for (int out = 0; out < 3; out++) {
		struct mc_s8_weights *p;

		if (out == 1)
			w[(size_t)5 * K + 7] = 65;
		if (out == 2)
			w[(size_t)5 * K + 7] = -65;
		p = mc_s8_pack(w, N, K, K, sw, NULL, NULL);
		ck_assert_ptr_nonnull(p);
		ck_assert_int_eq(mc_s8_7bit(p), out == 0);
		mc_gemm_u8s8_s32_ref(M, N, K, a, K, w, K, cr, ldc);
		ck_assert_int_eq(cr[0], -255 * 64 * K);
		ck_assert_int_eq(cr[1], 255 * 64 * K);
		for (int kn = 0; kn < NS8; kn++) {
			if (mc_gemm_s8_use(s8_kernels[kn]))
				continue;
			memset(c, 0, (size_t)M * N * sizeof(int32_t));
			mc_gemm_u8s8_s32(M, a, K, p, c, ldc);
			for (int i = 0; i < M * N; i++)
				ck_assert_msg(c[i] == cr[i], "%s (7-bit %d): acc[%d][%d] = %d, ref %d",
					      s8_kernels[kn], out == 0, i / N, i % N, c[i], cr[i]);
		}
		mc_s8_free(p);
	}
	for (int kn = 0; kn < NS8 && mc_gemm_s8_use(s8_kernels[kn]); kn++)
		; /* back to the fastest */
	free(cr);
	free(c);
	free(sw);
	free(w);
	free(a);
}
END_TEST

/* The deepest K allowed, every product at its extreme: the sum just fits in s32. */
START_TEST(s8_extreme_sums)
{
	const int K = 65536, N = 3;
	uint8_t *a = malloc(K);
	int8_t *w = malloc((size_t)N * K);
	float sw[3] = { 1.0f, 1.0f, 1.0f };
	int32_t c[3], cr[3];
	struct mc_err err = { 0 };
	struct mc_s8_weights *p;

	memset(a, 255, K);
	memset(w, 0x80, K);		/* -128 */
	memset(w + K, 0x7f, K);		/* 127 */
	memset(w + 2 * (size_t)K, 0, K);
	p = mc_s8_pack(w, N, K, K, sw, NULL, &err);
	ck_assert_ptr_nonnull(p);
	mc_gemm_u8s8_s32_ref(1, N, K, a, K, w, K, cr, N);
	ck_assert_int_eq(cr[0], -255 * 128 * 65536);
	ck_assert_int_eq(cr[1], 255 * 127 * 65536);
	for (int kn = 0; kn < NS8; kn++) {
		float y[3];

		if (mc_gemm_s8_use(s8_kernels[kn]))
			continue;
		mc_gemm_u8s8_s32(1, a, K, p, c, N);
		ck_assert_mem_eq(c, cr, sizeof(c));
		/* za = 255: d = sum (255 - 255) * w = 0 */
		mc_gemm_u8s8(1, a, K, 1.0f, 255, p, 0, y, N);
		ck_assert(y[0] == 0.0f && y[1] == 0.0f && y[2] == 0.0f);
	}
	mc_s8_free(p);
	free(w);
	free(a);
}
END_TEST

/*
 * Where vpmaddubsw would saturate: activations all 255 against weights
 * whose neighbours in K are both -128 or both 127 (pair sums -65280 and
 * 64770 do not fit s16), and mixes of the two; several groups, row blocks
 * and K chunks, K odd. Every kernel, bit for bit with the reference.
 */
START_TEST(s8_saturating_pairs_exact)
{
	const int M = 13, N = 130, K = 1031, ldc = N;
	uint8_t *a = malloc((size_t)M * K);
	int8_t *w = malloc((size_t)N * K);
	float *sw = malloc(N * sizeof(float));
	int32_t *c = malloc((size_t)M * N * sizeof(int32_t)), *cr = malloc((size_t)M * N * 4);
	struct mc_s8_weights *p;
	int tested = 0;

	for (int m = 0; m < M; m++)
		for (int k = 0; k < K; k++)
			a[(size_t)m * K + k] = m < 8 ? 255 : (uint8_t)(k % 3 ? 255 : 128 + m);
	for (int n = 0; n < N; n++) {
		sw[n] = 1.0f;
		for (int k = 0; k < K; k++) {
			int8_t v = n % 4 == 0 ? -128 : n % 4 == 1 ? 127 : (k / 2 + n) % 2 ? -128 : 127;

			w[(size_t)n * K + k] = n % 7 == 6 && k % 5 == 0 ? (int8_t)-v - (v > 0) : v;
		}
	}
	p = mc_s8_pack(w, N, K, K, sw, NULL, NULL);
	ck_assert_ptr_nonnull(p);
	mc_gemm_u8s8_s32_ref(M, N, K, a, K, w, K, cr, ldc);
	ck_assert_int_eq(cr[0], -255 * 128 * K);
	ck_assert_int_eq(cr[1], 255 * 127 * K);
	for (int kn = 0; kn < NS8; kn++) {
		if (mc_gemm_s8_use(s8_kernels[kn]))
			continue;
		tested++;
		memset(c, 0, (size_t)M * N * sizeof(int32_t));
		mc_gemm_u8s8_s32(M, a, K, p, c, ldc);
		for (int i = 0; i < M * N; i++)
			ck_assert_msg(c[i] == cr[i], "%s: acc[%d][%d] = %d, ref %d", s8_kernels[kn],
				      i / N, i % N, c[i], cr[i]);
	}
	ck_assert_int_ge(tested, 2);
	mc_s8_free(p);
	free(cr);
	free(c);
	free(sw);
	free(w);
	free(a);
}
END_TEST

START_TEST(s8_thread_count_invariant)
{
	const int M = 67, N = 300, K = 301;
	uint8_t *a = random_bytes((size_t)M * K, 30, 0);
	int8_t *w = random_bytes((size_t)N * K, 31, 1);
	float *sw = malloc(N * sizeof(float)), *y1 = malloc((size_t)M * N * 4), *y3 = malloc((size_t)M * N * 4);
	int saved = omp_get_max_threads();
	struct mc_s8_weights *p;

	for (int n = 0; n < N; n++)
		sw[n] = 0.01f;
	p = mc_s8_pack(w, N, K, K, sw, NULL, NULL);
	ck_assert_ptr_nonnull(p);
	omp_set_num_threads(1);
	mc_gemm_u8s8(M, a, K, 0.5f, 3, p, 0, y1, N);
	omp_set_num_threads(3);
	mc_gemm_u8s8(M, a, K, 0.5f, 3, p, 0, y3, N);
	omp_set_num_threads(saved);
	ck_assert_mem_eq(y1, y3, (size_t)M * N * sizeof(float));
	mc_s8_free(p);
	free(y3);
	free(y1);
	free(sw);
	free(w);
	free(a);
}
END_TEST

START_TEST(s8_pack_refuses_bad_input)
{
	int8_t w[8] = { 0 };
	float sw[2] = { 1.0f, 1.0f }, bad[2] = { 1.0f, NAN }, zero[2] = { 0.0f, 1.0f };
	struct mc_err err = { 0 };

	ck_assert_ptr_null(mc_s8_pack(w, 2, 0, 4, sw, NULL, &err));
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "int8 weights [2, 0]"));
	ck_assert_ptr_null(mc_s8_pack(w, 0, 4, 4, sw, NULL, &err));
	ck_assert_ptr_null(mc_s8_pack(w, 2, 4, 3, sw, NULL, &err)); /* stride < K */
	ck_assert_ptr_null(mc_s8_pack(w, 1, 65537, 65537, sw, NULL, &err));
	ck_assert_ptr_null(mc_s8_pack(w, 2, 4, 4, NULL, NULL, &err));
	err.code = 0;
	ck_assert_ptr_null(mc_s8_pack(w, 2, 4, 4, bad, NULL, &err));
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "channel 1"));
	ck_assert_ptr_null(mc_s8_pack(w, 2, 4, 4, zero, NULL, NULL)); /* err may be NULL */
	mc_s8_free(NULL);
}
END_TEST

/* ---------------------------------------------------------------- quantization */

START_TEST(quantize_hand_cases)
{
	static const float x[] = { 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 300.0f, -300.0f, NAN, INFINITY,
				   -INFINITY, 245.0f, 245.5f, -10.0f, -10.5f, 0.0f, -0.0f, 3.49f };
	static const uint8_t want[] = { 10, 12, 12, 10, 8, 255, 0, 0, 255, 0, 255, 255, 0, 0, 10, 10, 13 };
	const size_t n = sizeof(x) / sizeof(x[0]);
	uint8_t q[sizeof(x) / sizeof(x[0])];
	float s, lo, hi;
	int z;

	/* scale 1, zero point 10: ties go to even */
	mc_quantize_u8_ref(x, n, 1.0f, 10, q);
	ck_assert_mem_eq(q, want, n);
	for (int kn = 0; kn < NS8; kn++) { /* each kernel's quantizer */
		if (mc_gemm_s8_use(s8_kernels[kn]))
			continue;
		memset(q, 0, n);
		mc_quantize_u8(x, n, 1.0f, 10, q);
		ck_assert_mem_eq(q, want, n);
	}
	for (int kn = 0; kn < NS8 && mc_gemm_s8_use(s8_kernels[kn]); kn++)
		; /* back to the fastest */
	/* [-1, 1]: scale 2/255, rounded up in f32, so 1 / scale = 127.49999 -> 127 */
	mc_u8_qparams(-1.0f, 1.0f, &s, &z);
	ck_assert(s == 2.0f / 255.0f);
	ck_assert_int_eq(z, 127);
	/* [-2.55, 0]: scale 0.01, zero point 255 */
	mc_u8_qparams(-2.55f, 0.0f, &s, &z);
	ck_assert_int_eq(z, 255);
	/* the range always holds 0 */
	mc_u8_qparams(2.0f, 4.0f, &s, &z);
	ck_assert(s == 4.0f / 255.0f);
	ck_assert_int_eq(z, 0);
	mc_u8_qparams(-3.0f, -1.0f, &s, &z);
	ck_assert_int_eq(z, 255);
	mc_u8_qparams(0.0f, 0.0f, &s, &z);
	ck_assert(s == 1.0f);
	ck_assert_int_eq(z, 0);
	mc_minmax(x, n, &lo, &hi);
	ck_assert(lo == -INFINITY && hi == INFINITY);
	mc_minmax(x + 7, 1, &lo, &hi); /* NaN only */
	ck_assert(lo == 0.0f && hi == 0.0f);
	mc_minmax(x, 5, &lo, &hi);
	ck_assert(lo == -1.5f && hi == 2.5f);
}
END_TEST

START_TEST(quantize_fast_matches_ref)
{
	const size_t n = 10007;
	float *x = random_f32(n, 40), s;
	uint8_t *q = malloc(n), *r = malloc(n);
	int z;

	for (size_t i = 0; i < n; i++)
		x[i] *= 7.0f;
	for (size_t i = 0; i < n; i += 97)
		x[i] = (float)(i % 13) * 0.5f; /* ties */
	mc_u8_qparams(-5.0f, 6.0f, &s, &z);
	for (int kn = 0; kn < NS8; kn++) { /* each kernel's quantizer */
		if (mc_gemm_s8_use(s8_kernels[kn]))
			continue;
		for (size_t len = n - 16; len <= n; len++) {
			mc_quantize_u8(x, len, s, z, q);
			mc_quantize_u8_ref(x, len, s, z, r);
			ck_assert_mem_eq(q, r, len);
		}
		mc_quantize_u8(x, n, 0.5f, 0, q);
		mc_quantize_u8_ref(x, n, 0.5f, 0, r);
		ck_assert_mem_eq(q, r, n);
	}
	for (int kn = 0; kn < NS8 && mc_gemm_s8_use(s8_kernels[kn]); kn++)
		; /* back to the fastest */
	free(r);
	free(q);
	free(x);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("gemm");
	TCase *tc = tcase_create("kernels");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, sgemm_every_kernel);
	tcase_add_test(tc, sgemm_every_kernel_same_bytes);
	tcase_add_test(tc, sgemm_packed_b_same_bytes);
	tcase_add_test(tc, sgemm_packed_b_side_items);
	tcase_add_test(tc, sgemm_chain_in_parts_same_bytes);
	tcase_add_test(tc, sgemv_thread_count_invariant);
	tcase_add_test(tc, s8_every_kernel_exact);
	tcase_add_test(tc, s8_extreme_sums);
	tcase_add_test(tc, s8_7bit_every_kernel_exact);
	tcase_add_test(tc, s8_7bit_edges_exact);
	tcase_add_test(tc, s8_saturating_pairs_exact);
	tcase_add_test(tc, s8_thread_count_invariant);
	tcase_add_test(tc, s8_pack_refuses_bad_input);
	tcase_add_test(tc, quantize_hand_cases);
	tcase_add_test(tc, quantize_fast_matches_ref);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
