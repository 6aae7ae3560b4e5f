// SPDX-License-Identifier: MIT
/*
 * check_onnx.c - ONNX import: each op mapping against a reference computed
 * here by direct loops (in double), weights from raw_data, float_data and
 * Constant nodes, a Pad folded into the op after it, and hostile files: truncated, fuzzed, dangling
 * names, cycles, size mismatches, external data, absurd dims, unsupported ops and attributes (the
 * message names the node, its op type and opset).
 *
 * The ONNX files are built in the test from the protobuf-c structs that
 * the build generates from onnx.proto, so no binary fixture is needed.
 */
#define _GNU_SOURCE
#include <check.h>
#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/model.h>
#include <mcomp/onnx.h>
#include <mcomp/safetensors.h>

#include "core/io/onnx.pb-c.h"

#include "scratch_dir.h"

/* ---------------------------------------------------------------- building ONNX in memory */

/* Everything a test allocates, freed by teardown. */
static void *kept[8192];
static int n_kept;

static void *mem(size_t n)
{
	void *p = calloc(1, n ? n : 1);

	ck_assert_ptr_nonnull(p);
	ck_assert_int_lt(n_kept, 8192);
	kept[n_kept++] = p;
	return p;
}

static char *sdup(const char *s)
{
	return strcpy(mem(strlen(s) + 1), s);
}

struct ob {
	Onnx__ModelProto m;
	Onnx__GraphProto g;
	Onnx__OperatorSetIdProto opset;
	Onnx__OperatorSetIdProto *opsets[1];
	Onnx__NodeProto *nodes[64];
	Onnx__TensorProto *inits[64];
	Onnx__ValueInfoProto *ins[4], *outs[4];
};

static Onnx__ValueInfoProto *value_info(const char *name, int ndim, const int64_t *dims)
{
	Onnx__ValueInfoProto *v = mem(sizeof(*v));
	Onnx__TypeProto *tp = mem(sizeof(*tp));
	Onnx__TypeProto__Tensor *tt = mem(sizeof(*tt));
	Onnx__TensorShapeProto *sh = mem(sizeof(*sh));

	onnx__value_info_proto__init(v);
	onnx__type_proto__init(tp);
	onnx__type_proto__tensor__init(tt);
	onnx__tensor_shape_proto__init(sh);
	v->name = sdup(name);
	v->type = tp;
	tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
	tp->tensor_type = tt;
	tt->has_elem_type = 1;
	tt->elem_type = 1; /* float */
	tt->shape = sh;
	sh->n_dim = (size_t)ndim;
	sh->dim = mem((size_t)ndim * sizeof(*sh->dim));
	for (int d = 0; d < ndim; d++) {
		Onnx__TensorShapeProto__Dimension *dim = mem(sizeof(*dim));

		onnx__tensor_shape_proto__dimension__init(dim);
		if (dims[d] < 0) { /* symbolic */
			dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
			dim->dim_param = sdup("batch");
		} else {
			dim->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
			dim->dim_value = dims[d];
		}
		sh->dim[d] = dim;
	}
	return v;
}

/* A model of opset whose input "x" has shape dims (-1: the symbolic batch)
 * and whose output is "y". */
static struct ob *ob_new(int opset, int ndim, const int64_t *dims)
{
	struct ob *b = mem(sizeof(*b));

	onnx__model_proto__init(&b->m);
	onnx__graph_proto__init(&b->g);
	onnx__operator_set_id_proto__init(&b->opset);
	b->m.has_ir_version = 1;
	b->m.ir_version = 8;
	b->m.producer_name = sdup("check_onnx");
	b->opset.domain = sdup("");
	b->opset.has_version = 1;
	b->opset.version = opset;
	b->opsets[0] = &b->opset;
	b->m.n_opset_import = 1;
	b->m.opset_import = b->opsets;
	b->m.graph = &b->g;
	b->g.name = sdup("test");
	b->ins[0] = value_info("x", ndim, dims);
	b->g.input = b->ins;
	b->g.n_input = 1;
	b->outs[0] = value_info("y", 1, (int64_t[]){-1});
	b->g.output = b->outs;
	b->g.n_output = 1;
	b->g.node = b->nodes;
	b->g.initializer = b->inits;
	return b;
}

/* Splits "a,b,,c" into names ("" for an optional input left out). */
static size_t names(const char *list, char ***out)
{
	size_t n = 0, k = 0;
	char *s, *tok;

	if (!list) {
		*out = NULL;
		return 0;
	}
	for (const char *p = list; *p; p++)
		n += *p == ',';
	n++;
	*out = mem(n * sizeof(char *));
	s = sdup(list);
	/* strsep keeps empty fields */
	while ((tok = strsep(&s, ",")) != NULL)
		(*out)[k++] = tok;
	return k;
}

static Onnx__NodeProto *node(struct ob *b, const char *op, const char *name, const char *ins,
			     const char *outs)
{
	Onnx__NodeProto *n = mem(sizeof(*n));

	onnx__node_proto__init(n);
	n->op_type = sdup(op);
	n->name = name ? sdup(name) : NULL;
	n->n_input = names(ins, &n->input);
	n->n_output = names(outs, &n->output);
	n->attribute = mem(16 * sizeof(*n->attribute));
	ck_assert_int_lt(b->g.n_node, 64);
	b->nodes[b->g.n_node++] = n;
	return n;
}

static Onnx__AttributeProto *attr(Onnx__NodeProto *n, const char *name, int type)
{
	Onnx__AttributeProto *a = mem(sizeof(*a));

	onnx__attribute_proto__init(a);
	a->name = sdup(name);
	a->has_type = 1;
	a->type = type;
	ck_assert_int_lt(n->n_attribute, 16);
	n->attribute[n->n_attribute++] = a;
	return a;
}

static void attr_i(Onnx__NodeProto *n, const char *name, int64_t v)
{
	Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);

	a->has_i = 1;
	a->i = v;
}

static void attr_f(Onnx__NodeProto *n, const char *name, float v)
{
	Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);

	a->has_f = 1;
	a->f = v;
}

static void attr_s(Onnx__NodeProto *n, const char *name, const char *v)
{
	Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);

	a->has_s = 1;
	a->s.data = (uint8_t *)sdup(v);
	a->s.len = strlen(v);
}

static void attr_ints(Onnx__NodeProto *n, const char *name, int cnt, const int64_t *v)
{
	Onnx__AttributeProto *a = attr(n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);

	a->n_ints = (size_t)cnt;
	a->ints = mem((size_t)cnt * sizeof(int64_t));
	memcpy(a->ints, v, (size_t)cnt * sizeof(int64_t));
}

#define INTS(...)                                                                                  \
	(int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[])                     \
	{                                                                                          \
		__VA_ARGS__                                                                        \
	}

/* A float tensor of dims holding data: as raw_data (little-endian bytes) or float_data. */
static Onnx__TensorProto *tensor(const char *name, int ndim, const int64_t *dims, const float *data,
				 int raw)
{
	Onnx__TensorProto *t = mem(sizeof(*t));
	int64_t numel = 1;

	onnx__tensor_proto__init(t);
	t->name = name ? sdup(name) : NULL;
	t->has_data_type = 1;
	t->data_type = 1;
	t->n_dims = (size_t)ndim;
	t->dims = mem((size_t)ndim * sizeof(int64_t));
	for (int d = 0; d < ndim; d++) {
		t->dims[d] = dims[d];
		numel *= dims[d];
	}
	if (raw) {
		t->has_raw_data = 1;
		t->raw_data.len = (size_t)numel * 4;
		t->raw_data.data = mem(t->raw_data.len);
		memcpy(t->raw_data.data, data, t->raw_data.len); /* x86: little-endian */
	} else {
		t->n_float_data = (size_t)numel;
		t->float_data = mem((size_t)numel * sizeof(float));
		memcpy(t->float_data, data, (size_t)numel * sizeof(float));
	}
	return t;
}

static Onnx__TensorProto *init_f(struct ob *b, const char *name, int ndim, const int64_t *dims,
				 const float *data, int raw)
{
	Onnx__TensorProto *t = tensor(name, ndim, dims, data, raw);

	ck_assert_int_lt(b->g.n_initializer, 64);
	b->inits[b->g.n_initializer++] = t;
	return t;
}

static Onnx__TensorProto *init_i64(struct ob *b, const char *name, int n, const int64_t *v)
{
	Onnx__TensorProto *t = mem(sizeof(*t));

	onnx__tensor_proto__init(t);
	t->name = sdup(name);
	t->has_data_type = 1;
	t->data_type = 7;
	t->n_dims = 1;
	t->dims = mem(sizeof(int64_t));
	t->dims[0] = n;
	t->n_int64_data = (size_t)n;
	t->int64_data = mem((size_t)n * sizeof(int64_t));
	memcpy(t->int64_data, v, (size_t)n * sizeof(int64_t));
	b->inits[b->g.n_initializer++] = t;
	return t;
}

static void *pack(struct ob *b, size_t *len)
{
	void *buf;

	*len = onnx__model_proto__get_packed_size(&b->m);
	buf = mem(*len);
	ck_assert_uint_eq(onnx__model_proto__pack(&b->m, buf), *len);
	return buf;
}

static struct mc_model *import(struct ob *b, struct mc_err *err)
{
	size_t len;
	void *buf = pack(b, &len);

	memset(err, 0, sizeof(*err));
	return mc_model_from_onnx_buf(buf, len, "t.onnx", err);
}

static struct mc_model *import_ok(struct ob *b)
{
	struct mc_err err;
	struct mc_model *m = import(b, &err);

	ck_assert_msg(m != NULL, "%s", err.msg);
	return m;
}

