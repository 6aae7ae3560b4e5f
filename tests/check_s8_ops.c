/* SPDX-License-Identifier: MIT */
/*
 * check_s8_ops.c - the int8 kernels beside the GEMM (core/kernels/s8_ops.h):
 * grouped, depthwise and pointwise convolution, the requantizing add and
 * global average pooling. Each kernel against its _ref bit for bit on every
 * path this CPU can run (forced as MCOMP_GEMM_S8 does; a path the CPU lacks
 * is skipped and said so), for 1, 2 and 3 threads, over strides, paddings,
 * kernels, channel counts off every vector width, odd positions, biases
 * or none, relu and relu6, and non-finite inputs. The convolution's _ref is
 * checked in turn against the int8 GEMM's reference (mc_gemm_u8s8_ref) fed
 * each group's im2col, an independent route to the same definition; the
 * add's and the pool's against their float definitions within one step.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/mcomp.h>

#include "kernels/s8_ops.h"

static const char *const paths[] = {"avx512-vnni", "avx2", "portable"};
#define NPATHS (int)(sizeof(paths) / sizeof(paths[0]))

static float *random_f32(size_t n, uint64_t stream, float lo, float hi)
{
	float *x = malloc((n ? n : 1) * sizeof(float));

	for (size_t i = 0; i < n; i++)
		x[i] = lo + (hi - lo) * mc_rand_uniform(41, stream, i);
	return x;
}

struct shape {
	int n, C, H, W, O, k, s, p, g;
};

static const struct shape shapes[] = {
    /* depthwise */
    {2, 16, 14, 14, 16, 3, 1, 1, 16},
    {3, 17, 7, 7, 17, 3, 2, 1, 17},
    {2, 5, 9, 8, 5, 5, 2, 2, 5},
    {1, 33, 4, 4, 33, 3, 1, 1, 33},
    {5, 96, 7, 7, 96, 3, 2, 1, 96},
    {2, 3, 6, 6, 3, 1, 1, 0, 3},
    {4, 128, 4, 4, 128, 3, 1, 1, 128},
    /* pointwise */
    {3, 16, 14, 14, 8, 1, 1, 0, 1},
    {2, 7, 7, 7, 13, 1, 1, 0, 1},
    {5, 32, 4, 4, 96, 1, 1, 0, 1},
    {1, 1, 5, 5, 3, 1, 1, 0, 1},
    {6, 24, 3, 3, 5, 1, 1, 0, 1},
    /* grouped, a depthwise multiplier, and one group that is neither */
    {2, 8, 9, 9, 12, 3, 1, 1, 4},
    {2, 6, 8, 8, 6, 3, 2, 1, 2},
    {2, 4, 7, 7, 8, 3, 1, 1, 4},
    {2, 3, 9, 9, 5, 3, 2, 1, 1},
    {3, 2, 5, 5, 4, 1, 2, 0, 1},
    /*
     * depthwise, MobileNetV2's planes and more: the flat kernel's (stride
     * 1, OW == W: 28x28, 7x7, 1x1 and 2x3 planes, 5x5 and 7x7 windows) and
     * the ones it leaves to the kernel of units (28x28 and 14x14 at stride
     * 2, odd widths, strides 3 and 4, 3x3 of padding 0 and 2 at stride 1)
     */
    {2, 16, 28, 28, 16, 3, 1, 1, 16},
    {2, 19, 28, 28, 19, 3, 2, 1, 19},
    {3, 24, 14, 14, 24, 3, 2, 1, 24},
    {2, 20, 7, 7, 20, 3, 1, 1, 20},
    {2, 7, 13, 11, 7, 3, 2, 1, 7},
    {2, 5, 9, 10, 5, 3, 3, 1, 5},
    {2, 4, 9, 12, 4, 3, 3, 0, 4},
    {2, 3, 11, 9, 3, 5, 4, 2, 3},
    {2, 6, 8, 8, 6, 7, 1, 3, 6},
    {3, 10, 9, 6, 10, 5, 1, 2, 10},
    {2, 9, 2, 3, 9, 3, 1, 1, 9},
    {2, 5, 6, 7, 5, 3, 1, 0, 5},
    {2, 5, 6, 7, 5, 3, 1, 2, 5},
    {2, 9, 1, 1, 9, 3, 1, 1, 9},
    {2, 9, 2, 3, 9, 3, 2, 1, 9},
    /* stems: one input channel, through the flat kernel but the last (stride 2) */
    {2, 1, 28, 28, 16, 3, 1, 1, 1},
    {3, 1, 7, 9, 5, 3, 1, 1, 1},
    {2, 1, 6, 5, 4, 5, 1, 2, 1},
    {2, 1, 9, 8, 3, 3, 2, 1, 1},
    /* depthwise at stride 2, rows of more outputs than a vector: 33, 70 and 71 wide */
    {2, 4, 6, 33, 4, 3, 2, 1, 4},
    {1, 3, 5, 70, 3, 3, 2, 1, 3},
    {2, 3, 4, 71, 3, 3, 2, 1, 3},
    /* the flat kernel on rows longer than a vector; stems of 1x1, 2x3 and 5x33 planes */
    {2, 3, 5, 40, 3, 3, 1, 1, 3},
    {1, 2, 3, 260, 2, 3, 1, 1, 2},
    {3, 1, 1, 1, 7, 3, 1, 1, 1},
    {2, 1, 2, 3, 17, 3, 1, 1, 1},
    {2, 1, 5, 33, 6, 3, 1, 1, 1},
    /*
     * the 3x3 kernel at stride 1 from u8 to u8 (dwf3u_vnni): one sample and
     * odd batches split among threads mid-sample, 7x7, 14x14, 28x28, odd
     * and long rows, 1024 positions (the last its table holds) and 1089
     * (left to dwf3_vnni)
     */
    {1, 5, 14, 14, 5, 3, 1, 1, 5},
    {3, 7, 7, 7, 7, 3, 1, 1, 7},
    {5, 3, 28, 28, 3, 3, 1, 1, 3},
    {3, 4, 11, 13, 4, 3, 1, 1, 4},
    {2, 2, 4, 100, 2, 3, 1, 1, 2},
    {3, 3, 32, 32, 3, 3, 1, 1, 3},
    {2, 2, 33, 33, 2, 3, 1, 1, 2},
    {7, 2, 1, 1, 2, 3, 1, 1, 2},
    /* samples in blocks of at most 64 KiB: 5 (a block boundary inside), 1 */
    {7, 64, 14, 14, 64, 3, 1, 1, 64},
    {3, 48, 28, 28, 48, 3, 1, 1, 48},
    /*
     * dense (one group, more than one input channel): the kernel of taps.
     * ResNet's 3x3 at stride 1 and 2 and its 1x1 projections at stride 2;
     * outputs not a multiple of 16 (nor of 8); planes of 49 positions (a
     * block of 32 and one of a single position), 1x1, 2x3 and 1x2; no
     * padding, padding wider than the window's half, 5x5 windows, long rows
     */
    {3, 16, 28, 28, 16, 3, 1, 1, 1},
    {2, 16, 28, 28, 32, 3, 2, 1, 1},
    {3, 16, 28, 28, 32, 1, 2, 0, 1},
    {3, 32, 7, 7, 64, 3, 1, 1, 1},
    {2, 5, 9, 8, 13, 3, 1, 1, 1},
    {3, 7, 6, 5, 21, 3, 2, 1, 1},
    {2, 3, 1, 1, 9, 3, 1, 1, 1},
    {3, 4, 2, 3, 7, 3, 1, 1, 1},
    {2, 6, 1, 2, 5, 1, 2, 0, 1},
    {2, 3, 5, 6, 5, 3, 1, 0, 1},
    {2, 6, 5, 5, 4, 3, 1, 2, 1},
    {2, 3, 9, 9, 6, 5, 1, 2, 1},
    {1, 2, 4, 40, 33, 3, 1, 1, 1},
    {4, 9, 7, 7, 3, 3, 2, 1, 1},
};
#define NSHAPES (int)(sizeof(shapes) / sizeof(shapes[0]))

