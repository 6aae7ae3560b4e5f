/* SPDX-License-Identifier: MIT */
/*
 * ops.c - the op table: each layer kind's attributes, shape rule,
 * initialisation, forward and backward side by side, and FLOP count.
 *
 * Kernels see a batch of n samples, row-major, per-sample shapes in the
 * trailing comments. Backward passes split work over output elements (or
 * call mc_sgemm, which does), so gradients are bit-identical for any thread
 * count. Parameter p of a node is drawn from the Philox stream
 * (seed, stream + p), where mc_model_init gives each node its own range of
 * MC_NODE_MAX_PARAMS streams: initial values depend on the node's place and
 * never on the thread count.
 */
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <mcomp/model.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

/* Elementwise loops smaller than this run on the calling thread. */
#define PAR_MIN 32768
#define CHUNK 8192 /* elements per work item of an elementwise loop */

static const struct mc_param_def no_attrs[] = { MC_PARAM_END };

/* Creates parameter p of node as "<node>.<what>" of the given shape. */
static int new_param(struct mc_node *node, int p, const char *what, int ndim,
		     const int64_t *shape, struct mc_err *err)
{
	char name[512];

	snprintf(name, sizeof(name), "%s.%s", node->name, what);
	node->params[p] = mc_tensor_new(name, MC_F32, ndim, shape, err);
	if (!node->params[p])
		return err ? err->code : MC_ENOMEM;
	if (node->n_params < p + 1)
		node->n_params = p + 1;
	return 0;
}

/* t = U(lo, hi) from (seed, stream); value i is a pure function of i. */
static void fill_uniform(struct mc_tensor *t, uint64_t seed, uint64_t stream, float lo, float hi)
{
	float *x = t->data;
	int64_t n = t->numel;

#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
	for (int64_t b = 0; b < (n + 3) / 4; b++) {
		uint32_t w[4];

		mc_philox(seed, stream, (uint64_t)b, w);
		for (int64_t k = 0; k < 4 && 4 * b + k < n; k++)
			x[4 * b + k] = lo + (hi - lo) * ((float)(w[k] >> 8) * (1.0f / 16777216.0f));
	}
}

/* ---------------------------------------------------------------- flatten */

static int flatten_setup(struct mc_node *node, const int *in_ndim,
			 const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	int64_t n = 1;

	for (int i = 0; i < in_ndim[0]; i++)
		n *= in_shape[0][i]; /* the model checked the product */
	node->out_ndim = 1;
	node->out_shape[0] = n;
	return 0;
}

/* out[n, numel] = in[n, numel] */
static void flatten_forward(const struct mc_node *node, int n, const float *const *in, float *out)
{
	memcpy(out, in[0], (size_t)n * (size_t)node->out_numel * sizeof(float));
}

static void flatten_backward(const struct mc_node *node, int n, const float *const *in,
			     const float *out, const float *dout, float *const *din,
			     float *const *grads)
{
	if (din[0])
		memcpy(din[0], dout, (size_t)n * (size_t)node->out_numel * sizeof(float));
}

static int64_t zero_flops(const struct mc_node *node)
{
	return 0;
}

static const struct mc_op op_flatten = {
	.name = "flatten",
	.help = "reshapes each sample to one dimension",
	.attr_size = 0,
	.attrs = no_attrs,
	.n_inputs = 1,
	.setup = flatten_setup,
	.forward = flatten_forward,
	.backward = flatten_backward,
	.flops = zero_flops,
};

/* ---------------------------------------------------------------- relu */

static int same_shape_setup(struct mc_node *node, const int *in_ndim,
			    const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	node->out_ndim = in_ndim[0];
	memcpy(node->out_shape, in_shape[0], sizeof(node->out_shape));
	return 0;
}

