// SPDX-License-Identifier: MIT
/*
 * methods.c - which weights go: magnitude (per layer or global), N:M along
 * the input dimension, the schedules (Zhu & Gupta's, TF-MOT's polynomial),
 * and structured removal of whole units, which builds a smaller dense model.
 *
 * Every ranking is a total order (value, then position), so the same model
 * always loses the same weights, for any thread count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/layers.h"
#include "prune.h"

int prune_is_layer(const struct mc_node *nd)
{
	return !strcmp(nd->op->name, "linear") || !strcmp(nd->op->name, "conv2d");
}

int prune_parse_nm(const char *text, int *n, int *m)
{
	char tail;

	if (!text || sscanf(text, "%d:%d%c", n, m, &tail) != 2)
		return -1;
	return *n >= 1 && *n < *m && *m <= 64 ? 0 : -1;
}

int prune_layers_select(const struct mc_model *m, const struct prune_conf *c, int structured,
			struct prune_layer **out, int *n, struct mc_err *err)
{
	struct prune_layer *l = calloc((size_t)mc_model_n_nodes(m) + 1, sizeof(*l));
	char why[256];
	int k = 0;

	if (!l)
		return mc_err_set(err, MC_ENOMEM, "prune: out of memory");
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);
		int overridden = 0, o;

		if (!prune_is_layer(nd) || layers_match_any(&c->exclude, nd->name))
			continue;
		if (structured && !prune_can_shrink(m, i, why, sizeof(why)))
			continue;
		l[k].node = i;
		l[k].name = nd->name;
		l[k].target = c->sparsity;
		o = layers_first_override(&c->overrides, nd->name);
		if (o >= 0) {
			l[k].target = c->overrides.num[o];
			overridden = 1;
		}
		l[k].global = c->scope == PRUNE_GLOBAL && !overridden && !structured;
		k++;
	}
	*out = l;
	*n = k;
	return 0;
}

void prune_layers_free(struct prune_layer *l, int n)
{
	for (int i = 0; l && i < n; i++)
		free(l[i].mask);
	free(l);
}

double prune_gradual(double si, double sf, int64_t t, int64_t t0, int64_t t1)
{
	double x;

	if (t1 <= t0 || t >= t1)
		return sf;
	if (t <= t0)
		return si;
	x = 1.0 - (double)(t - t0) / (double)(t1 - t0);
	return sf + (si - sf) * x * x * x;
}

double prune_sched_sparsity(const struct prune_sched *s, double sf, int64_t t)
{
	double si = fmin(s->si, sf), p;

	switch (s->kind) {
	case PRUNE_GRADUAL:
		return prune_gradual(si, sf, t, s->t0, s->t1);
	case PRUNE_POLYNOMIAL:
		p = (double)(t - s->t0) / (double)(s->t1 - s->t0);
		p = fmin(1.0, fmax(0.0, p));
		return sf + (si - sf) * pow(1.0 - p, s->power);
	default:
		return sf;
	}
}

int prune_sched_due(const struct prune_sched *s, int64_t t)
{
	switch (s->kind) {
	case PRUNE_GRADUAL:
		return t >= s->t0 && t <= s->t1 && ((t - s->t0) % s->freq == 0 || t == s->t1);
	case PRUNE_POLYNOMIAL:
		return t >= s->t0 && t <= s->t1 && (t - s->t0) % s->freq == 0;
	default:
		return t == 0;
	}
}

int64_t prune_sched_count(const struct prune_sched *s, double x, int64_t numel)
{
	double kept;

	if (s->kind != PRUNE_POLYNOMIAL)
		return llround(x * (double)numel);
	/* TF-MOT keeps k = max(round(numel * (1 - s)), 1), rounding half to
	 * even (tf.math.round); rint does so in the default rounding mode. */
	kept = fmax(rint((double)numel * (1.0 - x)), 1.0);
	return numel - (int64_t)kept;
}

