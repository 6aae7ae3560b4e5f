/* SPDX-License-Identifier: MIT */
/*
 * check_conv.c - the batched f32 convolution kernels (core/kernels/conv.h)
 * against their plain-loop references, bit for bit (the same chain of FMAs
 * per output), on every path this CPU can run (forced as MCOMP_GEMM does),
 * for 1, 2 and 3 threads, over shapes that cross strips, samples, K blocks,
 * padding and strides; and a model whose relus the executor fuses into its
 * conv2d nodes giving the bytes of the nodes run one by one, and the same
 * logits and gradients for any thread count.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/mcomp.h>

#include "kernels/conv.h"

static const char *const paths[] = {"avx512", "avx2", "portable"};
#define NPATHS (int)(sizeof(paths) / sizeof(paths[0]))

static float *random_f32(size_t n, uint64_t stream, float lo)
{
	float *x = malloc((n ? n : 1) * sizeof(float));

	for (size_t i = 0; i < n; i++)
		x[i] = lo + (1.0f - lo) * mc_rand_uniform(21, stream, i);
	return x;
}

struct shape {
	int n, C, H, W, O, k, s, p;
};

/* conv1 and conv2 of the CNN, odd sizes, padding, stride, a deep K (two blocks), O not a multiple
 * of any panel, an image of more strips than the direct path works out ahead (NSTRIPS) */
static const struct shape shapes[] = {
    {3, 1, 28, 28, 32, 3, 1, 0}, {2, 32, 13, 13, 64, 3, 1, 0}, {5, 3, 7, 9, 10, 3, 1, 1},
    {4, 4, 9, 8, 7, 3, 2, 1},	 {2, 40, 6, 5, 12, 3, 1, 2},   {3, 5, 11, 11, 9, 5, 2, 2},
    {7, 2, 4, 4, 5, 1, 1, 0},	 {1, 30, 10, 10, 33, 3, 1, 1}, {2, 2, 60, 60, 9, 3, 1, 1},
    /* first layers big enough for a team: dW split by tap rows (and on AVX-512 in groups of
     * 16 channels, the second one partly past O) */
    {16, 1, 28, 28, 32, 3, 1, 1}, {12, 3, 20, 20, 20, 3, 1, 1},
    /* fewer than 16 outputs: one group of 16, the rest of the padded 32 none */
    {24, 1, 24, 24, 10, 3, 1, 1},
    /* batches whose samples are whole tasks at 3 threads too: real positions packed (conv2 of
     * the CNN), and a K too deep to pack, with padding */
    {8, 32, 13, 13, 64, 3, 1, 0}, {6, 40, 6, 5, 12, 3, 1, 2},
    /* 100 positions, a last strip of 4 with channels in lanes (a batch of 16): one group of 20
     * channels, and 70 (two groups of 64, the second of 6) */
    {16, 8, 12, 12, 20, 3, 1, 0}, {16, 4, 12, 12, 70, 3, 1, 0},
    /* stride 2 on the direct kernels, through the image split by phase: the ResNet's
     * downsampling 3x3 and 1x1 convolutions (wide), odd sizes and an even kernel, a small batch
     * (channel panels split), real positions packed, and packed with a last strip of 4 */
    {16, 16, 28, 28, 32, 3, 2, 1}, {6, 32, 14, 14, 64, 3, 2, 1}, {16, 16, 28, 28, 32, 1, 2, 0},
    {5, 32, 14, 14, 64, 1, 2, 0},  {5, 6, 9, 11, 12, 3, 2, 1},   {4, 3, 15, 13, 9, 3, 2, 0},
    {6, 8, 10, 10, 16, 2, 2, 0},   {2, 16, 28, 28, 32, 3, 2, 1}, {16, 8, 8, 8, 24, 3, 2, 1},
    {16, 4, 12, 12, 20, 3, 2, 1},  {3, 5, 11, 11, 9, 5, 2, 2},
};
#define NSHAPES (int)(sizeof(shapes) / sizeof(shapes[0]))

static struct mc_convf make(const struct shape *sh)
{
	struct mc_convf cv = {
	    .C = sh->C, .H = sh->H, .W = sh->W, .O = sh->O, .k = sh->k, .s = sh->s, .p = sh->p};

	cv.OH = (sh->H + 2 * sh->p - sh->k) / sh->s + 1;
	cv.OW = (sh->W + 2 * sh->p - sh->k) / sh->s + 1;
	cv.xs = (int64_t)cv.C * cv.H * cv.W;
	cv.ys = (int64_t)cv.O * cv.OH * cv.OW;
	return cv;
}

START_TEST(forward_matches_ref)
{
	const char *saved = mc_sgemm_kernel();

	for (int si = 0; si < NSHAPES; si++) {
		const struct shape *sh = &shapes[si];
		struct mc_convf cv = make(sh);
		size_t K = (size_t)cv.C * cv.k * cv.k, ny = (size_t)sh->n * cv.ys;
		float *x = random_f32((size_t)sh->n * cv.xs, 1 + si, -1.0f);
		float *w = random_f32((size_t)cv.O * K, 100 + si, -1.0f);
		float *b = random_f32((size_t)cv.O, 200 + si, -1.0f);
		float *ref = malloc(ny * sizeof(float)), *y = malloc(ny * sizeof(float));
		void *work = malloc(mc_convf_work(&cv));

		for (int relu = 0; relu < 2; relu++)
			for (int hb = 0; hb < 2; hb++) {
				mc_convf_forward_ref(&cv, sh->n, x, w, hb ? b : NULL, relu, ref);
				for (int pi = 0; pi < NPATHS; pi++) {
					if (mc_sgemm_use(paths[pi]))
						continue;
					for (int t = 1; t <= 3; t++) {
						omp_set_num_threads(t);
						memset(y, 0xff, ny * sizeof(float));
						mc_convf_forward(&cv, sh->n, x, w, hb ? b : NULL,
								 relu, y, work, NULL);
						ck_assert_msg(
						    !memcmp(y, ref, ny * sizeof(float)),
						    "shape %d relu %d bias %d path %s threads %d",
						    si, relu, hb, paths[pi], t);
					}
				}
			}
		free(work);
		free(y);
		free(ref);
		free(b);
		free(w);
		free(x);
	}
	omp_set_num_threads(2);
	mc_sgemm_use(saved);
}
END_TEST

/* dy for mc_convf_dw_src: copied from memory, and each call counted. */
struct dy_copy {
	const float *dy;
	int64_t ys, P;
	int O, calls;
};

static void dy_copy_fn(void *ctx, int s, int o0, int m, float *dst)
{
	struct dy_copy *d = ctx;

	ck_assert(o0 >= 0 && m >= 1 && o0 + m <= d->O);
	memcpy(dst, d->dy + s * d->ys + o0 * d->P, (size_t)m * d->P * sizeof(float));
#pragma omp atomic
	d->calls++;
}

