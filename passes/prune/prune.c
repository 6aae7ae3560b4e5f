// SPDX-License-Identifier: MIT
/*
 * prune - removes weights of a model: magnitude (unstructured), N:M
 * (semi-structured) or structured (whole units, for a smaller dense model),
 * one-shot, on Zhu & Gupta's gradual schedule or on TF-MOT's polynomial one,
 * with fine-tuning that keeps pruned weights exactly zero; or, in
 * sensitivity mode, measures each layer pruned alone so that a user can
 * choose per-layer targets.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/layers.h"
#include "prune.h"

static const char *const modes[] = { "prune", "sensitivity", NULL };
static const char *const methods[] = { "magnitude", "structured", "n:m", NULL };
static const char *const scopes[] = { "per-layer", "global", NULL };
static const char *const schedules[] = { "one-shot", "gradual", "polynomial", NULL };
static const char *const units[] = { "step", "epoch", NULL };
static const char *const norms[] = { "l1", "l2", NULL };
static const char *const optimizers[] = { "sgd", "adam", NULL };
static const char *const lr_schedules[] = { "constant", "cosine", NULL };

static const struct mc_param_def prune_params[] = {
	MC_PARAM_MODEL(struct prune_conf, model, NULL, "the model to prune"),
	MC_PARAM_ENUM(struct prune_conf, mode, "prune", modes,
		      "prune the model, or measure each layer's sensitivity (model unchanged)"),
	MC_PARAM_ENUM(struct prune_conf, method, "magnitude", methods,
		      "magnitude: smallest |w|; structured: whole units by norm, removed; "
		      "n:m: N of every M weights along the input"),
	MC_PARAM_ENUM(struct prune_conf, scope, "per-layer", scopes,
		      "magnitude: rank each layer alone, or all layers together"),
	MC_PARAM_FLOAT(struct prune_conf, sparsity, "0.5", 0, 0.999,
		       "fraction of weights (structured: of units) removed"),
	MC_PARAM_MAP(struct prune_conf, overrides, MC_PARAM_TFLOAT, "{}", 0, 1,
		     "per-layer sparsity: {NAME: S}, NAME a layer name or glob; the first "
		     "match wins",
		     .flags = MC_PARAM_FMAX_OPEN),
	MC_PARAM_LIST(struct prune_conf, exclude, MC_PARAM_TSTRING, "[]", 0, 0,
		      "layer names or globs left untouched"),
	MC_PARAM_ENUM(struct prune_conf, norm, "l1", norms, "structured: how units are ranked"),
	MC_PARAM_STRING(struct prune_conf, nm, "2:4", "n:m: keep N of every M weights (N < M)"),
	MC_PARAM_ENUM(struct prune_conf, schedule, "one-shot", schedules,
		      "magnitude: all at once; gradual: Zhu & Gupta's cubic ramp during "
		      "fine-tuning; polynomial: TF-MOT's PolynomialDecay"),
	MC_PARAM_FLOAT(struct prune_conf, initial_sparsity, "0", 0, 0.999,
		       "gradual, polynomial: the sparsity at begin"),
	MC_PARAM_ENUM(struct prune_conf, unit, "step", units,
		      "gradual, polynomial: unit of begin, end and frequency"),
	MC_PARAM_INT(struct prune_conf, begin, "0", 0, 1 << 30,
		     "gradual, polynomial: first pruning update"),
	MC_PARAM_INT(struct prune_conf, end, "-1", -1, 1 << 30,
		     "gradual, polynomial: the update that reaches sparsity; -1: the end of the "
		     "next-to-last fine-tuning epoch (the last, with one)"),
	MC_PARAM_INT(struct prune_conf, frequency, NULL, 1, 1 << 30,
		     "gradual, polynomial: updates every this many units; default 20 "
		     "(gradual), 100 (polynomial, as TF-MOT)",
		     .flags = MC_PARAM_FOPTIONAL),
	MC_PARAM_FLOAT(struct prune_conf, power, "3", 0, 100,
		       "polynomial: the exponent of the decay (3: Zhu & Gupta's cubic)",
		       .flags = MC_PARAM_FMIN_OPEN),
	MC_PARAM_SPLIT(struct prune_conf, data, "train", "the split to fine-tune on"),
	MC_PARAM_INT(struct prune_conf, finetune_epochs, "0", 0, 100000,
		     "epochs of fine-tuning with the masks held"),
	MC_PARAM_INT(struct prune_conf, batch_size, "128", 1, 65536, "fine-tuning batch"),
	MC_GRAD_GROUPS_PARAM(struct prune_conf, grad_groups, "fine-tuning: ", ""),
	MC_PARAM_ENUM(struct prune_conf, optimizer, "adam", optimizers, "fine-tuning update"),
	MC_PARAM_FLOAT(struct prune_conf, lr, "0.0005", 1e-12, 10, "fine-tuning learning rate"),
	MC_PARAM_ENUM(struct prune_conf, lr_schedule, "cosine", lr_schedules,
		      "fine-tuning learning rate: constant, or cosine down to 0"),
	MC_PARAM_INT(struct prune_conf, seed, "-1", -1, 2147483647,
		     "fine-tuning shuffle seed; -1 uses the pipeline's seed"),
	MC_PARAM_SPLIT(struct prune_conf, eval_data, "",
		       "sensitivity: the split accuracy is measured on (not the training one)"),
	MC_PARAM_LIST(struct prune_conf, levels, MC_PARAM_TFLOAT,
		      "[0.3, 0.5, 0.7, 0.8, 0.9, 0.95]", 0.001, 0.999,
		      "sensitivity: the sparsities tried on each layer"),
	MC_PARAM_PATH(struct prune_conf, plot, "", "sensitivity: where to write an SVG plot",
		      .flags = MC_PARAM_FOUTPUT),
	MC_CHECKPOINT_PARAMS(struct prune_conf, ckpt),
	MC_PARAM_END,
};

static int check_patterns(struct mc_ctx *ctx, const struct prune_conf *c,
			  const struct mc_model *m)
{
	return layers_check_patterns(ctx, c->model, m, prune_is_layer, &c->overrides, &c->exclude);
}

/*
 * The tie groups (prune_tie) of the layers l[0..n) selected for structured
 * pruning, each at the lowest target of its layers. A group with a layer
 * not selected (excluded) stays whole; with log set, the log says so, and
 * names the layers pruned together.
 */
