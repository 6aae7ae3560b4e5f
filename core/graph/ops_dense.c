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
 * AVX-512 kernel only.
 *
 * The CSR copy is built on first use and kept as the node's cache (like
 * qlinear's packed weights), dropped by linear_release when the node is
 * freed or its parameters change. Weights are written in place by
 * training and by passes, so every sparse forward first checks a checksum
 * of the whole weight (one parallel read, far cheaper than the product at
 * any batch above a few samples) against the one the copy was built from,
 * and rebuilds on a mismatch. The dense path needs no copy and never pays
 * for the check: a cheap sample of the weight rules out layers far from
 * the threshold.
 */
#define SPARSE_MIN 0.85  /* measured: bench/bench_sparse.c */
#define SPARSE_MIN_BATCH 16 /* below it the dense GEMV wins (bench_sparse) */
#define SPARSE_SAMPLE 4096 /* weights looked at before the full check */
#define DENSE_PACK_MIN_BATCH 4 /* from 4 rows on mc_sgemm packs B (below: its GEMV path) */

struct csr_cache {
	const void *w;   /* the data it was built from */
	uint64_t sum;    /* and that data's checksum */
	int sparse;      /* 0: too dense, the GEMM runs */
	int32_t *indptr; /* [O + 1] */
	int32_t *indices; /* [nnz] */
	float *values;   /* [nnz] */
	/* The dense weight packed for the GEMM's kernel pk_kernel (see dense_weights). */
	const void *pk_w;
	uint64_t pk_sum;
	const char *pk_kernel;
	float *packed;
};

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
 * Checksum of words c .. e of w: the sum of w[i] * (2i + 1) modulo 2^32 in
 * each of 16 lanes (an odd factor is invertible, so changing any one word
 * changes it); adds the count of non-zero words to *nz.
 */
static uint64_t sum_chunk(const uint32_t *w, int64_t c, int64_t e, int64_t *nz)
{
	uint32_t s[16] = {0};
	int64_t z = 0;

	for (int64_t i = c; i < e; i++) {
		s[i & 15] += w[i] * (uint32_t)(2 * i + 1);
		z += (w[i] << 1) != 0; /* +0.0 and -0.0 are zeros */
	}
	*nz += z;
	for (int j = 1; j < 16; j++)
		s[0] += s[j] * (uint32_t)(2 * j + 1);
	return s[0];
}

#if defined(__x86_64__)
__attribute__((target("avx512f,avx512vl"))) static uint64_t
sum_chunk_avx512(const uint32_t *w, int64_t c, int64_t e, int64_t *nz)
{
	__m512i acc = _mm512_setzero_si512(), two = _mm512_set1_epi32(2 * 16);
	__m512i f = _mm512_add_epi32(
	    _mm512_set1_epi32((int)(2 * c + 1)),
	    _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30));
	__m512i mag = _mm512_set1_epi32(0x7fffffff);
	uint32_t s[16];
	int64_t i = c, z = 0;

	for (; i + 16 <= e; i += 16) {
		__m512i v = _mm512_loadu_si512(w + i);

		acc = _mm512_add_epi32(acc, _mm512_mullo_epi32(v, f));
		z += __builtin_popcount(_mm512_test_epi32_mask(v, mag));
		f = _mm512_add_epi32(f, two);
	}
	_mm512_storeu_si512(s, acc);
	for (; i < e; i++) {
		s[i & 15] += w[i] * (uint32_t)(2 * i + 1);
		z += (w[i] << 1) != 0;
	}
	*nz += z;
	for (int j = 1; j < 16; j++)
		s[0] += s[j] * (uint32_t)(2 * j + 1);
	return s[0];
}
#endif

/*
 * Checksum and non-zero count of the n words of w, from chunks that start at
 * multiples of 16: the same for any thread count and kernel.
 */
static uint64_t weight_sum(const uint32_t *w, int64_t n, int64_t *nnz)
{
	uint64_t sum = 0;
	int64_t nz = 0;
	int wide = have_avx512();

#pragma omp parallel for schedule(static) reduction(+ : sum, nz) if (n >= 4 * MC_PAR_MIN)
	for (int64_t c = 0; c < n; c += 16 * MC_CHUNK) {
		int64_t e = c + 16 * MC_CHUNK < n ? c + 16 * MC_CHUNK : n, z = 0;

#if defined(__x86_64__)
		if (wide)
			sum += sum_chunk_avx512(w, c, e, &z);
		else
#endif
			sum += sum_chunk(w, c, e, &z);
		nz += z;
	}
	*nnz = nz;
	return sum ^ (uint64_t)nz << 40;
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
 * The node's CSR weights when the sparse path should run, else NULL (the
 * dense GEMM is always correct). The entry stays valid until the weights
 * change, which a concurrent forward of the same model must not do anyway.
 */
