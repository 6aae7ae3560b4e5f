/* SPDX-License-Identifier: MIT */
/*
 * ops_norm.c - batch normalization and dropout: the ops that behave
 * differently in training (run->training) and inference.
 *
 * Batch norm normalizes each channel of [C, H, W] (or each feature of [F])
 * over the batch and the spatial positions. Each thread owns whole channels
 * and sums them in one order (in double), so statistics, running averages
 * and gradients are the same bits for any thread count (a thread runs a few
 * channels' sums side by side, each in its own order: BN_G). Its running
 * statistics are parameters 2 and 3, marked as buffers (n_buffers = 2) so
 * that optimizers leave them alone; they are saved with the model.
 *
 * Dropout's mask is a pure function of (run->seed, the node's name, run->step,
 * element index): the backward pass recomputes it instead of storing it.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "graph/ops_int.h"

/* ---------------------------------------------------------------- batchnorm */

struct bn_attrs {
	double momentum, eps;
	int64_t area; /* values per channel per sample, set by setup; not an attribute */
};

static const struct mc_param_def bn_attrs[] = {
    MC_PARAM_FLOAT(struct bn_attrs, momentum, "0.1", 0, 1,
		   "weight of the batch in the running statistics"),
    MC_PARAM_FLOAT(struct bn_attrs, eps, "1e-5", 1e-12, 1, "added to the variance"),
    MC_PARAM_END,
};

static int bn_setup(struct mc_node *node, const int *in_ndim,
		    const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct bn_attrs *a = node->attrs;
	int64_t shape[1] = {in_shape[0][0]};
	static const char *const what[4] = {"weight", "bias", "running_mean", "running_var"};

	a->area = 1;
	for (int d = 1; d < in_ndim[0]; d++)
		a->area *= in_shape[0][d]; /* the model checked the product */
	for (int p = 0; p < 4; p++) {
		int r = mc_node_new_param(node, p, what[p], 1, shape, err);

		if (r)
			return r;
	}
	node->n_buffers = 2;
	return mc_same_shape_setup(node, in_ndim, in_shape, err);
}

/* Like PyTorch's nn.BatchNorm: weight 1, bias 0, running mean 0, running var 1. */
static void bn_init(struct mc_node *node, uint64_t seed, uint64_t stream)
{
	for (int p = 0; p < 4; p++) {
		float *v = node->params[p]->data;

		for (int64_t c = 0; c < node->params[p]->numel; c++)
			v[c] = p == 0 || p == 3 ? 1.0f : 0.0f;
	}
}

/*
 * Channels per work item. Each channel's sums run in one order (samples,
 * then positions, in double), a dependency chain of additions; a work item
 * runs BN_G channels' chains side by side so that they overlap in the
 * pipeline, each still summed in its own order: the same bits as one
 * channel at a time.
 */
#define BN_G 4

/* Mean and variance of channels c0 .. c0+g-1 (g <= BN_G): the batch's
 * (training) or the running ones. */
static void bn_stats(const struct mc_node *node, const struct mc_run *run, int n, const float *x,
		     int64_t c0, int g, double *mean, double *var)
{
	const struct bn_attrs *a = node->attrs;
	int64_t C = node->out_shape[0], S = a->area;
	double sum[BN_G] = {0}, sq[BN_G] = {0}, cnt = (double)n * S;

	if (!run->training) {
		for (int k = 0; k < g; k++) {
			mean[k] = ((const float *)node->params[2]->data)[c0 + k];
			var[k] = ((const float *)node->params[3]->data)[c0 + k];
		}
		return;
	}
	for (int s = 0; s < n; s++) {
		const float *r = x + ((int64_t)s * C + c0) * S;

		if (g == BN_G)
			for (int64_t j = 0; j < S; j++) {
				sum[0] += r[j];
				sum[1] += r[S + j];
				sum[2] += r[2 * S + j];
				sum[3] += r[3 * S + j];
			}
		else
			for (int k = 0; k < g; k++)
				for (int64_t j = 0; j < S; j++)
					sum[k] += r[k * S + j];
	}
	for (int k = 0; k < g; k++)
		mean[k] = sum[k] / cnt;
	for (int s = 0; s < n; s++) {
		const float *r = x + ((int64_t)s * C + c0) * S;

		if (g == BN_G) {
			double m0 = mean[0], m1 = mean[1], m2 = mean[2], m3 = mean[3];

			for (int64_t j = 0; j < S; j++) {
				sq[0] += (r[j] - m0) * (r[j] - m0);
				sq[1] += (r[S + j] - m1) * (r[S + j] - m1);
				sq[2] += (r[2 * S + j] - m2) * (r[2 * S + j] - m2);
				sq[3] += (r[3 * S + j] - m3) * (r[3 * S + j] - m3);
			}
		} else
			for (int k = 0; k < g; k++)
				for (int64_t j = 0; j < S; j++)
					sq[k] += (r[k * S + j] - mean[k]) * (r[k * S + j] - mean[k]);
	}
	for (int k = 0; k < g; k++)
		var[k] = sq[k] / cnt; /* biased, as the normalization uses */
}

