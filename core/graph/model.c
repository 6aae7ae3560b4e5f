/* SPDX-License-Identifier: MIT */
/*
 * model.c - models as graphs of ops: building from architecture JSON and
 * writing it back, parameter bookkeeping, and the executor (forward and
 * backward over a batch).
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <mcomp/model.h>

/* Init streams live in their own range of Philox streams, apart from the
 * shuffling streams of training. */
#define STREAM_INIT (1ull << 56)

struct mc_exec {
	const struct mc_model *m;
	int max_batch, training, n;
	float **act;   /* [n_nodes] outputs, [max_batch, out_numel] */
	float **dact;  /* [n_nodes] output gradients (training) */
	float **grads; /* [n_nodes * MC_NODE_MAX_PARAMS] parameter gradients (training) */
	int *uses;     /* [n_nodes] how many node inputs read each node */
	int *needs;    /* [n_nodes] a trained parameter lies at or before the node */
	int *written;  /* [n_nodes] during backward: dact holds a value */
	float *scratch[MC_NODE_MAX_INPUTS]; /* input gradients to be added in */
	const float *x;
	struct mc_run run; /* of the last forward */
};

/* ---------------------------------------------------------------- lifetime */

static void node_clear(struct mc_node *nd)
{
	if (nd->op && nd->op->release)
		nd->op->release(nd);
	for (int p = 0; p < nd->n_params; p++)
		mc_tensor_free(nd->params[p]);
	if (nd->attrs && nd->op)
		mc_param_free(nd->op->attrs, nd->attrs);
	free(nd->attrs);
	free(nd->name);
}

void mc_model_free(struct mc_model *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->n_nodes; i++)
		node_clear(&m->nodes[i]);
	free(m->nodes);
	free(m);
}

/* Output shape of the node's inputs; sets up its params and out_numel. */
static int node_setup(struct mc_model *m, int i, struct mc_err *err)
{
	struct mc_node *nd = &m->nodes[i];
	int in_ndim[MC_NODE_MAX_INPUTS];
	int64_t in_shape[MC_NODE_MAX_INPUTS][MC_MAX_DIMS];
	size_t numel = 1;
	int r;

	for (int k = 0; k < nd->n_inputs; k++) {
		int src = nd->inputs[k];

		in_ndim[k] = src == MC_NODE_INPUT ? m->in_ndim : m->nodes[src].out_ndim;
		memcpy(in_shape[k], src == MC_NODE_INPUT ? m->in_shape : m->nodes[src].out_shape,
		       sizeof(in_shape[k]));
	}
	memset(nd->out_shape, 0, sizeof(nd->out_shape));
	r = nd->op->setup(nd, in_ndim, (const int64_t(*)[MC_MAX_DIMS])in_shape, err);
	if (r)
		return r;
	for (int d = 0; d < nd->out_ndim; d++)
		if (nd->out_shape[d] < 1 ||
		    mc_mul_overflow(numel, (size_t)nd->out_shape[d], &numel) || numel > INT_MAX)
			return mc_err_set(
			    err, MC_EINVAL,
			    "output of %lld values per sample is too large; use a smaller layer",
			    (long long)numel);
	nd->out_numel = (int64_t)numel;
	return 0;
}

/* ---------------------------------------------------------------- from JSON */

static const char *const top_keys[] = {"format", "input", "nodes", NULL};
static const char *const node_keys[] = {"name", "op", "inputs", "attrs", NULL};

/* Refuses keys of obj that are not in keys, suggesting the nearest. */
static int check_keys(json_t *obj, const char *const *keys, const char *origin, const char *where,
		      struct mc_err *err)
{
	const char *key;
	json_t *v;

	json_object_foreach (obj, key, v) {
		const char *near;
		int ok = 0;

		for (int i = 0; keys[i]; i++)
			ok |= !strcmp(keys[i], key);
		if (ok)
			continue;
		near = mc_suggest(keys, key);
		if (near)
			return mc_err_set(err, MC_EINVAL,
					  "%s: %sunknown key '%s'; did you mean '%s'?", origin,
					  where, key, near);
		return mc_err_set(err, MC_EINVAL, "%s: %sunknown key '%s'; remove it", origin,
				  where, key);
	}
	return 0;
}

