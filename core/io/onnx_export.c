/* SPDX-License-Identifier: MIT */
/*
 * onnx_export.c - mcomp models out as ONNX files, for ONNX Runtime and the
 * other tools that read them. The message tree is built from the protobuf-c
 * structs generated from Debian's onnx.proto (core/io/onnx.pb-c.h, as the
 * importer in onnx.c reads them) and packed by protobuf-c; nothing here
 * writes protobuf by hand.
 *
 * One mcomp node becomes one ONNX node, or a few (opset 13 unless said,
 * table below):
 *
 *	linear               Gemm (transB=1; no C when bias: false)
 *	conv2d               Conv
 *	batchnorm            BatchNormalization (inference: the running statistics)
 *	relu, sigmoid        Relu, Sigmoid
 *	leaky_relu           LeakyRelu (alpha)
 *	hardsigmoid          HardSigmoid (alpha, beta)
 *	hardswish            HardSwish (opset 14)
 *	clip, relu6          Clip (min and max as scalar inputs; relu6: 0 and 6)
 *	pad2d                Pad (constant zeros, pads as an input)
 *	mul                  Mul; a per-channel b of fewer dimensions Reshape'd
 *	                     to [N, C, 1, ...] first, as NumPy broadcasting needs
 *	maxpool2d, avgpool2d MaxPool, AveragePool (count_include_pad=1)
 *	global_avgpool       GlobalAveragePool, Flatten (mcomp's output is [C])
 *	flatten              Flatten (axis 1)
 *	add                  Add
 *	concat               Concat (axis 1: mcomp joins each sample's first dimension)
 *	softmax, log_softmax Softmax, LogSoftmax (axis -1)
 *	dropout              nothing (inference is the identity)
 *	qlinear, qconv2d     static: the integer form, QuantizeLinear of the input
 *	                     with the calibrated scale and zero point,
 *	                     MatMulInteger or ConvInteger with the weights as u8
 *	                     (w + 128, zero point 128), Cast, Mul by sa * sw, Add
 *	                     the bias (and Relu when fused): the bits mcomp's
 *	                     int8 kernels compute (see int8_integer);
 *	                     dynamic: the same with DynamicQuantizeLinear of the
 *	                     input and the product sa * sw a Mul of the graph;
 *	                     weight-only, 4 bits: INT4 weights through
 *	                     DequantizeLinear, blocked per group (opset 21), then
 *	                     Gemm; with MC_ONNX_4BIT_F32 and at 8 bits: the
 *	                     weights dequantized, written f32
 *
 * A cascade is one such model per stage, its rule in metadata_props.
 *
 * The model input is "input" [N, per-sample shape] with a symbolic batch
 * "N"; the output "logits". Initializers keep mcomp's parameter names
 * ("fc1.weight"); helper values are "NODE/what". Every message of the tree
 * lives in one arena freed at the end; f32 and int8 weights are borrowed
 * from the model (raw_data points at them: ONNX stores little-endian, as
 * the tensors are here), only converted ones are allocated.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include <mcomp/cascade.h>
#include <mcomp/onnx.h>
#include <mcomp/pipeline.h>
#include <mcomp/safetensors.h>

#include "core/io/onnx.pb-c.h"
#include "io/export_int.h"
#include "kernels/s8_ops.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "onnx_export.c borrows tensors as ONNX raw_data, which is little-endian"
#endif

/*
 * The opset is the lowest that holds the model: 13; 14 for HardSwish; 21
 * (IR 10, ONNX 1.16) for 4-bit weights as INT4 with block quantization.
 */
#define OPSET_BASE	13
#define OPSET_HARDSWISH 14
#define OPSET_INT4	21

/*
 * ONNX TensorProto.DataType values written here. INT4 (22, ONNX 1.16) is
 * newer than Debian's onnx.proto, which has no name for it; data_type is an
 * int32 field, so the number is written as it is.
 */
enum { DT_FLOAT = 1, DT_UINT8 = 2, DT_INT8 = 3, DT_INT32 = 6, DT_INT64 = 7, DT_UINT64 = 13, DT_INT4 = 22 };

struct exp {
	const struct mc_model *m;
	const struct mc_onnx_meta *meta;
	struct mc_err *err;
	struct mc_xarena a; /* scratch freed at the end; a.nomem: out of memory */
	Onnx__NodeProto **nodes;
	size_t n_nodes, cap_nodes;
	Onnx__TensorProto **inits;
	size_t n_inits, cap_inits;
	const char **val;	/* per mcomp node: the ONNX value of its output */
	int last;		/* the output node */
	int64_t weights, zeros; /* of linear and conv weights: how pruned the model is */
	int opset;
};

typedef int (*map_fn)(struct exp *e, int i, const struct mc_node *nd);

static int map_linear(struct exp *, int, const struct mc_node *);
static int map_conv(struct exp *, int, const struct mc_node *);
static int map_batchnorm(struct exp *, int, const struct mc_node *);
static int map_pool(struct exp *, int, const struct mc_node *);
static int map_gap(struct exp *, int, const struct mc_node *);
static int map_plain(struct exp *, int, const struct mc_node *);
static int map_concat(struct exp *, int, const struct mc_node *);
static int map_softmax(struct exp *, int, const struct mc_node *);
static int map_dropout(struct exp *, int, const struct mc_node *);
static int map_qlinear(struct exp *, int, const struct mc_node *);
static int map_qadd(struct exp *, int, const struct mc_node *);
static int map_qgap(struct exp *, int, const struct mc_node *);
static int map_qconv(struct exp *, int, const struct mc_node *);
static int map_act(struct exp *, int, const struct mc_node *);
static int map_clip(struct exp *, int, const struct mc_node *);
static int map_pad(struct exp *, int, const struct mc_node *);
static int map_mul(struct exp *, int, const struct mc_node *);
static int is_int4(const struct mc_onnx_meta *meta, const struct mc_node *nd);
static const char *dq_weight4(struct exp *e, const struct mc_node *nd);

/* The mcomp ops written, in the order of their names (the list errors print). */
static const struct {
	const char *op;
	map_fn map;
	const char *onnx; /* the ONNX op of map_plain, map_pool and map_softmax */
} ops[] = {
    {"add", map_plain, "Add"},
    {"avgpool2d", map_pool, "AveragePool"},
    {"batchnorm", map_batchnorm, NULL},
    {"clip", map_clip, "Clip"},
    {"concat", map_concat, "Concat"},
    {"conv2d", map_conv, NULL},
    {"dropout", map_dropout, NULL},
    {"flatten", map_plain, "Flatten"},
    {"global_avgpool", map_gap, NULL},
    {"hardsigmoid", map_act, "HardSigmoid"},
    {"hardswish", map_plain, "HardSwish"}, /* opset 14 */
    {"leaky_relu", map_act, "LeakyRelu"},
    {"linear", map_linear, NULL},
    {"log_softmax", map_softmax, "LogSoftmax"},
    {"maxpool2d", map_pool, "MaxPool"},
    {"mul", map_mul, "Mul"},
    {"pad2d", map_pad, "Pad"},
    {"qadd", map_qadd, NULL},
    {"qconv2d", map_qconv, NULL},
    {"qglobal_avgpool", map_qgap, NULL},
    {"qlinear", map_qlinear, NULL},
    {"relu", map_plain, "Relu"},
    {"relu6", map_clip, "Clip"},
    {"sigmoid", map_plain, "Sigmoid"},
    {"softmax", map_softmax, "Softmax"},
};
#define N_OPS ((int)(sizeof(ops) / sizeof(ops[0])))

static int op_row(const char *name)
{
	for (int i = 0; i < N_OPS; i++)
		if (!strcmp(ops[i].op, name))
			return i;
	return -1;
}

