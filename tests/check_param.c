/* SPDX-License-Identifier: MIT */
/*
 * check_param - the typed parameter setters (mcomp/param.h): every type's
 * parser, ranges (open bounds too), enums, lists, maps, optional rows,
 * defaults, suggestions, formatting round trips through the YAML reader,
 * copies; and the YAML tree (core/yaml.h).
 */
#include <check.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/op.h>
#include <mcomp/param.h>

#include "base/param_int.h"

#include "io/ydoc.h"

struct conf {
	int i;
	double f;
	int b;
	char *s;
	int e;
	struct mc_list li;
	struct mc_list lf;
	struct mc_list ls;
	struct mc_list lc;
	char *model;
	char *split;
	char *path;
	int u; /* unbounded int */
	int req;
	double oc;	   /* (0, 1] */
	int oi;		   /* (0, 10) */
	char *opt;	   /* optional, no default */
	struct mc_map mf;  /* name: float in [0, 1) */
	struct mc_map me;  /* name: sgd or adam */
	struct mc_map mb;  /* name: bool */
};

static const char *const opts[] = { "sgd", "adam", NULL };
static const char *const gran[] = { "per-tensor", "per-channel", NULL };

static const struct mc_param_def defs[] = {
	MC_PARAM_INT(struct conf, i, "5", 1, 100, "an int"),
	MC_PARAM_FLOAT(struct conf, f, "0.001", 0, 10, "a float"),
	MC_PARAM_BOOL(struct conf, b, "true", "a bool"),
	MC_PARAM_STRING(struct conf, s, "hello", "a string"),
	MC_PARAM_ENUM(struct conf, e, "adam", opts, "an enum"),
	MC_PARAM_LIST(struct conf, li, MC_PARAM_TINT, "[1, 2, 3]", 0, 10, "ints"),
	MC_PARAM_LIST(struct conf, lf, MC_PARAM_TFLOAT, "[]", 0, 0, "floats"),
	MC_PARAM_LIST(struct conf, ls, MC_PARAM_TSTRING, "[a, 'b c']", 0, 0, "strings"),
	{ .name = "lc", .type = MC_PARAM_TLIST, .elem = MC_PARAM_TSTRING,
	  .offset = offsetof(struct conf, lc), .def = "[per-tensor]", .choices = gran,
	  .help = "choices" },
	MC_PARAM_MODEL(struct conf, model, "", "a model"),
	MC_PARAM_SPLIT(struct conf, split, "train", "a split"),
	MC_PARAM_PATH(struct conf, path, "", "a path"),
	MC_PARAM_INT(struct conf, u, "0", 0, 0, "unbounded"),
	MC_PARAM_INT(struct conf, req, NULL, 0, 9, "required"),
	MC_PARAM_FLOAT(struct conf, oc, "1", 0, 1, "open below", .flags = MC_PARAM_FMIN_OPEN),
	MC_PARAM_INT(struct conf, oi, "5", 0, 10, "open both ends",
		     .flags = MC_PARAM_FMIN_OPEN | MC_PARAM_FMAX_OPEN),
	MC_PARAM_STRING(struct conf, opt, NULL, "optional", .flags = MC_PARAM_FOPTIONAL),
	MC_PARAM_MAP(struct conf, mf, MC_PARAM_TFLOAT, "{a: 0.5, 'b*': 0.25}", 0, 1, "floats",
		     .flags = MC_PARAM_FMAX_OPEN),
	MC_PARAM_MAP_ENUM(struct conf, me, "{}", opts, "choices"),
	MC_PARAM_MAP(struct conf, mb, MC_PARAM_TBOOL, "{x: yes}", 0, 0, "bools"),
	MC_PARAM_END,
};

static const struct mc_param_def *def(const char *name)
{
	const struct mc_param_def *d = mc_param_find(defs, name);

	ck_assert_msg(d != NULL, "no row %s", name);
	return d;
}

static struct conf c;
static struct mc_err err;

static void setup(void)
{
	memset(&c, 0, sizeof(c));
	memset(&err, 0, sizeof(err));
	ck_assert_msg(mc_param_defaults(defs, &c, &err) == 0, "%s", err.msg);
}

static void teardown(void)
{
	mc_param_free(defs, &c);
}

static void set_ok(const char *name, const char *text)
{
	ck_assert_msg(mc_param_set(def(name), &c, text, &err) == 0, "%s=%s: %s", name, text,
		      err.msg);
}

