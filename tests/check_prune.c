// SPDX-License-Identifier: MIT
/*
 * check_prune.c - the prune pass through the host, as a user runs it: each
 * case writes a pipeline beside a tiny IDX data set and model files of its
 * own, runs it with mc_pipeline_load/mc_pipeline_run (passes from
 * MCOMP_PASS_PATH), and checks the saved model against references computed
 * here: exact sparsity per layer and globally, masks held bit for bit
 * through fine-tuning, the gradual schedule against Zhu & Gupta's formula,
 * the polynomial one against TF-MOT's PolynomialDecay,
 * structured removal equal to the masked dense model (across residual adds
 * too), N:M in every group,
 * sensitivity output, fine-tuning with grad_groups (one group the bytes
 * of no groups, four the same bytes on 1 and 2 threads, masks held), and
 * parameters refused at validation with a place.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <omp.h>

#include <mcomp/mcomp.h>

#include "tiny_data.h"

/* An MLP 64-32-16-4 and a CNN with batch norm, over [1, 8, 8]. */
static const char *mlp_arch = TINY_MLP_ARCH;

static const char *cnn_arch =
    "{\"format\": 1, \"input\": [1, 8, 8], \"nodes\": ["
    "{\"name\": \"c1\", \"op\": \"conv2d\", \"inputs\": [\"input\"], "
    "\"attrs\": {\"out\": 6, \"kernel\": 3, \"padding\": 1}},"
    "{\"name\": \"bn1\", \"op\": \"batchnorm\", \"inputs\": [\"c1\"], \"attrs\": {}},"
    "{\"name\": \"r1\", \"op\": \"relu\", \"inputs\": [\"bn1\"], \"attrs\": {}},"
    "{\"name\": \"p1\", \"op\": \"maxpool2d\", \"inputs\": [\"r1\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"c2\", \"op\": \"conv2d\", \"inputs\": [\"p1\"], "
    "\"attrs\": {\"out\": 8, \"kernel\": 3, \"padding\": 1}},"
    "{\"name\": \"r2\", \"op\": \"relu\", \"inputs\": [\"c2\"], \"attrs\": {}},"
    "{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"r2\"], \"attrs\": {}},"
    "{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"flat\"], \"attrs\": {\"out\": 12}},"
    "{\"name\": \"r3\", \"op\": \"relu\", \"inputs\": [\"fc1\"], \"attrs\": {}},"
    "{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"r3\"], \"attrs\": {\"out\": 4}}]}";

/* The MobileNet activations between layers: each keeps channel c as channel c. */
static const char *act_arch =
    "{\"format\": 1, \"input\": [1, 8, 8], \"nodes\": ["
    "{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"input\"], \"attrs\": {}},"
    "{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"flat\"], \"attrs\": {\"out\": 16}},"
    "{\"name\": \"a1\", \"op\": \"relu6\", \"inputs\": [\"fc1\"], \"attrs\": {}},"
    "{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"a1\"], \"attrs\": {\"out\": 16}},"
    "{\"name\": \"a2\", \"op\": \"hardswish\", \"inputs\": [\"fc2\"], \"attrs\": {}},"
    "{\"name\": \"fc3\", \"op\": \"linear\", \"inputs\": [\"a2\"], \"attrs\": {\"out\": 16}},"
    "{\"name\": \"a3\", \"op\": \"leaky_relu\", \"inputs\": [\"fc3\"], \"attrs\": {}},"
    "{\"name\": \"fc4\", \"op\": \"linear\", \"inputs\": [\"a3\"], \"attrs\": {\"out\": 4}}]}";

static struct mc_model *build(const char *arch, uint64_t seed)
{
	struct mc_err err = { 0 };
	struct mc_model *m = mc_model_from_arch(arch, "test", &err);

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, seed);
	return m;
}

static void save_model(const char *arch, const char *name, uint64_t seed)
{
	struct mc_model *m = build(arch, seed);
	struct mc_err err = { 0 };

	ck_assert_msg(mc_model_save(m, spath(name), &err) == 0, "%s", err.msg);
	mc_model_free(m);
}

static struct mc_model *load(const char *name)
{
	struct mc_err err = { 0 };
	struct mc_model *m = mc_model_load(spath(name), &err);

	ck_assert_msg(m != NULL, "%s", err.msg);
	return m;
}

static void setup(void)
{
	static const char *const passes[] = { "prune", NULL };

	tiny_setup("prune", passes);
	save_model(mlp_arch, "mlp.safetensors", 3);
	save_model(cnn_arch, "cnn.safetensors", 4);
	save_model(act_arch, "act.safetensors", 5);
}

/*
 * Writes p.yaml: the tiny splits, model 'm' loaded from model_file, and one
 * prune pass whose parameter lines are params (each "key: value" on its own
 * line, starting at line 9); output to out.safetensors. Loads and, when
 * run is set, runs it. Returns 0 or the error code with err filled.
 */
static int pipeline(const char *model_file, const char *params, int run, struct mc_err *err)
{
	char text[8192];

	PATHF(text,
	      "mcomp: 1\n"
	      "seed: 5\n"
	      "data:\n"
	      "  train: {idx: train}\n"
	      "  test: {idx: test}\n"
	      "models:\n"
	      "  m: {load: %s}\n"
	      "passes:\n"
	      "  - prune:\n"
	      "%s"
	      "output: {model: m, path: out.safetensors}\n",
	      model_file, params);
	return tiny_pipeline(reg, text, run, err);
}

