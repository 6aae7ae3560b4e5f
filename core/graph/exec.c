/* SPDX-License-Identifier: MIT */
/*
 * exec.c - the executor: activations and gradients for batches of a
 * model, forward in node order and backward in reverse.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "base/threads.h"
#include "graph/model_int.h"
#include "graph/ops_int.h"
#include "kernels/conv.h"

struct chain {
	int head, bn, res; /* the conv2d, its batchnorm, the add's other input (with post.add) */
	struct mc_conv_post post;
	float *affine; /* [2 * channels]: the batchnorm's scale, then its shift */
};

/* What fused[i] says of node i (struct mc_exec); 0: it runs alone. */
enum fuse_kind {
	FUSE_NONE,
	FUSE_CONV_RELU,	     /* 1: a conv2d whose only reader is a relu, in its store */
	FUSE_RELU_IN_CONV,   /* 2: that relu */
	FUSE_POOL_IN_CONV,   /* 3: inference, a 2x2 maxpool2d the conv computes */
	FUSE_FLATTEN,	     /* 4: a flatten, its output its input */
	FUSE_LINEAR_RELU,    /* 5: a linear whose only reader is a relu */
	FUSE_RELU_IN_LINEAR, /* 6: that relu */
	FUSE_POOL_RELU_BACK, /* 7: training, a 2x2 maxpool2d whose backward does the relu's */
	FUSE_CHAIN_CONV,     /* 8: inference, the conv2d heading a chain */
	FUSE_CHAIN_LAST,     /* 9: the chain's last node, where it runs */
	FUSE_CHAIN_INNER,    /* 10: a node inside a chain */
	FUSE_QADD_RELU,	     /* 11: inference, a qadd whose only reader is a relu */
	FUSE_RELU_IN_QADD,   /* 12: that relu */
};

struct mc_exec {
	const struct mc_model *m;
	int max_batch, training, n;
	float **act;   /* [n_nodes] outputs, [max_batch, out_numel] */
	float **dact;  /* [n_nodes] output gradients (training) */
	float **grads; /* [n_nodes * MC_NODE_MAX_PARAMS] parameter gradients (training) */
	int *uses;     /* [n_nodes] how many node inputs read each node */
	int *needs;    /* [n_nodes] a trained parameter lies at or before the node */
	int *written;  /* [n_nodes] during backward: dact holds a value */
	/*
	 * [n_nodes], enum fuse_kind: 1, a conv2d whose only reader is a
	 * relu, run with the relu in its store; 2: that relu, whose output
	 * is the conv2d's (act shared, forward skipped; its backward still
	 * masks the gradient);
	 * without training, 3: a 2x2 maxpool2d alone reading such a relu (or a
	 * qconv2d with relu), computed by the convolution as it goes
	 * (pool[conv] is its index); 4: a flatten, whose output is its input
	 * as it is (act pointed there at each forward, nothing copied); 5: a
	 * linear whose only reader is a relu, which it applies in place as it
	 * finishes; 6: that relu (act shared, forward skipped); in training,
	 * 7: a 2x2 maxpool2d alone reading a relu of kind 2, whose backward
	 * passes its gradient through the relu's too (the relu's skipped);
	 * without training, 11: a qadd whose only reader is a relu, which it
	 * applies in place as it finishes (on its u8 output: max with the
	 * zero point, the bytes of the relu's f32 quantized; pool[qadd] is the
	 * relu's index); 12: that relu (act and u8 shared, forward skipped).
	 */
	int *fused;
	int *pool;
	/*
	 * Training: [n_nodes] for a conv2d whose output gradient would come
	 * from a maxpool2d of kind 7 and go only to its dW and db (a first
	 * layer: no input gradient), that pool, whose backward its own then
	 * runs a few channels and samples at a time as it needs them
	 * (mc_conv2d_backward_relu_pool): the gradient never held whole, no
	 * dact; else -1.
	 */
	int *dwpool;
	/*
	 * Inference: [n_nodes] for a conv2d whose only reader is a batchnorm,
	 * the chain conv2d -> batchnorm [-> act] [-> add [-> act]] (each the
	 * only reader of the one before) that runs as one step: fused 8 for
	 * the conv2d (its output scratch), 10 for the nodes inside (no
	 * output), 9 for the last, at whose place the whole chain runs (every
	 * input is ready there) with the rest as the convolution's epilogue
	 * (mc_conv2d_forward_post). chain[last] describes it.
	 */
	struct chain *chain;
	/*
	 * Inference: [n_nodes] 1 where an int8 op writes its output as the u8
	 * values every reader of it quantizes it to (all at one scale and zero
	 * point, u8s and u8z), act holding those bytes; its readers take them
	 * as they are (mc_qop_forward_u8). Planned at each forward from the
	 * nodes' current calibration; any_q8: a node might take part.
	 */
	int *u8;
	float *u8s;
	int *u8z;
	int any_q8;
	int defer_linear; /* mc_exec_defer_linear */
	float *scratch[MC_NODE_MAX_INPUTS]; /* input gradients to be added in */
	double *prof; /* [2 * n_nodes] ms forward, backward, added to (mc_exec_profile) */
	const float *x;
	struct mc_run run; /* of the last forward */
};

