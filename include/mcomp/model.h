/* SPDX-License-Identifier: MIT */
/*
 * mcomp/model.h - models as graphs of ops with named parameter tensors.
 *
 * A model takes one input of a fixed per-sample shape (e.g. [1, 28, 28]) and
 * is a list of nodes in topological order; the last node's output is the
 * model's output (logits). Each node applies one op (linear, relu, ...) to
 * the outputs of earlier nodes and owns its parameters, named
 * "<node>.<param>" (fc1.weight [out, in], fc1.bias [out]). A sequential layer
 * list is a chain: each node reads the one before it.
 *
 * The architecture travels as JSON (in a safetensors file's __metadata__
 * under "mcomp.arch"):
 *
 *	{"format": 1, "input": [1, 28, 28],
 *	 "nodes": [{"name": "flatten1", "op": "flatten", "inputs": ["input"], "attrs": {}},
 *		   {"name": "linear1", "op": "linear", "inputs": ["flatten1"], "attrs": {"out": 512}}]}
 *
 * Running a model needs a struct mc_exec: the activations (and, for
 * training, gradients) for batches of up to max_batch samples.
 */
#ifndef MCOMP_MODEL_H
#define MCOMP_MODEL_H

#include <mcomp/param.h>
#include <mcomp/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MC_NODE_MAX_INPUTS 4
#define MC_NODE_MAX_PARAMS 4
#define MC_NODE_INPUT (-1) /* an input index that means "the model's input" */
#define MC_ARCH_FORMAT 1

struct mc_node;
struct mc_exec;

/* What a kernel may need beyond its inputs, set by the executor. */
struct mc_run {
	int training;  /* dropout drops; batch norm uses and updates batch statistics */
	uint64_t seed; /* dropout masks come from Philox (seed, node stream, step, index) */
	uint64_t step; /* training forwards so far; forward and backward of a step see the same */
	void *work;    /* op->workspace(node, n) bytes, 64-byte aligned, shared by all nodes */
};

/*
 * struct mc_op - one kind of layer. Its attributes are typed parameters
 * (mcomp/param.h) stored in a struct of attr_size bytes; the first row is the
 * one a YAML shorthand sets ({linear: 512} sets "out").
 * Kernels see per-sample shapes and a batch of n samples, row-major.
 */
struct mc_op {
	const char *name;
	const char *help;
	size_t attr_size;
	const struct mc_param_def *attrs; /* MC_PARAM_END-terminated; may be empty */
	int n_inputs;
	/* Checks attrs against the input shapes, sets node->out_ndim/out_shape and
	 * creates node->params (zeroed). */
	int (*setup)(struct mc_node *node, const int *in_ndim, const int64_t (*in_shape)[MC_MAX_DIMS],
		     struct mc_err *err);
	/* Initial parameter values from the (seed, stream) Philox stream. */
	void (*init)(struct mc_node *node, uint64_t seed, uint64_t stream);
	/* out[n, out_numel] from in[k][n, in_numel[k]]. */
	void (*forward)(const struct mc_node *node, const struct mc_run *run, int n,
			const float *const *in, float *out);
	/* From dout, adds to the parameter gradients grads[p] and writes the input
	 * gradients din[k] (NULL when not needed). in/out are the forward's. */
	void (*backward)(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, const float *out, const float *dout,
			 float *const *din, float *const *grads);
	/* Multiply-adds counted as 2 FLOPs, per sample. */
	int64_t (*flops)(const struct mc_node *node);
	/* Optional: bytes of workspace forward or backward needs for n samples. */
	size_t (*workspace)(const struct mc_node *node, int n);
	/* Optional: frees what the op keeps for a node outside its tensors (such
	 * as packed weights); called when the node is freed. */
	void (*release)(struct mc_node *node);
};

/* The op named name, or NULL. */
MC_API const struct mc_op *mc_op_find(const char *name);
/* NULL-terminated list of all op names (static storage). */
MC_API const char *const *mc_op_names(void);

struct mc_node {
	char *name;
	const struct mc_op *op;
	void *attrs; /* op->attr_size bytes, filled per op->attrs */
	int n_inputs;
	int inputs[MC_NODE_MAX_INPUTS]; /* indices of earlier nodes, or MC_NODE_INPUT */
	int n_params;
	struct mc_tensor *params[MC_NODE_MAX_PARAMS];
	int n_buffers; /* the last n_buffers params are state, not trained (running statistics) */
	int out_ndim;
	int64_t out_shape[MC_MAX_DIMS]; /* per sample */
	int64_t out_numel;
};

struct mc_model {
	int in_ndim;
	int64_t in_shape[MC_MAX_DIMS]; /* per sample */
	int64_t in_numel;
	int n_nodes;
	struct mc_node *nodes; /* topological order; the last is the output */
	int64_t n_classes;     /* out_numel of the last node */
};

/*
 * Builds a model (parameters zeroed) from architecture JSON. origin names
 * where the JSON came from, for messages ("model.safetensors"). NULL with
 * err set (MC_ECORRUPT for malformed JSON, MC_EINVAL for a bad architecture).
 */
MC_API struct mc_model *mc_model_from_arch(const char *json, const char *origin,
					   struct mc_err *err);
/* The architecture JSON of m (malloc'd, caller free()s), or NULL on ENOMEM. */
MC_API char *mc_model_arch(const struct mc_model *m);
/* Fills every parameter with its op's initial values from seed. */
MC_API void mc_model_init(struct mc_model *m, uint64_t seed);
MC_API struct mc_model *mc_model_dup(const struct mc_model *m, struct mc_err *err);
MC_API void mc_model_free(struct mc_model *m);

/* The parameter tensor named name ("fc1.weight"), or NULL. */
MC_API struct mc_tensor *mc_model_param(const struct mc_model *m, const char *name);
/* Counts over all parameters. */
MC_API int64_t mc_model_nparams(const struct mc_model *m);
MC_API int64_t mc_model_nonzeros(const struct mc_model *m);
/* Forward FLOPs per sample. */
MC_API int64_t mc_model_flops(const struct mc_model *m);

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
 * no partial file and the previous one intact.
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