/* Fails with EINVAL and exactly msg, leaving the conf as it was. */
static void set_bad(const char *name, const char *text, const char *msg)
{
	struct conf before = c;

	memset(&err, 0, sizeof(err));
	ck_assert_int_eq(mc_param_set(def(name), &c, text, &err), MC_EINVAL);
	ck_assert_int_eq(err.code, MC_EINVAL);
	if (msg)
		ck_assert_str_eq(err.msg, msg);
	else
		ck_assert_msg(!strncmp(err.msg, name, strlen(name)) && err.msg[strlen(name)] == ':',
			      "message must start with the key: %s", err.msg);
	ck_assert_int_eq(memcmp(&before, &c, sizeof(c)), 0);
}

START_TEST(defaults)
{
	ck_assert_int_eq(c.i, 5);
	ck_assert(c.f == 0.001);
	ck_assert_int_eq(c.b, 1);
	ck_assert_str_eq(c.s, "hello");
	ck_assert_int_eq(c.e, 1);
	ck_assert_int_eq(c.li.n, 3);
	ck_assert(c.li.num[2] == 3);
	ck_assert_str_eq(c.li.str[0], "1");
	ck_assert_int_eq(c.lf.n, 0);
	ck_assert_int_eq(c.ls.n, 2);
	ck_assert_ptr_null(c.ls.num);
	ck_assert_str_eq(c.ls.str[1], "b c");
	ck_assert_int_eq(c.lc.n, 1);
	ck_assert_ptr_null(c.model); /* "" means none for a model, split or path */
	ck_assert_str_eq(c.split, "train");
	ck_assert_ptr_null(c.path);
	ck_assert_int_eq(c.req, 0); /* required: left alone */
	ck_assert_ptr_null(c.opt);  /* optional: left alone */
	ck_assert(c.oc == 1.0);
	ck_assert_int_eq(c.mf.n, 2);
	ck_assert_str_eq(c.mf.key[1], "b*");
	ck_assert_str_eq(c.mf.str[1], "0.25");
	ck_assert(c.mf.num[0] == 0.5 && c.mf.num[1] == 0.25);
	ck_assert_int_eq(c.me.n, 0);
	ck_assert_int_eq(c.mb.n, 1);
	ck_assert(c.mb.num[0] == 1);
}
END_TEST

START_TEST(open_bounds)
{
	set_ok("oc", "1e-300");
	set_ok("oc", "1");
	set_bad("oc", "0", "oc: 0 is out of range (0, 1]");
	set_bad("oc", "-0", "oc: -0 is out of range (0, 1]");
	set_bad("oc", "1.0000001", "oc: 1.0000001 is out of range (0, 1]");
	set_ok("oi", "1");
	set_ok("oi", "9");
	set_bad("oi", "0", "oi: 0 is out of range (0, 10)");
	set_bad("oi", "10", "oi: 10 is out of range (0, 10)");
	set_bad("mf", "z=1", "mf: z: 1 is out of range [0, 1)");
}
END_TEST

START_TEST(maps)
{
	struct mc_map *m = &c.mf;

	mc_param_list_clear(def("mf"), &c);
	ck_assert_int_eq(m->n, 0);
	ck_assert_ptr_null(m->key);
	ck_assert_int_eq(mc_param_map_put(def("mf"), &c, "fc1", "0.9", &err), 0);
	ck_assert_int_eq(mc_param_map_put(def("mf"), &c, "conv*", "0", &err), 0);
	/* The older spelling: "NAME=VALUE", split at the first '='. */
	set_ok("mf", "fc2=.5");
	ck_assert_int_eq(m->n, 3);
	ck_assert_str_eq(m->key[2], "fc2");
	ck_assert(m->num[0] == 0.9 && m->num[1] == 0 && m->num[2] == 0.5);
	set_bad("mf", "fc1=0.1", "mf: 'fc1' is given twice");
	set_bad("mf", "fc3=x", "mf: fc3: expected a number, got 'x'");
	set_bad("mf", "=0.1", NULL);
	set_bad("mf", "fc3", "mf: expected a mapping such as {fc1: 0.5} (or \"NAME=VALUE\"), got "
			     "'fc3'");
	ck_assert_int_eq(mc_param_map_put(def("mf"), &c, "", "0.1", &err), MC_EINVAL);
	ck_assert_int_eq(mc_param_map_put(def("i"), &c, "k", "1", &err), MC_EINVAL);
	ck_assert_int_eq(m->n, 3);
	/* Choices keep their text and index. */
	set_ok("me", "fc1=adam");
	ck_assert_str_eq(c.me.str[0], "adam");
	ck_assert(c.me.num[0] == 1);
	set_bad("me", "fc2=adm", "me: fc2: 'adm' is not one of sgd, adam; did you mean 'adam'?");
	set_ok("mb", "y=off");
	ck_assert(c.mb.num[1] == 0);
	set_bad("mb", "z=1", "mb: z: expected true or false, got '1'");
}
END_TEST

