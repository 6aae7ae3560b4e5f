/* SPDX-License-Identifier: MIT */
/*
 * ops_qlinear.c - the qlinear op, and the int8 path it shares with qconv2d
 * (ops_qconv.c): packed weights and the quantization of the input.
 *
 * qlinear is a linear layer whose weight is stored low-bit (docs/quantize.md):
 *
 *	param 0  NAME.weight             I8 [out, in] (bits 8) or Q4 [out, in]
 *	                                 (bits 4, two a byte, stored as U8 [bytes])
 *	param 1  NAME.weight_scale       F32 [1] per tensor, [out] per channel,
 *	                                 [out, in / group_size] per group
 *	param 2  NAME.bias               F32 [out]
 *	param 3  NAME.weight_zero_point  I8, the shape of the scales (asymmetric), or
 *	         NAME.input_qparams      F32 [2]: input scale, zero point (static)
 *
 * Two kernels. Modes dynamic and static (int8, symmetric, per tensor or per
 * channel) quantize the input to u8 (dynamic: the batch's min and max,
 * static: the calibrated scale and zero point) and run the runtime's int8
 * GEMM (mc_gemm_u8s8: VNNI or AMX where present) with per-channel
 * requantization; the weights are packed on first use and kept. Mode
 * weight-only keeps activations in f32: a few rows go through a direct
 * kernel that reads the int8 or 4-bit weights and converts them in
 * registers (f32 accumulation); larger batches dequantize 64 output rows at a
 * time into a per-thread buffer and multiply it with the f32 GEMM, so no
 * full f32 copy of the weights ever exists.
 *
 * Nothing is trained: every parameter is a buffer (n_buffers = n_params);
 * backward passes the input gradient through the dequantized weights
 * (straight through) so that f32 layers before it can still be fine-tuned.
 * The weight quantizers themselves are kernels (core/kernels/quant.c).
 */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "graph/ops_quant_int.h"
#include "kernels/cpu.h"

struct qlinear_attrs {
	int out;
	int bits;
	int mode;
	int scheme; /* 0: symmetric, 1: asymmetric */
	int granularity;
	int group_size;
};

const char *const mc_qmodes[] = { "weight-only", "dynamic", "static", NULL };
static const char *const qschemes[] = { "symmetric", "asymmetric", NULL };
const char *const mc_qgrans[] = { "per-tensor", "per-channel", "per-group", NULL };

static const struct mc_param_def qlinear_attrs[] = {
    MC_PARAM_INT(struct qlinear_attrs, out, NULL, 1, INT_MAX, "output features"),
    MC_PARAM_INT(struct qlinear_attrs, bits, "8", 1, 32, "weight bits: 8 or 4"),
    MC_PARAM_ENUM(struct qlinear_attrs, mode, "dynamic", mc_qmodes,
		  "activations: f32 (weight-only), u8 from each batch's range, or u8 calibrated"),
    MC_PARAM_ENUM(struct qlinear_attrs, scheme, "symmetric", qschemes, "weight zero points"),
    MC_PARAM_ENUM(struct qlinear_attrs, granularity, "per-channel", mc_qgrans,
		  "what one weight scale covers"),
    MC_PARAM_INT(struct qlinear_attrs, group_size, "32", 1, 65536,
		 "per-group: input columns per scale"),
    MC_PARAM_END,
};

/* The weight layout of node as a struct mc_qspec. */
static struct mc_qspec node_spec(const struct mc_node *node)
{
	const struct qlinear_attrs *a = node->attrs;
	int64_t in = node->params[QP_WEIGHT]->shape[1];
	struct mc_qspec s = { .bits = a->bits, .asym = a->scheme == 1 };

	s.group = a->granularity == QGRAN_TENSOR    ? 0
		  : a->granularity == QGRAN_CHANNEL ? (int)in
						    : a->group_size;
	return s;
}