/* The JSON scalar v as the text mc_param_set parses; 0, or -1 if not a scalar. */
static int scalar_text(json_t *v, char *buf, size_t n)
{
	switch (json_typeof(v)) {
	case JSON_INTEGER:
		snprintf(buf, n, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return 0;
	case JSON_REAL:
		snprintf(buf, n, "%.17g", json_real_value(v));
		return 0;
	case JSON_TRUE:
	case JSON_FALSE:
		snprintf(buf, n, "%s", json_is_true(v) ? "true" : "false");
		return 0;
	case JSON_STRING:
		snprintf(buf, n, "%s", json_string_value(v));
		return 0;
	default:
		return -1;
	}
}

static int parse_attrs(struct mc_node *nd, json_t *attrs, const char *origin, struct mc_err *err)
{
	const struct mc_param_def *defs = nd->op->attrs;
	const char *key;
	json_t *v;
	char text[1024];
	int r;

	r = mc_param_defaults(defs, nd->attrs, err);
	if (r)
		return mc_err_prefix(err, "%s: node '%s' (%s)", origin, nd->name, nd->op->name);
	if (attrs && !json_is_object(attrs))
		return mc_err_set(err, MC_EINVAL, "%s: node '%s': attrs must be an object", origin,
				  nd->name);
	json_object_foreach (attrs, key, v) {
		const struct mc_param_def *d = mc_param_find(defs, key);

		if (!d) {
			const char *near = mc_param_suggest(defs, key);

			if (near)
				return mc_err_set(
				    err, MC_EINVAL,
				    "%s: node '%s': %s has no attribute '%s'; did you mean '%s'?",
				    origin, nd->name, nd->op->name, key, near);
			return mc_err_set(err, MC_EINVAL,
					  "%s: node '%s': %s has no attribute '%s'; remove it",
					  origin, nd->name, nd->op->name, key);
		}
		if (d->type == MC_PARAM_TLIST && json_is_array(v)) {
			size_t i;
			json_t *item;

			mc_param_list_clear(d, nd->attrs);
			json_array_foreach (v, i, item) {
				if (scalar_text(item, text, sizeof(text)))
					return mc_err_set(
					    err, MC_EINVAL,
					    "%s: node '%s': %s: items must be numbers or strings",
					    origin, nd->name, key);
				r = mc_param_set(d, nd->attrs, text, err);
				if (r)
					return mc_err_prefix(err, "%s: node '%s'", origin,
							     nd->name);
			}
			continue;
		}
		if (scalar_text(v, text, sizeof(text)))
			return mc_err_set(err, MC_EINVAL,
					  "%s: node '%s': %s: expected a number, boolean or string",
					  origin, nd->name, key);
		r = mc_param_set(d, nd->attrs, text, err);
		if (r)
			return mc_err_prefix(err, "%s: node '%s'", origin, nd->name);
	}
	for (int i = 0; defs[i].name; i++)
		if (!defs[i].def && !json_object_get(attrs, defs[i].name))
			return mc_err_set(
			    err, MC_EINVAL,
			    "%s: node '%s': %s needs attribute '%s' (%s); add it to attrs", origin,
			    nd->name, nd->op->name, defs[i].name, defs[i].help);
	return 0;
}

static int parse_inputs(struct mc_model *m, int i, json_t *inputs, const char *origin,
			struct mc_err *err)
{
	struct mc_node *nd = &m->nodes[i];
	size_t k;
	json_t *v;

	if (!inputs) {
		/* Sugar for a chain: read the node before, or the model input. */
		if (nd->op->n_inputs != 1)
			return mc_err_set(
			    err, MC_EINVAL,
			    "%s: node '%s': %s takes %d inputs; list them in \"inputs\"", origin,
			    nd->name, nd->op->name, nd->op->n_inputs);
		nd->n_inputs = 1;
		nd->inputs[0] = i ? i - 1 : MC_NODE_INPUT;
		return 0;
	}
	if (!json_is_array(inputs) || json_array_size(inputs) != (size_t)nd->op->n_inputs)
		return mc_err_set(err, MC_EINVAL,
				  "%s: node '%s': %s takes %d input%s; give \"inputs\" as a list "
				  "of that many node names",
				  origin, nd->name, nd->op->name, nd->op->n_inputs,
				  nd->op->n_inputs == 1 ? "" : "s");
	json_array_foreach (inputs, k, v) {
		const char *s = json_string_value(v);
		int src = -2;

		if (!s)
			return mc_err_set(err, MC_EINVAL,
					  "%s: node '%s': inputs must be node names", origin,
					  nd->name);
		if (!strcmp(s, "input"))
			src = MC_NODE_INPUT;
		for (int j = 0; j < i && src == -2; j++)
			if (!strcmp(m->nodes[j].name, s))
				src = j;
		if (src == -2)
			return mc_err_set(err, MC_EINVAL,
					  "%s: node '%s': input '%s' is not an earlier node; use "
					  "\"input\" or the name of a node listed before it",
					  origin, nd->name, s);
		nd->inputs[k] = src;
	}
	nd->n_inputs = (int)json_array_size(inputs);
	return 0;
}

static int parse_node(struct mc_model *m, int i, json_t *jn, const char *origin, struct mc_err *err)
{
	struct mc_node *nd = &m->nodes[i];
	json_t *jname = json_object_get(jn, "name"), *jop = json_object_get(jn, "op");
	const char *opname = json_string_value(jop);
	char where[64], auto_name[64];
	int r;

	snprintf(where, sizeof(where), "node %d: ", i);
	if (!json_is_object(jn))
		return mc_err_set(err, MC_EINVAL, "%s: %snot an object; write {\"op\": ..., ...}",
				  origin, where);
	r = check_keys(jn, node_keys, origin, where, err);
	if (r)
		return r;
	if (!opname)
		return mc_err_set(err, MC_EINVAL,
				  "%s: %s\"op\" is missing or not a string; name one of the ops "
				  "(linear, relu, ...)",
				  origin, where);
	nd->op = mc_op_find(opname);
	if (!nd->op) {
		const char *near = mc_suggest(mc_op_names(), opname);

		if (near)
			return mc_err_set(err, MC_EINVAL,
					  "%s: %sunknown op '%s'; did you mean '%s'?", origin,
					  where, opname, near);
		char list[512] = "";

		for (const char *const *o = mc_op_names(); *o; o++)
			snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
				 o == mc_op_names() ? "" : ", ", *o);
		return mc_err_set(err, MC_EINVAL, "%s: %sunknown op '%s'; the ops are %s", origin,
				  where, opname, list);
	}
	if (jname && (!json_is_string(jname) || !*json_string_value(jname)))
		return mc_err_set(err, MC_EINVAL, "%s: %s\"name\" must be a non-empty string",
				  origin, where);
	if (!jname) {
		/* Unnamed nodes are counted per op: linear1, relu1, linear2, ... */
		int nth = 1;

		for (int j = 0; j < i; j++)
			nth += m->nodes[j].op == nd->op;
		snprintf(auto_name, sizeof(auto_name), "%s%d", nd->op->name, nth);
	}
	nd->name = strdup(jname ? json_string_value(jname) : auto_name);
	if (!nd->name)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", origin);
	if (!strcmp(nd->name, "input"))
		return mc_err_set(err, MC_EINVAL,
				  "%s: %s\"input\" names the model input; rename the node", origin,
				  where);
	for (int j = 0; j < i; j++)
		if (!strcmp(m->nodes[j].name, nd->name))
			return mc_err_set(
			    err, MC_EINVAL,
			    "%s: %sname '%s' is used by node %d too; names must be unique", origin,
			    where, nd->name, j);
	nd->attrs = calloc(1, nd->op->attr_size ? nd->op->attr_size : 1);
	if (!nd->attrs)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", origin);
	r = parse_attrs(nd, json_object_get(jn, "attrs"), origin, err);
	if (!r)
		r = parse_inputs(m, i, json_object_get(jn, "inputs"), origin, err);
	if (!r && (r = node_setup(m, i, err)))
		mc_err_prefix(err, "%s: node '%s' (%s)", origin, nd->name, nd->op->name);
	return r;
}

