/* SPDX-License-Identifier: MIT */
/*
 * overrides.c - `--set KEY=VALUE`: edits the pipeline's YAML tree before
 * validation.
 *
 * KEY is a dotted path (seed, data.train.count, passes.0.train.epochs); in a
 * list a segment is an index, or a name that picks every item going by it
 * (passes.train.epochs); a segment in double quotes is one key, dots and
 * all (passes.prune.overrides."stage2.1.dw"). VALUE is read as YAML. Each node on the path is
 * copied before it is changed, so that a node the file aliases elsewhere
 * stays as it was. New nodes carry "--set KEY" as their file, so errors
 * about them name the override.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/pipeline.h>

#include "host/pipeline_int.h"
#include "io/ydoc.h"

static int parse_index(const char *s, int *out)
{
	char *end;
	long v;

	if (!*s || *s < '0' || *s > '9')
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (*end || errno || v > INT_MAX)
		return -1;
	*out = (int)v;
	return 0;
}

/* The name an item of a list goes by: a scalar's text, or a one-key map's key. */
static const char *item_name(const struct mc_ynode *y)
{
	if (y->kind == MC_YSCALAR && !mc_ynode_is_null(y))
		return y->value;
	if (y->kind == MC_YMAP && y->n == 1)
		return y->keys[0]->value;
	return NULL;
}

/* Overrides taken at most: more belong in the pipeline file (each one looks
 * its key up among the keys set before it). */
#define MAX_SETS 4096

/* *ref to change: a copy of a node of the file (which an alias may share),
 * or the node itself when an override made it. NULL when out of memory. */
static struct mc_ynode *own(struct ld *l, struct mc_ynode **ref)
{
	struct mc_ynode *c = (*ref)->copied ? *ref : mc_ynode_clone(l->doc, *ref);

	if (c) {
		c->copied = 1;
		*ref = c;
	}
	return c;
}

/* A new node of an override, changed in place by later ones. */
static struct mc_ynode *fresh(struct ld *l, enum mc_ykind kind, const char *file)
{
	struct mc_ynode *y = mc_ynode_new(l->doc, kind, file);

	if (y)
		y->copied = 1;
	return y;
}

struct set {
	const char *label; /* "--set KEY" */
	char **segs;
	int nseg;
	struct mc_ynode *value;
};

static int set_at(struct ld *l, struct set *s, struct mc_ynode **ref, int i, int in_seq);

/* Descends into the mapping *ref (copied first: aliased nodes stay as they were). */
static int set_in_map(struct ld *l, struct set *s, struct mc_ynode **ref, int i)
{
	struct mc_ynode *m = own(l, ref), *key, *val;
	const char *seg = s->segs[i];
	int last = i == s->nseg - 1;

	if (!m)
		return MC_ENOMEM;
	for (int k = 0; k < m->n; k++) {
		if (strcmp(m->keys[k]->value, seg))
			continue;
		if (last) {
			m->items[k] = s->value;
			return 0;
		}
		return set_at(l, s, &m->items[k], i + 1, 0);
	}
	key = mc_ynode_new(l->doc, MC_YSCALAR, s->label);
	if (!key || !(key->value = mc_ydoc_strdup(l->doc, seg)))
		return MC_ENOMEM;
	key->plain = 1;
	val = last ? s->value : fresh(l, MC_YMAP, s->label);
	if (!val || mc_ynode_append(l->doc, m, key, val))
		return MC_ENOMEM;
	if (last)
		return 0;
	return set_at(l, s, &m->items[m->n - 1], i + 1, 0);
}

/*
 * Applies the override s from segment i on, to the node at *ref. in_seq:
 * *ref is an item of a list, named (a pass entry) by its only key.
 */
