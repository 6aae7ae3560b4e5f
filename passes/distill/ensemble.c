/* SPDX-License-Identifier: MIT */
/*
 * ensemble-distill - trains a student model from an ensemble of teachers
 * (knowledge distillation from several models). The target of each sample
 * is either the weighted average of the teachers' softened probabilities,
 *
 *	probs:  sum_i w_i softmax(z_i / T)
 *
 * or the softened softmax of their weighted average logits,
 *
 *	logits: softmax(sum_i w_i z_i / T)
 *
 * and the loss is distill's: alpha * T^2 * KL(target || softmax(z_s / T)) +
 * (1 - alpha) * CE(y, z_s). The targets are computed once for the whole split
 * when they fit in memory and training does not augment, else per batch on
 * the inputs the student sees (kd.c, shared with distill).
 *
 * At the end the pass measures what the student recovers of the ensemble:
 * the accuracy of the student, of each teacher and of the ensemble itself
 * (combined by the same rule at T = 1), and the ensemble's cost (bytes of its
 * members' files, FLOPs per sample, latency of running all members). With
 * compare_scratch the student's initial weights are also trained on labels
 * alone; with compare_single they are also distilled from each teacher alone
 * with the same settings and budget, so one run shows whether the ensemble
 * pays over its best member.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/kd.h"

struct ens_conf {
	char *student;
	struct mc_list teachers;
	struct mc_list weights;
	int combine;
	struct kd_opts kd;
	int compare_single;
};

/* The student comes first: the host measures a pass's first model parameter. */
static const struct mc_param_def ens_params[] = {
	MC_PARAM_MODEL(struct ens_conf, student, NULL,
		       "the model to train (a name under models:); replaced by the distilled one"),
	MC_PARAM_LIST(struct ens_conf, teachers, MC_PARAM_TMODEL, NULL, 0, 0,
		      "the trained models whose combined outputs the student learns from (2 to 16 "
		      "make an ensemble; 1 is distill)"),
	MC_PARAM_LIST(struct ens_conf, weights, MC_PARAM_TFLOAT, "[]", 0, 1e6,
		      "one weight per teacher, >= 0 and not all 0, normalised to sum to 1; empty: "
		      "equal weights"),
	MC_PARAM_ENUM(struct ens_conf, combine, "probs", kd_combine_names,
		      "probs: average the teachers' softened probabilities softmax(z / T); logits: "
		      "softmax of the averaged logits over T"),
	KD_PARAMS(struct ens_conf, kd, "ensemble"),
	MC_PARAM_BOOL(struct ens_conf, compare_single, "false",
		      "also distill the student's initial weights from each teacher alone (same "
		      "settings and budget) and report each and the best beside the ensemble's"),
	MC_PARAM_END,
};

/* ---------------------------------------------------------------- validation */

/*
 * The teachers of c into t, checked: 1 to KD_MAX_TEACHERS distinct models
 * other than the student, taking the same input and giving the same classes
 * (errors at "teachers"), the student matching them (at "student"), and the
 * weights one per teacher or none, not all 0 (at "weights"), normalised.
 * Returns 1 when a model is missing (the host has said so), else 0 or the
 * error code.
 */
static int ens_teachers(struct mc_ctx *ctx, const struct ens_conf *c, const struct mc_model *s,
			struct kd_teachers *t)
{
	const struct mc_list *tl = &c->teachers, *wl = &c->weights;
	double sum = 0;
	int ret;