/* The import fails with code and a message holding each of the NULL-ended strings. */
static void import_fails(struct ob *b, int code, ...)
{
	struct mc_err err;
	struct mc_model *m = import(b, &err);
	va_list ap;

	ck_assert_msg(m == NULL, "the import should have failed");
	ck_assert_msg(err.code == code, "code %d, wanted %d: %s", err.code, code, err.msg);
	va_start(ap, code);
	for (const char *s; (s = va_arg(ap, const char *));)
		ck_assert_msg(strstr(err.msg, s), "no '%s' in: %s", s, err.msg);
	va_end(ap);
}

/* ---------------------------------------------------------------- references */

static float *rnd(size_t n, uint64_t stream)
{
	float *x = mem(n * sizeof(float));

	for (size_t i = 0; i < n; i++)
		x[i] = 2.0f * mc_rand_uniform(5, stream, i) - 1.0f;
	return x;
}

/* out[n, classes] of m on x[n, in_numel] */
static float *run(const struct mc_model *m, const float *x, int n)
{
	struct mc_err err = {0};
	struct mc_exec *e = mc_exec_new(m, n, 0, &err);
	int64_t c = mc_model_n_classes(m);
	float *out = mem((size_t)(n * c) * sizeof(float));

	ck_assert_msg(e != NULL, "%s", err.msg);
	memcpy(out, mc_forward(e, x, n), (size_t)(n * c) * sizeof(float));
	mc_exec_free(e);
	return out;
}

static void assert_close(const float *got, const double *want, int64_t n, double tol)
{
	for (int64_t i = 0; i < n; i++)
		ck_assert_msg(fabs(got[i] - want[i]) <= tol * (1 + fabs(want[i])),
			      "value %lld: got %.7g, wanted %.7g", (long long)i, got[i], want[i]);
}

/* y[O, OH, OW] = conv(x[C, H, W], w[O, C/g, k, k]) + b, zero padding p */
static void ref_conv(const double *x, int C, int H, int W, const float *w, const float *bias, int O,
		     int k, int s, int p, int g, double *y, int *OH, int *OW)
{
	int oh_n = (H + 2 * p - k) / s + 1, ow_n = (W + 2 * p - k) / s + 1, Cg = C / g, Og = O / g;

	for (int o = 0; o < O; o++)
		for (int oh = 0; oh < oh_n; oh++)
			for (int ow = 0; ow < ow_n; ow++) {
				double acc = bias ? bias[o] : 0;

				for (int c = 0; c < Cg; c++)
					for (int i = 0; i < k; i++)
						for (int j = 0; j < k; j++) {
							int h = oh * s - p + i, ww = ow * s - p + j;

							if (h < 0 || h >= H || ww < 0 || ww >= W)
								continue;
							acc +=
							    w[((o * Cg + c) * k + i) * k + j] *
							    x[((o / Og * Cg + c) * H + h) * W + ww];
						}
				y[(o * oh_n + oh) * ow_n + ow] = acc;
			}
	*OH = oh_n;
	*OW = ow_n;
}

/* max or mean (padding counted as zeros) over k x k windows */
static void ref_pool(const double *x, int C, int H, int W, int k, int s, int p, int avg, double *y,
		     int *OH, int *OW)
{
	int oh_n = (H + 2 * p - k) / s + 1, ow_n = (W + 2 * p - k) / s + 1;

	for (int c = 0; c < C; c++)
		for (int oh = 0; oh < oh_n; oh++)
			for (int ow = 0; ow < ow_n; ow++) {
				double acc = avg ? 0 : -INFINITY;

				for (int i = 0; i < k; i++)
					for (int j = 0; j < k; j++) {
						int h = oh * s - p + i, w = ow * s - p + j;
						double v;

						if (h < 0 || h >= H || w < 0 || w >= W)
							continue;
						v = x[(c * H + h) * W + w];
						acc = avg ? acc + v : fmax(acc, v);
					}
				y[(c * oh_n + oh) * ow_n + ow] = avg ? acc / (k * k) : acc;
			}
	*OH = oh_n;
	*OW = ow_n;
}

/* y[out] = W x + b, W [out, in] (trans 0) or [in, out] (trans 1) */
static void ref_linear(const double *x, int in, const float *w, int trans, const float *b, int out,
		       double *y)
{
	for (int o = 0; o < out; o++) {
		double acc = b ? b[o] : 0;

		for (int k = 0; k < in; k++)
			acc += (trans ? w[k * out + o] : w[o * in + k]) * x[k];
		y[o] = acc;
	}
}

static double *to_double(const float *x, size_t n)
{
	double *d = mem(n * sizeof(double));

	for (size_t i = 0; i < n; i++)
		d[i] = x[i];
	return d;
}

static void relu(double *x, size_t n)
{
	for (size_t i = 0; i < n; i++)
		x[i] = x[i] > 0 ? x[i] : 0;
}

static const struct mc_node *only_node(const struct mc_model *m, const char *op)
{
	ck_assert_int_eq(mc_model_n_nodes(m), 1);
	ck_assert_str_eq(mc_model_node(m, 0)->op->name, op);
	return mc_model_node(m, 0);
}

/* The first node of op op, of a model of nodes ops in order. */
static const struct mc_node *first_node(const struct mc_model *m, const char *const *ops)
{
	int n = 0;

	for (; ops[n]; n++)
		ck_assert_str_eq(mc_model_node(m, n)->op->name, ops[n]);
	ck_assert_int_eq(mc_model_n_nodes(m), n);
	return mc_model_node(m, 0);
}

static void setup(void)
{
	scratch_make("onnx");
}

static void teardown(void)
{
	scratch_remove();
	while (n_kept)
		free(kept[--n_kept]);
}

/* ---------------------------------------------------------------- linear */

/* Gemm transB=1 with C: the weight as it is, the bias from float_data. */
START_TEST(gemm_trans_b)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 6});
	const float *w = rnd(24, 1), *c = rnd(4, 2), *x = rnd(18, 3);
	struct mc_model *m;
	const float *y;
	double want[12];

	init_f(b, "fc.weight", 2, (int64_t[]){4, 6}, w, 1);
	init_f(b, "fc.bias", 1, (int64_t[]){4}, c, 0);
	attr_i(node(b, "Gemm", "/fc/Gemm", "x,fc.weight,fc.bias", "y"), "transB", 1);
	m = import_ok(b);
	ck_assert_str_eq(only_node(m, "linear")->name, "fc");
	ck_assert_int_eq(mc_node_attr_int(mc_model_node(m, 0), "bias", 0), 1);
	y = run(m, x, 3);
	for (int s = 0; s < 3; s++)
		ref_linear(to_double(x + 6 * s, 6), 6, w, 0, c, 4, want + 4 * s);
	assert_close(y, want, 12, 1e-6);
	mc_model_free(m);
}
END_TEST

/* Weights through Identity (PyTorch writes one for an initializer it shares). */
START_TEST(identity_of_weight)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 6});
	const float *w = rnd(24, 1), *c = rnd(4, 2), *x = rnd(18, 3);
	struct mc_model *m;
	double want[12];

	init_f(b, "w0", 2, (int64_t[]){4, 6}, w, 1);
	init_f(b, "c0", 1, (int64_t[]){4}, c, 0);
	node(b, "Identity", "Identity_0", "w0", "fc.weight");
	node(b, "Identity", "Identity_1", "c0", "fc.bias");
	attr_i(node(b, "Gemm", "/fc/Gemm", "x,fc.weight,fc.bias", "y"), "transB", 1);
	m = import_ok(b);
	ck_assert_str_eq(only_node(m, "linear")->name, "fc");
	for (int s = 0; s < 3; s++)
		ref_linear(to_double(x + 6 * s, 6), 6, w, 0, c, 4, want + 4 * s);
	assert_close(run(m, x, 3), want, 12, 1e-6);
	mc_model_free(m);
}
END_TEST

/* Opsets 9 to 21 are read (19 to 21 change nothing mcomp reads); 22 is refused. */
START_TEST(opset_range)
{
	const float *w = rnd(24, 1), *x = rnd(6, 3);
	double want[4];

	for (int opset = 19; opset <= 22; opset++) {
		struct ob *b = ob_new(opset, 2, (int64_t[]){-1, 6});
		struct mc_model *m;

		init_f(b, "fc.weight", 2, (int64_t[]){4, 6}, w, 1);
		attr_i(node(b, "Gemm", "/fc/Gemm", "x,fc.weight", "g"), "transB", 1);
		node(b, "Relu", "/relu/Relu", "g", "y");
		if (opset == 22) {
			import_fails(b, MC_EINVAL, "opset 22", "opsets 9 to 21", NULL);
			continue;
		}
		m = import_ok(b);
		ref_linear(to_double(x, 6), 6, w, 0, NULL, 4, want);
		for (int k = 0; k < 4; k++)
			want[k] = want[k] > 0 ? want[k] : 0;
		assert_close(run(m, x, 1), want, 4, 1e-6);
		mc_model_free(m);
	}
}
END_TEST

/* Gemm transB=0 and no C (opset 11): B [K, N] transposed into [out, in], no bias. */
START_TEST(gemm_no_bias)
{
	struct ob *b = ob_new(11, 2, (int64_t[]){2, 6});
	const float *w = rnd(24, 4), *x = rnd(12, 5);
	const struct mc_node *nd;
	struct mc_model *m;
	const float *wt;
	double want[8];

	init_f(b, "B", 2, (int64_t[]){6, 4}, w, 0);
	node(b, "Gemm", "", "x,B", "y");
	m = import_ok(b);
	nd = only_node(m, "linear");
	ck_assert_str_eq(nd->name, "linear1");
	ck_assert_ptr_null(mc_node_param_named(nd, "bias"));
	wt = mc_node_param_named(nd, "weight")->data;
	for (int o = 0; o < 4; o++)
		for (int k = 0; k < 6; k++)
			ck_assert_float_eq(wt[o * 6 + k], w[k * 4 + o]);
	for (int s = 0; s < 2; s++)
		ref_linear(to_double(x + 6 * s, 6), 6, w, 1, NULL, 4, want + 4 * s);
	assert_close(run(m, x, 2), want, 8, 1e-6);
	mc_model_free(m);
}
END_TEST

