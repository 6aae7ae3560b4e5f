/* SPDX-License-Identifier: MIT */
/*
 * mcomp/onnx.h - models trained elsewhere, read from ONNX files.
 *
 * An ONNX graph of one float input ([N, C, H, W] or [N, features], the
 * batch dimension symbolic or fixed) and one output becomes an mcomp model
 * (mcomp/graph.h) node by node, with its weights:
 *
 *	Gemm, MatMul (+ Add of a constant bias)   linear
 *	Conv                                      conv2d
 *	BatchNormalization (inference)            batchnorm
 *	Relu                                      relu
 *	MaxPool, AveragePool                      maxpool2d, avgpool2d
 *	GlobalAveragePool                         global_avgpool
 *	Flatten (axis 1), Reshape to [N, -1]      flatten
 *	Add of two activations                    add
 *	Softmax, LogSoftmax (last axis)           softmax, log_softmax
 *	Dropout, Identity                         (dropped)
 *
 * Weights come from initializers or Constant nodes. Opsets 9 to 18 of the
 * default domain are read. Anything else (another op, an attribute outside
 * what the mcomp op computes: asymmetric padding, dilation, ceil_mode, ...)
 * is refused before any model is built, naming the node, its op type and
 * the opset; docs/pipelines.md lists what is read.
 */
#ifndef MCOMP_ONNX_H
#define MCOMP_ONNX_H

#include <mcomp/graph.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The model of the ONNX file at path, its parameters filled from the
 * file's weights. NULL with err set: MC_EIO when the file cannot be read,
 * MC_ECORRUPT when it is not a well-formed ONNX model (truncated, names
 * that nothing produces, a cycle, weights of the wrong size), MC_EINVAL
 * when it uses what mcomp cannot compute (the message names the node, its
 * op type and opset, and lists the ops read), MC_ENOMEM.
 */
MC_API struct mc_model *mc_model_from_onnx(const char *path, struct mc_err *err);

/* The same from the file's bytes in memory; origin names them in messages. */
MC_API struct mc_model *mc_model_from_onnx_buf(const void *buf, size_t len, const char *origin,
					       struct mc_err *err);

#ifdef __cplusplus
}
#endif
#endif
