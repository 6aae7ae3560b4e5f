// SPDX-License-Identifier: MIT
/*
 * autocompress - accuracy-driven compression: given a budget (max_drop points
 * of accuracy on a held-out split, or min_accuracy) and an objective (bytes
 * of the file, FLOPs, or latency measured here), chooses per layer among
 * f32, int8 (per-channel, static) and 4-bit group-wise (32; per-channel
 * where 32 does not divide a layer's inputs) weights, each dense or
 * magnitude-pruned to one of the given sparsities, and returns the cheapest
 * model it finds that meets the budget, with a recipe that reproduces it.
 *
 * How. The answer is a recipe of plain passes: prune (sparsity 0, the
 * chosen layers in overrides), quantize 8-bit static (the other layers
 * excluded), quantize 4-bit weight-only per-group (the others excluded).
 * Every candidate, from the first single-layer measurement to the final
 * model, is made by running exactly those passes (mc_ctx_run_pass) on a copy
 * of the model as given, so the model this pass leaves is the one `mcomp
 * run RECIPE` makes, byte for byte; the recipe loads the model as given from
 * the file `base`. Two quantize passes rather than a per-layer bits override
 * in quantize: int8 layers run static (u8 inputs) and 4-bit ones
 * weight-only, which are modes of a pass, not of a layer.
 *
 * 1. Sensitivity: each layer alone at each of its choices, accuracy on the
 *    split `data` (never the test split) and cost measured.
 * 2. Uniform recipes (every layer int8; every layer 4-bit; every layer at
 *    each sparsity), measured the same way, for the comparison and the plot.
 * 3. Search (search.c): greedy by accuracy per unit of cost from the table
 *    of step 1, each move checked on the whole model and undone when it
 *    breaks the budget. Deterministic: no randomness, ties to the lower
 *    layer and choice; with objective latency the timings decide, and the
 *    log says so.
 *    A uniform recipe of step 2 that meets the budget and costs less than
 *    the search's answer is the answer instead.
 * 4. max_seconds bounds steps 1 to 3; when it runs out the best
 *    configuration so far is the answer (at worst the model as given).
 *
 * Sensitivity here is not prune's sensitivity.c called as a library: that
 * masks weights by itself, and the formats need quantize's conversion; so
 * both are measured through the passes, the same code the recipe runs.
 */
#define _GNU_SOURCE /* open_memstream */
#include <libgen.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "../common/layers.h"
#include "../common/svg.h"
#include "autocompress.h"

enum { OBJ_BYTES, OBJ_LATENCY, OBJ_FLOPS };
enum { FMT_F32, FMT_INT8, FMT_INT4, FMT_COUNT };

static const char *const objectives[] = { "bytes", "latency", "flops", NULL };
static const char *const fmt_names[] = { "f32", "int8", "int4", NULL };
static const char *const units[] = { "bytes", "ms", "FLOPs" };

#define ZSTD_LEVEL 9 /* the level mcomp writes a .zst output at (output: zstd_level: 0) */
#define GROUP 32     /* 4-bit group size */

struct ac_conf {
	char *model;
	char *data;
	double max_drop;
	double min_accuracy;
	int objective;
	struct mc_list formats;
	struct mc_list sparsities;
	int zstd;
	struct mc_list exclude;
	char *calibration_data;
	int samples;
	int finetune_epochs;
	char *finetune_data;
	double max_seconds;
	int seed;
	char *recipe;
	char *base;
	char *plot;
	char *table;
};

static const struct mc_param_def ac_params[] = {
	MC_PARAM_MODEL(struct ac_conf, model, NULL, "the model to compress (f32, as trained)"),
	MC_PARAM_SPLIT(struct ac_conf, data, NULL,
		       "the held-out split every candidate is measured on (never test)"),
	MC_PARAM_FLOAT(struct ac_conf, max_drop, NULL, 0, 100,
		       "budget: accuracy points on data the result may lose", .group = "budget"),
	MC_PARAM_FLOAT(struct ac_conf, min_accuracy, NULL, 0, 100,
		       "budget: accuracy (%) on data the result must keep", .group = "budget"),
	MC_PARAM_ENUM(struct ac_conf, objective, "bytes", objectives,
		      "what is made small: bytes of the file, forward latency at batch 256 "
		      "measured here, or FLOPs (multiply-adds of zero weights not counted)"),
	MC_PARAM_LIST(struct ac_conf, formats, MC_PARAM_TSTRING, "[f32, int8, int4]", 0, 0,
		      "weight formats a layer may take: f32, int8 (per-channel, static), int4 "
		      "(group-wise 32, linear layers)"),
	MC_PARAM_LIST(struct ac_conf, sparsities, MC_PARAM_TFLOAT, "[0.5, 0.75, 0.9]", 0, 0.999,
		      "magnitude sparsities a layer may take besides dense"),
	MC_PARAM_BOOL(struct ac_conf, zstd, "true",
		      "objective bytes: of the file zstd-coded (write the output as .zst), so "
		      "that zeros count"),
	MC_PARAM_LIST(struct ac_conf, exclude, MC_PARAM_TSTRING, "[]", 0, 0,
		      "layer names or globs left f32 and dense"),
	MC_PARAM_SPLIT(struct ac_conf, calibration_data, NULL,
		       "int8: the split activation ranges are calibrated on; default: train",
		       .flags = MC_PARAM_FOPTIONAL),
	MC_PARAM_INT(struct ac_conf, samples, "1000", 1, 100000, "int8: calibration samples"),
	MC_PARAM_INT(struct ac_conf, finetune_epochs, "0", 0, 1000,
		     "epochs of masked fine-tuning of every candidate (prune's)"),
	MC_PARAM_SPLIT(struct ac_conf, finetune_data, NULL,
		       "the split fine-tuned on; default: train", .flags = MC_PARAM_FOPTIONAL),
	MC_PARAM_FLOAT(struct ac_conf, max_seconds, "600", 0, 1e7,
		       "time for the search; then the best so far is the answer"),
	MC_PARAM_INT(struct ac_conf, seed, "-1", -1, 2147483647,
		     "fine-tuning's shuffling seed; -1 uses the pipeline's"),
	MC_PARAM_PATH(struct ac_conf, recipe, NULL,
		      "write the pipeline that reproduces the result here (YAML)",
		      .flags = MC_PARAM_FOPTIONAL | MC_PARAM_FOUTPUT),
	MC_PARAM_PATH(struct ac_conf, base, NULL,
		      "write the model as given here: the recipe loads it",
		      .flags = MC_PARAM_FOPTIONAL | MC_PARAM_FOUTPUT),
	MC_PARAM_PATH(struct ac_conf, plot, NULL,
		      "an SVG of every candidate, cost across, accuracy up, the Pareto front",
		      .flags = MC_PARAM_FOPTIONAL | MC_PARAM_FOUTPUT),
	MC_PARAM_PATH(struct ac_conf, table, NULL, "the per-layer table as text",
		      .flags = MC_PARAM_FOPTIONAL | MC_PARAM_FOUTPUT),
	MC_PARAM_END,
};

/* One way to store a layer: a weight format and a sparsity (-1: dense). */
struct choice {
	int fmt;
	int sp; /* index into c->sparsities, or -1 */
};

struct layer {
	const char *name; /* the node's (borrowed from the base model) */
	int node;
	int conv;
	int64_t weights, in; /* weights; inputs of a row */
	int n;		    /* choices; choice 0 is f32 dense */
	struct choice *ch;
};

