/* attn_avx512.c — AVX-512 (F/BW/VL) vector helpers for the shared tile kernel
 * (attn_simd.h): 16 fp32 lanes, 32 registers, so the logit block is 2x16 queries by 8 keys
 * and the PV block 4 rows by 4 vectors (16 accumulators each). fp16 K/V widen with
 * vcvtph2ps, bf16 by a 16-bit shift; both exact. */
#include <immintrin.h>

#include "kvk_internal.h"

typedef __m512 vf;
#define VL 16
#define QK_NR 8
#define PV_DR 4

static inline vf v_zero(void) { return _mm512_setzero_ps(); }
static inline vf v_set1(float x) { return _mm512_set1_ps(x); }
static inline vf v_load(const float *p) { return _mm512_loadu_ps(p); }
static inline void v_store(float *p, vf x) { _mm512_storeu_ps(p, x); }
static inline vf v_add(vf a, vf b) { return _mm512_add_ps(a, b); }
static inline vf v_sub(vf a, vf b) { return _mm512_sub_ps(a, b); }
static inline vf v_mul(vf a, vf b) { return _mm512_mul_ps(a, b); }
static inline vf v_fma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
static inline vf v_max(vf a, vf b) { return _mm512_max_ps(a, b); }
static inline vf v_min(vf a, vf b) { return _mm512_min_ps(a, b); }
static inline float v_hmax(vf x) { return _mm512_reduce_max_ps(x); }
static inline float v_hsum(vf x) { return _mm512_reduce_add_ps(x); }
static inline vf v_round(vf x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline vf v_pow2n(vf p, vf n) { return _mm512_scalef_ps(p, n); }

static inline vf v_zero_below(vf r, vf x, float lim)
{
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_set1_ps(lim), _CMP_GT_OQ), r);
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

#include "kvk_vsum.h"

/* Sums of four vectors into r[0..3]: fold 512 -> 256 bits, then the 8-lane reduction. */
static inline void v_reduce4(vf a, vf b, vf c, vf d, float *r)
{
#define KVK_FOLD(x) _mm256_add_ps(_mm512_castps512_ps256(x), \
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)))
    kvk_reduce4_256(KVK_FOLD(a), KVK_FOLD(b), KVK_FOLD(c), KVK_FOLD(d), r);
#undef KVK_FOLD
}

#include "kvk_vexp.h"
#include "attn_simd.h"

int kvk__attn_avx512(const kvk_call *c, kvk_pool *pool)
{
    return kvk__attn_tiled(c, pool, &tile_ops);
}
