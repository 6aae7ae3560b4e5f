// SPDX-License-Identifier: MIT
/*
 * check_onnx_conformance.c - the ONNX importer against ONNX's own backend
 * tests (Debian's libonnx-testdata): every test of the "node" and
 * "pytorch-converted" suites whose model imports is run on each of its
 * test_data_set_*\/input_0.pb and compared with output_0.pb, as NumPy's
 * allclose does (|got - want| <= ATOL + RTOL |want|).
 *
 * The node tests give weights as graph inputs (input_1.pb, ...): they are
 * made initializers first, as mcomp reads weights as constants only. A
 * model mcomp still refuses (an op it has no mapping for, an opset before
 * 9, a shape it does not read) counts as refused; refusing is fine, computing a
 * wrong result is not: any imported model whose output differs fails the
 * test, since the importer should have refused it. Counts are printed per
 * op type (the type of the node that writes the graph's output), and with
 * -v every test with its refusal or its worst difference.
 *
 * The data's folder is MCOMP_ONNX_TESTDATA or Debian's; the test skips
 * (exit 77) when it is absent.
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <mcomp/model.h>
#include <mcomp/onnx.h>

#include "core/io/onnx.pb-c.h"

#define DATA_DIR "/usr/share/libonnx-testdata/data"
#define RTOL	 1e-3
#define ATOL	 1e-6
#define MAX_OPS	 512

static const char *const suites[] = {"node", "pytorch-converted", NULL};

struct count {
	char op[64];
	int run, passed, refused;
};

static struct count counts[MAX_OPS];
static int n_counts, verbose;

static struct count *count_of(const char *op)
{
	for (int i = 0; i < n_counts; i++)
		if (!strcmp(counts[i].op, op))
			return &counts[i];
	if (n_counts == MAX_OPS)
		return &counts[MAX_OPS - 1]; /* the last row takes the rest */
	snprintf(counts[n_counts].op, sizeof(counts[n_counts].op), "%s", op);
	return &counts[n_counts++];
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int by_op(const void *a, const void *b)
{
	return strcmp(((const struct count *)a)->op, ((const struct count *)b)->op);
}

/* The entries of dir starting with prefix, sorted (freed by the caller); -1 if dir is absent. */
static int list_dir(const char *dir, const char *prefix, char ***out)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **v = NULL;
	int n = 0;

	*out = NULL;
	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL) {
		char **nv;

		if (strncmp(e->d_name, prefix, strlen(prefix)))
			continue;
		nv = realloc(v, (size_t)(n + 1) * sizeof(*v));
		if (!nv || !(nv[n] = strdup(e->d_name))) {
			fprintf(stderr, "out of memory\n");
			exit(99);
		}
		v = nv;
		n++;
	}
	closedir(d);
	if (n)
		qsort(v, (size_t)n, sizeof(*v), by_name);
	*out = v;
	return n;
}

static void free_list(char **v, int n)
{
	for (int i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

static void *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	void *buf = NULL;
	long sz;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (sz = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)sz + 1);
		if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
			free(buf);
			buf = NULL;
		}
		*len = (size_t)sz;
	}
	fclose(f);
	return buf;
}

/* A float TensorProto file: its values into *data (malloc'd) and dims; -1 if not one. */
static int read_tensor(const char *path, float **data, int64_t *dims, int *ndim, int64_t *numel)
{
	size_t len;
	void *buf = slurp(path, &len);
	Onnx__TensorProto *t;
	int64_t n = 1;
	int r = -1;

	if (!buf)
		return -1;
	t = onnx__tensor_proto__unpack(NULL, len, buf);
	free(buf);
	if (!t)
		return -1;
	if (!t->has_data_type || t->data_type != 1 || t->n_dims > MC_MAX_DIMS + 1)
		goto out;
	for (size_t d = 0; d < t->n_dims; d++) {
		dims[d] = t->dims[d];
		n *= t->dims[d];
	}
	*ndim = (int)t->n_dims;
	*numel = n;
	*data = malloc((size_t)(n ? n : 1) * sizeof(float));
	if (!*data)
		goto out;
	if (t->has_raw_data && t->raw_data.len == (size_t)n * 4) {
		memcpy(*data, t->raw_data.data, (size_t)n * 4); /* little-endian, as x86 */
	} else if (!t->has_raw_data && t->n_float_data == (size_t)n) {
		memcpy(*data, t->float_data, (size_t)n * sizeof(float));
	} else {
		free(*data);
		*data = NULL;
		goto out;
	}
	r = 0;
out:
	onnx__tensor_proto__free_unpacked(t, NULL);
	return r;
}

/* The op type of the node that writes the graph's (first) output. */
static void output_op(const void *buf, size_t len, char *op, size_t n)
{
	Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
	const Onnx__GraphProto *g = mp ? mp->graph : NULL;

	snprintf(op, n, "(unreadable)");
	if (g && g->n_output && g->output[0]->name)
		for (size_t k = 0; k < g->n_node; k++)
			for (size_t o = 0; o < g->node[k]->n_output; o++)
				if (!strcmp(g->node[k]->output[o], g->output[0]->name))
					snprintf(op, n, "%s", g->node[k]->op_type);
	if (mp)
		onnx__model_proto__free_unpacked(mp, NULL);
}

