/* SPDX-License-Identifier: MIT */
/*
 * omp_crit.so - an LD_PRELOAD probe for thread scaling on a machine with
 * fewer cores than the team: it wraps libgomp's GOMP_parallel and, per
 * parallel region (keyed by its outlined function), sums the CPU time of
 * every thread of the team (the work) and the CPU time of the busiest
 * thread (the region's critical path), and it counts the master's CPU time
 * outside all regions (the serial part). Run with OMP_WAIT_POLICY=passive
 * so that waiting threads burn no CPU; then CPU time is work, whatever the
 * oversubscription, and the sum over regions of the busiest thread plus the
 * serial part predicts the step time on a machine with a core per thread.
 * bench/omp_crit.py prints the table (bench/README.md, "Issue 14: CNN
 * training's serial parts").
 *
 *	gcc -O2 -fPIC -shared -fopenmp -o omp_crit.so bench/omp_crit.c -ldl
 *	OMP_WAIT_POLICY=passive OMP_DYNAMIC=false OMP_NUM_THREADS=16 \
 *	    OMP_CRIT_OUT=a.txt LD_PRELOAD=./omp_crit.so bench/bench_train cnn train
 *
 * Not built by make: a measuring tool, like perf.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAXREG 512
#define MAXT 256

typedef void (*region_fn)(void *);

static void (*real_parallel)(region_fn, void *, unsigned, unsigned);
static struct region {
	void *fn;
	long calls;
	double work, crit;
	int team;
} regs[MAXREG];
static int nregs;
static __thread int depth;
static double inside, start;
static double tcpu[MAXT];

static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

struct call {
	region_fn fn;
	void *data;
};

static void tramp(void *arg)
{
	struct call *c = arg;
	double t0;

	depth++;
	t0 = cpu_now();
	c->fn(c->data);
	tcpu[omp_get_thread_num() % MAXT] = cpu_now() - t0;
	depth--;
}

void GOMP_parallel(region_fn fn, void *data, unsigned nt, unsigned flags)
{
	struct call c = {fn, data};
	double m0, sum = 0, max = 0;
	int i, team = 0;

	if (!real_parallel)
		real_parallel = (void (*)(region_fn, void *, unsigned, unsigned))dlsym(
		    RTLD_NEXT, "GOMP_parallel");
	if (depth) { /* nested: a team of one inside a thread already counted */
		real_parallel(fn, data, nt, flags);
		return;
	}
	memset(tcpu, 0, sizeof(tcpu));
	m0 = cpu_now();
	real_parallel(tramp, &c, nt, flags);
	inside += cpu_now() - m0;
	for (i = 0; i < nregs && regs[i].fn != (void *)fn; i++)
		;
	if (i == MAXREG)
		return;
	if (i == nregs)
		regs[nregs++].fn = (void *)fn;
	for (int k = 0; k < MAXT; k++) {
		sum += tcpu[k];
		max = tcpu[k] > max ? tcpu[k] : max;
		team = tcpu[k] > 0 ? k + 1 : team;
	}
	regs[i].calls++;
	regs[i].work += sum;
	regs[i].crit += max;
	regs[i].team = team > regs[i].team ? team : regs[i].team;
}

__attribute__((constructor)) static void crit_start(void)
{
	start = cpu_now();
}

/* One line per region: R LIBRARY OFFSET calls N team T work SECONDS crit SECONDS; then S serial SECONDS. */
__attribute__((destructor)) static void crit_report(void)
{
	const char *out = getenv("OMP_CRIT_OUT");
	FILE *f = out ? fopen(out, "w") : stderr;

	if (!f)
		return;
	for (int i = 0; i < nregs; i++) {
		Dl_info di = {0};
		const char *lib = "?";
		char *base = NULL;

		if (dladdr(regs[i].fn, &di) && di.dli_fname) {
			lib = di.dli_fname;
			base = di.dli_fbase;
		}
		fprintf(f, "R %s 0x%lx calls %ld team %d work %.6f crit %.6f\n", lib,
			(unsigned long)((char *)regs[i].fn - base), regs[i].calls, regs[i].team,
			regs[i].work, regs[i].crit);
	}
	fprintf(f, "S serial %.6f\n", cpu_now() - start - inside);
	if (out)
		fclose(f);
}
