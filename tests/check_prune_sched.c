// SPDX-License-Identifier: MIT
/*
 * check_prune_sched.c - the prune pass's schedules (passes/prune/methods.c,
 * compiled in) against TensorFlow Model Optimization's PolynomialDecay,
 * written out here from its definition and independently of the pass:
 *
 *   p = min(1, max(0, (step - begin_step) / (end_step - begin_step)))
 *   sparsity = final + (initial - final) * (1 - p)^power     (in float32)
 *   prune at step  <=>  begin_step <= step <= end_step
 *                       and (step - begin_step) mod frequency == 0
 *   kept = max(round_half_even(numel * (1 - sparsity)), 1)
 *
 * at every step 0..1200, for the recipe's schedule (0 -> 0.5 over steps
 * 0..1000, power 3, TF-MOT's default frequency 100) and for schedules whose
 * end is off the frequency grid, where Zhu & Gupta's gradual schedule as
 * the pass runs it takes one more update than TF-MOT.
 */
#include <check.h>
#include <math.h>
#include <stdint.h>

#include "../passes/prune/prune.h"

/* TF-MOT computes the sparsity in float32 tensors. */
static float tf_sparsity(double si, double sf, int64_t begin, int64_t end, double power,
			 int64_t step)
{
	float p = (float)(step - begin) / (float)(end - begin);

	p = fminf(1.0f, fmaxf(0.0f, p));
	return (float)(si - sf) * powf(1.0f - p, (float)power) + (float)sf;
}

/* The same in double, as the pass computes it. */
static double tf_sparsity_d(double si, double sf, int64_t begin, int64_t end, double power,
			    int64_t step)
{
	double p = (double)(step - begin) / (double)(end - begin);

	p = p < 0 ? 0 : p > 1 ? 1 : p;
	return sf + (si - sf) * pow(1 - p, power);
}

static int tf_should_prune(int64_t step, int64_t begin, int64_t end, int64_t freq)
{
	int64_t r = (step - begin) % freq;

	if (r < 0)
		r += freq; /* floormod */
	return step >= begin && (step <= end || end < 0) && r == 0;
}

/* Weights pruned of numel: numel - max(round_half_even(numel (1 - s)), 1). */
static int64_t tf_pruned(double s, int64_t numel)
{
	double x = (double)numel * (1.0 - s), k = floor(x);

	if (x - k > 0.5 || (x - k == 0.5 && fmod(k, 2.0) != 0))
		k += 1;
	return numel - (k < 1 ? 1 : (int64_t)k);
}

struct tf_case {
	double si, sf;
	int64_t begin, end;
	double power;
	int64_t freq;
};

static const struct tf_case cases[] = {
	{ 0.0, 0.5, 0, 1000, 3, 100 }, /* issue 15's recipe, TF-MOT's default frequency */
	{ 0.0, 0.5, 0, 1000, 3, 1 },
	{ 0.2, 0.8, 150, 1000, 3, 70 }, /* end off the grid: 990 is the last update */
	{ 0.1, 0.9, 0, 333, 2, 20 },
	{ 0.0, 0.75, 10, 500, 1, 7 },
	{ 0.3, 0.6, 0, 1200, 5.5, 100 },
};

