// SPDX-License-Identifier: MIT
/*
 * check_idx.c - IDX data sets: plain and gzip'd round trips, prefixes,
 * slices, hostile files (wrong magic, truncated, trailing bytes, count
 * mismatch), and the real Fashion-MNIST when it is installed.
 */
#define _GNU_SOURCE
#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <zlib.h>

#include <mcomp/data.h>

#define FMNIST "/usr/share/datasets/fashion-mnist"

#include "scratch_dir.h"

static void setup(void)
{
	scratch_make("idx");
}

static void teardown(void)
{
	scratch_remove();
}

static void write_file(const char *path, const void *buf, size_t len, int gz)
{
	if (gz) {
		gzFile g = gzopen(path, "wb");

		ck_assert_ptr_nonnull(g);
		ck_assert_int_eq(gzwrite(g, buf, (unsigned)len), (int)len);
		ck_assert_int_eq(gzclose(g), Z_OK);
	} else {
		FILE *f = fopen(path, "wb");

		ck_assert_ptr_nonnull(f);
		ck_assert_uint_eq(fwrite(buf, 1, len, f), len);
		ck_assert_int_eq(fclose(f), 0);
	}
}

static size_t put_be32(unsigned char *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
	return 4;
}

/* An IDX file: magic, dims, then data_len bytes (pixel i = i * 37 % 256,
 * or the given bytes). */
static void write_idx(const char *path, uint32_t magic, int ndim, const uint32_t *dims,
		      const unsigned char *data, size_t data_len, int gz)
{
	unsigned char *b = malloc(4 + 4 * ndim + data_len + 1);
	size_t o = put_be32(b, magic);

	for (int i = 0; i < ndim; i++)
		o += put_be32(b + o, dims[i]);
	for (size_t i = 0; i < data_len; i++)
		b[o + i] = data ? data[i] : (unsigned char)(i * 37 % 256);
	write_file(path, b, o + data_len, gz);
	free(b);
}

/* 3 images of 2x2 and labels {0, 4, 2} under prefix NAME. */
static void write_split(const char *name, int gz)
{
	char img[300], lab[300];
	uint32_t idims[3] = {3, 2, 2}, ldims[1] = {3};
	static const unsigned char labels[3] = {0, 4, 2};

	snprintf(img, sizeof(img), "%s-images-idx3-ubyte%s", tpath(name), gz ? ".gz" : "");
	snprintf(lab, sizeof(lab), "%s-labels-idx1-ubyte%s", tpath(name), gz ? ".gz" : "");
	write_idx(img, 0x803, 3, idims, NULL, 12, gz);
	write_idx(lab, 0x801, 1, ldims, labels, 3, gz);
}

static void check_split(const struct mc_dataset *d)
{
	ck_assert_int_eq(d->n, 3);
	ck_assert_int_eq(d->ndim, 3);
	ck_assert_int_eq(d->shape[0], 1);
	ck_assert_int_eq(d->shape[1], 2);
	ck_assert_int_eq(d->shape[2], 2);
	ck_assert_int_eq(d->sample_numel, 4);
	ck_assert_int_eq(d->n_classes, 5);
	ck_assert_int_eq(d->y[0], 0);
	ck_assert_int_eq(d->y[1], 4);
	ck_assert_int_eq(d->y[2], 2);
	for (int i = 0; i < 12; i++)
		ck_assert_float_eq(d->x[i], (float)(i * 37 % 256) / 255.0f);
}

static void expect_fail(struct mc_dataset *d, struct mc_err *err, int code, const char *want)
{
	ck_assert_msg(d == NULL, "expected an error containing '%s'", want);
	ck_assert_int_eq(err->code, code);
	ck_assert_msg(strstr(err->msg, want), "message '%s' lacks '%s'", err->msg, want);
}

