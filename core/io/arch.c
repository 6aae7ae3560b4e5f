/* SPDX-License-Identifier: MIT */
/*
 * arch.c - the architecture JSON of model files ("mcomp.arch" in a
 * safetensors file's __metadata__): read into a graph through the graph
 * API, node by node, and written back from one.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "graph/model_int.h"

static const char *const top_keys[] = { "format", "input", "nodes", NULL };
static const char *const node_keys[] = { "name", "op", "inputs", "attrs", NULL };

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

#define MAX_ATTRS 64

/* The JSON attrs of a node as typed values; lists borrow nums[]. */
static int json_attrs(json_t *attrs, struct mc_attr *out, double (*nums)[MC_MAX_DIMS * 8],
		      const char *origin, const char *node, struct mc_err *err)
{
	const char *key;
	json_t *v;
	int n = 0;

	if (attrs && !json_is_object(attrs))
		return mc_err_set(err, MC_EINVAL, "%s: node '%s': attrs must be an object", origin,
				  node);
	json_object_foreach (attrs, key, v) {
		struct mc_attr *a = &out[n];

		if (n >= MAX_ATTRS - 1)
			return mc_err_set(err, MC_EINVAL, "%s: node '%s': more than %d attributes",
					  origin, node, MAX_ATTRS - 1);
		memset(a, 0, sizeof(*a));
		a->name = key;
		switch (json_typeof(v)) {
		case JSON_INTEGER:
			a->type = MC_PARAM_TINT;
			a->i = json_integer_value(v);
			break;
		case JSON_REAL:
			a->type = MC_PARAM_TFLOAT;
			a->f = json_real_value(v);
			break;
		case JSON_TRUE:
		case JSON_FALSE:
			a->type = MC_PARAM_TBOOL;
			a->i = json_is_true(v);
			break;
		case JSON_STRING:
			a->type = MC_PARAM_TSTRING;
			a->s = json_string_value(v);
			break;
		case JSON_ARRAY: {
			size_t i;
			json_t *item;

			if (json_array_size(v) > MC_MAX_DIMS * 8)
				return mc_err_set(err, MC_EINVAL, "%s: node '%s': %s: list too long",
						  origin, node, key);
			a->type = MC_PARAM_TLIST;
			a->nums = nums[n];
			json_array_foreach (v, i, item) {
				if (!json_is_number(item))
					return mc_err_set(
					    err, MC_EINVAL,
					    "%s: node '%s': %s: items must be numbers", origin,
					    node, key);
				nums[n][i] = json_number_value(item);
			}
			a->n = (int)json_array_size(v);
			break;
		}
		default:
			return mc_err_set(err, MC_EINVAL,
					  "%s: node '%s': %s: expected a number, boolean or string",
					  origin, node, key);
		}
		n++;
	}
	out[n].name = NULL;
	return 0;
}

static int unknown_op(const char *origin, const char *where, const char *opname,
		      struct mc_err *err)
{
	const char *near = mc_suggest(mc_op_names(), opname);
	char list[512] = "";

	if (near)
		return mc_err_set(err, MC_EINVAL, "%s: %sunknown op '%s'; did you mean '%s'?",
				  origin, where, opname, near);
	for (const char *const *o = mc_op_names(); *o; o++)
		snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s",
			 o == mc_op_names() ? "" : ", ", *o);
	return mc_err_set(err, MC_EINVAL, "%s: %sunknown op '%s'; the ops are %s", origin, where,
			  opname, list);
}

static int add_node(struct mc_model *m, int i, json_t *jn, const char *origin,
		    struct mc_err *err)
{
	json_t *jname = json_object_get(jn, "name"), *jop = json_object_get(jn, "op");
	json_t *jins = json_object_get(jn, "inputs");
	const char *opname = json_string_value(jop), *name, *ins[MC_NODE_MAX_INPUTS + 1];
	const struct mc_op *op;
	struct mc_attr attrs[MAX_ATTRS];
	double nums[MAX_ATTRS][MC_MAX_DIMS * 8];
	char where[64], auto_name[300];
	size_t k;
	json_t *v;
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
	op = mc_op_find(opname);
	if (!op)
		return unknown_op(origin, where, opname, err);
	if (jname && (!json_is_string(jname) || !*json_string_value(jname)))
		return mc_err_set(err, MC_EINVAL, "%s: %s\"name\" must be a non-empty string",
				  origin, where);
	if (jname) {
		name = json_string_value(jname);
	} else {
		/* Unnamed nodes are counted per op: linear1, relu1, linear2, ... */
		int nth = 1;

		for (int j = 0; j < i; j++)
			nth += m->nodes[j]->op == op;
		snprintf(auto_name, sizeof(auto_name), "%s%d", op->name, nth);
		name = auto_name;
	}
	if (!strcmp(name, "input"))
		return mc_err_set(err, MC_EINVAL,
				  "%s: %s\"input\" names the model input; rename the node", origin,
				  where);
	if (mc_model_find(m, name) >= 0)
		return mc_err_set(err, MC_EINVAL,
				  "%s: %sname '%s' is used by node %d too; names must be unique",
				  origin, where, name, mc_model_find(m, name));
	if (jins) {
		if (!json_is_array(jins) || !mc_op_takes(op, (int)json_array_size(jins))) {
			char many[32];

			if (op->n_inputs == MC_OP_VARIADIC)
				snprintf(many, sizeof(many), "2 to %d inputs", MC_NODE_MAX_INPUTS);
			else
				snprintf(many, sizeof(many), "%d input%s", op->n_inputs,
					 op->n_inputs == 1 ? "" : "s");
			return mc_err_set(err, MC_EINVAL,
					  "%s: node '%s': %s takes %s; give \"inputs\" as a list of "
					  "that many node names",
					  origin, name, op->name, many);
		}
		json_array_foreach (jins, k, v) {
			ins[k] = json_string_value(v);
			if (!ins[k])
				return mc_err_set(err, MC_EINVAL,
						  "%s: node '%s': inputs must be node names",
						  origin, name);
			if (strcmp(ins[k], "input") && mc_model_find(m, ins[k]) < 0)
				return mc_err_set(err, MC_EINVAL,
						  "%s: node '%s': input '%s' is not an earlier node; "
						  "use \"input\" or the name of a node listed before it",
						  origin, name, ins[k]);
		}
		ins[json_array_size(jins)] = NULL;
	} else if (op->n_inputs != 1) {
		return mc_err_set(err, MC_EINVAL,
				  "%s: node '%s': %s takes %s%d inputs; list them in \"inputs\"",
				  origin, name, op->name, op->n_inputs ? "" : "2 to ",
				  op->n_inputs ? op->n_inputs : MC_NODE_MAX_INPUTS);
	}
	r = json_attrs(json_object_get(jn, "attrs"), attrs, nums, origin, name, err);
	if (r)
		return r;
	r = mc_model_add_node(m, -1, name, opname, jins ? ins : NULL, attrs, err);
	if (r < 0)
		return mc_err_prefix(err, "%s", origin);
	return 0;
}

