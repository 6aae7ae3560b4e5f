// SPDX-License-Identifier: MIT
/*
 * safetensors.c - the safetensors file format, read with every field checked.
 *
 *	[u64 little-endian N][N bytes of JSON header][data section]
 *
 * The header maps tensor names to {"dtype", "shape", "data_offsets"} and may
 * hold "__metadata__", a string-to-string map. Offsets are relative to the
 * data section; the tensors must cover it exactly (no holes, no overlap).
 * Input files are untrusted: every length, offset and product is checked
 * before use. Files we write put the metadata first, then the tensors in the
 * caller's order with contiguous offsets, and pad the header with spaces to
 * a multiple of 8 bytes so that the data section is aligned, as the
 * reference implementation does.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include <mcomp/safetensors.h>

#include "base/base_int.h"

/* Headers larger than this are refused, as the reference implementation
 * refuses them: no real model needs more. */
#define ST_HEADER_MAX 100000000u
/* Whole files larger than this are refused by mc_st_read. */
#define ST_FILE_MAX ((size_t)1 << 36)

/* The dtypes of the safetensors specification, with element sizes, and the
 * mcomp dtype each maps to (-1: none; mcomp cannot compute on it). */
static const struct {
	const char *name;
	size_t size;
	int mc;
} st_dtypes[] = {
    /* clang-format off */
	{ "BOOL", 1, -1 },
	{ "U8", 1, MC_U8 },
	{ "I8", 1, MC_S8 },
	{ "F8_E5M2", 1, -1 },
	{ "F8_E4M3", 1, -1 },
	{ "I16", 2, -1 },
	{ "U16", 2, -1 },
	{ "F16", 2, -1 },
	{ "BF16", 2, -1 },
	{ "I32", 4, MC_S32 },
	{ "U32", 4, -1 },
	{ "F32", 4, MC_F32 },
	{ "F64", 8, -1 },
	{ "I64", 8, -1 },
	{ "U64", 8, -1 },
    /* clang-format on */
};
#define N_ST_DTYPES (int)(sizeof(st_dtypes) / sizeof(st_dtypes[0]))

static int st_dtype_find(const char *name)
{
	for (int i = 0; i < N_ST_DTYPES; i++)
		if (!strcmp(st_dtypes[i].name, name))
			return i;
	return -1;
}

/* "BOOL, U8, ..." into buf, for messages; returns buf. */
static const char *st_dtype_list(char *buf, size_t n)
{
	size_t o = 0;

	buf[0] = '\0';
	for (int i = 0; i < N_ST_DTYPES && o < n; i++)
		o += snprintf(buf + o, n - o, "%s%s", i ? ", " : "", st_dtypes[i].name);
	return buf;
}

MC_API void mc_st_free(struct mc_st_file *f)
{
	if (!f)
		return;
	for (int i = 0; i < f->n; i++)
		free(f->entries[i].name);
	free(f->entries);
	for (int i = 0; i < f->n_meta; i++) {
		free(f->meta_keys[i]);
		free(f->meta_vals[i]);
	}
	free(f->meta_keys);
	free(f->meta_vals);
	free(f->buf);
	free(f->path);
	free(f);
}

MC_API const struct mc_st_entry *mc_st_find(const struct mc_st_file *f, const char *name)
{
	for (int i = 0; i < f->n; i++)
		if (!strcmp(f->entries[i].name, name))
			return &f->entries[i];
	return NULL;
}

MC_API const char *mc_st_meta(const struct mc_st_file *f, const char *key)
{
	for (int i = 0; i < f->n_meta; i++)
		if (!strcmp(f->meta_keys[i], key))
			return f->meta_vals[i];
	return NULL;
}

/* An entry being parsed: the public entry plus its offsets. */
struct pentry {
	struct mc_st_entry e;
	uint64_t begin, end;
};

static int cmp_pentry(const void *a, const void *b)
{
	const struct pentry *x = a, *y = b;

	if (x->begin != y->begin)
		return x->begin < y->begin ? -1 : 1;
	if (x->end != y->end)
		return x->end < y->end ? -1 : 1;
	return strcmp(x->e.name, y->e.name);
}

