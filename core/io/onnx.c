/* SPDX-License-Identifier: MIT */
/*
 * onnx.c - ONNX files in: an ONNX graph read with protobuf-c (the bindings
 * are generated at build time from Debian's onnx.proto) and turned into an
 * mcomp model through the graph API, node by node, as arch.c does for the
 * architecture JSON of mcomp's own files.
 *
 * The file is untrusted. Before any node is added the whole graph is
 * checked: the opset, every op type against the table below, every name
 * resolved (a name nothing produces is a corrupt file), a topological
 * order found (a cycle is a corrupt file), every initializer's size against
 * its dims. Then the nodes the output depends on are mapped in that order;
 * an attribute outside what the mcomp op computes stops the import with the
 * node's name, op type and opset. Nothing runs.
 *
 * Each ONNX value is an activation (an mcomp node's output, or the model
 * input) or a constant (an initializer or a Constant node's tensor, decoded
 * to float or int64). Identity and Dropout make their output another name
 * for their input; MatMul followed by its only reader, an Add of a
 * constant, becomes one linear with a bias. A global average's [N, C, 1, 1]
 * is mcomp's [C] (its rank stays 3): a 1x1 Conv of it is a linear, and a
 * Mul by it scales each channel (squeeze-and-excitation).
 */
#include <float.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/onnx.h>
#include <mcomp/safetensors.h>

#include "core/io/onnx.pb-c.h"

#define OPSET_MIN     9
#define OPSET_MAX     18
#define FILE_MAX      ((size_t)2 << 30)	 /* protobuf's own limit */
#define NUMEL_MAX     ((int64_t)1 << 31) /* values in one constant */
#define INPUT_DIM_MAX ((int64_t)1 << 24) /* one dimension of the model input */

/* ONNX TensorProto.DataType values read here. */
enum { DT_FLOAT = 1, DT_UINT8 = 2, DT_INT8 = 3, DT_INT32 = 6, DT_INT64 = 7, DT_BOOL = 9 };

enum val_kind {
	V_NONE,	 /* produced by a node not yet mapped, or an output mcomp does not compute */
	V_ACT,	 /* an activation: node (MC_NODE_INPUT: the model input) */
	V_CONST, /* a constant: f (float) or i (int64, bool) */
};

struct val {
	const char *name;
	int producer; /* the ONNX node that writes it, or -1 (initializer, graph input) */
	enum val_kind kind;
	int node; /* V_ACT: the mcomp node, or MC_NODE_INPUT */
	int rank; /* V_ACT: ONNX rank per sample (global_avgpool: 3, its mcomp shape [C]) */
	int pad;  /* V_ACT: zeros a Pad adds around each image, for the Conv or AveragePool after it
		   */
	int ndim; /* V_CONST */
	int64_t dims[MC_MAX_DIMS];
	int64_t numel;
	int dtype;
	float *f;   /* dtype float */
	int64_t *i; /* dtype int64 or bool */
};

struct imp {
	const char *origin;
	Onnx__GraphProto *g;
	int opset;
	struct val *v;
	int nv;
	int *htab, hmask;    /* value names hashed: index into v, or -1 */
	int *order, n_order; /* the ONNX nodes to map, in a topological order */
	char *live;	     /* per ONNX node: the output depends on it */
	char *absorbed;	     /* per ONNX node: an Add already mapped as a MatMul's bias */
	struct mc_model *m;
	struct mc_err *err;
};

typedef int (*map_fn)(struct imp *im, int k, const Onnx__NodeProto *n);

static int map_gemm(struct imp *, int, const Onnx__NodeProto *);
static int map_matmul(struct imp *, int, const Onnx__NodeProto *);
static int map_conv(struct imp *, int, const Onnx__NodeProto *);
static int map_batchnorm(struct imp *, int, const Onnx__NodeProto *);
static int map_pool(struct imp *, int, const Onnx__NodeProto *);
static int map_unary(struct imp *, int, const Onnx__NodeProto *);
static int map_flatten(struct imp *, int, const Onnx__NodeProto *);
static int map_reshape(struct imp *, int, const Onnx__NodeProto *);
static int map_add(struct imp *, int, const Onnx__NodeProto *);
static int map_softmax(struct imp *, int, const Onnx__NodeProto *);
static int map_alias(struct imp *, int, const Onnx__NodeProto *);
static int map_pad(struct imp *, int, const Onnx__NodeProto *);
static int map_constant(struct imp *, int, const Onnx__NodeProto *);
static int map_act(struct imp *, int, const Onnx__NodeProto *);
static int map_clip(struct imp *, int, const Onnx__NodeProto *);
static int map_mul(struct imp *, int, const Onnx__NodeProto *);

