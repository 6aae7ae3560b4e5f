// SPDX-License-Identifier: MIT
/*
 * kmeans.c - one layer's k-means over its nonzero weights, and the
 * centroid step of fine-tuning.
 *
 * Weights are scalars, so k-means works on them sorted: with centroids in
 * ascending order, each cluster is a run of the sorted values, the
 * assignment is k - 1 boundaries found by binary search, and a centroid is
 * its run's mean from prefix sums. After one O(n) radix sort and one pass
 * of sums, an iteration costs O(k log n). The brute-force reference
 * compares every weight with every centroid; both give the same
 * assignments and centroids bit for bit.
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

/* The float whose order_key is key. */
static float key_value(uint32_t key)
{
	uint32_t b = key & 0x80000000u ? key & 0x7fffffffu : ~key;
	float v;

	memcpy(&v, &b, 4);
	return v;
}

/* Value i of the sorted entries a (key << 32 | index). */
static inline float value_at(const uint64_t *a, int64_t i)
{
	return key_value((uint32_t)(a[i] >> 32));
}

/*
 * The nonzero values of w[0..n) sorted by (value, index) into *out
 * (malloc'd), *m of them, each as its order key << 32 | its index: an LSD
 * radix sort on the key, stable, so equal values keep index order.
 */
static int sort_nonzero(const float *w, int64_t n, uint64_t **out, int64_t *m,
			struct mc_err *err)
{
	uint64_t *a = NULL, *b = NULL, *t;
	int64_t nz = 0, cnt[257];

