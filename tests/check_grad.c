/* SPDX-License-Identifier: MIT */
/*
 * check_grad.c - every op's backward, and the cross-entropy, against central
 * finite differences.
 *
 * The objective is L = sum(out * R) for a fixed random R (so dL/dout = R),
 * or the mean cross-entropy. Ops are float, so the tolerance is what float
 * rounding of the forward allows with the step used: |num - ana| <= TOL_ABS
 * + TOL_REL * |ana|. Inputs of relu stay at least 0.05 away from its kink,
 * so a step never crosses it.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/model.h>

#define TOL_ABS 2e-3
#define TOL_REL 1e-2
#define BATCH 3

/* Values in +-[0.05, 1): far from relu's kink at 0. */
static void fill(float *x, size_t n, uint64_t stream)
{
	for (size_t i = 0; i < n; i++) {
		float u = mc_rand_uniform(11, stream, i);

		x[i] = (u < 0.5f ? -1.0f : 1.0f) * (0.05f + 0.95f * fabsf(2.0f * u - 1.0f));
	}
}

static double dot(const float *a, const float *b, size_t n)
{
	double s = 0;

	for (size_t i = 0; i < n; i++)
		s += (double)a[i] * b[i];
	return s;
}

static void assert_close(double num, double ana, const char *what, size_t i)
{
	ck_assert_msg(fabs(num - ana) <= TOL_ABS + TOL_REL * fabs(ana),
		      "%s[%zu]: finite difference %.6g, backward %.6g", what, i, num, ana);
}

static struct mc_model *build(const char *json)
{
	struct mc_err err = { 0 };
	struct mc_model *m = mc_model_from_arch(json, "test", &err);

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 3);
	return m;
}

/* Distinct values spaced 0.05 apart in [-1, 1): no two tie under max pooling. */
static void fill_distinct(float *x, size_t n, uint64_t stream)
{
	for (size_t i = 0; i < n; i++)
		x[i] = -1.0f + 0.05f * (float)((i * 17 + stream * 5) % 40) +
		       0.001f * (float)((i * 7) % 11);
}

/*
 * The last node's op (a one-node model's only one): parameter gradients from
 * mc_backward, input gradients from the op's own backward, both against
 * finite differences of sum(out * R). Each input of the op is filled
 * separately, of the shape of what it reads (two inputs of the model input
 * get two separate inputs of its shape). distinct fills inputs without near
 * ties.
 */
static void check_op_fill(const char *json, double step, int distinct)
{
	struct mc_err err = { 0 };
	struct mc_model *m = build(json);
	int last = mc_model_n_nodes(m) - 1;
	const struct mc_node *nd = mc_model_node(m, last);
	struct mc_exec *e = mc_exec_new(m, BATCH, 1, &err);
	int nin = nd->n_inputs;
	size_t in_ns[MC_NODE_MAX_INPUTS], out_n = (size_t)BATCH * nd->out_numel;
	float *x[MC_NODE_MAX_INPUTS], *dx[MC_NODE_MAX_INPUTS], *r = malloc(out_n * sizeof(float));
	float *out = malloc(out_n * sizeof(float));
	const float *in[MC_NODE_MAX_INPUTS];
	float *grads[MC_NODE_MAX_PARAMS] = { 0 };
	struct mc_run run = { .training = 1, .seed = 5, .step = 3 };

	ck_assert_ptr_nonnull(e);
	ck_assert_int_le(nin, MC_NODE_MAX_INPUTS);
	for (int k = 0; k < nin; k++) {
		size_t in_n = (size_t)BATCH * (nd->inputs[k] == MC_NODE_INPUT
						   ? mc_model_in_numel(m)
						   : mc_model_node(m, nd->inputs[k])->out_numel);

		in_ns[k] = in_n;
		x[k] = malloc(in_n * sizeof(float));
		dx[k] = malloc(in_n * sizeof(float));
		if (distinct)
			fill_distinct(x[k], in_n, 1 + (uint64_t)k);
		else
			fill(x[k], in_n, 1 + 10 * (uint64_t)k);
		in[k] = x[k];
	}
	fill(r, out_n, 2);
	/* a workspace as the executor would give */
	run.work = nd->op->workspace ? malloc(nd->op->workspace(nd, BATCH)) : NULL;
	if (nin == 1 && last == 0) {
		mc_forward(e, x[0], BATCH);
		mc_exec_zero_grad(e);
		mc_backward(e, r);
	}

	for (int p = 0; nin == 1 && last == 0 && p < nd->n_params; p++) {
		struct mc_tensor *t = nd->params[p];
		float *w = t->data, *g = mc_exec_grad(e, 0, p);

		ck_assert_ptr_nonnull(g);
		for (int64_t i = 0; i < t->numel; i++) {
			float keep = w[i];
			double lp, lm;

			w[i] = keep + (float)step;
			lp = dot(mc_forward(e, x[0], BATCH), r, out_n);
			w[i] = keep - (float)step;
			lm = dot(mc_forward(e, x[0], BATCH), r, out_n);
			w[i] = keep;
			assert_close((lp - lm) / (2 * step), g[i], t->name, (size_t)i);
		}
	}

	/* input gradients: the op's backward with din */
	for (int p = 0; p < nd->n_params; p++)
		grads[p] = calloc((size_t)nd->params[p]->numel, sizeof(float));
	nd->op->forward(nd, &run, BATCH, in, out);
	nd->op->backward(nd, &run, BATCH, in, out, r, dx, grads);
	for (int k = 0; k < nin; k++)
		for (size_t i = 0; i < in_ns[k]; i++) {
			float keep = x[k][i];
			double lp, lm;

			x[k][i] = keep + (float)step;
			nd->op->forward(nd, &run, BATCH, in, out);
			lp = dot(out, r, out_n);
			x[k][i] = keep - (float)step;
			nd->op->forward(nd, &run, BATCH, in, out);
			lm = dot(out, r, out_n);
			x[k][i] = keep;
			assert_close((lp - lm) / (2 * step), dx[k][i], nd->op->name, i);
		}
	/* the op's backward adds to parameter gradients: same as the executor's */
	for (int p = 0; p < nd->n_params; p++) {
		const float *g = mc_exec_grad(e, 0, p);

		for (int64_t i = 0; last == 0 && i < nd->params[p]->numel; i++)
			ck_assert_msg(grads[p][i] == g[i], "%s[%lld]: %g by the op, %g by the executor",
				      nd->params[p]->name, (long long)i, grads[p][i], g[i]);
		free(grads[p]);
	}
	for (int k = 0; k < nin; k++) {
		free(dx[k]);
		free(x[k]);
	}
	free(run.work);
	free(out);
	free(r);
	mc_exec_free(e);
	mc_model_free(m);
}

