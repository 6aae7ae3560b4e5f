// SPDX-License-Identifier: MIT
/*
 * idx.c - labelled data sets from IDX files (MNIST, Fashion-MNIST).
 *
 * An IDX file is a big-endian header, then the data:
 *
 *	[0x00 0x00][type][ndim][dim 0 (u32)] ... [dim ndim-1 (u32)][data]
 *
 * mcomp reads unsigned-byte data (type 0x08): images [n, rows, cols]
 * (magic 0x00000803) and labels [n] (magic 0x00000801). Files may be gzip'd;
 * zlib reads plain files transparently. Every header field is checked
 * against the number of bytes actually present.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "io/data_int.h"

/* Decompressed size limit of one IDX file (Fashion-MNIST train is 47 MB);
 * it also bounds what a gzip bomb can make us allocate. */
#define IDX_MAX ((size_t)1 << 30)
#define IDX_U8	0x08

/* Reads all of path (gzip'd or not) into a malloc'd buffer. */
static int read_gz(const char *path, void **out, size_t *out_len, struct mc_err *err)
{
	unsigned char *buf = NULL, *nb;
	size_t cap = 1 << 20, n = 0;
	struct stat st;
	const char *msg;
	gzFile gz;
	int zerr, ret;

	*out = NULL;
	*out_len = 0;
	if (stat(path, &st) < 0)
		return mc_err_set(err, MC_EIO, "%s: cannot open: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode))
		return mc_err_set(err, MC_EIO, "%s: is a directory; give the path of an IDX file",
				  path);
	gz = gzopen(path, "rb");
	if (!gz)
		return mc_err_set(err, MC_EIO, "%s: cannot open: %s", path,
				  errno ? strerror(errno) : "out of memory");
	gzbuffer(gz, 1 << 17);
	buf = malloc(cap);
	if (!buf) {
		ret = mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
		goto out;
	}
	for (;;) {
		int r;

		if (n == cap) {
			if (cap >= IDX_MAX) {
				ret = mc_err_set(err, MC_ECORRUPT,
						 "%s: %zu bytes of data or more; not an IDX data "
						 "set mcomp can load",
						 path, IDX_MAX);
				goto out;
			}
			nb = realloc(buf, cap * 2);
			if (!nb) {
				ret = mc_err_set(err, MC_ENOMEM, "%s: out of memory", path);
				goto out;
			}
			buf = nb;
			cap *= 2;
		}
		r = gzread(gz, buf + n, (unsigned)(cap - n > (1u << 30) ? (1u << 30) : cap - n));
		if (r < 0) {
			msg = gzerror(gz, &zerr);
			ret = mc_err_set(err, zerr == Z_ERRNO ? MC_EIO : MC_ECORRUPT,
					 "%s: read failed: %s%s", path,
					 zerr == Z_ERRNO ? strerror(errno) : msg,
					 zerr == Z_ERRNO ? "" : "; the gzip stream is corrupt");
			goto out;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	/* At end of input, Z_BUF_ERROR means the gzip stream stopped early. */
	msg = gzerror(gz, &zerr);
	if (zerr != Z_OK) {
		ret = mc_err_set(err, MC_ECORRUPT, "%s: %s; the gzip file is truncated or corrupt",
				 path, msg);
		goto out;
	}
	if (n > IDX_MAX) {
		ret = mc_err_set(
		    err, MC_ECORRUPT,
		    "%s: more than %zu bytes of data; not an IDX data set mcomp can load", path,
		    IDX_MAX);
		goto out;
	}
	*out = buf;
	*out_len = n;
	buf = NULL;
	ret = 0;
out:
	free(buf);
	gzclose(gz);
	return ret;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Checks the IDX header of buf[0..len) for u8 data of ndim dimensions
 * (what = "image" or "label", for messages); fills dims and *data.
 */
static int idx_parse(const char *path, const unsigned char *buf, size_t len, int ndim,
		     const char *what, uint32_t *dims, const unsigned char **data,
		     struct mc_err *err)
{
	size_t hdr = 4 + 4 * (size_t)ndim, need = 1;
	uint32_t magic = 0x800u | (uint32_t)ndim;

	if (len < 4)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: file is %zu bytes, too short for an IDX header; it is "
				  "truncated or not an IDX file",
				  path, len);
	if (buf[0] || buf[1])
		return mc_err_set(
		    err, MC_ECORRUPT,
		    "%s: bad magic 0x%08x (expected 0x%08x for an IDX %s file); it is "
		    "not an IDX file",
		    path, be32(buf), magic, what);
	if (buf[2] != IDX_U8)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: IDX element type 0x%02x; mcomp reads only unsigned bytes "
				  "(0x08)",
				  path, buf[2]);
	if (buf[3] != ndim)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: bad magic 0x%08x: %d dimensions, but an IDX %s file has %d "
				  "(magic 0x%08x); were the image and label files swapped?",
				  path, be32(buf), buf[3], what, ndim, magic);
	if (len < hdr)
		return mc_err_set(
		    err, MC_ECORRUPT,
		    "%s: file is %zu bytes, too short for its %zu-byte IDX header; it "
		    "is truncated",
		    path, len, hdr);
	for (int i = 0; i < ndim; i++) {
		dims[i] = be32(buf + 4 + 4 * i);
		if (!dims[i])
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: dimension %d of the IDX header is 0; the file is "
					  "corrupt or empty",
					  path, i);
		if (mc_mul_overflow(need, dims[i], &need))
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: IDX dimensions overflow; the file is corrupt", path);
	}
	if (len - hdr < need)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: header promises %zu bytes of data, found %zu; the file is "
				  "truncated (download it again)",
				  path, need, len - hdr);
	if (len - hdr > need)
		return mc_err_set(
		    err, MC_ECORRUPT,
		    "%s: %zu bytes of trailing garbage after the %zu bytes of data the "
		    "header describes; the file is corrupt",
		    path, len - hdr - need, need);
	*data = buf + hdr;
	return 0;
}

