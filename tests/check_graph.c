/* SPDX-License-Identifier: MIT */
/*
 * check_graph.c - the graph API as a pass author meets it, through the
 * public headers only: building node by node, every mutation and its
 * refusals (with the model left as it was), shape inference, readers,
 * models of shapes only, an op a plugin provides (trained, saved, loaded,
 * and refused without its pass), and validation that follows the graph
 * through a pipeline's passes.
 */
#define _GNU_SOURCE /* nftw */
#include <math.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tiny_data.h"

static struct mc_err err;

/* flatten1 -> fc1 (in 64, out 32) -> relu1 -> fc2 (out 4) over [1, 8, 8]. */
static struct mc_model *mlp(void)
{
	int64_t in[] = { 1, 8, 8 };
	struct mc_attr a32[] = { MC_ATTR_INT("out", 32), MC_ATTR_END };
	struct mc_attr a4[] = { MC_ATTR_INT("out", 4), MC_ATTR_END };
	struct mc_model *m = mc_model_new(3, in, &err);

	ck_assert_msg(m != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_model_add_node(m, -1, NULL, "flatten", NULL, NULL, &err), 0);
	ck_assert_int_eq(mc_model_add_node(m, -1, "fc1", "linear", NULL, a32, &err), 1);
	ck_assert_int_eq(mc_model_add_node(m, -1, NULL, "relu", NULL, NULL, &err), 2);
	ck_assert_int_eq(mc_model_add_node(m, -1, "fc2", "linear", NULL, a4, &err), 3);
	mc_model_init(m, 5);
	return m;
}

/* The architecture text of m, to show that a refused change left it alone. */
static char *arch_of(const struct mc_model *m)
{
	char *a = mc_model_arch(m);

	ck_assert_ptr_nonnull(a);
	return a;
}

static void assert_unchanged(const struct mc_model *m, const char *before)
{
	char *now = arch_of(m);

	ck_assert_str_eq(now, before);
	free(now);
}

static void assert_msg(const char *want)
{
	ck_assert_msg(strstr(err.msg, want) != NULL, "wanted '%s' in: %s", want, err.msg);
}

START_TEST(build_and_read)
{
	struct mc_model *m = mlp();
	const struct mc_node *fc1 = mc_model_node(m, 1);
	int64_t shape[MC_MAX_DIMS];
	int r[4];

	ck_assert_int_eq(mc_model_n_nodes(m), 4);
	ck_assert_str_eq(mc_model_node(m, 0)->name, "flatten1");
	ck_assert_str_eq(mc_model_node(m, 2)->name, "relu1");
	ck_assert_int_eq(mc_model_find(m, "fc2"), 3);
	ck_assert_int_eq(mc_model_find(m, "nope"), -1);
	ck_assert_ptr_null(mc_model_node(m, 4));
	ck_assert_int_eq(mc_model_input_shape(m, shape), 3);
	ck_assert_int_eq(shape[2], 8);
	ck_assert_int_eq(mc_model_in_numel(m), 64);
	ck_assert_int_eq(mc_model_n_classes(m), 4);
	/* Shapes inferred: fc1.weight [32, 64] from flatten's 64 values. */
	ck_assert_int_eq(fc1->params[0]->shape[0], 32);
	ck_assert_int_eq(fc1->params[0]->shape[1], 64);
	ck_assert_ptr_eq(mc_node_param_named(fc1, "bias"), fc1->params[1]);
	ck_assert_int_eq(mc_node_attr_int(fc1, "out", -1), 32);
	ck_assert_int_eq(mc_node_attr_int(fc1, "bias", -1), 1);
	ck_assert_int_eq(mc_node_attr_int(fc1, "nope", -7), -7);
	/* Readers: relu1 reads fc1; the model input is read by flatten1. */
	ck_assert_int_eq(mc_model_readers(m, 1, r, 4), 1);
	ck_assert_int_eq(r[0], 2);
	ck_assert_int_eq(mc_model_readers(m, MC_NODE_INPUT, r, 4), 1);
	ck_assert_int_eq(r[0], 0);
	ck_assert_int_eq(mc_model_readers(m, 3, r, 4), 0);
	mc_model_free(m);
}
END_TEST

