/* SPDX-License-Identifier: MIT */
/*
 * dwconv.c - the depthwise convolution kernels of dwconv.h.
 *
 * One (sample, channel) item at a time: the channel's padded image is
 * split into s x s phase planes, plane (ri, rj)[a][b] = xpad[a*s + ri][b*s + rj],
 * each WJ = OW + (k-1)/s wide. Output position (oh, ow) is then grid
 * position g = oh * WJ + ow, and tap (ki, kj) reads plane (ki % s, kj % s)
 * at g + (ki / s) * WJ + kj / s: one offset per tap, the same for every
 * position, so a vector of consecutive grid positions loads contiguously
 * for any stride. Grid columns ow >= OW are computed and dropped when the
 * rows are copied out. Padding is in the planes as zeros, so every output
 * gets the whole chain of k*k fmas the per-sample GEMM gives it.
 */
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/tensor.h>

#include "kernels/dwconv.h"

#define KC	256 /* taps a slice: the f32 GEMM's depth of a K slice (gemm.c KC) */
#define SLOTS	16  /* at most this many threads, each with a slot of the workspace */
#define PAR_MIN 1e6 /* multiply-adds below which one thread is faster than a team */
#define VW	16  /* grid positions are computed in vectors of up to VW */

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && defined(__ELF__) && \
    !defined(MC_NO_TARGET_CLONES)
#define PORTABLE_CLONES __attribute__((target_clones("fma", "default")))
#else
#define PORTABLE_CLONES
#endif

/* The layout of one item's scratch, from the shape alone. */
struct dw_geo {
	int sl;	     /* (k - 1) / s: extra rows and columns of a phase plane */
	int RJ, WJ;  /* rows and columns of a phase plane */
	size_t ps;   /* floats from one plane to the next (with zeroed slack for the last vector) */
	size_t G;    /* grid positions OH * WJ */
	size_t Gv;   /* G rounded up to VW */
	size_t slot; /* floats of one thread's slot: s*s planes, then Gv of output grid */
};

static size_t up(size_t v, size_t m)
{
	return (v + m - 1) / m * m;
}

static int dw_geo(const struct mc_dwconv *d, struct dw_geo *g)
{
	size_t plane, planes;

	g->sl = (d->k - 1) / d->s;
	g->RJ = d->OH + g->sl;
	g->WJ = d->OW + g->sl;
	if (__builtin_mul_overflow((size_t)g->RJ, (size_t)g->WJ, &plane) ||
	    plane > SIZE_MAX / 64 / ((size_t)d->s * d->s))
		return -1;
	/* the last vector reads up to VW - 1 + sl floats past the plane */
	g->ps = up(plane + (size_t)g->sl + VW, VW);
	g->G = (size_t)d->OH * g->WJ;
	g->Gv = up(g->G, VW);
	planes = g->ps * d->s * d->s;
	if (planes > SIZE_MAX / 64 - g->Gv)
		return -1;
	g->slot = up(planes + g->Gv, VW);
	return 0;
}

size_t mc_dwconv_work(const struct mc_dwconv *d)
{
	struct dw_geo g;
	size_t kk = (size_t)d->k * d->k, offs, total;

	if (dw_geo(d, &g))
		return SIZE_MAX;
	offs = up(kk * sizeof(size_t), 64);
	if (__builtin_mul_overflow(g.slot * sizeof(float), (size_t)SLOTS, &total) ||
	    __builtin_add_overflow(total, offs, &total))
		return SIZE_MAX;
	return total;
}

