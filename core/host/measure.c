/* SPDX-License-Identifier: MIT */
/*
 * measure.c - what the host measures of a model after each step: counts,
 * bytes of its file, test accuracy, and forward latency at batch 1 and 256.
 *
 * Latency is the median of repeated timed forwards after a warm-up, so one
 * slow run on a shared machine does not move it.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mcomp/pipeline.h>
#include <mcomp/train.h>

#include "graph/model_int.h"

#include "host/host_int.h"

MC_API double mc_now(void)
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

MC_API double mc_time_median(void (*run)(void *arg), void *arg, int min_reps, int max_reps,
			     double budget)
{
	double t[200], start;
	int reps = 0;

	if (max_reps > 200)
		max_reps = 200;
	if (max_reps < 1)
		max_reps = 1;
	for (int i = 0; i < 2; i++)
		run(arg);
	start = mc_now();
	while (reps < max_reps && (reps < min_reps || mc_now() - start < budget)) {
		double t0 = mc_now();

		run(arg);
		t[reps++] = (mc_now() - t0) * 1e3;
	}
	qsort(t, (size_t)reps, sizeof(t[0]), cmp_double);
	return t[reps / 2];
}

/* A forward of n samples, for mc_time_median. */
struct forward_job {
	struct mc_exec *e;
	const float *x;
	int n;
};

static void run_forward(void *arg)
{
	struct forward_job *j = arg;

	mc_forward(j->e, j->x, j->n);
}

/* Median milliseconds of a forward of n samples. */
static double time_forward(struct mc_exec *e, const float *x, int n, int min_reps, double budget)
{
	struct forward_job j = { e, x, n };

	return mc_time_median(run_forward, &j, min_reps, 200, budget);
}

/*
 * shared: the test batches are shared out over the ranks of a job
 * (mc_evaluate_shared: the same accuracy to the bit; every rank calls it at
 * the same point). timed: the latencies are measured (else left 0).
 */
static int measure(const struct mc_model *m, const struct mc_dataset *test, int shared,
		   int timed, struct mc_measure *out, struct mc_err *err)
{
	const int big = 256;
	struct mc_exec *e;
	size_t len;
	void *buf;
	float *x;
	int ret;

	memset(out, 0, sizeof(*out));
	out->params = mc_model_nparams(m);
	out->nonzeros = mc_model_nonzeros(m);
	out->flops = mc_model_flops(m);
	ret = mc_model_serialize(m, &buf, &len, err);
	if (ret)
		return ret;
	free(buf);
	out->bytes = (int64_t)len;
	out->accuracy = -1;
	if (test) {
		if (test->sample_numel != m->in_numel)
			return mc_err_set(err, MC_EINVAL,
					  "%s: samples have %lld values but the model takes %lld; "
					  "use a test split that matches the model's input",
					  test->source, (long long)test->sample_numel,
					  (long long)m->in_numel);
		ret = shared ? mc_evaluate_shared(m, test, big, &out->accuracy, NULL, err)
			     : mc_evaluate(m, test, big, &out->accuracy, NULL, err);
		if (ret)
			return ret;
	}
	if (!timed)
		return 0;
	x = mc_calloc((size_t)big * m->in_numel, sizeof(float));
	e = mc_exec_new(m, big, 0, err);
	if (!x || !e) {
		mc_free(x);
		mc_exec_free(e);
		return e ? mc_err_set(err, MC_ENOMEM, "out of memory measuring latency") : err->code;
	}
	if (test) {
		int64_t n = test->n < big ? test->n : big;

		memcpy(x, test->x, (size_t)n * m->in_numel * sizeof(float));
	}
	out->latency1_ms = time_forward(e, x, 1, 20, 0.2);
	out->latency256_ms = time_forward(e, x, big, 5, 0.5);
	mc_exec_free(e);
	mc_free(x);
	return 0;
}

MC_API int mc_measure_model(const struct mc_model *m, const struct mc_dataset *test,
			    struct mc_measure *out, struct mc_err *err)
{
	return measure(m, test, 0, 1, out, err);
}

int mc_measure_model_job(const struct mc_model *m, const struct mc_dataset *test, int timed,
			 struct mc_measure *out, struct mc_err *err)
{
	return measure(m, test, 1, timed, out, err);
}
