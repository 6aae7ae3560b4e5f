/* SPDX-License-Identifier: MIT */
/*
 * ops_dense.c - the dense ops: flatten, relu and linear, each with its
 * shape rule, initialisation, forward and backward side by side, and FLOP
 * count.
 *
 * Kernels see a batch of n samples, row-major, per-sample shapes in the
 * trailing comments. Backward passes split work over output elements (or
 * call mc_sgemm, which does), so gradients are bit-identical for any thread
 * count.
 */
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "graph/ops_int.h"
#include "kernels/cpu.h"
#include "kernels/gemm.h"

/* ---------------------------------------------------------------- flatten */

static int flatten_setup(struct mc_node *node, const int *in_ndim,
			 const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	int64_t n = 1;

	for (int i = 0; i < in_ndim[0]; i++)
		n *= in_shape[0][i]; /* the model checked the product */
	node->out_ndim = 1;
	node->out_shape[0] = n;
	return 0;
}

/* out[n, numel] = in[n, numel] */
static void flatten_forward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	mc_par_copy(out, in[0], (int64_t)n * node->out_numel);
}

static void flatten_backward(const struct mc_node *node, const struct mc_run *run, int n,
			     const float *const *in, const float *out, const float *dout,
			     float *const *din, float *const *grads)
{
	if (din[0])
		mc_par_copy(din[0], dout, (int64_t)n * node->out_numel);
}

const struct mc_op mc_op_flatten = {
    .name = "flatten",
    .help = "reshapes each sample to one dimension",
    .attr_size = 0,
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = flatten_setup,
    .forward = flatten_forward,
    .backward = flatten_backward,
    .flops = mc_zero_flops,
};

/* ---------------------------------------------------------------- relu */

/* out[n, d] = max(in, 0) */
static void relu_forward(const struct mc_node *node, const struct mc_run *run, int n,
			 const float *const *in, float *out)
{
	const float *x = in[0];
	int64_t total = (int64_t)n * node->out_numel;

#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < total; c += MC_CHUNK) {
		int64_t i = c, end = c + MC_CHUNK < total ? c + MC_CHUNK : total;
#ifdef __SSE2__
		/* A select, exact: the same values as the scalar loop (NaN -> 0). */
		for (; i + 4 <= end; i += 4) {
			__m128 v = _mm_loadu_ps(x + i);

			_mm_storeu_ps(out + i, _mm_and_ps(_mm_cmpgt_ps(v, _mm_setzero_ps()), v));
		}
#endif
		for (; i < end; i++)
			out[i] = x[i] > 0.0f ? x[i] : 0.0f;
	}
}

/* din[n, d] = dout where out > 0 */
static void relu_backward(const struct mc_node *node, const struct mc_run *run, int n,
			  const float *const *in, const float *out, const float *dout,
			  float *const *din, float *const *grads)
{
	float *dx = din[0];
	int64_t total = (int64_t)n * node->out_numel;

	if (!dx)
		return;
#pragma omp parallel for schedule(static) if (total >= MC_PAR_MIN)
	for (int64_t c = 0; c < total; c += MC_CHUNK) {
		int64_t i = c, end = c + MC_CHUNK < total ? c + MC_CHUNK : total;
#ifdef __SSE2__
		for (; i + 4 <= end; i += 4) {
			__m128 on = _mm_cmpgt_ps(_mm_loadu_ps(out + i), _mm_setzero_ps());

			_mm_storeu_ps(dx + i, _mm_and_ps(on, _mm_loadu_ps(dout + i)));
		}
#endif
		for (; i < end; i++)
			dx[i] = out[i] > 0.0f ? dout[i] : 0.0f;
	}
}

const struct mc_op mc_op_relu = {
    .name = "relu",
    .help = "max(x, 0), elementwise",
    .attr_size = 0,
    .attrs = mc_no_attrs,
    .n_inputs = 1,
    .setup = mc_same_shape_setup,
    .forward = relu_forward,
    .backward = relu_backward,
    .flops = mc_zero_flops,
};

/* ---------------------------------------------------------------- linear */

struct linear_attrs {
	int out;
	int bias;
};

