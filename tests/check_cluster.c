// SPDX-License-Identifier: MIT
/*
 * check_cluster.c - weight sharing: k-means on constructed clusters and
 * against its brute-force reference, zeros left alone, the centroid step of
 * fine-tuning (the summed gradient, against finite differences; the same
 * bytes for any thread count), and clustered model files: round trips to
 * the same bytes, and hostile files refused.
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/cascade.h>
#include <mcomp/model.h>
#include <mcomp/safetensors.h>

#include "../passes/cluster/cluster.h"
#include "scratch_dir.h"

static void setup(void)
{
	scratch_make("cluster");
}

static void teardown(void)
{
	scratch_remove();
}

/* ---------------------------------------------------------------- k-means */

/* Four groups around -3, -1, 1 and 3 (spread 0.1), every fifth weight zero:
 * k-means from linear or density initial centroids finds the groups, each
 * centroid the exact mean of its group. */
/* Float i of a tensor's bytes, which a safetensors file need not align. */
static float f32_at(const void *data, int i)
{
	float v;

	memcpy(&v, (const char *)data + (size_t)i * sizeof(v), sizeof(v));
	return v;
}

START_TEST(test_known_clusters)
{
	enum { N = 4000 };
	static const float centre[4] = { -3, -1, 1, 3 };
	float *w = malloc(N * sizeof(float)), c[4];
	uint16_t *a = malloc(N * sizeof(uint16_t));
	struct mc_err err = {0};
	int64_t cnt[4] = {0}, want[4];
	int iters;

	for (int i = 0; i < N; i++) {
		int g = (i * 7 + i / 13) % 4;

		w[i] = i % 5 == 0 ? 0.0f : centre[g] + 0.1f * mc_rand_normal(3, 0, (uint64_t)i) / 4;
	}
	for (int init = CLUSTER_LINEAR; init <= CLUSTER_KMEANSPP; init++) {
		ck_assert_msg(cluster_kmeans(w, N, 4, init, 5, 1, 100, a, c, &iters, &err) == 0, "%s",
			      err.msg);
		ck_assert_int_ge(iters, 1);
		ck_assert_int_lt(iters, 100);
		memset(cnt, 0, sizeof(cnt));
		memset(want, 0, sizeof(want));
		for (int i = 0; i < N; i++) {
			if (w[i] == 0.0f) {
				ck_assert_uint_eq(a[i], CLUSTER_NONE); /* zeros in no cluster */
				continue;
			}
			ck_assert_uint_lt(a[i], 4);
			/* the group of a weight is its nearest centre */
			ck_assert_int_eq(a[i], (int)lroundf((w[i] + 3) / 2));
			cnt[a[i]]++;
			want[(int)lroundf((w[i] + 3) / 2)]++;
		}
		for (int j = 0; j < 4; j++) {
			ck_assert_int_eq(cnt[j], want[j]);
			ck_assert_int_gt(cnt[j], 700);
			ck_assert(fabsf(c[j] - centre[j]) < 0.02f);
		}
	}
	free(a);
	free(w);
}
END_TEST

/* The sorted, binary-searched k-means gives the brute-force reference's
 * assignments, centroids and iteration count, bit for bit. */
START_TEST(test_against_reference)
{
	static const int64_t sizes[] = { 1, 7, 300, 5000 };
	static const int ks[] = { 4, 16, 32, 256 };
	struct mc_err err = {0};

	for (int s = 0; s < 4; s++) {
		int64_t n = sizes[s];
		float *w = malloc((size_t)n * sizeof(float));
		uint16_t *a = malloc((size_t)n * 2), *b = malloc((size_t)n * 2);

		for (int64_t i = 0; i < n; i++) {
			w[i] = mc_rand_normal(11, (uint64_t)s, (uint64_t)i) * 0.05f;
			if (i % 3 == 1)
				w[i] = 0.0f; /* pruned */
			if (i % 17 == 5)
				w[i] = w[i / 2]; /* repeated values: ties */
		}
		for (int q = 0; q < 4; q++) {
			for (int init = CLUSTER_LINEAR; init <= CLUSTER_KMEANSPP; init++) {
				for (int it = 1; it <= 40; it += 39) {
					float c1[256], c2[256];
					int i1, i2;

					ck_assert_int_eq(cluster_kmeans(w, n, ks[q], init, 9, 4, it, a,
									c1, &i1, &err), 0);
					ck_assert_int_eq(cluster_kmeans_ref(w, n, ks[q], init, 9, 4, it,
									    b, c2, &i2, &err), 0);
					ck_assert_int_eq(i1, i2);
					ck_assert_int_eq(memcmp(c1, c2, sizeof(float) * ks[q]), 0);
					ck_assert_int_eq(memcmp(a, b, (size_t)n * 2), 0);
				}
			}
		}
		free(b);
		free(a);
		free(w);
	}
}
END_TEST

