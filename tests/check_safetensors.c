// SPDX-License-Identifier: MIT
/*
 * check_safetensors.c - the safetensors reader and writer, and atomic writes.
 *
 * Every hostile file is built here, byte by byte, in a fresh temporary
 * folder: truncated files, header lengths past the end, headers that are not
 * JSON, offsets out of range, overlaps, holes, size mismatches, unknown
 * dtypes, overflowing shapes, duplicate keys, bad metadata.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mcomp/safetensors.h>

#include "scratch_dir.h"

static void setup(void)
{
	scratch_make("st");
}

static void teardown(void)
{
	scratch_remove();
}

static void write_raw(const char *path, const void *buf, size_t len)
{
	FILE *f = fopen(path, "wb");

	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
}

/* A safetensors file: header length hlen (as written), header text, data_len
 * bytes of data (i & 0xff). */
static const char *write_st_n(const char *name, uint64_t hlen, const char *hdr, size_t data_len)
{
	size_t n = strlen(hdr), total = 8 + n + data_len;
	unsigned char *b = malloc(total);
	const char *path = tpath(name);

	for (int i = 0; i < 8; i++)
		b[i] = (unsigned char)(hlen >> (8 * i));
	memcpy(b + 8, hdr, n);
	for (size_t i = 0; i < data_len; i++)
		b[8 + n + i] = (unsigned char)i;
	write_raw(path, b, total);
	free(b);
	return path;
}

static const char *write_st(const char *name, const char *hdr, size_t data_len)
{
	return write_st_n(name, strlen(hdr), hdr, data_len);
}

/* Reads path expecting failure with code and a message containing want. */
static void expect_fail(const char *path, int code, const char *want)
{
	struct mc_err err = {0};
	struct mc_st_file *f = mc_st_read(path, &err);

	ck_assert_msg(f == NULL, "%s: expected an error containing '%s'", path, want);
	ck_assert_int_eq(err.code, code);
	ck_assert_msg(strstr(err.msg, want), "message '%s' lacks '%s'", err.msg, want);
	ck_assert_msg(strstr(err.msg, path), "message '%s' does not name the file", err.msg);
}

static void read_all(const char *path, void **buf, size_t *len)
{
	struct mc_err err = {0};

	ck_assert_msg(mc_read_file(path, 1 << 30, buf, len, &err) == 0, "%s", err.msg);
}

static struct mc_tensor *mk(const char *name, enum mc_dtype dt, int ndim, const int64_t *shape)
{
	struct mc_err err = {0};
	struct mc_tensor *t = mc_tensor_new(name, dt, ndim, shape, &err);
	unsigned char *p;

	ck_assert_msg(t != NULL, "%s", err.msg);
	p = t->data;
	for (size_t i = 0; i < mc_tensor_nbytes(t); i++)
		p[i] = (unsigned char)(i * 7 + strlen(name));
	return t;
}

