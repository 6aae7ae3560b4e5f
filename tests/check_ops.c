/* SPDX-License-Identifier: MIT */
/*
 * check_ops.c - the CNN ops beyond their gradients (tests/check_grad.c):
 * conv2d against a direct loop, batch norm's running statistics and its
 * folding into the layer before it, dropout's masks, shape errors, a
 * residual model from YAML, and byte-identical forward, backward and
 * training of a CNN for 1, 2 and 3 threads; the sparse (CSR) linear
 * against the dense one, after in-place weight changes and for 1-3 threads.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/train.h>

#include "graph/ops_int.h"
#include "host/pipeline_int.h"

static struct mc_model *build(const char *json, uint64_t seed)
{
	struct mc_err err = { 0 };
	struct mc_model *m = mc_model_from_arch(json, "test", &err);

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, seed);
	return m;
}

static void fill(float *x, size_t n, uint64_t stream)
{
	for (size_t i = 0; i < n; i++)
		x[i] = 2.0f * mc_rand_uniform(21, stream, i) - 1.0f;
}

/* ---------------------------------------------------------------- conv2d */

/* The textbook loop, in double: the reference for the im2col + GEMM kernel. */
static double conv_ref(const float *x, const float *w, const float *b, int C, int H, int W,
		       int O, int k, int s, int p, int g, int o, int oh, int ow)
{
	int cg = C / g, og = O / g, grp = o / og;
	double acc = b[o];

	for (int c = 0; c < cg; c++)
		for (int ki = 0; ki < k; ki++)
			for (int kj = 0; kj < k; kj++) {
				int h = oh * s - p + ki, ww = ow * s - p + kj;

				if (h < 0 || h >= H || ww < 0 || ww >= W)
					continue;
				acc += (double)x[((grp * cg + c) * H + h) * W + ww] *
				       w[((o * cg + c) * k + ki) * k + kj];
			}
	return acc;
}

static void check_conv(int C, int H, int W, int O, int k, int s, int p, int g)
{
	char json[512];
	struct mc_err err = { 0 };
	struct mc_model *m;
	struct mc_exec *e;
	const struct mc_node *nd;
	const float *y;
	float *x;
	int n = 2, OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;

	snprintf(json, sizeof(json),
		 "{\"format\":1,\"input\":[%d,%d,%d],\"nodes\":[{\"op\":\"conv2d\",\"attrs\":"
		 "{\"out\":%d,\"kernel\":%d,\"stride\":%d,\"padding\":%d,\"groups\":%d}}]}",
		 C, H, W, O, k, s, p, g);
	m = build(json, 4);
	nd = mc_model_node(m, 0);
	ck_assert_int_eq(nd->out_shape[0], O);
	ck_assert_int_eq(nd->out_shape[1], OH);
	ck_assert_int_eq(nd->out_shape[2], OW);
	ck_assert_int_eq(mc_model_flops(m), 2LL * O * (C / g) * k * k * OH * OW);
	e = mc_exec_new(m, n, 0, &err);
	ck_assert_ptr_nonnull(e);
	x = malloc((size_t)n * C * H * W * sizeof(float));
	fill(x, (size_t)n * C * H * W, 1);
	y = mc_forward(e, x, n);
	for (int i = 0; i < n; i++)
		for (int o = 0; o < O; o++)
			for (int oh = 0; oh < OH; oh++)
				for (int ow = 0; ow < OW; ow++) {
					double ref = conv_ref(x + (size_t)i * C * H * W,
							      nd->params[0]->data, nd->params[1]->data,
							      C, H, W, O, k, s, p, g, o, oh, ow);
					float got = y[(((size_t)i * O + o) * OH + oh) * OW + ow];

					ck_assert_msg(fabs(got - ref) <= 1e-5 + 1e-5 * fabs(ref),
						      "conv %dx%dx%d->%d k%d s%d p%d g%d at %d,%d,%d,%d: "
						      "%g, expected %g",
						      C, H, W, O, k, s, p, g, i, o, oh, ow, got, ref);
				}
	free(x);
	mc_exec_free(e);
	mc_model_free(m);
}

START_TEST(conv2d_matches_direct_loop)
{
	check_conv(1, 28, 28, 4, 3, 1, 0, 1);
	check_conv(3, 9, 7, 5, 3, 2, 1, 1);
	check_conv(4, 6, 6, 6, 2, 1, 1, 2);
	check_conv(3, 8, 8, 3, 3, 1, 1, 3);  /* depthwise */
	check_conv(2, 5, 5, 4, 1, 1, 0, 1);  /* 1x1 */
	check_conv(2, 7, 6, 3, 5, 3, 2, 1);  /* stride larger than the rows it skips */
	check_conv(2, 10, 12, 16, 3, 1, 1, 1); /* whole 16 x 16 blocks of the weight transpose */
}
END_TEST

/*
 * A batch large enough to go through conv2d in several groups of samples
 * (each with its own partial weight gradient, spread over threads) gives
 * what the samples give one at a time: outputs and input gradients per
 * sample, weight and bias gradients summed.
 */
START_TEST(conv2d_chunks_match_single_samples)
{
	struct mc_model *m =
	    build("{\"format\":1,\"input\":[16,16,16],\"nodes\":[{\"op\":\"conv2d\","
		  "\"attrs\":{\"out\":16,\"padding\":1}}]}",
		  8);
	const struct mc_node *nd = mc_model_node(m, 0);
	enum { N = 20, IN = 16 * 256, OUT = 16 * 256 };
	float *x = malloc(N * IN * sizeof(float)), *dy = malloc(N * OUT * sizeof(float));
	float *y = malloc(N * OUT * sizeof(float)), *dx = malloc(N * IN * sizeof(float));
	float *y1 = malloc(OUT * sizeof(float)), *dx1 = malloc(IN * sizeof(float));
	float *gw = calloc(2304, sizeof(float)), *gb = calloc(16, sizeof(float));
	float *gw1 = calloc(2304, sizeof(float)), *gb1 = calloc(16, sizeof(float));
	struct mc_run run = { .training = 1 };
	float *g[2] = { gw, gb }, *g1[2] = { gw1, gb1 };

	run.work = malloc(nd->op->workspace(nd, N));
	fill(x, N * IN, 60);
	fill(dy, N * OUT, 61);
	{
		const float *in[1] = { x };
		float *din[1] = { dx };

		nd->op->forward(nd, &run, N, in, y);
		nd->op->backward(nd, &run, N, in, y, dy, din, g);
	}
	for (int s = 0; s < N; s++) {
		const float *in[1] = { x + s * IN };
		float *din[1] = { dx1 };

		nd->op->forward(nd, &run, 1, in, y1);
		nd->op->backward(nd, &run, 1, in, y1, dy + s * OUT, din, g1);
		for (int i = 0; i < OUT; i++)
			ck_assert_float_eq_tol(y[s * OUT + i], y1[i], 1e-5f);
		for (int i = 0; i < IN; i++)
			ck_assert_float_eq_tol(dx[s * IN + i], dx1[i], 1e-5f);
	}
	for (int i = 0; i < 2304; i++)
		ck_assert_float_eq_tol(gw[i], gw1[i], 1e-3f * (1.0f + fabsf(gw1[i])));
	for (int i = 0; i < 16; i++)
		ck_assert_float_eq_tol(gb[i], gb1[i], 1e-3f * (1.0f + fabsf(gb1[i])));
	free(run.work);
	free(gb1);
	free(gw1);
	free(gb);
	free(gw);
	free(dx1);
	free(y1);
	free(dx);
	free(y);
	free(dy);
	free(x);
	mc_model_free(m);
}
END_TEST

