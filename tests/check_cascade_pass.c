// SPDX-License-Identifier: MIT
/*
 * check_cascade_pass.c - the cascade pass: calibration on constructed
 * arrays whose answer is worked out by hand (two and three stages, both
 * targets) and against a brute-force search over every threshold setting;
 * the Pareto front and its table rows; and pipelines run through the host
 * on the tiny data set: a cascade of one stage equals that stage, a
 * calibrated two-stage cascade file loads and its measured accuracy and
 * exits match running it, fixed thresholds are kept, and bad stages,
 * thresholds and calibration splits are refused at validation with their
 * place in the file.
 *
 * calibrate.c is included so that its functions can be fed arrays directly.
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
#include "../passes/cascade/calibrate.c"

#define SWEEP_ROWS_TEST 16

/* ---------------------------------------------------------------- constructed examples */

/*
 * Two stages, ten samples, costs 1 and 9. Every setting, worked out by hand
 * (threshold: samples exiting at stage 0, correct in all, cost per sample):
 *	never 0 8 10.0   0.95 1 8 9.1   0.9 3 9 7.3   0.8 4 8 6.4   0.7 5 8 5.5
 *	0.6 6 8 4.6      0.5 7 7 3.7    0.45 8 6 2.8  0.4 9 7 1.9   0.3 10 6 1.0
 * The last stage alone gets 8 right at cost 9.
 */
static const float two_conf0[] = { 0.95f, 0.9f, 0.9f, 0.8f, 0.7f, 0.6f, 0.5f, 0.45f, 0.4f, 0.3f };
static const uint8_t two_ok0[] = { 1, 1, 1, 0, 1, 1, 0, 0, 1, 0 };
static const uint8_t two_ok1[] = { 1, 1, 0, 1, 1, 1, 1, 1, 0, 1 };
static const float two_conf1[10] = { 0 };

static struct cascade_calib two_stages(void)
{
	struct cascade_calib c = { .n_stages = 2, .n = 10 };

	c.conf[0] = two_conf0;
	c.conf[1] = two_conf1;
	c.correct[0] = two_ok0;
	c.correct[1] = two_ok1;
	c.cost[0] = 1;
	c.cost[1] = 9;
	return c;
}

/* Calibrates c and checks the first threshold(s), correct count and cost. */
static void expect(const struct cascade_calib *c, int target, double limit, const float *thr,
		   int64_t correct, double cost)
{
	struct cascade_point p;
	struct mc_err err = { 0 };

	ck_assert_msg(cascade_calibrate(c, target, limit, &p, NULL, &err) == 0, "%s", err.msg);
	for (int s = 0; s < c->n_stages - 1; s++)
		ck_assert_msg(p.thr[s] == thr[s], "target %d limit %g: threshold %d is %g, want %g",
			      target, limit, s, p.thr[s], thr[s]);
	ck_assert_int_eq(p.correct, correct);
	ck_assert_double_eq_tol(p.cost, cost, 1e-9);
	ck_assert_double_eq_tol(p.rel_cost, cost / c->cost[c->n_stages - 1], 1e-9);
}

START_TEST(test_two_stages_drop)
{
	struct cascade_calib c = two_stages();

	/* no drop: 8 right, the cheapest such is 0.6 (cost 4.6) */
	expect(&c, CASCADE_ACCURACY_DROP, 0, (const float[]){ 0.6f }, 8, 4.6);
	/* one sample (0.1): 7 right, cheapest 0.4 (1.9), not 0.5 (3.7) */
	expect(&c, CASCADE_ACCURACY_DROP, 0.1, (const float[]){ 0.4f }, 7, 1.9);
	/* two samples: everything may exit at stage 0 */
	expect(&c, CASCADE_ACCURACY_DROP, 0.2, (const float[]){ 0.3f }, 6, 1.0);
	/* just under one sample is still no drop */
	expect(&c, CASCADE_ACCURACY_DROP, 0.0999, (const float[]){ 0.6f }, 8, 4.6);
}
END_TEST

