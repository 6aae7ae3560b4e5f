// SPDX-License-Identifier: MIT
/*
 * calibrate.c - choosing a cascade's thresholds from each stage's confidence
 * and correctness on every calibration sample (cascade_pass.h says how
 * accuracy and cost follow from them), the sweep of every setting tried, its
 * Pareto front, and an SVG plot of accuracy against relative cost.
 *
 * Nothing here runs a model: the pass computes the arrays once, so the test
 * can feed constructed arrays with a known answer.
 */
#define _GNU_SOURCE /* open_memstream */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cascade_pass.h"
#include "../common/svg.h"

/* Totals of a point whose exits and exit_correct are set. */
static void finish(const struct cascade_calib *c, struct cascade_point *p)
{
	int k = c->n_stages;
	int64_t reach = c->n;
	double cost = 0;

	p->correct = 0;
	for (int s = 0; s < k; s++) {
		cost += (double)reach * c->cost[s];
		reach -= p->exits[s];
		p->correct += p->exit_correct[s];
	}
	p->accuracy = c->n ? (double)p->correct / (double)c->n : 0;
	p->cost = c->n ? cost / (double)c->n : 0;
	p->rel_cost = p->cost / c->cost[k - 1];
}

static void set_thr(struct cascade_point *p, const float *thr, int k)
{
	for (int s = 0; s < MC_CASCADE_MAX_STAGES; s++)
		p->thr[s] = s < k - 1 ? thr[s] : CASCADE_NEVER;
}

void cascade_eval(const struct cascade_calib *c, const float *thr, struct cascade_point *p)
{
	int k = c->n_stages;

	memset(p, 0, sizeof(*p));
	set_thr(p, thr, k);
	for (int64_t i = 0; i < c->n; i++) {
		int s = 0;

		while (s < k - 1 && !(c->conf[s][i] >= p->thr[s]))
			s++;
		p->exits[s]++;
		p->exit_correct[s] += c->correct[s][i];
	}
	finish(c, p);
}

void cascade_reference(const struct cascade_calib *c, int64_t *correct, double *accuracy)
{
	const uint8_t *y = c->correct[c->n_stages - 1];
	int64_t n = 0;

	for (int64_t i = 0; i < c->n; i++)
		n += y[i];
	*correct = n;
	*accuracy = c->n ? (double)n / (double)c->n : 0;
}

void cascade_sweep_free(struct cascade_sweep *s)
{
	free(s->pts);
	memset(s, 0, sizeof(*s));
}

static int push(struct cascade_sweep *s, const struct cascade_point *p)
{
	if (s->n == s->cap) {
		int cap = s->cap ? 2 * s->cap : 256;
		struct cascade_point *q = realloc(s->pts, (size_t)cap * sizeof(*q));

		if (!q)
			return -1;
		s->pts = q;
		s->cap = cap;
	}
	s->pts[s->n++] = *p;
	return 0;
}

/* A sample's confidence and index, for sorting. */
struct keyed {
	float v;
	int64_t i;
};

/* Descending by value, NaN last, then ascending by index: a total order. */
static int cmp_desc(const void *a, const void *b)
{
	const struct keyed *x = a, *y = b;
	int xn = isnan(x->v), yn = isnan(y->v);

	if (xn != yn)
		return xn - yn;
	if (!xn && x->v != y->v)
		return x->v < y->v ? 1 : -1;
	return (x->i > y->i) - (x->i < y->i);
}

static struct keyed *sorted_conf(const struct cascade_calib *c, int s)
{
	struct keyed *k = malloc((size_t)(c->n ? c->n : 1) * sizeof(*k));

	if (!k)
		return NULL;
	for (int64_t i = 0; i < c->n; i++)
		k[i] = (struct keyed){ c->conf[s][i], i };
	qsort(k, (size_t)c->n, sizeof(*k), cmp_desc);
	return k;
}