struct mc_model *mc_model_from_arch(const char *json, const char *origin, struct mc_err *err)
{
	struct mc_model *m = NULL;
	json_t *root, *jin, *jnodes, *jfmt;
	json_error_t je;
	size_t numel = 1, k;
	json_t *v;

	if (!origin)
		origin = "architecture";
	root = json_loads(json ? json : "", JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: architecture JSON, line %d column %d: %s; fix the JSON", origin,
			   je.line, je.column, je.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		mc_err_set(err, MC_EINVAL, "%s: the architecture must be a JSON object", origin);
		goto fail;
	}
	if (check_keys(root, top_keys, origin, "", err))
		goto fail;
	jfmt = json_object_get(root, "format");
	if (jfmt && (!json_is_integer(jfmt) || json_integer_value(jfmt) != MC_ARCH_FORMAT)) {
		mc_err_set(err, MC_EINVAL,
			   "%s: architecture format must be %d; this mcomp reads format %d only",
			   origin, MC_ARCH_FORMAT, MC_ARCH_FORMAT);
		goto fail;
	}
	m = calloc(1, sizeof(*m));
	if (!m) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory", origin);
		goto fail;
	}
	jin = json_object_get(root, "input");
	if (!json_is_array(jin) || json_array_size(jin) < 1 || json_array_size(jin) > MC_MAX_DIMS) {
		mc_err_set(err, MC_EINVAL,
			   "%s: \"input\" must be the per-sample shape, a list of 1 to %d sizes "
			   "such as [1, 28, 28]",
			   origin, MC_MAX_DIMS);
		goto fail;
	}
	json_array_foreach (jin, k, v) {
		json_int_t d = json_integer_value(v);

		if (!json_is_integer(v) || d < 1 || d > INT_MAX ||
		    mc_mul_overflow(numel, (size_t)d, &numel) || numel > INT_MAX) {
			mc_err_set(err, MC_EINVAL,
				   "%s: input dimension %zu must be a positive integer and the "
				   "sample size at most %d values",
				   origin, k, INT_MAX);
			goto fail;
		}
		m->in_shape[k] = d;
	}
	m->in_ndim = (int)json_array_size(jin);
	m->in_numel = (int64_t)numel;
	jnodes = json_object_get(root, "nodes");
	if (!json_is_array(jnodes) || json_array_size(jnodes) < 1 ||
	    json_array_size(jnodes) > INT_MAX / 2) {
		mc_err_set(err, MC_EINVAL, "%s: \"nodes\" must be a non-empty list of nodes",
			   origin);
		goto fail;
	}
	m->nodes = calloc(json_array_size(jnodes), sizeof(*m->nodes));
	if (!m->nodes) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory", origin);
		goto fail;
	}
	json_array_foreach (jnodes, k, v) {
		m->n_nodes = (int)k + 1;
		if (parse_node(m, (int)k, v, origin, err))
			goto fail;
	}
	m->n_classes = m->nodes[m->n_nodes - 1].out_numel;
	json_decref(root);
	return m;