START_TEST(bad_map_default_is_reported)
{
	static const struct mc_param_def broken[] = {
		MC_PARAM_MAP(struct conf, mf, MC_PARAM_TFLOAT, "{a 1}", 0, 1, "broken"),
		MC_PARAM_MAP(struct conf, me, MC_PARAM_TFLOAT, "[a: 1]", 0, 1, "broken"),
		MC_PARAM_END,
	};
	struct conf x = { 0 };

	ck_assert_int_eq(mc_param_defaults(broken, &x, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "mf: default entry 'a 1' is not KEY: VALUE"));
	ck_assert_int_eq(mc_param_defaults(broken + 1, &x, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "me: default '[a: 1]' is not a mapping"));
	mc_param_free(broken, &x);
}
END_TEST

START_TEST(bad_default_is_reported)
{
	static const struct mc_param_def broken[] = {
		MC_PARAM_INT(struct conf, i, "lots", 1, 10, "broken"),
		MC_PARAM_END,
	};
	struct conf x = { 0 };

	ck_assert_int_eq(mc_param_defaults(broken, &x, &err), MC_EINVAL);
	ck_assert_ptr_nonnull(strstr(err.msg, "i: expected an integer, got 'lots'"));
}
END_TEST

START_TEST(ints)
{
	set_ok("i", "7");
	ck_assert_int_eq(c.i, 7);
	set_ok("i", "+8");
	ck_assert_int_eq(c.i, 8);
	set_ok("i", "100");
	set_ok("u", "-2147483648");
	ck_assert_int_eq(c.u, -2147483647 - 1);
	set_bad("i", "1.5", "i: expected an integer, got '1.5'");
	set_bad("i", "abc", "i: expected an integer, got 'abc'");
	set_bad("i", "", "i: expected an integer, got ''");
	set_bad("i", "0x10", NULL);
	set_bad("i", " 5", NULL);
	set_bad("i", "1e3", NULL);
	set_bad("i", "101", "i: 101 is out of range [1, 100]");
	set_bad("i", "0", "i: 0 is out of range [1, 100]");
	set_bad("i", "99999999999999999999", "i: 99999999999999999999 is too large for an int");
	set_bad("u", "2147483648", "u: 2147483648 is too large for an int");
	ck_assert_int_eq(c.i, 100);
}
END_TEST

START_TEST(floats)
{
	set_ok("f", "3");
	ck_assert(c.f == 3.0);
	set_ok("f", "2.5e-3");
	ck_assert(c.f == 2.5e-3);
	set_ok("f", ".5");
	ck_assert(c.f == 0.5);
	set_ok("f", "1E1");
	ck_assert(c.f == 10.0);
	set_ok("f", "-0");
	set_bad("f", "11", "f: 11 is out of range [0, 10]");
	set_bad("f", "-1e-9", NULL);
	set_bad("f", "fast", "f: expected a number, got 'fast'");
	set_bad("f", "nan", NULL);
	set_bad("f", ".inf", NULL);
	set_bad("f", "inf", NULL);
	set_bad("f", "1e999", "f: 1e999 is not a finite number");
	set_bad("f", "0x1p3", NULL);
	set_ok("f", "1.");
	ck_assert(c.f == 1.0);
	set_bad("f", "1e", NULL);
	set_bad("f", ".", NULL);
}
END_TEST

START_TEST(bools)
{
	const char *yes[] = { "true", "True", "YES", "on" }, *no[] = { "false", "No", "OFF" };

	for (size_t k = 0; k < 4; k++) {
		c.b = 0;
		set_ok("b", yes[k]);
		ck_assert_int_eq(c.b, 1);
	}
	for (size_t k = 0; k < 3; k++) {
		c.b = 1;
		set_ok("b", no[k]);
		ck_assert_int_eq(c.b, 0);
	}
	set_bad("b", "1", "b: expected true or false, got '1'");
	set_bad("b", "maybe", NULL);
}
END_TEST

START_TEST(enums)
{
	static const struct mc_param_def opt[] = {
		{ .name = "optimizer", .type = MC_PARAM_TENUM, .offset = offsetof(struct conf, e),
		  .def = "adam", .choices = opts },
		MC_PARAM_END,
	};
	struct conf x = { 0 };

	set_ok("e", "sgd");
	ck_assert_int_eq(c.e, 0);
	set_bad("e", "adm", "e: 'adm' is not one of sgd, adam; did you mean 'adam'?");
	set_bad("e", "Adam", "e: 'Adam' is not one of sgd, adam; did you mean 'adam'?");
	set_bad("e", "rmsprop", "e: 'rmsprop' is not one of sgd, adam");
	/* The message names the key of the table. */
	ck_assert_int_eq(mc_param_set(&opt[0], &x, "adm", &err), MC_EINVAL);
	ck_assert_str_eq(err.msg, "optimizer: 'adm' is not one of sgd, adam; did you mean 'adam'?");
}
END_TEST

