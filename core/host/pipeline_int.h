/* SPDX-License-Identifier: MIT */
/*
 * pipeline_int.h - the validated pipeline, as core/pipeline.c (parsing and
 * validation) hands it to core/host.c (running). Not installed.
 */
#ifndef MCOMP_PIPELINE_INT_H
#define MCOMP_PIPELINE_INT_H

#include <mcomp/pipeline.h>

/* A place in the pipeline file (1-based), or line 0 when unknown. */
struct mc_loc {
	const char *file; /* the pipeline's path, or "--set KEY" for an override */
	int line, col;
};

struct mc_pl_split {
	char *name;	       /* "train" */
	char *images, *labels; /* resolved IDX paths (an idx prefix is expanded at load) */
	int64_t first, count;  /* the slice taken; count < 0: to the end */
	struct mc_loc loc;
	struct mc_dataset *data; /* loaded on first use by the host; NULL until then */
};

struct mc_pl_model {
	char *name;
	char *load;	 /* resolved path of the file it was loaded from, or NULL if built */
	char *arch;	 /* architecture JSON when built from a layer list, else NULL */
	struct mc_loc loc;
	struct mc_model *model; /* built (and initialised from the seed) or loaded at validation */
};

/* Where one parameter of a pass was set in the file. */
struct mc_pl_key {
	const struct mc_param_def *def;
	struct mc_loc loc;
};

struct mc_pl_pass {
	const struct mc_pass *pass;
	const char *so_path; /* the shared object it came from (registry storage) */
	void *conf;	     /* pass->conf_size bytes, every parameter set and checked */
	struct mc_loc loc;   /* of the pass's entry in the passes list */
	int n_keys;
	struct mc_pl_key *keys; /* the parameters given in the file (not defaults) */
};

struct mc_pipeline {
	char *path;	      /* as given */
	char *dir;	      /* the folder relative paths resolve against */
	unsigned char *text;  /* the file's bytes, for the manifest digest */
	size_t text_len;
	int n_sets;
	char **sets;	      /* the --set overrides applied, in order */
	uint64_t seed;
	int n_splits;
	struct mc_pl_split *splits;
	int n_models;
	struct mc_pl_model *models;
	int n_passes;
	struct mc_pl_pass *passes;
	char *output_model;   /* model saved at the end, or NULL */
	char *output_path;    /* resolved */
	char *report_path;    /* resolved, or NULL */
	struct mc_registry *reg; /* borrowed */
};

/* Frees one pass's conf and keys (used by mc_pipeline_free). */
void mc_pl_pass_clear(struct mc_pl_pass *pp);

/*
 * Host side of validation (core/host.c): calls each pass's check() with a
 * validation context, in pipeline order. Called by mc_pipeline_load after
 * the schema checks pass. Errors carry the pass's place in the file.
 */
int mc_host_check(struct mc_pipeline *p, struct mc_err *err);

/* Resolves path against dir unless absolute; malloc'd. */
char *mc_path_resolve(const char *dir, const char *path);

#endif