/* A candidate evaluated, for the plot. */
enum { PT_BASE, PT_ALONE, PT_UNIFORM, PT_SEARCH, PT_CHOSEN };
struct point {
	double cost, acc;
	int kind;
	char label[64];
};

struct ac {
	struct mc_ctx *ctx;
	const struct ac_conf *c;
	const struct mc_dataset *d;
	struct mc_model *base; /* the model as given (owned) */
	int L;
	struct layer *l;
	double base_acc, base_cost, min_acc, deadline, t0;
	double base_ms; /* objective latency: the first timing of the model as given */
	int fmt_on[FMT_COUNT];
	const struct mc_pass *prune, *quantize;
	int npts, cappts;
	struct point *pts;
	int count; /* candidates evaluated */
	int kind;  /* of the points being evaluated */
	char label[64];
};

/* ---------------------------------------------------------------- layers */

static int is_layer(const struct mc_node *nd)
{
	return !strcmp(nd->op->name, "linear") || !strcmp(nd->op->name, "conv2d");
}

/* Whether layer nd can take format f as the quantize pass does it. */
static int fmt_fits(const struct mc_node *nd, int f)
{
	const struct mc_tensor *w = nd->params[0];
	int64_t in = w->numel / w->shape[0];

	if (f == FMT_F32)
		return 1;
	if (!strcmp(nd->op->name, "conv2d"))
		return f == FMT_INT8 && mc_node_attr_int(nd, "groups", 1) == 1;
	if (in > 65536)
		return 0;
	return f == FMT_INT8 || in % 2 == 0; /* 4-bit rows pack two a byte */
}

/* 4-bit layers take groups of GROUP inputs, or one scale a row where GROUP
 * does not divide their inputs (the MLP's first layer, 784). */
static int int4_grouped(const struct layer *l)
{
	return l->in % GROUP == 0;
}

static int choice_text(const struct ac *a, const struct layer *l, const struct choice *ch,
		       char *buf, size_t n)
{
	const char *f = ch->fmt == FMT_INT4 && !int4_grouped(l) ? "int4-pc" : fmt_names[ch->fmt];

	if (ch->sp < 0)
		return snprintf(buf, n, "%s", f);
	return snprintf(buf, n, "%s s%s", f, a->c->sparsities.str[ch->sp]);
}

static int layers_make(struct ac *a)
{
	const struct mc_model *m = a->base;

	a->l = calloc((size_t)mc_model_n_nodes(m) + 1, sizeof(*a->l));
	if (!a->l)
		return mc_ctx_error(a->ctx, NULL, MC_ENOMEM, "out of memory");
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);
		struct layer *l = &a->l[a->L];

		if (!is_layer(nd) || nd->params[0]->dtype != MC_F32 ||
		    layers_match_any(&a->c->exclude, nd->name))
			continue;
		l->name = nd->name;
		l->node = i;
		l->conv = !strcmp(nd->op->name, "conv2d");
		l->weights = nd->params[0]->numel;
		l->in = l->weights / nd->params[0]->shape[0];
		l->ch = calloc((size_t)FMT_COUNT * ((size_t)a->c->sparsities.n + 1), sizeof(*l->ch));
		if (!l->ch)
			return mc_ctx_error(a->ctx, NULL, MC_ENOMEM, "out of memory");
		/* f32 dense first; then by format, dense before sparse. */
		for (int f = 0; f < FMT_COUNT; f++)
			for (int s = -1; s < a->c->sparsities.n; s++)
				if ((f == FMT_F32 || a->fmt_on[f]) && fmt_fits(nd, f))
					l->ch[l->n++] = (struct choice){ f, s };
		a->L++;
	}
	return 0;
}

/* ---------------------------------------------------------------- recipes */

/* One parameter of a pass in a recipe: a scalar, a list item or a map entry. */
enum { KV_SCALAR, KV_ITEM, KV_ENTRY };
struct kv {
	const char *param;
	char key[256]; /* map entries: the layer */
	char text[64];
	int kind;
};

struct step {
	const char *pass;
	int n;
	struct kv *kv; /* at most 8 + 2 layers */
};

struct recipe {
	int n;
	struct step s[3];
};

static void kv_add(struct step *st, int kind, const char *param, const char *key,
		   const char *text)
{
	struct kv *k = &st->kv[st->n++];

	k->param = param;
	k->kind = kind;
	snprintf(k->key, sizeof(k->key), "%s", key ? key : "");
	snprintf(k->text, sizeof(k->text), "%s", text);
}

static void recipe_free(struct recipe *r)
{
	for (int i = 0; i < r->n; i++)
		free(r->s[i].kv);
	r->n = 0;
}

/* A quantize step's first parameters: its model, bits and granularity, symmetric. */
static void quant_step(const struct ac *a, const char *bits, const char *granularity,
		       struct step *st)
{
	st->pass = "quantize";
	kv_add(st, KV_SCALAR, "model", NULL, a->c->model);
	kv_add(st, KV_SCALAR, "bits", NULL, bits);
	kv_add(st, KV_SCALAR, "scheme", NULL, "symmetric");
	kv_add(st, KV_SCALAR, "granularity", NULL, granularity);
}

/* The exclude list of format fmt's quantize step: every layer choice[] gives another format. */
static void exclude_others(const struct ac *a, const int *choice, int fmt, struct step *st)
{
	for (int i = 0; i < a->L; i++)
		if (a->l[i].ch[choice[i]].fmt != fmt)
			kv_add(st, KV_ITEM, "exclude", NULL, a->l[i].name);
}

/* The passes that make configuration choice[] from the model as given. */
static int recipe_make(const struct ac *a, const int *choice, struct recipe *r)
{
	const struct ac_conf *c = a->c;
	int any[FMT_COUNT] = { 0 }, sparse = 0;
	char num[32];

	memset(r, 0, sizeof(*r));
	for (int i = 0; i < a->L; i++) {
		const struct choice *ch = &a->l[i].ch[choice[i]];

		any[ch->fmt] = 1;
		sparse |= ch->sp >= 0;
	}
	for (int i = 0; i < 3; i++) {
		r->s[i].kv = calloc((size_t)a->L + 12, sizeof(struct kv));
		if (!r->s[i].kv) {
			r->n = 3;
			recipe_free(r);
			return MC_ENOMEM;
		}
	}
	r->n = 3;
	if (sparse || c->finetune_epochs > 0) {
		struct step *st = &r->s[0];

		st->pass = "prune";
		kv_add(st, KV_SCALAR, "model", NULL, c->model);
		kv_add(st, KV_SCALAR, "method", NULL, "magnitude");
		kv_add(st, KV_SCALAR, "scope", NULL, "per-layer");
		kv_add(st, KV_SCALAR, "sparsity", NULL, "0");
		for (int i = 0; i < a->L; i++) {
			const struct choice *ch = &a->l[i].ch[choice[i]];

			if (ch->sp >= 0)
				kv_add(st, KV_ENTRY, "overrides", a->l[i].name,
				       c->sparsities.str[ch->sp]);
		}
		/* prune names a split even when it does not train: the recipe has it */
		kv_add(st, KV_SCALAR, "data", NULL, c->finetune_data ? c->finetune_data : "train");
		if (c->finetune_epochs > 0) {
			snprintf(num, sizeof(num), "%d", c->finetune_epochs);
			kv_add(st, KV_SCALAR, "finetune_epochs", NULL, num);
			if (c->seed >= 0) {
				snprintf(num, sizeof(num), "%d", c->seed);
				kv_add(st, KV_SCALAR, "seed", NULL, num);
			}
		}
	}
	if (any[FMT_INT8]) {
		struct step *st = &r->s[1];

		quant_step(a, "8", "per-channel", st);
		kv_add(st, KV_SCALAR, "mode", NULL, "static");
		kv_add(st, KV_SCALAR, "calibration", NULL, "minmax");
		kv_add(st, KV_SCALAR, "calibration_data", NULL,
		       c->calibration_data ? c->calibration_data : "train");
		snprintf(num, sizeof(num), "%d", c->samples);
		kv_add(st, KV_SCALAR, "samples", NULL, num);
		exclude_others(a, choice, FMT_INT8, st);
	}
	if (any[FMT_INT4]) {
		struct step *st = &r->s[2];

		quant_step(a, "4", "per-group", st);
		snprintf(num, sizeof(num), "%d", GROUP);
		kv_add(st, KV_SCALAR, "group_size", NULL, num);
		kv_add(st, KV_SCALAR, "mode", NULL, "weight-only");
		exclude_others(a, choice, FMT_INT4, st);
		for (int i = 0; i < a->L; i++)
			if (a->l[i].ch[choice[i]].fmt == FMT_INT4 && !int4_grouped(&a->l[i]))
				kv_add(st, KV_ENTRY, "overrides", a->l[i].name, "per-channel");
	}
	return 0;
}

