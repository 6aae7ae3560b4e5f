/* SPDX-License-Identifier: MIT */
/*
 * s8_ops.c - the int8 kernels of s8_ops.h: grouped and depthwise
 * convolution, the requantizing add, global average pooling.
 *
 * The depthwise kernel works in the f32 kernel's layout, one (sample,
 * channel) plane at a time with vectors over its output positions (see
 * "The depthwise kernel" below); there is no layout pass in or out. The
 * kernels that quantize f32 inputs on the AVX-512 path do it mostly
 * without a division, to the same bits (quant16).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/tensor.h>

#include "kernels/cpu.h"
#include "kernels/s8_ops.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#define SLOTS	  16   /* at most this many threads, each with a slot of the workspace */
#define PAR_MIN	  2e5  /* multiply-adds below which one thread is faster than a team */
#define ADD_CHUNK 8192 /* values of a and b quantized at a time by one thread */
#define ADD_BITS  21 /* multipliers of the add below 2^21: two products and the rounding fit s32 */

static size_t up64(size_t v)
{
	return (v + 63) & ~(size_t)63;
}

static int threads_for(int items, double work)
{
	int nt = omp_in_parallel() || work < PAR_MIN ? 1 : omp_get_max_threads();

	if (nt > items)
		nt = items;
	return nt < SLOTS ? (nt < 1 ? 1 : nt) : SLOTS;
}

int mc_qmul(double r, int bits, int32_t *mul, int *shift)
{
	if (!(r > 0.0) || !isfinite(r) || bits < 1 || bits > 31)
		return -1;
	for (int s = 30; s >= 0; s--) {
		double m = nearbyint(ldexp(r, s));

		if (m < ldexp(1.0, bits)) {
			*mul = (int32_t)m;
			*shift = s;
			return 0;
		}
	}
	return -1;
}

/* The requantization of one convolution output, as s8_ops.h defines it. */
static inline float requant1(float scale, int32_t acc, float bias, unsigned flags)
{
	float v = scale * (float)acc + bias;

	if (flags & (MC_S8_RELU | MC_S8_RELU6)) {
		if (!(v > 0.0f))
			v = 0.0f;
		if ((flags & MC_S8_RELU6) && v > 6.0f)
			v = 6.0f;
	}
	return v;
}

#if defined(__x86_64__) || defined(__i386__)
/*
 * u8 quantization of 16 values, as mc_quantize_u8 (nearbyint(x / s) + z,
 * clamped; NaN to 0), mostly without its division: t = x * r, r = 1 / s
 * rounded, is within 3 * 2^-24 |x / s| of the rounded quotient, so for
 * |t| < 512 rounding t gives what rounding x / s gives unless t lies
 * within 2^-12 of a half-integer (3 * 2^-15 < 2^-12), and for |t| >= 512
 * both clamp to the same end (zero points are at most 255). The test is
 * |t - nearbyint(t)| <= 1/2 - 2^-12 (exact: the difference is; below 512
 * it says t is at least 2^-12 from a half-integer, at or above 512 either
 * answer is safe). Only a vector with a lane left in doubt (near a
 * half-integer, NaN, infinite) is divided, and only those lanes take the
 * quotient. r is 0 (always divide) when s is outside [2^-125, 2^125], where
 * 1 / s would lose bits.
 */
struct quant_k {
	float s, r, z;
	unsigned trust; /* 0xffff: lanes may take t; 0 (r = 0): none may */
};

static struct quant_k quant_k(float s, int z)
{
	struct quant_k k = {s, 0.0f, (float)z, 0};

	if (s >= 0x1p-125f && s <= 0x1p125f) {
		k.r = 1.0f / s;
		k.trust = 0xffff;
	}
	return k;
}

__attribute__((target("avx512f"), always_inline)) static inline __m512i
quant16(const struct quant_k *k, __m512 x)
{
	const __m512 lo = _mm512_setzero_ps(), hi = _mm512_set1_ps(255.0f);
	__m512 t = _mm512_mul_ps(x, _mm512_set1_ps(k->r));
	__m512 v = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__mmask16 ok =
	    _mm512_mask_cmp_ps_mask((__mmask16)k->trust, _mm512_abs_ps(_mm512_sub_ps(t, v)),
				    _mm512_set1_ps(0.5f - 0x1p-12f), _CMP_LE_OQ);

	if (ok != 0xffff)
		v = _mm512_mask_roundscale_ps(v, (__mmask16)~ok,
					      _mm512_div_ps(x, _mm512_set1_ps(k->s)),
					      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	/* max(v, 0) takes 0 for NaN, as mc_quantize_u8 does */
	v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, _mm512_set1_ps(k->z)), lo), hi);
	return _mm512_cvtps_epu32(v);
}

/*
 * 16 values of quant16 (in [0, 255]) to bytes: narrowed in a register
 * (vpmovdb) and stored, masked only for a part vector; a narrowing store
 * to memory (vpmovusdb m128) is slower on AMD.
 */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void
store16_u8(uint8_t *d, __mmask16 m, __m512i u)
{
	__m128i b = _mm512_cvtepi32_epi8(u);

	if (m == 0xffff)
		_mm_storeu_si128((__m128i *)d, b);
	else
		_mm512_mask_storeu_epi8(d, (__mmask64)m, _mm512_castsi128_si512(b));
}

/*
 * store16_u8(d, m, quant16(k, x)) in fewer operations: the clamp to 255 is
 * the narrowing's unsigned saturation (values past 2^32 and +inf convert to
 * 0xffffffff: 255 too), and with pos (x after relu: no NaN, no negative) the
 * clamp to 0 has nothing to do.
 */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline void
quant16_store(const struct quant_k *k, uint8_t *d, __mmask16 m, __m512 x, int pos)
{
	__m512 t = _mm512_mul_ps(x, _mm512_set1_ps(k->r));
	__m512 v = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	__mmask16 ok =
	    _mm512_mask_cmp_ps_mask((__mmask16)k->trust, _mm512_abs_ps(_mm512_sub_ps(t, v)),
				    _mm512_set1_ps(0.5f - 0x1p-12f), _CMP_LE_OQ);
	__m128i b;

	if (ok != 0xffff)
		v = _mm512_mask_roundscale_ps(v, (__mmask16)~ok,
					      _mm512_div_ps(x, _mm512_set1_ps(k->s)),
					      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
	v = _mm512_add_ps(v, _mm512_set1_ps(k->z));
	if (!pos)
		v = _mm512_max_ps(v, _mm512_setzero_ps());
	b = _mm512_cvtusepi32_epi8(_mm512_cvtps_epu32(v));
	if (m == 0xffff)
		_mm_storeu_si128((__m128i *)d, b);
	else
		_mm512_mask_storeu_epi8(d, (__mmask64)m, _mm512_castsi128_si512(b));
}

/*
 * The requantization every convolution kernel ends with: sc (acc - zc) + bb
 * (a multiply, then an add: never fused), then relu (max with 0: NaN gives
 * 0) and relu6 (min with 6) as asked.
 */
__attribute__((target("avx512f"), always_inline)) static inline __m512
requant16(__m512i acc, __m512i zc, __m512 sc, __m512 bb, int relu, int relu6)
{
	__m512 v =
	    _mm512_add_ps(_mm512_mul_ps(sc, _mm512_cvtepi32_ps(_mm512_sub_epi32(acc, zc))), bb);

	if (relu)
		v = _mm512_max_ps(v, _mm512_setzero_ps());
	if (relu6)
		v = _mm512_min_ps(v, _mm512_set1_ps(6.0f));
	return v;
}

__attribute__((target("avx2"), always_inline)) static inline __m256
requant8(__m256i acc, __m256i zc, __m256 sc, __m256 bb, int relu, int relu6)
{
	__m256 v =
	    _mm256_add_ps(_mm256_mul_ps(sc, _mm256_cvtepi32_ps(_mm256_sub_epi32(acc, zc))), bb);

	if (relu)
		v = _mm256_max_ps(v, _mm256_setzero_ps());
	if (relu6)
		v = _mm256_min_ps(v, _mm256_set1_ps(6.0f));
	return v;
}

/* q[n] = u8(x[n]) through quant16, the tail masked (callers: the AVX-512 VNNI paths). */
__attribute__((target("avx512f,avx512bw"))) static void
quant_avx512(const struct quant_k *k, const float *x, size_t n, uint8_t *q)
{
	const struct quant_k kk = *k; /* in registers: stores to q may alias *k */

	for (size_t i = 0; i < n; i += 16) {
		__mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);

		store16_u8(q + i, m, quant16(&kk, _mm512_maskz_loadu_ps(m, x + i)));
	}
}
#endif

/* ---------------------------------------------------------------- convolution */

int mc_qconv_is_dw(const struct mc_qconv *cv)
{
	return cv->g == cv->C && cv->O == cv->C;
}

int mc_qconv_is_pw(const struct mc_qconv *cv)
{
	return cv->g == 1 && cv->k == 1 && cv->s == 1 && cv->p == 0;
}

/*
 * The pointwise kernel's layout: per sample, the u8 image xq[C][P], then
 * channel pairs xi[C2][Pp] as two u16 in a u32 (channel 2j low, 2j + 1
 * high; positions past P and the channel past an odd C zero), multiplied by
 * weight pairs with vpmaddwd: exact s32 sums of two u8 x s8 products.
 * With AVX-512 VNNI (the int8 GEMM's avx512-vnni and amx paths) channel
 * quads instead, xi[C4][Pp] four u8 in a u32 (channel 4j in the low byte),
 * by weight quads with vpdpbusd (exact: no saturation, the four products'
 * sum fits s32), quantized and laid out in one pass of registers; the
 * workspace of pairs holds them.
 */
struct pw_geo {
	int C2, Pp, Op;
	size_t head, xq, xi, yt, slot; /* bytes */
};

static int pw_geo(const struct mc_qconv *cv, struct pw_geo *g)
{
	size_t P = (size_t)cv->OH * cv->OW;

	g->C2 = (cv->C + 1) / 2;
	g->Pp = (int)((P + 15) / 16 * 16);
	g->Op = (cv->O + 7) / 8 * 8; /* 4 outputs at a time (pairs), 8 (quads) */
	/* wp[Op][C2], zc[Op], sc[Op], bb[Op]: 4 bytes each */
	if (P > INT32_MAX / 2 || (size_t)g->C2 > SIZE_MAX / 256 / g->Pp ||
	    (size_t)g->Op > SIZE_MAX / 256 / ((size_t)g->C2 + 3))
		return -1;
	g->head = up64(((size_t)g->C2 + 3) * g->Op * 4);
	g->xq = up64((size_t)cv->C * P);
	g->xi = up64((size_t)g->C2 * g->Pp * 4);
	/* a sample's f32 output [O][P] before it is quantized (mc_qconv_forward_io's yq) */
	if ((size_t)cv->O > SIZE_MAX / 256 / P)
		return -1;
	g->yt = up64((size_t)cv->O * P * sizeof(float));
	g->slot = g->xq + g->xi + g->yt;
	return 0;
}

struct dw_geo;
static int dw_tq(void);
static int dw_geo(const struct mc_qconv *cv, int tq, struct dw_geo *g);
static size_t dw_work(const struct mc_qconv *cv, int n);
static int is_dense(const struct mc_qconv *cv);
static int dense_geo(const struct mc_qconv *cv, struct pw_geo *g, size_t *slot);

size_t mc_qconv_work(const struct mc_qconv *cv, int n)
{
	int slots = n < 1 ? 1 : n < SLOTS ? n : SLOTS;
	struct pw_geo pg;
	size_t xs = up64((size_t)cv->C * cv->H * cv->W);

	if (mc_qconv_is_pw(cv)) {
		if (pw_geo(cv, &pg) || pg.slot > (SIZE_MAX - pg.head) / (size_t)slots)
			return SIZE_MAX;
		return pg.head + pg.slot * (size_t)slots;
	}
	if (is_dense(cv)) {
		size_t slot;

		if (dense_geo(cv, &pg, &slot) || slot > (SIZE_MAX - pg.head) / (size_t)slots)
			return SIZE_MAX;
		return pg.head + slot * (size_t)slots;
	}
	if (!mc_qconv_is_dw(cv) && !mc_qconv_is_plane(cv))
		return xs > SIZE_MAX / slots ? SIZE_MAX : xs * (size_t)slots;
	return dw_work(cv, n);
}

/* One sample of any grouping from its u8 image xq[C][H][W]: the definition as loops. */
static void conv_sample(const struct mc_qconv *cv, const struct mc_qconv_q *q, const uint8_t *xq,
			const int8_t *w, float *y)
{
	int Cg = cv->C / cv->g, Og = cv->O / cv->g, k = cv->k;
	size_t P = (size_t)cv->OH * cv->OW;

	for (int o = 0; o < cv->O; o++) {
		const int8_t *wo = w + (size_t)o * Cg * k * k;
		int c0 = o / Og * Cg;
		float scale = q->sa * q->sw[o], b = q->bias ? q->bias[o] : 0.0f;

		for (int oh = 0; oh < cv->OH; oh++)
			for (int ow = 0; ow < cv->OW; ow++) {
				int h0 = oh * cv->s - cv->p, w0 = ow * cv->s - cv->p;
				int32_t acc = 0;

				for (int cl = 0; cl < Cg; cl++) {
					const uint8_t *img = xq + (size_t)(c0 + cl) * cv->H * cv->W;

					for (int ki = 0; ki < k; ki++) {
						int h = h0 + ki;

						if (h < 0 || h >= cv->H)
							continue;
						for (int kj = 0; kj < k; kj++) {
							int x = w0 + kj;

							if (x < 0 || x >= cv->W)
								continue;
							acc +=
							    ((int32_t)img[(size_t)h * cv->W + x] -
							     q->za) *
							    wo[((size_t)cl * k + ki) * k + kj];
						}
					}
				}
				y[(size_t)o * P + (size_t)oh * cv->OW + ow] =
				    requant1(scale, acc, b, q->flags);
			}
	}
}

void mc_qconv_forward_ref(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n,
			  const float *x, const int8_t *w, float *y)
{
	size_t xs = (size_t)cv->C * cv->H * cv->W, ys = (size_t)cv->O * cv->OH * cv->OW;
	uint8_t *xq = malloc(xs ? xs : 1);

	for (int s = 0; s < n; s++) {
		if (!xq) {
			for (size_t i = 0; i < ys; i++)
				y[(size_t)s * ys + i] = NAN;
			continue;
		}
		mc_quantize_u8_ref(x + (size_t)s * xs, xs, q->sa, q->za, xq);
		conv_sample(cv, q, xq, w, y + (size_t)s * ys);
	}
	free(xq);
}

/*
 * The depthwise kernel, in the f32 kernel's layout (dwconv.c): one (sample,
 * channel) item at a time. The channel's plane is quantized (mc_quantize_u8)
 * and copied into a padded u8 plane xp[Hr][Wr] whose border holds za; from
 * it, tap units: u = the taps tq * j .. tq * j + tq - 1 of one window row,
 * four u8 in a u32 for vpdpbusd (AVX-512 VNNI) or two u16 halves for
 * vpmaddwd (AVX2), taps past k weighted 0. Units are stored by row phase,
 *
 *	tp[j][ph][a][ow] = the unit j at columns s*ow + tq*j .. of xp row s*a + ph,
 *
 * so that window row ki of output p = oh * OW + ow is tp at the constant
 * offset ((j * s + ki % s) * Ra + ki / s) * OW plus p: each vector of 16 (8)
 * consecutive outputs, across rows, is k * ceil(k / tq) loads and multiplies
 * (3 for a 3x3 on VNNI) and goes straight into y[c][OH][OW]. Units are built
 * with vector loads at strides 1 and 2 (scalar at others); the portable path
 * sums xp's taps directly. Every path adds the same integers (exactly,
 * mod 2^32), then takes za * sum(w) off (taps in the padding gave za * w).
 */
