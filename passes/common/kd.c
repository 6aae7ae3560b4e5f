/* SPDX-License-Identifier: MIT */
/*
 * kd.c - distillation shared by the distill and ensemble-distill passes: the
 * combined loss, the (ensemble) targets, the training run with its targets
 * cached for the split or computed per batch, the checks and the report
 * lines both passes make. See kd.h.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kd.h"

const char *const kd_combine_names[] = { "probs", "logits", NULL };

float kd_loss(const float *logits, const float *target, const uint8_t *labels, int n, int classes,
	      float T, float alpha, float *dlogits, float *tmp)
{
	float kd = 0, ce = 0;
	int64_t k = (int64_t)n * classes;

	if (alpha > 0)
		kd = mc_kd_loss(logits, target, n, classes, T, tmp);
	else
		memset(tmp, 0, (size_t)k * sizeof(*tmp));
	ce = mc_softmax_xent(logits, labels, n, classes, dlogits);
	for (int64_t i = 0; i < k; i++)
		dlogits[i] = alpha * tmp[i] + (1 - alpha) * dlogits[i];
	return alpha * kd + (1 - alpha) * ce;
}

void kd_targets(enum kd_combine rule, const float *const *z, const double *w, int k, int n,
		int classes, float T, float *out, float *tmp)
{
	for (int r = 0; r < n; r++) {
		size_t off = (size_t)r * (size_t)classes;
		float *o = out + off;

		if (rule == KD_LOGITS) {
			for (int c = 0; c < classes; c++) {
				double s = 0;

				for (int i = 0; i < k; i++)
					s += w[i] * z[i][off + (size_t)c];
				tmp[c] = (float)s;
			}
			mc_softmax_t(tmp, 1, classes, T, o);
			continue;
		}
		for (int i = 0; i < k; i++)
			mc_softmax_t(z[i] + off, 1, classes, T, tmp + (size_t)i * (size_t)classes);
		for (int c = 0; c < classes; c++) {
			double s = 0;

			for (int i = 0; i < k; i++)
				s += w[i] * tmp[(size_t)i * (size_t)classes + (size_t)c];
			o[c] = (float)s;
		}
	}
}

int kd_check_pair(struct mc_ctx *ctx, const char *key, const char *sname, const struct mc_model *s,
		  const char *tname, const struct mc_model *t)
{
	if (mc_model_in_numel(s) != mc_model_in_numel(t))
		return mc_ctx_error(ctx, key, MC_EINVAL,
				    "student '%s' takes %lld input values but teacher '%s' takes "
				    "%lld; build both for the same data",
				    sname, (long long)mc_model_in_numel(s), tname, (long long)mc_model_in_numel(t));
	if (mc_model_n_classes(s) != mc_model_n_classes(t))
		return mc_ctx_error(ctx, key, MC_EINVAL,
				    "student '%s' outputs %lld classes but teacher '%s' outputs "
				    "%lld; make the student's last layer %lld wide",
				    sname, (long long)mc_model_n_classes(s), tname, (long long)mc_model_n_classes(t),
				    (long long)mc_model_n_classes(t));
	return 0;
}

int kd_check_groups(struct mc_ctx *ctx, const struct kd_opts *ko)
{
	return mc_ctx_check_grad_groups(ctx, ko->grad_groups, ko->batch_size);
}

int kd_check_data(struct mc_ctx *ctx, const char *dname, const struct mc_dataset *d,
		  const struct mc_model *s)
{
	if (d->sample_numel != mc_model_in_numel(s))
		return mc_ctx_error(ctx, "data", MC_ERUN,
				    "split '%s' has samples of %lld values but the models take "
				    "%lld; build them with a matching input",
				    dname, (long long)d->sample_numel, (long long)mc_model_in_numel(s));
	if (d->n_classes > mc_model_n_classes(s) || mc_model_n_classes(s) > 65536)
		return mc_ctx_error(ctx, "data", MC_ERUN,
				    "split '%s' has %d classes but the models output %lld; make "
				    "their last layers at least that wide",
				    dname, d->n_classes, (long long)mc_model_n_classes(s));
	return 0;
}

/* ---------------------------------------------------------------- training */

