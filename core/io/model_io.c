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
 * An I8 tensor (quantized weights) is stored the same way with I8 values,
 * and a packed 4-bit one (MC_Q4, nibbles q + 8) with its stored codes packed
 * the same way: NAME.__values U8 [ceil(nnz/2)], code j in the low (j even)
 * or high nibble of byte j/2, the last high nibble 0 when nnz is odd; its
 * "zero" is q = 0 (nibble 8), which loading puts back everywhere else.
 * __metadata__["mcomp.sparse"] is a JSON object naming each sparse tensor:
 * {"fc1.weight": {"format": "bitmask", "shape": [512, 784], "nnz": 40141}}.
 * "Zero" means all bits zero, so -0.0 is stored and loading restores the
 * exact bits. A file without sparse tensors has no "mcomp.sparse" key and
 * is byte-for-byte what it was before sparse storage existed.
 *
 * Clustered tensors (weight sharing, docs/deep-compression.md). An F32
 * tensor whose stored elements take at most 256 distinct values (as the
 * cluster pass leaves them) is stored, when that is smaller, as a codebook
 * and one packed code per stored element:
 *            NAME.__codebook     F32 [k]              the distinct values, in
 *                                                     ascending order;
 *            NAME.__codes        U8  [ceil(n*bits/8)] code i in bits [i*bits,
 *                                                     (i+1)*bits) of the byte
 *                                                     stream, LSB first;
 * with the positions of the n stored elements as above (NAME.__mask, or
 * NAME.__indptr and NAME.__indices; +0.0 is then implicit and never in the
 * codebook) or, with "format": "dense", every element coded (n = numel).
 * Its "mcomp.sparse" entry adds "clusters": k and "bits": the fewest bits
 * (1 to 8) that hold k codes. Decoding gives the exact values, so a loaded
 * file saves to the same bytes.
 *
 * Files of several models (cascades) store each one's tensors under a name
 * prefix ("student/fc1.weight"); the functions of model_io_int.h write and
 * read one model's share of such a file, and a model file is the case of
 * prefix "".
 */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "base/base_int.h"
#include "base/limits.h"
#include "graph/model_int.h"
#include "io/model_io_int.h"

#define MODEL_FORMAT "mcomp"

static int count_params(const struct mc_model *m)
{
	int n = 0;

	for (int i = 0; i < m->n_nodes; i++)
		n += m->nodes[i]->n_params;
	return n;
}

/* How a tensor is stored: dense, or its stored elements placed by a bitmask
 * or CSR arrays (or, clustered, all of them: FORM_ALL) with their values
 * as they are or as codes into a codebook. */
enum sparse_form { FORM_DENSE, FORM_BITMASK, FORM_CSR, FORM_ALL };

static const char *const form_names[] = { "dense", "bitmask", "csr", "dense" };

/* Bits of one element of the dtypes stored sparse (F32, S8, Q4), else 0. */
static int sparse_bits(enum mc_dtype dt)
{
	return dt == MC_F32 ? 32 : dt == MC_S8 ? 8 : dt == MC_Q4 ? 4 : 0;
}

/* Nibble i of packed 4-bit codes. */
static unsigned nibble(const uint8_t *x, int64_t i)
{
	return (x[i / 2] >> (4 * (i % 2))) & 0xfu;
}

/* Element i is stored when any bit is set (so -0.0 survives); a 4-bit one
 * when its code is not q = 0 (nibble 8). */
static int is_stored(const void *x, int64_t i, int bits)
{
	const uint8_t *b = (const uint8_t *)x + i * (bits / 8);

	if (bits == 4)
		return nibble(x, i) != 8;
	for (int k = 0; k < bits / 8; k++)
		if (b[k])
			return 1;
	return 0;
}

/* Element di of dst = element si of src, both of bits-wide elements. */
static void copy_elem(uint8_t *dst, int64_t di, const uint8_t *src, int64_t si, int bits)
{
	if (bits == 4) {
		int sh = 4 * (int)(di % 2);

		dst[di / 2] = (uint8_t)((dst[di / 2] & ~(0xfu << sh)) | nibble(src, si) << sh);
	} else {
		memcpy(dst + di * (bits / 8), src + si * (bits / 8), (size_t)(bits / 8));
	}
}

/* ---------------------------------------------------------------- codebooks */

#define CODEBOOK_MAX 256

/* The distinct values of a clustered tensor: k of them, ascending by key. */
struct codebook {
	int k, bits;
	uint32_t key[CODEBOOK_MAX];
	float val[CODEBOOK_MAX];
};

/* A key whose unsigned order is the order of the floats: -0.0 before +0.0,
 * and a total order over every bit pattern (NaNs at the ends). */
static uint32_t order_key(float v)
{
	uint32_t b;

	memcpy(&b, &v, 4);
	return b & 0x80000000u ? ~b : b | 0x80000000u;
}