struct dw_geo {
	int tq, nu;		     /* taps a unit, units a window row */
	int Hr, Wr, Ra;		     /* xp's rows and bytes a row; rows of a phase */
	size_t head;		     /* bytes: wt[C][k][nu] (u32), zc[C], sc[C], bb[C] */
	size_t xq, xp, tp, yt, slot; /* bytes of a slot's parts */
};

static int dw_tq(void)
{
	switch (mc_s8_simd()) {
	case 2:
		return 4;
	case 1:
		return 2;
	}
	return 1;
}

static int dw_geo(const struct mc_qconv *cv, int tq, struct dw_geo *g)
{
	size_t OWv = (size_t)(cv->OW + 15) / 16 * 16, wr, P = (size_t)cv->OH * cv->OW;

	g->tq = tq;
	g->nu = (cv->k + tq - 1) / tq;
	g->Ra = cv->OH + (cv->k - 1) / cv->s;
	/* unit loads read up to s * (OWv - 1) + tq * nu bytes of a row */
	wr = (size_t)cv->s * (OWv - 1) + (size_t)tq * g->nu;
	if (wr < (size_t)cv->W + 2 * (size_t)cv->p)
		wr = (size_t)cv->W + 2 * (size_t)cv->p;
	/* the setup of a layer admits nothing near these; refuse what is */
	if (wr > INT32_MAX / 64 || (size_t)cv->s * g->Ra > INT32_MAX / 64 ||
	    (size_t)cv->H + 2 * (size_t)cv->p > INT32_MAX / 64 || P > INT32_MAX / 64 ||
	    (size_t)cv->C * cv->k > INT32_MAX / 64 / (size_t)g->nu)
		return -1;
	g->Wr = (int)((wr + 15) / 16 * 16);
	g->Hr = cv->H + 2 * cv->p;
	if (g->Hr < cv->s * g->Ra)
		g->Hr = cv->s * g->Ra;
	g->head = up64(((size_t)cv->C * cv->k * g->nu + 3 * (size_t)cv->C) * 4);
	g->xq = up64((size_t)cv->H * cv->W);
	if ((size_t)g->Hr * g->Wr > SIZE_MAX / 4 ||
	    (size_t)g->nu * cv->s * g->Ra > SIZE_MAX / 4 / P)
		return -1;
	g->xp = up64((size_t)g->Hr * g->Wr);
	/* 16 units of slack: a row's last vector runs past it, into the next */
	g->tp = tq == 1 ? 0 : up64(((size_t)g->nu * cv->s * g->Ra * cv->OW + 16) * 4);
	g->yt = up64(P * sizeof(float)); /* a plane's f32 output before it is quantized */
	g->slot = g->xq + g->xp + g->tp + g->yt;
	return 0;
}

/* The head: weight units, za * sum(w), scales, biases per channel. */
static void dw_head(const struct mc_qconv *cv, const struct mc_qconv_q *q, const struct dw_geo *g,
		    const int8_t *w, void *head)
{
	uint32_t *wt = head;
	int32_t *zc = (int32_t *)(wt + (size_t)cv->C * cv->k * g->nu);
	float *sc = (float *)(zc + cv->C), *bb = sc + cv->C;
	int k = cv->k, bits = 32 / g->tq;

	memset(head, 0, ((size_t)cv->C * k * g->nu + 3 * (size_t)cv->C) * 4);
	for (int c = 0; c < cv->C; c++) {
		const int8_t *wc = w + (size_t)c * k * k;
		int32_t sum = 0;

		for (int ki = 0; ki < k; ki++)
			for (int kj = 0; kj < k; kj++) {
				uint32_t v = g->tq == 4	  ? (uint8_t)wc[ki * k + kj]
					     : g->tq == 2 ? (uint16_t)(int16_t)wc[ki * k + kj]
							  : (uint32_t)(int32_t)wc[ki * k + kj];

				wt[((size_t)c * k + ki) * g->nu + kj / g->tq] |=
				    bits == 32 ? v : v << (bits * (kj % g->tq));
				sum += wc[ki * k + kj];
			}
		zc[c] = (int32_t)((uint32_t)q->za * (uint32_t)sum);
		sc[c] = q->sa * q->sw[c];
		bb[c] = q->bias ? q->bias[c] : 0.0f;
	}
}

/* xp from the channel's u8 plane xq[H][W]: the border, and rows past the image, hold za. */
static void dw_pad(const struct mc_qconv *cv, const struct dw_geo *g, int za, const uint8_t *xq,
		   uint8_t *xp)
{
	memset(xp, za, (size_t)g->Hr * g->Wr);
	for (int h = 0; h < cv->H; h++)
		memcpy(xp + (size_t)(h + cv->p) * g->Wr + cv->p, xq + (size_t)h * cv->W,
		       (size_t)cv->W);
}

/* The xp row of phase ph, row a (for its unit plane). */
static const uint8_t *dw_row(const struct mc_qconv *cv, const struct dw_geo *g, const uint8_t *xp,
			     int ph, int a)
{
	return xp + ((size_t)a * cv->s + ph) * g->Wr;
}

/* The units of one xp row at any stride, one at a time (tq bytes from s * ow + tq * j). */
static void dw_units_scalar(const struct mc_qconv *cv, const struct dw_geo *g, const uint8_t *row,
			    int j, uint32_t *dst)
{
	for (int ow = 0; ow < cv->OW; ow++) {
		const uint8_t *b = row + (size_t)cv->s * ow + (size_t)g->tq * j;

		dst[ow] = g->tq == 4 ? (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
					   (uint32_t)b[3] << 24
				     : (uint32_t)b[0] | (uint32_t)b[1] << 16;
	}
}

/* Units from tp at which window row ki, unit j of output 0 lies (output p: p units on). */
static inline size_t dw_off(const struct mc_qconv *cv, const struct dw_geo *g, int ki, int j)
{
	return (((size_t)j * cv->s + (size_t)(ki % cv->s)) * g->Ra + (size_t)(ki / cv->s)) *
	       (size_t)cv->OW;
}

typedef void (*dw_item_fn)(const struct mc_qconv *cv, const struct dw_geo *g, const void *head,
			   int c, const uint8_t *xp, uint32_t *tp, unsigned flags, float *y);

/* One channel on the portable path: the taps of xp summed per output, as dw_rows once did. */
static void dw_item_portable(const struct mc_qconv *cv, const struct dw_geo *g, const void *head,
			     int c, const uint8_t *xp, uint32_t *tp, unsigned flags, float *y)
{
	int k = cv->k;
	const uint32_t *wt = (const uint32_t *)head + (size_t)c * k * k;
	const int32_t *zc = (const int32_t *)head + (size_t)cv->C * k * k;
	const float *sc = (const float *)(zc + cv->C), *bb = sc + cv->C;

	for (int oh = 0; oh < cv->OH; oh++)
		for (int ow = 0; ow < cv->OW; ow++) {
			const uint8_t *base = xp + (size_t)oh * cv->s * g->Wr + (size_t)ow * cv->s;
			uint32_t acc = 0;

			for (int ki = 0; ki < k; ki++)
				for (int kj = 0; kj < k; kj++)
					acc += (uint32_t)base[(size_t)ki * g->Wr + kj] *
					       wt[ki * k + kj];
			y[(size_t)oh * cv->OW + ow] =
			    requant1(sc[c], (int32_t)(acc - (uint32_t)zc[c]), bb[c], flags);
		}
}

#if defined(__x86_64__) || defined(__i386__)
/* Unit pairs (two u16 in a u32) of every phase row, then 8 outputs at a time with vpmaddwd. */
__attribute__((target("avx2"))) static void dw_item_avx2(const struct mc_qconv *cv,
							 const struct dw_geo *g, const void *head,
							 int c, const uint8_t *xp, uint32_t *tp,
							 unsigned flags, float *y)
{
	int k = cv->k, nu = g->nu, s = cv->s, OW = cv->OW, P = cv->OH * cv->OW;
	size_t pl = (size_t)g->Ra * OW; /* units of one (j, ph) plane */
	const uint32_t *wt = (const uint32_t *)head + (size_t)c * k * nu;
	const int32_t *zc = (const int32_t *)head + (size_t)cv->C * k * nu;
	const float *sc = (const float *)(zc + cv->C), *bb = sc + cv->C;
	const __m256 scv = _mm256_set1_ps(sc[c]), bbv = _mm256_set1_ps(bb[c]);
	const __m256i zcv = _mm256_set1_epi32(zc[c]);
	const int relu = (flags & (MC_S8_RELU | MC_S8_RELU6)) != 0,
		  relu6 = (flags & MC_S8_RELU6) != 0;
	size_t o6[6] = {0};
	__m256i w6[6] = {zcv, zcv, zcv, zcv, zcv, zcv};

	/* in increasing order: a row's last vector runs into the next, written after it */
	for (int j = 0; j < nu; j++)
		for (int ph = 0; ph < s; ph++)
			for (int a = 0; a < g->Ra; a++) {
				const uint8_t *row = dw_row(cv, g, xp, ph, a) + 2 * j;
				uint32_t *dst = tp + ((size_t)j * s + ph) * pl + (size_t)a * OW;

				if (s == 1)
					for (int ow = 0; ow < OW; ow += 8) {
						__m256i lo = _mm256_cvtepu8_epi32(
						    _mm_loadl_epi64((const __m128i *)(row + ow)));
						__m256i hi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(
						    (const __m128i *)(row + ow + 1)));

						_mm256_storeu_si256(
						    (__m256i *)(dst + ow),
						    _mm256_or_si256(lo, _mm256_slli_epi32(hi, 16)));
					}
				else if (s == 2)
					for (int ow = 0; ow < OW; ow += 8)
						_mm256_storeu_si256(
						    (__m256i *)(dst + ow),
						    _mm256_cvtepu8_epi16(_mm_loadu_si128(
							(const __m128i *)(row + 2 * ow))));
				else
					dw_units_scalar(cv, g, row - 2 * j, j, dst);
			}
	if (k == 3 && nu == 2)
		for (int t = 0; t < 6; t++) {
			o6[t] = dw_off(cv, g, t / 2, t % 2);
			w6[t] = _mm256_set1_epi32((int)wt[t]);
		}
	for (int p0 = 0; p0 < P; p0 += 8) {
		__m256i acc = _mm256_setzero_si256();
		__m256 v;

		if (k == 3 && nu == 2) {
			const uint32_t *u = tp + p0;

			for (int t = 0; t < 6; t++)
				acc = _mm256_add_epi32(
				    acc,
				    _mm256_madd_epi16(
					_mm256_loadu_si256((const __m256i *)(u + o6[t])), w6[t]));
		} else {
			for (int ki = 0, t = 0; ki < k; ki++)
				for (int j = 0; j < nu; j++, t++)
					acc = _mm256_add_epi32(
					    acc,
					    _mm256_madd_epi16(
						_mm256_loadu_si256(
						    (const __m256i *)(tp + dw_off(cv, g, ki, j) +
								      p0)),
						_mm256_set1_epi32((int)wt[t])));
		}
		v = requant8(acc, zcv, scv, bbv, relu, relu6);
		if (P - p0 >= 8) {
			_mm256_storeu_ps(y + p0, v);
		} else {
			float t[8];

			_mm256_storeu_ps(t, v);
			memcpy(y + p0, t, (size_t)(P - p0) * sizeof(float));
		}
	}
}

/* Unit quads (four u8 in a u32) of every phase row, then 16 outputs at a time with vpdpbusd. */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
dw_item_vnni(const struct mc_qconv *cv, const struct dw_geo *g, const void *head, int c,
	     const uint8_t *xp, uint32_t *tp, unsigned flags, float *y)
{
	int k = cv->k, nu = g->nu, s = cv->s, OW = cv->OW, P = cv->OH * cv->OW;
	size_t pl = (size_t)g->Ra * OW;
	const uint32_t *wt = (const uint32_t *)head + (size_t)c * k * nu;
	const int32_t *zc = (const int32_t *)head + (size_t)cv->C * k * nu;
	const float *sc = (const float *)(zc + cv->C), *bb = sc + cv->C;
	const __m512 scv = _mm512_set1_ps(sc[c]), bbv = _mm512_set1_ps(bb[c]);
	const __m512i zcv = _mm512_set1_epi32(zc[c]);
	const int relu = (flags & (MC_S8_RELU | MC_S8_RELU6)) != 0,
		  relu6 = (flags & MC_S8_RELU6) != 0;
	size_t o3[3] = {0, 0, 0};
	__m512i w3[3] = {zcv, zcv, zcv};

	for (int j = 0; j < nu; j++)
		for (int ph = 0; ph < s; ph++)
			for (int a = 0; a < g->Ra; a++) {
				const uint8_t *row = dw_row(cv, g, xp, ph, a) + 4 * j;
				uint32_t *dst = tp + ((size_t)j * s + ph) * pl + (size_t)a * OW;

				if (s == 1)
					for (int ow = 0; ow < OW; ow += 16) {
						__m512i q = _mm512_cvtepu8_epi32(
						    _mm_loadu_si128((const __m128i *)(row + ow)));

						for (int b = 1; b < 4; b++)
							q = _mm512_or_si512(
							    q,
							    _mm512_slli_epi32(
								_mm512_cvtepu8_epi32(
								    _mm_loadu_si128(
									(const __m128i *)(row + ow +
											  b))),
								8 * b));
						_mm512_storeu_si512(dst + ow, q);
					}
				else if (s == 2)
					for (int ow = 0; ow < OW; ow += 16) {
						__m512i lo =
						    _mm512_cvtepu16_epi32(_mm256_loadu_si256(
							(const __m256i *)(row + 2 * ow)));
						__m512i hi =
						    _mm512_cvtepu16_epi32(_mm256_loadu_si256(
							(const __m256i *)(row + 2 * ow + 2)));

						_mm512_storeu_si512(
						    dst + ow,
						    _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
					}
				else
					dw_units_scalar(cv, g, row - 4 * j, j, dst);
			}
	if (k == 3 && nu == 1)
		for (int ki = 0; ki < 3; ki++) {
			o3[ki] = dw_off(cv, g, ki, 0);
			w3[ki] = _mm512_set1_epi32((int)wt[ki]);
		}
	for (int p0 = 0; p0 < P; p0 += 16) {
		__mmask16 m = P - p0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (P - p0)) - 1);
		__m512i acc = _mm512_setzero_si512();
		__m512 v;

		if (k == 3 && nu == 1) {
			/* the common case: three loads and vpdpbusd, offsets known */
			const uint32_t *u = tp + p0;

			acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(u + o3[0]), w3[0]);
			acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(u + o3[1]), w3[1]);
			acc = _mm512_dpbusd_epi32(acc, _mm512_loadu_si512(u + o3[2]), w3[2]);
		} else {
			for (int ki = 0, t = 0; ki < k; ki++)
				for (int j = 0; j < nu; j++, t++)
					acc = _mm512_dpbusd_epi32(
					    acc, _mm512_loadu_si512(tp + dw_off(cv, g, ki, j) + p0),
					    _mm512_set1_epi32((int)wt[t]));
		}
		v = requant16(acc, zcv, scv, bbv, relu, relu6);
		_mm512_mask_storeu_ps(y + p0, m, v);
	}
}
#endif