	memset(t, 0, sizeof(*t));
	if (tl->n < 1 || tl->n > KD_MAX_TEACHERS)
		return mc_ctx_error(ctx, "teachers", MC_EINVAL,
				    "%d teachers; name 2 to %d models for an ensemble (1 is the "
				    "distill pass)",
				    tl->n, KD_MAX_TEACHERS);
	t->k = tl->n;
	t->combine = c->combine;
	for (int i = 0; i < t->k; i++) {
		const char *name = tl->str[i];

		t->name[i] = name;
		t->m[i] = mc_ctx_model(ctx, name);
		if (!t->m[i])
			return 1;
		if (strcmp(name, c->student) == 0)
			return mc_ctx_error(ctx, "teachers", MC_EINVAL,
					    "teacher '%s' is the student; name other models",
					    name);
		for (int j = 0; j < i; j++)
			if (strcmp(tl->str[j], name) == 0)
				return mc_ctx_error(ctx, "teachers", MC_EINVAL,
						    "model '%s' is teacher %d and teacher %d; name "
						    "each model once",
						    name, j + 1, i + 1);
		if (mc_model_in_numel(t->m[i]) != mc_model_in_numel(t->m[0]))
			return mc_ctx_error(ctx, "teachers", MC_EINVAL,
					    "teacher '%s' takes %lld input values but teacher '%s' "
					    "takes %lld; every teacher must take the same input",
					    name, (long long)mc_model_in_numel(t->m[i]), tl->str[0],
					    (long long)mc_model_in_numel(t->m[0]));
		if (mc_model_n_classes(t->m[i]) != mc_model_n_classes(t->m[0]))
			return mc_ctx_error(ctx, "teachers", MC_EINVAL,
					    "teacher '%s' outputs %lld classes but teacher '%s' "
					    "outputs %lld; every teacher must give the same classes",
					    name, (long long)mc_model_n_classes(t->m[i]), tl->str[0],
					    (long long)mc_model_n_classes(t->m[0]));
	}
	ret = kd_check_pair(ctx, "student", c->student, s, tl->str[0], t->m[0]);
	if (ret)
		return ret;
	if (wl->n && wl->n != t->k)
		return mc_ctx_error(ctx, "weights", MC_EINVAL,
				    "%d weights for %d teachers; give one per teacher, in the "
				    "teachers' order, or none for equal weights",
				    wl->n, t->k);
	for (int i = 0; i < wl->n; i++)
		sum += wl->num[i];
	if (wl->n && !(sum > 0))
		return mc_ctx_error(ctx, "weights", MC_EINVAL,
				    "the weights sum to 0; give at least one teacher a positive "
				    "weight");
	for (int i = 0; i < t->k; i++)
		t->w[i] = wl->n ? wl->num[i] / sum : 1.0 / t->k;
	return 0;
}

static int ens_check(struct mc_ctx *ctx, const void *conf)
{
	const struct ens_conf *c = conf;
	const struct mc_model *s = mc_ctx_model(ctx, c->student);
	struct kd_teachers t;
	int ret;

	if (!s)
		return 0; /* the host has said so */
	ret = kd_check_groups(ctx, &c->kd);
	if (ret)
		return ret;
	ret = ens_teachers(ctx, c, s, &t);
	return ret > 0 ? 0 : ret;
}

/* ---------------------------------------------------------------- run */

/* Reports value under "<pre><name><post>". */
static void report_named(struct mc_ctx *ctx, const char *pre, const char *name, const char *post,
			 double value)
{
	char key[320];

	snprintf(key, sizeof(key), "%s%.256s%s", pre, name, post);
	mc_ctx_report(ctx, key, value);
}

/* Logs and reports accuracies and costs of the student and the ensemble. */
static void report(struct mc_ctx *ctx, const struct kd_teachers *t, const char *ev_name,
		   double s_acc, const double *t_acc, double e_acc, const struct kd_cost *sc,
		   const struct kd_cost *ec)
{
	char line[2048];
	size_t len = 0;

	for (int i = 0; i < t->k && len < sizeof(line); i++)
		len += (size_t)snprintf(line + len, sizeof(line) - len, "%s'%s' %.2f%%",
					i ? ", " : "", t->name[i], 100 * t_acc[i]);
	mc_ctx_log(ctx, "%s accuracy of the teachers: %s", ev_name, line);
	mc_ctx_log(ctx, "%s accuracy: student %.2f%%, ensemble %.2f%% (combine %s), gap %.2f pt",
		   ev_name, 100 * s_acc, 100 * e_acc, kd_combine_names[t->combine],
		   100 * (e_acc - s_acc));
	mc_ctx_report(ctx, "student_accuracy", s_acc);
	for (int i = 0; i < t->k; i++)
		report_named(ctx, "teacher_", t->name[i], "_accuracy", t_acc[i]);
	mc_ctx_report(ctx, "ensemble_accuracy", e_acc);
	mc_ctx_report(ctx, "gap", e_acc - s_acc);
	kd_report_costs(ctx, "ensemble", s_acc, sc, e_acc, ec);
}

