/* SPDX-License-Identifier: MIT */
/*
 * train.c - the epoch loop, evaluation and the progress bar.
 *
 * Each epoch visits the training set in the order of a Philox permutation
 * keyed by (seed, epoch); batches are gathered in that order, the last one
 * partial. Nothing here depends on the thread count, so a run with a given
 * seed is reproducible byte for byte.
 */
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/train.h>

#include "graph/model_int.h"
#include "graph/ops_int.h"
#include "kernels/gemm.h"

/* Shuffling and augmentation streams, apart from the parameter-init streams
 * of model.c (1 << 56) and dropout's (3 << 56, ops_int.h). */
#define STREAM_SHUFFLE (2ull << 56)
#define STREAM_AUGMENT (4ull << 56)

/* ---------------------------------------------------------------- progress */

static struct {
	mc_progress_fn fn;
	void *arg;
	int on;
	char label[64];
	int64_t total;
	double last;
} bar;

void mc_progress_set_sink(mc_progress_fn fn, void *arg)
{
	bar.fn = fn;
	bar.arg = arg;
}

void mc_progress_begin(const char *label, int64_t total)
{
	bar.on = bar.fn != NULL;
	snprintf(bar.label, sizeof(bar.label), "%s", label ? label : "");
	bar.total = total > 0 ? total : 1;
	bar.last = 0;
}

void mc_progress_update(int64_t done, const char *status)
{
	double now, frac;

	if (!bar.on)
		return;
	now = omp_get_wtime();
	/* Ten updates a second are plenty; always the end. */
	if (done < bar.total && now - bar.last < 0.1)
		return;
	bar.last = now;
	frac = (double)done / (double)bar.total;
	bar.fn(bar.arg, bar.label, frac > 1 ? 1 : frac < 0 ? 0 : frac, status ? status : "");
}

void mc_progress_end(void)
{
	if (bar.on)
		bar.fn(bar.arg, bar.label, -1, "");
	bar.on = 0;
}

/* ---------------------------------------------------------------- checks */

static int check_data(const struct mc_model *m, const struct mc_dataset *d, struct mc_err *err)
{
	const char *src = d->source ? d->source : "data set";

	if (d->n < 1 || !d->x || !d->y)
		return mc_err_set(err, MC_EINVAL, "%s: no samples; use a non-empty split", src);
	if (d->sample_numel != m->in_numel)
		return mc_err_set(err, MC_EINVAL,
				  "%s: samples have %lld values but the model takes %lld; use a model built for this data",
				  src, (long long)d->sample_numel, (long long)m->in_numel);
	for (int64_t i = 0; i < d->n; i++)
		if (d->y[i] >= m->n_classes)
			return mc_err_set(err, MC_EINVAL,
					  "%s: sample %lld has label %d but the model has %lld classes; give the last layer more outputs",
					  src, (long long)i, d->y[i], (long long)m->n_classes);
	return 0;
}

/*
 * Writes sample src [C, H, W] shifted by (dy, dx) pixels, and mirrored left to
 * right first when flip, into dst; pixels from outside the image are 0.
 */
static void augment_one(const float *src, float *dst, int64_t c, int64_t h, int64_t w, int dy,
			int dx, int flip)
{
	for (int64_t k = 0; k < c; k++)
		for (int64_t i = 0; i < h; i++) {
			const float *s = src + (k * h + i - dy) * w;
			float *o = dst + (k * h + i) * w;

			if (i - dy < 0 || i - dy >= h) {
				memset(o, 0, (size_t)w * sizeof(float));
				continue;
			}
			for (int64_t j = 0; j < w; j++) {
				int64_t sj = j - dx;

				if (flip)
					sj = w - 1 - sj;
				o[j] = sj >= 0 && sj < w ? s[sj] : 0.0f;
			}
		}
}

/*
 * Gathers the batch idx[0..n) into x and y, augmented per (seed, epoch,
 * sample index) when c asks for it: the same sample gets the same draw in
 * an epoch whatever the batch size or thread count.
 */
