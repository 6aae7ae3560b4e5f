// SPDX-License-Identifier: MIT
/*
 * check_quantize.c - quantization, from the rounding of one value to a
 * pipeline run: hand-computed scales, zero points, clamping and ties; the
 * fast weight quantizer against its reference bit for bit; 4-bit packing;
 * activation ranges on known distributions; the qlinear op against exact
 * references and the f32 layer within stated tolerances; quantized model
 * files (dtypes, round trip bit for bit); the quantize pass through the host
 * (passes from MCOMP_PASS_PATH) and its parameters refused at validation
 * with a place.
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

#include <mcomp/mcomp.h>

#include "tiny_data.h"

static const char *mlp_arch = TINY_MLP_ARCH;

static const char *cnn_arch =
    "{\"format\": 1, \"input\": [1, 8, 8], \"nodes\": ["
    "{\"name\": \"cv\", \"op\": \"conv2d\", \"inputs\": [\"input\"], "
    "\"attrs\": {\"out\": 6, \"padding\": 1}},"
    "{\"name\": \"act\", \"op\": \"relu\", \"inputs\": [\"cv\"], \"attrs\": {}},"
    "{\"name\": \"pool\", \"op\": \"maxpool2d\", \"inputs\": [\"act\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"pool\"], \"attrs\": {}},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"flat\"], \"attrs\": {\"out\": 4}}]}";

/* The CNN of cnn_arch after a static int8 quantize, without the relu fused. */
static const char *qcnn_unfused_arch =
    "{\"format\": 1, \"input\": [1, 8, 8], \"nodes\": ["
    "{\"name\": \"cv\", \"op\": \"qconv2d\", \"inputs\": [\"input\"], "
    "\"attrs\": {\"out\": 6, \"padding\": 1, \"mode\": \"static\"}},"
    "{\"name\": \"act\", \"op\": \"relu\", \"inputs\": [\"cv\"], \"attrs\": {}},"
    "{\"name\": \"pool\", \"op\": \"maxpool2d\", \"inputs\": [\"act\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"flat\", \"op\": \"flatten\", \"inputs\": [\"pool\"], \"attrs\": {}},"
    "{\"name\": \"fc\", \"op\": \"qlinear\", \"inputs\": [\"flat\"], "
    "\"attrs\": {\"out\": 4, \"mode\": \"static\"}}]}";

/* ---------------------------------------------------------------- helpers */

static float frand(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return (float)((*s >> 8) & 0xffff) / 65536.0f * 2.0f - 1.0f;
}

static void quant_ok(const float *w, int64_t r, int64_t c, struct mc_qspec s, int8_t *q,
		     float *scale, int8_t *zp)
{
	struct mc_err err = { 0 };

	ck_assert_msg(mc_quantize_weights_ref(w, r, c, &s, q, scale, zp, &err) == 0, "%s",
		      err.msg);
}

/* ---------------------------------------------------------------- quantizers */

START_TEST(test_hand_symmetric_int8)
{
	/* max |w| = 63.5: scale 0.5 exactly, so w / s is exact and ties are ties. */
	const float w[] = { 0.25f, 0.75f, 1.25f, -0.25f, -0.75f, 63.5f, -63.5f, 0.0f };
	const int8_t want[] = { 0, 2, 2, 0, -2, 127, -127, 0 };
	struct mc_qspec s = { .bits = 8, .asym = 0, .group = 0 };
	int8_t q[8];
	float scale;

	quant_ok(w, 1, 8, s, q, &scale, NULL);
	ck_assert_float_eq(scale, 0.5f);
	for (int i = 0; i < 8; i++)
		ck_assert_int_eq(q[i], want[i]);
}
END_TEST

START_TEST(test_hand_asymmetric_and_int4)
{
	/* int8 asymmetric over [-1, 3]: s = 4/255, z = -128 - rint(-63.75) = -64;
	 * -1 -> rint(-63.75) - 64 = -128, 3 -> rint(191.25) - 64 = 127 (the ends). */
	const float a[] = { -1.0f, 3.0f, 0.0f };
	/* int4 symmetric: max 7 -> s = 1; 3.5 -> 4, 0.5 -> 0, 1.5 -> 2, -2.5 -> -2 (ties even) */
	const float b[] = { 7.0f, -7.0f, 3.5f, 0.5f, 1.5f, -2.5f };
	const int8_t wb[] = { 7, -7, 4, 0, 2, -2 };
	struct mc_qspec s8 = { .bits = 8, .asym = 1, .group = 0 }, s4 = { .bits = 4 };
	int8_t q[8], zp;
	float scale;

	quant_ok(a, 1, 3, s8, q, &scale, &zp);
	ck_assert_float_eq(scale, 4.0f / 255.0f);
	ck_assert_int_eq(zp, -64);
	ck_assert_int_eq(q[0], -128);
	ck_assert_int_eq(q[1], 127);
	ck_assert_int_eq(q[2], -64); /* 0.0 exactly representable: q = z */
	quant_ok(b, 1, 6, s4, q, &scale, NULL);
	ck_assert_float_eq(scale, 1.0f);
	for (int i = 0; i < 6; i++)
		ck_assert_int_eq(q[i], wb[i]);
	/* int4 asymmetric over [0, 15]: s = 1, z = -8; 15 -> 7 (the top), all >= -8 */
	{
		const float c[] = { 0.0f, 15.0f, 7.5f, 8.5f };
		struct mc_qspec s = { .bits = 4, .asym = 1 };

		quant_ok(c, 1, 4, s, q, &scale, &zp);
		ck_assert_float_eq(scale, 1.0f);
		ck_assert_int_eq(zp, -8);
		ck_assert_int_eq(q[0], -8);
		ck_assert_int_eq(q[1], 7);
		ck_assert_int_eq(q[2], 0);  /* 7.5 -> 8 (even) - 8 */
		ck_assert_int_eq(q[3], 0);  /* 8.5 -> 8 (even) - 8 */
	}
}
END_TEST

START_TEST(test_per_channel_scale_formula)
{
	enum { R = 7, C = 40 };
	float w[R * C], scale[R];
	int8_t q[R * C];
	unsigned seed = 3;
	struct mc_qspec s = { .bits = 8, .group = C };

	for (int i = 0; i < R * C; i++)
		w[i] = frand(&seed) * (float)(1 + i / C);
	for (int i = 0; i < C; i++)
		w[4 * C + i] = 0.0f; /* a row of zeros gets scale 1 */
	quant_ok(w, R, C, s, q, scale, NULL);
	for (int r = 0; r < R; r++) {
		float m = 0.0f;

		for (int k = 0; k < C; k++)
			m = fmaxf(m, fabsf(w[r * C + k]));
		ck_assert_float_eq(scale[r], r == 4 ? 1.0f : m / 127.0f);
		for (int k = 0; k < C; k++) {
			ck_assert_int_le(abs(q[r * C + k]), 127);
			ck_assert_float_eq(q[r * C + k], nearbyintf(w[r * C + k] / scale[r]));
		}
	}
}
END_TEST

