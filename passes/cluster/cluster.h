/* SPDX-License-Identifier: MIT */
/*
 * cluster.h - the cluster pass's own declarations, shared by cluster.c
 * (parameters, validation, the run, centroid fine-tuning) and kmeans.c
 * (one layer's k-means, and its brute-force reference for the tests).
 *
 * A clustered layer is a linear or conv2d node; its weight is params[0].
 * Its nonzero weights are shared among k = 2^bits centroids; a zero weight
 * (pruned) is in no cluster and stays +0.0.
 */
#ifndef CLUSTER_H
#define CLUSTER_H

#include <mcomp/mcomp.h>

enum cluster_init { CLUSTER_LINEAR, CLUSTER_DENSITY, CLUSTER_KMEANSPP };

/* The assignment of a zero (pruned) weight: no cluster. */
#define CLUSTER_NONE 0xffffu
#define CLUSTER_MAX_K 256

struct cluster_conf {
	char *model;
	int bits;
	struct mc_map overrides; /* layer name or glob: bits */
	struct mc_list exclude;	 /* patterns */
	int bias_bits;		 /* 0: biases stay f32 */
	int init;
	int iterations;
	char *data;
	int finetune_epochs;
	int batch_size;
	int grad_groups; /* 0: one gradient per batch */
	struct mc_train_opts opts;
	int seed;
};

/*
 * k-means of the nonzero values of w[0..n) into k clusters (2 <= k <= 256,
 * n < 2^31): centroids[k] ascending, assign[n] the cluster of each weight
 * (CLUSTER_NONE for a zero). Initial centroids by init: linear (evenly over
 * [min, max]), density (evenly over the sorted values), k-means++ (draws
 * from (seed, stream)). Lloyd's iterations follow, at most max_iter, until
 * no weight changes cluster; a weight goes to its nearest centroid (ties to
 * the lower), a centroid is the mean of its members (a run of the values
 * sorted by value, then index: the difference of two prefix sums in
 * double, over the count), an empty cluster keeps its centroid, and
 * centroids are kept sorted. *iters gets the iterations run. O(n) once,
 * then O(k log n) per iteration. 0, or MC_EINVAL (a weight NaN
 * or infinite, bad sizes) / MC_ENOMEM with err set.
 */
int cluster_kmeans(const float *w, int64_t n, int k, int init, uint64_t seed, uint64_t stream,
		   int max_iter, uint16_t *assign, float *centroids, int *iters,
		   struct mc_err *err);
/* The same by brute force (every weight against every centroid): the
 * reference the tests hold cluster_kmeans to, bit for bit. */
int cluster_kmeans_ref(const float *w, int64_t n, int k, int init, uint64_t seed,
		       uint64_t stream, int max_iter, uint16_t *assign, float *centroids,
		       int *iters, struct mc_err *err);

/*
 * One step of centroid fine-tuning on w[0..n) after an optimizer step
 * moved its weights: each centroid moves by the sum of its members'
 * changes (in double, in index order, in fixed blocks so that the thread
 * count does not matter), then every member is set to its centroid and
 * every zero weight to +0.0. For SGD that is the step of the centroid
 * along the sum of its members' gradients. 0 or MC_ENOMEM with err set.
 */
int cluster_share(float *w, int64_t n, const uint16_t *assign, float *centroids, int k,
		  struct mc_err *err);

#endif
