/* attn_simd.h — the tile kernel of paged attention, written once for every vector ISA.
 *
 * Included by attn_avx2.c and attn_avx512.c after they define the vector type `vf`, its
 * width VL, the register-blocking sizes QK_NR and PV_DR and the v_* helpers; compiled once
 * per ISA with that ISA's flags. One task (kvk_internal.h) = up to KVK_TILE_M query vectors
 * (the G heads of one KV head for a few rows) against a key range, in blocks of KB keys:
 *
 *   1. gather the block's K and V rows from their pages and widen them to fp32 (each K/V
 *      byte is read once per task, shared by all its query vectors);
 *   2. logits: narrow tiles (decode: M < VL query vectors) use dot products along head_dim
 *      with a 4-way horizontal reduction, into S[m][n]; wide tiles (prefill) use the
 *      transposed queries Qt[d][m] against broadcast K elements, a register-blocked
 *      2*VL x QK_NR outer product with no reduction at all, into S^T[n][m];
 *   3. mask / soft-cap / ALiBi only on blocks that need it (scalar: a minority of blocks);
 *   4. online softmax vectorized along the contiguous axis of either layout;
 *   5. acc[m][:] += P[m][n] * V[n][:], register-blocked PV_MR rows x PV_DR vectors.
 * Queries are pre-scaled (and rotated) once per task, so logits come out scaled. */
#include <float.h>
#include <string.h>

#ifndef VL
#error "attn_simd.h is included by an ISA file after its vector helpers"
#endif

#define KB 64                       /* keys per block: a multiple of VL and QK_NR */
/* Narrow (decode) tiles use short blocks so the widened K/V stay in L1 and the work per
 * block is small next to DRAM latency; they prefetch KB_NARROW_AHEAD blocks ahead. */
#ifndef KB_NARROW /* tunable at build time, e.g. -DKB_NARROW=32 */
#define KB_NARROW 16
#endif
#ifndef KB_NARROW_AHEAD
#define KB_NARROW_AHEAD 8
#endif
#define PV_MR 4                     /* query rows per PV register block */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

typedef struct tile_buf {
    float *qs;        /* [mp][D] scaled, rotated queries; rows >= M are zero */
    float *qt;        /* [D][mp] the same transposed (wide tiles) */
    float *kf;        /* [KB][D] the block's K rows in fp32; rows >= n are zero */
    float *vf;        /* [KB][D] the block's V rows */
    float *s;         /* [KB * mp] logits, then probabilities */
    float *m, *l;     /* [mp] running max and sum */
    float *alpha;     /* [mp] rescale factor of the current block */
    float *cs;        /* [D] RoPE cos/sin of the current row */
} tile_buf;

static size_t round16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static size_t tile_scratch_floats(uint32_t D, uint32_t mp)
{
    return 2 * round16((size_t)mp * D) + 2 * round16((size_t)KB * D)
           + round16((size_t)KB * mp) + 3 * round16(mp) + round16(D);
}

static tile_buf tile_buf_carve(float *p, uint32_t D, uint32_t mp)
{
    tile_buf b;
    b.qs = p, p += round16((size_t)mp * D);
    b.qt = p, p += round16((size_t)mp * D);
    b.kf = p, p += round16((size_t)KB * D);
    b.vf = p, p += round16((size_t)KB * D);
    b.s = p, p += round16((size_t)KB * mp);
    b.m = p, p += round16(mp);
    b.l = p, p += round16(mp);
    b.alpha = p, p += round16(mp);
    b.cs = p;
    return b;
}

/* ---- gathering K/V ---- */

/* Widens n elements (a multiple of VL) of dtype dt to fp32. */
static void cvt_run(float *dst, const uint8_t *src, size_t n, kvk_dtype dt)
{
    if (dt == KVK_F16)
        for (size_t i = 0; i < n; i += VL)
            v_store(dst + i, v_load_f16(src + 2 * i));
    else if (dt == KVK_BF16)
        for (size_t i = 0; i < n; i += VL)
            v_store(dst + i, v_load_bf16(src + 2 * i));
    else
        memcpy(dst, src, n * sizeof(float));
}