static void check_op(const char *json, double step)
{
	check_op_fill(json, step, 0);
}

START_TEST(op_conv2d)
{
	/* stride, padding, a non-square input */
	check_op("{\"format\":1,\"input\":[2,6,5],\"nodes\":[{\"name\":\"c\",\"op\":\"conv2d\","
		 "\"attrs\":{\"out\":3,\"kernel\":3,\"stride\":2,\"padding\":1}}]}",
		 1e-2);
	/* groups, and the default stride 1 without padding */
	check_op("{\"format\":1,\"input\":[4,4,4],\"nodes\":[{\"op\":\"conv2d\","
		 "\"attrs\":{\"out\":6,\"kernel\":2,\"groups\":2}}]}",
		 1e-2);
	/* depthwise: groups == in channels */
	check_op("{\"format\":1,\"input\":[3,5,5],\"nodes\":[{\"op\":\"conv2d\","
		 "\"attrs\":{\"out\":3,\"groups\":3,\"padding\":1}}]}",
		 1e-2);
	/* 16 channels over 36 positions: whole 16 x 16 blocks of the transposes
	 * (the SIMD path) beside a partial one */
	check_op("{\"format\":1,\"input\":[2,6,6],\"nodes\":[{\"op\":\"conv2d\","
		 "\"attrs\":{\"out\":16,\"padding\":1}}]}",
		 1e-2);
	/* no bias: the weight alone */
	check_op("{\"format\":1,\"input\":[2,6,5],\"nodes\":[{\"name\":\"c\",\"op\":\"conv2d\","
		 "\"attrs\":{\"out\":3,\"padding\":1,\"bias\":false}}]}",
		 1e-2);
}
END_TEST

START_TEST(op_maxpool2d)
{
	check_op_fill("{\"format\":1,\"input\":[2,5,4],\"nodes\":[{\"op\":\"maxpool2d\","
		      "\"attrs\":{\"kernel\":2}}]}",
		      1e-3, 1);
	/* overlapping windows with padding: a value can win two windows */
	check_op_fill("{\"format\":1,\"input\":[1,5,5],\"nodes\":[{\"op\":\"maxpool2d\","
		      "\"attrs\":{\"kernel\":3,\"stride\":2,\"padding\":1}}]}",
		      1e-3, 1);
}
END_TEST

START_TEST(op_avgpool2d)
{
	check_op("{\"format\":1,\"input\":[2,4,6],\"nodes\":[{\"op\":\"avgpool2d\","
		 "\"attrs\":{\"kernel\":2}}]}",
		 1e-2);
	check_op("{\"format\":1,\"input\":[1,5,5],\"nodes\":[{\"op\":\"avgpool2d\","
		 "\"attrs\":{\"kernel\":3,\"stride\":2,\"padding\":1}}]}",
		 1e-2);
}
END_TEST

START_TEST(op_pad2d)
{
	/* uneven sides; the padding's gradient is dropped */
	check_op("{\"format\":1,\"input\":[2,3,4],\"nodes\":[{\"op\":\"pad2d\","
		 "\"attrs\":{\"top\":1,\"left\":0,\"bottom\":2,\"right\":3}}]}",
		 1e-2);
}
END_TEST

START_TEST(op_global_avgpool)
{
	check_op("{\"format\":1,\"input\":[3,2,3],\"nodes\":[{\"op\":\"global_avgpool\"}]}",
		 1e-2);
}
END_TEST

START_TEST(op_batchnorm)
{
	/* over channels of [C, H, W], and over features of [F] (training statistics) */
	check_op("{\"format\":1,\"input\":[2,3,2],\"nodes\":[{\"name\":\"bn\",\"op\":\"batchnorm\"}]}",
		 1e-3);
	check_op("{\"format\":1,\"input\":[4],\"nodes\":[{\"name\":\"bn\",\"op\":\"batchnorm\"}]}",
		 1e-3);
}
END_TEST

START_TEST(op_batchnorm_inference)
{
	/* Inference uses the running statistics: an affine map per channel,
	 * whose input gradient is checked here with run.training = 0. */
	struct mc_model *m = build("{\"format\":1,\"input\":[2,3],\"nodes\":[{\"op\":\"batchnorm\"}]}");
	const struct mc_node *nd = mc_model_node(m, 0);
	float x[BATCH * 6], y[BATCH * 6], r[BATCH * 6], dx[BATCH * 6], *g[4] = { 0 };
	const float *in[1] = { x };
	float *din[1] = { dx };
	struct mc_run run = { .training = 0 };
	float *rm = nd->params[2]->data, *rv = nd->params[3]->data, *w = nd->params[0]->data;

	ck_assert_int_eq(nd->n_buffers, 2);
	rm[0] = 0.5f;
	rm[1] = -0.25f;
	rv[0] = 4.0f;
	rv[1] = 0.25f;
	w[1] = 2.0f;
	fill(x, BATCH * 6, 8);
	fill(r, BATCH * 6, 9);
	nd->op->forward(nd, &run, BATCH, in, y);
	/* by hand: channel 1 = (x + 0.25) / sqrt(0.25 + 1e-5) * 2 */
	ck_assert_double_eq_tol(y[3], (x[3] + 0.25) / sqrt(0.25 + 1e-5) * 2, 1e-5);
	ck_assert_double_eq_tol(y[0], (x[0] - 0.5) / sqrt(4 + 1e-5), 1e-6);
	nd->op->backward(nd, &run, BATCH, in, y, r, din, g);
	for (int i = 0; i < BATCH * 6; i++) {
		int c = (i % 6) / 3;

		ck_assert_double_eq_tol(dx[i], r[i] * w[c] / sqrt(rv[c] + 1e-5), 1e-5);
	}
	mc_model_free(m);
}
END_TEST