/* "node 'fc1' (qlinear): MESSAGE" */
static int node_err(struct exp *e, const struct mc_node *nd, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int node_err(struct exp *e, const struct mc_node *nd, int code, const char *fmt, ...)
{
	char msg[MC_ERR_MAX / 2];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return mc_err_set(e->err, code, "node '%s' (%s): %s", nd->name, nd->op->name, msg);
}

static void note(struct exp *e, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void note(struct exp *e, int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	mc_export_vnote(e->meta, level, fmt, ap);
	va_end(ap);
}

/* ---------------------------------------------------------------- the arena */

/* n zeroed bytes owned by the arena; NULL (and e->a.nomem) when out of memory. */
static void *ar(struct exp *e, size_t n)
{
	return mc_xarena_alloc(&e->a, n);
}

static char *sfmt(struct exp *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *sfmt(struct exp *e, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = mc_xarena_vfmt(&e->a, fmt, ap);
	va_end(ap);
	return s;
}
/* Appends p to the list (*v)[*n] of capacity *cap; 0 or -1 (e->a.nomem). */
static int push(struct exp *e, void ***v, size_t *n, size_t *cap, void *p)
{
	if (!p)
		return -1;
	if (*n == *cap) {
		size_t c = *cap ? 2 * *cap : 64;
		void **nv = realloc(*v, c * sizeof(void *));

		if (!nv) {
			e->a.nomem = 1;
			return -1;
		}
		*v = nv;
		*cap = c;
	}
	(*v)[(*n)++] = p;
	return 0;
}

/* ---------------------------------------------------------------- building blocks */

/*
 * Appends an ONNX node of type op named name, reading the n_in values in
 * (NULL-terminated when n_in < 0) and writing out. Returns it, or NULL when
 * out of memory (then every later call is a no-op and the export fails).
 */
static Onnx__NodeProto *onode(struct exp *e, const char *op, const char *name, const char *out,
			      int n_in, const char *const *in)
{
	Onnx__NodeProto *n = ar(e, sizeof(*n));
	char **ins, **outs;

	if (n_in < 0)
		for (n_in = 0; in[n_in]; n_in++)
			;
	ins = ar(e, (size_t)n_in * sizeof(char *));
	outs = ar(e, sizeof(char *));
	if (!n || !ins || !outs || !name || !out)
		return NULL;
	onnx__node_proto__init(n);
	for (int k = 0; k < n_in; k++) {
		if (!in[k])
			return NULL;
		ins[k] = (char *)in[k];
	}
	outs[0] = (char *)out;
	n->op_type = (char *)op;
	n->name = (char *)name;
	n->n_input = (size_t)n_in;
	n->input = ins;
	n->n_output = 1;
	n->output = outs;
	if (push(e, (void ***)&e->nodes, &e->n_nodes, &e->cap_nodes, n))
		return NULL;
	return n;
}

static Onnx__AttributeProto *add_attr(struct exp *e, Onnx__NodeProto *n, const char *name,
				      Onnx__AttributeProto__AttributeType type)
{
	Onnx__AttributeProto *a = n ? ar(e, sizeof(*a)) : NULL;
	Onnx__AttributeProto **v = n ? ar(e, (n->n_attribute + 1) * sizeof(*v)) : NULL;

	if (!a || !v)
		return NULL;
	onnx__attribute_proto__init(a);
	a->name = (char *)name;
	a->has_type = 1;
	a->type = type;
	if (n->n_attribute)
		memcpy(v, n->attribute, n->n_attribute * sizeof(*v));
	v[n->n_attribute++] = a;
	n->attribute = v;
	return a;
}

static void attr_i(struct exp *e, Onnx__NodeProto *n, const char *name, int64_t i)
{
	Onnx__AttributeProto *a = add_attr(e, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);

	if (a) {
		a->has_i = 1;
		a->i = i;
	}
}

static void attr_f(struct exp *e, Onnx__NodeProto *n, const char *name, float f)
{
	Onnx__AttributeProto *a =
	    add_attr(e, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);

	if (a) {
		a->has_f = 1;
		a->f = f;
	}
}

/* An ints attribute of count copies of v. */
static void attr_is(struct exp *e, Onnx__NodeProto *n, const char *name, int count, int64_t v)
{
	Onnx__AttributeProto *a = add_attr(e, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
	int64_t *ints = a ? ar(e, (size_t)count * sizeof(int64_t)) : NULL;

	if (!ints)
		return;
	for (int k = 0; k < count; k++)
		ints[k] = v;
	a->n_ints = (size_t)count;
	a->ints = ints;
}

/*
 * An initializer named name of ONNX type dt and shape dims[ndim] (ndim 0: a
 * scalar) whose bytes are data, borrowed (they must outlive the packing).
 * Returns name, or NULL when out of memory.
 */
static const char *init(struct exp *e, const char *name, int dt, int ndim, const int64_t *dims,
			const void *data, size_t bytes)
{
	Onnx__TensorProto *t = name ? ar(e, sizeof(*t)) : NULL;
	int64_t *d = ar(e, (size_t)ndim * sizeof(int64_t));

	if (!t || !d)
		return NULL;
	onnx__tensor_proto__init(t);
	if (ndim)
		memcpy(d, dims, (size_t)ndim * sizeof(int64_t));
	t->name = (char *)name;
	t->n_dims = (size_t)ndim;
	t->dims = d;
	t->has_data_type = 1;
	t->data_type = dt;
	t->has_raw_data = 1;
	t->raw_data.len = bytes;
	t->raw_data.data = (uint8_t *)data; /* borrowed; protobuf-c only reads it */
	if (push(e, (void ***)&e->inits, &e->n_inits, &e->cap_inits, t))
		return NULL;
	return name;
}

/* A parameter as an initializer of its own name, shape and dtype (f32 or s8). */
static const char *init_param(struct exp *e, const struct mc_tensor *t)
{
	int dt = t->dtype == MC_S8 ? DT_INT8 : DT_FLOAT;

	return init(e, t->name, dt, t->ndim, t->shape, t->data,
		    (size_t)t->numel * (t->dtype == MC_S8 ? 1 : sizeof(float)));
}

/* The value of input k of nd. */
static const char *in_val(struct exp *e, const struct mc_node *nd, int k)
{
	return nd->inputs[k] == MC_NODE_INPUT ? "input" : e->val[nd->inputs[k]];
}

/* The value node i writes: "logits" for the output node, else its name. */
static const char *out_val(struct exp *e, int i)
{
	const char *name = mc_model_node(e->m, i)->name;

	if (i == e->last)
		return "logits";
	if (!strcmp(name, "logits"))
		return "logits/out";
	return name;
}

static const char *sub(struct exp *e, const struct mc_node *nd, const char *what)
{
	return sfmt(e, "%s/%s", nd->name, what);
}

/* Counts the zeros of a weight, for the note on pruned models. */
static void count_zeros(struct exp *e, const struct mc_tensor *w)
{
	int64_t z = 0;

	if (w->dtype == MC_F32) {
		for (int64_t k = 0; k < w->numel; k++)
			z += ((const float *)w->data)[k] == 0.0f;
	} else if (w->dtype == MC_S8) {
		for (int64_t k = 0; k < w->numel; k++)
			z += ((const int8_t *)w->data)[k] == 0;
	} else if (w->dtype == MC_Q4) { /* nibble q + 8 */
		for (int64_t k = 0; k < w->numel; k++)
			z += (((const uint8_t *)w->data)[k / 2] >> 4 * (k % 2) & 0xf) == 8;
	} else {
		return;
	}
	e->weights += w->numel;
	e->zeros += z;
}

/* ---------------------------------------------------------------- f32 ops */

/* Gemm(x, W, B, transB=1) into out: W [out, in] as stored. */
static int gemm(struct exp *e, const struct mc_node *nd, const char *x, const char *w,
		const char *b, const char *out)
{
	const char *in[] = {x, w, b, NULL};
	Onnx__NodeProto *n = onode(e, "Gemm", nd->name, out, -1, in);

	attr_i(e, n, "transB", 1);
	return 0;
}

static int map_linear(struct exp *e, int i, const struct mc_node *nd)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *b = mc_node_param_named(nd, "bias");

	count_zeros(e, w);
	return gemm(e, nd, in_val(e, nd, 0), init_param(e, w), b ? init_param(e, b) : NULL,
		    out_val(e, i));
}

/* The attributes of Conv and the pools: square kernel k, stride s, padding p on all sides. */
static void window_attrs(struct exp *e, Onnx__NodeProto *n, int64_t k, int64_t s, int64_t p)
{
	attr_is(e, n, "kernel_shape", 2, k);
	attr_is(e, n, "strides", 2, s);
	attr_is(e, n, "pads", 4, p);
}

static int conv(struct exp *e, const struct mc_node *nd, const char *x, const char *w,
		const char *b, const char *out)
{
	const char *in[] = {x, w, b, NULL};
	Onnx__NodeProto *n = onode(e, "Conv", nd->name, out, -1, in);

	window_attrs(e, n, mc_node_attr_int(nd, "kernel", 3), mc_node_attr_int(nd, "stride", 1),
		     mc_node_attr_int(nd, "padding", 0));
	attr_i(e, n, "group", mc_node_attr_int(nd, "groups", 1));
	return 0;
}

static int map_conv(struct exp *e, int i, const struct mc_node *nd)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *b = mc_node_param_named(nd, "bias");

	count_zeros(e, w);
	return conv(e, nd, in_val(e, nd, 0), init_param(e, w), b ? init_param(e, b) : NULL,
		    out_val(e, i));
}

static int map_batchnorm(struct exp *e, int i, const struct mc_node *nd)
{
	static const char *const what[4] = {"weight", "bias", "running_mean", "running_var"};
	const char *in[6] = {in_val(e, nd, 0)};
	Onnx__NodeProto *n;

	for (int q = 0; q < 4; q++)
		in[q + 1] = init_param(e, mc_node_param_named(nd, what[q]));
	n = onode(e, "BatchNormalization", nd->name, out_val(e, i), 5, in);
	attr_f(e, n, "epsilon", (float)mc_node_attr_float(nd, "eps", 1e-5));
	/* ONNX's momentum weighs the running value, mcomp's the batch; unused in inference */
	attr_f(e, n, "momentum", (float)(1.0 - mc_node_attr_float(nd, "momentum", 0.1)));
	return 0;
}

static int map_pool(struct exp *e, int i, const struct mc_node *nd)
{
	const char *onnx = ops[op_row(nd->op->name)].onnx, *in[] = {in_val(e, nd, 0)};
	int64_t k = mc_node_attr_int(nd, "kernel", 2), s = mc_node_attr_int(nd, "stride", 0);
	Onnx__NodeProto *n = onode(e, onnx, nd->name, out_val(e, i), 1, in);

	window_attrs(e, n, k, s ? s : k, mc_node_attr_int(nd, "padding", 0));
	/* mcomp's average counts the padding as zeros (PyTorch's default) */
	if (!strcmp(onnx, "AveragePool"))
		attr_i(e, n, "count_include_pad", 1);
	return 0;
}

/* mcomp's global_avgpool gives [C]; ONNX's [C, 1, 1], flattened after. */
static int map_gap(struct exp *e, int i, const struct mc_node *nd)
{
	const char *in[] = {in_val(e, nd, 0)}, *gap = sub(e, nd, "pooled");
	Onnx__NodeProto *n;

	onode(e, "GlobalAveragePool", nd->name, gap, 1, in);
	n = onode(e, "Flatten", sub(e, nd, "Flatten"), out_val(e, i), 1, &gap);
	attr_i(e, n, "axis", 1);
	return 0;
}

/* An op of the same name and inputs and no attributes (Flatten: axis 1, its default). */
static int map_plain(struct exp *e, int i, const struct mc_node *nd)
{
	const char *in[MC_NODE_MAX_INPUTS];

	for (int k = 0; k < nd->n_inputs; k++)
		in[k] = in_val(e, nd, k);
	onode(e, ops[op_row(nd->op->name)].onnx, nd->name, out_val(e, i), nd->n_inputs, in);
	return 0;
}

/* mcomp's concat joins channels or features, each sample's first dimension: ONNX's axis 1. */
static int map_concat(struct exp *e, int i, const struct mc_node *nd)
{
	const char *in[MC_NODE_MAX_INPUTS];

	for (int k = 0; k < nd->n_inputs; k++)
		in[k] = in_val(e, nd, k);
	attr_i(e, onode(e, "Concat", nd->name, out_val(e, i), nd->n_inputs, in), "axis", 1);
	return 0;
}

static int map_softmax(struct exp *e, int i, const struct mc_node *nd)
{
	const char *in[] = {in_val(e, nd, 0)};
	Onnx__NodeProto *n =
	    onode(e, ops[op_row(nd->op->name)].onnx, nd->name, out_val(e, i), 1, in);

	attr_i(e, n, "axis", -1);
	return 0;
}

/* Dropout computes the identity in inference: its output is its input's value. */
static int map_dropout(struct exp *e, int i, const struct mc_node *nd)
{
	const char *in[] = {in_val(e, nd, 0)};

	if (i != e->last) {
		e->val[i] = in[0];
		return 0;
	}
	onode(e, "Identity", nd->name, out_val(e, i), 1, in);
	return 0;
}

/* leaky_relu (alpha) and hardsigmoid (alpha, beta): their ONNX op, the attributes of one name. */
static int map_act(struct exp *e, int i, const struct mc_node *nd)
{
	const char *in[] = {in_val(e, nd, 0)};
	Onnx__NodeProto *n =
	    onode(e, ops[op_row(nd->op->name)].onnx, nd->name, out_val(e, i), 1, in);
	int hsig = !strcmp(nd->op->name, "hardsigmoid");

	/* the kernels compute with the attributes rounded to float, as ONNX stores them */
	attr_f(e, n, "alpha", (float)mc_node_attr_float(nd, "alpha", hsig ? 0.2 : 0.01));
	if (hsig)
		attr_f(e, n, "beta", (float)mc_node_attr_float(nd, "beta", 0.5));
	return 0;
}

/* A float scalar initializer of value v. */
static const char *init_scalar(struct exp *e, const char *name, float v)
{
	float *p = ar(e, sizeof(float));

	if (!p)
		return NULL;
	*p = v;
	return init(e, name, DT_FLOAT, 0, NULL, p, sizeof(float));
}

/* clip and relu6 (clip to [0, 6]): Clip with its bounds as scalar inputs (opset 11 on). */
static int map_clip(struct exp *e, int i, const struct mc_node *nd)
{
	int relu6 = !strcmp(nd->op->name, "relu6");
	double lo = relu6 ? 0 : mc_node_attr_float(nd, "min", -FLT_MAX);
	double hi = relu6 ? 6 : mc_node_attr_float(nd, "max", FLT_MAX);
	const char *in[3];

	in[0] = in_val(e, nd, 0);
	in[1] = init_scalar(e, sfmt(e, "%s.min", nd->name), (float)lo);
	in[2] = init_scalar(e, sfmt(e, "%s.max", nd->name), (float)hi);
	onode(e, "Clip", nd->name, out_val(e, i), 3, in);
	return 0;
}

/*
 * pad2d: Pad (mode constant, value 0) with pads [0, 0, top, left, 0, 0,
 * bottom, right], the beginnings of N, C, H, W then their ends (opset 11 on:
 * pads an input).
 */
static int map_pad(struct exp *e, int i, const struct mc_node *nd)
{
	int64_t *p = ar(e, 8 * sizeof(int64_t)), dims[1] = {8};
	const char *in[2];

	if (!p)
		return 0;
	memset(p, 0, 8 * sizeof(int64_t));
	p[2] = mc_node_attr_int(nd, "top", 0);
	p[3] = mc_node_attr_int(nd, "left", 0);
	p[6] = mc_node_attr_int(nd, "bottom", 0);
	p[7] = mc_node_attr_int(nd, "right", 0);
	in[0] = in_val(e, nd, 0);
	in[1] = init(e, sfmt(e, "%s.pads", nd->name), DT_INT64, 1, dims, p, 8 * sizeof(int64_t));
	onode(e, "Pad", nd->name, out_val(e, i), 2, in);
	return 0;
}

/* The per-sample shape of input k of nd (mcomp's: a global average is [C]); its rank. */
static int in_shape(struct exp *e, const struct mc_node *nd, int k, int64_t *shape)
{
	const struct mc_node *src;

	if (nd->inputs[k] == MC_NODE_INPUT)
		return mc_model_input_shape(e->m, shape);
	src = mc_model_node(e->m, nd->inputs[k]);
	memcpy(shape, src->out_shape, (size_t)src->out_ndim * sizeof(int64_t));
	return src->out_ndim;
}

/*
 * mul: Mul, whose broadcast is NumPy's. b of a's shape, or [C, 1, ..., 1]
 * of a's rank, broadcasts as it is; a b of fewer dimensions ([C] from a
 * global average or a linear, for a [C, H, W]) is reshaped first to [N, C,
 * 1, ..., 1] of a's rank, the shape ONNX aligns with a's channels.
 */
static int map_mul(struct exp *e, int i, const struct mc_node *nd)
{
	int64_t sa[MC_MAX_DIMS], sb[MC_MAX_DIMS], *to, rank;
	int na = in_shape(e, nd, 0, sa), nb = in_shape(e, nd, 1, sb);
	const char *in[2] = {in_val(e, nd, 0), in_val(e, nd, 1)}, *rin[2];

	if (nb < na) {
		rank = na + 1;
		to = ar(e, (size_t)rank * sizeof(int64_t));
		if (!to)
			return 0;
		to[0] = 0; /* Reshape's 0: the batch, copied */
		to[1] = sb[0];
		for (int64_t d = 2; d < rank; d++)
			to[d] = 1;
		rin[0] = in[1];
		rin[1] = init(e, sfmt(e, "%s.gate_shape", nd->name), DT_INT64, 1, &rank, to,
			      (size_t)rank * sizeof(int64_t));
		in[1] = sub(e, nd, "gate");
		onode(e, "Reshape", sub(e, nd, "Reshape"), in[1], 2, rin);
	}
	onode(e, "Mul", nd->name, out_val(e, i), 2, in);
	return 0;
}

/* ---------------------------------------------------------------- quantized ops */

enum qmode { QM_WEIGHT_ONLY, QM_DYNAMIC, QM_STATIC };

static enum qmode qmode(const struct mc_node *nd)
{
	const char *m = mc_node_attr_str(nd, "mode", "dynamic");

	return !strcmp(m, "static")	   ? QM_STATIC
	       : !strcmp(m, "weight-only") ? QM_WEIGHT_ONLY
					   : QM_DYNAMIC;
}

/* Refuses weight scales the int8 kernels would refuse too: not finite and positive. */
static int check_scales(struct exp *e, const struct mc_node *nd, const struct mc_tensor *s)
{
	for (int64_t k = 0; k < s->numel; k++) {
		float v = ((const float *)s->data)[k];

		if (!(v > 0.0f) || !isfinite(v))
			return node_err(e, nd, MC_EINVAL,
					"weight_scale[%lld] is %g; a scale must be finite and "
					"positive (the file is damaged: quantize the model again)",
					(long long)k, v);
	}
	return 0;
}

/*
 * DynamicQuantizeLinear of x: its three outputs, the u8 values (returned),
 * their scale (*qs) and zero point (*qz), from the batch's range as mcomp's
 * mc_u8_qparams takes it (the range widened to hold 0, rounded half to even).
 */
static const char *dynamic_q(struct exp *e, const struct mc_node *nd, const char *x,
			     const char **qs, const char **qz)
{
	const char *q = sub(e, nd, "input_q");
	Onnx__NodeProto *n =
	    onode(e, "DynamicQuantizeLinear", sub(e, nd, "DynamicQuantizeLinear"), q, 1, &x);
	char **o3 = ar(e, 3 * sizeof(char *));

	*qs = sub(e, nd, "input_scale");
	*qz = sub(e, nd, "input_zero_point");
	if (!n || !o3)
		return NULL;
	o3[0] = (char *)q;
	o3[1] = (char *)*qs;
	o3[2] = (char *)*qz;
	n->output = o3;
	n->n_output = 3;
	return q;
}

/*
 * The int8 weight w [O, ...] as u8 (w + 128, zero point 128), transposed to
 * [in, out] for MatMulInteger when transpose: ONNX Runtime multiplies u8 by
 * u8 exactly on every x86 path, where its u8 x s8 kernels for AVX2 without
 * VNNI (vpmaddubsw) may saturate a pair of products.
 */
static const char *u8_weight(struct exp *e, const struct mc_node *nd, const struct mc_tensor *w,
			     int transpose, const char **zp)
{
	int64_t O = w->shape[0], I = w->numel / O, dims[2] = {I, O};
	uint8_t *u = ar(e, (size_t)w->numel), *z = ar(e, 1);
	const int8_t *q = w->data;

	if (!u || !z)
		return NULL;
	for (int64_t o = 0; o < O; o++)
		for (int64_t k = 0; k < I; k++)
			u[transpose ? k * O + o : o * I + k] = (uint8_t)(q[o * I + k] + 128);
	*z = 128;
	*zp = init(e, sfmt(e, "%s.weight_zero_point", nd->name), DT_UINT8, 0, NULL, z, 1);
	if (transpose)
		return init(e, sfmt(e, "%s.weight_t", nd->name), DT_UINT8, 2, dims, u,
			    (size_t)w->numel);
	return init(e, w->name, DT_UINT8, w->ndim, w->shape, u, (size_t)w->numel);
}

/*
 * A qlinear or qconv2d in integer form, step for step what mcomp's int8
 * kernels compute, so that ONNX Runtime gives the same bits: static,
 * QuantizeLinear(x) with the calibrated scale sa and zero point za (round
 * half to even of x / sa, plus za, saturated: mc_quantize_u8); dynamic,
 * DynamicQuantizeLinear(x), sa and za from the batch's range as
 * mc_u8_qparams takes them. Then the exact
 * s32 sums of (x - za)(w) by MatMulInteger or ConvInteger, Cast to f32,
 * Mul by sa * sw (one f32 product per channel, as the kernels form it), Add
 * the bias, and Relu when fused. A Mul then an Add, two roundings: mcomp's
 * epilogues do the same, not a fused multiply-add, since ONNX has none.
 */
static int int8_integer(struct exp *e, int i, const struct mc_node *nd, int is_conv,
			int dynamic)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *s = mc_node_param_named(nd, "weight_scale");
	const struct mc_tensor *b = mc_node_param_named(nd, "bias");
	const struct mc_tensor *qp = mc_node_param_named(nd, "input_qparams");
	const float *v = qp ? qp->data : NULL;
	int64_t O = w->shape[0], sd[3] = {O, 1, 1};
	int relu = (int)mc_node_attr_int(nd, "relu", 0), relu6 = (int)mc_node_attr_int(nd, "relu6", 0);
	uint8_t *za = ar(e, 1);
	float *cs = ar(e, (size_t)O * sizeof(float));
	const char *in[4] = {NULL}, *q = sub(e, nd, "input_q"), *acc = sub(e, nd, "acc"),
		   *accf = sub(e, nd, "acc_f32"), *y = sub(e, nd, "scaled"),
		   *yb = sub(e, nd, "biased"), *out = out_val(e, i), *wz = NULL, *wu;
	Onnx__NodeProto *n;

	const char *scale = sub(e, nd, "scale"), *qs = NULL, *qz = NULL;

	if (!dynamic && (!v || qp->numel != 2 || !(v[0] > 0.0f) || !isfinite(v[0]) ||
			 !(v[1] >= 0.0f) || v[1] > 255.0f || v[1] != nearbyintf(v[1])))
		return node_err(e, nd, MC_EINVAL,
				"input_qparams are not a u8 quantization (a positive scale and a "
				"zero point in 0..255); the file is damaged: quantize the model "
				"again");
	if (!za || !cs)
		return 0;
	if (dynamic) {
		/* sa comes with the batch: the per-channel product is a Mul of the graph */
		q = dynamic_q(e, nd, in_val(e, nd, 0), &qs, &qz);
		in[0] = qs;
		in[1] = init(e, s->name, DT_FLOAT, s->numel == 1 ? 0 : is_conv ? 3 : 1, sd,
			     s->data, (size_t)s->numel * 4);
		onode(e, "Mul", sub(e, nd, "scale/sa_sw"), scale, 2, in);
	} else {
		*za = (uint8_t)v[1];
		for (int64_t o = 0; o < O; o++)
			cs[o] = v[0] * ((const float *)s->data)[s->numel == 1 ? 0 : o];
		in[0] = in_val(e, nd, 0);
		in[1] = init(e, sfmt(e, "%s.input_scale", nd->name), DT_FLOAT, 0, NULL, &v[0], 4);
		in[2] = init(e, sfmt(e, "%s.input_zero_point", nd->name), DT_UINT8, 0, NULL, za, 1);
		onode(e, "QuantizeLinear", sub(e, nd, "input/QuantizeLinear"), q, 3, in);
		qz = in[2];
		scale = init(e, sfmt(e, "%s.scale", nd->name), DT_FLOAT, is_conv ? 3 : 1, sd, cs,
			     (size_t)O * sizeof(float));
	}
	wu = u8_weight(e, nd, w, !is_conv, &wz);
	in[0] = q;
	in[1] = wu;
	in[2] = qz;
	in[3] = wz;
	if (is_conv) {
		n = onode(e, "ConvInteger", sub(e, nd, "ConvInteger"), acc, 4, in);
		window_attrs(e, n, mc_node_attr_int(nd, "kernel", 3),
			     mc_node_attr_int(nd, "stride", 1), mc_node_attr_int(nd, "padding", 0));
		if (mc_node_attr_int(nd, "groups", 1) != 1)
			attr_i(e, n, "group", mc_node_attr_int(nd, "groups", 1));
	} else {
		onode(e, "MatMulInteger", sub(e, nd, "MatMulInteger"), acc, 4, in);
	}
	n = onode(e, "Cast", sub(e, nd, "Cast"), accf, 1, &acc);
	attr_i(e, n, "to", DT_FLOAT);
	in[0] = accf;
	in[1] = scale;
	if (!b && !relu && !relu6) {
		onode(e, "Mul", sub(e, nd, "scale/Mul"), out, 2, in);
		return 0;
	}
	onode(e, "Mul", sub(e, nd, "scale/Mul"), y, 2, in);
	if (b) {
		in[0] = y;
		in[1] = is_conv ? init(e, b->name, DT_FLOAT, 3, sd, b->data, (size_t)O * 4)
				: init_param(e, b);
		onode(e, "Add", sub(e, nd, "bias/Add"), relu || relu6 ? yb : out, 2, in);
		y = yb;
	}
	if (relu6) {
		/* min(max(y, 0), 6): Clip gives 0 for NaN as the kernels' max(y, 0) does not
		 * promise to; a NaN there means a damaged file either way */
		in[0] = y;
		in[1] = init_scalar(e, sfmt(e, "%s.clip_min", nd->name), 0.0f);
		in[2] = init_scalar(e, sfmt(e, "%s.clip_max", nd->name), 6.0f);
		onode(e, "Clip", sub(e, nd, "Clip"), out, 3, in);
	} else if (relu) {
		onode(e, "Relu", sub(e, nd, "Relu"), out, 1, &y);
	}
	return 0;
}

/*
 * The f32 weights of a weight-only qlinear: w = (q - z) s per block (the
 * tensor, a row or a group of a row; 4-bit: two values a byte, low nibble
 * first, stored as q + 8), as the op's own kernels dequantize them.
 */
static const char *dequantized(struct exp *e, const struct mc_node *nd)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *s = mc_node_param_named(nd, "weight_scale");
	const struct mc_tensor *zt = mc_node_param_named(nd, "weight_zero_point");
	int64_t O = w->shape[0], I = w->shape[1], per_row, len;
	int bits = (int)mc_node_attr_int(nd, "bits", 8);
	float *d = ar(e, (size_t)(O * I) * sizeof(float));

	if (!d)
		return NULL;
	per_row = s->numel == 1 ? 1 : s->numel / O;
	len = I / per_row;
	for (int64_t o = 0; o < O; o++) {
		for (int64_t k = 0; k < I; k++) {
			int64_t b = s->numel == 1 ? 0 : o * per_row + k / len, at = o * I + k;
			float z = zt ? (float)((const int8_t *)zt->data)[b] : 0.0f, q;

			if (bits == 8) {
				q = (float)((const int8_t *)w->data)[at];
			} else {
				uint8_t byte = ((const uint8_t *)w->data)[at / 2];

				q = (float)((at % 2 ? byte >> 4 : byte & 15) - 8);
			}
			d[at] = (q - z) * ((const float *)s->data)[b];
		}
	}
	{
		int64_t dims[2] = {O, I};

		return init(e, w->name, DT_FLOAT, 2, dims, d, (size_t)(O * I) * sizeof(float));
	}
}

