/* SPDX-License-Identifier: MIT */
/*
 * checkpoint.c - checkpoints of the passes that train, and `mcomp run
 * --resume` (docs/pipelines.md, "Checkpoints and --resume").
 *
 * A checkpoint is one safetensors file that holds what a run needs to go on
 * with the same bytes as one that never stopped:
 *
 *	model/NAME/...	every model of the pipeline as it was when the pass began
 *	run/J/...	the model of the pass's training run J, as that run ended
 *	train/...	the model of the run in progress
 *	optim/m/..., optim/v/...  its optimizer's buffers (momentum, Adam's moments)
 *	keep/NAME	the pass's own state (mc_ctx_keep: prune's masks)
 *
 * and in __metadata__: "mcomp.checkpoint" (JSON: the position, the digests
 * of the pipeline, its overrides and its input files, the passes' versions,
 * the models' architectures), "mcomp.report" (the rows of the steps done, as
 * measured: their latencies and times are the one part that differs from
 * run to run), "mcomp.pipeline" (the pipeline's text, to say what changed)
 * and "mcomp.sha256", a digest of all of these and of the tensor bytes, so
 * that a damaged file is refused rather than resumed from.
 *
 * Resuming runs the pass the checkpoint was made in again from its start, on
 * the models as they were then: what a pass computes around its training
 * follows from its models and parameters, and mc_ctx_train skips (restores)
 * the training runs already done and continues the one in progress.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>
#include <nettle/sha2.h>

#include <mcomp/pipeline.h>
#include <mcomp/safetensors.h>

#include "base/base_int.h"
#include "graph/model_int.h"
#include "io/model_io_int.h"

#include "host/host_int.h"

#define CK_FORMAT "mcomp-checkpoint"
#define CK_VERSION 1
#define CK_ROW "checkpoint.path"
#define CK_EVERY "checkpoint.every"
#define FIX "run without --resume to start over"

/* The checkpoint a run resumes from, read and checked. */
struct mc_resume {
	char *path;
	char sha256[65];
	struct mc_st_file *f;
	json_t *ck;	/* "mcomp.checkpoint" */
	json_t *rows;	/* "mcomp.report" */
	json_t *sparse; /* "mcomp.sparse", or NULL */
	int pass, run;
	struct mc_train_pos pos;
	int64_t optim_steps;
};

/* What a pipeline keeps for checkpoints over a run. */
struct mc_ckstate {
	json_t *inputs;		/* [{path, sha256}] of every input file, computed once */
	struct mc_resume *res;	/* the checkpoint resumed from, or NULL */
	int asked;		/* mc_pipeline_resume was called */
	char *missing;		/* asked, but no checkpoint was there: its path */
};

struct keep {
	char *name;
	void *buf;
	size_t len;
};

/* The checkpoints of the pass running. */
struct mc_ckpass {
	struct mc_pipeline *p;
	int pass;
	struct mc_pl_output *out; /* the file written, or NULL (resumed only) */
	int every;
	struct mc_model **start;  /* [n_models]: the models as the pass began */
	struct mc_model **done;	  /* the models of its finished training runs */
	int n_done;
	struct keep *keeps;
	int n_keeps;
	int n_runs;		  /* mc_ctx_train calls so far */
	double t0, before;	  /* when the pass began; its time before the checkpoint */
	const struct mc_report *rep;
	struct mc_resume *res;	  /* the checkpoint this pass resumes from, until used */
	/* the training run in progress */
	const struct mc_train_conf *tc;
	int run;
};

static void resume_free(struct mc_resume *r)
{
	if (!r)
		return;
	free(r->path);
	mc_st_free(r->f);
	json_decref(r->ck);
	json_decref(r->rows);
	json_decref(r->sparse);
	free(r);
}

void mc_ck_state_free(struct mc_ckstate *s)
{
	if (!s)
		return;
	json_decref(s->inputs);
	resume_free(s->res);
	free(s->missing);
	free(s);
}

static struct mc_ckstate *state(struct mc_pipeline *p)
{
	if (!p->ck)
		p->ck = calloc(1, sizeof(*p->ck));
	return p->ck;
}

int mc_ck_is_checkpoint(const struct mc_pl_output *o)
{
	return o->def && !strcmp(o->def->name, CK_ROW);
}

/* ---------------------------------------------------------------- digests */

static void add_input(json_t *a, const char *path, struct mc_err *err, int *ret)
{
	char hex[65];

	if (*ret || !path)
		return;
	for (size_t i = 0; i < json_array_size(a); i++)
		if (!strcmp(json_string_value(json_object_get(json_array_get(a, i), "path")), path))
			return;
	*ret = mc_sha256_file(path, hex, err);
	if (!*ret && json_array_append_new(a, json_pack("{s:s, s:s}", "path", path, "sha256", hex)))
		*ret = mc_err_set(err, MC_ENOMEM, "out of memory");
}

/* The digests of every file the pipeline reads: its splits, the models it
 * loads, the files its passes read. Computed once per pipeline. */
static json_t *inputs(struct mc_pipeline *p, struct mc_err *err)
{
	struct mc_ckstate *s = state(p);
	json_t *a;
	int ret = 0;

	if (!s) {
		mc_err_set(err, MC_ENOMEM, "out of memory");
		return NULL;
	}
	if (s->inputs)
		return s->inputs;
	a = json_array();
	if (!a) {
		mc_err_set(err, MC_ENOMEM, "out of memory");
		return NULL;
	}
	for (int i = 0; i < p->n_splits; i++) {
		add_input(a, p->splits[i].images, err, &ret);
		add_input(a, p->splits[i].labels, err, &ret);
	}
	for (int i = 0; i < p->n_models; i++)
		add_input(a, p->models[i].load, err, &ret);
	for (int i = 0; i < p->n_passes; i++)
		for (const struct mc_param_def *d = p->passes[i].pass->params; d && d->name; d++)
			if (d->type == MC_PARAM_TPATH && !(d->flags & MC_PARAM_FOUTPUT))
				add_input(a, *(char **)((char *)p->passes[i].conf + d->offset), err,
					  &ret);
	if (ret) {
		json_decref(a);
		return NULL;
	}
	return s->inputs = a;
}

