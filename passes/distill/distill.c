/* SPDX-License-Identifier: MIT */
/*
 * distill - trains a student model from a teacher's softened outputs
 * (knowledge distillation, Hinton et al. 2015):
 *
 *	loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
 *	     + (1 - alpha) * CE(y, z_s)
 *
 * The teacher's probabilities are computed once for the whole split when
 * they fit in memory, else per batch. With compare_scratch the same student
 * (same initial weights, seed and budget) is also trained on labels alone, and
 * both accuracies are reported side by side.
 */
#include <stdlib.h>
#include <string.h>

#include <mcomp/mcomp.h>

struct distill_conf {
	char *student;
	char *teacher;
	char *data;
	double temperature;
	double alpha;
	int epochs;
	int batch_size;
	struct mc_train_opts opts;
	int seed;
	int compare_scratch;
};


/* The student comes first: the host measures a pass's first model parameter. */
static const struct mc_param_def distill_params[] = {
	MC_PARAM_MODEL(struct distill_conf, student, NULL,
		       "the model to train (a name under models:); replaced by the distilled one"),
	MC_PARAM_MODEL(struct distill_conf, teacher, NULL,
		       "the trained model whose outputs the student learns from"),
	MC_PARAM_SPLIT(struct distill_conf, data, "train", "the data split to train on"),
	MC_PARAM_FLOAT(struct distill_conf, temperature, "2", 0.01, 100,
		       "softening temperature T of both softmaxes in the soft term"),
	MC_PARAM_FLOAT(struct distill_conf, alpha, "0.5", 0, 1,
		       "weight of the soft (teacher) term; 1 - alpha weighs the labels"),
	MC_PARAM_INT(struct distill_conf, epochs, "20", 1, 100000, "passes over the data"),
	MC_PARAM_INT(struct distill_conf, batch_size, "128", 1, 65536, "samples per update"),
	MC_TRAIN_PARAMS(struct distill_conf, opts, "0.001", "cosine"),
	MC_PARAM_INT(struct distill_conf, seed, "-1", -1, 2147483647,
		     "shuffling seed; -1 uses the pipeline's seed"),
	MC_PARAM_BOOL(struct distill_conf, compare_scratch, "false",
		      "also train the student's initial weights on labels alone (same seed and "
		      "budget) and report both accuracies"),
	MC_PARAM_END,
};

/* Teacher probabilities are kept for the whole split up to this size. */
#define DISTILL_CACHE_MAX ((size_t)1 << 30)
#define EVAL_BATCH 256

/*
 * The combined loss of a batch: alpha * mc_kd_loss(z_s, p_t, T) + (1 - alpha)
 * * CE(y, z_s), with its gradient in dlogits; tmp holds n * classes floats.
 */
static float distill_loss(const float *logits, const float *tprobs, const uint8_t *labels,
			  int n, int classes, float T, float alpha, float *dlogits, float *tmp)
{
	float kd = 0, ce = 0;
	int64_t k = (int64_t)n * classes;

	if (alpha > 0)
		kd = mc_kd_loss(logits, tprobs, n, classes, T, tmp);
	else
		memset(tmp, 0, (size_t)k * sizeof(*tmp));
	ce = mc_softmax_xent(logits, labels, n, classes, dlogits);
	for (int64_t i = 0; i < k; i++)
		dlogits[i] = alpha * tmp[i] + (1 - alpha) * dlogits[i];
	return alpha * kd + (1 - alpha) * ce;
}

struct distill_run {
	struct mc_ctx *ctx;
	const struct mc_dataset *d;
	const float *probs;	/* [d->n, classes] when cached, else NULL */
	struct mc_exec *tex;	/* teacher executor when not cached */
	float T, alpha;
	int classes;
	float *bprobs;		/* [batch, classes] */
	uint8_t *blabels;	/* [batch] */
	float *tmp;		/* [batch, classes] */
};

static float distill_hook_loss(void *arg, const float *x, const float *logits,
			       const int64_t *idx, int n, int classes, float *dlogits)
{
	struct distill_run *r = arg;
	size_t cs = (size_t)classes * sizeof(float);

	for (int i = 0; i < n; i++) {
		r->blabels[i] = r->d->y[idx[i]];
		if (r->probs)
			memcpy(r->bprobs + (size_t)i * classes, r->probs + (size_t)idx[i] * classes,
			       cs);
	}
	/* Uncached (or augmented): the teacher sees exactly the student's batch. */
	if (!r->probs)
		mc_softmax_t(mc_forward(r->tex, x, n), n, classes, r->T, r->bprobs);
	return distill_loss(logits, r->bprobs, r->blabels, n, classes, r->T, r->alpha, dlogits,
			    r->tmp);
}

