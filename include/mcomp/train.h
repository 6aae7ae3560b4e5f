/* SPDX-License-Identifier: MIT */
/*
 * mcomp/train.h - the training engine: optimizers, the epoch loop,
 * evaluation, and a progress bar.
 *
 * Passes that fine-tune (prune, distill) reuse mc_train with hooks: a loss of
 * their own, and a callback after each optimizer step (e.g. to re-apply
 * masks). Shuffling is a Philox permutation keyed by (seed, epoch), so a run
 * is reproducible for any thread count.
 */
#ifndef MCOMP_TRAIN_H
#define MCOMP_TRAIN_H

#include <mcomp/data.h>
#include <mcomp/model.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mc_optim_kind { MC_OPTIM_SGD, MC_OPTIM_ADAM };

struct mc_optim_conf {
	enum mc_optim_kind kind;
	double lr;
	double momentum;     /* SGD */
	double beta1, beta2; /* Adam */
	double eps;
	double weight_decay; /* L2, added to the gradient */
};

struct mc_optim;
MC_API struct mc_optim *mc_optim_new(const struct mc_model *m, const struct mc_optim_conf *c,
				     struct mc_err *err);
MC_API void mc_optim_free(struct mc_optim *o);
/* Sets the learning rate of the next steps (for schedules). */
MC_API void mc_optim_set_lr(struct mc_optim *o, double lr);
/* One update of every parameter of m from the gradients in e. */
MC_API void mc_optim_step(struct mc_optim *o, struct mc_model *m, struct mc_exec *e);
/*
 * The optimizer's state, for checkpoints: the steps taken (Adam's bias
 * correction and SGD's first step read it), and per trained parameter p of
 * node i its buffers, which = 0 for SGD's momentum or Adam's first moment and
 * which = 1 for Adam's second moment: as many floats as the parameter has,
 * or NULL when the optimizer keeps no such buffer (SGD without momentum, a
 * buffer of the model's running statistics, an index out of range).
 */
MC_API int64_t mc_optim_steps(const struct mc_optim *o);
MC_API void mc_optim_set_steps(struct mc_optim *o, int64_t steps);
MC_API float *mc_optim_state(struct mc_optim *o, int node, int param, int which);

struct mc_train_hooks {
	void *arg;
	/* Replaces the cross-entropy: for the batch of samples idx[0..n) (indices
	 * into the training set), whose inputs as the model saw them (augmented,
	 * when the run augments) are x[n, in_numel] and outputs logits[n, classes],
	 * writes dlogits and returns the mean loss. */
	float (*loss)(void *arg, const float *x, const float *logits, const int64_t *idx, int n,
		      int classes, float *dlogits);
	/* After each optimizer step; a nonzero return stops training with err. */
	int (*after_step)(void *arg, struct mc_model *m, int64_t step, struct mc_err *err);
	/* After each epoch (0-based), with the epoch's mean training loss. */
	int (*after_epoch)(void *arg, struct mc_model *m, int epoch, double loss,
			   struct mc_err *err);
};

/* How the learning rate moves from optim.lr over a run. */
enum mc_lr_schedule {
	MC_LR_CONSTANT,
	MC_LR_STEP,   /* times gamma after every step_epochs epochs */
	MC_LR_COSINE, /* from lr down to min_lr along half a cosine, per step */
};

struct mc_train_conf {
	int epochs;
	int batch_size;
	struct mc_optim_conf optim;
	enum mc_lr_schedule schedule;
	int step_epochs;  /* MC_LR_STEP */
	double gamma;	  /* MC_LR_STEP */
	double min_lr;	  /* MC_LR_COSINE */
	uint64_t seed;
	const char *label; /* shown in the progress bar, e.g. "train mlp" */
	/* Augmentation of image samples [C, H, W], drawn per (seed, epoch,
	 * sample): a shift of up to shift pixels along each axis (zero fill), and
	 * with hflip a mirror image half of the time. 0 and 0: none. */
	int shift;
	int hflip;
	/* 0: each step's gradient is the batch's (mcomp run under mpirun
	 * splits only models of linear, relu and flatten layers). G >= 1: each
	 * batch of n is split into G groups of samples [n g / G, n (g + 1) / G),
	 * each group's gradient computed alone (batch norm on the group's
	 * statistics) and scaled so that their sum is the gradient of the
	 * batch's mean loss, then the G summed left to right: the same bytes
	 * for any thread count and any rank count up to G, the ranks each
	 * taking whole groups (docs/distributed.md). */
	int grad_groups;
};

/*
 * The optimizer and learning-rate options every training pass offers, kept
 * as one block of its config struct. MC_TRAIN_PARAMS(st, member, lr, schedule)
 * declares their rows (optimizer, lr, momentum, beta1, beta2, weight_decay,
 * schedule, step_epochs, gamma, min_lr, shift, hflip; lr and schedule with the given
 * defaults) and mc_train_opts_apply copies them into a struct mc_train_conf.
 */
