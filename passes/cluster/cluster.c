// SPDX-License-Identifier: MIT
/*
 * cluster - weight sharing, the second stage of Han et al.'s Deep
 * Compression: the nonzero weights of each linear and conv2d layer are
 * clustered by k-means into k = 2^bits shared values (biases too, on
 * request), then optionally fine-tuned so that each shared value
 * (centroid) moves along the sum of its members' gradients while pruned
 * weights stay exactly zero. The model
 * file then stores each such layer as a codebook and packed codes
 * (core/io/model_io.c, docs/deep-compression.md).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/layers.h"
#include "cluster.h"

static const char *const inits[] = { "linear", "density", "k-means++", NULL };

static const struct mc_param_def cluster_params[] = {
    MC_PARAM_MODEL(struct cluster_conf, model, NULL, "the model whose weights are shared"),
    MC_PARAM_INT(struct cluster_conf, bits, "5", 2, 8,
		 "bits per weight index: 2^bits shared values per layer"),
    MC_PARAM_MAP(struct cluster_conf, overrides, MC_PARAM_TINT, "{}", 2, 8,
		 "per-layer bits: {NAME: BITS}, NAME a layer name or glob; the first match "
		 "wins"),
    MC_PARAM_LIST(struct cluster_conf, exclude, MC_PARAM_TSTRING, "[]", 0, 0,
		  "layer names or globs left unclustered"),
    MC_PARAM_INT(struct cluster_conf, bias_bits, "0", 0, 8,
		 "also share each clustered layer's bias among 2^bias_bits values (2 to 8); "
		 "0: biases stay f32"),
    MC_PARAM_ENUM(struct cluster_conf, init, "linear", inits,
		  "initial centroids: linear (evenly over [min, max]), density (evenly over "
		  "the weights' distribution) or k-means++ (drawn from the seed)"),
    MC_PARAM_INT(struct cluster_conf, iterations, "100", 1, 100000,
		 "k-means iterations at most; it stops when no weight changes cluster"),
    /* Optional: only fine-tuning reads a split; train_split() gives the default. */
    MC_PARAM_SPLIT(struct cluster_conf, data, NULL, "the split to fine-tune on; default: train",
		   .flags = MC_PARAM_FOPTIONAL),
    MC_PARAM_INT(struct cluster_conf, finetune_epochs, "0", 0, 100000,
		 "epochs of centroid fine-tuning (0: none)"),
    MC_PARAM_INT(struct cluster_conf, batch_size, "128", 1, 65536, "fine-tuning batch"),
    MC_GRAD_GROUPS_PARAM(struct cluster_conf, grad_groups, "fine-tuning: ", ""),
    /* The training rows of MC_TRAIN_PARAMS, but SGD by default: with it a
     * shared value's step is its members' summed gradient (see after_step). */
    MC_TRAIN_PARAM_(struct cluster_conf, opts, optimizer, MC_PARAM_TENUM, "sgd", 0, 0,
		    mc_optimizer_names,
		    "the update rule; under adam a shared value moves by up to its member "
		    "count times lr a step"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, lr, MC_PARAM_TFLOAT, "0.0001", 1e-12, 10, NULL,
		    "learning rate"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, momentum, MC_PARAM_TFLOAT, "0.9", 0, 0.999999, NULL,
		    "SGD momentum"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, beta1, MC_PARAM_TFLOAT, "0.9", 0, 0.999999, NULL,
		    "Adam's first-moment decay"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, beta2, MC_PARAM_TFLOAT, "0.999", 0, 0.999999, NULL,
		    "Adam's second-moment decay"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, weight_decay, MC_PARAM_TFLOAT, "0", 0, 1, NULL,
		    "L2 penalty added to the gradient"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, schedule, MC_PARAM_TENUM, "cosine", 0, 0,
		    mc_lr_schedule_names,
		    "learning rate over the run: constant, step (times gamma every "
		    "step_epochs), or cosine (down to min_lr)"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, step_epochs, MC_PARAM_TINT, "1", 1, 100000, NULL,
		    "step schedule: epochs between decays"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, gamma, MC_PARAM_TFLOAT, "0.1", 1e-6, 1, NULL,
		    "step schedule: decay factor"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, min_lr, MC_PARAM_TFLOAT, "0", 0, 10, NULL,
		    "cosine schedule: the learning rate at the last step"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, shift, MC_PARAM_TINT, "0", 0, 8, NULL,
		    "augmentation: shift each training image by up to this many pixels along "
		    "each axis (a new draw per epoch)"),
    MC_TRAIN_PARAM_(struct cluster_conf, opts, hflip, MC_PARAM_TBOOL, "false", 0, 1, NULL,
		    "augmentation: mirror half of the training images left to right"),
    MC_PARAM_INT(struct cluster_conf, seed, "-1", -1, INT_MAX,
		 "k-means++ draws and fine-tuning shuffle; -1 uses the pipeline's seed"),
    MC_PARAM_END,
};

