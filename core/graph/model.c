/* SPDX-License-Identifier: MIT */
/*
 * model.c - the model graph and its API (mcomp/graph.h): reading nodes,
 * the mutations, parameter bookkeeping and batch-norm folding.
 *
 * Every mutation is a change: a new list of slots (node, inputs, attributes
 * to set up with) built from the model's nodes, then committed in three
 * phases. Setup runs each affected op's shape inference on a copy of its
 * node, declaring parameters without data; a failure there frees the copies
 * and leaves the model as it was. Allocation then gives data to every
 * parameter that is new or changed shape; a failure there frees what it
 * allocated. Only then is anything of the model touched, and nothing after
 * can fail. A parameter that keeps its shape and dtype keeps its tensor.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base_int.h"
#include "graph/model_int.h"

/* Init streams live in their own range of Philox streams, apart from the
 * shuffling streams of training. */
#define STREAM_INIT (1ull << 56)

/* ---------------------------------------------------------------- nodes */

/* How many inputs op takes, as text: "2", or "2 to 4" for a variadic op. */
static const char *arity(const struct mc_op *op, char buf[16])
{
	if (op->n_inputs == MC_OP_VARIADIC)
		snprintf(buf, 16, "2 to %d", MC_NODE_MAX_INPUTS);
	else
		snprintf(buf, 16, "%d", op->n_inputs);
	return buf;
}

static void free_params(struct mc_node *nd)
{
	for (int p = 0; p < nd->n_params; p++)
		mc_tensor_free(nd->params[p]);
	nd->n_params = 0;
}

static void free_attrs(const struct mc_op *op, void *attrs)
{
	if (attrs && op)
		mc_param_free(op->attrs, attrs);
	free(attrs);
}

static void node_free(struct mc_node *nd)
{
	if (!nd)
		return;
	if (nd->op && nd->op->release)
		nd->op->release(nd);
	free_params(nd);
	free_attrs(nd->op, nd->attrs);
	free(nd->name);
	free(nd);
}

void mc_model_free(struct mc_model *m)
{
	if (!m)
		return;
	for (int i = 0; i < m->n_nodes; i++)
		node_free(m->nodes[i]);
	free(m->nodes);
	free(m);
}

int mc_node_add_param(struct mc_node *node, int p, const char *what, enum mc_dtype dtype,
		      int ndim, const int64_t *shape, struct mc_err *err)
{
	char name[512];

	if (p < 0 || p >= MC_NODE_MAX_PARAMS)
		return mc_err_set(err, MC_EINVAL, "parameter %d of %s: an op has at most %d", p,
				  node->op ? node->op->name : "?", MC_NODE_MAX_PARAMS);
	snprintf(name, sizeof(name), "%s.%s", node->name, what);
	mc_tensor_free(node->params[p]);
	node->params[p] = node->arch_only ? mc_tensor_new_shape(name, dtype, ndim, shape, err)
					  : mc_tensor_new(name, dtype, ndim, shape, err);
	if (!node->params[p])
		return err ? err->code : MC_ENOMEM;
	if (node->n_params < p + 1)
		node->n_params = p + 1;
	return 0;
}

/* ---------------------------------------------------------------- reading */

int mc_model_n_nodes(const struct mc_model *m)
{
	return m ? m->n_nodes : 0;
}

const struct mc_node *mc_model_node(const struct mc_model *m, int i)
{
	return m && i >= 0 && i < m->n_nodes ? m->nodes[i] : NULL;
}

int mc_model_find(const struct mc_model *m, const char *name)
{
	for (int i = 0; m && name && i < m->n_nodes; i++)
		if (!strcmp(m->nodes[i]->name, name))
			return i;
	return -1;
}

int mc_model_input_shape(const struct mc_model *m, int64_t *shape)
{
	memcpy(shape, m->in_shape, sizeof(m->in_shape));
	return m->in_ndim;
}

int64_t mc_model_in_numel(const struct mc_model *m)
{
	return m->in_numel;
}

int64_t mc_model_n_classes(const struct mc_model *m)
{
	return m->n_classes;
}

int mc_model_is_arch(const struct mc_model *m)
{
	return m->arch_only;
}

int mc_model_readers(const struct mc_model *m, int i, int *out, int max)
{
	int n = 0;

	for (int j = 0; j < m->n_nodes; j++) {
		int reads = 0;

		for (int k = 0; k < m->nodes[j]->n_inputs; k++)
			reads |= m->nodes[j]->inputs[k] == i;
		if (!reads)
			continue;
		if (out && n < max)
			out[n] = j;
		n++;
	}
	return n;
}

int mc_node_attr(const struct mc_node *node, const char *name, struct mc_attr *out,
		 struct mc_err *err)
{
	const struct mc_param_def *d = mc_param_find(node->op->attrs, name);
	const char *f;

	if (!d)
		return mc_err_set(err, MC_EINVAL, "node '%s': %s has no attribute '%s'", node->name,
				  node->op->name, name);
	f = (const char *)node->attrs + d->offset;
	memset(out, 0, sizeof(*out));
	out->name = d->name;
	out->type = d->type;
	switch (d->type) {
	case MC_PARAM_TINT:
	case MC_PARAM_TBOOL:
		out->i = *(const int *)f;
		out->f = (double)out->i;
		break;
	case MC_PARAM_TFLOAT:
		out->f = *(const double *)f;
		break;
	case MC_PARAM_TENUM: {
		int v = *(const int *)f;

		out->i = v;
		out->s = d->choices && v >= 0 ? d->choices[v] : "";
		break;
	}
	case MC_PARAM_TLIST: {
		const struct mc_list *l = (const struct mc_list *)f;

		out->n = l->n;
		out->nums = l->num;
		break;
	}
	default:
		out->s = *(char *const *)f ? *(char *const *)f : "";
		break;
	}
	return 0;
}

int64_t mc_node_attr_int(const struct mc_node *node, const char *name, int64_t fallback)
{
	struct mc_attr a;

	if (mc_node_attr(node, name, &a, NULL))
		return fallback;
	return a.type == MC_PARAM_TFLOAT ? (int64_t)a.f : a.i;
}

double mc_node_attr_float(const struct mc_node *node, const char *name, double fallback)
{
	struct mc_attr a;

	if (mc_node_attr(node, name, &a, NULL))
		return fallback;
	return a.type == MC_PARAM_TFLOAT ? a.f : (double)a.i;
}

const char *mc_node_attr_str(const struct mc_node *node, const char *name, const char *fallback)
{
	struct mc_attr a;

	if (mc_node_attr(node, name, &a, NULL) || !a.s)
		return fallback;
	return a.s;
}

struct mc_tensor *mc_node_param(const struct mc_node *node, int p)
{
	return node && p >= 0 && p < node->n_params ? node->params[p] : NULL;
}

struct mc_tensor *mc_node_param_named(const struct mc_node *node, const char *what)
{
	size_t n = strlen(node->name);

	for (int p = 0; what && p < node->n_params; p++) {
		const char *tn = node->params[p]->name;

		if (tn && !strncmp(tn, node->name, n) && tn[n] == '.' && !strcmp(tn + n + 1, what))
			return node->params[p];
	}
	return NULL;
}

