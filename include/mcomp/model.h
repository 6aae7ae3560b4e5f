/* SPDX-License-Identifier: MIT */
/*
 * mcomp/model.h - running models: forward and backward over a batch,
 * losses, batch-norm folding, and model files.
 *
 * What a model is, and how to build and change one, is in mcomp/graph.h;
 * its ops, and how a plugin adds one, in mcomp/op.h.
 *
 * Running a model needs a struct mc_exec: the activations (and, for
 * training, gradients) for batches of up to max_batch samples. An executor
 * is made for one graph: make it anew after changing the graph.
 */
#ifndef MCOMP_MODEL_H
#define MCOMP_MODEL_H

#include <mcomp/graph.h>

#ifdef __cplusplus
extern "C" {
#endif

struct mc_exec;

/* Activations for batches of up to max_batch; with training, also gradients
 * of activations and parameters. NULL with err set on ENOMEM. */
MC_API struct mc_exec *mc_exec_new(const struct mc_model *m, int max_batch, int training,
				   struct mc_err *err);
MC_API void mc_exec_free(struct mc_exec *e);
/* Seeds the randomness of training forwards (dropout); default 0. */
MC_API void mc_exec_set_seed(struct mc_exec *e, uint64_t seed);
/* Runs x[n, in_numel]; returns the output [n, n_classes], valid until the next call. */
MC_API const float *mc_forward(struct mc_exec *e, const float *x, int n);
/* Back-propagates dlogits[n, n_classes] of the last mc_forward, adding to the
 * parameter gradients (zeroed by mc_exec_zero_grad). */
MC_API void mc_backward(struct mc_exec *e, const float *dlogits);
MC_API void mc_exec_zero_grad(struct mc_exec *e);
/* Gradient of parameter p of node i (same shape as the parameter). */
MC_API float *mc_exec_grad(struct mc_exec *e, int node, int param);
/*
 * Times each node from now on: every mc_forward adds node i's wall time in
 * milliseconds to ms[2 * i], every mc_backward to ms[2 * i + 1] (ms has
 * 2 * n_nodes doubles, zeroed by the caller; NULL stops the timing). A node
 * run inside another (a relu or pool fused into the layer before it, a
 * flatten that is a view) adds about nothing; its work is in that layer's.
 */
MC_API void mc_exec_profile(struct mc_exec *e, double *ms);

/*
 * Mean softmax cross-entropy of logits[n, classes] against labels; writes
 * dlogits = (softmax - onehot) / n when dlogits is not NULL. Sums in a fixed
 * order, so the result does not depend on the thread count.
 */
MC_API float mc_softmax_xent(const float *logits, const uint8_t *labels, int n, int classes,
			     float *dlogits);

/*
 * Temperature-scaled KL divergence for distillation: T^2 times the mean over
 * the n samples of KL(p_t || softmax(z_s / T)), where teacher_probs[n, classes]
 * are the teacher's already softened probabilities (mc_softmax_t). Writes its
 * gradient in the student's logits to dlogits when not NULL. Sums in a fixed
 * order. Returns 0 (and writes nothing) when n, classes or T is not positive.
 */
MC_API float mc_kd_loss(const float *student_logits, const float *teacher_probs, int n,
			int classes, float T, float *dlogits);
/* probs[n, classes] = softmax(logits / T) per row (T > 0), computed in double. */
MC_API void mc_softmax_t(const float *logits, int n, int classes, float T, float *probs);

/* The index of the largest of row[0..n): a row's predicted class. The lowest
 * index wins a tie (and a NaN never beats what came before it); 0 when n < 1. */
MC_API int mc_argmax(const float *row, int n);

/*
 * Folds every batchnorm that reads a conv2d or linear (read by nothing else)
 * into that node's weight and bias, using the running statistics, and
 * removes the batchnorm node: the folded model computes the same inference
 * outputs (up to float rounding) with fewer ops. Any executor of m must be
 * made anew. Returns the number of nodes folded (0 when none fits), or
 * MC_ENOMEM with err set.
 */
MC_API int mc_model_fold_batchnorm(struct mc_model *m, struct mc_err *err);

/*
 * Files. A model is one safetensors file: its parameters as tensors, its
 * architecture as JSON under __metadata__["mcomp.arch"]. Saving writes a
 * temporary file beside path and renames it into place, so a failure leaves
 * no partial file and the previous one intact. A path ending in ".zst" is
 * written as one zstd frame of those bytes; loading decodes any file that
 * is a zstd frame, whatever its name (MC_ECORRUPT for a truncated or
 * corrupt frame, docs/security.md).
 */
MC_API int mc_model_save(const struct mc_model *m, const char *path, struct mc_err *err);
MC_API struct mc_model *mc_model_load(const char *path, struct mc_err *err);
/* The exact bytes mc_model_save writes (malloc'd into *buf, caller free()s). */
MC_API int mc_model_serialize(const struct mc_model *m, void **buf, size_t *len,
			      struct mc_err *err);

#ifdef __cplusplus
}
#endif
#endif