/*
 * The 2x2 max pool's backward over odd sizes (a last row and column no
 * window covers) and ties (the first maximum takes the gradient): every
 * pixel of din is written, with what a direct loop routes there. Nine
 * windows a row: two groups of four for the SIMD path, one for the scalar.
 */
START_TEST(maxpool2_routes_gradients)
{
	enum { C = 3, H = 5, W = 37, OH = 2, OW = 18, N = 2 };
	struct mc_model *m =
	    build("{\"format\":1,\"input\":[3,5,37],\"nodes\":[{\"op\":\"maxpool2d\","
		  "\"attrs\":{\"kernel\":2}}]}",
		  1);
	const struct mc_node *nd = mc_model_node(m, 0);
	float x[N * C * H * W], y[N * C * OH * OW], dy[N * C * OH * OW], dx[N * C * H * W];
	struct mc_run run = { .training = 1 };

	fill(x, N * C * H * W, 70);
	fill(dy, N * C * OH * OW, 71);
	for (int i = 0; i < N * C * H * W; i += 3)
		x[i] = x[i / 2]; /* ties, some inside one window */
	x[1] = x[0];
	for (int i = 0; i < N * C * H * W; i++)
		dx[i] = NAN;
	{
		const float *in[1] = { x };
		float *din[1] = { dx };

		nd->op->forward(nd, &run, N, in, y);
		nd->op->backward(nd, &run, N, in, y, dy, din, NULL);
	}
	for (int pl = 0; pl < N * C; pl++) {
		float want[H * W] = { 0 };
		const float *xp = x + pl * H * W;

		for (int oh = 0; oh < OH; oh++)
			for (int ow = 0; ow < OW; ow++) {
				int at = -1;

				for (int i = 0; i < 2; i++)
					for (int j = 0; j < 2; j++) {
						int k = (2 * oh + i) * W + 2 * ow + j;

						if (at < 0 || xp[k] > xp[at])
							at = k;
					}
				ck_assert_float_eq(y[(pl * OH + oh) * OW + ow], xp[at]);
				want[at] = dy[(pl * OH + oh) * OW + ow];
			}
		for (int i = 0; i < H * W; i++)
			ck_assert_msg(dx[pl * H * W + i] == want[i], "plane %d pixel %d: %g, want %g",
				      pl, i, dx[pl * H * W + i], want[i]);
	}
	mc_model_free(m);
}
END_TEST

/*
 * Training's fused backward of a relu and the 2x2 max pool reading it
 * (exec.c) gives the bits of the two ops' backward passes one after the
 * other: relu outputs with zeros, ties and -0.0, gradients of both signs
 * and zeros, an odd last row and column.
 */
START_TEST(maxpool2_relu_backward_fused)
{
	enum { C = 3, H = 7, W = 37, OH = 3, OW = 18, N = 2, X = N * C * H * W };
	struct mc_model *m =
	    build("{\"format\":1,\"input\":[3,7,37],\"nodes\":[{\"op\":\"relu\"},{\"op\":\"maxpool2d\","
		  "\"attrs\":{\"kernel\":2}}]}",
		  1);
	const struct mc_node *relu = mc_model_node(m, 0), *pool = mc_model_node(m, 1);
	static float x[X], r[X], y[N * C * OH * OW], dy[N * C * OH * OW], dr[X], dx[X], fx[X];
	struct mc_run run = { .training = 1 };

	fill(x, X, 72);
	fill(dy, N * C * OH * OW, 73);
	for (int i = 0; i < X; i += 5)
		x[i] = i % 10 ? 0.0f : -0.0f;
	for (int i = 0; i < X; i += 3)
		x[i] = x[i / 2]; /* ties */
	for (int i = 0; i < N * C * OH * OW; i += 7)
		dy[i] = i % 14 ? 0.0f : -0.0f;
	for (int i = 0; i < X; i++)
		dr[i] = dx[i] = fx[i] = NAN;
	{
		const float *in[1] = { x }, *pin[1] = { r };
		float *din[1] = { dr }, *rin[1] = { dx };

		relu->op->forward(relu, &run, N, in, r);
		pool->op->forward(pool, &run, N, pin, y);
		pool->op->backward(pool, &run, N, pin, y, dy, din, NULL);
		relu->op->backward(relu, &run, N, in, r, dr, rin, NULL);
	}
	mc_maxpool2_backward_relu(pool, N, r, dy, fx);
	ck_assert(memcmp(fx, dx, sizeof(dx)) == 0);
	mc_model_free(m);
}
END_TEST

/*
 * The 2x2 max pool keeps the scalar comparisons' rule where vector max,
 * select and compares could part from it: forward, a NaN window value is
 * skipped unless it comes first (ordered greater-than is false) and of +0
 * and -0 the first stays; backward, alone and through a relu, each
 * gradient goes where that rule says, with relu outputs of 0 and NaN and
 * gradients of -0. Rows of 16 and more windows (the AVX-512 path) with a
 * masked or scalar tail, an odd last column.
 */
