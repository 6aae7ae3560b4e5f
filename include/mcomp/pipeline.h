/* SPDX-License-Identifier: MIT */
/*
 * mcomp/pipeline.h - the host: finding passes, loading and validating
 * pipelines, running them, measuring models.
 *
 * The mcomp command is a thin layer over these calls; a program can embed
 * the same host.
 */
#ifndef MCOMP_PIPELINE_H
#define MCOMP_PIPELINE_H

#include <stdio.h>

#include <mcomp/pass.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * The passes found on the search path: the directories of MCOMP_PASS_PATH
 * (colon-separated), then the build tree's own passes when mcomp runs
 * uninstalled, then the installed pass directory. The current directory is
 * never searched unless named. A file *.so is refused (and listed in the
 * registry's refusals) when it is not a regular file, when it or a folder
 * above it is world-writable (or group-writable and another user's) unless
 * MCOMP_PASS_INSECURE=1, when it is not an ELF shared object for this
 * machine exporting mc_pass_descriptor, does not load, was built for
 * another ABI, has a bad name (a-z, 0-9, '_', '-'), text or parameter table,
 * or repeats a name already found (docs/security.md, "Pass plugins").
 */
struct mc_registry;
MC_API struct mc_registry *mc_registry_open(struct mc_err *err);
MC_API void mc_registry_free(struct mc_registry *r);
MC_API int mc_registry_count(const struct mc_registry *r);
/* Pass i (0-based, in search order) and the file it came from. */
MC_API const struct mc_pass *mc_registry_get(const struct mc_registry *r, int i,
					     const char **path);
MC_API const struct mc_pass *mc_registry_find(const struct mc_registry *r, const char *name,
					      const char **path);
/* Refusal messages, one per refused file. */
MC_API int mc_registry_nrefused(const struct mc_registry *r);
MC_API const char *mc_registry_refused(const struct mc_registry *r, int i);
/*
 * Passes that shadow a shipped one: found on MCOMP_PASS_PATH under the name
 * of a pass in the installed pass folder (or the build tree's), which is
 * then refused. A pipeline may not use such a name (mc_pipeline_load says
 * so); it names the file instead. Shadow i's name, the file found first
 * (*path) and the shipped file (*shipped); NULL when i is out of range.
 */
MC_API int mc_registry_nshadows(const struct mc_registry *r);
MC_API const char *mc_registry_shadow(const struct mc_registry *r, int i, const char **path,
				      const char **shipped);
/* Loads one file as a pass (no search) with the checks above; the refusal
 * message goes to err. */
MC_API const struct mc_pass *mc_pass_open(const char *path, void **handle, struct mc_err *err);
/* The directories searched, colon-separated, of any length (valid until the
 * next call). */
MC_API const char *mc_pass_path(void);

struct mc_pipeline;

/*
 * Reads the pipeline at path, applies the overrides sets[0..n_sets) ("key=value",
 * key a dotted path such as "seed" or "passes.0.train.epochs"), and validates
 * all of it: schema, types, ranges, pass names and parameters, model
 * architectures, input files. Messages read "FILE:LINE:COL: ..."; several
 * errors are separated by newlines. NULL with err (MC_EINVAL) on any error.
 */
MC_API struct mc_pipeline *mc_pipeline_load(const char *path, const char *const *sets, int n_sets,
					    struct mc_registry *reg, struct mc_err *err);
MC_API void mc_pipeline_free(struct mc_pipeline *p);
/*
 * As mc_pipeline_load, with tag put into the name of every file the pipeline
 * writes (the output model, the report, each pass's output and checkpoint
 * files), before the first '.' of the name: out/mlp.safetensors becomes
 * out/mlp.TAG.safetensors. Several runs of one pipeline with their own tags
 * (mcomp sweep) so write distinct files; the manifest lists the tagged
 * paths. tag NULL or "" is mc_pipeline_load.
 */
MC_API struct mc_pipeline *mc_pipeline_load_tagged(const char *path, const char *const *sets,
						   int n_sets, const char *tag,
						   struct mc_registry *reg, struct mc_err *err);
/* The resolved path of the pipeline's report (tagged), or NULL when it writes none. */
MC_API const char *mc_pipeline_report_path(const struct mc_pipeline *p);

/* What a log line is (mc_pipeline_set_log). */
enum mc_log_level {
	MC_LOG_WARNING = 1, /* for the user to look at: a figure that is NaN, a report not written */
	MC_LOG_INFO = 2,    /* progress: "[2/4] prune", and every mc_ctx_log line of a pass */
};

/*
 * Hands the lines the library has for a person to log(arg, level, pass, msg):
 * pass is the name of the pass speaking, or NULL for the host; msg has no
 * trailing newline. The library prints nothing itself: without a log
 * function (the default) these lines are dropped. The lines come from
 * mc_pipeline_run; mc_pipeline_load has none (its errors come back in err).
 * The mcomp command prints them on stderr, and leaves out MC_LOG_INFO under
 * --quiet.
 */
MC_API void mc_pipeline_set_log(struct mc_pipeline *p,
				void (*log)(void *arg, int level, const char *pass, const char *msg),
				void *arg);

/*
 * Runs every pass in order, measuring the subject model after each, prints
 * the report table to out (may be NULL), writes the output model and the
 * JSON report atomically. Returns 0 or an error code (MC_ERUN etc.).
 *
 * When a step fails, the output model is not written (a previous file stays
 * as it was), but the table of the steps that finished is printed and the
 * report is written all the same, with "status": "failed" and the error.
 */
MC_API int mc_pipeline_run(struct mc_pipeline *p, FILE *out, struct mc_err *err);
/*
 * on 0: mc_pipeline_run writes no file at all (no model, report, pass output
 * or checkpoint; a pass's mc_ctx_write succeeds without writing): the ranks
 * other than 0 of a data-parallel run, which compute what rank 0 writes.
 */
MC_API void mc_pipeline_set_writes(struct mc_pipeline *p, int on);

/*
 * `mcomp run --resume`: makes the next mc_pipeline_run go on from the
 * furthest of the checkpoints the pipeline's passes write (checkpoint.path):
 * the passes done before it are not run again (their models and report rows
 * are in the checkpoint), the pass it was made in continues at the step
 * where it stopped, and the outputs and report come out as an uninterrupted
 * run's would (the manifest adds "resumed"). *from (may be NULL) is the
 * checkpoint's path, or NULL when none exists yet: the run then starts from
 * the beginning. Returns 0; MC_EINVAL when no pass sets checkpoint.path, or
 * the checkpoint was made by another pipeline, other --set overrides, other
 * input files or another mcomp (the message says what changed);
 * MC_ECORRUPT or MC_EIO when it cannot be read or is damaged.
 */
MC_API int mc_pipeline_resume(struct mc_pipeline *p, const char **from, struct mc_err *err);

/* What the host measures of a model after each pass. */
struct mc_measure {
	int64_t params, nonzeros, flops;
	int64_t bytes;	       /* of the safetensors file */
	double accuracy;       /* on the test split; < 0 when there is none */
	double latency1_ms;    /* median forward time at batch 1 */
	double latency256_ms;  /* median forward time at batch 256 */
};

/* Measures m; test may be NULL (accuracy is then -1). */
MC_API int mc_measure_model(const struct mc_model *m, const struct mc_dataset *test,
			    struct mc_measure *out, struct mc_err *err);

#ifdef __cplusplus
}
#endif
#endif