START_TEST(test_fast_matches_ref)
{
	/* Large enough that the fast quantizer runs threads. */
	enum { R = 300, C = 256 };
	const struct mc_qspec specs[] = {
		{ 8, 0, 0 }, { 8, 0, C }, { 8, 1, C }, { 8, 1, 0 }, { 8, 0, 32 },
		{ 4, 0, 32 }, { 4, 1, 32 }, { 4, 0, 128 }, { 4, 1, C }, { 4, 0, 0 },
	};
	float *w = malloc(R * C * sizeof(float)), sa[R * C / 32], sb[R * C / 32];
	int8_t *qa = malloc(R * C), *qb = malloc(R * C), za[R * C / 32], zb[R * C / 32];
	unsigned seed = 11;
	struct mc_err err = { 0 };

	ck_assert(w && qa && qb);
	for (int i = 0; i < R * C; i++)
		w[i] = frand(&seed) * (i % 97 == 0 ? 8.0f : 1.0f);
	w[5] = 0.5f * 8.0f / 127.0f; /* near a tie */
	for (size_t k = 0; k < sizeof(specs) / sizeof(specs[0]); k++) {
		int64_t nb = mc_qspec_blocks(&specs[k], R, C);

		memset(za, 0, sizeof(za));
		memset(zb, 0, sizeof(zb));
		ck_assert_msg(mc_quantize_weights(w, R, C, &specs[k], qa, sa, za, &err) == 0, "%s",
			      err.msg);
		quant_ok(w, R, C, specs[k], qb, sb, zb);
		ck_assert_msg(!memcmp(qa, qb, R * C), "spec %zu: values differ", k);
		ck_assert_msg(!memcmp(sa, sb, (size_t)nb * sizeof(float)), "spec %zu: scales", k);
		ck_assert_msg(!memcmp(za, zb, (size_t)nb), "spec %zu: zero points differ", k);
	}
	/* NaN and bad groups are refused by both */
	w[77] = NAN;
	ck_assert_int_eq(mc_quantize_weights(w, R, C, &specs[0], qa, sa, za, &err), MC_EINVAL);
	ck_assert_int_eq(mc_quantize_weights_ref(w, R, C, &specs[0], qa, sa, za, &err), MC_EINVAL);
	{
		struct mc_qspec bad = { 8, 0, 48 }, b3 = { 3, 0, 0 };

		ck_assert_int_eq(mc_quantize_weights(w, R, C, &bad, qa, sa, za, &err), MC_EINVAL);
		ck_assert_int_eq(mc_quantize_weights(w, R, C, &b3, qa, sa, za, &err), MC_EINVAL);
	}
	free(w);
	free(qa);
	free(qb);
}
END_TEST

/*
 * reduce_range: 8-bit weights in [-64, 64], s = max|w| / 64 (symmetric) or
 * (hi - lo) / 128 (asymmetric); the fast quantizer gives the reference's
 * bytes; the packed weights are 7-bit (mc_s8_7bit); 4 bits are refused.
 */
START_TEST(test_reduce_range)
{
	enum { R = 300, C = 256 };
	/* max |w| = 32: scale 0.5 exactly; 31.75 is a tie (63.5 -> 64), 0.25 too (0.5 -> 0) */
	const float h[] = { 32.0f, -32.0f, 31.75f, 0.25f, -0.75f, 1.0f };
	const int8_t want[] = { 64, -64, 64, 0, -2, 2 };
	struct mc_qspec specs[] = {
		{ 8, 0, 0, 1 }, { 8, 0, C, 1 }, { 8, 1, C, 1 }, { 8, 1, 0, 1 }, { 8, 0, 32, 1 },
	};
	float *w = malloc(R * C * sizeof(float)), sa[R * C / 32], sb[R * C / 32], sw[R];
	int8_t *qa = malloc(R * C), *qb = malloc(R * C), za[R * C / 32], zb[R * C / 32], q[6];
	unsigned seed = 17;
	struct mc_err err = { 0 };
	float scale;

	quant_ok(h, 1, 6, specs[0], q, &scale, NULL);
	ck_assert_float_eq(scale, 0.5f);
	ck_assert_mem_eq(q, want, 6);
	for (int i = 0; i < R * C; i++)
		w[i] = frand(&seed) * (i % 97 == 0 ? 8.0f : 1.0f);
	for (size_t k = 0; k < sizeof(specs) / sizeof(specs[0]); k++) {
		int64_t nb = mc_qspec_blocks(&specs[k], R, C);
		int lo = 0, hi = 0;

		memset(za, 0, sizeof(za));
		memset(zb, 0, sizeof(zb));
		ck_assert_msg(mc_quantize_weights(w, R, C, &specs[k], qa, sa, za, &err) == 0, "%s",
			      err.msg);
		quant_ok(w, R, C, specs[k], qb, sb, zb);
		ck_assert_msg(!memcmp(qa, qb, R * C), "spec %zu: values differ", k);
		ck_assert_msg(!memcmp(sa, sb, (size_t)nb * sizeof(float)), "spec %zu: scales", k);
		ck_assert_msg(!memcmp(za, zb, (size_t)nb), "spec %zu: zero points differ", k);
		for (int i = 0; i < R * C; i++) {
			lo = qa[i] < lo ? qa[i] : lo;
			hi = qa[i] > hi ? qa[i] : hi;
		}
		ck_assert_msg(lo >= -64 && hi <= 64 && (lo == -64 || hi == 64),
			      "spec %zu: q in [%d, %d]", k, lo, hi);
		if (k == 1) { /* per channel, symmetric: what the int8 GEMM takes */
			struct mc_s8_weights *p;

			for (int r = 0; r < R; r++)
				sw[r] = sa[r];
			p = mc_s8_pack(qa, R, C, C, sw, NULL, &err);
			ck_assert_msg(p != NULL, "%s", err.msg);
			ck_assert_int_eq(mc_s8_7bit(p), 1);
			mc_s8_free(p);
			specs[k].reduce_range = 0;
			ck_assert_int_eq(mc_quantize_weights(w, R, C, &specs[k], qa, sa, za, &err), 0);
			p = mc_s8_pack(qa, R, C, C, sw, NULL, &err);
			ck_assert_msg(p != NULL, "%s", err.msg);
			ck_assert_int_eq(mc_s8_7bit(p), 0);
			mc_s8_free(p);
		}
	}
	{
		struct mc_qspec b4 = { 4, 0, 32, 1 };

		ck_assert_int_eq(mc_quantize_weights(w, R, C, &b4, qa, sa, za, &err), MC_EINVAL);
		ck_assert_ptr_nonnull(strstr(err.msg, "reduce_range"));
		ck_assert_int_eq(mc_quantize_weights_ref(w, R, C, &b4, qa, sa, za, &err), MC_EINVAL);
	}
	free(w);
	free(qa);
	free(qb);
}
END_TEST

