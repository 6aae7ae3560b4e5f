// SPDX-License-Identifier: MIT
/*
 * qat.c - quantization-aware training (mode: qat): the model trains while
 * its forward sees the quantized model's numbers, then the pass converts it
 * with the post-training arithmetic (quantize.c).
 *
 * Weights. Each layer keeps f32 shadow weights w; its node holds fq(w),
 * the round trip through mc_quantize_weights and mc_dequantize_weights of
 * the layer's own spec (bits, scheme, granularity), the exact arithmetic of
 * post-training quantization. The optimizer steps the node's fq(w) by d;
 * after the step (mc_train's after_step hook) the shadow takes the same
 * step, w += (fq(w) + d) - fq(w), and the node gets fq of the new w. That
 * is the straight-through estimator (the gradient in fq(w) applied to w)
 * for SGD and Adam alike, whose state lives in the gradients and not in the
 * values; weight decay, which reads the values, sees fq(w).
 *
 * Activations. With act, a fake_quant node (core/graph/ops_fakequant.c)
 * goes before each layer, through the graph API: the u8 round trip of the
 * static integer kernels' input, with the range calibrated as static mode
 * calibrates it, fixed or learned. The nodes are removed after training.
 *
 * Everything here splits work over elements or rows, never a reduction,
 * so a run is the same bytes for any thread count.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "quantize.h"

struct qat_layer {
	char name[256];	  /* the layer's node */
	char wname[300];  /* "<layer>.weight" */
	char fqname[300]; /* its input's fake_quant node, when act */
	struct mc_qspec spec;
	int64_t rows, cols;
	float *shadow; /* [rows * cols] the f32 weights the steps move */
	float *held;   /* fq(shadow): what the node holds between steps */
	int8_t *q;     /* scratch of the round trip */
	float *scale;
	int8_t *zp;
};

struct qat {
	int n;
	struct qat_layer *l;
	struct mc_ctx *ctx;
	int epochs;
	double loss; /* the last epoch's mean training loss */
};

/* l->held = fq(l->shadow) per its spec; 0 or an error code with err set. */
static int round_trip(struct qat_layer *l, struct mc_err *err)
{
	int ret =
	    mc_quantize_weights(l->shadow, l->rows, l->cols, &l->spec, l->q, l->scale, l->zp, err);

	if (ret)
		return ret;
	mc_dequantize_weights(l->q, l->rows, l->cols, &l->spec, l->scale, l->zp, l->held);
	return 0;
}

/* After each step: the shadow takes the node's step, the node gets fq(shadow). */
static int after_step(void *arg, struct mc_model *m, int64_t step, struct mc_err *err)
{
	struct qat *q = arg;

	for (int t = 0; t < q->n; t++) {
		struct qat_layer *l = &q->l[t];
		struct mc_tensor *w = mc_model_param(m, l->wname);
		float *wd = w->data;
		int64_t total = l->rows * l->cols;
		int ret;

#pragma omp parallel for schedule(static) if (total >= 32768)
		for (int64_t i = 0; i < total; i++)
			l->shadow[i] += wd[i] - l->held[i];
		ret = round_trip(l, err);
		if (ret) {
			mc_err_prefix(err, "quantization-aware training, step %lld, layer '%s'",
				      (long long)step, l->wname);
			return ret;
		}
		memcpy(wd, l->held, (size_t)total * sizeof(float));
	}
	return 0;
}

static int after_epoch(void *arg, struct mc_model *m, int epoch, double loss, struct mc_err *err)
{
	struct qat *q = arg;

	q->loss = loss;
	mc_ctx_log(q->ctx, "qat epoch %d/%d: training loss %.4f", epoch + 1, q->epochs, loss);
	return 0;
}

static void layers_free(struct qat_layer *l, int n)
{
	for (int t = 0; l && t < n; t++) {
		mc_free(l[t].shadow);
		mc_free(l[t].held);
		free(l[t].q);
		free(l[t].scale);
		free(l[t].zp);
	}
	free(l);
}

/* Adds the fake_quant node before each layer, its range [lo[t], hi[t]]. */
static int insert_fake_quant(struct mc_ctx *ctx, struct mc_model *m, struct qat_layer *l, int n,
			     int learn, const float *lo, const float *hi)
{
	const struct mc_attr attrs[] = {MC_ATTR_BOOL("learn", learn), MC_ATTR_END};
	struct mc_err *err = mc_ctx_err(ctx);

	for (int t = 0; t < n; t++) {
		char range_name[400];
		float *r;
		int at;

		snprintf(l[t].fqname, sizeof(l[t].fqname), "%s_qat_in", l[t].name);
		at = mc_model_insert_before(m, mc_model_find(m, l[t].name), l[t].fqname,
					    "fake_quant", attrs, err);
		if (at < 0) {
			mc_err_prefix(err, "quantization-aware training: layer '%s'", l[t].name);
			return at;
		}
		snprintf(range_name, sizeof(range_name), "%s.range", l[t].fqname);
		r = mc_model_param(m, range_name)->data;
		r[0] = lo[t];
		r[1] = hi[t];
	}
	return 0;
}

