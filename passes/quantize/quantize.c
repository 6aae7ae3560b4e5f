// SPDX-License-Identifier: MIT
/*
 * quantize - stores a model's linear (and conv2d) layers in int8 or 4-bit and
 * runs them on integer kernels: weights per tensor, per channel or per group,
 * symmetric or asymmetric; activations left in f32 (weight-only), quantized
 * per batch at run time (dynamic), or from ranges calibrated on a named
 * split (static: min/max, a percentile, or least squared error). Each
 * linear layer becomes a qlinear node; with int8 dynamic or static, each
 * conv2d (grouped and depthwise included) becomes a qconv2d node, batch
 * norms folded into the layers first and relu or relu6 after a qconv2d fused
 * into it; with int8 static, each add becomes a qadd and each
 * global_avgpool a qglobal_avgpool, their ranges calibrated too, so that a
 * network of residual blocks runs integer end to end (core/graph/ops_q*.c,
 * docs/quantize.md). Convolutions stay f32 under weight-only and 4 bits.
 * Mode qat trains the model with fake-quantized weights and inputs first
 * (qat.c), then converts it the same way: static, or weight-only when the
 * inputs stay f32.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/layers.h"
#include "quantize.h"

static const char *const schemes[] = { "symmetric", "asymmetric", NULL };
static const char *const grans[] = { "per-tensor", "per-channel", "per-group", NULL };
static const char *const modes[] = { "auto", "weight-only", "dynamic", "static", "qat", NULL };
static const char *const calibs[] = { "minmax", "percentile", "mse", NULL };
static const char *const acts[] = { "auto", "static", "learned", "f32", NULL };

static const struct mc_param_def quantize_params[] = {
	MC_PARAM_MODEL(struct quantize_conf, model, NULL, "the model to quantize"),
	MC_PARAM_INT(struct quantize_conf, bits, "8", 1, 32, "weight bits: 8 or 4"),
	MC_PARAM_BOOL(struct quantize_conf, reduce_range, "false",
		      "8 bits: weights in [-64, 64] (7 bits, as ONNX Runtime's reduce_range), "
		      "which the int8 GEMM on AVX2 CPUs without VNNI multiplies about 1.4x "
		      "faster (vpmaddubsw); half the weight resolution; off: [-127, 127]"),
	MC_PARAM_ENUM(struct quantize_conf, scheme, "symmetric", schemes,
		      "weights: symmetric (zero point 0; int8 in [-127, 127], or [-64, 64] with "
		      "reduce_range) or with zero points"),
	MC_PARAM_ENUM(struct quantize_conf, granularity, "per-channel", grans,
		      "what one weight scale covers: the tensor, an output row, or group_size "
		      "inputs of a row"),
	MC_PARAM_INT(struct quantize_conf, group_size, "32", 1, 65536,
		     "per-group: 32, 64 or 128 inputs per scale; must divide every row"),
	MC_PARAM_ENUM(struct quantize_conf, mode, "auto", modes,
		      "activations: f32 (weight-only), u8 per batch (dynamic), u8 calibrated "
		      "(static); auto: dynamic at 8 bits, weight-only at 4; qat: train with fake "
		      "quantization first (see activations, epochs)"),
	MC_PARAM_ENUM(struct quantize_conf, calibration, "minmax", calibs,
		      "static: how a layer's input range is chosen from the calibration samples"),
	MC_PARAM_FLOAT(struct quantize_conf, percentile, "99.99", 50, 100,
		       "calibration percentile: the range keeps this % of values"),
	/* Optional: only static mode reads a split, and pipelines that quantize
	 * otherwise need none; calib_split() gives the default. */
	MC_PARAM_SPLIT(struct quantize_conf, calibration_data, NULL,
		       "static: the split calibrated on (never the test split); default: train",
		       .flags = MC_PARAM_FOPTIONAL),
	MC_PARAM_INT(struct quantize_conf, samples, "1000", 1, 100000,
		     "static: calibration samples, the first of the split"),
	MC_PARAM_LIST(struct quantize_conf, exclude, MC_PARAM_TSTRING, "[]", 0, 0,
		      "layer names or globs kept in f32"),
	MC_PARAM_MAP_ENUM(struct quantize_conf, overrides, "{}", grans,
			  "per-layer granularity: {PATTERN: per-tensor|per-channel|per-group}, "
			  "PATTERN a layer name or glob; the first match wins"),
	/* mode: qat only (quantize_check refuses them otherwise) */
	MC_PARAM_ENUM(struct quantize_conf, activations, "auto", acts,
		      "qat: layer inputs fake-quantized to u8 over calibrated ranges, fixed "
		      "(static) or trained (learned), or kept f32 (the result runs weight-only); "
		      "auto: static at 8 bits, f32 at 4"),
	MC_PARAM_SPLIT(struct quantize_conf, data, NULL,
		       "qat: the split trained on (never the test split); default: train",
		       .flags = MC_PARAM_FOPTIONAL),
	MC_PARAM_INT(struct quantize_conf, epochs, "1", 0, 100000,
		     "qat: epochs of training with fake quantization (1 or more)"),
	MC_PARAM_INT(struct quantize_conf, batch_size, "128", 1, 65536, "qat: samples per update"),
	MC_GRAD_GROUPS_PARAM(struct quantize_conf, grad_groups, "qat: ", ""),
	MC_TRAIN_PARAMS(struct quantize_conf, train, "0.0001", "cosine"),
	MC_PARAM_INT(struct quantize_conf, seed, "-1", -1, 2147483647,
		     "qat: shuffling seed; -1 uses the pipeline's seed"),
	MC_PARAM_PATH(struct quantize_conf, float_output, NULL,
		      "qat: also write the trained f32 model (the shadow weights) to this file",
		      .flags = MC_PARAM_FOPTIONAL | MC_PARAM_FOUTPUT),
	MC_PARAM_END,
};