struct mc_train_opts {
	int optimizer; /* enum mc_optim_kind, an index into mc_optimizer_names */
	double lr, momentum, beta1, beta2, weight_decay;
	int schedule; /* enum mc_lr_schedule, an index into mc_lr_schedule_names */
	int step_epochs;
	double gamma, min_lr;
	int shift, hflip;
};

/* "sgd", "adam", NULL and "constant", "step", "cosine", NULL: in enum order. */
MC_API extern const char *const mc_optimizer_names[];
MC_API extern const char *const mc_lr_schedule_names[];

#define MC_TRAIN_PARAM_(st, m, f, ty, d, lo, hi, ch, h) \
	MC_PARAM_AT(#f, ty, ty,                                                                    \
		    offsetof(st, m) + offsetof(struct mc_train_opts, f) +                           \
			    MC_PARAM_CHECK(struct mc_train_opts, f, ty),                           \
		    d, lo, hi, ch, h)
#define MC_TRAIN_PARAMS(st, m, lr_def, schedule_def)                                             \
	MC_TRAIN_PARAM_(st, m, optimizer, MC_PARAM_TENUM, "adam", 0, 0, mc_optimizer_names,         \
			"the update rule"),                                                          \
	MC_TRAIN_PARAM_(st, m, lr, MC_PARAM_TFLOAT, lr_def, 1e-12, 10, NULL, "learning rate"),     \
	MC_TRAIN_PARAM_(st, m, momentum, MC_PARAM_TFLOAT, "0.9", 0, 0.999999, NULL,               \
			"SGD momentum"),                                                             \
	MC_TRAIN_PARAM_(st, m, beta1, MC_PARAM_TFLOAT, "0.9", 0, 0.999999, NULL,                  \
			"Adam's first-moment decay"),                                                \
	MC_TRAIN_PARAM_(st, m, beta2, MC_PARAM_TFLOAT, "0.999", 0, 0.999999, NULL,                \
			"Adam's second-moment decay"),                                               \
	MC_TRAIN_PARAM_(st, m, weight_decay, MC_PARAM_TFLOAT, "0", 0, 1, NULL,                    \
			"L2 penalty added to the gradient"),                                         \
	MC_TRAIN_PARAM_(st, m, schedule, MC_PARAM_TENUM, schedule_def, 0, 0, mc_lr_schedule_names, \
			"learning rate over the run: constant, step (times gamma every "             \
			"step_epochs), or cosine (down to min_lr)"),                                 \
	MC_TRAIN_PARAM_(st, m, step_epochs, MC_PARAM_TINT, "1", 1, 100000, NULL,                  \
			"step schedule: epochs between decays"),                                     \
	MC_TRAIN_PARAM_(st, m, gamma, MC_PARAM_TFLOAT, "0.1", 1e-6, 1, NULL,                      \
			"step schedule: decay factor"),                                              \
	MC_TRAIN_PARAM_(st, m, min_lr, MC_PARAM_TFLOAT, "0", 0, 10, NULL,                         \
			"cosine schedule: the learning rate at the last step"),                      \
	MC_TRAIN_PARAM_(st, m, shift, MC_PARAM_TINT, "0", 0, 8, NULL,                             \
			"augmentation: shift each training image by up to this many pixels "         \
			"along each axis (a new draw per epoch)"),                                   \
	MC_TRAIN_PARAM_(st, m, hflip, MC_PARAM_TBOOL, "false", 0, 1, NULL,                        \
			"augmentation: mirror half of the training images left to right")

/* Sets c->optim (eps 1e-8) and c's schedule fields from o. */
MC_API void mc_train_opts_apply(const struct mc_train_opts *o, struct mc_train_conf *c);

/* The learning rate of step (0-based, in epoch) of a run of total steps. */
MC_API double mc_lr_at(const struct mc_train_conf *c, int64_t step, int64_t total, int epoch);

/* Trains m in place. hooks may be NULL. Returns 0 or an error code. */
MC_API int mc_train(struct mc_model *m, const struct mc_dataset *d, const struct mc_train_conf *c,
		    const struct mc_train_hooks *hooks, struct mc_err *err);

/*
 * Checkpoints. Between two steps a run stands at a position: the epoch in
 * progress, the optimizer steps done, the batches of that epoch done and
 * the sum of their losses. With the model's parameters and buffers and the
 * optimizer's state (mc_optim_steps, mc_optim_state), the position is all a
 * run needs to go on with the same bytes as a run that never stopped: the
 * shuffle, the augmentation, dropout's masks and the learning rate are pure
 * functions of (seed, epoch, step).
 */
