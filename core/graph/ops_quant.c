// SPDX-License-Identifier: MIT
/*
 * ops_quant.c - quantized inference: the weight quantizers (the fast one
 * beside its _ref ground truth), 4-bit packing, and the qlinear op.
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
 */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "graph/ops_int.h"

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

/* Scale and zero point of a block whose values lie in [lo, hi] (lo <= 0 <= hi). */
static void block_qparams(float lo, float hi, const struct mc_qspec *s, float *scale, int8_t *zp)
{
	float qmax = (float)((1 << (s->bits - 1)) - 1), qmin = -qmax - 1.0f, sc, z;

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
	qmax = (float)((1 << (s->bits - 1)) - 1);
	qmin = s->asym ? -qmax - 1.0f : -qmax;
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

static int have_avx2(void)
{
#if defined(__x86_64__)
	static int v = -1;

	if (v < 0)
		v = __builtin_cpu_supports("avx2") ? 1 : 0;
	return v;
#else
	return 0;
#endif
}

static void range_fast(const float *x, int64_t n, float *lo, float *hi, int *bad)
{
#if defined(__x86_64__)
	if (have_avx2()) {
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
	if (have_avx2()) {
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
	qmax = (float)((1 << (s->bits - 1)) - 1);
	qmin = s->asym ? -qmax - 1.0f : -qmax;
	if (!per_row) {
		/* One block: the tensor's range first, over rows in parallel. */
#pragma omp parallel for schedule(static) reduction(min : tlo) reduction(max : thi) \
	reduction(| : bad) if (rows * cols >= MC_PAR_MIN)
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
#pragma omp parallel for schedule(static) reduction(| : bad) if (rows * cols >= MC_PAR_MIN)
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

/* ---------------------------------------------------------------- qlinear */

enum { QMODE_WEIGHT_ONLY, QMODE_DYNAMIC, QMODE_STATIC };
enum { QGRAN_TENSOR, QGRAN_CHANNEL, QGRAN_GROUP };
enum { QP_WEIGHT, QP_SCALE, QP_BIAS, QP_EXTRA };

struct qlinear_attrs {
	int out;
	int bits;
	int mode;
	int scheme; /* 0: symmetric, 1: asymmetric */
	int granularity;
	int group_size;
};

static const char *const qmodes[] = { "weight-only", "dynamic", "static", NULL };
static const char *const qschemes[] = { "symmetric", "asymmetric", NULL };
static const char *const qgrans[] = { "per-tensor", "per-channel", "per-group", NULL };

static const struct mc_param_def qlinear_attrs[] = {
    MC_PARAM_INT(struct qlinear_attrs, out, NULL, 1, INT_MAX, "output features"),
    MC_PARAM_INT(struct qlinear_attrs, bits, "8", 1, 32, "weight bits: 8 or 4"),
    MC_PARAM_ENUM(struct qlinear_attrs, mode, "dynamic", qmodes,
		  "activations: f32 (weight-only), u8 from each batch's range, or u8 calibrated"),
    MC_PARAM_ENUM(struct qlinear_attrs, scheme, "symmetric", qschemes, "weight zero points"),
    MC_PARAM_ENUM(struct qlinear_attrs, granularity, "per-channel", qgrans,
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

static int qlinear_setup(struct mc_node *node, const int *in_ndim,
			 const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	const struct qlinear_attrs *a = node->attrs;
	int64_t in = in_shape[0][0], ws[2], ss[2], bs[1] = { a->out }, two = 2;
	int s_ndim = 1, r = 0, integer = a->mode != QMODE_WEIGHT_ONLY;
	char buf[256], name[512];
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
				  qmodes[a->mode],
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
	snprintf(name, sizeof(name), "%s.weight", node->name);
	node->params[QP_WEIGHT] = mc_tensor_new(name, a->bits == 8 ? MC_S8 : MC_Q4, 2, ws, err);
	node->n_params = 1;
	if (!node->params[QP_WEIGHT])
		return err ? err->code : MC_ENOMEM;
	r = mc_node_new_param(node, QP_SCALE, "weight_scale", s_ndim, ss, err);
	if (!r)
		r = mc_node_new_param(node, QP_BIAS, "bias", 1, bs, err);
	if (!r && a->scheme == 1) {
		snprintf(name, sizeof(name), "%s.weight_zero_point", node->name);
		node->params[QP_EXTRA] = mc_tensor_new(name, MC_S8, s_ndim, ss, err);
		if (!node->params[QP_EXTRA])
			return err ? err->code : MC_ENOMEM;
		node->n_params = 4;
	} else if (!r && a->mode == QMODE_STATIC) {
		r = mc_node_new_param(node, QP_EXTRA, "input_qparams", 1, &two, err);
		if (!r)
			((float *)node->params[QP_EXTRA]->data)[0] = 1.0f;
	}
	if (r)
		return r;
	/* Scales of 1 until filled: a fresh node computes zeros, never NaN. */
	for (int64_t i = 0; i < node->params[QP_SCALE]->numel; i++)
		((float *)node->params[QP_SCALE]->data)[i] = 1.0f;
	node->n_buffers = node->n_params;
	node->out_ndim = 1;
	node->out_shape[0] = a->out;
	return 0;
}

/* ------------------------------------------------ int8 path: packed weights */

struct qcache {
	const struct mc_node *owner;
	const void *w, *s, *b; /* the data it was packed from */
	struct mc_s8_weights *pk;
	struct qcache *next;
};

/*
 * Packed weights live in one list keyed by the node that owns them, never in
 * the node itself: a duplicated model shares no pointer with its original,
 * and freeing a node (qlinear_release) drops its entry, so a node address
 * reused later cannot meet a stale packing.
 */
static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct qcache *caches;

static void qlinear_release(struct mc_node *node)
{
	struct qcache **pp = &caches;

	pthread_mutex_lock(&cache_lock);
	while (*pp) {
		struct qcache *c = *pp;

		if (c->owner == node) {
			*pp = c->next;
			mc_s8_free(c->pk);
			free(c);
		} else {
			pp = &c->next;
		}
	}
	pthread_mutex_unlock(&cache_lock);
}

/*
 * The node's weights packed for mc_gemm_u8s8, made once under a lock (two
 * executors may run one model). NULL when the file's scales are not finite
 * and positive (mc_s8_pack refuses them) or out of memory.
 */
static const struct mc_s8_weights *packed(const struct mc_node *node)
{
	const struct mc_tensor *w = node->params[QP_WEIGHT], *s = node->params[QP_SCALE];
	const struct mc_tensor *b = node->params[QP_BIAS];
	int O = (int)w->shape[0], I = (int)(w->numel / w->shape[0]);
	struct mc_s8_weights *pk = NULL;
	struct qcache *c;
	float *sw = NULL;

	pthread_mutex_lock(&cache_lock);
	for (c = caches; c; c = c->next)
		if (c->owner == node && c->w == w->data && c->s == s->data && c->b == b->data)
			goto out;
	c = calloc(1, sizeof(*c));
	sw = malloc((size_t)O * sizeof(float));
	if (!c || !sw) {
		free(c);
		c = NULL;
		goto out;
	}
	for (int o = 0; o < O; o++)
		sw[o] = ((const float *)s->data)[s->numel == 1 ? 0 : o];
	c->owner = node;
	c->w = w->data;
	c->s = s->data;
	c->b = b->data;
	c->pk = mc_s8_pack(w->data, O, I, I, sw, b->data, NULL);
	c->next = caches;
	caches = c;
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
static int input_qparams(const struct mc_node *node, int mode, const float *x, int64_t total,
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
	const struct mc_s8_weights *pk = packed(node);
	int O = a->out, I = (int)node->params[QP_WEIGHT]->shape[1], za;
	int64_t total = (int64_t)n * I;
	uint8_t *q = run->work;
	float sa;

	za = input_qparams(node, a->mode, x, total, &sa);
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
	if (have_avx2())
		return dot_s8_avx2(x, q, len, z);
#endif
	return dot_s8_ref(x, q, len, z);
}

static float dot_q4(const float *x, const uint8_t *p, int64_t len, float z)
{
#if defined(__x86_64__)
	if (have_avx2())
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
    .release = qlinear_release,
};

/* ---------------------------------------------------------------- qconv2d */

/*
 * qconv2d is a conv2d (groups 1) whose weight is int8 and whose input is
 * quantized to u8 (dynamic: the batch's range; static: the calibrated one):
 *
 *	param 0  NAME.weight         I8 [out, C, k, k], symmetric
 *	param 1  NAME.weight_scale   F32 [1] per tensor or [out] per channel
 *	param 2  NAME.bias           F32 [out]
 *	param 3  NAME.input_qparams  F32 [2]: input scale, zero point (static only)
 *
 * The input is quantized once, then a chunk of samples is laid out as the u8
 * matrix colT[m*P, C*k*k] (row p: the window of output position p; padding
 * holds the zero point, which stands for 0.0) and multiplied on the int8 GEMM
 * with the packed weights: y[m*P, out], requantized per channel with the
 * bias added, then transposed into [out, OH, OW] per sample. Every output is
 * one exact s32 sum: the same for any thread count.
 */
struct qconv_attrs {
	int out, kernel, stride, padding;
	int mode;
	int granularity;
	int relu;
	int in_h, in_w; /* set by setup from the input shape; not attributes */
};

static const struct mc_param_def qconv_attrs[] = {
    MC_PARAM_INT(struct qconv_attrs, out, NULL, 1, 1 << 20, "output channels"),
    MC_PARAM_INT(struct qconv_attrs, kernel, "3", 1, 1024, "kernel height and width"),
    MC_PARAM_INT(struct qconv_attrs, stride, "1", 1, 1024, "step between windows"),
    MC_PARAM_INT(struct qconv_attrs, padding, "0", 0, 1024, "zeros added on each side"),
    MC_PARAM_ENUM(struct qconv_attrs, mode, "dynamic", qmodes,
		  "activations: u8 from each batch's range (dynamic) or calibrated (static)"),
    MC_PARAM_ENUM(struct qconv_attrs, granularity, "per-channel", qgrans,
		  "what one weight scale covers: per-tensor or per-channel"),
    MC_PARAM_BOOL(struct qconv_attrs, relu, "false",
		  "max(y, 0) applied in the requantization: a fused conv2d + relu"),
    MC_PARAM_END,
};

struct qgeo {
	int C, H, W, O, OH, OW, k, s, p, K;
	int64_t P; /* OH * OW */
};

static void qconv_geo(const struct mc_node *node, struct qgeo *q)
{
	const struct qconv_attrs *a = node->attrs;
	const struct mc_tensor *w = node->params[QP_WEIGHT];

	q->O = (int)w->shape[0];
	q->C = (int)w->shape[1];
	q->k = a->kernel;
	q->s = a->stride;
	q->p = a->padding;
	q->K = q->C * q->k * q->k;
	q->OH = (int)node->out_shape[1];
	q->OW = (int)node->out_shape[2];
	q->P = (int64_t)q->OH * q->OW;
	q->H = a->in_h;
	q->W = a->in_w;
}

static int qconv_setup(struct mc_node *node, const int *in_ndim,
		       const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	struct qconv_attrs *a = node->attrs;
	int64_t C, H, W, OH, OW, ws[4], ss[1], bs[1] = { a->out }, two = 2;
	size_t kn, wn, cols;
	char buf[256], name[512];
	int r;

	if (in_ndim[0] != 3)
		return mc_err_set(err, MC_EINVAL,
				  "qconv2d needs per-sample [channels, height, width], got %s; "
				  "give the model input such a shape (e.g. [1, 28, 28])",
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	C = in_shape[0][0];
	H = in_shape[0][1];
	W = in_shape[0][2];
	if (a->mode == QMODE_WEIGHT_ONLY || a->granularity == QGRAN_GROUP)
		return mc_err_set(err, MC_EINVAL,
				  "qconv2d runs on the int8 GEMM, which takes u8 inputs and "
				  "weights scaled per tensor or per channel; use mode dynamic or "
				  "static and granularity per-tensor or per-channel");
	if (H + 2 * (int64_t)a->padding < a->kernel || W + 2 * (int64_t)a->padding < a->kernel)
		return mc_err_set(err, MC_EINVAL,
				  "qconv2d: kernel %d is larger than the padded input %lldx%lld; "
				  "use a smaller kernel or more padding",
				  a->kernel, (long long)(H + 2 * a->padding),
				  (long long)(W + 2 * a->padding));
	if (a->padding >= a->kernel)
		return mc_err_set(err, MC_EINVAL,
				  "qconv2d: padding %d leaves windows of zeros only; use padding "
				  "below the kernel %d",
				  a->padding, a->kernel);
	OH = (H + 2 * (int64_t)a->padding - a->kernel) / a->stride + 1;
	OW = (W + 2 * (int64_t)a->padding - a->kernel) / a->stride + 1;
	if (C < 1 || mc_mul_overflow((size_t)C, (size_t)a->kernel * a->kernel, &kn) ||
	    kn > 65536 || mc_mul_overflow(kn, (size_t)a->out, &wn) || wn > INT32_MAX ||
	    mc_mul_overflow((size_t)OH, (size_t)OW, &cols) || cols > INT_MAX / 4096 ||
	    H > INT_MAX || W > INT_MAX)
		return mc_err_set(err, MC_EINVAL,
				  "qconv2d of %lld channels to %d with kernel %d is too large; "
				  "the int8 kernels take at most 65536 inputs a window and 2^31 "
				  "weights",
				  (long long)C, a->out, a->kernel);
	ws[0] = a->out;
	ws[1] = C;
	ws[2] = a->kernel;
	ws[3] = a->kernel;
	ss[0] = a->granularity == QGRAN_TENSOR ? 1 : a->out;
	snprintf(name, sizeof(name), "%s.weight", node->name);
	node->params[QP_WEIGHT] = mc_tensor_new(name, MC_S8, 4, ws, err);
	node->n_params = 1;
	if (!node->params[QP_WEIGHT])
		return err ? err->code : MC_ENOMEM;
	r = mc_node_new_param(node, QP_SCALE, "weight_scale", 1, ss, err);
	if (!r)
		r = mc_node_new_param(node, QP_BIAS, "bias", 1, bs, err);
	if (!r && a->mode == QMODE_STATIC) {
		r = mc_node_new_param(node, QP_EXTRA, "input_qparams", 1, &two, err);
		if (!r)
			((float *)node->params[QP_EXTRA]->data)[0] = 1.0f;
	}
	if (r)
		return r;
	for (int64_t i = 0; i < node->params[QP_SCALE]->numel; i++)
		((float *)node->params[QP_SCALE]->data)[i] = 1.0f;
	node->n_buffers = node->n_params;
	a->in_h = (int)H;
	a->in_w = (int)W;
	node->out_ndim = 3;
	node->out_shape[0] = a->out;
	node->out_shape[1] = OH;
	node->out_shape[2] = OW;
	return 0;
}

/* colT[P, K] from one u8 sample x[C, H, W]; taps outside the image hold pad. */
MC_DEFINE_IM2COL_T(im2col_t_u8, uint8_t)

static void im2col_u8(const struct qgeo *q, const uint8_t *x, uint8_t pad, uint8_t *ct)
{
	im2col_t_u8(q->C, q->H, q->W, q->OH, q->OW, q->k, q->s, q->p, x, pad, ct);
}

#define QCONV_CHUNK_BYTES (1 << 20) /* u8 input, colT and y of one chunk of samples */
#define QCONV_SLOTS 16		    /* at most this many threads, each with a slot */

/* Samples per chunk: a function of the geometry and n alone. */
static int qconv_chunk(const struct qgeo *q, int n)
{
	size_t per = (size_t)q->C * q->H * q->W +
		     (size_t)q->P * ((size_t)q->K + (size_t)q->O * sizeof(float));
	size_t m = QCONV_CHUNK_BYTES / (per ? per : 1);

	if (m < 1)
		m = 1;
	return m < (size_t)n ? (int)m : n;
}

static size_t align64(size_t v)
{
	return (v + 63) & ~(size_t)63;
}

/* Bytes of one slot: the u8 input, colT and y of a chunk of m samples; SIZE_MAX on overflow. */
static size_t qconv_slot_bytes(const struct qgeo *q, int m)
{
	size_t xq, ct, y, total;

	if (mc_mul_overflow((size_t)m, (size_t)q->C * q->H * q->W, &xq) ||
	    mc_mul_overflow((size_t)m * (size_t)q->P, (size_t)q->K, &ct) ||
	    mc_mul_overflow((size_t)m * (size_t)q->P, (size_t)q->O * sizeof(float), &y) ||
	    __builtin_add_overflow(align64(xq), align64(ct), &total) ||
	    __builtin_add_overflow(total, align64(y), &total))
		return SIZE_MAX;
	return total;
}

static int qconv_slots(const struct qgeo *q, int n)
{
	int chunks = (n + qconv_chunk(q, n) - 1) / qconv_chunk(q, n);

	return chunks < QCONV_SLOTS ? chunks : QCONV_SLOTS;
}

static size_t qconv_workspace(const struct mc_node *node, int n)
{
	struct qgeo q;
	size_t slot, total;

	qconv_geo(node, &q);
	if (n < 1)
		n = 1;
	slot = qconv_slot_bytes(&q, qconv_chunk(&q, n));
	if (slot == SIZE_MAX || mc_mul_overflow(slot, (size_t)qconv_slots(&q, n), &total))
		return SIZE_MAX;
	return total;
}

/* t[O, P] (row stride ldt) = y[P, O]^T, scalar */
static void transpose_ref(const float *y, int64_t P, int O, float *t, int64_t ldt)
{
	for (int64_t p0 = 0; p0 < P; p0 += 16) {
		int64_t pn = P - p0 < 16 ? P - p0 : 16;

		for (int o = 0; o < O; o++)
			for (int64_t p = 0; p < pn; p++)
				t[(size_t)o * ldt + p0 + p] = y[(size_t)(p0 + p) * O + o];
	}
}

#if defined(__x86_64__)
/* The same with 8x8 blocks in registers; the edges go through transpose_ref. */
__attribute__((target("avx2"))) static void transpose_avx2(const float *y, int64_t P, int O,
							    float *t, int64_t ldt)
{
	int64_t P8 = P & ~(int64_t)7;
	int O8 = O & ~7;

	for (int64_t p = 0; p < P8; p += 8)
		for (int o = 0; o < O8; o += 8) {
			const float *src = y + (size_t)p * O + o;
			__m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + O);
			__m256 r2 = _mm256_loadu_ps(src + 2 * O), r3 = _mm256_loadu_ps(src + 3 * O);
			__m256 r4 = _mm256_loadu_ps(src + 4 * O), r5 = _mm256_loadu_ps(src + 5 * O);
			__m256 r6 = _mm256_loadu_ps(src + 6 * O), r7 = _mm256_loadu_ps(src + 7 * O);
			__m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
			__m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
			__m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
			__m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
			__m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
			__m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
			__m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
			__m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
			float *dst = t + (size_t)o * ldt + p;

			_mm256_storeu_ps(dst, _mm256_permute2f128_ps(u0, u4, 0x20));
			_mm256_storeu_ps(dst + ldt, _mm256_permute2f128_ps(u1, u5, 0x20));
			_mm256_storeu_ps(dst + 2 * ldt, _mm256_permute2f128_ps(u2, u6, 0x20));
			_mm256_storeu_ps(dst + 3 * ldt, _mm256_permute2f128_ps(u3, u7, 0x20));
			_mm256_storeu_ps(dst + 4 * ldt, _mm256_permute2f128_ps(u0, u4, 0x31));
			_mm256_storeu_ps(dst + 5 * ldt, _mm256_permute2f128_ps(u1, u5, 0x31));
			_mm256_storeu_ps(dst + 6 * ldt, _mm256_permute2f128_ps(u2, u6, 0x31));
			_mm256_storeu_ps(dst + 7 * ldt, _mm256_permute2f128_ps(u3, u7, 0x31));
		}
	if (O8 < O)
		for (int64_t p = 0; p < P8; p++)
			for (int o = O8; o < O; o++)
				t[(size_t)o * ldt + p] = y[(size_t)p * O + o];
	if (P8 < P)
		transpose_ref(y + (size_t)P8 * O, P - P8, O, t + P8, ldt);
}
#endif

static void transpose_out(const float *y, int64_t P, int O, float *t)
{
#if defined(__x86_64__)
	if (have_avx2()) {
		transpose_avx2(y, P, O, t, P);
		return;
	}
#endif
	transpose_ref(y, P, O, t, P);
}

/*
 * Samples s0 .. s0 + mm - 1 through one slot: quantize, im2col, the int8
 * GEMM, and the transpose into [O, P] per sample.
 */
static void qconv_chunk_run(const struct qgeo *q, const struct mc_s8_weights *pk, unsigned flags,
			    float sa, int za, const float *x, int mm, uint8_t *slot, int m, float *out)
{
	size_t xs = (size_t)q->C * q->H * q->W;
	uint8_t *xq = slot, *ct = xq + align64((size_t)m * xs);
	float *y = (float *)(ct + align64((size_t)m * (size_t)q->P * q->K));
	int64_t rows = (int64_t)mm * q->P;

	mc_quantize_u8(x, (size_t)mm * xs, sa, za, xq);
	for (int i = 0; i < mm; i++)
		im2col_u8(q, xq + (size_t)i * xs, (uint8_t)za, ct + (size_t)i * q->P * q->K);
	mc_gemm_u8s8((int)rows, ct, q->K, sa, za, pk, flags, y, q->O);
	for (int i = 0; i < mm; i++)
		transpose_out(y + (size_t)i * q->P * q->O, q->P, q->O,
			      out + (size_t)i * q->O * q->P);
}

/*
 * out[n, O, OH, OW] = requant(u8(in) * W) + b on the int8 GEMM. Chunks of
 * samples are spread over threads, each with a slot of the workspace (the
 * GEMM inside runs on that thread); a single chunk runs on the calling
 * thread with the GEMM split over the team. Every output is an exact s32
 * sum requantized alone: the bits do not depend on the thread count.
 */
static void qconv_forward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, float *out)
{
	const struct qconv_attrs *a = node->attrs;
	const struct mc_s8_weights *pk = packed(node);
	const float *x = in[0];
	struct qgeo q;
	size_t xs, ys, slot;
	int64_t total;
	float sa;
	int za, m, chunks, nt;
	unsigned flags = a->relu ? MC_S8_RELU : 0;

	if (n < 1)
		return;
	qconv_geo(node, &q);
	xs = (size_t)q.C * q.H * q.W;
	ys = (size_t)q.O * q.P;
	total = (int64_t)n * (int64_t)xs;
	m = qconv_chunk(&q, n);
	chunks = (n + m - 1) / m;
	slot = qconv_slot_bytes(&q, m);
	za = input_qparams(node, a->mode, x, total, &sa);
	if (!pk || za < 0 || !run->work) {
		/* A file with scales the kernels refuse: say so in the outputs. */
		for (int64_t i = 0; i < (int64_t)n * (int64_t)ys; i++)
			out[i] = NAN;
		return;
	}
	nt = omp_in_parallel() ? 1 : omp_get_max_threads();
	if (nt > qconv_slots(&q, n))
		nt = qconv_slots(&q, n);
	if (nt <= 1) {
		for (int c = 0; c < chunks; c++) {
			int s0 = c * m, mm = n - s0 < m ? n - s0 : m;

			qconv_chunk_run(&q, pk, flags, sa, za, x + (size_t)s0 * xs, mm, run->work, m,
					out + (size_t)s0 * ys);
		}
		return;
	}
#pragma omp parallel num_threads(nt)
	{
		uint8_t *mine = (uint8_t *)run->work + (size_t)omp_get_thread_num() * slot;

#pragma omp for schedule(static)
		for (int c = 0; c < chunks; c++) {
			int s0 = c * m, mm = n - s0 < m ? n - s0 : m;

			qconv_chunk_run(&q, pk, flags, sa, za, x + (size_t)s0 * xs, mm, mine, m,
					out + (size_t)s0 * ys);
		}
	}
}

/* dx[C, H, W] of one sample = the sum of dcol[K, P] over the windows reading each pixel. */
static void qcol2im(const struct qgeo *q, const float *dcol, float *dx)
{
	memset(dx, 0, (size_t)q->C * q->H * q->W * sizeof(float));
	for (int c = 0; c < q->C; c++)
		for (int ki = 0; ki < q->k; ki++)
			for (int kj = 0; kj < q->k; kj++) {
				const float *src = dcol + (((int64_t)c * q->k + ki) * q->k + kj) * q->P;

				for (int oh = 0; oh < q->OH; oh++) {
					int h = oh * q->s - q->p + ki;

					if (h < 0 || h >= q->H)
						continue;
					for (int ow = 0; ow < q->OW; ow++) {
						int w = ow * q->s - q->p + kj;

						if (w >= 0 && w < q->W)
							dx[((size_t)c * q->H + h) * q->W + w] +=
							    src[(size_t)oh * q->OW + ow];
					}
				}
			}
}

/*
 * din = the transposed convolution of dout with deq(W): straight through;
 * nothing learns. With relu, dout is first zeroed where out <= 0.
 */
static void qconv_backward(const struct mc_node *node, const struct mc_run *run, int n,
			   const float *const *in, const float *out, const float *dout,
			   float *const *din, float *const *grads)
{
	const struct qconv_attrs *a = node->attrs;
	const struct mc_tensor *w = node->params[QP_WEIGHT], *st = node->params[QP_SCALE];
	struct qgeo q;
	float *wd, *dcol, *dm = NULL;
	size_t xs, ys;

	if (!din[0])
		return;
	qconv_geo(node, &q);
	xs = (size_t)q.C * q.H * q.W;
	ys = (size_t)q.O * (size_t)q.P;
	wd = malloc((size_t)q.O * (size_t)q.K * sizeof(float));
	dcol = malloc((size_t)q.K * (size_t)q.P * sizeof(float));
	if (a->relu)
		dm = malloc(ys * sizeof(float));
	if (!wd || !dcol || (a->relu && !dm)) {
		memset(din[0], 0, (size_t)n * xs * sizeof(float));
		goto out;
	}
	for (int o = 0; o < q.O; o++)
		for (int kk = 0; kk < q.K; kk++)
			wd[(size_t)o * q.K + kk] =
			    (float)((const int8_t *)w->data)[(size_t)o * q.K + kk] *
			    ((const float *)st->data)[st->numel == 1 ? 0 : o];
	for (int s = 0; s < n; s++) {
		const float *d = dout + (size_t)s * ys;

		if (dm) {
			for (size_t i = 0; i < ys; i++)
				dm[i] = out[(size_t)s * ys + i] > 0.0f ? d[i] : 0.0f;
			d = dm;
		}
		mc_sgemm(1, 0, q.K, (int)q.P, q.O, 1.0f, wd, q.K, d, (int)q.P, 0.0f, dcol,
			 (int)q.P);
		qcol2im(&q, dcol, din[0] + (size_t)s * xs);
	}
out:
	free(wd);
	free(dcol);
	free(dm);
}

static int64_t qconv_flops(const struct mc_node *node)
{
	return 2 * node->params[QP_WEIGHT]->numel * node->out_shape[1] * node->out_shape[2];
}

const struct mc_op mc_op_qconv2d = {
    .name = "qconv2d",
    .help = "quantized 2-D convolution: int8 weights, u8 inputs, int8 GEMM (docs/quantize.md)",
    .attr_size = sizeof(struct qconv_attrs),
    .attrs = qconv_attrs,
    .n_inputs = 1,
    .setup = qconv_setup,
    .forward = qconv_forward,
    .backward = qconv_backward,
    .flops = qconv_flops,
    .workspace = qconv_workspace,
    .release = qlinear_release,
};

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
