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

#include "../common/kd.h"

struct distill_conf {
	char *student;
	char *teacher;
	struct kd_opts kd;
};

/* The student comes first: the host measures a pass's first model parameter. */
static const struct mc_param_def distill_params[] = {
	MC_PARAM_MODEL(struct distill_conf, student, NULL,
		       "the model to train (a name under models:); replaced by the distilled one"),
	MC_PARAM_MODEL(struct distill_conf, teacher, NULL,
		       "the trained model whose outputs the student learns from"),
	KD_PARAMS(struct distill_conf, kd, "teacher"),
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
	if (kd_check_groups(ctx, &c->kd))
		return mc_ctx_err(ctx)->code;
	return kd_check_pair(ctx, "student", c->student, s, c->teacher, t);
}

static int distill_run(struct mc_ctx *ctx, const void *conf)
{
	const struct distill_conf *c = conf;
	struct mc_model *s = mc_ctx_model(ctx, c->student);
	const struct mc_model *t = mc_ctx_model(ctx, c->teacher);
	const struct mc_dataset *d = mc_ctx_data(ctx, c->kd.data);
	struct mc_err *err = mc_ctx_err(ctx);
	struct mc_train_conf tc;
	/* One teacher is an ensemble of one with weight 1: its targets are softmax(z_t / T). */
	struct kd_teachers tt = { .k = 1, .combine = KD_PROBS, .m = { t }, .name = { c->teacher },
				  .w = { 1 } };
	struct kd_outcome o;
	struct kd_cost tcost;
	double t_acc;
	int ret;

	kd_train_conf(ctx, &c->kd, c->student, &tc);
	if (!d)
		return err->code;
	ret = kd_check_pair(ctx, "student", c->student, s, c->teacher, t);
	if (!ret)
		ret = kd_check_data(ctx, c->kd.data, d, s);
	if (!ret)
		ret = kd_train_student(ctx, s, c->student, &tt, d, &c->kd, &tc, &o);
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
	if (c->kd.compare_scratch)
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
