// SPDX-License-Identifier: MIT
/*
 * pipeline.c - fuzzes pipeline validation (mc_pipeline_load): the YAML
 * reader, the schema, --set overrides, every pass's parameter checks (the
 * passes on MCOMP_PASS_PATH are loaded once, as mcomp validate does) and the
 * checks of models and data the pipeline names. Nothing is run.
 *
 * The input is the pipeline, then (after FZ_SEP, optional) --set overrides,
 * one "key=value" a line. The pipeline is written to p/pipeline.yaml in the
 * harness's folder, beside what the seed pipelines name: data/tiny (an IDX
 * data set of 32 images of 28x28), data/x.npy and data/y.npy (the same as
 * NumPy arrays), models/tiny.safetensors (a linear 784 -> 10) and
 * models/corrupt.safetensors.
 */
#include "fuzz.h"

#include <mcomp/mcomp.h>

#define MAX_SETS 16
#define TINY_N	 32

static struct mc_registry *reg;

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

/* What the seed pipelines name, in the harness's folder. */
static void write_fixtures(void)
{
	static unsigned char img[16 + TINY_N * 784], lab[8 + TINY_N], ynpy[128 + TINY_N];
	static float x[TINY_N * 784];
	const char *arch = "{\"format\": 1, \"input\": [784], \"nodes\": ["
			   "{\"name\": \"fc\", \"op\": \"linear\", \"inputs\": [\"input\"], "
			   "\"attrs\": {\"out\": 10}}]}";
	const int64_t xshape[] = { TINY_N, 1, 28, 28 };
	struct mc_err err = { 0 };
	struct mc_model *m;
	char path[4352];
	int hl;

	put_be32(img, 0x803);
	put_be32(img + 4, TINY_N);
	put_be32(img + 8, 28);
	put_be32(img + 12, 28);
	put_be32(lab, 0x801);
	put_be32(lab + 4, TINY_N);
	for (int i = 0; i < TINY_N; i++) {
		int c = i % 10;

		lab[8 + i] = (unsigned char)c;
		for (int r = 0; r < 4; r++)
			for (int q = 0; q < 4; q++) {
				img[16 + i * 784 + (2 + r) * 28 + 2 * c + q] = 255;
				x[i * 784 + (2 + r) * 28 + 2 * c + q] = 1.0f;
			}
	}
	fz_write(path, sizeof(path), "data/tiny-images-idx3-ubyte", img, sizeof(img));
	fz_write(path, sizeof(path), "data/tiny-labels-idx1-ubyte", lab, sizeof(lab));
	fz_path(path, sizeof(path), "data/x.npy");
	if (mc_npy_write_f32(path, 4, xshape, x, &err))
		goto fail;
	/* labels as uint8, the header padded to 64 bytes as NumPy writes it */
	memcpy(ynpy, "\x93NUMPY\x01\x00\x76\x00", 10);
	memset(ynpy + 10, ' ', 118);
	hl = snprintf((char *)ynpy + 10, 118, "{'descr': '|u1', 'fortran_order': False, "
					      "'shape': (%d,), }", TINY_N);
	ynpy[10 + hl] = ' ';
	ynpy[127] = '\n';
	memcpy(ynpy + 128, lab + 8, TINY_N);
	fz_write(path, sizeof(path), "data/y.npy", ynpy, sizeof(ynpy));
	m = mc_model_from_arch(arch, "fuzz", &err);
	if (!m)
		goto fail;
	mc_model_init(m, 1);
	fz_path(path, sizeof(path), "models/tiny.safetensors");
	if (mc_model_save(m, path, &err))
		goto fail;
	mc_model_free(m);
	fz_write(path, sizeof(path), "models/corrupt.safetensors",
		 "\xff\xff\xff\xff\xff\xff\xff\x7f{", 9);
	return;
fail:
	fprintf(stderr, "pipeline fuzzer: cannot write its fixtures: %s\n", err.msg);
	exit(1);
}

static void close_registry(void)
{
	mc_registry_free(reg);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	struct mc_err err = { 0 };

	(void)argc;
	(void)argv;
	fz_no_stdin();
#ifdef MC_FUZZ_PASSDIR
	/* the build tree's passes, unless told otherwise */
	setenv("MCOMP_PASS_PATH", MC_FUZZ_PASSDIR, 0);
#endif
	write_fixtures();
	reg = mc_registry_open(&err);
	if (!reg) {
		fprintf(stderr, "pipeline fuzzer: %s\n", err.msg);
		exit(1);
	}
	if (mc_registry_count(reg) == 0)
		fprintf(stderr, "pipeline fuzzer: no passes on the pass path (%s); pass "
				"parameters go unchecked\n",
			mc_pass_path());
	atexit(close_registry);
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mc_err err = { 0 };
	struct fz_part parts[2];
	char path[4352], *sets[MAX_SETS], *text = NULL;
	struct mc_pipeline *p;
	int n_sets = 0;

	if (fz_split(data, size, parts, 2) == 2) {
		char *line, *save = NULL;

		text = fz_strndup(parts[1].p, parts[1].n);
		for (line = strtok_r(text, "\n", &save); line && n_sets < MAX_SETS;
		     line = strtok_r(NULL, "\n", &save))
			sets[n_sets++] = line;
	}
	fz_write(path, sizeof(path), "p/pipeline.yaml", parts[0].p, parts[0].n);
	p = mc_pipeline_load(path, (const char *const *)sets, n_sets, reg, &err);
	if (!p) {
		fz_refused("pipeline", &err);
	} else {
		fz_accepted("pipeline");
		mc_pipeline_free(p);
	}
	free(text);
	return 0;
}
