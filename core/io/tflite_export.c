/* SPDX-License-Identifier: MIT */
/*
 * tflite_export.c - mcomp models out as TensorFlow Lite flatbuffers
 * (mcomp/tflite.h has the table of ops; docs/interop.md the layout and the
 * limits). This file decides what the TFLite graph holds: tensors in
 * channels-last order, weights transposed to it, int8 tensors at the
 * scales mcomp calibrated; core/io/tflite_fb.cc packs it with the
 * flatbuffers library. Structure and errors follow onnx_export.c: a table
 * of ops, one map function each, every node checked before anything is
 * built, errors naming the node.
 *
 * Each mcomp value (the model input, each node's output) may live in the
 * TFLite graph in two forms, f32 and int8 (struct val). A node asks for
 * its input in the form it computes on (as_f32, as_q): the form is made on
 * first use, a DEQUANTIZE of the int8 tensor or a QUANTIZE of the f32 one
 * (or of an int8 one at another scale), so conversions sit exactly where
 * mcomp converts.
 */
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/model.h>
#include <mcomp/pipeline.h>
#include <mcomp/safetensors.h>
#include <mcomp/tflite.h>

#include "core/io/tflite_fb.h"
#include "io/export_int.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "tflite_export.c copies tensors as TFLite buffers, which are little-endian"
#endif

/* One mcomp value in the TFLite graph. */
struct val {
	int f32, q; /* its f32 and int8 tensors, -1 until made */
	float s;    /* the int8 tensor's scale and zero point (int8: mcomp's u8 less 128) */
	int z;
	int rq, rz; /* a copy requantized for a reader of another scale (rq -1: none) */
	float rs;
	int nd; /* TFLite rank: 4 ([1, H, W, C]) or 2 ([1, features]) */
	int32_t shape[4];
	int64_t pc, ph, pw; /* pc > 0: flattened from [C=pc, H=ph, W=pw] in H, W, C order */
	const char *name;
};

struct exp {
	const struct mc_model *m; /* the batch-norm-folded copy */
	const struct mc_onnx_meta *meta;
	struct mc_err *err;
	struct mc_tfl *b;
	struct val *v; /* [n_nodes + 1]: v[0] the model input, v[i + 1] node i's output */
	int last;
	struct mc_xarena a; /* scratch freed at the end; a.nomem: out of memory */
};

typedef int (*map_fn)(struct exp *e, int i, const struct mc_node *nd);

static int map_linear(struct exp *, int, const struct mc_node *);
static int map_conv(struct exp *, int, const struct mc_node *);
static int map_act(struct exp *, int, const struct mc_node *);
static int map_clip(struct exp *, int, const struct mc_node *);
static int map_f32(struct exp *, int, const struct mc_node *);
static int map_pool(struct exp *, int, const struct mc_node *);
static int map_gap(struct exp *, int, const struct mc_node *);
static int map_flatten(struct exp *, int, const struct mc_node *);
static int map_pad(struct exp *, int, const struct mc_node *);
static int map_concat(struct exp *, int, const struct mc_node *);
static int map_dropout(struct exp *, int, const struct mc_node *);
static int map_qlinear(struct exp *, int, const struct mc_node *);
static int map_qconv(struct exp *, int, const struct mc_node *);
static int map_qadd(struct exp *, int, const struct mc_node *);
static int map_qgap(struct exp *, int, const struct mc_node *);