START_TEST(op_dropout)
{
	/* the op with a fixed run: the mask is a function of (seed, step, index) */
	check_op("{\"format\":1,\"input\":[2,9],\"nodes\":[{\"name\":\"d\",\"op\":\"dropout\","
		 "\"attrs\":{\"p\":0.3}}]}",
		 1e-2);
}
END_TEST

START_TEST(op_add)
{
	check_op("{\"format\":1,\"input\":[2,3],\"nodes\":[{\"op\":\"add\","
		 "\"inputs\":[\"input\",\"input\"]}]}",
		 1e-2);
}
END_TEST

/* channels of [C, H, W] from three inputs of 3, 2 and 3 channels (the model
 * input twice), and features of [F] from two */
START_TEST(op_concat)
{
	check_op("{\"format\":1,\"input\":[3,2,3],\"nodes\":[{\"name\":\"c\",\"op\":\"conv2d\","
		 "\"attrs\":{\"out\":2,\"padding\":1}},{\"op\":\"concat\","
		 "\"inputs\":[\"input\",\"c\",\"input\"]}]}",
		 1e-2);
	check_op("{\"format\":1,\"input\":[5],\"nodes\":[{\"name\":\"l\",\"op\":\"linear\","
		 "\"attrs\":{\"out\":2}},{\"op\":\"concat\",\"inputs\":[\"l\",\"input\"]}]}",
		 1e-2);
}
END_TEST

START_TEST(op_softmax)
{
	check_op("{\"format\":1,\"input\":[2,5],\"nodes\":[{\"op\":\"softmax\"}]}", 1e-3);
}
END_TEST

START_TEST(op_log_softmax)
{
	check_op("{\"format\":1,\"input\":[2,5],\"nodes\":[{\"op\":\"log_softmax\"}]}", 1e-3);
}
END_TEST

START_TEST(op_linear)
{
	check_op("{\"format\":1,\"input\":[5],\"nodes\":[{\"name\":\"fc\",\"op\":\"linear\","
		 "\"inputs\":[\"input\"],\"attrs\":{\"out\":4}}]}",
		 1e-2);
	check_op("{\"format\":1,\"input\":[5],\"nodes\":[{\"name\":\"fc\",\"op\":\"linear\","
		 "\"inputs\":[\"input\"],\"attrs\":{\"out\":4,\"bias\":false}}]}",
		 1e-2);
}
END_TEST

START_TEST(op_relu)
{
	check_op("{\"format\":1,\"input\":[2,7],\"nodes\":[{\"op\":\"relu\"}]}", 1e-2);
}
END_TEST

START_TEST(op_flatten)
{
	check_op("{\"format\":1,\"input\":[2,3,4],\"nodes\":[{\"op\":\"flatten\"}]}", 1e-2);
}
END_TEST

START_TEST(op_leaky_relu)
{
	check_op("{\"format\":1,\"input\":[2,7],\"nodes\":[{\"op\":\"leaky_relu\"}]}", 1e-2);
	check_op("{\"format\":1,\"input\":[2,7],\"nodes\":[{\"op\":\"leaky_relu\","
		 "\"attrs\":{\"alpha\":0.3}}]}",
		 1e-2);
}
END_TEST

START_TEST(op_sigmoid)
{
	check_op("{\"format\":1,\"input\":[2,7],\"nodes\":[{\"op\":\"sigmoid\"}]}", 1e-3);
}
END_TEST

/* Values of fill_distinct stay 0.015 away from -0.525 and 0.475: both bounds
 * of clip (and both ends of hardsigmoid, alpha 1) fall between them. */
START_TEST(op_clip)
{
	check_op_fill("{\"format\":1,\"input\":[2,7],\"nodes\":[{\"op\":\"clip\","
		      "\"attrs\":{\"min\":-0.525,\"max\":0.475}}]}",
		      1e-3, 1);
	/* no bounds: the identity */
	check_op("{\"format\":1,\"input\":[2,7],\"nodes\":[{\"op\":\"clip\"}]}", 1e-2);
}
END_TEST

START_TEST(op_relu6)
{
	check_op("{\"format\":1,\"input\":[2,7],\"nodes\":[{\"op\":\"relu6\"}]}", 1e-2);
}
END_TEST

START_TEST(op_hardsigmoid)
{
	check_op_fill("{\"format\":1,\"input\":[2,7],\"nodes\":[{\"op\":\"hardsigmoid\","
		      "\"attrs\":{\"alpha\":1,\"beta\":0.525}}]}",
		      1e-3, 1);
	check_op("{\"format\":1,\"input\":[2,7],\"nodes\":[{\"op\":\"hardsigmoid\"}]}", 1e-2);
}
END_TEST

START_TEST(op_hardswish)
{
	check_op("{\"format\":1,\"input\":[2,7],\"nodes\":[{\"op\":\"hardswish\"}]}", 1e-2);
}
END_TEST

/*
 * Where finite differences of values in [-1, 1) do not reach: relu6 and
 * clip's upper bound, hardswish's and hardsigmoid's flat ends, by hand.
 */