START_TEST(test_round_trip)
{
	int64_t s_w[2] = {2, 3}, s_b[1] = {4}, s_q[2] = {5, 1}, s_e[2] = {0, 3};
	struct mc_tensor *t[4];
	const char *meta[] = {"format", "mcomp", "note", "x\"y\\z \xc3\xa9"};
	struct mc_err err = {0};
	struct mc_st_file *f;
	const struct mc_st_entry *e;
	void *buf, *buf2;
	size_t len, len2, hlen = 0;

	t[0] = mk("w", MC_F32, 2, s_w);
	t[1] = mk("b", MC_S8, 1, s_b);
	t[2] = mk("q", MC_Q4, 2, s_q);
	t[3] = mk("empty", MC_U8, 2, s_e);
	ck_assert_int_eq(mc_st_serialize(t, 4, meta, 2, &buf, &len, &err), 0);
	ck_assert_int_eq(mc_st_serialize(t, 4, meta, 2, &buf2, &len2, &err), 0);
	ck_assert_uint_eq(len, len2);
	ck_assert_int_eq(memcmp(buf, buf2, len), 0);
	free(buf2);

	for (int i = 7; i >= 0; i--)
		hlen = hlen << 8 | ((unsigned char *)buf)[i];
	ck_assert_uint_eq(hlen % 8, 0);
	ck_assert_uint_eq(len, 8 + hlen + 24 + 4 + 3 + 0);
	ck_assert_int_eq(memcmp((char *)buf + 8, "{\"__metadata__\":{\"format\":\"mcomp\"", 33), 0);
	ck_assert_int_eq(((char *)buf)[8 + hlen - 1] == ' ' || ((char *)buf)[8 + hlen - 1] == '}',
			 1);

	ck_assert_int_eq(mc_write_file_atomic(tpath("rt.safetensors"), buf, len, &err), 0);
	f = mc_st_read(tpath("rt.safetensors"), &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	ck_assert_int_eq(f->n, 4);
	/* entries come in data-offset order: the given order here; the empty
	 * tensor sits at the end of the data section */
	ck_assert_str_eq(f->entries[0].name, "w");
	ck_assert_str_eq(f->entries[1].name, "b");
	ck_assert_str_eq(f->entries[2].name, "q");
	ck_assert_str_eq(f->entries[3].name, "empty");

	e = mc_st_find(f, "w");
	ck_assert_str_eq(e->st_dtype, "F32");
	ck_assert_int_eq(e->dtype, MC_F32);
	ck_assert_int_eq(e->ndim, 2);
	ck_assert_int_eq(e->shape[0], 2);
	ck_assert_int_eq(e->shape[1], 3);
	ck_assert_uint_eq(e->nbytes, 24);
	ck_assert_int_eq(memcmp(e->data, t[0]->data, 24), 0);
	e = mc_st_find(f, "b");
	ck_assert_str_eq(e->st_dtype, "I8");
	ck_assert_int_eq(e->dtype, MC_S8);
	ck_assert_int_eq(memcmp(e->data, t[1]->data, 4), 0);
	e = mc_st_find(f, "q"); /* Q4: 5 elements as 3 bytes of U8 */
	ck_assert_str_eq(e->st_dtype, "U8");
	ck_assert_int_eq(e->ndim, 1);
	ck_assert_int_eq(e->shape[0], 3);
	ck_assert_uint_eq(e->nbytes, 3);
	ck_assert_int_eq(memcmp(e->data, t[2]->data, 3), 0);
	e = mc_st_find(f, "empty");
	ck_assert_uint_eq(e->nbytes, 0);
	ck_assert_int_eq(e->shape[0], 0);
	ck_assert_ptr_null(mc_st_find(f, "nope"));
	ck_assert_int_eq(f->n_meta, 2);
	ck_assert_str_eq(mc_st_meta(f, "format"), "mcomp");
	ck_assert_str_eq(mc_st_meta(f, "note"), meta[3]);
	ck_assert_ptr_null(mc_st_meta(f, "other"));
	mc_st_free(f);

	/* The file on disk is exactly the serialized bytes. */
	read_all(tpath("rt.safetensors"), &buf2, &len2);
	ck_assert_uint_eq(len, len2);
	ck_assert_int_eq(memcmp(buf, buf2, len), 0);
	free(buf2);
	free(buf);
	for (int i = 0; i < 4; i++)
		mc_tensor_free(t[i]);
}
END_TEST

/* Byte vectors from the reference implementation's own tests
 * (huggingface/safetensors, safetensors/src/tensor.rs): our writer must
 * produce exactly what it does for the same input. */
START_TEST(test_reference_bytes)
{
	static const unsigned char want_meta[] = {
	    40,	 0,   0,   0,	0,   0,	  0,   0,   '{', '"', '_', '_', 'm', 'e', 't', 'a',
	    'd', 'a', 't', 'a', '_', '_', '"', ':', '{', '"', 'f', 'r', 'a', 'm', 'e', 'w',
	    'o', 'r', 'k', '"', ':', '"', 'p', 't', '"', '}', '}', ' ', ' ', ' ', ' ', ' ',
	};
	static const char want_hdr[] =
	    "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       ";
	static const float vals[6] = {0, 1, 2, 3, 4, 5};
	const char *meta[] = {"framework", "pt"};
	int64_t shape[4] = {1, 1, 2, 3};
	struct mc_err err = {0};
	struct mc_tensor *t;
	unsigned char *b;
	void *buf;
	size_t len;

	ck_assert_int_eq(mc_st_serialize(NULL, 0, meta, 1, &buf, &len, &err), 0);
	ck_assert_uint_eq(len, sizeof(want_meta));
	ck_assert_int_eq(memcmp(buf, want_meta, len), 0);
	free(buf);

	t = mc_tensor_new("attn0", MC_F32, 4, shape, &err);
	ck_assert_ptr_nonnull(t);
	memcpy(t->data, vals, sizeof(vals));
	ck_assert_int_eq(mc_st_serialize(&t, 1, NULL, 0, &buf, &len, &err), 0);
	b = buf;
	ck_assert_uint_eq(len, 8 + 72 + 24);
	ck_assert_int_eq(b[0], 72);
	ck_assert_int_eq(memcmp(b + 1, "\0\0\0\0\0\0\0", 7), 0);
	ck_assert_int_eq(memcmp(b + 8, want_hdr, 72), 0);
	ck_assert_int_eq(memcmp(b + 80, vals, 24), 0); /* little-endian floats */
	free(buf);
	mc_tensor_free(t);
}
END_TEST

START_TEST(test_empty_and_foreign)
{
	struct mc_err err = {0};
	struct mc_st_file *f;
	void *buf;
	size_t len;

	/* no tensors, no metadata: "{}" padded to 8 */
	ck_assert_int_eq(mc_st_serialize(NULL, 0, NULL, 0, &buf, &len, &err), 0);
	ck_assert_uint_eq(len, 16);
	ck_assert_int_eq(memcmp((char *)buf + 8, "{}      ", 8), 0);
	f = mc_st_parse(buf, len, "empty", &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	ck_assert_int_eq(f->n, 0);
	mc_st_free(f);

	/* A file as other writers make it: dtypes mcomp cannot compute on,
	 * unsorted keys, a scalar, whitespace padding. */
	f = mc_st_read(write_st("foreign.st",
				"{\"b\": {\"data_offsets\": [2, 10], \"shape\": [2, 2], "
				"\"dtype\": \"BF16\"}, \"a\":{\"dtype\":\"F16\",\"shape\":[],"
				"\"data_offsets\":[0,2]}, \"c\":{\"dtype\":\"F64\",\"shape\":[1],"
				"\"data_offsets\":[10,18]}}   ",
				18),
		       &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	ck_assert_int_eq(f->n, 3);
	ck_assert_str_eq(f->entries[0].name, "a");
	ck_assert_int_eq(f->entries[0].ndim, 0);
	ck_assert_int_eq(f->entries[0].dtype, -1);
	ck_assert_str_eq(f->entries[1].name, "b");
	ck_assert_str_eq(f->entries[1].st_dtype, "BF16");
	ck_assert_uint_eq(((const unsigned char *)f->entries[1].data)[0], 2);
	ck_assert_str_eq(f->entries[2].st_dtype, "F64");
	mc_st_free(f);
}
END_TEST

START_TEST(test_truncated)
{
	const char *p = tpath("short.st");

	write_raw(p, "\x10\0\0", 3);
	expect_fail(p, MC_ECORRUPT, "file is 3 bytes, too short");
	write_raw(p, "", 0);
	expect_fail(p, MC_ECORRUPT, "file is 0 bytes");
}
END_TEST

START_TEST(test_header_past_end)
{
	expect_fail(write_st_n("past.st", 1000, "{}", 0), MC_ECORRUPT,
		    "header length 1000 runs past the end of the file (10 bytes)");
	expect_fail(write_st_n("huge.st", UINT64_MAX, "{}", 0), MC_ECORRUPT,
		    "header length 18446744073709551615 is larger than");
	/* the header ends inside the JSON */
	expect_fail(write_st_n("cut.st", 5, "{\"a\":{}}", 0), MC_ECORRUPT,
		    "header is not valid JSON");
}
END_TEST

START_TEST(test_not_json)
{
	expect_fail(write_st("nj.st", "hello world", 0), MC_ECORRUPT, "header is not valid JSON");
	expect_fail(write_st("arr.st", "[1, 2]", 0), MC_ECORRUPT, "header is not a JSON object");
	expect_fail(write_st("garbage.st", "{} x", 0), MC_ECORRUPT, "header is not valid JSON");
	expect_fail(write_st("ent.st", "{\"a\": 5}", 0), MC_ECORRUPT,
		    "tensor 'a' is not a JSON object");
}
END_TEST

START_TEST(test_offsets_out_of_range)
{
	expect_fail(write_st("oor.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 2),
		    MC_ECORRUPT,
		    "data_offsets [0, 4] run past the end of the data section (2 bytes)");
	expect_fail(write_st("neg.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[-1,-1]}}",
			     0),
		    MC_ECORRUPT, "not two non-decreasing offsets");
	expect_fail(write_st("dec.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,2]}}", 4),
		    MC_ECORRUPT, "[4, 2] are not two non-decreasing offsets");
	expect_fail(write_st("three.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2,4]}}",
			     2),
		    MC_ECORRUPT, "data_offsets is not two integers");
	expect_fail(write_st("flt.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2.0]}}",
			     2),
		    MC_ECORRUPT, "data_offsets is not two integers");
	expect_fail(write_st("big.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],"
			     "\"data_offsets\":[9223372036854775806,9223372036854775808]}}",
			     2),
		    MC_ECORRUPT, "header is not valid JSON");
}
END_TEST

START_TEST(test_overlap)
{
	expect_fail(write_st("ovl.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
			     "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
			     6),
		    MC_ECORRUPT, "tensor 'b' at data_offsets [2, 6] overlaps tensor 'a'");
	/* the same region twice */
	expect_fail(write_st("same.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
			     "\"b\":{\"dtype\":\"I8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
			     4),
		    MC_ECORRUPT, "overlaps tensor 'a'");
}
END_TEST

START_TEST(test_holes)
{
	expect_fail(write_st("hole.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
			     "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]}}",
			     6),
		    MC_ECORRUPT, "hole at bytes [2, 4) before tensor 'b'");
	expect_fail(write_st("lead.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4),
		    MC_ECORRUPT, "hole at bytes [0, 2)");
	expect_fail(write_st("tail.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 5),
		    MC_ECORRUPT, "data section is 5 bytes but the tensors cover only 2");
}
END_TEST

START_TEST(test_size_mismatch)
{
	expect_fail(write_st("model.safetensors",
			     "{\"fc1.weight\":{\"dtype\":\"F32\",\"shape\":[5,10],"
			     "\"data_offsets\":[0,100]}}",
			     100),
		    MC_ECORRUPT,
		    "tensor 'fc1.weight': data_offsets [0, 100] hold 100 bytes but shape [5, 10] "
		    "of F32 needs 200; the file is corrupt or was written by a buggy writer");
}
END_TEST

START_TEST(test_bad_dtype_and_fields)
{
	expect_fail(write_st("dt.st",
			     "{\"a\":{\"dtype\":\"F12\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
		    MC_ECORRUPT,
		    "tensor 'a' has unknown dtype 'F12'; safetensors dtypes are BOOL, U8,");
	expect_fail(
	    write_st("dt2.st", "{\"a\":{\"dtype\":4,\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
	    MC_ECORRUPT, "dtype is not a string");
	expect_fail(write_st("miss.st", "{\"a\":{\"shape\":[1],\"data_offsets\":[0,1]}}", 1),
		    MC_ECORRUPT, "tensor 'a' lacks the field 'dtype'");
	expect_fail(write_st("miss2.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 1),
		    MC_ECORRUPT, "lacks the field 'data_offsets'");
	expect_fail(write_st("extra.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],"
			     "\"crc\":1}}",
			     1),
		    MC_ECORRUPT, "tensor 'a' has an unknown field 'crc'");
	expect_fail(
	    write_st("shp.st", "{\"a\":{\"dtype\":\"U8\",\"shape\":4,\"data_offsets\":[0,4]}}", 4),
	    MC_ECORRUPT, "shape is not an array of integers");
}
END_TEST

START_TEST(test_bad_dims)
{
	/* 2^32 cubed overflows 64 bits */
	expect_fail(
	    write_st("ovf.st",
		     "{\"a\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296,4294967296],"
		     "\"data_offsets\":[0,0]}}",
		     0),
	    MC_ECORRUPT, "tensor 'a': the size of its shape overflows");
	/* 2^62 elements fit, 2^62 * 4 bytes do not */
	expect_fail(write_st("ovf2.st",
			     "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],"
			     "\"data_offsets\":[0,0]}}",
			     0),
		    MC_ECORRUPT, "overflows");
	expect_fail(write_st("negd.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[2,-1],\"data_offsets\":[0,0]}}",
			     0),
		    MC_ECORRUPT, "dimension 1 of shape is negative (-1)");
	expect_fail(write_st("fltd.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[2.5],\"data_offsets\":[0,0]}}",
			     0),
		    MC_ECORRUPT, "dimension 0 of shape is not an integer");
	expect_fail(write_st("ndim.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1],"
			     "\"data_offsets\":[0,1]}}",
			     1),
		    MC_ECORRUPT, "tensor 'a' has 9 dimensions; mcomp reads at most 8");
}
END_TEST

START_TEST(test_duplicate_keys)
{
	expect_fail(write_st("dup.st",
			     "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
			     "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
			     2),
		    MC_ECORRUPT, "duplicate object key");
	expect_fail(write_st("dup2.st",
			     "{\"a\":{\"dtype\":\"U8\",\"dtype\":\"I8\",\"shape\":[1],"
			     "\"data_offsets\":[0,1]}}",
			     1),
		    MC_ECORRUPT, "duplicate object key");
}
END_TEST

START_TEST(test_bad_metadata)
{
	expect_fail(write_st("meta.st", "{\"__metadata__\":{\"k\":1}}", 0), MC_ECORRUPT,
		    "__metadata__ value of 'k' is not a string");
	expect_fail(write_st("meta2.st", "{\"__metadata__\":[\"k\"]}", 0), MC_ECORRUPT,
		    "__metadata__ is not a JSON object of strings");
	expect_fail(write_st("meta3.st", "{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0),
		    MC_ECORRUPT, "value of 'k' is not a string");
}
END_TEST

START_TEST(test_serialize_refuses)
{
	int64_t s[1] = {2};
	struct mc_tensor *t[2];
	const char *meta[] = {"k", "1", "k", "2"};
	struct mc_err err = {0};
	void *buf = (void *)1;
	size_t len = 1;

	t[0] = mk("x", MC_F32, 1, s);
	t[1] = mk("x", MC_U8, 1, s);
	ck_assert_int_eq(mc_st_serialize(t, 2, NULL, 0, &buf, &len, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "two tensors are named 'x'"));
	ck_assert_ptr_null(buf);
	ck_assert_int_eq(mc_st_serialize(t, 1, meta, 2, &buf, &len, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "metadata key 'k' is given twice"));
	free(t[1]->name);
	t[1]->name = NULL;
	ck_assert_int_eq(mc_st_serialize(t, 2, NULL, 0, &buf, &len, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "tensor 1 has no name"));
	mc_tensor_free(t[0]);
	mc_tensor_free(t[1]);
}
END_TEST

START_TEST(test_read_file)
{
	struct mc_err err = {0};
	void *buf;
	size_t len;

	ck_assert_int_eq(mc_read_file(tpath("absent"), 100, &buf, &len, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "absent: cannot open: No such file or directory"));
	write_raw(tpath("ten"), "0123456789", 10);
	ck_assert_int_eq(mc_read_file(tpath("ten"), 9, &buf, &len, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "more than the limit of 9"));
	ck_assert_int_eq(mc_read_file(tpath("ten"), 10, &buf, &len, &err), 0);
	ck_assert_uint_eq(len, 10);
	ck_assert_int_eq(memcmp(buf, "0123456789", 10), 0);
	free(buf);
	ck_assert_int_eq(mc_read_file(tmpdir, 100, &buf, &len, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "is a directory"));
	expect_fail(tpath("absent"), MC_EIO, "No such file");
}
END_TEST

/* Files in tmpdir, other than the ones named. */
static int count_files(void)
{
	DIR *d = opendir(tmpdir);
	struct dirent *e;
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while ((e = readdir(d)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			n++;
	closedir(d);
	return n;
}

static void expect_content(const char *path, const char *want)
{
	void *buf;
	size_t len;

	read_all(path, &buf, &len);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert_int_eq(memcmp(buf, want, len), 0);
	free(buf);
}

START_TEST(test_atomic_write)
{
	const char *p = tpath("out.bin");
	struct mc_err err = {0};
	struct stat st;

	ck_assert_int_eq(mc_write_file_atomic(p, "first", 5, &err), 0);
	expect_content(p, "first");
	ck_assert_int_eq(chmod(p, 0640), 0);
	ck_assert_int_eq(mc_write_file_atomic(p, "second!", 7, &err), 0);
	expect_content(p, "second!");
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_int_eq(st.st_mode & 0777, 0640); /* the old file's permissions are kept */
	ck_assert_int_eq(count_files(), 1);	   /* no temporary file left behind */
}
END_TEST

START_TEST(test_atomic_write_fails)
{
	char p[256];
	struct mc_err err = {0};
	struct rlimit rl, old;
	static char big[1 << 16];

	snprintf(p, sizeof(p), "%s", tpath("keep.bin")); /* tpath's buffers are reused */
	ck_assert_int_eq(mc_write_file_atomic(p, "precious", 8, &err), 0);

	/* The target is a directory. */
	ck_assert_int_eq(mkdir(tpath("adir"), 0755), 0);
	ck_assert_int_eq(mc_write_file_atomic(tpath("adir"), "x", 1, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "adir: is a directory"));

	/* A missing folder is created; one that cannot be (a file is in the way) fails. */
	ck_assert_int_eq(mc_write_file_atomic(tpath("nodir/sub/x.bin"), "made", 4, &err), 0);
	expect_content(tpath("nodir/sub/x.bin"), "made");
	ck_assert_int_eq(mc_write_file_atomic(tpath("keep.bin/x.bin"), "x", 1, &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "keep.bin/x.bin: cannot create a temporary file"));
	ck_assert_ptr_nonnull(strstr(err.msg, "Not a directory"));

	/* The write itself fails half-way (file size limit): the old file stays. */
	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	rl = old;
	rl.rlim_cur = 4096;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	ck_assert_int_eq(mc_write_file_atomic(p, big, sizeof(big), &err), MC_EIO);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "keep.bin: write failed: File too large"));
	expect_content(p, "precious");
	ck_assert_int_eq(count_files(), 3); /* keep.bin, adir and nodir: no temporary left */

	/* A folder we may not write to (meaningless for root, who may). */
	if (geteuid() != 0) {
		ck_assert_int_eq(mkdir(tpath("ro"), 0755), 0);
		ck_assert_int_eq(mc_write_file_atomic(tpath("ro/f"), "old", 3, &err), 0);
		ck_assert_int_eq(chmod(tpath("ro"), 0555), 0);
		ck_assert_int_eq(mc_write_file_atomic(tpath("ro/f"), "new", 3, &err), MC_EIO);
		ck_assert_ptr_nonnull(strstr(err.msg, "Permission denied"));
		expect_content(tpath("ro/f"), "old");
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("safetensors");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_reference_bytes);
	tcase_add_test(tc, test_empty_and_foreign);
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_header_past_end);
	tcase_add_test(tc, test_not_json);
	tcase_add_test(tc, test_offsets_out_of_range);
	tcase_add_test(tc, test_overlap);
	tcase_add_test(tc, test_holes);
	tcase_add_test(tc, test_size_mismatch);
	tcase_add_test(tc, test_bad_dtype_and_fields);
	tcase_add_test(tc, test_bad_dims);
	tcase_add_test(tc, test_duplicate_keys);
	tcase_add_test(tc, test_bad_metadata);
	tcase_add_test(tc, test_serialize_refuses);
	tcase_add_test(tc, test_read_file);
	tcase_add_test(tc, test_atomic_write);
	tcase_add_test(tc, test_atomic_write_fails);
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
