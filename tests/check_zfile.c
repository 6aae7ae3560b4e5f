// SPDX-License-Identifier: MIT
/*
 * check_zfile.c - zstd-coded model and cascade files (core/base/zfile.c):
 * a file whose name ends in .zst is one frame with its content size and a
 * checksum, whose content is byte for byte the plain file; every reader
 * (mc_st_read, mc_model_load, mc_cascade_load, mc_file_is_cascade) knows a
 * frame by its magic number and decodes it; a truncated, corrupt or
 * trailing-data frame, and one that declares or decodes to more than the
 * limits, is refused with a message naming the file, before the content is
 * allocated.
 */
#define _GNU_SOURCE
#include <check.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zstd.h>

#include <mcomp/cascade.h>
#include <mcomp/model.h>
#include <mcomp/safetensors.h>

#include "base/base_int.h"

static const char *arch_json =
    "{\"format\": 1, \"input\": [1, 4, 4], \"nodes\": ["
    "{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"input\"], \"attrs\": {}},"
    "{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"flat\"], \"attrs\": {\"out\": 8}},"
    "{\"name\": \"act\", \"op\": \"relu\", \"inputs\": [\"fc1\"], \"attrs\": {}},"
    "{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"act\"], \"attrs\": {\"out\": 3}}]}";

#include "scratch_dir.h"

static void setup(void)
{
	scratch_make("zfile");
}