/* ---------------------------------------------------------------- typed attributes */

static int out_of_range(const struct mc_param_def *d, double v)
{
	return !(d->min == 0 && d->max == 0) && (v < d->min || v > d->max);
}

/* Stores a into the attribute d of attrs, checking type and range. */
static int set_attr(const struct mc_param_def *d, void *attrs, const struct mc_attr *a,
		    struct mc_err *err)
{
	char *f = (char *)attrs + d->offset;
	char text[64];
	double v;

	switch (d->type) {
	case MC_PARAM_TINT:
		if (a->type != MC_PARAM_TINT)
			return mc_err_set(err, MC_EINVAL, "%s: expected an int", d->name);
		if (a->i < INT_MIN || a->i > INT_MAX || out_of_range(d, (double)a->i))
			return mc_err_set(err, MC_EINVAL, "%s: %lld is out of range [%g, %g]",
					  d->name, (long long)a->i, d->min, d->max);
		*(int *)f = (int)a->i;
		return 0;
	case MC_PARAM_TFLOAT:
		if (a->type != MC_PARAM_TFLOAT && a->type != MC_PARAM_TINT)
			return mc_err_set(err, MC_EINVAL, "%s: expected a float", d->name);
		v = a->type == MC_PARAM_TINT ? (double)a->i : a->f;
		if (!isfinite(v) || out_of_range(d, v))
			return mc_err_set(err, MC_EINVAL, "%s: %g is out of range [%g, %g]",
					  d->name, v, d->min, d->max);
		*(double *)f = v;
		return 0;
	case MC_PARAM_TBOOL:
		if (a->type != MC_PARAM_TBOOL && a->type != MC_PARAM_TINT)
			return mc_err_set(err, MC_EINVAL, "%s: expected true or false", d->name);
		*(int *)f = !!a->i;
		return 0;
	case MC_PARAM_TENUM:
	case MC_PARAM_TSTRING:
	case MC_PARAM_TPATH:
	case MC_PARAM_TMODEL:
	case MC_PARAM_TSPLIT:
		if ((a->type != MC_PARAM_TSTRING && a->type != MC_PARAM_TENUM) || !a->s)
			return mc_err_set(err, MC_EINVAL, "%s: expected a string", d->name);
		return mc_param_set(d, attrs, a->s, err);
	case MC_PARAM_TLIST:
		if (a->type != MC_PARAM_TLIST || (a->n > 0 && !a->nums))
			return mc_err_set(err, MC_EINVAL, "%s: expected a list of numbers", d->name);
		mc_param_list_clear(d, attrs);
		for (int k = 0; k < a->n; k++) {
			int r;

			/* The list keeps each item's text beside its value. */
			snprintf(text, sizeof(text), "%.17g", a->nums[k]);
			r = mc_param_set(d, attrs, text, err);
			if (r)
				return r;
		}
		return 0;
	default:
		return mc_err_set(err, MC_EINVAL, "%s: attribute of unknown type", d->name);
	}
}

/* Applies attrs (MC_ATTR_END-terminated) to conf of op; errors name the node. */
static int apply_attrs(const struct mc_op *op, void *conf, const struct mc_attr *attrs,
		       const char *node, struct mc_err *err)
{
	for (int i = 0; attrs && attrs[i].name; i++) {
		const struct mc_param_def *d = mc_param_find(op->attrs, attrs[i].name);
		int r;

		if (!d) {
			const char *near = mc_param_suggest(op->attrs, attrs[i].name);

			if (near)
				return mc_err_set(err, MC_EINVAL,
						  "node '%s': %s has no attribute '%s'; did you "
						  "mean '%s'?",
						  node, op->name, attrs[i].name, near);
			return mc_err_set(err, MC_EINVAL, "node '%s': %s has no attribute '%s'",
					  node, op->name, attrs[i].name);
		}
		r = set_attr(d, conf, &attrs[i], err);
		if (r)
			return mc_err_prefix(err, "node '%s' (%s)", node, op->name);
	}
	return 0;
}

/* ---------------------------------------------------------------- changes */

struct slot {
	struct mc_node *node; /* a node of the model, or a fresh one */
	int fresh;	      /* node is new: the change owns it until commit */
	char *rename;	      /* a new name for node (owned), or NULL */
	void *attrs;	      /* attributes to set up with instead of node's (owned), or NULL */
	int n_inputs;
	int inputs[MC_NODE_MAX_INPUTS];
	struct mc_node t; /* the node as setup sees it */
	struct mc_tensor *keep[MC_NODE_MAX_PARAMS]; /* during commit: old tensor kept, or NULL */
	char *keep_name[MC_NODE_MAX_PARAMS];
};

struct change {
	struct mc_model *m;
	int n, cap;
	struct slot *s;
	int first; /* slots before it are unchanged: no setup */
	struct mc_node **dead;
	int n_dead;
};

static void change_free(struct change *c)
{
	for (int i = 0; c->s && i < c->n; i++) {
		struct slot *s = &c->s[i];

		free(s->rename);
		free_attrs(s->node ? s->node->op : NULL, s->attrs);
		if (s->fresh)
			node_free(s->node);
	}
	free(c->s);
	free(c->dead);
	memset(c, 0, sizeof(*c));
}

static int change_init(struct change *c, struct mc_model *m, int extra, struct mc_err *err)
{
	memset(c, 0, sizeof(*c));
	c->m = m;
	c->cap = m->n_nodes + extra;
	c->s = calloc((size_t)c->cap + 1, sizeof(*c->s));
	c->dead = calloc((size_t)m->n_nodes + 1, sizeof(*c->dead));
	if (!c->s || !c->dead) {
		change_free(c);
		return mc_err_set(err, MC_ENOMEM, "changing the model: out of memory");
	}
	c->n = m->n_nodes;
	c->first = m->n_nodes;
	for (int i = 0; i < m->n_nodes; i++) {
		c->s[i].node = m->nodes[i];
		c->s[i].n_inputs = m->nodes[i]->n_inputs;
		memcpy(c->s[i].inputs, m->nodes[i]->inputs, sizeof(c->s[i].inputs));
	}
	return 0;
}

static void touch(struct change *c, int i)
{
	if (i < c->first)
		c->first = i < 0 ? 0 : i;
}

static const char *slot_name(const struct slot *s)
{
	return s->rename ? s->rename : s->node->name;
}

static int slot_find(const struct change *c, const char *name)
{
	for (int i = 0; i < c->n; i++)
		if (!strcmp(slot_name(&c->s[i]), name))
			return i;
	return -1;
}

/* Opens slot pos; inputs at or after pos move up one. */
static struct slot *slot_insert(struct change *c, int pos)
{
	memmove(&c->s[pos + 1], &c->s[pos], (size_t)(c->n - pos) * sizeof(*c->s));
	memset(&c->s[pos], 0, sizeof(c->s[pos]));
	c->n++;
	for (int i = 0; i < c->n; i++)
		for (int k = 0; i != pos && k < c->s[i].n_inputs; k++)
			if (c->s[i].inputs[k] >= pos)
				c->s[i].inputs[k]++;
	touch(c, pos);
	return &c->s[pos];
}

