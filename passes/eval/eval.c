/* SPDX-License-Identifier: MIT */
/*
 * eval - measures a model's accuracy and loss on a data split (shared out
 * over the ranks of an MPI job).
 */
#include <mcomp/mcomp.h>

struct eval_conf {
	char *model;
	char *data;
	int batch_size;
};

static const struct mc_param_def eval_params[] = {
	MC_PARAM_MODEL(struct eval_conf, model, NULL, "the model to evaluate"),
	MC_PARAM_SPLIT(struct eval_conf, data, "test", "the data split to evaluate on"),
	MC_PARAM_INT(struct eval_conf, batch_size, "256", 1, 65536, "samples per forward"),
	MC_PARAM_END,
};

static int eval_run(struct mc_ctx *ctx, const void *conf)
{
	const struct eval_conf *c = conf;
	struct mc_model *m = mc_ctx_model(ctx, c->model);
	const struct mc_dataset *d = mc_ctx_data(ctx, c->data);
	double acc, loss;
	int ret;

	if (!d)
		return mc_ctx_err(ctx)->code;
	if (d->sample_numel != mc_model_in_numel(m))
		return mc_ctx_error(ctx, "data", MC_ERUN,
				    "split '%s' has samples of %lld values but model '%s' takes %lld",
				    c->data, (long long)d->sample_numel, c->model,
				    (long long)mc_model_in_numel(m));
	/* under mpirun every rank runs this pass: each evaluates its share of the
	 * batches, and the sums are added in batch order (the same figures) */
	ret = mc_evaluate_shared(m, d, c->batch_size, &acc, &loss, mc_ctx_err(ctx));
	if (ret)
		return ret;
	mc_ctx_log(ctx, "%s on %s: accuracy %.2f%%, loss %.4f", c->model, c->data, 100 * acc, loss);
	mc_ctx_report(ctx, "accuracy", acc);
	mc_ctx_report(ctx, "loss", loss);
	return 0;
}

static const struct mc_pass eval_pass = {
	.abi = MC_PASS_ABI,
	.name = "eval",
	.version = "1.0",
	.description = "measure accuracy and loss of a model on a data split",
	.license = "MIT",
	.author = "the mcomp developers",
	.conf_size = sizeof(struct eval_conf),
	.params = eval_params,
	.run = eval_run,
};
MC_PASS_DEFINE(eval_pass);