/* Calls fn(ptr, bytes) for each contiguous run of rows of keys [k0, k0 + n) of KV head h:
 * rows are contiguous inside a page, pages are wherever the page table says. */
#define FOR_EACH_RUN(c, it, h, kind, k0, n, ptr, run, j, body)                          \
    for (uint32_t j = 0, run; j < (n); j += run) {                                      \
        uint32_t pos_ = (k0) + j, pt_ = (c)->g->page_tokens;                            \
        run = pt_ - pos_ % pt_ < (n) - j ? pt_ - pos_ % pt_ : (n) - j;                  \
        const uint8_t *ptr = kvk__kv_row((c), (it), pos_, (h), (kind));                 \
        body                                                                            \
    }

static void load_block(const kvk_call *c, const kvk_item *it, uint32_t h, int kind,
                       uint32_t k0, uint32_t n, uint32_t n_pad, float *dst)
{
    size_t D = c->g->head_dim;
    FOR_EACH_RUN(c, it, h, kind, k0, n, src, run, j,
                 cvt_run(dst + j * D, src, run * D, c->g->dtype);)
    memset(dst + n * D, 0, (n_pad - n) * D * sizeof(float));
}

/* Pages of a context are scattered, and the hardware prefetcher stops at every 4 KiB
 * boundary: ask for the next block's K and V lines while this block computes. */
static void prefetch_block(const kvk_call *c, const kvk_item *it, uint32_t h, uint32_t k0,
                           uint32_t n)
{
    size_t bytes_per_row = c->g->head_dim * c->esize;
    for (int kind = 0; kind < 2; kind++)
        FOR_EACH_RUN(c, it, h, kind, k0, n, src, run, j,
                     for (size_t off = 0; off < run * bytes_per_row; off += 64)
                         __builtin_prefetch(src + off);)
}

/* ---- queries ---- */

static void tile_load_q(const kvk_call *c, const kvk_task *t, size_t row0, tile_buf *b,
                        uint32_t mp, int wide)
{
    const kvk_geom *g = c->g;
    uint32_t G = g->q_heads / g->kv_heads, D = g->head_dim, m = 0;
    for (uint32_t r = t->r0; r < t->r1; r++) {
        const float *src = c->q + ((row0 + r) * g->q_heads + (size_t)t->kv_head * G) * D;
        if (c->opts.rope != KVK_ROPE_NONE)
            kvk__rope_table(b->cs, D, c->items[t->item].n_kv + r, c->opts.rope_theta);
        for (uint32_t k = 0; k < G; k++, m++) {
            float *dst = b->qs + (size_t)m * D;
            memcpy(dst, src + (size_t)k * D, D * sizeof(float));
            if (c->opts.rope != KVK_ROPE_NONE)
                kvk__rope_apply(dst, D, c->opts.rope, b->cs);
            for (uint32_t d = 0; d < D; d++)
                dst[d] *= c->opts.scale;
        }
    }
    memset(b->qs + (size_t)m * D, 0, (size_t)(mp - m) * D * sizeof(float));
    for (uint32_t i = 0; wide && i < mp; i++) /* once per task: scalar is fine */
        for (uint32_t d = 0; d < D; d++)
            b->qt[(size_t)d * mp + i] = b->qs[(size_t)i * D + d];
}

/* ---- logits ---- */