static void gather(const struct mc_dataset *d, const struct mc_train_conf *c, int epoch,
		   const int64_t *idx, int n, float *x, uint8_t *y)
{
	size_t row = (size_t)d->sample_numel;
	int aug = (c->shift > 0 || c->hflip) && d->ndim >= 2;
	int64_t ch = d->ndim == 3 ? d->shape[0] : 1;
	/* Samples of one dimension (a vector) have no image to augment. */
	int64_t h = aug ? d->shape[d->ndim - 2] : 1, w = aug ? d->shape[d->ndim - 1] : 1;

#pragma omp parallel for schedule(static) if ((size_t)n * row >= 65536)
	for (int i = 0; i < n; i++) {
		const float *src = d->x + (size_t)idx[i] * row;
		float *dst = x + (size_t)i * row;

		y[i] = d->y[idx[i]];
		if (aug && ch * h * w == (int64_t)row) {
			uint32_t r[4];
			int span = 2 * c->shift + 1;

			mc_philox(c->seed, STREAM_AUGMENT + (uint64_t)epoch, (uint64_t)idx[i], r);
			augment_one(src, dst, ch, h, w, (int)(r[0] % (uint32_t)span) - c->shift,
				    (int)(r[1] % (uint32_t)span) - c->shift, c->hflip && (r[2] & 1));
		} else {
			memcpy(dst, src, row * sizeof(float));
		}
	}
}

/* ---------------------------------------------------------------- data parallel */

static const struct mc_dist *dist; /* NULL: one process */

static int dp_fail(struct mc_err *err, const char *what, int peer);

void mc_dist_set(const struct mc_dist *d)
{
	dist = d && d->size > 1 ? d : NULL;
}

int mc_dist_ranks(void)
{
	return dist ? dist->size : 1;
}

/* Rank r's blocks of B: [B r / R, B (r + 1) / R), as items of n. */
static void part_of(int64_t n, int64_t block, int r, int R, int64_t *lo, int64_t *hi)
{
	int64_t B = (n + block - 1) / block;

	*lo = B * r / R * block;
	*hi = B * (r + 1) / R * block;
	*lo = *lo < n ? *lo : n;
	*hi = *hi < n ? *hi : n;
}

void mc_dist_part(int64_t n, int64_t block, int64_t *lo, int64_t *hi)
{
	part_of(n, block > 0 ? block : 1, dist ? dist->rank : 0, dist ? dist->size : 1, lo, hi);
}

int mc_dist_gather(void *buf, int64_t n, int64_t block, size_t size, struct mc_err *err)
{
	int got = 0;

	if (!dist)
		return 0;
	for (int r = 0; r < dist->size; r++) {
		int64_t lo, hi;
		int sig = mc_interrupted();

		part_of(n, block > 0 ? block : 1, r, dist->size, &lo, &hi);
		if (dist->bcast(dist->arg, r, &sig, sizeof(sig)))
			return dp_fail(err, "the signal's broadcast from", r);
		got = got ? got : sig;
		if (hi > lo && dist->bcast(dist->arg, r, (char *)buf + (size_t)lo * size,
					   (size_t)(hi - lo) * size))
			return dp_fail(err, "the shared results' broadcast from", r);
	}
	if (got && !mc_interrupted())
		mc_interrupt(got); /* another rank's signal: stop here too */
	return 0;
}

/*
 * Whether a run of m splits its batches over the ranks: only nodes whose
 * work is per sample but for their parameter gradients (linear, relu,
 * flatten), the cross-entropy as the loss, and batches of one GEMM slice
 * (within one, a weight gradient's sum over the batch is one chain of
 * fused multiply-adds, which the ranks continue one after another:
 * kernels/gemm.h). A batch also needs 4 samples per rank, so that no
 * rank's product takes the GEMV path (sums in another order).
 */
static int dp_eligible(const struct mc_model *m, const struct mc_train_hooks *hooks, int bs)
{
	if (!dist || (hooks && hooks->loss) || bs > MC_SGEMM_KC)
		return 0;
	for (int i = 0; i < m->n_nodes; i++) {
		const struct mc_op *op = m->nodes[i]->op;

		if (op != &mc_op_linear && op != &mc_op_relu && op != &mc_op_flatten)
			return 0;
		if (op == &mc_op_linear && m->nodes[i]->n_inputs != 1)
			return 0;
	}
	return 1;
}

static int dp_fail(struct mc_err *err, const char *what, int peer)
{
	return mc_err_set(err, MC_ERUN, "training: rank %d of %d: %s rank %d failed; stopped",
			  dist->rank, dist->size, what, peer);
}

/*
 * One step's forward and backward over the ranks (dp_eligible): this rank
 * takes samples [n r / R, n (r + 1) / R) of the batch idx[0..n), and every
 * sum over the batch goes on where the rank before left it, in sample
 * order, as one process sums it: the loss (in double), each linear layer's
 * bias gradient (floats added in turn) and weight gradient (a chain of
 * FMAs, mc_sgemm_tn_chain). The last rank's sums go to every rank, which
 * then all take the same optimizer step. terms holds bs doubles.
 */