START_TEST(test_two_stages_cost)
{
	struct cascade_calib c = two_stages();
	struct cascade_point p;
	struct mc_err err = { 0 };

	/* within 4.5: 7 right at 0.5 (3.7) and 0.4 (1.9); the cheaper wins */
	expect(&c, CASCADE_COST, 0.5, (const float[]){ 0.4f }, 7, 1.9);
	/* within 7.38: 0.9 gets 9 right, more than the last stage alone */
	expect(&c, CASCADE_COST, 0.82, (const float[]){ 0.9f }, 9, 7.3);
	/* within 1.0 exactly: everything exits at stage 0 */
	expect(&c, CASCADE_COST, 1.0 / 9, (const float[]){ 0.3f }, 6, 1.0);
	/* below the first stage's own cost nothing fits */
	ck_assert_int_eq(cascade_calibrate(&c, CASCADE_COST, 0.1, &p, NULL, &err), MC_ERUN);
	ck_assert_msg(strstr(err.msg, "max_cost 0.1") && strstr(err.msg, "0.1111"), "%s", err.msg);
}
END_TEST

/*
 * Three stages, six samples, costs 1, 3, 10. By hand: (0.8, 0.2) sends
 * samples 0-1 out at stage 0 (right) and 2-5 at stage 1 (5 right in all,
 * the last stage's count) at (6 + 12) / 6 = 3; (0.8, 0.7) keeps sample 4
 * for the last stage, 6 right at 28 / 6. (0.8, 0.5) ties with (0.8, 0.7)
 * and loses on the lower threshold.
 */
static const float three_conf0[] = { 0.9f, 0.8f, 0.3f, 0.3f, 0.2f, 0.1f };
static const float three_conf1[] = { 0.5f, 0.5f, 0.9f, 0.85f, 0.2f, 0.7f };
static const float three_conf2[6] = { 0 };
static const uint8_t three_ok0[] = { 1, 1, 0, 0, 0, 0 };
static const uint8_t three_ok1[] = { 1, 1, 1, 1, 0, 1 };
static const uint8_t three_ok2[] = { 1, 1, 1, 1, 1, 0 };

START_TEST(test_three_stages)
{
	struct cascade_calib c = { .n_stages = 3, .n = 6, .cost = { 1, 3, 10 } };
	struct cascade_sweep sw;
	struct cascade_point p;
	struct mc_err err = { 0 };

	c.conf[0] = three_conf0;
	c.conf[1] = three_conf1;
	c.conf[2] = three_conf2;
	c.correct[0] = three_ok0;
	c.correct[1] = three_ok1;
	c.correct[2] = three_ok2;
	expect(&c, CASCADE_ACCURACY_DROP, 0, (const float[]){ 0.8f, 0.2f }, 5, 3.0);
	expect(&c, CASCADE_COST, 0.5, (const float[]){ 0.8f, 0.7f }, 6, 28.0 / 6);
	expect(&c, CASCADE_COST, 0.3, (const float[]){ 0.8f, 0.2f }, 5, 3.0);
	/* a drop of one sample changes nothing: nothing cheaper gets 4 right */
	expect(&c, CASCADE_ACCURACY_DROP, 1.0 / 6, (const float[]){ 0.8f, 0.2f }, 5, 3.0);
	/* two samples: 0-4 out at stage 0, sample 5 at stage 1 for any threshold
	 * up to 0.7, and the highest of those wins the tie */
	expect(&c, CASCADE_ACCURACY_DROP, 2.0 / 6, (const float[]){ 0.2f, 0.7f }, 3, 1.5);
	/* the grid holds every distinct value here: (5 + 1) x (5 + 1) settings */
	ck_assert_msg(cascade_calibrate(&c, CASCADE_COST, 0.5, &p, &sw, &err) == 0, "%s",
		      err.msg);
	ck_assert_int_eq(sw.n, 6 * 6);
	ck_assert_int_eq(sw.exhaustive, 1);
	cascade_sweep_free(&sw);
}
END_TEST

/* ---------------------------------------------------------------- brute force */