/* One weight in a ranking: its magnitude (-1 when already masked), layer, place. */
struct rank {
	float key;
	int layer;
	int64_t idx;
};

static int rank_cmp(const void *pa, const void *pb)
{
	const struct rank *a = pa, *b = pb;

	if (a->key != b->key)
		return a->key < b->key ? -1 : 1;
	if (a->layer != b->layer)
		return a->layer < b->layer ? -1 : 1;
	return (a->idx > b->idx) - (a->idx < b->idx);
}

static int ensure_mask(struct prune_layer *l, int64_t numel, struct mc_err *err)
{
	if (l->mask)
		return 0;
	l->mask = malloc((size_t)numel);
	if (!l->mask)
		return mc_err_set(err, MC_ENOMEM, "prune: out of memory for the mask of '%s'",
				  l->name);
	memset(l->mask, 1, (size_t)numel);
	return 0;
}

/* Masks the k lowest of r[0..n) (at least those already masked). */
static void mask_lowest(struct rank *r, int64_t n, int64_t k, struct prune_layer *l)
{
	int64_t masked = 0;

	for (int64_t i = 0; i < n; i++)
		masked += r[i].key < 0;
	if (k < masked)
		k = masked; /* a mask never comes back */
	qsort(r, (size_t)n, sizeof(*r), rank_cmp);
	for (int64_t i = 0; i < n; i++)
		l[r[i].layer].mask[r[i].idx] = i >= k;
}

static int64_t fill_ranks(const struct mc_model *m, struct prune_layer *l, int li, struct rank *r)
{
	const struct mc_tensor *w = prune_weight(m, &l[li]);
	const float *x = w->data;

	for (int64_t i = 0; i < w->numel; i++) {
		r[i].key = l[li].mask[i] ? fabsf(x[i]) : -1.0f;
		r[i].layer = li;
		r[i].idx = i;
	}
	return w->numel;
}

int prune_magnitude(struct mc_model *m, struct prune_layer *l, int n, const struct prune_sched *s,
		    int64_t t, struct mc_err *err)
{
	int64_t pool = 0, biggest = 0, at = 0;
	double sg = -1;
	struct rank *r;
	int ret;

	for (int i = 0; i < n; i++) {
		int64_t numel = prune_weight(m, &l[i])->numel;

		ret = ensure_mask(&l[i], numel, err);
		if (ret)
			return ret;
		if (l[i].global) {
			pool += numel;
			sg = l[i].target;
		}
		biggest = numel > biggest ? numel : biggest;
	}
	r = malloc((size_t)(pool > biggest ? pool : biggest) * sizeof(*r) + 1);
	if (!r)
		return mc_err_set(err, MC_ENOMEM, "prune: out of memory ranking weights");
	for (int i = 0; i < n; i++) {
		int64_t numel, k;

		if (l[i].global)
			continue;
		numel = fill_ranks(m, l, i, r);
		k = prune_sched_count(s, prune_sched_sparsity(s, l[i].target, t), numel);
		mask_lowest(r, numel, k, l);
	}
	if (pool) {
		for (int i = 0; i < n; i++)
			if (l[i].global)
				at += fill_ranks(m, l, i, r + at);
		mask_lowest(r, pool, prune_sched_count(s, prune_sched_sparsity(s, sg, t), pool), l);
	}
	free(r);
	prune_apply_masks(m, l, n);
	return 0;
}