int mc_qop_new_params(struct mc_node *node, enum mc_dtype dtype, int w_ndim, const int64_t *ws,
		      int s_ndim, const int64_t *ss, int asym, int mode, struct mc_err *err)
{
	int64_t two = 2;
	int r = mc_node_add_param(node, QP_WEIGHT, "weight", dtype, w_ndim, ws, err);

	if (!r)
		r = mc_node_new_param(node, QP_SCALE, "weight_scale", s_ndim, ss, err);
	if (!r)
		r = mc_node_new_param(node, QP_BIAS, "bias", 1, ws, err);
	if (!r && asym) {
		r = mc_node_add_param(node, QP_EXTRA, "weight_zero_point", MC_S8, s_ndim, ss, err);
	} else if (!r && mode == QMODE_STATIC) {
		r = mc_node_new_param(node, QP_EXTRA, "input_qparams", 1, &two, err);
		if (!r && node->params[QP_EXTRA]->data)
			((float *)node->params[QP_EXTRA]->data)[0] = 1.0f;
	}
	if (r)
		return r;
	/* Scales of 1 until filled: a fresh node computes zeros, never NaN.
	 * (A model of shapes only has no data to fill.) */
	for (int64_t i = 0; node->params[QP_SCALE]->data && i < node->params[QP_SCALE]->numel; i++)
		((float *)node->params[QP_SCALE]->data)[i] = 1.0f;
	node->n_buffers = node->n_params;
	return 0;
}