/* Runs step st (a pass and its parameters) on the pipeline's models. */
static int step_run(struct ac *a, const struct step *st, int quiet)
{
	const struct mc_pass *pass = !strcmp(st->pass, "prune") ? a->prune : a->quantize;
	struct mc_err *err = mc_ctx_err(a->ctx);
	void *conf = calloc(1, pass->conf_size);
	int ret;

	if (!conf)
		return mc_ctx_error(a->ctx, NULL, MC_ENOMEM, "out of memory");
	ret = mc_param_defaults(pass->params, conf, err);
	for (int i = 0; !ret && i < st->n; i++) {
		const struct kv *k = &st->kv[i];
		const struct mc_param_def *def = mc_param_find(pass->params, k->param);

		if (!def)
			ret = mc_ctx_error(a->ctx, NULL, MC_ERUN, "pass '%s' has no parameter '%s'; "
					   "is it an older build?", st->pass, k->param);
		else if (k->kind == KV_ENTRY)
			ret = mc_param_map_put(def, conf, k->key, k->text, err);
		else
			ret = mc_param_set(def, conf, k->text, err);
	}
	if (!ret)
		ret = mc_ctx_run_pass(a->ctx, pass, conf, quiet);
	mc_param_free(pass->params, conf);
	free(conf);
	return ret;
}

/* Makes configuration choice[] from the model as given, in the pipeline's model. */
static int apply(struct ac *a, const int *choice, int quiet)
{
	struct mc_model *m = mc_model_dup(a->base, mc_ctx_err(a->ctx));
	struct recipe r;
	int ret;

	if (!m)
		return mc_ctx_err(a->ctx)->code;
	ret = mc_ctx_replace_model(a->ctx, a->c->model, m);
	if (ret) {
		mc_model_free(m);
		return ret;
	}
	if (recipe_make(a, choice, &r))
		return mc_ctx_error(a->ctx, NULL, MC_ENOMEM, "out of memory");
	for (int i = 0; !ret && i < r.n; i++)
		if (r.s[i].pass)
			ret = step_run(a, &r.s[i], quiet);
	recipe_free(&r);
	return ret;
}

/* The recipe as text: "  - prune:\n      model: m\n ..." */
static void recipe_passes(FILE *f, const struct recipe *r)
{
	for (int i = 0; i < r->n; i++) {
		const struct step *st = &r->s[i];

		if (!st->pass)
			continue;
		fprintf(f, "  - %s:\n", st->pass);
		for (int k = 0; k < st->n; k++) {
			const struct kv *kv = &st->kv[k];
			int first = k == 0 || strcmp(st->kv[k - 1].param, kv->param);
			int last = k + 1 == st->n || strcmp(st->kv[k + 1].param, kv->param);

			if (kv->kind == KV_SCALAR) {
				fprintf(f, "      %s: %s\n", kv->param, kv->text);
				continue;
			}
			if (first)
				fprintf(f, "      %s: %c", kv->param, kv->kind == KV_ITEM ? '[' : '{');
			if (kv->kind == KV_ENTRY)
				fprintf(f, "%s: ", kv->key);
			fputs(kv->text, f);
			if (last)
				fprintf(f, "%c\n", kv->kind == KV_ITEM ? ']' : '}');
			else
				fputs(", ", f);
		}
	}
}

/* ---------------------------------------------------------------- measuring */

struct fwd {
	struct mc_exec *e;
	const float *x;
	int n;
};

static void fwd_run(void *arg)
{
	struct fwd *f = arg;

	mc_forward(f->e, f->x, f->n);
}

/* FLOPs per sample, a layer's scaled by its share of nonzero weights. */
static double eff_flops(const struct mc_model *m)
{
	double total = 0.0;

	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);
		const struct mc_tensor *w = nd->n_params ? nd->params[0] : NULL;
		double fl = nd->op->flops ? (double)nd->op->flops(nd) : 0.0, nz = 0.0;

		if (w && w->numel &&
		    (w->dtype == MC_F32 || w->dtype == MC_S8 || w->dtype == MC_Q4) &&
		    (strstr(nd->op->name, "linear") || strstr(nd->op->name, "conv"))) {
			const uint8_t *q = w->data;

			for (int64_t k = 0; k < w->numel; k++)
				nz += w->dtype == MC_F32  ? ((const float *)w->data)[k] != 0.0f
				      : w->dtype == MC_S8 ? ((const int8_t *)w->data)[k] != 0
							  : (q[k / 2] >> 4 * (k % 2) & 0xf) != 8;
			fl *= nz / (double)w->numel;
		}
		total += fl;
	}
	return total;
}

static int cost_of(struct ac *a, const struct mc_model *m, double *cost)
{
	struct mc_err *err = mc_ctx_err(a->ctx);

	if (a->c->objective == OBJ_FLOPS) {
		*cost = eff_flops(m);
	} else if (a->c->objective == OBJ_LATENCY) {
		/* On a shared machine the speed drifts from minute to minute: each
		 * candidate is timed against the model as given, interleaved (m, given,
		 * m, given), and its cost is the ratio times the first timing of the
		 * model as given, so that candidates timed at different moments compare. */
		struct fwd f[2] = { { .x = a->d->x, .n = a->d->n < 256 ? (int)a->d->n : 256 } };
		double t[2] = { 0, 0 };

		f[1] = f[0];
		f[0].e = mc_exec_new(m, f[0].n, 0, err);
		f[1].e = f[0].e ? mc_exec_new(a->base, f[1].n, 0, err) : NULL;
		if (!f[1].e) {
			mc_exec_free(f[0].e);
			return err->code;
		}
		for (int r = 0; r < 4; r++)
			t[r % 2] += mc_time_median(fwd_run, &f[r % 2], 3, 30, 0.25);
		mc_exec_free(f[0].e);
		mc_exec_free(f[1].e);
		if (!(a->base_ms > 0))
			a->base_ms = t[1] / 2;
		*cost = a->base_ms * t[0] / t[1];
	} else {
		void *buf = NULL, *z;
		size_t len = 0, zl;
		int ret = mc_model_serialize(m, &buf, &len, err);

		if (ret)
			return ret;
		*cost = (double)len;
		if (a->c->zstd) {
			z = malloc(ZSTD_compressBound(len));
			if (!z) {
				free(buf);
				return mc_ctx_error(a->ctx, NULL, MC_ENOMEM, "out of memory");
			}
			zl = ZSTD_compress(z, ZSTD_compressBound(len), buf, len, ZSTD_LEVEL);
			free(z);
			if (ZSTD_isError(zl)) {
				free(buf);
				return mc_ctx_error(a->ctx, NULL, MC_ERUN, "zstd: %s",
						    ZSTD_getErrorName(zl));
			}
			*cost = (double)zl;
		}
		free(buf);
	}
	return 0;
}

