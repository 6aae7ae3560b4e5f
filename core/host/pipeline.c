/* SPDX-License-Identifier: MIT */
/*
 * pipeline.c - reading and validating a pipeline file (docs/pipelines.md).
 *
 * The file becomes a YAML node tree (core/yaml.c); the --set overrides edit
 * the tree; then every section is checked against schema version 1: pass
 * names against the registry, pass parameters against their tables, layer
 * lists against the op table, names of models and splits, input files. All
 * errors found are reported together, each at its place, so that a typo in
 * the fifth pass fails before the first pass runs. Models are built (and
 * initialised from the seed) or loaded here, so a pass's check() can see
 * them. The result is a struct mc_pipeline as core/pipeline_int.h describes.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <jansson.h>

#include <mcomp/pipeline.h>

#include "host/pipeline_int.h"
#include "io/ydoc.h"

#define MC_SCHEMA_VERSION 1
#define PIPELINE_MAX_BYTES (16u << 20)

/* The pipeline with what only this file needs to free. */
struct pl_full {
	struct mc_pipeline p;
	struct mc_registry *own_reg; /* opened here when the caller gave none */
	char **labels;		     /* "--set KEY" per override: the file of its places */
};

/* The loader's state while validating one pipeline. */
struct ld {
	struct pl_full *f;
	struct mc_pipeline *p;
	struct mc_ydoc *doc;
	struct mc_errlist el;
	struct mc_err tmp; /* messages of the functions called */
	const char **split_names, **model_names; /* NULL-terminated, as the file names them */
};

#define bad(l, y, ...) mc_errlist_at(&(l)->el, (y), __VA_ARGS__)

char *mc_path_resolve(const char *dir, const char *path)
{
	size_t ld, lp;
	char *s;

	if (!path)
		return NULL;
	if (path[0] == '/' || !dir || !*dir || !strcmp(dir, "."))
		return strdup(path);
	ld = strlen(dir);
	lp = strlen(path);
	while (ld > 1 && dir[ld - 1] == '/')
		ld--;
	s = malloc(ld + lp + 2);
	if (!s)
		return NULL;
	memcpy(s, dir, ld);
	s[ld] = '/';
	memcpy(s + ld + 1, path, lp + 1);
	return s;
}

void mc_pl_pass_clear(struct mc_pl_pass *pp)
{
	if (pp->conf && pp->pass)
		mc_param_free(pp->pass->params, pp->conf);
	free(pp->conf);
	free(pp->keys);
	pp->conf = NULL;
	pp->keys = NULL;
	pp->n_keys = 0;
}

MC_API void mc_pipeline_free(struct mc_pipeline *p)
{
	struct pl_full *f = (struct pl_full *)p;
	int i;

	if (!p)
		return;
	for (i = 0; i < p->n_splits; i++) {
		free(p->splits[i].name);
		free(p->splits[i].images);
		free(p->splits[i].labels);
		mc_dataset_free(p->splits[i].data);
	}
	free(p->splits);
	for (i = 0; i < p->n_models; i++) {
		free(p->models[i].name);
		free(p->models[i].load);
		free(p->models[i].arch);
		mc_model_free(p->models[i].model);
	}
	free(p->models);
	for (i = 0; i < p->n_passes; i++)
		mc_pl_pass_clear(&p->passes[i]);
	free(p->passes);
	for (i = 0; i < p->n_sets; i++) {
		free(p->sets[i]);
		free(f->labels[i]);
	}
	free(p->sets);
	free(f->labels);
	free(p->output_model);
	free(p->output_path);
	free(p->report_path);
	free(p->path);
	free(p->dir);
	free(p->text);
	mc_registry_free(f->own_reg);
	free(f);
}

/* ---------------------------------------------------------------- helpers */

/* The lasting place of node y: its file string must outlive the YAML tree. */
static struct mc_loc loc_of(struct ld *l, const struct mc_ynode *y)
{
	struct mc_loc loc = { .file = l->p->path, .line = y->line, .col = y->col };

	for (int i = 0; i < l->p->n_sets; i++)
		if (!strcmp(y->file, l->f->labels[i]))
			loc.file = l->f->labels[i];
	return loc;
}

/* "a, b, c" of a NULL-terminated list into buf. */
static const char *join(const char *const *words, char *buf, size_t n)
{
	size_t pos = 0;

	buf[0] = '\0';
	for (int i = 0; words && words[i] && pos < n; i++) {
		int w = snprintf(buf + pos, n - pos, "%s%s", i ? ", " : "", words[i]);

		if (w < 0)
			break;
		pos += (size_t)w;
	}
	return buf;
}

static int has_word(const char *const *words, const char *w)
{
	for (int i = 0; words && words[i]; i++)
		if (!strcmp(words[i], w))
			return 1;
	return 0;
}