static int plan_groups(struct mc_ctx *ctx, const struct mc_model *m, const struct prune_layer *l,
		       int n, struct prune_group **out, int *ng, int log)
{
	struct prune_group *g = calloc((size_t)n + 1, sizeof(*g));
	char why[256], names[1024], adds[512];

	*ng = 0;
	*out = g;
	if (!g)
		return mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
	for (int k = 0; k < n; k++) {
		struct prune_group *x = &g[*ng];
		int first = -1, missing = -1;

		if (!prune_tie(m, l[k].node, x, why, sizeof(why)))
			return mc_ctx_error(ctx, NULL, MC_ERUN, "layer '%s' cannot shrink: %s",
					    l[k].name, why);
		x->target = 1;
		for (int a = 0; a < x->n; a++) {
			int sel = -1;

			for (int b = 0; b < n; b++)
				if (l[b].node == x->node[a])
					sel = b;
			if (sel < 0 && missing < 0)
				missing = a;
			if (sel >= 0 && first < 0)
				first = sel;
			if (sel >= 0 && l[sel].target < x->target)
				x->target = l[sel].target;
		}
		if (first != k)
			continue; /* met at its first selected layer */
		names[0] = adds[0] = 0;
		for (int a = 0; a < x->n; a++)
			snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
				 a ? ", " : "", mc_model_node(m, x->node[a])->name);
		for (int a = 0; a < x->n_adds; a++)
			snprintf(adds + strlen(adds), sizeof(adds) - strlen(adds), "%s'%s'",
				 a ? ", " : "", mc_model_node(m, x->add[a])->name);
		if (missing >= 0) {
			if (log)
				mc_ctx_log(ctx, "%s: kept whole: tied through add %s to '%s', "
						"which is excluded",
					   names, adds, mc_model_node(m, x->node[missing])->name);
			continue;
		}
		if (log && x->n > 1)
			mc_ctx_log(ctx, "%s: tied through add %s, pruned together (one ranking of "
					"their units, sparsity %.4f)",
				   names, adds, x->target);
		(*ng)++;
	}
	return 0;
}