static int dp_step(struct mc_exec *e, const struct mc_model *m, const struct mc_dataset *d,
		   const struct mc_train_conf *c, int ep, const int64_t *idx, int n, float *x,
		   uint8_t *y, float *dlogits, double *terms, float *loss, struct mc_err *err)
{
	int R = dist->size, r = dist->rank, lo = (int)((int64_t)n * r / R);
	int nr = (int)((int64_t)n * (r + 1) / R) - lo, k = (int)m->n_classes;
	int last = m->n_nodes - 1;
	const float *logits;
	/* the loss so far, and a signal any rank has had so far (mc_interrupt):
	 * the last rank's goes to all, so that every rank stops after the same
	 * step, where rank 0 writes the checkpoint */
	struct {
		double total;
		int sig;
	} sum = { 0, 0 };

	gather(d, c, ep, idx + lo, nr, x, y);
	logits = mc_forward(e, x, nr);
	for (int i = 0; i < nr; i++) {
		terms[i] = 0;
		mc_softmax_xent_part(logits + (size_t)i * k, y + i, 1, k, n,
				     dlogits + (size_t)i * k, &terms[i]);
	}
	mc_exec_zero_grad(e);
	mc_exec_defer_linear(e, 1);
	mc_backward(e, dlogits);
	mc_exec_defer_linear(e, 0);
	if (r > 0 && dist->recv(dist->arg, r - 1, &sum, sizeof(sum)))
		return dp_fail(err, "receiving the loss from", r - 1);
	for (int i = 0; i < nr; i++)
		sum.total += terms[i];
	if (!sum.sig)
		sum.sig = mc_interrupted();
	if (r < R - 1 && dist->send(dist->arg, r + 1, &sum, sizeof(sum)))
		return dp_fail(err, "sending the loss to", r + 1);
	for (int i = last; i >= 0; i--) {
		const struct mc_node *nd = m->nodes[i];
		float *gw, *gb;
		const float *dout, *in;
		int O, I;

		if (nd->op != &mc_op_linear)
			continue;
		O = (int)nd->params[0]->shape[0];
		I = (int)nd->params[0]->shape[1];
		gw = mc_exec_grad(e, i, 0);
		gb = nd->n_params > 1 ? mc_exec_grad(e, i, 1) : NULL;
		dout = i == last ? dlogits : mc_exec_dout(e, i);
		in = mc_exec_input(e, i, 0);
		if (r > 0 && (dist->recv(dist->arg, r - 1, gw, (size_t)O * I * sizeof(float)) ||
			      (gb && dist->recv(dist->arg, r - 1, gb, (size_t)O * sizeof(float)))))
			return dp_fail(err, "receiving gradients from", r - 1);
		mc_sgemm_tn_chain(O, I, nr, dout, O, in, I, gw, I, r == R - 1);
		for (int j = 0; gb && j < nr; j++)
			for (int o = 0; o < O; o++)
				gb[o] += dout[(size_t)j * O + o];
		if (r < R - 1 && (dist->send(dist->arg, r + 1, gw, (size_t)O * I * sizeof(float)) ||
				  (gb && dist->send(dist->arg, r + 1, gb, (size_t)O * sizeof(float)))))
			return dp_fail(err, "sending gradients to", r + 1);
	}
	if (dist->bcast(dist->arg, R - 1, &sum, sizeof(sum)))
		return dp_fail(err, "the loss's broadcast from", R - 1);
	if (sum.sig && !mc_interrupted())
		mc_interrupt(sum.sig); /* another rank's signal: stop here too */
	for (int i = 0; i <= last; i++)
		for (int p = 0; m->nodes[i]->op == &mc_op_linear && p < m->nodes[i]->n_params; p++)
			if (dist->bcast(dist->arg, R - 1, mc_exec_grad(e, i, p),
					(size_t)m->nodes[i]->params[p]->numel * sizeof(float)))
				return dp_fail(err, "the gradients' broadcast from", R - 1);
	*loss = (float)(sum.total / n);
	return 0;
}

/* ---------------------------------------------------------------- grouped steps */

/*
 * A grouped step (mc_train_conf.grad_groups = G): the batch of n is split
 * into G groups, group g the samples [n g / G, n (g + 1) / G). Each group's
 * forward and backward is an ordinary one of its own (convolutions, batch
 * norm on the group's statistics, the loss hook), with dropout keyed by the
 * sample's place in the batch (mc_exec_set_sample0) and the step's number,
 * and its gradient scaled by n_g / n: the sum of the G is the gradient of
 * the batch's mean loss. A group's state is one vector of P floats: every
 * trained parameter's gradient, then how the group's forward moved every
 * buffer (batch norm's running statistics), times n_g / n, the model's
 * buffers put back before the next group: the sum is one update towards
 * the mean of the groups' statistics, and a buffer no forward moves (a
 * fixed quantization range) keeps its bytes.
 *
 * The G vectors are summed left to right, acc = ((s_0 + s_1) + s_2) + ...,
 * element by element. With R ranks, rank r takes the groups
 * [G r / R, G (r + 1) / R) and computes them without waiting for anyone;
 * then the sum goes from rank to rank in chunks of COMBINE_CHUNK floats
 * (128 KiB: small against a model's gradients, so that the hops overlap):
 * rank r receives a chunk of the sum so far, adds its groups' parts in
 * order, sends it on, and takes the next chunk, so the ranks add different
 * chunks at the same time; the last rank broadcasts the sum. Left to right
 * rather than a tree: any R up to G takes part of one chain with the same
 * additions in the same order (a tree's subtrees match the ranks' groups
 * only for powers of two), and each rank receives and sends the vector
 * once on the chain, then once in the broadcast. Rounding grows with G, not with R: for the few
 * groups this is for (2 to 64) that is immaterial.
 */