static int map_qlinear(struct exp *e, int i, const struct mc_node *nd)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *s = mc_node_param_named(nd, "weight_scale");
	const struct mc_tensor *b = mc_node_param_named(nd, "bias");
	enum qmode mode = qmode(nd);
	int r = check_scales(e, nd, s);
	const char *x;

	if (r)
		return r;
	count_zeros(e, w);
	if (is_int4(e->meta, nd)) {
		x = dq_weight4(e, nd);
		if (!x && !e->a.nomem)
			return e->err->code;
		return gemm(e, nd, in_val(e, nd, 0), x, init_param(e, b), out_val(e, i));
	}
	if (mode == QM_WEIGHT_ONLY) {
		if (mc_node_attr_int(nd, "bits", 8) == 8)
			note(e, MC_LOG_WARNING,
			     "node '%s' (qlinear, 8-bit weight-only): ONNX has no int8 weight-only "
			     "linear; written as Gemm of its weights dequantized to f32 (4 bytes a "
			     "weight), which ONNX Runtime computes in f32",
			     nd->name);
		else
			note(e, MC_LOG_WARNING,
			     "node '%s' (qlinear, 4-bit weight-only): written as Gemm of its "
			     "weights dequantized to f32 (4 bytes a weight, opset 13), the "
			     "fallback asked for; by default they are INT4 through "
			     "DequantizeLinear (opset 21)",
			     nd->name);
		return gemm(e, nd, in_val(e, nd, 0), dequantized(e, nd), init_param(e, b),
			    out_val(e, i));
	}
	return int8_integer(e, i, nd, 0, mode == QM_DYNAMIC);
}

