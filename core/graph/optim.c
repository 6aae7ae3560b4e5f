/* SPDX-License-Identifier: MIT */
/*
 * optim.c - SGD with momentum and Adam, with L2 weight decay, following
 * PyTorch's update rules (torch.optim.SGD, torch.optim.Adam) step for step.
 *
 * Updates are elementwise, so threads split the elements and the result
 * does not depend on the thread count.
 */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#ifdef __SSE2__
#include <emmintrin.h>
#include <immintrin.h>
#endif

#include <mcomp/train.h>

#include "graph/model_int.h"

#include "kernels/cpu.h"

#define PAR_MIN 16384
#define CHUNK 4096 /* elements per work item, a multiple of the vector width */

struct mc_optim {
	struct mc_optim_conf c;
	int64_t t;	   /* steps taken */
	int n_nodes;
	float **m, **v;	   /* [n_nodes * MC_NODE_MAX_PARAMS]: momentum / first and second moments */
	/* per step: the tensors updated and where each one's chunks start in
	 * the step's list of chunks (first[k + 1] - first[k] chunks of tensor k) */
	int *slot;
	const float **grad;
	float **data;
	int64_t *numel, *first;
};

void mc_optim_free(struct mc_optim *o)
{
	if (!o)
		return;
	for (int i = 0; i < o->n_nodes * MC_NODE_MAX_PARAMS; i++) {
		if (o->m)
			mc_free(o->m[i]);
		if (o->v)
			mc_free(o->v[i]);
	}
	free(o->m);
	free(o->v);
	free(o->slot);
	free(o->grad);
	free(o->data);
	free(o->numel);
	free(o->first);
	free(o);
}

static int check_conf(const struct mc_optim_conf *c, struct mc_err *err)
{
	if (c->kind != MC_OPTIM_SGD && c->kind != MC_OPTIM_ADAM)
		return mc_err_set(err, MC_EINVAL, "optimizer: unknown kind %d; use sgd or adam",
				  (int)c->kind);
	if (!(c->lr > 0 && isfinite(c->lr)))
		return mc_err_set(err, MC_EINVAL, "optimizer: lr %g must be a positive number", c->lr);
	if (!(c->weight_decay >= 0 && isfinite(c->weight_decay)))
		return mc_err_set(err, MC_EINVAL, "optimizer: weight_decay %g must be 0 or more",
				  c->weight_decay);
	if (c->kind == MC_OPTIM_SGD && !(c->momentum >= 0 && c->momentum < 1))
		return mc_err_set(err, MC_EINVAL, "optimizer: momentum %g must be in [0, 1)",
				  c->momentum);
	if (c->kind == MC_OPTIM_ADAM) {
		if (!(c->beta1 >= 0 && c->beta1 < 1) || !(c->beta2 >= 0 && c->beta2 < 1))
			return mc_err_set(err, MC_EINVAL,
					  "optimizer: Adam betas (%g, %g) must be in [0, 1); 0.9 and 0.999 are usual",
					  c->beta1, c->beta2);
		if (!(c->eps > 0 && isfinite(c->eps)))
			return mc_err_set(err, MC_EINVAL,
					  "optimizer: eps %g must be positive; 1e-8 is usual", c->eps);
	}
	return 0;
}

struct mc_optim *mc_optim_new(const struct mc_model *m, const struct mc_optim_conf *c,
			      struct mc_err *err)
{
	struct mc_optim *o;
	size_t slots = (size_t)m->n_nodes * MC_NODE_MAX_PARAMS;

