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
 * zlib reads plain files transparently. The header is read first, and what
 * it declares is checked against the memory limit before any data is read;
 * then exactly that many bytes are read, and a file with fewer or more is
 * refused, so a gzip bomb stops at the size its header admits to.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <zlib.h>

#include "io/data_int.h"

#define IDX_U8 0x08
/* The most a deflate stream can expand: 258 bytes from 2 bits, 1032 : 1. */
#define DEFLATE_MAX_RATIO 1032
/*
 * Gzip'd images above GZ_PLAUSIBLE_MIN bytes may declare at most
 * GZ_PLAUSIBLE_RATIO times the file's size: real image sets compress 2 to 5
 * times (MNIST 4.7, Fashion-MNIST 1.8), while a bomb of a few hundred KB
 * would otherwise cost gigabytes within the memory limit. A plain file
 * cannot lie about its size, so gunzip is the way around for real data.
 */
#define GZ_PLAUSIBLE_MIN   ((size_t)16 << 20)
#define GZ_PLAUSIBLE_RATIO 32

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/*
 * Checks the IDX header of buf[0..len) for u8 data of ndim dimensions
 * (what = "image" or "label", for messages); fills dims and *need, the bytes
 * of data the header declares.
 */
static int idx_header(const char *path, const unsigned char *buf, size_t len, int ndim,
		      const char *what, uint32_t *dims, size_t *need, struct mc_err *err)
{
	size_t hdr = 4 + 4 * (size_t)ndim;
	uint32_t magic = 0x800u | (uint32_t)ndim;

	*need = 1;
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
		if (mc_mul_overflow(*need, dims[i], need) || *need > (size_t)INT64_MAX / 8)
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: IDX dimensions overflow; the file is corrupt", path);
	}
	/* One sample's values are counted in an int (mcomp/data.h). */
	if (ndim == 3 && (uint64_t)dims[1] * dims[2] > INT32_MAX)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: images of %u x %u values; mcomp takes at most %d values a "
				  "sample",
				  path, dims[1], dims[2], INT32_MAX);
	return 0;
}

/* One IDX file being read: gzip'd or not (zlib reads plain files as they are). */
struct idx_file {
	const char *path;
	gzFile gz;
	uint32_t dims[3];
	size_t need; /* bytes of data the header declares */
};

static int gz_failed(struct idx_file *x, struct mc_err *err)
{
	int zerr;
	const char *msg = gzerror(x->gz, &zerr);

	return mc_err_set(err, zerr == Z_ERRNO ? MC_EIO : MC_ECORRUPT, "%s: read failed: %s%s",
			  x->path, zerr == Z_ERRNO ? strerror(errno) : msg,
			  zerr == Z_ERRNO ? "" : "; the gzip stream is corrupt or truncated");
}

/* Opens x->path and reads its header (ndim dimensions): x->dims, x->need. */
static int idx_open(struct idx_file *x, const char *path, int ndim, const char *what,
		    struct mc_err *err)
{
	unsigned char hdr[16];
	struct stat st;
	int got;

	memset(x, 0, sizeof(*x));
	x->path = path;
	if (stat(path, &st) < 0)
		return mc_err_set(err, MC_EIO, "%s: cannot open: %s", path, strerror(errno));
	if (S_ISDIR(st.st_mode))
		return mc_err_set(err, MC_EIO, "%s: is a directory; give the path of an IDX file",
				  path);
	x->gz = gzopen(path, "rb");
	if (!x->gz)
		return mc_err_set(err, MC_EIO, "%s: cannot open: %s", path,
				  errno ? strerror(errno) : "out of memory");
	gzbuffer(x->gz, 1 << 17);
	got = gzread(x->gz, hdr, (unsigned)(4 + 4 * ndim));
	if (got < 0)
		return gz_failed(x, err);
	if (idx_header(path, hdr, (size_t)got, ndim, what, x->dims, &x->need, err))
		return err->code;
	/* What the file can hold, from its size: a plain file exactly, a gzip
	 * stream at most DEFLATE_MAX_RATIO times its bytes. */
	if (gzdirect(x->gz) && (uint64_t)st.st_size - (uint64_t)got < x->need)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: header promises %zu bytes of data, found %llu; the file is "
				  "truncated (download it again)",
				  path, x->need, (unsigned long long)st.st_size - (unsigned)got);
	if (!gzdirect(x->gz) && x->need / DEFLATE_MAX_RATIO > (uint64_t)st.st_size)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: header promises %zu bytes of data, more than a gzip stream "
				  "of %llu bytes can inflate to (%d times its size); the file is "
				  "corrupt",
				  path, x->need, (unsigned long long)st.st_size, DEFLATE_MAX_RATIO);
	if (!gzdirect(x->gz) && ndim == 3 && x->need > GZ_PLAUSIBLE_MIN &&
	    x->need / GZ_PLAUSIBLE_RATIO > (uint64_t)st.st_size)
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: header promises %zu bytes of images, %llu times the gzip "
				  "file's %llu bytes; image data sets compress about 2 to 5 times, so "
				  "this looks like a gzip bomb; if the data is real, gunzip the file "
				  "(a plain IDX file is read as its size says)",
				  path, x->need, (unsigned long long)(x->need / (uint64_t)st.st_size),
				  (unsigned long long)st.st_size);
	return 0;
}