/* The mcomp ops written, in the order of their names (the list errors print). */
static const struct {
	const char *op;
	map_fn map;
	int code; /* the TFLite op of map_act, map_f32 and map_pool */
} ops[] = {
    {"add", map_f32, MC_TFL_ADD},
    {"avgpool2d", map_pool, MC_TFL_AVERAGE_POOL_2D},
    {"clip", map_clip, 0},
    {"concat", map_concat, MC_TFL_CONCATENATION},
    {"conv2d", map_conv, 0},
    {"dropout", map_dropout, 0},
    {"flatten", map_flatten, MC_TFL_RESHAPE},
    {"global_avgpool", map_gap, MC_TFL_MEAN},
    {"linear", map_linear, MC_TFL_FULLY_CONNECTED},
    {"maxpool2d", map_pool, MC_TFL_MAX_POOL_2D},
    {"pad2d", map_pad, MC_TFL_PAD},
    {"qadd", map_qadd, MC_TFL_ADD},
    {"qconv2d", map_qconv, 0},
    {"qglobal_avgpool", map_qgap, MC_TFL_MEAN},
    {"qlinear", map_qlinear, 0},
    {"relu", map_act, MC_TFL_RELU},
    {"relu6", map_act, MC_TFL_RELU6},
    {"sigmoid", map_f32, MC_TFL_LOGISTIC},
    {"softmax", map_f32, MC_TFL_SOFTMAX},
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
static int node_err(struct mc_err *err, const struct mc_node *nd, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int node_err(struct mc_err *err, const struct mc_node *nd, int code, const char *fmt, ...)
{
	char msg[MC_ERR_MAX / 2];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return mc_err_set(err, code, "node '%s' (%s): %s", nd->name, nd->op->name, msg);
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

/* n zeroed bytes freed at the end of the export; NULL (and e->a.nomem) when out of memory. */
static void *ar(struct exp *e, size_t n)
{
	return mc_xarena_alloc(&e->a, n);
}

static const char *sfmt(struct exp *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static const char *sfmt(struct exp *e, const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	s = mc_xarena_vfmt(&e->a, fmt, ap);
	va_end(ap);
	return s ? s : "";
}

/* ---------------------------------------------------------------- tensors and ops */

/* Notes a builder call that failed (out of memory); returns its index. */
static int chk(struct exp *e, int idx)
{
	if (idx < 0)
		e->a.nomem = 1;
	return idx;
}

static int tensor(struct exp *e, const char *name, int type, int nd, const int32_t *shape,
		  int buffer, const struct mc_tfl_quant *q)
{
	return chk(e, mc_tfl_tensor(e->b, name, type, nd, shape, buffer, q));
}

/* A constant tensor holding bytes[len] (copied). */
static int constant(struct exp *e, const char *name, int type, int nd, const int32_t *shape,
		    const void *bytes, size_t len, const struct mc_tfl_quant *q)
{
	int buf = chk(e, mc_tfl_buffer(e->b, bytes, len));

	return buf < 0 ? -1 : tensor(e, name, type, nd, shape, buf, q);
}

/* A per-tensor int8 quantization (s, z) in storage the builder copies at once. */
struct q1 {
	float s;
	int64_t z;
	struct mc_tfl_quant q;
};

static const struct mc_tfl_quant *q1(struct q1 *q, float s, int z)
{
	q->s = s;
	q->z = z;
	q->q = (struct mc_tfl_quant){.n = 1, .scale = &q->s, .zero_point = &q->z};
	return &q->q;
}

static void op(struct exp *e, int code, const int *in, int n_in, int out,
	       const struct mc_tfl_opts *o)
{
	for (int k = 0; k < n_in; k++)
		if (in[k] < 0)
			return; /* an input failed (out of memory): e->a.nomem is set */
	if (out >= 0)
		chk(e, mc_tfl_op(e->b, code, in, n_in, &out, 1, o));
}

/* The value input k of nd reads. */
static struct val *in_val(struct exp *e, const struct mc_node *nd, int k)
{
	return &e->v[nd->inputs[k] == MC_NODE_INPUT ? 0 : nd->inputs[k] + 1];
}

/* The value of node i (i = MC_NODE_INPUT: the model input). */
static struct val *val_of(struct exp *e, int i)
{
	return &e->v[i == MC_NODE_INPUT ? 0 : i + 1];
}

/* The f32 tensor of v: made by a DEQUANTIZE of its int8 tensor on first use. */
static int as_f32(struct exp *e, struct val *v)
{
	if (v->f32 < 0 && v->q >= 0) {
		v->f32 =
		    tensor(e, sfmt(e, "%s/f32", v->name), MC_TFL_FLOAT32, v->nd, v->shape, 0, NULL);
		op(e, MC_TFL_DEQUANTIZE, &v->q, 1, v->f32, NULL);
	}
	return v->f32;
}

/*
 * The int8 tensor of v at scale s and zero point z (int8): v's own, or
 * made by a QUANTIZE of its f32 tensor (then it becomes v's int8 form) or,
 * at another scale, of its int8 one (a requantized copy).
 */
static int as_q(struct exp *e, struct val *v, float s, int z)
{
	struct q1 q;
	int t;

	if (v->q >= 0 && v->s == s && v->z == z)
		return v->q;
	if (v->rq >= 0 && v->rs == s && v->rz == z)
		return v->rq;
	t = tensor(e, sfmt(e, "%s/int8%s", v->name, v->q >= 0 ? "_requantized" : ""), MC_TFL_INT8,
		   v->nd, v->shape, 0, q1(&q, s, z));
	op(e, MC_TFL_QUANTIZE, v->q >= 0 ? &v->q : &v->f32, 1, t, NULL);
	if (v->q < 0) {
		v->q = t;
		v->s = s;
		v->z = z;
	} else {
		v->rq = t;
		v->rs = s;
		v->rz = z;
	}
	return t;
}

/* Whether v is held in int8 only: an op that can compute on int8 then does. */
static int int8_only(const struct val *v)
{
	return v->q >= 0 && v->f32 < 0;
}

/* Node i's output value, shaped from the node: [C, H, W] -> [1, H, W, C], [F] -> [1, F]. */
static struct val *out_of(struct exp *e, int i)
{
	const struct mc_node *nd = mc_model_node(e->m, i);
	struct val *v = &e->v[i + 1];

	v->name = nd->name;
	if (nd->out_ndim == 3) {
		v->nd = 4;
		v->shape[0] = 1;
		v->shape[1] = (int32_t)nd->out_shape[1];
		v->shape[2] = (int32_t)nd->out_shape[2];
		v->shape[3] = (int32_t)nd->out_shape[0];
	} else {
		v->nd = 2;
		v->shape[0] = 1;
		v->shape[1] = (int32_t)nd->out_shape[0];
	}
	return v;
}

static int new_f32(struct exp *e, struct val *v)
{
	v->f32 = tensor(e, v->name, MC_TFL_FLOAT32, v->nd, v->shape, 0, NULL);
	return v->f32;
}

static int new_q(struct exp *e, struct val *v, float s, int z)
{
	struct q1 q;

	v->q = tensor(e, v->name, MC_TFL_INT8, v->nd, v->shape, 0, q1(&q, s, z));
	v->s = s;
	v->z = z;
	return v->q;
}

/* ---------------------------------------------------------------- padding */

/*
 * How a k x k window of stride s with p zeros each side over in is
 * written: VALID (p = 0), SAME when TFLite's SAME places the same windows
 * (the same output size, p before), else -1: a PAD first, then VALID.
 */
static int same_fits(int64_t in, int64_t k, int64_t s, int64_t p)
{
	int64_t out = (in + 2 * p - k) / s + 1, out_same = (in + s - 1) / s;
	int64_t total = (out_same - 1) * s + k - in;

	if (total < 0)
		total = 0;
	return out == out_same && total / 2 == p;
}

static int padding_of(const struct val *x, int64_t k, int64_t s, int64_t p)
{
	if (p == 0)
		return MC_TFL_VALID;
	return same_fits(x->shape[1], k, s, p) && same_fits(x->shape[2], k, s, p) ? MC_TFL_SAME
										  : -1;
}

/* A PAD of p zeros (in int8: the zero point) around H and W of tensor t of value x. */
static int pad_hw(struct exp *e, const struct mc_node *nd, const struct val *x, int t, int q,
		  int64_t top, int64_t left, int64_t bottom, int64_t right)
{
	int32_t pads[8] = {0, 0, (int32_t)top, (int32_t)bottom, (int32_t)left, (int32_t)right,
			   0, 0};
	int32_t pshape[2] = {4, 2}, shape[4] = {1, x->shape[1] + (int32_t)(top + bottom),
						x->shape[2] + (int32_t)(left + right), x->shape[3]};
	struct q1 qq;
	int in[2], out;

	in[0] = t;
	in[1] = constant(e, sfmt(e, "%s/paddings", nd->name), MC_TFL_INT32, 2, pshape, pads,
			 sizeof(pads), NULL);
	out = tensor(e, sfmt(e, "%s/padded", nd->name), q ? MC_TFL_INT8 : MC_TFL_FLOAT32, 4, shape,
		     0, q ? q1(&qq, x->s, x->z) : NULL);
	op(e, MC_TFL_PAD, in, 2, out, NULL);
	return out;
}

/* ---------------------------------------------------------------- weights */

/*
 * A conv2d weight [O, C/g, k, k] (esize bytes an element) in TFLite's
 * layout: OHWI [O, k, k, C] for groups 1, [1, k, k, O] for depthwise.
 */
static void *conv_weight(struct exp *e, const struct mc_tensor *w, int dw, size_t esize)
{
	int64_t O = w->shape[0], C = w->shape[1], K = w->shape[2] * w->shape[3];
	const char *src = w->data;
	char *t = ar(e, (size_t)w->numel * esize);

	if (!t)
		return NULL;
	for (int64_t o = 0; o < O; o++)
		for (int64_t c = 0; c < C; c++)
			for (int64_t r = 0; r < K; r++)
				memcpy(t + (size_t)(dw ? r * O + o : (o * K + r) * C + c) * esize,
				       src + (size_t)((o * C + c) * K + r) * esize, esize);
	return t;
}

/*
 * A linear weight [O, I] whose input x may be a flatten of [C, H, W] laid
 * out H, W, C: columns permuted so column (h W + w) C + c holds mcomp's
 * column c H W + h W + w.
 */
static void *linear_weight(struct exp *e, const struct mc_tensor *w, const struct val *x,
			   size_t esize)
{
	int64_t O = w->shape[0], I = w->shape[1];
	const char *src = w->data;
	char *t;

	if (x->pc <= 0)
		return (void *)w->data;
	t = ar(e, (size_t)w->numel * esize);
	if (!t)
		return NULL;
	for (int64_t o = 0; o < O; o++)
		for (int64_t c = 0; c < x->pc; c++)
			for (int64_t hw = 0; hw < x->ph * x->pw; hw++)
				memcpy(t + (size_t)(o * I + hw * x->pc + c) * esize,
				       src + (size_t)(o * I + c * x->ph * x->pw + hw) * esize,
				       esize);
	return t;
}

/* The bias [O] of nd as an f32 constant; zeros for a layer without one (bias: false). */
static int bias_f32(struct exp *e, const struct mc_node *nd, const struct mc_tensor *b, int64_t O)
{
	int32_t shape[1] = {(int32_t)O};
	float *zero;

	if (b)
		return constant(e, b->name, MC_TFL_FLOAT32, 1, shape, b->data,
				(size_t)O * sizeof(float), NULL);
	/* written, not left out: not every reader takes a layer without one */
	zero = ar(e, (size_t)O * sizeof(float));
	return zero ? constant(e, sfmt(e, "%s.bias", nd->name), MC_TFL_FLOAT32, 1, shape, zero,
			       (size_t)O * sizeof(float), NULL)
		    : -1;
}

/* ---------------------------------------------------------------- f32 ops */

static void conv_opts(struct mc_tfl_opts *o, int padding, int64_t s, int act)
{
	memset(o, 0, sizeof(*o));
	o->padding = padding;
	o->stride_w = o->stride_h = (int)s;
	o->activation = act;
}

/*
 * A convolution of tensor x (value xv) into out: CONV_2D or, depthwise,
 * DEPTHWISE_CONV_2D, with a PAD first where SAME does not place mcomp's
 * windows.
 */
static void conv_op(struct exp *e, const struct mc_node *nd, const struct val *xv, int x, int q,
		    int w, int b, int out, int act, int dw_mult)
{
	int64_t k = mc_node_attr_int(nd, "kernel", 3), s = mc_node_attr_int(nd, "stride", 1);
	int64_t p = mc_node_attr_int(nd, "padding", 0);
	int padding = padding_of(xv, k, s, p), in[3];
	struct mc_tfl_opts o;

	if (padding < 0) {
		x = pad_hw(e, nd, xv, x, q, p, p, p, p);
		padding = MC_TFL_VALID;
	}
	conv_opts(&o, padding, s, act);
	in[0] = x;
	in[1] = w;
	in[2] = b;
	if (dw_mult) {
		o.depth_multiplier = dw_mult;
		op(e, MC_TFL_DEPTHWISE_CONV_2D, in, 3, out, &o);
	} else {
		op(e, MC_TFL_CONV_2D, in, 3, out, &o);
	}
}

/* The depth multiplier of a depthwise conv2d or qconv2d (weight [O, 1, k, k]); else 0. */
static int dw_mult(const struct mc_node *nd)
{
	int64_t g = mc_node_attr_int(nd, "groups", 1),
		O = mc_node_param_named(nd, "weight")->shape[0];

	return g > 1 && mc_node_param_named(nd, "weight")->shape[1] == 1 ? (int)(O / g) : 0;
}

static int map_conv(struct exp *e, int i, const struct mc_node *nd)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *b = mc_node_param_named(nd, "bias");
	struct val *xv = in_val(e, nd, 0), *y = out_of(e, i);
	int mult = dw_mult(nd), x = as_f32(e, xv);
	int32_t ws[4] = {mult ? 1 : (int32_t)w->shape[0], (int32_t)w->shape[2],
			 (int32_t)w->shape[3], mult ? (int32_t)w->shape[0] : (int32_t)w->shape[1]};
	void *wt = conv_weight(e, w, mult != 0, sizeof(float));
	int wi =
	    wt ? constant(e, w->name, MC_TFL_FLOAT32, 4, ws, wt, (size_t)w->numel * 4, NULL) : -1;

	conv_op(e, nd, xv, x, 0, wi, bias_f32(e, nd, b, w->shape[0]), new_f32(e, y),
		MC_TFL_ACT_NONE, mult);
	return 0;
}

static int map_linear(struct exp *e, int i, const struct mc_node *nd)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *b = mc_node_param_named(nd, "bias");
	struct val *xv = in_val(e, nd, 0), *y = out_of(e, i);
	int32_t ws[2] = {(int32_t)w->shape[0], (int32_t)w->shape[1]};
	void *wt = linear_weight(e, w, xv, sizeof(float));
	int in[3] = {as_f32(e, xv), -1, bias_f32(e, nd, b, w->shape[0])};
	struct mc_tfl_opts o = {0};

	if (wt)
		in[1] = constant(e, w->name, MC_TFL_FLOAT32, 2, ws, wt, (size_t)w->numel * 4, NULL);
	op(e, MC_TFL_FULLY_CONNECTED, in, 3, new_f32(e, y), &o);
	return 0;
}

/*
 * relu, relu6: on int8 when the input is held in int8 only (at its scale:
 * quantizing relu(x) gives max(q, z), since 0.0 is exact), else f32.
 */
static int map_act(struct exp *e, int i, const struct mc_node *nd)
{
	struct val *x = in_val(e, nd, 0), *y = out_of(e, i);
	int code = ops[op_row(nd->op->name)].code, in;

	if (int8_only(x)) {
		in = x->q;
		op(e, code, &in, 1, new_q(e, y, x->s, x->z), NULL);
	} else {
		in = as_f32(e, x);
		op(e, code, &in, 1, new_f32(e, y), NULL);
	}
	return 0;
}

/* add, sigmoid, softmax: f32 ops of their inputs in f32. */
static int map_f32(struct exp *e, int i, const struct mc_node *nd)
{
	struct val *y = out_of(e, i);
	int in[MC_NODE_MAX_INPUTS], code = ops[op_row(nd->op->name)].code;
	struct mc_tfl_opts o = {0};

	for (int k = 0; k < nd->n_inputs; k++)
		in[k] = as_f32(e, in_val(e, nd, k));
	o.beta = 1.0f;
	op(e, code, in, nd->n_inputs, new_f32(e, y), &o);
	return 0;
}

/* A scalar f32 constant shaped [1, ..., 1] of rank nd (broadcast by MAXIMUM and MINIMUM). */
static int scalar(struct exp *e, const char *name, int nd, float v)
{
	int32_t shape[4] = {1, 1, 1, 1};

	return constant(e, name, MC_TFL_FLOAT32, nd, shape, &v, sizeof(v), NULL);
}

/* clip: RELU, RELU6 or RELU_N1_TO_1 where the bounds are theirs, else MAXIMUM then MINIMUM. */
static int map_clip(struct exp *e, int i, const struct mc_node *nd)
{
	struct val *xv = in_val(e, nd, 0), *y = out_of(e, i);
	double lo = mc_node_attr_float(nd, "min", -FLT_MAX),
	       hi = mc_node_attr_float(nd, "max", FLT_MAX);
	int in[2] = {as_f32(e, xv), -1}, code = -1, t;

	if (lo == 0 && hi == 6)
		code = MC_TFL_RELU6;
	else if (lo == 0 && hi >= FLT_MAX)
		code = MC_TFL_RELU;
	else if (lo == -1 && hi == 1)
		code = MC_TFL_RELU_N1_TO_1;
	if (code >= 0) {
		op(e, code, in, 1, new_f32(e, y), NULL);
		return 0;
	}
	t = tensor(e, sfmt(e, "%s/max", nd->name), MC_TFL_FLOAT32, y->nd, y->shape, 0, NULL);
	in[1] = scalar(e, sfmt(e, "%s.min", nd->name), y->nd, (float)lo);
	op(e, MC_TFL_MAXIMUM, in, 2, t, NULL);
	in[0] = t;
	in[1] = scalar(e, sfmt(e, "%s.max", nd->name), y->nd, (float)hi);
	op(e, MC_TFL_MINIMUM, in, 2, new_f32(e, y), NULL);
	return 0;
}

/*
 * maxpool2d, avgpool2d: int8 at the input's scale when it is held in int8
 * only (the max of quantized values is the quantized max), else f32.
 * mcomp's average counts the padding as zeros: a PAD, then VALID (TFLite's
 * SAME leaves the padding out of the count); its max never takes the
 * padding: SAME, which must then place the same windows.
 */
static int map_pool(struct exp *e, int i, const struct mc_node *nd)
{
	struct val *xv = in_val(e, nd, 0), *y = out_of(e, i);
	int64_t k = mc_node_attr_int(nd, "kernel", 2), s = mc_node_attr_int(nd, "stride", 0);
	int64_t p = mc_node_attr_int(nd, "padding", 0);
	int code = ops[op_row(nd->op->name)].code, q = int8_only(xv);
	int x = q ? xv->q : as_f32(e, xv), padding;
	struct mc_tfl_opts o;

	s = s ? s : k;
	padding = padding_of(xv, k, s, p);
	if (code == MC_TFL_AVERAGE_POOL_2D && p > 0)
		padding = -1;
	if (padding < 0) {
		x = pad_hw(e, nd, xv, x, q, p, p, p, p);
		padding = MC_TFL_VALID;
	}
	conv_opts(&o, padding, s, MC_TFL_ACT_NONE);
	o.filter_w = o.filter_h = (int)k;
	op(e, code, &x, 1, q ? new_q(e, y, xv->s, xv->z) : new_f32(e, y), &o);
	return 0;
}

/* MEAN over H and W of tensor x into out (keep_dims false: [1, C], mcomp's [C]). */
static void mean_hw(struct exp *e, const struct mc_node *nd, int x, int out)
{
	int32_t axes[2] = {1, 2}, shape[1] = {2};
	int in[2] = {x, constant(e, sfmt(e, "%s/axes", nd->name), MC_TFL_INT32, 1, shape, axes,
				 sizeof(axes), NULL)};
	struct mc_tfl_opts o = {0};

	op(e, MC_TFL_MEAN, in, 2, out, &o);
}

static int map_gap(struct exp *e, int i, const struct mc_node *nd)
{
	struct val *xv = in_val(e, nd, 0), *y = out_of(e, i);

	if (int8_only(xv))
		mean_hw(e, nd, xv->q, new_q(e, y, xv->s, xv->z));
	else
		mean_hw(e, nd, as_f32(e, xv), new_f32(e, y));
	return 0;
}

/* Whether every reader of node i is a linear or qlinear (which can take its features permuted). */
static int read_by_linear_only(struct exp *e, int i)
{
	int r[64], n = mc_model_readers(e->m, i, r, 64);

	if (i == e->last || n < 1 || n > 64)
		return 0;
	for (int k = 0; k < n; k++) {
		const char *op = mc_model_node(e->m, r[k])->op->name;

		if (strcmp(op, "linear") && strcmp(op, "qlinear"))
			return 0;
	}
	return 1;
}

/*
 * flatten: a RESHAPE to [1, features]. Of an NHWC tensor, the features
 * come H, W, C: when only linear layers read them, those permute their
 * weight columns (linear_weight); else a TRANSPOSE to NCHW goes first, so
 * the order is mcomp's.
 */
static int map_flatten(struct exp *e, int i, const struct mc_node *nd)
{
	struct val *xv = in_val(e, nd, 0), *y = out_of(e, i);
	int q = int8_only(xv), x = q ? xv->q : as_f32(e, xv), in[2];
	struct mc_tfl_opts o = {0};
	struct q1 qq;

	if (xv->nd == 4 && read_by_linear_only(e, i)) {
		y->pc = xv->shape[3];
		y->ph = xv->shape[1];
		y->pw = xv->shape[2];
	} else if (xv->nd == 4) {
		int32_t perm[4] = {0, 3, 1, 2}, pshape[1] = {4};
		int32_t tshape[4] = {1, xv->shape[3], xv->shape[1], xv->shape[2]};
		int t = tensor(e, sfmt(e, "%s/nchw", nd->name), q ? MC_TFL_INT8 : MC_TFL_FLOAT32, 4,
			       tshape, 0, q ? q1(&qq, xv->s, xv->z) : NULL);

		in[0] = x;
		in[1] = constant(e, sfmt(e, "%s/perm", nd->name), MC_TFL_INT32, 1, pshape, perm,
				 sizeof(perm), NULL);
		op(e, MC_TFL_TRANSPOSE, in, 2, t, NULL);
		x = t;
	}
	o.n_shape = 2;
	o.new_shape[0] = 1;
	o.new_shape[1] = y->shape[1];
	in[0] = x;
	in[1] = constant(e, sfmt(e, "%s/shape", nd->name), MC_TFL_INT32, 1, (int32_t[]){2},
			 o.new_shape, 2 * sizeof(int32_t), NULL);
	op(e, MC_TFL_RESHAPE, in, 2, q ? new_q(e, y, xv->s, xv->z) : new_f32(e, y), &o);
	return 0;
}

static int map_pad(struct exp *e, int i, const struct mc_node *nd)
{
	struct val *xv = in_val(e, nd, 0), *y = out_of(e, i);
	int q = int8_only(xv), x = q ? xv->q : as_f32(e, xv);
	int32_t pads[8] = {0,
			   0,
			   (int32_t)mc_node_attr_int(nd, "top", 0),
			   (int32_t)mc_node_attr_int(nd, "bottom", 0),
			   (int32_t)mc_node_attr_int(nd, "left", 0),
			   (int32_t)mc_node_attr_int(nd, "right", 0),
			   0,
			   0};
	int32_t pshape[2] = {4, 2};
	int in[2] = {x, constant(e, sfmt(e, "%s/paddings", nd->name), MC_TFL_INT32, 2, pshape, pads,
				 sizeof(pads), NULL)};

	op(e, MC_TFL_PAD, in, 2, q ? new_q(e, y, xv->s, xv->z) : new_f32(e, y), NULL);
	return 0;
}

/* concat joins each sample's first dimension: channels (NHWC axis 3) or features (axis 1). */
static int map_concat(struct exp *e, int i, const struct mc_node *nd)
{
	struct val *y = out_of(e, i);
	int in[MC_NODE_MAX_INPUTS];
	struct mc_tfl_opts o = {0};

	for (int k = 0; k < nd->n_inputs; k++)
		in[k] = as_f32(e, in_val(e, nd, k));
	o.axis = y->nd == 4 ? 3 : 1;
	op(e, MC_TFL_CONCATENATION, in, nd->n_inputs, new_f32(e, y), &o);
	return 0;
}

/* dropout is the identity in inference: its value is its input's. */
static int map_dropout(struct exp *e, int i, const struct mc_node *nd)
{
	e->v[i + 1] = *in_val(e, nd, 0);
	return 0;
}

/* ---------------------------------------------------------------- int8 ops */

/* A u8 (scale, zero point) pair as mcomp stores it: v[0] > 0 finite, v[1] an integer in 0..255. */
static int u8_pair(const float *v, float *s, int *z)
{
	if (!(v[0] > 0.0f) || !isfinite(v[0]) || !(v[1] >= 0.0f && v[1] <= 255.0f) ||
	    v[1] != nearbyintf(v[1]))
		return -1;
	*s = v[0];
	*z = (int)v[1] - 128; /* TFLite's int8: the u8 values less 128, exactly */
	return 0;
}

/* Pair k of a qadd's or qglobal_avgpool's qparams, int8; -1 when unusable. */
static int qpair(const struct mc_node *nd, int k, float *s, int *z)
{
	const struct mc_tensor *qp = mc_node_param_named(nd, "qparams");

	if (!qp || qp->numel < 2 * k + 2)
		return -1;
	return u8_pair((const float *)qp->data + 2 * k, s, z);
}

/*
 * The scale and zero point (int8) at which the readers of node i's value
 * take it (i = MC_NODE_INPUT: the model input): the first static int8
 * reader's input_qparams or qparams, looking through the ops that run on
 * int8 at their input's scale (maxpool2d, flatten, dropout, relu, relu6,
 * pad2d: exactly, as they commute with quantizing; avgpool2d and
 * global_avgpool: their means rounded in int8, where mcomp quantizes the
 * f32 mean, within a quantum). 0 when found, -1 when no int8 op reads the
 * value: then it is f32.
 */
static int wanted(const struct mc_model *m, int i, float *s, int *z, int depth)
{
	int r[64], n = mc_model_readers(m, i, r, 64);

	if (depth > 64)
		return -1;
	for (int k = 0; k < n && k < 64; k++) {
		const struct mc_node *nd = mc_model_node(m, r[k]);
		const char *op = nd->op->name;

		if (!strcmp(op, "qlinear") || !strcmp(op, "qconv2d")) {
			const struct mc_tensor *qp = mc_node_param_named(nd, "input_qparams");

			if (qp && qp->numel == 2 && !u8_pair(qp->data, s, z))
				return 0;
		} else if (!strcmp(op, "qadd")) {
			if (!qpair(nd, nd->inputs[0] == i ? 0 : 1, s, z))
				return 0;
		} else if (!strcmp(op, "qglobal_avgpool")) {
			if (!qpair(nd, 0, s, z))
				return 0;
		} else if (!strcmp(op, "maxpool2d") || !strcmp(op, "flatten") ||
			   !strcmp(op, "dropout") || !strcmp(op, "relu") || !strcmp(op, "relu6") ||
			   !strcmp(op, "pad2d") || !strcmp(op, "avgpool2d") ||
			   !strcmp(op, "global_avgpool")) {
			if (!wanted(m, r[k], s, z, depth + 1))
				return 0;
		}
	}
	return -1;
}

/* Refuses weight scales the int8 kernels would refuse too: not finite and positive. */
static int check_scales(struct exp *e, const struct mc_node *nd, const struct mc_tensor *s)
{
	for (int64_t k = 0; k < s->numel; k++) {
		float v = ((const float *)s->data)[k];

		if (!(v > 0.0f) || !isfinite(v))
			return node_err(e->err, nd, MC_EINVAL,
					"weight_scale[%lld] is %g; a scale must be finite and "
					"positive (the file is damaged: quantize the model again)",
					(long long)k, v);
	}
	return 0;
}

/* The input's (scale, int8 zero point) of a static qlinear or qconv2d; an error when unusable. */
static int input_qparams(struct exp *e, const struct mc_node *nd, float *s, int *z)
{
	const struct mc_tensor *qp = mc_node_param_named(nd, "input_qparams");

	if (!qp || qp->numel != 2 || u8_pair(qp->data, s, z))
		return node_err(e->err, nd, MC_EINVAL,
				"input_qparams are not a u8 quantization (a positive scale and a "
				"zero point in 0..255); the file is damaged: quantize the model "
				"again");
	return 0;
}

/*
 * The int32 bias of an int8 layer, b / (sa sw[o]) rounded (TFLite's bias
 * scale: input scale times weight scale, zero point 0), with its
 * quantization; -1 with err set when a value does not fit int32.
 */
static int bias_q(struct exp *e, const struct mc_node *nd, const struct mc_tensor *b,
		  const struct mc_tensor *sw, float sa, int64_t O)
{
	int32_t *q = ar(e, (size_t)O * sizeof(int32_t)), shape[1] = {(int32_t)O};
	float *sc = ar(e, (size_t)O * sizeof(float));
	int64_t *zp = ar(e, (size_t)O * sizeof(int64_t));
	struct mc_tfl_quant qq = {.n = sw->numel == 1 ? 1 : (int)O, .scale = sc, .zero_point = zp};

	if (!q || !sc || !zp)
		return -1;
	for (int64_t o = 0; o < O; o++) {
		double v;

		sc[o] = sa * ((const float *)sw->data)[sw->numel == 1 ? 0 : o];
		v = b ? nearbyint((double)((const float *)b->data)[o] / (double)sc[o]) : 0.0;
		if (!(fabs(v) <= 2147483647.0)) {
			node_err(e->err, nd, MC_EINVAL,
				 "bias[%lld] is %g, %g times the input scale times the weight "
				 "scale: more than int32 holds, as TFLite's int8 layers need; "
				 "calibrate with a wider input range or keep the layer f32 "
				 "(quantize's exclude)",
				 (long long)o, b ? ((const float *)b->data)[o] : 0.0f, v);
			return -1;
		}
		q[o] = (int32_t)v;
	}
	return constant(e, b ? b->name : sfmt(e, "%s.bias", nd->name), MC_TFL_INT32, 1, shape, q,
			(size_t)O * sizeof(int32_t), &qq);
}

/* The weight scales as a TFLite quantization: per tensor, or per axis of the given dimension. */
static struct mc_tfl_quant w_quant(struct exp *e, const struct mc_tensor *sw, int axis)
{
	int64_t *zp = ar(e, (size_t)sw->numel * sizeof(int64_t));

	return (struct mc_tfl_quant){.n = (int)sw->numel,
				     .scale = sw->data,
				     .zero_point = zp,
				     .axis = sw->numel == 1 ? 0 : axis};
}

/* The f32 weights of an int8 layer, q s, as its kernels dequantize them: [O, rest]. */
static float *dequantized(struct exp *e, const struct mc_tensor *w, const struct mc_tensor *sw)
{
	int64_t O = w->shape[0], R = w->numel / O;
	float *d = ar(e, (size_t)w->numel * sizeof(float));

	if (!d)
		return NULL;
	for (int64_t o = 0; o < O; o++)
		for (int64_t r = 0; r < R; r++)
			d[o * R + r] = (float)((const int8_t *)w->data)[o * R + r] *
				       ((const float *)sw->data)[sw->numel == 1 ? 0 : o];
	return d;
}

/* The fused activation of a qconv2d or qlinear. */
static int fused_act(const struct mc_node *nd)
{
	return mc_node_attr_int(nd, "relu6", 0)	 ? MC_TFL_ACT_RELU6
	       : mc_node_attr_int(nd, "relu", 0) ? MC_TFL_ACT_RELU
						 : MC_TFL_ACT_NONE;
}

/*
 * The last int8 layer: nothing calibrated its output (the logits), so it
 * is written f32 over its input quantized at its scale and dequantized
 * (the values its kernels read), with its weights dequantized: its outputs
 * are mcomp's up to float rounding.
 */
static void f32_head(struct exp *e, int i, const struct mc_node *nd, int is_conv, float sa, int za)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *sw = mc_node_param_named(nd, "weight_scale");
	const struct mc_tensor *b = mc_node_param_named(nd, "bias");
	struct val *xv = in_val(e, nd, 0), *y = out_of(e, i);
	struct mc_tensor dq = *w;
	float *d = dequantized(e, w, sw);
	struct mc_tfl_opts o = {0};
	int x, in[3];

	note(e, MC_LOG_INFO,
	     "node '%s' (%s): its output has no calibrated range (no int8 op reads it), so the "
	     "layer is written f32 over its int8 input dequantized, with its weights "
	     "dequantized",
	     nd->name, nd->op->name);
	if (!d)
		return;
	dq.data = d;
	dq.dtype = MC_F32;
	x = as_q(e, xv, sa, za);
	{
		/* the dequantized copy of the int8 tensor the layer reads */
		int32_t *shape = xv->shape;
		int t = tensor(e, sfmt(e, "%s/input_dequantized", nd->name), MC_TFL_FLOAT32, xv->nd,
			       shape, 0, NULL);

		op(e, MC_TFL_DEQUANTIZE, &x, 1, t, NULL);
		x = t;
	}
	if (is_conv) {
		int mult = dw_mult(nd);
		int32_t ws[4] = {mult ? 1 : (int32_t)w->shape[0], (int32_t)w->shape[2],
				 (int32_t)w->shape[3],
				 mult ? (int32_t)w->shape[0] : (int32_t)w->shape[1]};
		void *wt = conv_weight(e, &dq, mult != 0, sizeof(float));
		int wi =
		    wt ? constant(e, w->name, MC_TFL_FLOAT32, 4, ws, wt, (size_t)w->numel * 4, NULL)
		       : -1;

		conv_op(e, nd, xv, x, 0, wi, bias_f32(e, nd, b, w->shape[0]), new_f32(e, y),
			fused_act(nd), mult);
		return;
	}
	{
		int32_t ws[2] = {(int32_t)w->shape[0], (int32_t)w->shape[1]};
		void *wt = linear_weight(e, &dq, xv, sizeof(float));

		in[0] = x;
		in[1] =
		    wt ? constant(e, w->name, MC_TFL_FLOAT32, 2, ws, wt, (size_t)w->numel * 4, NULL)
		       : -1;
		in[2] = bias_f32(e, nd, b, w->shape[0]);
		o.activation = fused_act(nd);
		op(e, MC_TFL_FULLY_CONNECTED, in, 3, new_f32(e, y), &o);
	}
}

/*
 * What qconv2d and qlinear begin with: their scales checked, the input's
 * quantization, and the output's; 1 when nothing calibrated the output and
 * the layer went out f32 (f32_head), 0 with *x the int8 input to read, or
 * an error code.
 */
static int q_layer_begin(struct exp *e, int i, const struct mc_node *nd, int is_conv, float *sa,
			 int *za, float *so, int *zo, int *x)
{
	int r = check_scales(e, nd, mc_node_param_named(nd, "weight_scale"));

	if (!r)
		r = input_qparams(e, nd, sa, za);
	if (r)
		return r;
	if (wanted(e->m, i, so, zo, 0)) {
		f32_head(e, i, nd, is_conv, *sa, *za);
		return 1;
	}
	*x = as_q(e, in_val(e, nd, 0), *sa, *za);
	return 0;
}

/*
 * qconv2d (static): CONV_2D or DEPTHWISE_CONV_2D on int8, its input at the
 * calibrated scale, its output at the scale its readers calibrated, relu or
 * relu6 fused.
 */
static int map_qconv(struct exp *e, int i, const struct mc_node *nd)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *sw = mc_node_param_named(nd, "weight_scale");
	const struct mc_tensor *b = mc_node_param_named(nd, "bias");
	struct val *xv = in_val(e, nd, 0), *y;
	int mult = dw_mult(nd), za, zo, x, r;
	float sa, so;

	r = q_layer_begin(e, i, nd, 1, &sa, &za, &so, &zo, &x);
	if (r)
		return r > 0 ? 0 : r;
	{
		int32_t ws[4] = {mult ? 1 : (int32_t)w->shape[0], (int32_t)w->shape[2],
				 (int32_t)w->shape[3],
				 mult ? (int32_t)w->shape[0] : (int32_t)w->shape[1]};
		void *wt = conv_weight(e, w, mult != 0, 1);
		struct mc_tfl_quant wq = w_quant(e, sw, mult ? 3 : 0);
		int wi = wt && wq.zero_point
			     ? constant(e, w->name, MC_TFL_INT8, 4, ws, wt, (size_t)w->numel, &wq)
			     : -1;
		int bi = bias_q(e, nd, b, sw, sa, w->shape[0]);
		struct val xq = *xv;

		if (bi < 0 && !e->a.nomem)
			return e->err->code;
		/* the tensor read: its scale (for a PAD's zero point) is the layer's */
		xq.s = sa;
		xq.z = za;
		y = out_of(e, i);
		conv_op(e, nd, &xq, x, 1, wi, bi, new_q(e, y, so, zo), fused_act(nd), mult);
	}
	return 0;
}