static struct mc_qconv make(const struct shape *sh)
{
	struct mc_qconv cv = {.C = sh->C,
			      .H = sh->H,
			      .W = sh->W,
			      .O = sh->O,
			      .k = sh->k,
			      .s = sh->s,
			      .p = sh->p,
			      .g = sh->g};

	cv.OH = (sh->H + 2 * sh->p - sh->k) / sh->s + 1;
	cv.OW = (sh->W + 2 * sh->p - sh->k) / sh->s + 1;
	return cv;
}

/*
 * The same convolution by another route: per sample and group, the u8
 * window rows (taps in the padding holding za, which stand for 0) and
 * mc_gemm_u8s8_ref over the group's weights, transposed into place.
 */
static void gemm_route(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n, const float *x,
		       const int8_t *w, float *y)
{
	int Cg = cv->C / cv->g, Og = cv->O / cv->g, K = Cg * cv->k * cv->k;
	int P = cv->OH * cv->OW;
	size_t xs = (size_t)cv->C * cv->H * cv->W;
	uint8_t *xq = malloc(xs), *col = malloc((size_t)P * K);
	float *t = malloc((size_t)P * Og * sizeof(float));

	for (int s = 0; s < n; s++) {
		mc_quantize_u8_ref(x + s * xs, xs, q->sa, q->za, xq);
		for (int g = 0; g < cv->g; g++) {
			for (int oh = 0; oh < cv->OH; oh++)
				for (int ow = 0; ow < cv->OW; ow++) {
					uint8_t *r = col + (size_t)(oh * cv->OW + ow) * K;

					for (int cl = 0; cl < Cg; cl++)
						for (int ki = 0; ki < cv->k; ki++)
							for (int kj = 0; kj < cv->k; kj++) {
								int h = oh * cv->s - cv->p + ki;
								int ww = ow * cv->s - cv->p + kj;
								int c = g * Cg + cl;

								*r++ = h < 0 || h >= cv->H ||
									       ww < 0 || ww >= cv->W
									   ? (uint8_t)q->za
									   : xq[((size_t)c * cv->H +
										 h) *
										    cv->W +
										ww];
							}
				}
			mc_gemm_u8s8_ref(P, Og, K, col, K, q->sa, q->za, w + (size_t)g * Og * K, K,
					 q->sw + g * Og, q->bias ? q->bias + g * Og : NULL,
					 q->flags, t, Og);
			for (int o = 0; o < Og; o++)
				for (int p = 0; p < P; p++)
					y[((size_t)s * cv->O + g * Og + o) * P + p] =
					    t[(size_t)p * Og + o];
		}
	}
	free(t);
	free(col);
	free(xq);
}