struct kd_run {
	struct mc_ctx *ctx;
	const struct mc_dataset *d;
	const struct mc_dataset *ev; /* measured after every epoch, or NULL */
	const char *ev_name;
	int epochs;
	const struct kd_teachers *t;
	const float *targets;		      /* [d->n, classes] when cached, else NULL */
	struct mc_exec *tex[KD_MAX_TEACHERS]; /* the teachers' executors when not cached */
	float T, alpha;
	int classes;
	const char *tag;
	float *btarget;	  /* [batch, classes] */
	uint8_t *blabels; /* [batch] */
	float *tmp;	  /* [batch, classes] */
	float *ttmp;	  /* [k, classes] */
};

/* Executors of batch n for every teacher into e[k]; on failure frees them. */
static int teacher_execs(const struct kd_teachers *t, int n, struct mc_exec **e, struct mc_err *err)
{
	for (int i = 0; i < t->k; i++) {
		e[i] = mc_exec_new(t->m[i], n, 0, err);
		if (!e[i]) {
			while (i--)
				mc_exec_free(e[i]);
			return err->code;
		}
	}
	return 0;
}

static void free_execs(struct mc_exec **e, int k)
{
	for (int i = 0; i < k; i++) {
		mc_exec_free(e[i]);
		e[i] = NULL;
	}
}

/* Runs every teacher on x[n] and combines their outputs at T into out[n, classes]. */
static void batch_targets(const struct kd_teachers *t, struct mc_exec **e, const float *x, int n,
			  int classes, float T, float *out, float *ttmp)
{
	const float *z[KD_MAX_TEACHERS];

	for (int i = 0; i < t->k; i++)
		z[i] = mc_forward(e[i], x, n);
	kd_targets(t->combine, z, t->w, t->k, n, classes, T, out, ttmp);
}

/*
 * The targets at T of every sample of d into out[d->n, classes], in blocks
 * of KD_EVAL_BATCH. With share (grouped steps, whose ranks all run this
 * pass), each rank of the job computes its own blocks (mc_dist_part) and
 * the ranks exchange them: each block the same bytes whatever the rank count.
 */
static int split_targets(const struct kd_teachers *t, const struct mc_dataset *d, int classes,
			 float T, int share, float *out, float *ttmp, struct mc_err *err)
{
	struct mc_exec *e[KD_MAX_TEACHERS];
	int64_t lo = 0, hi = d->n;
	int ret = teacher_execs(t, KD_EVAL_BATCH, e, err);

	if (ret)
		return ret;
	if (share)
		mc_dist_part(d->n, KD_EVAL_BATCH, &lo, &hi);
	for (int64_t i = lo; i < hi; i += KD_EVAL_BATCH) {
		int n = (int)(hi - i < KD_EVAL_BATCH ? hi - i : KD_EVAL_BATCH);

		batch_targets(t, e, d->x + (size_t)i * (size_t)d->sample_numel, n, classes, T,
			      out + (size_t)i * (size_t)classes, ttmp);
		/* A safe point: nothing of the model has changed yet. */
		if (mc_interrupted())
			break;
	}
	free_execs(e, t->k);
	if (share) {
		ret = mc_dist_gather(out, d->n, KD_EVAL_BATCH, (size_t)classes * sizeof(float), err);
		if (ret)
			return ret;
	}
	if (mc_interrupted())
		return mc_err_set(err, MC_EINTR, "teacher targets: interrupted by signal %d",
				  mc_interrupted());
	return 0;
}