START_TEST(refusals_leave_the_model)
{
	struct mc_model *m = mlp();
	char *before = arch_of(m);
	const char *bad_in[] = { "fc2", NULL };
	struct mc_attr big[] = { MC_ATTR_INT("kernel", 99), MC_ATTR_END };
	struct mc_attr typo[] = { MC_ATTR_INT("outt", 3), MC_ATTR_END };
	struct mc_attr neg[] = { MC_ATTR_INT("out", -3), MC_ATTR_END };
	struct mc_attr flt[] = { MC_ATTR_FLOAT("out", 2.5), MC_ATTR_END };
	struct mc_attr c8[] = { MC_ATTR_INT("out", 8), MC_ATTR_END };

	ck_assert_int_lt(mc_model_add_node(m, -1, NULL, "linaer", NULL, NULL, &err), 0);
	assert_msg("unknown op 'linaer'; did you mean 'linear'?");
	ck_assert_int_lt(mc_model_add_node(m, -1, "fc1", "relu", NULL, NULL, &err), 0);
	assert_msg("'fc1' is taken");
	ck_assert_int_lt(mc_model_add_node(m, -1, "input", "relu", NULL, NULL, &err), 0);
	ck_assert_int_lt(mc_model_add_node(m, 1, "x", "relu", bad_in, NULL, &err), 0);
	assert_msg("input 'fc2' is not a node before it");
	ck_assert_int_lt(mc_model_add_node(m, -1, "x", "add", NULL, NULL, &err), 0);
	assert_msg("add takes 2 inputs");
	ck_assert_int_lt(mc_model_add_node(m, -1, "x", "linear", NULL, typo, &err), 0);
	assert_msg("linear has no attribute 'outt'; did you mean 'out'?");
	ck_assert_int_lt(mc_model_add_node(m, -1, "x", "linear", NULL, NULL, &err), 0);
	assert_msg("needs attribute 'out'");
	ck_assert_int_lt(mc_model_add_node(m, -1, "x", "linear", NULL, neg, &err), 0);
	assert_msg("out: -3 is out of range");
	ck_assert_int_lt(mc_model_add_node(m, -1, "x", "linear", NULL, flt, &err), 0);
	assert_msg("out: expected an int");
	/* A conv2d cannot read fc2's [4]: the message names node, op and shapes. */
	ck_assert_int_lt(mc_model_add_node(m, -1, "c", "conv2d", NULL, c8, &err), 0);
	assert_msg("node 'c' (conv2d) given 'fc2' [4]: conv2d needs per-sample");
	/* Removing flatten1 would feed [1, 8, 8] to fc1, which takes vectors. */
	ck_assert_int_ne(mc_model_remove_node(m, 0, &err), 0);
	assert_msg("node 'fc1' (linear) given 'input' [1, 8, 8]");
	ck_assert_int_ne(mc_model_set_attrs(m, 1, big, &err), 0);
	assert_msg("linear has no attribute 'kernel'");
	ck_assert_int_ne(mc_model_rename_node(m, 1, "fc2", &err), 0);
	ck_assert_int_ne(mc_model_rename_node(m, 1, "input", &err), 0);
	ck_assert_int_ne(mc_model_replace_node(m, 1, NULL, "add", NULL, &err), 0);
	assert_msg("add takes 2 inputs and linear 1");
	ck_assert_int_ne(mc_model_remove_node(m, 7, &err), 0);
	ck_assert_int_ne(mc_model_rewire(m, 1, 3, -1, &err), 0);
	assert_msg("comes after it");
	assert_unchanged(m, before);
	free(before);
	mc_model_free(m);
}
END_TEST

/* A convolution and the depthwise one reading it (an add takes both) narrow
 * only together: one at a time is refused and leaves the model; both in one
 * change set up every node after them again, keeping what did not change. */
