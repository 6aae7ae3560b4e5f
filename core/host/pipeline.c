/* SPDX-License-Identifier: MIT */
/*
 * pipeline.c - reading a pipeline file (docs/pipelines.md): the entry points.
 *
 * mc_pipeline_load reads the file into a YAML node tree (core/io/yaml.c),
 * applies the --set overrides to the tree (overrides.c), checks every section
 * against the schema (schema.c, with the layer lists of built models in
 * layers.c), then has the host call each pass's check() (host.c). All errors
 * found are reported together, each at its place, so that a typo in the
 * fifth pass fails before the first pass runs. The result is a struct
 * mc_pipeline as host/pipeline_int.h describes; mc_pipeline_free frees it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/pipeline.h>

#include "host/host_int.h"
#include "io/ydoc.h"

#define PIPELINE_MAX_BYTES (16u << 20)

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
	for (i = 0; i < p->n_splits; i++)
		mc_pl_split_clear(&p->splits[i]);
	free(p->splits);
	for (i = 0; i < p->n_models; i++) {
		free(p->models[i].name);
		free(p->models[i].load);
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
	free(p->outputs);
	free(p->inputs);
	free(p->output_model);
	free(p->output_path);
	free(p->report_path);
	free(p->out_tag);
	free(p->path);
	free(p->dir);
	free(p->text);
	mc_ck_state_free(p->ck);
	mc_registry_free(f->own_reg);
	free(f);
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

MC_API struct mc_pipeline *mc_pipeline_load(const char *path, const char *const *sets, int n_sets,
					    struct mc_registry *reg, struct mc_err *err)
{
	return mc_pipeline_load_tagged(path, sets, n_sets, NULL, reg, err);
}

MC_API const char *mc_pipeline_report_path(const struct mc_pipeline *p)
{
	return p->report_path;
}

MC_API struct mc_pipeline *mc_pipeline_load_tagged(const char *path, const char *const *sets,
						   int n_sets, const char *tag,
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
	if (tag && *tag && !(p->out_tag = strdup(tag))) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
		goto fail;
	}
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
		mc_pl_apply_set(&l, i, &root);
	mc_pl_validate(&l, root);
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
