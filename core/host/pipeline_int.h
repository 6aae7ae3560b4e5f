/* SPDX-License-Identifier: MIT */
/*
 * pipeline_int.h - the validated pipeline, as the pipeline reader
 * (core/host/pipeline.c and the files below) hands it to core/host/host.c
 * (running); and, at the end, the interface between the reader's files.
 * Not installed.
 */
#ifndef MCOMP_PIPELINE_INT_H
#define MCOMP_PIPELINE_INT_H

#include <sys/types.h>

#include <mcomp/pipeline.h>

#include "io/ydoc.h"

/* A place in the pipeline file (1-based), or line 0 when unknown. */
struct mc_loc {
	const char *file; /* the pipeline's path, or "--set KEY" for an override */
	int line, col;
};

/* The preprocessing keys of a split (scale, mean, std), as schema.c's
 * table of them binds them. */
struct mc_pl_pre {
	double scale; /* 0: the default of the input dtype */
	struct mc_list mean, std;
};

struct mc_pl_split {
	char *name;	       /* "train" */
	enum mc_data_format format;
	/* The files read (resolved): IDX images and labels (an idx prefix is
	 * expanded at load), the .npy files of x and y; for npz the archive
	 * and NULL. */
	char *images, *labels;
	char *x_key, *y_key;   /* npz: the names of the arrays; else NULL */
	struct mc_pl_pre pre;
	int64_t first, count;  /* the slice taken; count < 0: to the end */
	struct mc_loc loc;
	struct mc_dataset *data; /* loaded on first use by the host; NULL until then */
	int read_before;	 /* read by the run a resumed one continues (checkpoint.c) */
};

/* schema.c: frees what split s owns (used by mc_pipeline_free). */
void mc_pl_split_clear(struct mc_pl_split *s);
/* host.c: the data source split s describes (borrowing its strings). */
void mc_pl_split_source(const struct mc_pl_split *s, struct mc_data_source *src);