START_TEST(strings)
{
	set_ok("s", "a b: c");
	ck_assert_str_eq(c.s, "a b: c");
	set_ok("s", "");
	ck_assert_str_eq(c.s, "");
	set_ok("model", "mlp");
	ck_assert_str_eq(c.model, "mlp");
	set_ok("path", "out/x.safetensors");
	ck_assert_str_eq(c.path, "out/x.safetensors");
	set_bad("model", "", "model: expected a model name, got an empty string");
	set_bad("split", "", "split: expected a split name, got an empty string");
	set_bad("path", "", "path: expected a path, got an empty string");
}
END_TEST

START_TEST(lists)
{
	mc_param_list_clear(def("li"), &c);
	ck_assert_int_eq(c.li.n, 0);
	ck_assert_ptr_null(c.li.str);
	set_ok("li", "4");
	set_ok("li", "-0");
	ck_assert_int_eq(c.li.n, 2);
	ck_assert(c.li.num[0] == 4);
	set_bad("li", "11", "li: 11 is out of range [0, 10]");
	set_bad("li", "2.5", "li: expected an integer, got '2.5'");
	ck_assert_int_eq(c.li.n, 2);
	set_ok("lf", "1e-3");
	set_ok("lf", "-7.25");
	ck_assert(c.lf.num[1] == -7.25);
	set_bad("lf", "x", NULL);
	set_ok("ls", "c");
	ck_assert_int_eq(c.ls.n, 3);
	set_ok("lc", "per-channel");
	ck_assert_int_eq(c.lc.n, 2);
	set_bad("lc", "per-chanel",
		"lc: 'per-chanel' is not one of per-tensor, per-channel; did you mean "
		"'per-channel'?");
}
END_TEST

START_TEST(suggestions)
{
	const char *const words[] = { "epochs", "batch_size", "lr", "optimizer", NULL };

	ck_assert_str_eq(mc_suggest(words, "epoch"), "epochs");
	ck_assert_str_eq(mc_suggest(words, "batchsize"), "batch_size");
	ck_assert_str_eq(mc_suggest(words, "batch_sise"), "batch_size");
	ck_assert_str_eq(mc_suggest(words, "optimiser"), "optimizer");
	ck_assert_str_eq(mc_suggest(words, "LR"), "lr");
	ck_assert_ptr_null(mc_suggest(words, "temperature"));
	ck_assert_ptr_null(mc_suggest(words, "xyzzy"));
	ck_assert_ptr_null(mc_suggest(NULL, "x"));
	/* max(2, len / 3): three edits on a 9-letter word, not four. */
	ck_assert_str_eq(mc_suggest(words, "optimzzzz"), "optimizer");
	ck_assert_ptr_null(mc_suggest(words, "opzzzzzzr"));
	ck_assert_str_eq(mc_param_suggest(defs, "splt"), "split");
	ck_assert_ptr_null(mc_param_suggest(defs, "nothing-like-it"));
	ck_assert_ptr_null(mc_param_find(defs, "nothing"));
}
END_TEST

START_TEST(type_text)
{
	char buf[256];

	ck_assert_str_eq(mc_param_type_text(def("i"), buf, sizeof(buf)), "int in [1, 100]");
	ck_assert_str_eq(mc_param_type_text(def("f"), buf, sizeof(buf)), "float in [0, 10]");
	ck_assert_str_eq(mc_param_type_text(def("u"), buf, sizeof(buf)), "int");
	ck_assert_str_eq(mc_param_type_text(def("e"), buf, sizeof(buf)), "one of sgd, adam");
	ck_assert_str_eq(mc_param_type_text(def("li"), buf, sizeof(buf)),
			 "list of int in [0, 10]");
	ck_assert_str_eq(mc_param_type_text(def("lc"), buf, sizeof(buf)),
			 "list of one of per-tensor, per-channel");
	ck_assert_str_eq(mc_param_type_text(def("model"), buf, sizeof(buf)), "model name");
	ck_assert_str_eq(mc_param_type_text(def("b"), buf, sizeof(buf)), "bool");
	ck_assert_str_eq(mc_param_type_text(def("oc"), buf, sizeof(buf)), "float in (0, 1]");
	ck_assert_str_eq(mc_param_type_text(def("oi"), buf, sizeof(buf)), "int in (0, 10)");
	ck_assert_str_eq(mc_param_type_text(def("mf"), buf, sizeof(buf)), "map of float in [0, 1)");
	ck_assert_str_eq(mc_param_type_text(def("me"), buf, sizeof(buf)),
			 "map of one of sgd, adam");
	ck_assert_str_eq(mc_param_type_text(def("mb"), buf, sizeof(buf)), "map of bool");
	ck_assert_str_eq(mc_param_type_name(MC_PARAM_TMAP), "map");
	ck_assert_str_eq(mc_param_type_name(MC_PARAM_TPATH), "path");
	ck_assert_str_eq(mc_param_type_name(MC_PARAM_TYPE_COUNT), "?");
	/* Truncation is safe. */
	ck_assert_str_eq(mc_param_type_text(def("e"), buf, 5), "one ");
}
END_TEST