/* Reports every key of map m not in allowed, with the nearest allowed key. */
static void check_keys(struct ld *l, const struct mc_ynode *m, const char *const *allowed,
		       const char *where)
{
	char list[512];

	for (int i = 0; i < m->n; i++) {
		const char *k = m->keys[i]->value, *near;

		if (has_word(allowed, k))
			continue;
		near = mc_suggest(allowed, k);
		if (near)
			bad(l, m->keys[i], "unknown key '%s' in %s; did you mean '%s'?", k, where,
			    near);
		else
			bad(l, m->keys[i], "unknown key '%s' in %s; expected %s", k, where,
			    join(allowed, list, sizeof(list)));
	}
}

static int want_map(struct ld *l, const struct mc_ynode *y, const char *what)
{
	if (y->kind == MC_YMAP)
		return 1;
	bad(l, y, "%s must be a mapping, not %s", what, mc_ynode_what(y));
	return 0;
}

/* A non-null scalar, or an error naming what it is. */
static const char *want_scalar(struct ld *l, const struct mc_ynode *y, const char *what)
{
	if (y->kind == MC_YSCALAR && !mc_ynode_is_null(y))
		return y->value;
	bad(l, y, "%s must be a scalar, not %s", what, mc_ynode_what(y));
	return NULL;
}

/* A plain decimal integer in [lo, hi]. */
static int want_int(struct ld *l, const struct mc_ynode *y, const char *what, int64_t lo,
		    int64_t hi, int64_t *out)
{
	const char *s = want_scalar(l, y, what);
	long long v;
	char *end;

	if (!s)
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (!y->plain || !*s || *end || errno == ERANGE || s[strspn(s, " ")] == '+' ||
	    (s[0] != '-' && (s[0] < '0' || s[0] > '9'))) {
		bad(l, y, "%s: expected an integer, got '%s'", what, s);
		return -1;
	}
	if (v < lo || v > hi) {
		if (hi == INT64_MAX)
			bad(l, y, "%s: %s is too small; it must be at least %lld", what, s,
			    (long long)lo);
		else
			bad(l, y, "%s: %s is out of range [%lld, %lld]", what, s, (long long)lo,
			    (long long)hi);
		return -1;
	}
	*out = v;
	return 0;
}