/* Logs and reports the single-teacher students beside the ensemble's. */
static void report_single(struct mc_ctx *ctx, const struct kd_teachers *t, const char *ev_name,
			  double s_acc, const double *one_acc)
{
	int best = 0;

	for (int i = 0; i < t->k; i++) {
		if (one_acc[i] > one_acc[best])
			best = i;
		mc_ctx_log(ctx, "%s accuracy: distilled from '%s' alone %.2f%%", ev_name,
			   t->name[i], 100 * one_acc[i]);
		report_named(ctx, "single_", t->name[i], "_accuracy", one_acc[i]);
	}
	mc_ctx_log(ctx, "%s accuracy: distilled from the ensemble %.2f%%, from the best single "
		   "teacher ('%s') %.2f%% (%+.2f pt)",
		   ev_name, 100 * s_acc, t->name[best], 100 * one_acc[best],
		   100 * (s_acc - one_acc[best]));
	mc_ctx_report(ctx, "best_single_accuracy", one_acc[best]);
	mc_ctx_report(ctx, "gain_over_best_single", s_acc - one_acc[best]);
}

static int ens_run(struct mc_ctx *ctx, const void *conf)
{
	const struct ens_conf *c = conf;
	struct mc_model *s = mc_ctx_model(ctx, c->student);
	const struct mc_dataset *d = mc_ctx_data(ctx, c->kd.data);
	struct mc_err *err = mc_ctx_err(ctx);
	struct mc_train_conf tc;
	struct mc_model *one[KD_MAX_TEACHERS] = { 0 };
	double e_acc, t_acc[KD_MAX_TEACHERS], one_acc[KD_MAX_TEACHERS];
	struct kd_outcome o;
	struct kd_cost ecost;
	struct kd_teachers t;
	int ret;

	kd_train_conf(ctx, &c->kd, c->student, &tc);
	if (!d)
		return err->code;
	ret = ens_teachers(ctx, c, s, &t);
	if (ret > 0)
		return mc_ctx_error(ctx, "teachers", MC_ERUN, "a teacher is missing");
	if (!ret)
		ret = kd_check_data(ctx, c->kd.data, d, s);
	if (ret)
		return ret;
	if (t.k == 1)
		mc_ctx_log(ctx, "one teacher: this is the distill pass; name 2 or more for an "
			   "ensemble");
	/* the single-teacher students start from the student's initial weights */
	for (int i = 0; c->compare_single && i < t.k; i++) {
		one[i] = mc_model_dup(s, err);
		if (!one[i]) {
			ret = err->code;
			goto out;
		}
	}
	ret = kd_train_student(ctx, s, c->student, &t, d, &c->kd, &tc, &o);
	for (int i = 0; !ret && one[i]; i++) {
		struct kd_teachers ti = { .k = 1, .combine = t.combine, .m = { t.m[i] },
					  .name = { t.name[i] }, .w = { 1 } };
		char tag[300];

		snprintf(tag, sizeof(tag), "single '%.256s': ", t.name[i]);
		mc_ctx_log(ctx, "distilling the initial '%s' from teacher '%s' alone for comparison",
			   c->student, t.name[i]);
		ret = kd_distill(ctx, one[i], c->student, &ti, d, &tc, c->kd.temperature,
				 c->kd.alpha, o.ev, o.ev_name, tag);
		if (!ret)
			ret = mc_evaluate(one[i], o.ev, KD_EVAL_BATCH, &one_acc[i], NULL, err);
	}
	if (!ret)
		ret = kd_ensemble_accuracy(&t, o.ev, &e_acc, t_acc, err);
	if (!ret)
		ret = kd_cost(&t, o.ev, &ecost, err);
	if (ret)
		goto out;
	report(ctx, &t, o.ev_name, o.s_acc, t_acc, e_acc, &o.scost, &ecost);
	if (c->kd.compare_scratch)
		kd_report_scratch(ctx, o.ev_name, o.s_acc, o.sc_acc);
	if (c->compare_single)
		report_single(ctx, &t, o.ev_name, o.s_acc, one_acc);
out:
	for (int i = 0; i < KD_MAX_TEACHERS; i++)
		mc_model_free(one[i]);
	return ret;
}

static const struct mc_pass ens_pass = {
	.abi = MC_PASS_ABI,
	.name = "ensemble-distill",
	.version = "1.0",
	.description = "train a student model from an ensemble of teachers' combined outputs, "
		       "reporting the ensemble's accuracy and cost beside the student's",
	.license = "MIT",
	.author = "the mcomp developers",
	.conf_size = sizeof(struct ens_conf),
	.params = ens_params,
	.check = ens_check,
	.run = ens_run,
};
MC_PASS_DEFINE(ens_pass);
