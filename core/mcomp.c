/* SPDX-License-Identifier: MIT */
/*
 * mcomp.c - the mcomp command: a thin layer over the host in libmcomp.
 *
 * Exit status: 0 on success, 1 when a run fails (or a file is unreadable or
 * corrupt), 2 on invalid usage or an invalid pipeline.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <mcomp/mcomp.h>

static const char usage[] =
	"usage: mcomp COMMAND [ARGS]\n"
	"\n"
	"Compress neural networks with reproducible YAML pipelines.\n"
	"\n"
	"commands:\n"
	"  run FILE [--set KEY=VALUE]...     validate the pipeline, then run its passes in order,\n"
	"                                    print a table per step, write the output model and\n"
	"                                    the JSON report\n"
	"  validate FILE [--set KEY=VALUE]...\n"
	"                                    check the whole pipeline without running anything\n"
	"  passes                            list the passes found on the pass path\n"
	"  pass-info NAME|FILE.so            a pass's identity and parameter table\n"
	"  inspect MODEL                     layers, shapes, dtypes, parameters and bytes of a\n"
	"                                    model file (.safetensors)\n"
	"  eval MODEL --data DIR [--split NAME]\n"
	"                                    accuracy of a model on an IDX data split (default\n"
	"                                    split: t10k, the test images)\n"
	"  help                              this text\n"
	"  version                           mcomp's version and pass ABI\n"
	"\n"
	"--set KEY=VALUE overrides one value of the pipeline before it is validated, KEY a\n"
	"dotted path: --set seed=3, --set passes.0.train.epochs=1, --set passes.train.lr=0.01.\n"
	"\n"
	"environment:\n"
	"  MCOMP_PASS_PATH    colon-separated folders searched for passes before the installed ones\n"
	"  OMP_NUM_THREADS    threads for the kernels; results are identical for any count\n"
	"  MCOMP_PROGRESS=0   no progress bar even on a terminal\n"
	"  MCOMP_QUIET=1      no progress lines on stderr\n"
	"  MCOMP_GEMM=avx2|portable\n"
	"                     force a GEMM kernel (default: the fastest this CPU runs)\n"
	"\n"
	"quick start:  mcomp run pipelines/quickstart.yaml\n"
	"documentation: man mcomp, docs/pipelines.md, docs/writing-passes.md\n";

static int fail(struct mc_err *err)
{
	fprintf(stderr, "mcomp: %s\n", err->msg);
	return mc_exit_status(err->code);
}

static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "mcomp: ");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'mcomp help' for the commands and their arguments.\n");
	return 2;
}

static struct mc_registry *open_registry(struct mc_err *err, int warn)
{
	struct mc_registry *reg = mc_registry_open(err);
	int i;

	if (reg && warn)
		for (i = 0; i < mc_registry_nrefused(reg); i++)
			fprintf(stderr, "mcomp: warning: refused %s\n", mc_registry_refused(reg, i));
	return reg;
}

/* run and validate share their arguments: FILE and --set pairs. */
static int cmd_pipeline(int argc, char **argv, int run)
{
	struct mc_err err = { 0 };
	struct mc_registry *reg;
	struct mc_pipeline *p;
	const char **sets;
	const char *file = NULL;
	int n_sets = 0, i, ret;

	sets = calloc(argc + 1, sizeof(*sets));
	if (!sets)
		return 1;
	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--set") == 0) {
			if (i + 1 == argc) {
				free(sets);
				return bad_usage("--set needs KEY=VALUE");
			}
			sets[n_sets++] = argv[++i];
		} else if (strncmp(argv[i], "--set=", 6) == 0) {
			sets[n_sets++] = argv[i] + 6;
		} else if (strcmp(argv[i], "--quiet") == 0 || strcmp(argv[i], "-q") == 0) {
			setenv("MCOMP_QUIET", "1", 1);
		} else if (argv[i][0] == '-' && argv[i][1]) {
			free(sets);
			return bad_usage("unknown option '%s'", argv[i]);
		} else if (file) {
			free(sets);
			return bad_usage("one pipeline file at a time (got a second: '%s')", argv[i]);
		} else {
			file = argv[i];
		}
	}
	if (!file) {
		free(sets);
		return bad_usage("%s needs a pipeline file, e.g. pipelines/quickstart.yaml",
				 run ? "run" : "validate");
	}
	reg = open_registry(&err, 0);
	if (!reg) {
		free(sets);
		return fail(&err);
	}
	p = mc_pipeline_load(file, sets, n_sets, reg, &err);
	free(sets);
	if (!p) {
		/* A refused plugin may be why a pass is unknown: say so. */
		for (i = 0; i < mc_registry_nrefused(reg); i++)
			fprintf(stderr, "mcomp: note: refused %s\n", mc_registry_refused(reg, i));
		ret = fail(&err);
		mc_registry_free(reg);
		return ret;
	}
	if (!run) {
		printf("%s: valid\n", file);
		ret = 0;
	} else {
		ret = mc_pipeline_run(p, stdout, &err);
		ret = ret ? fail(&err) : 0;
	}
	mc_pipeline_free(p);
	mc_registry_free(reg);
	return ret;
}

