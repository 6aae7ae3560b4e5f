/* SPDX-License-Identifier: MIT */
/*
 * mcomp/op.h - ops: the kinds of layer a model graph is made of, and how a
 * plugin adds one.
 *
 * An op is a table of functions (struct mc_op): shape inference (setup),
 * initial values, forward and backward side by side, FLOPs, workspace and
 * release. Its attributes are typed parameters (mcomp/param.h) stored in a
 * struct of attr_size bytes. The runtime's own ops (linear, conv2d, relu,
 * ...) and a plugin's are the same kind of thing: a pass registers its ops
 * with mc_op_register() from its init hook, and a model file that uses one
 * names the op and its pass in its metadata, so that loading it without
 * the pass fails with a message naming both.
 *
 * A node (struct mc_node) is one use of an op in a model. Kernels read it;
 * passes read it through mc_model_node() (mcomp/graph.h) and change it only
 * through the graph API, never by writing its fields. The library allocates
 * every node, so fields may be added at its end without breaking plugins
 * (see "ABI" in mcomp/pass.h).
 */
#ifndef MCOMP_OP_H
#define MCOMP_OP_H

#include <mcomp/param.h>
#include <mcomp/tensor.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MC_NODE_MAX_INPUTS 4
#define MC_NODE_MAX_PARAMS 4
#define MC_NODE_INPUT (-1) /* an input index that means "the model's input" */
/* n_inputs of an op that takes from 2 to MC_NODE_MAX_INPUTS inputs (concat);
 * its kernels read node->n_inputs. */
#define MC_OP_VARIADIC 0

struct mc_node;

/* What a kernel may need beyond its inputs, set by the executor. */
struct mc_run {
	int training;  /* dropout drops; batch norm uses and updates batch statistics */
	uint64_t seed; /* dropout masks come from Philox (seed, node stream, step, index) */
	uint64_t step; /* training forwards so far; forward and backward of a step see the same */
	void *work;    /* op->workspace(node, n) bytes, 64-byte aligned, shared by all nodes */
	/* the index of sample 0 of this forward in its training batch: a group
	 * of a grouped step (mc_train_conf.grad_groups) draws dropout's masks
	 * as the whole batch would; 0 otherwise */
	int64_t sample0;
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
	int n_inputs; /* 1 to MC_NODE_MAX_INPUTS, or MC_OP_VARIADIC */
	/*
	 * Shape inference: checks attrs against the input shapes, sets
	 * node->out_ndim/out_shape and declares the node's parameters with
	 * mc_node_add_param(). Called again whenever the graph around the node
	 * changes; it must not keep anything but what it writes into the node
	 * and its attrs. Returns 0 or an error code with err set (the graph
	 * API prefixes the node's name and op).
	 */
	int (*setup)(struct mc_node *node, const int *in_ndim, const int64_t (*in_shape)[MC_MAX_DIMS],
		     struct mc_err *err);
	/* Optional: initial parameter values from the (seed, stream + p) Philox streams. */
	void (*init)(struct mc_node *node, uint64_t seed, uint64_t stream);
	/* out[n, out_numel] from in[k][n, in_numel[k]]. */
	void (*forward)(const struct mc_node *node, const struct mc_run *run, int n,
			const float *const *in, float *out);
	/* From dout, adds to the parameter gradients grads[p] and writes the input
	 * gradients din[k] (NULL when not needed). in/out are the forward's.
	 * Optional for an op that is not trained through. */
	void (*backward)(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, const float *out, const float *dout,
			 float *const *din, float *const *grads);
	/* Optional: multiply-adds counted as 2 FLOPs, per sample. */
	int64_t (*flops)(const struct mc_node *node);
	/* Optional: bytes of workspace forward or backward needs for n samples. */
	size_t (*workspace)(const struct mc_node *node, int n);
	/* Optional: frees node->cache (such as packed weights); called when the
	 * node is freed or its parameters change. */
	void (*release)(struct mc_node *node);
};

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
	void *cache; /* the op's own, freed by op->release */
	int arch_only; /* parameters have shapes but no data (validation) */
};

/*
 * Declares parameter p of node as "<node>.<what>" of the given dtype and
 * shape, for op->setup. Values start at zero (the graph API keeps the old
 * values where a parameter's shape and dtype did not change). Returns 0, or
 * an error code with err set.
 */
MC_API int mc_node_add_param(struct mc_node *node, int p, const char *what, enum mc_dtype dtype,
			     int ndim, const int64_t *shape, struct mc_err *err);

/* Whether op takes n inputs: its n_inputs, or 2 to MC_NODE_MAX_INPUTS when variadic. */
static inline int mc_op_takes(const struct mc_op *op, int n)
{
	return op->n_inputs == MC_OP_VARIADIC ? n >= 2 && n <= MC_NODE_MAX_INPUTS
					      : n == op->n_inputs;
}

/* The op named name (the runtime's or a registered one), or NULL. */
MC_API const struct mc_op *mc_op_find(const char *name);
/* NULL-terminated list of all op names, runtime and registered; valid until
 * the next mc_op_register. */
MC_API const char *const *mc_op_names(void);
/*
 * Adds op to the ops every model can use; provider names what provides it
 * (a pass name: "lowrank"), recorded in the model files that use it. op
 * and provider must outlive every model using the op (a pass's static
 * storage does: the host never unloads a pass that registered ops).
 * Registering the same op again is a no-op. Returns 0, or MC_EINVAL with err
 * set when the name is taken by another op or the table is malformed.
 */
MC_API int mc_op_register(const struct mc_op *op, const char *provider, struct mc_err *err);
/* What provides op name: NULL for the runtime's own ops and unknown names. */
MC_API const char *mc_op_provider(const char *name);

#ifdef __cplusplus
}
#endif
#endif