static float kd_hook_loss(void *arg, const float *x, const float *logits, const int64_t *idx, int n,
			  int classes, float *dlogits)
{
	struct kd_run *r = arg;
	size_t cs = (size_t)classes * sizeof(float);

	for (int i = 0; i < n; i++) {
		r->blabels[i] = r->d->y[idx[i]];
		if (r->targets)
			memcpy(r->btarget + (size_t)i * classes,
			       r->targets + (size_t)idx[i] * classes, cs);
	}
	/* Uncached (or augmented): the teachers see exactly the student's batch. */
	if (!r->targets)
		batch_targets(r->t, r->tex, x, n, classes, r->T, r->btarget, r->ttmp);
	return kd_loss(logits, r->btarget, r->blabels, n, classes, r->T, r->alpha, dlogits, r->tmp);
}

/* Logs an epoch's mean loss and, when r->ev is set, the accuracy on it. */
static int kd_hook_epoch(void *arg, struct mc_model *m, int epoch, double loss, struct mc_err *err)
{
	const struct kd_run *r = arg;
	double acc;
	int ret;

	if (!r->ev) {
		mc_ctx_log(r->ctx, "%sepoch %d/%d: loss %.4f", r->tag, epoch + 1, r->epochs, loss);
		return 0;
	}
	ret = mc_evaluate(m, r->ev, KD_EVAL_BATCH, &acc, NULL, err);
	if (!ret)
		mc_ctx_log(r->ctx, "%sepoch %d/%d: loss %.4f, %s accuracy %.2f%%", r->tag,
			   epoch + 1, r->epochs, loss, r->ev_name, 100 * acc);
	return ret;
}

/* "'a'" for one teacher, else "teachers 'a', 'b' (weights 0.5, 0.5; combine probs)". */
static void describe(const struct kd_teachers *t, char *buf, size_t size)
{
	size_t len = 0;

	buf[0] = 0;
	if (t->k == 1) {
		snprintf(buf, size, "'%s'", t->name[0]);
		return;
	}
	for (int i = 0; i < t->k && len < size; i++)
		len += (size_t)snprintf(buf + len, size - len, "%s'%s'", i ? ", " : "teachers ",
					t->name[i]);
	for (int i = 0; i < t->k && len < size; i++)
		len += (size_t)snprintf(buf + len, size - len, "%s%.3g", i ? ", " : " (weights ",
					t->w[i]);
	if (len < size)
		snprintf(buf + len, size - len, "; combine %s)", kd_combine_names[t->combine]);
}

int kd_distill(struct mc_ctx *ctx, struct mc_model *s, const char *sname,
	       const struct kd_teachers *t, const struct mc_dataset *d,
	       const struct mc_train_conf *tc, double T, double alpha,
	       const struct mc_dataset *ev, const char *ev_name, const char *tag)
{
	struct mc_err *err = mc_ctx_err(ctx);
	struct mc_train_hooks hooks = { .loss = kd_hook_loss, .after_epoch = kd_hook_epoch };
	struct kd_run r = { .ctx = ctx, .d = d, .ev = ev, .ev_name = ev_name,
			     .epochs = tc->epochs, .t = t, .T = (float)T, .alpha = (float)alpha,
			     .tag = tag };
	char what[1024], who[1100];
	size_t np, bp;
	int ret;

	r.classes = (int)mc_model_n_classes(s);
	describe(t, what, sizeof(what));
	if (t->k == 1)
		snprintf(who, sizeof(who), "teacher %s outputs", what);
	else
		snprintf(who, sizeof(who), "the targets of %s", what);
	if (mc_mul_overflow((size_t)d->n, (size_t)r.classes * sizeof(float), &np))
		np = SIZE_MAX;
	bp = (size_t)tc->batch_size * (size_t)r.classes;
	r.btarget = mc_calloc(bp, sizeof(float));
	r.tmp = mc_calloc(bp, sizeof(float));
	r.blabels = mc_calloc((size_t)tc->batch_size, 1);
	r.ttmp = mc_calloc((size_t)t->k * (size_t)r.classes, sizeof(float));
	if (!r.btarget || !r.tmp || !r.blabels || !r.ttmp) {
		ret = mc_err_set(err, MC_ENOMEM, "out of memory for batches of %d", tc->batch_size);
		goto out;
	}
	if (!tc->shift && !tc->hflip && np <= KD_CACHE_MAX &&
	    (r.targets = mc_calloc(np / sizeof(float), sizeof(float)))) {
		int share = tc->grad_groups > 0 && mc_dist_ranks() > 1;

		ret = split_targets(t, d, r.classes, r.T, share, (float *)r.targets, r.ttmp, err);
		if (ret)
			goto out;
		mc_ctx_log(ctx, "%s%s computed once for %lld samples (%.1f MiB)%s", tag, who,
			   (long long)d->n, (double)np / (1 << 20),
			   share ? ", shared out over the ranks" : "");
	} else {
		ret = teacher_execs(t, tc->batch_size, r.tex, err);
		if (ret)
			goto out;
		if (tc->shift || tc->hflip)
			mc_ctx_log(ctx, "%s%s computed per batch, on the augmented images the "
				   "student sees", tag, who);
		else
			mc_ctx_log(ctx, "%s%s do not fit in memory; computed per batch", tag, who);
	}
	hooks.arg = &r;
	mc_ctx_log(ctx, "%sdistilling %s into '%s': T %g, alpha %g, %d epochs", tag, what, sname,
		   T, alpha, tc->epochs);
	ret = mc_ctx_train(ctx, s, d, tc, &hooks);
out:
	free_execs(r.tex, t->k);
	mc_free((float *)r.targets);
	mc_free(r.btarget);
	mc_free(r.tmp);
	mc_free(r.blabels);
	mc_free(r.ttmp);
	return ret;
}