START_TEST(test_kmeans_refusals)
{
	float w[4] = { 1, 2, NAN, 3 }, c[4];
	uint16_t a[4];
	struct mc_err err = {0};
	int it;

	ck_assert_int_eq(cluster_kmeans(w, 4, 4, CLUSTER_LINEAR, 0, 0, 10, a, c, &it, &err),
			 MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "finite"));
	ck_assert_int_eq(cluster_kmeans(w, 2, 1, CLUSTER_LINEAR, 0, 0, 10, a, c, &it, &err),
			 MC_EINVAL);
	/* all zeros: no cluster has a member */
	memset(w, 0, sizeof(w));
	ck_assert_int_eq(cluster_kmeans(w, 4, 4, CLUSTER_LINEAR, 0, 0, 10, a, c, &it, &err), 0);
	for (int i = 0; i < 4; i++)
		ck_assert_uint_eq(a[i], CLUSTER_NONE);
}
END_TEST

/* ---------------------------------------------------------------- fine-tuning */

static const char *lin_arch =
	"{\"format\": 1, \"input\": [6], \"nodes\": ["
	"{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"input\"], \"attrs\": {\"out\": 5}},"
	"{\"name\": \"act\", \"op\": \"sigmoid\", \"inputs\": [\"fc1\"], \"attrs\": {}},"
	"{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"act\"], \"attrs\": {\"out\": 3}}]}";

static double loss_of(struct mc_model *m, const float *x, const uint8_t *y, int n)
{
	struct mc_exec *e = mc_exec_new(m, n, 0, NULL);
	double l = mc_softmax_xent(mc_forward(e, x, n), y, n, 3, NULL);

	mc_exec_free(e);
	return l;
}

/*
 * The loss as a function of one centroid (all its members move together)
 * has the sum of the members' gradients as its derivative (central
 * differences of the float forward agree within 0.2%); and the step
 * cluster_share takes after plain SGD moves each centroid by exactly
 * -lr times that sum (up to float rounding), leaving zeros zero.
 */
