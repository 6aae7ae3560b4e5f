// SPDX-License-Identifier: MIT
/*
 * check_onnx_torch.c - fidelity of the ONNX import against PyTorch: the MLP
 * and CNN that tests/fixtures/make_onnx.py trained on Fashion-MNIST and
 * exported with torch.onnx.export are imported, run on the test split, and
 * compared with what PyTorch computed (tests/fixtures/onnx/
 * torch_reference.json): the logits of the first samples to 1e-5, and the
 * number of correct predictions over the whole split exactly.
 *
 * Skips (exit 77) when the data set or the fixtures are missing.
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mcomp/data.h>
#include <mcomp/model.h>
#include <mcomp/onnx.h>

#define DATA "/usr/share/datasets/fashion-mnist/t10k"
#define TOL  1e-5

static char fixtures[4096];
static json_t *ref;
static struct mc_dataset *test_split;

static void check_model(const char *name)
{
	json_t *r = json_object_get(ref, name), *logits = json_object_get(r, "logits");
	struct mc_err err = {0};
	char path[4200];
	struct mc_model *m;
	struct mc_exec *e;
	int64_t correct = 0, n, classes, first;
	double worst = 0;

	ck_assert_msg(r && json_is_array(logits), "%s: no reference for '%s'", fixtures, name);
	/* loaded here, in the test's own process: OpenMP does not survive a fork */
	test_split = mc_idx_load_prefix(DATA, &err);
	ck_assert_msg(test_split != NULL, "%s", err.msg);
	n = test_split->n;
	snprintf(path, sizeof(path), "%s/%s", fixtures,
		 json_string_value(json_object_get(r, "onnx")));
	m = mc_model_from_onnx(path, &err);
	ck_assert_msg(m != NULL, "%s", err.msg);
	classes = mc_model_n_classes(m);
	ck_assert_int_eq(classes, 10);
	ck_assert_int_eq(mc_model_in_numel(m), test_split->sample_numel);
	ck_assert_int_eq(n, json_integer_value(json_object_get(r, "count")));
	first = (int64_t)json_array_size(logits);
	e = mc_exec_new(m, 500, 0, &err);
	ck_assert_msg(e != NULL, "%s", err.msg);
	for (int64_t s0 = 0; s0 < n; s0 += 500) {
		int b = (int)(n - s0 < 500 ? n - s0 : 500);
		const float *y = mc_forward(e, test_split->x + s0 * test_split->sample_numel, b);

		for (int s = 0; s < b; s++) {
			int64_t i = s0 + s;

			correct +=
			    mc_argmax(y + (int64_t)s * classes, (int)classes) == test_split->y[i];
			for (int c = 0; i < first && c < classes; c++) {
				double want = json_number_value(
				    json_array_get(json_array_get(logits, (size_t)i), (size_t)c));
				double d = fabs(y[s * classes + c] - want) / (1 + fabs(want));

				worst = d > worst ? d : worst;
			}
		}
	}
	printf("%s: %lld nodes; logits of %lld samples within %.2g of PyTorch's (relative); "
	       "%lld / %lld correct, PyTorch %lld\n",
	       name, (long long)mc_model_n_nodes(m), (long long)first, worst, (long long)correct,
	       (long long)n, (long long)json_integer_value(json_object_get(r, "correct")));
	ck_assert_msg(worst <= TOL, "%s: logits differ from PyTorch's by %g", name, worst);
	ck_assert_int_eq(correct, json_integer_value(json_object_get(r, "correct")));
	mc_exec_free(e);
	mc_model_free(m);
	mc_dataset_free(test_split);
}

START_TEST(mlp)
{
	check_model("mlp");
}
END_TEST

START_TEST(cnn)
{
	check_model("cnn");
}
END_TEST

int main(void)
{
	const char *src = getenv("MCOMP_SRCDIR");
	char path[4200];
	json_error_t je;
	SRunner *sr;
	Suite *s;
	TCase *tc;
	int failed;

	snprintf(fixtures, sizeof(fixtures), "%s/tests/fixtures/onnx", src ? src : ".");
	snprintf(path, sizeof(path), "%s/torch_reference.json", fixtures);
	if (access(path, R_OK) || access(DATA "-images-idx3-ubyte.gz", R_OK)) {
		printf("SKIP: needs %s and the Fashion-MNIST test split (%s-*; apt-get install "
		       "dataset-fashion-mnist)\n",
		       path, DATA);
		return 77;
	}
	ref = json_load_file(path, 0, &je);
	if (!ref) {
		fprintf(stderr, "%s:%d: %s\n", path, je.line, je.text);
		return 1;
	}
	s = suite_create("onnx_torch");
	tc = tcase_create("fidelity");
	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, mlp);
	tcase_add_test(tc, cnn);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	json_decref(ref);
	return failed ? 1 : 0;
}
