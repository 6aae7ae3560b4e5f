/* SPDX-License-Identifier: MIT */
/*
 * ops_quant_int.h - what the quantized ops share (ops_qlinear.c,
 * ops_qconv.c): their parameter slots and attribute values, and the int8
 * path, whose packed weights and input quantization live in ops_qlinear.c.
 * Not installed.
 */
#ifndef MCOMP_OPS_QUANT_INT_H
#define MCOMP_OPS_QUANT_INT_H

#include "graph/ops_int.h"

/* Values of the mode and granularity attributes, in the order of their names below. */
enum { QMODE_WEIGHT_ONLY, QMODE_DYNAMIC, QMODE_STATIC };
enum { QGRAN_TENSOR, QGRAN_CHANNEL, QGRAN_GROUP };
/* Parameter slots: weight, weight_scale, bias, then zero points or input_qparams. */
enum { QP_WEIGHT, QP_SCALE, QP_BIAS, QP_EXTRA };

extern const char *const mc_qmodes[];
extern const char *const mc_qgrans[];

/*
 * Creates the parameters of a quantized op: its weight (dtype, w_ndim, ws;
 * ws[0] outputs), weight_scale [s_ndim ss] (ones until filled), bias
 * [ws[0]], then weight_zero_point of the scales' shape (asym) or, mode
 * static, input_qparams (scale 1, zero point 0). All are buffers. 0 or the
 * error of the first that fails.
 */
int mc_qop_new_params(struct mc_node *node, enum mc_dtype dtype, int w_ndim, const int64_t *ws,
		      int s_ndim, const int64_t *ss, int asym, int mode, struct mc_err *err);
/*
 * The node's weights packed for mc_gemm_u8s8, made on first use and kept
 * until mc_qop_release. NULL when the file's scales are not finite and
 * positive, or out of memory.
 */
const struct mc_s8_weights *mc_qop_packed(const struct mc_node *node);
/* Drops the node's packed weights: the release of every quantized op. */
void mc_qop_release(struct mc_node *node);
/*
 * *sa and the returned zero point quantize the u8 input x[total] (static:
 * the node's calibrated pair; dynamic: the batch's range). -1 when the
 * stored pair is unusable.
 */
int mc_qop_input_qparams(const struct mc_node *node, int mode, const float *x, int64_t total,
			 float *sa);

#endif