/* Deterministic pseudo-random arrays: a stage is right more often when sure. */
static void random_arrays(struct cascade_calib *c, int k, int64_t n, float *conf,
			  uint8_t *ok, unsigned seed, int levels)
{
	unsigned s = seed;

	c->n_stages = k;
	c->n = n;
	for (int st = 0; st < k; st++) {
		c->conf[st] = conf + st * n;
		c->correct[st] = ok + st * n;
		c->cost[st] = st == k - 1 ? 10.0 : 1.0 + st;
		for (int64_t i = 0; i < n; i++) {
			float v;

			s = s * 1103515245u + 12345u;
			v = (float)((s >> 8) % (unsigned)levels) / (float)levels;
			s = s * 1103515245u + 12345u;
			conf[st * n + i] = v;
			ok[st * n + i] = (float)((s >> 8) % 1000) / 1000.0f <
					 0.4f + 0.1f * st + 0.5f * v;
		}
	}
}

/* The best over every setting whose thresholds are distinct confidence
 * values or "never", by the same rules, found by trying them all. */
static void brute(const struct cascade_calib *c, int target, double limit,
		  struct cascade_point *best)
{
	float cand[MC_CASCADE_MAX_STAGES][256];
	int nc[MC_CASCADE_MAX_STAGES], at[MC_CASCADE_MAX_STAGES] = { 0 }, k = c->n_stages,
	    found = 0;
	int64_t ref;
	double ref_acc;

	cascade_reference(c, &ref, &ref_acc);
	for (int s = 0; s < k - 1; s++) {
		nc[s] = 0;
		cand[s][nc[s]++] = CASCADE_NEVER;
		for (int64_t i = 0; i < c->n; i++) {
			int seen = 0;

			for (int j = 0; j < nc[s]; j++)
				seen |= cand[s][j] == c->conf[s][i];
			if (!seen) {
				ck_assert_int_lt(nc[s], 256);
				cand[s][nc[s]++] = c->conf[s][i];
			}
		}
	}
	for (;;) {
		float thr[MC_CASCADE_MAX_STAGES];
		struct cascade_point p;
		int s, ok;

		for (s = 0; s < k - 1; s++)
			thr[s] = cand[s][at[s]];
		cascade_eval(c, thr, &p);
		ok = target == CASCADE_ACCURACY_DROP
			     ? (double)(ref - p.correct) / (double)c->n <= limit + 1e-12
			     : p.rel_cost <= limit + 1e-12;
		if (ok && (!found || better(target, &p, best, k))) {
			*best = p;
			found = 1;
		}
		for (s = k - 2; s >= 0 && ++at[s] == nc[s]; s--)
			at[s] = 0;
		if (s < 0)
			break;
	}
	ck_assert(found);
}

static void agree(int k, int64_t n, int levels, unsigned seed)
{
	static float conf[MC_CASCADE_MAX_STAGES * 600];
	static uint8_t ok[MC_CASCADE_MAX_STAGES * 600];
	const double drops[] = { 0, 0.01, 0.03, 0.1 }, budgets[] = { 0.3, 0.5, 0.8 };
	struct cascade_calib c = { 0 };
	struct cascade_point got, want;
	struct mc_err err = { 0 };

	random_arrays(&c, k, n, conf, ok, seed, levels);
	for (int i = 0; i < 4; i++) {
		ck_assert_msg(cascade_calibrate(&c, CASCADE_ACCURACY_DROP, drops[i], &got, NULL,
						&err) == 0,
			      "%s", err.msg);
		brute(&c, CASCADE_ACCURACY_DROP, drops[i], &want);
		ck_assert_msg(memcmp(got.thr, want.thr, sizeof(got.thr)) == 0 &&
				      got.correct == want.correct && got.cost == want.cost,
			      "%d stages, drop %g: got (%g, %g) %lld right at %g, brute force (%g, %g) "
			      "%lld at %g",
			      k, drops[i], got.thr[0], got.thr[1], (long long)got.correct, got.cost,
			      want.thr[0], want.thr[1], (long long)want.correct, want.cost);
	}
	for (int i = 0; i < 3; i++) {
		ck_assert_msg(cascade_calibrate(&c, CASCADE_COST, budgets[i], &got, NULL, &err) == 0,
			      "%s", err.msg);
		brute(&c, CASCADE_COST, budgets[i], &want);
		ck_assert_msg(memcmp(got.thr, want.thr, sizeof(got.thr)) == 0,
			      "%d stages, cost %g: got (%g, %g) %lld right at %g, brute force "
			      "(%g, %g) %lld at %g",
			      k, budgets[i], got.thr[0], got.thr[1], (long long)got.correct,
			      got.cost, want.thr[0], want.thr[1], (long long)want.correct, want.cost);
	}
}

