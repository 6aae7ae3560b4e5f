/* SPDX-License-Identifier: MIT */
/*
 * kd.h - what the distill and ensemble-distill passes share (kd.c is linked
 * into both plugins; nothing here is exported from them).
 *
 * A student learns from targets: for one teacher softmax(z / T), for an
 * ensemble of k teachers with weights w (summing to 1) either
 *
 *	probs:  sum_i w_i softmax(z_i / T)	(average of softened probabilities)
 *	logits: softmax(sum_i w_i z_i / T)	(softmax of the averaged logits)
 *
 * One teacher is the ensemble of one with weight 1, for which both rules
 * give exactly softmax(z / T). The loss of a batch is
 *
 *	alpha * T^2 * KL(target || softmax(z_s / T)) + (1 - alpha) * CE(y, z_s)
 *
 * kd_distill trains a student on it, computing the targets once for the
 * whole split when they fit in memory and training does not augment, else
 * per batch on the inputs the student sees.
 */
#ifndef KD_H
#define KD_H

#include <mcomp/mcomp.h>

#define KD_MAX_TEACHERS 16
#define KD_EVAL_BATCH 256
/* Targets are kept for the whole split up to this size. */
#define KD_CACHE_MAX ((size_t)1 << 30)

enum kd_combine { KD_PROBS, KD_LOGITS };
/* "probs", "logits", NULL: in enum order. */
extern const char *const kd_combine_names[];

/*
 * The options of the student's training that both passes offer, one block of
 * their config structs. KD_PARAMS(st, member, soft) declares their rows
 * (data, temperature, alpha, epochs, batch_size, grad_groups, the optimizer and schedule
 * rows of MC_TRAIN_PARAMS, seed, compare_scratch), soft naming what teaches
 * ("teacher", "ensemble").
 */
struct kd_opts {
	char *data;
	double temperature;
	double alpha;
	int epochs;
	int batch_size;
	struct mc_train_opts train;
	int seed;
	int compare_scratch;
	struct mc_checkpoint_opts ckpt;
	int grad_groups; /* 0: unset */
};

#define KD_PARAM_(st, m, f, ty, d, lo, hi, h) \
	MC_PARAM_AT(#f, ty, ty,                                                                    \
		    offsetof(st, m) + offsetof(struct kd_opts, f) +                                 \
			    MC_PARAM_CHECK(struct kd_opts, f, ty),                                 \
		    d, lo, hi, NULL, h)
#define KD_PARAMS(st, m, soft)                                                                   \
	KD_PARAM_(st, m, data, MC_PARAM_TSPLIT, "train", 0, 0, "the data split to train on"),      \
	KD_PARAM_(st, m, temperature, MC_PARAM_TFLOAT, "1", 0.01, 100,                             \
		  "softening temperature T of the targets and of the student's soft term"),      \
	KD_PARAM_(st, m, alpha, MC_PARAM_TFLOAT, "0.9", 0, 1,                                     \
		  "weight of the soft (" soft ") term; 1 - alpha weighs the labels"),             \
	KD_PARAM_(st, m, epochs, MC_PARAM_TINT, "60", 1, 100000,                                  \
		  "passes over the data; a student learning mostly from the teacher (high "      \
		  "alpha) needs more than one trained on labels (docs/distill.md)"),             \
	KD_PARAM_(st, m, batch_size, MC_PARAM_TINT, "128", 1, 65536, "samples per update"),       \
	MC_GRAD_GROUPS_PARAM(st, m.grad_groups, "",                                               \
			     "; each rank runs the " soft " on its own groups, or on its "       \
			     "share of the split when the targets are computed once"),         \
	MC_TRAIN_PARAMS(st, m.train, "0.003", "cosine"),                                          \
	KD_PARAM_(st, m, seed, MC_PARAM_TINT, "-1", -1, 2147483647,                               \
		  "shuffling seed; -1 uses the pipeline's seed"),                                \
	KD_PARAM_(st, m, compare_scratch, MC_PARAM_TBOOL, "false", 0, 1,                          \
		  "also train the student's initial weights on labels alone (same seed and "     \
		  "budget) and report both accuracies"),                                         \
	MC_CHECKPOINT_PARAMS(st, m.ckpt)

/* The models a student learns from, borrowed. */
struct kd_teachers {
	int k;				   /* 1 to KD_MAX_TEACHERS */
	enum kd_combine combine;
	const struct mc_model *m[KD_MAX_TEACHERS];
	const char *name[KD_MAX_TEACHERS]; /* for log lines */
	double w[KD_MAX_TEACHERS];	   /* >= 0, summing to 1 */
};

