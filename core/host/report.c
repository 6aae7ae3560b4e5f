/* SPDX-License-Identifier: MIT */
/*
 * report.c - the per-step table a person reads, and the same figures as
 * JSON with a manifest that says exactly what produced them: the pipeline's
 * bytes, the overrides, every input and output file's SHA-256, each pass's
 * name, version, file and its SHA-256, the parameters as typed values, the
 * seed and the thread count. A failed run's report has the steps that
 * finished, "status": "failed" and the error.
 */
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nettle/sha2.h>

#include <mcomp/pipeline.h>
#include <mcomp/safetensors.h>
#include <mcomp/train.h>

#include "host/host_int.h"

void mc_report_clear(struct mc_report *r)
{
	int i;

	for (i = 0; i < r->n; i++) {
		free(r->rows[i].pass);
		free(r->rows[i].model);
		json_decref(r->rows[i].metrics);
	}
	free(r->rows);
	memset(r, 0, sizeof(*r));
}

void mc_report_pop(struct mc_report *r)
{
	struct mc_row *row;

	if (!r->n)
		return;
	row = &r->rows[--r->n];
	free(row->pass);
	free(row->model);
	json_decref(row->metrics);
}

struct mc_row *mc_report_add(struct mc_report *r, int step, const char *pass, const char *model)
{
	struct mc_row *row;

	if (r->n == r->cap) {
		int cap = r->cap ? 2 * r->cap : 8;
		struct mc_row *rows = realloc(r->rows, cap * sizeof(*rows));

		if (!rows)
			return NULL;
		r->rows = rows;
		r->cap = cap;
	}
	row = &r->rows[r->n];
	memset(row, 0, sizeof(*row));
	row->step = step;
	row->pass = pass ? strdup(pass) : NULL;
	row->model = strdup(model);
	row->metrics = json_object();
	row->m.accuracy = -1;
	if ((pass && !row->pass) || !row->model || !row->metrics) {
		free(row->pass);
		free(row->model);
		json_decref(row->metrics);
		return NULL;
	}
	r->n++;
	return row;
}

static void hex(const uint8_t *d, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = digits[d[i] >> 4];
		out[2 * i + 1] = digits[d[i] & 15];
	}
	out[2 * n] = '\0';
}

void mc_sha256_buf(const void *buf, size_t len, char out[65])
{
	struct sha256_ctx c;
	uint8_t d[SHA256_DIGEST_SIZE];

	sha256_init(&c);
	sha256_update(&c, len, buf);
	sha256_digest(&c, sizeof(d), d);
	hex(d, sizeof(d), out);
}

int mc_sha256_file(const char *path, char out[65], struct mc_err *err)
{
	struct sha256_ctx c;
	uint8_t d[SHA256_DIGEST_SIZE];
	static uint8_t buf[1 << 16];
	FILE *f = fopen(path, "rb");
	size_t n;

	if (!f)
		return mc_err_set(err, MC_EIO, "%s: cannot read: %s", path, strerror(errno));
	sha256_init(&c);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		sha256_update(&c, n, buf);
	if (ferror(f)) {
		fclose(f);
		return mc_err_set(err, MC_EIO, "%s: read error", path);
	}
	fclose(f);
	sha256_digest(&c, sizeof(d), d);
	hex(d, sizeof(d), out);
	return 0;
}

static void human_bytes(int64_t b, char *buf, size_t n)
{
	if (b >= 1024 * 1024)
		snprintf(buf, n, "%.1f MiB", b / 1048576.0);
	else if (b >= 1024)
		snprintf(buf, n, "%.1f KiB", b / 1024.0);
	else
		snprintf(buf, n, "%lld B", (long long)b);
}

/*
 * When the output is zstd-coded, "bytes" is the coded file and a "raw
 * bytes" column beside it gives the safetensors bytes before coding.
 */
void mc_report_print(const struct mc_report *r, FILE *out)
{
	char bytes[32], raw[32], acc[16];
	int i, coded = 0;

	for (i = 0; i < r->n; i++)
		coded |= r->rows[i].coded;
	fprintf(out, "%-4s %-14s %-10s %10s %10s %11s", "step", "pass", "model", "params",
		"nonzeros", "bytes");
	if (coded)
		fprintf(out, " %11s", "raw bytes");
	fprintf(out, " %8s %10s %12s %8s\n", "test acc", "lat@1 ms", "lat@256 ms", "time s");
	for (i = 0; i < r->n; i++) {
		const struct mc_row *row = &r->rows[i];

		if (!strcmp(row->model, "-")) {
			/* a pass without a model of its own (cascade): nothing measured */
			fprintf(out, "%-4d %-14s %-10s %10s %10s %11s", row->step,
				row->pass ? row->pass : "(start)", "-", "-", "-", "-");
			if (coded)
				fprintf(out, " %11s", "-");
			fprintf(out, " %8s %10s %12s %8.1f\n", "-", "-", "-", row->seconds);
			continue;
		}
		human_bytes(row->m.bytes, bytes, sizeof(bytes));
		human_bytes(row->bytes_raw, raw, sizeof(raw));
		if (row->m.accuracy >= 0)
			snprintf(acc, sizeof(acc), "%.2f%%", 100 * row->m.accuracy);
		else
			snprintf(acc, sizeof(acc), "-");
		fprintf(out, "%-4d %-14s %-10s %10lld %10lld %11s", row->step,
			row->pass ? row->pass : "(start)", row->model, (long long)row->m.params,
			(long long)row->m.nonzeros, bytes);
		if (coded)
			fprintf(out, " %11s", raw);
		fprintf(out, " %8s %10.3f %12.3f %8.1f\n", acc, row->m.latency1_ms,
			row->m.latency256_ms, row->seconds);
	}
}