/* qconv2d (static or dynamic): the integer form with ConvInteger. */
static int map_qconv(struct exp *e, int i, const struct mc_node *nd)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *s = mc_node_param_named(nd, "weight_scale");
	int r = check_scales(e, nd, s);

	if (r)
		return r;
	count_zeros(e, w);
	/* qconv2d is conv2d's geometry, groups included (ConvInteger's group) */
	return int8_integer(e, i, nd, 1, qmode(nd) == QM_DYNAMIC);
}

/* ---------------------------------------------------------------- qadd, qglobal_avgpool */

/* A scalar initializer of ONNX integer type dt (DT_INT64 or DT_UINT64) of value v. */
static const char *init_int(struct exp *e, const char *name, int dt, int64_t v)
{
	int64_t *p = ar(e, sizeof(int64_t));

	if (!p)
		return NULL;
	*p = v;
	return init(e, name, dt, 0, NULL, p, sizeof(int64_t));
}

/* Pair k of nd's qparams: the scale and the zero point; -1 when not a u8 quantization. */
static int qpair_of(const struct mc_node *nd, int k, float *s, int *z)
{
	const struct mc_tensor *qp = mc_node_param_named(nd, "qparams");
	const float *v = qp ? qp->data : NULL;

	if (!v || qp->numel < 2 * k + 2 || !(v[2 * k] > 0.0f) || !isfinite(v[2 * k]) ||
	    !(v[2 * k + 1] >= 0.0f && v[2 * k + 1] <= 255.0f) || v[2 * k + 1] != nearbyintf(v[2 * k + 1]))
		return -1;
	*s = v[2 * k];
	*z = (int)v[2 * k + 1];
	return 0;
}