/* Two stages are scanned exactly; three stages over at most 101 samples
 * have every confidence value on the quantile grid. Both equal trying every
 * setting. */
START_TEST(test_brute_force)
{
	agree(2, 500, 200, 1);
	agree(2, 300, 7, 2); /* many ties */
	agree(3, 101, 40, 3);
	agree(3, 90, 1000, 4);
}
END_TEST

/* The two-stage scan's points are what cascade_eval gives for their thresholds. */
START_TEST(test_scan_matches_eval)
{
	static float conf[2 * 400];
	static uint8_t ok[2 * 400];
	struct cascade_calib c = { 0 };
	struct cascade_sweep sw;
	struct cascade_point p;
	struct mc_err err = { 0 };

	random_arrays(&c, 2, 400, conf, ok, 9, 50);
	ck_assert(cascade_calibrate(&c, CASCADE_ACCURACY_DROP, 0.01, &p, &sw, &err) == 0);
	ck_assert_int_eq(sw.n, 51); /* never + 50 distinct values */
	for (int i = 0; i < sw.n; i++) {
		struct cascade_point e;

		cascade_eval(&c, sw.pts[i].thr, &e);
		ck_assert_msg(memcmp(&e, &sw.pts[i], sizeof(e)) == 0, "point %d differs", i);
	}
	cascade_sweep_free(&sw);
}
END_TEST

/* More stages than the grid allows exhaustively: coordinate descent meets
 * the target, beats where it started, and gives the same answer twice. */
START_TEST(test_descent)
{
	static float conf[4 * 300];
	static uint8_t ok[4 * 300];
	struct cascade_calib c = { 0 };
	struct cascade_sweep sw;
	struct cascade_point p, q, start;
	struct mc_err err = { 0 };
	float never[3] = { CASCADE_NEVER, CASCADE_NEVER, CASCADE_NEVER };
	int64_t ref;
	double ref_acc;

	random_arrays(&c, 4, 300, conf, ok, 5, 80);
	cascade_reference(&c, &ref, &ref_acc);
	ck_assert(cascade_calibrate(&c, CASCADE_ACCURACY_DROP, 0.02, &p, &sw, &err) == 0);
	ck_assert_int_eq(sw.exhaustive, 0);
	ck_assert_int_ge(p.correct, ref - 6);
	cascade_eval(&c, never, &start);
	ck_assert_double_lt(p.cost, start.cost);
	cascade_sweep_free(&sw);
	ck_assert(cascade_calibrate(&c, CASCADE_ACCURACY_DROP, 0.02, &q, NULL, &err) == 0);
	ck_assert_int_eq(memcmp(&p, &q, sizeof(p)), 0);
	ck_assert(cascade_calibrate(&c, CASCADE_COST, 0.4, &q, NULL, &err) == 0);
	ck_assert_double_le(q.rel_cost, 0.4);
}
END_TEST

/* The front rises in accuracy with cost; every point tried is dominated by
 * one on it; the table rows include the chosen point. */
