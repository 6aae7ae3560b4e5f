/* SPDX-License-Identifier: MIT */
/*
 * bench_gemm - square GEMM throughput of mcomp against OpenBLAS.
 *
 *	bench_gemm [-l mcomp|openblas|s8|s7] [-t THREADS] [-m MIN_SECONDS] SIZE...
 *
 * For each size it times C = A B (row-major, alpha 1, beta 0) call by call
 * after two warm-up calls, until at least MIN_SECONDS have passed (and at
 * least five calls), and prints the median as
 *
 *	RESULT gemm<SIZE> <GFLOP/s>
 *
 * (a multiply-add counts as two operations). -l s8 times mcomp's int8 GEMM
 * instead, mc_gemm_u8s8 with per-channel requantization to f32 (the kernel the
 * quantize pass uses; weights packed once, outside the timing), in GOP/s;
 * -l s7 the same with 7-bit weights in [-64, 64] (the quantize pass's
 * reduce_range), which the AVX2 kernel without VNNI multiplies with
 * vpmaddubsw.
 * OpenBLAS is loaded at run time with dlopen("libopenblas.so.0"), so the
 * benchmark needs no OpenBLAS at build time; OpenBLAS reads
 * OPENBLAS_CORETYPE when it is loaded, so each kernel choice needs a process
 * of its own (bench/run.sh runs one per setting). Every result is checked at
 * 32 sampled elements against a double-precision dot product, so a broken
 * kernel cannot post a figure.
 */
#include <dlfcn.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mcomp/mcomp.h>

enum impl { IMPL_MCOMP, IMPL_OPENBLAS, IMPL_S8, IMPL_S7 };

/* The CBLAS enums' values, fixed by the reference CBLAS header. */
#define CBLAS_ROW_MAJOR 101
#define CBLAS_NO_TRANS 111

typedef void (*cblas_sgemm_fn)(int order, int ta, int tb, int m, int n, int k, float alpha,
			       const float *a, int lda, const float *b, int ldb, float beta,
			       float *c, int ldc);
typedef void (*set_threads_fn)(int n);
typedef char *(*corename_fn)(void);