/*
 * Two stages: the first stage's threshold at "never" and at every distinct
 * confidence value, from the highest down; each setting's counts follow from
 * the previous one's, so the scan is exact in O(n log n).
 */
static int scan_two(const struct cascade_calib *c, struct cascade_sweep *sw)
{
	struct keyed *k = sorted_conf(c, 0);
	struct cascade_point p = { 0 };
	int64_t c0 = 0, c1 = 0, all1 = 0, j = 0;
	float never = CASCADE_NEVER;

	if (!k)
		return -1;
	for (int64_t i = 0; i < c->n; i++)
		all1 += c->correct[1][i];
	set_thr(&p, &never, 2);
	p.exits[1] = c->n;
	p.exit_correct[1] = all1;
	finish(c, &p);
	if (push(sw, &p))
		goto fail;
	while (j < c->n && !isnan(k[j].v)) {
		float v = k[j].v;

		for (; j < c->n && k[j].v == v; j++) {
			c0 += c->correct[0][k[j].i];
			c1 += c->correct[1][k[j].i];
		}
		set_thr(&p, &v, 2);
		p.exits[0] = j;
		p.exit_correct[0] = c0;
		p.exits[1] = c->n - j;
		p.exit_correct[1] = all1 - c1;
		finish(c, &p);
		if (push(sw, &p))
			goto fail;
	}
	free(k);
	return 0;
fail:
	free(k);
	return -1;
}

/* Candidates of stage s: "never", then the distinct quantiles of its
 * confidence from the highest down; returns their number (0 on ENOMEM). */
static int grid(const struct cascade_calib *c, int s, float *out)
{
	struct keyed *k = sorted_conf(c, s);
	int64_t m = 0;
	int n = 0;

	if (!k)
		return 0;
	out[n++] = CASCADE_NEVER;
	while (m < c->n && !isnan(k[m].v))
		m++;
	for (int g = 0; m > 0 && g < CASCADE_GRID; g++) {
		float v = k[(int64_t)g * (m - 1) / (CASCADE_GRID - 1)].v;

		if (v != out[n - 1])
			out[n++] = v;
	}
	free(k);
	return n;
}

static int better(int target, const struct cascade_point *a, const struct cascade_point *b, int k)
{
	if (target == CASCADE_ACCURACY_DROP) {
		if (a->cost != b->cost)
			return a->cost < b->cost;
		if (a->correct != b->correct)
			return a->correct > b->correct;
	} else {
		if (a->correct != b->correct)
			return a->correct > b->correct;
		if (a->cost != b->cost)
			return a->cost < b->cost;
	}
	for (int s = 0; s < k - 1; s++)
		if (a->thr[s] != b->thr[s])
			return a->thr[s] > b->thr[s];
	return 0;
}

static int feasible(const struct cascade_calib *c, int target, double limit, int64_t ref,
		    const struct cascade_point *p)
{
	if (target == CASCADE_ACCURACY_DROP)
		return (double)(ref - p->correct) / (double)c->n <= limit + 1e-12;
	return p->rel_cost <= limit + 1e-12;
}

/* Every setting of the grid, in mixed-radix order (stage 0's varies slowest). */
static int search_all(const struct cascade_calib *c, float (*cand)[CASCADE_GRID + 1],
		      const int *nc, struct cascade_sweep *sw)
{
	int k = c->n_stages, at[MC_CASCADE_MAX_STAGES] = { 0 };
	float thr[MC_CASCADE_MAX_STAGES];
	struct cascade_point p;

	for (;;) {
		int s;

		for (s = 0; s < k - 1; s++)
			thr[s] = cand[s][at[s]];
		cascade_eval(c, thr, &p);
		if (push(sw, &p))
			return -1;
		for (s = k - 2; s >= 0 && ++at[s] == nc[s]; s--)
			at[s] = 0;
		if (s < 0)
			return 0;
	}
}

/*
 * Coordinate descent from a setting that meets any reachable target: nothing
 * exits early (an accuracy drop of 0) or everything exits at stage 0 (the
 * cheapest). Each round tries every candidate of each stage in turn with the
 * others fixed and keeps the best that meets the target.
 */
