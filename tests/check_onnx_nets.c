// SPDX-License-Identifier: MIT
/*
 * check_onnx_nets.c - the ONNX import on CNNs as PyTorch exports them
 * (tests/fixtures/make_onnx_nets.py, opsets 11 and 13): a ResNet of basic
 * blocks ending in x.view(x.size(0), -1), a MobileNetV2-style net of ReLU6,
 * depthwise convolutions, squeeze-excitation gates and hardswish written
 * out in torch ops, and a net of asymmetric F.pad before stride-2 Convs.
 * Each is imported and run on the fixed inputs; its logits must be
 * PyTorch's to 1e-5 (absolute). The same files edited in memory check
 * auto_pad SAME_UPPER at stride 2, weights from Constant nodes, and the
 * refusals (node, op type, opset named).
 *
 * Skips (exit 77) when the fixtures are missing.
 */
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mcomp/model.h>
#include <mcomp/onnx.h>

#include "core/io/onnx.pb-c.h"

#define TOL 1e-5

static char fixtures[4096];

/* ---------------------------------------------------------------- files */

static void *slurp(const char *name, size_t *len)
{
	char path[4300];
	FILE *f;
	void *buf;
	long n;

	snprintf(path, sizeof(path), "%s/%s", fixtures, name);
	f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	((char *)buf)[n] = 0; /* the .npy readers below use string functions on the header */
	*len = (size_t)n;
	return buf;
}

/* A float32 .npy of C order (as numpy.save writes it): its values, their count. */
static float *npy(const char *name, int64_t *count)
{
	size_t len, hl;
	uint8_t *b = slurp(name, &len);
	const char *h, *p;
	float *out;

	ck_assert_msg(len > 10 && !memcmp(b, "\x93NUMPY", 6), "%s: not a .npy", name);
	hl = b[6] == 1 ? (size_t)(b[8] | b[9] << 8) : (size_t)(b[8] | b[9] << 8 | b[10] << 16);
	h = (const char *)b + (b[6] == 1 ? 10 : 12);
	ck_assert_msg(strstr(h, "'<f4'") && strstr(h, "'fortran_order': False"),
		      "%s: not C-order float32", name);
	p = strstr(h, "'shape': (");
	ck_assert_ptr_nonnull(p);
	*count = 1;
	for (p += 10; *p != ')';) {
		char *end;

		*count *= strtoll(p, &end, 10);
		p = end;
		while (*p == ',' || *p == ' ')
			p++;
	}
	ck_assert_uint_eq(len - (size_t)(h - (const char *)b) - hl, (size_t)*count * 4);
	out = malloc((size_t)*count * sizeof(float));
	memcpy(out, h + hl, (size_t)*count * sizeof(float));
	free(b);
	return out;
}

/* ---------------------------------------------------------------- running */

/* Runs m on the fixture inputs; the largest difference from NAME-logits.npy. */
static double worst_diff(const struct mc_model *m, const char *net)
{
	struct mc_err err = {0};
	int64_t nx, ny;
	float *x = npy("nets-input.npy", &nx);
	char name[64];
	float *want;
	struct mc_exec *e;
	const float *y;
	double worst = 0;

	snprintf(name, sizeof(name), "%s-logits.npy", net);
	want = npy(name, &ny);
	ck_assert_int_eq(nx, 4 * mc_model_in_numel(m));
	ck_assert_int_eq(ny, 4 * mc_model_n_classes(m));
	e = mc_exec_new(m, 4, 0, &err);
	ck_assert_msg(e != NULL, "%s", err.msg);
	y = mc_forward(e, x, 4);
	for (int64_t i = 0; i < ny; i++)
		worst = fmax(worst, fabs((double)y[i] - want[i]));
	mc_exec_free(e);
	free(x);
	free(want);
	return worst;
}

static int count_op(const struct mc_model *m, const char *op)
{
	int c = 0;

	for (int i = 0; i < mc_model_n_nodes(m); i++)
		c += !strcmp(mc_model_node(m, i)->op->name, op);
	return c;
}

static const char *const nets[] = {"resnet", "mobile", "padnet"};