/* Takes slot i out; its readers read to instead (indices in the old numbering). */
static void slot_remove(struct change *c, int i, int to)
{
	struct slot *s = &c->s[i];

	if (s->fresh)
		node_free(s->node);
	else
		c->dead[c->n_dead++] = s->node;
	free(s->rename);
	free_attrs(s->node->op, s->attrs);
	memmove(&c->s[i], &c->s[i + 1], (size_t)(c->n - i - 1) * sizeof(*c->s));
	c->n--;
	for (int j = 0; j < c->n; j++)
		for (int k = 0; k < c->s[j].n_inputs; k++) {
			int *in = &c->s[j].inputs[k];

			if (*in == i)
				*in = to;
			else if (*in > i)
				(*in)--;
		}
	touch(c, i);
}

static int valid_node_name(const char *name)
{
	return name && *name && strcmp(name, "input") && strlen(name) < 256;
}

/* A fresh node of op with attrs over the defaults; NULL with err set. */
static struct mc_node *node_new(const char *name, const struct mc_op *op,
				const struct mc_attr *attrs, struct mc_err *err)
{
	struct mc_node *nd = calloc(1, sizeof(*nd));
	char tbuf[256];

	if (!nd || !(nd->name = strdup(name)) ||
	    !(nd->attrs = calloc(1, op->attr_size ? op->attr_size : 1))) {
		if (nd)
			free(nd->name);
		free(nd);
		mc_err_set(err, MC_ENOMEM, "node '%s': out of memory", name);
		return NULL;
	}
	nd->op = op;
	if (mc_param_defaults(op->attrs, nd->attrs, err)) {
		mc_err_prefix(err, "node '%s' (%s): bad default", name, op->name);
		goto fail;
	}
	if (apply_attrs(op, nd->attrs, attrs, name, err))
		goto fail;
	for (int i = 0; op->attrs[i].name; i++) {
		int given = 0;

		for (int k = 0; attrs && attrs[k].name; k++)
			given |= !strcmp(attrs[k].name, op->attrs[i].name);
		if (!op->attrs[i].def && !given) {
			mc_err_set(err, MC_EINVAL, "node '%s': %s needs attribute '%s' (%s)", name,
				   op->name, op->attrs[i].name,
				   mc_param_type_text(&op->attrs[i], tbuf, sizeof(tbuf)));
			goto fail;
		}
	}
	return nd;
fail:
	node_free(nd);
	return NULL;
}

/* The name a node of op gets when none is given: "<op><n>", the first free n. */
static void auto_name(const struct change *c, const struct mc_op *op, char *buf, size_t n)
{
	int nth = 1;

	for (int i = 0; i < c->n; i++)
		nth += c->s[i].node->op == op;
	for (;; nth++) {
		snprintf(buf, n, "%s%d", op->name, nth);
		if (slot_find(c, buf) < 0)
			return;
	}
}

/*
 * Adds a fresh node at slot pos reading inputs (names, NULL: the slot
 * before); returns pos or an error code.
 */
static int change_add(struct change *c, int pos, const char *name, const char *opname,
		      const char *const *inputs, const struct mc_attr *attrs, struct mc_err *err)
{
	const struct mc_op *op = mc_op_find(opname);
	int in[MC_NODE_MAX_INPUTS], n_in = 0;
	char nbuf[300], abuf[16];
	struct slot *s;
	struct mc_node *nd;

	if (!op) {
		const char *near = mc_suggest(mc_op_names(), opname ? opname : "");

		if (near)
			return mc_err_set(err, MC_EINVAL, "unknown op '%s'; did you mean '%s'?",
					  opname ? opname : "(null)", near);
		return mc_err_set(err, MC_EINVAL,
				  "unknown op '%s'; a plugin op needs its pass loaded first",
				  opname ? opname : "(null)");
	}
	if (pos < 0 || pos > c->n)
		pos = c->n;
	if (!name) {
		auto_name(c, op, nbuf, sizeof(nbuf));
		name = nbuf;
	}
	if (!valid_node_name(name))
		return mc_err_set(err, MC_EINVAL,
				  "node name '%s': use a non-empty name under 256 characters, "
				  "not 'input'",
				  name);
	if (slot_find(c, name) >= 0)
		return mc_err_set(err, MC_EINVAL, "node name '%s' is taken; names must be unique",
				  name);
	if (!inputs) {
		if (op->n_inputs != 1)
			return mc_err_set(err, MC_EINVAL,
					  "node '%s': %s takes %s inputs; name them", name,
					  op->name, arity(op, abuf));
		in[n_in++] = pos - 1 < 0 ? MC_NODE_INPUT : pos - 1;
	} else {
		for (; inputs[n_in]; n_in++) {
			int src = strcmp(inputs[n_in], "input") ? slot_find(c, inputs[n_in])
								 : MC_NODE_INPUT;

			if (n_in >= MC_NODE_MAX_INPUTS || src >= pos || src < MC_NODE_INPUT ||
			    (src == -1 && strcmp(inputs[n_in], "input")))
				return mc_err_set(
				    err, MC_EINVAL,
				    "node '%s': input '%s' is not a node before it; name an "
				    "earlier node or \"input\"",
				    name, n_in >= MC_NODE_MAX_INPUTS ? "(too many)" : inputs[n_in]);
			in[n_in] = src;
		}
		if (!mc_op_takes(op, n_in))
			return mc_err_set(err, MC_EINVAL, "node '%s': %s takes %s input%s, got %d",
					  name, op->name, arity(op, abuf), op->n_inputs == 1 ? "" : "s",
					  n_in);
	}
	nd = node_new(name, op, attrs, err);
	if (!nd)
		return err ? err->code : MC_ENOMEM;
	s = slot_insert(c, pos);
	s->node = nd;
	s->fresh = 1;
	s->n_inputs = n_in;
	memcpy(s->inputs, in, sizeof(in));
	return pos;
}

/* Makes readers of from after slot after read to; refuses a reader at or before to. */
static int change_rewire(struct change *c, int from, int to, int after, struct mc_err *err)
{
	for (int j = after + 1; j < c->n; j++)
		for (int k = 0; k < c->s[j].n_inputs; k++) {
			if (c->s[j].inputs[k] != from)
				continue;
			if (to >= j)
				return mc_err_set(err, MC_EINVAL,
						  "node '%s' would read '%s', which comes after "
						  "it; rewire only to an earlier node",
						  slot_name(&c->s[j]), slot_name(&c->s[to]));
			c->s[j].inputs[k] = to;
			touch(c, j);
		}
	return 0;
}

static const char *in_name(const struct change *c, int src)
{
	return src == MC_NODE_INPUT ? "input" : slot_name(&c->s[src]);
}

static void free_setup(struct slot *s)
{
	free_params(&s->t);
	free_attrs(s->t.op, s->t.attrs);
	s->t.attrs = NULL;
}

/* The shapes slot s reads: the model input's, an unchanged node's, or
 * those phase 1 inferred for the slots from c->first on. */