/* One shared tensor (a layer's weight, or its bias) and its state during
 * fine-tuning. */
struct layer {
	int node;
	int param; /* 0: the weight, 1: the bias */
	const char *name;
	int bits, k, used, iters;
	int64_t nnz;
	uint16_t *assign; /* [numel]: cluster, or CLUSTER_NONE */
	float *c;	  /* [k], ascending */
};

/* The split fine-tuning trains on: data, else "train". */
static const char *train_split(const struct cluster_conf *c)
{
	return c->data ? c->data : "train";
}

static int is_layer(const struct mc_node *nd)
{
	return !strcmp(nd->op->name, "linear") || !strcmp(nd->op->name, "conv2d");
}

static int is_quantized_layer(const struct mc_node *nd)
{
	return !strcmp(nd->op->name, "qlinear") || !strcmp(nd->op->name, "qconv2d");
}

/* The bits of layer name: the first matching override, else the pass's. */
static int layer_bits(const struct cluster_conf *c, const char *name)
{
	int o = layers_first_override(&c->overrides, name);

	return o >= 0 ? (int)c->overrides.num[o] : c->bits;
}

static int cluster_check(struct mc_ctx *ctx, const void *conf)
{
	const struct cluster_conf *c = conf;
	const struct mc_model *m = mc_ctx_model(ctx, c->model);
	int n = 0, ret;

	if (!m)
		return 0; /* the host has said so */
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		if (layers_match_any(&c->exclude, nd->name))
			continue;
		if (is_quantized_layer(nd) || (is_layer(nd) && nd->params[0]->dtype != MC_F32))
			return mc_ctx_error(ctx, "model", MC_EINVAL,
					    "layer '%s' of model '%s' is quantized (%s); weight "
					    "sharing clusters f32 weights: cluster before quantizing, "
					    "or exclude '%s'",
					    nd->name, c->model, nd->op->name, nd->name);
		n += is_layer(nd);
	}
	ret = layers_check_patterns(ctx, c->model, m, is_layer, &c->overrides, &c->exclude);
	if (ret)
		return ret;
	if (!n)
		return mc_ctx_error(ctx, "exclude", MC_EINVAL,
				    "model '%s' has no linear or conv2d layer left to cluster%s",
				    c->model, c->exclude.n ? "; exclude fewer layers" : "");
	if (c->bias_bits == 1)
		return mc_ctx_error(ctx, "bias_bits", MC_EINVAL,
				    "1 bit is 2 values; use 2 to 8 bits, or 0 to keep biases f32");
	if (c->finetune_epochs > 0) {
		ret = mc_ctx_check_data(ctx, "data", train_split(c));
		if (!ret)
			ret = mc_ctx_check_grad_groups(ctx, c->grad_groups, c->batch_size);
	}
	return ret;
}

/* ---------------------------------------------------------------- running */

static void layers_free(struct layer *l, int n)
{
	for (int i = 0; l && i < n; i++) {
		free(l[i].assign);
		free(l[i].c);
	}
	free(l);
}