/* First layers whose items read dy^T in blocks of samples at 6 and 16 threads (batches not a
 * multiple of the block, odd outputs, O not a multiple of 16 or of 8). */
static const struct shape src_shapes[] = {
    {23, 1, 27, 27, 20, 3, 1, 0}, {37, 1, 28, 28, 32, 3, 1, 1}, {21, 3, 15, 17, 13, 3, 1, 1},
    {5, 1, 9, 7, 40, 3, 1, 0},
};
#define NSRC (int)(sizeof(src_shapes) / sizeof(src_shapes[0]))

/* One dW (and db unless NULL) with dy from memory (mc_convf_dw) or, given d, from a source. */
static void dw_once(const struct mc_convf *cv, int n, const float *x, const float *dy,
		    struct dy_copy *d, float *dw, float *db, void *work)
{
	if (d) {
		struct mc_convf_dysrc src = {dy_copy_fn, d};

		d->calls = 0;
		mc_convf_dw_src(cv, n, x, &src, dw, db, work);
		ck_assert_msg(d->calls >= n, "%d calls for %d samples", d->calls, n);
	} else {
		mc_convf_dw(cv, n, x, dy, dw, db, work);
	}
}

/*
 * dW and db give the reference's bits with dy from memory and from a
 * source, on every shape, path and thread count: 6 threads are enough for
 * a first layer's dW to be split by tap rows; 16 give many items a group,
 * which read dy^T written once for all.
 */
START_TEST(dw_matches_ref)
{
	const char *saved = mc_sgemm_kernel();

	for (int si = 0; si < NSHAPES + NSRC; si++) {
		const struct shape *sh = si < NSHAPES ? &shapes[si] : &src_shapes[si - NSHAPES];
		struct mc_convf cv = make(sh);
		size_t K = (size_t)cv.C * cv.k * cv.k, nw = (size_t)cv.O * K;
		float *x = random_f32((size_t)sh->n * cv.xs, 300 + si, -1.0f);
		float *dy = random_f32((size_t)sh->n * cv.ys, 400 + si, -1.0f);
		float *w0 = random_f32(nw, 500 + si, -1.0f),
		      *b0 = random_f32(cv.O, 600 + si, -1.0f);
		float *rw = malloc(nw * sizeof(float)), *rb = malloc(cv.O * sizeof(float));
		float *dw = malloc(nw * sizeof(float)), *db = malloc(cv.O * sizeof(float));
		void *work = malloc(mc_convf_dw_work(&cv, sh->n));
		struct dy_copy d = {dy, cv.ys, (int64_t)cv.OH * cv.OW, cv.O, 0};

		memcpy(rw, w0, nw * sizeof(float));
		memcpy(rb, b0, cv.O * sizeof(float));
		mc_convf_dw_ref(&cv, sh->n, x, dy, rw, rb);
		for (int pi = 0; pi < NPATHS; pi++) {
			if (mc_sgemm_use(paths[pi]))
				continue;
			for (int t = 1; t <= 16; t = t < 3 ? t + 1 : t == 3 ? 6 : t == 6 ? 16 : 17)
				for (int from_src = 0; from_src < 2; from_src++) {
					const char *how =
					    from_src ? "dy from a source" : "dy in memory";
					struct dy_copy *dp = from_src ? &d : NULL;

					omp_set_num_threads(t);
					memcpy(dw, w0, nw * sizeof(float));
					memcpy(db, b0, cv.O * sizeof(float));
					dw_once(&cv, sh->n, x, dy, dp, dw, db, work);
					ck_assert_msg(!memcmp(dw, rw, nw * sizeof(float)),
						      "dW, %s: shape %d path %s threads %d", how,
						      si, paths[pi], t);
					ck_assert_msg(!memcmp(db, rb, cv.O * sizeof(float)),
						      "db, %s: shape %d path %s threads %d", how,
						      si, paths[pi], t);
					/* dW alone (no bias column) gives the same dW */
					memcpy(dw, w0, nw * sizeof(float));
					dw_once(&cv, sh->n, x, dy, dp, dw, NULL, work);
					ck_assert_msg(
					    !memcmp(dw, rw, nw * sizeof(float)),
					    "dW without db, %s: shape %d path %s threads %d", how,
					    si, paths[pi], t);
				}
		}
		free(work);
		free(db);
		free(dw);
		free(rb);
		free(rw);
		free(b0);
		free(w0);
		free(dy);
		free(x);
	}
	omp_set_num_threads(2);
	mc_sgemm_use(saved);
}
END_TEST

/* conv2d -> relu -> conv2d (padded) -> relu -> flatten -> linear: both relus fuse. */
static const char *arch =
    "{\"format\": 1, \"input\": [2, 12, 12], \"nodes\": ["
    "{\"name\": \"c1\", \"op\": \"conv2d\", \"inputs\": [\"input\"], \"attrs\": {\"out\": 16}},"
    "{\"name\": \"r1\", \"op\": \"relu\", \"inputs\": [\"c1\"]},"
    "{\"name\": \"c2\", \"op\": \"conv2d\", \"inputs\": [\"r1\"],"
    " \"attrs\": {\"out\": 24, \"padding\": 1}},"
    "{\"name\": \"r2\", \"op\": \"relu\", \"inputs\": [\"c2\"]},"
    "{\"name\": \"f\", \"op\": \"flatten\", \"inputs\": [\"r2\"]},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"f\"], \"attrs\": {\"out\": 5}}]}";

static void run_model(struct mc_model *m, const float *x, int n, float *logits, float *grads,
		      size_t *ng)
{
	static struct mc_err err;
	struct mc_exec *e = mc_exec_new(m, n, 1, &err);
	float *dl = malloc((size_t)n * 5 * sizeof(float));
	const float *z;
	size_t at = 0;

	ck_assert_msg(e != NULL, "%s", err.msg);
	z = mc_forward(e, x, n);
	memcpy(logits, z, (size_t)n * 5 * sizeof(float));
	for (int i = 0; i < n * 5; i++)
		dl[i] = z[i] * 0.01f - 0.002f * (float)(i % 7);
	mc_exec_zero_grad(e);
	mc_backward(e, dl);
	for (int i = 0; i < mc_model_n_nodes(m); i++)
		for (int p = 0; p < mc_model_node(m, i)->n_params; p++) {
			size_t c = (size_t)mc_model_node(m, i)->params[p]->numel;

			memcpy(grads + at, mc_exec_grad(e, i, p), c * sizeof(float));
			at += c;
		}
	*ng = at;
	free(dl);
	mc_exec_free(e);
}

/* The model's last output, nodes one by one through op->forward, as
 * calibration runs them: no fusion. */
