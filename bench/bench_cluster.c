/* SPDX-License-Identifier: MIT */
/*
 * bench_cluster.c - how a clustered model file should run: decoded once at
 * load to f32 (what mc_model_load does; inference then takes the f32 GEMM,
 * or the CSR kernel for sparse layers) against a lookup kernel that keeps
 * each layer as its codebook and, per output row, the (column, code) pairs
 * of its nonzeros, and looks every weight up as it multiplies.
 *
 * Takes a model file of flatten / linear / relu nodes whose linear weights
 * are clustered (the cluster pass's output, e.g. pipelines/deep-compression
 * .yaml's), times the load (median), then forwards of batch 1 and 256 both
 * ways (median ms), checks that both give the same logits (within 1e-4
 * relative), and prints a table and RESULT lines:
 *
 *	RESULT cluster_load_ms 0.80
 *	RESULT cluster_b256_f32_ms 0.41
 *	RESULT cluster_b256_lookup_ms 0.95
 *	RESULT cluster_weight_bytes_f32 1064800
 *	RESULT cluster_weight_bytes_lookup 52000
 *
 * Usage: bench_cluster FILE [seconds-per-figure] (default 0.3).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mcomp/graph.h>
#include <mcomp/model.h>
#include <mcomp/op.h>

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

/* One linear layer for the lookup kernel: codebook, and per row the
 * columns (u16) and codes (u8) of its nonzeros. */
struct lk_layer {
	int in, out, relu;
	float book[256];
	int nbook;
	int64_t *rowptr;
	uint16_t *col;
	uint8_t *code;
	const float *bias;
};

static int code_of(struct lk_layer *l, float v)
{
	for (int j = 0; j < l->nbook; j++)
		if (l->book[j] == v)
			return j;
	if (l->nbook == 256)
		return -1;
	l->book[l->nbook] = v;
	return l->nbook++;
}

static int build(const struct mc_model *m, struct lk_layer *ls, int *n, int64_t *bytes)
{
	*n = 0;
	*bytes = 0;
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);
		struct lk_layer *l = &ls[*n];
		const float *w;
		int64_t nnz = 0;

		if (!strcmp(nd->op->name, "relu") && *n) {
			ls[*n - 1].relu = 1;
			continue;
		}
		if (!strcmp(nd->op->name, "flatten"))
			continue;
		if (strcmp(nd->op->name, "linear") || nd->n_params != 2)
			return fprintf(stderr, "bench_cluster: node '%s' (%s): only flatten, linear "
					       "(with bias) and relu are benchmarked\n",
				       nd->name, nd->op->name), -1;
		memset(l, 0, sizeof(*l));
		l->out = (int)nd->params[0]->shape[0];
		l->in = (int)nd->params[0]->shape[1];
		l->bias = nd->params[1]->data;
		w = nd->params[0]->data;
		for (int64_t k = 0; k < nd->params[0]->numel; k++)
			nnz += w[k] != 0.0f;
		l->rowptr = calloc((size_t)l->out + 1, sizeof(int64_t));
		l->col = malloc((size_t)nnz * 2 + 1);
		l->code = malloc((size_t)nnz + 1);
		nnz = 0;
		for (int o = 0; o < l->out; o++) {
			for (int c = 0; c < l->in; c++) {
				float v = w[(int64_t)o * l->in + c];
				int code;

				if (v == 0.0f)
					continue;
				code = code_of(l, v);
				if (code < 0)
					return fprintf(stderr, "bench_cluster: layer '%s' has more "
							       "than 256 values: not clustered\n",
						       nd->name), -1;
				l->col[nnz] = (uint16_t)c;
				l->code[nnz++] = (uint8_t)code;
			}
			l->rowptr[o + 1] = nnz;
		}
		*bytes += 4 * l->nbook + 3 * nnz + 8 * (l->out + 1);
		(*n)++;
	}
	return 0;
}

/* Activations feature-major ([features, B]) so that the inner loop runs
 * over the batch; threads own output rows. */
static void lookup_forward(const struct lk_layer *ls, int n, const float *x, int B, float *a,
			   float *b, float *y)
{
	for (int s = 0; s < B; s++)
		for (int c = 0; c < ls[0].in; c++)
			a[(int64_t)c * B + s] = x[(int64_t)s * ls[0].in + c];
	for (int i = 0; i < n; i++) {
		const struct lk_layer *l = &ls[i];

#pragma omp parallel for schedule(static)
		for (int o = 0; o < l->out; o++) {
			float *restrict r = b + (int64_t)o * B;

			for (int s = 0; s < B; s++)
				r[s] = l->bias[o];
			for (int64_t k = l->rowptr[o]; k < l->rowptr[o + 1]; k++) {
				const float w = l->book[l->code[k]];
				const float *restrict xc = a + (int64_t)l->col[k] * B;

#pragma omp simd
				for (int s = 0; s < B; s++)
					r[s] += w * xc[s];
			}
			if (l->relu)
				for (int s = 0; s < B; s++)
					r[s] = r[s] > 0 ? r[s] : 0;
		}
		float *t = a;
		a = b;
		b = t;
	}
	for (int s = 0; s < B; s++)
		for (int o = 0; o < ls[n - 1].out; o++)
			y[(int64_t)s * ls[n - 1].out + o] = a[(int64_t)o * B + s];
}