static void slot_in_shapes(const struct change *c, const struct slot *s, int *in_ndim,
			   int64_t (*in_shape)[MC_MAX_DIMS])
{
	for (int k = 0; k < s->n_inputs; k++) {
		int src = s->inputs[k];
		const struct mc_node *sn = src == MC_NODE_INPUT ? NULL
				       : src < c->first	 ? c->s[src].node
							 : &c->s[src].t;

		in_ndim[k] = sn ? sn->out_ndim : c->m->in_ndim;
		memcpy(in_shape[k], sn ? sn->out_shape : c->m->in_shape, sizeof(in_shape[k]));
	}
}

/* Phase 1: shape inference of every slot from c->first on, on copies. */
static int change_setup(struct change *c, struct mc_err *err)
{
	for (int i = c->first; i < c->n; i++) {
		struct slot *s = &c->s[i];
		const struct mc_node *nd = s->node;
		int in_ndim[MC_NODE_MAX_INPUTS];
		int64_t in_shape[MC_NODE_MAX_INPUTS][MC_MAX_DIMS];
		const void *src_attrs = s->attrs ? s->attrs : nd->attrs;
		char ins[512] = "", buf[256];
		size_t numel = 1;
		int r;

		memset(&s->t, 0, sizeof(s->t));
		s->t.name = (char *)slot_name(s);
		s->t.op = nd->op;
		s->t.arch_only = 1;
		s->t.n_inputs = s->n_inputs;
		memcpy(s->t.inputs, s->inputs, sizeof(s->inputs));
		s->t.attrs = calloc(1, nd->op->attr_size ? nd->op->attr_size : 1);
		if (!s->t.attrs || mc_param_copy(nd->op->attrs, s->t.attrs, src_attrs,
						 nd->op->attr_size)) {
			free(s->t.attrs);
			s->t.attrs = NULL;
			return mc_err_set(err, MC_ENOMEM, "node '%s': out of memory", s->t.name);
		}
		slot_in_shapes(c, s, in_ndim, in_shape);
		for (int k = 0; k < s->n_inputs; k++) {
			int src = s->inputs[k];

			snprintf(ins + strlen(ins), sizeof(ins) - strlen(ins), "%s'%s' %s",
				 k ? ", " : "", in_name(c, src),
				 mc_shape_text(in_ndim[k], in_shape[k], buf, sizeof(buf)));
		}
		r = nd->op->setup(&s->t, in_ndim, (const int64_t(*)[MC_MAX_DIMS])in_shape, err);
		for (int d = 0; !r && d < s->t.out_ndim; d++)
			if (s->t.out_shape[d] < 1 ||
			    mc_mul_overflow(numel, (size_t)s->t.out_shape[d], &numel) ||
			    numel > INT_MAX)
				r = mc_err_set(err, MC_EINVAL,
					       "output of %lld values per sample is too large; "
					       "use a smaller layer",
					       (long long)numel);
		if (r) {
			for (int j = c->first; j <= i; j++)
				free_setup(&c->s[j]);
			return mc_err_prefix(err, "node '%s' (%s) given %s", slot_name(s),
					     nd->op->name, ins);
		}
		s->t.out_numel = (int64_t)numel;
	}
	return 0;
}

static int same_shape(const struct mc_tensor *a, const struct mc_tensor *b)
{
	return a->dtype == b->dtype && a->ndim == b->ndim &&
	       !memcmp(a->shape, b->shape, (size_t)a->ndim * sizeof(a->shape[0]));
}

/* Sets slot i up again with parameter data; the shapes are those of phase 1. */
static int setup_data(struct change *c, int i, struct mc_err *err)
{
	struct slot *s = &c->s[i];
	struct mc_node t = s->t;
	int in_ndim[MC_NODE_MAX_INPUTS], r;
	int64_t in_shape[MC_NODE_MAX_INPUTS][MC_MAX_DIMS];

	slot_in_shapes(c, s, in_ndim, in_shape);
	memset(t.params, 0, sizeof(t.params));
	t.n_params = 0;
	t.arch_only = 0;
	r = t.op->setup(&t, in_ndim, (const int64_t(*)[MC_MAX_DIMS])in_shape, err);
	if (r || t.n_params != s->t.n_params) {
		free_params(&t);
		return r ? r : mc_err_set(err, MC_EINVAL, "node '%s' (%s): setup is not repeatable",
					  t.name, t.op->name);
	}
	for (int p = 0; p < t.n_params; p++) {
		mc_tensor_free(s->t.params[p]);
		s->t.params[p] = t.params[p];
	}
	return 0;
}

/*
 * Phases 2 and 3: allocates what the new graph needs (undoing it all on
 * failure), then applies the change to the model. Consumes c either way.
 */
static int change_commit(struct change *c, struct mc_err *err)
{
	struct mc_model *m = c->m;
	struct mc_node **nodes = NULL;
	int r = change_setup(c, err);

	if (r) {
		change_free(c);
		return r;
	}
	if (!c->n) {
		r = mc_err_set(err, MC_EINVAL, "a model needs at least one node");
		goto undo;
	}
	if (c->n > MC_MODEL_MAX_NODES) {
		r = mc_err_set(err, MC_EINVAL, "a model has at most %d nodes", MC_MODEL_MAX_NODES);
		goto undo;
	}
	nodes = calloc((size_t)c->n, sizeof(*nodes));
	if (!nodes)
		goto nomem;
	/*
	 * Phase 2: keep a parameter whose shape and dtype stay. A node with a
	 * new parameter is set up again with data, so that the op gives it
	 * its starting values (zeros, or scales of 1).
	 */
	for (int i = c->first; i < c->n; i++) {
		struct slot *s = &c->s[i];
		int fill = 0;

		for (int p = 0; p < s->t.n_params; p++) {
			struct mc_tensor *old = s->fresh || p >= s->node->n_params
							? NULL
							: s->node->params[p];

			if (old && same_shape(old, s->t.params[p])) {
				s->keep[p] = old;
				if (strcmp(old->name, s->t.params[p]->name) &&
				    !(s->keep_name[p] = strdup(s->t.params[p]->name)))
					goto nomem;
			} else {
				fill = 1;
			}
		}
		if (fill && !m->arch_only && (r = setup_data(c, i, err)))
			goto undo_alloc;
	}
	/* Phase 3: nothing below fails. */
	for (int i = 0; i < c->n; i++) {
		struct slot *s = &c->s[i];
		struct mc_node *nd = s->node;
		int changed = s->fresh;

		nodes[i] = nd;
		if (i < c->first)
			continue;
		for (int p = 0; p < MC_NODE_MAX_PARAMS; p++) {
			struct mc_tensor *old = p < nd->n_params ? nd->params[p] : NULL;

			if (p < s->t.n_params && s->keep[p]) {
				mc_tensor_free(s->t.params[p]);
				s->t.params[p] = s->keep[p];
				if (s->keep_name[p]) {
					free(s->keep[p]->name);
					s->keep[p]->name = s->keep_name[p];
					s->keep_name[p] = NULL;
				}
				continue;
			}
			if (old) {
				changed = 1;
				mc_tensor_free(old);
			} else if (p < s->t.n_params) {
				changed = 1;
			}
		}
		if (changed && !s->fresh && nd->op->release)
			nd->op->release(nd);
		memcpy(nd->params, s->t.params, sizeof(nd->params));
		nd->n_params = s->t.n_params;
		nd->n_buffers = s->t.n_buffers;
		free_attrs(nd->op, nd->attrs);
		nd->attrs = s->t.attrs;
		s->t.attrs = NULL;
		if (s->rename) {
			free(nd->name);
			nd->name = s->rename;
			s->rename = NULL;
		}
		nd->n_inputs = s->n_inputs;
		memcpy(nd->inputs, s->inputs, sizeof(nd->inputs));
		nd->out_ndim = s->t.out_ndim;
		memcpy(nd->out_shape, s->t.out_shape, sizeof(nd->out_shape));
		nd->out_numel = s->t.out_numel;
		nd->arch_only = m->arch_only;
		s->fresh = 0; /* the model owns it now */
	}
	for (int i = 0; i < c->n_dead; i++)
		node_free(c->dead[i]);
	free(m->nodes);
	m->nodes = nodes;
	m->n_nodes = m->cap_nodes = c->n;
	m->n_classes = nodes[c->n - 1]->out_numel;
	change_free(c);
	return 0;

nomem:
	r = mc_err_set(err, MC_ENOMEM, "changing the model: out of memory");
	goto undo_alloc;
undo_alloc:
	r = err ? err->code : MC_ENOMEM;
	for (int i = c->first; i < c->n; i++)
		for (int p = 0; p < MC_NODE_MAX_PARAMS; p++) {
			free(c->s[i].keep_name[p]);
			c->s[i].keep_name[p] = NULL;
		}
undo:
	for (int i = c->first; i < c->n; i++)
		free_setup(&c->s[i]);
	free(nodes);
	change_free(c);
	return r ? r : MC_ENOMEM;
}

