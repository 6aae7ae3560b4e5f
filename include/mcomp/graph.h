/* SPDX-License-Identifier: MIT */
/*
 * mcomp/graph.h - building and changing models, node by node.
 *
 * A model takes one input of a fixed per-sample shape (e.g. [1, 28, 28]) and
 * is a list of nodes in topological order; the last node's output is the
 * model's output (logits). Each node applies one op (mcomp/op.h) to the
 * outputs of earlier nodes and owns its parameters, named "<node>.<param>"
 * (fc1.weight [out, in], fc1.bias [out]).
 *
 * struct mc_model is opaque: read it with the accessors below, change it
 * with the mutations below. Every mutation infers the shapes of the nodes
 * it affects again (each op's setup) and is all or nothing: when a change
 * would not fit, the model is left as it was and err names the node, its op
 * and the shapes ("node 'fc2' (linear): ...; input [64]"). A parameter
 * keeps its values when its shape and dtype stay the same; a new or
 * reshaped one starts at zero, for the caller to fill. Node pointers from
 * mc_model_node() stay valid until their node is removed or replaced;
 * indices shift when nodes are inserted or removed before them.
 *
 * Building a 784-64-10 MLP:
 *
 *	int64_t in[] = {1, 28, 28};
 *	struct mc_model *m = mc_model_new(3, in, err);
 *	struct mc_attr fc1[] = {MC_ATTR_INT("out", 64), MC_ATTR_END};
 *	struct mc_attr fc2[] = {MC_ATTR_INT("out", 10), MC_ATTR_BOOL("bias", 0), MC_ATTR_END};
 *	mc_model_add_node(m, -1, "flatten1", "flatten", NULL, NULL, err);
 *	mc_model_add_node(m, -1, "fc1", "linear", NULL, fc1, err);
 *	mc_model_add_node(m, -1, "relu1", "relu", NULL, NULL, err);
 *	mc_model_add_node(m, -1, "fc2", "linear", NULL, fc2, err);
 *	mc_model_init(m, seed);
 *
 * In files, the architecture travels as JSON (a safetensors file's
 * __metadata__ "mcomp.arch", docs/formats.md):
 *
 *	{"format": 1, "input": [1, 28, 28],
 *	 "nodes": [{"name": "flatten1", "op": "flatten", "inputs": ["input"], "attrs": {}},
 *		   {"name": "linear1", "op": "linear", "inputs": ["flatten1"], "attrs": {"out": 512}}]}
 */
#ifndef MCOMP_GRAPH_H
#define MCOMP_GRAPH_H

#include <mcomp/op.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MC_ARCH_FORMAT 1

struct mc_model;

/*
 * struct mc_attr - one attribute value, typed, for building nodes. type is
 * MC_PARAM_TINT (i), TFLOAT (f), TBOOL (i), TSTRING or TENUM (s: the
 * choice's name) or TLIST (n numbers in nums). A value of the wrong type or
 * out of the attribute's range is refused with the attribute's name.
 */
struct mc_attr {
	const char *name;
	enum mc_param_type type;
	int64_t i;
	double f;
	const char *s;
	int n;
	const double *nums;
};

#define MC_ATTR_INT(k, v) { .name = (k), .type = MC_PARAM_TINT, .i = (v) }
#define MC_ATTR_FLOAT(k, v) { .name = (k), .type = MC_PARAM_TFLOAT, .f = (v) }
#define MC_ATTR_BOOL(k, v) { .name = (k), .type = MC_PARAM_TBOOL, .i = !!(v) }
#define MC_ATTR_STR(k, v) { .name = (k), .type = MC_PARAM_TSTRING, .s = (v) }
#define MC_ATTR_LIST(k, cnt, arr) { .name = (k), .type = MC_PARAM_TLIST, .n = (cnt), .nums = (arr) }
#define MC_ATTR_END { .name = NULL }

/* ---------------------------------------------------------------- reading */

MC_API int mc_model_n_nodes(const struct mc_model *m);
/* Node i (0 <= i < n_nodes), or NULL. */
MC_API const struct mc_node *mc_model_node(const struct mc_model *m, int i);
/* The index of the node named name, or -1. */
MC_API int mc_model_find(const struct mc_model *m, const char *name);
/* The per-sample input shape into shape[MC_MAX_DIMS]; returns its ndim. */
MC_API int mc_model_input_shape(const struct mc_model *m, int64_t *shape);
/* Values per sample of the input, and of the output (the number of classes). */
MC_API int64_t mc_model_in_numel(const struct mc_model *m);
MC_API int64_t mc_model_n_classes(const struct mc_model *m);
/*
 * The nodes that read node i's output (i = MC_NODE_INPUT: the model input),
 * in order: writes up to max of their indices to out (may be NULL) and
 * returns how many there are. A node reading i twice counts once.
 */
MC_API int mc_model_readers(const struct mc_model *m, int i, int *out, int max);
/* Nonzero for a model of shapes only (mc_model_dup_arch): no parameter has data. */
MC_API int mc_model_is_arch(const struct mc_model *m);

/*
 * Attribute name of node as a typed value (*out.s borrows the node's
 * string). Returns 0, or MC_EINVAL with err set when the op has no such
 * attribute.
 */
MC_API int mc_node_attr(const struct mc_node *node, const char *name, struct mc_attr *out,
			struct mc_err *err);
/* Shorthands that return fallback when the op has no such attribute. */
MC_API int64_t mc_node_attr_int(const struct mc_node *node, const char *name, int64_t fallback);
MC_API double mc_node_attr_float(const struct mc_node *node, const char *name, double fallback);
/* An enum's choice or a string ("" when unset). */
MC_API const char *mc_node_attr_str(const struct mc_node *node, const char *name,
				    const char *fallback);
