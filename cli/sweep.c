/* SPDX-License-Identifier: MIT */
/*
 * sweep.c - mcomp sweep FILE --set KEY=V1,V2,... [--set ...] [--json OUT]:
 * one pipeline run once per setting of the cartesian product of the --set
 * lists, in sequence, or spread over the ranks of an MPI job (cli/dist.h),
 * then one table of every run's figures with their mean, min and max, on
 * stdout and as JSON (docs/distributed.md).
 *
 * Run #i (1-based; the last --set varies fastest) writes its files with the
 * tag "sweepI" in their names (mc_pipeline_load_tagged), so runs on several
 * ranks never share a file. Under MPI, run i goes to rank (i - 1) % ranks;
 * rank 0 gathers the figures and alone prints and writes the JSON. The table
 * holds only figures that do not depend on timing, so it is the same for any
 * rank count and thread count (the timings are in the JSON).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <mcomp/mcomp.h>

#include "cli/cli.h"
#include "cli/dist.h"

#define MAX_RUNS 10000

/* One --set: a key and its values (one for a fixed override). */
struct axis {
	char *key;
	int n;
	char **vals;
};

struct sweep {
	const char *file;
	int n_axes, n_runs, quiet;
	struct axis *axes;
	struct mc_registry *reg;
};

/* Splits "V1,V2,..." at the commas outside brackets and quotes ([1,2] is one
 * value). The number of values, or -1 when out of memory. */
static int split_values(const char *text, char ***out)
{
	int n = 0, depth = 0;
	char quote = 0, **v;
	const char *s = text;

	v = calloc(strlen(text) + 2, sizeof(*v));
	if (!v)
		return -1;
	for (const char *c = text;; c++) {
		if (quote) {
			quote = *c == quote ? 0 : quote;
		} else if (*c == '"' || *c == '\'') {
			quote = *c;
		} else if (*c == '[' || *c == '{') {
			depth++;
		} else if ((*c == ']' || *c == '}') && depth > 0) {
			depth--;
		}
		if (!*c || (*c == ',' && !depth && !quote)) {
			if (!(v[n++] = strndup(s, (size_t)(c - s))))
				return -1;
			if (!*c)
				break;
			s = c + 1;
		}
	}
	*out = v;
	return n;
}

/* The overrides of run i (0-based) into sets[0..n_axes): "KEY=VALUE", malloc'd. */
static int run_sets(const struct sweep *sw, int i, char **sets)
{
	for (int a = sw->n_axes - 1; a >= 0; a--) {
		const struct axis *x = &sw->axes[a];
		size_t n = strlen(x->key) + strlen(x->vals[i % x->n]) + 2;

		sets[a] = malloc(n);
		if (!sets[a])
			return -1;
		snprintf(sets[a], n, "%s=%s", x->key, x->vals[i % x->n]);
		i /= x->n;
	}
	return 0;
}

static void free_sets(char **sets, int n)
{
	for (int i = 0; i < n; i++)
		free(sets[i]);
}

/* "seed=1 lr=0.1": the swept values of run i (the keys with several values). */
static void run_label(const struct sweep *sw, int i, char *buf, size_t len)
{
	size_t pos = 0;

	buf[0] = '\0';
	for (int a = 0; a < sw->n_axes; a++) {
		const struct axis *x = &sw->axes[a];
		int div = 1;

		for (int b = a + 1; b < sw->n_axes; b++)
			div *= sw->axes[b].n;
		if (x->n > 1 && pos < len)
			pos += snprintf(buf + pos, len - pos, "%s%s=%s", pos ? " " : "", x->key,
					x->vals[(i / div) % x->n]);
	}
	if (!buf[0])
		snprintf(buf, len, "(the one setting)");
}

/* The lines of a run for a person: "[#2 seed=2] train: ...", as mcomp run's. */
struct run_log {
	int quiet;
	char label[160];
};

static void print_run_log(void *arg, int level, const char *pass, const char *msg)
{
	const struct run_log *rl = arg;

	if (level == MC_LOG_INFO && rl->quiet)
		return;
	fprintf(stderr, "%s%s%s%s%s\n", level == MC_LOG_WARNING ? "mcomp: warning: " : "",
		rl->label, pass ? pass : "", pass ? ": " : "", msg);
}