/* Validation's copy of the graph gets the widths the run will give it. */
static int narrow_arch(struct mc_ctx *ctx, struct mc_model *m, const struct prune_layer *l, int n)
{
	struct prune_group *g = NULL;
	int ng = 0, count = 0, ret;
	int *node = calloc((size_t)n + 1, sizeof(*node));
	int64_t *width = calloc((size_t)n + 1, sizeof(*width));

	ret = node && width ? plan_groups(ctx, m, l, n, &g, &ng, 0)
			    : mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
	for (int k = 0; !ret && k < ng; k++) {
		for (int a = 0; a < g[k].n; a++) {
			int64_t out = mc_model_node(m, g[k].node[a])->params[0]->shape[0];

			node[count] = g[k].node[a];
			width[count++] = out - prune_units_dropped(out, g[k].target);
		}
	}
	if (!ret)
		ret = prune_set_widths(m, count, node, width, mc_ctx_err(ctx));
	free(g);
	free(node);
	free(width);
	return ret;
}

static int prune_check(struct mc_ctx *ctx, const void *conf)
{
	const struct prune_conf *c = conf;
	const struct mc_model *m = mc_ctx_model(ctx, c->model);
	struct prune_layer *l = NULL;
	int n = 0, keep, group, ret;

	if (!m)
		return 0; /* the host has said so */
	for (int i = 0; i < mc_model_n_nodes(m); i++)
		if (prune_is_layer(mc_model_node(m, i)) && mc_model_node(m, i)->params[0]->dtype != MC_F32)
			return mc_ctx_error(ctx, "model", MC_EINVAL,
					    "layer '%s' of model '%s' is not f32; prune before "
					    "quantizing",
					    mc_model_node(m, i)->name, c->model);
	ret = check_patterns(ctx, c, m);
	if (!ret)
		ret = mc_ctx_check_grad_groups(ctx, c->grad_groups, c->batch_size);
	if (ret)
		return ret;
	if (c->method == PRUNE_NM) {
		if (prune_parse_nm(c->nm, &keep, &group))
			return mc_ctx_error(ctx, "nm", MC_EINVAL,
					    "'%s' is not N:M with 1 <= N < M <= 64; write e.g. "
					    "\"2:4\" (keep 2 of every 4)",
					    c->nm);
		if (c->schedule != PRUNE_ONE_SHOT)
			return mc_ctx_error(ctx, "schedule", MC_EINVAL,
					    "n:m pruning is one-shot; use schedule: one-shot");
		if (c->mode == PRUNE_MODE_SENSITIVITY)
			return mc_ctx_error(ctx, "mode", MC_EINVAL,
					    "sensitivity tries sparsity levels; n:m has one level; "
					    "use method: magnitude or structured");
		if (c->overrides.n)
			return mc_ctx_error(ctx, "overrides", MC_EINVAL,
					    "n:m has no per-layer sparsity; use exclude instead");
	}
	if (c->method == PRUNE_STRUCTURED && c->schedule != PRUNE_ONE_SHOT)
		return mc_ctx_error(ctx, "schedule", MC_EINVAL,
				    "structured pruning removes units once; use schedule: "
				    "one-shot with finetune_epochs");
	if (c->schedule != PRUNE_POLYNOMIAL && mc_ctx_given(ctx, "power"))
		return mc_ctx_error(ctx, "power", MC_EINVAL,
				    "power is the exponent of schedule: polynomial; set that "
				    "schedule or leave power out");
	if (c->schedule != PRUNE_ONE_SHOT && c->mode == PRUNE_MODE_PRUNE) {
		if (c->finetune_epochs < 1)
			return mc_ctx_error(ctx, "finetune_epochs", MC_EINVAL,
					    "a %s schedule prunes while fine-tuning; set "
					    "finetune_epochs to 1 or more",
					    schedules[c->schedule]);
		if (c->initial_sparsity > c->sparsity)
			return mc_ctx_error(ctx, "initial_sparsity", MC_EINVAL,
					    "%g is above sparsity %g; the schedule only adds zeros",
					    c->initial_sparsity, c->sparsity);
		if (c->end >= 0 && c->end <= c->begin)
			return mc_ctx_error(ctx, "end", MC_EINVAL,
					    "end %d is not after begin %d; make end larger", c->end,
					    c->begin);
	}
	if (c->mode == PRUNE_MODE_SENSITIVITY) {
		if (!c->eval_data)
			return mc_ctx_error(ctx, "eval_data", MC_EINVAL,
					    "sensitivity mode needs a split to measure on; add "
					    "eval_data: test (a split other than the training one)");
		if (c->data && !strcmp(c->eval_data, c->data))
			return mc_ctx_error(ctx, "eval_data", MC_EINVAL,
					    "'%s' is the training split; measure on another one "
					    "(e.g. test or a held-out slice)",
					    c->eval_data);
		if (!c->levels.n)
			return mc_ctx_error(ctx, "levels", MC_EINVAL,
					    "no sparsity levels; give some, e.g. [0.5, 0.9]");
	}
	ret = prune_layers_select(m, c, c->method == PRUNE_STRUCTURED, &l, &n,
				  mc_ctx_err(ctx));
	if (ret)
		return ret;
	if (!n) {
		prune_layers_free(l, n);
		return mc_ctx_error(ctx, c->method == PRUNE_STRUCTURED ? "method" : "exclude",
				    MC_EINVAL,
				    "model '%s' has no layer left to prune%s", c->model,
				    c->method == PRUNE_STRUCTURED
					? " structurally (the classifier never is, nor a layer "
					  "whose output feeds anything but channel-wise ops and "
					  "linear or conv2d layers)"
					: "; exclude fewer layers");
	}
	for (int i = 0; c->method == PRUNE_NM && i < n; i++) {
		const struct mc_tensor *w = prune_weight(m, &l[i]);
		int64_t row = w->numel / w->shape[0];

		if (row % group) {
			ret = mc_ctx_error(ctx, "nm", MC_EINVAL,
					   "layer '%s' has rows of %lld weights, not a multiple of "
					   "%d; exclude it or choose another M",
					   l[i].name, (long long)row, group);
			break;
		}
	}
	/* The graph change the run will make: structured pruning narrows each
	 * layer to the units it keeps, a count known before any weight is. */
	if (!ret && c->method == PRUNE_STRUCTURED && c->mode == PRUNE_MODE_PRUNE &&
	    mc_model_is_arch(m))
		ret = narrow_arch(ctx, (struct mc_model *)m, l, n);
	prune_layers_free(l, n);
	return ret;
}

