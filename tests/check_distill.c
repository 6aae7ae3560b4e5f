// SPDX-License-Identifier: MIT
/*
 * check_distill.c - the distill and ensemble-distill passes: the combined
 * loss against values worked out here from the formulas (alpha = 0 is the
 * cross-entropy, alpha = 1 is T^2 KL, and a mix between), the ensemble's
 * targets against weighted averages worked out here, and pipelines run
 * through the host on the tiny data set: a teacher trained in the pipeline
 * distilled into a smaller student, the scratch comparison, a student of
 * another class count refused at validation with its place, the distilled
 * student byte-identical for one thread and two; an ensemble of two teachers
 * with its report (each teacher, the ensemble's accuracy and cost, the
 * single-teacher students), teachers of different class counts and weights
 * of the wrong length refused with their place, and an ensemble of one the
 * same student, byte for byte, as distill from that teacher; grad_groups 1
 * the bytes of the run without groups, grad_groups 4 the same bytes on one
 * thread and two (targets cached, and the teacher run per group), and a
 * grad_groups that does not divide batch_size refused with its place.
 *
 * The shared source (kd.c) and distill's are included so that their
 * functions can be called.
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
#include "../passes/common/kd.c"
#include "../passes/distill/distill.c"

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

/*
 * T -> infinity: T^2 KL becomes matching logits less their row means
 * (Hinton et al. 2015, section 2.1). With z' and v' the student's and the
 * teacher's logits less their row means, K classes and n rows, the loss tends
 * to the mean over rows of sum_c (z'_c - v'_c)^2 / (2K) and its gradient to
 * (z'_c - v'_c) / (K n); the distance shrinks as 1/T.
 */
START_TEST(test_loss_high_temperature)
{
	const float v[6] = { 1.0f, 2.0f, 0.0f, -1.0f, 0.0f, 3.0f };
	double want = 0, g[6], last = INFINITY;

	for (int i = 0; i < 2; i++) {
		double zm = (zs[3 * i] + zs[3 * i + 1] + zs[3 * i + 2]) / 3;
		double vm = (v[3 * i] + v[3 * i + 1] + v[3 * i + 2]) / 3;

		for (int k = 0; k < 3; k++) {
			double e = (zs[3 * i + k] - zm) - (v[3 * i + k] - vm);

			want += e * e / (2 * 3) / 2;
			g[3 * i + k] = e / (3 * 2);
		}
	}
	for (float T = 10; T <= 1000; T *= 10) {
		float p[6], d[6], tmp[6], loss;
		double dist = 0;

		mc_softmax_t(v, 2, 3, T, p);
		loss = kd_loss(zs, p, ys, 2, 3, T, 1, d, tmp);
		dist = fabs(loss - want) / want;
		for (int k = 0; k < 6; k++)
			dist = fmax(dist, fabs(d[k] - g[k]) / fabs(g[k]));
		ck_assert_msg(dist < 0.6 * last, "T %g: relative distance %g did not shrink from %g",
			      T, dist, last);
		last = dist;
	}
	ck_assert_msg(last < 2e-3, "T 1000: loss and gradient %g away from logit matching", last);
}
END_TEST

START_TEST(test_loss_mixed)
{
	check_loss(2, 0.5f);
	check_loss(4, 0.9f);
	check_loss(1, 0.3f);
}
END_TEST

/* Two teachers' logits for two samples of three classes. */
static const float ze1[] = { 2.0f, -1.0f, 0.5f, 0.0f, 3.0f, -2.0f };
static const float ze2[] = { -0.5f, 1.5f, 1.0f, 1.0f, -1.0f, 0.25f };

/* kd_targets of ze1 and ze2 with weights w at T against the formulas worked
 * out in double here. */
