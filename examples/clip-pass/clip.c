/* SPDX-License-Identifier: MIT */
/*
 * clip - an out-of-tree mcomp pass: clamps each weight tensor to
 * mean +- sigmas * standard deviation, taming the outliers that stretch a
 * quantizer's range. It builds from the installed headers alone:
 *
 *	cc -shared -fPIC -o clip.so clip.c $(pkg-config --cflags --libs mcomp)
 */
#include <math.h>

#include <mcomp/mcomp.h>

struct clip_conf {
	char *model;
	double sigmas;
	int bias;
};

static const struct mc_param_def clip_params[] = {
	MC_PARAM_MODEL(struct clip_conf, model, NULL, "the model whose weights are clipped"),
	MC_PARAM_FLOAT(struct clip_conf, sigmas, "3", 0.1, 100,
		       "clip to mean +- this many standard deviations"),
	MC_PARAM_BOOL(struct clip_conf, bias, "false", "clip bias vectors too"),
	MC_PARAM_END,
};

/* Clips t in place; returns how many values moved. */
static int64_t clip_tensor(struct mc_tensor *t, double sigmas)
{
	float *w = t->data;
	double sum = 0, sq = 0, mean, sd, lo, hi;
	int64_t i, moved = 0;

	for (i = 0; i < t->numel; i++)
		sum += w[i];
	mean = sum / t->numel;
	for (i = 0; i < t->numel; i++)
		sq += (w[i] - mean) * (w[i] - mean);
	sd = sqrt(sq / t->numel);
	lo = mean - sigmas * sd;
	hi = mean + sigmas * sd;
	for (i = 0; i < t->numel; i++) {
		if (w[i] < lo || w[i] > hi) {
			w[i] = w[i] < lo ? (float)lo : (float)hi;
			moved++;
		}
	}
	return moved;
}

static int clip_run(struct mc_ctx *ctx, const void *conf)
{
	const struct clip_conf *c = conf;
	struct mc_model *m = mc_ctx_model(ctx, c->model);
	int64_t moved = 0, total = 0;
	int i, p;

	for (i = 0; i < mc_model_n_nodes(m); i++) {
		for (p = 0; p < mc_model_node(m, i)->n_params; p++) {
			struct mc_tensor *t = mc_model_node(m, i)->params[p];

			if (t->dtype != MC_F32 || (t->ndim < 2 && !c->bias))
				continue;
			moved += clip_tensor(t, c->sigmas);
			total += t->numel;
		}
	}
	mc_ctx_log(ctx, "clipped %lld of %lld weights of %s to %.1f sigma", (long long)moved,
		   (long long)total, c->model, c->sigmas);
	return mc_ctx_report(ctx, "clipped_fraction", total ? (double)moved / total : 0);
}

static const struct mc_pass clip_pass = {
	.abi = MC_PASS_ABI,
	.name = "clip",
	.version = "1.0",
	.description = "clamp weights to mean +- k standard deviations (example pass)",
	.license = "MIT",
	.author = "the mcomp developers",
	.conf_size = sizeof(struct clip_conf),
	.params = clip_params,
	.run = clip_run,
};
MC_PASS_DEFINE(clip_pass);