#if defined(__x86_64__) || defined(__i386__)
/* dw2_plane_vnni's vpermd and vpshufb indices (lane l: bytes 2l .. 2l + 3 of the 64) */
static const int32_t dw2_didx[16] = {0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9};
static const uint8_t dw2_bidx[64] = {
    0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9,
    0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9, 0, 1, 2, 3, 2, 3, 4, 5, 4, 5, 6, 7, 6, 7, 8, 9};

/* vpermb's indices for the same (AVX-512 VBMI) */
static const uint8_t dw2_pidx[64] = {
    0,	1,  2,	3,  2,	3,  4,	5,  4,	5,  6,	7,  6,	7,  8,	9,  8,	9,  10, 11, 10, 11,
    12, 13, 12, 13, 14, 15, 14, 15, 16, 17, 16, 17, 18, 19, 18, 19, 20, 21, 20, 21, 22, 23,
    22, 23, 24, 25, 24, 25, 26, 27, 26, 27, 28, 29, 28, 29, 30, 31, 30, 31, 32, 33};

/*
 * A 3x3 window of stride 2 and padding 1 on AVX-512 VNNI, one channel's
 * plane from its u8 image x[H][W] (no padded copy): the units (w0, w1, w2,
 * 0 times x[h][2ow - 1 .. 2ow + 1], za outside the image) of the padded
 * rows r = 0 .. 2 OH (h = r - 1), each built from one byte-masked load by
 * vpermd and vpshufb (vpermb, in asm as dwf_row3b's, with vbmi) and stored
 * by row phase, tp[0][a] = row 2a (a = 0 .. OH), tp[1][a] = row 2a + 1, so
 * that window row ki of output p = oh * OW + ow is the unit at p of tp[0],
 * tp[1], tp[0] + OW: as dw_item_vnni's, a vector of 16 outputs across rows
 * is three loads and vpdpbusd, the sum started at -zc. The output is
 * requantized (and quantized to u8 for yq, by quant16_store) in registers;
 * relu6 as the caller says (dwf3u_vnni's reason to leave its min out).
 */
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline void
dw2_body(const struct mc_qconv *cv, const uint32_t *wt, int32_t zc, float sc, float bb, int za,
	 const uint8_t *x, uint32_t *tp, const struct quant_k *qo, float *y, uint8_t *yq, int vbmi,
	 int relu, int relu6)
{
	const struct quant_k qk = *qo; /* in registers: stores to yq may alias *qo */
	int H = cv->H, W = cv->W, OH = cv->OH, OW = cv->OW, P = OH * OW;
	uint32_t *ev = tp, *od = tp + (size_t)(OH + 1) * OW;
	const __m512i zab = _mm512_set1_epi8((char)za);
	const __m512i nzc = _mm512_set1_epi32((int32_t)(0u - (uint32_t)zc));
	const __m512i didx = _mm512_loadu_si512(dw2_didx), bidx = _mm512_loadu_si512(dw2_bidx);
	const __m512i pidx = _mm512_loadu_si512(dw2_pidx);
	const __m512i w0 = _mm512_set1_epi32((int)wt[0]), w1 = _mm512_set1_epi32((int)wt[1]);
	const __m512i w2 = _mm512_set1_epi32((int)wt[2]);
	const __m512 scv = _mm512_set1_ps(sc), bbv = _mm512_set1_ps(bb);

	for (int ow0 = 0; ow0 < OW; ow0 += 16) {
		/* the window's bytes are columns c0 .. c0 + 63, those in the image loaded */
		int c0 = 2 * ow0 - 1, lo = c0 < 0 ? -c0 : 0, hi = W - c0;
		__mmask64 m = (hi >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << hi) - 1) &
			      ~(((__mmask64)1 << lo) - 1);
		__mmask16 sm =
		    OW - ow0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (OW - ow0)) - 1);
		const uint8_t *at = x + c0; /* c0 = -1: byte 0 is masked off */

		for (int r = 0; r <= 2 * OH; r++) {
			int h = r - 1;
			uint32_t *dst = (r % 2 ? od : ev) + (size_t)(r / 2) * OW + ow0;
			__m512i v = zab; /* a row of padding: za throughout */

			if (h >= 0 && h < H) {
				v = _mm512_mask_loadu_epi8(zab, m, at + (size_t)h * W);
				if (vbmi)
					__asm__("vpermb %1, %2, %0" : "=v"(v) : "v"(v), "v"(pidx));
				else
					v = _mm512_shuffle_epi8(_mm512_permutexvar_epi32(didx, v),
								bidx);
			}
			_mm512_mask_storeu_epi32(dst, sm, v);
		}
	}
	for (int p0 = 0; p0 < P; p0 += 16) {
		__mmask16 m = P - p0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (P - p0)) - 1);
		__m512i a = _mm512_dpbusd_epi32(nzc, _mm512_loadu_si512(ev + p0), w0);
		__m512 v;

		a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(od + p0), w1);
		a = _mm512_dpbusd_epi32(a, _mm512_loadu_si512(ev + OW + p0), w2);
		v = requant16(a, _mm512_setzero_si512(), scv, bbv, relu, relu6);
		if (yq)
			quant16_store(&qk, yq + p0, m, v, relu);
		else
			_mm512_mask_storeu_ps(y + p0, m, v);
	}
}

/*
 * A kernel body specialised on (vbmi, relu, relu6), each a constant in the
 * call F(B, R, R6) so the always_inline body is compiled once per case.
 */
#define DW_VARIANTS(F)                                                                             \
	do {                                                                                       \
		if (relu6)                                                                         \
			vbmi ? F(1, 1, 1) : F(0, 1, 1);                                            \
		else if (relu)                                                                     \
			vbmi ? F(1, 1, 0) : F(0, 1, 0);                                            \
		else                                                                               \
			vbmi ? F(1, 0, 0) : F(0, 0, 0);                                            \
	} while (0)

/* dw2_body for flags; min6: relu6 needs its min with 6 in yq too (always in y). */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
dw2_plane_vnni(const struct mc_qconv *cv, const uint32_t *wt, int32_t zc, float sc, float bb,
	       int za, unsigned flags, const uint8_t *x, uint32_t *tp, const struct quant_k *qo,
	       float *y, uint8_t *yq, int vbmi, int min6)
{
	int relu = (flags & (MC_S8_RELU | MC_S8_RELU6)) != 0,
	    relu6 = (flags & MC_S8_RELU6) != 0 && (!yq || min6);

#define DW2(B, R, R6) dw2_body(cv, wt, zc, sc, bb, za, x, tp, qo, y, yq, B, R, R6)
	DW_VARIANTS(DW2);
#undef DW2
}
#endif

static dw_item_fn dw_item_path(int tq)
{
#if defined(__x86_64__) || defined(__i386__)
	if (tq == 4)
		return dw_item_vnni;
	if (tq == 2)
		return dw_item_avx2;
#endif
	return dw_item_portable;
}

/*
 * The flat depthwise kernel, for stride 1 with OW == W (a k x k window of
 * padding (k - 1) / 2, as MobileNetV2's 3x3 of padding 1): vectors over a
 * plane's output positions taken as one row-major array p = oh * OW + ow,
 * not row by row, so that a 7x7 or 14x14 plane fills its vectors and no
 * per-row setup remains. The plane is copied into xs[H][W] between za
 * margins, so that tap (ki, kj) of every output is one load at the
 * constant offset (ki - p) * W + (kj - p) from p: rows above and below the
 * image read the margins, and a column step kj - p != 0 that leaves the
 * row (0 <= ow + kj - p < OW fails) would read the neighbouring row and
 * takes za instead, by a lane mask. Each tap is a zero-extended u8 load
 * times the broadcast weight: vpdpbusd on AVX-512 VNNI (the weight in byte
 * 0), vpmaddwd on AVX2 (in the low half), exact either way, so the sum and
 * the za * sum(w) correction are those of the kernel above, and the output
 * is requantized (and quantized to u8 for yq) in registers with
 * mc_quantize_u8's operations. On AVX-512 VNNI a 3x3 window (the
 * depthwise layers' and the stem's) packs a window row's three taps into
 * the bytes of one dword instead (dwf3_vnni: one vpdpbusd a row, loads
 * straight from the u8 plane, a stem's vectors built once for all its
 * channels; from u8 to u8, dwf3u_vnni: a channel's samples in one call,
 * masks from a table, vpermb with AVX-512 VBMI). Strided layers keep the
 * kernel of units (at stride 2, 3x3 on AVX-512 VNNI: dw2_plane_vnni, units
 * built in registers from the u8 plane).
 */
#define DWF_MAXK 7

struct dwf_geo {
	int nt;		     /* taps */
	int dj0, ndj;	     /* column steps dj0 .. dj0 + ndj - 1 */
	size_t pre, pb;	     /* bytes of xs before the image; of xs */
	size_t xq, yt, slot; /* bytes of a slot's parts: the u8 plane, f32 output (portable) */
	int32_t off[DWF_MAXK * DWF_MAXK]; /* a tap's offset from p in xs */
	uint8_t dj[DWF_MAXK * DWF_MAXK];  /* its column step less dj0 */
	int32_t ow0[16];		  /* ow of positions 0 .. 15 */
	int step8, step16;		  /* 8 and 16 mod OW: what a vector's step adds to ow */
};

int mc_qconv_is_plane(const struct mc_qconv *cv)
{
	return (mc_qconv_is_dw(cv) || (cv->C == 1 && cv->g == 1)) && cv->k <= DWF_MAXK &&
	       cv->s == 1 && cv->OW == cv->W && cv->OH == cv->H;
}

static int dwf_geo(const struct mc_qconv *cv, struct dwf_geo *g)
{
	int k = cv->k, p = cv->p, OW = cv->OW;
	int64_t P = (int64_t)cv->OH * OW, post;

	if (!mc_qconv_is_plane(cv) || P > INT32_MAX / 64 || (int64_t)OW * (k + 2) > INT32_MAX / 64)
		return -1;
	g->nt = k * k;
	g->dj0 = -p;
	g->ndj = k;
	for (int ki = 0; ki < k; ki++)
		for (int kj = 0; kj < k; kj++) {
			g->off[ki * k + kj] = (ki - p) * OW + kj - p;
			g->dj[ki * k + kj] = (uint8_t)kj;
		}
	for (int l = 0; l < 16; l++)
		g->ow0[l] = l % OW;
	g->step8 = 8 % OW;
	g->step16 = 16 % OW;
	/* the last vector reads up to 16 bytes past P at the largest offset */
	post = P + 64 + (int64_t)(k - 1 - p) * (OW + 1);
	g->pre = up64((size_t)p * (OW + 1));
	g->pb = up64(g->pre + (size_t)post);
	g->xq = up64((size_t)cv->H * cv->W);
	g->yt = up64((size_t)P * sizeof(float));
	g->slot = g->xq + g->pb + g->yt;
	return 0;
}

/* The u8 plane x[H][W] into xs, whose margins hold za. */
static void dwf_fill(const struct mc_qconv *cv, const struct dwf_geo *g, const uint8_t *x,
		     uint8_t *xs)
{
	memcpy(xs + g->pre, x, (size_t)cv->H * cv->W);
}

/* A 3x3 window's row of weights as AVX-512's dwf_row3 lanes take them: w0, w1, w2, 0. */
static inline int32_t dwf_wrow3(const int8_t *w)
{
	return (int32_t)((uint32_t)(uint8_t)w[0] | (uint32_t)(uint8_t)w[1] << 8 |
			 (uint32_t)(uint8_t)w[2] << 16);
}

/* One channel's plane on the portable path, into y (f32). */
static void dwf_plane_portable(const struct mc_qconv *cv, const struct dwf_geo *g, const int8_t *wc,
			       int32_t zc, float sc, float bb, int za, unsigned flags,
			       const uint8_t *xs, float *y)
{
	int OW = cv->OW, P = cv->OH * cv->OW;

	for (int p = 0; p < P; p++) {
		int ow = p % OW;
		uint32_t acc = 0;

		for (int t = 0; t < g->nt; t++) {
			int j = ow + g->dj[t] + g->dj0;
			uint32_t x =
			    j >= 0 && j < OW ? xs[g->pre + (size_t)(p + g->off[t])] : (uint32_t)za;

			acc += x * (uint32_t)(int32_t)wc[t];
		}
		y[p] = requant1(sc, (int32_t)(acc - (uint32_t)zc), bb, flags);
	}
}

#if defined(__x86_64__) || defined(__i386__)
/* A tap of 16 positions: their bytes, za where m is clear, by the weight in byte 0. */
__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline __m512i
dwf_tap_vnni(__m512i acc, __m512i zav, __mmask16 m, const uint8_t *src, __m512i w)
{
	return _mm512_dpbusd_epi32(
	    acc, _mm512_mask_cvtepu8_epi32(zav, m, _mm_loadu_si128((const __m128i *)src)), w);
}

/*
 * A 3x3 window's row of 16 positions p0 .. p0 + 15 for vpdpbusd: lane l
 * holds x[p0 + l - 1], x[p0 + l], x[p0 + l + 1] (and a fourth byte, weighted
 * 0) in its dword, built from the 32 bytes at src - 1 by vpermd (bytes 4g ..
 * 4g + 15 into 128-bit lane g) and vpshufb. Bytes outside the plane (ld
 * clear: not read) and those whose column step leaves the row (keep clear)
 * take za.
 */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512i
dwf_row3(const uint8_t *src, __mmask32 ld, __mmask64 keep, __m512i zab, __m512i didx, __m512i bidx)
{
	__m512i v = _mm512_mask_loadu_epi8(zab, (__mmask64)ld, src - 1);

	return _mm512_mask_shuffle_epi8(zab, keep, _mm512_permutexvar_epi32(didx, v), bidx);
}

/* The bytes of the 32 at x + at in the plane x[0 .. P - 1]. */
static inline __mmask32 dwf_in(int64_t at, int64_t P)
{
	int64_t lo = at < 0 ? -at : 0, hi = P - at;

	if (lo >= 32 || hi <= 0)
		return 0;
	return (hi >= 32 ? ~(__mmask32)0 : ((__mmask32)1 << hi) - 1) & ~(((__mmask32)1 << lo) - 1);
}

/* dwf_row3's bytes to keep: all but x[p - 1] where ow = 0 and x[p + 1] where ow = OW - 1. */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __mmask64
dwf_keep3(__m512i ow, __m512i owm1)
{
	__mmask16 l = _mm512_cmpeq_epi32_mask(ow, _mm512_setzero_si512());
	__mmask16 r = _mm512_cmpeq_epi32_mask(ow, owm1);
	__m512i e = _mm512_or_si512(_mm512_maskz_mov_epi32(l, _mm512_set1_epi32(0xff)),
				    _mm512_maskz_mov_epi32(r, _mm512_set1_epi32(0xff0000)));

	return _mm512_testn_epi8_mask(e, e);
}

/* dwf_row3's vpermd and vpshufb indices (lane l: bytes l .. l + 3 of the 32) */
static const int32_t dwf_didx[16] = {0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6};
static const uint8_t dwf_bidx[64] = {
    0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6, 0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6,
    0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6, 0, 1, 2, 3, 1, 2, 3, 4, 2, 3, 4, 5, 3, 4, 5, 6};

/*
 * One channel's plane of a window other than 3x3 on AVX-512 VNNI: 16
 * positions at a time, a tap at a time: a zero-extended load (za in the
 * lanes whose column step leaves the row) and vpdpbusd with the weight in
 * byte 0.
 */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