/* Parses YAML text and sets def from it, as the pipeline loader does. */
static void set_from_yaml(const struct mc_param_def *d, struct conf *x, const char *yaml)
{
	struct mc_ydoc *doc = mc_ydoc_new();
	struct mc_errlist el = { .err = &err };
	struct mc_ynode *root;

	ck_assert_msg(mc_yaml_parse(doc, yaml, strlen(yaml), "t", 0, &root, &el) == 0, "%s: %s",
		      yaml, err.msg);
	ck_assert_ptr_nonnull(root);
	if (d->type == MC_PARAM_TMAP) {
		ck_assert_int_eq(root->kind, MC_YMAP);
		mc_param_list_clear(d, x);
		for (int k = 0; k < root->n; k++)
			ck_assert_msg(mc_param_map_put(d, x, root->keys[k]->value,
						       root->items[k]->value, &err) == 0,
				      "%s", err.msg);
	} else if (d->type == MC_PARAM_TLIST) {
		ck_assert_int_eq(root->kind, MC_YSEQ);
		mc_param_list_clear(d, x);
		for (int k = 0; k < root->n; k++)
			ck_assert_msg(mc_param_set(d, x, root->items[k]->value, &err) == 0, "%s",
				      err.msg);
	} else {
		ck_assert_int_eq(root->kind, MC_YSCALAR);
		ck_assert_msg(mc_param_set(d, x, root->value, &err) == 0, "%s: %s", yaml, err.msg);
	}
	mc_ydoc_free(doc);
}

START_TEST(format_round_trip)
{
	const char *texts[] = { "plain", "true", "a b", "", "x: y", "quote\"back\\slash", "5",
				  "-", "null", "tab\there" };
	const double values[] = { 0.001, 1.0 / 3, 1e-12, 10, 0, 2.5e-7, 7.000000000000001 };
	struct conf x = { 0 };
	char buf[512];

	ck_assert_int_eq(mc_param_defaults(defs, &x, &err), 0);
	for (size_t k = 0; k < sizeof(texts) / sizeof(texts[0]); k++) {
		set_ok("s", texts[k]);
		mc_param_format(def("s"), &c, buf, sizeof(buf));
		set_from_yaml(def("s"), &x, buf);
		ck_assert_msg(!strcmp(x.s, texts[k]), "'%s' formatted as %s read back as '%s'",
			      texts[k], buf, x.s);
	}
	for (size_t k = 0; k < sizeof(values) / sizeof(values[0]); k++) {
		c.f = values[k];
		mc_param_format(def("f"), &c, buf, sizeof(buf));
		set_from_yaml(def("f"), &x, buf);
		ck_assert_msg(x.f == c.f, "%.17g formatted as %s", c.f, buf);
	}
	ck_assert_str_eq(mc_param_format(def("f"), &c, buf, sizeof(buf)), "7.000000000000001");
	c.f = 0.001;
	ck_assert_str_eq(mc_param_format(def("f"), &c, buf, sizeof(buf)), "0.001");
	ck_assert_str_eq(mc_param_format(def("i"), &c, buf, sizeof(buf)), "5");
	ck_assert_str_eq(mc_param_format(def("b"), &c, buf, sizeof(buf)), "true");
	ck_assert_str_eq(mc_param_format(def("e"), &c, buf, sizeof(buf)), "adam");
	ck_assert_str_eq(mc_param_format(def("li"), &c, buf, sizeof(buf)), "[1, 2, 3]");
	ck_assert_str_eq(mc_param_format(def("lf"), &c, buf, sizeof(buf)), "[]");
	ck_assert_str_eq(mc_param_format(def("ls"), &c, buf, sizeof(buf)), "[a, \"b c\"]");
	ck_assert_str_eq(mc_param_format(def("model"), &c, buf, sizeof(buf)), "null");
	set_from_yaml(def("ls"), &x, mc_param_format(def("ls"), &c, buf, sizeof(buf)));
	ck_assert_int_eq(x.ls.n, 2);
	ck_assert_str_eq(x.ls.str[1], "b c");
	set_from_yaml(def("li"), &x, "[0, 10, 3]");
	ck_assert_str_eq(mc_param_format(def("li"), &x, buf, sizeof(buf)), "[0, 10, 3]");
	/* A short buffer is truncated, never overrun. */
	ck_assert_str_eq(mc_param_format(def("li"), &x, buf, 4), "[0,");
	/* Maps: keys that YAML would misread are quoted; values by type. */
	ck_assert_str_eq(mc_param_format(def("mf"), &c, buf, sizeof(buf)), "{a: 0.5, \"b*\": 0.25}");
	ck_assert_str_eq(mc_param_format(def("mb"), &c, buf, sizeof(buf)), "{x: true}");
	set_ok("me", "true=sgd");
	ck_assert_str_eq(mc_param_format(def("me"), &c, buf, sizeof(buf)), "{\"true\": sgd}");
	set_ok("mf", "7=0.125");
	set_from_yaml(def("mf"), &x, mc_param_format(def("mf"), &c, buf, sizeof(buf)));
	ck_assert_int_eq(x.mf.n, 3);
	ck_assert_str_eq(x.mf.key[1], "b*");
	ck_assert_str_eq(x.mf.key[2], "7");
	ck_assert(x.mf.num[2] == 0.125);
	set_from_yaml(def("me"), &x, mc_param_format(def("me"), &c, buf, sizeof(buf)));
	ck_assert_str_eq(x.me.key[0], "true");
	ck_assert(x.me.num[0] == 0);
	ck_assert_str_eq(mc_param_format(def("oc"), &c, buf, sizeof(buf)), "1");
	ck_assert_str_eq(mc_param_format(def("opt"), &c, buf, sizeof(buf)), "null");
	mc_param_free(defs, &x);
}
END_TEST