static const struct mc_param_def linear_attrs[] = {
    MC_PARAM_INT(struct linear_attrs, out, NULL, 1, INT_MAX, "output features"),
    { .name = "bias", .type = MC_PARAM_TBOOL, .elem = MC_PARAM_TBOOL,
      .offset = offsetof(struct linear_attrs, bias), .def = "true", .min = 0, .max = 1,
      .help = "add a learned bias (false: the layer is x W^T alone)", .flags = MC_PARAM_FOMIT },
    MC_PARAM_END,
};

static int linear_setup(struct mc_node *node, const int *in_ndim,
			const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	const struct linear_attrs *a = node->attrs;
	int64_t in = in_shape[0][0], wshape[2], bshape[1];
	char buf[256];
	size_t wn;
	int r;

	if (in_ndim[0] != 1)
		return mc_err_set(err, MC_EINVAL,
				  "linear needs one value per feature, got input shape %s; "
				  "put a flatten before it",
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	if (in < 1 || in > INT_MAX || mc_mul_overflow((size_t)in, (size_t)a->out, &wn) ||
	    wn > (size_t)INT64_MAX / sizeof(float))
		return mc_err_set(err, MC_EINVAL,
				  "linear of %lld inputs and %d outputs is too large; use fewer",
				  (long long)in, a->out);
	wshape[0] = a->out;
	wshape[1] = in;
	bshape[0] = a->out;
	r = mc_node_new_param(node, 0, "weight", 2, wshape, err);
	if (!r && a->bias)
		r = mc_node_new_param(node, 1, "bias", 1, bshape, err);
	if (r)
		return r;
	node->out_ndim = 1;
	node->out_shape[0] = a->out;
	return 0;
}

void mc_fan_in_init(struct mc_node *node, uint64_t seed, uint64_t stream)
{
	const struct mc_tensor *w = node->params[0];
	float bound = (float)(1.0 / sqrt((double)(w->numel / w->shape[0])));

	mc_fill_uniform(node->params[0], seed, stream + 0, -bound, bound);
	if (node->n_params > 1)
		mc_fill_uniform(node->params[1], seed, stream + 1, -bound, bound);
}

/* ------------------------------------------------ linear: sparse inference */

/*
 * At inference (run->training == 0) a linear layer whose weight is at least
 * SPARSE_MIN zeros runs on a CSR copy of its weight instead of the dense
 * GEMM (docs/prune.md, "Speed of unstructured sparsity"). MCOMP_SPARSE
 * chooses: "0" never, "1" always (any sparsity, batch and CPU), unset or
 * "auto" the rule above for batches of SPARSE_MIN_BATCH or more, with the
 * AVX-512 kernel only; a cheap sample of the weight rules out layers far
 * from the threshold before the exact count.
 *
 * Either copy of the weight, the CSR one or the dense one packed for the
 * GEMM (so that a batch packs only its input), is built on first use and
 * kept as the node's cache (like qlinear's packed weights), dropped by
 * linear_release when the node is freed or its parameters change, and so
 * is the verdict (sparse or dense) for the weight. Weights are written in
 * place by training and by passes, so every forward checks a hash of the
 * whole weight (one read, memory-bound, far cheaper than the product at
 * any batch above a few samples) against the one the copies and the
 * verdict were made from, and makes them anew on a mismatch. On the dense
 * path the threads of the GEMM compute that hash between their tiles, with
 * the cached packing (the hash no parallel region of its own, its reads
 * overlapping the arithmetic); when it then differs, the product is
 * thrown away and made again from the weight as it is now. After a hash
 * that changed, forwards hash first and compute once, until one finds the
 * weight as it was (weights rewritten before every forward, in a loop of
 * training steps and evaluations, are not computed twice).
 */
#define SPARSE_MIN 0.85  /* measured: bench/bench_sparse.c */
#define SPARSE_MIN_BATCH 16 /* below it the dense GEMV wins (bench_sparse) */
#define SPARSE_SAMPLE	     4096 /* weights looked at before the full count */
#define DENSE_PACK_MIN_BATCH 4 /* from 4 rows on mc_sgemm packs B (below: its GEMV path) */
#define HASH_BLOCK	     4096 /* words (16 KB) a unit of the hash, an item of the GEMM's side work */

struct csr_cache {
	const void *w;	 /* the data all below was made from */
	uint64_t sum;	 /* and that data's hash */
	int mode;	 /* sparse_mode() the verdict is for; VERDICT_NONE: none yet */
	int sparse;	 /* the verdict: 1 the CSR below, 0 the dense GEMM */
	int missed;	 /* the last hash differed from the one before: hash first, then compute */
	int32_t *indptr; /* [O + 1] */
	int32_t *indices; /* [nnz] */
	float *values;   /* [nnz] */
	/* The dense weight packed for the GEMM's kernel pk_kernel (see dense_packed). */
	const char *pk_kernel;
	float *packed;
};

#define VERDICT_NONE (-2)

static pthread_mutex_t csr_lock = PTHREAD_MUTEX_INITIALIZER;

static void csr_clear(struct csr_cache *c)
{
	free(c->indptr);
	free(c->indices);
	free(c->values);
	c->indptr = c->indices = NULL;
	c->values = NULL;
}

static void linear_release(struct mc_node *node)
{
	pthread_mutex_lock(&csr_lock);
	if (node->cache) {
		csr_clear(node->cache);
		free(((struct csr_cache *)node->cache)->packed);
	}
	free(node->cache);
	node->cache = NULL;
	pthread_mutex_unlock(&csr_lock);
}

static int have_avx512(void)
{
#if defined(__x86_64__)
	return mc_cpu_has(MC_CPU_AVX512F) && mc_cpu_has(MC_CPU_AVX512VL);
#else
	return 0;
#endif
}

/* -1: MCOMP_SPARSE=0, 1: MCOMP_SPARSE=1, 0: auto. */
static int sparse_mode(void)
{
	const char *s = getenv("MCOMP_SPARSE");

	if (!s || !*s || !strcmp(s, "auto"))
		return 0;
	return strcmp(s, "0") ? 1 : -1;
}

/*
 * The hash of words c .. e of w (one block, at most HASH_BLOCK): in each of
 * 16 lanes (word c + i in lane i % 16) Fletcher's two sums modulo 2^32, s1
 * of the words and s2 of the running s1, so that a changed word changes s1
 * and a moved one s2; the lanes weighed by odd factors. Adds only: the
 * reads are the cost. Every kernel below gives the same value.
 */
static uint64_t hash_end(const uint32_t *w, int64_t i, int64_t c, int64_t e, uint32_t *s1,
			 uint32_t *s2)
{
	uint64_t h = 0;

	for (; i < e; i++) {
		s1[(i - c) & 15] += w[i];
		s2[(i - c) & 15] += s1[(i - c) & 15];
	}
	for (int l = 0; l < 16; l++)
		h += (uint64_t)s1[l] * (uint64_t)(2 * l + 1) +
		     (uint64_t)s2[l] * (uint64_t)(2 * l + 33);
	return h;
}

static uint64_t hash_block(const uint32_t *w, int64_t c, int64_t e)
{
	uint32_t s1[16] = {0}, s2[16] = {0};

	return hash_end(w, c, c, e, s1, s2);
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static uint64_t hash_block_avx512(const uint32_t *w, int64_t c,
								     int64_t e)
{
	__m512i a = _mm512_setzero_si512(), b = a;
	uint32_t s1[16], s2[16];
	int64_t i = c;

	for (; i + 16 <= e; i += 16) {
		a = _mm512_add_epi32(a, _mm512_loadu_si512(w + i));
		b = _mm512_add_epi32(b, a);
	}
	_mm512_storeu_si512(s1, a);
	_mm512_storeu_si512(s2, b);
	return hash_end(w, i, c, e, s1, s2);
}

__attribute__((target("avx2"))) static uint64_t hash_block_avx2(const uint32_t *w, int64_t c,
								int64_t e)
{
	__m256i a0 = _mm256_setzero_si256(), a1 = a0, b0 = a0, b1 = a0;
	uint32_t s1[16], s2[16];
	int64_t i = c;

	for (; i + 16 <= e; i += 16) {
		a0 = _mm256_add_epi32(a0, _mm256_loadu_si256((const __m256i *)(w + i)));
		a1 = _mm256_add_epi32(a1, _mm256_loadu_si256((const __m256i *)(w + i + 8)));
		b0 = _mm256_add_epi32(b0, a0);
		b1 = _mm256_add_epi32(b1, a1);
	}
	_mm256_storeu_si256((__m256i *)s1, a0);
	_mm256_storeu_si256((__m256i *)(s1 + 8), a1);
	_mm256_storeu_si256((__m256i *)s2, b0);
	_mm256_storeu_si256((__m256i *)(s2 + 8), b1);
	return hash_end(w, i, c, e, s1, s2);
}
#endif

/* Block b of the n words of w, its hash weighed by its place (2b + 1). */
static uint64_t hash_at(const uint32_t *w, int64_t n, int64_t b)
{
	int64_t c = b * HASH_BLOCK, e = c + HASH_BLOCK < n ? c + HASH_BLOCK : n;
	uint64_t h;

#if defined(__x86_64__)
	if (mc_cpu_has(MC_CPU_AVX512F))
		h = hash_block_avx512(w, c, e);
	else if (mc_cpu_has(MC_CPU_AVX2))
		h = hash_block_avx2(w, c, e);
	else
#endif
		h = hash_block(w, c, e);
	return h * (uint64_t)(2 * b + 1);
}

static int64_t hash_blocks(int64_t n)
{
	return (n + HASH_BLOCK - 1) / HASH_BLOCK;
}

/* The hash of the n words of w: the sum of its blocks', the same for any thread count. */
static uint64_t weight_hash(const uint32_t *w, int64_t n)
{
	uint64_t sum = 0;

#pragma omp parallel for schedule(static) reduction(+ : sum) if (n >= 4 * MC_PAR_MIN)
	for (int64_t b = 0; b < hash_blocks(n); b++)
		sum += hash_at(w, n, b);
	return sum;
}

/* The same, block by block, on the GEMM's threads (struct mc_sgemm_side). */
struct hash_job {
	const uint32_t *w;
	int64_t n;
	uint64_t sum;
};

static void hash_item(void *arg, int64_t b)
{
	struct hash_job *h = arg;

	__atomic_fetch_add(&h->sum, hash_at(h->w, h->n, b), __ATOMIC_RELAXED);
}

/* Non-zero words of w (+0.0 and -0.0 are zeros). */
static int64_t count_nonzero(const uint32_t *w, int64_t n)
{
	int64_t nz = 0;

#pragma omp parallel for schedule(static) reduction(+ : nz) if (n >= 4 * MC_PAR_MIN)
	for (int64_t i = 0; i < n; i++)
		nz += (w[i] << 1) != 0;
	return nz;
}

/* Builds c's CSR from w[O, I]; -1 when out of memory. */
static int csr_build(struct csr_cache *c, const float *w, int O, int I, int64_t nnz)
{
	int64_t k = 0;

	c->indptr = malloc(((size_t)O + 1) * sizeof(int32_t));
	c->indices = malloc((size_t)(nnz ? nnz : 1) * sizeof(int32_t));
	c->values = malloc((size_t)(nnz ? nnz : 1) * sizeof(float));
	if (!c->indptr || !c->indices || !c->values) {
		csr_clear(c);
		return -1;
	}
	for (int o = 0; o < O; o++) {
		c->indptr[o] = (int32_t)k;
		for (int i = 0; i < I; i++) {
			float v = w[(size_t)o * I + i];

			if (v != 0.0f) {
				c->indices[k] = i;
				c->values[k++] = v;
			}
		}
	}
	c->indptr[O] = (int32_t)k;
	return 0;
}

/*
 * Whether the weight w should run on its CSR copy under mode (batches of
 * SPARSE_MIN_BATCH or more, or mode 1): the sample, then the exact count.
 */
static int sparse_verdict(const struct mc_tensor *w, int mode, int64_t *nnz)
{
	int64_t numel = w->numel;

	if (numel > INT32_MAX)
		return 0;
	if (mode == 0) {
		const uint32_t *u = w->data;
		int64_t step = numel > SPARSE_SAMPLE ? numel / SPARSE_SAMPLE : 1, seen = 0, zeros = 0;

		if (!have_avx512())
			return 0;
		for (int64_t i = 0; i < numel; i += step, seen++)
			zeros += (u[i] << 1) == 0;
		if ((double)zeros < (SPARSE_MIN - 0.02) * (double)seen)
			return 0;
	}
	*nnz = count_nonzero(w->data, numel);
	return mode == 1 || (double)(numel - *nnz) >= SPARSE_MIN * (double)numel;
}

/*
 * The node's cache for its weight as it is now, whose hash is sum: copies
 * and verdict made from other data dropped; with cand (a batch the sparse
 * path may take, under mode), the verdict made, and the CSR copy with a
 * sparse one; else (or with a dense verdict) the weight packed for kernel
 * k. NULL when out of memory. Called with csr_lock held.
 */
static struct csr_cache *weights_now(const struct mc_node *node, uint64_t sum, int cand, int mode,
				     const char *k)
{
	const struct mc_tensor *w = node->params[0];
	int O = (int)w->shape[0], I = (int)w->shape[1];
	struct csr_cache *c = node->cache;
	size_t size;

	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			return NULL;
		/* The cache is the node's own mutable state behind a const view. */
		((struct mc_node *)node)->cache = c;
		c->mode = VERDICT_NONE;
	}
	if (c->w != w->data || c->sum != sum) {
		csr_clear(c);
		free(c->packed);
		c->packed = NULL;
		c->w = w->data;
		c->sum = sum;
		c->mode = VERDICT_NONE;
	}
	if (cand && c->mode != mode) {
		int64_t nnz = 0;

		csr_clear(c);
		c->mode = mode;
		c->sparse = sparse_verdict(w, mode, &nnz);
		if (c->sparse && csr_build(c, w->data, O, I, nnz))
			c->sparse = 0; /* out of memory: the GEMM needs none */
	}
	if ((cand && c->sparse) || (c->packed && c->pk_kernel == k))
		return c;
	free(c->packed);
	c->packed = NULL;
	size = mc_sgemm_packed_size(k, O, I);
	if (!size || size > SIZE_MAX / sizeof(float))
		return c;
	c->packed = aligned_alloc(64, (size * sizeof(float) + 63) / 64 * 64);
	if (!c->packed)
		return c;
	mc_sgemm_pack_b(k, 1, O, I, w->data, I, c->packed);
	c->pk_kernel = k;
	return c;
}

/* out[O] = x[I] W^T + b for one sample, four partial sums (the order is fixed). */
static void csr_row_sample(const struct csr_cache *c, int o, const float *x, float b, float *out)
{
	float s[4] = {0, 0, 0, 0};
	int32_t k = c->indptr[o], e = c->indptr[o + 1];

	for (; k + 4 <= e; k += 4)
		for (int j = 0; j < 4; j++)
			s[j] += c->values[k + j] * x[c->indices[k + j]];
	for (; k < e; k++)
		s[0] += c->values[k] * x[c->indices[k]];
	*out = ((s[0] + s[1]) + (s[2] + s[3])) + b;
}

#if defined(__x86_64__)
/* The same with a 16-wide gather. */
__attribute__((target("avx512f,fma"))) static void
csr_row_sample_avx512(const struct csr_cache *c, int o, const float *x, float b, float *out)
{
	int32_t k = c->indptr[o], e = c->indptr[o + 1];
	__m512 acc = _mm512_setzero_ps();

	for (; k + 16 <= e; k += 16) {
		__m512i idx = _mm512_loadu_si512(c->indices + k);

		acc = _mm512_fmadd_ps(_mm512_loadu_ps(c->values + k),
				      _mm512_i32gather_ps(idx, x, 4), acc);
	}
	if (k < e) {
		__mmask16 m = (__mmask16)((1u << (e - k)) - 1);
		__m512i idx = _mm512_maskz_loadu_epi32(m, c->indices + k);

		acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, c->values + k),
				      _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, x, 4),
				      acc);
	}
	*out = _mm512_reduce_add_ps(acc) + b;
}

