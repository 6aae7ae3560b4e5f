/* SPDX-License-Identifier: MIT */
/*
 * bench_train - training throughput and inference latency of mcomp models,
 * built through the public API only (mc_model_from_arch, mc_forward,
 * mc_backward, mc_optim_step), the same work bench/torch_peer.py does in
 * PyTorch:
 *
 *	bench_train [-d DIR] [-s STEPS] [-w WARMUP] [-r REPS] [-T MAX_SECONDS]
 *		    [-m MIN_SECONDS] [-M MODEL.safetensors] mlp|student|cnn
 *		    train|lat1|lat256|memory|profile...
 *
 * mlp is 784-512-256-10 with relu; student is the distillation recipes'
 * 784-64-10 with relu; cnn is conv 1->32 3x3, relu, maxpool 2,
 * conv 32->64 3x3, relu, maxpool 2, fc 1600->128, relu, fc 128->10.
 *
 * train: batches of 128 taken in order from the Fashion-MNIST training
 * images in DIR (random pixels of the same shape without -d), softmax
 * cross-entropy, Adam (lr 1e-3). After WARMUP steps it times REPS runs of
 * STEPS steps (a run cut short after MAX_SECONDS when given) and prints the median as "RESULT train_<model> <samples/s>".
 * lat1, lat256: inference forwards of one batch, timed call by call until
 * MIN_SECONDS have passed (at least 5 calls); prints the median as
 * "RESULT lat<B>_<model> <milliseconds>".
 *
 * memory: one epoch of mc_train (batch 128, Adam) over the whole data set;
 * prints the growth of peak resident memory from before the data was loaded,
 * and the budget it is held to: the data set, the weights, Adam's two
 * moments and one batch's activations. "RESULT mem_<model> <ratio>" is peak
 * growth over that budget (the issue asks for less than 2).
 *
 * profile: WARMUP steps, then REPS x STEPS steps with each part timed (every
 * node's forward and backward, the loss, zeroing the gradients, the
 * optimizer); prints "PROF <part> <ms per step> <share of the step>".
 *
 * -M times the model of a file (a trained or quantized one: bench/ort_cnn.sh)
 * instead of the built architecture; the name then only labels the results.
 *
 * The thread count is OpenMP's (OMP_NUM_THREADS).
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <mcomp/mcomp.h>

#define BATCH 128

static const char mlp_arch[] =
	"{\"format\": 1, \"input\": [1, 28, 28], \"nodes\": ["
	"{\"name\": \"flatten\", \"op\": \"flatten\", \"inputs\": [\"input\"]},"
	"{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"flatten\"], \"attrs\": {\"out\": 512}},"
	"{\"name\": \"relu1\", \"op\": \"relu\", \"inputs\": [\"fc1\"]},"
	"{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"relu1\"], \"attrs\": {\"out\": 256}},"
	"{\"name\": \"relu2\", \"op\": \"relu\", \"inputs\": [\"fc2\"]},"
	"{\"name\": \"fc3\", \"op\": \"linear\", \"inputs\": [\"relu2\"], \"attrs\": {\"out\": 10}}]}";

static const char student_arch[] =
	"{\"format\": 1, \"input\": [1, 28, 28], \"nodes\": ["
	"{\"name\": \"flatten\", \"op\": \"flatten\", \"inputs\": [\"input\"]},"
	"{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"flatten\"], \"attrs\": {\"out\": 64}},"
	"{\"name\": \"relu1\", \"op\": \"relu\", \"inputs\": [\"fc1\"]},"
	"{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"relu1\"], \"attrs\": {\"out\": 10}}]}";

static const char cnn_arch[] =
	"{\"format\": 1, \"input\": [1, 28, 28], \"nodes\": ["
	"{\"name\": \"conv1\", \"op\": \"conv2d\", \"inputs\": [\"input\"],"
	" \"attrs\": {\"out\": 32, \"kernel\": 3, \"stride\": 1, \"padding\": 0}},"
	"{\"name\": \"relu1\", \"op\": \"relu\", \"inputs\": [\"conv1\"]},"
	"{\"name\": \"pool1\", \"op\": \"maxpool2d\", \"inputs\": [\"relu1\"],"
	" \"attrs\": {\"kernel\": 2, \"stride\": 2}},"
	"{\"name\": \"conv2\", \"op\": \"conv2d\", \"inputs\": [\"pool1\"],"
	" \"attrs\": {\"out\": 64, \"kernel\": 3, \"stride\": 1, \"padding\": 0}},"
	"{\"name\": \"relu2\", \"op\": \"relu\", \"inputs\": [\"conv2\"]},"
	"{\"name\": \"pool2\", \"op\": \"maxpool2d\", \"inputs\": [\"relu2\"],"
	" \"attrs\": {\"kernel\": 2, \"stride\": 2}},"
	"{\"name\": \"flatten\", \"op\": \"flatten\", \"inputs\": [\"pool2\"]},"
	"{\"name\": \"fc1\", \"op\": \"linear\", \"inputs\": [\"flatten\"], \"attrs\": {\"out\": 128}},"
	"{\"name\": \"relu3\", \"op\": \"relu\", \"inputs\": [\"fc1\"]},"
	"{\"name\": \"fc2\", \"op\": \"linear\", \"inputs\": [\"relu3\"], \"attrs\": {\"out\": 10}}]}";

struct opts {
	const char *data;
	int steps, warmup, reps;
	double min_time, max_time;
};

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* Fashion-MNIST's training split from dir, or 8192 random samples. */
static struct mc_dataset *load_data(const char *dir, struct mc_err *err)
{
	struct mc_dataset *d;
	char prefix[4096];