/* ---------------------------------------------------------------- executor */

void mc_exec_free(struct mc_exec *e)
{
	if (!e)
		return;
	for (int i = 0; i < e->m->n_nodes; i++) {
		if (e->act &&
		    !(e->fused &&
		      (e->fused[i] == FUSE_RELU_IN_CONV || e->fused[i] == FUSE_FLATTEN ||
		       e->fused[i] == FUSE_RELU_IN_LINEAR || e->fused[i] == FUSE_CHAIN_INNER ||
		       e->fused[i] == FUSE_RELU_IN_QADD)))
			mc_free(e->act[i]);
		if (e->chain)
			free(e->chain[i].affine);
		if (e->dact)
			mc_free(e->dact[i]);
		for (int p = 0; e->grads && p < MC_NODE_MAX_PARAMS; p++)
			mc_free(e->grads[i * MC_NODE_MAX_PARAMS + p]);
	}
	for (int k = 0; k < MC_NODE_MAX_INPUTS; k++)
		mc_free(e->scratch[k]);
	mc_free(e->run.work);
	free(e->act);
	free(e->dact);
	free(e->grads);
	free(e->uses);
	free(e->needs);
	free(e->written);
	free(e->fused);
	free(e->pool);
	free(e->dwpool);
	free(e->chain);
	free(e->u8);
	free(e->u8s);
	free(e->u8z);
	free(e);
}

/*
 * fused[i] for each conv2d read by one relu and nothing else (the model's
 * output is read by the caller): relu(relu(y)) = relu(y) and relu's
 * gradient mask is the same on y and relu(y), so the pair computes what it
 * did, with one pass over the activations fewer.
 */
static int n_readers(const struct mc_model *m, int i, int *last)
{
	int readers = 0;

	for (int k = 0; k < m->n_nodes; k++)
		for (int q = 0; q < m->nodes[k]->n_inputs; q++)
			if (m->nodes[k]->inputs[q] == i) {
				readers++;
				*last = k;
			}
	return readers;
}

