/* SPDX-License-Identifier: MIT */
/*
 * mcomp/tflite.h - models out as TensorFlow Lite flatbuffers, for the
 * TFLite interpreter and the runtimes that read its files (Arm NN's TFLite
 * parser, among others; docs/interop.md).
 *
 * Batch norms are folded into the convolution or linear layer before them
 * first (mc_model_fold_batchnorm, on a copy). Then each mcomp op becomes
 * its TFLite builtin:
 *
 *	linear                      FULLY_CONNECTED
 *	conv2d (groups 1)           CONV_2D, weights OHWI
 *	conv2d (groups = in)        DEPTHWISE_CONV_2D, weights [1, k, k, out]
 *	relu, relu6, clip, sigmoid  RELU, RELU6 (or RELU_N1_TO_1, MAXIMUM and
 *	                            MINIMUM for other bounds), LOGISTIC
 *	add                         ADD
 *	maxpool2d, avgpool2d        MAX_POOL_2D, AVERAGE_POOL_2D
 *	global_avgpool              MEAN over H and W
 *	flatten                     RESHAPE
 *	softmax                     SOFTMAX
 *	pad2d                       PAD
 *	dropout                     (nothing)
 *
 * and the int8 ops of the quantize pass's static mode follow TFLite's
 * quantization spec: int8 activations (mcomp's u8 values less 128, the
 * zero points too), int8 weights symmetric per channel (quantized_dimension
 * 0; 3 for depthwise) or per tensor, int32 biases at input scale times
 * weight scale:
 *
 *	qconv2d           CONV_2D or DEPTHWISE_CONV_2D, relu/relu6 fused
 *	qlinear           FULLY_CONNECTED (per tensor) or, per channel, a 1x1
 *	                  CONV_2D between two RESHAPEs (per-axis weights are
 *	                  CONV_2D's in the spec)
 *	qadd              ADD
 *	qglobal_avgpool   MEAN
 *
 * Each int8 tensor takes the scale and zero point its reader calibrated
 * (an op's input_qparams or qparams); maxpool2d, flatten, relu and relu6
 * between int8 ops run on int8 at their input's scale. A QUANTIZE goes
 * where mcomp quantizes an f32 tensor (the model input), a DEQUANTIZE
 * where an f32 op reads an int8 tensor. The last int8 layer, whose output
 * (the logits) no op calibrated, is written f32 over its int8 input
 * dequantized, with its weights dequantized.
 *
 * TFLite is channels-last: the input is [1, H, W, C] ([1, features] for a
 * flat input), batch 1; a flatten of [C, H, W] is laid out H, W, C, and
 * the linear layer reading it has its weight columns permuted to match, so
 * the outputs are mcomp's. The output is the last node's, f32.
 */
#ifndef MCOMP_TFLITE_H
#define MCOMP_TFLITE_H

#include <mcomp/onnx.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The TFLite file's bytes for m (malloc'd into *buf, the caller free()s).
 * meta (may be NULL): its props go into the model's description as
 * "key=value" lines after "mcomp VERSION"; its log receives the export's
 * notes. Returns 0, or with err set: MC_EINVAL when a node has no TFLite
 * form (the message names the node, its op and what to do), or holds
 * unusable quantization parameters; MC_ENOMEM.
 */
MC_API int mc_model_serialize_tflite(const struct mc_model *m, const struct mc_onnx_meta *meta,
				     void **buf, size_t *len, struct mc_err *err);

/* The same, written to path atomically (no partial file; the previous one kept on failure). */
MC_API int mc_model_save_tflite(const struct mc_model *m, const char *path,
				const struct mc_onnx_meta *meta, struct mc_err *err);

/*
 * 0 when every node of m has a TFLite form (its op and attributes: a
 * grouped convolution other than depthwise, a dynamic or weight-only int8
 * layer are refused), else MC_EINVAL naming the node. Reads only the
 * graph, so a model of shapes only (validation) can be checked.
 */
MC_API int mc_model_tflite_check(const struct mc_model *m, struct mc_err *err);

#ifdef __cplusplus
}
#endif
#endif