/* MatMul + Add of a constant (a Constant node placed after them): one linear with a bias. */
START_TEST(matmul_add)
{
	struct ob *b = ob_new(17, 2, (int64_t[]){-1, 6});
	const float *w = rnd(24, 6), *c = rnd(4, 7), *x = rnd(12, 8);
	Onnx__AttributeProto *a;
	struct mc_model *m;
	double want[8];

	init_f(b, "W", 2, (int64_t[]){6, 4}, w, 1);
	node(b, "MatMul", "/proj/MatMul", "x,W", "t");
	node(b, "Add", "/proj/Add", "t,c", "y");
	a = attr(node(b, "Constant", "/proj/Constant", NULL, "c"), "value",
		 ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
	a->t = tensor(NULL, 1, (int64_t[]){4}, c, 1);
	m = import_ok(b);
	ck_assert_str_eq(only_node(m, "linear")->name, "proj");
	ck_assert_int_eq(mc_node_attr_int(mc_model_node(m, 0), "bias", 0), 1);
	for (int s = 0; s < 2; s++)
		ref_linear(to_double(x + 6 * s, 6), 6, w, 1, c, 4, want + 4 * s);
	assert_close(run(m, x, 2), want, 8, 1e-6);
	mc_model_free(m);
}
END_TEST

/* MatMul read by more than the Add keeps its own output: the Add of a constant is refused. */
START_TEST(matmul_add_shared)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 4});

	init_f(b, "W", 2, (int64_t[]){4, 4}, rnd(16, 1), 1);
	init_f(b, "c", 1, (int64_t[]){4}, rnd(4, 2), 1);
	node(b, "MatMul", "mm", "x,W", "t");
	node(b, "Add", "bias", "t,c", "u");
	node(b, "Add", "res", "u,t", "y");
	import_fails(b, MC_EINVAL, "node 'bias' (Add, opset 13)", "constant 'c'", NULL);
}
END_TEST

/* ---------------------------------------------------------------- convolution */

/* Conv (stride 2, pads 1, bias) then Relu, against the direct loop. */
START_TEST(conv_relu)
{
	struct ob *b = ob_new(13, 4, (int64_t[]){-1, 3, 7, 7});
	const float *w = rnd(108, 9), *bias = rnd(4, 10), *x = rnd(2 * 147, 11);
	Onnx__NodeProto *n;
	struct mc_model *m;
	double want[2 * 64];
	int oh, ow;

	init_f(b, "w", 4, (int64_t[]){4, 3, 3, 3}, w, 1);
	init_f(b, "b", 1, (int64_t[]){4}, bias, 0);
	n = node(b, "Conv", "/conv1/Conv", "x,w,b", "c");
	attr_ints(n, "kernel_shape", INTS(3, 3));
	attr_ints(n, "pads", INTS(1, 1, 1, 1));
	attr_ints(n, "strides", INTS(2, 2));
	attr_ints(n, "dilations", INTS(1, 1));
	attr_i(n, "group", 1);
	node(b, "Relu", "/relu/Relu", "c", "y");
	m = import_ok(b);
	ck_assert_int_eq(mc_model_n_nodes(m), 2);
	ck_assert_str_eq(mc_model_node(m, 0)->name, "conv1");
	ck_assert_int_eq(mc_node_attr_int(mc_model_node(m, 0), "stride", 0), 2);
	ck_assert_int_eq(mc_node_attr_int(mc_model_node(m, 0), "padding", 0), 1);
	for (int s = 0; s < 2; s++) {
		ref_conv(to_double(x + 147 * s, 147), 3, 7, 7, w, bias, 4, 3, 2, 1, 1,
			 want + 64 * s, &oh, &ow);
		relu(want + 64 * s, 64);
	}
	ck_assert_int_eq(oh * ow * 4, 64);
	assert_close(run(m, x, 2), want, 128, 1e-5);
	mc_model_free(m);
}
END_TEST

/* Depthwise (group = channels, 2 outputs each), no bias, auto_pad SAME_UPPER. */
START_TEST(conv_depthwise)
{
	struct ob *b = ob_new(13, 4, (int64_t[]){1, 3, 6, 6});
	const float *w = rnd(54, 12), *x = rnd(108, 13);
	Onnx__NodeProto *n;
	struct mc_model *m;
	double want[216];
	int oh, ow;

	init_f(b, "w", 4, (int64_t[]){6, 1, 3, 3}, w, 1);
	n = node(b, "Conv", "dw", "x,w", "y");
	attr_i(n, "group", 3);
	attr_s(n, "auto_pad", "SAME_UPPER");
	m = import_ok(b);
	ck_assert_int_eq(mc_node_attr_int(only_node(m, "conv2d"), "groups", 0), 3);
	ck_assert_ptr_null(mc_node_param_named(mc_model_node(m, 0), "bias"));
	ref_conv(to_double(x, 108), 3, 6, 6, w, NULL, 6, 3, 1, 1, 3, want, &oh, &ow);
	ck_assert_int_eq(oh, 6);
	assert_close(run(m, x, 1), want, 216, 1e-5);
	mc_model_free(m);
}
END_TEST

/* BatchNormalization (inference): running statistics kept as they are. */
START_TEST(batchnorm)
{
	struct ob *b = ob_new(15, 4, (int64_t[]){-1, 2, 3, 3});
	const float scale[2] = {1.5f, -0.5f}, shift[2] = {0.25f, 1}, mean[2] = {0.1f, -0.2f};
	const float var[2] = {0.5f, 2}, *x = rnd(36, 14);
	Onnx__NodeProto *n;
	struct mc_model *m;
	double want[36];

	init_f(b, "s", 1, (int64_t[]){2}, scale, 1);
	init_f(b, "b", 1, (int64_t[]){2}, shift, 1);
	init_f(b, "m", 1, (int64_t[]){2}, mean, 0);
	init_f(b, "v", 1, (int64_t[]){2}, var, 0);
	n = node(b, "BatchNormalization", "bn", "x,s,b,m,v", "y");
	attr_f(n, "epsilon", 1e-3f);
	attr_f(n, "momentum", 0.8f);
	m = import_ok(b);
	only_node(m, "batchnorm");
	ck_assert_float_eq(((float *)mc_model_param(m, "bn.running_var")->data)[1], 2);
	ck_assert_double_eq_tol(mc_node_attr_float(mc_model_node(m, 0), "momentum", 0), 0.2, 1e-6);
	for (int s = 0; s < 2; s++)
		for (int c = 0; c < 2; c++)
			for (int j = 0; j < 9; j++) {
				int i = (s * 2 + c) * 9 + j;

				want[i] =
				    (x[i] - mean[c]) / sqrt(var[c] + (double)1e-3f) * scale[c] +
				    shift[c];
			}
	assert_close(run(m, x, 2), want, 36, 1e-5);
	mc_model_free(m);
}
END_TEST

/* MaxPool (3, stride 2, pads 1) then AveragePool (2, stride 2, pads 1, count_include_pad). */
START_TEST(pools)
{
	struct ob *b = ob_new(13, 4, (int64_t[]){-1, 2, 6, 6});
	const float *x = rnd(72, 15);
	Onnx__NodeProto *n;
	struct mc_model *m;
	double mid[18], want[8];
	int oh, ow;

	n = node(b, "MaxPool", "mp", "x", "p");
	attr_ints(n, "kernel_shape", INTS(3, 3));
	attr_ints(n, "strides", INTS(2, 2));
	attr_ints(n, "pads", INTS(1, 1, 1, 1));
	n = node(b, "AveragePool", "ap", "p", "y");
	attr_ints(n, "kernel_shape", INTS(2, 2));
	attr_ints(n, "strides", INTS(2, 2));
	attr_ints(n, "pads", INTS(1, 1, 1, 1));
	attr_i(n, "count_include_pad", 1);
	m = import_ok(b);
	ck_assert_int_eq(mc_model_n_nodes(m), 2);
	ck_assert_str_eq(mc_model_node(m, 1)->op->name, "avgpool2d");
	ref_pool(to_double(x, 72), 2, 6, 6, 3, 2, 1, 0, mid, &oh, &ow);
	ck_assert_int_eq(oh, 3);
	ref_pool(mid, 2, 3, 3, 2, 2, 1, 1, want, &oh, &ow);
	ck_assert_int_eq(oh * ow * 2, 8);
	assert_close(run(m, x, 1), want, 8, 1e-6);
	mc_model_free(m);
}
END_TEST

/* GlobalAveragePool, Flatten (no node: already one dimension), Gemm, Softmax. */
START_TEST(gap_flatten_softmax)
{
	struct ob *b = ob_new(13, 4, (int64_t[]){-1, 3, 4, 4});
	const float *w = rnd(6, 16), *x = rnd(48, 17);
	struct mc_model *m;
	double want[2], mx, sum = 0;

	init_f(b, "w", 2, (int64_t[]){2, 3}, w, 1);
	node(b, "GlobalAveragePool", "gap", "x", "g");
	node(b, "Flatten", "flat", "g", "f");
	attr_i(node(b, "Gemm", "fc", "f,w", "z"), "transB", 1);
	node(b, "Softmax", "sm", "z", "y");
	m = import_ok(b);
	ck_assert_int_eq(mc_model_n_nodes(m), 3);
	ck_assert_str_eq(mc_model_node(m, 0)->op->name, "global_avgpool");
	ck_assert_str_eq(mc_model_node(m, 2)->op->name, "softmax");
	{
		double g[3] = {0};

		for (int c = 0; c < 3; c++) {
			for (int j = 0; j < 16; j++)
				g[c] += x[c * 16 + j];
			g[c] /= 16;
		}
		ref_linear(g, 3, w, 0, NULL, 2, want);
	}
	mx = fmax(want[0], want[1]);
	for (int i = 0; i < 2; i++)
		sum += exp(want[i] - mx);
	for (int i = 0; i < 2; i++)
		want[i] = exp(want[i] - mx) / sum;
	assert_close(run(m, x, 1), want, 2, 1e-6);
	mc_model_free(m);
}
END_TEST

