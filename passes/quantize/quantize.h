/* SPDX-License-Identifier: MIT */
/*
 * quantize.h - what the files of the quantize pass share: its configuration,
 * the calibration of activation ranges (calibrate.c) and quantization-aware
 * training (qat.c).
 */
#ifndef MCOMP_PASS_QUANTIZE_H
#define MCOMP_PASS_QUANTIZE_H

#include <mcomp/mcomp.h>

enum { QMODE_AUTO, QMODE_WEIGHT_ONLY, QMODE_DYNAMIC, QMODE_STATIC, QMODE_QAT };
enum { QGRAN_TENSOR, QGRAN_CHANNEL, QGRAN_GROUP };
/* mode: qat, what the layers' inputs see while training */
enum { QACT_AUTO, QACT_STATIC, QACT_LEARNED, QACT_F32 };

struct quantize_conf {
	char *model;
	int bits;
	int reduce_range; /* 8 bits: weights in [-64, 64] (mc_qspec.reduce_range) */
	int scheme; /* 0: symmetric, 1: asymmetric */
	int granularity;
	int group_size;
	int mode;
	int calibration; /* enum mc_range_method */
	double percentile;
	char *calibration_data;
	int samples;
	struct mc_list exclude;
	struct mc_map overrides;  /* PATTERN: granularity (index into grans) */
	/* mode: qat */
	int activations; /* QACT_* */
	char *data;
	int epochs;
	int batch_size;
	struct mc_train_opts train;
	int seed;
	char *float_output;
	int grad_groups; /* 0: unset */
};

/*
 * Runs the first samples of d through the f32 model m, node by node, and
 * sets lo[t], hi[t] to the range of the input of node targets[t] by method
 * (mcomp/tensor.h, mc_act_range). Returns 0 or an error code with err set.
 */
int quantize_calibrate(const struct mc_model *m, const struct mc_dataset *d, int samples,
		       const int *targets, int n_targets, enum mc_range_method method, double pct,
		       float *lo, float *hi, struct mc_err *err);

/*
 * The same for the outputs of nodes srcs[t] (MC_NODE_INPUT: the model's
 * input): the ranges of what qadd and qglobal_avgpool read and write.
 */
int quantize_calibrate_outputs(const struct mc_model *m, const struct mc_dataset *d, int samples,
			       const int *srcs, int n_targets, enum mc_range_method method,
			       double pct, float *lo, float *hi, struct mc_err *err);

/*
 * Quantization-aware training of m in place (mode: qat): the weights of the
 * n layers idx[] are fake-quantized by spec[t] (mc_quantize_weights, then
 * back) in every forward, with f32 shadow weights taking the optimizer's
 * steps; with act, each layer's input goes through a fake_quant node whose
 * range starts at [lo[t], hi[t]] (learned with learn). On return m has its
 * old graph back, its layers hold the trained shadow weights (f32) and
 * lo, hi the ranges trained with. Returns 0 or an error code with the
 * context's error set.
 */
int quantize_qat(struct mc_ctx *ctx, const struct quantize_conf *c, struct mc_model *m,
		 const int *idx, const struct mc_qspec *spec, int n, int act, int learn,
		 float *lo, float *hi);

#endif