fail:
	mc_model_free(m);
	json_decref(root);
	return NULL;
}

/* ---------------------------------------------------------------- to JSON */

static json_t *attr_json(const struct mc_param_def *d, const void *attrs)
{
	const char *field = (const char *)attrs + d->offset;
	char text[1024];

	switch (d->type) {
	case MC_PARAM_TINT:
		return json_integer(*(const int *)field);
	case MC_PARAM_TFLOAT:
		/* mc_param_format writes the shortest text that reads back the same. */
		mc_param_format(d, attrs, text, sizeof(text));
		return json_real(strtod(text, NULL));
	case MC_PARAM_TBOOL:
		return json_boolean(*(const int *)field);
	case MC_PARAM_TENUM: {
		int v = *(const int *)field;

		return json_string(d->choices && v >= 0 ? d->choices[v] : "");
	}
	case MC_PARAM_TLIST: {
		const struct mc_list *l = (const struct mc_list *)field;
		json_t *a = json_array();

		for (int i = 0; a && i < l->n; i++) {
			json_t *item =
			    l->num ? (d->elem == MC_PARAM_TINT ? json_integer((json_int_t)l->num[i])
							       : json_real(l->num[i]))
				   : json_string(l->str[i]);

			if (json_array_append_new(a, item)) {
				json_decref(a);
				return NULL;
			}
		}
		return a;
	}
	default: {
		const char *s = *(char *const *)field;

		return s ? json_string(s) : json_null();
	}
	}
}

