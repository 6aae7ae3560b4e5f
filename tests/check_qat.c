// SPDX-License-Identifier: MIT
/*
 * check_qat.c - quantization-aware training: the fake_quant op against the
 * u8 quantizer of the integer kernels bit for bit, its straight-through
 * mask, its range gradient against finite differences where the function
 * is differentiable and against the stated formula where it is not; a
 * fake-quantized f32 layer against the static qlinear it becomes; the
 * quantize pass in mode qat through the host: integer weights equal to
 * post-training quantization of its trained f32 weights, the same bytes for
 * any thread count and GEMM kernel, batch norm folded, and invalid
 * combinations refused at validation with their place.
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/mcomp.h>

#include "tiny_data.h"

static const char *mlp_arch = TINY_MLP_ARCH;

/* conv, batch norm, relu, pool, linear over the tiny 8x8 images */
static const char *cnn_bn_arch =
    "{\"format\": 1, \"input\": [1, 8, 8], \"nodes\": ["
    "{\"name\": \"cv\", \"op\": \"conv2d\", \"inputs\": [\"input\"], "
    "\"attrs\": {\"out\": 6, \"padding\": 1}},"
    "{\"name\": \"bn\", \"op\": \"batchnorm\", \"inputs\": [\"cv\"], \"attrs\": {}},"
    "{\"name\": \"act\", \"op\": \"relu\", \"inputs\": [\"bn\"], \"attrs\": {}},"
    "{\"name\": \"pool\", \"op\": \"maxpool2d\", \"inputs\": [\"act\"], \"attrs\": {\"kernel\": "
    "2}},"
    "{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"pool\"], \"attrs\": {}},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"flat\"], \"attrs\": {\"out\": 4}}]}";

static float frand(unsigned *s)
{
	*s = *s * 1664525u + 1013904223u;
	return (float)((*s >> 8) & 0xffffff) / 16777216.0f * 2.0f - 1.0f;
}

/* ---------------------------------------------------------------- the op */

/* A model of one fake_quant node over [d] inputs, its range [lo, hi]. */
static struct mc_model *fq_model(int64_t d, float lo, float hi, int learn)
{
	struct mc_err err = {0};
	struct mc_attr attrs[] = {MC_ATTR_BOOL("learn", learn), MC_ATTR_END};
	struct mc_model *m = mc_model_new(1, &d, &err);
	float *r;

	ck_assert_msg(m != NULL, "%s", err.msg);
	ck_assert_msg(mc_model_add_node(m, -1, "fq", "fake_quant", NULL, attrs, &err) == 0, "%s",
		      err.msg);
	r = mc_model_param(m, "fq.range")->data;
	r[0] = lo;
	r[1] = hi;
	ck_assert_int_eq(mc_model_node(m, 0)->n_buffers, learn ? 0 : 1);
	return m;
}

/* Forward of node 0 of m over x[n, d] into y. */
static void fq_fwd(const struct mc_model *m, int n, const float *x, float *y)
{
	const struct mc_node *nd = mc_model_node(m, 0);
	struct mc_run run = {0};
	const float *in[1] = {x};

	nd->op->forward(nd, &run, n, in, y);
}

/* Backward of node 0: dx and the range gradient g[2] (zeroed first). */
static void fq_bwd(const struct mc_model *m, int n, const float *x, const float *dy, float *dx,
		   float *g)
{
	const struct mc_node *nd = mc_model_node(m, 0);
	size_t ws = nd->op->workspace(nd, n);
	struct mc_run run = {.training = 1, .work = ws ? mc_calloc(ws, 1) : NULL};
	const float *in[1] = {x};
	float *din[1] = {dx}, *grads[1] = {g};
	float *y = malloc((size_t)n * (size_t)nd->out_numel * sizeof(float));

	ck_assert(y != NULL);
	g[0] = g[1] = 0.0f;
	nd->op->forward(nd, &run, n, in, y);
	nd->op->backward(nd, &run, n, in, y, dy, din, grads);
	free(y);
	mc_free(run.work);
}