/* out[n, C, S] = (in - mean[C]) / sqrt(var[C] + eps) * weight[C] + bias[C];
 * training also moves the running statistics towards the batch's. */
static void bn_forward(const struct mc_node *node, const struct mc_run *run, int n,
		       const float *const *in, float *out)
{
	const struct bn_attrs *a = node->attrs;
	const float *w = node->params[0]->data, *b = node->params[1]->data;
	float *rm = node->params[2]->data, *rv = node->params[3]->data;
	int64_t C = node->out_shape[0], S = a->area, N = (int64_t)n * S;
	int64_t groups = (C + BN_G - 1) / BN_G;

#pragma omp parallel for schedule(static) if ((int64_t)n * C * S >= MC_PAR_MIN)
	for (int64_t gi = 0; gi < groups; gi++) {
		int64_t c0 = gi * BN_G;
		int g = C - c0 < BN_G ? (int)(C - c0) : BN_G;
		double mean[BN_G], var[BN_G];

		bn_stats(node, run, n, in[0], c0, g, mean, var);
		for (int k = 0; k < g; k++) {
			int64_t c = c0 + k;
			float scale = (float)(w[c] / sqrt(var[k] + a->eps));
			float shift = (float)(b[c] - mean[k] * scale);

			for (int s = 0; s < n; s++) {
				const float *x = in[0] + ((int64_t)s * C + c) * S;
				float *y = out + ((int64_t)s * C + c) * S;

#pragma omp simd
				for (int64_t j = 0; j < S; j++)
					y[j] = x[j] * scale + shift;
			}
			if (run->training) {
				/* the running variance is unbiased, as PyTorch keeps it */
				double unbiased = N > 1 ? var[k] * (double)N / (double)(N - 1) : var[k];

				rm[c] = (float)((1 - a->momentum) * rm[c] + a->momentum * mean[k]);
				rv[c] = (float)((1 - a->momentum) * rv[c] + a->momentum * unbiased);
			}
		}
	}
}

void mc_batchnorm_affine(const struct mc_node *node, float *scale, float *shift)
{
	const struct bn_attrs *a = node->attrs;
	const float *w = node->params[0]->data, *b = node->params[1]->data;
	const float *rm = node->params[2]->data, *rv = node->params[3]->data;

	/* bn_forward's scale and shift from the running statistics, expression for expression */
	for (int64_t c = 0; c < node->out_shape[0]; c++) {
		double mean = rm[c], var = rv[c];

		scale[c] = (float)(w[c] / sqrt(var + a->eps));
		shift[c] = (float)(b[c] - mean * scale[c]);
	}
}

/* dx = w * istd * (dy - (sdy + xhat * sdyx) / N) over one row (training) */
static void bn_dx_train(const float *x, const float *dy, float *dx, int64_t S, double mean,
			double istd, double sdy, double sdyx, double N, double w)
{
#pragma omp simd
	for (int64_t j = 0; j < S; j++) {
		double g = dy[j];

		g -= (sdy + (x[j] - mean) * istd * sdyx) / N;
		dx[j] = (float)(w * istd * g);
	}
}

/* dweight += sum dout * xhat, dbias += sum dout; din through the batch statistics
 * in training, through the fixed running ones in inference. */
static void bn_backward(const struct mc_node *node, const struct mc_run *run, int n,
			const float *const *in, const float *out, const float *dout,
			float *const *din, float *const *grads)
{
	const struct bn_attrs *a = node->attrs;
	const float *w = node->params[0]->data;
	int64_t C = node->out_shape[0], S = a->area, N = (int64_t)n * S;
	int64_t groups = (C + BN_G - 1) / BN_G;

#pragma omp parallel for schedule(static) if ((int64_t)n * C * S >= MC_PAR_MIN)
	for (int64_t gi = 0; gi < groups; gi++) {
		int64_t c0 = gi * BN_G;
		int g = C - c0 < BN_G ? (int)(C - c0) : BN_G;
		double mean[BN_G], var[BN_G], istd[BN_G], sdy[BN_G] = {0}, sdyx[BN_G] = {0};

		bn_stats(node, run, n, in[0], c0, g, mean, var);
		for (int k = 0; k < g; k++)
			istd[k] = 1.0 / sqrt(var[k] + a->eps);
		for (int s = 0; s < n; s++) {
			const float *x = in[0] + ((int64_t)s * C + c0) * S;
			const float *dy = dout + ((int64_t)s * C + c0) * S;

			if (g == BN_G)
				for (int64_t j = 0; j < S; j++) {
					sdy[0] += dy[j];
					sdyx[0] += dy[j] * ((x[j] - mean[0]) * istd[0]);
					sdy[1] += dy[S + j];
					sdyx[1] += dy[S + j] * ((x[S + j] - mean[1]) * istd[1]);
					sdy[2] += dy[2 * S + j];
					sdyx[2] += dy[2 * S + j] * ((x[2 * S + j] - mean[2]) * istd[2]);
					sdy[3] += dy[3 * S + j];
					sdyx[3] += dy[3 * S + j] * ((x[3 * S + j] - mean[3]) * istd[3]);
				}
			else
				for (int k = 0; k < g; k++)
					for (int64_t j = 0; j < S; j++) {
						sdy[k] += dy[k * S + j];
						sdyx[k] += dy[k * S + j] *
							   ((x[k * S + j] - mean[k]) * istd[k]);
					}
		}
		for (int k = 0; k < g; k++) {
			int64_t c = c0 + k;

			if (grads && grads[0])
				grads[0][c] += (float)sdyx[k];
			if (grads && grads[1])
				grads[1][c] += (float)sdy[k];
			if (!din[0])
				continue;
			for (int s = 0; s < n; s++) {
				const float *x = in[0] + ((int64_t)s * C + c) * S;
				const float *dy = dout + ((int64_t)s * C + c) * S;
				float *dx = din[0] + ((int64_t)s * C + c) * S;

				if (run->training) {
					bn_dx_train(x, dy, dx, S, mean[k], istd[k], sdy[k], sdyx[k],
						    (double)N, w[c]);
					continue;
				}
#pragma omp simd
				for (int64_t j = 0; j < S; j++)
					dx[j] = (float)(w[c] * istd[k] * (double)dy[j]);
			}
		}
	}
}