MC_API int mc_idx_peek(const char *images, int64_t *n, int64_t shape[3], struct mc_err *err)
{
	struct mc_err hdr_err = { 0 };
	unsigned char hdr[16];
	const unsigned char *data;
	uint32_t dims[3] = { 0 };
	gzFile gz;
	int got;

	gz = gzopen(images, "rb");
	if (!gz)
		return mc_err_set(err, MC_EIO, "%s: cannot open: %s", images,
				  errno ? strerror(errno) : "out of memory");
	got = gzread(gz, hdr, sizeof(hdr));
	gzclose(gz);
	if (got < 0)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: cannot read the IDX header; the file is corrupt", images);
	/* With the header alone, idx_parse can only fail on the data size once
	 * every dimension is read and nonzero: then the header is sound. */
	if (idx_parse(images, hdr, (size_t)got, 3, "image", dims, &data, &hdr_err) &&
	    !(got == (int)sizeof(hdr) && dims[0] && dims[1] && dims[2]))
		return mc_err_set(err, hdr_err.code, "%s", hdr_err.msg);
	*n = dims[0];
	shape[0] = 1;
	shape[1] = dims[1];
	shape[2] = dims[2];
	return 0;
}

struct mc_dataset *mc_idx_load_pre(const char *images, const char *labels,
				   const struct mc_preprocess *pre, struct mc_err *err)
{
	const unsigned char *px, *lb;
	void *ibuf = NULL, *lbuf = NULL;
	size_t ilen, llen;
	struct mc_dataset *d = NULL;
	uint32_t idims[3], ldims[1];
	int64_t shape[3];

	if (read_gz(images, &ibuf, &ilen, err) ||
	    idx_parse(images, ibuf, ilen, 3, "image", idims, &px, err))
		goto out;
	if (labels && (read_gz(labels, &lbuf, &llen, err) ||
		       idx_parse(labels, lbuf, llen, 1, "label", ldims, &lb, err)))
		goto out;
	if (labels && idims[0] != ldims[0]) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: %u images but %s has %u labels; the files do not belong together",
			   images, idims[0], labels, ldims[0]);
		goto out;
	}
	shape[0] = 1;
	shape[1] = idims[1];
	shape[2] = idims[2];
	d = mc_dataset_new(images, idims[0], 3, shape, err);
	if (!d)
		goto out;
	/* The defaults give x / 255.0f, as IDX data always had (mcomp/data.h). */
	if (mc_data_fill_x(d, px, MC_RAW_U8, pre, images, err) ||
	    (labels && mc_data_fill_y(d, lb, MC_RAW_U8, labels, err))) {
		mc_dataset_free(d);
		d = NULL;
	}
out:
	free(ibuf);
	free(lbuf);
	return d;
}

MC_API struct mc_dataset *mc_idx_load(const char *images, const char *labels, struct mc_err *err)
{
	return mc_idx_load_pre(images, labels, NULL, err);
}

/* The first of path + ".gz" and path that exists (malloc'd), or NULL. */
static char *find_variant(const char *prefix, const char *suffix, char *tried, size_t tried_n)
{
	static const char *const exts[] = {".gz", ""};
	size_t used = strlen(tried);
	struct stat st;

	for (int i = 0; i < 2; i++) {
		size_t n = strlen(prefix) + strlen(suffix) + strlen(exts[i]) + 1;
		char *p = malloc(n);

		if (!p)
			return NULL;
		snprintf(p, n, "%s%s%s", prefix, suffix, exts[i]);
		if (stat(p, &st) == 0 && !S_ISDIR(st.st_mode))
			return p;
		if (used < tried_n)
			used += snprintf(tried + used, tried_n - used, "%s%s", used ? ", " : "", p);
		free(p);
	}
	return NULL;
}

MC_API struct mc_dataset *mc_idx_load_prefix(const char *prefix, struct mc_err *err)
{
	char tried[2048] = "";
	char *images, *labels = NULL;
	struct mc_dataset *d = NULL;
	const char *hint = strncmp(prefix, "/usr/share/datasets/", 20)
			       ? ""
			       : "; install the data set with `apt-get install "
				 "dataset-fashion-mnist`";

	images = find_variant(prefix, "-images-idx3-ubyte", tried, sizeof(tried));
	if (images)
		labels = find_variant(prefix, "-labels-idx1-ubyte", tried, sizeof(tried));
	if (!images || !labels) {
		mc_err_set(err, MC_EIO, "%s: no IDX %s file; tried %s%s", prefix,
			   images ? "label" : "image", tried, hint);
		goto out;
	}
	d = mc_idx_load(images, labels, err);
	if (d) {
		char *src = strdup(prefix);

		if (src) {
			free(d->source);
			d->source = src;
		}
	}
out:
	free(images);
	free(labels);
	return d;
}