static void run_unfused(struct mc_model *m, const float *x, int n, float *y)
{
	int nn = mc_model_n_nodes(m);
	float **act = calloc((size_t)nn, sizeof(*act));
	struct mc_run run = {0};
	size_t work = 0;

	for (int i = 0; i < nn; i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		act[i] = malloc((size_t)n * (size_t)nd->out_numel * sizeof(float));
		if (nd->op->workspace && nd->op->workspace(nd, n) > work)
			work = nd->op->workspace(nd, n);
	}
	run.work = malloc(work ? work : 1);
	for (int i = 0; i < nn; i++) {
		const struct mc_node *nd = mc_model_node(m, i);
		const float *in[MC_NODE_MAX_INPUTS];

		for (int k = 0; k < nd->n_inputs; k++)
			in[k] = nd->inputs[k] == MC_NODE_INPUT ? x : act[nd->inputs[k]];
		nd->op->forward(nd, &run, n, in, act[i]);
	}
	memcpy(y, act[nn - 1], (size_t)n * mc_model_node(m, nn - 1)->out_numel * sizeof(float));
	for (int i = 0; i < nn; i++)
		free(act[i]);
	free(act);
	free(run.work);
}

/* The executor's 5 logits a sample for n samples of x in z, the ops' one by one in z0: the same. */
static int exec_is_unfused(struct mc_model *m, const float *x, int n, float *z0, float *z)
{
	static struct mc_err err;
	struct mc_exec *e;

	run_unfused(m, x, n, z0);
	e = mc_exec_new(m, n, 0, &err);
	ck_assert_msg(e != NULL, "%s", err.msg);
	memcpy(z, mc_forward(e, x, n), (size_t)n * 5 * sizeof(float));
	mc_exec_free(e);
	return !memcmp(z, z0, (size_t)n * 5 * sizeof(float));
}

START_TEST(fused_model_deterministic)
{
	static struct mc_err err;
	struct mc_model *m = mc_model_from_arch(arch, "t", &err);
	const char *saved = mc_sgemm_kernel();
	int n = 9;
	float *x, *z0, *z, *g0, *g;
	size_t ng0 = 0, ng = 0;

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 3);
	x = random_f32((size_t)n * 2 * 12 * 12, 700, -1.0f);
	z0 = malloc((size_t)n * 5 * sizeof(float));
	z = malloc((size_t)n * 5 * sizeof(float));
	g0 = malloc((size_t)mc_model_nparams(m) * sizeof(float));
	g = malloc((size_t)mc_model_nparams(m) * sizeof(float));
	for (int pi = 0; pi < NPATHS; pi++) {
		if (mc_sgemm_use(paths[pi]))
			continue;
		omp_set_num_threads(1);
		run_model(m, x, n, z0, g0, &ng0);
		run_unfused(m, x, n, z);
		ck_assert_msg(!memcmp(z, z0, (size_t)n * 5 * sizeof(float)),
			      "fused and unfused logits differ: path %s", paths[pi]);
		for (int t = 2; t <= 3; t++) {
			omp_set_num_threads(t);
			run_model(m, x, n, z, g, &ng);
			ck_assert_msg(!memcmp(z, z0, (size_t)n * 5 * sizeof(float)),
				      "logits: path %s threads %d", paths[pi], t);
			ck_assert_msg(ng == ng0 && !memcmp(g, g0, ng * sizeof(float)),
				      "gradients: path %s threads %d", paths[pi], t);
		}
	}
	omp_set_num_threads(2);
	mc_sgemm_use(saved);
	free(g);
	free(g0);
	free(z);
	free(z0);
	free(x);
	mc_model_free(m);
}
END_TEST

/* conv2d -> relu -> maxpool2d, twice: at inference the executor pools as each conv2d stores. */
static const char *arch_pool =
    "{\"format\": 1, \"input\": [2, 14, 14], \"nodes\": ["
    "{\"name\": \"c1\", \"op\": \"conv2d\", \"inputs\": [\"input\"], \"attrs\": {\"out\": 16}},"
    "{\"name\": \"r1\", \"op\": \"relu\", \"inputs\": [\"c1\"]},"
    "{\"name\": \"p1\", \"op\": \"maxpool2d\", \"inputs\": [\"r1\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"c2\", \"op\": \"conv2d\", \"inputs\": [\"p1\"],"
    " \"attrs\": {\"out\": 24, \"padding\": 1}},"
    "{\"name\": \"r2\", \"op\": \"relu\", \"inputs\": [\"c2\"]},"
    "{\"name\": \"p2\", \"op\": \"maxpool2d\", \"inputs\": [\"r2\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"f\", \"op\": \"flatten\", \"inputs\": [\"p2\"]},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"f\"], \"attrs\": {\"out\": 5}}]}";

/*
 * Odd outputs (15x15, 5x5; 7x7 and 3x3) whose pools drop the last row and
 * column: the conv2d computes only the outputs the pool reads, packed in
 * strips of 32 (a last strip of 4 or of 16); and (K = 324, too deep to
 * pack) not; O not a multiple of 8. Then first layers (one input channel) that
 * pool as they compute: the CNN's, and one of 10 outputs (not a multiple
 * of 4), padded, 40x37 (20 pooled rows, 18 pooled columns: a second block
 * of lanes, 2 of them real, and a last column dropped).
 */
static const char *arch_pool_odd[] = {
    "{\"format\": 1, \"input\": [4, 17, 17], \"nodes\": ["
    "{\"name\": \"c1\", \"op\": \"conv2d\", \"inputs\": [\"input\"], \"attrs\": {\"out\": 12}},"
    "{\"name\": \"r1\", \"op\": \"relu\", \"inputs\": [\"c1\"]},"
    "{\"name\": \"p1\", \"op\": \"maxpool2d\", \"inputs\": [\"r1\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"c2\", \"op\": \"conv2d\", \"inputs\": [\"p1\"], \"attrs\": {\"out\": 20}},"
    "{\"name\": \"r2\", \"op\": \"relu\", \"inputs\": [\"c2\"]},"
    "{\"name\": \"p2\", \"op\": \"maxpool2d\", \"inputs\": [\"r2\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"f\", \"op\": \"flatten\", \"inputs\": [\"p2\"]},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"f\"], \"attrs\": {\"out\": 5}}]}",
    "{\"format\": 1, \"input\": [36, 9, 9], \"nodes\": ["
    "{\"name\": \"c1\", \"op\": \"conv2d\", \"inputs\": [\"input\"], \"attrs\": {\"out\": 10}},"
    "{\"name\": \"r1\", \"op\": \"relu\", \"inputs\": [\"c1\"]},"
    "{\"name\": \"p1\", \"op\": \"maxpool2d\", \"inputs\": [\"r1\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"c2\", \"op\": \"conv2d\", \"inputs\": [\"p1\"],"
    " \"attrs\": {\"out\": 20, \"padding\": 1}},"
    "{\"name\": \"r2\", \"op\": \"relu\", \"inputs\": [\"c2\"]},"
    "{\"name\": \"p2\", \"op\": \"maxpool2d\", \"inputs\": [\"r2\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"f\", \"op\": \"flatten\", \"inputs\": [\"p2\"]},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"f\"], \"attrs\": {\"out\": 5}}]}",
    "{\"format\": 1, \"input\": [1, 28, 28], \"nodes\": ["
    "{\"name\": \"c1\", \"op\": \"conv2d\", \"inputs\": [\"input\"], \"attrs\": {\"out\": 32}},"
    "{\"name\": \"r1\", \"op\": \"relu\", \"inputs\": [\"c1\"]},"
    "{\"name\": \"p1\", \"op\": \"maxpool2d\", \"inputs\": [\"r1\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"c2\", \"op\": \"conv2d\", \"inputs\": [\"p1\"], \"attrs\": {\"out\": 64}},"
    "{\"name\": \"r2\", \"op\": \"relu\", \"inputs\": [\"c2\"]},"
    "{\"name\": \"p2\", \"op\": \"maxpool2d\", \"inputs\": [\"r2\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"f\", \"op\": \"flatten\", \"inputs\": [\"p2\"]},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"f\"], \"attrs\": {\"out\": 5}}]}",
    "{\"format\": 1, \"input\": [1, 40, 37], \"nodes\": ["
    "{\"name\": \"c1\", \"op\": \"conv2d\", \"inputs\": [\"input\"],"
    " \"attrs\": {\"out\": 10, \"padding\": 1}},"
    "{\"name\": \"r1\", \"op\": \"relu\", \"inputs\": [\"c1\"]},"
    "{\"name\": \"p1\", \"op\": \"maxpool2d\", \"inputs\": [\"r1\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"f\", \"op\": \"flatten\", \"inputs\": [\"p1\"]},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"f\"], \"attrs\": {\"out\": 5}}]}",
};

