/* SPDX-License-Identifier: MIT */
/*
 * host.c - running a validated pipeline: the context a pass sees, the
 * validation-time checks, and the run loop that measures each step and
 * writes the output model and report only when every pass succeeded.
 *
 * Files (docs/security.md). Every file a run writes goes through
 * stage_output/commit_output: staged in a locked temporary file beside it,
 * checked again, put in place at a safe point (not once mc_interrupt was
 * called). The previous report is removed before the first file it
 * describes is replaced, and the new one is put in place last, after the
 * model it describes: a report on disk never describes a model that is not
 * there. Temporary files that killed runs left beside an output are
 * removed when the next run starts.
 */
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <mcomp/onnx.h>
#include <mcomp/tflite.h>
#include <mcomp/pipeline.h>

#include "base/base_int.h"
#include "base/limits.h"
#include "graph/model_int.h"

#include "host/host_int.h"

static struct mc_pl_model *find_model(struct mc_pipeline *p, const char *name)
{
	int i;

	for (i = 0; name && i < p->n_models; i++)
		if (strcmp(p->models[i].name, name) == 0)
			return &p->models[i];
	return NULL;
}

struct mc_pl_model *mc_host_find_model(struct mc_pipeline *p, const char *name)
{
	return find_model(p, name);
}

static struct mc_pl_split *find_split(struct mc_pipeline *p, const char *name)
{
	int i;

	for (i = 0; name && i < p->n_splits; i++)
		if (strcmp(p->splits[i].name, name) == 0)
			return &p->splits[i];
	return NULL;
}

MC_API struct mc_model *mc_ctx_model(struct mc_ctx *ctx, const char *name)
{
	struct mc_pl_model *pm = find_model(ctx->p, name);

	if (pm && ctx->shapes)
		return ctx->shapes[pm - ctx->p->models];
	return pm ? pm->model : NULL;
}

MC_API int mc_ctx_replace_model(struct mc_ctx *ctx, const char *name, struct mc_model *m)
{
	struct mc_pl_model *pm = find_model(ctx->p, name);
	struct mc_model **slot;

	if (!pm)
		return mc_ctx_error(ctx, NULL, MC_EINVAL, "no model named '%s' in the pipeline",
				    name);
	slot = ctx->shapes ? &ctx->shapes[pm - ctx->p->models] : &pm->model;
	if (*slot != m)
		mc_model_free(*slot);
	*slot = m;
	return 0;
}

void mc_pl_split_source(const struct mc_pl_split *s, struct mc_data_source *src)
{
	memset(src, 0, sizeof(*src));
	src->format = s->format;
	if (s->format == MC_DATA_NPZ) {
		src->file = s->images;
		src->x = s->x_key;
		src->y = s->y_key;
	} else {
		src->x = s->images;
		src->y = s->labels;
	}
	src->pre.scale = s->pre.scale;
	src->pre.n_mean = s->pre.mean.n;
	src->pre.mean = s->pre.mean.num;
	src->pre.n_std = s->pre.std.n;
	src->pre.std = s->pre.std.num;
}

static const struct mc_dataset *load_split(struct mc_pl_split *s, struct mc_err *err)
{
	struct mc_dataset *all, *part;
	struct mc_data_source src;

	if (s->data)
		return s->data;
	mc_pl_split_source(s, &src);
	all = mc_data_load(&src, err);
	if (!all)
		return NULL;
	if (s->first == 0 && s->count < 0) {
		s->data = all;
		return all;
	}
	part = mc_dataset_slice(all, s->first, s->count, err);
	mc_dataset_free(all);
	s->data = part;
	return part;
}

MC_API const struct mc_dataset *mc_ctx_data(struct mc_ctx *ctx, const char *name)
{
	struct mc_pl_split *s = find_split(ctx->p, name);
	const struct mc_dataset *d;

	if (!s) {
		mc_ctx_error(ctx, NULL, MC_EINVAL, "no data split named '%s' in the pipeline",
			     name ? name : "(null)");
		return NULL;
	}
	d = load_split(s, ctx->err);
	if (!d)
		mc_err_prefix(ctx->err, "data split '%s'", s->name);
	return d;
}

MC_API int mc_ctx_split_source(struct mc_ctx *ctx, const char *name, struct mc_data_source *src,
				int64_t *first, int64_t *count)
{
	struct mc_pl_split *s = find_split(ctx->p, name);

	if (!s)
		return MC_EINVAL; /* a question, not an error: nothing recorded */
	mc_pl_split_source(s, src);
	*first = s->first;
	*count = s->count;
	return 0;
}

