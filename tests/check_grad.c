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

/*
 * One op through a one-node model: parameter gradients from mc_backward,
 * input gradients from the op's own backward, both against finite
 * differences of sum(out * R).
 */
static void check_op(const char *json, double step)
{
	struct mc_err err = { 0 };
	struct mc_model *m = build(json);
	struct mc_node *nd = &m->nodes[0];
	struct mc_exec *e = mc_exec_new(m, BATCH, 1, &err);
	size_t in_n = (size_t)BATCH * m->in_numel, out_n = (size_t)BATCH * nd->out_numel;
	float *x = malloc(in_n * sizeof(float)), *r = malloc(out_n * sizeof(float));
	float *dx = malloc(in_n * sizeof(float)), *out = malloc(out_n * sizeof(float));
	const float *in[1] = { x };
	float *din[1] = { dx };
	float *grads[MC_NODE_MAX_PARAMS] = { 0 };
	struct mc_run run = { .training = 1 };

	ck_assert_ptr_nonnull(e);
	fill(x, in_n, 1);
	fill(r, out_n, 2);
	/* keep parameters away from zero too, so relu-free ops see varied values */
	mc_forward(e, x, BATCH);
	mc_exec_zero_grad(e);
	mc_backward(e, r);

	for (int p = 0; p < nd->n_params; p++) {
		struct mc_tensor *t = nd->params[p];
		float *w = t->data, *g = mc_exec_grad(e, 0, p);

		ck_assert_ptr_nonnull(g);
		for (int64_t i = 0; i < t->numel; i++) {
			float keep = w[i];
			double lp, lm;

			w[i] = keep + (float)step;
			lp = dot(mc_forward(e, x, BATCH), r, out_n);
			w[i] = keep - (float)step;
			lm = dot(mc_forward(e, x, BATCH), r, out_n);
			w[i] = keep;
			assert_close((lp - lm) / (2 * step), g[i], t->name, (size_t)i);
		}
	}

	/* input gradients: the op's backward with din */
	for (int p = 0; p < nd->n_params; p++)
		grads[p] = calloc((size_t)nd->params[p]->numel, sizeof(float));
	nd->op->forward(nd, &run, BATCH, in, out);
	nd->op->backward(nd, &run, BATCH, in, out, r, din, grads);
	for (size_t i = 0; i < in_n; i++) {
		float keep = x[i];
		double lp, lm;

		x[i] = keep + (float)step;
		nd->op->forward(nd, &run, BATCH, in, out);
		lp = dot(out, r, out_n);
		x[i] = keep - (float)step;
		nd->op->forward(nd, &run, BATCH, in, out);
		lm = dot(out, r, out_n);
		x[i] = keep;
		assert_close((lp - lm) / (2 * step), dx[i], nd->op->name, i);
	}
	/* the op's backward adds to parameter gradients: same as the executor's */
	for (int p = 0; p < nd->n_params; p++) {
		const float *g = mc_exec_grad(e, 0, p);

		for (int64_t i = 0; i < nd->params[p]->numel; i++)
			ck_assert(grads[p][i] == g[i]);
		free(grads[p]);
	}
	free(out);
	free(dx);
	free(r);
	free(x);
	mc_exec_free(e);
	mc_model_free(m);
}

START_TEST(op_linear)
{
	check_op("{\"format\":1,\"input\":[5],\"nodes\":[{\"name\":\"fc\",\"op\":\"linear\","
		 "\"inputs\":[\"input\"],\"attrs\":{\"out\":4}}]}",
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

START_TEST(every_op_is_checked)
{
	/* A new op needs a check above: this fails until it has one. */
	static const char *const checked[] = { "flatten", "linear", "relu", NULL };
	const char *const *names = mc_op_names();
	int n = 0;

	for (; names[n]; n++) {
		int found = 0;

		for (int k = 0; checked[k]; k++)
			found |= !strcmp(checked[k], names[n]);
		ck_assert_msg(found, "op %s has no gradient check", names[n]);
		ck_assert_ptr_eq(mc_op_find(names[n])->name, names[n]);
	}
	ck_assert_int_eq(n, 3);
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
	int k = (int)m->n_classes;
	float *x = malloc((size_t)BATCH * m->in_numel * sizeof(float));
	float *dl = malloc((size_t)BATCH * k * sizeof(float));
	uint8_t y[BATCH];

	ck_assert_ptr_nonnull(e);
	fill(x, (size_t)BATCH * m->in_numel, 5);
	for (int i = 0; i < BATCH; i++)
		y[i] = (uint8_t)(i % k);
	mc_softmax_xent(mc_forward(e, x, BATCH), y, BATCH, k, dl);
	mc_exec_zero_grad(e);
	mc_backward(e, dl);
	for (int n = 0; n < m->n_nodes; n++)
		for (int p = 0; p < m->nodes[n].n_params; p++) {
			struct mc_tensor *t = m->nodes[n].params[p];
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

		for (int64_t i = 0; i < m->nodes[1].params[p]->numel; i++)
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

int main(void)
{
	Suite *s = suite_create("grad");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, op_linear);
	tcase_add_test(tc, op_relu);
	tcase_add_test(tc, op_flatten);
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