char *mc_model_arch(const struct mc_model *m)
{
	json_t *root = json_object(), *jin = json_array(), *jnodes = json_array();
	char *out = NULL;

	if (!root || !jin || !jnodes)
		goto done;
	for (int d = 0; d < m->in_ndim; d++)
		if (json_array_append_new(jin, json_integer(m->in_shape[d])))
			goto done;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *nd = &m->nodes[i];
		json_t *jn = json_object(), *ins = json_array(), *attrs = json_object();

		if (!jn || !ins || !attrs || json_array_append_new(jnodes, jn)) {
			json_decref(jn);
			json_decref(ins);
			json_decref(attrs);
			goto done;
		}
		json_object_set_new(jn, "name", json_string(nd->name));
		json_object_set_new(jn, "op", json_string(nd->op->name));
		for (int k = 0; k < nd->n_inputs; k++) {
			int src = nd->inputs[k];

			json_array_append_new(
			    ins, json_string(src == MC_NODE_INPUT ? "input" : m->nodes[src].name));
		}
		json_object_set_new(jn, "inputs", ins);
		for (int p = 0; nd->op->attrs[p].name; p++) {
			json_t *v = attr_json(&nd->op->attrs[p], nd->attrs);

			if (!v || json_object_set_new(attrs, nd->op->attrs[p].name, v))
				goto done;
		}
		json_object_set_new(jn, "attrs", attrs);
	}
	if (json_object_set_new(root, "format", json_integer(MC_ARCH_FORMAT)) ||
	    json_object_set(root, "input", jin) || json_object_set(root, "nodes", jnodes))
		goto done;
	out = json_dumps(root, JSON_PRESERVE_ORDER | JSON_COMPACT);
done:
	json_decref(jin);
	json_decref(jnodes);
	json_decref(root);
	return out;
}

/* ---------------------------------------------------------------- parameters */

void mc_model_init(struct mc_model *m, uint64_t seed)
{
	for (int i = 0; i < m->n_nodes; i++) {
		struct mc_node *nd = &m->nodes[i];

		if (nd->op->init)
			nd->op->init(nd, seed, STREAM_INIT + (uint64_t)i * MC_NODE_MAX_PARAMS);
	}
}

struct mc_model *mc_model_dup(const struct mc_model *m, struct mc_err *err)
{
	struct mc_model *d = calloc(1, sizeof(*d));

	if (!d)
		goto nomem;
	*d = *m;
	d->n_nodes = 0;
	d->nodes = calloc((size_t)m->n_nodes, sizeof(*d->nodes));
	if (!d->nodes)
		goto nomem;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *s = &m->nodes[i];
		struct mc_node *t = &d->nodes[i];

		d->n_nodes = i + 1;
		*t = *s;
		t->name = NULL;
		t->attrs = NULL;
		t->n_params = 0;
		t->name = strdup(s->name);
		t->attrs = calloc(1, s->op->attr_size ? s->op->attr_size : 1);
		if (!t->name || !t->attrs ||
		    mc_param_copy(s->op->attrs, t->attrs, s->attrs, s->op->attr_size)) {
			/* A failed copy may leave pointers shared with s: forget them. */
			if (t->attrs)
				memset(t->attrs, 0, s->op->attr_size);
			goto nomem;
		}
		for (int p = 0; p < s->n_params; p++) {
			t->params[p] = mc_tensor_dup(s->params[p], err);
			if (!t->params[p])
				goto fail;
			t->n_params = p + 1;
		}
	}
	return d;

nomem:
	mc_err_set(err, MC_ENOMEM, "copying a model: out of memory");
fail:
	mc_model_free(d);
	return NULL;
}

