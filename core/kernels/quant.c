/* SPDX-License-Identifier: MIT */
/*
 * quant.c - the quantization kernels: the weight quantizers (the fast one
 * beside its _ref ground truth), 4-bit packing, and the activation ranges
 * that calibration picks for u8 inputs (min-max, percentile, MSE).
 *
 * A weight matrix [rows, cols] is cut into blocks that share a scale (and,
 * asymmetric, a zero point): the whole tensor, one row, or groups of
 * columns within a row (struct mc_qspec, include/mcomp/tensor.h). The fast
 * quantizer writes the reference's bytes for any thread count, so model
 * files do not depend on how many threads wrote them.
 */
#include <limits.h>
#include <math.h>
#include <stdlib.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <mcomp/tensor.h>

#include "kernels/cpu.h"

#define PAR_MIN 32768 /* elements below which one thread quantizes a matrix */

/* ---------------------------------------------------------------- weight quantizers */

int64_t mc_qspec_blocks(const struct mc_qspec *s, int64_t rows, int64_t cols)
{
	return s->group > 0 ? rows * (cols / s->group) : 1;
}

static int check_spec(const float *w, int64_t rows, int64_t cols, const struct mc_qspec *s,
		      struct mc_err *err)
{
	size_t n;

	if (s->bits != 8 && s->bits != 4)
		return mc_err_set(err, MC_EINVAL, "quantize: %d bits; use 8 or 4", s->bits);
	if (s->reduce_range && s->bits != 8)
		return mc_err_set(err, MC_EINVAL,
				  "quantize: reduce_range narrows 8-bit weights to [-64, 64]; %d "
				  "bits cannot be reduced",
				  s->bits);
	if (rows < 1 || cols < 1 || mc_mul_overflow((size_t)rows, (size_t)cols, &n) ||
	    n > (size_t)INT64_MAX / sizeof(float))
		return mc_err_set(err, MC_EINVAL, "quantize: bad matrix size [%lld, %lld]",
				  (long long)rows, (long long)cols);
	if (s->group < 0 || (s->group > 0 && cols % s->group))
		return mc_err_set(err, MC_EINVAL,
				  "quantize: group of %d columns does not divide rows of %lld; use a "
				  "divisor of %lld",
				  s->group, (long long)cols, (long long)cols);
	return 0;
}

/*
 * The q range of s: [-64, 64] with reduce_range (8 bits), else [-(2^(b-1)
 * - 1), 2^(b-1) - 1] symmetric and [-2^(b-1), 2^(b-1) - 1] asymmetric.
 */
static void q_range(const struct mc_qspec *s, float *qmin, float *qmax)
{
	if (s->reduce_range) {
		*qmin = -64.0f;
		*qmax = 64.0f;
		return;
	}
	*qmax = (float)((1 << (s->bits - 1)) - 1);
	*qmin = s->asym ? -*qmax - 1.0f : -*qmax;
}

/* Scale and zero point of a block whose values lie in [lo, hi] (lo <= 0 <= hi). */
static void block_qparams(float lo, float hi, const struct mc_qspec *s, float *scale, int8_t *zp)
{
	float qmax, qmin, sc, z;

	q_range(s, &qmin, &qmax);
	if (!s->asym) {
		sc = (hi > -lo ? hi : -lo) / qmax;
		z = 0.0f;
	} else {
		sc = (hi - lo) / (qmax - qmin);
		z = (sc > 0.0f && isfinite(sc)) ? qmin - nearbyintf(lo / sc) : 0.0f;
		z = z < qmin ? qmin : z > qmax ? qmax : z;
	}
	if (!(sc > 0.0f)) {
		sc = 1.0f;
		z = 0.0f;
	} else if (!isfinite(sc)) {
		sc = 3.4028234664e38f;
	}
	*scale = sc;
	if (zp)
		*zp = (int8_t)z;
}

static inline int8_t quantize1(float x, float sc, float z, float qmin, float qmax)
{
	float v = nearbyintf(x / sc) + z;

	return (int8_t)(v < qmin ? qmin : v > qmax ? qmax : v);
}

/* min(x, 0) and max(x, 0) of n values; *bad set when one is NaN or infinite. */
static void range_ref(const float *x, int64_t n, float *lo, float *hi, int *bad)
{
	float l = 0.0f, h = 0.0f;

	for (int64_t i = 0; i < n; i++) {
		if (!isfinite(x[i]))
			*bad = 1;
		l = x[i] < l ? x[i] : l;
		h = x[i] > h ? x[i] : h;
	}
	*lo = l;
	*hi = h;
}