static void teardown(void)
{
	mc_mem_limit_set(0, NULL); /* back to the default */
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

static void write_all(const char *path, const void *buf, size_t len)
{
	struct mc_err err = {0};

	ck_assert_msg(mc_write_file_atomic(path, buf, len, &err) == 0, "%s", err.msg);
}

/* A model saved as m.safetensors and m.safetensors.zst. */
static void save_both(const struct mc_model *m)
{
	struct mc_err err = {0};

	ck_assert_msg(mc_model_save(m, tpath("m.safetensors"), &err) == 0, "%s", err.msg);
	ck_assert_msg(mc_model_save(m, tpath("m.safetensors.zst"), &err) == 0, "%s", err.msg);
}

START_TEST(test_round_trip)
{
	struct mc_model *m = build(3), *back;
	void *plain, *z, *dec;
	size_t np, nz, nd;
	struct mc_err err = {0};
	unsigned char flags;
	void *a, *b;
	size_t na, nb;

	save_both(m);
	read_all(tpath("m.safetensors"), &plain, &np);
	read_all(tpath("m.safetensors.zst"), &z, &nz);
	/* One frame, its content the plain file, its size declared, checksummed. */
	ck_assert(mc_zst_is_frame(z, nz));
	ck_assert(!mc_zst_is_frame(plain, np));
	ck_assert_uint_eq(ZSTD_findFrameCompressedSize(z, nz), nz);
	ck_assert_uint_eq(ZSTD_getFrameContentSize(z, nz), np);
	flags = ((unsigned char *)z)[4]; /* frame header descriptor: bit 2 = checksum */
	ck_assert_msg(flags & 4, "no content checksum (descriptor 0x%02x)", flags);
	ck_assert_uint_eq(ZSTD_decompress(dec = malloc(np), np, z, nz), np);
	ck_assert(memcmp(dec, plain, np) == 0);
	free(dec);
	ck_assert_int_eq(mc_zst_decode(z, nz, "z", 1 << 30, &dec, &nd, &err), 0);
	ck_assert_uint_eq(nd, np);
	ck_assert(memcmp(dec, plain, np) == 0);
	free(dec);

	/* The model loads back the same from either file. */
	back = mc_model_load(tpath("m.safetensors.zst"), &err);
	ck_assert_msg(back != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_model_serialize(m, &a, &na, &err), 0);
	ck_assert_int_eq(mc_model_serialize(back, &b, &nb, &err), 0);
	ck_assert_uint_eq(na, nb);
	ck_assert(memcmp(a, b, na) == 0);
	free(a);
	free(b);
	mc_model_free(back);
	free(plain);
	free(z);
	mc_model_free(m);
}
END_TEST

/* The magic number decides, not the name: either content under either name reads. */
START_TEST(test_known_by_magic)
{
	struct mc_model *m = build(4);
	struct mc_st_file *f, *g;
	struct mc_model *x;
	struct mc_err err = {0};
	void *plain, *z;
	size_t np, nz;

	save_both(m);
	read_all(tpath("m.safetensors"), &plain, &np);
	read_all(tpath("m.safetensors.zst"), &z, &nz);
	write_all(tpath("coded.safetensors"), z, nz);	 /* a frame, plain name */
	write_all(tpath("plain.safetensors.zst"), plain, np); /* plain, .zst name */
	f = mc_st_read(tpath("coded.safetensors"), &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	g = mc_st_read(tpath("plain.safetensors.zst"), &err);
	ck_assert_msg(g != NULL, "%s", err.msg);
	ck_assert_uint_eq(f->len, np);
	ck_assert(memcmp(f->buf, plain, np) == 0 && memcmp(g->buf, plain, np) == 0);
	x = mc_model_load(tpath("coded.safetensors"), &err);
	ck_assert_msg(x != NULL, "%s", err.msg);
	mc_model_free(x);
	mc_st_free(f);
	mc_st_free(g);
	free(plain);
	free(z);
	mc_model_free(m);
}
END_TEST

START_TEST(test_cascade)
{
	const char *names[] = {"small", "big"};
	struct mc_model *ms[2] = {build(5), build(6)};
	struct mc_cascade *c, *back;
	struct mc_err err = {0};
	void *a, *b;
	size_t na, nb;

	c = mc_cascade_new(2, names, ms, 0, &err);
	ck_assert_msg(c != NULL, "%s", err.msg);
	c->thresholds[0] = 0.75f;
	ck_assert_int_eq(mc_cascade_save(c, tpath("c.safetensors.zst"), &err), 0);
	ck_assert_int_eq(mc_cascade_save(c, tpath("c.safetensors"), &err), 0);
	read_all(tpath("c.safetensors.zst"), &a, &na);
	ck_assert(mc_zst_is_frame(a, na));
	free(a);
	ck_assert(mc_file_is_cascade(tpath("c.safetensors.zst")));
	ck_assert(mc_file_is_cascade(tpath("c.safetensors")));
	back = mc_cascade_load(tpath("c.safetensors.zst"), &err);
	ck_assert_msg(back != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_cascade_serialize(c, &a, &na, &err), 0);
	ck_assert_int_eq(mc_cascade_serialize(back, &b, &nb, &err), 0);
	ck_assert_uint_eq(na, nb);
	ck_assert(memcmp(a, b, na) == 0);
	free(a);
	free(b);
	mc_cascade_free(back);
	mc_cascade_free(c);

	/* A coded model is not a cascade; neither is a frame that is cut short. */
	ms[0] = build(7);
	save_both(ms[0]);
	mc_model_free(ms[0]);
	ck_assert(!mc_file_is_cascade(tpath("m.safetensors.zst")));
	read_all(tpath("c.safetensors.zst"), &a, &na);
	write_all(tpath("cut.zst"), a, 20);
	ck_assert(!mc_file_is_cascade(tpath("cut.zst")));
	free(a);
}
END_TEST

/* Every reader of path fails with code and a message holding want and the path. */
static void expect_refused(const char *path, int code, const char *want)
{
	struct mc_err err = {0};
	struct mc_st_file *f = mc_st_read(path, &err);

	ck_assert_ptr_null(f);
	ck_assert_int_eq(err.code, code);
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
	ck_assert_msg(strstr(err.msg, path), "'%s' does not name %s", err.msg, path);
	memset(&err, 0, sizeof(err));
	ck_assert_ptr_null(mc_model_load(path, &err));
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
	memset(&err, 0, sizeof(err));
	ck_assert_ptr_null(mc_cascade_load(path, &err));
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
	ck_assert(!mc_file_is_cascade(path));
}

START_TEST(test_truncated_corrupt_trailing)
{
	struct mc_model *m = build(8);
	unsigned char *z, *w;
	size_t nz;

	save_both(m);
	mc_model_free(m);
	read_all(tpath("m.safetensors.zst"), (void **)&z, &nz);
	w = malloc(nz + 16);
	/* Cut anywhere after the magic number: in the header, a block, the checksum. */
	for (size_t cut = 4; cut < nz; cut += cut < 16 ? 1 : (nz / 7 ? nz / 7 : 1)) {
		write_all(tpath("t.zst"), z, cut);
		expect_refused(tpath("t.zst"), MC_ECORRUPT, "zstd frame is truncated");
	}
	write_all(tpath("t.zst"), z, nz - 1);
	expect_refused(tpath("t.zst"), MC_ECORRUPT, "zstd frame is truncated");
	/* A flipped bit in the content: the checksum (or the decoder) catches it. */
	memcpy(w, z, nz);
	w[nz / 2] ^= 0x10;
	write_all(tpath("c.zst"), w, nz);
	expect_refused(tpath("c.zst"), MC_ECORRUPT, "zstd frame is corrupt");
	/* The checksum itself wrong. */
	memcpy(w, z, nz);
	w[nz - 1] ^= 0xff;
	write_all(tpath("k.zst"), w, nz);
	expect_refused(tpath("k.zst"), MC_ECORRUPT, "zstd frame is corrupt");
	/* Bytes after the frame, another frame included. */
	memcpy(w, z, nz);
	memcpy(w + nz, "garbage", 7);
	write_all(tpath("g.zst"), w, nz + 7);
	expect_refused(tpath("g.zst"), MC_ECORRUPT, "7 bytes of trailing data after the zstd");
	memcpy(w + nz, z, 16);
	write_all(tpath("g.zst"), w, nz + 16);
	expect_refused(tpath("g.zst"), MC_ECORRUPT, "trailing data after the zstd frame");
	free(w);
	free(z);
}
END_TEST

/* A frame of n bytes, with or without the content size in its header: zero
 * bytes (a bomb), or (noisy) random ones below 16, which code about 2 times. */
static void frame_of(const char *path, size_t n, int declare, int noisy)
{
	ZSTD_CCtx *cc = ZSTD_createCCtx();
	size_t cap = ZSTD_compressBound(n), r;
	unsigned char *src = calloc(n, 1), *dst = malloc(cap);
	uint64_t x = 88172645463325252ull;
	ZSTD_inBuffer in = {src, n, 0};
	ZSTD_outBuffer out = {dst, cap, 0};

	ck_assert(cc && src && dst);
	for (size_t i = 0; noisy && i < n; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		src[i] = (unsigned char)(x >> 60);
	}
	ZSTD_CCtx_setParameter(cc, ZSTD_c_compressionLevel, 1);
	ZSTD_CCtx_setParameter(cc, ZSTD_c_checksumFlag, 1);
	if (declare)
		ZSTD_CCtx_setPledgedSrcSize(cc, n);
	else
		ZSTD_CCtx_setParameter(cc, ZSTD_c_contentSizeFlag, 0);
	/* Streamed: without a pledged size the header cannot hold one. */
	do {
		r = ZSTD_compressStream2(cc, &out, &in, ZSTD_e_end);
		ck_assert(!ZSTD_isError(r));
	} while (r);
	write_all(path, dst, out.pos);
	ck_assert_uint_eq(ZSTD_getFrameContentSize(dst, out.pos),
			  declare ? n : ZSTD_CONTENTSIZE_UNKNOWN);
	ZSTD_freeCCtx(cc);
	free(src);
	free(dst);
}

START_TEST(test_bombs)
{
	struct mc_err err = {0};
	void *buf, *z;
	size_t len, nz;

	/* 256 MiB of zeros in a few KiB: a bomb, declared size or not. */
	frame_of(tpath("bomb.zst"), (size_t)256 << 20, 1, 0);
	frame_of(tpath("bomb-nosize.zst"), (size_t)256 << 20, 0, 0);
	expect_refused(tpath("bomb.zst"), MC_ECORRUPT,
		       "declares 268435456 bytes of content, more than 64 times its size: it "
		       "looks like a zstd bomb");
	expect_refused(tpath("bomb-nosize.zst"), MC_ECORRUPT, "looks like a zstd bomb");
	/* 24 MiB in about 12: no bomb, but past a memory limit of 16 MiB, which
	 * is checked before the content is allocated, declared size or not. */
	frame_of(tpath("big.zst"), (size_t)24 << 20, 1, 1);
	frame_of(tpath("big-nosize.zst"), (size_t)24 << 20, 0, 1);
	mc_mem_limit_set((uint64_t)16 << 20, "the test");
	expect_refused(tpath("big.zst"), MC_ENOMEM, "decoding its zstd frame (25165824 bytes)");
	expect_refused(tpath("big-nosize.zst"), MC_ENOMEM, "no size declared");
	mc_mem_limit_set(0, NULL);
	/* The caller's file limit, too. */
	read_all(tpath("big.zst"), &z, &nz);
	ck_assert_int_eq(mc_zst_decode(z, nz, "big.zst", 1 << 20, &buf, &len, &err), MC_ECORRUPT);
	ck_assert_msg(strstr(err.msg, "declares 25165824 bytes of content, more than the limit"),
		      "%s", err.msg);
	free(z);
	read_all(tpath("big-nosize.zst"), &z, &nz);
	ck_assert_int_eq(mc_zst_decode(z, nz, "n.zst", 1 << 20, &buf, &len, &err), MC_ECORRUPT);
	ck_assert_msg(strstr(err.msg, "decodes to more than 1048576 bytes"), "%s", err.msg);
	ck_assert_int_eq(mc_zst_decode(z, nz, "n.zst", 1 << 30, &buf, &len, &err), 0);
	ck_assert_uint_eq(len, (size_t)24 << 20);
	free(buf);
	free(z);

	/* A frame without its size within the limits decodes (in steps). */
	frame_of(tpath("small-nosize.zst"), 3 << 20, 0, 0);
	ck_assert_int_eq(mc_read_file_decoded(tpath("small-nosize.zst"), 1 << 30, &buf, &len, &nz,
					      &err),
			 0);
	ck_assert_uint_eq(len, 3 << 20);
	ck_assert_uint_lt(nz, 1 << 16);
	for (size_t i = 0; i < len; i++)
		if (((unsigned char *)buf)[i])
			ck_abort_msg("byte %zu decoded as %d", i, ((unsigned char *)buf)[i]);
	free(buf);
}
END_TEST

/* The bytes do not depend on the thread count (nor on anything but the content). */
START_TEST(test_deterministic)
{
	struct mc_model *m = build(9);
	struct mc_err err = {0};
	void *a, *b, *raw;
	size_t na, nb, nraw;
	int t0 = omp_get_max_threads();

	omp_set_num_threads(1);
	ck_assert_int_eq(mc_model_save(m, tpath("1.zst"), &err), 0);
	omp_set_num_threads(4);
	ck_assert_int_eq(mc_model_save(m, tpath("4.zst"), &err), 0);
	omp_set_num_threads(t0);
	read_all(tpath("1.zst"), &a, &na);
	read_all(tpath("4.zst"), &b, &nb);
	ck_assert_uint_eq(na, nb);
	ck_assert(memcmp(a, b, na) == 0);
	free(b);
	/* mc_zst_encode at the default level is what the writer wrote. */
	ck_assert_int_eq(mc_model_serialize(m, &raw, &nraw, &err), 0);
	ck_assert_int_eq(mc_zst_encode(raw, nraw, 0, &b, &nb, &err), 0);
	ck_assert_uint_eq(na, nb);
	ck_assert(memcmp(a, b, na) == 0);
	free(b);
	ck_assert_int_eq(mc_zst_encode(raw, nraw, MC_ZSTD_LEVEL, &b, &nb, &err), 0);
	ck_assert(nb == na && memcmp(a, b, na) == 0);
	free(b);
	free(a);
	free(raw);
	mc_model_free(m);
}
END_TEST

START_TEST(test_read_head)
{
	struct mc_model *m = build(10);
	unsigned char h1[64], h2[64];
	size_t g1, g2;

	save_both(m);
	mc_model_free(m);
	ck_assert_int_eq(mc_read_head(tpath("m.safetensors"), h1, sizeof(h1), &g1), 0);
	ck_assert_int_eq(mc_read_head(tpath("m.safetensors.zst"), h2, sizeof(h2), &g2), 0);
	ck_assert_uint_eq(g1, sizeof(h1));
	ck_assert_uint_eq(g2, sizeof(h2));
	ck_assert(memcmp(h1, h2, sizeof(h1)) == 0);
	ck_assert_int_eq(mc_read_head(tpath("absent"), h1, 8, &g1), -1);
}
END_TEST

static Suite *zfile_suite(void)
{
	Suite *s = suite_create("zfile");
	TCase *tc = tcase_create("zfile");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_known_by_magic);
	tcase_add_test(tc, test_cascade);
	tcase_add_test(tc, test_truncated_corrupt_trailing);
	tcase_add_test(tc, test_bombs);
	tcase_add_test(tc, test_deterministic);
	tcase_add_test(tc, test_read_head);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(zfile_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
