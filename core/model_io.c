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
 *
 * Sparse tensors. An F32 parameter with many zeros is stored in the smallest
 * of three forms, header bytes included (see docs/prune.md):
 *   dense    NAME                F32 [shape]          as always;
 *   bitmask  NAME.__mask         U8  [ceil(numel/8)]  bit k (LSB first) of byte
 *                                                     k/8 set when element k of
 *                                                     the row-major tensor is
 *                                                     stored;
 *            NAME.__values       F32 [nnz]            those elements, in order;
 *   csr      NAME.__indptr       I32 [rows + 1]       rows = shape[0];
 *            NAME.__indices      I32 [nnz]            column in [0, numel/rows);
 *            NAME.__values       F32 [nnz].
 * An I8 tensor (quantized weights) is stored the same way with I8 values.
 * __metadata__["mcomp.sparse"] is a JSON object naming each sparse tensor:
 * {"fc1.weight": {"format": "bitmask", "shape": [512, 784], "nnz": 40141}}.
 * "Zero" means all bits zero, so -0.0 is stored and loading restores the
 * exact bits. A file without sparse tensors has no "mcomp.sparse" key and
 * is byte-for-byte what it was before sparse storage existed.
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

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

enum sparse_form { FORM_DENSE, FORM_BITMASK, FORM_CSR };

/* Bytes of one element of the dtypes stored sparse (F32 and S8), else 0. */
static int sparse_esz(enum mc_dtype dt)
{
	return dt == MC_F32 ? 4 : dt == MC_S8 ? 1 : 0;
}

/* Element i is stored when any bit is set (so -0.0 survives). */
static int is_stored(const void *x, int64_t i, int esz)
{
	const uint8_t *b = (const uint8_t *)x + i * esz;

	for (int k = 0; k < esz; k++)
		if (b[k])
			return 1;
	return 0;
}

/* The cheapest form of t, counting the header entries each form adds
 * (about 70 bytes of JSON per tensor, 60 per metadata entry, plus names). */
static enum sparse_form choose_form(const struct mc_tensor *t, int64_t *nnz)
{
	int64_t rows, dense, mask, csr, name, n = 0;
	int esz = sparse_esz(t->dtype);

	*nnz = 0;
	if (!esz || !t->name || t->numel < 1 || t->numel > INT32_MAX)
		return FORM_DENSE;
	for (int64_t i = 0; i < t->numel; i++)
		n += is_stored(t->data, i, esz);
	*nnz = n;
	rows = t->ndim > 1 ? t->shape[0] : 1;
	name = (int64_t)strlen(t->name);
	dense = esz * t->numel;
	mask = (t->numel + 7) / 8 + esz * n + 2 * (name + 80) + name + 60;
	csr = 4 * (rows + 1) + (4 + esz) * n + 3 * (name + 80) + name + 60;
	if (mask < dense && mask <= csr)
		return FORM_BITMASK;
	if (csr < dense)
		return FORM_CSR;
	return FORM_DENSE;
}

/* A new piece "NAME.suffix" of n elements, appended to t[*k]. */
static struct mc_tensor *piece(struct mc_tensor **t, int *k, const struct mc_tensor *of,
			       const char *suffix, enum mc_dtype dt, int64_t n, struct mc_err *err)
{
	char name[1024];

	snprintf(name, sizeof(name), "%s.%s", of->name, suffix);
	t[*k] = mc_tensor_new(name, dt, 1, &n, err);
	return t[*k] ? t[(*k)++] : NULL;
}

/* Appends the pieces of t in form f to out[*k] and its entry to sparse. */
static int add_sparse(const struct mc_tensor *t, enum sparse_form f, int64_t nnz,
		      struct mc_tensor **out, int *k, json_t *sparse, struct mc_err *err)
{
	const uint8_t *x = t->data;
	int esz = sparse_esz(t->dtype);
	struct mc_tensor *v, *a, *b;
	json_t *e, *shape;
	int64_t at = 0;