struct blas {
	void *handle;
	cblas_sgemm_fn sgemm;
	set_threads_fn set_threads;
	corename_fn corename;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static int blas_open(struct blas *b, int threads)
{
	b->handle = dlopen("libopenblas.so.0", RTLD_NOW | RTLD_LOCAL);
	if (!b->handle) {
		fprintf(stderr,
			"bench_gemm: cannot load libopenblas.so.0 (%s); install libopenblas0 to "
			"compare against OpenBLAS\n",
			dlerror());
		return -1;
	}
	*(void **)&b->sgemm = dlsym(b->handle, "cblas_sgemm");
	*(void **)&b->set_threads = dlsym(b->handle, "openblas_set_num_threads");
	*(void **)&b->corename = dlsym(b->handle, "openblas_get_corename");
	if (!b->sgemm || !b->set_threads) {
		fprintf(stderr,
			"bench_gemm: libopenblas.so.0 lacks cblas_sgemm or openblas_set_num_threads; "
			"install Debian's libopenblas0\n");
		dlclose(b->handle);
		return -1;
	}
	b->set_threads(threads);
	return 0;
}

static void fill(float *p, size_t n, uint64_t stream)
{
	for (size_t i = 0; i < n; i++)
		p[i] = mc_rand_uniform(7, stream, i) * 2.0f - 1.0f;
}

/* Compares 32 sampled elements of C with a dot product in double. */
static int check(const float *A, const float *B, const float *C, int n)
{
	for (int s = 0; s < 32; s++) {
		int i = (int)(mc_rand_uniform(11, 0, (uint64_t)s) * (float)n) % n;
		int j = (int)(mc_rand_uniform(11, 1, (uint64_t)s) * (float)n) % n;
		double ref = 0, mag = 0;

		for (int k = 0; k < n; k++) {
			double t = (double)A[(size_t)i * n + k] * (double)B[(size_t)k * n + j];

			ref += t;
			mag += fabs(t);
		}
		if (fabs((double)C[(size_t)i * n + j] - ref) > 1e-4 * mag + 1e-6) {
			fprintf(stderr, "bench_gemm: C[%d][%d] = %g, expected %g: wrong result\n", i,
				j, (double)C[(size_t)i * n + j], ref);
			return -1;
		}
	}
	return 0;
}

/* The int8 operands of size n: u8 activations, s8 weights packed once. */
struct s8 {
	uint8_t *a;
	int8_t *w;
	float *sw, *bias, *y;
	struct mc_s8_weights *p;
};

static void s8_free(struct s8 *q)
{
	mc_s8_free(q->p);
	mc_free(q->y);
	mc_free(q->bias);
	mc_free(q->sw);
	mc_free(q->w);
	mc_free(q->a);
}

/* 7-bit: weights in [-64, 64] (129 values), else full range [-127, 127]. */
static int s8_new(struct s8 *q, int n, int s7)
{
	size_t nn = (size_t)n * (size_t)n;
	struct mc_err err;

	q->a = mc_calloc(nn, 1);
	q->w = mc_calloc(nn, 1);
	q->sw = mc_calloc((size_t)n, sizeof(float));
	q->bias = mc_calloc((size_t)n, sizeof(float));
	q->y = mc_calloc(nn, sizeof(float));
	if (!q->a || !q->w || !q->sw || !q->bias || !q->y) {
		fprintf(stderr, "bench_gemm: out of memory at size %d\n", n);
		return -1;
	}
	for (size_t i = 0; i < nn; i++) {
		q->a[i] = (uint8_t)(mc_rand_uniform(5, 0, i) * 256.0f);
		q->w[i] = s7 ? (int8_t)((int)(mc_rand_uniform(5, 1, i) * 129.0f) - 64)
			     : (int8_t)((int)(mc_rand_uniform(5, 1, i) * 255.0f) - 127);
	}
	for (int i = 0; i < n; i++) {
		q->sw[i] = 0.001f + 0.01f * mc_rand_uniform(5, 2, (uint64_t)i);
		q->bias[i] = mc_rand_uniform(5, 3, (uint64_t)i) - 0.5f;
	}
	q->p = mc_s8_pack(q->w, n, n, n, q->sw, q->bias, &err);
	if (!q->p) {
		fprintf(stderr, "bench_gemm: %s\n", err.msg);
		return -1;
	}
	return 0;
}

#define S8_SA 0.02f
#define S8_ZA 128

/* Compares 32 sampled outputs with exact integer sums requantized in double. */
static int s8_check(const struct s8 *q, int n)
{
	for (int s = 0; s < 32; s++) {
		int i = (int)(mc_rand_uniform(11, 0, (uint64_t)s) * (float)n) % n;
		int j = (int)(mc_rand_uniform(11, 1, (uint64_t)s) * (float)n) % n;
		int64_t acc = 0;
		double ref, got = q->y[(size_t)i * n + j];

		for (int k = 0; k < n; k++)
			acc += ((int64_t)q->a[(size_t)i * n + k] - S8_ZA) * q->w[(size_t)j * n + k];
		ref = (double)S8_SA * q->sw[j] * (double)acc + q->bias[j];
		if (fabs(got - ref) > 1e-5 * fabs(ref) + 1e-3) {
			fprintf(stderr, "bench_gemm: int8 y[%d][%d] = %g, expected %g: wrong result\n",
				i, j, got, ref);
			return -1;
		}
	}
	return 0;
}

static void run_once(enum impl impl, const struct blas *b, const struct s8 *q, int n,
		     const float *A, const float *B, float *C)
{
	if (impl == IMPL_S8 || impl == IMPL_S7)
		mc_gemm_u8s8(n, q->a, n, S8_SA, S8_ZA, q->p, 0, q->y, n);
	else if (impl == IMPL_OPENBLAS)
		b->sgemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_NO_TRANS, n, n, n, 1.0f, A, n, B, n,
			 0.0f, C, n);
	else
		mc_sgemm(0, 0, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
}

/* Median GFLOP/s (GOP/s) of single calls at size n, or a negative value on failure. */
static double bench_size(enum impl impl, const struct blas *b, int n, double min_time)
{
	int s8 = impl == IMPL_S8 || impl == IMPL_S7;
	size_t nn = s8 ? 1 : (size_t)n * (size_t)n;
	float *A = mc_calloc(nn, sizeof(float)), *B = mc_calloc(nn, sizeof(float));
	float *C = mc_calloc(nn, sizeof(float));
	double *t = NULL, flops = 2.0 * (double)n * (double)n * (double)n, res = -1, t0;
	struct s8 q = {0};
	int cap = 10000, k = 0;

	t = malloc((size_t)cap * sizeof(*t));
	if (!A || !B || !C || !t) {
		fprintf(stderr, "bench_gemm: out of memory at size %d\n", n);
		goto out;
	}
	if (s8) {
		if (s8_new(&q, n, impl == IMPL_S7))
			goto out;
	} else {
		fill(A, nn, 1);
		fill(B, nn, 2);
	}
	run_once(impl, b, &q, n, A, B, C);
	if (s8 ? s8_check(&q, n) : check(A, B, C, n))
		goto out;
	run_once(impl, b, &q, n, A, B, C);
	t0 = now();
	while (k < cap && (k < 5 || now() - t0 < min_time)) {
		double s = now();

		run_once(impl, b, &q, n, A, B, C);
		t[k++] = now() - s;
	}
	res = flops / median(t, k) * 1e-9;
out:
	s8_free(&q);
	free(t);
	mc_free(C);
	mc_free(B);
	mc_free(A);
	return res;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_gemm [-l mcomp|openblas|s8|s7] [-t THREADS] [-m MIN_SECONDS] "
			"SIZE...\n");
}