static int search_descent(const struct cascade_calib *c, float (*cand)[CASCADE_GRID + 1],
			  const int *nc, int target, double limit, int64_t ref,
			  struct cascade_sweep *sw)
{
	int k = c->n_stages, changed = 1;
	float thr[MC_CASCADE_MAX_STAGES];
	struct cascade_point best, p;

	for (int s = 0; s < k - 1; s++)
		thr[s] = target == CASCADE_ACCURACY_DROP ? CASCADE_NEVER : cand[s][nc[s] - 1];
	cascade_eval(c, thr, &best);
	if (push(sw, &best))
		return -1;
	for (int round = 0; changed && round < 50; round++) {
		changed = 0;
		for (int s = 0; s < k - 1; s++) {
			for (int j = 0; j < nc[s]; j++) {
				if (cand[s][j] == best.thr[s])
					continue;
				memcpy(thr, best.thr, sizeof(thr));
				thr[s] = cand[s][j];
				cascade_eval(c, thr, &p);
				if (push(sw, &p))
					return -1;
				if (feasible(c, target, limit, ref, &p) &&
				    (!feasible(c, target, limit, ref, &best) ||
				     better(target, &p, &best, k))) {
					best = p;
					changed = 1;
				}
			}
		}
	}
	return 0;
}

static int search_grid(const struct cascade_calib *c, int target, double limit, int64_t ref,
		       struct cascade_sweep *sw)
{
	float (*cand)[CASCADE_GRID + 1] = calloc(MC_CASCADE_MAX_STAGES, sizeof(*cand));
	int nc[MC_CASCADE_MAX_STAGES], ret;
	double total = 1;

	if (!cand)
		return -1;
	for (int s = 0; s < c->n_stages - 1; s++) {
		nc[s] = grid(c, s, cand[s]);
		if (!nc[s]) {
			free(cand);
			return -1;
		}
		total *= nc[s];
	}
	sw->exhaustive = total <= CASCADE_EXHAUSTIVE_MAX;
	if (sw->exhaustive)
		ret = search_all(c, cand, nc, sw);
	else
		ret = search_descent(c, cand, nc, target, limit, ref, sw);
	free(cand);
	return ret;
}

int cascade_calibrate(const struct cascade_calib *c, int target, double limit,
		      struct cascade_point *best, struct cascade_sweep *sweep, struct mc_err *err)
{
	struct cascade_sweep own = { 0 }, *sw = sweep ? sweep : &own;
	int k = c->n_stages, found = -1, cheapest = 0, ret;
	int64_t ref;
	double ref_acc;

	memset(sw, 0, sizeof(*sw));
	if (k < 1 || k > MC_CASCADE_MAX_STAGES || c->n < 1)
		return mc_err_set(err, MC_EINVAL, "cascade calibration: %d stages and %lld samples; "
				  "give 1 to %d stages and at least one sample",
				  k, (long long)c->n, MC_CASCADE_MAX_STAGES);
	cascade_reference(c, &ref, &ref_acc);
	if (k == 1) {
		float none = CASCADE_NEVER;

		cascade_eval(c, &none, best);
		sw->exhaustive = 1;
		ret = push(sw, best);
	} else if (k == 2) {
		sw->exhaustive = 1;
		ret = scan_two(c, sw);
	} else {
		ret = search_grid(c, target, limit, ref, sw);
	}
	if (ret) {
		cascade_sweep_free(sw);
		return mc_err_set(err, MC_ENOMEM, "cascade calibration: out of memory");
	}
	for (int i = 0; i < sw->n; i++) {
		if (sw->pts[i].cost < sw->pts[cheapest].cost)
			cheapest = i;
		if (feasible(c, target, limit, ref, &sw->pts[i]) &&
		    (found < 0 || better(target, &sw->pts[i], &sw->pts[found], k)))
			found = i;
	}
	if (found < 0) {
		ret = mc_err_set(err, MC_ERUN,
				 "no thresholds keep the expected cost within max_cost %g of the "
				 "last stage's: the cheapest setting found costs %.4g; raise max_cost "
				 "or put a cheaper first stage",
				 limit, sw->pts[cheapest].rel_cost);
		cascade_sweep_free(sw);
		return ret;
	}
	*best = sw->pts[found];
	cascade_sweep_free(&own);
	return 0;
}

