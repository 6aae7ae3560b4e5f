/* SPDX-License-Identifier: MIT */
/*
 * lowrank - an out-of-tree mcomp pass: splits each chosen linear layer W [out, in] + b, by a
 * truncated SVD W ~ U_r S_r V_r^T, into "<name>_v" = sqrt(S_r) V_r^T [r, in] (no bias) and
 * "<name>" = U_r sqrt(S_r) [out, r] + b: r (in + out) weights instead of in out. Then it
 * fine-tunes. Builds from the installed headers alone, like examples/clip-pass:
 *
 *	cc -shared -fPIC -o lowrank.so lowrank.c $(pkg-config --cflags --libs mcomp) -lm
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/mcomp.h>

struct lowrank_conf {
	char *model, *data;
	struct mc_list layers;
	int rank, finetune_epochs;
	struct mc_train_opts opts;
};

static const struct mc_param_def lowrank_params[] = {
	MC_PARAM_MODEL(struct lowrank_conf, model, NULL, "the model whose linear layers are split"),
	MC_PARAM_LIST(struct lowrank_conf, layers, MC_PARAM_TSTRING, "[]", 0, 0,
		      "linear layers to split; [] is every linear layer but the last"),
	MC_PARAM_INT(struct lowrank_conf, rank, "32", 1, 65536, "rank r of each factorization"),
	MC_PARAM_INT(struct lowrank_conf, finetune_epochs, "1", 0, 1000, "epochs of fine-tuning"),
	MC_PARAM_SPLIT(struct lowrank_conf, data, "train", "the data split to fine-tune on"),
	MC_TRAIN_PARAMS(struct lowrank_conf, opts, "0.0005", "cosine"),
	MC_PARAM_END,
};

/*
 * One-sided Jacobi SVD (Hestenes), in place, in a fixed order: rotates pairs of rows of
 * a[m, n] until all are orthogonal (at most 60 sweeps). Then a = Q^T W for an orthogonal Q,
 * so row i is s_i v_i^T: its norm a singular value, its direction a right singular vector.
 */
static void jacobi_rows(double *a, int m, int n)
{
	for (int sweep = 0, rotated = 1; sweep < 60 && rotated; sweep++)
		for (int p = rotated = 0; p < m - 1; p++)
			for (int q = p + 1; q < m; q++) {
				double *x = a + (size_t)p * n, *y = a + (size_t)q * n;
				double al = 0, be = 0, ga = 0, z, t, c, u;

				for (int k = 0; k < n; k++) {
					al += x[k] * x[k];
					be += y[k] * y[k];
					ga += x[k] * y[k];
				}
				if (fabs(ga) <= 1e-13 * sqrt(al * be))
					continue;
				rotated = 1;
				/* t = tan of the angle: the smaller root of t^2 + 2zt - 1 */
				z = (be - al) / (2 * ga);
				t = (z >= 0 ? 1 : -1) / (fabs(z) + sqrt(1 + z * z));
				c = 1 / sqrt(1 + t * t);
				for (int k = 0; k < n; k++) {
					u = x[k];
					x[k] = c * (u - t * y[k]);
					y[k] = c * (t * u + y[k]);
				}
			}
}

/*
 * Splits linear node i of m; at validation (a model of shapes only) makes the graph change
 * alone. Returns 1, 0 when rank r saves no weights, or an error code with m unchanged. *rel:
 * the relative Frobenius error ||W - U_r S_r V_r^T|| / ||W||.
 */
