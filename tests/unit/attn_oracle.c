/* attn_oracle.c — scenarios, paged K/V and the fp64 oracle of the kernel unit tests; the
 * contract is in attn_oracle.h. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "tests/unit/attn_oracle.h"

static const char *const isa_names[] = { "scalar", "avx2", "avx512", "amx" };

/* ---- random numbers (deterministic) ---- */

static uint64_t rng_state = 88172645463325252ull;

uint64_t ao_rng_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Uniform in [-1, 1). */
static float rng_f(void)
{
    return (float)((double)(ao_rng_u64() >> 11) * 0x1p-52 - 1.0);
}

/* malloc(n), at least one byte; a failed allocation fails the test. */
static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    assert_non_null(p);
    return p;
}

static float *rand_tensor(size_t n, float gain)
{
    float *t = xmalloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        t[i] = rng_f() * gain;
    return t;
}

/* ---- the arena ---- */

static uint32_t ceil_div(uint32_t a, uint32_t b)
{
    return (a + b - 1) / b;
}

/* The first key any new row of item i can see (its sliding window's start): keys before it
 * are never read, so they need no pages and no written K/V. */
static uint32_t first_visible(const ao_case *tc, uint32_t i)
{
    int w = tc->opts.window_left;
    return w >= 0 && tc->n_kv[i] > (uint32_t)w ? tc->n_kv[i] - (uint32_t)w : 0;
}

/* The first page of item i that is its own: after those its window skips and those it
 * shares. */
static uint32_t own_from(const ao_case *tc, uint32_t i)
{
    uint32_t skip = first_visible(tc, i) / tc->page_tokens, sh = tc->share_pages[i];
    return sh > skip ? sh : skip;
}

/* Pages of all items come from one shuffled pool, so no item's pages are contiguous; the
 * other layer of each page holds random bytes the kernels must never read, and so does the
 * one page every table entry before first_visible points to (a context of millions of
 * tokens with a sliding window needs pages only for its window). */