struct mc_pl_model {
	char *name;
	char *load;	 /* resolved path of the file it was loaded from, or NULL if built */
	struct mc_loc loc;
	struct mc_model *model; /* loaded at validation, or built as shapes only (arch_only)
				 * there and given data from the seed by mc_pipeline_run */
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

/*
 * A file the pipeline writes: the output model, the report, or the file of
 * a pass's output parameter (MC_PARAM_FOUTPUT). All are checked together
 * at validation (outputs.c) and written through the host (host.c).
 */
struct mc_pl_output {
	char *path;	/* resolved; borrowed from the pipeline or the pass's conf */
	char what[160]; /* "output path", "report", "pass 'cascade', plot" */
	struct mc_loc loc;
	int pass;			/* index of the pass, or -1 */
	const struct mc_param_def *def; /* the pass's row, or NULL */
	int written;			/* put in place by this run */
	char sha256[65];
};

/* An input file, as its device and inode (stat, links followed). */
struct mc_pl_input {
	dev_t dev;
	ino_t ino;
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
	unsigned output_onnx_flags; /* MC_ONNX_* of an ONNX output (output: int4: f32) */
	int output_zstd_level;	    /* output: zstd_level (0: MC_ZSTD_LEVEL) */
	char *report_path;    /* resolved, or NULL */
	char *out_tag;	      /* put into every output's name (mc_pipeline_load_tagged), or NULL */
	int no_writes;	      /* mc_pipeline_set_writes(p, 0): another rank writes the files */
	struct mc_loc output_loc, report_loc; /* of their paths in the file */
	int n_outputs;
	struct mc_pl_output *outputs; /* every file written (outputs.c), in file order */
	int n_inputs;
	struct mc_pl_input *inputs;   /* every file read, for the check at write time */
	int report_withdrawn;	      /* the previous report was removed by this run */
	struct mc_ckstate *ck;	 /* checkpoints: inputs' digests, the one resumed from */
	struct mc_registry *reg; /* borrowed */
	/* Where the lines for a person go (mc_pipeline_set_log); NULL: nowhere. */
	void (*log)(void *arg, int level, const char *pass, const char *msg);
	void *log_arg;
};

/* Frees one pass's conf and keys (used by mc_pipeline_free). */
void mc_pl_pass_clear(struct mc_pl_pass *pp);

/*
 * Host side of validation (core/host/host.c): calls each pass's check() with a
 * validation context, in pipeline order. Called by mc_pipeline_load after
 * the schema checks pass. Errors carry the pass's place in the file.
 */
int mc_host_check(struct mc_pipeline *p, struct mc_err *err);

/*
 * outputs.c: collects every file the pipeline writes into p->outputs and
 * every file it reads into p->inputs, and reports (at each output's place)
 * one that is not a regular file or nothing, is an input, or is another
 * output: compared by device and inode, or by the resolved folder and name
 * for a file not there yet; never by spelling.
 */
struct ld;
void mc_pl_check_outputs(struct ld *l);
/* outputs.c: the output of pass index pass and row def (or of path for
 * pass -1), or NULL. */
struct mc_pl_output *mc_pl_output_find(struct mc_pipeline *p, int pass,
				       const struct mc_param_def *def, const char *path);
/* outputs.c: 0 when path (about to be replaced) is no input of p, else
 * MC_EINVAL naming it: the check of validation again, at write time. */
int mc_pl_output_recheck(const struct mc_pipeline *p, const char *path, struct mc_err *err);

/* Resolves path against dir unless absolute; malloc'd. */
char *mc_path_resolve(const char *dir, const char *path);

/*
 * The pipeline reader, between its files:
 *   pipeline.c   reads the file, runs the steps below, frees the pipeline
 *   overrides.c  applies the --set overrides to the YAML tree
 *   schema.c     checks the sections, and reads typed values for layers.c
 *   layers.c     builds the models given by a layer list (build:)
 * Errors go to the loader's list at the place of their node (mc_errlist_at),
 * and checking goes on, so that one run reports all it finds.
 */

/* The pipeline with what only the reader needs to free. */
struct pl_full {
	struct mc_pipeline p;
	struct mc_registry *own_reg; /* opened here when the caller gave none */
	char **labels;		     /* "--set KEY" per override: the file of its places */
};

/* The reader's state while validating one pipeline. */
struct ld {
	struct pl_full *f;
	struct mc_pipeline *p;
	struct mc_ydoc *doc;
	struct mc_errlist el;
	struct mc_err tmp; /* messages of the functions called */
	const char **split_names, **model_names; /* NULL-terminated, as the file names them */
	struct mc_pl_blocks *blocks;		 /* the blocks: section (arena), or NULL */
};

/*
 * overrides.c: applies override n (l->p->sets[n], "KEY=VALUE") to the tree
 * *root, which it may replace (a new mapping when *root is NULL). Returns 0,
 * or MC_EINVAL / MC_ENOMEM with the error reported under the override's label.
 */
int mc_pl_apply_set(struct ld *l, int n, struct mc_ynode **root);

/* schema.c: checks the whole tree (root NULL: an empty file) and fills l->p. */
void mc_pl_validate(struct ld *l, struct mc_ynode *root);

/* schema.c: helpers layers.c shares. Those given l report their errors at y. */
/* "a, b, c" of a NULL-terminated list into buf (of n bytes); returns buf. */
const char *mc_pl_join(const char *const *words, char *buf, size_t n);
/* Reports every key of map m not in allowed, with the nearest allowed key. */
void mc_pl_check_keys(struct ld *l, const struct mc_ynode *m, const char *const *allowed,
		      const char *where);
/* 1 when y is a mapping, else 0 (reported). */
int mc_pl_want_map(struct ld *l, const struct mc_ynode *y, const char *what);
/* The text of a non-null scalar, else NULL (reported). */
const char *mc_pl_want_scalar(struct ld *l, const struct mc_ynode *y, const char *what);
/* A plain decimal integer in [lo, hi] into *out: 0, else -1 (reported). */
int mc_pl_want_int(struct ld *l, const struct mc_ynode *y, const char *what, int64_t lo,
		   int64_t hi, int64_t *out);
/* Sets parameter def of conf from y (a scalar, or a list): 0, else -1 (reported). */
int mc_pl_set_value(struct ld *l, const struct mc_param_def *def, void *conf,
		    const struct mc_ynode *y, const char *where);
/* 1 when s is a usable name of a model, split or layer (letters, digits, '_', '-'). */
int mc_pl_valid_name(const char *s);
/* msg without a leading "ORIGIN: " that repeats what the caller prints. */
const char *mc_pl_strip_origin(const char *msg, const char *origin);

/*
 * layers.c: builds model pm from its build: section (key: the model's name
 * in the file) and initialises it from the seed; sets pm->model.
 * Returns 0, or -1 with every error reported.
 */
int mc_pl_build_model(struct ld *l, const struct mc_ynode *key, const struct mc_ynode *build,
		      struct mc_pl_model *pm);

/*
 * blocks.c: the blocks: section, layer lists with typed parameters that a
 * build: uses like ops. Everything lives in the YAML document's arena.
 */
#define MC_PL_INT_MAX 2147483647 /* an int argument, and what expressions compute */
#define MC_PL_MAX_REPEAT 1000	 /* repeat: of one use */
#define MC_PL_MAX_NESTING 16	 /* blocks inside blocks */

enum mc_pl_type { MC_PL_INT, MC_PL_FLOAT, MC_PL_BOOL, MC_PL_STRING };

struct mc_pl_val {
	enum mc_pl_type type;
	int64_t i;
	double f;
	int b;
	const char *s;
	int plain; /* a string: it was unquoted */
};

struct mc_pl_bparam {
	const char *name;
	enum mc_pl_type type;
	const struct mc_ynode *at;  /* its key under params: */
	const struct mc_ynode *def; /* its default's node, or NULL: required */
	struct mc_pl_val value;	    /* the default */
};

struct mc_pl_block {
	const char *name;
	const struct mc_ynode *key;    /* its name under blocks: */
	const struct mc_ynode *layers; /* the template, "$" unreplaced; NULL when malformed */
	int n_params;
	struct mc_pl_bparam *params;
	int usable; /* 0: its definition has errors (reported), so it is not expanded */
	int mark;   /* for the search of cycles */
};

struct mc_pl_blocks {
	int n;
	struct mc_pl_block *b;
};

struct mc_pl_env;

/* Reads and checks the blocks: section (NULL: none) into l->blocks. */
void mc_pl_load_blocks(struct ld *l, const struct mc_ynode *blocks);
/* The block named name, or NULL. */
const struct mc_pl_block *mc_pl_block_find(const struct ld *l, const char *name);
/* The node naming a layer item's op or block ("relu", or the key of {linear: 10}), or NULL. */
const struct mc_ynode *mc_pl_layer_kind(const struct mc_ynode *y);
/* The names of the ops and then of the blocks, NULL-terminated, for suggestions. */
const char *const *mc_pl_layer_kinds(struct ld *l);
/*
 * The arguments of one use of block b, at: args (a mapping, a scalar for
 * the first parameter, or NULL), then first (a mapping or NULL) over them,
 * then the defaults; in: the channels of the block's input. NULL when one is
 * unknown, of the wrong type or missing (reported, prefixed by where).
 */
struct mc_pl_env *mc_pl_block_bind(struct ld *l, const struct mc_pl_block *b,
				   const struct mc_ynode *at, const struct mc_ynode *args,
				   const struct mc_ynode *first, int64_t in, const char *where);
/* y, or a copy of it with each "$" scalar replaced by its value under env; NULL (reported). */
const struct mc_ynode *mc_pl_subst(struct ld *l, const struct mc_ynode *y,
				   const struct mc_pl_env *env, const char *where);
/* The value of a layer's when: 1 or 0, else -1 (reported). */
int mc_pl_want_when(struct ld *l, const struct mc_ynode *y, const char *where);

#endif