/* ---------------------------------------------------------------- running */

struct tuner {
	struct mc_ctx *ctx;
	const struct prune_conf *c;
	struct prune_layer *l;
	int n;
	struct prune_sched s;
	int64_t updates;
};

static int after_step(void *arg, struct mc_model *m, int64_t step, struct mc_err *err)
{
	struct tuner *tu = arg;
	int64_t t = step + 1; /* optimizer steps done */

	if (tu->s.kind != PRUNE_ONE_SHOT && prune_sched_due(&tu->s, t)) {
		int ret = prune_magnitude(m, tu->l, tu->n, &tu->s, t, err);

		if (ret)
			return ret;
		tu->updates++;
		return 0;
	}
	prune_apply_masks(m, tu->l, tu->n);
	return 0;
}

static int finetune(struct mc_ctx *ctx, const struct prune_conf *c, struct mc_model *m,
		    const struct mc_dataset *d, const struct mc_train_hooks *hooks)
{
	struct mc_train_conf tc = {
		.epochs = c->finetune_epochs,
		.batch_size = c->batch_size,
		.optim = {
			.kind = c->optimizer == 0 ? MC_OPTIM_SGD : MC_OPTIM_ADAM,
			.lr = c->lr,
			.momentum = 0.9,
			.beta1 = 0.9,
			.beta2 = 0.999,
			.eps = 1e-8,
		},
		.schedule = c->lr_schedule ? MC_LR_COSINE : MC_LR_CONSTANT,
		.seed = c->seed >= 0 ? (uint64_t)c->seed : mc_ctx_seed(ctx),
		.label = "prune: fine-tune",
		.grad_groups = c->grad_groups,
	};

	return mc_ctx_train(ctx, m, d, &tc, hooks);
}

