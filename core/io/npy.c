// SPDX-License-Identifier: MIT
/*
 * npy.c - NumPy arrays: .npy files and the arrays of .npz archives read as
 * data sets (mcomp/data.h states what is accepted), and float32 arrays
 * written as .npy files.
 *
 * An .npy file (format 1.0, 2.0 or 3.0) is
 *
 *	"\x93NUMPY" [major][minor] [header length: u16 LE (1.0), u32 LE (2.0, 3.0)]
 *	[header: a Python dict literal, padded with spaces, ending in '\n']
 *	[data: numel * itemsize bytes]
 *
 * the header reading {'descr': '<f4', 'fortran_order': False, 'shape': (60000, 784), }.
 * An .npz (np.savez, np.savez_compressed) is a zip archive of NAME.npy
 * members, stored or deflated.
 *
 * Every length, count and offset of the header, of the zip records and of
 * the data is checked against the bytes there are before it is used; a
 * shape whose data the file cannot hold is refused before anything of that
 * size is allocated (a deflated member cannot expand more than 1032 times).
 *
 * The zip container is read here, its deflate and CRC-32 by zlib: zlib is a
 * dependency already (gzip'd IDX files), and what is left of zip for a
 * reader is three fixed-layout records (end of central directory, central
 * directory entry, local header) and the zip64 extension that numpy writes
 * for large members. libzip would add a dependency for those, and would
 * still leave the sizes of the arrays inside to be checked here.
 */
#define _FILE_OFFSET_BITS 64
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include <mcomp/safetensors.h>

#include "io/data_int.h"

#define NPY_MAX_DIMS 8
/* Header length limit (numpy's own reader stops at 10000 bytes). */
#define NPY_MAX_HEADER 65536
/* One array's size limit: far beyond a data set that fits in memory. */
#define NPY_MAX_BYTES ((uint64_t)1 << 36)
#define NPY_PEEK      (NPY_MAX_HEADER + 12)
/* The most a deflate stream can expand: 258 bytes from 2 bits, 1032 : 1. */
#define DEFLATE_MAX_RATIO 1032
/* A deflated member of more than ZIP_PLAUSIBLE_MIN bytes may inflate at
 * most ZIP_PLAUSIBLE_RATIO times: beyond, a small file would cost gigabytes
 * within the memory limit (docs/security.md, "Limits"). */
#define ZIP_PLAUSIBLE_MIN   ((uint64_t)16 << 20)
#define ZIP_PLAUSIBLE_RATIO 32
/* Central directory size limit: some hundred thousand members. */
#define ZIP_MAX_CD ((uint64_t)1 << 26)

struct npy {
	char descr[32];	 /* as the header gives it */
	int type;	 /* enum mc_raw_type, or -1: a dtype mcomp does not read */
	size_t itemsize; /* of the types mcomp reads */
	int fortran;
	int ndim;
	int64_t shape[NPY_MAX_DIMS];
	size_t data_off; /* where the data starts */
};

/* ---------------------------------------------------------------- the header */

static uint32_t le16(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8;
}

static uint32_t le32(const unsigned char *p)
{
	return le16(p) | (uint32_t)le16(p + 2) << 16;
}

static uint64_t le64(const unsigned char *p)
{
	return le32(p) | (uint64_t)le32(p + 4) << 32;
}

struct cur {
	const char *p, *start, *end;
};

static void skip_ws(struct cur *c)
{
	while (c->p < c->end && strchr(" \t\r\n", *c->p) && *c->p)
		c->p++;
}

static int eat(struct cur *c, char ch)
{
	skip_ws(c);
	if (c->p < c->end && *c->p == ch) {
		c->p++;
		return 1;
	}
	return 0;
}

/* A quoted Python string without escapes into out[n]. */
static int quoted(struct cur *c, char *out, size_t n)
{
	char q;
	size_t k = 0;

	skip_ws(c);
	if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
		return -1;
	q = *c->p++;
	while (c->p < c->end && *c->p != q) {
		if (*c->p == '\\' || k + 1 >= n)
			return -1;
		out[k++] = *c->p++;
	}
	if (c->p >= c->end)
		return -1;
	c->p++;
	out[k] = '\0';
	return 0;
}

static int word(struct cur *c, const char *w)
{
	size_t n = strlen(w);

	skip_ws(c);
	if ((size_t)(c->end - c->p) < n || strncmp(c->p, w, n))
		return 0;
	c->p += n;
	return 1;
}