START_TEST(set_attrs_together)
{
	int64_t in[] = { 1, 6, 6 };
	struct mc_attr c8[] = { MC_ATTR_INT("out", 8), MC_ATTR_INT("kernel", 1), MC_ATTR_END };
	struct mc_attr dw8[] = { MC_ATTR_INT("out", 8), MC_ATTR_INT("groups", 8),
				 MC_ATTR_INT("kernel", 3), MC_ATTR_INT("padding", 1), MC_ATTR_END };
	struct mc_attr a5[] = { MC_ATTR_INT("out", 5), MC_ATTR_END };
	struct mc_attr dw5[] = { MC_ATTR_INT("out", 5), MC_ATTR_INT("groups", 5), MC_ATTR_END };
	struct mc_attr bad[] = { MC_ATTR_INT("outt", 5), MC_ATTR_END };
	const char *sum[] = { "b", "dw", NULL };
	const struct mc_attr *both[] = { a5, dw5 }, *typo[] = { a5, bad };
	struct mc_model *m = mc_model_new(3, in, &err);
	const float *head;
	char *before;
	int nodes[] = { 1, 2 };

	ck_assert_msg(m != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_model_add_node(m, -1, "a", "conv2d", NULL, c8, &err), 0);
	ck_assert_int_eq(mc_model_add_node(m, -1, "b", "conv2d", NULL, c8, &err), 1);
	ck_assert_int_eq(mc_model_add_node(m, -1, "dw", "conv2d", NULL, dw8, &err), 2);
	ck_assert_int_eq(mc_model_add_node(m, -1, "sum", "add", sum, NULL, &err), 3);
	ck_assert_int_eq(mc_model_add_node(m, -1, "pool", "global_avgpool", NULL, NULL, &err), 4);
	ck_assert_int_eq(mc_model_add_node(m, -1, "fc", "linear", NULL, a5, &err), 5);
	mc_model_init(m, 3);
	before = arch_of(m);
	head = mc_model_node(m, 0)->params[0]->data;
	ck_assert_int_ne(mc_model_set_attrs(m, 1, a5, &err), 0);
	assert_unchanged(m, before);
	ck_assert_int_ne(mc_model_set_attrs_n(m, 2, nodes, typo, &err), 0);
	assert_msg("conv2d has no attribute 'outt'");
	assert_unchanged(m, before);
	ck_assert_int_eq(mc_model_set_attrs_n(m, 2, nodes, both, &err), 0);
	ck_assert_int_eq(mc_model_node(m, 1)->params[0]->shape[0], 5);
	ck_assert_int_eq(mc_model_node(m, 2)->params[0]->shape[0], 5);
	ck_assert_int_eq(mc_model_node(m, 3)->out_shape[0], 5);
	ck_assert_int_eq(mc_model_node(m, 5)->params[0]->shape[1], 5);
	ck_assert_ptr_eq(mc_model_node(m, 0)->params[0]->data, head); /* kept */
	free(before);
	mc_model_free(m);
}
END_TEST

START_TEST(insert_replace_remove)
{
	struct mc_model *m = mlp();
	struct mc_tensor *fc2b = mc_model_node(m, 3)->params[1];
	float b0 = ((float *)fc2b->data)[0];
	struct mc_attr a16[] = { MC_ATTR_INT("out", 16), MC_ATTR_BOOL("bias", 0), MC_ATTR_END };
	const struct mc_node *nd;
	int r[4], i;

	/* A dropout spliced after fc1: relu1 now reads it. */
	i = mc_model_insert_after(m, 1, "drop", "dropout", NULL, &err);
	ck_assert_msg(i == 2, "%s", err.msg);
	ck_assert_int_eq(mc_model_readers(m, 1, r, 4), 1);
	ck_assert_int_eq(r[0], 2);
	ck_assert_int_eq(mc_model_node(m, 3)->inputs[0], 2);
	/* A linear before fc2: fc2 now reads 16 features, its weight is new
	 * [4, 16] and zero, its bias (same shape) keeps its values. */
	i = mc_model_insert_before(m, 4, "fc2_a", "linear", a16, &err);
	ck_assert_msg(i == 4, "%s", err.msg);
	nd = mc_model_node(m, 5);
	ck_assert_str_eq(nd->name, "fc2");
	ck_assert_int_eq(nd->params[0]->shape[1], 16);
	ck_assert(((float *)nd->params[0]->data)[0] == 0.0f);
	ck_assert_ptr_eq(nd->params[1], fc2b);
	ck_assert(((float *)fc2b->data)[0] == b0);
	ck_assert_int_eq(mc_model_node(m, 4)->n_params, 1); /* bias: false */
	ck_assert_int_eq(mc_model_node(m, 4)->params[0]->shape[1], 32);
	/* Narrowing fc1 sets up everything after it again. */
	{
		struct mc_attr a8[] = { MC_ATTR_INT("out", 8), MC_ATTR_END };

		ck_assert_int_eq(mc_model_set_attrs(m, 1, a8, &err), 0);
	}
	ck_assert_int_eq(mc_model_node(m, 4)->params[0]->shape[1], 8);
	/* Remove the dropout: relu1 reads fc1 again. */
	ck_assert_int_eq(mc_model_remove_node(m, 2, &err), 0);
	ck_assert_int_eq(mc_model_node(m, 2)->inputs[0], 1);
	/* Replace relu1 by a softmax; same name, same readers. */
	ck_assert_int_eq(mc_model_replace_node(m, 2, NULL, "softmax", NULL, &err), 0);
	ck_assert_str_eq(mc_model_node(m, 2)->op->name, "softmax");
	ck_assert_str_eq(mc_model_node(m, 2)->name, "relu1");
	ck_assert_int_eq(mc_model_readers(m, 2, r, 4), 1);
	/* Rename carries the parameters' names. */
	ck_assert_int_eq(mc_model_rename_node(m, 1, "first", &err), 0);
	ck_assert_str_eq(mc_model_node(m, 1)->params[0]->name, "first.weight");
	ck_assert_ptr_nonnull(mc_model_param(m, "first.bias"));
	ck_assert_ptr_null(mc_model_param(m, "fc1.bias"));
	/* The output node goes only where its input is the node before it. */
	ck_assert_int_eq(mc_model_remove_node(m, 4, &err), 0);
	ck_assert_str_eq(mc_model_node(m, 3)->name, "fc2_a");
	ck_assert_int_eq(mc_model_n_classes(m), 16);
	/* Rewire: fc2_a reads first instead of relu1. */
	ck_assert_int_eq(mc_model_rewire(m, 2, 1, -1, &err), 0);
	ck_assert_int_eq(mc_model_node(m, 3)->inputs[0], 1);
	ck_assert_int_eq(mc_model_readers(m, 2, NULL, 0), 0);
	mc_model_free(m);
}
END_TEST