/*
 * Forward equals the integer kernels' input quantization, bit for bit:
 * y = (mc_quantize_u8_ref(x) - z) s, over ranges with and without negative
 * values, values far outside, exact ties of x / s and NaN.
 */
START_TEST(test_fq_forward_matches_u8_quantizer)
{
	static const float ranges[][2] = {
	    {0.0f, 6.0f}, {-1.5f, 2.25f}, {-3.0f, -1.0f}, {0.5f, 4.0f}, {0.0f, 0.0f}};
	enum { D = 4099 };
	static float x[D], y[D];
	static uint8_t q[D];
	unsigned seed = 5;

	for (size_t r = 0; r < sizeof(ranges) / sizeof(ranges[0]); r++) {
		struct mc_model *m = fq_model(D, ranges[r][0], ranges[r][1], 0);
		float s;
		int z;

		mc_u8_qparams(ranges[r][0], ranges[r][1], &s, &z);
		for (int i = 0; i < D; i++)
			x[i] = 8.0f * frand(&seed);
		for (int i = 0; i < 64; i++)
			x[i] = ((float)i - 32.0f + 0.5f) * s; /* ties of x / s */
		x[64] = NAN;
		x[65] = 1e30f;
		x[66] = -1e30f;
		fq_fwd(m, 1, x, y);
		mc_quantize_u8_ref(x, D, s, z, q);
		for (int i = 0; i < D; i++) {
			float want = ((float)q[i] - (float)z) * s;

			ck_assert_msg(memcmp(&y[i], &want, sizeof(float)) == 0,
				      "range %zu, x[%d] = %g: %g, want %g", r, i, x[i], y[i], want);
		}
		mc_model_free(m);
	}
}
END_TEST

/*
 * The straight-through mask: dx = dy where x / s + z rounds into [0, 255]
 * (the clamp does not act), 0 where it does, NaN included; a fixed range
 * gets no gradient.
 */
START_TEST(test_fq_ste_mask)
{
	enum { N = 3, D = 700 };
	static float x[N * D], dy[N * D], dx[N * D];
	struct mc_model *m = fq_model(D, -1.0f, 3.0f, 0);
	unsigned seed = 11;
	float s, g[2];
	int z, passed = 0, stopped = 0;

	mc_u8_qparams(-1.0f, 3.0f, &s, &z);
	for (int i = 0; i < N * D; i++) {
		x[i] = 5.0f * frand(&seed);
		dy[i] = frand(&seed);
	}
	x[7] = NAN;
	fq_bwd(m, N, x, dy, dx, g);
	for (int i = 0; i < N * D; i++) {
		/* in double, away from the half-steps where rounding decides */
		double v = (double)x[i] / s + z;
		int in = v >= -0.5 && v <= 255.5;

		if (isnan(x[i]) || fabs(v + 0.5) < 1e-3 || fabs(v - 255.5) < 1e-3) {
			ck_assert(!isnan(x[i]) || dx[i] == 0.0f);
			continue;
		}
		ck_assert_msg(dx[i] == (in ? dy[i] : 0.0f), "x %g: dx %g, dy %g", x[i], dx[i],
			      dy[i]);
		passed += in;
		stopped += !in;
	}
	ck_assert(passed > 100 && stopped > 100);
	mc_model_free(m);
}
END_TEST

/* sum(dy * fq(x)) in double, for finite differences. */
static double fq_loss(struct mc_model *m, int n, const float *x, const float *dy, float *y)
{
	double l = 0.0;

	fq_fwd(m, n, x, y);
	for (int i = 0; i < n * (int)mc_model_node(m, 0)->out_numel; i++)
		l += (double)dy[i] * y[i];
	return l;
}