/* ---------------------------------------------------------------- front */

struct front_key {
	double cost;
	int64_t correct;
	int i;
};

static int cmp_front(const void *a, const void *b)
{
	const struct front_key *x = a, *y = b;

	if (x->cost != y->cost)
		return x->cost < y->cost ? -1 : 1;
	if (x->correct != y->correct)
		return x->correct > y->correct ? -1 : 1;
	return (x->i > y->i) - (x->i < y->i);
}

int cascade_front(const struct cascade_sweep *s, int *idx)
{
	struct front_key *k = malloc((size_t)(s->n ? s->n : 1) * sizeof(*k));
	int64_t best = -1;
	int n = 0;

	if (!k)
		return 0;
	for (int i = 0; i < s->n; i++)
		k[i] = (struct front_key){ s->pts[i].cost, s->pts[i].correct, i };
	qsort(k, (size_t)s->n, sizeof(*k), cmp_front);
	for (int i = 0; i < s->n; i++) {
		if (k[i].correct <= best)
			continue;
		best = k[i].correct;
		idx[n++] = k[i].i;
	}
	free(k);
	return n;
}

int cascade_same_thr(const struct cascade_point *a, const struct cascade_point *b)
{
	return memcmp(a->thr, b->thr, sizeof(a->thr)) == 0;
}

int cascade_front_rows(const struct cascade_sweep *s, const int *front, int n, int rows,
		       const struct cascade_point *keep, int *out)
{
	int m = 0, kept = -1, at;

	if (rows < 2)
		rows = 2;
	for (int i = 0; keep && i < n; i++)
		if (cascade_same_thr(&s->pts[front[i]], keep))
			kept = i;
	for (int j = 0; j < rows && j < n; j++) {
		int i = n <= rows ? j : (int)((int64_t)j * (n - 1) / (rows - 1));

		if (m == 0 || out[m - 1] != i)
			out[m++] = i;
	}
	for (at = 0; kept >= 0 && at < m && out[at] < kept; at++)
		;
	if (kept >= 0 && (at == m || out[at] != kept)) {
		memmove(out + at + 1, out + at, (size_t)(m - at) * sizeof(*out));
		out[at] = kept;
		m++;
	}
	for (int j = 0; j < m; j++)
		out[j] = front[out[j]];
	return m;
}

/* ---------------------------------------------------------------- plot */