START_TEST(test_plain_and_gz)
{
	struct mc_err err = {0};
	struct mc_dataset *d;

	for (int gz = 0; gz < 2; gz++) {
		char img[300], lab[300];

		write_split(gz ? "z" : "p", gz);
		snprintf(img, sizeof(img), "%s-images-idx3-ubyte%s", tpath(gz ? "z" : "p"),
			 gz ? ".gz" : "");
		snprintf(lab, sizeof(lab), "%s-labels-idx1-ubyte%s", tpath(gz ? "z" : "p"),
			 gz ? ".gz" : "");
		d = mc_idx_load(img, lab, &err);
		ck_assert_msg(d != NULL, "%s", err.msg);
		check_split(d);
		mc_dataset_free(d);
	}
}
END_TEST

START_TEST(test_prefix)
{
	struct mc_err err = {0};
	struct mc_dataset *d;

	write_split("plain", 0);
	d = mc_idx_load_prefix(tpath("plain"), &err);
	ck_assert_msg(d != NULL, "%s", err.msg);
	check_split(d);
	ck_assert_str_eq(d->source, tpath("plain"));
	mc_dataset_free(d);

	/* .gz wins over the plain file: make the plain one broken */
	write_split("both", 1);
	write_file(tpath("both-images-idx3-ubyte"), "junk", 4, 0);
	d = mc_idx_load_prefix(tpath("both"), &err);
	ck_assert_msg(d != NULL, "%s", err.msg);
	check_split(d);
	mc_dataset_free(d);

	d = mc_idx_load_prefix(tpath("none"), &err);
	expect_fail(d, &err, MC_EIO, "none: no IDX image file; tried ");
	ck_assert_ptr_nonnull(strstr(err.msg, "none-images-idx3-ubyte.gz, "));
	ck_assert_ptr_nonnull(strstr(err.msg, "none-images-idx3-ubyte"));
	ck_assert_ptr_null(strstr(err.msg, "apt-get"));

	/* images but no labels */
	write_file(tpath("half-images-idx3-ubyte"), "x", 1, 0);
	d = mc_idx_load_prefix(tpath("half"), &err);
	expect_fail(d, &err, MC_EIO, "no IDX label file; tried ");
	ck_assert_ptr_nonnull(strstr(err.msg, "half-labels-idx1-ubyte.gz"));

	d = mc_idx_load_prefix("/usr/share/datasets/no-such-set/train", &err);
	expect_fail(d, &err, MC_EIO, "apt-get install dataset-fashion-mnist");
}
END_TEST

START_TEST(test_wrong_magic)
{
	uint32_t idims[3] = {3, 2, 2}, ldims[1] = {3};
	struct mc_err err = {0};
	const char *img = tpath("i"), *lab = tpath("l");

	write_idx(lab, 0x801, 1, ldims, NULL, 3, 0);
	write_idx(img, 0x01000803, 3, idims, NULL, 12, 0);
	expect_fail(mc_idx_load(img, lab, &err), &err, MC_ECORRUPT,
		    "bad magic 0x01000803 (expected 0x00000803 for an IDX image file)");
	ck_assert_ptr_nonnull(strstr(err.msg, img));

	write_idx(img, 0x0d03, 3, idims, NULL, 48, 0);
	expect_fail(mc_idx_load(img, lab, &err), &err, MC_ECORRUPT, "IDX element type 0x0d");

	/* labels where the images should be */
	expect_fail(mc_idx_load(lab, lab, &err), &err, MC_ECORRUPT,
		    "bad magic 0x00000801: 1 dimensions, but an IDX image file has 3");

	write_file(img, "\0\0", 2, 0);
	expect_fail(mc_idx_load(img, lab, &err), &err, MC_ECORRUPT, "file is 2 bytes, too short");
	write_file(img, "\0\0\x08\x03\0\0", 6, 0);
	expect_fail(mc_idx_load(img, lab, &err), &err, MC_ECORRUPT, "too short for its 16-byte");
	idims[1] = 0;
	write_idx(img, 0x803, 3, idims, NULL, 0, 0);
	expect_fail(mc_idx_load(img, lab, &err), &err, MC_ECORRUPT,
		    "dimension 1 of the IDX header is 0");
	idims[0] = idims[1] = idims[2] = 0xffffffffu;
	write_idx(img, 0x803, 3, idims, NULL, 0, 0);
	expect_fail(mc_idx_load(img, lab, &err), &err, MC_ECORRUPT, "dimensions overflow");
}
END_TEST