/* Input k of nd quantized at (s, z) (QuantizeLinear, mc_quantize_u8), as int64 q - z. */
static const char *q_centered(struct exp *e, const struct mc_node *nd, int k, float s, int z)
{
	uint8_t *zp = ar(e, 1);
	const char *in[2], *q = sub(e, nd, sfmt(e, "q%d", k)), *qi = sub(e, nd, sfmt(e, "q%d_i64", k));
	const char *d = sub(e, nd, sfmt(e, "q%d_centered", k));
	const char *qin[3];
	Onnx__NodeProto *n;

	if (!zp)
		return NULL;
	*zp = (uint8_t)z;
	qin[0] = in_val(e, nd, k);
	qin[1] = init_scalar(e, sfmt(e, "%s.in%d_scale", nd->name, k), s);
	qin[2] = init(e, sfmt(e, "%s.in%d_zero_point", nd->name, k), DT_UINT8, 0, NULL, zp, 1);
	onode(e, "QuantizeLinear", sub(e, nd, sfmt(e, "QuantizeLinear%d", k)), q, 3, qin);
	n = onode(e, "Cast", sub(e, nd, sfmt(e, "Cast%d", k)), qi, 1, &q);
	attr_i(e, n, "to", DT_INT64);
	in[0] = qi;
	in[1] = init_int(e, sfmt(e, "%s.in%d_zp_i64", nd->name, k), DT_INT64, z);
	onode(e, "Sub", sub(e, nd, sfmt(e, "Sub%d", k)), d, 2, in);
	return d;
}

/*
 * out = so * (clamp(zo + (t >> S), 0, 255) - zo) from the int64 value t, >>
 * arithmetic as the kernels take it: in uint64, (t + 2^63) >> S - 2^(63 - S),
 * wrapping, then back to int64 (exact for every t the kernels admit).
 */