/*
 * The figures of one report: the last step's measures (accuracy, params,
 * nonzeros, bytes, flops: not its latencies, which are timings) and every
 * step's pass metrics as "STEP:PASS.NAME". NULL with err set.
 */
static json_t *report_figures(const char *path, struct mc_err *err)
{
	static const char *const measures[] = { "accuracy", "params", "nonzeros", "bytes", "flops" };
	json_error_t je;
	json_t *doc, *steps, *last, *out;
	void *buf;
	size_t len, i;

	if (mc_read_file(path, (size_t)64 << 20, &buf, &len, err))
		return NULL;
	doc = json_loadb(buf, len, 0, &je);
	free(buf);
	steps = doc ? json_object_get(doc, "steps") : NULL;
	if (!json_is_array(steps) || json_array_size(steps) == 0) {
		json_decref(doc);
		mc_err_set(err, MC_ECORRUPT, "%s: not a report of mcomp run (%s)", path,
			   doc ? "no steps" : je.text);
		return NULL;
	}
	out = json_object();
	last = json_array_get(steps, json_array_size(steps) - 1);
	for (i = 0; i < sizeof(measures) / sizeof(measures[0]); i++) {
		json_t *v = json_object_get(last, measures[i]);

		if (json_is_number(v))
			json_object_set(out, measures[i], v);
	}
	for (i = 0; i < json_array_size(steps); i++) {
		json_t *st = json_array_get(steps, i), *m = json_object_get(st, "metrics"), *v;
		const char *pass = json_string_value(json_object_get(st, "pass")), *key;
		char name[256];

		if (!pass)
			continue; /* a model as loaded or built */
		json_object_foreach(m, key, v) {
			if (!json_is_number(v))
				continue;
			snprintf(name, sizeof(name), "%lld:%s.%s",
				 (long long)json_integer_value(json_object_get(st, "step")), pass, key);
			json_object_set(out, name, v);
		}
	}
	json_decref(doc);
	return out;
}

/*
 * Whether a figure is a timing (a pass metric such as teacher_latency1_ms,
 * throughput256, speedup256, quantize_gbps): kept in the JSON, left out of
 * the table, which is then the same bytes for any rank or thread count.
 */
static int is_timing(const char *name)
{
	static const char *const words[] = { "latency", "throughput", "speedup", "gbps",
					     "seconds" };

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strstr(name, words[i]))
			return 1;
	return 0;
}

/* %.10g, or "-" for a figure a run does not have. */
static void print_value(json_t *v, int width)
{
	char text[64];

	if (json_is_number(v))
		snprintf(text, sizeof(text), "%.10g", json_number_value(v));
	else
		snprintf(text, sizeof(text), "-");
	printf(" %*s", width, text);
}

/*
 * Rank 0: the table of runs[0..n) (objects with "metrics") on stdout, one
 * row per figure in the order of first appearance (timings left out), one
 * column per run and its mean, min and max; every figure's summary into
 * summary.
 */
static void print_table(const struct sweep *sw, json_t *runs, json_t *summary)
{
	json_t *names = json_array(), *run, *v;
	const char *key;
	size_t r, k, w = 6;
	char label[512];
	int width = 12;

	json_array_foreach(runs, r, run) {
		json_object_foreach(json_object_get(run, "metrics"), key, v) {
			int seen = 0;

			for (k = 0; k < json_array_size(names) && !seen; k++)
				seen = !strcmp(json_string_value(json_array_get(names, k)), key);
			if (!seen)
				json_array_append_new(names, json_string(key));
			if (!is_timing(key) && strlen(key) > w)
				w = strlen(key);
		}
	}
	printf("sweep of %s: %d runs\n", sw->file, sw->n_runs);
	for (int i = 0; i < sw->n_runs; i++) {
		run_label(sw, i, label, sizeof(label));
		printf("  #%-4d %s\n", i + 1, label);
	}
	printf("%-*s", (int)w, "figure");
	for (int i = 0; i < sw->n_runs; i++) {
		snprintf(label, sizeof(label), "#%d", i + 1);
		printf(" %*s", width, label);
	}
	printf(" %*s %*s %*s\n", width, "mean", width, "min", width, "max");
	for (k = 0; k < json_array_size(names); k++) {
		const char *name = json_string_value(json_array_get(names, k));
		double sum = 0, lo = 0, hi = 0;
		int n = 0;
		json_t *s;

		int shown = !is_timing(name);

		if (shown)
			printf("%-*s", (int)w, name);
		json_array_foreach(runs, r, run) {
			v = json_object_get(json_object_get(run, "metrics"), name);
			if (shown)
				print_value(v, width);
			if (!json_is_number(v))
				continue;
			double x = json_number_value(v);

			lo = n == 0 || x < lo ? x : lo;
			hi = n == 0 || x > hi ? x : hi;
			sum += x;
			n++;
		}
		s = json_pack("{s:f, s:f, s:f, s:i}", "mean", sum / n, "min", lo, "max", hi, "n", n);
		if (shown) {
			print_value(json_object_get(s, "mean"), width);
			print_value(json_object_get(s, "min"), width);
			print_value(json_object_get(s, "max"), width);
			printf("\n");
		}
		json_object_set_new(summary, name, s);
	}
	json_decref(names);
}