/* The digest that seals a checkpoint: its JSON parts and its tensor bytes. */
static void seal(const char *ck, const char *rows, const char *text, const void *data,
		 size_t len, char hex[65])
{
	static const char digits[] = "0123456789abcdef";
	uint8_t d[SHA256_DIGEST_SIZE];
	struct sha256_ctx c;

	sha256_init(&c);
	sha256_update(&c, strlen(ck) + 1, (const uint8_t *)ck);
	sha256_update(&c, strlen(rows) + 1, (const uint8_t *)rows);
	sha256_update(&c, strlen(text) + 1, (const uint8_t *)text);
	sha256_update(&c, len, data);
	sha256_digest(&c, sizeof(d), d);
	for (size_t i = 0; i < sizeof(d); i++) {
		hex[2 * i] = digits[d[i] >> 4];
		hex[2 * i + 1] = digits[d[i] & 15];
	}
	hex[64] = '\0';
}

/* The data section of a serialized safetensors buffer. */
static const uint8_t *data_section(const void *buf, size_t len, size_t *n)
{
	const uint8_t *b = buf;
	uint64_t h = 0;

	for (int i = 7; i >= 0; i--)
		h = h << 8 | b[i];
	if (len < 8 || h > len - 8) {
		*n = 0;
		return b + len;
	}
	*n = len - 8 - (size_t)h;
	return b + 8 + h;
}

/* ---------------------------------------------------------------- writing */

static json_t *row_json(const struct mc_row *r)
{
	return json_pack("{s:i, s:s?, s:s, s:I, s:I, s:I, s:I, s:I, s:b, s:f, s:f, s:f, s:f, s:O}",
			 "step", r->step, "pass", r->pass, "model", r->model, "params",
			 (json_int_t)r->m.params, "nonzeros", (json_int_t)r->m.nonzeros, "flops",
			 (json_int_t)r->m.flops, "bytes", (json_int_t)r->m.bytes, "bytes_raw",
			 (json_int_t)r->bytes_raw, "coded", r->coded, "accuracy",
			 r->m.accuracy, "latency1_ms", r->m.latency1_ms, "latency256_ms",
			 r->m.latency256_ms, "seconds", r->seconds, "metrics", r->metrics);
}

static json_t *arch_json(const struct mc_model *m)
{
	char *text = mc_model_arch(m);
	json_t *j = text ? json_loads(text, 0, NULL) : NULL;

	free(text);
	return j;
}

/* A tensor of the checkpoint's own (an optimizer buffer, a kept state):
 * a copy, freed with the list. */
static int add_own(struct mc_tensor **t, int *n, const char *name, enum mc_dtype dt,
		   int64_t numel, const void *data, size_t bytes, struct mc_err *err)
{
	struct mc_tensor *x = mc_tensor_new(name, dt, 1, &numel, err);

	if (!x)
		return err->code;
	memcpy(x->data, data, bytes);
	t[(*n)++] = x;
	return 0;
}

/* The position and what checks a resume, as "mcomp.checkpoint". */
static json_t *position_json(struct mc_ckpass *k, const struct mc_model *tm, struct mc_optim *o,
			     const struct mc_train_pos *pos, struct mc_err *err)
{
	struct mc_pipeline *p = k->p;
	json_t *j, *sets = json_array(), *passes = json_array(), *models = json_array();
	json_t *runs = json_array(), *keeps = json_array(), *read = json_array(), *in;
	char hex[65], loss[64];

	in = inputs(p, err);
	if (!in || !sets || !passes || !models || !runs || !keeps || !read)
		goto fail;
	mc_sha256_buf(p->text, p->text_len, hex);
	for (int i = 0; i < p->n_sets; i++)
		json_array_append_new(sets, json_string(p->sets[i]));
	for (int i = 0; i < p->n_passes; i++)
		json_array_append_new(passes, json_pack("{s:s, s:s}", "name",
							p->passes[i].pass->name, "version",
							p->passes[i].pass->version));
	for (int i = 0; i < p->n_models; i++)
		json_array_append_new(models, json_pack("{s:s, s:o}", "name", p->models[i].name,
							"arch", arch_json(k->start[i])));
	for (int i = 0; i < k->n_done; i++)
		json_array_append_new(runs, arch_json(k->done[i]));
	for (int i = 0; i < k->n_keeps; i++)
		json_array_append_new(keeps, json_pack("{s:s, s:I}", "name", k->keeps[i].name,
						       "bytes", (json_int_t)k->keeps[i].len));
	for (int i = 0; i < p->n_splits; i++)
		if (p->splits[i].data || p->splits[i].read_before)
			json_array_append_new(read, json_string(p->splits[i].name));
	/* the exact double, which decimal text need not give back */
	snprintf(loss, sizeof(loss), "%a", pos->loss_sum);
	j = json_pack("{s:i, s:s, s:{s:s, s:s, s:O}, s:O, s:O, s:{s:i, s:s, s:i, s:i, s:i, s:I, "
		      "s:I, s:s}, s:{s:I}, s:O, s:o, s:O, s:O, s:O}",
		      "version", CK_VERSION, "mcomp_version", MC_VERSION, "pipeline", "path",
		      p->path, "sha256", hex, "sets", sets, "passes", passes, "inputs", in,
		      "position", "pass", k->pass, "pass_name", p->passes[k->pass].pass->name,
		      "run", k->run, "epoch", pos->epoch, "epochs", k->tc->epochs, "step",
		      (json_int_t)pos->step, "batch", (json_int_t)pos->batch, "loss_sum", loss,
		      "optimizer", "steps", (json_int_t)mc_optim_steps(o), "models", models,
		      "train_arch", arch_json(tm), "runs", runs, "keeps", keeps, "splits_read",
		      read);
	json_decref(sets);
	json_decref(passes);
	json_decref(models);
	json_decref(runs);
	json_decref(keeps);
	json_decref(read);
	if (!j)
		mc_err_set(err, MC_ENOMEM, "out of memory writing a checkpoint");
	return j;
fail:
	if (in)
		mc_err_set(err, MC_ENOMEM, "out of memory writing a checkpoint");
	json_decref(sets);
	json_decref(passes);
	json_decref(models);
	json_decref(runs);
	json_decref(keeps);
	json_decref(read);
	return NULL;
}