/*
 * Reads exactly the x->need bytes of data the header declares into a
 * malloc'd buffer, and refuses a stream that ends before them or goes on
 * after them: what a gzip bomb inflates to is bounded by its header, which
 * the memory limit has checked.
 */
static int idx_read(struct idx_file *x, unsigned char **out, struct mc_err *err)
{
	unsigned char *buf = malloc(x->need ? x->need : 1), extra;
	size_t n = 0;
	int r, zerr;

	*out = NULL;
	if (!buf)
		return mc_err_set(err, MC_ENOMEM, "%s: out of memory for %zu bytes", x->path,
				  x->need);
	while (n < x->need) {
		r = gzread(x->gz, buf + n,
			   (unsigned)(x->need - n > (1u << 30) ? 1u << 30 : x->need - n));
		if (r < 0) {
			free(buf);
			return gz_failed(x, err);
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n < x->need) {
		/* At end of input, Z_BUF_ERROR means the gzip stream stopped early. */
		const char *msg = gzerror(x->gz, &zerr);

		free(buf);
		if (zerr != Z_OK)
			return mc_err_set(err, MC_ECORRUPT,
					  "%s: %s; the gzip file is truncated or corrupt", x->path,
					  msg);
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: header promises %zu bytes of data, found %zu; the file is "
				  "truncated (download it again)",
				  x->path, x->need, n);
	}
	r = gzread(x->gz, &extra, 1);
	if (r != 0) {
		free(buf);
		if (r < 0)
			return gz_failed(x, err);
		return mc_err_set(err, MC_ECORRUPT,
				  "%s: trailing garbage after the %zu bytes of data the header "
				  "describes; the file is corrupt",
				  x->path, x->need);
	}
	gzerror(x->gz, &zerr);
	if (zerr != Z_OK) {
		free(buf);
		return gz_failed(x, err);
	}
	*out = buf;
	return 0;
}

static void idx_close(struct idx_file *x)
{
	if (x->gz)
		gzclose(x->gz);
	x->gz = NULL;
}

MC_API int mc_idx_peek(const char *images, int64_t *n, int64_t shape[3], struct mc_err *err)
{
	struct idx_file x;
	int ret = idx_open(&x, images, 3, "image", err);

	idx_close(&x);
	if (ret)
		return ret;
	*n = x.dims[0];
	shape[0] = 1;
	shape[1] = x.dims[1];
	shape[2] = x.dims[2];
	return 0;
}

struct mc_dataset *mc_idx_load_pre(const char *images, const char *labels,
				   const struct mc_preprocess *pre, struct mc_err *err)
{
	struct idx_file xi, xl = { 0 };
	unsigned char *px = NULL, *lb = NULL;
	struct mc_dataset *d = NULL;
	uint64_t need;
	int64_t shape[3];
	char what[4200];

	if (idx_open(&xi, images, 3, "image", err) ||
	    (labels && idx_open(&xl, labels, 1, "label", err)))
		goto out;
	if (labels && xi.dims[0] != xl.dims[0]) {
		mc_err_set(err, MC_ECORRUPT,
			   "%s: %u images but %s has %u labels; the files do not belong together",
			   images, xi.dims[0], labels, xl.dims[0]);
		goto out;
	}
	/* What the headers declare, before reading any data: the bytes, their
	 * floats (4 each) and a label byte per image. */
	need = (uint64_t)xi.need * 5 + xl.need + xi.dims[0];
	snprintf(what, sizeof(what), "%s: an IDX data set of %u images of %u x %u", images,
		 xi.dims[0], xi.dims[1], xi.dims[2]);
	if (mc_mem_check(need, what, err) || idx_read(&xi, &px, err) ||
	    (labels && idx_read(&xl, &lb, err)))
		goto out;
	shape[0] = 1;
	shape[1] = xi.dims[1];
	shape[2] = xi.dims[2];
	d = mc_dataset_new(images, xi.dims[0], 3, shape, err);
	if (!d)
		goto out;
	/* The defaults give x / 255.0f, as IDX data always had (mcomp/data.h). */
	if (mc_data_fill_x(d, px, MC_RAW_U8, pre, images, err) ||
	    (labels && mc_data_fill_y(d, lb, MC_RAW_U8, labels, err))) {
		mc_dataset_free(d);
		d = NULL;
	}
out:
	idx_close(&xi);
	idx_close(&xl);
	free(px);
	free(lb);
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
