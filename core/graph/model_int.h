/* SPDX-License-Identifier: MIT */
/*
 * model_int.h - the model struct behind mcomp/graph.h's opaque type, for
 * the core's own files (executor, optimizers, model files) and the unit
 * tests. Passes see only the accessors. Not installed.
 */
#ifndef MCOMP_MODEL_INT_H
#define MCOMP_MODEL_INT_H

#include <mcomp/model.h>

struct mc_model {
	int in_ndim;
	int64_t in_shape[MC_MAX_DIMS]; /* per sample */
	int64_t in_numel;
	int n_nodes;
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

#endif