/* Parameter p of node (NULL out of range), or the one named "<node>.<what>". */
MC_API struct mc_tensor *mc_node_param(const struct mc_node *node, int p);
MC_API struct mc_tensor *mc_node_param_named(const struct mc_node *node, const char *what);

/* ---------------------------------------------------------------- building */

/* An empty model of the given per-sample input shape, or NULL with err set. */
MC_API struct mc_model *mc_model_new(int in_ndim, const int64_t *in_shape, struct mc_err *err);

/*
 * Adds a node of op opname at position pos (0 to n_nodes; -1 appends) and
 * returns its index, or a negative error code with err set. name NULL
 * names it after its op and a count ("linear3"); "input" and taken names
 * are refused. inputs lists the names of earlier nodes (or "input"), one
 * per op input; NULL reads the node before pos (or the model input at 0).
 * attrs (MC_ATTR_END-terminated, NULL for none) override the op's
 * defaults; an attribute without a default must be given. Nothing reads
 * the new node until rewired (mc_model_rewire) unless it is appended.
 */
MC_API int mc_model_add_node(struct mc_model *m, int pos, const char *name, const char *opname,
			     const char *const *inputs, const struct mc_attr *attrs,
			     struct mc_err *err);
/*
 * Inserts a node right after node i that reads node i (inputs NULL), and
 * makes every former reader of node i read the new node instead: a layer
 * spliced into a chain. Returns the new node's index, or an error code.
 */
MC_API int mc_model_insert_after(struct mc_model *m, int i, const char *name, const char *opname,
				 const struct mc_attr *attrs, struct mc_err *err);
/*
 * Inserts a node right before node i that reads node i's first input, and
 * makes node i read the new node instead. Returns the new node's index (the
 * old node i is then at i + 1), or an error code.
 */
MC_API int mc_model_insert_before(struct mc_model *m, int i, const char *name,
				  const char *opname, const struct mc_attr *attrs,
				  struct mc_err *err);
/*
 * Replaces node i by a node of op opname with attrs, reading the same
 * inputs and read by the same nodes; it keeps node i's name unless name is
 * given. Its parameters start at zero. Returns 0 or an error code.
 */
MC_API int mc_model_replace_node(struct mc_model *m, int i, const char *name, const char *opname,
				 const struct mc_attr *attrs, struct mc_err *err);
/*
 * Removes node i; its readers read its first input instead, so its output
 * must have that input's shape. Removing the last node makes the node
 * before it the output, so it must be node i's first input. Returns 0 or
 * an error code.
 */
MC_API int mc_model_remove_node(struct mc_model *m, int i, struct mc_err *err);
/* Renames node i and its parameters ("<name>.<param>"). Returns 0 or an error code. */
MC_API int mc_model_rename_node(struct mc_model *m, int i, const char *name, struct mc_err *err);
/* Sets attributes of node i (the others keep their values) and infers the
 * shapes after it again. Returns 0 or an error code. */
MC_API int mc_model_set_attrs(struct mc_model *m, int i, const struct mc_attr *attrs,
			      struct mc_err *err);
/*
 * Sets attributes of nodes[k] to attrs[k] for k < n in one change: shapes are
 * inferred again once, after all of them, so layers whose widths must agree
 * (the inputs of an add; a depthwise convolution and the layer it reads)
 * change together. Returns 0 or an error code; on error m is unchanged.
 */
MC_API int mc_model_set_attrs_n(struct mc_model *m, int n, const int *nodes,
				const struct mc_attr *const *attrs, struct mc_err *err);
/*
 * Makes every reader of node from (from = MC_NODE_INPUT: the model input)
 * that comes after node after (-1: all) read node to instead; to must come
 * before each of them. Returns 0 or an error code.
 */
MC_API int mc_model_rewire(struct mc_model *m, int from, int to, int after, struct mc_err *err);

/* ---------------------------------------------------------------- whole models */

/* Fills every parameter with its op's initial values from seed. */
MC_API void mc_model_init(struct mc_model *m, uint64_t seed);
MC_API struct mc_model *mc_model_dup(const struct mc_model *m, struct mc_err *err);
/* A copy of m's graph with shapes and attributes but no parameter data:
 * what validation changes to see the graph each pass will see. */
MC_API struct mc_model *mc_model_dup_arch(const struct mc_model *m, struct mc_err *err);
MC_API void mc_model_free(struct mc_model *m);

/* The parameter tensor named name ("fc1.weight"), or NULL. */
MC_API struct mc_tensor *mc_model_param(const struct mc_model *m, const char *name);
/* Counts over all parameters. */
MC_API int64_t mc_model_nparams(const struct mc_model *m);
MC_API int64_t mc_model_nonzeros(const struct mc_model *m);
/* Forward FLOPs per sample. */
MC_API int64_t mc_model_flops(const struct mc_model *m);

/*
 * Builds a model (parameters zeroed) from architecture JSON. origin names
 * where the JSON came from, for messages ("model.safetensors"). NULL with
 * err set (MC_ECORRUPT for malformed JSON, MC_EINVAL for a bad architecture).
 */
MC_API struct mc_model *mc_model_from_arch(const char *json, const char *origin,
					   struct mc_err *err);
/* The architecture JSON of m (malloc'd, caller free()s), or NULL on ENOMEM. */
MC_API char *mc_model_arch(const struct mc_model *m);

#ifdef __cplusplus
}
#endif
#endif