/*
 * out[i0 .. i0 + 16 * nb, o] for nb (1 to 4) blocks of 16 samples from
 * xt[I, n] (the input transposed): one broadcast weight times 16 samples
 * per FMA, nb independent chains.
 */
__attribute__((target("avx512f,fma"))) static void
csr_row_block_avx512(const struct csr_cache *c, int o, const float *xt, int n, int i0, int nb,
		     float b, float *out, int O)
{
	__m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
			 _mm512_setzero_ps()};
	float t[64];

	for (int32_t k = c->indptr[o]; k < c->indptr[o + 1]; k++) {
		__m512 v = _mm512_set1_ps(c->values[k]);
		const float *xr = xt + (size_t)c->indices[k] * n + i0;

		for (int j = 0; j < nb; j++)
			acc[j] = _mm512_fmadd_ps(v, _mm512_loadu_ps(xr + 16 * j), acc[j]);
	}
	for (int j = 0; j < nb; j++)
		_mm512_storeu_ps(t + 16 * j, _mm512_add_ps(acc[j], _mm512_set1_ps(b)));
	for (int j = 0; j < 16 * nb; j++)
		out[(size_t)(i0 + j) * O + o] = t[j];
}
#endif

/*
 * out[n, O] = x[n, I] W^T + b on the CSR weights. Threads own rows of W (columns
 * of out); each output element sums its row's non-zeros in their order, so
 * the result does not depend on the thread count. Blocks of 16 samples read
 * the input transposed in work[I, n].
 */