int prune_nm(struct mc_model *m, struct prune_layer *l, int n, int keep, int group,
	     struct mc_err *err)
{
	for (int i = 0; i < n; i++) {
		const struct mc_tensor *w = prune_weight(m, &l[i]);
		const float *x = w->data;
		int ret = ensure_mask(&l[i], w->numel, err);

		if (ret)
			return ret;
		/* Groups run along the flattened input dimension of each output row;
		 * rows are a multiple of group long (checked at validation). */
		for (int64_t g = 0; g + group <= w->numel; g += group) {
			for (int a = 0; a < group; a++) {
				int above = 0;

				/* a is kept when fewer than keep others outrank it */
				for (int b = 0; b < group; b++) {
					float fa = fabsf(x[g + a]), fb = fabsf(x[g + b]);

					above += fb > fa || (fb == fa && b < a);
				}
				l[i].mask[g + a] = above < keep;
			}
		}
	}
	prune_apply_masks(m, l, n);
	return 0;
}

int prune_masks_init(const struct mc_model *m, struct prune_layer *l, int n, struct mc_err *err)
{
	for (int i = 0; i < n; i++) {
		int ret = ensure_mask(&l[i], prune_weight(m, &l[i])->numel, err);

		if (ret)
			return ret;
	}
	return 0;
}

void prune_apply_masks(struct mc_model *m, const struct prune_layer *l, int n)
{
	for (int i = 0; i < n; i++) {
		struct mc_tensor *w = prune_weight(m, &l[i]);
		const uint8_t *mask = l[i].mask;
		float *x = w->data;

		if (!mask)
			continue;
#pragma omp parallel for schedule(static) if (w->numel >= 65536)
		for (int64_t k = 0; k < w->numel; k++)
			if (!mask[k])
				x[k] = 0.0f;
	}
}

/* ---------------------------------------------------------------- structured */

struct unit {
	double norm;
	int64_t idx;
};

static int unit_cmp(const void *pa, const void *pb)
{
	const struct unit *a = pa, *b = pb;

	if (a->norm != b->norm)
		return a->norm < b->norm ? -1 : 1;
	return (a->idx < b->idx) - (a->idx > b->idx); /* higher index goes first */
}

int64_t prune_units_dropped(int64_t out, double s)
{
	int64_t drop = llround(s * (double)out);

	return drop > out - 1 ? out - 1 : drop;
}

int prune_rank_units(const struct mc_tensor *w, double s, int norm, uint8_t *keep,
		     struct mc_err *err)
{
	return prune_rank_tied(&w, 1, s, norm, keep, err);
}

int prune_rank_tied(const struct mc_tensor *const *w, int count, double s, int norm,
		    uint8_t *keep, struct mc_err *err)
{
	int64_t out = w[0]->shape[0], drop = prune_units_dropped(out, s);
	struct unit *u = malloc((size_t)out * sizeof(*u));

	if (!u)
		return mc_err_set(err, MC_ENOMEM, "prune: out of memory ranking units");
	for (int64_t o = 0; o < out; o++) {
		double acc = 0;

		/* one unit's weights in every layer of the group, as one vector */
		for (int l = 0; l < count; l++) {
			int64_t per = w[l]->numel / out;
			const float *x = (const float *)w[l]->data + o * per;

			for (int64_t k = 0; k < per; k++)
				acc += norm == PRUNE_L2 ? (double)x[k] * x[k] : fabs(x[k]);
		}
		u[o].norm = norm == PRUNE_L2 ? sqrt(acc) : acc;
		u[o].idx = o;
	}
	qsort(u, (size_t)out, sizeof(*u), unit_cmp);
	for (int64_t o = 0; o < out; o++)
		keep[u[o].idx] = o >= drop;
	free(u);
	return 0;
}

/* Ops that keep channel c of their input as channel c of their output. */
static int channel_wise(const struct mc_node *nd)
{
	static const char *const ops[] = { "relu",	    "relu6",	 "clip",      "leaky_relu",
					   "hardswish",	    "hardsigmoid", "sigmoid",	"tanh",
					   "gelu",	    "dropout",	 "maxpool2d", "avgpool2d",
					   "global_avgpool", "batchnorm",	 "flatten",   NULL };

	for (int i = 0; ops[i]; i++)
		if (!strcmp(nd->op->name, ops[i]))
			return nd->n_inputs == 1;
	return 0;
}