struct mc_tensor *mc_model_param(const struct mc_model *m, const char *name)
{
	for (int i = 0; name && i < m->n_nodes; i++)
		for (int p = 0; p < m->nodes[i].n_params; p++) {
			struct mc_tensor *t = m->nodes[i].params[p];

			if (t->name && !strcmp(t->name, name))
				return t;
		}
	return NULL;
}

int64_t mc_model_nparams(const struct mc_model *m)
{
	int64_t n = 0;

	for (int i = 0; i < m->n_nodes; i++)
		for (int p = 0; p < m->nodes[i].n_params; p++)
			n += m->nodes[i].params[p]->numel;
	return n;
}

static int64_t tensor_nonzeros(const struct mc_tensor *t)
{
	int64_t nz = 0;

	for (int64_t i = 0; i < t->numel; i++) {
		switch (t->dtype) {
		case MC_F32:
			nz += ((const float *)t->data)[i] != 0.0f;
			break;
		case MC_S8:
		case MC_U8:
			nz += ((const uint8_t *)t->data)[i] != 0;
			break;
		case MC_S32:
			nz += ((const int32_t *)t->data)[i] != 0;
			break;
		case MC_Q4:
			nz += ((((const uint8_t *)t->data)[i / 2] >> (4 * (i % 2))) & 0xf) != 0;
			break;
		default:
			break;
		}
	}
	return nz;
}

int64_t mc_model_nonzeros(const struct mc_model *m)
{
	int64_t n = 0;

	for (int i = 0; i < m->n_nodes; i++)
		for (int p = 0; p < m->nodes[i].n_params; p++)
			n += tensor_nonzeros(m->nodes[i].params[p]);
	return n;
}

int64_t mc_model_flops(const struct mc_model *m)
{
	int64_t f = 0;

	for (int i = 0; i < m->n_nodes; i++)
		if (m->nodes[i].op->flops)
			f += m->nodes[i].op->flops(&m->nodes[i]);
	return f;
}

/* ---------------------------------------------------------------- folding */

/* How many node inputs read node i. */
static int readers(const struct mc_model *m, int i)
{
	int r = 0;

	for (int j = 0; j < m->n_nodes; j++)
		for (int k = 0; k < m->nodes[j].n_inputs; k++)
			r += m->nodes[j].inputs[k] == i;
	return r;
}

/* Scales row o of f's weight and shifts its bias by batch norm bn's inference affine map. */
static void fold_into(struct mc_node *f, const struct mc_node *bn)
{
	const struct mc_param_def *d = mc_param_find(bn->op->attrs, "eps");
	double eps = *(const double *)((const char *)bn->attrs + d->offset);
	const float *g = bn->params[0]->data, *beta = bn->params[1]->data;
	const float *rm = bn->params[2]->data, *rv = bn->params[3]->data;
	float *w = f->params[0]->data, *b = f->params[1]->data;
	int64_t O = f->params[0]->shape[0], row = f->params[0]->numel / O;

	for (int64_t o = 0; o < O; o++) {
		double scale = g[o] / sqrt((double)rv[o] + eps);

		for (int64_t j = 0; j < row; j++)
			w[o * row + j] = (float)(w[o * row + j] * scale);
		b[o] = (float)((b[o] - (double)rm[o]) * scale + beta[o]);
	}
}

int mc_model_fold_batchnorm(struct mc_model *m, struct mc_err *err)
{
	const struct mc_op *bn_op = mc_op_find("batchnorm");
	const struct mc_op *conv = mc_op_find("conv2d"), *lin = mc_op_find("linear");
	int folded = 0;

	for (int i = 0; i < m->n_nodes; i++) {
		struct mc_node *bn = &m->nodes[i], *f;
		int src = bn->inputs[0];

		if (bn->op != bn_op || src == MC_NODE_INPUT)
			continue;
		f = &m->nodes[src];
		/* The producer's output must feed nothing but this batch norm, and
		 * removing the last node must leave the producer last. */
		if ((f->op != conv && f->op != lin) || readers(m, src) != 1 ||
		    f->params[0]->shape[0] != bn->params[0]->numel ||
		    (i == m->n_nodes - 1 && src != i - 1))
			continue;
		fold_into(f, bn);
		node_clear(bn);
		memmove(bn, bn + 1, (size_t)(m->n_nodes - i - 1) * sizeof(*bn));
		m->n_nodes--;
		for (int j = i; j < m->n_nodes; j++)
			for (int k = 0; k < m->nodes[j].n_inputs; k++) {
				int *in = &m->nodes[j].inputs[k];

				if (*in == i)
					*in = src;
				else if (*in > i)
					(*in)--;
			}
		folded++;
		i--;
	}
	(void)err; /* folding works in place and allocates nothing */
	return folded;
}