int mc_quantize_weights_ref(const float *w, int64_t rows, int64_t cols, const struct mc_qspec *s,
			    int8_t *q, float *scale, int8_t *zp, struct mc_err *err)
{
	int64_t len, nb;
	float qmax, qmin;
	int ret = check_spec(w, rows, cols, s, err), bad = 0;

	if (ret)
		return ret;
	len = s->group > 0 ? s->group : rows * cols;
	nb = mc_qspec_blocks(s, rows, cols);
	q_range(s, &qmin, &qmax);
	for (int64_t b = 0; b < nb; b++) {
		const float *x = w + b * len;
		float lo, hi;
		int8_t z = 0;

		range_ref(x, len, &lo, &hi, &bad);
		if (bad)
			return mc_err_set(err, MC_EINVAL,
					  "quantize: a weight is NaN or infinite (block %lld); the "
					  "model is broken, retrain it",
					  (long long)b);
		block_qparams(lo, hi, s, &scale[b], s->asym ? &z : NULL);
		if (zp && s->asym)
			zp[b] = z;
		for (int64_t i = 0; i < len; i++)
			q[b * len + i] = quantize1(x[i], scale[b], (float)z, qmin, qmax);
	}
	return 0;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static void range_avx2(const float *x, int64_t n, float *lo,
							float *hi, int *bad)
{
	__m256 l = _mm256_setzero_ps(), h = _mm256_setzero_ps(), big = _mm256_set1_ps(3.4028234664e38f);
	__m256 sign = _mm256_set1_ps(-0.0f), nf = _mm256_setzero_ps();
	float lv[8], hv[8], l1, h1;
	int64_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m256 v = _mm256_loadu_ps(x + i);

		l = _mm256_min_ps(v, l); /* NaN in v: keeps l */
		h = _mm256_max_ps(v, h);
		nf = _mm256_or_ps(nf, _mm256_cmp_ps(_mm256_andnot_ps(sign, v), big, _CMP_NLE_UQ));
	}
	_mm256_storeu_ps(lv, l);
	_mm256_storeu_ps(hv, h);
	if (_mm256_movemask_ps(nf))
		*bad = 1;
	range_ref(x + i, n - i, &l1, &h1, bad);
	for (int k = 0; k < 8; k++) {
		l1 = lv[k] < l1 ? lv[k] : l1;
		h1 = hv[k] > h1 ? hv[k] : h1;
	}
	*lo = l1;
	*hi = h1;
}

__attribute__((target("avx2"))) static void quantize_avx2(const float *x, int64_t n, float sc,
							   float z, float qmin, float qmax,
							   int8_t *q)
{
	__m256 vs = _mm256_set1_ps(sc), vz = _mm256_set1_ps(z);
	__m256 vlo = _mm256_set1_ps(qmin), vhi = _mm256_set1_ps(qmax);
	int64_t i = 0;

	for (; i + 8 <= n; i += 8) {
		__m256 v = _mm256_round_ps(_mm256_div_ps(_mm256_loadu_ps(x + i), vs),
					   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
		__m256i iv;
		__m128i s16;

		v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, vz), vlo), vhi);
		iv = _mm256_cvtps_epi32(v);
		s16 = _mm_packs_epi32(_mm256_castsi256_si128(iv), _mm256_extracti128_si256(iv, 1));
		_mm_storel_epi64((__m128i *)(q + i), _mm_packs_epi16(s16, s16));
	}
	for (; i < n; i++)
		q[i] = quantize1(x[i], sc, z, qmin, qmax);
}
#endif

static void range_fast(const float *x, int64_t n, float *lo, float *hi, int *bad)
{
#if defined(__x86_64__)
	if (mc_cpu_has(MC_CPU_AVX2)) {
		range_avx2(x, n, lo, hi, bad);
		return;
	}
#endif
	range_ref(x, n, lo, hi, bad);
}

static void quantize_fast(const float *x, int64_t n, float sc, float z, float qmin, float qmax,
			  int8_t *q)
{
#if defined(__x86_64__)
	if (mc_cpu_has(MC_CPU_AVX2)) {
		quantize_avx2(x, n, sc, z, qmin, qmax, q);
		return;
	}
#endif
	for (int64_t i = 0; i < n; i++)
		q[i] = quantize1(x[i], sc, z, qmin, qmax);
}

/*
 * Rows are split among threads. Min and max are exact, so their order does
 * not matter and the bytes equal the reference's for any thread count.
 */
int mc_quantize_weights(const float *w, int64_t rows, int64_t cols, const struct mc_qspec *s,
			int8_t *q, float *scale, int8_t *zp, struct mc_err *err)
{
	int64_t per_row;
	float qmax, qmin, tlo = 0.0f, thi = 0.0f;
	int ret = check_spec(w, rows, cols, s, err), bad = 0;

	if (ret)
		return ret;
	per_row = s->group > 0 ? cols / s->group : 0;
	q_range(s, &qmin, &qmax);
	if (!per_row) {
		/* One block: the tensor's range first, over rows in parallel. */
#pragma omp parallel for schedule(static) reduction(min : tlo) reduction(max : thi) \
	reduction(| : bad) if (rows * cols >= PAR_MIN)
		for (int64_t r = 0; r < rows; r++) {
			float lo, hi;

			range_fast(w + r * cols, cols, &lo, &hi, &bad);
			tlo = lo < tlo ? lo : tlo;
			thi = hi > thi ? hi : thi;
		}
		if (bad)
			goto bad;
		block_qparams(tlo, thi, s, &scale[0], s->asym ? zp : NULL);
	}
#pragma omp parallel for schedule(static) reduction(| : bad) if (rows * cols >= PAR_MIN)
	for (int64_t r = 0; r < rows; r++) {
		const float *x = w + r * cols;
		int8_t *qr = q + r * cols;

		if (!per_row) {
			quantize_fast(x, cols, scale[0], s->asym ? (float)zp[0] : 0.0f, qmin, qmax,
				      qr);
			continue;
		}
		for (int64_t j = 0; j < per_row; j++) {
			int64_t b = r * per_row + j, g = s->group;
			float lo, hi;
			int8_t z = 0;
			int rb = 0;

			range_fast(x + j * g, g, &lo, &hi, &rb);
			bad |= rb;
			block_qparams(lo, hi, s, &scale[b], s->asym ? &z : NULL);
			if (s->asym)
				zp[b] = z;
			quantize_fast(x + j * g, g, scale[b], (float)z, qmin, qmax, qr + j * g);
		}
	}
	if (!bad)
		return 0;
bad:
	return mc_err_set(err, MC_EINVAL,
			  "quantize: a weight is NaN or infinite; the model is broken, retrain it");
}