dwf_plane_vnni(const struct mc_qconv *cv, const struct dwf_geo *g, const int8_t *wc, int32_t zc,
	       float sc, float bb, int za, unsigned flags, const uint8_t *xs,
	       const struct quant_k *qo, float *y, uint8_t *yq)
{
	const struct quant_k qk = *qo; /* in registers: stores to yq may alias *qo */
	int OW = cv->OW, P = cv->OH * cv->OW, nt = g->nt;
	const uint8_t *src[DWF_MAXK * DWF_MAXK];
	__m512i wv[DWF_MAXK * DWF_MAXK];
	const __m512i zav = _mm512_set1_epi32(za), zcv = _mm512_set1_epi32(zc);
	const __m512i owv = _mm512_set1_epi32(OW), stepv = _mm512_set1_epi32(g->step16);
	const __m512 scv = _mm512_set1_ps(sc), bbv = _mm512_set1_ps(bb);
	const int relu = (flags & (MC_S8_RELU | MC_S8_RELU6)) != 0,
		  relu6 = (flags & MC_S8_RELU6) != 0;
	__m512i ow = _mm512_loadu_si512(g->ow0);

	for (int t = 0; t < nt; t++) {
		src[t] = xs + g->pre + g->off[t];
		wv[t] = _mm512_set1_epi32((uint8_t)wc[t]);
	}
	for (int p0 = 0; p0 < P; p0 += 16) {
		__mmask16 m = P - p0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (P - p0)) - 1);
		__mmask16 mdj[DWF_MAXK];
		__m512i acc = _mm512_setzero_si512();
		__m512 v;

		for (int d = 0; d < g->ndj; d++) {
			int dj = g->dj0 + d;

			mdj[d] = dj < 0	  ? _mm512_cmpge_epi32_mask(ow, _mm512_set1_epi32(-dj))
				 : dj > 0 ? _mm512_cmplt_epi32_mask(ow, _mm512_set1_epi32(OW - dj))
					  : (__mmask16)0xffff;
		}
		for (int t = 0; t < nt; t++)
			acc = dwf_tap_vnni(acc, zav, mdj[g->dj[t]], src[t] + p0, wv[t]);
		v = requant16(acc, zcv, scv, bbv, relu, relu6);
		if (yq)
			store16_u8(yq + p0, m, quant16(&qk, v));
		else
			_mm512_mask_storeu_ps(y + p0, m, v);
		ow = _mm512_add_epi32(ow, stepv);
		ow = _mm512_mask_sub_epi32(ow, _mm512_cmpge_epi32_mask(ow, owv), ow, owv);
	}
}

/*
 * A 3x3 window (padding 1) on AVX-512 VNNI, straight from the u8 plane
 * x[H][W] (no copy between margins: loads outside the plane are masked to
 * za), for nc output channels that read it (a depthwise channel: 1; a
 * stem: its channels): per 16 positions the three window rows (dwf_row3)
 * are built once, then each channel is three vpdpbusd with its rows of
 * weights wr[c][3] (dwf_wrow3), requantized (and quantized to u8 for yq)
 * in registers into y + c * P or yq + c * P.
 */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
dwf3_vnni(const struct mc_qconv *cv, const struct dwf_geo *g, int nc, const int32_t *wr,
	  const int32_t *zc, const float *sc, const float *bb, int za, unsigned flags,
	  const uint8_t *x, const struct quant_k *qo, float *y, uint8_t *yq)
{
	const struct quant_k qk = *qo; /* in registers: stores to yq may alias *qo */
	int OW = cv->OW, P = cv->OH * cv->OW;
	const __m512i zab = _mm512_set1_epi8((char)za);
	const __m512i didx = _mm512_loadu_si512(dwf_didx), bidx = _mm512_loadu_si512(dwf_bidx);
	const __m512i owv = _mm512_set1_epi32(OW), stepv = _mm512_set1_epi32(g->step16);
	const __m512i owm1 = _mm512_set1_epi32(OW - 1);
	const int relu = (flags & (MC_S8_RELU | MC_S8_RELU6)) != 0,
		  relu6 = (flags & MC_S8_RELU6) != 0;
	__m512i ow = _mm512_loadu_si512(g->ow0);
	/*
	 * Rows of at most 255: dwf_keep3's mask as the nonzero bytes of ow,
	 * 0xff, OW - 1 - ow, 0xff (kept in step with ow; no field carries)
	 */
	const int narrow = OW <= 255;
	const __m512i stepx =
	    _mm512_set1_epi32((int)((uint32_t)g->step16 - ((uint32_t)g->step16 << 16)));
	const __m512i owx1 = _mm512_set1_epi32((int)((uint32_t)OW - ((uint32_t)OW << 16)));
	__m512i owx = _mm512_add_epi32(_mm512_add_epi32(ow, _mm512_set1_epi32((int)0xff00ff00u)),
				       _mm512_slli_epi32(_mm512_sub_epi32(owm1, ow), 16));

	for (int p0 = 0; p0 < P; p0 += 16) {
		__mmask16 m = P - p0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (P - p0)) - 1);
		__mmask64 keep = narrow ? _mm512_test_epi8_mask(owx, owx) : dwf_keep3(ow, owm1);
		__mmask16 wrap;
		/* the 32 bytes of each row lie in the plane but near its ends */
		__mmask32 l0 = ~(__mmask32)0, l1 = l0, l2 = l0;
		__m512i r0, r1, r2;

		if (p0 < OW + 1 || (int64_t)p0 + OW + 31 > P) {
			l0 = dwf_in((int64_t)p0 - OW - 1, P);
			l1 = dwf_in((int64_t)p0 - 1, P);
			l2 = dwf_in((int64_t)p0 + OW - 1, P);
		}
		r0 = dwf_row3(x + p0 - OW, l0, keep, zab, didx, bidx);
		r1 = dwf_row3(x + p0, l1, keep, zab, didx, bidx);
		r2 = dwf_row3(x + p0 + OW, l2, keep, zab, didx, bidx);

		for (int c = 0; c < nc; c++) {
			const int32_t *w = wr + 3 * c;
			__m512i s0 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), r0,
							 _mm512_set1_epi32(w[0]));
			__m512i s1 = _mm512_dpbusd_epi32(_mm512_setzero_si512(), r1,
							 _mm512_set1_epi32(w[1]));
			__m512 v;

			s0 = _mm512_dpbusd_epi32(s0, r2, _mm512_set1_epi32(w[2]));
			v = requant16(_mm512_add_epi32(s0, s1), _mm512_set1_epi32(zc[c]),
				      _mm512_set1_ps(sc[c]), _mm512_set1_ps(bb[c]), relu, relu6);
			if (yq)
				store16_u8(yq + (size_t)c * P + p0, m, quant16(&qk, v));
			else
				_mm512_mask_storeu_ps(y + (size_t)c * P + p0, m, v);
		}
		ow = _mm512_add_epi32(ow, stepv);
		wrap = _mm512_cmpge_epi32_mask(ow, owv);
		ow = _mm512_mask_sub_epi32(ow, wrap, ow, owv);
		owx = _mm512_add_epi32(owx, stepx);
		owx = _mm512_mask_sub_epi32(owx, wrap, owx, owx1);
	}
}

/*
 * dwf3_vnni for a depthwise channel from u8 to u8, several planes of it at
 * a time (the samples of one channel: its weights and constants stay in
 * registers), each vector's masks read from a table built once a layer
 * (dwf3_vmasks) instead of computed: the row-edge bytes that take za
 * (dwf_row3's keep) and the bytes of each row's load inside the plane.
 * With AVX-512 VBMI a window row is one vpermb of the loaded bytes (in asm,
 * so that the function is compiled for the CPUs without VBMI too), without
 * it vpermd and vpshufb. The sum starts at -zc (vpdpbusd wraps as the
 * subtraction does), the output goes through quant16_store (no clamps that
 * the narrowing's saturation or relu make redundant), and relu6's min with
 * 6 is left out where the output's u8 of 6 is 255 already: u8 is monotone.
 */
#define DWF3_MAXV 64 /* vectors of a plane the table holds: planes up to 1024 positions */

static int dw_vbmi = 1; /* 0: dwf3u_vnni, dw2_plane_vnni without vpermb (mc_s8_dw_vbmi) */

/* 1 when the kernels take vpermb: the CPU has it and mc_s8_dw_vbmi leaves it on. */
static int dw_vbmi_on(void)
{
	return __atomic_load_n(&dw_vbmi, __ATOMIC_RELAXED) && mc_cpu_has(MC_CPU_AVX512VBMI);
}

struct dwf3_vm {
	uint64_t keep;	/* dwf_row3's keep */
	uint32_t ld[3]; /* dwf_row3's ld of the rows above, at and below */
	uint32_t st;	/* the positions in the plane */
};

/* 0 when relu6's min with 6 can be left out: io's output is u8 and u8(6) is 255. */
static int relu6_min(const struct mc_qconv_io *io)
{
	float six = 6.0f;
	uint8_t u6;

	if (!io->yq)
		return 1;
	mc_quantize_u8_ref(&six, 1, io->so, io->zo, &u6);
	return u6 != 255;
}

/* The table of a plane's vectors into vm; their count, or -1 for a plane too large for it. */
static int dwf3_vmasks(const struct mc_qconv *cv, struct dwf3_vm *vm)
{
	int OW = cv->OW, P = cv->OH * cv->OW, V = (P + 15) / 16;

	if (V > DWF3_MAXV)
		return -1;
	for (int v = 0, ow = 0; v < V; v++) { /* ow: that of position 16 v + l */
		int p0 = 16 * v;
		uint64_t keep = ~(uint64_t)0;

		for (int l = 0; l < 16; l++, ow = ow == OW - 1 ? 0 : ow + 1) {
			if (ow == 0)
				keep &= ~((uint64_t)1 << (4 * l));
			if (ow == OW - 1)
				keep &= ~((uint64_t)1 << (4 * l + 2));
		}
		vm[v].keep = keep;
		for (int r = 0; r < 3; r++)
			vm[v].ld[r] = dwf_in((int64_t)p0 + (int64_t)(r - 1) * OW - 1, P);
		vm[v].st = P - p0 >= 16 ? 0xffff : (1u << (P - p0)) - 1;
	}
	return V;
}

/* vpermb's indices for dwf_row3's lanes: bytes l .. l + 3 of the loaded ones into lane l */
static const uint8_t dwf3_pidx[64] = {
    0,	1,  2,	3,  1,	2,  3,	4,  2,	3,  4,	5,  3,	4,  5,	6,  4,	5,  6,	7,  5,	6,
    7,	8,  6,	7,  8,	9,  7,	8,  9,	10, 8,	9,  10, 11, 9,	10, 11, 12, 10, 11, 12, 13,
    11, 12, 13, 14, 12, 13, 14, 15, 13, 14, 15, 16, 14, 15, 16, 17, 15, 16, 17, 18};

/* dwf_row3 by vpermb (AVX-512 VBMI) */
__attribute__((target("avx512f,avx512bw"), always_inline)) static inline __m512i
dwf_row3b(const uint8_t *src, __mmask32 ld, __mmask64 keep, __m512i zab, __m512i pidx)
{
	__m512i v = _mm512_mask_loadu_epi8(zab, (__mmask64)ld, src - 1), r = zab;

	__asm__("vpermb %2, %1, %0%{%3%}" : "+v"(r) : "v"(pidx), "v"(v), "Yk"(keep));
	return r;
}

__attribute__((target("avx512f,avx512bw,avx512vnni"), always_inline)) static inline void
dwf3u_body(const struct dwf3_vm *vm, int V, int OW, const int32_t *wr, int32_t zc, float sc,
	   float bb, int za, const struct quant_k *qo, int np, size_t stride, const uint8_t *x,
	   uint8_t *yq, int vbmi, int relu, int relu6)
{
	const struct quant_k qk = *qo; /* in registers: stores to yq may alias *qo */
	const __m512i zab = _mm512_set1_epi8((char)za), zi = _mm512_setzero_si512();
	const __m512i nzc = _mm512_set1_epi32((int32_t)(0u - (uint32_t)zc));
	const __m512i w0 = _mm512_set1_epi32(wr[0]), w1 = _mm512_set1_epi32(wr[1]),
		      w2 = _mm512_set1_epi32(wr[2]);
	const __m512i pidx = _mm512_loadu_si512(dwf3_pidx);
	const __m512i didx = _mm512_loadu_si512(dwf_didx), bidx = _mm512_loadu_si512(dwf_bidx);
	const __m512 scv = _mm512_set1_ps(sc), bbv = _mm512_set1_ps(bb);

	for (int j = 0; j < np; j++, x += stride, yq += stride)
		for (int v = 0; v < V; v++) {
			const uint8_t *s = x + 16 * (size_t)v;
			__mmask64 keep = vm[v].keep;
			__m512i r0, r1, r2, acc;

			if (vbmi) {
				r0 = dwf_row3b(s - OW, vm[v].ld[0], keep, zab, pidx);
				r1 = dwf_row3b(s, vm[v].ld[1], keep, zab, pidx);
				r2 = dwf_row3b(s + OW, vm[v].ld[2], keep, zab, pidx);
			} else {
				r0 = dwf_row3(s - OW, vm[v].ld[0], keep, zab, didx, bidx);
				r1 = dwf_row3(s, vm[v].ld[1], keep, zab, didx, bidx);
				r2 = dwf_row3(s + OW, vm[v].ld[2], keep, zab, didx, bidx);
			}
			acc = _mm512_dpbusd_epi32(nzc, r0, w0);
			acc = _mm512_dpbusd_epi32(acc, r1, w1);
			acc = _mm512_dpbusd_epi32(acc, r2, w2);
			quant16_store(&qk, yq + 16 * (size_t)v, (__mmask16)vm[v].st,
				      requant16(acc, zi, scv, bbv, relu, relu6), relu);
		}
}

/*
 * np planes of channel c (x and yq the first, stride bytes apart); min6:
 * relu6 needs its min with 6.
 */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
dwf3u_vnni(const struct dwf3_vm *vm, int V, int OW, const int32_t *wr, int32_t zc, float sc,
	   float bb, int za, const struct quant_k *qo, int np, size_t stride, const uint8_t *x,
	   uint8_t *yq, int vbmi, unsigned flags, int min6)
{
	int relu = (flags & (MC_S8_RELU | MC_S8_RELU6)) != 0,
	    relu6 = (flags & MC_S8_RELU6) != 0 && min6;

#define DWF3U(B, R, R6) dwf3u_body(vm, V, OW, wr, zc, sc, bb, za, qo, np, stride, x, yq, B, R, R6)
	DW_VARIANTS(DWF3U);
#undef DWF3U
}

__attribute__((target("avx2"), always_inline)) static inline __m256i
dwf_tap_avx2(__m256i acc, __m256i zav, __m256i m, int masked, const uint8_t *src, __m256i w)
{
	__m256i x = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)src));

	if (masked)
		x = _mm256_blendv_epi8(zav, x, m);
	return _mm256_add_epi32(acc, _mm256_madd_epi16(x, w));
}