static int conv_groups(const struct mc_node *nd)
{
	return (int)mc_node_attr_int(nd, "groups", 1);
}

/* A depthwise convolution: one filter per channel (weight [C, 1, kh, kw],
 * groups C), so channel c out is channel c in filtered: it follows its
 * input's channels, weights and all. */
static int depthwise(const struct mc_node *nd)
{
	const struct mc_tensor *w;

	if (strcmp(nd->op->name, "conv2d") || nd->n_inputs != 1 || conv_groups(nd) < 2)
		return 0;
	w = nd->params[0];
	return w->ndim == 4 && w->shape[1] == 1 && w->shape[0] == conv_groups(nd);
}

/* A layer whose output units can be chosen: linear, or conv2d of one group. */
static int unit_layer(const struct mc_node *nd)
{
	return prune_is_layer(nd) && nd->n_inputs == 1 && conv_groups(nd) == 1;
}

static int is_add(const struct mc_node *nd)
{
	return !strcmp(nd->op->name, "add");
}

/* The walk that finds a layer's tie group. region[j]: node j's channels are
 * the group's (channel-wise ops, depthwise convolutions, adds). */
struct tie {
	const struct mc_model *m;
	uint8_t *region;
	struct prune_group *g;
	char *why;
	size_t n;
};

static int tie_layer(struct tie *t, int i);
static int tie_forward(struct tie *t, int x);

static void tie_note_add(struct tie *t, int j)
{
	t->region[j] = 1;
	if (t->g->n_adds < PRUNE_TIE_MAX)
		t->g->add[t->g->n_adds++] = j;
}

/* Node y is an input of add 'name': back to the layers that set its channels. */
static int tie_back(struct tie *t, int y, const char *name)
{
	const struct mc_node *src;

	if (y == MC_NODE_INPUT) {
		snprintf(t->why, t->n, "add '%s' also reads the model input, whose channels stay",
			 name);
		return 0;
	}
	if (t->region[y])
		return 1;
	src = mc_model_node(t->m, y);
	if (unit_layer(src))
		return tie_layer(t, y);
	if ((channel_wise(src) && strcmp(src->op->name, "flatten")) || depthwise(src)) {
		t->region[y] = 1;
		return tie_back(t, src->inputs[0], name) && tie_forward(t, y);
	}
	if (is_add(src)) {
		tie_note_add(t, y);
		for (int b = 0; b < src->n_inputs; b++)
			if (!tie_back(t, src->inputs[b], src->name))
				return 0;
		return tie_forward(t, y);
	}
	snprintf(t->why, t->n, "add '%s' also reads '%s' (%s), whose channels cannot be chosen",
		 name, src->name, src->op->name);
	return 0;
}

/* Every reader of node x (whose channels are the group's) can follow. */
static int tie_forward(struct tie *t, int x)
{
	const struct mc_model *m = t->m;
	int nr = mc_model_readers(m, x, NULL, 0), *r, ok = 1;

	if (x == mc_model_n_nodes(m) - 1) {
		if (prune_is_layer(mc_model_node(m, x)))
			snprintf(t->why, t->n, "its output is the model's output");
		else
			snprintf(t->why, t->n, "its channels reach the model's output through '%s'",
				 mc_model_node(m, x)->name);
		return 0;
	}
	r = malloc((size_t)nr * sizeof(*r) + 1);
	if (!r) {
		snprintf(t->why, t->n, "out of memory");
		return 0;
	}
	mc_model_readers(m, x, r, nr);
	for (int k = 0; ok && k < nr; k++) {
		const struct mc_node *nd = mc_model_node(m, r[k]);

		if (t->region[r[k]] || unit_layer(nd))
			continue; /* a consumer: its input channels or columns shrink */
		if (channel_wise(nd) || depthwise(nd)) {
			t->region[r[k]] = 1;
			ok = tie_forward(t, r[k]);
		} else if (is_add(nd)) {
			tie_note_add(t, r[k]);
			for (int a = 0; ok && a < nd->n_inputs; a++)
				ok = tie_back(t, nd->inputs[a], nd->name);
			ok = ok && tie_forward(t, r[k]);
		} else {
			snprintf(t->why, t->n, "node '%s' (%s) reads it", nd->name, nd->op->name);
			ok = 0;
		}
	}
	free(r);
	return ok;
}