static void run_ok(const char *model_file, const char *params)
{
	struct mc_err err = { 0 };

	ck_assert_msg(pipeline(model_file, params, 1, &err) == 0, "%s", err.msg);
}

static int64_t zeros(const struct mc_tensor *t)
{
	const uint32_t *b = t->data;
	int64_t z = 0;

	for (int64_t i = 0; i < t->numel; i++)
		z += b[i] == 0; /* +0.0 exactly */
	return z;
}

static const float *W(const struct mc_model *m, const char *name)
{
	struct mc_tensor *t = mc_model_param(m, name);

	ck_assert_msg(t != NULL, "no parameter %s", name);
	return t->data;
}

/* The pruned weights of new are the smallest of old: max pruned <= min kept;
 * kept weights are unchanged (no fine-tuning). */
static void assert_smallest(const struct mc_tensor *old, const struct mc_tensor *new, float *maxp,
			    float *mink)
{
	const float *a = old->data, *b = new->data;

	for (int64_t i = 0; i < old->numel; i++) {
		if (b[i] == 0.0f) {
			*maxp = fmaxf(*maxp, fabsf(a[i]));
		} else {
			ck_assert(b[i] == a[i]);
			*mink = fminf(*mink, fabsf(a[i]));
		}
	}
}

START_TEST(test_per_layer_exact)
{
	static const char *names[] = { "fc1.weight", "fc2.weight", "fc3.weight" };
	/* The mapping, its older spelling as "NAME=S" strings, and a glob after
	 * a name (the first match wins): the same targets. */
	static const char *overrides[] = {
		"      sparsity: 0.7\n      overrides: {fc3: 0.25}\n",
		"      sparsity: 0.7\n      overrides: [\"fc3=0.25\"]\n",
		"      sparsity: 0.1\n      overrides: {fc3: 0.25, \"fc*\": 0.7}\n",
	};
	const double want[] = { 0.7, 0.7, 0.25 };
	struct mc_model *a = load("mlp.safetensors"), *b = NULL;
	char params[512];

	for (size_t k = 0; k < sizeof(overrides) / sizeof(overrides[0]); k++) {
		PATHF(params, "      model: m\n%s", overrides[k]);
		run_ok("mlp.safetensors", params);
		mc_model_free(b);
		b = load("out.safetensors");
		for (int i = 0; i < 3; i++) {
			const struct mc_tensor *t = mc_model_param(b, names[i]);
			float maxp = 0, mink = INFINITY;

			ck_assert_msg(zeros(t) == llround(want[i] * (double)t->numel),
				      "%s: %s has %lld zeros", overrides[k], names[i],
				      (long long)zeros(t));
			assert_smallest(mc_model_param(a, names[i]), t, &maxp, &mink);
			ck_assert_float_le(maxp, mink);
		}
	}
	/* biases are not pruned */
	ck_assert_int_eq(zeros(mc_model_param(b, "fc1.bias")), zeros(mc_model_param(a, "fc1.bias")));
	mc_model_free(a);
	mc_model_free(b);
}
END_TEST

START_TEST(test_global_exact)
{
	static const char *names[] = { "fc1.weight", "fc2.weight", "fc3.weight" };
	struct mc_model *a = load("mlp.safetensors"), *b;
	int64_t z = 0, total = 0, zmin = INT64_MAX, zmax = 0;
	float maxp = 0, mink = INFINITY;

	run_ok("mlp.safetensors", "      model: m\n"
				  "      scope: global\n"
				  "      sparsity: 0.8\n"
				  "      exclude: [\"fc3\"]\n");
	b = load("out.safetensors");
	for (int i = 0; i < 2; i++) {
		const struct mc_tensor *t = mc_model_param(b, names[i]);
		double s = (double)zeros(t) / (double)t->numel;

		z += zeros(t);
		total += t->numel;
		zmin = s * 1000 < zmin ? (int64_t)(s * 1000) : zmin;
		zmax = s * 1000 > zmax ? (int64_t)(s * 1000) : zmax;
		assert_smallest(mc_model_param(a, names[i]), t, &maxp, &mink);
	}
	ck_assert_int_eq(z, llround(0.8 * (double)total));
	ck_assert_float_le(maxp, mink); /* one threshold across layers */
	ck_assert_int_ne(zmin, zmax);	/* and not the same sparsity in each */
	ck_assert_int_eq(zeros(mc_model_param(b, "fc3.weight")), 0); /* excluded */
	mc_model_free(a);
	mc_model_free(b);
}
END_TEST