/* ---------------------------------------------------------------- appending */

static int setup_fresh(const struct mc_model *m, int i, struct mc_tensor **fresh,
		       struct mc_err *err);

/*
 * Appends fresh node nd (owned; freed on failure) reading in[n_in]: what a
 * change would do for one slot at the end, without copying the graph into a
 * change, so that building a model node by node takes time in proportion
 * to its nodes. Nothing before the node changes: setup with shapes, then
 * again with data unless the model has shapes only. m is unchanged on
 * failure. Returns the node's index or an error code.
 */
static int append_node(struct mc_model *m, struct mc_node *nd, const int *in, int n_in,
		       struct mc_err *err)
{
	int in_ndim[MC_NODE_MAX_INPUTS], r;
	int64_t in_shape[MC_NODE_MAX_INPUTS][MC_MAX_DIMS];
	struct mc_tensor *fresh[MC_NODE_MAX_PARAMS];
	char ins[512] = "", buf[256];
	size_t numel = 1;

	if (m->n_nodes >= MC_MODEL_MAX_NODES) {
		r = mc_err_set(err, MC_EINVAL, "a model has at most %d nodes", MC_MODEL_MAX_NODES);
		goto fail;
	}
	if (m->n_nodes == m->cap_nodes) {
		int cap = m->cap_nodes ? 2 * m->cap_nodes : 16;
		struct mc_node **nodes = realloc(m->nodes, (size_t)cap * sizeof(*nodes));

		if (!nodes) {
			r = mc_err_set(err, MC_ENOMEM, "node '%s': out of memory", nd->name);
			goto fail;
		}
		m->nodes = nodes;
		m->cap_nodes = cap;
	}
	nd->n_inputs = n_in;
	memcpy(nd->inputs, in, (size_t)n_in * sizeof(*in));
	for (int k = 0; k < n_in; k++) {
		const struct mc_node *sn = in[k] == MC_NODE_INPUT ? NULL : m->nodes[in[k]];

		in_ndim[k] = sn ? sn->out_ndim : m->in_ndim;
		memcpy(in_shape[k], sn ? sn->out_shape : m->in_shape, sizeof(in_shape[k]));
		snprintf(ins + strlen(ins), sizeof(ins) - strlen(ins), "%s'%s' %s", k ? ", " : "",
			 sn ? sn->name : "input",
			 mc_shape_text(in_ndim[k], in_shape[k], buf, sizeof(buf)));
	}
	nd->arch_only = 1;
	r = nd->op->setup(nd, in_ndim, (const int64_t(*)[MC_MAX_DIMS])in_shape, err);
	for (int d = 0; !r && d < nd->out_ndim; d++)
		if (nd->out_shape[d] < 1 || mc_mul_overflow(numel, (size_t)nd->out_shape[d], &numel) ||
		    numel > INT_MAX)
			r = mc_err_set(err, MC_EINVAL,
				       "output of %lld values per sample is too large; use a smaller "
				       "layer",
				       (long long)numel);
	if (r) {
		mc_err_prefix(err, "node '%s' (%s) given %s", nd->name, nd->op->name, ins);
		goto fail;
	}
	nd->out_numel = (int64_t)numel;
	m->nodes[m->n_nodes] = nd;
	if (!m->arch_only) {
		/* Its data, as building it with data gives (zeros or starting values). */
		r = setup_fresh(m, m->n_nodes, fresh, err);
		if (r) {
			for (int p = 0; p < MC_NODE_MAX_PARAMS; p++)
				mc_tensor_free(fresh[p]);
			goto fail;
		}
		for (int p = 0; p < nd->n_params; p++) {
			mc_tensor_free(nd->params[p]);
			nd->params[p] = fresh[p];
		}
	}
	nd->arch_only = m->arch_only;
	m->n_classes = nd->out_numel;
	return m->n_nodes++;
fail:
	node_free(nd);
	return r;
}

/* ---------------------------------------------------------------- mutations */

struct mc_model *mc_model_new(int in_ndim, const int64_t *in_shape, struct mc_err *err)
{
	struct mc_model *m;
	size_t numel = 1;

	if (in_ndim < 1 || in_ndim > MC_MAX_DIMS) {
		mc_err_set(err, MC_EINVAL,
			   "the input must be the per-sample shape, 1 to %d sizes such as "
			   "[1, 28, 28]",
			   MC_MAX_DIMS);
		return NULL;
	}
	for (int d = 0; d < in_ndim; d++)
		if (in_shape[d] < 1 || in_shape[d] > INT_MAX ||
		    mc_mul_overflow(numel, (size_t)in_shape[d], &numel) || numel > INT_MAX) {
			mc_err_set(err, MC_EINVAL,
				   "input dimension %d must be a positive integer and the sample "
				   "size at most %d values",
				   d, INT_MAX);
			return NULL;
		}
	m = calloc(1, sizeof(*m));
	if (!m) {
		mc_err_set(err, MC_ENOMEM, "out of memory");
		return NULL;
	}
	m->in_ndim = in_ndim;
	memcpy(m->in_shape, in_shape, (size_t)in_ndim * sizeof(in_shape[0]));
	m->in_numel = (int64_t)numel;
	return m;
}

static int bad_index(const struct mc_model *m, int i, struct mc_err *err)
{
	return mc_err_set(err, MC_EINVAL, "node %d: the model has nodes 0 to %d", i,
			  m->n_nodes - 1);
}

/* mc_model_add_node at the end: change_add's checks against the model
 * itself rather than a change's copy of it. A request it refuses returns
 * GENERAL, for the general way to refuse with its message. */