static int bits_for(int k)
{
	int b = 1;

	while ((1 << b) < k)
		b++;
	return b;
}

static int key_cmp(const void *pa, const void *pb)
{
	uint32_t a = *(const uint32_t *)pa, b = *(const uint32_t *)pb;

	return (a > b) - (a < b);
}

/*
 * Fills cb with the distinct values of x[0..n) other than +0.0 (and +0.0
 * too when with_zero and x holds it). 0, or -1 as soon as there are more
 * than CODEBOOK_MAX (a tensor that was never clustered fails within its
 * first few hundred elements).
 */
static int find_codebook(const float *x, int64_t n, int with_zero, struct codebook *cb)
{
	uint32_t slot[2 * CODEBOOK_MAX];
	uint8_t used[2 * CODEBOOK_MAX] = {0};
	int k = 0, zero = 0;

	for (int64_t i = 0; i < n; i++) {
		uint32_t b, h;

		memcpy(&b, x + i, 4);
		if (!b) {
			zero = 1;
			continue;
		}
		for (h = (b * 2654435761u) >> 23; used[h] && slot[h] != b; h = (h + 1) % (2 * CODEBOOK_MAX))
			;
		if (used[h])
			continue;
		if (k == CODEBOOK_MAX)
			return -1;
		used[h] = 1;
		slot[h] = b;
		memcpy(&cb->val[k], &b, 4);
		cb->key[k] = order_key(cb->val[k]);
		k++;
	}
	if (zero && with_zero) {
		if (k == CODEBOOK_MAX)
			return -1;
		cb->val[k] = 0.0f;
		cb->key[k++] = order_key(0.0f);
	}
	qsort(cb->key, (size_t)k, sizeof(cb->key[0]), key_cmp);
	for (int j = 0; j < k; j++) {
		uint32_t b = cb->key[j] & 0x80000000u ? cb->key[j] & 0x7fffffffu : ~cb->key[j];

		memcpy(&cb->val[j], &b, 4);
	}
	cb->k = k;
	cb->bits = bits_for(k);
	return 0;
}