/* Conv, Reshape to [0, -1] (int64 initializer), MatMul, LogSoftmax. */
START_TEST(reshape_log_softmax)
{
	struct ob *b = ob_new(14, 4, (int64_t[]){-1, 1, 4, 4});
	const float *cw = rnd(18, 18), *w = rnd(72 * 3, 19), *x = rnd(16, 20);
	struct mc_model *m;
	double conv[72], want[3], mx, sum = 0;
	int oh, ow;

	init_f(b, "cw", 4, (int64_t[]){2, 1, 3, 3}, cw, 1);
	init_f(b, "w", 2, (int64_t[]){8, 3}, w, 1);
	init_i64(b, "shape", 2, (int64_t[]){0, -1});
	node(b, "Conv", "conv", "x,cw", "c");
	node(b, "Reshape", "flat", "c,shape", "f");
	node(b, "MatMul", "fc", "f,w", "z");
	node(b, "LogSoftmax", "lsm", "z", "y");
	m = import_ok(b);
	ck_assert_int_eq(mc_model_n_nodes(m), 4);
	ck_assert_str_eq(mc_model_node(m, 1)->op->name, "flatten");
	ck_assert_str_eq(mc_model_node(m, 3)->op->name, "log_softmax");
	ref_conv(to_double(x, 16), 1, 4, 4, cw, NULL, 2, 3, 1, 0, 1, conv, &oh, &ow);
	ref_linear(conv, 8, w, 1, NULL, 3, want);
	mx = fmax(fmax(want[0], want[1]), want[2]);
	for (int i = 0; i < 3; i++)
		sum += exp(want[i] - mx);
	for (int i = 0; i < 3; i++)
		want[i] = want[i] - mx - log(sum);
	assert_close(run(m, x, 1), want, 3, 1e-5);
	mc_model_free(m);
}
END_TEST

/* A residual block: Conv, Relu, Conv, Add of the two branches, Relu. */
START_TEST(residual_add)
{
	struct ob *b = ob_new(13, 4, (int64_t[]){-1, 2, 5, 5});
	const float *w1 = rnd(36, 21), *w2 = rnd(36, 22), *b2 = rnd(2, 23), *x = rnd(50, 24);
	Onnx__NodeProto *n;
	struct mc_model *m;
	double r1[50], c2[50];
	int oh, ow;

	init_f(b, "w1", 4, (int64_t[]){2, 2, 3, 3}, w1, 1);
	init_f(b, "w2", 4, (int64_t[]){2, 2, 3, 3}, w2, 1);
	init_f(b, "b2", 1, (int64_t[]){2}, b2, 1);
	attr_ints(node(b, "Conv", "c1", "x,w1", "a"), "pads", INTS(1, 1, 1, 1));
	node(b, "Relu", "r1", "a", "r");
	n = node(b, "Conv", "c2", "r,w2,b2", "c");
	attr_ints(n, "pads", INTS(1, 1, 1, 1));
	node(b, "Add", "res", "c,r", "s");
	node(b, "Relu", "r2", "s", "y");
	m = import_ok(b);
	ck_assert_int_eq(mc_model_n_nodes(m), 5);
	ck_assert_str_eq(mc_model_node(m, 3)->op->name, "add");
	ref_conv(to_double(x, 50), 2, 5, 5, w1, NULL, 2, 3, 1, 1, 1, r1, &oh, &ow);
	relu(r1, 50);
	ref_conv(r1, 2, 5, 5, w2, b2, 2, 3, 1, 1, 1, c2, &oh, &ow);
	for (int i = 0; i < 50; i++)
		c2[i] += r1[i];
	relu(c2, 50);
	assert_close(run(m, x, 1), c2, 50, 1e-5);
	mc_model_free(m);
}
END_TEST

/* Dropout (opset 13: ratio as an input, its mask unread) and Identity add no node;
 * a branch the output does not need is left out. */
START_TEST(dropped_ops)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 3});
	const float half = 0.5f;
	struct mc_model *m;

	init_f(b, "w", 2, (int64_t[]){3, 2}, rnd(6, 25), 1);
	init_f(b, "ratio", 0, NULL, &half, 1);
	node(b, "MatMul", "fc", "x,w", "z");
	node(b, "Dropout", "drop", "z,ratio", "d,mask");
	node(b, "Identity", "id", "d", "y");
	node(b, "Relu", "unused", "x", "u");
	m = import_ok(b);
	only_node(m, "linear");
	mc_model_free(m);
}
END_TEST

/* Opset 11 Softmax: axis 1 by default, the last axis of [N, C]. */
START_TEST(softmax_opset11)
{
	struct ob *b = ob_new(11, 2, (int64_t[]){-1, 4});

	node(b, "Relu", "r", "x", "z");
	node(b, "Softmax", "sm", "z", "y");
	mc_model_free(import_ok(b));
	b = ob_new(11, 4, (int64_t[]){-1, 2, 2, 2});
	node(b, "Relu", "r", "x", "z");
	node(b, "Softmax", "sm", "z", "y");
	import_fails(b, MC_EINVAL, "node 'sm' (Softmax, opset 11)", "last axis", NULL);
}
END_TEST

/* A Pad of zeros (PyTorch's export of AvgPool2d's padding) folds into the
 * AveragePool or Conv that reads it; before a MaxPool it is refused. */
START_TEST(pad_folded)
{
	struct ob *b = ob_new(13, 4, (int64_t[]){-1, 2, 6, 6});
	const float *x = rnd(72, 40), *w = rnd(36, 41);
	Onnx__NodeProto *n;
	struct mc_model *m;
	double want[18];
	int oh, ow;

	init_i64(b, "pads", 8, (int64_t[]){0, 0, 1, 1, 0, 0, 1, 1});
	node(b, "Pad", "/pool/Pad", "x,pads", "p");
	n = node(b, "AveragePool", "/pool/AveragePool", "p", "y");
	attr_ints(n, "kernel_shape", INTS(3, 3));
	attr_ints(n, "strides", INTS(2, 2));
	m = import_ok(b);
	ck_assert_int_eq(mc_node_attr_int(only_node(m, "avgpool2d"), "padding", 0), 1);
	ref_pool(to_double(x, 72), 2, 6, 6, 3, 2, 1, 1, want, &oh, &ow);
	ck_assert_int_eq(oh * ow * 2, 18);
	assert_close(run(m, x, 1), want, 18, 1e-6);
	mc_model_free(m);
	/* into a Conv, adding to its own pads */
	b = ob_new(13, 4, (int64_t[]){-1, 2, 6, 6});
	init_i64(b, "pads", 8, (int64_t[]){0, 0, 1, 1, 0, 0, 1, 1});
	init_f(b, "w", 4, (int64_t[]){2, 2, 3, 3}, w, 1);
	node(b, "Pad", "pad", "x,pads", "p");
	attr_ints(node(b, "Conv", "conv", "p,w", "y"), "pads", INTS(1, 1, 1, 1));
	m = import_ok(b);
	ck_assert_int_eq(mc_node_attr_int(only_node(m, "conv2d"), "padding", 0), 2);
	{
		double *conv = mem(128 * sizeof(double));

		ref_conv(to_double(x, 72), 2, 6, 6, w, NULL, 2, 3, 1, 2, 1, conv, &oh, &ow);
		ck_assert_int_eq(oh, 8);
		assert_close(run(m, x, 1), conv, 128, 1e-5);
	}
	mc_model_free(m);
	/* before a MaxPool the zeros are real (they may win the max): a pad2d */
	b = ob_new(13, 4, (int64_t[]){-1, 2, 6, 6});
	init_i64(b, "pads", 8, (int64_t[]){0, 0, 1, 1, 0, 0, 1, 1});
	node(b, "Pad", "pad", "x,pads", "p");
	n = node(b, "MaxPool", "mp", "p", "y");
	attr_ints(n, "kernel_shape", INTS(2, 2));
	attr_ints(n, "strides", INTS(2, 2));
	m = import_ok(b);
	ck_assert_int_eq(
	    mc_node_attr_int(first_node(m, (const char *[]){"pad2d", "maxpool2d", NULL}), "top", 0),
	    1);
	{
		const float *y = run(m, x, 1);

		for (int c = 0; c < 2; c++)
			for (int i = 0; i < 4; i++)
				for (int j = 0; j < 4; j++) {
					double v = -HUGE_VAL;

					for (int di = 0; di < 2; di++)
						for (int dj = 0; dj < 2; dj++) {
							int h = 2 * i + di - 1, w = 2 * j + dj - 1;
							double t = h < 0 || h >= 6 || w < 0 || w >= 6
								       ? 0
								       : x[c * 36 + h * 6 + w];

							v = fmax(v, t);
						}
					ck_assert_double_eq_tol(y[c * 16 + i * 4 + j], v, 1e-7);
				}
	}
	mc_model_free(m);
	/* uneven: a pad2d of those sides */
	b = ob_new(13, 4, (int64_t[]){-1, 2, 6, 6});
	init_i64(b, "pads", 8, (int64_t[]){0, 0, 1, 0, 0, 0, 2, 3});
	node(b, "Pad", "pad", "x,pads", "y");
	m = import_ok(b);
	{
		const struct mc_node *p = only_node(m, "pad2d");

		ck_assert_int_eq(mc_node_attr_int(p, "top", 9), 1);
		ck_assert_int_eq(mc_node_attr_int(p, "left", 9), 0);
		ck_assert_int_eq(mc_node_attr_int(p, "bottom", 9), 2);
		ck_assert_int_eq(mc_node_attr_int(p, "right", 9), 3);
		ck_assert_int_eq(p->out_shape[1], 9);
		ck_assert_int_eq(p->out_shape[2], 9);
	}
	mc_model_free(m);
	/* cropping, or of another value */
	b = ob_new(13, 4, (int64_t[]){-1, 2, 6, 6});
	init_i64(b, "pads", 8, (int64_t[]){0, 0, -1, 0, 0, 0, 1, 1});
	node(b, "Pad", "pad", "x,pads", "y");
	import_fails(b, MC_EINVAL, "node 'pad' (Pad, opset 13)", "pads [0, 0, -1, 0", NULL);
	b = ob_new(13, 4, (int64_t[]){-1, 2, 6, 6});
	init_i64(b, "pads", 8, (int64_t[]){0, 0, 1, 1, 0, 0, 1, 1});
	init_f(b, "v", 0, NULL, (float[]){2}, 1);
	node(b, "Pad", "pad", "x,pads,v", "p");
	node(b, "Relu", "r", "p", "y");
	import_fails(b, MC_EINVAL, "node 'pad' (Pad, opset 13)", "value 2", NULL);
}
END_TEST

