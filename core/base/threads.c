/* SPDX-License-Identifier: MIT */
/*
 * threads.c - the default team size: the CPUs this process is granted, by
 * its affinity mask and by its cgroup's CPU quota (threads.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <dirent.h>

#include <mcomp/common.h>

#include "base/threads.h"

/* quota / period from one file (cpu.max: "QUOTA PERIOD" or "max PERIOD"),
 * or from two (v1: quota alone, period alone); 0 when none. */
static double read_quota(const char *qpath, const char *ppath)
{
	char buf[64];
	long long q = -1, p = 0;
	FILE *f = fopen(qpath, "r");

	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f)) {
		fclose(f);
		return 0;
	}
	fclose(f);
	if (!ppath) {
		if (strncmp(buf, "max", 3) == 0 || sscanf(buf, "%lld %lld", &q, &p) != 2)
			return 0;
	} else {
		if (sscanf(buf, "%lld", &q) != 1)
			return 0;
		f = fopen(ppath, "r");
		if (!f)
			return 0;
		if (fscanf(f, "%lld", &p) != 1)
			p = 0;
		fclose(f);
	}
	if (q <= 0 || p <= 0) /* v1 writes -1 for no limit */
		return 0;
	return (double)q / (double)p;
}

/* The smallest quota over dir/self and each of its ancestors up to dir. */
static double walk(const char *dir, const char *self, int v1)
{
	char path[PATH_MAX], qp[PATH_MAX + 32], pp[PATH_MAX + 32];
	size_t n = strlen(dir), len;
	double best = 0, q;

	if (snprintf(path, sizeof(path), "%s/%s", dir, self) >= (int)sizeof(path))
		return 0;
	for (;;) {
		len = strlen(path);
		while (len > n && path[len - 1] == '/')
			path[--len] = '\0';
		if (v1) {
			snprintf(qp, sizeof(qp), "%s/cpu.cfs_quota_us", path);
			snprintf(pp, sizeof(pp), "%s/cpu.cfs_period_us", path);
			q = read_quota(qp, pp);
		} else {
			snprintf(qp, sizeof(qp), "%s/cpu.max", path);
			q = read_quota(qp, NULL);
		}
		if (q > 0 && (best == 0 || q < best))
			best = q;
		if (len <= n)
			break;
		/* one level up; dir itself is the last */
		char *slash = strrchr(path, '/');

		if (!slash || (size_t)(slash - path) < n)
			path[n] = '\0';
		else
			*slash = '\0';
	}
	return best;
}

int mc_threads_quota(const char *root, const char *self)
{
	static const char *const v1dirs[] = {"cpu", "cpu,cpuacct", "cpuacct,cpu", ""};
	char dir[PATH_MAX];
	double q = walk(root, self, 0);

	for (size_t i = 0; q == 0 && i < sizeof(v1dirs) / sizeof(v1dirs[0]); i++) {
		if (snprintf(dir, sizeof(dir), "%s%s%s", root, v1dirs[i][0] ? "/" : "", v1dirs[i]) >=
		    (int)sizeof(dir))
			continue;
		q = walk(dir, self, 1);
	}
	if (q <= 0)
		return 0;
	/* Rounded down: a fraction of a CPU is a thread that is throttled part
	 * of every period. The small epsilon keeps 2.0 from becoming 1.999. */
	return q < 1 ? 1 : (int)(q + 1e-9);
}

int mc_threads_affinity(void)
{
	for (int ncpu = 1024; ncpu <= 1 << 20; ncpu *= 2) {
		cpu_set_t *set = CPU_ALLOC(ncpu);
		size_t sz = CPU_ALLOC_SIZE(ncpu);
		int n = 0;

		if (!set)
			return 0;
		if (sched_getaffinity(0, sz, set) == 0)
			n = CPU_COUNT_S(sz, set);
		CPU_FREE(set);
		if (n > 0)
			return n;
		if (errno != EINVAL)
			return 0;
	}
	return 0;
}

/* This process's cgroup path: the v1 hierarchy with the cpu controller,
 * else the v2 one ("0::PATH"); "/" when /proc/self/cgroup cannot be read. */