int cascade_svg(const struct cascade_plot *p, char **buf, size_t *len)
{
	const double W = 760, H = 460, L = 70, R = 210, T = 40, B = 60;
	const struct cascade_sweep *s = p->sweep;
	double lo = p->last_accuracy, hi = p->last_accuracy, xmax = 1, step;
	int stride = s->n > 2000 ? (s->n + 1999) / 2000 : 1, ticks;
	FILE *f = open_memstream(buf, len);

	if (!f)
		return -1;
	for (int i = 0; i < s->n; i++) {
		lo = fmin(lo, s->pts[i].accuracy);
		hi = fmax(hi, s->pts[i].accuracy);
		xmax = fmax(xmax, s->pts[i].rel_cost);
	}
	if (p->target == CASCADE_ACCURACY_DROP)
		lo = fmin(lo, p->last_accuracy - p->limit);
	else
		xmax = fmax(xmax, p->limit);
	step = hi - lo > 0.1 ? 0.05 : hi - lo > 0.02 ? 0.01 : 0.002;
	lo = floor(lo / step) * step;
	hi = ceil(hi / step) * step;
	if (hi <= lo)
		hi = lo + step;
	ticks = (int)lround((hi - lo) / step);
	xmax = ceil(xmax * 10 - 1e-9) / 10;
#define X(c) (L + (c) / xmax * (W - L - R))
#define Y(a) (T + (hi - (a)) / (hi - lo) * (H - T - B))
	svg_begin(f, W, H);
	fprintf(f, "<text x=\"%.0f\" y=\"22\" font-size=\"15\">", L);
	svg_text(f, p->title);
	fputs("</text>\n", f);
	for (int k = 0; k <= (int)lround(xmax * 10); k++) {
		double c = k / 10.0;

		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
			   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%.1f</text>\n",
			X(c), T, X(c), H - B, X(c), H - B + 16, c);
	}
	for (int k = 0; k <= ticks; k++) {
		double a = lo + step * k;

		if (ticks > 12 && k % 2)
			continue;
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n"
			   "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%.1f%%</text>\n",
			L, Y(a), W - R, Y(a), L - 6, Y(a) + 4, 100 * a);
	}
	fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">expected cost relative to "
		   "the last stage alone</text>\n"
		   "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\">"
		   "accuracy on the calibration split</text>\n",
		(L + W - R) / 2, H - 18, (T + H - B) / 2);
	if (p->target == CASCADE_ACCURACY_DROP)
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" "
			   "stroke-dasharray=\"6 4\"/>\n",
			L, Y(p->last_accuracy - p->limit), W - R, Y(p->last_accuracy - p->limit));
	else
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" "
			   "stroke-dasharray=\"6 4\"/>\n",
			X(p->limit), T, X(p->limit), H - B);
	for (int i = 0; i < s->n; i += stride)
		fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"1.5\" fill=\"#bbb\"/>\n",
			X(s->pts[i].rel_cost), Y(s->pts[i].accuracy));
	if (p->n_front > 0) {
		fputs("<polyline fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\" points=\"", f);
		for (int i = 0; i < p->n_front; i++)
			fprintf(f, "%s%.1f,%.1f", i ? " " : "", X(s->pts[p->front[i]].rel_cost),
				Y(s->pts[p->front[i]].accuracy));
		fputs("\"/>\n", f);
	}
	fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"black\"/>\n",
		X(1.0) - 4, Y(p->last_accuracy) - 4);
	if (p->chosen)
		fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"none\" stroke=\"#d62728\" "
			   "stroke-width=\"2.5\"/>\n",
			X(p->chosen->rel_cost), Y(p->chosen->accuracy));
	/* legend */
	{
		double lx = W - R + 14, ly = T + 10;

		fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2\" fill=\"#bbb\"/>"
			   "<text x=\"%.1f\" y=\"%.1f\">thresholds tried</text>\n",
			lx + 10, ly, lx + 26, ly + 4);
		ly += 20;
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#1f77b4\" "
			   "stroke-width=\"2\"/><text x=\"%.1f\" y=\"%.1f\">Pareto front</text>\n",
			lx, ly, lx + 20, ly, lx + 26, ly + 4);
		ly += 20;
		fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"none\" stroke=\"#d62728\" "
			   "stroke-width=\"2.5\"/><text x=\"%.1f\" y=\"%.1f\">chosen</text>\n",
			lx + 10, ly, lx + 26, ly + 4);
		ly += 20;
		fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"8\" height=\"8\" fill=\"black\"/>"
			   "<text x=\"%.1f\" y=\"%.1f\">last stage alone</text>\n",
			lx + 6, ly - 4, lx + 26, ly + 4);
		ly += 20;
		fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#d62728\" "
			   "stroke-dasharray=\"6 4\"/><text x=\"%.1f\" y=\"%.1f\">%s</text>\n",
			lx, ly, lx + 20, ly, lx + 26, ly + 4,
			p->target == CASCADE_ACCURACY_DROP ? "max_drop" : "max_cost");
	}
	fputs("</svg>\n", f);
#undef X
#undef Y
	return fclose(f) ? -1 : 0;
}
