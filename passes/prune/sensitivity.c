// SPDX-License-Identifier: MIT
/*
 * sensitivity.c - each prunable layer pruned alone at each level, accuracy
 * measured on a split other than the training one: a table in the log, one
 * report figure per (layer, level), and an SVG line plot (one line per
 * layer, sparsity across, accuracy up, the unpruned accuracy dashed).
 *
 * The model itself is left as it was. Structured levels build the smaller
 * model for real (so batch norm and consumers follow), magnitude levels mask.
 */
#define _GNU_SOURCE /* open_memstream */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "prune.h"
#include "../common/svg.h"

/* acc[layer * levels + level] */
struct table {
	int layers, levels;
	const char **names;
	const double *level;
	double *acc;
	double base;
};

static int prune_one(const struct mc_model *m, const struct prune_conf *c,
		     const struct prune_layer *layer, double s, struct mc_model **out,
		     struct mc_err *err)
{
	const struct prune_sched once = { .kind = PRUNE_ONE_SHOT };
	struct prune_layer one = *layer;
	struct mc_model *p;
	uint8_t *keep;
	int ret;

	*out = NULL;
	if (c->method == PRUNE_STRUCTURED) {
		/* a layer tied to others through a residual add goes with them */
		const struct mc_tensor *w[PRUNE_TIE_MAX];
		uint8_t *keeps[PRUNE_TIE_MAX];
		struct prune_group g;
		char why[256];

		if (!prune_tie(m, layer->node, &g, why, sizeof(why)))
			return mc_err_set(err, MC_ERUN, "prune: layer '%s' cannot shrink: %s",
					  layer->name, why);
		for (int a = 0; a < g.n; a++)
			w[a] = mc_model_node(m, g.node[a])->params[0];
		keep = malloc((size_t)w[0]->shape[0]);
		if (!keep)
			return mc_err_set(err, MC_ENOMEM, "prune: out of memory");
		for (int a = 0; a < g.n; a++)
			keeps[a] = keep;
		ret = prune_rank_tied(w, g.n, s, c->norm, keep, err);
		*out = ret ? NULL : prune_shrink(m, g.n, g.node, keeps, err);
		free(keep);
		return *out ? 0 : err->code;
	}
	p = mc_model_dup(m, err);
	if (!p)
		return err->code;
	one.target = s;
	one.global = 0;
	one.mask = NULL;
	ret = prune_magnitude(p, &one, 1, &once, 0, err);
	free(one.mask);
	if (ret) {
		mc_model_free(p);
		return ret;
	}
	*out = p;
	return 0;
}

static const char *const colors[] = { "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
				      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf" };

/* Writes the plot as SVG text into a malloc'd buffer. */
static int svg(const struct table *t, const char *model, char **buf, size_t *len)
{
	const double W = 720, H = 440, L = 70, R = 170, T = 40, B = 60;
	double lo = t->base, hi = t->base;
	FILE *f = open_memstream(buf, len);

	if (!f)
		return -1;
	for (int i = 0; i < t->layers * t->levels; i++) {
		lo = fmin(lo, t->acc[i]);
		hi = fmax(hi, t->acc[i]);
	}
	lo = floor(lo * 20) / 20; /* to 5-point steps */
	hi = ceil(hi * 20) / 20;
	if (hi <= lo)
		hi = lo + 0.05;
#define X(s) (L + (s) * (W - L - R))
#define Y(a) (T + (hi - (a)) / (hi - lo) * (H - T - B))
	svg_begin(f, W, H);
	fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"15\">prune sensitivity of ", L);
	svg_text(f, model);
	fputs(": each layer pruned alone</text>\n", f);
	for (int k = 0; k <= 10; k++) { /* x grid: sparsity 0..1 */
		double s = k / 10.0;

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
			   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.1f</text>\n",
			X(s), (double)T, X(s), H - B, X(s), H - B + 16, s);
	}
	for (int k = 0; k <= 5; k++) { /* y grid */
		double a = lo + (hi - lo) * k / 5;

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
			   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.1f%%</text>\n",
			L, Y(a), W - R, Y(a), L - 6, Y(a) + 4, 100 * a);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">sparsity of the layer</text>\n"
		   "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">"
		   "accuracy</text>\n",
		(L + W - R) / 2, H - 18, (T + H - B) / 2);
	fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"black\" "
		   "stroke-dasharray=\"6 4\"/>\n",
		L, Y(t->base), W - R, Y(t->base));
	for (int i = 0; i < t->layers; i++) {
		const char *col = colors[i % (int)(sizeof(colors) / sizeof(colors[0]))];

		fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"%.1f,%.1f",
			col, X(0.0), Y(t->base));
		for (int k = 0; k < t->levels; k++)
			fprintf(f, " %.1f,%.1f", X(t->level[k]), Y(t->acc[i * t->levels + k]));
		fputs("\"/>\n", f);
		for (int k = 0; k < t->levels; k++)
			fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n",
				X(t->level[k]), Y(t->acc[i * t->levels + k]), col);
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
			   "stroke-width=\"2\"/>\n<text x=\"%.1f\" y=\"%.1f\">",
			W - R + 14, T + 10 + 18.0 * i, W - R + 34, T + 10 + 18.0 * i, col,
			W - R + 40, T + 14 + 18.0 * i);
		svg_text(f, t->names[i]);
		fputs("</text>\n", f);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">- - unpruned</text>\n</svg>\n", W - R + 14,
		T + 14 + 18.0 * t->layers);