	if (f == FORM_BITMASK) {
		uint8_t *mask;

		if (!(a = piece(out, k, t, "__mask", MC_U8, (t->numel + 7) / 8, err)))
			return err->code;
		if (!(v = piece(out, k, t, "__values", t->dtype, nnz, err)))
			return err->code;
		mask = a->data;
		for (int64_t i = 0; i < t->numel; i++) {
			if (!is_stored(x, i, esz))
				continue;
			mask[i / 8] |= (uint8_t)(1u << (i % 8));
			memcpy((uint8_t *)v->data + esz * at++, x + esz * i, esz);
		}
	} else {
		int64_t rows = t->ndim > 1 ? t->shape[0] : 1, cols = t->numel / rows;
		int32_t *ptr, *idx;

		if (!(a = piece(out, k, t, "__indptr", MC_S32, rows + 1, err)))
			return err->code;
		if (!(b = piece(out, k, t, "__indices", MC_S32, nnz, err)))
			return err->code;
		if (!(v = piece(out, k, t, "__values", t->dtype, nnz, err)))
			return err->code;
		ptr = a->data;
		idx = b->data;
		for (int64_t r = 0; r < rows; r++) {
			for (int64_t c = 0; c < cols; c++) {
				if (!is_stored(x, r * cols + c, esz))
					continue;
				idx[at] = (int32_t)c;
				memcpy((uint8_t *)v->data + esz * at++, x + esz * (r * cols + c), esz);
			}
			ptr[r + 1] = (int32_t)at;
		}
	}
	e = json_object();
	shape = json_array();
	if (!e || !shape) {
		json_decref(e);
		json_decref(shape);
		return mc_err_set(err, MC_ENOMEM, "model: out of memory");
	}
	for (int d = 0; d < t->ndim; d++)
		json_array_append_new(shape, json_integer(t->shape[d]));
	json_object_set_new(e, "format", json_string(f == FORM_BITMASK ? "bitmask" : "csr"));
	json_object_set_new(e, "shape", shape);
	json_object_set_new(e, "nnz", json_integer(nnz));
	if (json_object_set_new(sparse, t->name, e))
		return mc_err_set(err, MC_ENOMEM, "model: out of memory");
	return 0;
}

MC_API int mc_model_serialize(const struct mc_model *m, void **buf, size_t *len, struct mc_err *err)
{
	struct mc_tensor **t, **own;
	json_t *sparse = NULL;
	char *arch, *sp = NULL;
	const char *meta[8];
	int n = 0, n_own = 0, ret, cap = 3 * count_params(m) + 1;

	*buf = NULL;
	*len = 0;
	arch = mc_model_arch(m);
	t = calloc((size_t)cap, sizeof(*t));
	own = calloc((size_t)cap, sizeof(*own));
	sparse = json_object();
	if (!arch || !t || !own || !sparse) {
		ret =
		    mc_err_set(err, MC_ENOMEM, "model: out of memory describing the architecture");
		goto out;
	}
	for (int i = 0; i < m->n_nodes; i++) {
		for (int p = 0; p < m->nodes[i].n_params; p++) {
			struct mc_tensor *x = m->nodes[i].params[p];
			int64_t nnz;
			enum sparse_form f = choose_form(x, &nnz);
			int first = n_own;

			if (f == FORM_DENSE) {
				t[n++] = x;
				continue;
			}
			ret = add_sparse(x, f, nnz, own, &n_own, sparse, err);
			if (ret)
				goto out;
			while (first < n_own)
				t[n++] = own[first++];
		}
	}
	meta[0] = "format";
	meta[1] = MODEL_FORMAT;
	meta[2] = "mcomp.version";
	meta[3] = MC_VERSION;
	meta[4] = "mcomp.arch";
	meta[5] = arch;
	if (json_object_size(sparse)) {
		sp = json_dumps(sparse, JSON_COMPACT);
		if (!sp) {
			ret = mc_err_set(err, MC_ENOMEM, "model: out of memory");
			goto out;
		}
		meta[6] = "mcomp.sparse";
		meta[7] = sp;
	}
	ret = mc_st_serialize(t, n, meta, sp ? 4 : 3, buf, len, err);
out:
	for (int i = 0; own && i < n_own; i++)
		mc_tensor_free(own[i]);
	free(own);
	free(t);
	free(sp);
	json_decref(sparse);
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

/* The "mcomp.sparse" object of f (NULL when the file has none), checked
 * to name only parameters of m. */
static int sparse_index(const struct mc_model *m, const struct mc_st_file *f, json_t **out,
			struct mc_err *err)
{
	const char *text = mc_st_meta(f, "mcomp.sparse"), *key;
	json_error_t je;
	json_t *o, *v;

	*out = NULL;
	if (!text)
		return 0;
	o = json_loads(text, JSON_REJECT_DUPLICATES, &je);
	if (!o || !json_is_object(o)) {
		json_decref(o);
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: __metadata__ \"mcomp.sparse\" is not a JSON object (%s); the "
				  "file is corrupt",
				  f->path, o ? "another type" : je.text);
	}
	json_object_foreach (o, key, v) {
		if (!mc_model_param(m, key) || mc_st_find(f, key)) {
			json_decref(o);
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: __metadata__ \"mcomp.sparse\" names '%s', which is "
					  "%s; the file was edited or is corrupt",
					  f->path, key,
					  mc_st_find(f, key) ? "also stored dense"
							     : "not a parameter of the architecture");
		}
	}
	*out = o;
	return 0;
}

/* The piece NAME.suffix of dtype dt and n elements, marked used; NULL with err. */
static const struct mc_st_entry *sparse_piece(const struct mc_st_file *f, const char *name,
					      const char *suffix, const char *dt, int64_t n,
					      char *used, struct mc_err *err)
{
	const struct mc_st_entry *e;
	char full[1024];

	snprintf(full, sizeof(full), "%s.%s", name, suffix);
	e = mc_st_find(f, full);
	if (!e) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: tensor '%s' is missing; \"mcomp.sparse\" stores '%s' with it", f->path,
			   full, name);
		return NULL;
	}
	if (strcmp(e->st_dtype, dt) || e->ndim != 1 || e->shape[0] != n) {
		mc_err_set(err, MC_ECORRUPT, "%s: tensor '%s' should be %s [%lld]; the file is corrupt",
			   f->path, full, dt, (long long)n);
		return NULL;
	}
	used[e - f->entries] = 1;
	return e;
}