START_TEST(act_saturation)
{
	static const struct {
		const char *op;
		float y[8], dy[8]; /* at x of xs, with dout = 1 */
	} want[] = {
	    {"relu6", {0, 0, 0, 0, 0.5f, 3, 4, 6}, {0, 0, 0, 0, 1, 1, 1, 0}},
	    {"hardswish",
	     {0, 0, -1.0f / 3, 0, 0.5f * (0.5f / 6 + 0.5f), 3, 4, 7},
	     {0, 0, 1.0f / 6, 0.5f, 0.5f / 3 + 0.5f, 1, 1, 1}},
	    {"hardsigmoid", {0, 0, 0.3f, 0.5f, 0.6f, 1, 1, 1}, {0, 0, 0.2f, 0.2f, 0.2f, 0, 0, 0}},
	    {"leaky_relu",
	     {-0.04f, -0.03f, -0.01f, 0, 0.5f, 3, 4, 7},
	     {0.01f, 0.01f, 0.01f, 0.01f, 1, 1, 1, 1}},
	};
	static const float xs[8] = {-4, -3, -1, 0, 0.5f, 3, 4, 7},
			   ones[8] = {1, 1, 1, 1, 1, 1, 1, 1};

	for (size_t c = 0; c < sizeof(want) / sizeof(want[0]); c++) {
		char json[200];
		struct mc_model *m;
		const struct mc_node *nd;
		float y[8], dx[8], *din[1] = { dx }, *grads[1] = { 0 };
		const float *in[1] = { xs };
		struct mc_run run = { 0 };

		snprintf(json, sizeof(json),
			 "{\"format\":1,\"input\":[8],\"nodes\":[{\"op\":\"%s\"}]}", want[c].op);
		m = build(json);
		nd = mc_model_node(m, 0);
		nd->op->forward(nd, &run, 1, in, y);
		nd->op->backward(nd, &run, 1, in, y, ones, din, grads);
		for (int i = 0; i < 8; i++) {
			ck_assert_msg(fabsf(y[i] - want[c].y[i]) <= 1e-6f, "%s(%g) = %g, wanted %g",
				      want[c].op, xs[i], y[i], want[c].y[i]);
			ck_assert_msg(fabsf(dx[i] - want[c].dy[i]) <= 1e-6f,
				      "%s'(%g) = %g, wanted %g", want[c].op, xs[i], dx[i],
				      want[c].dy[i]);
		}
		mc_model_free(m);
	}
}
END_TEST

/* a * b of one shape, and of one value per channel: b [C] (a global
 * average) and b [C, 1, 1] (an average pool over the whole image). */
START_TEST(op_mul)
{
	struct mc_err err = { 0 };

	check_op("{\"format\":1,\"input\":[2,3],\"nodes\":[{\"op\":\"mul\","
		 "\"inputs\":[\"input\",\"input\"]}]}",
		 1e-2);
	check_op("{\"format\":1,\"input\":[3,2,2],\"nodes\":[{\"name\":\"g\",\"op\":"
		 "\"global_avgpool\"},{\"op\":\"mul\",\"inputs\":[\"input\",\"g\"]}]}",
		 1e-2);
	check_op("{\"format\":1,\"input\":[3,2,2],\"nodes\":[{\"name\":\"p\",\"op\":"
		 "\"avgpool2d\",\"attrs\":{\"kernel\":2}},{\"op\":\"mul\",\"inputs\":[\"input\","
		 "\"p\"]}]}",
		 1e-2);
	/* anything else is refused with both shapes */
	ck_assert_ptr_null(mc_model_from_arch(
	    "{\"format\":1,\"input\":[3,2,2],\"nodes\":[{\"name\":\"g\",\"op\":\"global_avgpool\"},"
	    "{\"name\":\"f\",\"op\":\"flatten\",\"inputs\":[\"input\"]},"
	    "{\"op\":\"mul\",\"inputs\":[\"f\",\"g\"]}]}",
	    "test", &err));
	ck_assert_msg(strstr(err.msg, "got a [12] and b [3]"), "%s", err.msg);
	ck_assert_ptr_null(mc_model_from_arch(
	    "{\"format\":1,\"input\":[3,2,2],\"nodes\":[{\"name\":\"g\",\"op\":\"global_avgpool\"},"
	    "{\"op\":\"mul\",\"inputs\":[\"g\",\"input\"]}]}",
	    "test", &err));
	ck_assert_msg(strstr(err.msg, "got a [3] and b [3, 2, 2]"), "%s", err.msg);
}
END_TEST

/*
 * qlinear rounds its input to 8 bits, so its forward is a step function and
 * finite differences say nothing; its backward is the straight-through
 * estimate din = dout * dequantized W, checked here against that product
 * written out for int8 per-channel weights.
 */
START_TEST(op_qlinear_straight_through)
{
	struct mc_model *m = build("{\"format\":1,\"input\":[5],\"nodes\":[{\"op\":\"qlinear\","
				   "\"attrs\":{\"out\":3,\"bits\":8,\"mode\":\"dynamic\"}}]}");
	const struct mc_node *nd = mc_model_node(m, 0);
	int8_t *w = nd->params[0]->data;
	float *scale = nd->params[1]->data;
	float x[2 * 5], dout[2 * 3], dx[2 * 5], out[2 * 3];
	const float *in[1] = { x };
	float *din[1] = { dx };
	float *grads[MC_NODE_MAX_PARAMS] = { 0 };
	struct mc_run run = { .training = 1 };

	ck_assert_int_eq(nd->params[0]->dtype, MC_S8);
	for (int i = 0; i < 15; i++)
		w[i] = (int8_t)(i * 37 % 255 - 127);
	for (int o = 0; o < 3; o++)
		scale[o] = 0.01f * (o + 1);
	fill(x, 10, 3);
	fill(dout, 6, 4);
	nd->op->forward(nd, &run, 2, in, out);
	nd->op->backward(nd, &run, 2, in, out, dout, din, grads);
	for (int s = 0; s < 2; s++)
		for (int i = 0; i < 5; i++) {
			double want = 0;

			for (int o = 0; o < 3; o++)
				want += (double)dout[s * 3 + o] * w[o * 5 + i] * scale[o];
			ck_assert_double_eq_tol(dx[s * 5 + i], want, 1e-5);
		}
	mc_model_free(m);
}
END_TEST

/*
 * qconv2d's backward is straight through as well: din is the transposed
 * convolution of dout with the dequantized weights, checked here against
 * that sum written out (padding 1, stride 2, per-channel scales).
 */