START_TEST(test_centroid_gradient)
{
	enum { N = 8 };
	struct mc_err err = {0};
	struct mc_model *m = mc_model_from_arch(lin_arch, "test", &err);
	struct mc_tensor *w;
	struct mc_exec *e;
	float x[N * 6], c[4], *g, *x0;
	uint8_t y[N];
	uint16_t a[30];
	int it;

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 3);
	w = mc_model_param(m, "fc1.weight");
	g = malloc(30 * sizeof(float));
	x0 = malloc(30 * sizeof(float));
	for (int i = 0; i < N * 6; i++)
		x[i] = mc_rand_normal(4, 0, (uint64_t)i);
	for (int i = 0; i < N; i++)
		y[i] = (uint8_t)(i % 3);
	((float *)w->data)[7] = 0.0f; /* a pruned weight */
	ck_assert_int_eq(cluster_kmeans(w->data, 30, 4, CLUSTER_LINEAR, 0, 0, 50, a, c, &it, &err),
			 0);
	for (int i = 0; i < 30; i++)
		((float *)w->data)[i] = a[i] == CLUSTER_NONE ? 0.0f : c[a[i]];
	memcpy(x0, w->data, sizeof(float) * 30);

	e = mc_exec_new(m, N, 1, &err);
	float dl[N * 3];
	mc_softmax_xent(mc_forward(e, x, N), y, N, 3, dl);
	mc_exec_zero_grad(e);
	mc_backward(e, dl);
	memcpy(g, mc_exec_grad(e, mc_model_find(m, "fc1"), 0), sizeof(float) * 30);
	mc_exec_free(e);

	for (int j = 0; j < 4; j++) {
		double sum = 0, lp, lm, hp = (float)(c[j] + 0.01f), hm = (float)(c[j] - 0.01f);

		for (int i = 0; i < 30; i++)
			if (a[i] == j)
				sum += g[i];
		for (int i = 0; i < 30; i++)
			if (a[i] == j)
				((float *)w->data)[i] = (float)hp;
		lp = loss_of(m, x, y, N);
		for (int i = 0; i < 30; i++)
			if (a[i] == j)
				((float *)w->data)[i] = (float)hm;
		lm = loss_of(m, x, y, N);
		memcpy(w->data, x0, sizeof(float) * 30);
		ck_assert_msg(fabs((lp - lm) / (hp - hm) - sum) <= 2e-3 * fmax(1e-2, fabs(sum)),
			      "centroid %d: finite difference %g, summed gradient %g", j,
			      (lp - lm) / (hp - hm), sum);
	}

	/* one SGD step (lr 0.1) on the members, then the centroid step */
	float c0[4];

	memcpy(c0, c, sizeof(c));
	for (int i = 0; i < 30; i++)
		((float *)w->data)[i] -= 0.1f * g[i];
	((float *)w->data)[7] = 0.25f; /* a pruned weight the optimizer moved */
	ck_assert_int_eq(cluster_share(w->data, 30, a, c, 4, &err), 0);
	for (int j = 0; j < 4; j++) {
		double sum = 0;

		for (int i = 0; i < 30; i++)
			if (a[i] == j)
				sum += g[i];
		ck_assert_msg(fabs((double)c[j] - ((double)c0[j] - 0.1 * sum)) < 1e-6,
			      "centroid %d moved to %g, expected %g", j, c[j], c0[j] - 0.1 * sum);
	}
	for (int i = 0; i < 30; i++) {
		if (a[i] == CLUSTER_NONE)
			ck_assert_uint_eq(((uint32_t *)w->data)[i], 0); /* +0.0 exactly */
		else
			ck_assert_float_eq(((float *)w->data)[i], c[a[i]]);
	}
	free(x0);
	free(g);
	mc_model_free(m);
}
END_TEST

/* The centroid step over a layer larger than its blocks gives the same
 * bytes for 1, 2, 3 and 8 threads. */
START_TEST(test_share_threads)
{
	enum { N = 100000, K = 32 };
	float *w0 = malloc(N * sizeof(float)), *w = malloc(N * sizeof(float)), c0[K], c[K];
	float *ref = malloc(N * sizeof(float)), cref[K];
	uint16_t *a = malloc(N * sizeof(uint16_t));
	struct mc_err err = {0};
	int it;

	for (int i = 0; i < N; i++)
		w0[i] = i % 4 ? mc_rand_normal(1, 2, (uint64_t)i) : 0.0f;
	ck_assert_int_eq(cluster_kmeans(w0, N, K, CLUSTER_DENSITY, 0, 0, 20, a, c0, &it, &err), 0);
	for (int i = 0; i < N; i++)
		w0[i] = a[i] == CLUSTER_NONE ? 0.0f : c0[a[i]] + 1e-3f * mc_rand_normal(2, 2, (uint64_t)i);
	for (int t = 1; t <= 8; t++) {
		if (t > 3 && t < 8)
			continue;
		omp_set_num_threads(t);
		memcpy(w, w0, N * sizeof(float));
		memcpy(c, c0, sizeof(c));
		ck_assert_int_eq(cluster_share(w, N, a, c, K, &err), 0);
		if (t == 1) {
			memcpy(ref, w, N * sizeof(float));
			memcpy(cref, c, sizeof(c));
		}
		ck_assert_int_eq(memcmp(ref, w, N * sizeof(float)), 0);
		ck_assert_int_eq(memcmp(cref, c, sizeof(c)), 0);
	}
	free(a);
	free(ref);
	free(w);
	free(w0);
}
END_TEST