static void fuse(const struct mc_model *m, int training, int *fused, int *pool)
{
	for (int j = 0; j < m->n_nodes; j++) {
		const struct mc_node *r = m->nodes[j];
		int i = r->inputs[0], readers, k = -1;

		pool[j] = -1;
		/* inference: a flatten is a view of its input (not the model's output) */
		if (!training && r->op == &mc_op_flatten && j != m->n_nodes - 1) {
			fused[j] = FUSE_FLATTEN;
			continue;
		}
		/* inference: relu in place on a linear's output that nothing else reads */
		if (!training && r->op == &mc_op_relu && i != MC_NODE_INPUT &&
		    m->nodes[i]->op == &mc_op_linear && i != m->n_nodes - 1 && !fused[i] &&
		    n_readers(m, i, &k) == 1) {
			fused[i] = FUSE_LINEAR_RELU;
			fused[j] = FUSE_RELU_IN_LINEAR;
			continue;
		}
		/* inference: relu in place on a qadd's output that nothing else reads */
		if (!training && r->op == &mc_op_relu && i != MC_NODE_INPUT &&
		    m->nodes[i]->op == &mc_op_qadd && i != m->n_nodes - 1 && !fused[i] &&
		    n_readers(m, i, &k) == 1) {
			fused[i] = FUSE_QADD_RELU;
			fused[j] = FUSE_RELU_IN_QADD;
			pool[i] = j;
			continue;
		}
		/* a qconv2d has its relu already: only its pool */
		if (!training && mc_qconv2d_fuses_pool(r) && j != m->n_nodes - 1 &&
		    n_readers(m, j, &k) == 1 && mc_maxpool2_fusable(m->nodes[k])) {
			fused[j] = FUSE_CONV_RELU;
			fused[k] = FUSE_POOL_IN_CONV;
			pool[j] = k;
			continue;
		}
		if (r->op != &mc_op_relu || i == MC_NODE_INPUT || m->nodes[i]->op != &mc_op_conv2d ||
		    i == m->n_nodes - 1 || fused[i])
			continue;
		readers = n_readers(m, i, &k);
		if (readers != 1)
			continue;
		fused[i] = FUSE_CONV_RELU;
		fused[j] = FUSE_RELU_IN_CONV;
		/* a pool the relu alone feeds: at inference computed by the conv; in
		 * training (which keeps every output) its backward goes through the relu */
		if (j != m->n_nodes - 1 && n_readers(m, j, &k) == 1 &&
		    mc_maxpool2_fusable(m->nodes[k])) {
			if (!training) {
				fused[k] = FUSE_POOL_IN_CONV;
				pool[i] = k;
			} else {
				fused[k] = FUSE_POOL_RELU_BACK;
			}
		}
	}
}

/* 1 for the activations a conv2d's epilogue can apply (relu, relu6, clip), their kind in *act. */
static int post_act(const struct mc_node *nd, int *act, float *lo, float *hi)
{
	if (nd->op == &mc_op_relu) {
		*act = MC_POST_RELU;
		*lo = *hi = 0.0f;
		return 1;
	}
	if (mc_clip_bounds(nd, lo, hi)) {
		*act = MC_POST_CLIP;
		return 1;
	}
	return 0;
}

/*
 * The node that alone reads node i and is not yet fused (not the model's
 * output, which the caller reads), or -1.
 */
static int sole_reader(const struct mc_model *m, const int *fused, int i)
{
	int k = -1;

	if (i == m->n_nodes - 1 || n_readers(m, i, &k) != 1 || fused[k])
		return -1;
	return k;
}

/*
 * Inference: each conv2d -> batchnorm [-> relu/relu6/clip] [-> add [->
 * relu/relu6/clip]] where each node is the only reader of the one before
 * becomes one step (struct mc_exec's chain). The conv2d's output and the
 * batchnorm's are read by nothing else, so nothing sees them skipped.
 */
static int fuse_chains(struct mc_exec *e)
{
	const struct mc_model *m = e->m;

	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *nd = m->nodes[i];
		struct chain c = { .head = i, .bn = -1 };
		int t, r, k;

		if (nd->op != &mc_op_conv2d || e->fused[i])
			continue;
		r = sole_reader(m, e->fused, i);
		if (r < 0 || m->nodes[r]->op != &mc_op_batchnorm)
			continue;
		c.bn = t = r;
		r = sole_reader(m, e->fused, t);
		if (r >= 0 && post_act(m->nodes[r], &c.post.act1, &c.post.lo1, &c.post.hi1)) {
			e->fused[t] = FUSE_CHAIN_INNER;
			t = r;
			r = sole_reader(m, e->fused, t);
		}
		if (r >= 0 && m->nodes[r]->op == &mc_op_add) {
			k = m->nodes[r]->inputs[0] == t ? 1 : 0;
			c.post.add = 1;
			c.post.res_first = k == 0;
			c.res = m->nodes[r]->inputs[k];
			e->fused[t] = FUSE_CHAIN_INNER;
			t = r;
			r = sole_reader(m, e->fused, t);
			if (r >= 0 &&
			    post_act(m->nodes[r], &c.post.act2, &c.post.lo2, &c.post.hi2)) {
				e->fused[t] = FUSE_CHAIN_INNER;
				t = r;
			}
		}
		e->fused[i] = FUSE_CHAIN_CONV;
		e->fused[t] = FUSE_CHAIN_LAST;
		c.affine = malloc(2 * (size_t)m->nodes[c.bn]->out_shape[0] * sizeof(float));
		if (!c.affine)
			return -1;
		e->chain[t] = c;
	}
	return 0;
}