/* The split static mode calibrates on: calibration_data, else "train". */
static const char *calib_split(const struct quantize_conf *c)
{
	return c->calibration_data ? c->calibration_data : "train";
}

/* What qat does with the layers' inputs: static, learned or f32. */
static int resolved_acts(const struct quantize_conf *c)
{
	if (c->activations != QACT_AUTO)
		return c->activations;
	return c->bits == 8 ? QACT_STATIC : QACT_F32;
}

/* The mode of the quantized model: qat ends static, or weight-only with f32 inputs. */
static int resolved_mode(const struct quantize_conf *c)
{
	if (c->mode == QMODE_QAT)
		return resolved_acts(c) == QACT_F32 ? QMODE_WEIGHT_ONLY : QMODE_STATIC;
	if (c->mode != QMODE_AUTO)
		return c->mode;
	return c->bits == 8 ? QMODE_DYNAMIC : QMODE_WEIGHT_ONLY;
}

static int is_layer(const struct mc_node *nd)
{
	return !strcmp(nd->op->name, "linear") || !strcmp(nd->op->name, "qlinear") ||
	       !strcmp(nd->op->name, "conv2d") || !strcmp(nd->op->name, "qconv2d");
}

static int is_conv(const struct mc_node *nd)
{
	return !strcmp(nd->op->name, "conv2d") || !strcmp(nd->op->name, "qconv2d");
}

static int layer_granularity(const struct quantize_conf *c, const char *name);

/*
 * Why conv2d node nd stays f32 under c, or NULL when it becomes a qconv2d:
 * the int8 kernels take u8 inputs (int8 dynamic or static) and weights
 * scaled per tensor or per channel (any groups: grouped and depthwise layers
 * run on the kernels of core/kernels/s8_ops.h).
 */
static const char *conv_stays_f32(const struct quantize_conf *c, int mode,
				  const struct mc_node *nd)
{
	if (c->bits != 8 || (mode != QMODE_DYNAMIC && mode != QMODE_STATIC))
		return "convolutions are quantized in int8 dynamic or static mode only";
	if (layer_granularity(c, nd->name) == QGRAN_GROUP)
		return "qconv2d scales whole output channels, not groups";
	return NULL;
}

static int excluded(const struct quantize_conf *c, const char *name)
{
	return layers_match_any(&c->exclude, name);
}

/* The granularity of layer name: the first matching override, else the pass's. */
static int layer_granularity(const struct quantize_conf *c, const char *name)
{
	int o = layers_first_override(&c->overrides, name);

	return o >= 0 ? (int)c->overrides.num[o] : c->granularity;
}

/*
 * The int8 op node nd becomes in mode static (qadd for an add of two
 * inputs, qglobal_avgpool for a global_avgpool), or NULL.
 */
static const char *elem_qop(const struct quantize_conf *c, int mode, const struct mc_node *nd)
{
	if (c->bits != 8 || mode != QMODE_STATIC)
		return NULL;
	if (!strcmp(nd->op->name, "add") && nd->n_inputs == 2)
		return "qadd";
	if (!strcmp(nd->op->name, "global_avgpool"))
		return "qglobal_avgpool";
	return NULL;
}

/* Whether the layers run integer (int8 dynamic or static): batch norms are folded first. */
static int folds_bn(const struct quantize_conf *c, int mode)
{
	return c->mode == QMODE_QAT || (c->bits == 8 && (mode == QMODE_DYNAMIC || mode == QMODE_STATIC));
}

/* The layers to quantize: linear nodes not excluded. Quantized ones not
 * excluded are refused (they would be quantized twice). Returns the count,
 * or a negative code with the context's error set. */
