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
 *
 * Concat of activations along axis 1 (channels or features) is an mcomp
 * concat; of constants it folds, as below.
 *
 * Constants are computed as the graph is walked: Shape of an activation
 * gives its static shape with the batch as SYM_BATCH, and Gather, Concat,
 * Slice, ... of such constants fold, so that x.view(x.size(0), -1) reads
 * as a flatten. Some activations stay lazy until a node reads them: a
 * Pad's zeros (folded into the Conv or pool reading them, else a pad2d),
 * and constants added, multiplied or clipped on (struct val's pending),
 * which become a hardsigmoid or hardswish when they match relu6(x + 3) / 6
 * or x * relu6(x + 3) / 6, or fold into the weights of the Conv, Gemm or
 * BatchNormalization computing the activation.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/onnx.h>
#include <mcomp/safetensors.h>

#include "core/io/onnx.pb-c.h"

#define OPSET_MIN     9
#define OPSET_MAX     21
#define FILE_MAX      ((size_t)2 << 30)	 /* protobuf's own limit */
#define NUMEL_MAX     ((int64_t)1 << 31) /* values in one constant */
#define INPUT_DIM_MAX ((int64_t)1 << 24) /* one dimension of the model input */
#define FOLD_MAX      ((int64_t)1 << 24) /* values in one constant computed at import */

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
	/* V_ACT: zeros a Pad adds around each image (top, left, bottom, right), for
	 * the Conv or AveragePool after it to fold, else a pad2d where it is read */
	int pad[4];
	/*
	 * V_ACT: constants added and multiplied on, and clipped, not yet computed:
	 * the value is c * clip(a * node + b, lo, hi) + d, a and b of nab values
	 * (1: one for all channels, else one per channel). Where it is read it
	 * becomes a hardsigmoid or hardswish (relu6(x + 3) / 6 and its kin), or
	 * a and b fold into the weights of the Conv, Gemm or BatchNormalization
	 * computing node (fold_ok: nothing else reads that node's output).
	 */
	int pending, clipped, nab, fold_ok;
	double *a, *b, lo, hi, c, d;
	const char *cname; /* the last constant added or multiplied on, for messages */
	int fresh;	   /* V_ACT: node was added for this value alone */
	int ndim;	   /* V_CONST */
	int64_t dims[MC_MAX_DIMS];
	int64_t numel;
	int dtype;
	float *f;   /* dtype float */
	int64_t *i; /* dtype int64 or bool */
};

/* A shape's batch dimension when it is symbolic: what Shape gives for N. */
#define SYM_BATCH INT64_MIN

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
	int n_before;	     /* mcomp nodes before the ONNX node being mapped */
	struct mc_model *m;
	struct mc_err *err;
	uint64_t folded; /* bytes of the constants computed so far, against the memory limit */
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
static int map_arith(struct imp *, int, const Onnx__NodeProto *);
static int map_shape(struct imp *, int, const Onnx__NodeProto *);
static int map_gather(struct imp *, int, const Onnx__NodeProto *);
static int map_squeeze(struct imp *, int, const Onnx__NodeProto *);
static int map_concat(struct imp *, int, const Onnx__NodeProto *);
static int map_reduce_mean(struct imp *, int, const Onnx__NodeProto *);
static int map_slice(struct imp *, int, const Onnx__NodeProto *);
static int map_transpose(struct imp *, int, const Onnx__NodeProto *);
static int map_cast(struct imp *, int, const Onnx__NodeProto *);
static int map_constant_of_shape(struct imp *, int, const Onnx__NodeProto *);