/* variant 3: 7-bit weights in [-64, 64] (the quantize pass's reduce_range), both ends present. */
static void check_conv(int ci, int variant, int nonfinite, int *paths_run)
{
	const struct shape *sh = &shapes[ci];
	struct mc_qconv cv = make(sh);
	size_t xs = (size_t)sh->C * sh->H * sh->W, ys = (size_t)sh->O * cv.OH * cv.OW;
	size_t wn = (size_t)sh->O * (sh->C / sh->g) * sh->k * sh->k;
	float *x = random_f32(xs * sh->n, (uint64_t)ci, -2.0f, 4.0f);
	float *sw = random_f32((size_t)sh->O, 100 + (uint64_t)ci, 0.001f, 0.02f);
	float *bias = random_f32((size_t)sh->O, 200 + (uint64_t)ci, -1.0f, 1.0f);
	float *ref = malloc(ys * sh->n * sizeof(float)), *alt = malloc(ys * sh->n * sizeof(float));
	float *y = malloc(ys * sh->n * sizeof(float));
	int8_t *w = malloc(wn);
	static const unsigned flag_of[] = {0, MC_S8_RELU, MC_S8_RELU6};
	struct mc_qconv_q q = {.sa = 6.0f / 255.0f * (1 + variant),
			       .za = (37 * ci + 90 * variant) % 256,
			       .sw = sw,
			       .bias = variant == 1 ? NULL : bias,
			       .flags = flag_of[(ci + variant) % 3]};
	size_t work = mc_qconv_work(&cv, sh->n);
	void *ws = mc_calloc(work, 1);

	ck_assert(work != SIZE_MAX && ws);
	for (size_t i = 0; i < wn; i++)
		w[i] = (int8_t)(-127 + (int)(254.999f * mc_rand_uniform(43, (uint64_t)ci, i)));
	if (variant == 3)
		for (size_t i = 0; i < wn; i++)
			w[i] = (int8_t)(w[i] * 64 / 127); /* [-64, 64] */
	if (wn > 2) {
		w[0] = variant == 3 ? 64 : 127;
		w[1] = variant == 3 ? -64 : -127;
	}
	if (nonfinite) {
		x[0] = NAN;
		x[xs / 2] = INFINITY;
		x[xs - 1] = -INFINITY;
	}
	mc_qconv_forward_ref(&cv, &q, sh->n, x, w, ref);
	gemm_route(&cv, &q, sh->n, x, w, alt);
	for (size_t i = 0; i < ys * sh->n; i++)
		ck_assert_msg(memcmp(&ref[i], &alt[i], sizeof(float)) == 0,
			      "case %d: ref y[%zu] = %a, the GEMM route %a", ci, i, ref[i], alt[i]);
	for (int pi = 0; pi < NPATHS; pi++) {
		if (mc_gemm_s8_use(paths[pi]))
			continue;
		paths_run[pi] = 1;
		for (int t = 1; t <= 3; t++) {
			omp_set_num_threads(t);
			memset(y, 0x5a, ys * sh->n * sizeof(float));
			mc_qconv_forward(&cv, &q, sh->n, x, w, y, ws);
			for (size_t i = 0; i < ys * sh->n; i++)
				ck_assert_msg(memcmp(&ref[i], &y[i], sizeof(float)) == 0,
					      "case %d path %s threads %d: y[%zu] = %a, ref %a", ci,
					      paths[pi], t, i, y[i], ref[i]);
		}
	}
	mc_free(ws);
	free(w);
	free(y);
	free(alt);
	free(ref);
	free(bias);
	free(sw);
	free(x);
}

START_TEST(conv_every_path_matches_ref)
{
	int run[NPATHS] = {0};
	const char *saved = mc_gemm_s8_kernel();

	for (int ci = 0; ci < NSHAPES; ci++)
		for (int v = 0; v < 4; v++)
			check_conv(ci, v, v == 2, run);
	for (int pi = 0; pi < NPATHS; pi++)
		if (!run[pi])
			printf("SKIP: path %s: this CPU lacks it\n", paths[pi]);
	ck_assert(run[NPATHS - 1]);
	mc_gemm_s8_use(saved);
	omp_set_num_threads(2);
}
END_TEST