/*
 * The learned range's gradient. Where every value is clamped the function
 * is differentiable in lo and hi (z fixed between its jumps): central
 * differences agree. Inside the range, rounding is passed straight through
 * and the gradient is sum dy ((q - z) - x / s) / 255, against a double
 * reference; lo >= 0 gets none.
 */
START_TEST(test_fq_range_gradient)
{
	enum { D = 2000 };
	static float x[D], dy[D], dx[D], y[D];
	unsigned seed = 21;
	float g[2];
	double h = 1e-3;

	/* all above hi, lo = 0 (z = 0): y = 255 s = hi, dy/dhi = 1 */
	{
		struct mc_model *m = fq_model(D, 0.0f, 2.0f, 1);
		float *r = mc_model_param(m, "fq.range")->data;
		double up, down, fd;

		for (int i = 0; i < D; i++) {
			x[i] = 3.0f + 2.0f * fabsf(frand(&seed));
			dy[i] = frand(&seed);
		}
		fq_bwd(m, 1, x, dy, dx, g);
		r[1] = (float)(2.0 + h);
		up = fq_loss(m, 1, x, dy, y);
		r[1] = (float)(2.0 - h);
		down = fq_loss(m, 1, x, dy, y);
		fd = (up - down) / (double)((float)(2.0 + h) - (float)(2.0 - h));
		ck_assert_msg(fabs(fd - g[1]) <= 1e-3 * (1.0 + fabs(fd)), "hi: fd %g, grad %g", fd,
			      g[1]);
		ck_assert_float_eq(g[0], 0.0f);
		for (int i = 0; i < D; i++)
			ck_assert(dx[i] == 0.0f);
		mc_model_free(m);
	}
	/* all below lo < 0: y = -z s, z fixed for a small step of lo */
	{
		struct mc_model *m = fq_model(D, -2.0f, 3.0f, 1);
		float *r = mc_model_param(m, "fq.range")->data;
		double up, down, fd;
		float s0, s1;
		int z0, z1;

		for (int i = 0; i < D; i++) {
			x[i] = -3.0f - 2.0f * fabsf(frand(&seed));
			dy[i] = frand(&seed);
		}
		fq_bwd(m, 1, x, dy, dx, g);
		r[0] = (float)(-2.0 + h);
		mc_u8_qparams(r[0], r[1], &s0, &z0);
		up = fq_loss(m, 1, x, dy, y);
		r[0] = (float)(-2.0 - h);
		mc_u8_qparams(r[0], r[1], &s1, &z1);
		down = fq_loss(m, 1, x, dy, y);
		ck_assert_int_eq(z0, z1); /* differentiable here */
		fd = (up - down) / (double)((float)(-2.0 + h) - (float)(-2.0 - h));
		ck_assert_msg(fabs(fd - g[0]) <= 1e-3 * (1.0 + fabs(fd)), "lo: fd %g, grad %g", fd,
			      g[0]);
		mc_model_free(m);
	}
	/* inside: the straight-through formula */
	{
		struct mc_model *m = fq_model(D, -1.0f, 4.0f, 1);
		double want = 0.0;
		float s;
		int z;

		mc_u8_qparams(-1.0f, 4.0f, &s, &z);
		for (int i = 0; i < D; i++) {
			x[i] = 6.0f * frand(&seed) + 1.0f;
			dy[i] = frand(&seed);
		}
		fq_bwd(m, 1, x, dy, dx, g);
		for (int i = 0; i < D; i++) {
			double u = (double)x[i] / s, q = nearbyint(u) + z;

			if (q > 255)
				want += dy[i] * (255.0 - z);
			else if (q < 0)
				want += dy[i] * (0.0 - z);
			else
				want += dy[i] * (q - z - u);
		}
		ck_assert_msg(fabs(g[1] - want / 255) <= 1e-4 * (1 + fabs(want / 255)),
			      "hi: %g, want %g", g[1], want / 255);
		ck_assert_msg(fabs(g[0] + want / 255) <= 1e-4 * (1 + fabs(want / 255)),
			      "lo: %g, want %g", g[0], -want / 255);
		mc_model_free(m);
	}
	/* lo = 0 is not used by the map: no gradient */
	{
		struct mc_model *m = fq_model(D, 0.0f, 4.0f, 1);

		fq_bwd(m, 1, x, dy, dx, g);
		ck_assert_float_eq(g[0], 0.0f);
		ck_assert(g[1] != 0.0f);
		mc_model_free(m);
	}
}
END_TEST

