/* SPDX-License-Identifier: MIT */
/*
 * limits.h - the parts of the memory limit (limits.c) that the layers above
 * and the unit tests use beyond mcomp/common.h. Not installed.
 */
#ifndef MCOMP_BASE_LIMITS_H
#define MCOMP_BASE_LIMITS_H

#include <stddef.h>
#include <stdint.h>

/*
 * The cgroup memory limit of a process in cgroup v2 path v2 and cgroup v1
 * memory path v1 (as /proc/self/cgroup names them) under the cgroup mount
 * root (normally "/sys/fs/cgroup"): the smallest memory.max over v2 and its
 * ancestors, or memory.limit_in_bytes under ROOT/memory. 0 when none.
 */
uint64_t mc_mem_cgroup(const char *root, const char *v2, const char *v1);
/* Bytes of physical memory; 0 when unknown. */
uint64_t mc_mem_physical(void);
/* bytes as "953.7 MiB" ("123 bytes" below 1 KiB, "unlimited" for UINT64_MAX) into buf. */
const char *mc_mem_text(uint64_t bytes, char *buf, size_t n);

#endif