void mc_dequantize_weights(const int8_t *q, int64_t rows, int64_t cols, const struct mc_qspec *s,
			   const float *scale, const int8_t *zp, float *w)
{
	int64_t len = s->group > 0 ? s->group : rows * cols, n = rows * cols;

	for (int64_t i = 0; i < n; i++) {
		int64_t b = i / len;

		w[i] = ((float)q[i] - (s->asym && zp ? (float)zp[b] : 0.0f)) * scale[b];
	}
}

void mc_q4_pack(const int8_t *q, int64_t n, uint8_t *packed)
{
	for (int64_t i = 0; i + 1 < n; i += 2)
		packed[i / 2] = (uint8_t)(((q[i] + 8) & 15) | ((q[i + 1] + 8) & 15) << 4);
	if (n % 2)
		packed[n / 2] = (uint8_t)((q[n - 1] + 8) & 15);
}

void mc_q4_unpack(const uint8_t *packed, int64_t n, int8_t *q)
{
	for (int64_t i = 0; i < n; i++)
		q[i] = (int8_t)(((packed[i / 2] >> (4 * (i % 2))) & 15) - 8);
}

/* ---------------------------------------------------------------- activation ranges */

static int cmp_float(const void *a, const void *b)
{
	float x = *(const float *)a, y = *(const float *)b;

	return (x > y) - (x < y);
}

/* Squared error of x through u8 quantization over [lo, hi], in double. */
static double u8_sse(const float *x, size_t n, float lo, float hi)
{
	double e = 0.0;
	float s;
	int z;

	mc_u8_qparams(lo, hi, &s, &z);
	for (size_t i = 0; i < n; i++) {
		float v = nearbyintf(x[i] / s) + (float)z, d;

		if (isnan(x[i]))
			continue;
		v = v < 0.0f ? 0.0f : v > 255.0f ? 255.0f : v;
		d = (v - (float)z) * s - x[i];
		e += (double)d * d;
	}
	return e;
}

int mc_act_range(const float *x, size_t n, enum mc_range_method method, double pct, float *lo,
		 float *hi, struct mc_err *err)
{
	float l, h;

	*lo = *hi = 0.0f;
	mc_minmax(x, n, &l, &h);
	l = l < 0.0f ? l : 0.0f;
	h = h > 0.0f ? h : 0.0f;
	if (method == MC_RANGE_MINMAX) {
		*lo = l;
		*hi = h;
		return 0;
	}
	if (method == MC_RANGE_PERCENTILE) {
		float *v;
		size_t m = 0, a, b;

		if (!(pct >= 50.0 && pct <= 100.0))
			return mc_err_set(err, MC_EINVAL,
					  "percentile %g is outside [50, 100]; use e.g. 99.99", pct);
		v = malloc((n ? n : 1) * sizeof(float));
		if (!v)
			return mc_err_set(err, MC_ENOMEM, "calibration: out of memory for %zu values",
					  n);
		for (size_t i = 0; i < n; i++)
			if (!isnan(x[i]))
				v[m++] = x[i];
		if (m) {
			qsort(v, m, sizeof(float), cmp_float);
			/* nearest rank: the value below which pct% of the values lie */
			b = (size_t)ceil(pct / 100.0 * (double)m);
			b = b < 1 ? 0 : b - 1;
			a = m - 1 - b;
			*lo = v[a] < 0.0f ? v[a] : 0.0f;
			*hi = v[b] > 0.0f ? v[b] : 0.0f;
		}
		free(v);
		return 0;
	}
	if (method == MC_RANGE_MSE) {
		double best = -1.0;

		for (int t = 100; t >= 1; t--) {
			float tl = l * (float)t / 100.0f, th = h * (float)t / 100.0f;
			double e = u8_sse(x, n, tl, th);

			if (best < 0.0 || e < best) {
				best = e;
				*lo = tl;
				*hi = th;
			}
		}
		return 0;
	}
	return mc_err_set(err, MC_EINVAL, "calibration: unknown range method %d", (int)method);
}