static json_t *file_entry(const char *path, struct mc_err *err)
{
	char digest[65];

	if (mc_sha256_file(path, digest, err))
		return NULL;
	return json_pack("{s:s, s:s}", "path", path, "sha256", digest);
}

/* A number of a list or map item of type t: an integer for ints. */
static json_t *number_json(enum mc_param_type t, double v)
{
	if (t == MC_PARAM_TINT)
		return json_integer((json_int_t)v);
	if (t == MC_PARAM_TBOOL)
		return json_boolean(v != 0);
	return json_real(v);
}

static json_t *string_json(const char *s)
{
	return s ? json_string(s) : json_null();
}

/*
 * The value of parameter d in conf as JSON of its own type: numbers,
 * booleans, strings (null when unset), arrays, objects. given: whether the
 * pipeline gave it (a row without a default that was left out is null).
 */
static json_t *param_json(const struct mc_param_def *d, const void *conf, int given)
{
	const char *field = (const char *)conf + d->offset;
	json_t *v;
	int i;

	if (!d->def && !given)
		return json_null(); /* an optional row, or a group's row, left out */
	switch (d->type) {
	case MC_PARAM_TINT:
		return json_integer(*(const int *)field);
	case MC_PARAM_TFLOAT:
		return json_real(*(const double *)field);
	case MC_PARAM_TBOOL:
		return json_boolean(*(const int *)field);
	case MC_PARAM_TENUM: {
		int k = 0, e = *(const int *)field;

		while (d->choices && d->choices[k])
			k++;
		return e >= 0 && e < k ? json_string(d->choices[e]) : json_null();
	}
	case MC_PARAM_TSTRING:
	case MC_PARAM_TPATH:
	case MC_PARAM_TMODEL:
	case MC_PARAM_TSPLIT:
		return string_json(*(char *const *)field);
	case MC_PARAM_TLIST: {
		const struct mc_list *l = (const struct mc_list *)field;

		v = json_array();
		for (i = 0; v && i < l->n; i++)
			if (json_array_append_new(v, l->num ? number_json(d->elem, l->num[i]) :
							      json_string(l->str[i])))
				goto fail;
		return v;
	}
	case MC_PARAM_TMAP: {
		const struct mc_map *m = (const struct mc_map *)field;
		int numeric = d->elem == MC_PARAM_TINT || d->elem == MC_PARAM_TFLOAT ||
			      d->elem == MC_PARAM_TBOOL;

		v = json_object();
		for (i = 0; v && i < m->n; i++)
			if (json_object_set_new(v, m->key[i], numeric ?
							       number_json(d->elem, m->num[i]) :
							       json_string(m->str[i])))
				goto fail;
		return v;
	}
	default:
		return json_null();
	}
fail:
	json_decref(v);
	return NULL;
}

static int was_given(const struct mc_pl_pass *pp, const struct mc_param_def *d)
{
	int i;

	for (i = 0; i < pp->n_keys; i++)
		if (pp->keys[i].def == d)
			return 1;
	return 0;
}