/*
 * qlinear (static): FULLY_CONNECTED on int8 with per-tensor weights; with
 * per-channel ones (per-axis quantization, which the spec gives CONV_2D) a
 * 1x1 CONV_2D over [1, 1, 1, in], between two RESHAPEs.
 */
static int map_qlinear(struct exp *e, int i, const struct mc_node *nd)
{
	const struct mc_tensor *w = mc_node_param_named(nd, "weight");
	const struct mc_tensor *sw = mc_node_param_named(nd, "weight_scale");
	const struct mc_tensor *b = mc_node_param_named(nd, "bias");
	struct val *xv = in_val(e, nd, 0), *y;
	int64_t O = w->shape[0], I = w->shape[1];
	int za, zo, x, r, per_channel = sw->numel > 1, in[3];
	struct mc_tfl_opts o = {0};
	float sa, so;

	r = q_layer_begin(e, i, nd, 0, &sa, &za, &so, &zo, &x);
	if (r)
		return r > 0 ? 0 : r;
	{
		int32_t ws[4] = {(int32_t)O, 1, 1, (int32_t)I};
		void *wt = linear_weight(e, w, xv, 1);
		struct mc_tfl_quant wq = w_quant(e, sw, 0);
		int wi = wt && wq.zero_point
			     ? constant(e, w->name, MC_TFL_INT8, per_channel ? 4 : 2,
					per_channel ? ws : (int32_t[]){ws[0], ws[3]}, wt,
					(size_t)w->numel, &wq)
			     : -1;
		int bi = bias_q(e, nd, b, sw, sa, O);
		struct q1 qq;

		if (bi < 0 && !e->a.nomem)
			return e->err->code;
		y = out_of(e, i);
		o.activation = fused_act(nd);
		in[1] = wi;
		in[2] = bi;
		if (!per_channel) {
			in[0] = x;
			op(e, MC_TFL_FULLY_CONNECTED, in, 3, new_q(e, y, so, zo), &o);
			return 0;
		}
		{
			int32_t s4[4] = {1, 1, 1, (int32_t)I}, o4[4] = {1, 1, 1, (int32_t)O};
			struct mc_tfl_opts ro = {0};
			int x4 = tensor(e, sfmt(e, "%s/input_1x1", nd->name), MC_TFL_INT8, 4, s4, 0,
					q1(&qq, sa, za));
			int y4 = tensor(e, sfmt(e, "%s/output_1x1", nd->name), MC_TFL_INT8, 4, o4,
					0, q1(&qq, so, zo));
			int rin[2];

			ro.n_shape = 4;
			memcpy(ro.new_shape, s4, sizeof(s4));
			rin[0] = x;
			rin[1] = constant(e, sfmt(e, "%s/shape_1x1", nd->name), MC_TFL_INT32, 1,
					  (int32_t[]){4}, s4, sizeof(s4), NULL);
			op(e, MC_TFL_RESHAPE, rin, 2, x4, &ro);
			conv_opts(&o, MC_TFL_VALID, 1, fused_act(nd));
			in[0] = x4;
			op(e, MC_TFL_CONV_2D, in, 3, y4, &o);
			ro.n_shape = 2;
			ro.new_shape[0] = 1;
			ro.new_shape[1] = (int32_t)O;
			rin[0] = y4;
			rin[1] = constant(e, sfmt(e, "%s/shape", nd->name), MC_TFL_INT32, 1,
					  (int32_t[]){2}, ro.new_shape, 2 * sizeof(int32_t), NULL);
			op(e, MC_TFL_RESHAPE, rin, 2, new_q(e, y, so, zo), &ro);
		}
	}
	return 0;
}

