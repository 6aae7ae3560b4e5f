// SPDX-License-Identifier: MIT
/*
 * check_cascade.c - cascades (mcomp/cascade.h): confidence values against
 * hand-computed ones, routing checked sample by sample against each stage
 * run alone, files (round trip, corrupt files refused), stage checks,
 * thread-count determinism and measuring.
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <mcomp/cascade.h>
#include <mcomp/safetensors.h>

#include "scratch_dir.h"

#define ARCH(in, hidden, out)                                                                      \
	"{\"format\": 1, \"input\": " in ", \"nodes\": ["                                          \
	"{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"input\"], \"attrs\": {}},"       \
	"{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"flat\"], \"attrs\": "              \
	"{\"out\": " hidden "}},"                                                                  \
	"{\"name\": \"act\", \"op\": \"relu\", \"inputs\": [\"fc1\"], \"attrs\": {}},"             \
	"{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"act\"], \"attrs\": {\"out\": " out \
	"}}]}"

/* A dynamic int8 stage: its input scale comes from the batch's range, so its
 * output for a sample depends on which samples share the batch. */
#define QARCH                                                                                      \
	"{\"format\": 1, \"input\": [1, 4, 4], \"nodes\": ["                                       \
	"{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"input\"], \"attrs\": {}},"       \
	"{\"name\": \"fc\", \"op\": \"qlinear\", \"inputs\": [\"flat\"], \"attrs\": {\"out\": "    \
	"3, \"bits\": 8, \"mode\": \"dynamic\"}}]}"

#define IN	16
#define CLASSES 3

static void setup(void)
{
	scratch_make("cascade");
}

static void teardown(void)
{
	scratch_remove();
}

static struct mc_model *build(const char *arch, uint64_t seed)
{
	struct mc_err err = {0};
	struct mc_model *m = mc_model_from_arch(arch, "test", &err);

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, seed);
	return m;
}

static struct mc_model *small(uint64_t seed)
{
	return build(ARCH("[1, 4, 4]", "8", "3"), seed);
}

/* The int8 stage with deterministic weights, scales and bias. */
static struct mc_model *qmodel(void)
{
	struct mc_model *m = build(QARCH, 1);
	struct mc_tensor *w = mc_model_param(m, "fc.weight"),
			 *s = mc_model_param(m, "fc.weight_scale"),
			 *b = mc_model_param(m, "fc.bias");

	ck_assert_ptr_nonnull(w);
	ck_assert_int_eq(w->dtype, MC_S8);
	for (int64_t i = 0; i < w->numel; i++)
		((int8_t *)w->data)[i] = (int8_t)((i * 37) % 255 - 127);
	for (int64_t i = 0; i < s->numel; i++)
		((float *)s->data)[i] = 0.01f * (float)(i + 1);
	for (int64_t i = 0; i < b->numel; i++)
		((float *)b->data)[i] = 0.1f * (float)i - 0.1f;
	return m;
}

/* n samples of in values in [0, 1), from an LCG. */
static float *inputs(int n, int in, unsigned salt)
{
	float *x = malloc(sizeof(float) * (size_t)n * (size_t)in);
	unsigned s = 777u + salt;

	ck_assert_ptr_nonnull(x);
	for (int i = 0; i < n * in; i++) {
		s = s * 1103515245u + 12345u;
		x[i] = (float)((s >> 8) & 0xffff) / 65536.0f;
	}
	return x;
}

/* m alone on x[n]: logits[n, classes] (malloc'd). */
static float *run_alone(const struct mc_model *m, const float *x, int n)
{
	struct mc_err err = {0};
	struct mc_exec *e = mc_exec_new(m, n, 0, &err);
	float *out = malloc(sizeof(float) * (size_t)n * (size_t)mc_model_n_classes(m));

	ck_assert_msg(e != NULL, "%s", err.msg);
	memcpy(out, mc_forward(e, x, n), sizeof(float) * (size_t)n * (size_t)mc_model_n_classes(m));
	mc_exec_free(e);
	return out;
}

static struct mc_cascade *cascade(int n, const char *const *names, struct mc_model **models,
				  int conf)
{
	struct mc_err err = {0};
	struct mc_cascade *c = mc_cascade_new(n, names, models, conf, &err);

	ck_assert_msg(c != NULL, "%s", err.msg);
	return c;
}

/* Runs x[n] through c in batches of up to max_batch. */
static void run_cascade(const struct mc_cascade *c, int max_batch, const float *x, int n,
			float *logits, int *exits)
{
	struct mc_err err = {0};
	struct mc_cascade_exec *e = mc_cascade_exec_new(c, max_batch, &err);

	ck_assert_msg(e != NULL, "%s", err.msg);
	mc_cascade_forward(e, x, n, logits, exits);
	mc_cascade_exec_free(e);
}

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

/* ---------------------------------------------------------------- confidence */

