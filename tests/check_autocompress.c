// SPDX-License-Identifier: MIT
/*
 * check_autocompress.c - autocompress's search (passes/autocompress/search.c)
 * on constructed per-layer tables whose optimum is known by enumerating every
 * configuration: it picks that optimum, including where two layers together
 * lose more than the table says (so a move has to be undone); it never
 * returns a configuration over the budget; it stops when the time is up with
 * the best so far; the same tables give the same answer.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../passes/autocompress/autocompress.h"

#define L 3
#define J 5

/* The model of a constructed network: accuracy base - the sum of the
 * layers' drops, less an interaction penalty when layers 0 and 1 are both at
 * their choice 2 or beyond; cost base + the sum of the savings. */
struct world {
	int n[L];
	double drop[L][J], dcost[L][J];
	double base_acc, base_cost, penalty;
	int calls, limit; /* eval returns 1 (time up) after limit calls; 0: none */
};

static void score(const struct world *w, const int *c, double *acc, double *cost)
{
	*acc = w->base_acc;
	*cost = w->base_cost;
	for (int i = 0; i < L; i++) {
		*acc -= w->drop[i][c[i]];
		*cost += w->dcost[i][c[i]];
	}
	if (c[0] >= 2 && c[1] >= 2)
		*acc -= w->penalty;
}

static int eval(void *arg, const int *c, double *acc, double *cost)
{
	struct world *w = arg;

	if (w->limit && w->calls >= w->limit)
		return 1;
	w->calls++;
	score(w, c, acc, cost);
	return 0;
}

/* The cheapest configuration meeting min_acc, by enumeration. */
static double optimum(const struct world *w, double min_acc, int *best)
{
	double bc = w->base_cost;
	int c[L];

	memset(best, 0, sizeof(int) * L);
	for (int k = 0; k < w->n[0] * w->n[1] * w->n[2]; k++) {
		double acc, cost;

		c[0] = k % w->n[0];
		c[1] = k / w->n[0] % w->n[1];
		c[2] = k / w->n[0] / w->n[1];
		score(w, c, &acc, &cost);
		if (acc >= min_acc - 1e-12 && cost < bc) {
			bc = cost;
			memcpy(best, c, sizeof(c));
		}
	}
	return bc;
}

static void table_of(struct world *w, struct ac_table *t, double **dp, double **cp,
		     unsigned char **vp, unsigned char v[L][J])
{
	for (int i = 0; i < L; i++) {
		dp[i] = w->drop[i];
		cp[i] = w->dcost[i];
		memset(v[i], 1, J);
		vp[i] = v[i];
	}
	*t = (struct ac_table){ .layers = L, .n_choices = w->n, .drop = dp, .dcost = cp,
				.valid = vp };
}

/* A network of a large layer (0), a middle one (1) and a small one (2), as
 * the CNN's fc1, conv2 and fc2 are: choices f32, int8, int4, int4 + 90%
 * sparse, int4 + 95% sparse. */
static void constructed(struct world *w)
{
	static const double drop[L][J] = {
		{ 0, 0.0005, 0.0015, 0.0030, 0.0080 },
		{ 0, 0.0002, 0.0010, 0.0040, 0.0200 },
		{ 0, 0.0001, 0.0030, 0.0060, 0.0300 },
	};
	static const double dcost[L][J] = {
		{ 0, -600, -700, -760, -770 },
		{ 0, -60, -70, -75, -77 },
		{ 0, -6, -7, -7.5, -7.7 },
	};

	memset(w, 0, sizeof(*w));
	for (int i = 0; i < L; i++) {
		w->n[i] = J;
		memcpy(w->drop[i], drop[i], sizeof(drop[i]));
		memcpy(w->dcost[i], dcost[i], sizeof(dcost[i]));
	}
	w->base_acc = 0.91;
	w->base_cost = 1000;
	w->penalty = 0.002;
}