static struct mc_model *from_arch(const char *json, const char *origin, int shapes,
				  struct mc_err *err)
{
	struct mc_model *m = NULL;
	json_t *root, *jin, *jnodes, *jfmt;
	int64_t shape[MC_MAX_DIMS];
	json_error_t je;
	size_t k;
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
	jin = json_object_get(root, "input");
	if (!json_is_array(jin) || json_array_size(jin) < 1 || json_array_size(jin) > MC_MAX_DIMS) {
		mc_err_set(err, MC_EINVAL,
			   "%s: \"input\" must be the per-sample shape, a list of 1 to %d sizes "
			   "such as [1, 28, 28]",
			   origin, MC_MAX_DIMS);
		goto fail;
	}
	json_array_foreach (jin, k, v) {
		if (!json_is_integer(v)) {
			mc_err_set(err, MC_EINVAL,
				   "%s: input dimension %zu must be a positive integer and the "
				   "sample size at most %d values",
				   origin, k, INT_MAX);
			goto fail;
		}
		shape[k] = json_integer_value(v);
	}
	m = mc_model_new((int)json_array_size(jin), shape, err);
	if (!m) {
		mc_err_prefix(err, "%s", origin);
		goto fail;
	}
	/* Shapes first, data once the size is known to fit (mc_mem_check). */
	m->arch_only = shapes;
	jnodes = json_object_get(root, "nodes");
	if (!json_is_array(jnodes) || json_array_size(jnodes) < 1 ||
	    json_array_size(jnodes) > INT_MAX / 2) {
		mc_err_set(err, MC_EINVAL, "%s: \"nodes\" must be a non-empty list of nodes",
			   origin);
		goto fail;
	}
	json_array_foreach (jnodes, k, v)
		if (add_node(m, (int)k, v, origin, err))
			goto fail;
	json_decref(root);
	return m;

fail:
	mc_model_free(m);
	json_decref(root);
	return NULL;
}

struct mc_model *mc_model_from_arch_shapes(const char *json, const char *origin,
					   struct mc_err *err)
{
	return from_arch(json, origin, 1, err);
}

int mc_model_fits(const struct mc_model *m, uint64_t extra, const char *origin,
		  struct mc_err *err)
{
	char what[1200];

	snprintf(what, sizeof(what), "%s: a model of %lld parameters", origin ? origin : "model",
		 (long long)mc_model_nparams(m));
	return mc_mem_check(mc_model_param_bytes(m) + extra, what, err);
}

struct mc_model *mc_model_from_arch(const char *json, const char *origin, struct mc_err *err)
{
	struct mc_model *m = from_arch(json, origin, 1, err);

	if (m && (mc_model_fits(m, 0, origin, err) || mc_model_materialize(m, err))) {
		mc_model_free(m);
		return NULL;
	}
	return m;
}

/* ---------------------------------------------------------------- to JSON */

/* Nonzero when attribute d of attrs holds its default (for MC_PARAM_FOMIT rows). */
static int at_default(const struct mc_param_def *d, const void *attrs)
{
	char now[256];

	mc_param_format(d, attrs, now, sizeof(now));
	return d->def && !strcmp(now, d->def);
}

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
		const struct mc_node *nd = m->nodes[i];
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
			    ins, json_string(src == MC_NODE_INPUT ? "input" : m->nodes[src]->name));
		}
		json_object_set_new(jn, "inputs", ins);
		for (int p = 0; nd->op->attrs[p].name; p++) {
			const struct mc_param_def *d = &nd->op->attrs[p];
			json_t *v;

			if ((d->flags & MC_PARAM_FOMIT) && at_default(d, nd->attrs))
				continue;
			v = attr_json(d, nd->attrs);
			if (!v || json_object_set_new(attrs, d->name, v))
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