/*
 * What the buffers below will take, against the memory limit before any is
 * allocated: a model of modest parameters can still have activations of
 * gigabytes a sample (a large input through wide layers). Counts every
 * node's output (fused ones too, an upper bound), the largest workspace, and
 * for training the gradients of outputs and parameters and the scratch.
 */
static int check_memory(const struct mc_model *m, int max_batch, int training,
			struct mc_err *err)
{
	uint64_t outs = 0, params = 0, work = 0, max_in = (uint64_t)m->in_numel, need;
	char what[160];

	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *nd = m->nodes[i];

		outs += (uint64_t)nd->out_numel;
		if (nd->op->workspace) {
			uint64_t w = nd->op->workspace(nd, max_batch);

			work = w > work ? w : work;
		}
		for (int p = 0; p < nd->n_params; p++)
			params += (uint64_t)nd->params[p]->numel;
		if ((uint64_t)nd->out_numel > max_in)
			max_in = (uint64_t)nd->out_numel;
	}
	/* In long double: 8192 nodes of 2^31 values at a batch of 2^31 overflow
	 * 64 bits, and then need more than any limit. */
	{
		long double b = 4.0L * (long double)max_batch * (long double)outs;

		if (training)
			b += b + 4.0L * (long double)params +
			     4.0L * MC_NODE_MAX_INPUTS * (long double)max_batch * (long double)max_in;
		b += (long double)work;
		need = b >= 18446744073709551615.0L ? UINT64_MAX : (uint64_t)b;
	}
	snprintf(what, sizeof(what), "%s batch of %d samples (activations%s)",
		 training ? "a training" : "a forward", max_batch,
		 training ? " and gradients" : "");
	return mc_mem_check(need, what, err);
}

struct mc_exec *mc_exec_new(const struct mc_model *m, int max_batch, int training,
			    struct mc_err *err)
{
	struct mc_exec *e = calloc(1, sizeof(*e));
	size_t nn = (size_t)m->n_nodes, max_in = 0, work = 0;
	int shared = 0;

	if (max_batch < 1) {
		free(e);
		mc_err_set(err, MC_EINVAL, "batch size %d: use 1 or more", max_batch);
		return NULL;
	}
	if (m->arch_only) {
		free(e);
		mc_err_set(err, MC_EINVAL,
			   "a model of shapes only (validation) cannot run; run the real model");
		return NULL;
	}
	if (!e)
		goto nomem;
	if (check_memory(m, max_batch, training, err)) {
		free(e);
		return NULL;
	}
	e->m = m;
	e->max_batch = max_batch;
	e->training = training;
	e->run.training = training;
	e->act = calloc(nn, sizeof(*e->act));
	e->uses = calloc(nn, sizeof(*e->uses));
	e->written = calloc(nn, sizeof(*e->written));
	e->fused = calloc(nn, sizeof(*e->fused));
	e->pool = malloc(nn * sizeof(*e->pool));
	if (!e->act || !e->uses || !e->written || !e->fused || !e->pool)
		goto nomem;
	fuse(m, training, e->fused, e->pool);
	if (!training) {
		e->chain = calloc(nn, sizeof(*e->chain));
		if (!e->chain || fuse_chains(e))
			goto nomem;
	}
	e->u8 = calloc(nn, sizeof(*e->u8));
	e->u8s = calloc(nn, sizeof(*e->u8s));
	e->u8z = calloc(nn, sizeof(*e->u8z));
	if (!e->u8 || !e->u8s || !e->u8z)
		goto nomem;
	for (int i = 0; !training && i < m->n_nodes; i++)
		e->any_q8 |= mc_qop_gives_u8(m->nodes[i]);
	for (int i = 0; i < m->n_nodes; i++) {
		if (e->fused[i] == FUSE_RELU_IN_CONV || e->fused[i] == FUSE_RELU_IN_LINEAR ||
		    e->fused[i] == FUSE_RELU_IN_QADD) {
			e->act[i] = e->act[m->nodes[i]->inputs[0]];
		} else if (e->fused[i] == FUSE_FLATTEN || e->fused[i] == FUSE_CHAIN_INNER) {
			e->act[i] = NULL; /* set by each forward; or never written */
		} else {
			e->act[i] = mc_calloc((size_t)max_batch * (size_t)m->nodes[i]->out_numel,
					      sizeof(float));
			if (!e->act[i])
				goto nomem;
		}
		if (m->nodes[i]->op->workspace) {
			size_t w = m->nodes[i]->op->workspace(m->nodes[i], max_batch);

			if (w > work)
				work = w;
		}
		for (int k = 0; k < m->nodes[i]->n_inputs; k++) {
			int src = m->nodes[i]->inputs[k];
			size_t in =
			    (size_t)(src == MC_NODE_INPUT ? m->in_numel : m->nodes[src]->out_numel);

			if (src != MC_NODE_INPUT && ++e->uses[src] > 1)
				shared = 1;
			if (in > max_in)
				max_in = in;
		}
	}
	if (work) {
		e->run.work = mc_calloc(work, 1);
		if (!e->run.work)
			goto nomem;
	}
	if (!training)
		return e;
	e->needs = calloc(nn, sizeof(*e->needs));
	if (!e->needs)
		goto nomem;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *nd = m->nodes[i];

