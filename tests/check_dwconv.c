/* SPDX-License-Identifier: MIT */
/*
 * check_dwconv.c - the depthwise convolution kernels (core/kernels/dwconv.h)
 * against the per-sample GEMM path conv2d ran depthwise layers on before
 * them (im2col of a sample, bias prefilled, one mc_sgemm per channel with
 * beta 1: rebuilt here as it was), bit for bit, on every path this CPU can
 * run (forced as MCOMP_GEMM does), for 1, 2 and 3 threads, over strides 1
 * and 2, padding 0 to 2, kernels 1 to 17 (a deep one: two K slices), odd
 * sizes, channel counts off every vector width, batches of 1 and more, and
 * non-finite weights and inputs; forward (with and without the relu the
 * executor fuses) and backward (dx, dW, db, each alone too); and conv2d
 * nodes with groups = channels giving the same bytes through the executor.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/mcomp.h>

#include "kernels/dwconv.h"

static const char *const paths[] = {"avx512", "avx2", "portable"};
#define NPATHS (int)(sizeof(paths) / sizeof(paths[0]))

static float *random_f32(size_t n, uint64_t stream)
{
	float *x = malloc((n ? n : 1) * sizeof(float));

	for (size_t i = 0; i < n; i++)
		x[i] = -1.0f + 2.0f * mc_rand_uniform(31, stream, i);
	return x;
}

struct shape {
	int n, C, H, W, k, s, p;
};

static const struct shape shapes[] = {
    {1, 1, 5, 5, 3, 1, 0},
    {3, 3, 7, 9, 3, 1, 1},
    {2, 17, 13, 11, 3, 2, 1},
    {4, 5, 9, 8, 5, 2, 2},
    {1, 33, 28, 28, 3, 1, 1},
    {2, 7, 14, 14, 3, 2, 1},
    {5, 6, 7, 7, 3, 1, 1},
    {2, 9, 12, 10, 5, 1, 2},
    {3, 4, 6, 6, 1, 1, 0},
    {2, 3, 4, 4, 3, 2, 0},
    {1, 2, 20, 19, 17, 1, 2},
    {2, 3, 21, 21, 4, 3, 1},
    /* stride 1 and 2 rows of more than one vector of 16 (AVX-512 planes), odd widths */
    {2, 3, 40, 45, 3, 2, 1}, {1, 2, 37, 35, 3, 1, 1}, {2, 2, 33, 34, 5, 2, 2},
    /* big enough for a team of threads */
    {8, 24, 28, 28, 3, 1, 1},
    {16, 48, 14, 14, 3, 2, 1},
    {9, 19, 15, 15, 5, 1, 2},
};
#define NSHAPES (int)(sizeof(shapes) / sizeof(shapes[0]))

static struct mc_dwconv make(const struct shape *sh)
{
	struct mc_dwconv d = {
	    .C = sh->C, .H = sh->H, .W = sh->W, .k = sh->k, .s = sh->s, .p = sh->p};

	d.OH = (sh->H + 2 * sh->p - sh->k) / sh->s + 1;
	d.OW = (sh->W + 2 * sh->p - sh->k) / sh->s + 1;
	return d;
}

/*
 * What conv2d computed for groups = channels before the depthwise kernels:
 * per sample, col[C*k*k][P] = im2col (taps in the padding 0), y = bias (0
 * without) in every position, then per channel c the GEMM of W^T (k*k x 1,
 * lda 1) and its k*k rows of col, alpha 1, beta 1; relu as a select after.
 */
