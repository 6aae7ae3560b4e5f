// SPDX-License-Identifier: MIT
/*
 * check_model_io.c - model files: save and load round trips, byte-identical
 * output, atomic saves, and files that do not match their architecture.
 */
#define _GNU_SOURCE
#include <check.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mcomp/model.h>
#include <mcomp/safetensors.h>

#include "base/limits.h"
#include "graph/model_int.h"

static const char *arch_json =
    "{\"format\": 1, \"input\": [1, 4, 4], \"nodes\": ["
    "{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"input\"], \"attrs\": {}},"
    "{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"flat\"], \"attrs\": {\"out\": 8}},"
    "{\"name\": \"act\", \"op\": \"relu\", \"inputs\": [\"fc1\"], \"attrs\": {}},"
    "{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"act\"], \"attrs\": {\"out\": 3}}]}";

#include "scratch_dir.h"

static void setup(void)
{
	scratch_make("mio");
}

static void teardown(void)
{
	scratch_remove();
}

static struct mc_model *build(uint64_t seed)
{
	struct mc_err err = {0};
	struct mc_model *m = mc_model_from_arch(arch_json, "test", &err);

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, seed);
	return m;
}

static void read_all(const char *path, void **buf, size_t *len)
{
	struct mc_err err = {0};

	ck_assert_msg(mc_read_file(path, 1 << 30, buf, len, &err) == 0, "%s", err.msg);
}

/* Every parameter of a and b: same names, dtypes, shapes and bytes. */
static void assert_same_params(const struct mc_model *a, const struct mc_model *b)
{
	ck_assert_int_eq(mc_model_n_nodes(a), mc_model_n_nodes(b));
	for (int i = 0; i < mc_model_n_nodes(a); i++) {
		ck_assert_int_eq(mc_model_node(a, i)->n_params, mc_model_node(b, i)->n_params);
		for (int p = 0; p < mc_model_node(a, i)->n_params; p++) {
			const struct mc_tensor *x = mc_model_node(a, i)->params[p],
					       *y = mc_model_node(b, i)->params[p];

			ck_assert_str_eq(x->name, y->name);
			ck_assert_int_eq(x->dtype, y->dtype);
			ck_assert_int_eq(x->numel, y->numel);
			ck_assert_int_eq(memcmp(x->data, y->data, mc_tensor_nbytes(x)), 0);
		}
	}
}