START_TEST(copy_is_deep)
{
	struct conf x;

	set_ok("model", "m1");
	ck_assert_int_eq(mc_param_copy(defs, &x, &c, sizeof(c)), 0);
	ck_assert_ptr_ne(x.s, c.s);
	ck_assert_str_eq(x.s, "hello");
	ck_assert_ptr_ne(x.li.str, c.li.str);
	ck_assert_ptr_ne(x.li.num, c.li.num);
	ck_assert(x.li.num[1] == 2);
	ck_assert_str_eq(x.ls.str[1], "b c");
	ck_assert_str_eq(x.model, "m1");
	ck_assert_ptr_null(x.path);
	ck_assert_int_eq(x.mf.n, 2);
	ck_assert_ptr_ne(x.mf.key, c.mf.key);
	ck_assert_ptr_ne(x.mf.key[1], c.mf.key[1]);
	ck_assert_str_eq(x.mf.key[1], "b*");
	ck_assert(x.mf.num[1] == 0.25);
	set_ok("s", "changed");
	ck_assert_str_eq(x.s, "hello");
	mc_param_list_clear(def("mf"), &c);
	ck_assert_str_eq(x.mf.key[0], "a");
	mc_param_free(defs, &x);
	ck_assert_ptr_null(x.s);
	ck_assert_int_eq(x.li.n, 0);
	ck_assert_int_eq(x.mf.n, 0);
	ck_assert_ptr_null(x.mf.key);
}
END_TEST

/* ---------------------------------------------------------------- YAML tree */

static struct mc_ydoc *doc;
static struct mc_errlist el;

static struct mc_ynode *parse(const char *text, int expect_ok)
{
	struct mc_ynode *root = NULL;
	int r;

	memset(&err, 0, sizeof(err));
	el.err = &err;
	el.n = 0;
	doc = mc_ydoc_new();
	ck_assert_ptr_nonnull(doc);
	r = mc_yaml_parse(doc, text, strlen(text), "f.yaml", 1, &root, &el);
	if (expect_ok)
		ck_assert_msg(r == 0, "%s", err.msg);
	else
		ck_assert_int_ne(r, 0);
	return root;
}

static void yaml_teardown(void)
{
	mc_ydoc_free(doc);
	doc = NULL;
}

