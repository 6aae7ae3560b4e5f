/* SPDX-License-Identifier: MIT */
/*
 * mcomp/pass.h - writing a compression pass.
 *
 * A pass is a shared object that exports one function, mc_pass_descriptor(),
 * returning a struct mc_pass: its identity, the ABI it was built for, its
 * parameters (mcomp/param.h) and its operations. The whole interface reads
 * in a dozen declarative lines:
 *
 *	static const struct mc_pass scale_pass = {
 *		.abi = MC_PASS_ABI,
 *		.name = "scale", .version = "1.0", .license = "MIT",
 *		.author = "A. Author <a@example.org>",
 *		.description = "multiply every weight by a factor",
 *		.conf_size = sizeof(struct scale_conf),
 *		.params = scale_params,
 *		.run = scale_run,
 *	};
 *	MC_PASS_DEFINE(scale_pass);
 *
 * The host checks every pass's parameters against .params for the whole
 * pipeline before any pass runs, then each pass's check(ctx, conf) in
 * pipeline order, then run(ctx, conf) in the same order. conf is a struct
 * of conf_size bytes filled by the host; it is read-only to the pass.
 *
 * Validation follows the graph: while validating, mc_ctx_model() returns a
 * model of shapes only (mc_model_is_arch) as the pipeline will hold it when
 * the pass runs. A pass that changes a model's graph applies the same
 * change to that model in check, through the graph API (mcomp/graph.h),
 * so that the passes after it are checked against the graph they will see.
 *
 * A pass may provide ops (mcomp/op.h): .ops lists them, and the host
 * registers them when it loads the pass, before any model is built or
 * loaded. A model file that uses one names it and this pass.
 *
 * ABI. MC_PASS_ABI is bumped when struct mc_pass, struct mc_param_def,
 * struct mc_op or struct mc_attr change layout, or a function changes
 * meaning; the host refuses a pass built for another number. Additions
 * keep it: a new function, or a field appended to struct mc_node or
 * struct mc_tensor, which only the library allocates. Passes never
 * allocate library structs and reach models only through mcomp/graph.h.
 * A new flag value of struct mc_param_def (MC_PARAM_FOUTPUT) keeps it too:
 * passes built before it load unchanged; a pass that uses it needs a host
 * that knows it, as a pass that calls a new function does.
 *
 * Files. A pass writes a file only through mc_ctx_write, and only the one
 * named by a path parameter marked MC_PARAM_FOUTPUT. The host checks every
 * such path with the pipeline's other files at validation (never an input,
 * never another output, a regular file or nothing), and writes it atomically.
 *
 * The model a pass acts on is named by its first model parameter
 * (MC_PARAM_MODEL); the host measures that model after the pass and adds a
 * row to the report.
 */
#ifndef MCOMP_PASS_H
#define MCOMP_PASS_H

#include <mcomp/data.h>
#include <mcomp/model.h>
#include <mcomp/param.h>
#include <mcomp/train.h>