START_TEST(test_masks_survive_finetune)
{
	static const char *names[] = { "fc1.weight", "fc2.weight", "fc3.weight" };
	struct mc_model *once, *tuned;
	int changed = 0;

	run_ok("mlp.safetensors", "      model: m\n"
				  "      sparsity: 0.6\n");
	once = load("out.safetensors");
	run_ok("mlp.safetensors", "      model: m\n"
				  "      sparsity: 0.6\n"
				  "      finetune_epochs: 3\n"
				  "      batch_size: 16\n"
				  "      optimizer: sgd\n"
				  "      lr: 0.05\n");
	tuned = load("out.safetensors");
	for (int i = 0; i < 3; i++) {
		const struct mc_tensor *x = mc_model_param(once, names[i]),
				       *y = mc_model_param(tuned, names[i]);
		const uint32_t *bx = x->data, *by = y->data;

		for (int64_t k = 0; k < x->numel; k++) {
			if (bx[k] == 0)
				ck_assert_msg(by[k] == 0, "%s[%lld] came back as %a", names[i],
					      (long long)k, (double)((const float *)y->data)[k]);
			else
				changed += bx[k] != by[k];
		}
	}
	ck_assert_int_gt(changed, 100); /* fine-tuning did move the kept weights */
	mc_model_free(once);
	mc_model_free(tuned);
}
END_TEST

/* Fine-tuning in groups: grad_groups 1 is the ungrouped arithmetic (the MLP
 * has no batch norm); 4 groups give the same bytes on 1 and 2 threads, and
 * keep every pruned weight +0.0. */
START_TEST(test_grouped_finetune)
{
	static const char params[] = "      model: m\n"
				     "      sparsity: 0.6\n"
				     "      finetune_epochs: 2\n"
				     "      batch_size: 16\n"
				     "      lr: 0.01\n";
	char p[512];
	int saved = omp_get_max_threads();
	struct mc_model *once, *tuned;
	const struct mc_tensor *x, *y;

	run_ok("mlp.safetensors", params);
	ck_assert_int_eq(rename(spath("out.safetensors"), spath("plain.safetensors")), 0);
	snprintf(p, sizeof(p), "%s      grad_groups: 1\n", params);
	run_ok("mlp.safetensors", p);
	assert_same_file(spath("plain.safetensors"), spath("out.safetensors"),
			 "grad_groups 1 differs from fine-tuning without groups");
	snprintf(p, sizeof(p), "%s      grad_groups: 4\n", params);
	omp_set_num_threads(1);
	run_ok("mlp.safetensors", p);
	ck_assert_int_eq(rename(spath("out.safetensors"), spath("out1.safetensors")), 0);
	omp_set_num_threads(2);
	run_ok("mlp.safetensors", p);
	omp_set_num_threads(saved);
	assert_same_file(spath("out1.safetensors"), spath("out.safetensors"),
			 "grad_groups 4: 1 thread differs from 2");
	once = load("plain.safetensors");
	tuned = load("out.safetensors");
	x = mc_model_param(once, "fc1.weight");
	y = mc_model_param(tuned, "fc1.weight");
	for (int64_t k = 0; k < x->numel; k++)
		if (((const uint32_t *)x->data)[k] == 0)
			ck_assert_msg(((const uint32_t *)y->data)[k] == 0, "fc1.weight[%lld] came back",
				      (long long)k);
	ck_assert_int_ne(memcmp(x->data, y->data, (size_t)x->numel * 4), 0);
	mc_model_free(once);
	mc_model_free(tuned);
}
END_TEST

/* Zhu & Gupta, written out independently of the pass. */
static double zhu_gupta(double si, double sf, double t, double t0, double n_dt)
{
	return sf + (si - sf) * pow(1 - (t - t0) / n_dt, 3);
}

START_TEST(test_gradual_formula)
{
	/* 128 samples at batch 16: 8 steps an epoch. Each case stops the run
	 * at a known last update t, so the model's sparsity is s(t). */
	static const struct {
		const char *unit;
		int end, freq, epochs;
		double t_last, t_end;
	} cases[] = {
		{ "step", 20, 3, 1, 6, 20 },   /* updates at 0, 3, 6 */
		{ "step", 10, 4, 1, 8, 10 },   /* 0, 4, 8 */
		{ "step", 7, 5, 1, 7, 7 },     /* 0, 5, 7 (end): the final sparsity */
		{ "epoch", 4, 1, 2, 16, 32 },  /* 0, 8, 16 */
	};
	char params[1024];

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		double s = zhu_gupta(0.2, 0.8, cases[c].t_last, 0, cases[c].t_end);
		struct mc_model *b;

		PATHF(params,
		      "      model: m\n"
		      "      sparsity: 0.8\n"
		      "      schedule: gradual\n"
		      "      initial_sparsity: 0.2\n"
		      "      unit: %s\n"
		      "      end: %d\n"
		      "      frequency: %d\n"
		      "      finetune_epochs: %d\n"
		      "      batch_size: 16\n",
		      cases[c].unit, cases[c].end, cases[c].freq, cases[c].epochs);
		run_ok("mlp.safetensors", params);
		b = load("out.safetensors");
		for (int i = 0; i < mc_model_n_nodes(b); i++) {
			const struct mc_tensor *w;

			if (strcmp(mc_model_node(b, i)->op->name, "linear"))
				continue;
			w = mc_model_node(b, i)->params[0];
			ck_assert_msg(zeros(w) == llround(s * (double)w->numel),
				      "case %zu, %s: %lld zeros, want %lld (s = %.6f)", c,
				      mc_model_node(b, i)->name, (long long)zeros(w),
				      llround(s * (double)w->numel), s);
		}
		mc_model_free(b);
	}
}
END_TEST