static void check_targets(enum kd_combine rule, double w1, double w2, double T)
{
	const float *z[] = { ze1, ze2 };
	const double w[] = { w1, w2 };
	float out[6], tmp[6];

	kd_targets(rule, z, w, 2, 2, 3, (float)T, out, tmp);
	for (int i = 0; i < 2; i++) {
		double want[3], q1[3], q2[3], s = 0;

		if (rule == KD_PROBS) {
			soft(ze1 + 3 * i, T, q1);
			soft(ze2 + 3 * i, T, q2);
			for (int k = 0; k < 3; k++)
				want[k] = w1 * q1[k] + w2 * q2[k];
		} else {
			for (int k = 0; k < 3; k++)
				s += (want[k] = exp((w1 * ze1[3 * i + k] + w2 * ze2[3 * i + k]) / T));
			for (int k = 0; k < 3; k++)
				want[k] /= s;
		}
		for (int k = 0; k < 3; k++)
			ck_assert_msg(fabs(out[3 * i + k] - want[k]) < 1e-6,
				      "%s w (%g, %g) T %g: target[%d][%d] %.7f, want %.7f",
				      kd_combine_names[rule], w1, w2, T, i, k, out[3 * i + k],
				      want[k]);
	}
}

START_TEST(test_ensemble_targets)
{
	const float *z[] = { ze1 };
	const double one[] = { 1 };
	float out[6], tmp[3], soft_t[6];

	check_targets(KD_PROBS, 0.5, 0.5, 1);
	check_targets(KD_PROBS, 0.25, 0.75, 2);
	check_targets(KD_PROBS, 0.9, 0.1, 0.5);
	check_targets(KD_LOGITS, 0.5, 0.5, 1);
	check_targets(KD_LOGITS, 0.25, 0.75, 2);
	check_targets(KD_LOGITS, 0.9, 0.1, 4);
	/* the rules differ: at T 1 with equal weights, sample 0's averaged
	 * probabilities and the softmax of its averaged logits are worked out
	 * outside this program as (0.43165, 0.30660, 0.26175) and
	 * softmax(0.75, 0.25, 0.75) = (0.38365, 0.23270, 0.38365) */
	{
		const float *zz[] = { ze1, ze2 };
		const double half[] = { 0.5, 0.5 };
		float p[6], l[6], t6[6];

		kd_targets(KD_PROBS, zz, half, 2, 2, 3, 1, p, t6);
		kd_targets(KD_LOGITS, zz, half, 2, 2, 3, 1, l, t6);
		ck_assert_float_eq_tol(p[0], 0.43165f, 1e-5);
		ck_assert_float_eq_tol(p[1], 0.30660f, 1e-5);
		ck_assert_float_eq_tol(p[2], 0.26175f, 1e-5);
		ck_assert_float_eq_tol(l[0], 0.38365f, 1e-5);
		ck_assert_float_eq_tol(l[1], 0.23270f, 1e-5);
		ck_assert_float_eq_tol(l[2], 0.38365f, 1e-5);
	}
	/* one teacher of weight 1 is softmax(z / T) exactly, by either rule */
	mc_softmax_t(ze1, 2, 3, 2, soft_t);
	kd_targets(KD_PROBS, z, one, 1, 2, 3, 2, out, tmp);
	ck_assert_int_eq(memcmp(out, soft_t, sizeof(out)), 0);
	kd_targets(KD_LOGITS, z, one, 1, 2, 3, 2, out, tmp);
	ck_assert_int_eq(memcmp(out, soft_t, sizeof(out)), 0);
}
END_TEST

static void setup(void)
{
	static const char *const passes[] = { "distill", "ensemble-distill", NULL };

	tiny_setup("distill", passes);
}

/*
 * Writes p.yaml: the tiny splits, a teacher 't' (64-32-4 MLP) trained in the
 * pipeline, a student 's' (input [1, 8, 8] unless given, 8 hidden units,
 * classes outputs), and a distill pass (line 17) whose parameter lines are
 * params (from line 20; student is line 18). Loads and, when run is set,
 * runs it. Returns 0 or the error code with err filled.
 */
static int pipeline_in(const char *input, int classes, const char *params, int run,
		       struct mc_err *err)
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
	      "      input: %s\n"
	      "      layers: [flatten, {linear: 8}, relu, {linear: %d}]\n"
	      "passes:\n"
	      "  - train: {model: t, epochs: 20, batch_size: 16, lr: 0.01}\n"
	      "  - distill:\n"
	      "      student: s\n"
	      "      teacher: t\n"
	      "%s"
	      "output: {model: s, path: out.safetensors}\n"
	      "report: report.json\n",
	      input, classes, params);
	return tiny_pipeline(reg, text, run, err);
}