int kd_ensemble_accuracy(const struct kd_teachers *t, const struct mc_dataset *d, double *acc,
			 double *member, struct mc_err *err)
{
	int classes = (int)mc_model_n_classes(t->m[0]);
	struct mc_exec *e[KD_MAX_TEACHERS];
	float *out = mc_calloc((size_t)KD_EVAL_BATCH * (size_t)classes, sizeof(float));
	float *ttmp = mc_calloc((size_t)t->k * (size_t)classes, sizeof(float));
	int64_t correct = 0, mc[KD_MAX_TEACHERS] = { 0 };
	int ret;

	if (!out || !ttmp) {
		ret = mc_err_set(err, MC_ENOMEM, "out of memory evaluating the ensemble");
		goto out;
	}
	ret = teacher_execs(t, KD_EVAL_BATCH, e, err);
	if (ret)
		goto out;
	for (int64_t b0 = 0; b0 < d->n; b0 += KD_EVAL_BATCH) {
		int n = (int)(d->n - b0 < KD_EVAL_BATCH ? d->n - b0 : KD_EVAL_BATCH);
		const float *z[KD_MAX_TEACHERS];

		for (int k = 0; k < t->k; k++)
			z[k] = mc_forward(e[k], d->x + (size_t)b0 * (size_t)d->sample_numel, n);
		kd_targets(t->combine, z, t->w, t->k, n, classes, 1, out, ttmp);
		for (int i = 0; i < n; i++) {
			size_t row = (size_t)i * (size_t)classes;

			correct += mc_argmax(out + row, classes) == d->y[b0 + i];
			for (int k = 0; k < t->k; k++)
				mc[k] += mc_argmax(z[k] + row, classes) == d->y[b0 + i];
		}
		if (mc_interrupted()) {
			ret = mc_err_set(err, MC_EINTR, "evaluating the teachers: interrupted by "
					 "signal %d", mc_interrupted());
			free_execs(e, t->k);
			goto out;
		}
	}
	free_execs(e, t->k);
	*acc = d->n ? (double)correct / (double)d->n : 0;
	for (int k = 0; member && k < t->k; k++)
		member[k] = d->n ? (double)mc[k] / (double)d->n : 0;
out:
	mc_free(out);
	mc_free(ttmp);
	return ret;
}

/* Trains baseline (a copy of the student's initial weights, named sname) on
 * labels alone with tc: the scratch comparison, logged per epoch as
 * kd_distill logs. */