static int set_at(struct ld *l, struct set *s, struct mc_ynode **ref, int i, int in_seq)
{
	struct mc_ynode *y = *ref;
	const char *seg = s->segs[i];
	int idx;

	if (y->kind == MC_YSEQ) {
		struct mc_ynode *c = own(l, ref);
		int found = 0, r;

		if (!c)
			return MC_ENOMEM;
		if (!parse_index(seg, &idx)) {
			if (idx >= c->n) {
				mc_errlist_add(&l->el, s->label, 0, 0,
					       "index %d is out of range; the list has %d items "
					       "(counting from 0)",
					       idx, c->n);
				return MC_EINVAL;
			}
			if (i == s->nseg - 1) {
				c->items[idx] = s->value;
				return 0;
			}
			return set_at(l, s, &c->items[idx], i + 1, 1);
		}
		/* A name: every item that goes by it. */
		for (int k = 0; k < c->n; k++) {
			const char *name = item_name(c->items[k]);

			if (!name || strcmp(name, seg))
				continue;
			found++;
			r = set_at(l, s, &c->items[k], i, 1);
			if (r)
				return r;
		}
		if (!found) {
			mc_errlist_add(&l->el, s->label, 0, 0,
				       "no item of the list is named '%s'; give its index "
				       "(counting from 0) or the name of a pass in the pipeline",
				       seg);
			return MC_EINVAL;
		}
		return 0;
	}
	if (in_seq) {
		const char *name = item_name(y);

		if (name && strcmp(name, seg)) {
			mc_errlist_add(&l->el, s->label, 0, 0,
				       "that item of the list is '%s', not '%s'", name, seg);
			return MC_EINVAL;
		}
		if (y->kind == MC_YSCALAR && name) {
			/* "- eval" becomes "- eval: null", then gets its key. */
			struct mc_ynode *m = fresh(l, MC_YMAP, y->file);
			struct mc_ynode *nul = mc_ynode_new(l->doc, MC_YSCALAR, s->label);

			if (!m || !nul)
				return MC_ENOMEM;
			nul->plain = 1;
			m->line = y->line;
			m->col = y->col;
			if (mc_ynode_append(l->doc, m, y, nul))
				return MC_ENOMEM;
			*ref = y = m;
		}
	}
	if (mc_ynode_is_null(y)) {
		/* "train:" with no parameters: an empty mapping to set keys in. */
		struct mc_ynode *m = fresh(l, MC_YMAP, y->file);

		if (!m)
			return MC_ENOMEM;
		m->line = y->line;
		m->col = y->col;
		*ref = y = m;
	}
	if (y->kind != MC_YMAP) {
		mc_errlist_add(&l->el, s->label, 0, 0,
			       "'%s' cannot be set: its parent is %s, not a mapping", seg,
			       mc_ynode_what(y));
		return MC_EINVAL;
	}
	return set_in_map(l, s, ref, i);
}

/*
 * Cuts key in place into its segments at the dots; a segment written in
 * double quotes is taken whole, dots included (a layer named stage2.1.dw).
 * The number of segments, or -1 for an empty segment or a quote left open
 * or followed by anything but a dot.
 */
static int split_key(char *key, char **segs)
{
	int n = 0;
	char *c = key;

	for (;;) {
		char *seg = c;

		if (*c == '"') {
			seg = ++c;
			while (*c && *c != '"')
				c++;
			if (!*c || c == seg || (c[1] && c[1] != '.'))
				return -1;
			*c++ = '\0';
		} else {
			while (*c && *c != '.')
				c++;
			if (c == seg)
				return -1;
		}
		segs[n++] = seg;
		if (!*c)
			return n;
		*c++ = '\0';
		if (!*c)
			return -1;
	}
}

int mc_pl_apply_set(struct ld *l, int n, struct mc_ynode **root)
{
	const char *text = l->p->sets[n];
	const char *eq = strchr(text, '=');
	struct set s = { 0 };
	char *key = NULL;
	int ret = 0;

	if (n >= MAX_SETS) {
		if (n == MAX_SETS)
			mc_errlist_add(&l->el, l->f->labels[n], 0, 0,
				       "more than %d --set overrides; put the values in the "
				       "pipeline file",
				       MAX_SETS);
		return MC_EINVAL;
	}
	if (!eq || eq == text) {
		mc_errlist_add(&l->el, l->f->labels[n], 0, 0,
			       "expected KEY=VALUE, such as --set passes.0.train.epochs=3");
		return MC_EINVAL;
	}
	s.label = l->f->labels[n];
	if (mc_yaml_parse(l->doc, eq + 1, strlen(eq + 1), s.label, 0, &s.value, &l->el))
		return MC_EINVAL;
	if (!s.value) {
		s.value = mc_ynode_new(l->doc, MC_YSCALAR, s.label);
		if (!s.value)
			return MC_ENOMEM;
		s.value->plain = 1;
	}
	key = strndup(text, (size_t)(eq - text));
	s.segs = calloc(strlen(text) + 1, sizeof(*s.segs));
	if (!key || !s.segs) {
		ret = MC_ENOMEM;
		goto out;
	}
	s.nseg = split_key(key, s.segs);
	if (s.nseg <= 0) {
		mc_errlist_add(&l->el, s.label, 0, 0,
			       "malformed key; write a dotted path such as seed, data.train.count "
			       "or passes.0.train.epochs, a name with dots in double quotes "
			       "(passes.prune.overrides.\"stage2.1.dw\")");
		ret = MC_EINVAL;
		goto out;
	}
	if (!*root) {
		*root = fresh(l, MC_YMAP, s.label);
		if (!*root) {
			ret = MC_ENOMEM;
			goto out;
		}
	}
	ret = set_at(l, &s, root, 0, 0);
out:
	if (ret == MC_ENOMEM)
		mc_errlist_add(&l->el, s.label ? s.label : text, 0, 0, "out of memory");
	free(s.segs);
	free(key);
	return ret;
}
