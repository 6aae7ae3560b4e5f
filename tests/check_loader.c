/* SPDX-License-Identifier: MIT */
/*
 * check_loader.c - the pass loader: the search path, the refusals (not a
 * shared object, no descriptor, wrong ABI, a repeated name), the real
 * passes' descriptors, and a fixture pass run by the host in a pipeline.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <mcomp/mcomp.h>

static char fixtures[4096], passes[4096];

static void fixture_path(char *buf, size_t n, const char *name)
{
	snprintf(buf, n, "%s/%s", fixtures, name);
}

START_TEST(good_pass_opens)
{
	struct mc_err err = { 0 };
	const struct mc_pass *p;
	char path[8192];
	void *h;

	fixture_path(path, sizeof(path), "fx_good.so");
	p = mc_pass_open(path, &h, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert_str_eq(p->name, "fxgood");
	ck_assert_int_eq(p->abi, MC_PASS_ABI);
	ck_assert_ptr_nonnull(mc_param_find(p->params, "factor"));
}
END_TEST

START_TEST(wrong_abi_refused)
{
	struct mc_err err = { 0 };
	char path[8192], want[64];
	void *h;

	fixture_path(path, sizeof(path), "fx_oldabi.so");
	ck_assert_ptr_null(mc_pass_open(path, &h, &err));
	ck_assert_int_eq(err.code, MC_EPLUGIN);
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	snprintf(want, sizeof(want), "pass ABI 999 should be %d", MC_PASS_ABI);
	ck_assert_msg(strstr(err.msg, want), "%s", err.msg);
}
END_TEST

START_TEST(no_descriptor_refused)
{
	struct mc_err err = { 0 };
	char path[8192];
	void *h;

	fixture_path(path, sizeof(path), "fx_nodesc.so");
	ck_assert_ptr_null(mc_pass_open(path, &h, &err));
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	ck_assert_msg(strstr(err.msg, "no mc_pass_descriptor()"), "%s", err.msg);
}
END_TEST

START_TEST(not_a_shared_object_refused)
{
	char dir[] = "/tmp/mcomp-loader-XXXXXX", path[4096];
	struct mc_err err = { 0 };
	FILE *f;
	void *h;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/bogus.so", dir);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs("this is text, not ELF\n", f);
	fclose(f);
	ck_assert_ptr_null(mc_pass_open(path, &h, &err));
	ck_assert_ptr_nonnull(strstr(err.msg, path));
	ck_assert_msg(strstr(err.msg, "not a loadable shared object"), "%s", err.msg);
	unlink(path);
	rmdir(dir);
}
END_TEST

START_TEST(registry_refuses_and_lists)
{
	struct mc_err err = { 0 };
	struct mc_registry *r;
	const char *path;
	int i, dup = 0, abi = 0, nodesc = 0;

	setenv("MCOMP_PASS_PATH", fixtures, 1);
	r = mc_registry_open(&err);
	ck_assert_msg(r != NULL, "%s", err.msg);
	ck_assert_ptr_nonnull(mc_registry_find(r, "fxgood", &path));
	ck_assert_ptr_nonnull(strstr(path, "fx_"));
	ck_assert_ptr_null(mc_registry_find(r, "fxold", NULL));
	for (i = 0; i < mc_registry_nrefused(r); i++) {
		const char *msg = mc_registry_refused(r, i);

		dup += strstr(msg, "is already provided by") != NULL;
		abi += strstr(msg, "should be") != NULL;
		nodesc += strstr(msg, "no mc_pass_descriptor()") != NULL;
	}
	ck_assert_int_eq(dup, 1);
	ck_assert_int_eq(abi, 1);
	ck_assert_int_eq(nodesc, 1);
	mc_registry_free(r);
}
END_TEST

START_TEST(path_order_first_wins)
{
	struct mc_err err = { 0 };
	struct mc_registry *r;
	char env[8192];
	const char *path;

	/* The same folder twice is one folder: nothing is refused as a duplicate. */
	snprintf(env, sizeof(env), "%s:%s", passes, passes);
	setenv("MCOMP_PASS_PATH", env, 1);
	r = mc_registry_open(&err);
	ck_assert_msg(r != NULL, "%s", err.msg);
	ck_assert_ptr_nonnull(mc_registry_find(r, "train", &path));
	ck_assert_ptr_nonnull(mc_registry_find(r, "eval", NULL));
	ck_assert_int_eq(mc_registry_nrefused(r), 0);
	ck_assert_ptr_nonnull(strstr(mc_pass_path(), passes));
	mc_registry_free(r);
}
END_TEST

