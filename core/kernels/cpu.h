/* SPDX-License-Identifier: MIT */
/*
 * cpu.h - what this CPU can run: the one place the kernels and ops ask
 * before taking a SIMD path. Not installed.
 *
 * Each feature is probed on its first query and cached; the AMX probe asks
 * the kernel for leave to use tile data (arch_prctl), so it runs only when
 * something asks for AMX. On other architectures every feature is absent.
 */
#ifndef MCOMP_KERNELS_CPU_H
#define MCOMP_KERNELS_CPU_H

enum mc_cpu_feature {
	MC_CPU_AVX2,
	MC_CPU_FMA,
	MC_CPU_AVX512F,
	MC_CPU_AVX512BW,
	MC_CPU_AVX512VL,
	MC_CPU_AVX512VNNI,
	MC_CPU_AVX512VBMI,
	MC_CPU_AVXVNNI,
	MC_CPU_AMX_INT8, /* tiles and int8 tile products, enabled by the OS for this process */
	MC_CPU_NFEATURES
};

/* 1 when the CPU (and, for AMX, the OS) supports f, else 0. Thread-safe. */
int mc_cpu_has(enum mc_cpu_feature f);

#endif