START_TEST(test_confidence_values)
{
	static const float z[] = {2, 1, 0, 3, 3, 3, 1000, 0, -1000};
	static const float z4[] = {0.5f, -1.25f, 3, 0.25f};
	/* softmax by hand: max prob, top-1 minus top-2, sum p ln p */
	static const double want[4][3] = {
	    {0.6652409558, 0.4205124847, -0.8323955818}, /* [2, 1, 0] */
	    {1.0 / 3, 0, -1.0986122887},		 /* [3, 3, 3] */
	    {1, 1, 0}, /* [1000, 0, -1000]: no overflow, the maximum is subtracted first */
	    {0.8618630889, 0.7911170584, -0.5292895734}, /* [0.5, -1.25, 3, 0.25] */
	};

	ck_assert_str_eq(mc_confidence_names[MC_CONF_MAX_PROB], "max-prob");
	ck_assert_str_eq(mc_confidence_names[MC_CONF_MARGIN], "margin");
	ck_assert_str_eq(mc_confidence_names[MC_CONF_ENTROPY], "entropy");
	ck_assert_ptr_null(mc_confidence_names[MC_CONF_COUNT]);
	for (int k = 0; k < MC_CONF_COUNT; k++) {
		float c[3], one;

		mc_confidence(k, z, 3, 3, c);
		for (int r = 0; r < 3; r++)
			ck_assert_msg(fabs(c[r] - want[r][k]) < 1e-6,
				      "%s of row %d: %.9g, not %.9g", mc_confidence_names[k], r,
				      c[r], want[r][k]);
		mc_confidence(k, z4, 1, 4, &one);
		ck_assert_double_eq_tol(one, want[3][k], 1e-6);
		/* a row's value does not depend on its neighbours */
		mc_confidence(k, z + 3, 1, 3, &one);
		ck_assert_int_eq(memcmp(&c[1], &one, sizeof(one)), 0);
	}
}
END_TEST

/* -inf logits (masked classes) and a single class stay finite. */
START_TEST(test_confidence_edges)
{
	const float z[] = {0, -INFINITY}, one[] = {4};
	float c;

	mc_confidence(MC_CONF_MAX_PROB, z, 1, 2, &c);
	ck_assert_float_eq(c, 1);
	mc_confidence(MC_CONF_MARGIN, z, 1, 2, &c);
	ck_assert_float_eq(c, 1);
	mc_confidence(MC_CONF_ENTROPY, z, 1, 2, &c);
	ck_assert_float_eq(c, 0);
	mc_confidence(MC_CONF_MARGIN, one, 1, 1, &c);
	ck_assert_float_eq(c, 1);
	mc_confidence(MC_CONF_ENTROPY, one, 1, 1, &c);
	ck_assert_float_eq(c, 0);
	mc_confidence(MC_CONF_COUNT, one, 1, 1, &c); /* unknown kind: NaN, so nothing exits */
	ck_assert(isnan(c));
}
END_TEST

/* ---------------------------------------------------------------- running */

START_TEST(test_one_stage_is_the_model)
{
	const char *names[] = {"only"};
	struct mc_model *m = small(3), *copy;
	struct mc_err err = {0};
	struct mc_cascade *c;
	const int n = 37;
	float *x = inputs(n, IN, 0), *alone, logits[37 * CLASSES];
	int exits[37];

	copy = mc_model_dup(m, &err);
	ck_assert_ptr_nonnull(copy);
	c = cascade(1, names, &copy, MC_CONF_MAX_PROB);
	ck_assert(isinf(c->thresholds[0]) && c->thresholds[0] > 0);
	alone = run_alone(m, x, n);
	memset(exits, 0xff, sizeof(exits));
	run_cascade(c, 64, x, n, logits, exits);
	ck_assert_int_eq(memcmp(logits, alone, sizeof(logits)), 0);
	for (int i = 0; i < n; i++)
		ck_assert_int_eq(exits[i], 0);
	free(alone);
	/* in batches of 16, 16 and 5: the model on each batch */
	run_cascade(c, 16, x, n, logits, exits);
	for (int b0 = 0; b0 < n; b0 += 16) {
		int b = n - b0 < 16 ? n - b0 : 16;

		alone = run_alone(m, x + b0 * IN, b);
		ck_assert_int_eq(memcmp(logits + b0 * CLASSES, alone, sizeof(float) * b * CLASSES),
				 0);
		free(alone);
	}
	free(x);
	mc_cascade_free(c);
	mc_model_free(m);
}
END_TEST

/*
 * Checks the route of every sample of x[n] through c run in batches of
 * max_batch: within its batch, a sample exits at the first stage s whose
 * confidence reaches thresholds[s], with that stage's logits bit for bit,
 * where stage s is run alone on exactly the samples of the batch that reached
 * it, in order. (Stage 0 thus on the whole batch. The others too must have
 * seen exactly those samples: an int8 stage quantizes its input with the
 * batch's range, and the f32 GEMM takes another path for 1 to 3 rows.)
 * Adds how many exited at each stage to counts.
 */