		e->needs[i] = nd->n_params > nd->n_buffers;
		for (int k = 0; k < nd->n_inputs; k++)
			if (nd->inputs[k] != MC_NODE_INPUT && e->needs[nd->inputs[k]])
				e->needs[i] = 1;
	}
	e->dact = calloc(nn, sizeof(*e->dact));
	e->grads = calloc(nn * MC_NODE_MAX_PARAMS, sizeof(*e->grads));
	e->dwpool = malloc(nn * sizeof(*e->dwpool));
	if (!e->dact || !e->grads || !e->dwpool)
		goto nomem;
	for (int i = 0; i < m->n_nodes; i++)
		e->dwpool[i] = -1;
	for (int k = 0; k < m->n_nodes; k++) {
		int c = e->fused[k] == FUSE_POOL_RELU_BACK
			    ? m->nodes[m->nodes[k]->inputs[0]]->inputs[0]
			    : 0;
		int src = e->fused[k] == FUSE_POOL_RELU_BACK ? m->nodes[c]->inputs[0] : 0;

		if (e->fused[k] == FUSE_POOL_RELU_BACK &&
		    (src == MC_NODE_INPUT || !e->needs[src]) &&
		    mc_conv2d_dw_fuses_pool(m->nodes[c]))
			e->dwpool[c] = k;
	}
	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_node *nd = m->nodes[i];

		e->dact[i] =
		    e->dwpool[i] >= 0
			? NULL
			: mc_calloc((size_t)max_batch * (size_t)nd->out_numel, sizeof(float));
		if (e->dwpool[i] < 0 && !e->dact[i])
			goto nomem;
		for (int p = 0; p < nd->n_params; p++) {
			float **g = &e->grads[i * MC_NODE_MAX_PARAMS + p];

			*g = mc_calloc((size_t)nd->params[p]->numel, sizeof(float));
			if (!*g)
				goto nomem;
		}
	}
	/* Nodes read by several inputs sum their gradients through scratch. */
	for (int k = 0; shared && k < MC_NODE_MAX_INPUTS; k++) {
		e->scratch[k] = mc_calloc((size_t)max_batch * max_in, sizeof(float));
		if (!e->scratch[k])
			goto nomem;
	}
	return e;

nomem:
	mc_exec_free(e);
	mc_err_set(err, MC_ENOMEM, "out of memory for activations of batch %d; use a smaller batch",
		   max_batch);
	return NULL;
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return 1e3 * (double)ts.tv_sec + 1e-6 * (double)ts.tv_nsec;
}

void mc_exec_profile(struct mc_exec *e, double *ms)
{
	e->prof = ms;
}

/*
 * u8[i] for each node that can give its output as u8 and whose readers (one
 * or more; not the model's output, which the caller reads) all take it as
 * u8 at one pair: the same bytes they would quantize it to, without the f32
 * tensor between. Nodes another node computes (fused) keep f32.
 */
