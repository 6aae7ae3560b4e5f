/* SPDX-License-Identifier: MIT */
/*
 * quantize.h - what the files of the quantize pass share: its configuration
 * and the calibration of activation ranges (calibrate.c).
 */
#ifndef MCOMP_PASS_QUANTIZE_H
#define MCOMP_PASS_QUANTIZE_H

#include <mcomp/mcomp.h>

enum { QMODE_AUTO, QMODE_WEIGHT_ONLY, QMODE_DYNAMIC, QMODE_STATIC };
enum { QGRAN_TENSOR, QGRAN_CHANNEL, QGRAN_GROUP };

struct quantize_conf {
	char *model;
	int bits;
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
};

/*
 * Runs the first samples of d through the f32 model m, node by node, and
 * sets lo[t], hi[t] to the range of the input of node targets[t] by method
 * (mcomp/tensor.h, mc_act_range). Returns 0 or an error code with err set.
 */
int quantize_calibrate(const struct mc_model *m, const struct mc_dataset *d, int samples,
		       const int *targets, int n_targets, enum mc_range_method method, double pct,
		       float *lo, float *hi, struct mc_err *err);

#endif