START_TEST(real_passes_describe_themselves)
{
	static const char *const names[] = { "train", "eval" };
	struct mc_err err = { 0 };
	struct mc_registry *r;
	unsigned i;

	setenv("MCOMP_PASS_PATH", passes, 1);
	r = mc_registry_open(&err);
	ck_assert_msg(r != NULL, "%s", err.msg);
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct mc_pass *p = mc_registry_find(r, names[i], NULL);
		const struct mc_param_def *d;

		ck_assert_msg(p != NULL, "pass %s not found in %s", names[i], passes);
		ck_assert_ptr_nonnull(p->description);
		ck_assert_ptr_nonnull(p->license);
		ck_assert_ptr_nonnull(p->author);
		for (d = p->params; d->name; d++)
			ck_assert_msg(d->help && *d->help, "%s.%s has no help", p->name, d->name);
	}
	ck_assert_ptr_nonnull(mc_param_find(mc_registry_find(r, "train", NULL)->params, "epochs"));
	mc_registry_free(r);
}
END_TEST

/* The host runs a fixture pass: every parameter doubles, and the output
 * model file holds the doubled values. */
START_TEST(host_runs_fixture_pass)
{
	char dir[] = "/tmp/mcomp-host-XXXXXX", yaml[4096], out[4096];
	struct mc_err err = { 0 };
	struct mc_registry *r;
	struct mc_pipeline *p;
	struct mc_model *before, *after;
	char env[8192];
	FILE *f;
	int i, k;

	snprintf(env, sizeof(env), "%s:%s", passes, fixtures);
	setenv("MCOMP_PASS_PATH", env, 1);
	r = mc_registry_open(&err);
	ck_assert_msg(r != NULL, "%s", err.msg);
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(yaml, sizeof(yaml), "%s/p.yaml", dir);
	snprintf(out, sizeof(out), "%s/out/m.safetensors", dir);
	f = fopen(yaml, "w");
	ck_assert_ptr_nonnull(f);
	fputs("mcomp: 1\nseed: 3\nmodels:\n  m:\n    build:\n      input: [4]\n"
	      "      layers: [{linear: 3}, relu, {linear: 2}]\n"
	      "passes:\n  - fxgood: {model: m, factor: 2}\n"
	      "output: {model: m, path: out/m.safetensors}\nreport: out/r.json\n",
	      f);
	fclose(f);
	p = mc_pipeline_load(yaml, NULL, 0, r, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_pipeline_run(p, NULL, &err), 0);
	mc_pipeline_free(p);

	before = mc_model_from_arch(
		"{\"format\":1,\"input\":[4],\"nodes\":["
		"{\"name\":\"linear1\",\"op\":\"linear\",\"inputs\":[\"input\"],\"attrs\":{\"out\":3}},"
		"{\"name\":\"relu1\",\"op\":\"relu\",\"inputs\":[\"linear1\"],\"attrs\":{}},"
		"{\"name\":\"linear2\",\"op\":\"linear\",\"inputs\":[\"relu1\"],\"attrs\":{\"out\":2}}]}",
		"test", &err);
	ck_assert_msg(before != NULL, "%s", err.msg);
	mc_model_init(before, 3);
	after = mc_model_load(out, &err);
	ck_assert_msg(after != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_model_n_nodes(after), mc_model_n_nodes(before));
	for (i = 0; i < mc_model_n_nodes(before); i++)
		for (k = 0; k < mc_model_node(before, i)->n_params; k++) {
			const struct mc_tensor *a = mc_model_node(before, i)->params[k];
			const struct mc_tensor *b = mc_model_node(after, i)->params[k];
			int64_t j;

			ck_assert_int_eq(a->numel, b->numel);
			for (j = 0; j < a->numel; j++)
				ck_assert_float_eq(2 * ((float *)a->data)[j], ((float *)b->data)[j]);
		}
	mc_model_free(before);
	mc_model_free(after);
	snprintf(out, sizeof(out), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(out), 0);
	mc_registry_free(r);
}
END_TEST

int main(void)
{
	const char *fx = getenv("MCOMP_FIXTURES"), *pp = getenv("MCOMP_PASS_PATH");
	Suite *s = suite_create("loader");
	TCase *tc = tcase_create("loader");
	SRunner *sr;
	int failed;

	if (!fx || !pp) {
		fprintf(stderr, "check_loader: run through `make check` (MCOMP_FIXTURES and "
				"MCOMP_PASS_PATH unset)\n");
		return 99;
	}
	snprintf(fixtures, sizeof(fixtures), "%s", fx);
	snprintf(passes, sizeof(passes), "%s", pp);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, good_pass_opens);
	tcase_add_test(tc, wrong_abi_refused);
	tcase_add_test(tc, no_descriptor_refused);
	tcase_add_test(tc, not_a_shared_object_refused);
	tcase_add_test(tc, registry_refuses_and_lists);
	tcase_add_test(tc, path_order_first_wins);
	tcase_add_test(tc, real_passes_describe_themselves);
	tcase_add_test(tc, host_runs_fixture_pass);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
