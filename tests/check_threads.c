/* SPDX-License-Identifier: MIT */
/*
 * check_threads.c - the default team size (core/base/threads.c): the cgroup
 * CPU quota read from fake cgroup trees (v2 cpu.max, v1 cfs files, nested
 * limits, no limit, garbage), the affinity mask narrowed with
 * sched_setaffinity, and OMP_NUM_THREADS winning over both.
 */
#define _GNU_SOURCE
#include <check.h>
#include <omp.h>
#include <sched.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/threads.h"
#include "scratch_dir.h"

/* Writes tmpdir/rel (making its folders) with text. */
static void put(const char *rel, const char *text)
{
	char path[512];
	FILE *f;

	for (const char *p = strchr(rel, '/'); p; p = strchr(p + 1, '/')) {
		snprintf(path, sizeof(path), "%s/%.*s", tmpdir, (int)(p - rel), rel);
		mkdir(path, 0700);
	}
	snprintf(path, sizeof(path), "%s/%s", tmpdir, rel);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

static void setup(void)
{
	scratch_make("threads");
}

START_TEST(v2_cpu_max)
{
	put("cpu.max", "150000 100000\n");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/"), 1); /* 1.5 CPUs: one thread */
	put("cpu.max", "200000 100000\n");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/"), 2);
	put("cpu.max", "50000 100000\n");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/"), 1); /* never 0 */
	put("cpu.max", "max 100000\n");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/"), 0); /* no limit */
	put("cpu.max", "banana\n");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/"), 0);
	put("cpu.max", "");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/"), 0);
}
END_TEST

START_TEST(v2_nested)
{
	/* The tightest limit on the path wins, wherever it is. */
	put("cpu.max", "max 100000\n");
	put("a/cpu.max", "300000 100000\n");
	put("a/b/cpu.max", "max 100000\n");
	put("a/b/c/cpu.max", "800000 100000\n");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/a/b/c"), 3);
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/a/b/c/"), 3);
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/a/b"), 3);
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/"), 0);
	/* A path the tree does not have (a container's view): its ancestors count. */
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/a/gone/deeper"), 3);
	/* Only the way up counts, not a sibling. */
	put("x/cpu.max", "100000 100000\n");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/a/b/c"), 3);
}
END_TEST

START_TEST(v1_cfs)
{
	put("cpu,cpuacct/docker/cpu.cfs_quota_us", "-1\n");
	put("cpu,cpuacct/docker/cpu.cfs_period_us", "100000\n");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/docker"), 0);
	put("cpu,cpuacct/docker/c1/cpu.cfs_quota_us", "250000\n");
	put("cpu,cpuacct/docker/c1/cpu.cfs_period_us", "100000\n");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/docker/c1"), 2);
	/* A period that cannot be read is no limit, not a division by zero. */
	put("cpu/cpu.cfs_quota_us", "100000\n");
	put("cpu/cpu.cfs_period_us", "0\n");
	ck_assert_int_eq(mc_threads_quota(tmpdir, "/"), 0);
}
END_TEST

START_TEST(affinity_and_quota)
{
	cpu_set_t all, one;
	int n;

	ck_assert_int_eq(sched_getaffinity(0, sizeof(all), &all), 0);
	n = CPU_COUNT(&all);
	ck_assert_int_eq(mc_threads_affinity(), n);
	/* Nothing under the fake root: the affinity mask decides. */
	ck_assert_int_eq(mc_threads_granted(tmpdir), n);

	/* One CPU granted by the mask: one thread, whatever the quota. */
	CPU_ZERO(&one);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &all)) {
			CPU_SET(c, &one);
			break;
		}
	ck_assert_int_eq(sched_setaffinity(0, sizeof(one), &one), 0);
	ck_assert_int_eq(mc_threads_affinity(), 1);
	ck_assert_int_eq(mc_threads_granted(tmpdir), 1);
	put("cpu.max", "400000 100000\n");
	ck_assert_int_eq(mc_threads_granted(tmpdir), 1);
	ck_assert_int_eq(sched_setaffinity(0, sizeof(all), &all), 0);

	/* The whole mask back, and a quota of one CPU at the root this process
	 * would be read from when its own cgroup is not in the fake tree. */
	put("cpu.max", "100000 100000\n");
	ck_assert_int_eq(mc_threads_granted(tmpdir), 1);
}
END_TEST

