/* SPDX-License-Identifier: MIT */
/*
 * check_train.c - the training engine: a small MLP learns a separable data
 * set, training is byte-identical for 1, 2 and 3 threads, optimizer steps
 * match hand-computed values, hooks run, evaluation breaks ties low,
 * architecture JSON is checked and round-trips, and a run stopped and
 * continued from its state (mc_train_from) ends with the same bytes; grouped
 * steps (grad_groups) are thread-count invariant on a CNN with batch norm and
 * dropout and add up to the batch's gradient; work shared out over ranks
 * (mc_dist_part, mc_dist_gather) lands where it belongs.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include <mcomp/train.h>

/* k Gaussian blobs in dim dimensions, centres at +-2 on a few axes. */
static struct mc_dataset *blobs(int64_t n, int dim, int k, uint64_t seed)
{
	struct mc_dataset *d = calloc(1, sizeof(*d));

	d->source = "blobs";
	d->n = n;
	d->ndim = 1;
	d->shape[0] = dim;
	d->sample_numel = dim;
	d->n_classes = k;
	d->x = malloc((size_t)n * dim * sizeof(float));
	d->y = malloc((size_t)n);
	for (int64_t i = 0; i < n; i++) {
		int c = (int)(i % k);

		d->y[i] = (uint8_t)c;
		for (int j = 0; j < dim; j++) {
			float centre = ((c + j) % k == 0) ? 2.0f : (j % 2 ? -1.0f : 0.0f);

			d->x[i * dim + j] = centre + mc_rand_normal(seed, 1, (uint64_t)(i * dim + j));
		}
	}
	return d;
}

static void free_blobs(struct mc_dataset *d)
{
	free(d->x);
	free(d->y);
	free(d);
}

static struct mc_model *mlp(int in, int hidden, int k, uint64_t seed)
{
	char json[512];
	struct mc_err err = { 0 };
	struct mc_model *m;

	snprintf(json, sizeof(json),
		 "{\"format\":1,\"input\":[%d],\"nodes\":[{\"op\":\"linear\",\"attrs\":{\"out\":%d}},"
		 "{\"op\":\"relu\"},{\"op\":\"linear\",\"attrs\":{\"out\":%d}}]}",
		 in, hidden, k);
	m = mc_model_from_arch(json, "mlp", &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, seed);
	return m;
}

static const struct mc_optim_conf adam = {
	.kind = MC_OPTIM_ADAM, .lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8,
};

START_TEST(mlp_learns)
{
	struct mc_dataset *tr = blobs(800, 10, 4, 1), *te = blobs(400, 10, 4, 2);
	struct mc_model *m = mlp(10, 32, 4, 7);
	struct mc_train_conf c = { .epochs = 5, .batch_size = 32, .optim = adam, .seed = 3 };
	struct mc_err err = { 0 };
	double acc0, acc, loss0, loss;

	ck_assert_int_eq(mc_evaluate(m, te, 64, &acc0, &loss0, &err), 0);
	ck_assert_int_eq(mc_train(m, tr, &c, NULL, &err), 0);
	ck_assert_int_eq(mc_evaluate(m, te, 64, &acc, &loss, &err), 0);
	ck_assert_msg(acc > 0.9 && acc > acc0 + 0.3, "accuracy %.3f (before %.3f)", acc, acc0);
	ck_assert_msg(loss < loss0 / 2, "loss %.3f (before %.3f)", loss, loss0);
	mc_model_free(m);
	free_blobs(te);
	free_blobs(tr);
}
END_TEST

/* Trains a model big enough that every kernel runs on several threads. */
static struct mc_model *train_with_threads(int threads, const struct mc_dataset *d)
{
	struct mc_model *m = mlp(64, 256, 5, 9);
	struct mc_train_conf c = { .epochs = 2, .batch_size = 50, .optim = adam, .seed = 4 };
	struct mc_err err = { 0 };
	int saved = omp_get_max_threads();

	omp_set_num_threads(threads);
	ck_assert_int_eq(mc_train(m, d, &c, NULL, &err), 0);
	omp_set_num_threads(saved);
	return m;
}

START_TEST(thread_count_invariant)
{
	struct mc_dataset *d = blobs(612, 64, 5, 3); /* 13 batches, the last of 12 */
	struct mc_model *m1 = train_with_threads(1, d), *m2 = train_with_threads(2, d);
	struct mc_model *m3 = train_with_threads(3, d), *fresh = mlp(64, 256, 5, 9);

	for (int i = 0; i < mc_model_n_nodes(m1); i++)
		for (int p = 0; p < mc_model_node(m1, i)->n_params; p++) {
			const struct mc_tensor *a = mc_model_node(m1, i)->params[p];
			size_t nb = mc_tensor_nbytes(a);

			ck_assert_mem_eq(a->data, mc_model_node(m2, i)->params[p]->data, nb);
			ck_assert_mem_eq(a->data, mc_model_node(m3, i)->params[p]->data, nb);
			/* and training did change them */
			ck_assert(memcmp(a->data, mc_model_node(fresh, i)->params[p]->data, nb) != 0);
		}
	mc_model_free(fresh);
	mc_model_free(m3);
	mc_model_free(m2);
	mc_model_free(m1);
	free_blobs(d);
}
END_TEST

/* A 1-input, 2-output linear model whose gradients are set by hand. */
static void one_step_setup(struct mc_model **m, struct mc_exec **e, const float *p0, const float *g)
{
	struct mc_err err = { 0 };

	*m = mc_model_from_arch("{\"format\":1,\"input\":[1],\"nodes\":[{\"name\":\"fc\",\"op\":"
				"\"linear\",\"inputs\":[\"input\"],\"attrs\":{\"out\":2}}]}",
				"t", &err);
	ck_assert_ptr_nonnull(*m);
	*e = mc_exec_new(*m, 1, 1, &err);
	memcpy(mc_model_node(*m, 0)->params[0]->data, p0, 2 * sizeof(float));
	memcpy(mc_model_node(*m, 0)->params[1]->data, p0 + 2, 2 * sizeof(float));
	memcpy(mc_exec_grad(*e, 0, 0), g, 2 * sizeof(float));
	memcpy(mc_exec_grad(*e, 0, 1), g + 2, 2 * sizeof(float));
}

static float param_value(const struct mc_model *m, int i)
{
	return ((const float *)mc_model_node(m, 0)->params[i / 2]->data)[i % 2];
}

