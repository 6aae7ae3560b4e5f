/* SPDX-License-Identifier: MIT */
/*
 * schema.c - the pipeline schema, version 1 (docs/pipelines.md): the
 * top-level keys, the data splits, the models section, the passes and their
 * parameters, output and report; and the typed readers of YAML values
 * (mc_pl_want_*, mc_pl_set_value) that layers.c shares.
 *
 * Pass names are checked against the registry, pass parameters against their
 * tables, names of models and splits against the sections that define them,
 * input files against the disk. Models are loaded, or built (layers.c) and
 * initialised from the seed, here, so that a pass's check() can see them.
 * Every error is reported at its node and validation goes on.
 */
#include <errno.h>
#include <glob.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <mcomp/onnx.h>
#include <mcomp/pipeline.h>

#include "base/base_int.h"
#include "host/host_int.h"
#include "host/pipeline_int.h"
#include "io/ydoc.h"

#define MC_SCHEMA_VERSION 1

#define bad(l, y, ...) mc_errlist_at(&(l)->el, (y), __VA_ARGS__)

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
const char *mc_pl_join(const char *const *words, char *buf, size_t n)
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
void mc_pl_check_keys(struct ld *l, const struct mc_ynode *m, const char *const *allowed,
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
			    mc_pl_join(allowed, list, sizeof(list)));
	}
}

int mc_pl_want_map(struct ld *l, const struct mc_ynode *y, const char *what)
{
	if (y->kind == MC_YMAP)
		return 1;
	bad(l, y, "%s must be a mapping, not %s", what, mc_ynode_what(y));
	return 0;
}

/* A non-null scalar, or an error naming what it is. */
const char *mc_pl_want_scalar(struct ld *l, const struct mc_ynode *y, const char *what)
{
	if (y->kind == MC_YSCALAR && !mc_ynode_is_null(y))
		return y->value;
	bad(l, y, "%s must be a scalar, not %s", what, mc_ynode_what(y));
	return NULL;
}

