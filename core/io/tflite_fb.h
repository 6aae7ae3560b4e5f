/* SPDX-License-Identifier: MIT */
/*
 * tflite_fb.h - a TensorFlow Lite model as C sees it while building one:
 * buffers, tensors and operators appended by index, then packed into a
 * flatbuffer by the flatbuffers library (core/io/tflite_fb.cc, the one C++
 * unit of the core, over the builder flatc generates from
 * core/io/tflite.fbs). core/io/tflite_export.c decides what goes in; this
 * only records and packs it.
 *
 * Everything handed in (names, shapes, bytes) is copied when it is
 * appended; indices are the TFLite ones (buffer 0 is the empty buffer that
 * tensors without constant data point at). Each call returns -1 when out
 * of memory; after that the builder refuses everything, and mc_tfl_finish
 * returns -1 too.
 */
#ifndef MC_TFLITE_FB_H
#define MC_TFLITE_FB_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* TensorType and BuiltinOperator values of the TFLite schema (tflite.fbs). */
enum { MC_TFL_FLOAT32 = 0, MC_TFL_INT32 = 2, MC_TFL_INT64 = 4, MC_TFL_INT8 = 9 };
enum {
	MC_TFL_ADD = 0,
	MC_TFL_AVERAGE_POOL_2D = 1,
	MC_TFL_CONCATENATION = 2,
	MC_TFL_CONV_2D = 3,
	MC_TFL_DEPTHWISE_CONV_2D = 4,
	MC_TFL_DEQUANTIZE = 6,
	MC_TFL_FULLY_CONNECTED = 9,
	MC_TFL_LOGISTIC = 14,
	MC_TFL_MAX_POOL_2D = 17,
	MC_TFL_MUL = 18,
	MC_TFL_RELU = 19,
	MC_TFL_RELU_N1_TO_1 = 20,
	MC_TFL_RELU6 = 21,
	MC_TFL_RESHAPE = 22,
	MC_TFL_SOFTMAX = 25,
	MC_TFL_PAD = 34,
	MC_TFL_TRANSPOSE = 39,
	MC_TFL_MEAN = 40,
	MC_TFL_MAXIMUM = 55,
	MC_TFL_MINIMUM = 57,
	MC_TFL_QUANTIZE = 114,
};
/* Padding and ActivationFunctionType. */
enum { MC_TFL_SAME = 0, MC_TFL_VALID = 1 };
enum { MC_TFL_ACT_NONE = 0, MC_TFL_ACT_RELU = 1, MC_TFL_ACT_RELU6 = 3 };

/*
 * The options of one operator: the fields its BuiltinOptions table has
 * (which one follows from the operator code); the rest are ignored.
 */
struct mc_tfl_opts {
	int padding, stride_w, stride_h, filter_w, filter_h, depth_multiplier;
	int activation;
	float beta;    /* SOFTMAX */
	int axis;      /* CONCATENATION */
	int keep_dims; /* MEAN */
	int n_shape;   /* RESHAPE: new_shape[n_shape] */
	int32_t new_shape[8];
};

/* Per-tensor (n = 1) or per-axis quantization: scale[n], zero_point[n], axis. */
struct mc_tfl_quant {
	int n;
	const float *scale;
	const int64_t *zero_point;
	int axis;
};

struct mc_tfl;

struct mc_tfl *mc_tfl_new(void);
void mc_tfl_free(struct mc_tfl *b);
/* A buffer holding bytes[len] (copied); its index. */
int mc_tfl_buffer(struct mc_tfl *b, const void *bytes, size_t len);
/* A tensor of type and shape[ndim], its data in buffer (0: none); q may be NULL. Its index. */
int mc_tfl_tensor(struct mc_tfl *b, const char *name, int type, int ndim, const int32_t *shape,
		  int buffer, const struct mc_tfl_quant *q);
/* An operator of code reading in[n_in] and writing out[n_out]; opts may be NULL. Its index. */
int mc_tfl_op(struct mc_tfl *b, int code, const int *in, int n_in, const int *out, int n_out,
	      const struct mc_tfl_opts *opts);
/*
 * Packs the model (schema version 3, one subgraph of the given input and
 * output tensors, description as its description) into *buf (malloc'd,
 * the caller frees it) of *len bytes. 0, or -1 when out of memory.
 */
int mc_tfl_finish(struct mc_tfl *b, int input, int output, const char *description, void **buf,
		  size_t *len);

#ifdef __cplusplus
}
#endif
#endif