/* The code of v, which is in cb. */
static unsigned code_of(const struct codebook *cb, float v)
{
	uint32_t key = order_key(v);
	int lo = 0, hi = cb->k - 1;

	while (lo < hi) {
		int mid = (lo + hi) / 2;

		if (cb->key[mid] < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (unsigned)lo;
}

/* Code i of a stream of bits-wide codes (a code spans at most two bytes). */
static void put_code(uint8_t *s, int64_t i, int bits, unsigned c)
{
	int64_t at = i * bits;
	unsigned v = c << (at % 8);

	s[at / 8] |= (uint8_t)v;
	if ((at % 8) + bits > 8)
		s[at / 8 + 1] |= (uint8_t)(v >> 8);
}

static unsigned get_code(const uint8_t *s, int64_t i, int bits)
{
	int64_t at = i * bits;
	unsigned v = s[at / 8];

	if ((at % 8) + bits > 8)
		v |= (unsigned)s[at / 8 + 1] << 8;
	return (v >> (at % 8)) & ((1u << bits) - 1);
}

/*
 * The cheapest form of t stored as name, counting the header entries each
 * form adds (about 70 bytes of JSON per tensor, 60 per metadata entry, plus
 * names; a clustered entry 30 more). When the values are best stored as
 * codes (F32 tensors of at most 256 distinct values), *cb is filled and
 * *clustered set. Ties go to the form listed first: dense, bitmask, CSR,
 * then their clustered variants.
 */
static enum sparse_form choose_form(const struct mc_tensor *t, const char *full, int64_t *nnz,
				    struct codebook *cb, int *clustered)
{
	int64_t rows, name, n = 0, cost[6], best;
	struct codebook nz, all;
	int bits = sparse_bits(t->dtype), pick = 0, have_nz, have_all;

	*nnz = 0;
	*clustered = 0;
	if (!bits || !t->name || t->numel < 1 || t->numel > INT32_MAX)
		return FORM_DENSE;
	for (int64_t i = 0; i < t->numel; i++)
		n += is_stored(t->data, i, bits);
	*nnz = n;
	rows = t->ndim > 1 ? t->shape[0] : 1;
	name = (int64_t)strlen(full);
	cost[0] = (bits * t->numel + 7) / 8;
	cost[1] = (t->numel + 7) / 8 + (bits * n + 7) / 8 + 2 * (name + 80) + name + 60;
	cost[2] = 4 * (rows + 1) + 4 * n + (bits * n + 7) / 8 + 3 * (name + 80) + name + 60;
	have_nz = t->dtype == MC_F32 && n && !find_codebook(t->data, t->numel, 0, &nz);
	have_all = have_nz && (n == t->numel ? (all = nz, 1)
					     : !find_codebook(t->data, t->numel, 1, &all));
	cost[3] = cost[4] = cost[5] = INT64_MAX;
	if (have_nz) {
		int64_t book = 4 * nz.k + (n * nz.bits + 7) / 8 + name + 90;

		cost[3] = (t->numel + 7) / 8 + 3 * (name + 80) + book;
		cost[4] = 4 * (rows + 1) + 4 * n + 4 * (name + 80) + book;
	}
	if (have_all)
		cost[5] = 4 * all.k + (t->numel * all.bits + 7) / 8 + 2 * (name + 80) + name + 90;
	best = cost[0];
	for (int c = 1; c < 6; c++)
		if (cost[c] < best) {
			best = cost[c];
			pick = c;
		}
	if (pick < 3)
		return (enum sparse_form)pick;
	*clustered = 1;
	*cb = pick == 5 ? all : nz;
	if (pick == 5)
		*nnz = t->numel;
	return pick == 3 ? FORM_BITMASK : pick == 4 ? FORM_CSR : FORM_ALL;
}

/* Room for more entries in l (each entry of t is at most one of own or views,
 * so the three arrays grow together). */
static int list_reserve(struct mc_st_list *l, int more, struct mc_err *err)
{
	struct mc_tensor **t, **own, **views;
	int cap;

	if (l->n + more <= l->cap && l->sparse)
		return 0;
	if (!l->sparse && !(l->sparse = json_object()))
		return mc_err_set(err, MC_ENOMEM, "model: out of memory");
	if (l->n + more <= l->cap)
		return 0;
	cap = l->n + more + 1;
	t = realloc(l->t, (size_t)cap * sizeof(*t));
	if (t)
		l->t = t;
	own = realloc(l->own, (size_t)cap * sizeof(*own));
	if (own)
		l->own = own;
	views = realloc(l->views, (size_t)cap * sizeof(*views));
	if (views)
		l->views = views;
	if (!t || !own || !views)
		return mc_err_set(err, MC_ENOMEM, "model: out of memory listing tensors");
	l->cap = cap;
	return 0;
}

/* "prefix" "name" "suffix" into buf, or MC_EINVAL when it does not fit. */
static int join_name(char *buf, size_t n, const char *prefix, const char *name,
		     const char *suffix, struct mc_err *err)
{
	if ((size_t)snprintf(buf, n, "%s%s%s", prefix, name, suffix) >= n)
		return mc_err_set(err, MC_EINVAL,
				  "model: tensor name '%s%s' is longer than %zu bytes; use shorter "
				  "node names",
				  prefix, name, n - 16);
	return 0;
}

/* A new piece "FULL.suffix" of n elements, appended to l (owned). */
static struct mc_tensor *piece(struct mc_st_list *l, const char *full, const char *suffix,
			       enum mc_dtype dt, int64_t n, struct mc_err *err)
{
	struct mc_tensor *t;
	char name[1024];

	if (join_name(name, sizeof(name), full, ".", suffix, err))
		return NULL;
	t = mc_tensor_new(name, dt, 1, &n, err);
	if (!t)
		return NULL;
	l->own[l->n_own++] = t;
	l->t[l->n++] = t;
	return t;
}

/* Where the stored elements' values go: copied to vals, or (cb set) coded into codes. */
struct value_sink {
	const struct codebook *cb;
	uint8_t *vals, *codes;
	int bits;
};

/* Stores element i of x as stored value at. */
static void sink_put(const struct value_sink *k, int64_t at, const uint8_t *x, int64_t i)
{
	if (k->cb) {
		float v;

		memcpy(&v, x + 4 * i, 4);
		put_code(k->codes, at, k->cb->bits, code_of(k->cb, v));
	} else {
		copy_elem(k->vals, at, x, i, k->bits);
	}
}

/* The value pieces of t: NAME.__values, or NAME.__codebook and NAME.__codes. */
static int add_values(const struct mc_tensor *t, const char *full, int64_t nnz,
		      const struct codebook *cb, struct value_sink *k, struct mc_st_list *l,
		      struct mc_err *err)
{
	struct mc_tensor *v, *c;

	k->cb = cb;
	k->bits = sparse_bits(t->dtype);
	if (!cb) {
		if (!(v = piece(l, full, "__values", t->dtype, nnz, err)))
			return err->code;
		k->vals = v->data;
		return 0;
	}
	if (!(v = piece(l, full, "__codebook", MC_F32, cb->k, err)))
		return err->code;
	if (!(c = piece(l, full, "__codes", MC_U8, (nnz * cb->bits + 7) / 8, err)))
		return err->code;
	memcpy(v->data, cb->val, sizeof(float) * (size_t)cb->k);
	k->codes = c->data;
	return 0;
}

/* Appends the pieces of t, named full, in form f (values coded by cb when
 * not NULL) to l and its entry to l->sparse. */
static int add_sparse(const struct mc_tensor *t, const char *full, enum sparse_form f,
		      int64_t nnz, const struct codebook *cb, struct mc_st_list *l,
		      struct mc_err *err)
{
	const uint8_t *x = t->data;
	int bits = sparse_bits(t->dtype);
	struct value_sink k;
	struct mc_tensor *a, *b;
	json_t *e, *shape;
	int64_t at = 0;

	if (f == FORM_ALL) {
		if (add_values(t, full, nnz, cb, &k, l, err))
			return err->code;
		for (int64_t i = 0; i < t->numel; i++)
			sink_put(&k, i, x, i);
	} else if (f == FORM_BITMASK) {
		uint8_t *mask;

		if (!(a = piece(l, full, "__mask", MC_U8, (t->numel + 7) / 8, err)))
			return err->code;
		if (add_values(t, full, nnz, cb, &k, l, err))
			return err->code;
		mask = a->data;
		for (int64_t i = 0; i < t->numel; i++) {
			if (!is_stored(x, i, bits))
				continue;
			mask[i / 8] |= (uint8_t)(1u << (i % 8));
			sink_put(&k, at++, x, i);
		}
	} else {
		int64_t rows = t->ndim > 1 ? t->shape[0] : 1, cols = t->numel / rows;
		int32_t *ptr, *idx;

		if (!(a = piece(l, full, "__indptr", MC_S32, rows + 1, err)))
			return err->code;
		if (!(b = piece(l, full, "__indices", MC_S32, nnz, err)))
			return err->code;
		if (add_values(t, full, nnz, cb, &k, l, err))
			return err->code;
		ptr = a->data;
		idx = b->data;
		for (int64_t r = 0; r < rows; r++) {
			for (int64_t c = 0; c < cols; c++) {
				if (!is_stored(x, r * cols + c, bits))
					continue;
				idx[at] = (int32_t)c;
				sink_put(&k, at++, x, r * cols + c);
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
	json_object_set_new(e, "format", json_string(form_names[f]));
	json_object_set_new(e, "shape", shape);
	json_object_set_new(e, "nnz", json_integer(nnz));
	if (cb) {
		json_object_set_new(e, "clusters", json_integer(cb->k));
		json_object_set_new(e, "bits", json_integer(cb->bits));
	}
	if (json_object_set_new(l->sparse, full, e))
		return mc_err_set(err, MC_ENOMEM, "model: out of memory");
	return 0;
}

/* Appends x under the name full: x itself when the name is its own, else a
 * view sharing its data. */
static int add_dense(struct mc_tensor *x, const char *full, struct mc_st_list *l,
		     struct mc_err *err)
{
	struct mc_tensor *v;

	if (!strcmp(full, x->name)) {
		l->t[l->n++] = x;
		return 0;
	}
	v = malloc(sizeof(*v));
	if (v)
		*v = *x;
	if (!v || !(v->name = strdup(full))) {
		free(v);
		return mc_err_set(err, MC_ENOMEM, "model: out of memory");
	}
	l->views[l->n_views++] = v;
	l->t[l->n++] = v;
	return 0;
}

int mc_model_add_tensors(const struct mc_model *m, const char *prefix, struct mc_st_list *l,
			 struct mc_err *err)
{
	int ret = list_reserve(l, 4 * count_params(m), err);

	for (int i = 0; i < m->n_nodes && !ret; i++) {
		for (int p = 0; p < m->nodes[i]->n_params && !ret; p++) {
			struct mc_tensor *x = m->nodes[i]->params[p];
			char full[1024];
			struct codebook cb;
			int64_t nnz;
			int clustered;
			enum sparse_form f;

			if (!x->name) {
				ret = mc_err_set(err, MC_EINVAL, "model: node '%s' has an unnamed "
						 "parameter", m->nodes[i]->name);
				break;
			}
			ret = join_name(full, sizeof(full), prefix, x->name, "", err);
			if (ret)
				break;
			f = choose_form(x, full, &nnz, &cb, &clustered);
			if (f == FORM_DENSE)
				ret = add_dense(x, full, l, err);
			else
				ret = add_sparse(x, full, f, nnz, clustered ? &cb : NULL, l, err);
		}
	}
	return ret;
}

int mc_st_list_sparse_text(const struct mc_st_list *l, char **text, struct mc_err *err)
{
	*text = NULL;
	if (!l->sparse || !json_object_size(l->sparse))
		return 0;
	*text = json_dumps(l->sparse, JSON_COMPACT);
	return *text ? 0 : mc_err_set(err, MC_ENOMEM, "model: out of memory");
}

void mc_st_list_release(struct mc_st_list *l)
{
	for (int i = 0; i < l->n_own; i++)
		mc_tensor_free(l->own[i]);
	for (int i = 0; i < l->n_views; i++) {
		free(l->views[i]->name);
		free(l->views[i]);
	}
	free(l->own);
	free(l->views);
	free(l->t);
	json_decref(l->sparse);
	memset(l, 0, sizeof(*l));
}

MC_API int mc_model_serialize(const struct mc_model *m, void **buf, size_t *len, struct mc_err *err)
{
	struct mc_st_list l = {0};
	char *arch, *sp = NULL, *ops = NULL;
	const char *meta[10];
	int ret, n_meta;

	*buf = NULL;
	*len = 0;
	arch = mc_model_arch(m);
	if (!arch) {
		ret =
		    mc_err_set(err, MC_ENOMEM, "model: out of memory describing the architecture");
		goto out;
	}
	ret = mc_model_add_tensors(m, "", &l, err);
	if (!ret)
		ret = mc_st_list_sparse_text(&l, &sp, err);
	if (ret)
		goto out;
	meta[0] = "format";
	meta[1] = MODEL_FORMAT;
	meta[2] = "mcomp.version";
	meta[3] = MC_VERSION;
	meta[4] = "mcomp.arch";
	meta[5] = arch;
	n_meta = 3;
	if (sp) {
		meta[2 * n_meta] = "mcomp.sparse";
		meta[2 * n_meta + 1] = sp;
		n_meta++;
	}
	ret = mc_model_ops_text(m, &ops, err);
	if (ret)
		goto out;
	if (ops) {
		meta[2 * n_meta] = "mcomp.ops";
		meta[2 * n_meta + 1] = ops;
		n_meta++;
	}
	ret = mc_st_serialize(l.t, l.n, meta, n_meta, buf, len, err);
out:
	mc_st_list_release(&l);
	free(ops);
	free(sp);
	free(arch);
	return ret;
}

int mc_model_ops_text(const struct mc_model *m, char **text, struct mc_err *err)
{
	json_t *o = NULL;

	*text = NULL;
	for (int i = 0; i < m->n_nodes; i++) {
		const char *prov = mc_op_provider(m->nodes[i]->op->name);

		if (!prov)
			continue;
		if (!o && !(o = json_object()))
			return mc_err_set(err, MC_ENOMEM, "model: out of memory");
		if (json_object_set_new(o, m->nodes[i]->op->name, json_string(prov))) {
			json_decref(o);
			return mc_err_set(err, MC_ENOMEM, "model: out of memory");
		}
	}
	if (!o)
		return 0;
	*text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
	json_decref(o);
	return *text ? 0 : mc_err_set(err, MC_ENOMEM, "model: out of memory");
}

int mc_model_ops_check(const struct mc_st_file *f, const char *key, struct mc_err *err)
{
	const char *text = mc_st_meta(f, key);
	json_t *o;
	const char *op;
	json_t *v;

	if (!text)
		return 0;
	o = json_loads(text, 0, NULL);
	if (!json_is_object(o)) {
		json_decref(o);
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: __metadata__ \"%s\" is not a JSON object of op names and "
				  "passes; the file was edited or is corrupt",
				  f->path, key);
	}
	json_object_foreach (o, op, v) {
		if (mc_op_find(op))
			continue;
		mc_err_set(err, MC_EPLUGIN,
			   "%s: op '%s' is provided by pass '%s', which is not loaded; put %s.so "
			   "on MCOMP_PASS_PATH (mcomp passes lists what is found)",
			   f->path, op, json_string_value(v) ? json_string_value(v) : "?",
			   json_string_value(v) ? json_string_value(v) : "its pass");
		json_decref(o);
		return MC_EPLUGIN;
	}
	json_decref(o);
	return 0;
}

MC_API int mc_model_save(const struct mc_model *m, const char *path, struct mc_err *err)
{
	size_t len;
	void *buf;
	int ret;

	ret = mc_model_serialize(m, &buf, &len, err);
	if (ret)
		return mc_err_prefix(err, "%s", path);
	/* PATH.zst: one zstd frame (core/base/zfile.c). */
	ret = mc_write_file_coded(path, buf, len, err);
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

int mc_sparse_index(const struct mc_st_file *f, json_t **out, struct mc_err *err)
{
	const char *text = mc_st_meta(f, "mcomp.sparse");
	json_error_t je;
	json_t *o;

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
	*out = o;
	return 0;
}

/* Checks that each key of sparse under prefix names a parameter of m that is
 * not also stored dense. */
static int check_sparse_keys(const struct mc_model *m, const struct mc_st_file *f,
			     const char *prefix, json_t *sparse, struct mc_err *err)
{
	size_t np = strlen(prefix);
	const char *key;
	json_t *v;

	json_object_foreach (sparse, key, v) {
		if (strncmp(key, prefix, np))
			continue;
		if (!mc_model_param(m, key + np) || mc_st_find(f, key))
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: __metadata__ \"mcomp.sparse\" names '%s', which is "
					  "%s; the file was edited or is corrupt",
					  f->path, key,
					  mc_st_find(f, key) ? "also stored dense"
							     : "not a parameter of the architecture");
	}
	return 0;
}

/* The piece NAME.suffix of dtype dt and n elements, marked used; NULL with err. */
static const struct mc_st_entry *sparse_piece(const struct mc_st_file *f, const char *name,
					      const char *suffix, const char *dt, int64_t n,
					      char *used, struct mc_err *err)
{
	const struct mc_st_entry *e;
	char full[1100];

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

/*
 * The n values of clustered tensor name: its codes looked up in its
 * codebook, into *out (malloc'd; the caller frees it). Checks the codebook
 * (k entries, 1 <= k <= 2^bits, strictly ascending, +0.0 only when every
 * element is coded) and every code (below k; the padding bits of the last
 * byte zero), so that a file loads to one tensor and saves to itself.
 */
static int decode_clustered(const struct mc_st_file *f, const char *name, json_t *desc,
			    int64_t n, int all, char *used, float **out, struct mc_err *err)
{
	json_t *jk = json_object_get(desc, "clusters"), *jb = json_object_get(desc, "bits");
	const struct mc_st_entry *book, *codes;
	int64_t k = json_integer_value(jk), bits = json_integer_value(jb);
	const uint8_t *s;
	float v[CODEBOOK_MAX], *x;

	*out = NULL;
	if (!json_is_integer(jk) || !json_is_integer(jb) || bits < 1 || bits > 8 || k < 1 ||
	    k > (1 << bits))
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: \"mcomp.sparse\" entry of '%s' has \"clusters\" %lld and "
				  "\"bits\" %lld; a codebook holds 1 to 2^bits values and bits is 1 to "
				  "8; the file is corrupt",
				  f->path, name, (long long)k, (long long)bits);
	book = sparse_piece(f, name, "__codebook", "F32", k, used, err);
	codes = book ? sparse_piece(f, name, "__codes", "U8", (n * bits + 7) / 8, used, err) : NULL;
	if (!codes)
		return err->code;
	memcpy(v, book->data, sizeof(float) * (size_t)k);
	for (int64_t j = 0; j < k; j++) {
		uint32_t b;

		memcpy(&b, &v[j], 4);
		if ((j && order_key(v[j]) <= order_key(v[j - 1])) || (!b && !all))
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: tensor '%s.__codebook' entry %lld %s; the file is "
					  "corrupt",
					  f->path, name, (long long)j,
					  b ? "is not above the one before (a codebook is "
					      "strictly ascending)"
					    : "is +0.0, which the stored positions leave implicit");
	}
	s = codes->data;
	if (codes->nbytes && (n * bits) % 8 && s[codes->nbytes - 1] >> ((n * bits) % 8))
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: tensor '%s.__codes' sets padding bits after its %lld codes; "
				  "the file is corrupt",
				  f->path, name, (long long)n);
	x = malloc((size_t)n * sizeof(float) + 1);
	if (!x)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory decoding '%s'", f->path, name);
	for (int64_t i = 0; i < n; i++) {
		unsigned c = get_code(s, i, (int)bits);

		if (c >= k) {
			free(x);
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: tensor '%s.__codes' code %lld is %u, beyond the "
					  "codebook of %lld values; the file is corrupt",
					  f->path, name, (long long)i, c, (long long)k);
		}
		x[i] = v[c];
	}
	*out = x;
	return 0;
}

/* Fills dense t, stored as name, from its sparse (or clustered) pieces
 * described by desc, checking them all. */
static int load_sparse(struct mc_tensor *t, const char *name, const struct mc_st_file *f,
		       json_t *desc, char *used, struct mc_err *err)
{
	const struct mc_st_entry *a, *b, *v;
	json_t *shape = json_object_get(desc, "shape"), *jn = json_object_get(desc, "nnz");
	const char *form = json_string_value(json_object_get(desc, "format"));
	int clustered = json_object_get(desc, "clusters") || json_object_get(desc, "bits");
	const uint8_t *vals;
	float *decoded = NULL;
	int64_t nnz, at = 0;
	char *dst = t->data;
	int bits = sparse_bits(t->dtype), all, ret = 0;
	int ok = bits && json_is_array(shape) &&
		 json_array_size(shape) == (size_t)t->ndim && json_is_integer(jn) && form &&
		 (!clustered || t->dtype == MC_F32);

	for (int d = 0; ok && d < t->ndim; d++)
		ok = json_integer_value(json_array_get(shape, (size_t)d)) == t->shape[d];
	nnz = ok ? json_integer_value(jn) : -1;
	all = ok && clustered && !strcmp(form, "dense");
	if (!ok || nnz < 0 || nnz > t->numel || (all && nnz != t->numel) ||
	    (!all && strcmp(form, "bitmask") && strcmp(form, "csr")))
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: \"mcomp.sparse\" entry of '%s' does not describe an F32, "
				  "I8 or 4-bit %s tensor as {\"format\": \"bitmask\" or \"csr\" "
				  "(or, clustered, \"dense\"), \"shape\", \"nnz\"}; the file is "
				  "corrupt",
				  f->path, name, "of the architecture's shape");
	if (clustered) {
		ret = decode_clustered(f, name, desc, nnz, all, used, &decoded, err);
		if (ret)
			return ret;
		if (all) {
			memcpy(dst, decoded, (size_t)nnz * sizeof(float));
			free(decoded);
			return 0;
		}
		vals = (const uint8_t *)decoded;
	} else {
		v = sparse_piece(f, name, "__values",
				 bits == 32 ? "F32" : bits == 8 ? "I8" : "U8",
				 bits == 4 ? (nnz + 1) / 2 : nnz, used, err);
		if (!v)
			return err->code;
		vals = v->data;
		if (bits == 4 && nnz % 2 && vals[nnz / 2] >> 4)
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: tensor '%s.__values' sets the padding nibble after "
					  "its %lld 4-bit codes; the file is corrupt",
					  f->path, name, (long long)nnz);
		for (int64_t j = 0; bits == 4 && j < nnz; j++)
			if (nibble(vals, j) == 8)
				return mc_err_set(err, MC_ECORRUPT,
						  "%s: tensor '%s.__values' code %lld is q = 0, "
						  "which the stored positions leave implicit; the "
						  "file is corrupt",
						  f->path, name, (long long)j);
	}
	/* t is fresh (zeroed, lazily when large: mc_model_fill): only the
	 * stored values are written, so an all-but-empty layer costs little.
	 * A 4-bit tensor's zero is nibble 8, so it is filled first (and the
	 * padding nibble of an odd count left 0, as mc_q4_pack leaves it). */
	if (bits == 4) {
		memset(dst, 0x88, mc_tensor_nbytes(t));
		if (t->numel % 2)
			dst[t->numel / 2] &= 0x0f;
	}
	if (!strcmp(form, "bitmask")) {
		const uint8_t *mask;

		a = sparse_piece(f, name, "__mask", "U8", (t->numel + 7) / 8, used, err);
		if (!a) {
			ret = err->code;
			goto out;
		}
		mask = a->data;
		for (int64_t i = 0; i < (t->numel + 7) / 8 * 8; i++) {
			if (!(mask[i / 8] >> (i % 8) & 1))
				continue;
			if (i >= t->numel || at >= nnz) {
				ret = mc_err_set(err, MC_ECORRUPT,
						 "%s: tensor '%s.__mask' sets %s; the file is corrupt",
						 f->path, name,
						 i >= t->numel ? "padding bits" : "more bits than nnz");
				goto out;
			}
			copy_elem((uint8_t *)dst, i, vals, at++, bits);
		}
	} else {
		int64_t rows = t->ndim > 1 ? t->shape[0] : 1, cols = t->numel / rows;
		const uint8_t *pp, *ip;
		int32_t p0, p1, c, last;
		int bad;

		a = sparse_piece(f, name, "__indptr", "I32", rows + 1, used, err);
		b = a ? sparse_piece(f, name, "__indices", "I32", nnz, used, err) : NULL;
		if (!b) {
			ret = err->code;
			goto out;
		}
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
					copy_elem((uint8_t *)dst, r * cols + c, vals, at,
						  bits);
			}
		}
		if (bad || at != nnz)
			ret = mc_err_set(err, MC_ECORRUPT,
					 "%s: tensor '%s' has CSR index arrays out of order or range; "
					 "the file is corrupt",
					 f->path, name);
		goto out;
	}
	if (at != nnz)
		ret = mc_err_set(err, MC_ECORRUPT,
				 "%s: tensor '%s.__mask' sets %lld bits for %lld values; the file is "
				 "corrupt",
				 f->path, name, (long long)at, (long long)nnz);
