// SPDX-License-Identifier: MIT
/*
 * check_distill.c - the distill pass: its combined loss against values worked
 * out here from the formulas (alpha = 0 is the cross-entropy, alpha = 1 is
 * T^2 KL, and a mix between), and pipelines run through the host on the tiny
 * data set: a teacher trained in the pipeline distilled into a smaller
 * student, the scratch comparison, and a student of another class count
 * refused at validation with its place, and the distilled student
 * byte-identical for one thread and two.
 *
 * The pass's source is included so that its file-local loss can be called.
 */
#define _GNU_SOURCE
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/mcomp.h>

#include "tiny_data.h"
#include "../passes/distill/kd.c"
#include "../passes/distill/distill.c"

static struct mc_registry *reg;

/* One sample, three classes: student logits, teacher probabilities, label. */
static const float zs[] = { 1.0f, 0.0f, -0.5f, 0.2f, 0.3f, 0.1f };
static const float pt[] = { 0.25f, 0.7f, 0.05f, 0.6f, 0.3f, 0.1f };
static const uint8_t ys[] = { 0, 2 };

/* softmax(z / T) of row z[3] in double. */
static void soft(const float *z, double T, double *q)
{
	double s = 0;

	for (int k = 0; k < 3; k++)
		s += (q[k] = exp(z[k] / T));
	for (int k = 0; k < 3; k++)
		q[k] /= s;
}

/* The expected loss and gradient over the two samples, from the formulas. */
static double expected(double T, double alpha, double *grad)
{
	double loss = 0;

	for (int i = 0; i < 2; i++) {
		double qT[3], q1[3], kl = 0;

		soft(zs + 3 * i, T, qT);
		soft(zs + 3 * i, 1, q1);
		for (int k = 0; k < 3; k++)
			kl += pt[3 * i + k] * log(pt[3 * i + k] / qT[k]);
		loss += (alpha * T * T * kl - (1 - alpha) * log(q1[ys[i]])) / 2;
		for (int k = 0; k < 3; k++)
			grad[3 * i + k] = (alpha * T * (qT[k] - pt[3 * i + k]) +
					   (1 - alpha) * (q1[k] - (k == ys[i]))) /
					  2;
	}
	return loss;
}

static void check_loss(float T, float alpha)
{
	float d[6], tmp[6];
	double g[6];
	float got = kd_loss(zs, pt, ys, 2, 3, T, alpha, d, tmp);
	double want = expected(T, alpha, g);

	ck_assert_msg(fabs(got - want) < 1e-5, "T %g alpha %g: loss %.7f, want %.7f", T, alpha,
		      got, want);
	for (int k = 0; k < 6; k++)
		ck_assert_msg(fabs(d[k] - g[k]) < 1e-6, "T %g alpha %g: dlogits[%d] %.7f, want %.7f",
			      T, alpha, k, d[k], g[k]);
}

START_TEST(test_loss_limits)
{
	float d[6], tmp[6], dce[6];

	/* alpha = 0 is exactly the cross-entropy with its gradient */
	float ce = mc_softmax_xent(zs, ys, 2, 3, dce);

	ck_assert_float_eq(kd_loss(zs, pt, ys, 2, 3, 2, 0, d, tmp), ce);
	ck_assert_int_eq(memcmp(d, dce, sizeof(d)), 0);
	/* alpha = 1 is T^2 KL: ln(4/3)-like values worked out by hand for one sample */
	{
		const float z1[] = { 0, 0 }, p1[] = { 0.25f, 0.75f };
		const uint8_t y1[] = { 1 };
		/* q = (1/2, 1/2): KL = 0.25 ln 0.5 + 0.75 ln 1.5; T^2 = 4 */
		double kl = 0.25 * log(0.5) + 0.75 * log(1.5);
		float d1[2], t1[2];

		ck_assert_float_eq_tol(kd_loss(z1, p1, y1, 1, 2, 2, 1, d1, t1), 4 * kl, 1e-6);
		/* gradient T (q - p) = 2 * (0.25, -0.25) */
		ck_assert_float_eq_tol(d1[0], 0.5f, 1e-6);
		ck_assert_float_eq_tol(d1[1], -0.5f, 1e-6);
	}
	check_loss(2, 1);
	check_loss(2, 0);
}
END_TEST