static int select_layers(struct mc_ctx *ctx, const struct quantize_conf *c,
			 const struct mc_model *m, int *idx)
{
	int n = 0, mode = resolved_mode(c);

	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		if (!is_layer(nd) || excluded(c, nd->name))
			continue;
		if (!strcmp(nd->op->name, "conv2d") && nd->params[0]->dtype == MC_F32 &&
		    conv_stays_f32(c, mode, nd))
			continue;
		if ((strcmp(nd->op->name, "linear") && strcmp(nd->op->name, "conv2d")) ||
		    nd->params[0]->dtype != MC_F32)
			return mc_ctx_error(ctx, "model", MC_EINVAL,
					    "layer '%s' of model '%s' is already quantized; "
					    "quantizing it again would only lose precision; quantize "
					    "the f32 model, or exclude '%s'",
					    nd->name, c->model, nd->name);
		if (idx)
			idx[n] = i;
		n++;
	}
	return n;
}

static int fuse_relu(struct mc_model *m, struct mc_err *err);
static int swap_layer(struct mc_model *m, int i, const struct quantize_conf *c, int mode,
		      int gran, struct mc_err *err);

/*
 * At validation, the graph change the run will make: each selected layer
 * becomes its quantized op and relus after a qconv2d are fused, on the
 * model of shapes only, so that the passes after this one are checked
 * against the quantized graph.
 */
static int quantize_graph(struct mc_ctx *ctx, const struct quantize_conf *c, struct mc_model *m)
{
	int mode = resolved_mode(c), n, ret = 0, *idx;

	if (!mc_model_is_arch(m))
		return 0;
	/* qat and int8 fold batch norms first (quantize_run); here the graph alone. */
	if (folds_bn(c, mode) && mc_model_fold_batchnorm(m, mc_ctx_err(ctx)) < 0)
		return mc_ctx_err(ctx)->code;
	idx = calloc((size_t)mc_model_n_nodes(m) + 1, sizeof(*idx));
	if (!idx)
		return mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
	n = select_layers(ctx, c, m, idx);
	for (int t = 0; t < n && !ret; t++) {
		const char *name = mc_model_node(m, idx[t])->name;

		ret = swap_layer(m, idx[t], c, mode, layer_granularity(c, name), mc_ctx_err(ctx));
	}
	for (int i = 0; n >= 0 && !ret && i < mc_model_n_nodes(m); i++) {
		const char *qop = elem_qop(c, mode, mc_model_node(m, i));
		const struct mc_attr none[] = { MC_ATTR_END };

		if (qop)
			ret = mc_model_replace_node(m, i, NULL, qop, none, mc_ctx_err(ctx));
	}
	if (!ret && n >= 0 && fuse_relu(m, mc_ctx_err(ctx)) < 0)
		ret = mc_ctx_err(ctx)->code;
	free(idx);
	return n < 0 ? n : ret;
}

/* The keys only mode: qat reads; given in another mode, they are refused. */
static const char *const qat_keys[] = {
	"activations", "data", "epochs", "batch_size", "optimizer", "lr", "momentum", "beta1",
	"beta2", "weight_decay", "schedule", "step_epochs", "gamma", "min_lr", "shift", "hflip",
	"seed", "float_output", "grad_groups", NULL,
};

static int check_qat(struct mc_ctx *ctx, const struct quantize_conf *c)
{
	if (c->mode != QMODE_QAT) {
		for (int i = 0; qat_keys[i]; i++)
			if (mc_ctx_given(ctx, qat_keys[i]))
				return mc_ctx_error(ctx, qat_keys[i], MC_EINVAL,
						    "'%s' sets up quantization-aware training, "
						    "which mode %s does not do; use mode: qat, or "
						    "remove it",
						    qat_keys[i], modes[c->mode]);
		return 0;
	}
	if (c->epochs < 1)
		return mc_ctx_error(ctx, "epochs", MC_EINVAL,
				    "quantization-aware training needs 1 epoch or more; for no "
				    "training use mode: static (or weight-only)");
	if (c->bits == 4 && (c->activations == QACT_STATIC || c->activations == QACT_LEARNED))
		return mc_ctx_error(ctx, "activations", MC_EINVAL,
				    "4-bit weights run weight-only, so the inputs stay f32; use "
				    "activations: f32 (or auto), or bits: 8");
	if (c->data && !strcmp(c->data, "test"))
		return mc_ctx_error(ctx, "data", MC_EINVAL,
				    "'test' measures the result and must not train it; train on "
				    "the training split");
	if (mc_ctx_check_grad_groups(ctx, c->grad_groups, c->batch_size))
		return mc_ctx_err(ctx)->code;
	/* A split given is checked by the host; the default here. */
	if (!c->data)
		return mc_ctx_check_data(ctx, "data", "train");
	return 0;
}