START_TEST(init_sets_team)
{
	/* Check runs each test in its own process: the ICV change stays here. */
	unsetenv("OMP_NUM_THREADS");
	omp_set_num_threads(4);
	put("cpu.max", "100000 100000\n");
	ck_assert_int_eq(mc_threads_init(tmpdir), 1);
	ck_assert_int_eq(omp_get_max_threads(), 1);
#pragma omp parallel
	{
#pragma omp single
		ck_assert_int_eq(omp_get_num_threads(), 1);
	}
}
END_TEST

START_TEST(env_wins)
{
	/* OMP_NUM_THREADS set: the user's number, even beyond the quota. */
	setenv("OMP_NUM_THREADS", "3", 1);
	omp_set_num_threads(3);
	put("cpu.max", "100000 100000\n");
	ck_assert_int_eq(mc_threads_init(tmpdir), 3);
	ck_assert_int_eq(omp_get_max_threads(), 3);
}
END_TEST

/* Calls mc_threads_adapt() for about s seconds; the team it leaves. */
static int adapt_for(double s)
{
	struct timespec t0, t;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	do {
		volatile double x = 0;

		mc_threads_adapt();
		for (int i = 0; i < 20000; i++)
			x += i;
		clock_gettime(CLOCK_MONOTONIC, &t);
	} while ((double)(t.tv_sec - t0.tv_sec) + 1e-9 * (double)(t.tv_nsec - t0.tv_nsec) < s);
	return omp_get_max_threads();
}

START_TEST(adapt_to_contention)
{
	cpu_set_t all, one;
	pid_t busy;
	int quiet;
	FILE *f = fopen("/proc/self/schedstat", "r");

	if (!f)
		return; /* a kernel without schedstat: nothing to adapt by */
	fclose(f);
	/* One CPU shared with a busy child: this thread waits half the time. */
	ck_assert_int_eq(sched_getaffinity(0, sizeof(all), &all), 0);
	CPU_ZERO(&one);
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &all)) {
			CPU_SET(c, &one);
			break;
		}
	ck_assert_int_eq(sched_setaffinity(0, sizeof(one), &one), 0);
	omp_set_num_threads(2);
	/* Alone on its CPU the team stays; other jobs on the machine may share it. */
	quiet = adapt_for(0.2) == 2;
	omp_set_num_threads(2);
	busy = fork();
	ck_assert_int_ge(busy, 0);
	if (busy == 0)
		for (;;)
			;
	ck_assert_int_eq(adapt_for(0.5), 1); /* waiting for the CPU: halved */
	kill(busy, SIGKILL);
	waitpid(busy, NULL, 0);
	/* Alone again: the team comes back after the backoff (0.5 s, doubling while other
	 * jobs of a parallel make check keep the CPU busy: give it a few tries). */
	if (quiet) {
		int team = adapt_for(1.0);

		for (int i = 0; i < 4 && team != 2; i++)
			team = adapt_for(2.0);
		ck_assert_int_eq(team, 2);
	}
	/* Someone else's choice of team size is the new ceiling. */
	omp_set_num_threads(1);
	if (quiet) /* under other load the backoff state decides (seen in a busy make check) */
		ck_assert_int_eq(adapt_for(0.2), 1);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("threads");
	TCase *tc = tcase_create("threads");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, scratch_remove);
	tcase_add_test(tc, v2_cpu_max);
	tcase_add_test(tc, v2_nested);
	tcase_add_test(tc, v1_cfs);
	tcase_add_test(tc, affinity_and_quota);
	tcase_add_test(tc, init_sets_team);
	tcase_add_test(tc, env_wins);
	tcase_add_test(tc, adapt_to_contention);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