/* The model's logits with pools fused into the conv2d nodes equal those of the nodes one by one. */
static void check_fused_pool(const char *desc, size_t per, uint64_t stream)
{
	static struct mc_err err;
	struct mc_model *m = mc_model_from_arch(desc, "t", &err);
	const char *saved = mc_sgemm_kernel();
	float *x, *z0 = malloc(17 * 5 * sizeof(float)), *z = malloc(17 * 5 * sizeof(float));

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 4);
	x = random_f32((size_t)17 * per, stream, -1.0f);
	for (int pi = 0; pi < NPATHS; pi++) {
		if (mc_sgemm_use(paths[pi]))
			continue;
		for (int n = 1; n <= 17; n += 8)
			for (int t = 1; t <= 3; t++) {
				omp_set_num_threads(t);
				ck_assert_msg(exec_is_unfused(m, x, n, z0, z),
					      "pooled in the conv: path %s batch %d threads %d",
					      paths[pi], n, t);
			}
	}
	omp_set_num_threads(2);
	mc_sgemm_use(saved);
	free(z);
	free(z0);
	free(x);
	mc_model_free(m);
}

START_TEST(fused_pool_inference)
{
	check_fused_pool(arch_pool, 2 * 14 * 14, 800);
}
END_TEST

START_TEST(fused_pool_odd_inference)
{
	check_fused_pool(arch_pool_odd[0], 4 * 17 * 17, 801);
	check_fused_pool(arch_pool_odd[1], 36 * 9 * 9, 802);
	check_fused_pool(arch_pool_odd[2], 28 * 28, 803);
	check_fused_pool(arch_pool_odd[3], 40 * 37, 804);
}
END_TEST

/*
 * Training gradients of a model, nodes one by one through op->forward and
 * op->backward (each pool's backward, then its relu's, then the conv2d's
 * from the whole gradient in memory), with run_model's dlogits.
 */
static void run_unfused_grads(struct mc_model *m, const float *x, int n, float *grads, size_t *ng)
{
	int nn = mc_model_n_nodes(m);
	float **act = calloc((size_t)nn, sizeof(*act)), **dact = calloc((size_t)nn, sizeof(*dact));
	float **g = calloc((size_t)nn * MC_NODE_MAX_PARAMS, sizeof(*g));
	struct mc_run run = {.training = 1};
	size_t work = 0, at = 0;

	for (int i = 0; i < nn; i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		act[i] = malloc((size_t)n * (size_t)nd->out_numel * sizeof(float));
		dact[i] = malloc((size_t)n * (size_t)nd->out_numel * sizeof(float));
		for (int p = 0; p < nd->n_params; p++)
			g[i * MC_NODE_MAX_PARAMS + p] =
			    calloc((size_t)nd->params[p]->numel, sizeof(float));
		if (nd->op->workspace && nd->op->workspace(nd, n) > work)
			work = nd->op->workspace(nd, n);
	}
	run.work = malloc(work ? work : 1);
	for (int i = 0; i < nn; i++) {
		const struct mc_node *nd = mc_model_node(m, i);
		const float *in[MC_NODE_MAX_INPUTS];

		for (int k = 0; k < nd->n_inputs; k++)
			in[k] = nd->inputs[k] == MC_NODE_INPUT ? x : act[nd->inputs[k]];
		nd->op->forward(nd, &run, n, in, act[i]);
	}
	for (int i = 0; i < n * 5; i++)
		dact[nn - 1][i] = act[nn - 1][i] * 0.01f - 0.002f * (float)(i % 7);
	for (int i = nn - 1; i >= 0; i--) {
		const struct mc_node *nd = mc_model_node(m, i);
		const float *in[MC_NODE_MAX_INPUTS];
		float *din[MC_NODE_MAX_INPUTS];

		for (int k = 0; k < nd->n_inputs; k++) {
			in[k] = nd->inputs[k] == MC_NODE_INPUT ? x : act[nd->inputs[k]];
			din[k] = nd->inputs[k] == MC_NODE_INPUT ? NULL : dact[nd->inputs[k]];
		}
		nd->op->backward(nd, &run, n, in, act[i], dact[i], din, &g[i * MC_NODE_MAX_PARAMS]);
	}
	for (int i = 0; i < nn; i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		for (int p = 0; p < nd->n_params; p++) {
			size_t c = (size_t)nd->params[p]->numel;

			memcpy(grads + at, g[i * MC_NODE_MAX_PARAMS + p], c * sizeof(float));
			at += c;
			free(g[i * MC_NODE_MAX_PARAMS + p]);
		}
		free(act[i]);
		free(dact[i]);
	}
	*ng = at;
	free(run.work);
	free(g);
	free(dact);
	free(act);
}

/*
 * In training the executor hands a first conv2d's dW the relu and pool
 * backward a few channels and samples at a time (mc_conv2d_backward_relu_pool):
 * the gradients of the nodes one by one, on every path and thread count,
 * odd sizes (the pool's last row and column dropped) and batches not a
 * multiple of the kernel's block of samples included.
 */