	*out = NULL;
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
	if (!a || !b) {
		free(a);
		free(b);
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
	free(b);
	*out = a;
	*m = nz;
	return 0;
}

/* p[i] = the sum of the first i sorted values, in double, in order: a
 * run's sum is then p[end] - p[start], the same whatever finds the run. */
static double *prefix_sums(const uint64_t *a, int64_t m, struct mc_err *err)
{
	double *p = malloc((size_t)(m + 1) * sizeof(*p));

	if (!p) {
		mc_err_set(err, MC_ENOMEM, "cluster: out of memory for %lld sums", (long long)m);
		return NULL;
	}
	p[0] = 0;
	for (int64_t i = 0; i < m; i++)
		p[i + 1] = p[i] + (double)value_at(a, i);
	return p;
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

/* Initial centroids from the sorted values a[0..n), n >= 1. */
static int init_centroids(const uint64_t *a, int64_t n, int k, int init, uint64_t seed,
			  uint64_t stream, float *c, struct mc_err *err)
{
	if (init == CLUSTER_LINEAR) {
		double lo = value_at(a, 0), hi = value_at(a, n - 1);

		for (int j = 0; j < k; j++)
			c[j] = (float)(lo + (hi - lo) * j / (k - 1));
	} else if (init == CLUSTER_DENSITY) {
		/* the values at evenly spaced ranks: evenly over the CDF */
		for (int j = 0; j < k; j++) {
			int64_t r = (int64_t)(((double)j + 0.5) * (double)n / k);

			c[j] = value_at(a, r < n ? r : n - 1);
		}
	} else {
		/* k-means++: each next centroid drawn with probability
		 * proportional to the squared distance to the nearest so far. */
		double *d2 = malloc((size_t)n * sizeof(*d2));

		if (!d2)
			return mc_err_set(err, MC_ENOMEM, "cluster: out of memory for k-means++");
		c[0] = value_at(a, (int64_t)(mc_rand_uniform(seed, stream, 0) * (double)n) % n);
		for (int64_t i = 0; i < n; i++)
			d2[i] = dist(value_at(a, i), c[0]) * dist(value_at(a, i), c[0]);
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
			c[j] = value_at(a, pick);
			for (int64_t i = 0; i < n; i++) {
				double d = dist(value_at(a, i), c[j]) * dist(value_at(a, i), c[j]);

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
static void assign_runs(const uint64_t *v, int64_t n, const float *c, int k, int64_t *start)
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

				if (dist(value_at(v, mid), c[nx]) < dist(value_at(v, mid), c[j]))
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

/* A centroid: the mean of the run [s, e) of the sorted values. */
static float run_mean(const double *p, int64_t s, int64_t e)
{
	return (float)((p[e] - p[s]) / (double)(e - s));
}

/* Each centroid the mean of its run; an empty one stays; then ascending again. */
static void update_centroids(const double *p, const int64_t *start, float *c, int k)
{
	for (int j = 0; j < k; j++)
		if (start[j + 1] > start[j])
			c[j] = run_mean(p, start[j], start[j + 1]);
	sort_centroids(c, k);
}

int cluster_kmeans(const float *w, int64_t n, int k, int init, uint64_t seed, uint64_t stream,
		   int max_iter, uint16_t *assign, float *c, int *iters, struct mc_err *err)
{
	int64_t m = 0, *start = NULL, *next = NULL;
	uint64_t *a = NULL;
	double *p = NULL;
	int ret, it = 0;

	*iters = 0;
	if (k < 2 || k > CLUSTER_MAX_K || max_iter < 1)
		return mc_err_set(err, MC_EINVAL, "cluster: %d clusters, %d iterations; use 2 to %d "
				  "clusters and at least one iteration", k, max_iter, CLUSTER_MAX_K);
	ret = sort_nonzero(w, n, &a, &m, err);
	if (ret)
		return ret;
	for (int64_t i = 0; i < n; i++)
		assign[i] = CLUSTER_NONE;
	for (int j = 0; j < k; j++)
		c[j] = 0.0f;
	if (!m)
		goto out;
	start = malloc((size_t)(k + 1) * sizeof(*start));
	next = malloc((size_t)(k + 1) * sizeof(*next));
	p = prefix_sums(a, m, err);
	if (!start || !next || !p) {
		ret = mc_err_set(err, MC_ENOMEM, "cluster: out of memory");
		goto out;
	}
	ret = init_centroids(a, m, k, init, seed, stream, c, err);
	if (ret)
		goto out;
	assign_runs(a, m, c, k, start);
	while (it < max_iter) {
		update_centroids(p, start, c, k);
		it++;
		assign_runs(a, m, c, k, next);
		if (!memcmp(start, next, (size_t)(k + 1) * sizeof(*start)))
			break;
		memcpy(start, next, (size_t)(k + 1) * sizeof(*start));
	}
	/* the last assignment is of the last centroids */
	memcpy(start, next, (size_t)(k + 1) * sizeof(*start));
	for (int j = 0; j < k; j++)
		for (int64_t i = start[j]; i < start[j + 1]; i++)
			assign[a[i] & 0xffffffffu] = (uint16_t)j;
	*iters = it;
out:
	free(p);
	free(next);
	free(start);
	free(a);
	return ret;
}

/*
 * The reference: a label per weight, each weight compared with every
 * centroid. It shares with the fast version the sort, the initial
 * centroids and the rule for a centroid (the mean of its members, which
 * are a run of the sorted values, from the prefix sums), not the search.
 */
int cluster_kmeans_ref(const float *w, int64_t n, int k, int init, uint64_t seed,
		       uint64_t stream, int max_iter, uint16_t *assign, float *c, int *iters,
		       struct mc_err *err)
{
	int64_t m = 0, *first = NULL, *count = NULL;
	uint16_t *lab = NULL, *prev = NULL;
	uint64_t *a = NULL;
	double *p = NULL;
	int ret, it = 0;

	*iters = 0;
	if (k < 2 || k > CLUSTER_MAX_K || max_iter < 1)
		return mc_err_set(err, MC_EINVAL, "cluster: bad sizes");
	ret = sort_nonzero(w, n, &a, &m, err);
	if (ret)
		return ret;
	for (int64_t i = 0; i < n; i++)
		assign[i] = CLUSTER_NONE;
	for (int j = 0; j < k; j++)
		c[j] = 0.0f;
	lab = malloc((size_t)m * sizeof(*lab) + 1);
	prev = malloc((size_t)m * sizeof(*prev) + 1);
	first = malloc((size_t)k * sizeof(*first));
	count = malloc((size_t)k * sizeof(*count));
	p = prefix_sums(a, m, err);
	if (!lab || !prev || !first || !count || !p) {
		ret = mc_err_set(err, MC_ENOMEM, "cluster: out of memory");
		goto out;
	}
	if (!m)
		goto out;
	ret = init_centroids(a, m, k, init, seed, stream, c, err);
	if (ret)
		goto out;
	for (;;) {
		for (int64_t i = 0; i < m; i++) {
			float v = value_at(a, i);
			double bd = dist(v, c[0]);
			int best = 0;

			for (int j = 1; j < k; j++) {
				if (dist(v, c[j]) < bd) {
					bd = dist(v, c[j]);
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
		for (int j = 0; j < k; j++)
			count[j] = 0;
		for (int64_t i = m - 1; i >= 0; i--) {
			first[lab[i]] = i;
			count[lab[i]]++;
		}
		for (int j = 0; j < k; j++)
			if (count[j])
				c[j] = run_mean(p, first[j], first[j] + count[j]);
		sort_centroids(c, k);
		it++;
	}
	for (int64_t i = 0; i < m; i++)
		assign[a[i] & 0xffffffffu] = lab[i];
	*iters = it;
out:
	free(p);
	free(count);
	free(first);
	free(prev);
	free(lab);
	free(a);
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
