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
 * pipeline before any pass runs, then for each pass calls init(conf) once,
 * run(ctx, state, conf), and exit(state). conf is a struct of conf_size
 * bytes filled by the host; it is read-only to the pass.
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

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped whenever struct mc_pass, struct mc_param_def or any public struct
 * a pass can see changes layout. */
#define MC_PASS_ABI 2
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
	/* Optional: checks across parameters and models at validation time,
	 * before any pass runs (models are built or loaded; data sets are not). */
	int (*check)(struct mc_ctx *ctx, const void *conf);
	/* Optional: per-use state. */
	int (*init)(const void *conf, void **state, struct mc_err *err);
	int (*run)(struct mc_ctx *ctx, void *state, const void *conf);
	void (*exit)(void *state);
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
/* The pipeline's seed. */
MC_API uint64_t mc_ctx_seed(struct mc_ctx *ctx);
/* Nonzero while the host is validating (in check), zero while running. */
MC_API int mc_ctx_validating(struct mc_ctx *ctx);
/*
 * Records an error and returns code. key names the parameter at fault (its
 * place in the pipeline file is added) or is NULL for the pass as a whole.
 */
MC_API int mc_ctx_error(struct mc_ctx *ctx, const char *key, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* The error struct, for calling library functions that take one. */
MC_API struct mc_err *mc_ctx_err(struct mc_ctx *ctx);
/* A line of progress for the user on stderr, prefixed with the pass name. */
MC_API void mc_ctx_log(struct mc_ctx *ctx, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
/* A figure of the pass's own for the report row ("final_loss", 0.31). */
MC_API int mc_ctx_report(struct mc_ctx *ctx, const char *key, double value);

#ifdef __cplusplus
}
#endif
#endif