static int split(struct mc_ctx *ctx, struct mc_model *m, int i, int rank, double *rel)
{
	const struct mc_node *nd = mc_model_node(m, i);
	int out = nd->params[0]->shape[0], in = nd->params[0]->shape[1], k, j, t, ret, *ord;
	int r = rank < out && rank < in ? rank : out < in ? out : in;
	struct mc_attr attrs[] = { MC_ATTR_INT("out", r), MC_ATTR_BOOL("bias", 0), MC_ATTR_END };
	double *a, *s2, tot = 0, kept = 0;
	float *w, *f, *g;
	char name[256];

	if ((int64_t)r * (in + out) >= (int64_t)in * out)
		return 0;
	snprintf(name, sizeof(name), "%s_v", nd->name);
	if ((int64_t)out * in > 1 << 28) /* int indices below, and 12 bytes a weight */
		return mc_ctx_error(ctx, "layers", MC_EINVAL, "%s: too large to factorize", nd->name);
	if (mc_model_is_arch(m))
		return mc_model_insert_before(m, i, name, "linear", attrs, mc_ctx_err(ctx)) < 0
			       ? mc_ctx_err(ctx)->code : 1;
	/* a[out, in] and s2[out] in double, a copy of W (it goes with its node), ord[out] */
	a = malloc((size_t)out * (in * (sizeof(*a) + sizeof(*w)) + sizeof(*a) + sizeof(*ord)));
	if (!a)
		return mc_ctx_error(ctx, NULL, MC_ENOMEM, "%s: out of memory", nd->name);
	s2 = a + out * in;
	w = memcpy(s2 + out, nd->params[0]->data, sizeof(float) * out * in);
	ord = (int *)(w + out * in);
	for (k = 0; k < out * in; k++)
		a[k] = w[k];
	jacobi_rows(a, out, in);
	for (k = 0; k < out; tot += s2[k++])
		for (j = 0, s2[k] = 1e-300, ord[k] = k; j < in; j++) /* > 0 */
			s2[k] += a[k * in + j] * a[k * in + j];
	for (k = 0; k < r; kept += s2[ord[k++]]) /* the r largest singular values first */
		for (j = k + 1; j < out; j++)
			if (s2[ord[j]] > s2[ord[k]])
				t = ord[k], ord[k] = ord[j], ord[j] = t;
	ret = mc_model_insert_before(m, i, name, "linear", attrs, mc_ctx_err(ctx));
	if (ret >= 0) {
		f = mc_model_node(m, i)->params[0]->data;     /* sqrt(S_r) V_r^T [r, in] */
		g = mc_model_node(m, i + 1)->params[0]->data; /* U_r sqrt(S_r) = W F^T / S_r */
		for (k = 0; k < r * in; k++)
			f[k] = a[ord[k / in] * in + k % in] / pow(s2[ord[k / in]], 0.25);
		mc_sgemm(0, 1, out, r, in, 1, w, in, f, in, 0, g, r);
		for (k = 0; k < out * r; k++)
			g[k] /= sqrt(s2[ord[k % r]]);
		*rel = sqrt(fmax(1 - kept / tot, 0));
		mc_ctx_log(ctx, "%s [%d, %d]: rank %d, %d -> %d weights, relative error %.4f",
			   nd->name, out, in, r, in * out, r * (in + out), *rel);
	}
	free(a);
	return ret < 0 ? ret : 1;
}

static int is_linear(const struct mc_model *m, int i)
{
	return i >= 0 && !strcmp(mc_model_node(m, i)->op->name, "linear");
}

/* Splits the layers named in c->layers, by default every linear layer but the last. Returns
 * 0 or an error code. */
static int split_all(struct mc_ctx *ctx, struct mc_model *m, const struct lowrank_conf *c)
{
	int i, k, n = 0, ret, pick;
	double rel = 0, worst = 0;

	for (k = 0; k < c->layers.n; k++)
		if (!is_linear(m, mc_model_find(m, c->layers.str[k])))
			return mc_ctx_error(ctx, "layers", MC_EINVAL,
					    "'%s' is not a linear layer of model '%s'",
					    c->layers.str[k], c->model);
	for (i = 0; i < mc_model_n_nodes(m); i += 1 + ret, n += ret) {
		for (k = 0, pick = 0; k < c->layers.n; k++)
			pick |= !strcmp(c->layers.str[k], mc_model_node(m, i)->name);
		for (k = i + 1; !c->layers.n && is_linear(m, i) && k < mc_model_n_nodes(m); k++)
			pick |= is_linear(m, k);
		ret = pick ? split(ctx, m, i, c->rank, &rel) : 0;
		if (ret < 0)
			return ret;
		if (pick && !ret && !mc_model_is_arch(m))
			mc_ctx_log(ctx, "%s: rank %d saves no weights; left alone",
				   mc_model_node(m, i)->name, c->rank);
		worst = fmax(worst, rel);
	}
	mc_ctx_report(ctx, "layers_split", n); /* (no row while validating) */
	return mc_ctx_report(ctx, "max_relative_error", worst);
}

/* Validation: the passes after this one see the model split (see mcomp/pass.h). */
static int lowrank_check(struct mc_ctx *ctx, const void *conf)
{
	const struct lowrank_conf *c = conf;
	struct mc_model *m = mc_ctx_model(ctx, c->model);

	return m && mc_model_is_arch(m) ? split_all(ctx, m, c) : 0;
}

static int lowrank_run(struct mc_ctx *ctx, const void *conf)
{
	const struct lowrank_conf *c = conf;
	struct mc_model *m = mc_ctx_model(ctx, c->model);
	const struct mc_dataset *d = c->finetune_epochs ? mc_ctx_data(ctx, c->data) : NULL;
	struct mc_train_conf tc = { .epochs = c->finetune_epochs, .batch_size = 128,
				    .seed = mc_ctx_seed(ctx), .label = c->model };
	int ret = c->finetune_epochs && !d ? mc_ctx_err(ctx)->code : split_all(ctx, m, c);

	mc_train_opts_apply(&c->opts, &tc);
	return ret || !c->finetune_epochs ? ret : mc_train(m, d, &tc, NULL, mc_ctx_err(ctx));
}

static const struct mc_pass lowrank_pass = {
	.abi = MC_PASS_ABI,
	.name = "lowrank", .version = "1.0", .license = "MIT", .author = "the mcomp developers",
	.description = "split linear layers in two by truncated SVD, then fine-tune (example pass)",
	.conf_size = sizeof(struct lowrank_conf), .params = lowrank_params,
	.check = lowrank_check, .run = lowrank_run,
};
MC_PASS_DEFINE(lowrank_pass);
