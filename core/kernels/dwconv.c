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

#include "kernels/conv.h"
#include "kernels/dwconv.h"

#define KC	256 /* taps a slice: the f32 GEMM's depth of a K slice (gemm.c KC) */
#define SLOTS	16  /* at most this many threads, each with a slot of the workspace */
#define PAR_MIN 1e6 /* multiply-adds below which one thread is faster than a team */
#define VW	16  /* grid positions are computed in vectors of up to VW */

#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && defined(__ELF__) &&         \
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
			float acc[VW] = {0};

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
							   const size_t *off, size_t Gv, float *out)
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

/*
 * planes() for stride 1 and 2 on AVX-512: each plane row 16 columns at a
 * time, the image's values masked in (padding as zeros, nothing read
 * outside the row), stride 2 as two loads of 32 columns and their even
 * lanes. The same values as planes().
 */
__attribute__((target("avx512f"))) static void planes_avx512(const struct mc_dwconv *d,
							     const struct dw_geo *g,
							     const float *x, float *pl)
{
	const int s = d->s, p = d->p, W = d->W, WJ = g->WJ;
	const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26,
					       28, 30);
	const __m512 z = _mm512_setzero_ps();

	for (int ri = 0; ri < s; ri++)
		for (int rj = 0; rj < s; rj++) {
			float *dst = pl + (size_t)(ri * s + rj) * g->ps;

			for (int a = 0; a < g->RJ; a++, dst += WJ) {
				int h = a * s + ri - p;
				const float *src = x + (int64_t)h * W;

				for (int b0 = 0; b0 < WJ; b0 += 16) {
					int nb = WJ - b0 < 16 ? WJ - b0 : 16;
					__mmask16 sm = (__mmask16)((1u << nb) - 1);
					/* lanes t of the source run whose column c0 + t is in [0, W) */
					int c0 = b0 * s + rj - p, L = 16 * s;
					int tlo = c0 < 0 ? -c0 : 0, thi = W - c0 < L ? W - c0 : L;
					uint32_t m = 0;
					__m512 v;

					if (h >= 0 && h < d->H && thi > tlo)
						m = (uint32_t)(((uint64_t)1 << thi) - ((uint64_t)1 << tlo));
					if (s == 1) {
						v = _mm512_maskz_loadu_ps((__mmask16)m, src + c0);
					} else {
						__m512 lo = _mm512_maskz_loadu_ps((__mmask16)m, src + c0);
						__m512 hi = _mm512_maskz_loadu_ps((__mmask16)(m >> 16),
										  src + c0 + 16);

						v = _mm512_permutex2var_ps(lo, even, hi);
					}
					_mm512_mask_storeu_ps(dst + b0, sm, v);
				}
			}
			/* the slack the last vectors read */
			for (size_t i = (size_t)g->RJ * WJ; i < g->ps; i += 16) {
				size_t left = g->ps - i;

				_mm512_mask_storeu_ps(dst + (i - (size_t)g->RJ * WJ),
						      left >= 16 ? 0xffff
								 : (__mmask16)((1u << left) - 1),
						      z);
			}
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

/*
 * One (sample, channel c) item: y[OH][OW] from x[H][W], then post (may be
 * NULL) over each row as it is copied out of the grid, res the item's
 * residual [OH][OW].
 */
static void item(const struct mc_dwconv *d, const struct dw_geo *g, grid_fn fn, const float *x,
		 const float *w, float bias, int relu, const size_t *off, float *slot, float *y,
		 int c, const struct mc_conv_post *post, mc_conv_post_fn pfn, const float *res)
{
	float *out = slot + g->ps * d->s * d->s;

#if defined(__x86_64__)
	if (fn == grid_avx512 && d->s <= 2)
		planes_avx512(d, g, x, slot);
	else
#endif
		planes(d, g, x, slot);
	fn(d->k * d->k, w, bias, relu, slot, off, g->Gv, out);
	if (post && g->WJ == d->OW) {
		pfn(post, c, out, res, y, (int64_t)d->OH * d->OW);
	} else if (post && post->add) {
		for (int oh = 0; oh < d->OH; oh++)
			pfn(post, c, out + (size_t)oh * g->WJ, res + (size_t)oh * d->OW,
			    y + (size_t)oh * d->OW, d->OW);
	} else if (post) {
		/* the whole grid in place (long vectors), then its real columns out */
		pfn(post, c, out, NULL, out, (int64_t)g->G);
		for (int oh = 0; oh < d->OH; oh++)
			memcpy(y + (size_t)oh * d->OW, out + (size_t)oh * g->WJ,
			       (size_t)d->OW * sizeof(float));
	} else
		for (int oh = 0; oh < d->OH; oh++)
			memcpy(y + (size_t)oh * d->OW, out + (size_t)oh * g->WJ,
			       (size_t)d->OW * sizeof(float));
}

void mc_dwconv_forward(const struct mc_dwconv *d, int n, const float *x, const float *w,
		       const float *b, int relu, float *y, void *work)
{
	mc_dwconv_forward_post(d, n, x, w, b, relu, NULL, NULL, y, work);
}

void mc_dwconv_forward_post(const struct mc_dwconv *d, int n, const float *x, const float *w,
			    const float *b, int relu, const struct mc_conv_post *post,
			    const float *res, float *y, void *work)
{
	const int kk = d->k * d->k, C = d->C;
	const size_t xs = (size_t)d->H * d->W, ys = (size_t)d->OH * d->OW;
	size_t *off = work;
	float *slots = (float *)((char *)work + up((size_t)kk * sizeof(size_t), 64));
	grid_fn fn = grid_path();
	mc_conv_post_fn pfn = mc_conv_post_path();
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
			     relu, off, slot, y + (size_t)i * ys, c, post, pfn,
			     post && post->add ? res + (size_t)i * ys : NULL);
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
						float xv =
						    h >= 0 && h < d->H && col >= 0 && col < d->W
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

/* ---------------------------------------------------------------- backward */

#define GROUP MC_DWCONV_GROUP

/*
 * The input gradient goes by rows h of dx and column phases rj (w = j*s + rj):
 * for one (h, rj) the taps that reach it and their window column offsets
 * are the same for every j, so a vector of j reads dy contiguously from a
 * copy of it with L zero columns on the left and slack on the right. A
 * window column outside the output reads a zero there, and w * 0 + acc is
 * acc for a finite weight: a channel with a weight that is not finite goes
 * through the scalar loop, which skips those taps as col2im does.
 */
struct bw_geo {
	struct dw_geo f;
	int L, J, Jv; /* left margin of the dy copy; columns of the widest phase, rounded up */
	size_t dyw;   /* floats of a row of the dy copy */
	size_t slot;  /* floats of a slot: the x planes (dW), or the dy copy and s rows of dx */
	size_t parts; /* floats of the groups' dW and db parts */
};

static int bw_geo(const struct mc_dwconv *d, int n, struct bw_geo *g)
{
	size_t kk = (size_t)d->k * d->k, ng = ((size_t)(n < 1 ? 1 : n) + GROUP - 1) / GROUP;
	size_t sw, sx, wide;

	if (dw_geo(d, &g->f))
		return -1;
	g->L = (d->k - 1) / d->s + 1;
	g->J = (d->W + d->s - 1) / d->s;
	g->Jv = (int)up((size_t)g->J, VW);
	wide = (size_t)(g->Jv > d->OW ? g->Jv : d->OW);
	g->dyw = up((size_t)g->L + wide + (size_t)(d->s - 1 + d->p) / d->s + 1, VW);
	sw = g->f.ps * d->s * d->s + up(kk, VW);
	if ((size_t)d->OH > SIZE_MAX / 64 / g->dyw)
		return -1;
	sx = (size_t)d->OH * g->dyw + (size_t)d->s * g->Jv;
	g->slot = up(sw > sx ? sw : sx, VW);
	if (kk + 1 > SIZE_MAX / 64 / ng / (size_t)d->C)
		return -1;
	g->parts = up(ng * d->C * (kk + 1), VW);
	return 0;
}

size_t mc_dwconv_bwd_work(const struct mc_dwconv *d, int n)
{
	struct bw_geo g;
	size_t kk = (size_t)d->k * d->k, total;

	if (bw_geo(d, n, &g))
		return SIZE_MAX;
	if (__builtin_mul_overflow(g.slot, (size_t)SLOTS, &total) ||
	    __builtin_add_overflow(total, g.parts, &total) ||
	    __builtin_mul_overflow(total, sizeof(float), &total) ||
	    __builtin_add_overflow(total, up(kk * sizeof(size_t), 64), &total))
		return SIZE_MAX;
	return total;
}

/* a floored division and its remainder for a possibly negative numerator */
static int fdiv(int a, int s)
{
	return a >= 0 ? a / s : -((-a + s - 1) / s);
}

/* One channel of one sample's dx[H][W] from dy[OH][OW], as col2im sums dcol = fma(w, dy, 0). */
static void dx_item_ref(const struct mc_dwconv *d, const float *w, const float *dy, float *dx)
{
	const int k = d->k, s = d->s;

	for (int h = 0; h < d->H; h++)
		for (int x = 0; x < d->W; x++) {
			float acc = 0.0f;

			for (int t = 0; t < k * k; t++) {
				int nh = h + d->p - t / k, nw = x + d->p - t % k;

				if (nh < 0 || nw < 0 || nh % s || nw % s || nh / s >= d->OH ||
				    nw / s >= d->OW)
					continue;
				acc = acc + __builtin_fmaf(
						w[t], dy[(size_t)(nh / s) * d->OW + nw / s], 0.0f);
			}
			dx[(size_t)h * d->W + x] = acc;
		}
}

/*
 * acc[0..Jv) += wt * src[0..Jv) (a rounded product, then the add), for one
 * tap; vectors do it lane by lane with the same two roundings.
 */
typedef void (*axpy_fn)(int Jv, float wt, const float *src, float *acc);

PORTABLE_CLONES static void axpy_portable(int Jv, float wt, const float *src, float *acc)
{
	for (int j = 0; j < Jv; j++)
		acc[j] = acc[j] + wt * src[j];
}

#if defined(__x86_64__)
__attribute__((target("avx512f"))) static void axpy_avx512(int Jv, float wt, const float *src,
							   float *acc)
{
	const __m512 v = _mm512_set1_ps(wt);

	for (int j = 0; j < Jv; j += 16)
		_mm512_storeu_ps(acc + j,
				 _mm512_add_ps(_mm512_loadu_ps(acc + j),
					       _mm512_mul_ps(v, _mm512_loadu_ps(src + j))));
}

__attribute__((target("avx2"))) static void axpy_avx2(int Jv, float wt, const float *src,
						      float *acc)
{
	const __m256 v = _mm256_set1_ps(wt);

	for (int j = 0; j < Jv; j += 8)
		_mm256_storeu_ps(acc + j,
				 _mm256_add_ps(_mm256_loadu_ps(acc + j),
					       _mm256_mul_ps(v, _mm256_loadu_ps(src + j))));
}
#endif

static axpy_fn axpy_path(void)
{
	const char *name = mc_sgemm_kernel();

#if defined(__x86_64__)
	if (!strcmp(name, "avx512"))
		return axpy_avx512;
	if (!strcmp(name, "avx2"))
		return axpy_avx2;
#endif
	return axpy_portable;
}

static int finite_all(const float *w, int n)
{
	for (int i = 0; i < n; i++)
		if (!__builtin_isfinite(w[i]))
			return 0;
	return 1;
}

/* One channel of one sample's dx, vectorized over the columns of a phase. */
static void dx_item(const struct mc_dwconv *d, const struct bw_geo *g, axpy_fn axpy, const float *w,
		    const float *dy, float *slot, float *dx)
{
	const int k = d->k, s = d->s;
	float *dyp = slot, *acc = slot + (size_t)d->OH * g->dyw;

	if (!finite_all(w, k * k)) {
		dx_item_ref(d, w, dy, dx);
		return;
	}
	for (int oh = 0; oh < d->OH; oh++) {
		float *row = dyp + (size_t)oh * g->dyw;

		memset(row, 0, (size_t)g->L * sizeof(float));
		memcpy(row + g->L, dy + (size_t)oh * d->OW, (size_t)d->OW * sizeof(float));
		memset(row + g->L + d->OW, 0, (g->dyw - g->L - d->OW) * sizeof(float));
	}
	for (int h = 0; h < d->H; h++)
		for (int rj = 0; rj < s && rj < d->W; rj++) {
			int J = (d->W - rj + s - 1) / s;
			float *out = dx + (size_t)h * d->W + rj;

			memset(acc, 0, (size_t)g->Jv * sizeof(float));
			for (int ki = 0; ki < k; ki++) {
				int nh = h + d->p - ki;

				if (nh < 0 || nh % s || nh / s >= d->OH)
					continue;
				for (int kj = 0; kj < k; kj++) {
					int nw = rj + d->p - kj, q = fdiv(nw, s);

					if (nw - q * s)
						continue;
					axpy(g->Jv, w[ki * k + kj],
					     dyp + (size_t)(nh / s) * g->dyw + g->L + q, acc);
				}
			}
			if (s == 1)
				memcpy(out, acc, (size_t)J * sizeof(float));
			else
				for (int j = 0; j < J; j++)
					out[(size_t)j * s] = acc[j];
		}
}

/* x(t, p) of one channel: the tap t of output position p, 0 in the padding. */
static float tap_ref(const struct mc_dwconv *d, const float *x, int t, int64_t p)
{
	int oh = (int)(p / d->OW), ow = (int)(p % d->OW);
	int h = oh * d->s - d->p + t / d->k, c = ow * d->s - d->p + t % d->k;

	return h >= 0 && h < d->H && c >= 0 && c < d->W ? x[(size_t)h * d->W + c] : 0.0f;
}

/* Group gi's parts of channel c: pw[k*k] and *pb. */
static void dw_item_ref(const struct mc_dwconv *d, int n, int gi, int c, const float *x,
			const float *dy, float *pw, float *pb)
{
	const int kk = d->k * d->k, s0 = gi * GROUP, m = n - s0 < GROUP ? n - s0 : GROUP;
	const int64_t P = (int64_t)d->OH * d->OW;

	for (int i = 0; i < m; i++) {
		const float *xi = x + ((size_t)(s0 + i) * d->C + c) * d->H * d->W;
		const float *dyi = dy + ((size_t)(s0 + i) * d->C + c) * P;

		if (pb)
			for (int64_t p = 0; p < P; p++)
				*pb = i == 0 && p == 0 ? dyi[p] : *pb + dyi[p];
		if (pw)
			for (int t = 0; t < kk; t++)
				for (int64_t p0 = 0; p0 < P; p0 += KC) {
					int64_t p1 = P - p0 < KC ? P : p0 + KC;
					float acc = 0.0f;

					for (int64_t p = p0; p < p1; p++)
						acc = __builtin_fmaf(tap_ref(d, xi, t, p), dyi[p],
								     acc);
					pw[t] = i == 0 && p0 == 0 ? acc : acc + pw[t];
				}
	}
}

/*
 * acc[t] = fma chain from +0 over positions p in [p0, p1) of x(t, p) * dy[p],
 * x(t, p) read from the phase planes pl at off[t] + the grid position of p;
 * the taps' chains side by side, each one in order. Scalar FMAs on every
 * path (built for each so that fmaf is one instruction).
 */
typedef void (*chain_fn)(int kk, int OW, int WJ, int64_t p0, int64_t p1, const float *pl,
			 const size_t *off, const float *dy, float *acc);

#define CHAIN_BODY                                                                                 \
	do {                                                                                       \
		for (int t = 0; t < kk; t++)                                                       \
			acc[t] = 0.0f;                                                             \
		for (int64_t p = p0; p < p1; p++) {                                                \
			const float *at = pl + (size_t)(p / OW) * WJ + p % OW;                     \
			float v = dy[p];                                                           \
			for (int t = 0; t < kk; t++)                                               \
				acc[t] = __builtin_fmaf(at[off[t]], v, acc[t]);                    \
		}                                                                                  \
	} while (0)

PORTABLE_CLONES static void chain_portable(int kk, int OW, int WJ, int64_t p0, int64_t p1,
					   const float *pl, const size_t *off, const float *dy,
					   float *acc)
{
	CHAIN_BODY;
}

#if defined(__x86_64__)
__attribute__((target("avx512f,fma"))) static void chain_avx512(int kk, int OW, int WJ, int64_t p0,
								int64_t p1, const float *pl,
								const size_t *off, const float *dy,
								float *acc)
{
	CHAIN_BODY;
}

__attribute__((target("avx2,fma"))) static void chain_avx2(int kk, int OW, int WJ, int64_t p0,
							   int64_t p1, const float *pl,
							   const size_t *off, const float *dy,
							   float *acc)
{
	CHAIN_BODY;
}
#endif

static chain_fn chain_path(void)
{
	const char *name = mc_sgemm_kernel();

#if defined(__x86_64__)
	if (!strcmp(name, "avx512"))
		return chain_avx512;
	if (!strcmp(name, "avx2"))
		return chain_avx2;
#endif
	return chain_portable;
}

/* The same from the phase planes of each sample (dw_geo). */
static void dw_item(const struct mc_dwconv *d, const struct dw_geo *g, chain_fn chain, int n,
		    int gi, int c, const float *x, const float *dy, const size_t *off, float *slot,
		    float *pw, float *pb)
{
	const int kk = d->k * d->k, s0 = gi * GROUP, m = n - s0 < GROUP ? n - s0 : GROUP;
	const int64_t P = (int64_t)d->OH * d->OW;
	float *acc = slot + g->ps * d->s * d->s;

	for (int i = 0; i < m; i++) {
		const float *xi = x + ((size_t)(s0 + i) * d->C + c) * d->H * d->W;
		const float *dyi = dy + ((size_t)(s0 + i) * d->C + c) * P;

		if (pb)
			for (int64_t p = 0; p < P; p++)
				*pb = i == 0 && p == 0 ? dyi[p] : *pb + dyi[p];
		if (!pw)
			continue;
		planes(d, g, xi, slot);
		for (int64_t p0 = 0; p0 < P; p0 += KC) {
			int64_t p1 = P - p0 < KC ? P : p0 + KC;

			chain(kk, d->OW, g->WJ, p0, p1, slot, off, dyi, acc);
			for (int t = 0; t < kk; t++)
				pw[t] = i == 0 && p0 == 0 ? acc[t] : acc[t] + pw[t];
		}
	}
}

/* dw[c][t] += the groups' parts in order, db[c] the same. */
static void add_parts(const struct mc_dwconv *d, int ng, const float *pw, const float *pb,
		      float *dw, float *db)
{
	const int kk = d->k * d->k, C = d->C;

	for (int c = 0; c < C; c++) {
		if (db) {
			float acc = pb[c];

			for (int t = 1; t < ng; t++)
				acc += pb[(size_t)t * C + c];
			db[c] += acc;
		}
		if (dw)
			for (int tap = 0; tap < kk; tap++) {
				float acc = pw[(size_t)c * kk + tap];

				for (int t = 1; t < ng; t++)
					acc += pw[((size_t)t * C + c) * kk + tap];
				dw[(size_t)c * kk + tap] += acc;
			}
	}
}

void mc_dwconv_backward_ref(const struct mc_dwconv *d, int n, const float *x, const float *w,
			    const float *dy, float *dx, float *dw, float *db)
{
	const int kk = d->k * d->k, C = d->C, ng = (n + GROUP - 1) / GROUP;
	const size_t xs = (size_t)d->H * d->W, ys = (size_t)d->OH * d->OW;
	float *pw, *pb;

	if (n < 1)
		return;
	if (dx)
		for (int64_t i = 0; i < (int64_t)n * C; i++)
			dx_item_ref(d, w + (size_t)(i % C) * kk, dy + (size_t)i * ys,
				    dx + (size_t)i * xs);
	if (!dw && !db)
		return;
	pw = malloc((size_t)ng * C * kk * sizeof(float));
	pb = malloc((size_t)ng * C * sizeof(float));
	if (pw && pb) {
		for (int gi = 0; gi < ng; gi++)
			for (int c = 0; c < C; c++)
				dw_item_ref(d, n, gi, c, x, dy,
					    dw ? pw + ((size_t)gi * C + c) * kk : NULL,
					    db ? pb + (size_t)gi * C + c : NULL);
		add_parts(d, ng, pw, pb, dw, db);
	}
	free(pb);
	free(pw);
}

void mc_dwconv_backward(const struct mc_dwconv *d, int n, const float *x, const float *w,
			const float *dy, float *dx, float *dw, float *db, void *work)
{
	const int kk = d->k * d->k, C = d->C, ng = (n + GROUP - 1) / GROUP;
	const size_t xs = (size_t)d->H * d->W, ys = (size_t)d->OH * d->OW;
	size_t *off = work;
	float *slots = (float *)((char *)work + up((size_t)kk * sizeof(size_t), 64)), *pw, *pb;
	struct bw_geo g;
	axpy_fn axpy = axpy_path();
	chain_fn chain = chain_path();
	int64_t items = (int64_t)n * C, witems = (int64_t)ng * C;
	double macs = (double)items * ys * kk;
	int nt = omp_in_parallel() || macs < PAR_MIN ? 1 : omp_get_max_threads();

	if (n < 1 || bw_geo(d, n, &g))
		return;
	if (nt > SLOTS)
		nt = SLOTS;
	pw = slots + (size_t)SLOTS * g.slot;
	pb = pw + (size_t)ng * C * kk;
	for (int ki = 0; ki < d->k; ki++)
		for (int kj = 0; kj < d->k; kj++)
			off[ki * d->k + kj] = (size_t)((ki % d->s) * d->s + kj % d->s) * g.f.ps +
					      (size_t)(ki / d->s) * g.f.WJ + (size_t)(kj / d->s);
#pragma omp parallel num_threads(nt) if (nt > 1)
	{
		float *slot = slots + (size_t)omp_get_thread_num() * g.slot;

		if (dx) {
#pragma omp for schedule(static)
			for (int64_t i = 0; i < items; i++)
				dx_item(d, &g, axpy, w + (size_t)(i % C) * kk, dy + (size_t)i * ys,
					slot, dx + (size_t)i * xs);
		}
		if (dw || db) {
#pragma omp for schedule(static)
			for (int64_t i = 0; i < witems; i++)
				dw_item(d, &g.f, chain, n, (int)(i / C), (int)(i % C), x, dy, off,
					slot, dw ? pw + (size_t)i * kk : NULL, db ? pb + i : NULL);
		}
	}
	if (dw || db)
		add_parts(d, ng, pw, pb, dw, db);
}