START_TEST(op_qconv2d_straight_through)
{
	struct mc_model *m = build("{\"format\":1,\"input\":[2,5,5],\"nodes\":[{\"op\":\"qconv2d\","
				   "\"attrs\":{\"out\":3,\"kernel\":3,\"stride\":2,\"padding\":1,"
				   "\"mode\":\"dynamic\"}}]}");
	const struct mc_node *nd = mc_model_node(m, 0);
	int8_t *w = nd->params[0]->data;
	float *scale = nd->params[1]->data;
	float x[2 * 50], dout[2 * 27], dx[2 * 50], out[2 * 27];
	const float *in[1] = { x };
	float *din[1] = { dx };
	float *grads[MC_NODE_MAX_PARAMS] = { 0 };
	struct mc_run run = { .training = 1 };

	ck_assert_int_eq(nd->params[0]->dtype, MC_S8);
	ck_assert_int_eq(nd->out_shape[1], 3);
	for (int i = 0; i < 54; i++)
		w[i] = (int8_t)(i * 37 % 255 - 127);
	for (int o = 0; o < 3; o++)
		scale[o] = 0.01f * (o + 1);
	fill(x, 100, 3);
	fill(dout, 54, 4);
	run.work = malloc(nd->op->workspace(nd, 2));
	ck_assert_ptr_nonnull(run.work);
	nd->op->forward(nd, &run, 2, in, out);
	for (int i = 0; i < 54; i++)
		ck_assert(isfinite(out[i]));
	nd->op->backward(nd, &run, 2, in, out, dout, din, grads);
	for (int s = 0; s < 2; s++)
		for (int c = 0; c < 2; c++)
			for (int h = 0; h < 5; h++)
				for (int v = 0; v < 5; v++) {
					double want = 0;

					for (int o = 0; o < 3; o++)
						for (int oh = 0; oh < 3; oh++)
							for (int ow = 0; ow < 3; ow++) {
								int ki = h - (oh * 2 - 1), kj = v - (ow * 2 - 1);

								if (ki < 0 || ki > 2 || kj < 0 || kj > 2)
									continue;
								want += (double)dout[s * 27 + o * 9 + oh * 3 + ow] *
									w[((o * 2 + c) * 3 + ki) * 3 + kj] * scale[o];
							}
					ck_assert_double_eq_tol(dx[s * 50 + c * 25 + h * 5 + v], want, 1e-5);
				}
	free(run.work);
	mc_model_free(m);
}
END_TEST

/*
 * A grouped qconv2d with relu6 fused: din is the transposed grouped
 * convolution of dout, masked where the output is clamped (<= 0 or >= 6),
 * with the dequantized weights, written out here (2 groups of 2 channels).
 */
START_TEST(op_qconv2d_grouped_straight_through)
{
	struct mc_model *m = build("{\"format\":1,\"input\":[4,5,5],\"nodes\":[{\"op\":\"qconv2d\","
				   "\"attrs\":{\"out\":4,\"kernel\":3,\"stride\":1,\"padding\":1,"
				   "\"groups\":2,\"relu6\":true,\"mode\":\"dynamic\"}}]}");
	const struct mc_node *nd = mc_model_node(m, 0);
	int8_t *w = nd->params[0]->data;
	float *scale = nd->params[1]->data;
	float x[2 * 100], dout[2 * 100], dx[2 * 100], out[2 * 100];
	const float *in[1] = { x };
	float *din[1] = { dx };
	float *grads[MC_NODE_MAX_PARAMS] = { 0 };
	struct mc_run run = { .training = 1 };
	int clamped = 0, passed = 0;

	ck_assert_int_eq(nd->params[0]->shape[1], 2);
	for (int i = 0; i < 72; i++)
		w[i] = (int8_t)(i * 37 % 255 - 127);
	for (int o = 0; o < 4; o++)
		scale[o] = 0.03f * (o + 1);
	fill(x, 200, 3);
	for (int i = 0; i < 200; i++)
		x[i] *= 4.0f;
	fill(dout, 200, 4);
	run.work = malloc(nd->op->workspace(nd, 2));
	ck_assert_ptr_nonnull(run.work);
	nd->op->forward(nd, &run, 2, in, out);
	nd->op->backward(nd, &run, 2, in, out, dout, din, grads);
	for (int i = 0; i < 200; i++) {
		ck_assert(out[i] >= 0.0f && out[i] <= 6.0f);
		clamped += out[i] <= 0.0f || out[i] >= 6.0f;
	}
	passed = 200 - clamped;
	ck_assert_int_gt(clamped, 0);
	ck_assert_int_gt(passed, 0);
	for (int s = 0; s < 2; s++)
		for (int c = 0; c < 4; c++)
			for (int h = 0; h < 5; h++)
				for (int v = 0; v < 5; v++) {
					double want = 0;

					for (int o = c / 2 * 2; o < c / 2 * 2 + 2; o++)
						for (int oh = 0; oh < 5; oh++)
							for (int ow = 0; ow < 5; ow++) {
								int ki = h - (oh - 1), kj = v - (ow - 1);
								int at = s * 100 + o * 25 + oh * 5 + ow;

								if (ki < 0 || ki > 2 || kj < 0 || kj > 2 ||
								    out[at] <= 0.0f || out[at] >= 6.0f)
									continue;
								want += (double)dout[at] *
									w[((o * 2 + c % 2) * 3 + ki) * 3 + kj] * scale[o];
							}
					ck_assert_double_eq_tol(dx[s * 100 + c * 25 + h * 5 + v], want, 1e-5);
				}
	free(run.work);
	mc_model_free(m);
}
END_TEST

/* qadd and qglobal_avgpool pass gradients straight through: as add's and global_avgpool's. */
START_TEST(op_qadd_qgap_straight_through)
{
	struct mc_model *m = build("{\"format\":1,\"input\":[2,3,3],\"nodes\":["
				   "{\"op\":\"qadd\",\"name\":\"a\",\"inputs\":[\"input\",\"input\"]},"
				   "{\"op\":\"qglobal_avgpool\",\"name\":\"p\",\"inputs\":[\"a\"]}]}");
	const struct mc_node *add = mc_model_node(m, 0), *gap = mc_model_node(m, 1);
	float x[2 * 18], dout[2 * 18], da[2 * 18], db[2 * 18], out[2 * 18], gout[4], dg[4];
	const float *in[2] = { x, x };
	float *din[2] = { da, db }, *gin[1] = { da };
	float *grads[MC_NODE_MAX_PARAMS] = { 0 };
	struct mc_run run = { .training = 1 };

	fill(x, 36, 3);
	fill(dout, 36, 4);
	fill(dg, 4, 5);
	memset(out, 0, sizeof(out));
	memset(gout, 0, sizeof(gout));
	add->op->backward(add, &run, 2, in, out, dout, din, grads);
	ck_assert(memcmp(da, dout, sizeof(da)) == 0);
	ck_assert(memcmp(db, dout, sizeof(db)) == 0);
	gap->op->backward(gap, &run, 2, in, gout, dg, gin, grads);
	for (int i = 0; i < 36; i++)
		ck_assert_float_eq(da[i], dg[i / 9] / 9.0f);
	mc_model_free(m);
}
END_TEST

