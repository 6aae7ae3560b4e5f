// SPDX-License-Identifier: MIT
/*
 * cascade.c - cascades of models (mcomp/cascade.h): confidence measures,
 * cascade files, running a cascade on a batch and measuring it on a data set.
 *
 * Running: stage 0 sees the whole batch; after each stage the samples whose
 * confidence reaches its threshold take that stage's logits, and the inputs
 * of the others are copied (from the caller's x, by original row) into one
 * contiguous buffer that the next stage runs on. Every step is per sample
 * or a copy, so the result is the same for any thread count.
 *
 * Files: the members' tensors under "<stage>/" (model_io_int.h writes and
 * reads one model's share), the stages' names, thresholds and architectures
 * as JSON under __metadata__["mcomp.cascade"]. Thresholds are JSON numbers
 * printed with 17 significant digits, which give back the same double and
 * so the same float; +inf and -inf (always, never exit) are the strings
 * "inf" and "-inf".
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <mcomp/cascade.h>

#include "base/base_int.h"
#include "graph/model_int.h"

#include "io/model_io_int.h"

#define NAME_MAX_LEN 200 /* stage names: tensor names "<stage>/<node>.<param>" stay short */
#define FIX_FILE     "the file was edited or is corrupt; build it again with the cascade pass"

MC_API const char *const mc_confidence_names[] = {"max-prob", "margin", "entropy", NULL};
_Static_assert(sizeof(mc_confidence_names) / sizeof(mc_confidence_names[0]) == MC_CONF_COUNT + 1,
	       "one name per enum mc_confidence");

/* ---------------------------------------------------------------- confidence */

/* One row: softmax in double with the maximum subtracted, first-max wins. */
static float row_confidence(int kind, const float *z, int classes)
{
	int top = mc_argmax(z, classes);
	double mx = z[top], s = 0, e2 = 0, ez = 0;

	for (int j = 0; j < classes; j++) {
		double d = (double)z[j] - mx, e = exp(d);

		s += e;
		if (e > 0)
			ez += e * d; /* skips -inf logits, whose p log p is 0 */
		if (j != top && e > e2)
			e2 = e;
	}
	switch (kind) {
	case MC_CONF_MAX_PROB:
		return (float)(1 / s);
	case MC_CONF_MARGIN:
		return (float)((1 - e2) / s);
	case MC_CONF_ENTROPY:
		/* sum p log p with p = e / s and log p = d - log s */
		return (float)(ez / s - log(s));
	default:
		return NAN;
	}
}

MC_API void mc_confidence(int kind, const float *logits, int n, int classes, float *conf)
{
	for (int i = 0; i < n; i++)
		conf[i] =
		    classes > 0 ? row_confidence(kind, logits + (size_t)i * classes, classes) : NAN;
}

/* ---------------------------------------------------------------- the cascade */

static int same_input(const struct mc_model *a, const struct mc_model *b)
{
	if (a->in_ndim != b->in_ndim)
		return 0;
	for (int d = 0; d < a->in_ndim; d++)
		if (a->in_shape[d] != b->in_shape[d])
			return 0;
	return 1;
}

/*
 * Checks what mc_cascade_new promises: 1..MAX stages, names distinct,
 * non-empty, short and free of '/', the same input shape and class count.
 * Errors are code, prefixed with where ("cascade" or the file) and ending
 * with fix.
 */