static int distill_hook_epoch(void *arg, struct mc_model *m, int epoch, double loss,
			      struct mc_err *err)
{
	struct distill_run *r = arg;

	(void)m, (void)err;
	mc_ctx_log(r->ctx, "epoch %d: loss %.4f", epoch + 1, loss);
	return 0;
}

/* Softened teacher probabilities for every sample of d into probs[d->n, classes]. */
static int teacher_probs(const struct mc_model *t, const struct mc_dataset *d, float T,
			 float *probs, struct mc_err *err)
{
	struct mc_exec *e = mc_exec_new(t, EVAL_BATCH, 0, err);

	if (!e)
		return err->code;
	for (int64_t i = 0; i < d->n; i += EVAL_BATCH) {
		int n = (int)(d->n - i < EVAL_BATCH ? d->n - i : EVAL_BATCH);
		const float *z = mc_forward(e, d->x + (size_t)i * (size_t)d->sample_numel, n);

		mc_softmax_t(z, n, (int)t->n_classes, T, probs + (size_t)i * (size_t)t->n_classes);
	}
	mc_exec_free(e);
	return 0;
}

/* The same input and class count, or an error at the key of the model at fault. */
static int check_pair(struct mc_ctx *ctx, const struct distill_conf *c, const struct mc_model *s,
		      const struct mc_model *t)
{
	if (s->in_numel != t->in_numel)
		return mc_ctx_error(ctx, "student", MC_EINVAL,
				    "student '%s' takes %lld input values but teacher '%s' takes "
				    "%lld; build both for the same data",
				    c->student, (long long)s->in_numel, c->teacher,
				    (long long)t->in_numel);
	if (s->n_classes != t->n_classes)
		return mc_ctx_error(ctx, "student", MC_EINVAL,
				    "student '%s' outputs %lld classes but teacher '%s' outputs "
				    "%lld; make the student's last layer %lld wide",
				    c->student, (long long)s->n_classes, c->teacher,
				    (long long)t->n_classes, (long long)t->n_classes);
	return 0;
}

static int distill_check(struct mc_ctx *ctx, const void *conf)
{
	const struct distill_conf *c = conf;
	const struct mc_model *s = mc_ctx_model(ctx, c->student);
	const struct mc_model *t = mc_ctx_model(ctx, c->teacher);

	if (!s || !t)
		return 0; /* the host has said so */
	if (strcmp(c->student, c->teacher) == 0)
		return mc_ctx_error(ctx, "teacher", MC_EINVAL,
				    "the teacher is the student '%s'; name another model",
				    c->student);
	return check_pair(ctx, c, s, t);
}

/* The split accuracy is measured on: "test" when the pipeline has one, else data. */
static const struct mc_dataset *eval_split(struct mc_ctx *ctx, const struct distill_conf *c,
					   const struct mc_dataset *d, const char **name)
{
	const struct mc_dataset *test = mc_ctx_data(ctx, "test");

	if (test) {
		*name = "test";
		return test;
	}
	if (mc_ctx_err(ctx)->code != MC_EINVAL)
		return NULL; /* there is one but it cannot be read */
	memset(mc_ctx_err(ctx), 0, sizeof(struct mc_err));
	*name = c->data;
	return d;
}