/* Every fixture, each opset: PyTorch's logits, and the ops expected. */
START_TEST(fixture_logits)
{
	const char *net = nets[_i / 2];
	int opset = _i % 2 ? 13 : 11;
	struct mc_err err = {0};
	char path[4300];
	struct mc_model *m;
	double worst;

	snprintf(path, sizeof(path), "%s/%s-opset%d.onnx", fixtures, net, opset);
	m = mc_model_from_onnx(path, &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	worst = worst_diff(m, net);
	printf("%s-opset%d: %d nodes, logits within %.2g of PyTorch's\n", net, opset,
	       mc_model_n_nodes(m), worst);
	ck_assert_msg(worst <= TOL, "%s: logits differ from PyTorch's by %g", path, worst);
	if (!strcmp(net, "resnet")) {
		/* the shape subgraph and the Add/Sub/Div of constants leave no node */
		ck_assert_int_eq(mc_model_n_nodes(m), 15);
		ck_assert_int_eq(count_op(m, "add"), 2);
		ck_assert_int_eq(mc_node_attr_int(mc_model_node(m, 0), "bias", 0), 1);
	} else if (!strcmp(net, "mobile")) {
		/* x * relu6(x + 3) / 6 and nn.Hardswish; relu6(x + 3) / 6 and nn.Hardsigmoid */
		ck_assert_int_eq(count_op(m, "hardswish"), 4);
		ck_assert_int_eq(count_op(m, "hardsigmoid"), 3);
		ck_assert_int_eq(count_op(m, "mul"), 3);
	} else {
		ck_assert_int_eq(count_op(m, "pad2d"), 3);
		ck_assert_int_eq(count_op(m, "conv2d"), 2);
	}
	mc_model_free(m);
}
END_TEST

/* ---------------------------------------------------------------- edited files */

static Onnx__ModelProto *load_proto(const char *name)
{
	size_t len;
	void *buf = slurp(name, &len);
	Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);

	ck_assert_ptr_nonnull(mp);
	free(buf);
	return mp;
}

static Onnx__NodeProto *find_node(Onnx__ModelProto *mp, const char *name)
{
	for (size_t i = 0; i < mp->graph->n_node; i++)
		if (!strcmp(mp->graph->node[i]->name, name))
			return mp->graph->node[i];
	ck_abort_msg("no node %s", name);
	return NULL;
}

/* The model of the edited mp, or NULL with err set. */
static struct mc_model *import_proto(Onnx__ModelProto *mp, struct mc_err *err)
{
	size_t len = onnx__model_proto__get_packed_size(mp);
	uint8_t *buf = malloc(len);
	struct mc_model *m;

	ck_assert_uint_eq(onnx__model_proto__pack(mp, buf), len);
	m = mc_model_from_onnx_buf(buf, len, "edited.onnx", err);
	free(buf);
	return m;
}

/*
 * padnet's first F.pad (0, 1, 0, 1) and stride-2 Conv as TensorFlow
 * exports 'SAME': the Conv reads the image with auto_pad SAME_UPPER; its
 * second as uneven pads of the Conv itself (tf2onnx's way).
 */