/* A tuple of non-negative integers (Python 2's "3L" too). */
static int shape_tuple(struct cur *c, struct npy *h, const char *what, struct mc_err *err)
{
	if (!eat(c, '('))
		return -1;
	h->ndim = 0;
	for (;;) {
		int64_t v = 0;

		if (eat(c, ')'))
			return 0;
		skip_ws(c);
		if (c->p >= c->end || *c->p < '0' || *c->p > '9')
			return -1;
		while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
			if (v > (INT64_MAX - 9) / 10)
				return mc_err_set(err, MC_ECORRUPT,
						  "%s: a dimension of the .npy header's shape is "
						  "beyond 2^63; the file is corrupt",
						  what);
			v = v * 10 + (*c->p++ - '0');
		}
		if (c->p < c->end && *c->p == 'L')
			c->p++;
		if (h->ndim == NPY_MAX_DIMS)
			return mc_err_set(
			    err, MC_ECORRUPT,
			    "%s: the .npy header's shape has more than %d dimensions; "
			    "mcomp reads arrays of 1 to 4",
			    what, NPY_MAX_DIMS);
		h->shape[h->ndim++] = v;
		if (!eat(c, ',')) {
			if (eat(c, ')'))
				return 0;
			return -1;
		}
	}
}

/* Fills h->type and h->itemsize from h->descr (-1: another dtype). */
static void classify(struct npy *h)
{
	static const struct {
		const char *descr;
		int type;
		size_t size;
	} known[] = {
	    {"|u1", MC_RAW_U8, 1},  {"<u1", MC_RAW_U8, 1},  {">u1", MC_RAW_U8, 1},
	    {"u1", MC_RAW_U8, 1},   {"<f4", MC_RAW_F32, 4}, {"<i4", MC_RAW_I32, 4},
	    {"<i8", MC_RAW_I64, 8},
	};

	h->type = -1;
	h->itemsize = 0;
	for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(h->descr, known[i].descr)) {
			h->type = known[i].type;
			h->itemsize = known[i].size;
		}
}

/* What a dtype string means, for messages: "float64", "big-endian float32". */
static const char *dtype_text(const char *descr, char *buf, size_t n)
{
	static const struct {
		char kind;
		const char *name;
		int bits;
	} kinds[] = {
	    {'b', "bool", 0},	     {'i', "int", 1},	      {'u', "uint", 1},
	    {'f', "float", 1},	     {'c', "complex", 1},     {'U', "unicode string", 0},
	    {'S', "byte string", 0}, {'a', "byte string", 0}, {'O', "Python object", 0},
	    {'M', "datetime", 0},    {'m', "timedelta", 0},   {'V', "raw bytes (void)", 0}};
	const char *d = descr;
	int big = 0;
	char *end;
	long size;

	if (*d && strchr("<>|=", *d))
		big = *d++ == '>';
	size = strtol(d + (*d ? 1 : 0), &end, 10);
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
		if (*d != kinds[i].kind)
			continue;
		if (kinds[i].bits && !*end && size > 0 && size <= 16)
			snprintf(buf, n, "%s%s%ld", big && size > 1 ? "big-endian " : "",
				 kinds[i].name, size * 8);
		else
			snprintf(buf, n, "%s", kinds[i].name);
		return buf;
	}
	snprintf(buf, n, "an unknown dtype");
	return buf;
}

static int bad_header(const char *what, const struct cur *c, struct mc_err *err)
{
	return mc_err_set(
	    err, MC_ECORRUPT,
	    "%s: the .npy header is not the dict NumPy writes (at byte %ld of '%.80s'); "
	    "the file is corrupt",
	    what, (long)(c->p - c->start), c->start);
}

/*
 * Checks the .npy header in buf[0..len) of an array of total bytes and
 * fills h; what names the array for messages. The data size is checked
 * against total once the dtype is known to be one mcomp reads (check_x,
 * check_y).
 */
static int parse_header(const char *what, const unsigned char *buf, size_t len, uint64_t total,
			struct npy *h, struct mc_err *err)
{
	char key[32], text[NPY_MAX_HEADER + 1];
	size_t off, hlen;
	int seen = 0, ret;
	struct cur c;