/* The same on AVX2: 8 positions at a time, vpmaddwd; u8 out as mc_quantize_u8's AVX2 loop. */
__attribute__((target("avx2"))) static void
dwf_plane_avx2(const struct mc_qconv *cv, const struct dwf_geo *g, const int8_t *wc, int32_t zc,
	       float sc, float bb, int za, unsigned flags, const uint8_t *xs, float so, int zo,
	       float *y, uint8_t *yq)
{
	int OW = cv->OW, P = cv->OH * cv->OW, nt = g->nt, k3 = cv->k == 3;
	const uint8_t *src[DWF_MAXK * DWF_MAXK];
	__m256i wv[DWF_MAXK * DWF_MAXK];
	const __m256i zav = _mm256_set1_epi32(za), zcv = _mm256_set1_epi32(zc);
	const __m256i owm1 = _mm256_set1_epi32(OW - 1), stepv = _mm256_set1_epi32(g->step8);
	const __m256i owv = _mm256_set1_epi32(OW), zi = _mm256_setzero_si256();
	const __m256 zero = _mm256_setzero_ps();
	const __m256 scv = _mm256_set1_ps(sc), bbv = _mm256_set1_ps(bb);
	const __m256 sov = _mm256_set1_ps(so), zov = _mm256_set1_ps((float)zo);
	const __m256 hi = _mm256_set1_ps(255.0f);
	const int relu = (flags & (MC_S8_RELU | MC_S8_RELU6)) != 0,
		  relu6 = (flags & MC_S8_RELU6) != 0;
	__m256i ow = _mm256_loadu_si256((const __m256i *)g->ow0);

	for (int t = 0; t < nt; t++) {
		src[t] = xs + g->pre + g->off[t];
		wv[t] = _mm256_set1_epi32((uint16_t)(int16_t)wc[t]);
	}
	for (int p0 = 0; p0 < P; p0 += 8) {
		__m256i acc;
		__m256 v;

		if (k3) {
			/* all ones where the column step stays in the row */
			__m256i ml = _mm256_cmpgt_epi32(ow, zi), mr = _mm256_cmpgt_epi32(owm1, ow);
			__m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0;

			a0 = dwf_tap_avx2(a0, zav, ml, 1, src[0] + p0, wv[0]);
			a1 = dwf_tap_avx2(a1, zav, ml, 1, src[3] + p0, wv[3]);
			a2 = dwf_tap_avx2(a2, zav, ml, 1, src[6] + p0, wv[6]);
			a0 = dwf_tap_avx2(a0, zav, ml, 0, src[1] + p0, wv[1]);
			a1 = dwf_tap_avx2(a1, zav, ml, 0, src[4] + p0, wv[4]);
			a2 = dwf_tap_avx2(a2, zav, ml, 0, src[7] + p0, wv[7]);
			a0 = dwf_tap_avx2(a0, zav, mr, 1, src[2] + p0, wv[2]);
			a1 = dwf_tap_avx2(a1, zav, mr, 1, src[5] + p0, wv[5]);
			a2 = dwf_tap_avx2(a2, zav, mr, 1, src[8] + p0, wv[8]);
			acc = _mm256_add_epi32(_mm256_add_epi32(a0, a1), a2);
		} else {
			__m256i mdj[DWF_MAXK];

			for (int d = 0; d < g->ndj; d++) {
				int dj = g->dj0 + d;

				mdj[d] = dj < 0 ? _mm256_cmpgt_epi32(ow, _mm256_set1_epi32(-dj - 1))
					 : dj > 0
					     ? _mm256_cmpgt_epi32(_mm256_set1_epi32(OW - dj), ow)
					     : _mm256_set1_epi32(-1);
			}
			acc = _mm256_setzero_si256();
			for (int t = 0; t < nt; t++)
				acc = dwf_tap_avx2(acc, zav, mdj[g->dj[t]], g->dj[t] + g->dj0 != 0,
						   src[t] + p0, wv[t]);
		}
		v = requant8(acc, zcv, scv, bbv, relu, relu6);
		if (yq) {
			__m256 u = _mm256_round_ps(_mm256_div_ps(v, sov),
						   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
			__m256i iv;
			__m128i h;

			u = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(u, zov), zero), hi);
			iv = _mm256_cvtps_epi32(u);
			h = _mm_packus_epi32(_mm256_castsi256_si128(iv),
					     _mm256_extracti128_si256(iv, 1));
			h = _mm_packus_epi16(h, h);
			if (P - p0 >= 8) {
				_mm_storel_epi64((__m128i *)(yq + p0), h);
			} else {
				uint8_t t8[16];

				_mm_storeu_si128((__m128i *)t8, h);
				memcpy(yq + p0, t8, (size_t)(P - p0));
			}
		} else if (P - p0 >= 8) {
			_mm256_storeu_ps(y + p0, v);
		} else {
			float t[8];

			_mm256_storeu_ps(t, v);
			memcpy(y + p0, t, (size_t)(P - p0) * sizeof(float));
		}
		ow = _mm256_add_epi32(ow, stepv);
		ow = _mm256_sub_epi32(ow, _mm256_and_si256(_mm256_cmpgt_epi32(ow, owm1), owv));
	}
}
#endif

int mc_s8_dw_vbmi(int on)
{
#if defined(__x86_64__) || defined(__i386__)
	int was = dw_vbmi_on();

	if (on >= 0)
		__atomic_store_n(&dw_vbmi, on != 0, __ATOMIC_RELAXED);
	return was;
#else
	(void)on;
	return 0;
#endif
}

/*
 * Workspace of n samples: the head, then a slot a thread; threads split
 * (sample, channel) items. Enough for every path's layout and for the flat
 * kernel's, so that one workspace serves whichever path runs.
 */
static size_t dw_work(const struct mc_qconv *cv, int n)
{
	int64_t items = (int64_t)(n < 1 ? 1 : n) * cv->O;
	int slots = items < SLOTS ? (int)items : SLOTS;
	size_t head = up64((size_t)cv->O * 6 * 4), slot = 0; /* dwf_forward's head */
	struct dw_geo g;
	struct dwf_geo fg;

	for (int tq = 1; tq <= 4; tq *= 2) {
		if (dw_geo(cv, tq, &g))
			return SIZE_MAX;
		head = g.head > head ? g.head : head;
		slot = g.slot > slot ? g.slot : slot;
	}
	if (!dwf_geo(cv, &fg) && fg.slot > slot)
		slot = fg.slot;
	if (slot > (SIZE_MAX - head) / (size_t)slots)
		return SIZE_MAX;
	return head + slot * (size_t)slots;
}

/* The head of the pointwise workspace: weight pairs, za * sum(w), scales, biases. */
static void pw_head(const struct mc_qconv *cv, const struct mc_qconv_q *q, const struct pw_geo *g,
		    const int8_t *w, void *head)
{
	uint32_t *wp = head;
	int32_t *zc = (int32_t *)(wp + (size_t)g->Op * g->C2);
	float *sc = (float *)(zc + g->Op), *bb = sc + g->Op;

	memset(head, 0, ((size_t)g->C2 + 3) * g->Op * 4);
	for (int o = 0; o < cv->O; o++) {
		const int8_t *wo = w + (size_t)o * cv->C;
		int32_t sum = 0;

		for (int c = 0; c < cv->C; c++) {
			wp[(size_t)o * g->C2 + c / 2] |= (uint32_t)(uint16_t)(int16_t)wo[c]
							 << (16 * (c % 2));
			sum += wo[c];
		}
		zc[o] = (int32_t)((uint32_t)q->za * (uint32_t)sum);
		sc[o] = q->sa * q->sw[o];
		bb[o] = q->bias ? q->bias[o] : 0.0f;
	}
}

/* xi[C2][Pp] from xq[C][P]: channel pairs as u16 halves of a u32. */
static void pw_layout(const struct mc_qconv *cv, const struct pw_geo *g, const uint8_t *xq,
		      uint32_t *xi)
{
	size_t P = (size_t)cv->OH * cv->OW;

	for (int j = 0; j < g->C2; j++) {
		const uint8_t *a = xq + (size_t)2 * j * P, *b = a + P;
		uint32_t *d = xi + (size_t)j * g->Pp;

		if (2 * j + 1 < cv->C)
			for (size_t p = 0; p < P; p++)
				d[p] = (uint32_t)a[p] | (uint32_t)b[p] << 16;
		else
			for (size_t p = 0; p < P; p++)
				d[p] = a[p];
		for (size_t p = P; p < (size_t)g->Pp; p++)
			d[p] = 0;
	}
}

typedef void (*pw_fn)(const struct mc_qconv *cv, const struct pw_geo *g, const void *head,
		      const uint32_t *xi, unsigned flags, float *y);

static void pw_portable(const struct mc_qconv *cv, const struct pw_geo *g, const void *head,
			const uint32_t *xi, unsigned flags, float *y)
{
	const uint32_t *wp = head;
	const int32_t *zc = (const int32_t *)(wp + (size_t)g->Op * g->C2);
	const float *sc = (const float *)(zc + g->Op), *bb = sc + g->Op;
	size_t P = (size_t)cv->OH * cv->OW;

	for (int o = 0; o < cv->O; o++)
		for (size_t p = 0; p < P; p++) {
			uint32_t acc = 0;

			for (int j = 0; j < g->C2; j++) {
				uint32_t xv = xi[(size_t)j * g->Pp + p],
					 wv = wp[(size_t)o * g->C2 + j];

				acc += (uint32_t)((int32_t)(xv & 0xffff) * (int16_t)(wv & 0xffff) +
						  (int32_t)(xv >> 16) * (int16_t)(wv >> 16));
			}
			y[(size_t)o * P + p] =
			    requant1(sc[o], (int32_t)(acc - (uint32_t)zc[o]), bb[o], flags);
		}
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static void pw_avx2(const struct mc_qconv *cv,
						    const struct pw_geo *g, const void *head,
						    const uint32_t *xi, unsigned flags, float *y)
{
	const uint32_t *wp = head;
	const int32_t *zc = (const int32_t *)(wp + (size_t)g->Op * g->C2);
	const float *sc = (const float *)(zc + g->Op), *bb = sc + g->Op;
	const int relu = (flags & (MC_S8_RELU | MC_S8_RELU6)) != 0,
		  relu6 = (flags & MC_S8_RELU6) != 0;
	int P = cv->OH * cv->OW;

	for (int o0 = 0; o0 < cv->O; o0 += 4)
		for (int p = 0; p < P; p += 8) {
			__m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(),
					  _mm256_setzero_si256(), _mm256_setzero_si256()};
			const uint32_t *w0 = wp + (size_t)o0 * g->C2;

			for (int j = 0; j < g->C2; j++) {
				__m256i xv = _mm256_loadu_si256(
				    (const __m256i *)(xi + (size_t)j * g->Pp + p));

				for (int r = 0; r < 4; r++)
					acc[r] = _mm256_add_epi32(
					    acc[r], _mm256_madd_epi16(
							xv, _mm256_set1_epi32(
								(int)w0[(size_t)r * g->C2 + j])));
			}
			for (int r = 0; r < 4 && o0 + r < cv->O; r++) {
				int o = o0 + r;
				__m256 v = requant8(acc[r], _mm256_set1_epi32(zc[o]),
						    _mm256_set1_ps(sc[o]), _mm256_set1_ps(bb[o]),
						    relu, relu6);
				float *dst = y + (size_t)o * P + p;

				if (P - p >= 8) {
					_mm256_storeu_ps(dst, v);
				} else {
					float t[8];

					_mm256_storeu_ps(t, v);
					memcpy(dst, t, (size_t)(P - p) * sizeof(float));
				}
			}
		}
}

__attribute__((target("avx512f,avx512bw"))) static void
pw_avx512(const struct mc_qconv *cv, const struct pw_geo *g, const void *head, const uint32_t *xi,
	  unsigned flags, float *y)
{
	const uint32_t *wp = head;
	const int32_t *zc = (const int32_t *)(wp + (size_t)g->Op * g->C2);
	const float *sc = (const float *)(zc + g->Op), *bb = sc + g->Op;
	const int relu = (flags & (MC_S8_RELU | MC_S8_RELU6)) != 0,
		  relu6 = (flags & MC_S8_RELU6) != 0;
	int P = cv->OH * cv->OW;

	for (int o0 = 0; o0 < cv->O; o0 += 4)
		for (int p = 0; p < P; p += 16) {
			__m512i acc[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(),
					  _mm512_setzero_si512(), _mm512_setzero_si512()};
			const uint32_t *w0 = wp + (size_t)o0 * g->C2;
			__mmask16 m =
			    P - p >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (P - p)) - 1);

			for (int j = 0; j < g->C2; j++) {
				__m512i xv = _mm512_loadu_si512(xi + (size_t)j * g->Pp + p);

				for (int r = 0; r < 4; r++)
					acc[r] = _mm512_add_epi32(
					    acc[r], _mm512_madd_epi16(
							xv, _mm512_set1_epi32(
								(int)w0[(size_t)r * g->C2 + j])));
			}
			for (int r = 0; r < 4 && o0 + r < cv->O; r++) {
				int o = o0 + r;
				__m512 v = requant16(acc[r], _mm512_set1_epi32(zc[o]),
						     _mm512_set1_ps(sc[o]), _mm512_set1_ps(bb[o]),
						     relu, relu6);

				_mm512_mask_storeu_ps(y + (size_t)o * P + p, m, v);
			}
		}
}
#endif

#if defined(__x86_64__) || defined(__i386__)
/*
 * One sample of a pointwise layer on AVX-512 VNNI: 16 positions of 4
 * channels quantized with the operations of mc_quantize_u8's AVX-512 path
 * and packed into quads (u8 inputs interleaved by unpacks), then 8 output
 * channels x 16 positions at a time with vpdpbusd, requantized as requant1
 * and stored as f32 (y) or quantized in registers to u8 (yq, at ko: the
 * bits of quant_out on the f32).
 */