START_TEST(shapes_only)
{
	struct mc_model *m = mlp(), *a = mc_model_dup_arch(m, &err);
	struct mc_attr a8[] = { MC_ATTR_INT("out", 8), MC_ATTR_END };

	ck_assert_msg(a != NULL, "%s", err.msg);
	ck_assert(mc_model_is_arch(a));
	ck_assert(!mc_model_is_arch(m));
	ck_assert_ptr_null(mc_model_node(a, 1)->params[0]->data);
	ck_assert_int_eq(mc_model_nparams(a), mc_model_nparams(m));
	ck_assert_int_eq(mc_model_flops(a), mc_model_flops(m));
	ck_assert_int_eq(mc_model_set_attrs(a, 1, a8, &err), 0);
	ck_assert_ptr_null(mc_model_node(a, 3)->params[0]->data);
	ck_assert_int_eq(mc_model_node(a, 3)->params[0]->shape[1], 8);
	ck_assert_ptr_null(mc_exec_new(a, 1, 0, &err));
	assert_msg("shapes only");
	mc_model_free(a);
	mc_model_free(m);
}
END_TEST

/* A layer without a bias computes what the same layer with a zero bias does,
 * on the dense and (weights 90% zero, MCOMP_SPARSE=1) the sparse path. */
START_TEST(bias_false)
{
	static const char *const ops[] = { "linear", "conv2d" };

	for (int sparse = 0; sparse < 2; sparse++)
		for (int k = 0; k < 2; k++) {
			int conv = k == 1;
			int64_t in[] = { 2, 6, 6 };
			struct mc_attr with[] = { MC_ATTR_INT("out", 5), MC_ATTR_INT("padding", 1),
						  MC_ATTR_END };
			struct mc_attr wout[] = { MC_ATTR_INT("out", 5), MC_ATTR_INT("padding", 1),
						  MC_ATTR_BOOL("bias", 0), MC_ATTR_END };
			struct mc_model *a = mc_model_new(3, in, &err), *b = mc_model_new(3, in, &err);
			struct mc_exec *ea, *eb;
			float x[20 * 72];
			const float *ya, *yb;
			struct mc_tensor *wa, *wb;

			if (!conv) {
				with[1].name = NULL;
				wout[1] = wout[2];
				wout[2].name = NULL;
				ck_assert_int_eq(mc_model_add_node(a, -1, "f", "flatten", NULL, NULL,
								   &err), 0);
				ck_assert_int_eq(mc_model_add_node(b, -1, "f", "flatten", NULL, NULL,
								   &err), 0);
			}
			ck_assert_int_ge(mc_model_add_node(a, -1, "l", ops[k], NULL, with, &err), 0);
			ck_assert_int_ge(mc_model_add_node(b, -1, "l", ops[k], NULL, wout, &err), 0);
			mc_model_init(a, 1);
			wa = mc_model_param(a, "l.weight");
			wb = mc_model_param(b, "l.weight");
			ck_assert_ptr_null(mc_model_param(b, "l.bias"));
			for (int64_t i = 0; i < wa->numel; i++)
				if (sparse && i % 10)
					((float *)wa->data)[i] = 0.0f;
			memcpy(wb->data, wa->data, mc_tensor_nbytes(wa));
			memset(mc_model_param(a, "l.bias")->data, 0, 5 * sizeof(float));
			for (int i = 0; i < 20 * 72; i++)
				x[i] = (float)cos(0.11 * i);
			setenv("MCOMP_SPARSE", sparse ? "1" : "0", 1);
			ea = mc_exec_new(a, 20, 0, &err);
			eb = mc_exec_new(b, 20, 0, &err);
			ya = mc_forward(ea, x, 20);
			yb = mc_forward(eb, x, 20);
			ck_assert_int_eq(memcmp(ya, yb, 20 * mc_model_n_classes(a) * sizeof(float)), 0);
			ck_assert_int_eq(mc_model_nparams(b) + 5, mc_model_nparams(a));
			unsetenv("MCOMP_SPARSE");
			mc_exec_free(ea);
			mc_exec_free(eb);
			mc_model_free(a);
			mc_model_free(b);
		}
}
END_TEST