#define COMBINE_CHUNK ((size_t)1 << 15)

struct grouped {
	int G, g0, g1;	   /* this rank's groups [g0, g1) */
	size_t P, nb;	   /* floats per group; of those, the buffers' (at the end) */
	float *slots;	   /* (g1 - g0) x P */
	float *acc;	   /* P: the sum */
	float *saved;	   /* nb: the buffers before the step */
	double *loss;	   /* per group of this rank: the sum of its samples' losses */
};

static void grouped_free(struct grouped *gr)
{
	if (!gr)
		return;
	mc_free(gr->slots);
	mc_free(gr->acc);
	mc_free(gr->saved);
	free(gr->loss);
	free(gr);
}

/* Runs BODY for every part of a group's vector, in its order: pass_ 0 the
 * trained parameters' gradients in e, pass_ 1 the model's f32 buffers;
 * part_ points at the part, len_ is its floats. */
#define FOR_PARTS(m, e, BODY)                                                             \
	for (int pass_ = 0; pass_ < 2; pass_++)                                           \
		for (int i_ = 0; i_ < (m)->n_nodes; i_++) {                                 \
			const struct mc_node *nd_ = (m)->nodes[i_];                        \
			for (int p_ = 0; p_ < nd_->n_params; p_++) {                       \
				int buf_ = p_ >= nd_->n_params - nd_->n_buffers;           \
				float *part_ = buf_ ? (nd_->params[p_]->dtype == MC_F32 ?   \
							       nd_->params[p_]->data : NULL) \
						    : mc_exec_grad((e), i_, p_);           \
				size_t len_ = (size_t)nd_->params[p_]->numel;              \
				if (buf_ != pass_ || !part_)                               \
					continue;                                          \
				BODY;                                                      \
			}                                                                  \
		}

static struct grouped *grouped_new(const struct mc_model *m, struct mc_exec *e, int G,
				   struct mc_err *err)
{
	int R = dist ? dist->size : 1, r = dist ? dist->rank : 0;
	struct grouped *gr;

	if (G > 65536 || R > G) {
		mc_err_set(err, MC_EINVAL,
			   "training: %d gradient groups over %d ranks; use 1 to 65536 groups, "
			   "at least one per rank",
			   G, R);
		return NULL;
	}
	gr = calloc(1, sizeof(*gr));
	if (!gr)
		goto nomem;
	gr->G = G;
	gr->g0 = (int)((int64_t)G * r / R);
	gr->g1 = (int)((int64_t)G * (r + 1) / R);
	FOR_PARTS(m, e, {
		gr->P += len_;
		gr->nb += pass_ ? len_ : 0;
	});
	gr->slots = mc_calloc((size_t)(gr->g1 - gr->g0) * (gr->P ? gr->P : 1), sizeof(float));
	gr->acc = mc_calloc(gr->P ? gr->P : 1, sizeof(float));
	gr->saved = mc_calloc(gr->nb ? gr->nb : 1, sizeof(float));
	gr->loss = calloc((size_t)(gr->g1 - gr->g0), sizeof(double));
	if (gr->slots && gr->acc && gr->saved && gr->loss)
		return gr;
nomem:
	grouped_free(gr);
	mc_err_set(err, MC_ENOMEM, "training: out of memory for %d gradient groups", G);
	return NULL;
}

/* acc[0..len) += s_g[0..len) for g = 0, 1, .., n - 1 in turn, element by
 * element, s_g at s + g * stride: one parallel loop for all n. */
static void add_floats(float *acc, const float *s, size_t stride, int n, size_t len)
{
#pragma omp parallel for schedule(static) if (len * (size_t)n >= 65536)
	for (size_t j = 0; j < len; j++) {
		float a = acc[j];

		for (int g = 0; g < n; g++)
			a += s[(size_t)g * stride + j];
		acc[j] = a;
	}
}