static void check_fused_pool_train(const char *desc, size_t per, uint64_t stream)
{
	static struct mc_err err;
	struct mc_model *m = mc_model_from_arch(desc, "t", &err);
	const char *saved = mc_sgemm_kernel();
	int nmax = 23;
	float *x, *z = malloc((size_t)nmax * 5 * sizeof(float)), *g0, *g;
	size_t ng0 = 0, ng = 0;

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 5);
	x = random_f32((size_t)nmax * per, stream, -1.0f);
	g0 = malloc((size_t)mc_model_nparams(m) * sizeof(float));
	g = malloc((size_t)mc_model_nparams(m) * sizeof(float));
	for (int pi = 0; pi < NPATHS; pi++) {
		if (mc_sgemm_use(paths[pi]))
			continue;
		for (int n = 1; n <= nmax; n += 11) {
			omp_set_num_threads(1);
			run_unfused_grads(m, x, n, g0, &ng0);
			for (int t = 1; t <= 16; t = t < 3 ? t + 1 : t == 3 ? 6 : t == 6 ? 16 : 17) {
				omp_set_num_threads(t);
				run_model(m, x, n, z, g, &ng);
				ck_assert_msg(ng == ng0 && !memcmp(g, g0, ng * sizeof(float)),
					      "gradients: path %s batch %d threads %d", paths[pi], n,
					      t);
			}
		}
	}
	omp_set_num_threads(2);
	mc_sgemm_use(saved);
	free(g);
	free(g0);
	free(z);
	free(x);
	mc_model_free(m);
}

START_TEST(fused_pool_train)
{
	check_fused_pool_train(arch_pool, 2 * 14 * 14, 810);
	check_fused_pool_train(arch_pool_odd[0], 4 * 17 * 17, 811);
	check_fused_pool_train(arch_pool_odd[1], 36 * 9 * 9, 812);
	check_fused_pool_train(arch_pool_odd[2], 28 * 28, 813);
	check_fused_pool_train(arch_pool_odd[3], 40 * 37, 814);
}
END_TEST

/* qconv2d (static, relu fused) -> maxpool2d -> flatten -> linear: the pool runs in the qconv2d. */
static const char *arch_qpool =
    "{\"format\": 1, \"input\": [3, 14, 14], \"nodes\": ["
    "{\"name\": \"q\", \"op\": \"qconv2d\", \"inputs\": [\"input\"],"
    " \"attrs\": {\"out\": 12, \"padding\": 1, \"mode\": \"static\", \"relu\": true}},"
    "{\"name\": \"p\", \"op\": \"maxpool2d\", \"inputs\": [\"q\"], \"attrs\": {\"kernel\": 2}},"
    "{\"name\": \"f\", \"op\": \"flatten\", \"inputs\": [\"p\"]},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"f\"], \"attrs\": {\"out\": 5}}]}";

START_TEST(fused_qconv_pool_inference)
{
	static struct mc_err err;
	struct mc_model *m = mc_model_from_arch(arch_qpool, "t", &err);
	float *x, *z0 = malloc(9 * 5 * sizeof(float)), *z = malloc(9 * 5 * sizeof(float));
	struct mc_tensor *w, *sc, *b, *qp;

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 5);
	w = mc_model_param(m, "q.weight");
	sc = mc_model_param(m, "q.weight_scale");
	b = mc_model_param(m, "q.bias");
	qp = mc_model_param(m, "q.input_qparams");
	ck_assert(w && sc && b && qp);
	for (int64_t i = 0; i < w->numel; i++)
		((int8_t *)w->data)[i] =
		    (int8_t)((int)(mc_rand_uniform(22, 1, (uint64_t)i) * 255.0f) - 127);
	for (int64_t i = 0; i < sc->numel; i++)
		((float *)sc->data)[i] = 0.002f + 0.001f * (float)i;
	for (int64_t i = 0; i < b->numel; i++)
		((float *)b->data)[i] = 0.1f * (float)(i % 5) - 0.2f;
	((float *)qp->data)[0] = 2.0f / 255.0f;
	((float *)qp->data)[1] = 128.0f;
	x = random_f32((size_t)9 * 3 * 14 * 14, 900, -1.0f);
	for (int n = 1; n <= 9; n += 8)
		for (int t = 1; t <= 3; t++) {
			int same;

			omp_set_num_threads(t);
			same = exec_is_unfused(m, x, n, z0, z);
			/* real outputs: finite and not all alike */
			ck_assert(isfinite(z0[0]) && isfinite(z0[4]) && z0[0] != z0[4]);
			ck_assert_msg(same, "pooled in the qconv2d: batch %d threads %d", n, t);
		}
	omp_set_num_threads(2);
	free(z);
	free(z0);
	free(x);
	mc_model_free(m);
}
END_TEST

/*
 * An int8 chain as MobileNetV2's: pointwise, depthwise, pointwise, a
 * residual qadd, a stride-2 depthwise, qglobal_avgpool, linear. The
 * executor hands u8 tensors between the int8 ops (exec.c, plan_u8); the
 * logits must be the bytes of every op run on its own over f32 tensors,
 * for any thread count, and also where one reader's pair differs (that
 * tensor then stays f32).
 */
static const char *arch_q8 =
    "{\"format\": 1, \"input\": [8, 6, 6], \"nodes\": ["
    "{\"name\": \"pw1\", \"op\": \"qconv2d\", \"inputs\": [\"input\"], \"attrs\":"
    " {\"out\": 8, \"kernel\": 1, \"mode\": \"static\", \"relu6\": true}},"
    "{\"name\": \"dw\", \"op\": \"qconv2d\", \"inputs\": [\"pw1\"], \"attrs\": {\"out\": 8,"
    " \"kernel\": 3, \"padding\": 1, \"groups\": 8, \"mode\": \"static\", \"relu6\": true}},"
    "{\"name\": \"pw2\", \"op\": \"qconv2d\", \"inputs\": [\"dw\"], \"attrs\":"
    " {\"out\": 8, \"kernel\": 1, \"mode\": \"static\"}},"
    "{\"name\": \"add\", \"op\": \"qadd\", \"inputs\": [\"pw2\", \"pw1\"]},"
    "{\"name\": \"dw2\", \"op\": \"qconv2d\", \"inputs\": [\"add\"], \"attrs\": {\"out\": 8,"
    " \"kernel\": 3, \"stride\": 2, \"padding\": 1, \"groups\": 8, \"mode\": \"static\"}},"
    "{\"name\": \"pool\", \"op\": \"qglobal_avgpool\", \"inputs\": [\"dw2\"]},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"pool\"], \"attrs\": {\"out\": 5}}]}";

static void set_f32(struct mc_model *m, const char *name, const float *v, int64_t n)
{
	struct mc_tensor *t = mc_model_param(m, name);

	ck_assert_msg(t && t->numel == n, "%s", name);
	memcpy(t->data, v, (size_t)n * sizeof(float));
}

/*
 * Each named qconv2d's weights drawn from stream (s8 in [-127, 128)), its
 * per-channel scales s0 + ds * o and its biases 0.1 (o % 5) + b0.
 */
