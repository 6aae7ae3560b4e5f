/* SPDX-License-Identifier: MIT */
/*
 * tiny_data.h - what the pass suites (check_prune, check_quantize, ...) share:
 * the pass registry, a scratch folder, a tiny IDX data set written on the spot (8x8 images, four
 * classes, a bright 3x3 block in the label's corner over deterministic
 * noise), and file helpers. Included by one test program each, so its
 * functions are static.
 */
#ifndef MCOMP_TESTS_TINY_DATA_H
#define MCOMP_TESTS_TINY_DATA_H

#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <mcomp/mcomp.h>

#define N_TRAIN 128
#define N_TEST 64
#define SIDE 8

#define PATHF(buf, ...) \
	ck_assert_int_lt(snprintf(buf, sizeof(buf), __VA_ARGS__), (int)sizeof(buf))

/* An MLP 64-32-16-4 (flat, fc1, act1, fc2, act2, fc3) over the tiny images. */
#define TINY_MLP_ARCH \
	"{\"format\": 1, \"input\": [1, 8, 8], \"nodes\": [" \
	"{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"input\"], \"attrs\": {}}," \
	"{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"flat\"], \"attrs\": {\"out\": 32}}," \
	"{\"name\": \"act1\", \"op\": \"relu\", \"inputs\": [\"fc1\"], \"attrs\": {}}," \
	"{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"act1\"], \"attrs\": {\"out\": 16}}," \
	"{\"name\": \"act2\", \"op\": \"relu\", \"inputs\": [\"fc2\"], \"attrs\": {}}," \
	"{\"name\": \"fc3\", \"op\": \"linear\", \"inputs\": [\"act2\"], \"attrs\": {\"out\": 4}}]}"

static char scratch[4096];

/* The whole file at path, NUL-terminated, into a new buffer; its size in *n. */
static inline char *slurp(const char *path, long *n)
{
	FILE *fp = fopen(path, "rb");
	char *buf;

	ck_assert_msg(fp != NULL, "cannot read %s", path);
	ck_assert_int_eq(fseek(fp, 0, SEEK_END), 0);
	*n = ftell(fp);
	ck_assert_int_gt(*n, 0);
	rewind(fp);
	buf = malloc((size_t)*n + 1);
	ck_assert(buf != NULL);
	ck_assert_uint_eq(fread(buf, 1, (size_t)*n, fp), (size_t)*n);
	buf[*n] = '\0';
	fclose(fp);
	return buf;
}

/* Files a and b hold the same bytes, or the test fails saying what differs. */
static inline void assert_same_file(const char *a, const char *b, const char *what)
{
	long na, nb;
	char *x = slurp(a, &na), *y = slurp(b, &nb);

	ck_assert_msg(na == nb && memcmp(x, y, (size_t)na) == 0, "%s (%ld and %ld bytes)", what,
		      na, nb);
	free(x);
	free(y);
}

static void write_file(const char *path, const void *buf, size_t n)
{
	FILE *fp = fopen(path, "wb");

	ck_assert_msg(fp != NULL, "cannot write %s: %s", path, strerror(errno));
	ck_assert_uint_eq(fwrite(buf, 1, n, fp), n);
	ck_assert_int_eq(fclose(fp), 0);
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* n images of 8x8: a bright 3x3 block whose corner is the label's, over
 * deterministic noise; 4 classes. */
static void write_idx(const char *prefix, int n, unsigned salt)
{
	unsigned char *img = calloc(16 + (size_t)n * SIDE * SIDE, 1), *lab = calloc(8 + (size_t)n, 1);
	unsigned s = 12345u + salt;
	char path[4200];

	ck_assert(img && lab);
	put_be32(img, 0x803);
	put_be32(img + 4, (uint32_t)n);
	put_be32(img + 8, SIDE);
	put_be32(img + 12, SIDE);
	put_be32(lab, 0x801);
	put_be32(lab + 4, (uint32_t)n);
	for (int i = 0; i < n; i++) {
		int c = i % 4, y0 = c / 2 * 4, x0 = c % 2 * 4;
		unsigned char *p = img + 16 + (size_t)i * SIDE * SIDE;

		lab[8 + i] = (unsigned char)c;
		for (int k = 0; k < SIDE * SIDE; k++) {
			s = s * 1103515245u + 12345u;
			p[k] = (unsigned char)((s >> 16) % 90);
		}
		for (int y = 0; y < 3; y++)
			for (int x = 0; x < 3; x++)
				p[(y0 + y) * SIDE + x0 + x] = 230;
	}
	PATHF(path, "%s-images-idx3-ubyte", prefix);
	write_file(path, img, 16 + (size_t)n * SIDE * SIDE);
	PATHF(path, "%s-labels-idx1-ubyte", prefix);
	write_file(path, lab, 8 + (size_t)n);
	free(img);
	free(lab);
}

static char *spath(const char *name)
{
	static char buf[4][4200];
	static int k;

	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", scratch, name);
	return buf[k];
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

/* Makes the scratch folder "mcomp-WHAT-XXXXXX" with the tiny train and test splits. */
/* The passes found on MCOMP_PASS_PATH, open between tiny_setup and tiny_teardown. */
static struct mc_registry *reg;

/* Makes the scratch folder and its data, and opens reg, which must hold the
 * passes named in the NULL-terminated list passes. */
static void tiny_setup(const char *what, const char *const *passes)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	struct mc_err err = { 0 };

	PATHF(scratch, "%.200s/mcomp-%s-XXXXXX", base, what);
	ck_assert(mkdtemp(scratch) != NULL);
	write_idx(spath("train"), N_TRAIN, 0);
	write_idx(spath("test"), N_TEST, 1);
	reg = mc_registry_open(&err);
	ck_assert_msg(reg != NULL, "%s", err.msg);
	for (; *passes; passes++)
		ck_assert_msg(mc_registry_find(reg, *passes, NULL),
			      "the %s pass is not on MCOMP_PASS_PATH (%s)", *passes, mc_pass_path());
}

static void tiny_teardown(void)
{
	mc_registry_free(reg);
	reg = NULL;
	nftw(scratch, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* Writes text as the scratch folder's p.yaml, loads it with r and, when
 * run is set, runs it. Returns 0 or the error code with err filled. */
static int tiny_pipeline(struct mc_registry *r, const char *text, int run, struct mc_err *err)
{
	struct mc_pipeline *p;
	int ret;

	write_file(spath("p.yaml"), text, strlen(text));
	memset(err, 0, sizeof(*err));
	p = mc_pipeline_load(spath("p.yaml"), NULL, 0, r, err);
	if (!p)
		return err->code;
	ret = run ? mc_pipeline_run(p, NULL, err) : 0;
	mc_pipeline_free(p);
	return ret;
}

#endif