START_TEST(test_round_trip)
{
	struct mc_model *m = build(7), *l, *other = build(8);
	const char *p = tpath("m.safetensors");
	struct mc_err err = {0};
	struct mc_st_file *f;
	void *b1, *b2, *b3;
	size_t l1, l2, l3;
	char *a1, *a2;

	ck_assert_int_eq(mc_model_serialize(m, &b1, &l1, &err), 0);
	ck_assert_int_eq(mc_model_serialize(m, &b2, &l2, &err), 0);
	ck_assert_uint_eq(l1, l2);
	ck_assert_int_eq(memcmp(b1, b2, l1), 0);
	free(b2);

	ck_assert_msg(mc_model_save(m, p, &err) == 0, "%s", err.msg);
	read_all(p, &b3, &l3);
	ck_assert_uint_eq(l1, l3);
	ck_assert_int_eq(memcmp(b1, b3, l1), 0); /* save writes exactly the serialized bytes */
	free(b3);

	l = mc_model_load(p, &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	assert_same_params(m, l);
	a1 = mc_model_arch(m);
	a2 = mc_model_arch(l);
	ck_assert_str_eq(a1, a2);
	ck_assert_int_eq(mc_model_serialize(l, &b2, &l2, &err), 0);
	ck_assert_uint_eq(l1, l2);
	ck_assert_int_eq(memcmp(b1, b2, l1), 0); /* load then save: the same bytes */
	free(b2);

	/* A different model gives different bytes: the test can tell them apart. */
	ck_assert_int_eq(mc_model_serialize(other, &b2, &l2, &err), 0);
	ck_assert_uint_eq(l1, l2);
	ck_assert_int_ne(memcmp(b1, b2, l1), 0);
	free(b2);

	f = mc_st_read(p, &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	ck_assert_str_eq(mc_st_meta(f, "format"), "mcomp");
	ck_assert_str_eq(mc_st_meta(f, "mcomp.version"), MC_VERSION);
	ck_assert_str_eq(mc_st_meta(f, "mcomp.arch"), a1);
	ck_assert_int_eq(f->n, 4);
	ck_assert_str_eq(f->entries[0].name, "fc1.weight");
	ck_assert_int_eq(f->entries[0].shape[0], 8);
	ck_assert_int_eq(f->entries[0].shape[1], 16);
	ck_assert_str_eq(f->entries[3].name, "fc2.bias");
	mc_st_free(f);

	free(a1);
	free(a2);
	free(b1);
	mc_model_free(l);
	mc_model_free(m);
	mc_model_free(other);
}
END_TEST

START_TEST(test_save_keeps_old_on_failure)
{
	struct mc_model *m = build(1), *m2 = build(2), *l;
	const char *p = tpath("keep.safetensors");
	struct mc_err err = {0};
	struct rlimit rl, old;

	ck_assert_int_eq(mc_model_save(m, p, &err), 0);

	ck_assert_int_eq(mkdir(tpath("dir.safetensors"), 0755), 0);
	ck_assert_int_eq(mc_model_save(m2, tpath("dir.safetensors"), &err), MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "dir.safetensors: is a directory"));

	signal(SIGXFSZ, SIG_IGN);
	ck_assert_int_eq(getrlimit(RLIMIT_FSIZE, &old), 0);
	rl = old;
	rl.rlim_cur = 64;
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &rl), 0);
	ck_assert_int_eq(mc_model_save(m2, p, &err), MC_EIO);
	ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &old), 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "keep.safetensors: write failed"));

	l = mc_model_load(p, &err); /* still the first model, whole */
	ck_assert_msg(l != NULL, "%s", err.msg);
	assert_same_params(m, l);
	mc_model_free(l);

	ck_assert_int_eq(mc_model_save(m2, p, &err), 0);
	l = mc_model_load(p, &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	assert_same_params(m2, l);
	mc_model_free(l);
	mc_model_free(m);
	mc_model_free(m2);
}
END_TEST

/* Writes a safetensors file of tensors t[0..n) with the given arch (NULL:
 * no metadata) and expects mc_model_load to fail with code and want. */
static void expect_load_fail(const char *name, struct mc_tensor *const *t, int n, const char *arch,
			     int code, const char *want)
{
	const char *meta[] = {"format", "mcomp", "mcomp.arch", arch};
	struct mc_err err = {0};
	const char *p = tpath(name);
	struct mc_model *l;
	void *buf;
	size_t len;

	ck_assert_msg(mc_st_serialize(t, n, meta, arch ? 2 : 1, &buf, &len, &err) == 0, "%s",
		      err.msg);
	ck_assert_int_eq(mc_write_file_atomic(p, buf, len, &err), 0);
	free(buf);
	l = mc_model_load(p, &err);
	ck_assert_msg(l == NULL, "%s: expected an error containing '%s'", name, want);
	ck_assert_int_eq(err.code, code);
	ck_assert_msg(strstr(err.msg, want), "message '%s' lacks '%s'", err.msg, want);
	ck_assert_msg(strstr(err.msg, p), "message '%s' does not name the file", err.msg);
}

