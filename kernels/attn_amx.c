/* attn_amx.c — the tile kernel (attn_simd.h) with the logits and P.V of wide (prefill) tiles
 * on AMX-BF16 tiles, and their online softmax (fp32) writing the probabilities for the tiles;
 * everything else (masking, soft-cap, ALiBi, narrow decode tiles) as on AVX-512
 * (attn_avx512.h).
 *
 * Q, K, V and the probabilities are rounded to bf16 (8 significant bits) on their way into
 * the tiles; products accumulate in fp32. That is why this ISA is chosen only when asked
 * for (KVARENA_ISA=amx, kvk_isa_set): its results are within 2e-2 of fp64 attention for
 * logits of moderate size (kvkernels.h), not 1e-4.
 *
 * Layouts (tdpbf16ps: C[16][16] += A[16][32 bf16] . B[16][32 bf16 as 16 pairs], where B row
 * k/2 holds for each column j the pair (k, k+1) of the product's shared dimension):
 *   logits, transposed as the shared softmax wants them (s[n][m]):
 *     A = the block's K in bf16, [KB][D] (rows as in the pages);
 *     B = the task's queries, pairs of head_dim elements: qv[D/2][mp] (made once per task);
 *   P.V, acc[m][d] += p[m][n] v[n][d]:
 *     A = the probabilities transposed back and rounded: pb[mp][KB];
 *     B = V, pairs of keys: vv[KB/2][D];
 *   each product tile goes through a small fp32 buffer to acc, rescaled by alpha on the way.
 * Eight tiles: four products (2 x 2 blocks of 16), two A and two B operands. */
#include <immintrin.h>

#include "attn_avx512.h"
#include "kvk_vexp.h"

/* exp(x) for x <= 0 or -inf (the softmax's logits minus their running max), relative error
 * below 1e-5 down to x = -87 (degree-5 Taylor polynomial of 2^f, |f| <= 1/2; measured 5.2e-6):
 * the probabilities are rounded to bf16 (2^-9) anyway. -inf gives exactly 0 (scalef by -inf),
 * so do keys masked out. 11 instructions instead of v_exp's 16 (prefill on amx ~5% faster). */
static inline vf v_exp_le0(vf x)
{
    vf t = v_mul(x, v_set1(1.44269504088896341f));
    vf n = v_round(t), tc = v_max(t, v_set1(-126.0f));
    vf f = v_sub(tc, v_round(tc));
    vf p = v_set1(1.33335581e-3f);
    p = v_fma(p, f, v_set1(9.61812911e-3f));
    p = v_fma(p, f, v_set1(5.55041087e-2f));
    p = v_fma(p, f, v_set1(2.40226507e-1f));
    p = v_fma(p, f, v_set1(6.93147181e-1f));
    p = v_fma(p, f, v_set1(1.0f));
    return v_pow2n(p, n);
}

#define TILE_OWN_WIDE 1 /* wide_begin, wide_logits, wide_pv, wide_end below */
#define KB 256    /* keys per block: fewer passes over acc per key (+6% at 512 tokens, +14% at
                   * 2048 against 64, A/B alternated; 128 was in between) */
#define KB_PAD 32 /* the keys of a P.V product come 32 at a time */
#define TILE_M_LONG 256 /* packing K and V is paid once per tile: +5-13% at 2048 tokens (A/B) */
#define WIDE_SCRATCH(D, mp) amx_scratch_floats(D, mp)
static size_t amx_scratch_floats(uint32_t D, uint32_t mp);

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function" /* the fp32 wide path, replaced here */
#include "attn_simd.h"
#pragma GCC diagnostic pop

/* The AMX scratch of a thread's tile_buf (b->wide), in floats from its start. */
typedef struct amx_buf {
    uint16_t *kb;  /* [KB][D] bf16 */
    uint32_t *vv;  /* [KB/2][D] bf16 pairs of keys */
    uint32_t *qv;  /* [D/2][mp] bf16 pairs of head_dim elements */
    uint16_t *pb;  /* [mp][KB] bf16 */
    float *ct;     /* [32][32] fp32: one 2 x 2 block of product tiles */
} amx_buf;

static size_t amx_scratch_floats(uint32_t D, uint32_t mp)
{
    return 2 * round16((size_t)KB * D / 2) + round16((size_t)mp * D / 2)
           + round16((size_t)mp * KB / 2) + 32 * 32;
}

static amx_buf amx_buf_carve(const tile_buf *b, uint32_t D, uint32_t mp)
{
    float *p = b->wide;
    amx_buf a;
    a.kb = (uint16_t *)p, p += round16((size_t)KB * D / 2);
    a.vv = (uint32_t *)p, p += round16((size_t)KB * D / 2);
    a.qv = (uint32_t *)p, p += round16((size_t)mp * D / 2);
    a.pb = (uint16_t *)p, p += round16((size_t)mp * KB / 2);
    a.ct = p;
    return a;
}