	memset(h, 0, sizeof(*h));
	if (len < 8 || memcmp(buf, "\x93NUMPY", 6))
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: %s; it is not a .npy file (np.save writes one)", what,
				  len < 8 ? "too short for the .npy magic" : "bad magic");
	if (buf[6] < 1 || buf[6] > 3)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: .npy format version %d.%d; mcomp reads 1.0, 2.0 and 3.0",
				  what, buf[6], buf[7]);
	off = buf[6] == 1 ? 10 : 12;
	if (len < off)
		return mc_err_set(err, MC_ECORRUPT, "%s: the .npy header is truncated", what);
	hlen = buf[6] == 1 ? le16(buf + 8) : le32(buf + 8);
	if (hlen > NPY_MAX_HEADER)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: .npy header of %zu bytes, more than the %d mcomp reads; the "
				  "file is corrupt",
				  what, hlen, NPY_MAX_HEADER);
	if (len - off < hlen)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: the .npy header promises %zu bytes, found %zu; the file is "
				  "truncated",
				  what, hlen, len - off);
	memcpy(text, buf + off, hlen);
	text[hlen] = '\0';
	if (strlen(text) != hlen)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: NUL byte in the .npy header; the file is "
				  "corrupt",
				  what);
	h->data_off = off + hlen;
	c.p = c.start = text;
	c.end = text + hlen;
	if (!eat(&c, '{'))
		return bad_header(what, &c, err);
	while (!eat(&c, '}')) {
		const char *at = c.p;
		int bit;

		if (quoted(&c, key, sizeof(key)) || !eat(&c, ':'))
			return bad_header(what, &c, err);
		if (!strcmp(key, "descr")) {
			bit = 1;
			skip_ws(&c);
			if (c.p < c.end && *c.p == '[')
				return mc_err_set(err, MC_ECORRUPT,
						  "%s: a structured dtype (a record array); mcomp "
						  "reads plain arrays",
						  what);
			if (quoted(&c, h->descr, sizeof(h->descr)))
				return bad_header(what, &c, err);
		} else if (!strcmp(key, "fortran_order")) {
			bit = 2;
			if (word(&c, "True"))
				h->fortran = 1;
			else if (!word(&c, "False"))
				return bad_header(what, &c, err);
		} else if (!strcmp(key, "shape")) {
			bit = 4;
			ret = shape_tuple(&c, h, what, err);
			if (ret > 0 || ret < -1)
				return ret;
			if (ret)
				return bad_header(what, &c, err);
		} else {
			c.p = at;
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: unknown key '%s' in the .npy header; the file is "
					  "corrupt",
					  what, key);
		}
		if (seen & bit)
			return mc_err_set(
			    err, MC_ECORRUPT,
			    "%s: key '%s' twice in the .npy header; the file is corrupt", what,
			    key);
		seen |= bit;
		if (!eat(&c, ',')) {
			if (eat(&c, '}'))
				break;
			return bad_header(what, &c, err);
		}
	}
	skip_ws(&c);
	if (c.p != c.end)
		return bad_header(what, &c, err);
	if (seen != 7)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: the .npy header lacks '%s'; the file is corrupt", what,
				  !(seen & 1)	? "descr"
				  : !(seen & 2) ? "fortran_order"
						: "shape");
	if (h->data_off > total)
		return mc_err_set(err, MC_ECORRUPT, "%s: the .npy header is truncated", what);
	classify(h);
	return 0;
}

static const char *shape_text(const struct npy *h, char *buf, size_t n)
{
	size_t k = (size_t)snprintf(buf, n, "(");

	for (int i = 0; i < h->ndim && k < n; i++)
		k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "",
				      (long long)h->shape[i]);
	if (k < n)
		snprintf(buf + k, n - k, "%s)", h->ndim == 1 ? "," : "");
	return buf;
}

/* The data size the header promises, against the total bytes of the array. */
static int check_size(const char *what, const struct npy *h, uint64_t total, struct mc_err *err)
{
	size_t need = h->itemsize;
	char st[200];

	for (int i = 0; i < h->ndim; i++)
		if (mc_mul_overflow(need, (size_t)h->shape[i], &need) || need > NPY_MAX_BYTES)
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: shape %s of '%s' is more than %llu bytes; the file "
					  "is corrupt, or the array too large for mcomp",
					  what, shape_text(h, st, sizeof(st)), h->descr,
					  (unsigned long long)NPY_MAX_BYTES);
	if (total - h->data_off != need)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: shape %s of '%s' is %zu bytes of data, found %llu; the file "
				  "is %s",
				  what, shape_text(h, st, sizeof(st)), h->descr, need,
				  (unsigned long long)(total - h->data_off),
				  total - h->data_off < need ? "truncated"
							     : "corrupt (trailing bytes)");
	return 0;
}

static int check_order(const char *what, const struct npy *h, struct mc_err *err)
{
	if (h->fortran)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: Fortran order (fortran_order: True); mcomp reads C-order "
				  "arrays: save np.ascontiguousarray(x)",
				  what);
	return 0;
}

/* Inputs: uint8 or float32, [N, features], [N, H, W] or [N, C, H, W]; the
 * per-sample shape into ndim, shape. */