static struct mc_tensor *weight(const struct mc_model *m, const struct layer *l)
{
	return mc_model_node(m, l->node)->params[l->param];
}

/* Adds the shared tensor param of node i with bits to l[*k]. */
static int add_layer(struct mc_ctx *ctx, const struct mc_model *m, int i, int param, int bits,
		     struct layer *l, int *k)
{
	const struct mc_node *nd = mc_model_node(m, i);
	struct layer *x = &l[(*k)++];

	x->node = i;
	x->param = param;
	x->name = nd->name;
	x->bits = bits;
	x->k = 1 << bits;
	x->assign = malloc((size_t)nd->params[param]->numel * sizeof(uint16_t) + 1);
	x->c = malloc((size_t)x->k * sizeof(float));
	if (!x->assign || !x->c)
		return mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory for layer '%s'", nd->name);
	return 0;
}

/* The tensors c shares, with their bits: each layer's weight, and its bias
 * with bias_bits. */
static int select_layers(struct mc_ctx *ctx, const struct cluster_conf *c,
			 const struct mc_model *m, struct layer **out, int *n)
{
	struct layer *l = calloc(2 * (size_t)mc_model_n_nodes(m) + 1, sizeof(*l));
	int k = 0, ret = 0;

	if (!l)
		return mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
	for (int i = 0; i < mc_model_n_nodes(m) && !ret; i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		if (!is_layer(nd) || layers_match_any(&c->exclude, nd->name))
			continue;
		ret = add_layer(ctx, m, i, 0, layer_bits(c, nd->name), l, &k);
		if (!ret && c->bias_bits && nd->n_params > 1)
			ret = add_layer(ctx, m, i, 1, c->bias_bits, l, &k);
	}
	if (ret) {
		layers_free(l, k);
		return ret;
	}
	*out = l;
	*n = k;
	return 0;
}

/* k-means on every layer, threads over layers (each layer's result does
 * not depend on which thread runs it), then every weight set to its
 * centroid. */
static int cluster_layers(struct mc_ctx *ctx, const struct cluster_conf *c, struct mc_model *m,
			  struct layer *l, int n)
{
	uint64_t seed = c->seed >= 0 ? (uint64_t)c->seed : mc_ctx_seed(ctx);
	struct mc_err *errs = calloc((size_t)n + 1, sizeof(*errs));
	int ret = 0;

	if (!errs)
		return mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
#pragma omp parallel for schedule(dynamic, 1)
	for (int i = 0; i < n; i++) {
		struct mc_tensor *w = weight(m, &l[i]);
		float *x = w->data;

		/* the stream names the layer by its node, so excluding another
		 * layer leaves this one's draws alone */
		if (cluster_kmeans(x, w->numel, l[i].k, c->init, seed,
				   0x636c7573u + (uint64_t)l[i].node + ((uint64_t)l[i].param << 32),
				   c->iterations, l[i].assign, l[i].c, &l[i].iters, &errs[i]))
			continue;
		l[i].nnz = 0;
		for (int64_t j = 0; j < w->numel; j++) {
			x[j] = l[i].assign[j] == CLUSTER_NONE ? 0.0f : l[i].c[l[i].assign[j]];
			l[i].nnz += l[i].assign[j] != CLUSTER_NONE;
		}
	}
	for (int i = 0; i < n && !ret; i++)
		if (errs[i].code)
			ret = mc_ctx_error(ctx, NULL, errs[i].code, "layer '%s': %s", l[i].name,
					   errs[i].msg);
	free(errs);
	return ret;
}

/* The shared values of layer l in use (a value may serve no weight). */
static int used_clusters(const struct mc_model *m, struct layer *l)
{
	const struct mc_tensor *w = weight(m, l);
	uint8_t seen[CLUSTER_MAX_K] = {0};
	int used = 0;

	for (int64_t j = 0; j < w->numel; j++)
		if (l->assign[j] != CLUSTER_NONE && !seen[l->assign[j]]) {
			seen[l->assign[j]] = 1;
			used++;
		}
	return used;
}

