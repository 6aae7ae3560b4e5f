/* SPDX-License-Identifier: MIT */
/*
 * layers.c - a model's build: section (an input shape and a layer list),
 * made into a model through the graph API.
 *
 * Each item of "layers:" is an op of the op table with its attributes:
 * "relu", {linear: 512} or {linear: {out: 512}}, with "name:" and "inputs:"
 * beside the op where needed; or a block of the blocks: section (blocks.c)
 * with its arguments, "repeat:" and "first:". Unnamed layers are named after
 * their op (or block) and count (linear2); a layer's input is the layer
 * before unless "inputs:" says otherwise. A block's layers are read like the
 * model's, in a scope of their own: their names are prefixed with the use's
 * ("stage2.1.conv1"), "input" is the block's input, and a layer whose
 * "when:" is false stands for its first input. Each layer is added to the
 * graph as it is read, so a layer that does not fit its input is reported at
 * its own line and column. The rest of the pipeline reader calls only
 * mc_pl_build_model.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/pipeline.h>

#include "graph/model_int.h"
#include "host/pipeline_int.h"
#include "io/ydoc.h"

#define bad(l, y, ...) mc_errlist_at(&(l)->el, (y), __VA_ARGS__)

/* YAML nodes that expanding the blocks of one model may copy. */
#define EXPAND_MAX (4 * (uint64_t)MC_YAML_MAX_NODES)
/* A layer that stands for nothing known: read after a block that was not expanded. */
#define UNKNOWN_NODE (-2)

struct name_ent {
	const char *name; /* in the document's arena */
	int node;	  /* a node index, MC_NODE_INPUT, or UNKNOWN_NODE; a count for counts */
};

struct names {
	struct name_ent *v;
	int n, cap;
};

/* The graph being built. */
struct built {
	struct mc_model *m; /* NULL once a layer did not fit: the rest are only checked */
	int n;		    /* nodes added: the index of the next one while m holds them all */
	uint64_t work;	    /* YAML nodes copied expanding blocks */
	int stop;	    /* a limit was passed (reported): read no further */
	const char *model;  /* the model's name */
};

/* One layer list being read: the model's, or one use of a block. */
struct scope {
	const struct scope *up;
	const struct mc_pl_block *block; /* NULL: the model's own list */
	const char *prefix;		 /* of node names: "" or "stage2.1." */
	const char *ctx;		 /* of messages: "" or "stage2.1 (block 'basic'): " */
	const struct mc_ynode *top;	 /* the model's layer being read, for its limits */
	int input;			 /* what "input" names */
	int last;			 /* what a layer without inputs reads */
	int depth;
	struct names names;  /* the layers (and uses of blocks) read so far */
	struct names counts; /* per op or block: how many so far */
};

static int names_find(const struct names *ns, const char *name)
{
	for (int i = 0; i < ns->n; i++)
		if (!strcmp(ns->v[i].name, name))
			return i;
	return -1;
}

static int names_put(struct ld *l, struct names *ns, const char *name, int node)
{
	if (ns->n == ns->cap) {
		int cap = ns->cap ? ns->cap * 2 : 16;
		struct name_ent *v = realloc(ns->v, sizeof(*v) * (size_t)cap);

		if (!v)
			return MC_ENOMEM;
		ns->v = v;
		ns->cap = cap;
	}
	ns->v[ns->n].name = mc_ydoc_strdup(l->doc, name);
	if (!ns->v[ns->n].name)
		return MC_ENOMEM;
	ns->v[ns->n++].node = node;
	return 0;
}

/* Counts one more layer of kind (an op's or block's name); returns the count. */
static int count_kind(struct ld *l, struct scope *sc, const char *kind)
{
	int k = names_find(&sc->counts, kind);

	if (k < 0) {
		if (names_put(l, &sc->counts, kind, 0))
			return -1;
		k = sc->counts.n - 1;
	}
	return ++sc->counts.v[k].node;
}

/* The channels of node i's output (the model input for MC_NODE_INPUT), or -1. */
static int64_t channels(const struct built *bt, int i)
{
	if (!bt->m || i == UNKNOWN_NODE)
		return -1;
	if (i == MC_NODE_INPUT)
		return bt->m->in_shape[0];
	return bt->m->nodes[i]->out_shape[0];
}