/* Narrow tiles: s[m][n] = qs[m] . kf[n], four query vectors per pass over a key row. */
static void qk_dot(const tile_buf *b, uint32_t m4, uint32_t n_pad, uint32_t D)
{
    for (uint32_t n = 0; n < n_pad; n++) {
        const float *k = b->kf + (size_t)n * D;
        for (uint32_t m = 0; m < m4; m += 4) {
            const float *q = b->qs + (size_t)m * D;
            vf a0 = v_zero(), a1 = v_zero(), a2 = v_zero(), a3 = v_zero();
            for (uint32_t d = 0; d < D; d += VL) {
                vf kv = v_load(k + d);
                a0 = v_fma(v_load(q + d), kv, a0);
                a1 = v_fma(v_load(q + D + d), kv, a1);
                a2 = v_fma(v_load(q + 2 * D + d), kv, a2);
                a3 = v_fma(v_load(q + 3 * D + d), kv, a3);
            }
            float r[4];
            v_reduce4(a0, a1, a2, a3, r);
            for (int i = 0; i < 4; i++)
                b->s[(size_t)(m + i) * KB + n] = r[i];
        }
    }
}

/* Wide tiles: s[n][m0 .. m0+2VL) for keys n0 .. n0+QK_NR, an outer product per element d. */
ALWAYS_INLINE void qk_wide_block(const tile_buf *b, uint32_t mp, uint32_t D, uint32_t m0,
                                 uint32_t n0)
{
    vf acc[2][QK_NR];
    for (int j = 0; j < QK_NR; j++)
        acc[0][j] = acc[1][j] = v_zero();
    const float *k = b->kf + (size_t)n0 * D;
    for (uint32_t d = 0; d < D; d++) {
        vf q0 = v_load(b->qt + (size_t)d * mp + m0), q1 = v_load(b->qt + (size_t)d * mp + m0 + VL);
        for (int j = 0; j < QK_NR; j++) {
            vf kb = v_set1(k[(size_t)j * D + d]);
            acc[0][j] = v_fma(q0, kb, acc[0][j]);
            acc[1][j] = v_fma(q1, kb, acc[1][j]);
        }
    }
    for (int j = 0; j < QK_NR; j++) {
        v_store(b->s + (size_t)(n0 + j) * mp + m0, acc[0][j]);
        v_store(b->s + (size_t)(n0 + j) * mp + m0 + VL, acc[1][j]);
    }
}

static void qk_wide(const tile_buf *b, uint32_t mp, uint32_t n_pad, uint32_t D)
{
    for (uint32_t n0 = 0; n0 < n_pad; n0 += QK_NR)
        for (uint32_t m0 = 0; m0 < mp; m0 += 2 * VL)
            qk_wide_block(b, mp, D, m0, n0);
}

/* Masks keys a row cannot see (and the padding past n), applies soft-cap and ALiBi. Only
 * runs on blocks where something applies; s[m][n] is at s[m * sm + n * sn]. */
static void logits_fix(const kvk_call *c, const kvk_task *t, float *s, size_t sm, size_t sn,
                       uint32_t kb, uint32_t n, uint32_t n_pad)
{
    const kvk_item *it = &c->items[t->item];
    const kvk_attn_opts *o = &c->opts;
    uint32_t G = c->g->q_heads / c->g->kv_heads, n_keys = it->n_kv + it->n_new;
    uint32_t lo_last, hi_first, lo, hi;
    kvk__visible(o, it->n_kv + t->r1 - 1, n_keys, &lo_last, &hi);
    kvk__visible(o, it->n_kv + t->r0, n_keys, &lo, &hi_first);
    int mask = kb < lo_last || kb + n > hi_first || n < n_pad;
    int modify = o->softcap > 0.0f || o->alibi;
    if (!mask && !modify)
        return;
    for (uint32_t m = 0; m < (t->r1 - t->r0) * G; m++) {
        uint32_t pos = it->n_kv + t->r0 + m / G, qh = t->kv_head * G + m % G;
        float slope = o->alibi ? o->alibi[qh] : 0.0f;
        kvk__visible(o, pos, n_keys, &lo, &hi);
        for (uint32_t j = 0; j < n_pad; j++) {
            float *x = &s[m * sm + j * sn];
            if (j >= n || kb + j < lo || kb + j >= hi)
                *x = -INFINITY;
            else if (modify)
                *x = kvk__logit(o, *x, slope, kb + j, pos);
        }
    }
}