static void check_routes(const struct mc_cascade *c, const float *x, int n, int max_batch,
			 int *counts)
{
	float *logits = malloc(sizeof(float) * (size_t)n * CLASSES);
	float *sub = malloc(sizeof(float) * (size_t)n * IN);
	float *conf = malloc(sizeof(float) * (size_t)n);
	int *exits = malloc(sizeof(int) * (size_t)n), *alive = malloc(sizeof(int) * (size_t)n);

	ck_assert(logits && sub && conf && exits && alive);
	for (int s = 0; s < c->n_stages; s++)
		counts[s] = 0;
	run_cascade(c, max_batch, x, n, logits, exits);
	for (int b0 = 0; b0 < n; b0 += max_batch) {
		int b1 = n - b0 < max_batch ? n : b0 + max_batch;

		for (int i = b0; i < b1; i++)
			alive[i] = 1;
		for (int s = 0; s < c->n_stages; s++) {
			int k = 0, last = s == c->n_stages - 1;
			float *out;

			for (int i = b0; i < b1; i++)
				if (alive[i])
					memcpy(sub + (size_t)k++ * IN, x + (size_t)i * IN,
					       sizeof(float) * IN);
			if (!k)
				break;
			out = run_alone(c->stages[s], sub, k);
			mc_confidence(c->confidence, out, k, CLASSES, conf);
			k = 0;
			for (int i = b0; i < b1; i++) {
				if (!alive[i])
					continue;
				if (last || conf[k] >= c->thresholds[s]) {
					ck_assert_msg(exits[i] == s,
						      "sample %d exits at %d, not %d", i, exits[i],
						      s);
					ck_assert_msg(memcmp(logits + (size_t)i * CLASSES,
							     out + (size_t)k * CLASSES,
							     sizeof(float) * CLASSES) == 0,
						      "sample %d: logits differ from stage %d's", i,
						      s);
					alive[i] = 0;
					counts[s]++;
				}
				k++;
			}
			free(out);
		}
	}
	free(alive);
	free(exits);
	free(conf);
	free(sub);
	free(logits);
}

/* The threshold q of the way up stage 0's confidences on x. */
static float quantile(const struct mc_model *m, int kind, const float *x, int n, double q)
{
	float *z = run_alone(m, x, n), *c = malloc(sizeof(float) * (size_t)n), t;

	mc_confidence(kind, z, n, CLASSES, c);
	qsort(c, (size_t)n, sizeof(*c), cmp_float);
	t = c[(int)(q * (n - 1))];
	free(c);
	free(z);
	return t;
}

START_TEST(test_routing_two_stages)
{
	const char *names[] = {"student", "teacher"};
	const int n = 101;
	float *x = inputs(n, IN, 1);

	for (int kind = 0; kind < MC_CONF_COUNT; kind++) {
		struct mc_model *models[] = {small(1), build(ARCH("[1, 4, 4]", "32", "3"), 2)};
		struct mc_cascade *c;
		int counts[2];

		c = cascade(2, names, models, kind);
		c->thresholds[0] = quantile(c->stages[0], kind, x, n, 0.5);
		check_routes(c, x, n, 256, counts);
		ck_assert_int_eq(counts[0], 51); /* the median and above: distinct values */
		ck_assert_int_eq(counts[1], 50);
		check_routes(c, x, n, 7, counts); /* in batches of 7, the last of 3 */
		c->thresholds[0] = -INFINITY;	  /* everything exits at once */
		check_routes(c, x, n, 64, counts);
		ck_assert_int_eq(counts[0], n);
		c->thresholds[0] = INFINITY; /* nothing does */
		check_routes(c, x, n, 64, counts);
		ck_assert_int_eq(counts[1], n);
		mc_cascade_free(c);
	}
	free(x);
}
END_TEST

/* Three stages, the last an int8 one whose outputs depend on the batch: it
 * must have been run on exactly the samples left, in their order. */
START_TEST(test_routing_three_stages)
{
	const char *names[] = {"a", "b", "c"};
	struct mc_model *models[] = {small(4), small(5), qmodel()};
	const int n = 90;
	float *x = inputs(n, IN, 2);
	struct mc_cascade *c = cascade(3, names, models, MC_CONF_MARGIN);
	int counts[3];

	c->thresholds[0] = quantile(c->stages[0], MC_CONF_MARGIN, x, n, 0.4);
	c->thresholds[1] = quantile(c->stages[1], MC_CONF_MARGIN, x, n, 0.3);
	check_routes(c, x, n, 32, counts);
	ck_assert_int_eq(counts[0] + counts[1] + counts[2], n);
	ck_assert_int_gt(counts[0], 0);
	ck_assert_int_gt(counts[1], 0);
	ck_assert_int_gt(counts[2], 0);
	mc_cascade_free(c);
	free(x);
}
END_TEST

/* The same output for 1, 2 and 3 threads. */
START_TEST(test_threads)
{
	const char *names[] = {"small", "big"};
	const char *big = ARCH("[1, 4, 4]", "256", "3");
	struct mc_model *models[] = {build(ARCH("[1, 4, 4]", "64", "3"), 6), build(big, 7)};
	struct mc_cascade *c = cascade(2, names, models, MC_CONF_ENTROPY);
	const int n = 300;
	float *x = inputs(n, IN, 3), *ref = malloc(sizeof(float) * n * CLASSES),
	      *got = malloc(sizeof(float) * n * CLASSES);
	int rexit[300], gexit[300], saved = omp_get_max_threads();

	c->thresholds[0] = quantile(c->stages[0], MC_CONF_ENTROPY, x, n, 0.5);
	omp_set_num_threads(1);
	run_cascade(c, 128, x, n, ref, rexit);
	for (int t = 2; t <= 3; t++) {
		omp_set_num_threads(t);
		run_cascade(c, 128, x, n, got, gexit);
		ck_assert_msg(memcmp(ref, got, sizeof(float) * n * CLASSES) == 0,
			      "logits differ at %d threads", t);
		ck_assert_int_eq(memcmp(rexit, gexit, sizeof(rexit)), 0);
	}
	omp_set_num_threads(saved);
	free(got);
	free(ref);
	free(x);
	mc_cascade_free(c);
}
END_TEST