static int check_stages(int n, const char *const *names, struct mc_model *const *models, int code,
			const char *where, const char *fix, struct mc_err *err)
{
	char s0[128], ss[128];

	if (n < 1 || n > MC_CASCADE_MAX_STAGES)
		return mc_err_set(err, code, "%s: %d stages; a cascade has 1 to %d; %s", where, n,
				  MC_CASCADE_MAX_STAGES, fix);
	for (int s = 0; s < n; s++) {
		const char *name = names[s];

		if (!name || !*name || strchr(name, '/') || strlen(name) > NAME_MAX_LEN)
			return mc_err_set(err, code,
					  "%s: stage %d's name '%s' is %s; a stage name is 1 to %d "
					  "bytes without '/' (its tensors are named "
					  "\"<stage>/<tensor>\"); %s",
					  where, s, name ? name : "(null)",
					  !name || !*name     ? "empty"
					  : strchr(name, '/') ? "not allowed"
							      : "too long",
					  NAME_MAX_LEN, fix);
		for (int k = 0; k < s; k++)
			if (!strcmp(names[k], name))
				return mc_err_set(err, code,
						  "%s: stages %d and %d are both named '%s'; each "
						  "stage needs its own name; %s",
						  where, k, s, name, fix);
		if (!models[s])
			return mc_err_set(err, code, "%s: stage %d ('%s') has no model; %s", where,
					  s, name, fix);
	}
	for (int s = 1; s < n; s++) {
		const struct mc_model *a = models[0], *b = models[s];

		if (!same_input(a, b))
			return mc_err_set(
			    err, code,
			    "%s: stage %d ('%s') takes input %s but stage 0 ('%s') "
			    "takes %s; every stage must read the same samples; %s",
			    where, s, names[s],
			    mc_shape_text(b->in_ndim, b->in_shape, ss, sizeof(ss)), names[0],
			    mc_shape_text(a->in_ndim, a->in_shape, s0, sizeof(s0)), fix);
		if (a->n_classes != b->n_classes)
			return mc_err_set(
			    err, code,
			    "%s: stage %d ('%s') gives %lld classes but stage 0 ('%s') "
			    "gives %lld; every stage must give the same classes; %s",
			    where, s, names[s], (long long)b->n_classes, names[0],
			    (long long)a->n_classes, fix);
	}
	return 0;
}

/* confidence names a measure, or an error as check_stages reports them. */
static int check_confidence(int confidence, int code, const char *where, const char *fix,
			    struct mc_err *err)
{
	if (confidence < 0 || confidence >= MC_CONF_COUNT)
		return mc_err_set(err, code,
				  "%s: confidence %d is not one of max-prob, margin, entropy; %s",
				  where, confidence, fix);
	return 0;
}

/* The cascade of checked stages (models owned from here on, freed on failure). */
static struct mc_cascade *cascade_make(int n, const char *const *names, struct mc_model **models,
				       int confidence, int code, const char *where, const char *fix,
				       struct mc_err *err)
{
	struct mc_cascade *c = NULL;

	if (check_stages(n, names, models, code, where, fix, err) ||
	    check_confidence(confidence, code, where, fix, err))
		goto fail;
	c = calloc(1, sizeof(*c));
	for (int s = 0; c && s < n; s++) {
		c->thresholds[s] = INFINITY;
		if (!(c->names[s] = strdup(names[s]))) {
			while (s--)
				free(c->names[s]);
			free(c);
			c = NULL;
		}
	}
	if (!c) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory", where);
		goto fail;
	}
	c->n_stages = n;
	c->confidence = confidence;
	memcpy(c->stages, models, (size_t)n * sizeof(*models));
	return c;
fail:
	for (int s = 0; s < n; s++)
		mc_model_free(models[s]);
	return NULL;
}

MC_API struct mc_cascade *mc_cascade_new(int n, const char *const *names, struct mc_model **models,
					 int confidence, struct mc_err *err)
{
	return cascade_make(n, names, models, confidence, MC_EINVAL, "cascade",
			    "fix the list of stages", err);
}

MC_API void mc_cascade_free(struct mc_cascade *c)
{
	if (!c)
		return;
	for (int s = 0; s < c->n_stages; s++) {
		free(c->names[s]);
		mc_model_free(c->stages[s]);
	}
	free(c);
}

/* ---------------------------------------------------------------- files */

static json_t *threshold_json(float t)
{
	if (isfinite(t))
		return json_real((double)t);
	if (isinf(t))
		return json_string(t > 0 ? "inf" : "-inf");
	return NULL;
}