/* ---------------------------------------------------------------- plugin op */

static char fixture[4200];

static const struct mc_pass *open_fixture(void)
{
	void *h;
	const struct mc_pass *p = mc_pass_open(fixture, &h, &err);

	ck_assert_msg(p != NULL, "%s", err.msg);
	return p;
}

/* fc1 -> fx_gain -> relu1 -> fc2 over [1, 8, 8]. */
static struct mc_model *gain_model(void)
{
	struct mc_model *m = mlp();

	ck_assert_msg(mc_model_insert_after(m, 1, "gain", "fx_gain", NULL, &err) == 2, "%s",
		      err.msg);
	mc_model_init(m, 5);
	return m;
}

static float loss_of(struct mc_exec *e, const float *x, int n, const uint8_t *y, float *d)
{
	const float *z = mc_forward(e, x, n);

	return mc_softmax_xent(z, y, n, 4, d);
}

START_TEST(plugin_op_trains_saves_loads)
{
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char path[4300];
	struct mc_model *m, *l;
	struct mc_exec *e;
	float x[3 * 64], d[3 * 4], *g;
	uint8_t y[3] = { 0, 1, 3 };
	struct mc_tensor *gain;
	pid_t pid;
	int st;

	snprintf(path, sizeof(path), "%s/mcomp-graph-%d.safetensors", base, (int)getpid());
	/* A child with the plugin saves a model that uses its op... */
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct mc_model *c;

		open_fixture();
		c = gain_model();
		_exit(mc_model_save(c, path, &err) ? 1 : 0);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* ...which this process, without it, refuses, naming op and pass. */
	ck_assert_ptr_null(mc_op_find("fx_gain"));
	ck_assert_ptr_null(mc_model_load(path, &err));
	assert_msg("op 'fx_gain' is provided by pass 'fxgraph', which is not loaded");
	ck_assert_int_eq(err.code, MC_EPLUGIN);
	/* With the pass loaded, the op is there and the file loads. */
	open_fixture();
	ck_assert_ptr_nonnull(mc_op_find("fx_gain"));
	ck_assert_str_eq(mc_op_provider("fx_gain"), "fxgraph");
	ck_assert_ptr_null(mc_op_provider("linear"));
	l = mc_model_load(path, &err);
	ck_assert_msg(l != NULL, "%s", err.msg);
	m = gain_model();
	{
		char *a = arch_of(m), *b = arch_of(l);

		ck_assert_str_eq(a, b);
		free(a);
		free(b);
	}
	ck_assert_int_eq(memcmp(mc_model_param(l, "gain.gain")->data,
				mc_model_param(m, "gain.gain")->data, 32 * sizeof(float)), 0);
	mc_model_free(l);
	unlink(path);
	/* The gain's gradient against central differences. */
	for (int i = 0; i < 3 * 64; i++)
		x[i] = (float)sin(0.37 * i);
	e = mc_exec_new(m, 3, 1, &err);
	ck_assert_msg(e != NULL, "%s", err.msg);
	mc_exec_zero_grad(e);
	loss_of(e, x, 3, y, d);
	mc_backward(e, d);
	g = mc_exec_grad(e, 2, 0);
	gain = mc_model_param(m, "gain.gain");
	for (int j = 0; j < 32; j += 5) {
		float *w = gain->data, keep = w[j], lp, lm;
		double num;

		w[j] = keep + 1e-2f;
		lp = loss_of(e, x, 3, y, NULL);
		w[j] = keep - 1e-2f;
		lm = loss_of(e, x, 3, y, NULL);
		w[j] = keep;
		num = (lp - lm) / 2e-2;
		ck_assert_msg(fabs(num - g[j]) <= 1e-3 + 1e-2 * fabs(num),
			      "gain[%d]: analytic %g, numeric %g", j, g[j], num);
	}
	mc_exec_free(e);
	ck_assert_int_eq(mc_model_flops(m) - 2 * (64 * 32 + 32 * 4), 32);
	mc_model_free(m);
}
END_TEST

