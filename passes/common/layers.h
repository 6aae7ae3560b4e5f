/* SPDX-License-Identifier: MIT */
/*
 * layers.h - choosing a pass's layers by name or glob, as the passes' exclude
 * and overrides parameters do (prune, quantize, cluster): which patterns a
 * name matches, the first override that applies, and the layer names a
 * message lists when a pattern matches none. Header only; passes include
 * it from passes/common/.
 */
#ifndef PASSES_LAYERS_H
#define PASSES_LAYERS_H

#include <fnmatch.h>
#include <stdio.h>

#include <mcomp/graph.h>
#include <mcomp/param.h>
#include <mcomp/pass.h>

/* Whether name matches one of the globs of l (an exclude list). */
static inline int layers_match_any(const struct mc_list *l, const char *name)
{
	for (int i = 0; i < l->n; i++)
		if (!fnmatch(l->str[i], name, 0))
			return 1;
	return 0;
}

/* The index of the first key of m (a map of overrides) that name matches, or -1. */
static inline int layers_first_override(const struct mc_map *m, const char *name)
{
	for (int i = 0; i < m->n; i++)
		if (!fnmatch(m->key[i], name, 0))
			return i;
	return -1;
}

/* Whether pattern matches the name of a node of m that is_layer accepts. */
static inline int layers_any_match(const struct mc_model *m,
				   int (*is_layer)(const struct mc_node *nd), const char *pattern)
{
	for (int i = 0; i < mc_model_n_nodes(m); i++)
		if (is_layer(mc_model_node(m, i)) && !fnmatch(pattern, mc_model_node(m, i)->name, 0))
			return 1;
	return 0;
}

/* "a, b, c": the names of the nodes of m that is_layer accepts, cut at n bytes. */
static inline void layers_names(const struct mc_model *m,
				int (*is_layer)(const struct mc_node *nd), char *buf, size_t n)
{
	size_t at = 0;

	buf[0] = '\0';
	for (int i = 0; i < mc_model_n_nodes(m) && at < n; i++)
		if (is_layer(mc_model_node(m, i)))
			at += (size_t)snprintf(buf + at, n - at, "%s%s", at ? ", " : "",
					       mc_model_node(m, i)->name);
}

/*
 * Every key of overrides and every pattern of exclude matches a layer of
 * model (named model in the pipeline); else the error at the parameter that
 * names the first that matches none, with the model's layers listed.
 */
static inline int layers_check_patterns(struct mc_ctx *ctx, const char *model,
					const struct mc_model *m,
					int (*is_layer)(const struct mc_node *nd),
					const struct mc_map *overrides, const struct mc_list *exclude)
{
	char names[1024];

	layers_names(m, is_layer, names, sizeof(names));
	for (int i = 0; overrides && i < overrides->n; i++)
		if (!layers_any_match(m, is_layer, overrides->key[i]))
			return mc_ctx_error(ctx, "overrides", MC_EINVAL,
					    "no layer of model '%s' matches '%s'; its layers are %s",
					    model, overrides->key[i], names);
	for (int i = 0; exclude && i < exclude->n; i++)
		if (!layers_any_match(m, is_layer, exclude->str[i]))
			return mc_ctx_error(ctx, "exclude", MC_EINVAL,
					    "no layer of model '%s' matches '%s'; its layers are %s",
					    model, exclude->str[i], names);
	return 0;
}

#endif
