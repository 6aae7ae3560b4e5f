/* SPDX-License-Identifier: MIT */
/*
 * bench_sparse.c - inference latency of the quickstart MLP (784-512-256-10)
 * at 0%, 80%, 90% and 95% unstructured sparsity (each layer's smallest |w|
 * set to zero, on random-init weights), batch 1 and 256, on the dense GEMM
 * (MCOMP_SPARSE=0) and on the CSR kernel (MCOMP_SPARSE=1), plus what the
 * default rule picks (MCOMP_SPARSE=auto). Each figure is the median of
 * many timed forwards after warm-up; prints a table and, per figure,
 *
 *	RESULT sparse_s90_b256_dense_ms 1.234
 *	RESULT sparse_s90_b256_sparse_ms 0.567
 *	RESULT sparse_s90_b256_auto_ms 0.570
 *	RESULT sparse_s90_b256_speedup 2.18
 *
 * Usage: bench_sparse [seconds-per-figure] (default 0.3).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mcomp/graph.h>
#include <mcomp/model.h>
#include <mcomp/op.h>

static const char arch[] =
    "{\"format\":1,\"input\":[1,28,28],\"nodes\":["
    "{\"name\":\"flatten1\",\"op\":\"flatten\",\"inputs\":[\"input\"],\"attrs\":{}},"
    "{\"name\":\"linear1\",\"op\":\"linear\",\"inputs\":[\"flatten1\"],\"attrs\":{\"out\":512}},"
    "{\"name\":\"relu1\",\"op\":\"relu\",\"inputs\":[\"linear1\"],\"attrs\":{}},"
    "{\"name\":\"linear2\",\"op\":\"linear\",\"inputs\":[\"relu1\"],\"attrs\":{\"out\":256}},"
    "{\"name\":\"relu2\",\"op\":\"relu\",\"inputs\":[\"linear2\"],\"attrs\":{}},"
    "{\"name\":\"linear3\",\"op\":\"linear\",\"inputs\":[\"relu2\"],\"attrs\":{\"out\":10}}]}";

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int cmp_abs(const void *a, const void *b)
{
	float x = fabsf(*(const float *)a), y = fabsf(*(const float *)b);

	return (x > y) - (x < y);
}

/* Zeroes the round(s * numel) smallest |w| of every linear weight. */
static void prune(struct mc_model *m, double s)
{
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);
		struct mc_tensor *t = mc_node_param(nd, 0);
		float *w, *sorted, thr;
		int64_t k;

		if (strcmp(nd->op->name, "linear"))
			continue;
		w = t->data;
		k = (int64_t)llround(s * (double)t->numel);
		if (k == 0)
			continue;
		sorted = malloc((size_t)t->numel * sizeof(float));
		memcpy(sorted, w, (size_t)t->numel * sizeof(float));
		qsort(sorted, (size_t)t->numel, sizeof(float), cmp_abs);
		thr = fabsf(sorted[k - 1]);
		for (int64_t j = 0, z = 0; j < t->numel && z < k; j++)
			if (fabsf(w[j]) <= thr) {
				w[j] = 0.0f;
				z++;
			}
		free(sorted);
	}
}

/* Median milliseconds of one forward of n samples with MCOMP_SPARSE=mode. */
static double time_forward(struct mc_model *m, const float *x, int n, const char *mode,
			   double budget)
{
	struct mc_err err = { 0 };
	struct mc_exec *e = mc_exec_new(m, n, 0, &err);
	double t[2000], start;
	int k = 0;

	if (!e) {
		fprintf(stderr, "bench_sparse: %s\n", err.msg);
		exit(1);
	}
	setenv("MCOMP_SPARSE", mode, 1);
	for (int i = 0; i < 5; i++)
		mc_forward(e, x, n);
	start = now();
	while (k < 2000 && (k < 20 || now() - start < budget)) {
		double t0 = now();

		mc_forward(e, x, n);
		t[k++] = (now() - t0) * 1e3;
	}
	mc_exec_free(e);
	qsort(t, (size_t)k, sizeof(double), cmp_double);
	return k % 2 ? t[k / 2] : 0.5 * (t[k / 2 - 1] + t[k / 2]);
}

int main(int argc, char **argv)
{
	static const int pct[] = { 0, 80, 90, 95 }, batch[] = { 1, 256 };
	double budget = argc > 1 ? atof(argv[1]) : 0.3;
	struct mc_err err = { 0 };
	float *x = malloc(256 * 784 * sizeof(float));
	uint64_t r = 88172645463325252ull;

	if (!x || budget <= 0) {
		fprintf(stderr, "usage: bench_sparse [seconds-per-figure > 0]\n");
		return 1;
	}
	for (int i = 0; i < 256 * 784; i++) {
		r ^= r << 13, r ^= r >> 7, r ^= r << 17;
		x[i] = (float)(r >> 40) / (float)(1 << 24);
	}
	printf("MLP 784-512-256-10, unstructured per-layer magnitude, median ms per forward\n");
	printf("%8s %6s %10s %10s %10s %8s\n", "sparsity", "batch", "dense", "sparse", "auto",
	       "speedup");
	for (size_t s = 0; s < sizeof(pct) / sizeof(pct[0]); s++) {
		struct mc_model *m = mc_model_from_arch(arch, "bench_sparse", &err);

		if (!m) {
			fprintf(stderr, "bench_sparse: %s\n", err.msg);
			return 1;
		}
		mc_model_init(m, 1);
		prune(m, pct[s] / 100.0);
		for (size_t b = 0; b < sizeof(batch) / sizeof(batch[0]); b++) {
			int n = batch[b];
			double d = time_forward(m, x, n, "0", budget);
			double sp = time_forward(m, x, n, "1", budget);
			double a = time_forward(m, x, n, "auto", budget);

			printf("%7d%% %6d %10.4f %10.4f %10.4f %7.2fx\n", pct[s], n, d, sp, a, d / sp);
			printf("RESULT sparse_s%d_b%d_dense_ms %.4f\n", pct[s], n, d);
			printf("RESULT sparse_s%d_b%d_sparse_ms %.4f\n", pct[s], n, sp);
			printf("RESULT sparse_s%d_b%d_auto_ms %.4f\n", pct[s], n, a);
			printf("RESULT sparse_s%d_b%d_speedup %.3f\n", pct[s], n, d / sp);
		}
		mc_model_free(m);
	}
	free(x);
	return 0;
}