/* The "mcomp.cascade" metadata value (malloc'd). */
static int cascade_json(const struct mc_cascade *c, char **text, struct mc_err *err)
{
	json_t *root = json_object(), *stages = json_array();
	json_error_t je;
	int ret = 0;

	*text = NULL;
	if (!root || !stages ||
	    json_object_set_new(root, "format", json_integer(MC_CASCADE_FORMAT)) ||
	    json_object_set_new(root, "confidence",
				json_string(mc_confidence_names[c->confidence])) ||
	    json_object_set(root, "stages", stages)) {
		ret = mc_err_set(err, MC_ENOMEM, "cascade: out of memory");
		goto out;
	}
	for (int s = 0; s < c->n_stages && !ret; s++) {
		json_t *st = json_object(), *name = json_string(c->names[s]), *arch = NULL;
		char *a = mc_model_arch(c->stages[s]);

		if (a)
			arch = json_loads(a, 0, &je);
		free(a);
		if (!st || json_array_append_new(stages, st) || !arch) {
			json_decref(name);
			json_decref(arch);
			ret = mc_err_set(err, MC_ENOMEM, "cascade: out of memory");
			break;
		}
		if (!name) {
			json_decref(arch);
			ret = mc_err_set(err, MC_EINVAL,
					 "cascade: stage %d's name is not valid UTF-8 text; rename "
					 "it",
					 s);
			break;
		}
		json_object_set_new(st, "name", name);
		if (s < c->n_stages - 1) {
			json_t *t = threshold_json(c->thresholds[s]);

			if (!t) {
				json_decref(arch);
				ret = mc_err_set(err, MC_EINVAL,
						 "cascade: stage %d ('%s') has threshold NaN; set "
						 "a number (or +inf: no sample exits there)",
						 s, c->names[s]);
				break;
			}
			json_object_set_new(st, "threshold", t);
		}
		json_object_set_new(st, "arch", arch);
	}
	if (!ret && !(*text = json_dumps(root, JSON_COMPACT)))
		ret = mc_err_set(err, MC_ENOMEM, "cascade: out of memory");
out:
	json_decref(stages);
	json_decref(root);
	return ret;
}

MC_API int mc_cascade_serialize(const struct mc_cascade *c, void **buf, size_t *len,
				struct mc_err *err)
{
	struct mc_st_list l = {0};
	char *meta_text = NULL, *sp = NULL, prefix[NAME_MAX_LEN + 2];
	const char *meta[8];
	int ret;

	*buf = NULL;
	*len = 0;
	ret = check_stages(c->n_stages, (const char *const *)c->names, c->stages, MC_EINVAL,
			   "cascade", "fix the list of stages", err);
	if (!ret)
		ret = check_confidence(c->confidence, MC_EINVAL, "cascade",
				       "set its confidence to one of them", err);
	if (!ret)
		ret = cascade_json(c, &meta_text, err);
	for (int s = 0; s < c->n_stages && !ret; s++) {
		snprintf(prefix, sizeof(prefix), "%s/", c->names[s]);
		ret = mc_model_add_tensors(c->stages[s], prefix, &l, err);
	}
	if (!ret)
		ret = mc_st_list_sparse_text(&l, &sp, err);
	if (!ret) {
		meta[0] = "format";
		meta[1] = "mcomp";
		meta[2] = "mcomp.version";
		meta[3] = MC_VERSION;
		meta[4] = "mcomp.cascade";
		meta[5] = meta_text;
		meta[6] = "mcomp.sparse";
		meta[7] = sp;
		ret = mc_st_serialize(l.t, l.n, meta, sp ? 4 : 3, buf, len, err);
	}
	mc_st_list_release(&l);
	free(sp);
	free(meta_text);
	return ret;
}

MC_API int mc_cascade_save(const struct mc_cascade *c, const char *path, struct mc_err *err)
{
	size_t len;
	void *buf;
	int ret;

	ret = mc_cascade_serialize(c, &buf, &len, err);
	if (ret)
		return mc_err_prefix(err, "%s", path);
	/* PATH.zst: one zstd frame (core/base/zfile.c). */
	ret = mc_write_file_coded(path, buf, len, err);
	free(buf);
	return ret;
}