START_TEST(test_truncated)
{
	uint32_t idims[3] = {3, 2, 2}, ldims[1] = {3};
	struct mc_err err = {0};
	const char *img = tpath("i"), *lab = tpath("l.gz");

	write_idx(lab, 0x801, 1, ldims, NULL, 3, 1);
	write_idx(img, 0x803, 3, idims, NULL, 11, 0);
	expect_fail(mc_idx_load(img, lab, &err), &err, MC_ECORRUPT,
		    "header promises 12 bytes of data, found 11; the file is truncated");
	ck_assert_ptr_nonnull(strstr(err.msg, img));

	write_idx(img, 0x803, 3, idims, NULL, 13, 0);
	expect_fail(mc_idx_load(img, lab, &err), &err, MC_ECORRUPT,
		    "trailing garbage after the 12 bytes");

	/* a gzip stream cut short */
	{
		static unsigned char big[20000];
		unsigned char *b = malloc(sizeof(big) + 100);
		const char *gzp = tpath("cut.gz");
		FILE *f;
		size_t n;

		idims[0] = 5000;
		idims[1] = idims[2] = 2;
		for (size_t k = 0; k < sizeof(big); k++)
			big[k] = (unsigned char)(k * 2654435761u >> 24);
		write_idx(gzp, 0x803, 3, idims, big, sizeof(big), 1);
		f = fopen(gzp, "rb");
		n = fread(b, 1, sizeof(big) + 100, f);
		fclose(f);
		write_file(gzp, b, n / 2, 0);
		free(b);
		expect_fail(mc_idx_load(gzp, NULL, &err), &err, MC_ECORRUPT,
			    "the gzip file is truncated or corrupt");
	}
}
END_TEST

/* The header alone gives the count and shape, for validation; a bad header
 * is still an error. */
START_TEST(test_peek)
{
	uint32_t idims[3] = {7, 3, 5}, ldims[1] = {7};
	struct mc_err err = {0};
	int64_t n = 0, shape[3] = {0};
	const char *img = tpath("p.gz");

	write_idx(img, 0x803, 3, idims, NULL, 105, 1);
	ck_assert_int_eq(mc_idx_peek(img, &n, shape, &err), 0);
	ck_assert_int_eq(n, 7);
	ck_assert_int_eq(shape[0], 1);
	ck_assert_int_eq(shape[1], 3);
	ck_assert_int_eq(shape[2], 5);

	write_idx(img, 0x801, 1, ldims, NULL, 7, 0);
	ck_assert_int_eq(mc_idx_peek(img, &n, shape, &err), MC_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(err.msg, "were the image and label files swapped?"));

	idims[1] = 0;
	write_idx(img, 0x803, 3, idims, NULL, 0, 0);
	ck_assert_int_eq(mc_idx_peek(img, &n, shape, &err), MC_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(err.msg, "dimension 1 of the IDX header is 0"));

	write_file(img, "\0\0\x08\x03\0\0", 6, 0);
	ck_assert_int_eq(mc_idx_peek(img, &n, shape, &err), MC_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(err.msg, "too short"));
	ck_assert_int_eq(mc_idx_peek(tpath("none"), &n, shape, &err), MC_EIO);
}
END_TEST

START_TEST(test_count_mismatch)
{
	uint32_t idims[3] = {3, 2, 2}, ldims[1] = {2};
	struct mc_err err = {0};
	const char *img = tpath("i.gz"), *lab = tpath("l");

	write_idx(img, 0x803, 3, idims, NULL, 12, 1);
	write_idx(lab, 0x801, 1, ldims, NULL, 2, 0);
	expect_fail(mc_idx_load(img, lab, &err), &err, MC_ECORRUPT, "3 images but ");
	ck_assert_ptr_nonnull(strstr(err.msg, "has 2 labels"));
	expect_fail(mc_idx_load(img, tpath("absent"), &err), &err, MC_EIO,
		    "absent: cannot open: No such file or directory");
	expect_fail(mc_idx_load(tmpdir, lab, &err), &err, MC_EIO, "is a directory");
}
END_TEST

