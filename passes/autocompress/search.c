// SPDX-License-Identifier: MIT
/*
 * search.c - autocompress's search over per-layer choices (autocompress.h):
 * greedy by accuracy per unit of cost, with backtracking.
 *
 * Why greedy and not an evolutionary or Bayesian search: with the
 * single-layer table in hand, each move's price (accuracy) and gain (bytes,
 * FLOPs, milliseconds) are known in advance, and the costs add up per layer
 * almost exactly, so ranking moves by gain per price is the classic
 * knapsack heuristic; what does not add up is accuracy, which is why every
 * move is checked on the whole configuration before it is kept. It needs
 * at most one evaluation per (layer, choice) pair, is deterministic without
 * a seed, and stops at any point with a configuration that meets the budget.
 */
#include <stdlib.h>
#include <string.h>

#include <mcomp/common.h>

#include "autocompress.h"

#define MIN_PRICE 1e-4 /* a hundredth of a point: free moves rank by gain alone */

int ac_search(const struct ac_table *t, double base_acc, double base_cost, double min_acc,
	      ac_eval_fn eval, void *arg, struct ac_result *r)
{
	int L = t->layers, ret = 0, *cur, *next;
	unsigned char **barred;
	double budget = base_acc - min_acc; /* the drop allowed */

	cur = calloc((size_t)L + 1, sizeof(*cur));
	next = calloc((size_t)L + 1, sizeof(*next));
	barred = calloc((size_t)L + 1, sizeof(*barred));
	if (!cur || !next || !barred) {
		ret = MC_ENOMEM;
		goto out;
	}
	for (int i = 0; i < L; i++) {
		barred[i] = calloc((size_t)t->n_choices[i] + 1, 1);
		if (!barred[i]) {
			ret = MC_ENOMEM;
			goto out;
		}
	}
	r->acc = base_acc;
	r->cost = base_cost;
	r->evaluated = r->accepted = r->timed_out = 0;
	for (;;) {
		int bi = -1, bj = -1;
		double bscore = 0.0, acc, cost;

		for (int i = 0; i < L; i++) {
			for (int j = 0; j < t->n_choices[i]; j++) {
				double gain, price, score;

				if (j == cur[i] || barred[i][j] || !t->valid[i][j])
					continue;
				if (t->drop[i][j] > budget + 1e-12) {
					barred[i][j] = 1; /* alone it breaks the budget */
					continue;
				}
				gain = t->dcost[i][cur[i]] - t->dcost[i][j];
				if (!(gain > 0.0))
					continue;
				price = t->drop[i][j] - t->drop[i][cur[i]];
				score = gain / (price > MIN_PRICE ? price : MIN_PRICE);
				if (bi < 0 || score > bscore) {
					bi = i;
					bj = j;
					bscore = score;
				}
			}
		}
		if (bi < 0)
			break;
		memcpy(next, cur, (size_t)L * sizeof(*cur));
		next[bi] = bj;
		ret = eval(arg, next, &acc, &cost);
		if (ret == 1) {
			r->timed_out = 1;
			ret = 0;
			break;
		}
		if (ret)
			break;
		r->evaluated++;
		if (acc >= min_acc - 1e-12 && cost < r->cost) {
			memcpy(cur, next, (size_t)L * sizeof(*cur));
			r->acc = acc;
			r->cost = cost;
			r->accepted++;
		} else {
			barred[bi][bj] = 1; /* backtrack: undo it, try the next best */
		}
	}
	memcpy(r->best, cur, (size_t)L * sizeof(*cur));
out:
	for (int i = 0; barred && i < L; i++)
		free(barred[i]);
	free(barred);
	free(cur);
	free(next);
	return ret;
}