static void plan_u8(struct mc_exec *e)
{
	const struct mc_model *m = e->m;

	for (int i = 0; i < m->n_nodes; i++) {
		/* a qadd with its relu: the relu's readers are the ones to take u8 */
		int out = e->fused[i] == FUSE_QADD_RELU ? e->pool[i] : i;
		int readers = 0, ok = mc_qop_gives_u8(m->nodes[i]) &&
				      (!e->fused[i] || e->fused[i] == FUSE_QADD_RELU) &&
				      out != m->n_nodes - 1;

		if (e->fused[i] == FUSE_RELU_IN_QADD)
			continue; /* its qadd's */
		for (int r = out + 1; ok && r < m->n_nodes; r++) {
			const struct mc_node *nd = m->nodes[r];

			for (int k = 0; ok && k < nd->n_inputs; k++) {
				float s;
				int z;

				if (nd->inputs[k] != out)
					continue;
				ok = !e->fused[r] && mc_qop_takes_u8(nd, k, &s, &z) &&
				     (!readers || (s == e->u8s[i] && z == e->u8z[i]));
				if (ok && !readers++) {
					e->u8s[i] = s;
					e->u8z[i] = z;
				}
			}
		}
		e->u8[i] = ok && readers > 0;
		if (out != i) {
			e->u8[out] = e->u8[i];
			e->u8s[out] = e->u8s[i];
			e->u8z[out] = e->u8z[i];
		}
	}
}

/*
 * The relu of a qadd (FUSE_QADD_RELU) in place on its output: on f32 the
 * relu's own forward; on u8 at (s, z), max with z: quantizing is monotone
 * and takes 0.0 to z, so u8(max(y, 0)) = max(u8(y), z), the bytes its
 * readers would have made of the relu's output (NaN, which the add gives
 * for damaged scales as u8 0, goes to z either way).
 */
static void qadd_relu(struct mc_exec *e, int i, int n)
{
	const struct mc_node *relu = e->m->nodes[e->pool[i]];
	size_t total = (size_t)n * (size_t)e->m->nodes[i]->out_numel;

	if (e->u8[i]) {
		uint8_t *q = (uint8_t *)e->act[i], z = (uint8_t)e->u8z[i];

#pragma omp parallel for schedule(static) if (total >= ((size_t)1 << 18))
		for (size_t c = 0; c < total; c += 16384) {
			size_t k = c, end = c + 16384 < total ? c + 16384 : total;
#ifdef __SSE2__
			__m128i vz = _mm_set1_epi8((char)z);

			for (; k + 16 <= end; k += 16)
				_mm_storeu_si128((__m128i *)(q + k),
						 _mm_max_epu8(_mm_loadu_si128((const __m128i *)(q + k)),
							      vz));
#endif
			for (; k < end; k++)
				q[k] = q[k] > z ? q[k] : z;
		}
	} else {
		const float *in[1] = { e->act[i] };

		relu->op->forward(relu, &e->run, n, in, e->act[i]);
	}
}