MC_API const struct mc_dataset *mc_ctx_eval_data(struct mc_ctx *ctx,
						 const struct mc_dataset *fallback,
						 const char *fallback_name, const char **name)
{
	if (!find_split(ctx->p, "test")) {
		*name = fallback_name;
		return fallback;
	}
	*name = "test";
	return mc_ctx_data(ctx, "test");
}

MC_API uint64_t mc_ctx_seed(struct mc_ctx *ctx)
{
	return ctx->p->seed;
}

MC_API int mc_ctx_validating(struct mc_ctx *ctx)
{
	return ctx->validating;
}

MC_API struct mc_err *mc_ctx_err(struct mc_ctx *ctx)
{
	return ctx->err;
}

MC_API int mc_ctx_given(struct mc_ctx *ctx, const char *key)
{
	int i;

	for (i = 0; key && i < ctx->pp->n_keys; i++)
		if (strcmp(ctx->pp->keys[i].def->name, key) == 0)
			return 1;
	return 0;
}

MC_API void mc_pipeline_set_log(struct mc_pipeline *p,
				void (*log)(void *arg, int level, const char *pass, const char *msg),
				void *arg)
{
	p->log = log;
	p->log_arg = arg;
}

/* Formats a line and hands it to the host's log function, if any. */
static void vlog_line(struct mc_pipeline *p, int level, const char *pass, const char *fmt,
		      va_list ap)
{
	char msg[4096];

	if (!p->log)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	p->log(p->log_arg, level, pass, msg);
}

