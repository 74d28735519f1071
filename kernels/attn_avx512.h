/* attn_avx512.h — AVX-512 (F/BW/VL) vector helpers for the shared tile kernel
 * (attn_simd.h), for attn_avx512.c and attn_amx.c: 16 fp32 lanes, 32 registers, so the
 * wide logit block is 2x16 queries by 8 keys and the PV block 4 rows by 4 vectors (16
 * accumulators each); the narrow (decode) ones are 4 query vectors by 4 keys and 4 rows by
 * 4 vectors. fp16 K/V widen with vcvtph2ps, bf16 by a 16-bit shift; both exact. */
#ifndef KVARENA_ATTN_AVX512_H
#define KVARENA_ATTN_AVX512_H

#include <immintrin.h>

#include "kvk_internal.h"

typedef __m512 vf;
#define VL 16
#define QK_NR 8
#define PV_DR 4
#define QK_NK 4   /* narrow logits: keys per pass (4 x 4 accumulators) */
#define PVN_DR 4  /* narrow P.V: vectors of head_dim per pass (4 x 4 accumulators) */

static inline vf v_zero(void) { return _mm512_setzero_ps(); }
static inline vf v_set1(float x) { return _mm512_set1_ps(x); }
static inline vf v_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void v_store(float *p, vf x) { _mm512_storeu_ps(p, x); }
static inline vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf v_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf v_div(vf a, vf b) { return _mm512_div_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf v_max(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf v_min(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline vf v_round(vf x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline vf v_pow2n(vf p, vf n) { return _mm512_scalef_ps(p, n); }

static inline vf v_zero_below(vf r, vf x, float lim)
{
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(lim), _CMP_GT_OQ), r);
}

/* -inf in the lanes where a > b, x elsewhere. */
static inline vf v_ninf_gt(vf x, vf a, vf b)
{
    return _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), _mm512_set1_ps(-INFINITY));
}

static inline vf v_load_f16(const uint8_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

static inline vf v_load_bf16(const uint8_t *p)
{
    __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}

/* x rounded to fp16 / bf16 (nearest even; NaN quiet with its top payload bits), stored: bit
 * for bit what kvk_f32_to_f16 / kvk_f32_to_bf16 give. */
static inline void v_store_f16(uint8_t *p, vf x)
{
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

static inline void v_store_bf16(uint8_t *p, vf x)
{
    __m512i b = _mm512_castps_si512(x), hi = _mm512_srli_epi32(b, 16);
    __m512i r = _mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)),
                                 _mm512_and_si512(hi, _mm512_set1_epi32(1)));
    r = _mm512_srli_epi32(r, 16);
    r = _mm512_mask_mov_epi32(r, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q),
                              _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16(r));
}

/* The narrow logits of 4 query vectors x 4 keys: lane 4i + j = sum of the lanes of a[i][j].
 * A transposing tree halves the vectors' width at every level: 45 instructions for 16 sums,
 * no scalar work. */
static inline vf v_reduce_qk(vf a[4][QK_NK])
{
    vf x[16], y[8], z[4], w[2];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++)
            x[4 * j + i] = a[i][j];
    for (int p = 0; p < 8; p++) /* 128-bit chunks: [x0 lo+hi, x1 lo+hi] */
        y[p] = _mm512_add_ps(_mm512_shuffle_f32x4(x[2 * p], x[2 * p + 1], 0x44),
                             _mm512_shuffle_f32x4(x[2 * p], x[2 * p + 1], 0xee));
    for (int q = 0; q < 4; q++) /* chunk k: 4 partial sums of x[4q + k] */
        z[q] = _mm512_add_ps(_mm512_shuffle_f32x4(y[2 * q], y[2 * q + 1], 0x88),
                             _mm512_shuffle_f32x4(y[2 * q], y[2 * q + 1], 0xdd));
    for (int r = 0; r < 2; r++) { /* chunk k: 2 + 2 partial sums of x[8r + k], x[8r + 4 + k] */
        __m512d u = _mm512_castps_pd(z[2 * r]), v = _mm512_castps_pd(z[2 * r + 1]);
        w[r] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(u, v)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(u, v)));
    }
    /* chunk k: sums of x[k], x[4 + k], x[8 + k], x[12 + k] = a[k][0 .. 3] */
    return _mm512_add_ps(_mm512_shuffle_ps(w[0], w[1], 0x88), _mm512_shuffle_ps(w[0], w[1], 0xdd));
}

/* Max / sum over each group of QK_NK = 4 lanes (one query vector), in every lane of it. */
static inline vf v_group_max(vf x)
{
    x = _mm512_max_ps(x, _mm512_permute_ps(x, 0xb1));
    return _mm512_max_ps(x, _mm512_permute_ps(x, 0x4e));
}

static inline vf v_group_sum(vf x)
{
    x = _mm512_add_ps(x, _mm512_permute_ps(x, 0xb1));
    return _mm512_add_ps(x, _mm512_permute_ps(x, 0x4e));
}

#endif
