/* SPDX-License-Identifier: MIT */
/*
 * mcomp/cascade.h - cascades: cheap models first, expensive ones only for
 * the inputs the cheap ones are unsure of.
 *
 * A cascade is an ordered list of stages (models taking the same input and
 * giving the same number of classes), cheapest first, a confidence measure
 * and one threshold per stage but the last. A batch runs through stage 0;
 * each sample whose confidence reaches the stage's threshold exits there
 * with that stage's logits; the others are gathered into a smaller batch for
 * the next stage. The last stage takes whatever is left.
 *
 * A cascade is one safetensors file holding its members. Stage s's tensors
 * are named "<stage name>/<tensor name>" ("student/linear1.weight"), stored
 * exactly as a model file stores them (dense, sparse or quantized), and
 * __metadata__ holds
 *
 *	"mcomp.cascade": {"format": 1, "confidence": "max-prob",
 *			  "stages": [{"name": "student", "threshold": 0.9375, "arch": {...}},
 *				     {"name": "teacher", "arch": {...}}]}
 *
 * ("arch" as under "mcomp.arch" of a model file; the last stage has no
 * threshold, every other one has; a threshold is a JSON number that reads
 * back as the same float, or "inf" / "-inf") plus "format": "mcomp",
 * "mcomp.version" and "mcomp.sparse" for the members' sparse tensors, keyed
 * by full name, as in a model file. Any safetensors reader opens it.
 */
#ifndef MCOMP_CASCADE_H
#define MCOMP_CASCADE_H

#include <mcomp/data.h>
#include <mcomp/model.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MC_CASCADE_FORMAT 1
#define MC_CASCADE_MAX_STAGES 8

/* How sure a stage is of a sample, from its logits; larger is surer. */
enum mc_confidence {
	MC_CONF_MAX_PROB, /* the largest softmax probability, in (0, 1] */
	MC_CONF_MARGIN,	  /* top-1 minus top-2 probability, in [0, 1] */
	MC_CONF_ENTROPY,  /* minus the entropy of the softmax (nats), in [-ln classes, 0] */
	MC_CONF_COUNT,
};

/* "max-prob", "margin", "entropy", NULL: in enum order. */
MC_API extern const char *const mc_confidence_names[];

/*
 * conf[i] = the confidence of kind (enum mc_confidence) of row i of
 * logits[n, classes], computed in double from a softmax with the row's
 * maximum subtracted, so it depends only on that row. -inf logits count as
 * probability 0; a row with a NaN or +inf logit, or an unknown kind, gives
 * NaN, which reaches no threshold.
 */
MC_API void mc_confidence(int kind, const float *logits, int n, int classes, float *conf);

struct mc_cascade {
	int n_stages;		   /* 1 .. MC_CASCADE_MAX_STAGES */
	char *names[MC_CASCADE_MAX_STAGES];
	struct mc_model *stages[MC_CASCADE_MAX_STAGES]; /* owned */
	int confidence;		   /* enum mc_confidence */
	float thresholds[MC_CASCADE_MAX_STAGES]; /* [s]: a sample exits stage s when its
						  * confidence >= thresholds[s]; the last is unused */
};

/*
 * A cascade of n stages taking ownership of the models (freed on failure
 * too) and copying the names, which must be distinct, 1 to 200 bytes long
 * and free of '/'. The stages must take the same input shape and give the
 * same number of classes. Thresholds start at +inf (nothing exits early). NULL with err set
 * (MC_EINVAL naming the stage at fault, MC_ENOMEM).
 */
MC_API struct mc_cascade *mc_cascade_new(int n, const char *const *names,
					 struct mc_model **models, int confidence,
					 struct mc_err *err);
MC_API void mc_cascade_free(struct mc_cascade *c);

/* The file as described above: atomic, and zstd-coded for a path ending in
 * ".zst", like mc_model_save. MC_EINVAL for a NaN threshold (or names or
 * stages that mc_cascade_new would refuse). */
MC_API int mc_cascade_save(const struct mc_cascade *c, const char *path, struct mc_err *err);
MC_API int mc_cascade_serialize(const struct mc_cascade *c, void **buf, size_t *len,
				struct mc_err *err);
/* NULL with err (MC_EIO, MC_ECORRUPT naming the file and what is wrong). */
MC_API struct mc_cascade *mc_cascade_load(const char *path, struct mc_err *err);
/* Nonzero when the safetensors file at path holds a cascade (has
 * "mcomp.cascade" metadata); 0 for a model file or anything unreadable. */
MC_API int mc_file_is_cascade(const char *path);

/* Running a cascade on batches of up to max_batch samples: one executor per
 * stage, each sized max_batch. The cascade must outlive it. */
struct mc_cascade_exec;
MC_API struct mc_cascade_exec *mc_cascade_exec_new(const struct mc_cascade *c, int max_batch,
						   struct mc_err *err);
MC_API void mc_cascade_exec_free(struct mc_cascade_exec *e);
/*
 * Runs x[n, in_numel] through the cascade: logits[n, classes] receives each
 * sample's logits from the stage it exited at, and exit_stage[n] (may be
 * NULL) that stage's index. Only the samples below a stage's threshold are
 * copied and run through the next stage. A larger n runs as consecutive
 * batches of max_batch. A sample's logits are those of its stage run on the
 * samples of its batch that reached the stage, so they may differ in the
 * last bits from the stage run on another batch (the f32 GEMM takes another
 * path for 1 to 3 rows; dynamic int8 layers quantize with the batch's
 * range). Returns the output of the same computation for any thread count.
 */
MC_API void mc_cascade_forward(struct mc_cascade_exec *e, const float *x, int n, float *logits,
			       int *exit_stage);

/*
 * What running a cascade over a data set measures. accuracy and the
 * per-stage figures come from one pass over all of d; throughput256 runs all
 * of d in batches of 256 (best of 3 rounds, in samples per second);
 * latency1_ms is the mean time of a batch-1 forward over the first
 * min(d->n, 500) samples (a cascade's latency depends on the sample).
 */
struct mc_cascade_measure {
	double accuracy;
	double exit_frac[MC_CASCADE_MAX_STAGES]; /* fraction of samples exiting at stage s */
	double exit_acc[MC_CASCADE_MAX_STAGES];	 /* accuracy on those (-1 when none) */
	double throughput256;			 /* samples per second at batch 256 */
	double latency1_ms;
	int64_t bytes; /* of the cascade file */
};

/* Measures c on d (whose samples must fit the stages: MC_EINVAL otherwise).
 * Timing uses batches of 256 in one executor; to compare with one stage
 * alone, measure a cascade of just that stage. */
MC_API int mc_cascade_measure(const struct mc_cascade *c, const struct mc_dataset *d,
			      struct mc_cascade_measure *out, struct mc_err *err);

#ifdef __cplusplus
}
#endif
#endif