static int pipeline(int classes, const char *params, int run, struct mc_err *err)
{
	return pipeline_in("[1, 8, 8]", classes, params, run, err);
}

/* The metrics of report.json's row of pass (a new reference) and the
 * host-measured accuracy of that row. */
static json_t *pass_metrics(const char *pass, double *measured)
{
	json_error_t je;
	json_t *doc = json_load_file(spath("report.json"), 0, &je), *steps, *row, *m = NULL;
	size_t i;

	ck_assert_msg(doc != NULL, "report.json: %s", je.text);
	steps = json_object_get(doc, "steps");
	json_array_foreach(steps, i, row) {
		if (json_is_string(json_object_get(row, "pass")) &&
		    strcmp(json_string_value(json_object_get(row, "pass")), pass) == 0) {
			m = json_incref(json_object_get(row, "metrics"));
			*measured = json_number_value(json_object_get(row, "accuracy"));
		}
	}
	json_decref(doc);
	ck_assert_msg(m != NULL, "report.json has no %s row", pass);
	return m;
}

static json_t *distill_metrics(double *measured)
{
	return pass_metrics("distill", measured);
}

/* One step's number from report.json's row of pass for model. */
static double step_number(const char *pass, const char *model, const char *key)
{
	json_error_t je;
	json_t *doc = json_load_file(spath("report.json"), 0, &je), *row;
	double v = -1;
	size_t i;

	ck_assert_msg(doc != NULL, "report.json: %s", je.text);
	json_array_foreach(json_object_get(doc, "steps"), i, row) {
		const char *p = json_string_value(json_object_get(row, "pass"));
		const char *mo = json_string_value(json_object_get(row, "model"));

		if (p && mo && strcmp(p, pass) == 0 && strcmp(mo, model) == 0)
			v = json_number_value(json_object_get(row, key));
	}
	json_decref(doc);
	ck_assert_msg(v >= 0, "report.json has no %s of %s on '%s'", key, pass, model);
	return v;
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
	ck_assert_double_eq_tol(t, step_number("train", "t", "accuracy"), 1e-9);
	/* the teacher's cost beside the student's, as the host measured it */
	ck_assert_double_eq(metric(m, "teacher_bytes"), step_number("train", "t", "bytes"));
	ck_assert_double_eq(metric(m, "teacher_flops"), step_number("train", "t", "flops"));
	ck_assert(metric(m, "teacher_latency1_ms") > 0);
	ck_assert(metric(m, "teacher_latency256_ms") > 0);
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

/* A student that does not take the data's samples is refused before anything
 * runs, at the pass, naming the split, the model and the fix. */
START_TEST(test_input_mismatch_refused)
{
	struct mc_err err = { 0 };
	char place[4300];
	struct stat st;

	remove(spath("out.safetensors")); /* from an earlier test sharing the folder */
	ck_assert_int_eq(pipeline_in("[1, 4, 4]", 4, "", 1, &err), MC_EINVAL);
	PATHF(place, "%s:17:", spath("p.yaml"));
	ck_assert_msg(strstr(err.msg, place), "'%s' lacks the place '%s'", err.msg, place);
	ck_assert_msg(strstr(err.msg, "samples of shape [1, 8, 8] but model 's' takes [1, 4, 4]; "
				      "build the model with input: [1, 8, 8]"),
		      "'%s'", err.msg);
	ck_assert_msg(stat(spath("out.safetensors"), &st) != 0, "a refused pipeline wrote output");
}
END_TEST

/* pipeline(4, params) on 1 thread and on 2 threads: the same student bytes. */
static void assert_threads_identical(const char *params, const char *what)
{
	struct mc_err err = { 0 };
	int saved = omp_get_max_threads();

	omp_set_num_threads(1);
	ck_assert_msg(pipeline(4, params, 1, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(rename(spath("out.safetensors"), spath("out1.safetensors")), 0);
	omp_set_num_threads(2);
	ck_assert_msg(pipeline(4, params, 1, &err) == 0, "%s", err.msg);
	omp_set_num_threads(saved);
	assert_same_file(spath("out1.safetensors"), spath("out.safetensors"), what);
}

/* Teacher training, distillation and the scratch copy give the same bytes for any thread count. */
START_TEST(test_threads_identical)
{
	static const char params[] = "      epochs: 5\n      batch_size: 16\n      lr: 0.01\n"
				     "      compare_scratch: true\n";

	assert_threads_identical(params, "the student distilled on 1 thread differs from the one on 2");
}
END_TEST

/*
 * Writes p.yaml: the tiny splits, teachers 't' (64-32-4) and 'u'
 * (64-16-ucls) trained in the pipeline, a student 's' (64-8-scls), and the
 * pass lines of pass from line 22 (so "- ensemble-distill:" is line 22,
 * "student:" line 23, "teachers:" line 24, and the next key line 25). Loads
 * and, when run is set, runs it.
 */
static int ens_pipeline(int ucls, int scls, const char *pass, int run, struct mc_err *err)
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
	      "  u:\n"
	      "    build:\n"
	      "      input: [1, 8, 8]\n"
	      "      layers: [flatten, {linear: 16}, relu, {linear: %d}]\n"
	      "  s:\n"
	      "    build:\n"
	      "      input: [1, 8, 8]\n"
	      "      layers: [flatten, {linear: 8}, relu, {linear: %d}]\n"
	      "passes:\n"
	      "  - train: {model: t, epochs: 20, batch_size: 16, lr: 0.01}\n"
	      "  - train: {model: u, epochs: 4, batch_size: 16, lr: 0.01}\n"
	      "%s"
	      "output: {model: s, path: out.safetensors}\n"
	      "report: report.json\n",
	      ucls, scls, pass);
	return tiny_pipeline(reg, text, run, err);
}

#define ENS_PASS(teachers, more)                                                                 \
	"  - ensemble-distill:\n      student: s\n      teachers: " teachers "\n" more             \
	"      epochs: 5\n      batch_size: 16\n      lr: 0.01\n"

/* The error of loading the ensemble pipeline names line:col and says what. */
static void refused(int ucls, int scls, const char *pass, int line, const char *what)
{
	struct mc_err err = { 0 };
	char place[4300];

	ck_assert_int_eq(ens_pipeline(ucls, scls, pass, 0, &err), MC_EINVAL);
	PATHF(place, "%s:%d:", spath("p.yaml"), line);
	ck_assert_msg(strstr(err.msg, place), "'%s' lacks the place '%s'", err.msg, place);
	ck_assert_msg(strstr(err.msg, what), "'%s' lacks '%s'", err.msg, what);
}

START_TEST(test_ensemble_refused)
{
	struct mc_err err = { 0 };

	/* teachers of different class counts: at teachers */
	refused(5, 4, ENS_PASS("[t, u]", ""), 24,
		"teacher 'u' outputs 5 classes but teacher 't' outputs 4");
	/* a student of another class count than the teachers: at student */
	refused(4, 5, ENS_PASS("[t, u]", ""), 23, "student 's' outputs 5 classes but teacher 't'");
	/* weights: one per teacher, not all 0 */
	refused(4, 4, ENS_PASS("[t, u]", "      weights: [1, 2, 3]\n"), 25,
		"3 weights for 2 teachers");
	refused(4, 4, ENS_PASS("[t, u]", "      weights: [1]\n"), 25, "1 weights for 2 teachers");
	refused(4, 4, ENS_PASS("[t, u]", "      weights: [0, 0]\n"), 25, "the weights sum to 0");
	/* the student is no teacher; no teacher twice */
	refused(4, 4, ENS_PASS("[t, s]", ""), 24, "teacher 's' is the student");
	refused(4, 4, ENS_PASS("[t, u, t]", ""), 24, "model 't' is teacher 1 and teacher 3");
	/* the same pipeline with matching classes and weights passes validation */
	ck_assert_msg(ens_pipeline(4, 4, ENS_PASS("[t, u]", "      weights: [1, 2]\n"), 0, &err) ==
			      0,
		      "%s", err.msg);
}
END_TEST

/* Two teachers and every comparison: the report holds each figure, and they agree. */
START_TEST(test_ensemble_report)
{
	struct mc_err err = { 0 };
	double measured, s, best;
	json_t *m;

	ck_assert_msg(ens_pipeline(4, 4,
				   ENS_PASS("[t, u]", "      weights: [3, 1]\n      combine: logits\n"
						      "      compare_scratch: true\n"
						      "      compare_single: true\n"),
				   1, &err) == 0,
		      "%s", err.msg);
	m = pass_metrics("ensemble-distill", &measured);
	s = metric(m, "student_accuracy");
	ck_assert_double_eq_tol(measured, s, 1e-9); /* the host measured the student */
	ck_assert_double_eq_tol(metric(m, "teacher_t_accuracy"),
				step_number("train", "t", "accuracy"), 1e-9);
	ck_assert_double_eq_tol(metric(m, "teacher_u_accuracy"),
				step_number("train", "u", "accuracy"), 1e-9);
	ck_assert_double_eq_tol(metric(m, "gap"), metric(m, "ensemble_accuracy") - s, 1e-12);
	/* the ensemble's cost is its members' */
	ck_assert_double_eq(metric(m, "ensemble_bytes"),
			    step_number("train", "t", "bytes") + step_number("train", "u", "bytes"));
	ck_assert_double_eq(metric(m, "ensemble_flops"),
			    step_number("train", "t", "flops") + step_number("train", "u", "flops"));
	ck_assert(metric(m, "ensemble_latency1_ms") > 0);
	ck_assert(metric(m, "ensemble_latency256_ms") > 0);
	ck_assert_double_eq_tol(metric(m, "gain_over_scratch"), s - metric(m, "scratch_accuracy"),
				1e-12);
	best = fmax(metric(m, "single_t_accuracy"), metric(m, "single_u_accuracy"));
	ck_assert_double_eq(metric(m, "best_single_accuracy"), best);
	ck_assert_double_eq_tol(metric(m, "gain_over_best_single"), s - best, 1e-12);
	json_decref(m);
}
END_TEST

/*
 * With weights [1, 0] the ensemble is teacher t: its accuracy is t's, and
 * the student distilled from it is the one distilled from t alone (probs
 * averaging with weight 1 and 0 is t's probabilities exactly).
 */
START_TEST(test_ensemble_weight_zero)
{
	struct mc_err err = { 0 };
	double measured;
	json_t *m;

	ck_assert_msg(ens_pipeline(4, 4,
				   ENS_PASS("[t, u]", "      weights: [1, 0]\n"
						      "      compare_single: true\n"),
				   1, &err) == 0,
		      "%s", err.msg);
	m = pass_metrics("ensemble-distill", &measured);
	ck_assert_double_eq(metric(m, "ensemble_accuracy"), metric(m, "teacher_t_accuracy"));
	ck_assert_double_eq(metric(m, "student_accuracy"), metric(m, "single_t_accuracy"));
	ck_assert_ptr_null(json_object_get(m, "scratch_accuracy"));
	json_decref(m);
}
END_TEST

/* An ensemble of one (combine probs) is distill from that teacher, byte for byte. */
START_TEST(test_ensemble_of_one_is_distill)
{
	static const char distill[] = "  - distill:\n      student: s\n      teacher: t\n"
				      "      epochs: 5\n      batch_size: 16\n      lr: 0.01\n"
				      "      temperature: 3\n      alpha: 0.7\n";
	struct mc_err err = { 0 };

	ck_assert_msg(ens_pipeline(4, 4, distill, 1, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(rename(spath("out.safetensors"), spath("distill.safetensors")), 0);
	ck_assert_msg(ens_pipeline(4, 4,
				   ENS_PASS("[t]", "      combine: probs\n      temperature: 3\n"
						   "      alpha: 0.7\n"),
				   1, &err) == 0,
		      "%s", err.msg);
	assert_same_file(spath("distill.safetensors"), spath("out.safetensors"),
			 "the ensemble of one differs from distill with the same teacher");
}
END_TEST

/* Two teachers run per batch on augmented images: the same student bytes on 1 and 2 threads. */
START_TEST(test_ensemble_threads_identical)
{
	static const char pass[] = ENS_PASS("[t, u]", "      shift: 1\n      compare_single: true\n");
	struct mc_err err = { 0 };
	int saved = omp_get_max_threads();

	omp_set_num_threads(1);
	ck_assert_msg(ens_pipeline(4, 4, pass, 1, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(rename(spath("out.safetensors"), spath("out1.safetensors")), 0);
	omp_set_num_threads(2);
	ck_assert_msg(ens_pipeline(4, 4, pass, 1, &err) == 0, "%s", err.msg);
	omp_set_num_threads(saved);
	assert_same_file(spath("out1.safetensors"), spath("out.safetensors"),
			 "the student distilled from the ensemble on 1 thread differs from the one "
			 "on 2");
}
END_TEST

/*
 * grad_groups: one group is the ungrouped run's arithmetic (the student has
 * no batch norm), four groups give the same bytes on 1 and 2 threads with
 * the targets cached and with the teacher run per group (shift), and a G
 * that does not divide batch_size is refused at its place.
 */
START_TEST(test_grad_groups)
{
	static const char base[] = "      epochs: 3\n      batch_size: 16\n      lr: 0.01\n";
	struct mc_err err = { 0 };
	char params[512], place[4300];

	ck_assert_msg(pipeline(4, base, 1, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(rename(spath("out.safetensors"), spath("plain.safetensors")), 0);
	snprintf(params, sizeof(params), "%s      grad_groups: 1\n", base);
	ck_assert_msg(pipeline(4, params, 1, &err) == 0, "%s", err.msg);
	assert_same_file(spath("plain.safetensors"), spath("out.safetensors"),
			 "grad_groups 1 differs from the run without groups");
	for (int shift = 0; shift <= 1; shift++) {
		snprintf(params, sizeof(params), "%s      grad_groups: 4\n      shift: %d\n", base,
			 shift);
		assert_threads_identical(params, "grad_groups 4: 1 thread differs from 2");
	}
	snprintf(params, sizeof(params), "%s      grad_groups: 3\n", base);
	ck_assert_int_eq(pipeline(4, params, 0, &err), MC_EINVAL);
	PATHF(place, "%s:23:", spath("p.yaml"));
	ck_assert_msg(strstr(err.msg, place), "'%s' lacks the place '%s'", err.msg, place);
	ck_assert_msg(strstr(err.msg, "grad_groups: 3 groups do not divide batch_size 16 into "
				      "equal groups; set grad_groups to a divisor of 16 (or "
				      "batch_size to a multiple of 3)"),
		      "'%s'", err.msg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("distill");
	TCase *loss = tcase_create("loss"), *pipe = tcase_create("pipeline");
	SRunner *sr;
	int failed;

	tcase_add_test(loss, test_loss_limits);
	tcase_add_test(loss, test_loss_high_temperature);
	tcase_add_test(loss, test_loss_mixed);
	tcase_add_test(loss, test_ensemble_targets);
	suite_add_tcase(s, loss);
	tcase_add_checked_fixture(pipe, setup, tiny_teardown);
	tcase_set_timeout(pipe, 60);
	tcase_add_test(pipe, test_pipeline_distills);
	tcase_add_test(pipe, test_compare_scratch);
	tcase_add_test(pipe, test_class_mismatch_refused);
	tcase_add_test(pipe, test_input_mismatch_refused);
	tcase_add_test(pipe, test_threads_identical);
	tcase_add_test(pipe, test_ensemble_refused);
	tcase_add_test(pipe, test_ensemble_report);
	tcase_add_test(pipe, test_ensemble_weight_zero);
	tcase_add_test(pipe, test_ensemble_of_one_is_distill);
	tcase_add_test(pipe, test_ensemble_threads_identical);
	tcase_add_test(pipe, test_grad_groups);
	suite_add_tcase(s, pipe);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