static int qlinear_setup(struct mc_node *node, const int *in_ndim,
			 const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	const struct qlinear_attrs *a = node->attrs;
	int64_t in = in_shape[0][0], ws[2], ss[2];
	int s_ndim = 1, r = 0, integer = a->mode != QMODE_WEIGHT_ONLY;
	char buf[256];
	size_t wn;

	if (in_ndim[0] != 1)
		return mc_err_set(err, MC_EINVAL,
				  "qlinear needs one value per feature, got input shape %s; put a "
				  "flatten before it",
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	if (in < 1 || in > 65536 || mc_mul_overflow((size_t)in, (size_t)a->out, &wn) ||
	    wn > (size_t)INT32_MAX)
		return mc_err_set(err, MC_EINVAL,
				  "qlinear of %lld inputs and %d outputs is too large; the int8 "
				  "kernels take at most 65536 inputs and 2^31 weights",
				  (long long)in, a->out);
	if (a->bits != 8 && a->bits != 4)
		return mc_err_set(err, MC_EINVAL, "qlinear: bits %d; use 8 or 4", a->bits);
	if (a->bits == 4 && in % 2)
		return mc_err_set(err, MC_EINVAL,
				  "qlinear: 4-bit rows pack two inputs a byte, but there are %lld "
				  "inputs; use bits 8",
				  (long long)in);
	if (a->granularity == QGRAN_GROUP && in % a->group_size)
		return mc_err_set(err, MC_EINVAL,
				  "qlinear: group_size %d does not divide the %lld inputs of a row; "
				  "use a divisor",
				  a->group_size, (long long)in);
	if (integer && (a->bits != 8 || a->scheme != 0 || a->granularity == QGRAN_GROUP))
		return mc_err_set(err, MC_EINVAL,
				  "qlinear: mode %s runs on the int8 GEMM, which takes symmetric "
				  "int8 weights per tensor or per channel; use mode weight-only for "
				  "%s",
				  mc_qmodes[a->mode],
				  a->bits != 8 ? "4 bits" : a->scheme ? "asymmetric" : "per-group");
	ws[0] = a->out;
	ws[1] = in;
	if (a->granularity == QGRAN_TENSOR) {
		ss[0] = 1;
	} else if (a->granularity == QGRAN_CHANNEL) {
		ss[0] = a->out;
	} else {
		ss[0] = a->out;
		ss[1] = in / a->group_size;
		s_ndim = 2;
	}
	r = mc_qop_new_params(node, a->bits == 8 ? MC_S8 : MC_Q4, 2, ws, s_ndim, ss, a->scheme == 1,
			      a->mode, err);
	if (r)
		return r;
	node->out_ndim = 1;
	node->out_shape[0] = a->out;
	return 0;
}

/* ------------------------------------------------ int8 path: packed weights */

struct qcache {
	const void *w, *s, *b; /* the data it was packed from */
	struct mc_s8_weights *pk;
};

/*
 * Packed weights are the node's cache (node->cache), which mc_model_dup
 * never copies and the graph API releases (mc_qop_release) when the node is
 * freed or its parameters change. The lock makes the first packing safe
 * when two executors run one model.
 */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;

static void qcache_free(struct qcache *c)
{
	if (c)
		mc_s8_free(c->pk);
	free(c);
}

void mc_qop_release(struct mc_node *node)
{
	pthread_mutex_lock(&cache_lock);
	qcache_free(node->cache);
	node->cache = NULL;
	pthread_mutex_unlock(&cache_lock);
}

/*
 * The node's weights packed for mc_gemm_u8s8, made once under a lock (two
 * executors may run one model). NULL when the file's scales are not finite
 * and positive (mc_s8_pack refuses them) or out of memory.
 */
const struct mc_s8_weights *mc_qop_packed(const struct mc_node *node)
{
	const struct mc_tensor *w = node->params[QP_WEIGHT], *s = node->params[QP_SCALE];
	const struct mc_tensor *b = node->params[QP_BIAS];
	int O = (int)w->shape[0], I = (int)(w->numel / w->shape[0]);
	/* The cache is the node's own mutable state behind a const view. */
	void **slot = &((struct mc_node *)node)->cache;
	struct mc_s8_weights *pk = NULL;
	struct qcache *c;
	float *sw = NULL;

	pthread_mutex_lock(&cache_lock);
	c = *slot;
	if (c && c->w == w->data && c->s == s->data && c->b == b->data)
		goto out;
	qcache_free(c);
	*slot = NULL;
	c = calloc(1, sizeof(*c));
	sw = malloc((size_t)O * sizeof(float));
	if (!c || !sw) {
		free(c);
		c = NULL;
		goto out;
	}
	for (int o = 0; o < O; o++)
		sw[o] = ((const float *)s->data)[s->numel == 1 ? 0 : o];
	c->w = w->data;
	c->s = s->data;
	c->b = b->data;
	c->pk = mc_s8_pack(w->data, O, I, I, sw, b->data, NULL);
	*slot = c;
out:
	pk = c ? c->pk : NULL;
	pthread_mutex_unlock(&cache_lock);
	free(sw);
	return pk;
}

/*
 * Scale and zero point of the u8 input: the calibrated pair stored in the
 * node (static), or from the batch's exact min and max (dynamic), the same
 * for any thread count. Returns the zero point, or -1 when the stored pair
 * is unusable (the caller then refuses to run the integer path).
 */
int mc_qop_input_qparams(const struct mc_node *node, int mode, const float *x, int64_t total,
			 float *sa)
{
	float lo = 0.0f, hi = 0.0f;
	int za;

	if (mode == QMODE_STATIC) {
		const float *qp = node->params[QP_EXTRA]->data;

		*sa = qp[0];
		za = qp[1] >= 0.0f && qp[1] <= 255.0f && qp[1] == nearbyintf(qp[1]) ? (int)qp[1] : -1;
		return *sa > 0.0f && isfinite(*sa) ? za : -1;
	}
#pragma omp parallel for schedule(static) reduction(min : lo) reduction(max : hi) \
	if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < total; c += MC_CHUNK) {
		int64_t e = c + MC_CHUNK < total ? c + MC_CHUNK : total;
		float l, h;

		mc_minmax(x + c, (size_t)(e - c), &l, &h);
		lo = l < lo ? l : lo;
		hi = h > hi ? h : hi;
	}
	mc_u8_qparams(lo, hi, sa, &za);
	return za;
}

/* out[n, O] = requant(u8(in[n, I]) W^T) + b on the int8 GEMM */
static void forward_int8(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *x, float *out)
{
	const struct qlinear_attrs *a = node->attrs;
	const struct mc_s8_weights *pk = mc_qop_packed(node);
	int O = a->out, I = (int)node->params[QP_WEIGHT]->shape[1], za;
	int64_t total = (int64_t)n * I;
	uint8_t *q = run->work;
	float sa;

	za = mc_qop_input_qparams(node, a->mode, x, total, &sa);
	if (!pk || za < 0 || !q) {
		/* A file with scales the kernels refuse: say so in the outputs. */
		for (int64_t i = 0; i < (int64_t)n * O; i++)
			out[i] = NAN;
		return;
	}
#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < total; c += MC_CHUNK) {
		int64_t e = c + MC_CHUNK < total ? c + MC_CHUNK : total;

		mc_quantize_u8(x + c, (size_t)(e - c), sa, za, q + c);
	}
	mc_gemm_u8s8(n, q, I, sa, za, pk, 0, out, O);
}

