/* SPDX-License-Identifier: MIT */
/*
 * limits.c - the memory limit (mcomp/common.h): what a model, a data set
 * or a pipeline may need before anything of that size is allocated.
 *
 * Sizes come from what an input declares (an architecture's shapes, an IDX
 * or NumPy header), so a file of a few hundred bytes that declares gigabytes
 * is refused at once, with the size and the limit, instead of being zero-
 * filled until the machine swaps. The default is half of the memory this
 * process can have: physical memory, or the cgroup's limit (v2 memory.max,
 * v1 memory.limit_in_bytes) of this process or any ancestor when lower.
 */
#define _GNU_SOURCE
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <mcomp/common.h>

#include "base/limits.h"

static uint64_t limit;	 /* 0: not decided yet */
static char source[160]; /* what set it, for messages */

/* A cgroup limit file: bytes, or 0 for none ("max", v1's huge "unlimited"). */
static uint64_t read_limit(const char *path)
{
	unsigned long long v;
	char buf[64];
	FILE *f = fopen(path, "r");

	if (!f)
		return 0;
	if (!fgets(buf, sizeof(buf), f) || !strncmp(buf, "max", 3) || sscanf(buf, "%llu", &v) != 1)
		v = 0;
	fclose(f);
	/* v1 writes PAGE_COUNTER_MAX pages (about 2^63) for "no limit". */
	return v >= (1ull << 62) ? 0 : (uint64_t)v;
}

/* The smallest limit in file over dir/self and each ancestor up to dir. */
static uint64_t walk(const char *dir, const char *self, const char *file)
{
	char path[PATH_MAX], fp[PATH_MAX + 64];
	size_t n = strlen(dir), len;
	uint64_t best = 0, v;

	if (snprintf(path, sizeof(path), "%s/%s", dir, self) >= (int)sizeof(path))
		return 0;
	for (;;) {
		char *slash;

		len = strlen(path);
		while (len > n && path[len - 1] == '/')
			path[--len] = '\0';
		snprintf(fp, sizeof(fp), "%s/%s", path, file);
		v = read_limit(fp);
		if (v && (!best || v < best))
			best = v;
		if (len <= n)
			break;
		slash = strrchr(path, '/');
		if (!slash || (size_t)(slash - path) < n)
			path[n] = '\0';
		else
			*slash = '\0';
	}
	return best;
}

/* This process's cgroup paths: v2 ("0::PATH") and v1's memory hierarchy. */
static void own_cgroups(char *v2, char *v1, size_t size)
{
	char line[PATH_MAX + 128];
	FILE *f = fopen("/proc/self/cgroup", "r");

	snprintf(v2, size, "/");
	snprintf(v1, size, "/");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL, *tok, *save;

		if (!c2)
			continue;
		line[strcspn(line, "\n")] = '\0';
		*c2 = '\0';
		if (c2 == c1 + 1) {
			snprintf(v2, size, "%s", c2 + 1);
			continue;
		}
		for (tok = strtok_r(c1 + 1, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			if (!strcmp(tok, "memory"))
				snprintf(v1, size, "%s", c2 + 1);
	}
	fclose(f);
}

uint64_t mc_mem_cgroup(const char *root, const char *v2, const char *v1)
{
	char dir[PATH_MAX];
	uint64_t a = walk(root, v2, "memory.max"), b;

	snprintf(dir, sizeof(dir), "%s/memory", root);
	b = walk(dir, v1, "memory.limit_in_bytes");
	return a && (!b || a < b) ? a : b;
}

uint64_t mc_mem_physical(void)
{
	long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);

	return pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
}

const char *mc_mem_text(uint64_t bytes, char *buf, size_t n)
{
	static const char *const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	double v = (double)bytes;
	int u = 0;

	if (bytes == UINT64_MAX) {
		snprintf(buf, n, "unlimited");
		return buf;
	}
	while (v >= 1024 && u < 6) {
		v /= 1024;
		u++;
	}
	if (!u)
		snprintf(buf, n, "%llu bytes", (unsigned long long)bytes);
	else
		snprintf(buf, n, "%.1f %s", v, units[u]);
	return buf;
}

/* The default: half of physical memory, or of the cgroup's limit when lower. */
static void decide(void)
{
	char v2[PATH_MAX], v1[PATH_MAX], a[32], b[32];
	uint64_t phys = mc_mem_physical(), cg;

	own_cgroups(v2, v1, sizeof(v2));
	cg = mc_mem_cgroup("/sys/fs/cgroup", v2, v1);
	if (cg && (!phys || cg < phys)) {
		limit = cg / 2;
		snprintf(source, sizeof(source), "half of the cgroup's memory limit of %s",
			 mc_mem_text(cg, a, sizeof(a)));
	} else if (phys) {
		limit = phys / 2;
		snprintf(source, sizeof(source), "half of the %s of physical memory",
			 mc_mem_text(phys, b, sizeof(b)));
	} else {
		limit = UINT64_MAX;
		snprintf(source, sizeof(source), "physical memory unknown");
	}
}

MC_API void mc_mem_limit_set(uint64_t bytes, const char *what)
{
	if (!bytes) {
		limit = 0;
		return;
	}
	limit = bytes;
	snprintf(source, sizeof(source), "%s", what ? what : "set by the program");
}

MC_API uint64_t mc_mem_limit(const char **what)
{
	if (!limit)
		decide();
	if (what)
		*what = source;
	return limit;
}

MC_API int mc_mem_check(uint64_t need, const char *what, struct mc_err *err)
{
	char n[32], l[32];
	const char *src;
	uint64_t lim = mc_mem_limit(&src);

	if (need <= lim)
		return 0;
	return mc_err_set(err, MC_ENOMEM,
			  "%s needs %s of memory, more than the limit of %s (%s); if the machine "
			  "has the memory, raise the limit with --max-memory SIZE or "
			  "MCOMP_MAX_MEMORY=SIZE (e.g. 16G, or unlimited)",
			  what, mc_mem_text(need, n, sizeof(n)), mc_mem_text(lim, l, sizeof(l)),
			  src);
}

MC_API int mc_mem_parse(const char *text, uint64_t *bytes)
{
	static const char units[] = "KMGTPE";
	long double v, mul = 1;
	const char *u;
	char *end;

	if (!text || !*text)
		return -1;
	if (!strcasecmp(text, "unlimited") || !strcasecmp(text, "none")) {
		*bytes = UINT64_MAX;
		return 0;
	}
	if (*text < '0' || *text > '9')
		return -1;
	v = strtold(text, &end);
	if (end == text || !isfinite((double)v))
		return -1;
	if (*end == '%') {
		uint64_t phys = mc_mem_physical();

		if (end[1] || v <= 0 || v > 100 || !phys)
			return -1;
		*bytes = (uint64_t)(v / 100 * (long double)phys);
		return *bytes ? 0 : -1;
	}
	if (*end && (u = strchr(units, end[0] & ~0x20)) != NULL) {
		for (int k = 0; k <= u - units; k++)
			mul *= 1024;
		end++;
		if (*end == 'i' || *end == 'I')
			end++;
		if (*end == 'B' || *end == 'b')
			end++;
	} else if (*end == 'B' || *end == 'b') {
		end++;
	}
	if (*end || v * mul < 1 || v * mul >= 18446744073709551615.0L)
		return -1;
	*bytes = (uint64_t)(v * mul);
	return 0;
}
