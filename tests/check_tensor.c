/* SPDX-License-Identifier: MIT */
/*
 * check_tensor.c - dtype traits, tensor allocation, Philox random numbers
 * and GEMM against the reference kernel.
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/tensor.h>

START_TEST(dtype_table)
{
	static const char *const names[] = { "f32", "s8", "u8", "s32", "q4" };
	static const char *const st[] = { "F32", "I8", "U8", "I32", "U8" };
	static const int bits[] = { 32, 8, 8, 32, 4 };

	for (int t = 0; t < MC_DTYPE_COUNT; t++) {
		const struct mc_dtype_traits *tr = mc_dtype_traits((enum mc_dtype)t);

		ck_assert_ptr_nonnull(tr);
		ck_assert_str_eq(tr->name, names[t]);
		ck_assert_str_eq(tr->st_name, st[t]);
		ck_assert_int_eq(tr->bits, bits[t]);
	}
	ck_assert_ptr_null(mc_dtype_traits(MC_DTYPE_COUNT));
	ck_assert_ptr_null(mc_dtype_traits((enum mc_dtype)-1));
}
END_TEST

START_TEST(tensor_alloc)
{
	struct mc_err err = { 0 };
	int64_t shape[2] = { 3, 5 }, q[1] = { 7 };
	struct mc_tensor *t = mc_tensor_new("fc.weight", MC_F32, 2, shape, &err), *d, *q4;
	char buf[64];

	ck_assert_ptr_nonnull(t);
	ck_assert_str_eq(t->name, "fc.weight");
	ck_assert_int_eq(t->numel, 15);
	ck_assert_uint_eq(mc_tensor_nbytes(t), 60);
	ck_assert_uint_eq((uintptr_t)t->data % 64, 0);
	for (int i = 0; i < 15; i++)
		ck_assert(((float *)t->data)[i] == 0.0f);
	((float *)t->data)[7] = 2.5f;
	d = mc_tensor_dup(t, &err);
	ck_assert_ptr_nonnull(d);
	ck_assert_ptr_ne(d->data, t->data);
	ck_assert(((float *)d->data)[7] == 2.5f);
	ck_assert_str_eq(mc_shape_text(t->ndim, t->shape, buf, sizeof(buf)), "[3, 5]");
	ck_assert_str_eq(mc_shape_text(0, NULL, buf, sizeof(buf)), "[]");
	q4 = mc_tensor_new(NULL, MC_Q4, 1, q, &err);
	ck_assert_uint_eq(mc_tensor_nbytes(q4), 4); /* ceil(7 * 4 / 8) */
	mc_tensor_free(q4);
	mc_tensor_free(d);
	mc_tensor_free(t);
	mc_tensor_free(NULL);
}
END_TEST

START_TEST(tensor_bad_shapes)
{
	struct mc_err err = { 0 };
	int64_t neg[2] = { 4, -1 }, huge[3] = { INT64_MAX / 2, 4, 4 };
	int64_t big[2] = { (int64_t)1 << 40, (int64_t)1 << 30 }, nine[9] = { 1, 1, 1, 1, 1, 1, 1, 1, 1 };

	ck_assert_ptr_null(mc_tensor_new("w", MC_F32, 2, neg, &err));
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "w: bad shape [4, -1]"));
	err.code = 0;
	ck_assert_ptr_null(mc_tensor_new("w", MC_F32, 3, huge, &err));
	ck_assert_int_eq(err.code, MC_EINVAL);
	err.code = 0;
	/* numel fits, bytes (numel * 32 bits) overflow or exhaust memory */
	ck_assert_ptr_null(mc_tensor_new("w", MC_F32, 2, big, &err));
	ck_assert(err.code == MC_EINVAL || err.code == MC_ENOMEM);
	err.code = 0;
	ck_assert_ptr_null(mc_tensor_new("w", MC_F32, 9, nine, &err));
	ck_assert_int_eq(err.code, MC_EINVAL);
	err.code = 0;
	ck_assert_ptr_null(mc_tensor_new("w", MC_F32, -1, nine, &err));
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_ptr_null(mc_tensor_new("w", MC_DTYPE_COUNT, 1, nine, &err));
	ck_assert_ptr_null(mc_tensor_new("w", MC_F32, 1, &neg[1], NULL)); /* err may be NULL */
}
END_TEST