/* ---------------------------------------------------------------- checks */

/* mc_cascade_new of a and b (freed either way) fails with want in the message. */
static void expect_new_fail(int n, const char *const *names, struct mc_model **models, int conf,
			    const char *want)
{
	struct mc_err err = {0};

	ck_assert_ptr_null(mc_cascade_new(n, names, models, conf, &err));
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
}

START_TEST(test_new_checks)
{
	const char *ok[] = {"s", "t"}, *dup[] = {"s", "s"}, *slash[] = {"s", "a/b"},
		   *empty[] = {"", "t"};
	struct mc_model *m[2];

	m[0] = small(1), m[1] = build(ARCH("[16]", "8", "3"), 2);
	expect_new_fail(2, ok, m, 0,
			"stage 1 ('t') takes input [16] but stage 0 ('s') takes [1, 4, 4]");
	m[0] = small(1), m[1] = build(ARCH("[1, 4, 4]", "8", "4"), 2);
	expect_new_fail(2, ok, m, 0, "stage 1 ('t') gives 4 classes but stage 0 ('s') gives 3");
	m[0] = small(1), m[1] = small(2);
	expect_new_fail(2, dup, m, 0, "stages 0 and 1 are both named 's'");
	m[0] = small(1), m[1] = small(2);
	expect_new_fail(2, slash, m, 0, "stage 1's name 'a/b' is not allowed");
	m[0] = small(1), m[1] = small(2);
	expect_new_fail(2, empty, m, 0, "stage 0's name '' is empty");
	m[0] = small(1), m[1] = small(2);
	expect_new_fail(2, ok, m, MC_CONF_COUNT, "confidence 3 is not one of");
	m[0] = small(1);
	expect_new_fail(0, ok, m, 0, "0 stages; a cascade has 1 to 8");
	mc_model_free(m[0]);
	{
		struct mc_model *many[MC_CASCADE_MAX_STAGES + 1];
		const char *nine[] = {"a", "b", "c", "d", "e", "f", "g", "h", "i"};

		for (int s = 0; s <= MC_CASCADE_MAX_STAGES; s++)
			many[s] = small((uint64_t)s);
		expect_new_fail(MC_CASCADE_MAX_STAGES + 1, nine, many, 0, "9 stages");
	}
}
END_TEST

/* ---------------------------------------------------------------- files */

static const char *sparse_arch = ARCH("[1, 4, 4]", "128", "3");

/* student: fc1.weight 95% zeros (stored sparse); teacher: the int8 stage. */
static struct mc_cascade *file_cascade(void)
{
	const char *names[] = {"student", "teacher"};
	struct mc_model *models[] = {build(sparse_arch, 9), qmodel()};
	float *w = mc_model_param(models[0], "fc1.weight")->data;
	struct mc_cascade *c;

	for (int i = 0; i < 128 * IN; i++)
		if (i % 20)
			w[i] = 0.0f;
	c = cascade(2, names, models, MC_CONF_MARGIN);
	c->thresholds[0] = 0.1f; /* not a short decimal as a float */
	return c;
}

static void assert_same_models(const struct mc_model *a, const struct mc_model *b)
{
	ck_assert_int_eq(mc_model_n_nodes(a), mc_model_n_nodes(b));
	for (int i = 0; i < mc_model_n_nodes(a); i++) {
		ck_assert_str_eq(mc_model_node(a, i)->name, mc_model_node(b, i)->name);
		ck_assert_int_eq(mc_model_node(a, i)->n_params, mc_model_node(b, i)->n_params);
		for (int p = 0; p < mc_model_node(a, i)->n_params; p++) {
			const struct mc_tensor *x = mc_model_node(a, i)->params[p],
					       *y = mc_model_node(b, i)->params[p];

			ck_assert_str_eq(x->name, y->name);
			ck_assert_int_eq(x->dtype, y->dtype);
			ck_assert_int_eq(memcmp(x->data, y->data, mc_tensor_nbytes(x)), 0);
		}
	}
}