__attribute__((target("avx512f,avx512bw,avx512vnni"))) static void
pw_vnni(const struct mc_qconv *cv, const struct mc_qconv_q *q, const struct pw_geo *g,
	const void *head, const float *x, const uint8_t *xq, uint32_t *xi, float *y,
	const struct quant_k *ko, uint8_t *yq)
{
	int P = cv->OH * cv->OW, C4 = (cv->C + 3) / 4;
	const uint32_t *wq = head;
	const int32_t *zc = (const int32_t *)(wq + (size_t)g->Op * g->C2);
	const float *sc = (const float *)(zc + g->Op), *bb = sc + g->Op;
	const struct quant_k qk = quant_k(q->sa, q->za);
	const int relu = (q->flags & (MC_S8_RELU | MC_S8_RELU6)) != 0;
	const int relu6 = (q->flags & MC_S8_RELU6) != 0;
	const struct quant_k qo = yq ? *ko : qk; /* in registers: stores to yq may alias *ko */

	/*
	 * From u8: 64 positions of 4 channels interleaved by byte and word
	 * unpacks (each 128-bit lane k of quad vector q_i: positions 16k + 4i
	 * to 16k + 4i + 3), then the lanes transposed; positions past P and
	 * channels past C are zero.
	 */
	for (int j = 0; xq && j < C4; j++)
		for (int p0 = 0; p0 < P; p0 += 64) {
			__mmask64 m = P - p0 >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << (P - p0)) - 1;
			__m512i c[4], t0, t1, t2, t3, o[4];
			uint32_t *d = xi + (size_t)j * g->Pp + p0;

			for (int b = 0; b < 4; b++)
				c[b] = 4 * j + b < cv->C ? _mm512_maskz_loadu_epi8(
							       m, xq + (size_t)(4 * j + b) * P + p0)
							 : _mm512_setzero_si512();
			t0 = _mm512_unpacklo_epi8(c[0], c[1]);
			t1 = _mm512_unpackhi_epi8(c[0], c[1]);
			t2 = _mm512_unpacklo_epi8(c[2], c[3]);
			t3 = _mm512_unpackhi_epi8(c[2], c[3]);
			c[0] = _mm512_unpacklo_epi16(t0, t2);
			c[1] = _mm512_unpackhi_epi16(t0, t2);
			c[2] = _mm512_unpacklo_epi16(t1, t3);
			c[3] = _mm512_unpackhi_epi16(t1, t3);
			t0 = _mm512_shuffle_i32x4(c[0], c[1], _MM_SHUFFLE(1, 0, 1, 0));
			t1 = _mm512_shuffle_i32x4(c[2], c[3], _MM_SHUFFLE(1, 0, 1, 0));
			t2 = _mm512_shuffle_i32x4(c[0], c[1], _MM_SHUFFLE(3, 2, 3, 2));
			t3 = _mm512_shuffle_i32x4(c[2], c[3], _MM_SHUFFLE(3, 2, 3, 2));
			o[0] = _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(2, 0, 2, 0));
			o[1] = _mm512_shuffle_i32x4(t0, t1, _MM_SHUFFLE(3, 1, 3, 1));
			o[2] = _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(2, 0, 2, 0));
			o[3] = _mm512_shuffle_i32x4(t2, t3, _MM_SHUFFLE(3, 1, 3, 1));
			for (int k = 0; k < 4 && p0 + 16 * k < P; k++)
				_mm512_storeu_si512(d + 16 * k, o[k]);
		}
	for (int j = 0; !xq && j < C4; j++)
		for (int p0 = 0; p0 < P; p0 += 16) {
			__mmask16 m =
			    P - p0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (P - p0)) - 1);
			__m512i v = _mm512_setzero_si512();

			for (int b = 0; b < 4 && 4 * j + b < cv->C; b++) {
				__m512i u = quant16(&qk, _mm512_maskz_loadu_ps(
							     m, x + (size_t)(4 * j + b) * P + p0));

				v = _mm512_or_si512(v, _mm512_slli_epi32(u, 8 * b));
			}
			_mm512_storeu_si512(xi + (size_t)j * g->Pp + p0, v);
		}
	for (int o0 = 0; o0 < cv->O; o0 += 8) {
		const uint32_t *w0 = wq + (size_t)o0 * C4;
		int p0 = 0;

		/*
		 * 8 output channels x 32 positions: 16 sums in flight, so that
		 * vpdpbusd's latency is hidden (8 alone wait on it)
		 */
		for (; P - p0 > 16; p0 += 32) {
			__mmask16 m1 = P - p0 >= 32 ? (__mmask16)0xffff
						    : (__mmask16)((1u << (P - p0 - 16)) - 1);
			__m512i a0[8], a1[8];

#pragma GCC unroll 8
			for (int r = 0; r < 8; r++)
				a1[r] = a0[r] =
				    _mm512_set1_epi32((int32_t)(0u - (uint32_t)zc[o0 + r]));
			for (int j = 0; j < C4; j++) {
				__m512i x0 = _mm512_loadu_si512(xi + (size_t)j * g->Pp + p0);
				__m512i x1 = _mm512_loadu_si512(xi + (size_t)j * g->Pp + p0 + 16);

#pragma GCC unroll 8
				for (int r = 0; r < 8; r++) {
					__m512i wv = _mm512_set1_epi32((int)w0[(size_t)r * C4 + j]);

					a0[r] = _mm512_dpbusd_epi32(a0[r], x0, wv);
					a1[r] = _mm512_dpbusd_epi32(a1[r], x1, wv);
				}
			}
#pragma GCC unroll 8
			for (int r = 0; r < 8; r++) {
				int o = o0 + r;
				__m512 v0, v1;

				if (o >= cv->O)
					break;
				v0 = requant16(a0[r], _mm512_setzero_si512(), _mm512_set1_ps(sc[o]),
					       _mm512_set1_ps(bb[o]), relu, relu6);
				v1 = requant16(a1[r], _mm512_setzero_si512(), _mm512_set1_ps(sc[o]),
					       _mm512_set1_ps(bb[o]), relu, relu6);
				if (y) {
					_mm512_storeu_ps(y + (size_t)o * P + p0, v0);
					_mm512_mask_storeu_ps(y + (size_t)o * P + p0 + 16, m1, v1);
				}
				if (yq) {
					quant16_store(&qo, yq + (size_t)o * P + p0, 0xffff, v0,
						      relu);
					quant16_store(&qo, yq + (size_t)o * P + p0 + 16, m1, v1,
						      relu);
				}
			}
		}
		for (; p0 < P; p0 += 16) {
			__mmask16 m =
			    P - p0 >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (P - p0)) - 1);
			__m512i acc[8];

			/*
			 * unrolled, so that the eight sums stay in registers; they
			 * start at -zc (the same s32 sums mod 2^32 as acc - zc)
			 */
#pragma GCC unroll 8
			for (int r = 0; r < 8; r++)
				acc[r] = _mm512_set1_epi32((int32_t)(0u - (uint32_t)zc[o0 + r]));
			for (int j = 0; j < C4; j++) {
				__m512i xv = _mm512_loadu_si512(xi + (size_t)j * g->Pp + p0);

#pragma GCC unroll 8
				for (int r = 0; r < 8; r++)
					acc[r] = _mm512_dpbusd_epi32(
					    acc[r], xv,
					    _mm512_set1_epi32((int)w0[(size_t)r * C4 + j]));
			}
#pragma GCC unroll 8
			for (int r = 0; r < 8; r++) {
				int o = o0 + r;
				__m512 v;

				if (o >= cv->O)
					break;
				v = requant16(acc[r], _mm512_setzero_si512(), _mm512_set1_ps(sc[o]),
					      _mm512_set1_ps(bb[o]), relu, relu6);

				if (y)
					_mm512_mask_storeu_ps(y + (size_t)o * P + p0, m, v);
				if (yq)
					quant16_store(&qo, yq + (size_t)o * P + p0, m, v, relu);
			}
		}
	}
}
#endif

/* The head of the VNNI pointwise kernel: weight quads [Op][C4], then as pw_head. */
static void pw_head_quad(const struct mc_qconv *cv, const struct mc_qconv_q *q,
			 const struct pw_geo *g, const int8_t *w, void *head)
{
	int C4 = (cv->C + 3) / 4;
	uint32_t *wq = head;
	int32_t *zc = (int32_t *)(wq + (size_t)g->Op * g->C2);
	float *sc = (float *)(zc + g->Op), *bb = sc + g->Op;

	memset(head, 0, ((size_t)g->C2 + 3) * g->Op * 4);
	for (int o = 0; o < cv->O; o++) {
		const int8_t *wo = w + (size_t)o * cv->C;
		int32_t sum = 0;

		for (int c = 0; c < cv->C; c++) {
			wq[(size_t)o * C4 + c / 4] |= (uint32_t)(uint8_t)wo[c] << (8 * (c % 4));
			sum += wo[c];
		}
		zc[o] = (int32_t)((uint32_t)q->za * (uint32_t)sum);
		sc[o] = q->sa * q->sw[o];
		bb[o] = q->bias ? q->bias[o] : 0.0f;
	}
}

static pw_fn pw_path(void)
{
#if defined(__x86_64__) || defined(__i386__)
	switch (mc_s8_simd()) {
	case 2:
		return pw_avx512;
	case 1:
		return pw_avx2;
	}
#endif
	return pw_portable;
}

/* yq[m] = u8(y[m]) at (so, zo): mc_quantize_u8's bits, without its division on AVX-512. */
static void quant_out(const float *y, size_t m, float so, int zo, uint8_t *yq)
{
#if defined(__x86_64__) || defined(__i386__)
	if (mc_s8_simd() == 2) {
		struct quant_k k = quant_k(so, zo);

		quant_avx512(&k, y, m, yq);
		return;
	}
#endif
	mc_quantize_u8(y, m, so, zo, yq);
}

int mc_qconv_io_ok(const struct mc_qconv *cv)
{
	return cv->g == 1 || mc_qconv_is_dw(cv) || mc_qconv_is_plane(cv);
}

/* A pointwise layer, sample by sample. */
static void pw_forward(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n,
		       const struct mc_qconv_io *io, const int8_t *w, void *work, int nt)
{
	size_t xs = (size_t)cv->C * cv->H * cv->W, ys = (size_t)cv->O * cv->OH * cv->OW;
	struct pw_geo pg;
	pw_fn fn = pw_path();
	int vnni = mc_s8_simd() == 2;

	pw_geo(cv, &pg);
	if (vnni)
		pw_head_quad(cv, q, &pg, w, work);
	else
		pw_head(cv, q, &pg, w, work);
#pragma omp parallel num_threads(nt)
	{
		uint8_t *xq = (uint8_t *)work + pg.head + (size_t)omp_get_thread_num() * pg.slot;
		uint32_t *xi = (uint32_t *)(xq + pg.xq);
		float *yt = (float *)((uint8_t *)xi + pg.xi);

#pragma omp for schedule(static)
		for (int s = 0; s < n; s++) {
			const uint8_t *src = io->xq ? io->xq + (size_t)s * xs : NULL;
			float *dst = io->y ? io->y + (size_t)s * ys : yt;

#if defined(__x86_64__) || defined(__i386__)
			if (vnni) {
				struct quant_k ko = quant_k(io->so, io->zo);

				/* yq straight from the registers (quant16: quant_out's bits) */
				pw_vnni(cv, q, &pg, work, io->x ? io->x + (size_t)s * xs : NULL,
					src, xi, io->y ? dst : NULL, &ko,
					io->yq ? io->yq + (size_t)s * ys : NULL);
				continue;
			}
#endif
			{
				if (!src) {
					mc_quantize_u8(io->x + (size_t)s * xs, xs, q->sa, q->za,
						       xq);
					src = xq;
				}
				pw_layout(cv, &pg, src, xi);
				fn(cv, &pg, work, xi, q->flags, dst);
			}
			if (io->yq)
				quant_out(dst, ys, io->so, io->zo, io->yq + (size_t)s * ys);
		}
	}
}

/*
 * A dense layer (one group, neither pointwise nor a plane) is the pointwise
 * layer of its window's taps: each sample's taps laid out as col[Kg][P]
 * (Kg = C k k input "channels" of OH x OW; taps in the padding hold za, which
 * stands for 0.0), then the pointwise kernel on them with the weights
 * w[O][C][k][k] read as w[O][Kg]. The sums are the GEMM's (the same taps,
 * za * sum(w) taken off), requantized as requant1: its bits.
 */
static struct mc_qconv dense_pw(const struct mc_qconv *cv)
{
	return (struct mc_qconv){.C = cv->C * cv->k * cv->k,
				 .H = cv->OH,
				 .W = cv->OW,
				 .O = cv->O,
				 .OH = cv->OH,
				 .OW = cv->OW,
				 .k = 1,
				 .s = 1,
				 .p = 0,
				 .g = 1};
}

static int is_dense(const struct mc_qconv *cv)
{
	return cv->g == 1 && !mc_qconv_is_pw(cv) && !mc_qconv_is_plane(cv);
}

#if defined(__x86_64__) || defined(__i386__)
/* d[i] = r[2 i], i < n: the even bytes of 64 at a time, narrowed by vpmovwb (AVX-512 BW). */
__attribute__((target("avx512f,avx512bw"))) static void even_bytes_avx512(uint8_t *d,
									  const uint8_t *r, int n)
{
	for (int i = 0; i < n; i += 32) {
		int m = n - i < 32 ? n - i : 32;
		/* up to the last byte taken, r[2 (i + m) - 2]: never one past it */
		__m512i v = _mm512_maskz_loadu_epi8(((__mmask64)1 << (2 * m - 1)) - 1, r + 2 * i);

		_mm512_mask_storeu_epi8(d + i, ((__mmask64)1 << m) - 1,
					_mm512_castsi256_si512(_mm512_cvtepi16_epi8(v)));
	}
}
#endif

/*
 * col[Kg][P] of one sample xq[C][H][W]: row (c, ki, kj) holds tap (ki, kj)
 * of channel c. At stride 1 with the output the input's size, a row is the
 * plane shifted by (ki - p) W + kj - p, copied at once, then the rows and
 * columns that fall in the padding set to za; otherwise row by row (plain
 * loops: the rows are short, a call each would cost more than the copy).
 */
static void dense_cols(const struct mc_qconv *cv, const uint8_t *xq, int za, int bw, uint8_t *col)
{
	int k = cv->k, s = cv->s, p = cv->p, OW = cv->OW, W = cv->W;
	size_t P = (size_t)cv->OH * OW, HW = (size_t)cv->H * W;
	int same = s == 1 && cv->OH == cv->H && OW == W;

	(void)bw; /* AVX-512 BW's even bytes: x86 only */

	for (int c = 0; c < cv->C; c++)
		for (int ki = 0; ki < k; ki++)
			for (int kj = 0; kj < k; kj++) {
				uint8_t *d = col + (((size_t)c * k + ki) * k + kj) * P;
				const uint8_t *plane = xq + (size_t)c * HW;
				/* the outputs [lo, hi) whose tap column ow s - p + kj is in the
				 * image */
				int lo = p - kj <= 0 ? 0 : (p - kj + s - 1) / s;
				int hi = W + p - kj <= 0 ? 0 : (W + p - kj + s - 1) / s;

				lo = lo < OW ? lo : OW;
				hi = hi < OW ? hi : OW;
				hi = hi > lo ? hi : lo;
				if (same) {
					/* rows [rl, rh) of the output read image rows */
					int rl = p - ki > 0 ? p - ki : 0;
					int rh = cv->H + p - ki < cv->OH ? cv->H + p - ki : cv->OH;
					ptrdiff_t off = (ptrdiff_t)(ki - p) * W + (kj - p);
					ptrdiff_t a = (ptrdiff_t)rl * OW, e = (ptrdiff_t)rh * OW;

					rh = rh > rl ? rh : rl;
					memset(d, za, (size_t)rl * OW);
					memset(d + (size_t)rh * OW, za, (size_t)(cv->OH - rh) * OW);
					if (a < -off)
						a = -off;
					if (e > (ptrdiff_t)HW - off)
						e = (ptrdiff_t)HW - off;
					if (e > a)
						memcpy(d + a, plane + a + off, (size_t)(e - a));
					for (int oh = rl; oh < rh; oh++) {
						uint8_t *r = d + (size_t)oh * OW;

						for (int ow = 0; ow < lo; ow++)
							r[ow] = (uint8_t)za;
						for (int ow = hi; ow < OW; ow++)
							r[ow] = (uint8_t)za;
					}
					continue;
				}
				for (int oh = 0; oh < cv->OH; oh++, d += OW) {
					int h = oh * s - p + ki;
					const uint8_t *r;

					if (h < 0 || h >= cv->H) {
						for (int ow = 0; ow < OW; ow++)
							d[ow] = (uint8_t)za;
						continue;
					}
					r = plane + (size_t)h * W + kj - p;
					for (int ow = 0; ow < lo; ow++)
						d[ow] = (uint8_t)za;
#if defined(__x86_64__) || defined(__i386__)
					if (bw && s == 2)
						even_bytes_avx512(d + lo, r + (size_t)lo * 2,
								  hi - lo);
					else
#endif
						for (int ow = lo; ow < hi; ow++)
							d[ow] = r[(size_t)ow * s];
					for (int ow = hi; ow < OW; ow++)
						d[ow] = (uint8_t)za;
				}
			}
}