/* Refuses any key of o outside the NULL-terminated list keys. */
static int known_keys(json_t *o, const char *const *keys, const char *path, const char *what,
		      struct mc_err *err)
{
	const char *key;
	json_t *v;

	json_object_foreach (o, key, v) {
		int k = 0;

		while (keys[k] && strcmp(keys[k], key))
			k++;
		if (!keys[k])
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: \"mcomp.cascade\" %s has an unknown key '%s'; %s",
					  path, what, key, FIX_FILE);
	}
	return 0;
}

/* Reads stage s's threshold (required on all but the last, absent there). */
static int read_threshold(json_t *st, int s, int last, const char *name, const char *path,
			  float *out, struct mc_err *err)
{
	json_t *t = json_object_get(st, "threshold");
	const char *str = json_string_value(t);

	if (s == last) {
		if (t)
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: the last stage ('%s') has a threshold, but it takes "
					  "every sample left and can have none; %s",
					  path, name, FIX_FILE);
		return 0;
	}
	if (json_is_number(t)) {
		*out = (float)json_number_value(t);
		return 0;
	}
	if (str && (!strcmp(str, "inf") || !strcmp(str, "-inf"))) {
		*out = str[0] == '-' ? -INFINITY : INFINITY;
		return 0;
	}
	return mc_err_set(err, MC_ECORRUPT,
			  "%s: stage %d ('%s') has %s threshold; every stage but the last needs "
			  "one (a number, \"inf\" or \"-inf\"); %s",
			  path, s, name, t ? "a malformed" : "no", FIX_FILE);
}

/* The models of the stages described by the array stages, with names and
 * thresholds (names borrowed from the JSON). */
static int read_stages(json_t *stages, const char *path, const char **names,
		       struct mc_model **models, float *thresholds, struct mc_err *err)
{
	static const char *const keys[] = {"name", "threshold", "arch", NULL};
	int n = (int)json_array_size(stages);

	for (int s = 0; s < n; s++) {
		json_t *st = json_array_get(stages, (size_t)s), *arch = json_object_get(st, "arch");
		char origin[4096], *text;
		int ret;

		names[s] = json_string_value(json_object_get(st, "name"));
		if (!json_is_object(st) || !names[s] || !json_is_object(arch))
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: \"mcomp.cascade\" stage %d is not an object with "
					  "\"name\" (a string) and \"arch\" (an object); %s",
					  path, s, FIX_FILE);
		ret = known_keys(st, keys, path, "stage", err);
		if (!ret)
			ret = read_threshold(st, s, n - 1, names[s], path, &thresholds[s], err);
		if (ret)
			return ret;
		text = json_dumps(arch, JSON_COMPACT);
		if (!text)
			return mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
		snprintf(origin, sizeof(origin), "%s: stage '%.*s'", path, NAME_MAX_LEN, names[s]);
		models[s] = mc_model_from_arch_shapes(text, origin, err);
		free(text);
		if (!models[s]) {
			/* A bad architecture in a file is a corrupt file, not bad usage. */
			err->code = MC_ECORRUPT;
			return err->code;
		}
	}
	return 0;
}