struct tuner {
	struct layer *l;
	int n;
};

/* After each optimizer step: the centroids take their members' changes. */
static int after_step(void *arg, struct mc_model *m, int64_t step, struct mc_err *err)
{
	const struct tuner *tu = arg;

	(void)step;
	for (int i = 0; i < tu->n; i++) {
		struct layer *l = &tu->l[i];
		struct mc_tensor *w = weight(m, l);
		int ret = cluster_share(w->data, w->numel, l->assign, l->c, l->k, err);

		if (ret)
			return ret;
	}
	return 0;
}

static int finetune(struct mc_ctx *ctx, const struct cluster_conf *c, struct mc_model *m,
		    const struct mc_dataset *d, struct layer *l, int n)
{
	struct tuner tu = { .l = l, .n = n };
	struct mc_train_hooks hooks = { .arg = &tu, .after_step = after_step };
	struct mc_train_conf tc = {
	    .epochs = c->finetune_epochs,
	    .batch_size = c->batch_size,
	    .seed = c->seed >= 0 ? (uint64_t)c->seed : mc_ctx_seed(ctx),
	    .label = "cluster: fine-tune",
	    .grad_groups = c->grad_groups,
	};

	mc_train_opts_apply(&c->opts, &tc);
	if (tc.optim.kind == MC_OPTIM_ADAM)
		mc_ctx_log(ctx, "warning: under adam each member takes a step of about lr and its "
				"shared value moves by their sum; keep lr near 1e-8, or use sgd "
				"(docs/deep-compression.md)");
	return mc_train(m, d, &tc, &hooks, mc_ctx_err(ctx));
}

/* Accuracy on the split results are reported on (test, else the
 * fine-tuning split); -1 when there is neither. */
static int accuracy(struct mc_ctx *ctx, const struct mc_model *m, const struct mc_dataset *d,
		    double *acc, const char **split)
{
	const struct mc_dataset *e = mc_ctx_eval_data(ctx, d, "train", split);

	*acc = -1;
	if (!e)
		return *split && !strcmp(*split, "test") ? mc_ctx_err(ctx)->code : 0;
	return mc_evaluate(m, e, 256, acc, NULL, mc_ctx_err(ctx));
}

static int report(struct mc_ctx *ctx, const struct mc_model *m, struct layer *l, int n)
{
	int64_t weights = 0, nnz = 0, code_bits = 0, book = 0;
	double payload = 0;
	char key[300], shape[128], label[260];
	int bits;

	for (int i = 0; i < n; i++) {
		const struct mc_tensor *w = weight(m, &l[i]);
		int64_t rows = w->ndim > 1 ? w->shape[0] : 1;
		/* positions of the nonzeros: none, a bitmask or CSR, the cheapest */
		double pos = l[i].nnz == w->numel ? 0 : (double)w->numel;

		if (l[i].nnz < w->numel && 32.0 * (double)(rows + 1 + l[i].nnz) < pos)
			pos = 32.0 * (double)(rows + 1 + l[i].nnz);
		l[i].used = used_clusters(m, &l[i]);
		/* the file codes the values in use with the fewest bits that hold them */
		for (bits = 1; (1 << bits) < l[i].used; bits++)
			;
		book += 4 * l[i].used;
		if (!l[i].param) {
			weights += w->numel;
			nnz += l[i].nnz;
			code_bits += l[i].nnz * bits;
			payload += pos + (double)(l[i].nnz * bits) + 32.0 * l[i].used;
		}
		snprintf(label, sizeof(label), "%s%s", l[i].name, l[i].param ? ".bias" : "");
		mc_ctx_log(ctx, "%s: %s, %lld of %lld %s nonzero in %d shared values of %d "
				"(%d-bit codes), %d k-means iterations",
			   label, mc_shape_text(w->ndim, w->shape, shape, sizeof(shape)),
			   (long long)l[i].nnz, (long long)w->numel, l[i].param ? "biases" : "weights",
			   l[i].used, l[i].k, bits, l[i].iters);
		snprintf(key, sizeof(key), "%s.bits", label);
		mc_ctx_report(ctx, key, bits);
		snprintf(key, sizeof(key), "%s.clusters", label);
		mc_ctx_report(ctx, key, l[i].used);
		snprintf(key, sizeof(key), "%s.codebook_bytes", label);
		mc_ctx_report(ctx, key, 4.0 * l[i].used);
	}
	mc_ctx_log(ctx, "clustered weights: %lld, %lld nonzero at %.2f bits each; %.3f bits per "
			"weight with positions and codebooks (f32: 32); codebooks %lld bytes",
		   (long long)weights, (long long)nnz, nnz ? (double)code_bits / (double)nnz : 0.0,
		   weights ? payload / (double)weights : 0.0, (long long)book);
	mc_ctx_report(ctx, "index_bits", nnz ? (double)code_bits / (double)nnz : 0.0);
	mc_ctx_report(ctx, "bits_per_weight", weights ? payload / (double)weights : 0.0);
	return mc_ctx_report(ctx, "codebook_bytes", (double)book);
}

