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

/* Once per process, when the library is loaded: libgomp, which libmcomp
 * links, has read its environment by then (its constructor runs first). */
__attribute__((constructor)) static void threads_at_load(void)
{
	mc_threads_init("/sys/fs/cgroup");
}