/* x.view(x.size(0), -1) as Shape, Slice and Concat: folded on the static
 * shape (N symbolic) into a flatten; Squeeze with attribute axes (opset 11)
 * of a global average changes nothing. */
START_TEST(shape_subgraph)
{
	struct ob *b = ob_new(13, 4, (int64_t[]){-1, 2, 3, 3});
	struct mc_model *m;

	node(b, "Shape", "sh", "x", "s");
	init_i64(b, "st", 1, (int64_t[]){0});
	init_i64(b, "en", 1, (int64_t[]){1});
	node(b, "Slice", "sl", "s,st,en", "n");
	init_i64(b, "m1", 1, (int64_t[]){-1});
	attr_i(node(b, "Concat", "cat", "n,m1", "shape"), "axis", 0);
	node(b, "Reshape", "r", "x,shape", "y");
	m = import_ok(b);
	ck_assert_int_eq(only_node(m, "flatten")->out_shape[0], 18);
	mc_model_free(m);
	b = ob_new(11, 4, (int64_t[]){-1, 2, 3, 3});
	node(b, "GlobalAveragePool", "gap", "x", "g");
	attr_ints(node(b, "Squeeze", "sq", "g", "y"), "axes", 2, (int64_t[]){3, 2});
	m = import_ok(b);
	ck_assert_int_eq(only_node(m, "global_avgpool")->out_shape[0], 2);
	mc_model_free(m);
}
END_TEST

/* Constants computed at import are bounded and checked like the file's own. */
START_TEST(folded_hostile)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 4});

	init_i64(b, "s", 2, (int64_t[]){1 << 20, 1 << 20});
	node(b, "ConstantOfShape", "cos", "s", "c");
	node(b, "Add", "add", "x,c", "y");
	import_fails(b, MC_EINVAL, "node 'cos' (ConstantOfShape, opset 13)", "at most", NULL);
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	init_i64(b, "v", 1, (int64_t[]){1});
	init_i64(b, "ax", 8, (int64_t[]){0, 1, 2, 3, 4, 5, 6, 7});
	node(b, "Unsqueeze", "u", "v,ax", "w");
	node(b, "Reshape", "r", "x,w", "y");
	import_fails(b, MC_EINVAL, "node 'u' (Unsqueeze, opset 13)", "more than 8", NULL);
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	init_i64(b, "a", 1, (int64_t[]){INT64_MAX});
	init_i64(b, "one", 1, (int64_t[]){1});
	node(b, "Add", "ov", "a,one", "s");
	node(b, "Reshape", "r", "x,s", "y");
	import_fails(b, MC_EINVAL, "node 'ov' (Add, opset 13)", "overflows", NULL);
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	node(b, "Shape", "sh", "x", "s");
	init_i64(b, "i", 1, (int64_t[]){5});
	node(b, "Gather", "ga", "s,i", "n");
	node(b, "Reshape", "r", "x,n", "y");
	import_fails(b, MC_EINVAL, "node 'ga' (Gather, opset 13)", "out of range", NULL);
	b = ob_new(13, 4, (int64_t[]){-1, 2, 3, 3});
	init_i64(b, "ax", 1, (int64_t[]){2});
	node(b, "Squeeze", "sq", "x,ax", "y");
	import_fails(b, MC_EINVAL, "node 'sq' (Squeeze, opset 13)", "size 3, not 1", NULL);
	/* Sub of two computed values has no mcomp op */
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	node(b, "Relu", "r", "x", "z");
	node(b, "Sub", "d", "x,z", "y");
	import_fails(b, MC_EINVAL, "node 'd' (Sub, opset 13)", "two computed values", NULL);
}
END_TEST

/* ---------------------------------------------------------------- activations */

static double ref_sigmoid(double v)
{
	return 1 / (1 + exp(-v));
}

static double ref_hsig(double v, double alpha, double beta)
{
	return fmax(0, fmin(1, alpha * v + beta));
}

/* LeakyRelu (alpha given), Sigmoid, HardSigmoid (defaults), HardSwish (opset 14). */
START_TEST(activations)
{
	struct ob *b = ob_new(14, 2, (int64_t[]){-1, 8});
	const float *x = rnd(16, 50);
	struct mc_model *m;
	double want[16];

	attr_f(node(b, "LeakyRelu", "lr", "x", "a"), "alpha", 0.2f);
	node(b, "HardSwish", "hsw", "a", "h");
	node(b, "HardSigmoid", "hs", "h", "s");
	node(b, "Sigmoid", "sg", "s", "y");
	m = import_ok(b);
	ck_assert_int_eq(mc_model_n_nodes(m), 4);
	ck_assert_str_eq(mc_model_node(m, 0)->op->name, "leaky_relu");
	ck_assert_double_eq_tol(mc_node_attr_float(mc_model_node(m, 0), "alpha", 0), 0.2, 1e-7);
	ck_assert_str_eq(mc_model_node(m, 1)->op->name, "hardswish");
	ck_assert_str_eq(mc_model_node(m, 2)->op->name, "hardsigmoid");
	ck_assert_double_eq_tol(mc_node_attr_float(mc_model_node(m, 2), "alpha", 0), 0.2, 1e-7);
	ck_assert_double_eq_tol(mc_node_attr_float(mc_model_node(m, 2), "beta", 0), 0.5, 1e-7);
	ck_assert_str_eq(mc_model_node(m, 3)->op->name, "sigmoid");
	for (int i = 0; i < 16; i++) {
		double v = x[i] > 0 ? x[i] : 0.2 * x[i];

		v = v * ref_hsig(v, 1.0 / 6, 0.5);
		want[i] = ref_sigmoid(ref_hsig(v, 0.2, 0.5));
	}
	assert_close(run(m, x, 2), want, 16, 1e-6);
	mc_model_free(m);
	/* HardSwish before opset 14 is not ONNX */
	b = ob_new(13, 2, (int64_t[]){-1, 8});
	node(b, "HardSwish", "hsw", "x", "y");
	import_fails(b, MC_EINVAL, "node 'hsw' (HardSwish, opset 13)", "opset 14", NULL);
}
END_TEST

/* Clip: bounds as constant inputs (opset 11+, either left out) or attributes (before). */
START_TEST(clip)
{
	const float lo = -0.25f, hi = 0.5f, *x = rnd(12, 51);
	struct mc_model *m;
	struct ob *b;
	double want[12];

	/* ReLU6 as PyTorch exports it: both bounds, opset 13 */
	b = ob_new(13, 2, (int64_t[]){-1, 6});
	init_f(b, "lo", 0, NULL, &lo, 1);
	init_f(b, "hi", 0, NULL, &hi, 0);
	node(b, "Clip", "c", "x,lo,hi", "y");
	m = import_ok(b);
	ck_assert_double_eq(mc_node_attr_float(only_node(m, "clip"), "min", 0), -0.25);
	ck_assert_double_eq(mc_node_attr_float(mc_model_node(m, 0), "max", 0), 0.5);
	for (int i = 0; i < 12; i++)
		want[i] = fmin(fmax(x[i], lo), hi);
	assert_close(run(m, x, 2), want, 12, 0);
	mc_model_free(m);
	/* min left out ("" as input 1): float's lowest */
	b = ob_new(13, 2, (int64_t[]){-1, 6});
	init_f(b, "hi", 0, NULL, &hi, 1);
	node(b, "Clip", "c", "x,,hi", "y");
	m = import_ok(b);
	ck_assert_double_eq(mc_node_attr_float(only_node(m, "clip"), "min", 0), -FLT_MAX);
	for (int i = 0; i < 12; i++)
		want[i] = fmin(x[i], hi);
	assert_close(run(m, x, 2), want, 12, 0);
	mc_model_free(m);
	/* opset 9: attributes; max left out */
	b = ob_new(9, 2, (int64_t[]){-1, 6});
	attr_f(node(b, "Clip", "c", "x", "y"), "min", lo);
	m = import_ok(b);
	ck_assert_double_eq(mc_node_attr_float(only_node(m, "clip"), "max", 0), FLT_MAX);
	for (int i = 0; i < 12; i++)
		want[i] = fmax(x[i], lo);
	assert_close(run(m, x, 2), want, 12, 0);
	mc_model_free(m);
	/* refused: a computed bound, a bound of two values, min > max, attributes at opset 13 */
	b = ob_new(13, 2, (int64_t[]){-1, 6});
	node(b, "Relu", "r", "x", "a");
	node(b, "Clip", "c", "x,a", "y");
	import_fails(b, MC_EINVAL, "node 'c' (Clip, opset 13)", "only as a constant", NULL);
	b = ob_new(13, 2, (int64_t[]){-1, 6});
	init_f(b, "lo", 1, (int64_t[]){2}, (float[]){0, 1}, 1);
	node(b, "Clip", "c", "x,lo", "y");
	import_fails(b, MC_EINVAL, "node 'c' (Clip, opset 13)", "has 2 values", NULL);
	b = ob_new(13, 2, (int64_t[]){-1, 6});
	init_f(b, "lo", 0, NULL, &hi, 1);
	init_f(b, "hi", 0, NULL, &lo, 1);
	node(b, "Clip", "c", "x,lo,hi", "y");
	import_fails(b, MC_EINVAL, "node 'c' (Clip, opset 13)", "min <= max", NULL);
	b = ob_new(13, 2, (int64_t[]){-1, 6});
	attr_f(node(b, "Clip", "c", "x", "y"), "min", 0);
	import_fails(b, MC_EINVAL, "node 'c' (Clip, opset 13)", "inputs 1 and 2", NULL);
}
END_TEST