/* The left-to-right sum of the G groups' vectors into gr->acc on every rank
 * (see above), and the batch's loss sum into *total. */
static int grouped_combine(struct grouped *gr, double *total, struct mc_err *err)
{
	int R = dist ? dist->size : 1, r = dist ? dist->rank : 0, mine = gr->g1 - gr->g0;
	/* one process: no chain, one pass over the whole vector */
	size_t chunk = R > 1 ? COMBINE_CHUNK : gr->P;
	struct {
		double total;
		int sig;
	} sum = { 0, 0 };

	if (r > 0 && dist->recv(dist->arg, r - 1, &sum, sizeof(sum)))
		return dp_fail(err, "receiving the loss from", r - 1);
	for (int g = 0; g < mine; g++)
		sum.total += gr->loss[g];
	if (!sum.sig)
		sum.sig = mc_interrupted();
	if (r < R - 1 && dist->send(dist->arg, r + 1, &sum, sizeof(sum)))
		return dp_fail(err, "sending the loss to", r + 1);
	for (size_t at = 0; at < gr->P; at += chunk) {
		size_t len = gr->P - at < chunk ? gr->P - at : chunk;
		int g = 0;

		if (r == 0)
			memcpy(gr->acc + at, gr->slots + at, len * sizeof(float)), g = 1;
		else if (dist->recv(dist->arg, r - 1, gr->acc + at, len * sizeof(float)))
			return dp_fail(err, "receiving gradient sums from", r - 1);
		add_floats(gr->acc + at, gr->slots + (size_t)g * gr->P + at, gr->P, mine - g, len);
		if (r < R - 1 && dist->send(dist->arg, r + 1, gr->acc + at, len * sizeof(float)))
			return dp_fail(err, "sending gradient sums to", r + 1);
	}
	if (R > 1) {
		if (dist->bcast(dist->arg, R - 1, &sum, sizeof(sum)))
			return dp_fail(err, "the loss's broadcast from", R - 1);
		if (sum.sig && !mc_interrupted())
			mc_interrupt(sum.sig); /* another rank's signal: stop here too */
		if (gr->P && dist->bcast(dist->arg, R - 1, gr->acc, gr->P * sizeof(float)))
			return dp_fail(err, "the gradients' broadcast from", R - 1);
	}
	*total = sum.total;
	return 0;
}

/*
 * One grouped step over the batch idx[0..n) of step step (optimizer steps
 * done before it): this rank's groups, their sum over all ranks, and the
 * sum put into e's gradients and m's buffers. *loss: the batch's mean loss.
 */
static int grouped_step(struct grouped *gr, struct mc_exec *e, const struct mc_model *m,
			const struct mc_dataset *d, const struct mc_train_conf *c,
			const struct mc_train_hooks *hooks, int ep, int64_t step,
			const int64_t *idx, int n, float *x, uint8_t *y, float *dlogits,
			float *loss, struct mc_err *err)
{
	int k = (int)m->n_classes, G = gr->G;
	double total = 0;
	size_t at;
	int r;

	at = 0;
	FOR_PARTS(m, e, {
		if (pass_) {
			memcpy(gr->saved + at, part_, len_ * sizeof(float));
			at += len_;
		}
	});
	for (int g = gr->g0; g < gr->g1; g++) {
		int a = (int)((int64_t)n * g / G), ng = (int)((int64_t)n * (g + 1) / G) - a;
		float *s = gr->slots + (size_t)(g - gr->g0) * gr->P, w = (float)((double)ng / n);
		double *lg = &gr->loss[g - gr->g0];
		const float *logits;
		size_t ab = 0;

		*lg = 0;
		if (ng == 0) { /* a last batch of fewer than G samples */
			memset(s, 0, gr->P * sizeof(float));
			continue;
		}
		gather(d, c, ep, idx + a, ng, x, y);
		mc_exec_set_step(e, (uint64_t)step);
		mc_exec_set_sample0(e, a);
		logits = mc_forward(e, x, ng);
		if (hooks && hooks->loss) {
			*lg = (double)hooks->loss(hooks->arg, x, logits, idx + a, ng, k, dlogits) * ng;
			for (size_t j = 0; j < (size_t)ng * k; j++)
				dlogits[j] *= w;
		} else {
			mc_softmax_xent_part(logits, y, ng, k, n, dlogits, lg);
		}
		mc_exec_zero_grad(e);
		mc_backward(e, dlogits);
		at = 0;
		FOR_PARTS(m, e, {
			if (pass_) {
				const float *r0 = gr->saved + ab;

				for (size_t j = 0; j < len_; j++)
					s[at + j] = w * (part_[j] - r0[j]);
				memcpy(part_, r0, len_ * sizeof(float));
				ab += len_;
			} else {
				memcpy(s + at, part_, len_ * sizeof(float));
			}
			at += len_;
		});
	}
	mc_exec_set_sample0(e, 0);
	r = grouped_combine(gr, &total, err);
	if (r)
		return r;
	at = 0;
	FOR_PARTS(m, e, {
		const float *a = gr->acc + at;

		if (pass_) { /* a buffer no group moved keeps its bytes, -0 included */
			const float *r0 = gr->saved + (at - (gr->P - gr->nb));

			for (size_t j = 0; j < len_; j++)
				part_[j] = a[j] != 0 ? r0[j] + a[j] : r0[j];
		} else {
			memcpy(part_, a, len_ * sizeof(float));
		}
		at += len_;
	});
	*loss = (float)(total / n);
	return 0;
}