/* Adds layer i to the group and follows its output. */
static int tie_layer(struct tie *t, int i)
{
	struct prune_group *g = t->g;
	int at = g->n;

	for (int k = 0; k < g->n; k++)
		if (g->node[k] == i)
			return 1;
	if (g->n == PRUNE_TIE_MAX) {
		snprintf(t->why, t->n, "more than %d layers are tied to it through adds",
			 PRUNE_TIE_MAX);
		return 0;
	}
	while (at > 0 && g->node[at - 1] > i) {
		g->node[at] = g->node[at - 1];
		at--;
	}
	g->node[at] = i;
	g->n++;
	return tie_forward(t, i);
}

int prune_tie(const struct mc_model *m, int i, struct prune_group *g, char *why, size_t n)
{
	const struct mc_node *nd = mc_model_node(m, i);
	struct tie t = { .m = m, .g = g, .why = why, .n = n };
	int ok;

	memset(g, 0, sizeof(*g));
	if (!prune_is_layer(nd)) {
		snprintf(why, n, "it is a %s, not a linear or conv2d layer", nd->op->name);
		return 0;
	}
	if (conv_groups(nd) != 1) {
		snprintf(why, n, "it is a %s convolution",
			 depthwise(nd) ? "depthwise" : "grouped");
		return 0;
	}
	t.region = calloc((size_t)mc_model_n_nodes(m) + 1, 1);
	if (!t.region) {
		snprintf(why, n, "out of memory");
		return 0;
	}
	ok = tie_layer(&t, i);
	free(t.region);
	if (!ok)
		g->n = 0;
	return ok;
}

int prune_can_shrink(const struct mc_model *m, int i, char *why, size_t n)
{
	struct prune_group g;

	return prune_tie(m, i, &g, why, n);
}

/*
 * The new width of every node's channels (or features) when layers node[k]
 * keep width[k] units: -1 where it does not change. Channel-wise ops,
 * depthwise convolutions and adds take their first input's.
 */
static int64_t *widths(const struct mc_model *m, int count, const int *node, const int64_t *width)
{
	int64_t *w = malloc(((size_t)mc_model_n_nodes(m) + 1) * sizeof(*w));

	if (!w)
		return NULL;
	for (int j = 0; j < mc_model_n_nodes(m); j++) {
		const struct mc_node *nd = mc_model_node(m, j);

		w[j] = -1;
		for (int k = 0; k < count; k++)
			if (node[k] == j)
				w[j] = width[k];
		if (w[j] < 0 && nd->n_inputs && nd->inputs[0] != MC_NODE_INPUT &&
		    (channel_wise(nd) || depthwise(nd) || is_add(nd)) &&
		    strcmp(nd->op->name, "flatten"))
			w[j] = w[nd->inputs[0]];
	}
	return w;
}

int prune_set_widths(struct mc_model *m, int count, const int *node, const int64_t *width,
		     struct mc_err *err)
{
	int64_t *w = widths(m, count, node, width);
	struct mc_attr *a = calloc((size_t)mc_model_n_nodes(m) * 3 + 1, sizeof(*a));
	const struct mc_attr **at = calloc((size_t)mc_model_n_nodes(m) + 1, sizeof(*at));
	int *nodes = calloc((size_t)mc_model_n_nodes(m) + 1, sizeof(*nodes));
	int n = 0, ret;