static int quantize_check(struct mc_ctx *ctx, const void *conf)
{
	const struct quantize_conf *c = conf;
	struct mc_model *m = mc_ctx_model(ctx, c->model);
	int mode = resolved_mode(c), integer, n;
	/* The way to f32 inputs, which take any weights: a mode, or qat's key. */
	const char *wo = c->mode == QMODE_QAT ? "activations: f32" : "mode: weight-only";
	const char *mname = c->mode == QMODE_QAT ? "qat (static)" : modes[mode];
	char names[1024];

	if (c->bits != 8 && c->bits != 4)
		return mc_ctx_error(ctx, "bits", MC_EINVAL,
				    "%d bits is not supported; use 8 (int8) or 4 (packed 4-bit)",
				    c->bits);
	if (c->reduce_range && c->bits != 8)
		return mc_ctx_error(ctx, "reduce_range", MC_EINVAL,
				    "reduce_range narrows 8-bit weights to [-64, 64] for the int8 "
				    "GEMM; %d-bit weights run weight-only and are not reduced; use "
				    "bits: 8, or remove reduce_range",
				    c->bits);
	n = check_qat(ctx, c);
	if (n)
		return n;
	integer = mode == QMODE_DYNAMIC || mode == QMODE_STATIC;
	if (c->bits == 4 && integer)
		return mc_ctx_error(ctx, "mode", MC_EINVAL,
				    "4-bit weights run weight-only (activations stay f32); use mode: "
				    "weight-only, or bits: 8 for %s",
				    modes[mode]);
	if (integer && c->scheme == 1)
		return mc_ctx_error(ctx, "scheme", MC_EINVAL,
				    "the int8 GEMM of mode %s takes symmetric weights; use scheme: "
				    "symmetric, or %s",
				    mname, wo);
	if (c->granularity == QGRAN_GROUP) {
		if (c->group_size != 32 && c->group_size != 64 && c->group_size != 128)
			return mc_ctx_error(ctx, "group_size", MC_EINVAL,
					    "%d is not a supported group size; use 32, 64 or 128",
					    c->group_size);
		if (integer)
			return mc_ctx_error(ctx, "granularity", MC_EINVAL,
					    "the int8 GEMM of mode %s scales whole output channels; "
					    "use per-channel, or %s for per-group",
					    mname, wo);
	}
	if (c->calibration_data && !strcmp(c->calibration_data, "test"))
		return mc_ctx_error(ctx, "calibration_data", MC_EINVAL,
				    "'test' measures the result and must not tune it; carve a "
				    "calibration split from the training data (e.g. calib: {idx: "
				    "..., first: 55000, count: 5000})");
	/* A split given is checked by the host; the default only where it is used. */
	if (mode == QMODE_STATIC && !c->calibration_data) {
		int ret = mc_ctx_check_data(ctx, "calibration_data", calib_split(c));

		if (ret)
			return ret;
	}
	if (!m)
		return 0; /* the host has said so */
	n = layers_check_patterns(ctx, c->model, m, is_layer, &c->overrides, &c->exclude);
	if (n)
		return n;
	for (int i = 0; i < c->overrides.n; i++) {
		int g = (int)c->overrides.num[i];

		if (g == QGRAN_GROUP && c->group_size != 32 && c->group_size != 64 &&
		    c->group_size != 128)
			return mc_ctx_error(ctx, "group_size", MC_EINVAL,
					    "%d is not a supported group size; use 32, 64 or 128",
					    c->group_size);
		if (g == QGRAN_GROUP && integer)
			return mc_ctx_error(ctx, "overrides", MC_EINVAL,
					    "the int8 GEMM of mode %s scales whole output channels; "
					    "use per-channel, or %s for per-group",
					    mname, wo);
	}
	n = select_layers(ctx, c, m, NULL);
	if (n < 0)
		return n;
	if (!n) {
		layers_names(m, is_layer, names, sizeof(names));
		return mc_ctx_error(ctx, "exclude", MC_EINVAL,
				    "model '%s' has no layer left to quantize; its layers are "
				    "%s",
				    c->model, names);
	}
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);
		int64_t in;

		if (strcmp(nd->op->name, "linear") || excluded(c, nd->name))
			continue;
		in = nd->params[0]->shape[1];
		if (layer_granularity(c, nd->name) == QGRAN_GROUP && in % c->group_size)
			return mc_ctx_error(ctx, "group_size", MC_EINVAL,
					    "%d does not divide the %lld inputs of layer '%s'; use a "
					    "divisor of %lld, give the layer another granularity "
					    "(overrides: {%s: per-channel}) or exclude it",
					    c->group_size, (long long)in, nd->name, (long long)in,
					    nd->name);
		if (c->bits == 4 && in % 2)
			return mc_ctx_error(ctx, "bits", MC_EINVAL,
					    "layer '%s' has %lld inputs; 4-bit rows pack two a byte, "
					    "so they need an even count; exclude '%s' or use bits: 8",
					    nd->name, (long long)in, nd->name);
		if (in > 65536)
			return mc_ctx_error(ctx, "model", MC_EINVAL,
					    "layer '%s' has %lld inputs; the int8 kernels take at most "
					    "65536; exclude it",
					    nd->name, (long long)in);
	}
	return quantize_graph(ctx, c, m);
}