	if (dir) {
		if ((size_t)snprintf(prefix, sizeof(prefix), "%s/train", dir) >= sizeof(prefix)) {
			mc_err_set(err, MC_EINVAL, "%s: path too long; use a shorter one", dir);
			return NULL;
		}
		return mc_idx_load_prefix(prefix, err);
	}
	d = calloc(1, sizeof(*d));
	if (!d)
		goto nomem;
	d->n = 8192;
	d->ndim = 3;
	d->shape[0] = 1;
	d->shape[1] = 28;
	d->shape[2] = 28;
	d->sample_numel = 784;
	d->n_classes = 10;
	d->source = strdup("random");
	d->x = malloc((size_t)d->n * 784 * sizeof(float));
	d->y = malloc((size_t)d->n);
	if (!d->source || !d->x || !d->y)
		goto nomem;
	for (int64_t i = 0; i < d->n * 784; i++)
		d->x[i] = mc_rand_uniform(3, 0, (uint64_t)i);
	for (int64_t i = 0; i < d->n; i++)
		d->y[i] = (uint8_t)(mc_rand_uniform(3, 1, (uint64_t)i) * 10.0f) % 10;
	return d;
nomem:
	if (d) {
		free(d->source);
		free(d->x);
		free(d->y);
		free(d);
	}
	mc_err_set(err, MC_ENOMEM, "random data: out of memory");
	return NULL;
}

static void free_data(struct mc_dataset *d, int own)
{
	if (!d)
		return;
	if (!own) {
		mc_dataset_free(d);
		return;
	}
	free(d->source);
	free(d->x);
	free(d->y);
	free(d);
}

/* What a timed training loop needs: an executor for BATCH samples with
 * gradients, Adam, and the loss gradient's buffer. */
struct trainer {
	struct mc_exec *e;
	struct mc_optim *o;
	float *dlogits;
};

static void trainer_close(struct trainer *t)
{
	mc_free(t->dlogits);
	mc_optim_free(t->o);
	mc_exec_free(t->e);
}

static int trainer_open(struct trainer *t, struct mc_model *m, const struct mc_dataset *d,
			struct mc_err *err)
{
	struct mc_optim_conf oc = {.kind = MC_OPTIM_ADAM, .lr = 1e-3, .beta1 = 0.9,
				   .beta2 = 0.999, .eps = 1e-8};