START_TEST(test_slice)
{
	struct mc_err err = {0};
	struct mc_dataset *d, *s;

	write_split("s", 1);
	d = mc_idx_load_prefix(tpath("s"), &err);
	ck_assert_msg(d != NULL, "%s", err.msg);

	s = mc_dataset_slice(d, 1, 2, &err);
	ck_assert_msg(s != NULL, "%s", err.msg);
	ck_assert_int_eq(s->n, 2);
	ck_assert_int_eq(s->sample_numel, 4);
	ck_assert_int_eq(s->y[0], 4);
	ck_assert_int_eq(s->y[1], 2);
	ck_assert_int_eq(s->n_classes, 5);
	ck_assert_int_eq(memcmp(s->x, d->x + 4, 8 * sizeof(float)), 0);
	mc_dataset_free(s);

	s = mc_dataset_slice(d, 2, -1, &err);
	ck_assert_msg(s != NULL, "%s", err.msg);
	ck_assert_int_eq(s->n, 1);
	ck_assert_int_eq(s->y[0], 2);
	ck_assert_int_eq(s->n_classes, 5); /* the data set's classes, not the slice's */
	mc_dataset_free(s);

	expect_fail(mc_dataset_slice(d, 2, 2, &err), &err, MC_EINVAL,
		    "slice of 2 samples from sample 2 is out of range; the data set has 3");
	expect_fail(mc_dataset_slice(d, -1, 1, &err), &err, MC_EINVAL, "out of range");
	expect_fail(mc_dataset_slice(d, 3, -1, &err), &err, MC_EINVAL, "slice of 0 samples");
	mc_dataset_free(d);
}
END_TEST

START_TEST(test_fashion_mnist)
{
	struct mc_err err = {0};
	struct mc_dataset *d;
	int64_t counts[10] = {0}, out_of_range = 0;
	struct stat st;

	if (stat(FMNIST, &st) != 0) {
		fprintf(stderr,
			"check_idx: skipping Fashion-MNIST: %s is absent "
			"(apt-get install dataset-fashion-mnist)\n",
			FMNIST);
		return;
	}
	d = mc_idx_load_prefix(FMNIST "/t10k", &err);
	ck_assert_msg(d != NULL, "%s", err.msg);
	ck_assert_int_eq(d->n, 10000);
	ck_assert_int_eq(d->ndim, 3);
	ck_assert_int_eq(d->shape[0], 1);
	ck_assert_int_eq(d->shape[1], 28);
	ck_assert_int_eq(d->shape[2], 28);
	ck_assert_int_eq(d->n_classes, 10);
	for (int64_t i = 0; i < d->n; i++)
		counts[d->y[i]]++;
	for (int c = 0; c < 10; c++)
		ck_assert_int_eq(counts[c], 1000); /* the test split is balanced */
	for (int64_t i = 0; i < d->n * d->sample_numel; i++)
		out_of_range += !(d->x[i] >= 0.0f && d->x[i] <= 1.0f);
	ck_assert_int_eq(out_of_range, 0);
	mc_dataset_free(d);

	d = mc_idx_load_prefix(FMNIST "/train", &err);
	ck_assert_msg(d != NULL, "%s", err.msg);
	ck_assert_int_eq(d->n, 60000);
	ck_assert_int_eq(d->sample_numel, 784);
	ck_assert_int_eq(d->n_classes, 10);
	mc_dataset_free(d);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("idx");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60); /* the real data set takes a second or two */
	tcase_add_test(tc, test_plain_and_gz);
	tcase_add_test(tc, test_prefix);
	tcase_add_test(tc, test_wrong_magic);
	tcase_add_test(tc, test_truncated);
	tcase_add_test(tc, test_count_mismatch);
	tcase_add_test(tc, test_peek);
	tcase_add_test(tc, test_slice);
	tcase_add_test(tc, test_fashion_mnist);
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
