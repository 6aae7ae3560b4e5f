// SPDX-License-Identifier: MIT
/*
 * check_npy.c - NumPy data: .npy files and .npz archives (stored and
 * deflated) read as data sets, every dtype and layout accepted and the
 * preprocessing applied as stated in mcomp/data.h; hostile files (corrupt
 * headers, huge shapes, wrong dtypes, Fortran order, label mismatches,
 * truncated or damaged archives, missing members) each refused with a clear
 * message; .npy written back; and npy/npz splits in pipelines, which train
 * to the same bytes as the same samples given as IDX.
 *
 * Every file is written here, by hand: a .npy is a header and raw bytes, an
 * .npz a zip archive put together with zlib's deflate and crc32.
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include <mcomp/mcomp.h>

#include "tiny_data.h"

/* ---------------------------------------------------------------- writing test files */

/* A .npy (version 1.0) of header dict text and n bytes of data, into buf
 * (malloc'd); its size in *len. */
static unsigned char *npy_bytes(const char *dict, const void *data, size_t n, size_t *len)
{
	size_t dl = strlen(dict), hl = (10 + dl + 1 + 63) / 64 * 64 - 10;
	unsigned char *b = malloc(10 + hl + n + 1);

	ck_assert_ptr_nonnull(b);
	memcpy(b, "\x93NUMPY\x01\x00", 8);
	b[8] = (unsigned char)(hl & 0xff);
	b[9] = (unsigned char)(hl >> 8);
	memset(b + 10, ' ', hl);
	memcpy(b + 10, dict, dl);
	b[10 + hl - 1] = '\n';
	if (n)
		memcpy(b + 10 + hl, data, n);
	*len = 10 + hl + n;
	return b;
}

