/* SPDX-License-Identifier: MIT */
/*
 * train - trains a model of the pipeline on a data split with SGD or Adam.
 */
#include <math.h>
#include <stdlib.h>

#include <mcomp/mcomp.h>

#define EVAL_BATCH 256

struct train_conf {
	char *model;
	char *data;
	int epochs;
	int batch_size;
	struct mc_train_opts opts;
	int seed;
	int grad_groups;
	struct mc_checkpoint_opts ckpt;
};

static const struct mc_param_def train_params[] = {
	MC_PARAM_MODEL(struct train_conf, model, NULL, "the model to train (a name under models:)"),
	MC_PARAM_SPLIT(struct train_conf, data, "train", "the data split to train on"),
	MC_PARAM_INT(struct train_conf, epochs, "5", 1, 100000, "passes over the data"),
	MC_PARAM_INT(struct train_conf, batch_size, "128", 1, 65536, "samples per update"),
	MC_TRAIN_PARAMS(struct train_conf, opts, "0.001", "constant"),
	MC_PARAM_INT(struct train_conf, seed, "-1", -1, 2147483647,
		     "shuffling seed; -1 uses the pipeline's seed"),
	MC_GRAD_GROUPS_PARAM(struct train_conf, grad_groups, "", ""),
	MC_CHECKPOINT_PARAMS(struct train_conf, ckpt),
	MC_PARAM_END,
};

/* grad_groups must divide the batch into equal groups, and the ranks of an
 * MPI job must take equal shares of the groups. */
static int train_check(struct mc_ctx *ctx, const void *conf)
{
	const struct train_conf *c = conf;

	return mc_ctx_check_grad_groups(ctx, c->grad_groups, c->batch_size);
}

/*
 * The trained model's accuracy and loss on d, as mc_evaluate in batches of
 * EVAL_BATCH gives them, with the batches shared out over the ranks of an
 * MPI job (mc_dist_part) rather than repeated by each: every rank takes
 * its own batches, one mc_evaluate each, the per-batch loss sums and
 * correct counts go to every rank (mc_dist_gather), and every rank adds
 * them up in batch order, as one mc_evaluate over d does: the same bytes
 * for any rank count.
 */
static int train_evaluate(struct mc_ctx *ctx, const struct mc_model *m,
			  const struct mc_dataset *d, double *acc, double *loss)
{
	int64_t nb = (d->n + EVAL_BATCH - 1) / EVAL_BATCH, lo, hi, correct = 0;
	double *per, loss_sum = 0;
	int ret = 0;

	if (mc_dist_ranks() == 1 || d->n < 1)
		return mc_evaluate(m, d, EVAL_BATCH, acc, loss, mc_ctx_err(ctx));
	per = calloc((size_t)nb * 2, sizeof(*per)); /* [loss sum, correct] per batch */
	if (!per)
		return mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
	mc_dist_part(nb, 1, &lo, &hi);
	/* a rank that fails or is stopped still takes part in the gather, so
	 * that the others do not wait for it */
	for (int64_t b = lo; b < hi && !ret; b++) {
		struct mc_dataset v = *d;
		double a, l;

		v.x = d->x + (size_t)(b * EVAL_BATCH) * (size_t)d->sample_numel;
		v.y = d->y + b * EVAL_BATCH;
		v.n = d->n - b * EVAL_BATCH < EVAL_BATCH ? d->n - b * EVAL_BATCH : EVAL_BATCH;
		ret = mc_evaluate(m, &v, EVAL_BATCH, &a, &l, mc_ctx_err(ctx));
		/* mc_evaluate gives (double)batch loss * n / n and correct / n:
		 * both come back exactly */
		per[2 * b] = l * (double)v.n;
		per[2 * b + 1] = nearbyint(a * (double)v.n);
	}
	if (mc_dist_gather(per, nb, 1, 2 * sizeof(*per), ret ? NULL : mc_ctx_err(ctx)) && !ret)
		ret = mc_ctx_err(ctx)->code;
	for (int64_t b = 0; b < nb && !ret; b++) {
		loss_sum += per[2 * b];
		correct += (int64_t)per[2 * b + 1];
	}
	free(per);
	if ((!ret || ret == MC_EINTR) && mc_interrupted())
		ret = mc_ctx_error(ctx, NULL, MC_EINTR, "evaluation: interrupted by signal %d",
				   mc_interrupted());
	if (ret)
		return ret;
	*acc = (double)correct / (double)d->n;
	*loss = loss_sum / (double)d->n;
	return 0;
}

static int train_run(struct mc_ctx *ctx, const void *conf)
{
	const struct train_conf *c = conf;
	struct mc_model *m = mc_ctx_model(ctx, c->model);
	const struct mc_dataset *d = mc_ctx_data(ctx, c->data);
	struct mc_train_conf tc = {
		.epochs = c->epochs,
		.batch_size = c->batch_size,
		.seed = c->seed >= 0 ? (uint64_t)c->seed : mc_ctx_seed(ctx),
		.label = c->model,
		.grad_groups = c->grad_groups,
	};
	double acc, loss;
	int ret;

	mc_train_opts_apply(&c->opts, &tc);
	if (!d)
		return mc_ctx_err(ctx)->code;
	if (d->sample_numel != mc_model_in_numel(m))
		return mc_ctx_error(ctx, "data", MC_ERUN,
				    "split '%s' has samples of %lld values but model '%s' takes "
				    "%lld; build the model with a matching input",
				    c->data, (long long)d->sample_numel, c->model,
				    (long long)mc_model_in_numel(m));
	if (d->n_classes > mc_model_n_classes(m))
		return mc_ctx_error(ctx, "data", MC_ERUN,
				    "split '%s' has %d classes but model '%s' outputs %lld; make "
				    "its last layer at least that wide",
				    c->data, d->n_classes, c->model, (long long)mc_model_n_classes(m));
	ret = mc_ctx_train(ctx, m, d, &tc, NULL);
	if (ret)
		return ret;
	ret = train_evaluate(ctx, m, d, &acc, &loss);
	if (ret)
		return ret;
	mc_ctx_log(ctx, "%s: %d epochs, %s accuracy %.2f%%, loss %.4f", c->model, c->epochs,
		   c->data, 100 * acc, loss);
	mc_ctx_report(ctx, "train_accuracy", acc);
	mc_ctx_report(ctx, "train_loss", loss);
	return 0;
}

static const struct mc_pass train_pass = {
	.abi = MC_PASS_ABI,
	.name = "train",
	.version = "1.0",
	.description = "train a model on a data split (cross-entropy, SGD or Adam)",
	.license = "MIT",
	.author = "the mcomp developers",
	.conf_size = sizeof(struct train_conf),
	.params = train_params,
	.check = train_check,
	.run = train_run,
};
MC_PASS_DEFINE(train_pass);
