// SPDX-License-Identifier: MIT
/*
 * model_io.c - models as safetensors files.
 *
 * A model file holds every node's parameters (in node order) and, in
 * __metadata__, {"format": "mcomp", "mcomp.version": MC_VERSION,
 * "mcomp.arch": architecture JSON}. The bytes depend only on the model (no
 * timestamps, no host names), so the same model always saves to the same
 * file. Loading rebuilds the model from the architecture and copies each
 * tensor in by name, checking dtype and shape against what the architecture
 * expects.
 */
#include <stdlib.h>
#include <string.h>

#include <mcomp/model.h>
#include <mcomp/safetensors.h>

#define MODEL_FORMAT "mcomp"

static int count_params(const struct mc_model *m)
{
	int n = 0;

	for (int i = 0; i < m->n_nodes; i++)
		n += m->nodes[i].n_params;
	return n;
}

MC_API int mc_model_serialize(const struct mc_model *m, void **buf, size_t *len, struct mc_err *err)
{
	struct mc_tensor **t;
	const char *meta[6];
	char *arch;
	int n = 0, ret;

	*buf = NULL;
	*len = 0;
	arch = mc_model_arch(m);
	t = calloc((size_t)count_params(m) + 1, sizeof(*t));
	if (!arch || !t) {
		ret =
		    mc_err_set(err, MC_ENOMEM, "model: out of memory describing the architecture");
		goto out;
	}
	for (int i = 0; i < m->n_nodes; i++)
		for (int p = 0; p < m->nodes[i].n_params; p++)
			t[n++] = m->nodes[i].params[p];
	meta[0] = "format";
	meta[1] = MODEL_FORMAT;
	meta[2] = "mcomp.version";
	meta[3] = MC_VERSION;
	meta[4] = "mcomp.arch";
	meta[5] = arch;
	ret = mc_st_serialize(t, n, meta, 3, buf, len, err);
out:
	free(t);
	free(arch);
	return ret;
}

MC_API int mc_model_save(const struct mc_model *m, const char *path, struct mc_err *err)
{
	size_t len;
	void *buf;
	int ret;

	ret = mc_model_serialize(m, &buf, &len, err);
	if (ret)
		return mc_err_prefix(err, "%s", path);
	ret = mc_write_file_atomic(path, buf, len, err);
	free(buf);
	return ret;
}

/* What the file must hold for parameter t: its safetensors dtype and shape
 * (packed sub-byte dtypes are stored as a flat U8 array of bytes). */
static void expected_layout(const struct mc_tensor *t, const char **st_dtype, int *ndim,
			    int64_t *shape)
{
	const struct mc_dtype_traits *tr = mc_dtype_traits(t->dtype);

	*st_dtype = tr->st_name;
	if (tr->bits % 8) {
		*ndim = 1;
		shape[0] = (int64_t)mc_tensor_nbytes(t);
	} else {
		*ndim = t->ndim;
		memcpy(shape, t->shape, sizeof(int64_t) * (size_t)t->ndim);
	}
}

static int same_shape(int na, const int64_t *a, int nb, const int64_t *b)
{
	if (na != nb)
		return 0;
	for (int i = 0; i < na; i++)
		if (a[i] != b[i])
			return 0;
	return 1;
}

/* Copies every parameter of m from f, checking names, dtypes and shapes. */
static int fill_params(struct mc_model *m, const struct mc_st_file *f, struct mc_err *err)
{
	char *used = calloc((size_t)f->n + 1, 1);
	int ret = 0;

	if (!used)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", f->path);
	for (int i = 0; i < m->n_nodes && !ret; i++) {
		for (int p = 0; p < m->nodes[i].n_params && !ret; p++) {
			struct mc_tensor *t = m->nodes[i].params[p];
			const struct mc_st_entry *e;
			char want[256], got[256];
			int64_t shape[MC_MAX_DIMS];
			const char *dt;
			int ndim;

			if (!t->name) {
				ret = mc_err_set(err, MC_EINVAL,
						 "%s: node '%s' has an unnamed parameter", f->path,
						 m->nodes[i].name);
				break;
			}
			e = mc_st_find(f, t->name);
			if (!e) {
				ret = mc_err_set(err, MC_ECORRUPT,
						 "%s: tensor '%s' is missing; the architecture in "
						 "__metadata__ needs it, so the file is incomplete",
						 f->path, t->name);
				break;
			}
			used[e - f->entries] = 1;
			expected_layout(t, &dt, &ndim, shape);
			if (strcmp(e->st_dtype, dt) ||
			    !same_shape(ndim, shape, e->ndim, e->shape)) {
				mc_shape_text(ndim, shape, want, sizeof(want));
				mc_shape_text(e->ndim, e->shape, got, sizeof(got));
				ret = mc_err_set(err, MC_ECORRUPT,
						 "%s: tensor '%s' is %s %s but the architecture "
						 "needs %s %s; the file does not match its own "
						 "__metadata__",
						 f->path, t->name, e->st_dtype, got, dt, want);
				break;
			}
			if (e->nbytes != mc_tensor_nbytes(t)) {
				ret = mc_err_set(err, MC_ECORRUPT,
						 "%s: tensor '%s' holds %zu bytes, expected %zu",
						 f->path, t->name, e->nbytes, mc_tensor_nbytes(t));
				break;
			}
			if (e->nbytes)
				memcpy(t->data, e->data, e->nbytes);
		}
	}
	for (int k = 0; k < f->n && !ret; k++)
		if (!used[k])
			ret = mc_err_set(err, MC_ECORRUPT,
					 "%s: tensor '%s' is not a parameter of the architecture "
					 "in __metadata__; the file was edited or is corrupt",
					 f->path, f->entries[k].name);
	free(used);
	return ret;
}

MC_API struct mc_model *mc_model_load(const char *path, struct mc_err *err)
{
	struct mc_model *m = NULL;
	struct mc_st_file *f;
	const char *arch;

	f = mc_st_read(path, err);
	if (!f)
		return NULL;
	arch = mc_st_meta(f, "mcomp.arch");
	if (!arch) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: no mcomp architecture in __metadata__ (key \"mcomp.arch\"); it was "
			   "not written by mcomp, so mcomp cannot tell which layers the tensors "
			   "belong to",
			   path);
		goto out;
	}
	m = mc_model_from_arch(arch, path, err);
	if (!m)
		goto out;
	if (fill_params(m, f, err)) {
		mc_model_free(m);
		m = NULL;
	}
out:
	mc_st_free(f);
	return m;
}
