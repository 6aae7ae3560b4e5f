/* SPDX-License-Identifier: MIT */
/*
 * layers.c - a model's build: section (an input shape and a layer list),
 * made into a model.
 *
 * Each item of "layers:" is an op of the op table with its attributes:
 * "relu", {linear: 512} or {linear: {out: 512}}, with "name:" and "inputs:"
 * beside the op where needed. Unnamed layers are named after their op and
 * count (linear2); a layer's input is the layer before unless "inputs:" says
 * otherwise. The list is checked and written as architecture JSON, which
 * mc_model_from_arch builds. The rest of the pipeline reader calls only
 * mc_pl_build_model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <mcomp/pipeline.h>

#include "host/pipeline_int.h"
#include "io/ydoc.h"

#define bad(l, y, ...) mc_errlist_at(&(l)->el, (y), __VA_ARGS__)

/* One op attribute's value as JSON. */
static json_t *attr_json(const struct mc_param_def *d, const void *conf)
{
	const char *f = (const char *)conf + d->offset;
	json_t *a;

	switch (d->type) {
	case MC_PARAM_TINT:
		return json_integer(*(const int *)f);
	case MC_PARAM_TFLOAT:
		return json_real(*(const double *)f);
	case MC_PARAM_TBOOL:
		return json_boolean(*(const int *)f);
	case MC_PARAM_TENUM:
		return json_string(d->choices[*(const int *)f]);
	case MC_PARAM_TLIST: {
		const struct mc_list *li = (const struct mc_list *)f;

		a = json_array();
		for (int i = 0; a && i < li->n; i++) {
			json_t *v;

			if (li->num && d->elem == MC_PARAM_TINT)
				v = json_integer((json_int_t)li->num[i]);
			else if (li->num)
				v = json_real(li->num[i]);
			else
				v = json_string(li->str[i]);
			json_array_append_new(a, v);
		}
		return a;
	}
	default: {
		const char *s = *(char *const *)f;

		return s ? json_string(s) : NULL;
	}
	}
}

struct opcount {
	const struct mc_op *op;
	int n;
};

/*
 * The inputs of a layer as a JSON list of node names: those of "inputs:" (a
 * name or a list of names of earlier layers, or "input"), else the layer
 * before. NULL (reported) when one is not an earlier layer or the count is
 * not the op's.
 */
static json_t *layer_inputs(struct ld *l, const struct mc_ynode *y, const struct mc_ynode *insv,
			    const struct mc_op *op, const char *where, json_t *names,
			    const char *prev)
{
	json_t *list = json_array();
	int n = 0, ok = 1;

	if (!list) {
		bad(l, y, "out of memory");
		return NULL;
	}
	if (!insv) {
		if (op->n_inputs != 1) {
			bad(l, y, "%s: %s takes %d inputs; list them, e.g. inputs: [conv2, relu1]",
			    where, op->name, op->n_inputs);
			json_decref(list);
			return NULL;
		}
		json_array_append_new(list, json_string(prev));
		return list;
	}
	if (insv->kind == MC_YMAP) {
		bad(l, insv, "%s: inputs must be a layer name or a list of layer names", where);
		json_decref(list);
		return NULL;
	}
	n = insv->kind == MC_YSEQ ? insv->n : 1;
	for (int i = 0; i < n; i++) {
		const struct mc_ynode *it = insv->kind == MC_YSEQ ? insv->items[i] : insv;
		const char *name = mc_pl_want_scalar(l, it, "inputs");

		if (!name) {
			ok = 0;
			continue;
		}
		if (strcmp(name, "input") && !json_object_get(names, name)) {
			bad(l, it, "%s: input '%s' is not an earlier layer; name a layer above this "
				   "one (given with name: or counted, such as conv2d1) or 'input'",
			    where, name);
			ok = 0;
			continue;
		}
		json_array_append_new(list, json_string(name));
	}
	if (ok && n != op->n_inputs) {
		bad(l, insv, "%s: %s takes %d input%s, got %d", where, op->name, op->n_inputs,
		    op->n_inputs == 1 ? "" : "s", n);
		ok = 0;
	}
	if (!ok) {
		json_decref(list);
		return NULL;
	}
	return list;
}

/*
 * One item of a layer list as a JSON node: "relu", {linear: 512},
 * {linear: {out: 512}} or either with "name: fc1" and "inputs: [a, b]"
 * beside the op.
 */