out:
	free(decoded);
	return ret;
}

/* Copies parameter t from f's tensor name (dense), checking dtype and shape. */
static int load_dense(struct mc_tensor *t, const char *name, const struct mc_st_entry *e,
		      const struct mc_st_file *f, struct mc_err *err)
{
	char want[256], got[256];
	int64_t shape[MC_MAX_DIMS];
	const char *dt;
	int ndim;

	expected_layout(t, &dt, &ndim, shape);
	if (strcmp(e->st_dtype, dt) || !same_shape(ndim, shape, e->ndim, e->shape)) {
		mc_shape_text(ndim, shape, want, sizeof(want));
		mc_shape_text(e->ndim, e->shape, got, sizeof(got));
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: tensor '%s' is %s %s but the architecture needs %s %s; the "
				  "file does not match its own __metadata__",
				  f->path, name, e->st_dtype, got, dt, want);
	}
	if (e->nbytes != mc_tensor_nbytes(t))
		return mc_err_set(err, MC_ECORRUPT, "%s: tensor '%s' holds %zu bytes, expected %zu",
				  f->path, name, e->nbytes, mc_tensor_nbytes(t));
	if (e->nbytes)
		memcpy(t->data, e->data, e->nbytes);
	return 0;
}

int mc_model_fill(struct mc_model *m, const struct mc_st_file *f, const char *prefix,
		  json_t *sparse, char *used, struct mc_err *err)
{
	int ret = sparse ? check_sparse_keys(m, f, prefix, sparse, err) : 0;

	for (int i = 0; i < m->n_nodes && !ret; i++) {
		for (int p = 0; p < m->nodes[i]->n_params && !ret; p++) {
			struct mc_tensor *t = m->nodes[i]->params[p];
			const struct mc_st_entry *e;
			char name[1024];

			if (!t->name)
				return mc_err_set(err, MC_EINVAL,
						  "%s: node '%s' has an unnamed parameter", f->path,
						  m->nodes[i]->name);
			if ((size_t)snprintf(name, sizeof(name), "%s%s", prefix, t->name) >=
			    sizeof(name))
				return mc_err_set(err, MC_ECORRUPT,
						  "%s: tensor name '%s%s' is too long; the file is "
						  "corrupt",
						  f->path, prefix, t->name);
			e = mc_st_find(f, name);
			if (!e && sparse && json_object_get(sparse, name)) {
				ret = load_sparse(t, name, f, json_object_get(sparse, name), used,
						  err);
				continue;
			}
			if (!e)
				return mc_err_set(err, MC_ECORRUPT,
						  "%s: tensor '%s' is missing; the architecture in "
						  "__metadata__ needs it, so the file is incomplete",
						  f->path, name);
			used[e - f->entries] = 1;
			ret = load_dense(t, name, e, f, err);
		}
	}
	return ret;
}