static const struct csr_cache *sparse_weights(const struct mc_node *node, int mode)
{
	const struct mc_tensor *w = node->params[0];
	int O = (int)w->shape[0], I = (int)w->shape[1];
	int64_t numel = w->numel, nnz;
	struct csr_cache *c;
	uint64_t sum;

	if (numel > INT32_MAX)
		return NULL;
	if (mode == 0) {
		const uint32_t *u = w->data;
		int64_t step = numel > SPARSE_SAMPLE ? numel / SPARSE_SAMPLE : 1, seen = 0, zeros = 0;

		if (!have_avx512())
			return NULL;
		for (int64_t i = 0; i < numel; i += step, seen++)
			zeros += (u[i] << 1) == 0;
		if ((double)zeros < (SPARSE_MIN - 0.02) * (double)seen)
			return NULL;
	}
	sum = weight_sum(w->data, numel, &nnz);
	pthread_mutex_lock(&csr_lock);
	/* The cache is the node's own mutable state behind a const view. */
	c = node->cache;
	if (c && c->w == w->data && c->sum == sum)
		goto out;
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			goto out;
		((struct mc_node *)node)->cache = c;
	}
	c->w = w->data;
	csr_clear(c);
	c->sum = sum;
	c->sparse = mode == 1 || (double)(numel - nnz) >= SPARSE_MIN * (double)numel;
	if (c->sparse && csr_build(c, w->data, O, I, nnz))
		c->sparse = 0; /* out of memory: the GEMM needs none */
out:
	pthread_mutex_unlock(&csr_lock);
	return c && c->sparse ? c : NULL;
}

/*
 * The node's weight packed for the GEMM (mcomp's kernels/gemm.h), so that a
 * batch at inference packs only its input; NULL when the plain mc_sgemm
 * should run (out of memory). Checked against the weight's checksum on
 * every call like the CSR copy, and packed again when the weight or the
 * GEMM's kernel changed.
 */
static const float *dense_weights(const struct mc_node *node, const char **kname)
{
	const struct mc_tensor *w = node->params[0];
	int O = (int)w->shape[0], I = (int)w->shape[1];
	const char *k = mc_sgemm_kernel();
	struct csr_cache *c;
	const float *p = NULL;
	int64_t nnz;
	uint64_t sum = weight_sum(w->data, w->numel, &nnz);
	size_t size;

	pthread_mutex_lock(&csr_lock);
	c = node->cache;
	if (c && c->packed && c->pk_w == w->data && c->pk_sum == sum && c->pk_kernel == k) {
		p = c->packed;
		goto out;
	}
	if (!c) {
		c = calloc(1, sizeof(*c));
		if (!c)
			goto out;
		((struct mc_node *)node)->cache = c;
	}
	free(c->packed);
	c->packed = NULL;
	size = mc_sgemm_packed_size(k, O, I);
	if (!size || size > SIZE_MAX / sizeof(float))
		goto out;
	c->packed = aligned_alloc(64, (size * sizeof(float) + 63) / 64 * 64);
	if (!c->packed)
		goto out;
	mc_sgemm_pack_b(k, 1, O, I, w->data, I, c->packed);
	c->pk_w = w->data;
	c->pk_sum = sum;
	c->pk_kernel = k;
	p = c->packed;
out:
	pthread_mutex_unlock(&csr_lock);
	*kname = k;
	return p;
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
	const struct csr_cache *c;

	if (!run->training && mode >= 0 && (mode || n >= SPARSE_MIN_BATCH) &&
	    (c = sparse_weights(node, mode))) {
		linear_forward_sparse(node, c, run, n, in[0], out);
	} else {
		if (!run->training && n >= DENSE_PACK_MIN_BATCH) {
			const char *k;
			const float *p = dense_weights(node, &k);

			if (p && !mc_sgemm_pb(k, 1, n, O, I, 1.0f, in[0], I, w->data, I, p, b,
					      relu, 0.0f, out, O))
				return;
		}
		if (b)
			for (int i = 0; i < n; i++)
				memcpy(out + (size_t)i * O, b, (size_t)O * sizeof(float));
		mc_sgemm(0, 1, n, O, I, 1.0f, in[0], I, w->data, I, b ? 1.0f : 0.0f, out, O);
	}
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
