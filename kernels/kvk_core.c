/* kvk_core.c — geometry, element conversions, RoPE, argument checks, kvk_write_kv and
 * kvk_merge_states: everything of libkvkernels that is not an attention inner loop.
 *
 * Conversions are written out in integer arithmetic (no F16C) so the scalar reference is
 * bit-exact on any CPU and the SIMD paths can be tested against it: the SIMD paths only
 * ever widen fp16/bf16 to fp32, which is exact, so both read identical numbers. */
#include <math.h>
#include <string.h>

#include "kverr.h"
#include "kvk_internal.h"

size_t kvk_dtype_size(kvk_dtype dtype)
{
    return dtype == KVK_F32 ? 4 : 2;
}

int kvk_geom_check(const kvk_geom *g)
{
    if (!g || g->layers == 0 || g->kv_heads == 0 || g->q_heads == 0 || g->page_tokens == 0)
        return KV_ERR_INVAL;
    if (g->q_heads % g->kv_heads != 0)
        return KV_ERR_INVAL;
    if (g->head_dim == 0 || g->head_dim > KVK_MAX_HEAD_DIM)
        return KV_ERR_INVAL;
    if (g->dtype != KVK_F32 && g->dtype != KVK_F16 && g->dtype != KVK_BF16)
        return KV_ERR_INVAL;
    /* A page must stay addressable with size_t arithmetic everywhere; 2^40 bytes is far
     * beyond any real page and keeps every product below well clear of overflow. */
    double bytes = 2.0 * g->layers * g->kv_heads * g->page_tokens * g->head_dim
                   * (double)kvk_dtype_size(g->dtype);
    return bytes < 0x1p40 ? 0 : KV_ERR_INVAL;
}

static size_t block_bytes(const kvk_geom *g)
{
    return (size_t)g->page_tokens * g->head_dim * kvk_dtype_size(g->dtype);
}

size_t kvk_page_bytes(const kvk_geom *g)
{
    size_t b = 2 * (size_t)g->layers * g->kv_heads * block_bytes(g);
    return (b + 63) & ~(size_t)63;
}

size_t kvk_block_offset(const kvk_geom *g, uint32_t layer, uint32_t kv_head, int kind)
{
    return (((size_t)layer * g->kv_heads + kv_head) * 2 + (size_t)kind) * block_bytes(g);
}

kvk_attn_opts kvk_attn_opts_default(void)
{
    kvk_attn_opts o = {
        .scale = 0.0f, .causal = 1, .window_left = -1, .softcap = 0.0f,
        .alibi = NULL, .rope = KVK_ROPE_NONE, .rope_theta = 0.0f,
    };
    return o;
}

float kvk_alibi_slope(uint32_t h, uint32_t n_heads, float max_bias)
{
    uint32_t n = 1;
    while (n * 2 <= n_heads)
        n *= 2;
    return (float)exp2(h < n ? -(double)max_bias * (h + 1) / n
                             : -(double)max_bias * (2 * (h - n) + 1) / (2.0 * n));
}

void kvk_alibi_slopes(uint32_t n_heads, float max_bias, float *slopes)
{
    for (uint32_t h = 0; h < n_heads; h++)
        slopes[h] = kvk_alibi_slope(h, n_heads, max_bias);
}

/* ---- fp16 / bf16 ---- */

static uint32_t f32_bits(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    return x;
}

static float bits_f32(uint32_t x)
{
    float f;
    memcpy(&f, &x, 4);
    return f;
}

/* Rounds mant >> shift to nearest, ties to even (shift >= 1). */
static uint32_t shift_rne(uint32_t mant, uint32_t shift)
{
    uint32_t r = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    return r + (rem > half || (rem == half && (r & 1)));
}