	*t = (struct trainer){0};
	if (d->n < BATCH)
		return mc_err_set(err, MC_EINVAL, "%s: fewer than %d samples", d->source, BATCH);
	t->e = mc_exec_new(m, BATCH, 1, err);
	if (t->e)
		t->o = mc_optim_new(m, &oc, err);
	if (!t->o) {
		trainer_close(t);
		return err->code;
	}
	t->dlogits = mc_calloc((size_t)BATCH * (size_t)mc_model_n_classes(m), sizeof(float));
	if (!t->dlogits) {
		trainer_close(t);
		return mc_err_set(err, MC_ENOMEM, "training: out of memory");
	}
	return 0;
}

/* One step on the batch at sample b0: forward, loss, backward, Adam. */
static float step(struct mc_model *m, struct mc_exec *e, struct mc_optim *o,
		  const struct mc_dataset *d, int64_t b0, float *dlogits)
{
	const float *z = mc_forward(e, d->x + (size_t)b0 * (size_t)d->sample_numel, BATCH);
	float loss = mc_softmax_xent(z, d->y + b0, BATCH, (int)mc_model_n_classes(m), dlogits);

	mc_exec_zero_grad(e);
	mc_backward(e, dlogits);
	mc_optim_step(o, m, e);
	return loss;
}

static int bench_train(struct mc_model *m, const struct mc_dataset *d, const struct opts *op,
		       const char *name, struct mc_err *err)
{
	int64_t nb = d->n / BATCH, b = 0;
	struct trainer t;
	float first = 0, last = 0;
	double *rate = NULL;
	int r, done = 0;

	r = trainer_open(&t, m, d, err);
	if (r)
		return r;
	rate = malloc((size_t)op->reps * sizeof(*rate));
	if (!rate) {
		r = mc_err_set(err, MC_ENOMEM, "training: out of memory");
		goto out;
	}
	for (int i = 0; i < op->warmup; i++, b = (b + 1) % nb)
		last = step(m, t.e, t.o, d, b * BATCH, t.dlogits);
	for (int k = 0; k < op->reps; k++) {
		double t0 = now();
		int i = 0;

		for (; i < op->steps && (i < 3 || !op->max_time || now() - t0 < op->max_time);
		     i++, b = (b + 1) % nb) {
			last = step(m, t.e, t.o, d, b * BATCH, t.dlogits);
			if (!k && !i)
				first = last;
		}
		rate[k] = (double)i * BATCH / (now() - t0);
		done += i;
	}
	printf("INFO train_%s loss %.4f -> %.4f over %d steps%s on %s\n", name, first, last, done,
	       done < op->steps * op->reps ? " (cut short by -T)" : "", d->source);
	printf("RESULT train_%s %.1f\n", name, median(rate, op->reps));
	fflush(stdout);
	r = 0;
out:
	free(rate);
	trainer_close(&t);
	return r;
}

/*
 * profile: after WARMUP steps, REPS x STEPS steps with each part timed: every
 * node's forward and backward (mc_exec_profile), the loss, zeroing the
 * gradients and the optimizer step. Prints ms per step of each part and its
 * share of the step; the parts a thread count scales badly stand out when two
 * runs (OMP_NUM_THREADS=1 and more) are set side by side.
 */