static int parse_metadata(struct mc_st_file *f, json_t *meta, const char *name, struct mc_err *err)
{
	const char *key;
	json_t *val;
	size_t n;

	if (!json_is_object(meta))
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: __metadata__ is not a JSON object of strings; the file is "
				  "corrupt or was written by a buggy writer",
				  name);
	n = json_object_size(meta);
	f->meta_keys = calloc(n ? n : 1, sizeof(char *));
	f->meta_vals = calloc(n ? n : 1, sizeof(char *));
	if (!f->meta_keys || !f->meta_vals)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory reading __metadata__", name);
	json_object_foreach (meta, key, val) {
		if (!json_is_string(val))
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: __metadata__ value of '%s' is not a string; "
					  "safetensors metadata maps strings to strings",
					  name, key);
		f->meta_keys[f->n_meta] = strdup(key);
		f->meta_vals[f->n_meta] = strdup(json_string_value(val));
		f->n_meta++;
		if (!f->meta_keys[f->n_meta - 1] || !f->meta_vals[f->n_meta - 1])
			return mc_err_set(err, MC_ENOMEM, "%s: out of memory reading __metadata__",
					  name);
	}
	return 0;
}

#define BUGGY "the file is corrupt or was written by a buggy writer"

/* Checks one tensor entry and fills pe (name already set). */
static int parse_entry(struct pentry *pe, json_t *obj, uint64_t data_len, const char *name,
		       struct mc_err *err)
{
	const char *tn = pe->e.name, *key, *dt;
	json_t *dtype, *shape, *offs, *val;
	char sbuf[256];
	size_t numel = 1, need;
	int di;

	if (!json_is_object(obj))
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: tensor '%s' is not a JSON object with dtype, shape and "
				  "data_offsets; " BUGGY,
				  name, tn);
	json_object_foreach (obj, key, val) {
		if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
			return mc_err_set(
			    err, MC_ECORRUPT,
			    "%s: tensor '%s' has an unknown field '%s' (expected only "
			    "dtype, shape, data_offsets); " BUGGY,
			    name, tn, key);
	}
	dtype = json_object_get(obj, "dtype");
	shape = json_object_get(obj, "shape");
	offs = json_object_get(obj, "data_offsets");
	if (!dtype || !shape || !offs)
		return mc_err_set(err, MC_ECORRUPT, "%s: tensor '%s' lacks the field '%s'; " BUGGY,
				  name, tn,
				  !dtype   ? "dtype"
				  : !shape ? "shape"
					   : "data_offsets");

	if (!json_is_string(dtype))
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: tensor '%s': dtype is not a string; " BUGGY, name, tn);
	dt = json_string_value(dtype);
	di = st_dtype_find(dt);
	if (di < 0) {
		char list[256];

		return mc_err_set(err, MC_ECORRUPT,
				  "%s: tensor '%s' has unknown dtype '%.32s'; safetensors dtypes "
				  "are %s",
				  name, tn, dt, st_dtype_list(list, sizeof(list)));
	}
	snprintf(pe->e.st_dtype, sizeof(pe->e.st_dtype), "%s", st_dtypes[di].name);
	pe->e.dtype = st_dtypes[di].mc;

	if (!json_is_array(shape))
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: tensor '%s': shape is not an array of integers; " BUGGY,
				  name, tn);
	if (json_array_size(shape) > MC_MAX_DIMS)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: tensor '%s' has %zu dimensions; mcomp reads at most %d",
				  name, tn, json_array_size(shape), MC_MAX_DIMS);
	pe->e.ndim = (int)json_array_size(shape);
	for (int i = 0; i < pe->e.ndim; i++) {
		json_t *d = json_array_get(shape, i);
		json_int_t v;

		if (!json_is_integer(d))
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: tensor '%s': dimension %d of shape is not an "
					  "integer; " BUGGY,
					  name, tn, i);
		v = json_integer_value(d);
		if (v < 0)
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: tensor '%s': dimension %d of shape is negative "
					  "(%lld); " BUGGY,
					  name, tn, i, (long long)v);
		pe->e.shape[i] = v;
		if (mc_mul_overflow(numel, (size_t)v, &numel))
			goto overflow;
	}
	mc_shape_text(pe->e.ndim, pe->e.shape, sbuf, sizeof(sbuf));
	if (mc_mul_overflow(numel, st_dtypes[di].size, &need))
		goto overflow;

	if (!json_is_array(offs) || json_array_size(offs) != 2 ||
	    !json_is_integer(json_array_get(offs, 0)) || !json_is_integer(json_array_get(offs, 1)))
		return mc_err_set(
		    err, MC_ECORRUPT,
		    "%s: tensor '%s': data_offsets is not two integers [begin, end]; " BUGGY, name,
		    tn);
	{
		json_int_t b = json_integer_value(json_array_get(offs, 0));
		json_int_t e = json_integer_value(json_array_get(offs, 1));

		if (b < 0 || e < b)
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: tensor '%s': data_offsets [%lld, %lld] are not two "
					  "non-decreasing offsets; " BUGGY,
					  name, tn, (long long)b, (long long)e);
		pe->begin = (uint64_t)b;
		pe->end = (uint64_t)e;
	}
	if (pe->end - pe->begin != need)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes but "
				  "shape %s of %s needs %zu; " BUGGY,
				  name, tn, (unsigned long long)pe->begin,
				  (unsigned long long)pe->end,
				  (unsigned long long)(pe->end - pe->begin), sbuf, dt, need);
	if (pe->end > data_len)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: tensor '%s': data_offsets [%llu, %llu] run past the end of "
				  "the data section (%llu bytes); the file is truncated or corrupt",
				  name, tn, (unsigned long long)pe->begin,
				  (unsigned long long)pe->end, (unsigned long long)data_len);
	pe->e.nbytes = need;
	return 0;

