/* attn_simd.h — the tile kernel of paged attention, written once for every vector ISA.
 *
 * Included by attn_avx2.c and attn_avx512.c after they define the vector type `vf`, its
 * width VL, the register-blocking sizes (QK_NR, PV_DR wide; QK_NK, PVN_DR narrow) and the
 * v_* helpers; compiled once per ISA with that ISA's flags. One task (kvk_internal.h) = up
 * to mcap query vectors (the G heads of one KV head for a few rows; kvk_plan.c sizes the
 * tiles) against a key range. Each K/V byte is read once per task, shared by all its query
 * vectors.
 *
 * Wide tiles (prefill, M >= VL query vectors), blocks of KB keys:
 *   1. gather the block's K and V rows from their pages and widen them to fp32;
 *   2. logits: the transposed queries Qt[d][m] against broadcast K elements, a register-
 *      blocked 2*VL x QK_NR outer product with no reduction at all, into S^T[n][m];
 *   3. soft-cap, ALiBi and masking in vectors, each only on blocks that need it;
 *   4. online softmax vectorized along the query axis;
 *   5. acc[m][:] = alpha[m] acc[m][:] + P[m][n] * V[n][:], register-blocked PV_MR rows x
 *      PV_DR vectors (the rescale of step 4 applied as the accumulators are loaded).
 * Narrow tiles (decode, M < VL): memory-bound, so no copies at all; see "narrow tiles".
 * Queries are pre-scaled (and rotated) once per task, so logits come out scaled. */
#include <float.h>
#include <string.h>

#ifndef VL
#error "attn_simd.h is included by an ISA file after its vector helpers"
#endif

#ifndef KB
#define KB 64                       /* keys per block: a multiple of VL and QK_NR */
#endif
#ifndef KB_PAD                      /* wide tiles: a block's keys padded to a multiple of */
#define KB_PAD 16
#endif
#ifndef TILE_M_LONG                 /* query vectors per tile of long prefills (kvk_plan.c) */
#define TILE_M_LONG 128
#endif
#ifndef WIDE_SCRATCH                /* floats an ISA's own wide path needs besides tile_buf */
#define WIDE_SCRATCH(D, mp) 0
#endif
/* Narrow (decode) tiles: keys per block. A block's K and V are asked for in L1 during the
 * block before, so two blocks' rows (2 x 8 KiB at head_dim 128 in fp16) share L1 with the
 * queries and accumulators: longer blocks cut the per-block softmax work but evict rows
 * before they are read. Measured on a Zen 5 VM (make bench-kernels, 2 threads, KV from DRAM,
 * 16-token pages, A/B in the same minutes): 16 keys 75-80% of the read bandwidth where 24
 * keys gave 68-75% in the minutes the VM reads ~45-50 GB/s, both 58-66% when it reads ~80;
 * with the K/V in cache 16 keys cost 3-4% more cycles per key. 32 keys were slower still. */
#ifndef KB_NARROW /* tunable at build time, e.g. -DKB_NARROW=16: a multiple of 4, <= KB */
#define KB_NARROW 16
#endif
#define PV_MR 4                     /* query rows per PV register block */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

typedef struct tile_buf {
    float *qs;        /* [mp][D] scaled, rotated queries; rows >= M are zero */
    float *qt;        /* the same transposed, packed per 2*VL query vectors (wide tiles):
                       * [mp / 2VL][D][2VL], so a logit block reads one contiguous panel */
    float *kf;        /* [KB][D] the block's K rows in fp32; rows >= n are zero */
    float *vf;        /* [KB][D] the block's V rows */
    float *s;         /* [KB * mp] logits, then probabilities */
    float *m, *l;     /* [mp] running max and sum */
    float *alpha;     /* [mp] rescale factor of the current block */
    float *lo, *hi;   /* [mp] visible key range [lo, hi) of each query vector, as floats */
    float *pos;       /* [mp] its position + 0.5 (keys are compared as key + 0.5: see fix_vec) */
    float *slope;     /* [mp] its ALiBi slope, or 0 */
    int vec_fix;      /* positions below 2^23, exact as floats with halves: ALiBi and masking
                       * in vectors (fix_vec); otherwise fix_scalar */
    uint32_t lo_max;  /* the largest lo (the last row's) and the smallest hi (the first */
    uint32_t hi_min;  /* row's): keys in [lo_max, hi_min) are visible to every query vector */
    float *wide;      /* WIDE_SCRATCH floats, the ISA's own */
} tile_buf;

/* The steps of a wide tile (see "the task"), defined below for fp32 vectors unless the ISA
 * file defines TILE_OWN_WIDE and them after including this one (attn_amx.c):
 *   wide_begin   once per task, after the queries are loaded;
 *   wide_logits  the logits of keys [kb, kb + n) (n_pad with padding) into s[n][m];
 *   wide_pv      after masking: the online softmax and acc[m][:] += p . V;
 *   wide_end     once per task. */
static void wide_begin(tile_buf *b, uint32_t D, uint32_t mp);
static void wide_logits(const kvk_call *c, const kvk_task *t, const tile_buf *b, uint32_t kb,
                        uint32_t n, uint32_t n_pad, uint32_t mp);
static void wide_pv(const kvk_call *c, const kvk_task *t, const tile_buf *b, uint32_t kb,
                    uint32_t n, uint32_t n_pad, uint32_t mp, float *acc, uint32_t m4);
static void wide_end(void);

static size_t round16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