static void log_line(struct mc_pipeline *p, int level, const char *pass, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void log_line(struct mc_pipeline *p, int level, const char *pass, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog_line(p, level, pass, fmt, ap);
	va_end(ap);
}

void mc_host_log(struct mc_pipeline *p, int level, const char *pass, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vlog_line(p, level, pass, fmt, ap);
	va_end(ap);
}

static const struct mc_loc *key_loc(const struct mc_pl_pass *pp, const char *key)
{
	int i;

	for (i = 0; key && i < pp->n_keys; i++)
		if (strcmp(pp->keys[i].def->name, key) == 0)
			return &pp->keys[i].loc;
	return &pp->loc;
}

static int loc_prefix(char *buf, size_t n, const struct mc_loc *loc)
{
	if (loc->line > 0)
		return snprintf(buf, n, "%s:%d:%d: ", loc->file, loc->line, loc->col);
	return snprintf(buf, n, "%s: ", loc->file ? loc->file : "pipeline");
}

MC_API int mc_ctx_error(struct mc_ctx *ctx, const char *key, int code, const char *fmt, ...)
{
	char head[1024], body[MC_ERR_MAX];
	va_list ap;

	loc_prefix(head, sizeof(head), key_loc(ctx->pp, key));
	va_start(ap, fmt);
	vsnprintf(body, sizeof(body), fmt, ap);
	va_end(ap);
	ctx->placed = 1;
	return mc_err_set(ctx->err, code, "%spass '%s'%s%s: %s", head, ctx->pp->pass->name,
			  key ? ", " : "", key ? key : "", body);
}

MC_API void mc_ctx_log(struct mc_ctx *ctx, const char *fmt, ...)
{
	va_list ap;

	if (ctx->quiet)
		return;
	va_start(ap, fmt);
	vlog_line(ctx->p, MC_LOG_INFO, ctx->pp->pass->name, fmt, ap);
	va_end(ap);
}

MC_API const struct mc_pass *mc_ctx_find_pass(struct mc_ctx *ctx, const char *name)
{
	return ctx->p->reg && name ? mc_registry_find(ctx->p->reg, name, NULL) : NULL;
}

MC_API int mc_ctx_run_pass(struct mc_ctx *ctx, const struct mc_pass *pass, const void *conf,
			   int quiet)
{
	/* The inner pass is placed at the outer one's entry: its errors name
	 * that line and the inner pass; it has no keys given, no row, no
	 * checkpoints and no files of its own. */
	struct mc_pl_pass pp = { .pass = pass, .so_path = ctx->pp->so_path,
				 .conf = (void *)conf, .loc = ctx->pp->loc };
	struct mc_ctx in = { .p = ctx->p, .pp = &pp, .err = ctx->err, .nested = 1,
			     .quiet = quiet || ctx->quiet };
	int ret;

	if (ctx->validating)
		return mc_ctx_error(ctx, NULL, MC_EINVAL, "a pass runs other passes in run(), not "
				    "while it is validated; fix the pass");
	if (!pass || !pass->run)
		return mc_ctx_error(ctx, NULL, MC_EINVAL, "mc_ctx_run_pass: no pass to run; fix "
				    "the pass");
	ctx->err->msg[0] = '\0';
	ret = pass->run(&in, conf);
	if (ret && !ctx->err->msg[0])
		mc_ctx_error(&in, NULL, ret, "failed without saying why");
	ctx->placed |= in.placed;
	return ret;
}

/* ---------------------------------------------------------------- files */

/* "SIGINT" for the signals a user sends, else "signal N", into buf. */
static const char *signal_name(int sig, char *buf, size_t n)
{
	if (sig == SIGINT)
		return "SIGINT";
	if (sig == SIGTERM)
		return "SIGTERM";
	if (sig == SIGHUP)
		return "SIGHUP";
	snprintf(buf, n, "signal %d", sig);
	return buf;
}

/* MC_EINTR when mc_interrupt was called (a safe point), else 0. */
static int check_interrupt(struct mc_err *err)
{
	char name[32];
	int sig = mc_interrupted();

	if (!sig)
		return 0;
	return mc_err_set(err, MC_EINTR, "interrupted by %s; stopped at a safe point",
			  signal_name(sig, name, sizeof(name)));
}

/*
 * The previous report describes the files this run is about to replace: it
 * goes before the first of them is replaced. Only a regular file is removed.
 */
static int withdraw_report(struct mc_pipeline *p, struct mc_err *err)
{
	int ret;

	if (!p->report_path || p->report_withdrawn)
		return 0;
	ret = mc_remove_regular(p->report_path, err);
	if (ret)
		return ret;
	p->report_withdrawn = 1;
	return 0;
}

/* Stages buf as output o (checked again: not an input now either), as one
 * zstd frame when its name ends in .zst, and records the digest of the
 * bytes written for the report. */
static int stage_output(struct mc_pipeline *p, struct mc_pl_output *o, int level, const void *buf,
			size_t len, struct mc_stage *st, struct mc_err *err)
{
	const void *data = buf;
	size_t n = len;
	void *own = NULL;
	int ret;

	ret = check_interrupt(err);
	if (!ret)
		ret = mc_pl_output_recheck(p, o->path, err);
	if (!ret)
		ret = mc_zst_for_path(o->path, level, buf, len, &data, &n, &own, err);
	if (!ret)
		ret = mc_stage_write(st, o->path, data, n, err);
	if (!ret)
		mc_sha256_buf(data, n, o->sha256);
	free(own);
	return ret;
}

/* Puts staged output o in place, at a safe point, the old report gone first. */
static int commit_output(struct mc_pipeline *p, struct mc_pl_output *o, struct mc_stage *st,
			 struct mc_err *err)
{
	int ret = check_interrupt(err);

	if (!ret && o != mc_pl_output_find(p, -1, NULL, p->report_path))
		ret = withdraw_report(p, err);
	if (ret) {
		mc_stage_discard(st);
		return ret;
	}
	ret = mc_stage_commit(st, err);
	if (!ret)
		o->written = 1;
	return ret;
}

MC_API int mc_ctx_write(struct mc_ctx *ctx, const char *key, const void *buf, size_t len)
{
	const struct mc_param_def *d = key ? mc_param_find(ctx->pp->pass->params, key) : NULL;
	struct mc_pl_output *o;
	struct mc_stage st;
	int ret;

	if (!d || d->type != MC_PARAM_TPATH || !(d->flags & MC_PARAM_FOUTPUT))
		return mc_ctx_error(ctx, key, MC_EINVAL,
				    "not a path parameter marked MC_PARAM_FOUTPUT, so the host "
				    "did not check it as a file the pass writes; fix the pass");
	if (ctx->validating)
		return mc_ctx_error(ctx, key, MC_EINVAL,
				    "a pass writes files in run(), not while it is validated");
	if (ctx->nested)
		return mc_ctx_error(ctx, key, MC_EINVAL,
				    "a pass run by another pass writes no files; leave it unset");
	o = mc_pl_output_find(ctx->p, (int)(ctx->pp - ctx->p->passes), d, NULL);
	if (!o)
		return mc_ctx_error(ctx, key, MC_EINVAL, "not set: there is no file to write");
	if (ctx->p->no_writes)
		return 0; /* rank 0 of the job writes it */
	ret = stage_output(ctx->p, o, 0, buf, len, &st, ctx->err);
	if (!ret)
		ret = commit_output(ctx->p, o, &st, ctx->err);
	if (ret)
		mc_err_prefix(ctx->err, "pass '%s', %s", ctx->pp->pass->name, key);
	return ret;
}

static void note_stale(void *arg, const char *tmp)
{
	log_line(arg, MC_LOG_INFO, NULL, "removed %s, a temporary file that an interrupted run "
		 "left", tmp);
}

/* Temporary files of killed runs beside this run's outputs (only those
 * matching the writer's pattern, owned by this user, older than this run,
 * not locked by a live writer). */
static void sweep_stale(struct mc_pipeline *p)
{
	struct timespec start;

	if (p->no_writes)
		return;
	clock_gettime(CLOCK_REALTIME, &start);
	for (int i = 0; i < p->n_outputs; i++)
		mc_sweep_stale_temps(p->outputs[i].path, &start, note_stale, p);
}

MC_API int mc_ctx_report(struct mc_ctx *ctx, const char *key, double value)
{
	json_t *v;

	if (!ctx->metrics)
		return 0; /* figures reported while validating have no row */
	if (isfinite(value)) {
		v = json_real(value);
	} else {
		/* JSON has no NaN or infinity: null says "no number", and the log says why. */
		log_line(ctx->p, MC_LOG_WARNING, ctx->pp->pass->name,
			 "figure '%s' is %s; the report stores null", key,
			 isnan(value) ? "NaN" : value > 0 ? "+infinity" : "-infinity");
		v = json_null();
	}
	if (json_object_set_new(ctx->metrics, key, v))
		return mc_err_set(ctx->err, MC_ENOMEM, "out of memory");
	return 0;
}

/* The model a pass acts on: its first model parameter. */
static const char *subject(const struct mc_pl_pass *pp)
{
	const struct mc_param_def *d;

	for (d = pp->pass->params; d && d->name; d++)
		if (d->type == MC_PARAM_TMODEL)
			return *(char *const *)((const char *)pp->conf + d->offset);
	return NULL;
}

/* Checks that split s's samples fit model m (named name); loc is where to point. */
static int check_fit(const struct mc_pl_split *s, const char *name, const struct mc_model *m,
		     const struct mc_loc *loc, const char *who, struct mc_err *err)
{
	char head[1024], shape[128], want[128];
	struct mc_data_source src;
	int64_t n, dims[3], numel = 1;
	int ndim, ret;

	mc_pl_split_source(s, &src);
	ret = mc_data_peek(&src, &n, &ndim, dims, err);
	if (ret) {
		loc_prefix(head, sizeof(head), &s->loc);
		return mc_err_prefix(err, "%sdata split '%s'", head, s->name);
	}
	/* Header dimensions are up to 2^32 - 1 each: their product can
	 * overflow, and then fits no model. */
	for (int i = 0; i < ndim && numel >= 0; i++)
		if (dims[i] < 0 || __builtin_mul_overflow(numel, dims[i], &numel))
			numel = -1;
	if (numel == m->in_numel)
		return 0;
	loc_prefix(head, sizeof(head), loc);
	return mc_err_set(err, MC_EINVAL,
			  "%s%sdata split '%s' has samples of shape %s but model '%s' takes %s; "
			  "build the model with input: %s",
			  head, who, s->name, mc_shape_text(ndim, dims, shape, sizeof(shape)), name,
			  mc_shape_text(m->in_ndim, m->in_shape, want, sizeof(want)), shape);
}

/* Before anything runs: every split a pass reads, and the test split the
 * host measures on, must fit the pass's model. */
static int check_data(struct mc_pipeline *p, struct mc_err *err)
{
	struct mc_pl_split *test = find_split(p, "test");
	char who[256];
	int i, ret;

	for (i = 0; i < p->n_passes; i++) {
		struct mc_pl_pass *pp = &p->passes[i];
		struct mc_pl_model *pm = find_model(p, subject(pp));
		const struct mc_param_def *d;

		if (!pm || !pm->model)
			continue;
		for (d = pp->pass->params; d && d->name; d++) {
			const char *name;
			struct mc_pl_split *s;

			if (d->type != MC_PARAM_TSPLIT)
				continue; /* only split fields hold a char * */
			name = *(char *const *)((const char *)pp->conf + d->offset);
			if (!(s = find_split(p, name)))
				continue;
			snprintf(who, sizeof(who), "pass '%s', %s: ", pp->pass->name, d->name);
			ret = check_fit(s, pm->name, pm->model, key_loc(pp, d->name), who, err);
			if (ret)
				return ret;
		}
		if (test) {
			ret = check_fit(test, pm->name, pm->model, &test->loc,
					"the host measures every model on the test split, but ", err);
			if (ret)
				return ret;
		}
	}
	return 0;
}

MC_API int mc_ctx_check_data(struct mc_ctx *ctx, const char *key, const char *name)
{
	struct mc_pl_split *s = find_split(ctx->p, name);
	const char *model = subject(ctx->pp);
	struct mc_model *m = mc_ctx_model(ctx, model);
	int given = mc_ctx_given(ctx, key);
	char who[256];

	if (!s)
		return mc_ctx_error(ctx, key, MC_EINVAL,
				    "the pipeline has no data split '%s'%s; add it under "
				    "'data:' or set %s",
				    name ? name : "(null)", given ? "" : " (the default)", key);
	if (!m)
		return 0;
	snprintf(who, sizeof(who), "pass '%s', %s: ", ctx->pp->pass->name, key);
	return check_fit(s, model, m, key_loc(ctx->pp, key), who, ctx->err);
}

/*
 * Validation follows the graph: each pass's check sees a model of shapes
 * only as the passes before it leave it (they apply their graph changes to
 * it in their own check), so a pass that names a layer an earlier pass
 * created validates, and one that names a layer an earlier pass removed
 * does not, before anything runs.
 */
/* Bytes of split s once loaded (*full: of the whole file it is sliced
 * from, which is loaded first), from its header; 0 when unknown. */
static uint64_t split_bytes(const struct mc_pl_split *s, uint64_t *full)
{
	struct mc_data_source src;
	struct mc_err ignore = { 0 };
	int64_t n, dims[3], count;
	uint64_t row = 1;
	int ndim;

	*full = 0;
	mc_pl_split_source(s, &src);
	if (mc_data_peek(&src, &n, &ndim, dims, &ignore) || n < 0)
		return 0;
	for (int i = 0; i < ndim; i++)
		if (dims[i] < 0 || __builtin_mul_overflow(row, (uint64_t)dims[i], &row))
			return UINT64_MAX;
	if (__builtin_mul_overflow(row, 4, &row) || __builtin_add_overflow(row, 1, &row) ||
	    __builtin_mul_overflow(row, (uint64_t)n, full))
		return *full = UINT64_MAX;
	count = s->count < 0 ? n - s->first : s->count;
	if (s->first == 0 && s->count < 0)
		return *full;
	return count > 0 && count <= n ? (uint64_t)count * (row) : 0;
}

static uint64_t add_sat(uint64_t a, uint64_t b)
{
	return a > UINT64_MAX - b ? UINT64_MAX : a + b;
}

/*
 * Before anything is allocated for them: each model's parameters, and all
 * of them with the data splits, must fit the memory limit (mc_mem_check).
 * Built models have shapes only at validation, so a layer of a billion
 * weights costs nothing to validate.
 */
static int check_memory(struct mc_pipeline *p, struct mc_err *err)
{
	uint64_t models = 0, data = 0, peak = 0, full;
	char what[1400], head[1024], a[32], b[32];
	int i;

	for (i = 0; i < p->n_models; i++) {
		struct mc_pl_model *pm = &p->models[i];

		if (!pm->model)
			continue;
		loc_prefix(head, sizeof(head), &pm->loc);
		snprintf(what, sizeof(what), "%smodel '%s' (%lld parameters)", head, pm->name,
			 (long long)mc_model_nparams(pm->model));
		if (mc_mem_check(mc_model_param_bytes(pm->model), what, err))
			return err->code = MC_EINVAL;
		models = add_sat(models, mc_model_param_bytes(pm->model));
	}
	for (i = 0; i < p->n_splits; i++) {
		data = add_sat(data, split_bytes(&p->splits[i], &full));
		if (full > peak)
			peak = full;
	}
	snprintf(what, sizeof(what), "%s: the pipeline's models (%s) and data splits (%s)",
		 p->path, mc_mem_text(models, a, sizeof(a)), mc_mem_text(data, b, sizeof(b)));
	if (mc_mem_check(add_sat(add_sat(models, data), peak), what, err))
		return err->code = MC_EINVAL;
	return 0;
}

int mc_host_check(struct mc_pipeline *p, struct mc_err *err)
{
	struct mc_ctx ctx = { .p = p, .validating = 1, .err = err };
	int i, ret;

	ret = check_data(p, err);
	if (!ret)
		ret = check_memory(p, err);
	if (ret)
		return ret;
	ctx.shapes = calloc((size_t)p->n_models + 1, sizeof(*ctx.shapes));
	if (!ctx.shapes)
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	for (i = 0; i < p->n_models; i++) {
		if (!p->models[i].model)
			continue;
		ctx.shapes[i] = mc_model_dup_arch(p->models[i].model, err);
		if (!ctx.shapes[i]) {
			ret = err->code;
			goto out;
		}
	}
	for (i = 0; i < p->n_passes; i++) {
		ctx.pp = &p->passes[i];
		if (!ctx.pp->pass->check)
			continue;
		err->msg[0] = '\0';
		ctx.placed = 0;
		ret = ctx.pp->pass->check(&ctx, ctx.pp->conf);
		if (ret) {
			char head[1024];

			if (!err->msg[0])
				mc_ctx_error(&ctx, NULL, ret, "check failed");
			/* A library error (a graph change that does not fit) gets the
			 * pass's place, as mc_ctx_error's do (theirs may be an override's,
			 * "--set KEY", rather than a line of the file). */
			loc_prefix(head, sizeof(head), &ctx.pp->loc);
			if (!ctx.placed)
				mc_err_prefix(err, "%spass '%s'", head, ctx.pp->pass->name);
			goto out;
		}
	}
	/* An ONNX output: every node of the model as the passes leave it has an ONNX form. */
	for (i = 0; mc_host_is_onnx(p->output_path) && i < p->n_models; i++)
		if (ctx.shapes[i] && !strcmp(p->models[i].name, p->output_model) &&
		    (ret = mc_model_onnx_check(ctx.shapes[i], err)))
			mc_err_prefix(err, "%s: output '%s' (model '%s' after the passes)", p->path,
				      p->output_path, p->output_model);
	/* A TFLite output: the same, against what TFLite holds. */
	for (i = 0; !ret && mc_host_is_tflite(p->output_path) && i < p->n_models; i++)
		if (ctx.shapes[i] && !strcmp(p->models[i].name, p->output_model) &&
		    (ret = mc_model_tflite_check(ctx.shapes[i], err)))
			mc_err_prefix(err, "%s: output '%s' (model '%s' after the passes)", p->path,
				      p->output_path, p->output_model);
out:
	for (i = 0; i < p->n_models; i++)
		mc_model_free(ctx.shapes[i]);
	free(ctx.shapes);
	return ret;
}

static int measure_row(struct mc_pipeline *p, struct mc_row *row, const struct mc_model *m,
		       struct mc_err *err)
{
	struct mc_pl_split *test = find_split(p, "test");
	const struct mc_dataset *d = NULL;

	if (test) {
		d = load_split(test, err);
		if (!d)
			return mc_err_prefix(err, "data split 'test'");
	}
	if (mc_measure_model_job(m, d, !p->no_writes, &row->m, err))
		return mc_err_prefix(err, "%s: measuring model '%s'", p->path, row->model);
	row->bytes_raw = row->m.bytes;
	/* the size coded, where the report is written */
	if (p->output_path && mc_zst_path(p->output_path) && !p->no_writes) {
		/* The bytes on disk of the model written as the output is. */
		void *buf = NULL, *z = NULL;
		size_t len, zlen = 0;
		int ret = mc_model_serialize(m, &buf, &len, err);

		if (!ret)
			ret = mc_zst_encode(buf, len, p->output_zstd_level, &z, &zlen, err);
		free(buf);
		free(z);
		if (ret)
			return mc_err_prefix(err, "%s: measuring model '%s'", p->path, row->model);
		row->m.bytes = (int64_t)zlen;
		row->coded = 1;
	}
	return 0;
}

/* Rows for the models as they start, before any pass changes them. */
static int measure_start(struct mc_pipeline *p, struct mc_report *rep, struct mc_err *err)
{
	int i, j, seen;

	for (i = 0; i < p->n_passes; i++) {
		const char *name = subject(&p->passes[i]);
		struct mc_pl_model *pm = find_model(p, name);
		struct mc_row *row;

		if (!pm)
			continue;
		for (seen = 0, j = 0; j < rep->n; j++)
			seen |= strcmp(rep->rows[j].model, name) == 0;
		if (seen)
			continue;
		row = mc_report_add(rep, 0, NULL, name);
		if (!row)
			return mc_err_set(err, MC_ENOMEM, "out of memory");
		if (measure_row(p, row, pm->model, err))
			return err->code;
	}
	return 0;
}

static int run_pass(struct mc_pipeline *p, int i, struct mc_report *rep, struct mc_err *err)
{
	struct mc_pl_pass *pp = &p->passes[i];
	struct mc_ctx ctx = { .p = p, .pp = pp, .err = err };
	const struct mc_pass *pass = pp->pass;
	const char *name = subject(pp);
	struct mc_pl_model *pm;
	struct mc_row *row;
	double t0;
	int ret;

	double before = 0;

	row = mc_report_add(rep, i + 1, pass->name, name ? name : "-");
	if (!row)
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	ctx.metrics = row->metrics;
	err->msg[0] = '\0';
	t0 = mc_now();
	ret = mc_ck_pass_begin(&ctx, i, rep, &before, err);
	if (!ret)
		ret = pass->run(&ctx, pp->conf);
	mc_ck_pass_end(&ctx);
	/* resumed: with the time the pass had run before its checkpoint */
	row->seconds = before + mc_now() - t0;
	if (ret) {
		if (!err->msg[0])
			mc_ctx_error(&ctx, NULL, ret, "failed without saying why");
		/* A pass's failure on valid input is a failed run, not bad usage. */
		if (err->code == MC_EINVAL && !mc_ctx_validating(&ctx))
			err->code = MC_ERUN;
		ret = err->code ? err->code : MC_ERUN;
		goto failed;
	}
	pm = find_model(p, name);
	if (pm) {
		ret = measure_row(p, row, pm->model, err);
		if (ret)
			goto failed;
		return 0;
	}
	row->m.accuracy = -1;
	return 0;
failed:
	/* The report lists the steps that finished, and this one as where it failed. */
	mc_report_pop(rep);
	rep->failed_step = i + 1;
	rep->failed_pass = pass->name;
	return ret;
}

int mc_host_is_onnx(const char *path)
{
	size_t n = path ? strlen(path) : 0;

	return n > 5 && !strcasecmp(path + n - 5, ".onnx");
}

int mc_host_is_tflite(const char *path)
{
	size_t n = path ? strlen(path) : 0;

	return n > 7 && !strcasecmp(path + n - 7, ".tflite");
}

static void onnx_log(void *arg, int level, const char *msg)
{
	log_line(arg, level, NULL, "%s", msg);
}

/*
 * The bytes of the output model: an ONNX file when its path ends in .onnx,
 * a TFLite one for .tflite, carrying the digest of the recipe (and its
 * --set overrides) in its metadata (TFLite: its description); else an
 * mcomp file.
 */
static int serialize_output(struct mc_pipeline *p, const struct mc_pl_model *om, void **buf,
			    size_t *len, struct mc_err *err)
{
	char digest[65], sets[1024] = "";
	const char *props[] = { "mcomp.pipeline.sha256", digest, "mcomp.model", om->name,
				"mcomp.pipeline.sets", sets, NULL };
	struct mc_onnx_meta meta = { .props = props, .log = onnx_log, .log_arg = p,
				     .flags = p->output_onnx_flags };
	int ret;

	if (!mc_host_is_onnx(p->output_path) && !mc_host_is_tflite(p->output_path))
		ret = mc_model_serialize(om->model, buf, len, err);
	else {
		mc_sha256_buf(p->text, p->text_len, digest);
		for (int i = 0; i < p->n_sets; i++)
			snprintf(sets + strlen(sets), sizeof(sets) - strlen(sets), "%s%s",
				 i ? " " : "", p->sets[i]);
		if (!p->n_sets)
			props[4] = NULL;
		ret = mc_host_is_tflite(p->output_path)
			  ? mc_model_serialize_tflite(om->model, &meta, buf, len, err)
			  : mc_model_serialize_onnx(om->model, &meta, buf, len, err);
	}
	if (ret)
		mc_err_prefix(err, "%s", p->output_path);
	return ret;
}

/*
 * The end of a run that succeeded: the model and the report staged, then
 * committed in that order (the old report withdrawn before the model is
 * replaced). Returns 0, or an error with nothing of the two committed,
 * except when only the report's rename failed (said in the message).
 */
static int write_results(struct mc_pipeline *p, struct mc_report *rep, FILE *out,
			 struct mc_err *err)
{
	struct mc_pl_output *mo = NULL, *ro = NULL;
	struct mc_stage mst = { .fd = -1 }, rst = { .fd = -1 };
	struct mc_pl_model *om = NULL;
	char *text = NULL;
	void *buf = NULL;
	size_t len = 0;
	int ret = 0;

	if (p->no_writes)
		return 0;
	if (p->output_path) {
		om = find_model(p, p->output_model);
		mo = mc_pl_output_find(p, -1, NULL, p->output_path);
		if (!om || !mo)
			return mc_err_set(err, MC_EINVAL, "%s: output names no model of the pipeline",
					  p->path);
		ret = serialize_output(p, om, &buf, &len, err);
		if (!ret)
			ret = stage_output(p, mo, p->output_zstd_level, buf, len, &mst, err);
		free(buf);
		if (ret)
			return ret;
	}
	if (p->report_path) {
		ro = mc_pl_output_find(p, -1, NULL, p->report_path);
		ret = mc_report_text(rep, p, mo ? mo->path : NULL, &text, err);
		if (!ret && !ro)
			ret = mc_err_set(err, MC_EINVAL, "%s: the report was not validated", p->path);
		if (!ret)
			ret = stage_output(p, ro, 0, text, strlen(text), &rst, err);
		free(text);
		if (ret)
			goto out_discard;
	}
	if (mo) {
		ret = commit_output(p, mo, &mst, err);
		if (ret)
			goto out_discard;
		if (out)
			fprintf(out, "wrote %s (model '%s')\n", mo->path, om->name);
	}
	if (ro) {
		/* Last: the model it describes is in place. */
		ret = commit_output(p, ro, &rst, err);
		if (ret)
			return mc_err_prefix(err, "%s the report was not",
					     mo ? "the model was written, but" : "");
		if (out)
			fprintf(out, "wrote %s\n", ro->path);
	}
	return 0;
out_discard:
	mc_stage_discard(&mst);
	mc_stage_discard(&rst);
	return ret;
}

/* The report of a run that failed (or was interrupted): what finished. */
static void write_failed_report(struct mc_pipeline *p, struct mc_report *rep, FILE *out,
				const char *error)
{
	struct mc_pl_output *ro = mc_pl_output_find(p, -1, NULL, p->report_path);
	struct mc_err rerr = { 0 };
	struct mc_stage st;
	char *text = NULL;
	int ret;

	rep->error = error;
	if (p->no_writes)
		return;
	ret = ro ? mc_report_text(rep, p, NULL, &text, &rerr) :
		   mc_err_set(&rerr, MC_EINVAL, "not validated");
	if (!ret)
		ret = mc_pl_output_recheck(p, ro->path, &rerr);
	if (!ret)
		ret = mc_stage_write(&st, ro->path, text, strlen(text), &rerr);
	free(text);
	if (!ret)
		ret = mc_stage_commit(&st, &rerr);
	if (ret)
		log_line(p, MC_LOG_WARNING, NULL, "the report of the failed run was not written: %s",
			 rerr.msg);
	else if (out)
		fprintf(out, "wrote %s (the run %s)\n", ro->path,
			 rep->error && mc_interrupted() ? "was interrupted" : "failed");
}

MC_API void mc_pipeline_set_writes(struct mc_pipeline *p, int on)
{
	p->no_writes = !on;
}

MC_API int mc_pipeline_run(struct mc_pipeline *p, FILE *out, struct mc_err *err)
{
	struct mc_report rep = { 0 };
	int i, ret, first = -1;

	p->report_withdrawn = 0;
	for (i = 0; i < p->n_outputs; i++)
		p->outputs[i].written = 0;
	sweep_stale(p);
	ret = check_interrupt(err);
	/* Resumed: the models, rows and place the checkpoint holds. */
	if (!ret)
		ret = mc_ck_resume_start(p, &rep, &first, err);
	/* Built models were validated as shapes: now they get their data,
	 * drawn from the seed. */
	for (i = 0; !ret && first < 0 && i < p->n_models; i++) {
		struct mc_model *m = p->models[i].model;

		if (!m || !mc_model_is_arch(m))
			continue;
		ret = mc_model_materialize(m, err);
		if (ret)
			mc_err_prefix(err, "%s: model '%s'", p->path, p->models[i].name);
		else
			mc_model_init(m, p->seed);
	}
	if (!ret && first < 0)
		ret = measure_start(p, &rep, err);
	for (i = first < 0 ? 0 : first; !ret && i < p->n_passes; i++) {
		log_line(p, MC_LOG_INFO, NULL, "[%d/%d] %s", i + 1, p->n_passes,
			 p->passes[i].pass->name);
		ret = run_pass(p, i, &rep, err);
		/* A safe point between passes. */
		if (!ret && i + 1 < p->n_passes && (ret = check_interrupt(err))) {
			rep.failed_step = i + 2;
			rep.failed_pass = p->passes[i + 1].pass->name;
		}
	}
	/* The table so far, also when a step failed. */
	if (out)
		mc_report_print(&rep, out);
	if (!ret)
		ret = write_results(p, &rep, out, err);
	if (ret && p->report_path)
		write_failed_report(p, &rep, out, err->msg);
	mc_report_clear(&rep);
	return ret;
}