/* ---------------------------------------------------------------- files */

static const char *file_arch =
	"{\"format\": 1, \"input\": [256], \"nodes\": ["
	"{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"input\"], \"attrs\": {\"out\": 64}},"
	"{\"name\": \"r1\", \"op\": \"relu\", \"inputs\": [\"fc1\"], \"attrs\": {}},"
	"{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"r1\"], \"attrs\": {\"out\": 64}},"
	"{\"name\": \"r2\", \"op\": \"relu\", \"inputs\": [\"fc2\"], \"attrs\": {}},"
	"{\"name\": \"fc3\", \"op\": \"linear\", \"inputs\": [\"r2\"], \"attrs\": {\"out\": 10}}]}";

/*
 * fc1 [64, 256]: 205 nonzeros of 2 values (CSR + 1-bit codes); fc2 [64, 64]:
 * a quarter nonzero, 16 values (bitmask + 4-bit codes); fc3 [10, 64]: every
 * weight one of 5 values, zeros among them (all coded, 3 bits, +0.0 in
 * the codebook). Biases stay dense.
 */
static struct mc_model *clustered_model(void)
{
	struct mc_err err = {0};
	struct mc_model *m = mc_model_from_arch(file_arch, "test", &err);
	float *w;

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 5);
	w = mc_model_param(m, "fc1.weight")->data;
	for (int i = 0; i < 64 * 256; i++)
		w[i] = i % 80 ? 0.0f : (i % 160 ? 0.5f : 2.0f);
	w = mc_model_param(m, "fc2.weight")->data;
	for (int i = 0; i < 64 * 64; i++)
		w[i] = i % 4 ? 0.0f : 0.01f * (float)((i / 4) % 16 - 8) + 0.005f;
	w = mc_model_param(m, "fc3.weight")->data;
	for (int i = 0; i < 640; i++)
		w[i] = 0.1f * (float)(i % 5 - 2);
	return m;
}