START_TEST(same_upper_stride2)
{
	Onnx__ModelProto *mp = load_proto("padnet-opset13.onnx");
	Onnx__NodeProto *conv = find_node(mp, "/c1/Conv"), *c1 = conv, *c2;
	Onnx__AttributeProto ap = ONNX__ATTRIBUTE_PROTO__INIT, *pads1 = NULL;
	struct mc_err err = {0};
	struct mc_model *m;
	char *in1 = c1->input[0], *in2;
	size_t pads1_at = 0;
	double worst;

	conv->input[0] = find_node(mp, "/Pad")->input[0];
	for (size_t a = 0; a < conv->n_attribute; a++)
		if (!strcmp(conv->attribute[a]->name, "pads")) {
			pads1 = conv->attribute[a];
			pads1_at = a;
			ap.name = "auto_pad";
			ap.has_type = 1;
			ap.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING;
			ap.has_s = 1;
			ap.s.data = (uint8_t *)"SAME_UPPER";
			ap.s.len = 10;
			conv->attribute[a] = &ap;
		}
	/* and the second F.pad (1, 2, 0, 1) as the Conv's own pads [0, 1, 1, 2] */
	conv = c2 = find_node(mp, "/c2/Conv");
	in2 = c2->input[0];
	conv->input[0] = find_node(mp, "/Pad_1")->input[0];
	for (size_t a = 0; a < conv->n_attribute; a++)
		if (!strcmp(conv->attribute[a]->name, "pads")) {
			ck_assert_uint_eq(conv->attribute[a]->n_ints, 4);
			memcpy(conv->attribute[a]->ints, (int64_t[]){0, 1, 1, 2},
			       4 * sizeof(int64_t));
		}
	m = import_proto(mp, &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	ck_assert_int_eq(count_op(m, "pad2d"), 3);
	ck_assert_str_eq(mc_model_node(m, 0)->op->name, "pad2d");
	ck_assert_int_eq(mc_node_attr_int(mc_model_node(m, 0), "top", 9), 0);
	ck_assert_int_eq(mc_node_attr_int(mc_model_node(m, 0), "bottom", 9), 1);
	worst = worst_diff(m, "padnet");
	ck_assert_msg(worst <= TOL, "logits differ from PyTorch's by %g", worst);
	mc_model_free(m);
	/* the file's own strings and attribute back, to free it all */
	c1->input[0] = in1;
	c2->input[0] = in2;
	if (pads1)
		c1->attribute[pads1_at] = pads1;
	onnx__model_proto__free_unpacked(mp, NULL);
}
END_TEST

/* fc.weight from a Constant node (listed last) instead of an initializer. */
START_TEST(constant_node_weights)
{
	Onnx__ModelProto *mp = load_proto("resnet-opset13.onnx");
	Onnx__GraphProto *g = mp->graph;
	Onnx__NodeProto cn = ONNX__NODE_PROTO__INIT, **nodes, **own_nodes = g->node;
	Onnx__TensorProto **own_inits = malloc(g->n_initializer * sizeof(*own_inits));
	size_t n_own_inits = g->n_initializer;
	Onnx__AttributeProto val = ONNX__ATTRIBUTE_PROTO__INIT, *attrs[1] = {&val};
	char *outs[1] = {"fc.weight"};
	struct mc_err err = {0};
	struct mc_model *m;
	size_t w = 0;

	ck_assert_ptr_nonnull(own_inits);
	memcpy(own_inits, g->initializer, n_own_inits * sizeof(*own_inits));
	for (size_t j = 0; j < g->n_initializer; j++)
		if (!strcmp(g->initializer[j]->name, "fc.weight"))
			val.t = g->initializer[j];
		else
			g->initializer[w++] = g->initializer[j];
	ck_assert_ptr_nonnull(val.t);
	g->n_initializer = w;
	val.name = "value";
	val.has_type = 1;
	val.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR;
	cn.name = "fc_weight_const";
	cn.op_type = "Constant";
	cn.n_output = 1;
	cn.output = outs;
	cn.n_attribute = 1;
	cn.attribute = attrs;
	nodes = malloc((g->n_node + 1) * sizeof(*nodes));
	memcpy(nodes, g->node, g->n_node * sizeof(*nodes));
	nodes[g->n_node] = &cn;
	g->node = nodes;
	g->n_node++;
	m = import_proto(mp, &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	ck_assert_msg(worst_diff(m, "resnet") <= TOL, "logits differ");
	mc_model_free(m);
	/* the file's own nodes and initializers back, to free it all */
	free(nodes);
	g->node = own_nodes;
	g->n_node--;
	memcpy(g->initializer, own_inits, n_own_inits * sizeof(*own_inits));
	g->n_initializer = n_own_inits;
	free(own_inits);
	onnx__model_proto__free_unpacked(mp, NULL);
}
END_TEST

/* What mcomp cannot compute is refused naming the node, its op type and the opset. */
START_TEST(refusals)
{
	static const struct {
		const char *file, *node, *op, *want[2];
	} cases[] = {
	    /* the residual join as a Sub of two computed values */
	    {"resnet-opset13.onnx",
	     "/b1/Add",
	     "Sub",
	     {"node '/b1/Add' (Sub, opset 13)", "of two computed values"}},
	    {"resnet-opset11.onnx",
	     "/b2/Relu_1",
	     "Erf",
	     {"node '/b2/Relu_1' (Erf, opset 11)", "mcomp has no op for Erf"}},
	    /* a hardswish's x + 3 read before the clip: the constant cannot fold */
	    {"mobile-opset13.onnx",
	     "/b2/Relu",
	     "Sigmoid",
	     {"node '/b2/Add' (Add, opset 13)", "applies the constant"}},
	};

	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		Onnx__ModelProto *mp = load_proto(cases[c].file);
		Onnx__NodeProto *nd = find_node(mp, cases[c].node);
		char *own_op = nd->op_type;
		struct mc_err err = {0};

		nd->op_type = (char *)cases[c].op;
		ck_assert_ptr_null(import_proto(mp, &err));
		nd->op_type = own_op; /* the file's own, to free it all */
		onnx__model_proto__free_unpacked(mp, NULL);
		ck_assert_int_eq(err.code, MC_EINVAL);
		for (int k = 0; k < 2; k++)
			ck_assert_msg(strstr(err.msg, cases[c].want[k]), "no '%s' in: %s",
				      cases[c].want[k], err.msg);
	}
}
END_TEST

int main(void)
{
	const char *src = getenv("MCOMP_SRCDIR");
	char path[4300];
	SRunner *sr;
	Suite *s;
	TCase *tc;
	int failed;

	snprintf(fixtures, sizeof(fixtures), "%s/tests/fixtures/onnx", src ? src : ".");
	snprintf(path, sizeof(path), "%s/padnet-logits.npy", fixtures);
	if (access(path, R_OK)) {
		printf("SKIP: needs the fixtures of tests/fixtures/make_onnx_nets.py (%s)\n", path);
		return 77;
	}
	s = suite_create("onnx_nets");
	tc = tcase_create("nets");
	tcase_add_loop_test(tc, fixture_logits, 0, 6);
	tcase_add_test(tc, same_upper_stride2);
	tcase_add_test(tc, constant_node_weights);
	tcase_add_test(tc, refusals);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
