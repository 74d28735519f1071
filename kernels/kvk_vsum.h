/* kvk_vsum.h — horizontal sums shared by the AVX2 and AVX-512 files (both have AVX). */
#ifndef KVARENA_KVK_VSUM_H
#define KVARENA_KVK_VSUM_H

#include <immintrin.h>

/* r[i] = sum of the 8 lanes of the i-th argument: three hadds and one 128-bit add, instead
 * of four full reductions. */
static inline void kvk_reduce4_256(__m256 a, __m256 b, __m256 c, __m256 d, float *r)
{
    __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
    _mm_storeu_ps(r, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
}

#endif