START_TEST(test_polynomial_is_tfmot)
{
	const struct tf_case *c = &cases[_i];
	struct prune_sched s = { .kind = PRUNE_POLYNOMIAL, .si = c->si, .t0 = c->begin,
				 .t1 = c->end, .freq = c->freq, .power = c->power };
	static const int64_t numels[] = { 1, 2, 3, 27, 128, 144, 999, 2048, 4097 };
	int updates = 0;

	for (int64_t t = 0; t <= 1200; t++) {
		double got = prune_sched_sparsity(&s, c->sf, t);
		float want = tf_sparsity(c->si, c->sf, c->begin, c->end, c->power, t);
		int due = tf_should_prune(t, c->begin, c->end, c->freq);

		ck_assert_msg(fabs(got - tf_sparsity_d(c->si, c->sf, c->begin, c->end, c->power,
						       t)) <= 1e-12,
			      "case %d, step %lld: sparsity %.17g", _i, (long long)t, got);
		ck_assert_msg(fabs(got - (double)want) <= 1e-6,
			      "case %d, step %lld: sparsity %.9g, TF-MOT (float32) %.9g", _i,
			      (long long)t, got, (double)want);
		ck_assert_msg(prune_sched_due(&s, t) == due, "case %d, step %lld: due %d, TF-MOT %d",
			      _i, (long long)t, prune_sched_due(&s, t), due);
		updates += prune_sched_due(&s, t);
		for (size_t k = 0; k < sizeof(numels) / sizeof(numels[0]); k++)
			ck_assert_msg(prune_sched_count(&s, got, numels[k]) ==
					      tf_pruned(got, numels[k]),
				      "case %d, step %lld, %lld weights: %lld pruned, TF-MOT %lld",
				      _i, (long long)t, (long long)numels[k],
				      (long long)prune_sched_count(&s, got, numels[k]),
				      (long long)tf_pruned(got, numels[k]));
	}
	ck_assert_int_eq(updates, (int)((c->end - c->begin) / c->freq + 1));
}
END_TEST

/* The recipe's schedule, figures a reader can check by hand: 11 updates at
 * 0, 100, ..., 1000; s(100) = 0.5 (1 - 0.9^3) = 0.1355, s(500) = 0.4375,
 * 0.5 from 1000 on; nothing after 1000. */
START_TEST(test_recipe_schedule)
{
	struct prune_sched s = { .kind = PRUNE_POLYNOMIAL, .si = 0, .t0 = 0, .t1 = 1000,
				 .freq = 100, .power = 3 };

	for (int64_t t = 0; t <= 1200; t++)
		ck_assert_int_eq(prune_sched_due(&s, t), t % 100 == 0 && t <= 1000);
	ck_assert(prune_sched_sparsity(&s, 0.5, 0) == 0.0);
	ck_assert_double_eq_tol(prune_sched_sparsity(&s, 0.5, 100), 0.1355, 1e-12);
	ck_assert_double_eq_tol(prune_sched_sparsity(&s, 0.5, 500), 0.4375, 1e-12);
	ck_assert(prune_sched_sparsity(&s, 0.5, 1000) == 0.5);
	ck_assert(prune_sched_sparsity(&s, 0.5, 1200) == 0.5);
	/* a layer of 27 weights at 0.5: TF-MOT keeps round_half_even(13.5) = 14 */
	ck_assert_int_eq(prune_sched_count(&s, 0.5, 27), 13);
	/* a layer whose target is below initial_sparsity starts at its target */
	s.si = 0.6;
	ck_assert(prune_sched_sparsity(&s, 0.5, 0) == 0.5);
}
END_TEST

/* gradual (Zhu & Gupta as the pass has always run it) matches TF-MOT's
 * sparsity at power 3 and its decisions on the grid, but also updates at an
 * end off the grid so that the target is always reached; one-shot prunes
 * once, at step 0, to the target. */
START_TEST(test_gradual_and_one_shot)
{
	struct prune_sched g = { .kind = PRUNE_GRADUAL, .si = 0.2, .t0 = 150, .t1 = 1000,
				 .freq = 70, .power = 3 };
	struct prune_sched o = { .kind = PRUNE_ONE_SHOT };

	for (int64_t t = 0; t <= 1200; t++) {
		ck_assert_double_eq_tol(prune_sched_sparsity(&g, 0.8, t),
					tf_sparsity_d(0.2, 0.8, 150, 1000, 3, t), 1e-12);
		ck_assert_int_eq(prune_sched_due(&g, t),
				 tf_should_prune(t, 150, 1000, 70) || t == 1000);
		ck_assert_int_eq(prune_sched_due(&o, t), t == 0);
		ck_assert(prune_sched_sparsity(&o, 0.8, t) == 0.8);
	}
	ck_assert_int_eq(prune_sched_count(&g, 0.5, 27), 14); /* round(13.5): away from 0 */
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("prune_sched");
	TCase *tc = tcase_create("schedules");

	tcase_add_loop_test(tc, test_polynomial_is_tfmot, 0, sizeof(cases) / sizeof(cases[0]));
	tcase_add_test(tc, test_recipe_schedule);
	tcase_add_test(tc, test_gradual_and_one_shot);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