/* qadd: ADD of the two inputs at their calibrated scales, into the output's. */
static int map_qadd(struct exp *e, int i, const struct mc_node *nd)
{
	float sa, sb, so;
	int za, zb, zo, in[2];
	struct mc_tfl_opts o = {0};

	if (qpair(nd, 0, &sa, &za) || qpair(nd, 1, &sb, &zb) || qpair(nd, 2, &so, &zo))
		return node_err(e->err, nd, MC_EINVAL,
				"qparams are not u8 quantizations; the file is damaged: quantize "
				"the model again");
	in[0] = as_q(e, in_val(e, nd, 0), sa, za);
	in[1] = as_q(e, in_val(e, nd, 1), sb, zb);
	op(e, MC_TFL_ADD, in, 2, new_q(e, out_of(e, i), so, zo), &o);
	return 0;
}

/* qglobal_avgpool: MEAN over H and W of the input at its calibrated scale, into the output's. */
static int map_qgap(struct exp *e, int i, const struct mc_node *nd)
{
	float si, so;
	int zi, zo;

	if (qpair(nd, 0, &si, &zi) || qpair(nd, 1, &so, &zo))
		return node_err(e->err, nd, MC_EINVAL,
				"qparams are not u8 quantizations; the file is damaged: quantize "
				"the model again");
	mean_hw(e, nd, as_q(e, in_val(e, nd, 0), si, zi), new_q(e, out_of(e, i), so, zo));
	return 0;
}