static size_t tile_scratch_floats(uint32_t D, uint32_t mp)
{
    return 2 * round16((size_t)mp * D) + 2 * round16((size_t)KB * D)
           + round16((size_t)KB * mp) + 7 * round16(mp) + WIDE_SCRATCH(D, mp);
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
    b.lo = p, p += round16(mp);
    b.hi = p, p += round16(mp);
    b.pos = p, p += round16(mp);
    b.slope = p, p += round16(mp);
    b.wide = p;
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

/* A key of an item as its page table entry and row in that page: found with one division,
 * then moved on (narrow tiles: block by block) without dividing. */
typedef struct kv_pos {
    uint32_t key, page, row;
} kv_pos;

static inline kv_pos kv_at(const kvk_call *c, uint32_t key)
{
    uint32_t pt = c->g->page_tokens;
    return (kv_pos){ key, key / pt, key % pt };
}

/* Runs body for each contiguous run of the n K (kind 0) or V (kind 1) rows of KV head h from
 * key position p: ptr the run's first row, run its rows, j the keys before it. Rows are
 * contiguous inside a page, pages are wherever the page table says. */
#define FOR_EACH_RUN_FROM(c, it, h, kind, p, n, ptr, run, j, body)                          \
    for (uint32_t j = 0, run, pg_ = (p).page, row_ = (p).row; j < (n);                     \
         j += run, pg_++, row_ = 0) {                                                      \
        uint32_t pt_ = (c)->g->page_tokens;                                                \
        run = pt_ - row_ < (n) - j ? pt_ - row_ : (n) - j;                                 \
        const uint8_t *ptr = (c)->pg->base + (size_t)(it)->pages[pg_] * (c)->page_bytes   \
                             + (c)->k_off + (size_t)(h) * (c)->head_stride                 \
                             + (size_t)(kind) * (c)->v_off                                 \
                             + (size_t)row_ * (c)->g->head_dim * (c)->esize;               \
        body                                                                                \
    }
#define FOR_EACH_RUN(c, it, h, kind, k0, n, ptr, run, j, body)                              \
    FOR_EACH_RUN_FROM(c, it, h, kind, kv_at((c), (k0)), n, ptr, run, j, body)

static void load_block(const kvk_call *c, const kvk_item *it, uint32_t h, int kind,
                       uint32_t k0, uint32_t n, uint32_t n_pad, float *dst)
{
    size_t D = c->g->head_dim;
    FOR_EACH_RUN(c, it, h, kind, k0, n, src, run, j,
                 cvt_run(dst + j * D, src, run * D, c->g->dtype);)
    memset(dst + n * D, 0, (n_pad - n) * D * sizeof(float));
}

/* ---- writing K/V (kvk_write_kv) ---- */

/* n fp32 values as a K/V row of dtype dt: 16-bit ones VL at a time, the rest (and fp32) as
 * the scalar reference stores them (kvk__store_*). */
static inline void store_run(uint8_t *dst, const float *src, uint32_t n, kvk_dtype dt)
{
    uint32_t i = 0;
    for (; dt != KVK_F32 && i + VL <= n; i += VL)
        if (dt == KVK_F16)
            v_store_f16(dst + 2 * i, v_load(src + i));
        else
            v_store_bf16(dst + 2 * i, v_load(src + i));
    kvk__store_ref(dst + (size_t)i * 2, src + i, n - i, dt);
}

/* ---- queries ---- */

static void tile_load_q(const kvk_call *c, const kvk_task *t, size_t row0, tile_buf *b,
                        uint32_t mp)
{
    const kvk_geom *g = c->g;
    uint32_t G = g->q_heads / g->kv_heads, D = g->head_dim, m = 0;
    for (uint32_t r = t->r0; r < t->r1; r++) {
        size_t row = kvk__task_row(c, t, row0, r).row;
        const float *src = c->q + (row * g->q_heads + (size_t)t->kv_head * G) * D;
        const float *cs = c->rope_cs ? c->rope_cs + row * D : NULL;
        for (uint32_t k = 0; k < G; k++, m++) {
            float *dst = b->qs + (size_t)m * D;
            memcpy(dst, src + (size_t)k * D, D * sizeof(float));
            if (cs)
                kvk__rope_apply(dst, D, c->opts.rope, cs);
            for (uint32_t d = 0; d < D; d++)
                dst[d] *= c->opts.scale;
        }
    }
    memset(b->qs + (size_t)m * D, 0, (size_t)(mp - m) * D * sizeof(float));
}

/* ---- logits ---- */

/* Wide tiles: s[n][m0 .. m0+2VL) for keys n0 .. n0+QK_NR, an outer product per element d. */
ALWAYS_INLINE void qk_wide_block(const tile_buf *b, uint32_t mp, uint32_t D, uint32_t m0,
                                 uint32_t n0)
{
    vf acc[2][QK_NR];
    for (int j = 0; j < QK_NR; j++)
        acc[0][j] = acc[1][j] = v_zero();
    const float *k = b->kf + (size_t)n0 * D;
    for (uint32_t d = 0; d < D; d++) {
        const float *qp = b->qt + ((size_t)m0 * D + (size_t)d * 2 * VL);
        vf q0 = v_load(qp), q1 = v_load(qp + VL);
        for (int j = 0; j < QK_NR; j++) {
            vf kb = v_set1(k[(size_t)j * D + d]);
            acc[0][j] = v_fma(q0, kb, acc[0][j]);
            acc[1][j] = v_fma(q1, kb, acc[1][j]);
        }
    }
    float *s = b->s + (size_t)n0 * mp + m0; /* read once: the stores could alias *b */
    for (int j = 0; j < QK_NR; j++) {
        v_store(s + (size_t)j * mp, acc[0][j]);
        v_store(s + (size_t)j * mp + VL, acc[1][j]);
    }
}

/* Asks for the K and V rows of keys [k0, min(k1, lim)) in L2: the next block's, a slice at a
 * time, so that load_block finds them there instead of waiting on memory. */
static void prefetch_keys(const kvk_call *c, const kvk_item *it, uint32_t h, uint32_t k0,
                          uint32_t k1, uint32_t lim)
{
    size_t bytes = c->g->head_dim * c->esize;
    for (uint32_t k = k0; k < k1 && k < lim; k++) {
        const uint8_t *row = kvk__kv_row(c, it, k, h, 0);
        for (size_t off = 0; off < bytes; off += 64) {
            __builtin_prefetch(row + off, 0, 2);
            __builtin_prefetch(row + c->v_off + off, 0, 2);
        }
    }
}

/* All logits of a block; prefetches the next block (keys from pf0) on the way. Not inlined:
 * inside tile_run, the block's eight K row offsets left the register file and were reloaded
 * on every element d (A/B: prefill 2.5-3.5% faster on its own). */
static __attribute__((noinline)) void qk_wide(const kvk_call *c, const kvk_task *t,
                                              const tile_buf *b, uint32_t mp, uint32_t n_pad,
                                              uint32_t D, uint32_t pf0)
{
    uint32_t steps = mp / (2 * VL) * (n_pad / QK_NR), step = 0;
    uint32_t per = (KB + steps - 1) / steps;
    for (uint32_t m0 = 0; m0 < mp; m0 += 2 * VL)
        for (uint32_t n0 = 0; n0 < n_pad; n0 += QK_NR, step++) {
            prefetch_keys(c, &c->items[t->item], t->kv_head, pf0 + step * per,
                          pf0 + (step + 1) * per, t->k1);
            qk_wide_block(b, mp, D, m0, n0);
        }
}

/* Where the logit of query vector m (from the first one passed) and key j of a block is:
 * s[m * sm + (j / nk) * sk + j % nk]. */
typedef struct logit_layout {
    size_t sm, sk;
    uint32_t nk;
} logit_layout;

/* Soft-caps every logit of a block (n floats, a multiple of VL): cap * tanh(s / cap); nothing
 * when cap <= 0 (off). */
static void softcap_block(float *s, size_t n, float cap)
{
    if (cap <= 0.0f)
        return;
    vf c = v_set1(cap), inv = v_set1(1.0f / cap);
    for (size_t i = 0; i < n; i += VL)
        v_store(s + i, v_mul(c, v_tanh(v_mul(v_load(s + i), inv))));
}

/* 1 if the logits of block [kb, kb + n) need ALiBi or masking: keys some query vector of
 * the task cannot see (tile_qattr's lo_max / hi_min), or padding past n. */
static int block_needs_fix(const kvk_call *c, const tile_buf *b, uint32_t kb, uint32_t n,
                           uint32_t n_pad)
{
    return c->opts.alibi || kb < b->lo_max || kb + n > b->hi_min || n < n_pad;
}

/* Logits x of keys `key` (each + 0.5) for query vectors seeing [lo, hi), at positions pos
 * (+ 0.5) with ALiBi slopes slope: ALiBi added if `alibi` (the halves cancel: key - pos is
 * exact), keys outside [lo, hi) set to -inf (key >= hi <=> key + 0.5 > hi for integers). */
ALWAYS_INLINE vf fix_vec(vf x, vf key, vf lo, vf hi, vf pos, vf slope, int alibi)
{
    if (alibi)
        x = v_fma(slope, v_sub(key, pos), x);
    return v_ninf_gt(v_ninf_gt(x, key, hi), lo, key);
}

/* Wide tiles (s[j][m]): fix_vec down the query axis, a key at a time. Not inlined (nor is
 * fix_scalar): inlined into tile_run, they cost its blocks that need no fixing ~1% (A/B). */
static __attribute__((noinline)) void fix_wide(const tile_buf *b, uint32_t mp, uint32_t kb,
                                               uint32_t n, uint32_t n_pad, int alibi)
{
    for (uint32_t j = 0; j < n_pad; j++) {
        float *x = b->s + (size_t)j * mp;
        vf key = v_set1((float)(kb + j) + 0.5f);
        for (uint32_t m = 0; m < mp; m += VL)
            v_store(x + m, j < n ? fix_vec(v_load(x + m), key, v_load(b->lo + m),
                                           v_load(b->hi + m), v_load(b->pos + m),
                                           v_load(b->slope + m), alibi)
                                 : v_set1(-INFINITY));
    }
}

/* The general path, any position: soft-capped logits of query vectors m0 .. m1-1 at
 * s[m * sm + (j / nk) * sk + j % nk] get ALiBi as kvk__logit adds it, and -inf where the key
 * is invisible or padding. */
static __attribute__((noinline)) void fix_scalar(const kvk_call *c, const kvk_task *t,
                                                 float *s, uint32_t m0, uint32_t m1,
                                                 const logit_layout *ly, uint32_t kb,
                                                 uint32_t n, uint32_t n_pad)
{
    const kvk_attn_opts *o = &c->opts;
    uint32_t G = c->g->q_heads / c->g->kv_heads, lo, hi;
    for (uint32_t m = m0; m < m1; m++) {
        kvk_trow tr = kvk__task_row(c, t, 0, t->r0 + m / G);
        uint32_t pos = tr.pos, qh = t->kv_head * G + m % G;
        float slope = o->alibi ? o->alibi[qh] : 0.0f;
        kvk__visible(o, pos, tr.n_keys, &lo, &hi);
        for (uint32_t j = 0; j < n_pad; j++) {
            float *x = &s[(m - m0) * ly->sm + j / ly->nk * ly->sk + j % ly->nk];
            if (j >= n || kb + j < lo || kb + j >= hi)
                *x = -INFINITY;
            else if (slope != 0.0f)
                *x += kvk__alibi(slope, kb + j, pos);
        }
    }
}

/* Per query vector m < M of the task: visible range, position and slope (tile_buf); padding
 * vectors up to mp see every key. */
static void tile_qattr(const kvk_call *c, const kvk_task *t, tile_buf *b, uint32_t M,
                       uint32_t mp)
{
    uint32_t G = c->g->q_heads / c->g->kv_heads, lo, hi;
    b->vec_fix = 1;
    b->lo_max = 0;
    b->hi_min = UINT32_MAX;
    for (uint32_t m = 0; m < mp; m++) {
        kvk_trow tr = kvk__task_row(c, t, 0, t->r0 + (m < M ? m / G : 0));
        uint32_t pos = tr.pos;
        b->vec_fix &= tr.n_keys < (1u << 23);
        kvk__visible(&c->opts, pos, tr.n_keys, &lo, &hi);
        if (m < M) {
            b->lo_max = lo > b->lo_max ? lo : b->lo_max;
            b->hi_min = hi < b->hi_min ? hi : b->hi_min;
        }
        b->lo[m] = m < M ? (float)lo : 0.0f;
        b->hi[m] = m < M ? (float)hi : (float)(1u << 24);
        b->pos[m] = (float)pos + 0.5f;
        b->slope[m] = m < M && c->opts.alibi ? c->opts.alibi[t->kv_head * G + m % G] : 0.0f;
    }
}

/* ---- online softmax ---- */

/* Wide tiles, s[n][m], query vectors m0 .. m0+VL: their running max joined with the block's
 * (*mx), and the max the exponentials subtract, where a max of -inf (nothing visible yet) is
 * replaced by -FLT_MAX so exp gives exact zeros instead of NaN. */
ALWAYS_INLINE vf col_max(const tile_buf *b, uint32_t mp, uint32_t n_pad, uint32_t m0, vf *mx)
{
    vf x = v_load(b->m + m0);
    for (uint32_t n = 0; n < n_pad; n++)
        x = v_max(x, v_load(b->s + (size_t)n * mp + m0));
    *mx = x;
    return v_max(x, v_set1(-FLT_MAX));
}

/* Their new state: max mx, rescale factor alpha of the accumulators, sum alpha l + sum. */
ALWAYS_INLINE void col_state(const tile_buf *b, uint32_t m0, vf mx, vf alpha, vf sum)
{
    v_store(b->m + m0, mx);
    v_store(b->alpha + m0, alpha);
    v_store(b->l + m0, v_fma(v_load(b->l + m0), alpha, sum));
}

/* Wide tiles, s[n][m]: per query vector the block's max, p = exp(s - max) in place, alpha =
 * exp(old max - new max); VL query vectors at a time down the key axis. */
static void softmax_cols(const tile_buf *b, uint32_t mp, uint32_t n_pad)
{
    for (uint32_t m0 = 0; m0 < mp; m0 += VL) {
        vf mx, sum = v_zero(), mu = col_max(b, mp, n_pad, m0, &mx);
        vf alpha = v_exp(v_sub(v_load(b->m + m0), mu));
        for (uint32_t n = 0; n < n_pad; n++) {
            float *x = b->s + (size_t)n * mp + m0;
            vf p = v_exp(v_sub(v_load(x), mu));
            v_store(x, p);
            sum = v_add(sum, p);
        }
        col_state(b, m0, mx, alpha, sum);
    }
}

/* ---- P . V ---- */

/* acc[m][d0 .. d0+dr*VL) = alpha[m] acc[m][...] + sum_n p[n][m] v[n][...] for the rows
 * m0 .. m0+PV_MR; p[n][m] at p[n * mp + m]. The rescale rides on the accumulators' load. */
ALWAYS_INLINE void pv_block(const float *p, uint32_t mp, const float *alpha, const float *v,
                            uint32_t n_pad, uint32_t D, float *acc, uint32_t m0, uint32_t d0,
                            const int dr)
{
    vf a[PV_MR][PV_DR];
    for (int i = 0; i < PV_MR; i++)
        for (int k = 0; k < dr; k++)
            a[i][k] = v_mul(v_load(acc + (size_t)(m0 + i) * D + d0 + k * VL),
                            v_set1(alpha[m0 + i]));
    for (uint32_t n = 0; n < n_pad; n++) {
        vf vv[PV_DR];
        for (int k = 0; k < dr; k++)
            vv[k] = v_load(v + (size_t)n * D + d0 + k * VL);
        for (int i = 0; i < PV_MR; i++) {
            vf pb = v_set1(p[(size_t)n * mp + m0 + i]);
            for (int k = 0; k < dr; k++)
                a[i][k] = v_fma(pb, vv[k], a[i][k]);
        }
    }
    for (int i = 0; i < PV_MR; i++)
        for (int k = 0; k < dr; k++)
            v_store(acc + (size_t)(m0 + i) * D + d0 + k * VL, a[i][k]);
}

static void pv(const float *p, uint32_t mp, const float *alpha, const float *v,
               uint32_t n_pad, uint32_t D, float *acc, uint32_t m4)
{
    for (uint32_t m0 = 0; m0 < m4; m0 += PV_MR) {
        uint32_t d0 = 0;
        for (; d0 + PV_DR * VL <= D; d0 += PV_DR * VL)
            pv_block(p, mp, alpha, v, n_pad, D, acc, m0, d0, PV_DR);
        for (; d0 < D; d0 += VL)
            pv_block(p, mp, alpha, v, n_pad, D, acc, m0, d0, 1);
    }
}

/* ---- narrow tiles (decode) ----
 *
 * M < VL query vectors (decode: the G heads of one KV head, one row), taken four at a time
 * (a quad). K and V are read straight from the pages and widened in registers, never copied;
 * a block of KB_NARROW keys is read once per quad, from L1 after the first one.
 *
 * A quad's logits live in vectors of QK_NK keys x 4 query vectors: lanes i*QK_NK .. +QK_NK-1
 * hold query vector i (v_reduce_qk builds them). The online softmax runs on those vectors
 * whole; its state (max, sum) is kept the same way, each value repeated over its lanes. */

/* VL elements of a K/V row of dtype dt, from element i, as fp32. */
ALWAYS_INLINE vf v_load_kv(const uint8_t *p, size_t i, const kvk_dtype dt)
{
    return dt == KVK_F16 ? v_load_f16(p + 2 * i)
           : dt == KVK_BF16 ? v_load_bf16(p + 2 * i) : v_load((const float *)p + i);
}

/* The rows pf[j .. j+cnt) (bytes each), clipped to pf_n rows, asked for in L1. Prefetches are
 * spread over the compute of the block before (a few per key): asked for all at once, they
 * would exhaust the L1 miss buffers and stall the compute behind them, or be dropped. Into
 * L1 rather than L2 (where an earlier Intel machine wanted them): on a Zen 5 VM decode from
 * DRAM went from 19 to 22 GB/s on one thread with the blocks of 32 keys of then, 29 with
 * blocks of 24 (A/B, same minutes). Spread wider (one line per row load) or asked for two
 * blocks ahead: no better there. */
ALWAYS_INLINE void prefetch_rows(const uint8_t *const *pf, uint32_t pf_n, uint32_t j,
                                 uint32_t cnt, size_t bytes)
{
    for (uint32_t r = j; r < j + cnt && r < pf_n; r++)
        for (size_t off = 0; off < bytes; off += 64)
            __builtin_prefetch(pf[r] + off, 0, 3);
}

/* Logits of the quad q (4 rows of D) against keys kr[0 .. n), n a multiple of QK_NK: vector
 * j / QK_NK of s. Prefetches the K rows pf[0 .. pf_n) of the next block on the way. */
ALWAYS_INLINE void qk_quad(const float *q, const uint8_t *const *kr, uint32_t n, uint32_t D,
                           float *s, const uint8_t *const *pf, uint32_t pf_n,
                           const kvk_dtype dt)
{
    size_t row_bytes = D * (dt == KVK_F32 ? 4 : 2);
    for (uint32_t j = 0; j < n; j += QK_NK) {
        prefetch_rows(pf, pf_n, j, QK_NK, row_bytes);
        vf a[4][QK_NK];
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < QK_NK; k++)
                a[i][k] = v_zero();
        for (uint32_t d = 0; d < D; d += VL) {
            vf q0 = v_load(q + d), q1 = v_load(q + D + d), q2 = v_load(q + 2 * D + d),
               q3 = v_load(q + 3 * D + d);
            for (int k = 0; k < QK_NK; k++) {
                vf kv = v_load_kv(kr[j + k], d, dt);
                a[0][k] = v_fma(q0, kv, a[0][k]);
                a[1][k] = v_fma(q1, kv, a[1][k]);
                a[2][k] = v_fma(q2, kv, a[2][k]);
                a[3][k] = v_fma(q3, kv, a[3][k]);
            }
        }
        v_store(s + (size_t)j / QK_NK * VL, v_reduce_qk(a));
    }
}