/* Writes a .npy of dtype descr and shape (a Python tuple's text) at path. */
static void write_npy(const char *path, const char *descr, const char *shape, const void *data,
		      size_t n)
{
	char dict[512];
	unsigned char *b;
	size_t len;

	PATHF(dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
	b = npy_bytes(dict, data, n, &len);
	write_file(path, b, len);
	free(b);
}

static void put16(unsigned char *p, unsigned v)
{
	p[0] = (unsigned char)v;
	p[1] = (unsigned char)(v >> 8);
}

static void put32(unsigned char *p, uint32_t v)
{
	put16(p, v & 0xffff);
	put16(p + 2, v >> 16);
}

struct member {
	const char *name;
	const unsigned char *data;
	size_t len;
};

/* A zip archive of the members at path: deflated (raw deflate, method 8)
 * when deflated is set, else stored. Returns its size. */
static size_t write_zip(const char *path, const struct member *m, int n, int deflated)
{
	size_t cap = 4096, pos = 0, cd_start, offs[8];
	unsigned char *z, *cd;
	size_t cdn = 0;

	for (int i = 0; i < n; i++)
		cap += 2 * m[i].len + 200;
	z = malloc(cap);
	cd = malloc(4096);
	ck_assert(z && cd && n <= 8);
	for (int i = 0; i < n; i++) {
		size_t nl = strlen(m[i].name), csize = m[i].len;
		uint32_t crc = (uint32_t)crc32(0L, m[i].data, (uInt)m[i].len);
		unsigned char *h = z + pos;

		offs[i] = pos;
		put32(h, 0x04034b50);
		put16(h + 4, 20);
		put16(h + 6, 0);
		put16(h + 8, deflated ? 8 : 0);
		put32(h + 10, 0);
		put32(h + 14, crc);
		put16(h + 26, (unsigned)nl);
		put16(h + 28, 0);
		memcpy(h + 30, m[i].name, nl);
		pos += 30 + nl;
		if (deflated) {
			z_stream s = {0};

			ck_assert_int_eq(
			    deflateInit2(&s, 9, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY), Z_OK);
			s.next_in = (Bytef *)m[i].data;
			s.avail_in = (uInt)m[i].len;
			s.next_out = z + pos;
			s.avail_out = (uInt)(cap - pos);
			ck_assert_int_eq(deflate(&s, Z_FINISH), Z_STREAM_END);
			csize = s.total_out;
			deflateEnd(&s);
		} else {
			memcpy(z + pos, m[i].data, m[i].len);
		}
		put32(h + 18, (uint32_t)csize);
		put32(h + 22, (uint32_t)m[i].len);
		pos += csize;
		/* its central directory entry */
		put32(cd + cdn, 0x02014b50);
		put16(cd + cdn + 4, 20);
		memcpy(cd + cdn + 6, h + 4, 26); /* version needed .. name length */
		put16(cd + cdn + 30, 0);	 /* extra */
		put16(cd + cdn + 32, 0);	 /* comment */
		memset(cd + cdn + 34, 0, 8);	 /* disk, attributes */
		put32(cd + cdn + 42, (uint32_t)offs[i]);
		memcpy(cd + cdn + 46, m[i].name, nl);
		cdn += 46 + nl;
	}
	cd_start = pos;
	memcpy(z + pos, cd, cdn);
	pos += cdn;
	put32(z + pos, 0x06054b50);
	memset(z + pos + 4, 0, 4);
	put16(z + pos + 8, (unsigned)n);
	put16(z + pos + 10, (unsigned)n);
	put32(z + pos + 12, (uint32_t)cdn);
	put32(z + pos + 16, (uint32_t)cd_start);
	put16(z + pos + 20, 0);
	pos += 22;
	write_file(path, z, pos);
	free(z);
	free(cd);
	return pos;
}

/* A .npy member for write_zip (its bytes malloc'd into *buf). */
static struct member npy_member(const char *name, const char *descr, const char *shape,
				const void *data, size_t n, unsigned char **buf)
{
	char dict[512];
	struct member m = {.name = name};

	PATHF(dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
	*buf = npy_bytes(dict, data, n, &m.len);
	m.data = *buf;
	return m;
}

/* A lasting copy of a path from spath (whose buffers rotate), for a source to keep. */
static const char *keep(const char *p)
{
	static char pool[16][4200];
	static int k;

	if (!p)
		return NULL;
	k = (k + 1) % 16;
	snprintf(pool[k], sizeof(pool[k]), "%s", p);
	return pool[k];
}

static struct mc_data_source npy_src(const char *x, const char *y)
{
	struct mc_data_source s = {.format = MC_DATA_NPY, .x = keep(x), .y = keep(y)};

	return s;
}

static struct mc_dataset *load_ok(const struct mc_data_source *src)
{
	struct mc_err err = {0};
	struct mc_dataset *d = mc_data_load(src, &err);

	ck_assert_msg(d != NULL, "%s", err.msg);
	return d;
}

/* src fails to load with code and a message holding want, and so does its peek
 * when peek is set (what the header tells). */
static void load_fails(const struct mc_data_source *src, int code, const char *want, int peek)
{
	struct mc_err err = {0};
	struct mc_dataset *d = mc_data_load(src, &err);
	int64_t n, shape[3];
	int ndim;

	ck_assert_msg(d == NULL, "loaded, but should fail with '%s'", want);
	ck_assert_msg(err.code == code, "code %d, not %d: %s", err.code, code, err.msg);
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
	if (!peek)
		return;
	memset(&err, 0, sizeof(err));
	ck_assert_int_eq(mc_data_peek(src, &n, &ndim, shape, &err), code);
	ck_assert_msg(strstr(err.msg, want), "peek: '%s' lacks '%s'", err.msg, want);
}

static void setup(void)
{
	static const char *const passes[] = {"train", "eval", "quantize", NULL};

	tiny_setup("npy", passes);
}

/* ---------------------------------------------------------------- reading */

/* uint8 NCHW inputs with int64 labels: x / 255 exactly, shape [C, H, W]. */
START_TEST(test_u8_nchw)
{
	unsigned char x[3 * 2 * 2 * 2];
	int64_t y[3] = {4, 0, 2};
	struct mc_data_source src = npy_src(spath("x.npy"), spath("y.npy"));
	struct mc_dataset *d;

	for (size_t i = 0; i < sizeof(x); i++)
		x[i] = (unsigned char)(i * 37 % 256);
	write_npy(spath("x.npy"), "|u1", "(3, 2, 2, 2)", x, sizeof(x));
	write_npy(spath("y.npy"), "<i8", "(3,)", y, sizeof(y));
	d = load_ok(&src);
	ck_assert_int_eq(d->n, 3);
	ck_assert_int_eq(d->ndim, 3);
	ck_assert_int_eq(d->shape[0], 2);
	ck_assert_int_eq(d->shape[1], 2);
	ck_assert_int_eq(d->shape[2], 2);
	ck_assert_int_eq(d->sample_numel, 8);
	ck_assert_int_eq(d->n_classes, 5);
	for (size_t i = 0; i < sizeof(x); i++)
		ck_assert_msg(d->x[i] == x[i] / 255.0f, "x[%zu] = %.9g", i, d->x[i]);
	ck_assert_int_eq(d->y[0], 4);
	ck_assert_int_eq(d->y[2], 2);
	mc_dataset_free(d);

	/* [N, H, W] is one channel, as IDX; uint8 labels [N, 1] */
	write_npy(spath("x.npy"), "|u1", "(2, 3, 4)", x, 24);
	write_npy(spath("y.npy"), "|u1", "(2, 1)", "\x01\x00", 2);
	d = load_ok(&src);
	ck_assert_int_eq(d->ndim, 3);
	ck_assert_int_eq(d->shape[0], 1);
	ck_assert_int_eq(d->shape[1], 3);
	ck_assert_int_eq(d->shape[2], 4);
	ck_assert_int_eq(d->n_classes, 2);
	mc_dataset_free(d);
}
END_TEST

/* float32 [N, features] with int32 labels: the bits kept (scale 1). */
START_TEST(test_f32_features)
{
	float x[4 * 3] = {0.5f, -1.25f, 3e-8f, 1e30f, -0.0f, 7.0f, 0.1f, 0.2f, 0.3f, -5, 6, 1};
	int32_t y[4] = {1, 0, 1, 9};
	struct mc_data_source src = npy_src(spath("x.npy"), spath("y.npy"));
	struct mc_dataset *d;
	int64_t n, shape[3];
	int ndim;
	struct mc_err err = {0};

	write_npy(spath("x.npy"), "<f4", "(4, 3)", x, sizeof(x));
	write_npy(spath("y.npy"), "<i4", "(4,)", y, sizeof(y));
	ck_assert_msg(mc_data_peek(&src, &n, &ndim, shape, &err) == 0, "%s", err.msg);
	ck_assert_int_eq(n, 4);
	ck_assert_int_eq(ndim, 1);
	ck_assert_int_eq(shape[0], 3);
	d = load_ok(&src);
	ck_assert_int_eq(d->ndim, 1);
	ck_assert_int_eq(d->sample_numel, 3);
	ck_assert_int_eq(d->n_classes, 10);
	ck_assert_int_eq(memcmp(d->x, x, sizeof(x)), 0);
	mc_dataset_free(d);

	/* inputs only */
	src.y = NULL;
	d = load_ok(&src);
	ck_assert_int_eq(d->n_classes, 0);
	ck_assert_int_eq(d->y[3], 0);
	mc_dataset_free(d);
}
END_TEST

/* The default scale of uint8 data, 1/255 in double and rounded once, is the
 * x / 255.0f that IDX data always had: IDX splits keep their bytes. */
START_TEST(test_default_scale_is_idx)
{
	for (int v = 0; v < 256; v++)
		ck_assert_msg((float)((double)v * (1.0 / 255)) == v / 255.0f, "%d", v);
}
END_TEST

/* scale, then mean and std per channel, in double, rounded once. */
START_TEST(test_preprocess)
{
	unsigned char x[2 * 2 * 3];
	const double mean[2] = {0.25, -1}, std[2] = {0.5, 4}, one[1] = {2};
	struct mc_data_source src = npy_src(spath("x.npy"), NULL);
	struct mc_dataset *d;

	for (size_t i = 0; i < sizeof(x); i++)
		x[i] = (unsigned char)(i * 23);
	write_npy(spath("x.npy"), "|u1", "(2, 2, 3, 1)", x, sizeof(x));
	src.pre.scale = 0.01;
	src.pre.n_mean = 2;
	src.pre.mean = mean;
	src.pre.n_std = 2;
	src.pre.std = std;
	d = load_ok(&src);
	for (size_t i = 0; i < sizeof(x); i++) {
		int c = (int)(i / 3 % 2);

		ck_assert_msg(d->x[i] == (float)((x[i] * 0.01 - mean[c]) / std[c]), "x[%zu]", i);
	}
	mc_dataset_free(d);

	/* one value for every channel */
	src.pre.n_mean = 0;
	src.pre.n_std = 1;
	src.pre.std = one;
	d = load_ok(&src);
	ck_assert(d->x[5] == (float)(x[5] * 0.01 / 2));
	mc_dataset_free(d);

	/* wrong counts, zero std: bad usage */
	src.pre.n_std = 2;
	src.pre.std = (const double[]){1, 0};
	load_fails(&src, MC_EINVAL, "std[1] is 0; it must be a finite number above 0", 1);
	src.pre.n_std = 0;
	src.pre.n_mean = 3;
	src.pre.mean = (const double[]){1, 2, 3};
	load_fails(&src, MC_EINVAL, "mean has 3 values but the samples have 2 channels", 1);
}
END_TEST

/* ---------------------------------------------------------------- hostile .npy */

START_TEST(test_hostile_headers)
{
	/* Whole files, for the magic and the header length. */
	static const struct {
		const char *bytes;
		size_t len;
		const char *want;
	} raw[] = {
#define R(s, w) {s, sizeof(s) - 1, w}
	    R("PK\x03\x04 not numpy at all", "bad magic; it is not a .npy file"),
	    R("\x93NUM", "too short for the .npy magic"),
	    R("\x93NUMPY\x09\x00\x10\x00{}", ".npy format version 9.0"),
	    R("\x93NUMPY\x01\x00\xff\x00{'descr'", "the .npy header promises 255 bytes, found 8"),
	    R("\x93NUMPY\x02\x00\xff\xff\xff\x7f{", ".npy header of 2147483647 bytes"),
	    R("\x93NUMPY\x02\x00\x10", "the .npy header is truncated"),
	    R("\x93NUMPY\x01\x00\x04\x00{}\0 ", "NUL byte in the .npy header"),
#undef R
	};
	/* Header dicts, in files of the right header length. */
	static const struct {
		const char *dict, *want;
	} dicts[] = {
	    {"[1, 2, 3]", "is not the dict NumPy writes (at byte 0 of '[1, 2, 3]"},
	    {"{'descr': '|u1', 'fortran_o", "is not the dict NumPy writes"},
	    {"{'descr': '|u1', 'fortran_order': Maybe, 'shape': (2,)}", "is not the dict"},
	    {"{'descr': '|u1', 'fortran_order': False, 'shape': (2, x)}", "is not the dict"},
	    {"{'descr': '|u1', 'fortran_order': False, 'shape': (2,)} junk", "is not the dict"},
	    {"{'descr': '|u1', 'fortran_order': False, 'color': (2, 3), }", "unknown key 'color'"},
	    {"{'descr': '|u1', 'fortran_order': False}", "the .npy header lacks 'shape'"},
	    {"{'descr': '|u1', 'descr': '<f4', 'shape': (2, 3), }", "key 'descr' twice"},
	    {"{'descr': '|u1', 'fortran_order': False, 'shape': (99999999999999999999, 2), }",
	     "beyond 2^63"},
	    {"{'descr': '|u1', 'fortran_order': False, 'shape': (4294967296, 4294967296), }",
	     "(4294967296, 4294967296) of '|u1' is more than 68719476736 bytes"},
	    {"{'descr': '|u1', 'fortran_order': False, 'shape': (1, 1, 1, 1, 1, 1, 1, 1, 1), }",
	     "more than 8 dimensions"},
	    {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }",
	     "a structured dtype"},
	};
	struct mc_data_source src = npy_src(spath("x.npy"), NULL);
	unsigned char *b;
	size_t len;

	for (size_t i = 0; i < sizeof(raw) / sizeof(raw[0]); i++) {
		write_file(spath("x.npy"), raw[i].bytes, raw[i].len);
		load_fails(&src, MC_ECORRUPT, raw[i].want, 1);
	}
	for (size_t i = 0; i < sizeof(dicts) / sizeof(dicts[0]); i++) {
		b = npy_bytes(dicts[i].dict, NULL, 0, &len);
		write_file(spath("x.npy"), b, len);
		free(b);
		load_fails(&src, MC_ECORRUPT, dicts[i].want, 1);
	}
}
END_TEST

/* Sizes, dtypes, order, ranks: each refused with what was found and what is read. */
START_TEST(test_hostile_arrays)
{
	unsigned char x[6 * 4] = {0};
	float nan_x[2 * 2] = {1, 2, NAN, 4};
	struct mc_data_source src = npy_src(spath("x.npy"), spath("y.npy"));
	unsigned char *b;
	size_t len;

	write_npy(spath("y.npy"), "|u1", "(6,)", "\0\1\2\0\1\2", 6);
	/* data shorter and longer than the shape */
	write_npy(spath("x.npy"), "|u1", "(6, 4)", x, 23);
	load_fails(&src, MC_ECORRUPT,
		   "shape (6, 4) of '|u1' is 24 bytes of data, found 23; the "
		   "file is truncated",
		   1);
	write_npy(spath("x.npy"), "|u1", "(6, 4)", x, 24);
	b = npy_bytes("{'descr': '|u1', 'fortran_order': False, 'shape': (6, 4), }", x, 24, &len);
	b = realloc(b, len + 3);
	memcpy(b + len, "abc", 3);
	write_file(spath("x.npy"), b, len + 3);
	free(b);
	load_fails(&src, MC_ECORRUPT, "found 27; the file is corrupt (trailing bytes)", 1);
	/* a huge shape in a small file: refused before any allocation */
	write_npy(spath("x.npy"), "<f4", "(1000000000, 1000)", x, 24);
	load_fails(&src, MC_ECORRUPT, "is more than", 1);
	write_npy(spath("x.npy"), "<f4", "(100000, 1000)", x, 24);
	load_fails(&src, MC_ECORRUPT, "is 400000000 bytes of data, found 24", 1);
	/* dtypes and order */
	write_npy(spath("x.npy"), "<f8", "(6, 1)", x, 24);
	load_fails(&src, MC_ECORRUPT,
		   "inputs of dtype '<f8' (float64); mcomp reads uint8 ('|u1') "
		   "or little-endian float32 ('<f4')",
		   1);
	write_npy(spath("x.npy"), ">f4", "(6, 1)", x, 24);
	load_fails(&src, MC_ECORRUPT, "'>f4' (big-endian float32)", 1);
	write_npy(spath("x.npy"), "<i2", "(6, 2)", x, 24);
	load_fails(&src, MC_ECORRUPT, "'<i2' (int16)", 1);
	write_npy(spath("x.npy"), "|b1", "(6, 4)", x, 24);
	load_fails(&src, MC_ECORRUPT, "'|b1' (bool)", 1);
	b = npy_bytes("{'descr': '|u1', 'fortran_order': True, 'shape': (6, 4), }", x, 24, &len);
	write_file(spath("x.npy"), b, len);
	free(b);
	load_fails(&src, MC_ECORRUPT, "Fortran order (fortran_order: True); mcomp reads C-order",
		   1);
	/* ranks */
	write_npy(spath("x.npy"), "|u1", "(24,)", x, 24);
	load_fails(&src, MC_ECORRUPT, "inputs of shape (24,); mcomp reads [N, features]", 1);
	write_npy(spath("x.npy"), "|u1", "(6, 0)", x, 0);
	load_fails(&src, MC_ECORRUPT, "inputs of shape (6, 0) hold no values", 1);
	write_npy(spath("x.npy"), "|u1", "(0, 4)", x, 0);
	load_fails(&src, MC_ECORRUPT, "hold no samples", 1);
	/* labels */
	write_npy(spath("x.npy"), "|u1", "(6, 4)", x, 24);
	write_npy(spath("y.npy"), "<f4", "(6,)", x, 24);
	load_fails(&src, MC_ECORRUPT,
		   "labels of dtype '<f4' (float32); mcomp reads integer class "
		   "indices",
		   1);
	write_npy(spath("y.npy"), "|u1", "(2, 3)", x, 6);
	load_fails(&src, MC_ECORRUPT, "labels of shape (2, 3) look one-hot", 1);
	write_npy(spath("y.npy"), "|u1", "(5,)", x, 5);
	load_fails(&src, MC_ECORRUPT, "has 6 samples but", 1);
	{
		int32_t y[6] = {0, 1, 300, 0, 0, 0};
		int64_t y8[6] = {0, 1, -1, 0, 0, 0};

		write_npy(spath("y.npy"), "<i4", "(6,)", y, sizeof(y));
		load_fails(&src, MC_ECORRUPT,
			   "label 300 of sample 2 is out of range; labels are "
			   "class indices in [0, 255]",
			   0);
		write_npy(spath("y.npy"), "<i8", "(6,)", y8, sizeof(y8));
		load_fails(&src, MC_ECORRUPT, "label -1 of sample 2 is out of range", 0);
	}
	/* non-finite inputs */
	write_npy(spath("x.npy"), "<f4", "(2, 2)", nan_x, sizeof(nan_x));
	src.y = NULL;
	load_fails(&src, MC_ECORRUPT, "sample 1 holds NaN (value 0 of the sample)", 0);
	/* missing file, a folder */
	src.x = keep(spath("absent.npy"));
	load_fails(&src, MC_EIO, "absent.npy: cannot open", 1);
	src.x = scratch;
	load_fails(&src, MC_EIO, "is a directory", 1);
}
END_TEST

/* ---------------------------------------------------------------- .npz */

START_TEST(test_npz)
{
	unsigned char x[5 * 8], *bx, *by, *bz;
	int64_t y[5] = {0, 1, 2, 1, 0};
	struct member m[3];
	struct mc_data_source src = {
	    .format = MC_DATA_NPZ, .file = keep(spath("d.npz")), .x = "x_train", .y = "y_train"};
	struct mc_dataset *d, *ref;
	long n;
	char *zip;

	for (size_t i = 0; i < sizeof(x); i++)
		x[i] = (unsigned char)(i * 7);
	write_npy(spath("x.npy"), "|u1", "(5, 8)", x, sizeof(x));
	write_npy(spath("y.npy"), "<i8", "(5,)", y, sizeof(y));
	ref = load_ok(&(struct mc_data_source){
	    .format = MC_DATA_NPY, .x = keep(spath("x.npy")), .y = keep(spath("y.npy"))});
	m[0] = npy_member("x_train.npy", "|u1", "(5, 8)", x, sizeof(x), &bx);
	m[1] = npy_member("y_train.npy", "<i8", "(5,)", y, sizeof(y), &by);
	m[2] = npy_member("z.npy", "<f8", "(1,)", y, 8, &bz);
	for (int deflate = 0; deflate < 2; deflate++) {
		write_zip(spath("d.npz"), m, 3, deflate);
		d = load_ok(&src);
		ck_assert_int_eq(d->n, 5);
		ck_assert_int_eq(d->sample_numel, 8);
		ck_assert_int_eq(memcmp(d->x, ref->x, sizeof(float) * 40), 0);
		ck_assert_int_eq(memcmp(d->y, ref->y, 5), 0);
		ck_assert_str_eq(d->source, spath("d.npz"));
		mc_dataset_free(d);
	}
	/* members that are not there, or not arrays mcomp reads */
	src.x = "x_test";
	load_fails(&src, MC_EINVAL,
		   "d.npz: no array 'x_test' in the archive; it holds "
		   "'x_train', 'y_train', 'z'",
		   1);
	src.x = "x_train";
	src.y = "z";
	load_fails(&src, MC_ECORRUPT, "d.npz, array 'z': labels of dtype '<f8' (float64)", 1);
	src.y = "y_train";

	/* a damaged deflate stream or CRC, a truncated archive, not a zip at all */
	zip = slurp(spath("d.npz"), &n);
	zip[60] ^= 0x55; /* inside the first member's data */
	write_file(spath("d.npz"), zip, (size_t)n);
	load_fails(&src, MC_ECORRUPT, "corrupt", 0);
	zip[60] ^= 0x55;
	write_file(spath("d.npz"), zip, (size_t)n - 10);
	load_fails(&src, MC_ECORRUPT, "no zip end-of-central-directory record", 1);
	write_file(spath("d.npz"), zip, 100);
	load_fails(&src, MC_ECORRUPT, "no zip end-of-central-directory record", 1);
	write_file(spath("d.npz"), "hello", 5);
	load_fails(&src, MC_ECORRUPT, "too short for a zip archive", 1);
	free(zip);

	/* stored, with one byte of a member flipped: the CRC catches it */
	write_zip(spath("d.npz"), m, 2, 0);
	zip = slurp(spath("d.npz"), &n);
	zip[30 + 11 + 128 + 3] ^= 1;
	write_file(spath("d.npz"), zip, (size_t)n);
	load_fails(&src, MC_ECORRUPT, "CRC-32 mismatch", 0);
	free(zip);

	/* a member whose stated size deflate cannot reach: refused before inflating */
	write_zip(spath("d.npz"), m, 2, 1);
	zip = slurp(spath("d.npz"), &n);
	{
		char *cd = memmem(zip, (size_t)n, "PK\x01\x02", 4);

		ck_assert_ptr_nonnull(cd);
		put32((unsigned char *)cd + 24, 0x7fffffff);
	}
	write_file(spath("d.npz"), zip, (size_t)n);
	load_fails(&src, MC_ECORRUPT, "the member's sizes do not add up", 1);
	free(zip);

	/* 32 MB of zeros deflated to 32 KB: a zip bomb, refused from the
	 * directory before inflating (arrays of real data deflate a few times) */
	{
		unsigned char *zeros = calloc(1, 32 << 20), *bb;
		struct member bomb[2];

		ck_assert_ptr_nonnull(zeros);
		bomb[0] = npy_member("x_train.npy", "|u1", "(512, 65536)", zeros, 32 << 20, &bb);
		bomb[1] = m[1];
		write_zip(spath("d.npz"), bomb, 2, 1);
		load_fails(&src, MC_ECORRUPT, "times its", 1);
		load_fails(&src, MC_ECORRUPT, "looks like a zip bomb; if the data is real, save it "
			   "with np.savez", 1);
		free(bb);
		free(zeros);
	}

	/* a central directory that points past the file */
	write_zip(spath("d.npz"), m, 2, 1);
	zip = slurp(spath("d.npz"), &n);
	put32((unsigned char *)zip + n - 6, 0x7fff0000);
	write_file(spath("d.npz"), zip, (size_t)n);
	load_fails(&src, MC_ECORRUPT, "the central directory lies outside the file", 1);
	free(zip);

	mc_dataset_free(ref);
	free(bx);
	free(by);
	free(bz);
}
END_TEST

/* ---------------------------------------------------------------- writing */

START_TEST(test_write_f32)
{
	float v[3 * 4];
	int64_t shape[2] = {3, 4};
	struct mc_err err = {0};
	struct mc_data_source src = npy_src(spath("out.npy"), NULL);
	struct mc_dataset *d;
	long n;
	char *text;

	for (int i = 0; i < 12; i++)
		v[i] = (float)i / 3 - 1;
	ck_assert_msg(mc_npy_write_f32(spath("out.npy"), 2, shape, v, &err) == 0, "%s", err.msg);
	text = slurp(spath("out.npy"), &n);
	ck_assert_int_eq(n, 128 + 48); /* header aligned to 64 bytes, as NumPy writes */
	ck_assert_ptr_nonnull(memmem(text, (size_t)n,
				     "{'descr': '<f4', 'fortran_order': False, "
				     "'shape': (3, 4), }",
				     59));
	ck_assert_int_eq(text[127], '\n');
	free(text);
	d = load_ok(&src);
	ck_assert_int_eq(d->n, 3);
	ck_assert_int_eq(d->sample_numel, 4);
	ck_assert_int_eq(memcmp(d->x, v, sizeof(v)), 0);
	mc_dataset_free(d);
	/* a folder is not overwritten; nothing is left beside it */
	ck_assert_int_eq(mkdir(spath("dir.npy"), 0777), 0);
	ck_assert_int_eq(mc_npy_write_f32(spath("dir.npy"), 2, shape, v, &err), MC_EIO);
}
END_TEST

/* ---------------------------------------------------------------- pipelines */

/* The tiny IDX split at prefix (tiny_data.h) as NumPy arrays: x uint8 [n, 1, 8, 8]
 * (or [n, 64] when flat), y int64 [n]; or both in one .npz at npz. */
static void idx_to_numpy(const char *prefix, const char *x, const char *y, const char *npz)
{
	char path[4200], shape[64];
	long ni, nl;
	char *img, *lab;
	int64_t *y8;
	int n;

	PATHF(path, "%s-images-idx3-ubyte", prefix);
	img = slurp(path, &ni);
	PATHF(path, "%s-labels-idx1-ubyte", prefix);
	lab = slurp(path, &nl);
	n = (int)(nl - 8);
	y8 = malloc(sizeof(*y8) * (size_t)n);
	ck_assert_ptr_nonnull(y8);
	for (int i = 0; i < n; i++)
		y8[i] = (unsigned char)lab[8 + i];
	PATHF(shape, "(%d, 1, 8, 8)", n);
	if (npz) {
		unsigned char *bx, *by;
		char sy[32];
		struct member m[2];

		PATHF(sy, "(%d,)", n);
		m[0] = npy_member("x.npy", "|u1", shape, img + 16, (size_t)ni - 16, &bx);
		m[1] = npy_member("labels.npy", "<i8", sy, y8, sizeof(*y8) * (size_t)n, &by);
		write_zip(npz, m, 2, 1);
		free(bx);
		free(by);
	} else {
		write_npy(x, "|u1", shape, img + 16, (size_t)ni - 16);
		PATHF(shape, "(%d,)", n);
		write_npy(y, "<i8", shape, y8, sizeof(*y8) * (size_t)n);
	}
	free(img);
	free(lab);
	free(y8);
}

/* A pipeline of splits train and test (line 4 and 5) and an output path. */
#define PIPELINE_FMT                                                                               \
	"mcomp: 1\n"                                                                               \
	"seed: 3\n"                                                                                \
	"data:\n"                                                                                  \
	"  train: %s\n"                                                                            \
	"  test: %s\n"                                                                             \
	"models:\n"                                                                                \
	"  m: {build: {input: [1, 8, 8], layers: [flatten, {linear: 16}, relu, {linear: 4}]}}\n"   \
	"passes:\n"                                                                                \
	"  - train: {model: m, epochs: 4, batch_size: 16, lr: 0.01}\n"                             \
	"  - eval: {model: m}\n"                                                                   \
	"output: {model: m, path: %s}\n"

/* A pipeline of npy and npz splits trains and evaluates; with the same
 * samples as IDX splits it writes the same model, byte for byte. */
START_TEST(test_pipeline_npy)
{
	struct mc_err err = {0};
	struct mc_model *m;
	struct mc_dataset *t;
	char text[4096];
	double acc;

	idx_to_numpy(spath("train"), spath("xtr.npy"), spath("ytr.npy"), NULL);
	idx_to_numpy(spath("test"), NULL, NULL, spath("test.npz"));
	PATHF(text, PIPELINE_FMT, "{npy: {x: xtr.npy, y: ytr.npy}}", "{npz: test.npz, y: labels}",
	      "npy.safetensors");
	ck_assert_msg(tiny_pipeline(reg, text, 1, &err) == 0, "%s", err.msg);
	PATHF(text, PIPELINE_FMT, "{idx: train}", "{idx: test}", "idx.safetensors");
	ck_assert_msg(tiny_pipeline(reg, text, 1, &err) == 0, "%s", err.msg);
	assert_same_file(spath("npy.safetensors"), spath("idx.safetensors"),
			 "npy and idx splits of the same samples train different models");

	m = mc_model_load(spath("npy.safetensors"), &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	t = mc_idx_load_prefix(spath("test"), &err);
	ck_assert_msg(t != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_evaluate(m, t, 32, &acc, NULL, &err), 0);
	ck_assert_msg(acc >= 0.9, "accuracy %g", acc);
	mc_dataset_free(t);
	mc_model_free(m);

	/* mean/std given: another model; a mean per channel of a 1-channel set refused
	 * at validation, at the split */
	PATHF(text, PIPELINE_FMT, "{npy: {x: xtr.npy, y: ytr.npy}, mean: [0.2], std: [0.3]}",
	      "{npz: test.npz, y: labels, mean: [0.2], std: [0.3]}", "pre.safetensors");
	ck_assert_msg(tiny_pipeline(reg, text, 1, &err) == 0, "%s", err.msg);
	PATHF(text, PIPELINE_FMT, "{npy: {x: xtr.npy, y: ytr.npy}, mean: [0.2, 0.1, 0.3]}",
	      "{npz: test.npz, y: labels}", "bad.safetensors");
	ck_assert_int_eq(tiny_pipeline(reg, text, 0, &err), MC_EINVAL);
	ck_assert_msg(strstr(err.msg, "p.yaml:4:3: data split 'train': ") &&
			  strstr(err.msg, "mean has 3 values but the samples have 1 channel"),
		      "%s", err.msg);
	/* a member missing, named at validation */
	PATHF(text, PIPELINE_FMT, "{npy: {x: xtr.npy, y: ytr.npy}}", "{npz: test.npz}",
	      "bad.safetensors");
	ck_assert_int_eq(tiny_pipeline(reg, text, 0, &err), MC_EINVAL);
	ck_assert_msg(strstr(err.msg, "p.yaml:5:3: data split 'test': ") &&
			  strstr(err.msg, "no array 'y' in the archive; it holds 'x', 'labels'"),
		      "%s", err.msg);
	ck_assert_int_ne(access(spath("bad.safetensors"), F_OK), 0);
}
END_TEST

/* Schema errors of npy and npz splits, each at its place. */
START_TEST(test_pipeline_schema)
{
	static const struct {
		const char *split, *want;
	} cases[] = {
	    {"{npy: {x: xtr.npy}}", "4:16: split 'train': npy: missing required key 'y'"},
	    {"{npy: {x: xtr.npy, y: ytr.npy, z: 1}}",
	     "4:41: unknown key 'z' in npy of split 'train'"},
	    {"{npy: xtr.npy}", "4:16: npy of split 'train' must be a mapping"},
	    {"{npy: {x: xtr.npy, y: none.npy}}", "4:32: npy y: cannot find '"},
	    {"{npz: none.npz}", "4:16: npz: cannot find '"},
	    {"{idx: train, npz: test.npz}", "4:11: split 'train': give either 'idx' or 'npz'"},
	    {"{npy: {x: xtr.npy, y: ytr.npy}, x: a}", "4:42: split 'train': 'x' names an array "
						      "of an npz archive"},
	    {"{idx: train, std: [1, 0]}", "4:32: split 'train': std: 0 is out of range"},
	    {"{idx: train, scale: 0}", "4:30: split 'train': scale: 0 is out of range"},
	    {"{idx: train, mean: fast}", "4:29: split 'train': mean: expected a number"},
	    {"{idx: train, scal: 1}", "4:23: unknown key 'scal' in split 'train'; did you mean "
				      "'scale'?"},
	    {"{first: 3}", "4:10: split 'train': missing required key 'idx', 'npy' or 'npz'"},
	};
	struct mc_err err = {0};
	char text[4096], place[4400];

	idx_to_numpy(spath("train"), spath("xtr.npy"), spath("ytr.npy"), NULL);
	idx_to_numpy(spath("test"), NULL, NULL, spath("test.npz"));
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		PATHF(text, PIPELINE_FMT, cases[i].split, "{idx: test}", "o.safetensors");
		ck_assert_int_eq(tiny_pipeline(reg, text, 0, &err), MC_EINVAL);
		PATHF(place, "%s:%s", spath("p.yaml"), cases[i].want);
		ck_assert_msg(strstr(err.msg, place), "%s: '%s' lacks '%s'", cases[i].split,
			      err.msg, place);
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("npy");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, tiny_teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_u8_nchw);
	tcase_add_test(tc, test_f32_features);
	tcase_add_test(tc, test_default_scale_is_idx);
	tcase_add_test(tc, test_preprocess);
	tcase_add_test(tc, test_hostile_headers);
	tcase_add_test(tc, test_hostile_arrays);
	tcase_add_test(tc, test_npz);
	tcase_add_test(tc, test_write_f32);
	tcase_add_test(tc, test_pipeline_npy);
	tcase_add_test(tc, test_pipeline_schema);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