/*
 * The loss of a batch: alpha * mc_kd_loss(z_s, target, T) + (1 - alpha) *
 * CE(y, z_s), with its gradient in dlogits[n, classes]; tmp holds n * classes
 * floats.
 */
float kd_loss(const float *logits, const float *target, const uint8_t *labels, int n, int classes,
	      float T, float alpha, float *dlogits, float *tmp);

/*
 * The targets out[n, classes] of k teachers whose logits are z[i][n, classes],
 * weighted by w[k] (summing to 1), combined by rule at temperature T (see
 * above). Sums in double in teacher order, so the result does not depend on
 * the thread count; tmp holds k * classes floats.
 */
void kd_targets(enum kd_combine rule, const float *const *z, const double *w, int k, int n,
		int classes, float T, float *out, float *tmp);

/* The same input size and class count for student s and teacher t, or an
 * error at key (the names are the models'). */
int kd_check_pair(struct mc_ctx *ctx, const char *key, const char *sname, const struct mc_model *s,
		  const char *tname, const struct mc_model *t);

/* ko's grad_groups divides its batch_size and the job's ranks divide it
 * (mc_ctx_check_grad_groups), or MC_EINVAL at the key grad_groups. */
int kd_check_groups(struct mc_ctx *ctx, const struct kd_opts *ko);

/* Split d (named dname, at the key "data") fits student s, or MC_ERUN. */
int kd_check_data(struct mc_ctx *ctx, const char *dname, const struct mc_dataset *d,
		  const struct mc_model *s);

/*
 * Trains s in place on d from the targets of t (tc: epochs, batch, optimizer,
 * seed, augmentation). After every epoch it logs the mean loss and, when ev
 * is not NULL, the accuracy on ev (named ev_name); every log line starts
 * with tag ("" for none). Returns 0 or an error code with the context's
 * error set.
 */
int kd_distill(struct mc_ctx *ctx, struct mc_model *s, const char *sname,
	       const struct kd_teachers *t, const struct mc_dataset *d,
	       const struct mc_train_conf *tc, double T, double alpha,
	       const struct mc_dataset *ev, const char *ev_name, const char *tag);

/* The accuracy of the ensemble t on d, each sample's class the top one of
 * its combined outputs at T = 1 (the lowest index wins a tie), and, when
 * member is not NULL, each teacher's own accuracy in member[k], from the same
 * forwards. */
int kd_ensemble_accuracy(const struct kd_teachers *t, const struct mc_dataset *d, double *acc,
			 double *member, struct mc_err *err);

/* What running some models costs: summed file bytes and FLOPs per sample,
 * and the latency of one forward of them all (and their combination) at
 * batch 1 and 256, the median of repeated runs after a warm-up. */
struct kd_cost {
	int64_t bytes, flops;
	double latency1_ms, latency256_ms;
};

/* The cost of the teachers t together, timed on the first samples of d. */
int kd_cost(const struct kd_teachers *t, const struct mc_dataset *d, struct kd_cost *cost,
	    struct mc_err *err);

/* What kd_train_student measures. */
struct kd_outcome {
	const struct mc_dataset *ev; /* the split measured on: 'test', else the training split */
	const char *ev_name;
	double s_acc;		     /* the distilled student's accuracy on ev */
	double sc_acc;		     /* the scratch copy's, or -1 without one */
	struct kd_cost scost;	     /* the student's cost, timed on ev */
};

/*
 * The body both passes share: distils s (named sname) from t on d (the
 * split ko->data) with tc and ko's T and alpha, logging each epoch's accuracy
 * on the pipeline's test split (else d); with compare_scratch, first copies s's
 * initial weights and trains the copy on labels alone under the same tc.
 * Then measures both on that split into o. Returns 0 or an error code with
 * the context's error set.
 */
int kd_train_student(struct mc_ctx *ctx, struct mc_model *s, const char *sname,
		     const struct kd_teachers *t, const struct mc_dataset *d,
		     const struct kd_opts *ko, const struct mc_train_conf *tc, struct kd_outcome *o);

/* The training run of ko for the student named sname (its progress label). */
void kd_train_conf(struct mc_ctx *ctx, const struct kd_opts *ko, const char *sname,
		   struct mc_train_conf *tc);

/* Logs the student beside what taught it (what: "teacher" or "ensemble"), a
 * table of accuracy and costs and their ratios, and reports what taught it
 * as <what>_bytes, _flops, _latency1_ms and _latency256_ms. */
void kd_report_costs(struct mc_ctx *ctx, const char *what, double s_acc, const struct kd_cost *sc,
		     double o_acc, const struct kd_cost *oc);

/* Logs and reports the distilled student beside the one trained from scratch. */
void kd_report_scratch(struct mc_ctx *ctx, const char *ev_name, double s_acc, double sc_acc);

#endif