/* ---------------------------------------------------------------- training */

const char *const mc_optimizer_names[] = { "sgd", "adam", NULL };
const char *const mc_lr_schedule_names[] = { "constant", "step", "cosine", NULL };

void mc_train_opts_apply(const struct mc_train_opts *o, struct mc_train_conf *c)
{
	c->optim = (struct mc_optim_conf){
		.kind = (enum mc_optim_kind)o->optimizer,
		.lr = o->lr,
		.momentum = o->momentum,
		.beta1 = o->beta1,
		.beta2 = o->beta2,
		.eps = 1e-8,
		.weight_decay = o->weight_decay,
	};
	c->schedule = (enum mc_lr_schedule)o->schedule;
	c->step_epochs = o->step_epochs;
	c->gamma = o->gamma;
	c->min_lr = o->min_lr;
	c->shift = o->shift;
	c->hflip = o->hflip;
}

double mc_lr_at(const struct mc_train_conf *c, int64_t step, int64_t total, int epoch)
{
	double lr = c->optim.lr;

	switch (c->schedule) {
	case MC_LR_STEP:
		return c->step_epochs > 0 ? lr * pow(c->gamma, epoch / c->step_epochs) : lr;
	case MC_LR_COSINE:
		if (total <= 1)
			return lr;
		return c->min_lr +
		       (lr - c->min_lr) * 0.5 * (1 + cos(M_PI * (double)step / (double)(total - 1)));
	default:
		return lr;
	}
}

int mc_train(struct mc_model *m, const struct mc_dataset *d, const struct mc_train_conf *c,
	     const struct mc_train_hooks *hooks, struct mc_err *err)
{
	return mc_train_from(m, d, c, hooks, NULL, err);
}

/* 0 when pos is a place between two steps of a run of epochs epochs of spe
 * steps each, else MC_EINVAL. */
static int check_pos(const struct mc_train_pos *pos, int epochs, int64_t spe, struct mc_err *err)
{
	int64_t end = pos->epoch == epochs ? 0 : spe;

	if (pos->epoch < 0 || pos->epoch > epochs || pos->batch < 0 || pos->batch > end ||
	    pos->step != (int64_t)pos->epoch * spe + pos->batch || !isfinite(pos->loss_sum))
		return mc_err_set(err, MC_EINVAL,
				  "training: cannot start at epoch %d, batch %lld, step %lld: a run "
				  "of %d epochs of %lld steps has no such place; the checkpoint "
				  "belongs to another run",
				  pos->epoch + 1, (long long)pos->batch, (long long)pos->step, epochs,
				  (long long)spe);
	return 0;
}

int mc_train_from(struct mc_model *m, const struct mc_dataset *d, const struct mc_train_conf *c,
		  const struct mc_train_hooks *hooks, const struct mc_train_ckpt *ck,
		  struct mc_err *err)
{
	static const struct mc_train_pos zero;
	const struct mc_train_pos *start = ck ? &ck->start : &zero;
	struct mc_exec *e = NULL;
	struct mc_optim *o = NULL;
	struct grouped *gr = NULL;
	int64_t *perm = NULL, step, seen, seen0, total, steps, spe;
	float *x = NULL, *dlogits = NULL;
	double *terms = NULL;
	uint8_t *y = NULL;
	int bs, r, dp;
	double t0;