/* The dense layer's workspace: the pointwise head, then a slot a thread (xq, then pw's). */
static int dense_geo(const struct mc_qconv *cv, struct pw_geo *g, size_t *slot)
{
	struct mc_qconv pc = dense_pw(cv);
	size_t xs = up64((size_t)cv->C * cv->H * cv->W);

	if (pw_geo(&pc, g) || g->slot > SIZE_MAX - xs)
		return -1;
	*slot = xs + g->slot;
	return 0;
}

/* A dense layer, sample by sample. */
static void dense_forward(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n,
			  const struct mc_qconv_io *io, const int8_t *w, void *work, int nt)
{
	size_t xs = (size_t)cv->C * cv->H * cv->W, ys = (size_t)cv->O * cv->OH * cv->OW, slot;
	struct mc_qconv pc = dense_pw(cv);
	struct pw_geo pg;
	pw_fn fn = pw_path();
	int vnni = mc_s8_simd() == 2;

	dense_geo(cv, &pg, &slot);
	if (vnni)
		pw_head_quad(&pc, q, &pg, w, work);
	else
		pw_head(&pc, q, &pg, w, work);
#pragma omp parallel num_threads(nt)
	{
		uint8_t *xq = (uint8_t *)work + pg.head + (size_t)omp_get_thread_num() * slot;
		uint8_t *col = xq + up64(xs);
		uint32_t *xi = (uint32_t *)(col + pg.xq);
		float *yt = (float *)((uint8_t *)xi + pg.xi);

#pragma omp for schedule(static)
		for (int s = 0; s < n; s++) {
			const uint8_t *src = io->xq ? io->xq + (size_t)s * xs : xq;
			float *dst = io->y ? io->y + (size_t)s * ys : yt;

			if (!io->xq)
				mc_quantize_u8(io->x + (size_t)s * xs, xs, q->sa, q->za, xq);
			dense_cols(cv, src, q->za, vnni, col);
#if defined(__x86_64__) || defined(__i386__)
			if (vnni) {
				struct quant_k ko = quant_k(io->so, io->zo);

				pw_vnni(&pc, q, &pg, work, NULL, col, xi, io->y ? dst : NULL, &ko,
					io->yq ? io->yq + (size_t)s * ys : NULL);
				continue;
			}
#endif
			pw_layout(&pc, &pg, col, xi);
			fn(&pc, &pg, work, xi, q->flags, dst);
			if (io->yq)
				quant_out(dst, ys, io->so, io->zo, io->yq + (size_t)s * ys);
		}
	}
}

/*
 * A depthwise layer, or one of a single input channel (a stem), through the
 * flat kernel, (sample, output channel) plane by plane. A stem's channels
 * all read the sample's one plane: a thread lays it out once for the run of
 * channels it takes (static schedule: consecutive items).
 */
static void dwf_forward(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n,
			const struct mc_qconv_io *io, const int8_t *w, void *work, double macs)
{
	size_t HW = (size_t)cv->H * cv->W, P = (size_t)cv->OH * cv->OW, head;
	int simd = mc_s8_simd(), nt, kk = cv->k * cv->k, O = cv->O, stem = cv->C == 1;
	int64_t items = (int64_t)n * O;
	int32_t *zc = work;
	float *sc = (float *)(zc + O), *bb = sc + O;
	int32_t *wr = (int32_t *)(bb + O); /* [O][3]: a 3x3's rows of weights (dwf_wrow3) */
	struct dwf_geo g;
#if defined(__x86_64__) || defined(__i386__)
	struct quant_k qk = quant_k(q->sa, q->za), qo = quant_k(io->yq ? io->so : 1.0f, io->zo);
	struct dwf3_vm vm[DWF3_MAXV];
	int nv;
#endif

	dwf_geo(cv, &g);
	head = up64((size_t)O * 6 * 4);
	for (int c = 0; c < O; c++) {
		int32_t sum = 0;

		for (int t = 0; t < kk; t++)
			sum += w[(size_t)c * kk + t];
		zc[c] = (int32_t)((uint32_t)q->za * (uint32_t)sum);
		sc[c] = q->sa * q->sw[c];
		bb[c] = q->bias ? q->bias[c] : 0.0f;
		if (cv->k == 3)
			for (int r = 0; r < 3; r++)
				wr[3 * c + r] = dwf_wrow3(w + (size_t)c * kk + 3 * r);
	}
	nt = threads_for(items < INT32_MAX ? (int)items : INT32_MAX, macs);
#if defined(__x86_64__) || defined(__i386__)
	if (simd == 2 && cv->k == 3 && !stem && io->xq && io->yq &&
	    (nv = dwf3_vmasks(cv, vm)) > 0) {
		/*
		 * u8 to u8: each thread its share of the items, in blocks of
		 * samples whose planes stay in cache, channel by channel in a
		 * block, the block's samples of a channel in one call (all the
		 * samples of a channel at once, across the batch, ran slower).
		 */
		int vbmi = dw_vbmi_on(), min6 = relu6_min(io);
		/* items a thread takes channel by channel: samples of at most 64 KiB */
		int64_t blk = (int64_t)O * ((size_t)O * P < 65536 ? 65536 / ((size_t)O * P) : 1);
#pragma omp parallel num_threads(nt)
		{
			int tid = omp_get_thread_num(), team = omp_get_num_threads();
			int64_t i0 = items * tid / team, i1 = items * (tid + 1) / team;

			for (int64_t j0 = i0, j1; j0 < i1; j0 = j1) {
				j1 = (j0 / blk + 1) * blk;
				if (j1 > i1)
					j1 = i1;
				for (int c = 0; c < O; c++) {
					/* items s * O + c in [j0, j1): samples s0 .. s1 - 1 */
					int64_t s0 = j0 / O + (c < j0 % O),
						s1 = j1 > c ? (j1 - c + O - 1) / O : 0;
					size_t at = ((size_t)s0 * O + c) * P;

					if (s1 > s0)
						dwf3u_vnni(vm, nv, cv->OW, wr + 3 * c, zc[c], sc[c],
							   bb[c], q->za, &qo, (int)(s1 - s0),
							   (size_t)O * P, io->xq + at, io->yq + at,
							   vbmi, q->flags, min6);
				}
			}
		}
		return;
	}
	if (simd == 2 && cv->k == 3) {
		/*
		 * Straight from the u8 planes, each thread its share of the
		 * items in order; a stem's run of channels of one sample is
		 * one call, which builds each vector's window rows once.
		 */
#pragma omp parallel num_threads(nt)
		{
			int tid = omp_get_thread_num(), team = omp_get_num_threads();
			int64_t i1 = items * (tid + 1) / team;
			uint8_t *xq = (uint8_t *)work + head + (size_t)tid * g.slot;

			for (int64_t it = items * tid / team; it < i1;) {
				int64_t pl = stem ? it / O : it; /* the input plane */
				int c = (int)(it % O);
				int nc =
				    stem ? (int)((pl + 1) * O < i1 ? (pl + 1) * O - it : i1 - it)
					 : 1;
				const uint8_t *src = io->xq ? io->xq + (size_t)pl * HW : xq;

				if (!io->xq)
					quant_avx512(&qk, io->x + (size_t)pl * HW, HW, xq);
				dwf3_vnni(cv, &g, nc, wr + 3 * c, zc + c, sc + c, bb + c, q->za,
					  q->flags, src, &qo, io->y ? io->y + (size_t)it * P : NULL,
					  io->yq ? io->yq + (size_t)it * P : NULL);
				it += nc;
			}
		}
		return;
	}
#endif
#pragma omp parallel num_threads(nt)
	{
		uint8_t *xq = (uint8_t *)work + head + (size_t)omp_get_thread_num() * g.slot;
		uint8_t *xs = xq + g.xq;
		float *yt = (float *)(xs + g.pb);
		int64_t held = -1; /* the input plane xs holds */

		/* everything the planes leave alone is padding */
		memset(xs, q->za, g.pb);
#pragma omp for schedule(static)
		for (int64_t it = 0; it < items; it++) {
			int64_t pl = stem ? it / O : it; /* the input plane */
			const uint8_t *src = io->xq ? io->xq + (size_t)pl * HW : xq;
			float *dst = io->y ? io->y + (size_t)it * P : yt;
			uint8_t *dq = io->yq ? io->yq + (size_t)it * P : NULL;
			int c = (int)(it % O);
			const int8_t *wc = w + (size_t)c * kk;

			if (pl != held) {
				if (!io->xq) {
#if defined(__x86_64__) || defined(__i386__)
					if (simd == 2)
						quant_avx512(&qk, io->x + (size_t)pl * HW, HW, xq);
					else
#endif
						mc_quantize_u8(io->x + (size_t)pl * HW, HW, q->sa,
							       q->za, xq);
				}
				dwf_fill(cv, &g, src, xs);
				held = pl;
			}
			switch (simd) {
#if defined(__x86_64__) || defined(__i386__)
			case 2:
				dwf_plane_vnni(cv, &g, wc, zc[c], sc[c], bb[c], q->za, q->flags, xs,
					       &qo, dst, dq);
				break;
			case 1:
				dwf_plane_avx2(cv, &g, wc, zc[c], sc[c], bb[c], q->za, q->flags, xs,
					       io->so, io->zo, dst, dq);
				break;
#endif
			default:
				dwf_plane_portable(cv, &g, wc, zc[c], sc[c], bb[c], q->za, q->flags,
						   xs, dst);
				if (dq)
					quant_out(dst, P, io->so, io->zo, dq);
			}
		}
	}
}

/* A depthwise layer, (sample, channel) plane by plane. */
static void dw_forward(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n,
		       const struct mc_qconv_io *io, const int8_t *w, void *work, double macs)
{
	size_t HW = (size_t)cv->H * cv->W, P = (size_t)cv->OH * cv->OW;
	int tq = dw_tq(), nt;
	int64_t items = (int64_t)n * cv->C;
	dw_item_fn item = dw_item_path(tq);
	struct dw_geo g;
#if defined(__x86_64__) || defined(__i386__)
	/* stride 2, 3x3 of padding 1 (MobileNetV2's) on AVX-512 VNNI: dw2_plane_vnni */
	int s2 = tq == 4 && cv->k == 3 && cv->s == 2 && cv->p == 1;
	const int32_t *zc = (const int32_t *)work + (size_t)cv->C * 3;
	const float *sc = (const float *)(zc + cv->C), *bb = sc + cv->C;
	struct quant_k qk = quant_k(q->sa, q->za), qo = quant_k(io->yq ? io->so : 1.0f, io->zo);
	int vbmi = s2 && dw_vbmi_on(), min6 = s2 && relu6_min(io);
#endif

	dw_geo(cv, tq, &g);
	dw_head(cv, q, &g, w, work);
	nt = threads_for(items < INT32_MAX ? (int)items : INT32_MAX, macs);
#pragma omp parallel num_threads(nt)
	{
		uint8_t *xq = (uint8_t *)work + g.head + (size_t)omp_get_thread_num() * g.slot;
		uint8_t *xp = xq + g.xq;
		uint32_t *tp = (uint32_t *)(xp + g.xp);
		float *yt = (float *)((uint8_t *)tp + g.tp);

#pragma omp for schedule(static)
		for (int64_t it = 0; it < items; it++) {
			const uint8_t *src = io->xq ? io->xq + (size_t)it * HW : xq;
			float *dst = io->y ? io->y + (size_t)it * P : yt;

			if (!io->xq) {
#if defined(__x86_64__) || defined(__i386__)
				if (tq == 4)
					quant_avx512(&qk, io->x + (size_t)it * HW, HW, xq);
				else
#endif
					mc_quantize_u8(io->x + (size_t)it * HW, HW, q->sa, q->za,
						       xq);
			}
#if defined(__x86_64__) || defined(__i386__)
			if (s2) {
				int c = (int)(it % cv->C);

				dw2_plane_vnni(cv, (const uint32_t *)work + (size_t)c * 3, zc[c],
					       sc[c], bb[c], q->za, q->flags, src, tp, &qo, dst,
					       io->yq ? io->yq + (size_t)it * P : NULL, vbmi, min6);
				continue;
			}
#endif
			dw_pad(cv, &g, q->za, src, xp);
			item(cv, &g, work, (int)(it % cv->C), xp, tp, q->flags, dst);
			if (io->yq)
				quant_out(dst, P, io->so, io->zo, io->yq + (size_t)it * P);
		}
	}
}

int mc_qconv_forward_io(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n,
			const struct mc_qconv_io *io, const int8_t *w, void *work)
{
	size_t xs = (size_t)cv->C * cv->H * cv->W, ys = (size_t)cv->O * cv->OH * cv->OW;
	double macs = (double)n * (double)ys * (double)(cv->C / cv->g) * cv->k * cv->k;
	int nt = threads_for(n, macs);

	if (!io->x == !io->xq || !io->y == !io->yq)
		return -1;
	if ((io->xq || io->yq) && !mc_qconv_io_ok(cv))
		return -1;
	if (io->yq && (!(io->so > 0.0f) || !isfinite(io->so) || io->zo < 0 || io->zo > 255))
		return -1;
	if (n < 1)
		return 0;
	if (mc_qconv_is_pw(cv)) {
		pw_forward(cv, q, n, io, w, work, nt);
		return 0;
	}
	if (is_dense(cv)) {
		dense_forward(cv, q, n, io, w, work, nt);
		return 0;
	}
	if (mc_qconv_is_plane(cv)) {
		dwf_forward(cv, q, n, io, w, work, macs);
		return 0;
	}
	if (mc_qconv_is_dw(cv)) {
		dw_forward(cv, q, n, io, w, work, macs);
		return 0;
	}
#pragma omp parallel num_threads(nt)
	{
		uint8_t *xq = (uint8_t *)work + (size_t)omp_get_thread_num() * up64(xs);

#pragma omp for schedule(static)
		for (int s = 0; s < n; s++) {
			mc_quantize_u8(io->x + (size_t)s * xs, xs, q->sa, q->za, xq);
			conv_sample(cv, q, xq, w, io->y + (size_t)s * ys);
		}
	}
	return 0;
}

void mc_qconv_forward(const struct mc_qconv *cv, const struct mc_qconv_q *q, int n, const float *x,
		      const int8_t *w, float *y, void *work)
{
	struct mc_qconv_io io = {.x = x, .y = y};

	mc_qconv_forward_io(cv, q, n, &io, w, work);
}

/* ---------------------------------------------------------------- add */

struct add_k {
	int32_t ma, mb, rnd;
	int shift, za, zb, zo;
	float so;
};

static int add_prepare(const struct mc_qadd_q *q, struct add_k *k)
{
	int32_t ma, mb;
	int sa_, sb_;

	if (!(q->so > 0.0f) || !isfinite(q->so) || q->za < 0 || q->za > 255 || q->zb < 0 ||
	    q->zb > 255 || q->zo < 0 || q->zo > 255 || !(q->sa > 0.0f) || !(q->sb > 0.0f))
		return -1;
	/* one shift for both: that of the larger ratio */
	if (q->sa >= q->sb) {
		if (mc_qmul((double)q->sa / q->so, ADD_BITS, &ma, &sa_))
			return -1;
		mb = (int32_t)nearbyint(ldexp((double)q->sb / q->so, sa_));
		sb_ = sa_;
	} else {
		if (mc_qmul((double)q->sb / q->so, ADD_BITS, &mb, &sb_))
			return -1;
		ma = (int32_t)nearbyint(ldexp((double)q->sa / q->so, sb_));
		sa_ = sb_;
	}
	k->ma = ma;
	k->mb = mb;
	k->shift = sa_;
	k->rnd = sa_ ? (int32_t)1 << (sa_ - 1) : 0;
	k->za = q->za;
	k->zb = q->zb;
	k->zo = q->zo;
	k->so = q->so;
	return 0;
}

