/* SPDX-License-Identifier: MIT */
/*
 * check_blocks - the blocks: section of pipelines: a template used with
 * arguments, repeat:, first: and when: expands into exactly the graph a
 * hand-written architecture gives (names, inputs, attributes, shapes,
 * parameter counts); expressions compute what they say; a model built of
 * blocks trains, saves and loads back with its expanded graph and weights.
 * Refusals with their places are bad fixtures of check_pipeline
 * (tests/pipelines/bad/blocks-*.yaml); thread-count determinism is
 * tests/blocks.sh.
 */
#define _GNU_SOURCE /* nftw */
#include "tiny_data.h"

#include "host/pipeline_int.h"

#define HEAD                                                                                      \
	"mcomp: 1\nseed: 5\n"                                                                     \
	"data:\n  train: {idx: train}\n  test: {idx: test}\n"

/* ResNet's basic block, and a model of three uses of it over 8x8 images. */
#define BASIC                                                                                     \
	"blocks:\n"                                                                               \
	"  basic:\n"                                                                              \
	"    params: {out: int, stride: 1}\n"                                                     \
	"    layers:\n"                                                                           \
	"      - {conv2d: {out: $out, stride: $stride, padding: 1, bias: false}, name: conv1}\n"  \
	"      - {batchnorm: {}, name: bn1}\n"                                                    \
	"      - relu\n"                                                                          \
	"      - {conv2d: {out: $out, padding: 1, bias: false}, name: conv2}\n"                   \
	"      - {batchnorm: {}, name: bn2}\n"                                                    \
	"      - {conv2d: {out: $out, kernel: 1, stride: $stride, bias: false}, name: proj,\n"    \
	"         inputs: input, when: $stride != 1 || $in != $out}\n"                           \
	"      - {batchnorm: {}, name: proj_bn, when: $stride != 1 || $in != $out}\n"            \
	"      - {add: {}, inputs: [bn2, proj_bn]}\n"                                             \
	"      - relu\n"                                                                          \
	"models:\n  m:\n    build:\n      input: [1, 8, 8]\n      layers:\n"                      \
	"        - {conv2d: {out: 4, padding: 1}, name: stem}\n"                                  \
	"        - {basic: 4, name: s1}\n"                                                        \
	"        - {basic: {out: 8}, repeat: 2, first: {stride: 2}, name: s2}\n"                  \
	"        - global_avgpool\n"                                                              \
	"        - {linear: 4}\n"

#define NODE(name, op, ins, attrs)                                                                \
	"{\"name\": \"" name "\", \"op\": \"" op "\", \"inputs\": [" ins "], \"attrs\": {" attrs   \
	"}}"
#define CONV(out, stride, kernel, pad) \
	"\"out\": " #out ", \"stride\": " #stride ", \"kernel\": " #kernel ", \"padding\": " #pad \
	", \"bias\": false"
/* One use of basic (P: its prefix) reading IN: conv1 ... relu2, with the shortcut SC. */
#define BLOCK(P, IN, OUT, STRIDE, SC)                                                            \
	NODE(P ".conv1", "conv2d", "\"" IN "\"", CONV(OUT, STRIDE, 3, 1)) ","                      \
	NODE(P ".bn1", "batchnorm", "\"" P ".conv1\"", "") ","                                      \
	NODE(P ".relu1", "relu", "\"" P ".bn1\"", "") ","                                           \
	NODE(P ".conv2", "conv2d", "\"" P ".relu1\"", CONV(OUT, 1, 3, 1)) ","                       \
	NODE(P ".bn2", "batchnorm", "\"" P ".conv2\"", "") "," SC                                   \
	NODE(P ".add1", "add", "\"" P ".bn2\", \"" SC_OUT "\"", "") ","                             \
	NODE(P ".relu2", "relu", "\"" P ".add1\"", "")

/* The same model written out by hand: what the blocks must expand to. */
static const char *expected_arch(void)
{
#define SC_OUT "stem"
	static const char s1[] = BLOCK("s1", "stem", 4, 1, "");
#undef SC_OUT
#define SC_OUT "s2.1.proj_bn"
	static const char s21[] =
		BLOCK("s2.1", "s1.relu2", 8, 2,
		      NODE("s2.1.proj", "conv2d", "\"s1.relu2\"", CONV(8, 2, 1, 0)) ","
		      NODE("s2.1.proj_bn", "batchnorm", "\"s2.1.proj\"", "") ",");
#undef SC_OUT
#define SC_OUT "s2.1.relu2"
	static const char s22[] = BLOCK("s2.2", "s2.1.relu2", 8, 1, "");
#undef SC_OUT
	static char json[16384];

	snprintf(json, sizeof(json),
		 "{\"format\": 1, \"input\": [1, 8, 8], \"nodes\": [%s, %s, %s, %s, %s, %s]}",
		 NODE("stem", "conv2d", "\"input\"", "\"out\": 4, \"padding\": 1"), s1, s21, s22,
		 NODE("global_avgpool1", "global_avgpool", "\"s2.2.relu2\"", ""),
		 NODE("linear1", "linear", "\"global_avgpool1\"", "\"out\": 4"));
	return json;
}