static int add_point(struct ac *a, double cost, double acc, int kind, const char *label)
{
	if (a->npts == a->cappts) {
		int cap = a->cappts ? 2 * a->cappts : 64;
		struct point *p = realloc(a->pts, (size_t)cap * sizeof(*p));

		if (!p)
			return mc_ctx_error(a->ctx, NULL, MC_ENOMEM, "out of memory");
		a->pts = p;
		a->cappts = cap;
	}
	a->pts[a->npts] = (struct point){ cost, acc, kind, "" };
	snprintf(a->pts[a->npts].label, sizeof(a->pts[0].label), "%s", label ? label : "");
	a->npts++;
	return 0;
}

/* ac_eval_fn: makes choice[] and measures it on the held-out split. */
static int evaluate(void *arg, const int *choice, double *acc, double *cost)
{
	struct ac *a = arg;
	const struct mc_model *m;
	double t = mc_now();
	int ret;

	if (mc_interrupted())
		return mc_ctx_error(a->ctx, NULL, MC_EINTR, "interrupted during the search");
	if (t > a->deadline)
		return 1;
	ret = apply(a, choice, 1);
	if (ret)
		return ret;
	m = mc_ctx_model(a->ctx, a->c->model);
	ret = mc_evaluate(m, a->d, 256, acc, NULL, mc_ctx_err(a->ctx));
	if (!ret)
		ret = cost_of(a, m, cost);
	if (!ret)
		ret = add_point(a, *cost, *acc, a->kind, a->label);
	if (ret)
		return ret;
	a->count++;
	if (a->kind == PT_SEARCH) {
		char what[512];
		int at = 0;

		for (int i = 0; i < a->L && at < (int)sizeof(what) - 1; i++) {
			char ct[64];

			choice_text(a, &a->l[i], &a->l[i].ch[choice[i]], ct, sizeof(ct));
			at += snprintf(what + at, sizeof(what) - (size_t)at, "%s%s=%s",
				       i ? " " : "", a->l[i].name, ct);
		}
		snprintf(a->label, sizeof(a->label), "search");
		mc_ctx_log(a->ctx, "[%d] %s: %.2f%% (%+.2f pt), %.8g %s%s (%.1f s)", a->count,
			   what, 100 * *acc, 100 * (*acc - a->base_acc), *cost,
			   units[a->c->objective], *acc >= a->min_acc - 1e-12 ? "" : ", over budget",
			   mc_now() - a->t0);
	}
	return 0;
}

/* ---------------------------------------------------------------- outputs */

static int cmp_pt(const void *x, const void *y)
{
	const struct point *p = x, *q = y;

	if (p->cost != q->cost)
		return p->cost < q->cost ? -1 : 1;
	return p->acc > q->acc ? -1 : p->acc < q->acc;
}

static int plot_svg(const struct ac *a, char **buf, size_t *len)
{
	const double W = 760, H = 460, L = 80, R = 180, T = 40, B = 60;
	double lo = a->min_acc, hi = a->base_acc, cmax = 0, best = -1;
	FILE *f = open_memstream(buf, len);
	struct point *s;

	if (!f)
		return -1;
	for (int i = 0; i < a->npts; i++) {
		lo = fmin(lo, a->pts[i].acc);
		hi = fmax(hi, a->pts[i].acc);
		cmax = fmax(cmax, a->pts[i].cost);
	}
	/* The region that matters, around the budget: candidates far below it
	 * (a layer pruned to death) sit on the bottom edge. */
	lo = fmax(lo, a->min_acc - 4 * fmax(a->base_acc - a->min_acc, 0.005));
	lo = floor(lo * 100) / 100;
	hi = ceil(hi * 100) / 100;
	if (hi <= lo)
		hi = lo + 0.01;
	if (cmax <= 0)
		cmax = 1;
#define X(c) (L + (c) / cmax * (W - L - R))
#define Y(v) (T + (hi - fmax(v, lo)) / (hi - lo) * (H - T - B))
	svg_begin(f, W, H);
	fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"15\">autocompress of ", L);
	svg_text(f, a->c->model);
	fprintf(f, ": every candidate, accuracy on '");
	svg_text(f, a->c->data);
	fprintf(f, "' against %s</text>\n", objectives[a->c->objective]);
	for (int k = 0; k <= 5; k++) {
		double c = cmax * k / 5, v = lo + (hi - lo) * k / 5;

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
			   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.4g</text>\n",
			X(c), T, X(c), H - B, X(c), H - B + 16, c);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
			   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.1f%%</text>\n",
			L, Y(v), W - R, Y(v), L - 6, Y(v) + 4, 100 * v);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n"
		   "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">"
		   "accuracy</text>\n",
		(L + W - R) / 2, H - 18, units[a->c->objective], (T + H - B) / 2);
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" "
		   "stroke-dasharray=\"6 4\"/>\n",
		L, Y(a->min_acc), W - R, Y(a->min_acc));
	/* The Pareto front: the points no cheaper point beats in accuracy. */
	s = malloc(((size_t)a->npts + 1) * sizeof(*s));
	if (s) {
		memcpy(s, a->pts, (size_t)a->npts * sizeof(*s));
		qsort(s, (size_t)a->npts, sizeof(*s), cmp_pt);
		fputs("<polyline fill=\"none\" stroke=\"#2ca02c\" stroke-width=\"2\" points=\"", f);
		for (int i = 0; i < a->npts; i++)
			if (s[i].acc > best) {
				fprintf(f, " %.1f,%.1f", X(s[i].cost), Y(s[i].acc));
				best = s[i].acc;
			}
		fputs("\"/>\n", f);
		free(s);
	}
	for (int i = 0; i < a->npts; i++) {
		const struct point *p = &a->pts[i];

		if (p->kind == PT_UNIFORM) {
			fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" "
				   "fill=\"#ff7f0e\"/>\n<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">",
				X(p->cost) - 4, Y(p->acc) - 4, X(p->cost) + 6, Y(p->acc) - 6);
			svg_text(f, p->label);
			fputs("</text>\n", f);
		} else {
			fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%d\" fill=\"%s\"/>\n",
				X(p->cost), Y(p->acc), p->kind == PT_CHOSEN ? 6 : 3,
				p->kind == PT_CHOSEN  ? "#d62728" :
				p->kind == PT_SEARCH  ? "#1f77b4" :
				p->kind == PT_BASE    ? "black" :
							"#aaa");
		}
	}
	{
		static const char *const key[] = { "given model", "one layer changed",
						   "uniform recipe", "search", "chosen" };
		static const char *const col[] = { "black", "#aaa", "#ff7f0e", "#1f77b4",
						   "#d62728" };

		for (int k = 0; k < 5; k++)
			fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"%s\"/>"
				   "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
				W - R + 18, T + 10 + 18.0 * k, col[k], W - R + 28, T + 14 + 18.0 * k,
				key[k]);
		fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"#2ca02c\">— Pareto front</text>\n"
			   "<text x=\"%.1f\" y=\"%.1f\" fill=\"#d62728\">- - budget</text>\n"
			   "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\">below %.1f%%: on the "
			   "bottom edge</text>\n</svg>\n",
			W - R + 14, T + 14 + 18.0 * 5, W - R + 14, T + 14 + 18.0 * 6, W - R + 14,
			T + 14 + 18.0 * 7, 100 * lo);
	}
