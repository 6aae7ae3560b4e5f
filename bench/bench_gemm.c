/* SPDX-License-Identifier: MIT */
/*
 * bench_gemm - square GEMM throughput of mcomp against OpenBLAS.
 *
 *	bench_gemm [-l mcomp|openblas|s8] [-t THREADS] [-m MIN_SECONDS] SIZE...
 *
 * For each size it times C = A B (row-major, alpha 1, beta 0) call by call
 * after two warm-up calls, until at least MIN_SECONDS have passed (and at
 * least five calls), and prints the median as
 *
 *	RESULT gemm<SIZE> <GFLOP/s>
 *
 * (a multiply-add counts as two operations; for s8 the figure is GOP/s).
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

enum impl { IMPL_MCOMP, IMPL_OPENBLAS, IMPL_S8 };

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

/*
 * The s8 peer of our f32 GEMM. Filled in once the int8 kernel is part of
 * the public API; until then the figure is reported as not available.
 */
static int s8_available(void)
{
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

static void run_once(enum impl impl, const struct blas *b, int n, const float *A, const float *B,
		     float *C)
{
	if (impl == IMPL_OPENBLAS)
		b->sgemm(CBLAS_ROW_MAJOR, CBLAS_NO_TRANS, CBLAS_NO_TRANS, n, n, n, 1.0f, A, n, B, n,
			 0.0f, C, n);
	else
		mc_sgemm(0, 0, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n);
}

/* Median GFLOP/s of single calls at size n, or a negative value on failure. */
static double bench_size(enum impl impl, const struct blas *b, int n, double min_time)
{
	size_t nn = (size_t)n * (size_t)n;
	float *A = mc_calloc(nn, sizeof(float)), *B = mc_calloc(nn, sizeof(float));
	float *C = mc_calloc(nn, sizeof(float));
	double *t = NULL, flops = 2.0 * (double)n * (double)n * (double)n, res = -1, t0;
	int cap = 10000, k = 0;

	t = malloc((size_t)cap * sizeof(*t));
	if (!A || !B || !C || !t) {
		fprintf(stderr, "bench_gemm: out of memory at size %d\n", n);
		goto out;
	}
	fill(A, nn, 1);
	fill(B, nn, 2);
	run_once(impl, b, n, A, B, C);
	if (check(A, B, C, n))
		goto out;
	run_once(impl, b, n, A, B, C);
	t0 = now();
	while (k < cap && (k < 5 || now() - t0 < min_time)) {
		double s = now();

		run_once(impl, b, n, A, B, C);
		t[k++] = now() - s;
	}
	res = flops / median(t, k) * 1e-9;
out:
	free(t);
	mc_free(C);
	mc_free(B);
	mc_free(A);
	return res;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_gemm [-l mcomp|openblas|s8] [-t THREADS] [-m MIN_SECONDS] "
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
	} else if (impl == IMPL_S8) {
		if (!s8_available()) {
			fprintf(stderr, "bench_gemm: no int8 GEMM in this libmcomp yet\n");
			return 3;
		}
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