static void fill_qconvs(struct mc_model *m, const char *const *convs, int nc, uint64_t stream,
			float s0, float ds, float b0)
{
	for (int c = 0; c < nc; c++) {
		char name[64];
		struct mc_tensor *w, *sc, *b;

		snprintf(name, sizeof(name), "%s.weight", convs[c]);
		w = mc_model_param(m, name);
		snprintf(name, sizeof(name), "%s.weight_scale", convs[c]);
		sc = mc_model_param(m, name);
		snprintf(name, sizeof(name), "%s.bias", convs[c]);
		b = mc_model_param(m, name);
		ck_assert(w && sc && b);
		for (int64_t i = 0; i < w->numel; i++)
			((int8_t *)w->data)[i] =
			    (int8_t)((int)(mc_rand_uniform(stream, (uint64_t)c, (uint64_t)i) *
					   255.0f) -
				     127);
		for (int64_t i = 0; i < sc->numel; i++)
			((float *)sc->data)[i] = s0 + ds * (float)i;
		for (int64_t i = 0; i < b->numel; i++)
			((float *)b->data)[i] = 0.1f * (float)(i % 5) + b0;
	}
}

START_TEST(int8_chain_u8_matches_f32_route)
{
	static struct mc_err err;
	static const char *const convs[] = {"pw1", "dw", "pw2", "dw2"};
	struct mc_model *m = mc_model_from_arch(arch_q8, "t", &err);
	float *x, *z0 = malloc(9 * 5 * sizeof(float)), *z = malloc(9 * 5 * sizeof(float));
	const float relu6_qp[2] = {6.0f / 255.0f, 0.0f};

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 7);
	fill_qconvs(m, convs, 4, 23, 0.004f, 0.0005f, -0.2f);
	set_f32(m, "pw1.input_qparams", (const float[]){ 2.0f / 255.0f, 128.0f }, 2);
	set_f32(m, "dw.input_qparams", relu6_qp, 2);
	set_f32(m, "pw2.input_qparams", relu6_qp, 2);
	set_f32(m, "add.qparams",
		(const float[]){ 0.05f, 128.0f, 6.0f / 255.0f, 0.0f, 0.06f, 120.0f }, 6);
	set_f32(m, "dw2.input_qparams", (const float[]){ 0.06f, 120.0f }, 2);
	set_f32(m, "pool.qparams", (const float[]){ 0.05f, 128.0f, 0.02f, 127.0f }, 4);
	x = random_f32((size_t)9 * 8 * 6 * 6, 901, -1.0f);
	for (int variant = 0; variant < 2; variant++) {
		if (variant) /* the add reads pw1 at another pair than dw: pw1's output stays f32 */
			set_f32(m, "add.qparams",
				(const float[]){ 0.05f, 128.0f, 7.0f / 255.0f, 1.0f, 0.06f, 120.0f }, 6);
		for (int n = 1; n <= 9; n += 8)
			for (int t = 1; t <= 3; t++) {
				int same;

				omp_set_num_threads(t);
				same = exec_is_unfused(m, x, n, z0, z);
				ck_assert(isfinite(z0[0]) && isfinite(z0[4]) && z0[0] != z0[4]);
				ck_assert_msg(same, "u8 chain, variant %d: batch %d threads %d",
					      variant, n, t);
			}
	}
	omp_set_num_threads(2);
	free(z);
	free(z0);
	free(x);
	mc_model_free(m);
}
END_TEST

/*
 * ResNet's int8 blocks: dense 3x3 qconv2d layers at stride 1 and 2, a 1x1
 * stride-2 projection, residual qadds each followed by a relu (which the
 * executor applies in the add: FUSE_QADD_RELU), qglobal_avgpool, linear.
 * The executor hands u8 between the dense layers and from each add's relu
 * (at a zero point above 0, so that the relu's max has work); the logits
 * must be the bytes of every op run on its own over f32 tensors, on every
 * int8 GEMM path, for any thread count, and also where the relu's readers
 * take it at different pairs (it then stays f32, the relu on f32).
 */
static const char *arch_q8_res =
    "{\"format\": 1, \"input\": [3, 9, 9], \"nodes\": ["
    "{\"name\": \"stem\", \"op\": \"qconv2d\", \"inputs\": [\"input\"], \"attrs\":"
    " {\"out\": 8, \"kernel\": 3, \"padding\": 1, \"mode\": \"static\", \"relu\": true}},"
    "{\"name\": \"c1\", \"op\": \"qconv2d\", \"inputs\": [\"stem\"], \"attrs\":"
    " {\"out\": 8, \"kernel\": 3, \"padding\": 1, \"mode\": \"static\", \"relu\": true}},"
    "{\"name\": \"c2\", \"op\": \"qconv2d\", \"inputs\": [\"c1\"], \"attrs\":"
    " {\"out\": 8, \"kernel\": 3, \"padding\": 1, \"mode\": \"static\"}},"
    "{\"name\": \"add\", \"op\": \"qadd\", \"inputs\": [\"c2\", \"stem\"]},"
    "{\"name\": \"r1\", \"op\": \"relu\", \"inputs\": [\"add\"]},"
    "{\"name\": \"d1\", \"op\": \"qconv2d\", \"inputs\": [\"r1\"], \"attrs\": {\"out\": 12,"
    " \"kernel\": 3, \"stride\": 2, \"padding\": 1, \"mode\": \"static\", \"relu\": true}},"
    "{\"name\": \"d2\", \"op\": \"qconv2d\", \"inputs\": [\"d1\"], \"attrs\":"
    " {\"out\": 12, \"kernel\": 3, \"padding\": 1, \"mode\": \"static\"}},"
    "{\"name\": \"proj\", \"op\": \"qconv2d\", \"inputs\": [\"r1\"], \"attrs\":"
    " {\"out\": 12, \"kernel\": 1, \"stride\": 2, \"mode\": \"static\"}},"
    "{\"name\": \"add2\", \"op\": \"qadd\", \"inputs\": [\"d2\", \"proj\"]},"
    "{\"name\": \"r2\", \"op\": \"relu\", \"inputs\": [\"add2\"]},"
    "{\"name\": \"pool\", \"op\": \"qglobal_avgpool\", \"inputs\": [\"r2\"]},"
    "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"pool\"], \"attrs\": {\"out\": 5}}]}";