/* TF-MOT's PolynomialDecay, written out independently of the pass:
 * p = clamp((t - begin) / (end - begin), 0, 1), s = sf + (si - sf) (1 - p)^power;
 * a layer keeps max(round_half_even(numel (1 - s)), 1) weights. */
static int64_t tfmot_pruned(double si, double sf, double power, double t, double end,
			    int64_t numel)
{
	double p = fmin(1, fmax(0, t / end)), s = sf + (si - sf) * pow(1 - p, power);
	double x = (double)numel * (1 - s), k = floor(x);

	if (x - k > 0.5 || (x - k == 0.5 && fmod(k, 2) != 0))
		k += 1;
	return numel - (k < 1 ? 1 : (int64_t)k);
}

START_TEST(test_polynomial_schedule)
{
	/* 8 steps an epoch; the last update is at t_last: TF-MOT prunes only on
	 * the frequency grid, so with end 7 and frequency 5 the last is at 5
	 * (gradual would add one at 7), and with end 20 over 16 steps at 15. */
	static const struct {
		int end, freq, epochs;
		double t_last;
	} cases[] = {
		{ 20, 3, 2, 15 },
		{ 7, 5, 1, 5 },
		{ 4, 2, 1, 4 }, /* the end on the grid: the final sparsity */
	};
	char params[1024];

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		struct mc_model *b;

		PATHF(params,
		      "      model: m\n"
		      "      sparsity: 0.8\n"
		      "      schedule: polynomial\n"
		      "      initial_sparsity: 0.2\n"
		      "      power: 2\n"
		      "      end: %d\n"
		      "      frequency: %d\n"
		      "      finetune_epochs: %d\n"
		      "      batch_size: 16\n",
		      cases[c].end, cases[c].freq, cases[c].epochs);
		run_ok("mlp.safetensors", params);
		b = load("out.safetensors");
		for (int i = 0; i < mc_model_n_nodes(b); i++) {
			const struct mc_tensor *w;
			int64_t want;

			if (strcmp(mc_model_node(b, i)->op->name, "linear"))
				continue;
			w = mc_model_node(b, i)->params[0];
			want = tfmot_pruned(0.2, 0.8, 2, cases[c].t_last, cases[c].end, w->numel);
			ck_assert_msg(zeros(w) == want, "case %zu, %s: %lld zeros, want %lld", c,
				      mc_model_node(b, i)->name, (long long)zeros(w),
				      (long long)want);
		}
		mc_model_free(b);
	}
}
END_TEST

/* Zeroes the units of layer wname (and its bias, and any per-channel params
 * listed) that the reference L1 ranking drops; keep[] gets the kept flags. */
static void mask_units(struct mc_model *m, const char *layer, double s, const char *const *chan,
		       uint8_t *keep)
{
	char name[128];
	struct mc_tensor *w;
	int64_t out, per, drop;
	double *norm;

	snprintf(name, sizeof(name), "%s.weight", layer);
	w = mc_model_param(m, name);
	out = w->shape[0];
	per = w->numel / out;
	drop = llround(s * (double)out);
	norm = calloc((size_t)out, sizeof(double));
	for (int64_t o = 0; o < out; o++)
		for (int64_t k = 0; k < per; k++)
			norm[o] += fabs(((float *)w->data)[o * per + k]);
	for (int64_t o = 0; o < out; o++) {
		int64_t below = 0;

		for (int64_t q = 0; q < out; q++)
			below += norm[q] < norm[o] || (norm[q] == norm[o] && q > o);
		keep[o] = below >= drop;
	}
	for (int64_t o = 0; o < out; o++) {
		if (keep[o])
			continue;
		memset((float *)w->data + o * per, 0, (size_t)per * sizeof(float));
		snprintf(name, sizeof(name), "%s.bias", layer);
		((float *)mc_model_param(m, name)->data)[o] = 0;
		for (int c = 0; chan && chan[c]; c++)
			((float *)mc_model_param(m, chan[c])->data)[o] = 0;
	}
	free(norm);
}

/* Outputs of a and b on the test images agree within tol. */
static void assert_same_function(const struct mc_model *a, const struct mc_model *b)
{
	struct mc_err err = { 0 };
	char prefix[4200];
	struct mc_dataset *d;
	struct mc_exec *ea, *eb;
	const float *ya, *yb;

	PATHF(prefix, "%s", spath("test"));
	d = mc_idx_load_prefix(prefix, &err);
	ck_assert_msg(d != NULL, "%s", err.msg);
	ea = mc_exec_new(a, N_TEST, 0, &err);
	eb = mc_exec_new(b, N_TEST, 0, &err);
	ck_assert(ea && eb);
	ya = mc_forward(ea, d->x, N_TEST);
	yb = mc_forward(eb, d->x, N_TEST);
	for (int i = 0; i < N_TEST * (int)mc_model_n_classes(a); i++)
		ck_assert_msg(fabsf(ya[i] - yb[i]) <= 1e-5f * (1 + fabsf(ya[i])),
			      "output %d: pruned %g, masked dense %g", i, yb[i], ya[i]);
	mc_exec_free(ea);
	mc_exec_free(eb);
	mc_dataset_free(d);
}