START_TEST(test_file_round_trip)
{
	struct mc_model *m = clustered_model(), *l;
	const char *p = tpath("c.safetensors");
	struct mc_err err = {0};
	struct mc_st_file *f;
	const struct mc_st_entry *e;
	size_t len, len2;
	void *buf, *buf2, *disk, *copy;
	const char *sp;

	ck_assert_int_eq(mc_model_serialize(m, &buf, &len, &err), 0);
	copy = malloc(len);
	memcpy(copy, buf, len);
	f = mc_st_parse(copy, len, "c", &err); /* any safetensors reader opens it (and owns copy) */
	ck_assert_msg(f != NULL, "%s", err.msg);
	sp = mc_st_meta(f, "mcomp.sparse");
	ck_assert_ptr_nonnull(strstr(sp, "\"fc1.weight\":{\"format\":\"csr\",\"shape\":[64,256],"
					 "\"nnz\":205,\"clusters\":2,\"bits\":1}"));
	ck_assert_ptr_nonnull(strstr(sp, "\"fc2.weight\":{\"format\":\"bitmask\",\"shape\":[64,64],"
					 "\"nnz\":1024,\"clusters\":16,\"bits\":4}"));
	ck_assert_ptr_nonnull(strstr(sp, "\"fc3.weight\":{\"format\":\"dense\",\"shape\":[10,64],"
					 "\"nnz\":640,\"clusters\":5,\"bits\":3}"));
	e = mc_st_find(f, "fc2.weight.__codes");
	ck_assert_ptr_nonnull(e);
	ck_assert_str_eq(e->st_dtype, "U8");
	ck_assert_int_eq(e->shape[0], 1024 * 4 / 8);
	e = mc_st_find(f, "fc2.weight.__codebook");
	ck_assert_int_eq(e->shape[0], 16);
	for (int j = 1; j < 16; j++) /* ascending */
		ck_assert(f32_at(e->data, j - 1) < f32_at(e->data, j));
	ck_assert_ptr_nonnull(mc_st_find(f, "fc2.weight.__mask"));
	ck_assert_ptr_null(mc_st_find(f, "fc2.weight.__values"));
	ck_assert_ptr_nonnull(mc_st_find(f, "fc1.weight.__indices"));
	ck_assert_int_eq(mc_st_find(f, "fc1.weight.__codes")->shape[0], 26);
	e = mc_st_find(f, "fc3.weight.__codebook");
	ck_assert_float_eq(f32_at(e->data, 2), 0.0f); /* zero is a value here */
	ck_assert_ptr_nonnull(mc_st_find(f, "fc3.bias"));
	mc_st_free(f);

	/* the codes decode to the exact weights; loading and saving again
	 * gives the same bytes */
	ck_assert_msg(mc_model_save(m, p, &err) == 0, "%s", err.msg);
	l = mc_model_load(p, &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	for (int i = 0; i < mc_model_n_nodes(m); i++)
		for (int q = 0; q < mc_model_node(m, i)->n_params; q++)
			ck_assert_int_eq(memcmp(mc_model_node(m, i)->params[q]->data,
						mc_model_node(l, i)->params[q]->data,
						mc_tensor_nbytes(mc_model_node(m, i)->params[q])),
					 0);
	ck_assert_int_eq(mc_model_serialize(l, &buf2, &len2, &err), 0);
	ck_assert_int_eq(len, len2);
	ck_assert_int_eq(memcmp(buf, buf2, len), 0);
	ck_assert_int_eq(mc_read_file(p, 1 << 24, &disk, &len2, &err), 0);
	ck_assert_int_eq(memcmp(buf, disk, len), 0);
	free(disk);
	free(buf2);
	free(buf);
	mc_model_free(l);
	mc_model_free(m);
}
END_TEST

/* A cascade file stores each stage's clustered tensors the same way, under
 * the stage's prefix, and loads and saves back to the same bytes. */
START_TEST(test_cascade_round_trip)
{
	struct mc_model *ms[2] = { clustered_model(), clustered_model() };
	const char *names[2] = { "small", "big" }, *p = tpath("cascade.safetensors");
	struct mc_err err = {0};
	struct mc_cascade *c = mc_cascade_new(2, names, ms, 0, &err), *l;
	size_t len, len2;
	void *buf, *buf2;

	ck_assert_msg(c != NULL, "%s", err.msg);
	c->thresholds[0] = 0.5f;
	ck_assert_int_eq(mc_cascade_serialize(c, &buf, &len, &err), 0);
	ck_assert_msg(memmem(buf, len, "big/fc2.weight.__codebook", 25) != NULL, "no codebook");
	ck_assert_msg(mc_cascade_save(c, p, &err) == 0, "%s", err.msg);
	l = mc_cascade_load(p, &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	ck_assert_int_eq(memcmp(mc_model_param(l->stages[1], "fc2.weight")->data,
				mc_model_param(c->stages[1], "fc2.weight")->data, 64 * 64 * 4),
			 0);
	ck_assert_int_eq(mc_cascade_serialize(l, &buf2, &len2, &err), 0);
	ck_assert_int_eq(len, len2);
	ck_assert_int_eq(memcmp(buf, buf2, len), 0);
	free(buf2);
	free(buf);
	mc_cascade_free(l);
	mc_cascade_free(c);
}
END_TEST

/* A tensor with more than 256 distinct values, or whose codes would not
 * pay, is stored as before. */
START_TEST(test_file_not_clustered)
{
	struct mc_model *m = clustered_model();
	float *w = mc_model_param(m, "fc1.weight")->data;
	struct mc_err err = {0};
	struct mc_st_file *f;
	size_t len;
	void *buf;

	for (int i = 0; i < 64 * 256; i += 40)
		w[i] = 0.001f * (float)i + 0.5f; /* 410 distinct values */
	ck_assert_int_eq(mc_model_serialize(m, &buf, &len, &err), 0);
	f = mc_st_parse(buf, len, "c", &err);
	ck_assert_ptr_nonnull(mc_st_find(f, "fc1.weight.__values"));
	ck_assert_ptr_null(mc_st_find(f, "fc1.weight.__codes"));
	ck_assert_ptr_nonnull(mc_st_find(f, "fc2.weight.__codes"));
	ck_assert_ptr_nonnull(mc_st_find(f, "fc3.weight.__codes"));
	mc_st_free(f);
	mc_model_free(m);
}
END_TEST

/* The serialized clustered model with its header text edited (from -> to,
 * same length) and one data byte of piece set to value (piece NULL: none);
 * expects the load to fail with want in the message. */
static void expect_fail(const char *from, const char *to, const char *piece, int64_t at,
			int value, const char *want)
{
	struct mc_model *m = clustered_model();
	const char *p = tpath("bad.safetensors");
	struct mc_err err = {0};
	struct mc_st_file *f;
	size_t len;
	uint64_t hlen;
	void *buf, *copy;
	char *h, *hit;

	ck_assert_int_eq(mc_model_serialize(m, &buf, &len, &err), 0);
	if (piece) {
		const struct mc_st_entry *e;

		copy = malloc(len);
		memcpy(copy, buf, len);
		f = mc_st_parse(copy, len, "copy", &err);
		ck_assert_ptr_nonnull(f);
		e = mc_st_find(f, piece);
		ck_assert_ptr_nonnull(e);
		((uint8_t *)buf)[(const char *)e->data - (const char *)f->buf + at] = (uint8_t)value;
		mc_st_free(f);
	}
	if (from) {
		ck_assert_int_eq(strlen(from), strlen(to));
		memcpy(&hlen, buf, 8);
		h = strndup((char *)buf + 8, hlen);
		hit = strstr(h, from);
		ck_assert_msg(hit != NULL, "no '%s' in the header", from);
		memcpy((char *)buf + 8 + (hit - h), to, strlen(to));
		free(h);
	}
	ck_assert_int_eq(mc_write_file_atomic(p, buf, len, &err), 0);
	free(buf);
	ck_assert_ptr_null(mc_model_load(p, &err));
	ck_assert_int_eq(err.code, MC_ECORRUPT);
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
	ck_assert_ptr_nonnull(strstr(err.msg, "bad.safetensors"));
	mc_model_free(m);
}

START_TEST(test_file_hostile)
{
	/* bits out of range, and a codebook larger than 2^bits */
	expect_fail("\\\"bits\\\":4", "\\\"bits\\\":9", NULL, 0, 0, "bits is 1 to 8");
	expect_fail("\\\"bits\\\":4", "\\\"bits\\\":0", NULL, 0, 0, "bits is 1 to 8");
	expect_fail("\\\"clusters\\\":16", "\\\"clusters\\\":99", NULL, 0, 0,
		    "\"clusters\" 99 and \"bits\" 4");
	/* sizes that disagree: codes for 1022 elements where the mask sets 1024 */
	expect_fail("\\\"nnz\\\":1024", "\\\"nnz\\\":1022", NULL, 0, 0,
		    "'fc2.weight.__codes' should be U8 [511]");
	/* a code beyond the codebook: fc3 has 5 values in 3-bit codes */
	expect_fail(NULL, NULL, "fc3.weight.__codes", 0, 0x07, "code 0 is 7, beyond the codebook "
								"of 5 values");
	/* bits set after the last code */
	expect_fail(NULL, NULL, "fc1.weight.__codes", 25, 0x80, "sets padding bits");
	/* a codebook out of order, and +0.0 in a sparse one */
	expect_fail(NULL, NULL, "fc2.weight.__codebook", 7, 0x7f, "strictly ascending");
	expect_fail(NULL, NULL, "fc1.weight.__codebook", 3, 0x00, "is +0.0, which the stored");
	expect_fail("\\\"format\\\":\\\"csr\\\"", "\\\"format\\\":\\\"bad\\\"", NULL, 0, 0,
		    "does not describe");
}
END_TEST

Suite *cluster_suite(void)
{
	Suite *s = suite_create("cluster");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_known_clusters);
	tcase_add_test(tc, test_against_reference);
	tcase_add_test(tc, test_kmeans_refusals);
	tcase_add_test(tc, test_centroid_gradient);
	tcase_add_test(tc, test_share_threads);
	tcase_add_test(tc, test_file_round_trip);
	tcase_add_test(tc, test_file_not_clustered);
	tcase_add_test(tc, test_cascade_round_trip);
	tcase_add_test(tc, test_file_hostile);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(cluster_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