static int bench_profile(struct mc_model *m, const struct mc_dataset *d, const struct opts *op,
			 const char *name, struct mc_err *err)
{
	int64_t nb = d->n / BATCH, b = 0;
	int nn = mc_model_n_nodes(m), steps = op->steps * op->reps;
	struct trainer t;
	double *ms = NULL, loss = 0, zero = 0, opt = 0, total = 0, t0, t1;
	int r;

	r = trainer_open(&t, m, d, err);
	if (r)
		return r;
	ms = calloc(2 * (size_t)nn, sizeof(*ms));
	if (!ms) {
		r = mc_err_set(err, MC_ENOMEM, "profile: out of memory");
		goto out;
	}
	for (int i = 0; i < op->warmup; i++, b = (b + 1) % nb)
		step(m, t.e, t.o, d, b * BATCH, t.dlogits);
	mc_exec_profile(t.e, ms);
	for (int i = 0; i < steps; i++, b = (b + 1) % nb) {
		const float *z;
		double s = now();

		z = mc_forward(t.e, d->x + (size_t)(b * BATCH) * (size_t)d->sample_numel, BATCH);
		t0 = now();
		mc_softmax_xent(z, d->y + b * BATCH, BATCH, (int)mc_model_n_classes(m), t.dlogits);
		t1 = now();
		loss += t1 - t0;
		mc_exec_zero_grad(t.e);
		t0 = now();
		zero += t0 - t1;
		mc_backward(t.e, t.dlogits);
		t1 = now();
		mc_optim_step(t.o, m, t.e);
		opt += now() - t1;
		total += now() - s;
	}
	mc_exec_profile(t.e, NULL);
	total *= 1e3 / steps;
	printf("INFO profile_%s: %d threads, ms per step, mean of %d steps\n", name,
	       omp_get_max_threads(), steps);
	for (int i = 0; i < nn; i++) {
		const char *nm = mc_model_node(m, i)->name;

		printf("PROF %-12s forward  %8.3f %5.1f%%\n", nm, ms[2 * i] / steps,
		       100 * ms[2 * i] / steps / total);
		printf("PROF %-12s backward %8.3f %5.1f%%\n", nm, ms[2 * i + 1] / steps,
		       100 * ms[2 * i + 1] / steps / total);
	}
	printf("PROF %-12s -        %8.3f %5.1f%%\n", "loss", 1e3 * loss / steps,
	       100e3 * loss / steps / total);
	printf("PROF %-12s -        %8.3f %5.1f%%\n", "zero_grad", 1e3 * zero / steps,
	       100e3 * zero / steps / total);
	printf("PROF %-12s -        %8.3f %5.1f%%\n", "optimizer", 1e3 * opt / steps,
	       100e3 * opt / steps / total);
	printf("PROF %-12s -        %8.3f\n", "step", total);
	fflush(stdout);
	r = 0;
out:
	free(ms);
	trainer_close(&t);
	return r;
}

/* Peak resident memory of this process so far, in bytes. */
static double peak_rss(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_maxrss * 1024.0;
}

static int bench_memory(struct mc_model *m, const struct mc_dataset *d, double base,
			const char *name, struct mc_err *err)
{
	struct mc_train_conf c = {
		.epochs = 1,
		.batch_size = BATCH,
		.optim = {.kind = MC_OPTIM_ADAM, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999,
			  .eps = 1e-8},
		.seed = 1,
		.label = name,
	};
	double data = (double)d->n * ((double)d->sample_numel * sizeof(float) + 1);
	double weights = (double)mc_model_nparams(m) * sizeof(float), acts = 0, budget, used;
	int r;

	for (int i = 0; i < mc_model_n_nodes(m); i++)
		acts += (double)BATCH * (double)mc_model_node(m, i)->out_numel * sizeof(float);
	r = mc_train(m, d, &c, NULL, err);
	if (r)
		return r;
	budget = data + weights + 2 * weights + acts;
	used = peak_rss() - base;
	printf("INFO mem_%s: data %.1f MB, weights %.1f MB, Adam state %.1f MB, activations "
	       "%.1f MB: budget %.1f MB; peak growth %.1f MB over %lld samples\n",
	       name, data / 1e6, weights / 1e6, 2 * weights / 1e6, acts / 1e6, budget / 1e6,
	       used / 1e6, (long long)d->n);
	printf("RESULT mem_%s %.3f\n", name, used / budget);
	fflush(stdout);
	return 0;
}