START_TEST(int8_resnet_u8_matches_f32_route)
{
	static struct mc_err err;
	static const char *const convs[] = { "stem", "c1", "c2", "d1", "d2", "proj" };
	static const char *const s8_paths[] = { "avx512-vnni", "avx2", "portable" };
	const char *saved = mc_gemm_s8_kernel();
	struct mc_model *m = mc_model_from_arch(arch_q8_res, "t", &err);
	float *x, *z0 = malloc(17 * 5 * sizeof(float)), *z = malloc(17 * 5 * sizeof(float));
	const float relu_qp[2] = { 4.0f / 255.0f, 0.0f }, r1_qp[2] = { 0.05f, 3.0f };

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 7);
	fill_qconvs(m, convs, 6, 29, 0.003f, 0.0004f, -0.25f);
	set_f32(m, "stem.input_qparams", (const float[]){ 2.0f / 255.0f, 128.0f }, 2);
	set_f32(m, "c1.input_qparams", relu_qp, 2);
	set_f32(m, "c2.input_qparams", relu_qp, 2);
	set_f32(m, "add.qparams", (const float[]){ 0.05f, 128.0f, 4.0f / 255.0f, 0.0f, 0.06f, 120.0f },
		6);
	set_f32(m, "d1.input_qparams", r1_qp, 2);
	set_f32(m, "d2.input_qparams", relu_qp, 2);
	set_f32(m, "proj.input_qparams", r1_qp, 2);
	set_f32(m, "add2.qparams", (const float[]){ 0.05f, 128.0f, 0.04f, 130.0f, 0.07f, 110.0f },
		6);
	set_f32(m, "pool.qparams", (const float[]){ 0.05f, 2.0f, 0.02f, 127.0f }, 4);
	x = random_f32((size_t)17 * 3 * 9 * 9, 903, -1.0f);
	for (int variant = 0; variant < 2; variant++) {
		if (variant) /* proj reads r1 at another pair than d1: r1 stays f32 */
			set_f32(m, "proj.input_qparams", (const float[]){ 0.05f, 4.0f }, 2);
		for (int pi = 0; pi < 3; pi++) {
			if (mc_gemm_s8_use(s8_paths[pi]))
				continue;
			for (int n = 1; n <= 17; n += 16)
				for (int t = 1; t <= 3; t++) {
					int same;

					omp_set_num_threads(t);
					same = exec_is_unfused(m, x, n, z0, z);
					ck_assert(isfinite(z0[0]) && z0[0] != z0[4]);
					ck_assert_msg(same,
						      "int8 ResNet, variant %d path %s: batch %d "
						      "threads %d",
						      variant, s8_paths[pi], n, t);
				}
		}
	}
	mc_gemm_s8_use(saved);
	omp_set_num_threads(2);
	free(z);
	free(z0);
	free(x);
	mc_model_free(m);
}
END_TEST

/*
 * Chains the inference executor runs as one step (conv2d -> batchnorm ->
 * activation -> add -> activation, kernels/conv.h's mc_conv_post): the
 * batched direct and packed paths, a depthwise conv of stride 1 and 2, a
 * grouped one on the batched kernels and one on the per-sample GEMMs, an
 * add whose other operand comes first, one of the model's input, clip,
 * relu6 and relu, a batchnorm read twice (its chain stops there), a
 * ResNet downsampling block (3x3 stride 2, 3x3, 1x1 stride 2 projection,
 * add, relu), and one chain ending the model.
 */
static const char *arch_bn =
    "{\"format\": 1, \"input\": [4, 10, 10], \"nodes\": ["
    "{\"name\": \"c0\", \"op\": \"conv2d\", \"inputs\": [\"input\"],"
    " \"attrs\": {\"out\": 4, \"padding\": 1}},"
    "{\"name\": \"b0\", \"op\": \"batchnorm\", \"inputs\": [\"c0\"]},"
    "{\"name\": \"a0\", \"op\": \"add\", \"inputs\": [\"b0\", \"input\"]},"
    "{\"name\": \"k0\", \"op\": \"relu6\", \"inputs\": [\"a0\"]},"
    "{\"name\": \"c1\", \"op\": \"conv2d\", \"inputs\": [\"k0\"],"
    " \"attrs\": {\"out\": 8, \"padding\": 1}},"
    "{\"name\": \"b1\", \"op\": \"batchnorm\", \"inputs\": [\"c1\"]},"
    "{\"name\": \"r1\", \"op\": \"relu6\", \"inputs\": [\"b1\"]},"
    "{\"name\": \"d1\", \"op\": \"conv2d\", \"inputs\": [\"r1\"],"
    " \"attrs\": {\"out\": 8, \"groups\": 8, \"stride\": 2, \"padding\": 1, \"bias\": false}},"
    "{\"name\": \"b2\", \"op\": \"batchnorm\", \"inputs\": [\"d1\"]},"
    "{\"name\": \"r2\", \"op\": \"relu\", \"inputs\": [\"b2\"]},"
    "{\"name\": \"p1\", \"op\": \"conv2d\", \"inputs\": [\"r2\"],"
    " \"attrs\": {\"out\": 8, \"kernel\": 1, \"bias\": false}},"
    "{\"name\": \"b3\", \"op\": \"batchnorm\", \"inputs\": [\"p1\"]},"
    "{\"name\": \"a1\", \"op\": \"add\", \"inputs\": [\"r2\", \"b3\"]},"
    "{\"name\": \"r3\", \"op\": \"relu\", \"inputs\": [\"a1\"]},"
    "{\"name\": \"d2\", \"op\": \"conv2d\", \"inputs\": [\"r3\"],"
    " \"attrs\": {\"out\": 8, \"groups\": 8, \"padding\": 1}},"
    "{\"name\": \"b4\", \"op\": \"batchnorm\", \"inputs\": [\"d2\"]},"
    "{\"name\": \"a2\", \"op\": \"add\", \"inputs\": [\"b4\", \"r3\"]},"
    "{\"name\": \"k2\", \"op\": \"clip\", \"inputs\": [\"a2\"],"
    " \"attrs\": {\"min\": -0.5, \"max\": 0.75}},"
    "{\"name\": \"g1\", \"op\": \"conv2d\", \"inputs\": [\"k2\"],"
    " \"attrs\": {\"out\": 8, \"groups\": 2, \"padding\": 1}},"
    "{\"name\": \"b5\", \"op\": \"batchnorm\", \"inputs\": [\"g1\"]},"
    "{\"name\": \"r5\", \"op\": \"relu6\", \"inputs\": [\"b5\"]},"
    "{\"name\": \"g2\", \"op\": \"conv2d\", \"inputs\": [\"r5\"],"
    " \"attrs\": {\"out\": 8, \"groups\": 4, \"kernel\": 1}},"
    "{\"name\": \"b6\", \"op\": \"batchnorm\", \"inputs\": [\"g2\"]},"
    "{\"name\": \"a3\", \"op\": \"add\", \"inputs\": [\"b6\", \"b6\"]},"
    "{\"name\": \"t1\", \"op\": \"conv2d\", \"inputs\": [\"a3\"],"
    " \"attrs\": {\"out\": 16, \"stride\": 2, \"padding\": 1, \"bias\": false}},"
    "{\"name\": \"u1\", \"op\": \"batchnorm\", \"inputs\": [\"t1\"]},"
    "{\"name\": \"v1\", \"op\": \"relu\", \"inputs\": [\"u1\"]},"
    "{\"name\": \"t2\", \"op\": \"conv2d\", \"inputs\": [\"v1\"],"
    " \"attrs\": {\"out\": 16, \"padding\": 1, \"bias\": false}},"
    "{\"name\": \"u2\", \"op\": \"batchnorm\", \"inputs\": [\"t2\"]},"
    "{\"name\": \"tp\", \"op\": \"conv2d\", \"inputs\": [\"a3\"],"
    " \"attrs\": {\"out\": 16, \"kernel\": 1, \"stride\": 2, \"bias\": false}},"
    "{\"name\": \"up\", \"op\": \"batchnorm\", \"inputs\": [\"tp\"]},"
    "{\"name\": \"ta\", \"op\": \"add\", \"inputs\": [\"u2\", \"up\"]},"
    "{\"name\": \"tr\", \"op\": \"relu\", \"inputs\": [\"ta\"]},"
    "{\"name\": \"s2\", \"op\": \"conv2d\", \"inputs\": [\"tr\"],"
    " \"attrs\": {\"out\": 12, \"stride\": 2, \"padding\": 1}},"
    "{\"name\": \"b7\", \"op\": \"batchnorm\", \"inputs\": [\"s2\"]},"
    "{\"name\": \"r7\", \"op\": \"relu\", \"inputs\": [\"b7\"]}]}";

