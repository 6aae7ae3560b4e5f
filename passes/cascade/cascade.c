/* SPDX-License-Identifier: MIT */
/*
 * cascade - builds an early-exit cascade of models (mcomp/cascade.h): the
 * cheapest stage sees every input, and only the inputs it is unsure of go
 * on to the next. The thresholds are chosen on a held-out split to meet a
 * target (an accuracy drop against the last stage, or a cost budget), or
 * given by the user. The cascade is saved as one file, then run on the test
 * split beside the last stage alone: accuracy, throughput and latency in the
 * report are measured, not estimated.
 *
 * Every stage runs once over the calibration split; calibrate.c chooses the
 * thresholds from those confidences alone.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cascade_pass.h"

struct cascade_conf {
	struct mc_list stages;
	int confidence;
	char *calibrate;
	int target;
	double max_drop;
	double max_cost;
	struct mc_list thresholds;
	int cost;
	char *output;
	char *plot;
};

static const char *const targets[] = { "accuracy-drop", "cost", NULL };
static const char *const costs[] = { "latency", "flops", NULL };

static const struct mc_param_def cascade_params[] = {
	MC_PARAM_LIST(struct cascade_conf, stages, MC_PARAM_TMODEL, NULL, 0, 0,
		      "the models (names under models:), cheapest first; 1 to 8, taking the same "
		      "input and giving the same classes"),
	MC_PARAM_ENUM(struct cascade_conf, confidence, "max-prob", mc_confidence_names,
		      "how sure a stage is: max-prob (top softmax probability), margin (top-1 "
		      "minus top-2) or entropy (minus the softmax's entropy)"),
	MC_PARAM_SPLIT(struct cascade_conf, calibrate, "val",
		       "the held-out split the thresholds are chosen on (never 'test')"),
	MC_PARAM_ENUM(struct cascade_conf, target, "accuracy-drop", targets,
		      "accuracy-drop: the cheapest thresholds within max_drop of the last stage's "
		      "accuracy; cost: the most accurate within max_cost"),
	MC_PARAM_FLOAT(struct cascade_conf, max_drop, "0.2", 0, 100,
		       "target accuracy-drop: the largest drop below the last stage's accuracy on "
		       "the calibration split, in percentage points"),
	MC_PARAM_FLOAT(struct cascade_conf, max_cost, "0.5", 0, 100,
		       "target cost: the largest expected cost, as a fraction of the last stage's"),
	MC_PARAM_LIST(struct cascade_conf, thresholds, MC_PARAM_TFLOAT, "[]", -1000, 1000,
		      "fixed thresholds, one per stage but the last (a sample exits where its "
		      "confidence reaches it); empty: calibrate them"),
	MC_PARAM_ENUM(struct cascade_conf, cost, "latency", costs,
		      "the cost of a stage: latency (per-sample time at batch 256, measured here) "
		      "or flops"),
	MC_PARAM_PATH(struct cascade_conf, output, NULL, "the cascade file to write",
		      .flags = MC_PARAM_FOUTPUT),
	MC_PARAM_PATH(struct cascade_conf, plot, "",
		      "an SVG plot of the threshold sweep (accuracy against relative cost)",
		      .flags = MC_PARAM_FOUTPUT),
	MC_PARAM_END,
};

#define BATCH 256
#define SWEEP_ROWS 16

/* ---------------------------------------------------------------- validation */

/* The stages' models, checked: distinct, named without '/', the same input
 * shape and class count. Errors at the stages key. */