START_TEST(test_round_trip)
{
	struct mc_cascade *c = file_cascade(), *l;
	const char *p = tpath("c.safetensors");
	struct mc_err err = {0};
	struct mc_st_file *f;
	const int n = 50;
	float *x = inputs(n, IN, 4), a[50 * CLASSES], b[50 * CLASSES];
	int ea[50], eb[50];
	size_t len, len2;
	void *buf, *buf2;

	ck_assert_msg(mc_cascade_save(c, p, &err) == 0, "%s", err.msg);
	ck_assert(mc_file_is_cascade(p));
	l = mc_cascade_load(p, &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	ck_assert_int_eq(l->n_stages, 2);
	ck_assert_str_eq(l->names[0], "student");
	ck_assert_str_eq(l->names[1], "teacher");
	ck_assert_int_eq(l->confidence, MC_CONF_MARGIN);
	ck_assert_int_eq(memcmp(&l->thresholds[0], &c->thresholds[0], sizeof(float)), 0);
	for (int s = 0; s < 2; s++)
		assert_same_models(c->stages[s], l->stages[s]);
	run_cascade(c, 64, x, n, a, ea);
	run_cascade(l, 64, x, n, b, eb);
	ck_assert_int_eq(memcmp(a, b, sizeof(a)), 0);
	ck_assert_int_eq(memcmp(ea, eb, sizeof(ea)), 0);

	/* the same bytes again, and from the loaded copy */
	ck_assert_int_eq(mc_cascade_serialize(c, &buf, &len, &err), 0);
	ck_assert_int_eq(mc_cascade_serialize(l, &buf2, &len2, &err), 0);
	ck_assert_uint_eq(len, len2);
	ck_assert_int_eq(memcmp(buf, buf2, len), 0);
	free(buf2);

	/* any safetensors reader opens it: prefixed names, sparse pieces */
	f = mc_st_parse(buf, len, "c", &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	ck_assert_ptr_nonnull(mc_st_find(f, "student/fc1.weight.__mask"));
	ck_assert_ptr_nonnull(mc_st_find(f, "student/fc2.weight"));
	ck_assert_ptr_nonnull(mc_st_find(f, "teacher/fc.weight"));
	ck_assert_ptr_null(mc_st_find(f, "student/fc1.weight"));
	ck_assert_str_eq(mc_st_meta(f, "format"), "mcomp");
	ck_assert_ptr_nonnull(mc_st_meta(f, "mcomp.version"));
	ck_assert_ptr_nonnull(strstr(mc_st_meta(f, "mcomp.sparse"), "\"student/fc1.weight\""));
	ck_assert_ptr_nonnull(
	    strstr(mc_st_meta(f, "mcomp.cascade"),
		   "{\"format\":1,\"confidence\":\"margin\",\"stages\":[{\"name\":"
		   "\"student\",\"threshold\":0.10000000149011612,\"arch\":{"));
	mc_st_free(f);

	/* a model file is not a cascade, nor is a missing file */
	ck_assert_int_eq(mc_model_save(c->stages[0], tpath("m.safetensors"), &err), 0);
	ck_assert(!mc_file_is_cascade(tpath("m.safetensors")));
	ck_assert(!mc_file_is_cascade(tpath("none.safetensors")));
	ck_assert_ptr_null(mc_cascade_load(tpath("m.safetensors"), &err));
	ck_assert_int_eq(err.code, MC_ECORRUPT);
	ck_assert_ptr_nonnull(strstr(err.msg, "a model file, not a cascade"));
	mc_cascade_free(l);
	mc_cascade_free(c);
	free(x);
}
END_TEST

/* Thresholds round-trip bit for bit: random floats, +-inf; NaN is refused. */
START_TEST(test_thresholds_exact)
{
	const char *names[] = {"a", "b", "c"};
	struct mc_model *models[] = {small(1), small(2), small(3)};
	struct mc_cascade *c = cascade(3, names, models, MC_CONF_ENTROPY), *l;
	const char *p = tpath("t.safetensors");
	struct mc_err err = {0};
	unsigned s = 99;

	for (int r = 0; r < 40; r++) {
		uint32_t bits;

		s = s * 1103515245u + 12345u;
		bits = s & 0x807fffffu;		       /* sign, mantissa */
		bits |= (uint32_t)(100 + r * 2) << 23; /* exponents 2^-27 .. 2^51 */
		memcpy(&c->thresholds[0], &bits, 4);
		c->thresholds[1] = r % 2 ? INFINITY : -INFINITY;
		ck_assert_msg(mc_cascade_save(c, p, &err) == 0, "%s", err.msg);
		l = mc_cascade_load(p, &err);
		ck_assert_msg(l != NULL, "%s", err.msg);
		ck_assert_int_eq(memcmp(l->thresholds, c->thresholds, 2 * sizeof(float)), 0);
		mc_cascade_free(l);
	}
	c->thresholds[0] = NAN;
	ck_assert_int_eq(mc_cascade_save(c, p, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "stage 0 ('a') has threshold NaN"));
	c->thresholds[0] = 0.5f;
	c->confidence = MC_CONF_COUNT;
	ck_assert_int_eq(mc_cascade_save(c, p, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "confidence 3 is not one of"));
	c->confidence = MC_CONF_MAX_PROB;
	mc_cascade_free(c);
}
END_TEST

/* Rewrites the cascade file src as dst with the n-th occurrence (from 1) of
 * from in "mcomp.cascade" replaced by to, without tensor drop (may be NULL),
 * with an extra tensor add (may be NULL) and, when sparse is set, that as
 * "mcomp.sparse". */
static void rewrite(const char *src, const char *dst, const char *from, int nth, const char *to,
		    const char *drop, const char *add, const char *sparse)
{
	struct mc_err err = {0};
	struct mc_st_file *f = mc_st_read(src, &err);
	struct mc_tensor **t;
	const char *meta[16];
	char *text, *at;
	int n = 0, k = 0;
	size_t len;
	void *buf;

	ck_assert_msg(f != NULL, "%s", err.msg);
	t = calloc((size_t)f->n + 1, sizeof(*t));
	for (int i = 0; i < f->n; i++) {
		const struct mc_st_entry *e = &f->entries[i];

		if (drop && !strcmp(e->name, drop))
			continue;
		t[n] = mc_tensor_new(e->name, (enum mc_dtype)e->dtype, e->ndim, e->shape, &err);
		ck_assert_ptr_nonnull(t[n]);
		memcpy(t[n++]->data, e->data, e->nbytes);
	}
	if (add) {
		int64_t one = 1;

		t[n++] = mc_tensor_new(add, MC_F32, 1, &one, &err);
	}
	text = calloc(1, strlen(mc_st_meta(f, "mcomp.cascade")) + (to ? strlen(to) : 0) + 1);
	strcpy(text, mc_st_meta(f, "mcomp.cascade"));
	if (from) {
		at = text;
		for (int i = 0; i < nth; i++) {
			at = strstr(i ? at + 1 : at, from);
			ck_assert_msg(at != NULL, "no '%s' #%d in %s", from, i + 1, text);
		}
		memmove(at + strlen(to), at + strlen(from), strlen(at + strlen(from)) + 1);
		memcpy(at, to, strlen(to));
	}
	for (int i = 0; i < f->n_meta; i++) {
		const char *v = f->meta_vals[i];

		if (!strcmp(f->meta_keys[i], "mcomp.cascade"))
			v = text;
		if (!strcmp(f->meta_keys[i], "mcomp.sparse") && sparse)
			v = sparse;
		meta[2 * k] = f->meta_keys[i];
		meta[2 * k++ + 1] = v;
	}
	ck_assert_int_eq(mc_st_serialize(t, n, meta, k, &buf, &len, &err), 0);
	ck_assert_int_eq(mc_write_file_atomic(dst, buf, len, &err), 0);
	free(buf);
	free(text);
	for (int i = 0; i < n; i++)
		mc_tensor_free(t[i]);
	free(t);
	mc_st_free(f);
}

static void expect_load_fail(const char *path, const char *want)
{
	struct mc_err err = {0};

	ck_assert_ptr_null(mc_cascade_load(path, &err));
	ck_assert_msg(err.code == MC_ECORRUPT, "code %d: %s", err.code, err.msg);
	ck_assert_msg(strstr(err.msg, path), "'%s' does not name the file", err.msg);
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
}

/* Each edit, applied to a good file, gives a file refused with want. */
static void expect_edit_fail(const char *from, int nth, const char *to, const char *drop,
			     const char *add, const char *sparse, const char *want)
{
	const char *bad = tpath("bad.safetensors");

	rewrite(tpath("good.safetensors"), bad, from, nth, to, drop, add, sparse);
	expect_load_fail(bad, want);
}

START_TEST(test_corrupt_files)
{
	struct mc_cascade *c = file_cascade(), *l;
	const char *good = tpath("good.safetensors");
	struct mc_err err = {0};
	size_t len, hlen;
	void *buf;

	ck_assert_int_eq(mc_cascade_save(c, good, &err), 0);
	/* the unchanged rewrite loads: the edits below are what breaks them */
	rewrite(good, tpath("same.safetensors"), NULL, 0, NULL, NULL, NULL, NULL);
	l = mc_cascade_load(tpath("same.safetensors"), &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	mc_cascade_free(l);

	expect_edit_fail("\"margin\"", 1, "\"margins\"", NULL, NULL, NULL,
			 "confidence 'margins' is not one of max-prob, margin, entropy");
	expect_edit_fail(NULL, 0, NULL, "teacher/fc.bias", NULL, NULL,
			 "tensor 'teacher/fc.bias' is missing");
	expect_edit_fail(NULL, 0, NULL, NULL, "teacher/stray", NULL,
			 "tensor 'teacher/stray' is no parameter of any stage's architecture");
	expect_edit_fail("\"threshold\":0.10000000149011612,", 1, "", NULL, NULL, NULL,
			 "stage 0 ('student') has no threshold");
	expect_edit_fail("\"threshold\":0.10000000149011612", 1, "\"threshold\":\"high\"", NULL,
			 NULL, NULL, "stage 0 ('student') has a malformed threshold");
	expect_edit_fail("{\"name\":\"teacher\",", 1, "{\"name\":\"teacher\",\"threshold\":1,",
			 NULL, NULL, NULL, "the last stage ('teacher') has a threshold");
	expect_edit_fail("\"out\":3", 2, "\"out\":4", NULL, NULL, NULL,
			 "stage 1 ('teacher') gives 4 classes but stage 0 ('student') gives 3");
	expect_edit_fail("\"input\":[1,4,4]", 2, "\"input\":[1,16,1]", NULL, NULL, NULL,
			 "stage 1 ('teacher') takes input [1, 16, 1] but stage 0 ('student') takes "
			 "[1, 4, 4]");
	expect_edit_fail("\"name\":\"teacher\"", 1, "\"name\":\"student\"", NULL, NULL, NULL,
			 "stages 0 and 1 are both named 'student'");
	expect_edit_fail("\"name\":\"teacher\"", 1, "\"name\":\"te/acher\"", NULL, NULL, NULL,
			 "stage 1's name 'te/acher' is not allowed");
	expect_edit_fail("\"out\":128", 1, "\"out\":127", NULL, NULL, NULL,
			 "\"mcomp.sparse\" entry of 'student/fc1.weight' does not describe");
	expect_edit_fail("{\"format\":1", 1, "{\"format\":2", NULL, NULL, NULL,
			 "cascade format 2 is newer than this mcomp reads (1)");
	expect_edit_fail("{\"format\":1", 1, "{\"format\":\"1\"", NULL, NULL, NULL,
			 "\"format\" is not 1");
	expect_edit_fail("\"confidence\"", 1, "\"colour\":1,\"confidence\"", NULL, NULL, NULL,
			 "unknown key 'colour'");
	expect_edit_fail("\"arch\":{", 2, "\"arc\":{", NULL, NULL, NULL,
			 "stage 1 is not an object with \"name\"");
	expect_edit_fail("\"stages\":[", 1, "\"stages\":[1,", NULL, NULL, NULL,
			 "stage 0 is not an object");
	expect_edit_fail("]}", 1, "", NULL, NULL, NULL, "\"mcomp.cascade\" is not a JSON object");
	expect_edit_fail("\"op\":\"relu\"", 1, "\"op\":\"gelu2\"", NULL, NULL, NULL,
			 "stage 'student'");
	expect_edit_fail(NULL, 0, NULL, NULL, NULL,
			 "{\"ghost/fc1.weight\":{\"format\":\"bitmask\",\"shape\":[1],\"nnz\":0}}",
			 "names 'ghost/fc1.weight', which belongs to no stage");

	/* cut anywhere: refused, never a crash; no cascade until the header is whole */
	ck_assert_int_eq(mc_read_file(good, 1 << 26, &buf, &len, &err), 0);
	hlen = 8 + ((const uint8_t *)buf)[0] + 256u * ((const uint8_t *)buf)[1] +
	       65536u * ((const uint8_t *)buf)[2];
	for (size_t cut = 0; cut < len; cut += 1 + cut / 7) {
		const char *bad = tpath("cut.safetensors");

		ck_assert_int_eq(mc_write_file_atomic(bad, buf, cut, &err), 0);
		ck_assert_ptr_null(mc_cascade_load(bad, &err));
		ck_assert_msg(err.code == MC_ECORRUPT, "cut at %zu: %d %s", cut, err.code, err.msg);
		ck_assert_int_eq(mc_file_is_cascade(bad), cut >= hlen);
	}
	free(buf);
	mc_cascade_free(c);
}
END_TEST

/* ---------------------------------------------------------------- measuring */

START_TEST(test_measure)
{
	const char *names[] = {"student", "teacher"};
	struct mc_model *models[] = {small(1), build(ARCH("[1, 4, 4]", "32", "3"), 2)};
	struct mc_cascade *c = cascade(2, names, models, MC_CONF_MAX_PROB);
	const int n = 300;
	struct mc_dataset d = {.source = "made",
			       .n = n,
			       .ndim = 3,
			       .shape = {1, 4, 4},
			       .sample_numel = IN,
			       .n_classes = CLASSES};
	float *logits = malloc(sizeof(float) * n * CLASSES);
	int exits[300], right[2] = {0}, count[2] = {0};
	struct mc_cascade_measure me;
	struct mc_err err = {0};
	size_t len;
	void *buf;

	d.x = inputs(n, IN, 5);
	d.y = malloc((size_t)n);
	for (int i = 0; i < n; i++)
		d.y[i] = (uint8_t)(i * 7 % CLASSES);
	c->thresholds[0] = quantile(c->stages[0], MC_CONF_MAX_PROB, d.x, n, 0.3);
	run_cascade(c, 256, d.x, n, logits, exits);
	for (int i = 0; i < n; i++) {
		const float *z = logits + (size_t)i * CLASSES;
		int top = 0;

		for (int j = 1; j < CLASSES; j++)
			top = z[j] > z[top] ? j : top;
		count[exits[i]]++;
		right[exits[i]] += top == d.y[i];
	}
	ck_assert_msg(mc_cascade_measure(c, &d, &me, &err) == 0, "%s", err.msg);
	ck_assert_double_eq_tol(me.accuracy, (double)(right[0] + right[1]) / n, 1e-12);
	for (int s = 0; s < 2; s++) {
		ck_assert_double_eq_tol(me.exit_frac[s], (double)count[s] / n, 1e-12);
		ck_assert_double_eq_tol(me.exit_acc[s], (double)right[s] / count[s], 1e-12);
	}
	ck_assert_double_eq(me.exit_frac[2], 0);
	ck_assert_double_eq(me.exit_acc[2], -1);
	ck_assert(me.throughput256 > 0 && isfinite(me.throughput256));
	ck_assert(me.latency1_ms > 0 && isfinite(me.latency1_ms));
	ck_assert_int_eq(mc_cascade_serialize(c, &buf, &len, &err), 0);
	ck_assert_int_eq(me.bytes, (int64_t)len);
	free(buf);

	d.sample_numel = 15;
	ck_assert_int_eq(mc_cascade_measure(c, &d, &me, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "made: 300 samples of 15 values in 3 classes do not "
					      "fit the cascade"));
	free(d.x);
	free(d.y);
	free(logits);
	mc_cascade_free(c);
}
END_TEST

/* ---------------------------------------------------------------- the command */

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24), p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8), p[3] = (unsigned char)v;
}

