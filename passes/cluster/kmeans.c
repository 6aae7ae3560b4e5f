// SPDX-License-Identifier: MIT
/*
 * kmeans.c - one layer's k-means over its nonzero weights, and the
 * centroid step of fine-tuning.
 *
 * Weights are scalars, so k-means works on them sorted: with centroids in
 * ascending order, each cluster is a run of the sorted values, and the
 * assignment is k - 1 boundaries found by binary search; an update sums
 * each run in order. An iteration costs O(n) additions and O(k log n)
 * comparisons, after one O(n) radix sort. The brute-force reference
 * compares every weight with every centroid and sums members in the same
 * order, so both give the same centroids bit for bit.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"

/* A key whose unsigned order is the order of finite floats (-0.0 < +0.0). */
static uint32_t order_key(float v)
{
	uint32_t b;

	memcpy(&b, &v, 4);
	return b & 0x80000000u ? ~b : b | 0x80000000u;
}

static double dist(float v, float c)
{
	return fabs((double)v - (double)c);
}

/*
 * The nonzero values of w[0..n) sorted by (value, index) into *val and
 * their indices into *idx (malloc'd), *m of them: an LSD radix sort on the
 * value's key, stable, so equal values keep index order.
 */
static int sort_nonzero(const float *w, int64_t n, float **val, int64_t **idx, int64_t *m,
			struct mc_err *err)
{
	uint64_t *a = NULL, *b = NULL, *t;
	int64_t nz = 0, cnt[257];

	*val = NULL;
	*idx = NULL;
	if (n < 0 || n > INT32_MAX)
		return mc_err_set(err, MC_EINVAL, "cluster: %lld weights in one layer; at most 2^31 - 1",
				  (long long)n);
	for (int64_t i = 0; i < n; i++) {
		if (!isfinite(w[i]))
			return mc_err_set(err, MC_EINVAL,
					  "cluster: weight %lld is %g; k-means needs finite weights",
					  (long long)i, (double)w[i]);
		nz += w[i] != 0.0f;
	}
	a = malloc((size_t)nz * sizeof(*a) + 1);
	b = malloc((size_t)nz * sizeof(*b) + 1);
	*val = malloc((size_t)nz * sizeof(float) + 1);
	*idx = malloc((size_t)nz * sizeof(int64_t) + 1);
	if (!a || !b || !*val || !*idx) {
		free(a);
		free(b);
		free(*val);
		free(*idx);
		*val = NULL;
		*idx = NULL;
		return mc_err_set(err, MC_ENOMEM, "cluster: out of memory sorting %lld weights",
				  (long long)nz);
	}
	nz = 0;
	for (int64_t i = 0; i < n; i++)
		if (w[i] != 0.0f)
			a[nz++] = (uint64_t)order_key(w[i]) << 32 | (uint64_t)i;
	for (int shift = 32; shift < 64; shift += 8) {
		memset(cnt, 0, sizeof(cnt));
		for (int64_t i = 0; i < nz; i++)
			cnt[(a[i] >> shift & 0xff) + 1]++;
		for (int d = 0; d < 256; d++)
			cnt[d + 1] += cnt[d];
		for (int64_t i = 0; i < nz; i++)
			b[cnt[a[i] >> shift & 0xff]++] = a[i];
		t = a;
		a = b;
		b = t;
	}
	for (int64_t i = 0; i < nz; i++) {
		(*idx)[i] = (int64_t)(a[i] & 0xffffffffu);
		(*val)[i] = w[(*idx)[i]];
	}
	free(a);
	free(b);
	*m = nz;
	return 0;
}

/* Insertion sort of c[0..k) by value (stable). */
static void sort_centroids(float *c, int k)
{
	for (int j = 1; j < k; j++) {
		float x = c[j];
		int i = j;

		for (; i > 0 && c[i - 1] > x; i--)
			c[i] = c[i - 1];
		c[i] = x;
	}
}