static struct mc_pipeline *load_text(const char *text, struct mc_err *err)
{
	write_file(spath("p.yaml"), text, strlen(text));
	memset(err, 0, sizeof(*err));
	return mc_pipeline_load(spath("p.yaml"), NULL, 0, reg, err);
}

static void blocks_setup(void)
{
	static const char *const passes[] = { "train", "eval", NULL };

	tiny_setup("blocks", passes);
}

START_TEST(expands_to_the_graph_written_by_hand)
{
	struct mc_err err;
	struct mc_pipeline *p = load_text(HEAD BASIC "passes: []\n", &err);
	struct mc_model *want;
	const struct mc_model *m;
	const struct mc_node *nd;
	char *a, *b;

	ck_assert_msg(p != NULL, "%s", err.msg);
	m = p->models[0].model;
	want = mc_model_from_arch(expected_arch(), "expected", &err);
	ck_assert_msg(want != NULL, "%s", err.msg);
	a = mc_model_arch(m);
	b = mc_model_arch(want);
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_str_eq(a, b);
	ck_assert_int_eq(mc_model_n_nodes(m), 26);
	/* Weights and running statistics, counted by hand: stem 36 + 4; s1 two
	 * 4x4x3x3 convs and two batch norms of 4 values x 4; s2.1 8x4x3x3,
	 * 8x8x3x3, the 8x4 projection and three norms of 8 x 4; s2.2 two
	 * 8x8x3x3 and two norms; the classifier 8x4 + 4. */
	ck_assert_int_eq(mc_model_nparams(m), 40 + 320 + 992 + 1216 + 36);
	ck_assert_int_eq(mc_model_nparams(m), mc_model_nparams(want));
	/* Shapes: the stride of the first use of s2 halves the image. */
	nd = mc_model_node(m, mc_model_find(m, "s1.relu2"));
	ck_assert_int_eq(nd->out_shape[0], 4);
	ck_assert_int_eq(nd->out_shape[1], 8);
	nd = mc_model_node(m, mc_model_find(m, "s2.1.proj"));
	ck_assert_int_eq(nd->out_shape[0], 8);
	ck_assert_int_eq(nd->out_shape[1], 4);
	ck_assert_int_eq(mc_node_attr_int(nd, "stride", 0), 2);
	ck_assert_int_eq(mc_model_find(m, "s2.2.proj"), -1);
	ck_assert_int_eq(mc_model_find(m, "s1.proj"), -1);
	ck_assert_ptr_nonnull(mc_model_param(m, "s2.2.conv2.weight"));
	free(a);
	free(b);
	mc_model_free(want);
	mc_pipeline_free(p);
	tiny_teardown();
}
END_TEST