/* ---------------------------------------------------------------- checks */

/* What TFLite cannot hold of node nd, in the error's words; 0 when it can. */
static int check_node(const struct mc_model *m, const struct mc_node *nd, const char *list,
		      struct mc_err *err)
{
	const char *op = nd->op->name, *prov = mc_op_provider(op);
	int is_q = !strcmp(op, "qlinear") || !strcmp(op, "qconv2d");

	if (prov)
		return node_err(err, nd, MC_EINVAL,
				"op '%s' is provided by pass '%s' and has no TFLite form; TFLite "
				"export writes %s",
				op, prov, list);
	if (!strcmp(op, "batchnorm"))
		return node_err(err, nd, MC_EINVAL,
				"TFLite export folds each batch norm into the conv2d or linear "
				"before it, and this one follows none (or one read by other "
				"nodes too); export to ONNX instead, which has "
				"BatchNormalization");
	if (op_row(op) < 0)
		return node_err(err, nd, MC_EINVAL,
				"TFLite export has no mapping for op '%s'; it writes %s (ONNX "
				"export writes more: mcomp export -o FILE.onnx)",
				op, list);
	if (nd->out_ndim != 1 && nd->out_ndim != 3)
		return node_err(err, nd, MC_EINVAL,
				"its output has %d dimensions a sample; TFLite export takes [C, "
				"H, W] (NHWC in the file) or [features]",
				nd->out_ndim);
	if (is_q && strcmp(mc_node_attr_str(nd, "mode", "dynamic"), "static"))
		return node_err(err, nd, MC_EINVAL,
				"mode '%s': TFLite's int8 layers take activations at calibrated "
				"scales; quantize with mode: static (or export to ONNX, which "
				"has dynamic and weight-only forms)",
				mc_node_attr_str(nd, "mode", "dynamic"));
	if (!strcmp(op, "conv2d") || !strcmp(op, "qconv2d")) {
		int64_t g = mc_node_attr_int(nd, "groups", 1);
		const struct mc_tensor *w = mc_node_param_named(nd, "weight");

		if (g > 1 && w->shape[1] != 1)
			return node_err(err, nd, MC_EINVAL,
					"groups %lld of %lld channels each: TFLite has CONV_2D "
					"(groups 1) and DEPTHWISE_CONV_2D (one channel a group), "
					"not grouped convolutions; use groups 1 or the input "
					"channels",
					(long long)g, (long long)w->shape[1]);
	}
	if (!strcmp(op, "maxpool2d") && mc_node_attr_int(nd, "padding", 0) > 0) {
		int64_t k = mc_node_attr_int(nd, "kernel", 2),
			s = mc_node_attr_int(nd, "stride", 0);
		int64_t p = mc_node_attr_int(nd, "padding", 0), in[MC_MAX_DIMS];
		const struct mc_node *src =
		    nd->inputs[0] == MC_NODE_INPUT ? NULL : mc_model_node(m, nd->inputs[0]);

		if (src)
			memcpy(in, src->out_shape, sizeof(in));
		else
			mc_model_input_shape(m, in);
		s = s ? s : k;
		if (!same_fits(in[1], k, s, p) || !same_fits(in[2], k, s, p))
			return node_err(
			    err, nd, MC_EINVAL,
			    "padding %lld with kernel %lld, stride %lld: TFLite's "
			    "MAX_POOL_2D pads only as SAME does, which here places other "
			    "windows; use padding 0, or kernel 2 padding + 1 with "
			    "stride 1",
			    (long long)p, (long long)k, (long long)s);
	}
	return 0;
}