static void write_bytes(const char *path, const void *buf, size_t n)
{
	struct mc_err err = {0};

	ck_assert_msg(mc_write_file_atomic(path, buf, n, &err) == 0, "%s", err.msg);
}

/* DIR/t10k-{images,labels}: n images side x side of noise, labels 0..2. */
static void write_split(const char *dir, int n, int side)
{
	unsigned char *img = calloc(16 + (size_t)n * side * side, 1), lab[8 + 64];
	char path[512];
	unsigned s = 5;

	ck_assert(img && n <= 64);
	put_be32(img, 0x803), put_be32(img + 4, (uint32_t)n);
	put_be32(img + 8, (uint32_t)side), put_be32(img + 12, (uint32_t)side);
	put_be32(lab, 0x801), put_be32(lab + 4, (uint32_t)n);
	for (int i = 0; i < n * side * side; i++) {
		s = s * 1103515245u + 12345u;
		img[16 + i] = (unsigned char)(s >> 16);
	}
	for (int i = 0; i < n; i++)
		lab[8 + i] = (unsigned char)(i % CLASSES);
	snprintf(path, sizeof(path), "%s/t10k-images-idx3-ubyte", dir);
	write_bytes(path, img, 16 + (size_t)n * side * side);
	snprintf(path, sizeof(path), "%s/t10k-labels-idx1-ubyte", dir);
	write_bytes(path, lab, 8 + (size_t)n);
	free(img);
}

