/* SPDX-License-Identifier: MIT */
/*
 * check_loader.c - the pass loader: the search path, the refusals (not a
 * shared object, no descriptor, wrong ABI, a repeated name), the real
 * passes' descriptors, and a fixture pass run by the host in a pipeline.
 *
 * Hostile passes (a FIFO named x.so, foreign ELF files, loose modes, bad
 * names and texts, broken parameter tables, a shipped pass's name, a huge
 * MCOMP_PASS_PATH) are compiled here at test time with $CC from small C
 * sources: each gives a message naming the file and the fault, never a
 * crash or a hang (the hostile test case has a short timeout).
 */
#define _GNU_SOURCE
#include <check.h>
#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <mcomp/mcomp.h>

#include "scratch_dir.h"

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

/* ---------------------------------------------------------------- hostile passes */

static char srcdir[4096];

/*
 * What every hostile source starts with: a config struct, a run operation,
 * and DESCRIBE(name, description, params) for a descriptor of these.
 */
static const char pass_head[] =
	"#include <mcomp/mcomp.h>\n"
	"#include <stdint.h>\n"
	"#include <sys/mman.h>\n"
	"struct conf { char *model; int k; double f; int many[300]; };\n"
	"static int run(struct mc_ctx *ctx, const void *conf)\n"
	"{ (void)ctx; (void)conf; return 0; }\n"
	"#define DESCRIBE(nm, desc, table) static const struct mc_pass pass = {\\\n"
	".abi = MC_PASS_ABI, .name = nm, .version = \"1.0\", .description = desc,\\\n"
	".license = \"MIT\", .author = \"tests\", .conf_size = sizeof(struct conf),\\\n"
	".params = table, .run = run }; MC_PASS_DEFINE(pass)\n"
	"static const struct mc_param_def ok_params[] = {\n"
	"MC_PARAM_MODEL(struct conf, model, NULL, \"the model\"),\n"
	"MC_PARAM_INT(struct conf, k, \"1\", 0, 9, \"a number\"), MC_PARAM_END };\n";

/* Compiles pass_head + body into tmpdir/file (a .so); its path into out. */
static void build_pass(const char *file, const char *body, char *out, size_t n)
{
	const char *cc = getenv("CC") && *getenv("CC") ? getenv("CC") : "cc";
	char src[4200], cmd[16384];
	FILE *f;

	snprintf(src, sizeof(src), "%s/%s.c", tmpdir, file);
	snprintf(out, n, "%s/%s", tmpdir, file);
	f = fopen(src, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "%s%s\n", pass_head, body);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "%s -std=gnu11 -w -shared -fPIC -I'%s/include' -o '%s' '%s'", cc,
		 srcdir, out, src);
	ck_assert_msg(system(cmd) == 0, "cannot build a test pass: %s", cmd);
	unlink(src);
}

/* mc_pass_open refuses path with a message naming the file and holding want. */
static void assert_refused(const char *path, const char *want)
{
	struct mc_err err = { 0 };
	void *h;

	ck_assert_ptr_null(mc_pass_open(path, &h, &err));
	ck_assert_int_eq(err.code, MC_EPLUGIN);
	ck_assert_msg(strstr(err.msg, path), "message does not name %s: %s", path, err.msg);
	ck_assert_msg(strstr(err.msg, want), "message lacks '%s': %s", want, err.msg);
	ck_assert_msg(!strchr(err.msg, '\033'), "a raw escape reached the message");
	if (getenv("MCOMP_SHOW_REFUSALS")) /* to read every message: make check ... */
		fprintf(stderr, "%s\n", err.msg);
}

/* The refusal of the registry on MCOMP_PASS_PATH=dir that holds want (and names file). */
static const char *registry_refusal(struct mc_registry *r, const char *file, const char *want)
{
	for (int i = 0; i < mc_registry_nrefused(r); i++) {
		const char *m = mc_registry_refused(r, i);

		ck_assert_msg(!strchr(m, '\033'), "a raw escape reached a refusal: %s", m);
		if (strstr(m, want) && strstr(m, file))
			return m;
	}
	return NULL;
}

static void hostile_setup(void)
{
	scratch_make("loader");
	(void)tpath; /* scratch_dir.h's, not needed here */
	unsetenv("MCOMP_PASS_INSECURE");
}