/*
 * fake_quant rounds to a u8 grid as well: its backward is straight through
 * where the clamp does not act and 0 where it does, checked here on values
 * on both sides of the range [-0.25, 0.75]; with learn the range's gradient
 * is finite differences where every value is clamped (tests/check_qat.c
 * checks it further, and the forward against the u8 quantizer).
 */
START_TEST(op_fake_quant_straight_through)
{
	struct mc_model *m = build("{\"format\":1,\"input\":[6],\"nodes\":[{\"op\":"
				   "\"fake_quant\",\"attrs\":{\"learn\":true}}]}");
	const struct mc_node *nd = mc_model_node(m, 0);
	float *r = nd->params[0]->data, x[2 * 6], dout[2 * 6], dx[2 * 6], out[2 * 6], g[2] = { 0 };
	const float *in[1] = { x };
	float *din[1] = { dx }, *grads[MC_NODE_MAX_PARAMS] = { g };
	struct mc_run run = { .training = 1 };
	double up = 0, down = 0, h = 1e-3;

	r[0] = -0.25f; /* z = 64 for hi within 0.75 +- h: no jump */
	r[1] = 0.75f;
	fill(x, 12, 5);
	fill(dout, 12, 6);
	run.work = malloc(nd->op->workspace(nd, 2));
	ck_assert_ptr_nonnull(run.work);
	nd->op->forward(nd, &run, 2, in, out);
	nd->op->backward(nd, &run, 2, in, out, dout, din, grads);
	for (int i = 0; i < 12; i++)
		if (x[i] > -0.24f && x[i] < 0.74f)
			ck_assert_float_eq(dx[i], dout[i]);
		else if (x[i] < -0.26f || x[i] > 0.76f)
			ck_assert_float_eq(dx[i], 0.0f);
	/* all above the range: y = hi_e, differentiable in hi */
	for (int i = 0; i < 12; i++)
		x[i] = 1.0f + fabsf(x[i]);
	g[0] = g[1] = 0;
	nd->op->backward(nd, &run, 2, in, out, dout, din, grads);
	r[1] = (float)(0.75 + h);
	nd->op->forward(nd, &run, 2, in, out);
	up = dot(out, dout, 12);
	r[1] = (float)(0.75 - h);
	nd->op->forward(nd, &run, 2, in, out);
	down = dot(out, dout, 12);
	ck_assert_double_eq_tol(g[1], (up - down) / ((float)(0.75 + h) - (float)(0.75 - h)), 1e-3);
	free(run.work);
	mc_model_free(m);
}
END_TEST

START_TEST(every_op_is_checked)
{
	/* A new op needs a check above: this fails until it has one. */
	static const char *const checked[] = {
		"add",	       "avgpool2d",  "batchnorm",   "clip",	"conv2d",
		"dropout",     "flatten",    "global_avgpool", "hardsigmoid", "hardswish",
		"leaky_relu",  "linear",     "log_softmax", "maxpool2d",   "mul",
		"pad2d",       "qconv2d",     "qlinear",    "relu",	    "relu6",	   "sigmoid",
		"softmax",     "concat",      "fake_quant", "qadd",        "qglobal_avgpool", NULL,
	};
	const char *const *names = mc_op_names();
	int n = 0;

	for (; names[n]; n++) {
		int found = 0;

		for (int k = 0; checked[k]; k++)
			found |= !strcmp(checked[k], names[n]);
		ck_assert_msg(found, "op %s has no gradient check", names[n]);
		/* the op of that name: equal strings, not one pointer (identical
		 * literals need not be merged; under ASan they are not) */
		ck_assert_ptr_nonnull(mc_op_find(names[n]));
		ck_assert_str_eq(mc_op_find(names[n])->name, names[n]);
	}
	ck_assert_int_eq(n, 26);
}
END_TEST

START_TEST(softmax_xent)
{
	float z[2 * 3] = { 0.5f, -1.0f, 2.0f, 0.0f, 0.0f, 0.0f }, d[6];
	uint8_t y[2] = { 2, 1 };
	double loss, ref;

	/* by hand: row 0 lse(0.5, -1, 2) - 2, row 1 ln 3 */
	ref = (log(exp(0.5) + exp(-1.0) + exp(2.0)) - 2.0 + log(3.0)) / 2;
	loss = mc_softmax_xent(z, y, 2, 3, d);
	ck_assert_double_eq_tol(loss, ref, 1e-6);
	for (int i = 0; i < 6; i++) {
		float keep = z[i];
		double lp, lm;

		z[i] = keep + 1e-2f;
		lp = mc_softmax_xent(z, y, 2, 3, NULL);
		z[i] = keep - 1e-2f;
		lm = mc_softmax_xent(z, y, 2, 3, NULL);
		z[i] = keep;
		assert_close((lp - lm) / 2e-2, d[i], "dlogits", (size_t)i);
	}
	/* rows of dlogits sum to zero; large logits stay finite */
	ck_assert_double_eq_tol(d[3] + d[4] + d[5], 0.0, 1e-7);
	z[0] = 1000.0f;
	ck_assert(isfinite(mc_softmax_xent(z, y, 2, 3, d)));
}
END_TEST

