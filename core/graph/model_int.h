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

/* Typed attribute setter behind struct mc_attr (core/base/param.c). */
int mc_param_set_typed(const struct mc_param_def *def, void *conf, const struct mc_attr *a,
		       struct mc_err *err);

#endif