static inline void store_bf16(uint16_t *dst, __m512 x)
{
    _mm256_storeu_si256((__m256i *)dst, (__m256i)_mm512_cvtneps_pbh(x));
}

/* Transposes the 16 x 16 block r in registers: r[i][j] becomes r[j][i]. */
static inline void transpose16(__m512 r[16])
{
    __m512 t[16];
    for (int i = 0; i < 8; i++) { /* lane L: rows 2i, 2i+1 interleaved, columns 4L .. 4L+3 */
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) { /* r[4i + k], lane L: rows 4i .. 4i+3 of column 4L + k */
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int k = 0; k < 4; k++) { /* column 4L + k: lane L of r[k], r[4+k], r[8+k], r[12+k] */
        __m512 ab02 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0x88);
        __m512 ab13 = _mm512_shuffle_f32x4(r[k], r[4 + k], 0xdd);
        __m512 cd02 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0x88);
        __m512 cd13 = _mm512_shuffle_f32x4(r[8 + k], r[12 + k], 0xdd);
        t[k] = _mm512_shuffle_f32x4(ab02, cd02, 0x88);
        t[4 + k] = _mm512_shuffle_f32x4(ab13, cd13, 0x88);
        t[8 + k] = _mm512_shuffle_f32x4(ab02, cd02, 0xdd);
        t[12 + k] = _mm512_shuffle_f32x4(ab13, cd13, 0xdd);
    }
    for (int i = 0; i < 16; i++)
        r[i] = t[i];
}

typedef struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;

/* Every tile 16 rows of 64 bytes; the task's queries as B operands (qv). */
static void wide_begin(tile_buf *b, uint32_t D, uint32_t mp)
{
    amx_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    _tile_loadconfig(&cfg);
    amx_buf a = amx_buf_carve(b, D, mp);
    for (uint32_t m0 = 0; m0 < mp; m0 += 16)
        for (uint32_t dp0 = 0; dp0 < D / 2; dp0 += 16) {
            __m512 r[16]; /* r[i]: the 16 pairs dp0 .. dp0+15 of query vector m0 + i */
            for (int i = 0; i < 16; i++) {
                const float *q = b->qs + (size_t)(m0 + i) * D + 2 * dp0;
                r[i] = (__m512)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(q + 16), _mm512_loadu_ps(q));
            }
            transpose16(r);
            for (int j = 0; j < 16; j++)
                _mm512_storeu_ps(a.qv + (size_t)(dp0 + j) * mp + m0, r[j]);
        }
}

static void wide_end(void)
{
    _tile_release();
}

/* c = the 2 x 2 block of 16 x 16 products of rows a[0 .. 32) (a_stride bytes apart) and
 * columns b[0 .. 32) (pairs of the shared dimension, rows b_stride bytes apart), over steps
 * of 32 of the shared dimension: step k reads A at byte 64k of its rows, B from its row 16k.
 * c gets 32 rows of 32 floats, c_stride bytes apart. Not inlined: inlined, it measured no
 * faster. */
static __attribute__((noinline)) void amx_2x2(const uint8_t *a, size_t a_stride,
                                              const uint8_t *b, size_t b_stride,
                                              uint32_t steps, float *c, size_t c_stride)
{
    uint8_t *cb = (uint8_t *)c;
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (uint32_t k = 0; k < steps; k++) {
        const uint8_t *bk = b + (size_t)16 * k * b_stride;
        _tile_loadd(4, a + 64 * k, a_stride);
        _tile_loadd(5, a + 16 * a_stride + 64 * k, a_stride);
        _tile_loadd(6, bk, b_stride);
        _tile_loadd(7, bk + 64, b_stride);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, cb, c_stride);
    _tile_stored(1, cb + 64, c_stride);
    _tile_stored(2, cb + 16 * c_stride, c_stride);
    _tile_stored(3, cb + 16 * c_stride + 64, c_stride);
}

/* s[n][m] for keys kb .. kb+n_pad (padding: K rows of zeros, masked by the caller). */
static void wide_logits(const kvk_call *c, const kvk_task *t, const tile_buf *b, uint32_t kb,
                        uint32_t n, uint32_t n_pad, uint32_t mp)
{
    const uint32_t D = c->g->head_dim;
    const kvk_dtype dt = c->g->dtype;
    const kvk_item *it = &c->items[t->item];
    amx_buf a = amx_buf_carve(b, D, mp);
    FOR_EACH_RUN(c, it, t->kv_head, 0, kb, n, src, run, j,
                 for (uint32_t r = 0; r < run; r++)
                     for (uint32_t d = 0; d < D; d += 32) {
                         const uint8_t *row = src + (size_t)r * D * c->esize;
                         __m512bh h = _mm512_cvtne2ps_pbh(v_load_kv(row, d + 16, dt),
                                                          v_load_kv(row, d, dt));
                         _mm512_storeu_si512(a.kb + (size_t)(j + r) * D + d, (__m512i)h);
                     })
    memset(a.kb + (size_t)n * D, 0, (size_t)(n_pad - n) * D * 2);
    for (uint32_t n0 = 0; n0 < n_pad; n0 += 32)
        for (uint32_t m0 = 0; m0 < mp; m0 += 32)
            amx_2x2((const uint8_t *)(a.kb + (size_t)n0 * D), D * 2,
                    (const uint8_t *)(a.qv + m0), mp * 4, D / 32,
                    b->s + (size_t)n0 * mp + m0, mp * 4);
}