START_TEST(test_q4_pack_round_trip)
{
	int8_t q[33], back[33];
	uint8_t p[17];

	for (int i = 0; i < 33; i++)
		q[i] = (int8_t)(i % 16 - 8);
	mc_q4_pack(q, 33, p);
	/* first element in the low nibble, stored as q + 8 */
	ck_assert_uint_eq(p[0], (uint8_t)((-8 + 8) | ((-7 + 8) << 4)));
	ck_assert_uint_eq(p[5], (uint8_t)((2 + 8) | ((3 + 8) << 4)));
	ck_assert_uint_eq(p[16], (uint8_t)(q[32] + 8)); /* odd count: high nibble 0 */
	mc_q4_unpack(p, 33, back);
	ck_assert(!memcmp(q, back, 33));
}
END_TEST

START_TEST(test_act_ranges)
{
	enum { N = 200001 };
	float *x = malloc(N * sizeof(float)), lo, hi;
	struct mc_err err = { 0 };
	unsigned seed = 5;

	ck_assert(x);
	/* 1..1000: minmax [0, 1000]; the 99th percentile is the 990th value */
	for (int i = 0; i < 1000; i++)
		x[i] = (float)(i + 1);
	ck_assert_int_eq(mc_act_range(x, 1000, MC_RANGE_MINMAX, 0, &lo, &hi, &err), 0);
	ck_assert_float_eq(lo, 0.0f);
	ck_assert_float_eq(hi, 1000.0f);
	ck_assert_int_eq(mc_act_range(x, 1000, MC_RANGE_PERCENTILE, 99.0, &lo, &hi, &err), 0);
	ck_assert_float_eq(lo, 0.0f);
	ck_assert_float_eq(hi, 990.0f);
	/* symmetric values: the percentile clips both tails */
	for (int i = 0; i < 1000; i++)
		x[i] = (float)(i - 500); /* -500..499 */
	ck_assert_int_eq(mc_act_range(x, 1000, MC_RANGE_PERCENTILE, 99.0, &lo, &hi, &err), 0);
	ck_assert_float_eq(lo, -490.0f);
	ck_assert_float_eq(hi, 489.0f);
	/* uniform [0, 1) and one outlier at 100: minmax keeps it; mse clips it, as
	 * the outlier's error (100 - h)^2 trades against N (h / 255)^2 / 12 */
	for (int i = 0; i < N - 1; i++)
		x[i] = 0.5f * (frand(&seed) + 1.0f);
	x[N - 1] = 100.0f;
	ck_assert_int_eq(mc_act_range(x, N, MC_RANGE_MINMAX, 0, &lo, &hi, &err), 0);
	ck_assert_float_eq(hi, 100.0f);
	ck_assert_int_eq(mc_act_range(x, N, MC_RANGE_MSE, 0, &lo, &hi, &err), 0);
	ck_assert_float_eq(lo, 0.0f);
	ck_assert_msg(hi > 50.0f && hi < 95.0f, "mse range %g", hi);
	ck_assert_int_eq(mc_act_range(x, N, MC_RANGE_PERCENTILE, 99.9, &lo, &hi, &err), 0);
	ck_assert_msg(hi > 0.99f && hi < 1.0f, "percentile range %g", hi);
	ck_assert_int_eq(mc_act_range(x, N, MC_RANGE_PERCENTILE, 20.0, &lo, &hi, &err), MC_EINVAL);
	free(x);
}
END_TEST

/* ---------------------------------------------------------------- qlinear */

/* A one-layer model: [64] -> qlinear(out 24) with the given attrs. */
static struct mc_model *qmodel(const char *attrs)
{
	char arch[1024];
	struct mc_err err = { 0 };
	struct mc_model *m;

	PATHF(arch,
	      "{\"format\": 1, \"input\": [64], \"nodes\": [{\"name\": \"fc\", \"op\": "
	      "\"qlinear\", \"inputs\": [\"input\"], \"attrs\": {\"out\": 24, %s}}]}",
	      attrs);
	m = mc_model_from_arch(arch, "test", &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	return m;
}

/* Fills the qlinear of m from f32 weights w[24, 64] and bias b; returns its spec. */
static struct mc_qspec fill(struct mc_model *m, const float *w, const float *b)
{
	const struct mc_node *nd = mc_model_node(m, 0);
	struct mc_tensor *tw = nd->params[0], *ts = nd->params[1];
	struct mc_qspec s = { .bits = tw->dtype == MC_Q4 ? 4 : 8 };
	int8_t q[24 * 64], zp[24 * 64];