/*
 * Squeeze-and-excitation as torchvision exports it: GlobalAveragePool,
 * 1x1 Conv, Relu, 1x1 Conv, HardSigmoid, Mul with the block's input (the
 * gate first or second).
 */
START_TEST(squeeze_excite)
{
	const float *w1 = rnd(8, 52), *b1 = rnd(2, 53), *w2 = rnd(8, 54), *b2 = rnd(4, 55);
	const float *x = rnd(2 * 36, 56);

	for (int gate_first = 0; gate_first < 2; gate_first++) {
		struct ob *b = ob_new(13, 4, (int64_t[]){-1, 4, 3, 3});
		struct mc_model *m;
		double want[72];

		init_f(b, "w1", 4, (int64_t[]){2, 4, 1, 1}, w1, 1);
		init_f(b, "b1", 1, (int64_t[]){2}, b1, 1);
		init_f(b, "w2", 4, (int64_t[]){4, 2, 1, 1}, w2, 1);
		init_f(b, "b2", 1, (int64_t[]){4}, b2, 1);
		node(b, "GlobalAveragePool", "/se/avgpool/GlobalAveragePool", "x", "g");
		node(b, "Conv", "/se/fc1/Conv", "g,w1,b1", "c1");
		node(b, "Relu", "/se/relu/Relu", "c1", "r");
		node(b, "Conv", "/se/fc2/Conv", "r,w2,b2", "c2");
		attr_f(node(b, "HardSigmoid", "/se/hs/HardSigmoid", "c2", "s"), "alpha",
		       1.0f / 6);
		node(b, "Mul", "/se/Mul", gate_first ? "s,x" : "x,s", "y");
		m = import_ok(b);
		ck_assert_int_eq(mc_model_n_nodes(m), 6);
		ck_assert_str_eq(mc_model_node(m, 1)->op->name, "linear");
		ck_assert_str_eq(mc_model_node(m, 5)->op->name, "mul");
		ck_assert_int_eq(mc_model_node(m, 5)->inputs[0], MC_NODE_INPUT);
		for (int n = 0; n < 2; n++) {
			double g[4] = {0}, h[2], s[4];

			for (int c = 0; c < 4; c++) {
				for (int j = 0; j < 9; j++)
					g[c] += x[(n * 4 + c) * 9 + j];
				g[c] /= 9;
			}
			ref_linear(g, 4, w1, 0, b1, 2, h);
			relu(h, 2);
			ref_linear(h, 2, w2, 0, b2, 4, s);
			for (int c = 0; c < 4; c++)
				for (int j = 0; j < 9; j++)
					want[(n * 4 + c) * 9 + j] = x[(n * 4 + c) * 9 + j] *
								    ref_hsig(s[c], 1.0f / 6, 0.5);
		}
		assert_close(run(m, x, 2), want, 72, 1e-6);
		mc_model_free(m);
	}
}
END_TEST

/* The gate as mcomp's mul export writes it: a Gemm's [N, C] reshaped to [N, C, 1, 1]. */
START_TEST(gate_reshape)
{
	const float *w = rnd(16, 57), *bias = rnd(4, 58), *x = rnd(2 * 36, 59);
	struct ob *b = ob_new(13, 4, (int64_t[]){-1, 4, 3, 3});
	struct mc_model *m;
	double want[72];

	init_f(b, "w", 2, (int64_t[]){4, 4}, w, 1);
	init_f(b, "bias", 1, (int64_t[]){4}, bias, 1);
	init_i64(b, "gate_shape", 4, (int64_t[]){0, 4, 1, 1});
	node(b, "GlobalAveragePool", "gap", "x", "g");
	node(b, "Flatten", "flat", "g", "f");
	attr_i(node(b, "Gemm", "fc", "f,w,bias", "z"), "transB", 1);
	node(b, "Sigmoid", "sig", "z", "s");
	node(b, "Reshape", "se/Reshape", "s,gate_shape", "gate");
	node(b, "Mul", "se", "x,gate", "y");
	m = import_ok(b);
	ck_assert_int_eq(mc_model_n_nodes(m), 4); /* a Flatten of a global average is nothing */
	ck_assert_str_eq(mc_model_node(m, 3)->op->name, "mul");
	ck_assert_int_eq(mc_model_node(m, 3)->inputs[0], MC_NODE_INPUT);
	for (int n = 0; n < 2; n++) {
		double g[4] = {0}, z[4];

		for (int c = 0; c < 4; c++) {
			for (int j = 0; j < 9; j++)
				g[c] += x[(n * 4 + c) * 9 + j];
			g[c] /= 9;
		}
		ref_linear(g, 4, w, 0, bias, 4, z);
		for (int c = 0; c < 4; c++)
			for (int j = 0; j < 9; j++)
				want[(n * 4 + c) * 9 + j] =
				    x[(n * 4 + c) * 9 + j] * ref_sigmoid(z[c]);
	}
	assert_close(run(m, x, 2), want, 72, 1e-6);
	mc_model_free(m);
	/* to [N, C, 2, 1]: not a gate */
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	init_i64(b, "shape", 4, (int64_t[]){0, 2, 2, 1});
	node(b, "Reshape", "rs", "x,shape", "y");
	import_fails(b, MC_EINVAL, "node 'rs' (Reshape, opset 13)", "and [N, C] as [N, C, 1, 1]", NULL);
}
END_TEST

/* Mul: of one shape; refused by a constant, of shapes NumPy would not
 * broadcast so, and a Conv of a global average that is not a linear. */
START_TEST(mul_shapes)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 5});
	const float *x = rnd(10, 57);
	struct mc_model *m;
	double want[10];

	node(b, "Sigmoid", "sg", "x", "s");
	node(b, "Mul", "swish", "x,s", "y");
	m = import_ok(b);
	for (int i = 0; i < 10; i++)
		want[i] = x[i] * ref_sigmoid(x[i]);
	assert_close(run(m, x, 2), want, 10, 1e-6);
	mc_model_free(m);
	b = ob_new(13, 2, (int64_t[]){-1, 5});
	init_f(b, "k", 0, NULL, (float[]){2}, 1);
	node(b, "Mul", "scale", "x,k", "y");
	import_fails(b, MC_EINVAL, "node 'scale' (Mul, opset 13)", "the constant 'k'", NULL);
	/* [N, 2, 3, 3] by [N, 1, 3, 3]: NumPy broadcasts it, mcomp's mul does not */
	b = ob_new(13, 4, (int64_t[]){-1, 2, 3, 3});
	init_f(b, "w", 4, (int64_t[]){1, 2, 3, 3}, rnd(18, 59), 1);
	attr_ints(node(b, "Conv", "conv", "x,w", "p"), "pads", INTS(1, 1, 1, 1));
	node(b, "Mul", "m", "x,p", "y");
	import_fails(b, MC_EINVAL, "node 'm' (Mul, opset 13)", "'x' [2, 3, 3] by 'p' [1, 3, 3]",
		     NULL);
	b = ob_new(13, 4, (int64_t[]){-1, 2, 3, 3});
	init_f(b, "w", 4, (int64_t[]){2, 2, 3, 3}, rnd(36, 58), 1);
	node(b, "GlobalAveragePool", "gap", "x", "g");
	attr_ints(node(b, "Conv", "c", "g,w", "y"), "pads", INTS(1, 1, 1, 1));
	import_fails(b, MC_EINVAL, "node 'c' (Conv, opset 13)", "global average", NULL);
}
END_TEST

/*
 * Concat of activations on axis 1: channels of [N, C, H, W] (three inputs,
 * one of them the model input; axis -3 the same) and features of [N, F]
 * (axis -1). An Identity of an initializer (PyTorch writes one for each
 * initializer equal to another) is that constant. Other axes, and inputs
 * that differ in more than the channels, are refused naming the node.
 */