int mc_qadd_fixed(const struct mc_qadd_q *q, int32_t *ma, int32_t *mb, int *shift)
{
	struct add_k k;

	if (add_prepare(q, &k))
		return -1;
	*ma = k.ma;
	*mb = k.mb;
	*shift = k.shift;
	return 0;
}

static inline float add1(const struct add_k *k, uint8_t a, uint8_t b)
{
	int32_t d = ((int32_t)a - k->za) * k->ma + ((int32_t)b - k->zb) * k->mb + k->rnd;
	int32_t v = k->zo + (d >> k->shift);

	v = v < 0 ? 0 : v > 255 ? 255 : v;
	return k->so * (float)(v - k->zo);
}

typedef void (*add_fn)(const struct add_k *k, size_t n, const uint8_t *a, const uint8_t *b,
		       float *y);

static void add_portable(const struct add_k *k, size_t n, const uint8_t *a, const uint8_t *b,
			 float *y)
{
	for (size_t i = 0; i < n; i++)
		y[i] = add1(k, a[i], b[i]);
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static void add_avx2(const struct add_k *k, size_t n,
						     const uint8_t *a, const uint8_t *b, float *y)
{
	const __m256i za = _mm256_set1_epi32(k->za), zb = _mm256_set1_epi32(k->zb);
	const __m256i zo = _mm256_set1_epi32(k->zo), ma = _mm256_set1_epi32(k->ma);
	const __m256i mb = _mm256_set1_epi32(k->mb), rnd = _mm256_set1_epi32(k->rnd);
	const __m256i lo = _mm256_setzero_si256(), hi = _mm256_set1_epi32(255);
	const __m128i sh = _mm_cvtsi32_si128(k->shift);
	const __m256 so = _mm256_set1_ps(k->so);
	size_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m256i av = _mm256_sub_epi32(
		    _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(a + i))), za);
		__m256i bv = _mm256_sub_epi32(
		    _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(b + i))), zb);
		__m256i d = _mm256_add_epi32(
		    _mm256_add_epi32(_mm256_mullo_epi32(av, ma), _mm256_mullo_epi32(bv, mb)), rnd);
		__m256i v = _mm256_add_epi32(zo, _mm256_sra_epi32(d, sh));

		v = _mm256_min_epi32(_mm256_max_epi32(v, lo), hi);
		_mm256_storeu_ps(y + i,
				 _mm256_mul_ps(so, _mm256_cvtepi32_ps(_mm256_sub_epi32(v, zo))));
	}
	for (; i < n; i++)
		y[i] = add1(k, a[i], b[i]);
}

/* 16 outputs of the requantizing add (add1's integer steps), as f32. */
__attribute__((target("avx512f"), always_inline)) static inline __m512
add16(const struct add_k *k, const uint8_t *a, const uint8_t *b)
{
	__m512i av = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)a)),
				      _mm512_set1_epi32(k->za));
	__m512i bv = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)b)),
				      _mm512_set1_epi32(k->zb));
	__m512i d =
	    _mm512_add_epi32(_mm512_add_epi32(_mm512_mullo_epi32(av, _mm512_set1_epi32(k->ma)),
					      _mm512_mullo_epi32(bv, _mm512_set1_epi32(k->mb))),
			     _mm512_set1_epi32(k->rnd));
	__m512i zo = _mm512_set1_epi32(k->zo);
	__m512i v = _mm512_add_epi32(zo, _mm512_sra_epi32(d, _mm_cvtsi32_si128(k->shift)));

	v = _mm512_min_epi32(_mm512_max_epi32(v, _mm512_setzero_si512()), _mm512_set1_epi32(255));
	return _mm512_mul_ps(_mm512_set1_ps(k->so), _mm512_cvtepi32_ps(_mm512_sub_epi32(v, zo)));
}

__attribute__((target("avx512f"))) static void
add_avx512(const struct add_k *k, size_t n, const uint8_t *a, const uint8_t *b, float *y)
{
	const struct add_k kk = *k; /* in registers: stores to y may alias *k */
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		_mm512_storeu_ps(y + i, add16(&kk, a + i, b + i));
	for (; i < n; i++)
		y[i] = add1(k, a[i], b[i]);
}

/*
 * add_avx512 then quant_out at ko in one pass: each vector of y quantized
 * in registers (quant16, quant_out's bits), the tail through add1.
 */
__attribute__((target("avx512f,avx512bw"))) static void
add_avx512_u8(const struct add_k *k, size_t n, const uint8_t *a, const uint8_t *b,
	      const struct quant_k *ko, uint8_t *yq)
{
	const struct add_k kk = *k; /* in registers: stores to yq may alias *k, *ko */
	const struct quant_k qo = *ko;
	size_t i = 0;

	for (; i + 16 <= n; i += 16)
		quant16_store(&qo, yq + i, 0xffff, add16(&kk, a + i, b + i), 0);
	if (i < n) {
		float t[16];
		__mmask16 m = (__mmask16)((1u << (n - i)) - 1);

		for (size_t j = i; j < n; j++)
			t[j - i] = add1(k, a[j], b[j]);
		quant16_store(&qo, yq + i, m, _mm512_maskz_loadu_ps(m, t), 0);
	}
}
#endif

static add_fn add_path(void)
{
#if defined(__x86_64__) || defined(__i386__)
	switch (mc_s8_simd()) {
	case 2:
		return add_avx512;
	case 1:
		return add_avx2;
	}
#endif
	return add_portable;
}

/* Per thread: a chunk of a and b quantized, and of y before it is quantized. */
size_t mc_qadd_work(int64_t n)
{
	int64_t chunks = (n + ADD_CHUNK - 1) / ADD_CHUNK;

	return (size_t)(chunks < SLOTS ? (chunks < 1 ? 1 : chunks) : SLOTS) * (2 + 4) * ADD_CHUNK;
}

int mc_qadd_io(const struct mc_qadd_q *q, int64_t n, const struct mc_qadd_io *io, void *work)
{
	int64_t chunks = (n + ADD_CHUNK - 1) / ADD_CHUNK;
	struct add_k k;
	add_fn fn = add_path();
	int nt;

	if (add_prepare(q, &k) || !io->a == !io->aq || !io->b == !io->bq || !io->y == !io->yq ||
	    (io->yq && (!(io->so > 0.0f) || !isfinite(io->so) || io->zo < 0 || io->zo > 255)))
		return -1;
	nt = threads_for(chunks > INT32_MAX ? INT32_MAX : (int)chunks, 20.0 * (double)n);
#pragma omp parallel num_threads(nt)
	{
		uint8_t *qa = (uint8_t *)work + (size_t)omp_get_thread_num() * 6 * ADD_CHUNK;
		uint8_t *qb = qa + ADD_CHUNK;
		float *yt = (float *)(qb + ADD_CHUNK);

#pragma omp for schedule(static)
		for (int64_t c = 0; c < chunks; c++) {
			int64_t i0 = c * ADD_CHUNK, len = n - i0 < ADD_CHUNK ? n - i0 : ADD_CHUNK;
			const uint8_t *ua = io->aq ? io->aq + i0 : qa,
				      *ub = io->bq ? io->bq + i0 : qb;
			float *dst = io->y ? io->y + i0 : yt;

			if (!io->aq)
				mc_quantize_u8(io->a + i0, (size_t)len, q->sa, q->za, qa);
			if (!io->bq)
				mc_quantize_u8(io->b + i0, (size_t)len, q->sb, q->zb, qb);
#if defined(__x86_64__) || defined(__i386__)
			if (io->yq && fn == add_avx512) {
				struct quant_k ko = quant_k(io->so, io->zo);

				add_avx512_u8(&k, (size_t)len, ua, ub, &ko, io->yq + i0);
				continue;
			}
#endif
			fn(&k, (size_t)len, ua, ub, dst);
			if (io->yq)
				quant_out(dst, (size_t)len, io->so, io->zo, io->yq + i0);
		}
	}
	return 0;
}

int mc_qadd(const struct mc_qadd_q *q, int64_t n, const float *a, const float *b, float *y,
	    void *work)
{
	struct mc_qadd_io io = {.a = a, .b = b, .y = y};

	return mc_qadd_io(q, n, &io, work);
}

int mc_qadd_ref(const struct mc_qadd_q *q, int64_t n, const float *a, const float *b, float *y)
{
	struct add_k k;

	if (add_prepare(q, &k))
		return -1;
	for (int64_t i = 0; i < n; i++) {
		uint8_t qa, qb;

		mc_quantize_u8_ref(a + i, 1, q->sa, q->za, &qa);
		mc_quantize_u8_ref(b + i, 1, q->sb, q->zb, &qb);
		y[i] = add1(&k, qa, qb);
	}
	return 0;
}

/* ---------------------------------------------------------------- global average pooling */

struct gap_k {
	int64_t m, rnd;
	int shift, zi, zo;
	float so;
};

static int gap_prepare(const struct mc_qgap_q *q, int64_t HW, struct gap_k *k)
{
	int32_t m;

	if (HW < 1 || HW > (1 << 24) || q->zi < 0 || q->zi > 255 || q->zo < 0 || q->zo > 255 ||
	    !(q->si > 0.0f) || !isfinite(q->si) || !(q->so > 0.0f) || !isfinite(q->so) ||
	    mc_qmul((double)q->si / ((double)q->so * (double)HW), 30, &m, &k->shift))
		return -1;
	k->m = m;
	k->rnd = k->shift ? (int64_t)1 << (k->shift - 1) : 0;
	k->zi = q->zi;
	k->zo = q->zo;
	k->so = q->so;
	return 0;
}

int mc_qgap_fixed(const struct mc_qgap_q *q, int64_t HW, int32_t *m, int *shift)
{
	struct gap_k k;

	if (gap_prepare(q, HW, &k))
		return -1;
	*m = (int32_t)k.m;
	*shift = k.shift;
	return 0;
}

/* The channel's output from the plain sum of its u8 values. */
static inline float gap1(const struct gap_k *k, int64_t HW, int64_t sum)
{
	int64_t acc = sum - HW * k->zi, v = k->zo + ((acc * k->m + k->rnd) >> k->shift);

	v = v < 0 ? 0 : v > 255 ? 255 : v;
	return k->so * (float)(v - k->zo);
}

typedef int64_t (*sum_fn)(const uint8_t *x, int64_t n);

static int64_t sum_portable(const uint8_t *x, int64_t n)
{
	int64_t s = 0;

	for (int64_t i = 0; i < n; i++)
		s += x[i];
	return s;
}

#if defined(__x86_64__) || defined(__i386__)
__attribute__((target("avx2"))) static int64_t sum_avx2(const uint8_t *x, int64_t n)
{
	__m256i acc = _mm256_setzero_si256(), zero = _mm256_setzero_si256();
	int64_t i = 0, s, l[4];

	for (; i + 32 <= n; i += 32)
		acc = _mm256_add_epi64(
		    acc, _mm256_sad_epu8(_mm256_loadu_si256((const __m256i *)(x + i)), zero));
	if (i + 16 <= n) {
		acc = _mm256_add_epi64(
		    acc, _mm256_zextsi128_si256(_mm_sad_epu8(
			     _mm_loadu_si128((const __m128i *)(x + i)), _mm_setzero_si128())));
		i += 16;
	}
	if (i + 8 <= n) {
		acc = _mm256_add_epi64(
		    acc, _mm256_zextsi128_si256(_mm_sad_epu8(
			     _mm_loadl_epi64((const __m128i *)(x + i)), _mm_setzero_si128())));
		i += 8;
	}
	_mm256_storeu_si256((__m256i *)l, acc);
	s = l[0] + l[1] + l[2] + l[3];
	for (; i < n; i++)
		s += x[i];
	return s;
}

__attribute__((target("avx512f,avx512bw"))) static int64_t sum_avx512(const uint8_t *x, int64_t n)
{
	__m512i acc = _mm512_setzero_si512(), zero = _mm512_setzero_si512();
	int64_t i = 0;

	for (; i + 64 <= n; i += 64)
		acc = _mm512_add_epi64(acc, _mm512_sad_epu8(_mm512_loadu_si512(x + i), zero));
	if (i < n) /* the last 1-63 bytes in one masked load: a plane of 7x7 is only this */
		acc = _mm512_add_epi64(
		    acc, _mm512_sad_epu8(
			     _mm512_maskz_loadu_epi8(((__mmask64)1 << (n - i)) - 1, x + i), zero));
	return _mm512_reduce_add_epi64(acc);
}
#endif

static sum_fn sum_path(void)
{
#if defined(__x86_64__) || defined(__i386__)
	switch (mc_s8_simd()) {
	case 2:
		return sum_avx512;
	case 1:
		return sum_avx2;
	}
#endif
	return sum_portable;
}

size_t mc_qgap_work(int n, int C, int64_t HW)
{
	int slots = n < 1 ? 1 : n < SLOTS ? n : SLOTS;
	size_t xs = up64((size_t)C * (size_t)HW);

	return xs > SIZE_MAX / slots ? SIZE_MAX : xs * (size_t)slots;
}

int mc_qgap(const struct mc_qgap_q *q, int n, int C, int64_t HW, const float *x, float *y,
	    void *work)
{
	size_t xs = (size_t)C * (size_t)HW;
	struct gap_k k;
	sum_fn sum = sum_path();
	int nt;

	if (gap_prepare(q, HW, &k))
		return -1;
	nt = threads_for(n, 10.0 * (double)n * (double)xs);
#pragma omp parallel num_threads(nt)
	{
		uint8_t *xq = (uint8_t *)work + (size_t)omp_get_thread_num() * up64(xs);

#pragma omp for schedule(static)
		for (int s = 0; s < n; s++) {
			mc_quantize_u8(x + (size_t)s * xs, xs, q->si, q->zi, xq);
			for (int c = 0; c < C; c++)
				y[(size_t)s * C + c] = gap1(&k, HW, sum(xq + (size_t)c * HW, HW));
		}
	}
	return 0;
}

int mc_qgap_u8(const struct mc_qgap_q *q, int n, int C, int64_t HW, const uint8_t *xq, float *y)
{
	size_t xs = (size_t)C * (size_t)HW;
	struct gap_k k;
	sum_fn sum = sum_path();
	int nt;

	if (gap_prepare(q, HW, &k))
		return -1;
	nt = threads_for(n, 2.0 * (double)n * (double)xs);
#pragma omp parallel for num_threads(nt) schedule(static)
	for (int s = 0; s < n; s++)
		for (int c = 0; c < C; c++)
			y[(size_t)s * C + c] =
			    gap1(&k, HW, sum(xq + (size_t)s * xs + (size_t)c * HW, HW));
	return 0;
}

int mc_qgap_ref(const struct mc_qgap_q *q, int n, int C, int64_t HW, const float *x, float *y)
{
	struct gap_k k;

	if (gap_prepare(q, HW, &k))
		return -1;
	for (int s = 0; s < n; s++)
		for (int c = 0; c < C; c++) {
			int64_t acc = 0;

			for (int64_t i = 0; i < HW; i++) {
				uint8_t v;

				mc_quantize_u8_ref(x + ((size_t)s * C + c) * HW + i, 1, q->si,
						   q->zi, &v);
				acc += v;
			}
			y[(size_t)s * C + c] = gap1(&k, HW, acc);
		}
	return 0;
}