/* Nonzero when the file stores a value for parameter name: a dense tensor
 * with a nonzero byte, or a sparse one with nnz > 0. */
static int stores_values(const struct mc_st_file *f, const char *name, json_t *sparse)
{
	const struct mc_st_entry *e = mc_st_find(f, name);
	json_t *d = sparse ? json_object_get(sparse, name) : NULL;

	if (e) {
		const unsigned char *b = e->data;

		for (size_t k = 0; k < e->nbytes; k++)
			if (b[k])
				return 1;
		return 0;
	}
	return json_integer_value(json_object_get(d, "nnz")) > 0;
}

int mc_model_check_stored(const struct mc_model *m, const struct mc_st_file *f,
			  const char *prefix, json_t *sparse, struct mc_err *err)
{
	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *nd = m->nodes[i];
		int64_t need = 0;
		uint64_t bytes = 0;
		int stored = 0;
		char name[1024], size[32];

		for (int p = 0; p < nd->n_params; p++) {
			need += nd->params[p]->numel;
			bytes += mc_tensor_nbytes(nd->params[p]);
		}
		for (int p = 0; p < nd->n_params && need && !stored; p++) {
			snprintf(name, sizeof(name), "%s%s", prefix, nd->params[p]->name);
			stored = stores_values(f, name, sparse);
		}
		if (stored || !need)
			continue;
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: layer '%s%s' (%s) needs %lld values (%s) but the file stores "
				  "none of them: its tensors are absent, empty or all zero; a model "
				  "file holds its layers' values, so this one is corrupt (or made "
				  "to exhaust memory)",
				  f->path, prefix, nd->name, nd->op->name, (long long)need,
				  mc_mem_text(bytes, size, sizeof(size)));
	}
	return 0;
}

/* Copies every parameter of m from f, checking names, dtypes and shapes. */
static int fill_params(struct mc_model *m, const struct mc_st_file *f, json_t *sparse,
		       struct mc_err *err)
{
	char *used = calloc((size_t)f->n + 1, 1);
	int ret = 0;

	if (!used)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", f->path);
	ret = mc_model_fill(m, f, "", sparse, used, err);
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
	json_t *sparse = NULL;
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
	if (mc_model_ops_check(f, "mcomp.ops", err))
		goto out;
	/*
	 * The architecture's shapes first: before any parameter has data, each
	 * layer must store values in the file and the whole must fit the
	 * memory limit with the file's bytes, which stay in memory meanwhile.
	 */
	m = mc_model_from_arch_shapes(arch, path, err);
	if (!m || mc_sparse_index(f, &sparse, err) ||
	    mc_model_check_stored(m, f, "", sparse, err) ||
	    mc_model_fits(m, f->len, path, err) || mc_model_materialize(m, err) ||
	    fill_params(m, f, sparse, err)) {
		mc_model_free(m);
		m = NULL;
	}
out:
	json_decref(sparse);
	mc_st_free(f);
	return m;
}
