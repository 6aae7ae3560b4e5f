/* SPDX-License-Identifier: MIT */
/*
 * gemm.h - the f32 GEMM with its B operand packed once, for weights that
 * stay put across calls (a linear layer at inference). Not installed.
 *
 * mc_sgemm packs B afresh on every call; a layer that multiplies the same
 * weights by batch after batch can pack them once into the GEMM's own
 * layout for a kernel and pass them to mc_sgemm_pb, which then packs only
 * A. The sums are those of mc_sgemm: same kernel, same slices, same order.
 */
#ifndef MCOMP_KERNELS_GEMM_H
#define MCOMP_KERNELS_GEMM_H

#include <stddef.h>
#include <stdint.h>

/* Floats of op(B) [K, N] packed for the kernel named (mc_sgemm_kernel()); 0
 * when no such kernel runs here. */
size_t mc_sgemm_packed_size(const char *kernel, int N, int K);

/* Packs op(B) (tb: B is [N, K], else [K, N]) into dst of mc_sgemm_packed_size floats,
 * 64-byte aligned (the kernels load it aligned). */
void mc_sgemm_pack_b(const char *kernel, int tb, int N, int K, const float *B, int ldb,
		     float *dst);

/*
 * C = relu?(alpha A op(B) + bias): mc_sgemm(0, tb, ...), A not transposed,
 * with packed = op(B) packed for `kernel`. bias (N floats, may be NULL)
 * stands for C holding bias in every row before the product, with beta 1
 * (beta is then ignored); relu, for max(C, 0) as a select after it (NaN ->
 * 0), as the relu op computes it. The values are those of those three steps
 * done one after another; the bias and relu are applied tile by tile while
 * the tile is in cache. B and ldb are still needed (a product of a few rows
 * of A reads B as it is). Returns -1, computing nothing, when `kernel` is
 * no longer the one mc_sgemm uses (mc_sgemm_use changed it): pack again.
 */
int mc_sgemm_pb(const char *kernel, int tb, int M, int N, int K, float alpha, const float *A,
		int lda, const float *B, int ldb, const float *packed, const float *bias, int relu,
		float beta, float *C, int ldc);

/*
 * Work for the product's threads besides its tiles: fn(arg, i) for every i
 * in [0, items), each once, on whichever thread and in whatever order, all
 * returned before mc_sgemm_pb_side does. Each thread runs its share of the
 * items before its tiles, with no barrier after them: a checksum of the
 * weights needs no parallel region (and join) of its own.
 */
struct mc_sgemm_side {
	void (*fn)(void *arg, int64_t item);
	void *arg;
	int64_t items;
};

/* mc_sgemm_pb and, when side is not NULL, side's items (none when it returns -1). */
int mc_sgemm_pb_side(const char *kernel, int tb, int M, int N, int K, float alpha, const float *A,
		     int lda, const float *B, int ldb, const float *packed, const float *bias,
		     int relu, float beta, float *C, int ldc, const struct mc_sgemm_side *side);

/*
 * Data-parallel training (core/graph/train.c) sums a weight gradient
 * C[M, N] = A^T B over a batch's K rows split among ranks, and must give
 * the bytes of one mc_sgemm(1, 0, M, N, K, 1, A, lda, B, ldb, 1, C, ldc) onto
 * a zeroed C. Within a K slice of at most MC_SGEMM_KC rows every kernel
 * sums each element as one chain of fused multiply-adds from 0, k in order,
 * then stores C = acc + C. mc_sgemm_tn_chain continues that chain over the
 * next rows: acc starts at C (the previous part's acc, 0 for the first) and
 * runs over rows [0, K) of this part; with last, C = acc + 0 as the kernels
 * store it (a zero's sign as they leave it). A is [K, M], B [K, N].
 */
#define MC_SGEMM_KC 256
void mc_sgemm_tn_chain(int M, int N, int K, const float *A, int lda, const float *B, int ldb,
		       float *C, int ldc, int last);

#endif