static int cmd_passes(void)
{
	struct mc_err err = { 0 };
	struct mc_registry *reg = open_registry(&err, 1);
	int i;

	if (!reg)
		return fail(&err);
	printf("%-16s %-8s %-50s %s\n", "name", "version", "description", "path");
	for (i = 0; i < mc_registry_count(reg); i++) {
		const char *path;
		const struct mc_pass *pass = mc_registry_get(reg, i, &path);

		printf("%-16s %-8s %-50s %s\n", pass->name, pass->version,
		       pass->description ? pass->description : "", path);
	}
	if (mc_registry_count(reg) == 0)
		printf("(no passes found; searched %s)\n", mc_pass_path());
	mc_registry_free(reg);
	return 0;
}

static void print_pass(const struct mc_pass *pass, const char *path)
{
	const struct mc_param_def *d;
	char type[256];

	printf("name:        %s\n", pass->name);
	printf("version:     %s\n", pass->version);
	printf("description: %s\n", pass->description ? pass->description : "");
	printf("license:     %s\n", pass->license ? pass->license : "");
	printf("author:      %s\n", pass->author ? pass->author : "");
	printf("abi:         %d\n", pass->abi);
	printf("file:        %s\n", path);
	printf("parameters:\n");
	for (d = pass->params; d && d->name; d++) {
		printf("  %-16s %s; default: %s\n", d->name, mc_param_type_text(d, type, sizeof(type)),
		       d->def ? d->def : "(required)");
		printf("  %-16s %s\n", "", d->help ? d->help : "");
	}
}

static int cmd_pass_info(int argc, char **argv)
{
	struct mc_err err = { 0 };
	const struct mc_pass *pass;
	struct mc_registry *reg;
	const char *path;
	void *handle;
	int ret = 0;

	if (argc != 1)
		return bad_usage("pass-info needs one pass name (see 'mcomp passes')");
	if (strchr(argv[0], '/')) {
		pass = mc_pass_open(argv[0], &handle, &err);
		if (!pass)
			return fail(&err);
		print_pass(pass, argv[0]);
		return 0;
	}
	reg = open_registry(&err, 1);
	if (!reg)
		return fail(&err);
	pass = mc_registry_find(reg, argv[0], &path);
	if (pass) {
		print_pass(pass, path);
	} else {
		const char **names = calloc(mc_registry_count(reg) + 1, sizeof(*names));
		const char *near = NULL;
		int i;

		for (i = 0; names && i < mc_registry_count(reg); i++)
			names[i] = mc_registry_get(reg, i, NULL)->name;
		if (names)
			near = mc_suggest(names, argv[0]);
		fprintf(stderr, "mcomp: no pass named '%s'%s%s%s; 'mcomp passes' lists them "
			"(searched %s)\n", argv[0], near ? "; did you mean '" : "",
			near ? near : "", near ? "'?" : "", mc_pass_path());
		free(names);
		ret = 2;
	}
	mc_registry_free(reg);
	return ret;
}

