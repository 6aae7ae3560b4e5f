/* SPDX-License-Identifier: MIT */
/*
 * train - trains a model of the pipeline on a data split with SGD or Adam.
 */
#include <mcomp/mcomp.h>

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
	double acc, loss, t0;
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
	t0 = mc_now();
	ret = mc_ctx_train(ctx, m, d, &tc, NULL);
	if (ret)
		return ret;
	/* the training loop alone: the step's "seconds" also hold loading the
	 * data and the evaluation below (throughput = samples / train_seconds) */
	mc_ctx_report(ctx, "train_seconds", mc_now() - t0);
	/* the ranks of an MPI job share the batches out (the same figures) */
	ret = mc_evaluate_shared(m, d, 256, &acc, &loss, mc_ctx_err(ctx));
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