/* Online softmax of a quad's block of nv logit vectors: exp in place, state updated; returns
 * the rescale factors of the accumulators (lanes as the state). */
static vf softmax_quad(float *s, uint32_t nv, vf *mstate, vf *lstate)
{
    vf mx = v_set1(-INFINITY), sum = v_zero();
    for (uint32_t v = 0; v < nv; v++)
        mx = v_max(mx, v_load(s + (size_t)v * VL));
    vf mnew = v_max(*mstate, v_group_max(mx)), mu = v_max(mnew, v_set1(-FLT_MAX));
    for (uint32_t v = 0; v < nv; v++) {
        vf p = v_exp(v_sub(v_load(s + (size_t)v * VL), mu));
        v_store(s + (size_t)v * VL, p);
        sum = v_add(sum, p);
    }
    vf alpha = v_exp(v_sub(*mstate, mu));
    *lstate = v_fma(*lstate, alpha, v_group_sum(sum));
    *mstate = mnew;
    return alpha;
}

/* acc[i][d0 .. d0 + dr VL) = alpha[i] acc[i][...] + sum_j p(i, j) v[j][...], i < 4, j < n
 * (n a multiple of QK_NK). Each p(i, j) feeds its FMAs straight from memory (a broadcast
 * operand), which keeps the 4 x dr accumulators, not the probabilities, in registers. */