/* Every parameter of a model against finite differences of the mean cross-entropy. */
static void check_model_xent(const char *json, double step)
{
	struct mc_err err = { 0 };
	struct mc_model *m = build(json);
	struct mc_exec *e = mc_exec_new(m, BATCH, 1, &err);
	int k = (int)mc_model_n_classes(m);
	float *x = malloc((size_t)BATCH * mc_model_in_numel(m) * sizeof(float));
	float *dl = malloc((size_t)BATCH * k * sizeof(float));
	uint8_t y[BATCH];

	ck_assert_ptr_nonnull(e);
	fill(x, (size_t)BATCH * mc_model_in_numel(m), 5);
	for (int i = 0; i < BATCH; i++)
		y[i] = (uint8_t)(i % k);
	mc_softmax_xent(mc_forward(e, x, BATCH), y, BATCH, k, dl);
	mc_exec_zero_grad(e);
	mc_backward(e, dl);
	for (int n = 0; n < mc_model_n_nodes(m); n++)
		for (int p = 0; p < mc_model_node(m, n)->n_params; p++) {
			struct mc_tensor *t = mc_model_node(m, n)->params[p];
			float *w = t->data, *g = mc_exec_grad(e, n, p);

			for (int64_t i = 0; i < t->numel; i++) {
				float keep = w[i];
				double lp, lm;

				w[i] = keep + (float)step;
				lp = mc_softmax_xent(mc_forward(e, x, BATCH), y, BATCH, k, NULL);
				w[i] = keep - (float)step;
				lm = mc_softmax_xent(mc_forward(e, x, BATCH), y, BATCH, k, NULL);
				w[i] = keep;
				assert_close((lp - lm) / (2 * step), g[i], t->name, (size_t)i);
			}
		}
	free(dl);
	free(x);
	mc_exec_free(e);
	mc_model_free(m);
}

START_TEST(mlp_xent)
{
	check_model_xent("{\"format\":1,\"input\":[1,3,3],\"nodes\":["
			 "{\"op\":\"flatten\"},{\"op\":\"linear\",\"attrs\":{\"out\":6}},"
			 "{\"op\":\"relu\"},{\"op\":\"linear\",\"attrs\":{\"out\":5}},"
			 "{\"op\":\"relu\"},{\"op\":\"linear\",\"attrs\":{\"out\":3}}]}",
			 1e-3);
}
END_TEST

START_TEST(dead_branch)
{
	/* "side" reads h but reaches no output: its gradients stay zero and the
	 * live path is unchanged. */
	const char *json = "{\"format\":1,\"input\":[4],\"nodes\":["
			   "{\"name\":\"h\",\"op\":\"linear\",\"inputs\":[\"input\"],\"attrs\":{\"out\":5}},"
			   "{\"name\":\"side\",\"op\":\"linear\",\"inputs\":[\"h\"],\"attrs\":{\"out\":2}},"
			   "{\"name\":\"a\",\"op\":\"relu\",\"inputs\":[\"h\"]},"
			   "{\"name\":\"out\",\"op\":\"linear\",\"inputs\":[\"a\"],\"attrs\":{\"out\":3}}]}";
	struct mc_err err = { 0 };
	struct mc_model *m = build(json);
	struct mc_exec *e = mc_exec_new(m, BATCH, 1, &err);
	float x[BATCH * 4], dl[BATCH * 3];
	uint8_t y[BATCH] = { 0, 1, 2 };

	fill(x, sizeof(x) / sizeof(x[0]), 6);
	mc_softmax_xent(mc_forward(e, x, BATCH), y, BATCH, 3, dl);
	mc_exec_zero_grad(e);
	mc_backward(e, dl);
	for (int p = 0; p < 2; p++) {
		const float *g = mc_exec_grad(e, 1, p);

		for (int64_t i = 0; i < mc_model_node(m, 1)->params[p]->numel; i++)
			ck_assert(g[i] == 0.0f);
	}
	ck_assert_ptr_null(mc_exec_grad(e, 2, 0)); /* relu has no parameters */
	ck_assert_ptr_null(mc_exec_grad(e, 9, 0));
	mc_exec_free(e);
	mc_model_free(m);
	check_model_xent(json, 1e-3);
}
END_TEST

START_TEST(gradients_accumulate)
{
	/* mc_backward adds: two backward passes give twice the gradient */
	struct mc_err err = { 0 };
	struct mc_model *m = build("{\"format\":1,\"input\":[4],\"nodes\":[{\"op\":\"linear\",\"attrs\":{\"out\":3}}]}");
	struct mc_exec *e = mc_exec_new(m, 2, 1, &err);
	float x[8], dl[6], once[15];
	uint8_t y[2] = { 0, 2 };

	fill(x, 8, 7);
	mc_softmax_xent(mc_forward(e, x, 2), y, 2, 3, dl);
	mc_exec_zero_grad(e);
	mc_backward(e, dl);
	memcpy(once, mc_exec_grad(e, 0, 0), sizeof(once));
	mc_backward(e, dl);
	for (int i = 0; i < 12; i++)
		ck_assert(mc_exec_grad(e, 0, 0)[i] == 2 * once[i]);
	mc_exec_zero_grad(e);
	for (int i = 0; i < 12; i++)
		ck_assert(mc_exec_grad(e, 0, 0)[i] == 0.0f);
	mc_exec_free(e);
	/* an inference executor has no gradients */
	e = mc_exec_new(m, 2, 0, &err);
	ck_assert_ptr_null(mc_exec_grad(e, 0, 0));
	mc_exec_free(e);
	mc_model_free(m);
}
END_TEST