/*
 * The inputs of a layer as node indices: those of "inputs:" (a name or a
 * list of names of earlier layers of the scope, or "input"), else the layer
 * before. n_want: the op's count (-1 for a block: exactly one). Returns how
 * many, or -1 (reported) when one is not an earlier layer or the count is
 * not the op's.
 */
static int layer_inputs(struct ld *l, const struct mc_ynode *y, const struct mc_ynode *insv,
			const struct mc_op *op, const char *where, const struct scope *sc, int *ins)
{
	int n = 0, ok = 1;

	if (!insv) {
		if (op && op->n_inputs != 1) {
			if (op->n_inputs == MC_OP_VARIADIC)
				bad(l, y,
				    "%s: %s takes 2 to %d inputs; list them, e.g. inputs: [e1, e3]",
				    where, op->name, MC_NODE_MAX_INPUTS);
			else
				bad(l, y,
				    "%s: %s takes %d inputs; list them, e.g. inputs: [conv2, "
				    "relu1]",
				    where, op->name, op->n_inputs);
			return -1;
		}
		ins[0] = sc->last;
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
		int k, src;

		if (!name) {
			ok = 0;
			continue;
		}
		k = names_find(&sc->names, name);
		src = !strcmp(name, "input") ? sc->input : k >= 0 ? sc->names.v[k].node : -3;
		if (src == -3 && sc->block) {
			bad(l, it,
			    "%s: input '%s' is not an earlier layer of block '%s'; name a "
			    "layer above this one in the block, or 'input' (the block's input)",
			    where, name, sc->block->name);
			ok = 0;
			continue;
		}
		if (src == -3) {
			bad(l, it,
			    "%s: input '%s' is not an earlier layer; name a layer above this "
			    "one (given with name: or counted, such as conv2d1) or 'input'",
			    where, name);
			ok = 0;
			continue;
		}
		if (i < MC_NODE_MAX_INPUTS)
			ins[i] = src;
	}
	if (ok && !op && n != 1) {
		bad(l, insv, "%s: a block reads one input, got %d", where, n);
		ok = 0;
	} else if (ok && op && !mc_op_takes(op, n)) {
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

/* The attributes of op from opval (a mapping, a scalar for the first one, or NULL) into conf. */
static int read_attrs(struct ld *l, const struct mc_ynode *y, const struct mc_ynode *opval,
		      const struct mc_op *op, const char *opname, const char *ctx,
		      const char *where, void *conf)
{
	char tbuf[256];
	int ok = 1;

	if (mc_param_defaults(op->attrs, conf, &l->tmp)) {
		bad(l, y, "%s: op '%s' has a bad default: %s", where, opname, l->tmp.msg);
		return 0;
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
						    "%sunknown key '%s' in op '%s'; did you mean "
						    "'%s'?",
						    ctx, an, opname, near);
					else
						bad(l, opval->keys[i],
						    "%sunknown key '%s' in op '%s'", ctx, an,
						    opname);
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

		if (d->def ||
		    (opval && opval->kind == MC_YMAP && mc_ymap_get(opval, d->name, NULL)) ||
		    (i == 0 && opval && opval->kind == MC_YSCALAR && !mc_ynode_is_null(opval)))
			continue;
		bad(l, y, "%s: missing required attribute '%s' (%s)%s%s%s", where, d->name,
		    mc_param_type_text(d, tbuf, sizeof(tbuf)), i ? "" : "; write {",
		    i ? "" : opname, i ? "" : ": VALUE}");
		ok = 0;
	}
	return ok;
}

static int add_item(struct ld *l, const struct mc_ynode *y, int pos, struct scope *sc,
		    struct built *bt);

static int want_repeat(struct ld *l, const struct mc_ynode *y, const char *where, int64_t *out)
{
	char what[1300];

	snprintf(what, sizeof(what), "%s: repeat", where);
	return mc_pl_want_int(l, y, what, 1, MC_PL_MAX_REPEAT, out);
}

/* The parts of one layer item. */
struct item {
	const struct mc_ynode *kind, *val, *name, *inputs, *when, *repeat, *first;
};

/*
 * Reads the uses of block b (repeat times, each reading the one before), in
 * scopes of their own, into the graph; name: of the use (without the
 * scope's prefix). Returns 0, or -1 (reported).
 */
static int add_block(struct ld *l, const struct mc_ynode *y, const struct item *it,
		     const struct mc_pl_block *b, const char *name, int input, int64_t repeat,
		     const char *where, struct scope *sc, struct built *bt)
{
	int ok = 1, from = input;

	for (const struct scope *s = sc; s; s = s->up)
		if (s->block == b) /* the search of cycles reported it */
			return -1;
	if (sc->depth + 1 > MC_PL_MAX_NESTING) {
		bad(l, it->kind, "%s: blocks nested more than %d deep", where, MC_PL_MAX_NESTING);
		return -1;
	}
	for (int64_t r = 1; r <= repeat && ok && !bt->stop; r++) {
		char use[2048], prefix[2100], ctx[2200], rw[1300];
		struct scope in = {.up = sc, .block = b, .top = sc->top, .depth = sc->depth + 1};
		const struct mc_pl_env *env;
		int64_t ch = channels(bt, from);

		if (it->repeat)
			snprintf(use, sizeof(use), "%s%s.%lld", sc->prefix, name, (long long)r);
		else
			snprintf(use, sizeof(use), "%s%s", sc->prefix, name);
		if (strlen(use) >= 256) {
			bad(l, y,
			    "%s: the name '%s' is longer than 255 characters; use shorter "
			    "names for blocks and their layers",
			    where, use);
			return -1;
		}
		snprintf(prefix, sizeof(prefix), "%s.", use);
		snprintf(ctx, sizeof(ctx), "%s (block '%s'): ", use, b->name);
		snprintf(rw, sizeof(rw), "%s: ", where);
		if (ch < 0) {
			/* An earlier layer did not fit: the block's layers depend on its
			 * input, so they are not read; the use's arguments still are. */
			mc_pl_block_bind(l, b, y, it->val, r == 1 ? it->first : NULL, 1, rw);
			return -1;
		}
		env = mc_pl_block_bind(l, b, y, it->val, r == 1 ? it->first : NULL, ch, rw);
		if (!env)
			return -1;
		in.prefix = prefix;
		in.ctx = ctx;
		in.input = in.last = from;
		for (int i = 0; i < b->layers->n && !bt->stop; i++) {
			const struct mc_ynode *t = b->layers->items[i], *c;

			bt->work += t->size;
			if (bt->work > EXPAND_MAX) {
				bad(l, sc->top,
				    "model '%s': its blocks expand to more than %llu YAML "
				    "nodes; use fewer or smaller blocks",
				    bt->model, (unsigned long long)EXPAND_MAX);
				bt->stop = 1;
				break;
			}
			c = mc_pl_subst(l, t, env, ctx);
			if (!c || add_item(l, c, i + 1, &in, bt))
				ok = 0;
		}
		from = in.last;
		free(in.names.v);
		free(in.counts.v);
	}
	if (!ok)
		return -1;
	if (names_put(l, &sc->names, name, from)) {
		bad(l, y, "out of memory");
		return -1;
	}
	sc->last = from;
	return 0;
}

/*
 * One item of a layer list, added to the graph: "relu", {linear: 512},
 * {linear: {out: 512}} or either with "name: fc1" and "inputs: [a, b]"
 * beside the op; or a block's use, {basic: {out: 16}, repeat: 3}. Returns
 * 0, or -1 with the error reported.
 */
static int add_item(struct ld *l, const struct mc_ynode *y, int pos, struct scope *sc,
		    struct built *bt)
{
	struct item it = {0};
	const struct mc_op *op;
	const struct mc_pl_block *b = NULL;
	char where[1200], nbuf[1024], full[1100], tbuf[1024];
	const char *opname, *name;
	int ins[MC_NODE_MAX_INPUTS], n_ins, nth, when = 1;
	int64_t repeat = 1;
	void *conf = NULL;
	int ok = 1;

	if (y->kind == MC_YSCALAR && !mc_ynode_is_null(y)) {
		it.kind = y;
	} else if (y->kind == MC_YMAP) {
		for (int i = 0; i < y->n; i++) {
			const char *k = y->keys[i]->value;

			if (!strcmp(k, "name")) {
				it.name = y->items[i];
			} else if (!strcmp(k, "inputs")) {
				it.inputs = y->items[i];
			} else if (!strcmp(k, "when")) {
				it.when = y->items[i];
			} else if (!strcmp(k, "repeat")) {
				it.repeat = y->items[i];
			} else if (!strcmp(k, "first")) {
				it.first = y->items[i];
			} else if (it.kind) {
				bad(l, y->keys[i],
				    "%slayer %d: one op per layer; found '%s' and '%s' (write each "
				    "as its own item of the list)",
				    sc->ctx, pos, it.kind->value, k);
				return -1;
			} else {
				it.kind = y->keys[i];
				it.val = y->items[i];
			}
		}
		if (!it.kind) {
			bad(l, y,
			    "%slayer %d: no op; write an op name such as 'relu' or '{linear: "
			    "512}'",
			    sc->ctx, pos);
			return -1;
		}
	} else {
		bad(l, y,
		    "%slayer %d must be an op name or a one-key mapping such as {linear: 512}, "
		    "not %s",
		    sc->ctx, pos, mc_ynode_what(y));
		return -1;
	}
	opname = it.kind->value;
	op = mc_op_find(opname);
	if (!op)
		b = mc_pl_block_find(l, opname);
	if (!op && !b) {
		const char *near = mc_suggest(mc_pl_layer_kinds(l), opname);

		const char *what = l->blocks && l->blocks->n ? "op or block" : "op";

		if (near)
			bad(l, it.kind, "%slayer %d: unknown %s '%s'; did you mean '%s'?", sc->ctx,
			    pos, what, opname, near);
		else
			bad(l, it.kind, "%slayer %d: unknown %s '%s'; the ops are %s", sc->ctx, pos,
			    what, opname, mc_pl_join(mc_op_names(), tbuf, sizeof(tbuf)));
		return -1;
	}
	snprintf(where, sizeof(where), "%slayer %d (%s)", sc->ctx, pos, opname);
	if (it.when) {
		when = mc_pl_want_when(l, it.when, sc->ctx);
		if (when < 0)
			ok = 0;
	}
	if (op && (it.repeat || it.first)) {
		bad(l, it.repeat ? it.repeat : it.first,
		    "%s: '%s' is for blocks (defined under blocks:); %s is an op", where,
		    it.repeat ? "repeat" : "first", opname);
		ok = 0;
	}
	if (b && it.repeat && want_repeat(l, it.repeat, where, &repeat))
		ok = 0;
	if (b && it.first && !it.repeat) {
		bad(l, it.first,
		    "%s: first: sets arguments of the first of repeated uses; give "
		    "repeat: too, or put them beside the others",
		    where);
		ok = 0;
	} else if (b && it.first && !mc_pl_want_map(l, it.first, "first")) {
		ok = 0;
	}
	if (op && when > 0) {
		conf = calloc(1, op->attr_size ? op->attr_size : 1);
		if (!conf) {
			bad(l, y, "out of memory");
			return -1;
		}
		if (!read_attrs(l, y, it.val, op, opname, sc->ctx, where, conf))
			ok = 0;
	}
	/* The layer's name: given, or the op's (block's) name and its count so far. */
	nth = count_kind(l, sc, opname);
	if (nth < 0) {
		bad(l, y, "out of memory");
		ok = 0;
		goto out;
	}
	if (it.name) {
		name = mc_pl_want_scalar(l, it.name, "name");
		if (name && (!mc_pl_valid_name(name) || !strcmp(name, "input"))) {
			bad(l, it.name,
			    "%s: '%s' is not a usable layer name; use letters, digits, "
			    "'_' and '-', and not 'input'",
			    where, name);
			name = NULL;
		}
		if (!name)
			ok = 0;
	} else {
		snprintf(nbuf, sizeof(nbuf), "%s%d", opname, nth);
		name = nbuf;
	}
	if (name && names_find(&sc->names, name) >= 0) {
		bad(l, it.name ? it.name : y,
		    "%s: a layer is already named '%s'; name this one "
		    "otherwise",
		    where, name);
		ok = 0;
	}
	n_ins = layer_inputs(l, y, it.inputs, op, where, sc, ins);
	if (n_ins < 0)
		ok = 0;
	if (!ok)
		goto out;
	if (!when) {
		/* Left out: the layer stands for its first input. */
		if (names_put(l, &sc->names, name, ins[0])) {
			bad(l, y, "out of memory");
			ok = 0;
		}
		sc->last = ins[0];
		goto out;
	}
	if (b) {
		if (!b->usable || !b->layers) {
			ok = 0; /* its definition's errors are reported */
		} else if (add_block(l, y, &it, b, name, ins[0], repeat, where, sc, bt)) {
			/* later layers may read it: they are checked, not built */
			names_put(l, &sc->names, name, UNKNOWN_NODE);
			sc->last = UNKNOWN_NODE;
			ok = 0;
		}
		goto out;
	}
	snprintf(full, sizeof(full), "%s%s", sc->prefix, name);
	if (strlen(full) >= 256) {
		bad(l, y,
		    "%s: the node name '%s' is longer than 255 characters; use shorter "
		    "names for blocks and their layers",
		    where, full);
		ok = 0;
		goto out;
	}
	if (bt->n >= MC_MODEL_MAX_NODES) {
		bad(l, sc->top,
		    "model '%s': its layers expand to more than %d nodes, the most "
		    "a model has",
		    bt->model, MC_MODEL_MAX_NODES);
		bt->stop = 1;
		ok = 0;
		goto out;
	}
	if (names_put(l, &sc->names, name, bt->n)) {
		bad(l, y, "out of memory");
		ok = 0;
		goto out;
	}
	sc->last = bt->n;
	for (int k = 0; k < n_ins; k++)
		if (ins[k] == UNKNOWN_NODE && bt->m) {
			/* reads what a failed block would have made */
			mc_model_free(bt->m);
			bt->m = NULL;
		}
	bt->n++;
	/* Inputs name layers by their index in the graph, which is right while
	 * every layer so far has fitted. */
	if (bt->m && mc_model_add_conf(bt->m, full, op, ins, n_ins, conf, &l->tmp) < 0) {
		bad(l, y, "%s: %s", where, l->tmp.msg);
		mc_model_free(bt->m);
		bt->m = NULL;
		ok = 0;
	}
out:
	if (conf) {
		mc_param_free(op->attrs, conf);
		free(conf);
	}
	return ok ? 0 : -1;
}

int mc_pl_build_model(struct ld *l, const struct mc_ynode *key, const struct mc_ynode *b,
		      struct mc_pl_model *pm)
{
	static const char *const build_keys[] = {"input", "layers", NULL};
	struct mc_ynode *in, *layers;
	struct built bt = {.model = key->value};
	struct scope sc = {.prefix = "", .ctx = "", .input = MC_NODE_INPUT, .last = MC_NODE_INPUT};
	int64_t shape[MC_MAX_DIMS];
	char where[300];
	int ok = 1;

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
		bad(l, layers,
		    "%s: layers must be a non-empty list, such as [flatten, {linear: "
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
	for (int i = 0; i < layers->n && !bt.stop; i++) {
		sc.top = layers->items[i];
		if (add_item(l, layers->items[i], i + 1, &sc, &bt))
			ok = 0;
	}
	if (ok && bt.m && sc.last != bt.n - 1) {
		/* the last layer is a block whose last layer was left out (when:) */
		bad(l, layers->items[layers->n - 1],
		    "%s: the model's output would be an earlier layer, as the last layer left out "
		    "its own; end the model with a layer that is kept",
		    where);
		ok = 0;
	}
	if (ok && bt.m) {
		pm->model = bt.m;
		bt.m = NULL;
	}
out:
	free(sc.names.v);
	free(sc.counts.v);
	mc_model_free(bt.m);
	return pm->model ? 0 : -1;
}