static void old_path(const struct mc_dwconv *d, int n, const float *x, const float *w,
		     const float *b, int relu, float *y)
{
	const int k = d->k, kk = k * k, P = d->OH * d->OW;
	float *col = malloc((size_t)d->C * kk * P * sizeof(float));

	for (int s = 0; s < n; s++) {
		const float *xs = x + (size_t)s * d->C * d->H * d->W;
		float *ys = y + (size_t)s * d->C * P;

		for (int c = 0; c < d->C; c++)
			for (int t = 0; t < kk; t++)
				for (int oh = 0; oh < d->OH; oh++)
					for (int ow = 0; ow < d->OW; ow++) {
						int h = oh * d->s - d->p + t / k;
						int wc = ow * d->s - d->p + t % k;

						col[((size_t)c * kk + t) * P + oh * d->OW + ow] =
						    h >= 0 && h < d->H && wc >= 0 && wc < d->W
							? xs[((size_t)c * d->H + h) * d->W + wc]
							: 0.0f;
					}
		for (int c = 0; c < d->C; c++)
			for (int i = 0; i < P; i++)
				ys[(size_t)c * P + i] = b ? b[c] : 0.0f;
		for (int c = 0; c < d->C; c++)
			mc_sgemm(1, 0, 1, P, kk, 1.0f, w + (size_t)c * kk, 1,
				 col + (size_t)c * kk * P, P, 1.0f, ys + (size_t)c * P, P);
		if (relu)
			for (size_t i = 0; i < (size_t)d->C * P; i++)
				ys[i] = ys[i] > 0.0f ? ys[i] : 0.0f;
	}
	free(col);
}

/* The first index where a and b differ in bits, or -1. */
static long first_diff(const float *a, const float *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (memcmp(a + i, b + i, sizeof(float)))
			return (long)i;
	return -1;
}

static void check_shape(const struct shape *sh, int si, int nonfinite)
{
	struct mc_dwconv d = make(sh);
	size_t kk = (size_t)d.k * d.k, nx = (size_t)sh->n * d.C * d.H * d.W;
	size_t ny = (size_t)sh->n * d.C * d.OH * d.OW;
	float *x = random_f32(nx, 1 + si), *w = random_f32((size_t)d.C * kk, 100 + si);
	float *b = random_f32((size_t)d.C, 200 + si);
	float *ref = malloc(ny * sizeof(float)), *old = malloc(ny * sizeof(float));
	float *y = malloc(ny * sizeof(float));
	size_t wb = mc_dwconv_work(&d);
	void *work;

	ck_assert(wb != SIZE_MAX);
	work = aligned_alloc(64, (wb + 63) & ~(size_t)63);
	if (nonfinite) {
		/* an inf weight makes the padding taps NaN (inf * 0): they must be there */
		w[0] = INFINITY;
		w[kk * (d.C - 1) + kk - 1] = -INFINITY;
		x[nx / 2] = NAN;
		x[nx / 3] = INFINITY;
	}
	for (int relu = 0; relu < 2; relu++)
		for (int hb = 0; hb < 2; hb++) {
			mc_dwconv_forward_ref(&d, sh->n, x, w, hb ? b : NULL, relu, ref);
			for (int pi = 0; pi < NPATHS; pi++) {
				long at;

				if (mc_sgemm_use(paths[pi]))
					continue;
				omp_set_num_threads(1 + pi % 2);
				old_path(&d, sh->n, x, w, hb ? b : NULL, relu, old);
				at = first_diff(ref, old, ny);
				ck_assert_msg(
				    at < 0,
				    "shape %d (nonfinite %d) relu %d bias %d path %s: ref "
				    "%a, old path %a at %ld",
				    si, nonfinite, relu, hb, paths[pi], ref[at], old[at], at);
				for (int t = 1; t <= 3; t++) {
					omp_set_num_threads(t);
					memset(y, 0x55, ny * sizeof(float));
					mc_dwconv_forward(&d, sh->n, x, w, hb ? b : NULL, relu, y,
							  work);
					at = first_diff(ref, y, ny);
					ck_assert_msg(
					    at < 0,
					    "shape %d (nonfinite %d) relu %d bias %d path %s "
					    "threads %d: ref %a, kernel %a at %ld",
					    si, nonfinite, relu, hb, paths[pi], t, ref[at], y[at],
					    at);
				}
			}
		}
	free(work);
	free(y);
	free(old);
	free(ref);
	free(b);
	free(w);
	free(x);
}