/* The op types read, in the order of their names (the list errors print). */
static const struct {
	const char *type;
	map_fn map;
	const char *mc_op;	    /* what map_unary and map_pool add */
	const char *const attrs[8]; /* the attributes read; any other is refused */
} ops[] = {
    {"Add", map_add, NULL, {NULL}},
    {"AveragePool",
     map_pool,
     "avgpool2d",
     {"auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "strides",
      NULL}},
    {"BatchNormalization", map_batchnorm, NULL, {"epsilon", "momentum", "training_mode", NULL}},
    {"Clip", map_clip, "clip", {"max", "min", NULL}},
    {"Constant",
     map_constant,
     NULL,
     {"value", "value_float", "value_floats", "value_int", "value_ints", NULL}},
    {"Conv",
     map_conv,
     NULL,
     {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides", NULL}},
    {"Dropout", map_alias, NULL, {"ratio", "seed", NULL}},
    {"Flatten", map_flatten, NULL, {"axis", NULL}},
    {"Gemm", map_gemm, NULL, {"alpha", "beta", "transA", "transB", NULL}},
    {"GlobalAveragePool", map_unary, "global_avgpool", {NULL}},
    {"HardSigmoid", map_act, "hardsigmoid", {"alpha", "beta", NULL}},
    {"HardSwish", map_unary, "hardswish", {NULL}},
    {"Identity", map_alias, NULL, {NULL}},
    {"LeakyRelu", map_act, "leaky_relu", {"alpha", NULL}},
    {"LogSoftmax", map_softmax, "log_softmax", {"axis", NULL}},
    {"MatMul", map_matmul, NULL, {NULL}},
    {"MaxPool",
     map_pool,
     "maxpool2d",
     {"auto_pad", "ceil_mode", "dilations", "kernel_shape", "pads", "storage_order", "strides",
      NULL}},
    {"Mul", map_mul, NULL, {NULL}},
    {"Pad", map_pad, NULL, {"mode", "pads", "value", NULL}},
    {"Relu", map_unary, "relu", {NULL}},
    {"Reshape", map_reshape, NULL, {"allowzero", NULL}},
    {"Sigmoid", map_unary, "sigmoid", {NULL}},
    {"Softmax", map_softmax, "softmax", {"axis", NULL}},
};
#define N_OPS ((int)(sizeof(ops) / sizeof(ops[0])))

static int op_index(const char *type)
{
	for (int i = 0; type && i < N_OPS; i++)
		if (!strcmp(ops[i].type, type))
			return i;
	return -1;
}

static const char *str(const char *s)
{
	return s ? s : "";
}

static int default_domain(const char *d)
{
	return !d || !*d || !strcmp(d, "ai.onnx");
}

/* ---------------------------------------------------------------- errors */

/* How messages name node n: its name, else its first output. */
static void node_label(const Onnx__NodeProto *n, char *buf, size_t len)
{
	if (n->name && *n->name)
		snprintf(buf, len, "'%s'", n->name);
	else
		snprintf(buf, len, "(unnamed, output '%s')", n->n_output ? str(n->output[0]) : "");
}

/* "ORIGIN: node 'NAME' (OP, opset N): MESSAGE" */
static int node_err(struct imp *im, const Onnx__NodeProto *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int node_err(struct imp *im, const Onnx__NodeProto *n, int code, const char *fmt, ...)
{
	char msg[MC_ERR_MAX / 2], label[300];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	node_label(n, label, sizeof(label));
	return mc_err_set(im->err, code, "%s: node %s (%s, opset %d): %s", im->origin, label,
			  str(n->op_type), im->opset, msg);
}

/* ---------------------------------------------------------------- values */

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

/* The slot of name in the hash table: where it is, or the empty one it would take. */
static int slot(const struct imp *im, const char *name)
{
	int h = (int)(name_hash(name) & (uint32_t)im->hmask);

	while (im->htab[h] >= 0 && strcmp(im->v[im->htab[h]].name, name))
		h = (h + 1) & im->hmask;
	return h;
}

static struct val *val_find(struct imp *im, const char *name)
{
	int h;

	if (!name || !*name)
		return NULL;
	h = slot(im, name);
	return im->htab[h] >= 0 ? &im->v[im->htab[h]] : NULL;
}

/* A new value named name; MC_ECORRUPT when the name is taken (values are
 * written once in ONNX). */
static struct val *val_new(struct imp *im, const char *name, int producer, const char *what)
{
	struct val *v;

	if (val_find(im, name)) {
		mc_err_set(im->err, MC_ECORRUPT,
			   "%s: '%s' is defined twice (again as %s); ONNX values are written "
			   "once, so the file is corrupt",
			   im->origin, name, what);
		return NULL;
	}
	im->htab[slot(im, name)] = im->nv;
	v = &im->v[im->nv++];
	memset(v, 0, sizeof(*v));
	v->name = name;
	v->producer = producer;
	return v;
}

static uint32_t le32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
	return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static int dtype_size(int dt)
{
	switch (dt) {
	case DT_FLOAT:
	case DT_INT32:
		return 4;
	case DT_INT64:
		return 8;
	case DT_BOOL:
	case DT_UINT8:
	case DT_INT8:
		return 1;
	default:
		return 0;
	}
}

/*
 * Fills the constant v from tensor t: checks dims, the data's size against
 * them, and where the data lives; decodes float into v->f and int64, int32
 * and bool into v->i. what names t in messages ("initializer 'fc.weight'").
 */
static int const_from_tensor(struct imp *im, struct val *v, const Onnx__TensorProto *t,
			     const char *what)
{
	int dt = t->has_data_type ? t->data_type : 0, esz = dtype_size(dt);
	int64_t numel = 1;
	size_t have;

	if (t->n_external_data || (t->has_data_location &&
				   t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL))
		return mc_err_set(
		    im->err, MC_EINVAL,
		    "%s: %s keeps its data in an external file; mcomp reads "
		    "self-contained files only: save the model with its weights inside "
		    "(onnx.save_model(model, path, save_as_external_data=False))",
		    im->origin, what);
	if (t->segment)
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: %s is one segment of a larger tensor; mcomp reads whole "
				  "tensors only",
				  im->origin, what);
	if (t->n_dims > MC_MAX_DIMS)
		return mc_err_set(im->err, MC_ECORRUPT, "%s: %s has %zu dimensions, more than %d",
				  im->origin, what, t->n_dims, MC_MAX_DIMS);
	for (size_t d = 0; d < t->n_dims; d++) {
		if (t->dims[d] < 0 || t->dims[d] > NUMEL_MAX || numel * t->dims[d] > NUMEL_MAX)
			return mc_err_set(im->err, MC_ECORRUPT,
					  "%s: %s: dimension %zu is %lld; the tensor would hold "
					  "more than %lld values, so the file is corrupt",
					  im->origin, what, d, (long long)t->dims[d],
					  (long long)NUMEL_MAX);
		numel *= t->dims[d];
		v->dims[d] = t->dims[d];
	}
	v->ndim = (int)t->n_dims;
	v->numel = numel;
	v->dtype = dt;
	v->kind = V_CONST;
	if (!esz)
		return 0; /* a type nothing here reads: refused where it is used */
	if (t->has_raw_data) {
		have = t->raw_data.len / (size_t)esz;
		if (t->raw_data.len % (size_t)esz || have != (size_t)numel)
			goto mismatch;
	} else {
		have = dt == DT_FLOAT	? t->n_float_data
		       : dt == DT_INT64 ? t->n_int64_data
					: t->n_int32_data; /* int32, bool, (u)int8 */
		if (have != (size_t)numel)
			goto mismatch;
	}
	if (dt == DT_FLOAT) {
		v->f = malloc((size_t)(numel ? numel : 1) * sizeof(float));
		if (!v->f)
			return mc_err_set(im->err, MC_ENOMEM, "%s: %s: out of memory", im->origin,
					  what);
		for (int64_t j = 0; j < numel; j++) {
			if (t->has_raw_data) {
				uint32_t u = le32(t->raw_data.data + 4 * j);

				memcpy(&v->f[j], &u, sizeof(float));
			} else {
				v->f[j] = t->float_data[j];
			}
		}
	} else if (dt == DT_INT64 || dt == DT_INT32 || dt == DT_BOOL) {
		v->i = malloc((size_t)(numel ? numel : 1) * sizeof(int64_t));
		if (!v->i)
			return mc_err_set(im->err, MC_ENOMEM, "%s: %s: out of memory", im->origin,
					  what);
		for (int64_t j = 0; j < numel; j++) {
			if (!t->has_raw_data)
				v->i[j] = dt == DT_INT64 ? t->int64_data[j] : t->int32_data[j];
			else if (dt == DT_INT64)
				v->i[j] = (int64_t)le64(t->raw_data.data + 8 * j);
			else if (dt == DT_INT32)
				v->i[j] = (int32_t)le32(t->raw_data.data + 4 * j);
			else
				v->i[j] = t->raw_data.data[j] != 0;
		}
	}
	return 0;
mismatch:
	return mc_err_set(im->err, MC_ECORRUPT,
			  "%s: %s: dims say %lld values of %d bytes, the data holds %zu; the "
			  "file is corrupt or was cut",
			  im->origin, what, (long long)numel, esz,
			  t->has_raw_data ? t->raw_data.len : have * (size_t)esz);
}

/* Input idx of n, which must be an activation; padded: it may be a Pad's output. */
static int get_act_padded(struct imp *im, const Onnx__NodeProto *n, size_t idx, int padded,
			  struct val **out)
{
	struct val *v = idx < n->n_input ? val_find(im, n->input[idx]) : NULL;

	if (!v)
		return node_err(im, n, MC_EINVAL, "needs input %zu; give it", idx);
	if (v->kind == V_CONST)
		return node_err(im, n, MC_EINVAL,
				"input '%s' is a constant; mcomp computes this op on the "
				"activations of the model input only",
				v->name);
	if (v->kind != V_ACT)
		return node_err(im, n, MC_EINVAL,
				"reads '%s', an output that mcomp does not compute (such as "
				"MaxPool's indices or a training-mode output)",
				v->name);
	if (v->pad && !padded)
		return node_err(im, n, MC_EINVAL,
				"reads '%s', the output of a Pad; mcomp folds a Pad of zeros into "
				"the Conv or AveragePool that reads it only",
				v->name);
	*out = v;
	return 0;
}

static int get_act(struct imp *im, const Onnx__NodeProto *n, size_t idx, struct val **out)
{
	return get_act_padded(im, n, idx, 0, out);
}

/* Input idx of n, which must be a constant of dtype (float, or int64 for
 * integer types); *out is NULL when the input is optional and absent. */
static int get_const(struct imp *im, const Onnx__NodeProto *n, size_t idx, int dtype, int optional,
		     struct val **out)
{
	struct val *v = idx < n->n_input ? val_find(im, n->input[idx]) : NULL;

	*out = NULL;
	if (!v) {
		if (optional)
			return 0;
		return node_err(im, n, MC_EINVAL, "needs input %zu; give it", idx);
	}
	if (v->kind != V_CONST)
		return node_err(im, n, MC_EINVAL,
				"input %zu ('%s') is computed; mcomp reads it only as a constant "
				"(an initializer or a Constant node)",
				idx, v->name);
	if ((dtype == DT_FLOAT && !v->f) || (dtype == DT_INT64 && !v->i))
		return node_err(im, n, MC_EINVAL,
				"input %zu ('%s') is of ONNX data type %d; mcomp reads %s here",
				idx, v->name, v->dtype,
				dtype == DT_FLOAT ? "float (1)" : "int64 (7)");
	*out = v;
	return 0;
}

/* The per-sample mcomp shape of activation v into shape; returns its ndim. */
static int act_shape(struct imp *im, const struct val *v, int64_t *shape)
{
	const struct mc_node *nd;

	if (v->node == MC_NODE_INPUT)
		return mc_model_input_shape(im->m, shape);
	nd = mc_model_node(im->m, v->node);
	memcpy(shape, nd->out_shape, sizeof(nd->out_shape));
	return nd->out_ndim;
}

static const char *act_name(struct imp *im, const struct val *v)
{
	return v->node == MC_NODE_INPUT ? "input" : mc_model_node(im->m, v->node)->name;
}

/* Output idx of n becomes activation node of ONNX rank rank. */
static void set_act(struct imp *im, const Onnx__NodeProto *n, size_t idx, int node, int rank)
{
	struct val *v = idx < n->n_output ? val_find(im, n->output[idx]) : NULL;

	if (v) {
		v->kind = V_ACT;
		v->node = node;
		v->rank = rank;
		v->pad = 0;
	}
}

/* ---------------------------------------------------------------- attributes */

static const Onnx__AttributeProto *attr(const Onnx__NodeProto *n, const char *name)
{
	for (size_t i = 0; i < n->n_attribute; i++)
		if (n->attribute[i]->name && !strcmp(n->attribute[i]->name, name))
			return n->attribute[i];
	return NULL;
}

/* Refuses attributes of n that ops[op] does not read, and malformed ones. */
static int check_attrs(struct imp *im, const Onnx__NodeProto *n, int op)
{
	for (size_t i = 0; i < n->n_attribute; i++) {
		const Onnx__AttributeProto *a = n->attribute[i];
		int known = 0;

		if (!a->name || !*a->name)
			return node_err(im, n, MC_ECORRUPT, "an attribute has no name");
		if (a->ref_attr_name && *a->ref_attr_name)
			return node_err(im, n, MC_EINVAL,
					"attribute '%s' refers to a function's attribute; mcomp "
					"reads plain graphs only",
					a->name);
		for (int j = 0; ops[op].attrs[j]; j++)
			known |= !strcmp(ops[op].attrs[j], a->name);
		if (!known)
			return node_err(im, n, MC_EINVAL,
					"attribute '%s' is not one mcomp reads for %s; export the "
					"model without it",
					a->name, ops[op].type);
	}
	return 0;
}

static int attr_int(struct imp *im, const Onnx__NodeProto *n, const char *name, int64_t def,
		    int64_t *out)
{
	const Onnx__AttributeProto *a = attr(n, name);

	*out = def;
	if (!a)
		return 0;
	if (!a->has_i || (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT))
		return node_err(im, n, MC_ECORRUPT, "attribute '%s' must be an int", name);
	*out = a->i;
	return 0;
}

static int attr_float(struct imp *im, const Onnx__NodeProto *n, const char *name, double def,
		      double *out)
{
	const Onnx__AttributeProto *a = attr(n, name);

	*out = def;
	if (!a)
		return 0;
	if (!a->has_f || (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT))
		return node_err(im, n, MC_ECORRUPT, "attribute '%s' must be a float", name);
	*out = a->f;
	return 0;
}

/* An ints attribute of exactly want values (absent: *out = NULL). */
static int attr_ints(struct imp *im, const Onnx__NodeProto *n, const char *name, size_t want,
		     const int64_t **out)
{
	const Onnx__AttributeProto *a = attr(n, name);

	*out = NULL;
	if (!a)
		return 0;
	if (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS)
		return node_err(im, n, MC_ECORRUPT, "attribute '%s' must be a list of ints", name);
	if (a->n_ints != want)
		return node_err(im, n, MC_EINVAL,
				"attribute '%s' has %zu values; mcomp reads 2-D images, so it "
				"takes %zu",
				name, a->n_ints, want);
	*out = a->ints;
	return 0;
}

/* A string attribute ("" when absent). */
static int attr_str(struct imp *im, const Onnx__NodeProto *n, const char *name, char *buf,
		    size_t len)
{
	const Onnx__AttributeProto *a = attr(n, name);

	buf[0] = 0;
	if (!a)
		return 0;
	if (!a->has_s || (a->has_type && a->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING))
		return node_err(im, n, MC_ECORRUPT, "attribute '%s' must be a string", name);
	snprintf(buf, len, "%.*s", (int)(a->s.len < len ? a->s.len : len - 1),
		 (const char *)a->s.data);
	return 0;
}

/* ---------------------------------------------------------------- adding nodes */

/*
 * The mcomp name of n: "/layer1/conv1/Conv" (PyTorch's way) becomes
 * "layer1_conv1", letters, digits, '_' and '-' kept, the rest '_'; an
 * unnamed node is named after its op; a taken name gets a count.
 */
static void node_name(struct imp *im, const Onnx__NodeProto *n, const char *opname, char *buf,
		      size_t len)
{
	const char *s = str(n->name), *type = str(n->op_type);
	size_t sl, tl = strlen(type), o = 0;
	char base[200];

	while (*s == '/')
		s++;
	sl = strlen(s);
	if (sl > tl + 1 && s[sl - tl - 1] == '/' && !strcmp(s + sl - tl, type))
		sl -= tl + 1;
	for (size_t i = 0; i < sl && o + 1 < sizeof(base); i++) {
		char c = s[i];
		int keep = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			   (c >= '0' && c <= '9') || c == '_' || c == '-';

		base[o++] = keep ? c : '_';
	}
	base[o] = 0;
	if (o) {
		snprintf(buf, len, "%s", base);
		for (int k = 2; !strcmp(buf, "input") || mc_model_find(im->m, buf) >= 0; k++)
			snprintf(buf, len, "%s_%d", base, k);
		return;
	}
	for (int k = 1; k == 1 || mc_model_find(im->m, buf) >= 0; k++)
		snprintf(buf, len, "%s%d", opname, k);
}

/* Appends an mcomp node of opname for ONNX node n reading ins; returns its index. */
static int add(struct imp *im, const Onnx__NodeProto *n, const char *opname, struct val *const *ins,
	       int n_ins, const struct mc_attr *attrs)
{
	const char *names[MC_NODE_MAX_INPUTS + 1];
	char name[256], label[300];
	int r;

	for (int i = 0; i < n_ins; i++)
		names[i] = act_name(im, ins[i]);
	names[n_ins] = NULL;
	node_name(im, n, opname, name, sizeof(name));
	r = mc_model_add_node(im->m, -1, name, opname, names, attrs, im->err);
	if (r < 0) {
		node_label(n, label, sizeof(label));
		mc_err_prefix(im->err, "%s: node %s (%s, opset %d)", im->origin, label,
			      str(n->op_type), im->opset);
	}
	return r;
}

/* Copies count floats into parameter what of mcomp node i. */
static int fill(struct imp *im, int i, const char *what, const float *src, int64_t count)
{
	struct mc_tensor *t = mc_node_param_named(mc_model_node(im->m, i), what);

	if (!t || t->dtype != MC_F32 || t->numel != count)
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: node '%s': parameter '%s' has not "
				  "the %lld values the ONNX weight gives",
				  im->origin, mc_model_node(im->m, i)->name, what,
				  (long long)count);
	memcpy(t->data, src, (size_t)count * sizeof(float));
	return 0;
}

/* ---------------------------------------------------------------- the ops */

/* linear of out features from weight w[out, in] (or its transpose) and bias b (NULL: none),
 * on x of ONNX rank rank: 1 ([N, features]), or 3 for a 1x1 Conv of a [N, C, 1, 1]. */
static int add_linear(struct imp *im, const Onnx__NodeProto *n, struct val *x, int rank,
		      const float *w, int transposed, int64_t in, int64_t out, const struct val *b,
		      int *idx)
{
	struct mc_attr a[] = {MC_ATTR_INT("out", out), MC_ATTR_BOOL("bias", b != NULL),
			      MC_ATTR_END};
	int64_t shape[MC_MAX_DIMS];
	int nd = act_shape(im, x, shape), i;
	struct mc_tensor *wt;
	char buf[128];
	float *dst;

	if (nd != 1 || x->rank != rank || shape[0] != in)
		return node_err(im, n, MC_EINVAL,
				"the weight takes %lld features, the input '%s' has per-sample "
				"shape %s; mcomp reads [N, features] here",
				(long long)in, x->name, mc_shape_text(nd, shape, buf, sizeof(buf)));
	if (out < 1 || out > INT_MAX)
		return node_err(im, n, MC_EINVAL, "%lld output features", (long long)out);
	i = add(im, n, "linear", &x, 1, a);
	if (i < 0)
		return i;
	wt = mc_node_param_named(mc_model_node(im->m, i), "weight");
	if (!wt || wt->numel != in * out)
		return node_err(im, n, MC_EINVAL, "linear weight is not [%lld, %lld]",
				(long long)out, (long long)in);
	dst = wt->data;
	for (int64_t o = 0; o < out; o++)
		for (int64_t k = 0; k < in; k++)
			dst[o * in + k] = transposed ? w[k * out + o] : w[o * in + k];
	if (b) {
		struct mc_tensor *bt = mc_node_param_named(mc_model_node(im->m, i), "bias");

		if (!bt || bt->numel != out)
			return node_err(im, n, MC_EINVAL, "linear bias is not [%lld]",
					(long long)out);
		for (int64_t o = 0; o < out; o++)
			((float *)bt->data)[o] = b->numel == 1 ? b->f[0] : b->f[o];
	}
	*idx = i;
	return 0;
}

/* A bias of out values: [out], [1, out], or one value for all. */
static int bias_fits(const struct val *b, int64_t out)
{
	if (b->numel != out && b->numel != 1)
		return 0;
	for (int d = 0; d + 1 < b->ndim; d++)
		if (b->dims[d] != 1)
			return 0;
	return 1;
}

/* Gemm: Y = A B' + C, A [N, K] and B' = B [K, M] or, transB, B^T with B [M, K]. */
static int map_gemm(struct imp *im, int k, const Onnx__NodeProto *n)
{
	int64_t ta, tb;
	double alpha, beta;
	struct val *x, *w, *c;
	int64_t in, out;
	int r, i;

	if ((r = attr_int(im, n, "transA", 0, &ta)) || (r = attr_int(im, n, "transB", 0, &tb)) ||
	    (r = attr_float(im, n, "alpha", 1, &alpha)) ||
	    (r = attr_float(im, n, "beta", 1, &beta)))
		return r;
	if (ta)
		return node_err(im, n, MC_EINVAL,
				"transA=%lld: mcomp reads Gemm with the activation as A [N, K] "
				"(transA=0) only",
				(long long)ta);
	if (alpha != 1 || (beta != 1 && n->n_input > 2 && *str(n->input[2])))
		return node_err(im, n, MC_EINVAL,
				"alpha=%g, beta=%g: mcomp reads Gemm with alpha = beta = 1 only; "
				"fold the scales into the weights before exporting",
				alpha, beta);
	if ((r = get_act(im, n, 0, &x)) || (r = get_const(im, n, 1, DT_FLOAT, 0, &w)) ||
	    (r = get_const(im, n, 2, DT_FLOAT, 1, &c)))
		return r;
	if (w->ndim != 2)
		return node_err(im, n, MC_EINVAL, "B ('%s') has %d dimensions, not 2", w->name,
				w->ndim);
	in = tb ? w->dims[1] : w->dims[0];
	out = tb ? w->dims[0] : w->dims[1];
	if (c && !bias_fits(c, out))
		return node_err(im, n, MC_EINVAL,
				"C ('%s') has %lld values; mcomp reads a bias of %lld (or one) "
				"added to every sample",
				c->name, (long long)c->numel, (long long)out);
	r = add_linear(im, n, x, 1, w->f, !tb, in, out, c, &i);
	if (r)
		return r;
	set_act(im, n, 0, i, 1);
	return 0;
}

/* Nonzero when ONNX value name is read by the live node reader only, once,
 * and is not the graph's output. */
static int only_reader(struct imp *im, const char *name, int reader)
{
	int count = 0;

	if (!strcmp(str(im->g->output[0]->name), name))
		return 0;
	for (int j = 0; j < (int)im->g->n_node; j++) {
		const Onnx__NodeProto *o = im->g->node[j];

		if (!im->live[j])
			continue;
		for (size_t q = 0; q < o->n_input; q++)
			if (o->input[q] && !strcmp(o->input[q], name)) {
				if (j != reader)
					return 0;
				count++;
			}
	}
	return count == 1;
}

/* MatMul with a constant B [K, M]; its only reader, an Add of a constant
 * [M], becomes the bias. */
static int map_matmul(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *x, *w, *b = NULL;
	int adder = -1, r, i;

	if ((r = get_act(im, n, 0, &x)) || (r = get_const(im, n, 1, DT_FLOAT, 0, &w)))
		return r;
	if (w->ndim != 2)
		return node_err(im, n, MC_EINVAL,
				"B ('%s') has %d dimensions; mcomp reads MatMul of [N, K] by a "
				"constant [K, M] only",
				w->name, w->ndim);
	if (n->n_output < 1 || !*str(n->output[0]))
		return node_err(im, n, MC_ECORRUPT, "has no output");
	for (int j = 0; j < (int)im->g->n_node; j++) {
		const Onnx__NodeProto *o = im->g->node[j];
		struct val *other;

		if (!im->live[j] || strcmp(str(o->op_type), "Add") || o->n_input != 2 ||
		    !default_domain(o->domain) || !only_reader(im, n->output[0], j))
			continue;
		other = val_find(im, strcmp(str(o->input[0]), n->output[0]) ? o->input[0]
									    : o->input[1]);
		if (other && other->kind == V_CONST && other->f && bias_fits(other, w->dims[1])) {
			adder = j;
			b = other;
		}
	}
	r = add_linear(im, n, x, 1, w->f, 1, w->dims[0], w->dims[1], b, &i);
	if (r)
		return r;
	set_act(im, n, 0, i, 1);
	if (adder >= 0) {
		im->absorbed[adder] = 1;
		set_act(im, im->g->node[adder], 0, i, 1);
	}
	return 0;
}

/*
 * The one padding p of kernel k and stride s that pads, auto_pad or the
 * pads attribute give on all four sides; MC_EINVAL when they differ.
 */
static int sym_pad(struct imp *im, const Onnx__NodeProto *n, int64_t kk, int64_t s, int64_t *p)
{
	const int64_t *pads;
	char ap[32];
	int r;

	if ((r = attr_str(im, n, "auto_pad", ap, sizeof(ap))) ||
	    (r = attr_ints(im, n, "pads", 4, &pads)))
		return r;
	*p = 0;
	if (!*ap || !strcmp(ap, "NOTSET")) {
		if (!pads)
			return 0;
		if (pads[0] != pads[1] || pads[0] != pads[2] || pads[0] != pads[3] || pads[0] < 0)
			return node_err(im, n, MC_EINVAL,
					"pads [%lld, %lld, %lld, %lld]: mcomp pads all four "
					"sides alike; export with symmetric padding",
					(long long)pads[0], (long long)pads[1], (long long)pads[2],
					(long long)pads[3]);
		*p = pads[0];
		return 0;
	}
	if (!strcmp(ap, "VALID"))
		return 0;
	/* SAME_* pads k - 1 in all; the same on both sides when that is even and s is 1 */
	if ((!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER")) && s == 1 && kk % 2 == 1) {
		*p = (kk - 1) / 2;
		return 0;
	}
	return node_err(im, n, MC_EINVAL,
			"auto_pad %s with kernel %lld, stride %lld pads the sides unevenly; "
			"mcomp pads all four sides alike: export with explicit symmetric pads",
			ap, (long long)kk, (long long)s);
}

/* strides or dilations: both the same (def when absent) into *v. */
static int square_attr(struct imp *im, const Onnx__NodeProto *n, const char *name, int64_t def,
		       int64_t *v)
{
	const int64_t *a;
	int r = attr_ints(im, n, name, 2, &a);

	if (r)
		return r;
	*v = a ? a[0] : def;
	if (a && (a[0] != a[1] || a[0] < 1))
		return node_err(im, n, MC_EINVAL,
				"%s [%lld, %lld]: mcomp reads the same %s (at least 1) along "
				"height and width only",
				name, (long long)a[0], (long long)a[1], name);
	return 0;
}

static int need_image(struct imp *im, const Onnx__NodeProto *n, struct val *x, int64_t *shape)
{
	char buf[128];
	int nd = act_shape(im, x, shape);

	if (nd != 3 || x->rank != 3)
		return node_err(im, n, MC_EINVAL,
				"input '%s' has per-sample shape %s; mcomp reads [N, C, H, W] "
				"images here",
				x->name, mc_shape_text(nd, shape, buf, sizeof(buf)));
	return 0;
}

/*
 * A Conv of a global average, [N, C, 1, 1] (mcomp's [C]), as the gate of a
 * squeeze-and-excitation block has: 1x1, group 1 and unpadded, it is a
 * linear of W [O, C, 1, 1] read as [O, C]; its output is [N, O, 1, 1] again.
 */
static int map_conv_pooled(struct imp *im, const Onnx__NodeProto *n, struct val *x)
{
	int64_t shape[MC_MAX_DIMS], group, s, dil, p;
	const int64_t *ks;
	struct val *w, *b;
	int r, i;

	act_shape(im, x, shape);
	if ((r = get_const(im, n, 1, DT_FLOAT, 0, &w)) ||
	    (r = get_const(im, n, 2, DT_FLOAT, 1, &b)) ||
	    (r = attr_int(im, n, "group", 1, &group)) ||
	    (r = attr_ints(im, n, "kernel_shape", 2, &ks)) ||
	    (r = square_attr(im, n, "strides", 1, &s)) ||
	    (r = square_attr(im, n, "dilations", 1, &dil)) || (r = sym_pad(im, n, 1, s, &p)))
		return r;
	if (w->ndim != 4 || w->dims[1] != shape[0] || w->dims[2] != 1 || w->dims[3] != 1 ||
	    (ks && (ks[0] != 1 || ks[1] != 1)) || group != 1 || p)
		return node_err(im, n, MC_EINVAL,
				"reads '%s', a [N, %lld, 1, 1] global average; mcomp reads a Conv "
				"of it as a 1x1 of group 1 without padding only (W [O, %lld, 1, "
				"1])",
				x->name, (long long)shape[0], (long long)shape[0]);
	if (b && (b->ndim != 1 || b->numel != w->dims[0]))
		return node_err(im, n, MC_EINVAL, "B ('%s') has %lld values, not the %lld outputs",
				b->name, (long long)b->numel, (long long)w->dims[0]);
	r = add_linear(im, n, x, 3, w->f, 0, w->dims[1], w->dims[0], b, &i);
	if (r)
		return r;
	set_act(im, n, 0, i, 3);
	return 0;
}

static int map_conv(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *x, *w, *b;
	int64_t shape[MC_MAX_DIMS], group, s, dil, p, kk;
	const int64_t *ks;
	int r, i;

	if ((r = get_act_padded(im, n, 0, 1, &x)))
		return r;
	if (x->rank == 3 && act_shape(im, x, shape) == 1)
		return map_conv_pooled(im, n, x);
	if ((r = need_image(im, n, x, shape)) || (r = get_const(im, n, 1, DT_FLOAT, 0, &w)) ||
	    (r = get_const(im, n, 2, DT_FLOAT, 1, &b)) ||
	    (r = attr_int(im, n, "group", 1, &group)) ||
	    (r = attr_ints(im, n, "kernel_shape", 2, &ks)) ||
	    (r = square_attr(im, n, "strides", 1, &s)) ||
	    (r = square_attr(im, n, "dilations", 1, &dil)))
		return r;
	if (w->ndim != 4)
		return node_err(im, n, MC_EINVAL,
				"W ('%s') has %d dimensions; mcomp reads 2-D convolutions, W [O, "
				"C/group, kH, kW]",
				w->name, w->ndim);
	kk = w->dims[2];
	if (w->dims[3] != kk || (ks && (ks[0] != kk || ks[1] != kk)))
		return node_err(im, n, MC_EINVAL,
				"kernel %lldx%lld: mcomp reads square kernels only",
				(long long)w->dims[2], (long long)w->dims[3]);
	if (dil != 1)
		return node_err(im, n, MC_EINVAL,
				"dilations %lld: mcomp reads undilated convolutions only",
				(long long)dil);
	if (group < 1 || shape[0] % group || w->dims[0] % group || w->dims[1] * group != shape[0])
		return node_err(im, n, MC_EINVAL,
				"group %lld with W [%lld, %lld, ...] does not fit the %lld input "
				"channels of '%s'",
				(long long)group, (long long)w->dims[0], (long long)w->dims[1],
				(long long)shape[0], x->name);
	if (b && (b->ndim != 1 || b->numel != w->dims[0]))
		return node_err(im, n, MC_EINVAL, "B ('%s') has %lld values, not the %lld outputs",
				b->name, (long long)b->numel, (long long)w->dims[0]);
	if ((r = sym_pad(im, n, kk, s, &p)))
		return r;
	p += x->pad;
	if (kk > 1024 || s > 1024 || p > 1024 || w->dims[0] > INT_MAX || group > INT_MAX)
		return node_err(im, n, MC_EINVAL,
				"kernel %lld, stride %lld, padding %lld: too large", (long long)kk,
				(long long)s, (long long)p);
	{
		struct mc_attr a[] = {MC_ATTR_INT("out", w->dims[0]),
				      MC_ATTR_INT("kernel", kk),
				      MC_ATTR_INT("stride", s),
				      MC_ATTR_INT("padding", p),
				      MC_ATTR_INT("groups", group),
				      MC_ATTR_BOOL("bias", b != NULL),
				      MC_ATTR_END};

		i = add(im, n, "conv2d", &x, 1, a);
	}
	if (i < 0)
		return i;
	/* ONNX's W [O, C/g, kH, kW] is conv2d's weight as it is */
	if ((r = fill(im, i, "weight", w->f, w->numel)) ||
	    (b && (r = fill(im, i, "bias", b->f, b->numel))))
		return r;
	set_act(im, n, 0, i, 3);
	return 0;
}

static int map_batchnorm(struct imp *im, int k, const Onnx__NodeProto *n)
{
	static const char *const what[4] = {"weight", "bias", "running_mean", "running_var"};
	struct val *x, *c[4];
	int64_t shape[MC_MAX_DIMS], training;
	double eps, momentum;
	int r, i;

	if ((r = get_act(im, n, 0, &x)) || (r = attr_int(im, n, "training_mode", 0, &training)) ||
	    (r = attr_float(im, n, "epsilon", 1e-5, &eps)) ||
	    (r = attr_float(im, n, "momentum", 0.9, &momentum)))
		return r;
	if (training)
		return node_err(im, n, MC_EINVAL,
				"training_mode=1: mcomp reads batch norm in inference (the running "
				"statistics); export the model in eval mode");
	act_shape(im, x, shape);
	for (int q = 0; q < 4; q++) {
		if ((r = get_const(im, n, (size_t)q + 1, DT_FLOAT, 0, &c[q])))
			return r;
		if (c[q]->numel != shape[0])
			return node_err(im, n, MC_EINVAL,
					"input %d ('%s') has %lld values for the %lld channels of "
					"'%s'",
					q + 1, c[q]->name, (long long)c[q]->numel,
					(long long)shape[0], x->name);
	}
	/* ONNX's momentum weighs the running value, mcomp's the batch */
	if (momentum < 0 || momentum > 1)
		momentum = 0.9;
	{
		struct mc_attr a[] = {MC_ATTR_FLOAT("momentum", 1 - momentum),
				      MC_ATTR_FLOAT("eps", eps), MC_ATTR_END};

		i = add(im, n, "batchnorm", &x, 1, a);
	}
	if (i < 0)
		return i;
	for (int q = 0; q < 4; q++)
		if ((r = fill(im, i, what[q], c[q]->f, c[q]->numel)))
			return r;
	set_act(im, n, 0, i, x->rank);
	return 0;
}

static int map_pool(struct imp *im, int k, const Onnx__NodeProto *n)
{
	const char *opname = ops[op_index(n->op_type)].mc_op;
	int avg = !strcmp(opname, "avgpool2d");
	int64_t shape[MC_MAX_DIMS], s, dil, p, kk, ceil, cip = 0, order;
	const int64_t *ks;
	struct val *x;
	int r, i;

	if ((r = get_act_padded(im, n, 0, avg, &x)) || (r = need_image(im, n, x, shape)) ||
	    (r = attr_ints(im, n, "kernel_shape", 2, &ks)) ||
	    (r = square_attr(im, n, "strides", 1, &s)) ||
	    (r = square_attr(im, n, "dilations", 1, &dil)) ||
	    (r = attr_int(im, n, "ceil_mode", 0, &ceil)) ||
	    (r = attr_int(im, n, "storage_order", 0, &order)) ||
	    (avg && (r = attr_int(im, n, "count_include_pad", 0, &cip))))
		return r;
	if (!ks)
		return node_err(im, n, MC_ECORRUPT, "kernel_shape is missing");
	kk = ks[0];
	if (ks[1] != kk || kk < 1 || kk > 1024 || s > 1024)
		return node_err(im, n, MC_EINVAL,
				"kernel_shape [%lld, %lld]: mcomp reads square kernels of 1 to "
				"1024 only",
				(long long)ks[0], (long long)ks[1]);
	if (dil != 1)
		return node_err(im, n, MC_EINVAL,
				"dilations %lld: mcomp pools undilated windows only",
				(long long)dil);
	if ((r = sym_pad(im, n, kk, s, &p)))
		return r;
	/* mcomp's average counts the padding as zeros: count_include_pad=1 */
	if (avg && p && !cip)
		return node_err(im, n, MC_EINVAL,
				"count_include_pad=0 with pads %lld: mcomp's avgpool2d counts the "
				"padding as zeros in the mean (count_include_pad=1, PyTorch's "
				"default); export with that or without padding",
				(long long)p);
	p += x->pad; /* a Pad of zeros before: zeros counted in the mean */
	/* ceil_mode adds a last, partial window unless the windows tile exactly */
	if (ceil && ((shape[1] + 2 * p - kk) % s || (shape[2] + 2 * p - kk) % s))
		return node_err(im, n, MC_EINVAL,
				"ceil_mode=1 adds partial windows at the border here; mcomp pools "
				"whole windows only (ceil_mode=0)");
	{
		struct mc_attr a[] = {MC_ATTR_INT("kernel", kk), MC_ATTR_INT("stride", s),
				      MC_ATTR_INT("padding", p), MC_ATTR_END};

		i = add(im, n, opname, &x, 1, a);
	}
	if (i < 0)
		return i;
	set_act(im, n, 0, i, 3);
	return 0;
}

/* Relu, Sigmoid, HardSwish, GlobalAveragePool: one mcomp op of no attributes. */
static int map_unary(struct imp *im, int k, const Onnx__NodeProto *n)
{
	const char *opname = ops[op_index(n->op_type)].mc_op;
	int gap = !strcmp(opname, "global_avgpool");
	int64_t shape[MC_MAX_DIMS];
	struct val *x;
	int r, i;

	if (!strcmp(opname, "hardswish") && im->opset < 14)
		return node_err(im, n, MC_EINVAL,
				"HardSwish is an op of opset 14 and later; the file is not valid "
				"ONNX of its opset");
	if ((r = get_act(im, n, 0, &x)) || (gap && (r = need_image(im, n, x, shape))))
		return r;
	i = add(im, n, opname, &x, 1, NULL);
	if (i < 0)
		return i;
	/* global_avgpool gives [C] for ONNX's [C, 1, 1] */
	set_act(im, n, 0, i, x->rank);
	return 0;
}

/* LeakyRelu (alpha 0.01), HardSigmoid (alpha 0.2, beta 0.5): their float attributes as they are. */
static int map_act(struct imp *im, int k, const Onnx__NodeProto *n)
{
	const char *opname = ops[op_index(n->op_type)].mc_op;
	int hsig = !strcmp(opname, "hardsigmoid");
	double alpha, beta = 0.5;
	struct val *x;
	int r, i;

	if ((r = get_act(im, n, 0, &x)) ||
	    (r = attr_float(im, n, "alpha", hsig ? 0.2f : 0.01f, &alpha)) ||
	    (hsig && (r = attr_float(im, n, "beta", 0.5f, &beta))))
		return r;
	{
		struct mc_attr a[] = {MC_ATTR_FLOAT("alpha", alpha), MC_ATTR_FLOAT("beta", beta),
				      MC_ATTR_END};

		if (!hsig)
			a[1] = (struct mc_attr)MC_ATTR_END;
		i = add(im, n, opname, &x, 1, a);
	}
	if (i < 0)
		return i;
	set_act(im, n, 0, i, x->rank);
	return 0;
}

/*
 * Clip: bounds from the attributes min and max before opset 11, from the
 * optional constant inputs 1 and 2 since; a bound left out is float's
 * lowest or highest, as in ONNX.
 */
static int map_clip(struct imp *im, int k, const Onnx__NodeProto *n)
{
	double lo = -FLT_MAX, hi = FLT_MAX;
	struct val *x, *b[2];
	int r, i;

	if ((r = get_act(im, n, 0, &x)))
		return r;
	if (im->opset < 11) {
		if (n->n_input > 1)
			return node_err(im, n, MC_EINVAL,
					"has %zu inputs; before opset 11 Clip's bounds are the "
					"attributes min and max",
					n->n_input);
		if ((r = attr_float(im, n, "min", -FLT_MAX, &lo)) ||
		    (r = attr_float(im, n, "max", FLT_MAX, &hi)))
			return r;
	} else {
		if (n->n_attribute)
			return node_err(im, n, MC_EINVAL,
					"has attribute '%s'; since opset 11 Clip's bounds are "
					"inputs 1 and 2",
					n->attribute[0]->name);
		for (size_t q = 0; q < 2; q++) {
			if ((r = get_const(im, n, q + 1, DT_FLOAT, 1, &b[q])))
				return r;
			if (b[q] && b[q]->numel != 1)
				return node_err(im, n, MC_EINVAL,
						"%s ('%s') has %lld values; Clip's bounds are "
						"scalars",
						q ? "max" : "min", b[q]->name,
						(long long)b[q]->numel);
		}
		if (b[0])
			lo = b[0]->f[0];
		if (b[1])
			hi = b[1]->f[0];
	}
	{
		struct mc_attr a[] = {MC_ATTR_FLOAT("min", lo), MC_ATTR_FLOAT("max", hi),
				      MC_ATTR_END};

		i = add(im, n, "clip", &x, 1, a);
	}
	if (i < 0)
		return i;
	set_act(im, n, 0, i, x->rank);
	return 0;
}

/* The ONNX per-sample shape of activation v: its mcomp shape, or [C, 1, 1] for
 * a global average (mcomp's [C]); returns the rank, -1 when neither. */
static int onnx_shape(struct imp *im, const struct val *v, int64_t *shape)
{
	int nd = act_shape(im, v, shape);

	if (nd == v->rank)
		return nd;
	if (nd == 1 && v->rank == 3) {
		shape[1] = shape[2] = 1;
		return 3;
	}
	return -1;
}

/*
 * Mul of two activations, as NumPy broadcasts them with mcomp's mul: of
 * one shape (mcomp shapes may differ where one is a global average: the
 * one of more dimensions goes first), or one [N, C, 1, ..., 1] (a
 * squeeze-and-excitation gate) times an [N, C, ...] in either order.
 */
static int map_mul(struct imp *im, int k, const Onnx__NodeProto *n)
{
	int64_t s[2][MC_MAX_DIMS], ms[2][MC_MAX_DIMS];
	struct val *in[2], *t;
	int nd[2], r, i, ones[2] = {1, 1};
	char a[128], b[128];

	for (size_t q = 0; q < 2; q++) {
		struct val *v = q < n->n_input ? val_find(im, n->input[q]) : NULL;

		if (v && v->kind == V_CONST)
			return node_err(im, n, MC_EINVAL,
					"multiplies by the constant '%s'; mcomp reads Mul of two "
					"activations only (a gate, as in squeeze-and-excitation)",
					v->name);
		if ((r = get_act(im, n, q, &in[q])))
			return r;
		nd[q] = onnx_shape(im, in[q], s[q]);
		for (int d = 1; d < nd[q]; d++)
			ones[q] &= s[q][d] == 1;
	}
	if (nd[0] < 0 || nd[1] < 0 || nd[0] != nd[1] ||
	    (memcmp(s[0], s[1], (size_t)nd[0] * sizeof(int64_t)) &&
	     (s[0][0] != s[1][0] || (!ones[0] && !ones[1]))))
		return node_err(
		    im, n, MC_EINVAL,
		    "multiplies '%s' %s by '%s' %s; mcomp reads Mul of two [N, ...] of "
		    "one shape, or of [N, C, ...] by [N, C, 1, ..., 1] only",
		    in[0]->name, nd[0] < 0 ? "?" : mc_shape_text(nd[0], s[0], a, sizeof(a)),
		    in[1]->name, nd[1] < 0 ? "?" : mc_shape_text(nd[1], s[1], b, sizeof(b)));
	/* the one broadcast (or of fewer mcomp dimensions) second */
	if (act_shape(im, in[0], ms[0]) < act_shape(im, in[1], ms[1]) || (ones[0] && !ones[1])) {
		t = in[0];
		in[0] = in[1];
		in[1] = t;
	}
	i = add(im, n, "mul", in, 2, NULL);
	if (i < 0)
		return i;
	set_act(im, n, 0, i, in[0]->rank);
	return 0;
}

/* A flatten of x, or x itself when it is one dimension already. */
static int flatten(struct imp *im, const Onnx__NodeProto *n, struct val *x)
{
	int64_t shape[MC_MAX_DIMS];
	int i = x->node;

	if (act_shape(im, x, shape) != 1) {
		i = add(im, n, "flatten", &x, 1, NULL);
		if (i < 0)
			return i;
	}
	set_act(im, n, 0, i, 1);
	return 0;
}

static int map_flatten(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *x;
	int64_t axis;
	int r;

	if ((r = get_act(im, n, 0, &x)) || (r = attr_int(im, n, "axis", 1, &axis)))
		return r;
	if (axis < 0)
		axis += x->rank + 1;
	if (axis != 1)
		return node_err(im, n, MC_EINVAL,
				"axis %lld: mcomp flattens each sample (axis 1) only",
				(long long)axis);
	return flatten(im, n, x);
}

/* Reshape's shape sh takes x, [N, C] (mcomp [C]), to [N, C, 1, 1]. */
static int is_gate_shape(const struct val *sh, const struct val *x, int nd, int64_t c,
			 int64_t allowzero, int64_t batch)
{
	int n_ok = (sh->i[0] == 0 && !allowzero) || (sh->i[0] == -1 && sh->i[1] != -1) ||
		   (sh->i[0] > 0 && sh->i[0] == batch);

	if (x->rank != 1 || nd != 1 || sh->numel != 4 || !n_ok || (sh->i[1] != c && sh->i[1] != -1))
		return 0;
	for (int64_t d = 2; d < sh->numel; d++)
		if (sh->i[d] != 1)
			return 0;
	return 1;
}

/* Reshape to [N, -1] (or [N, features]) flattens each sample. */
static int map_reshape(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *x, *sh;
	int64_t shape[MC_MAX_DIMS], numel = 1, allowzero, batch = 0;
	const Onnx__ValueInfoProto *in = NULL;
	int r, nd;

	if ((r = get_act(im, n, 0, &x)) || (r = get_const(im, n, 1, DT_INT64, 0, &sh)) ||
	    (r = attr_int(im, n, "allowzero", 0, &allowzero)))
		return r;
	nd = act_shape(im, x, shape);
	for (int d = 0; d < nd; d++)
		numel *= shape[d];
	/* the batch size, where the model input fixes it */
	for (size_t j = 0; j < im->g->n_input; j++)
		if (val_find(im, im->g->input[j]->name)->kind == V_ACT)
			in = im->g->input[j];
	if (in && in->type->tensor_type->shape->dim[0]->value_case ==
		      ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
		batch = in->type->tensor_type->shape->dim[0]->dim_value;
	if (sh->numel == 2 && (sh->i[1] == -1 || sh->i[1] == numel) &&
	    ((sh->i[0] == 0 && !allowzero) || (sh->i[0] == -1 && sh->i[1] != -1) ||
	     (sh->i[0] > 0 && sh->i[0] == batch)))
		return flatten(im, n, x);
	if (is_gate_shape(sh, x, nd, shape[0], allowzero, batch)) {
		/* [N, C] as [N, C, 1, ..., 1]: the same values, a Mul gate (mcomp's mul export) */
		set_act(im, n, 0, x->node, (int)sh->numel - 1);
		return 0;
	}
	return node_err(im, n, MC_EINVAL,
			"shape '%s' (%lld values) is not [N, -1]: mcomp reads Reshape as "
			"flattening each sample only (shape [0, -1], [-1, %lld], or the fixed "
			"batch size and -1), or as [N, C] to [N, C, 1, 1] (a gate for Mul)",
			sh->name, (long long)sh->numel, (long long)numel);
}

static int map_add(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *in[2];
	int r, i;

	for (size_t q = 0; q < 2; q++) {
		struct val *v = q < n->n_input ? val_find(im, n->input[q]) : NULL;

		if (v && v->kind == V_CONST)
			return node_err(im, n, MC_EINVAL,
					"adds the constant '%s'; mcomp reads Add of two "
					"activations (a residual), or of a bias right after a "
					"MatMul",
					v->name);
		if ((r = get_act(im, n, q, &in[q])))
			return r;
	}
	if (in[0]->rank != in[1]->rank)
		return node_err(im, n, MC_EINVAL, "adds '%s' and '%s' of different ranks",
				in[0]->name, in[1]->name);
	i = add(im, n, "add", in, 2, NULL);
	if (i < 0)
		return i;
	set_act(im, n, 0, i, in[0]->rank);
	return 0;
}

static int map_softmax(struct imp *im, int k, const Onnx__NodeProto *n)
{
	const char *opname = ops[op_index(n->op_type)].mc_op;
	int64_t shape[MC_MAX_DIMS], axis;
	struct val *x;
	int r, i;

	/* opset 13 made the last axis the default; before, axis 1 of [N, D] */
	if ((r = get_act(im, n, 0, &x)) ||
	    (r = attr_int(im, n, "axis", im->opset >= 13 ? -1 : 1, &axis)))
		return r;
	if (axis < 0)
		axis += x->rank + 1;
	if (axis != x->rank || act_shape(im, x, shape) != x->rank)
		return node_err(im, n, MC_EINVAL,
				"axis %lld of a rank-%d input: mcomp computes %s over the last "
				"axis only",
				(long long)axis, x->rank + 1, n->op_type);
	i = add(im, n, opname, &x, 1, NULL);
	if (i < 0)
		return i;
	set_act(im, n, 0, i, x->rank);
	return 0;
}

/*
 * Pad of zeros around each image, the same on all four sides (PyTorch
 * exports AvgPool2d's padding so): the Conv or AveragePool reading it pads
 * that much more.
 */
static int map_pad(struct imp *im, int k, const Onnx__NodeProto *n)
{
	int64_t shape[MC_MAX_DIMS];
	const int64_t *pads;
	struct val *x, *pv, *cv;
	double value = 0;
	char mode[32];
	int r;

	if ((r = get_act(im, n, 0, &x)) || (r = need_image(im, n, x, shape)) ||
	    (r = attr_str(im, n, "mode", mode, sizeof(mode))))
		return r;
	if (*mode && strcmp(mode, "constant"))
		return node_err(im, n, MC_EINVAL,
				"mode '%s': mcomp pads with zeros only (mode 'constant')", mode);
	if (im->opset < 11) {
		if ((r = attr_ints(im, n, "pads", 8, &pads)) ||
		    (r = attr_float(im, n, "value", 0, &value)))
			return r;
		if (!pads)
			return node_err(im, n, MC_ECORRUPT, "pads is missing");
	} else {
		if ((r = get_const(im, n, 1, DT_INT64, 0, &pv)) ||
		    (r = get_const(im, n, 2, DT_FLOAT, 1, &cv)))
			return r;
		if (n->n_input > 3 && *str(n->input[3]))
			return node_err(im, n, MC_EINVAL,
					"axes is given; mcomp reads Pad of all four axes only");
		if (pv->numel != 8)
			return node_err(
			    im, n, MC_EINVAL,
			    "pads ('%s') has %lld values; mcomp pads [N, C, H, W] images "
			    "(8 values)",
			    pv->name, (long long)pv->numel);
		if (cv && cv->numel != 1)
			return node_err(im, n, MC_EINVAL,
					"constant_value ('%s') has %lld values, not one", cv->name,
					(long long)cv->numel);
		if (cv)
			value = cv->f[0];
		pads = pv->i;
	}
	if (value != 0)
		return node_err(im, n, MC_EINVAL,
				"pads with the value %g; mcomp pads with zeros only", value);
	if (pads[0] || pads[1] || pads[4] || pads[5] || pads[2] != pads[3] || pads[2] != pads[6] ||
	    pads[2] != pads[7] || pads[2] < 0 || pads[2] > 1024)
		return node_err(im, n, MC_EINVAL,
				"pads [%lld, %lld, %lld, %lld, %lld, %lld, %lld, %lld]: mcomp pads "
				"height and width alike on all sides (and not N or C) only",
				(long long)pads[0], (long long)pads[1], (long long)pads[2],
				(long long)pads[3], (long long)pads[4], (long long)pads[5],
				(long long)pads[6], (long long)pads[7]);
	set_act(im, n, 0, x->node, 3);
	val_find(im, n->output[0])->pad = (int)pads[2];
	return 0;
}

/* Identity, and Dropout (inference: the identity; its mask is not computed). */
static int map_alias(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *x, *mode;
	int r;

	if ((r = get_act(im, n, 0, &x)))
		return r;
	if (!strcmp(n->op_type, "Dropout") && n->n_input > 2 && *str(n->input[2])) {
		if ((r = get_const(im, n, 2, DT_INT64, 0, &mode)))
			return r;
		if (mode->numel != 1 || mode->i[0])
			return node_err(im, n, MC_EINVAL,
					"training_mode is true; mcomp reads dropout in inference "
					"only: export the model in eval mode");
	}
	set_act(im, n, 0, x->node, x->rank);
	return 0;
}

/* Constant: its value becomes a constant of the graph. */
static int map_constant(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *v = n->n_output ? val_find(im, n->output[0]) : NULL;
	const Onnx__AttributeProto *a;
	char what[300];

	if (!v || n->n_attribute != 1)
		return node_err(im, n, MC_ECORRUPT, "needs one output and one value attribute");
	a = n->attribute[0];
	snprintf(what, sizeof(what), "Constant '%s'", v->name);
	if (!strcmp(a->name, "value")) {
		if (!a->t)
			return node_err(im, n, MC_ECORRUPT, "value is not a tensor");
		return const_from_tensor(im, v, a->t, what);
	}
	v->kind = V_CONST;
	if (!strcmp(a->name, "value_float") || !strcmp(a->name, "value_floats")) {
		int one = !strcmp(a->name, "value_float");

		v->numel = one ? 1 : (int64_t)a->n_floats;
		v->ndim = !one;
		v->dims[0] = v->numel;
		v->dtype = DT_FLOAT;
		v->f = malloc((size_t)(v->numel ? v->numel : 1) * sizeof(float));
		if (!v->f)
			return mc_err_set(im->err, MC_ENOMEM, "%s: out of memory", im->origin);
		if (one)
			v->f[0] = a->f;
		else if (v->numel)
			memcpy(v->f, a->floats, (size_t)v->numel * sizeof(float));
	} else {
		int one = !strcmp(a->name, "value_int");

		v->numel = one ? 1 : (int64_t)a->n_ints;
		v->ndim = !one;
		v->dims[0] = v->numel;
		v->dtype = DT_INT64;
		v->i = malloc((size_t)(v->numel ? v->numel : 1) * sizeof(int64_t));
		if (!v->i)
			return mc_err_set(im->err, MC_ENOMEM, "%s: out of memory", im->origin);
		if (one)
			v->i[0] = a->i;
		else if (v->numel)
			memcpy(v->i, a->ints, (size_t)v->numel * sizeof(int64_t));
	}
	return 0;
}

/* ---------------------------------------------------------------- the graph */

static int unsupported(struct imp *im, const Onnx__NodeProto *n)
{
	char list[512] = "", label[300];

	for (int i = 0; i < N_OPS; i++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "",
			 ops[i].type);
	node_label(n, label, sizeof(label));
	if (!default_domain(n->domain))
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: node %s (%s of domain '%s', opset %d): mcomp does not read "
				  "ops of other domains; the ops it reads are %s",
				  im->origin, label, str(n->op_type), n->domain, im->opset, list);
	return mc_err_set(im->err, MC_EINVAL,
			  "%s: node %s (%s, opset %d): mcomp has no op for %s; the ops it reads "
			  "are %s",
			  im->origin, label, str(n->op_type), im->opset, str(n->op_type), list);
}

/* The default domain's opset. */
static int find_opset(struct imp *im, const Onnx__ModelProto *mp)
{
	int64_t v = -1;

	for (size_t i = 0; i < mp->n_opset_import; i++)
		if (default_domain(mp->opset_import[i]->domain) && mp->opset_import[i]->has_version)
			v = mp->opset_import[i]->version;
	if (v < 0)
		return mc_err_set(im->err, MC_ECORRUPT,
				  "%s: imports no opset of the default ONNX domain; the file is "
				  "corrupt or not an ONNX model",
				  im->origin);
	if (v < OPSET_MIN || v > OPSET_MAX)
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: opset %lld; mcomp reads opsets %d to %d: convert the model "
				  "(onnx.version_converter.convert_version(model, 17))",
				  im->origin, (long long)v, OPSET_MIN, OPSET_MAX);
	im->opset = (int)v;
	return 0;
}

/* The one graph input that is not an initializer: a float tensor [N, ...]. */
static int model_input(struct imp *im, int64_t *shape, int *ndim)
{
	const Onnx__ValueInfoProto *in = NULL;
	const Onnx__TensorShapeProto *sh;
	const Onnx__TypeProto *tp;
	struct val *v;
	int count = 0;

	for (size_t j = 0; j < im->g->n_input; j++) {
		const char *name = im->g->input[j]->name;

		if (!name || !*name)
			return mc_err_set(im->err, MC_ECORRUPT, "%s: graph input %zu has no name",
					  im->origin, j);
		if (val_find(im, name))
			continue; /* an initializer, listed as an input too (IR < 4) */
		in = im->g->input[j];
		count++;
	}
	if (count != 1)
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: the graph has %d inputs besides its initializers; mcomp "
				  "reads models of one input",
				  im->origin, count);
	tp = in->type;
	if (!tp || tp->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !tp->tensor_type ||
	    !tp->tensor_type->has_elem_type || tp->tensor_type->elem_type != DT_FLOAT)
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: input '%s' is not a float tensor; mcomp reads float inputs",
				  im->origin, in->name);
	sh = tp->tensor_type->shape;
	if (!sh || sh->n_dim < 2 || sh->n_dim > MC_MAX_DIMS)
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: input '%s' has %s %zu dimensions; mcomp reads [N, features] "
				  "or [N, C, H, W] with the sizes given",
				  im->origin, in->name, sh ? "" : "no shape, so",
				  sh ? sh->n_dim : 0);
	for (size_t d = 0; d < sh->n_dim; d++) {
		const Onnx__TensorShapeProto__Dimension *dim = sh->dim[d];
		int fixed = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;

		if (fixed && (dim->dim_value < 1 || dim->dim_value > INPUT_DIM_MAX))
			return mc_err_set(im->err, MC_EINVAL,
					  "%s: input '%s': dimension %zu is %lld; mcomp reads "
					  "sizes of 1 to %lld",
					  im->origin, in->name, d, (long long)dim->dim_value,
					  (long long)INPUT_DIM_MAX);
		if (d > 0 && !fixed)
			return mc_err_set(
			    im->err, MC_EINVAL,
			    "%s: input '%s': dimension %zu is %s; mcomp needs every "
			    "size but the batch's fixed: export with a fixed sample "
			    "shape",
			    im->origin, in->name, d,
			    dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM
				? "symbolic"
				: "not given");
		if (d > 0)
			shape[d - 1] = dim->dim_value;
	}
	*ndim = (int)sh->n_dim - 1;
	v = val_new(im, in->name, -1, "the graph input");
	if (!v)
		return MC_ECORRUPT;
	v->kind = V_ACT;
	v->node = MC_NODE_INPUT;
	v->rank = *ndim;
	return 0;
}