	if (!w || !a || !at || !nodes) {
		ret = mc_err_set(err, MC_ENOMEM, "prune: out of memory");
		goto out;
	}
	/* A layer narrows; a depthwise convolution after it narrows with it,
	 * in the same change, or its groups would not divide its input. */
	for (int j = 0; j < mc_model_n_nodes(m); j++) {
		const struct mc_node *nd = mc_model_node(m, j);
		struct mc_attr *x = &a[3 * n];
		int pruned = 0;

		for (int k = 0; k < count; k++)
			pruned |= node[k] == j;
		if (w[j] < 0 || !(pruned || depthwise(nd)))
			continue;
		x[0] = (struct mc_attr)MC_ATTR_INT("out", w[j]);
		x[1] = (struct mc_attr)MC_ATTR_END;
		if (!pruned) {
			x[1] = (struct mc_attr)MC_ATTR_INT("groups", w[j]);
			x[2] = (struct mc_attr)MC_ATTR_END;
		}
		nodes[n] = j;
		at[n++] = x;
	}
	ret = mc_model_set_attrs_n(m, n, nodes, at, err);
out:
	free(w);
	free(a);
	free(at);
	free(nodes);
	return ret;
}

/* A list of kept indices along one dimension. */
struct imap {
	int64_t n;
	int64_t *idx;
};

static int keep_list(const uint8_t *keep, int64_t out, struct imap *im)
{
	im->n = 0;
	im->idx = malloc((size_t)out * sizeof(int64_t) + 1);
	if (!im->idx)
		return -1;
	for (int64_t o = 0; o < out; o++)
		if (keep[o])
			im->idx[im->n++] = o;
	return 0;
}

/* dst[i, j, r] = src[map0[i], map1[j], r]; a NULL map is the identity. */
static int gather(const struct mc_tensor *src, struct mc_tensor *dst, const struct imap *m0,
		  const struct imap *m1, struct mc_err *err)
{
	int64_t d0 = dst->shape[0], d1 = dst->ndim > 1 ? dst->shape[1] : 1;
	int64_t s0 = src->shape[0], s1 = src->ndim > 1 ? src->shape[1] : 1;
	int64_t inner = d0 && d1 ? dst->numel / (d0 * d1) : 0;
	int bits = mc_dtype_traits(src->dtype)->bits;

	if (bits % 8 || src->dtype != dst->dtype || src->ndim != dst->ndim ||
	    (m0 ? m0->n : s0) != d0 || (m1 ? m1->n : s1) != d1 || src->numel != s0 * s1 * inner)
		return mc_err_set(err, MC_ERUN,
				  "prune: parameter '%s' does not follow its layer's new width; "
				  "this model cannot be pruned structurally",
				  src->name ? src->name : "?");
	for (int64_t i = 0; i < d0; i++) {
		int64_t r0 = m0 ? m0->idx[i] : i;

		for (int64_t j = 0; j < d1; j++) {
			int64_t r1 = m1 ? m1->idx[j] : j;
			size_t sz = (size_t)inner * (size_t)(bits / 8);

			memcpy((char *)dst->data + (size_t)((i * d1 + j) * inner) * (bits / 8),
			       (const char *)src->data + (size_t)((r0 * s1 + r1) * inner) * (bits / 8),
			       sz);
		}
	}
	return 0;
}

/* Whether two kept-index lists are the same. */
static int same_map(const struct imap *a, const struct imap *b)
{
	return a->n == b->n && !memcmp(a->idx, b->idx, (size_t)a->n * sizeof(int64_t));
}