static int64_t bn_flops(const struct mc_node *node)
{
	return 2 * node->out_numel;
}

const struct mc_op mc_op_batchnorm = {
    .name = "batchnorm",
    .help = "batch normalization per channel of [C, H, W] or feature of [F]: momentum, eps",
    .attr_size = sizeof(struct bn_attrs),
    .attrs = bn_attrs,
    .n_inputs = 1,
    .setup = bn_setup,
    .init = bn_init,
    .forward = bn_forward,
    .backward = bn_backward,
    .flops = bn_flops,
};

/* ---------------------------------------------------------------- dropout */

struct dropout_attrs {
	double p;
};

static const struct mc_param_def dropout_attrs[] = {
    MC_PARAM_FLOAT(struct dropout_attrs, p, "0.5", 0, 1, "probability of zeroing a value"),
    MC_PARAM_END,
};

static int dropout_setup(struct mc_node *node, const int *in_ndim,
			 const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	const struct dropout_attrs *a = node->attrs;

	if (a->p >= 1.0)
		return mc_err_set(err, MC_EINVAL,
				  "dropout p %g would zero everything; use p in [0, 1)", a->p);
	return mc_same_shape_setup(node, in_ndim, in_shape, err);
}

/*
 * y[i] = x[i] * mask[i] / (1 - p), where value i of step t keeps when its
 * uniform draw is >= p. With u = i + sample0 * out_numel its index in the
 * whole batch (sample0: struct mc_run), the draw is word u % 4 of Philox
 * block (seed, MC_STREAM_DROPOUT | hash(name) << 24, t << 40 | u / 4): a
 * pure function of the index, whichever thread computes it and however the
 * batch is split into groups.
 */
static void dropout_apply(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *x, float *y)
{
	const struct dropout_attrs *a = node->attrs;
	int64_t total = (int64_t)n * node->out_numel;
	uint64_t stream = MC_STREAM_DROPOUT | (uint64_t)mc_node_hash(node) << 24;
	uint32_t cut = (uint32_t)(a->p * 16777216.0); /* p in units of 2^-24 */
	float scale = (float)(1.0 / (1.0 - a->p));
	int64_t base = run->sample0 * node->out_numel;

	if (!run->training || a->p == 0.0) {
		if (x != y)
			memcpy(y, x, (size_t)total * sizeof(float));
		return;
	}
#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < total; c += MC_CHUNK) {
		int64_t end = c + MC_CHUNK < total ? c + MC_CHUNK : total;

		for (int64_t i = c; i < end;) {
			uint64_t u = (uint64_t)(i + base);
			uint32_t w[4];

			mc_philox(run->seed, stream, run->step << 40 | u / 4, w);
			for (int k = (int)(u % 4); k < 4 && i < end; k++, i++)
				y[i] = (w[k] >> 8) >= cut ? x[i] * scale : 0.0f;
		}
	}
}

static void dropout_forward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	dropout_apply(node, run, n, in[0], out);
}

/* din = dout * mask / (1 - p): the same mask, drawn again */
static void dropout_backward(const struct mc_node *node, const struct mc_run *run, int n,
			     const float *const *in, const float *out, const float *dout,
			     float *const *din, float *const *grads)
{
	if (din[0])
		dropout_apply(node, run, n, dout, din[0]);
}

const struct mc_op mc_op_dropout = {
    .name = "dropout",
    .help = "zeroes values with probability p while training, scaling the rest by 1/(1-p)",
    .attr_size = sizeof(struct dropout_attrs),
    .attrs = dropout_attrs,
    .n_inputs = 1,
    .setup = dropout_setup,
    .forward = dropout_forward,
    .backward = dropout_backward,
    .flops = mc_zero_flops,
};