/* The rows of the steps done (all but the pass's own, the last). */
static char *rows_text(struct mc_ckpass *k)
{
	json_t *a = json_array(), *doc;
	char *text;

	for (int i = 0; a && i + 1 < k->rep->n; i++)
		json_array_append_new(a, row_json(&k->rep->rows[i]));
	doc = json_pack("{s:o, s:f}", "rows", a, "seconds", k->before + mc_now() - k->t0);
	text = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
	json_decref(doc);
	return text;
}

static int serialize(struct mc_ckpass *k, const struct mc_model *tm, struct mc_optim *o,
		     const struct mc_train_pos *pos, void **buf, size_t *len, struct mc_err *err)
{
	struct mc_pipeline *p = k->p;
	struct mc_st_list l = { 0 };
	struct mc_tensor **all = NULL;
	int n = 0, cap = 0, ret = 0, n_meta;
	char prefix[300], name[1100], digest[65], *ck = NULL, *rows = NULL, *sp = NULL;
	char *text = NULL;
	const char *meta[14];
	json_t *pj = NULL;
	void *b1 = NULL;
	size_t l1, dn;
	const uint8_t *data;

	for (int i = 0; i < p->n_models && !ret; i++) {
		snprintf(prefix, sizeof(prefix), "model/%s/", p->models[i].name);
		ret = mc_model_add_tensors(k->start[i], prefix, &l, err);
	}
	for (int i = 0; i < k->n_done && !ret; i++) {
		snprintf(prefix, sizeof(prefix), "run/%d/", i);
		ret = mc_model_add_tensors(k->done[i], prefix, &l, err);
	}
	if (!ret)
		ret = mc_model_add_tensors(tm, "train/", &l, err);
	if (!ret)
		ret = mc_st_list_sparse_text(&l, &sp, err);
	if (ret)
		goto out;
	/* the models' tensors (borrowed from l), then the checkpoint's own */
	cap = l.n + 2 * mc_model_n_nodes(tm) * MC_NODE_MAX_PARAMS + k->n_keeps + 1;
	all = calloc((size_t)cap, sizeof(*all));
	if (!all) {
		ret = mc_err_set(err, MC_ENOMEM, "out of memory writing a checkpoint");
		goto out;
	}
	memcpy(all, l.t, (size_t)l.n * sizeof(*all));
	n = l.n;
	for (int i = 0; i < tm->n_nodes && !ret; i++)
		for (int q = 0; q < tm->nodes[i]->n_params && !ret; q++)
			for (int w = 0; w < 2 && !ret; w++) {
				const struct mc_tensor *t = tm->nodes[i]->params[q];
				const float *s = mc_optim_state(o, i, q, w);

				if (!s)
					continue;
				snprintf(name, sizeof(name), "optim/%c/%s", w ? 'v' : 'm', t->name);
				ret = add_own(all, &n, name, MC_F32, t->numel, s,
					      (size_t)t->numel * sizeof(float), err);
			}
	for (int i = 0; i < k->n_keeps && !ret; i++) {
		snprintf(name, sizeof(name), "keep/%s", k->keeps[i].name);
		ret = add_own(all, &n, name, MC_U8, (int64_t)k->keeps[i].len,
			      k->keeps[i].buf, k->keeps[i].len, err);
	}
	if (ret)
		goto out;
	pj = position_json(k, tm, o, pos, err);
	if (!pj) {
		ret = err->code ? err->code : MC_ENOMEM;
		goto out;
	}
	ck = json_dumps(pj, JSON_COMPACT | JSON_PRESERVE_ORDER);
	rows = rows_text(k);
	text = malloc(p->text_len + 1);
	if (!ck || !rows || !text) {
		ret = mc_err_set(err, MC_ENOMEM, "out of memory writing a checkpoint");
		goto out;
	}
	memcpy(text, p->text, p->text_len);
	text[p->text_len] = '\0';
	meta[0] = "format";
	meta[1] = CK_FORMAT;
	meta[2] = "mcomp.version";
	meta[3] = MC_VERSION;
	meta[4] = "mcomp.checkpoint";
	meta[5] = ck;
	meta[6] = "mcomp.report";
	meta[7] = rows;
	meta[8] = "mcomp.pipeline";
	meta[9] = text;
	n_meta = 5;
	if (sp) {
		meta[10] = "mcomp.sparse";
		meta[11] = sp;
		n_meta++;
	}
	/* once for the tensor bytes, which the digest covers, once with it */
	ret = mc_st_serialize(all, n, meta, n_meta, &b1, &l1, err);
	if (ret)
		goto out;
	data = data_section(b1, l1, &dn);
	seal(ck, rows, text, data, dn, digest);
	meta[2 * n_meta] = "mcomp.sha256";
	meta[2 * n_meta + 1] = digest;
	ret = mc_st_serialize(all, n, meta, n_meta + 1, buf, len, err);
out:
	for (int i = l.n; all && i < n; i++)
		mc_tensor_free(all[i]);
	free(all);
	mc_st_list_release(&l);
	json_decref(pj);
	free(b1);
	free(ck);
	free(rows);
	free(text);
	free(sp);
	return ret;
}