/* Every node of m (batch norms folded) exportable, before anything is built. */
static int check_all(const struct mc_model *m, struct mc_err *err)
{
	char list[512] = "";
	int64_t shape[MC_MAX_DIMS];
	int nd = mc_model_input_shape(m, shape);

	for (int k = 0; k < N_OPS; k++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", k ? ", " : "",
			 ops[k].op);
	if (nd != 1 && nd != 3)
		return mc_err_set(err, MC_EINVAL,
				  "the model input has %d dimensions a sample; TFLite export takes "
				  "[C, H, W] or [features]",
				  nd);
	if (mc_model_n_nodes(m) < 1)
		return mc_err_set(err, MC_EINVAL,
				  "the model has no nodes; TFLite needs a graph that computes its "
				  "output");
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		int r = check_node(m, mc_model_node(m, i), list, err);

		if (r)
			return r;
	}
	return 0;
}

/* A copy of m with its batch norms folded (of shapes only when m is). */
static struct mc_model *folded(const struct mc_model *m, struct mc_err *err)
{
	struct mc_model *c = mc_model_is_arch(m) ? mc_model_dup_arch(m, err) : mc_model_dup(m, err);

	if (c && mc_model_fold_batchnorm(c, err) < 0) {
		mc_model_free(c);
		return NULL;
	}
	return c;
}