static json_t *manifest(const struct mc_pipeline *p, const char *out_path, struct mc_err *err)
{
	json_t *m, *inputs, *outputs, *passes, *sets, *e;
	char digest[65];
	int i;

	mc_sha256_buf(p->text, p->text_len, digest);
	m = json_object();
	inputs = json_array();
	outputs = json_array();
	passes = json_array();
	sets = json_array();
	if (!m || !inputs || !outputs || !passes || !sets)
		goto nomem;
	for (i = 0; i < p->n_sets; i++)
		json_array_append_new(sets, json_string(p->sets[i]));
	json_object_set_new(m, "pipeline", json_pack("{s:s, s:s, s:O}", "path", p->path, "sha256",
						     digest, "sets", sets));
	json_object_set_new(m, "mcomp_version", json_string(MC_VERSION));
	json_object_set_new(m, "seed", json_integer((json_int_t)p->seed));
	json_object_set_new(m, "threads", json_integer(omp_get_max_threads()));
	json_object_set_new(m, "ranks", json_integer(mc_dist_ranks()));
	json_object_set_new(m, "gemm_kernel", json_string(mc_sgemm_kernel()));
	for (i = 0; i < p->n_splits; i++) {
		const struct mc_pl_split *s = &p->splits[i];

		if (!s->data && !s->read_before)
			continue; /* never read, so not an input of this run */
		if (!(e = file_entry(s->images, err)) || json_array_append_new(inputs, e))
			goto fail;
		if (s->labels && /* NULL for an npz split: one file */
		    (!(e = file_entry(s->labels, err)) || json_array_append_new(inputs, e)))
			goto fail;
	}
	for (i = 0; i < p->n_models; i++) {
		if (!p->models[i].load)
			continue;
		if (!(e = file_entry(p->models[i].load, err)) || json_array_append_new(inputs, e))
			goto fail;
	}
	/* What this run put in place (or is about to, for the model: the report
	 * is committed after it), with the digests of the bytes written. */
	for (i = 0; i < p->n_outputs; i++) {
		const struct mc_pl_output *o = &p->outputs[i];

		int is_model = o->pass < 0 && out_path && !strcmp(o->path, out_path);

		/* Checkpoints are the run's own state, not its results: a resumed
		 * run's report lists what an uninterrupted one does. */
		if ((!(o->pass >= 0 && o->written) && !is_model) || mc_ck_is_checkpoint(o))
			continue;
		e = json_pack("{s:s, s:s}", "path", o->path, "sha256", o->sha256);
		if (!e || json_array_append_new(outputs, e))
			goto nomem;
	}
	for (i = 0; i < p->n_passes; i++) {
		const struct mc_pl_pass *pp = &p->passes[i];
		const struct mc_param_def *d;
		json_t *params = json_object();

		for (d = pp->pass->params; params && d && d->name; d++) {
			json_t *v = param_json(d, pp->conf, was_given(pp, d));

			if (!v || json_object_set_new(params, d->name, v)) {
				json_decref(params);
				goto nomem;
			}
		}
		/* The pass is its shared object: the digest says which build ran. */
		if (mc_sha256_file(pp->so_path, digest, err)) {
			json_decref(params);
			goto fail;
		}
		e = json_pack("{s:s, s:s, s:s, s:s, s:o}", "name", pp->pass->name, "version",
			      pp->pass->version, "file", pp->so_path, "sha256", digest, "params",
			      params ? params : json_null());
		if (!e || json_array_append_new(passes, e))
			goto nomem;
	}
	if ((e = mc_ck_manifest(p)))
		json_object_set_new(m, "resumed", e);
	json_object_set_new(m, "inputs", inputs);
	json_object_set_new(m, "outputs", outputs);
	json_object_set_new(m, "passes", passes);
	json_decref(sets);
	return m;
nomem:
	mc_err_set(err, MC_ENOMEM, "out of memory writing the report");
fail:
	json_decref(m);
	json_decref(inputs);
	json_decref(outputs);
	json_decref(passes);
	json_decref(sets);
	return NULL;
}

static json_t *row_json(const struct mc_row *row)
{
	/* bytes: the file as the output is written (a zstd frame when it ends in
	 * .zst); bytes_raw: the safetensors bytes before coding (docs/pipelines.md). */
	return json_pack("{s:i, s:s?, s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:{s:f, s:f}, s:f, s:O}",
			 "step", row->step, "pass", row->pass, "model", row->model, "params",
			 (json_int_t)row->m.params, "nonzeros", (json_int_t)row->m.nonzeros, "flops",
			 (json_int_t)row->m.flops, "bytes", (json_int_t)row->m.bytes, "bytes_raw",
			 (json_int_t)row->bytes_raw, "accuracy",
			 row->m.accuracy >= 0 ? json_real(row->m.accuracy) : json_null(),
			 "latency_ms", "batch1", row->m.latency1_ms, "batch256",
			 row->m.latency256_ms, "seconds", row->seconds, "metrics", row->metrics);
}

int mc_report_text(const struct mc_report *r, const struct mc_pipeline *p, const char *out_path,
		   char **text, struct mc_err *err)
{
	json_t *doc, *steps, *m;
	int i;

	m = manifest(p, out_path, err);
	if (!m)
		return err->code;
	steps = json_array();
	if (r->error)
		doc = json_pack("{s:s, s:s, s:{s:i, s:s?}, s:o, s:o}", "status", "failed", "error",
				r->error, "failed", "step", r->failed_step, "pass", r->failed_pass,
				"manifest", m, "steps", steps);
	else
		doc = json_pack("{s:s, s:o, s:o}", "status", "ok", "manifest", m, "steps", steps);
	if (!doc)
		return mc_err_set(err, MC_ENOMEM, "out of memory writing the report");
	for (i = 0; i < r->n; i++) {
		json_t *row = row_json(&r->rows[i]);

		if (!row || json_array_append_new(steps, row)) {
			json_decref(doc);
			return mc_err_set(err, MC_ENOMEM, "out of memory writing the report");
		}
	}
	*text = json_dumps(doc, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(doc);
	if (!*text)
		return mc_err_set(err, MC_ENOMEM, "out of memory writing the report");
	return 0;
}