/* Runs mcomp with args; returns its exit status and its output (stdout and
 * stderr) in out. */
static int mcomp(char *out, size_t n, const char *args)
{
	const char *dir = getenv("MCOMP_BUILDDIR");
	char cmd[2048];
	size_t got = 0, r;
	FILE *p;
	int st;

	snprintf(cmd, sizeof(cmd), "'%s/mcomp' %s 2>&1", dir ? dir : ".", args);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	while (got + 1 < n && (r = fread(out + got, 1, n - 1 - got, p)) > 0)
		got += r;
	out[got] = '\0';
	st = pclose(p);
	ck_assert_msg(WIFEXITED(st), "mcomp %s did not exit", args);
	return WEXITSTATUS(st);
}

#define EXPECT(status, want, ...)                                                                  \
	do {                                                                                       \
		char args_[1024];                                                                  \
		snprintf(args_, sizeof(args_), __VA_ARGS__);                                       \
		int st_ = mcomp(out, sizeof(out), args_);                                          \
		ck_assert_msg(st_ == (status), "mcomp %s: status %d, not %d:\n%s", args_, st_,     \
			      (status), out);                                                      \
		ck_assert_msg(strstr(out, want), "mcomp %s: no '%s' in:\n%s", args_, want, out);   \
	} while (0)