static json_t *layer_json(struct ld *l, const struct mc_ynode *y, int pos, struct opcount *counts,
			  int *ncounts, json_t *names, const char *prev)
{
	const struct mc_ynode *opkey = NULL, *opval = NULL, *namev = NULL, *insv = NULL;
	const struct mc_op *op;
	char where[300], nbuf[256], tbuf[256];
	const char *opname, *name;
	json_t *node = NULL, *attrs, *ins = NULL;
	void *conf = NULL;
	int k, ok = 1;

	if (y->kind == MC_YSCALAR && !mc_ynode_is_null(y)) {
		opkey = y;
	} else if (y->kind == MC_YMAP) {
		for (int i = 0; i < y->n; i++) {
			if (!strcmp(y->keys[i]->value, "name")) {
				namev = y->items[i];
			} else if (!strcmp(y->keys[i]->value, "inputs")) {
				insv = y->items[i];
			} else if (opkey) {
				bad(l, y->keys[i],
				    "layer %d: one op per layer; found '%s' and '%s' (write each "
				    "as its own item of the list)",
				    pos, opkey->value, y->keys[i]->value);
				return NULL;
			} else {
				opkey = y->keys[i];
				opval = y->items[i];
			}
		}
		if (!opkey) {
			bad(l, y, "layer %d: no op; write an op name such as 'relu' or '{linear: "
				  "512}'",
			    pos);
			return NULL;
		}
	} else {
		bad(l, y, "layer %d must be an op name or a one-key mapping such as {linear: 512}, "
			  "not %s",
		    pos, mc_ynode_what(y));
		return NULL;
	}
	opname = opkey->value;
	op = mc_op_find(opname);
	if (!op) {
		const char *near = mc_suggest(mc_op_names(), opname);

		if (near)
			bad(l, opkey, "layer %d: unknown op '%s'; did you mean '%s'?", pos, opname,
			    near);
		else
			bad(l, opkey, "layer %d: unknown op '%s'; the ops are %s", pos, opname,
			    mc_pl_join(mc_op_names(), tbuf, sizeof(tbuf)));
		return NULL;
	}
	snprintf(where, sizeof(where), "layer %d (%s)", pos, opname);
	conf = calloc(1, op->attr_size ? op->attr_size : 1);
	if (!conf) {
		bad(l, y, "out of memory");
		return NULL;
	}
	if (mc_param_defaults(op->attrs, conf, &l->tmp)) {
		bad(l, opkey, "%s: op '%s' has a bad default: %s", where, opname, l->tmp.msg);
		goto fail;
	}
	if (opval && !mc_ynode_is_null(opval)) {
		if (opval->kind == MC_YMAP) {
			for (int i = 0; i < opval->n; i++) {
				const char *an = opval->keys[i]->value;
				const struct mc_param_def *d = mc_param_find(op->attrs, an);

				if (!d) {
					const char *near = mc_param_suggest(op->attrs, an);

					if (near)
						bad(l, opval->keys[i],
						    "unknown key '%s' in op '%s'; did you mean '%s'?",
						    an, opname, near);
					else
						bad(l, opval->keys[i], "unknown key '%s' in op '%s'",
						    an, opname);
					ok = 0;
				} else if (mc_pl_set_value(l, d, conf, opval->items[i], where)) {
					ok = 0;
				}
			}
		} else if (!op->attrs || !op->attrs[0].name) {
			bad(l, opval, "%s: op '%s' takes no attributes; write just '%s'", where,
			    opname, opname);
			ok = 0;
		} else if (mc_pl_set_value(l, &op->attrs[0], conf, opval, where)) {
			ok = 0;
		}
	}
	for (int i = 0; op->attrs && op->attrs[i].name; i++) {
		const struct mc_param_def *d = &op->attrs[i];

		if (d->def || (opval && opval->kind == MC_YMAP && mc_ymap_get(opval, d->name, NULL)) ||
		    (i == 0 && opval && opval->kind == MC_YSCALAR && !mc_ynode_is_null(opval)))
			continue;
		bad(l, y, "%s: missing required attribute '%s' (%s)%s%s%s", where, d->name,
		    mc_param_type_text(d, tbuf, sizeof(tbuf)), i ? "" : "; write {", i ? "" : opname,
		    i ? "" : ": VALUE}");
		ok = 0;
	}
	/* The node's name: given, or the op's name and its count so far. */
	for (k = 0; k < *ncounts && counts[k].op != op; k++)
		;
	if (k == *ncounts) {
		counts[k].op = op;
		counts[k].n = 0;
		(*ncounts)++;
	}
	counts[k].n++;
	if (namev) {
		name = mc_pl_want_scalar(l, namev, "name");
		if (name && (!mc_pl_valid_name(name) || !strcmp(name, "input"))) {
			bad(l, namev, "%s: '%s' is not a usable layer name; use letters, digits, '_' "
				      "and '-', and not 'input'",
			    where, name);
			name = NULL;
		}
		if (!name)
			ok = 0;
	} else {
		snprintf(nbuf, sizeof(nbuf), "%s%d", opname, counts[k].n);
		name = nbuf;
	}
	if (name && json_object_get(names, name)) {
		bad(l, namev ? namev : y, "%s: a layer is already named '%s'; name this one "
					  "otherwise",
		    where, name);
		ok = 0;
	}
	ins = layer_inputs(l, y, insv, op, where, names, prev);
	if (!ins)
		ok = 0;
	if (!ok)
		goto fail;
	json_object_set_new(names, name, json_true());
	attrs = json_object();
	node = json_pack("{s:s, s:s, s:o, s:o}", "name", name, "op", opname, "inputs", ins,
			 "attrs", attrs);
	ins = NULL;
	for (int i = 0; node && op->attrs && op->attrs[i].name; i++) {
		json_t *v = attr_json(&op->attrs[i], conf);

		if (v)
			json_object_set_new(attrs, op->attrs[i].name, v);
	}
	if (!node)
		bad(l, y, "out of memory");
fail:
	json_decref(ins);
	mc_param_free(op->attrs, conf);
	free(conf);
	return node;
}

