/* SPDX-License-Identifier: MIT */
/*
 * model_int.h - the model struct behind mcomp/graph.h's opaque type, for
 * the core's own files (executor, optimizers, model files) and the unit
 * tests. Passes see only the accessors. Not installed.
 */
#ifndef MCOMP_MODEL_INT_H
#define MCOMP_MODEL_INT_H

#include <mcomp/model.h>

/* Nodes of one model at most: far beyond real networks, and small enough
 * that reading a hostile architecture stays fast (names are checked for
 * uniqueness against every earlier node). */
#define MC_MODEL_MAX_NODES 8192

struct mc_model {
	int in_ndim;
	int64_t in_shape[MC_MAX_DIMS]; /* per sample */
	int64_t in_numel;
	int n_nodes, cap_nodes;
	struct mc_node **nodes; /* topological order; the last is the output; each malloc'd */
	int64_t n_classes;	/* out_numel of the last node */
	int arch_only;		/* parameters have shapes but no data */
};

/*
 * Appends a node of op reading inputs[n_inputs] (indices of nodes, or
 * MC_NODE_INPUT) with a copy of conf, an attribute struct of op already
 * filled and checked (the pipeline's layer builder). Returns the node's
 * index, or an error code with err set; the model is unchanged on error.
 */
int mc_model_add_conf(struct mc_model *m, const char *name, const struct mc_op *op,
		      const int *inputs, int n_inputs, const void *conf, struct mc_err *err);

/* Bytes of m's parameter data (with data or of shapes only). */
uint64_t mc_model_param_bytes(const struct mc_model *m);

/*
 * Gives a model of shapes only (arch_only) its parameter data: each node
 * set up again as building it with data would have (zeros, or the op's
 * starting values; mc_model_init draws the rest). Large parameters are
 * zeroed lazily (mc_calloc), so what a caller never writes costs nothing.
 * 0, or an error code with m unchanged. A model with data is left as it is.
 */
int mc_model_materialize(struct mc_model *m, struct mc_err *err);

/* mc_model_from_arch without the data: a model of shapes only, which
 * mc_model_materialize completes once its size is known to fit. */
struct mc_model *mc_model_from_arch_shapes(const char *json, const char *origin,
					   struct mc_err *err);
/* 0 when m's parameter data and extra bytes fit the memory limit; else
 * MC_ENOMEM: "ORIGIN: the model's N parameters needs SIZE ...". */
int mc_model_fits(const struct mc_model *m, uint64_t extra, const char *origin,
		  struct mc_err *err);

/* Sets the count of training forwards done, which keys dropout's masks:
 * a run resumed after step s continues as if it had run s forwards. */
void mc_exec_set_step(struct mc_exec *e, uint64_t step);
/* Sets struct mc_run's sample0 for the next forwards and backwards. */
void mc_exec_set_sample0(struct mc_exec *e, int64_t sample0);

/*
 * Data-parallel training (train.c): with defer set, mc_backward leaves the
 * parameter gradients of linear nodes alone (computing only what flows to
 * their inputs), for the caller to sum them over every rank's samples.
 * mc_exec_input is input k of node as the last forward fed it, and
 * mc_exec_dout the gradient of node's output from the last backward (not
 * for the last node, whose is the caller's dlogits).
 */
/* mc_softmax_xent's work for rows [0, n) of a batch of n_all: each row's
 * loss added to *total in order, dlogits divided by n_all. */
void mc_softmax_xent_part(const float *logits, const uint8_t *labels, int n, int classes,
			  int n_all, float *dlogits, double *total);
void mc_exec_defer_linear(struct mc_exec *e, int defer);
const float *mc_exec_input(const struct mc_exec *e, int node, int k);
const float *mc_exec_dout(const struct mc_exec *e, int node);

#endif