START_TEST(test_known_optimum)
{
	struct world w;
	struct ac_table t;
	double *dp[L], *cp[L];
	unsigned char *vp[L], v[L][J];
	int best[L], want[L];
	struct ac_result r = { .best = best };
	double min_acc = 0.91 - 0.005, opt;

	constructed(&w);
	table_of(&w, &t, dp, cp, vp, v);
	opt = optimum(&w, min_acc, want);
	ck_assert_int_eq(ac_search(&t, w.base_acc, w.base_cost, min_acc, eval, &w, &r), 0);
	ck_assert_msg(r.cost == opt, "search found cost %g, the optimum is %g", r.cost, opt);
	for (int i = 0; i < L; i++)
		ck_assert_int_eq(best[i], want[i]);
	ck_assert(r.acc >= min_acc - 1e-12);
	ck_assert(!r.timed_out);
	/* Layers 0 and 1 at int4 together pay the penalty: the table says
	 * they fit, the whole model says no, and that move was undone. */
	ck_assert_int_gt(r.evaluated, r.accepted);
	/* Each (layer, choice) is evaluated at most once. */
	ck_assert_int_le(r.evaluated, L * (J - 1));
}
END_TEST

START_TEST(test_budget_zero)
{
	struct world w;
	struct ac_table t;
	double *dp[L], *cp[L];
	unsigned char *vp[L], v[L][J];
	int best[L];
	struct ac_result r = { .best = best };

	constructed(&w);
	table_of(&w, &t, dp, cp, vp, v);
	/* No drop allowed: nothing that loses accuracy is even tried. */
	ck_assert_int_eq(ac_search(&t, w.base_acc, w.base_cost, w.base_acc, eval, &w, &r), 0);
	ck_assert_int_eq(r.evaluated, 0);
	for (int i = 0; i < L; i++)
		ck_assert_int_eq(best[i], 0);
	ck_assert(r.cost == w.base_cost);
}
END_TEST

START_TEST(test_time_up)
{
	struct world w;
	struct ac_table t;
	double *dp[L], *cp[L];
	unsigned char *vp[L], v[L][J];
	int best[L];
	struct ac_result r = { .best = best };
	double min_acc = 0.905, acc, cost;

	constructed(&w);
	table_of(&w, &t, dp, cp, vp, v);
	w.limit = 1;
	ck_assert_int_eq(ac_search(&t, w.base_acc, w.base_cost, min_acc, eval, &w, &r), 0);
	ck_assert(r.timed_out);
	ck_assert_int_eq(r.evaluated, 1);
	score(&w, best, &acc, &cost);
	ck_assert(acc >= min_acc - 1e-12);
	ck_assert(cost == r.cost && cost < w.base_cost); /* the one move it made */
}
END_TEST

START_TEST(test_random_tables)
{
	unsigned seed = 12345;

	for (int trial = 0; trial < 200; trial++) {
		struct world w;
		struct ac_table t;
		double *dp[L], *cp[L];
		unsigned char *vp[L], v[L][J];
		int best[L], again[L], want[L];
		struct ac_result r = { .best = best }, r2 = { .best = again };
		double min_acc, acc, cost;

		memset(&w, 0, sizeof(w));
		for (int i = 0; i < L; i++) {
			w.n[i] = 2 + (int)(rand_r(&seed) % (J - 1));
			for (int j = 1; j < w.n[i]; j++) {
				w.drop[i][j] = (rand_r(&seed) % 1000) / 1e5;
				w.dcost[i][j] = -(double)(rand_r(&seed) % 1000);
			}
		}
		w.base_acc = 0.9;
		w.base_cost = 4000;
		w.penalty = (rand_r(&seed) % 100) / 1e4;
		min_acc = 0.9 - (rand_r(&seed) % 20) / 1e3;
		table_of(&w, &t, dp, cp, vp, v);
		ck_assert_int_eq(ac_search(&t, w.base_acc, w.base_cost, min_acc, eval, &w, &r), 0);
		score(&w, best, &acc, &cost);
		ck_assert_msg(acc >= min_acc - 1e-12, "trial %d over budget", trial);
		ck_assert(cost == r.cost && cost >= optimum(&w, min_acc, want));
		ck_assert_int_eq(ac_search(&t, w.base_acc, w.base_cost, min_acc, eval, &w, &r2),
				 0);
		ck_assert(!memcmp(best, again, sizeof(best)));
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("autocompress");
	TCase *tc = tcase_create("search");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_known_optimum);
	tcase_add_test(tc, test_budget_zero);
	tcase_add_test(tc, test_time_up);
	tcase_add_test(tc, test_random_tables);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