struct mc_model *prune_shrink(const struct mc_model *m, int count, const int *node,
			      uint8_t *const *keep, struct mc_err *err)
{
	struct mc_model *nm = NULL;
	struct imap *maps = NULL;
	int64_t *width = NULL;
	char *own = NULL;
	int ret = 0;

	maps = calloc((size_t)mc_model_n_nodes(m) + 1, sizeof(*maps));
	own = calloc((size_t)mc_model_n_nodes(m) + 1, 1);
	width = calloc((size_t)count + 1, sizeof(*width));
	if (!maps || !own || !width)
		goto oom;
	/* Which old output indices each node's output keeps, in node order. */
	for (int j = 0; j < mc_model_n_nodes(m); j++) {
		const struct mc_node *nd = mc_model_node(m, j);
		const struct imap *in = NULL;
		int pruned = -1;

		if (nd->n_inputs && nd->inputs[0] != MC_NODE_INPUT && maps[nd->inputs[0]].idx)
			in = &maps[nd->inputs[0]];
		for (int k = 0; k < count; k++)
			if (node[k] == j)
				pruned = k;
		if (pruned >= 0) {
			if (keep_list(keep[pruned], nd->params[0]->shape[0], &maps[j]))
				goto oom;
			own[j] = 1;
			width[pruned] = maps[j].n;
		} else if (in && !strcmp(nd->op->name, "flatten")) {
			const struct mc_node *src = mc_model_node(m, nd->inputs[0]);
			int64_t block = src->out_numel / src->out_shape[0];

			maps[j].n = in->n * block;
			maps[j].idx = malloc((size_t)maps[j].n * sizeof(int64_t) + 1);
			if (!maps[j].idx)
				goto oom;
			own[j] = 1;
			for (int64_t c = 0; c < in->n; c++)
				for (int64_t b = 0; b < block; b++)
					maps[j].idx[c * block + b] = in->idx[c] * block + b;
		} else if (in && (!prune_is_layer(nd) || depthwise(nd))) {
			maps[j] = *in; /* channel-wise, depthwise or add: borrowed */
		}
		/* an add's inputs must keep the same channels (prune_tie's groups) */
		for (int k = 1; maps[j].idx && is_add(nd) && k < nd->n_inputs; k++) {
			int y = nd->inputs[k];

			if (y == MC_NODE_INPUT || !maps[y].idx || !same_map(&maps[y], in)) {
				mc_err_set(err, MC_ERUN,
					   "prune: the inputs of add '%s' would keep different "
					   "channels; prune the layers tied through it together",
					   nd->name);
				goto fail;
			}
		}
	}
	/* The new graph: the same nodes with narrower layers, set in one change
	 * (the graph API sets up every node after them again, so readers take
	 * fewer inputs); then every parameter gathered from the old one. */
	nm = mc_model_dup(m, err);
	if (!nm)
		goto fail;
	if (prune_set_widths(nm, count, node, width, err))
		goto fail;
	for (int j = 0; j < mc_model_n_nodes(m); j++) {
		const struct mc_node *nd = mc_model_node(m, j);
		const struct imap *in = NULL;

		if (nd->n_inputs && nd->inputs[0] != MC_NODE_INPUT && maps[nd->inputs[0]].idx)
			in = &maps[nd->inputs[0]];
		for (int p = 0; p < nd->n_params; p++) {
			const struct mc_tensor *src = nd->params[p];
			struct mc_tensor *dst = mc_model_node(nm, j)->params[p];
			const struct imap *m0 = maps[j].idx ? &maps[j] : NULL, *m1 = NULL;

			if (prune_is_layer(nd) && !depthwise(nd) && src->ndim > 1)
				m1 = in; /* columns or input channels */
			if (!prune_is_layer(nd) && src->ndim != 1)
				m0 = NULL;
			ret = gather(src, dst, m0, m1, err);
			if (ret)
				goto fail;
		}
	}
	goto out;
oom:
	mc_err_set(err, MC_ENOMEM, "prune: out of memory");
fail:
	mc_model_free(nm);
	nm = NULL;
out:
	for (int j = 0; maps && own && j < mc_model_n_nodes(m); j++)
		if (own[j])
			free(maps[j].idx);
	free(maps);
	free(own);
	free(width);
	return nm;
}
