/* SPDX-License-Identifier: MIT */
/*
 * layers.c - a model's build: section (an input shape and a layer list),
 * made into a model through the graph API.
 *
 * Each item of "layers:" is an op of the op table with its attributes:
 * "relu", {linear: 512} or {linear: {out: 512}}, with "name:" and "inputs:"
 * beside the op where needed. Unnamed layers are named after their op and
 * count (linear2); a layer's input is the layer before unless "inputs:" says
 * otherwise. Each layer is added to the graph as it is read, so a layer
 * that does not fit its input is reported at its own line and column. The
 * rest of the pipeline reader calls only mc_pl_build_model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/pipeline.h>

#include "graph/model_int.h"
#include "host/pipeline_int.h"
#include "io/ydoc.h"

#define bad(l, y, ...) mc_errlist_at(&(l)->el, (y), __VA_ARGS__)

struct opcount {
	const struct mc_op *op;
	int n;
};

/* The layers read so far: their names, and whether the graph holds them. */
struct built {
	struct mc_model *m; /* NULL once a layer did not fit: the rest are only checked */
	char **names;
	int n;
};

static int name_index(const struct built *bt, const char *name)
{
	for (int i = 0; i < bt->n; i++)
		if (!strcmp(bt->names[i], name))
			return i;
	return -1;
}

/*
 * The inputs of a layer as node indices: those of "inputs:" (a name or a
 * list of names of earlier layers, or "input"), else the layer before.
 * Returns how many, or -1 (reported) when one is not an earlier layer or
 * the count is not the op's.
 */
static int layer_inputs(struct ld *l, const struct mc_ynode *y, const struct mc_ynode *insv,
			const struct mc_op *op, const char *where, const struct built *bt,
			int *ins)
{
	int n = 0, ok = 1;

	if (!insv) {
		if (op->n_inputs != 1) {
			if (op->n_inputs == MC_OP_VARIADIC)
				bad(l, y, "%s: %s takes 2 to %d inputs; list them, e.g. inputs: [e1, e3]",
				    where, op->name, MC_NODE_MAX_INPUTS);
			else
				bad(l, y, "%s: %s takes %d inputs; list them, e.g. inputs: [conv2, relu1]",
				    where, op->name, op->n_inputs);
			return -1;
		}
		ins[0] = bt->n - 1 < 0 ? MC_NODE_INPUT : bt->n - 1;
		return 1;
	}
	if (insv->kind == MC_YMAP) {
		bad(l, insv, "%s: inputs must be a layer name or a list of layer names", where);
		return -1;
	}
	n = insv->kind == MC_YSEQ ? insv->n : 1;
	for (int i = 0; i < n; i++) {
		const struct mc_ynode *it = insv->kind == MC_YSEQ ? insv->items[i] : insv;
		const char *name = mc_pl_want_scalar(l, it, "inputs");
		int src;

		if (!name) {
			ok = 0;
			continue;
		}
		src = strcmp(name, "input") ? name_index(bt, name) : MC_NODE_INPUT;
		if (src == -1 && strcmp(name, "input")) {
			bad(l, it, "%s: input '%s' is not an earlier layer; name a layer above this "
				   "one (given with name: or counted, such as conv2d1) or 'input'",
			    where, name);
			ok = 0;
			continue;
		}
		if (i < MC_NODE_MAX_INPUTS)
			ins[i] = src;
	}
	if (ok && !mc_op_takes(op, n)) {
		if (op->n_inputs == MC_OP_VARIADIC)
			bad(l, insv, "%s: %s takes 2 to %d inputs, got %d", where, op->name,
			    MC_NODE_MAX_INPUTS, n);
		else
			bad(l, insv, "%s: %s takes %d input%s, got %d", where, op->name,
			    op->n_inputs, op->n_inputs == 1 ? "" : "s", n);
		ok = 0;
	}
	return ok ? n : -1;
}

/*
 * One item of a layer list, added to the graph: "relu", {linear: 512},
 * {linear: {out: 512}} or either with "name: fc1" and "inputs: [a, b]"
 * beside the op. Returns 0, or -1 with the error reported.
 */