static int cluster_run(struct mc_ctx *ctx, const void *conf)
{
	const struct cluster_conf *c = conf;
	struct mc_model *m = mc_ctx_model(ctx, c->model);
	const struct mc_dataset *d = NULL;
	const char *split = NULL;
	struct layer *l = NULL;
	double before, after;
	int n = 0, ret;

	if (c->finetune_epochs > 0) {
		d = mc_ctx_data(ctx, train_split(c));
		if (!d)
			return mc_ctx_err(ctx)->code;
		if (d->sample_numel != mc_model_in_numel(m) || d->n_classes > mc_model_n_classes(m))
			return mc_ctx_error(ctx, "data", MC_ERUN,
					    "split '%s' does not fit model '%s' (%lld values, %d "
					    "classes; the model takes %lld values, %lld classes)",
					    train_split(c), c->model, (long long)d->sample_numel,
					    d->n_classes, (long long)mc_model_in_numel(m),
					    (long long)mc_model_n_classes(m));
	}
	ret = select_layers(ctx, c, m, &l, &n);
	if (ret)
		return ret;
	ret = cluster_layers(ctx, c, m, l, n);
	if (ret)
		goto out;
	ret = accuracy(ctx, m, d, &before, &split);
	if (ret)
		goto out;
	if (before >= 0) {
		mc_ctx_log(ctx, "after k-means (%s init): accuracy %.2f%% on %s", inits[c->init],
			   100 * before, split);
		mc_ctx_report(ctx, "accuracy_clustered", before);
	}
	if (c->finetune_epochs > 0) {
		ret = finetune(ctx, c, m, d, l, n);
		if (!ret)
			ret = accuracy(ctx, m, d, &after, &split);
		if (ret)
			goto out;
		if (after >= 0) {
			mc_ctx_log(ctx, "after %d epochs of centroid fine-tuning: accuracy %.2f%% on %s",
				   c->finetune_epochs, 100 * after, split);
			mc_ctx_report(ctx, "accuracy_finetuned", after);
		}
	}
	ret = report(ctx, m, l, n);
out:
	layers_free(l, n);
	return ret;
}

static const struct mc_pass cluster_pass = {
	.abi = MC_PASS_ABI,
	.name = "cluster",
	.version = "1.0",
	.description = "share weights: k-means of each layer's nonzero weights into 2^bits values "
		       "(stored as a codebook and packed codes), with centroid fine-tuning",
	.license = "MIT",
	.author = "the mcomp developers",
	.conf_size = sizeof(struct cluster_conf),
	.params = cluster_params,
	.check = cluster_check,
	.run = cluster_run,
};
MC_PASS_DEFINE(cluster_pass);