uint16_t kvk_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f), sign = (x >> 16) & 0x8000;
    x &= 0x7fffffff;
    if (x > 0x7f800000) /* NaN: keep it quiet and keep the top payload bits */
        return (uint16_t)(sign | 0x7e00 | ((x >> 13) & 0x3ff));
    if (x >= 0x477ff000) /* >= 65520 rounds to infinity (65504 is odd, so the tie goes up) */
        return (uint16_t)(sign | 0x7c00);
    if (x >= 0x38800000) /* normal half: rebias the exponent, round 13 bits away */
        return (uint16_t)(sign | (shift_rne(x, 13) - (112u << 10)));
    if (x <= 0x33000000) /* <= 2^-25: zero (2^-25 itself ties to the even zero) */
        return (uint16_t)sign;
    /* Subnormal half: units of 2^-24; the float is (mant | implicit 1) * 2^(e-150). */
    uint32_t e = x >> 23, mant = (x & 0x7fffff) | 0x800000;
    return (uint16_t)(sign | shift_rne(mant, 126 - e));
}

float kvk_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 0) {
        float v = (float)m * 0x1p-24f; /* exact: m has 10 bits */
        return sign ? -v : v;
    }
    if (e == 31)
        return bits_f32(sign | 0x7f800000 | (m << 13));
    return bits_f32(sign | ((e + 112) << 23) | (m << 13));
}

uint16_t kvk_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((x >> 16) | 0x40); /* quiet NaN, never rounded into infinity */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

float kvk_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

/* ---- RoPE ---- */

/* cos and sin of pair i's angle at pos, i < head_dim / 2 (double). */
static void rope_angles(double *c, double *s, uint32_t head_dim, uint32_t pos, float theta)
{
    double base = pow((double)theta, -2.0 / head_dim), freq = 1.0;
    for (uint32_t i = 0; i < head_dim / 2; i++, freq *= base) {
        double a = (double)pos * freq;
        c[i] = cos(a);
        s[i] = sin(a);
    }
}

void kvk__rope_table(float *cs, uint32_t head_dim, uint32_t pos, float theta)
{
    double c[KVK_MAX_HEAD_DIM / 2], s[KVK_MAX_HEAD_DIM / 2];
    rope_angles(c, s, head_dim, pos, theta);
    for (uint32_t i = 0; i < head_dim / 2; i++) {
        cs[2 * i] = (float)c[i];
        cs[2 * i + 1] = (float)s[i];
    }
}

/* One position's turn for the last (head_dim, theta) this thread walked: a decode step's
 * walk needs it on every call, and computing it is as dear as a fresh table. */
static __thread struct {
    uint32_t half;
    float theta;
    double c[KVK_MAX_HEAD_DIM / 2], s[KVK_MAX_HEAD_DIM / 2];
} turn;

void kvk__rope_walk_init(kvk_rope_walk *w, uint32_t head_dim, float theta)
{
    w->half = head_dim / 2;
    w->theta = theta;
    w->started = 0;
    if (turn.half != w->half || turn.theta != theta) {
        rope_angles(turn.c, turn.s, head_dim, 1, theta);
        turn.half = w->half;
        turn.theta = theta;
    }
    w->dc = turn.c;
    w->ds = turn.s;
}

/* The walk one position on. */
static void rope_turn(kvk_rope_walk *w)
{
    for (uint32_t i = 0; i < w->half; i++) {
        double c = w->c[i], s = w->s[i];
        w->c[i] = c * w->dc[i] - s * w->ds[i];
        w->s[i] = s * w->dc[i] + c * w->ds[i];
    }
    w->pos++;
}

void kvk__rope_walk_at(kvk_rope_walk *w, uint32_t pos, float *cs)
{
    uint32_t anchor = pos - pos % KVK_ROPE_ANCHOR;
    if (!w->started || pos <= w->pos || w->pos < anchor) { /* afresh from the anchor */
        rope_angles(w->c, w->s, 2 * w->half, anchor, w->theta);
        w->pos = anchor;
        w->started = 1;
    }
    while (w->pos < pos)
        rope_turn(w);
    for (uint32_t i = 0; i < w->half; i++) {
        cs[2 * i] = (float)w->c[i];
        cs[2 * i + 1] = (float)w->s[i];
    }
}