ALWAYS_INLINE void pv_quad_block(const float *p, const float *alpha, const uint8_t *const *vr,
                                 uint32_t n, uint32_t D, float *acc, uint32_t d0,
                                 const int dr, const uint8_t *const *pf, uint32_t pf_n,
                                 const kvk_dtype dt)
{
    size_t row_bytes = D * (dt == KVK_F32 ? 4 : 2);
    vf a[4][PVN_DR];
    for (int i = 0; i < 4; i++) {
        vf al = v_set1(alpha[i * QK_NK]);
        for (int k = 0; k < dr; k++)
            a[i][k] = v_mul(v_load(acc + (size_t)i * D + d0 + k * VL), al);
    }
    for (uint32_t j = 0; j < n; j += QK_NK, p += VL) {
        prefetch_rows(pf, pf_n, j, QK_NK, row_bytes);
        for (int jj = 0; jj < QK_NK; jj++) {
            const uint8_t *row = vr[j + jj];
            for (int k = 0; k < dr; k++) {
                vf vv = v_load_kv(row, d0 + k * VL, dt);
                for (int i = 0; i < 4; i++)
                    a[i][k] = v_fma(v_set1(p[i * QK_NK + jj]), vv, a[i][k]);
            }
        }
    }
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < dr; k++)
            v_store(acc + (size_t)i * D + d0 + k * VL, a[i][k]);
}