static void arena_build(ao_arena *a, const ao_case *tc)
{
    memset(a, 0, sizeof(*a));
    a->g = (kvk_geom){ .layers = 2, .q_heads = tc->q_heads, .kv_heads = tc->kv_heads,
                       .head_dim = tc->head_dim, .page_tokens = tc->page_tokens,
                       .dtype = tc->dtype };
    assert_int_equal(kvk_geom_check(&a->g), 0);
    uint32_t total = 3, pt = tc->page_tokens;
    for (uint32_t i = 0; i < tc->n_items; i++)
        total += ceil_div(tc->n_kv[i] + tc->n_new[i], pt) - own_from(tc, i);
    size_t pb = kvk_page_bytes(&a->g);
    a->pg.n_pages = total;
    a->pg.base = xmalloc(pb * total);
    for (size_t i = 0; i < pb * total; i++)
        a->pg.base[i] = (uint8_t)ao_rng_u64();
    uint32_t *perm = xmalloc(total * sizeof(*perm));
    for (uint32_t i = 0; i < total; i++)
        perm[i] = i;
    for (uint32_t i = total - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(ao_rng_u64() % (i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    uint32_t next = 1; /* perm[0]: the never-read page */
    for (uint32_t i = 0; i < tc->n_items; i++) {
        uint32_t np = ceil_div(tc->n_kv[i] + tc->n_new[i], pt);
        uint32_t own = own_from(tc, i);
        a->tables[i] = xmalloc(np * sizeof(uint32_t));
        for (uint32_t p = 0; p < own; p++)
            a->tables[i][p] = p < tc->share_pages[i] ? a->tables[tc->share_of[i]][p] : perm[0];
        memcpy(a->tables[i] + own, perm + next, (np - own) * sizeof(uint32_t));
        next += np - own;
        a->items[i] = (kvk_item){ a->tables[i], tc->n_kv[i], tc->n_new[i] };
        a->rows += tc->n_new[i];
    }
    free(perm);
    for (uint32_t h = 0; h < tc->q_heads && h < 64; h++)
        a->alibi[h] = -0.5f / (float)(1u << (h % 8)); /* ALiBi-like geometric slopes */
}

/* Writes each item's old KV (positions first_visible .. n_kv-1) and then the call's new rows,
 * as a server would over two steps, and fills the queries. */
static void arena_fill(ao_arena *a, const ao_case *tc)
{
    uint32_t H = tc->kv_heads, D = tc->head_dim;
    for (uint32_t i = 0; i < tc->n_items; i++) {
        uint32_t j0 = first_visible(tc, i), sh = tc->share_pages[i] * tc->page_tokens;
        j0 = j0 > sh ? j0 : sh; /* a shared prefix is its owner's to write */
        kvk_item old = { a->tables[i], j0, tc->n_kv[i] - j0 };
        float *k = rand_tensor((size_t)old.n_new * H * D, 1.0f);
        float *v = rand_tensor((size_t)old.n_new * H * D, 1.0f);
        assert_int_equal(kvk_write_kv(&a->g, &a->pg, 1, &old, 1, k, v, &tc->opts), 0);
        free(k);
        free(v);
    }
    a->k = rand_tensor((size_t)a->rows * H * D, 1.0f);
    a->v = rand_tensor((size_t)a->rows * H * D, 1.0f);
    a->q = rand_tensor((size_t)a->rows * tc->q_heads * D, tc->qk_gain ? tc->qk_gain : 1.0f);
    assert_int_equal(kvk_write_kv(&a->g, &a->pg, 1, a->items, tc->n_items, a->k, a->v,
                                  &tc->opts), 0);
}

void ao_arena_init(ao_arena *a, const ao_case *tc)
{
    arena_build(a, tc);
    arena_fill(a, tc);
}

void ao_arena_free(ao_arena *a)
{
    for (uint32_t i = 0; i < AO_MAX_ITEMS; i++)
        free(a->tables[i]);
    free(a->pg.base);
    free(a->q);
    free(a->k);
    free(a->v);
    memset(a, 0, sizeof(*a));
}

double ao_page_elem(const ao_arena *a, uint32_t i, uint32_t pos, uint32_t h, int kind,
                    uint32_t d)
{
    const kvk_geom *g = &a->g;
    size_t es = g->dtype == KVK_F32 ? 4 : 2, layer = 1;
    size_t off = ((layer * g->kv_heads + h) * 2 + (size_t)kind) * g->page_tokens * g->head_dim * es;
    const uint8_t *p = a->pg.base + (size_t)a->tables[i][pos / g->page_tokens] * kvk_page_bytes(g)
                       + off + ((size_t)(pos % g->page_tokens) * g->head_dim + d) * es;
    if (g->dtype == KVK_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    uint16_t u;
    memcpy(&u, p, 2);
    return g->dtype == KVK_F16 ? kvk_f16_to_f32(u) : kvk_bf16_to_f32(u);
}

/* ---- the oracle ---- */

void ao_rope(double *x, uint32_t D, uint32_t pos, kvk_rope_mode mode, double theta)
{
    for (uint32_t i = 0; i < D / 2; i++) {
        double ang = pos * pow(theta, -2.0 * i / D), c = cos(ang), s = sin(ang);
        uint32_t ia = mode == KVK_ROPE_HALF ? i : 2 * i;
        uint32_t ib = mode == KVK_ROPE_HALF ? i + D / 2 : 2 * i + 1;
        double x0 = x[ia], x1 = x[ib];
        x[ia] = x0 * c - x1 * s;
        x[ib] = x0 * s + x1 * c;
    }
}

/* The fp64 oracle: o_ref [rows][q_heads][D], lse_ref [rows][q_heads]. */
static void naive_attn(const ao_arena *a, const ao_case *tc, double *o_ref, double *lse_ref)
{
    const kvk_attn_opts *op = &tc->opts;
    uint32_t D = tc->head_dim, G = tc->q_heads / tc->kv_heads;
    double scale = op->scale ? op->scale : 1.0 / sqrt(D);
    double theta = op->rope_theta ? op->rope_theta : 10000.0;
    double q[1024];
    assert_true(D <= sizeof(q) / sizeof(*q));
    size_t row = 0;
    for (uint32_t i = 0; i < tc->n_items; i++) {
        /* keys j0 .. n-1, at index j - j0 */
        uint32_t j0 = first_visible(tc, i), n = tc->n_kv[i] + tc->n_new[i], nv = n - j0;
        uint32_t kvh_count = tc->kv_heads;
        double *K = xmalloc(((size_t)nv * kvh_count * D + 1) * sizeof(double));
        double *V = xmalloc(((size_t)nv * kvh_count * D + 1) * sizeof(double));
        double *s = xmalloc((nv + 1) * sizeof(double));
        for (uint32_t j = 0; j < nv; j++)
            for (uint32_t h = 0; h < kvh_count; h++)
                for (uint32_t d = 0; d < D; d++) {
                    K[((size_t)j * kvh_count + h) * D + d] = ao_page_elem(a, i, j0 + j, h, 0, d);
                    V[((size_t)j * kvh_count + h) * D + d] = ao_page_elem(a, i, j0 + j, h, 1, d);
                }
        for (uint32_t r = 0; r < tc->n_new[i]; r++, row++) {
            uint32_t pos = tc->n_kv[i] + r;
            for (uint32_t qh = 0; qh < tc->q_heads; qh++) {
                size_t qi = row * tc->q_heads + qh;
                for (uint32_t d = 0; d < D; d++)
                    q[d] = a->q[qi * D + d];
                if (op->rope)
                    ao_rope(q, D, pos, op->rope, theta);
                double m = -INFINITY, l = 0.0;
                for (uint32_t j = 0; j < nv; j++) {
                    uint32_t key = j0 + j;
                    int vis = (!op->causal || key <= pos)
                              && (op->window_left < 0 || key + (uint32_t)op->window_left >= pos);
                    double x = 0.0;
                    for (uint32_t d = 0; d < D; d++)
                        x += q[d] * K[((size_t)j * kvh_count + qh / G) * D + d];
                    x *= scale;
                    if (op->softcap > 0)
                        x = op->softcap * tanh(x / op->softcap);
                    if (tc->use_alibi)
                        x += (double)a->alibi[qh] * ((double)key - pos);
                    s[j] = vis ? x : -INFINITY;
                    m = fmax(m, s[j]);
                }
                for (uint32_t d = 0; d < D; d++)
                    o_ref[qi * D + d] = 0.0;
                for (uint32_t j = 0; j < nv && m > -INFINITY; j++) {
                    double p = exp(s[j] - m);
                    l += p;
                    for (uint32_t d = 0; d < D; d++)
                        o_ref[qi * D + d] += p * V[((size_t)j * kvh_count + qh / G) * D + d];
                }
                for (uint32_t d = 0; d < D && l > 0; d++)
                    o_ref[qi * D + d] /= l;
                lse_ref[qi] = l > 0 ? m + log(l) : -INFINITY;
            }
        }
        free(K);
        free(V);
        free(s);
    }
}

void ao_compare(const float *o, const double *o_ref, size_t n_o, const float *lse,
                const double *lse_ref, size_t n_lse, double tol, const char *what)
{
    double omax = 1e-30, err = 0.0, lmax = 1.0, lerr = 0.0;
    for (size_t i = 0; i < n_o; i++)
        omax = fmax(omax, fabs(o_ref[i]));
    for (size_t i = 0; i < n_o; i++) {
        double e = fabs(o[i] - o_ref[i]);
        if (!(e <= err)) /* NaN counts as an error */
            err = isnan(e) ? INFINITY : e;
    }
    for (size_t i = 0; i < n_lse && lse; i++)
        if (isfinite(lse_ref[i]))
            lmax = fmax(lmax, fabs(lse_ref[i]));
    for (size_t i = 0; i < n_lse && lse; i++) {
        double e = isinf(lse_ref[i]) ? (lse[i] == lse_ref[i] ? 0.0 : INFINITY)
                                     : fabs(lse[i] - lse_ref[i]);
        if (!(e <= lerr))
            lerr = isnan(e) ? INFINITY : e;
    }
    if (err > tol * omax || lerr > tol * lmax)
        fail_msg("%s: max|o-ref| %.3g (max|ref| %.3g), max|lse-ref| %.3g", what, err, omax,
                 lerr);
}

void ao_run_case(const ao_case *tc)
{
    ao_arena a;
    ao_arena_init(&a, tc);
    ao_case t = *tc;
    assert_true(!tc->use_alibi || tc->q_heads <= sizeof(a.alibi) / sizeof(*a.alibi));
    if (tc->use_alibi)
        t.opts.alibi = a.alibi;
    size_t n_o = (size_t)a.rows * tc->q_heads * tc->head_dim, n_l = (size_t)a.rows * tc->q_heads;
    double *o_ref = xmalloc((n_o + 1) * sizeof(double));
    double *l_ref = xmalloc((n_l + 1) * sizeof(double));
    float *o = xmalloc((n_o + 1) * sizeof(float)), *lse = xmalloc((n_l + 1) * sizeof(float));
    naive_attn(&a, &t, o_ref, l_ref);
    kvk_pool *pool = kvk_pool_create(2);
    assert_non_null(pool);
    const char *best = kvk_isa_name();
    for (size_t isa = 0; isa < sizeof(isa_names) / sizeof(*isa_names); isa++) {
        if (kvk_isa_set(isa_names[isa]))
            continue;
        for (int with_pool = 0; with_pool < 2; with_pool++) {
            char what[160];
            snprintf(what, sizeof(what), "isa %s pool %d D %u pt %u dtype %d", isa_names[isa],
                     with_pool, tc->head_dim, tc->page_tokens, (int)tc->dtype);
            for (size_t i = 0; i < n_o; i++)
                o[i] = NAN;
            for (size_t i = 0; i < n_l; i++)
                lse[i] = NAN;
            assert_int_equal(kvk_attn(&a.g, &a.pg, 1, a.items, tc->n_items, a.q, o, lse,
                                      &t.opts, with_pool ? pool : NULL), 0);
            /* amx falls back to avx512 where head_dim is no multiple of a tile row */
            int bf16 = !strcmp(isa_names[isa], "amx") && tc->head_dim % 32 == 0;
            ao_compare(o, o_ref, n_o, lse, l_ref, n_l, bf16 ? AO_TOL_BF16 : AO_TOL, what);
        }
    }
    assert_int_equal(kvk_isa_set(best), 0);
    kvk_pool_destroy(&pool);
    assert_null(pool);
    free(o_ref);
    free(l_ref);
    free(o);
    free(lse);
    ao_arena_free(&a);
}

/* ---- building a case ---- */

ao_case ao_case_base(uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim,
                     uint32_t page_tokens, kvk_dtype dtype)
{
    ao_case tc = { .q_heads = q_heads, .kv_heads = kv_heads, .head_dim = head_dim,
                   .page_tokens = page_tokens, .dtype = dtype, .opts = kvk_attn_opts_default() };
    return tc;
}

void ao_case_add_item(ao_case *tc, uint32_t n_kv, uint32_t n_new)
{
    assert_true(tc->n_items < AO_MAX_ITEMS);
    tc->n_kv[tc->n_items] = n_kv;
    tc->n_new[tc->n_items] = n_new;
    tc->n_items++;
}

void ao_case_add_sharing(ao_case *tc, uint32_t n_kv, uint32_t n_new, uint32_t src,
                         uint32_t pages)
{
    uint32_t i = tc->n_items, pt = tc->page_tokens;
    assert_true(src < i);
    assert_true(pages * pt <= n_kv && pages * pt <= tc->n_kv[src]);
    ao_case_add_item(tc, n_kv, n_new);
    tc->share_of[i] = src;
    tc->share_pages[i] = pages;
    assert_true(first_visible(tc, src) <= first_visible(tc, i)); /* src wrote what i sees */
}