void kvk__rope_apply(float *x, uint32_t head_dim, kvk_rope_mode mode, const float *cs)
{
    uint32_t half = head_dim / 2;
    for (uint32_t i = 0; i < half; i++) {
        /* NeoX pairs (i, i + D/2); GPT-J pairs (2i, 2i + 1); same frequency per pair. */
        float *a = mode == KVK_ROPE_HALF ? &x[i] : &x[2 * i];
        float *b = mode == KVK_ROPE_HALF ? &x[i + half] : &x[2 * i + 1];
        float c = cs[2 * i], s = cs[2 * i + 1], x0 = *a, x1 = *b;
        *a = x0 * c - x1 * s;
        *b = x0 * s + x1 * c;
    }
}

/* ---- argument checks ---- */

static int opts_check(const kvk_attn_opts *o, const kvk_geom *g)
{
    if (o->rope != KVK_ROPE_NONE && o->rope != KVK_ROPE_HALF && o->rope != KVK_ROPE_INTERLEAVED)
        return KV_ERR_INVAL;
    if (o->rope != KVK_ROPE_NONE && g->head_dim % 2)
        return KV_ERR_INVAL;
    if (!isfinite(o->scale) || !isfinite(o->rope_theta) || o->rope_theta < 0.0f)
        return KV_ERR_INVAL;
    if (!isfinite(o->softcap) || o->softcap < 0.0f || o->window_left < -1)
        return KV_ERR_INVAL;
    return 0;
}

static int items_check(const kvk_geom *g, const kvk_pages *pg, const kvk_item *items,
                       uint32_t n_items, uint64_t *rows)
{
    *rows = 0;
    if (n_items && !items)
        return KV_ERR_INVAL;
    for (uint32_t i = 0; i < n_items; i++) {
        uint64_t n = (uint64_t)items[i].n_kv + items[i].n_new;
        if (n > UINT32_MAX - 1) /* positions and pos + 1 must fit in uint32_t */
            return KV_ERR_INVAL;
        uint64_t np = (n + g->page_tokens - 1) / g->page_tokens;
        if (np && !items[i].pages)
            return KV_ERR_INVAL;
        for (uint64_t p = 0; p < np; p++)
            if (items[i].pages[p] >= pg->n_pages)
                return KV_ERR_INVAL;
        *rows += items[i].n_new;
    }
    return *rows <= UINT32_MAX ? 0 : KV_ERR_INVAL;
}

int kvk__call_init(kvk_call *c, const kvk_geom *g, const kvk_pages *pg, uint32_t layer,
                   const kvk_item *items, uint32_t n_items, const kvk_attn_opts *opts)
{
    kvk_attn_opts o = opts ? *opts : kvk_attn_opts_default();
    uint64_t rows;
    if (kvk_geom_check(g) || !pg || (!pg->base && pg->n_pages) || layer >= g->layers)
        return KV_ERR_INVAL;
    if (opts_check(&o, g) || items_check(g, pg, items, n_items, &rows))
        return KV_ERR_INVAL;
    if (o.scale == 0.0f)
        o.scale = 1.0f / sqrtf((float)g->head_dim);
    if (o.rope_theta == 0.0f)
        o.rope_theta = 10000.0f;
    *c = (kvk_call){
        .g = g, .pg = pg, .items = items, .n_items = n_items, .opts = o,
        .page_bytes = kvk_page_bytes(g), .esize = kvk_dtype_size(g->dtype),
        .k_off = kvk_block_offset(g, layer, 0, 0),
        .head_stride = kvk_block_offset(g, 0, 1, 0),
        .v_off = kvk_block_offset(g, 0, 0, 1), .rows = (uint32_t)rows,
    };
    return 0;
}

/* ---- kvk_write_kv ---- */