START_TEST(maxpool2_nan_and_zeros)
{
	enum { C = 2, H = 4, W = 71, OH = 2, OW = 35, N = 1 };
	struct mc_model *m =
	    build("{\"format\":1,\"input\":[2,4,71],\"nodes\":[{\"op\":\"maxpool2d\","
		  "\"attrs\":{\"kernel\":2}}]}",
		  1);
	const struct mc_node *nd = mc_model_node(m, 0);
	static const float vals[] = {NAN, -0.0f, 0.0f, 1.0f, -1.0f, NAN, 0.0f, -0.0f, -2.0f, 3.0f};
	float x[C * H * W], dy[C * OH * OW], dx[C * H * W], want[C * H * W];
	struct mc_run run = {.training = 1};

	for (int i = 0; i < C * H * W; i++)
		x[i] = vals[(i * 7 + i / W) % 10];
	for (int i = 0; i < C * OH * OW; i++)
		dy[i] = i % 5 ? (float)(i + 1) * 0.5f : -0.0f;
	{
		const float *in[1] = {x};
		float y[C * OH * OW];

		run.training = 0;
		nd->op->forward(nd, &run, N, in, y);
		run.training = 1;
		for (int c = 0; c < C; c++)
			for (int oh = 0; oh < OH; oh++)
				for (int ow = 0; ow < OW; ow++) {
					const float *r0 = x + c * H * W + 2 * oh * W + 2 * ow,
						    *r1 = r0 + W;
					float v = r0[0];
					uint32_t a, b;

					v = r0[1] > v ? r0[1] : v;
					v = r1[0] > v ? r1[0] : v;
					v = r1[1] > v ? r1[1] : v;
					memcpy(&a, &v, 4);
					memcpy(&b, &y[(c * OH + oh) * OW + ow], 4);
					ck_assert_msg(a == b,
						      "window (%d, %d, %d): %08x, want %08x", c, oh,
						      ow, b, a);
				}
	}
	for (int relu = 0; relu < 2; relu++) {
		for (int i = 0; i < C * H * W; i++)
			dx[i] = NAN;
		if (relu) {
			mc_maxpool2_backward_relu(nd, N, x, dy, dx);
		} else {
			const float *in[1] = {x};
			float *din[1] = {dx};

			nd->op->backward(nd, &run, N, in, NULL, dy, din, NULL);
		}
		memset(want, 0, sizeof(want));
		for (int c = 0; c < C; c++)
			for (int oh = 0; oh < OH; oh++)
				for (int ow = 0; ow < OW; ow++) {
					const float *xp = x + c * H * W;
					int k0 = 2 * oh * W + 2 * ow, at = k0;
					int k[4] = {k0, k0 + 1, k0 + W, k0 + W + 1};
					float mx = xp[k0];

					for (int j = 1; j < 4; j++)
						if (xp[k[j]] > mx) {
							mx = xp[k[j]];
							at = k[j];
						}
					if (!relu || xp[at] > 0.0f)
						want[c * H * W + at] = dy[(c * OH + oh) * OW + ow];
				}
		for (int i = 0; i < C * H * W; i++) {
			uint32_t a, b;

			memcpy(&a, &want[i], 4);
			memcpy(&b, &dx[i], 4);
			ck_assert_msg(a == b, "relu %d pixel %d: %08x, want %08x", relu, i, b, a);
		}
	}
	mc_model_free(m);
}
END_TEST

START_TEST(pooling_by_hand)
{
	struct mc_model *m =
	    build("{\"format\":1,\"input\":[1,4,4],\"nodes\":[{\"op\":\"maxpool2d\",\"attrs\":"
		  "{\"kernel\":2}}]}",
		  1);
	struct mc_model *a =
	    build("{\"format\":1,\"input\":[1,4,4],\"nodes\":[{\"op\":\"avgpool2d\",\"attrs\":"
		  "{\"kernel\":3,\"stride\":1,\"padding\":1}}]}",
		  1);
	struct mc_model *gp =
	    build("{\"format\":1,\"input\":[2,2,3],\"nodes\":[{\"op\":\"global_avgpool\"}]}", 1);
	struct mc_err err = { 0 };
	struct mc_exec *e = mc_exec_new(m, 1, 0, &err), *ea = mc_exec_new(a, 1, 0, &err);
	struct mc_exec *eg = mc_exec_new(gp, 1, 0, &err);
	float x[16], want[4] = { 5, 7, 13, 15 };
	const float *y;

	for (int i = 0; i < 16; i++)
		x[i] = (float)i;
	y = mc_forward(e, x, 1);
	for (int i = 0; i < 4; i++)
		ck_assert_float_eq(y[i], want[i]);
	/* corner: (0 + 1 + 4 + 5) / 9 with the padding counted */
	y = mc_forward(ea, x, 1);
	ck_assert_float_eq_tol(y[0], 10.0f / 9.0f, 1e-6f);
	ck_assert_float_eq_tol(y[5], (0 + 1 + 2 + 4 + 5 + 6 + 8 + 9 + 10) / 9.0f, 1e-6f);
	y = mc_forward(eg, x, 1);
	ck_assert_float_eq_tol(y[0], 2.5f, 1e-6f);
	ck_assert_float_eq_tol(y[1], 8.5f, 1e-6f);
	mc_exec_free(e);
	mc_exec_free(ea);
	mc_exec_free(eg);
	mc_model_free(m);
	mc_model_free(a);
	mc_model_free(gp);
}
END_TEST

/* ---------------------------------------------------------------- shape errors */

static void refused(const char *json, const char *needle)
{
	struct mc_err err = { 0 };
	struct mc_model *m = mc_model_from_arch(json, "t.json", &err);

	ck_assert_msg(m == NULL, "accepted %s", json);
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_msg(strstr(err.msg, needle), "'%s' lacks '%s'", err.msg, needle);
}

/* The predicted class: the first of equal maxima, and a NaN never wins. */
START_TEST(argmax_first_of_equal)
{
	const float a[] = { 0.5f, 2.0f, -1.0f, 2.0f }, b[] = { NAN, 1.0f, 3.0f };
	const float c[] = { 1.0f, NAN, 0.5f }, d[] = { -INFINITY, -INFINITY };

	ck_assert_int_eq(mc_argmax(a, 4), 1);
	ck_assert_int_eq(mc_argmax(a, 1), 0);
	ck_assert_int_eq(mc_argmax(a, 0), 0);
	ck_assert_int_eq(mc_argmax(b, 3), 0); /* nothing is greater than the NaN it starts at */
	ck_assert_int_eq(mc_argmax(c, 3), 0);
	ck_assert_int_eq(mc_argmax(d, 2), 0);
}
END_TEST

static void count_call(void *arg)
{
	++*(int *)arg;
}