static int64_t zeros_of(const struct mc_tensor *w)
{
	const float *x = w->data;
	int64_t z = 0;

	for (int64_t i = 0; i < w->numel; i++)
		z += x[i] == 0.0f;
	return z;
}

static int report_layers(struct mc_ctx *ctx, const struct mc_model *m, struct prune_layer *l,
			 int n)
{
	int64_t zeros = 0, total = 0;
	char key[300], shape[128];

	for (int i = 0; i < n; i++) {
		const struct mc_tensor *w = prune_weight(m, &l[i]);
		int64_t z = zeros_of(w);

		zeros += z;
		total += w->numel;
		mc_ctx_log(ctx, "%s: %s, sparsity %.4f (%lld of %lld weights zero)", l[i].name,
			   mc_shape_text(w->ndim, w->shape, shape, sizeof(shape)),
			   (double)z / (double)w->numel, (long long)z, (long long)w->numel);
		snprintf(key, sizeof(key), "%s.sparsity", l[i].name);
		mc_ctx_report(ctx, key, (double)z / (double)w->numel);
	}
	mc_ctx_log(ctx, "pruned layers: sparsity %.4f (%lld of %lld weights zero)",
		   total ? (double)zeros / (double)total : 0.0, (long long)zeros,
		   (long long)total);
	return mc_ctx_report(ctx, "sparsity", total ? (double)zeros / (double)total : 0.0);
}

/* What fine-tuning changes besides the weights, for its checkpoints: the
 * masks (the gradual schedule adds to them) and the count of updates. */
static int keep_state(struct mc_ctx *ctx, const struct mc_model *m, struct tuner *tu)
{
	char name[300];
	int ret = prune_masks_init(m, tu->l, tu->n, mc_ctx_err(ctx));

	for (int i = 0; !ret && i < tu->n; i++) {
		snprintf(name, sizeof(name), "mask.%s", tu->l[i].name);
		ret = mc_ctx_keep(ctx, name, tu->l[i].mask, (size_t)prune_weight(m, &tu->l[i])->numel);
	}
	if (!ret)
		ret = mc_ctx_keep(ctx, "updates", &tu->updates, sizeof(tu->updates));
	return ret;
}

