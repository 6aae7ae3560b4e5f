/* SPDX-License-Identifier: MIT */
/*
 * rng.c - Philox4x32-10 counter-based random numbers (Salmon et al., SC'11).
 *
 * Every value is a pure function of (seed, stream, counter): no state, so
 * any thread can draw any value and the result never depends on the thread
 * count. The key is the seed; the 128-bit counter is (counter, stream).
 */
#include <math.h>

#include <mcomp/tensor.h>

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi)
{
	uint64_t p = (uint64_t)a * b;

	*hi = (uint32_t)(p >> 32);
	return (uint32_t)p;
}

void mc_philox(uint64_t seed, uint64_t stream, uint64_t counter, uint32_t out[4])
{
	uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32);
	uint32_t c2 = (uint32_t)stream, c3 = (uint32_t)(stream >> 32);
	uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);

	for (int r = 0; r < 10; r++) {
		uint32_t hi0, hi1;
		uint32_t lo0 = mulhilo(PHILOX_M0, c0, &hi0);
		uint32_t lo1 = mulhilo(PHILOX_M1, c2, &hi1);

		c0 = hi1 ^ c1 ^ k0;
		c1 = lo1;
		c2 = hi0 ^ c3 ^ k1;
		c3 = lo0;
		k0 += PHILOX_W0;
		k1 += PHILOX_W1;
	}
	out[0] = c0;
	out[1] = c1;
	out[2] = c2;
	out[3] = c3;
}

/* 24 random bits scaled into [0, 1): exactly representable in a float. */
static inline float u01(uint32_t w)
{
	return (float)(w >> 8) * (1.0f / 16777216.0f);
}

/* Value i of a stream is word i % 4 of block i / 4, so filling a tensor
 * costs one Philox call per four values when done in order. */
float mc_rand_uniform(uint64_t seed, uint64_t stream, uint64_t counter)
{
	uint32_t w[4];

	mc_philox(seed, stream, counter / 4, w);
	return u01(w[counter % 4]);
}

float mc_rand_normal(uint64_t seed, uint64_t stream, uint64_t counter)
{
	const double two_pi = 6.283185307179586476925286766559;
	uint32_t w[4];
	double u1, u2;

	mc_philox(seed, stream, counter, w);
	/* 53-bit uniforms; u1 in (0, 1] so that log(u1) is finite. */
	u1 = ((double)((((uint64_t)w[0] << 32) | w[1]) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
	u2 = (double)((((uint64_t)w[2] << 32) | w[3]) >> 11) * (1.0 / 9007199254740992.0);
	return (float)(sqrt(-2.0 * log(u1)) * cos(two_pi * u2));
}

void mc_rand_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t *perm)
{
	for (int64_t i = 0; i < n; i++)
		perm[i] = i;
	for (int64_t i = n - 1; i > 0; i--) {
		uint32_t w[4];
		uint64_t r, j;
		int64_t t;

		mc_philox(seed, stream, (uint64_t)i, w);
		r = ((uint64_t)w[0] << 32) | w[1];
		/* Lemire's multiply-shift: j uniform in [0, i], bias below 2^-32. */
		j = (uint64_t)(((unsigned __int128)r * (uint64_t)(i + 1)) >> 64);
		t = perm[i];
		perm[i] = perm[j];
		perm[j] = t;
	}
}