/* Initial centroids from the sorted values v[0..n), n >= 1. */
static int init_centroids(const float *v, int64_t n, int k, int init, uint64_t seed,
			  uint64_t stream, float *c, struct mc_err *err)
{
	if (init == CLUSTER_LINEAR) {
		double lo = v[0], hi = v[n - 1];

		for (int j = 0; j < k; j++)
			c[j] = (float)(lo + (hi - lo) * j / (k - 1));
	} else if (init == CLUSTER_DENSITY) {
		/* the values at evenly spaced ranks: evenly over the CDF */
		for (int j = 0; j < k; j++) {
			int64_t r = (int64_t)(((double)j + 0.5) * (double)n / k);

			c[j] = v[r < n ? r : n - 1];
		}
	} else {
		/* k-means++: each next centroid drawn with probability
		 * proportional to the squared distance to the nearest so far. */
		double *d2 = malloc((size_t)n * sizeof(*d2));

		if (!d2)
			return mc_err_set(err, MC_ENOMEM, "cluster: out of memory for k-means++");
		c[0] = v[(int64_t)(mc_rand_uniform(seed, stream, 0) * (double)n) % n];
		for (int64_t i = 0; i < n; i++)
			d2[i] = dist(v[i], c[0]) * dist(v[i], c[0]);
		for (int j = 1; j < k; j++) {
			double total = 0, r, acc = 0;
			int64_t pick = 0;

			for (int64_t i = 0; i < n; i++)
				total += d2[i];
			r = mc_rand_uniform(seed, stream, (uint64_t)j) * total;
			for (int64_t i = 0; i < n; i++) {
				if (d2[i] > 0)
					pick = i;
				acc += d2[i];
				if (d2[i] > 0 && acc > r)
					break;
			}
			c[j] = v[pick];
			for (int64_t i = 0; i < n; i++) {
				double d = dist(v[i], c[j]) * dist(v[i], c[j]);

				if (d < d2[i])
					d2[i] = d;
			}
		}
		free(d2);
	}
	sort_centroids(c, k);
	return 0;
}

/*
 * The runs of the sorted values v[0..n) that ascending centroids c[0..k)
 * take: cluster j holds v[start[j] .. start[j + 1]). A value goes to its
 * nearest centroid, ties to the lower; of equal centroids the first takes
 * all. The preference for the next distinct centroid over the current one
 * only grows along v, so each boundary is a binary search.
 */
static void assign_runs(const float *v, int64_t n, const float *c, int k, int64_t *start)
{
	int64_t lo = 0;
	int j = 0;

	start[0] = 0;
	while (j < k) {
		int nx = j + 1;
		int64_t a, b;

		while (nx < k && c[nx] == c[j])
			nx++;
		a = lo;
		b = n;
		if (nx < k) {
			/* first i in [lo, n) preferring c[nx] to c[j] */
			while (a < b) {
				int64_t mid = a + (b - a) / 2;

				if (dist(v[mid], c[nx]) < dist(v[mid], c[j]))
					b = mid;
				else
					a = mid + 1;
			}
		} else {
			a = n;
		}
		for (int q = j + 1; q <= nx; q++)
			start[q] = a;
		lo = a;
		j = nx;
	}
}

/* Each centroid the mean of its run (summed in order, in double); an empty
 * one stays; then ascending again. */
static void update_centroids(const float *v, const int64_t *start, float *c, int k)
{
	for (int j = 0; j < k; j++) {
		double s = 0;

		if (start[j + 1] == start[j])
			continue;
		for (int64_t i = start[j]; i < start[j + 1]; i++)
			s += v[i];
		c[j] = (float)(s / (double)(start[j + 1] - start[j]));
	}
	sort_centroids(c, k);
}

int cluster_kmeans(const float *w, int64_t n, int k, int init, uint64_t seed, uint64_t stream,
		   int max_iter, uint16_t *assign, float *c, int *iters, struct mc_err *err)
{
	int64_t m = 0, *idx = NULL, *start = NULL, *next = NULL;
	float *v = NULL;
	int ret, it = 0;

	*iters = 0;
	if (k < 2 || k > CLUSTER_MAX_K || max_iter < 1)
		return mc_err_set(err, MC_EINVAL, "cluster: %d clusters, %d iterations; use 2 to %d "
				  "clusters and at least one iteration", k, max_iter, CLUSTER_MAX_K);
	ret = sort_nonzero(w, n, &v, &idx, &m, err);
	if (ret)
		return ret;
	for (int64_t i = 0; i < n; i++)
		assign[i] = CLUSTER_NONE;
	if (!m) {
		for (int j = 0; j < k; j++)
			c[j] = 0.0f;
		goto out;
	}
	start = malloc((size_t)(k + 1) * sizeof(*start));
	next = malloc((size_t)(k + 1) * sizeof(*next));
	if (!start || !next) {
		ret = mc_err_set(err, MC_ENOMEM, "cluster: out of memory");
		goto out;
	}
	ret = init_centroids(v, m, k, init, seed, stream, c, err);
	if (ret)
		goto out;
	assign_runs(v, m, c, k, start);
	while (it < max_iter) {
		update_centroids(v, start, c, k);
		it++;
		assign_runs(v, m, c, k, next);
		if (!memcmp(start, next, (size_t)(k + 1) * sizeof(*start)))
			break;
		memcpy(start, next, (size_t)(k + 1) * sizeof(*start));
	}
	/* the last assignment is of the last centroids */
	memcpy(start, next, (size_t)(k + 1) * sizeof(*start));
	for (int j = 0; j < k; j++)
		for (int64_t i = start[j]; i < start[j + 1]; i++)
			assign[idx[i]] = (uint16_t)j;
	*iters = it;
out:
	free(next);
	free(start);
	free(idx);
	free(v);
	return ret;
}