MC_API int mc_model_tflite_check(const struct mc_model *m, struct mc_err *err)
{
	struct mc_model *c = folded(m, err);
	int r;

	if (!c)
		return err->code ? err->code : MC_ENOMEM;
	r = check_all(c, err);
	mc_model_free(c);
	return r;
}

/* ---------------------------------------------------------------- the model */

static const char *description(struct exp *e)
{
	size_t n = strlen("mcomp " MC_VERSION) + 1;
	char *d;

	for (size_t k = 0; e->meta && e->meta->props && e->meta->props[k]; k += 2)
		if (e->meta->props[k + 1])
			n += strlen(e->meta->props[k]) + strlen(e->meta->props[k + 1]) + 2;
	d = ar(e, n);
	if (!d)
		return "";
	strcpy(d, "mcomp " MC_VERSION);
	for (size_t k = 0; e->meta && e->meta->props && e->meta->props[k]; k += 2)
		if (e->meta->props[k + 1])
			sprintf(d + strlen(d), "\n%s=%s", e->meta->props[k], e->meta->props[k + 1]);
	return d;
}

static int build(struct exp *e, void **buf, size_t *len)
{
	int64_t shape[MC_MAX_DIMS];
	int nd = mc_model_input_shape(e->m, shape), r, out;
	struct val *in;

	e->last = mc_model_n_nodes(e->m) - 1;
	e->v = ar(e, (size_t)(e->last + 2) * sizeof(*e->v));
	if (!e->v)
		return MC_ENOMEM;
	for (int k = 0; k <= e->last + 1; k++) {
		e->v[k].f32 = e->v[k].q = e->v[k].rq = -1;
		e->v[k].name = "input";
	}
	in = &e->v[0];
	in->nd = nd == 3 ? 4 : 2;
	in->shape[0] = 1;
	if (nd == 3) {
		in->shape[1] = (int32_t)shape[1];
		in->shape[2] = (int32_t)shape[2];
		in->shape[3] = (int32_t)shape[0];
	} else {
		in->shape[1] = (int32_t)shape[0];
	}
	new_f32(e, in);
	for (int i = 0; i <= e->last; i++) {
		const struct mc_node *n = mc_model_node(e->m, i);

		r = ops[op_row(n->op->name)].map(e, i, n);
		if (r)
			return r;
	}
	out = as_f32(e, val_of(e, e->last));
	if (e->a.nomem || out < 0)
		return MC_ENOMEM;
	if (mc_tfl_finish(e->b, in->f32, out, description(e), buf, len))
		return MC_ENOMEM;
	return 0;
}