/* Two warm-ups, then at least min_reps and at most max_reps timed runs. */
START_TEST(time_median_counts_runs)
{
	int calls = 0;
	double ms, t0 = mc_now();

	ms = mc_time_median(count_call, &calls, 5, 5, 0);
	ck_assert_int_eq(calls, 2 + 5);
	ck_assert(ms >= 0 && ms < 1000);
	calls = 0;
	mc_time_median(count_call, &calls, 1, 3, 60); /* the cap ends it, not the budget */
	ck_assert_int_eq(calls, 2 + 3);
	calls = 0;
	mc_time_median(count_call, &calls, 4, 500, 0); /* at most 200, at least min_reps */
	ck_assert_int_eq(calls, 2 + 4);
	ck_assert(mc_now() - t0 < 30);
}
END_TEST

START_TEST(bad_shapes_are_refused)
{
	refused("{\"input\":[3,8,8],\"nodes\":[{\"op\":\"conv2d\",\"attrs\":{\"out\":4,\"groups\":2}}]}",
		"groups 2 must divide the 3 input and 4 output channels");
	refused("{\"input\":[1,2,2],\"nodes\":[{\"op\":\"conv2d\",\"attrs\":{\"out\":4}}]}",
		"kernel 3 is larger than the padded input 2x2");
	refused("{\"input\":[10],\"nodes\":[{\"op\":\"conv2d\",\"attrs\":{\"out\":4}}]}",
		"conv2d needs per-sample [channels, height, width], got [10]");
	refused("{\"input\":[1,8,8],\"nodes\":[{\"op\":\"conv2d\"}]}", "needs attribute 'out'");
	refused("{\"input\":[10],\"nodes\":[{\"op\":\"maxpool2d\",\"attrs\":{\"kernel\":2}}]}",
		"maxpool2d needs per-sample [channels, height, width]");
	refused("{\"input\":[1,8,8],\"nodes\":[{\"op\":\"avgpool2d\",\"attrs\":{\"kernel\":2,"
		"\"padding\":2}}]}",
		"padding 2 is more than half the kernel 2");
	refused("{\"input\":[4],\"nodes\":[{\"op\":\"dropout\",\"attrs\":{\"p\":1}}]}",
		"use p in [0, 1)");
	refused("{\"input\":[4],\"nodes\":[{\"name\":\"a\",\"op\":\"linear\",\"attrs\":{\"out\":3}},"
		"{\"op\":\"add\",\"inputs\":[\"a\",\"input\"]}]}",
		"add needs inputs of one shape, got [3] and [4]");
	refused("{\"input\":[4],\"nodes\":[{\"op\":\"add\"}]}", "add takes 2 inputs");
	refused("{\"input\":[3,8,8],\"nodes\":[{\"name\":\"p\",\"op\":\"maxpool2d\","
		"\"attrs\":{\"kernel\":2}},{\"op\":\"concat\",\"inputs\":[\"input\",\"p\"]}]}",
		"given 'input' [3, 8, 8], 'p' [3, 4, 4]: concat joins inputs along their first "
		"dimension (channels or features), the others alike; input 1 is [3, 8, 8] and "
		"input 2 [3, 4, 4]");
	refused("{\"input\":[4],\"nodes\":[{\"op\":\"concat\",\"inputs\":[\"input\"]}]}",
		"concat takes 2 to 4 inputs");
	refused("{\"input\":[4],\"nodes\":[{\"op\":\"global_avgpool\"}]}",
		"global_avgpool needs per-sample [channels, height, width]");
}
END_TEST

/* ---------------------------------------------------------------- batch norm */

START_TEST(batchnorm_running_statistics)
{
	struct mc_model *m =
	    build("{\"format\":1,\"input\":[2],\"nodes\":[{\"op\":\"batchnorm\",\"attrs\":"
		  "{\"momentum\":0.25}}]}",
		  1);
	struct mc_err err = { 0 };
	struct mc_exec *e = mc_exec_new(m, 4, 1, &err);
	/* feature 0: 1, 2, 3, 6 (mean 3, biased var 3.5, unbiased 14/3) */
	float x[8] = { 1, 0, 2, 0, 3, 0, 6, 4 };
	const float *rm = mc_model_node(m, 0)->params[2]->data, *rv = mc_model_node(m, 0)->params[3]->data;
	const float *y;

	ck_assert_int_eq(mc_model_node(m, 0)->n_buffers, 2);
	ck_assert_str_eq(mc_model_node(m, 0)->params[3]->name, "batchnorm1.running_var");
	y = mc_forward(e, x, 4);
	ck_assert_float_eq_tol(y[0], (float)((1 - 3) / sqrt(3.5 + 1e-5)), 1e-6f);
	ck_assert_float_eq_tol(rm[0], 0.25f * 3.0f, 1e-6f);
	ck_assert_float_eq_tol(rv[0], 0.75f + 0.25f * 14.0f / 3.0f, 1e-6f);
	ck_assert_float_eq_tol(rm[1], 0.25f, 1e-6f);
	mc_exec_free(e);
	/* an inference executor uses them and leaves them be */
	e = mc_exec_new(m, 4, 0, &err);
	y = mc_forward(e, x, 4);
	ck_assert_float_eq_tol(y[2], (float)((2 - rm[0]) / sqrt(rv[0] + 1e-5)), 1e-6f);
	ck_assert_float_eq_tol(rm[0], 0.75f, 1e-6f);
	mc_exec_free(e);
	mc_model_free(m);
}
END_TEST

START_TEST(batchnorm_is_not_trained)
{
	/* the optimizer leaves running statistics alone, even with weight decay */
	struct mc_model *m =
	    build("{\"format\":1,\"input\":[3],\"nodes\":[{\"op\":\"linear\",\"attrs\":{\"out\":3}},"
		  "{\"op\":\"batchnorm\"}]}",
		  1);
	struct mc_optim_conf oc = { .kind = MC_OPTIM_ADAM, .lr = 0.1, .beta1 = 0.9, .beta2 = 0.999,
				    .eps = 1e-8, .weight_decay = 0.1 };
	struct mc_err err = { 0 };
	struct mc_exec *e = mc_exec_new(m, 4, 1, &err);
	struct mc_optim *o = mc_optim_new(m, &oc, &err);
	float x[12], dl[12], rm[3], rv[3];

	fill(x, 12, 3);
	fill(dl, 12, 4);
	mc_forward(e, x, 4);
	memcpy(rm, mc_model_node(m, 1)->params[2]->data, sizeof(rm));
	memcpy(rv, mc_model_node(m, 1)->params[3]->data, sizeof(rv));
	mc_exec_zero_grad(e);
	mc_backward(e, dl);
	mc_optim_step(o, m, e);
	ck_assert_mem_eq(rm, mc_model_node(m, 1)->params[2]->data, sizeof(rm));
	ck_assert_mem_eq(rv, mc_model_node(m, 1)->params[3]->data, sizeof(rv));
	ck_assert(((float *)mc_model_node(m, 1)->params[0]->data)[0] != 1.0f); /* the weight moved */
	mc_optim_free(o);
	mc_exec_free(e);
	mc_model_free(m);
}
END_TEST