START_TEST(concat)
{
	const float *x = rnd(36, 61), *w = rnd(6, 62), *fw = rnd(6, 63), *fx = rnd(6, 64);
	double xs[18], cv[27], want[2 * 63], fwant[2 * 5];
	struct ob *b;
	struct mc_model *m;
	int oh, ow;

	for (int axis = 1; axis >= -3; axis -= 4) {
		b = ob_new(13, 4, (int64_t[]){-1, 2, 3, 3});
		init_f(b, "w", 4, (int64_t[]){3, 2, 1, 1}, w, 1);
		node(b, "Identity", "same_w", "w", "w2");
		node(b, "Conv", "c", "x,w2", "c");
		node(b, "Relu", "r", "x", "r");
		attr_i(node(b, "Concat", "cat", "r,c,x", "y"), "axis", axis);
		m = import_ok(b);
		ck_assert_int_eq(mc_model_n_nodes(m), 3);
		ck_assert_str_eq(mc_model_node(m, 2)->op->name, "concat");
		ck_assert_int_eq(mc_model_node(m, 2)->n_inputs, 3);
		ck_assert_int_eq(mc_model_node(m, 2)->out_shape[0], 7);
		for (int n = 0; n < 2; n++) {
			double *y = want + 63 * n;

			for (int i = 0; i < 18; i++)
				xs[i] = x[18 * n + i];
			ref_conv(xs, 2, 3, 3, w, NULL, 3, 1, 1, 0, 1, cv, &oh, &ow);
			for (int i = 0; i < 18; i++)
				y[i] = xs[i] > 0 ? xs[i] : 0;
			memcpy(y + 18, cv, sizeof(cv));
			memcpy(y + 45, xs, sizeof(xs));
		}
		assert_close(run(m, x, 2), want, 2 * 63, 1e-6);
		mc_model_free(m);
	}

	b = ob_new(13, 2, (int64_t[]){-1, 3});
	init_f(b, "w", 2, (int64_t[]){3, 2}, fw, 1);
	node(b, "MatMul", "fc", "x,w", "z");
	attr_i(node(b, "Concat", "cat", "x,z", "y"), "axis", -1);
	m = import_ok(b);
	for (int n = 0; n < 2; n++) {
		double xd[3];

		for (int i = 0; i < 3; i++)
			xd[i] = fwant[5 * n + i] = fx[3 * n + i];
		ref_linear(xd, 3, fw, 1, NULL, 2, fwant + 5 * n + 3);
	}
	assert_close(run(m, fx, 2), fwant, 10, 1e-6);
	mc_model_free(m);

	b = ob_new(13, 4, (int64_t[]){-1, 2, 3, 3});
	node(b, "Relu", "r", "x", "r");
	attr_i(node(b, "Concat", "cat", "x,r", "y"), "axis", 2);
	import_fails(b, MC_EINVAL, "node 'cat' (Concat, opset 13)", "on axis 2",
		     "along axis 1 (channels or features) only", NULL);
	b = ob_new(13, 4, (int64_t[]){-1, 2, 3, 3});
	attr_ints(node(b, "MaxPool", "p", "x", "p"), "kernel_shape", INTS(3, 3));
	attr_i(node(b, "Concat", "cat", "x,p", "y"), "axis", 1);
	import_fails(b, MC_EINVAL, "(Concat, opset 13)", "'input' [2, 3, 3], 'p' [2, 1, 1]",
		     NULL);
	b = ob_new(13, 2, (int64_t[]){-1, 3});
	attr_i(node(b, "Concat", "cat", "x,x,x,x,x", "y"), "axis", 1);
	import_fails(b, MC_EINVAL, "node 'cat' (Concat, opset 13)", "joins 5 activations",
		     NULL);
}
END_TEST

/* Imported models save and load as mcomp files, as the import command writes them. */
START_TEST(save_load)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 6});
	const float *x = rnd(12, 26);
	struct mc_model *m, *back;
	struct mc_err err = {0};
	size_t len;
	void *buf;
	FILE *f;

	init_f(b, "w", 2, (int64_t[]){4, 6}, rnd(24, 27), 1);
	init_f(b, "c", 1, (int64_t[]){4}, rnd(4, 28), 1);
	attr_i(node(b, "Gemm", "/fc/Gemm", "x,w,c", "y"), "transB", 1);
	buf = pack(b, &len);
	f = fopen(tpath("m.onnx"), "wb");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
	fclose(f);
	m = mc_model_from_onnx(tpath("m.onnx"), &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_model_save(m, tpath("m.safetensors"), &err), 0);
	back = mc_model_load(tpath("m.safetensors"), &err);
	ck_assert_msg(back != NULL, "%s", err.msg);
	ck_assert_mem_eq(run(m, x, 2), run(back, x, 2), 8 * sizeof(float));
	mc_model_free(m);
	mc_model_free(back);
}
END_TEST

/* ---------------------------------------------------------------- hostile files */

static struct ob *small_cnn(void)
{
	struct ob *b = ob_new(13, 4, (int64_t[]){-1, 1, 4, 4});

	init_f(b, "w", 4, (int64_t[]){2, 1, 3, 3}, rnd(18, 30), 1);
	init_f(b, "fw", 2, (int64_t[]){3, 8}, rnd(24, 31), 0);
	attr_ints(node(b, "Conv", "conv", "x,w", "c"), "kernel_shape", INTS(3, 3));
	node(b, "Relu", "relu", "c", "r");
	node(b, "Flatten", "flat", "r", "f");
	attr_i(node(b, "Gemm", "fc", "f,fw", "y"), "transB", 1);
	return b;
}

/* Every truncation of a valid file is refused, never a crash. */
START_TEST(truncated)
{
	struct ob *b = small_cnn();
	struct mc_err err;
	size_t len;
	uint8_t *buf = pack(b, &len);
	struct mc_model *m;

	m = mc_model_from_onnx_buf(buf, len, "t.onnx", &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_free(m);
	for (size_t cut = 0; cut < len; cut++) {
		memset(&err, 0, sizeof(err));
		m = mc_model_from_onnx_buf(buf, cut, "t.onnx", &err);
		ck_assert_msg(m == NULL, "a file cut to %zu of %zu bytes was read", cut, len);
		ck_assert_msg(err.code == MC_ECORRUPT || err.code == MC_EINVAL, "%zu: %d %s", cut,
			      err.code, err.msg);
	}
	memset(&err, 0, sizeof(err));
	ck_assert_ptr_null(mc_model_from_onnx_buf(buf, len / 2, "t.onnx", &err));
	ck_assert_int_eq(err.code, MC_ECORRUPT);
	ck_assert_msg(strstr(err.msg, "t.onnx: not an ONNX model"), "%s", err.msg);
}
END_TEST

/* Bytes changed at random: refused or read, never a crash. */
START_TEST(fuzzed)
{
	struct ob *b = small_cnn();
	size_t len;
	uint8_t *buf = pack(b, &len), *mut = mem(len);
	const float *x = rnd(16, 32);

	for (uint64_t t = 0; t < 3000; t++) {
		struct mc_err err = {0};
		struct mc_model *m;

		memcpy(mut, buf, len);
		for (int k = 0; k < 1 + (int)(t % 4); k++) {
			uint32_t w[4];

			mc_philox(77, t, (uint64_t)k, w);
			mut[w[0] % len] = (uint8_t)w[1];
		}
		m = mc_model_from_onnx_buf(mut, len, "t.onnx", &err);
		if (!m) {
			ck_assert_int_ne(err.code, 0);
			continue;
		}
		if (mc_model_in_numel(m) == 16)
			run(m, x, 1);
		mc_model_free(m);
	}
}
END_TEST

START_TEST(dangling_name)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 4});

	node(b, "Relu", "r1", "x", "a");
	node(b, "Add", "sum", "a,nowhere", "y");
	import_fails(b, MC_ECORRUPT, "node 'sum' (Add, opset 13)", "'nowhere'", "corrupt", NULL);
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	node(b, "Relu", "r1", "x", "a");
	import_fails(b, MC_ECORRUPT, "graph output 'y'", NULL);
}
END_TEST

START_TEST(cycle)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 4});

	node(b, "Add", "a", "x,q", "p");
	node(b, "Relu", "b", "p", "q");
	node(b, "Relu", "out", "p", "y");
	import_fails(b, MC_ECORRUPT, "cycle", NULL);
}
END_TEST

START_TEST(size_mismatch)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 6});
	Onnx__TensorProto *t = init_f(b, "w", 2, (int64_t[]){4, 6}, rnd(24, 33), 1);

	t->raw_data.len = 20 * 4;
	attr_i(node(b, "Gemm", "fc", "x,w", "y"), "transB", 1);
	import_fails(b, MC_ECORRUPT, "initializer 'w'", "24 values", "80", NULL);
	/* float_data one short */
	b = ob_new(13, 2, (int64_t[]){-1, 6});
	t = init_f(b, "w", 2, (int64_t[]){4, 6}, rnd(24, 33), 0);
	t->n_float_data--;
	attr_i(node(b, "Gemm", "fc", "x,w", "y"), "transB", 1);
	import_fails(b, MC_ECORRUPT, "initializer 'w'", NULL);
	/* a weight of the wrong shape for its input */
	b = ob_new(13, 2, (int64_t[]){-1, 5});
	init_f(b, "w", 2, (int64_t[]){4, 6}, rnd(24, 33), 1);
	attr_i(node(b, "Gemm", "fc", "x,w", "y"), "transB", 1);
	import_fails(b, MC_EINVAL, "node 'fc' (Gemm, opset 13)", "6 features", NULL);
}
END_TEST

START_TEST(external_data)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 6});
	Onnx__TensorProto *t = init_f(b, "w", 2, (int64_t[]){4, 6}, rnd(24, 34), 1);
	Onnx__StringStringEntryProto *e = mem(sizeof(*e));

	onnx__string_string_entry_proto__init(e);
	e->key = sdup("location");
	e->value = sdup("weights.bin");
	t->has_raw_data = 0;
	t->has_data_location = 1;
	t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
	t->n_external_data = 1;
	t->external_data = mem(sizeof(*t->external_data));
	t->external_data[0] = e;
	attr_i(node(b, "Gemm", "fc", "x,w", "y"), "transB", 1);
	import_fails(b, MC_EINVAL, "initializer 'w'", "external", NULL);
}
END_TEST