	if (check_conf(c, err))
		return NULL;
	o = calloc(1, sizeof(*o));
	if (!o)
		goto nomem;
	o->c = *c;
	o->n_nodes = m->n_nodes;
	o->m = calloc(slots, sizeof(*o->m));
	o->v = calloc(slots, sizeof(*o->v));
	o->slot = calloc(slots, sizeof(*o->slot));
	o->grad = calloc(slots, sizeof(*o->grad));
	o->data = calloc(slots, sizeof(*o->data));
	o->numel = calloc(slots, sizeof(*o->numel));
	o->first = calloc(slots + 1, sizeof(*o->first));
	if (!o->m || !o->v || !o->slot || !o->grad || !o->data || !o->numel || !o->first)
		goto nomem;
	for (int i = 0; i < m->n_nodes; i++)
		for (int p = 0; p < m->nodes[i]->n_params - m->nodes[i]->n_buffers; p++) {
			size_t n = (size_t)m->nodes[i]->params[p]->numel;
			int s = i * MC_NODE_MAX_PARAMS + p;

			if (c->kind == MC_OPTIM_SGD && c->momentum == 0)
				continue;
			o->m[s] = mc_calloc(n ? n : 1, sizeof(float));
			if (!o->m[s])
				goto nomem;
			if (c->kind == MC_OPTIM_ADAM) {
				o->v[s] = mc_calloc(n ? n : 1, sizeof(float));
				if (!o->v[s])
					goto nomem;
			}
		}
	return o;

nomem:
	mc_optim_free(o);
	mc_err_set(err, MC_ENOMEM, "optimizer: out of memory for its state");
	return NULL;
}

void mc_optim_set_lr(struct mc_optim *o, double lr)
{
	o->c.lr = lr;
}

/*
 * Optimizer state that decays towards zero (momentum of a weight whose
 * gradient is always 0, such as one reading a blank border pixel) would
 * otherwise sink into subnormal floats, where x86 arithmetic is a hundred
 * times slower. It is flushed to zero instead, the way FTZ hardware would.
 */
static inline float flush(float x)
{
	return fabsf(x) < FLT_MIN ? 0.0f : x;
}

/* p -= lr * buf, buf = momentum * buf + (g + wd * p); buf starts as g: elements c .. end - 1. */
static void sgd_chunk(float *restrict p, const float *restrict g, float *restrict buf, int64_t c,
		      int64_t end, float lr, float mom, float wd, int first)
{
	if (!buf) {
		for (int64_t i = c; i < end; i++)
			p[i] -= lr * (g[i] + wd * p[i]);
	} else {
		for (int64_t i = c; i < end; i++) {
			float d = g[i] + wd * p[i];

			buf[i] = first ? d : flush(mom * buf[i] + d);
			p[i] -= lr * buf[i];
		}
	}
}

/* One element of PyTorch's Adam: p -= (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps). */
static inline void adam_one(float *p, float g, float *m, float *v, float step, float b1, float b2,
			    float sqrt_bc2, float eps, float wd)
{
	float d = g + wd * *p;

	*m = flush(b1 * *m + (1.0f - b1) * d);
	*v = flush(b2 * *v + (1.0f - b2) * d * d);
	*p -= step * *m / (sqrtf(*v) / sqrt_bc2 + eps);
}