static void requant_onnx(struct exp *e, const struct mc_node *nd, const char *t, int S, int zo,
			 float so, const char *out)
{
	const char *in[3], *tu = sub(e, nd, "t_u64"), *to = sub(e, nd, "t_offset");
	const char *sh = sub(e, nd, "shifted"), *un = sub(e, nd, "unbiased"), *ti = sub(e, nd, "t_i64");
	const char *v = sub(e, nd, "v"), *vf = sub(e, nd, "v_f32"), *c = sub(e, nd, "clipped");
	const char *d = sub(e, nd, "centered");
	Onnx__NodeProto *n;

	n = onode(e, "Cast", sub(e, nd, "CastU64"), tu, 1, &t);
	attr_i(e, n, "to", DT_UINT64);
	in[0] = tu;
	in[1] = init_int(e, sfmt(e, "%s.offset", nd->name), DT_UINT64, INT64_MIN);
	onode(e, "Add", sub(e, nd, "Offset"), to, 2, in);
	in[0] = to;
	in[1] = init_int(e, sfmt(e, "%s.shift", nd->name), DT_UINT64, S);
	n = onode(e, "BitShift", sub(e, nd, "BitShift"), sh, 2, in);
	if (n) {
		Onnx__AttributeProto *a = add_attr(e, n, "direction",
						   ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);

		if (a) {
			a->has_s = 1;
			a->s.data = (uint8_t *)"RIGHT";
			a->s.len = 5;
		}
	}
	in[0] = sh;
	in[1] = init_int(e, sfmt(e, "%s.unoffset", nd->name), DT_UINT64,
			 (int64_t)((uint64_t)1 << (63 - S)));
	onode(e, "Sub", sub(e, nd, "Unoffset"), un, 2, in);
	n = onode(e, "Cast", sub(e, nd, "CastI64"), ti, 1, &un);
	attr_i(e, n, "to", DT_INT64);
	in[0] = ti;
	in[1] = init_int(e, sfmt(e, "%s.out_zp_i64", nd->name), DT_INT64, zo);
	onode(e, "Add", sub(e, nd, "AddZeroPoint"), v, 2, in);
	n = onode(e, "Cast", sub(e, nd, "CastF32"), vf, 1, &v);
	attr_i(e, n, "to", DT_FLOAT);
	in[0] = vf;
	in[1] = init_scalar(e, sfmt(e, "%s.u8_min", nd->name), 0.0f);
	in[2] = init_scalar(e, sfmt(e, "%s.u8_max", nd->name), 255.0f);
	onode(e, "Clip", sub(e, nd, "Clip"), c, 3, in);
	in[0] = c;
	in[1] = init_scalar(e, sfmt(e, "%s.out_zp_f32", nd->name), (float)zo);
	onode(e, "Sub", sub(e, nd, "SubZeroPoint"), d, 2, in);
	in[0] = d;
	in[1] = init_scalar(e, sfmt(e, "%s.out_scale", nd->name), so);
	onode(e, "Mul", sub(e, nd, "Dequantize"), out, 2, in);
}

/*
 * qadd in integer form, the kernel's steps: each input QuantizeLinear'd and
 * centred, (qa - za) ma + (qb - zb) mb + 2^(S-1) in int64, shifted and
 * requantized (requant_onnx): the same bits as mcomp.
 */
static int map_qadd(struct exp *e, int i, const struct mc_node *nd)
{
	struct mc_qadd_q q;
	int32_t ma, mb;
	int S;
	const char *in[2], *da, *db, *pa = sub(e, nd, "a_scaled"), *pb = sub(e, nd, "b_scaled");
	const char *sum = sub(e, nd, "sum"), *t = sub(e, nd, "rounded");

	if (qpair_of(nd, 0, &q.sa, &q.za) || qpair_of(nd, 1, &q.sb, &q.zb) ||
	    qpair_of(nd, 2, &q.so, &q.zo) || mc_qadd_fixed(&q, &ma, &mb, &S))
		return node_err(e, nd, MC_EINVAL,
				"qparams are not u8 quantizations the kernel takes; the file is "
				"damaged: quantize the model again");
	da = q_centered(e, nd, 0, q.sa, q.za);
	db = q_centered(e, nd, 1, q.sb, q.zb);
	in[0] = da;
	in[1] = init_int(e, sfmt(e, "%s.ma", nd->name), DT_INT64, ma);
	onode(e, "Mul", sub(e, nd, "MulA"), pa, 2, in);
	in[0] = db;
	in[1] = init_int(e, sfmt(e, "%s.mb", nd->name), DT_INT64, mb);
	onode(e, "Mul", sub(e, nd, "MulB"), pb, 2, in);
	in[0] = pa;
	in[1] = pb;
	onode(e, "Add", sub(e, nd, "Add"), sum, 2, in);
	in[0] = sum;
	in[1] = init_int(e, sfmt(e, "%s.round", nd->name), DT_INT64, S ? (int64_t)1 << (S - 1) : 0);
	onode(e, "Add", sub(e, nd, "Round"), t, 2, in);
	requant_onnx(e, nd, t, S, q.zo, q.so, out_val(e, i));
	return 0;
}

/*
 * qglobal_avgpool in integer form: QuantizeLinear, the int64 sum of each
 * channel (ReduceSum over the image axes), minus HW zi, times m plus
 * 2^(S-1), shifted and requantized: the same bits as mcomp, [N, C].
 */
static int map_qgap(struct exp *e, int i, const struct mc_node *nd)
{
	int64_t shape[MC_MAX_DIMS], HW = 1, *axes = ar(e, MC_MAX_DIMS * sizeof(int64_t)), dims[1];
	int in_ndim = in_shape(e, nd, 0, shape);
	struct mc_qgap_q q;
	int32_t m;
	int S;
	const char *in[2], *d, *s = sub(e, nd, "sum"), *a = sub(e, nd, "centered_sum");
	const char *p = sub(e, nd, "scaled"), *t = sub(e, nd, "rounded");
	Onnx__NodeProto *n;

	for (int k = 1; k < in_ndim; k++)
		HW *= shape[k];
	if (qpair_of(nd, 0, &q.si, &q.zi) || qpair_of(nd, 1, &q.so, &q.zo) ||
	    mc_qgap_fixed(&q, HW, &m, &S))
		return node_err(e, nd, MC_EINVAL,
				"qparams are not u8 quantizations the kernel takes; the file is "
				"damaged: quantize the model again");
	if (!axes)
		return 0;
	for (int k = 1; k < in_ndim; k++)
		axes[k - 1] = k + 1;
	dims[0] = in_ndim - 1;
	/* sum of q - zi over the image: the sum of q, minus HW zi (exact in int64) */
	d = q_centered(e, nd, 0, q.si, 0);
	in[0] = d;
	in[1] = init(e, sfmt(e, "%s.axes", nd->name), DT_INT64, 1, dims, axes,
		     (size_t)dims[0] * sizeof(int64_t));
	n = onode(e, "ReduceSum", sub(e, nd, "ReduceSum"), s, 2, in);
	attr_i(e, n, "keepdims", 0);
	in[0] = s;
	in[1] = init_int(e, sfmt(e, "%s.hw_zp", nd->name), DT_INT64, HW * q.zi);
	onode(e, "Sub", sub(e, nd, "SubHwZeroPoint"), a, 2, in);
	in[0] = a;
	in[1] = init_int(e, sfmt(e, "%s.m", nd->name), DT_INT64, m);
	onode(e, "Mul", sub(e, nd, "Mul"), p, 2, in);
	in[0] = p;
	in[1] = init_int(e, sfmt(e, "%s.round", nd->name), DT_INT64, S ? (int64_t)1 << (S - 1) : 0);
	onode(e, "Add", sub(e, nd, "Round"), t, 2, in);
	requant_onnx(e, nd, t, S, q.zo, q.so, out_val(e, i));
	return 0;
}

/* ---------------------------------------------------------------- 4-bit weights */

/* A weight-only 4-bit qlinear written as INT4 (not MC_ONNX_4BIT_F32). */
static int is_int4(const struct mc_onnx_meta *meta, const struct mc_node *nd)
{
	return !strcmp(nd->op->name, "qlinear") && qmode(nd) == QM_WEIGHT_ONLY &&
	       mc_node_attr_int(nd, "bits", 8) == 4 && !(meta && (meta->flags & MC_ONNX_4BIT_F32));
}

/*
 * n int4 values as ONNX packs them, two a byte, element 0 in the low
 * nibble, each nibble the value's two's complement (so mcomp's q + 8 is the
 * nibble with its top bit flipped); an odd count leaves the last high
 * nibble 0. from(k) is value k in [-8, 7].
 */
static uint8_t *pack_int4(struct exp *e, int64_t n, const struct mc_tensor *src, int biased)
{
	uint8_t *p = ar(e, (size_t)(n + 1) / 2);

	if (!p)
		return NULL;
	for (int64_t k = 0; k < n; k++) {
		int v = biased ? (((const uint8_t *)src->data)[k / 2] >> (k % 2 ? 4 : 0) & 15) - 8
			       : ((const int8_t *)src->data)[k];

		p[k / 2] |= (uint8_t)((v & 15) << (k % 2 ? 4 : 0));
	}
	return p;
}