	s.asym = nd->n_params == 4 && !strcmp(nd->params[3]->name, "fc.weight_zero_point");
	s.group = ts->numel == 1 ? 0 : (int)(24 * 64 / ts->numel);
	quant_ok(w, 24, 64, s, q, ts->data, zp);
	if (s.bits == 8)
		memcpy(tw->data, q, sizeof(q));
	else
		mc_q4_pack(q, 24 * 64, tw->data);
	if (s.asym)
		memcpy(nd->params[3]->data, zp, (size_t)ts->numel);
	memcpy(nd->params[2]->data, b, 24 * sizeof(float));
	return s;
}

static void data(float *w, float *b, float *x, int n)
{
	unsigned seed = 21;

	for (int i = 0; i < 24 * 64; i++)
		w[i] = 0.2f * frand(&seed);
	for (int i = 0; i < 24; i++)
		b[i] = 0.1f * frand(&seed);
	for (int i = 0; i < n * 64; i++)
		x[i] = fmaxf(0.0f, 2.0f * frand(&seed)); /* post-ReLU inputs */
}

static const float *run(struct mc_model *m, struct mc_exec **e, const float *x, int n)
{
	struct mc_err err = { 0 };

	*e = mc_exec_new(m, n, 0, &err);
	ck_assert_msg(*e != NULL, "%s", err.msg);
	return mc_forward(*e, x, n);
}

/*
 * Weight-only: y = x deq(W)^T + b, in double, within 1e-5 of sum |x||w|
 * (f32 accumulation); and int8 per channel within 2% of the f32 layer's
 * output scale. Batches 1 (direct kernel) and 16 (tiles through the GEMM).
 */
START_TEST(test_weight_only_against_reference)
{
	const char *variants[] = {
		"\"bits\": 8, \"mode\": \"weight-only\"",
		"\"bits\": 8, \"mode\": \"weight-only\", \"scheme\": \"asymmetric\", "
		"\"granularity\": \"per-tensor\"",
		"\"bits\": 4, \"mode\": \"weight-only\", \"granularity\": \"per-group\", "
		"\"group_size\": 32",
		"\"bits\": 4, \"mode\": \"weight-only\", \"granularity\": \"per-group\", "
		"\"group_size\": 16, \"scheme\": \"asymmetric\"",
	};
	float w[24 * 64], b[24], x[16 * 64], deq[24 * 64];
	const int ns[] = { 1, 16 };

	data(w, b, x, 16);
	for (size_t v = 0; v < sizeof(variants) / sizeof(variants[0]); v++) {
		struct mc_model *m = qmodel(variants[v]);
		const struct mc_node *nd = mc_model_node(m, 0);
		struct mc_qspec s = fill(m, w, b);
		int8_t q[24 * 64];

		if (s.bits == 8)
			memcpy(q, nd->params[0]->data, sizeof(q));
		else
			mc_q4_unpack(nd->params[0]->data, 24 * 64, q);
		mc_dequantize_weights(q, 24, 64, &s, nd->params[1]->data,
				      s.asym ? nd->params[3]->data : NULL, deq);
		for (int k = 0; k < 2; k++) {
			struct mc_exec *e;
			const float *y = run(m, &e, x, ns[k]);

			for (int r = 0; r < ns[k]; r++)
				for (int o = 0; o < 24; o++) {
					double ref = b[o], mag = fabs(b[o]), f32 = b[o];

					for (int i = 0; i < 64; i++) {
						ref += (double)x[r * 64 + i] * deq[o * 64 + i];
						f32 += (double)x[r * 64 + i] * w[o * 64 + i];
						mag += fabs((double)x[r * 64 + i] * deq[o * 64 + i]);
					}
					ck_assert_msg(fabs(y[r * 24 + o] - ref) <= 1e-5 * mag,
						      "variant %zu n %d: %g vs %g", v, ns[k],
						      y[r * 24 + o], ref);
					if (s.bits == 8)
						ck_assert_msg(fabs(y[r * 24 + o] - f32) <= 0.02 * mag,
							      "variant %zu: %g vs f32 %g", v,
							      y[r * 24 + o], f32);
				}
			mc_exec_free(e);
		}
		mc_model_free(m);
	}
}
END_TEST

/*
 * Dynamic and static int8 on the integer GEMM: the exact reference is
 * sum (qa - za) sa * q sw + b over the u8 input the op must have made
 * (mc_u8_qparams of the batch's range, or the stored one), within 1e-5
 * relative (the kernel's only rounding is its f32 epilogue).
 */
START_TEST(test_int8_gemm_against_reference)
{
	float w[24 * 64], b[24], x[16 * 64];

	data(w, b, x, 16);
	for (int mode = 0; mode < 2; mode++) {
		struct mc_model *m = qmodel(mode ? "\"mode\": \"static\"" : "\"mode\": \"dynamic\"");
		const struct mc_node *nd = mc_model_node(m, 0);
		const int8_t *q;
		const float *sw, *y;
		struct mc_exec *e;
		uint8_t qa[16 * 64];
		float sa, lo, hi;
		int za;

		fill(m, w, b);
		q = nd->params[0]->data;
		sw = nd->params[1]->data;
		if (mode) {
			float *qp = nd->params[3]->data;

			mc_u8_qparams(0.0f, 1.5f, &sa, &za); /* clamps inputs above 1.5 */
			qp[0] = sa;
			qp[1] = (float)za;
		} else {
			mc_minmax(x, 16 * 64, &lo, &hi);
			mc_u8_qparams(lo, hi, &sa, &za);
		}
		mc_quantize_u8_ref(x, 16 * 64, sa, za, qa);
		y = run(m, &e, x, 16);
		for (int r = 0; r < 16; r++)
			for (int o = 0; o < 24; o++) {
				double ref = 0.0, f32 = b[o], mag = 0.0;

				for (int i = 0; i < 64; i++) {
					ref += (double)(qa[r * 64 + i] - za) * q[o * 64 + i];
					f32 += (double)x[r * 64 + i] * w[o * 64 + i];
					mag += fabs((double)x[r * 64 + i] * w[o * 64 + i]);
				}
				ref = ref * sa * sw[o] + b[o];
				ck_assert_msg(fabs(y[r * 24 + o] - ref) <= 1e-5 * (1.0 + fabs(ref)),
					      "mode %d: %g vs %g", mode, y[r * 24 + o], ref);
				if (!mode) /* dynamic: within 2% of the f32 layer */
					ck_assert_msg(fabs(y[r * 24 + o] - f32) <= 0.02 * mag + 1e-3,
						      "%g vs f32 %g", y[r * 24 + o], f32);
			}
		mc_exec_free(e);
		mc_model_free(m);
	}
}
END_TEST

/* ---------------------------------------------------------------- qconv2d */

#define QC_C 3
#define QC_S 20
#define QC_O 16
#define QC_K (QC_C * 9)
#define QC_N 40

/* conv2d or qconv2d over [3, 20, 20], 16 outputs, kernel 3, padding 1, stride s. */
static struct mc_model *conv_model(const char *op, const char *attrs, int stride)
{
	char arch[1024];
	struct mc_err err = { 0 };
	struct mc_model *m;