/* 10 log10(sum w^2 / sum (w - deq)^2): the weights' signal to quantization noise. */
static double sqnr_db(const float *w, const float *d, int64_t n)
{
	double s = 0.0, e = 0.0;

	for (int64_t i = 0; i < n; i++) {
		s += (double)w[i] * w[i];
		e += ((double)w[i] - d[i]) * ((double)w[i] - d[i]);
	}
	if (e == 0.0)
		return s == 0.0 ? 0.0 : INFINITY;
	return 10.0 * log10(s / e);
}

/* The quantized results of one layer, before they become a node. */
struct qlayer {
	struct mc_qspec spec;
	int8_t *q;
	float *scale;
	int8_t *zp;
	int64_t blocks;
};

/*
 * Replaces layer i of m (linear or conv2d) by a qlinear or qconv2d of the
 * same shape, its parameters zeroed: the graph change alone, which check
 * makes on the model of shapes only. The model is unchanged on failure.
 */
static int swap_layer(struct mc_model *m, int i, const struct quantize_conf *c, int mode,
		      int gran, struct mc_err *err)
{
	const struct mc_node *old = mc_model_node(m, i);
	int conv = is_conv(old);
	struct mc_attr lin[] = { MC_ATTR_INT("out", mc_node_attr_int(old, "out", 0)),
				 MC_ATTR_STR("mode", modes[mode]),
				 MC_ATTR_STR("granularity", grans[gran]),
				 MC_ATTR_INT("bits", c->bits),
				 MC_ATTR_STR("scheme", schemes[c->scheme]),
				 MC_ATTR_INT("group_size", c->group_size),
				 MC_ATTR_END };
	struct mc_attr cnv[] = { MC_ATTR_INT("out", mc_node_attr_int(old, "out", 0)),
				 MC_ATTR_STR("mode", modes[mode]),
				 MC_ATTR_STR("granularity", grans[gran]),
				 MC_ATTR_INT("kernel", mc_node_attr_int(old, "kernel", 1)),
				 MC_ATTR_INT("stride", mc_node_attr_int(old, "stride", 1)),
				 MC_ATTR_INT("padding", mc_node_attr_int(old, "padding", 0)),
				 MC_ATTR_INT("groups", mc_node_attr_int(old, "groups", 1)),
				 MC_ATTR_END };

	return mc_model_replace_node(m, i, NULL, conv ? "qconv2d" : "qlinear", conv ? cnv : lin,
				     err);
}

/*
 * Replaces layer i of m by its quantized node holding l's weights (and,
 * static, the input range [lo, hi]). On failure the model is left as it was.
 */
static int make_node(struct mc_model *m, int i, const struct quantize_conf *c, int mode, int gran,
		     const struct qlayer *l, float lo, float hi, struct mc_err *err)
{
	const struct mc_node *nd = mc_model_node(m, i);
	struct mc_tensor *b = mc_node_param_named(nd, "bias"), *bias = NULL;
	int64_t wn = nd->params[0]->numel;
	int ret;

	/* The bias moves over unchanged; keep it while the node is replaced. */
	if (b) {
		bias = mc_tensor_dup(b, err);
		if (!bias)
			return err->code;
	}
	ret = swap_layer(m, i, c, mode, gran, err);
	if (ret) {
		mc_tensor_free(bias);
		return ret;
	}
	nd = mc_model_node(m, i);
	if (c->bits == 8)
		memcpy(nd->params[0]->data, l->q, (size_t)wn);
	else
		mc_q4_pack(l->q, wn, nd->params[0]->data);
	memcpy(nd->params[1]->data, l->scale, (size_t)l->blocks * sizeof(float));
	if (bias)
		memcpy(nd->params[2]->data, bias->data, (size_t)bias->numel * sizeof(float));
	mc_tensor_free(bias);
	if (c->scheme == 1) {
		memcpy(nd->params[3]->data, l->zp, (size_t)l->blocks);
	} else if (mode == QMODE_STATIC) {
		float *qp = nd->params[3]->data, s;
		int z;

		mc_u8_qparams(lo, hi, &s, &z);
		qp[0] = s;
		qp[1] = (float)z;
	}
	return 0;
}

/*
 * Fuses each relu (relu6) whose input is a qconv2d read by nothing else into
 * that qconv2d (relu: true, or relu6: true, applied in the requantization:
 * min(max(y, 0), 6) as relu6 computes it) and removes the relu
 * node, its readers reading the qconv2d, as mc_model_fold_batchnorm removes
 * a batchnorm. The outputs are the same bits: max(y, 0) of the same
 * requantized y. Returns the number of relus fused, or an error code with
 * err set.
 */
