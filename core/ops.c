/* SPDX-License-Identifier: MIT */
/*
 * ops.c - the op table, helpers every op file shares, and the loss.
 *
 * Parameter p of a node is drawn from the Philox stream (seed, stream + p),
 * where mc_model_init gives each node its own range of MC_NODE_MAX_PARAMS
 * streams: initial values depend on the node's place and never on the
 * thread count.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "ops_int.h"

const struct mc_param_def mc_no_attrs[] = {MC_PARAM_END};

int mc_node_new_param(struct mc_node *node, int p, const char *what, int ndim, const int64_t *shape,
		      struct mc_err *err)
{
	char name[512];

	snprintf(name, sizeof(name), "%s.%s", node->name, what);
	node->params[p] = mc_tensor_new(name, MC_F32, ndim, shape, err);
	if (!node->params[p])
		return err ? err->code : MC_ENOMEM;
	if (node->n_params < p + 1)
		node->n_params = p + 1;
	return 0;
}

void mc_fill_uniform(struct mc_tensor *t, uint64_t seed, uint64_t stream, float lo, float hi)
{
	float *x = t->data;
	int64_t n = t->numel;

#pragma omp parallel for schedule(static) if (n >= MC_PAR_MIN)
	for (int64_t b = 0; b < (n + 3) / 4; b++) {
		uint32_t w[4];

		mc_philox(seed, stream, (uint64_t)b, w);
		for (int64_t k = 0; k < 4 && 4 * b + k < n; k++)
			x[4 * b + k] = lo + (hi - lo) * ((float)(w[k] >> 8) * (1.0f / 16777216.0f));
	}
}

int mc_same_shape_setup(struct mc_node *node, const int *in_ndim,
			const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	node->out_ndim = in_ndim[0];
	memcpy(node->out_shape, in_shape[0], sizeof(node->out_shape));
	return 0;
}

int64_t mc_zero_flops(const struct mc_node *node)
{
	return 0;
}

/* ---------------------------------------------------------------- the table */

static const struct mc_op *const ops[] = {&mc_op_flatten, &mc_op_linear, &mc_op_relu};
#define N_OPS (sizeof(ops) / sizeof(ops[0]))

static const char *const op_names[N_OPS + 1] = {"flatten", "linear", "relu", NULL};

const struct mc_op *mc_op_find(const char *name)
{
	for (size_t i = 0; name && i < N_OPS; i++)
		if (!strcmp(ops[i]->name, name))
			return ops[i];
	return NULL;
}

const char *const *mc_op_names(void)
{
	return op_names;
}

/* ---------------------------------------------------------------- loss */

float mc_softmax_xent(const float *logits, const uint8_t *labels, int n, int classes,
		      float *dlogits)
{
	double total = 0.0;

	if (n <= 0 || classes <= 0)
		return 0.0f;
	/* Rows in order, in double: the sum is the same for any thread count. */
	for (int i = 0; i < n; i++) {
		const float *z = logits + (size_t)i * classes;
		int y = labels[i] < classes ? labels[i] : classes - 1;
		double mx = z[0], sum = 0.0, lse;

		for (int c = 1; c < classes; c++)
			if (z[c] > mx)
				mx = z[c];
		for (int c = 0; c < classes; c++)
			sum += exp((double)z[c] - mx);
		lse = mx + log(sum);
		total += lse - z[y];
		if (dlogits) {
			float *d = dlogits + (size_t)i * classes;

			for (int c = 0; c < classes; c++)
				d[c] = (float)((exp((double)z[c] - lse) - (c == y)) / n);
		}
	}
	return (float)(total / n);
}
