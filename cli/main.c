/* SPDX-License-Identifier: MIT */
/*
 * mcomp.c - the mcomp command: a thin layer over the host in libmcomp.
 *
 * Exit status: 0 on success, 1 when a run fails (or a file is unreadable or
 * corrupt), 2 on invalid usage or an invalid pipeline.
 */
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mcomp/mcomp.h>

#include "cli/cli.h"
#include "cli/dist.h"

#include <nettle/sha2.h>

static const char usage[] =
	"usage: mcomp COMMAND [ARGS]\n"
	"\n"
	"Compress neural networks with reproducible YAML pipelines.\n"
	"\n"
	"commands:\n"
	"  run FILE [--set KEY=VALUE]... [--resume]\n"
	"                                    validate the pipeline, then run its passes in order,\n"
	"                                    print a table per step, write the output model and\n"
	"                                    the JSON report; Ctrl-C (SIGINT) or SIGTERM stops it\n"
	"                                    at a safe point, no file half-written (exit 130, 143),\n"
	"                                    a pass's checkpoint: {every: N, path: FILE} written;\n"
	"                                    --resume goes on from that checkpoint (same pipeline,\n"
	"                                    --set overrides and inputs) to the same bytes as a\n"
	"                                    run that never stopped\n"
	"  sweep FILE --set KEY=V1,V2,... [--set ...] [--json OUT] [--quiet]\n"
	"                                    run the pipeline once per setting (every combination\n"
	"                                    of the lists; the last varies fastest), run #I writing\n"
	"                                    its files as NAME.sweepI.EXT; then one table of each\n"
	"                                    run's figures with mean, min and max, also as JSON\n"
	"                                    (default: the report's path with the tag sweep);\n"
	"                                    in sequence, or spread over ranks under mpirun or\n"
	"                                    srun (docs/distributed.md)\n"
	"  validate FILE [--set KEY=VALUE]...\n"
	"                                    check the whole pipeline without running anything\n"
	"  passes                            list the passes found on the pass path\n"
	"  pass-info NAME|FILE.so            a pass's identity and parameter table\n"
	"  inspect FILE                      layers, shapes, dtypes, parameters and bytes of a\n"
	"                                    model file (.safetensors); of a cascade file, also\n"
	"                                    its confidence measure and each stage's threshold\n"
	"                                    (every command reads zstd-coded files, .zst, too)\n"
	"  eval FILE --data DIR [--split NAME]\n"
	"                                    accuracy of a model on an IDX data split (default\n"
	"                                    split: t10k, the test images); of a cascade, also\n"
	"                                    where the samples exit and its measured throughput\n"
	"                                    (batch 256) and latency (batch 1) against its last\n"
	"                                    stage alone\n"
	"  predict MODEL --input X.npy -o Y.npy [--scale S] [--mean M,...] [--std S,...]\n"
	"                                    the outputs (logits) of a model or cascade file for\n"
	"                                    the inputs in X.npy (uint8 or float32, [N, ...]),\n"
	"                                    preprocessed as a pipeline's split is, written as\n"
	"                                    float32 [N, classes] to Y.npy\n"
	"  import MODEL.onnx -o OUT.safetensors\n"
	"                                    an ONNX model (Gemm, Conv, BatchNormalization, pooling,\n"
	"                                    ...; docs/pipelines.md lists the ops) as an mcomp model\n"
	"                                    file (zstd-coded when OUT ends in .zst);\n"
	"                                    unsupported ops are named with their node\n"
	"  export MODEL.safetensors -o OUT.onnx|OUT.tflite [--int4 int4|f32]\n"
	"                                    a model file as ONNX (opset 13; 14 with hardswish)\n"
	"                                    for ONNX Runtime: f32 layers one to one, int8 static\n"
	"                                    layers as QuantizeLinear/DequantizeLinear around Gemm\n"
	"                                    or Conv, 4-bit weights as INT4 DequantizeLinear\n"
	"                                    (opset 21; --int4 f32: dequantized, opset 13); a\n"
	"                                    cascade file as OUT.stage0.onnx, OUT.stage1.onnx, ...\n"
	"                                    with its thresholds and exit rule in metadata_props;\n"
	"                                    docs/interop.md lists the ops; OUT.tflite: a\n"
	"                                    TensorFlow Lite file (f32, int8 static as int8)\n"
	"  profile MODEL [--batch N] [--train] [--seconds S]\n"
	"                                    where a model's time goes: each layer's forward (and\n"
	"                                    with --train backward) milliseconds, share and GFLOP/s\n"
	"                                    at batch N (default 256) on random inputs, threads\n"
	"                                    from OMP_NUM_THREADS; at inference, the batchnorm,\n"
	"                                    activation and add fused into a conv2d show 0 ms,\n"
	"                                    their time on the conv2d (docs/graph.md)\n"
	"  help                              this text\n"
	"  version                           mcomp's version and pass ABI\n"
	"\n"
	"--max-memory SIZE (any command) caps the memory that the sizes an input declares may\n"
	"need (a model's parameters, a data set), checked before anything is allocated:\n"
	"512M, 8G, 75% of physical memory, or unlimited; default: half of physical memory\n"
	"or of the cgroup's memory limit, whichever is lower (docs/security.md).\n"
	"\n"
	"--set KEY=VALUE overrides one value of the pipeline before it is validated, KEY a\n"
	"dotted path: --set seed=3, --set passes.0.train.epochs=1, --set passes.train.lr=0.01;\n"
	"a name with dots in double quotes: --set 'passes.prune.overrides.\"stage2.1.dw\"=0.3'.\n"
	"\n"
	"blocks: a pipeline's blocks: section defines layer lists with parameters (a ResNet\n"
	"basic block, MobileNetV2's inverted residual) that a model's build: uses like ops,\n"
	"with repeat: N; their nodes are named USE.N.LAYER (stage2.1.conv1) and the model\n"
	"file holds the expanded graph (docs/pipelines.md, \"blocks\").\n"
	"\n"
	"environment:\n"
	"  MCOMP_PASS_PATH    colon-separated folders searched for passes before the installed ones\n"
	"  MCOMP_PASS_INSECURE=1  load passes that other users could change (docs/security.md)\n"
	"  OMP_NUM_THREADS    threads for the kernels (default: the CPUs the affinity mask and\n"
	"                     the cgroup quota grant); results are identical for any count\n"
	"  OMP_WAIT_POLICY, GOMP_SPINCOUNT\n"
	"                     how waiting threads wait; unset, mcomp spins about 0.3 ms then\n"
	"                     sleeps, and uses fewer threads while other jobs keep the cores\n"
	"                     busy (OMP_DYNAMIC=false: a fixed team); docs/threads.md\n"
	"  MCOMP_PROGRESS=0   no progress bar even on a terminal\n"
	"  MCOMP_MAX_MEMORY=SIZE\n"
	"                     as --max-memory SIZE (the option wins)\n"
	"  MCOMP_QUIET=1      no progress lines on stderr, as --quiet\n"
	"  MCOMP_GEMM=avx512|avx2|portable\n"
	"                     force the f32 GEMM kernel (default: the fastest this CPU runs);\n"
	"                     every kernel gives the same bytes\n"
	"  MCOMP_GEMM_S8=amx|avx512-vnni|avx-vnni|avx2|portable\n"
	"                     force the int8 GEMM kernel (all give the same exact sums)\n"
	"\n"
	"@MPI@"
	"\n"
	"quick start:  mcomp run pipelines/quickstart.yaml\n"
	"documentation: man mcomp, docs/pipelines.md, docs/writing-passes.md\n";