	if (c->grad_groups < 0)
		return mc_err_set(err, MC_EINVAL,
				  "training: %d gradient groups; use 1 or more, or 0 for none",
				  c->grad_groups);
	if (c->epochs < 0 || c->batch_size < 1)
		return mc_err_set(err, MC_EINVAL,
				  "training: epochs %d and batch size %d; use epochs >= 0 and batch size >= 1",
				  c->epochs, c->batch_size);
	r = check_data(m, d, err);
	if (r)
		return r;
	bs = (int64_t)c->batch_size < d->n ? c->batch_size : (int)d->n;
	spe = (d->n + bs - 1) / bs;
	r = check_pos(start, c->epochs, spe, err);
	if (r)
		return r;
	e = mc_exec_new(m, bs, 1, err);
	if (!e)
		return err ? err->code : MC_ENOMEM;
	mc_exec_set_seed(e, c->seed);
	/* one training forward per step: dropout goes on where it stopped */
	mc_exec_set_step(e, (uint64_t)start->step);
	o = mc_optim_new(m, &c->optim, err);
	if (!o) {
		r = err ? err->code : MC_EINVAL;
		goto out;
	}
	if (start->step > 0 || start->epoch > 0) {
		r = ck->restore ? ck->restore(ck->arg, o, err) : 0;
		if (r)
			goto out;
	}
	perm = malloc((size_t)d->n * sizeof(*perm));
	x = mc_calloc((size_t)bs * (size_t)m->in_numel, sizeof(float));
	y = malloc((size_t)bs);
	dlogits = mc_calloc((size_t)bs * (size_t)m->n_classes, sizeof(float));
	if (c->grad_groups > 0) {
		gr = grouped_new(m, e, c->grad_groups, err);
		if (!gr) {
			r = err ? err->code : MC_ENOMEM;
			goto out;
		}
	}
	dp = !gr && dp_eligible(m, hooks, bs);
	terms = dp ? malloc((size_t)bs * sizeof(*terms)) : NULL;
	if (!perm || !x || !y || !dlogits || (dp && !terms)) {
		r = mc_err_set(err, MC_ENOMEM, "training: out of memory for a batch of %d", bs);
		goto out;
	}
	total = (int64_t)c->epochs * d->n;
	steps = (int64_t)c->epochs * spe;
	step = start->step;
	seen = seen0 = (int64_t)start->epoch * d->n +
		       (start->batch * bs < d->n ? start->batch * bs : d->n);
	mc_progress_begin(c->label ? c->label : "train", total);
	t0 = omp_get_wtime();
	for (int ep = start->epoch; ep < c->epochs; ep++) {
		int first = ep == start->epoch;
		double loss_sum = first ? start->loss_sum : 0;

		mc_rand_permutation(c->seed, STREAM_SHUFFLE + (uint64_t)ep, d->n, perm);
		for (int64_t b0 = first ? start->batch * bs : 0; b0 < d->n; b0 += bs) {
			int n = d->n - b0 < bs ? (int)(d->n - b0) : bs;
			const float *logits;
			char status[128];
			float loss = 0;
			double dt;

			if (gr) {
				r = grouped_step(gr, e, m, d, c, hooks, ep, step, perm + b0, n, x,
						 y, dlogits, &loss, err);
				if (r)
					goto out_bar;
			} else if (dp && n >= 4 * dist->size) {
				r = dp_step(e, m, d, c, ep, perm + b0, n, x, y, dlogits, terms,
					    &loss, err);
				if (r)
					goto out_bar;
			} else {
				gather(d, c, ep, perm + b0, n, x, y);
				logits = mc_forward(e, x, n);
				if (hooks && hooks->loss)
					loss = hooks->loss(hooks->arg, x, logits, perm + b0, n,
							   (int)m->n_classes, dlogits);
				else
					loss = mc_softmax_xent(logits, y, n, (int)m->n_classes,
							       dlogits);
				mc_exec_zero_grad(e);
				mc_backward(e, dlogits);
			}
			mc_optim_set_lr(o, mc_lr_at(c, step, steps, ep));
			mc_optim_step(o, m, e);
			if (hooks && hooks->after_step) {
				r = hooks->after_step(hooks->arg, m, step, err);
				if (r)
					goto out_bar;
			}
			step++;
			seen += n;
			loss_sum += (double)loss * n;
			dt = omp_get_wtime() - t0;
			snprintf(status, sizeof(status), "epoch %d/%d  %.0f samples/s  loss %.4f",
				 ep + 1, c->epochs, dt > 0 ? (double)(seen - seen0) / dt : 0.0,
				 loss_sum / (double)(b0 + n));
			mc_progress_update(seen, status);
			/* A safe point: the model holds whole steps only. */
			if (mc_interrupted()) {
				struct mc_train_pos here = { .epoch = ep, .step = step,
							     .batch = b0 / bs + 1,
							     .loss_sum = loss_sum };

				if (ck && ck->save)
					ck->save(ck->arg, m, o, &here, mc_interrupted(), err);
				r = mc_err_set(err, MC_EINTR,
					       "training: interrupted by signal %d at epoch %d/%d, "
					       "step %lld; stopped",
					       mc_interrupted(), ep + 1, c->epochs, (long long)step);
				goto out_bar;
			}
		}
		if (hooks && hooks->after_epoch) {
			r = hooks->after_epoch(hooks->arg, m, ep, loss_sum / (double)d->n, err);
			if (r)
				goto out_bar;
		}
		if (ck && ck->save) {
			struct mc_train_pos next = { .epoch = ep + 1, .step = step };

			r = ck->save(ck->arg, m, o, &next, 0, err);
			if (r)
				goto out_bar;
		}
	}
	r = 0;
out_bar:
	mc_progress_end();
out:
	mc_free(dlogits);
	free(terms);
	free(y);
	mc_free(x);
	free(perm);
	grouped_free(gr);
	mc_optim_free(o);
	mc_exec_free(e);
	return r;
}