static void linear_forward_sparse(const struct mc_node *node, const struct csr_cache *c,
				  const struct mc_run *run, int n, const float *x, float *out)
{
	const float *b = node->n_params > 1 ? node->params[1]->data : NULL;
	int O = (int)node->params[0]->shape[0], I = (int)node->params[0]->shape[1];
	int wide = have_avx512(), nfull = wide && run->work ? n / 16 * 16 : 0;
	float *xt = run->work;
	int64_t nz = c->indptr[O];

	if (nfull) {
#pragma omp parallel for schedule(static) if ((int64_t)n * I >= MC_PAR_MIN)
		for (int i = 0; i < I; i++)
			for (int s = 0; s < n; s++)
				xt[(size_t)i * n + s] = x[(size_t)s * I + i];
	}
#pragma omp parallel for schedule(static) if ((int64_t)n * nz >= MC_PAR_MIN)
	for (int o0 = 0; o0 < O; o0 += 16) {
		int o1 = o0 + 16 < O ? o0 + 16 : O;

#if defined(__x86_64__)
		for (int i0 = 0; i0 < nfull; i0 += 64) {
			int nb = (nfull - i0) / 16 < 4 ? (nfull - i0) / 16 : 4;

			for (int o = o0; o < o1; o++)
				csr_row_block_avx512(c, o, xt, n, i0, nb, b ? b[o] : 0.0f, out, O);
		}
#endif
		for (int s = nfull; s < n; s++)
			for (int o = o0; o < o1; o++) {
#if defined(__x86_64__)
				if (wide) {
					csr_row_sample_avx512(c, o, x + (size_t)s * I, b ? b[o] : 0.0f,
							      out + (size_t)s * O + o);
					continue;
				}
#endif
				csr_row_sample(c, o, x + (size_t)s * I, b ? b[o] : 0.0f,
					       out + (size_t)s * O + o);
			}
	}
}