/* A depthwise layer's sums at their extreme: 255 x 127 at every tap of a 3x3 window. */
START_TEST(conv_extremes)
{
	struct shape sh = {2, 20, 6, 6, 20, 3, 1, 1, 20};
	struct mc_qconv cv = make(&sh);
	size_t xs = (size_t)sh.C * sh.H * sh.W, ys = (size_t)sh.O * cv.OH * cv.OW;
	float x[2 * 20 * 36], sw[20], ref[2 * 20 * 36], y[2 * 20 * 36];
	int8_t w[20 * 9];
	struct mc_qconv_q q = {.sa = 1.0f, .za = 0, .sw = sw, .bias = NULL, .flags = 0};
	void *ws = mc_calloc(mc_qconv_work(&cv, 2), 1);

	for (size_t i = 0; i < 2 * xs; i++)
		x[i] = i % 7 ? 255.0f : 0.0f;
	for (int i = 0; i < 20 * 9; i++)
		w[i] = i % 2 ? 127 : -127;
	for (int i = 0; i < 20; i++)
		sw[i] = 1.0f;
	mc_qconv_forward_ref(&cv, &q, 2, x, w, ref);
	for (int pi = 0; pi < NPATHS; pi++) {
		if (mc_gemm_s8_use(paths[pi]))
			continue;
		mc_qconv_forward(&cv, &q, 2, x, w, y, ws);
		ck_assert(memcmp(ref, y, 2 * ys * sizeof(float)) == 0);
	}
	/* the middle output of channel 0: five taps of +127, four of -127, all x = 255 or 0 */
	ck_assert(isfinite(ref[0]));
	mc_free(ws);
}
END_TEST

/*
 * Inputs where quantizing without a division could go wrong: x / sa at and
 * one ulp either side of half-integers (ties go to even), near the clamp at
 * +-512, NaN and infinities, and scales whose reciprocal loses bits (then
 * every lane is divided). Depthwise (strides 1, 2) and pointwise layers
 * against _ref on every path.
 */
START_TEST(conv_quantizes_edges_as_ref)
{
	static const struct shape sh[] = {{2, 16, 10, 10, 16, 3, 1, 1, 16},
					  {2, 16, 10, 10, 16, 3, 2, 1, 16},
					  {2, 16, 10, 10, 8, 1, 1, 0, 1}};
	static const float scales[] = {6.0f / 255.0f, 0.0123f, 1.0f / 3.0f,
				       7.77e-5f,      1e-39f,  0x1p126f};
	const char *saved = mc_gemm_s8_kernel();

	for (int si = 0; si < (int)(sizeof(sh) / sizeof(sh[0])); si++)
		for (int ki = 0; ki < (int)(sizeof(scales) / sizeof(scales[0])); ki++) {
			struct mc_qconv cv = make(&sh[si]);
			int n = sh[si].n;
			size_t xs = (size_t)cv.C * cv.H * cv.W, ys = (size_t)cv.O * cv.OH * cv.OW;
			size_t wn = (size_t)cv.O * (cv.C / cv.g) * cv.k * cv.k;
			float *x = malloc(n * xs * sizeof(float)), sw[16], *ref, *y;
			int8_t *w = malloc(wn);
			float sa = scales[ki];
			struct mc_qconv_q q = {
			    .sa = sa, .za = 3 + 40 * ki, .sw = sw, .bias = NULL, .flags = 0};
			void *ws = mc_calloc(mc_qconv_work(&cv, n), 1);

			ref = malloc(n * ys * sizeof(float));
			y = malloc(n * ys * sizeof(float));
			for (int o = 0; o < 16; o++)
				sw[o] = 0.01f;
			for (size_t i = 0; i < wn; i++)
				w[i] = (int8_t)((int)(i * 37 % 255) - 127);
			for (size_t i = 0; i < n * xs; i++) {
				float half = ((float)(int)(i % 1100) - 550.0f) + 0.5f,
				      v = half * sa;

				switch (i % 5) {
				case 1:
					v = nextafterf(v, INFINITY);
					break;
				case 2:
					v = nextafterf(v, -INFINITY);
					break;
				case 3:
					v = (float)(i % 7 == 0 ? 512 : -512) * sa;
					break;
				}
				x[i] = v;
			}
			x[5] = NAN;
			x[17] = INFINITY;
			x[29] = -INFINITY;
			mc_qconv_forward_ref(&cv, &q, n, x, w, ref);
			for (int pi = 0; pi < NPATHS; pi++) {
				if (mc_gemm_s8_use(paths[pi]))
					continue;
				for (int t = 1; t <= 3; t += 2) {
					omp_set_num_threads(t);
					mc_qconv_forward(&cv, &q, n, x, w, y, ws);
					for (size_t i = 0; i < n * ys; i++)
						ck_assert_msg(
						    memcmp(&ref[i], &y[i], sizeof(float)) == 0,
						    "shape %d scale %g path %s threads %d: "
						    "y[%zu] = %a, ref %a",
						    si, sa, paths[pi], t, i, y[i], ref[i]);
				}
			}
			mc_free(ws);
			free(y);
			free(ref);
			free(w);
			free(x);
		}
	mc_gemm_s8_use(saved);
	omp_set_num_threads(2);
}
END_TEST

