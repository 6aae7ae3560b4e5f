/* SPDX-License-Identifier: MIT */
/*
 * autocompress.h - what the files of the autocompress pass share: the search
 * over per-layer choices (search.c), which knows nothing of models and is
 * unit-tested on tables with a known optimum (tests/check_autocompress.c),
 * and the pass (autocompress.c), which measures the tables by running the
 * prune and quantize passes and evaluates each candidate the same way.
 */
#ifndef AUTOCOMPRESS_H
#define AUTOCOMPRESS_H

/*
 * The single-layer measurements the search starts from: layer i alone at its
 * choice j (choice 0 is the layer as given, f32 and dense), every other layer
 * as given. drop[i][j]: accuracy lost (base - acc, a fraction; negative when
 * it gained); dcost[i][j]: cost added (negative: saved), in the objective's
 * unit. A choice whose measurement is missing (the time ran out) has
 * valid[i][j] = 0 and is never tried.
 */
struct ac_table {
	int layers;
	const int *n_choices;	   /* [layers] */
	double *const *drop;	   /* [layers][n_choices[i]] */
	double *const *dcost;	   /* [layers][n_choices[i]] */
	unsigned char *const *valid; /* [layers][n_choices[i]] */
};

/*
 * Evaluates the configuration choice[0..layers): 0 with *acc (a fraction on
 * the held-out split) and *cost set; 1 when the time is up (nothing
 * evaluated); else an error code.
 */
typedef int (*ac_eval_fn)(void *arg, const int *choice, double *acc, double *cost);

/* What ac_search found: best[layers] (caller's), its accuracy and cost, the
 * number of candidates evaluated and whether the time ran out. */
struct ac_result {
	int *best;
	double acc, cost;
	int evaluated, accepted, timed_out;
};

/*
 * Greedy by accuracy per unit of cost, with backtracking. From the given
 * model (all choices 0, accuracy base_acc, cost base_cost), each round scores
 * every move "layer i from its choice to choice j" that the table says saves
 * cost, as saving / max(extra drop, 1e-4), the drops and savings taken from
 * the single-layer table; moves whose single-layer drop alone breaks the
 * budget are never tried. The best-scoring move (ties: lower layer, then
 * lower choice) is applied and the whole configuration evaluated: when it
 * keeps acc >= min_acc and lowers the cost it is kept; else it is undone and
 * barred, and the next-best move of the same state is tried. The search ends
 * when no move is left or eval says the time is up (the best configuration so
 * far is the answer). Deterministic: no randomness, a fixed order.
 * Returns 0, eval's error code or MC_ENOMEM.
 */
int ac_search(const struct ac_table *t, double base_acc, double base_cost, double min_acc,
	      ac_eval_fn eval, void *arg, struct ac_result *r);

#endif