START_TEST(philox_known_answers)
{
	/* Random123's kat_vectors for philox4x32_10. */
	uint32_t w[4];

	mc_philox(0, 0, 0, w);
	ck_assert_uint_eq(w[0], 0x6627e8d5);
	ck_assert_uint_eq(w[1], 0xe169c58d);
	ck_assert_uint_eq(w[2], 0xbc57ac4c);
	ck_assert_uint_eq(w[3], 0x9b00dbd8);
	/* counter = all ones, key = all ones */
	mc_philox(UINT64_MAX, UINT64_MAX, UINT64_MAX, w);
	ck_assert_uint_eq(w[0], 0x408f276d);
	ck_assert_uint_eq(w[1], 0x41c83b0e);
	ck_assert_uint_eq(w[2], 0xa20bc7c6);
	ck_assert_uint_eq(w[3], 0x6d5451fd);
	/* counter = pi digits 243f6a88 85a308d3 13198a2e 03707344, key = a4093822 299f31d0 */
	mc_philox(0x299f31d0a4093822ull, 0x0370734413198a2eull, 0x85a308d3243f6a88ull, w);
	ck_assert_uint_eq(w[0], 0xd16cfe09);
	ck_assert_uint_eq(w[1], 0x94fdcceb);
	ck_assert_uint_eq(w[2], 0x5001e420);
	ck_assert_uint_eq(w[3], 0x24126ea1);
}
END_TEST

START_TEST(uniform_and_normal)
{
	double sum = 0, sq = 0, nsum = 0, nsq = 0;
	const int n = 100000;
	uint32_t w[4];

	for (int i = 0; i < n; i++) {
		float u = mc_rand_uniform(42, 3, (uint64_t)i), z = mc_rand_normal(42, 3, (uint64_t)i);

		ck_assert(u >= 0.0f && u < 1.0f);
		ck_assert(isfinite(z));
		sum += u;
		sq += (double)u * u;
		nsum += z;
		nsq += (double)z * z;
	}
	ck_assert_double_eq_tol(sum / n, 0.5, 0.01);
	ck_assert_double_eq_tol(sq / n - (sum / n) * (sum / n), 1.0 / 12, 0.005);
	ck_assert_double_eq_tol(nsum / n, 0.0, 0.02);
	ck_assert_double_eq_tol(nsq / n, 1.0, 0.03);
	/* value i is word i % 4 of block i / 4 */
	mc_philox(9, 1, 2, w);
	ck_assert(mc_rand_uniform(9, 1, 2 * 4 + 3) == (float)(w[3] >> 8) / 16777216.0f);
	/* streams and seeds differ */
	ck_assert(mc_rand_uniform(1, 0, 0) != mc_rand_uniform(1, 1, 0));
	ck_assert(mc_rand_uniform(1, 0, 0) != mc_rand_uniform(2, 0, 0));
}
END_TEST

START_TEST(permutation)
{
	const int64_t n = 1000;
	int64_t *p = malloc(n * sizeof(*p)), *q = malloc(n * sizeof(*q));
	char *seen = calloc(n, 1);
	int moved = 0;

	mc_rand_permutation(5, 1, n, p);
	for (int64_t i = 0; i < n; i++) {
		ck_assert(p[i] >= 0 && p[i] < n);
		ck_assert(!seen[p[i]]);
		seen[p[i]] = 1;
		moved += p[i] != i;
	}
	ck_assert_int_gt(moved, n / 2);
	mc_rand_permutation(5, 1, n, q);
	ck_assert_mem_eq(p, q, n * sizeof(*p));
	mc_rand_permutation(5, 2, n, q);
	ck_assert(memcmp(p, q, n * sizeof(*p)) != 0);
	mc_rand_permutation(5, 1, 1, q);
	ck_assert_int_eq(q[0], 0);
	mc_rand_permutation(5, 1, 0, q); /* nothing to do, nothing written */
	free(seen);
	free(q);
	free(p);
}
END_TEST

static float *random_matrix(size_t n, uint64_t stream)
{
	float *x = malloc((n ? n : 1) * sizeof(float));

	for (size_t i = 0; i < n; i++)
		x[i] = 2.0f * mc_rand_uniform(77, stream, i) - 1.0f;
	return x;
}