/* The usage text, with a line saying whether this mcomp was built with MPI. */
static void print_usage(FILE *f)
{
	char line[512];
	const char *lib = dist_library();

	if (lib)
		snprintf(line, sizeof(line),
			 "MPI: built in (%s): under mpirun -np N or srun, mcomp sweep spreads\n"
			 "its runs over the ranks, and mcomp run splits the training of MLPs\n"
			 "(linear, relu, flatten) over them, to the same bytes (docs/distributed.md)\n",
			 lib);
	else
		snprintf(line, sizeof(line),
			 "MPI: not built in (configure --with-mpi, with libopenmpi-dev): mcomp sweep\n"
			 "runs its settings in sequence\n");
	/* usage holds '%' signs: no format; the line goes where @MPI@ is */
	const char *at = strstr(usage, "@MPI@");

	fwrite(usage, 1, (size_t)(at - usage), f);
	fputs(line, f);
	fputs(at + 5, f);
}

/*
 * A command that may run as one rank of an MPI job (run, sweep): joins the job
 * first (none when no launcher started mcomp), leaves it after.
 */
static int cmd_distributed(int argc, char **argv, int (*cmd)(int argc, char **argv))
{
	struct mc_err err = { 0 };
	int ret;

	if (dist_init(&argc, &argv, &err))
		return fail(&err);
	ret = cmd(argc - 2, argv + 2);
	dist_finish();
	return ret;
}

int fail(struct mc_err *err)
{
	fprintf(stderr, "mcomp: %s\n", err->msg);
	return mc_exit_status(err->code);
}

int bad_usage(const char *fmt, ...)
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

/*
 * The library's lines for a person (mc_pipeline_set_log): progress as
 * "PASS: line" unless quiet, warnings always. arg points at the quiet flag.
 */
static void print_log(void *arg, int level, const char *pass, const char *msg)
{
	if (level == MC_LOG_INFO && *(const int *)arg)
		return;
	if (level == MC_LOG_WARNING)
		fprintf(stderr, "mcomp: warning: %s%s%s\n", pass ? pass : "", pass ? ": " : "", msg);
	else if (pass)
		fprintf(stderr, "%s: %s\n", pass, msg);
	else
		fprintf(stderr, "%s\n", msg);
}

/*
 * The library's progress (mc_progress_set_sink) as a bar on stderr, drawn
 * only when stderr is a terminal and MCOMP_PROGRESS is not 0: silent in logs.
 */
static void draw_progress(void *arg, const char *label, double frac, const char *status)
{
	char cells[31];
	int fill = (int)(frac * 30);

	(void)arg;
	if (frac < 0) {
		fputs("\r\033[K", stderr);
		fflush(stderr);
		return;
	}
	for (int i = 0; i < 30; i++)
		cells[i] = i < fill ? '#' : '.';
	cells[30] = '\0';
	fprintf(stderr, "\r\033[K%s [%s] %3d%% %s", label, cells, (int)(frac * 100), status);
	fflush(stderr);
}

/* A pass of the user's named like a shipped one is worth a line at every use. */
static void note_shadows(const struct mc_registry *reg)
{
	const char *path, *shipped, *name;
	int i;

	for (i = 0; i < mc_registry_nshadows(reg); i++) {
		name = mc_registry_shadow(reg, i, &path, &shipped);
		fprintf(stderr, "mcomp: note: pass '%s' of %s (MCOMP_PASS_PATH) has the name of "
			"the shipped %s; a pipeline uses it only by naming its file\n", name, path,
			shipped);
	}
}

/*
 * SIGINT and SIGTERM during a run: the library is asked to stop at its next
 * safe point (mc_interrupt), where it removes its temporary files and
 * returns MC_EINTR. The handler resets itself, so a second signal ends the
 * process at once (a temporary file it leaves is removed by the next run).
 */
static void on_signal(int sig)
{
	mc_interrupt(sig);
}

void catch_signals(void)
{
	static const int sigs[] = { SIGINT, SIGTERM };
	struct sigaction sa, old;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART | SA_RESETHAND;
	for (size_t i = 0; i < sizeof(sigs) / sizeof(sigs[0]); i++) {
		/* A signal ignored from the start (nohup, a background job) stays so. */
		if (sigaction(sigs[i], NULL, &old) == 0 && old.sa_handler == SIG_IGN)
			continue;
		sigaction(sigs[i], &sa, NULL);
	}
}

/* The end of an interrupted run: the terminal's line cleared, what became
 * of the files said, 128 + the signal as the exit status (130, 143). */