/* Every value: initializers, the input, every node's outputs; then checks
 * that every name a node reads is one of them. */
static int collect_values(struct imp *im, int64_t *in_shape, int *in_ndim)
{
	Onnx__GraphProto *g = im->g;
	size_t cap = g->n_initializer + g->n_input + 1, hsize;
	char what[300];
	int r;

	for (size_t k = 0; k < g->n_node; k++) {
		if (g->node[k]->n_output > SIZE_MAX / 2 - cap)
			return mc_err_set(im->err, MC_ENOMEM, "%s: out of memory", im->origin);
		cap += g->node[k]->n_output;
	}
	for (hsize = 16; hsize < 2 * cap; hsize *= 2)
		if (hsize > SIZE_MAX / 4 / sizeof(int))
			return mc_err_set(im->err, MC_ENOMEM, "%s: out of memory", im->origin);
	if (hsize > INT_MAX / 2)
		return mc_err_set(im->err, MC_EINVAL, "%s: more than %d values", im->origin,
				  INT_MAX / 4);
	im->v = calloc(cap, sizeof(*im->v));
	im->htab = malloc(hsize * sizeof(int));
	if (!im->v || !im->htab)
		return mc_err_set(im->err, MC_ENOMEM, "%s: out of memory", im->origin);
	memset(im->htab, 0xff, hsize * sizeof(int)); /* -1: empty */
	im->hmask = (int)hsize - 1;
	if (g->n_sparse_initializer)
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: the graph has sparse initializers; mcomp reads dense "
				  "weights only",
				  im->origin);
	for (size_t j = 0; j < g->n_initializer; j++) {
		const Onnx__TensorProto *t = g->initializer[j];
		struct val *v;

		if (!t->name || !*t->name)
			return mc_err_set(im->err, MC_ECORRUPT, "%s: initializer %zu has no name",
					  im->origin, j);
		snprintf(what, sizeof(what), "initializer '%s'", t->name);
		v = val_new(im, t->name, -1, what);
		if (!v)
			return MC_ECORRUPT;
		if ((r = const_from_tensor(im, v, t, what)))
			return r;
	}
	if ((r = model_input(im, in_shape, in_ndim)))
		return r;
	for (size_t k = 0; k < g->n_node; k++) {
		const Onnx__NodeProto *n = g->node[k];

		for (size_t o = 0; o < n->n_output; o++) {
			if (!n->output[o] || !*n->output[o])
				continue; /* an optional output left out */
			snprintf(what, sizeof(what), "output %zu of node '%s'", o, str(n->name));
			if (!val_new(im, n->output[o], (int)k, what))
				return MC_ECORRUPT;
		}
	}
	for (size_t k = 0; k < g->n_node; k++) {
		const Onnx__NodeProto *n = g->node[k];

		for (size_t q = 0; q < n->n_input; q++)
			if (n->input[q] && *n->input[q] && !val_find(im, n->input[q]))
				return node_err(im, n, MC_ECORRUPT,
						"reads '%s', which no node, initializer or graph "
						"input defines; the file is corrupt",
						n->input[q]);
	}
	if (g->n_output != 1 || !g->output[0]->name)
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: the graph has %zu outputs; mcomp reads models of one output",
				  im->origin, g->n_output);
	if (!val_find(im, g->output[0]->name))
		return mc_err_set(im->err, MC_ECORRUPT,
				  "%s: the graph output '%s' is defined by no node; the file is "
				  "corrupt",
				  im->origin, g->output[0]->name);
	return 0;
}