/* The range gradient is the same bits for any thread count (chunked sums). */
START_TEST(test_fq_gradient_threads)
{
	enum { N = 16, D = 9000 };
	static float x[N * D], dy[N * D], dx[N * D];
	struct mc_model *m = fq_model(D, -1.0f, 2.0f, 1);
	unsigned seed = 3;
	float g1[2], g3[2];

	for (int i = 0; i < N * D; i++) {
		x[i] = 3.0f * frand(&seed);
		dy[i] = frand(&seed);
	}
	omp_set_num_threads(1);
	fq_bwd(m, N, x, dy, dx, g1);
	omp_set_num_threads(3);
	fq_bwd(m, N, x, dy, dx, g3);
	ck_assert(!memcmp(g1, g3, sizeof(g1)));
	mc_model_free(m);
}
END_TEST

/*
 * fake_quant then a linear layer holding fake-quantized int8 per-channel
 * weights computes what the static qlinear computes from the same integers,
 * up to the f32 rounding of the sums (the integer kernel's sums are exact).
 */
START_TEST(test_fq_linear_matches_qlinear)
{
	enum { IN = 48, OUT = 20, N = 7 };
	static float w[OUT * IN], deq[OUT * IN], b[OUT], x[N * IN], scale[OUT];
	static int8_t q[OUT * IN];
	struct mc_qspec spec = {.bits = 8, .group = IN};
	struct mc_attr lin[] = {MC_ATTR_INT("out", OUT), MC_ATTR_END};
	struct mc_attr ql[] = {MC_ATTR_INT("out", OUT), MC_ATTR_STR("mode", "static"), MC_ATTR_END};
	int64_t d = IN;
	struct mc_err err = {0};
	struct mc_model *a = fq_model(IN, -0.5f, 2.0f, 0), *bq = mc_model_new(1, &d, &err);
	struct mc_exec *ea, *eb;
	const float *ya, *yb;
	unsigned seed = 17;
	float s, *qp;
	int z;

	ck_assert(bq != NULL);
	for (int i = 0; i < OUT * IN; i++)
		w[i] = 0.3f * frand(&seed);
	for (int i = 0; i < OUT; i++)
		b[i] = 0.1f * frand(&seed);
	for (int i = 0; i < N * IN; i++)
		x[i] = 1.5f * frand(&seed) + 0.6f;
	ck_assert_int_eq(mc_quantize_weights_ref(w, OUT, IN, &spec, q, scale, NULL, &err), 0);
	mc_dequantize_weights(q, OUT, IN, &spec, scale, NULL, deq);
	ck_assert_int_ge(mc_model_add_node(a, -1, "fc", "linear", NULL, lin, &err), 0);
	memcpy(mc_model_param(a, "fc.weight")->data, deq, sizeof(deq));
	memcpy(mc_model_param(a, "fc.bias")->data, b, sizeof(b));
	ck_assert_msg(mc_model_add_node(bq, -1, "fc", "qlinear", NULL, ql, &err) == 0, "%s",
		      err.msg);
	memcpy(mc_model_param(bq, "fc.weight")->data, q, sizeof(q));
	memcpy(mc_model_param(bq, "fc.weight_scale")->data, scale, sizeof(scale));
	memcpy(mc_model_param(bq, "fc.bias")->data, b, sizeof(b));
	mc_u8_qparams(-0.5f, 2.0f, &s, &z);
	qp = mc_model_param(bq, "fc.input_qparams")->data;
	qp[0] = s;
	qp[1] = (float)z;
	ea = mc_exec_new(a, N, 0, &err);
	eb = mc_exec_new(bq, N, 0, &err);
	ck_assert(ea && eb);
	ya = mc_forward(ea, x, N);
	yb = mc_forward(eb, x, N);
	for (int i = 0; i < N; i++)
		for (int o = 0; o < OUT; o++) {
			double mag = fabs(b[o]);

			for (int k = 0; k < IN; k++)
				mag += fabs(deq[o * IN + k] * x[i * IN + k]) +
				       fabs(deq[o * IN + k]) * s;
			ck_assert_msg(fabs(ya[i * OUT + o] - yb[i * OUT + o]) <= 1e-5 * mag,
				      "[%d, %d]: fake-quant %g, qlinear %g", i, o, ya[i * OUT + o],
				      yb[i * OUT + o]);
		}
	mc_exec_free(ea);
	mc_exec_free(eb);
	mc_model_free(a);
	mc_model_free(bq);
}
END_TEST