#undef X
#undef Y
	return fclose(f) ? -1 : 0;
}

/* The split's definition as a pipeline's data: entry, into f. */
static int split_yaml(struct ac *a, FILE *f, const char *name)
{
	struct mc_data_source src;
	int64_t first, count;
	char path[PATH_MAX];
	const char *files[3];
	const char *keys[3];
	int nf = 0;

	if (mc_ctx_split_source(a->ctx, name, &src, &first, &count))
		return mc_ctx_error(a->ctx, NULL, MC_ERUN, "no split '%s'", name);
	fprintf(f, "  %s: {", name);
	if (src.format == MC_DATA_IDX) {
		files[nf] = src.x, keys[nf++] = "images";
		files[nf] = src.y, keys[nf++] = "labels";
	} else if (src.format == MC_DATA_NPZ) {
		files[nf] = src.file, keys[nf++] = "npz";
	}
	for (int i = 0; i < nf; i++) {
		if (!realpath(files[i], path))
			return mc_ctx_error(a->ctx, "recipe", MC_ERUN, "cannot resolve '%s'",
					    files[i]);
		fprintf(f, "%s%s: \"%s\"", i ? ", " : "", keys[i], path);
	}
	if (src.format == MC_DATA_NPY) {
		fputs("npy: {", f);
		for (int i = 0; i < 2; i++) {
			if (!realpath(i ? src.y : src.x, path))
				return mc_ctx_error(a->ctx, "recipe", MC_ERUN,
						    "cannot resolve '%s'", i ? src.y : src.x);
			fprintf(f, "%s: \"%s\"%s", i ? "y" : "x", path, i ? "}" : ", ");
		}
	} else if (src.format == MC_DATA_NPZ) {
		fprintf(f, ", x: %s, y: %s", src.x, src.y);
	}
	if (first > 0)
		fprintf(f, ", first: %lld", (long long)first);
	if (count >= 0)
		fprintf(f, ", count: %lld", (long long)count);
	if (src.pre.scale > 0)
		fprintf(f, ", scale: %.17g", src.pre.scale);
	for (int k = 0; k < 2; k++) {
		int n = k ? src.pre.n_std : src.pre.n_mean;
		const double *v = k ? src.pre.std : src.pre.mean;

		for (int i = 0; i < n; i++)
			fprintf(f, "%s%.17g%s", i ? ", " : k ? ", std: [" : ", mean: [", v[i],
				i + 1 == n ? "]" : "");
	}
	fputs("}\n", f);
	return 0;
}

/* "dir/name.yaml" -> "name" into buf. */
static void stem(const char *path, char *buf, size_t n)
{
	const char *b = strrchr(path, '/');
	char *dot;

	snprintf(buf, n, "%s", b ? b + 1 : path);
	dot = strrchr(buf, '.');
	if (dot && (!strcmp(dot, ".yaml") || !strcmp(dot, ".yml")))
		*dot = '\0';
}

/* Where the recipe finds the base model: its name when beside it, else absolute. */
static int base_ref(const struct ac *a, char *buf, size_t n)
{
	char d1[PATH_MAX], d2[PATH_MAX], r1[PATH_MAX], r2[PATH_MAX];
	const char *bb = strrchr(a->c->base, '/');

	snprintf(d1, sizeof(d1), "%s", a->c->base);
	snprintf(d2, sizeof(d2), "%s", a->c->recipe);
	if (!realpath(dirname(d1), r1) || !realpath(dirname(d2), r2))
		return -1;
	bb = bb ? bb + 1 : a->c->base;
	if (!strcmp(r1, r2))
		snprintf(buf, n, "%s", bb);
	else
		snprintf(buf, n, "%s/%s", r1, bb);
	return 0;
}

static int write_recipe(struct ac *a, const int *choice, double acc, double cost)
{
	const struct ac_conf *c = a->c;
	struct recipe r;
	char *buf = NULL, ref[PATH_MAX + 256], name[256];
	size_t len = 0;
	FILE *f;
	int ret = 0, int8 = 0;

	if (recipe_make(a, choice, &r))
		return mc_ctx_error(a->ctx, NULL, MC_ENOMEM, "out of memory");
	if (base_ref(a, ref, sizeof(ref))) {
		recipe_free(&r);
		return mc_ctx_error(a->ctx, "recipe", MC_ERUN, "cannot resolve the folders of "
				    "'%s' and '%s'", c->base, c->recipe);
	}
	int8 = r.s[1].pass != NULL;
	stem(c->recipe, name, sizeof(name));
	f = open_memstream(&buf, &len);
	if (!f) {
		recipe_free(&r);
		return mc_ctx_error(a->ctx, NULL, MC_ENOMEM, "out of memory");
	}
	fprintf(f, "# Written by the autocompress pass: model '%s' compressed for %s within %s on "
		   "split '%s'\n# (%.2f%% there; as given %.2f%%), %.8g %s (as given %.8g).\n"
		   "# It loads the model as given and runs plain passes; `mcomp run` on this file\n"
		   "# writes the same model, byte for byte.\n",
		c->model, objectives[c->objective],
		mc_ctx_given(a->ctx, "min_accuracy") ? "a minimum accuracy" : "an accuracy budget",
		c->data, 100 * acc, 100 * a->base_acc, cost, units[c->objective], a->base_cost);
	fprintf(f, "mcomp: 1\nseed: %llu\ndata:\n", (unsigned long long)mc_ctx_seed(a->ctx));
	{
		const char *need[3] = { NULL, NULL, "test" };
		struct mc_data_source src;
		int64_t fi, co;

		if (int8)
			need[0] = c->calibration_data ? c->calibration_data : "train";
		if (r.s[0].pass)
			need[1] = c->finetune_data ? c->finetune_data : "train";
		if (need[1] && need[0] && !strcmp(need[0], need[1]))
			need[1] = NULL;
		for (int i = 0; i < 3 && !ret; i++) {
			if (!need[i] || (i == 2 && mc_ctx_split_source(a->ctx, "test", &src, &fi, &co)))
				continue;
			ret = split_yaml(a, f, need[i]);
		}
	}
	fprintf(f, "models:\n  %s: {load: \"%s\"}\npasses:\n", c->model, ref);
	recipe_passes(f, &r);
	fprintf(f, "  - eval: {model: %s}\n", c->model);
	fprintf(f, "output: {model: %s, path: \"%s.safetensors%s\"}\nreport: \"%s-report.json\"\n",
		c->model, name, c->zstd ? ".zst" : "", name);
	recipe_free(&r);
	if (fclose(f)) {
		free(buf);
		return mc_ctx_error(a->ctx, NULL, MC_ENOMEM, "out of memory");
	}
	if (!ret)
		ret = mc_ctx_write(a->ctx, "recipe", buf, len);
	free(buf);
	return ret;
}

/* ---------------------------------------------------------------- running */