/* The s*s phase planes of one channel's image x[H][W], padding and slack zero. */
static void planes(const struct mc_dwconv *d, const struct dw_geo *g, const float *x, float *pl)
{
	const int s = d->s, p = d->p;

	for (int ri = 0; ri < s; ri++)
		for (int rj = 0; rj < s; rj++) {
			float *dst = pl + (size_t)(ri * s + rj) * g->ps;
			/* columns b of the plane inside the image: b*s + rj - p in [0, W) */
			int lo = p - rj > 0 ? (p - rj + s - 1) / s : 0;
			int hi = d->W - 1 + p - rj >= 0 ? (d->W - 1 + p - rj) / s + 1 : 0;

			if (hi > g->WJ)
				hi = g->WJ;
			if (lo > hi)
				lo = hi;
			for (int a = 0; a < g->RJ; a++, dst += g->WJ) {
				int h = a * s + ri - p;
				const float *src = x + (int64_t)h * d->W + (int64_t)lo * s + rj - p;

				if (h < 0 || h >= d->H) {
					memset(dst, 0, (size_t)g->WJ * sizeof(float));
					continue;
				}
				memset(dst, 0, (size_t)lo * sizeof(float));
				if (s == 1)
					memcpy(dst + lo, src, (size_t)(hi - lo) * sizeof(float));
				else
					for (int b = lo; b < hi; b++)
						dst[b] = src[(b - lo) * s];
				memset(dst + hi, 0, (size_t)(g->WJ - hi) * sizeof(float));
			}
			memset(dst, 0, (g->ps - (size_t)g->RJ * g->WJ) * sizeof(float));
		}
}

/*
 * out[0..Gv) over the grid: for each slice of taps, acc = fma chain from +0,
 * then y = acc + y (y from bias); relu a select. pl: the planes, off[t]: tap
 * t's offset into them.
 */
typedef void (*grid_fn)(int kk, const float *w, float bias, int relu, const float *pl,
			const size_t *off, size_t Gv, float *out);

PORTABLE_CLONES static void grid_portable(int kk, const float *w, float bias, int relu,
					  const float *pl, const size_t *off, size_t Gv, float *out)
{
	for (size_t g0 = 0; g0 < Gv; g0 += VW) {
		float y[VW];

		for (int j = 0; j < VW; j++)
			y[j] = bias;
		for (int t0 = 0; t0 < kk; t0 += KC) {
			int t1 = kk - t0 < KC ? kk : t0 + KC;
			float acc[VW] = { 0 };

			for (int t = t0; t < t1; t++) {
				const float *src = pl + off[t] + g0;
				float wt = w[t];

				for (int j = 0; j < VW; j++)
					acc[j] = __builtin_fmaf(wt, src[j], acc[j]);
			}
			for (int j = 0; j < VW; j++)
				y[j] = acc[j] + y[j];
		}
		for (int j = 0; j < VW; j++)
			out[g0 + j] = relu ? (y[j] > 0.0f ? y[j] : 0.0f) : y[j];
	}
}

#if defined(__x86_64__)
#include <immintrin.h>