/* Inference outputs of m, for n samples of x. */
static float *infer(const struct mc_model *m, const float *x, int n)
{
	struct mc_err err = { 0 };
	struct mc_exec *e = mc_exec_new(m, n, 0, &err);
	float *y = malloc((size_t)n * mc_model_n_classes(m) * sizeof(float));

	ck_assert_ptr_nonnull(e);
	memcpy(y, mc_forward(e, x, n), (size_t)n * mc_model_n_classes(m) * sizeof(float));
	mc_exec_free(e);
	return y;
}

START_TEST(batchnorm_folds)
{
	/* bn after a conv (folds), after a conv read twice (stays), after a linear
	 * at the end (folds) */
	const char *json =
	    "{\"format\":1,\"input\":[2,6,6],\"nodes\":["
	    "{\"name\":\"c1\",\"op\":\"conv2d\",\"attrs\":{\"out\":4,\"padding\":1}},"
	    "{\"name\":\"bn1\",\"op\":\"batchnorm\"},{\"name\":\"r1\",\"op\":\"relu\"},"
	    "{\"name\":\"c2\",\"op\":\"conv2d\",\"attrs\":{\"out\":4,\"padding\":1}},"
	    "{\"name\":\"bn2\",\"op\":\"batchnorm\"},"
	    "{\"name\":\"sum\",\"op\":\"add\",\"inputs\":[\"bn2\",\"c2\"]},"
	    "{\"op\":\"flatten\"},{\"name\":\"fc\",\"op\":\"linear\",\"attrs\":{\"out\":5}},"
	    "{\"name\":\"bn3\",\"op\":\"batchnorm\"}]}";
	struct mc_model *m = build(json, 2), *f;
	struct mc_err err = { 0 };
	struct mc_exec *e = mc_exec_new(m, 8, 1, &err);
	float x[8 * 72], *y0, *y1;

	/* a few training forwards give the running statistics real values */
	for (int k = 0; k < 5; k++) {
		fill(x, sizeof(x) / sizeof(x[0]), 10 + (uint64_t)k);
		for (int i = 0; i < 8 * 72; i++)
			x[i] = x[i] * 3.0f + 1.0f;
		mc_forward(e, x, 8);
	}
	mc_exec_free(e);
	for (int i = 0; i < mc_model_n_nodes(m); i++)
		if (mc_model_node(m, i)->n_buffers)
			for (int p = 0; p < 2; p++) {
				float *w = mc_model_node(m, i)->params[p]->data;

				for (int64_t c = 0; c < mc_model_node(m, i)->params[p]->numel; c++)
					w[c] += 0.3f * (float)(c + 1) * (p ? -1.0f : 1.0f);
			}
	f = mc_model_dup(m, &err);
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(mc_model_fold_batchnorm(f, &err), 2);
	ck_assert_int_eq(mc_model_n_nodes(f), mc_model_n_nodes(m) - 2);
	ck_assert_ptr_null(mc_model_param(f, "bn1.weight"));
	ck_assert_ptr_nonnull(mc_model_param(f, "bn2.running_mean"));
	ck_assert_ptr_null(mc_model_param(f, "bn3.weight"));
	ck_assert_str_eq(mc_model_node(f, mc_model_n_nodes(f) - 1)->name, "fc");
	ck_assert_int_eq(mc_model_node(f, 1)->inputs[0], 0); /* r1 reads c1 now */
	ck_assert_int_eq(mc_model_n_classes(f), 5);
	/* the same inference outputs within float rounding: 1e-4 relative */
	fill(x, sizeof(x) / sizeof(x[0]), 30);
	y0 = infer(m, x, 8);
	y1 = infer(f, x, 8);
	for (int i = 0; i < 8 * 5; i++)
		ck_assert_msg(fabsf(y0[i] - y1[i]) <= 1e-4f * (1.0f + fabsf(y0[i])),
			      "output %d: %g unfolded, %g folded", i, y0[i], y1[i]);
	/* folding again finds nothing; the architecture round-trips */
	ck_assert_int_eq(mc_model_fold_batchnorm(f, &err), 0);
	{
		char *arch = mc_model_arch(f);
		struct mc_model *r = mc_model_from_arch(arch, "folded", &err);

		ck_assert_msg(r != NULL, "%s", err.msg);
		ck_assert_int_eq(mc_model_n_nodes(r), mc_model_n_nodes(f));
		mc_model_free(r);
		free(arch);
	}
	free(y0);
	free(y1);
	mc_model_free(f);
	mc_model_free(m);
}
END_TEST

/* ---------------------------------------------------------------- dropout */

START_TEST(dropout_masks)
{
	struct mc_model *m =
	    build("{\"format\":1,\"input\":[1000],\"nodes\":[{\"op\":\"dropout\",\"attrs\":"
		  "{\"p\":0.3}}]}",
		  1);
	const struct mc_node *nd = mc_model_node(m, 0);
	float *x = malloc(4000 * sizeof(float)), *a = malloc(4000 * sizeof(float));
	float *b = malloc(4000 * sizeof(float));
	const float *in[1] = { x };
	struct mc_run run = { .training = 1, .seed = 9, .step = 1 };
	int zeros = 0, same = 0;

	for (int i = 0; i < 4000; i++)
		x[i] = 1.0f + (float)(i % 7);
	nd->op->forward(nd, &run, 4, in, a);
	for (int i = 0; i < 4000; i++) {
		zeros += a[i] == 0.0f;
		if (a[i] != 0.0f)
			ck_assert_float_eq_tol(a[i], x[i] / 0.7f, 1e-5f);
	}
	ck_assert_int_gt(zeros, 1100); /* 30% of 4000 = 1200 */
	ck_assert_int_lt(zeros, 1300);
	/* the same (seed, step) draws the same mask; another step another */
	nd->op->forward(nd, &run, 4, in, b);
	ck_assert_mem_eq(a, b, 4000 * sizeof(float));
	run.step = 2;
	nd->op->forward(nd, &run, 4, in, b);
	for (int i = 0; i < 4000; i++)
		same += (a[i] == 0.0f) == (b[i] == 0.0f);
	ck_assert_int_lt(same, 3900);
	/* inference: the identity */
	run.training = 0;
	nd->op->forward(nd, &run, 4, in, b);
	ck_assert_mem_eq(x, b, 4000 * sizeof(float));
	free(b);
	free(a);
	free(x);
	mc_model_free(m);
}
END_TEST

