/* SPDX-License-Identifier: MIT */
/*
 * cpu.c - CPU feature probing for every SIMD path (cpu.h): GCC's
 * __builtin_cpu_supports for the instruction sets, cpuid, xgetbv and
 * arch_prctl for AMX, each answer cached after its first query.
 */
#if defined(__linux__) && defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "kernels/cpu.h"

#if defined(__linux__) && defined(__x86_64__)
/* AMX needs the CPU's word and the kernel's leave to use tile data (Linux 5.16). */
static int amx_usable(void)
{
	unsigned int eax, ebx, ecx, edx, lo, hi;

	if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & (1u << 27))) /* osxsave */
		return 0;
	if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) || !(edx & (1u << 24)) ||
	    !(edx & (1u << 25))) /* amx-tile, amx-int8 */
		return 0;
	__asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
	if ((lo & 0x60000) != 0x60000) /* XTILECFG and XTILEDATA enabled by the OS */
		return 0;
	return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
}
#endif

static int probe(enum mc_cpu_feature f)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_cpu_init();
	switch (f) {
	case MC_CPU_AVX2:
		return __builtin_cpu_supports("avx2");
	case MC_CPU_FMA:
		return __builtin_cpu_supports("fma");
	case MC_CPU_AVX512F:
		return __builtin_cpu_supports("avx512f");
	case MC_CPU_AVX512BW:
		return __builtin_cpu_supports("avx512bw");
	case MC_CPU_AVX512VL:
		return __builtin_cpu_supports("avx512vl");
	case MC_CPU_AVX512VNNI:
		return __builtin_cpu_supports("avx512vnni");
	case MC_CPU_AVX512VBMI:
		return __builtin_cpu_supports("avx512vbmi");
	case MC_CPU_AVXVNNI:
#ifdef __clang__
		/* clang (14, Debian 12's, used by the fuzz build) has no name for it:
		 * CPUID.(EAX=7, ECX=1):EAX bit 4, usable when AVX2 is (the OS saves
		 * the YMM state). */
		{
			unsigned int a, b, c, d;

			return __builtin_cpu_supports("avx2") &&
			       __get_cpuid_count(7, 1, &a, &b, &c, &d) && (a & (1u << 4));
		}
#else
		return __builtin_cpu_supports("avxvnni");
#endif
	case MC_CPU_AMX_INT8:
#if defined(__linux__) && defined(__x86_64__)
		return amx_usable();
#else
		return 0;
#endif
	case MC_CPU_NFEATURES:
		break;
	}
#endif
	return 0;
}

int mc_cpu_has(enum mc_cpu_feature f)
{
	/* 0: not probed yet, 1: present, -1: absent. Two threads may both probe
	 * on the first query; they get the same answer. */
	static int known[MC_CPU_NFEATURES];
	int v;

	if ((unsigned)f >= MC_CPU_NFEATURES)
		return 0;
	v = __atomic_load_n(&known[f], __ATOMIC_RELAXED);
	if (!v) {
		v = probe(f) ? 1 : -1;
		__atomic_store_n(&known[f], v, __ATOMIC_RELAXED);
	}
	return v > 0;
}
