/* SPDX-License-Identifier: MIT */
/*
 * tflite_fb.cc - packs the model core/io/tflite_export.c describes into a
 * TensorFlow Lite flatbuffer with the flatbuffers library's builder and the
 * code flatc generates from core/io/tflite.fbs (tflite_generated.h, in the
 * build tree). The calls of tflite_fb.h record the model in vectors; a
 * flatbuffer is built leaves first, so everything is written at the end,
 * in mc_tfl_finish. No exception leaves this file: an allocation that
 * fails makes the call return -1 and the builder refuse what follows.
 */
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

#include "core/io/tflite_fb.h"
#include "core/io/tflite_generated.h"

namespace
{

struct tensor {
	std::string name;
	int type;
	std::vector<int32_t> shape;
	int buffer;
	bool quantized;
	std::vector<float> scale;
	std::vector<int64_t> zero_point;
	int axis;
};

struct op {
	int code;
	std::vector<int32_t> in, out;
	mc_tfl_opts opts;
};

} // namespace

struct mc_tfl {
	std::vector<std::vector<uint8_t>> buffers;
	std::vector<tensor> tensors;
	std::vector<op> ops;
	bool failed = false;
};

/* Runs f, turning an allocation failure into -1 (and a builder that refuses the rest). */
template <typename F> static int guarded(mc_tfl *b, F f)
{
	if (!b || b->failed)
		return -1;
	try {
		return f();
	} catch (...) {
		b->failed = true;
		return -1;
	}
}

extern "C" struct mc_tfl *mc_tfl_new(void)
{
	mc_tfl *b = new (std::nothrow) mc_tfl;

	if (b && guarded(b, [b] {
		    b->buffers.emplace_back(); /* buffer 0: empty, by convention */
		    return 0;
	    }))
		b->failed = true;
	return b;
}

extern "C" void mc_tfl_free(struct mc_tfl *b)
{
	delete b;
}

extern "C" int mc_tfl_buffer(struct mc_tfl *b, const void *bytes, size_t len)
{
	return guarded(b, [&] {
		const uint8_t *p = static_cast<const uint8_t *>(bytes);

		b->buffers.emplace_back(p, p + len);
		return static_cast<int>(b->buffers.size() - 1);
	});
}

extern "C" int mc_tfl_tensor(struct mc_tfl *b, const char *name, int type, int ndim,
			     const int32_t *shape, int buffer, const struct mc_tfl_quant *q)
{
	return guarded(b, [&] {
		tensor t;

		t.name = name;
		t.type = type;
		t.shape.assign(shape, shape + ndim);
		t.buffer = buffer;
		t.quantized = q != nullptr;
		t.axis = q ? q->axis : 0;
		if (q) {
			t.scale.assign(q->scale, q->scale + q->n);
			t.zero_point.assign(q->zero_point, q->zero_point + q->n);
		}
		b->tensors.push_back(std::move(t));
		return static_cast<int>(b->tensors.size() - 1);
	});
}

extern "C" int mc_tfl_op(struct mc_tfl *b, int code, const int *in, int n_in, const int *out,
			 int n_out, const struct mc_tfl_opts *opts)
{
	return guarded(b, [&] {
		op o;

		o.code = code;
		o.in.assign(in, in + n_in);
		o.out.assign(out, out + n_out);
		o.opts = opts ? *opts : mc_tfl_opts{};
		b->ops.push_back(std::move(o));
		return static_cast<int>(b->ops.size() - 1);
	});
}

namespace
{

using flatbuffers::FlatBufferBuilder;
using flatbuffers::Offset;

tflite::ActivationFunctionType act(int a)
{
	return static_cast<tflite::ActivationFunctionType>(a);
}

tflite::Padding pad(int p)
{
	return static_cast<tflite::Padding>(p);
}

/* The BuiltinOptions table of o, by its code; NONE (a null offset) for codes without one. */
std::pair<tflite::BuiltinOptions, Offset<void>> options(FlatBufferBuilder &fb, const op &o)
{
	const mc_tfl_opts &p = o.opts;

	switch (o.code) {
	case MC_TFL_CONV_2D:
		return {tflite::BuiltinOptions_Conv2DOptions,
			tflite::CreateConv2DOptions(fb, pad(p.padding), p.stride_w, p.stride_h,
						    act(p.activation))
			    .Union()};
	case MC_TFL_DEPTHWISE_CONV_2D:
		return {tflite::BuiltinOptions_DepthwiseConv2DOptions,
			tflite::CreateDepthwiseConv2DOptions(fb, pad(p.padding), p.stride_w,
							     p.stride_h, p.depth_multiplier,
							     act(p.activation))
			    .Union()};
	case MC_TFL_AVERAGE_POOL_2D:
	case MC_TFL_MAX_POOL_2D:
		return {tflite::BuiltinOptions_Pool2DOptions,
			tflite::CreatePool2DOptions(fb, pad(p.padding), p.stride_w, p.stride_h,
						    p.filter_w, p.filter_h, act(p.activation))
			    .Union()};
	case MC_TFL_FULLY_CONNECTED:
		return {tflite::BuiltinOptions_FullyConnectedOptions,
			tflite::CreateFullyConnectedOptions(fb, act(p.activation)).Union()};
	case MC_TFL_SOFTMAX:
		return {tflite::BuiltinOptions_SoftmaxOptions,
			tflite::CreateSoftmaxOptions(fb, p.beta).Union()};
	case MC_TFL_CONCATENATION:
		return {tflite::BuiltinOptions_ConcatenationOptions,
			tflite::CreateConcatenationOptions(fb, p.axis, act(p.activation)).Union()};
	case MC_TFL_ADD:
		return {tflite::BuiltinOptions_AddOptions,
			tflite::CreateAddOptions(fb, act(p.activation)).Union()};
	case MC_TFL_MUL:
		return {tflite::BuiltinOptions_MulOptions,
			tflite::CreateMulOptions(fb, act(p.activation)).Union()};
	case MC_TFL_RESHAPE: {
		auto shape = fb.CreateVector(p.new_shape, static_cast<size_t>(p.n_shape));

		return {tflite::BuiltinOptions_ReshapeOptions,
			tflite::CreateReshapeOptions(fb, shape).Union()};
	}
	case MC_TFL_PAD:
		return {tflite::BuiltinOptions_PadOptions, tflite::CreatePadOptions(fb).Union()};
	case MC_TFL_TRANSPOSE:
		return {tflite::BuiltinOptions_TransposeOptions,
			tflite::CreateTransposeOptions(fb).Union()};
	case MC_TFL_MEAN:
		return {tflite::BuiltinOptions_ReducerOptions,
			tflite::CreateReducerOptions(fb, p.keep_dims != 0).Union()};
	case MC_TFL_DEQUANTIZE:
		return {tflite::BuiltinOptions_DequantizeOptions,
			tflite::CreateDequantizeOptions(fb).Union()};
	case MC_TFL_MAXIMUM:
	case MC_TFL_MINIMUM:
		return {tflite::BuiltinOptions_MaximumMinimumOptions,
			tflite::CreateMaximumMinimumOptions(fb).Union()};
	default:
		return {tflite::BuiltinOptions_NONE, Offset<void>()};
	}
}

} // namespace