/* ---------------------------------------------------------------- softmax */

START_TEST(softmax_rows)
{
	struct mc_model *m =
	    build("{\"format\":1,\"input\":[2,3],\"nodes\":[{\"op\":\"softmax\"}]}", 1);
	struct mc_model *l =
	    build("{\"format\":1,\"input\":[2,3],\"nodes\":[{\"op\":\"log_softmax\"}]}", 1);
	struct mc_err err = { 0 };
	struct mc_exec *e = mc_exec_new(m, 1, 0, &err), *el = mc_exec_new(l, 1, 0, &err);
	float x[6] = { 1, 2, 3, 1000, 1000, -1000 };
	const float *y = mc_forward(e, x, 1), *ly;
	double z = exp(1.0) + exp(2.0) + exp(3.0);

	ck_assert_float_eq_tol(y[0], (float)(exp(1.0) / z), 1e-6f);
	ck_assert_float_eq_tol(y[2], (float)(exp(3.0) / z), 1e-6f);
	ck_assert_float_eq_tol(y[3], 0.5f, 1e-6f); /* large logits stay finite */
	ck_assert_float_eq(y[5], 0.0f);
	ly = mc_forward(el, x, 1);
	ck_assert_float_eq_tol(ly[1], (float)(2.0 - log(z)), 1e-6f);
	ck_assert_float_eq_tol(ly[4], (float)-log(2.0), 1e-6f);
	mc_exec_free(e);
	mc_exec_free(el);
	mc_model_free(m);
	mc_model_free(l);
}
END_TEST

/* ---------------------------------------------------------------- YAML */

START_TEST(resnet_from_yaml)
{
	const char *src = getenv("MCOMP_SRCDIR");
	char path[4096];
	struct mc_err err = { 0 };
	struct mc_pipeline *p;
	const struct mc_model *m;
	int add1 = -1, stem = -1;

	snprintf(path, sizeof(path), "%s/tests/pipelines/good/resnet.yaml", src && *src ? src : ".");
	p = mc_pipeline_load(path, NULL, 0, NULL, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert_int_eq(p->n_models, 1);
	m = p->models[0].model;
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		if (!strcmp(mc_model_node(m, i)->name, "block1"))
			add1 = i;
		if (!strcmp(mc_model_node(m, i)->name, "stem"))
			stem = i;
	}
	ck_assert_int_ge(add1, 0);
	ck_assert_int_eq(mc_model_node(m, add1)->n_inputs, 2);
	ck_assert_str_eq(mc_model_node(m, mc_model_node(m, add1)->inputs[0])->name, "conv2");
	ck_assert_int_eq(mc_model_node(m, add1)->inputs[1], stem);
	/* the layer after an add reads the add; the second add reads its list */
	ck_assert_int_eq(mc_model_node(m, add1 + 1)->inputs[0], add1);
	ck_assert_str_eq(mc_model_node(m, add1 + 6)->op->name, "add");
	ck_assert_int_eq(mc_model_node(m, add1 + 6)->inputs[1], add1);
	ck_assert_int_eq(mc_model_n_classes(m), 10);
	mc_pipeline_free(p);
}
END_TEST

/* ---------------------------------------------------------------- determinism */

/* A CNN with every op that has a parallel kernel. */
static const char *det_json =
    "{\"format\":1,\"input\":[1,12,12],\"nodes\":["
    "{\"name\":\"c1\",\"op\":\"conv2d\",\"attrs\":{\"out\":8,\"padding\":1}},"
    "{\"name\":\"b1\",\"op\":\"batchnorm\"},{\"name\":\"r1\",\"op\":\"relu\"},"
    "{\"name\":\"c2\",\"op\":\"conv2d\",\"attrs\":{\"out\":8,\"padding\":1,\"groups\":2}},"
    "{\"name\":\"sum\",\"op\":\"add\",\"inputs\":[\"c2\",\"r1\"]},"
    "{\"name\":\"g\",\"op\":\"global_avgpool\"},{\"name\":\"gs\",\"op\":\"hardsigmoid\"},"
    "{\"name\":\"se\",\"op\":\"mul\",\"inputs\":[\"sum\",\"gs\"]},{\"op\":\"hardswish\"},"
    "{\"op\":\"leaky_relu\"},{\"op\":\"relu6\"},{\"op\":\"clip\",\"attrs\":{\"min\":0.5}},"
    "{\"op\":\"sigmoid\"},"
    "{\"op\":\"maxpool2d\",\"attrs\":{\"kernel\":2}},"
    "{\"op\":\"conv2d\",\"attrs\":{\"out\":16,\"stride\":2}},{\"op\":\"relu\"},"
    "{\"op\":\"avgpool2d\",\"attrs\":{\"kernel\":2,\"stride\":1}},"
    "{\"op\":\"dropout\",\"attrs\":{\"p\":0.2}},{\"op\":\"flatten\"},"
    "{\"op\":\"linear\",\"attrs\":{\"out\":32}},{\"op\":\"batchnorm\"},{\"op\":\"relu\"},"
    "{\"op\":\"linear\",\"attrs\":{\"out\":10}},{\"op\":\"log_softmax\"}]}";