START_TEST(test_front)
{
	static float conf[2 * 500];
	static uint8_t ok[2 * 500];
	struct cascade_calib c = { 0 };
	struct cascade_sweep sw;
	struct cascade_point p;
	struct mc_err err = { 0 };
	int *front, rows[SWEEP_ROWS_TEST + 1], nf, nr, has = 0;

	random_arrays(&c, 2, 500, conf, ok, 11, 300);
	ck_assert(cascade_calibrate(&c, CASCADE_ACCURACY_DROP, 0.005, &p, &sw, &err) == 0);
	front = malloc((size_t)sw.n * sizeof(int));
	nf = cascade_front(&sw, front);
	ck_assert_int_gt(nf, SWEEP_ROWS_TEST);
	for (int i = 1; i < nf; i++) {
		ck_assert(sw.pts[front[i]].cost > sw.pts[front[i - 1]].cost);
		ck_assert(sw.pts[front[i]].correct > sw.pts[front[i - 1]].correct);
	}
	for (int i = 0; i < sw.n; i++) {
		int dominated = 0;

		for (int j = 0; j < nf; j++)
			dominated |= sw.pts[front[j]].cost <= sw.pts[i].cost &&
				     sw.pts[front[j]].correct >= sw.pts[i].correct;
		ck_assert_msg(dominated, "point %d is above the front", i);
	}
	nr = cascade_front_rows(&sw, front, nf, SWEEP_ROWS_TEST, &p, rows);
	ck_assert_int_ge(nr, SWEEP_ROWS_TEST);
	ck_assert_int_le(nr, SWEEP_ROWS_TEST + 1);
	ck_assert_int_eq(rows[0], front[0]);
	ck_assert_int_eq(rows[nr - 1], front[nf - 1]);
	for (int r = 0; r < nr; r++) {
		has |= memcmp(sw.pts[rows[r]].thr, p.thr, sizeof(p.thr)) == 0;
		if (r)
			ck_assert(sw.pts[rows[r]].cost > sw.pts[rows[r - 1]].cost);
	}
	ck_assert_msg(has, "the chosen point is not among the rows");
	free(front);
	cascade_sweep_free(&sw);
}
END_TEST

/* ---------------------------------------------------------------- pipelines */

static void setup(void)
{
	static const char *const passes[] = { "cascade", NULL };

	tiny_setup("cascade", passes);
}

/*
 * Writes p.yaml: train (96 samples), val (the other 32) and test splits;
 * models a (64-8-4, a weak first stage), b (64-32-4) and w (input w_input,
 * w_classes classes, never trained); a and b trained; the cascade pass with
 * stages on line 24 and further parameter lines from line 27. b is the
 * pipeline's output. Loads and, when run is set, runs it.
 */
static int pipeline(const char *stages, const char *params, const char *w_input, int w_classes,
		    int run, struct mc_err *err)
{
	char text[8192];

	PATHF(text,
	      "mcomp: 1\n"
	      "seed: 5\n"
	      "data:\n"
	      "  train: {idx: train, count: 96}\n"
	      "  val: {idx: train, first: 96, count: 32}\n"
	      "  test: {idx: test}\n"
	      "models:\n"
	      "  a:\n"
	      "    build:\n"
	      "      input: [1, 8, 8]\n"
	      "      layers: [flatten, {linear: 8}, relu, {linear: 4}]\n"
	      "  b:\n"
	      "    build:\n"
	      "      input: [1, 8, 8]\n"
	      "      layers: [flatten, {linear: 32}, relu, {linear: 4}]\n"
	      "  w:\n"
	      "    build:\n"
	      "      input: [%s]\n"
	      "      layers: [flatten, {linear: 8}, relu, {linear: %d}]\n"
	      "passes:\n"
	      "  - train: {model: a, epochs: 2, batch_size: 16, lr: 0.01}\n"
	      "  - train: {model: b, epochs: 20, batch_size: 16, lr: 0.01}\n"
	      "  - cascade:\n"
	      "      stages: %s\n"
	      "      cost: flops\n"
	      "      output: c.safetensors\n"
	      "%s"
	      "output: {model: b, path: b.safetensors}\n"
	      "report: report.json\n",
	      w_input, w_classes, stages, params);
	return tiny_pipeline(reg, text, run, err);
}

static int good(const char *stages, const char *params, int run, struct mc_err *err)
{
	return pipeline(stages, params, "1, 8, 8", 4, run, err);
}