START_TEST(fifo_and_devices_do_not_hang)
{
	struct mc_err err = { 0 };
	struct mc_registry *r;
	char path[4200], dir[256];

	snprintf(dir, sizeof(dir), "%s/fifo", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/x.so", dir);
	ck_assert_int_eq(mkfifo(path, 0644), 0);
	assert_refused(path, "not a regular file (a FIFO)");
	assert_refused("/dev/null", "not a regular file (a device)");
	/* A folder named like a pass is not opened either. */
	snprintf(path, sizeof(path), "%s/d.so", dir);
	ck_assert_int_eq(mkdir(path, 0755), 0);
	assert_refused(path, "not a regular file (a folder)");
	/* The whole path scanned with the FIFO on it: refused, no hang. */
	setenv("MCOMP_PASS_PATH", dir, 1);
	r = mc_registry_open(&err);
	ck_assert_msg(r != NULL, "%s", err.msg);
	ck_assert_ptr_nonnull(registry_refusal(r, "/x.so", "a FIFO"));
	ck_assert_ptr_nonnull(registry_refusal(r, "/d.so", "a folder"));
	mc_registry_free(r);
}
END_TEST

START_TEST(foreign_elf_files_refused)
{
	char path[4200], other[4200], cmd[9000];
	unsigned char machine[2];
	int fd, want;

	/* No ELF header. */
	snprintf(path, sizeof(path), "%s/text.so", tmpdir);
	fd = open(path, O_WRONLY | O_CREAT, 0644);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "\177ELF", 4), 4); /* the magic, then nothing */
	close(fd);
	assert_refused(path, "does not start with an ELF header");
	/* A shared object for another machine: a good pass with e_machine changed. */
	build_pass("arm.so", "DESCRIBE(\"armpass\", \"d\", ok_params);", path, sizeof(path));
	fd = open(path, O_RDWR);
	ck_assert_int_eq(pread(fd, machine, 2, offsetof(Elf64_Ehdr, e_machine)), 2);
	want = machine[0] == EM_S390 ? EM_X86_64 : EM_S390; /* little-endian hosts */
	machine[0] = (unsigned char)want;
	machine[1] = 0;
	ck_assert_int_eq(pwrite(fd, machine, 2, offsetof(Elf64_Ehdr, e_machine)), 2);
	close(fd);
	snprintf(cmd, sizeof(cmd), "machine %d, where this mcomp is", want);
	assert_refused(path, cmd);
	/* An executable, not a shared object. */
	snprintf(other, sizeof(other), "%s/exe.so", tmpdir);
	snprintf(cmd, sizeof(cmd), "printf 'int main(void){return 0;}' > '%s/m.c' && %s -no-pie "
		 "-o '%s' '%s/m.c'", tmpdir, getenv("CC") ? getenv("CC") : "cc", other, tmpdir);
	if (system(cmd) == 0)
		assert_refused(other, "not a shared object");
	/* A shared object with no entry point, and one whose entry is data. */
	build_pass("none.so", "int helper(void) { return 1; }", path, sizeof(path));
	assert_refused(path, "no mc_pass_descriptor() in this shared object");
	build_pass("data.so", "MC_API const int mc_pass_descriptor = 1;", path, sizeof(path));
	assert_refused(path, "not an exported, defined function");
	/* An ELF shared object the dynamic linker refuses: its own words, the file's name. */
	build_pass("undef.so", "extern int mc_no_such_symbol(void);\n"
		   "int use(void) { return mc_no_such_symbol(); }\n"
		   "DESCRIBE(\"undefpass\", \"d\", ok_params);", path, sizeof(path));
	assert_refused(path, "not a loadable shared object (undefined symbol: mc_no_such_symbol)");
	/* The descriptor pointer, and the table, outside the pass's memory. */
	build_pass("wild.so", "MC_API const struct mc_pass *mc_pass_descriptor(void)\n"
		   "{ return (const struct mc_pass *)(uintptr_t)0x1000; }", path, sizeof(path));
	assert_refused(path, "returned a pointer outside the pass's memory");
}
END_TEST