START_TEST(absurd_dims)
{
	struct ob *b = ob_new(13, 2, (int64_t[]){-1, 6});
	Onnx__TensorProto *t = init_f(b, "w", 2, (int64_t[]){4, 6}, rnd(24, 35), 1);

	t->dims[0] = (int64_t)1 << 40;
	t->dims[1] = (int64_t)1 << 40;
	attr_i(node(b, "Gemm", "fc", "x,w", "y"), "transB", 1);
	import_fails(b, MC_ECORRUPT, "initializer 'w'", NULL);
	b = ob_new(13, 2, (int64_t[]){-1, 6});
	init_f(b, "w", 2, (int64_t[]){4, 6}, rnd(24, 35), 1)->dims[0] = -4;
	attr_i(node(b, "Gemm", "fc", "x,w", "y"), "transB", 1);
	import_fails(b, MC_ECORRUPT, "initializer 'w'", NULL);
	b = ob_new(13, 4, (int64_t[]){-1, 1, (int64_t)1 << 40, 3});
	node(b, "Relu", "r", "x", "y");
	import_fails(b, MC_EINVAL, "input 'x'", "dimension 2", NULL);
	b = ob_new(13, 4, (int64_t[]){-1, 1, 1 << 20, 1 << 20});
	node(b, "Relu", "r", "x", "y");
	import_fails(b, MC_EINVAL, NULL);
}
END_TEST

START_TEST(unsupported_op)
{
	struct ob *b = ob_new(14, 2, (int64_t[]){-1, 4});

	node(b, "Relu", "r", "x", "a");
	node(b, "LSTM", "lstm1", "a", "y");
	import_fails(b, MC_EINVAL, "t.onnx: node 'lstm1' (LSTM, opset 14)", "mcomp has no op",
		     "Add, AveragePool, BatchNormalization", "Softmax", NULL);
	/* another domain */
	b = ob_new(14, 2, (int64_t[]){-1, 4});
	node(b, "Relu", "r", "x", "y")->domain = sdup("com.microsoft");
	import_fails(b, MC_EINVAL, "node 'r' (Relu of domain 'com.microsoft', opset 14)", NULL);
	/* opsets out of the range read */
	b = ob_new(7, 2, (int64_t[]){-1, 4});
	node(b, "Relu", "r", "x", "y");
	import_fails(b, MC_EINVAL, "opset 7", "9 to 21", NULL);
}
END_TEST

/* Attributes outside what the mcomp op computes: refused, naming the node. */
START_TEST(unsupported_attrs)
{
	static const char *const what[] = {"pads [0, -1, 1, 1]", "dilations 2", "kernel 3x2",
					   "auto_pad 'SAME'", "attribute 'bogus'"};

	for (int c = 0; c < 5; c++) {
		struct ob *b = ob_new(13, 4, (int64_t[]){-1, 2, 6, 6});
		Onnx__NodeProto *n;

		init_f(b, "w", 4, (int64_t[]){2, 2, 3, c == 2 ? 2 : 3}, rnd(36, 36), 1);
		n = node(b, "Conv", "conv", "x,w", "y");
		if (c == 0)
			attr_ints(n, "pads", INTS(0, -1, 1, 1));
		if (c == 1)
			attr_ints(n, "dilations", INTS(2, 2));
		if (c == 3) {
			attr_s(n, "auto_pad", "SAME");
			attr_ints(n, "strides", INTS(2, 2));
		}
		if (c == 4)
			attr_i(n, "bogus", 1);
		import_fails(b, MC_EINVAL, "node 'conv' (Conv, opset 13)", what[c], NULL);
	}
}
END_TEST

START_TEST(unsupported_pool_gemm)
{
	struct ob *b = ob_new(13, 4, (int64_t[]){-1, 2, 6, 6});
	Onnx__NodeProto *n;

	/* count_include_pad=0 with padding: not mcomp's average */
	n = node(b, "AveragePool", "ap", "x", "y");
	attr_ints(n, "kernel_shape", INTS(3, 3));
	attr_ints(n, "pads", INTS(1, 1, 1, 1));
	import_fails(b, MC_EINVAL, "node 'ap' (AveragePool, opset 13)", "count_include_pad=0",
		     NULL);
	/* ceil_mode with a partial window */
	b = ob_new(13, 4, (int64_t[]){-1, 2, 5, 5});
	n = node(b, "MaxPool", "mp", "x", "y");
	attr_ints(n, "kernel_shape", INTS(2, 2));
	attr_ints(n, "strides", INTS(2, 2));
	attr_i(n, "ceil_mode", 1);
	import_fails(b, MC_EINVAL, "node 'mp' (MaxPool, opset 13)", "ceil_mode", NULL);
	/* Gemm transA, alpha */
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	init_f(b, "w", 2, (int64_t[]){4, 4}, rnd(16, 37), 1);
	attr_i(node(b, "Gemm", "fc", "x,w", "y"), "transA", 1);
	import_fails(b, MC_EINVAL, "node 'fc' (Gemm, opset 13)", "transA", NULL);
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	init_f(b, "w", 2, (int64_t[]){4, 4}, rnd(16, 37), 1);
	attr_f(node(b, "Gemm", "fc", "x,w", "y"), "alpha", 2);
	import_fails(b, MC_EINVAL, "node 'fc' (Gemm, opset 13)", "alpha", NULL);
	/* Reshape to anything but [N, -1] */
	b = ob_new(13, 4, (int64_t[]){-1, 2, 2, 2});
	init_i64(b, "shape", 3, (int64_t[]){0, 2, 4});
	node(b, "Reshape", "rs", "x,shape", "y");
	import_fails(b, MC_EINVAL, "node 'rs' (Reshape, opset 13)", "[N, -1]", NULL);
	/* Flatten of axis 2 */
	b = ob_new(13, 4, (int64_t[]){-1, 2, 2, 2});
	attr_i(node(b, "Flatten", "fl", "x", "y"), "axis", 2);
	import_fails(b, MC_EINVAL, "node 'fl' (Flatten, opset 13)", "axis 2", NULL);
	/* batch norm in training mode */
	b = ob_new(15, 2, (int64_t[]){-1, 2});
	for (int k = 0; k < 4; k++)
		init_f(b, (const char *[]){"s", "b", "m", "v"}[k], 1, (int64_t[]){2},
		       (float[]){1, 1}, 1);
	attr_i(node(b, "BatchNormalization", "bn", "x,s,b,m,v", "y"), "training_mode", 1);
	import_fails(b, MC_EINVAL, "node 'bn' (BatchNormalization, opset 15)", "training_mode",
		     NULL);
}
END_TEST

START_TEST(bad_graphs)
{
	struct mc_err err = {0};
	struct ob *b;
	FILE *f;

	/* two inputs */
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	b->ins[1] = value_info("x2", 2, (int64_t[]){-1, 4});
	b->g.n_input = 2;
	node(b, "Add", "a", "x,x2", "y");
	import_fails(b, MC_EINVAL, "2 inputs", NULL);
	/* a name defined twice */
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	node(b, "Relu", "r1", "x", "y");
	node(b, "Relu", "r2", "x", "y");
	import_fails(b, MC_ECORRUPT, "'y' is defined twice", NULL);
	/* a symbolic sample dimension */
	b = ob_new(13, 2, (int64_t[]){-1, -1});
	node(b, "Relu", "r", "x", "y");
	import_fails(b, MC_EINVAL, "dimension 1 is symbolic", NULL);
	/* the output is the input */
	b = ob_new(13, 2, (int64_t[]){-1, 4});
	node(b, "Identity", "id", "x", "y");
	import_fails(b, MC_EINVAL, "the input itself", NULL);
	/* a file that is not there, and one that is not ONNX */
	ck_assert_ptr_null(mc_model_from_onnx(tpath("none.onnx"), &err));
	ck_assert_int_eq(err.code, MC_EIO);
	f = fopen(tpath("text.onnx"), "w");
	ck_assert_ptr_nonnull(f);
	fputs("{\"this\": \"is JSON, not a protobuf\"}\n", f);
	fclose(f);
	ck_assert_ptr_null(mc_model_from_onnx(tpath("text.onnx"), &err));
	ck_assert_msg(err.code == MC_ECORRUPT, "%d %s", err.code, err.msg);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("onnx");
	TCase *ops = tcase_create("ops"), *bad = tcase_create("hostile");

	tcase_add_checked_fixture(ops, setup, teardown);
	tcase_add_test(ops, gemm_trans_b);
	tcase_add_test(ops, identity_of_weight);
	tcase_add_test(ops, opset_range);
	tcase_add_test(ops, gemm_no_bias);
	tcase_add_test(ops, matmul_add);
	tcase_add_test(ops, matmul_add_shared);
	tcase_add_test(ops, conv_relu);
	tcase_add_test(ops, conv_depthwise);
	tcase_add_test(ops, batchnorm);
	tcase_add_test(ops, pools);
	tcase_add_test(ops, gap_flatten_softmax);
	tcase_add_test(ops, reshape_log_softmax);
	tcase_add_test(ops, residual_add);
	tcase_add_test(ops, dropped_ops);
	tcase_add_test(ops, softmax_opset11);
	tcase_add_test(ops, pad_folded);
	tcase_add_test(ops, shape_subgraph);
	tcase_add_test(ops, save_load);
	tcase_add_test(ops, activations);
	tcase_add_test(ops, clip);
	tcase_add_test(ops, squeeze_excite);
	tcase_add_test(ops, gate_reshape);
	tcase_add_test(ops, mul_shapes);
	tcase_add_test(ops, concat);
	suite_add_tcase(s, ops);
	tcase_add_checked_fixture(bad, setup, teardown);
	tcase_add_test(bad, truncated);
	tcase_add_test(bad, fuzzed);
	tcase_add_test(bad, dangling_name);
	tcase_add_test(bad, cycle);
	tcase_add_test(bad, size_mismatch);
	tcase_add_test(bad, external_data);
	tcase_add_test(bad, absurd_dims);
	tcase_add_test(bad, unsupported_op);
	tcase_add_test(bad, unsupported_attrs);
	tcase_add_test(bad, folded_hostile);
	tcase_add_test(bad, unsupported_pool_gemm);
	tcase_add_test(bad, bad_graphs);
	suite_add_tcase(s, bad);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