static int distill_run(struct mc_ctx *ctx, void *state, const void *conf)
{
	const struct distill_conf *c = conf;
	struct mc_model *s = mc_ctx_model(ctx, c->student);
	const struct mc_model *t = mc_ctx_model(ctx, c->teacher);
	const struct mc_dataset *d = mc_ctx_data(ctx, c->data), *ev;
	struct mc_err *err = mc_ctx_err(ctx);
	struct mc_train_conf tc = {
		.epochs = c->epochs,
		.batch_size = c->batch_size,
		.seed = c->seed >= 0 ? (uint64_t)c->seed : mc_ctx_seed(ctx),
		.label = c->student,
	};
	struct mc_train_hooks hooks = { .loss = distill_hook_loss,
					.after_epoch = distill_hook_epoch };
	struct distill_run r = { .ctx = ctx, .d = d, .T = (float)c->temperature,
				 .alpha = (float)c->alpha };
	struct mc_model *baseline = NULL;
	double s_acc, t_acc, sc_acc = -1;
	const char *ev_name = NULL;
	size_t np, bp;
	int ret;

	(void)state;
	mc_train_opts_apply(&c->opts, &tc);
	if (!d)
		return err->code;
	ret = check_pair(ctx, c, s, t);
	if (ret)
		return ret;
	if (d->sample_numel != s->in_numel)
		return mc_ctx_error(ctx, "data", MC_ERUN,
				    "split '%s' has samples of %lld values but the models take "
				    "%lld; build them with a matching input",
				    c->data, (long long)d->sample_numel, (long long)s->in_numel);
	if (d->n_classes > s->n_classes || s->n_classes > 65536)
		return mc_ctx_error(ctx, "data", MC_ERUN,
				    "split '%s' has %d classes but the models output %lld; make "
				    "their last layers at least that wide",
				    c->data, d->n_classes, (long long)s->n_classes);
	r.classes = (int)s->n_classes;
	if (mc_mul_overflow((size_t)d->n, (size_t)r.classes * sizeof(float), &np))
		np = SIZE_MAX;
	bp = (size_t)c->batch_size * (size_t)r.classes;
	r.bprobs = mc_calloc(bp, sizeof(float));
	r.tmp = mc_calloc(bp, sizeof(float));
	r.blabels = mc_calloc((size_t)c->batch_size, 1);
	if (!r.bprobs || !r.tmp || !r.blabels) {
		ret = mc_err_set(err, MC_ENOMEM, "out of memory for batches of %d", c->batch_size);
		goto out;
	}
	if (!tc.shift && !tc.hflip && np <= DISTILL_CACHE_MAX &&
	    (r.probs = mc_calloc(np / sizeof(float), sizeof(float)))) {
		ret = teacher_probs(t, d, r.T, (float *)r.probs, err);
		if (ret)
			goto out;
		mc_ctx_log(ctx, "teacher '%s' outputs computed once for %lld samples (%.1f MiB)",
			   c->teacher, (long long)d->n, (double)np / (1 << 20));
	} else {
		r.tex = mc_exec_new(t, c->batch_size, 0, err);
		if (!r.tex) {
			ret = err->code;
			goto out;
		}
		if (tc.shift || tc.hflip)
			mc_ctx_log(ctx, "teacher '%s' outputs computed per batch, on the "
				   "augmented images the student sees", c->teacher);
		else
			mc_ctx_log(ctx, "teacher '%s' outputs do not fit in memory; computed "
				   "per batch", c->teacher);
	}
	if (c->compare_scratch) {
		baseline = mc_model_dup(s, err);
		if (!baseline) {
			ret = err->code;
			goto out;
		}
	}
	hooks.arg = &r;
	mc_ctx_log(ctx, "distilling '%s' into '%s': T %g, alpha %g, %d epochs", c->teacher,
		   c->student, c->temperature, c->alpha, c->epochs);
	ret = mc_train(s, d, &tc, &hooks, err);
	if (ret)
		goto out;
	if (baseline) {
		mc_ctx_log(ctx, "training '%s' from scratch on labels alone for comparison",
			   c->student);
		ret = mc_train(baseline, d, &tc, NULL, err);
		if (ret)
			goto out;
	}
	ev = eval_split(ctx, c, d, &ev_name);
	if (!ev) {
		ret = err->code;
		goto out;
	}
	ret = mc_evaluate(s, ev, EVAL_BATCH, &s_acc, NULL, err);
	if (!ret)
		ret = mc_evaluate(t, ev, EVAL_BATCH, &t_acc, NULL, err);
	if (!ret && baseline)
		ret = mc_evaluate(baseline, ev, EVAL_BATCH, &sc_acc, NULL, err);
	if (ret)
		goto out;
	mc_ctx_log(ctx, "%s accuracy: student %.2f%%, teacher %.2f%%, gap %.2f pt", ev_name,
		   100 * s_acc, 100 * t_acc, 100 * (t_acc - s_acc));
	mc_ctx_report(ctx, "student_accuracy", s_acc);
	mc_ctx_report(ctx, "teacher_accuracy", t_acc);
	mc_ctx_report(ctx, "gap", t_acc - s_acc);
	if (baseline) {
		mc_ctx_log(ctx, "%s accuracy: distilled %.2f%%, from scratch %.2f%% (%+.2f pt)",
			   ev_name, 100 * s_acc, 100 * sc_acc, 100 * (s_acc - sc_acc));
		mc_ctx_report(ctx, "scratch_accuracy", sc_acc);
		mc_ctx_report(ctx, "gain_over_scratch", s_acc - sc_acc);
	}
out:
	mc_model_free(baseline);
	mc_exec_free(r.tex);
	mc_free((float *)r.probs);
	mc_free(r.bprobs);
	mc_free(r.tmp);
	mc_free(r.blabels);
	return ret;
}

static const struct mc_pass distill_pass = {
	.abi = MC_PASS_ABI,
	.name = "distill",
	.version = "1.0",
	.description = "train a student model from a teacher's softened outputs (knowledge "
		       "distillation), optionally beside the same student trained from scratch",
	.license = "MIT",
	.author = "the mcomp developers",
	.conf_size = sizeof(struct distill_conf),
	.params = distill_params,
	.check = distill_check,
	.run = distill_run,
};
MC_PASS_DEFINE(distill_pass);