#undef X
#undef Y
	return fclose(f) ? -1 : 0;
}

int prune_sensitivity(struct mc_ctx *ctx, const struct prune_conf *c)
{
	const struct mc_model *m = mc_ctx_model(ctx, c->model);
	const struct mc_dataset *d = mc_ctx_data(ctx, c->eval_data);
	struct table t = { 0 };
	struct prune_layer *l = NULL;
	char line[4096], key[300];
	int64_t lo, hi;
	int n = 0, ret;

	if (!d)
		return mc_ctx_err(ctx)->code;
	if (d->sample_numel != mc_model_in_numel(m))
		return mc_ctx_error(ctx, "eval_data", MC_ERUN,
				    "split '%s' has samples of %lld values but model '%s' takes %lld",
				    c->eval_data, (long long)d->sample_numel, c->model,
				    (long long)mc_model_in_numel(m));
	ret = prune_layers_select(m, c, c->method == PRUNE_STRUCTURED, &l, &n, mc_ctx_err(ctx));
	if (ret)
		return ret;
	t.layers = n;
	t.levels = c->levels.n;
	t.level = c->levels.num;
	t.acc = calloc((size_t)n * (size_t)t.levels + 1, sizeof(double));
	t.names = calloc((size_t)n + 1, sizeof(char *));
	if (!t.acc || !t.names) {
		ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
		goto out;
	}
	ret = mc_evaluate(m, d, 256, &t.base, NULL, mc_ctx_err(ctx));
	if (ret)
		goto out;
	/* Under mpirun each rank measures its share of the (layer, level)
	 * points, each point the same bytes whatever the rank count, and the
	 * ranks exchange them. */
	mc_dist_part((int64_t)n * t.levels, 1, &lo, &hi);
	for (int64_t j = lo; j < hi; j++) {
		int i = (int)(j / t.levels), k = (int)(j % t.levels);
		struct mc_model *p;

		ret = prune_one(m, c, &l[i], t.level[k], &p, mc_ctx_err(ctx));
		if (ret)
			goto out;
		ret = mc_evaluate(p, d, 256, &t.acc[j], NULL, mc_ctx_err(ctx));
		mc_model_free(p);
		if (ret)
			goto out;
	}
	ret = mc_dist_gather(t.acc, (int64_t)n * t.levels, 1, sizeof(double), mc_ctx_err(ctx));
	if (!ret && mc_interrupted()) /* another rank's signal */
		ret = mc_ctx_error(ctx, NULL, MC_EINTR, "sensitivity: interrupted by signal %d",
				   mc_interrupted());
	if (ret)
		goto out;
	for (int i = 0; i < n; i++) {
		t.names[i] = l[i].name;
		for (int k = 0; k < t.levels; k++) {
			snprintf(key, sizeof(key), "%s@%.3g", l[i].name, t.level[k]);
			mc_ctx_report(ctx, key, t.acc[i * t.levels + k]);
		}
	}
	mc_ctx_log(ctx, "sensitivity of '%s' (%s, accuracy %% on '%s'; unpruned %.2f%%):",
		   c->model, c->method == PRUNE_STRUCTURED ? "structured" : "magnitude",
		   c->eval_data, 100 * t.base);
	{
		int at = snprintf(line, sizeof(line), "%-16s", "layer \\ sparsity");

		for (int k = 0; k < t.levels && at < (int)sizeof(line); k++)
			at += snprintf(line + at, sizeof(line) - (size_t)at, " %7.3g", t.level[k]);
		mc_ctx_log(ctx, "%s", line);
	}
	for (int i = 0; i < n; i++) {
		int at = snprintf(line, sizeof(line), "%-16s", l[i].name);

		for (int k = 0; k < t.levels && at < (int)sizeof(line); k++)
			at += snprintf(line + at, sizeof(line) - (size_t)at, " %7.2f",
				       100 * t.acc[i * t.levels + k]);
		mc_ctx_log(ctx, "%s", line);
	}
	mc_ctx_report(ctx, "sensitivity_base_accuracy", t.base);
	if (c->plot) {
		char *buf = NULL;
		size_t len = 0;

		if (svg(&t, c->model, &buf, &len)) {
			free(buf);
			ret = mc_ctx_error(ctx, "plot", MC_ENOMEM, "out of memory drawing the plot");
			goto out;
		}
		ret = mc_ctx_write(ctx, "plot", buf, len);
		free(buf);
		if (ret)
			goto out;
		mc_ctx_log(ctx, "plot written to %s", c->plot);
	}
out:
	free(t.acc);
	free(t.names);
	prune_layers_free(l, n);
	return ret;
}