static int fuse_relu(struct mc_model *m, struct mc_err *err)
{
	const struct mc_op *relu = mc_op_find("relu"), *relu6 = mc_op_find("relu6");
	const struct mc_op *qconv = mc_op_find("qconv2d");
	const struct mc_attr on[] = { MC_ATTR_BOOL("relu", 1), MC_ATTR_END };
	const struct mc_attr on6[] = { MC_ATTR_BOOL("relu6", 1), MC_ATTR_END };
	int fused = 0, ret;

	if (!relu || !qconv)
		return 0;
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *r = mc_model_node(m, i), *f;
		int src = r->inputs[0];

		if ((r->op != relu && (!relu6 || r->op != relu6)) || r->n_inputs != 1 ||
		    src == MC_NODE_INPUT)
			continue;
		f = mc_model_node(m, src);
		/* Removing the last node must leave the qconv2d last; one activation a qconv2d. */
		if (f->op != qconv || mc_model_readers(m, src, NULL, 0) != 1 ||
		    (i == mc_model_n_nodes(m) - 1 && src != i - 1) ||
		    mc_node_attr_int(f, "relu", 0) || mc_node_attr_int(f, "relu6", 0))
			continue;
		ret = mc_model_set_attrs(m, src, r->op == relu ? on : on6, err);
		if (!ret)
			ret = mc_model_remove_node(m, i, err);
		if (ret) {
			mc_err_prefix(err, "fusing relu '%s' into '%s'", r->name, f->name);
			return ret;
		}
		fused++;
		i--;
	}
	return fused;
}

/*
 * The nodes of m that become qadd or qglobal_avgpool (elem_qop), and for
 * each the nodes whose outputs it quantizes: its inputs, then itself
 * (srcs[3 t .. 3 t + 2], -2 where unused). Returns the count.
 */
static int select_elems(const struct quantize_conf *c, int mode, const struct mc_model *m,
			int *eidx, int *srcs)
{
	int n = 0;

	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);

		if (!elem_qop(c, mode, nd))
			continue;
		eidx[n] = i;
		srcs[3 * n] = nd->inputs[0];
		srcs[3 * n + 1] = nd->n_inputs == 2 ? nd->inputs[1] : i;
		srcs[3 * n + 2] = nd->n_inputs == 2 ? i : -2;
		n++;
	}
	return n;
}

/*
 * Replaces the n nodes eidx[] of m by their int8 ops, each holding the u8
 * quantizations of the ranges [lo, hi] calibrated for it (3 a node, in the
 * order of select_elems). On failure m is left part converted: the caller
 * discards it (it is the pass's copy).
 */
static int make_elems(struct mc_ctx *ctx, const struct quantize_conf *c, int mode,
		      struct mc_model *m, const int *eidx, int n, const float *lo, const float *hi)
{
	const struct mc_attr none[] = { MC_ATTR_END };
	struct mc_err *err = mc_ctx_err(ctx);

	for (int t = 0; t < n; t++) {
		const struct mc_node *nd = mc_model_node(m, eidx[t]);
		const char *qop = elem_qop(c, mode, nd);
		int pairs = strcmp(qop, "qadd") ? 2 : 3, ret;
		char name[256];
		float *qp;

		snprintf(name, sizeof(name), "%s", nd->name);
		ret = mc_model_replace_node(m, eidx[t], NULL, qop, none, err);
		if (ret) {
			mc_err_prefix(err, "node '%s'", name);
			return ret;
		}
		qp = mc_model_node(m, eidx[t])->params[0]->data;
		for (int k = 0; k < pairs; k++) {
			int z;

			mc_u8_qparams(lo[3 * t + k], hi[3 * t + k], &qp[2 * k], &z);
			qp[2 * k + 1] = (float)z;
		}
		mc_ctx_log(ctx, "%s: %s, output range [%.4g, %.4g]", name, qop,
			   lo[3 * t + pairs - 1], hi[3 * t + pairs - 1]);
	}
	return 0;
}

/* qat with float_output: the trained f32 model, before conversion, to that file. */
static int write_float(struct mc_ctx *ctx, const struct quantize_conf *c,
		       const struct mc_model *m)
{
	void *buf = NULL;
	size_t len = 0;
	int ret;

	if (!c->float_output)
		return 0;
	ret = mc_model_serialize(m, &buf, &len, mc_ctx_err(ctx));
	if (!ret)
		ret = mc_ctx_write(ctx, "float_output", buf, len);
	free(buf);
	return ret;
}