START_TEST(forward_matches_old_path)
{
	const char *saved = mc_sgemm_kernel();

	for (int si = 0; si < NSHAPES; si++)
		check_shape(&shapes[si], si, 0);
	omp_set_num_threads(2);
	mc_sgemm_use(saved);
}
END_TEST

START_TEST(forward_nonfinite_matches_old_path)
{
	const char *saved = mc_sgemm_kernel();

	for (int si = 0; si < NSHAPES; si++)
		if (shapes[si].p > 0)
			check_shape(&shapes[si], si, 1);
	omp_set_num_threads(2);
	mc_sgemm_use(saved);
}
END_TEST

/*
 * What conv2d's backward computed for groups = channels before: per group of
 * 8 samples, per sample in order, dY^T and the windows colT[P][C*k*k], then
 * per channel dW^T part = GEMM(colT^T, dY^T) with beta 0 for the group's
 * first sample and 1 after, db part = dY summed over positions; dcol = W^T
 * dY (a GEMM of depth 1, beta 0) folded back by col2im; then the groups'
 * parts added in order onto dw and db.
 */
static void old_backward(const struct mc_dwconv *d, int n, const float *x, const float *w,
			 const float *dy, float *dx, float *dw, float *db)
{
	const int k = d->k, kk = k * k, C = d->C, P = d->OH * d->OW, ng = (n + 7) / 8;
	const size_t ckk = (size_t)C * kk;
	float *ct = malloc((size_t)P * ckk * sizeof(float)), *dt = malloc((size_t)P * C * 4);
	float *dcol = malloc(ckk * P * sizeof(float));
	float *pw = malloc((size_t)ng * ckk * sizeof(float)), *pb = malloc((size_t)ng * C * 4);

	for (int s = 0; s < n; s++) {
		const float *xs = x + (size_t)s * C * d->H * d->W, *dys = dy + (size_t)s * C * P;
		int gi = s / 8, i = s % 8;

		for (int p = 0; p < P; p++)
			for (int c = 0; c < C; c++)
				dt[(size_t)p * C + c] = dys[(size_t)c * P + p];
		for (int p = 0; p < P; p++)
			for (int c = 0; c < C; c++)
				pb[(size_t)gi * C + c] =
				    i == 0 && p == 0
					? dt[c]
					: pb[(size_t)gi * C + c] + dt[(size_t)p * C + c];
		for (int p = 0; p < P; p++)
			for (size_t r = 0; r < ckk; r++) {
				int c = (int)(r / kk), t = (int)(r % kk);
				int h = p / d->OW * d->s - d->p + t / k;
				int wc = p % d->OW * d->s - d->p + t % k;

				ct[(size_t)p * ckk + r] =
				    h >= 0 && h < d->H && wc >= 0 && wc < d->W
					? xs[((size_t)c * d->H + h) * d->W + wc]
					: 0.0f;
			}
		for (int c = 0; c < C; c++)
			mc_sgemm(1, 0, kk, 1, P, 1.0f, ct + (size_t)c * kk, (int)ckk, dt + c, C,
				 i ? 1.0f : 0.0f, pw + (size_t)gi * ckk + (size_t)c * kk, 1);
		if (!dx)
			continue;
		for (int c = 0; c < C; c++)
			mc_sgemm(1, 0, kk, P, 1, 1.0f, w + (size_t)c * kk, kk, dys + (size_t)c * P,
				 P, 0.0f, dcol + (size_t)c * kk * P, P);
		memset(dx + (size_t)s * C * d->H * d->W, 0, (size_t)C * d->H * d->W * 4);
		for (size_t r = 0; r < ckk; r++)
			for (int p = 0; p < P; p++) {
				int c = (int)(r / kk), t = (int)(r % kk);
				int h = p / d->OW * d->s - d->p + t / k;
				int wc = p % d->OW * d->s - d->p + t % k;

				if (h >= 0 && h < d->H && wc >= 0 && wc < d->W)
					dx[(((size_t)s * C + c) * d->H + h) * d->W + wc] +=
					    dcol[r * P + p];
			}
	}
	for (int c = 0; c < C; c++) {
		float acc = pb[c];

		for (int t = 1; t < ng; t++)
			acc += pb[(size_t)t * C + c];
		db[c] += acc;
		for (int tap = 0; tap < kk; tap++) {
			acc = pw[(size_t)c * kk + tap];
			for (int t = 1; t < ng; t++)
				acc += pw[(size_t)t * ckk + (size_t)c * kk + tap];
			dw[(size_t)c * kk + tap] += acc;
		}
	}
	free(pb);
	free(pw);
	free(dcol);
	free(dt);
	free(ct);
}