/* Fills the stages' parameters from f and checks that every tensor was used. */
static int fill_stages(struct mc_cascade *c, const struct mc_st_file *f, struct mc_err *err)
{
	char *used = calloc((size_t)f->n + 1, 1), prefix[NAME_MAX_LEN + 2];
	json_t *sparse = NULL, *v;
	const char *key;
	int ret;

	if (!used)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", f->path);
	ret = mc_sparse_index(f, &sparse, err);
	json_object_foreach (ret ? NULL : sparse, key, v) {
		const char *slash = strchr(key, '/');
		int s = 0;

		while (slash && s < c->n_stages &&
		       (strlen(c->names[s]) != (size_t)(slash - key) ||
			strncmp(c->names[s], key, (size_t)(slash - key))))
			s++;
		if (!slash || s == c->n_stages) {
			ret = mc_err_set(err, MC_ECORRUPT,
					 "%s: __metadata__ \"mcomp.sparse\" names '%s', which "
					 "belongs to no stage; %s",
					 f->path, key, FIX_FILE);
			break;
		}
	}
	for (int s = 0; s < c->n_stages && !ret; s++) {
		snprintf(prefix, sizeof(prefix), "%s/", c->names[s]);
		ret = mc_model_fill(c->stages[s], f, prefix, sparse, used, err);
	}
	for (int k = 0; k < f->n && !ret; k++)
		if (!used[k])
			ret = mc_err_set(err, MC_ECORRUPT,
					 "%s: tensor '%s' is no parameter of any stage's "
					 "architecture; %s",
					 f->path, f->entries[k].name, FIX_FILE);
	json_decref(sparse);
	free(used);
	return ret;
}

/*
 * The stages' models, read as shapes, get their data once each stage stores
 * values for every layer in f and all of them with the file fit the memory
 * limit (mc_model_check_stored, mc_mem_check).
 */
static int give_data(const struct mc_st_file *f, int n, const char *const *names,
		     struct mc_model **models, struct mc_err *err)
{
	char prefix[NAME_MAX_LEN + 2], what[4200];
	uint64_t need = f->len;
	json_t *sparse = NULL;
	int ret = mc_sparse_index(f, &sparse, err);

	for (int s = 0; s < n && !ret; s++) {
		snprintf(prefix, sizeof(prefix), "%s/", names[s]);
		ret = mc_model_check_stored(models[s], f, prefix, sparse, err);
		need += mc_model_param_bytes(models[s]);
	}
	json_decref(sparse);
	snprintf(what, sizeof(what), "%s: a cascade of %d stages", f->path, n);
	if (!ret)
		ret = mc_mem_check(need, what, err);
	for (int s = 0; s < n && !ret; s++)
		ret = mc_model_materialize(models[s], err);
	return ret;
}

static struct mc_cascade *cascade_from_file(const struct mc_st_file *f, struct mc_err *err)
{
	static const char *const keys[] = {"format", "confidence", "stages", NULL};
	const char *text = mc_st_meta(f, "mcomp.cascade"), *path = f->path, *conf, *fmt;
	const char *names[MC_CASCADE_MAX_STAGES];
	struct mc_model *models[MC_CASCADE_MAX_STAGES] = {0};
	float thresholds[MC_CASCADE_MAX_STAGES];
	struct mc_cascade *c = NULL;
	json_t *root, *stages, *jf;
	json_error_t je;
	int n = 0, kind = 0;