/* ---------------------------------------------------------------- the pass */

static void setup(void)
{
	static const char *const passes[] = {"quantize", "train", NULL};
	struct mc_err err = {0};
	struct mc_model *m;

	tiny_setup("qat", passes);
	m = mc_model_from_arch(mlp_arch, "test", &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 3);
	ck_assert_msg(mc_model_save(m, spath("mlp.safetensors"), &err) == 0, "%s", err.msg);
	mc_model_free(m);
	m = mc_model_from_arch(cnn_bn_arch, "test", &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 3);
	ck_assert_msg(mc_model_save(m, spath("cnn.safetensors"), &err) == 0, "%s", err.msg);
	mc_model_free(m);
}

/*
 * Writes p.yaml: train (first 96 samples), calib (the other 32), test,
 * model 'm' from model_file, a train pass, then a quantize pass whose
 * parameter lines are params (from line 12); output to out_file.
 */
static int pipeline(const char *model_file, const char *params, const char *out_file, int run_it,
		    struct mc_err *err)
{
	char text[8192];

	PATHF(text,
	      "mcomp: 1\n"
	      "seed: 5\n"
	      "data:\n"
	      "  train: {idx: train, count: 96}\n"
	      "  calib: {idx: train, first: 96}\n"
	      "  test: {idx: test}\n"
	      "models:\n"
	      "  m: {load: %s}\n"
	      "passes:\n"
	      "  - train: {model: m, epochs: 2, batch_size: 16, lr: 0.01}\n"
	      "  - quantize:\n"
	      "%s"
	      "output: {model: m, path: %s}\n",
	      model_file, params, out_file);
	return tiny_pipeline(reg, text, run_it, err);
}

static void expect_refused(const char *params, int line, const char *want)
{
	struct mc_err err = {0};
	char place[4300];

	ck_assert_int_eq(pipeline("mlp.safetensors", params, "out.safetensors", 0, &err),
			 MC_EINVAL);
	PATHF(place, "%s:%d:", spath("p.yaml"), line);
	ck_assert_msg(strstr(err.msg, place), "'%s' lacks the place '%s'", err.msg, place);
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
}

static double accuracy(const struct mc_model *m)
{
	struct mc_err err = {0};
	struct mc_dataset *d = mc_idx_load_prefix(spath("test"), &err);
	double acc;

	ck_assert_msg(d != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_evaluate(m, d, 32, &acc, NULL, &err), 0);
	mc_dataset_free(d);
	return acc;
}

/*
 * Every quantized layer of the output holds, byte for byte, what
 * post-training quantization (the reference quantizer) makes of the same
 * layer's weights in the f32 model written by float_output.
 */