/*
 * The u8 forms (struct mc_qconv_io, mc_qadd_io, mc_qgap_u8): fed the u8
 * values of their f32 inputs, and asked for u8 outputs at a scale of their
 * reader, they give exactly the bytes of the f32 route followed by
 * mc_quantize_u8_ref, on every path and thread count; forms a layer cannot
 * take are refused with nothing written.
 */
START_TEST(u8_io_matches_f32_route)
{
	/* depthwise, pointwise, stem and dense shapes */
	static const int cases[] = {
	    0, 1, 2, 4, 6, 7, 8, 11, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32,
	    33, 34, 36, 37, 38, 39, 40, 41, 42, 43, 10, 9, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53,
	    /* dense, and stems the flat kernel leaves */
	    15, 16, 35, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67};
	const char *saved = mc_gemm_s8_kernel();
	const int zo = 97;

	for (int ci = 0; ci < (int)(sizeof(cases) / sizeof(cases[0])); ci++) {
		const struct shape *sh = &shapes[cases[ci]];
		struct mc_qconv cv = make(sh);
		int n = sh->n;
		size_t xs = (size_t)sh->C * sh->H * sh->W, ys = (size_t)sh->O * cv.OH * cv.OW;
		size_t wn = (size_t)sh->O * (sh->C / sh->g) * sh->k * sh->k;
		float *x = random_f32(xs * n, 500 + (uint64_t)ci, -2.0f, 4.0f);
		float *sw = random_f32((size_t)sh->O, 600 + (uint64_t)ci, 0.001f, 0.02f);
		float *bias = random_f32((size_t)sh->O, 700 + (uint64_t)ci, -1.0f, 1.0f);
		float *ref = malloc(ys * n * sizeof(float)), *y = malloc(ys * n * sizeof(float));
		uint8_t *xq = malloc(xs * n), *yref = malloc(ys * n), *yq = malloc(ys * n);
		int8_t *w = malloc(wn);
		/* relu6 where the output's u8 of 6 is 255 (so 0.0371) and where it is not */
		const float so = ci / 3 % 2 ? 0.05f : 0.0371f;
		static const unsigned flag_of[] = {0, MC_S8_RELU6, MC_S8_RELU};
		struct mc_qconv_q q = {.sa = 6.0f / 255.0f,
				       .za = 40 + ci,
				       .sw = sw,
				       .bias = bias,
				       .flags = flag_of[ci % 3]};
		void *ws = mc_calloc(mc_qconv_work(&cv, n), 1);

		ck_assert(mc_qconv_io_ok(&cv));
		for (size_t i = 0; i < wn; i++)
			w[i] =
			    (int8_t)(-127 + (int)(254.999f * mc_rand_uniform(44, (uint64_t)ci, i)));
		x[1] = NAN;
		mc_qconv_forward_ref(&cv, &q, n, x, w, ref);
		mc_quantize_u8_ref(x, xs * n, q.sa, q.za, xq);
		mc_quantize_u8_ref(ref, ys * n, so, zo, yref);
		for (int pi = 0; pi < NPATHS; pi++) {
			if (mc_gemm_s8_use(paths[pi]))
				continue;
			/* t 3 and 2 again on AVX-512 without vpermb, where the CPU has it */
			for (int t = 1; t <= 5; t += 2) {
				struct mc_qconv_io in8 = {.xq = xq, .y = y};
				struct mc_qconv_io out8 = {.x = x, .yq = yq, .so = so, .zo = zo};
				struct mc_qconv_io both = {.xq = xq, .yq = yq, .so = so, .zo = zo};

				if (t == 5 && (pi != 0 || !mc_s8_dw_vbmi(0)))
					break;
				omp_set_num_threads(t == 5 ? 2 : t);
				memset(y, 0x5a, ys * n * sizeof(float));
				ck_assert_int_eq(mc_qconv_forward_io(&cv, &q, n, &in8, w, ws), 0);
				ck_assert_msg(memcmp(y, ref, ys * n * sizeof(float)) == 0,
					      "case %d path %s: u8 in differs", ci, paths[pi]);
				memset(yq, 0x5a, ys * n);
				ck_assert_int_eq(mc_qconv_forward_io(&cv, &q, n, &out8, w, ws), 0);
				ck_assert_msg(memcmp(yq, yref, ys * n) == 0,
					      "case %d path %s: u8 out differs", ci, paths[pi]);
				memset(yq, 0x5a, ys * n);
				ck_assert_int_eq(mc_qconv_forward_io(&cv, &q, n, &both, w, ws), 0);
				ck_assert_msg(memcmp(yq, yref, ys * n) == 0,
					      "case %d path %s (%d): u8 in and out differ", ci,
					      paths[pi], t);
			}
			mc_s8_dw_vbmi(1);
		}
		{
			struct mc_qconv_io bad = {.x = x, .yq = yq, .so = 0.0f, .zo = zo};
			struct mc_qconv_io two = {.x = x, .xq = xq, .y = y};

			memset(yq, 0x5a, ys * n);
			ck_assert_int_eq(mc_qconv_forward_io(&cv, &q, n, &bad, w, ws), -1);
			ck_assert_int_eq(mc_qconv_forward_io(&cv, &q, n, &two, w, ws), -1);
			ck_assert(yq[0] == 0x5a);
		}
		mc_free(ws);
		free(w);
		free(yq);
		free(yref);
		free(xq);
		free(y);
		free(ref);
		free(bias);
		free(sw);
		free(x);
	}
	{
		/* a grouped layer that is neither: f32 only */
		struct mc_qconv cv = make(&shapes[12]);
		struct mc_qconv_io io = {
		    .xq = (const uint8_t *)"", .y = NULL, .yq = (uint8_t *)"", .so = 1.0f};
		struct mc_qconv_q q = {.sa = 1.0f};

		ck_assert(!mc_qconv_io_ok(&cv));
		ck_assert_int_eq(mc_qconv_forward_io(&cv, &q, 1, &io, NULL, NULL), -1);
	}
	{
		/* the add: u8 inputs and output against its f32 route */
		const struct mc_qadd_q q = {0.03f, 0.05f, 0.07f, 128, 100, 120};
		const float so = 0.0371f;
		int64_t n = 20003; /* a part vector at the end */
		float *a = random_f32((size_t)n, 800, -6.0f, 6.0f);
		float *b = random_f32((size_t)n, 801, -3.0f, 9.0f);
		float *ref = malloc((size_t)n * sizeof(float)),
		      *y = malloc((size_t)n * sizeof(float));
		uint8_t *aq = malloc((size_t)n), *bq = malloc((size_t)n), *yref = malloc((size_t)n);
		uint8_t *yq = malloc((size_t)n);
		void *ws = mc_calloc(mc_qadd_work(n), 1);

		ck_assert_int_eq(mc_qadd_ref(&q, n, a, b, ref), 0);
		mc_quantize_u8_ref(a, (size_t)n, q.sa, q.za, aq);
		mc_quantize_u8_ref(b, (size_t)n, q.sb, q.zb, bq);
		mc_quantize_u8_ref(ref, (size_t)n, so, zo, yref);
		for (int pi = 0; pi < NPATHS; pi++) {
			struct mc_qadd_io mixed = {.a = a, .bq = bq, .y = y};
			struct mc_qadd_io both = {.aq = aq, .bq = bq, .yq = yq, .so = so, .zo = zo};

			if (mc_gemm_s8_use(paths[pi]))
				continue;
			omp_set_num_threads(3);
			ck_assert_int_eq(mc_qadd_io(&q, n, &mixed, ws), 0);
			ck_assert(memcmp(y, ref, (size_t)n * sizeof(float)) == 0);
			ck_assert_int_eq(mc_qadd_io(&q, n, &both, ws), 0);
			ck_assert(memcmp(yq, yref, (size_t)n) == 0);
		}
		mc_free(ws);
		free(yq);
		free(yref);
		free(bq);
		free(aq);
		free(y);
		free(ref);
		free(b);
		free(a);
	}
	{
		/* the pool from u8 */
		const struct mc_qgap_q q = {0.02f, 0.03f, 11, 130};
		int n = 3, C = 5;
		int64_t HW = 49;
		float *x = random_f32((size_t)n * C * HW, 900, -1.0f, 4.0f);
		float ref[15], y[15];
		uint8_t *xq = malloc((size_t)n * C * HW);

		ck_assert_int_eq(mc_qgap_ref(&q, n, C, HW, x, ref), 0);
		mc_quantize_u8_ref(x, (size_t)n * C * HW, q.si, q.zi, xq);
		for (int pi = 0; pi < NPATHS; pi++) {
			if (mc_gemm_s8_use(paths[pi]))
				continue;
			ck_assert_int_eq(mc_qgap_u8(&q, n, C, HW, xq, y), 0);
			ck_assert(memcmp(y, ref, sizeof(ref)) == 0);
		}
		free(xq);
		free(x);
	}
	mc_gemm_s8_use(saved);
	omp_set_num_threads(2);
}
END_TEST