/* ------------------------------------------------ weight-only path */

/* The scale and zero point of block j of row o (zero point 0 when symmetric). */
static inline void block_of(const struct mc_node *node, int64_t o, int64_t j, int64_t per_row,
			    float *s, float *z)
{
	const struct mc_tensor *st = node->params[QP_SCALE];
	const struct qlinear_attrs *a = node->attrs;
	int64_t b = st->numel == 1 ? 0 : o * per_row + j;

	*s = ((const float *)st->data)[b];
	*z = a->scheme == 1 ? (float)((const int8_t *)node->params[QP_EXTRA]->data)[b] : 0.0f;
}

/* Row o of the weights, dequantized into dst[I]. */
static void dequant_row(const struct mc_node *node, int64_t o, float *dst)
{
	const struct qlinear_attrs *a = node->attrs;
	const struct mc_tensor *w = node->params[QP_WEIGHT];
	int64_t I = w->shape[1], g = node_spec(node).group, len, per_row;
	float s, z;

	len = g > 0 ? g : I;
	per_row = I / len;
	for (int64_t j = 0; j < per_row; j++) {
		block_of(node, o, j, per_row, &s, &z);
		if (a->bits == 8) {
			const int8_t *q = (const int8_t *)w->data + o * I + j * len;

			for (int64_t k = 0; k < len; k++)
				dst[j * len + k] = ((float)q[k] - z) * s;
		} else {
			const uint8_t *p = (const uint8_t *)w->data + (o * I + j * len) / 2;

			for (int64_t k = 0; k < len / 2; k++) {
				dst[j * len + 2 * k] = ((float)((p[k] & 15) - 8) - z) * s;
				dst[j * len + 2 * k + 1] = ((float)((p[k] >> 4) - 8) - z) * s;
			}
		}
	}
}

/*
 * sum_k x[k] (q[k] - z) over one block, in 16 lanes of a fixed order: lane l
 * sums elements l, l + 16, ... (products rounded, then added: no FMA), the
 * tail goes to t, then the lanes are added to t in order. The AVX2 kernels
 * compute exactly the same operations 8 lanes at a time.
 */
static float dot_s8_ref(const float *x, const int8_t *q, int64_t len, float z)
{
	float acc[16] = { 0 }, t = 0.0f;
	int64_t k = 0;

	for (; k + 16 <= len; k += 16)
		for (int l = 0; l < 16; l++) {
			float p = x[k + l] * ((float)q[k + l] - z);

			acc[l] += p;
		}
	for (; k < len; k++) {
		float p = x[k] * ((float)q[k] - z);

		t += p;
	}
	for (int l = 0; l < 16; l++)
		t += acc[l];
	return t;
}

/* The same over 4-bit values, p holding len / 2 bytes: x[2k] low, x[2k + 1] high nibble. */
static float dot_q4_ref(const float *x, const uint8_t *p, int64_t len, float z)
{
	float acc[16] = { 0 }, t = 0.0f;
	int64_t k = 0;

	for (; k + 16 <= len; k += 16)
		for (int l = 0; l < 16; l++) {
			uint8_t b = p[(k + l) / 2];
			float v = x[k + l] * ((float)((l % 2 ? b >> 4 : b & 15) - 8) - z);

			acc[l] += v;
		}
	for (; k < len; k++) {
		uint8_t b = p[k / 2];
		float v = x[k] * ((float)((k % 2 ? b >> 4 : b & 15) - 8) - z);

		t += v;
	}
	for (int l = 0; l < 16; l++)
		t += acc[l];
	return t;
}