/* ---------------------------------------------------------------- executor */

void mc_exec_free(struct mc_exec *e)
{
	if (!e)
		return;
	for (int i = 0; i < e->m->n_nodes; i++) {
		if (e->act)
			mc_free(e->act[i]);
		if (e->dact)
			mc_free(e->dact[i]);
		for (int p = 0; e->grads && p < MC_NODE_MAX_PARAMS; p++)
			mc_free(e->grads[i * MC_NODE_MAX_PARAMS + p]);
	}
	for (int k = 0; k < MC_NODE_MAX_INPUTS; k++)
		mc_free(e->scratch[k]);
	mc_free(e->run.work);
	free(e->act);
	free(e->dact);
	free(e->grads);
	free(e->uses);
	free(e->needs);
	free(e->written);
	free(e);
}

struct mc_exec *mc_exec_new(const struct mc_model *m, int max_batch, int training,
			    struct mc_err *err)
{
	struct mc_exec *e = calloc(1, sizeof(*e));
	size_t nn = (size_t)m->n_nodes, max_in = 0, work = 0;
	int shared = 0;

	if (max_batch < 1) {
		free(e);
		mc_err_set(err, MC_EINVAL, "batch size %d: use 1 or more", max_batch);
		return NULL;
	}
	if (!e)
		goto nomem;
	e->m = m;
	e->max_batch = max_batch;
	e->training = training;
	e->run.training = training;
	e->act = calloc(nn, sizeof(*e->act));
	e->uses = calloc(nn, sizeof(*e->uses));
	e->written = calloc(nn, sizeof(*e->written));
	if (!e->act || !e->uses || !e->written)
		goto nomem;
	for (int i = 0; i < m->n_nodes; i++) {
		e->act[i] =
		    mc_calloc((size_t)max_batch * (size_t)m->nodes[i].out_numel, sizeof(float));
		if (!e->act[i])
			goto nomem;
		if (m->nodes[i].op->workspace) {
			size_t w = m->nodes[i].op->workspace(&m->nodes[i], max_batch);

			if (w > work)
				work = w;
		}
		for (int k = 0; k < m->nodes[i].n_inputs; k++) {
			int src = m->nodes[i].inputs[k];
			size_t in =
			    (size_t)(src == MC_NODE_INPUT ? m->in_numel : m->nodes[src].out_numel);

			if (src != MC_NODE_INPUT && ++e->uses[src] > 1)
				shared = 1;
			if (in > max_in)
				max_in = in;
		}
	}
	if (work) {
		e->run.work = mc_calloc(work, 1);
		if (!e->run.work)
			goto nomem;
	}
	if (!training)
		return e;
	e->needs = calloc(nn, sizeof(*e->needs));
	if (!e->needs)
		goto nomem;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *nd = &m->nodes[i];

		e->needs[i] = nd->n_params > nd->n_buffers;
		for (int k = 0; k < nd->n_inputs; k++)
			if (nd->inputs[k] != MC_NODE_INPUT && e->needs[nd->inputs[k]])
				e->needs[i] = 1;
	}
	e->dact = calloc(nn, sizeof(*e->dact));
	e->grads = calloc(nn * MC_NODE_MAX_PARAMS, sizeof(*e->grads));
	if (!e->dact || !e->grads)
		goto nomem;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *nd = &m->nodes[i];

		e->dact[i] = mc_calloc((size_t)max_batch * (size_t)nd->out_numel, sizeof(float));
		if (!e->dact[i])
			goto nomem;
		for (int p = 0; p < nd->n_params; p++) {
			float **g = &e->grads[i * MC_NODE_MAX_PARAMS + p];

			*g = mc_calloc((size_t)nd->params[p]->numel, sizeof(float));
			if (!*g)
				goto nomem;
		}
	}
	/* Nodes read by several inputs sum their gradients through scratch. */
	for (int k = 0; shared && k < MC_NODE_MAX_INPUTS; k++) {
		e->scratch[k] = mc_calloc((size_t)max_batch * max_in, sizeof(float));
		if (!e->scratch[k])
			goto nomem;
	}
	return e;