/* Writes the checkpoint of the run in progress, at position pos. */
static int write_checkpoint(struct mc_ckpass *k, const struct mc_model *tm, struct mc_optim *o,
			    const struct mc_train_pos *pos, struct mc_err *err)
{
	struct mc_stage st;
	void *buf = NULL;
	size_t len;
	int ret;

	if (k->p->no_writes)
		return 0; /* rank 0 of the job writes it */
	ret = serialize(k, tm, o, pos, &buf, &len, err);
	/* staged and put in place like every output; also once a signal came:
	 * a second one ends mcomp at once and the old checkpoint stays */
	if (!ret)
		ret = mc_pl_output_recheck(k->p, k->out->path, err);
	if (!ret)
		ret = mc_stage_write(&st, k->out->path, buf, len, err);
	free(buf);
	if (!ret)
		ret = mc_stage_commit(&st, err);
	if (ret)
		return mc_err_prefix(err, "pass '%s', checkpoint %s", k->p->passes[k->pass].pass->name,
				     k->out->path);
	k->out->written = 1;
	return 0;
}

/* After an epoch or at an interrupt: writes the checkpoint when it is due. */
static int ck_save(struct mc_ckpass *k, const struct mc_model *m, struct mc_optim *o,
		   const struct mc_train_pos *pos, int interrupted, struct mc_err *err)
{
	const char *pass = k->p->passes[k->pass].pass->name;
	struct mc_err own = { 0 };
	int ret;

	if (!k->out)
		return 0;
	if (!interrupted && pos->epoch % k->every && pos->epoch != k->tc->epochs)
		return 0;
	ret = write_checkpoint(k, m, o, pos, interrupted ? &own : err);
	if (interrupted) {
		if (ret)
			mc_host_log(k->p, MC_LOG_WARNING, pass, "the checkpoint of the interrupted "
				    "run was not written: %s; the last one stays", own.msg);
		else
			mc_host_log(k->p, MC_LOG_INFO, pass, "checkpoint %s: stopped in epoch "
				    "%d/%d after step %lld; mcomp run --resume goes on from there",
				    k->out->path, pos->epoch + 1, k->tc->epochs,
				    (long long)pos->step);
		return 0;
	}
	if (!ret && k->run)
		mc_host_log(k->p, MC_LOG_INFO, pass, "checkpoint %s: training run %d, epoch %d/%d",
			    k->out->path, k->run + 1, pos->epoch, k->tc->epochs);
	else if (!ret)
		mc_host_log(k->p, MC_LOG_INFO, pass, "checkpoint %s: epoch %d/%d", k->out->path,
			    pos->epoch, k->tc->epochs);
	return ret;
}

/* ---------------------------------------------------------------- the pass */

int mc_ck_pass_begin(struct mc_ctx *ctx, int i, const struct mc_report *rep, double *before,
		     struct mc_err *err)
{
	struct mc_pipeline *p = ctx->p;
	const struct mc_pass *pass = p->passes[i].pass;
	const struct mc_param_def *d = mc_param_find(pass->params, CK_ROW);
	const struct mc_param_def *e = mc_param_find(pass->params, CK_EVERY);
	struct mc_resume *res = p->ck && p->ck->res && p->ck->res->pass == i ? p->ck->res : NULL;
	struct mc_pl_output *out = d ? mc_pl_output_find(p, i, d, NULL) : NULL;
	struct mc_ckpass *k;

	*before = 0;
	ctx->ck = NULL;
	if (!out && !res)
		return 0;
	k = calloc(1, sizeof(*k));
	if (!k)
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	ctx->ck = k;
	k->p = p;
	k->pass = i;
	k->out = out;
	k->every = e && e->type == MC_PARAM_TINT ? *(int *)((char *)p->passes[i].conf + e->offset)
						 : 1;
	if (k->every < 1)
		k->every = 1;
	k->rep = rep;
	k->res = res;
	k->t0 = mc_now();
	if (res)
		*before = k->before =
			json_real_value(json_object_get(res->rows, "seconds"));
	if (!out)
		return 0;
	k->start = calloc((size_t)p->n_models + 1, sizeof(*k->start));
	if (!k->start)
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	for (int m = 0; m < p->n_models; m++) {
		k->start[m] = mc_model_dup(p->models[m].model, err);
		if (!k->start[m])
			return mc_err_prefix(err, "keeping model '%s' for checkpoints",
					     p->models[m].name);
	}
	return 0;
}

void mc_ck_pass_end(struct mc_ctx *ctx)
{
	struct mc_ckpass *k = ctx->ck;

	if (!k)
		return;
	for (int m = 0; k->start && m < k->p->n_models; m++)
		mc_model_free(k->start[m]);
	free(k->start);
	for (int m = 0; m < k->n_done; m++)
		mc_model_free(k->done[m]);
	free(k->done);
	for (int m = 0; m < k->n_keeps; m++)
		free(k->keeps[m].name);
	free(k->keeps);
	free(k);
	ctx->ck = NULL;
}

MC_API int mc_ctx_keep(struct mc_ctx *ctx, const char *name, void *buf, size_t len)
{
	struct mc_ckpass *k = ctx->ck;
	struct keep *nk;

	if (!name || !*name || strlen(name) > 200 || (!buf && len))
		return mc_ctx_error(ctx, NULL, MC_EINVAL, "mc_ctx_keep: a name of 1 to 200 "
				    "characters and a buffer; fix the pass");
	if (!k)
		return 0; /* no checkpoints: nothing to keep */
	for (int i = 0; i < k->n_keeps; i++)
		if (!strcmp(k->keeps[i].name, name))
			return mc_ctx_error(ctx, NULL, MC_EINVAL, "mc_ctx_keep: '%s' given twice; "
					    "fix the pass", name);
	nk = realloc(k->keeps, (size_t)(k->n_keeps + 1) * sizeof(*nk));
	if (!nk)
		return mc_err_set(ctx->err, MC_ENOMEM, "out of memory");
	k->keeps = nk;
	nk[k->n_keeps].name = strdup(name);
	nk[k->n_keeps].buf = buf;
	nk[k->n_keeps].len = len;
	if (!nk[k->n_keeps].name)
		return mc_err_set(ctx->err, MC_ENOMEM, "out of memory");
	k->n_keeps++;
	return 0;
}