START_TEST(qmul_ratios)
{
	int32_t m;
	int s;

	ck_assert_int_eq(mc_qmul(0.5, 21, &m, &s), 0);
	ck_assert(ldexp((double)m, -s) == 0.5);
	ck_assert_int_lt(m, 1 << 21);
	ck_assert_int_eq(mc_qmul(3.0, 21, &m, &s), 0);
	ck_assert(ldexp((double)m, -s) == 3.0);
	ck_assert_int_eq(mc_qmul(1.0 / 3.0, 30, &m, &s), 0);
	ck_assert(fabs(ldexp((double)m, -s) - 1.0 / 3.0) < 1e-9);
	ck_assert_int_eq(mc_qmul((double)(1 << 22), 21, &m, &s), -1);
	ck_assert_int_eq(mc_qmul(INFINITY, 21, &m, &s), -1);
	ck_assert_int_eq(mc_qmul(0.0, 21, &m, &s), -1);
	ck_assert_int_eq(mc_qmul(NAN, 21, &m, &s), -1);
}
END_TEST

static const int64_t add_sizes[] = {1, 7, 8, 15, 16, 17, 784, 8192 * 3 + 5, 100000};

START_TEST(add_every_path_matches_ref)
{
	static const struct mc_qadd_q qs[] = {
	    {0.03f, 0.05f, 0.07f, 128, 100, 120},
	    {0.5f, 0.001f, 0.01f, 0, 255, 3},
	    {1e-4f, 2e-4f, 3e-2f, 77, 1, 250},
	};
	const char *saved = mc_gemm_s8_kernel();
	int runs = 0;

	for (int qi = 0; qi < 3; qi++)
		for (int si = 0; si < (int)(sizeof(add_sizes) / sizeof(add_sizes[0])); si++) {
			int64_t n = add_sizes[si];
			float *a = random_f32((size_t)n, 300 + si, -6.0f, 6.0f);
			float *b = random_f32((size_t)n, 400 + si, -3.0f, 9.0f);
			float *ref = malloc((size_t)n * sizeof(float)),
			      *y = malloc((size_t)n * sizeof(float));
			void *ws = mc_calloc(mc_qadd_work(n), 1);
			const struct mc_qadd_q *q = &qs[qi];

			if (n > 3) {
				a[1] = NAN;
				b[2] = INFINITY;
				a[3] = -INFINITY;
			}
			ck_assert_int_eq(mc_qadd_ref(q, n, a, b, ref), 0);
			/* the definition in floats: within one output step */
			for (int64_t i = 4; i < n; i++) {
				uint8_t qa, qb;
				double v;

				mc_quantize_u8_ref(a + i, 1, q->sa, q->za, &qa);
				mc_quantize_u8_ref(b + i, 1, q->sb, q->zb, &qb);
				v = nearbyint(
					(q->sa * (qa - q->za) + (double)q->sb * (qb - q->zb)) /
					q->so) +
				    q->zo;
				v = (v < 0 ? 0 : v > 255 ? 255 : v) - q->zo;
				ck_assert_msg(fabs(ref[i] - q->so * v) <= 1.0001 * q->so,
					      "add %d: y[%lld] = %g, float %g", qi, (long long)i,
					      ref[i], q->so * v);
			}
			for (int pi = 0; pi < NPATHS; pi++) {
				if (mc_gemm_s8_use(paths[pi]))
					continue;
				runs++;
				for (int t = 1; t <= 3; t++) {
					omp_set_num_threads(t);
					memset(y, 0x5a, (size_t)n * sizeof(float));
					ck_assert_int_eq(mc_qadd(q, n, a, b, y, ws), 0);
					ck_assert_msg(memcmp(y, ref, (size_t)n * sizeof(float)) ==
							  0,
						      "add %d n %lld path %s threads %d differs",
						      qi, (long long)n, paths[pi], t);
				}
			}
			mc_free(ws);
			free(y);
			free(ref);
			free(b);
			free(a);
		}
	ck_assert_int_gt(runs, 0);
	{
		struct mc_qadd_q bad = {0.1f, 0.1f, 0.0f, 0, 0, 0};
		float a = 1, b = 2, y = 7;

		ck_assert_int_eq(mc_qadd_ref(&bad, 1, &a, &b, &y), -1);
		bad.so = 1e-9f; /* a ratio of 1e8: no 21-bit multiplier */
		ck_assert_int_eq(mc_qadd_ref(&bad, 1, &a, &b, &y), -1);
		bad.so = 0.1f;
		bad.zb = 256;
		ck_assert_int_eq(mc_qadd_ref(&bad, 1, &a, &b, &y), -1);
		ck_assert(y == 7.0f);
	}
	mc_gemm_s8_use(saved);
	omp_set_num_threads(2);
}
END_TEST