START_TEST(test_mismatched_files)
{
	struct mc_model *m = build(3);
	struct mc_tensor *t[6], *odd, *wrongdt;
	char *arch = mc_model_arch(m);
	int64_t s2[2] = {8, 15}, s1[1] = {3};
	struct mc_err err = {0};

	t[0] = mc_model_node(m, 1)->params[0]; /* fc1.weight [8, 16] */
	t[1] = mc_model_node(m, 1)->params[1]; /* fc1.bias [8] */
	t[2] = mc_model_node(m, 3)->params[0]; /* fc2.weight [3, 8] */
	t[3] = mc_model_node(m, 3)->params[1]; /* fc2.bias [3] */

	expect_load_fail("noarch.st", t, 4, NULL, MC_ECORRUPT,
			 "no mcomp architecture in __metadata__");
	expect_load_fail("badarch.st", t, 4, "{\"input\": [1, 4, 4], \"nodes\": [", MC_ECORRUPT,
			 "architecture JSON");
	expect_load_fail("missing.st", t, 3, arch, MC_ECORRUPT, "tensor 'fc2.bias' is missing");

	t[4] = mc_tensor_new("extra", MC_F32, 1, s1, &err);
	ck_assert_ptr_nonnull(t[4]);
	expect_load_fail("extra.st", t, 5, arch, MC_ECORRUPT,
			 "tensor 'extra' is not a parameter of the architecture");

	odd = mc_tensor_new("fc1.weight", MC_F32, 2, s2, &err);
	ck_assert_ptr_nonnull(odd);
	t[0] = odd;
	expect_load_fail(
	    "shape.st", t, 4, arch, MC_ECORRUPT,
	    "tensor 'fc1.weight' is F32 [8, 15] but the architecture needs F32 [8, 16]");

	wrongdt = mc_tensor_new("fc2.bias", MC_S32, 1, s1, &err);
	ck_assert_ptr_nonnull(wrongdt);
	t[0] = mc_model_node(m, 1)->params[0];
	t[3] = wrongdt;
	expect_load_fail("dtype.st", t, 4, arch, MC_ECORRUPT,
			 "tensor 'fc2.bias' is I32 [3] but the architecture needs F32 [3]");

	mc_tensor_free(t[4]);
	mc_tensor_free(odd);
	mc_tensor_free(wrongdt);
	free(arch);
	mc_model_free(m);
}
END_TEST

START_TEST(test_load_errors)
{
	struct mc_err err = {0};
	FILE *f;

	ck_assert_ptr_null(mc_model_load(tpath("absent.safetensors"), &err));
	ck_assert_int_eq(err.code, MC_EIO);
	ck_assert_ptr_nonnull(strstr(err.msg, "absent.safetensors: cannot open"));

	f = fopen(tpath("junk.safetensors"), "wb");
	ck_assert_ptr_nonnull(f);
	fputs("this is not a model", f);
	fclose(f);
	ck_assert_ptr_null(mc_model_load(tpath("junk.safetensors"), &err));
	ck_assert_int_eq(err.code, MC_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(err.msg, "junk.safetensors: header length"));
}
END_TEST

/* ---------------------------------------------------------------- sparse tensors */

static const char *sparse_arch =
    "{\"format\": 1, \"input\": [1, 16, 16], \"nodes\": ["
    "{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"input\"], \"attrs\": {}},"
    "{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"flat\"], \"attrs\": {\"out\": 64}},"
    "{\"name\": \"act\", \"op\": \"relu\", \"inputs\": [\"fc1\"], \"attrs\": {}},"
    "{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"act\"], \"attrs\": {\"out\": 64}},"
    "{\"name\": \"fc3\", \"op\": \"linear\", \"inputs\": [\"fc2\"], \"attrs\": {\"out\": 3}}]}";

/* fc1.weight 90% zeros (one kept value is -0.0), fc2.weight 99.5% zeros (CSR beats the bitmask). */
static struct mc_model *sparse_model(void)
{
	struct mc_err err = {0};
	struct mc_model *m = mc_model_from_arch(sparse_arch, "test", &err);
	float *w1, *w2;

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 11);
	w1 = mc_model_param(m, "fc1.weight")->data;
	w2 = mc_model_param(m, "fc2.weight")->data;
	for (int i = 0; i < 64 * 256; i++)
		if (i % 10)
			w1[i] = 0.0f;
	w1[20] = -0.0f;
	for (int i = 0; i < 64 * 64; i++)
		if (i % 200)
			w2[i] = 0.0f;
	return m;
}