/* Loads run i (0-based; i < 0: the sweep's own JSON path with the tag "sweep"). */
static struct mc_pipeline *load_run(const struct sweep *sw, int i, struct mc_err *err)
{
	char **sets = calloc((size_t)sw->n_axes + 1, sizeof(*sets)), tag[32];
	struct mc_pipeline *p;

	if (!sets || run_sets(sw, i < 0 ? 0 : i, sets)) {
		if (sets)
			free_sets(sets, sw->n_axes);
		free(sets);
		mc_err_set(err, MC_ENOMEM, "out of memory");
		return NULL;
	}
	snprintf(tag, sizeof(tag), i < 0 ? "sweep" : "sweep%d", i + 1);
	p = mc_pipeline_load_tagged(sw->file, (const char *const *)sets, sw->n_axes, tag, sw->reg,
				    err);
	free_sets(sets, sw->n_axes);
	free(sets);
	return p;
}

/* Runs this rank's share; their results appended to mine. 0, or the exit
 * status of the first that failed (after its message). */
static int run_mine(const struct sweep *sw, json_t *mine)
{
	for (int i = dist_rank(); i < sw->n_runs; i += dist_size()) {
		struct mc_err err = { 0 };
		struct run_log rl = { .quiet = sw->quiet };
		struct mc_pipeline *p;
		char label[128];
		json_t *fig = NULL;
		double t0 = mc_now();
		int r;

		run_label(sw, i, label, sizeof(label));
		if (dist_size() > 1)
			snprintf(rl.label, sizeof(rl.label), "[rank %d #%d %s] ", dist_rank(), i + 1,
				 label);
		else
			snprintf(rl.label, sizeof(rl.label), "[#%d %s] ", i + 1, label);
		p = load_run(sw, i, &err);
		r = p ? 0 : err.code;
		if (p) {
			mc_pipeline_set_log(p, print_run_log, &rl);
			r = mc_pipeline_run(p, NULL, &err);
			if (!r)
				fig = report_figures(mc_pipeline_report_path(p), &err);
			r = r ? r : fig ? 0 : err.code;
		}
		if (r && mc_interrupted()) {
			/* Ctrl-C, or mpirun ending the job after another rank failed */
			fprintf(stderr, "mcomp: sweep: rank %d of %d: run #%d (%s) stopped by signal "
				"%d at a safe point; its files are as they were\n",
				dist_rank(), dist_size(), i + 1, label, mc_interrupted());
			mc_pipeline_free(p);
			return 128 + mc_interrupted();
		}
		if (r) {
			fprintf(stderr, "mcomp: sweep: rank %d of %d: run #%d (%s) failed: %s\n",
				dist_rank(), dist_size(), i + 1, label, err.msg);
			mc_pipeline_free(p);
			return mc_exit_status(r) ? mc_exit_status(r) : 1;
		}
		json_array_append_new(mine, json_pack("{s:i, s:i, s:f, s:s, s:o}", "run", i + 1,
						      "rank", dist_rank(), "seconds",
						      mc_now() - t0, "report",
						      mc_pipeline_report_path(p), "metrics", fig));
		mc_pipeline_free(p);
	}
	return 0;
}