/* mc_sgemm against mc_sgemm_ref for one shape, C with a row stride wider than N. */
static void check_gemm(int ta, int tb, int M, int N, int K, float alpha, float beta, int nan_c)
{
	int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
	size_t arows = ta ? K : M, brows = tb ? N : K;
	float *A = random_matrix(arows * lda, 1), *B = random_matrix(brows * ldb, 2);
	float *C = random_matrix((size_t)M * ldc, 3), *R = malloc((size_t)M * ldc * sizeof(float) + 4);

	if (nan_c)
		for (size_t i = 0; i < (size_t)M * ldc; i++)
			C[i] = NAN;
	memcpy(R, C, (size_t)M * ldc * sizeof(float));
	mc_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
	mc_sgemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
	for (int i = 0; i < M; i++) {
		for (int j = 0; j < N; j++) {
			float c = C[(size_t)i * ldc + j], r = R[(size_t)i * ldc + j];

			ck_assert_msg(fabsf(c - r) <= 1e-5f * (float)K + 1e-6f,
				      "ta=%d tb=%d %dx%dx%d alpha=%g beta=%g: C[%d][%d] = %g, ref %g",
				      ta, tb, M, N, K, alpha, beta, i, j, c, r);
		}
		/* the padding between rows is left alone */
		for (int j = N; j < ldc; j++) {
			float c = C[(size_t)i * ldc + j], r = R[(size_t)i * ldc + j];

			ck_assert(memcmp(&c, &r, sizeof(c)) == 0);
		}
	}
	free(R);
	free(C);
	free(B);
	free(A);
}

START_TEST(gemm_vs_ref)
{
	static const int sizes[] = { 1, 7, 33, 257, 13, 64 };
	const int ns = sizeof(sizes) / sizeof(sizes[0]);

	for (int t = 0; t < 4; t++)
		for (int s = 0; s < ns; s++) {
			int M = sizes[s], N = sizes[(s + 1) % ns], K = sizes[(s + 2) % ns];

			check_gemm(t & 1, t >> 1, M, N, K, 1.0f, 0.0f, 0);
			check_gemm(t & 1, t >> 1, N, K, M, 0.5f, -1.5f, 0);
		}
	/* deeper than one packed slice of K, and wider than one tile */
	check_gemm(0, 1, 130, 300, 700, 1.0f, 1.0f, 0);
	check_gemm(1, 0, 300, 130, 600, -2.0f, 0.25f, 0);
	/* more of K than is packed at once */
	check_gemm(1, 1, 20, 45, 2100, 1.0f, 0.5f, 0);
}
END_TEST

START_TEST(gemm_beta_zero_ignores_nan)
{
	for (int t = 0; t < 4; t++) {
		check_gemm(t & 1, t >> 1, 19, 37, 300, 1.0f, 0.0f, 1);
		check_gemm(t & 1, t >> 1, 5, 3, 2, 2.0f, 0.0f, 1);
	}
}
END_TEST

START_TEST(gemm_degenerate)
{
	float a[4] = { 1, 2, 3, 4 }, c[4] = { 1, 1, NAN, 1 };

	/* K = 0: C = beta * C; beta = 0 clears NaN */
	mc_sgemm(0, 0, 2, 2, 0, 1.0f, a, 1, a, 2, 0.0f, c, 2);
	for (int i = 0; i < 4; i++)
		ck_assert(c[i] == 0.0f);
	c[0] = 3;
	mc_sgemm(0, 0, 2, 2, 0, 1.0f, a, 1, a, 2, 2.0f, c, 2);
	ck_assert(c[0] == 6.0f);
	/* alpha = 0 leaves A and B unread */
	mc_sgemm(0, 0, 2, 2, 2, 0.0f, NULL, 2, NULL, 2, 1.0f, c, 2);
	ck_assert(c[0] == 6.0f);
	mc_sgemm(0, 0, 0, 2, 2, 1.0f, NULL, 2, NULL, 2, 1.0f, NULL, 2);
	ck_assert_ptr_nonnull(mc_sgemm_kernel());
}
END_TEST

START_TEST(gemm_thread_count_invariant)
{
	const int M = 97, N = 301, K = 555;
	float *A = random_matrix((size_t)M * K, 4), *B = random_matrix((size_t)K * N, 5);
	float *C1 = calloc((size_t)M * N, sizeof(float)), *C3 = calloc((size_t)M * N, sizeof(float));
	int saved = omp_get_max_threads();

	omp_set_num_threads(1);
	mc_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C1, N);
	omp_set_num_threads(3);
	mc_sgemm(0, 1, M, N, K, 1.0f, A, K, B, K, 0.0f, C3, N);
	omp_set_num_threads(saved);
	ck_assert_mem_eq(C1, C3, (size_t)M * N * sizeof(float));
	free(C3);
	free(C1);
	free(B);
	free(A);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("tensor");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, dtype_table);
	tcase_add_test(tc, tensor_alloc);
	tcase_add_test(tc, tensor_bad_shapes);
	tcase_add_test(tc, philox_known_answers);
	tcase_add_test(tc, uniform_and_normal);
	tcase_add_test(tc, permutation);
	tcase_add_test(tc, gemm_vs_ref);
	tcase_add_test(tc, gemm_beta_zero_ignores_nan);
	tcase_add_test(tc, gemm_degenerate);
	tcase_add_test(tc, gemm_thread_count_invariant);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