static int train_scratch(struct mc_ctx *ctx, struct mc_model *baseline, const char *sname,
			 const struct mc_dataset *d, const struct mc_train_conf *tc,
			 const struct mc_dataset *ev, const char *ev_name)
{
	struct kd_run r = { .ctx = ctx, .ev = ev, .ev_name = ev_name, .epochs = tc->epochs,
			     .tag = "scratch: " };
	struct mc_train_hooks hooks = { .arg = &r, .after_epoch = kd_hook_epoch };

	mc_ctx_log(ctx, "training '%s' from scratch on labels alone for comparison", sname);
	return mc_ctx_train(ctx, baseline, d, tc, &hooks);
}

void kd_report_scratch(struct mc_ctx *ctx, const char *ev_name, double s_acc, double sc_acc)
{
	mc_ctx_log(ctx, "%s accuracy: distilled %.2f%%, from scratch %.2f%% (%+.2f pt)", ev_name,
		   100 * s_acc, 100 * sc_acc, 100 * (s_acc - sc_acc));
	mc_ctx_report(ctx, "scratch_accuracy", sc_acc);
	mc_ctx_report(ctx, "gain_over_scratch", s_acc - sc_acc);
}

/* ---------------------------------------------------------------- cost */

/* One forward of every member of t on x[n], their outputs combined at T = 1
 * into out (ttmp as kd_targets wants) when there are several: what running
 * the ensemble costs, timed by mc_time_median. */
struct members_job {
	const struct kd_teachers *t;
	struct mc_exec **e;
	const float *x;
	int n;
	float *out, *ttmp;
};

static void run_members(void *arg)
{
	const struct members_job *j = arg;
	const struct kd_teachers *t = j->t;
	const float *z[KD_MAX_TEACHERS];

	for (int i = 0; i < t->k; i++)
		z[i] = mc_forward(j->e[i], j->x, j->n);
	if (t->k > 1)
		kd_targets(t->combine, z, t->w, t->k, j->n, (int)mc_model_n_classes(t->m[0]), 1, j->out,
			   j->ttmp);
}

int kd_cost(const struct kd_teachers *t, const struct mc_dataset *d, struct kd_cost *cost,
	    struct mc_err *err)
{
	const int big = 256;
	int classes = (int)mc_model_n_classes(t->m[0]);
	struct mc_exec *e[KD_MAX_TEACHERS] = { 0 };
	float *x = mc_calloc((size_t)big * (size_t)d->sample_numel, sizeof(float));
	float *out = mc_calloc((size_t)big * (size_t)classes, sizeof(float));
	float *ttmp = mc_calloc((size_t)t->k * (size_t)classes, sizeof(float));
	struct members_job job = { .t = t, .e = e, .x = x, .out = out, .ttmp = ttmp };
	int ret = 0;

	memset(cost, 0, sizeof(*cost));
	if (!x || !out || !ttmp) {
		ret = mc_err_set(err, MC_ENOMEM, "out of memory measuring latency");
		goto out;
	}
	for (int i = 0; i < t->k; i++) {
		void *buf;
		size_t len;

		ret = mc_model_serialize(t->m[i], &buf, &len, err);
		if (ret)
			goto out;
		free(buf);
		cost->bytes += (int64_t)len;
		cost->flops += mc_model_flops(t->m[i]);
		e[i] = mc_exec_new(t->m[i], big, 0, err);
		if (!e[i]) {
			ret = err->code;
			goto out;
		}
	}
	memcpy(x, d->x, (size_t)(d->n < big ? d->n : big) * (size_t)d->sample_numel * sizeof(float));
	/* at batch 1 and 256, timed as the host times one model (core/measure.c) */
	job.n = 1;
	cost->latency1_ms = mc_time_median(run_members, &job, 20, 200, 0.2);
	job.n = big;
	cost->latency256_ms = mc_time_median(run_members, &job, 5, 200, 0.5);
out:
	for (int i = 0; i < t->k; i++)
		mc_exec_free(e[i]);
	mc_free(x);
	mc_free(out);
	mc_free(ttmp);
	return ret;
}