static int stage_models(struct mc_ctx *ctx, const struct cascade_conf *c,
			const struct mc_model **m)
{
	char a[128], b[128];
	int64_t ss[MC_MAX_DIMS], s0[MC_MAX_DIMS];
	int ns, n0;
	int k = c->stages.n;

	if (k < 1 || k > MC_CASCADE_MAX_STAGES)
		return mc_ctx_error(ctx, "stages", MC_EINVAL,
				    "%d stages; name 1 to %d models, cheapest first", k,
				    MC_CASCADE_MAX_STAGES);
	for (int s = 0; s < k; s++) {
		const char *name = c->stages.str[s];

		m[s] = mc_ctx_model(ctx, name);
		if (!m[s])
			return mc_ctx_error(ctx, "stages", MC_EINVAL,
					    "no model named '%s' in the pipeline", name);
		if (strchr(name, '/'))
			return mc_ctx_error(ctx, "stages", MC_EINVAL,
					    "stage '%s': a cascade names its members' tensors "
					    "'<stage>/<tensor>', so a stage's name cannot hold '/'; "
					    "rename the model",
					    name);
		for (int t = 0; t < s; t++)
			if (strcmp(c->stages.str[t], name) == 0)
				return mc_ctx_error(ctx, "stages", MC_EINVAL,
						    "model '%s' is stage %d and stage %d; name each "
						    "model once",
						    name, t + 1, s + 1);
		ns = mc_model_input_shape(m[s], ss);
		n0 = mc_model_input_shape(m[0], s0);
		if (ns != n0 || memcmp(ss, s0, sizeof(s0[0]) * (size_t)n0))
			return mc_ctx_error(ctx, "stages", MC_EINVAL,
					    "stage '%s' takes input %s but stage '%s' takes %s; every "
					    "stage must take the same input",
					    name, mc_shape_text(ns, ss, a, sizeof(a)),
					    c->stages.str[0], mc_shape_text(n0, s0, b, sizeof(b)));
		if (mc_model_n_classes(m[s]) != mc_model_n_classes(m[0]))
			return mc_ctx_error(ctx, "stages", MC_EINVAL,
					    "stage '%s' outputs %lld classes but stage '%s' outputs "
					    "%lld; every stage must give the same classes",
					    name, (long long)mc_model_n_classes(m[s]), c->stages.str[0],
					    (long long)mc_model_n_classes(m[0]));
	}
	return 0;
}

static int cascade_check(struct mc_ctx *ctx, const void *conf)
{
	const struct cascade_conf *c = conf;
	const struct mc_model *m[MC_CASCADE_MAX_STAGES];
	int ret;

	for (int s = 0; s < c->stages.n; s++)
		if (!mc_ctx_model(ctx, c->stages.str[s]))
			return 0; /* the host has said so */
	ret = stage_models(ctx, c, m);
	if (ret)
		return ret;
	if (c->thresholds.n && c->thresholds.n != c->stages.n - 1)
		return mc_ctx_error(ctx, "thresholds", MC_EINVAL,
				    "%d thresholds for %d stages; give one per stage but the last "
				    "(%d), or none to calibrate them",
				    c->thresholds.n, c->stages.n, c->stages.n - 1);
	if (strcmp(c->calibrate, "test") == 0)
		return mc_ctx_error(ctx, "calibrate", MC_EINVAL,
				    "thresholds chosen on the test split would make its accuracy "
				    "optimistic; hold out part of the training data instead, e.g. "
				    "train: {idx: ..., count: 55000} and val: {idx: ..., first: "
				    "55000, count: 5000}, and calibrate on val");
	return 0;
}

/* ---------------------------------------------------------------- costs */

/* A forward of a batch, for mc_time_median. */
struct batch_job {
	struct mc_exec *e;
	const float *x;
};

static void run_batch(void *arg)
{
	const struct batch_job *j = arg;

	mc_forward(j->e, j->x, BATCH);
}

/* Median per-sample milliseconds of m's forward at batch 256 over d's first
 * samples (repeated when d has fewer): 2 warm-ups, then 10 to 100 timed runs,
 * as many as fit in half a second. */
static int stage_latency(const struct mc_model *m, const struct mc_dataset *d, double *ms,
			 struct mc_err *err)
{
	size_t row = (size_t)mc_model_in_numel(m);
	struct mc_exec *e = mc_exec_new(m, BATCH, 0, err);
	float *x = mc_calloc((size_t)BATCH * row, sizeof(float));
	struct batch_job j = { e, x };

	if (!e || !x) {
		mc_exec_free(e);
		mc_free(x);
		return e ? mc_err_set(err, MC_ENOMEM, "out of memory timing a stage") : err->code;
	}
	for (int i = 0; i < BATCH; i++)
		memcpy(x + (size_t)i * row, d->x + (size_t)(i % d->n) * row, row * sizeof(float));
	*ms = mc_time_median(run_batch, &j, 10, 100, 0.5) / BATCH;
	mc_exec_free(e);
	mc_free(x);
	return 0;
}