/*
 * The 4-bit weight w [out, in] of a weight-only qlinear through
 * DequantizeLinear (opset 21): INT4 values, the f32 scales per tensor (a
 * scalar), per channel ([out], axis 0) or per group ([out, in / group],
 * axis 1, block_size group), and the zero points (asymmetric) as INT4 of
 * the scales' shape. DequantizeLinear computes (q - z) s in float, as
 * mcomp's kernels do, so the f32 weights are the same bits. Returns the
 * dequantized value.
 */
static const char *dq_weight4(struct exp *e, const struct mc_node *nd)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *s = mc_node_param_named(nd, "weight_scale");
	const struct mc_tensor *z = mc_node_param_named(nd, "weight_zero_point");
	int64_t O = w->shape[0], I = w->shape[1], wd[2] = {O, I}, sd[2] = {O, 1};
	int64_t per_row = s->numel == 1 ? 0 : s->numel / O;
	int sdim = per_row == 0 ? 0 : per_row == 1 ? 1 : 2;
	const char *in[3], *out = sub(e, nd, "weight_dq");
	uint8_t *q = pack_int4(e, O * I, w, 1), *zp = NULL;
	Onnx__NodeProto *n;

	if (z) {
		for (int64_t k = 0; k < z->numel; k++) {
			int v = ((const int8_t *)z->data)[k];

			if (v < -8 || v > 7) {
				node_err(
				    e, nd, MC_EINVAL,
				    "weight_zero_point[%lld] is %d, outside 4 bits' [-8, 7] (the "
				    "file is damaged: quantize the model again)",
				    (long long)k, v);
				return NULL;
			}
		}
		zp = pack_int4(e, z->numel, z, 0);
	}
	if (!q || (z && !zp))
		return NULL;
	sd[1] = per_row;
	in[0] = init(e, w->name, DT_INT4, 2, wd, q, (size_t)(O * I + 1) / 2);
	in[1] = init(e, s->name, DT_FLOAT, sdim, sd, s->data, (size_t)s->numel * sizeof(float));
	in[2] = z ? init(e, z->name, DT_INT4, sdim, sd, zp, (size_t)(z->numel + 1) / 2) : NULL;
	n = onode(e, "DequantizeLinear", sub(e, nd, "weight/DequantizeLinear"), out, z ? 3 : 2, in);
	if (sdim == 1)
		attr_i(e, n, "axis", 0);
	if (sdim == 2) {
		attr_i(e, n, "axis", 1);
		attr_i(e, n, "block_size", I / per_row);
	}
	return out;
}

/* ---------------------------------------------------------------- the model */

static Onnx__ValueInfoProto *value_info(struct exp *e, const char *name, int ndim,
					const int64_t *shape)
{
	Onnx__ValueInfoProto *v = ar(e, sizeof(*v));
	Onnx__TypeProto *tp = ar(e, sizeof(*tp));
	Onnx__TypeProto__Tensor *tt = ar(e, sizeof(*tt));
	Onnx__TensorShapeProto *sh = ar(e, sizeof(*sh));
	Onnx__TensorShapeProto__Dimension **dims = ar(e, (size_t)(ndim + 1) * sizeof(*dims));

	if (!v || !tp || !tt || !sh || !dims)
		return NULL;
	onnx__value_info_proto__init(v);
	onnx__type_proto__init(tp);
	onnx__type_proto__tensor__init(tt);
	onnx__tensor_shape_proto__init(sh);
	for (int d = 0; d <= ndim; d++) {
		dims[d] = ar(e, sizeof(**dims));
		if (!dims[d])
			return NULL;
		onnx__tensor_shape_proto__dimension__init(dims[d]);
		if (d == 0) {
			dims[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
			dims[d]->dim_param = "N";
		} else {
			dims[d]->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
			dims[d]->dim_value = shape[d - 1];
		}
	}
	sh->n_dim = (size_t)ndim + 1;
	sh->dim = dims;
	tt->has_elem_type = 1;
	tt->elem_type = DT_FLOAT;
	tt->shape = sh;
	tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
	tp->tensor_type = tt;
	v->name = (char *)name;
	v->type = tp;
	return v;
}

/* Every node known and exportable, before anything is built. */
static int check_ops(struct exp *e)
{
	char list[512] = "";

	for (int k = 0; k < N_OPS; k++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", k ? ", " : "",
			 ops[k].op);
	for (int i = 0; i < mc_model_n_nodes(e->m); i++) {
		const struct mc_node *nd = mc_model_node(e->m, i);
		const char *prov = mc_op_provider(nd->op->name);

		if (prov)
			return node_err(e, nd, MC_EINVAL,
					"op '%s' is provided by pass '%s' and has no ONNX form; "
					"ONNX export writes %s",
					nd->op->name, prov, list);
		if (op_row(nd->op->name) < 0)
			return node_err(e, nd, MC_EINVAL,
					"ONNX export has no mapping for op '%s'; it writes %s",
					nd->op->name, list);
	}
	if (mc_model_n_nodes(e->m) < 1)
		return mc_err_set(e->err, MC_EINVAL,
				  "the model has no nodes; ONNX needs a graph that computes its "
				  "output");
	return 0;
}

/* The lowest opset that holds every node of m as written (OPSET_* above). */
static int pick_opset(const struct mc_model *m, const struct mc_onnx_meta *meta)
{
	int opset = OPSET_BASE;

	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		if (is_int4(meta, nd))
			opset = OPSET_INT4;
		else if (!strcmp(nd->op->name, "hardswish") && opset < OPSET_HARDSWISH)
			opset = OPSET_HARDSWISH;
	}
	return opset;
}

MC_API int mc_model_onnx_opset(const struct mc_model *m, const struct mc_onnx_meta *meta)
{
	return pick_opset(m, meta);
}

static Onnx__StringStringEntryProto *prop(struct exp *e, const char *k, const char *v)
{
	Onnx__StringStringEntryProto *p = ar(e, sizeof(*p));

	if (!p)
		return NULL;
	onnx__string_string_entry_proto__init(p);
	p->key = (char *)k;
	p->value = (char *)v;
	return p;
}

static int build(struct exp *e, Onnx__ModelProto *mp, Onnx__GraphProto *g)
{
	const struct mc_node *last;
	Onnx__OperatorSetIdProto *ops_id = ar(e, sizeof(*ops_id));
	Onnx__OperatorSetIdProto **opv = ar(e, sizeof(*opv));
	Onnx__ValueInfoProto **in = ar(e, sizeof(*in)), **out = ar(e, sizeof(*out));
	Onnx__StringStringEntryProto **props;
	int64_t shape[MC_MAX_DIMS];
	size_t n_props = 1;
	int r, ndim;

	e->last = mc_model_n_nodes(e->m) - 1;
	e->opset = pick_opset(e->m, e->meta);
	e->val = ar(e, (size_t)(e->last + 1) * sizeof(*e->val));
	for (size_t k = 0; e->meta && e->meta->props && e->meta->props[k]; k += 2)
		if (e->meta->props[k + 1])
			n_props++;
	props = ar(e, n_props * sizeof(*props));
	if (!ops_id || !opv || !in || !out || !e->val || !props)
		return MC_ENOMEM;
	for (int i = 0; i <= e->last; i++) {
		const struct mc_node *nd = mc_model_node(e->m, i);

		e->val[i] = out_val(e, i);
		r = ops[op_row(nd->op->name)].map(e, i, nd);
		if (r)
			return r;
	}
	onnx__operator_set_id_proto__init(ops_id);
	ops_id->domain = "";
	ops_id->has_version = 1;
	ops_id->version = e->opset;
	opv[0] = ops_id;
	ndim = mc_model_input_shape(e->m, shape);
	in[0] = value_info(e, "input", ndim, shape);
	last = mc_model_node(e->m, e->last);
	out[0] = value_info(e, "logits", last->out_ndim, last->out_shape);
	g->name = "mcomp";
	g->n_node = e->n_nodes;
	g->node = e->nodes;
	g->n_initializer = e->n_inits;
	g->initializer = e->inits;
	g->n_input = 1;
	g->input = in;
	g->n_output = 1;
	g->output = out;
	props[0] = prop(e, "mcomp.version", MC_VERSION);
	for (size_t k = 0, j = 1; e->meta && e->meta->props && e->meta->props[k]; k += 2)
		if (e->meta->props[k + 1])
			props[j++] = prop(e, e->meta->props[k], e->meta->props[k + 1]);
	for (size_t k = 0; k < n_props; k++)
		if (!props[k])
			return MC_ENOMEM;
	mp->has_ir_version = 1;
	/* IR 7 reads opsets 13 and 14 (ONNX 1.8, 1.9); INT4 needs IR 10 (ONNX 1.16) */
	mp->ir_version = e->opset >= OPSET_INT4 ? 10 : 7;
	mp->n_opset_import = 1;
	mp->opset_import = opv;
	mp->producer_name = "mcomp";
	mp->producer_version = MC_VERSION;
	mp->graph = g;
	mp->n_metadata_props = n_props;
	mp->metadata_props = props;
	return e->a.nomem ? MC_ENOMEM : 0;
}