START_TEST(test_loss_mixed)
{
	check_loss(2, 0.5f);
	check_loss(4, 0.9f);
	check_loss(1, 0.3f);
}
END_TEST

static void setup(void)
{
	struct mc_err err = { 0 };

	tiny_setup("distill");
	reg = mc_registry_open(&err);
	ck_assert_msg(reg != NULL, "%s", err.msg);
	ck_assert_msg(mc_registry_find(reg, "distill", NULL),
		      "the distill pass is not on MCOMP_PASS_PATH (%s)", mc_pass_path());
}

static void teardown(void)
{
	mc_registry_free(reg);
	reg = NULL;
	tiny_teardown();
}

/*
 * Writes p.yaml: the tiny splits, a teacher 't' (64-32-4 MLP) trained in the
 * pipeline, a student 's' (64-8-classes), and a distill pass whose parameter
 * lines are params (from line 20; student is line 18). Loads and, when run
 * is set, runs it. Returns 0 or the error code with err filled.
 */
static int pipeline(int classes, const char *params, int run, struct mc_err *err)
{
	char text[8192];

	PATHF(text,
	      "mcomp: 1\n"
	      "seed: 5\n"
	      "data:\n"
	      "  train: {idx: train}\n"
	      "  test: {idx: test}\n"
	      "models:\n"
	      "  t:\n"
	      "    build:\n"
	      "      input: [1, 8, 8]\n"
	      "      layers: [flatten, {linear: 32}, relu, {linear: 4}]\n"
	      "  s:\n"
	      "    build:\n"
	      "      input: [1, 8, 8]\n"
	      "      layers: [flatten, {linear: 8}, relu, {linear: %d}]\n"
	      "passes:\n"
	      "  - train: {model: t, epochs: 20, batch_size: 16, lr: 0.01}\n"
	      "  - distill:\n"
	      "      student: s\n"
	      "      teacher: t\n"
	      "%s"
	      "output: {model: s, path: out.safetensors}\n"
	      "report: report.json\n",
	      classes, params);
	return tiny_pipeline(reg, text, run, err);
}

/* The distill row's metrics of report.json (a new reference) and the
 * host-measured accuracy of that row. */
static json_t *distill_metrics(double *measured)
{
	json_error_t je;
	json_t *doc = json_load_file(spath("report.json"), 0, &je), *steps, *row, *m = NULL;
	size_t i;

	ck_assert_msg(doc != NULL, "report.json: %s", je.text);
	steps = json_object_get(doc, "steps");
	json_array_foreach(steps, i, row) {
		if (json_is_string(json_object_get(row, "pass")) &&
		    strcmp(json_string_value(json_object_get(row, "pass")), "distill") == 0) {
			m = json_incref(json_object_get(row, "metrics"));
			*measured = json_number_value(json_object_get(row, "accuracy"));
		}
	}
	json_decref(doc);
	ck_assert_msg(m != NULL, "report.json has no distill row");
	return m;
}

static double metric(json_t *m, const char *key)
{
	json_t *v = json_object_get(m, key);

	ck_assert_msg(json_is_number(v), "no metric %s", key);
	return json_number_value(v);
}

START_TEST(test_pipeline_distills)
{
	struct mc_err err = { 0 };
	double measured, s, t;
	json_t *m;

	ck_assert_msg(pipeline(4, "      epochs: 15\n      batch_size: 16\n      lr: 0.01\n", 1,
			       &err) == 0,
		      "%s", err.msg);
	m = distill_metrics(&measured);
	s = metric(m, "student_accuracy");
	t = metric(m, "teacher_accuracy");
	ck_assert_msg(s > 0.8, "student accuracy %g is not well above chance (0.25)", s);
	ck_assert_msg(t > 0.8, "teacher accuracy %g", t);
	ck_assert_double_eq_tol(metric(m, "gap"), t - s, 1e-12);
	ck_assert_double_eq_tol(measured, s, 1e-9); /* the host measured the student */
	ck_assert_ptr_null(json_object_get(m, "scratch_accuracy"));
	json_decref(m);
}
END_TEST