/* A plain decimal integer in [lo, hi]. */
int mc_pl_want_int(struct ld *l, const struct mc_ynode *y, const char *what, int64_t lo,
		   int64_t hi, int64_t *out)
{
	const char *s = mc_pl_want_scalar(l, y, what);
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
	const char *s = mc_pl_want_scalar(l, y, what);
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

/*
 * The pipeline beside this one (in its folder) whose output: line names
 * written, the path as this pipeline wrote it; NULL if none. A model that
 * another recipe trains (mobilenetv2-int8.yaml loads mobilenetv2.yaml's)
 * is then named in the error, with the command that writes it.
 */
static char *writer_of(const struct ld *l, const char *written)
{
	char *pat, *found = NULL;
	glob_t g;

	if (!*written || strchr(written, '\n'))
		return NULL;
	pat = mc_path_resolve(l->p->dir, "*.yaml");
	if (!pat)
		return NULL;
	if (glob(pat, 0, NULL, &g)) {
		free(pat);
		return NULL;
	}
	for (size_t i = 0; i < g.gl_pathc && !found; i++) {
		FILE *f = fopen(g.gl_pathv[i], "r");
		char line[4096];
		struct stat a, b;

		if (!f)
			continue;
		if (stat(g.gl_pathv[i], &a) == 0 && stat(l->p->path, &b) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino) {
			fclose(f); /* this pipeline itself */
			continue;
		}
		while (!found && fgets(line, sizeof(line), f))
			for (const char *m = line; !strncmp(line, "output:", 7) &&
						   (m = strstr(m, written)) != NULL;
			     m++) {
				char after = m[strlen(written)];

				/* the whole path, not a prefix of a longer one */
				if (strchr(" ,}'\"#\r\n", after) && strchr(" {:'\"", m[-1])) {
					found = strdup(g.gl_pathv[i]);
					break;
				}
			}
		fclose(f);
	}
	globfree(&g);
	free(pat);
	return found;
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

int mc_pl_valid_name(const char *s)
{
	if (!*s)
		return 0;
	for (; *s; s++)
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && !strchr("_-", *s))
			return 0;
	return 1;
}

/* The message of a library call without a leading "ORIGIN: " that repeats ours. */
const char *mc_pl_strip_origin(const char *msg, const char *origin)
{
	size_t n = strlen(origin);

	if (!strncmp(msg, origin, n) && msg[n] == ':' && msg[n + 1] == ' ')
		return msg + n + 2;
	return msg;
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
	/* A map's scalars are its older "NAME=VALUE" strings. */
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

/*
 * Sets a map from a YAML mapping ({fc1: 0.5, "conv*": 0.8}), each value
 * checked as an item and reported at its node. The older spelling, a list
 * of "NAME=VALUE" strings, is read as well, each reported at its string.
 */
static int set_map(struct ld *l, const struct mc_param_def *def, void *conf,
		   const struct mc_ynode *y, const char *where)
{
	struct mc_param_def item = *def;
	char type[256];
	int ret = 0;

	mc_param_list_clear(def, conf);
	if (mc_ynode_is_null(y))
		return 0;
	if (y->kind == MC_YSCALAR)
		return set_scalar(l, def, conf, y, where);
	if (y->kind == MC_YSEQ) {
		for (int i = 0; i < y->n; i++)
			if (set_scalar(l, def, conf, y->items[i], where))
				ret = -1;
		return ret;
	}
	if (y->kind != MC_YMAP) {
		bad(l, y, "%s: %s: expected a mapping such as {fc1: ...}, got %s", where, def->name,
		    mc_ynode_what(y));
		return -1;
	}
	item.type = def->elem; /* for the type of one value in messages */
	mc_param_type_text(&item, type, sizeof(type));
	for (int i = 0; i < y->n; i++) {
		const struct mc_ynode *k = y->keys[i], *v = y->items[i];

		if (v->kind != MC_YSCALAR || mc_ynode_is_null(v)) {
			/* --set ...overrides.stage2.1.dw=... cut the layer's name at its dots */
			int cut = v->kind == MC_YMAP && v->file && !strncmp(v->file, "--set ", 6);

			bad(l, v, "%s: %s: %s: expected %s, got %s%s", where, def->name, k->value,
			    type, mc_ynode_what(v),
			    cut ? "; a name with dots goes in double quotes in a --set key "
				  "(...overrides.\"stage2.1.dw\"=...)"
				: "");
			ret = -1;
			continue;
		}
		if (needs_plain(def->elem) && !v->plain) {
			bad(l, v, "%s: %s: %s: expected %s, got the quoted string '%s'; remove the "
				  "quotes",
			    where, def->name, k->value, type, v->value);
			ret = -1;
			continue;
		}
		if (mc_param_map_put(def, conf, k->value, v->value, &l->tmp)) {
			bad(l, *k->value ? v : k, "%s: %s", where, l->tmp.msg);
			ret = -1;
		}
	}
	return ret;
}

/* Sets a parameter from its YAML value: a scalar, or for a list a sequence
 * of scalars (a lone scalar is a one-item list; null is the empty list), or
 * for a map a mapping. */
int mc_pl_set_value(struct ld *l, const struct mc_param_def *def, void *conf,
		    const struct mc_ynode *y, const char *where)
{
	int ret = 0;

	if (def->type == MC_PARAM_TMAP)
		return set_map(l, def, conf, y, where);
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

static const char *const split_keys[] = { "idx", "images", "labels", "npy", "npz", "x", "y",
					  "first", "count", "scale", "mean", "std", NULL };
static const char *const npy_keys[] = { "x", "y", NULL };

/* The preprocessing keys, bound by the generic setters like a pass's. */
static const struct mc_param_def pre_params[] = {
	MC_PARAM_FLOAT(struct mc_pl_pre, scale, NULL, 0, 1e6,
		       "inputs are multiplied by it; default 1/255 for uint8, 1 for float32",
		       .flags = MC_PARAM_FOPTIONAL | MC_PARAM_FMIN_OPEN),
	MC_PARAM_LIST(struct mc_pl_pre, mean, MC_PARAM_TFLOAT, "[]", -1e6, 1e6,
		      "subtracted per channel after scale: one value, or one per channel"),
	MC_PARAM_LIST(struct mc_pl_pre, std, MC_PARAM_TFLOAT, "[]", 0, 1e6,
		      "divides per channel after mean: one value, or one per channel",
		      .flags = MC_PARAM_FMIN_OPEN),
	MC_PARAM_END,
};

void mc_pl_split_clear(struct mc_pl_split *s)
{
	free(s->name);
	free(s->images);
	free(s->labels);
	free(s->x_key);
	free(s->y_key);
	mc_param_free(pre_params, &s->pre);
	mc_dataset_free(s->data);
}

/* A path key of a split that must name an existing file; NULL (reported) if not. */
static char *split_file(struct ld *l, const struct mc_ynode *y, const char *what)
{
	char *p = want_path(l, y, what);

	if (p && !is_file(p)) {
		missing_file(l, y, what, p);
		free(p);
		return NULL;
	}
	return p;
}

/* An npz split's array name (y: the value of key x or y of the split, or
 * NULL: dflt); at: the split, for errors. */
static char *array_name(struct ld *l, const struct mc_ynode *y, const struct mc_ynode *at,
			const char *key, const char *dflt)
{
	const char *s = y ? mc_pl_want_scalar(l, y, key) : dflt;
	char *r;

	if (!s)
		return NULL;
	r = strdup(s);
	if (!r)
		bad(l, at, "out of memory");
	return r;
}

/* The one source of a split: idx, images and labels, npy, or npz. */
static void load_source(struct ld *l, struct mc_pl_split *s, struct mc_ynode *v, const char *where,
			const char *split)
{
	struct mc_ynode *idx = NULL, *images = NULL, *labels = NULL, *npy = NULL, *npz = NULL;
	struct mc_ynode *x = NULL, *y = NULL, *k[4] = { NULL }, *kl = NULL, *kx = NULL, *ky = NULL;
	const char *const names[] = { "idx", "images' and 'labels", "npy", "npz" };
	int given[4], a = -1, b = -1;

	if (v->kind == MC_YSCALAR) {
		idx = k[0] = v; /* a bare string is an idx prefix */
	} else {
		idx = mc_ymap_get(v, "idx", &k[0]);
		images = mc_ymap_get(v, "images", &k[1]);
		labels = mc_ymap_get(v, "labels", &kl);
		npy = mc_ymap_get(v, "npy", &k[2]);
		npz = mc_ymap_get(v, "npz", &k[3]);
		x = mc_ymap_get(v, "x", &kx);
		y = mc_ymap_get(v, "y", &ky);
		if (!images)
			k[1] = kl;
	}
	given[0] = !!idx;
	given[1] = images || labels;
	given[2] = !!npy;
	given[3] = !!npz;
	/* The first two given, reported at the first one's key. */
	for (int i = 0; i < 4; i++)
		if (given[i] && a < 0)
			a = i;
		else if (given[i] && b < 0)
			b = i;
	if (b >= 0) {
		bad(l, k[a], "%s: give either '%s' or '%s', not both", where, names[a], names[b]);
		return;
	}
	if (a < 0) {
		bad(l, v, "%s: missing required key 'idx', 'npy' or 'npz'; a split needs "
			  "'idx: PREFIX', 'images:' and 'labels:', 'npy: {x: FILE, y: FILE}' or "
			  "'npz: FILE'",
		    where);
		return;
	}
	if (!npz && (x || y)) {
		bad(l, x ? kx : ky, "%s: '%s' names an array of an npz archive; for .npy files "
			  "write 'npy: {x: FILE, y: FILE}'",
		    where, x ? "x" : "y");
		return;
	}
	if (idx) {
		char *prefix = want_path(l, idx, "idx");

		if (!prefix)
			return;
		s->format = MC_DATA_IDX;
		s->images = idx_file(l, idx, prefix, "images-idx3-ubyte", split);
		s->labels = idx_file(l, idx, prefix, "labels-idx1-ubyte", split);
		free(prefix);
	} else if (images || labels) {
		if (!images || !labels) {
			bad(l, v, "%s: missing required key '%s'; a split needs 'idx: PREFIX' or "
				  "both 'images:' and 'labels:'",
			    where, images ? "labels" : "images");
			return;
		}
		s->format = MC_DATA_IDX;
		s->images = split_file(l, images, "images");
		s->labels = split_file(l, labels, "labels");
	} else if (npy) {
		struct mc_ynode *nx, *ny;
		char what[320];

		snprintf(what, sizeof(what), "npy of %s", where);
		if (!mc_pl_want_map(l, npy, what))
			return;
		mc_pl_check_keys(l, npy, npy_keys, what);
		nx = mc_ymap_get(npy, "x", NULL);
		ny = mc_ymap_get(npy, "y", NULL);
		if (!nx || !ny) {
			bad(l, npy, "%s: npy: missing required key '%s' (the .npy file of the %s)",
			    where, nx ? "y" : "x", nx ? "labels" : "inputs");
			return;
		}
		s->format = MC_DATA_NPY;
		s->images = split_file(l, nx, "npy x");
		s->labels = split_file(l, ny, "npy y");
	} else {
		s->format = MC_DATA_NPZ;
		s->images = split_file(l, npz, "npz");
		s->x_key = array_name(l, x, v, "x", "x");
		s->y_key = array_name(l, y, v, "y", "y");
	}
}

static void load_split(struct ld *l, struct mc_ynode *key, struct mc_ynode *v)
{
	struct mc_pl_split *s = &l->p->splits[l->p->n_splits];
	struct mc_ynode *first = NULL, *count = NULL;
	char where[300];
	int64_t num;

	snprintf(where, sizeof(where), "split '%s'", key->value);
	s->count = -1;
	s->loc = loc_of(l, key);
	if (!mc_pl_valid_name(key->value))
		bad(l, key, "'%s' is not a usable split name; use letters, digits, '_' and '-'",
		    key->value);
	if (mc_param_defaults(pre_params, &s->pre, &l->tmp)) {
		bad(l, key, "%s", l->tmp.msg);
		return;
	}
	s->name = strdup(key->value);
	l->p->n_splits++; /* from here on, freed with the pipeline */
	if (!(v->kind == MC_YSCALAR && !mc_ynode_is_null(v))) {
		if (!mc_pl_want_map(l, v, where))
			return;
		mc_pl_check_keys(l, v, split_keys, where);
		first = mc_ymap_get(v, "first", NULL);
		count = mc_ymap_get(v, "count", NULL);
		for (const struct mc_param_def *d = pre_params; d->name; d++) {
			struct mc_ynode *p = mc_ymap_get(v, d->name, NULL);

			if (p)
				mc_pl_set_value(l, d, &s->pre, p, where);
		}
	}
	load_source(l, s, v, where, key->value);
	if (first && !mc_pl_want_int(l, first, "first", 0, INT64_MAX, &num))
		s->first = num;
	if (count && !mc_pl_want_int(l, count, "count", 1, INT64_MAX, &num))
		s->count = num;
	if (!s->name)
		bad(l, key, "out of memory");
}

static void load_data(struct ld *l, struct mc_ynode *data)
{
	if (!mc_pl_want_map(l, data, "data"))
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

static const char *const model_keys[] = { "build", "load", "onnx", NULL };

static void load_model(struct ld *l, struct mc_ynode *key, struct mc_ynode *v)
{
	struct mc_pl_model *pm = &l->p->models[l->p->n_models];
	struct mc_ynode *build, *load, *kload, *onnx, *konnx, *file;
	char where[300];

	snprintf(where, sizeof(where), "model '%s'", key->value);
	pm->name = strdup(key->value);
	pm->loc = loc_of(l, key);
	l->p->n_models++;
	if (!pm->name) {
		bad(l, key, "out of memory");
		return;
	}
	if (!mc_pl_valid_name(key->value))
		bad(l, key, "'%s' is not a usable model name; use letters, digits, '_' and '-'",
		    key->value);
	if (!mc_pl_want_map(l, v, where))
		return;
	mc_pl_check_keys(l, v, model_keys, where);
	build = mc_ymap_get(v, "build", NULL);
	load = mc_ymap_get(v, "load", &kload);
	onnx = mc_ymap_get(v, "onnx", &konnx);
	if (!!build + !!load + !!onnx > 1) {
		bad(l, onnx ? konnx : kload, "%s: give either '%s' or '%s', not both", where,
		    build ? "build" : "load", onnx ? "onnx" : "load");
		return;
	}
	if (!build && !load && !onnx) {
		bad(l, v, "%s: missing required key 'build', 'load' or 'onnx'", where);
		return;
	}
	/* a model file: mcomp's own (load) or an ONNX one, read at validation */
	file = load ? load : onnx;
	if (file) {
		pm->load = want_path(l, file, load ? "load" : "onnx");
		if (!pm->load)
			return;
		if (!is_file(pm->load)) {
			char *w = writer_of(l, file->value);

			if (w)
				bad(l, file,
				    "%s: cannot find '%s', the output of %s; run that pipeline "
				    "first (mcomp run %s)",
				    where, pm->load, w, w);
			else
				missing_file(l, file, where, pm->load);
			free(w);
			return;
		}
		pm->model = load ? mc_model_load(pm->load, &l->tmp)
				 : mc_model_from_onnx(pm->load, &l->tmp);
		if (!pm->model)
			bad(l, file, "%s: %s", where, mc_pl_strip_origin(l->tmp.msg, pm->load));
		return;
	}
	mc_pl_build_model(l, key, build, pm);
}

static void load_models(struct ld *l, struct mc_ynode *models)
{
	if (!mc_pl_want_map(l, models, "models"))
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
		    mc_pl_join(names, list, sizeof(list)));
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

/* Where parameter k of a pass's mapping params was given: its key, unless an
 * override (whose nodes have no line) gave the value. */
static const struct mc_ynode *given_at(const struct mc_ynode *params, int k)
{
	return params->items[k]->line ? params->keys[k] : params->items[k];
}

/*
 * Rows that share a group exclude each other: a second one given is
 * reported at its key, naming the first (in file order); a group with a
 * required row needs one of them. at[i]: the index in params of row i when
 * given, else -1.
 */
static void check_groups(struct ld *l, const struct mc_param_def *defs, int ndefs,
			 const int *at, const struct mc_ynode *params,
			 const struct mc_ynode *namenode, const char *where)
{
	for (int i = 0; i < ndefs; i++) {
		const char *g = defs[i].group;
		int first = -1, required = 0, tried = 0, seen = 0;
		char names[512];
		size_t pos = 0;

		if (!g)
			continue;
		for (int j = 0; j < i && !seen; j++)
			seen = defs[j].group && !strcmp(defs[j].group, g);
		if (seen)
			continue; /* the group was checked at its first row */
		names[0] = '\0';
		for (int j = i; j < ndefs; j++) {
			if (!defs[j].group || strcmp(defs[j].group, g))
				continue;
			if (pos < sizeof(names))
				pos += (size_t)snprintf(names + pos, sizeof(names) - pos, "%s'%s'",
							pos ? " or " : "", defs[j].name);
			required |= !defs[j].def && !(defs[j].flags & MC_PARAM_FOPTIONAL);
			/* Given with an error already reported counts as given. */
			tried |= params && params->kind == MC_YMAP &&
				 mc_ymap_get(params, defs[j].name, NULL);
			if (at[j] >= 0 && (first < 0 || at[j] < at[first]))
				first = j;
		}
		for (int j = i; first >= 0 && j < ndefs; j++)
			if (j != first && at[j] >= 0 && defs[j].group && !strcmp(defs[j].group, g))
				bad(l, given_at(params, at[j]),
				    "%s: give either '%s' or '%s', not both", where, defs[first].name,
				    defs[j].name);
		if (required && first < 0 && !tried)
			bad(l, namenode, "%s: missing required parameter %s (give one of them)",
			    where, names);
	}
}

/*
 * A pass of the pass path named like a shipped one is not used by that
 * name: the pipeline names its file to use it (docs/writing-passes.md).
 * 1 when name is such a name (reported).
 */
static int check_shadow(struct ld *l, const struct mc_ynode *namenode, const char *name)
{
	const char *path, *shipped;

	for (int i = 0; i < mc_registry_nshadows(l->p->reg); i++) {
		if (strcmp(mc_registry_shadow(l->p->reg, i, &path, &shipped), name))
			continue;
		bad(l, namenode, "pass '%s' is both %s, found first on MCOMP_PASS_PATH, and the "
				 "shipped %s; a pass may not replace a shipped one by name: "
				 "rename it, or name its file in the pipeline ('- %s: ...') to "
				 "use it",
		    name, path, shipped, path);
		return 1;
	}
	return 0;
}

/* Keys inside the mappings of params (those of blocks, at most). */
static size_t block_keys(const struct mc_ynode *params)
{
	size_t n = 0;

	for (int i = 0; i < params->n; i++)
		if (params->items[i]->kind == MC_YMAP)
			n += (size_t)params->items[i]->n;
	return n;
}

/* Whether rows named NAME.KEY exist: NAME is a block of keys. */
static int is_block(const struct mc_param_def *defs, const char *name)
{
	size_t n = strlen(name);

	for (; defs && defs->name; defs++)
		if (!strncmp(defs->name, name, n) && defs->name[n] == '.')
			return 1;
	return 0;
}

/*
 * Parameter i of params is a block (checkpoint: {every: 1, path: ...}):
 * each of its keys KEY sets the row NAME.KEY, recorded as given at KEY.
 */
static void load_block(struct ld *l, struct mc_pl_pass *pp, const struct mc_param_def *defs,
		       const struct mc_ynode *params, int i, const struct mc_ynode **given,
		       int *at, const char *where)
{
	const char *name = params->keys[i]->value;
	const struct mc_ynode *b = params->items[i];
	char full[160], keys[512], bwhere[400];
	size_t n = strlen(name), pos = 0;

	keys[0] = '\0';
	for (const struct mc_param_def *d = defs; d->name; d++)
		if (!strncmp(d->name, name, n) && d->name[n] == '.' && pos < sizeof(keys))
			pos += (size_t)snprintf(keys + pos, sizeof(keys) - pos, "%s%s",
						pos ? ", " : "", d->name + n + 1);
	if (mc_ynode_is_null(b))
		return; /* an empty block: every key at its default */
	if (b->kind != MC_YMAP) {
		bad(l, b, "%s: %s is a block of keys (%s) written as a mapping, %s: {KEY: "
			  "VALUE, ...}, not %s",
		    where, name, keys, name, mc_ynode_what(b));
		return;
	}
	snprintf(bwhere, sizeof(bwhere), "%s, %s", where, name);
	for (int j = 0; j < b->n; j++) {
		const char *k = b->keys[j]->value;
		const struct mc_param_def *d;
		const char *near = NULL;

		snprintf(full, sizeof(full), "%s.%s", name, k);
		d = mc_param_find(defs, full);
		if (!d) {
			near = mc_param_suggest(defs, full);
			if (near && !strncmp(near, name, n) && near[n] == '.')
				bad(l, b->keys[j], "unknown key '%s' in %s; did you mean '%s'?", k,
				    bwhere, near + n + 1);
			else
				bad(l, b->keys[j], "unknown key '%s' in %s; its keys are %s", k,
				    bwhere, keys);
			continue;
		}
		if (mc_pl_set_value(l, d, pp->conf, b->items[j], where))
			continue;
		given[d - defs] = b->items[j];
		at[d - defs] = i;
		pp->keys[pp->n_keys].def = d;
		pp->keys[pp->n_keys].loc = loc_of(l, given_at(b, j));
		pp->n_keys++;
	}
}

static void load_pass(struct ld *l, const struct mc_ynode *item)
{
	struct mc_pl_pass *pp = &l->p->passes[l->p->n_passes];
	const struct mc_ynode *params = NULL, *namenode = item;
	const struct mc_ynode **given = NULL;
	int *at = NULL;
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
	if (strchr(name, '/')) {
		/* A pass named by its file: that file, whatever its name. */
		char *file = mc_path_resolve(l->p->dir, name);

		pass = file ? mc_registry_open_file(l->p->reg, file, &so, &l->tmp) : NULL;
		if (!pass)
			bad(l, namenode, "%s", file ? l->tmp.msg : "out of memory");
		free(file);
		if (!pass)
			return;
		name = pass->name;
	} else if (check_shadow(l, namenode, name)) {
		return;
	} else {
		pass = mc_registry_find(l->p->reg, name, &so);
	}
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
			    name, mc_pl_join(names, tbuf, sizeof(tbuf)));
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
	at = malloc(((size_t)ndefs + 1) * sizeof(*at));
	for (int i = 0; at && i < ndefs; i++)
		at[i] = -1;
	if (params && params->kind == MC_YMAP)
		pp->keys = calloc((size_t)params->n + 1 + block_keys(params), sizeof(*pp->keys));
	if (!pp->conf || !given || !at || (params && params->kind == MC_YMAP && !pp->keys)) {
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

			if (!d && is_block(defs, k)) {
				load_block(l, pp, defs, params, i, given, at, where);
				continue;
			}
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
			if (mc_pl_set_value(l, d, pp->conf, params->items[i], where))
				continue;
			given[d - defs] = params->items[i];
			at[d - defs] = i;
			pp->keys[pp->n_keys].def = d;
			/* The place of an override's value is the override. */
			pp->keys[pp->n_keys].loc = loc_of(l, given_at(params, i));
			pp->n_keys++;
		}
	}
	check_groups(l, defs, ndefs, at, params, namenode, where);
	for (int i = 0; i < ndefs; i++) {
		const struct mc_param_def *d = &defs[i];

		/* Optional rows may be left out; a group's rows are checked above. */
		if (!given[i] && !d->def && !(d->flags & MC_PARAM_FOPTIONAL) && !d->group) {
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
	free(at);
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

static void load_output(struct ld *l, struct mc_ynode *o)
{
	static const char *const output_keys[] = { "model", "path", "int4", "zstd_level", NULL };
	struct mc_ynode *model = NULL, *path = o, *int4 = NULL, *zlevel = NULL;
	const char *name = NULL;
	char list[512];
	size_t n_path;

	if (mc_ynode_is_null(o))
		return;
	if (o->kind == MC_YMAP) {
		mc_pl_check_keys(l, o, output_keys, "output");
		model = mc_ymap_get(o, "model", NULL);
		path = mc_ymap_get(o, "path", NULL);
		int4 = mc_ymap_get(o, "int4", NULL);
		zlevel = mc_ymap_get(o, "zstd_level", NULL);
		if (!model || !path) {
			bad(l, o, "output: missing required key '%s'", model ? "path" : "model");
			return;
		}
		name = mc_pl_want_scalar(l, model, "output model");
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
			    n, mc_pl_join(l->model_names, list, sizeof(list)));
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
	/* Checked with every file of the pipeline in mc_pl_check_outputs. */
	l->p->output_loc = loc_of(l, path);
	n_path = strlen(l->p->output_path);
	if (n_path > 9 && !strcmp(l->p->output_path + n_path - 4, ".zst") &&
	    !strncasecmp(l->p->output_path + n_path - 9, ".onnx", 5))
		bad(l, path, "output: '%s': ONNX files are written plain (ONNX Runtime reads no "
			     "zstd); write .onnx, or .safetensors.zst for a zstd-coded mcomp file",
		    l->p->output_path);
	if (int4) {
		const char *v = mc_pl_want_scalar(l, int4, "output int4");

		if (v && strcmp(v, "int4") && strcmp(v, "f32"))
			bad(l, int4, "output: int4 is int4 (4-bit weights as INT4, opset 21) or f32 "
				     "(dequantized, opset 13), not '%s'", v);
		else if (v && !mc_host_is_onnx(l->p->output_path))
			bad(l, int4, "output: int4 says how an ONNX file holds 4-bit weights; "
				     "'%s' is not a .onnx path", l->p->output_path);
		else if (v && !strcmp(v, "f32"))
			l->p->output_onnx_flags |= MC_ONNX_4BIT_F32;
	}
	if (zlevel) {
		int64_t v;

		if (mc_pl_want_int(l, zlevel, "output zstd_level", 1, MC_ZSTD_LEVEL_MAX, &v))
			return;
		if (strcmp(l->p->output_path + n_path - (n_path > 4 ? 4 : n_path), ".zst"))
			bad(l, zlevel, "output: zstd_level says how a .zst file is coded; '%s' "
				       "does not end in .zst", l->p->output_path);
		else
			l->p->output_zstd_level = (int)v;
	}
}

static void load_report(struct ld *l, struct mc_ynode *r)
{
	if (mc_ynode_is_null(r))
		return;
	l->p->report_path = want_path(l, r, "report");
	if (!l->p->report_path)
		return;
	l->p->report_loc = loc_of(l, r);
}

/* ---------------------------------------------------------------- the whole */

static const char *const top_keys[] = { "mcomp",  "seed",   "data",	"blocks", "models",
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

void mc_pl_validate(struct ld *l, struct mc_ynode *root)
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
	mc_pl_check_keys(l, root, top_keys, "the pipeline");
	load_version(l, root);
	load_seed(l, root);
	v = mc_ymap_get(root, "data", NULL);
	l->split_names = key_names(v && v->kind == MC_YMAP ? v : NULL);
	if (v && !mc_ynode_is_null(v))
		load_data(l, v);
	mc_pl_load_blocks(l, mc_ymap_get(root, "blocks", NULL));
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
	/* Every file written, against every file read and each other. */
	mc_pl_check_outputs(l);
}