/* Fills m's parameters from the checkpoint's tensors under prefix, after
 * checking that m has the architecture arch the checkpoint recorded. */
static int fill_from(struct mc_resume *r, struct mc_model *m, const char *prefix, json_t *arch,
		     const char *what, struct mc_err *err)
{
	json_t *now = arch_json(m);
	char *used;
	int ret, same = now && arch && json_equal(now, arch);

	json_decref(now);
	if (!same)
		return mc_err_set(err, MC_EINVAL,
				  "%s: %s has another architecture now than in the checkpoint; %s",
				  r->path, what, FIX);
	used = calloc((size_t)r->f->n + 1, 1);
	if (!used)
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	/* zero first: a sparse tensor stores its nonzero values only */
	for (int i = 0; i < m->n_nodes; i++)
		for (int q = 0; q < m->nodes[i]->n_params; q++)
			memset(m->nodes[i]->params[q]->data, 0,
			       mc_tensor_nbytes(m->nodes[i]->params[q]));
	ret = mc_model_fill(m, r->f, prefix, r->sparse, used, err);
	free(used);
	return ret;
}

/* The optimizer's buffers from the checkpoint, for model m. */
static int restore_optim(struct mc_resume *r, const struct mc_model *m, struct mc_optim *o,
			 struct mc_err *err)
{
	char name[1100];

	mc_optim_set_steps(o, r->optim_steps);
	for (int i = 0; i < m->n_nodes; i++)
		for (int q = 0; q < m->nodes[i]->n_params; q++)
			for (int w = 0; w < 2; w++) {
				const struct mc_tensor *t = m->nodes[i]->params[q];
				float *s = mc_optim_state(o, i, q, w);
				const struct mc_st_entry *e;

				snprintf(name, sizeof(name), "optim/%c/%s", w ? 'v' : 'm', t->name);
				e = mc_st_find(r->f, name);
				if (!s && !e)
					continue;
				if (!s || !e || e->dtype != MC_F32 || e->ndim != 1 ||
				    e->shape[0] != t->numel)
					return mc_err_set(err, MC_ECORRUPT,
							  "%s: the optimizer state '%s' %s; the "
							  "checkpoint does not fit this run; %s",
							  r->path, name,
							  !e ? "is missing" :
							  !s ? "is one this optimizer does not keep" :
							       "has another shape",
							  FIX);
				memcpy(s, e->data, (size_t)t->numel * sizeof(float));
			}
	return 0;
}

/* What mc_train_from's callbacks see: the pass's checkpoints and the model trained. */
struct train_arg {
	struct mc_ckpass *k;
	const struct mc_model *m;
};

static int tr_restore(void *arg, struct mc_optim *o, struct mc_err *err)
{
	struct train_arg *ta = arg;

	return restore_optim(ta->k->p->ck->res, ta->m, o, err);
}

static int tr_save(void *arg, const struct mc_model *m, struct mc_optim *o,
		   const struct mc_train_pos *pos, int interrupted, struct mc_err *err)
{
	struct train_arg *ta = arg;

	return ck_save(ta->k, m, o, pos, interrupted, err);
}

/* Puts the kept state of the pass back from the checkpoint. */
static int restore_keeps(struct mc_ckpass *k, struct mc_resume *r, struct mc_err *err)
{
	json_t *keeps = json_object_get(r->ck, "keeps");
	char name[300];

	if (json_array_size(keeps) != (size_t)k->n_keeps)
		return mc_err_set(err, MC_EINVAL,
				  "%s: the pass keeps %d pieces of state now, %zu in the checkpoint; "
				  "%s",
				  r->path, k->n_keeps, json_array_size(keeps), FIX);
	for (int i = 0; i < k->n_keeps; i++) {
		const struct mc_st_entry *e;

		snprintf(name, sizeof(name), "keep/%s", k->keeps[i].name);
		e = mc_st_find(r->f, name);
		if (!e || e->dtype != MC_U8 || e->nbytes != k->keeps[i].len)
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: the pass's state '%s' (%zu bytes) is %s in the "
					  "checkpoint; %s",
					  r->path, k->keeps[i].name, k->keeps[i].len,
					  e ? "of another size" : "missing", FIX);
		memcpy(k->keeps[i].buf, e->data, e->nbytes);
	}
	return 0;
}