static void check_backward(const struct shape *sh, int si, int nonfinite)
{
	struct mc_dwconv d = make(sh);
	size_t kk = (size_t)d.k * d.k, nx = (size_t)sh->n * d.C * d.H * d.W;
	size_t ny = (size_t)sh->n * d.C * d.OH * d.OW, nw = (size_t)d.C * kk;
	float *x = random_f32(nx, 1 + si), *w = random_f32(nw, 100 + si);
	float *dy = random_f32(ny, 300 + si), *dw0 = random_f32(nw, 400 + si);
	float *db0 = random_f32((size_t)d.C, 500 + si);
	float *rdx = malloc(nx * 4), *rdw = malloc(nw * 4), *rdb = malloc((size_t)d.C * 4);
	float *odx = malloc(nx * 4), *odw = malloc(nw * 4), *odb = malloc((size_t)d.C * 4);
	float *kdx = malloc(nx * 4), *kdw = malloc(nw * 4), *kdb = malloc((size_t)d.C * 4);
	size_t wb = mc_dwconv_bwd_work(&d, sh->n);
	void *work;

	ck_assert(wb != SIZE_MAX);
	work = aligned_alloc(64, (wb + 63) & ~(size_t)63);
	if (nonfinite) {
		w[1] = INFINITY;
		w[kk * (d.C - 1)] = NAN;
		dy[ny / 2] = -INFINITY;
		x[nx / 3] = INFINITY;
	}
	memcpy(rdw, dw0, nw * 4);
	memcpy(rdb, db0, (size_t)d.C * 4);
	mc_dwconv_backward_ref(&d, sh->n, x, w, dy, rdx, rdw, rdb);
	for (int pi = 0; pi < NPATHS; pi++) {
		long at;

		if (mc_sgemm_use(paths[pi]))
			continue;
		omp_set_num_threads(1 + pi % 2);
		memcpy(odw, dw0, nw * 4);
		memcpy(odb, db0, (size_t)d.C * 4);
		old_backward(&d, sh->n, x, w, dy, odx, odw, odb);
		at = first_diff(rdx, odx, nx);
		ck_assert_msg(at < 0, "shape %d (nonfinite %d) path %s: dx ref %a, old %a at %ld",
			      si, nonfinite, paths[pi], rdx[at], odx[at], at);
		at = first_diff(rdw, odw, nw);
		ck_assert_msg(at < 0, "shape %d (nonfinite %d) path %s: dw ref %a, old %a at %ld",
			      si, nonfinite, paths[pi], rdw[at], odw[at], at);
		at = first_diff(rdb, odb, (size_t)d.C);
		ck_assert_msg(at < 0, "shape %d (nonfinite %d) path %s: db ref %a, old %a at %ld",
			      si, nonfinite, paths[pi], rdb[at], odb[at], at);
		for (int t = 1; t <= 3; t++) {
			omp_set_num_threads(t);
			memset(kdx, 0x55, nx * 4);
			memcpy(kdw, dw0, nw * 4);
			memcpy(kdb, db0, (size_t)d.C * 4);
			mc_dwconv_backward(&d, sh->n, x, w, dy, kdx, kdw, kdb, work);
			at = first_diff(rdx, kdx, nx);
			ck_assert_msg(at < 0,
				      "shape %d (nonfinite %d) path %s threads %d: dx ref %a, "
				      "kernel %a at %ld",
				      si, nonfinite, paths[pi], t, rdx[at], kdx[at], at);
			at = first_diff(rdw, kdw, nw);
			ck_assert_msg(at < 0,
				      "shape %d (nonfinite %d) path %s threads %d: dw ref %a, "
				      "kernel %a at %ld",
				      si, nonfinite, paths[pi], t, rdw[at], kdw[at], at);
			at = first_diff(rdb, kdb, (size_t)d.C);
			ck_assert_msg(at < 0,
				      "shape %d (nonfinite %d) path %s threads %d: db ref %a, "
				      "kernel %a at %ld",
				      si, nonfinite, paths[pi], t, rdb[at], kdb[at], at);
			/* each output alone: dx only, dw only, db only */
			memcpy(kdw, dw0, nw * 4);
			mc_dwconv_backward(&d, sh->n, x, w, dy, NULL, kdw, NULL, work);
			ck_assert(first_diff(rdw, kdw, nw) < 0);
			memcpy(kdb, db0, (size_t)d.C * 4);
			mc_dwconv_backward(&d, sh->n, x, w, dy, NULL, NULL, kdb, work);
			ck_assert(first_diff(rdb, kdb, (size_t)d.C) < 0);
			memset(kdx, 0x55, nx * 4);
			mc_dwconv_backward(&d, sh->n, x, w, dy, kdx, NULL, NULL, work);
			ck_assert(first_diff(rdx, kdx, nx) < 0);
		}
	}
	free(work);
	free(kdb);
	free(kdw);
	free(kdx);
	free(odb);
	free(odw);
	free(odx);
	free(rdb);
	free(rdw);
	free(rdx);
	free(db0);
	free(dw0);
	free(dy);
	free(w);
	free(x);
}