	if (!text) {
		if (mc_st_meta(f, "mcomp.arch"))
			mc_err_set(err, MC_ECORRUPT,
				   "%s: a model file, not a cascade (no \"mcomp.cascade\" in "
				   "__metadata__); load it as a model",
				   path);
		else
			mc_err_set(err, MC_ECORRUPT,
				   "%s: no \"mcomp.cascade\" in __metadata__; the file was not "
				   "written by mcomp as a cascade",
				   path);
		return NULL;
	}
	fmt = mc_st_meta(f, "format");
	if (!fmt || strcmp(fmt, "mcomp")) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: __metadata__ \"format\" is %s%s%s, not \"mcomp\"; %s", path,
			   fmt ? "\"" : "missing", fmt ? fmt : "", fmt ? "\"" : "", FIX_FILE);
		return NULL;
	}
	root = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	if (!json_is_object(root)) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: __metadata__ \"mcomp.cascade\" is not a JSON object (%s); %s", path,
			   root ? "another type" : je.text, FIX_FILE);
		goto out;
	}
	if (known_keys(root, keys, path, "object", err))
		goto out;
	jf = json_object_get(root, "format");
	if (!json_is_integer(jf) || json_integer_value(jf) != MC_CASCADE_FORMAT) {
		if (json_is_integer(jf) && json_integer_value(jf) > MC_CASCADE_FORMAT)
			mc_err_set(err, MC_ECORRUPT,
				   "%s: cascade format %lld is newer than this mcomp reads (%d); "
				   "use a newer mcomp",
				   path, (long long)json_integer_value(jf), MC_CASCADE_FORMAT);
		else
			mc_err_set(err, MC_ECORRUPT,
				   "%s: \"mcomp.cascade\" \"format\" is not %d; %s", path,
				   MC_CASCADE_FORMAT, FIX_FILE);
		goto out;
	}
	conf = json_string_value(json_object_get(root, "confidence"));
	while (conf && mc_confidence_names[kind] && strcmp(mc_confidence_names[kind], conf))
		kind++;
	if (!conf || !mc_confidence_names[kind]) {
		mc_err_set(
		    err, MC_ECORRUPT,
		    "%s: \"mcomp.cascade\" confidence %s%s%s is not one of max-prob, margin, "
		    "entropy; %s",
		    path, conf ? "'" : "(missing)", conf ? conf : "", conf ? "'" : "", FIX_FILE);
		goto out;
	}
	stages = json_object_get(root, "stages");
	n = (int)json_array_size(stages);
	if (!json_is_array(stages) || n < 1 || n > MC_CASCADE_MAX_STAGES) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: \"mcomp.cascade\" \"stages\" is not an array of 1 to %d stages; %s",
			   path, MC_CASCADE_MAX_STAGES, FIX_FILE);
		n = 0;
		goto out;
	}
	if (read_stages(stages, path, names, models, thresholds, err))
		goto out;
	c = cascade_make(n, names, models, kind, MC_ECORRUPT, path, FIX_FILE, err);
	n = 0; /* the models belong to c, or were freed */
	if (!c)
		goto out;
	for (int s = 0; s < c->n_stages - 1; s++)
		c->thresholds[s] = thresholds[s];
	if (give_data(f, c->n_stages, (const char *const *)c->names, c->stages, err) ||
	    fill_stages(c, f, err)) {
		mc_cascade_free(c);
		c = NULL;
	}
out:
	for (int s = 0; s < n; s++)
		mc_model_free(models[s]);
	json_decref(root);
	return c;
}

MC_API struct mc_cascade *mc_cascade_load(const char *path, struct mc_err *err)
{
	struct mc_st_file *f = mc_st_read(path, err);
	struct mc_cascade *c;

	if (!f)
		return NULL;
	c = cascade_from_file(f, err);
	mc_st_free(f);
	return c;
}

/* Reads only the header (decoded from a zstd frame as needed): a cascade is
 * known by its metadata. */
MC_API int mc_file_is_cascade(const char *path)
{
	struct mc_err err = { 0 }; /* a file too large is the loader's to report */
	unsigned char h[8];
	uint64_t n = 0;
	json_t *root = NULL;
	char *buf = NULL;
	size_t got;
	int ret = 0;

	if (mc_read_head(path, h, 8, &got) || got != 8)
		return 0;
	for (int i = 7; i >= 0; i--)
		n = n << 8 | h[i];
	if (n < 2 || n > 100000000u || mc_mem_check(8 + n, path, &err) ||
	    !(buf = malloc(8 + n)) || mc_read_head(path, buf, 8 + n, &got) || got != 8 + n)
		goto out;
	root = json_loadb(buf + 8, n, 0, NULL);
	ret =
	    json_is_string(json_object_get(json_object_get(root, "__metadata__"), "mcomp.cascade"));
out:
	json_decref(root);
	free(buf);
	return ret;
}

/* ---------------------------------------------------------------- running */

struct mc_cascade_exec {
	const struct mc_cascade *c;
	int max_batch, classes;
	size_t in_numel;
	struct mc_exec *ex[MC_CASCADE_MAX_STAGES];
	float *gather; /* [max_batch, in_numel]: inputs of the samples still running */
	float *conf;   /* [max_batch] */
	int *idx;      /* [max_batch]: the caller's rows of the samples still running */
	int *next;     /* [max_batch]: the same for the next stage */
};