static int ac_check(struct mc_ctx *ctx, const void *conf)
{
	const struct ac_conf *c = conf;
	const struct mc_model *m = mc_ctx_model(ctx, c->model);
	const char *const keys[] = { "data", "calibration_data", "finetune_data" };
	const char *vals[] = { c->data, c->calibration_data, c->finetune_data };
	int ret;

	for (int i = 0; i < 3; i++)
		if (vals[i] && !strcmp(vals[i], "test"))
			return mc_ctx_error(ctx, keys[i], MC_EINVAL,
					    "'test' measures the result and must not choose it; "
					    "carve a held-out split from the training data (e.g. "
					    "valid: {idx: ..., first: 55000, count: 5000})");
	for (int i = 0; i < c->formats.n; i++) {
		int ok = 0;

		for (int f = 0; f < FMT_COUNT; f++)
			ok |= !strcmp(c->formats.str[i], fmt_names[f]);
		if (!ok)
			return mc_ctx_error(ctx, "formats", MC_EINVAL,
					    "unknown format '%s'; use f32, int8 or int4",
					    c->formats.str[i]);
	}
	for (int i = 0; i < c->sparsities.n; i++) {
		int twice = !(c->sparsities.num[i] > 0);

		for (int k = 0; k < i; k++)
			twice |= c->sparsities.num[i] == c->sparsities.num[k];
		if (twice)
			return mc_ctx_error(ctx, "sparsities", MC_EINVAL,
					    "%s is given twice or is not above 0 (dense is always a "
					    "choice); list each level once",
					    c->sparsities.str[i]);
	}
	if (c->recipe && !c->base)
		return mc_ctx_error(ctx, "base", MC_EINVAL,
				    "the recipe loads the model as given from a file: name it "
				    "(base: out/NAME-base.safetensors)");
	if (!mc_ctx_find_pass(ctx, "prune") || !mc_ctx_find_pass(ctx, "quantize"))
		return mc_ctx_error(ctx, NULL, MC_EINVAL,
				    "the prune and quantize passes must be on the pass path: the "
				    "candidates are made by them");
	if (!c->calibration_data) {
		ret = mc_ctx_check_data(ctx, "calibration_data", "train");
		if (ret)
			return ret;
	}
	if ((c->finetune_epochs > 0 || c->sparsities.n) && !c->finetune_data) {
		ret = mc_ctx_check_data(ctx, "finetune_data", "train");
		if (ret)
			return ret;
	}
	if (m) {
		ret = layers_check_patterns(ctx, c->model, m, is_layer, NULL, &c->exclude);
		if (ret)
			return ret;
	}
	return 0;
}

static int cmp_dbl(const void *x, const void *y)
{
	double p = *(const double *)x, q = *(const double *)y;

	return (p > q) - (p < q);
}

#define DUEL_ROUNDS 7

/*
 * objective latency: the chosen model, every uniform recipe that met the
 * budget (uch[k], named ulab[k]) and the model as given, timed at batch
 * 256 (or the split's size) in one sitting: DUEL_ROUNDS rounds, each a
 * median of repeated forwards of every model in turn (the order rotated a
 * place each round), and each model's figure the median of its rounds. The
 * search's figures are each a ratio to the model as given timed beside it;
 * this puts the answer and the uniform recipes side by side, on one clock.
 */
static int latency_duel(struct ac *a, const int *best, int **uch, char (*ulab)[64], int nu)
{
	struct mc_err *err = mc_ctx_err(a->ctx);
	int M = nu + 2, ret = 0, faster = 1, others = 0;
	const char *itself = NULL;
	struct fwd *f = calloc((size_t)M, sizeof(*f));
	struct mc_model **m = calloc((size_t)M, sizeof(*m));
	double *t = calloc((size_t)M * DUEL_ROUNDS, sizeof(*t));
	double *med = calloc((size_t)M, sizeof(*med));
	int n = a->d->n < 256 ? (int)a->d->n : 256;

	if (!f || !m || !t || !med) {
		ret = mc_ctx_error(a->ctx, NULL, MC_ENOMEM, "out of memory");
		goto out;
	}
	/* 0: the chosen; 1..nu: the uniform recipes; nu + 1: as given */
	for (int k = 0; k <= nu && !ret; k++) {
		ret = apply(a, k ? uch[k - 1] : best, 1);
		if (!ret && !(m[k] = mc_model_dup(mc_ctx_model(a->ctx, a->c->model), err)))
			ret = err->code;
	}
	for (int k = 0; k < M && !ret; k++) {
		f[k] = (struct fwd){ .x = a->d->x, .n = n };
		f[k].e = mc_exec_new(k <= nu ? m[k] : a->base, n, 0, err);
		if (!f[k].e)
			ret = err->code;
	}
	for (int r = 0; r < DUEL_ROUNDS && !ret; r++) {
		if (mc_interrupted()) {
			ret = mc_ctx_error(a->ctx, NULL, MC_EINTR, "interrupted timing the answer");
			break;
		}
		for (int i = 0; i < M; i++) {
			int k = (i + r) % M;

			t[k * DUEL_ROUNDS + r] = mc_time_median(fwd_run, &f[k], 3, 30, 0.25);
		}
	}
	if (ret)
		goto out;
	for (int k = 0; k < M; k++) {
		qsort(t + k * DUEL_ROUNDS, DUEL_ROUNDS, sizeof(double), cmp_dbl);
		med[k] = t[k * DUEL_ROUNDS + DUEL_ROUNDS / 2];
	}
	mc_ctx_log(a->ctx, "batch-%d latency, side by side (%d interleaved rounds, median; "
		   "measured on this machine now):", n, DUEL_ROUNDS);
	mc_ctx_log(a->ctx, "  chosen                 %8.3f ms", med[0]);
	mc_ctx_report(a->ctx, "duel chosen ms", med[0]);
	for (int k = 1; k <= nu; k++) {
		int same = !memcmp(uch[k - 1], best, (size_t)a->L * sizeof(*best));
		char key[96];

		mc_ctx_log(a->ctx, "  uniform %-14s %8.3f ms  (%.2fx the chosen's time)%s",
			   ulab[k - 1], med[k], med[k] / med[0], same ? ", the chosen itself" : "");
		if (same) {
			itself = ulab[k - 1];
		} else {
			faster &= med[0] < med[k];
			others++;
		}
		snprintf(key, sizeof(key), "duel uniform %s ms", ulab[k - 1]);
		mc_ctx_report(a->ctx, key, med[k]);
	}
	mc_ctx_log(a->ctx, "  as given               %8.3f ms  (%.2fx the chosen's time)",
		   med[M - 1], med[M - 1] / med[0]);
	mc_ctx_report(a->ctx, "duel given ms", med[M - 1]);
	if (!others)
		mc_ctx_log(a->ctx, "no %suniform recipe meets the budget", nu ? "other " : "");
	else
		mc_ctx_log(a->ctx, "the chosen model%s%s%s is %s than every %suniform recipe that "
			   "meets the budget",
			   itself ? " (uniform " : "", itself ? itself : "", itself ? ")" : "",
			   faster ? "faster" : "NOT faster", itself ? "other " : "");
	if (!others)
		faster = 0; /* nothing to be faster than */
	mc_ctx_report(a->ctx, "duel chosen fastest", faster);
out:
	for (int k = 0; k < M; k++) {
		if (f)
			mc_exec_free(f[k].e);
		if (m)
			mc_model_free(m[k]);
	}
	free(f);
	free(m);
	free(t);
	free(med);
	return ret;
}