/* One evaluation batch's figures: its cross-entropy summed over its samples
 * (the mean times n, as a double) and its count of correct predictions. */
struct eval_sums {
	double loss;
	int64_t correct;
};

/*
 * The figures of batches [b_lo, b_hi) of d in batches of bs, one entry of
 * out each. Every evaluation adds them up in batch order, so the totals are
 * the same however the batches were shared out.
 */
static int eval_batches(const struct mc_model *m, const struct mc_dataset *d, int bs,
			int64_t b_lo, int64_t b_hi, struct eval_sums *out, struct mc_err *err)
{
	struct mc_exec *e;
	int k = (int)m->n_classes;

	if (b_lo >= b_hi)
		return 0;
	e = mc_exec_new(m, bs, 0, err);
	if (!e)
		return err ? err->code : MC_ENOMEM;
	for (int64_t b = b_lo; b < b_hi; b++) {
		int64_t b0 = b * bs;
		int n = d->n - b0 < bs ? (int)(d->n - b0) : bs;
		const float *z = mc_forward(e, d->x + (size_t)b0 * (size_t)m->in_numel, n);

		out[b - b_lo].loss = (double)mc_softmax_xent(z, d->y + b0, n, k, NULL) * n;
		out[b - b_lo].correct = 0;
		for (int i = 0; i < n; i++)
			out[b - b_lo].correct += mc_argmax(z + (size_t)i * k, k) == d->y[b0 + i];
		if (mc_interrupted()) {
			mc_exec_free(e);
			return mc_err_set(err, MC_EINTR, "evaluation: interrupted by signal %d",
					  mc_interrupted());
		}
	}
	mc_exec_free(e);
	return 0;
}

/* mc_evaluate and mc_evaluate_shared: checks, batches, then the totals. */
static int evaluate(const struct mc_model *m, const struct mc_dataset *d, int batch_size,
		    int shared, double *accuracy, double *loss, struct mc_err *err)
{
	struct eval_sums *per;
	int64_t nb, lo = 0, hi, correct = 0;
	double loss_sum = 0;
	int bs, r;

	if (batch_size < 1)
		return mc_err_set(err, MC_EINVAL, "evaluation: batch size %d; use 1 or more",
				  batch_size);
	r = check_data(m, d, err);
	if (r)
		return r;
	bs = (int64_t)batch_size < d->n ? batch_size : (int)d->n;
	nb = (d->n + bs - 1) / bs;
	hi = nb;
	per = calloc((size_t)nb, sizeof(*per));
	if (!per)
		return mc_err_set(err, MC_ENOMEM, "out of memory evaluating %lld samples",
				  (long long)d->n);
	if (shared)
		mc_dist_part(nb, 1, &lo, &hi);
	r = eval_batches(m, d, bs, lo, hi, per + lo, err);
	/* a rank that failed or was stopped still takes part in the gather, so
	 * that the others do not wait for it; a signal travels with it */
	if (shared && mc_dist_gather(per, nb, 1, sizeof(*per), r ? NULL : err) && !r)
		r = err ? err->code : MC_ERUN;
	if (!r && mc_interrupted())
		r = mc_err_set(err, MC_EINTR, "evaluation: interrupted by signal %d",
			       mc_interrupted());
	for (int64_t b = 0; b < nb && !r; b++) {
		loss_sum += per[b].loss;
		correct += per[b].correct;
	}
	free(per);
	if (r)
		return r;
	if (accuracy)
		*accuracy = (double)correct / (double)d->n;
	if (loss)
		*loss = loss_sum / (double)d->n;
	return 0;
}

int mc_evaluate(const struct mc_model *m, const struct mc_dataset *d, int batch_size,
		double *accuracy, double *loss, struct mc_err *err)
{
	return evaluate(m, d, batch_size, 0, accuracy, loss, err);
}

int mc_evaluate_shared(const struct mc_model *m, const struct mc_dataset *d, int batch_size,
		       double *accuracy, double *loss, struct mc_err *err)
{
	return evaluate(m, d, batch_size, 1, accuracy, loss, err);
}