MC_API int mc_ctx_train(struct mc_ctx *ctx, struct mc_model *m, const struct mc_dataset *d,
			const struct mc_train_conf *c, const struct mc_train_hooks *hooks)
{
	struct mc_ckpass *k = ctx->ck;
	struct mc_resume *r;
	struct train_arg ta = { .k = k, .m = m };
	struct mc_train_ckpt ck = { .arg = &ta, .save = tr_save, .restore = tr_restore };
	const char *pass = ctx->pp->pass->name;
	char prefix[32], what[64];
	int idx, ret;

	if (ctx->validating)
		return mc_ctx_error(ctx, NULL, MC_EINVAL, "a pass trains in run(), not while it "
				    "is validated");
	if (!k)
		return mc_train(m, d, c, hooks, ctx->err);
	idx = k->n_runs++;
	r = k->res;
	if (r && idx < r->run) {
		/* finished before the checkpoint: its result is there */
		snprintf(prefix, sizeof(prefix), "run/%d/", idx);
		snprintf(what, sizeof(what), "the model of training run %d", idx + 1);
		ret = fill_from(r, m, prefix, json_array_get(json_object_get(r->ck, "runs"),
							      (size_t)idx),
				what, ctx->err);
		if (ret)
			return ret;
		mc_host_log(k->p, MC_LOG_INFO, pass, "training run %d was done before the "
			    "checkpoint: its model restored", idx + 1);
		goto done;
	}
	if (r && idx == r->run) {
		ret = fill_from(r, m, "train/", json_object_get(r->ck, "train_arch"),
				"the model in training", ctx->err);
		if (!ret)
			ret = restore_keeps(k, r, ctx->err);
		if (ret)
			return ret;
		ck.start = r->pos;
		k->res = NULL; /* used: later runs start afresh */
		mc_host_log(k->p, MC_LOG_INFO, pass, "resuming training at epoch %d/%d, step %lld",
			    r->pos.epoch + (r->pos.epoch < c->epochs), c->epochs,
			    (long long)r->pos.step);
	}
	k->tc = c;
	k->run = idx;
	ret = mc_train_from(m, d, c, hooks, &ck, ctx->err);
	k->tc = NULL;
	if (ret)
		return ret;
done:
	if (k->out) {
		struct mc_model **nd = realloc(k->done, (size_t)(k->n_done + 1) * sizeof(*nd));

		if (!nd)
			return mc_err_set(ctx->err, MC_ENOMEM, "out of memory");
		k->done = nd;
		nd[k->n_done] = mc_model_dup(m, ctx->err);
		if (!nd[k->n_done])
			return ctx->err->code;
		k->n_done++;
	}
	return 0;
}

/* ---------------------------------------------------------------- reading */

/* The first line where a and b differ, as a message. */
static void first_diff(const char *a, size_t na, const char *b, size_t nb, char *out, size_t n)
{
	size_t i = 0, la = 0, lb = 0, ea, eb;
	int line = 1;

	while (i < na && i < nb && a[i] == b[i]) {
		if (a[i] == '\n') {
			line++;
			la = lb = i + 1;
		}
		i++;
	}
	for (ea = la; ea < na && a[ea] != '\n'; ea++)
		;
	for (eb = lb; eb < nb && b[eb] != '\n'; eb++)
		;
	snprintf(out, n, "line %d reads '%.*s' now, '%.*s' in the checkpoint", line,
		 (int)(ea - la > 120 ? 120 : ea - la), a + la, (int)(eb - lb > 120 ? 120 : eb - lb),
		 b + lb);
}

static int corrupt(struct mc_resume *r, const char *what, struct mc_err *err)
{
	return mc_err_set(err, MC_ECORRUPT, "%s: not a whole mcomp checkpoint: %s; %s", r->path,
			  what, FIX);
}

/* Checks that checkpoint r was made by this pipeline, with these inputs. */
static int check_origin(struct mc_pipeline *p, struct mc_resume *r, int pass,
			struct mc_err *err)
{
	json_t *pl = json_object_get(r->ck, "pipeline"), *sets = json_object_get(pl, "sets");
	json_t *passes = json_object_get(r->ck, "passes"), *in_then = json_object_get(r->ck, "inputs");
	const char *ver = json_string_value(json_object_get(r->ck, "mcomp_version"));
	const char *then = mc_st_meta(r->f, "mcomp.pipeline");
	char hex[65], diff[400];
	json_t *in_now;

	if (!ver || strcmp(ver, MC_VERSION))
		return mc_err_set(err, MC_EINVAL,
				  "%s: made by mcomp %s, this is mcomp %s; a run goes on only with "
				  "the mcomp that began it; %s",
				  r->path, ver ? ver : "(unknown)", MC_VERSION, FIX);
	mc_sha256_buf(p->text, p->text_len, hex);
	if (!then || strcmp(hex, json_string_value(json_object_get(pl, "sha256")) ?
				 json_string_value(json_object_get(pl, "sha256")) : "")) {
		if (then)
			first_diff((const char *)p->text, p->text_len, then, strlen(then), diff,
				   sizeof(diff));
		else
			snprintf(diff, sizeof(diff), "its bytes differ");
		return mc_err_set(err, MC_EINVAL,
				  "%s: made by another pipeline than %s: %s; resume with the "
				  "pipeline that made it, or %s",
				  r->path, p->path, diff, FIX);
	}
	for (int i = 0; i < p->n_sets || i < (int)json_array_size(sets); i++) {
		const char *a = i < p->n_sets ? p->sets[i] : NULL;
		const char *b = json_string_value(json_array_get(sets, (size_t)i));

		if (a && b && !strcmp(a, b))
			continue;
		return mc_err_set(err, MC_EINVAL,
				  "%s: made with other --set overrides: %s%s%s now, %s%s%s in the "
				  "checkpoint (override %d); give the same ones, or %s",
				  r->path, a ? "'" : "", a ? a : "none", a ? "'" : "", b ? "'" : "",
				  b ? b : "none", b ? "'" : "", i + 1, FIX);
	}
	for (int i = 0; i < p->n_passes; i++) {
		json_t *e = json_array_get(passes, (size_t)i);
		const char *v = json_string_value(json_object_get(e, "version"));

		if (v && !strcmp(v, p->passes[i].pass->version))
			continue;
		return mc_err_set(err, MC_EINVAL,
				  "%s: pass %d ('%s') is version %s now, %s in the checkpoint; a run "
				  "goes on only with the passes that began it; %s",
				  r->path, i + 1, p->passes[i].pass->name, p->passes[i].pass->version,
				  v ? v : "(none)", FIX);
	}
	in_now = inputs(p, err);
	if (!in_now)
		return err->code;
	for (size_t i = 0; i < json_array_size(in_now); i++) {
		json_t *a = json_array_get(in_now, i), *b = NULL;
		const char *path = json_string_value(json_object_get(a, "path")), *hb;

		for (size_t j = 0; j < json_array_size(in_then) && !b; j++)
			if (!strcmp(path, json_string_value(json_object_get(
						  json_array_get(in_then, j), "path")) ?: ""))
				b = json_array_get(in_then, j);
		hb = json_string_value(json_object_get(b, "sha256"));
		if (hb && !strcmp(hb, json_string_value(json_object_get(a, "sha256"))))
			continue;
		return mc_err_set(err, MC_EINVAL,
				  "%s: the input %s changed since the checkpoint was made (its "
				  "sha256 is %s now, was %s); resume with the same data, or %s",
				  r->path, path, json_string_value(json_object_get(a, "sha256")),
				  hb ? hb : "not recorded", FIX);
	}
	if (r->pass != pass)
		return corrupt(r, "it was made in another pass than the one whose checkpoint.path "
			       "names it", err);
	return 0;
}