START_TEST(test_compare_scratch)
{
	struct mc_err err = { 0 };
	double measured, s, sc;
	json_t *m;

	ck_assert_msg(pipeline(4,
			       "      epochs: 6\n      batch_size: 16\n      lr: 0.01\n"
			       "      compare_scratch: true\n",
			       1, &err) == 0,
		      "%s", err.msg);
	m = distill_metrics(&measured);
	s = metric(m, "student_accuracy");
	sc = metric(m, "scratch_accuracy");
	ck_assert_msg(sc > 0.25 && sc <= 1, "scratch accuracy %g", sc);
	ck_assert_double_eq_tol(metric(m, "gain_over_scratch"), s - sc, 1e-12);
	json_decref(m);
}
END_TEST

START_TEST(test_class_mismatch_refused)
{
	struct mc_err err = { 0 };
	char place[4300];

	ck_assert_int_eq(pipeline(5, "", 0, &err), MC_EINVAL);
	PATHF(place, "%s:18:", spath("p.yaml"));
	ck_assert_msg(strstr(err.msg, place), "'%s' lacks the place '%s'", err.msg, place);
	ck_assert_msg(strstr(err.msg, "outputs 5 classes but teacher 't' outputs 4"), "'%s'",
		      err.msg);
	/* the same student with the teacher's class count passes validation */
	ck_assert_msg(pipeline(4, "", 0, &err) == 0, "%s", err.msg);
}
END_TEST

/* The whole file at path into a new buffer; its size in *n. */
static char *slurp(const char *path, long *n)
{
	FILE *fp = fopen(path, "rb");
	char *buf;

	ck_assert_msg(fp != NULL, "cannot read %s", path);
	ck_assert_int_eq(fseek(fp, 0, SEEK_END), 0);
	*n = ftell(fp);
	ck_assert_int_gt(*n, 0);
	rewind(fp);
	buf = malloc((size_t)*n);
	ck_assert(buf != NULL);
	ck_assert_uint_eq(fread(buf, 1, (size_t)*n, fp), (size_t)*n);
	fclose(fp);
	return buf;
}

/* Teacher training, distillation and the scratch copy give the same bytes for any thread count. */
START_TEST(test_threads_identical)
{
	static const char params[] = "      epochs: 5\n      batch_size: 16\n      lr: 0.01\n"
				     "      compare_scratch: true\n";
	struct mc_err err = { 0 };
	int saved = omp_get_max_threads();
	char *a, *b;
	long na, nb;

	omp_set_num_threads(1);
	ck_assert_msg(pipeline(4, params, 1, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(rename(spath("out.safetensors"), spath("out1.safetensors")), 0);
	omp_set_num_threads(2);
	ck_assert_msg(pipeline(4, params, 1, &err) == 0, "%s", err.msg);
	omp_set_num_threads(saved);
	a = slurp(spath("out1.safetensors"), &na);
	b = slurp(spath("out.safetensors"), &nb);
	ck_assert_int_eq(na, nb);
	ck_assert_msg(memcmp(a, b, (size_t)na) == 0,
		      "the student distilled on 1 thread differs from the one on 2");
	free(a);
	free(b);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("distill");
	TCase *loss = tcase_create("loss"), *pipe = tcase_create("pipeline");
	SRunner *sr;
	int failed;

	tcase_add_test(loss, test_loss_limits);
	tcase_add_test(loss, test_loss_mixed);
	suite_add_tcase(s, loss);
	tcase_add_checked_fixture(pipe, setup, teardown);
	tcase_set_timeout(pipe, 60);
	tcase_add_test(pipe, test_pipeline_distills);
	tcase_add_test(pipe, test_compare_scratch);
	tcase_add_test(pipe, test_class_mismatch_refused);
	tcase_add_test(pipe, test_threads_identical);
	suite_add_tcase(s, pipe);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