START_TEST(test_structured_mlp)
{
	struct mc_model *masked = load("mlp.safetensors"), *p;
	uint8_t k1[32], k2[16];

	run_ok("mlp.safetensors", "      model: m\n"
				  "      method: structured\n"
				  "      sparsity: 0.5\n"
				  "      overrides: [\"fc2=0.25\"]\n");
	p = load("out.safetensors");
	ck_assert_int_eq(mc_model_param(p, "fc1.weight")->shape[0], 16);
	ck_assert_int_eq(mc_model_param(p, "fc2.weight")->shape[0], 12);
	ck_assert_int_eq(mc_model_param(p, "fc2.weight")->shape[1], 16);
	ck_assert_int_eq(mc_model_param(p, "fc3.weight")->shape[0], 4); /* the classifier stays */
	ck_assert_int_eq(mc_model_param(p, "fc3.weight")->shape[1], 12);
	mask_units(masked, "fc1", 0.5, NULL, k1);
	mask_units(masked, "fc2", 0.25, NULL, k2);
	assert_same_function(masked, p);
	mc_model_free(masked);
	mc_model_free(p);
}
END_TEST

START_TEST(test_structured_cnn)
{
	static const char *const bn[] = { "bn1.weight", "bn1.bias", NULL };
	struct mc_model *masked = load("cnn.safetensors"), *p;
	uint8_t k1[6], k2[8], k3[12];

	run_ok("cnn.safetensors", "      model: m\n"
				  "      method: structured\n"
				  "      sparsity: 0.5\n");
	p = load("out.safetensors");
	ck_assert_int_eq(mc_model_param(p, "c1.weight")->shape[0], 3);
	ck_assert_int_eq(mc_model_param(p, "bn1.running_var")->shape[0], 3);
	ck_assert_int_eq(mc_model_param(p, "c2.weight")->shape[0], 4);
	ck_assert_int_eq(mc_model_param(p, "c2.weight")->shape[1], 3);
	ck_assert_int_eq(mc_model_param(p, "fc1.weight")->shape[0], 6);
	ck_assert_int_eq(mc_model_param(p, "fc1.weight")->shape[1], 4 * 4 * 4);
	ck_assert_int_eq(mc_model_param(p, "fc2.weight")->shape[1], 6);
	mask_units(masked, "c1", 0.5, bn, k1);
	mask_units(masked, "c2", 0.5, NULL, k2);
	mask_units(masked, "fc1", 0.5, NULL, k3);
	assert_same_function(masked, p);
	mc_model_free(masked);
	mc_model_free(p);
}
END_TEST

/* Units feeding relu6, hardswish and leaky_relu are removed like those feeding relu. */
START_TEST(test_structured_through_activations)
{
	struct mc_model *masked = load("act.safetensors"), *p;
	uint8_t k[16];

	run_ok("act.safetensors", "      model: m\n"
				  "      method: structured\n"
				  "      sparsity: 0.25\n");
	p = load("out.safetensors");
	ck_assert_int_eq(mc_model_param(p, "fc1.weight")->shape[0], 12);
	ck_assert_int_eq(mc_model_param(p, "fc2.weight")->shape[0], 12);
	ck_assert_int_eq(mc_model_param(p, "fc3.weight")->shape[0], 12);
	ck_assert_int_eq(mc_model_param(p, "fc4.weight")->shape[1], 12);
	/* each activation maps 0 to 0, so zeroed units compute what removed ones do */
	mask_units(masked, "fc1", 0.25, NULL, k);
	mask_units(masked, "fc2", 0.25, NULL, k);
	mask_units(masked, "fc3", 0.25, NULL, k);
	assert_same_function(masked, p);
	mc_model_free(masked);
	mc_model_free(p);
}
END_TEST

/* A residual model written with blocks: an inverted residual on the model
 * input (its add reads the input, so its projection stays whole), a stem,
 * two inverted residuals whose adds tie the stem and both projections, and
 * a stride-2 block without a skip. */
static const char *res_blocks =
	"blocks:\n"
	"  ir:\n"
	"    params: {out: int, expansion: 2, stride: 1}\n"
	"    layers:\n"
	"      - {conv2d: {out: $in * $expansion, kernel: 1, bias: false}, name: expand}\n"
	"      - {batchnorm: {}, name: expand_bn}\n"
	"      - {relu6: {}, name: expand_relu}\n"
	"      - {conv2d: {out: $in * $expansion, groups: $in * $expansion, stride: $stride, "
	"padding: 1, bias: false}, name: dw}\n"
	"      - {batchnorm: {}, name: dw_bn}\n"
	"      - {relu6: {}, name: dw_relu}\n"
	"      - {conv2d: {out: $out, kernel: 1, bias: false}, name: project}\n"
	"      - {batchnorm: {}, name: project_bn}\n"
	"      - {add: {}, inputs: [project_bn, input], name: residual, "
	"when: $stride == 1 && $in == $out}\n"
	"models:\n"
	"  m:\n"
	"    build:\n"
	"      input: [1, 8, 8]\n"
	"      layers:\n"
	"        - {ir: {out: 1, expansion: 4}, name: b0}\n"
	"        - {conv2d: {out: 8, padding: 1, bias: false}, name: stem}\n"
	"        - {batchnorm: {}, name: stem_bn}\n"
	"        - {relu6: {}, name: stem_relu}\n"
	"        - {ir: {out: 8}, repeat: 2, name: s}\n"
	"        - {ir: {out: 12, stride: 2}, name: down}\n"
	"        - {global_avgpool: {}, name: pool}\n"
	"        - {linear: 4, name: fc}\n";