int main(int argc, char **argv)
{
	enum impl impl = IMPL_MCOMP;
	struct blas b = {0};
	double min_time = 0.3;
	int threads = omp_get_max_threads(), i, status = 0;

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v) {
			usage();
			return 2;
		}
		if (!strcmp(argv[i], "-l")) {
			if (!strcmp(v, "mcomp"))
				impl = IMPL_MCOMP;
			else if (!strcmp(v, "openblas"))
				impl = IMPL_OPENBLAS;
			else if (!strcmp(v, "s8"))
				impl = IMPL_S8;
			else if (!strcmp(v, "s7"))
				impl = IMPL_S7;
			else {
				usage();
				return 2;
			}
		} else if (!strcmp(argv[i], "-t")) {
			threads = atoi(v);
		} else if (!strcmp(argv[i], "-m")) {
			min_time = atof(v);
		} else {
			usage();
			return 2;
		}
		i++;
	}
	if (i == argc || threads < 1 || !(min_time >= 0)) {
		usage();
		return 2;
	}
	omp_set_num_threads(threads);
	if (impl == IMPL_OPENBLAS) {
		if (blas_open(&b, threads))
			return 3;
		printf("INFO openblas core %s, %d threads\n", b.corename ? b.corename() : "?",
		       threads);
	} else if (impl == IMPL_S8 || impl == IMPL_S7) {
		printf("INFO mcomp int8 kernel %s%s, %d threads\n", mc_gemm_s8_kernel(),
		       impl == IMPL_S7 ? " (7-bit weights)" : "", threads);
	} else {
		printf("INFO mcomp kernel %s, %d threads\n", mc_sgemm_kernel(), threads);
	}
	fflush(stdout);
	for (; i < argc; i++) {
		char *end;
		long n = strtol(argv[i], &end, 10);
		double g;

		if (*end || n < 1 || n > 16384) {
			fprintf(stderr, "bench_gemm: size '%s': use 1 to 16384\n", argv[i]);
			status = 2;
			break;
		}
		g = bench_size(impl, &b, (int)n, min_time);
		if (g < 0) {
			status = 1;
			break;
		}
		printf("RESULT gemm%ld %.2f\n", n, g);
		fflush(stdout);
	}
	if (b.handle)
		dlclose(b.handle);
	return status;
}