nomem:
	mc_exec_free(e);
	mc_err_set(err, MC_ENOMEM, "out of memory for activations of batch %d; use a smaller batch",
		   max_batch);
	return NULL;
}

const float *mc_forward(struct mc_exec *e, const float *x, int n)
{
	const struct mc_model *m = e->m;

	if (n > e->max_batch)
		n = e->max_batch; /* never write past the buffers */
	e->x = x;
	e->n = n;
	if (e->training)
		e->run.step++;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *nd = &m->nodes[i];
		const float *in[MC_NODE_MAX_INPUTS];

		for (int k = 0; k < nd->n_inputs; k++)
			in[k] = nd->inputs[k] == MC_NODE_INPUT ? x : e->act[nd->inputs[k]];
		nd->op->forward(nd, &e->run, n, in, e->act[i]);
	}
	return e->act[m->n_nodes - 1];
}

void mc_backward(struct mc_exec *e, const float *dlogits)
{
	const struct mc_model *m = e->m;
	int last = m->n_nodes - 1;

	if (!e->training || !e->x)
		return;
	memset(e->written, 0, (size_t)m->n_nodes * sizeof(*e->written));
	for (int i = last; i >= 0; i--) {
		const struct mc_node *nd = &m->nodes[i];
		const float *in[MC_NODE_MAX_INPUTS];
		float *din[MC_NODE_MAX_INPUTS];
		int add[MC_NODE_MAX_INPUTS];

		/* A node whose output reaches no loss has zero gradient: skip it. */
		if (i != last && !e->written[i])
			continue;
		for (int k = 0; k < nd->n_inputs; k++) {
			int src = nd->inputs[k];

			add[k] = 0;
			in[k] = src == MC_NODE_INPUT ? e->x : e->act[src];
			if (src == MC_NODE_INPUT) {
				din[k] = NULL;
			} else if (!e->needs[src]) {
				/* Nothing upstream learns: the input gradient would be
				 * thrown away (fc1's is a third of an MLP's backward). */
				din[k] = NULL;
			} else if (!e->written[src]) {
				din[k] = e->dact[src];
				e->written[src] = 1;
			} else {
				din[k] = e->scratch[k];
				add[k] = 1;
			}
		}
		nd->op->backward(nd, &e->run, e->n, in, e->act[i], i == last ? dlogits : e->dact[i],
				 din, &e->grads[i * MC_NODE_MAX_PARAMS]);
		for (int k = 0; k < nd->n_inputs; k++) {
			int64_t total;
			float *dst;

			if (!add[k])
				continue;
			dst = e->dact[nd->inputs[k]];
			total = (int64_t)e->n * m->nodes[nd->inputs[k]].out_numel;
			for (int64_t j = 0; j < total; j++)
				dst[j] += din[k][j];
		}
	}
}

void mc_exec_set_seed(struct mc_exec *e, uint64_t seed)
{
	e->run.seed = seed;
}

void mc_exec_zero_grad(struct mc_exec *e)
{
	if (!e->training)
		return;
	for (int i = 0; i < e->m->n_nodes; i++)
		for (int p = 0; p < e->m->nodes[i].n_params; p++)
			memset(e->grads[i * MC_NODE_MAX_PARAMS + p], 0,
			       (size_t)e->m->nodes[i].params[p]->numel * sizeof(float));
}

float *mc_exec_grad(struct mc_exec *e, int node, int param)
{
	if (!e->training || node < 0 || node >= e->m->n_nodes || param < 0 ||
	    param >= e->m->nodes[node].n_params)
		return NULL;
	return e->grads[node * MC_NODE_MAX_PARAMS + param];
}