struct logbuf {
	char text[16384];
	size_t len;
};

static void keep_log(void *arg, int level, const char *pass, const char *msg)
{
	struct logbuf *b = arg;

	(void)level;
	b->len += (size_t)snprintf(b->text + b->len, sizeof(b->text) - b->len, "%s: %s\n",
				   pass ? pass : "", msg);
	if (b->len >= sizeof(b->text))
		b->len = sizeof(b->text) - 1;
}

static void run_logged(const char *text, struct logbuf *log)
{
	struct mc_err err = { 0 };
	struct mc_pipeline *p;

	write_file(spath("p.yaml"), text, strlen(text));
	p = mc_pipeline_load(spath("p.yaml"), NULL, 0, reg, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	memset(log, 0, sizeof(*log));
	mc_pipeline_set_log(p, keep_log, log);
	ck_assert_msg(mc_pipeline_run(p, NULL, &err) == 0, "%s", err.msg);
	mc_pipeline_free(p);
}

/* Per-channel parameters that a removed channel's reference zeroes. */
static void zero_channel(struct mc_model *m, const char *node, const char *what, int64_t c)
{
	char name[128];

	snprintf(name, sizeof(name), "%s.%s", node, what);
	((float *)mc_model_param(m, name)->data)[c] = 0;
}

/* The reference of a structured removal: in the dense model, layer rows of
 * the units ranked lowest (jointly: L1 over all layers of the group) are
 * zeroed, and so are gamma and beta of every batch norm carrying those
 * channels, so that the removed channels are zero wherever they flow. */
static void mask_group(struct mc_model *m, const char *const *layers, const char *const *bns,
		       double s, int64_t *kept)
{
	const struct mc_tensor *w0 = NULL;
	int64_t out, drop;
	double norm[256] = { 0 };

	for (int l = 0; layers[l]; l++) {
		char name[128];
		const struct mc_tensor *w;
		int64_t per;

		snprintf(name, sizeof(name), "%s.weight", layers[l]);
		w = mc_model_param(m, name);
		w0 = w0 ? w0 : w;
		per = w->numel / w->shape[0];
		for (int64_t o = 0; o < w->shape[0]; o++)
			for (int64_t k = 0; k < per; k++)
				norm[o] += fabs(((const float *)w->data)[o * per + k]);
	}
	out = w0->shape[0];
	drop = llround(s * (double)out);
	*kept = out - drop;
	for (int64_t o = 0; o < out; o++) {
		int64_t below = 0;

		for (int64_t q = 0; q < out; q++)
			below += norm[q] < norm[o] || (norm[q] == norm[o] && q > o);
		if (below >= drop)
			continue;
		for (int l = 0; layers[l]; l++) {
			char name[128];
			struct mc_tensor *w;
			int64_t per;

			snprintf(name, sizeof(name), "%s.weight", layers[l]);
			w = mc_model_param(m, name);
			per = w->numel / w->shape[0];
			memset((float *)w->data + o * per, 0, (size_t)per * sizeof(float));
		}
		for (int b = 0; bns[b]; b++) {
			zero_channel(m, bns[b], "weight", o);
			zero_channel(m, bns[b], "bias", o);
		}
	}
}

/* Batch norms with statistics and affine parameters of their own, so that a
 * channel gathered from the wrong place shows. */
static void shake_batchnorms(struct mc_model *m)
{
	uint32_t x = 12345;

	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		if (strcmp(nd->op->name, "batchnorm"))
			continue;
		for (int p = 0; p < nd->n_params; p++) {
			float *v = nd->params[p]->data;

			for (int64_t k = 0; k < nd->params[p]->numel; k++) {
				x = x * 1664525u + 1013904223u;
				/* (0.5, 1.5) for every one: positive variances, gammas off 1 */
				v[k] = 0.5f + (float)(x >> 8) / 16777216.0f;
				if (p == 1 || p == 2)
					v[k] -= 1.0f; /* beta and mean around 0 */
			}
		}
	}
}