void kvk__store_ref(uint8_t *dst, const float *src, uint32_t n, kvk_dtype dt)
{
    if (dt == KVK_F32) {
        memcpy(dst, src, (size_t)n * 4);
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint16_t h = dt == KVK_F16 ? kvk_f32_to_f16(src[i]) : kvk_f32_to_bf16(src[i]);
        memcpy(dst + 2 * i, &h, 2);
    }
}

int kvk_write_kv(const kvk_geom *g, const kvk_pages *pg, uint32_t layer,
                 const kvk_item *items, uint32_t n_items, const float *k, const float *v,
                 const kvk_attn_opts *opts)
{
    kvk_call c;
    if (kvk__call_init(&c, g, pg, layer, items, n_items, opts))
        return KV_ERR_INVAL;
    if (c.rows && (!k || !v))
        return KV_ERR_INVAL;
    uint32_t D = g->head_dim, H = g->kv_heads;
    float cs[KVK_MAX_HEAD_DIM], tmp[KVK_MAX_HEAD_DIM];
    kvk_store_fn store = kvk__store_fn();
    kvk_rope_walk walk;
    if (c.opts.rope != KVK_ROPE_NONE)
        kvk__rope_walk_init(&walk, D, c.opts.rope_theta);
    size_t row = 0;
    for (uint32_t i = 0; i < n_items; i++) {
        const kvk_item *it = &items[i];
        for (uint32_t r = 0; r < it->n_new; r++, row++) {
            uint32_t pos = it->n_kv + r;
            if (c.opts.rope != KVK_ROPE_NONE)
                kvk__rope_walk_at(&walk, pos, cs);
            for (uint32_t h = 0; h < H; h++) {
                const float *ks = k + (row * H + h) * D, *vs = v + (row * H + h) * D;
                if (c.opts.rope != KVK_ROPE_NONE) {
                    memcpy(tmp, ks, (size_t)D * 4);
                    kvk__rope_apply(tmp, D, c.opts.rope, cs);
                    ks = tmp;
                }
                store(kvk__kv_row(&c, it, pos, h, 0), ks, D, g->dtype);
                store(kvk__kv_row(&c, it, pos, h, 1), vs, D, g->dtype);
            }
        }
    }
    return 0;
}

int kvk_copy_tokens(const kvk_geom *g, const kvk_pages *pg, uint32_t layer, uint32_t src,
                    uint32_t dst, uint32_t n)
{
    if (kvk_geom_check(g) || !pg || !pg->base || layer >= g->layers || src >= pg->n_pages ||
        dst >= pg->n_pages || src == dst || n > g->page_tokens)
        return KV_ERR_INVAL;
    size_t pb = kvk_page_bytes(g), bytes = (size_t)n * g->head_dim * kvk_dtype_size(g->dtype);
    const uint8_t *from = pg->base + src * pb;
    uint8_t *to = pg->base + dst * pb;
    for (uint32_t h = 0; h < g->kv_heads; h++)
        for (int kind = 0; kind < 2; kind++) {
            size_t off = kvk_block_offset(g, layer, h, kind);
            memcpy(to + off, from + off, bytes);
        }
    return 0;
}

/* ---- kvk_merge_states ---- */

void kvk_merge_states(uint32_t n, uint32_t dim, const float *o_a, const float *lse_a,
                      const float *o_b, const float *lse_b, float *o, float *lse)
{
    for (size_t r = 0; r < n; r++) {
        float la = lse_a[r], lb = lse_b[r], m = fmaxf(la, lb);
        /* Both empty: nothing seen, o = 0 and lse = -inf like a row with no visible key. */
        float wa = m == -INFINITY ? 0.0f : expf(la - m);
        float wb = m == -INFINITY ? 0.0f : expf(lb - m);
        float sum = wa + wb, inv = sum > 0.0f ? 1.0f / sum : 0.0f;
        for (size_t d = 0; d < dim; d++)
            o[r * dim + d] = (o_a[r * dim + d] * wa + o_b[r * dim + d] * wb) * inv;
        lse[r] = sum > 0.0f ? m + logf(sum) : -INFINITY;
    }
}