START_TEST(yaml_places_and_kinds)
{
	struct mc_ynode *r = parse("a: 1\nb:\n  - x\n  - 'y'\n  - {k: v}\nc: ~\nd: !!str 5\n", 1);
	struct mc_ynode *b, *key;

	ck_assert_int_eq(r->kind, MC_YMAP);
	ck_assert_int_eq(r->n, 4);
	ck_assert_str_eq(mc_ymap_get(r, "a", &key)->value, "1");
	ck_assert_int_eq(key->line, 1);
	ck_assert_int_eq(key->col, 1);
	ck_assert_int_eq(mc_ymap_get(r, "a", NULL)->col, 4);
	b = mc_ymap_get(r, "b", NULL);
	ck_assert_int_eq(b->kind, MC_YSEQ);
	ck_assert_int_eq(b->n, 3);
	ck_assert_int_eq(b->items[1]->line, 4);
	ck_assert_int_eq(b->items[1]->col, 5);
	ck_assert_int_eq(b->items[0]->plain, 1);
	ck_assert_int_eq(b->items[1]->plain, 0);
	ck_assert_int_eq(b->items[2]->kind, MC_YMAP);
	ck_assert(mc_ynode_is_null(mc_ymap_get(r, "c", NULL)));
	ck_assert(!mc_ynode_is_null(b->items[0]));
	ck_assert_int_eq(mc_ymap_get(r, "d", NULL)->plain, 0);
	ck_assert_ptr_nonnull(mc_ymap_get(r, "d", NULL)->tag);
	ck_assert_ptr_null(mc_ymap_get(r, "zz", NULL));
	ck_assert_str_eq(mc_ynode_what(b), "a sequence");
}
END_TEST

START_TEST(yaml_aliases_share)
{
	struct mc_ynode *r = parse("a: &x {k: [1, 2]}\nb: *x\n", 1);

	ck_assert_ptr_eq(mc_ymap_get(r, "a", NULL), mc_ymap_get(r, "b", NULL));
	ck_assert_uint_eq(r->size, 1 + 2 + 5 + 5); /* root, keys a and b, {k: [1, 2]} twice */
}
END_TEST

START_TEST(yaml_errors)
{
	parse("a: 1\nb: 2\na: 3\nb: 4\n", 0);
	ck_assert_str_eq(err.msg, "f.yaml:3:1: duplicate key 'a' (first at line 1, column 1)\n"
				  "f.yaml:4:1: duplicate key 'b' (first at line 2, column 1)");
	ck_assert_int_eq(err.code, MC_EINVAL);
	yaml_teardown();
	parse("a: [1, 2\n", 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "f.yaml:2:1: YAML syntax error: "));
	yaml_teardown();
	parse("a: *nope\n", 0);
	ck_assert_str_eq(err.msg, "f.yaml:1:4: alias '*nope' names no anchor before it");
	yaml_teardown();
	parse("a: &r {b: *r}\n", 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "f.yaml:1:11: alias '*r' refers to a node that "));
	yaml_teardown();
	parse("a: \"nul\\0here\"\n", 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "NUL"));
	yaml_teardown();
	ck_assert_ptr_null(parse("# only a comment\n", 1));
}
END_TEST

START_TEST(yaml_size_limit)
{
	/* A flat list just under the limit loads; one node more is refused. */
	size_t n = MC_YAML_MAX_NODES - 1, len = 2 + 3 * n;
	char *text = malloc(len + 2);
	struct mc_ynode *r;

	ck_assert_ptr_nonnull(text);
	text[0] = '[';
	for (size_t k = 0; k < n; k++)
		memcpy(text + 1 + 3 * k, "1, ", 3);
	strcpy(text + 1 + 3 * n - 2, "]");
	r = parse(text, 1);
	ck_assert_uint_eq(r->size, MC_YAML_MAX_NODES);
	yaml_teardown();
	strcpy(text + 1 + 3 * n - 2, ", 1]");
	parse(text, 0);
	ck_assert_ptr_nonnull(strstr(err.msg, "alias bomb"));
	free(text);
}
END_TEST

START_TEST(yaml_error_cap)
{
	struct mc_errlist l = { .err = &err };

	for (int k = 0; k < 50; k++)
		mc_errlist_add(&l, "f", k + 1, 1, "error %d", k);
	ck_assert_int_eq(l.n, 50);
	ck_assert_ptr_nonnull(strstr(err.msg, "f:20:1: error 19\nf: more errors not shown"));
	ck_assert_ptr_null(strstr(err.msg, "error 20"));
}
END_TEST

/* The runtime's own op tables meet the rules a plugin's tables are held to. */
START_TEST(shipped_tables_meet_plugin_rules)
{
	const char *const *names = mc_op_names();
	int n = 0;

	for (; names && *names; names++, n++) {
		const struct mc_op *op = mc_op_find(*names);

		ck_assert_ptr_nonnull(op);
		ck_assert_msg(mc_param_check_table(op->attrs, op->attr_size, NULL, NULL, &err) == 0,
			      "op %s: %s", op->name, err.msg);
	}
	ck_assert_int_gt(n, 10);
}
END_TEST