overflow:
	return mc_err_set(
	    err, MC_ECORRUPT,
	    "%s: tensor '%s': the size of its shape overflows (dims too large); " BUGGY, name, tn);
}

MC_API struct mc_st_file *mc_st_parse(void *buf, size_t len, const char *name, struct mc_err *err)
{
	const unsigned char *p = buf;
	struct mc_st_file *f;
	struct pentry *pe = NULL;
	json_error_t jerr;
	json_t *root = NULL, *val;
	const char *key;
	uint64_t hlen = 0, data_len, pos;
	size_t n = 0, cap;
	int i;

	f = calloc(1, sizeof(*f));
	if (!f || !(f->path = strdup(name))) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory", name);
		free(f);
		free(buf);
		return NULL;
	}
	f->buf = buf;
	f->len = len;

	if (len < 8) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: file is %zu bytes, too short for the 8-byte safetensors header "
			   "length; it is not a safetensors file or it was truncated",
			   name, len);
		goto fail;
	}
	for (i = 7; i >= 0; i--)
		hlen = hlen << 8 | p[i];
	if (hlen > ST_HEADER_MAX) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: header length %llu is larger than the %u-byte limit; it is not a "
			   "safetensors file or it is corrupt",
			   name, (unsigned long long)hlen, ST_HEADER_MAX);
		goto fail;
	}
	if (hlen > len - 8) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: header length %llu runs past the end of the file (%zu bytes); the "
			   "file is truncated or not a safetensors file",
			   name, (unsigned long long)hlen, len);
		goto fail;
	}
	data_len = len - 8 - hlen;

	root = json_loadb((const char *)p + 8, hlen, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: header is not valid JSON (byte %d of the header: %s); it is not "
			   "a safetensors file or it is corrupt",
			   name, jerr.position, jerr.text);
		goto fail;
	}
	if (!json_is_object(root)) {
		mc_err_set(err, MC_ECORRUPT, "%s: header is not a JSON object; " BUGGY, name);
		goto fail;
	}

	cap = json_object_size(root);
	pe = calloc(cap ? cap : 1, sizeof(*pe));
	if (!pe) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory reading the header", name);
		goto fail;
	}
	json_object_foreach (root, key, val) {
		if (!strcmp(key, "__metadata__")) {
			if (parse_metadata(f, val, name, err))
				goto fail;
			continue;
		}
		pe[n].e.name = strdup(key);
		if (!pe[n].e.name) {
			mc_err_set(err, MC_ENOMEM, "%s: out of memory reading the header", name);
			goto fail;
		}
		n++;
		if (parse_entry(&pe[n - 1], val, data_len, name, err))
			goto fail;
	}
	if (n > INT32_MAX) {
		mc_err_set(err, MC_ECORRUPT, "%s: too many tensors (%zu)", name, n);
		goto fail;
	}

	/* Sorted by offset, the tensors must tile [0, data_len) exactly. */
	qsort(pe, n, sizeof(*pe), cmp_pentry);
	pos = 0;
	for (size_t k = 0; k < n; k++) {
		if (pe[k].begin < pos) {
			mc_err_set(err, MC_ECORRUPT,
				   "%s: tensor '%s' at data_offsets [%llu, %llu] overlaps tensor "
				   "'%s' (which ends at %llu); " BUGGY,
				   name, pe[k].e.name, (unsigned long long)pe[k].begin,
				   (unsigned long long)pe[k].end, pe[k - 1].e.name,
				   (unsigned long long)pos);
			goto fail;
		}
		if (pe[k].begin > pos) {
			mc_err_set(
			    err, MC_ECORRUPT,
			    "%s: data section has a hole at bytes [%llu, %llu) before tensor "
			    "'%s'; the tensors must cover the data section exactly; " BUGGY,
			    name, (unsigned long long)pos, (unsigned long long)pe[k].begin,
			    pe[k].e.name);
			goto fail;
		}
		pos = pe[k].end;
		pe[k].e.data = p + 8 + hlen + pe[k].begin;
	}
	if (pos != data_len) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: data section is %llu bytes but the tensors cover only %llu; the "
			   "file has trailing bytes or is corrupt",
			   name, (unsigned long long)data_len, (unsigned long long)pos);
		goto fail;
	}

	f->entries = calloc(n ? n : 1, sizeof(*f->entries));
	if (!f->entries) {
		mc_err_set(err, MC_ENOMEM, "%s: out of memory reading the header", name);
		goto fail;
	}
	for (size_t k = 0; k < n; k++)
		f->entries[k] = pe[k].e;
	f->n = (int)n;
	free(pe);
	json_decref(root);
	return f;