static void release(struct exp *e)
{
	mc_xarena_free(&e->a);
	free(e->nodes);
	free(e->inits);
}

MC_API int mc_model_onnx_check(const struct mc_model *m, struct mc_err *err)
{
	struct exp e = {.m = m, .err = err};

	return check_ops(&e);
}

MC_API int mc_model_serialize_onnx(const struct mc_model *m, const struct mc_onnx_meta *meta,
				   void **buf, size_t *len, struct mc_err *err)
{
	Onnx__ModelProto mp = ONNX__MODEL_PROTO__INIT;
	Onnx__GraphProto g = ONNX__GRAPH_PROTO__INIT;
	struct exp e = {.m = m, .meta = meta, .err = err};
	size_t n;
	int r;

	*buf = NULL;
	*len = 0;
	r = check_ops(&e);
	if (!r && mc_model_is_arch(m))
		r = mc_err_set(err, MC_EINVAL,
			       "the model has shapes but no weights; export a trained model");
	if (!r)
		r = build(&e, &mp, &g);
	if (r == MC_ENOMEM || (!r && e.a.nomem))
		r = mc_err_set(err, MC_ENOMEM, "out of memory building the ONNX graph");
	if (r)
		goto out;
	n = onnx__model_proto__get_packed_size(&mp);
	*buf = malloc(n ? n : 1);
	if (!*buf) {
		r = mc_err_set(err, MC_ENOMEM, "out of memory: the ONNX model takes %zu bytes", n);
		goto out;
	}
	*len = onnx__model_proto__pack(&mp, *buf);
	if (e.weights && e.zeros * 10 >= e.weights)
		note(&e, MC_LOG_INFO,
		     "%.1f%% of the weights are zero (pruned); ONNX Runtime has no sparse kernels "
		     "for them, so they are written dense: the size gain of sparse storage stays "
		     "in the .safetensors file",
		     100.0 * (double)e.zeros / (double)e.weights);
out:
	release(&e);
	return r;
}

MC_API int mc_model_save_onnx(const struct mc_model *m, const char *path,
			      const struct mc_onnx_meta *meta, struct mc_err *err)
{
	size_t len;
	void *buf;
	int r;

	r = mc_model_serialize_onnx(m, meta, &buf, &len, err);
	if (r)
		return mc_err_prefix(err, "%s", path);
	r = mc_write_file_atomic(path, buf, len, err);
	free(buf);
	return r;
}

/* ---------------------------------------------------------------- cascades */

MC_API int mc_cascade_onnx_path(const char *path, int stage, char *buf, size_t size)
{
	size_t n = strlen(path);

	if (n > 5 && !strcasecmp(path + n - 5, ".onnx"))
		n -= 5;
	return snprintf(buf, size, "%.*s.stage%d.onnx", (int)n, path, stage) >= (int)size ? -1 : 0;
}

/* A threshold as the cascade file writes it: a number that reads back as the same
 * float (17 digits of its double), or "inf" / "-inf". */
static json_t *threshold_json(float t)
{
	if (isfinite(t))
		return json_real((double)t);
	return isinf(t) ? json_string(t > 0 ? "inf" : "-inf") : NULL;
}

static const char cascade_rule[] =
    "Run stage 0 on every sample. From a stage's logits z (one row, C classes) compute, in "
    "double: m = max z, e_j = exp(z_j - m), s = sum of e_j, p_j = e_j / s; then the "
    "confidence: max-prob = 1 / s; margin = (1 - e2) / s with e2 the largest e_j other than "
    "the first maximum; entropy = (sum of e_j (z_j - m), over e_j > 0) / s - ln s. Round it "
    "to float32. A sample whose confidence >= the stage's threshold (float32; NaN never "
    "does) exits there with that stage's logits; the others go on to the next stage. The "
    "last stage answers every sample that reaches it.";

/*
 * The JSON of metadata_props["mcomp.cascade"]: format, confidence, the rule,
 * and per stage its name, file (base name) and threshold (not the last).
 */
static char *cascade_meta(const struct mc_cascade *c, const char *path, struct mc_err *err)
{
	json_t *root = json_object(), *stages = json_array();
	char file[4096], *text = NULL;
	int bad = !root || !stages;

	for (int s = 0; !bad && s < c->n_stages; s++) {
		json_t *st;
		const char *base;

		if (mc_cascade_onnx_path(path, s, file, sizeof(file))) {
			mc_err_set(err, MC_EINVAL, "the path is too long");
			goto out;
		}
		st = json_object();
		base = strrchr(file, '/') ? strrchr(file, '/') + 1 : file;
		bad |= !st || json_object_set_new(st, "name", json_string(c->names[s])) ||
		       json_object_set_new(st, "file", json_string(base));
		if (!bad && s < c->n_stages - 1) {
			json_t *t = threshold_json(c->thresholds[s]);

			if (!t) {
				json_decref(st);
				mc_err_set(err, MC_EINVAL,
					   "stage %d ('%s') has threshold NaN; the cascade file is "
					   "damaged: build it again with the cascade pass",
					   s, c->names[s]);
				goto out;
			}
			bad |= json_object_set_new(st, "threshold", t);
		}
		bad |= json_array_append_new(stages, st);
	}
	bad |= json_object_set_new(root, "format", json_integer(MC_CASCADE_FORMAT)) ||
	       json_object_set_new(root, "confidence",
				   json_string(mc_confidence_names[c->confidence])) ||
	       json_object_set_new(root, "rule", json_string(cascade_rule)) ||
	       json_object_set(root, "stages", stages);
	text = bad ? NULL
		   : json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17));
	if (!text)
		mc_err_set(err, MC_ENOMEM, "out of memory writing the cascade's metadata");
out:
	json_decref(stages);
	json_decref(root);
	return text;
}

MC_API int mc_cascade_save_onnx(const struct mc_cascade *c, const char *path,
				const struct mc_onnx_meta *meta, struct mc_err *err)
{
	void *buf[MC_CASCADE_MAX_STAGES] = {0};
	size_t len[MC_CASCADE_MAX_STAGES], n_user = 0;
	const char **props = NULL;
	char *json, stage[16], thr[32], file[4096];
	struct mc_onnx_meta m = {0};
	int r = 0, s;

	if (c->confidence < 0 || c->confidence >= MC_CONF_COUNT)
		return mc_err_set(err, MC_EINVAL, "%s: unknown confidence measure %d", path,
				  c->confidence);
	json = cascade_meta(c, path, err);
	if (!json)
		return mc_err_prefix(err, "%s", path);
	while (meta && meta->props && meta->props[n_user])
		n_user += 2;
	props = calloc(n_user + 9, sizeof(*props));
	if (!props) {
		r = mc_err_set(err, MC_ENOMEM, "out of memory");
		goto out;
	}
	if (n_user)
		memcpy(props, meta->props, n_user * sizeof(*props));
	if (meta)
		m = *meta;
	m.props = props;
	/* Every stage is built before any file is written: a stage that cannot be
	 * exported leaves no half cascade behind. */
	for (s = 0; s < c->n_stages; s++) {
		size_t k = n_user;

		snprintf(stage, sizeof(stage), "%d", s);
		props[k++] = "mcomp.cascade";
		props[k++] = json;
		props[k++] = "mcomp.cascade.stage";
		props[k++] = stage;
		props[k++] = "mcomp.cascade.confidence";
		props[k++] = mc_confidence_names[c->confidence];
		if (s < c->n_stages - 1) {
			snprintf(thr, sizeof(thr), "%.17g", (double)c->thresholds[s]);
			props[k++] = "mcomp.cascade.threshold";
			props[k++] = thr;
		}
		props[k] = NULL;
		r = mc_model_serialize_onnx(c->stages[s], &m, &buf[s], &len[s], err);
		if (r) {
			mc_err_prefix(err, "%s: stage %d ('%s')", path, s, c->names[s]);
			goto out;
		}
	}
	for (s = 0; s < c->n_stages; s++) {
		mc_cascade_onnx_path(path, s, file, sizeof(file));
		r = mc_write_file_atomic(file, buf[s], len[s], err);
		if (r)
			goto out;
	}
out:
	for (s = 0; s < c->n_stages; s++)
		free(buf[s]);
	free(props);
	free(json);
	return r;
}