/* Reads, seals and checks the checkpoint at path, written by pass. */
static int read_checkpoint(struct mc_pipeline *p, const char *path, int pass,
			   struct mc_resume **out, struct mc_err *err)
{
	struct mc_resume *r = calloc(1, sizeof(*r));
	const char *fmt, *ck, *rows, *text, *sealed;
	json_t *pos;
	char hex[65];
	const uint8_t *data;
	size_t dn;
	int ret;

	*out = NULL;
	if (!r || !(r->path = strdup(path))) {
		free(r);
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	}
	ret = mc_sha256_file(path, r->sha256, err);
	if (!ret && !(r->f = mc_st_read(path, err)))
		ret = err->code;
	if (ret) {
		mc_err_prefix(err, "--resume");
		goto fail;
	}
	fmt = mc_st_meta(r->f, "format");
	ck = mc_st_meta(r->f, "mcomp.checkpoint");
	rows = mc_st_meta(r->f, "mcomp.report");
	text = mc_st_meta(r->f, "mcomp.pipeline");
	sealed = mc_st_meta(r->f, "mcomp.sha256");
	if (!fmt || strcmp(fmt, CK_FORMAT)) {
		ret = mc_err_set(err, MC_EINVAL,
				 "%s: not an mcomp checkpoint (its format is '%s'); checkpoint.path "
				 "names the file a pass keeps its training state in",
				 path, fmt ? fmt : "none");
		goto fail;
	}
	if (!ck || !rows || !text || !sealed) {
		ret = corrupt(r, "__metadata__ lacks mcomp.checkpoint, mcomp.report, mcomp.pipeline "
			      "or mcomp.sha256", err);
		goto fail;
	}
	data = data_section(r->f->buf, r->f->len, &dn);
	seal(ck, rows, text, data, dn, hex);
	if (strcmp(hex, sealed)) {
		ret = corrupt(r, "its contents do not match the digest it was written with "
			      "(the file is damaged)", err);
		goto fail;
	}
	r->ck = json_loads(ck, 0, NULL);
	r->rows = json_loads(rows, 0, NULL);
	pos = json_object_get(r->ck, "position");
	if (!json_is_object(r->ck) || !json_is_object(r->rows) || !json_is_object(pos) ||
	    json_integer_value(json_object_get(r->ck, "version")) != CK_VERSION) {
		ret = corrupt(r, "mcomp.checkpoint or mcomp.report is not what this mcomp writes",
			      err);
		goto fail;
	}
	r->pass = (int)json_integer_value(json_object_get(pos, "pass"));
	r->run = (int)json_integer_value(json_object_get(pos, "run"));
	r->pos.epoch = (int)json_integer_value(json_object_get(pos, "epoch"));
	r->pos.step = json_integer_value(json_object_get(pos, "step"));
	r->pos.batch = json_integer_value(json_object_get(pos, "batch"));
	r->pos.loss_sum = strtod(json_string_value(json_object_get(pos, "loss_sum")) ?: "x",
				 NULL);
	r->optim_steps = json_integer_value(
		json_object_get(json_object_get(r->ck, "optimizer"), "steps"));
	ret = mc_sparse_index(r->f, &r->sparse, err);
	if (!ret)
		ret = check_origin(p, r, pass, err);
	if (ret)
		goto fail;
	*out = r;
	return 0;
fail:
	resume_free(r);
	return ret;
}

/* Whether a is further along than b. */
static int later(const struct mc_resume *a, const struct mc_resume *b)
{
	if (a->pass != b->pass)
		return a->pass > b->pass;
	if (a->run != b->run)
		return a->run > b->run;
	return a->pos.step > b->pos.step;
}

MC_API int mc_pipeline_resume(struct mc_pipeline *p, const char **from, struct mc_err *err)
{
	struct mc_ckstate *s = state(p);
	struct mc_resume *best = NULL;
	int n = 0, ret = 0;
	struct stat st;

	if (from)
		*from = NULL;
	if (!s)
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	resume_free(s->res);
	s->res = NULL;
	free(s->missing);
	s->missing = NULL;
	s->asked = 1;
	for (int i = 0; i < p->n_outputs; i++) {
		struct mc_pl_output *o = &p->outputs[i];
		struct mc_resume *r;

		if (!mc_ck_is_checkpoint(o))
			continue;
		n++;
		if (!s->missing)
			s->missing = strdup(o->path);
		if (lstat(o->path, &st) && errno == ENOENT)
			continue;
		ret = read_checkpoint(p, o->path, o->pass, &r, err);
		if (ret)
			break;
		if (!best || later(r, best)) {
			resume_free(best);
			best = r;
		} else {
			resume_free(r);
		}
	}
	if (!ret && !n)
		ret = mc_err_set(err, MC_EINVAL,
				 "%s: --resume: no pass sets checkpoint.path, so there is nothing "
				 "to resume from; add checkpoint: {every: 1, path: FILE} to a pass "
				 "that trains",
				 p->path);
	if (ret) {
		resume_free(best);
		return ret;
	}
	s->res = best;
	if (best && from)
		*from = best->path;
	return 0;
}