static void assert_ptq_of_float(const char *qfile, const char *ffile, struct mc_qspec spec,
				int gfc3)
{
	struct mc_err err = {0};
	struct mc_model *q = mc_model_load(qfile, &err), *f;
	int layers = 0;

	ck_assert_msg(q != NULL, "%s", err.msg);
	f = mc_model_load(ffile, &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	for (int i = 0; i < mc_model_n_nodes(f); i++) {
		const struct mc_node *nd = mc_model_node(f, i);
		const struct mc_tensor *w = nd->params[0];
		struct mc_qspec s = spec;
		int64_t rows, cols, blocks;
		int8_t *want, *got, *zp;
		float *scale;
		char name[300];

		if (strcmp(nd->op->name, "linear") && strcmp(nd->op->name, "conv2d"))
			continue;
		ck_assert_int_eq(w->dtype, MC_F32);
		rows = w->shape[0];
		cols = w->numel / rows;
		if (s.group < 0 || (gfc3 && !strcmp(nd->name, "fc3")))
			s.group = (int)cols;
		blocks = mc_qspec_blocks(&s, rows, cols);
		want = malloc((size_t)w->numel);
		got = malloc((size_t)w->numel);
		zp = calloc((size_t)blocks, 1);
		scale = malloc((size_t)blocks * sizeof(float));
		ck_assert(want && got && zp && scale);
		ck_assert_int_eq(
		    mc_quantize_weights_ref(w->data, rows, cols, &s, want, scale, zp, &err), 0);
		snprintf(name, sizeof(name), "%s.weight", nd->name);
		if (s.bits == 4)
			mc_q4_unpack(mc_model_param(q, name)->data, w->numel, got);
		else
			memcpy(got, mc_model_param(q, name)->data, (size_t)w->numel);
		ck_assert_msg(!memcmp(got, want, (size_t)w->numel), "%s differs from PTQ", name);
		snprintf(name, sizeof(name), "%s.weight_scale", nd->name);
		ck_assert_msg(
		    !memcmp(mc_model_param(q, name)->data, scale, (size_t)blocks * sizeof(float)),
		    "%s differs from PTQ", name);
		snprintf(name, sizeof(name), "%s.bias", nd->name);
		if (nd->n_params > 1)
			ck_assert(!memcmp(mc_model_param(q, name)->data, nd->params[1]->data,
					  mc_tensor_nbytes(nd->params[1])));
		layers++;
		free(want);
		free(got);
		free(zp);
		free(scale);
	}
	ck_assert_int_gt(layers, 0);
	mc_model_free(f);
	mc_model_free(q);
}

/* int4 per-channel, weight-only: PTQ of the trained f32 weights; the model learns. */
START_TEST(test_qat_int4_is_ptq_of_shadow)
{
	struct mc_err err = {0};
	struct mc_model *m;

	ck_assert_msg(pipeline("mlp.safetensors",
			       "      model: m\n      mode: qat\n      bits: 4\n"
			       "      granularity: per-channel\n      epochs: 2\n"
			       "      batch_size: 16\n      lr: 0.003\n"
			       "      float_output: f.safetensors\n",
			       "out.safetensors", 1, &err) == 0,
		      "%s", err.msg);
	assert_ptq_of_float(spath("out.safetensors"), spath("f.safetensors"),
			    (struct mc_qspec){.bits = 4, .group = -1}, 0);
	m = mc_model_load(spath("out.safetensors"), &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	ck_assert_str_eq(mc_model_node(m, 1)->op->name, "qlinear");
	ck_assert_str_eq(mc_node_attr_str(mc_model_node(m, 1), "mode", ""), "weight-only");
	ck_assert_int_eq(mc_model_n_nodes(m), 6); /* no fake_quant left */
	ck_assert_msg(accuracy(m) >= 0.9, "accuracy %g", accuracy(m));
	mc_model_free(m);
	/* per-group, asymmetric: the same, group by group (fc3 per channel) */
	ck_assert_msg(pipeline("mlp.safetensors",
			       "      model: m\n      mode: qat\n      bits: 4\n"
			       "      scheme: asymmetric\n      granularity: per-group\n"
			       "      group_size: 32\n      overrides: {fc3: per-channel}\n"
			       "      epochs: 1\n      batch_size: 16\n"
			       "      float_output: f.safetensors\n",
			       "out.safetensors", 1, &err) == 0,
		      "%s", err.msg);
	assert_ptq_of_float(spath("out.safetensors"), spath("f.safetensors"),
			    (struct mc_qspec){.bits = 4, .asym = 1, .group = 32}, 1);
}
END_TEST

#define CNN_QAT(acts)                                                                              \
	"      model: m\n      mode: qat\n      calibration_data: calib\n"                         \
	"      samples: 32\n      epochs: 2\n      batch_size: 16\n      lr: 0.001\n"              \
	"      activations: " acts "\n      float_output: f.safetensors\n"

/*
 * int8 static on a CNN with a batch norm: the norm is folded before
 * training, the result is the static integer model (qconv2d with its relu
 * fused, qlinear) whose weights are PTQ of the trained ones and whose input
 * ranges are those calibrated; learned ranges move.
 */
START_TEST(test_qat_int8_cnn)
{
	struct mc_err err = {0};
	struct mc_model *m, *l;
	char *arch;
	char text[1024];

	PATHF(text, "%s", CNN_QAT("static"));
	ck_assert_msg(pipeline("cnn.safetensors", text, "out.safetensors", 1, &err) == 0, "%s",
		      err.msg);
	assert_ptq_of_float(spath("out.safetensors"), spath("f.safetensors"),
			    (struct mc_qspec){.bits = 8, .group = -1}, 0);
	m = mc_model_load(spath("out.safetensors"), &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	arch = mc_model_arch(m);
	ck_assert_msg(!strstr(arch, "batchnorm") && !strstr(arch, "fake_quant") &&
			  strstr(arch, "\"qconv2d\"") && strstr(arch, "\"relu\":true"),
		      "%s", arch);
	free(arch);
	ck_assert_msg(accuracy(m) >= 0.9, "accuracy %g", accuracy(m));
	/* the first layer reads the images: range [0, max pixel] from calibration */
	ck_assert_float_eq(((float *)mc_model_param(m, "cv.input_qparams")->data)[1], 0.0f);

	PATHF(text, "%s", CNN_QAT("learned"));
	ck_assert_msg(pipeline("cnn.safetensors", text, "learned.safetensors", 1, &err) == 0, "%s",
		      err.msg);
	l = mc_model_load(spath("learned.safetensors"), &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	ck_assert_msg(memcmp(mc_model_param(m, "fc.input_qparams")->data,
			     mc_model_param(l, "fc.input_qparams")->data, 2 * sizeof(float)),
		      "learned ranges did not move");
	ck_assert_msg(accuracy(l) >= 0.9, "accuracy %g", accuracy(l));
	mc_model_free(l);
	mc_model_free(m);
}
END_TEST

/* The same bytes for 1, 2 and 3 threads and every f32 GEMM kernel this CPU runs. */
START_TEST(test_qat_deterministic)
{
	static const char *const kernels[] = {"portable", "avx2", "avx512"};
	const char *params = "      model: m\n      mode: qat\n      calibration_data: calib\n"
			     "      samples: 32\n      epochs: 2\n      batch_size: 16\n"
			     "      activations: learned\n      lr: 0.002\n";
	const char *def = mc_sgemm_kernel();
	struct mc_err err = {0};
	int runs = 0;

	omp_set_num_threads(1);
	ck_assert_msg(pipeline("cnn.safetensors", params, "a.safetensors", 1, &err) == 0, "%s",
		      err.msg);
	for (int t = 2; t <= 3; t++) {
		omp_set_num_threads(t);
		ck_assert_msg(pipeline("cnn.safetensors", params, "b.safetensors", 1, &err) == 0,
			      "%s", err.msg);
		assert_same_file(spath("a.safetensors"), spath("b.safetensors"),
				 "the thread count changed the model");
	}
	for (size_t k = 0; k < sizeof(kernels) / sizeof(kernels[0]); k++) {
		if (mc_sgemm_use(kernels[k]))
			continue;
		ck_assert_msg(pipeline("cnn.safetensors", params, "b.safetensors", 1, &err) == 0,
			      "%s", err.msg);
		assert_same_file(spath("a.safetensors"), spath("b.safetensors"),
				 "the GEMM kernel changed the model");
		runs++;
	}
	ck_assert_int_ge(runs, 1);
	ck_assert_int_eq(mc_sgemm_use(def), 0);
}
END_TEST

START_TEST(test_qat_invalid)
{
	struct mc_err err = {0};
	char text[4096], place[4300];

	expect_refused("      model: m\n      mode: qat\n      epochs: 0\n", 14,
		       "quantization-aware training needs 1 epoch or more");
	expect_refused(
	    "      model: m\n      mode: static\n      epochs: 3\n", 14,
	    "'epochs' sets up quantization-aware training, which mode static does not do");
	expect_refused("      model: m\n      lr: 0.01\n", 13,
		       "'lr' sets up quantization-aware training");
	expect_refused("      model: m\n      mode: qat\n      data: test\n", 14,
		       "'test' measures the result and must not train it");
	expect_refused("      model: m\n      mode: qat\n      batch_size: 16\n      grad_groups: 3\n",
		       15, "grad_groups: 3 groups do not divide batch_size 16 into equal groups");
	expect_refused("      model: m\n      grad_groups: 2\n", 13,
		       "'grad_groups' sets up quantization-aware training");
	expect_refused(
	    "      model: m\n      mode: qat\n      bits: 4\n      activations: static\n", 15,
	    "4-bit weights run weight-only, so the inputs stay f32");
	expect_refused("      model: m\n      mode: qat\n      scheme: asymmetric\n", 14,
		       "the int8 GEMM of mode qat (static) takes symmetric weights; use scheme: "
		       "symmetric, or activations: f32");
	expect_refused("      model: m\n      mode: qat\n      activations: dynamic\n", 14,
		       "'dynamic' is not one of auto, static, learned, f32");
	expect_refused("      model: m\n      mode: qat\n      optimizer: lbfgs\n", 14,
		       "'lbfgs' is not one of sgd, adam");
	/* qat trains on 'train' by default: without one, refused at the pass */
	PATHF(text, "mcomp: 1\n"
		    "data:\n"
		    "  test: {idx: test}\n"
		    "models:\n"
		    "  m: {load: mlp.safetensors}\n"
		    "passes:\n"
		    "  - quantize: {model: m, mode: qat, bits: 4}\n");
	ck_assert_int_eq(tiny_pipeline(reg, text, 0, &err), MC_EINVAL);
	PATHF(place,
	      "%s:7:5: pass 'quantize', data: the pipeline has no data split 'train' (the "
	      "default); add it under 'data:' or set data",
	      spath("p.yaml"));
	ck_assert_msg(strstr(err.msg, place), "'%s' lacks '%s'", err.msg, place);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("qat");
	TCase *to = tcase_create("op"), *tp = tcase_create("pass");

	tcase_add_test(to, test_fq_forward_matches_u8_quantizer);
	tcase_add_test(to, test_fq_ste_mask);
	tcase_add_test(to, test_fq_range_gradient);
	tcase_add_test(to, test_fq_gradient_threads);
	tcase_add_test(to, test_fq_linear_matches_qlinear);
	suite_add_tcase(s, to);
	tcase_add_checked_fixture(tp, setup, tiny_teardown);
	tcase_set_timeout(tp, 120);
	tcase_add_test(tp, test_qat_int4_is_ptq_of_shadow);
	tcase_add_test(tp, test_qat_int8_cnn);
	tcase_add_test(tp, test_qat_deterministic);
	tcase_add_test(tp, test_qat_invalid);
	suite_add_tcase(s, tp);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