START_TEST(sgd_steps)
{
	const float p0[4] = { 0.5f, -1.0f, 2.0f, 0.0f }, g[4] = { 0.1f, 0.2f, -0.3f, 0.0f };
	const double lr = 0.1, mom = 0.9, wd = 0.01;
	struct mc_optim_conf c = { .kind = MC_OPTIM_SGD, .lr = lr, .momentum = mom, .weight_decay = wd };
	struct mc_err err = { 0 };
	struct mc_model *m;
	struct mc_exec *e;
	struct mc_optim *o;

	one_step_setup(&m, &e, p0, g);
	o = mc_optim_new(m, &c, &err);
	ck_assert_ptr_nonnull(o);
	mc_optim_step(o, m, e);
	mc_optim_step(o, m, e); /* same gradients again */
	for (int i = 0; i < 4; i++) {
		/* step 1: buf = g + wd p; p -= lr buf. step 2: buf = mom buf + g + wd p. */
		double d1 = g[i] + wd * p0[i], p1 = p0[i] - lr * d1;
		double buf = mom * d1 + (g[i] + wd * p1), p2 = p1 - lr * buf;

		ck_assert_double_eq_tol(param_value(m, i), p2, 1e-6);
	}
	mc_optim_free(o);
	mc_exec_free(e);
	mc_model_free(m);
}
END_TEST

START_TEST(adam_steps)
{
	const float p0[4] = { 0.5f, -1.0f, 2.0f, 0.25f }, g[4] = { 0.1f, 0.2f, -0.3f, 0.0f };
	const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1;
	struct mc_optim_conf c = { .kind = MC_OPTIM_ADAM, .lr = lr, .beta1 = b1, .beta2 = b2,
				   .eps = eps, .weight_decay = wd };
	struct mc_err err = { 0 };
	struct mc_model *m;
	struct mc_exec *e;
	struct mc_optim *o;

	one_step_setup(&m, &e, p0, g);
	o = mc_optim_new(m, &c, &err);
	mc_optim_step(o, m, e);
	for (int i = 0; i < 4; i++) {
		/* one step from zero moments: p -= lr * d / (|d| + eps), d = g + wd p */
		double d = g[i] + wd * p0[i];

		ck_assert_double_eq_tol(param_value(m, i), p0[i] - lr * d / (fabs(d) + eps), 1e-6);
	}
	mc_optim_step(o, m, e);
	for (int i = 0; i < 4; i++) {
		double d1 = g[i] + wd * p0[i], p1 = p0[i] - lr * d1 / (fabs(d1) + eps);
		double d2 = g[i] + wd * p1;
		double mm = b1 * (1 - b1) * d1 + (1 - b1) * d2;
		double vv = b2 * (1 - b2) * d1 * d1 + (1 - b2) * d2 * d2;
		double mh = mm / (1 - b1 * b1), vh = vv / (1 - b2 * b2);

		ck_assert_double_eq_tol(param_value(m, i), p1 - lr * mh / (sqrt(vh) + eps), 1e-6);
	}
	mc_optim_free(o);
	mc_exec_free(e);
	mc_model_free(m);
}
END_TEST

/* Adam's vector paths (16 and 4 wide) round every element exactly as the
 * scalar update does: 80 parameters cover the wide path, the narrow one and
 * the tail, checked bit for bit against float arithmetic written out here. */
START_TEST(adam_vector_paths_exact)
{
	const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f, lr = 0.01f;
	struct mc_optim_conf c = { .kind = MC_OPTIM_ADAM, .lr = lr, .beta1 = b1, .beta2 = b2,
				   .eps = eps, .weight_decay = wd };
	struct mc_err err = { 0 };
	float p[80], mo[80] = { 0 }, ve[80] = { 0 };
	struct mc_model *m;
	struct mc_exec *e;
	struct mc_optim *o;

	m = mc_model_from_arch("{\"format\":1,\"input\":[1],\"nodes\":[{\"op\":\"linear\","
			       "\"attrs\":{\"out\":40}}]}", "t", &err);
	ck_assert_ptr_nonnull(m);
	mc_model_init(m, 5);
	e = mc_exec_new(m, 1, 1, &err);
	o = mc_optim_new(m, &c, &err);
	for (int i = 0; i < 80; i++) {
		p[i] = ((float *)mc_model_node(m, 0)->params[i / 40]->data)[i % 40];
		mc_exec_grad(e, 0, i / 40)[i % 40] = mc_rand_normal(9, 1, (uint64_t)i);
	}
	for (int t = 1; t <= 3; t++) {
		/* as optim.c computes them: in double, then rounded to float */
		float step = (float)((double)lr / (1.0 - pow((double)b1, t)));
		float sqrt_bc2 = (float)sqrt(1.0 - pow((double)b2, t));

		mc_optim_step(o, m, e);
		for (int i = 0; i < 80; i++) {
			volatile float d = mc_exec_grad(e, 0, i / 40)[i % 40] + wd * p[i];
			volatile float a = b1 * mo[i], b = (1.0f - b1) * d;

			mo[i] = a + b;
			a = b2 * ve[i];
			b = (1.0f - b2) * d;
			b = b * d;
			ve[i] = a + b;
			a = step * mo[i];
			b = sqrtf(ve[i]) / sqrt_bc2 + eps;
			p[i] -= a / b;
			ck_assert_msg(p[i] == ((float *)mc_model_node(m, 0)->params[i / 40]->data)[i % 40],
				      "step %d element %d: %.9g vs %.9g", t, i, p[i],
				      ((float *)mc_model_node(m, 0)->params[i / 40]->data)[i % 40]);
		}
	}
	mc_optim_free(o);
	mc_exec_free(e);
	mc_model_free(m);
}
END_TEST

/*
 * The optimizer updates every tensor's chunks in one parallel loop: with
 * tensors of 20000 (five chunks, the last partial), 100, 700 and 7
 * elements, each element at 1, 2, 3 and 16 threads is the scalar Adam
 * update written out here, bit for bit (a chunk given to the wrong tensor
 * or offset would not be), and SGD with momentum gives the same bytes at
 * every thread count.
 */