/* max(y, 0) as MAXPS does it is y > 0 ? y : 0 (NaN and either zero give +0): the relu select. */
__attribute__((target("avx512f"))) static void grid_avx512(int kk, const float *w, float bias,
							    int relu, const float *pl,
							    const size_t *off, size_t Gv,
							    float *out)
{
	const __m512 vb = _mm512_set1_ps(bias), z = _mm512_setzero_ps();
	size_t g0 = 0;

	/* four vectors at a time: four independent chains in flight */
	for (; g0 + 64 <= Gv; g0 += 64) {
		__m512 y0 = vb, y1 = vb, y2 = vb, y3 = vb;

		for (int t0 = 0; t0 < kk; t0 += KC) {
			int t1 = kk - t0 < KC ? kk : t0 + KC;
			__m512 a0 = z, a1 = z, a2 = z, a3 = z;

			for (int t = t0; t < t1; t++) {
				const float *src = pl + off[t] + g0;
				__m512 wt = _mm512_set1_ps(w[t]);

				a0 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(src), a0);
				a1 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(src + 16), a1);
				a2 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(src + 32), a2);
				a3 = _mm512_fmadd_ps(wt, _mm512_loadu_ps(src + 48), a3);
			}
			y0 = _mm512_add_ps(a0, y0);
			y1 = _mm512_add_ps(a1, y1);
			y2 = _mm512_add_ps(a2, y2);
			y3 = _mm512_add_ps(a3, y3);
		}
		if (relu) {
			y0 = _mm512_max_ps(y0, z);
			y1 = _mm512_max_ps(y1, z);
			y2 = _mm512_max_ps(y2, z);
			y3 = _mm512_max_ps(y3, z);
		}
		_mm512_storeu_ps(out + g0, y0);
		_mm512_storeu_ps(out + g0 + 16, y1);
		_mm512_storeu_ps(out + g0 + 32, y2);
		_mm512_storeu_ps(out + g0 + 48, y3);
	}
	for (; g0 < Gv; g0 += 16) {
		__m512 y0 = vb;

		for (int t0 = 0; t0 < kk; t0 += KC) {
			int t1 = kk - t0 < KC ? kk : t0 + KC;
			__m512 a0 = z;

			for (int t = t0; t < t1; t++)
				a0 = _mm512_fmadd_ps(_mm512_set1_ps(w[t]),
						     _mm512_loadu_ps(pl + off[t] + g0), a0);
			y0 = _mm512_add_ps(a0, y0);
		}
		if (relu)
			y0 = _mm512_max_ps(y0, z);
		_mm512_storeu_ps(out + g0, y0);
	}
}

__attribute__((target("avx2,fma"))) static void grid_avx2(int kk, const float *w, float bias,
							   int relu, const float *pl,
							   const size_t *off, size_t Gv, float *out)
{
	const __m256 vb = _mm256_set1_ps(bias), z = _mm256_setzero_ps();
	size_t g0 = 0;

	for (; g0 + 32 <= Gv; g0 += 32) {
		__m256 y0 = vb, y1 = vb, y2 = vb, y3 = vb;

		for (int t0 = 0; t0 < kk; t0 += KC) {
			int t1 = kk - t0 < KC ? kk : t0 + KC;
			__m256 a0 = z, a1 = z, a2 = z, a3 = z;

			for (int t = t0; t < t1; t++) {
				const float *src = pl + off[t] + g0;
				__m256 wt = _mm256_set1_ps(w[t]);

				a0 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(src), a0);
				a1 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(src + 8), a1);
				a2 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(src + 16), a2);
				a3 = _mm256_fmadd_ps(wt, _mm256_loadu_ps(src + 24), a3);
			}
			y0 = _mm256_add_ps(a0, y0);
			y1 = _mm256_add_ps(a1, y1);
			y2 = _mm256_add_ps(a2, y2);
			y3 = _mm256_add_ps(a3, y3);
		}
		if (relu) {
			y0 = _mm256_max_ps(y0, z);
			y1 = _mm256_max_ps(y1, z);
			y2 = _mm256_max_ps(y2, z);
			y3 = _mm256_max_ps(y3, z);
		}
		_mm256_storeu_ps(out + g0, y0);
		_mm256_storeu_ps(out + g0 + 8, y1);
		_mm256_storeu_ps(out + g0 + 16, y2);
		_mm256_storeu_ps(out + g0 + 24, y3);
	}
	for (; g0 < Gv; g0 += 8) {
		__m256 y0 = vb;

		for (int t0 = 0; t0 < kk; t0 += KC) {
			int t1 = kk - t0 < KC ? kk : t0 + KC;
			__m256 a0 = z;

			for (int t = t0; t < t1; t++)
				a0 = _mm256_fmadd_ps(_mm256_set1_ps(w[t]),
						     _mm256_loadu_ps(pl + off[t] + g0), a0);
			y0 = _mm256_add_ps(a0, y0);
		}
		if (relu)
			y0 = _mm256_max_ps(y0, z);
		_mm256_storeu_ps(out + g0, y0);
	}
}
#endif