static int check_x(const char *what, const struct npy *h, uint64_t total, int *ndim,
		   int64_t shape[3], struct mc_err *err)
{
	char dt[64], st[200];
	int ret;

	if (h->type != MC_RAW_U8 && h->type != MC_RAW_F32)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: inputs of dtype '%s' (%s); mcomp reads uint8 ('|u1') or "
				  "little-endian float32 ('<f4') inputs: save x.astype(np.float32)",
				  what, h->descr, dtype_text(h->descr, dt, sizeof(dt)));
	if ((ret = check_order(what, h, err)))
		return ret;
	if (h->ndim < 2 || h->ndim > 4)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: inputs of shape %s; mcomp reads [N, features], [N, H, W] or "
				  "[N, C, H, W] (NCHW)",
				  what, shape_text(h, st, sizeof(st)));
	for (int i = 0; i < h->ndim; i++)
		if (!h->shape[i])
			return mc_err_set(err, MC_ECORRUPT, "%s: inputs of shape %s hold no %s",
					  what, shape_text(h, st, sizeof(st)),
					  i ? "values" : "samples");
	if ((ret = check_size(what, h, total, err)))
		return ret;
	*ndim = h->ndim == 2 ? 1 : 3;
	if (h->ndim == 2) {
		shape[0] = h->shape[1];
	} else {
		shape[0] = h->ndim == 4 ? h->shape[1] : 1;
		shape[1] = h->shape[h->ndim - 2];
		shape[2] = h->shape[h->ndim - 1];
	}
	return 0;
}

/* Labels: uint8, int32 or int64 class indices [n] (or [n, 1]). */
static int check_y(const char *what, const struct npy *h, uint64_t total, int64_t n,
		   const char *xwhat, struct mc_err *err)
{
	char dt[64], st[200];
	int ret;

	if (h->type < 0 || h->type == MC_RAW_F32)
		return mc_err_set(
		    err, MC_ECORRUPT,
		    "%s: labels of dtype '%s' (%s); mcomp reads integer class indices "
		    "of uint8, int32 or int64 ('|u1', '<i4', '<i8'): save "
		    "y.astype(np.int64)",
		    what, h->descr, dtype_text(h->descr, dt, sizeof(dt)));
	if ((ret = check_order(what, h, err)))
		return ret;
	if (h->ndim == 2 && h->shape[1] > 1)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: labels of shape %s look one-hot; mcomp reads class indices "
				  "[N]: save y.argmax(1)",
				  what, shape_text(h, st, sizeof(st)));
	if (h->ndim < 1 || h->ndim > 2)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: labels of shape %s; mcomp reads class indices of shape [N]",
				  what, shape_text(h, st, sizeof(st)));
	if ((ret = check_size(what, h, total, err)))
		return ret;
	if (h->shape[0] != n)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s has %lld samples but %s has %lld labels; the arrays do not "
				  "belong together",
				  xwhat, (long long)n, what, (long long)h->shape[0]);
	return 0;
}

/* ---------------------------------------------------------------- zip */

struct zip_entry {
	uint64_t csize, usize, off; /* off: of the local header */
	uint64_t end;		    /* where the member's data must end: the central directory */
	uint32_t crc;
	unsigned method, flags;
};

static int read_at(FILE *fp, uint64_t off, void *buf, size_t n)
{
	if (fseeko(fp, (off_t)off, SEEK_SET))
		return -1;
	return fread(buf, 1, n, fp) == n ? 0 : -1;
}

static int zip_corrupt(const char *path, const char *what, struct mc_err *err)
{
	return mc_err_set(err, MC_ECORRUPT, "%s: %s; the .npz archive is truncated or corrupt",
			  path, what);
}

/* Reads the zip64 sizes of a central directory entry that marks them 0xFFFFFFFF. */
static int zip64_extra(const unsigned char *x, size_t n, struct zip_entry *e)
{
	while (n >= 4) {
		size_t id = le16(x), sz = le16(x + 2), k = 0;

		if (sz > n - 4)
			return -1;
		if (id == 1) {
			uint64_t *f[3] = {&e->usize, &e->csize, &e->off};

			for (int i = 0; i < 3; i++) {
				if (*f[i] != 0xFFFFFFFFu)
					continue;
				if (k + 8 > sz)
					return -1;
				*f[i] = le64(x + 4 + k);
				k += 8;
			}
			return 0;
		}
		x += 4 + sz;
		n -= 4 + sz;
	}
	return 0;
}

/* Finds member KEY.npy (or KEY) of the zip archive fp (path); its entry into e. */
static int zip_find(FILE *fp, const char *path, const char *key, struct zip_entry *e,
		    struct mc_err *err)
{
	unsigned char tail[22 + 65535], *cd = NULL, *q;
	uint64_t size, eocd, cd_off, cd_size, count;
	char names[512] = "";
	size_t tn, kn = strlen(key), used = 0;
	struct stat st;
	long pos = -1;
	int ret;