/* Everything a step computes, as one buffer: outputs, then every gradient. */
static size_t run_step(int threads, float **outp)
{
	struct mc_model *m = build(det_json, 5);
	struct mc_err err = { 0 };
	struct mc_exec *e;
	int n = 64;
	float *x = malloc((size_t)n * 144 * sizeof(float)), *dl = malloc((size_t)n * 10 * sizeof(float));
	size_t len = (size_t)n * 10, at;
	float *buf;

	omp_set_num_threads(threads);
	e = mc_exec_new(m, n, 1, &err);
	mc_exec_set_seed(e, 3);
	fill(x, (size_t)n * 144, 40);
	fill(dl, (size_t)n * 10, 41);
	for (int i = 0; i < mc_model_n_nodes(m); i++)
		for (int p = 0; p < mc_model_node(m, i)->n_params; p++)
			len += (size_t)mc_model_node(m, i)->params[p]->numel * 2;
	buf = malloc(len * sizeof(float));
	memcpy(buf, mc_forward(e, x, n), (size_t)n * 10 * sizeof(float));
	mc_exec_zero_grad(e);
	mc_backward(e, dl);
	at = (size_t)n * 10;
	for (int i = 0; i < mc_model_n_nodes(m); i++)
		for (int p = 0; p < mc_model_node(m, i)->n_params; p++) {
			size_t k = (size_t)mc_model_node(m, i)->params[p]->numel;

			memcpy(buf + at, mc_exec_grad(e, i, p), k * sizeof(float));
			memcpy(buf + at + k, mc_model_node(m, i)->params[p]->data, k * sizeof(float));
			at += 2 * k;
		}
	mc_exec_free(e);
	mc_model_free(m);
	free(dl);
	free(x);
	*outp = buf;
	return len;
}

START_TEST(cnn_step_is_thread_count_independent)
{
	float *ref, *got;
	size_t len = run_step(1, &ref);

	for (int t = 2; t <= 3; t++) {
		ck_assert_uint_eq(run_step(t, &got), len);
		for (size_t i = 0; i < len; i++)
			ck_assert_msg(!memcmp(&ref[i], &got[i], sizeof(float)),
				      "value %zu differs with %d threads: %a vs %a", i, t, ref[i],
				      got[i]);
		free(got);
	}
	free(ref);
	omp_set_num_threads(omp_get_num_procs());
}
END_TEST

static float *train_params(int threads, size_t *len)
{
	struct mc_model *m = build(det_json, 6);
	struct mc_dataset d = { .source = "synthetic", .n = 200, .ndim = 3, .shape = { 1, 12, 12 },
				.sample_numel = 144, .n_classes = 10 };
	struct mc_train_conf c = { .epochs = 2, .batch_size = 48,
				   .optim = { .kind = MC_OPTIM_ADAM, .lr = 0.01, .beta1 = 0.9,
					      .beta2 = 0.999, .eps = 1e-8 },
				   .schedule = MC_LR_COSINE, .seed = 11 };
	struct mc_err err = { 0 };
	float *out;
	size_t at = 0;

	omp_set_num_threads(threads);
	d.x = malloc(200 * 144 * sizeof(float));
	d.y = malloc(200);
	fill(d.x, 200 * 144, 50);
	for (int i = 0; i < 200; i++)
		d.y[i] = (uint8_t)(i % 10);
	ck_assert_msg(mc_train(m, &d, &c, NULL, &err) == 0, "%s", err.msg);
	*len = (size_t)mc_model_nparams(m);
	out = malloc(*len * sizeof(float));
	for (int i = 0; i < mc_model_n_nodes(m); i++)
		for (int p = 0; p < mc_model_node(m, i)->n_params; p++) {
			size_t k = (size_t)mc_model_node(m, i)->params[p]->numel;

			memcpy(out + at, mc_model_node(m, i)->params[p]->data, k * sizeof(float));
			at += k;
		}
	free(d.x);
	free(d.y);
	mc_model_free(m);
	return out;
}

START_TEST(cnn_training_is_thread_count_independent)
{
	size_t len, len2;
	float *ref = train_params(1, &len), *got;

	for (int t = 2; t <= 3; t++) {
		got = train_params(t, &len2);
		ck_assert_uint_eq(len, len2);
		ck_assert_msg(!memcmp(ref, got, len * sizeof(float)),
			      "trained parameters differ with %d threads", t);
		free(got);
	}
	free(ref);
	omp_set_num_threads(omp_get_num_procs());
}
END_TEST

/* ---------------------------------------------------------------- sparse linear */

/* A linear I -> O with about 90% of its weights zero (some -0.0). */
static struct mc_model *sparse_linear(int I, int O)
{
	char json[256];
	struct mc_model *m;
	float *w;

	snprintf(json, sizeof(json),
		 "{\"format\":1,\"input\":[%d],\"nodes\":[{\"op\":\"linear\",\"attrs\":"
		 "{\"out\":%d}}]}", I, O);
	m = build(json, 8);
	w = mc_model_node(m, 0)->params[0]->data;
	for (int64_t i = 0; i < mc_model_node(m, 0)->params[0]->numel; i++)
		if (mc_rand_uniform(33, 0, (uint64_t)i) < 0.9f)
			w[i] = i % 7 ? 0.0f : -0.0f;
	return m;
}

static float *forward_copy(struct mc_model *m, const char *mode, const float *x, int n)
{
	struct mc_err err = { 0 };
	struct mc_exec *e = mc_exec_new(m, n, 0, &err);
	float *y = malloc((size_t)n * mc_model_n_classes(m) * sizeof(float));

	ck_assert_msg(e != NULL, "%s", err.msg);
	setenv("MCOMP_SPARSE", mode, 1);
	memcpy(y, mc_forward(e, x, n), (size_t)n * mc_model_n_classes(m) * sizeof(float));
	mc_exec_free(e);
	return y;
}

static void assert_close(const float *a, const float *b, size_t n, const char *what)
{
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(fabsf(a[i] - b[i]) <= 1e-5f + 1e-5f * fabsf(b[i]),
			      "%s: value %zu is %g, dense %g", what, i, a[i], b[i]);
}

/*
 * The executor's inference fusions (flatten as a view of its input, relu
 * in place on a linear's output, the linear's weights packed once) give
 * the bytes of the training forward, which fuses none of them, at every
 * batch (the GEMV rows, edge strips); the packed copy follows weights
 * written in place.
 */