MC_API struct mc_cascade_exec *mc_cascade_exec_new(const struct mc_cascade *c, int max_batch,
						   struct mc_err *err)
{
	struct mc_cascade_exec *e;

	if (max_batch < 1)
		return mc_err_set(err, MC_EINVAL, "cascade: batch size %d; it must be at least 1",
				  max_batch),
		       NULL;
	e = calloc(1, sizeof(*e));
	if (!e)
		goto oom;
	e->c = c;
	e->max_batch = max_batch;
	e->classes = (int)c->stages[0]->n_classes;
	e->in_numel = (size_t)c->stages[0]->in_numel;
	for (int s = 0; s < c->n_stages; s++) {
		e->ex[s] = mc_exec_new(c->stages[s], max_batch, 0, err);
		if (!e->ex[s]) {
			mc_cascade_exec_free(e);
			return NULL;
		}
	}
	e->conf = mc_calloc((size_t)max_batch, sizeof(float));
	e->idx = mc_calloc((size_t)max_batch, sizeof(int));
	e->next = mc_calloc((size_t)max_batch, sizeof(int));
	if (c->n_stages > 1)
		e->gather = mc_calloc((size_t)max_batch * e->in_numel, sizeof(float));
	if (!e->conf || !e->idx || !e->next || (c->n_stages > 1 && !e->gather)) {
		mc_cascade_exec_free(e);
		goto oom;
	}
	return e;
oom:
	mc_err_set(err, MC_ENOMEM, "cascade: out of memory for batches of %d", max_batch);
	return NULL;
}

MC_API void mc_cascade_exec_free(struct mc_cascade_exec *e)
{
	if (!e)
		return;
	for (int s = 0; s < MC_CASCADE_MAX_STAGES; s++)
		mc_exec_free(e->ex[s]);
	mc_free(e->gather);
	mc_free(e->conf);
	mc_free(e->idx);
	mc_free(e->next);
	free(e);
}

/* One batch of n <= max_batch samples. */
static void forward_batch(struct mc_cascade_exec *e, const float *x, int n, float *logits,
			  int *exit_stage)
{
	const struct mc_cascade *c = e->c;
	size_t row = (size_t)e->classes * sizeof(float), in = e->in_numel * sizeof(float);
	const float *cur = x;
	int m = n;

	for (int i = 0; i < n; i++)
		e->idx[i] = i;
	for (int s = 0; s < c->n_stages && m > 0; s++) {
		const float *out = mc_forward(e->ex[s], cur, m);
		int last = s == c->n_stages - 1, k = 0, *t;

		if (!last)
			mc_confidence(c->confidence, out, m, e->classes, e->conf);
		for (int i = 0; i < m; i++) {
			int r = e->idx[i];

			if (last || e->conf[i] >= c->thresholds[s]) {
				memcpy(logits + (size_t)r * e->classes,
				       out + (size_t)i * e->classes, row);
				if (exit_stage)
					exit_stage[r] = s;
			} else {
				memcpy(e->gather + (size_t)k * e->in_numel,
				       x + (size_t)r * e->in_numel, in);
				e->next[k++] = r;
			}
		}
		t = e->idx;
		e->idx = e->next;
		e->next = t;
		m = k;
		cur = e->gather;
	}
}

MC_API void mc_cascade_forward(struct mc_cascade_exec *e, const float *x, int n, float *logits,
			       int *exit_stage)
{
	for (int b0 = 0; b0 < n; b0 += e->max_batch) {
		int b = n - b0 < e->max_batch ? n - b0 : e->max_batch;

		forward_batch(e, x + (size_t)b0 * e->in_numel, b, logits + (size_t)b0 * e->classes,
			      exit_stage ? exit_stage + b0 : NULL);
	}
}

/* ---------------------------------------------------------------- measuring */