	if (fstat(fileno(fp), &st) || !S_ISREG(st.st_mode))
		return mc_err_set(err, MC_EIO, "%s: not a regular file", path);
	size = (uint64_t)st.st_size;
	tn = size < sizeof(tail) ? (size_t)size : sizeof(tail);
	if (size < 22 || read_at(fp, size - tn, tail, tn))
		return zip_corrupt(path, "too short for a zip archive", err);
	for (long i = (long)tn - 22; i >= 0 && pos < 0; i--)
		if (le32(tail + i) == 0x06054b50 && (size_t)i + 22 + le16(tail + i + 20) <= tn)
			pos = i;
	if (pos < 0)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: no zip end-of-central-directory record; it is not an .npz "
				  "archive (np.savez writes one), or it is truncated",
				  path);
	eocd = size - tn + (uint64_t)pos;
	q = tail + pos;
	if (le16(q + 4) || le16(q + 6))
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: a multi-part zip archive; mcomp reads "
				  "one-file .npz archives",
				  path);
	count = le16(q + 10);
	cd_size = le32(q + 12);
	cd_off = le32(q + 16);
	if (count == 0xFFFF || cd_size == 0xFFFFFFFFu || cd_off == 0xFFFFFFFFu) {
		unsigned char loc[20], z[56];

		if (eocd < 20 || read_at(fp, eocd - 20, loc, 20) || le32(loc) != 0x07064b50 ||
		    le64(loc + 8) > eocd || read_at(fp, le64(loc + 8), z, 56) ||
		    le32(z) != 0x06064b50)
			return zip_corrupt(path,
					   "the zip64 end-of-central-directory record is "
					   "missing or damaged",
					   err);
		count = le64(z + 32);
		cd_size = le64(z + 40);
		cd_off = le64(z + 48);
		eocd = le64(loc + 8);
	}
	if (cd_off > eocd || cd_size > eocd - cd_off)
		return zip_corrupt(path, "the central directory lies outside the file", err);
	if (cd_size > ZIP_MAX_CD || count > cd_size / 46 + 1)
		return zip_corrupt(path, "the central directory is too large for its members", err);
	cd = malloc(cd_size ? (size_t)cd_size : 1);
	if (!cd)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
	if (read_at(fp, cd_off, cd, (size_t)cd_size)) {
		ret = zip_corrupt(path, "cannot read the central directory", err);
		goto out;
	}
	q = cd;
	for (uint64_t i = 0; i < count; i++) {
		size_t left = (size_t)(cd + cd_size - q), nl, xl, cl;

		if (left < 46 || le32(q) != 0x02014b50) {
			ret = zip_corrupt(path, "a central directory entry is damaged", err);
			goto out;
		}
		nl = le16(q + 28);
		xl = le16(q + 30);
		cl = le16(q + 32);
		if (46 + nl + xl + cl > left) {
			ret = zip_corrupt(path, "a central directory entry overruns it", err);
			goto out;
		}
		if ((nl == kn + 4 && !memcmp(q + 46, key, kn) && !memcmp(q + 46 + kn, ".npy", 4)) ||
		    (nl == kn && !memcmp(q + 46, key, kn))) {
			e->flags = le16(q + 8);
			e->method = le16(q + 10);
			e->crc = le32(q + 16);
			e->csize = le32(q + 20);
			e->usize = le32(q + 24);
			e->off = le32(q + 42);
			e->end = cd_off;
			if (zip64_extra(q + 46 + nl, xl, e)) {
				ret = zip_corrupt(path, "a zip64 extra field is damaged", err);
				goto out;
			}
			ret = 0;
			goto out;
		}
		/* The names there are, for the message if key is not among them. */
		if (used < sizeof(names) - 1) {
			int w = snprintf(
			    names + used, sizeof(names) - used, "%s'%.*s'", used ? ", " : "",
			    (int)(nl > 4 && !memcmp(q + 46 + nl - 4, ".npy", 4) ? nl - 4 : nl),
			    (const char *)q + 46);

			used += w > 0 ? (size_t)w : 0;
		}
		q += 46 + nl + xl + cl;
	}
	ret = mc_err_set(err, MC_EINVAL, "%s: no array '%s' in the archive; it holds %s", path, key,
			 used ? names : "no arrays");
out:
	free(cd);
	return ret;
}

/* What a member's central directory entry says, before anything is read
 * or allocated: a method mcomp reads, and sizes deflate can give. */