void kd_report_costs(struct mc_ctx *ctx, const char *what, double s_acc, const struct kd_cost *sc,
		     double o_acc, const struct kd_cost *oc)
{
	char key[64];

	mc_ctx_log(ctx, "  %-9s %9s %12s %14s %13s %15s", "", "accuracy", "bytes", "FLOPs/sample",
		   "batch-1 ms", "batch-256 ms");
	mc_ctx_log(ctx, "  %-9s %8.2f%% %12lld %14lld %13.3f %15.3f", "student", 100 * s_acc,
		   (long long)sc->bytes, (long long)sc->flops, sc->latency1_ms, sc->latency256_ms);
	mc_ctx_log(ctx, "  %-9s %8.2f%% %12lld %14lld %13.3f %15.3f", what, 100 * o_acc,
		   (long long)oc->bytes, (long long)oc->flops, oc->latency1_ms, oc->latency256_ms);
	mc_ctx_log(ctx, "the student is %.1fx smaller, needs %.1fx fewer FLOPs and runs %.1fx "
		   "faster at batch 1 (%.1fx at batch 256) than the %s",
		   (double)oc->bytes / (double)sc->bytes, (double)oc->flops / (double)sc->flops,
		   oc->latency1_ms / sc->latency1_ms, oc->latency256_ms / sc->latency256_ms, what);
	snprintf(key, sizeof(key), "%s_bytes", what);
	mc_ctx_report(ctx, key, (double)oc->bytes);
	snprintf(key, sizeof(key), "%s_flops", what);
	mc_ctx_report(ctx, key, (double)oc->flops);
	snprintf(key, sizeof(key), "%s_latency1_ms", what);
	mc_ctx_report(ctx, key, oc->latency1_ms);
	snprintf(key, sizeof(key), "%s_latency256_ms", what);
	mc_ctx_report(ctx, key, oc->latency256_ms);
}

void kd_train_conf(struct mc_ctx *ctx, const struct kd_opts *ko, const char *sname,
		   struct mc_train_conf *tc)
{
	*tc = (struct mc_train_conf){
		.epochs = ko->epochs,
		.batch_size = ko->batch_size,
		.seed = ko->seed >= 0 ? (uint64_t)ko->seed : mc_ctx_seed(ctx),
		.label = sname,
		.grad_groups = ko->grad_groups,
	};
	mc_train_opts_apply(&ko->train, tc);
}

int kd_train_student(struct mc_ctx *ctx, struct mc_model *s, const char *sname,
		     const struct kd_teachers *t, const struct mc_dataset *d,
		     const struct kd_opts *ko, const struct mc_train_conf *tc, struct kd_outcome *o)
{
	struct mc_err *err = mc_ctx_err(ctx);
	struct kd_teachers self = { .k = 1, .m = { s }, .name = { sname }, .w = { 1 } };
	struct mc_model *baseline = NULL;
	int ret;

	memset(o, 0, sizeof(*o));
	o->sc_acc = -1;
	if (ko->compare_scratch) {
		baseline = mc_model_dup(s, err);
		if (!baseline)
			return err->code;
	}
	o->ev = mc_ctx_eval_data(ctx, d, ko->data, &o->ev_name);
	if (!o->ev) {
		ret = err->code;
		goto out;
	}
	ret = kd_distill(ctx, s, sname, t, d, tc, ko->temperature, ko->alpha, o->ev, o->ev_name,
			 "");
	if (!ret && baseline)
		ret = train_scratch(ctx, baseline, sname, d, tc, o->ev, o->ev_name);
	if (!ret)
		ret = mc_evaluate(s, o->ev, KD_EVAL_BATCH, &o->s_acc, NULL, err);
	if (!ret && baseline)
		ret = mc_evaluate(baseline, o->ev, KD_EVAL_BATCH, &o->sc_acc, NULL, err);
	/* the student's cost on the same footing as its teachers' */
	if (!ret)
		ret = kd_cost(&self, o->ev, &o->scost, err);
out:
	mc_model_free(baseline);
	return ret;
}
