// SPDX-License-Identifier: MIT
/*
 * calibrate.c - activation ranges for static quantization: the f32 model
 * runs over calibration samples one node at a time, the inputs of every
 * layer to be quantized are kept, and each layer's range comes from
 * mc_act_range (min/max, a percentile, or least squared error).
 *
 * Under mpirun the forwards are shared out over the ranks in blocks of
 * CALIB_BATCH samples (mc_dist_part: each block the same forward whatever
 * the rank count), the kept inputs gathered (mc_dist_gather), and every
 * rank takes the ranges from all of them: the bytes of one process's.
 */
#include <stdlib.h>
#include <string.h>

#include "quantize.h"

#define CALIB_BATCH 256

int quantize_calibrate(const struct mc_model *m, const struct mc_dataset *d, int samples,
		       const int *targets, int n_targets, enum mc_range_method method, double pct,
		       float *lo, float *hi, struct mc_err *err)
{
	int *srcs = calloc((size_t)n_targets + 1, sizeof(*srcs)), ret;

	if (!srcs)
		return mc_err_set(err, MC_ENOMEM, "calibration: out of memory");
	for (int t = 0; t < n_targets; t++)
		srcs[t] = mc_model_node(m, targets[t])->inputs[0];
	ret = quantize_calibrate_outputs(m, d, samples, srcs, n_targets, method, pct, lo, hi, err);
	free(srcs);
	return ret;
}

int quantize_calibrate_outputs(const struct mc_model *m, const struct mc_dataset *d, int samples,
			       const int *srcs, int n_targets, enum mc_range_method method,
			       double pct, float *lo, float *hi, struct mc_err *err)
{
	float **act = calloc((size_t)mc_model_n_nodes(m), sizeof(*act));
	float **seen = calloc((size_t)n_targets, sizeof(*seen));
	struct mc_run run = { 0 };
	size_t work = 0;
	int ret = 0, n = samples < d->n ? samples : (int)d->n;
	int64_t first, end; /* this rank's samples */

	if (!act || !seen)
		goto nomem;
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		act[i] = mc_calloc((size_t)CALIB_BATCH * (size_t)nd->out_numel, sizeof(float));
		if (!act[i])
			goto nomem;
		if (nd->op->workspace && nd->op->workspace(nd, CALIB_BATCH) > work)
			work = nd->op->workspace(nd, CALIB_BATCH);
	}
	for (int t = 0; t < n_targets; t++) {
		int src = srcs[t];
		int64_t w = src == MC_NODE_INPUT ? mc_model_in_numel(m) : mc_model_node(m, src)->out_numel;

		seen[t] = mc_calloc((size_t)n * (size_t)w, sizeof(float));
		if (!seen[t])
			goto nomem;
	}
	if (work && !(run.work = mc_calloc(work, 1)))
		goto nomem;
	mc_dist_part(n, CALIB_BATCH, &first, &end);
	for (int b0 = (int)first; b0 < end; b0 += CALIB_BATCH) {
		int bn = end - b0 < CALIB_BATCH ? (int)end - b0 : CALIB_BATCH;
		const float *x = d->x + (size_t)b0 * (size_t)d->sample_numel;

		for (int i = 0; i < mc_model_n_nodes(m); i++) {
			const struct mc_node *nd = mc_model_node(m, i);
			const float *in[MC_NODE_MAX_INPUTS];

			for (int k = 0; k < nd->n_inputs; k++)
				in[k] = nd->inputs[k] == MC_NODE_INPUT ? x : act[nd->inputs[k]];
			nd->op->forward(nd, &run, bn, in, act[i]);
		}
		for (int t = 0; t < n_targets; t++) {
			int src = srcs[t];
			int64_t w = src == MC_NODE_INPUT ? mc_model_in_numel(m) : mc_model_node(m, src)->out_numel;

			memcpy(seen[t] + (size_t)b0 * (size_t)w, src == MC_NODE_INPUT ? x : act[src],
			       (size_t)bn * (size_t)w * sizeof(float));
		}
	}
	for (int t = 0; t < n_targets && !ret; t++) {
		int src = srcs[t];
		int64_t w = src == MC_NODE_INPUT ? mc_model_in_numel(m) : mc_model_node(m, src)->out_numel;

		ret = mc_dist_gather(seen[t], n, CALIB_BATCH, (size_t)w * sizeof(float), err);
		if (!ret)
			ret = mc_act_range(seen[t], (size_t)n * (size_t)w, method, pct, &lo[t], &hi[t], err);
	}
	goto out;
nomem:
	ret = mc_err_set(err, MC_ENOMEM, "calibration: out of memory for %d samples; use fewer",
			 samples);
out:
	for (int t = 0; seen && t < n_targets; t++)
		mc_free(seen[t]);
	for (int i = 0; act && i < mc_model_n_nodes(m); i++)
		mc_free(act[i]);
	mc_free(run.work);
	free(seen);
	free(act);
	return ret;
}