#if defined(__x86_64__)
__attribute__((target("avx2"))) static float lanes_sum(__m256 a0, __m256 a1, float t)
{
	float acc[16];

	_mm256_storeu_ps(acc, a0);
	_mm256_storeu_ps(acc + 8, a1);
	for (int l = 0; l < 16; l++)
		t += acc[l];
	return t;
}

__attribute__((target("avx2"))) static float dot_s8_avx2(const float *x, const int8_t *q,
							  int64_t len, float z)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), vz = _mm256_set1_ps(z);
	float t = 0.0f;
	int64_t k = 0;

	for (; k + 16 <= len; k += 16) {
		__m128i b = _mm_loadu_si128((const __m128i *)(q + k));
		__m256 w0 = _mm256_sub_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)), vz);
		__m256 w1 = _mm256_sub_ps(
		    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(b, 8))), vz);

		a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(x + k), w0));
		a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(x + k + 8), w1));
	}
	for (; k < len; k++) {
		float p = x[k] * ((float)q[k] - z);

		t += p;
	}
	return lanes_sum(a0, a1, t);
}

__attribute__((target("avx2"))) static float dot_q4_avx2(const float *x, const uint8_t *p,
							  int64_t len, float z)
{
	__m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), vz = _mm256_set1_ps(z);
	__m128i m4 = _mm_set1_epi8(15);
	__m256i eight = _mm256_set1_epi32(8);
	float t = 0.0f;
	int64_t k = 0;

	for (; k + 16 <= len; k += 16) {
		__m128i b = _mm_loadl_epi64((const __m128i *)(p + k / 2));
		__m128i e = _mm_unpacklo_epi8(_mm_and_si128(b, m4),
					      _mm_and_si128(_mm_srli_epi16(b, 4), m4));
		__m256 w0 = _mm256_sub_ps(
		    _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(e), eight)), vz);
		__m256 w1 = _mm256_sub_ps(
		    _mm256_cvtepi32_ps(
			_mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_srli_si128(e, 8)), eight)),
		    vz);

		a0 = _mm256_add_ps(a0, _mm256_mul_ps(_mm256_loadu_ps(x + k), w0));
		a1 = _mm256_add_ps(a1, _mm256_mul_ps(_mm256_loadu_ps(x + k + 8), w1));
	}
	for (; k < len; k++) {
		uint8_t b = p[k / 2];
		float v = x[k] * ((float)((k % 2 ? b >> 4 : b & 15) - 8) - z);

		t += v;
	}
	return lanes_sum(a0, a1, t);
}
#endif

static float dot_s8(const float *x, const int8_t *q, int64_t len, float z)
{
#if defined(__x86_64__)
	if (mc_cpu_has(MC_CPU_AVX2))
		return dot_s8_avx2(x, q, len, z);
#endif
	return dot_s8_ref(x, q, len, z);
}

static float dot_q4(const float *x, const uint8_t *p, int64_t len, float z)
{
#if defined(__x86_64__)
	if (mc_cpu_has(MC_CPU_AVX2))
		return dot_q4_avx2(x, p, len, z);
#endif
	return dot_q4_ref(x, p, len, z);
}

#define GEMV_ROWS 4  /* batches up to this go through the direct kernel */
#define TILE_O 64    /* output rows dequantized at a time for the GEMM */