/* ---- online softmax ---- */

/* Rows layout s[m][n]: per row, new max, p = exp(s - max) in place, alpha = exp(old - new).
 * A max of -inf (nothing visible yet) is replaced by -FLT_MAX so exp gives exact zeros
 * instead of NaN. */
static void softmax_rows(const tile_buf *b, uint32_t m4, uint32_t n_pad)
{
    for (uint32_t m = 0; m < m4; m++) {
        float *x = b->s + (size_t)m * KB;
        vf mx = v_set1(-INFINITY), sum = v_zero();
        for (uint32_t j = 0; j < n_pad; j += VL)
            mx = v_max(mx, v_load(x + j));
        float mnew = fmaxf(b->m[m], v_hmax(mx)), mu = fmaxf(mnew, -FLT_MAX);
        vf vmu = v_set1(mu);
        for (uint32_t j = 0; j < n_pad; j += VL) {
            vf p = v_exp(v_sub(v_load(x + j), vmu));
            v_store(x + j, p);
            sum = v_add(sum, p);
        }
        b->alpha[m] = expf(b->m[m] - mu);
        b->l[m] = b->l[m] * b->alpha[m] + v_hsum(sum);
        b->m[m] = mnew;
    }
}

/* Columns layout s[n][m]: the same, VL query vectors at a time down the key axis. */
static void softmax_cols(const tile_buf *b, uint32_t mp, uint32_t n_pad)
{
    for (uint32_t m0 = 0; m0 < mp; m0 += VL) {
        vf mold = v_load(b->m + m0), mx = mold, sum = v_zero();
        for (uint32_t n = 0; n < n_pad; n++)
            mx = v_max(mx, v_load(b->s + (size_t)n * mp + m0));
        vf mu = v_max(mx, v_set1(-FLT_MAX)), alpha = v_exp(v_sub(mold, mu));
        for (uint32_t n = 0; n < n_pad; n++) {
            float *x = b->s + (size_t)n * mp + m0;
            vf p = v_exp(v_sub(v_load(x), mu));
            v_store(x, p);
            sum = v_add(sum, p);
        }
        v_store(b->m + m0, mx);
        v_store(b->alpha + m0, alpha);
        v_store(b->l + m0, v_fma(v_load(b->l + m0), alpha, sum));
    }
}

/* ---- P . V ---- */

static void acc_rescale(float *acc, const float *alpha, uint32_t m4, uint32_t D)
{
    for (uint32_t m = 0; m < m4; m++) {
        if (alpha[m] == 1.0f)
            continue;
        vf a = v_set1(alpha[m]);
        for (uint32_t d = 0; d < D; d += VL)
            v_store(acc + (size_t)m * D + d, v_mul(v_load(acc + (size_t)m * D + d), a));
    }
}

/* acc[m0 .. m0+PV_MR)[d0 .. d0+dr*VL) += sum_n p[m][n] v[n][:]; p[m][n] at p[m*pm + n*pn]. */
ALWAYS_INLINE void pv_block(const float *p, size_t pm, size_t pn, const float *v,
                            uint32_t n_pad, uint32_t D, float *acc, uint32_t m0, uint32_t d0,
                            const int dr)
{
    vf a[PV_MR][PV_DR];
    for (int i = 0; i < PV_MR; i++)
        for (int k = 0; k < dr; k++)
            a[i][k] = v_load(acc + (size_t)(m0 + i) * D + d0 + k * VL);
    for (uint32_t n = 0; n < n_pad; n++) {
        vf vv[PV_DR];
        for (int k = 0; k < dr; k++)
            vv[k] = v_load(v + (size_t)n * D + d0 + k * VL);
        for (int i = 0; i < PV_MR; i++) {
            vf pb = v_set1(p[(m0 + i) * pm + n * pn]);
            for (int k = 0; k < dr; k++)
                a[i][k] = v_fma(pb, vv[k], a[i][k]);
        }
    }
    for (int i = 0; i < PV_MR; i++)
        for (int k = 0; k < dr; k++)
            v_store(acc + (size_t)(m0 + i) * D + d0 + k * VL, a[i][k]);
}