START_TEST(optim_one_list_exact)
{
	const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f, lr = 0.01f;
	const char *arch = "{\"format\":1,\"input\":[200],\"nodes\":["
			   "{\"name\":\"a\",\"op\":\"linear\",\"attrs\":{\"out\":100}},"
			   "{\"name\":\"b\",\"op\":\"linear\",\"attrs\":{\"out\":7}}]}";
	const int threads[] = { 1, 2, 3, 16 }, saved = omp_get_max_threads();
	struct mc_err err = { 0 };
	float *sgd1 = NULL;
	size_t total = 0;

	for (int k = 0; k < 2 * 4; k++) {
		int is_adam = k < 4;
		struct mc_optim_conf c = { .kind = is_adam ? MC_OPTIM_ADAM : MC_OPTIM_SGD, .lr = lr,
					   .beta1 = b1, .beta2 = b2, .eps = eps,
					   .weight_decay = wd, .momentum = 0.9 };
		struct mc_model *m = mc_model_from_arch(arch, "t", &err);
		struct mc_exec *e;
		struct mc_optim *o;
		float *p, *mo, *ve;
		size_t at = 0;

		ck_assert_ptr_nonnull(m);
		mc_model_init(m, 5);
		e = mc_exec_new(m, 1, 1, &err);
		o = mc_optim_new(m, &c, &err);
		ck_assert_ptr_nonnull(o);
		total = (size_t)mc_model_nparams(m);
		ck_assert_uint_eq(total, 20000 + 100 + 700 + 7);
		p = malloc(total * sizeof(float));
		mo = calloc(total, sizeof(float));
		ve = calloc(total, sizeof(float));
		for (int i = 0; i < 2; i++)
			for (int q = 0; q < 2; q++) {
				const struct mc_tensor *t = mc_model_node(m, i)->params[q];

				memcpy(p + at, t->data, mc_tensor_nbytes(t));
				for (int64_t j = 0; j < t->numel; j++)
					mc_exec_grad(e, i, q)[j] =
					    mc_rand_normal(9, 1, (uint64_t)(at + (size_t)j));
				at += (size_t)t->numel;
			}
		omp_set_num_threads(threads[k % 4]);
		for (int t = 1; t <= 2; t++) {
			float step = (float)((double)lr / (1.0 - pow((double)b1, t)));
			float sqrt_bc2 = (float)sqrt(1.0 - pow((double)b2, t));

			mc_optim_step(o, m, e);
			at = 0;
			for (int i = 0; i < 2; i++)
				for (int q = 0; q < 2; q++) {
					const struct mc_tensor *tt = mc_model_node(m, i)->params[q];
					const float *g = mc_exec_grad(e, i, q), *got = tt->data;

					for (int64_t j = 0; is_adam && j < tt->numel; j++, at++) {
						volatile float d = g[j] + wd * p[at];
						volatile float a = b1 * mo[at], b = (1.0f - b1) * d;

						mo[at] = a + b;
						a = b2 * ve[at];
						b = (1.0f - b2) * d;
						b = b * d;
						ve[at] = a + b;
						a = step * mo[at];
						b = sqrtf(ve[at]) / sqrt_bc2 + eps;
						p[at] -= a / b;
						ck_assert_msg(p[at] == got[j],
							      "threads %d step %d node %d param %d "
							      "element %lld",
							      threads[k % 4], t, i, q, (long long)j);
					}
				}
		}
		omp_set_num_threads(saved);
		if (!is_adam) {
			at = 0;
			for (int i = 0; i < 2; i++)
				for (int q = 0; q < 2; q++) {
					const struct mc_tensor *t = mc_model_node(m, i)->params[q];

					if (!sgd1)
						sgd1 = malloc(total * sizeof(float));
					if (k == 4)
						memcpy(sgd1 + at, t->data, mc_tensor_nbytes(t));
					else
						ck_assert_mem_eq(sgd1 + at, t->data,
								 mc_tensor_nbytes(t));
					at += (size_t)t->numel;
				}
		}
		free(ve);
		free(mo);
		free(p);
		mc_optim_free(o);
		mc_exec_free(e);
		mc_model_free(m);
	}
	free(sgd1);
}
END_TEST

START_TEST(optim_rejects_bad_conf)
{
	struct mc_model *m = mlp(2, 2, 2, 1);
	struct mc_err err = { 0 };
	struct mc_optim_conf c = adam;

	c.lr = -1;
	ck_assert_ptr_null(mc_optim_new(m, &c, &err));
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "lr"));
	c = adam;
	c.beta2 = 1.0;
	ck_assert_ptr_null(mc_optim_new(m, &c, &err));
	ck_assert_ptr_nonnull(strstr(err.msg, "betas"));
	mc_model_free(m);
}
END_TEST

struct counts {
	int64_t steps, last_step;
	int epochs, stop_at;
	double loss[8];
};

static int count_step(void *arg, struct mc_model *m, int64_t step, struct mc_err *err)
{
	struct counts *k = arg;

	k->last_step = step;
	if (++k->steps == k->stop_at)
		return mc_err_set(err, MC_ERUN, "stopped at step %lld", (long long)step);
	return 0;
}

static int count_epoch(void *arg, struct mc_model *m, int epoch, double loss, struct mc_err *err)
{
	struct counts *k = arg;

	ck_assert_int_eq(epoch, k->epochs);
	k->loss[k->epochs++] = loss;
	return 0;
}

/* A loss with zero gradient: nothing may move. */
static float flat_loss(void *arg, const float *x, const float *logits, const int64_t *idx, int n,
		       int classes, float *dlogits)
{
	(void)x;
	for (int i = 0; i < n; i++)
		ck_assert(idx[i] >= 0 && idx[i] < 100);
	memset(dlogits, 0, (size_t)n * classes * sizeof(float));
	return 1.5f;
}

START_TEST(hooks)
{
	struct mc_dataset *d = blobs(100, 3, 2, 5);
	struct mc_model *m = mlp(3, 4, 2, 2), *before = mc_model_dup(m, NULL);
	struct mc_train_conf c = { .epochs = 3, .batch_size = 32, .optim = adam, .seed = 1 };
	struct counts k = { 0 };
	struct mc_train_hooks h = { .arg = &k, .after_step = count_step, .after_epoch = count_epoch };
	struct mc_err err = { 0 };

	c.optim.kind = MC_OPTIM_SGD;
	c.optim.lr = 0.1;
	ck_assert_int_eq(mc_train(m, d, &c, &h, &err), 0);
	ck_assert_int_eq(k.steps, 3 * 4); /* 32 + 32 + 32 + 4 per epoch */
	ck_assert_int_eq(k.last_step, 11);
	ck_assert_int_eq(k.epochs, 3);
	ck_assert(k.loss[2] < k.loss[0]);

	/* a custom loss replaces the cross-entropy */
	h.loss = flat_loss;
	k = (struct counts){ 0 };
	mc_model_free(m);
	m = mc_model_dup(before, NULL);
	ck_assert_int_eq(mc_train(m, d, &c, &h, &err), 0);
	ck_assert_double_eq_tol(k.loss[0], 1.5, 1e-9);
	for (int p = 0; p < 2; p++)
		ck_assert_mem_eq(mc_model_node(m, 0)->params[p]->data, mc_model_node(before, 0)->params[p]->data,
				 mc_tensor_nbytes(mc_model_node(before, 0)->params[p]));

	/* an error from a hook stops training and comes back */
	k = (struct counts){ .stop_at = 5 };
	ck_assert_int_eq(mc_train(m, d, &c, &h, &err), MC_ERUN);
	ck_assert_int_eq(k.steps, 5);
	ck_assert_str_eq(err.msg, "stopped at step 4");
	mc_model_free(before);
	mc_model_free(m);
	free_blobs(d);
}
END_TEST