/* The cascade row's metrics of report.json (a new reference). */
static json_t *cascade_metrics(void)
{
	json_error_t je;
	json_t *doc = json_load_file(spath("report.json"), 0, &je), *row, *m = NULL;
	size_t i;

	ck_assert_msg(doc != NULL, "report.json: %s", je.text);
	json_array_foreach(json_object_get(doc, "steps"), i, row) {
		json_t *pass = json_object_get(row, "pass");

		if (json_is_string(pass) && strcmp(json_string_value(pass), "cascade") == 0)
			m = json_incref(json_object_get(row, "metrics"));
	}
	json_decref(doc);
	ck_assert_msg(m != NULL, "report.json has no cascade row");
	return m;
}

static double metric(json_t *m, const char *key)
{
	json_t *v = json_object_get(m, key);

	ck_assert_msg(json_is_number(v), "no metric %s", key);
	return json_number_value(v);
}

static struct mc_dataset *test_split(void)
{
	struct mc_err err = { 0 };
	struct mc_dataset *d = mc_idx_load_prefix(spath("test"), &err);

	ck_assert_msg(d != NULL, "%s", err.msg);
	return d;
}

/* Runs c over d in batches of 16: logits[d->n, classes], exits[d->n]; returns accuracy. */
static double run_cascade(const struct mc_cascade *c, const struct mc_dataset *d, float *logits,
			  int *exits)
{
	struct mc_err err = { 0 };
	struct mc_cascade_exec *e = mc_cascade_exec_new(c, 16, &err);
	int classes = (int)mc_model_n_classes(c->stages[0]);
	int64_t right = 0;

	ck_assert_msg(e != NULL, "%s", err.msg);
	for (int64_t i = 0; i < d->n; i += 16) {
		int n = (int)(d->n - i < 16 ? d->n - i : 16);

		mc_cascade_forward(e, d->x + i * d->sample_numel, n, logits + i * classes,
				   exits + i);
	}
	mc_cascade_exec_free(e);
	for (int64_t i = 0; i < d->n; i++) {
		const float *z = logits + i * classes;
		int best = 0;

		for (int j = 1; j < classes; j++)
			if (z[j] > z[best])
				best = j;
		right += best == d->y[i];
	}
	return (double)right / (double)d->n;
}

/* A cascade of one stage is that stage: same logits, same accuracy. */
START_TEST(test_one_stage)
{
	struct mc_err err = { 0 };
	struct mc_dataset *d;
	struct mc_cascade *c;
	struct mc_model *b;
	struct mc_exec *e;
	float logits[N_TEST * 4];
	int exits[N_TEST];
	double acc, b_acc;
	json_t *m;

	ck_assert_msg(good("[b]", "", 1, &err) == 0, "%s", err.msg);
	c = mc_cascade_load(spath("c.safetensors"), &err);
	ck_assert_msg(c != NULL, "%s", err.msg);
	ck_assert_int_eq(c->n_stages, 1);
	ck_assert_str_eq(c->names[0], "b");
	b = mc_model_load(spath("b.safetensors"), &err);
	ck_assert_msg(b != NULL, "%s", err.msg);
	d = test_split();
	acc = run_cascade(c, d, logits, exits);
	e = mc_exec_new(b, N_TEST, 0, &err);
	ck_assert(e != NULL);
	ck_assert_int_eq(memcmp(mc_forward(e, d->x, N_TEST), logits, sizeof(logits)), 0);
	for (int i = 0; i < N_TEST; i++)
		ck_assert_int_eq(exits[i], 0);
	ck_assert_int_eq(mc_evaluate(b, d, 256, &b_acc, NULL, &err), 0);
	m = cascade_metrics();
	ck_assert_double_eq_tol(metric(m, "accuracy"), acc, 1e-12);
	ck_assert_double_eq_tol(metric(m, "accuracy"), b_acc, 1e-12);
	ck_assert_double_eq_tol(metric(m, "last_accuracy"), b_acc, 1e-12);
	ck_assert_double_eq_tol(metric(m, "b_exit_fraction"), 1, 1e-12);
	ck_assert_double_eq_tol(metric(m, "calib_rel_cost"), 1, 1e-12);
	json_decref(m);
	mc_exec_free(e);
	mc_model_free(b);
	mc_cascade_free(c);
	mc_dataset_free(d);
}
END_TEST