START_TEST(expressions_compute_attributes)
{
	static const char text[] =
		HEAD "blocks:\n"
		     "  e:\n"
		     "    params: {c: int, k: 3, f: 0.5, flag: true, name: {type: string, default: x}}\n"
		     "    layers:\n"
		     "      - {conv2d: {out: $in * 2 + $c, kernel: $k, padding: ($k - 1) / 2}, name: $name}\n"
		     "      - {dropout: $f / 4}\n"
		     "      - {relu: {}, when: '!$flag'}\n"
		     "      - {leaky_relu: -$f * 2}\n"
		     "      - {avgpool2d: {kernel: $k % 2 + 1}, when: $k >= 3 && ($c < 10 || false)}\n"
		     "  pair:\n"
		     "    params: {c: int}\n"
		     "    layers: [{e: {c: $c, name: a}}, {e: {c: $c + 1, k: 1, flag: false}}]\n"
		     "models:\n  m:\n    build:\n      input: [3, 8, 8]\n"
		     "      layers: [{pair: 1, name: p}, flatten, {linear: 4}]\n"
		     "passes: []\n";
	struct mc_err err;
	struct mc_pipeline *p = load_text(text, &err);
	const struct mc_model *m;
	const struct mc_node *nd;

	ck_assert_msg(p != NULL, "%s", err.msg);
	m = p->models[0].model;
	/* $in is the channels of the block's input: 3, then the first use's 7. */
	nd = mc_model_node(m, mc_model_find(m, "p.e1.a"));
	ck_assert_ptr_nonnull(nd);
	ck_assert_int_eq(mc_node_attr_int(nd, "out", 0), 3 * 2 + 1);
	ck_assert_int_eq(mc_node_attr_int(nd, "kernel", 0), 3);
	ck_assert_int_eq(mc_node_attr_int(nd, "padding", -1), 1);
	nd = mc_model_node(m, mc_model_find(m, "p.e1.dropout1"));
	ck_assert_double_eq(mc_node_attr_float(nd, "p", 0), 0.125);
	nd = mc_model_node(m, mc_model_find(m, "p.e1.leaky_relu1"));
	ck_assert_double_eq(mc_node_attr_float(nd, "alpha", 0), -1.0);
	nd = mc_model_node(m, mc_model_find(m, "p.e1.avgpool2d1"));
	ck_assert_int_eq(mc_node_attr_int(nd, "kernel", 0), 2);
	/* left out: flag is true in the first use */
	ck_assert_int_eq(mc_model_find(m, "p.e1.relu1"), -1);
	/* the second use: its defaults and the name's default */
	nd = mc_model_node(m, mc_model_find(m, "p.e2.x"));
	ck_assert_ptr_nonnull(nd);
	ck_assert_int_eq(mc_node_attr_int(nd, "out", 0), 7 * 2 + 2);
	ck_assert_int_eq(mc_node_attr_int(nd, "kernel", 0), 1);
	ck_assert_int_eq(mc_node_attr_int(nd, "padding", -1), 0);
	ck_assert_int_ge(mc_model_find(m, "p.e2.relu1"), 0);
	ck_assert_int_eq(mc_model_find(m, "p.e2.avgpool2d1"), -1);
	/* the model's own layers read the block's output */
	nd = mc_model_node(m, mc_model_find(m, "flatten1"));
	ck_assert_str_eq(mc_model_node(m, nd->inputs[0])->name, "p.e2.leaky_relu1");
	mc_pipeline_free(p);
	/* a repeat past the limit, with its place */
	ck_assert_int_eq(tiny_pipeline(reg, HEAD BASIC "passes: []\n", 0, &err), 0);
	ck_assert_int_eq(tiny_pipeline(reg, HEAD BASIC "        - {basic: 4, repeat: 1001}\n"
							"passes: []\n", 0, &err),
			 MC_EINVAL);
	ck_assert_msg(strstr(err.msg, "p.yaml:30:30: layer 6 (basic): repeat: 1001 is out of "
				      "range [1, 1000]"),
		      "%s", err.msg);
	tiny_teardown();
}
END_TEST

START_TEST(a_block_model_trains_saves_and_loads)
{
	struct mc_err err;
	struct mc_pipeline *p = load_text(HEAD BASIC "passes:\n"
					  "  - train: {model: m, epochs: 2, batch_size: 16}\n"
					  "output: out/m.safetensors\n",
					  &err);
	const struct mc_model *m;
	struct mc_model *back;
	char *a, *b;
	int nonzero = 0;

	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert_msg(mc_pipeline_run(p, NULL, &err) == 0, "%s", err.msg);
	m = p->models[0].model;
	back = mc_model_load(spath("out/m.safetensors"), &err);
	ck_assert_msg(back != NULL, "%s", err.msg);
	/* the file holds the expanded graph: it loads with no blocks around */
	a = mc_model_arch(m);
	b = mc_model_arch(back);
	ck_assert_str_eq(a, b);
	ck_assert_int_eq(mc_model_n_nodes(back), 26);
	for (int i = 0; i < mc_model_n_nodes(m); i++) {
		const struct mc_node *x = mc_model_node(m, i), *y = mc_model_node(back, i);

		ck_assert_int_eq(x->n_params, y->n_params);
		for (int k = 0; k < x->n_params; k++) {
			const struct mc_tensor *t = mc_node_param(x, k), *u = mc_node_param(y, k);

			ck_assert_str_eq(t->name, u->name);
			ck_assert_int_eq(t->numel, u->numel);
			ck_assert_int_eq(t->dtype, MC_F32);
			ck_assert_msg(!memcmp(t->data, u->data, (size_t)t->numel * sizeof(float)),
				      "%s differs after loading", t->name);
		}
	}
	/* trained: the running mean of a batch norm moved from its zeros */
	for (int k = 0; k < 8; k++)
		nonzero |= ((const float *)mc_model_param(back, "s2.2.bn2.running_mean")->data)[k] != 0;
	ck_assert(nonzero);
	free(a);
	free(b);
	mc_model_free(back);
	mc_pipeline_free(p);
	tiny_teardown();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("blocks");
	TCase *tc = tcase_create("blocks");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, blocks_setup, NULL);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, expands_to_the_graph_written_by_hand);
	tcase_add_test(tc, expressions_compute_attributes);
	tcase_add_test(tc, a_block_model_trains_saves_and_loads);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
