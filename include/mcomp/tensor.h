/* SPDX-License-Identifier: MIT */
/*
 * mcomp/tensor.h - dense tensors, dtype traits, GEMM, counter-based RNG.
 *
 * Tensors are row-major with 64-byte aligned storage. A dtype is one row of
 * the traits table (name, safetensors name, bits per element); a new format
 * is a new row plus its kernels.
 *
 * Determinism: kernels split output elements among OpenMP threads and never
 * a reduction, so results are bit-identical for any OMP_NUM_THREADS. Random
 * numbers come from counter-based streams keyed by (seed, stream, index).
 */
#ifndef MCOMP_TENSOR_H
#define MCOMP_TENSOR_H

#include <mcomp/common.h>

#ifdef __cplusplus
extern "C" {
#endif

enum mc_dtype {
	MC_F32,
	MC_S8,
	MC_U8,
	MC_S32,
	MC_Q4, /* 4-bit, two per byte, first element in the low nibble */
	MC_DTYPE_COUNT,
};

struct mc_dtype_traits {
	const char *name;    /* "f32" */
	const char *st_name; /* safetensors dtype: "F32", "I8", "U8", "I32"; Q4 is stored as "U8" */
	int bits;	     /* per element */
};

/* The traits row of t, or NULL for a value outside the enum. */
MC_API const struct mc_dtype_traits *mc_dtype_traits(enum mc_dtype t);

#define MC_MAX_DIMS 8

struct mc_tensor {
	char *name; /* "fc1.weight"; may be NULL for scratch tensors */
	enum mc_dtype dtype;
	int ndim;
	int64_t shape[MC_MAX_DIMS];
	int64_t numel;
	void *data; /* mc_calloc'd, 64-byte aligned, owned by the tensor */
};

/* A zero-filled tensor (name may be NULL). NULL with err set on a bad shape
 * (ndim out of range, negative dim, size overflow) or out of memory. */
MC_API struct mc_tensor *mc_tensor_new(const char *name, enum mc_dtype dtype, int ndim,
				       const int64_t *shape, struct mc_err *err);
MC_API void mc_tensor_free(struct mc_tensor *t);
MC_API struct mc_tensor *mc_tensor_dup(const struct mc_tensor *t, struct mc_err *err);
/* Bytes of the payload: ceil(numel * bits / 8). */
MC_API size_t mc_tensor_nbytes(const struct mc_tensor *t);
/* "[512, 784]" into buf; returns buf. */
MC_API const char *mc_shape_text(int ndim, const int64_t *shape, char *buf, size_t n);

/*
 * C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major, where op(X)
 * is X or its transpose (ta, tb nonzero). lda/ldb/ldc are row strides of the
 * matrices as stored. Uses the fastest kernel the CPU supports; threads split
 * the output, so the result does not depend on the thread count. beta == 0
 * ignores the old contents of C (NaN included).
 */
MC_API void mc_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
		     const float *B, int ldb, float beta, float *C, int ldc);
/* The portable reference kernel with the same contract, ground truth for tests. */
MC_API void mc_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A,
			 int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* Name of the kernel mc_sgemm uses on this CPU ("avx2", "portable", ...). */
MC_API const char *mc_sgemm_kernel(void);

/* Philox4x32-10: four 32-bit words from (seed, stream, counter). */
MC_API void mc_philox(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4]);
/* Uniform in [0, 1) from the counter-th value of (seed, stream). */
MC_API float mc_rand_uniform(uint64_t seed, uint64_t stream, uint64_t counter);
/* Standard normal (Box-Muller over one Philox block). */
MC_API float mc_rand_normal(uint64_t seed, uint64_t stream, uint64_t counter);
/* A permutation of 0..n-1 (Fisher-Yates driven by (seed, stream)). */
MC_API void mc_rand_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t *perm);

#ifdef __cplusplus
}
#endif
#endif