static int run_unstructured(struct mc_ctx *ctx, const struct prune_conf *c, struct mc_model *m,
			    const struct mc_dataset *d)
{
	struct tuner tu = { .ctx = ctx, .c = c, .s = { .kind = PRUNE_ONE_SHOT } };
	struct mc_train_hooks hooks = { .arg = &tu, .after_step = after_step };
	int keep, group, ret;

	ret = prune_layers_select(m, c, 0, &tu.l, &tu.n, mc_ctx_err(ctx));
	if (ret)
		return ret;
	if (c->method == PRUNE_NM) {
		prune_parse_nm(c->nm, &keep, &group);
		ret = prune_nm(m, tu.l, tu.n, keep, group, mc_ctx_err(ctx));
		mc_ctx_log(ctx, "%d:%d over %d layers", keep, group, tu.n);
	} else if (c->schedule == PRUNE_ONE_SHOT) {
		ret = prune_magnitude(m, tu.l, tu.n, &tu.s, 0, mc_ctx_err(ctx));
		mc_ctx_log(ctx, "one-shot %s magnitude pruning to %.4f over %d layers",
			   c->scope == PRUNE_GLOBAL ? "global" : "per-layer", c->sparsity, tu.n);
	} else {
		int64_t bs = c->batch_size < d->n ? c->batch_size : d->n;
		int64_t spe = (d->n + bs - 1) / bs, total = spe * c->finetune_epochs;
		int64_t scale = c->unit == PRUNE_EPOCH ? spe : 1;

		int freq = c->frequency ? c->frequency : c->schedule == PRUNE_POLYNOMIAL ? 100 : 20;
		char power[64] = "";

		tu.s.kind = c->schedule;
		tu.s.si = c->initial_sparsity;
		tu.s.power = c->schedule == PRUNE_POLYNOMIAL ? c->power : 3;
		tu.s.t0 = c->begin * scale;
		tu.s.freq = freq * scale;
		if (c->end >= 0)
			tu.s.t1 = c->end * scale;
		else
			tu.s.t1 = c->finetune_epochs > 1 ? total - spe : total;
		if (tu.s.t1 <= tu.s.t0)
			tu.s.t1 = tu.s.t0 + 1;
		if (c->schedule == PRUNE_POLYNOMIAL)
			snprintf(power, sizeof(power), ", power %g", c->power);
		mc_ctx_log(ctx, "%s pruning %.4f -> %.4f from step %lld to %lld every %lld "
				"steps%s (%lld steps of fine-tuning)",
			   schedules[c->schedule], c->initial_sparsity, c->sparsity,
			   (long long)tu.s.t0, (long long)tu.s.t1, (long long)tu.s.freq, power,
			   (long long)total);
		if (tu.s.t1 > total)
			mc_ctx_log(ctx, "warning: the schedule ends at step %lld, after the last "
					"step %lld; the final sparsity stays below %.4f",
				   (long long)tu.s.t1, (long long)total, c->sparsity);
		/* The update at step 0 comes before fine-tuning; the hook makes
		 * those after each optimizer step. */
		if (prune_sched_due(&tu.s, 0)) {
			ret = prune_magnitude(m, tu.l, tu.n, &tu.s, 0, mc_ctx_err(ctx));
			tu.updates++;
		}
	}
	if (!ret && c->finetune_epochs > 0)
		ret = keep_state(ctx, m, &tu);
	if (!ret && c->finetune_epochs > 0)
		ret = finetune(ctx, c, m, d, &hooks);
	if (!ret && tu.s.kind != PRUNE_ONE_SHOT)
		mc_ctx_log(ctx, "%lld pruning updates", (long long)tu.updates);
	if (!ret)
		ret = report_layers(ctx, m, tu.l, tu.n);
	prune_layers_free(tu.l, tu.n);
	return ret;
}

