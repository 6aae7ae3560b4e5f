/* SPDX-License-Identifier: MIT */
/*
 * prune.h - the prune pass's own declarations, shared by its three files:
 * prune.c (parameters, validation, the run), methods.c (which weights go:
 * magnitude, N:M, structured removal, the gradual schedule) and
 * sensitivity.c (each layer alone at several sparsities, a table and an SVG).
 *
 * A prunable layer is a linear or conv2d node; its weight is params[0]
 * ([out, in] or [out, in/groups, kh, kw]). Masks are one byte per weight,
 * 1 = kept; a pruned weight is +0.0f exactly.
 */
#ifndef PRUNE_H
#define PRUNE_H

#include <mcomp/mcomp.h>

enum prune_method { PRUNE_MAGNITUDE, PRUNE_STRUCTURED, PRUNE_NM };
enum prune_scope { PRUNE_PER_LAYER, PRUNE_GLOBAL };
enum prune_schedule { PRUNE_ONE_SHOT, PRUNE_GRADUAL, PRUNE_POLYNOMIAL };
enum prune_unit { PRUNE_STEP, PRUNE_EPOCH };
enum prune_mode { PRUNE_MODE_PRUNE, PRUNE_MODE_SENSITIVITY };
enum prune_norm { PRUNE_L1, PRUNE_L2 };

struct prune_conf {
	char *model;
	int mode;
	int method;
	int scope;
	double sparsity;
	struct mc_map overrides;  /* layer name or glob: sparsity */
	struct mc_list exclude;	  /* patterns */
	int norm;
	char *nm;		  /* "N:M" */
	int schedule;
	double initial_sparsity;
	int unit;
	int begin;
	int end;
	int frequency;		  /* 0: the schedule's default */
	double power;
	char *data;
	int finetune_epochs;
	int batch_size;
	int optimizer;
	double lr;
	int lr_schedule;
	int seed;
	char *eval_data;
	struct mc_list levels;
	char *plot;
	struct mc_checkpoint_opts ckpt;
	int grad_groups; /* 0: unset */
};

struct prune_layer {
	int node;	   /* index into the model's nodes */
	const char *name;  /* the node's name (borrowed from the model) */
	double target;	   /* final sparsity of this layer */
	int global;	   /* ranked in the global pool (no override, global scope) */
	uint8_t *mask;	   /* [weight numel], 1 = kept; NULL until pruned */
};

/* The weight of layer l of m. */
static inline struct mc_tensor *prune_weight(const struct mc_model *m, const struct prune_layer *l)
{
	return mc_model_node(m, l->node)->params[0];
}

/* Nonzero for nodes whose weight can be pruned (linear, conv2d). */
int prune_is_layer(const struct mc_node *nd);
/* Parses "N:M" with 1 <= N < M <= 64; 0 or -1. */
int prune_parse_nm(const char *text, int *n, int *m);

/*
 * The layers of m that c prunes, with their targets: every prunable node not
 * excluded (for structured pruning, the last such layer, the classifier, is
 * never one). *out is malloc'd; free with prune_layers_free. Returns 0 or
 * MC_ENOMEM.
 */
int prune_layers_select(const struct mc_model *m, const struct prune_conf *c, int structured,
			struct prune_layer **out, int *n, struct mc_err *err);
void prune_layers_free(struct prune_layer *l, int n);

/* Zhu & Gupta (2017): the sparsity at step t of a schedule from si at t0 to
 * sf at t1: sf + (si - sf) (1 - (t - t0) / (t1 - t0))^3, clamped to [t0, t1]. */
double prune_gradual(double si, double sf, int64_t t, int64_t t0, int64_t t1);

/*
 * When masks are updated and how far, over t = the optimizer steps done (0:
 * before the first; an update at t comes before step t + 1 runs).
 *
 * - one-shot: once, at t = 0, to the target.
 * - gradual: Zhu & Gupta's cubic, at t0, t0 + freq, ... up to t1, and at t1
 *   itself even off that grid, so the target is always reached.
 * - polynomial: TF-MOT's PolynomialDecay: s(t) = sf + (si - sf) (1 - p)^power
 *   with p = clamp((t - t0) / (t1 - t0), 0, 1); updates where t0 <= t <= t1
 *   and (t - t0) % freq == 0 only (TF-MOT's _should_prune_in_step); a layer
 *   keeps max(round-half-even(numel (1 - s)), 1) weights, as TF-MOT's
 *   mask update does.
 */