/* A model of p as the checkpoint holds it under model/NAME/. */
static struct mc_model *restore_model(struct mc_resume *r, const char *name, json_t *arch,
				      struct mc_err *err)
{
	char prefix[300], origin[400], *text = json_dumps(arch, JSON_COMPACT);
	struct mc_model *m;
	char *used = calloc((size_t)r->f->n + 1, 1);

	snprintf(prefix, sizeof(prefix), "model/%s/", name);
	snprintf(origin, sizeof(origin), "%s: model '%s'", r->path, name);
	m = text ? mc_model_from_arch_shapes(text, origin, err) : NULL;
	free(text);
	if (!used || !m || mc_model_check_stored(m, r->f, prefix, r->sparse, err) ||
	    mc_model_fits(m, 0, origin, err) || mc_model_materialize(m, err)) {
		if (!used)
			mc_err_set(err, MC_ENOMEM, "out of memory");
		goto fail;
	}
	for (int i = 0; i < m->n_nodes; i++)
		for (int q = 0; q < m->nodes[i]->n_params; q++)
			memset(m->nodes[i]->params[q]->data, 0,
			       mc_tensor_nbytes(m->nodes[i]->params[q]));
	if (mc_model_fill(m, r->f, prefix, r->sparse, used, err))
		goto fail;
	free(used);
	return m;
fail:
	free(used);
	mc_model_free(m);
	return NULL;
}

static int restore_rows(struct mc_resume *r, struct mc_report *rep, struct mc_err *err)
{
	json_t *rows = json_object_get(r->rows, "rows");

	for (size_t i = 0; i < json_array_size(rows); i++) {
		json_t *j = json_array_get(rows, i);
		const char *model = json_string_value(json_object_get(j, "model"));
		json_t *metrics = json_object_get(j, "metrics");
		struct mc_row *row;

		if (!model || !json_is_object(metrics))
			return corrupt(r, "a row of mcomp.report lacks its model or metrics", err);
		row = mc_report_add(rep, (int)json_integer_value(json_object_get(j, "step")),
				    json_string_value(json_object_get(j, "pass")), model);
		if (!row)
			return mc_err_set(err, MC_ENOMEM, "out of memory");
		row->m.params = json_integer_value(json_object_get(j, "params"));
		row->m.nonzeros = json_integer_value(json_object_get(j, "nonzeros"));
		row->m.flops = json_integer_value(json_object_get(j, "flops"));
		row->m.bytes = json_integer_value(json_object_get(j, "bytes"));
		row->bytes_raw = json_integer_value(json_object_get(j, "bytes_raw"));
		row->coded = json_is_true(json_object_get(j, "coded"));
		row->m.accuracy = json_number_value(json_object_get(j, "accuracy"));
		row->m.latency1_ms = json_number_value(json_object_get(j, "latency1_ms"));
		row->m.latency256_ms = json_number_value(json_object_get(j, "latency256_ms"));
		row->seconds = json_number_value(json_object_get(j, "seconds"));
		json_decref(row->metrics);
		row->metrics = json_deep_copy(metrics);
		if (!row->metrics)
			return mc_err_set(err, MC_ENOMEM, "out of memory");
	}
	return 0;
}

int mc_ck_resume_start(struct mc_pipeline *p, struct mc_report *rep, int *first,
		       struct mc_err *err)
{
	struct mc_resume *r = p->ck ? p->ck->res : NULL;
	json_t *models, *read;

	*first = -1;
	if (p->ck && p->ck->asked && !r)
		mc_host_log(p, MC_LOG_INFO, NULL, "--resume: no checkpoint at %s yet; running "
			    "from the start", p->ck->missing ? p->ck->missing : "(none)");
	if (!r)
		return 0;
	models = json_object_get(r->ck, "models");
	if (json_array_size(models) != (size_t)p->n_models)
		return corrupt(r, "it holds another number of models than the pipeline", err);
	for (int i = 0; i < p->n_models; i++) {
		json_t *e = json_array_get(models, (size_t)i);
		const char *name = json_string_value(json_object_get(e, "name"));
		struct mc_model *m;

		if (!name || strcmp(name, p->models[i].name))
			return corrupt(r, "its models are not the pipeline's", err);
		m = restore_model(r, name, json_object_get(e, "arch"), err);
		if (!m)
			return err->code;
		mc_model_free(p->models[i].model);
		p->models[i].model = m;
	}
	if (restore_rows(r, rep, err))
		return err->code;
	read = json_object_get(r->ck, "splits_read");
	for (size_t j = 0; j < json_array_size(read); j++)
		for (int i = 0; i < p->n_splits; i++)
			if (!strcmp(p->splits[i].name, json_string_value(json_array_get(read, j)) ?: ""))
				p->splits[i].read_before = 1;
	if (r->pass < 0 || r->pass >= p->n_passes)
		return corrupt(r, "its pass is not one of the pipeline's", err);
	mc_host_log(p, MC_LOG_INFO, NULL, "--resume: from %s: %d pass%s done before it, pass %d "
		    "('%s') goes on at step %lld",
		    r->path, r->pass, r->pass == 1 ? "" : "es", r->pass + 1,
		    p->passes[r->pass].pass->name, (long long)r->pos.step);
	*first = r->pass;
	return 0;
}

json_t *mc_ck_manifest(const struct mc_pipeline *p)
{
	const struct mc_resume *r = p->ck ? p->ck->res : NULL;

	if (!r)
		return NULL;
	return json_pack("{s:s, s:s, s:i, s:i, s:I}", "checkpoint", r->path, "sha256", r->sha256,
			 "pass", r->pass + 1, "epochs_done", r->pos.epoch, "step",
			 (json_int_t)r->pos.step);
}