static int zip_check(const char *what, const struct zip_entry *e, struct mc_err *err)
{
	if (e->flags & 1)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: the member is encrypted; mcomp reads "
				  "plain .npz archives",
				  what);
	if (e->method != 0 && e->method != 8)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: zip compression method %u; mcomp reads stored (0) and "
				  "deflated (8) members, as np.savez and np.savez_compressed write",
				  what, e->method);
	/* before usize bytes are allocated for it: the member's data must fit
	 * before the central directory (a 377-byte archive asked for 4 GB) */
	if (e->csize > e->end)
		return zip_corrupt(what, "the member's data overruns the archive", err);
	if ((e->method == 0 && e->usize != e->csize) ||
	    (e->method == 8 && e->usize / DEFLATE_MAX_RATIO > e->csize + 1))
		return zip_corrupt(what, "the member's sizes do not add up", err);
	/* As gzip'd IDX images (idx.c): real arrays deflate a few times at most. */
	if (e->method == 8 && e->usize > ZIP_PLAUSIBLE_MIN && e->usize / ZIP_PLAUSIBLE_RATIO > e->csize)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: the member inflates to %llu bytes, %llu times its %llu "
				  "compressed bytes; arrays of real data deflate a few times at most, "
				  "so this looks like a zip bomb; if the data is real, save it with "
				  "np.savez (stored, not compressed)",
				  what, (unsigned long long)e->usize,
				  (unsigned long long)(e->usize / (e->csize ? e->csize : 1)),
				  (unsigned long long)e->csize);
	return 0;
}

/*
 * Reads the first want bytes of member e (checked by zip_check) into out: all of it (want ==
 * e->usize, the CRC-32 checked) or its beginning (a header).
 */
static int zip_read(FILE *fp, const char *path, const char *what, const struct zip_entry *e,
		    size_t want, unsigned char *out, struct mc_err *err)
{
	unsigned char lh[30], in[1 << 16];
	uint64_t data, left;
	z_stream z;
	int zr = Z_OK, ret = 0;

	if (e->off > e->end || e->end - e->off < 30 || read_at(fp, e->off, lh, 30) ||
	    le32(lh) != 0x04034b50)
		return zip_corrupt(what, "the member's local header is missing", err);
	data = e->off + 30 + le16(lh + 26) + le16(lh + 28);
	if (data > e->end || e->csize > e->end - data)
		return zip_corrupt(what, "the member's data overruns the archive", err);
	if (fseeko(fp, (off_t)data, SEEK_SET))
		return zip_corrupt(what, "cannot seek to the member's data", err);
	if (e->method == 0) {
		if (fread(out, 1, want, fp) != want)
			return zip_corrupt(what, "the member's data is short", err);
		goto crc;
	}
	memset(&z, 0, sizeof(z));
	if (inflateInit2(&z, -MAX_WBITS) != Z_OK)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
	left = e->csize;
	z.next_out = out;
	/* Output in pieces that fit zlib's uInt. */
	while (z.total_out < want) {
		size_t room = want - z.total_out;

		if (!z.avail_in && left) {
			size_t n = left < sizeof(in) ? (size_t)left : sizeof(in);

			if (fread(in, 1, n, fp) != n) {
				ret = zip_corrupt(what, "the member's data is short", err);
				goto end;
			}
			left -= n;
			z.next_in = in;
			z.avail_in = (uInt)n;
		}
		z.avail_out = room > (1u << 30) ? (1u << 30) : (uInt)room;
		zr = inflate(&z, Z_NO_FLUSH);
		if (zr == Z_STREAM_END)
			break;
		if (zr != Z_OK && !(zr == Z_BUF_ERROR && (z.avail_in || left))) {
			ret =
			    zip_corrupt(what, z.msg ? z.msg : "the deflate stream is damaged", err);
			goto end;
		}
	}
	if (z.total_out != want) {
		ret = zip_corrupt(what, "the member inflates to fewer bytes than its size", err);
		goto end;
	}
	if (want == e->usize && zr != Z_STREAM_END) {
		/* All of it is out: the stream must end here, with nothing more. */
		unsigned char extra;

		z.next_out = &extra;
		z.avail_out = 1;
		if (!z.avail_in && left) {
			size_t n = left < sizeof(in) ? (size_t)left : sizeof(in);

			if (fread(in, 1, n, fp) != n) {
				ret = zip_corrupt(what, "the member's data is short", err);
				goto end;
			}
			left -= n;
			z.next_in = in;
			z.avail_in = (uInt)n;
		}
		zr = inflate(&z, Z_NO_FLUSH);
		if (zr != Z_STREAM_END) {
			ret = zip_corrupt(what,
					  "the member inflates to more or other bytes than "
					  "its size",
					  err);
			goto end;
		}
	}
end:
	inflateEnd(&z);
	if (ret)
		return ret;
crc:
	if (want == e->usize) {
		uLong crc = crc32(0L, Z_NULL, 0);

		for (size_t k = 0; k < want; k += 1u << 30)
			crc = crc32(crc, out + k,
				    (uInt)(want - k > (1u << 30) ? 1u << 30 : want - k));
		if (crc != e->crc)
			return zip_corrupt(what, "CRC-32 mismatch in the member", err);
	}
	return 0;
}

/* ---------------------------------------------------------------- arrays */

/* One array of a source: a .npy file (key NULL) or member key of the .npz at path. */
struct array {
	char what[4200]; /* for messages */
	uint64_t total;	 /* bytes of the .npy (file or member) */
	unsigned char *buf;
	size_t len; /* bytes in buf: the header (peek) or all */
	struct npy h;
};