#ifdef __SSE2__
/*
 * The same operations as the SSE2 loop below, sixteen at a time. Contraction
 * into FMA is off so that every element rounds exactly as adam_one does:
 * the result does not depend on which path ran.
 */
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
__attribute__((target("avx512f"))) static int64_t
adam_avx512(float *restrict p, const float *restrict g, float *restrict m, float *restrict v,
	    int64_t i, int64_t end, float step, float b1, float b2, float sqrt_bc2, float eps,
	    float wd)
{
	const __m512 vb1 = _mm512_set1_ps(b1), vb2 = _mm512_set1_ps(b2);
	const __m512 vc1 = _mm512_set1_ps(1.0f - b1), vc2 = _mm512_set1_ps(1.0f - b2);
	const __m512 vwd = _mm512_set1_ps(wd), vstep = _mm512_set1_ps(step);
	const __m512 vbc2 = _mm512_set1_ps(sqrt_bc2), veps = _mm512_set1_ps(eps);
	const __m512 tiny = _mm512_set1_ps(FLT_MIN), zero = _mm512_setzero_ps();

	for (; i + 16 <= end; i += 16) {
		__m512 vp = _mm512_loadu_ps(p + i);
		__m512 d = _mm512_add_ps(_mm512_loadu_ps(g + i), _mm512_mul_ps(vwd, vp));
		__m512 vm = _mm512_add_ps(_mm512_mul_ps(vb1, _mm512_loadu_ps(m + i)),
					  _mm512_mul_ps(vc1, d));
		__m512 vv = _mm512_add_ps(_mm512_mul_ps(vb2, _mm512_loadu_ps(v + i)),
					  _mm512_mul_ps(_mm512_mul_ps(vc2, d), d));

		/* flush: |x| < FLT_MIN becomes 0 */
		vm = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(vm), tiny, _CMP_LT_OQ),
					  vm, zero);
		vv = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(_mm512_abs_ps(vv), tiny, _CMP_LT_OQ),
					  vv, zero);
		_mm512_storeu_ps(m + i, vm);
		_mm512_storeu_ps(v + i, vv);
		vp = _mm512_sub_ps(vp, _mm512_div_ps(_mm512_mul_ps(vstep, vm),
						     _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vv),
										 vbc2),
								   veps)));
		_mm512_storeu_ps(p + i, vp);
	}
	return i;
}
#pragma GCC pop_options
#endif

/* Adam on elements c .. end - 1 (one chunk). */
static void adam_chunk(float *restrict p, const float *restrict g, float *restrict m,
		       float *restrict v, int64_t c, int64_t end, float step, float b1, float b2,
		       float sqrt_bc2, float eps, float wd, int has_avx512)
{
	int64_t i = c;
#ifdef __SSE2__
	/* The same operations as adam_one, four at a time; SSE2 is part
	 * of x86-64, and there is no FMA to round differently. */
	const __m128 vb1 = _mm_set1_ps(b1), vb2 = _mm_set1_ps(b2);
	const __m128 vc1 = _mm_set1_ps(1.0f - b1), vc2 = _mm_set1_ps(1.0f - b2);
	const __m128 vwd = _mm_set1_ps(wd), vstep = _mm_set1_ps(step);
	const __m128 vbc2 = _mm_set1_ps(sqrt_bc2), veps = _mm_set1_ps(eps);
	const __m128 tiny = _mm_set1_ps(FLT_MIN), sign = _mm_set1_ps(-0.0f);

	if (has_avx512)
		i = adam_avx512(p, g, m, v, i, end, step, b1, b2, sqrt_bc2, eps, wd);
	for (; i + 4 <= end; i += 4) {
		__m128 vp = _mm_loadu_ps(p + i);
		__m128 d = _mm_add_ps(_mm_loadu_ps(g + i), _mm_mul_ps(vwd, vp));
		__m128 vm = _mm_add_ps(_mm_mul_ps(vb1, _mm_loadu_ps(m + i)), _mm_mul_ps(vc1, d));
		__m128 vv = _mm_add_ps(_mm_mul_ps(vb2, _mm_loadu_ps(v + i)),
				       _mm_mul_ps(_mm_mul_ps(vc2, d), d));

		vm = _mm_andnot_ps(_mm_cmplt_ps(_mm_andnot_ps(sign, vm), tiny), vm);
		vv = _mm_andnot_ps(_mm_cmplt_ps(_mm_andnot_ps(sign, vv), tiny), vv);
		_mm_storeu_ps(m + i, vm);
		_mm_storeu_ps(v + i, vv);
		vp = _mm_sub_ps(vp, _mm_div_ps(_mm_mul_ps(vstep, vm),
					       _mm_add_ps(_mm_div_ps(_mm_sqrt_ps(vv), vbc2),
							  veps)));
		_mm_storeu_ps(p + i, vp);
	}
#endif
	for (; i < end; i++)
		adam_one(p + i, g[i], m + i, v + i, step, b1, b2, sqrt_bc2, eps, wd);
}