struct mc_train_pos {
	int epoch;	 /* the epoch in progress, 0-based; epochs when the run is done */
	int64_t step;	 /* optimizer steps done */
	int64_t batch;	 /* batches of epoch done */
	double loss_sum; /* of those batches: the sum of mean loss times batch size */
};

struct mc_train_ckpt {
	void *arg;
	/* Where to begin; all zero: the start. From a later position, m holds
	 * the parameters of that position, and restore gives the optimizer its
	 * state once it exists, before the first step. */
	struct mc_train_pos start;
	int (*restore)(void *arg, struct mc_optim *o, struct mc_err *err);
	/*
	 * After every epoch (once after_epoch has run; pos is the next epoch's
	 * start), and, with interrupted the signal, when a signal stops the run
	 * between two steps (pos is where it stopped). A nonzero return stops
	 * training with err; at an interrupt mc_train_from returns MC_EINTR
	 * whatever save returned.
	 */
	int (*save)(void *arg, const struct mc_model *m, struct mc_optim *o,
		    const struct mc_train_pos *pos, int interrupted, struct mc_err *err);
};

/* mc_train with checkpoints (ck may be NULL: mc_train). MC_EINVAL when
 * ck->start is no position of this run. */
MC_API int mc_train_from(struct mc_model *m, const struct mc_dataset *d,
			 const struct mc_train_conf *c, const struct mc_train_hooks *hooks,
			 const struct mc_train_ckpt *ck, struct mc_err *err);

/* Accuracy (fraction correct) and mean cross-entropy of m on d; either
 * output pointer may be NULL. */
MC_API int mc_evaluate(const struct mc_model *m, const struct mc_dataset *d, int batch_size,
		       double *accuracy, double *loss, struct mc_err *err);

/* mc_evaluate with its batches shared out over the ranks of an MPI job
 * (mc_dist_part, then mc_dist_gather): the same figures, to the bit, for any
 * rank count. Every rank must call it at the same point with the same d. */
MC_API int mc_evaluate_shared(const struct mc_model *m, const struct mc_dataset *d,
			      int batch_size, double *accuracy, double *loss,
			      struct mc_err *err);

/*
 * Data-parallel training over the ranks of a job (docs/distributed.md). The
 * library calls no MPI itself: the host (the mcomp command under mpirun)
 * hands it these operations, blocking, on bytes; each returns 0, or nonzero
 * when the transfer failed. Every rank runs the same pipeline; mc_train then
 * splits each batch of a model of linear, relu and flatten layers trained
 * on the cross-entropy into one near-equal slice of samples per rank and
 * continues each gradient's sums from rank to rank, so that the result is
 * the same bytes as one process's for any rank count. Other training runs
 * whole on every rank (the same bytes, no faster), unless the run sets
 * mc_train_conf.grad_groups: then each rank computes its share of the
 * groups, and the sum goes from rank to rank.
 */
struct mc_dist {
	int rank, size;
	void *arg;
	int (*send)(void *arg, int to, const void *buf, size_t len);
	int (*recv)(void *arg, int from, void *buf, size_t len);
	int (*bcast)(void *arg, int root, void *buf, size_t len);
};
/* Installs d (borrowed until replaced; NULL or size 1: one process). */
MC_API void mc_dist_set(const struct mc_dist *d);
/* The ranks training is spread over: 1 without mc_dist_set. */
MC_API int mc_dist_ranks(void);
/*
 * Work a job shares out rather than repeats (a teacher's outputs for a
 * whole split): n items in blocks of block items, rank r of R taking the
 * blocks [B r / R, B (r + 1) / R) of the B, so that each block is the
 * same work whatever R. mc_dist_part gives this rank's items [*lo, *hi)
 * ([0, n) in one process). mc_dist_gather, called by every rank with buf
 * holding its own items (n items of size bytes), gives every rank all of
 * them; a signal any rank had (mc_interrupted) travels with them, so every
 * rank sees it afterwards. 0, or MC_ERUN with err set when a transfer failed.
 */
MC_API void mc_dist_part(int64_t n, int64_t block, int64_t *lo, int64_t *hi);
MC_API int mc_dist_gather(void *buf, int64_t n, int64_t block, size_t size, struct mc_err *err);

/*
 * Progress of long work (training, calibration), for the host to show. The
 * library never draws anything itself: it hands the label, the fraction done
 * in [0, 1] and a status line to the sink the host installed, at most ten
 * times a second and always at the end, then once with fraction -1 when the
 * work ends. No sink (the default): nothing. One piece of work at a time.
 */
typedef void (*mc_progress_fn)(void *arg, const char *label, double fraction,
			       const char *status);
MC_API void mc_progress_set_sink(mc_progress_fn fn, void *arg);
MC_API void mc_progress_begin(const char *label, int64_t total);
MC_API void mc_progress_update(int64_t done, const char *status);
MC_API void mc_progress_end(void);

#ifdef __cplusplus
}
#endif
#endif