/* Reads an array's header (head set) or all of it, and parses the header. */
static int array_read(const char *path, const char *key, int head, struct array *a,
		      struct mc_err *err)
{
	struct zip_entry e;
	struct stat st;
	FILE *fp;
	int ret;

	memset(a, 0, sizeof(*a));
	if (key)
		snprintf(a->what, sizeof(a->what), "%s, array '%s'", path, key);
	else
		snprintf(a->what, sizeof(a->what), "%s", path);
	fp = fopen(path, "rb");
	if (!fp)
		return mc_err_set(err, MC_EIO, "%s: cannot open: %s", path, strerror(errno));
	if (fstat(fileno(fp), &st) || S_ISDIR(st.st_mode)) {
		ret = mc_err_set(err, MC_EIO, "%s: is a directory; give the path of a %s file",
				 path, key ? ".npz" : ".npy");
		goto out;
	}
	if (key) {
		ret = zip_find(fp, path, key, &e, err);
		if (!ret)
			ret = zip_check(a->what, &e, err);
		if (ret)
			goto out;
		a->total = e.usize;
	} else {
		a->total = (uint64_t)st.st_size;
	}
	if (a->total > NPY_MAX_BYTES + NPY_PEEK) {
		ret = mc_err_set(err, MC_ECORRUPT,
				 "%s: %llu bytes; more than the %llu bytes of "
				 "an array mcomp loads",
				 a->what, (unsigned long long)a->total,
				 (unsigned long long)NPY_MAX_BYTES);
		goto out;
	}
	a->len = head && a->total > NPY_PEEK ? NPY_PEEK : (size_t)a->total;
	a->buf = malloc(a->len ? a->len : 1);
	if (!a->buf) {
		ret =
		    mc_err_set(err, MC_ENOMEM, "%s: out of memory for %zu bytes", a->what, a->len);
		goto out;
	}
	if (key) {
		/* The header first: a shape the member cannot hold is refused before
		 * all of it is inflated. */
		size_t hn = a->len < NPY_PEEK ? a->len : NPY_PEEK;

		ret = zip_read(fp, path, a->what, &e, hn, a->buf, err) ||
		      parse_header(a->what, a->buf, hn, a->total, &a->h, err);
		if (!ret && hn < a->len)
			ret = zip_read(fp, path, a->what, &e, a->len, a->buf, err);
		ret = ret ? err->code : 0;
	} else {
		if (fread(a->buf, 1, a->len, fp) != a->len) {
			ret = mc_err_set(err, MC_EIO, "%s: read failed: %s", path,
					 ferror(fp) ? strerror(errno) : "the file shrank");
			goto out;
		}
		ret = parse_header(a->what, a->buf, a->len, a->total, &a->h, err);
	}
out:
	fclose(fp);
	if (ret) {
		free(a->buf);
		a->buf = NULL;
	}
	return ret;
}

static void array_free(struct array *a)
{
	free(a->buf);
	a->buf = NULL;
}

/* The path of array x or y of src, and its key in an archive (else NULL). */
static const char *array_path(const struct mc_data_source *src, const char *xy, const char **key)
{
	*key = src->format == MC_DATA_NPZ ? xy : NULL;
	return src->format == MC_DATA_NPZ ? src->file : xy;
}

/* Reads src's arrays (headers only when head is set) and checks them. */
static int read_source(const struct mc_data_source *src, int head, struct array *x, struct array *y,
		       int *ndim, int64_t shape[3], struct mc_err *err)
{
	const char *key, *path;
	int ret;

	memset(y, 0, sizeof(*y));
	path = array_path(src, src->x, &key);
	ret = array_read(path, key, head, x, err);
	if (ret)
		return ret;
	ret = check_x(x->what, &x->h, x->total, ndim, shape, err) ||
	      mc_preprocess_check(&src->pre, shape[0], x->what, err);
	if (!ret && src->y) {
		path = array_path(src, src->y, &key);
		ret = array_read(path, key, head, y, err) ||
		      check_y(y->what, &y->h, y->total, x->h.shape[0], x->what, err);
	}
	if (ret) {
		array_free(x);
		array_free(y);
		return err->code;
	}
	return 0;
}

int mc_npy_peek(const struct mc_data_source *src, int64_t *n, int *ndim, int64_t shape[3],
		struct mc_err *err)
{
	struct array *x = malloc(2 * sizeof(*x));
	int ret;

	if (!x)
		return mc_err_set(err, MC_ENOMEM, "out of memory");
	ret = read_source(src, 1, &x[0], &x[1], ndim, shape, err);
	if (!ret)
		*n = x[0].h.shape[0];
	array_free(&x[0]);
	array_free(&x[1]);
	free(x);
	return ret;
}

