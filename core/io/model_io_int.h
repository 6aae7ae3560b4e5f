/* SPDX-License-Identifier: MIT */
/*
 * model_io_int.h - the pieces of model files that files holding several
 * models (cascades, mcomp/cascade.h) reuse: one model's tensors written under
 * a name prefix ("student/") into a shared tensor list, and filled back from
 * a parsed file with the same prefix. With prefix "" these are exactly what
 * mc_model_serialize and mc_model_load do.
 */
#ifndef MCOMP_MODEL_IO_INT_H
#define MCOMP_MODEL_IO_INT_H

#include <jansson.h>

#include <mcomp/model.h>
#include <mcomp/safetensors.h>

/*
 * The tensors of one file being built, in file order. Each entry of t is a
 * model's parameter (borrowed, when its name needs no prefix), a renamed view
 * of one (sharing its data) or a sparse piece made for the file; the list
 * frees what it made. sparse is the "mcomp.sparse" object, keyed by full name.
 * Zero-initialize, fill with mc_model_add_tensors, release with
 * mc_st_list_release.
 */
struct mc_st_list {
	struct mc_tensor **t;
	int n, cap;
	struct mc_tensor **own;	  /* sparse pieces: mc_tensor_free */
	struct mc_tensor **views; /* renamed views: free the name and the struct only */
	int n_own, n_views;
	json_t *sparse;
};

/* Appends m's parameters (node order, each dense or in its cheapest sparse
 * form) named prefix + name. 0, or MC_ENOMEM / MC_EINVAL with err set. */
int mc_model_add_tensors(const struct mc_model *m, const char *prefix, struct mc_st_list *l,
			 struct mc_err *err);
/* The "mcomp.sparse" metadata value (malloc'd) into *text, or NULL when no
 * tensor is sparse. 0 or MC_ENOMEM. */
int mc_st_list_sparse_text(const struct mc_st_list *l, char **text, struct mc_err *err);
void mc_st_list_release(struct mc_st_list *l);

/* f's "mcomp.sparse" object (NULL when the file has none; MC_ECORRUPT when
 * it is not a JSON object). The caller json_decref()s it. */
int mc_sparse_index(const struct mc_st_file *f, json_t **out, struct mc_err *err);

/*
 * Copies every parameter of m from f's tensor prefix + name (dense, or
 * sparse as sparse describes), checking dtypes and shapes, and sets used[k].
 * m's parameters must be freshly allocated (zero): sparse tensors write
 * their stored values only. Sets used[k]
 * for each entry k of f it read. First checks that each key of sparse
 * starting with prefix names a parameter of m that is not also stored dense.
 * 0, or MC_ECORRUPT / MC_EINVAL naming f->path.
 */
int mc_model_fill(struct mc_model *m, const struct mc_st_file *f, const char *prefix,
		  json_t *sparse, char *used, struct mc_err *err);

/*
 * Checks m (of shapes only, before its data is allocated) against what f
 * stores for it under prefix: every layer that needs values must store at
 * least one nonzero value (dense) or one value (sparse), so that a file of
 * a few hundred bytes cannot declare a layer of gigabytes and have it
 * zero-filled. 0, or MC_ECORRUPT naming f->path and the layer.
 */
int mc_model_check_stored(const struct mc_model *m, const struct mc_st_file *f,
			  const char *prefix, json_t *sparse, struct mc_err *err);

/* The "mcomp.ops" metadata of m: {op: pass} for every plugin op it uses, as
 * JSON (malloc'd), or NULL (0 returned) when it uses none. */
int mc_model_ops_text(const struct mc_model *m, char **text, struct mc_err *err);
/* Checks that every op the metadata key of f names is registered; else
 * MC_EPLUGIN naming the op and the pass that provides it. */
int mc_model_ops_check(const struct mc_st_file *f, const char *key, struct mc_err *err);

#endif