/* Reads each fake_quant node's range back into lo, hi and removes the node. */
static int remove_fake_quant(struct mc_ctx *ctx, struct mc_model *m, struct qat_layer *l, int n,
			     float *lo, float *hi)
{
	for (int t = 0; t < n; t++) {
		char range_name[400];
		const float *r;
		int at = mc_model_find(m, l[t].fqname), ret;

		if (at < 0)
			continue;
		snprintf(range_name, sizeof(range_name), "%s.range", l[t].fqname);
		r = mc_model_param(m, range_name)->data;
		lo[t] = r[0];
		hi[t] = r[1];
		ret = mc_model_remove_node(m, at, mc_ctx_err(ctx));
		if (ret)
			return ret;
	}
	return 0;
}

int quantize_qat(struct mc_ctx *ctx, const struct quantize_conf *c, struct mc_model *m,
		 const int *idx, const struct mc_qspec *spec, int n, int act, int learn, float *lo,
		 float *hi)
{
	const char *split = c->data ? c->data : "train";
	const struct mc_dataset *d = mc_ctx_data(ctx, split);
	struct mc_err *err = mc_ctx_err(ctx);
	struct qat q = {.n = n, .ctx = ctx, .epochs = c->epochs};
	struct mc_train_hooks hooks = {
	    .arg = &q, .after_step = after_step, .after_epoch = after_epoch};
	struct mc_train_conf tc = {
	    .epochs = c->epochs,
	    .batch_size = c->batch_size,
	    .seed = c->seed >= 0 ? (uint64_t)c->seed : mc_ctx_seed(ctx),
	    .grad_groups = c->grad_groups,
	};
	char label[300];
	int ret = 0;

	if (!d)
		return err->code;
	if (d->sample_numel != mc_model_in_numel(m))
		return mc_ctx_error(ctx, "data", MC_ERUN,
				    "split '%s' has samples of %lld values but model '%s' takes "
				    "%lld; train on data of the model's input",
				    split, (long long)d->sample_numel, c->model,
				    (long long)mc_model_in_numel(m));
	mc_train_opts_apply(&c->train, &tc);
	snprintf(label, sizeof(label), "qat %s", c->model);
	tc.label = label;
	q.l = calloc((size_t)n, sizeof(*q.l));
	if (!q.l)
		return mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
	for (int t = 0; t < n && !ret; t++) {
		const struct mc_node *nd = mc_model_node(m, idx[t]);
		const struct mc_tensor *w = nd->params[0];
		struct qat_layer *l = &q.l[t];
		int64_t blocks;

		snprintf(l->name, sizeof(l->name), "%s", nd->name);
		snprintf(l->wname, sizeof(l->wname), "%s", w->name);
		l->spec = spec[t];
		l->rows = w->shape[0];
		l->cols = w->numel / w->shape[0];
		blocks = mc_qspec_blocks(&l->spec, l->rows, l->cols);
		l->shadow = mc_calloc((size_t)w->numel, sizeof(float));
		l->held = mc_calloc((size_t)w->numel, sizeof(float));
		l->q = malloc((size_t)w->numel);
		l->scale = malloc((size_t)blocks * sizeof(float));
		l->zp = calloc((size_t)blocks, 1);
		if (!l->shadow || !l->held || !l->q || !l->scale || !l->zp) {
			ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
			break;
		}
		memcpy(l->shadow, w->data, (size_t)w->numel * sizeof(float));
		ret = round_trip(l, err);
		if (ret)
			mc_err_prefix(err, "layer '%s'", nd->name);
		else
			memcpy(w->data, l->held, (size_t)w->numel * sizeof(float));
	}
	if (!ret && act)
		ret = insert_fake_quant(ctx, m, q.l, n, learn, lo, hi);
	if (!ret) {
		mc_ctx_log(ctx, "quantization-aware training: %d layers, %d epochs on '%s'%s", n,
			   c->epochs, split,
			   act ? learn ? ", inputs u8 (ranges learned)"
				       : ", inputs u8 (ranges fixed)"
			       : ", inputs f32");
		ret = mc_train(m, d, &tc, &hooks, err);
		if (ret)
			mc_err_prefix(err, "quantization-aware training");
		else
			mc_ctx_report(ctx, "qat_train_loss", q.loss);
	}
	/* The graph as it was, the shadow weights in the layers: what PTQ converts. */
	if (!ret)
		ret = remove_fake_quant(ctx, m, q.l, n, lo, hi);
	for (int t = 0; t < n && !ret; t++) {
		struct mc_tensor *w = mc_model_param(m, q.l[t].wname);

		memcpy(w->data, q.l[t].shadow, (size_t)w->numel * sizeof(float));
	}
	layers_free(q.l, n);
	return ret;
}