void mc_optim_step(struct mc_optim *o, struct mc_model *m, struct mc_exec *e)
{
	const struct mc_optim_conf *c = &o->c;
	double bc1, bc2;
	int nt = 0, first, has_avx512 = 0;
	int64_t total = 0, chunks;
	enum mc_optim_kind kind = c->kind;
	float lr, mom, wd, step, b1, b2, sqrt_bc2, eps;

	o->t++;
	bc1 = 1.0 - pow(c->beta1, (double)o->t);
	bc2 = 1.0 - pow(c->beta2, (double)o->t);
	/* the values the per-tensor updates were given */
	lr = (float)c->lr;
	mom = (float)c->momentum;
	wd = (float)c->weight_decay;
	first = o->t == 1;
	step = (float)(c->lr / bc1);
	b1 = (float)c->beta1;
	b2 = (float)c->beta2;
	sqrt_bc2 = (float)sqrt(bc2);
	eps = (float)c->eps;
#ifdef __SSE2__
	has_avx512 = mc_cpu_has(MC_CPU_AVX512F);
#endif
	o->first[0] = 0;
	for (int i = 0; i < m->n_nodes && i < o->n_nodes; i++)
		for (int p = 0; p < m->nodes[i]->n_params - m->nodes[i]->n_buffers; p++) {
			struct mc_tensor *t = m->nodes[i]->params[p];
			const float *g = mc_exec_grad(e, i, p);

			/* Quantized (non-f32) tensors are not trained. */
			if (t->dtype != MC_F32 || !g || t->numel < 1)
				continue;
			o->slot[nt] = i * MC_NODE_MAX_PARAMS + p;
			o->grad[nt] = g;
			o->data[nt] = t->data;
			o->numel[nt] = t->numel;
			o->first[nt + 1] = o->first[nt] + (t->numel + CHUNK - 1) / CHUNK;
			total += t->numel;
			nt++;
		}
	/*
	 * Every tensor's chunks in one list, one parallel loop: the small
	 * tensors (biases, a first convolution) no longer run on one thread
	 * each in turn, and one team start serves the whole step. Chunks are
	 * those of each tensor alone (CHUNK elements from its start), so which
	 * elements take the vector path never depends on the thread count.
	 */
	chunks = o->first[nt];
#pragma omp parallel for schedule(static) if (total >= PAR_MIN)
	for (int64_t q = 0; q < chunks; q++) {
		int lo = 0, hi = nt - 1;

		while (lo < hi) { /* the last tensor whose chunks start at or before q */
			int mid = (lo + hi + 1) / 2;

			if (o->first[mid] <= q)
				lo = mid;
			else
				hi = mid - 1;
		}
		int64_t c0 = (q - o->first[lo]) * CHUNK, n = o->numel[lo];
		int64_t end = c0 + CHUNK < n ? c0 + CHUNK : n;
		int s = o->slot[lo];

		if (kind == MC_OPTIM_SGD)
			sgd_chunk(o->data[lo], o->grad[lo], o->m[s], c0, end, lr, mom, wd, first);
		else
			adam_chunk(o->data[lo], o->grad[lo], o->m[s], o->v[s], c0, end, step, b1,
				   b2, sqrt_bc2, eps, wd, has_avx512);
	}
}

int64_t mc_optim_steps(const struct mc_optim *o)
{
	return o->t;
}

void mc_optim_set_steps(struct mc_optim *o, int64_t steps)
{
	o->t = steps;
}

float *mc_optim_state(struct mc_optim *o, int node, int param, int which)
{
	if (node < 0 || node >= o->n_nodes || param < 0 || param >= MC_NODE_MAX_PARAMS)
		return NULL;
	if (which == 0)
		return o->m[node * MC_NODE_MAX_PARAMS + param];
	if (which == 1)
		return o->v[node * MC_NODE_MAX_PARAMS + param];
	return NULL;
}