/* softmax_cols of attn_simd.h for AMX: the probabilities go straight to pb, transposed 16 x 16
 * in registers and rounded, instead of back to s for a separate pass (prefill on amx +6% at
 * 2048 tokens, +10% at 512, A/B alternated). */
static void amx_softmax(const tile_buf *b, uint32_t D, uint32_t mp, uint32_t n_pad)
{
    amx_buf a = amx_buf_carve(b, D, mp);
    for (uint32_t m0 = 0; m0 < mp; m0 += VL) {
        vf mx, sum = v_zero(), mu = col_max(b, mp, n_pad, m0, &mx);
        vf alpha = v_exp_le0(v_sub(v_load(b->m + m0), mu));
        for (uint32_t n0 = 0; n0 < n_pad; n0 += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                r[i] = v_exp_le0(v_sub(v_load(b->s + (size_t)(n0 + i) * mp + m0), mu));
                sum = v_add(sum, r[i]);
            }
            transpose16(r);
            for (int i = 0; i < 16; i++)
                store_bf16(a.pb + (size_t)(m0 + i) * KB + n0, r[i]);
        }
        col_state(b, m0, mx, alpha, sum);
    }
}

/* The softmax (amx_softmax), then acc[m][:] = alpha[m] acc[m][:] + sum_n p[m][n] v[n][:] for
 * m < m4, n < n_pad. */
static void wide_pv(const kvk_call *c, const kvk_task *t, const tile_buf *b, uint32_t kb,
                    uint32_t n, uint32_t n_pad, uint32_t mp, float *acc, uint32_t m4)
{
    const uint32_t D = c->g->head_dim;
    amx_softmax(b, D, mp, n_pad);
    const kvk_dtype dt = c->g->dtype;
    const kvk_item *it = &c->items[t->item];
    amx_buf a = amx_buf_carve(b, D, mp);
    const uint32_t mt = (m4 + 31) & ~31u; /* query vectors computed: whole 32-row blocks */
    /* pairs of V rows, interleaved element by element: (v[2j][d], v[2j+1][d]) */
    const __m512i mix = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                         24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                         16, 0);
    const uint8_t *vr[KB]; /* the V rows, found a page run at a time */
    const size_t row_bytes = D * c->esize;
    FOR_EACH_RUN(c, it, t->kv_head, 1, kb, n, src, run, j,
                 for (uint32_t r = 0; r < run; r++)
                     vr[j + r] = src + r * row_bytes;)
    for (uint32_t j = 0; 2 * j < n_pad; j++) {
        uint32_t k = 2 * j;
        const uint8_t *r0 = k < n ? vr[k] : NULL, *r1 = k + 1 < n ? vr[k + 1] : NULL;
        for (uint32_t d = 0; d < D; d += 16) {
            __m512 x0 = r0 ? v_load_kv(r0, d, dt) : _mm512_setzero_ps();
            __m512 x1 = r1 ? v_load_kv(r1, d, dt) : _mm512_setzero_ps();
            __m512i h = (__m512i)_mm512_cvtne2ps_pbh(x1, x0); /* x0 in 0..15, x1 in 16..31 */
            _mm512_storeu_si512(a.vv + (size_t)j * D + d, _mm512_permutexvar_epi16(mix, h));
        }
    }
    for (uint32_t m0 = 0; m0 < mt; m0 += 32)
        for (uint32_t d0 = 0; d0 < D; d0 += 32) {
            amx_2x2((const uint8_t *)(a.pb + (size_t)m0 * KB), KB * 2,
                    (const uint8_t *)(a.vv + d0), D * 4, n_pad / 32, a.ct, 32 * 4);
            for (uint32_t i = 0; i < 32 && m0 + i < m4; i++) {
                float *x = acc + (size_t)(m0 + i) * D + d0;
                __m512 al = _mm512_set1_ps(b->alpha[m0 + i]);
                _mm512_storeu_ps(x, _mm512_fmadd_ps(_mm512_loadu_ps(x), al,
                                                    _mm512_loadu_ps(a.ct + i * 32)));
                _mm512_storeu_ps(x + 16, _mm512_fmadd_ps(_mm512_loadu_ps(x + 16), al,
                                                         _mm512_loadu_ps(a.ct + i * 32 + 16)));
            }
        }
}

int kvk__attn_amx(const kvk_call *c, kvk_pool *pool)
{
    return kvk__attn_tiled(c, pool, &tile_ops);
}