static const struct mc_st_entry *entry(const struct mc_st_file *f, const char *name,
				       const char *dtype, int64_t n)
{
	const struct mc_st_entry *e = mc_st_find(f, name);

	ck_assert_msg(e != NULL, "no tensor %s in the file", name);
	ck_assert_str_eq(e->st_dtype, dtype);
	ck_assert_int_eq(e->ndim, 1);
	ck_assert_int_eq(e->shape[0], n);
	return e;
}

START_TEST(test_sparse_round_trip)
{
	struct mc_model *m = sparse_model(), *dense, *l;
	const char *p = tpath("sparse.safetensors");
	struct mc_err err = {0};
	struct mc_st_file *f;
	size_t len, dlen;
	void *buf, *dbuf;

	ck_assert_int_eq(mc_model_serialize(m, &buf, &len, &err), 0);
	dense = mc_model_from_arch(sparse_arch, "test", &err);
	mc_model_init(dense, 11);
	ck_assert_int_eq(mc_model_serialize(dense, &dbuf, &dlen, &err), 0);
	ck_assert_msg(len * 5 <= dlen, "sparse file %zu bytes, dense %zu", len, dlen);
	free(dbuf);

	f = mc_st_parse(buf, len, "sparse", &err); /* any safetensors reader opens it */
	ck_assert_msg(f != NULL, "%s", err.msg);
	ck_assert_ptr_null(mc_st_find(f, "fc1.weight"));
	entry(f, "fc1.weight.__mask", "U8", 64 * 256 / 8);
	entry(f, "fc1.weight.__values", "F32", 64 * 256 / 10 + 1);
	entry(f, "fc2.weight.__indptr", "I32", 65);
	entry(f, "fc2.weight.__indices", "I32", 21);
	entry(f, "fc2.weight.__values", "F32", 21);
	ck_assert_ptr_nonnull(mc_st_find(f, "fc3.weight")); /* dense stays dense */
	ck_assert_ptr_nonnull(strstr(mc_st_meta(f, "mcomp.sparse"),
				     "\"fc1.weight\":{\"format\":\"bitmask\",\"shape\":[64,256]"));
	ck_assert_ptr_nonnull(strstr(mc_st_meta(f, "mcomp.sparse"), "\"format\":\"csr\""));
	mc_st_free(f);

	ck_assert_msg(mc_model_save(m, p, &err) == 0, "%s", err.msg);
	l = mc_model_load(p, &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	assert_same_params(m, l); /* bit for bit, -0.0 included */
	ck_assert_uint_eq(((uint32_t *)mc_model_param(l, "fc1.weight")->data)[20], 0x80000000u);
	mc_model_free(l);
	mc_model_free(dense);
	mc_model_free(m);
}
END_TEST

/* Pruned then quantized weights are int8 with most values 0: stored as a
 * bitmask and I8 values, and loaded back byte for byte. */
START_TEST(test_sparse_int8_round_trip)
{
	struct mc_err err = {0};
	struct mc_model *m = mc_model_from_arch(
		"{\"format\":1,\"input\":[256],\"nodes\":[{\"name\":\"fc\",\"op\":\"qlinear\","
		"\"attrs\":{\"out\":64,\"bits\":8,\"mode\":\"dynamic\"}}]}", "test", &err);
	const char *p = tpath("sparse-int8.safetensors");
	struct mc_tensor *w;
	struct mc_st_file *f;
	struct mc_model *l;
	size_t len;
	void *buf;

	ck_assert_msg(m != NULL, "%s", err.msg);
	w = mc_model_param(m, "fc.weight");
	ck_assert_int_eq(w->dtype, MC_S8);
	for (int64_t i = 0; i < w->numel; i++)
		((int8_t *)w->data)[i] = i % 10 ? 0 : (int8_t)(i % 255 - 127);
	ck_assert_int_eq(mc_model_serialize(m, &buf, &len, &err), 0);
	f = mc_st_parse(buf, len, "sparse-int8", &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	ck_assert_ptr_null(mc_st_find(f, "fc.weight"));
	entry(f, "fc.weight.__mask", "U8", 64 * 256 / 8);
	entry(f, "fc.weight.__values", "I8", 64 * 256 / 10 + 1);
	ck_assert_msg(len < 64 * 256 / 2, "file %zu bytes for %d int8 weights", len, 64 * 256);
	mc_st_free(f);
	ck_assert_msg(mc_model_save(m, p, &err) == 0, "%s", err.msg);
	l = mc_model_load(p, &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	assert_same_params(m, l);
	mc_model_free(l);
	mc_model_free(m);
}
END_TEST

/*
 * Packed 4-bit weights (q + 8 a nibble): fc1 keeps every 10th code (1639 of
 * them, an odd count, so the last values byte has a padding nibble), fc2
 * three (CSR beats the bitmask), fc3 every code (dense, as before). Kept
 * codes run over every nibble but 8, which is q = 0.
 */
static const char *q4_arch =
    "{\"format\": 1, \"input\": [256], \"nodes\": ["
    "{\"name\": \"fc1\", \"op\": \"qlinear\", \"inputs\": [\"input\"], \"attrs\": "
    "{\"out\": 64, \"bits\": 4, \"mode\": \"weight-only\", \"granularity\": \"per-group\"}},"
    "{\"name\": \"fc2\", \"op\": \"qlinear\", \"inputs\": [\"fc1\"], \"attrs\": "
    "{\"out\": 64, \"bits\": 4, \"mode\": \"weight-only\", \"granularity\": \"per-group\"}},"
    "{\"name\": \"fc3\", \"op\": \"qlinear\", \"inputs\": [\"fc2\"], \"attrs\": "
    "{\"out\": 10, \"bits\": 4, \"mode\": \"weight-only\", \"granularity\": \"per-group\"}}]}";

static void set_nibble(uint8_t *p, int64_t i, unsigned v)
{
	p[i / 2] = (uint8_t)((p[i / 2] & ~(0xfu << 4 * (i % 2))) | v << 4 * (i % 2));
}

static unsigned kept_code(int64_t i)
{
	unsigned c = (unsigned)(i / 7 % 15);

	return c < 8 ? c : c + 1; /* 0..15 but 8 */
}

static struct mc_model *q4_model(void)
{
	struct mc_err err = {0};
	struct mc_model *m = mc_model_from_arch(q4_arch, "test", &err);
	uint8_t *w1, *w2, *w3;

	ck_assert_msg(m != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_model_param(m, "fc1.weight")->dtype, MC_Q4);
	w1 = mc_model_param(m, "fc1.weight")->data;
	w2 = mc_model_param(m, "fc2.weight")->data;
	w3 = mc_model_param(m, "fc3.weight")->data;
	for (int64_t i = 0; i < 64 * 256; i++)
		set_nibble(w1, i, i % 10 ? 8 : kept_code(i));
	for (int64_t i = 0; i < 64 * 64; i++)
		set_nibble(w2, i, i % 1500 ? 8 : kept_code(i + 3));
	for (int64_t i = 0; i < 10 * 64; i++)
		set_nibble(w3, i, (unsigned)(i % 16));
	for (int n = 0; n < 3; n++) {
		struct mc_tensor *s = mc_model_param(m, n == 0 ? "fc1.weight_scale"
						      : n == 1 ? "fc2.weight_scale"
							       : "fc3.weight_scale");

		for (int64_t i = 0; i < s->numel; i++)
			((float *)s->data)[i] = 0.01f * (float)(i + 1);
	}
	return m;
}

/* Pruned then quantized to 4 bits: a bitmask (or CSR) and the kept codes
 * packed two a byte; the file loads to the same bytes and saves to itself;
 * q = 0 (nibble 8) counts as zero. */
START_TEST(test_sparse_q4_round_trip)
{
	struct mc_model *m = q4_model(), *l;
	const char *p = tpath("sparse-q4.safetensors");
	struct mc_err err = {0};
	struct mc_st_file *f;
	const struct mc_st_entry *e;
	const uint8_t *v;
	size_t len, len2;
	void *buf, *buf2;

	/* weights 1639 + 3 + 640 - 40 (fc3's nibble 8s); scales (64 * 8 + 64 * 2 + 10 * 2) */
	ck_assert_int_eq(mc_model_nonzeros(m), 1639 + 3 + 600 + 64 * 8 + 64 * 2 + 10 * 2);
	ck_assert_int_eq(mc_model_serialize(m, &buf, &len, &err), 0);
	f = mc_st_parse(buf, len, "sparse-q4", &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	ck_assert_ptr_null(mc_st_find(f, "fc1.weight"));
	entry(f, "fc1.weight.__mask", "U8", 64 * 256 / 8);
	e = entry(f, "fc1.weight.__values", "U8", (1639 + 1) / 2);
	v = e->data;
	ck_assert_uint_eq(v[1639 / 2] >> 4, 0); /* the padding nibble */
	ck_assert_uint_eq(v[0] & 0xf, kept_code(0));
	ck_assert_uint_eq(v[0] >> 4, kept_code(10));
	entry(f, "fc2.weight.__indptr", "I32", 65);
	entry(f, "fc2.weight.__indices", "I32", 3);
	entry(f, "fc2.weight.__values", "U8", 2);
	entry(f, "fc3.weight", "U8", 10 * 64 / 2); /* dense stays dense */
	ck_assert_ptr_nonnull(strstr(mc_st_meta(f, "mcomp.sparse"),
				     "\"fc1.weight\":{\"format\":\"bitmask\",\"shape\":[64,256],"
				     "\"nnz\":1639}"));
	ck_assert_ptr_nonnull(strstr(mc_st_meta(f, "mcomp.sparse"),
				     "\"fc2.weight\":{\"format\":\"csr\",\"shape\":[64,64],"
				     "\"nnz\":3}"));
	mc_st_free(f); /* and buf, which f took */
	/* fc1: 1/8 + 1/10 * 1/2 byte a weight against 1/2 dense */
	ck_assert_msg(len < 64 * 256 / 4 + 64 * 64 / 4 + 4096, "file %zu bytes", len);
	ck_assert_int_eq(mc_model_serialize(m, &buf, &len, &err), 0);

	ck_assert_msg(mc_model_save(m, p, &err) == 0, "%s", err.msg);
	l = mc_model_load(p, &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	assert_same_params(m, l); /* every nibble, q = 0 (8) put back */
	ck_assert_int_eq(mc_model_serialize(l, &buf2, &len2, &err), 0);
	ck_assert_uint_eq(len, len2);
	ck_assert_int_eq(memcmp(buf, buf2, len), 0);
	free(buf);
	free(buf2);
	mc_model_free(l);
	mc_model_free(m);
}
END_TEST

/* Serializes model(), lets edit change its bytes, expects the load to fail. */
static void expect_fail_of(struct mc_model *(*model)(void), const char *piece, int64_t at,
			   uint8_t value, const char *want)
{
	struct mc_model *m = model();
	const char *p = tpath("bad-sparse.safetensors");
	struct mc_err err = {0};
	const struct mc_st_entry *e;
	struct mc_st_file *f;
	size_t len, off;
	void *buf, *copy;

	ck_assert_int_eq(mc_model_serialize(m, &buf, &len, &err), 0);
	copy = malloc(len);
	memcpy(copy, buf, len);
	f = mc_st_parse(copy, len, "copy", &err);
	ck_assert_ptr_nonnull(f);
	e = mc_st_find(f, piece);
	ck_assert_ptr_nonnull(e);
	off = (size_t)((const char *)e->data - (const char *)f->buf);
	((uint8_t *)buf)[off + (size_t)at] = value;
	mc_st_free(f);
	ck_assert_int_eq(mc_write_file_atomic(p, buf, len, &err), 0);
	free(buf);
	ck_assert_ptr_null(mc_model_load(p, &err));
	ck_assert_int_eq(err.code, MC_ECORRUPT);
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
	mc_model_free(m);
}

static void expect_sparse_fail(const char *piece, int64_t at, uint8_t value, const char *want)
{
	expect_fail_of(sparse_model, piece, at, value, want);
}

START_TEST(test_sparse_corrupt)
{
	/* byte 0 of the mask holds elements 0..7: only element 0 is stored */
	expect_sparse_fail("fc1.weight.__mask", 0, 0x03, "sets more bits than nnz");
	expect_sparse_fail("fc1.weight.__mask", 0, 0x00, "sets 1638 bits for 1639 values");
	expect_sparse_fail("fc2.weight.__indices", 1, 0x7f, "CSR index arrays out of order");
	expect_sparse_fail("fc2.weight.__indptr", 4, 0x7f, "CSR index arrays out of order");
}
END_TEST

START_TEST(test_sparse_q4_corrupt)
{
	/* byte 819 of fc1's values: code 1638 (low nibble) and the padding nibble */
	expect_fail_of(q4_model, "fc1.weight.__values", 819, (uint8_t)(0x10 | kept_code(16380)),
		       "sets the padding nibble after its 1639 4-bit codes");
	expect_fail_of(q4_model, "fc1.weight.__values", 0, 0x88, "code 0 is q = 0");
	expect_fail_of(q4_model, "fc1.weight.__mask", 0, 0x03, "sets more bits than nnz");
	expect_fail_of(q4_model, "fc2.weight.__indices", 1, 0x7f, "CSR index arrays out of order");
}
END_TEST

/* A model validated as shapes only gets the same values, once given data
 * and drawn from a seed, as one built with data. */
START_TEST(test_materialize)
{
	struct mc_err err = {0};
	struct mc_model *a = mc_model_from_arch_shapes(arch_json, "test", &err), *b;

	ck_assert_msg(a != NULL, "%s", err.msg);
	ck_assert(mc_model_is_arch(a));
	ck_assert_ptr_null(mc_model_param(a, "fc1.weight")->data);
	ck_assert_uint_eq(mc_model_param_bytes(a), (16 * 8 + 8 + 8 * 3 + 3) * 4);
	ck_assert_int_eq(mc_model_materialize(a, &err), 0);
	ck_assert(!mc_model_is_arch(a));
	mc_model_init(a, 5);
	b = build(5);
	assert_same_params(a, b);
	mc_model_free(a);
	mc_model_free(b);
}
END_TEST

/* The memory limit refuses what an architecture declares before allocating;
 * a file that stores nothing for a layer is refused, naming file and layer. */
START_TEST(test_limits)
{
	struct mc_err err = {0};
	struct mc_model *m;
	const char *p = tpath("empty.safetensors"), *src;
	uint64_t v;

	mc_mem_limit_set(600, "a test");
	ck_assert_ptr_null(mc_model_from_arch(arch_json, "small.json", &err));
	ck_assert_int_eq(err.code, MC_ENOMEM);
	ck_assert_msg(strstr(err.msg, "small.json: a model of 163 parameters needs 652 bytes") &&
		      strstr(err.msg, "limit of 600 bytes (a test)") &&
		      strstr(err.msg, "--max-memory"), "%s", err.msg);
	ck_assert_uint_eq(mc_mem_limit(&src), 600);
	ck_assert_str_eq(src, "a test");
	mc_mem_limit_set(0, NULL);
	ck_assert_uint_gt(mc_mem_limit(NULL), 600);

	m = build(3);
	memset(mc_model_param(m, "fc2.weight")->data, 0, 8 * 3 * 4);
	memset(mc_model_param(m, "fc2.bias")->data, 0, 3 * 4);
	ck_assert_msg(mc_model_save(m, p, &err) == 0, "%s", err.msg);
	mc_model_free(m);
	ck_assert_ptr_null(mc_model_load(p, &err));
	ck_assert_int_eq(err.code, MC_ECORRUPT);
	ck_assert_msg(strstr(err.msg, "empty.safetensors: layer 'fc2' (linear) needs 27 values"),
		      "%s", err.msg);

	ck_assert_int_eq(mc_mem_parse("512M", &v), 0);
	ck_assert_uint_eq(v, 512ull << 20);
	ck_assert_int_eq(mc_mem_parse("1.5GiB", &v), 0);
	ck_assert_uint_eq(v, 3ull << 29);
	ck_assert_int_eq(mc_mem_parse("4096", &v), 0);
	ck_assert_uint_eq(v, 4096);
	ck_assert_int_eq(mc_mem_parse("unlimited", &v), 0);
	ck_assert_uint_eq(v, UINT64_MAX);
	ck_assert_int_eq(mc_mem_parse("50%", &v), 0);
	ck_assert_int_eq(mc_mem_parse("0", &v), -1);
	ck_assert_int_eq(mc_mem_parse("-1G", &v), -1);
	ck_assert_int_eq(mc_mem_parse("8X", &v), -1);
	ck_assert_int_eq(mc_mem_parse("", &v), -1);
	ck_assert_int_eq(mc_mem_parse("101%", &v), -1);
}
END_TEST

static void put(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

/* The default limit honours the smallest cgroup memory limit on the way up:
 * v2 memory.max ("max": none), v1 memory.limit_in_bytes (2^63: none). */
START_TEST(test_cgroup_limit)
{
	char a[4200], b[4200], v1[4200];
	char buf[32];

	snprintf(a, sizeof(a), "%s/a", tpath(""));
	snprintf(b, sizeof(b), "%s/a/b", tpath(""));
	snprintf(v1, sizeof(v1), "%s/memory", tpath(""));
	ck_assert_int_eq(mkdir(a, 0755), 0);
	ck_assert_int_eq(mkdir(b, 0755), 0);
	ck_assert_int_eq(mkdir(v1, 0755), 0);
	ck_assert_uint_eq(mc_mem_cgroup(tpath(""), "/a/b", "/"), 0);
	put(tpath("a/b/memory.max"), "max\n");
	ck_assert_uint_eq(mc_mem_cgroup(tpath(""), "/a/b", "/"), 0);
	put(tpath("a/memory.max"), "1073741824\n");
	ck_assert_uint_eq(mc_mem_cgroup(tpath(""), "/a/b", "/"), 1073741824);
	put(tpath("memory/memory.limit_in_bytes"), "9223372036854771712\n");
	ck_assert_uint_eq(mc_mem_cgroup(tpath(""), "/a/b", "/"), 1073741824);
	put(tpath("memory/memory.limit_in_bytes"), "536870912\n");
	ck_assert_uint_eq(mc_mem_cgroup(tpath(""), "/a/b", "/"), 536870912);
	ck_assert_str_eq(mc_mem_text(536870912, buf, sizeof(buf)), "512.0 MiB");
	ck_assert_str_eq(mc_mem_text(1000, buf, sizeof(buf)), "1000 bytes");
	ck_assert_str_eq(mc_mem_text(UINT64_MAX, buf, sizeof(buf)), "unlimited");
}
END_TEST


static Suite *suite(void)
{
	Suite *s = suite_create("model_io");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_save_keeps_old_on_failure);
	tcase_add_test(tc, test_mismatched_files);
	tcase_add_test(tc, test_load_errors);
	tcase_add_test(tc, test_sparse_round_trip);
	tcase_add_test(tc, test_sparse_corrupt);
	tcase_add_test(tc, test_sparse_int8_round_trip);
	tcase_add_test(tc, test_sparse_q4_round_trip);
	tcase_add_test(tc, test_sparse_q4_corrupt);
	tcase_add_test(tc, test_materialize);
	tcase_add_test(tc, test_limits);
	tcase_add_test(tc, test_cgroup_limit);
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