/* The ONNX node that writes input q of n, or -1. */
static int producer_of(struct imp *im, const Onnx__NodeProto *n, size_t q)
{
	struct val *v = val_find(im, n->input[q]);

	return v ? v->producer : -1;
}

/*
 * The nodes the output depends on (live), in an order where each comes
 * after what it reads: Constant nodes first, then a depth-first order (the
 * file's own when it is topological, as ONNX asks). A cycle anywhere
 * is MC_ECORRUPT naming one of its nodes.
 */
static int plan(struct imp *im)
{
	int nn = (int)im->g->n_node, sp = 0, nc = 0, r = 0;
	size_t *next = NULL; /* depth-first: the next input to visit of each node */
	int *stack = NULL;
	char *state = NULL; /* 0 unvisited, 1 on the stack, 2 done */
	struct val *out;

	im->live = calloc((size_t)nn + 1, 1);
	im->absorbed = calloc((size_t)nn + 1, 1);
	im->order = calloc((size_t)nn + 1, sizeof(int));
	stack = calloc((size_t)nn + 1, sizeof(int));
	next = calloc((size_t)nn + 1, sizeof(size_t));
	state = calloc((size_t)nn + 1, 1);
	if (!im->live || !im->absorbed || !im->order || !stack || !next || !state) {
		r = mc_err_set(im->err, MC_ENOMEM, "%s: out of memory", im->origin);
		goto out;
	}
	/* live: backwards from the output */
	out = val_find(im, im->g->output[0]->name);
	if (out->producer >= 0) {
		im->live[out->producer] = 1;
		stack[sp++] = out->producer;
	}
	while (sp) {
		const Onnx__NodeProto *n = im->g->node[stack[--sp]];

		for (size_t q = 0; q < n->n_input; q++) {
			int p = producer_of(im, n, q);

			if (p >= 0 && !im->live[p]) {
				im->live[p] = 1;
				stack[sp++] = p;
			}
		}
	}
	/* a post-order depth-first walk from every node: each after its inputs */
	for (int k0 = 0; k0 < nn; k0++) {
		if (state[k0])
			continue;
		stack[sp++] = k0;
		state[k0] = 1;
		while (sp) {
			int k = stack[sp - 1], p = -1;
			const Onnx__NodeProto *n = im->g->node[k];

			while (next[k] < n->n_input && p < 0) {
				p = producer_of(im, n, next[k]++);
				if (p >= 0 && state[p] == 2)
					p = -1;
			}
			if (p >= 0 && state[p] == 1) {
				r = node_err(im, im->g->node[p], MC_ECORRUPT,
					     "is part of a cycle (it depends on its own output); "
					     "ONNX graphs are acyclic, so the file is corrupt");
				goto out;
			}
			if (p >= 0) {
				state[p] = 1;
				stack[sp++] = p;
				continue;
			}
			state[k] = 2;
			sp--;
			if (im->live[k] && strcmp(str(n->op_type), "Constant"))
				im->order[im->n_order++] = k;
		}
	}
	/* Constant nodes read nothing: first, so that a MatMul sees its bias */
	for (int k = 0; k < nn; k++)
		nc += im->live[k] && !strcmp(str(im->g->node[k]->op_type), "Constant");
	memmove(im->order + nc, im->order, (size_t)im->n_order * sizeof(int));
	for (int k = 0, c = 0; k < nn; k++)
		if (im->live[k] && !strcmp(str(im->g->node[k]->op_type), "Constant"))
			im->order[c++] = k;
	im->n_order += nc;
out:
	free(stack);
	free(next);
	free(state);
	return r;
}