START_TEST(test_command)
{
	struct mc_cascade *c = file_cascade();
	struct mc_err err = {0};
	static char out[1 << 16];
	char data[256], odd[256], f[256], model[256], bad[256];

	/* tpath's buffers rotate: keep copies */
	snprintf(data, sizeof(data), "%s", tpath("data"));
	snprintf(odd, sizeof(odd), "%s", tpath("odd"));
	snprintf(f, sizeof(f), "%s", tpath("c.safetensors"));
	snprintf(model, sizeof(model), "%s", tpath("m.safetensors"));
	snprintf(bad, sizeof(bad), "%s", tpath("bad.safetensors"));

	ck_assert_int_eq(mkdir(data, 0700), 0);
	ck_assert_int_eq(mkdir(odd, 0700), 0);
	write_split(data, 40, 4);
	write_split(odd, 10, 5);
	ck_assert_int_eq(mc_cascade_save(c, f, &err), 0);
	ck_assert_int_eq(mc_model_save(c->stages[1], model, &err), 0);

	EXPECT(0, "cascade:    2 stages, confidence margin", "inspect %s", f);
	EXPECT(0, "0     student          0.100000001", "inspect %s", f);
	EXPECT(0, "1     teacher          -", "inspect %s", f);
	EXPECT(0, "student/fc1.weight.__mask", "inspect %s", f);
	EXPECT(0, "fc               qlinear", "inspect %s", f);
	EXPECT(0, "exits  accuracy", "eval %s --data %s", f, data);
	EXPECT(0, "data:     ", "eval %s --data %s", f, data);
	EXPECT(0, "samples/s at batch 256", "eval %s --data %s", f, data);
	EXPECT(0, "mean over the first 40 samples", "eval %s --data %s/t10k", f, data);
	EXPECT(0, "loss:", "eval %s --data %s", model, data); /* models as before */
	EXPECT(1, "do not fit model", "eval %s --data %s", f, odd);
	EXPECT(2, "eval needs MODEL --data DIR", "eval %s", f);
	EXPECT(2, "inspect needs one", "inspect %s %s", f, f);

	rewrite(f, bad, "\"margin\"", 1, "\"marg\"", NULL, NULL, NULL);
	EXPECT(1, "confidence 'marg' is not one of", "inspect %s", bad);
	EXPECT(1, "confidence 'marg' is not one of", "eval %s --data %s", bad, data);
	mc_cascade_free(c);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("cascade");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_confidence_values);
	tcase_add_test(tc, test_confidence_edges);
	tcase_add_test(tc, test_one_stage_is_the_model);
	tcase_add_test(tc, test_routing_two_stages);
	tcase_add_test(tc, test_routing_three_stages);
	tcase_add_test(tc, test_threads);
	tcase_add_test(tc, test_new_checks);
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_thresholds_exact);
	tcase_add_test(tc, test_corrupt_files);
	tcase_add_test(tc, test_measure);
	tcase_add_test(tc, test_command);
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