/* ---------------------------------------------------------------- pipelines */

#define HEAD                                                                                      \
	"mcomp: 1\nseed: 3\n"                                                                     \
	"data:\n  train: {idx: train}\n  test: {idx: test}\n"                                     \
	"models:\n  m:\n    build:\n      input: [1, 8, 8]\n"                                     \
	"      layers: [flatten, {linear: 16, name: fc1}, relu, {linear: 4, name: fc2}]\n"       \
	"output: out.safetensors\n"                                                               \
	"passes:\n"

static void pipelines_setup(void)
{
	static const char *const passes[] = { "fxgraph", "quantize", NULL };
	static char env[9000];
	const char *b = getenv("MCOMP_BUILDDIR");

	ck_assert_ptr_nonnull(b);
	snprintf(env, sizeof(env), "%s/tests/fixtures/.libs:%s/passes/.libs", b, b);
	setenv("MCOMP_PASS_PATH", env, 1);
	tiny_setup("graph", passes);
}

START_TEST(validation_follows_the_graph)
{
	struct stat st;

	pipelines_setup();
	/* The second pass names a layer the first creates: valid, and it runs. */
	ck_assert_msg(tiny_pipeline(reg,
				    HEAD "  - fxgraph: {model: m, split: fc2}\n"
					 "  - quantize: {model: m, exclude: [fc2_a]}\n",
				    1, &err) == 0,
		      "%s", err.msg);
	ck_assert_int_eq(stat(spath("out.safetensors"), &st), 0);
	remove(spath("out.safetensors"));
	/* The third names a layer the second removes: refused at validation,
	 * at its own line and column, and nothing is written. */
	ck_assert_int_eq(tiny_pipeline(reg,
				       HEAD "  - fxgraph: {model: m, split: fc2}\n"
					    "  - fxgraph: {model: m, drop: fc2_a}\n"
					    "  - quantize: {model: m, exclude: [fc2_a]}\n",
				       1, &err),
			 MC_EINVAL);
	assert_msg("p.yaml:15:26: pass 'quantize', exclude: no layer of model 'm' matches 'fc2_a'");
	ck_assert_int_ne(stat(spath("out.safetensors"), &st), 0);
	/* A graph change the library refuses in a pass's check is reported at
	 * the pass's place in the file. */
	ck_assert_int_eq(tiny_pipeline(reg,
				       HEAD "  - fxgraph: {model: m, split: fc2}\n"
					    "  - fxgraph: {model: m, split: fc2}\n",
				       0, &err),
			 MC_EINVAL);
	assert_msg("p.yaml:14:");
	assert_msg("pass 'fxgraph': node name 'fc2_a' is taken");
	/* A pass after quantize sees the quantized graph: quantizing again is
	 * refused before anything trains or quantizes. */
	ck_assert_int_eq(tiny_pipeline(reg,
				       HEAD "  - quantize: {model: m, mode: dynamic}\n"
					    "  - quantize: {model: m, mode: dynamic}\n",
				       1, &err),
			 MC_EINVAL);
	assert_msg("already quantized");
	ck_assert_int_ne(stat(spath("out.safetensors"), &st), 0);
	tiny_teardown();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("graph");
	TCase *tc = tcase_create("graph");
	const char *b = getenv("MCOMP_BUILDDIR");
	SRunner *sr;
	int failed;

	snprintf(fixture, sizeof(fixture), "%s/tests/fixtures/.libs/fx_graph.so", b ? b : ".");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, build_and_read);
	tcase_add_test(tc, refusals_leave_the_model);
	tcase_add_test(tc, set_attrs_together);
	tcase_add_test(tc, insert_replace_remove);
	tcase_add_test(tc, shapes_only);
	tcase_add_test(tc, bias_false);
	tcase_add_test(tc, plugin_op_trains_saves_loads);
	tcase_add_test(tc, validation_follows_the_graph);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