ALWAYS_INLINE void pv_quad(const float *p, const float *alpha, const uint8_t *const *vr,
                           uint32_t n, uint32_t D, float *acc, const uint8_t *const *pf,
                           uint32_t pf_n, const kvk_dtype dt)
{
    uint32_t d0 = 0; /* the first pass prefetches the next block's V rows */
    for (; d0 + PVN_DR * VL <= D; d0 += PVN_DR * VL, pf_n = 0)
        pv_quad_block(p, alpha, vr, n, D, acc, d0, PVN_DR, pf, pf_n, dt);
    for (; d0 < D; d0 += VL, pf_n = 0)
        pv_quad_block(p, alpha, vr, n, D, acc, d0, 1, pf, pf_n, dt);
}

/* qk_quad and pv_quad compiled once per dtype, each on its own so that its accumulators get
 * the whole register file. */
#define NARROW_FNS(sfx, dt)                                                               \
    static __attribute__((noinline)) void qk_quad_##sfx(                                \
        const float *q, const uint8_t *const *kr, uint32_t n, uint32_t D, float *s,        \
        const uint8_t *const *pf, uint32_t pf_n)                                           \
    {                                                                                     \
        qk_quad(q, kr, n, D, s, pf, pf_n, dt);                                            \
    }                                                                                     \
    static __attribute__((noinline)) void pv_quad_##sfx(                                \
        const float *p, const float *alpha, const uint8_t *const *vr, uint32_t n,          \
        uint32_t D, float *acc, const uint8_t *const *pf, uint32_t pf_n)                   \
    {                                                                                     \
        pv_quad(p, alpha, vr, n, D, acc, pf, pf_n, dt);                                   \
    }