	PATHF(arch,
	      "{\"format\": 1, \"input\": [%d, %d, %d], \"nodes\": [{\"name\": \"cv\", \"op\": "
	      "\"%s\", \"inputs\": [\"input\"], \"attrs\": {\"out\": %d, \"kernel\": 3, "
	      "\"padding\": 1, \"stride\": %d%s}}]}",
	      QC_C, QC_S, QC_S, op, QC_O, stride, attrs);
	m = mc_model_from_arch(arch, "test", &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	return m;
}

/*
 * qconv2d (dynamic and static) against the exact integer reference
 * sum (qa - za) q sa sw + b, where taps in the padding hold qa = za (0.0),
 * within 1e-5 relative; and against the f32 conv2d of the same weights
 * within 2% of sum |x w| (dynamic: the u8 and int8 rounding). Batches 1 and
 * 40 (several chunks of samples, spread over threads), strides 1 and 2;
 * then saved and loaded back: the same outputs bit for bit.
 */
START_TEST(test_qconv2d_against_f32)
{
	static float x[QC_N * QC_C * QC_S * QC_S];
	static uint8_t qa[QC_N * QC_C * QC_S * QC_S];
	const int ns[] = { 1, QC_N };
	unsigned seed = 5;
	char path[4300];

	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = 1.5f * frand(&seed) + 0.3f; /* signed inputs: zero point inside */
	for (int v = 0; v < 4; v++) {
		int stride = 1 + v % 2, mode = v / 2, oh = (QC_S - 1) / stride + 1;
		struct mc_model *f = conv_model("conv2d", "", stride);
		struct mc_model *q = conv_model("qconv2d", mode ? ", \"mode\": \"static\"" :
								  ", \"mode\": \"dynamic\"", stride);
		const struct mc_node *fn = mc_model_node(f, 0), *qn = mc_model_node(q, 0);
		struct mc_qspec spec = { .bits = 8, .group = QC_K };
		const float *w = fn->params[0]->data, *b = fn->params[1]->data, *sw;
		const int8_t *qw = qn->params[0]->data;
		struct mc_err err = { 0 };
		struct mc_model *q2;

		ck_assert_int_eq(qn->params[0]->dtype, MC_S8);
		ck_assert_int_eq(qn->out_shape[1], oh);
		mc_model_init(f, 4);
		quant_ok(w, QC_O, QC_K, spec, qn->params[0]->data, qn->params[1]->data, NULL);
		memcpy(qn->params[2]->data, b, QC_O * sizeof(float));
		sw = qn->params[1]->data;
		for (int k = 0; k < 2; k++) {
			int n = ns[k], za;
			float sa, lo, hi;
			struct mc_exec *ef, *eq;
			const float *yf, *yq;

			if (mode) {
				float *qp = qn->params[3]->data;

				mc_u8_qparams(-1.0f, 1.5f, &sa, &za); /* clamps some inputs */
				qp[0] = sa;
				qp[1] = (float)za;
			} else {
				mc_minmax(x, (size_t)n * QC_C * QC_S * QC_S, &lo, &hi);
				mc_u8_qparams(lo, hi, &sa, &za);
			}
			mc_quantize_u8_ref(x, (size_t)n * QC_C * QC_S * QC_S, sa, za, qa);
			yf = run(f, &ef, x, n);
			yq = run(q, &eq, x, n);
			for (int s = 0; s < n; s++)
				for (int o = 0; o < QC_O; o++)
					for (int p = 0; p < oh * oh; p++) {
						double ref = 0.0, mag = 0.0;
						size_t at = ((size_t)s * QC_O + o) * oh * oh + p;

						for (int c = 0; c < QC_C; c++)
							for (int t = 0; t < 9; t++) {
								int h = p / oh * stride - 1 + t / 3;
								int ww = p % oh * stride - 1 + t % 3;
								size_t xi = (((size_t)s * QC_C + c) * QC_S +
									     h) * QC_S + ww;
								int wi = (o * QC_C + c) * 9 + t;

								if (h < 0 || h >= QC_S || ww < 0 ||
								    ww >= QC_S)
									continue;
								ref += (double)(qa[xi] - za) * qw[wi];
								mag += fabs((double)x[xi] * w[wi]);
							}
						ref = ref * sa * sw[o] + b[o];
						ck_assert_msg(fabs(yq[at] - ref) <=
								  1e-5 * (1.0 + fabs(ref)),
							      "v %d n %d: %g vs %g", v, n, yq[at], ref);
						if (!mode)
							ck_assert_msg(fabs(yq[at] - yf[at]) <=
									  0.02 * mag + 1e-3,
								      "v %d: %g vs f32 %g", v,
								      yq[at], yf[at]);
					}
			mc_exec_free(ef);
			mc_exec_free(eq);
		}
		/* save and load back: the same outputs, bit for bit */
		PATHF(path, "%.200s/mcomp-qconv-%d-%d.safetensors",
		      getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid(), v);
		ck_assert_msg(mc_model_save(q, path, &err) == 0, "%s", err.msg);
		q2 = mc_model_load(path, &err);
		unlink(path);
		ck_assert_msg(q2 != NULL, "%s", err.msg);
		ck_assert_str_eq(mc_model_node(q2, 0)->op->name, "qconv2d");
		{
			struct mc_exec *e1, *e2;
			const float *y1 = run(q, &e1, x, QC_N), *y2 = run(q2, &e2, x, QC_N);

			ck_assert(!memcmp(y1, y2, (size_t)QC_N * QC_O * oh * oh * sizeof(float)));
			mc_exec_free(e1);
			mc_exec_free(e2);
		}
		mc_model_free(q2);
		mc_model_free(q);
		mc_model_free(f);
	}
}
END_TEST

/*
 * qconv2d with relu: true equals relu(qconv2d) exactly, dynamic and static,
 * batches 1 and 40; the attribute survives a save and load; and the
 * backward passes dout only where the output is positive.
 */
START_TEST(test_qconv2d_relu_fused)
{
	static float x[QC_N * QC_C * QC_S * QC_S];
	unsigned seed = 11;
	char path[4300];

	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = 1.5f * frand(&seed) + 0.3f;
	for (int mode = 0; mode < 2; mode++) {
		const char *ma = mode ? ", \"mode\": \"static\"" : ", \"mode\": \"dynamic\"";
		char attrs[128], arch[1024];
		struct mc_model *f = conv_model("conv2d", "", 1), *plain, *fused, *back;
		struct mc_qspec spec = { .bits = 8, .group = QC_K };
		struct mc_err err = { 0 };
		int npos = 0, nneg = 0;

		/* unfused: qconv2d then a relu node */
		PATHF(arch,
		      "{\"format\": 1, \"input\": [%d, %d, %d], \"nodes\": [{\"name\": \"cv\", "
		      "\"op\": \"qconv2d\", \"inputs\": [\"input\"], \"attrs\": {\"out\": %d, "
		      "\"kernel\": 3, \"padding\": 1%s}}, {\"name\": \"act\", \"op\": \"relu\", "
		      "\"inputs\": [\"cv\"], \"attrs\": {}}]}",
		      QC_C, QC_S, QC_S, QC_O, ma);
		plain = mc_model_from_arch(arch, "test", &err);
		ck_assert_msg(plain != NULL, "%s", err.msg);
		PATHF(attrs, "%s, \"relu\": true", ma);
		fused = conv_model("qconv2d", attrs, 1);
		mc_model_init(f, 6);
		for (int k = 0; k < 2; k++) {
			const struct mc_node *qn = k ? mc_model_node(fused, 0) : mc_model_node(plain, 0);

			quant_ok(mc_model_node(f, 0)->params[0]->data, QC_O, QC_K, spec, qn->params[0]->data,
				 qn->params[1]->data, NULL);
			memcpy(qn->params[2]->data, mc_model_node(f, 0)->params[1]->data,
			       QC_O * sizeof(float));
			if (mode) {
				float *qp = qn->params[3]->data, sa;
				int za;

				mc_u8_qparams(-1.0f, 1.5f, &sa, &za);
				qp[0] = sa;
				qp[1] = (float)za;
			}
		}
		PATHF(path, "%.200s/mcomp-qrelu-%d-%d.safetensors",
		      getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid(), mode);
		ck_assert_msg(mc_model_save(fused, path, &err) == 0, "%s", err.msg);
		back = mc_model_load(path, &err);
		unlink(path);
		ck_assert_msg(back != NULL, "%s", err.msg);
		for (int n = 1; n <= QC_N; n += QC_N - 1) {
			struct mc_exec *e1, *e2, *e3;
			const float *y1 = run(plain, &e1, x, n), *y2 = run(fused, &e2, x, n);
			const float *y3 = run(back, &e3, x, n);

			for (size_t i = 0; i < (size_t)n * QC_O * QC_S * QC_S; i++) {
				ck_assert_msg(y1[i] == y2[i] && y2[i] == y3[i] && y2[i] >= 0.0f,
					      "mode %d n %d at %zu: relu(qconv2d) %g, fused %g, "
					      "reloaded %g", mode, n, i, y1[i], y2[i], y3[i]);
				npos += y2[i] > 0.0f;
				nneg += y2[i] == 0.0f;
			}
			mc_exec_free(e1);
			mc_exec_free(e2);
			mc_exec_free(e3);
		}
		ck_assert(npos > 0 && nneg > 0); /* the relu did something */
		{
			/* backward: dout passes only where the output is positive, as
			 * through relu's backward; elsewhere dx is the unfused op's */
			const struct mc_node *pn = mc_model_node(plain, 0), *fn = mc_model_node(fused, 0);
			static float y[2 * QC_O * QC_S * QC_S], g[2 * QC_O * QC_S * QC_S];
			static float gm[2 * QC_O * QC_S * QC_S];
			static float dx1[2 * QC_C * QC_S * QC_S], dx2[2 * QC_C * QC_S * QC_S];
			const float *in[1] = { x };
			float *d1[1] = { dx1 }, *d2[1] = { dx2 };
			float *grads[MC_NODE_MAX_PARAMS] = { 0 };
			struct mc_run rn = { .training = 1 };

			rn.work = malloc(fn->op->workspace(fn, 2));
			ck_assert_ptr_nonnull(rn.work);
			for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++)
				g[i] = frand(&seed);
			fn->op->forward(fn, &rn, 2, in, y);
			for (size_t i = 0; i < sizeof(g) / sizeof(g[0]); i++)
				gm[i] = y[i] > 0.0f ? g[i] : 0.0f;
			fn->op->backward(fn, &rn, 2, in, y, g, d2, grads);
			pn->op->forward(pn, &rn, 2, in, y);
			pn->op->backward(pn, &rn, 2, in, y, gm, d1, grads);
			ck_assert(memcmp(gm, g, sizeof(g)));
			for (size_t i = 0; i < 2 * QC_C * QC_S * QC_S; i++)
				ck_assert_msg(dx1[i] == dx2[i], "dx at %zu: %g vs %g", i, dx1[i],
					      dx2[i]);
			free(rn.work);
		}
		mc_model_free(back);
		mc_model_free(fused);
		mc_model_free(plain);
		mc_model_free(f);
	}
}
END_TEST

/* ---------------------------------------------------------------- files and the pass */

static void setup(void)
{
	static const char *const passes[] = { "quantize", NULL };
	struct mc_err err = { 0 };
	struct mc_model *m;

	tiny_setup("quantize", passes);
	m = mc_model_from_arch(mlp_arch, "test", &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 3);
	ck_assert_msg(mc_model_save(m, spath("mlp.safetensors"), &err) == 0, "%s", err.msg);
	mc_model_free(m);
	m = mc_model_from_arch(cnn_arch, "test", &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 3);
	ck_assert_msg(mc_model_save(m, spath("cnn.safetensors"), &err) == 0, "%s", err.msg);
	mc_model_free(m);
}

/*
 * Writes p.yaml: train (first 96 samples), calib (the other 32), test, model
 * 'm' loaded from model_file, a train pass, then one quantize pass whose
 * parameter lines are params (from line 12); output to out.safetensors.
 */
static int pipeline(const char *model_file, const char *params, int run_it, struct mc_err *err)
{
	char text[8192];

	PATHF(text,
	      "mcomp: 1\n"
	      "seed: 5\n"
	      "data:\n"
	      "  train: {idx: train, count: 96}\n"
	      "  calib: {idx: train, first: 96}\n"
	      "  test: {idx: test}\n"
	      "models:\n"
	      "  m: {load: %s}\n"
	      "passes:\n"
	      "  - train: {model: m, epochs: 3, batch_size: 16, lr: 0.01}\n"
	      "  - quantize:\n"
	      "%s"
	      "output: {model: m, path: out.safetensors}\n",
	      model_file, params);
	return tiny_pipeline(reg, text, run_it, err);
}

static void expect_refused(const char *model_file, const char *params, int line,
			   const char *want)
{
	struct mc_err err = { 0 };
	char place[4300];

	ck_assert_int_eq(pipeline(model_file, params, 0, &err), MC_EINVAL);
	PATHF(place, "%s:%d:", spath("p.yaml"), line);
	ck_assert_msg(strstr(err.msg, place), "'%s' lacks the place '%s'", err.msg, place);
	ck_assert_msg(strstr(err.msg, want), "'%s' lacks '%s'", err.msg, want);
}

static double accuracy(const struct mc_model *m)
{
	struct mc_err err = { 0 };
	struct mc_dataset *d = mc_idx_load_prefix(spath("test"), &err);
	double acc;

	ck_assert_msg(d != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_evaluate(m, d, 32, &acc, NULL, &err), 0);
	mc_dataset_free(d);
	return acc;
}

/* Static int8 end to end: every layer becomes qlinear with I8 weights in the
 * file, it reloads to the same outputs bit for bit, and keeps the accuracy. */
START_TEST(test_pipeline_static_int8)
{
	struct mc_err err = { 0 };
	struct mc_model *m, *m2;
	struct mc_st_file *f;
	const struct mc_st_entry *e;
	struct mc_exec *e1, *e2;
	float x[5 * 64];
	const float *y1, *y2;
	unsigned seed = 9;

	ck_assert_msg(pipeline("mlp.safetensors",
			       "      model: m\n      mode: static\n      calibration: mse\n"
			       "      calibration_data: calib\n      samples: 32\n",
			       1, &err) == 0,
		      "%s", err.msg);
	m = mc_model_load(spath("out.safetensors"), &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	for (int i = 0; i < mc_model_n_nodes(m); i++)
		if (mc_model_node(m, i)->n_params)
			ck_assert_str_eq(mc_model_node(m, i)->op->name, "qlinear");
	ck_assert_msg(accuracy(m) >= 0.9, "accuracy %g", accuracy(m));
	f = mc_st_read(spath("out.safetensors"), &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	e = mc_st_find(f, "fc1.weight");
	ck_assert(e && !strcmp(e->st_dtype, "I8") && e->ndim == 2 && e->shape[0] == 32 &&
		  e->shape[1] == 64);
	e = mc_st_find(f, "fc1.weight_scale");
	ck_assert(e && !strcmp(e->st_dtype, "F32") && e->shape[0] == 32);
	e = mc_st_find(f, "fc2.input_qparams");
	ck_assert(e && !strcmp(e->st_dtype, "F32") && e->shape[0] == 2);
	mc_st_free(f);
	/* save and load again: the same outputs, bit for bit */
	ck_assert_msg(mc_model_save(m, spath("again.safetensors"), &err) == 0, "%s", err.msg);
	m2 = mc_model_load(spath("again.safetensors"), &err);
	ck_assert_msg(m2 != NULL, "%s", err.msg);
	for (int i = 0; i < 5 * 64; i++)
		x[i] = 0.5f * (frand(&seed) + 1.0f);
	y1 = run(m, &e1, x, 5);
	y2 = run(m2, &e2, x, 5);
	ck_assert(!memcmp(y1, y2, 5 * 4 * sizeof(float)));
	mc_exec_free(e1);
	mc_exec_free(e2);
	mc_model_free(m2);
	/* quantizing it again is refused, naming the layer */
	expect_refused("again.safetensors", "      model: m\n", 12, "'fc1' of model 'm' is already "
		       "quantized");
	mc_model_free(m);
}
END_TEST

/*
 * reduce_range on a CNN, static int8: every qconv2d and qlinear weight in
 * [-64, 64] (both ends reached somewhere), and the same outputs, bit for
 * bit, on every int8 GEMM path this CPU has ("avx2" on its vpmaddubsw
 * kernel), for batches of 1 and 40; without it the weights reach 127.
 */
START_TEST(test_pipeline_reduce_range)
{
	static const char *const paths[] = { "amx", "avx512-vnni", "avx-vnni", "avx2", "portable" };
	static float x[40 * 64], y0[40 * 4];
	const char *saved = mc_gemm_s8_kernel();
	struct mc_err err = { 0 };
	unsigned seed = 23;
	int tested = 0;

	for (int i = 0; i < 40 * 64; i++)
		x[i] = 0.5f * (frand(&seed) + 1.0f);
	for (int rr = 1; rr >= 0; rr--) {
		struct mc_model *m;
		int lo = 0, hi = 0, layers = 0;

		ck_assert_msg(pipeline("cnn.safetensors",
				       rr ? "      model: m\n      mode: static\n"
					    "      calibration_data: calib\n      samples: 32\n"
					    "      reduce_range: true\n"
					  : "      model: m\n      mode: static\n"
					    "      calibration_data: calib\n      samples: 32\n",
				       1, &err) == 0,
			      "%s", err.msg);
		m = mc_model_load(spath("out.safetensors"), &err);
		ck_assert_msg(m != NULL, "%s", err.msg);
		for (int i = 0; i < mc_model_n_nodes(m); i++) {
			const struct mc_node *nd = mc_model_node(m, i);
			const int8_t *q = nd->n_params ? nd->params[0]->data : NULL;

			if (strcmp(nd->op->name, "qconv2d") && strcmp(nd->op->name, "qlinear"))
				continue;
			layers++;
			for (int64_t k = 0; k < nd->params[0]->numel; k++) {
				lo = q[k] < lo ? q[k] : lo;
				hi = q[k] > hi ? q[k] : hi;
			}
		}
		ck_assert_int_ge(layers, 2);
		if (rr)
			ck_assert_msg(lo >= -64 && hi <= 64 && (lo == -64 || hi == 64),
				      "reduce_range: weights in [%d, %d]", lo, hi);
		else
			ck_assert_msg(lo == -127 || hi == 127, "full range: weights in [%d, %d]", lo,
				      hi);
		for (int n = 1; rr && n <= 40; n += 39) {
			int first = 1;

			for (int pi = 0; pi < 5; pi++) {
				struct mc_exec *e;
				const float *y;

				if (mc_gemm_s8_use(paths[pi]))
					continue;
				tested++;
				y = run(m, &e, x, n);
				if (first)
					memcpy(y0, y, (size_t)n * 4 * sizeof(float));
				else
					ck_assert_msg(!memcmp(y0, y, (size_t)n * 4 * sizeof(float)),
						      "batch %d: path %s differs", n, paths[pi]);
				first = 0;
				mc_exec_free(e);
			}
		}
		mc_model_free(m);
	}
	ck_assert_int_ge(tested, 2);
	mc_gemm_s8_use(saved);
}
END_TEST

/*
 * Static int8 on a CNN: the relu after the conv is fused into the qconv2d
 * (relu: true) and its node removed; the model computes the same outputs,
 * exactly, as the unfused quantized model with the same parameters.
 */
START_TEST(test_pipeline_relu_fused)
{
	struct mc_err err = { 0 };
	struct mc_model *m, *u;
	struct mc_exec *e1, *e2;
	static float x[40 * 64];
	const float *y1, *y2;
	unsigned seed = 13;
	char *arch;

	ck_assert_msg(pipeline("cnn.safetensors",
			       "      model: m\n      mode: static\n      calibration_data: calib\n"
			       "      samples: 32\n",
			       1, &err) == 0,
		      "%s", err.msg);
	m = mc_model_load(spath("out.safetensors"), &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_model_n_nodes(m), 4);
	ck_assert_str_eq(mc_model_node(m, 0)->op->name, "qconv2d");
	ck_assert_str_eq(mc_model_node(m, 1)->op->name, "maxpool2d");
	ck_assert_int_eq(mc_model_node(m, 1)->inputs[0], 0);
	ck_assert_str_eq(mc_model_node(m, 3)->op->name, "qlinear");
	arch = mc_model_arch(m);
	ck_assert_ptr_nonnull(arch);
	ck_assert_msg(strstr(arch, "\"relu\":true") && !strstr(arch, "\"op\":\"relu\""), "%s",
		      arch);
	free(arch);
	ck_assert_msg(accuracy(m) >= 0.9, "accuracy %g", accuracy(m));
	u = mc_model_from_arch(qcnn_unfused_arch, "test", &err);
	ck_assert_msg(u != NULL, "%s", err.msg);
	for (int i = 0; i < mc_model_n_nodes(u); i++)
		for (int p = 0; p < mc_model_node(u, i)->n_params; p++) {
			struct mc_tensor *d = mc_model_node(u, i)->params[p];
			const struct mc_tensor *s = mc_model_param(m, d->name);

			ck_assert_msg(s && mc_tensor_nbytes(s) == mc_tensor_nbytes(d), "%s", d->name);
			memcpy(d->data, s->data, mc_tensor_nbytes(d));
		}
	for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
		x[i] = 0.6f * (frand(&seed) + 1.0f);
	y1 = run(m, &e1, x, 40);
	y2 = run(u, &e2, x, 40);
	for (int i = 0; i < 40 * 4; i++)
		ck_assert_msg(y1[i] == y2[i], "at %d: fused %g, unfused %g", i, y1[i], y2[i]);
	mc_exec_free(e1);
	mc_exec_free(e2);
	mc_model_free(u);
	mc_model_free(m);
}
END_TEST

/* 4-bit g32 weight-only, fc3 (16 inputs) per channel: Q4 payload half the bytes. */
START_TEST(test_pipeline_int4)
{
	struct mc_err err = { 0 };
	struct mc_model *m;
	struct mc_st_file *f;
	const struct mc_st_entry *e;

	ck_assert_msg(pipeline("mlp.safetensors",
			       "      model: m\n      bits: 4\n      granularity: per-group\n"
			       "      group_size: 32\n      overrides: {fc3: per-channel}\n",
			       1, &err) == 0,
		      "%s", err.msg);
	m = mc_model_load(spath("out.safetensors"), &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	ck_assert_msg(accuracy(m) >= 0.85, "accuracy %g", accuracy(m));
	ck_assert_int_eq(mc_model_param(m, "fc1.weight")->dtype, MC_Q4);
	f = mc_st_read(spath("out.safetensors"), &err);
	ck_assert_msg(f != NULL, "%s", err.msg);
	e = mc_st_find(f, "fc1.weight");
	ck_assert(e && !strcmp(e->st_dtype, "U8") && e->ndim == 1 && e->shape[0] == 32 * 64 / 2);
	e = mc_st_find(f, "fc1.weight_scale");
	ck_assert(e && e->ndim == 2 && e->shape[0] == 32 && e->shape[1] == 2);
	e = mc_st_find(f, "fc3.weight_scale");
	ck_assert(e && e->ndim == 1 && e->shape[0] == 4);
	mc_st_free(f);
	mc_model_free(m);
}
END_TEST

START_TEST(test_invalid_params)
{
	expect_refused("mlp.safetensors", "      model: m\n      bits: 3\n", 13,
		       "3 bits is not supported");
	expect_refused("mlp.safetensors",
		       "      model: m\n      bits: 4\n      granularity: per-group\n"
		       "      group_size: 32\n",
		       15, "32 does not divide the 16 inputs of layer 'fc3'");
	expect_refused("mlp.safetensors", "      model: m\n      group_size: 48\n"
		       "      granularity: per-group\n      mode: weight-only\n", 13,
		       "48 is not a supported group size");
	expect_refused("mlp.safetensors", "      model: m\n      exclude: [\"fc9\"]\n", 13,
		       "no layer of model 'm' matches 'fc9'");
	expect_refused("mlp.safetensors",
		       "      model: m\n      mode: static\n      calibration_data: test\n", 14,
		       "'test' measures the result");
	expect_refused("mlp.safetensors", "      model: m\n      bits: 4\n      mode: dynamic\n",
		       14, "4-bit weights run weight-only");
	expect_refused("mlp.safetensors",
		       "      model: m\n      bits: 4\n      mode: weight-only\n"
		       "      reduce_range: true\n",
		       15, "4-bit weights run weight-only and are not reduced");
	expect_refused("mlp.safetensors", "      model: m\n      overrides: {fc1: g32}\n", 13,
		       "overrides: fc1: 'g32' is not one of per-tensor, per-channel, per-group");
	expect_refused("mlp.safetensors", "      model: m\n      overrides: [\"fc1=g32\"]\n", 13,
		       "'g32' is not one of per-tensor, per-channel, per-group");
	expect_refused("mlp.safetensors", "      model: m\n      overrides: {fc9: per-tensor}\n",
		       13, "no layer of model 'm' matches 'fc9'");
}
END_TEST

/*
 * Dynamic and weight-only modes read no split: a pipeline without 'train'
 * validates and runs. Static mode calibrates on 'train' by default, and
 * without one is refused at validation, at the pass; a default 'train' that
 * does not fit the model is refused at validation too.
 */
START_TEST(test_no_train_split)
{
	static const char *const modes[] = { "dynamic", "weight-only" };
	struct mc_err err = { 0 };
	char text[4096], place[4300];

	for (int i = 0; i < 2; i++) {
		PATHF(text,
		      "mcomp: 1\n"
		      "data:\n"
		      "  test: {idx: test}\n"
		      "models:\n"
		      "  m: {load: mlp.safetensors}\n"
		      "passes:\n"
		      "  - quantize: {model: m, mode: %s}\n"
		      "output: {model: m, path: out.safetensors}\n",
		      modes[i]);
		ck_assert_msg(tiny_pipeline(reg, text, 1, &err) == 0, "%s: %s", modes[i], err.msg);
	}
	PATHF(text, "mcomp: 1\n"
		    "data:\n"
		    "  test: {idx: test}\n"
		    "models:\n"
		    "  m: {load: mlp.safetensors}\n"
		    "passes:\n"
		    "  - quantize: {model: m, mode: static}\n");
	ck_assert_int_eq(tiny_pipeline(reg, text, 0, &err), MC_EINVAL);
	PATHF(place, "%s:7:5: pass 'quantize', calibration_data: the pipeline has no data split "
	      "'train' (the default); add it under 'data:' or set calibration_data",
	      spath("p.yaml"));
	ck_assert_msg(strstr(err.msg, place), "'%s' lacks '%s'", err.msg, place);

	/* the default split, present but of other samples: its header is read */
	write_file(spath("x.npy"), "\x93NUMPY\x01\x00\x3c\x00{'descr': '<f4', 'fortran_order': "
		   "False, 'shape': (2, 3), }\n" "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0",
		   70 + 24);
	write_file(spath("y.npy"), "\x93NUMPY\x01\x00\x3a\x00{'descr': '|u1', 'fortran_order': "
		   "False, 'shape': (2,), }\n" "\0\0", 68 + 2);
	PATHF(text, "mcomp: 1\n"
		    "data:\n"
		    "  train: {npy: {x: x.npy, y: y.npy}}\n"
		    "models:\n"
		    "  m: {load: mlp.safetensors}\n"
		    "passes:\n"
		    "  - quantize: {model: m, mode: static}\n");
	ck_assert_int_eq(tiny_pipeline(reg, text, 0, &err), MC_EINVAL);
	PATHF(place, "%s:7:5: pass 'quantize', calibration_data: data split 'train' has samples "
	      "of shape [3] but model 'm' takes [1, 8, 8]", spath("p.yaml"));
	ck_assert_msg(strstr(err.msg, place), "'%s' lacks '%s'", err.msg, place);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("quantize");
	TCase *tk = tcase_create("kernels"), *tp = tcase_create("pass");

	tcase_add_test(tk, test_hand_symmetric_int8);
	tcase_add_test(tk, test_hand_asymmetric_and_int4);
	tcase_add_test(tk, test_per_channel_scale_formula);
	tcase_add_test(tk, test_fast_matches_ref);
	tcase_add_test(tk, test_reduce_range);
	tcase_add_test(tk, test_q4_pack_round_trip);
	tcase_add_test(tk, test_act_ranges);
	tcase_add_test(tk, test_weight_only_against_reference);
	tcase_add_test(tk, test_int8_gemm_against_reference);
	tcase_add_test(tk, test_qconv2d_against_f32);
	tcase_add_test(tk, test_qconv2d_relu_fused);
	suite_add_tcase(s, tk);
	tcase_add_checked_fixture(tp, setup, tiny_teardown);
	tcase_set_timeout(tp, 60);
	tcase_add_test(tp, test_pipeline_static_int8);
	tcase_add_test(tp, test_pipeline_relu_fused);
	tcase_add_test(tp, test_pipeline_reduce_range);
	tcase_add_test(tp, test_pipeline_int4);
	tcase_add_test(tp, test_invalid_params);
	tcase_add_test(tp, test_no_train_split);
	suite_add_tcase(s, tp);
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