#define GENERAL INT_MIN
static int append_named(struct mc_model *m, const char *name, const char *opname,
			const char *const *inputs, const struct mc_attr *attrs,
			struct mc_err *err)
{
	const struct mc_op *op = mc_op_find(opname);
	int in[MC_NODE_MAX_INPUTS], n_in = 0, nth = 1;
	char nbuf[300], abuf[16];
	struct mc_node *nd;

	if (!op)
		return GENERAL; /* change_add says why */
	if (!name) {
		for (int i = 0; i < m->n_nodes; i++)
			nth += m->nodes[i]->op == op;
		do
			snprintf(nbuf, sizeof(nbuf), "%s%d", op->name, nth++);
		while (mc_model_find(m, nbuf) >= 0);
		name = nbuf;
	}
	if (!valid_node_name(name) || mc_model_find(m, name) >= 0)
		return GENERAL;
	if (!inputs) {
		if (op->n_inputs != 1)
			return GENERAL;
		in[n_in++] = m->n_nodes - 1 < 0 ? MC_NODE_INPUT : m->n_nodes - 1;
	} else {
		for (; inputs[n_in]; n_in++) {
			int src = strcmp(inputs[n_in], "input") ? mc_model_find(m, inputs[n_in])
								 : MC_NODE_INPUT;

			if (n_in >= MC_NODE_MAX_INPUTS || (src == -1 && strcmp(inputs[n_in], "input")))
				return GENERAL;
			in[n_in] = src;
		}
		if (!mc_op_takes(op, n_in))
			return mc_err_set(err, MC_EINVAL, "node '%s': %s takes %s input%s, got %d",
					  name, op->name, arity(op, abuf), op->n_inputs == 1 ? "" : "s",
					  n_in);
	}
	nd = node_new(name, op, attrs, err);
	if (!nd)
		return err ? err->code : MC_ENOMEM;
	return append_node(m, nd, in, n_in, err);
}

int mc_model_add_node(struct mc_model *m, int pos, const char *name, const char *opname,
		      const char *const *inputs, const struct mc_attr *attrs, struct mc_err *err)
{
	struct change c;
	int r;

	/* Appending, the common case, sets up the new node alone; a bad request
	 * goes the general way, which says what is wrong. */
	if (pos < 0 || pos >= m->n_nodes) {
		r = append_named(m, name, opname, inputs, attrs, err);
		if (r != GENERAL)
			return r;
	}
	r = change_init(&c, m, 1, err);
	if (r)
		return r;
	r = change_add(&c, pos, name, opname, inputs, attrs, err);
	if (r < 0) {
		change_free(&c);
		return r;
	}
	pos = r;
	r = change_commit(&c, err);
	return r ? r : pos;
}

int mc_model_add_conf(struct mc_model *m, const char *name, const struct mc_op *op,
		      const int *inputs, int n_inputs, const void *conf, struct mc_err *err)
{
	struct mc_node *nd;
	char abuf[16];

	if (!valid_node_name(name) || mc_model_find(m, name) >= 0)
		return mc_err_set(err, MC_EINVAL, "node name '%s' is taken or unusable", name);
	if (!mc_op_takes(op, n_inputs))
		return mc_err_set(err, MC_EINVAL, "node '%s': %s takes %s inputs, got %d", name,
				  op->name, arity(op, abuf), n_inputs);
	for (int k = 0; k < n_inputs; k++)
		if (inputs[k] < MC_NODE_INPUT || inputs[k] >= m->n_nodes)
			return mc_err_set(err, MC_EINVAL, "node '%s': input %d is not a node", name,
					  inputs[k]);
	nd = calloc(1, sizeof(*nd));
	if (!nd || !(nd->name = strdup(name)) ||
	    !(nd->attrs = calloc(1, op->attr_size ? op->attr_size : 1)) ||
	    mc_param_copy(op->attrs, nd->attrs, conf, op->attr_size)) {
		if (nd && nd->attrs)
			memset(nd->attrs, 0, op->attr_size);
		node_free(nd);
		return mc_err_set(err, MC_ENOMEM, "node '%s': out of memory", name);
	}
	nd->op = op;
	return append_node(m, nd, inputs, n_inputs, err);
}

int mc_model_insert_after(struct mc_model *m, int i, const char *name, const char *opname,
			  const struct mc_attr *attrs, struct mc_err *err)
{
	struct change c;
	int r;

	if (i < 0 || i >= m->n_nodes)
		return bad_index(m, i, err);
	r = change_init(&c, m, 1, err);
	if (r)
		return r;
	r = change_add(&c, i + 1, name, opname, NULL, attrs, err);
	if (r >= 0)
		r = change_rewire(&c, i, i + 1, i + 1, err);
	if (r < 0) {
		change_free(&c);
		return r;
	}
	r = change_commit(&c, err);
	return r ? r : i + 1;
}

int mc_model_insert_before(struct mc_model *m, int i, const char *name, const char *opname,
			   const struct mc_attr *attrs, struct mc_err *err)
{
	struct change c;
	int r;

	if (i < 0 || i >= m->n_nodes)
		return bad_index(m, i, err);
	if (!m->nodes[i]->n_inputs)
		return mc_err_set(err, MC_EINVAL, "node '%s' has no input to insert before",
				  m->nodes[i]->name);
	r = change_init(&c, m, 1, err);
	if (r)
		return r;
	{
		int src = m->nodes[i]->inputs[0];
		const char *ins[2] = { src == MC_NODE_INPUT ? "input" : m->nodes[src]->name, NULL };

		r = change_add(&c, i, name, opname, ins, attrs, err);
	}
	if (r >= 0) {
		c.s[i + 1].inputs[0] = i;
		touch(&c, i + 1);
	}
	if (r < 0) {
		change_free(&c);
		return r;
	}
	r = change_commit(&c, err);
	return r ? r : i;
}

int mc_model_replace_node(struct mc_model *m, int i, const char *name, const char *opname,
			  const struct mc_attr *attrs, struct mc_err *err)
{
	const struct mc_op *op = mc_op_find(opname);
	struct mc_node *nd;
	struct change c;
	char abuf[16];
	int r;

	if (i < 0 || i >= m->n_nodes)
		return bad_index(m, i, err);
	if (!op)
		return mc_err_set(err, MC_EINVAL, "node '%s': unknown op '%s'", m->nodes[i]->name,
				  opname ? opname : "(null)");
	if (!mc_op_takes(op, m->nodes[i]->n_inputs))
		return mc_err_set(err, MC_EINVAL,
				  "node '%s': %s takes %s input%s and %s %d; replace it by an op "
				  "of as many inputs",
				  m->nodes[i]->name, op->name, arity(op, abuf),
				  op->n_inputs == 1 ? "" : "s", m->nodes[i]->op->name,
				  m->nodes[i]->n_inputs);
	if (name && strcmp(name, m->nodes[i]->name) &&
	    (!valid_node_name(name) || mc_model_find(m, name) >= 0))
		return mc_err_set(err, MC_EINVAL,
				  "node name '%s' is taken or unusable; names must be unique and "
				  "not 'input'",
				  name);
	nd = node_new(name ? name : m->nodes[i]->name, op, attrs, err);
	if (!nd)
		return err ? err->code : MC_ENOMEM;
	r = change_init(&c, m, 0, err);
	if (r) {
		node_free(nd);
		return r;
	}
	c.dead[c.n_dead++] = c.s[i].node;
	c.s[i].node = nd;
	c.s[i].fresh = 1;
	touch(&c, i);
	return change_commit(&c, err);
}