NARROW_FNS(f32, KVK_F32)
NARROW_FNS(f16, KVK_F16)
NARROW_FNS(bf16, KVK_BF16)

typedef struct narrow_fns {
    void (*qk)(const float *q, const uint8_t *const *kr, uint32_t n, uint32_t D, float *s,
               const uint8_t *const *pf, uint32_t pf_n);
    void (*pv)(const float *p, const float *alpha, const uint8_t *const *vr, uint32_t n,
               uint32_t D, float *acc, const uint8_t *const *pf, uint32_t pf_n);
} narrow_fns;

static const narrow_fns narrow_by_dtype[] = {
    [KVK_F32] = { qk_quad_f32, pv_quad_f32 },
    [KVK_F16] = { qk_quad_f16, pv_quad_f16 },
    [KVK_BF16] = { qk_quad_bf16, pv_quad_bf16 },
};

/* The state of a narrow task: per quad, max and sum as in softmax_quad, and the attributes
 * of its query vectors (tile_qattr) laid out as its logits are, for fix_narrow. */
typedef struct narrow_state {
    vf m[VL / 4], l[VL / 4];
    vf lo[VL / 4], hi[VL / 4], pos[VL / 4], slope[VL / 4];
    vf koff; /* lane i * QK_NK + k: k, the key of the lane within its vector's keys */
} narrow_state;

/* A quad's logit vectors (keys kb + v * QK_NK + lane % QK_NK), fix_vec with the quad's lanes;
 * the padding keys from n on are invisible to every lane (today each lane's hi masks them
 * already, as a task ends at a row's hi or on a multiple of QK_NK; the min keeps padding
 * from depending on that). */
static void fix_narrow(float *s, const narrow_state *st, uint32_t quad, uint32_t kb,
                       uint32_t n, uint32_t n_pad, int alibi)
{
    vf hi = v_min(st->hi[quad], v_set1((float)(kb + n)));
    for (uint32_t v = 0; v < n_pad / QK_NK; v++) {
        vf key = v_add(st->koff, v_set1((float)(kb + v * QK_NK) + 0.5f));
        v_store(s + (size_t)v * VL, fix_vec(v_load(s + (size_t)v * VL), key, st->lo[quad], hi,
                                            st->pos[quad], st->slope[quad], alibi));
    }
}

/* The K and V row addresses of one block of keys. */
typedef struct narrow_rows {
    const uint8_t *k[KB_NARROW], *v[KB_NARROW];
    uint32_t kb, n, n_pad; /* keys kb .. kb+n; n_pad a multiple of QK_NK (repeats row n-1) */
} narrow_rows;

/* One block of keys (rows r) for every quad; the first quad prefetches the block `next`
 * (n = 0: none). */