/* The transposed input of the sparse path: I * n floats. */
static size_t linear_workspace(const struct mc_node *node, int n)
{
	return (size_t)node->params[0]->shape[1] * (size_t)n * sizeof(float);
}

/*
 * The inference forward on the node's cached weights (see "sparse
 * inference" above); -1 when there are none (out of memory, or the GEMM's
 * kernel changed meanwhile): the caller then runs the plain GEMM.
 */
static int linear_infer(const struct mc_node *node, const struct mc_run *run, int n, const float *x,
			float *out, int relu, int mode)
{
	const struct mc_tensor *w = node->params[0];
	const float *b = node->n_params > 1 ? node->params[1]->data : NULL;
	const float *y[1] = {out};
	int O = (int)w->shape[0], I = (int)w->shape[1];
	int cand = mode >= 0 && (mode || n >= SPARSE_MIN_BATCH);
	const char *k = mc_sgemm_kernel();
	struct hash_job job = {w->data, w->numel, 0};
	struct csr_cache *c;
	const float *p = NULL;
	uint64_t sum = 0;
	int changed;

	pthread_mutex_lock(&csr_lock);
	c = node->cache;
	if (c && !c->missed && n >= DENSE_PACK_MIN_BATCH && c->w == w->data && c->packed &&
	    c->pk_kernel == k && (!cand || (c->mode == mode && !c->sparse))) {
		p = c->packed;
		sum = c->sum;
	}
	pthread_mutex_unlock(&csr_lock);
	if (p) {
		/* The product with the packing made last time, and the hash with it. */
		struct mc_sgemm_side side = {hash_item, &job, hash_blocks(w->numel)};

		if (!mc_sgemm_pb_side(k, 1, n, O, I, 1.0f, x, I, w->data, I, p, b, relu, 0.0f, out,
				      O, &side) &&
		    job.sum == sum)
			return 0;
		/* The weight changed since: its product again, from the weight as it is. */
	}
	sum = weight_hash(w->data, w->numel);
	pthread_mutex_lock(&csr_lock);
	c = node->cache;
	/* weights that keep changing are hashed first, not computed twice */
	changed = !c || c->w != w->data || c->sum != sum;
	c = weights_now(node, sum, cand, mode, k);
	if (c)
		c->missed = changed;
	pthread_mutex_unlock(&csr_lock);
	if (!c)
		return -1;
	if (cand && c->sparse) {
		/* The entry stays valid until the weights change, which a concurrent
		 * forward of the same model must not do anyway. */
		linear_forward_sparse(node, c, run, n, x, out);
		if (relu)
			relu_forward(node, run, n, y, out); /* elementwise: in place is the same */
		return 0;
	}
	if (!c->packed || n < DENSE_PACK_MIN_BATCH)
		return -1;
	return mc_sgemm_pb(k, 1, n, O, I, 1.0f, x, I, w->data, I, c->packed, b, relu, 0.0f, out, O);
}

