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