/* Node i of the forward pass, or nothing when another node computes it. */
static void forward_node(struct mc_exec *e, int i, const float *x, int n)
{
	const struct mc_model *m = e->m;
	const struct mc_node *nd = m->nodes[i];
	const float *in[MC_NODE_MAX_INPUTS];

	if (e->fused[i] == FUSE_FLATTEN) {
		int src = nd->inputs[0];

		e->act[i] = src == MC_NODE_INPUT ? (float *)x : e->act[src];
		return;
	}
	if (e->fused[i] == FUSE_RELU_IN_CONV || e->fused[i] == FUSE_POOL_IN_CONV ||
	    e->fused[i] == FUSE_RELU_IN_LINEAR || e->fused[i] == FUSE_CHAIN_CONV ||
	    e->fused[i] == FUSE_CHAIN_INNER || e->fused[i] == FUSE_RELU_IN_QADD)
		return;
	if (e->fused[i] == FUSE_CHAIN_LAST) {
		struct chain *c = &e->chain[i];
		const struct mc_node *head = m->nodes[c->head];
		int src = head->inputs[0];
		int64_t C = m->nodes[c->bn]->out_shape[0];

		/* the statistics as they are now (a pass may have changed them) */
		mc_batchnorm_affine(m->nodes[c->bn], c->affine, c->affine + C);
		c->post.scale = c->affine;
		c->post.shift = c->affine + C;
		in[0] = src == MC_NODE_INPUT ? x : e->act[src];
		mc_conv2d_forward_post(head, &e->run, n, in, &c->post,
				       !c->post.add		  ? NULL
				       : c->res == MC_NODE_INPUT ? x
								 : e->act[c->res],
				       e->act[c->head], e->act[i]);
		return;
	}
	for (int k = 0; k < nd->n_inputs; k++)
		in[k] = nd->inputs[k] == MC_NODE_INPUT ? x : e->act[nd->inputs[k]];
	if (e->any_q8 && (!e->fused[i] || e->fused[i] == FUSE_QADD_RELU)) {
		const uint8_t *in8[MC_NODE_MAX_INPUTS] = { NULL };
		int any = e->u8[i];

		for (int k = 0; k < nd->n_inputs; k++)
			if (nd->inputs[k] != MC_NODE_INPUT && e->u8[nd->inputs[k]]) {
				in8[k] = (const uint8_t *)e->act[nd->inputs[k]];
				in[k] = NULL;
				any = 1;
			}
		if (any) {
			mc_qop_forward_u8(nd, &e->run, n, in, in8, e->u8[i] ? NULL : e->act[i],
					  e->u8[i] ? (uint8_t *)e->act[i] : NULL, e->u8s[i], e->u8z[i]);
			if (e->fused[i] == FUSE_QADD_RELU)
				qadd_relu(e, i, n);
			return;
		}
	}
	if (e->fused[i] == FUSE_QADD_RELU) {
		nd->op->forward(nd, &e->run, n, in, e->act[i]);
		qadd_relu(e, i, n);
		return;
	}
	if (e->fused[i] == FUSE_LINEAR_RELU)
		mc_linear_forward_relu(nd, &e->run, n, in, e->act[i]);
	else if (e->fused[i] == FUSE_CONV_RELU && e->pool[i] >= 0 && nd->op == &mc_op_qconv2d)
		mc_qconv2d_forward_pool(nd, m->nodes[e->pool[i]], &e->run, n, in, e->act[i],
					e->act[e->pool[i]]);
	else if (e->fused[i] == FUSE_CONV_RELU && e->pool[i] >= 0)
		mc_conv2d_forward_relu_pool(nd, m->nodes[e->pool[i]], &e->run, n, in, e->act[i],
					    e->act[e->pool[i]]);
	else if (e->fused[i] == FUSE_CONV_RELU)
		mc_conv2d_forward_relu(nd, &e->run, n, in, e->act[i]);
	else
		nd->op->forward(nd, &e->run, n, in, e->act[i]);
}

const float *mc_forward(struct mc_exec *e, const float *x, int n)
{
	const struct mc_model *m = e->m;

	if (n > e->max_batch)
		n = e->max_batch; /* never write past the buffers */
	mc_threads_adapt();
	e->x = x;
	e->n = n;
	if (e->training)
		e->run.step++;
	if (e->any_q8)
		plan_u8(e);
	for (int i = 0; i < m->n_nodes; i++) {
		double t0 = e->prof ? now_ms() : 0.0;

		forward_node(e, i, x, n);
		/* a fused chain's time is its conv2d's (the layers after it show none) */
		if (e->prof)
			e->prof[2 * (e->fused[i] == FUSE_CHAIN_LAST ? e->chain[i].head : i)] +=
			    now_ms() - t0;
	}
	return e->act[m->n_nodes - 1];
}

