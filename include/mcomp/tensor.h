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
 * ignores the old contents of C (NaN included). Every kernel gives the same
 * bytes: per K slice of 256 in order, a chain of fused multiply-adds from
 * zero, then C = fma(alpha, sum, beta * C); with three rows or fewer, the
 * same per column, or 16 lanes added in one tree when B is transposed.
 */
MC_API void mc_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
		     const float *B, int ldb, float beta, float *C, int ldc);
/* The portable reference kernel with the same contract, ground truth for tests. */
MC_API void mc_sgemm_ref(int ta, int tb, int M, int N, int K, float alpha, const float *A,
			 int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* Name of the kernel mc_sgemm uses on this CPU ("avx2", "portable", ...). */
MC_API const char *mc_sgemm_kernel(void);

/*
 * Forces the f32 GEMM kernel by name ("avx512", "avx2", "portable"), as the
 * MCOMP_GEMM environment variable does at start-up; for tests and
 * benchmarks, not to be called while another thread runs a GEMM. Returns 0,
 * or MC_EINVAL (nothing changed) for a name this CPU cannot run.
 */
MC_API int mc_sgemm_use(const char *kernel);

/*
 * Integer GEMM for quantized inference: u8 activations (one scale sa and
 * zero point za per tensor) times s8 weights (symmetric, one scale per
 * output channel), exact s32 sums, f32 output:
 *
 *	acc[m][n] = sum_k a[m][k] * w[n][k]
 *	y[m][n]   = (sa * sw[n]) * (float)(acc[m][n] - za * colsum_w[n]) + bias[n]
 *
 * (a multiply, then an add: two roundings, which ONNX's Mul and Add can
 * state, so an exported model computes the same bits in ONNX Runtime)
 *
 * then max(y, 0) with MC_S8_RELU, min(max(y, 0), 6) with MC_S8_RELU6. W is laid out like a linear layer's
 * weight, [N out, K in]; it is packed once (mc_s8_pack) into the kernels'
 * layout together with its scales, bias and column sums. The kernel is
 * chosen at run time: "amx" (Sapphire Rapids tiles, 32-row blocks; fewer
 * rows go to vpdpbusd), "avx512-vnni" (vpdpbusd on zmm), "avx-vnni" (ymm),
 * "avx2" (no VNNI: s16 x s16 vpmaddwd on a widened copy of the weights,
 * made on its first use; exact, unlike vpmaddubsw, which saturates; but
 * when every weight lies in [-64, 64], 7-bit weights as the quantize pass's
 * reduce_range makes them, u8 x s8 vpmaddubsw, which then cannot saturate,
 * on the packed weights as they are), "portable"; MCOMP_GEMM_S8 or
 * mc_gemm_s8_use() forces one. All
 * give the same s32 sums bit for bit, and the same y. Threads split the
 * output, so the result does not depend on the thread count either.
 *
 * Room for 4-bit group-wise weights: a packing of its own (two values a
 * byte, one scale per group of K) feeding the same micro-kernels, unpacked
 * in registers group by group, the group's s32 sum scaled into an f32 sum.
 */
#define MC_S8_RELU 1u  /* mc_gemm_u8s8 flag: y = max(y, 0) */
#define MC_S8_RELU6 2u /* mc_gemm_u8s8 flag: y = min(max(y, 0), 6) (NaN becomes 0) */

struct mc_s8_weights; /* packed s8 weights [N, K] with scales, bias and column sums */

/*
 * Packs w[N, K] (row stride ldw >= K) with per-channel scales sw[N] (finite,
 * > 0) and bias[N] (NULL for none). K is at most 65536, so s32 sums of
 * 255 * 127 products cannot overflow. NULL with err set (MC_EINVAL for bad
 * sizes or scales, MC_ENOMEM).
 */
MC_API struct mc_s8_weights *mc_s8_pack(const int8_t *w, int N, int K, int ldw, const float *sw,
					const float *bias, struct mc_err *err);
MC_API void mc_s8_free(struct mc_s8_weights *p);
/* Output channels N and depth K of packed weights. */
MC_API int mc_s8_n(const struct mc_s8_weights *p);
MC_API int mc_s8_k(const struct mc_s8_weights *p);
/* 1 when every weight lies in [-64, 64] (7-bit, reduce_range): "avx2" then takes vpmaddubsw. */
MC_API int mc_s8_7bit(const struct mc_s8_weights *p);

/* y[M, N] (row stride ldy) from a[M, K] (row stride lda), as above. */
MC_API void mc_gemm_u8s8(int M, const uint8_t *a, int lda, float sa, int za,
			 const struct mc_s8_weights *w, unsigned flags, float *y, int ldy);
/* The exact sums acc[M, N] (row stride ldc) only. */
MC_API void mc_gemm_u8s8_s32(int M, const uint8_t *a, int lda, const struct mc_s8_weights *w,
			     int32_t *c, int ldc);
/* Reference loops with the same results, from unpacked w[N, K]; ground truth for tests. */
MC_API void mc_gemm_u8s8_s32_ref(int M, int N, int K, const uint8_t *a, int lda, const int8_t *w,
				 int ldw, int32_t *c, int ldc);
MC_API void mc_gemm_u8s8_ref(int M, int N, int K, const uint8_t *a, int lda, float sa, int za,
			     const int8_t *w, int ldw, const float *sw, const float *bias,
			     unsigned flags, float *y, int ldy);
/* Name of the int8 kernel in use ("amx", "avx512-vnni", "avx-vnni", "avx2", "portable"). */
MC_API const char *mc_gemm_s8_kernel(void);
/* Forces the int8 kernel by name, for tests and benchmarks (see mc_sgemm_use).
 * Returns 0, or MC_EINVAL for a name this CPU cannot run. */
MC_API int mc_gemm_s8_use(const char *kernel);

/*
 * Activation quantization, per tensor: q = clamp(nearbyint(x / scale) + zp,
 * 0, 255), rounding half to even; NaN becomes 0. mc_u8_qparams picks the
 * scale and zero point that map [min(lo, 0), max(hi, 0)] onto [0, 255]
 * (0.0 exactly representable; scale 1, zp 0 for an all-zero range);
 * mc_minmax finds lo and hi (0, 0 for n == 0; NaN ignored).
 */
MC_API void mc_u8_qparams(float lo, float hi, float *scale, int *zero_point);
MC_API void mc_quantize_u8(const float *x, size_t n, float scale, int zero_point, uint8_t *q);
MC_API void mc_quantize_u8_ref(const float *x, size_t n, float scale, int zero_point, uint8_t *q);
MC_API void mc_minmax(const float *x, size_t n, float *lo, float *hi);

/*
 * Weight quantization (docs/quantize.md). A row-major [rows, cols] f32
 * matrix is cut into blocks that share one scale s (and, asymmetric, one
 * zero point z): the whole tensor (group 0), each row (group == cols: per
 * channel) or each run of group columns of a row (per group). For b bits:
 *
 *	symmetric:  s = max|w| / (2^(b-1) - 1), z = 0, q in [-(2^(b-1) - 1), 2^(b-1) - 1]
 *	            (int8: [-127, 127]; int4: [-7, 7])
 *	asymmetric: lo = min(min w, 0), hi = max(max w, 0), s = (hi - lo) / (2^b - 1),
 *	            z = clamp(-2^(b-1) - nearbyint(lo / s)), q in [-2^(b-1), 2^(b-1) - 1]
 *	q = clamp(nearbyint(w / s) + z), rounding half to even; w ~ (q - z) * s.
 *
 * reduce_range (8 bits only): q in [-64, 64] instead, both schemes: s =
 * max|w| / 64 symmetric, s = (hi - lo) / 128 and z = clamp(-64 -
 * nearbyint(lo / s)) asymmetric, as ONNX Runtime's quantizer reduces int8
 * weights; the int8 GEMM on AVX2 without VNNI multiplies such weights with
 * vpmaddubsw, which cannot saturate on them (mc_s8_7bit).
 *
 * A block of zeros gets s = 1, z = 0. q[rows * cols] holds one value per
 * int8; scale and zp (NULL when symmetric) hold one value per block, in
 * row-major block order. The fast version splits rows among threads and
 * gives exactly the reference's bytes. Both return 0, or MC_EINVAL with err
 * set for bad sizes (bits not 4 or 8, group not dividing cols) or a weight
 * that is NaN or infinite.
 */
struct mc_qspec {
	int bits;  /* 8 or 4 */
	int asym;  /* 0: symmetric, 1: asymmetric */
	int group; /* columns per block: 0 for the whole tensor, else a divisor of cols */
	int reduce_range; /* 8 bits: q in [-64, 64] (7-bit weights), not [-127, 127] */
};

/* Blocks of a [rows, cols] matrix under s: 1, or rows * cols / group. */
MC_API int64_t mc_qspec_blocks(const struct mc_qspec *s, int64_t rows, int64_t cols);
MC_API int mc_quantize_weights(const float *w, int64_t rows, int64_t cols,
			       const struct mc_qspec *s, int8_t *q, float *scale, int8_t *zp,
			       struct mc_err *err);
MC_API int mc_quantize_weights_ref(const float *w, int64_t rows, int64_t cols,
				   const struct mc_qspec *s, int8_t *q, float *scale, int8_t *zp,
				   struct mc_err *err);
/* w = (q - z) * s for every element, the inverse map. */
MC_API void mc_dequantize_weights(const int8_t *q, int64_t rows, int64_t cols,
				  const struct mc_qspec *s, const float *scale, const int8_t *zp,
				  float *w);
/*
 * 4-bit packing (MC_Q4): element i is the nibble (i % 2 ? high : low) of
 * byte i / 2, holding q + 8 (so q in [-8, 7] becomes 0..15); an odd count
 * leaves the last high nibble 0. Unpacking is the exact inverse.
 */
MC_API void mc_q4_pack(const int8_t *q, int64_t n, uint8_t *packed);
MC_API void mc_q4_unpack(const uint8_t *packed, int64_t n, int8_t *q);

/*
 * Activation ranges for static quantization, from n observed values
 * (NaN ignored): the [lo, hi] whose mc_u8_qparams map serves them best.
 * MC_RANGE_MINMAX: the smallest and largest value; MC_RANGE_PERCENTILE: the
 * values at ranks 1 - pct/100 and pct/100 of the sorted values (pct in
 * [50, 100]), so rare outliers are clamped; MC_RANGE_MSE: of the minmax range
 * scaled by t/100, t = 1..100, the one whose u8 round trip has the least
 * squared error. lo <= 0 <= hi always. Returns 0, or MC_ENOMEM / MC_EINVAL
 * (unknown method, pct out of range) with err set.
 */
enum mc_range_method { MC_RANGE_MINMAX, MC_RANGE_PERCENTILE, MC_RANGE_MSE };
MC_API int mc_act_range(const float *x, size_t n, enum mc_range_method method, double pct,
			float *lo, float *hi, struct mc_err *err);

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