static int run_structured(struct mc_ctx *ctx, const struct prune_conf *c, struct mc_model *m,
			  const struct mc_dataset *d)
{
	struct prune_layer *l = NULL;
	struct prune_group *g = NULL;
	uint8_t **keep = NULL;
	int *node = NULL, n = 0, ng = 0, count = 0, ret;
	struct mc_model *nm = NULL;
	char why[256], key[300], before[128], after[128];

	for (int i = 0; i < mc_model_n_nodes(m); i++)
		if (prune_is_layer(mc_model_node(m, i)) && !prune_can_shrink(m, i, why, sizeof(why)))
			mc_ctx_log(ctx, "%s: kept whole: %s", mc_model_node(m, i)->name, why);
	ret = prune_layers_select(m, c, 1, &l, &n, mc_ctx_err(ctx));
	if (ret)
		return ret;
	ret = plan_groups(ctx, m, l, n, &g, &ng, 1);
	if (ret)
		goto out;
	keep = calloc((size_t)n + 1, sizeof(*keep));
	node = calloc((size_t)n + 1, sizeof(*node));
	if (!keep || !node) {
		ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
		goto out;
	}
	/* one ranking per group; each of its layers keeps the same units */
	for (int k = 0; k < ng; k++) {
		const struct mc_tensor *w[PRUNE_TIE_MAX];
		int64_t out = mc_model_node(m, g[k].node[0])->params[0]->shape[0];

		for (int a = 0; a < g[k].n; a++) {
			w[a] = mc_model_node(m, g[k].node[a])->params[0];
			node[count] = g[k].node[a];
			keep[count] = malloc((size_t)out);
			if (!keep[count++]) {
				ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
				goto out;
			}
		}
		ret = prune_rank_tied(w, g[k].n, g[k].target, c->norm, keep[count - g[k].n],
				      mc_ctx_err(ctx));
		if (ret)
			goto out;
		for (int a = 1; a < g[k].n; a++)
			memcpy(keep[count - g[k].n + a], keep[count - g[k].n], (size_t)out);
	}
	nm = prune_shrink(m, count, node, keep, mc_ctx_err(ctx));
	if (!nm) {
		ret = mc_ctx_err(ctx)->code;
		goto out;
	}
	for (int k = 0; k < count; k++) {
		const struct mc_tensor *w0 = mc_model_node(m, node[k])->params[0],
				       *w1 = mc_model_node(nm, node[k])->params[0];
		const char *name = mc_model_node(m, node[k])->name;

		mc_ctx_log(ctx, "%s: %s -> %s, %lld of %lld units removed (%s norm)", name,
			   mc_shape_text(w0->ndim, w0->shape, before, sizeof(before)),
			   mc_shape_text(w1->ndim, w1->shape, after, sizeof(after)),
			   (long long)(w0->shape[0] - w1->shape[0]), (long long)w0->shape[0],
			   norms[c->norm]);
		snprintf(key, sizeof(key), "%s.out_before", name);
		mc_ctx_report(ctx, key, (double)w0->shape[0]);
		snprintf(key, sizeof(key), "%s.out_after", name);
		mc_ctx_report(ctx, key, (double)w1->shape[0]);
		snprintf(key, sizeof(key), "%s.sparsity", name);
		mc_ctx_report(ctx, key, 1.0 - (double)w1->shape[0] / (double)w0->shape[0]);
	}
	mc_ctx_log(ctx, "parameters %lld -> %lld, FLOPs per sample %lld -> %lld",
		   (long long)mc_model_nparams(m), (long long)mc_model_nparams(nm),
		   (long long)mc_model_flops(m), (long long)mc_model_flops(nm));
	if (c->finetune_epochs > 0) {
		ret = finetune(ctx, c, nm, d, NULL);
		if (ret)
			goto out;
	}
	ret = mc_ctx_replace_model(ctx, c->model, nm);
	if (!ret)
		nm = NULL; /* the host owns it now */
out:
	mc_model_free(nm);
	for (int k = 0; keep && k < n; k++)
		free(keep[k]);
	free(keep);
	free(node);
	free(g);
	prune_layers_free(l, n);
	return ret;
}

static int prune_run(struct mc_ctx *ctx, const void *conf)
{
	const struct prune_conf *c = conf;
	struct mc_model *m = mc_ctx_model(ctx, c->model);
	const struct mc_dataset *d = NULL;

	if (c->mode == PRUNE_MODE_SENSITIVITY)
		return prune_sensitivity(ctx, c);
	if (c->finetune_epochs > 0) {
		d = mc_ctx_data(ctx, c->data);
		if (!d)
			return mc_ctx_err(ctx)->code;
		if (d->sample_numel != mc_model_in_numel(m) || d->n_classes > mc_model_n_classes(m))
			return mc_ctx_error(ctx, "data", MC_ERUN,
					    "split '%s' does not fit model '%s' (%lld values, %d "
					    "classes; the model takes %lld values, %lld classes)",
					    c->data, c->model, (long long)d->sample_numel,
					    d->n_classes, (long long)mc_model_in_numel(m),
					    (long long)mc_model_n_classes(m));
	}
	if (c->method == PRUNE_STRUCTURED)
		return run_structured(ctx, c, m, d);
	return run_unstructured(ctx, c, m, d);
}

static const struct mc_pass prune_pass = {
	.abi = MC_PASS_ABI,
	.name = "prune",
	.version = "1.0",
	.description = "prune weights (magnitude, N:M) or whole units (structured, smaller model), "
		       "one-shot or gradual, with masked fine-tuning; or measure sensitivity",
	.license = "MIT",
	.author = "the mcomp developers",
	.conf_size = sizeof(struct prune_conf),
	.params = prune_params,
	.check = prune_check,
	.run = prune_run,
};
MC_PASS_DEFINE(prune_pass);
