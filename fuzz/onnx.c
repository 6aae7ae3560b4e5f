// SPDX-License-Identifier: MIT
/*
 * onnx.c - fuzzes the ONNX importer (mc_model_from_onnx_buf): the protobuf
 * (through protobuf-c), the graph's names, order and cycles, initializers
 * and Constant nodes, attributes, opsets, the shape computations done at
 * import, and the folding of constants into weights. Inputs are whole
 * .onnx files.
 *
 * What imports must hold up: it is written as an mcomp model file, and as
 * ONNX again when mc_model_onnx_check says it can be; when small enough it
 * runs a forward of one sample.
 */
#include "fuzz.h"

#include <mcomp/onnx.h>

#define FORWARD_MAX_FLOPS 2000000

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fz_no_stdin();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mc_err err = { 0 };
	struct mc_model *m;
	void *buf = NULL;
	size_t len;

	m = mc_model_from_onnx_buf(data, size, "fuzz.onnx", &err);
	if (!m) {
		fz_refused("onnx", &err);
		return 0;
	}
	fz_accepted("onnx");
	if (mc_model_serialize(m, &buf, &len, &err)) {
		fprintf(stderr, "imported model cannot be written: %s\n", err.msg);
		abort();
	}
	free(buf);
	buf = NULL;
	if (!mc_model_onnx_check(m, &err)) {
		if (mc_model_serialize_onnx(m, NULL, &buf, &len, &err)) {
			fprintf(stderr, "checked model cannot be exported: %s\n", err.msg);
			abort();
		}
		free(buf);
	}
	if (mc_model_flops(m) <= FORWARD_MAX_FLOPS && mc_model_in_numel(m) > 0 &&
	    mc_model_in_numel(m) <= 1 << 16) {
		struct mc_exec *e = mc_exec_new(m, 1, 0, &err);

		if (e) {
			float *x = calloc((size_t)mc_model_in_numel(m), sizeof(float));

			if (!x)
				abort();
			(void)mc_forward(e, x, 1);
			free(x);
			mc_exec_free(e);
		}
	}
	mc_model_free(m);
	return 0;
}