/* The bytes of arrays x and y, with the floats and labels they become, against
 * the memory limit (mc_mem_check). */
static int fits(const struct array *x, const struct array *y, int ndim, const int64_t *shape,
		struct mc_err *err)
{
	uint64_t n = (uint64_t)x->h.shape[0], need = n, v = 4;
	char what[4300];
	int over = 0;

	for (int i = 0; i < ndim; i++)
		over |= __builtin_mul_overflow(v, (uint64_t)shape[i], &v);
	over |= __builtin_mul_overflow(v, n, &v) || __builtin_add_overflow(need, v, &need) ||
		__builtin_add_overflow(need, x->total, &need) ||
		__builtin_add_overflow(need, y->total, &need);
	snprintf(what, sizeof(what), "%s: a data set of %llu samples", x->what,
		 (unsigned long long)n);
	return mc_mem_check(over ? UINT64_MAX : need, what, err);
}

struct mc_dataset *mc_npy_load(const struct mc_data_source *src, struct mc_err *err)
{
	struct array *x = malloc(2 * sizeof(*x));
	struct mc_dataset *d = NULL;
	int64_t shape[3];
	int ndim;

	if (!x) {
		mc_err_set(err, MC_ENOMEM, "out of memory");
		return NULL;
	}
	/* The headers first: the arrays and the data set made of them must fit
	 * the memory limit before any array is read whole. */
	if (read_source(src, 1, &x[0], &x[1], &ndim, shape, err) ||
	    fits(&x[0], &x[1], ndim, shape, err))
		goto out;
	array_free(&x[0]);
	array_free(&x[1]);
	if (read_source(src, 0, &x[0], &x[1], &ndim, shape, err))
		goto out;
	d = mc_dataset_new(src->format == MC_DATA_NPZ ? src->file : src->x, x[0].h.shape[0], ndim,
			   shape, err);
	if (d && (mc_data_fill_x(d, x[0].buf + x[0].h.data_off, x[0].h.type, &src->pre, x[0].what,
				 err) ||
		  (src->y &&
		   mc_data_fill_y(d, x[1].buf + x[1].h.data_off, x[1].h.type, x[1].what, err)))) {
		mc_dataset_free(d);
		d = NULL;
	}
out:
	array_free(&x[0]);
	array_free(&x[1]);
	free(x);
	return d;
}

/* ---------------------------------------------------------------- writing */

MC_API int mc_npy_write_f32(const char *path, int ndim, const int64_t *shape, const float *data,
			    struct mc_err *err)
{
	char hdr[512];
	size_t numel = 1, hl, off, total;
	unsigned char *buf;
	int k, ret;

	if (ndim < 1 || ndim > NPY_MAX_DIMS)
		return mc_err_set(err, MC_EINVAL,
				  "%s: %d dimensions; a .npy array of mcomp's has "
				  "1 to %d",
				  path, ndim, NPY_MAX_DIMS);
	k = snprintf(hdr, sizeof(hdr), "{'descr': '<f4', 'fortran_order': False, 'shape': (");
	for (int i = 0; i < ndim; i++) {
		if (shape[i] < 0 || mc_mul_overflow(numel, (size_t)shape[i], &numel))
			return mc_err_set(err, MC_EINVAL, "%s: bad shape", path);
		k += snprintf(hdr + k, sizeof(hdr) - (size_t)k, "%s%lld", i ? ", " : "",
			      (long long)shape[i]);
	}
	k += snprintf(hdr + k, sizeof(hdr) - (size_t)k, "%s), }", ndim == 1 ? "," : "");
	/* Spaces and a newline up to a multiple of 64 bytes, as NumPy aligns. */
	hl = (size_t)k + 1;
	off = (10 + hl + 63) / 64 * 64;
	hl = off - 10;
	if (mc_mul_overflow(numel, 4, &total) || total > SIZE_MAX - off)
		return mc_err_set(err, MC_EINVAL, "%s: array too large", path);
	buf = malloc(off + total);
	if (!buf)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory for %zu bytes", path,
				  off + total);
	memcpy(buf, "\x93NUMPY\x01\x00", 8);
	buf[8] = (unsigned char)(hl & 0xff);
	buf[9] = (unsigned char)(hl >> 8);
	memset(buf + 10, ' ', hl);
	memcpy(buf + 10, hdr, (size_t)k);
	buf[off - 1] = '\n';
	for (size_t i = 0; i < numel; i++) {
		uint32_t u;

		memcpy(&u, &data[i], 4);
		for (int b = 0; b < 4; b++)
			buf[off + 4 * i + (size_t)b] = (unsigned char)(u >> (8 * b));
	}
	ret = mc_write_file_atomic(path, buf, off + total, err);
	free(buf);
	return ret;
}