START_TEST(loose_modes_refused)
{
	struct mc_err err = { 0 };
	struct mc_registry *r;
	char dir[256], path[4200], good[4200];
	const char *m;
	void *h;

	build_pass("p.so", "DESCRIBE(\"loosepass\", \"d\", ok_params);", good, sizeof(good));
	snprintf(dir, sizeof(dir), "%s/open", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	snprintf(path, sizeof(path), "%s/p.so", dir);
	ck_assert_int_eq(rename(good, path), 0);
	/* A world-writable file. */
	ck_assert_int_eq(chmod(path, 0666), 0);
	assert_refused(path, "the file");
	assert_refused(path, "is world-writable (mode 0666)");
	assert_refused(path, "chmod o-w");
	setenv("MCOMP_PASS_INSECURE", "1", 1);
	ck_assert_msg(mc_pass_open(path, &h, &err) != NULL, "%s", err.msg);
	unsetenv("MCOMP_PASS_INSECURE");
	ck_assert_int_eq(chmod(path, 0644), 0);
	/* A world-writable folder: refused once, for the folder, on the path too. */
	ck_assert_int_eq(chmod(dir, 0777), 0);
	assert_refused(path, "its folder");
	setenv("MCOMP_PASS_PATH", dir, 1);
	r = mc_registry_open(&err);
	ck_assert_msg(r != NULL, "%s", err.msg);
	ck_assert_ptr_null(mc_registry_find(r, "loosepass", NULL));
	m = registry_refusal(r, dir, "is world-writable (mode 0777)");
	ck_assert_msg(m && strstr(m, "chmod o-w"), "no refusal of the folder: %s",
		      mc_registry_nrefused(r) ? mc_registry_refused(r, 0) : "(none)");
	mc_registry_free(r);
	/* Sticky (like /tmp) does not help the folder passes lie in. */
	ck_assert_int_eq(chmod(dir, 01777), 0);
	assert_refused(path, "world-writable (mode 1777)");
	/* With the override, the same path loads. */
	setenv("MCOMP_PASS_INSECURE", "1", 1);
	r = mc_registry_open(&err);
	ck_assert_msg(r != NULL, "%s", err.msg);
	ck_assert_ptr_nonnull(mc_registry_find(r, "loosepass", NULL));
	mc_registry_free(r);
	unsetenv("MCOMP_PASS_INSECURE");
	ck_assert_int_eq(chmod(dir, 0755), 0);
	/* Group-writable: refused when another user owns it (needs root to set up). */
	if (geteuid() == 0) {
		ck_assert_int_eq(chmod(path, 0664), 0);
		ck_assert_msg(mc_pass_open(path, &h, &err) != NULL, "%s", err.msg);
		ck_assert_int_eq(chown(path, 4242, 4242), 0);
		assert_refused(path, "group-writable and owned by another user");
		assert_refused(path, "chmod g-w");
	}
}
END_TEST

START_TEST(bad_names_and_texts_refused)
{
	char path[4200], body[1024];

	build_pass("esc.so", "DESCRIBE(\"x\\033[2J\\nfxgood\", \"d\", ok_params);", path,
		   sizeof(path));
	assert_refused(path, "holds control characters");
	assert_refused(path, "\\x1b[2J");
	build_pass("upper.so", "DESCRIBE(\"Evil\", \"d\", ok_params);", path, sizeof(path));
	assert_refused(path, "pass name 'Evil' is not usable");
	assert_refused(path, "a-z, 0-9, '_' and '-'");
	build_pass("dash.so", "DESCRIBE(\"-x\", \"d\", ok_params);", path, sizeof(path));
	assert_refused(path, "is not usable");
	snprintf(body, sizeof(body), "DESCRIBE(\"%0100d\", \"d\", ok_params);", 7);
	build_pass("long.so", body, path, sizeof(path));
	assert_refused(path, "name is too long");
	build_pass("empty.so", "DESCRIBE(\"\", \"d\", ok_params);", path, sizeof(path));
	assert_refused(path, "is not usable");
	/* Other texts that `mcomp passes` and pass-info print. */
	build_pass("desc.so", "DESCRIBE(\"descpass\", \"fine\\r\\033[1A\\033[2Kforged\", "
		   "ok_params);", path, sizeof(path));
	assert_refused(path, "description");
	assert_refused(path, "control characters");
	build_pass("c1.so", "DESCRIBE(\"c1pass\", \"csi \\xc2\\x9b 31m\", ok_params);", path,
		   sizeof(path));
	assert_refused(path, "not UTF-8");
	build_pass("help.so",
		   "static const struct mc_param_def t[] = {\n"
		   "MC_PARAM_INT(struct conf, k, \"1\", 0, 9, \"a\\033]0;title\\007\"),\n"
		   "MC_PARAM_END };\n"
		   "DESCRIBE(\"helppass\", \"d\", t);", path, sizeof(path));
	assert_refused(path, "parameter 'k': the help text holds control characters");
	build_pass("pname.so",
		   "static const struct mc_param_def t[] = {\n"
		   "MC_PARAM_AT(\"Big\", MC_PARAM_TINT, MC_PARAM_TINT, "
		   "8, \"1\", 0, 9, NULL, \"h\"),\n"
		   "MC_PARAM_END };\n"
		   "DESCRIBE(\"pnamepass\", \"d\", t);", path, sizeof(path));
	assert_refused(path, "parameter 1 is named 'Big'");
}
END_TEST

START_TEST(broken_tables_refused)
{
	char path[4200];

	build_pass("past.so",
		   "static const struct mc_param_def t[] = {\n"
		   "MC_PARAM_AT(\"f\", MC_PARAM_TFLOAT, MC_PARAM_TFLOAT, sizeof(struct conf) - 4,\n"
		   "    \"1\", 0, 0, NULL, \"h\"),\n"
		   "MC_PARAM_END };\n"
		   "DESCRIBE(\"pastpass\", \"d\", t);", path, sizeof(path));
	assert_refused(path, "parameter 'f' (float, 8 bytes at offset");
	assert_refused(path, "lies past the end of the");
	build_pass("huge.so",
		   "static const struct mc_param_def t[] = {\n"
		   "MC_PARAM_AT(\"f\", MC_PARAM_TINT, MC_PARAM_TINT, (size_t)-2, \"1\", 0, 0,\n"
		   "    NULL, \"h\"),\n"
		   "MC_PARAM_END };\n"
		   "DESCRIBE(\"hugepass\", \"d\", t);", path, sizeof(path));
	assert_refused(path, "lies past the end of the");
	build_pass("align.so",
		   "static const struct mc_param_def t[] = {\n"
		   "MC_PARAM_AT(\"f\", MC_PARAM_TFLOAT, MC_PARAM_TFLOAT, "
		   "12, \"1\", 0, 0, NULL, \"h\"),\n"
		   "MC_PARAM_END };\n"
		   "DESCRIBE(\"alignpass\", \"d\", t);", path, sizeof(path));
	assert_refused(path, "parameter 'f' (float) at offset 12 is not aligned to 8 bytes");
	build_pass("dup.so",
		   "static const struct mc_param_def t[] = {\n"
		   "MC_PARAM_INT(struct conf, k, \"1\", 0, 9, \"a\"),\n"
		   "MC_PARAM_AT(\"k\", MC_PARAM_TINT, MC_PARAM_TINT, "
		   "24, \"1\", 0, 9, NULL, \"h\"),\n"
		   "MC_PARAM_END };\n"
		   "DESCRIBE(\"duppass\", \"d\", t);", path, sizeof(path));
	assert_refused(path, "parameter 'k' is declared twice");
	build_pass("overlap.so",
		   "static const struct mc_param_def t[] = {\n"
		   "MC_PARAM_STRING(struct conf, model, NULL, \"a\"),\n"
		   "MC_PARAM_AT(\"alias\", MC_PARAM_TSTRING, MC_PARAM_TSTRING, "
		   "4, NULL, 0, 0, NULL,\n"
		   "    \"h\"),\n"
		   "MC_PARAM_END };\n"
		   "DESCRIBE(\"overlappass\", \"d\", t);", path, sizeof(path));
	assert_refused(path, "not aligned");
	build_pass("share.so",
		   "static const struct mc_param_def t[] = {\n"
		   "MC_PARAM_STRING(struct conf, model, NULL, \"a\"),\n"
		   "MC_PARAM_AT(\"alias\", MC_PARAM_TSTRING, MC_PARAM_TSTRING, "
		   "0, NULL, 0, 0, NULL,\n"
		   "    \"h\"),\n"
		   "MC_PARAM_END };\n"
		   "DESCRIBE(\"sharepass\", \"d\", t);", path, sizeof(path));
	assert_refused(path, "share bytes of the config struct");
	build_pass("type.so",
		   "static const struct mc_param_def t[] = {\n"
		   "MC_PARAM_AT(\"k\", (enum mc_param_type)77, "
		   "MC_PARAM_TINT, 8, \"1\", 0, 9, NULL,\n"
		   "    \"h\"),\n"
		   "MC_PARAM_END };\n"
		   "DESCRIBE(\"typepass\", \"d\", t);", path, sizeof(path));
	assert_refused(path, "parameter 'k' has type 77");
	build_pass("enum.so",
		   "static const char *const ch[] = { \"a\", \"b\" }; /* no NULL */\n"
		   "static const struct mc_param_def t[] = {\n"
		   "MC_PARAM_ENUM(struct conf, k, \"a\", ch, \"h\"),\n"
		   "MC_PARAM_END };\n"
		   "DESCRIBE(\"enumpass\", \"d\", t);", path, sizeof(path));
	/* What follows the two choices decides which check speaks first. */
	assert_refused(path, "parameter 'k'");
	assert_refused(path, "choice");
	/* No MC_PARAM_END: the next "row" is junk, or the rows go on past the bound. */
	build_pass("unterm.so",
		   "static const struct { struct mc_param_def row[2]; uintptr_t junk[16]; } t = {\n"
		   "{ MC_PARAM_MODEL(struct conf, model, NULL, \"m\"),\n"
		   "  MC_PARAM_INT(struct conf, k, \"1\", 0, 9, \"a\") },\n"
		   "{ 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,\n"
		   "  0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10 } };\n"
		   "DESCRIBE(\"untermpass\", \"d\", t.row);", path, sizeof(path));
	assert_refused(path, "the name of parameter 3 points outside the plugin's memory (or "
			     "the table lacks MC_PARAM_END)");
	{
		char body[40000];
		size_t o = 0;

		o += (size_t)snprintf(body + o, sizeof(body) - o,
				      "static const struct mc_param_def t[] = {\n");
		for (int i = 0; i < 300; i++)
			o += (size_t)snprintf(body + o, sizeof(body) - o,
					      "MC_PARAM_AT(\"p%d\", MC_PARAM_TINT, MC_PARAM_TINT, "
					      "offsetof(struct conf, many) + %d * sizeof(int), "
					      "\"1\", "
					      "0, 9, NULL, \"h\"),\n", i, i);
		snprintf(body + o, sizeof(body) - o, "MC_PARAM_END };\n"
			 "DESCRIBE(\"manypass\", \"d\", t);");
		build_pass("many.so", body, path, sizeof(path));
		assert_refused(path, "no MC_PARAM_END within 256 rows");
	}
	/* Rows that run into a guard page: read only while mapped, never past. */
	build_pass("guard.so",
		   "static struct mc_param_def *rows;\n"
		   "__attribute__((constructor)) static void make(void)\n"
		   "{\n"
		   "char *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | "
		   "MAP_ANONYMOUS, -1, 0);\n"
		   "size_t n = 4096 / sizeof(*rows);\n"
		   "mprotect(p + 4096, 4096, PROT_NONE);\n"
		   "rows = (struct mc_param_def *)(p + 4096) - n;\n"
		   "for (size_t i = 0; i < n; i++) {\n"
		   "rows[i].name = \"k\"; rows[i].type = MC_PARAM_TINT;\n"
		   "rows[i].offset = 8; rows[i].def = \"1\";\n"
		   "}\n"
		   "}\n"
		   "static struct mc_pass pass = { .abi = MC_PASS_ABI, .name = \"guardpass\",\n"
		   ".version = \"1\", .conf_size = sizeof(struct conf), .run = run };\n"
		   "MC_API const struct mc_pass *mc_pass_descriptor(void)\n"
		   "{ pass.params = rows; return &pass; }", path, sizeof(path));
	assert_refused(path, "the parameter table lies outside the plugin's memory");
}
END_TEST

/* A user's pass under a shipped pass's name: refused by name, used by file. */
START_TEST(shadowing_needs_the_file)
{
	char dir[256], so[4200], env[16384], yaml[4200], out[4200];
	struct mc_err err = { 0 };
	struct mc_registry *r;
	struct mc_pipeline *p;
	const char *path;
	FILE *f;

	build_pass("train.so", "DESCRIBE(\"train\", \"a user's train\", ok_params);", so,
		   sizeof(so));
	snprintf(dir, sizeof(dir), "%s/mine", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	snprintf(out, sizeof(out), "%s/train.so", dir);
	ck_assert_int_eq(rename(so, out), 0);
	snprintf(env, sizeof(env), "%s:%s", dir, passes);
	setenv("MCOMP_PASS_PATH", env, 1);
	r = mc_registry_open(&err);
	ck_assert_msg(r != NULL, "%s", err.msg);
	ck_assert_int_eq(mc_registry_nshadows(r), 1);
	snprintf(yaml, sizeof(yaml), "%s/p.yaml", tmpdir);
	f = fopen(yaml, "w");
	ck_assert_ptr_nonnull(f);
	fputs("mcomp: 1\nmodels:\n  m: {build: {input: [4], layers: [{linear: 2}]}}\n"
	      "passes:\n  - train: {model: m}\n", f);
	fclose(f);
	ck_assert_ptr_null(mc_pipeline_load(yaml, NULL, 0, r, &err));
	ck_assert_int_eq(err.code, MC_EINVAL);
	ck_assert_msg(strstr(err.msg, "p.yaml:5:5: pass 'train' is both") &&
			      strstr(err.msg, out) && strstr(err.msg, "name its file"),
		      "%s", err.msg);
	/* Named by its file (relative to the pipeline's folder), it is used. */
	f = fopen(yaml, "w");
	ck_assert_ptr_nonnull(f);
	fputs("mcomp: 1\nmodels:\n  m: {build: {input: [4], layers: [{linear: 2}]}}\n"
	      "passes:\n  - mine/train.so: {model: m, k: 3}\n", f);
	fclose(f);
	p = mc_pipeline_load(yaml, NULL, 0, r, &err);
	ck_assert_msg(p != NULL, "%s", err.msg);
	mc_pipeline_free(p);
	/* A file that is not a pass, named in a pipeline: its place and the reason. */
	f = fopen(yaml, "w");
	ck_assert_ptr_nonnull(f);
	fputs("mcomp: 1\nmodels:\n  m: {build: {input: [4], layers: [{linear: 2}]}}\n"
	      "passes:\n  - ./p.yaml: {model: m}\n", f);
	fclose(f);
	ck_assert_ptr_null(mc_pipeline_load(yaml, NULL, 0, r, &err));
	ck_assert_msg(strstr(err.msg, "p.yaml:5:5: ") && strstr(err.msg, "ELF header"), "%s",
		      err.msg);
	/* The shipped train is still there by name for everything else. */
	ck_assert_ptr_nonnull(mc_registry_find(r, "train", &path));
	mc_registry_free(r);
}
END_TEST

START_TEST(long_pass_path)
{
	struct mc_err err = { 0 };
	struct mc_registry *r;
	size_t n = 40000, o = 0;
	char *env = malloc(n + sizeof(fixtures) + 1);

	ck_assert_ptr_nonnull(env);
	while (o < n)
		o += (size_t)sprintf(env + o, "/nonexistent/folder-%06zu:", o);
	strcpy(env + o, fixtures);
	setenv("MCOMP_PASS_PATH", env, 1);
	ck_assert_int_gt(strlen(mc_pass_path()), 40000);
	ck_assert_ptr_nonnull(strstr(mc_pass_path(), fixtures));
	r = mc_registry_open(&err);
	ck_assert_msg(r != NULL, "%s", err.msg);
	ck_assert_ptr_nonnull(mc_registry_find(r, "fxgood", NULL));
	mc_registry_free(r);
	free(env);
}
END_TEST

int main(void)
{
	const char *fx = getenv("MCOMP_FIXTURES"), *pp = getenv("MCOMP_PASS_PATH");
	const char *src = getenv("MCOMP_SRCDIR");
	Suite *s = suite_create("loader");
	TCase *tc = tcase_create("loader"), *th = tcase_create("hostile"),
	      *tf = tcase_create("fifo");
	SRunner *sr;
	int failed;

	if (!fx || !pp || !src) {
		fprintf(stderr, "check_loader: run through `make check` (MCOMP_FIXTURES and "
				"MCOMP_PASS_PATH or MCOMP_SRCDIR unset)\n");
		return 99;
	}
	snprintf(fixtures, sizeof(fixtures), "%s", fx);
	snprintf(passes, sizeof(passes), "%s", pp);
	snprintf(srcdir, sizeof(srcdir), "%s", src);
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
	/* Short: a FIFO that hung the loader would fail here, not stall make check. */
	tcase_set_timeout(tf, 20);
	tcase_add_checked_fixture(tf, hostile_setup, scratch_remove);
	tcase_add_test(tf, fifo_and_devices_do_not_hang);
	suite_add_tcase(s, tf);
	/* These compile their passes first: time for a busy machine. */
	tcase_set_timeout(th, 180);
	tcase_add_checked_fixture(th, hostile_setup, scratch_remove);
	tcase_add_test(th, foreign_elf_files_refused);
	tcase_add_test(th, loose_modes_refused);
	tcase_add_test(th, bad_names_and_texts_refused);
	tcase_add_test(th, broken_tables_refused);
	tcase_add_test(th, shadowing_needs_the_file);
	tcase_add_test(th, long_pass_path);
	suite_add_tcase(s, th);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
