/* SPDX-License-Identifier: MIT */
/*
 * ops.c - the op table, helpers every op file shares, and the losses:
 * softmax cross-entropy and the temperature-scaled KL divergence of
 * distillation.
 *
 * Parameter p of a node is drawn from the Philox stream (seed, stream + p),
 * where mc_model_init gives each node its own range of MC_NODE_MAX_PARAMS
 * streams: initial values depend on the node's place and never on the
 * thread count.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "graph/ops_int.h"

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

uint32_t mc_node_hash(const struct mc_node *node)
{
	uint32_t h = 2166136261u;

	for (const char *p = node->name ? node->name : ""; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h;
}

/* ---------------------------------------------------------------- the table */

/* In the order of their names. */
static const struct mc_op *const ops[] = {
    &mc_op_add,	    &mc_op_avgpool2d,	   &mc_op_batchnorm, &mc_op_conv2d,
    &mc_op_dropout, &mc_op_flatten,	   &mc_op_global_avgpool, &mc_op_linear,
    &mc_op_log_softmax, &mc_op_maxpool2d, &mc_op_qconv2d, &mc_op_qlinear, &mc_op_relu,
    &mc_op_softmax,
};
#define N_OPS (sizeof(ops) / sizeof(ops[0]))

static const char *const op_names[] = {
    "add",	"avgpool2d",	"batchnorm", "conv2d", "dropout", "flatten", "global_avgpool",
    "linear", "log_softmax", "maxpool2d", "qconv2d", "qlinear", "relu",	  "softmax", NULL,
};
_Static_assert(sizeof(op_names) / sizeof(op_names[0]) == N_OPS + 1,
	       "op_names must list every op of the table");

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

void mc_softmax_t(const float *logits, int n, int classes, float T, float *probs)
{
	for (int i = 0; i < n; i++) {
		const float *z = logits + (size_t)i * classes;
		float *p = probs + (size_t)i * classes;
		double mx = z[0] / (double)T, sum = 0.0;

		for (int c = 1; c < classes; c++)
			if (z[c] / (double)T > mx)
				mx = z[c] / (double)T;
		for (int c = 0; c < classes; c++)
			sum += exp(z[c] / (double)T - mx);
		for (int c = 0; c < classes; c++)
			p[c] = (float)(exp(z[c] / (double)T - mx) / sum);
	}
}

int mc_argmax(const float *row, int n)
{
	int best = 0;

	for (int j = 1; j < n; j++)
		if (row[j] > row[best])
			best = j;
	return best;
}

/*
 * KL(p || q) = sum p (log p - log q) with q = softmax(z / T); its gradient
 * in z is (q sum(p) - p) / T. Scaled by T^2 (Hinton et al.) so that the
 * gradient's size does not shrink as T grows.
 */
float mc_kd_loss(const float *student_logits, const float *teacher_probs, int n, int classes,
		 float T, float *dlogits)
{
	double total = 0.0;

	if (n <= 0 || classes <= 0 || !(T > 0.0f))
		return 0.0f;
	/* Rows in order, in double: the sum is the same for any thread count. */
	for (int i = 0; i < n; i++) {
		const float *z = student_logits + (size_t)i * classes;
		const float *p = teacher_probs + (size_t)i * classes;
		double mx = z[0] / (double)T, sum = 0.0, lse, psum = 0.0, kl = 0.0;

		for (int c = 1; c < classes; c++)
			if (z[c] / (double)T > mx)
				mx = z[c] / (double)T;
		for (int c = 0; c < classes; c++)
			sum += exp(z[c] / (double)T - mx);
		lse = mx + log(sum);
		for (int c = 0; c < classes; c++) {
			psum += p[c];
			if (p[c] > 0.0f)
				kl += p[c] * (log((double)p[c]) - (z[c] / (double)T - lse));
		}
		total += kl;
		if (dlogits) {
			float *d = dlogits + (size_t)i * classes;

			for (int c = 0; c < classes; c++)
				d[c] = (float)((double)T *
					       (exp(z[c] / (double)T - lse) * psum - p[c]) / n);
		}
	}
	return (float)((double)T * T * total / n);
}
