/* SPDX-License-Identifier: MIT */
/*
 * distill - trains a student model from a teacher's softened outputs
 * (knowledge distillation, Hinton et al. 2015):
 *
 *	loss = alpha * T^2 * KL(softmax(z_t / T) || softmax(z_s / T))
 *	     + (1 - alpha) * CE(y, z_s)
 *
 * The teacher's probabilities are computed once for the whole split when
 * they fit in memory and training does not augment, else per batch on the
 * inputs the student sees (kd.c, shared with ensemble-distill). With
 * compare_scratch the same student (same initial weights, seed and budget) is
 * also trained on labels alone, and both accuracies are reported side by side.
 */
#include <stdlib.h>
#include <string.h>

#include "kd.h"

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
	MC_PARAM_FLOAT(struct distill_conf, temperature, "1", 0.01, 100,
		       "softening temperature T of both softmaxes in the soft term"),
	MC_PARAM_FLOAT(struct distill_conf, alpha, "0.9", 0, 1,
		       "weight of the soft (teacher) term; 1 - alpha weighs the labels"),
	MC_PARAM_INT(struct distill_conf, epochs, "60", 1, 100000,
		     "passes over the data; a student learning mostly from the teacher "
		     "(high alpha) needs more than one trained on labels (docs/distill.md)"),
	MC_PARAM_INT(struct distill_conf, batch_size, "128", 1, 65536, "samples per update"),
	MC_TRAIN_PARAMS(struct distill_conf, opts, "0.003", "cosine"),
	MC_PARAM_INT(struct distill_conf, seed, "-1", -1, 2147483647,
		     "shuffling seed; -1 uses the pipeline's seed"),
	MC_PARAM_BOOL(struct distill_conf, compare_scratch, "false",
		      "also train the student's initial weights on labels alone (same seed and "
		      "budget) and report both accuracies"),
	MC_PARAM_END,
};

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
	return kd_check_pair(ctx, "student", c->student, s, c->teacher, t);
}

static int distill_run(struct mc_ctx *ctx, void *state, const void *conf)
{
	const struct distill_conf *c = conf;
	struct mc_model *s = mc_ctx_model(ctx, c->student);
	const struct mc_model *t = mc_ctx_model(ctx, c->teacher);
	const struct mc_dataset *d = mc_ctx_data(ctx, c->data);
	struct mc_err *err = mc_ctx_err(ctx);
	struct mc_train_conf tc = {
		.epochs = c->epochs,
		.batch_size = c->batch_size,
		.seed = c->seed >= 0 ? (uint64_t)c->seed : mc_ctx_seed(ctx),
		.label = c->student,
	};
	/* One teacher is an ensemble of one with weight 1: its targets are softmax(z_t / T). */
	struct kd_teachers tt = { .k = 1, .combine = KD_PROBS, .m = { t }, .name = { c->teacher },
				  .w = { 1 } };
	struct kd_outcome o;
	struct kd_cost tcost;
	double t_acc;
	int ret;

	(void)state;
	mc_train_opts_apply(&c->opts, &tc);
	if (!d)
		return err->code;
	ret = kd_check_pair(ctx, "student", c->student, s, c->teacher, t);
	if (!ret)
		ret = kd_check_data(ctx, c->data, d, s);
	if (!ret)
		ret = kd_train_student(ctx, s, c->student, &tt, d, c->data, &tc, c->temperature,
				       c->alpha, c->compare_scratch, &o);
	if (!ret)
		ret = mc_evaluate(t, o.ev, KD_EVAL_BATCH, &t_acc, NULL, err);
	if (!ret)
		ret = kd_cost(&tt, o.ev, &tcost, err);
	if (ret)
		return ret;
	mc_ctx_log(ctx, "%s accuracy: student %.2f%%, teacher %.2f%%, gap %.2f pt", o.ev_name,
		   100 * o.s_acc, 100 * t_acc, 100 * (t_acc - o.s_acc));
	mc_ctx_report(ctx, "student_accuracy", o.s_acc);
	mc_ctx_report(ctx, "teacher_accuracy", t_acc);
	mc_ctx_report(ctx, "gap", t_acc - o.s_acc);
	kd_report_costs(ctx, "teacher", o.s_acc, &o.scost, t_acc, &tcost);
	if (c->compare_scratch)
		kd_report_scratch(ctx, o.ev_name, o.s_acc, o.sc_acc);
	return 0;
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