START_TEST(train_rejects_bad_data)
{
	struct mc_dataset *d = blobs(10, 3, 2, 5);
	struct mc_model *m = mlp(4, 4, 2, 2);
	struct mc_train_conf c = { .epochs = 1, .batch_size = 4, .optim = adam };
	struct mc_err err = { 0 };

	ck_assert_int_eq(mc_train(m, d, &c, NULL, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "3 values but the model takes 4"));
	mc_model_free(m);
	m = mlp(3, 4, 2, 2);
	d->y[7] = 2;
	ck_assert_int_eq(mc_evaluate(m, d, 4, NULL, NULL, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "label 2"));
	d->y[7] = 1;
	c.batch_size = 0;
	ck_assert_int_eq(mc_train(m, d, &c, NULL, &err), MC_EINVAL);
	mc_model_free(m);
	free_blobs(d);
}
END_TEST

START_TEST(evaluate_ties_and_loss)
{
	/* All parameters zero: equal logits, so class 0 wins every tie. */
	struct mc_dataset *d = blobs(90, 3, 3, 5);
	struct mc_model *m = mlp(3, 4, 3, 2);
	struct mc_err err = { 0 };
	double acc, loss;

	for (int i = 0; i < mc_model_n_nodes(m); i++)
		for (int p = 0; p < mc_model_node(m, i)->n_params; p++)
			memset(mc_model_node(m, i)->params[p]->data, 0, mc_tensor_nbytes(mc_model_node(m, i)->params[p]));
	ck_assert_int_eq(mc_evaluate(m, d, 7, &acc, &loss, &err), 0);
	ck_assert_double_eq_tol(acc, 1.0 / 3, 1e-12);
	ck_assert_double_eq_tol(loss, log(3.0), 1e-6);
	mc_model_free(m);
	free_blobs(d);
}
END_TEST

/* What the loss hook saw: each sample's input, by data set index. */
struct seen {
	int64_t n, numel;
	float *x;	/* [epochs][n][numel] */
	int epoch;
};

static float record_loss(void *arg, const float *x, const float *logits, const int64_t *idx,
			 int n, int classes, float *dlogits)
{
	struct seen *s = arg;

	(void)logits;
	for (int i = 0; i < n; i++)
		memcpy(s->x + ((size_t)s->epoch * s->n + idx[i]) * s->numel,
		       x + (size_t)i * s->numel, (size_t)s->numel * sizeof(float));
	memset(dlogits, 0, (size_t)n * classes * sizeof(float));
	return 0;
}

static int next_epoch(void *arg, struct mc_model *m, int epoch, double loss, struct mc_err *err)
{
	(void)m, (void)epoch, (void)loss, (void)err;
	((struct seen *)arg)->epoch++;
	return 0;
}

/* Is a the image b [h, w] shifted by (dy, dx), after a mirror when flip? */
static int is_moved(const float *a, const float *b, int h, int w, int dy, int dx, int flip)
{
	for (int i = 0; i < h; i++)
		for (int j = 0; j < w; j++) {
			int si = i - dy, sj = j - dx;
			float want;

			if (flip)
				sj = w - 1 - sj;
			want = si >= 0 && si < h && sj >= 0 && sj < w ? b[si * w + sj] : 0.0f;
			if (a[i * w + j] != want)
				return 0;
		}
	return 1;
}

/* Runs 3 epochs with batch size bs and records what the model saw. */
static float *augmented_inputs(const struct mc_dataset *d, int shift, int hflip, int bs)
{
	struct seen s = { .n = d->n, .numel = d->sample_numel };
	struct mc_model *m = mlp(16, 4, 2, 1);
	struct mc_train_conf c = { .epochs = 3, .batch_size = bs, .optim = adam, .seed = 9,
				   .shift = shift, .hflip = hflip };
	struct mc_train_hooks h = { .arg = &s, .loss = record_loss, .after_epoch = next_epoch };
	struct mc_err err = { 0 };

	s.x = calloc((size_t)3 * d->n * d->sample_numel, sizeof(float));
	ck_assert_int_eq(mc_train(m, d, &c, &h, &err), 0);
	mc_model_free(m);
	return s.x;
}

START_TEST(augmentation)
{
	struct mc_dataset *d = blobs(40, 16, 2, 4);
	float *a, *b;
	int moved = 0, flipped = 0;

	d->ndim = 3; /* [1, 4, 4] images */
	d->shape[0] = 1, d->shape[1] = 4, d->shape[2] = 4;
	a = augmented_inputs(d, 1, 1, 8);
	/* every input is its sample shifted by at most 1 pixel, maybe mirrored */
	for (int ep = 0; ep < 3; ep++)
		for (int64_t i = 0; i < d->n; i++) {
			const float *x = a + ((size_t)ep * d->n + i) * 16, *src = d->x + i * 16;
			int found = 0;

			for (int dy = -1; dy <= 1 && !found; dy++)
				for (int dx = -1; dx <= 1 && !found; dx++)
					for (int f = 0; f < 2 && !found; f++)
						if (is_moved(x, src, 4, 4, dy, dx, f)) {
							found = 1;
							moved += dy || dx;
							flipped += f;
						}
			ck_assert_msg(found, "epoch %d sample %lld is no shift of its image", ep,
				      (long long)i);
		}
	ck_assert_int_gt(moved, 40);
	ck_assert_int_gt(flipped, 20);
	/* draws depend on (seed, epoch, sample), not on the batch size */
	b = augmented_inputs(d, 1, 1, 5);
	ck_assert_mem_eq(a, b, (size_t)3 * 40 * 16 * sizeof(float));
	/* ... and change between epochs */
	ck_assert(memcmp(a, a + 40 * 16, 40 * 16 * sizeof(float)) != 0);
	free(b);
	free(a);
	/* without augmentation the model sees the data as it is */
	a = augmented_inputs(d, 0, 0, 8);
	ck_assert_mem_eq(a, d->x, 40 * 16 * sizeof(float));
	free(a);
	free_blobs(d);
}
END_TEST

static void expect_arch_error(const char *json, int code, const char *needle)
{
	struct mc_err err = { 0 };

	ck_assert_ptr_null(mc_model_from_arch(json, "m.safetensors", &err));
	ck_assert_int_eq(err.code, code);
	ck_assert_msg(strstr(err.msg, needle) != NULL, "'%s' lacks '%s'", err.msg, needle);
	ck_assert_msg(!strncmp(err.msg, "m.safetensors: ", 15), "'%s' does not name the file",
		      err.msg);
}