/* Seconds to run all of d through e in batches of e->max_batch. */
static double full_pass(struct mc_cascade_exec *e, const struct mc_dataset *d, float *logits,
			int *exits)
{
	double t0 = mc_now();

	for (int64_t b0 = 0; b0 < d->n; b0 += e->max_batch) {
		int b = d->n - b0 < e->max_batch ? (int)(d->n - b0) : e->max_batch;

		mc_cascade_forward(e, d->x + (size_t)b0 * e->in_numel, b, logits, exits);
	}
	return mc_now() - t0;
}

MC_API int mc_cascade_measure(const struct mc_cascade *c, const struct mc_dataset *d,
			      struct mc_cascade_measure *out, struct mc_err *err)
{
	const int big = 256, warm = 10;
	const struct mc_model *m0 = c->stages[0];
	int64_t count[MC_CASCADE_MAX_STAGES] = {0}, right[MC_CASCADE_MAX_STAGES] = {0}, total = 0;
	int64_t n_lat;
	struct mc_cascade_exec *e;
	double best = INFINITY, t0;
	float *logits;
	int *exits, ret, k = (int)m0->n_classes;
	size_t len;
	void *buf;

	memset(out, 0, sizeof(*out));
	if (d->n < 1 || d->sample_numel != m0->in_numel || d->n_classes > m0->n_classes)
		return mc_err_set(err, MC_EINVAL,
				  "%s: %lld samples of %lld values in %d classes do not fit the "
				  "cascade (input of %lld values, %lld classes); use data the "
				  "stages were trained on",
				  d->source, (long long)d->n, (long long)d->sample_numel,
				  d->n_classes, (long long)m0->in_numel, (long long)m0->n_classes);
	ret = mc_cascade_serialize(c, &buf, &len, err);
	if (ret)
		return ret;
	free(buf);
	out->bytes = (int64_t)len;
	e = mc_cascade_exec_new(c, big, err);
	if (!e)
		return err->code;
	logits = mc_calloc((size_t)big * (size_t)k, sizeof(float));
	exits = mc_calloc((size_t)big, sizeof(int));
	if (!logits || !exits) {
		ret = mc_err_set(err, MC_ENOMEM, "cascade: out of memory measuring");
		goto out;
	}

	for (int64_t b0 = 0; b0 < d->n; b0 += big) {
		int b = d->n - b0 < big ? (int)(d->n - b0) : big;

		mc_cascade_forward(e, d->x + (size_t)b0 * (size_t)d->sample_numel, b, logits,
				   exits);
		for (int i = 0; i < b; i++) {
			int ok = mc_argmax(logits + (size_t)i * k, k) == d->y[b0 + i];

			count[exits[i]]++;
			right[exits[i]] += ok;
			total += ok;
		}
	}
	out->accuracy = (double)total / (double)d->n;
	for (int s = 0; s < MC_CASCADE_MAX_STAGES; s++) {
		out->exit_frac[s] = (double)count[s] / (double)d->n;
		out->exit_acc[s] = count[s] ? (double)right[s] / (double)count[s] : -1;
	}

	for (int r = 0; r < 3; r++) {
		double t = full_pass(e, d, logits, exits);

		best = t < best ? t : best;
	}
	out->throughput256 = best > 0 ? (double)d->n / best : INFINITY;

	n_lat = d->n < 500 ? d->n : 500;
	for (int i = 0; i < warm; i++)
		mc_cascade_forward(e, d->x + (size_t)(i % n_lat) * (size_t)d->sample_numel, 1,
				   logits, exits);
	t0 = mc_now();
	for (int64_t i = 0; i < n_lat; i++)
		mc_cascade_forward(e, d->x + (size_t)i * (size_t)d->sample_numel, 1, logits, exits);
	out->latency1_ms = (mc_now() - t0) * 1e3 / (double)n_lat;
out:
	mc_free(logits);
	mc_free(exits);
	mc_cascade_exec_free(e);
	return ret;
}