struct prune_sched {
	int kind;	 /* enum prune_schedule */
	double si;	 /* the sparsity at t0 (a layer's target, when lower) */
	int64_t t0, t1;	 /* first update; the step that reaches the target (t1 > t0) */
	int64_t freq;	 /* steps between updates, >= 1 */
	double power;	 /* polynomial: the exponent */
};

/* The sparsity the schedule sets at step t for a layer whose target is sf. */
double prune_sched_sparsity(const struct prune_sched *s, double sf, int64_t t);
/* 1 when the masks are updated at step t, else 0. */
int prune_sched_due(const struct prune_sched *s, int64_t t);
/* How many of numel weights are pruned at sparsity x. */
int64_t prune_sched_count(const struct prune_sched *s, double x, int64_t numel);

/*
 * Magnitude pruning to the schedule's sparsity at step t: each layer goes to
 * prune_sched_sparsity(s, target, t), the global pool to that of its target,
 * prune_sched_count(...) weights of each. Weights already masked stay
 * masked; ties break by position, so the count is exact. Returns 0 or
 * MC_ENOMEM.
 */
int prune_magnitude(struct mc_model *m, struct prune_layer *l, int n, const struct prune_sched *s,
		    int64_t t, struct mc_err *err);
/* Keeps the N largest of every M consecutive weights along the input
 * dimension of each layer. Returns 0 or MC_ENOMEM. */
int prune_nm(struct mc_model *m, struct prune_layer *l, int n, int keep, int group,
	     struct mc_err *err);
/* Gives every layer a mask (all kept) that has none yet: the state a
 * checkpoint keeps from the start of fine-tuning. Returns 0 or MC_ENOMEM. */
int prune_masks_init(const struct mc_model *m, struct prune_layer *l, int n, struct mc_err *err);
/* Zeroes every weight whose mask is 0 (+0.0f). */
void prune_apply_masks(struct mc_model *m, const struct prune_layer *l, int n);

/* How many of out units a structured sparsity s removes (at least one stays). */
int64_t prune_units_dropped(int64_t out, double s);

/*
 * Structured pruning: which output units of layer l survive. keep[0..out)
 * is set to 1 for the units kept: the out - round(s * out) (at least one)
 * of largest L1 or L2 norm of their weights, ties to the lower index.
 * Returns 0 or MC_ENOMEM.
 */
int prune_rank_units(const struct mc_tensor *w, double s, int norm, uint8_t *keep,
		     struct mc_err *err);
/* The same over count layers of one tie group (the same number of units):
 * a unit's norm is that of its weights in all of them together. */
int prune_rank_tied(const struct mc_tensor *const *w, int count, double s, int norm,
		    uint8_t *keep, struct mc_err *err);

#define PRUNE_TIE_MAX 64

/*
 * Layers whose output units go together: one layer, or those whose outputs
 * meet at add nodes (a residual stream: the add needs its inputs' channels
 * to be the same ones).
 */
struct prune_group {
	int n;
	int node[PRUNE_TIE_MAX];   /* the layers, ascending */
	int n_adds;
	int add[PRUNE_TIE_MAX];	   /* the adds that tie them (the first PRUNE_TIE_MAX) */
	double target;		   /* set by the caller */
};

/*
 * The tie group of layer node i of m. Its output can shrink when every
 * path from it (and from the layers tied to it) passes only channel-wise
 * ops (relu, relu6, pooling, batch norm, dropout, flatten, ...), depthwise
 * convolutions (which follow their input's channels) and adds whose every
 * input comes from such a layer, and ends in linear or conv2d (one group)
 * consumers, never at the model's output. Returns 1 with g filled, or 0
 * with why saying what is in the way.
 */
int prune_tie(const struct mc_model *m, int i, struct prune_group *g, char *why, size_t n);
/* prune_tie without the group: 1 or 0 (why says). */
int prune_can_shrink(const struct mc_model *m, int i, char *why, size_t n);
/*
 * Sets the widths of layers node[k] to width[k] units in one graph change,
 * and of every depthwise convolution that follows them (out and groups).
 * Returns 0 or an error code.
 */
int prune_set_widths(struct mc_model *m, int count, const int *node, const int64_t *width,
		     struct mc_err *err);
/*
 * The smaller model: the units of layer node[k] with keep[k][u] == 0 are
 * removed, with everything that reads them (batch norm channels, depthwise
 * filters, consumer columns or input channels). Layers of one tie group
 * must be given with the same keep. NULL with err set on failure.
 */
struct mc_model *prune_shrink(const struct mc_model *m, int count, const int *node,
			      uint8_t *const *keep, struct mc_err *err);

/* Sensitivity mode: see sensitivity.c. */
int prune_sensitivity(struct mc_ctx *ctx, const struct prune_conf *c);

#endif