static void narrow_block(const kvk_call *c, const kvk_task *t, const tile_buf *b,
                         narrow_state *st, const narrow_rows *r, const narrow_rows *next,
                         uint32_t M, float *acc)
{
    uint32_t D = c->g->head_dim;
    static const logit_layout ly = { QK_NK, VL, QK_NK };
    const narrow_fns *fn = &narrow_by_dtype[c->g->dtype];
    int fix = block_needs_fix(c, b, r->kb, r->n, r->n_pad);
    for (uint32_t m0 = 0, quad = 0; m0 < M; m0 += 4, quad++) {
        float *s = b->s + (size_t)quad * KB_NARROW * 4, alpha[VL];
        uint32_t pf_n = quad ? 0 : next->n;
        fn->qk(b->qs + (size_t)m0 * D, r->k, r->n_pad, D, s, next->k, pf_n);
        softcap_block(s, (size_t)r->n_pad / QK_NK * VL, c->opts.softcap);
        if (fix && b->vec_fix)
            fix_narrow(s, st, quad, r->kb, r->n, r->n_pad, c->opts.alibi != NULL);
        else if (fix)
            fix_scalar(c, t, s, m0, m0 + 4 < M ? m0 + 4 : M, &ly, r->kb, r->n, r->n_pad);
        v_store(alpha, softmax_quad(s, r->n_pad / QK_NK, &st->m[quad], &st->l[quad]));
        fn->pv(s, alpha, r->v, r->n_pad, D, acc + (size_t)m0 * D, next->v, pf_n);
    }
}

/* The block of KB_NARROW keys (fewer before k1) at *p: its size, and *p moved past it. */
static uint32_t narrow_next(const kvk_call *c, kv_pos *p, uint32_t k1)
{
    uint32_t pt = c->g->page_tokens;
    uint32_t n = p->key >= k1 ? 0 : k1 - p->key < KB_NARROW ? k1 - p->key : KB_NARROW;
    p->key += n;
    p->row += n;
    while (p->row >= pt) {
        p->row -= pt;
        p->page++;
    }
    return n;
}

/* Row addresses of the block at *p of KV head h (none past k1); *p moves past it. */
static void narrow_rows_get(const kvk_call *c, const kvk_item *it, uint32_t h, kv_pos *p,
                            uint32_t k1, narrow_rows *r)
{
    size_t row_bytes = c->g->head_dim * c->esize;
    kv_pos at = *p;
    r->kb = at.key;
    r->n = narrow_next(c, p, k1);
    r->n_pad = (r->n + QK_NK - 1) / QK_NK * QK_NK;
    FOR_EACH_RUN_FROM(c, it, h, 0, at, r->n, src, run, j,
                        for (uint32_t i = 0; i < run; i++) {
                            r->k[j + i] = src + i * row_bytes;
                            r->v[j + i] = src + c->v_off + i * row_bytes;
                        })
    for (uint32_t j = r->n; j < r->n_pad; j++) {
        r->k[j] = r->k[r->n - 1];
        r->v[j] = r->v[r->n - 1];
    }
}

/* The L1 miss buffers cap what the per-key prefetches of narrow_block can have in flight;
 * the L2 streamer has its own, but stops at every 4 KiB page and restarts slowly. So
 * NARROW_LEAD_BLOCKS blocks ahead, the first NARROW_LEAD_BYTES of each contiguous K and V
 * run of a block are asked for: the streamer sees a stream start early and fetches the rest
 * of the page by itself; the per-key prefetches then mostly hit L2. (Measured on a Zen 5
 * VM with blocks of 24 keys: without the lead 23 GB/s instead of 29; 2 or 4 blocks, 256 or
 * 1024 bytes no better; asked for in L2 rather than L1, 26. With blocks of 16: 4 blocks of
 * 1024 bytes or 5 blocks no better; whole blocks 8 to 40 blocks ahead, slower.) */
#ifndef NARROW_LEAD_BLOCKS
#define NARROW_LEAD_BLOCKS 3
#endif
#ifndef NARROW_LEAD_BYTES
#define NARROW_LEAD_BYTES 512
#endif
static void narrow_lead(const kvk_call *c, const kvk_item *it, uint32_t h, kv_pos *p,
                        uint32_t k1)
{
    kv_pos at = *p;
    uint32_t n = narrow_next(c, p, k1);
    size_t bytes = c->g->head_dim * c->esize;
    FOR_EACH_RUN_FROM(c, it, h, 0, at, n, src, run, j,
                        for (size_t off = 0; off < NARROW_LEAD_BYTES && off < run * bytes;
                             off += 64) {
                            __builtin_prefetch(src + off, 0, 3);
                            __builtin_prefetch(src + c->v_off + off, 0, 3);
                        })
}