MC_API int mc_model_serialize_tflite(const struct mc_model *m, const struct mc_onnx_meta *meta,
				     void **buf, size_t *len, struct mc_err *err)
{
	struct exp e = {.meta = meta, .err = err};
	struct mc_model *c;
	int r;

	*buf = NULL;
	*len = 0;
	if (mc_model_is_arch(m))
		return mc_err_set(err, MC_EINVAL,
				  "the model has shapes but no weights; export a trained model");
	c = folded(m, err);
	if (!c)
		return err->code ? err->code : MC_ENOMEM;
	e.m = c;
	r = check_all(c, err);
	if (!r) {
		e.b = mc_tfl_new();
		r = e.b ? build(&e, buf, len) : MC_ENOMEM;
	}
	if (r == MC_ENOMEM)
		r = mc_err_set(err, MC_ENOMEM, "out of memory building the TFLite model");
	if (r) {
		free(*buf);
		*buf = NULL;
		*len = 0;
	}
	mc_tfl_free(e.b);
	mc_xarena_free(&e.a);
	mc_model_free(c);
	return r;
}

MC_API int mc_model_save_tflite(const struct mc_model *m, const char *path,
				const struct mc_onnx_meta *meta, struct mc_err *err)
{
	size_t len;
	void *buf;
	int r;

	r = mc_model_serialize_tflite(m, meta, &buf, &len, err);
	if (r)
		return mc_err_prefix(err, "%s", path);
	r = mc_write_file_atomic(path, buf, len, err);
	free(buf);
	return r;
}