START_TEST(test_structured_residual)
{
	static const char *const grp[] = { "stem", "s.1.project", "s.2.project", NULL };
	static const char *const grp_bn[] = { "stem_bn", "s.1.project_bn", "s.2.project_bn", NULL };
	static const struct {
		const char *layer, *bn1, *bn2;
	} alone[] = {
		{ "b0.expand", "b0.expand_bn", "b0.dw_bn" },
		{ "s.1.expand", "s.1.expand_bn", "s.1.dw_bn" },
		{ "s.2.expand", "s.2.expand_bn", "s.2.dw_bn" },
		{ "down.expand", "down.expand_bn", "down.dw_bn" },
		{ "down.project", "down.project_bn", NULL },
	};
	struct mc_model *masked, *p;
	struct mc_err err = { 0 };
	struct logbuf log;
	char text[8192];
	int64_t kept;

	/* the dense model as built, then its batch norms made distinct */
	PATHF(text,
	      "mcomp: 1\nseed: 3\ndata:\n  train: {idx: train}\n  test: {idx: test}\n%s"
	      "passes: []\noutput: {model: m, path: dense.safetensors}\n",
	      res_blocks);
	run_logged(text, &log);
	masked = load("dense.safetensors");
	shake_batchnorms(masked);
	ck_assert_msg(mc_model_save(masked, spath("dense.safetensors"), &err) == 0, "%s", err.msg);

	PATHF(text,
	      "mcomp: 1\nseed: 3\ndata:\n  train: {idx: train}\n  test: {idx: test}\n"
	      "models:\n  m: {load: dense.safetensors}\n"
	      "passes:\n  - prune: {model: m, method: structured, sparsity: 0.5}\n"
	      "output: {model: m, path: out.safetensors}\n");
	run_logged(text, &log);
	ck_assert_msg(strstr(log.text, "stem, s.1.project, s.2.project: tied through add "
					"'s.1.residual', 's.2.residual', pruned together"),
		      "%s", log.text);
	ck_assert_msg(strstr(log.text, "b0.project: kept whole: add 'b0.residual' also reads "
					"the model input"),
		      "%s", log.text);
	ck_assert_msg(strstr(log.text, "b0.dw: kept whole: it is a depthwise convolution"), "%s",
		      log.text);
	p = load("out.safetensors");

	/* shapes: the group and each expansion at half width, everything that
	 * reads them (depthwise filters, batch norms, consumers) along */
	mask_group(masked, grp, grp_bn, 0.5, &kept);
	ck_assert_int_eq(kept, 4);
	for (int l = 0; grp[l]; l++) {
		char name[128];

		snprintf(name, sizeof(name), "%s.weight", grp[l]);
		ck_assert_int_eq(mc_model_param(p, name)->shape[0], 4);
		snprintf(name, sizeof(name), "%s.running_var", grp_bn[l]);
		ck_assert_int_eq(mc_model_param(p, name)->shape[0], 4);
	}
	ck_assert_int_eq(mc_model_param(p, "b0.project.weight")->shape[0], 1); /* whole */
	ck_assert_int_eq(mc_model_param(p, "stem.weight")->shape[1], 1);
	ck_assert_int_eq(mc_model_param(p, "s.1.expand.weight")->shape[0], 8);
	ck_assert_int_eq(mc_model_param(p, "s.1.expand.weight")->shape[1], 4);
	ck_assert_int_eq(mc_model_param(p, "s.1.dw.weight")->shape[0], 8);
	ck_assert_int_eq(mc_model_param(p, "s.1.dw.weight")->shape[1], 1);
	ck_assert_int_eq(mc_node_attr_int(mc_model_node(p, mc_model_find(p, "s.1.dw")), "groups",
					  0), 8);
	ck_assert_int_eq(mc_model_param(p, "s.1.project.weight")->shape[1], 8);
	ck_assert_int_eq(mc_model_param(p, "down.expand.weight")->shape[1], 4);
	ck_assert_int_eq(mc_model_param(p, "down.project.weight")->shape[0], 6);
	ck_assert_int_eq(mc_model_param(p, "fc.weight")->shape[1], 6);
	ck_assert_int_eq(mc_model_param(p, "fc.weight")->shape[0], 4);
	for (size_t k = 0; k < sizeof(alone) / sizeof(alone[0]); k++) {
		const char *const one[] = { alone[k].layer, NULL };
		const char *const bns[] = { alone[k].bn1, alone[k].bn2, NULL };
		char name[128];

		mask_group(masked, one, bns, 0.5, &kept);
		snprintf(name, sizeof(name), "%s.weight", alone[k].layer);
		ck_assert_int_eq(mc_model_param(p, name)->shape[0], kept);
	}
	/* and the same function as the dense model with those channels zeroed */
	assert_same_function(masked, p);
	mc_model_free(masked);
	mc_model_free(p);
}
END_TEST

START_TEST(test_nm_pattern)
{
	static const int nm[][2] = { { 2, 4 }, { 4, 8 }, { 1, 4 } };
	char params[512];

	for (int c = 0; c < 3; c++) {
		struct mc_model *a = load("mlp.safetensors"), *b;
		int N = nm[c][0], M = nm[c][1];

		PATHF(params, "      model: m\n      method: \"n:m\"\n      nm: \"%d:%d\"\n", N, M);
		run_ok("mlp.safetensors", params);
		b = load("out.safetensors");
		for (int i = 0; i < mc_model_n_nodes(b); i++) {
			const struct mc_tensor *w = mc_model_node(b, i)->params[0], *w0;
			const float *x, *x0;

			if (strcmp(mc_model_node(b, i)->op->name, "linear"))
				continue;
			w0 = mc_model_node(a, i)->params[0];
			x = w->data;
			x0 = w0->data;
			for (int64_t g = 0; g < w->numel; g += M) {
				int kept = 0;
				float minkept = INFINITY, maxgone = 0;

				for (int k = 0; k < M; k++) {
					if (x[g + k] != 0.0f) {
						kept++;
						minkept = fminf(minkept, fabsf(x0[g + k]));
					} else {
						maxgone = fmaxf(maxgone, fabsf(x0[g + k]));
					}
				}
				ck_assert_int_eq(kept, N);
				ck_assert_float_le(maxgone, minkept);
			}
		}
		mc_model_free(a);
		mc_model_free(b);
	}
}
END_TEST

