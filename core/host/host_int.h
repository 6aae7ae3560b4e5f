/* SPDX-License-Identifier: MIT */
/*
 * host_int.h - pieces of the host shared by loader.c, host.c, measure.c and
 * report.c. Not installed.
 */
#ifndef MCOMP_HOST_INT_H
#define MCOMP_HOST_INT_H

#include <jansson.h>

#include "host/pipeline_int.h"

/* One row of the report: a model measured after a step. A checkpoint keeps
 * the rows of the steps done (checkpoint.c, row_json and restore_rows): a
 * field added here is added there too. */
struct mc_row {
	int step;	    /* 0 for the models as they start, then 1 + pass index */
	char *pass;	    /* pass name, or NULL for the starting row */
	char *model;
	struct mc_measure m; /* m.bytes: the file as the output is written (zstd-coded or not) */
	int64_t bytes_raw;   /* the safetensors bytes before coding */
	int coded;	     /* m.bytes is of a zstd frame (the output ends in .zst) */
	double seconds;	    /* the pass's own run time */
	json_t *metrics;    /* figures the pass reported (mc_ctx_report) */
};

struct mc_report {
	int n, cap;
	struct mc_row *rows;
	/* A failed run: the error, and the step and pass it failed at (step 0,
	 * pass NULL: before the passes or after them, writing the output). */
	const char *error; /* NULL when the run succeeded; borrowed */
	int failed_step;
	const char *failed_pass;
};

/* What a pass's functions (mc_ctx_*) reach: the pipeline and the pass. */
struct mc_ctx {
	struct mc_pipeline *p;
	struct mc_pl_pass *pp;
	int validating;
	struct mc_model **shapes; /* validating: p->models' graphs as the pass will see them */
	struct mc_err *err;
	json_t *metrics;	  /* of the current row */
	struct mc_ckpass *ck;	  /* the pass's checkpoints (checkpoint.c), or NULL */
	int placed;		  /* err came from mc_ctx_error: it names its place and the pass */
	int nested;		  /* a pass run by another (mc_ctx_run_pass): no files, no row */
	int quiet;		  /* its log lines are dropped */
};

/*
 * checkpoint.c: checkpoints of the passes that train, and resuming from one
 * (docs/pipelines.md, "Checkpoints and --resume").
 *
 * mc_ck_pass_begin prepares ctx->ck before pass i runs, when the pass
 * writes checkpoints or the run resumes inside it; *before is the time the
 * pass spent before the checkpoint it resumes from (else 0). rep holds the
 * rows of the steps that finished, and the pass's own last. 0 or an error.
 * mc_ck_pass_end releases ctx->ck.
 */
int mc_ck_pass_begin(struct mc_ctx *ctx, int i, const struct mc_report *rep, double *before,
		     struct mc_err *err);
void mc_ck_pass_end(struct mc_ctx *ctx);
/*
 * When the run resumes: puts every model of p in the state the checkpoint
 * holds, the rows of the steps done before it into rep, and sets *first to
 * the pass to run first. *first = 0 and nothing done when it does not.
 */
int mc_ck_resume_start(struct mc_pipeline *p, struct mc_report *rep, int *first,
		       struct mc_err *err);
/* The manifest's "resumed" entry, or NULL when the run did not resume. */
json_t *mc_ck_manifest(const struct mc_pipeline *p);
/* Nonzero for the output of a pass's checkpoint.path (left out of the manifest). */
int mc_ck_is_checkpoint(const struct mc_pl_output *o);
/* Frees what p->ck holds (mc_pipeline_free). */
void mc_ck_state_free(struct mc_ckstate *s);
/* host.c: a line for the log function of p (NULL pass: the host's). */
void mc_host_log(struct mc_pipeline *p, int level, const char *pass, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* host.c: the model named name, or NULL. */
struct mc_pl_model *mc_host_find_model(struct mc_pipeline *p, const char *name);

void mc_report_clear(struct mc_report *r);
struct mc_row *mc_report_add(struct mc_report *r, int step, const char *pass, const char *model);
/* Drops the last row (a step that did not finish). */
void mc_report_pop(struct mc_report *r);
/* The table a person reads, to out. */
void mc_report_print(const struct mc_report *r, FILE *out);
/*
 * The JSON report with its manifest and status ("ok", or "failed" with
 * r->error), malloc'd into *text. Its outputs are the pass outputs this run
 * wrote and out_path, the output model (NULL: none), each with the digest
 * recorded when it was written (struct mc_pl_output).
 */
int mc_report_text(const struct mc_report *r, const struct mc_pipeline *p, const char *out_path,
		   char **text, struct mc_err *err);
/* Lowercase hex SHA-256 of a file (65 bytes) or of a buffer. */
int mc_sha256_file(const char *path, char hex[65], struct mc_err *err);
void mc_sha256_buf(const void *buf, size_t len, char hex[65]);
/*
 * Loads the file at path as a pass (as mc_pass_open, with every check), for
 * a pipeline that names a pass by file: kept by the registry, apart from the
 * passes found by name. *so is the registry's copy of the path. NULL with
 * err set when refused.
 */
const struct mc_pass *mc_registry_open_file(struct mc_registry *r, const char *path,
					    const char **so, struct mc_err *err);
/*
 * mc_measure_model for a row of the report, called by every rank of a job
 * at the same step: the test batches are shared out over the ranks (the
 * same accuracy to the bit), and only where timed (the rank that writes the
 * report) are the latencies measured, so that the ranks do not time
 * forwards against each other on the same cores; elsewhere they are 0.
 */
int mc_measure_model_job(const struct mc_model *m, const struct mc_dataset *test, int timed,
			 struct mc_measure *out, struct mc_err *err);
/* Nonzero when path names an ONNX file (ends in .onnx): the output is written as ONNX. */
int mc_host_is_onnx(const char *path);
/* Whether path names a TFLite output (ends in .tflite). */
int mc_host_is_tflite(const char *path);

#endif
