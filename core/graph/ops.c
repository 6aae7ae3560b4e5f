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
#include <stdlib.h>
#include <string.h>

#include "graph/ops_int.h"
#include "graph/model_int.h"

const struct mc_param_def mc_no_attrs[] = {MC_PARAM_END};

int mc_node_new_param(struct mc_node *node, int p, const char *what, int ndim, const int64_t *shape,
		      struct mc_err *err)
{
	return mc_node_add_param(node, p, what, MC_F32, ndim, shape, err);
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

void mc_par_copy(float *dst, const float *src, int64_t n)
{
#pragma omp parallel for schedule(static) if (n >= MC_PAR_MIN)
	for (int i = 0; i < MC_COPY_PIECES; i++) {
		int64_t a = n * i / MC_COPY_PIECES, b = n * (i + 1) / MC_COPY_PIECES;

		if (b <= a)
			continue;
		if (src)
			memcpy(dst + a, src + a, (size_t)(b - a) * sizeof(float));
		else
			memset(dst + a, 0, (size_t)(b - a) * sizeof(float));
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

int64_t mc_numel_flops(const struct mc_node *node)
{
	return node->out_numel;
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
    &mc_op_add,	      &mc_op_avgpool2d,	 &mc_op_batchnorm,   &mc_op_clip,
    &mc_op_concat,    &mc_op_conv2d,    &mc_op_dropout,	 &mc_op_fake_quant, &mc_op_flatten,     &mc_op_global_avgpool,
    &mc_op_hardsigmoid, &mc_op_hardswish, &mc_op_leaky_relu, &mc_op_linear,
    &mc_op_log_softmax, &mc_op_maxpool2d, &mc_op_mul,	      &mc_op_pad2d, &mc_op_qadd, &mc_op_qconv2d,
    &mc_op_qglobal_avgpool, &mc_op_qlinear,   &mc_op_relu,	 &mc_op_relu6,	     &mc_op_sigmoid,
    &mc_op_softmax,
};
#define N_OPS (sizeof(ops) / sizeof(ops[0]))

static const char *const op_names[] = {
    "add",	   "avgpool2d",	  "batchnorm", "clip", "concat", "conv2d",    "dropout",
    "fake_quant", "flatten",	   "global_avgpool", "hardsigmoid", "hardswish", "leaky_relu", "linear",
    "log_softmax", "maxpool2d",	  "mul",	"pad2d", "qadd", "qconv2d", "qglobal_avgpool", "qlinear",   "relu",
    "relu6",	   "sigmoid",	  "softmax",	NULL,
};
_Static_assert(sizeof(op_names) / sizeof(op_names[0]) == N_OPS + 1,
	       "op_names must list every op of the table");

/*
 * Ops that plugins registered, after the runtime's own. Registration
 * happens while the host loads passes, before any model is built, so the
 * table is not locked; mc_op_names is rebuilt on each registration.
 */
struct reg_op {
	const struct mc_op *op;
	const char *provider;
};

static struct reg_op *reg;
static int n_reg;
static const char **all_names; /* op_names then the registered, NULL-terminated */

const struct mc_op *mc_op_find(const char *name)
{
	for (size_t i = 0; name && i < N_OPS; i++)
		if (!strcmp(ops[i]->name, name))
			return ops[i];
	for (int i = 0; name && i < n_reg; i++)
		if (!strcmp(reg[i].op->name, name))
			return reg[i].op;
	return NULL;
}

const char *const *mc_op_names(void)
{
	return all_names ? (const char *const *)all_names : op_names;
}

const char *mc_op_provider(const char *name)
{
	for (int i = 0; name && i < n_reg; i++)
		if (!strcmp(reg[i].op->name, name))
			return reg[i].provider;
	return NULL;
}

static int valid_op_name(const char *s)
{
	if (!s || !*s || strlen(s) > 64)
		return 0;
	for (; *s; s++)
		if (!(*s == '_' || *s == '-' || (*s >= 'a' && *s <= 'z') ||
		      (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9')))
			return 0;
	return 1;
}

int mc_op_register(const struct mc_op *op, const char *provider, struct mc_err *err)
{
	const struct mc_op *have;
	struct reg_op *r;
	const char **names;

	if (!op || !valid_op_name(op->name))
		return mc_err_set(err, MC_EINVAL,
				  "%s: op name '%s' is not usable; use letters, digits, '_' and "
				  "'-'",
				  provider ? provider : "op", op && op->name ? op->name : "(null)");
	have = mc_op_find(op->name);
	if (have == op)
		return 0;
	if (have)
		return mc_err_set(err, MC_EINVAL,
				  "%s: op '%s' is taken by %s; name the op otherwise",
				  provider ? provider : "op", op->name,
				  mc_op_provider(op->name) ? mc_op_provider(op->name)
							   : "the runtime");
	if (!op->setup || !op->forward || !op->attrs || op->n_inputs < MC_OP_VARIADIC ||
	    op->n_inputs > MC_NODE_MAX_INPUTS)
		return mc_err_set(err, MC_EINVAL,
				  "%s: op '%s' needs setup, forward, an attrs table (may be just "
				  "MC_PARAM_END) and 1 to %d inputs (or MC_OP_VARIADIC)",
				  provider ? provider : "op", op->name, MC_NODE_MAX_INPUTS);
	for (int i = 0; op->attrs[i].name; i++)
		if (op->attrs[i].offset >= op->attr_size)
			return mc_err_set(err, MC_EINVAL,
					  "%s: op '%s': attribute '%s' lies outside attr_size",
					  provider ? provider : "op", op->name, op->attrs[i].name);
	r = realloc(reg, (size_t)(n_reg + 1) * sizeof(*reg));
	if (!r)
		return mc_err_set(err, MC_ENOMEM, "registering op '%s': out of memory", op->name);
	reg = r;
	names = realloc(all_names, (N_OPS + (size_t)n_reg + 2) * sizeof(*names));
	if (!names)
		return mc_err_set(err, MC_ENOMEM, "registering op '%s': out of memory", op->name);
	all_names = names;
	reg[n_reg].op = op;
	reg[n_reg].provider = provider;
	n_reg++;
	for (size_t i = 0; i < N_OPS; i++)
		all_names[i] = op_names[i];
	for (int i = 0; i < n_reg; i++)
		all_names[N_OPS + (size_t)i] = reg[i].op->name;
	all_names[N_OPS + (size_t)n_reg] = NULL;
	return 0;
}

/* ---------------------------------------------------------------- loss */

void mc_softmax_xent_part(const float *logits, const uint8_t *labels, int n, int classes,
			  int n_all, float *dlogits, double *total)
{
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
		*total += lse - z[y];
		if (dlogits) {
			float *d = dlogits + (size_t)i * classes;

			for (int c = 0; c < classes; c++)
				d[c] = (float)((exp((double)z[c] - lse) - (c == y)) / n_all);
		}
	}
}

float mc_softmax_xent(const float *logits, const uint8_t *labels, int n, int classes,
		      float *dlogits)
{
	double total = 0.0;

	if (n <= 0 || classes <= 0)
		return 0.0f;
	mc_softmax_xent_part(logits, labels, n, classes, n, dlogits, &total);
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