static int build(struct imp *im, const int64_t *in_shape, int in_ndim)
{
	struct val *out;
	int r;

	im->m = mc_model_new(in_ndim, in_shape, im->err);
	if (!im->m)
		return mc_err_prefix(im->err, "%s: input", im->origin);
	for (int j = 0; j < im->n_order; j++) {
		int k = im->order[j];
		const Onnx__NodeProto *n = im->g->node[k];

		if (im->absorbed[k])
			continue;
		r = ops[op_index(n->op_type)].map(im, k, n);
		if (r)
			return r;
	}
	out = val_find(im, im->g->output[0]->name);
	if (out->kind != V_ACT || out->node == MC_NODE_INPUT || out->pad ||
	    out->node != mc_model_n_nodes(im->m) - 1)
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: the graph output '%s' is %s; mcomp needs a model whose "
				  "output is computed from its input",
				  im->origin, out->name,
				  out->kind == V_CONST ? "a constant"
				  : out->pad	       ? "the output of a Pad"
						       : "the input itself");
	return 0;
}

MC_API struct mc_model *mc_model_from_onnx_buf(const void *buf, size_t len, const char *origin,
					       struct mc_err *err)
{
	struct imp im = {.origin = origin ? origin : "ONNX model", .err = err};
	Onnx__ModelProto *mp;
	int64_t in_shape[MC_MAX_DIMS];
	int in_ndim = 0, r;