/* out[n, d] = max(in, 0) */
static void relu_forward(const struct mc_node *node, int n, const float *const *in, float *out)
{
	const float *x = in[0];
	int64_t total = (int64_t)n * node->out_numel;

#pragma omp parallel for schedule(static) if (total >= PAR_MIN)
	for (int64_t c = 0; c < total; c += CHUNK) {
		int64_t i = c, end = c + CHUNK < total ? c + CHUNK : total;
#ifdef __SSE2__
		/* A select, exact: the same values as the scalar loop (NaN -> 0). */
		for (; i + 4 <= end; i += 4) {
			__m128 v = _mm_loadu_ps(x + i);

			_mm_storeu_ps(out + i, _mm_and_ps(_mm_cmpgt_ps(v, _mm_setzero_ps()), v));
		}
#endif
		for (; i < end; i++)
			out[i] = x[i] > 0.0f ? x[i] : 0.0f;
	}
}

/* din[n, d] = dout where out > 0 */
static void relu_backward(const struct mc_node *node, int n, const float *const *in,
			  const float *out, const float *dout, float *const *din,
			  float *const *grads)
{
	float *dx = din[0];
	int64_t total = (int64_t)n * node->out_numel;

	if (!dx)
		return;
#pragma omp parallel for schedule(static) if (total >= PAR_MIN)
	for (int64_t c = 0; c < total; c += CHUNK) {
		int64_t i = c, end = c + CHUNK < total ? c + CHUNK : total;
#ifdef __SSE2__
		for (; i + 4 <= end; i += 4) {
			__m128 on = _mm_cmpgt_ps(_mm_loadu_ps(out + i), _mm_setzero_ps());

			_mm_storeu_ps(dx + i, _mm_and_ps(on, _mm_loadu_ps(dout + i)));
		}
#endif
		for (; i < end; i++)
			dx[i] = out[i] > 0.0f ? dout[i] : 0.0f;
	}
}

static const struct mc_op op_relu = {
	.name = "relu",
	.help = "max(x, 0), elementwise",
	.attr_size = 0,
	.attrs = no_attrs,
	.n_inputs = 1,
	.setup = same_shape_setup,
	.forward = relu_forward,
	.backward = relu_backward,
	.flops = zero_flops,
};

/* ---------------------------------------------------------------- linear */

struct linear_attrs {
	int out;
};

static const struct mc_param_def linear_attrs[] = {
	MC_PARAM_INT(struct linear_attrs, out, NULL, 1, INT_MAX, "output features"),
	MC_PARAM_END,
};

static int linear_setup(struct mc_node *node, const int *in_ndim,
			const int64_t (*in_shape)[MC_MAX_DIMS], struct mc_err *err)
{
	const struct linear_attrs *a = node->attrs;
	int64_t in = in_shape[0][0], wshape[2], bshape[1];
	char buf[256];
	size_t wn;
	int r;

	if (in_ndim[0] != 1)
		return mc_err_set(err, MC_EINVAL,
				  "linear needs one value per feature, got input shape %s; "
				  "put a flatten before it",
				  mc_shape_text(in_ndim[0], in_shape[0], buf, sizeof(buf)));
	if (in < 1 || in > INT_MAX || mc_mul_overflow((size_t)in, (size_t)a->out, &wn) ||
	    wn > (size_t)INT64_MAX / sizeof(float))
		return mc_err_set(err, MC_EINVAL,
				  "linear of %lld inputs and %d outputs is too large; use fewer",
				  (long long)in, a->out);
	wshape[0] = a->out;
	wshape[1] = in;
	bshape[0] = a->out;
	r = new_param(node, 0, "weight", 2, wshape, err);
	if (!r)
		r = new_param(node, 1, "bias", 1, bshape, err);
	if (r)
		return r;
	node->out_ndim = 1;
	node->out_shape[0] = a->out;
	return 0;
}

/* Like PyTorch's nn.Linear: weight and bias ~ U(-1/sqrt(in), 1/sqrt(in)). */
static void linear_init(struct mc_node *node, uint64_t seed, uint64_t stream)
{
	float bound = (float)(1.0 / sqrt((double)node->params[0]->shape[1]));

	fill_uniform(node->params[0], seed, stream + 0, -bound, bound);
	fill_uniform(node->params[1], seed, stream + 1, -bound, bound);
}