/* Builds the architecture JSON of a build: section; NULL (reported) on error. */
static char *build_arch(struct ld *l, const struct mc_ynode *b, const char *model)
{
	static const char *const build_keys[] = { "input", "layers", NULL };
	struct mc_ynode *in, *layers;
	struct opcount *counts = NULL;
	json_t *root = NULL, *nodes, *shape, *names = NULL;
	char where[300], *json = NULL;
	int ncounts = 0, ok = 1;
	const char *prev = "input";

	snprintf(where, sizeof(where), "model '%s' build", model);
	if (!mc_pl_want_map(l, b, where))
		return NULL;
	mc_pl_check_keys(l, b, build_keys, where);
	in = mc_ymap_get(b, "input", NULL);
	layers = mc_ymap_get(b, "layers", NULL);
	if (!in || !layers) {
		bad(l, b, "%s: missing required key '%s'%s", where, in ? "layers" : "input",
		    in ? "" : "; give the per-sample input shape, e.g. input: [1, 28, 28]");
		return NULL;
	}
	root = json_object();
	shape = json_array();
	nodes = json_array();
	names = json_object();
	json_object_set_new(root, "format", json_integer(MC_ARCH_FORMAT));
	json_object_set_new(root, "input", shape);
	json_object_set_new(root, "nodes", nodes);
	if (in->kind != MC_YSEQ || in->n < 1 || in->n > MC_MAX_DIMS) {
		bad(l, in, "%s: input must be a list of 1 to %d dimensions, such as [1, 28, 28]",
		    where, MC_MAX_DIMS);
		ok = 0;
	} else {
		for (int i = 0; i < in->n; i++) {
			int64_t d;

			if (mc_pl_want_int(l, in->items[i], "input", 1, 1 << 24, &d))
				ok = 0;
			else
				json_array_append_new(shape, json_integer(d));
		}
	}
	if (layers->kind != MC_YSEQ || !layers->n) {
		bad(l, layers, "%s: layers must be a non-empty list, such as [flatten, {linear: "
			       "10}]",
		    where);
		ok = 0;
		goto out;
	}
	counts = calloc((size_t)layers->n, sizeof(*counts));
	if (!counts) {
		ok = 0;
		goto out;
	}
	for (int i = 0; i < layers->n; i++) {
		json_t *node = layer_json(l, layers->items[i], i + 1, counts, &ncounts, names,
					  prev);

		if (!node) {
			ok = 0;
			continue;
		}
		json_array_append_new(nodes, node);
		prev = json_string_value(json_object_get(node, "name"));
	}
	if (ok)
		json = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
out:
	free(counts);
	json_decref(names);
	json_decref(root);
	return json;
}

/*
 * Builds model pm from its build: section b (key: the model's name in the
 * file): the layer list becomes pm->arch and pm->model, initialised from the
 * pipeline's seed. Returns 0, or -1 with every error reported.
 */
int mc_pl_build_model(struct ld *l, const struct mc_ynode *key, const struct mc_ynode *b,
		      struct mc_pl_model *pm)
{
	char where[300];

	snprintf(where, sizeof(where), "model '%s'", key->value);
	pm->arch = build_arch(l, b, key->value);
	if (!pm->arch)
		return -1;
	pm->model = mc_model_from_arch(pm->arch, l->p->path, &l->tmp);
	if (!pm->model) {
		bad(l, key, "%s: %s", where, mc_pl_strip_origin(l->tmp.msg, l->p->path));
		return -1;
	}
	mc_model_init(pm->model, l->p->seed);
	return 0;
}