fail:
	if (pe) {
		for (size_t k = 0; k < n; k++)
			free(pe[k].e.name);
		free(pe);
	}
	json_decref(root);
	mc_st_free(f);
	return NULL;
}

MC_API struct mc_st_file *mc_st_read(const char *path, struct mc_err *err)
{
	size_t len;
	void *buf;

	/* A zstd frame (docs/pipelines.md, "output") is decoded first. */
	if (mc_read_file_decoded(path, ST_FILE_MAX, &buf, &len, NULL, err))
		return NULL;
	return mc_st_parse(buf, len, path, err);
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Finds a repeated string among s[0..n) (every stride-th); NULL if none. */
static const char *find_dup(const char *const *s, int n, int stride, int *oom)
{
	const char **v = malloc((n ? n : 1) * sizeof(*v));
	const char *dup = NULL;

	*oom = !v;
	if (!v)
		return NULL;
	for (int i = 0; i < n; i++)
		v[i] = s[i * stride];
	qsort(v, n, sizeof(*v), cmp_str);
	for (int i = 1; i < n && !dup; i++)
		if (!strcmp(v[i - 1], v[i]))
			dup = v[i];
	free(v);
	return dup;
}

MC_API int mc_st_serialize(struct mc_tensor *const *t, int n, const char *const *meta, int n_meta,
			   void **buf, size_t *len, struct mc_err *err)
{
	size_t *nbytes = NULL, off = 0, hlen, plen, total;
	const char **names = NULL, *dup;
	json_t *root = NULL, *obj;
	unsigned char *out;
	char *hdr = NULL;
	int ret, oom;

	*buf = NULL;
	*len = 0;
	if (n < 0 || n_meta < 0)
		return mc_err_set(err, MC_EINVAL, "safetensors: negative tensor or metadata count");
	nbytes = calloc(n ? n : 1, sizeof(*nbytes));
	names = calloc(n ? n : 1, sizeof(*names));
	root = json_object();
	if (!nbytes || !names || !root) {
		ret = mc_err_set(err, MC_ENOMEM, "safetensors: out of memory");
		goto out;
	}

	for (int i = 0; i < n_meta; i++)
		if (!meta[2 * i] || !meta[2 * i + 1]) {
			ret =
			    mc_err_set(err, MC_EINVAL, "safetensors: metadata pair %d is NULL", i);
			goto out;
		}
	dup = find_dup(meta, n_meta, 2, &oom);
	if (oom || dup) {
		ret = oom ? mc_err_set(err, MC_ENOMEM, "safetensors: out of memory")
			  : mc_err_set(err, MC_EINVAL,
				       "safetensors: metadata key '%s' is given twice", dup);
		goto out;
	}
	if (n_meta) {
		json_t *m = json_object();

		if (!m || json_object_set_new(root, "__metadata__", m)) {
			ret = mc_err_set(err, MC_ENOMEM, "safetensors: out of memory");
			goto out;
		}
		for (int i = 0; i < n_meta; i++)
			if (json_object_set_new(m, meta[2 * i], json_string(meta[2 * i + 1]))) {
				ret = mc_err_set(err, MC_EINVAL,
						 "safetensors: metadata '%s' is not valid UTF-8 "
						 "text",
						 meta[2 * i]);
				goto out;
			}
	}

	for (int i = 0; i < n; i++) {
		const struct mc_tensor *x = t[i];
		const struct mc_dtype_traits *tr = x ? mc_dtype_traits(x->dtype) : NULL;
		size_t bits;
		json_t *shape;

		if (!x || !x->name || !tr) {
			ret = mc_err_set(err, MC_EINVAL,
					 "safetensors: tensor %d %s; every tensor needs a name and "
					 "a known dtype",
					 i,
					 !x	    ? "is NULL"
					 : !x->name ? "has no name"
						    : "has a bad dtype");
			goto out;
		}
		if (!strcmp(x->name, "__metadata__")) {
			ret = mc_err_set(err, MC_EINVAL,
					 "safetensors: a tensor may not be named __metadata__");
			goto out;
		}
		names[i] = x->name;
		if (x->numel < 0 || mc_mul_overflow((size_t)x->numel, (size_t)tr->bits, &bits) ||
		    bits > SIZE_MAX - 7) {
			ret = mc_err_set(err, MC_EINVAL, "safetensors: tensor '%s' is too large",
					 x->name);
			goto out;
		}
		nbytes[i] = (bits + 7) / 8;
		shape = json_array();
		obj = json_object();
		if (!shape || !obj) {
			json_decref(shape);
			json_decref(obj);
			ret = mc_err_set(err, MC_ENOMEM, "safetensors: out of memory");
			goto out;
		}
		if (tr->bits % 8) {
			/* Packed sub-byte dtypes travel as a flat byte array (Q4 as U8). */
			json_array_append_new(shape, json_integer((json_int_t)nbytes[i]));
		} else {
			for (int d = 0; d < x->ndim; d++)
				json_array_append_new(shape, json_integer(x->shape[d]));
		}
		json_object_set_new(obj, "dtype", json_string(tr->st_name));
		json_object_set_new(obj, "shape", shape);
		json_object_set_new(
		    obj, "data_offsets",
		    json_pack("[II]", (json_int_t)off, (json_int_t)(off + nbytes[i])));
		if (json_object_size(obj) != 3 || json_object_set_new(root, x->name, obj)) {
			ret = mc_err_set(err, MC_EINVAL,
					 "safetensors: tensor '%s' could not be described (name "
					 "not UTF-8, or out of memory)",
					 x->name);
			goto out;
		}
		if (off > SIZE_MAX - nbytes[i]) {
			ret = mc_err_set(err, MC_EINVAL, "safetensors: tensors are too large");
			goto out;
		}
		off += nbytes[i];
	}
	dup = find_dup(names, n, 1, &oom);
	if (oom || dup) {
		ret = oom ? mc_err_set(err, MC_ENOMEM, "safetensors: out of memory")
			  : mc_err_set(err, MC_EINVAL,
				       "safetensors: two tensors are named '%s'; names must be "
				       "unique",
				       dup);
		goto out;
	}

	hdr = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (!hdr) {
		ret = mc_err_set(err, MC_ENOMEM, "safetensors: out of memory");
		goto out;
	}
	hlen = strlen(hdr);
	plen = (hlen + 7) & ~(size_t)7;
	if (plen > ST_HEADER_MAX || off > SIZE_MAX - 8 - plen) {
		ret = mc_err_set(err, MC_EINVAL,
				 "safetensors: header of %zu bytes is larger than readers accept",
				 hlen);
		goto out;
	}
	total = 8 + plen + off;
	out = malloc(total ? total : 1);
	if (!out) {
		ret = mc_err_set(err, MC_ENOMEM, "safetensors: out of memory for %zu bytes", total);
		goto out;
	}
	for (int i = 0; i < 8; i++)
		out[i] = (unsigned char)((uint64_t)plen >> (8 * i));
	memcpy(out + 8, hdr, hlen);
	memset(out + 8 + hlen, ' ', plen - hlen);
	off = 8 + plen;
	for (int i = 0; i < n; i++) {
		if (nbytes[i])
			memcpy(out + off, t[i]->data, nbytes[i]);
		off += nbytes[i];
	}
	*buf = out;
	*len = total;
	ret = 0;
out:
	free(hdr);
	json_decref(root);
	free(names);
	free(nbytes);
	return ret;
}