static int quantize_run(struct mc_ctx *ctx, const void *conf)
{
	const struct quantize_conf *c = conf;
	const struct mc_model *m0 = mc_ctx_model(ctx, c->model), *m;
	struct mc_err *err = mc_ctx_err(ctx);
	int mode = resolved_mode(c), n, ret = 0, *idx = NULL, *eidx = NULL, *esrc = NULL, ne = 0;
	float *lo = NULL, *hi = NULL, *elo = NULL, *ehi = NULL;
	struct mc_model *dup = NULL;
	struct mc_qspec *spec = NULL;
	double secs = 0.0, bytes = 0.0;
	char key[512];

	if (!m0)
		return mc_ctx_error(ctx, "model", MC_ERUN, "no model '%s'", c->model);
	idx = calloc((size_t)mc_model_n_nodes(m0), sizeof(*idx));
	lo = calloc((size_t)mc_model_n_nodes(m0), sizeof(*lo));
	hi = calloc((size_t)mc_model_n_nodes(m0), sizeof(*hi));
	spec = calloc((size_t)mc_model_n_nodes(m0), sizeof(*spec));
	eidx = calloc((size_t)mc_model_n_nodes(m0), sizeof(*eidx));
	esrc = calloc((size_t)mc_model_n_nodes(m0) * 3, sizeof(*esrc));
	elo = calloc((size_t)mc_model_n_nodes(m0) * 3, sizeof(*elo));
	ehi = calloc((size_t)mc_model_n_nodes(m0) * 3, sizeof(*ehi));
	if (!idx || !lo || !hi || !spec || !eidx || !esrc || !elo || !ehi) {
		ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
		goto out;
	}
	/* The copy is calibrated, trained (qat) and converted; the pipeline's
	 * model is replaced only when all went well. */
	dup = mc_model_dup(m0, err);
	if (!dup) {
		ret = err->code;
		goto out;
	}
	m = dup;
	/* qat trains and quantizes the weights the integer model runs, and the
	 * int8 modes run them: a batch norm after a layer is folded into it
	 * first (its running statistics frozen), as an inference graph would
	 * fold it. */
	if (folds_bn(c, mode)) {
		ret = mc_model_fold_batchnorm(dup, err);
		if (ret < 0)
			goto out;
		if (ret > 0)
			mc_ctx_log(ctx, "folded %d batchnorm into the layer before it", ret);
		mc_ctx_report(ctx, "batchnorm_folded", ret);
		ret = 0;
	}
	n = select_layers(ctx, c, m, idx);
	if (n <= 0) {
		ret = n < 0 ? n : mc_ctx_error(ctx, "exclude", MC_ERUN, "no layer to quantize");
		goto out;
	}
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *nd = mc_model_node(m, i);
		const char *why = !strcmp(nd->op->name, "conv2d") && !excluded(c, nd->name)
					  ? conv_stays_f32(c, mode, nd)
					  : NULL;

		if (!is_layer(nd) && nd->n_params > nd->n_buffers)
			mc_ctx_log(ctx, "%s (%s) stays f32: only linear and conv2d layers are "
				   "quantized", nd->name, nd->op->name);
		else if (why)
			mc_ctx_log(ctx, "%s (conv2d) stays f32: %s", nd->name, why);
	}
	if (mode == QMODE_STATIC) {
		const struct mc_dataset *d = mc_ctx_data(ctx, calib_split(c));

		if (!d) {
			ret = MC_ERUN;
			goto out;
		}
		if (d->sample_numel != mc_model_in_numel(m)) {
			ret = mc_ctx_error(ctx, "calibration_data", MC_ERUN,
					   "split '%s' has %lld values a sample but model '%s' takes "
					   "%lld; calibrate on data of the model's input",
					   calib_split(c), (long long)d->sample_numel, c->model,
					   (long long)mc_model_in_numel(m));
			goto out;
		}
		ret = quantize_calibrate(m, d, c->samples, idx, n, (enum mc_range_method)c->calibration,
					 c->percentile, lo, hi, err);
		ne = ret ? 0 : select_elems(c, mode, m, eidx, esrc);
		/* unused slots (-2) calibrate the node itself again: harmless */
		for (int t = 0; t < 3 * ne; t++)
			if (esrc[t] == -2)
				esrc[t] = eidx[t / 3];
		if (!ret && ne)
			ret = quantize_calibrate_outputs(m, d, c->samples, esrc, 3 * ne,
							 (enum mc_range_method)c->calibration,
							 c->percentile, elo, ehi, err);
		if (ret) {
			mc_err_prefix(err, "calibration on '%s'", calib_split(c));
			goto out;
		}
		mc_ctx_log(ctx, "calibrated on %d samples of '%s' (%s)%s",
			   c->samples < d->n ? c->samples : (int)d->n, calib_split(c),
			   calibs[c->calibration],
			   mc_dist_ranks() > 1 ? ", shared out over the ranks" : "");
	}
	for (int t = 0; t < n; t++) {
		const struct mc_tensor *w = mc_model_node(m, idx[t])->params[0];
		int64_t cols = w->numel / w->shape[0];
		int gran = layer_granularity(c, mc_model_node(m, idx[t])->name);

		spec[t] = (struct mc_qspec){ .bits = c->bits, .asym = c->scheme == 1,
					     .reduce_range = c->reduce_range };
		spec[t].group = gran == QGRAN_TENSOR ? 0 : gran == QGRAN_CHANNEL ? (int)cols
										 : c->group_size;
	}
	if (c->mode == QMODE_QAT) {
		ret = quantize_qat(ctx, c, dup, idx, spec, n, mode == QMODE_STATIC,
				   resolved_acts(c) == QACT_LEARNED, lo, hi);
		if (!ret)
			ret = write_float(ctx, c, dup);
		if (ret)
			goto out;
		mc_ctx_report(ctx, "qat_epochs", c->epochs);
	}
	for (int t = 0; t < n && !ret; t++) {
		const struct mc_node *nd = mc_model_node(dup, idx[t]);
		const struct mc_tensor *w = nd->params[0];
		int64_t rows = w->shape[0], cols = w->numel / w->shape[0];
		struct qlayer l = { .spec = spec[t] };
		int gran = layer_granularity(c, nd->name);
		float *deq = NULL;
		double t0, db;

		l.blocks = mc_qspec_blocks(&l.spec, rows, cols);
		l.q = malloc((size_t)w->numel);
		l.scale = malloc((size_t)l.blocks * sizeof(float));
		l.zp = calloc((size_t)l.blocks, 1);
		deq = malloc((size_t)w->numel * sizeof(float));
		if (!l.q || !l.scale || !l.zp || !deq) {
			ret = mc_ctx_error(ctx, NULL, MC_ENOMEM, "out of memory");
		} else {
			t0 = mc_now();
			ret = mc_quantize_weights(w->data, rows, cols, &l.spec, l.q, l.scale, l.zp,
						  err);
			secs += mc_now() - t0;
			bytes += (double)w->numel * sizeof(float);
		}
		if (!ret) {
			char name[256];

			snprintf(name, sizeof(name), "%s", nd->name);
			mc_dequantize_weights(l.q, rows, cols, &l.spec, l.scale, l.zp, deq);
			db = sqnr_db(w->data, deq, w->numel);
			ret = make_node(dup, idx[t], c, mode, gran, &l, lo[t], hi[t], err);
			if (ret) {
				mc_err_prefix(err, "layer '%s'", name);
			} else {
				snprintf(key, sizeof(key), "%s.bits", name);
				mc_ctx_report(ctx, key, c->bits);
				snprintf(key, sizeof(key), "%s.symmetric", name);
				mc_ctx_report(ctx, key, c->scheme == 0);
				if (c->reduce_range) {
					snprintf(key, sizeof(key), "%s.reduce_range", name);
					mc_ctx_report(ctx, key, 1);
				}
				snprintf(key, sizeof(key), "%s.sqnr_db", name);
				mc_ctx_report(ctx, key, db);
				if (mode == QMODE_STATIC)
					mc_ctx_log(ctx,
						   "%s: int%d%s %s %s, weight SQNR %.1f dB, input range "
						   "[%.4g, %.4g]",
						   name, c->bits, c->reduce_range ? " [-64, 64]" : "",
						   schemes[c->scheme], grans[gran], db, lo[t], hi[t]);
				else
					mc_ctx_log(ctx, "%s: int%d%s %s %s, weight SQNR %.1f dB, %s",
						   name, c->bits, c->reduce_range ? " [-64, 64]" : "",
						   schemes[c->scheme], grans[gran], db, modes[mode]);
			}
		}
		free(l.q);
		free(l.scale);
		free(l.zp);
		free(deq);
	}
	if (!ret && ne)
		ret = make_elems(ctx, c, mode, dup, eidx, ne, elo, ehi);
	if (ret)
		goto out;
	mc_ctx_report(ctx, "layers_quantized", n);
	if (ne)
		mc_ctx_report(ctx, "elementwise_quantized", ne);
	ret = fuse_relu(dup, err);
	if (ret < 0)
		goto out;
	if (ret > 0)
		mc_ctx_log(ctx, "fused %d relu or relu6 into the qconv2d before it", ret);
	mc_ctx_report(ctx, "relu_fused", ret);
	ret = 0;
	if (secs > 0.0) {
		mc_ctx_report(ctx, "quantize_gbps", bytes / secs / 1e9);
		mc_ctx_log(ctx, "quantized %.2f MB of f32 weights at %.2f GB/s", bytes / 1e6,
			   bytes / secs / 1e9);
	}
	ret = mc_ctx_replace_model(ctx, c->model, dup);
	dup = NULL;
out:
	mc_model_free(dup);
	free(eidx);
	free(esrc);
	free(elo);
	free(ehi);
	free(spec);
	free(idx);
	free(lo);
	free(hi);
	return ret;
}

static const struct mc_pass quantize_pass = {
	.abi = MC_PASS_ABI,
	.name = "quantize",
	.version = "1.0",
	.description = "int8 (dynamic or calibrated static) linear and conv layers, or 4-bit "
		       "group-wise linear weights, run on integer kernels; optionally after "
		       "quantization-aware training",
	.license = "MIT",
	.author = "the mcomp developers",
	.conf_size = sizeof(struct quantize_conf),
	.params = quantize_params,
	.check = quantize_check,
	.run = quantize_run,
};
MC_PASS_DEFINE(quantize_pass);