START_TEST(fused_bn_chain_inference)
{
	static struct mc_err err;
	struct mc_model *m = mc_model_from_arch(arch_bn, "t", &err);
	const char *saved = mc_sgemm_kernel();
	int nmax = 9, nn;
	size_t per, nx = (size_t)nmax * 4 * 10 * 10;
	float *x, *z0, *z;

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 6);
	nn = mc_model_n_nodes(m);
	per = (size_t)mc_model_node(m, nn - 1)->out_numel;
	/* batch norms far from the identity, so that scale and shift enter every value */
	for (int i = 0; i < nn; i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		if (strcmp(nd->op->name, "batchnorm"))
			continue;
		for (int p = 0; p < 4; p++) {
			float *v = nd->params[p]->data;

			for (int64_t c = 0; c < nd->params[p]->numel; c++) {
				float u = mc_rand_uniform(31, (uint64_t)(10 * i + p), (uint64_t)c);

				v[c] = p == 3 ? 0.05f + 2.0f * u : p == 0 ? 0.2f + 1.5f * u : u - 0.5f;
			}
		}
	}
	x = random_f32(nx, 820, -1.0f);
	/* in the first sample: a NaN, an infinity and a -0 (the other samples stay finite) */
	x[17] = NAN;
	x[233] = INFINITY;
	x[51] = -0.0f;
	z0 = malloc((size_t)nmax * per * sizeof(float));
	z = malloc((size_t)nmax * per * sizeof(float));
	for (int pi = 0; pi < NPATHS; pi++) {
		if (mc_sgemm_use(paths[pi]))
			continue;
		for (int n = 1; n <= nmax; n += 8) {
			omp_set_num_threads(1);
			run_unfused(m, x, n, z0);
			for (int t = 1; t <= 3; t++) {
				struct mc_exec *e;

				omp_set_num_threads(t);
				e = mc_exec_new(m, n, 0, &err);
				ck_assert_msg(e != NULL, "%s", err.msg);
				memcpy(z, mc_forward(e, x, n), (size_t)n * per * sizeof(float));
				/* again: the batch norms' scale and shift are taken at each forward */
				memcpy(z, mc_forward(e, x, n), (size_t)n * per * sizeof(float));
				mc_exec_free(e);
				ck_assert_msg(!memcmp(z, z0, (size_t)n * per * sizeof(float)),
					      "conv2d + batchnorm chains: path %s batch %d threads %d",
					      paths[pi], n, t);
			}
		}
	}
	omp_set_num_threads(2);
	mc_sgemm_use(saved);
	free(z);
	free(z0);
	free(x);
	mc_model_free(m);
}
END_TEST

/* The epilogue's SIMD path against its scalar reference, NaN, infinities and zeros included. */
START_TEST(post_matches_ref)
{
	const int len = 101;
	const char *saved = mc_sgemm_kernel();
	float *src = random_f32(len, 830, -8.0f), *res = random_f32(len, 831, -8.0f);
	float *y = malloc(len * sizeof(float)), *ref = malloc(len * sizeof(float));
	float scale[3] = {1.5f, -0.75f, 3.0f}, shift[3] = {0.25f, -1.0f, 0.0f};

	for (int i = 0; i < len; i += 7) {
		src[i] = i % 3 == 0 ? NAN : i % 3 == 1 ? -0.0f : -INFINITY;
		res[(i * 5) % len] = i % 2 ? NAN : INFINITY;
	}
	for (int variant = 0; variant < 3 * 3 * 2 * 3 * 2; variant++) {
		struct mc_conv_post post = {0};
		int v = variant;

		post.act1 = v % 3;
		v /= 3;
		post.act2 = v % 3;
		v /= 3;
		post.add = v % 2;
		v /= 2;
		post.res_first = v % 3 == 2;
		if (v % 3 == 0)
			post.add = 0;
		v /= 3;
		if (v % 2) {
			post.scale = scale;
			post.shift = shift;
		}
		post.lo1 = 0.0f;
		post.hi1 = 6.0f;
		post.lo2 = -0.5f;
		post.hi2 = 0.75f;
		for (int o = 0; o < 3; o++)
			for (int pi = 0; pi < NPATHS; pi++) {
				if (mc_sgemm_use(paths[pi]))
					continue;
				/* every length up to len: whole vectors and each masked tail */
				for (int l = 0; l <= len; l += l < 40 ? 1 : 61) {
					mc_conv_post_run_ref(&post, o, src, res, ref, l);
					mc_conv_post_run(&post, o, src, res, y, l);
					ck_assert_msg(!memcmp(y, ref, (size_t)l * sizeof(float)),
						      "variant %d channel %d path %s length %d",
						      variant, o, paths[pi], l);
				}
				/* in place */
				memcpy(y, src, len * sizeof(float));
				mc_conv_post_run(&post, o, y, res, y, len);
				ck_assert_msg(!memcmp(y, ref, len * sizeof(float)),
					      "in place: variant %d channel %d path %s", variant,
					      o, paths[pi]);
			}
	}
	mc_sgemm_use(saved);
	free(ref);
	free(y);
	free(res);
	free(src);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("conv");
	TCase *tc = tcase_create("kernels");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, forward_matches_ref);
	tcase_add_test(tc, dw_matches_ref);
	tcase_add_test(tc, fused_model_deterministic);
	tcase_add_test(tc, fused_pool_inference);
	tcase_add_test(tc, fused_pool_odd_inference);
	tcase_add_test(tc, fused_pool_train);
	tcase_add_test(tc, fused_qconv_pool_inference);
	tcase_add_test(tc, int8_chain_u8_matches_f32_route);
	tcase_add_test(tc, int8_resnet_u8_matches_f32_route);
	tcase_add_test(tc, fused_bn_chain_inference);
	tcase_add_test(tc, post_matches_ref);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
