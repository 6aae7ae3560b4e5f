/* SPDX-License-Identifier: MIT */
/*
 * check_pipeline - loading and validating pipelines: every malformed
 * fixture in tests/pipelines/bad fails at its stated place with its stated
 * message, the good ones validate (one also runs), overrides edit the tree,
 * alias bombs are refused fast, relative paths resolve against the file.
 *
 * The fixtures are copied into a scratch folder beside a tiny IDX data set
 * (data/tiny-*) and model files (models/) that this program writes, so
 * that relative paths in them resolve and nothing is read from the source
 * tree but YAML. Passes come from MCOMP_PASS_PATH (the build's passes).
 */
#define _GNU_SOURCE /* nftw, scandir */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <mcomp/mcomp.h>

#include "host/pipeline_int.h"

#define TINY_N 32

static char scratch[4096];
static struct mc_registry *reg;

/* snprintf into a char array, failing the test on truncation. */
#define PATHF(buf, ...) \
	ck_assert_int_lt(snprintf(buf, sizeof(buf), __VA_ARGS__), (int)sizeof(buf))

static const char *srcdir(void)
{
	const char *s = getenv("MCOMP_SRCDIR");

	return s && *s ? s : ".";
}

static void write_file(const char *path, const void *buf, size_t n)
{
	FILE *fp = fopen(path, "wb");

	ck_assert_msg(fp != NULL, "cannot write %s: %s", path, strerror(errno));
	ck_assert_uint_eq(fwrite(buf, 1, n, fp), n);
	ck_assert_int_eq(fclose(fp), 0);
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* TINY_N 28x28 images (a bright square whose place is the label) and labels. */
static void write_tiny_idx(const char *dir)
{
	static unsigned char img[16 + TINY_N * 784], lab[8 + TINY_N];
	char path[4200];

	put_be32(img, 0x803);
	put_be32(img + 4, TINY_N);
	put_be32(img + 8, 28);
	put_be32(img + 12, 28);
	put_be32(lab, 0x801);
	put_be32(lab + 4, TINY_N);
	for (int i = 0; i < TINY_N; i++) {
		int c = i % 10;

		lab[8 + i] = (unsigned char)c;
		for (int y = 0; y < 4; y++)
			for (int x = 0; x < 4; x++)
				img[16 + i * 784 + (2 + y) * 28 + 2 * c + x] = 255;
	}
	PATHF(path, "%s/tiny-images-idx3-ubyte", dir);
	write_file(path, img, sizeof(img));
	PATHF(path, "%s/tiny-labels-idx1-ubyte", dir);
	write_file(path, lab, sizeof(lab));
}

static void write_models(const char *dir)
{
	const char *arch = "{\"format\": 1, \"input\": [784], \"nodes\": ["
			   "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"input\"], "
			   "\"attrs\": {\"out\": 10}}]}";
	struct mc_err err = { 0 };
	struct mc_model *m = mc_model_from_arch(arch, "test", &err);
	char path[4200];

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 1);
	PATHF(path, "%s/tiny.safetensors", dir);
	ck_assert_msg(mc_model_save(m, path, &err) == 0, "%s", err.msg);
	mc_model_free(m);
	PATHF(path, "%s/corrupt.safetensors", dir);
	write_file(path, "\xff\xff\xff\xff\xff\xff\xff\x7f{", 9);
}

static void copy_file(const char *from, const char *to)
{
	FILE *in = fopen(from, "rb");
	char buf[65536];
	size_t n;
	FILE *out;

	ck_assert_msg(in != NULL, "cannot read %s", from);
	out = fopen(to, "wb");
	ck_assert_msg(out != NULL, "cannot write %s", to);
	while ((n = fread(buf, 1, sizeof(buf), in)) > 0)
		ck_assert_uint_eq(fwrite(buf, 1, n, out), n);
	fclose(in);
	ck_assert_int_eq(fclose(out), 0);
}