	mp = onnx__model_proto__unpack(NULL, len, buf);
	if (!mp) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: not an ONNX model: the protobuf does not parse (the file is "
			   "truncated, corrupt, or of another format)",
			   im.origin);
		return NULL;
	}
	im.g = mp->graph;
	r = find_opset(&im, mp);
	if (!r && !im.g)
		r = mc_err_set(err, MC_ECORRUPT, "%s: the model has no graph", im.origin);
	/* every op known and its attributes read, before anything else */
	for (size_t k = 0; !r && k < im.g->n_node; k++) {
		const Onnx__NodeProto *n = im.g->node[k];
		int op = default_domain(n->domain) ? op_index(n->op_type) : -1;

		r = op < 0 ? unsupported(&im, n) : check_attrs(&im, n, op);
	}
	if (!r)
		r = collect_values(&im, in_shape, &in_ndim);
	if (!r)
		r = plan(&im);
	if (!r)
		r = build(&im, in_shape, in_ndim);
	if (r) {
		mc_model_free(im.m);
		im.m = NULL;
	}
	for (int i = 0; i < im.nv; i++) {
		free(im.v[i].f);
		free(im.v[i].i);
	}
	free(im.v);
	free(im.htab);
	free(im.order);
	free(im.live);
	free(im.absorbed);
	onnx__model_proto__free_unpacked(mp, NULL);
	return im.m;
}

MC_API struct mc_model *mc_model_from_onnx(const char *path, struct mc_err *err)
{
	struct mc_model *m;
	void *buf;
	size_t len;

	if (mc_read_file(path, FILE_MAX, &buf, &len, err))
		return NULL;
	m = mc_model_from_onnx_buf(buf, len, path, err);
	free(buf);
	return m;
}