/*
 * out[n, O] = in[n, I] W[O, I]^T + b[O], then max(out, 0) when relu. At
 * inference with the weights packed, the bias and relu go into the GEMM's
 * tiles (the same values: kernels/gemm.h); otherwise the bias is copied
 * into out first and the relu is a pass of its own.
 */
static void linear_forward_act(const struct mc_node *node, const struct mc_run *run, int n,
			       const float *const *in, float *out, int relu)
{
	const struct mc_tensor *w = node->params[0];
	const float *b = node->n_params > 1 ? node->params[1]->data : NULL;
	const float *y[1] = { out };
	int O = (int)w->shape[0], I = (int)w->shape[1], mode = sparse_mode();

	if (!run->training && (n >= DENSE_PACK_MIN_BATCH || mode == 1) &&
	    !linear_infer(node, run, n, in[0], out, relu, mode))
		return;
	if (b)
		for (int i = 0; i < n; i++)
			memcpy(out + (size_t)i * O, b, (size_t)O * sizeof(float));
	mc_sgemm(0, 1, n, O, I, 1.0f, in[0], I, w->data, I, b ? 1.0f : 0.0f, out, O);
	if (relu)
		relu_forward(node, run, n, y, out); /* elementwise: in place is the same */
}

static void linear_forward(const struct mc_node *node, const struct mc_run *run, int n,
			   const float *const *in, float *out)
{
	linear_forward_act(node, run, n, in, out, 0);
}