extern "C" int mc_tfl_finish(struct mc_tfl *b, int input, int output, const char *description,
			     void **buf, size_t *len)
{
	*buf = nullptr;
	*len = 0;
	return guarded(b, [&] {
		FlatBufferBuilder fb(1 << 16);
		std::vector<int> codes;		  /* the operator codes used, in first-use order */
		std::vector<uint32_t> code_index; /* per op: its entry in codes */
		std::vector<Offset<tflite::OperatorCode>> opcodes;
		std::vector<Offset<tflite::Operator>> ops;
		std::vector<Offset<tflite::Tensor>> tensors;
		std::vector<Offset<tflite::Buffer>> buffers;

		for (const op &o : b->ops) {
			size_t k = 0;

			while (k < codes.size() && codes[k] != o.code)
				k++;
			if (k == codes.size())
				codes.push_back(o.code);
			code_index.push_back(static_cast<uint32_t>(k));
		}
		for (int c : codes)
			/* every code written is below 127: the int8 field holds it too */
			opcodes.push_back(
			    tflite::CreateOperatorCode(fb, static_cast<int8_t>(c), 0, 1,
						       static_cast<tflite::BuiltinOperator>(c)));
		for (size_t i = 0; i < b->ops.size(); i++) {
			const op &o = b->ops[i];
			auto in = fb.CreateVector(o.in);
			auto out = fb.CreateVector(o.out);
			auto opt = options(fb, o);

			ops.push_back(tflite::CreateOperator(fb, code_index[i], in, out, opt.first,
							     opt.second));
		}
		for (const tensor &t : b->tensors) {
			Offset<tflite::QuantizationParameters> q;

			if (t.quantized)
				q = tflite::CreateQuantizationParameters(
				    fb, 0, 0, fb.CreateVector(t.scale),
				    fb.CreateVector(t.zero_point), tflite::QuantizationDetails_NONE,
				    0, t.axis);
			auto shape = fb.CreateVector(t.shape);
			auto name = fb.CreateString(t.name);

			tensors.push_back(
			    tflite::CreateTensor(fb, shape, static_cast<tflite::TensorType>(t.type),
						 static_cast<uint32_t>(t.buffer), name, q));
		}
		for (const std::vector<uint8_t> &d : b->buffers) {
			Offset<flatbuffers::Vector<uint8_t>> data;

			if (!d.empty()) {
				/* weights aligned to 16 bytes, as the schema asks (force_align) */
				fb.ForceVectorAlignment(d.size(), sizeof(uint8_t), 16);
				data = fb.CreateVector(d);
			}
			buffers.push_back(tflite::CreateBuffer(fb, data));
		}
		int32_t io_in[1] = {input}, io_out[1] = {output};
		auto sub = tflite::CreateSubGraph(
		    fb, fb.CreateVector(tensors), fb.CreateVector(io_in, 1),
		    fb.CreateVector(io_out, 1), fb.CreateVector(ops), fb.CreateString("main"));
		Offset<tflite::SubGraph> subs[1] = {sub};
		auto model = tflite::CreateModel(
		    fb, 3, fb.CreateVector(opcodes), fb.CreateVector(subs, 1),
		    fb.CreateString(description ? description : ""), fb.CreateVector(buffers));

		tflite::FinishModelBuffer(fb, model);
		*buf = std::malloc(fb.GetSize());
		if (!*buf)
			throw std::bad_alloc();
		std::memcpy(*buf, fb.GetBufferPointer(), fb.GetSize());
		*len = fb.GetSize();
		return 0;
	});
}