/* The op types read, in the order of their names (the list errors print). */
static const struct {
	const char *type;
	map_fn map;
	const char *mc_op;	    /* what map_unary and map_pool add */
	const char *const attrs[8]; /* the attributes read; any other is refused */
} ops[] = {
    {"Add", map_arith, NULL, {NULL}},
    {"AveragePool",
     map_pool,
     "avgpool2d",
     {"auto_pad", "ceil_mode", "count_include_pad", "dilations", "kernel_shape", "pads", "strides",
      NULL}},
    {"BatchNormalization", map_batchnorm, NULL, {"epsilon", "momentum", "training_mode", NULL}},
    {"Cast", map_cast, NULL, {"to", NULL}},
    {"Clip", map_clip, "clip", {"max", "min", NULL}},
    {"Concat", map_concat, NULL, {"axis", NULL}},
    {"Constant",
     map_constant,
     NULL,
     {"value", "value_float", "value_floats", "value_int", "value_ints", NULL}},
    {"ConstantOfShape", map_constant_of_shape, NULL, {"value", NULL}},
    {"Conv",
     map_conv,
     NULL,
     {"auto_pad", "dilations", "group", "kernel_shape", "pads", "strides", NULL}},
    {"Div", map_arith, NULL, {NULL}},
    {"Dropout", map_alias, NULL, {"ratio", "seed", NULL}},
    {"Flatten", map_flatten, NULL, {"axis", NULL}},
    {"Gather", map_gather, NULL, {"axis", NULL}},
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
    {"Mul", map_arith, NULL, {NULL}},
    {"Pad", map_pad, NULL, {"mode", "pads", "value", NULL}},
    {"ReduceMean", map_reduce_mean, NULL, {"axes", "keepdims", "noop_with_empty_axes", NULL}},
    {"Relu", map_unary, "relu", {NULL}},
    {"Reshape", map_reshape, NULL, {"allowzero", NULL}},
    {"Shape", map_shape, NULL, {"end", "start", NULL}},
    {"Sigmoid", map_unary, "sigmoid", {NULL}},
    {"Slice", map_slice, NULL, {NULL}},
    {"Softmax", map_softmax, "softmax", {"axis", NULL}},
    {"Squeeze", map_squeeze, NULL, {"axes", NULL}},
    {"Sub", map_arith, NULL, {NULL}},
    {"Transpose", map_transpose, NULL, {"perm", NULL}},
    {"Unsqueeze", map_squeeze, NULL, {"axes", NULL}},
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

static int materialize(struct imp *im, const Onnx__NodeProto *n, struct val *v, int keep_pad);
static int pend_clip(struct imp *im, int k, const Onnx__NodeProto *n, double lo, double hi,
		     double alpha, double beta, int always);

/*
 * Input idx of n, which must be an activation. lazy: it may still be
 * pending (constants added, multiplied or clipped on, not yet computed) or
 * padded (a Pad's zeros not yet added); else what is pending becomes nodes
 * here.
 */
static int get_act_lazy(struct imp *im, const Onnx__NodeProto *n, size_t idx, int lazy,
			struct val **out)
{
	struct val *v = idx < n->n_input ? val_find(im, n->input[idx]) : NULL;
	int r;

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
	if (!lazy && (r = materialize(im, n, v, 0)))
		return r;
	*out = v;
	return 0;
}

/* Input idx of n, an activation; padded: it may be a Pad's output (not pending). */
static int get_act_padded(struct imp *im, const Onnx__NodeProto *n, size_t idx, int padded,
			  struct val **out)
{
	int r = get_act_lazy(im, n, idx, 1, out);

	return r ? r : materialize(im, n, *out, padded);
}

static int get_act(struct imp *im, const Onnx__NodeProto *n, size_t idx, struct val **out)
{
	return get_act_padded(im, n, idx, 0, out);
}

static int is_padded(const struct val *v)
{
	return v->pad[0] || v->pad[1] || v->pad[2] || v->pad[3];
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

/* Output idx of n becomes activation node of ONNX rank rank, computed. */
static struct val *set_act(struct imp *im, const Onnx__NodeProto *n, size_t idx, int node, int rank)
{
	struct val *v = idx < n->n_output ? val_find(im, n->output[idx]) : NULL;

	if (v) {
		v->kind = V_ACT;
		v->node = node;
		v->rank = rank;
		memset(v->pad, 0, sizeof(v->pad));
		v->pending = v->clipped = v->fold_ok = 0;
		v->fresh = node >= 0 && node >= im->n_before;
	}
	return v;
}

/* Output idx of n becomes another name for node (Identity, a Squeeze of ones). */
static struct val *set_alias(struct imp *im, const Onnx__NodeProto *n, size_t idx, int node,
			     int rank)
{
	struct val *v = set_act(im, n, idx, node, rank);

	if (v)
		v->fresh = 0;
	return v;
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
static void node_name(struct imp *im, const Onnx__NodeProto *n, const char *opname, const char *sfx,
		      char *buf, size_t len)
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
	if (o && *sfx)
		snprintf(base + o, sizeof(base) - o, "_%s", sfx);
	if (o) {
		snprintf(buf, len, "%s", base);
		for (int k = 2; !strcmp(buf, "input") || mc_model_find(im->m, buf) >= 0; k++)
			snprintf(buf, len, "%s_%d", base, k);
		return;
	}
	for (int k = 1; k == 1 || mc_model_find(im->m, buf) >= 0; k++)
		snprintf(buf, len, "%s%d", opname, k);
}

/* Appends an mcomp node of opname for ONNX node n reading ins; returns its
 * index. sfx, when not "", tells apart a second node made for n ("pad"). */
static int add_sfx(struct imp *im, const Onnx__NodeProto *n, const char *opname,
		   struct val *const *ins, int n_ins, const struct mc_attr *attrs, const char *sfx)
{
	const char *names[MC_NODE_MAX_INPUTS + 1];
	char name[256], label[300];
	int r;

	for (int i = 0; i < n_ins; i++)
		names[i] = act_name(im, ins[i]);
	names[n_ins] = NULL;
	node_name(im, n, opname, sfx, name, sizeof(name));
	r = mc_model_add_node(im->m, -1, name, opname, names, attrs, im->err);
	if (r < 0) {
		node_label(n, label, sizeof(label));
		mc_err_prefix(im->err, "%s: node %s (%s, opset %d)", im->origin, label,
			      str(n->op_type), im->opset);
	}
	return r;
}

static int add(struct imp *im, const Onnx__NodeProto *n, const char *opname, struct val *const *ins,
	       int n_ins, const struct mc_attr *attrs)
{
	return add_sfx(im, n, opname, ins, n_ins, attrs, "");
}

/* A pad2d of x by pads (top, left, bottom, right) for ONNX node n; its index. */
static int add_pad2d(struct imp *im, const Onnx__NodeProto *n, struct val *x, const int64_t *pads,
		     const char *sfx)
{
	struct mc_attr a[] = {MC_ATTR_INT("top", pads[0]), MC_ATTR_INT("left", pads[1]),
			      MC_ATTR_INT("bottom", pads[2]), MC_ATTR_INT("right", pads[3]),
			      MC_ATTR_END};

	return add_sfx(im, n, "pad2d", &x, 1, a, sfx);
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

/* Nonzero when ONNX value name is read by the live node reader only, once,
 * and is not the graph's output (Shape nodes aside). */
static int only_reader(struct imp *im, const char *name, int reader)
{
	int count = 0;

	if (!strcmp(str(im->g->output[0]->name), name))
		return 0;
	for (int j = 0; j < (int)im->g->n_node; j++) {
		const Onnx__NodeProto *o = im->g->node[j];

		if (!im->live[j] || !strcmp(str(o->op_type), "Shape"))
			continue; /* a Shape reads no values */
		for (size_t q = 0; q < o->n_input; q++)
			if (o->input[q] && !strcmp(o->input[q], name)) {
				if (j != reader)
					return 0;
				count++;
			}
	}
	return count == 1;
}

/* ---------------------------------------------------------------- constants */

/* Output 0 of n becomes a constant of dtype (float, or int64) and dims, zeroed. */
static struct val *const_out(struct imp *im, const Onnx__NodeProto *n, int dtype, int ndim,
			     const int64_t *dims)
{
	struct val *v = n->n_output ? val_find(im, n->output[0]) : NULL;
	int64_t numel = 1;

	if (!v) {
		node_err(im, n, MC_ECORRUPT, "has no output");
		return NULL;
	}
	if (ndim > MC_MAX_DIMS) {
		node_err(im, n, MC_EINVAL, "gives %d dimensions, more than %d", ndim, MC_MAX_DIMS);
		return NULL;
	}
	for (int d = 0; d < ndim; d++) {
		if (dims[d] < 0 || dims[d] > FOLD_MAX || numel * dims[d] > FOLD_MAX) {
			node_err(im, n, MC_EINVAL,
				 "gives a constant of dimension %lld; mcomp computes constants "
				 "of at most %lld values at import",
				 (long long)dims[d], (long long)FOLD_MAX);
			return NULL;
		}
		numel *= dims[d];
		v->dims[d] = dims[d];
	}
	/* Each fits FOLD_MAX; all of them, with the file, the memory limit: a few
	 * nodes of a small file cannot compute gigabytes. */
	im->folded += (uint64_t)(numel ? numel : 1) * (dtype == DT_FLOAT ? 4 : 8);
	{
		char what[600];

		snprintf(what, sizeof(what), "%s: node '%s' (%s): the constants computed at import",
			 im->origin, n->name ? n->name : "?", n->op_type ? n->op_type : "?");
		if (mc_mem_check(im->folded, what, im->err))
			return NULL;
	}
	v->kind = V_CONST;
	v->ndim = ndim;
	v->numel = numel;
	v->dtype = dtype == DT_FLOAT ? DT_FLOAT : DT_INT64;
	if (dtype == DT_FLOAT)
		v->f = calloc((size_t)(numel ? numel : 1), sizeof(float));
	else
		v->i = calloc((size_t)(numel ? numel : 1), sizeof(int64_t));
	if (!v->f && !v->i) {
		mc_err_set(im->err, MC_ENOMEM, "%s: out of memory", im->origin);
		return NULL;
	}
	return v;
}

/* Input idx of n as a constant of float or integer values (not optional). */
static int get_data(struct imp *im, const Onnx__NodeProto *n, size_t idx, struct val **out)
{
	struct val *v = idx < n->n_input ? val_find(im, n->input[idx]) : NULL;

	if (!v)
		return node_err(im, n, MC_EINVAL, "needs input %zu; give it", idx);
	if (v->kind != V_CONST)
		return node_err(im, n, MC_EINVAL,
				"input %zu ('%s') is computed; mcomp folds %s on constants and "
				"shapes only",
				idx, v->name, n->op_type);
	if (!v->f && !v->i)
		return node_err(im, n, MC_EINVAL,
				"input %zu ('%s') is of ONNX data type %d; mcomp reads float and "
				"integer constants",
				idx, v->name, v->dtype);
	*out = v;
	return 0;
}

/* Element j of constant v as a double (SYM_BATCH stays itself). */
static double elem(const struct val *v, int64_t j)
{
	return v->f ? v->f[j] : (double)v->i[j];
}

/* Copies element j of src to element o of dst (of src's dtype). */
static void put(struct val *dst, int64_t o, const struct val *src, int64_t j)
{
	if (src->f)
		dst->f[o] = src->f[j];
	else
		dst->i[o] = src->i[j];
}

/* An axis of rank r, negative counting from the end; -1 when out of range. */
static int axis_of(int64_t a, int r)
{
	if (a < 0)
		a += r;
	return a < 0 || a >= r ? -1 : (int)a;
}

/* Axes from attribute axes (before opset since) or input 1 (since), into ax; *na of
 * them (-1: none given). */
static int get_axes(struct imp *im, const Onnx__NodeProto *n, int since, int64_t *ax, int *na)
{
	const Onnx__AttributeProto *a = attr(n, "axes");
	struct val *v;
	int r;

	*na = -1;
	if (im->opset < since) {
		if (!a)
			return 0;
		if (a->n_ints > MC_MAX_DIMS)
			return node_err(im, n, MC_EINVAL, "%zu axes", a->n_ints);
		for (size_t j = 0; j < a->n_ints; j++)
			ax[j] = a->ints[j];
		*na = (int)a->n_ints;
		return 0;
	}
	if (a)
		return node_err(im, n, MC_EINVAL,
				"has attribute 'axes'; since opset %d the axes are input 1", since);
	if ((r = get_const(im, n, 1, DT_INT64, 1, &v)))
		return r;
	if (!v)
		return 0;
	if (v->numel > MC_MAX_DIMS)
		return node_err(im, n, MC_EINVAL, "%lld axes", (long long)v->numel);
	memcpy(ax, v->i, (size_t)v->numel * sizeof(int64_t));
	*na = (int)v->numel;
	return 0;
}

/* ---------------------------------------------------------------- pending constants */

static int near(double x, double y)
{
	double e = x - y;

	return (e < 0 ? -e : e) <= 1e-6 * (1 + (y < 0 ? -y : y));
}

static void pend_clear(struct val *v)
{
	free(v->a);
	free(v->b);
	v->a = v->b = NULL;
	v->pending = v->clipped = v->fold_ok = 0;
	v->nab = 0;
}

/* a = 1 and b = 0 for every channel */
static int inner_ident(const struct val *v)
{
	for (int j = 0; j < v->nab; j++)
		if (v->a[j] != 1 || v->b[j] != 0)
			return 0;
	return 1;
}

/*
 * y becomes x with what x has pending, to add more on: the Add, Sub, Mul,
 * Div, Relu, Clip or HardSigmoid node k reading x. y may fold into x's
 * node only when nothing else reads x; when something does, x may no
 * longer fold either, since y now counts on x's node as it is.
 */
static int pend_start(struct imp *im, int k, struct val *y, struct val *x)
{
	int only = only_reader(im, x->name, k);
	int nab = x->pending ? x->nab : 1;

	free(y->a);
	free(y->b);
	y->a = malloc((size_t)nab * sizeof(double));
	y->b = malloc((size_t)nab * sizeof(double));
	if (!y->a || !y->b)
		return mc_err_set(im->err, MC_ENOMEM, "%s: out of memory", im->origin);
	y->kind = V_ACT;
	y->node = x->node;
	y->rank = x->rank;
	memset(y->pad, 0, sizeof(y->pad));
	y->fresh = 0;
	y->pending = 1;
	y->nab = nab;
	if (x->pending) {
		memcpy(y->a, x->a, (size_t)nab * sizeof(double));
		memcpy(y->b, x->b, (size_t)nab * sizeof(double));
		y->clipped = x->clipped;
		y->lo = x->lo;
		y->hi = x->hi;
		y->c = x->c;
		y->d = x->d;
		y->cname = x->cname;
		y->fold_ok = x->fold_ok && only;
	} else {
		y->a[0] = 1;
		y->b[0] = 0;
		y->clipped = 0;
		y->lo = -HUGE_VAL;
		y->hi = HUGE_VAL;
		y->c = 1;
		y->d = 0;
		y->cname = NULL;
		y->fold_ok = x->fresh && only;
	}
	if (!only)
		x->fold_ok = 0;
	return 0;
}

/* One a and b per channel, C of them, from one for all. */
static int pend_widen(struct imp *im, struct val *v, int64_t C)
{
	double *a, *b;

	if (v->nab == C)
		return 0;
	a = malloc((size_t)C * sizeof(double));
	b = malloc((size_t)C * sizeof(double));
	if (!a || !b) {
		free(a);
		free(b);
		return mc_err_set(im->err, MC_ENOMEM, "%s: out of memory", im->origin);
	}
	for (int64_t j = 0; j < C; j++) {
		a[j] = v->a[0];
		b[j] = v->b[0];
	}
	free(v->a);
	free(v->b);
	v->a = a;
	v->b = b;
	v->nab = (int)C;
	return 0;
}

/*
 * Folds what v has pending inside its clip (a, b) into the weights of the
 * node computing it: Conv and Gemm rows scaled by a[o], their bias b[o]
 * added (a bias made where there was none), a batch norm's scale and shift
 * likewise. Refused, naming n, when another value reads that node or its
 * op has no weights to fold into.
 */
static int fold(struct imp *im, const Onnx__NodeProto *n, struct val *v)
{
	const struct mc_node *nd = v->node >= 0 ? mc_model_node(im->m, v->node) : NULL;
	const char *op = nd ? nd->op->name : "";
	int bn = !strcmp(op, "batchnorm"), needb = 0, r;
	struct mc_tensor *w, *bias;
	int64_t C, per;

	if (!v->fold_ok || !(bn || !strcmp(op, "conv2d") || !strcmp(op, "linear"))) {
		const Onnx__NodeProto *src = v->producer >= 0 ? im->g->node[v->producer] : n;
		char label[300];

		node_label(n, label, sizeof(label));
		return node_err(
		    im, src, MC_EINVAL,
		    "applies the constant '%s' to a computed value, which node %s reads; mcomp "
		    "folds an Add, Sub, Mul or Div of a constant (a scalar or one per "
		    "channel) into the Conv, Gemm or BatchNormalization that computes the "
		    "value when nothing else reads that, and reads relu6(x + 3) / 6, x * "
		    "relu6(x + 3) / 6 and HardSigmoid as hardsigmoid and hardswish; here %s",
		    v->cname ? v->cname : "?", label,
		    !nd		  ? "the value is the model input"
		    : !v->fold_ok ? "what it is computed from is read elsewhere too"
				  : "it is computed by an op without weights");
	}
	C = nd->out_shape[0];
	for (int j = 0; j < v->nab; j++)
		needb |= v->b[j] != 0;
	bias = mc_node_param_named(nd, "bias");
	if (!bn && !bias && needb) {
		struct mc_attr at[] = {MC_ATTR_BOOL("bias", 1), MC_ATTR_END};

		if ((r = mc_model_set_attrs(im->m, v->node, at, im->err)))
			return r;
		nd = mc_model_node(im->m, v->node);
		bias = mc_node_param_named(nd, "bias");
	}
	w = mc_node_param_named(nd, "weight");
	if (!w || w->dtype != MC_F32 || w->numel % C || (bias && bias->numel != C) ||
	    (v->nab != 1 && v->nab != C))
		return node_err(im, n, MC_EINVAL, "cannot fold constants into node '%s' (%s)",
				nd->name, op);
	per = w->numel / C;
	for (int64_t o = 0; o < C; o++) {
		double sa = v->a[v->nab == 1 ? 0 : o], sb = v->b[v->nab == 1 ? 0 : o];
		float *wd = (float *)w->data + o * per;

		for (int64_t q = 0; q < per; q++)
			wd[q] = (float)(wd[q] * sa);
		if (bias)
			((float *)bias->data)[o] = (float)(((float *)bias->data)[o] * sa + sb);
	}
	v->nab = 1;
	v->a[0] = 1;
	v->b[0] = 0;
	return 0;
}

/*
 * Computes what v has pending, as nodes, where node n reads it: a pad2d for
 * a Pad's zeros (unless keep_pad: the reader folds them); a clip of an
 * affine as hardsigmoid (its slope and offset those of the affine, the
 * scale after it 1), else the affine folded and a relu or clip; an affine
 * alone folded into the node computing it.
 */
static int materialize(struct imp *im, const Onnx__NodeProto *n, struct val *v, int keep_pad)
{
	const Onnx__NodeProto *src = v->producer >= 0 ? im->g->node[v->producer] : n;
	int i = v->node, r;

	if (is_padded(v) && !keep_pad) {
		int64_t p[4] = {v->pad[0], v->pad[1], v->pad[2], v->pad[3]};

		i = add_pad2d(im, src, v, p, "");
		if (i < 0)
			return i;
		v->node = i;
		memset(v->pad, 0, sizeof(v->pad));
		v->fresh = 0;
	}
	if (!v->pending)
		return 0;
	if (v->clipped) {
		double w = v->hi - v->lo;

		if (!inner_ident(v) && v->nab == 1 && w > 0 && w < HUGE_VAL && near(v->c * w, 1) &&
		    near(v->c * v->lo + v->d, 0)) {
			struct mc_attr at[] = {MC_ATTR_FLOAT("alpha", v->a[0] / w),
					       MC_ATTR_FLOAT("beta", (v->b[0] - v->lo) / w),
					       MC_ATTR_END};

			i = add(im, src, "hardsigmoid", &v, 1, at);
			if (i < 0)
				return i;
			goto done;
		}
		if (!inner_ident(v) && (r = fold(im, n, v)))
			return r;
		if (v->lo == 0 && v->hi == HUGE_VAL) {
			i = add(im, src, "relu", &v, 1, NULL);
		} else {
			struct mc_attr at[] = {
			    MC_ATTR_FLOAT("min", v->lo == -HUGE_VAL ? -FLT_MAX : v->lo),
			    MC_ATTR_FLOAT("max", v->hi == HUGE_VAL ? FLT_MAX : v->hi), MC_ATTR_END};

			i = add(im, src, "clip", &v, 1, at);
		}
		if (i < 0)
			return i;
		if (!near(v->c, 1) || !near(v->d, 0))
			return node_err(im, n, MC_EINVAL,
					"reads '%s', a clipped value scaled by %g and shifted by "
					"%g; mcomp folds such constants into a Conv, Gemm or "
					"BatchNormalization before, or reads relu6(x + 3) / 6 as "
					"hardsigmoid, only",
					v->name, v->c, v->d);
	} else if (!inner_ident(v) && (r = fold(im, n, v))) {
		return r;
	}
done:
	v->node = i;
	v->fresh = 0;
	pend_clear(v);
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
 * The zeros a Conv or pool of kernel kk and stride s adds on each side of an
 * h x w image (top, left, bottom, right into p), from auto_pad or the pads
 * attribute: SAME_UPPER pads k - 1 - ((in - 1) % s) (at least 0) per axis,
 * the odd one at the end (SAME_LOWER: at the start), as TensorFlow's 'SAME'.
 */
static int pads4(struct imp *im, const Onnx__NodeProto *n, int64_t kk, int64_t s, int64_t h,
		 int64_t w, int64_t *p)
{
	const int64_t *pads;
	char ap[32];
	int r;

	if ((r = attr_str(im, n, "auto_pad", ap, sizeof(ap))) ||
	    (r = attr_ints(im, n, "pads", 4, &pads)))
		return r;
	memset(p, 0, 4 * sizeof(int64_t));
	if (!*ap || !strcmp(ap, "NOTSET")) {
		for (int j = 0; pads && j < 4; j++) {
			if (pads[j] < 0 || pads[j] > 1024)
				return node_err(im, n, MC_EINVAL,
						"pads [%lld, %lld, %lld, %lld]: mcomp pads 0 to "
						"1024 per side",
						(long long)pads[0], (long long)pads[1],
						(long long)pads[2], (long long)pads[3]);
			p[j] = pads[j];
		}
		return 0;
	}
	if (!strcmp(ap, "VALID"))
		return 0;
	if (strcmp(ap, "SAME_UPPER") && strcmp(ap, "SAME_LOWER"))
		return node_err(im, n, MC_EINVAL,
				"auto_pad '%s' is none of NOTSET, VALID, SAME_UPPER, SAME_LOWER",
				ap);
	for (int axis = 0; axis < 2; axis++) {
		int64_t in = axis ? w : h, out = (in + s - 1) / s, total = (out - 1) * s + kk - in;
		int64_t first;

		if (total < 0)
			total = 0;
		first = !strcmp(ap, "SAME_UPPER") ? total / 2 : total - total / 2;
		p[axis] = first;
		p[axis + 2] = total - first;
	}
	return 0;
}

static int all_equal(const int64_t *p)
{
	return p[0] == p[1] && p[0] == p[2] && p[0] == p[3];
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
	int64_t shape[MC_MAX_DIMS], group, s, dil, p[4];
	const int64_t *ks;
	struct val *w, *b;
	int r, i;

	act_shape(im, x, shape);
	if ((r = get_const(im, n, 1, DT_FLOAT, 0, &w)) ||
	    (r = get_const(im, n, 2, DT_FLOAT, 1, &b)) ||
	    (r = attr_int(im, n, "group", 1, &group)) ||
	    (r = attr_ints(im, n, "kernel_shape", 2, &ks)) ||
	    (r = square_attr(im, n, "strides", 1, &s)) ||
	    (r = square_attr(im, n, "dilations", 1, &dil)) || (r = pads4(im, n, 1, s, 1, 1, p)))
		return r;
	if (w->ndim != 4 || w->dims[1] != shape[0] || w->dims[2] != 1 || w->dims[3] != 1 ||
	    (ks && (ks[0] != 1 || ks[1] != 1)) || group != 1 || p[0] || p[1] || p[2] || p[3])
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
	struct val *x, *w, *b, padded;
	int64_t shape[MC_MAX_DIMS], group, s, dil, p[4], kk;
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
	if ((r = pads4(im, n, kk, s, shape[1] + x->pad[0] + x->pad[2],
		       shape[2] + x->pad[1] + x->pad[3], p)))
		return r;
	for (int j = 0; j < 4; j++)
		p[j] += x->pad[j];
	if (kk > 1024 || s > 1024 || w->dims[0] > INT_MAX || group > INT_MAX)
		return node_err(im, n, MC_EINVAL, "kernel %lld, stride %lld: too large",
				(long long)kk, (long long)s);
	/* conv2d pads all four sides alike; uneven padding goes before it */
	if (!all_equal(p)) {
		padded = *x;
		padded.node = add_pad2d(im, n, x, p, "pad");
		if (padded.node < 0)
			return padded.node;
		x = &padded;
		memset(p, 0, sizeof(p));
	}
	{
		struct mc_attr a[] = {MC_ATTR_INT("out", w->dims[0]),
				      MC_ATTR_INT("kernel", kk),
				      MC_ATTR_INT("stride", s),
				      MC_ATTR_INT("padding", p[0]),
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
	int64_t shape[MC_MAX_DIMS], s, dil, p[4], kk, ceil, cip = 0, order, h, w;
	const int64_t *ks;
	struct val *x, padded;
	int r, i, own;

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
	h = shape[1] + x->pad[0] + x->pad[2];
	w = shape[2] + x->pad[1] + x->pad[3];
	if ((r = pads4(im, n, kk, s, h, w, p)))
		return r;
	own = p[0] || p[1] || p[2] || p[3];
	/* mcomp's average counts the padding as zeros: count_include_pad=1 */
	if (avg && own && !cip)
		return node_err(im, n, MC_EINVAL,
				"count_include_pad=0 with pads [%lld, %lld, %lld, %lld]: mcomp's "
				"avgpool2d counts the padding as zeros in the mean "
				"(count_include_pad=1, PyTorch's default); export with that or "
				"without padding",
				(long long)p[0], (long long)p[1], (long long)p[2], (long long)p[3]);
	if (!avg && !all_equal(p))
		return node_err(im, n, MC_EINVAL,
				"pads [%lld, %lld, %lld, %lld]: mcomp's maxpool2d pads all four "
				"sides alike; export with symmetric padding",
				(long long)p[0], (long long)p[1], (long long)p[2], (long long)p[3]);
	for (int j = 0; j < 4; j++)
		p[j] += x->pad[j]; /* a Pad of zeros before: zeros counted in the mean */
	/* ceil_mode adds a last, partial window unless the windows tile exactly */
	if (ceil && ((shape[1] + p[0] + p[2] - kk) % s || (shape[2] + p[1] + p[3] - kk) % s))
		return node_err(im, n, MC_EINVAL,
				"ceil_mode=1 adds partial windows at the border here; mcomp pools "
				"whole windows only (ceil_mode=0)");
	/* the pools pad all sides alike, at most half the kernel; else a pad2d of
	 * zeros before an average (a max pads with -inf: refused above, or by maxpool2d) */
	if (avg && (!all_equal(p) || 2 * p[0] > kk)) {
		padded = *x;
		padded.node = add_pad2d(im, n, x, p, "pad");
		if (padded.node < 0)
			return padded.node;
		x = &padded;
		memset(p, 0, sizeof(p));
	}
	{
		struct mc_attr a[] = {MC_ATTR_INT("kernel", kk), MC_ATTR_INT("stride", s),
				      MC_ATTR_INT("padding", p[0]), MC_ATTR_END};

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
	/* a Relu of a pending affine stays pending: relu6(x + 3) / 6 is a hardsigmoid */
	if (!strcmp(opname, "relu") && (r = pend_clip(im, k, n, 0, HUGE_VAL, 1, 0, 0)) <= 0)
		return r;
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

	if ((r = attr_float(im, n, "alpha", hsig ? 0.2f : 0.01f, &alpha)) ||
	    (hsig && (r = attr_float(im, n, "beta", 0.5f, &beta))))
		return r;
	/* clip(alpha x + beta, 0, 1), pending: x times it may be a hardswish */
	if (hsig)
		return pend_clip(im, k, n, 0, 1, alpha, beta, 1);
	if ((r = get_act(im, n, 0, &x)))
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
	/* a clip of a pending affine stays pending (a hardsigmoid, maybe) */
	if ((r = pend_clip(im, k, n, lo, hi, 1, 0, 0)) <= 0)
		return r;
	if ((r = get_act(im, n, 0, &x)))
		return r;
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
	if (nd == 1 && v->rank > 1) { /* [C] for [C, 1, ..., 1] */
		for (int d = 1; d < v->rank; d++)
			shape[d] = 1;
		return v->rank;
	}
	return -1;
}

/*
 * How constant cv broadcasts over activation x: one value for all (1), or
 * one per channel (*len = C): [C], [C, 1, ..., 1] or [1, C, 1, ..., 1]
 * aligned to x's [N, C, ...] from the right. Else refused.
 */
static int channel_consts(struct imp *im, const Onnx__NodeProto *n, struct val *x,
			  const struct val *cv, int64_t *len)
{
	int64_t shape[MC_MAX_DIMS];
	int nd = onnx_shape(im, x, shape), R = x->rank + 1, ok;
	char buf[128];

	*len = 1;
	if (cv->numel == 1 && cv->ndim <= R)
		return 0;
	ok = nd >= 1 && cv->ndim <= R && cv->ndim >= R - 1 && cv->numel == shape[0];
	for (int j = 0; ok && j < cv->ndim; j++) {
		int ax = R - cv->ndim + j;

		ok = cv->dims[j] == (ax == 1 ? shape[0] : 1);
	}
	if (!ok)
		return node_err(im, n, MC_EINVAL,
				"the constant '%s' (%lld values) is neither one value nor one per "
				"channel of '%s' [N, %s; mcomp reads Add, Sub, Mul and Div of "
				"such constants only",
				cv->name, (long long)cv->numel, x->name,
				nd < 0 ? "?" : mc_shape_text(nd, shape, buf, sizeof(buf)) + 1);
	*len = shape[0];
	return 0;
}

/*
 * Add, Sub, Mul or Div (op the first letter) of an activation and a float
 * constant: kept pending on the activation (struct val), computed where
 * it is read: folded into the weights before, or part of a hardsigmoid or
 * hardswish.
 */
static int map_affine(struct imp *im, int k, const Onnx__NodeProto *n, char op, int cfirst)
{
	struct val *x, *y, *cv = val_find(im, n->input[cfirst ? 0 : 1]);
	int64_t len;
	int r;

	if ((r = get_act_lazy(im, n, cfirst ? 1 : 0, 1, &x)) ||
	    (is_padded(x) && (r = materialize(im, n, x, 0))))
		return r;
	if (!cv->f)
		return node_err(im, n, MC_EINVAL,
				"the constant '%s' is of ONNX data type %d; mcomp reads float "
				"constants here",
				cv->name, cv->dtype);
	if (op == 'D' && cfirst)
		return node_err(im, n, MC_EINVAL,
				"divides the constant '%s' by a computed value; mcomp reads Div "
				"by a constant only",
				cv->name);
	if ((r = channel_consts(im, n, x, cv, &len)))
		return r;
	for (int64_t j = 0; op == 'D' && j < cv->numel; j++)
		if (cv->f[j] == 0)
			return node_err(im, n, MC_EINVAL, "divides by zero ('%s')", cv->name);
	y = val_find(im, n->output[0]);
	if ((r = pend_start(im, k, y, x)))
		return r;
	if (y->clipped && len != 1)
		return node_err(im, n, MC_EINVAL,
				"applies '%s', one value per channel, to a clipped value; mcomp "
				"reads one value for all channels there only",
				cv->name);
	if (len != 1 && (r = pend_widen(im, y, len)))
		return r;
	y->cname = cv->name;
	for (int64_t j = 0; j < (y->clipped ? 1 : y->nab); j++) {
		double v = cv->f[len == 1 ? 0 : j];
		double *a = y->clipped ? &y->c : &y->a[j], *b = y->clipped ? &y->d : &y->b[j];

		switch (op) {
		case 'A':
			*b += v;
			break;
		case 'S': /* x - v, or v - x */
			if (cfirst) {
				*a = -*a;
				*b = v - *b;
			} else {
				*b -= v;
			}
			break;
		case 'M':
			*a *= v;
			*b *= v;
			break;
		default:
			*a /= v;
			*b /= v;
		}
	}
	/* nothing left pending: y is x's node as it is */
	if (!y->clipped && inner_ident(y))
		pend_clear(y);
	return 0;
}

/*
 * Relu, Clip (lo, hi) or HardSigmoid (alpha, beta: clip(alpha x + beta, 0,
 * 1)) of x: kept pending when x is, a clip of one affine, for hardsigmoid
 * and hardswish to be found. Returns 1 when x is computed (the caller adds
 * the op), 0 when pending, or an error.
 */
static int pend_clip(struct imp *im, int k, const Onnx__NodeProto *n, double lo, double hi,
		     double alpha, double beta, int always)
{
	struct val *x, *y;
	int r;

	if ((r = get_act_lazy(im, n, 0, 1, &x)) || (is_padded(x) && (r = materialize(im, n, x, 0))))
		return r;
	/* lazily only one clip of one affine for all channels, kept the right way up */
	if (x->pending && (x->nab != 1 || (x->clipped && (x->c <= 0 || alpha != 1 || beta != 0))) &&
	    (r = materialize(im, n, x, 0)))
		return r;
	if (!x->pending && !always)
		return 1;
	y = val_find(im, n->output[0]);
	if ((r = pend_start(im, k, y, x)))
		return r;
	if (y->clipped) {
		/* c clip(u, lo', hi') + d clipped to [lo, hi] (c > 0) */
		double l = (lo - y->d) / y->c, h = (hi - y->d) / y->c;

		y->lo = l > y->lo ? l : y->lo;
		y->hi = h < y->hi ? h : y->hi;
		if (y->lo >= y->hi)
			return node_err(im, n, MC_EINVAL,
					"clips '%s' to a single value; the model's output would "
					"not depend on it here",
					x->name);
		return 0;
	}
	y->a[0] *= alpha;
	y->b[0] = y->b[0] * alpha + beta;
	y->clipped = 1;
	y->lo = lo;
	y->hi = hi;
	y->c = 1;
	y->d = 0;
	return 0;
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

	/* x * c clip(a x + b, 0, h) with a / h = 1/6, b / h = 1/2: c h hardswish(x) */
	for (size_t q = 0; q < 2; q++) {
		struct val *x = val_find(im, n->input[q]), *p = val_find(im, n->input[1 - q]), *y;
		double h;

		if (!x || !p || x->kind != V_ACT || p->kind != V_ACT || x->pending ||
		    is_padded(x) || !p->pending || !p->clipped || p->node != x->node ||
		    p->nab != 1 || p->lo != 0 || !near(p->d, 0))
			continue;
		h = p->hi;
		if (!(h > 0 && h < HUGE_VAL) || !near(p->a[0] / h, 1.0 / 6) ||
		    !near(p->b[0] / h, 0.5))
			continue;
		i = add(im, n, "hardswish", &x, 1, NULL);
		if (i < 0)
			return i;
		if (!only_reader(im, p->name, k))
			p->fold_ok = 0;
		y = set_act(im, n, 0, i, x->rank);
		if (!near(p->c * h, 1)) { /* a scale left pending, for a Div to take */
			struct val tmp = *y;

			tmp.pending = 0;
			tmp.fresh = 0;
			tmp.a = tmp.b = NULL;
			if ((r = pend_start(im, k, y, &tmp)))
				return r;
			y->a[0] = p->c * h;
			y->fold_ok = 0;
		}
		return 0;
	}
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

/*
 * Reshape of a constant is folded. Of an activation: to [N, -1] (or [N,
 * features]) it flattens each sample; a [C] to [N, C, 1, ..., 1] or back
 * keeps mcomp's [C]. The shape may come from Shape, Gather, Concat, ... of
 * the activation's own shape (x.view(x.size(0), -1)): its N is symbolic.
 */
static int map_reshape(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *x, *sh, *y;
	int64_t shape[MC_MAX_DIMS + 1], t[MC_MAX_DIMS + 1], numel = 1, allowzero, batch = 0,
							    known = 1;
	const Onnx__ValueInfoProto *in = NULL;
	int r, nd, cst, infer = -1, R;

	x = n->n_input ? val_find(im, n->input[0]) : NULL;
	cst = x && x->kind == V_CONST;
	if ((cst ? (r = get_data(im, n, 0, &x)) : (r = get_act(im, n, 0, &x))) ||
	    (r = get_const(im, n, 1, DT_INT64, 0, &sh)) ||
	    (r = attr_int(im, n, "allowzero", 0, &allowzero)))
		return r;
	if (sh->numel < 1 || sh->numel > MC_MAX_DIMS)
		return node_err(im, n, MC_EINVAL, "shape '%s' has %lld values", sh->name,
				(long long)sh->numel);
	R = (int)sh->numel;
	if (cst) {
		for (int d = 0; d < x->ndim; d++)
			shape[d] = x->dims[d];
		nd = x->ndim;
	} else {
		/* the batch size, where the model input fixes it */
		for (size_t j = 0; j < im->g->n_input; j++)
			if (val_find(im, im->g->input[j]->name)->kind == V_ACT)
				in = im->g->input[j];
		if (in && in->type->tensor_type->shape->dim[0]->value_case ==
			      ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
			batch = in->type->tensor_type->shape->dim[0]->dim_value;
		nd = onnx_shape(im, x, shape + 1) + 1;
		if (nd < 1)
			return node_err(im, n, MC_EINVAL, "the shape of '%s' is not known",
					x->name);
		shape[0] = SYM_BATCH;
	}
	for (int d = cst ? 0 : 1; d < nd; d++)
		numel *= shape[d];
	/* t: the target; its first dimension N for an activation */
	for (int d = 0; d < R; d++) {
		int64_t v = sh->i[d];

		if (v == 0 && !allowzero)
			v = d < nd ? shape[d] : -2;
		if (!cst && d == 0 && (v == SYM_BATCH || (v > 0 && v == batch))) {
			t[0] = SYM_BATCH;
			continue;
		}
		if (v == -1 && infer < 0) {
			infer = d;
			continue;
		}
		if (v < 1 || v > NUMEL_MAX)
			goto refuse;
		t[d] = v;
		if (cst || d > 0)
			known *= v;
	}
	if (!cst && infer == 0) {
		t[0] = SYM_BATCH; /* [-1, features...]: N inferred */
	} else if (infer >= 0) {
		if (!known || numel % known)
			goto refuse;
		t[infer] = numel / known;
		known *= t[infer];
	}
	if (known != numel || (!cst && t[0] != SYM_BATCH))
		goto refuse;
	if (cst) {
		if (!(y = const_out(im, n, x->f ? DT_FLOAT : DT_INT64, R, t)))
			return im->err->code;
		for (int64_t j = 0; j < x->numel; j++)
			put(y, j, x, j);
		return 0;
	}
	if (R == 2)
		return flatten(im, n, x);
	/* [C] as [C, 1, ..., 1] or back: mcomp's [C] either way */
	if (act_shape(im, x, shape) == 1) {
		int ones = 1;

		for (int d = 2; d < R; d++)
			ones &= t[d] == 1;
		if (ones) {
			set_alias(im, n, 0, x->node, R - 1);
			return 0;
		}
	}
refuse:
	return node_err(
	    im, n, MC_EINVAL,
	    "shape '%s' (%lld values) is not [N, -1]: mcomp reads Reshape as "
	    "flattening each sample ([0, -1], [-1, %lld], N and -1, or x.view(x.size(0), "
	    "-1)), and [N, C] as [N, C, 1, 1], only",
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
 * Pad of zeros around each image, any number per side: the Conv or
 * AveragePool reading it folds them into its padding (a pad2d before it
 * where the sides differ); any other reader gets a pad2d.
 */
static int map_pad(struct imp *im, int k, const Onnx__NodeProto *n)
{
	int64_t shape[MC_MAX_DIMS];
	const int64_t *pads;
	struct val *x, *y, *pv, *cv;
	double value = 0;
	char mode[32];
	int r;

	if ((r = get_act_padded(im, n, 0, 1, &x)) || (r = need_image(im, n, x, shape)) ||
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
	/* ONNX's order: the starts of N, C, H, W, then their ends */
	if (pads[0] || pads[1] || pads[4] || pads[5] || pads[2] < 0 || pads[3] < 0 || pads[6] < 0 ||
	    pads[7] < 0 || pads[2] > 1024 || pads[3] > 1024 || pads[6] > 1024 || pads[7] > 1024)
		return node_err(im, n, MC_EINVAL,
				"pads [%lld, %lld, %lld, %lld, %lld, %lld, %lld, %lld]: mcomp adds "
				"0 to 1024 rows and columns of zeros to height and width (not N "
				"or C, and does not crop) only",
				(long long)pads[0], (long long)pads[1], (long long)pads[2],
				(long long)pads[3], (long long)pads[4], (long long)pads[5],
				(long long)pads[6], (long long)pads[7]);
	{
		int p[4] = {x->pad[0] + (int)pads[2], x->pad[1] + (int)pads[3],
			    x->pad[2] + (int)pads[6], x->pad[3] + (int)pads[7]};

		y = set_alias(im, n, 0, x->node, 3);
		memcpy(y->pad, p, sizeof(p));
	}
	return 0;
}

/*
 * Identity, and Dropout (inference: the identity; its mask is not computed),
 * of an activation or of a constant.
 */
static int map_alias(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *x, *mode, *y;
	int r;

	x = n->n_input ? val_find(im, n->input[0]) : NULL;
	if (x && x->kind == V_CONST) {
		/* of a weight (PyTorch writes one for each initializer it shares) */
		if ((r = get_data(im, n, 0, &x)))
			return r;
		if (!(y = const_out(im, n, x->f ? DT_FLOAT : DT_INT64, x->ndim, x->dims)))
			return im->err->code;
		if (x->f)
			memcpy(y->f, x->f, (size_t)x->numel * sizeof(float));
		else
			memcpy(y->i, x->i, (size_t)x->numel * sizeof(int64_t));
		return 0;
	}
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
	set_alias(im, n, 0, x->node, x->rank);
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

/* ---------------------------------------------------------------- constants folded */

/* Shape of an activation ([N, ...], N symbolic) or of a constant. */
static int map_shape(struct imp *im, int k, const Onnx__NodeProto *n)
{
	int64_t full[MC_MAX_DIMS + 1], start, end, len;
	struct val *x = n->n_input ? val_find(im, n->input[0]) : NULL, *y;
	int R, r;

	if (x && x->kind == V_CONST) {
		R = x->ndim;
		memcpy(full, x->dims, (size_t)R * sizeof(int64_t));
	} else {
		if ((r = get_act_lazy(im, n, 0, 1, &x)))
			return r;
		R = onnx_shape(im, x, full + 1) + 1;
		if (R < 1)
			return node_err(im, n, MC_EINVAL, "the shape of '%s' is not known",
					x->name);
		full[0] = SYM_BATCH;
		if (R == 4) {
			full[2] += x->pad[0] + x->pad[2];
			full[3] += x->pad[1] + x->pad[3];
		}
	}
	if ((r = attr_int(im, n, "start", 0, &start)) || (r = attr_int(im, n, "end", R, &end)))
		return r;
	start = start < 0 ? start + R : start;
	end = end < 0 ? end + R : end;
	start = start < 0 ? 0 : start > R ? R : start;
	end = end < start ? start : end > R ? R : end;
	len = end - start;
	if (!(y = const_out(im, n, DT_INT64, 1, &len)))
		return im->err->code;
	memcpy(y->i, full + start, (size_t)len * sizeof(int64_t));
	return 0;
}

/* Gather along axis 0 of a 1-D constant (a shape). */
static int map_gather(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *x, *ix, *y;
	int64_t axis;
	int r;

	if ((r = get_data(im, n, 0, &x)) || (r = get_const(im, n, 1, DT_INT64, 0, &ix)) ||
	    (r = attr_int(im, n, "axis", 0, &axis)))
		return r;
	if (x->ndim != 1 || axis_of(axis, 1) != 0)
		return node_err(im, n, MC_EINVAL,
				"gathers along axis %lld of a %d-D constant; mcomp folds Gather "
				"of a 1-D constant (a shape) only",
				(long long)axis, x->ndim);
	if (!(y = const_out(im, n, x->f ? DT_FLOAT : DT_INT64, ix->ndim, ix->dims)))
		return im->err->code;
	for (int64_t j = 0; j < ix->numel; j++) {
		int64_t q = ix->i[j] < 0 ? ix->i[j] + x->numel : ix->i[j];

		if (q < 0 || q >= x->numel)
			return node_err(im, n, MC_EINVAL,
					"index %lld is out of range for %lld values",
					(long long)ix->i[j], (long long)x->numel);
		put(y, j, x, q);
	}
	return 0;
}

/* The per-sample ONNX shape of x with axes ax removed (squeeze) or inserted. */
static int map_squeeze(struct imp *im, int k, const Onnx__NodeProto *n)
{
	int unsq = !strcmp(n->op_type, "Unsqueeze");
	int64_t ax[MC_MAX_DIMS], in[MC_MAX_DIMS + 1], out[MC_MAX_DIMS + 1];
	char mark[MC_MAX_DIMS + 2] = {0};
	struct val *x = n->n_input ? val_find(im, n->input[0]) : NULL, *y;
	int na, R, RO, r, cst = x && x->kind == V_CONST, after_c = 1;

	if ((r = get_axes(im, n, 13, ax, &na)))
		return r;
	if (unsq && na < 0)
		return node_err(im, n, MC_ECORRUPT, "has no axes");
	if (cst) {
		R = x->ndim;
		memcpy(in, x->dims, (size_t)R * sizeof(int64_t));
	} else {
		if ((r = get_act(im, n, 0, &x)))
			return r;
		R = onnx_shape(im, x, in + 1) + 1;
		in[0] = 1;
		if (R < 1)
			return node_err(im, n, MC_EINVAL, "the shape of '%s' is not known",
					x->name);
	}
	RO = unsq ? R + na : R;
	if (RO > MC_MAX_DIMS)
		return node_err(im, n, MC_EINVAL, "gives more than %d dimensions", MC_MAX_DIMS);
	for (int j = 0; j < na; j++) {
		int a = axis_of(ax[j], RO);

		if (a < 0 || mark[a])
			return node_err(im, n, MC_EINVAL, "axis %lld is out of range or repeated",
					(long long)ax[j]);
		mark[a] = 1;
		after_c &= a >= 2;
	}
	if (!unsq) {
		for (int j = 0; na < 0 && j < R; j++) /* no axes: every 1 but N */
			mark[j] = j > 0 && in[j] == 1;
		for (int j = 0; j < R; j++)
			if (mark[j] && in[j] != 1)
				return node_err(im, n, MC_EINVAL,
						"squeezes axis %d, of size %lld, not 1", j,
						(long long)in[j]);
		RO = 0;
		for (int j = 0; j < R; j++)
			if (!mark[j])
				out[RO++] = in[j];
			else
				after_c &= j >= 2;
	} else {
		for (int j = 0, q = 0; j < RO; j++)
			out[j] = mark[j] ? 1 : in[q++];
	}
	if (cst) {
		if (!(y = const_out(im, n, x->f ? DT_FLOAT : DT_INT64, RO, out)))
			return im->err->code;
		for (int64_t j = 0; j < x->numel; j++)
			put(y, j, x, j);
		return 0;
	}
	/* [C] of rank r is mcomp's [C] for any number of trailing ones */
	if (after_c && RO >= 2 && act_shape(im, x, in) == 1) {
		set_alias(im, n, 0, x->node, RO - 1);
		return 0;
	}
	/* [C, 1, 1] squeezed to [C] (or [C, 1]) is a flatten */
	if (!unsq && after_c && RO >= 2) {
		int64_t s[MC_MAX_DIMS];
		int nd = act_shape(im, x, s), ones = 1;

		for (int d = 1; d < nd; d++)
			ones &= s[d] == 1;
		if (ones && nd > 1) {
			int i = add(im, n, "flatten", &x, 1, NULL);

			if (i < 0)
				return i;
			set_act(im, n, 0, i, RO - 1);
			return 0;
		}
	}
	return node_err(im, n, MC_EINVAL,
			"changes the shape of '%s' other than by ones after its channels; "
			"mcomp reads %s of [N, C, 1, ..., 1] only (a pooled value)",
			x->name, n->op_type);
}

/* ReduceMean over H and W of [N, C, H, W] (x.mean((2, 3), keepdim=True)): a global average. */
static int map_reduce_mean(struct imp *im, int k, const Onnx__NodeProto *n)
{
	int64_t shape[MC_MAX_DIMS], ax[MC_MAX_DIMS], keep, noop;
	int na, r, i, mask = 0;
	struct val *x;

	if ((r = get_act(im, n, 0, &x)) || (r = need_image(im, n, x, shape)) ||
	    (r = get_axes(im, n, 18, ax, &na)) || (r = attr_int(im, n, "keepdims", 1, &keep)) ||
	    (r = attr_int(im, n, "noop_with_empty_axes", 0, &noop)))
		return r;
	for (int j = 0; j < na; j++) {
		int a = axis_of(ax[j], 4);

		mask |= a < 0 ? 1 << 8 : 1 << a;
	}
	if (mask != 12)
		return node_err(
		    im, n, MC_EINVAL,
		    "averages over axes other than 2 and 3 of [N, C, H, W]; mcomp reads "
		    "ReduceMean over height and width (a global average) only");
	i = add(im, n, "global_avgpool", &x, 1, NULL);
	if (i < 0)
		return i;
	/* [N, C, 1, 1], or [N, C] without keepdims: mcomp's [C] either way */
	set_act(im, n, 0, i, keep ? 3 : 1);
	return 0;
}

/*
 * Concat of activations along axis 1 (channels of [N, C, H, W], features of
 * [N, F]): an mcomp concat, whose axis is the first of each sample.
 */
static int concat_acts(struct imp *im, const Onnx__NodeProto *n, int64_t axis)
{
	struct val *in[MC_NODE_MAX_INPUTS];
	int r, i;

	if (n->n_input < 2 || n->n_input > MC_NODE_MAX_INPUTS)
		return node_err(im, n, MC_EINVAL,
				"joins %zu activations; mcomp's concat takes 2 to %d (chain "
				"Concats for more)",
				n->n_input, MC_NODE_MAX_INPUTS);
	for (size_t q = 0; q < n->n_input; q++)
		if ((r = get_act(im, n, q, &in[q])))
			return r;
	for (size_t q = 1; q < n->n_input; q++)
		if (in[q]->rank != in[0]->rank)
			return node_err(im, n, MC_EINVAL, "joins '%s' and '%s' of different ranks",
					in[0]->name, in[q]->name);
	if (axis < 0)
		axis += in[0]->rank + 1;
	if (axis != 1)
		return node_err(im, n, MC_EINVAL,
				"joins activations of rank %d on axis %lld; mcomp concatenates "
				"along axis 1 (channels or features) only",
				in[0]->rank + 1, (long long)axis);
	i = add(im, n, "concat", in, (int)n->n_input, NULL);
	if (i < 0)
		return i;
	set_act(im, n, 0, i, in[0]->rank);
	return 0;
}

/* Concat of constants (shapes), or of activations (concat_acts). */
static int map_concat(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *x[64], *y;
	int64_t axis, dims[MC_MAX_DIMS], outer = 1, inner = 1, o = 0;
	int r, a;

	if (!n->n_input || n->n_input > 64)
		return node_err(im, n, MC_EINVAL, "has %zu inputs; mcomp folds 1 to 64",
				n->n_input);
	if ((r = attr_int(im, n, "axis", 0, &axis)))
		return r;
	for (size_t q = 0; q < n->n_input; q++) {
		struct val *v = val_find(im, n->input[q]);

		if (v && v->kind == V_ACT)
			return concat_acts(im, n, axis);
	}
	for (size_t q = 0; q < n->n_input; q++)
		if ((r = get_data(im, n, q, &x[q])))
			return r;
	a = axis_of(axis, x[0]->ndim);
	if (a < 0)
		return node_err(im, n, MC_EINVAL, "axis %lld of %d-D constants", (long long)axis,
				x[0]->ndim);
	memcpy(dims, x[0]->dims, sizeof(dims));
	dims[a] = 0;
	for (size_t q = 0; q < n->n_input; q++) {
		if (x[q]->ndim != x[0]->ndim || !x[q]->f != !x[0]->f)
			return node_err(im, n, MC_EINVAL,
					"joins constants of different ranks or types");
		for (int d = 0; d < x[0]->ndim; d++)
			if (d != a && x[q]->dims[d] != x[0]->dims[d])
				return node_err(im, n, MC_EINVAL,
						"joins constants of different shapes");
		dims[a] += x[q]->dims[a];
	}
	for (int d = 0; d < a; d++)
		outer *= dims[d];
	for (int d = a + 1; d < x[0]->ndim; d++)
		inner *= dims[d];
	if (!(y = const_out(im, n, x[0]->f ? DT_FLOAT : DT_INT64, x[0]->ndim, dims)))
		return im->err->code;
	for (int64_t p = 0; p < outer; p++)
		for (size_t q = 0; q < n->n_input; q++)
			for (int64_t j = 0; j < x[q]->dims[a] * inner; j++)
				put(y, o++, x[q], p * x[q]->dims[a] * inner + j);
	return 0;
}

/* Row-major strides of dims. */
static void strides_of(int nd, const int64_t *dims, int64_t *st)
{
	int64_t s = 1;

	for (int d = nd - 1; d >= 0; d--) {
		st[d] = s;
		s *= dims[d];
	}
}

/* y[idx] = x[start + idx * step] per axis, over every index of y. */
static void gather_strided(struct val *y, const struct val *x, const int64_t *start,
			   const int64_t *step, const int *perm)
{
	int64_t xs[MC_MAX_DIMS], idx[MC_MAX_DIMS] = {0};
	int nd = y->ndim;

	strides_of(x->ndim, x->dims, xs);
	for (int64_t o = 0; o < y->numel; o++) {
		int64_t j = 0;

		for (int d = 0; d < nd; d++)
			j += (start[d] + idx[d] * step[d]) * xs[perm ? perm[d] : d];
		put(y, o, x, j);
		for (int d = nd - 1; d >= 0; d--) {
			if (++idx[d] < y->dims[d])
				break;
			idx[d] = 0;
		}
	}
}

/* Slice of a constant (opset 10 on: starts, ends, axes, steps as inputs). */
static int map_slice(struct imp *im, int k, const Onnx__NodeProto *n)
{
	int64_t start[MC_MAX_DIMS], step[MC_MAX_DIMS], dims[MC_MAX_DIMS];
	struct val *x, *st, *en, *ax = NULL, *sp = NULL, *y;
	int r;

	if (im->opset < 10)
		return node_err(im, n, MC_EINVAL,
				"Slice of opset 9 takes attributes; mcomp folds Slice of opset 10 "
				"and later");
	if ((r = get_data(im, n, 0, &x)) || (r = get_const(im, n, 1, DT_INT64, 0, &st)) ||
	    (r = get_const(im, n, 2, DT_INT64, 0, &en)) ||
	    (r = get_const(im, n, 3, DT_INT64, 1, &ax)) ||
	    (r = get_const(im, n, 4, DT_INT64, 1, &sp)))
		return r;
	if (st->numel != en->numel || (ax && ax->numel != st->numel) ||
	    (sp && sp->numel != st->numel) || st->numel > x->ndim)
		return node_err(im, n, MC_EINVAL, "starts, ends, axes and steps differ in length");
	for (int d = 0; d < x->ndim; d++) {
		start[d] = 0;
		step[d] = 1;
		dims[d] = x->dims[d];
	}
	for (int64_t j = 0; j < st->numel; j++) {
		int a = axis_of(ax ? ax->i[j] : j, x->ndim);
		int64_t L = x->dims[a >= 0 ? a : 0], s = sp ? sp->i[j] : 1, b = st->i[j],
			e = en->i[j];

		if (a < 0 || s == 0)
			return node_err(im, n, MC_EINVAL, "axis or step %lld is out of range",
					(long long)j);
		/* a step past the axis takes one element, as a step of L does; the
		 * counts below then cannot overflow (found by fuzz/onnx.c) */
		if (s > (L > 1 ? L : 1))
			s = L > 1 ? L : 1;
		else if (s < -(L > 1 ? L : 1))
			s = -(L > 1 ? L : 1);
		b = b < 0 ? b + L : b;
		e = e < 0 && e > INT64_MIN / 2 ? e + L : e;
		if (s > 0) {
			b = b < 0 ? 0 : b > L ? L : b;
			e = e < 0 ? 0 : e > L ? L : e;
			dims[a] = e > b ? (e - b + s - 1) / s : 0;
		} else {
			b = b < 0 ? -1 : b > L - 1 ? L - 1 : b;
			e = e < -1 ? -1 : e > L - 1 ? L - 1 : e;
			dims[a] = b > e ? (b - e - s - 1) / -s : 0;
		}
		start[a] = b;
		step[a] = s;
	}
	if (!(y = const_out(im, n, x->f ? DT_FLOAT : DT_INT64, x->ndim, dims)))
		return im->err->code;
	gather_strided(y, x, start, step, NULL);
	return 0;
}

/* Transpose of a constant. */
static int map_transpose(struct imp *im, int k, const Onnx__NodeProto *n)
{
	const Onnx__AttributeProto *pa = attr(n, "perm");
	int64_t zero[MC_MAX_DIMS] = {0}, one[MC_MAX_DIMS], dims[MC_MAX_DIMS];
	int perm[MC_MAX_DIMS], seen = 0;
	struct val *x, *y;
	int r;

	if ((r = get_data(im, n, 0, &x)))
		return r;
	if (pa && pa->n_ints != (size_t)x->ndim)
		return node_err(im, n, MC_EINVAL, "perm has %zu values for %d dimensions",
				pa->n_ints, x->ndim);
	for (int d = 0; d < x->ndim; d++) {
		perm[d] = pa ? axis_of(pa->ints[d], x->ndim) : x->ndim - 1 - d;
		if (perm[d] < 0 || (seen & 1 << perm[d]))
			return node_err(im, n, MC_EINVAL, "perm is not a permutation");
		seen |= 1 << perm[d];
		dims[d] = x->dims[perm[d]];
		one[d] = 1;
	}
	if (!(y = const_out(im, n, x->f ? DT_FLOAT : DT_INT64, x->ndim, dims)))
		return im->err->code;
	gather_strided(y, x, zero, one, perm);
	return 0;
}

/* Cast of a constant to float or an integer type; of a float activation to float. */
static int map_cast(struct imp *im, int k, const Onnx__NodeProto *n)
{
	struct val *x = n->n_input ? val_find(im, n->input[0]) : NULL, *y;
	int64_t to;
	int r;

	if ((r = attr_int(im, n, "to", 0, &to)))
		return r;
	if (x && x->kind != V_CONST) {
		if (to != DT_FLOAT)
			return node_err(
			    im, n, MC_EINVAL,
			    "casts '%s' to ONNX data type %lld; mcomp computes in float", x->name,
			    (long long)to);
		if ((r = get_act(im, n, 0, &x)))
			return r;
		set_alias(im, n, 0, x->node, x->rank);
		return 0;
	}
	if ((r = get_data(im, n, 0, &x)))
		return r;
	if (to != DT_FLOAT && to != DT_INT64 && to != DT_INT32 && to != DT_BOOL)
		return node_err(im, n, MC_EINVAL,
				"casts to ONNX data type %lld; mcomp folds casts to float, int32, "
				"int64 and bool",
				(long long)to);
	if (!(y = const_out(im, n, (int)to, x->ndim, x->dims)))
		return im->err->code;
	for (int64_t j = 0; j < x->numel; j++) {
		if (y->f)
			y->f[j] = (float)elem(x, j);
		else if (x->i)
			y->i[j] = to == DT_BOOL ? x->i[j] != 0 : x->i[j];
		else
			y->i[j] = to == DT_BOOL ? x->f[j] != 0 : (int64_t)x->f[j];
	}
	return 0;
}

/* ConstantOfShape: a constant of the given dims, all value (float 0 by default). */
static int map_constant_of_shape(struct imp *im, int k, const Onnx__NodeProto *n)
{
	const Onnx__AttributeProto *a = attr(n, "value");
	struct val *sh, *y, fill_v = {.name = "value"};
	int r, dt = DT_FLOAT;

	if ((r = get_const(im, n, 0, DT_INT64, 0, &sh)))
		return r;
	if (sh->numel > MC_MAX_DIMS)
		return node_err(im, n, MC_EINVAL, "gives %lld dimensions", (long long)sh->numel);
	if (a) {
		if (!a->t)
			return node_err(im, n, MC_ECORRUPT, "value is not a tensor");
		if ((r = const_from_tensor(im, &fill_v, a->t, "value")))
			return r;
		if (fill_v.numel != 1 || (!fill_v.f && !fill_v.i)) {
			free(fill_v.f);
			free(fill_v.i);
			return node_err(im, n, MC_EINVAL, "value is not one float or integer");
		}
		dt = fill_v.f ? DT_FLOAT : DT_INT64;
	}
	y = const_out(im, n, dt, (int)sh->numel, sh->i);
	for (int64_t j = 0; y && j < y->numel; j++) {
		if (y->f)
			y->f[j] = fill_v.f ? fill_v.f[0] : 0;
		else
			y->i[j] = fill_v.i[0];
	}
	free(fill_v.f);
	free(fill_v.i);
	return y ? 0 : im->err->code;
}

/* Add, Sub, Mul, Div of two constants: of one shape, or one a single value. */
static int fold_arith(struct imp *im, const Onnx__NodeProto *n, char op, struct val *x0,
		      struct val *x1)
{
	struct val *big = x0->numel >= x1->numel ? x0 : x1, *y;
	int flt = x0->f || x1->f;

	if ((!x0->f && !x0->i) || (!x1->f && !x1->i) || !x0->f != !x1->f ||
	    (x0->numel != x1->numel && x0->numel != 1 && x1->numel != 1))
		return node_err(im, n, MC_EINVAL,
				"of constants '%s' and '%s': mcomp folds it for one type and one "
				"shape (or a single value) only",
				x0->name, x1->name);
	if (!(y = const_out(im, n, flt ? DT_FLOAT : DT_INT64, big->ndim, big->dims)))
		return im->err->code;
	for (int64_t j = 0; j < y->numel; j++) {
		int64_t j0 = x0->numel == 1 ? 0 : j, j1 = x1->numel == 1 ? 0 : j;

		if (flt) {
			float a = x0->f[j0], b = x1->f[j1];

			y->f[j] = op == 'A' ? a + b : op == 'S' ? a - b : op == 'M' ? a * b : a / b;
		} else if (x0->i[j0] == SYM_BATCH || x1->i[j1] == SYM_BATCH) {
			y->i[j] = SYM_BATCH; /* arithmetic on N is N's business */
		} else {
			int64_t a = x0->i[j0], b = x1->i[j1], v = 0;
			int over = op == 'A'   ? __builtin_add_overflow(a, b, &v)
				   : op == 'S' ? __builtin_sub_overflow(a, b, &v)
				   : op == 'M' ? __builtin_mul_overflow(a, b, &v)
					       : b == 0 || (b == -1 && a == INT64_MIN);

			if (over)
				return node_err(im, n, MC_EINVAL, "overflows or divides by zero");
			y->i[j] = op == 'D' ? a / b : v;
		}
	}
	return 0;
}

/* Add, Sub, Mul, Div: of constants folded; of a constant pending; of two activations. */
static int map_arith(struct imp *im, int k, const Onnx__NodeProto *n)
{
	char op = n->op_type[0];
	struct val *x0, *x1;

	if (n->n_input != 2 || !(x0 = val_find(im, n->input[0])) ||
	    !(x1 = val_find(im, n->input[1])))
		return node_err(im, n, MC_ECORRUPT, "needs two inputs");
	if (x0->kind == V_CONST && x1->kind == V_CONST)
		return fold_arith(im, n, op, x0, x1);
	if (x0->kind == V_CONST || x1->kind == V_CONST)
		return map_affine(im, k, n, op, x0->kind == V_CONST);
	if (op == 'A')
		return map_add(im, k, n);
	if (op == 'M')
		return map_mul(im, k, n);
	return node_err(im, n, MC_EINVAL,
			"of two computed values; mcomp reads %s by a constant only", n->op_type);
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
		im->n_before = mc_model_n_nodes(im->m);
		r = ops[op_index(n->op_type)].map(im, k, n);
		if (r)
			return r;
	}
	out = val_find(im, im->g->output[0]->name);
	if (out->kind == V_ACT && out->producer >= 0 &&
	    (r = materialize(im, im->g->node[out->producer], out, 0)))
		return r;
	if (out->kind != V_ACT || out->node == MC_NODE_INPUT ||
	    out->node != mc_model_n_nodes(im->m) - 1)
		return mc_err_set(im->err, MC_EINVAL,
				  "%s: the graph output '%s' is %s; mcomp needs a model whose "
				  "output is computed from its input",
				  im->origin, out->name,
				  out->kind == V_CONST ? "a constant" : "the input itself");
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
		free(im.v[i].a);
		free(im.v[i].b);
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
