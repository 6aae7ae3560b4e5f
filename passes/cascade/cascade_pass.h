/* SPDX-License-Identifier: MIT */
/*
 * cascade_pass.h - the cascade pass's own declarations, shared by its two
 * files: cascade.c (parameters, validation, the run, the report) and
 * calibrate.c (choosing thresholds, the sweep, its Pareto front and plot).
 *
 * Calibration is a pure function over arrays: every stage has been run once
 * on every calibration sample, giving conf[s][i] (stage s's confidence on
 * sample i) and correct[s][i] (1 when stage s's top class is the label).
 * For thresholds t, sample i exits at the first stage s < last with
 * conf[s][i] >= t[s], else at the last; so
 *
 *	accuracy(t) = mean over i of correct[exit(i)][i]
 *	cost(t)     = sum over s of (fraction of samples reaching s) * cost[s]
 *
 * and relative cost is cost(t) / cost[last], the last stage alone being 1.
 */
#ifndef CASCADE_PASS_H
#define CASCADE_PASS_H

#include <float.h>

#include <mcomp/mcomp.h>

enum cascade_target { CASCADE_ACCURACY_DROP, CASCADE_COST };
enum cascade_cost { CASCADE_LATENCY, CASCADE_FLOPS };

/* A threshold no confidence reaches: nothing exits at that stage. Finite, so
 * that it survives a JSON round trip. */
#define CASCADE_NEVER FLT_MAX

/* Candidate thresholds per stage on the grid used for 3 or more stages:
 * quantiles 0, 1/(G-1), ..., 1 of the stage's confidence, plus "never". */
#define CASCADE_GRID 101
/* Grids of at most this many threshold settings are searched exhaustively;
 * larger ones by coordinate descent. */
#define CASCADE_EXHAUSTIVE_MAX 20000

struct cascade_calib {
	int n_stages;
	int64_t n;
	const float *conf[MC_CASCADE_MAX_STAGES];      /* [s][n] */
	const uint8_t *correct[MC_CASCADE_MAX_STAGES]; /* [s][n], 0 or 1 */
	double cost[MC_CASCADE_MAX_STAGES];	       /* per sample, > 0 (ms or FLOPs) */
};

/* One setting of the thresholds and what it gives on the calibration split. */
struct cascade_point {
	float thr[MC_CASCADE_MAX_STAGES];	       /* [n_stages - 1] used */
	int64_t exits[MC_CASCADE_MAX_STAGES];	       /* samples exiting at stage s */
	int64_t exit_correct[MC_CASCADE_MAX_STAGES];   /* of those, correctly classified */
	int64_t correct;			       /* over all stages */
	double accuracy;			       /* correct / n */
	double cost;				       /* expected per sample */
	double rel_cost;			       /* cost / cost[last] */
};

/* Every setting calibration evaluated, in the order it did. */
struct cascade_sweep {
	int n, cap;
	struct cascade_point *pts;
	int exhaustive; /* 1 when the search covered every candidate setting */
};

/* Accuracy and cost of thresholds thr[n_stages - 1] on the calibration arrays. */
void cascade_eval(const struct cascade_calib *c, const float *thr, struct cascade_point *p);

/* The last stage alone: every sample reaches it (thresholds all CASCADE_NEVER
 * would cost every stage; this is the reference the target is relative to). */
void cascade_reference(const struct cascade_calib *c, int64_t *correct, double *accuracy);

/*
 * Chooses thresholds on the calibration arrays. With CASCADE_ACCURACY_DROP,
 * limit is the largest accuracy drop (a fraction: 0.002 is 0.2 points) below
 * the last stage's accuracy, and the cheapest setting within it wins (ties:
 * the more accurate, then the higher thresholds). With CASCADE_COST, limit is
 * the largest relative cost and the most accurate setting within it wins
 * (ties: the cheaper, then the higher thresholds).
 *
 * Two stages: every distinct confidence value of the first stage is tried
 * (exact). More: a grid of CASCADE_GRID quantiles per stage, searched
 * exhaustively up to CASCADE_EXHAUSTIVE_MAX settings, else by coordinate
 * descent (each stage's threshold in turn, the others fixed, until nothing
 * changes). The result is the same for the same arrays.
 *
 * Writes the choice to *best and, when sweep is not NULL, every setting tried
 * to sweep (free with cascade_sweep_free). MC_ERUN when no setting meets a
 * cost target, MC_ENOMEM; err says which.
 */
int cascade_calibrate(const struct cascade_calib *c, int target, double limit,
		      struct cascade_point *best, struct cascade_sweep *sweep, struct mc_err *err);
void cascade_sweep_free(struct cascade_sweep *s);

/*
 * The Pareto front of the sweep (no other point is both cheaper and at least
 * as accurate): indices into s->pts by increasing cost and accuracy, written
 * to idx[s->n]; returns their number.
 */
int cascade_front(const struct cascade_sweep *s, int *idx);

/* Whether points a and b are the same setting (the same thresholds). */
int cascade_same_thr(const struct cascade_point *a, const struct cascade_point *b);

/*
 * Up to rows indices of the front (of n) spread evenly along it, always
 * including the one whose point equals *keep when it is on the front;
 * written to out[rows + 1], returns their number.
 */
int cascade_front_rows(const struct cascade_sweep *s, const int *front, int n, int rows,
		       const struct cascade_point *keep, int *out);

/* What the plot shows. */
struct cascade_plot {
	const char *title;
	const struct cascade_sweep *sweep;
	const int *front;
	int n_front;
	const struct cascade_point *chosen;
	double last_accuracy; /* the last stage alone, at relative cost 1 */
	int target;	      /* enum cascade_target, drawn as a dashed limit */
	double limit;	      /* as cascade_calibrate's */
};

/* Accuracy against relative cost as SVG text in a malloc'd buffer; -1 on ENOMEM. */
int cascade_svg(const struct cascade_plot *p, char **buf, size_t *len);

#endif