static void tile_run_narrow(const kvk_call *c, const kvk_task *t, tile_buf *b, float *acc,
                            uint32_t M)
{
    const kvk_item *it = &c->items[t->item];
    narrow_rows rows[2], *cur = &rows[0], *next = &rows[1];
    narrow_state st;
    float lane[4][VL];
    for (uint32_t q = 0; q < VL / 4; q++) {
        st.m[q] = v_set1(-INFINITY);
        st.l[q] = v_zero();
    }
    for (uint32_t q = 0; 4 * q < M; q++) {
        for (uint32_t i = 0; i < VL; i++) { /* lane i: query vector 4q + i / QK_NK */
            uint32_t m = 4 * q + i / QK_NK;
            lane[0][i] = b->lo[m], lane[1][i] = b->hi[m], lane[2][i] = b->pos[m];
            lane[3][i] = b->slope[m];
        }
        st.lo[q] = v_load(lane[0]), st.hi[q] = v_load(lane[1]), st.pos[q] = v_load(lane[2]);
        st.slope[q] = v_load(lane[3]);
    }
    for (uint32_t i = 0; i < VL; i++)
        lane[0][i] = (float)(i % QK_NK);
    st.koff = v_load(lane[0]);
    kv_pos pos = kv_at(c, t->k0), lead = pos;
    for (uint32_t i = 0; i < NARROW_LEAD_BLOCKS; i++) /* the blocks before the lead */
        narrow_lead(c, it, t->kv_head, &lead, t->k1);
    narrow_rows_get(c, it, t->kv_head, &pos, t->k1, cur);
    while (cur->n) {
        narrow_lead(c, it, t->kv_head, &lead, t->k1);
        narrow_rows_get(c, it, t->kv_head, &pos, t->k1, next);
        narrow_block(c, t, b, &st, cur, next, M, acc);
        narrow_rows *tmp = cur;
        cur = next;
        next = tmp;
    }
    for (uint32_t m = 0; m < M; m++) {
        float x[VL];
        v_store(x, st.m[m / 4]);
        b->m[m] = x[m % 4 * QK_NK];
        v_store(x, st.l[m / 4]);
        b->l[m] = x[m % 4 * QK_NK];
    }
}

/* ---- the wide steps on fp32 vectors ---- */

#ifndef TILE_OWN_WIDE
/* The transposed query panels of qk_wide. */
static void wide_begin(tile_buf *b, uint32_t D, uint32_t mp)
{
    for (uint32_t i = 0; i < mp; i++) { /* once per task: scalar is fine */
        float *panel = b->qt + (size_t)(i / (2 * VL)) * D * 2 * VL + i % (2 * VL);
        for (uint32_t d = 0; d < D; d++)
            panel[(size_t)d * 2 * VL] = b->qs[(size_t)i * D + d];
    }
}

static void wide_logits(const kvk_call *c, const kvk_task *t, const tile_buf *b, uint32_t kb,
                        uint32_t n, uint32_t n_pad, uint32_t mp)
{
    const kvk_item *it = &c->items[t->item];
    load_block(c, it, t->kv_head, 0, kb, n, n_pad, b->kf);
    load_block(c, it, t->kv_head, 1, kb, n, n_pad, b->vf);
    qk_wide(c, t, b, mp, n_pad, c->g->head_dim, kb + KB);
}

static void wide_pv(const kvk_call *c, const kvk_task *t, const tile_buf *b, uint32_t kb,
                    uint32_t n, uint32_t n_pad, uint32_t mp, float *acc, uint32_t m4)
{
    (void)t, (void)kb, (void)n;
    softmax_cols(b, mp, n_pad);
    pv(b->s, mp, b->alpha, b->vf, n_pad, c->g->head_dim, acc, m4);
}

static void wide_end(void)
{
}
#endif

/* ---- the task ---- */

static void tile_run(const kvk_call *c, const kvk_task *t, size_t row0, float *scratch,
                     float *out, uint32_t mcap)
{
    uint32_t G = c->g->q_heads / c->g->kv_heads, D = c->g->head_dim;
    uint32_t M = (t->r1 - t->r0) * G, m4 = (M + 3) & ~3u;
    uint32_t mp_cap = (mcap + 2 * VL - 1) / (2 * VL) * (2 * VL);
    uint32_t mp = (M + 2 * VL - 1) / (2 * VL) * (2 * VL);
    int wide = M >= VL;
    tile_buf b = tile_buf_carve(scratch, D, mp_cap);
    float *acc = kvk__out_acc(out, mcap);
    tile_load_q(c, t, row0, &b, wide ? mp : m4);
    for (uint32_t m = 0; m < mp; m++) {
        b.m[m] = -INFINITY;
        b.l[m] = 0.0f;
    }
    memset(acc, 0, (size_t)m4 * D * sizeof(float));
    tile_qattr(c, t, &b, M, wide ? mp : m4);
    if (wide) {
        wide_begin(&b, D, mp);
        for (uint32_t kb = t->k0; kb < t->k1; kb += KB) {
            uint32_t n = t->k1 - kb < KB ? t->k1 - kb : KB;
            uint32_t n_pad = (n + KB_PAD - 1) / KB_PAD * KB_PAD;
            wide_logits(c, t, &b, kb, n, n_pad, mp);
            softcap_block(b.s, (size_t)n_pad * mp, c->opts.softcap);
            if (block_needs_fix(c, &b, kb, n, n_pad)) {
                if (b.vec_fix)
                    fix_wide(&b, mp, kb, n, n_pad, c->opts.alibi != NULL);
                else
                    fix_scalar(c, t, b.s, 0, M, &(logit_layout){ 1, mp, 1 }, kb, n, n_pad);
            }
            wide_pv(c, t, &b, kb, n, n_pad, mp, acc, m4);
        }
        wide_end();
    } else {
        tile_run_narrow(c, t, &b, acc, M);
    }
    memcpy(kvk__out_m(out, mcap), b.m, m4 * sizeof(float));
    memcpy(kvk__out_l(out, mcap), b.l, m4 * sizeof(float));
}

static const kvk_tile_ops tile_ops = {
    .m_align = 2 * VL,
    .tile_m_long = TILE_M_LONG,
    .scratch_floats = tile_scratch_floats,
    .run = tile_run,
};
