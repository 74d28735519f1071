/* attn_avx2.c — AVX2/FMA/F16C vector helpers for the shared tile kernel (attn_simd.h):
 * 8 fp32 lanes and 16 registers, so the wide logit block is 2x8 queries by 4 keys (8
 * accumulators) and the PV block 4 rows by 3 vectors (12); the narrow (decode) ones are 4
 * query vectors by 2 keys and 4 rows by 2 vectors (8 each). */
#include <immintrin.h>

#include "kvk_internal.h"

typedef __m256 vf;
#define VL 8
#define QK_NR 4
#define PV_DR 3
#define QK_NK 2   /* narrow logits: keys per pass (4 x 2 accumulators) */
#define PVN_DR 2  /* narrow P.V: vectors of head_dim per pass (4 x 2 accumulators) */

static inline vf v_zero(void) { return _mm256_setzero_ps(); }
static inline vf v_set1(float x) { return _mm256_set1_ps(x); }
static inline vf v_load(const float *p) { return _mm256_loadu_ps(p); }
static inline void v_store(float *p, vf x) { _mm256_storeu_ps(p, x); }
static inline vf v_add(vf a, vf b) { return _mm256_add_ps(a, b); }
static inline vf v_sub(vf a, vf b) { return _mm256_sub_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm256_mul_ps(a, b); }
static inline vf v_div(vf a, vf b) { return _mm256_div_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
static inline vf v_max(vf a, vf b) { return _mm256_max_ps(a, b); }
static inline vf v_min(vf a, vf b) { return _mm256_min_ps(a, b); }
static inline vf v_round(vf x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }

/* p * 2^n by building the float 2^n from its exponent bits (n in [-126, 127]). */
static inline vf v_pow2n(vf p, vf n)
{
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

static inline vf v_zero_below(vf r, vf x, float lim)
{
    return _mm256_and_ps(r, _mm256_cmp_ps(x, _mm256_set1_ps(lim), _CMP_GT_OQ));
}

/* -inf in the lanes where a > b, x elsewhere. */
static inline vf v_ninf_gt(vf x, vf a, vf b)
{
    return _mm256_blendv_ps(x, _mm256_set1_ps(-INFINITY), _mm256_cmp_ps(a, b, _CMP_GT_OQ));
}

static inline vf v_load_f16(const uint8_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline vf v_load_bf16(const uint8_t *p)
{
    __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

/* x rounded to fp16 / bf16 (nearest even; NaN quiet with its top payload bits), stored: bit
 * for bit what kvk_f32_to_f16 / kvk_f32_to_bf16 give. */
static inline void v_store_f16(uint8_t *p, vf x)
{
    _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

static inline void v_store_bf16(uint8_t *p, vf x)
{
    __m256i b = _mm256_castps_si256(x), hi = _mm256_srli_epi32(b, 16);
    __m256i r = _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)),
                                 _mm256_and_si256(hi, _mm256_set1_epi32(1)));
    r = _mm256_srli_epi32(r, 16);
    r = _mm256_blendv_epi8(r, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)),
                           _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
    /* 16-bit halves: packus keeps them (< 2^16) per 128-bit lane, the permute joins the lanes */
    r = _mm256_permute4x64_epi64(_mm256_packus_epi32(r, r), 0x08);
    _mm_storeu_si128((__m128i *)p, _mm256_castsi256_si128(r));
}

/* The narrow logits of 4 query vectors x 2 keys: lane 2i + j = sum of the lanes of a[i][j].
 * hadds pair the vectors, one 128-bit fold finishes all eight sums. */
static inline vf v_reduce_qk(vf a[4][QK_NK])
{
    __m256 h0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0][0], a[0][1]), _mm256_hadd_ps(a[1][0], a[1][1]));
    __m256 h1 = _mm256_hadd_ps(_mm256_hadd_ps(a[2][0], a[2][1]), _mm256_hadd_ps(a[3][0], a[3][1]));
    /* lanes of h0: a00 a01 a10 a11 (low halves) | the same (high halves) */
    return _mm256_add_ps(_mm256_permute2f128_ps(h0, h1, 0x20), _mm256_permute2f128_ps(h0, h1, 0x31));
}

/* Max / sum over each pair of lanes (one query vector), in both lanes of it. */
static inline vf v_group_max(vf x)
{
    return _mm256_max_ps(x, _mm256_permute_ps(x, 0xb1));
}

static inline vf v_group_sum(vf x)
{
    return _mm256_add_ps(x, _mm256_permute_ps(x, 0xb1));
}

#include "kvk_vexp.h"
#include "attn_simd.h"

int kvk__attn_avx2(const kvk_call *c, kvk_pool *pool)
{
    return kvk__attn_tiled(c, pool, &tile_ops);
}

void kvk__store_avx2(uint8_t *dst, const float *src, uint32_t n, kvk_dtype dt)
{
    store_run(dst, src, n, dt);
}