static int interrupted(int sig, int finished)
{
	if (isatty(STDERR_FILENO))
		fputs("\r\033[K", stderr); /* the progress bar, if one was drawn */
	if (finished)
		fprintf(stderr, "mcomp: %s came as the run finished; its files are complete\n",
			sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal");
	else
		fprintf(stderr, "mcomp: interrupted by %s: stopped at a safe point; no file is "
			"half-written and the outputs not yet written are as they were\n",
			sig == SIGINT ? "SIGINT" : sig == SIGTERM ? "SIGTERM" : "a signal");
	return 128 + sig;
}

/*
 * fail(), naming the rank in a job of several (mpirun, srun), whose other
 * ranks would wait for this one: the whole job is ended (MPI_Abort).
 */
static int fail_rank(struct mc_err *err)
{
	if (dist_size() == 1)
		return fail(err);
	fprintf(stderr, "mcomp: rank %d of %d: %s\n", dist_rank(), dist_size(), err->msg);
	return dist_abort(mc_exit_status(err->code));
}

/* run and validate share their arguments: FILE and --set pairs. */
static int cmd_pipeline(int argc, char **argv, int run)
{
	struct mc_err err = { 0 };
	struct mc_registry *reg;
	struct mc_pipeline *p;
	const char **sets;
	const char *file = NULL, *env = getenv("MCOMP_QUIET");
	int n_sets = 0, i, ret, quiet = env && *env && strcmp(env, "0"), resume = 0;

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
			quiet = 1;
		} else if (run && strcmp(argv[i], "--resume") == 0) {
			resume = 1;
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
	/* Several ranks: each runs the pipeline, training split over them
	 * (docs/distributed.md); rank 0 alone prints and writes. */
	if (run && dist_size() > 1) {
		mc_dist_set(dist_ops());
		if (dist_rank() != 0)
			quiet = 1;
	}
	reg = open_registry(&err, 0);
	if (!reg) {
		free(sets);
		return fail(&err);
	}
	note_shadows(reg);
	if (run)
		catch_signals();
	p = mc_pipeline_load(file, sets, n_sets, reg, &err);
	free(sets);
	if (!p && run && mc_interrupted()) {
		mc_registry_free(reg);
		return interrupted(mc_interrupted(), 0);
	}
	if (!p) {
		/* A refused plugin may be why a pass is unknown: say so. */
		for (i = 0; i < mc_registry_nrefused(reg); i++)
			fprintf(stderr, "mcomp: note: refused %s\n", mc_registry_refused(reg, i));
		ret = run ? fail_rank(&err) : fail(&err);
		mc_registry_free(reg);
		return ret;
	}
	if (!run) {
		printf("%s: valid\n", file);
		ret = 0;
	} else {
		mc_pipeline_set_log(p, print_log, &quiet);
		/* --resume: the pipeline's checkpoint, checked against it first */
		ret = resume ? mc_pipeline_resume(p, NULL, &err) : 0;
		if (ret) {
			ret = fail_rank(&err);
			mc_pipeline_free(p);
			mc_registry_free(reg);
			return ret;
		}
		if (dist_rank() != 0)
			mc_pipeline_set_writes(p, 0);
		ret = mc_pipeline_run(p, dist_rank() == 0 ? stdout : NULL, &err);
		fflush(stdout); /* the table so far, before the error */
		if (mc_interrupted()) {
			ret = interrupted(mc_interrupted(), !ret);
		} else {
			ret = ret ? fail_rank(&err) : 0;
		}
	}
	mc_pipeline_free(p);
	mc_registry_free(reg);
	return ret;
}

static int cmd_run(int argc, char **argv)
{
	return cmd_pipeline(argc, argv, 1);
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

/* How a row may be left out: its default, "(required)", "none (optional)", or
 * "none" for a row of a group (group_text says which of the group are needed). */
static const char *default_text(const struct mc_param_def *d)
{
	if (d->def)
		return d->def;
	if (d->flags & MC_PARAM_FOPTIONAL)
		return "none (optional)";
	return d->group ? "none" : "(required)";
}

/* "; give one of rank or energy" for a row of a group, else "". */
static const char *group_text(const struct mc_param_def *params, const struct mc_param_def *d,
			      char *buf, size_t n)
{
	const struct mc_param_def *e;
	size_t pos = 0;
	int required = 0;

	buf[0] = '\0';
	if (!d->group)
		return buf;
	for (e = params; e->name; e++)
		required |= e->group && !strcmp(e->group, d->group) && !e->def &&
			    !(e->flags & MC_PARAM_FOPTIONAL);
	pos += snprintf(buf, n, "; %s one of ", required ? "exactly" : "at most");
	for (e = params; e->name && pos < n; e++)
		if (e->group && !strcmp(e->group, d->group))
			pos += snprintf(buf + pos, n - pos, "%s%s",
					buf[pos - 1] == ' ' ? "" : ", ", e->name);
	return buf;
}

static void print_pass(const struct mc_pass *pass, const char *path)
{
	const struct mc_param_def *d;
	char type[256], group[256];

	printf("name:        %s\n", pass->name);
	printf("version:     %s\n", pass->version);
	printf("description: %s\n", pass->description ? pass->description : "");
	printf("license:     %s\n", pass->license ? pass->license : "");
	printf("author:      %s\n", pass->author ? pass->author : "");
	printf("abi:         %d\n", pass->abi);
	printf("file:        %s\n", path);
	printf("parameters:\n");
	for (d = pass->params; d && d->name; d++) {
		printf("  %-16s %s%s; default: %s%s\n", d->name,
		       mc_param_type_text(d, type, sizeof(type)),
		       d->flags & MC_PARAM_FOUTPUT ? " (a file the pass writes)" : "",
		       default_text(d), group_text(pass->params, d, group, sizeof(group)));
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

/* The layer table of m: op, attributes, output shape, inputs. */
static void print_layers(const struct mc_model *m)
{
	char shape[128], attrs[512], val[128];
	int i, j;

	printf("%-16s %-10s %-20s %-16s %s\n", "layer", "op", "attributes", "output", "inputs");
	for (i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *n = mc_model_node(m, i);
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
			       n->inputs[j] == MC_NODE_INPUT ? "input" : mc_model_node(m, n->inputs[j])->name);
		printf("\n");
	}
}

/* The table of the tensors of f whose names start with prefix. */
static void print_tensors(const struct mc_st_file *f, const char *prefix)
{
	size_t np = strlen(prefix);
	char shape[128];
	int i, w = 24;

	for (i = 0; i < f->n; i++)
		if (!strncmp(f->entries[i].name, prefix, np) && (int)strlen(f->entries[i].name) > w)
			w = (int)strlen(f->entries[i].name);
	printf("%-*s %-6s %-16s %12s\n", w, "tensor", "dtype", "shape", "bytes");
	for (i = 0; i < f->n; i++) {
		const struct mc_st_entry *e = &f->entries[i];

		if (strncmp(e->name, prefix, np))
			continue;
		printf("%-*s %-6s %-16s %12zu\n", w, e->name, e->st_dtype,
		       mc_shape_text(e->ndim, e->shape, shape, sizeof(shape)), e->nbytes);
	}
}

/* The file's bytes on disk, and what they decode to when it is zstd-coded. */
static void print_file_bytes(const char *path, const struct mc_st_file *f)
{
	struct stat st;

	if (stat(path, &st) == 0 && (uintmax_t)st.st_size != f->len)
		printf("bytes:      %jd (zstd frame; %zu decoded)\n", (intmax_t)st.st_size, f->len);
	else
		printf("bytes:      %zu\n", f->len);
}

/* Bytes of the tensors of f whose names start with prefix. */
static size_t tensor_bytes(const struct mc_st_file *f, const char *prefix)
{
	size_t total = 0, np = strlen(prefix);
	int i;

	for (i = 0; i < f->n; i++)
		if (!strncmp(f->entries[i].name, prefix, np))
			total += f->entries[i].nbytes;
	return total;
}

/* A threshold as it reads back exactly ("%.9g" of a float), or the rule of the last stage. */
static const char *threshold_text(const struct mc_cascade *c, int s, char *buf, size_t n)
{
	if (s == c->n_stages - 1)
		return "-";
	snprintf(buf, n, "%.9g", c->thresholds[s]);
	return buf;
}

static int inspect_cascade(const char *path, const struct mc_st_file *f)
{
	struct mc_err err = { 0 };
	struct mc_cascade *c = mc_cascade_load(path, &err);
	const struct mc_model *m0;
	char shape[128], prefix[256], thr[32];
	int s;

	if (!c)
		return fail(&err);
	m0 = c->stages[0];
	printf("file:       %s\n", path);
	print_file_bytes(path, f);
	printf("cascade:    %d stage%s, confidence %s\n", c->n_stages, c->n_stages > 1 ? "s" : "",
	       mc_confidence_names[c->confidence]);
	{
		int64_t in[MC_MAX_DIMS];
		int nd = mc_model_input_shape(m0, in);

		printf("input:      %s\n", mc_shape_text(nd, in, shape, sizeof(shape)));
	}
	printf("classes:    %lld\n\n", (long long)mc_model_n_classes(m0));
	printf("%-5s %-16s %-14s %12s %12s %14s %12s\n", "stage", "name", "threshold", "parameters",
	       "nonzero", "flops/sample", "bytes");
	for (s = 0; s < c->n_stages; s++) {
		snprintf(prefix, sizeof(prefix), "%s/", c->names[s]);
		printf("%-5d %-16s %-14s %12lld %12lld %14lld %12zu\n", s, c->names[s],
		       threshold_text(c, s, thr, sizeof(thr)),
		       (long long)mc_model_nparams(c->stages[s]),
		       (long long)mc_model_nonzeros(c->stages[s]),
		       (long long)mc_model_flops(c->stages[s]), tensor_bytes(f, prefix));
	}
	printf("\nA sample leaves stage s when its %s confidence is at least the threshold;\n"
	       "the last stage takes every sample left.\n", mc_confidence_names[c->confidence]);
	for (s = 0; s < c->n_stages; s++) {
		snprintf(prefix, sizeof(prefix), "%s/", c->names[s]);
		printf("\nstage %d: %s\n\n", s, c->names[s]);
		print_layers(c->stages[s]);
		printf("\n");
		print_tensors(f, prefix);
	}
	mc_cascade_free(c);
	return 0;
}

/*
 * Loads every pass on the pass path once, so that the ops passes provide
 * are registered and files that use them can be read. Passes that cannot be
 * loaded are left out silently here; `mcomp passes` says why.
 */
void register_plugin_ops(void)
{
	struct mc_err err = { 0 };

	mc_registry_free(mc_registry_open(&err));
}

static int cmd_inspect(int argc, char **argv)
{
	struct mc_err err = { 0 };
	struct mc_st_file *f;
	struct mc_model *m;
	char shape[128];
	int ret;

	if (argc != 1)
		return bad_usage("inspect needs one model or cascade file");
	register_plugin_ops();
	f = mc_st_read(argv[0], &err);
	if (!f)
		return fail(&err);
	if (mc_st_meta(f, "mcomp.cascade")) {
		ret = inspect_cascade(argv[0], f);
		mc_st_free(f);
		return ret;
	}
	m = mc_model_load(argv[0], &err);
	if (!m) {
		mc_st_free(f);
		return fail(&err);
	}
	printf("file:       %s\n", argv[0]);
	print_file_bytes(argv[0], f);
	{
		int64_t in[MC_MAX_DIMS];
		int nd = mc_model_input_shape(m, in);

		printf("input:      %s\n", mc_shape_text(nd, in, shape, sizeof(shape)));
	}
	printf("parameters: %lld (%lld nonzero)\n", (long long)mc_model_nparams(m),
	       (long long)mc_model_nonzeros(m));
	printf("flops:      %lld per sample\n\n", (long long)mc_model_flops(m));
	print_layers(m);
	printf("\n");
	print_tensors(f, "");
	mc_model_free(m);
	mc_st_free(f);
	return 0;
}

/* Samples of d fit a model taking in_numel values and giving n_classes outputs; else says why. */
static int data_fits(const struct mc_dataset *d, const char *file, int64_t in_numel,
		     int64_t n_classes)
{
	if (d->sample_numel == in_numel && d->n_classes <= n_classes)
		return 1;
	fprintf(stderr, "mcomp: %s: samples of %lld values in %d classes do not fit model "
		"%s (input of %lld values, %lld outputs)\n", d->source,
		(long long)d->sample_numel, d->n_classes, file, (long long)in_numel,
		(long long)n_classes);
	return 0;
}

static int eval_model(const char *file, const char *split)
{
	struct mc_err err = { 0 };
	struct mc_model *m = mc_model_load(file, &err);
	struct mc_dataset *d = NULL;
	double acc, loss;
	int ret = 0;

	if (!m)
		return fail(&err);
	d = mc_idx_load_prefix(split, &err);
	if (!d)
		ret = fail(&err);
	else if (!data_fits(d, file, mc_model_in_numel(m), mc_model_n_classes(m)))
		ret = 1;
	else if (mc_evaluate(m, d, 256, &acc, &loss, &err))
		ret = fail(&err);
	else
		printf("model:    %s\ndata:     %s (%lld samples)\naccuracy: %.2f%%\n"
		       "loss:     %.4f\n", file, d->source, (long long)d->n, 100 * acc, loss);
	mc_dataset_free(d);
	mc_model_free(m);
	return ret;
}

/* Runs the cascade and its last stage alone over d: accuracy, where the
 * samples exit, throughput at batch 256 and latency at batch 1. */
static int eval_cascade(const char *file, const char *split)
{
	struct mc_cascade_measure mc, ml;
	struct mc_err err = { 0 };
	struct mc_cascade *c = mc_cascade_load(file, &err), alone;
	struct mc_dataset *d = NULL;
	char thr[32], acc[32];
	int s, last, ret = 0;

	if (!c)
		return fail(&err);
	last = c->n_stages - 1;
	d = mc_idx_load_prefix(split, &err);
	if (!d) {
		ret = fail(&err);
		goto out;
	}
	if (!data_fits(d, file, mc_model_in_numel(c->stages[0]), mc_model_n_classes(c->stages[0]))) {
		ret = 1;
		goto out;
	}
	/* the last stage alone, borrowed into a cascade of one, timed the same way */
	memset(&alone, 0, sizeof(alone));
	alone.n_stages = 1;
	alone.names[0] = c->names[last];
	alone.stages[0] = c->stages[last];
	alone.confidence = c->confidence;
	alone.thresholds[0] = c->thresholds[last];
	if (mc_cascade_measure(c, d, &mc, &err) || mc_cascade_measure(&alone, d, &ml, &err)) {
		ret = fail(&err);
		goto out;
	}
	printf("cascade:  %s (%d stages, confidence %s)\n", file, c->n_stages,
	       mc_confidence_names[c->confidence]);
	printf("data:     %s (%lld samples)\n", d->source, (long long)d->n);
	printf("accuracy: %.2f%%\n\n", 100 * mc.accuracy);
	printf("%-5s %-16s %-14s %8s %9s\n", "stage", "name", "threshold", "exits", "accuracy");
	for (s = 0; s < c->n_stages; s++) {
		if (mc.exit_acc[s] < 0)
			snprintf(acc, sizeof(acc), "-");
		else
			snprintf(acc, sizeof(acc), "%.2f%%", 100 * mc.exit_acc[s]);
		printf("%-5d %-16s %-14s %7.2f%% %9s\n", s, c->names[s],
		       threshold_text(c, s, thr, sizeof(thr)), 100 * mc.exit_frac[s], acc);
	}
	printf("\n%-24s %14s %14s %8s\n", "", "cascade", "last alone", "ratio");
	printf("%-24s %13.2f%% %13.2f%% %+7.2f pt\n", "accuracy", 100 * mc.accuracy,
	       100 * ml.accuracy, 100 * (mc.accuracy - ml.accuracy));
	printf("%-24s %14.0f %14.0f %7.2fx\n", "samples/s at batch 256", mc.throughput256,
	       ml.throughput256, mc.throughput256 / ml.throughput256);
	printf("%-24s %14.4f %14.4f %7.2fx\n", "ms per sample, batch 1", mc.latency1_ms,
	       ml.latency1_ms, ml.latency1_ms / mc.latency1_ms);
	printf("\n(last alone: stage %d, '%s'; throughput: best of 3 passes over the data; latency:\n"
	       "mean over the first %lld samples; ratios: how many times faster the cascade is)\n",
	       last, c->names[last], (long long)(d->n < 500 ? d->n : 500));
out:
	mc_dataset_free(d);
	mc_cascade_free(c);
	return ret;
}

static int cmd_eval(int argc, char **argv)
{
	const char *model = NULL, *dir = NULL, *split = "t10k";
	char prefix[4096];
	struct stat st;
	int i;

	register_plugin_ops();
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
	/* A file that does not open is reported by the model loader. */
	return mc_file_is_cascade(model) ? eval_cascade(model, prefix) : eval_model(model, prefix);
}

/* ---------------------------------------------------------------- predict */

/*
 * The model files predict reads, by how the name ends; the last row takes
 * any other name. Another format is one row before it.
 */
static const struct model_loader {
	const char *suffix;
	struct mc_model *(*load)(const char *path, struct mc_err *err);
} model_loaders[] = {
	{ ".onnx", mc_model_from_onnx },
	{ NULL, mc_model_load }, /* .safetensors, and what mcomp writes */
};

static struct mc_model *load_any_model(const char *path, struct mc_err *err)
{
	size_t n = sizeof(model_loaders) / sizeof(model_loaders[0]), len = strlen(path);
	size_t i;

	for (i = 0; i + 1 < n; i++) {
		size_t k = strlen(model_loaders[i].suffix);

		if (len >= k && !strcmp(path + len - k, model_loaders[i].suffix))
			break;
	}
	return model_loaders[i].load(path, err);
}

/* Parses "0.5,0.25,..." (comma-separated numbers) into a new array; -1 if malformed. */
static int parse_numbers(const char *text, double **out)
{
	int n = 1;
	char *end;

	for (const char *p = text; *p; p++)
		n += *p == ',';
	*out = calloc((size_t)n, sizeof(**out));
	if (!*out)
		return -1;
	for (int i = 0; i < n; i++) {
		(*out)[i] = strtod(text, &end);
		if (end == text || (*end && *end != ',')) {
			free(*out);
			*out = NULL;
			return -1;
		}
		text = end + (*end == ',');
	}
	return n;
}

/*
 * An output path of a command (-o) must name a regular file or nothing
 * (docs/security.md): what else it names is refused here with exit 2,
 * before any work; the writer checks again when it renames.
 */
static int bad_output(const char *cmd, const char *path)
{
	struct stat st;

	if (lstat(path, &st) || S_ISREG(st.st_mode))
		return 0;
	return bad_usage("%s: -o '%s' is %s; mcomp writes only regular files and never replaces "
			 "or follows anything else: name a new file or a regular one",
			 cmd, path,
			 S_ISDIR(st.st_mode) ? "a folder" : S_ISLNK(st.st_mode) ? "a symbolic link" :
			 S_ISCHR(st.st_mode) ? "a character device" :
			 S_ISBLK(st.st_mode) ? "a block device" :
			 S_ISFIFO(st.st_mode) ? "a FIFO (named pipe)" :
			 S_ISSOCK(st.st_mode) ? "a socket" : "not a regular file");
}

/* -o of a command that writes no model file: a .zst name would promise a
 * zstd frame that is not written. 2 after a usage message, else 0. */
static int zst_refused(const char *cmd, const char *path, const char *what)
{
	size_t n = strlen(path);

	if (n < 4 || strcmp(path + n - 4, ".zst"))
		return 0;
	return bad_usage("%s: -o '%s': %s are written plain; only model and cascade files are "
			 "written as zstd (.zst): drop the .zst, and compress with zstd if needed",
			 cmd, path, what);
}

static int same_file(const char *a, const char *b)
{
	struct stat sa, sb;

	return !strcmp(a, b) || (stat(a, &sa) == 0 && stat(b, &sb) == 0 &&
				 sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino);
}

/* The logits of m (or of cascade c) for every sample of d into out[n, classes]. */
static int run_forward(const struct mc_model *m, const struct mc_cascade *c,
		       const struct mc_dataset *d, int64_t classes, float *out, struct mc_err *err)
{
	/* Batches of 256 from the first sample, as eval runs them: a model with
	 * dynamic int8 layers scales each batch by its own range. */
	int bs = d->n < 256 ? (int)d->n : 256;
	struct mc_cascade_exec *ce = NULL;
	struct mc_exec *e = NULL;

	if (c)
		ce = mc_cascade_exec_new(c, bs, err);
	else
		e = mc_exec_new(m, bs, 0, err);
	if (!ce && !e)
		return err->code;
	for (int64_t b0 = 0; b0 < d->n; b0 += bs) {
		int n = d->n - b0 < bs ? (int)(d->n - b0) : bs;
		const float *x = d->x + (size_t)b0 * (size_t)d->sample_numel;
		float *z = out + (size_t)b0 * (size_t)classes;

		if (ce)
			mc_cascade_forward(ce, x, n, z, NULL);
		else
			memcpy(z, mc_forward(e, x, n), (size_t)n * (size_t)classes * sizeof(float));
	}
	mc_cascade_exec_free(ce);
	mc_exec_free(e);
	return 0;
}

static int has_word(const char *const *words, const char *w)
{
	for (; *words; words++)
		if (!strcmp(*words, w))
			return 1;
	return 0;
}

static int cmd_predict(int argc, char **argv)
{
	static const char *const predict_opts[] = { "--input", "-i",	 "--output", "-o",
						    "--scale", "--mean", "--std",    NULL };
	const char *model = NULL, *input = NULL, *output = NULL, *opt;
	struct mc_data_source src = { .format = MC_DATA_NPY };
	double *mean = NULL, *std = NULL;
	struct mc_err err = { 0 };
	struct mc_cascade *c = NULL;
	struct mc_model *m = NULL;
	struct mc_dataset *d = NULL;
	int64_t in_numel = 0, classes = 0, shape[2];
	float *out = NULL;
	char *end;
	int i, ret = 2;

	for (i = 0; i < argc; i++) {
		opt = argv[i];
		if (opt[0] != '-' || !opt[1]) {
			if (model) {
				bad_usage("predict: one model at a time (got a second: '%s')", opt);
				goto out;
			}
			model = opt;
			continue;
		}
		if (!has_word(predict_opts, opt)) {
			bad_usage("predict: unknown option '%s'", opt);
			goto out;
		}
		if (i + 1 == argc) {
			bad_usage("predict: option '%s' needs a value", opt);
			goto out;
		}
		if (!strcmp(opt, "--input") || !strcmp(opt, "-i")) {
			input = argv[++i];
		} else if (!strcmp(opt, "--output") || !strcmp(opt, "-o")) {
			output = argv[++i];
		} else if (!strcmp(opt, "--scale")) {
			src.pre.scale = strtod(argv[++i], &end);
			if (*end || end == argv[i] || !(src.pre.scale > 0)) {
				bad_usage("predict: --scale '%s': give a number above 0", argv[i]);
				goto out;
			}
		} else if (!strcmp(opt, "--mean") || !strcmp(opt, "--std")) {
			double **v = opt[2] == 'm' ? &mean : &std;
			int *n = opt[2] == 'm' ? &src.pre.n_mean : &src.pre.n_std;

			free(*v);
			*n = parse_numbers(argv[++i], v);
			if (*n < 0) {
				bad_usage("predict: %s '%s': give numbers separated by commas, "
					  "one per channel or one for all (e.g. 0.5,0.5,0.5)",
					  opt, argv[i]);
				goto out;
			}
		}
	}
	src.pre.mean = mean;
	src.pre.std = std;
	if (!model || !input || !output) {
		bad_usage("predict needs MODEL --input X.npy -o Y.npy, e.g. mcomp predict "
			  "out/mlp.safetensors --input x.npy -o logits.npy");
		goto out;
	}
	if (bad_output("predict", output) || zst_refused("predict", output, "NumPy files"))
		goto out;
	if (same_file(output, input) || same_file(output, model)) {
		bad_usage("predict: -o '%s' would overwrite an input (%s); choose another path",
			  output, same_file(output, input) ? "the inputs" : "the model");
		goto out;
	}
	register_plugin_ops();
	if (mc_file_is_cascade(model)) {
		c = mc_cascade_load(model, &err);
		if (c) {
			in_numel = mc_model_in_numel(c->stages[0]);
			classes = mc_model_n_classes(c->stages[0]);
		}
	} else {
		m = load_any_model(model, &err);
		if (m) {
			in_numel = mc_model_in_numel(m);
			classes = mc_model_n_classes(m);
		}
	}
	if (!m && !c) {
		ret = fail(&err);
		goto out;
	}
	src.x = input;
	d = mc_data_load(&src, &err);
	if (!d) {
		ret = fail(&err);
		goto out;
	}
	ret = 1;
	if (d->sample_numel != in_numel) {
		fprintf(stderr, "mcomp: %s: samples of %lld values do not fit model %s (input of "
			"%lld values)\n", input, (long long)d->sample_numel, model,
			(long long)in_numel);
		goto out;
	}
	out = calloc((size_t)d->n * (size_t)classes, sizeof(*out));
	if (!out) {
		fprintf(stderr, "mcomp: out of memory for %lld x %lld outputs\n", (long long)d->n,
			(long long)classes);
		goto out;
	}
	shape[0] = d->n;
	shape[1] = classes;
	if (run_forward(m, c, d, classes, out, &err) ||
	    mc_npy_write_f32(output, 2, shape, out, &err)) {
		ret = fail(&err);
		goto out;
	}
	printf("wrote %s (%lld samples x %lld outputs, float32)\n", output, (long long)d->n,
	       (long long)classes);
	ret = 0;
out:
	free(out);
	free(mean);
	free(std);
	mc_dataset_free(d);
	mc_model_free(m);
	mc_cascade_free(c);
	return ret;
}

/* mcomp import MODEL.onnx -o OUT.safetensors: exit 2 for what mcomp cannot
 * compute (an op, an attribute) and bad usage, 1 for a file that does not
 * read or is corrupt. The output is written atomically; the input never. */
static int cmd_import(int argc, char **argv)
{
	const char *in = NULL, *out = NULL;
	struct mc_err err = {0};
	struct stat si, so;
	struct mc_model *m;
	int64_t shape[MC_MAX_DIMS];
	char text[128];
	int i, r;

	for (i = 0; i < argc; i++) {
		if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc)
			out = argv[++i];
		else if (argv[i][0] == '-')
			return bad_usage("import: unknown or incomplete option '%s'", argv[i]);
		else if (!in)
			in = argv[i];
		else
			return bad_usage("import: one model at a time (got a second: '%s')", argv[i]);
	}
	if (!in || !out)
		return bad_usage("import needs MODEL.onnx -o OUT.safetensors, e.g. mcomp import "
				 "mlp.onnx -o mlp.safetensors");
	if (stat(in, &si) == 0 && stat(out, &so) == 0 && si.st_dev == so.st_dev &&
	    si.st_ino == so.st_ino)
		return bad_usage("import: '%s' is the input; give another output file", out);
	if (bad_output("import", out))
		return 2;
	m = mc_model_from_onnx(in, &err);
	if (!m)
		return fail(&err);
	r = mc_model_save(m, out, &err);
	if (!r)
		printf("%s: %d nodes, %lld parameters, input %s, %lld outputs -> %s\n", in,
		       mc_model_n_nodes(m), (long long)mc_model_nparams(m),
		       mc_shape_text(mc_model_input_shape(m, shape), shape, text, sizeof(text)),
		       (long long)mc_model_n_classes(m), out);
	mc_model_free(m);
	return r ? fail(&err) : 0;
}

/* The export's notes (a weight-only layer written f32, a pruned model written dense). */
static void print_export_note(void *arg, int level, const char *msg)
{
	(void)arg;
	fprintf(stderr, "mcomp: %s%s\n", level == MC_LOG_WARNING ? "warning: " : "", msg);
}

/* The SHA-256 of the file at path as hex into out[65]; "" when it does not read. */
static void file_sha256(const char *path, char out[65])
{
	struct sha256_ctx c;
	uint8_t d[SHA256_DIGEST_SIZE], buf[65536];
	FILE *f = fopen(path, "rb");
	size_t n;

	out[0] = 0;
	if (!f)
		return;
	sha256_init(&c);
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		sha256_update(&c, n, buf);
	if (!ferror(f)) {
		sha256_digest(&c, sizeof(d), d);
		for (int i = 0; i < SHA256_DIGEST_SIZE; i++)
			snprintf(out + 2 * i, 3, "%02x", d[i]);
	}
	fclose(f);
}

/* A cascade file: one ONNX model per stage, OUT.stage<S>.onnx. */
static int export_cascade(const char *in, const char *out, const struct mc_onnx_meta *meta)
{
	struct mc_err err = {0};
	struct mc_cascade *c = mc_cascade_load(in, &err);
	char file[4096];
	int r;

	if (!c)
		return fail(&err);
	r = mc_cascade_save_onnx(c, out, meta, &err);
	for (int s = 0; !r && s < c->n_stages; s++) {
		mc_cascade_onnx_path(out, s, file, sizeof(file));
		printf("%s: stage %d '%s'%s, %d nodes -> %s (ONNX opset %d)\n", in, s, c->names[s],
		       s < c->n_stages - 1 ? "" : " (last)", mc_model_n_nodes(c->stages[s]), file,
		       mc_model_onnx_opset(c->stages[s], meta));
	}
	if (!r)
		printf("%s: %s confidence; the thresholds and the rule are in each file's "
		       "metadata_props (docs/interop.md)\n",
		       in, mc_confidence_names[c->confidence]);
	mc_cascade_free(c);
	return r ? fail(&err) : 0;
}

/* mcomp export MODEL.safetensors -o OUT.onnx: exit 2 for bad usage and a model
 * with no ONNX form (the node and op are named), 1 for a file that does not
 * read or write. The output is written atomically; the input never. A
 * cascade file gives one file per stage. */
static int cmd_export(int argc, char **argv)
{
	const char *in = NULL, *out = NULL;
	char digest[65];
	const char *props[] = { "mcomp.source.sha256", digest, NULL };
	struct mc_onnx_meta meta = { .props = props, .log = print_export_note };
	struct mc_err err = {0};
	struct stat si, so;
	struct mc_model *m;
	int i, r, tflite;

	for (i = 0; i < argc; i++) {
		if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) {
			out = argv[++i];
		} else if (!strcmp(argv[i], "--int4") && i + 1 < argc) {
			i++;
			if (!strcmp(argv[i], "f32"))
				meta.flags |= MC_ONNX_4BIT_F32;
			else if (strcmp(argv[i], "int4"))
				return bad_usage("export: --int4 takes int4 (the default: INT4 "
						 "weights, opset 21) or f32 (dequantized, opset 13), "
						 "not '%s'",
						 argv[i]);
		} else if (argv[i][0] == '-') {
			return bad_usage("export: unknown or incomplete option '%s'", argv[i]);
		} else if (!in) {
			in = argv[i];
		} else {
			return bad_usage("export: one model at a time (got a second: '%s')", argv[i]);
		}
	}
	if (!in || !out)
		return bad_usage("export needs MODEL.safetensors -o OUT.onnx, e.g. mcomp export "
				 "mlp.safetensors -o mlp.onnx");
	tflite = strlen(out) > 7 && !strcasecmp(out + strlen(out) - 7, ".tflite");
	if (stat(in, &si) == 0 && stat(out, &so) == 0 && si.st_dev == so.st_dev &&
	    si.st_ino == so.st_ino)
		return bad_usage("export: '%s' is the input; give another output file", out);
	if (bad_output("export", out) || zst_refused("export", out, "ONNX files"))
		return 2;
	register_plugin_ops();
	file_sha256(in, digest);
	if (!digest[0])
		props[0] = NULL;
	if (mc_file_is_cascade(in) && tflite)
		return bad_usage("export: '%s' is a cascade; TFLite files hold one model: export "
				 "it to .onnx (one file a stage)", in);
	if (mc_file_is_cascade(in))
		return export_cascade(in, out, &meta);
	m = mc_model_load(in, &err);
	if (!m)
		return fail(&err);
	r = tflite ? mc_model_save_tflite(m, out, &meta, &err)
		   : mc_model_save_onnx(m, out, &meta, &err);
	if (!r && tflite)
		printf("%s: %d nodes, %lld parameters -> %s (TFLite)\n", in, mc_model_n_nodes(m),
		       (long long)mc_model_nparams(m), out);
	else if (!r)
		printf("%s: %d nodes, %lld parameters -> %s (ONNX opset %d)\n", in,
		       mc_model_n_nodes(m), (long long)mc_model_nparams(m), out,
		       mc_model_onnx_opset(m, &meta));
	mc_model_free(m);
	return r ? fail(&err) : 0;
}

/*
 * --max-memory SIZE (or --max-memory=SIZE), anywhere on the command line,
 * else MCOMP_MAX_MEMORY: the memory limit of every command (mc_mem_limit_set).
 * Takes the option out of argv; 0, or 2 after a usage message.
 */
static int take_max_memory(int *argc, char **argv)
{
	const char *text = NULL, *what = "--max-memory", *env = getenv("MCOMP_MAX_MEMORY");
	uint64_t bytes;
	int i, j;

	for (i = j = 1; i < *argc; i++) {
		if (!strcmp(argv[i], "--max-memory")) {
			if (i + 1 == *argc)
				return bad_usage("--max-memory needs a SIZE, e.g. --max-memory 8G");
			text = argv[++i];
		} else if (!strncmp(argv[i], "--max-memory=", 13)) {
			text = argv[i] + 13;
		} else {
			argv[j++] = argv[i];
		}
	}
	*argc = j;
	argv[j] = NULL;
	if (!text && env && *env) {
		text = env;
		what = "MCOMP_MAX_MEMORY";
	}
	if (!text)
		return 0;
	if (mc_mem_parse(text, &bytes))
		return bad_usage("%s '%s': give a size such as 512M, 8G, 75%% or unlimited", what,
				 text);
	mc_mem_limit_set(bytes, what);
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd, *bar = getenv("MCOMP_PROGRESS");

	/* Waits that give the CPU back on a busy machine (docs/threads.md). */
	mc_threads_bound_waits(argv);
	if (take_max_memory(&argc, argv))
		return 2;
	cmd = argc > 1 ? argv[1] : NULL;
	if (isatty(STDERR_FILENO) && !(bar && !strcmp(bar, "0")))
		mc_progress_set_sink(draw_progress, NULL);

	if (!cmd || !strcmp(cmd, "help") || !strcmp(cmd, "--help") || !strcmp(cmd, "-h")) {
		print_usage(cmd ? stdout : stderr);
		return cmd ? 0 : 2;
	}
	if (!strcmp(cmd, "version") || !strcmp(cmd, "--version")) {
		printf("mcomp %s (pass ABI %d)\n", MC_VERSION, MC_PASS_ABI);
		return 0;
	}
	if (!strcmp(cmd, "run"))
		return cmd_distributed(argc, argv, cmd_run);
	if (!strcmp(cmd, "sweep"))
		return cmd_distributed(argc, argv, cmd_sweep);
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
	if (!strcmp(cmd, "predict"))
		return cmd_predict(argc - 2, argv + 2);
	if (!strcmp(cmd, "import"))
		return cmd_import(argc - 2, argv + 2);
	if (!strcmp(cmd, "export"))
		return cmd_export(argc - 2, argv + 2);
	if (!strcmp(cmd, "profile"))
		return cmd_profile(argc - 2, argv + 2);
	return bad_usage("unknown command '%s'", cmd);
}