/* Rank 0: the runs gathered from every rank, in run order, into runs. */
static int collect(const struct sweep *sw, char **texts, json_t *runs, struct mc_err *err)
{
	json_t **all = calloc((size_t)sw->n_runs, sizeof(*all));

	if (!all)
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	for (int r = 0; r < dist_size(); r++) {
		json_error_t je;
		json_t *arr = json_loads(texts[r], 0, &je), *run;
		size_t k;

		if (!json_is_array(arr)) {
			json_decref(arr);
			for (int j = 0; j < sw->n_runs; j++)
				json_decref(all[j]);
			free(all);
			return mc_err_set(err, MC_ERUN, "sweep: rank %d sent no results (%s)", r,
					  je.text);
		}
		json_array_foreach(arr, k, run) {
			int i = (int)json_integer_value(json_object_get(run, "run")) - 1;

			if (i >= 0 && i < sw->n_runs && !all[i])
				all[i] = json_incref(run);
		}
		json_decref(arr);
	}
	for (int i = 0; i < sw->n_runs; i++) {
		if (!all[i]) {
			for (int j = i; j < sw->n_runs; j++)
				json_decref(all[j]);
			free(all);
			return mc_err_set(err, MC_ERUN, "sweep: run #%d came back from no rank", i + 1);
		}
		json_array_append_new(runs, all[i]);
	}
	free(all);
	return 0;
}

/* The settings of run i as {"KEY": "VALUE", ...} (every --set). */
static json_t *setting_json(const struct sweep *sw, int i)
{
	json_t *o = json_object();

	for (int a = sw->n_axes - 1; a >= 0; a--) {
		const struct axis *x = &sw->axes[a];

		json_object_set_new(o, x->key, json_string(x->vals[i % x->n]));
		i /= x->n;
	}
	return o;
}

static int sweep_main(struct sweep *sw, const char *json_path)
{
	struct mc_err err = { 0 };
	struct mc_pipeline *p;
	json_t *mine, *runs = NULL, *summary = NULL, *doc = NULL;
	char **texts = NULL, *jpath = NULL, *text;
	double t0 = mc_now();
	int ret = 0, ok;

	/* Every setting is checked (on every rank, alike) before any runs. */
	for (int i = 0; i < sw->n_runs && !ret; i++) {
		char label[128];

		p = load_run(sw, i, &err);
		if (p && !mc_pipeline_report_path(p))
			mc_err_set(&err, MC_EINVAL,
				   "%s: the pipeline writes no report; add report: PATH (the sweep "
				   "reads each run's figures from its report)",
				   sw->file);
		if (!p || err.code) {
			run_label(sw, i, label, sizeof(label));
			if (dist_rank() == 0)
				fprintf(stderr, "mcomp: sweep: run #%d (%s): %s\n", i + 1, label,
					err.msg);
			ret = mc_exit_status(err.code);
		}
		if (p && i == 0 && !json_path) {
			struct mc_pipeline *q = load_run(sw, -1, &err);

			jpath = q && mc_pipeline_report_path(q) ? strdup(mc_pipeline_report_path(q))
								: NULL;
			mc_pipeline_free(q);
		}
		mc_pipeline_free(p);
	}
	if (ret) {
		free(jpath);
		return ret;
	}
	if (!json_path)
		json_path = jpath;
	mine = json_array();
	ret = run_mine(sw, mine);
	if (ret) {
		/* the other ranks would wait for this one's results: end the job */
		json_decref(mine);
		free(jpath);
		return dist_abort(ret);
	}
	text = json_dumps(mine, JSON_COMPACT);
	json_decref(mine);
	ok = text && !dist_gather_text(text, &texts, &err);
	free(text);
	if (!ok) {
		fprintf(stderr, "mcomp: sweep: rank %d: %s\n", dist_rank(), err.msg);
		free(jpath);
		return dist_abort(1);
	}
	if (dist_rank() != 0) {
		free(jpath);
		return 0;
	}
	runs = json_array();
	summary = json_object();
	ret = collect(sw, texts, runs, &err);
	for (int r = 0; r < dist_size(); r++)
		free(texts[r]);
	free(texts);
	if (ret) {
		ret = fail(&err);
		goto out;
	}
	print_table(sw, runs, summary);
	fflush(stdout);
	{
		json_t *axes = json_array(), *run;
		size_t i;

		for (int a = 0; a < sw->n_axes; a++) {
			json_t *vals = json_array();

			for (int v = 0; v < sw->axes[a].n; v++)
				json_array_append_new(vals, json_string(sw->axes[a].vals[v]));
			json_array_append_new(axes, json_pack("{s:s, s:o}", "key", sw->axes[a].key,
							      "values", vals));
		}
		json_array_foreach(runs, i, run)
			json_object_set_new(run, "setting", setting_json(sw, (int)i));
		doc = json_pack("{s:s, s:o, s:i, s:f, s:O, s:O}", "pipeline", sw->file, "sets", axes,
				"ranks", dist_size(), "seconds", mc_now() - t0, "runs", runs,
				"summary", summary);
	}
	text = doc ? json_dumps(doc, JSON_INDENT(2) | JSON_REAL_PRECISION(17)) : NULL;
	if (!text) {
		ret = fail(&(struct mc_err){ .code = MC_ENOMEM, .msg = "out of memory" });
		goto out;
	}
	ret = mc_write_file_atomic(json_path, text, strlen(text), &err);
	free(text);
	if (ret) {
		ret = fail(&err);
		goto out;
	}
	fprintf(stderr, "sweep: %d runs on %d rank%s in %.1f s; figures in %s\n", sw->n_runs,
		dist_size(), dist_size() > 1 ? "s" : "", mc_now() - t0, json_path);
out:
	json_decref(doc);
	json_decref(runs);
	json_decref(summary);
	free(jpath);
	return ret;
}