START_TEST(inference_fusions_keep_bytes)
{
	static const char *json =
	    "{\"format\":1,\"input\":[3,6,6],\"nodes\":["
	    "{\"op\":\"flatten\"},{\"op\":\"linear\",\"attrs\":{\"out\":70}},{\"op\":\"relu\"},"
	    "{\"op\":\"flatten\"},{\"op\":\"linear\",\"attrs\":{\"out\":33}},{\"op\":\"relu\"},"
	    "{\"op\":\"linear\",\"attrs\":{\"out\":9}},{\"op\":\"flatten\"}]}";
	static const int batches[] = { 1, 3, 4, 13, 40 };
	struct mc_model *m = build(json, 5);
	float *x = malloc(40 * 108 * sizeof(float)), *w = mc_model_node(m, 4)->params[0]->data;
	struct mc_err err = { 0 };

	setenv("MCOMP_SPARSE", "0", 1);
	fill(x, 40 * 108, 62);
	for (int round = 0; round < 2; round++) {
		struct mc_exec *inf = mc_exec_new(m, 40, 0, &err), *tr = mc_exec_new(m, 40, 1, &err);

		ck_assert(inf && tr);
		for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
			int n = batches[b];
			const float *yi = mc_forward(inf, x, n), *yt = mc_forward(tr, x, n);

			ck_assert_msg(memcmp(yi, yt, (size_t)n * 9 * sizeof(float)) == 0,
				      "round %d batch %d: inference differs from training forward",
				      round, n);
		}
		mc_exec_free(tr);
		mc_exec_free(inf);
		for (int i = 0; i < 70 * 33; i++) /* in place, as training and passes write */
			w[i] = -0.5f * w[i];
	}
	/* one exec kept across a change of the weights */
	{
		struct mc_exec *inf = mc_exec_new(m, 40, 0, &err), *tr = mc_exec_new(m, 40, 1, &err);
		float *y0 = malloc(40 * 9 * sizeof(float));

		memcpy(y0, mc_forward(inf, x, 40), 40 * 9 * sizeof(float));
		w[7] += 1.0f;
		ck_assert(memcmp(mc_forward(inf, x, 40), mc_forward(tr, x, 40),
				 40 * 9 * sizeof(float)) == 0);
		ck_assert(memcmp(mc_forward(inf, x, 40), y0, 40 * 9 * sizeof(float)) != 0);
		/* weights that change before every forward, and moved ones (a swap) */
		for (int round = 0; round < 4; round++) {
			float t = w[round];

			w[round] = w[100 + round];
			w[100 + round] = t;
			memcpy(y0, mc_forward(tr, x, 40), 40 * 9 * sizeof(float));
			ck_assert_msg(memcmp(mc_forward(inf, x, 40), y0, 40 * 9 * sizeof(float)) ==
					  0,
				      "round %d: swapped weights not seen", round);
			ck_assert(memcmp(mc_forward(inf, x, 40), y0, 40 * 9 * sizeof(float)) == 0);
		}
		free(y0);
		mc_exec_free(tr);
		mc_exec_free(inf);
	}
	unsetenv("MCOMP_SPARSE");
	free(x);
	mc_model_free(m);
}
END_TEST

START_TEST(sparse_linear_matches_dense)
{
	static const int batches[] = { 1, 5, 16, 37, 64, 70, 130 };
	struct mc_model *m = sparse_linear(100, 37);
	float *x = malloc(130 * 100 * sizeof(float));

	fill(x, 130 * 100, 60);
	for (size_t b = 0; b < sizeof(batches) / sizeof(batches[0]); b++) {
		int n = batches[b];
		float *d = forward_copy(m, "0", x, n), *s = forward_copy(m, "1", x, n);
		float *a = forward_copy(m, "auto", x, n);
		char what[64];

		snprintf(what, sizeof(what), "batch %d, forced", n);
		assert_close(s, d, (size_t)n * 37, what);
		snprintf(what, sizeof(what), "batch %d, auto", n);
		assert_close(a, d, (size_t)n * 37, what);
		free(d);
		free(s);
		free(a);
	}
	free(x);
	mc_model_free(m);
}
END_TEST

/* Weights written in place after the CSR copy was made must be seen. */
START_TEST(sparse_linear_sees_new_weights)
{
	struct mc_model *m = sparse_linear(64, 20);
	float *w = mc_model_node(m, 0)->params[0]->data, *x = malloc(40 * 64 * sizeof(float));
	float *s0, *s1, *d1;

	fill(x, 40 * 64, 61);
	s0 = forward_copy(m, "1", x, 40);
	for (int i = 0; i < 64; i++)
		w[5 * 64 + i] = w[5 * 64 + i] == 0.0f ? 0.0f : 2.0f * w[5 * 64 + i];
	w[3] = 0.5f; /* a zero becomes a weight */
	s1 = forward_copy(m, "1", x, 40);
	d1 = forward_copy(m, "0", x, 40);
	assert_close(s1, d1, 40 * 20, "after the weights changed");
	ck_assert(memcmp(s0, s1, 40 * 20 * sizeof(float)));
	free(s0);
	free(s1);
	free(d1);
	free(x);
	mc_model_free(m);
}
END_TEST

START_TEST(sparse_linear_is_thread_count_independent)
{
	struct mc_model *m = sparse_linear(300, 150);
	float *x = malloc(83 * 300 * sizeof(float)), *ref;

	fill(x, 83 * 300, 62);
	omp_set_num_threads(1);
	ref = forward_copy(m, "1", x, 83);
	for (int t = 2; t <= 3; t++) {
		float *got;

		omp_set_num_threads(t);
		got = forward_copy(m, "1", x, 83);
		ck_assert_msg(!memcmp(ref, got, 83 * 150 * sizeof(float)),
			      "sparse forward differs with %d threads", t);
		free(got);
	}
	omp_set_num_threads(omp_get_num_procs());
	free(ref);
	free(x);
	mc_model_free(m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("ops");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, conv2d_matches_direct_loop);
	tcase_add_test(tc, conv2d_chunks_match_single_samples);
	tcase_add_test(tc, pooling_by_hand);
	tcase_add_test(tc, maxpool2_routes_gradients);
	tcase_add_test(tc, maxpool2_relu_backward_fused);
	tcase_add_test(tc, maxpool2_nan_and_zeros);
	tcase_add_test(tc, argmax_first_of_equal);
	tcase_add_test(tc, time_median_counts_runs);
	tcase_add_test(tc, bad_shapes_are_refused);
	tcase_add_test(tc, batchnorm_running_statistics);
	tcase_add_test(tc, batchnorm_is_not_trained);
	tcase_add_test(tc, batchnorm_folds);
	tcase_add_test(tc, dropout_masks);
	tcase_add_test(tc, softmax_rows);
	tcase_add_test(tc, resnet_from_yaml);
	tcase_add_test(tc, cnn_step_is_thread_count_independent);
	tcase_add_test(tc, cnn_training_is_thread_count_independent);
	tcase_add_test(tc, inference_fusions_keep_bytes);
	tcase_add_test(tc, sparse_linear_matches_dense);
	tcase_add_test(tc, sparse_linear_sees_new_weights);
	tcase_add_test(tc, sparse_linear_is_thread_count_independent);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