int mc_model_remove_node(struct mc_model *m, int i, struct mc_err *err)
{
	struct change c;
	int src, r;

	if (i < 0 || i >= m->n_nodes)
		return bad_index(m, i, err);
	src = m->nodes[i]->n_inputs ? m->nodes[i]->inputs[0] : MC_NODE_INPUT;
	if (m->n_nodes == 1)
		return mc_err_set(err, MC_EINVAL, "node '%s' is the model's only node; keep it",
				  m->nodes[i]->name);
	if (i == m->n_nodes - 1 && src != i - 1)
		return mc_err_set(err, MC_EINVAL,
				  "removing node '%s' would make '%s' the output, not its input "
				  "'%s'; remove it only where its input is the node before it",
				  m->nodes[i]->name, m->nodes[i - 1]->name,
				  src == MC_NODE_INPUT ? "input" : m->nodes[src]->name);
	r = change_init(&c, m, 0, err);
	if (r)
		return r;
	slot_remove(&c, i, src);
	return change_commit(&c, err);
}

int mc_model_rename_node(struct mc_model *m, int i, const char *name, struct mc_err *err)
{
	struct change c;
	int r;

	if (i < 0 || i >= m->n_nodes)
		return bad_index(m, i, err);
	if (!valid_node_name(name))
		return mc_err_set(err, MC_EINVAL,
				  "node name '%s': use a non-empty name under 256 characters, "
				  "not 'input'",
				  name ? name : "(null)");
	if (!strcmp(name, m->nodes[i]->name))
		return 0;
	if (mc_model_find(m, name) >= 0)
		return mc_err_set(err, MC_EINVAL, "node name '%s' is taken; names must be unique",
				  name);
	r = change_init(&c, m, 0, err);
	if (r)
		return r;
	c.s[i].rename = strdup(name);
	if (!c.s[i].rename) {
		change_free(&c);
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	}
	touch(&c, i);
	return change_commit(&c, err);
}

int mc_model_set_attrs(struct mc_model *m, int i, const struct mc_attr *attrs,
		       struct mc_err *err)
{
	const struct mc_node *nd;
	struct change c;
	int r;

	if (i < 0 || i >= m->n_nodes)
		return bad_index(m, i, err);
	nd = m->nodes[i];
	r = change_init(&c, m, 0, err);
	if (r)
		return r;
	c.s[i].attrs = calloc(1, nd->op->attr_size ? nd->op->attr_size : 1);
	if (!c.s[i].attrs ||
	    mc_param_copy(nd->op->attrs, c.s[i].attrs, nd->attrs, nd->op->attr_size)) {
		free(c.s[i].attrs);
		c.s[i].attrs = NULL;
		change_free(&c);
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	}
	r = apply_attrs(nd->op, c.s[i].attrs, attrs, nd->name, err);
	if (r) {
		change_free(&c);
		return r;
	}
	touch(&c, i);
	return change_commit(&c, err);
}

int mc_model_set_attrs_n(struct mc_model *m, int n, const int *nodes,
			 const struct mc_attr *const *attrs, struct mc_err *err)
{
	struct change c;
	int r;

	for (int k = 0; k < n; k++)
		if (nodes[k] < 0 || nodes[k] >= m->n_nodes)
			return bad_index(m, nodes[k], err);
	r = change_init(&c, m, 0, err);
	if (r)
		return r;
	for (int k = 0; k < n; k++) {
		int i = nodes[k];
		const struct mc_node *nd = m->nodes[i];

		/* a node listed twice takes both sets, in order */
		if (!c.s[i].attrs) {
			c.s[i].attrs = calloc(1, nd->op->attr_size ? nd->op->attr_size : 1);
			if (!c.s[i].attrs || mc_param_copy(nd->op->attrs, c.s[i].attrs, nd->attrs,
							   nd->op->attr_size)) {
				free(c.s[i].attrs);
				c.s[i].attrs = NULL;
				change_free(&c);
				return mc_err_set(err, MC_ENOMEM, "out of memory");
			}
		}
		r = apply_attrs(nd->op, c.s[i].attrs, attrs[k], nd->name, err);
		if (r) {
			change_free(&c);
			return r;
		}
		touch(&c, i);
	}
	return change_commit(&c, err);
}

int mc_model_rewire(struct mc_model *m, int from, int to, int after, struct mc_err *err)
{
	struct change c;
	int r;

	if (from < MC_NODE_INPUT || from >= m->n_nodes || to < MC_NODE_INPUT ||
	    to >= m->n_nodes)
		return mc_err_set(err, MC_EINVAL, "rewire %d to %d: the model has nodes 0 to %d",
				  from, to, m->n_nodes - 1);
	r = change_init(&c, m, 0, err);
	if (r)
		return r;
	r = change_rewire(&c, from, to, after < -1 ? -1 : after, err);
	if (r) {
		change_free(&c);
		return r;
	}
	return change_commit(&c, err);
}

/* ---------------------------------------------------------------- whole models */

void mc_model_init(struct mc_model *m, uint64_t seed)
{
	if (m->arch_only)
		return;
	for (int i = 0; i < m->n_nodes; i++) {
		struct mc_node *nd = m->nodes[i];

		if (nd->op->init)
			nd->op->init(nd, seed, STREAM_INIT + (uint64_t)i * MC_NODE_MAX_PARAMS);
	}
}

static struct mc_model *dup_model(const struct mc_model *m, int arch_only, struct mc_err *err)
{
	struct mc_model *d = calloc(1, sizeof(*d));

	if (!d)
		goto nomem;
	*d = *m;
	d->arch_only = arch_only || m->arch_only;
	d->n_nodes = 0;
	d->cap_nodes = m->n_nodes + 1;
	d->nodes = calloc((size_t)m->n_nodes + 1, sizeof(*d->nodes));
	if (!d->nodes)
		goto nomem;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *s = m->nodes[i];
		struct mc_node *t = calloc(1, sizeof(*t));

		if (!t)
			goto nomem;
		d->nodes[i] = t;
		d->n_nodes = i + 1;
		*t = *s;
		t->name = NULL;
		t->attrs = NULL;
		t->cache = NULL;
		t->n_params = 0;
		t->arch_only = d->arch_only;
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
			const struct mc_tensor *sp = s->params[p];