START_TEST(gap_every_path_matches_ref)
{
	static const int64_t hws[] = {1, 16, 49, 70, 196, 1000};
	static const struct mc_qgap_q qs[] = {
	    {6.0f / 255, 4.0f / 255, 0, 0},
	    {0.05f, 0.02f, 120, 30},
	};
	const char *saved = mc_gemm_s8_kernel();

	for (int qi = 0; qi < 2; qi++)
		for (int hi = 0; hi < (int)(sizeof(hws) / sizeof(hws[0])); hi++) {
			int n = 3 + hi, C = 5 + 7 * hi;
			int64_t HW = hws[hi];
			size_t total = (size_t)n * C * HW;
			float *x = random_f32(total, 500 + hi, -1.0f, 6.0f);
			float *ref = malloc((size_t)n * C * sizeof(float)),
			      *y = malloc((size_t)n * C * sizeof(float));
			void *ws = mc_calloc(mc_qgap_work(n, C, HW), 1);
			const struct mc_qgap_q *q = &qs[qi];

			x[0] = NAN;
			ck_assert_int_eq(mc_qgap_ref(q, n, C, HW, x, ref), 0);
			/* the mean of the dequantized inputs, requantized: within one step */
			for (int pl = 1; pl < n * C; pl++) {
				double sum = 0;

				for (int64_t j = 0; j < HW; j++) {
					uint8_t v;

					mc_quantize_u8_ref(x + (size_t)pl * HW + j, 1, q->si, q->zi,
							   &v);
					sum += q->si * ((double)v - q->zi);
				}
				sum /= (double)HW;
				if (sum > q->so * (255 - q->zo))
					sum = q->so * (255 - q->zo);
				if (sum < -q->so * q->zo)
					sum = -q->so * q->zo;
				ck_assert_msg(fabs(ref[pl] - sum) <= 1.0001 * q->so,
					      "gap: y[%d] = %g, mean %g", pl, ref[pl], sum);
			}
			for (int pi = 0; pi < NPATHS; pi++) {
				if (mc_gemm_s8_use(paths[pi]))
					continue;
				for (int t = 1; t <= 3; t++) {
					omp_set_num_threads(t);
					memset(y, 0x5a, (size_t)n * C * sizeof(float));
					ck_assert_int_eq(mc_qgap(q, n, C, HW, x, y, ws), 0);
					ck_assert_msg(
					    memcmp(y, ref, (size_t)n * C * sizeof(float)) == 0,
					    "gap HW %lld path %s threads %d differs", (long long)HW,
					    paths[pi], t);
				}
			}
			mc_free(ws);
			free(y);
			free(ref);
			free(x);
		}
	mc_gemm_s8_use(saved);
	omp_set_num_threads(2);
}
END_TEST