/* Calibrated on val, the cascade file loads; running it gives the report's
 * accuracy and exit fractions, exits are exactly the samples at or above
 * the threshold, and the plot is written. */
START_TEST(test_two_stages_pipeline)
{
	struct mc_err err = { 0 };
	struct mc_dataset *d;
	struct mc_cascade *c;
	float logits[N_TEST * 4], conf[N_TEST];
	int exits[N_TEST], n0 = 0;
	double acc;
	long len;
	char *svg;
	json_t *m;

	ck_assert_msg(good("[a, b]", "      max_drop: 0\n      plot: sweep.svg\n", 1, &err) == 0,
		      "%s", err.msg);
	c = mc_cascade_load(spath("c.safetensors"), &err);
	ck_assert_msg(c != NULL, "%s", err.msg);
	ck_assert_int_eq(c->n_stages, 2);
	ck_assert_str_eq(c->names[0], "a");
	ck_assert_str_eq(c->names[1], "b");
	ck_assert_int_eq(c->confidence, MC_CONF_MAX_PROB);
	d = test_split();
	acc = run_cascade(c, d, logits, exits);
	/* stage a's confidence decides the exits */
	{
		struct mc_exec *e = mc_exec_new(c->stages[0], N_TEST, 0, &err);

		mc_confidence(MC_CONF_MAX_PROB, mc_forward(e, d->x, N_TEST), N_TEST, 4, conf);
		mc_exec_free(e);
	}
	for (int i = 0; i < N_TEST; i++) {
		ck_assert_int_eq(exits[i], conf[i] >= c->thresholds[0] ? 0 : 1);
		n0 += exits[i] == 0;
	}
	m = cascade_metrics();
	ck_assert_double_eq_tol(metric(m, "accuracy"), acc, 1e-12);
	ck_assert_double_eq_tol(metric(m, "a_exit_fraction"), (double)n0 / N_TEST, 1e-12);
	ck_assert_double_eq_tol(metric(m, "b_exit_fraction"), 1 - (double)n0 / N_TEST, 1e-12);
	ck_assert_double_eq_tol(metric(m, "a_threshold"), c->thresholds[0], 1e-12);
	/* max_drop 0: no worse than b alone on val */
	ck_assert_double_ge(metric(m, "calib_accuracy"), metric(m, "calib_last_accuracy"));
	ck_assert_double_eq_tol(metric(m, "a_cost"), 2 * (64 * 8 + 8 * 4), 1e3);
	ck_assert_double_gt(metric(m, "throughput256"), 0);
	ck_assert_double_gt(metric(m, "speedup256"), 0);
	json_decref(m);
	svg = slurp(spath("sweep.svg"), &len);
	ck_assert_msg(strncmp(svg, "<?xml", 5) == 0 && strstr(svg, "</svg>"), "not an SVG");
	ck_assert_msg(strstr(svg, "Pareto front"), "the plot has no front");
	free(svg);
	mc_cascade_free(c);
	mc_dataset_free(d);
}
END_TEST

/* Fixed thresholds are written as given; the cost target stays in budget. */
START_TEST(test_fixed_and_cost)
{
	struct mc_err err = { 0 };
	struct mc_cascade *c;
	json_t *m;

	ck_assert_msg(good("[a, b]", "      thresholds: [0.75]\n      confidence: margin\n", 1,
			   &err) == 0,
		      "%s", err.msg);
	c = mc_cascade_load(spath("c.safetensors"), &err);
	ck_assert_msg(c != NULL, "%s", err.msg);
	ck_assert_float_eq(c->thresholds[0], 0.75f);
	ck_assert_int_eq(c->confidence, MC_CONF_MARGIN);
	mc_cascade_free(c);
	ck_assert_msg(good("[a, b]", "      target: cost\n      max_cost: 0.5\n", 1, &err) == 0,
		      "%s", err.msg);
	m = cascade_metrics();
	ck_assert_double_le(metric(m, "calib_rel_cost"), 0.5);
	json_decref(m);
}
END_TEST