static int cmd_inspect(int argc, char **argv)
{
	struct mc_err err = { 0 };
	struct mc_st_file *f;
	struct mc_model *m;
	char shape[128], attrs[512], val[128];
	int i, j;

	if (argc != 1)
		return bad_usage("inspect needs one model file");
	f = mc_st_read(argv[0], &err);
	if (!f)
		return fail(&err);
	m = mc_model_load(argv[0], &err);
	if (!m) {
		mc_st_free(f);
		return fail(&err);
	}
	printf("file:       %s\n", argv[0]);
	printf("bytes:      %zu\n", f->len);
	printf("input:      %s\n", mc_shape_text(m->in_ndim, m->in_shape, shape, sizeof(shape)));
	printf("parameters: %lld (%lld nonzero)\n", (long long)mc_model_nparams(m),
	       (long long)mc_model_nonzeros(m));
	printf("flops:      %lld per sample\n\n", (long long)mc_model_flops(m));
	printf("%-16s %-10s %-20s %-16s %s\n", "layer", "op", "attributes", "output", "inputs");
	for (i = 0; i < m->n_nodes; i++) {
		const struct mc_node *n = &m->nodes[i];
		const struct mc_param_def *d;
		size_t used = 0;

		attrs[0] = '\0';
		for (d = n->op->attrs; d && d->name; d++)
			used += snprintf(attrs + used, used < sizeof(attrs) ? sizeof(attrs) - used : 0,
					 "%s%s=%s", used ? " " : "", d->name,
					 mc_param_format(d, n->attrs, val, sizeof(val)));
		printf("%-16s %-10s %-20s %-16s", n->name, n->op->name, attrs[0] ? attrs : "-",
		       mc_shape_text(n->out_ndim, n->out_shape, shape, sizeof(shape)));
		for (j = 0; j < n->n_inputs; j++)
			printf("%s%s", j ? ", " : "",
			       n->inputs[j] == MC_NODE_INPUT ? "input" : m->nodes[n->inputs[j]].name);
		printf("\n");
	}
	printf("\n%-24s %-6s %-16s %12s\n", "tensor", "dtype", "shape", "bytes");
	for (i = 0; i < f->n; i++) {
		const struct mc_st_entry *e = &f->entries[i];

		printf("%-24s %-6s %-16s %12zu\n", e->name, e->st_dtype,
		       mc_shape_text(e->ndim, e->shape, shape, sizeof(shape)), e->nbytes);
	}
	mc_model_free(m);
	mc_st_free(f);
	return 0;
}

static int cmd_eval(int argc, char **argv)
{
	const char *model = NULL, *dir = NULL, *split = "t10k";
	struct mc_err err = { 0 };
	struct mc_dataset *d = NULL;
	struct mc_model *m = NULL;
	char prefix[4096];
	double acc, loss;
	struct stat st;
	int i, ret;

	for (i = 0; i < argc; i++) {
		if (strcmp(argv[i], "--data") == 0 && i + 1 < argc)
			dir = argv[++i];
		else if (strcmp(argv[i], "--split") == 0 && i + 1 < argc)
			split = argv[++i];
		else if (argv[i][0] == '-')
			return bad_usage("eval: unknown or incomplete option '%s'", argv[i]);
		else if (!model)
			model = argv[i];
		else
			return bad_usage("eval: one model at a time (got a second: '%s')", argv[i]);
	}
	if (!model || !dir)
		return bad_usage("eval needs MODEL --data DIR, e.g. mcomp eval out/mlp.safetensors "
				 "--data /usr/share/datasets/fashion-mnist");
	/* DIR is a folder holding SPLIT-images-idx3-ubyte[.gz], or a split prefix itself. */
	if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
		snprintf(prefix, sizeof(prefix), "%s/%s", dir, split);
	else
		snprintf(prefix, sizeof(prefix), "%s", dir);
	m = mc_model_load(model, &err);
	if (!m)
		return fail(&err);
	d = mc_idx_load_prefix(prefix, &err);
	if (!d) {
		mc_model_free(m);
		return fail(&err);
	}
	if (d->sample_numel != m->in_numel || d->n_classes > m->n_classes) {
		fprintf(stderr, "mcomp: %s: samples of %lld values in %d classes do not fit model "
			"%s (input of %lld values, %lld outputs)\n", d->source,
			(long long)d->sample_numel, d->n_classes, model, (long long)m->in_numel,
			(long long)m->n_classes);
		ret = 1;
		goto out;
	}
	ret = mc_evaluate(m, d, 256, &acc, &loss, &err);
	if (ret) {
		ret = fail(&err);
		goto out;
	}
	printf("model:    %s\ndata:     %s (%lld samples)\naccuracy: %.2f%%\nloss:     %.4f\n",
	       model, d->source, (long long)d->n, 100 * acc, loss);
out:
	mc_dataset_free(d);
	mc_model_free(m);
	return ret;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;

	if (!cmd || !strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		fputs(usage, cmd ? stdout : stderr);
		return cmd ? 0 : 2;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("mcomp %s (pass ABI %d)\n", MC_VERSION, MC_PASS_ABI);
		return 0;
	}
	if (!strcmp(cmd, "run"))
		return cmd_pipeline(argc - 2, argv + 2, 1);
	if (!strcmp(cmd, "validate"))
		return cmd_pipeline(argc - 2, argv + 2, 0);
	if (!strcmp(cmd, "passes"))
		return argc == 2 ? cmd_passes() : bad_usage("passes takes no arguments");
	if (!strcmp(cmd, "pass-info"))
		return cmd_pass_info(argc - 2, argv + 2);
	if (!strcmp(cmd, "inspect"))
		return cmd_inspect(argc - 2, argv + 2);
	if (!strcmp(cmd, "eval"))
		return cmd_eval(argc - 2, argv + 2);
	return bad_usage("unknown command '%s'", cmd);
}