/* A table checked in place: the faults a plugin's table may have. */
START_TEST(table_check_messages)
{
	struct conf { int a; double b; char *c; } ;
	const struct mc_param_def past[] = {
		MC_PARAM_AT("b", MC_PARAM_TFLOAT, MC_PARAM_TFLOAT, sizeof(struct conf) - 4, "1", 0,
			    0, NULL, "h"),
		MC_PARAM_END,
	};
	const struct mc_param_def open_range[] = {
		MC_PARAM_AT("a", MC_PARAM_TINT, MC_PARAM_TINT, 0, "1", 5, 1, NULL, "h"),
		MC_PARAM_END,
	};
	const struct mc_param_def flags[] = {
		MC_PARAM_INT(struct conf, a, "1", 0, 9, "h", .flags = 64),
		MC_PARAM_END,
	};
	const struct mc_param_def good[] = {
		MC_PARAM_INT(struct conf, a, "1", 0, 9, "h"),
		MC_PARAM_FLOAT(struct conf, b, "1", 0, 9, "h"),
		MC_PARAM_STRING(struct conf, c, NULL, "h"),
		MC_PARAM_END,
	};

	ck_assert_int_eq(mc_param_check_table(past, sizeof(struct conf), NULL, NULL, &err),
			 MC_EPLUGIN);
	ck_assert_msg(strstr(err.msg, "parameter 'b' (float, 8 bytes at offset"), "%s", err.msg);
	ck_assert_int_eq(mc_param_check_table(open_range, sizeof(struct conf), NULL, NULL, &err),
			 MC_EPLUGIN);
	ck_assert_msg(strstr(err.msg, "empty range"), "%s", err.msg);
	ck_assert_int_eq(mc_param_check_table(flags, sizeof(struct conf), NULL, NULL, &err),
			 MC_EPLUGIN);
	ck_assert_msg(strstr(err.msg, "unknown flags 0x40"), "%s", err.msg);
	ck_assert_int_eq(mc_param_check_table(good, sizeof(struct conf), NULL, NULL, &err), 0);
	/* One byte short of the struct: the last field no longer fits. */
	ck_assert_int_eq(mc_param_check_table(good, sizeof(struct conf) - 1, NULL, NULL, &err),
			 MC_EPLUGIN);
	ck_assert_msg(strstr(err.msg, "parameter 'c'"), "%s", err.msg);
}
END_TEST

/* Row names: NAME, or BLOCK.NAME (checkpoint.every), nothing else. */
START_TEST(table_block_names)
{
	static const char *const ok_names[] = { "checkpoint.every", "a.b", "x_1.y-2" };
	static const char *const bad_names[] = { "a.", ".a", "a.b.c", "A.b", "a..b", "-a.b", "a.-b" };
	struct mc_param_def t[2] = { MC_PARAM_AT("x", MC_PARAM_TINT, MC_PARAM_TINT, 0, "1", 0, 9,
						 NULL, "h"),
				     MC_PARAM_END };

	for (size_t i = 0; i < sizeof(ok_names) / sizeof(*ok_names); i++) {
		t[0].name = ok_names[i];
		ck_assert_msg(mc_param_check_table(t, sizeof(int), NULL, NULL, &err) == 0,
			      "%s: %s", ok_names[i], err.msg);
	}
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(*bad_names); i++) {
		t[0].name = bad_names[i];
		ck_assert_int_eq(mc_param_check_table(t, sizeof(int), NULL, NULL, &err), MC_EPLUGIN);
		ck_assert_msg(strstr(err.msg, "joined by '.'"), "%s: %s", bad_names[i], err.msg);
	}
}
END_TEST

static Suite *param_suite(void)
{
	Suite *s = suite_create("param");
	TCase *tc = tcase_create("setters");
	TCase *ty = tcase_create("yaml");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, defaults);
	tcase_add_test(tc, bad_default_is_reported);
	tcase_add_test(tc, ints);
	tcase_add_test(tc, floats);
	tcase_add_test(tc, bools);
	tcase_add_test(tc, enums);
	tcase_add_test(tc, strings);
	tcase_add_test(tc, lists);
	tcase_add_test(tc, open_bounds);
	tcase_add_test(tc, maps);
	tcase_add_test(tc, bad_map_default_is_reported);
	tcase_add_test(tc, suggestions);
	tcase_add_test(tc, type_text);
	tcase_add_test(tc, format_round_trip);
	tcase_add_test(tc, copy_is_deep);
	tcase_add_test(tc, shipped_tables_meet_plugin_rules);
	tcase_add_test(tc, table_check_messages);
	tcase_add_test(tc, table_block_names);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(ty, NULL, yaml_teardown);
	tcase_add_test(ty, yaml_places_and_kinds);
	tcase_add_test(ty, yaml_aliases_share);
	tcase_add_test(ty, yaml_errors);
	tcase_add_test(ty, yaml_size_limit);
	tcase_add_test(ty, yaml_error_cap);
	suite_add_tcase(s, ty);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(param_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
