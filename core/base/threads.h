/* SPDX-License-Identifier: MIT */
/*
 * threads.h - how many threads the kernels use when the user does not say:
 * no more than the CPUs this process is granted. Not installed.
 *
 * Granted means both limits the kernel enforces: the CPU affinity mask
 * (taskset, cpusets, docker --cpuset-cpus) and the CFS bandwidth quota of
 * the cgroup (docker --cpus, Kubernetes CPU limits, systemd CPUQuota=):
 * cgroup v2 cpu.max, or cgroup v1 cpu.cfs_quota_us / cpu.cfs_period_us. A
 * quota of 1.5 CPUs grants one thread: a second would be throttled for part
 * of every period, and a thread stopped by the throttle stalls the whole
 * team at its next barrier.
 *
 * OpenMP's own default (libgomp) honours the affinity mask as it was when
 * the runtime started, but not the quota; an explicit OMP_NUM_THREADS
 * always wins.
 */
#ifndef MCOMP_BASE_THREADS_H
#define MCOMP_BASE_THREADS_H

/*
 * CPUs the CFS quota grants to the cgroup at path self (as /proc/self/cgroup
 * names it, "/" for the root) under the cgroup mount root (normally
 * "/sys/fs/cgroup"): the smallest quota / period over self and its
 * ancestors, rounded down, at least 1. Looks for cgroup v2 cpu.max, then
 * cgroup v1 cpu.cfs_quota_us in ROOT/cpu, ROOT/cpu,cpuacct and ROOT. 0 when
 * no quota applies or none can be read (no cgroup file system, no limit).
 */
int mc_threads_quota(const char *root, const char *self);

/* CPUs in this thread's affinity mask; 0 when it cannot be read. */
int mc_threads_affinity(void);

/*
 * The default team size: the affinity CPUs, capped by the quota of the
 * cgroup this process is in (read from /proc/self/cgroup, files under
 * root), at least 1.
 */
int mc_threads_granted(const char *root);

/*
 * Sets OpenMP's team size for the calling thread (omp_set_num_threads) to
 * mc_threads_granted(root) when OMP_NUM_THREADS is not set and that is
 * fewer than OpenMP would start. Returns the team size now in force.
 * Runs once for the library when it is loaded, with "/sys/fs/cgroup".
 */
int mc_threads_init(const char *root);

/*
 * Sets the calling thread's team for its next forward. While this
 * process's threads spend a fifth or more of their ready time waiting for
 * a CPU (other processes busy on the CPUs it was granted) the team is
 * halved, for every forward, and doubled again, after a backoff of 0.5 s
 * growing to 4 s, once they do not; never above the size in force when it
 * first ran. A team on cores shared with busy processes meets at barriers
 * where everyone waits for the member the OS put aside, where a smaller
 * team is moved by the scheduler to the free CPUs (docs/threads.md). Cheap
 * enough to call per forward: it reads the scheduler's figures at most
 * every 50 ms. Results do not depend on the team size. Off when
 * OMP_DYNAMIC is set to false.
 */
void mc_threads_adapt(void);

#endif