START_TEST(arch_errors)
{
	expect_arch_error("{\"format\":1,", MC_ECORRUPT, "line 1");
	expect_arch_error("[1,2]", MC_EINVAL, "object");
	expect_arch_error("{\"format\":2,\"input\":[3],\"nodes\":[{\"op\":\"relu\"}]}", MC_EINVAL,
			  "format");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[{\"op\":\"linaer\",\"attrs\":{\"out\":2}}]}",
			  MC_EINVAL, "unknown op 'linaer'; did you mean 'linear'?");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[{\"op\":\"relu\"},"
			  "{\"name\":\"o\",\"op\":\"linear\",\"inputs\":[\"relu9\"],\"attrs\":{\"out\":2}}]}",
			  MC_EINVAL, "input 'relu9' is not an earlier node");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[{\"op\":\"linear\",\"attrs\":{}}]}",
			  MC_EINVAL, "needs attribute 'out'");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[{\"op\":\"linear\"}]}", MC_EINVAL,
			  "needs attribute 'out'");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[{\"op\":\"linear\",\"attrs\":{\"out\":0}}]}",
			  MC_EINVAL, "out");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[{\"op\":\"linear\",\"attrs\":{\"out\":\"many\"}}]}",
			  MC_EINVAL, "out");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[{\"op\":\"linear\",\"attrs\":{\"outt\":2}}]}",
			  MC_EINVAL, "did you mean 'out'?");
	expect_arch_error("{\"format\":1,\"input\":[1,3],\"nodes\":[{\"op\":\"linear\",\"attrs\":{\"out\":2}}]}",
			  MC_EINVAL, "put a flatten before it");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[{\"name\":\"a\",\"op\":\"relu\"},"
			  "{\"name\":\"a\",\"op\":\"relu\"}]}",
			  MC_EINVAL, "unique");
	expect_arch_error("{\"format\":1,\"input\":[3,-1],\"nodes\":[{\"op\":\"relu\"}]}", MC_EINVAL,
			  "input dimension 1");
	expect_arch_error("{\"format\":1,\"input\":[65536,65536],\"nodes\":[{\"op\":\"relu\"}]}",
			  MC_EINVAL, "input dimension 1");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[]}", MC_EINVAL, "nodes");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodez\":[]}", MC_EINVAL,
			  "did you mean 'nodes'?");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[{\"op\":\"relu\",\"input\":[\"input\"]}]}",
			  MC_EINVAL, "did you mean 'inputs'?");
	expect_arch_error("{\"format\":1,\"input\":[3],\"nodes\":[{\"op\":\"relu\",\"inputs\":[\"input\",\"input\"]}]}",
			  MC_EINVAL, "takes 1 input");
	expect_arch_error(NULL, MC_ECORRUPT, "JSON");
}
END_TEST

START_TEST(arch_round_trip)
{
	const char *json = "{\"format\":1,\"input\":[1,4,4],\"nodes\":[{\"op\":\"flatten\"},"
			   "{\"op\":\"linear\",\"attrs\":{\"out\":8}},{\"op\":\"relu\"},"
			   "{\"name\":\"head\",\"op\":\"linear\",\"inputs\":[\"relu1\"],\"attrs\":{\"out\":3}}]}";
	struct mc_err err = { 0 };
	struct mc_model *a = mc_model_from_arch(json, "t", &err), *b, *c;
	char *ja, *jb;

	ck_assert_msg(a != NULL, "%s", err.msg);
	ck_assert_str_eq(mc_model_node(a, 1)->name, "linear1");
	ck_assert_int_eq(mc_model_n_classes(a), 3);
	ck_assert_int_eq(mc_model_nparams(a), 16 * 8 + 8 + 8 * 3 + 3);
	ck_assert_int_eq(mc_model_flops(a), 2 * (16 * 8 + 8 * 3));
	ck_assert_ptr_nonnull(mc_model_param(a, "head.weight"));
	ck_assert_ptr_null(mc_model_param(a, "head.scale"));
	ja = mc_model_arch(a);
	b = mc_model_from_arch(ja, "t", &err);
	ck_assert_msg(b != NULL, "%s", err.msg);
	jb = mc_model_arch(b);
	ck_assert_str_eq(ja, jb);
	ck_assert_ptr_nonnull(strstr(ja, "\"name\":\"head\",\"op\":\"linear\",\"inputs\":[\"relu1\"],\"attrs\":{\"out\":3}"));

	/* init is reproducible and per-parameter; dup copies values */
	ck_assert_int_eq(mc_model_nonzeros(a), 0);
	mc_model_init(a, 5);
	mc_model_init(b, 5);
	ck_assert_int_eq(mc_model_nonzeros(a), mc_model_nparams(a));
	c = mc_model_dup(a, &err);
	for (int i = 0; i < mc_model_n_nodes(a); i++)
		for (int p = 0; p < mc_model_node(a, i)->n_params; p++) {
			const struct mc_tensor *t = mc_model_node(a, i)->params[p];
			/* U(-1/sqrt(in), 1/sqrt(in)) for weight [out, in] and bias alike */
			float bound = 1.0f / sqrtf((float)mc_model_node(a, i)->params[0]->shape[1]);

			ck_assert_mem_eq(t->data, mc_model_node(b, i)->params[p]->data, mc_tensor_nbytes(t));
			ck_assert_mem_eq(t->data, mc_model_node(c, i)->params[p]->data, mc_tensor_nbytes(t));
			ck_assert_str_eq(t->name, mc_model_node(c, i)->params[p]->name);
			for (int64_t j = 0; j < t->numel; j++)
				ck_assert(fabsf(((float *)t->data)[j]) <= bound);
		}
	/* weight and bias of one node come from different streams */
	ck_assert(((float *)mc_model_node(a, 1)->params[0]->data)[0] !=
		  ((float *)mc_model_node(a, 1)->params[1]->data)[0]);
	mc_model_init(b, 6);
	ck_assert(memcmp(mc_model_node(a, 1)->params[0]->data, mc_model_node(b, 1)->params[0]->data, 16) != 0);
	free(ja);
	free(jb);
	mc_model_free(c);
	mc_model_free(b);
	mc_model_free(a);
}
END_TEST

/* Learning-rate schedules against their formulas. */
/* mc_train follows the schedule: with a step decay of 1e-6 after the first
 * epoch, the second epoch leaves the weights almost where the first left them. */
START_TEST(train_uses_schedule)
{
	struct mc_dataset *d = blobs(200, 10, 4, 1);
	struct mc_model *one = mlp(10, 16, 4, 7), *two = mlp(10, 16, 4, 7), *flat = mlp(10, 16, 4, 7);
	struct mc_train_conf c = { .epochs = 1, .batch_size = 20, .optim = adam, .seed = 3 };
	struct mc_err err = { 0 };
	double moved = 0, drift = 0;

	ck_assert_int_eq(mc_train(one, d, &c, NULL, &err), 0);
	c.epochs = 2;
	ck_assert_int_eq(mc_train(flat, d, &c, NULL, &err), 0);
	c.schedule = MC_LR_STEP;
	c.step_epochs = 1;
	c.gamma = 1e-6;
	ck_assert_int_eq(mc_train(two, d, &c, NULL, &err), 0);
	for (int i = 0; i < mc_model_node(one, 0)->params[0]->numel; i++) {
		float a = ((float *)mc_model_node(one, 0)->params[0]->data)[i];

		drift += fabs(a - ((float *)mc_model_node(two, 0)->params[0]->data)[i]);
		moved += fabs(a - ((float *)mc_model_node(flat, 0)->params[0]->data)[i]);
	}
	ck_assert_msg(drift < 1e-3 * moved, "decayed epoch moved %g, full epoch %g", drift, moved);
	mc_model_free(one);
	mc_model_free(two);
	mc_model_free(flat);
	free_blobs(d);
}
END_TEST

START_TEST(lr_schedules)
{
	struct mc_train_conf c = { .optim = { .lr = 0.1 } };

	ck_assert_double_eq(mc_lr_at(&c, 5, 10, 3), 0.1);
	c.schedule = MC_LR_STEP;
	c.step_epochs = 2;
	c.gamma = 0.5;
	ck_assert_double_eq_tol(mc_lr_at(&c, 0, 100, 0), 0.1, 1e-15);
	ck_assert_double_eq_tol(mc_lr_at(&c, 0, 100, 1), 0.1, 1e-15);
	ck_assert_double_eq_tol(mc_lr_at(&c, 0, 100, 2), 0.05, 1e-15);
	ck_assert_double_eq_tol(mc_lr_at(&c, 0, 100, 5), 0.025, 1e-15);
	c.schedule = MC_LR_COSINE;
	c.min_lr = 0.01;
	ck_assert_double_eq_tol(mc_lr_at(&c, 0, 11, 0), 0.1, 1e-15);
	ck_assert_double_eq_tol(mc_lr_at(&c, 5, 11, 0), 0.055, 1e-15);
	ck_assert_double_eq_tol(mc_lr_at(&c, 10, 11, 0), 0.01, 1e-15);
	ck_assert_double_eq_tol(mc_lr_at(&c, 2, 11, 0),
				0.01 + 0.09 * 0.5 * (1 + cos(M_PI * 0.2)), 1e-15);
}
END_TEST

/*
 * mc_train_from: a run stopped by a signal after step `stop` (its save
 * callback keeps the model, the optimizer's state and the position) and
 * continued from there ends with the same bytes as a run that never
 * stopped; for SGD with momentum and for Adam, with a cosine schedule and
 * dropout, whose masks follow the step.
 */
struct snap {
	int64_t stop;		/* interrupt after this many steps */
	struct mc_model *m;	/* the model when it stopped */
	float *buf[2][16][4];	/* the optimizer's buffers [which][node][param] */
	int64_t steps;
	struct mc_train_pos pos;
	int saves;		/* epoch-end saves seen */
};

static int stop_at(void *arg, struct mc_model *m, int64_t step, struct mc_err *err)
{
	struct snap *s = arg;

	if (step + 1 == s->stop)
		mc_interrupt(15);
	return 0;
}

static int snap_save(void *arg, const struct mc_model *m, struct mc_optim *o,
		     const struct mc_train_pos *pos, int interrupted, struct mc_err *err)
{
	struct snap *s = arg;

	if (!interrupted) {
		s->saves++;
		return 0;
	}
	s->m = mc_model_dup(m, err);
	s->steps = mc_optim_steps(o);
	s->pos = *pos;
	for (int w = 0; w < 2; w++)
		for (int i = 0; i < mc_model_n_nodes(m); i++)
			for (int p = 0; p < mc_model_node(m, i)->n_params; p++) {
				const float *b = mc_optim_state(o, i, p, w);
				size_t n = (size_t)mc_model_node(m, i)->params[p]->numel;

				if (b) {
					s->buf[w][i][p] = malloc(n * sizeof(float));
					memcpy(s->buf[w][i][p], b, n * sizeof(float));
				}
			}
	return 0;
}

static int snap_restore(void *arg, struct mc_optim *o, struct mc_err *err)
{
	struct snap *s = arg;

	mc_optim_set_steps(o, s->steps);
	for (int w = 0; w < 2; w++)
		for (int i = 0; i < mc_model_n_nodes(s->m); i++)
			for (int p = 0; p < mc_model_node(s->m, i)->n_params; p++) {
				float *b = mc_optim_state(o, i, p, w);

				ck_assert((b != NULL) == (s->buf[w][i][p] != NULL));
				if (b)
					memcpy(b, s->buf[w][i][p],
					       (size_t)mc_model_node(s->m, i)->params[p]->numel *
						       sizeof(float));
			}
	return 0;
}

static struct mc_model *dropout_mlp(void)
{
	struct mc_err err = { 0 };
	struct mc_model *m = mc_model_from_arch(
		"{\"format\":1,\"input\":[10],\"nodes\":[{\"op\":\"linear\",\"attrs\":{\"out\":24}},"
		"{\"op\":\"relu\"},{\"op\":\"dropout\",\"attrs\":{\"p\":0.3}},"
		"{\"op\":\"linear\",\"attrs\":{\"out\":4}}]}",
		"mlp", &err);

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 11);
	return m;
}

START_TEST(train_from_resumes)
{
	static const struct mc_optim_conf sgd = { .kind = MC_OPTIM_SGD, .lr = 0.05, .momentum = 0.9 };
	struct mc_dataset *d = blobs(300, 10, 4, 5); /* 10 batches of 32, the last of 12 */
	struct mc_train_conf c = { .epochs = 3, .batch_size = 32, .optim = _i ? adam : sgd,
				   .schedule = MC_LR_COSINE, .min_lr = 1e-4, .seed = 6 };
	struct mc_model *whole = dropout_mlp(), *part = dropout_mlp();
	struct snap s = { .stop = 14 }; /* in epoch 2, after its 4th batch */
	struct mc_train_hooks hooks = { .arg = &s, .after_step = stop_at };
	struct mc_train_ckpt ck = { .arg = &s, .save = snap_save, .restore = snap_restore };
	struct mc_err err = { 0 };

	ck_assert_int_eq(mc_train(whole, d, &c, NULL, &err), 0);
	ck_assert_int_eq(mc_train_from(part, d, &c, &hooks, &ck, &err), MC_EINTR);
	mc_interrupt(0);
	ck_assert_int_eq(s.saves, 1); /* after epoch 1 */
	ck_assert_ptr_nonnull(s.m);
	ck_assert_int_eq(s.pos.epoch, 1);
	ck_assert_int_eq(s.pos.step, 14);
	ck_assert_int_eq(s.pos.batch, 4);
	ck_assert(s.pos.loss_sum > 0);
	ck_assert_int_eq(s.steps, 14);
	/* go on from the snapshot */
	ck.start = s.pos;
	s.stop = -1;
	ck_assert_int_eq(mc_train_from(s.m, d, &c, &hooks, &ck, &err), 0);
	ck_assert_int_eq(s.saves, 1 + 2);
	for (int i = 0; i < mc_model_n_nodes(whole); i++)
		for (int p = 0; p < mc_model_node(whole, i)->n_params; p++)
			ck_assert_mem_eq(mc_model_node(whole, i)->params[p]->data,
					 mc_model_node(s.m, i)->params[p]->data,
					 mc_tensor_nbytes(mc_model_node(whole, i)->params[p]));
	/* a position that is no place of this run */
	ck.start.batch = 11;
	ck_assert_int_eq(mc_train_from(s.m, d, &c, NULL, &ck, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "no such place"));
	for (int w = 0; w < 2; w++)
		for (int i = 0; i < 16; i++)
			for (int p = 0; p < 4; p++)
				free(s.buf[w][i][p]);
	mc_model_free(s.m);
	mc_model_free(part);
	mc_model_free(whole);
	free_blobs(d);
}
END_TEST

/* ---------------------------------------------------------------- grouped steps */

/* A small CNN over [1, 8, 8] images: convolution, batch norm, dropout. */
static struct mc_model *bn_cnn(void)
{
	struct mc_err err = { 0 };
	struct mc_model *m = mc_model_from_arch(
		"{\"format\":1,\"input\":[1,8,8],\"nodes\":["
		"{\"op\":\"conv2d\",\"attrs\":{\"out\":6}},{\"op\":\"batchnorm\"},{\"op\":\"relu\"},"
		"{\"op\":\"maxpool2d\",\"attrs\":{\"kernel\":2}},{\"op\":\"flatten\"},"
		"{\"op\":\"linear\",\"attrs\":{\"out\":16}},{\"op\":\"relu\"},"
		"{\"op\":\"dropout\",\"attrs\":{\"p\":0.2}},{\"op\":\"linear\",\"attrs\":{\"out\":4}}]}",
		"cnn", &err);

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 12);
	return m;
}

/* The cross-entropy through the loss hook, as a pass's own loss comes. */
static float hook_xent(void *arg, const float *x, const float *logits, const int64_t *idx, int n,
		       int classes, float *dlogits)
{
	const struct mc_dataset *d = arg;
	uint8_t y[256];

	(void)x;
	ck_assert_int_le(n, 256);
	for (int i = 0; i < n; i++)
		y[i] = d->y[idx[i]];
	return mc_softmax_xent(logits, y, n, classes, dlogits);
}

static void same_params(const struct mc_model *a, const struct mc_model *b)
{
	for (int i = 0; i < mc_model_n_nodes(a); i++)
		for (int p = 0; p < mc_model_node(a, i)->n_params; p++)
			ck_assert_mem_eq(mc_model_node(a, i)->params[p]->data,
					 mc_model_node(b, i)->params[p]->data,
					 mc_tensor_nbytes(mc_model_node(a, i)->params[p]));
}

/* The largest |a - b| over every parameter and buffer, relative to max |a|. */
static double param_diff(const struct mc_model *a, const struct mc_model *b)
{
	double worst = 0, big = 1e-12;

	for (int i = 0; i < mc_model_n_nodes(a); i++)
		for (int p = 0; p < mc_model_node(a, i)->n_params; p++) {
			const struct mc_tensor *ta = mc_model_node(a, i)->params[p];
			const float *va = ta->data, *vb = mc_model_node(b, i)->params[p]->data;

			for (int64_t j = 0; j < ta->numel; j++) {
				worst = fmax(worst, fabs((double)va[j] - vb[j]));
				big = fmax(big, fabs((double)va[j]));
			}
		}
	return worst / big;
}

/* grad_groups 4 on a CNN with batch norm and dropout (loop 0: the
 * cross-entropy; 1: a loss hook): the same bytes on 1, 2 and 3 threads,
 * a last batch of 12 in groups of 3 included; not the bytes of the run
 * without groups (batch norm sees each group's statistics). */
START_TEST(grouped_thread_invariant)
{
	struct mc_dataset *d = blobs(300, 64, 4, 8); /* 9 batches of 32, the last of 12 */
	struct mc_train_conf c = { .epochs = 2, .batch_size = 32, .optim = adam, .seed = 5,
				   .grad_groups = 4 };
	struct mc_train_hooks h = { .arg = d, .loss = hook_xent };
	struct mc_model *m[3], *whole = bn_cnn(), *fresh = bn_cnn();
	struct mc_err err = { 0 };
	int saved = omp_get_max_threads();

	d->ndim = 3;
	d->shape[0] = 1;
	d->shape[1] = d->shape[2] = 8;
	for (int t = 0; t < 3; t++) {
		m[t] = bn_cnn();
		omp_set_num_threads(t + 1);
		ck_assert_int_eq(mc_train(m[t], d, &c, _i ? &h : NULL, &err), 0);
	}
	omp_set_num_threads(saved);
	same_params(m[0], m[1]);
	same_params(m[0], m[2]);
	c.grad_groups = 0;
	ck_assert_int_eq(mc_train(whole, d, &c, _i ? &h : NULL, &err), 0);
	ck_assert(param_diff(m[0], whole) > 0);
	ck_assert(param_diff(m[0], fresh) > 1e-3); /* it trained, buffers too: */
	ck_assert(memcmp(mc_model_node(m[0], 1)->params[2]->data,
			 mc_model_node(fresh, 1)->params[2]->data, 6 * sizeof(float)) != 0);
	c.grad_groups = -1;
	ck_assert_int_eq(mc_train(whole, d, &c, NULL, &err), MC_EINVAL);
	for (int t = 0; t < 3; t++)
		mc_model_free(m[t]);
	mc_model_free(fresh);
	mc_model_free(whole);
	free_blobs(d);
}
END_TEST

/* Without batch norm the groups' gradients add up to the batch's: one SGD
 * step with 4 groups (of 16 and 17 samples: a batch of 66) lands where the
 * step without groups does, up to rounding, dropout included (its masks
 * keyed by the sample's place in the batch), with the cross-entropy and
 * with a loss hook. */
START_TEST(grouped_sums_to_batch_gradient)
{
	static const struct mc_optim_conf sgd = { .kind = MC_OPTIM_SGD, .lr = 0.5 };
	struct mc_dataset *d = blobs(66, 10, 4, 9);
	struct mc_train_conf c = { .epochs = 1, .batch_size = 66, .optim = sgd, .seed = 2 };
	struct mc_train_hooks h = { .arg = d, .loss = hook_xent };
	struct mc_model *whole = dropout_mlp(), *grouped = dropout_mlp(), *fresh = dropout_mlp();
	struct mc_err err = { 0 };
	double moved, off;

	ck_assert_int_eq(mc_train(whole, d, &c, _i ? &h : NULL, &err), 0);
	c.grad_groups = 4;
	ck_assert_int_eq(mc_train(grouped, d, &c, _i ? &h : NULL, &err), 0);
	moved = param_diff(whole, fresh);
	off = param_diff(whole, grouped);
	ck_assert_msg(moved > 1e-3 && off < 1e-5, "moved %g, off by %g", moved, off);
	mc_model_free(fresh);
	mc_model_free(grouped);
	mc_model_free(whole);
	free_blobs(d);
}
END_TEST

/* A buffer no forward moves (a fake-quantization range kept fixed) keeps its
 * bytes through grouped steps, with 3 groups whose shares of the batch
 * (1/3 each) do not add up to exactly 1 in floats. */
START_TEST(grouped_keeps_fixed_buffers)
{
	static const float range[2] = { 0.1f, 3.3f };
	struct mc_dataset *d = blobs(96, 10, 4, 10);
	struct mc_train_conf c = { .epochs = 2, .batch_size = 24, .optim = adam, .seed = 3,
				   .grad_groups = 3 };
	struct mc_err err = { 0 };
	struct mc_model *m = mc_model_from_arch(
		"{\"format\":1,\"input\":[10],\"nodes\":[{\"op\":\"linear\",\"attrs\":{\"out\":12}},"
		"{\"op\":\"fake_quant\"},{\"op\":\"relu\"},{\"op\":\"linear\",\"attrs\":{\"out\":4}}]}",
		"fq", &err);
	float w0;

	ck_assert_msg(m != NULL, "%s", err.msg);
	mc_model_init(m, 4);
	memcpy(mc_model_node(m, 1)->params[0]->data, range, sizeof(range));
	w0 = ((const float *)mc_model_node(m, 0)->params[0]->data)[0];
	ck_assert_int_eq(mc_train(m, d, &c, NULL, &err), 0);
	ck_assert_mem_eq(mc_model_node(m, 1)->params[0]->data, range, sizeof(range));
	ck_assert(((const float *)mc_model_node(m, 0)->params[0]->data)[0] != w0);
	mc_model_free(m);
	free_blobs(d);
}
END_TEST

/* Shared-out work (mc_dist_part, mc_dist_gather) as rank 1 of 3, the other
 * ranks played by a fake broadcast: for root != 1 it writes each item's
 * index into the place the root's part lands (and root 2's signal), and it
 * records what rank 1 sends. */
struct fake_dist {
	float *base;
	int64_t sent_lo, sent_hi;
	int calls;
};

static int fake_bcast(void *arg, int root, void *buf, size_t len)
{
	struct fake_dist *f = arg;

	f->calls++;
	if (len == sizeof(int)) { /* the signal of root, before its items */
		if (root != 1)
			*(int *)buf = root == 2 ? 15 : 0;
		return 0;
	}
	if (root == 1) {
		f->sent_lo = (float *)buf - f->base;
		f->sent_hi = f->sent_lo + (int64_t)(len / sizeof(float));
		return 0;
	}
	for (size_t i = 0; i < len / sizeof(float); i++)
		((float *)buf)[i] = (float)(((float *)buf - f->base) + (int64_t)i);
	return 0;
}

START_TEST(dist_shares_blocks)
{
	struct fake_dist f = { 0 };
	struct mc_dist d = { .rank = 1, .size = 3, .arg = &f, .bcast = fake_bcast };
	struct mc_err err = { 0 };
	float buf[1000];
	int64_t lo, hi;

	/* one process: everything */
	mc_dist_part(1000, 256, &lo, &hi);
	ck_assert(lo == 0 && hi == 1000);
	ck_assert_int_eq(mc_dist_gather(buf, 1000, 256, sizeof(float), &err), 0);
	/* rank 1 of 3, 4 blocks of 256 (the last of 232): block 1 alone */
	mc_dist_set(&d);
	mc_dist_part(1000, 256, &lo, &hi);
	ck_assert_msg(lo == 256 && hi == 512, "[%lld, %lld)", (long long)lo, (long long)hi);
	for (int64_t i = 0; i < 1000; i++)
		buf[i] = i >= lo && i < hi ? (float)i : -1;
	f.base = buf;
	ck_assert_int_eq(mc_dist_gather(buf, 1000, 256, sizeof(float), &err), 0);
	ck_assert_int_eq(f.calls, 6); /* a signal and a part from each rank */
	ck_assert(f.sent_lo == 256 && f.sent_hi == 512);
	for (int i = 0; i < 1000; i++)
		ck_assert_msg(buf[i] == (float)i, "item %d: %g", i, buf[i]);
	ck_assert_int_eq(mc_interrupted(), 15); /* rank 2's signal */
	mc_interrupt(0);
	/* fewer blocks than ranks: rank 1 of 3 takes the first of 2 (rank 0 none) */
	mc_dist_part(300, 256, &lo, &hi);
	ck_assert(lo == 0 && hi == 256);
	mc_dist_set(NULL);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("train");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, mlp_learns);
	tcase_add_test(tc, thread_count_invariant);
	tcase_add_test(tc, sgd_steps);
	tcase_add_test(tc, adam_steps);
	tcase_add_test(tc, optim_one_list_exact);
	tcase_add_test(tc, optim_rejects_bad_conf);
	tcase_add_test(tc, hooks);
	tcase_add_test(tc, augmentation);
	tcase_add_test(tc, train_rejects_bad_data);
	tcase_add_test(tc, evaluate_ties_and_loss);
	tcase_add_test(tc, arch_errors);
	tcase_add_test(tc, arch_round_trip);
	tcase_add_test(tc, lr_schedules);
	tcase_add_test(tc, adam_vector_paths_exact);
	tcase_add_test(tc, train_uses_schedule);
	tcase_add_loop_test(tc, train_from_resumes, 0, 2);
	tcase_add_loop_test(tc, grouped_thread_invariant, 0, 2);
	tcase_add_loop_test(tc, grouped_sums_to_batch_gradient, 0, 2);
	tcase_add_test(tc, grouped_keeps_fixed_buffers);
	tcase_add_test(tc, dist_shares_blocks);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