int cmd_sweep(int argc, char **argv)
{
	struct sweep sw = { 0 };
	struct mc_err err = { 0 };
	const char *json_path = NULL, *env = getenv("MCOMP_QUIET");
	long n_runs = 1;
	int ret;

	sw.quiet = env && *env && strcmp(env, "0");
	sw.axes = calloc((size_t)argc + 1, sizeof(*sw.axes));
	if (!sw.axes)
		return 1;
	ret = 0;
	for (int i = 0; i < argc && !ret; i++) {
		const char *set = NULL, *eq;

		if (!strcmp(argv[i], "--set") && i + 1 < argc)
			set = argv[++i];
		else if (!strncmp(argv[i], "--set=", 6))
			set = argv[i] + 6;
		else if (!strcmp(argv[i], "--json") && i + 1 < argc)
			json_path = argv[++i];
		else if (!strcmp(argv[i], "--quiet") || !strcmp(argv[i], "-q"))
			sw.quiet = 1;
		else if (argv[i][0] == '-' && argv[i][1])
			ret = bad_usage("sweep: unknown or incomplete option '%s'", argv[i]);
		else if (sw.file)
			ret = bad_usage("sweep: one pipeline file at a time (got a second: '%s')",
					argv[i]);
		else
			sw.file = argv[i];
		if (!set || ret)
			continue;
		eq = strchr(set, '=');
		if (!eq || eq == set) {
			ret = bad_usage("sweep: --set needs KEY=V1,V2,..., not '%s'", set);
			continue;
		}
		struct axis *x = &sw.axes[sw.n_axes++];

		x->key = strndup(set, (size_t)(eq - set));
		x->n = split_values(eq + 1, &x->vals);
		if (!x->key || x->n < 0) {
			fprintf(stderr, "mcomp: out of memory\n");
			ret = 1;
			break;
		}
		n_runs *= x->n;
		if (n_runs > MAX_RUNS)
			ret = bad_usage("sweep: more than %d runs; sweep fewer values", MAX_RUNS);
	}
	if (!ret && !sw.file)
		ret = bad_usage("sweep needs a pipeline file and --set KEY=V1,V2,..., e.g. mcomp "
				"sweep pipelines/quickstart.yaml --set seed=1,2,3");
	sw.n_runs = (int)n_runs;
	if (!ret) {
		sw.reg = mc_registry_open(&err);
		ret = sw.reg ? 0 : fail(&err);
	}
	if (!ret) {
		catch_signals();
		ret = sweep_main(&sw, json_path);
	}
	mc_registry_free(sw.reg);
	for (int a = 0; a < sw.n_axes; a++) {
		for (int v = 0; v < sw.axes[a].n; v++)
			free(sw.axes[a].vals[v]);
		free(sw.axes[a].vals);
		free(sw.axes[a].key);
	}
	free(sw.axes);
	return ret;
}