static int is_file(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* Resolves a path scalar against the pipeline's folder; NULL (reported) on error. */
static char *want_path(struct ld *l, const struct mc_ynode *y, const char *what)
{
	const char *s = want_scalar(l, y, what);
	char *r;

	if (!s)
		return NULL;
	if (!*s) {
		bad(l, y, "%s: empty path", what);
		return NULL;
	}
	r = mc_path_resolve(l->p->dir, s);
	if (!r)
		bad(l, y, "out of memory");
	return r;
}

static void missing_file(struct ld *l, const struct mc_ynode *y, const char *what,
			 const char *path)
{
	if (path[0] != '/' && strcmp(l->p->dir, "."))
		bad(l, y, "%s: cannot find '%s' (relative paths start at the pipeline's folder "
			  "'%s'); check the path",
		    what, path, l->p->dir);
	else
		bad(l, y, "%s: cannot find '%s'; check the path", what, path);
}

/* Names of a mapping's keys, NULL-terminated (malloc'd array, borrowed strings). */
static const char **key_names(const struct mc_ynode *m)
{
	int n = m && m->kind == MC_YMAP ? m->n : 0;
	const char **v = calloc((size_t)n + 1, sizeof(*v));

	for (int i = 0; v && i < n; i++)
		v[i] = m->keys[i]->value;
	return v;
}

/* ---------------------------------------------------------------- overrides */

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
	struct mc_ynode *m = mc_ynode_clone(l->doc, *ref), *key, *val;
	const char *seg = s->segs[i];
	int last = i == s->nseg - 1;

	if (!m)
		return MC_ENOMEM;
	*ref = m;
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
	val = last ? s->value : mc_ynode_new(l->doc, MC_YMAP, s->label);
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
		struct mc_ynode *c = mc_ynode_clone(l->doc, y);
		int found = 0, r;

		if (!c)
			return MC_ENOMEM;
		*ref = c;
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
			struct mc_ynode *m = mc_ynode_new(l->doc, MC_YMAP, y->file);
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
		struct mc_ynode *m = mc_ynode_new(l->doc, MC_YMAP, y->file);

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

static int apply_set(struct ld *l, int n, struct mc_ynode **root)
{
	const char *text = l->p->sets[n];
	const char *eq = strchr(text, '=');
	struct set s = { 0 };
	char *key = NULL, *save = NULL, *tok;
	int ret = 0;

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
	if (key[0] == '.' || strstr(key, "..") || eq[-1] == '.')
		s.nseg = -1;
	for (tok = strtok_r(key, ".", &save); s.nseg >= 0 && tok; tok = strtok_r(NULL, ".", &save))
		s.segs[s.nseg++] = tok;
	if (s.nseg <= 0) {
		mc_errlist_add(&l->el, s.label, 0, 0,
			       "malformed key; write a dotted path such as seed, data.train.count "
			       "or passes.0.train.epochs");
		ret = MC_EINVAL;
		goto out;
	}
	if (!*root) {
		*root = mc_ynode_new(l->doc, MC_YMAP, s.label);
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

/* ---------------------------------------------------------------- values */

static int needs_plain(enum mc_param_type t)
{
	return t == MC_PARAM_TINT || t == MC_PARAM_TFLOAT || t == MC_PARAM_TBOOL;
}

/* Sets one scalar through mc_param_set; errors read "WHERE: KEY: ...". */
static int set_scalar(struct ld *l, const struct mc_param_def *def, void *conf,
		      const struct mc_ynode *y, const char *where)
{
	enum mc_param_type t = def->type == MC_PARAM_TLIST ? def->elem : def->type;
	char type[256];

	if (y->kind != MC_YSCALAR || mc_ynode_is_null(y)) {
		bad(l, y, "%s: %s: expected %s, got %s", where, def->name,
		    mc_param_type_text(def, type, sizeof(type)), mc_ynode_what(y));
		return -1;
	}
	if (needs_plain(t) && !y->plain) {
		bad(l, y, "%s: %s: expected %s, got the quoted string '%s'; remove the quotes",
		    where, def->name, mc_param_type_text(def, type, sizeof(type)), y->value);
		return -1;
	}
	if (mc_param_set(def, conf, y->value, &l->tmp)) {
		bad(l, y, "%s: %s", where, l->tmp.msg);
		return -1;
	}
	return 0;
}

/* Sets a parameter from its YAML value: a scalar, or for a list a sequence
 * of scalars (a lone scalar is a one-item list; null is the empty list). */
static int set_value(struct ld *l, const struct mc_param_def *def, void *conf,
		     const struct mc_ynode *y, const char *where)
{
	int ret = 0;

	if (def->type != MC_PARAM_TLIST)
		return set_scalar(l, def, conf, y, where);
	mc_param_list_clear(def, conf);
	if (mc_ynode_is_null(y))
		return 0;
	if (y->kind == MC_YSCALAR)
		return set_scalar(l, def, conf, y, where);
	if (y->kind != MC_YSEQ) {
		bad(l, y, "%s: %s: expected a list, got %s", where, def->name, mc_ynode_what(y));
		return -1;
	}
	for (int i = 0; i < y->n; i++)
		if (set_scalar(l, def, conf, y->items[i], where))
			ret = -1;
	return ret;
}

/* ---------------------------------------------------------------- data */

static int valid_name(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && !strchr("_-", *s))
			return 0;
	return 1;
}


/* Tries PREFIX-KIND.gz then PREFIX-KIND; NULL (reported) when neither exists. */
static char *idx_file(struct ld *l, const struct mc_ynode *y, const char *prefix,
		      const char *kind, const char *split)
{
	size_t n = strlen(prefix) + strlen(kind) + 8;
	char *gz = malloc(n), *raw = malloc(n);

	if (!gz || !raw) {
		free(gz);
		free(raw);
		bad(l, y, "out of memory");
		return NULL;
	}
	snprintf(raw, n, "%s-%s", prefix, kind);
	snprintf(gz, n, "%s-%s.gz", prefix, kind);
	if (is_file(gz)) {
		free(raw);
		return gz;
	}
	if (is_file(raw)) {
		free(gz);
		return raw;
	}
	bad(l, y, "split '%s': no %s file for prefix '%s': tried '%s' and '%s'; check the idx "
		  "prefix",
	    split, strstr(kind, "images") ? "images" : "labels", prefix, gz, raw);
	free(gz);
	free(raw);
	return NULL;
}

static const char *const split_keys[] = { "idx", "images", "labels", "first", "count", NULL };

static void load_split(struct ld *l, struct mc_ynode *key, struct mc_ynode *v)
{
	struct mc_pl_split *s = &l->p->splits[l->p->n_splits];
	struct mc_ynode *idx, *images, *labels, *first, *count, *kidx;
	char where[300];
	int64_t num;

	snprintf(where, sizeof(where), "split '%s'", key->value);
	s->count = -1;
	s->loc = loc_of(l, key);
	if (!valid_name(key->value))
		bad(l, key, "'%s' is not a usable split name; use letters, digits, '_' and '-'",
		    key->value);
	if (v->kind == MC_YSCALAR && !mc_ynode_is_null(v)) {
		/* A bare string is an idx prefix. */
		idx = kidx = v;
		images = labels = first = count = NULL;
	} else {
		if (!want_map(l, v, where))
			return;
		check_keys(l, v, split_keys, where);
		idx = mc_ymap_get(v, "idx", &kidx);
		images = mc_ymap_get(v, "images", NULL);
		labels = mc_ymap_get(v, "labels", NULL);
		first = mc_ymap_get(v, "first", NULL);
		count = mc_ymap_get(v, "count", NULL);
	}
	if (idx && (images || labels)) {
		bad(l, kidx, "%s: give either 'idx' or 'images' and 'labels', not both", where);
		return;
	}
	if (idx) {
		char *prefix = want_path(l, idx, "idx");

		if (!prefix)
			return;
		s->images = idx_file(l, idx, prefix, "images-idx3-ubyte", key->value);
		s->labels = idx_file(l, idx, prefix, "labels-idx1-ubyte", key->value);
		free(prefix);
	} else if (!images || !labels) {
		bad(l, v, "%s: missing required key '%s'; a split needs 'idx: PREFIX' or both "
			  "'images:' and 'labels:'",
		    where, images ? "labels" : labels ? "images" : "idx");
	} else {
		s->images = want_path(l, images, "images");
		s->labels = want_path(l, labels, "labels");
		if (s->images && !is_file(s->images))
			missing_file(l, images, "images", s->images);
		if (s->labels && !is_file(s->labels))
			missing_file(l, labels, "labels", s->labels);
	}
	if (first && !want_int(l, first, "first", 0, INT64_MAX, &num))
		s->first = num;
	if (count && !want_int(l, count, "count", 1, INT64_MAX, &num))
		s->count = num;
	s->name = strdup(key->value);
	l->p->n_splits++;
}

static void load_data(struct ld *l, struct mc_ynode *data)
{
	if (!want_map(l, data, "data"))
		return;
	l->p->splits = calloc((size_t)data->n + 1, sizeof(*l->p->splits));
	if (!l->p->splits) {
		bad(l, data, "out of memory");
		return;
	}
	for (int i = 0; i < data->n; i++)
		load_split(l, data->keys[i], data->items[i]);
}

/* ---------------------------------------------------------------- models */

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
		const char *name = want_scalar(l, it, "inputs");

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
			    join(mc_op_names(), tbuf, sizeof(tbuf)));
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
				} else if (set_value(l, d, conf, opval->items[i], where)) {
					ok = 0;
				}
			}
		} else if (!op->attrs || !op->attrs[0].name) {
			bad(l, opval, "%s: op '%s' takes no attributes; write just '%s'", where,
			    opname, opname);
			ok = 0;
		} else if (set_value(l, &op->attrs[0], conf, opval, where)) {
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
		name = want_scalar(l, namev, "name");
		if (name && (!valid_name(name) || !strcmp(name, "input"))) {
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
	if (!want_map(l, b, where))
		return NULL;
	check_keys(l, b, build_keys, where);
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

			if (want_int(l, in->items[i], "input", 1, 1 << 24, &d))
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

/* The message of a library call without a leading "ORIGIN: " that repeats ours. */
static const char *strip_origin(const char *msg, const char *origin)
{
	size_t n = strlen(origin);

	if (!strncmp(msg, origin, n) && msg[n] == ':' && msg[n + 1] == ' ')
		return msg + n + 2;
	return msg;
}

static const char *const model_keys[] = { "build", "load", NULL };

static void load_model(struct ld *l, struct mc_ynode *key, struct mc_ynode *v)
{
	struct mc_pl_model *pm = &l->p->models[l->p->n_models];
	struct mc_ynode *build, *load, *kload;
	char where[300];

	snprintf(where, sizeof(where), "model '%s'", key->value);
	pm->name = strdup(key->value);
	pm->loc = loc_of(l, key);
	l->p->n_models++;
	if (!pm->name) {
		bad(l, key, "out of memory");
		return;
	}
	if (!valid_name(key->value))
		bad(l, key, "'%s' is not a usable model name; use letters, digits, '_' and '-'",
		    key->value);
	if (!want_map(l, v, where))
		return;
	check_keys(l, v, model_keys, where);
	build = mc_ymap_get(v, "build", NULL);
	load = mc_ymap_get(v, "load", &kload);
	if (build && load) {
		bad(l, kload, "%s: give either 'build' or 'load', not both", where);
		return;
	}
	if (!build && !load) {
		bad(l, v, "%s: missing required key 'build' or 'load'", where);
		return;
	}
	if (load) {
		pm->load = want_path(l, load, "load");
		if (!pm->load)
			return;
		if (!is_file(pm->load)) {
			missing_file(l, load, where, pm->load);
			return;
		}
		pm->model = mc_model_load(pm->load, &l->tmp);
		if (!pm->model)
			bad(l, load, "%s: %s", where, strip_origin(l->tmp.msg, pm->load));
		return;
	}
	pm->arch = build_arch(l, build, key->value);
	if (!pm->arch)
		return;
	pm->model = mc_model_from_arch(pm->arch, l->p->path, &l->tmp);
	if (!pm->model) {
		bad(l, key, "%s: %s", where, strip_origin(l->tmp.msg, l->p->path));
		return;
	}
	mc_model_init(pm->model, l->p->seed);
}

static void load_models(struct ld *l, struct mc_ynode *models)
{
	if (!want_map(l, models, "models"))
		return;
	l->p->models = calloc((size_t)models->n + 1, sizeof(*l->p->models));
	if (!l->p->models) {
		bad(l, models, "out of memory");
		return;
	}
	for (int i = 0; i < models->n; i++)
		load_model(l, models->keys[i], models->items[i]);
}

/* ---------------------------------------------------------------- passes */

/* Checks that name is one of names (models or splits); reports at y. */
static int check_name(struct ld *l, const struct mc_ynode *y, const char *where, const char *key,
		      const char *kind, const char *section, const char *const *names,
		      const char *name, int is_default)
{
	char list[512];
	const char *near;

	if (has_word(names, name))
		return 0;
	if (is_default) {
		bad(l, y, "%s: %s: the pipeline has no %s '%s' (the default); add it under '%s:' "
			  "or set %s",
		    where, key, kind, name, section, key);
		return -1;
	}
	if (!names || !names[0]) {
		bad(l, y, "%s: %s: unknown %s '%s'; the pipeline defines no %ss (add one under "
			  "'%s:')",
		    where, key, kind, name, kind, section);
		return -1;
	}
	near = mc_suggest(names, name);
	if (near)
		bad(l, y, "%s: %s: unknown %s '%s'; did you mean '%s'?", where, key, kind, name,
		    near);
	else
		bad(l, y, "%s: %s: unknown %s '%s'; the %ss are %s", where, key, kind, name, kind,
		    join(names, list, sizeof(list)));
	return -1;
}

/* Checks model and split names in a parameter, resolves paths. */
static void check_refs(struct ld *l, const struct mc_param_def *d, void *conf,
		       const struct mc_ynode *at, int is_default, const char *where)
{
	char *field = (char *)conf + d->offset;
	enum mc_param_type t = d->type == MC_PARAM_TLIST ? d->elem : d->type;
	const char *const *names = NULL;
	const char *kind = NULL, *section = NULL;

	if (t == MC_PARAM_TMODEL) {
		names = l->model_names;
		kind = "model";
		section = "models";
	} else if (t == MC_PARAM_TSPLIT) {
		names = l->split_names;
		kind = "split";
		section = "data";
	}
	if (d->type == MC_PARAM_TPATH) {
		char **s = (char **)field;
		char *r;

		if (!*s)
			return;
		r = mc_path_resolve(l->p->dir, *s);
		if (!r) {
			bad(l, at, "out of memory");
			return;
		}
		free(*s);
		*s = r;
		return;
	}
	if (!kind)
		return;
	if (d->type == MC_PARAM_TLIST) {
		const struct mc_list *li = (const struct mc_list *)field;

		for (int i = 0; i < li->n; i++)
			check_name(l, at, where, d->name, kind, section, names, li->str[i],
				   is_default);
		return;
	}
	if (*(char **)field)
		check_name(l, at, where, d->name, kind, section, names, *(char **)field,
			   is_default);
}

static void load_pass(struct ld *l, const struct mc_ynode *item)
{
	struct mc_pl_pass *pp = &l->p->passes[l->p->n_passes];
	const struct mc_ynode *params = NULL, *namenode = item;
	const struct mc_ynode **given = NULL;
	const struct mc_param_def *defs;
	const struct mc_pass *pass;
	const char *name, *so = NULL;
	char where[300], tbuf[512];
	int ndefs = 0;

	if (item->kind == MC_YMAP && item->n == 1) {
		namenode = item->keys[0];
		params = item->items[0];
	} else if (item->kind == MC_YMAP && item->n > 1) {
		bad(l, item->keys[1],
		    "a pass entry has one key, the pass's name; found '%s' and '%s' (indent the "
		    "parameters under the name, or write '- %s: {%s: ...}')",
		    item->keys[0]->value, item->keys[1]->value, item->keys[0]->value,
		    item->keys[1]->value);
		return;
	} else if (item->kind != MC_YSCALAR || mc_ynode_is_null(item)) {
		bad(l, item, "a pass entry is a pass name with its parameters, such as '- train: "
			     "{model: mlp}', not %s",
		    mc_ynode_what(item));
		return;
	}
	name = namenode->value;
	pass = mc_registry_find(l->p->reg, name, &so);
	if (!pass) {
		int n = mc_registry_count(l->p->reg);
		const char **names = calloc((size_t)(n > 0 ? n : 0) + 1, sizeof(*names));
		const char *near = NULL;

		for (int i = 0; names && i < n; i++)
			names[i] = mc_registry_get(l->p->reg, i, NULL)->name;
		if (names)
			near = mc_suggest(names, name);
		if (near)
			bad(l, namenode, "unknown pass '%s'; did you mean '%s'? ('mcomp passes' "
					 "lists the passes found)",
			    name, near);
		else
			bad(l, namenode, "unknown pass '%s'; 'mcomp passes' lists the passes found "
					 "on the pass path (%s)",
			    name, join(names, tbuf, sizeof(tbuf)));
		free(names);
		return;
	}
	snprintf(where, sizeof(where), "pass '%s'", name);
	pp->pass = pass;
	pp->so_path = so;
	pp->loc = loc_of(l, namenode);
	l->p->n_passes++;
	defs = pass->params;
	while (defs && defs[ndefs].name)
		ndefs++;
	pp->conf = calloc(1, pass->conf_size ? pass->conf_size : 1);
	given = calloc((size_t)ndefs + 1, sizeof(*given));
	if (params && params->kind == MC_YMAP)
		pp->keys = calloc((size_t)params->n + 1, sizeof(*pp->keys));
	if (!pp->conf || !given || (params && params->kind == MC_YMAP && !pp->keys)) {
		bad(l, namenode, "out of memory");
		goto out;
	}
	if (mc_param_defaults(defs, pp->conf, &l->tmp)) {
		bad(l, namenode, "%s (%s) has a bad default: %s; fix the pass", where, so,
		    l->tmp.msg);
		goto out;
	}
	if (params && !mc_ynode_is_null(params)) {
		if (params->kind != MC_YMAP) {
			bad(l, params, "%s: the parameters must be a mapping such as {epochs: 5}, "
				       "not %s",
			    where, mc_ynode_what(params));
			goto out;
		}
		for (int i = 0; i < params->n; i++) {
			const char *k = params->keys[i]->value;
			const struct mc_param_def *d = mc_param_find(defs, k);
			const char *near;

			if (!d) {
				near = mc_param_suggest(defs, k);
				if (near)
					bad(l, params->keys[i],
					    "unknown key '%s' in %s; did you mean '%s'?", k, where,
					    near);
				else
					bad(l, params->keys[i],
					    "unknown key '%s' in %s; 'mcomp pass-info %s' lists its "
					    "parameters",
					    k, where, name);
				continue;
			}
			if (set_value(l, d, pp->conf, params->items[i], where))
				continue;
			given[d - defs] = params->items[i];
			pp->keys[pp->n_keys].def = d;
			/* The place of an override's value is the override. */
			pp->keys[pp->n_keys].loc = loc_of(l, params->items[i]->line ?
								 params->keys[i] :
								 params->items[i]);
			pp->n_keys++;
		}
	}
	for (int i = 0; i < ndefs; i++) {
		const struct mc_param_def *d = &defs[i];

		if (!given[i] && !d->def) {
			/* Unless it was given with an error already reported. */
			if (params && params->kind == MC_YMAP && mc_ymap_get(params, d->name, NULL))
				continue;
			bad(l, namenode, "%s: missing required parameter '%s' (%s: %s)", where,
			    d->name, mc_param_type_text(d, tbuf, sizeof(tbuf)), d->help);
			continue;
		}
		check_refs(l, d, pp->conf, given[i] ? given[i] : namenode, !given[i], where);
	}
out:
	free(given);
}

static void load_passes(struct ld *l, struct mc_ynode *passes)
{
	if (mc_ynode_is_null(passes))
		return;
	if (passes->kind != MC_YSEQ) {
		bad(l, passes, "passes must be a list such as '- train: {model: mlp}', not %s",
		    mc_ynode_what(passes));
		return;
	}
	l->p->passes = calloc((size_t)passes->n + 1, sizeof(*l->p->passes));
	if (!l->p->passes) {
		bad(l, passes, "out of memory");
		return;
	}
	for (int i = 0; i < passes->n; i++)
		load_pass(l, passes->items[i]);
}

/* ---------------------------------------------------------------- outputs */

static int same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	if (!a || !b)
		return 0;
	if (!strcmp(a, b))
		return 1;
	return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
	       sa.st_ino == sb.st_ino;
}

/* Reports when out is one of the pipeline's input files (or the pipeline). */
static void check_not_input(struct ld *l, const struct mc_ynode *y, const char *what,
			    const char *out)
{
	struct mc_pipeline *p = l->p;
	const char *hit = NULL;
	char desc[300];

	if (same_file(out, p->path)) {
		hit = "the pipeline file itself";
	}
	for (int i = 0; !hit && i < p->n_splits; i++) {
		if (same_file(out, p->splits[i].images) || same_file(out, p->splits[i].labels)) {
			snprintf(desc, sizeof(desc), "a file of split '%s'", p->splits[i].name);
			hit = desc;
		}
	}
	for (int i = 0; !hit && i < p->n_models; i++) {
		if (same_file(out, p->models[i].load)) {
			snprintf(desc, sizeof(desc), "the file model '%s' is loaded from",
				 p->models[i].name);
			hit = desc;
		}
	}
	if (hit)
		bad(l, y, "%s '%s' would overwrite an input (%s); choose another path", what, out,
		    hit);
}

static int is_dir(const char *path)
{
	struct stat st;

	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static void load_output(struct ld *l, struct mc_ynode *o)
{
	static const char *const output_keys[] = { "model", "path", NULL };
	struct mc_ynode *model = NULL, *path = o;
	const char *name = NULL;
	char list[512];

	if (mc_ynode_is_null(o))
		return;
	if (o->kind == MC_YMAP) {
		check_keys(l, o, output_keys, "output");
		model = mc_ymap_get(o, "model", NULL);
		path = mc_ymap_get(o, "path", NULL);
		if (!model || !path) {
			bad(l, o, "output: missing required key '%s'", model ? "path" : "model");
			return;
		}
		name = want_scalar(l, model, "output model");
		if (!name)
			return;
		if (check_name(l, model, "output", "model", "model", "models", l->model_names,
			       name, 0))
			return;
	} else if (o->kind == MC_YSCALAR) {
		int n = 0;

		while (l->model_names && l->model_names[n])
			n++;
		if (n != 1) {
			bad(l, o, "output: a plain path needs exactly one model, and the pipeline "
				  "has %d (%s); write 'output: {model: NAME, path: FILE}'",
			    n, join(l->model_names, list, sizeof(list)));
			return;
		}
		name = l->model_names[0];
	} else {
		bad(l, o, "output must be a path or {model: NAME, path: FILE}, not %s",
		    mc_ynode_what(o));
		return;
	}
	l->p->output_path = want_path(l, path, "output path");
	if (!l->p->output_path)
		return;
	l->p->output_model = strdup(name);
	if (is_dir(l->p->output_path)) {
		bad(l, path, "output path '%s' is a folder; name the file to write",
		    l->p->output_path);
		return;
	}
	check_not_input(l, path, "output path", l->p->output_path);
}

static void load_report(struct ld *l, struct mc_ynode *r)
{
	if (mc_ynode_is_null(r))
		return;
	l->p->report_path = want_path(l, r, "report");
	if (!l->p->report_path)
		return;
	if (is_dir(l->p->report_path)) {
		bad(l, r, "report '%s' is a folder; name the file to write", l->p->report_path);
		return;
	}
	check_not_input(l, r, "report", l->p->report_path);
	if (same_file(l->p->report_path, l->p->output_path))
		bad(l, r, "report '%s' is also the output path; choose another path",
		    l->p->report_path);
}

/* ---------------------------------------------------------------- the whole */

static const char *const top_keys[] = { "mcomp",  "seed",   "data",	"models",
					"passes", "output", "report", NULL };

static void load_version(struct ld *l, struct mc_ynode *root)
{
	struct mc_ynode *v = mc_ymap_get(root, "mcomp", NULL);

	if (!v) {
		bad(l, root, "missing required key 'mcomp' (the schema version); add 'mcomp: %d' "
			     "at the top",
		    MC_SCHEMA_VERSION);
		return;
	}
	if (v->kind != MC_YSCALAR || !v->plain || strcmp(v->value, "1"))
		bad(l, v, "unsupported schema version '%s'; this mcomp reads version %d (write "
			  "'mcomp: %d')",
		    v->kind == MC_YSCALAR ? v->value : mc_ynode_what(v), MC_SCHEMA_VERSION,
		    MC_SCHEMA_VERSION);
}

static void load_seed(struct ld *l, struct mc_ynode *root)
{
	struct mc_ynode *v = mc_ymap_get(root, "seed", NULL);
	unsigned long long s;
	char *end;

	if (!v)
		return;
	if (v->kind != MC_YSCALAR || !v->plain || v->value[0] < '0' || v->value[0] > '9') {
		bad(l, v, "seed: expected a non-negative integer, got %s%s%s",
		    v->kind == MC_YSCALAR ? "'" : "", v->kind == MC_YSCALAR ? v->value :
		    mc_ynode_what(v), v->kind == MC_YSCALAR ? "'" : "");
		return;
	}
	errno = 0;
	s = strtoull(v->value, &end, 10);
	if (*end || errno == ERANGE) {
		bad(l, v, "seed: expected a non-negative integer below 2^64, got '%s'", v->value);
		return;
	}
	l->p->seed = s;
}

static int read_all(const char *path, unsigned char **buf, size_t *len, struct mc_err *err)
{
	FILE *fp = fopen(path, "rb");
	unsigned char *b = NULL;
	size_t n = 0, cap = 0;

	if (!fp)
		/* Naming a pipeline that is not there is a usage error (exit 2). */
		return mc_err_set(err, MC_EINVAL, "%s: cannot open the pipeline: %s", path,
				  strerror(errno));
	for (;;) {
		size_t got;

		if (n == cap) {
			unsigned char *nb;

			if (cap >= PIPELINE_MAX_BYTES) {
				free(b);
				fclose(fp);
				return mc_err_set(err, MC_EINVAL,
						  "%s: larger than %u bytes; is this a pipeline?",
						  path, PIPELINE_MAX_BYTES);
			}
			cap = cap ? cap * 2 : 4096;
			nb = realloc(b, cap + 1);
			if (!nb) {
				free(b);
				fclose(fp);
				return mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
			}
			b = nb;
		}
		got = fread(b + n, 1, cap - n, fp);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(fp)) {
		free(b);
		fclose(fp);
		return mc_err_set(err, MC_EIO, "%s: cannot read the pipeline", path);
	}
	fclose(fp);
	b[n] = '\0';
	*buf = b;
	*len = n;
	return 0;
}

static char *dir_of(const char *path)
{
	const char *s = strrchr(path, '/');

	if (!s)
		return strdup(".");
	if (s == path)
		return strdup("/");
	return strndup(path, (size_t)(s - path));
}

static void validate(struct ld *l, struct mc_ynode *root)
{
	struct mc_ynode *v;

	if (!root) {
		mc_errlist_add(&l->el, l->p->path, 0, 0,
			       "the pipeline is empty; start it with 'mcomp: %d' (see "
			       "docs/pipelines.md)",
			       MC_SCHEMA_VERSION);
		return;
	}
	if (root->kind != MC_YMAP) {
		bad(l, root, "a pipeline is a mapping with keys such as mcomp, data, models, "
			     "passes; found %s",
		    mc_ynode_what(root));
		return;
	}
	check_keys(l, root, top_keys, "the pipeline");
	load_version(l, root);
	load_seed(l, root);
	v = mc_ymap_get(root, "data", NULL);
	l->split_names = key_names(v && v->kind == MC_YMAP ? v : NULL);
	if (v && !mc_ynode_is_null(v))
		load_data(l, v);
	v = mc_ymap_get(root, "models", NULL);
	l->model_names = key_names(v && v->kind == MC_YMAP ? v : NULL);
	if (v && !mc_ynode_is_null(v))
		load_models(l, v);
	if (!l->split_names || !l->model_names) {
		bad(l, root, "out of memory");
		return;
	}
	v = mc_ymap_get(root, "passes", NULL);
	if (!v)
		bad(l, root, "missing required key 'passes' (the list of passes to run; it may "
			     "be empty: 'passes: []')");
	else
		load_passes(l, v);
	v = mc_ymap_get(root, "output", NULL);
	if (v)
		load_output(l, v);
	v = mc_ymap_get(root, "report", NULL);
	if (v)
		load_report(l, v);
}

MC_API struct mc_pipeline *mc_pipeline_load(const char *path, const char *const *sets, int n_sets,
					    struct mc_registry *reg, struct mc_err *err)
{
	struct pl_full *f = calloc(1, sizeof(*f));
	struct ld l = { .f = f };
	struct mc_err own;
	struct mc_pipeline *p;
	struct mc_ynode *root = NULL;
	int ret;

	if (!err)
		err = &own; /* the host's check wants somewhere to write */
	if (!f) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
		return NULL;
	}
	p = l.p = &f->p;
	l.el.err = err;
	if (err) {
		err->code = 0;
		err->msg[0] = '\0';
	}
	if (n_sets < 0)
		n_sets = 0;
	p->path = strdup(path);
	p->dir = dir_of(path);
	p->sets = calloc((size_t)n_sets + 1, sizeof(*p->sets));
	f->labels = calloc((size_t)n_sets + 1, sizeof(*f->labels));
	if (!p->path || !p->dir || !p->sets || !f->labels) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	for (int i = 0; i < n_sets; i++) {
		const char *eq = strchr(sets[i], '=');
		/* The label names the key; a malformed override is named whole. */
		size_t klen = eq && eq != sets[i] ? (size_t)(eq - sets[i]) : strlen(sets[i]);

		p->sets[i] = strdup(sets[i]);
		f->labels[i] = malloc(klen + 7);
		if (!p->sets[i] || !f->labels[i]) {
			free(p->sets[i]);
			free(f->labels[i]);
			mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
			goto fail;
		}
		snprintf(f->labels[i], klen + 7, "--set %.*s", (int)klen, sets[i]);
		p->n_sets++;
	}
	if (!reg) {
		f->own_reg = mc_registry_open(err);
		if (!f->own_reg)
			goto fail;
		reg = f->own_reg;
	}
	p->reg = reg;
	ret = read_all(path, &p->text, &p->text_len, err);
	if (ret)
		goto fail;
	l.doc = mc_ydoc_new();
	if (!l.doc) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
	if (mc_yaml_parse(l.doc, (const char *)p->text, p->text_len, p->path, 1, &root, &l.el))
		goto fail;
	/* A failed override leaves the tree as it was: validate it all the same. */
	for (int i = 0; i < p->n_sets; i++)
		apply_set(&l, i, &root);
	validate(&l, root);
	if (l.el.n)
		goto fail;
	mc_ydoc_free(l.doc);
	l.doc = NULL;
	free(l.split_names);
	free(l.model_names);
	l.split_names = l.model_names = NULL;
	if (err)
		err->msg[0] = '\0';
	ret = mc_host_check(p, err);
	if (ret)
		goto fail;
	return p;
fail:
	if (err && !err->code)
		err->code = MC_EINVAL;
	mc_ydoc_free(l.doc);
	free(l.split_names);
	free(l.model_names);
	mc_pipeline_free(p);
	return NULL;
}