static int add_layer(struct ld *l, const struct mc_ynode *y, int pos, struct opcount *counts,
		     int *ncounts, struct built *bt)
{
	const struct mc_ynode *opkey = NULL, *opval = NULL, *namev = NULL, *insv = NULL;
	const struct mc_op *op;
	char where[300], nbuf[256], tbuf[256];
	const char *opname, *name;
	int ins[MC_NODE_MAX_INPUTS], n_ins;
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
				return -1;
			} else {
				opkey = y->keys[i];
				opval = y->items[i];
			}
		}
		if (!opkey) {
			bad(l, y, "layer %d: no op; write an op name such as 'relu' or '{linear: "
				  "512}'",
			    pos);
			return -1;
		}
	} else {
		bad(l, y, "layer %d must be an op name or a one-key mapping such as {linear: 512}, "
			  "not %s",
		    pos, mc_ynode_what(y));
		return -1;
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
		return -1;
	}
	snprintf(where, sizeof(where), "layer %d (%s)", pos, opname);
	conf = calloc(1, op->attr_size ? op->attr_size : 1);
	if (!conf) {
		bad(l, y, "out of memory");
		return -1;
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
	if (name && name_index(bt, name) >= 0) {
		bad(l, namev ? namev : y, "%s: a layer is already named '%s'; name this one "
					  "otherwise",
		    where, name);
		ok = 0;
	}
	n_ins = layer_inputs(l, y, insv, op, where, bt, ins);
	if (n_ins < 0)
		ok = 0;
	if (!ok)
		goto fail;
	bt->names[bt->n] = strdup(name);
	if (!bt->names[bt->n]) {
		bad(l, y, "out of memory");
		ok = 0;
		goto fail;
	}
	bt->n++;
	/* Inputs name layers by their place in the list, which is their index
	 * in the graph while every layer so far has fitted. */
	if (bt->m && mc_model_add_conf(bt->m, name, op, ins, n_ins, conf, &l->tmp) < 0) {
		bad(l, y, "%s: %s", where, l->tmp.msg);
		mc_model_free(bt->m);
		bt->m = NULL;
		ok = 0;
	}
fail:
	mc_param_free(op->attrs, conf);
	free(conf);
	return ok ? 0 : -1;
}

int mc_pl_build_model(struct ld *l, const struct mc_ynode *key, const struct mc_ynode *b,
		      struct mc_pl_model *pm)
{
	static const char *const build_keys[] = { "input", "layers", NULL };
	struct mc_ynode *in, *layers;
	struct opcount *counts = NULL;
	struct built bt = { 0 };
	int64_t shape[MC_MAX_DIMS];
	char where[300];
	int ncounts = 0, ok = 1;

	snprintf(where, sizeof(where), "model '%s' build", key->value);
	if (!mc_pl_want_map(l, b, where))
		return -1;
	mc_pl_check_keys(l, b, build_keys, where);
	in = mc_ymap_get(b, "input", NULL);
	layers = mc_ymap_get(b, "layers", NULL);
	if (!in || !layers) {
		bad(l, b, "%s: missing required key '%s'%s", where, in ? "layers" : "input",
		    in ? "" : "; give the per-sample input shape, e.g. input: [1, 28, 28]");
		return -1;
	}
	if (in->kind != MC_YSEQ || in->n < 1 || in->n > MC_MAX_DIMS) {
		bad(l, in, "%s: input must be a list of 1 to %d dimensions, such as [1, 28, 28]",
		    where, MC_MAX_DIMS);
		ok = 0;
	} else {
		for (int i = 0; i < in->n; i++)
			if (mc_pl_want_int(l, in->items[i], "input", 1, 1 << 24, &shape[i]))
				ok = 0;
	}
	if (ok) {
		bt.m = mc_model_new(in->n, shape, &l->tmp);
		if (!bt.m) {
			bad(l, in, "%s: %s", where, l->tmp.msg);
			ok = 0;
		} else {
			/* Shapes only: validation computes sizes without allocating
			 * weights; mc_pipeline_run gives them data and draws them. */
			bt.m->arch_only = 1;
		}
	}
	if (layers->kind != MC_YSEQ || !layers->n) {
		bad(l, layers, "%s: layers must be a non-empty list, such as [flatten, {linear: "
			       "10}]",
		    where);
		ok = 0;
		goto out;
	}
	if (layers->n > MC_MODEL_MAX_NODES) {
		/* Refused before any layer is read: names are checked against
		 * every earlier layer, so the work grows with the square. */
		bad(l, layers, "%s: %d layers; a model has at most %d", where, layers->n,
		    MC_MODEL_MAX_NODES);
		ok = 0;
		goto out;
	}
	counts = calloc((size_t)layers->n, sizeof(*counts));
	bt.names = calloc((size_t)layers->n, sizeof(*bt.names));
	if (!counts || !bt.names) {
		bad(l, layers, "out of memory");
		ok = 0;
		goto out;
	}
	for (int i = 0; i < layers->n; i++)
		if (add_layer(l, layers->items[i], i + 1, counts, &ncounts, &bt))
			ok = 0;
	if (ok && bt.m) {
		pm->model = bt.m;
		bt.m = NULL;
	}
out:
	for (int i = 0; i < bt.n; i++)
		free(bt.names[i]);
	free(bt.names);
	free(counts);
	mc_model_free(bt.m);
	return pm->model ? 0 : -1;
}