START_TEST(backward_matches_old_path)
{
	const char *saved = mc_sgemm_kernel();

	for (int si = 0; si < NSHAPES; si++)
		check_backward(&shapes[si], si, 0);
	for (int si = 0; si < NSHAPES; si++)
		if (shapes[si].p > 0)
			check_backward(&shapes[si], si, 1);
	omp_set_num_threads(2);
	mc_sgemm_use(saved);
}
END_TEST

/* A depthwise conv2d with a fused relu, and one without, through the executor. */
START_TEST(node_matches_old_path)
{
	static const struct {
		int C, H, k, s, p;
	} cases[] = {{6, 13, 3, 1, 1}, {5, 14, 3, 2, 1}, {3, 9, 5, 2, 2}};
	const char *saved = mc_sgemm_kernel();

	for (size_t ci = 0; ci < sizeof(cases) / sizeof(cases[0]); ci++) {
		static struct mc_err err;
		char arch[1024];
		struct mc_model *m;
		struct mc_dwconv d = {.C = cases[ci].C,
				      .H = cases[ci].H,
				      .W = cases[ci].H,
				      .k = cases[ci].k,
				      .s = cases[ci].s,
				      .p = cases[ci].p};
		int n = 7;
		size_t ny, nx;
		float *x, *old, *y;

		d.OH = d.OW = (d.H + 2 * d.p - d.k) / d.s + 1;
		ny = (size_t)n * d.C * d.OH * d.OW;
		nx = (size_t)n * d.C * d.H * d.W;
		snprintf(arch, sizeof(arch),
			 "{\"format\": 1, \"input\": [%d, %d, %d], \"nodes\": ["
			 "{\"name\": \"dw\", \"op\": \"conv2d\", \"inputs\": [\"input\"],"
			 " \"attrs\": {\"out\": %d, \"groups\": %d, \"kernel\": %d, \"stride\": %d,"
			 " \"padding\": %d}},"
			 "{\"name\": \"r\", \"op\": \"relu\", \"inputs\": [\"dw\"]}]}",
			 d.C, d.H, d.W, d.C, d.C, d.k, d.s, d.p);
		m = mc_model_from_arch(arch, "t", &err);
		ck_assert_msg(m != NULL, "%s", err.msg);
		mc_model_init(m, 5 + (uint64_t)ci);
		/* a bias of zeros would hide where it enters the chain */
		for (int c = 0; c < d.C; c++)
			((float *)mc_model_node(m, 0)->params[1]->data)[c] =
			    0.25f * (float)(c % 3) - 0.3f;
		x = random_f32(nx, 900 + ci);
		old = malloc(ny * sizeof(float));
		y = malloc(ny * sizeof(float));
		for (int pi = 0; pi < NPATHS; pi++) {
			const struct mc_node *nd = mc_model_node(m, 0);

			if (mc_sgemm_use(paths[pi]))
				continue;
			old_path(&d, n, x, nd->params[0]->data, nd->params[1]->data, 1, old);
			for (int t = 1; t <= 3; t++) {
				struct mc_exec *e;
				const float *z;

				omp_set_num_threads(t);
				e = mc_exec_new(m, n, 0, &err);
				ck_assert_msg(e != NULL, "%s", err.msg);
				z = mc_forward(e, x, n);
				ck_assert_msg(first_diff(old, z, ny) < 0,
					      "case %zu path %s threads %d: conv2d+relu differs",
					      ci, paths[pi], t);
				mc_exec_free(e);
			}
		}
		/* training: the conv2d alone, its dW and db through mc_backward */
		{
			const char *rp = strstr(arch, ",{\"name\": \"r\"");
			char arch1[1024];
			struct mc_model *m1;
			struct mc_dwconv dd = d;
			size_t nw = (size_t)d.C * d.k * d.k;
			float *dy = random_f32(ny, 950 + ci), *odw = calloc(nw, 4);
			float *odb = calloc((size_t)d.C, 4);

			ck_assert(rp != NULL);
			snprintf(arch1, sizeof(arch1), "%.*s]}", (int)(rp - arch), arch);
			m1 = mc_model_from_arch(arch1, "t", &err);
			ck_assert_msg(m1 != NULL, "%s", err.msg);
			mc_model_init(m1, 9 + (uint64_t)ci);
			for (int pi = 0; pi < NPATHS; pi++) {
				const struct mc_node *nd = mc_model_node(m1, 0);

				if (mc_sgemm_use(paths[pi]))
					continue;
				memset(odw, 0, nw * 4);
				memset(odb, 0, (size_t)d.C * 4);
				old_backward(&dd, n, x, nd->params[0]->data, dy, NULL, odw, odb);
				for (int t = 1; t <= 3; t++) {
					struct mc_exec *e;

					omp_set_num_threads(t);
					e = mc_exec_new(m1, n, 1, &err);
					ck_assert_msg(e != NULL, "%s", err.msg);
					mc_forward(e, x, n);
					mc_exec_zero_grad(e);
					mc_backward(e, dy);
					ck_assert_msg(
					    first_diff(odw, mc_exec_grad(e, 0, 0), nw) < 0 &&
						first_diff(odb, mc_exec_grad(e, 0, 1),
							   (size_t)d.C) < 0,
					    "case %zu path %s threads %d: dW or db differs", ci,
					    paths[pi], t);
					mc_exec_free(e);
				}
			}
			free(odb);
			free(odw);
			free(dy);
			mc_model_free(m1);
		}
		free(y);
		free(old);
		free(x);
		mc_model_free(m);
	}
	omp_set_num_threads(2);
	mc_sgemm_use(saved);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dwconv");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 600);
	tcase_add_test(tc, forward_matches_old_path);
	tcase_add_test(tc, forward_nonfinite_matches_old_path);
	tcase_add_test(tc, backward_matches_old_path);
	tcase_add_test(tc, node_matches_old_path);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