/* ---------------------------------------------------------------- calibration */

/* Runs stage m over all of d once: conf[d->n] and correct[d->n] (top class,
 * the first of equal maxima as mc_evaluate takes it, equals the label). */
static int stage_outputs(const struct mc_model *m, int kind, const struct mc_dataset *d,
			 float *conf, uint8_t *correct, struct mc_err *err)
{
	struct mc_exec *e = mc_exec_new(m, BATCH, 0, err);
	int classes = (int)mc_model_n_classes(m);

	if (!e)
		return err->code;
	for (int64_t i = 0; i < d->n; i += BATCH) {
		int n = (int)(d->n - i < BATCH ? d->n - i : BATCH);
		const float *z = mc_forward(e, d->x + (size_t)i * (size_t)d->sample_numel, n);

		mc_confidence(kind, z, n, classes, conf + i);
		for (int r = 0; r < n; r++)
			correct[i + r] = mc_argmax(z + (size_t)r * (size_t)classes, classes) ==
					 d->y[i + r];
	}
	mc_exec_free(e);
	return 0;
}

/* ---------------------------------------------------------------- files */

/* A copy of each stage and the thresholds of p, as one cascade. */
static struct mc_cascade *build(const struct cascade_conf *c, const struct mc_model **m, int k,
				const float *thr, struct mc_err *err)
{
	struct mc_model *dup[MC_CASCADE_MAX_STAGES] = { 0 };
	const char *const *names = (const char *const *)c->stages.str + (c->stages.n - k);
	struct mc_cascade *casc;

	for (int s = 0; s < k; s++) {
		dup[s] = mc_model_dup(m[s], err);
		if (!dup[s]) {
			while (s--)
				mc_model_free(dup[s]);
			return NULL;
		}
	}
	casc = mc_cascade_new(k, names, dup, c->confidence, err);
	for (int s = 0; casc && s < k - 1; s++)
		casc->thresholds[s] = thr[s];
	return casc;
}

/* ---------------------------------------------------------------- report */

static const char *thr_text(float t, char *buf, size_t n)
{
	if (t >= CASCADE_NEVER)
		snprintf(buf, n, "never");
	else
		snprintf(buf, n, "%.6g", t);
	return buf;
}

static void report_stage(struct mc_ctx *ctx, const char *name, const char *what, double v)
{
	char key[300];

	snprintf(key, sizeof(key), "%s_%s", name, what);
	mc_ctx_report(ctx, key, v);
}

/* One line of the sweep table: the header when p is NULL. */
static void sweep_row(char *line, size_t size, int k, char *const *names,
		      const struct cascade_point *p, int64_t n, char mark)
{
	char t[32];
	int at = snprintf(line, size, "  %c", mark);

	for (int s = 0; s < k - 1 && at < (int)size; s++) {
		if (p)
			thr_text(p->thr[s], t, sizeof(t));
		else
			snprintf(t, sizeof(t), "thr %.7s", names[s]);
		at += snprintf(line + at, size - (size_t)at, " %11s", t);
	}
	for (int s = 0; s < k && at < (int)size; s++) {
		if (p)
			at += snprintf(line + at, size - (size_t)at, " %7.2f%%",
				       100.0 * (double)p->exits[s] / (double)n);
		else
			at += snprintf(line + at, size - (size_t)at, " %8.8s", names[s]);
	}
	if (at >= (int)size)
		return;
	if (p)
		snprintf(line + at, size - (size_t)at, " %8.2f%% %9.3f", 100 * p->accuracy,
			 p->rel_cost);
	else
		snprintf(line + at, size - (size_t)at, " %9s %9s", "accuracy", "rel.cost");
}