/* out[n, O] = in[n, I] W[O, I]^T + b[O] */
static void linear_forward(const struct mc_node *node, int n, const float *const *in, float *out)
{
	const struct mc_tensor *w = node->params[0];
	const float *b = node->params[1]->data;
	int O = (int)w->shape[0], I = (int)w->shape[1];

	for (int i = 0; i < n; i++)
		memcpy(out + (size_t)i * O, b, (size_t)O * sizeof(float));
	mc_sgemm(0, 1, n, O, I, 1.0f, in[0], I, w->data, I, 1.0f, out, O);
}

/* dW[O, I] += dout^T x, db[O] += column sums of dout, din[n, I] = dout W */
static void linear_backward(const struct mc_node *node, int n, const float *const *in,
			    const float *out, const float *dout, float *const *din,
			    float *const *grads)
{
	const struct mc_tensor *w = node->params[0];
	int O = (int)w->shape[0], I = (int)w->shape[1];

	if (grads && grads[0])
		mc_sgemm(1, 0, O, I, n, 1.0f, dout, O, in[0], I, 1.0f, grads[0], I);
	if (grads && grads[1]) {
		float *db = grads[1];

		/* Each thread owns a range of outputs and sums the batch in order. */
#pragma omp parallel for schedule(static) if ((int64_t)n * O >= PAR_MIN)
		for (int o0 = 0; o0 < O; o0 += 64) {
			int o1 = o0 + 64 < O ? o0 + 64 : O;

			for (int i = 0; i < n; i++)
				for (int o = o0; o < o1; o++)
					db[o] += dout[(size_t)i * O + o];
		}
	}
	if (din[0])
		mc_sgemm(0, 0, n, I, O, 1.0f, dout, O, w->data, I, 0.0f, din[0], I);
}

static int64_t linear_flops(const struct mc_node *node)
{
	return 2 * node->params[0]->numel;
}

static const struct mc_op op_linear = {
	.name = "linear",
	.help = "fully connected layer: y = x W^T + b",
	.attr_size = sizeof(struct linear_attrs),
	.attrs = linear_attrs,
	.n_inputs = 1,
	.setup = linear_setup,
	.init = linear_init,
	.forward = linear_forward,
	.backward = linear_backward,
	.flops = linear_flops,
};

/* ---------------------------------------------------------------- the table */

static const struct mc_op *const ops[] = { &op_flatten, &op_linear, &op_relu };
#define N_OPS (sizeof(ops) / sizeof(ops[0]))

static const char *const op_names[N_OPS + 1] = { "flatten", "linear", "relu", NULL };

const struct mc_op *mc_op_find(const char *name)
{
	for (size_t i = 0; name && i < N_OPS; i++)
		if (!strcmp(ops[i]->name, name))
			return ops[i];
	return NULL;
}

const char *const *mc_op_names(void)
{
	return op_names;
}

/* ---------------------------------------------------------------- loss */

float mc_softmax_xent(const float *logits, const uint8_t *labels, int n, int classes,
		      float *dlogits)
{
	double total = 0.0;

	if (n <= 0 || classes <= 0)
		return 0.0f;
	/* Rows in order, in double: the sum is the same for any thread count. */
	for (int i = 0; i < n; i++) {
		const float *z = logits + (size_t)i * classes;
		int y = labels[i] < classes ? labels[i] : classes - 1;
		double mx = z[0], sum = 0.0, lse;

		for (int c = 1; c < classes; c++)
			if (z[c] > mx)
				mx = z[c];
		for (int c = 0; c < classes; c++)
			sum += exp((double)z[c] - mx);
		lse = mx + log(sum);
		total += lse - z[y];
		if (dlogits) {
			float *d = dlogits + (size_t)i * classes;

			for (int c = 0; c < classes; c++)
				d[c] = (float)((exp((double)z[c] - lse) - (c == y)) / n);
		}
	}
	return (float)(total / n);
}