/*
 * The reference: labels per weight, each weight compared with every
 * centroid, members summed in the order of the sorted values. Shares only
 * the sort and the initial centroids with the fast version.
 */
int cluster_kmeans_ref(const float *w, int64_t n, int k, int init, uint64_t seed,
		       uint64_t stream, int max_iter, uint16_t *assign, float *c, int *iters,
		       struct mc_err *err)
{
	int64_t m = 0, *idx = NULL, *count = NULL;
	uint16_t *lab = NULL, *prev = NULL;
	double *sum = NULL;
	float *v = NULL;
	int ret, it = 0;

	*iters = 0;
	if (k < 2 || k > CLUSTER_MAX_K || max_iter < 1)
		return mc_err_set(err, MC_EINVAL, "cluster: bad sizes");
	ret = sort_nonzero(w, n, &v, &idx, &m, err);
	if (ret)
		return ret;
	for (int64_t i = 0; i < n; i++)
		assign[i] = CLUSTER_NONE;
	for (int j = 0; j < k; j++)
		c[j] = 0.0f;
	lab = malloc((size_t)m * sizeof(*lab) + 1);
	prev = malloc((size_t)m * sizeof(*prev) + 1);
	sum = malloc((size_t)k * sizeof(*sum));
	count = malloc((size_t)k * sizeof(*count));
	if (!lab || !prev || !sum || !count) {
		ret = mc_err_set(err, MC_ENOMEM, "cluster: out of memory");
		goto out;
	}
	if (!m)
		goto out;
	ret = init_centroids(v, m, k, init, seed, stream, c, err);
	if (ret)
		goto out;
	for (;;) {
		for (int64_t i = 0; i < m; i++) {
			double bd = dist(v[i], c[0]);
			int best = 0;

			for (int j = 1; j < k; j++) {
				if (dist(v[i], c[j]) < bd) {
					bd = dist(v[i], c[j]);
					best = j;
				}
			}
			lab[i] = (uint16_t)best;
		}
		if (it && !memcmp(lab, prev, (size_t)m * sizeof(*lab)))
			break;
		if (it == max_iter)
			break;
		memcpy(prev, lab, (size_t)m * sizeof(*lab));
		for (int j = 0; j < k; j++) {
			sum[j] = 0;
			count[j] = 0;
		}
		for (int64_t i = 0; i < m; i++) {
			sum[lab[i]] += v[i];
			count[lab[i]]++;
		}
		for (int j = 0; j < k; j++)
			if (count[j])
				c[j] = (float)(sum[j] / (double)count[j]);
		sort_centroids(c, k);
		it++;
	}
	for (int64_t i = 0; i < m; i++)
		assign[idx[i]] = lab[i];
	*iters = it;
out:
	free(count);
	free(sum);
	free(prev);
	free(lab);
	free(idx);
	free(v);
	return ret;
}

/* Weights per block of the centroid sums: fixed, so that the sums do not
 * depend on how many threads share the blocks. */
#define SHARE_BLOCK 16384

int cluster_share(float *w, int64_t n, const uint16_t *assign, float *c, int k,
		  struct mc_err *err)
{
	int64_t nb = (n + SHARE_BLOCK - 1) / SHARE_BLOCK;
	double *part = calloc((size_t)(nb * k) + 1, sizeof(*part));

	if (!part)
		return mc_err_set(err, MC_ENOMEM, "cluster: out of memory fine-tuning centroids");
#pragma omp parallel for schedule(static) if (nb > 1)
	for (int64_t b = 0; b < nb; b++) {
		int64_t end = (b + 1) * SHARE_BLOCK < n ? (b + 1) * SHARE_BLOCK : n;

		for (int64_t i = b * SHARE_BLOCK; i < end; i++)
			if (assign[i] != CLUSTER_NONE)
				part[b * k + assign[i]] += (double)w[i] - (double)c[assign[i]];
	}
	for (int j = 0; j < k; j++) {
		double s = 0;

		for (int64_t b = 0; b < nb; b++)
			s += part[b * k + j];
		c[j] = (float)((double)c[j] + s);
	}
	free(part);
#pragma omp parallel for schedule(static) if (n >= 65536)
	for (int64_t i = 0; i < n; i++)
		w[i] = assign[i] == CLUSTER_NONE ? 0.0f : c[assign[i]];
	return 0;
}