START_TEST(test_sensitivity)
{
	struct mc_model *a = load("mlp.safetensors"), *b;
	char *svg = NULL, *s;
	size_t len = 0;
	struct mc_err err = { 0 };
	int lines = 0;

	run_ok("mlp.safetensors", "      model: m\n"
				  "      mode: sensitivity\n"
				  "      eval_data: test\n"
				  "      levels: [0.5, 0.9]\n"
				  "      plot: plot.svg\n");
	ck_assert_msg(mc_read_file(spath("plot.svg"), 1 << 20, (void **)&svg, &len, &err) == 0,
		      "%s", err.msg);
	svg = realloc(svg, len + 1);
	svg[len] = '\0';
	ck_assert_ptr_nonnull(strstr(svg, "<svg"));
	ck_assert_ptr_nonnull(strstr(svg, "</svg>"));
	for (s = svg; (s = strstr(s, "<polyline")); s++)
		lines++;
	ck_assert_int_eq(lines, 3); /* one per layer */
	ck_assert_ptr_nonnull(strstr(svg, ">fc2<"));
	free(svg);
	b = load("out.safetensors"); /* the model is left as it was */
	ck_assert_int_eq(memcmp(W(a, "fc1.weight"), W(b, "fc1.weight"), 32 * 64 * 4), 0);
	mc_model_free(a);
	mc_model_free(b);
}
END_TEST

/* The params fail validation (not at run time) at line:col of key. */
static void expect_refused(const char *params, int line, const char *want)
{
	struct mc_err err = { 0 };
	char place[4300];

	ck_assert_int_eq(pipeline("mlp.safetensors", params, 0, &err), MC_EINVAL);
	PATHF(place, "%s:%d:", spath("p.yaml"), line);
	ck_assert_msg(strstr(err.msg, place), "'%s' lacks the place '%s'", err.msg, place);
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
}

START_TEST(test_invalid_params)
{
	expect_refused("      model: m\n      sparsity: 1.5\n", 11, "sparsity");
	expect_refused("      model: m\n      method: \"n:m\"\n      nm: \"3:2\"\n", 12,
		       "'3:2' is not N:M");
	expect_refused("      model: m\n      overrides: [\"fc1=0.5\", \"fc9=0.5\"]\n", 11,
		       "no layer of model 'm' matches 'fc9'");
	expect_refused("      model: m\n      overrides: {fc1: 0.5, \"fc9*\": 0.5}\n", 11,
		       "no layer of model 'm' matches 'fc9*'");
	/* Each value is checked where it stands: the range excludes 1. */
	expect_refused("      model: m\n      overrides: [\"fc1=1.5\"]\n", 11,
		       ":11:19: pass 'prune': overrides: fc1: 1.5 is out of range [0, 1)");
	expect_refused("      model: m\n      overrides: {fc2: 0.5, fc1: 1}\n", 11,
		       ":11:34: pass 'prune': overrides: fc1: 1 is out of range [0, 1)");
	expect_refused("      model: m\n      overrides: {fc1: \"0.5\"}\n", 11,
		       "overrides: fc1: expected float in [0, 1), got the quoted string '0.5'");
	expect_refused("      model: m\n      overrides: [\"fc1\"]\n", 11,
		       "overrides: expected a mapping such as {fc1: 0.5}");
	expect_refused("      model: m\n      exclude: [\"nope*\"]\n", 11,
		       "no layer of model 'm' matches 'nope*'");
	expect_refused("      model: m\n      schedule: gradual\n", 9, "finetune_epochs");
	expect_refused("      model: m\n      finetune_epochs: 1\n      batch_size: 16\n"
		       "      grad_groups: 5\n", 13,
		       "grad_groups: 5 groups do not divide batch_size 16 into equal groups; set "
		       "grad_groups to a divisor of 16 (or batch_size to a multiple of 5)");
	expect_refused("      model: m\n      schedule: polynomial\n", 9, "finetune_epochs");
	expect_refused("      model: m\n      schedule: gradual\n      power: 2\n"
		       "      finetune_epochs: 1\n", 12, "power is the exponent of schedule: polynomial");
	expect_refused("      model: m\n      schedule: polynomial\n      power: 0\n"
		       "      finetune_epochs: 1\n", 12, "power");
	expect_refused("      model: m\n      mode: sensitivity\n      eval_data: train\n", 12,
		       "'train' is the training split");
	expect_refused("      model: m\n      method: structured\n      exclude: [\"fc1\", \"fc2\"]\n",
		       11, "no layer left to prune structurally");
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("prune");
	TCase *tc = tcase_create("pass");

	tcase_add_checked_fixture(tc, setup, tiny_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_per_layer_exact);
	tcase_add_test(tc, test_global_exact);
	tcase_add_test(tc, test_masks_survive_finetune);
	tcase_add_test(tc, test_grouped_finetune);
	tcase_add_test(tc, test_gradual_formula);
	tcase_add_test(tc, test_polynomial_schedule);
	tcase_add_test(tc, test_structured_mlp);
	tcase_add_test(tc, test_structured_through_activations);
	tcase_add_test(tc, test_structured_cnn);
	tcase_add_test(tc, test_structured_residual);
	tcase_add_test(tc, test_nm_pattern);
	tcase_add_test(tc, test_sensitivity);
	tcase_add_test(tc, test_invalid_params);
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