/*
 * The ops over the kernels: a file whose qparams are no u8 quantization (a
 * scale NaN, 0 or negative, a zero point off 0..255 or not whole) makes
 * qadd and qglobal_avgpool write NaN, never read past anything or crash; a
 * good one gives finite values on the u8 grid of the output scale.
 */
/* One op alone over x[4, 2, 3, 3], its qparams pairs set to good (0.02, 100) but pair bad_pair. */
static void run_op(const char *op, int pairs, int bad_pair, const float *badv, int outs)
{
	char arch[512];
	struct mc_err err = {0};
	struct mc_model *m;
	struct mc_exec *e;
	const float *y;
	float x[4 * 18], *qp;
	int nan = 0;

	snprintf(arch, sizeof(arch),
		 "{\"format\":1,\"input\":[2,3,3],\"nodes\":[{\"op\":\"%s\",\"name\":\"q\","
		 "\"inputs\":[%s]}]}",
		 op, pairs == 3 ? "\"input\",\"input\"" : "\"input\"");
	m = mc_model_from_arch(arch, "test", &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 1);
	qp = mc_model_node(m, 0)->params[0]->data;
	for (int k = 0; k < pairs; k++) {
		qp[2 * k] = k == bad_pair ? badv[0] : 0.02f;
		qp[2 * k + 1] = k == bad_pair ? badv[1] : 100;
	}
	for (int i = 0; i < 72; i++)
		x[i] = -1.0f + 0.05f * i;
	e = mc_exec_new(m, 4, 0, &err);
	ck_assert_msg(e != NULL, "%s", err.msg);
	y = mc_forward(e, x, 4);
	for (int i = 0; i < 4 * outs; i++) {
		nan += isnan(y[i]);
		if (bad_pair < 0) {
			float q = y[i] / 0.02f;

			ck_assert_msg(isfinite(y[i]) && fabsf(q - nearbyintf(q)) < 1e-3f,
				      "%s: y[%d] = %g is off the output grid", op, i, y[i]);
		}
	}
	ck_assert_msg(nan == (bad_pair < 0 ? 0 : 4 * outs), "%s, pair %d (%g, %g) bad: %d NaN", op,
		      bad_pair, bad_pair < 0 ? 0.0 : badv[0], bad_pair < 0 ? 0.0 : badv[1], nan);
	mc_exec_free(e);
	mc_model_free(m);
}

START_TEST(ops_refuse_damaged_qparams)
{
	static const float bad[][2] = {{NAN, 0},    {0, 0},	  {-1, 0},
				       {0.1f, 256}, {0.1f, 1.5f}, {INFINITY, 0}};

	run_op("qadd", 3, -1, NULL, 18);
	run_op("qglobal_avgpool", 2, -1, NULL, 2);
	for (int b = 0; b < (int)(sizeof(bad) / sizeof(bad[0])); b++) {
		for (int k = 0; k < 3; k++)
			run_op("qadd", 3, k, bad[b], 18);
		for (int k = 0; k < 2; k++)
			run_op("qglobal_avgpool", 2, k, bad[b], 2);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("s8_ops");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, conv_every_path_matches_ref);
	tcase_add_test(tc, conv_extremes);
	tcase_add_test(tc, conv_quantizes_edges_as_ref);
	tcase_add_test(tc, u8_io_matches_f32_route);
	tcase_add_test(tc, qmul_ratios);
	tcase_add_test(tc, add_every_path_matches_ref);
	tcase_add_test(tc, gap_every_path_matches_ref);
	tcase_add_test(tc, ops_refuse_damaged_qparams);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