static int bench_latency(const struct mc_model *m, const struct mc_dataset *d, int batch,
			 const struct opts *op, const char *name, struct mc_err *err)
{
	int cap = 100000, k = 0;
	struct mc_exec *e;
	double *t, t0;
	float *x;

	if (d->n < batch)
		return mc_err_set(err, MC_EINVAL, "%s: fewer than %d samples", d->source, batch);
	e = mc_exec_new(m, batch, 0, err);
	if (!e)
		return err->code;
	x = d->x;
	t = malloc((size_t)cap * sizeof(*t));
	if (!t) {
		mc_exec_free(e);
		return mc_err_set(err, MC_ENOMEM, "latency: out of memory");
	}
	for (int i = 0; i < 3; i++)
		mc_forward(e, x, batch);
	t0 = now();
	while (k < cap && (k < 5 || now() - t0 < op->min_time)) {
		double s = now();

		mc_forward(e, x, batch);
		t[k++] = now() - s;
	}
	printf("RESULT lat%d_%s %.4f\n", batch, name, median(t, k) * 1e3);
	fflush(stdout);
	free(t);
	mc_exec_free(e);
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: bench_train [-d DIR] [-s STEPS] [-w WARMUP] [-r REPS] "
			"[-T MAX_SECONDS] [-m MIN_SECONDS] [-M MODEL.safetensors] "
			"mlp|student|cnn train|lat1|lat256|memory|profile...\n");
}

int main(int argc, char **argv)
{
	struct opts op = {.data = NULL, .steps = 40, .warmup = 5, .reps = 3, .min_time = 0.5,
			  .max_time = 0};
	struct mc_dataset *d = NULL;
	struct mc_model *m = NULL;
	static struct mc_err err;
	const char *name, *arch, *file = NULL;
	double base;
	int i, r = 0;

	/* As the mcomp command starts: bounded OpenMP waits unless the caller set them. */
	mc_threads_bound_waits(argv);

	for (i = 1; i < argc && argv[i][0] == '-'; i++) {
		const char *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!v)
			goto bad;
		if (!strcmp(argv[i], "-d"))
			op.data = v;
		else if (!strcmp(argv[i], "-s"))
			op.steps = atoi(v);
		else if (!strcmp(argv[i], "-w"))
			op.warmup = atoi(v);
		else if (!strcmp(argv[i], "-r"))
			op.reps = atoi(v);
		else if (!strcmp(argv[i], "-m"))
			op.min_time = atof(v);
		else if (!strcmp(argv[i], "-T"))
			op.max_time = atof(v);
		else if (!strcmp(argv[i], "-M"))
			file = v;
		else
			goto bad;
		i++;
	}
	if (argc - i < 2 || op.steps < 1 || op.warmup < 0 || op.reps < 1 || !(op.min_time >= 0) ||
	    !(op.max_time >= 0))
		goto bad;
	name = argv[i++];
	if (!strcmp(name, "mlp"))
		arch = mlp_arch;
	else if (!strcmp(name, "student"))
		arch = student_arch;
	else if (!strcmp(name, "cnn"))
		arch = cnn_arch;
	else
		goto bad;
	m = file ? mc_model_load(file, &err) : mc_model_from_arch(arch, name, &err);
	if (!m) {
		fprintf(stderr, "bench_train: %s\n", err.msg);
		return 3;
	}
	if (!file)
		mc_model_init(m, 1);
	base = peak_rss();
	d = load_data(op.data, &err);
	if (!d) {
		fprintf(stderr, "bench_train: %s\n", err.msg);
		mc_model_free(m);
		return 1;
	}
	printf("INFO %s: %lld parameters, %.2f MFLOP per sample, %d threads, data %s\n", name,
	       (long long)mc_model_nparams(m), (double)mc_model_flops(m) * 1e-6,
	       omp_get_max_threads(), d->source);
	for (; i < argc && !r; i++) {
		if (!strcmp(argv[i], "train"))
			r = bench_train(m, d, &op, name, &err);
		else if (!strcmp(argv[i], "lat1"))
			r = bench_latency(m, d, 1, &op, name, &err);
		else if (!strcmp(argv[i], "lat256"))
			r = bench_latency(m, d, 256, &op, name, &err);
		else if (!strcmp(argv[i], "profile"))
			r = bench_profile(m, d, &op, name, &err);
		else if (!strcmp(argv[i], "memory"))
			r = bench_memory(m, d, base, name, &err);
		else {
			usage();
			r = MC_EINVAL;
			err.msg[0] = 0;
		}
		if (r && err.msg[0])
			fprintf(stderr, "bench_train: %s\n", err.msg);
	}
	free_data(d, !op.data);
	mc_model_free(m);
	return r ? 1 : 0;
bad:
	usage();
	return 2;
}