#ifdef __cplusplus
extern "C" {
#endif

/* See "ABI" above. */
#define MC_PASS_ABI 4
#define MC_PASS_ENTRY "mc_pass_descriptor"

struct mc_ctx;

struct mc_pass {
	int abi; /* MC_PASS_ABI: first, so the host can read it from any build */
	const char *name;
	const char *version;
	const char *description;
	const char *license;
	const char *author;
	size_t conf_size;
	const struct mc_param_def *params;
	/* Optional: ops the pass provides, NULL-terminated. */
	const struct mc_op *const *ops;
	/* Optional: checks across parameters and models at validation time,
	 * before any pass runs (models are shapes only; data sets are not
	 * loaded), and applies the pass's graph changes to those models. */
	int (*check)(struct mc_ctx *ctx, const void *conf);
	int (*run)(struct mc_ctx *ctx, const void *conf);
};

#define MC_PASS_DEFINE(desc)                                        \
	MC_API const struct mc_pass *mc_pass_descriptor(void);      \
	MC_API const struct mc_pass *mc_pass_descriptor(void)       \
	{                                                           \
		return &(desc);                                     \
	}

/* The model named name (NULL if the pipeline has none). Borrowed. */
MC_API struct mc_model *mc_ctx_model(struct mc_ctx *ctx, const char *name);
/* Replaces the model named name with m (taking ownership, freeing the old one). */
MC_API int mc_ctx_replace_model(struct mc_ctx *ctx, const char *name, struct mc_model *m);
/* The data split named name, loaded on first use. Borrowed. NULL with the
 * context's error set when the split is unknown or cannot be read. */
MC_API const struct mc_dataset *mc_ctx_data(struct mc_ctx *ctx, const char *name);
/*
 * The split results are reported on: "test" when the pipeline has one (so
 * *name = "test"), else fallback (*name = fallback_name). NULL with the
 * context's error set when the test split cannot be read.
 */
MC_API const struct mc_dataset *mc_ctx_eval_data(struct mc_ctx *ctx,
						 const struct mc_dataset *fallback,
						 const char *fallback_name, const char **name);
/*
 * Where split name comes from, as the pipeline file gives it (file names
 * resolved against its folder, strings borrowed from the pipeline): the
 * source and preprocessing, and the slice [*first, *first + *count) taken
 * (*count < 0: to the end). For a pass that writes a pipeline reading the
 * same samples (autocompress's recipe). 0, or MC_EINVAL for no such split
 * (the context's error is left alone: a question, not a failure).
 */
MC_API int mc_ctx_split_source(struct mc_ctx *ctx, const char *name, struct mc_data_source *src,
			       int64_t *first, int64_t *count);
/* The pipeline's seed. */
MC_API uint64_t mc_ctx_seed(struct mc_ctx *ctx);
/* Nonzero while the host is validating (in check), zero while running. */
MC_API int mc_ctx_validating(struct mc_ctx *ctx);
/*
 * Nonzero when parameter key was given in the pipeline (or by --set), zero
 * when it holds its default, or nothing (an MC_PARAM_FOPTIONAL row left out).
 */
MC_API int mc_ctx_given(struct mc_ctx *ctx, const char *key);
/*
 * For a pass that picks a data split itself (a split parameter that only
 * some modes use, MC_PARAM_FOPTIONAL, with a default of the pass's own):
 * checks in check() what the host checks of every split parameter: that
 * the pipeline has split name and that its samples fit the pass's model
 * (only the headers are read). Errors name parameter key. 0 or MC_EINVAL
 * (or the error of a split file that cannot be read).
 */
MC_API int mc_ctx_check_data(struct mc_ctx *ctx, const char *key, const char *name);
/*
 * Records an error and returns code. key names the parameter at fault (its
 * place in the pipeline file is added) or is NULL for the pass as a whole.
 */
MC_API int mc_ctx_error(struct mc_ctx *ctx, const char *key, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The error struct, for calling library functions that take one. */
MC_API struct mc_err *mc_ctx_err(struct mc_ctx *ctx);
/* A line of progress for the user, handed to the host's log function
 * (mc_pipeline_set_log) with the pass's name; the mcomp command prints it on
 * stderr as "NAME: line" unless --quiet. */
MC_API void mc_ctx_log(struct mc_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/*
 * Writes buf[0..len) to the file named by the pass's output parameter key
 * (a path row marked MC_PARAM_FOUTPUT): atomically, through a temporary
 * file beside it, replacing only a regular file, at a safe point (MC_EINTR
 * when the run is being interrupted). The file is listed with its digest
 * among the outputs of the report. Returns 0 or an error code with the
 * context's error set; MC_EINVAL when key is not an output row of the pass,
 * or is not set, or while validating.
 */
MC_API int mc_ctx_write(struct mc_ctx *ctx, const char *key, const void *buf, size_t len);
/*
 * Checkpoints (docs/pipelines.md, "Checkpoints and --resume"). A pass that
 * trains keeps a struct mc_checkpoint_opts in its config struct, declares
 * MC_CHECKPOINT_PARAMS(st, member) in its table (the rows checkpoint.every
 * and checkpoint.path, which a pipeline gives as checkpoint: {every: 1,
 * path: FILE}), and trains through mc_ctx_train. The host does the rest:
 * it writes FILE (atomically, as every output) after every N epochs, after
 * the last and when a signal stops training between two steps, and
 * `mcomp run --resume` continues from it with the same bytes as a run that
 * never stopped. The pass never reads these fields.
 */
struct mc_checkpoint_opts {
	int every;
	char *path;
};

#define MC_CHECKPOINT_PARAMS(st, m)                                                              \
	MC_PARAM_AT("checkpoint.every", MC_PARAM_TINT, MC_PARAM_TINT,                            \
		    offsetof(st, m) + offsetof(struct mc_checkpoint_opts, every) +                 \
			    MC_PARAM_CHECK(struct mc_checkpoint_opts, every, MC_PARAM_TINT),        \
		    "1", 1, 1000000, NULL,                                                          \
		    "write the checkpoint after every this many epochs (and after the last)"),    \
	MC_PARAM_AT("checkpoint.path", MC_PARAM_TPATH, MC_PARAM_TPATH,                           \
		    offsetof(st, m) + offsetof(struct mc_checkpoint_opts, path) +                  \
			    MC_PARAM_CHECK(struct mc_checkpoint_opts, path, MC_PARAM_TPATH),        \
		    NULL, 0, 0, NULL,                                                               \
		    "where the training state is kept for mcomp run --resume (a safetensors "     \
		    "file); none: no checkpoints",                                                  \
		    .flags = MC_PARAM_FOPTIONAL | MC_PARAM_FOUTPUT)

/*
 * Trains m as mc_train does (hooks may be NULL), with the pass's checkpoints
 * when checkpoint.path is set. When a run resumes inside this pass, the
 * host calls the pass's run() again from its start, on the models as they
 * were when the pass began: the pass's Nth mc_ctx_train call that had
 * finished before the checkpoint returns at once with m as it left it, the
 * one in progress continues where it stopped. So what a pass computes
 * around its training must follow from its models and parameters alone,
 * and state that its hooks change (prune's masks) is given to mc_ctx_keep.
 * Returns 0 or an error code with the context's error set.
 */
MC_API int mc_ctx_train(struct mc_ctx *ctx, struct mc_model *m, const struct mc_dataset *d,
			const struct mc_train_conf *c, const struct mc_train_hooks *hooks);
/*
 * Bytes buf[0..len) of the pass's own state that its training hooks change,
 * saved under name with every checkpoint of the pass and written back into
 * buf before a resumed mc_ctx_train goes on. buf stays the pass's; it must
 * stay valid until run() returns. 0, or MC_EINVAL for a name given twice.
 */
MC_API int mc_ctx_keep(struct mc_ctx *ctx, const char *name, void *buf, size_t len);

/*
 * Grouped steps (mc_train_conf.grad_groups, docs/distributed.md) in a pass
 * that trains: MC_GRAD_GROUPS_PARAM(st, f, pre) declares the optional row
 * grad_groups (int field f, 0 when left out; its help is the string
 * literals pre and post around the common text), and in check()
 * mc_ctx_check_grad_groups refuses, at that key, G groups that do not
 * divide batch_size (the pass's row of that name) and a job whose ranks do
 * not divide G, each message saying what to change. 0 when grad_groups was
 * not given.
 */
#define MC_GRAD_GROUPS_PARAM(st, f, pre, post)                                                   \
	MC_PARAM_AT("grad_groups", MC_PARAM_TINT, MC_PARAM_TINT,                                 \
		    offsetof(st, f) + MC_PARAM_CHECK(st, f, MC_PARAM_TINT), NULL, 1, 65536, NULL,  \
		    pre "sum each batch's gradient over this many groups of samples computed "        \
		    "apart (batch norm per group), in a fixed order: the same bytes in one "      \
		    "process and on any rank count that divides it, every layer split over "      \
		    "the ranks (docs/distributed.md); must divide batch_size; unset: one "        \
		    "gradient per batch" post,                                                      \
		    .flags = MC_PARAM_FOPTIONAL)
MC_API int mc_ctx_check_grad_groups(struct mc_ctx *ctx, int grad_groups, int batch_size);

/*
 * Passes that search over other passes' settings (autocompress) run them
 * themselves, so that the model they return is exactly what a pipeline of
 * those passes makes. mc_ctx_find_pass: the pass named name on the
 * pipeline's search path (as a pipeline entry NAME: finds it), or NULL.
 * mc_ctx_run_pass: runs pass on the pipeline's models with conf, a struct
 * of pass->conf_size bytes that the caller fills from pass->params with
 * mc_param_defaults and mc_param_set (and frees with mc_param_free); its
 * check() is the caller's to call first when it matters. The inner pass
 * reports no figures, writes no files, keeps no checkpoints, and mc_ctx_given
 * is 0 for all its keys; with quiet its log lines are dropped. Its errors
 * come back as the caller's, placed at the caller's entry in the pipeline
 * file and naming the inner pass. Returns 0 or the inner pass's error code.
 */
MC_API const struct mc_pass *mc_ctx_find_pass(struct mc_ctx *ctx, const char *name);
MC_API int mc_ctx_run_pass(struct mc_ctx *ctx, const struct mc_pass *pass, const void *conf,
			   int quiet);

/* A figure of the pass's own for the report row ("final_loss", 0.31). A NaN
 * or infinite value is stored as null, with a warning in the log. */
MC_API int mc_ctx_report(struct mc_ctx *ctx, const char *key, double value);

#ifdef __cplusplus
}
#endif
#endif