START_TEST(kd_loss)
{
	float z[2 * 3] = { 0.5f, -1.0f, 2.0f, 0.3f, 0.1f, -0.2f }, d[6], p[6], tz[6] = { 1, 2, 0, -1, 0, 3 };
	const float T = 2.0f;
	double ref = 0;

	mc_softmax_t(tz, 2, 3, T, p);
	ck_assert_double_eq_tol(p[0] + p[1] + p[2], 1.0, 1e-6);
	ck_assert_double_eq_tol(p[1], exp(1.0) / (exp(0.5) + exp(1.0) + 1.0), 1e-6);
	/* by hand: T^2 * mean over rows of sum p (log p - log softmax(z / T)) */
	for (int i = 0; i < 2; i++) {
		double lse = log(exp(z[3 * i] / T) + exp(z[3 * i + 1] / T) + exp(z[3 * i + 2] / T));

		for (int c = 0; c < 3; c++)
			ref += p[3 * i + c] * (log(p[3 * i + c]) - (z[3 * i + c] / T - lse));
	}
	ref *= T * T / 2;
	ck_assert_double_eq_tol(mc_kd_loss(z, p, 2, 3, T, d), ref, 1e-6);
	for (int i = 0; i < 6; i++) {
		float keep = z[i];
		double lp, lm;

		z[i] = keep + 1e-2f;
		lp = mc_kd_loss(z, p, 2, 3, T, NULL);
		z[i] = keep - 1e-2f;
		lm = mc_kd_loss(z, p, 2, 3, T, NULL);
		z[i] = keep;
		assert_close((lp - lm) / 2e-2, d[i], "dlogits", (size_t)i);
	}
	/* the teacher's own logits cost nothing; zero probabilities are fine */
	mc_softmax_t(z, 2, 3, T, p);
	ck_assert_double_eq_tol(mc_kd_loss(z, p, 2, 3, T, d), 0.0, 1e-6);
	p[0] = 0.0f;
	p[1] = 1.0f;
	p[2] = 0.0f;
	ck_assert(isfinite(mc_kd_loss(z, p, 2, 3, T, d)));
	ck_assert(mc_kd_loss(z, p, 2, 3, 0.0f, d) == 0.0f);
}
END_TEST

START_TEST(cnn_xent)
{
	/* conv, batch norm, relu, pooling, dropout (p = 0: the mask would move
	 * between the forwards of a finite difference), global pool, linear */
	check_model_xent("{\"format\":1,\"input\":[1,6,6],\"nodes\":["
			 "{\"op\":\"conv2d\",\"attrs\":{\"out\":3,\"padding\":1}},"
			 "{\"op\":\"batchnorm\"},{\"op\":\"relu\"},"
			 "{\"op\":\"avgpool2d\",\"attrs\":{\"kernel\":2}},"
			 "{\"op\":\"conv2d\",\"attrs\":{\"out\":4,\"kernel\":2}},"
			 "{\"op\":\"dropout\",\"attrs\":{\"p\":0}},"
			 "{\"op\":\"global_avgpool\"},{\"op\":\"linear\",\"attrs\":{\"out\":3}},"
			 "{\"op\":\"log_softmax\"}]}",
			 1e-3);
}
END_TEST

START_TEST(resnet_xent)
{
	/* a residual block: the stem's output is read by the block and the add,
	 * so its gradient is the sum of both paths */
	check_model_xent("{\"format\":1,\"input\":[2,4,4],\"nodes\":["
			 "{\"name\":\"stem\",\"op\":\"conv2d\",\"attrs\":{\"out\":2,\"padding\":1}},"
			 "{\"name\":\"c1\",\"op\":\"conv2d\",\"attrs\":{\"out\":2,\"padding\":1}},"
			 "{\"name\":\"r1\",\"op\":\"relu\"},"
			 "{\"name\":\"c2\",\"op\":\"conv2d\",\"attrs\":{\"out\":2,\"padding\":1}},"
			 "{\"name\":\"sum\",\"op\":\"add\",\"inputs\":[\"c2\",\"stem\"]},"
			 "{\"op\":\"flatten\"},{\"op\":\"linear\",\"attrs\":{\"out\":3}}]}",
			 1e-3);
}
END_TEST

START_TEST(fire_xent)
{
	/* a Fire module: the squeeze's output is read by both expands, so its
	 * gradient sums the two halves concat splits dout into */
	check_model_xent("{\"format\":1,\"input\":[2,4,4],\"nodes\":["
			 "{\"name\":\"sq\",\"op\":\"conv2d\",\"attrs\":{\"out\":2,\"kernel\":1}},"
			 "{\"name\":\"r\",\"op\":\"relu\"},"
			 "{\"name\":\"e1\",\"op\":\"conv2d\",\"attrs\":{\"out\":2,\"kernel\":1}},"
			 "{\"name\":\"e3\",\"op\":\"conv2d\",\"inputs\":[\"r\"],"
			 "\"attrs\":{\"out\":3,\"padding\":1}},"
			 "{\"name\":\"cat\",\"op\":\"concat\",\"inputs\":[\"e1\",\"e3\",\"r\"]},"
			 "{\"op\":\"flatten\"},{\"op\":\"linear\",\"attrs\":{\"out\":3}}]}",
			 1e-3);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("grad");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, op_linear);
	tcase_add_test(tc, op_relu);
	tcase_add_test(tc, op_flatten);
	tcase_add_test(tc, op_conv2d);
	tcase_add_test(tc, op_maxpool2d);
	tcase_add_test(tc, op_avgpool2d);
	tcase_add_test(tc, op_global_avgpool);
	tcase_add_test(tc, op_batchnorm);
	tcase_add_test(tc, op_batchnorm_inference);
	tcase_add_test(tc, op_dropout);
	tcase_add_test(tc, op_add);
	tcase_add_test(tc, op_softmax);
	tcase_add_test(tc, op_log_softmax);
	tcase_add_test(tc, op_leaky_relu);
	tcase_add_test(tc, op_sigmoid);
	tcase_add_test(tc, op_clip);
	tcase_add_test(tc, op_relu6);
	tcase_add_test(tc, op_hardsigmoid);
	tcase_add_test(tc, op_hardswish);
	tcase_add_test(tc, act_saturation);
	tcase_add_test(tc, op_mul);
	tcase_add_test(tc, op_pad2d);
	tcase_add_test(tc, kd_loss);
	tcase_add_test(tc, cnn_xent);
	tcase_add_test(tc, resnet_xent);
	tcase_add_test(tc, fire_xent);
	tcase_add_test(tc, op_concat);
	tcase_add_test(tc, op_qlinear_straight_through);
	tcase_add_test(tc, op_qconv2d_straight_through);
	tcase_add_test(tc, op_qconv2d_grouped_straight_through);
	tcase_add_test(tc, op_qadd_qgap_straight_through);
	tcase_add_test(tc, op_fake_quant_straight_through);
	tcase_add_test(tc, every_op_is_checked);
	tcase_add_test(tc, softmax_xent);
	tcase_add_test(tc, mlp_xent);
	tcase_add_test(tc, dead_branch);
	tcase_add_test(tc, gradients_accumulate);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