/* Copies SRCDIR/tests/pipelines/sub/ *.yaml into scratch/sub; returns the count. */
static int copy_fixtures(const char *sub)
{
	char from[4200], to[4200];
	struct dirent *e;
	DIR *d;
	int n = 0;

	PATHF(from, "%s/tests/pipelines/%s", srcdir(), sub);
	PATHF(to, "%s/%s", scratch, sub);
	ck_assert(mkdir(to, 0777) == 0 || errno == EEXIST);
	d = opendir(from);
	ck_assert_msg(d != NULL, "cannot list %s", from);
	while ((e = readdir(d))) {
		size_t l = strlen(e->d_name);
		char a[8400], b[8400];

		if (l < 6 || strcmp(e->d_name + l - 5, ".yaml"))
			continue;
		PATHF(a, "%s/%s", from, e->d_name);
		PATHF(b, "%s/%s", to, e->d_name);
		copy_file(a, b);
		n++;
	}
	closedir(d);
	return n;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* The build's passes and the test fixture passes (fxparams), once. */
static void pass_path_with_fixtures(void)
{
	const char *pp = getenv("MCOMP_PASS_PATH"), *fx = getenv("MCOMP_FIXTURES");
	char path[8400];

	if (!fx || !*fx || (pp && strstr(pp, fx)))
		return;
	PATHF(path, "%s:%s", pp ? pp : "", fx);
	setenv("MCOMP_PASS_PATH", path, 1);
}

static void setup(void)
{
	struct mc_err err = { 0 };
	char dir[4200];

	PATHF(scratch, "%s", "tests/tmp-pipeline-XXXXXX");
	if (access("tests", W_OK))
		PATHF(scratch, "%s", "/tmp/mcomp-pipeline-XXXXXX");
	ck_assert(mkdtemp(scratch) != NULL);
	PATHF(dir, "%s/data", scratch);
	ck_assert_int_eq(mkdir(dir, 0777), 0);
	write_tiny_idx(dir);
	PATHF(dir, "%s/models", scratch);
	ck_assert_int_eq(mkdir(dir, 0777), 0);
	write_models(dir);
	pass_path_with_fixtures();
	reg = mc_registry_open(&err);
	ck_assert_msg(reg != NULL, "%s", err.msg);
	ck_assert_msg(mc_registry_find(reg, "train", NULL) && mc_registry_find(reg, "eval", NULL),
		      "the train and eval passes are not on MCOMP_PASS_PATH (%s)", mc_pass_path());
	ck_assert_msg(mc_registry_find(reg, "fxparams", NULL),
		      "the fixture pass fxparams is not on MCOMP_PASS_PATH (%s); run through "
		      "make check",
		      mc_pass_path());
}

static void teardown(void)
{
	mc_registry_free(reg);
	reg = NULL;
	nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static struct mc_pipeline *load(const char *rel, const char *const *sets, int n,
				struct mc_err *err)
{
	char path[4200];

	PATHF(path, "%s/%s", scratch, rel);
	memset(err, 0, sizeof(*err));
	return mc_pipeline_load(path, sets, n, reg, err);
}

/* Nonzero when some line of msg starts with prefix and contains needle. */
static int has_line(const char *msg, const char *prefix, const char *needle)
{
	const char *line = msg;

	while (line && *line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char buf[MC_ERR_MAX];

		memcpy(buf, line, len);
		buf[len] = '\0';
		if (!strncmp(buf, prefix, strlen(prefix)) && strstr(buf, needle))
			return 1;
		line = nl ? nl + 1 : NULL;
	}
	return 0;
}

static const struct mc_pl_pass *pass_at(const struct mc_pipeline *p, int i)
{
	ck_assert_int_lt(i, p->n_passes);
	return &p->passes[i];
}

/* The int parameter key of pass i. */
static int conf_int(const struct mc_pipeline *p, int i, const char *key)
{
	const struct mc_pl_pass *pp = pass_at(p, i);
	const struct mc_param_def *d = mc_param_find(pp->pass->params, key);

	ck_assert_msg(d != NULL, "no parameter %s", key);
	return *(const int *)((const char *)pp->conf + d->offset);
}

static const char *conf_str(const struct mc_pipeline *p, int i, const char *key)
{
	const struct mc_pl_pass *pp = pass_at(p, i);
	const struct mc_param_def *d = mc_param_find(pp->pass->params, key);

	ck_assert_msg(d != NULL, "no parameter %s", key);
	return *(char *const *)((const char *)pp->conf + d->offset);
}

/* ---------------------------------------------------------------- bad fixtures */

START_TEST(bad_fixtures)
{
	char dir[4200];
	struct dirent **names;
	int n, checked = 0, failed = 0;

	ck_assert_int_ge(copy_fixtures("bad"), 20);
	PATHF(dir, "%s/bad", scratch);
	n = scandir(dir, &names, NULL, alphasort);
	ck_assert_int_gt(n, 0);
	for (int i = 0; i < n; i++) {
		char rel[600], path[8400], first[1024], prefix[9000];
		const char *name = names[i]->d_name, *msg;
		struct mc_err err;
		struct mc_pipeline *p;
		int line, col, off = 0;
		FILE *fp;

		if (strlen(name) < 6 || strcmp(name + strlen(name) - 5, ".yaml")) {
			free(names[i]);
			continue;
		}
		PATHF(rel, "bad/%s", name);
		PATHF(path, "%s/%s", scratch, rel);
		fp = fopen(path, "r");
		ck_assert(fp != NULL);
		ck_assert(fgets(first, sizeof(first), fp) != NULL);
		fclose(fp);
		first[strcspn(first, "\n")] = '\0';
		ck_assert_msg(sscanf(first, "# expect: %d:%d: %n", &line, &col, &off) == 2 && off,
			      "%s: the first line must read '# expect: LINE:COL: MESSAGE'", name);
		p = load(rel, NULL, 0, &err);
		ck_assert_msg(p == NULL, "%s: validated but should fail", name);
		ck_assert_msg(err.code == MC_EINVAL, "%s: code %d: %s", name, err.code, err.msg);
		msg = first + off;
		PATHF(prefix, "%s:%d:%d: ", path, line, col);
		if (!has_line(err.msg, prefix, msg)) {
			fprintf(stderr, "%s: expected '%s%s' among:\n%s\n", name, prefix, msg,
				err.msg);
			failed++;
		}
		ck_assert_msg(err.msg[strlen(err.msg) - 1] != '\n', "%s: trailing newline", name);
		checked++;
		free(names[i]);
	}
	free(names);
	ck_assert_int_ge(checked, 20);
	ck_assert_msg(!failed, "%d of %d bad pipelines failed otherwise than expected", failed,
		      checked);
}
END_TEST

/* ---------------------------------------------------------------- good fixtures */

START_TEST(good_fixtures_validate)
{
	const char *good[] = { "basic.yaml", "minimal.yaml", "aliases.yaml", "block-style.yaml",
			       "resnet.yaml", "params.yaml", "blocks.yaml" };

	copy_fixtures("good");
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		char rel[300];
		struct mc_err err;
		struct mc_pipeline *p;

		PATHF(rel, "good/%s", good[i]);
		p = load(rel, NULL, 0, &err);
		ck_assert_msg(p != NULL, "%s: %s", good[i], err.msg);
		ck_assert_ptr_nonnull(p->text);
		ck_assert_uint_gt(p->text_len, 0);
		ck_assert_int_eq(p->n_sets, 0);
		mc_pipeline_free(p);
	}
}
END_TEST

START_TEST(basic_is_filled_in)
{
	char want[8400];
	struct mc_err err;
	struct mc_pipeline *p;
	const struct mc_pl_model *m;
	char *arch;

	copy_fixtures("good");
	p = load("good/basic.yaml", NULL, 0, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert_uint_eq(p->seed, 7);
	PATHF(want, "%s/good", scratch);
	ck_assert_str_eq(p->dir, want);
	/* Splits: idx prefixes expanded, relative paths resolved against the file. */
	ck_assert_int_eq(p->n_splits, 3);
	ck_assert_str_eq(p->splits[0].name, "train");
	PATHF(want, "%s/good/../data/tiny-images-idx3-ubyte", scratch);
	ck_assert_str_eq(p->splits[0].images, want);
	PATHF(want, "%s/good/../data/tiny-labels-idx1-ubyte", scratch);
	ck_assert_str_eq(p->splits[0].labels, want);
	ck_assert_int_eq(p->splits[0].first, 0);
	ck_assert_int_eq(p->splits[0].count, -1);
	ck_assert_str_eq(p->splits[1].name, "val");
	ck_assert_int_eq(p->splits[1].first, 16);
	ck_assert_int_eq(p->splits[1].count, 8);
	ck_assert_int_eq(p->splits[1].loc.line, 6);
	ck_assert_int_eq(p->splits[1].loc.col, 3);
	ck_assert_ptr_null(p->splits[1].data);
	ck_assert_str_eq(p->splits[2].labels, want);
	/* The model: built from the layer list with automatic names. */
	ck_assert_int_eq(p->n_models, 1);
	m = &p->models[0];
	ck_assert_str_eq(m->name, "mlp");
	ck_assert_ptr_null(m->load);
	ck_assert_ptr_nonnull(m->model);
	ck_assert_int_eq(mc_model_n_nodes(m->model), 4);
	ck_assert_str_eq(mc_model_node(m->model, 0)->name, "flatten1");
	ck_assert_str_eq(mc_model_node(m->model, 1)->name, "linear1");
	ck_assert_str_eq(mc_model_node(m->model, 2)->name, "relu1");
	ck_assert_str_eq(mc_model_node(m->model, 3)->name, "linear2");
	ck_assert_int_eq(mc_model_n_classes(m->model), 10);
	arch = mc_model_arch(m->model);
	ck_assert_ptr_nonnull(strstr(arch, "\"name\":\"linear2\""));
	ck_assert_ptr_nonnull(strstr(arch, "\"inputs\":[\"relu1\"]"));
	ck_assert_ptr_nonnull(strstr(arch, "\"input\":[1,28,28]"));
	/* Validated as shapes only: no weights allocated until the run starts
	 * (check_model_io's materialize test: then drawn from the seed as
	 * building it by hand would). */
	free(arch);
	ck_assert(mc_model_is_arch(m->model));
	ck_assert_ptr_null(mc_model_param(m->model, "linear1.weight")->data);
	/* Passes: parameters set, defaults kept, keys recorded with their places. */
	ck_assert_int_eq(p->n_passes, 2);
	ck_assert_str_eq(p->passes[0].pass->name, "train");
	ck_assert_ptr_nonnull(p->passes[0].so_path);
	ck_assert_int_eq(conf_int(p, 0, "epochs"), 1);
	ck_assert_int_eq(conf_int(p, 0, "batch_size"), 8);
	ck_assert_int_eq(conf_int(p, 0, "optimizer"), 1);
	ck_assert_str_eq(conf_str(p, 0, "model"), "mlp");
	ck_assert_str_eq(conf_str(p, 0, "data"), "train"); /* the default */
	ck_assert_int_eq(p->passes[0].n_keys, 5);
	ck_assert_str_eq(p->passes[0].keys[1].def->name, "epochs");
	ck_assert_int_eq(p->passes[0].keys[1].loc.line, 14);
	ck_assert_int_eq(p->passes[0].keys[1].loc.col, 25);
	ck_assert_str_eq(p->passes[0].keys[1].loc.file, p->path);
	ck_assert_int_eq(p->passes[0].loc.line, 14);
	ck_assert_int_eq(p->passes[0].loc.col, 5);
	ck_assert_str_eq(conf_str(p, 1, "data"), "val");
	ck_assert_int_eq(conf_int(p, 1, "batch_size"), 256);
	ck_assert_int_eq(p->passes[1].n_keys, 2);
	/* Output and report resolved; their folder need not exist yet. */
	ck_assert_str_eq(p->output_model, "mlp");
	PATHF(want, "%s/good/out/mlp.safetensors", scratch);
	ck_assert_str_eq(p->output_path, want);
	PATHF(want, "%s/good/out/report.json", scratch);
	ck_assert_str_eq(p->report_path, want);
	mc_pipeline_free(p);
}
END_TEST

START_TEST(aliases_and_load)
{
	struct mc_err err;
	struct mc_pipeline *p;

	copy_fixtures("good");
	p = load("good/aliases.yaml", NULL, 0, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert_uint_eq(p->seed, UINT64_MAX);
	ck_assert_int_eq(p->n_models, 2);
	ck_assert_ptr_nonnull(p->models[0].load);
	ck_assert_ptr_nonnull(p->models[0].model);
	ck_assert_ptr_nonnull(mc_model_param(p->models[0].model, "fc.weight"));
	ck_assert_ptr_nonnull(mc_model_param(p->models[1].model, "fc1.weight"));
	ck_assert_ptr_nonnull(mc_model_param(p->models[1].model, "head.bias"));
	ck_assert_str_eq(mc_model_node(p->models[1].model, 1)->name, "relu1");
	/* The aliased parameters apply to both train passes. */
	ck_assert_int_eq(p->n_passes, 4);
	ck_assert_int_eq(conf_int(p, 0, "batch_size"), 4);
	ck_assert_int_eq(conf_int(p, 1, "batch_size"), 4);
	ck_assert_int_eq(conf_int(p, 1, "optimizer"), 0);
	ck_assert_int_eq(conf_int(p, 3, "batch_size"), 2);
	ck_assert_str_eq(p->output_model, "student");
	mc_pipeline_free(p);
}
END_TEST

START_TEST(good_pipeline_runs)
{
	char out[8400];
	struct mc_err err;
	struct mc_pipeline *p;
	struct stat st;

	copy_fixtures("good");
	p = load("good/basic.yaml", NULL, 0, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert_msg(mc_pipeline_run(p, NULL, &err) == 0, "%s", err.msg);
	PATHF(out, "%s/good/out/mlp.safetensors", scratch);
	ck_assert_int_eq(stat(out, &st), 0);
	PATHF(out, "%s/good/out/report.json", scratch);
	ck_assert_int_eq(stat(out, &st), 0);
	mc_pipeline_free(p);
}
END_TEST

/* ---------------------------------------------------------------- parameter forms */

static const void *conf_field(const struct mc_pipeline *p, int i, const char *key)
{
	const struct mc_pl_pass *pp = pass_at(p, i);
	const struct mc_param_def *d = mc_param_find(pp->pass->params, key);

	ck_assert_msg(d != NULL, "no parameter %s", key);
	return (const char *)pp->conf + d->offset;
}

static int given(const struct mc_pipeline *p, int i, const char *key)
{
	const struct mc_pl_pass *pp = pass_at(p, i);

	for (int k = 0; k < pp->n_keys; k++)
		if (!strcmp(pp->keys[k].def->name, key))
			return 1;
	return 0;
}

/* Optional rows, one-of groups, open bounds and maps, as given. */
START_TEST(parameter_forms_bind)
{
	struct mc_err err;
	struct mc_pipeline *p;
	const struct mc_map *bits, *gran;

	copy_fixtures("good");
	p = load("good/params.yaml", NULL, 0, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert(*(const double *)conf_field(p, 0, "energy") == 1.0);
	ck_assert_int_eq(*(const int *)conf_field(p, 0, "rank"), 0);
	ck_assert(given(p, 0, "energy") && !given(p, 0, "rank"));
	ck_assert_int_eq(*(const int *)conf_field(p, 0, "first"), 0);
	ck_assert_int_eq(*(const int *)conf_field(p, 0, "last"), 3);
	ck_assert_str_eq(*(char *const *)conf_field(p, 0, "note"), "hello");
	bits = conf_field(p, 0, "bits");
	ck_assert_int_eq(bits->n, 2);
	ck_assert_str_eq(bits->key[0], "linear1");
	ck_assert_str_eq(bits->key[1], "linear*");
	ck_assert(bits->num[0] == 4 && bits->num[1] == 8);
	/* The older spelling replaces the default {linear1: per-tensor}. */
	gran = conf_field(p, 0, "gran");
	ck_assert_int_eq(gran->n, 1);
	ck_assert_str_eq(gran->key[0], "linear2");
	ck_assert_str_eq(gran->str[0], "per-channel");
	ck_assert(gran->num[0] == 1);
	mc_pipeline_free(p);
}
END_TEST

/* --set reaches into a map, replaces one, and is held to the groups. */
START_TEST(parameter_forms_and_overrides)
{
	const char *sets[] = { "passes.fxparams.bits.linear1=2",
			       "passes.fxparams.gran={linear1: per-channel, l2: per-tensor}",
			       "passes.fxparams.bits.fc9=3", "passes.fxparams.first=7" };
	const char *both[] = { "passes.fxparams.rank=3" };
	struct mc_err err;
	struct mc_pipeline *p;
	const struct mc_map *m;

	copy_fixtures("good");
	p = load("good/params.yaml", sets, 4, &err);
	ck_assert_ptr_null(p);
	ck_assert_msg(has_line(err.msg, "--set passes.fxparams.first: ",
			       "pass 'fxparams': give either 'last' or 'first', not both"),
		      "%s", err.msg);
	p = load("good/params.yaml", sets, 3, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	m = conf_field(p, 0, "bits");
	ck_assert_int_eq(m->n, 3);
	ck_assert(m->num[0] == 2 && m->num[1] == 8 && m->num[2] == 3);
	ck_assert_str_eq(m->key[2], "fc9");
	m = conf_field(p, 0, "gran");
	ck_assert_int_eq(m->n, 2);
	ck_assert_str_eq(m->key[1], "l2");
	ck_assert(m->num[0] == 1 && m->num[1] == 0);
	mc_pipeline_free(p);
	p = load("good/params.yaml", both, 1, &err);
	ck_assert_ptr_null(p);
	ck_assert_msg(has_line(err.msg, "--set passes.fxparams.rank: ",
			       "pass 'fxparams': give either 'energy' or 'rank', not both"),
		      "%s", err.msg);
}
END_TEST

/* ---------------------------------------------------------------- reports */

struct log_lines {
	int n;
	char text[4096];
};

static void collect_log(void *arg, int level, const char *pass, const char *msg)
{
	struct log_lines *l = arg;
	size_t at = strlen(l->text);

	snprintf(l->text + at, sizeof(l->text) - at, "%d %s: %s\n", level, pass ? pass : "-",
		 msg);
	l->n++;
}

static json_t *read_json(const char *rel)
{
	char path[8400];
	json_error_t jerr;
	json_t *j;

	PATHF(path, "%s/%s", scratch, rel);
	j = json_load_file(path, 0, &jerr);
	ck_assert_msg(j != NULL, "%s: %s", path, jerr.text);
	return j;
}

/* The lowercase hex SHA-256 of a file, by sha256sum. */
static void sha256sum(const char *path, char hex[65])
{
	char cmd[8400];
	FILE *fp;

	PATHF(cmd, "sha256sum '%s'", path);
	fp = popen(cmd, "r");
	ck_assert_ptr_nonnull(fp);
	ck_assert_int_eq(fscanf(fp, "%64s", hex), 1);
	pclose(fp);
}

/*
 * The report keeps each parameter's type, stores a NaN figure as null (with
 * a warning to the host's log), and records the digest of each pass's .so.
 */
START_TEST(report_is_typed)
{
	struct log_lines log = { 0 };
	struct mc_err err;
	struct mc_pipeline *p;
	json_t *doc, *pass, *params, *metrics, *v;
	char hex[65];

	copy_fixtures("good");
	p = load("good/params.yaml", NULL, 0, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	mc_pipeline_set_log(p, collect_log, &log);
	ck_assert_msg(mc_pipeline_run(p, NULL, &err) == 0, "%s", err.msg);
	ck_assert_msg(strstr(log.text, "2 -: [1/1] fxparams\n") &&
			      strstr(log.text, "2 fxparams: rank 0, energy 1, 2 bits entries\n") &&
			      strstr(log.text, "1 fxparams: figure 'nan' is NaN; the report stores "
					       "null\n") &&
			      strstr(log.text, "1 fxparams: figure 'inf' is -infinity"),
		      "%s", log.text);
	doc = read_json("good/out/params.json");
	ck_assert_str_eq(json_string_value(json_object_get(doc, "status")), "ok");
	pass = json_array_get(json_object_get(json_object_get(doc, "manifest"), "passes"), 0);
	ck_assert_str_eq(json_string_value(json_object_get(pass, "name")), "fxparams");
	sha256sum(pass_at(p, 0)->so_path, hex);
	ck_assert_str_eq(json_string_value(json_object_get(pass, "sha256")), hex);
	params = json_object_get(pass, "params");
	ck_assert_str_eq(json_string_value(json_object_get(params, "model")), "m");
	ck_assert(json_is_null(json_object_get(params, "rank")));
	v = json_object_get(params, "energy");
	ck_assert(json_is_real(v) && json_real_value(v) == 1.0);
	ck_assert(json_real_value(json_object_get(params, "scale")) == 9.5);
	ck_assert(json_is_null(json_object_get(params, "first")));
	ck_assert_int_eq(json_integer_value(json_object_get(params, "last")), 3);
	ck_assert_str_eq(json_string_value(json_object_get(params, "note")), "hello");
	v = json_object_get(params, "bits");
	ck_assert(json_is_object(v) && json_object_size(v) == 2);
	ck_assert(json_is_integer(json_object_get(v, "linear*")));
	ck_assert_int_eq(json_integer_value(json_object_get(v, "linear*")), 8);
	v = json_object_get(params, "gran");
	ck_assert_str_eq(json_string_value(json_object_get(v, "linear2")), "per-channel");
	v = json_object_get(params, "sizes");
	ck_assert(json_is_array(v) && json_array_size(v) == 2);
	ck_assert_int_eq(json_integer_value(json_array_get(v, 1)), 2);
	ck_assert(json_is_true(json_object_get(params, "nan")));
	ck_assert(json_is_false(json_object_get(params, "fail")));
	/* The pass's row: figures as numbers, NaN and infinity as null. */
	metrics = json_object_get(json_array_get(json_object_get(doc, "steps"), 1), "metrics");
	ck_assert(json_is_null(json_object_get(metrics, "nan")));
	ck_assert(json_is_null(json_object_get(metrics, "inf")));
	ck_assert(json_real_value(json_object_get(metrics, "energy_given")) == 1);
	ck_assert(json_real_value(json_object_get(metrics, "rank_given")) == 0);
	json_decref(doc);
	mc_pipeline_free(p);
}
END_TEST

/*
 * A run that fails still writes its report, with the steps that finished,
 * the status and the error, and prints the table so far; it never writes
 * the output model.
 */
START_TEST(failed_run_reports)
{
	const char *sets[] = { "passes=[{fxparams: {model: m, rank: 2}}, "
			       "{fxparams: {model: m, rank: 2, fail: true}}]" };
	char out[8400], table[4096] = "";
	struct mc_err err;
	struct mc_pipeline *p;
	struct stat st;
	json_t *doc, *steps, *failed;
	FILE *tf = tmpfile();
	size_t n;

	ck_assert_ptr_nonnull(tf);
	copy_fixtures("good");
	p = load("good/params.yaml", sets, 1, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert_int_eq(p->n_passes, 2);
	ck_assert_int_eq(mc_pipeline_run(p, tf, &err), MC_ERUN);
	ck_assert_msg(strstr(err.msg, "pass 'fxparams', fail: failed as asked"), "%s", err.msg);
	PATHF(out, "%s/good/out/params.safetensors", scratch);
	ck_assert_int_ne(stat(out, &st), 0);
	rewind(tf);
	n = fread(table, 1, sizeof(table) - 1, tf);
	table[n] = '\0';
	fclose(tf);
	ck_assert_msg(strstr(table, "(start)") && strstr(table, "\n1    fxparams") &&
			      !strstr(table, "\n2    fxparams") &&
			      strstr(table, "(the run failed)"),
		      "%s", table);
	doc = read_json("good/out/params.json");
	ck_assert_str_eq(json_string_value(json_object_get(doc, "status")), "failed");
	ck_assert_str_eq(json_string_value(json_object_get(doc, "error")), err.msg);
	failed = json_object_get(doc, "failed");
	ck_assert_int_eq(json_integer_value(json_object_get(failed, "step")), 2);
	ck_assert_str_eq(json_string_value(json_object_get(failed, "pass")), "fxparams");
	steps = json_object_get(doc, "steps");
	ck_assert_int_eq(json_array_size(steps), 2); /* the start, and step 1 */
	ck_assert_int_eq(json_integer_value(json_object_get(json_array_get(steps, 1), "step")), 1);
	ck_assert_int_eq(json_array_size(json_object_get(json_object_get(doc, "manifest"),
							 "outputs")),
			 0);
	json_decref(doc);
	mc_pipeline_free(p);
}
END_TEST

/* ---------------------------------------------------------------- overrides */

START_TEST(overrides_apply)
{
	const char *sets[] = { "passes.0.train.epochs=3", "seed=42", "passes.eval.data=test",
			       "data.val.count=4", "passes.0.train.optimizer=sgd" };
	struct mc_err err;
	struct mc_pipeline *p;

	copy_fixtures("good");
	p = load("good/basic.yaml", sets, 5, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert_int_eq(p->n_sets, 5);
	ck_assert_str_eq(p->sets[2], "passes.eval.data=test");
	ck_assert_uint_eq(p->seed, 42);
	ck_assert_int_eq(conf_int(p, 0, "epochs"), 3);
	ck_assert_int_eq(conf_int(p, 0, "optimizer"), 0);
	ck_assert_str_eq(conf_str(p, 1, "data"), "test");
	ck_assert_int_eq(p->splits[1].count, 4);
	/* A key set by an override has the override as its place. */
	for (int i = 0; i < p->passes[1].n_keys; i++)
		if (!strcmp(p->passes[1].keys[i].def->name, "data")) {
			ck_assert_str_eq(p->passes[1].keys[i].loc.file, "--set passes.eval.data");
			ck_assert_int_eq(p->passes[1].keys[i].loc.line, 0);
		}
	mc_pipeline_free(p);
}
END_TEST

START_TEST(overrides_by_name_and_yaml_values)
{
	const char *sets[] = { "passes.train.epochs=2", "models.student.build.input=[1, 28, 28]",
			       "models.student.build.layers=[flatten, {linear: 10}]",
			       "passes.eval.batch_size=7" };
	struct mc_err err;
	struct mc_pipeline *p;

	copy_fixtures("good");
	p = load("good/aliases.yaml", sets, 4, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	/* Every pass named train, both sharing one aliased map. */
	ck_assert_int_eq(conf_int(p, 0, "epochs"), 2);
	ck_assert_int_eq(conf_int(p, 1, "epochs"), 2);
	ck_assert_int_eq(conf_int(p, 2, "batch_size"), 7);
	ck_assert_int_eq(conf_int(p, 3, "batch_size"), 7);
	ck_assert_int_eq(mc_model_n_nodes(p->models[1].model), 2);
	{ int64_t sh[MC_MAX_DIMS]; ck_assert_int_eq(mc_model_input_shape(p->models[1].model, sh), 3); }
	mc_pipeline_free(p);
}
END_TEST

START_TEST(override_of_alias_leaves_the_other_use)
{
	const char *sets[] = { "passes.1.train.epochs=4" };
	struct mc_err err;
	struct mc_pipeline *p;

	copy_fixtures("good");
	p = load("good/aliases.yaml", sets, 1, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert_int_eq(conf_int(p, 0, "epochs"), 1);
	ck_assert_int_eq(conf_int(p, 1, "epochs"), 4);
	mc_pipeline_free(p);
}
END_TEST

START_TEST(override_errors)
{
	const char *sets[] = { "passes.0.train.epoch=3", "seed", "passes.9.train.epochs=1",
			       "passes.prune.x=1", "passes.0.eval.model=mlp", "seed=abc",
			       "passes.1.eval.batch_size=[1", "=5", "data..train=1" };
	struct mc_err err;
	struct mc_pipeline *p;

	copy_fixtures("good");
	p = load("good/basic.yaml", sets, 9, &err);
	ck_assert_ptr_null(p);
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_msg(has_line(err.msg, "--set passes.0.train.epoch: ",
			       "unknown key 'epoch' in pass 'train'; did you mean 'epochs'?"),
		      "%s", err.msg);
	ck_assert_msg(has_line(err.msg, "--set seed: ", "expected KEY=VALUE"), "%s", err.msg);
	ck_assert_msg(has_line(err.msg, "--set passes.9.train.epochs: ", "out of range"), "%s",
		      err.msg);
	ck_assert_msg(has_line(err.msg, "--set passes.prune.x: ", "no item of the list"), "%s",
		      err.msg);
	ck_assert_msg(has_line(err.msg, "--set passes.0.eval.model: ", "is 'train', not 'eval'"),
		      "%s", err.msg);
	ck_assert_msg(has_line(err.msg, "--set seed: ",
			       "seed: expected a non-negative integer, got 'abc'"),
		      "%s", err.msg);
	ck_assert_msg(has_line(err.msg, "--set passes.1.eval.batch_size: ", "invalid YAML value"),
		      "%s", err.msg);
	ck_assert_msg(has_line(err.msg, "--set =5: ", "expected KEY=VALUE"), "%s", err.msg);
	ck_assert_msg(has_line(err.msg, "--set data..train: ", "malformed key"), "%s", err.msg);
}
END_TEST

START_TEST(override_creates_keys)
{
	const char *sets[] = { "report=r.json", "data.extra.idx=../data/tiny",
			       "passes.eval.data=extra" };
	char want[8400];
	struct mc_err err;
	struct mc_pipeline *p;

	copy_fixtures("good");
	p = load("good/basic.yaml", sets, 3, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	PATHF(want, "%s/good/r.json", scratch);
	ck_assert_str_eq(p->report_path, want);
	ck_assert_int_eq(p->n_splits, 4);
	ck_assert_str_eq(p->splits[3].name, "extra");
	ck_assert_str_eq(p->splits[3].loc.file, "--set data.extra.idx");
	ck_assert_int_eq(p->splits[3].loc.line, 0);
	ck_assert_str_eq(conf_str(p, 1, "data"), "extra");
	mc_pipeline_free(p);
}
END_TEST

/* A key segment in double quotes is one key, dots and all (a layer named stage2.1.dw). */
START_TEST(override_quoted_segment)
{
	const char *sets[] = { "passes.fxparams.bits.\"stage2.1.dw\"=2",
			       "passes.fxparams.bits.\"linear*\"=6" };
	const char *bad[] = { "passes.fxparams.bits.\"a.b=1", "passes.fxparams.bits.\"\"=1",
			      "passes.fxparams.bits.\"a\"b=1", "passes.fxparams.\"bits\".=1" };
	struct mc_err err;
	struct mc_pipeline *p;
	const struct mc_map *m;

	copy_fixtures("good");
	p = load("good/params.yaml", sets, 2, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	m = conf_field(p, 0, "bits");
	ck_assert_int_eq(m->n, 3);
	ck_assert_str_eq(m->key[1], "linear*");
	ck_assert_str_eq(m->key[2], "stage2.1.dw");
	ck_assert(m->num[0] == 4 && m->num[1] == 6 && m->num[2] == 2);
	mc_pipeline_free(p);
	for (int i = 0; i < 4; i++) {
		char label[64];

		p = load("good/params.yaml", &bad[i], 1, &err);
		ck_assert_ptr_null(p);
		ck_assert_int_eq(err.code, MC_EINVAL);
		snprintf(label, sizeof(label), "--set %.*s: ", (int)strcspn(bad[i], "="), bad[i]);
		ck_assert_msg(has_line(err.msg, label, "malformed key"), "%s: %s", bad[i], err.msg);
	}
	/* Unquoted, the name is cut at its dots: the message says how to write it. */
	p = load("good/params.yaml", &(const char *){ "passes.fxparams.bits.stage2.dw=2" }, 1,
		 &err);
	ck_assert_ptr_null(p);
	ck_assert_msg(has_line(err.msg, "--set passes.fxparams.bits.stage2.dw: ",
			       "bits: stage2: expected"),
		      "%s", err.msg);
	ck_assert_msg(strstr(err.msg, "a name with dots goes in double quotes"), "%s", err.msg);
}
END_TEST

/* mcomp sweep's runs: the tag goes before the first dot of every output's name. */
START_TEST(tag_renames_every_output)
{
	const char *sets[3] = { "report=r", "output=out/.hidden.safetensors.zst",
				"passes.train.checkpoint.path=ck/train.ckpt" };
	char path[4200], want[8400];
	struct mc_err err = { 0 };
	struct mc_pipeline *p;

	copy_fixtures("good");
	PATHF(path, "%s/good/basic.yaml", scratch);
	p = mc_pipeline_load_tagged(path, NULL, 0, "sweep3", reg, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	PATHF(want, "%s/good/out/mlp.sweep3.safetensors", scratch);
	ck_assert_str_eq(p->output_path, want);
	PATHF(want, "%s/good/out/report.sweep3.json", scratch);
	ck_assert_str_eq(p->report_path, want);
	ck_assert_str_eq(mc_pipeline_report_path(p), want);
	mc_pipeline_free(p);
	/* a name without a dot gets the tag at its end; a leading dot stays */
	p = mc_pipeline_load_tagged(path, sets, 3, "sweep1", reg, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	PATHF(want, "%s/good/r.sweep1", scratch);
	ck_assert_str_eq(p->report_path, want);
	PATHF(want, "%s/good/out/.hidden.sweep1.safetensors.zst", scratch);
	ck_assert_str_eq(p->output_path, want);
	/* a pass's output (its checkpoint) too */
	PATHF(want, "%s/good/ck/train.sweep1.ckpt", scratch);
	ck_assert_str_eq(conf_str(p, 0, "checkpoint.path"), want);
	mc_pipeline_free(p);
	/* no tag: mc_pipeline_load */
	p = mc_pipeline_load_tagged(path, NULL, 0, "", reg, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	PATHF(want, "%s/good/out/report.json", scratch);
	ck_assert_str_eq(mc_pipeline_report_path(p), want);
	mc_pipeline_free(p);
}
END_TEST

/* ---------------------------------------------------------------- hostile input */

START_TEST(billion_laughs_is_refused_fast)
{
	char path[8400];
	FILE *fp;
	struct mc_err err;
	struct mc_pipeline *p;
	struct timespec t0, t1;
	double s;

	PATHF(path, "%s/laughs.yaml", scratch);
	fp = fopen(path, "w");
	ck_assert(fp != NULL);
	fprintf(fp, "mcomp: 1\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
	for (int i = 1; i < 12; i++) {
		fprintf(fp, "l%d: &l%d [", i, i);
		for (int k = 0; k < 9; k++)
			fprintf(fp, "%s*l%d", k ? ", " : "", i - 1);
		fprintf(fp, "]\n");
	}
	fprintf(fp, "passes: *l11\n");
	fclose(fp);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	p = load("laughs.yaml", NULL, 0, &err);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
	ck_assert_ptr_null(p);
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_msg(strstr(err.msg, "alias bomb"), "%s", err.msg);
	ck_assert_msg(s < 1.0, "took %.2f s", s);
}
END_TEST

START_TEST(all_errors_reported_and_capped)
{
	char path[8400];
	FILE *fp;
	struct mc_err err;
	struct mc_pipeline *p;
	int lines = 1;

	PATHF(path, "%s/many.yaml", scratch);
	fp = fopen(path, "w");
	ck_assert(fp != NULL);
	fprintf(fp, "mcomp: 1\ndata: {test: data/tiny}\npasses:\n");
	for (int i = 0; i < 30; i++)
		fprintf(fp, "  - eval: {model: m, batch_sise: %d}\n", i + 1);
	fprintf(fp, "models:\n  m: {build: {input: [4], layers: [{linear: 2}]}}\n");
	fclose(fp);
	p = load("many.yaml", NULL, 0, &err);
	ck_assert_ptr_null(p);
	for (const char *c = err.msg; *c; c++)
		lines += *c == '\n';
	ck_assert_int_eq(lines, 21);
	ck_assert_msg(strstr(err.msg, "many.yaml:4:22: unknown key 'batch_sise' in pass 'eval'; "
				      "did you mean 'batch_size'?"),
		      "%s", err.msg);
	ck_assert_ptr_nonnull(strstr(err.msg, "many.yaml:23:22: unknown key"));
	ck_assert_ptr_null(strstr(err.msg, "many.yaml:24:22: unknown key"));
	ck_assert_ptr_nonnull(strstr(err.msg, "more errors not shown"));
}
END_TEST

/* Naming a pipeline that does not exist is bad usage: exit status 2. */
START_TEST(missing_pipeline_file)
{
	struct mc_err err;
	struct mc_pipeline *p = load("nothere.yaml", NULL, 0, &err);

	ck_assert_ptr_null(p);
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "nothere.yaml: cannot open"));
}
END_TEST

START_TEST(empty_pipeline)
{
	char path[8400];
	struct mc_err err;
	struct mc_pipeline *p;

	PATHF(path, "%s/empty.yaml", scratch);
	write_file(path, "# nothing\n", 10);
	p = load("empty.yaml", NULL, 0, &err);
	ck_assert_ptr_null(p);
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "the pipeline is empty"));
}
END_TEST

static Suite *pipeline_suite(void)
{
	Suite *s = suite_create("pipeline");
	TCase *tc = tcase_create("load");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, bad_fixtures);
	tcase_add_test(tc, good_fixtures_validate);
	tcase_add_test(tc, basic_is_filled_in);
	tcase_add_test(tc, aliases_and_load);
	tcase_add_test(tc, good_pipeline_runs);
	tcase_add_test(tc, parameter_forms_bind);
	tcase_add_test(tc, parameter_forms_and_overrides);
	tcase_add_test(tc, report_is_typed);
	tcase_add_test(tc, failed_run_reports);
	tcase_add_test(tc, overrides_apply);
	tcase_add_test(tc, overrides_by_name_and_yaml_values);
	tcase_add_test(tc, override_of_alias_leaves_the_other_use);
	tcase_add_test(tc, override_errors);
	tcase_add_test(tc, override_creates_keys);
	tcase_add_test(tc, override_quoted_segment);
	tcase_add_test(tc, tag_renames_every_output);
	tcase_add_test(tc, billion_laughs_is_refused_fast);
	tcase_add_test(tc, all_errors_reported_and_capped);
	tcase_add_test(tc, missing_pipeline_file);
	tcase_add_test(tc, empty_pipeline);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(pipeline_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