/* With FLOP costs the cascade file is the same bytes on one thread and two. */
START_TEST(test_threads_identical)
{
	static const char params[] = "      max_drop: 0\n";
	struct mc_err err = { 0 };
	int saved = omp_get_max_threads();

	omp_set_num_threads(1);
	ck_assert_msg(good("[a, b]", params, 1, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(rename(spath("c.safetensors"), spath("c1.safetensors")), 0);
	omp_set_num_threads(2);
	ck_assert_msg(good("[a, b]", params, 1, &err) == 0, "%s", err.msg);
	omp_set_num_threads(saved);
	assert_same_file(spath("c1.safetensors"), spath("c.safetensors"),
			 "the cascade built on 1 thread differs from the one on 2");
}
END_TEST

/* The error is at p.yaml:LINE:COL and says what. */
static void refused(int ret, const struct mc_err *err, int line, int col, const char *what)
{
	char place[4300];

	ck_assert_msg(ret == MC_EINVAL, "validated (%d): %s", ret, err->msg);
	PATHF(place, "%s:%d:%d: ", spath("p.yaml"), line, col);
	ck_assert_msg(strstr(err->msg, place), "'%s' lacks the place '%s'", err->msg, place);
	ck_assert_msg(strstr(err->msg, what), "'%s' lacks '%s'", err->msg, what);
}

/* Each bad cascade is refused before anything runs, at its key. */
START_TEST(test_refused)
{
	struct mc_err err = { 0 };

	refused(pipeline("[w, b]", "", "1, 4, 16", 4, 0, &err), &err, 24, 7,
		"stage 'b' takes input [1, 8, 8] but stage 'w' takes [1, 4, 16]");
	refused(pipeline("[b, w]", "", "1, 8, 8", 5, 0, &err), &err, 24, 7,
		"stage 'w' outputs 5 classes but stage 'b' outputs 4");
	refused(good("[a, bb]", "", 0, &err), &err, 24, 15, "unknown model 'bb'");
	refused(good("[a, b, a]", "", 0, &err), &err, 24, 7, "model 'a' is stage 1 and stage 3");
	refused(good("[]", "", 0, &err), &err, 24, 7, "0 stages; name 1 to 8 models");
	refused(good("[a, b]", "      thresholds: [0.5, 0.9]\n", 0, &err), &err, 27, 7,
		"2 thresholds for 2 stages; give one per stage but the last (1)");
	refused(good("[a, w, b]", "      thresholds: [0.5]\n", 0, &err), &err, 27, 7,
		"1 thresholds for 3 stages");
	refused(good("[a, b]", "      calibrate: test\n", 0, &err), &err, 27, 7,
		"hold out part of the training data");
	/* the same cascades, put right, pass validation */
	ck_assert_msg(pipeline("[w, b]", "", "1, 8, 8", 4, 0, &err) == 0, "%s", err.msg);
	ck_assert_msg(good("[a, w, b]", "      thresholds: [0.5, 0.9]\n", 0, &err) == 0, "%s",
		      err.msg);
	ck_assert_msg(good("[a, b]", "      calibrate: val\n", 0, &err) == 0, "%s", err.msg);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cascade");
	TCase *cal = tcase_create("calibration"), *pipe = tcase_create("pipeline");
	SRunner *sr;
	int failed;

	tcase_add_test(cal, test_two_stages_drop);
	tcase_add_test(cal, test_two_stages_cost);
	tcase_add_test(cal, test_three_stages);
	tcase_add_test(cal, test_brute_force);
	tcase_add_test(cal, test_scan_matches_eval);
	tcase_add_test(cal, test_descent);
	tcase_add_test(cal, test_front);
	suite_add_tcase(s, cal);
	tcase_add_checked_fixture(pipe, setup, tiny_teardown);
	tcase_set_timeout(pipe, 60);
	tcase_add_test(pipe, test_one_stage);
	tcase_add_test(pipe, test_two_stages_pipeline);
	tcase_add_test(pipe, test_fixed_and_cost);
	tcase_add_test(pipe, test_threads_identical);
	tcase_add_test(pipe, test_refused);
	suite_add_tcase(s, pipe);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