/*
 * One data set of an imported model: 1 when the output matches, 0 when it
 * does not (the reason in why), -1 when the data is of a form the model
 * does not take (refused).
 */
static int run_set(struct mc_model *m, const char *dir, char *why, size_t wn)
{
	int64_t idims[MC_MAX_DIMS + 1], odims[MC_MAX_DIMS + 1], shape[MC_MAX_DIMS], in_numel, out_n;
	int indim, ondim, nd = mc_model_input_shape(m, shape), r = 0, bad = -1;
	const struct mc_node *last = mc_model_node(m, mc_model_n_nodes(m) - 1);
	float *x = NULL, *want = NULL;
	char path[4600];
	struct mc_err err = {0};
	struct mc_exec *e = NULL;
	const float *got;
	double worst = 0;

	snprintf(path, sizeof(path), "%s/input_0.pb", dir);
	if (read_tensor(path, &x, idims, &indim, &in_numel)) {
		snprintf(why, wn, "input_0.pb is not a float tensor");
		return -1;
	}
	if (indim != nd + 1 || idims[0] < 1 || idims[0] > 1 << 16 ||
	    memcmp(idims + 1, shape, (size_t)nd * sizeof(int64_t))) {
		snprintf(why, wn, "input_0.pb is not [N] + the model's sample shape");
		r = -1;
		goto out;
	}
	snprintf(path, sizeof(path), "%s/output_0.pb", dir);
	if (read_tensor(path, &want, odims, &ondim, &out_n)) {
		snprintf(why, wn, "output_0.pb is not a float tensor");
		r = -1;
		goto out;
	}
	if (out_n != idims[0] * last->out_numel) {
		snprintf(why, wn, "%lld output values, output_0.pb holds %lld",
			 (long long)(idims[0] * last->out_numel), (long long)out_n);
		goto out;
	}
	e = mc_exec_new(m, (int)idims[0], 0, &err);
	if (!e) {
		snprintf(why, wn, "mc_exec_new: %.400s", err.msg);
		goto out;
	}
	got = mc_forward(e, x, (int)idims[0]);
	for (int64_t i = 0; i < out_n; i++) {
		double d = fabs((double)got[i] - want[i]);

		if (isnan(got[i]) && isnan(want[i]))
			continue;
		if (!(d <= ATOL + RTOL * fabs(want[i])) && bad < 0)
			bad = (int)i;
		if (d > worst || isnan(d))
			worst = isnan(d) ? INFINITY : d;
	}
	if (bad >= 0)
		snprintf(why, wn, "value %d: got %.9g, want %.9g (worst difference %.3g)", bad,
			 got[bad], want[bad], worst);
	else
		snprintf(why, wn, "worst difference %.3g", worst);
	r = bad < 0;
out:
	mc_exec_free(e);
	free(want);
	free(x);
	return r;
}

/*
 * The model of dir with the data set's input_1.pb, input_2.pb, ... made
 * initializers of the graph inputs after the first: the node tests give
 * weights (a Conv's W, a Clip's bounds) as inputs, which mcomp reads as
 * constants only. Returns the packed model (malloc'd), or NULL when there
 * is nothing to fold or the data set gives no file for an input.
 */
static void *fold_inputs(const void *buf, size_t len, const char *set, size_t *out_len)
{
	Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, len, buf);
	Onnx__GraphProto *g = mp ? mp->graph : NULL;
	Onnx__TensorProto **inits = NULL, **extra = NULL;
	char **own_names = NULL; /* each extra tensor's own name, put back before freeing */
	size_t n_extra = 0, n_init;
	void *out = NULL;
	int ok = g && g->n_input > 1;

	if (!ok)
		goto done; /* nothing to fold: the model as it is */
	n_init = g->n_initializer;
	extra = calloc(g->n_input + 1, sizeof(*extra));
	own_names = calloc(g->n_input + 1, sizeof(*own_names));
	inits = calloc(n_init + g->n_input + 1, sizeof(*inits));
	if (!extra || !inits || !own_names) {
		ok = 0;
		goto done;
	}
	for (size_t j = 1; j < g->n_input && ok; j++) {
		char path[4600];
		size_t tl;
		void *tb;

		snprintf(path, sizeof(path), "%s/input_%zu.pb", set, j);
		tb = slurp(path, &tl);
		extra[n_extra] = tb ? onnx__tensor_proto__unpack(NULL, tl, tb) : NULL;
		free(tb);
		if (!extra[n_extra]) {
			ok = 0;
			break;
		}
		own_names[n_extra] = extra[n_extra]->name;
		extra[n_extra]->name = g->input[j]->name; /* borrowed; put back before freeing */
		n_extra++;
	}
	if (!ok)
		goto done;
	/* the graph with the extra inputs as initializers, packed, then put back */
	if (n_init) /* a graph without initializers has none to copy (NULL) */
		memcpy(inits, g->initializer, n_init * sizeof(*inits));
	memcpy(inits + n_init, extra, n_extra * sizeof(*inits));
	{
		Onnx__TensorProto **keep_init = g->initializer;
		size_t keep_n_init = g->n_initializer, keep_n_input = g->n_input;

		g->initializer = inits;
		g->n_initializer = n_init + n_extra;
		g->n_input = 1;
		*out_len = onnx__model_proto__get_packed_size(mp);
		out = malloc(*out_len ? *out_len : 1);
		if (out)
			onnx__model_proto__pack(mp, out);
		g->initializer = keep_init;
		g->n_initializer = keep_n_init;
		g->n_input = keep_n_input;
	}