/* Fills dense t from its sparse pieces described by desc, checking them all. */
static int load_sparse(struct mc_tensor *t, const struct mc_st_file *f, json_t *desc, char *used,
		       struct mc_err *err)
{
	const struct mc_st_entry *a, *b, *v;
	json_t *shape = json_object_get(desc, "shape"), *jn = json_object_get(desc, "nnz");
	const char *form = json_string_value(json_object_get(desc, "format"));
	const uint8_t *vals;
	int64_t nnz, at = 0;
	char *dst = t->data;
	int esz = sparse_esz(t->dtype);
	int ok = esz && json_is_array(shape) &&
		 json_array_size(shape) == (size_t)t->ndim && json_is_integer(jn) && form;

	for (int d = 0; ok && d < t->ndim; d++)
		ok = json_integer_value(json_array_get(shape, (size_t)d)) == t->shape[d];
	nnz = ok ? json_integer_value(jn) : -1;
	if (!ok || nnz < 0 || nnz > t->numel || (strcmp(form, "bitmask") && strcmp(form, "csr")))
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: \"mcomp.sparse\" entry of '%s' does not describe an F32 or "
				  "I8 %s tensor as {\"format\": \"bitmask\" or \"csr\", \"shape\", "
				  "\"nnz\"}; the file is corrupt",
				  f->path, t->name, "of the architecture's shape");
	v = sparse_piece(f, t->name, "__values", esz == 4 ? "F32" : "I8", nnz, used, err);
	if (!v)
		return err->code;
	vals = v->data;
	memset(dst, 0, mc_tensor_nbytes(t));
	if (!strcmp(form, "bitmask")) {
		const uint8_t *mask;

		a = sparse_piece(f, t->name, "__mask", "U8", (t->numel + 7) / 8, used, err);
		if (!a)
			return err->code;
		mask = a->data;
		for (int64_t i = 0; i < (t->numel + 7) / 8 * 8; i++) {
			if (!(mask[i / 8] >> (i % 8) & 1))
				continue;
			if (i >= t->numel || at >= nnz)
				return mc_err_set(err, MC_ECORRUPT,
						  "%s: tensor '%s.__mask' sets %s; the file is corrupt",
						  f->path, t->name,
						  i >= t->numel ? "padding bits" : "more bits than nnz");
			memcpy(dst + esz * i, vals + esz * at++, esz);
		}
	} else {
		int64_t rows = t->ndim > 1 ? t->shape[0] : 1, cols = t->numel / rows;
		const uint8_t *pp, *ip;
		int32_t p0, p1, c, last;
		int bad;

		a = sparse_piece(f, t->name, "__indptr", "I32", rows + 1, used, err);
		b = a ? sparse_piece(f, t->name, "__indices", "I32", nnz, used, err) : NULL;
		if (!b)
			return err->code;
		pp = a->data;
		ip = b->data;
		memcpy(&p0, pp, 4);
		bad = p0 != 0;
		for (int64_t r = 0; r < rows && !bad; r++) {
			memcpy(&p0, pp + 4 * r, 4);
			memcpy(&p1, pp + 4 * (r + 1), 4);
			bad = p1 < p0 || p1 > nnz;
			for (last = -1; !bad && at < p1; at++, last = c) {
				memcpy(&c, ip + 4 * at, 4);
				bad = c <= last || c >= cols;
				if (!bad)
					memcpy(dst + esz * (r * cols + c), vals + esz * at,
					       esz);
			}
		}
		if (bad || at != nnz)
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: tensor '%s' has CSR index arrays out of order or range; "
					  "the file is corrupt",
					  f->path, t->name);
		return 0;
	}
	if (at != nnz)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: tensor '%s.__mask' sets %lld bits for %lld values; the file is "
				  "corrupt",
				  f->path, t->name, (long long)at, (long long)nnz);
	return 0;
}

/* Copies every parameter of m from f, checking names, dtypes and shapes. */
static int fill_params(struct mc_model *m, const struct mc_st_file *f, struct mc_err *err)
{
	char *used = calloc((size_t)f->n + 1, 1);
	json_t *sparse = NULL;
	int ret = 0;

	if (!used)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", f->path);
	ret = sparse_index(m, f, &sparse, err);
	if (ret) {
		free(used);
		return ret;
	}
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
			if (!e && sparse && json_object_get(sparse, t->name)) {
				ret = load_sparse(t, f, json_object_get(sparse, t->name), used,
						  err);
				continue;
			}
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
	json_decref(sparse);
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