			t->params[p] = d->arch_only ? mc_tensor_new_shape(sp->name, sp->dtype,
									  sp->ndim, sp->shape, err)
						    : mc_tensor_dup(sp, err);
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

uint64_t mc_model_param_bytes(const struct mc_model *m)
{
	uint64_t n = 0;

	for (int i = 0; i < m->n_nodes; i++)
		for (int p = 0; p < m->nodes[i]->n_params; p++)
			n += mc_tensor_nbytes(m->nodes[i]->params[p]);
	return n;
}

/* Node i set up again with parameter data into fresh[]: what building it
 * with data would have given (zeros, or the op's starting values). */
static int setup_fresh(const struct mc_model *m, int i, struct mc_tensor **fresh,
		       struct mc_err *err)
{
	const struct mc_node *nd = m->nodes[i];
	struct mc_node t = *nd;
	int in_ndim[MC_NODE_MAX_INPUTS], r;
	int64_t in_shape[MC_NODE_MAX_INPUTS][MC_MAX_DIMS];

	for (int k = 0; k < nd->n_inputs; k++) {
		int src = nd->inputs[k];
		const struct mc_node *sn = src == MC_NODE_INPUT ? NULL : m->nodes[src];

		in_ndim[k] = sn ? sn->out_ndim : m->in_ndim;
		memcpy(in_shape[k], sn ? sn->out_shape : m->in_shape, sizeof(in_shape[k]));
	}
	memset(t.params, 0, sizeof(t.params));
	t.n_params = 0;
	t.arch_only = 0;
	t.cache = NULL;
	r = nd->op->setup(&t, in_ndim, (const int64_t(*)[MC_MAX_DIMS])in_shape, err);
	for (int p = 0; !r && p < t.n_params; p++)
		if (p >= nd->n_params || !same_shape(t.params[p], nd->params[p]))
			r = mc_err_set(err, MC_EINVAL, "node '%s' (%s): setup is not repeatable",
				       nd->name, nd->op->name);
	if (!r && t.n_params != nd->n_params)
		r = mc_err_set(err, MC_EINVAL, "node '%s' (%s): setup is not repeatable",
			       nd->name, nd->op->name);
	memcpy(fresh, t.params, sizeof(t.params));
	return r;
}

int mc_model_materialize(struct mc_model *m, struct mc_err *err)
{
	struct mc_tensor *(*fresh)[MC_NODE_MAX_PARAMS];
	int r = 0, i;

	if (!m->arch_only)
		return 0;
	fresh = calloc((size_t)m->n_nodes + 1, sizeof(*fresh));
	if (!fresh)
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	/* All or nothing: the model changes only once every node has its data. */
	for (i = 0; i < m->n_nodes && !r; i++)
		r = setup_fresh(m, i, fresh[i], err);
	if (r) {
		for (i = 0; i < m->n_nodes; i++)
			for (int p = 0; p < MC_NODE_MAX_PARAMS; p++)
				mc_tensor_free(fresh[i][p]);
		free(fresh);
		return r;
	}
	for (i = 0; i < m->n_nodes; i++) {
		struct mc_node *nd = m->nodes[i];

		for (int p = 0; p < nd->n_params; p++) {
			mc_tensor_free(nd->params[p]);
			nd->params[p] = fresh[i][p];
		}
		nd->arch_only = 0;
	}
	m->arch_only = 0;
	free(fresh);
	return 0;
}

struct mc_model *mc_model_dup(const struct mc_model *m, struct mc_err *err)
{
	return dup_model(m, 0, err);
}

struct mc_model *mc_model_dup_arch(const struct mc_model *m, struct mc_err *err)
{
	return dup_model(m, 1, err);
}

struct mc_tensor *mc_model_param(const struct mc_model *m, const char *name)
{
	for (int i = 0; name && i < m->n_nodes; i++)
		for (int p = 0; p < m->nodes[i]->n_params; p++) {
			struct mc_tensor *t = m->nodes[i]->params[p];

			if (t->name && !strcmp(t->name, name))
				return t;
		}
	return NULL;
}

int64_t mc_model_nparams(const struct mc_model *m)
{
	int64_t n = 0;

	for (int i = 0; i < m->n_nodes; i++)
		for (int p = 0; p < m->nodes[i]->n_params; p++)
			n += m->nodes[i]->params[p]->numel;
	return n;
}

static int64_t tensor_nonzeros(const struct mc_tensor *t)
{
	int64_t nz = 0;

	if (!t->data)
		return t->numel; /* a model of shapes only: count every value */
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
		case MC_Q4: /* nibble q + 8: 8 is zero */
			nz += ((((const uint8_t *)t->data)[i / 2] >> (4 * (i % 2))) & 0xf) != 8;
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
		for (int p = 0; p < m->nodes[i]->n_params; p++)
			n += tensor_nonzeros(m->nodes[i]->params[p]);
	return n;
}

int64_t mc_model_flops(const struct mc_model *m)
{
	int64_t f = 0;

	for (int i = 0; i < m->n_nodes; i++)
		if (m->nodes[i]->op->flops)
			f += m->nodes[i]->op->flops(m->nodes[i]);
	return f;
}

/* ---------------------------------------------------------------- folding */

/* Scales row o of f's weight and shifts its bias by batch norm bn's inference affine map. */
static void fold_into(struct mc_node *f, const struct mc_node *bn)
{
	double eps = mc_node_attr_float(bn, "eps", 1e-5);
	const float *g = bn->params[0]->data, *beta = bn->params[1]->data;
	const float *rm = bn->params[2]->data, *rv = bn->params[3]->data;
	float *w = f->params[0]->data, *b = f->n_params > 1 ? f->params[1]->data : NULL;
	int64_t O = f->params[0]->shape[0], row = f->params[0]->numel / O;

	for (int64_t o = 0; o < O; o++) {
		double scale = g[o] / sqrt((double)rv[o] + eps);

		for (int64_t j = 0; j < row; j++)
			w[o * row + j] = (float)(w[o * row + j] * scale);
		if (b)
			b[o] = (float)((b[o] - (double)rm[o]) * scale + beta[o]);
	}
}

int mc_model_fold_batchnorm(struct mc_model *m, struct mc_err *err)
{
	const struct mc_op *bn_op = mc_op_find("batchnorm");
	const struct mc_op *conv = mc_op_find("conv2d"), *lin = mc_op_find("linear");
	const struct mc_attr with_bias[] = { MC_ATTR_BOOL("bias", 1), MC_ATTR_END };
	int folded = 0;

	for (int i = 0; i < m->n_nodes; i++) {
		struct mc_node *bn = m->nodes[i], *f;
		int src = bn->inputs[0], r;

		if (bn->op != bn_op || src == MC_NODE_INPUT)
			continue;
		f = m->nodes[src];
		/* The producer's output must feed nothing but this batch norm, and
		 * removing the last node must leave the producer last. */
		if ((f->op != conv && f->op != lin) || mc_model_readers(m, src, NULL, 0) != 1 ||
		    f->params[0]->shape[0] != bn->params[0]->numel ||
		    (i == m->n_nodes - 1 && src != i - 1))
			continue;
		/* A producer without a bias (bias: false, as before a batch norm)
		 * gets one of zeros to take the shift. */
		if (f->n_params < 2) {
			r = mc_model_set_attrs(m, src, with_bias, err);
			if (r)
				return r;
			f = m->nodes[src];
		}
		/* A model of shapes only changes its graph alone (validation). */
		if (!m->arch_only)
			fold_into(f, bn);
		r = mc_model_remove_node(m, i, err);
		if (r)
			return r;
		folded++;
		i--;
	}
	return folded;
}