static void pv(const float *p, size_t pm, size_t pn, const float *v, uint32_t n_pad,
               uint32_t D, float *acc, uint32_t m4)
{
    for (uint32_t m0 = 0; m0 < m4; m0 += PV_MR) {
        uint32_t d0 = 0;
        for (; d0 + PV_DR * VL <= D; d0 += PV_DR * VL)
            pv_block(p, pm, pn, v, n_pad, D, acc, m0, d0, PV_DR);
        for (; d0 < D; d0 += VL)
            pv_block(p, pm, pn, v, n_pad, D, acc, m0, d0, 1);
    }
}

/* ---- the task ---- */

static void tile_run(const kvk_call *c, const kvk_task *t, size_t row0, float *scratch,
                     float *out, uint32_t mcap)
{
    const kvk_item *it = &c->items[t->item];
    uint32_t G = c->g->q_heads / c->g->kv_heads, D = c->g->head_dim;
    uint32_t M = (t->r1 - t->r0) * G, m4 = (M + 3) & ~3u;
    uint32_t mp_cap = (mcap + 2 * VL - 1) / (2 * VL) * (2 * VL);
    uint32_t mp = (M + 2 * VL - 1) / (2 * VL) * (2 * VL);
    int wide = M >= VL;
    tile_buf b = tile_buf_carve(scratch, D, mp_cap);
    float *acc = kvk__out_acc(out, mcap);
    tile_load_q(c, t, row0, &b, wide ? mp : m4, wide);
    for (uint32_t m = 0; m < mp; m++) {
        b.m[m] = -INFINITY;
        b.l[m] = 0.0f;
    }
    memset(acc, 0, (size_t)m4 * D * sizeof(float));
    uint32_t bk = wide ? KB : KB_NARROW, ahead = wide ? KB : KB_NARROW * KB_NARROW_AHEAD;
    if (!wide) /* the first blocks' prefetch; later ones are asked for one block at a time */
        prefetch_block(c, it, t->kv_head, t->k0, t->k1 - t->k0 < ahead ? t->k1 - t->k0 : ahead);
    for (uint32_t kb = t->k0; kb < t->k1; kb += bk) {
        uint32_t n = t->k1 - kb < bk ? t->k1 - kb : bk, n_pad = (n + 15) & ~15u;
        if (kb + ahead < t->k1) {
            uint32_t left = t->k1 - kb - ahead;
            prefetch_block(c, it, t->kv_head, kb + ahead, left < bk ? left : bk);
        }
        load_block(c, it, t->kv_head, 0, kb, n, n_pad, b.kf);
        load_block(c, it, t->kv_head, 1, kb, n, n_pad, b.vf);
        size_t sm = wide ? 1 : KB, sn = wide ? mp : 1;
        if (wide)
            qk_wide(&b, mp, n_pad, D);
        else
            qk_dot(&b, m4, n_pad, D);
        logits_fix(c, t, b.s, sm, sn, kb, n, n_pad);
        if (wide)
            softmax_cols(&b, mp, n_pad);
        else
            softmax_rows(&b, m4, n_pad);
        acc_rescale(acc, b.alpha, m4, D);
        pv(b.s, sm, sn, b.vf, n_pad, D, acc, m4);
    }
    memcpy(kvk__out_m(out, mcap), b.m, m4 * sizeof(float));
    memcpy(kvk__out_l(out, mcap), b.l, m4 * sizeof(float));
}

static size_t tile_scratch(uint32_t head_dim, uint32_t mp)
{
    return tile_scratch_floats(head_dim, mp);
}

static const kvk_tile_ops tile_ops = {
    .m_align = 2 * VL,
    .scratch_floats = tile_scratch,
    .run = tile_run,
};