/* The backward of node i, when its output reached a loss. */
static void backward_node(struct mc_exec *e, int i, const float *dlogits)
{
	const struct mc_model *m = e->m;
	int last = m->n_nodes - 1;
	const struct mc_node *nd = m->nodes[i];
	const float *in[MC_NODE_MAX_INPUTS];
	float *din[MC_NODE_MAX_INPUTS];
	int add[MC_NODE_MAX_INPUTS];

	/* A node whose output reaches no loss has zero gradient: skip it. */
	if (i != last && !e->written[i])
		return;
	if (!nd->op->backward) /* not trained through: upstream gets nothing */
		return;
	if (e->fused[i] == FUSE_POOL_RELU_BACK) {
		/* the pool and its relu at once, into the conv's gradient */
		int r = nd->inputs[0], c = m->nodes[r]->inputs[0];

		if (e->needs[c] && !e->written[c] && e->dwpool[c] == i) {
			e->written[c] = 1; /* the conv2d's backward runs this one */
		} else if (e->needs[c] && !e->written[c]) {
			mc_maxpool2_backward_relu(nd, e->n, e->act[r],
						  i == last ? dlogits : e->dact[i], e->dact[c]);
			e->written[c] = 1;
		}
		return;
	}
	if (e->dwpool && e->dwpool[i] >= 0) {
		int k = e->dwpool[i], src = nd->inputs[0];

		mc_conv2d_backward_relu_pool(
		    nd, m->nodes[k], &e->run, e->n, src == MC_NODE_INPUT ? e->x : e->act[src],
		    e->act[m->nodes[k]->inputs[0]], k == last ? dlogits : e->dact[k],
		    &e->grads[i * MC_NODE_MAX_PARAMS]);
		return;
	}
	for (int k = 0; k < nd->n_inputs; k++) {
		int src = nd->inputs[k];

		add[k] = 0;
		in[k] = src == MC_NODE_INPUT ? e->x : e->act[src];
		if (src == MC_NODE_INPUT) {
			din[k] = NULL;
		} else if (!e->needs[src]) {
			/* Nothing upstream learns: the input gradient would be
			 * thrown away (fc1's is a third of an MLP's backward). */
			din[k] = NULL;
		} else if (!e->written[src]) {
			din[k] = e->dact[src];
			e->written[src] = 1;
		} else {
			din[k] = e->scratch[k];
			add[k] = 1;
		}
	}
	nd->op->backward(nd, &e->run, e->n, in, e->act[i], i == last ? dlogits : e->dact[i],
			 din,
			 e->defer_linear && nd->op == &mc_op_linear ? NULL :
								      &e->grads[i * MC_NODE_MAX_PARAMS]);
	for (int k = 0; k < nd->n_inputs; k++) {
		int64_t total;
		float *dst;

		if (!add[k])
			continue;
		dst = e->dact[nd->inputs[k]];
		total = (int64_t)e->n * m->nodes[nd->inputs[k]]->out_numel;
		for (int64_t j = 0; j < total; j++)
			dst[j] += din[k][j];
	}
}

void mc_backward(struct mc_exec *e, const float *dlogits)
{
	const struct mc_model *m = e->m;

	if (!e->training || !e->x)
		return;
	memset(e->written, 0, (size_t)m->n_nodes * sizeof(*e->written));
	for (int i = m->n_nodes - 1; i >= 0; i--) {
		double t0 = e->prof ? now_ms() : 0.0;

		backward_node(e, i, dlogits);
		if (e->prof)
			e->prof[2 * i + 1] += now_ms() - t0;
	}
}

void mc_exec_set_seed(struct mc_exec *e, uint64_t seed)
{
	e->run.seed = seed;
}

void mc_exec_set_step(struct mc_exec *e, uint64_t step)
{
	e->run.step = step;
}

void mc_exec_set_sample0(struct mc_exec *e, int64_t sample0)
{
	e->run.sample0 = sample0;
}

void mc_exec_zero_grad(struct mc_exec *e)
{
	if (!e->training)
		return;
	for (int i = 0; i < e->m->n_nodes; i++)
		for (int p = 0; p < e->m->nodes[i]->n_params; p++)
			mc_par_copy(e->grads[i * MC_NODE_MAX_PARAMS + p], NULL,
				    e->m->nodes[i]->params[p]->numel);
}

float *mc_exec_grad(struct mc_exec *e, int node, int param)
{
	if (!e->training || node < 0 || node >= e->m->n_nodes || param < 0 ||
	    param >= e->m->nodes[node]->n_params)
		return NULL;
	return e->grads[node * MC_NODE_MAX_PARAMS + param];
}

void mc_exec_defer_linear(struct mc_exec *e, int defer)
{
	e->defer_linear = defer;
}

const float *mc_exec_input(const struct mc_exec *e, int node, int k)
{
	int src = e->m->nodes[node]->inputs[k];

	return src == MC_NODE_INPUT ? e->x : e->act[src];
}

const float *mc_exec_dout(const struct mc_exec *e, int node)
{
	return e->dact ? e->dact[node] : NULL;
}
