/* SPDX-License-Identifier: MIT */
/*
 * mcomp/onnx.h - models trained elsewhere, read from ONNX files.
 *
 * An ONNX graph of one float input ([N, C, H, W] or [N, features], the
 * batch dimension symbolic or fixed) and one output becomes an mcomp model
 * (mcomp/graph.h) node by node, with its weights:
 *
 *	Gemm, MatMul (+ Add of a constant bias)   linear
 *	Conv                                      conv2d (uneven pads: pad2d first)
 *	BatchNormalization (inference)            batchnorm
 *	Relu, Clip, LeakyRelu, Sigmoid            relu, clip, leaky_relu, sigmoid
 *	HardSigmoid, relu6(x + 3) / 6             hardsigmoid
 *	HardSwish, x * relu6(x + 3) / 6           hardswish
 *	MaxPool, AveragePool                      maxpool2d, avgpool2d
 *	Pad (zeros on H and W)                    folded into a Conv or pool, or pad2d
 *	GlobalAveragePool, ReduceMean over H, W   global_avgpool
 *	Flatten (axis 1), Reshape to [N, -1]      flatten
 *	Squeeze, Unsqueeze of [N, C, 1, 1]        (nothing), or flatten
 *	Add, Mul of two activations               add, mul
 *	Add, Sub, Mul, Div of a constant          folded into the weights before
 *	Softmax, LogSoftmax (last axis)           softmax, log_softmax
 *	Dropout, Identity                         (dropped)
 *
 * Shape, Gather, Concat, Slice, Transpose, Cast, ConstantOfShape and the
 * arithmetic on constants are computed at import from the static shapes
 * (the batch size symbolic), as PyTorch exports x.view(x.size(0), -1).
 * Weights come from initializers or Constant nodes. Opsets 9 to 21 of the
 * default domain are read. Anything else (another op, an attribute outside
 * what the mcomp op computes: dilation, ceil_mode, ...)
 * is refused before any model is built, naming the node, its op type and
 * the opset; docs/pipelines.md lists what is read.
 *
 * And models out, for ONNX Runtime (opset 13; 14 with HardSwish, 21 with
 * INT4 weights; docs/interop.md): each mcomp op as its ONNX counterpart
 * (linear as Gemm, conv2d as Conv, relu6 as Clip, ...), int8 layers
 * (qlinear, qconv2d) in integer form (QuantizeLinear, or
 * DynamicQuantizeLinear, of the input; MatMulInteger or ConvInteger with
 * u8 weights; Cast, Mul by the scales, Add the bias: the steps of mcomp's
 * int8 kernels, so ONNX Runtime computes the same bits), 4-bit
 * weight-only ones as INT4 through DequantizeLinear (per tensor, channel or
 * block), 8-bit weight-only ones as f32 weights dequantized. The input is
 * "input" with a symbolic batch dimension, the output "logits". A cascade
 * becomes one model per stage with its exit rule in metadata_props.
 */
#ifndef MCOMP_ONNX_H
#define MCOMP_ONNX_H

#include <mcomp/cascade.h>
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

/*
 * What an export adds to the model and whom it tells what it did.
 * metadata_props always carries "mcomp.version"; props adds more, as
 * "key", "value" pairs ended by a NULL key (a NULL value skips its key):
 * a pipeline adds "mcomp.pipeline.sha256", its recipe's digest. log, when
 * set, receives the notes of the export (level MC_LOG_WARNING or
 * MC_LOG_INFO of mcomp/pipeline.h): a weight-only layer written as f32, a
 * pruned model written dense.
 */
struct mc_onnx_meta {
	const char *const *props;
	void (*log)(void *arg, int level, const char *msg);
	void *log_arg;
	unsigned flags; /* MC_ONNX_* below, or 0 */
};

/*
 * 4-bit weight-only layers as Gemm of their weights dequantized to f32
 * (opset 13, 4 bytes a weight, with a warning) instead of the default: the
 * 4-bit weights themselves, INT4 through DequantizeLinear with their scales
 * per tensor, per channel or per block of group_size inputs (opset 21).
 */
#define MC_ONNX_4BIT_F32 1u


/*
 * Writes m as an ONNX model to path (atomically: a temporary file beside it
 * renamed into place, so a failure leaves no partial file and the previous
 * one intact). meta may be NULL. Returns 0, or with err set: MC_EINVAL when
 * a node has no ONNX form (an op a plugin provides, an op the exporter does
 * not know; the message names the node and its op) or holds unusable
 * quantization parameters, MC_EIO when the file cannot be written,
 * MC_ENOMEM.
 */
MC_API int mc_model_save_onnx(const struct mc_model *m, const char *path,
			      const struct mc_onnx_meta *meta, struct mc_err *err);

/*
 * 0 when every node of m has an ONNX form, else MC_EINVAL with the node
 * named, as mc_model_save_onnx would fail. Reads only the graph, so a model
 * of shapes only (validation) can be checked.
 */
MC_API int mc_model_onnx_check(const struct mc_model *m, struct mc_err *err);

/* The opset mc_model_save_onnx writes m in: 13, 14 (HardSwish) or 21 (INT4 weights). */
MC_API int mc_model_onnx_opset(const struct mc_model *m, const struct mc_onnx_meta *meta);

/* The exact bytes mc_model_save_onnx writes (malloc'd into *buf, caller free()s). */
MC_API int mc_model_serialize_onnx(const struct mc_model *m, const struct mc_onnx_meta *meta,
				   void **buf, size_t *len, struct mc_err *err);

/*
 * A cascade as one ONNX model per stage, each exported as
 * mc_model_save_onnx writes a model: stage s of path "out/c.onnx" goes to
 * "out/c.stage<s>.onnx" (mc_cascade_onnx_path; a path not ending in .onnx
 * gets the suffix appended). Each file's metadata_props carries, besides
 * meta's props and "mcomp.version":
 *
 *	"mcomp.cascade"            JSON {"format": 1, "confidence": "margin",
 *	                           "rule": "...", "stages": [{"name": "mlp",
 *	                           "file": "c.stage0.onnx", "threshold": 0.79918...},
 *	                           {"name": "cnn", "file": "c.stage1.onnx"}]}
 *	"mcomp.cascade.stage"      this file's stage index, "0", "1", ...
 *	"mcomp.cascade.confidence" the measure (mc_confidence_names)
 *	"mcomp.cascade.threshold"  this stage's threshold (not on the last)
 *
 * Thresholds are written with 17 significant digits (read as a double and
 * rounded to float, they give the cascade's float back); "inf" and "-inf"
 * are strings. Every stage is serialized before any file is written, each
 * file atomically. Returns 0 or, with err set, as mc_model_save_onnx
 * (the message names the stage).
 */
MC_API int mc_cascade_save_onnx(const struct mc_cascade *c, const char *path,
				const struct mc_onnx_meta *meta, struct mc_err *err);

/* The file of stage s for path into buf[size]; -1 when it does not fit. */
MC_API int mc_cascade_onnx_path(const char *path, int stage, char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