static void own_cgroup(char *out, size_t size)
{
	char line[PATH_MAX + 128];
	FILE *f = fopen("/proc/self/cgroup", "r");
	int found = 0;

	snprintf(out, size, "/");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL, *tok, *save;
		int cpu = 0;

		if (!c2)
			continue;
		line[strcspn(line, "\n")] = '\0';
		*c2 = '\0';
		for (tok = strtok_r(c1 + 1, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			cpu |= !strcmp(tok, "cpu");
		if (cpu || (!found && c2 == c1 + 1)) {
			snprintf(out, size, "%s", c2 + 1);
			found = 1;
			if (cpu)
				break;
		}
	}
	fclose(f);
}

int mc_threads_granted(const char *root)
{
	char self[PATH_MAX];
	int n = mc_threads_affinity(), q;

	own_cgroup(self, sizeof(self));
	q = mc_threads_quota(root, self);
	if (q > 0 && (n <= 0 || q < n))
		n = q;
	return n > 0 ? n : 1;
}

int mc_threads_init(const char *root)
{
	const char *env = getenv("OMP_NUM_THREADS");
	int n;

	if (env && *env)
		return omp_get_max_threads();
	n = mc_threads_granted(root);
	if (n < omp_get_max_threads())
		omp_set_num_threads(n);
	return omp_get_max_threads();
}

/* ---------------------------------------------------------------- adapting */

/*
 * Contention is measured as the scheduler sees it: run_delay, the time this
 * process's threads were ready to run but waiting for a CPU, against the
 * time they ran (/proc/self/task/TID/schedstat: run ns, wait ns). Alone on
 * its CPUs a team, running, spinning or asleep, waits for none; one busy
 * process beside a team of two on two CPUs makes it wait about a quarter of
 * its time, one on each CPU about half, a machine loaded several times over
 * most of it. Waiting for a CPU is what stalls a team: every thread of it
 * waits at the next barrier for the one the OS put aside.
 */
#define WINDOW 0.05      /* s between looks (a look reads a few small files: ~10 us per thread) */
#define BUSY 0.2         /* waiting share that shrinks a team */
#define BACKOFF0 0.5     /* s before trying a larger team again ... */
#define BACKOFF_MAX 4.0  /* ... doubled after each try that met contention, up to this */
#define SETTLED 5.0      /* s of a full team without contention that forget the backoff */

static int adapt_off;     /* OMP_DYNAMIC=false: the team is the user's */

struct adapt {
	double last, probe_at, quiet_since, backoff;
	long long run, wait; /* ns, summed over the threads */
	int max, cur;   /* team at the first look; team while contended */
	int set;        /* what this thread last passed to omp_set_num_threads */
};

static _Thread_local struct adapt ad;

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Run and run_delay of this process's threads, summed, in ns; -1 when
 * unreadable. */
static long long run_delay(long long *run_ns)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;
	long long sum = 0, rsum = 0;
	int seen = 0;

	if (!d)
		return -1;
	while ((de = readdir(d))) {
		char path[64];
		unsigned long long run, wait;
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%.20s/schedstat", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue; /* the thread ended meanwhile */
		if (fscanf(f, "%llu %llu", &run, &wait) == 2) {
			sum += (long long)wait;
			rsum += (long long)run;
			seen = 1;
		}
		fclose(f);
	}
	closedir(d);
	*run_ns = rsum;
	return seen ? sum : -1;
}

/*
 * The team for this forward: the reduced one while contended, at any
 * batch. A team of two beside one busy process on two CPUs waits at every
 * barrier for the thread that shares its CPU, where one thread, which the
 * scheduler moves to the free CPU, runs at one thread's speed: on a
 * 16-core Xeon, MLP training went from 0.30x of idle to 0.60x, batch-1
 * latency from 28x idle to 2.8x (bench/README.md).
 */
static void use_team(void)
{
	if (ad.cur != ad.set) {
		ad.set = ad.cur;
		omp_set_num_threads(ad.cur);
	}
}

void mc_threads_adapt(void)
{
	double t, busy;
	long long w, r;

	if (adapt_off || omp_in_parallel())
		return;
	if (!ad.max || omp_get_max_threads() != ad.set) {
		/* First look from this thread, or someone set the team size since. */
		t = now_s();
		ad.max = ad.cur = ad.set = omp_get_max_threads();
		ad.backoff = BACKOFF0;
		ad.quiet_since = t;
		ad.last = t;
		ad.wait = run_delay(&ad.run);
		return;
	}
	if (ad.max == 1)
		return;
	t = now_s();
	if (t - ad.last < WINDOW) {
		use_team();
		return;
	}
	w = run_delay(&r);
	ad.last = t;
	if (w < 0 || ad.wait < 0) {
		ad.wait = w;
		ad.run = r;
		use_team();
		return;
	}
	/* The share of their ready time the threads waited. Threads that ended
	 * took their figures with them: a drop counts as nothing. */
	busy = w > ad.wait ? (double)(w - ad.wait) : 0;
	busy = busy > 0 ? busy / (busy + (r > ad.run ? (double)(r - ad.run) : 0)) : 0;
	ad.wait = w;
	ad.run = r;
	if (busy > BUSY) {
		ad.quiet_since = t;
		if (ad.cur > 1) {
			ad.cur /= 2;
			ad.probe_at = t + ad.backoff;
			ad.backoff = ad.backoff * 2 < BACKOFF_MAX ? ad.backoff * 2 : BACKOFF_MAX;
		}
	} else if (ad.cur < ad.max && t >= ad.probe_at) {
		ad.cur = ad.cur * 2 < ad.max ? ad.cur * 2 : ad.max;
	} else if (ad.cur == ad.max && t - ad.quiet_since >= SETTLED) {
		ad.backoff = BACKOFF0;
	}
	use_team();
}

/* ---------------------------------------------------------------- waiting */

MC_API int mc_threads_bound_waits(char **argv)
{
	const char *pol = getenv("OMP_WAIT_POLICY"), *spin = getenv("GOMP_SPINCOUNT");
	char count[32];

	if ((pol && *pol) || (spin && *spin) || !argv || !argv[0])
		return 0;
	snprintf(count, sizeof(count), "%d", MC_SPINCOUNT);
	if (setenv("GOMP_SPINCOUNT", count, 1))
		return -1;
	execv("/proc/self/exe", argv);
	/* No /proc or no exec: run on with libgomp's default. */
	unsetenv("GOMP_SPINCOUNT");
	return -1;
}

/* Once per process, when the library is loaded: libgomp, which libmcomp
 * links, has read its environment by then (its constructor runs first). */
__attribute__((constructor)) static void threads_at_load(void)
{
	const char *dyn = getenv("OMP_DYNAMIC");

	/* OMP_DYNAMIC=false asks for exactly the team OMP_NUM_THREADS names. */
	adapt_off = dyn && (!strcasecmp(dyn, "false") || !strcmp(dyn, "0"));
	mc_threads_init("/sys/fs/cgroup");
}
