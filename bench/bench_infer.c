/* SPDX-License-Identifier: MIT */
/*
 * bench_infer.c - inference latency of a saved model, the mcomp side of
 * `bench/run.sh ort` (ONNX Runtime times the same model exported to ONNX).
 * For each batch size, the median of timed forwards (mc_time_median: two
 * warm-up calls, then at least 20 calls and at least the given seconds) on
 * fixed pseudo-random inputs in [0, 1); prints, per batch size,
 *
 *	RESULT lat_b1_ms 0.0123
 *
 * Usage: bench_infer MODEL.safetensors [seconds-per-figure] [batch...]
 * (default 0.5 s, batches 1 and 256). Threads: OMP_NUM_THREADS. Waits are
 * bounded as in the mcomp command (mc_threads_bound_waits), so the figures
 * are those a user of `mcomp predict` gets, idle or beside other work.
 */
#include <stdio.h>
#include <stdlib.h>

#include <mcomp/common.h>
#include <mcomp/graph.h>
#include <mcomp/model.h>

struct job {
	struct mc_exec *e;
	const float *x;
	int n;
};

static void forward(void *arg)
{
	struct job *j = arg;

	mc_forward(j->e, j->x, j->n);
}

int main(int argc, char **argv)
{
	struct mc_err err = {0};
	struct mc_model *m;
	double secs = argc > 2 ? atof(argv[2]) : 0.5;
	int batches[16] = {1, 256}, nb = 2;
	int64_t per;

	mc_threads_bound_waits(argv);
	if (argc < 2) {
		fprintf(stderr, "usage: bench_infer MODEL.safetensors [seconds] [batch...]\n");
		return 2;
	}
	if (argc > 3) {
		nb = 0;
		for (int i = 3; i < argc && nb < 16; i++)
			batches[nb++] = atoi(argv[i]);
	}
	m = mc_model_load(argv[1], &err);
	if (!m) {
		fprintf(stderr, "bench_infer: %s\n", err.msg);
		return 1;
	}
	per = mc_model_in_numel(m);
	for (int b = 0; b < nb; b++) {
		int n = batches[b];
		float *x = malloc((size_t)n * (size_t)per * sizeof(float));
		struct mc_exec *e = mc_exec_new(m, n, 0, &err);
		uint32_t s = 12345;
		struct job j;

		if (!x || !e || n < 1) {
			fprintf(stderr, "bench_infer: batch %d: %s\n", n, e ? "out of memory" : err.msg);
			return 1;
		}
		for (int64_t k = 0; k < (int64_t)n * per; k++) {
			s = s * 1664525u + 1013904223u;
			x[k] = (float)(s >> 8) / 16777216.0f;
		}
		j.e = e;
		j.x = x;
		j.n = n;
		printf("RESULT lat_b%d_ms %.6g\n", n, mc_time_median(forward, &j, 20, 200, secs));
		mc_exec_free(e);
		free(x);
	}
	mc_model_free(m);
	return 0;
}