static void log_table(struct ac *a, const int *choice, double *const *drop,
		      double *const *dcost, FILE *tf)
{
	char line[512], ct[64];

	snprintf(line, sizeof(line), "%-16s %-8s %10s  %-12s %14s %16s", "layer", "op", "weights",
		 "choice", "alone: drop pt", "alone: saving");
	mc_ctx_log(a->ctx, "%s", line);
	if (tf)
		fprintf(tf, "%s\n", line);
	for (int i = 0; i < a->L; i++) {
		int j = choice[i];

		choice_text(a, &a->l[i], &a->l[i].ch[j], ct, sizeof(ct));
		snprintf(line, sizeof(line), "%-16s %-8s %10lld  %-12s %14.2f %16.8g", a->l[i].name,
			 a->l[i].conv ? "conv2d" : "linear", (long long)a->l[i].weights, ct,
			 100 * drop[i][j], -dcost[i][j]);
		mc_ctx_log(a->ctx, "%s", line);
		if (tf)
			fprintf(tf, "%s\n", line);
	}
}

static int ac_run(struct mc_ctx *ctx, const void *conf)
{
	const struct ac_conf *c = conf;
	struct ac a = { .ctx = ctx, .c = c };
	struct mc_err *err = mc_ctx_err(ctx);
	double **drop = NULL, **dcost = NULL;
	unsigned char **valid = NULL;
	int *nch = NULL, *choice = NULL, *best = NULL, *ubest = NULL, ret;
	int **umeet = NULL, nmeet = 0; /* objective latency: uniform recipes within the budget */
	char (*umeet_lab)[64] = NULL;
	double ucost = 0, uacc = 0;
	char uname[64] = "";
	struct ac_result res = { 0 };
	struct ac_table t;
	char ct[64];

	a.t0 = mc_now();
	a.deadline = a.t0 + c->max_seconds;
	a.prune = mc_ctx_find_pass(ctx, "prune");
	a.quantize = mc_ctx_find_pass(ctx, "quantize");
	if (!a.prune || !a.quantize)
		return mc_ctx_error(ctx, NULL, MC_ERUN, "the prune and quantize passes are not on "
				    "the pass path");
	for (int i = 0; i < c->formats.n; i++)
		for (int f = 0; f < FMT_COUNT; f++)
			a.fmt_on[f] |= !strcmp(c->formats.str[i], fmt_names[f]);
	a.d = mc_ctx_data(ctx, c->data);
	if (!a.d)
		return err->code;
	a.base = mc_model_dup(mc_ctx_model(ctx, c->model), err);
	if (!a.base)
		return err->code;
	if (a.d->sample_numel != mc_model_in_numel(a.base)) {
		ret = mc_ctx_error(ctx, "data", MC_ERUN,
				   "split '%s' has samples of %lld values but model '%s' takes %lld",
				   c->data, (long long)a.d->sample_numel, c->model,
				   (long long)mc_model_in_numel(a.base));
		goto out;
	}
	ret = layers_make(&a);
	if (ret)
		goto out;
	if (!a.L) {
		ret = mc_ctx_error(ctx, "exclude", MC_ERUN, "model '%s' has no f32 linear or "
				   "conv2d layer left to compress", c->model);
		goto out;
	}
	if (c->objective == OBJ_LATENCY)
		mc_ctx_log(ctx, "objective latency: the choices depend on timings measured on this "
			   "machine now; another run (or load) may choose differently");
	ret = mc_evaluate(a.base, a.d, 256, &a.base_acc, NULL, err);
	if (!ret)
		ret = cost_of(&a, a.base, &a.base_cost);
	if (ret)
		goto out;
	a.min_acc = mc_ctx_given(ctx, "min_accuracy") ? c->min_accuracy / 100
						       : a.base_acc - c->max_drop / 100;
	add_point(&a, a.base_cost, a.base_acc, PT_BASE, "given");
	mc_ctx_log(ctx, "'%s' as given: %.2f%% on '%s', %.8g %s; budget: %.2f%% or more; "
		   "%d layers, %.0f s at most",
		   c->model, 100 * a.base_acc, c->data, a.base_cost, units[c->objective],
		   100 * a.min_acc, a.L, c->max_seconds);

	nch = calloc((size_t)a.L, sizeof(*nch));
	drop = calloc((size_t)a.L, sizeof(*drop));
	dcost = calloc((size_t)a.L, sizeof(*dcost));
	valid = calloc((size_t)a.L, sizeof(*valid));
	choice = calloc((size_t)a.L, sizeof(*choice));
	best = calloc((size_t)a.L, sizeof(*best));
	ubest = calloc((size_t)a.L, sizeof(*ubest));
	umeet = calloc((size_t)FMT_COUNT + (size_t)c->sparsities.n, sizeof(*umeet));
	umeet_lab = calloc((size_t)FMT_COUNT + (size_t)c->sparsities.n, sizeof(*umeet_lab));
	if (!nch || !drop || !dcost || !valid || !choice || !best || !ubest || !umeet ||
	    !umeet_lab) {
		ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
		goto out;
	}
	for (int i = 0; i < a.L; i++) {
		nch[i] = a.l[i].n;
		drop[i] = calloc((size_t)nch[i], sizeof(double));
		dcost[i] = calloc((size_t)nch[i], sizeof(double));
		valid[i] = calloc((size_t)nch[i], 1);
		if (!drop[i] || !dcost[i] || !valid[i]) {
			ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
			goto out;
		}
		valid[i][0] = 1;
	}

	/* 1. Sensitivity: each layer alone at each choice. */
	a.kind = PT_ALONE;
	for (int i = 0; i < a.L && !res.timed_out; i++) {
		char line[1024];
		int at = snprintf(line, sizeof(line), "%s alone:", a.l[i].name);

		for (int j = 1; j < nch[i]; j++) {
			double acc, cost;

			choice[i] = j;
			choice_text(&a, &a.l[i], &a.l[i].ch[j], ct, sizeof(ct));
			snprintf(a.label, sizeof(a.label), "%s", ct);
			ret = evaluate(&a, choice, &acc, &cost);
			choice[i] = 0;
			if (ret == 1) {
				res.timed_out = 1;
				ret = 0;
				break;
			}
			if (ret)
				goto out;
			drop[i][j] = a.base_acc - acc;
			dcost[i][j] = cost - a.base_cost;
			valid[i][j] = 1;
			if (at < (int)sizeof(line))
				at += snprintf(line + at, sizeof(line) - (size_t)at, " %s %.2f%%", ct,
					       100 * acc);
		}
		mc_ctx_log(ctx, "%s (%.1f s)", line, mc_now() - a.t0);
	}

	/* 2. The uniform recipes, for comparison. */
	a.kind = PT_UNIFORM;
	for (int u = 0; u < FMT_COUNT - 1 + c->sparsities.n && !res.timed_out; u++) {
		int fmt = u < FMT_COUNT - 1 ? u + 1 : FMT_F32, sp = u < FMT_COUNT - 1 ? -1 : u - 2;
		double acc, cost;
		int changed = 0;

		if (fmt != FMT_F32 && !a.fmt_on[fmt])
			continue;
		for (int i = 0; i < a.L; i++) {
			choice[i] = 0;
			for (int j = 0; j < nch[i]; j++)
				if (a.l[i].ch[j].fmt == fmt && a.l[i].ch[j].sp == sp)
					choice[i] = j;
			changed |= choice[i] != 0;
		}
		if (!changed)
			continue;
		if (sp < 0)
			snprintf(a.label, sizeof(a.label), "%s%s", fmt_names[fmt],
				 fmt == FMT_INT4 ? "-g32" : "");
		else
			snprintf(a.label, sizeof(a.label), "sparsity %s", c->sparsities.str[sp]);
		ret = evaluate(&a, choice, &acc, &cost);
		if (ret == 1) {
			res.timed_out = 1;
			ret = 0;
			break;
		}
		if (ret)
			goto out;
		mc_ctx_log(ctx, "uniform %-14s %.2f%% (%+.2f pt), %.8g %s%s", a.label, 100 * acc,
			   100 * (acc - a.base_acc), cost, units[c->objective],
			   acc >= a.min_acc - 1e-12 ? ", meets the budget" : "");
		if (acc >= a.min_acc - 1e-12 && c->objective == OBJ_LATENCY) {
			umeet[nmeet] = malloc((size_t)a.L * sizeof(*choice));
			if (!umeet[nmeet]) {
				ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
				goto out;
			}
			memcpy(umeet[nmeet], choice, (size_t)a.L * sizeof(*choice));
			snprintf(umeet_lab[nmeet++], sizeof(umeet_lab[0]), "%s", a.label);
		}
		if (acc >= a.min_acc - 1e-12 && cost < a.base_cost && (!uname[0] || cost < ucost)) {
			memcpy(ubest, choice, (size_t)a.L * sizeof(*choice));
			ucost = cost;
			uacc = acc;
			snprintf(uname, sizeof(uname), "%s", a.label);
		}
		{
			char key[96];

			snprintf(key, sizeof(key), "uniform %s accuracy", a.label);
			mc_ctx_report(ctx, key, acc);
			snprintf(key, sizeof(key), "uniform %s %s", a.label, objectives[c->objective]);
			mc_ctx_report(ctx, key, cost);
		}
	}
	memset(choice, 0, (size_t)a.L * sizeof(*choice));

	/* 3. The search. */
	a.kind = PT_SEARCH;
	snprintf(a.label, sizeof(a.label), "search");
	t = (struct ac_table){ .layers = a.L, .n_choices = nch, .drop = drop, .dcost = dcost,
			       .valid = valid };
	res.best = best;
	{
		int timed = res.timed_out;

		if (!timed) {
			ret = ac_search(&t, a.base_acc, a.base_cost, a.min_acc, evaluate, &a, &res);
			if (ret)
				goto out;
		} else {
			res.acc = a.base_acc;
			res.cost = a.base_cost;
		}
		res.timed_out |= timed;
	}
	if (res.timed_out)
		mc_ctx_log(ctx, "the time (max_seconds %g) ran out: the best configuration so far "
			   "is the answer", c->max_seconds);
	/* A uniform recipe is a configuration measured like any other: the
	 * search's answer is never worse than the best of them that fits. */
	if (uname[0] && ucost < res.cost) {
		mc_ctx_log(ctx, "uniform %s (%.8g %s) beats the search's %.8g: it is the answer",
			   uname, ucost, units[c->objective], res.cost);
		memcpy(best, ubest, (size_t)a.L * sizeof(*best));
		res.cost = ucost;
		res.acc = uacc;
	}
	mc_ctx_log(ctx, "%d candidates in %.1f s; chosen: %.2f%% on '%s' (%+.2f pt), %.8g %s "
		   "(as given / chosen: %.2fx)",
		   a.count, mc_now() - a.t0, 100 * res.acc, c->data, 100 * (res.acc - a.base_acc),
		   res.cost, units[c->objective], res.cost > 0 ? a.base_cost / res.cost : 0.0);

	if (c->objective == OBJ_LATENCY) {
		ret = latency_duel(&a, best, umeet, umeet_lab, nmeet);
		if (ret)
			goto out;
	}

	/* The answer: made once more by the recipe's passes, this time in the open. */
	ret = apply(&a, best, 0);
	if (ret)
		goto out;
	add_point(&a, res.cost, res.acc, PT_CHOSEN, "chosen");
	{
		char *tb = NULL;
		size_t tl = 0;
		FILE *tf = c->table ? open_memstream(&tb, &tl) : NULL;

		if (tf)
			fprintf(tf, "autocompress of '%s': %.2f%% on '%s' (as given %.2f%%), %.8g %s "
				    "(as given %.8g)\n",
				c->model, 100 * res.acc, c->data, 100 * a.base_acc, res.cost,
				units[c->objective], a.base_cost);
		log_table(&a, best, drop, dcost, tf);
		if (tf && fclose(tf) == 0)
			ret = mc_ctx_write(ctx, "table", tb, tl);
		else if (c->table)
			ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
		free(tb);
		if (ret)
			goto out;
	}
	for (int i = 0; i < a.L; i++) {
		const struct choice *ch = &a.l[i].ch[best[i]];
		char key[300];

		snprintf(key, sizeof(key), "%s.bits", a.l[i].name);
		mc_ctx_report(ctx, key, ch->fmt == FMT_F32 ? 32 : ch->fmt == FMT_INT8 ? 8 : 4);
		snprintf(key, sizeof(key), "%s.sparsity", a.l[i].name);
		mc_ctx_report(ctx, key, ch->sp < 0 ? 0.0 : c->sparsities.num[ch->sp]);
	}
	mc_ctx_report(ctx, "split_accuracy", res.acc);
	mc_ctx_report(ctx, "split_accuracy_given", a.base_acc);
	mc_ctx_report(ctx, objectives[c->objective], res.cost);
	mc_ctx_report(ctx, "candidates", a.count);
	mc_ctx_report(ctx, "timed_out", res.timed_out);
	if (c->base) {
		void *buf = NULL;
		size_t len = 0;

		ret = mc_model_serialize(a.base, &buf, &len, err);
		if (!ret)
			ret = mc_ctx_write(ctx, "base", buf, len);
		free(buf);
		if (ret)
			goto out;
	}
	if (c->recipe) {
		ret = write_recipe(&a, best, res.acc, res.cost);
		if (ret)
			goto out;
		mc_ctx_log(ctx, "recipe written to %s", c->recipe);
	}
	if (c->plot) {
		char *buf = NULL;
		size_t len = 0;

		if (plot_svg(&a, &buf, &len)) {
			free(buf);
			ret = mc_ctx_error(ctx, "plot", MC_ENOMEM, "out of memory drawing the plot");
			goto out;
		}
		ret = mc_ctx_write(ctx, "plot", buf, len);
		free(buf);
	}
out:
	for (int i = 0; i < a.L; i++) {
		free(a.l[i].ch);
		if (drop)
			free(drop[i]);
		if (dcost)
			free(dcost[i]);
		if (valid)
			free(valid[i]);
	}
	free(a.l);
	free(drop);
	free(dcost);
	free(valid);
	free(nch);
	free(choice);
	free(best);
	free(ubest);
	for (int k = 0; umeet && k < nmeet; k++)
		free(umeet[k]);
	free(umeet);
	free(umeet_lab);
	free(a.pts);
	mc_model_free(a.base);
	return ret;
}

static const struct mc_pass autocompress_pass = {
	.abi = MC_PASS_ABI,
	.name = "autocompress",
	.version = "1.0",
	.description = "choose per-layer int8 / 4-bit / sparsity for the smallest (or fastest) "
		       "model within an accuracy budget on a held-out split; writes the recipe",
	.license = "MIT",
	.author = "the mcomp developers",
	.conf_size = sizeof(struct ac_conf),
	.params = ac_params,
	.check = ac_check,
	.run = ac_run,
};
MC_PASS_DEFINE(autocompress_pass);