void mc_linear_forward_relu(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, float *out)
{
	linear_forward_act(node, run, n, in, out, 1);
}

/* dW[O, I] += dout^T x, db[O] += column sums of dout, din[n, I] = dout W */
static void linear_backward(const struct mc_node *node, const struct mc_run *run, int n,
			    const float *const *in, const float *out, const float *dout,
			    float *const *din, float *const *grads)
{
	const struct mc_tensor *w = node->params[0];
	int O = (int)w->shape[0], I = (int)w->shape[1];

	if (grads && grads[0])
		mc_sgemm(1, 0, O, I, n, 1.0f, dout, O, in[0], I, 1.0f, grads[0], I);
	if (grads && grads[1]) {
		float *db = grads[1];

		/* Each thread owns a range of outputs and sums the batch in order. */
#pragma omp parallel for schedule(static) if ((int64_t)n * O >= MC_PAR_MIN)
		for (int o0 = 0; o0 < O; o0 += 64) {
			int o1 = o0 + 64 < O ? o0 + 64 : O;

			for (int i = 0; i < n; i++)
				for (int o = o0; o < o1; o++)
					db[o] += dout[(size_t)i * O + o];
		}
	}
	if (din[0])
		mc_sgemm(0, 0, n, I, O, 1.0f, dout, O, w->data, I, 0.0f, din[0], I);
}

static int64_t linear_flops(const struct mc_node *node)
{
	return 2 * node->params[0]->numel;
}

const struct mc_op mc_op_linear = {
    .name = "linear",
    .help = "fully connected layer: y = x W^T + b",
    .attr_size = sizeof(struct linear_attrs),
    .attrs = linear_attrs,
    .n_inputs = 1,
    .setup = linear_setup,
    .init = mc_fan_in_init,
    .forward = linear_forward,
    .backward = linear_backward,
    .flops = linear_flops,
    .workspace = linear_workspace,
    .release = linear_release,
};

/* ---------------------------------------------------------------- the table */