/* The path of the f32 GEMM's kernel (MCOMP_GEMM forces both); plain C for any other name. */
static grid_fn grid_path(void)
{
	const char *name = mc_sgemm_kernel();

#if defined(__x86_64__)
	if (!strcmp(name, "avx512"))
		return grid_avx512;
	if (!strcmp(name, "avx2"))
		return grid_avx2;
#endif
	return grid_portable;
}

/* One (sample, channel) item: y[OH][OW] from x[H][W]. */
static void item(const struct mc_dwconv *d, const struct dw_geo *g, grid_fn fn, const float *x,
		 const float *w, float bias, int relu, const size_t *off, float *slot, float *y)
{
	float *out = slot + g->ps * d->s * d->s;

	planes(d, g, x, slot);
	fn(d->k * d->k, w, bias, relu, slot, off, g->Gv, out);
	for (int oh = 0; oh < d->OH; oh++)
		memcpy(y + (size_t)oh * d->OW, out + (size_t)oh * g->WJ,
		       (size_t)d->OW * sizeof(float));
}

void mc_dwconv_forward(const struct mc_dwconv *d, int n, const float *x, const float *w,
		       const float *b, int relu, float *y, void *work)
{
	const int kk = d->k * d->k, C = d->C;
	const size_t xs = (size_t)d->H * d->W, ys = (size_t)d->OH * d->OW;
	size_t *off = work;
	float *slots = (float *)((char *)work + up((size_t)kk * sizeof(size_t), 64));
	grid_fn fn = grid_path();
	struct dw_geo g;
	int64_t items = (int64_t)n * C;
	double macs = (double)items * ys * kk;
	int nt = omp_in_parallel() || macs < PAR_MIN ? 1 : omp_get_max_threads();

	if (n < 1 || dw_geo(d, &g))
		return;
	if (nt > SLOTS)
		nt = SLOTS;
	if (nt > items)
		nt = (int)items;
	for (int ki = 0; ki < d->k; ki++)
		for (int kj = 0; kj < d->k; kj++)
			off[ki * d->k + kj] = (size_t)((ki % d->s) * d->s + kj % d->s) * g.ps +
					      (size_t)(ki / d->s) * g.WJ + (size_t)(kj / d->s);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		float *slot = slots + (size_t)omp_get_thread_num() * g.slot;

#pragma omp for schedule(static)
		for (int64_t i = 0; i < items; i++) {
			int c = (int)(i % C);

			item(d, &g, fn, x + (size_t)i * xs, w + (size_t)c * kk, b ? b[c] : 0.0f,
			     relu, off, slot, y + (size_t)i * ys);
		}
	}
}

void mc_dwconv_forward_ref(const struct mc_dwconv *d, int n, const float *x, const float *w,
			   const float *b, int relu, float *y)
{
	const int k = d->k, kk = k * k;

	for (int64_t i = 0; i < (int64_t)n * d->C; i++) {
		int c = (int)(i % d->C);
		const float *xc = x + (size_t)i * d->H * d->W, *wc = w + (size_t)c * kk;
		float *yc = y + (size_t)i * d->OH * d->OW;

		for (int oh = 0; oh < d->OH; oh++)
			for (int ow = 0; ow < d->OW; ow++) {
				float v = b ? b[c] : 0.0f;

				for (int t0 = 0; t0 < kk; t0 += KC) {
					int t1 = kk - t0 < KC ? kk : t0 + KC;
					float acc = 0.0f;

					for (int t = t0; t < t1; t++) {
						int h = oh * d->s - d->p + t / k;
						int col = ow * d->s - d->p + t % k;
						float xv = h >= 0 && h < d->H && col >= 0 && col < d->W
								   ? xc[(size_t)h * d->W + col]
								   : 0.0f;

						acc = __builtin_fmaf(wc[t], xv, acc);
					}
					v = acc + v;
				}
				yc[(size_t)oh * d->OW + ow] = relu ? (v > 0.0f ? v : 0.0f) : v;
			}
	}
}