/* out[n, O] = in[n, I] deq(W)^T + b, weights converted in the kernel */
static void forward_weight_only(const struct mc_node *node, int n, const float *x, float *out)
{
	const struct qlinear_attrs *a = node->attrs;
	const struct mc_tensor *w = node->params[QP_WEIGHT];
	const float *bias = node->params[QP_BIAS]->data;
	int64_t O = a->out, I = w->shape[1], g = node_spec(node).group, len, per_row;
	int tiles = (int)((O + TILE_O - 1) / TILE_O);

	len = g > 0 ? g : I;
	per_row = I / len;
	if (n <= GEMV_ROWS) {
#pragma omp parallel for schedule(static) if (O * I >= 4 * MC_PAR_MIN)
		for (int64_t o = 0; o < O; o++) {
			for (int r = 0; r < n; r++) {
				const float *xr = x + (size_t)r * I;
				float y = 0.0f, s, z;

				for (int64_t j = 0; j < per_row; j++) {
					int64_t at = o * I + j * len;

					block_of(node, o, j, per_row, &s, &z);
					y += s * (a->bits == 8
						      ? dot_s8(xr + j * len,
							       (const int8_t *)w->data + at, len, z)
						      : dot_q4(xr + j * len,
							       (const uint8_t *)w->data + at / 2,
							       len, z));
				}
				out[(size_t)r * O + o] = y + bias[o];
			}
		}
		return;
	}
	/* Tiles are fixed by O, each written by one thread: results do not
	 * depend on the thread count (mc_sgemm runs serially when nested). */
#pragma omp parallel
	{
		float *buf = malloc((size_t)TILE_O * (size_t)I * sizeof(float));

#pragma omp for schedule(static)
		for (int t = 0; t < tiles; t++) {
			int64_t o0 = (int64_t)t * TILE_O, rows = O - o0 < TILE_O ? O - o0 : TILE_O;

			if (!buf) {
				for (int r = 0; r < n; r++)
					for (int64_t o = o0; o < o0 + rows; o++)
						out[(size_t)r * O + o] = NAN;
				continue;
			}
			for (int64_t o = 0; o < rows; o++)
				dequant_row(node, o0 + o, buf + o * I);
			mc_sgemm(0, 1, n, (int)rows, (int)I, 1.0f, x, (int)I, buf, (int)I, 0.0f,
				 out + o0, (int)O);
			for (int r = 0; r < n; r++)
				for (int64_t o = 0; o < rows; o++)
					out[(size_t)r * O + o0 + o] += bias[o0 + o];
		}
		free(buf);
	}
}

static void qlinear_forward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	const struct qlinear_attrs *a = node->attrs;

	if (a->mode == QMODE_WEIGHT_ONLY)
		forward_weight_only(node, n, in[0], out);
	else
		forward_int8(node, run, n, in[0], out);
}

/* din[n, I] = dout[n, O] deq(W): straight through; no parameter learns */
static void qlinear_backward(const struct mc_node *node, const struct mc_run *run, int n,
			     const float *const *in, const float *out, const float *dout,
			     float *const *din, float *const *grads)
{
	const struct mc_tensor *w = node->params[QP_WEIGHT];
	int64_t O = w->shape[0], I = w->shape[1];
	float *buf;

	if (!din[0])
		return;
	buf = malloc((size_t)TILE_O * (size_t)I * sizeof(float));
	if (!buf) {
		memset(din[0], 0, (size_t)n * (size_t)I * sizeof(float));
		return;
	}
	/* Tiles of W in order: each adds its share to din, a fixed sum order. */
	for (int64_t o0 = 0; o0 < O; o0 += TILE_O) {
		int64_t rows = O - o0 < TILE_O ? O - o0 : TILE_O;

		for (int64_t o = 0; o < rows; o++)
			dequant_row(node, o0 + o, buf + o * I);
		mc_sgemm(0, 0, n, (int)I, (int)rows, 1.0f, dout + o0, (int)O, buf, (int)I,
			 o0 ? 1.0f : 0.0f, din[0], (int)I);
	}
	free(buf);
}

static int64_t qlinear_flops(const struct mc_node *node)
{
	return 2 * node->params[QP_WEIGHT]->numel;
}

/* The u8 copy of the input (int8 modes). */
static size_t qlinear_workspace(const struct mc_node *node, int n)
{
	const struct qlinear_attrs *a = node->attrs;

	if (a->mode == QMODE_WEIGHT_ONLY)
		return 0;
	return (size_t)n * (size_t)node->params[QP_WEIGHT]->shape[1] + 64;
}

const struct mc_op mc_op_qlinear = {
    .name = "qlinear",
    .help = "quantized fully connected layer (int8 or 4-bit weights; docs/quantize.md)",
    .attr_size = sizeof(struct qlinear_attrs),
    .attrs = qlinear_attrs,
    .n_inputs = 1,
    .setup = qlinear_setup,
    .forward = qlinear_forward,
    .backward = qlinear_backward,
    .flops = qlinear_flops,
    .workspace = qlinear_workspace,
    .release = mc_qop_release,
};