/* The sweep's Pareto front as a table, and its plot. */
static int report_sweep(struct mc_ctx *ctx, const struct cascade_conf *c,
			const struct cascade_calib *cal, const struct cascade_sweep *sw,
			const struct cascade_point *chosen, double last_acc)
{
	int k = cal->n_stages, *front = malloc((size_t)(sw->n ? sw->n : 1) * sizeof(int)),
	    rows[SWEEP_ROWS + 1], nf, nr, ret = 0, on_front = 0;
	char line[1024];

	if (!front)
		return mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
	nf = cascade_front(sw, front);
	nr = cascade_front_rows(sw, front, nf, SWEEP_ROWS, chosen, rows);
	mc_ctx_log(ctx, "threshold sweep on '%s': %d settings tried (%s), %d on the Pareto front; "
		   "%d of them:",
		   c->calibrate, sw->n,
		   k == 1 ? "one stage, nothing to choose"
		   : k == 2 ? "every distinct confidence"
		   : sw->exhaustive ? "the whole quantile grid" : "coordinate descent",
		   nf, nr);
	sweep_row(line, sizeof(line), k, c->stages.str, NULL, cal->n, ' ');
	mc_ctx_log(ctx, "%s", line);
	for (int r = 0; r < nr; r++) {
		const struct cascade_point *p = &sw->pts[rows[r]];
		int is_chosen = cascade_same_thr(p, chosen);

		on_front |= is_chosen;
		sweep_row(line, sizeof(line), k, c->stages.str, p, cal->n, is_chosen ? '*' : ' ');
		mc_ctx_log(ctx, "%s", line);
	}
	if (!on_front) {
		sweep_row(line, sizeof(line), k, c->stages.str, chosen, cal->n, '*');
		mc_ctx_log(ctx, "%s  (not on the front)", line);
	}
	mc_ctx_log(ctx, "  * chosen; per stage: the threshold, and the fraction exiting there; the "
		   "last stage alone: %.2f%% at 1.000",
		   100 * last_acc);
	if (c->plot) {
		char title[512], *buf = NULL;
		size_t len = 0, at = 0;
		struct cascade_plot pl = {
			.title = title, .sweep = sw, .front = front, .n_front = nf,
			.chosen = chosen, .last_accuracy = last_acc, .target = c->target,
			.limit = c->target == CASCADE_ACCURACY_DROP ? c->max_drop / 100 : c->max_cost,
		};

		at += (size_t)snprintf(title, sizeof(title), "cascade ");
		for (int s = 0; s < k && at < sizeof(title); s++)
			at += (size_t)snprintf(title + at, sizeof(title) - at, "%s%s",
					       s ? " -> " : "", c->stages.str[s]);
		if (at < sizeof(title))
			snprintf(title + at, sizeof(title) - at, ": threshold sweep on '%s'",
				 c->calibrate);
		if (cascade_svg(&pl, &buf, &len)) {
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
	free(front);
	return ret;
}

static void report_measured(struct mc_ctx *ctx, const struct cascade_conf *c, int k,
			    const double *cost, const char *unit, const struct cascade_point *p,
			    const struct mc_cascade_measure *mc, const struct mc_cascade_measure *ml,
			    const char *ev_name)
{
	const char *last = c->stages.str[k - 1];
	char t[32];

	mc_ctx_log(ctx, "cascade measured on '%s' (%lld bytes):", ev_name, (long long)mc->bytes);
	mc_ctx_log(ctx, "  %-12s %10s %8s %10s %12s", "stage", "threshold", "exits",
		   "accuracy", unit);
	for (int s = 0; s < k; s++) {
		const char *name = c->stages.str[s];
		char acc[32];

		if (mc->exit_acc[s] < 0)
			snprintf(acc, sizeof(acc), "-");
		else
			snprintf(acc, sizeof(acc), "%.2f%%", 100 * mc->exit_acc[s]);
		mc_ctx_log(ctx, "  %-12.12s %10s %7.2f%% %10s %12.4g", name,
			   s < k - 1 ? thr_text(p->thr[s], t, sizeof(t)) : "-",
			   100 * mc->exit_frac[s], acc, cost[s]);
		if (s < k - 1)
			report_stage(ctx, name, "threshold", p->thr[s]);
		report_stage(ctx, name, "exit_fraction", mc->exit_frac[s]);
		report_stage(ctx, name, "exit_accuracy", mc->exit_acc[s]);
		report_stage(ctx, name, "cost", cost[s]);
	}
	mc_ctx_log(ctx, "  %-12s %10s %10s %14s %10s", "", "accuracy", "batch 256", "batch-1 latency",
		   "bytes");
	mc_ctx_log(ctx, "  %-12s %9.2f%% %8.0f/s %12.4f ms %10lld", "cascade", 100 * mc->accuracy,
		   mc->throughput256, mc->latency1_ms, (long long)mc->bytes);
	mc_ctx_log(ctx, "  %-12.12s %9.2f%% %8.0f/s %12.4f ms %10lld", last, 100 * ml->accuracy,
		   ml->throughput256, ml->latency1_ms, (long long)ml->bytes);
	mc_ctx_log(ctx, "cascade vs '%s' alone: %+.2f pt accuracy, %.2fx throughput at batch 256, "
		   "%.2fx batch-1 latency",
		   last, 100 * (mc->accuracy - ml->accuracy), mc->throughput256 / ml->throughput256,
		   ml->latency1_ms / mc->latency1_ms);
	mc_ctx_report(ctx, "accuracy", mc->accuracy);
	mc_ctx_report(ctx, "throughput256", mc->throughput256);
	mc_ctx_report(ctx, "latency1_ms", mc->latency1_ms);
	mc_ctx_report(ctx, "bytes", (double)mc->bytes);
	mc_ctx_report(ctx, "last_accuracy", ml->accuracy);
	mc_ctx_report(ctx, "last_throughput256", ml->throughput256);
	mc_ctx_report(ctx, "last_latency1_ms", ml->latency1_ms);
	mc_ctx_report(ctx, "last_bytes", (double)ml->bytes);
	mc_ctx_report(ctx, "accuracy_drop", ml->accuracy - mc->accuracy);
	mc_ctx_report(ctx, "speedup256", mc->throughput256 / ml->throughput256);
	mc_ctx_report(ctx, "latency1_speedup", ml->latency1_ms / mc->latency1_ms);
}

/* ---------------------------------------------------------------- run */

struct arrays {
	float *conf[MC_CASCADE_MAX_STAGES];
	uint8_t *correct[MC_CASCADE_MAX_STAGES];
};

static void arrays_free(struct arrays *a)
{
	for (int s = 0; s < MC_CASCADE_MAX_STAGES; s++) {
		mc_free(a->conf[s]);
		mc_free(a->correct[s]);
	}
}

static int cascade_run(struct mc_ctx *ctx, const void *conf)
{
	const struct cascade_conf *c = conf;
	struct mc_err *err = mc_ctx_err(ctx);
	const struct mc_model *m[MC_CASCADE_MAX_STAGES];
	const char *unit = c->cost == CASCADE_FLOPS ? "FLOPs/sample" : "ms/sample", *ev_name;
	struct cascade_calib cal = { .n_stages = c->stages.n };
	struct cascade_sweep sweep = { 0 };
	struct cascade_point chosen;
	struct mc_cascade *casc = NULL, *alone = NULL;
	struct mc_cascade_measure mc, ml;
	const struct mc_dataset *d, *ev;
	struct arrays a;
	int k = c->stages.n, ret;
	int64_t ref;
	double ref_acc;

	memset(&a, 0, sizeof(a));
	ret = stage_models(ctx, c, m);
	if (ret)
		return ret;
	d = mc_ctx_data(ctx, c->calibrate);
	if (!d)
		return err->code;
	if (d->sample_numel != mc_model_in_numel(m[0]))
		return mc_ctx_error(ctx, "calibrate", MC_ERUN,
				    "split '%s' has samples of %lld values but the stages take %lld; "
				    "calibrate on a split of the stages' input",
				    c->calibrate, (long long)d->sample_numel,
				    (long long)mc_model_in_numel(m[0]));
	if (d->n_classes > mc_model_n_classes(m[0]))
		return mc_ctx_error(ctx, "calibrate", MC_ERUN,
				    "split '%s' has %d classes but the stages output %lld",
				    c->calibrate, d->n_classes, (long long)mc_model_n_classes(m[0]));
	cal.n = d->n;
	for (int s = 0; s < k; s++) {
		if (c->cost == CASCADE_FLOPS) {
			cal.cost[s] = (double)mc_model_flops(m[s]);
		} else {
			ret = stage_latency(m[s], d, &cal.cost[s], err);
			if (ret)
				goto out;
		}
		if (!(cal.cost[s] > 0))
			cal.cost[s] = 1e-12; /* a stage too cheap to time still costs something */
		a.conf[s] = mc_calloc((size_t)d->n, sizeof(float));
		a.correct[s] = mc_calloc((size_t)d->n, 1);
		if (!a.conf[s] || !a.correct[s]) {
			ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
			goto out;
		}
		ret = stage_outputs(m[s], c->confidence, d, a.conf[s], a.correct[s], err);
		if (ret)
			goto out;
		cal.conf[s] = a.conf[s];
		cal.correct[s] = a.correct[s];
	}
	cascade_reference(&cal, &ref, &ref_acc);
	if (c->thresholds.n) {
		float thr[MC_CASCADE_MAX_STAGES];
		struct cascade_point any;

		for (int s = 0; s < k - 1; s++)
			thr[s] = (float)c->thresholds.num[s];
		cascade_eval(&cal, thr, &chosen);
		/* the sweep, for the table and the plot only */
		ret = cascade_calibrate(&cal, CASCADE_ACCURACY_DROP, 1, &any, &sweep, err);
		if (ret)
			goto out;
		mc_ctx_log(ctx, "thresholds fixed by the pipeline");
	} else {
		double limit = c->target == CASCADE_ACCURACY_DROP ? c->max_drop / 100 : c->max_cost;

		ret = cascade_calibrate(&cal, c->target, limit, &chosen, &sweep, err);
		if (ret) {
			mc_err_prefix(err, "pass 'cascade'");
			goto out;
		}
	}
	mc_ctx_log(ctx, "on '%s' (%lld samples, %s confidence): accuracy %.2f%% against %.2f%% for "
		   "'%s' alone (%+.2f pt) at %.3f of its %s",
		   c->calibrate, (long long)d->n, mc_confidence_names[c->confidence],
		   100 * chosen.accuracy, 100 * ref_acc, c->stages.str[k - 1],
		   100 * (chosen.accuracy - ref_acc), chosen.rel_cost,
		   c->cost == CASCADE_FLOPS ? "FLOPs" : "latency");
	mc_ctx_report(ctx, "calib_accuracy", chosen.accuracy);
	mc_ctx_report(ctx, "calib_last_accuracy", ref_acc);
	mc_ctx_report(ctx, "calib_rel_cost", chosen.rel_cost);
	ret = report_sweep(ctx, c, &cal, &sweep, &chosen, ref_acc);
	if (ret)
		goto out;

	casc = build(c, m, k, chosen.thr, err);
	alone = build(c, m + k - 1, 1, chosen.thr, err);
	if (!casc || !alone) {
		ret = err->code;
		goto out;
	}
	{
		void *buf = NULL;
		size_t len = 0;

		ret = mc_cascade_serialize(casc, &buf, &len, err);
		if (ret) {
			mc_err_prefix(err, "pass 'cascade', output");
			goto out;
		}
		ret = mc_ctx_write(ctx, "output", buf, len);
		free(buf);
		if (ret)
			goto out;
	}
	mc_ctx_log(ctx, "cascade written to %s", c->output);
	ev = mc_ctx_eval_data(ctx, d, c->calibrate, &ev_name);
	if (!ev) {
		ret = err->code;
		goto out;
	}
	ret = mc_cascade_measure(casc, ev, &mc, err);
	if (!ret)
		ret = mc_cascade_measure(alone, ev, &ml, err);
	if (ret) {
		mc_err_prefix(err, "pass 'cascade', measuring on '%s'", ev_name);
		goto out;
	}
	report_measured(ctx, c, k, cal.cost, unit, &chosen, &mc, &ml, ev_name);
out:
	mc_cascade_free(casc);
	mc_cascade_free(alone);
	cascade_sweep_free(&sweep);
	arrays_free(&a);
	return ret;
}

static const struct mc_pass cascade_pass = {
	.abi = MC_PASS_ABI,
	.name = "cascade",
	.version = "1.0",
	.description = "chain models cheapest first, each passing on only the inputs it is unsure "
		       "of; thresholds calibrated to an accuracy or cost target, the cascade "
		       "saved as one file and measured by running it",
	.license = "MIT",
	.author = "the mcomp developers",
	.conf_size = sizeof(struct cascade_conf),
	.params = cascade_params,
	.check = cascade_check,
	.run = cascade_run,
};
MC_PASS_DEFINE(cascade_pass);