done:
	for (size_t k = 0; k < n_extra; k++) {
		extra[k]->name = own_names[k];
		onnx__tensor_proto__free_unpacked(extra[k], NULL);
	}
	free(extra);
	free(own_names);
	free(inits);
	if (mp)
		onnx__model_proto__free_unpacked(mp, NULL);
	return out;
}

/* One test folder: counts it and returns 1 when an imported model computed wrong. */
static int run_test(const char *suite, const char *dir, const char *name)
{
	char path[4500], op[64], why[600] = "", **sets;
	struct mc_err err = {0};
	int n_sets, ok = 1, refused = 0;
	struct count *c;
	size_t len;
	void *buf;

	snprintf(path, sizeof(path), "%s/model.onnx", dir);
	buf = slurp(path, &len);
	if (!buf)
		return 0;
	output_op(buf, len, op, sizeof(op));
	c = count_of(op);
	n_sets = list_dir(dir, "test_data_set_", &sets);
	if (n_sets <= 0) {
		refused = 1;
		snprintf(why, sizeof(why), "no test_data_set_*");
	}
	for (int k = 0; k < n_sets && ok && !refused; k++) {
		char set[4500];
		struct mc_model *m;
		size_t flen;
		void *folded;

		snprintf(set, sizeof(set), "%s/%s", dir, sets[k]);
		folded = fold_inputs(buf, len, set, &flen);
		memset(&err, 0, sizeof(err));
		m = folded ? mc_model_from_onnx_buf(folded, flen, path, &err)
			   : mc_model_from_onnx_buf(buf, len, path, &err);
		free(folded);
		if (!m) {
			refused = 1;
			snprintf(why, sizeof(why), "%.590s", err.msg[0] ? err.msg : "(no message)");
			if (!err.msg[0]) {
				printf("FAIL %s/%s: refused without a message\n", suite, name);
				ok = 0;
			}
			break;
		}
		ok = run_set(m, set, why, sizeof(why));
		refused = ok < 0;
		mc_model_free(m);
	}
	free_list(sets, n_sets);
	free(buf);
	if (refused) {
		c->refused++;
		if (verbose)
			printf("refused %s/%s: %s\n", suite, name, why);
		return !ok;
	}
	c->run++;
	c->passed += ok;
	if (!ok || verbose)
		printf("%s %s/%s: %s\n", ok ? "passed" : "FAIL", suite, name, why);
	return !ok;
}

int main(int argc, char **argv)
{
	const char *root = getenv("MCOMP_ONNX_TESTDATA");
	int failed = 0, found = 0, run = 0, passed = 0, refused = 0;

	verbose = argc > 1 && !strcmp(argv[1], "-v");
	if (!root || !*root)
		root = DATA_DIR;
	for (int s = 0; suites[s]; s++) {
		char dir[4096], **tests;
		int n;

		snprintf(dir, sizeof(dir), "%s/%s", root, suites[s]);
		n = list_dir(dir, "test_", &tests);
		if (n < 0)
			continue;
		found++;
		for (int i = 0; i < n; i++) {
			char tdir[4400];

			snprintf(tdir, sizeof(tdir), "%s/%s", dir, tests[i]);
			failed += run_test(suites[s], tdir, tests[i]);
		}
		free_list(tests, n);
	}
	if (!found) {
		printf("SKIP: no ONNX backend test data in %s (install libonnx-testdata, or set "
		       "MCOMP_ONNX_TESTDATA to its data folder)\n",
		       root);
		return 77;
	}
	qsort(counts, (size_t)n_counts, sizeof(counts[0]), by_op);
	printf("%-28s %5s %7s %8s\n", "op (writing the output)", "run", "passed", "refused");
	for (int i = 0; i < n_counts; i++) {
		printf("%-28s %5d %7d %8d\n", counts[i].op, counts[i].run, counts[i].passed,
		       counts[i].refused);
		run += counts[i].run;
		passed += counts[i].passed;
		refused += counts[i].refused;
	}
	printf("%-28s %5d %7d %8d\n", "total", run, passed, refused);
	if (failed)
		printf("FAIL: %d imported model(s) computed wrong outputs; the importer must "
		       "refuse what it does not compute\n",
		       failed);
	return failed ? 1 : 0;
}