#define MAX_RUNS 100000

static double median_of(double *t, int n)
{
	qsort(t, (size_t)n, sizeof(*t), cmp_double);
	return t[n / 2];
}

int main(int argc, char **argv)
{
	static double t[MAX_RUNS];
	struct lk_layer ls[64];
	struct mc_err err = {0};
	struct mc_model *m;
	double secs = argc > 2 ? atof(argv[2]) : 0.3, t0, load_ms;
	int n = 0, runs = 0, widest = 0;
	int64_t lk_bytes, f32_bytes = 0;

	if (argc < 2)
		return fprintf(stderr, "usage: bench_cluster FILE [seconds]\n"), 2;
	t0 = now();
	do {
		double a = now();

		m = mc_model_load(argv[1], &err);
		if (!m)
			return fprintf(stderr, "bench_cluster: %s\n", err.msg), 1;
		t[runs++] = 1e3 * (now() - a);
		mc_model_free(m);
	} while (now() - t0 < secs && runs < MAX_RUNS);
	load_ms = median_of(t, runs);
	m = mc_model_load(argv[1], &err);
	if (!m || build(m, ls, &n, &lk_bytes) || !n)
		return fprintf(stderr, "bench_cluster: %s\n", m ? "no layers" : err.msg), 1;
	for (int i = 0; i < n; i++) {
		f32_bytes += 4 * ((int64_t)ls[i].in * ls[i].out);
		widest = ls[i].out > widest ? ls[i].out : widest;
		widest = ls[i].in > widest ? ls[i].in : widest;
	}
	printf("%s: load (decode to f32) %.3f ms; weights f32 %lld bytes, lookup %lld bytes\n",
	       argv[1], load_ms, (long long)f32_bytes, (long long)lk_bytes);
	printf("RESULT cluster_load_ms %.4f\nRESULT cluster_weight_bytes_f32 %lld\n"
	       "RESULT cluster_weight_bytes_lookup %lld\n",
	       load_ms, (long long)f32_bytes, (long long)lk_bytes);
	printf("%6s %12s %12s %8s\n", "batch", "f32 ms", "lookup ms", "ratio");
	for (int B = 1; B <= 256; B *= 256) {
		int in = ls[0].in, k = ls[n - 1].out;
		float *x = malloc(sizeof(float) * (size_t)B * in), *y = malloc(sizeof(float) * (size_t)B * k);
		float *a = malloc(sizeof(float) * (size_t)B * widest),
		      *b = malloc(sizeof(float) * (size_t)B * widest);
		struct mc_exec *e = mc_exec_new(m, B, 0, &err);
		const float *ref;
		double f32_ms = 0, lk_ms = 0, maxd = 0;

		for (int64_t i = 0; i < (int64_t)B * in; i++)
			x[i] = mc_rand_uniform(1, 0, (uint64_t)i);
		ref = mc_forward(e, x, B);
		lookup_forward(ls, n, x, B, a, b, y);
		for (int64_t i = 0; i < (int64_t)B * k; i++)
			maxd = fmax(maxd, fabs(ref[i] - y[i]) / fmax(1.0, fabs(ref[i])));
		if (maxd > 1e-4)
			return fprintf(stderr, "bench_cluster: the lookup kernel's logits differ by "
					       "%g\n", maxd), 1;
		for (int w = 0; w < 2; w++) {
			runs = 0;
			t0 = now();
			do {
				double s = now();

				if (w)
					lookup_forward(ls, n, x, B, a, b, y);
				else
					mc_forward(e, x, B);
				t[runs++] = 1e3 * (now() - s);
			} while (now() - t0 < secs && runs < MAX_RUNS);
			if (w)
				lk_ms = median_of(t, runs);
			else
				f32_ms = median_of(t, runs);
		}
		printf("%6d %12.4f %12.4f %7.2fx\n", B, f32_ms, lk_ms, lk_ms / f32_ms);
		printf("RESULT cluster_b%d_f32_ms %.4f\nRESULT cluster_b%d_lookup_ms %.4f\n", B,
		       f32_ms, B, lk_ms);
		mc_exec_free(e);
		free(x);
		free(y);
		free(a);
		free(b);
	}
	mc_model_free(m);
	return 0;
}
