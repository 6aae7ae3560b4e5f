// SPDX-License-Identifier: MIT
/*
 * model.c - fuzzes model files (mc_model_load): the safetensors container,
 * the architecture JSON under __metadata__["mcomp.arch"], the sparse and
 * quantized tensor layouts ("mcomp.sparse") and the plugin ops list.
 *
 * An input starting with '{' is the JSON header, FZ_SEP, then the data
 * section: the harness prepends the header's length, so that mutations of
 * the JSON keep a well-formed container and reach the model reader. Any
 * other input is a whole file, as is (a zstd frame is decoded first).
 *
 * What loads must hold up: it is saved and loaded again and gives the same
 * bytes, and when small enough (flops) it runs a forward of one sample.
 */
#include "fuzz.h"

#include <mcomp/model.h>

/* A forward pass per input only for models this small (multiply-adds). */
#define FORWARD_MAX_FLOPS 2000000

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_no_stdin();
	return 0;
}

/* Writes the input as a model file; its path into path. */
static void write_model(char *path, size_t size, const uint8_t *data, size_t n)
{
	struct fz_part parts[2];
	uint8_t *file;
	size_t len;

	if (!n || data[0] != '{' || fz_split(data, n, parts, 2) != 2) {
		fz_write(path, size, "model.safetensors", data, n);
		return;
	}
	len = 8 + parts[0].n + parts[1].n;
	file = malloc(len);
	if (!file)
		abort();
	for (int i = 0; i < 8; i++)
		file[i] = (uint8_t)((uint64_t)parts[0].n >> (8 * i));
	memcpy(file + 8, parts[0].p, parts[0].n);
	memcpy(file + 8 + parts[0].n, parts[1].p, parts[1].n);
	fz_write(path, size, "model.safetensors", file, len);
	free(file);
}

static void round_trip(struct mc_model *m)
{
	struct mc_err err = { 0 };
	struct mc_model *back;
	void *a = NULL, *b = NULL;
	size_t na, nb;
	char path[4352];

	if (mc_model_serialize(m, &a, &na, &err))
		abort(); /* a model that loaded can be written */
	fz_write(path, sizeof(path), "again.safetensors", a, na);
	back = mc_model_load(path, &err);
	if (!back) {
		fprintf(stderr, "saved model does not load: %s\n", err.msg);
		abort();
	}
	if (mc_model_serialize(back, &b, &nb, &err) || na != nb || memcmp(a, b, na)) {
		fprintf(stderr, "saved model loads as another one\n");
		abort();
	}
	mc_model_free(back);
	free(a);
	free(b);
}

static void forward_one(struct mc_model *m)
{
	struct mc_err err = { 0 };
	struct mc_exec *e;
	int64_t in = mc_model_in_numel(m), classes = mc_model_n_classes(m);
	float *x;
	const float *y;

	if (in <= 0 || in > 1 << 16 || classes <= 0 || mc_model_flops(m) > FORWARD_MAX_FLOPS)
		return;
	e = mc_exec_new(m, 1, 0, &err);
	if (!e)
		return; /* out of memory is no finding */
	x = calloc((size_t)in, sizeof(*x));
	if (!x)
		abort();
	for (int64_t i = 0; i < in; i++)
		x[i] = (float)(i % 7) * 0.25f - 0.5f;
	y = mc_forward(e, x, 1);
	if (!y)
		abort();
	(void)mc_argmax(y, (int)classes);
	free(x);
	mc_exec_free(e);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mc_err err = { 0 };
	struct mc_model *m;
	char path[4352];

	write_model(path, sizeof(path), data, size);
	m = mc_model_load(path, &err);
	if (!m) {
		fz_refused("model", &err);
		return 0;
	}
	fz_accepted("model");
	(void)mc_model_nparams(m);
	(void)mc_model_nonzeros(m);
	round_trip(m);
	forward_one(m);
	mc_model_free(m);
	return 0;
}
