/* SPDX-License-Identifier: MIT */
/*
 * mcomp.h - the whole public interface of libmcomp.
 *
 * mcomp compresses neural networks with reproducible YAML recipes. The host
 * (mcomp/pipeline.h) reads a pipeline, finds each pass as a dlopen'd shared
 * object (mcomp/pass.h), validates every parameter (mcomp/param.h) before
 * anything runs, and runs the passes in order over the tensor runtime:
 *
 *	mcomp/common.h       errors (0 or a negative MC_E* code plus a message)
 *	mcomp/tensor.h       tensors, dtypes, GEMM, counter-based random numbers
 *	mcomp/model.h        ops, graphs of nodes, forward and backward, model files
 *	mcomp/safetensors.h  the file format, read with every offset checked
 *	mcomp/data.h         IDX data sets (Fashion-MNIST)
 *	mcomp/train.h        optimizers, the training loop, evaluation
 *	mcomp/pass.h         the pass descriptor and what a running pass may call
 *	mcomp/pipeline.h     pass registry, pipelines, measurement
 *	mcomp/cascade.h      cascades of models: files and running them
 *	mcomp/onnx.h         models read from ONNX files
 *
 * A pass includes <mcomp/mcomp.h> and nothing else of mcomp; it builds with
 * `pkg-config --cflags --libs mcomp`.
 */
#ifndef MCOMP_H
#define MCOMP_H

#include <mcomp/common.h>
#include <mcomp/param.h>
#include <mcomp/tensor.h>
#include <mcomp/model.h>
#include <mcomp/safetensors.h>
#include <mcomp/data.h>
#include <mcomp/train.h>
#include <mcomp/pass.h>
#include <mcomp/pipeline.h>
#include <mcomp/cascade.h>
#include <mcomp/onnx.h>
#include <mcomp/tflite.h>

#endif
