/* SPDX-License-Identifier: MIT */
/*
 * profile.c - `mcomp profile`: where a model's time goes, layer by layer.
 *
 * Runs the model on fixed pseudo-random inputs in [0, 1) at one batch size,
 * timing every node of every forward (and, with --train, every backward and
 * the optimizer step, Adam at lr 1e-3 on the cross-entropy of fixed labels)
 * through mc_exec_profile, and prints each node's mean milliseconds, its
 * share of the total and its GFLOP/s. Nothing is written: the trained
 * weights are thrown away.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mcomp/mcomp.h>

#include "cli/cli.h"

#define MAX_BATCH 65536

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct prof {
	struct mc_model *m;
	struct mc_exec *e;
	struct mc_optim *opt;
	float *x, *dlogits;
	uint8_t *labels;
	int n, train;
	double *ms, opt_ms;
};

/* One forward (and backward and step): what is timed. */
static void step(struct prof *p)
{
	const float *y;

	if (p->train)
		mc_exec_zero_grad(p->e);
	y = mc_forward(p->e, p->x, p->n);
	if (p->train) {
		double t0;

		mc_softmax_xent(y, p->labels, p->n, (int)mc_model_n_classes(p->m), p->dlogits);
		mc_backward(p->e, p->dlogits);
		t0 = now_s();
		mc_optim_step(p->opt, p->m, p->e);
		p->opt_ms += 1e3 * (now_s() - t0);
	}
}

static void print_table(const struct prof *p, int runs, double wall_ms)
{
	int nn = mc_model_n_nodes(p->m);
	double total = 0.0, flops = 0.0;
	char shape[64];

	for (int i = 0; i < nn; i++)
		total += (p->ms[2 * i] + p->ms[2 * i + 1]) / runs;
	total += p->opt_ms / runs;
	printf("%-20s %-12s %-16s %11s%s %7s %9s\n", "layer", "op", "output", "forward ms",
	       p->train ? "  backward ms" : "", "share", "GFLOP/s");
	for (int i = 0; i < nn; i++) {
		const struct mc_node *nd = mc_model_node(p->m, i);
		double f = p->ms[2 * i] / runs, b = p->ms[2 * i + 1] / runs;
		double fl = nd->op->flops ? (double)nd->op->flops(nd) * p->n : 0.0;

		flops += fl;
		printf("%-20s %-12s %-16s %11.3f", nd->name, nd->op->name,
		       mc_shape_text(nd->out_ndim, nd->out_shape, shape, sizeof(shape)), f);
		if (p->train)
			printf(" %12.3f", b);
		printf(" %6.1f%%", total > 0 ? 100.0 * (f + b) / total : 0.0);
		if (fl > 0 && f > 0.0005)
			printf(" %9.1f", fl / (f * 1e6));
		printf("\n");
	}
	if (p->train)
		printf("%-20s %-12s %-16s %11s %12.3f %6.1f%%\n", "(optimizer step)", "adam", "",
		       "", p->opt_ms / runs, total > 0 ? 100.0 * p->opt_ms / runs / total : 0.0);
	printf("%-20s %-12s %-16s %11.3f", "total", "", "", total);
	if (p->train)
		printf(" %12s", "");
	printf(" %6.1f%%", 100.0);
	if (!p->train && flops > 0)
		printf(" %9.1f", flops / (total * 1e6));
	printf("\n");
	printf("\n%d runs of batch %d: %.3f ms each (wall, timing included), %.0f samples/s\n",
	       runs, p->n, wall_ms / runs, p->n * runs / (wall_ms / 1e3));
}

int cmd_profile(int argc, char **argv)
{
	struct mc_err err = { 0 };
	struct prof p = { 0 };
	const char *file = NULL;
	double secs = 1.0, t0, wall;
	int64_t per;
	int runs = 0, ret = 1;
	uint32_t s = 12345;

	p.n = 256;
	for (int i = 0; i < argc; i++) {
		char *end;

		if (!strcmp(argv[i], "--train")) {
			p.train = 1;
		} else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
			long v = strtol(argv[++i], &end, 10);

			if (*end || v < 1 || v > MAX_BATCH)
				return bad_usage("--batch takes a whole number from 1 to %d, not '%s'",
						 MAX_BATCH, argv[i]);
			p.n = (int)v;
		} else if (!strcmp(argv[i], "--seconds") && i + 1 < argc) {
			secs = strtod(argv[++i], &end);
			if (*end || !(secs > 0.0 && secs <= 3600.0))
				return bad_usage("--seconds takes a number above 0 and at most 3600, "
						 "not '%s'", argv[i]);
		} else if (argv[i][0] == '-' || file) {
			return bad_usage("profile: unexpected argument '%s'", argv[i]);
		} else {
			file = argv[i];
		}
	}
	if (!file)
		return bad_usage("profile needs a model file");
	register_plugin_ops();
	p.m = mc_model_load(file, &err);
	if (!p.m)
		return fail(&err);
	per = mc_model_in_numel(p.m);
	p.e = mc_exec_new(p.m, p.n, p.train, &err);
	p.x = malloc((size_t)p.n * (size_t)per * sizeof(float));
	p.ms = calloc(2 * (size_t)mc_model_n_nodes(p.m), sizeof(double));
	if (p.train) {
		struct mc_optim_conf oc = { .kind = MC_OPTIM_ADAM, .lr = 1e-3, .beta1 = 0.9,
					    .beta2 = 0.999, .eps = 1e-8 };

		p.labels = malloc((size_t)p.n);
		p.dlogits = malloc((size_t)p.n * (size_t)mc_model_n_classes(p.m) * sizeof(float));
		p.opt = p.e ? mc_optim_new(p.m, &oc, &err) : NULL;
		if (p.labels)
			for (int i = 0; i < p.n; i++)
				p.labels[i] = (uint8_t)(i % mc_model_n_classes(p.m));
	}
	if (!p.e || !p.x || !p.ms || (p.train && (!p.labels || !p.dlogits || !p.opt))) {
		if (!err.msg[0])
			mc_err_set(&err, MC_ENOMEM, "%s: out of memory for batch %d", file, p.n);
		ret = fail(&err);
		goto out;
	}
	for (int64_t k = 0; k < (int64_t)p.n * per; k++) {
		s = s * 1664525u + 1013904223u;
		p.x[k] = (float)(s >> 8) / 16777216.0f;
	}
	step(&p); /* warm up: packed weights, first touch of the buffers */
	step(&p);
	p.opt_ms = 0.0;
	mc_exec_profile(p.e, p.ms);
	t0 = now_s();
	do {
		step(&p);
		runs++;
	} while (runs < 5 || (now_s() - t0 < secs && runs < 100000));
	wall = 1e3 * (now_s() - t0);
	mc_exec_profile(p.e, NULL);
	printf("%s: batch %d, %s, %d thread%s\n\n", file, p.n,
	       p.train ? "training (forward, backward, Adam step)" : "inference",
	       omp_get_max_threads(), omp_get_max_threads() == 1 ? "" : "s");
	print_table(&p, runs, wall);
	ret = 0;
out:
	mc_optim_free(p.opt);
	free(p.dlogits);
	free(p.labels);
	free(p.ms);
	free(p.x);
	mc_exec_free(p.e);
	mc_model_free(p.m);
	return ret;
}
