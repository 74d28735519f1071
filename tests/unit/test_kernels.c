/* test_kernels.c — unit tests of libkvkernels.
 *
 * The oracle is a naive fp64 attention over contiguous K/V. Those K/V are read back from the
 * pages through the layout formula of kvkernels.h (not through library code), so the oracle
 * sees exactly the dtype-rounded values the kernels see and the comparison measures only
 * the attention arithmetic: max |o - o_ref| <= 1e-4 * max |o_ref|. Every attention case runs
 * on every instruction set this CPU supports (scalar reference, AVX2, AVX-512), with and
 * without a thread pool, and outputs are poisoned with NaN first so an unwritten row fails. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <immintrin.h>

#include "kverr.h"
#include "kvkernels.h"

#define TOL 1e-4
#define MAX_ITEMS 8

static const char *const isa_names[] = { "scalar", "avx2", "avx512" };

/* ---- random numbers (deterministic) ---- */

static uint64_t rng_state = 88172645463325252ull;

static uint64_t rng_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Uniform in [-1, 1). */
static float rng_f(void)
{
    return (float)((double)(rng_u64() >> 11) * 0x1p-52 - 1.0);
}

/* ---- one attention scenario ---- */

typedef struct tcase {
    uint32_t q_heads, kv_heads, head_dim, page_tokens;
    kvk_dtype dtype;
    uint32_t n_items;
    uint32_t n_kv[MAX_ITEMS], n_new[MAX_ITEMS];
    kvk_attn_opts opts;     /* alibi: filled in by run_case when use_alibi */
    int use_alibi;
    float qk_gain;          /* scales Q so logits span a useful range (softcap, ALiBi) */
} tcase;

typedef struct arena {
    kvk_geom g;
    kvk_pages pg;
    uint32_t *tables[MAX_ITEMS];
    kvk_item items[MAX_ITEMS];
    uint32_t rows;
    float *q, *k, *v;       /* inputs: [rows][heads][dim] */
    float alibi[64];
} arena;

static uint32_t ceil_div(uint32_t a, uint32_t b)
{
    return (a + b - 1) / b;
}

/* The first key any new row of item i can see (its sliding window's start): keys before it
 * are never read, so they need no pages and no written K/V. */
static uint32_t first_visible(const tcase *tc, uint32_t i)
{
    int w = tc->opts.window_left;
    return w >= 0 && tc->n_kv[i] > (uint32_t)w ? tc->n_kv[i] - (uint32_t)w : 0;
}

/* Pages of all items come from one shuffled pool, so no item's pages are contiguous; the
 * other layer of each page holds random bytes the kernels must never read, and so does the
 * one page every table entry before first_visible points to (a context of millions of
 * tokens with a sliding window needs pages only for its window). */
static void arena_build(arena *a, const tcase *tc)
{
    memset(a, 0, sizeof(*a));
    a->g = (kvk_geom){ .layers = 2, .q_heads = tc->q_heads, .kv_heads = tc->kv_heads,
                       .head_dim = tc->head_dim, .page_tokens = tc->page_tokens,
                       .dtype = tc->dtype };
    assert_int_equal(kvk_geom_check(&a->g), 0);
    uint32_t total = 3, pt = tc->page_tokens;
    for (uint32_t i = 0; i < tc->n_items; i++)
        total += ceil_div(tc->n_kv[i] + tc->n_new[i], pt) - first_visible(tc, i) / pt;
    size_t pb = kvk_page_bytes(&a->g);
    a->pg.n_pages = total;
    a->pg.base = malloc(pb * total);
    assert_non_null(a->pg.base);
    for (size_t i = 0; i < pb * total; i++)
        a->pg.base[i] = (uint8_t)rng_u64();
    uint32_t *perm = malloc(total * sizeof(*perm));
    for (uint32_t i = 0; i < total; i++)
        perm[i] = i;
    for (uint32_t i = total - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(rng_u64() % (i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    uint32_t next = 1; /* perm[0]: the never-read page */
    for (uint32_t i = 0; i < tc->n_items; i++) {
        uint32_t np = ceil_div(tc->n_kv[i] + tc->n_new[i], pt), skip = first_visible(tc, i) / pt;
        a->tables[i] = malloc((np ? np : 1) * sizeof(uint32_t));
        assert_non_null(a->tables[i]);
        for (uint32_t p = 0; p < skip; p++)
            a->tables[i][p] = perm[0];
        memcpy(a->tables[i] + skip, perm + next, (np - skip) * sizeof(uint32_t));
        next += np - skip;
        a->items[i] = (kvk_item){ a->tables[i], tc->n_kv[i], tc->n_new[i] };
        a->rows += tc->n_new[i];
    }
    free(perm);
    for (uint32_t h = 0; h < tc->q_heads && h < 64; h++)
        a->alibi[h] = -0.5f / (float)(1u << (h % 8)); /* ALiBi-like geometric slopes */
}

static void arena_free(arena *a)
{
    for (uint32_t i = 0; i < MAX_ITEMS; i++)
        free(a->tables[i]);
    free(a->pg.base);
    free(a->q);
    free(a->k);
    free(a->v);
}

static float *rand_tensor(size_t n, float gain)
{
    float *t = malloc((n ? n : 1) * sizeof(float));
    for (size_t i = 0; i < n; i++)
        t[i] = rng_f() * gain;
    return t;
}

/* Writes each item's old KV (positions first_visible .. n_kv-1) and then the call's new rows,
 * as a server would over two steps, and fills the queries. */
static void arena_fill(arena *a, const tcase *tc)
{
    uint32_t H = tc->kv_heads, D = tc->head_dim;
    for (uint32_t i = 0; i < tc->n_items; i++) {
        uint32_t j0 = first_visible(tc, i);
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

/* Element d of token pos of item i, per the header's layout formula. */
static double page_elem(const arena *a, uint32_t i, uint32_t pos, uint32_t h, int kind,
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

static void rope_f64(double *x, uint32_t D, uint32_t pos, kvk_rope_mode mode, double theta)
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
static void naive_attn(const arena *a, const tcase *tc, double *o_ref, double *lse_ref)
{
    const kvk_attn_opts *op = &tc->opts;
    uint32_t D = tc->head_dim, G = tc->q_heads / tc->kv_heads;
    double scale = op->scale ? op->scale : 1.0 / sqrt(D);
    double theta = op->rope_theta ? op->rope_theta : 10000.0;
    size_t row = 0;
    for (uint32_t i = 0; i < tc->n_items; i++) {
        /* keys j0 .. n-1, at index j - j0 */
        uint32_t j0 = first_visible(tc, i), n = tc->n_kv[i] + tc->n_new[i], nv = n - j0;
        uint32_t kvh_count = tc->kv_heads;
        double *K = malloc(((size_t)nv * kvh_count * D + 1) * sizeof(double));
        double *V = malloc(((size_t)nv * kvh_count * D + 1) * sizeof(double));
        double *s = malloc((nv + 1) * sizeof(double));
        for (uint32_t j = 0; j < nv; j++)
            for (uint32_t h = 0; h < kvh_count; h++)
                for (uint32_t d = 0; d < D; d++) {
                    K[((size_t)j * kvh_count + h) * D + d] = page_elem(a, i, j0 + j, h, 0, d);
                    V[((size_t)j * kvh_count + h) * D + d] = page_elem(a, i, j0 + j, h, 1, d);
                }
        for (uint32_t r = 0; r < tc->n_new[i]; r++, row++) {
            uint32_t pos = tc->n_kv[i] + r;
            for (uint32_t qh = 0; qh < tc->q_heads; qh++) {
                double q[1024];
                size_t qi = row * tc->q_heads + qh;
                for (uint32_t d = 0; d < D; d++)
                    q[d] = a->q[qi * D + d];
                if (op->rope)
                    rope_f64(q, D, pos, op->rope, theta);
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

/* Asserts max |o - o_ref| <= TOL * max |o_ref| and the same for lse (relative to its own
 * scale, at least 1). */
static void compare(const float *o, const double *o_ref, size_t n_o, const float *lse,
                    const double *lse_ref, size_t n_lse, const char *what)
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
    if (err > TOL * omax || lerr > TOL * lmax)
        fail_msg("%s: max|o-ref| %.3g (max|ref| %.3g), max|lse-ref| %.3g", what, err, omax,
                 lerr);
}

/* Runs tc on every ISA the CPU has, with pool NULL and with a 2-thread pool. */
static void run_case(const tcase *tc)
{
    arena a;
    arena_build(&a, tc);
    arena_fill(&a, tc);
    tcase t = *tc;
    if (tc->use_alibi)
        t.opts.alibi = a.alibi;
    size_t n_o = (size_t)a.rows * tc->q_heads * tc->head_dim, n_l = (size_t)a.rows * tc->q_heads;
    double *o_ref = malloc((n_o + 1) * sizeof(double)), *l_ref = malloc((n_l + 1) * sizeof(double));
    float *o = malloc((n_o + 1) * sizeof(float)), *lse = malloc((n_l + 1) * sizeof(float));
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
            compare(o, o_ref, n_o, lse, l_ref, n_l, what);
        }
    }
    assert_int_equal(kvk_isa_set(best), 0);
    kvk_pool_destroy(&pool);
    assert_null(pool);
    free(o_ref);
    free(l_ref);
    free(o);
    free(lse);
    arena_free(&a);
}

static tcase base_case(uint32_t qh, uint32_t kvh, uint32_t D, uint32_t pt, kvk_dtype dt)
{
    tcase tc = { .q_heads = qh, .kv_heads = kvh, .head_dim = D, .page_tokens = pt,
                 .dtype = dt, .opts = kvk_attn_opts_default() };
    return tc;
}

static void add_item(tcase *tc, uint32_t n_kv, uint32_t n_new)
{
    tc->n_kv[tc->n_items] = n_kv;
    tc->n_new[tc->n_items] = n_new;
    tc->n_items++;
}

/* ---- conversions ---- */

__attribute__((target("f16c"))) static uint16_t hw_f16(float f)
{
    return (uint16_t)_cvtss_sh(f, 0 /* round to nearest even */);
}

static int have_f16c(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2"); /* every AVX2 CPU has F16C */
}

static void test_f16_roundtrip_all(void **state)
{
    (void)state;
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kvk_f16_to_f32((uint16_t)h);
        if (isnan(f)) {
            assert_true((h & 0x7c00) == 0x7c00 && (h & 0x3ff));
            assert_int_equal(kvk_f32_to_f16(f) & 0x7e00, 0x7e00); /* stays a (quiet) NaN */
            continue;
        }
        assert_int_equal(kvk_f32_to_f16(f), h);
    }
}

static void test_f16_rounding(void **state)
{
    (void)state;
    assert_int_equal(kvk_f32_to_f16(1.0f), 0x3c00);
    assert_int_equal(kvk_f32_to_f16(-2.0f), 0xc000);
    assert_int_equal(kvk_f32_to_f16(65504.0f), 0x7bff);
    assert_int_equal(kvk_f32_to_f16(65519.99f), 0x7bff);
    assert_int_equal(kvk_f32_to_f16(65520.0f), 0x7c00);   /* tie rounds to even: inf */
    assert_int_equal(kvk_f32_to_f16(INFINITY), 0x7c00);
    assert_int_equal(kvk_f32_to_f16(-INFINITY), 0xfc00);
    assert_int_equal(kvk_f32_to_f16(0x1p-24f), 0x0001);   /* smallest subnormal */
    assert_int_equal(kvk_f32_to_f16(0x1p-25f), 0x0000);   /* tie to even zero */
    assert_int_equal(kvk_f32_to_f16(0x1.8p-24f), 0x0002); /* tie 1.5 -> 2 */
    assert_int_equal(kvk_f32_to_f16(-0.0f), 0x8000);
    assert_int_equal(kvk_f32_to_f16(1.0f + 0x1p-11f), 0x3c00);      /* tie to even */
    assert_int_equal(kvk_f32_to_f16(1.0f + 0x1.8p-10f), 0x3c02);    /* tie to even, up */
    assert_true(isnan(kvk_f16_to_f32(kvk_f32_to_f16(NAN))));
    assert_true(kvk_f16_to_f32(0x0001) == 0x1p-24f);
    assert_true(kvk_f16_to_f32(0x03ff) == 0x3ffp-24f);
    if (!have_f16c())
        return;
    /* Random bit patterns and values near every half boundary, against the hardware. */
    for (int i = 0; i < 2000000; i++) {
        uint32_t bits = (uint32_t)rng_u64();
        if (i & 1) /* concentrate on the half range, exact ties included */
            bits = (bits & 0x80001fffu) | ((0x33000000u + (bits & 0x0fffe000u)) & 0x7fffe000u);
        float f;
        memcpy(&f, &bits, 4);
        if (isnan(f))
            continue;
        if (kvk_f32_to_f16(f) != hw_f16(f))
            fail_msg("f16(%a) = %04x, hardware %04x", f, kvk_f32_to_f16(f), hw_f16(f));
    }
}

static void test_bf16_rounding(void **state)
{
    (void)state;
    assert_int_equal(kvk_f32_to_bf16(1.0f), 0x3f80);
    assert_int_equal(kvk_f32_to_bf16(1.0f + 0x1p-8f), 0x3f80);      /* tie to even */
    assert_int_equal(kvk_f32_to_bf16(1.0f + 0x1.8p-7f), 0x3f82);    /* tie to even, up */
    assert_int_equal(kvk_f32_to_bf16(1.0f + 0x1.1p-8f), 0x3f81);    /* above the tie */
    assert_int_equal(kvk_f32_to_bf16(INFINITY), 0x7f80);
    assert_int_equal(kvk_f32_to_bf16(-INFINITY), 0xff80);
    assert_int_equal(kvk_f32_to_bf16(0x1.fffffep127f), 0x7f80);     /* rounds up to inf */
    assert_int_equal(kvk_f32_to_bf16(0x1p-133f), 0x0001);            /* subnormal kept */
    assert_true(isnan(kvk_bf16_to_f32(kvk_f32_to_bf16(NAN))));
    uint32_t snan_bits = 0x7f800001u; /* a payload only in the low bits must stay NaN */
    float snan;
    memcpy(&snan, &snan_bits, 4);
    assert_true(isnan(kvk_bf16_to_f32(kvk_f32_to_bf16(snan))));
    for (uint32_t h = 0; h < 65536; h++) {
        float f = kvk_bf16_to_f32((uint16_t)h);
        if (!isnan(f))
            assert_int_equal(kvk_f32_to_bf16(f), h);
    }
    /* Against double rounding arithmetic: the nearest of the two bf16 neighbours. */
    for (int i = 0; i < 1000000; i++) {
        uint32_t bits = (uint32_t)rng_u64() & 0x7effffffu;
        float f;
        memcpy(&f, &bits, 4);
        double lo = kvk_bf16_to_f32((uint16_t)(bits >> 16));
        double hi = kvk_bf16_to_f32((uint16_t)((bits >> 16) + 1));
        double got = kvk_bf16_to_f32(kvk_f32_to_bf16(f));
        double dlo = f - lo, dhi = hi - f;
        double want = dlo < dhi ? lo : dhi < dlo ? hi : (((bits >> 16) & 1) ? hi : lo);
        assert_true(got == want);
    }
}

/* ---- geometry and layout ---- */

static void test_geom(void **state)
{
    (void)state;
    kvk_geom g = { 4, 32, 8, 128, 16, KVK_F16 };
    assert_int_equal(kvk_geom_check(&g), 0);
    assert_int_equal(kvk_dtype_size(KVK_F32), 4);
    assert_int_equal(kvk_dtype_size(KVK_BF16), 2);
    assert_int_equal(kvk_page_bytes(&g), 4u * 8 * 2 * 16 * 128 * 2);
    assert_int_equal(kvk_block_offset(&g, 1, 2, 1), ((1u * 8 + 2) * 2 + 1) * 16 * 128 * 2);
    kvk_geom odd = { 1, 3, 1, 3, 1, KVK_F16 };
    assert_int_equal(kvk_geom_check(&odd), 0);
    assert_int_equal(kvk_page_bytes(&odd), 64); /* 12 bytes rounded up to 64 */
    kvk_geom bad = g;
    bad.q_heads = 12;
    assert_int_equal(kvk_geom_check(&bad), KV_ERR_INVAL);
    bad = g;
    bad.page_tokens = 0;
    assert_int_equal(kvk_geom_check(&bad), KV_ERR_INVAL);
    bad = g;
    bad.head_dim = KVK_MAX_HEAD_DIM + 1;
    assert_int_equal(kvk_geom_check(&bad), KV_ERR_INVAL);
    bad = g;
    bad.dtype = (kvk_dtype)7;
    assert_int_equal(kvk_geom_check(&bad), KV_ERR_INVAL);
    assert_int_equal(kvk_geom_check(NULL), KV_ERR_INVAL);
    kvk_attn_opts o = kvk_attn_opts_default();
    assert_true(o.causal == 1 && o.window_left == -1 && o.scale == 0 && !o.alibi && !o.rope);
}

/* kvk_write_kv puts each row where the layout says, rounded to the dtype, RoPE on K only. */
static void test_write_kv(void **state)
{
    (void)state;
    for (int dt = 0; dt < 3; dt++)
        for (int rope = 0; rope < 3; rope++) {
            tcase tc = base_case(4, 2, 16, 5, (kvk_dtype)dt);
            tc.opts.rope = (kvk_rope_mode)rope;
            add_item(&tc, 0, 13);
            add_item(&tc, 0, 4);
            arena a;
            arena_build(&a, &tc);
            arena_fill(&a, &tc);
            double tol = dt == KVK_F32 ? 1e-6 : dt == KVK_F16 ? 1e-3 : 8e-3;
            size_t row = 0;
            for (uint32_t i = 0; i < tc.n_items; i++)
                for (uint32_t pos = 0; pos < tc.n_new[i]; pos++, row++)
                    for (uint32_t h = 0; h < 2; h++) {
                        double k[16];
                        for (uint32_t d = 0; d < 16; d++)
                            k[d] = a.k[(row * 2 + h) * 16 + d];
                        if (rope)
                            rope_f64(k, 16, pos, (kvk_rope_mode)rope, 10000.0);
                        for (uint32_t d = 0; d < 16; d++) {
                            assert_true(fabs(page_elem(&a, i, pos, h, 0, d) - k[d]) <= tol);
                            assert_true(fabs(page_elem(&a, i, pos, h, 1, d)
                                             - a.v[(row * 2 + h) * 16 + d]) <= tol);
                        }
                    }
            arena_free(&a);
        }
}

/* ---- attention against the fp64 oracle ---- */

static void test_attn_gqa(void **state)
{
    (void)state;
    /* group sizes 1 .. 12: decode tiles of one to three query-vector quads, full or not */
    static const uint32_t heads[][2] = { { 4, 4 }, { 8, 2 }, { 8, 1 }, { 12, 3 }, { 32, 8 },
                                         { 6, 2 }, { 24, 4 }, { 12, 1 } };
    for (size_t i = 0; i < sizeof(heads) / sizeof(*heads); i++) {
        tcase tc = base_case(heads[i][0], heads[i][1], 64, 16, KVK_F16);
        add_item(&tc, 37, 1);
        add_item(&tc, 0, 21);
        add_item(&tc, 50, 3);
        run_case(&tc);
    }
}

static void test_attn_page_sizes(void **state)
{
    (void)state;
    static const uint32_t pts[] = { 1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 128, 256 };
    for (size_t i = 0; i < sizeof(pts) / sizeof(*pts); i++) {
        tcase tc = base_case(8, 2, 32, pts[i], KVK_F16);
        add_item(&tc, 100, 1);          /* decode, length not a multiple of the page */
        add_item(&tc, 0, 45);           /* prefill from empty */
        add_item(&tc, 13, 9);           /* chunked prefill on a partial page */
        run_case(&tc);
    }
}

static void test_attn_ragged_mixed(void **state)
{
    (void)state;
    tcase tc = base_case(16, 4, 128, 16, KVK_BF16);
    add_item(&tc, 300, 1);
    add_item(&tc, 0, 70);
    add_item(&tc, 1, 1);
    add_item(&tc, 0, 1);
    add_item(&tc, 129, 33);
    add_item(&tc, 64, 0);               /* no rows: must be skipped */
    add_item(&tc, 17, 2);
    run_case(&tc);
}

static void test_attn_dtypes_dims(void **state)
{
    (void)state;
    static const uint32_t dims[] = { 8, 20, 24, 40, 64, 72, 80, 96, 128, 256 };
    for (int dt = 0; dt < 3; dt++)
        for (size_t i = 0; i < sizeof(dims) / sizeof(*dims); i++) {
            tcase tc = base_case(4, 2, dims[i], 16, (kvk_dtype)dt);
            add_item(&tc, 40, 2);
            add_item(&tc, 0, 19);
            run_case(&tc);
        }
}

static void test_attn_noncausal(void **state)
{
    (void)state;
    tcase tc = base_case(8, 2, 64, 16, KVK_F32);
    tc.opts.causal = 0;
    tc.opts.scale = 0.3f;
    add_item(&tc, 20, 17);
    add_item(&tc, 0, 40);
    run_case(&tc);
}

static void test_attn_window(void **state)
{
    (void)state;
    static const int32_t wins[] = { 0, 1, 7, 16, 33, 1000 };
    for (size_t i = 0; i < sizeof(wins) / sizeof(*wins); i++)
        for (int causal = 0; causal < 2; causal++) {
            tcase tc = base_case(8, 4, 64, 8, KVK_F16);
            tc.opts.window_left = wins[i];
            tc.opts.causal = causal;
            add_item(&tc, 90, 1);
            add_item(&tc, 0, 50);
            add_item(&tc, 30, 20);
            run_case(&tc);
        }
}

static void test_attn_softcap(void **state)
{
    (void)state;
    tcase tc = base_case(8, 2, 64, 16, KVK_F16);
    tc.opts.softcap = 5.0f;
    tc.qk_gain = 8.0f; /* logits up to ~|60|: the cap really bites */
    add_item(&tc, 77, 1);
    add_item(&tc, 0, 40);
    run_case(&tc);
}

static void test_attn_alibi(void **state)
{
    (void)state;
    tcase tc = base_case(8, 2, 64, 16, KVK_BF16);
    tc.use_alibi = 1;
    add_item(&tc, 77, 1);
    add_item(&tc, 5, 40);
    run_case(&tc);
}

/* Positions past 2^23, where floats no longer hold key + 0.5 exactly (masking and ALiBi take
 * the scalar path), and past 2^24, where they no longer hold the positions: a sliding window,
 * ALiBi, decode and prefill rows; one item just below 2^23 on the vector path. Only the
 * window's pages exist. */
static void test_attn_far_positions(void **state)
{
    (void)state;
    tcase tc = base_case(8, 2, 64, 16, KVK_F16);
    tc.opts.window_left = 70;
    tc.use_alibi = 1;
    add_item(&tc, (1u << 24) + 37, 1);
    add_item(&tc, (1u << 23) + 5, 20);
    add_item(&tc, (1u << 23) - 40, 20);
    run_case(&tc);
}

static void test_attn_rope(void **state)
{
    (void)state;
    for (int mode = 1; mode <= 2; mode++) {
        tcase tc = base_case(8, 2, 64, 16, KVK_F32);
        tc.opts.rope = (kvk_rope_mode)mode;
        tc.opts.rope_theta = mode == 1 ? 0.0f : 500000.0f;
        add_item(&tc, 300, 1);
        add_item(&tc, 0, 30);
        run_case(&tc);
    }
}

static void test_attn_all_options(void **state)
{
    (void)state;
    tcase tc = base_case(12, 4, 128, 7, KVK_F16);
    tc.opts.rope = KVK_ROPE_HALF;
    tc.opts.softcap = 20.0f;
    tc.opts.window_left = 40;
    tc.use_alibi = 1;
    tc.qk_gain = 3.0f;
    add_item(&tc, 200, 1);
    add_item(&tc, 0, 60);
    add_item(&tc, 50, 5);
    run_case(&tc);
}

/* Long contexts: the SIMD decode path splits keys across threads and merges the parts. */
static void test_attn_long_decode(void **state)
{
    (void)state;
    tcase tc = base_case(8, 2, 128, 16, KVK_F16);
    add_item(&tc, 6000, 1);
    add_item(&tc, 2500, 2);
    add_item(&tc, 1, 1);
    run_case(&tc);
}

static void test_attn_prefill_tiles(void **state)
{
    (void)state;
    tcase tc = base_case(8, 2, 64, 16, KVK_F16);
    add_item(&tc, 0, 150);
    add_item(&tc, 64, 64);
    run_case(&tc);
    tcase mqa = base_case(16, 1, 64, 32, KVK_BF16);
    add_item(&mqa, 10, 70);
    run_case(&mqa);
    /* a long prefill (larger tiles) in one call with a short one and a decode row */
    tcase mixed = base_case(8, 2, 64, 16, KVK_F16);
    add_item(&mixed, 100, 600);
    add_item(&mixed, 0, 30);
    add_item(&mixed, 700, 1);
    run_case(&mixed);
}

/* ---- merge_states ---- */

/* Attention over keys [0, s) and [s, n) (two items with split page tables, non-causal so
 * positions do not matter) merged equals attention over [0, n). */
static void test_merge_states_split(void **state)
{
    (void)state;
    const uint32_t pt = 8, n = 200, split = 96, D = 64, qh = 4, rows = 3;
    tcase tc = base_case(qh, 2, D, pt, KVK_F16);
    tc.opts.causal = 0;
    add_item(&tc, n - rows, rows);
    arena a;
    arena_build(&a, &tc);
    arena_fill(&a, &tc);
    kvk_item lo = { a.tables[0], 0, 0 }, hi = { a.tables[0] + split / pt, 0, 0 };
    /* Keys only: zero new rows, but kvk_attn needs rows, so each part takes the queries as
     * "new rows" at the end of its own key set; non-causal attention ignores positions. */
    lo.n_kv = split - rows;
    lo.n_new = rows;
    hi.n_kv = n - split - rows;
    hi.n_new = rows;
    size_t no = (size_t)rows * qh * D, nl = (size_t)rows * qh;
    float *o_full = malloc(no * 4), *o_a = malloc(no * 4), *o_b = malloc(no * 4);
    float *l_full = malloc(nl * 4), *l_a = malloc(nl * 4), *l_b = malloc(nl * 4);
    assert_int_equal(kvk_attn(&a.g, &a.pg, 1, &a.items[0], 1, a.q, o_full, l_full, &tc.opts, NULL), 0);
    assert_int_equal(kvk_attn(&a.g, &a.pg, 1, &lo, 1, a.q, o_a, l_a, &tc.opts, NULL), 0);
    assert_int_equal(kvk_attn(&a.g, &a.pg, 1, &hi, 1, a.q, o_b, l_b, &tc.opts, NULL), 0);
    /* The two halves really differ from the whole (the test can fail). */
    assert_true(fabsf(l_a[0] - l_full[0]) > 1e-3f && fabsf(o_a[0] - o_full[0]) > 1e-5f);
    kvk_merge_states((uint32_t)nl, D, o_a, l_a, o_b, l_b, o_a, l_a); /* in place into a */
    double *ro = malloc(no * 8), *rl = malloc(nl * 8);
    for (size_t i = 0; i < no; i++)
        ro[i] = o_full[i];
    for (size_t i = 0; i < nl; i++)
        rl[i] = l_full[i];
    compare(o_a, ro, no, l_a, rl, nl, "merge");
    free(ro);
    free(rl);
    free(o_full);
    free(o_a);
    free(o_b);
    free(l_full);
    free(l_a);
    free(l_b);
    arena_free(&a);
}

static void test_merge_states_empty(void **state)
{
    (void)state;
    float oa[4] = { 1, 2, 3, 4 }, ob[4] = { 5, 6, 7, 8 }, o[4];
    float la[2] = { -INFINITY, 0.5f }, lb[2] = { -INFINITY, -INFINITY }, l[2];
    kvk_merge_states(2, 2, oa, la, ob, lb, o, l);
    assert_true(o[0] == 0 && o[1] == 0 && l[0] == -INFINITY); /* nothing seen on either side */
    assert_true(o[2] == 3 && o[3] == 4 && l[1] == 0.5f);      /* b empty: a unchanged */
    float la2[1] = { logf(1.0f) }, lb2[1] = { logf(3.0f) }, o2[2], l2[1];
    kvk_merge_states(1, 2, oa, la2, ob, lb2, o2, l2);
    assert_float_equal(o2[0], 0.25 * 1 + 0.75 * 5, 1e-6);
    assert_float_equal(l2[0], logf(4.0f), 1e-6);
}

/* ---- errors, pool, ISA ---- */

static void test_attn_invalid(void **state)
{
    (void)state;
    tcase tc = base_case(4, 2, 16, 4, KVK_F16);
    add_item(&tc, 5, 2);
    arena a;
    arena_build(&a, &tc);
    arena_fill(&a, &tc);
    float o[2 * 4 * 16], lse[8];
    for (size_t i = 0; i < 128; i++)
        o[i] = 42.0f;
    kvk_attn_opts op = kvk_attn_opts_default();
    a.tables[0][1] = a.pg.n_pages; /* a page index out of range */
    assert_int_equal(kvk_attn(&a.g, &a.pg, 1, a.items, 1, a.q, o, lse, &op, NULL), KV_ERR_INVAL);
    a.tables[0][1] = 0;
    assert_int_equal(kvk_attn(&a.g, &a.pg, 2, a.items, 1, a.q, o, lse, &op, NULL), KV_ERR_INVAL);
    assert_int_equal(kvk_attn(&a.g, &a.pg, 1, a.items, 1, NULL, o, lse, &op, NULL), KV_ERR_INVAL);
    op.window_left = -2;
    assert_int_equal(kvk_attn(&a.g, &a.pg, 1, a.items, 1, a.q, o, lse, &op, NULL), KV_ERR_INVAL);
    op = kvk_attn_opts_default();
    op.softcap = NAN;
    assert_int_equal(kvk_attn(&a.g, &a.pg, 1, a.items, 1, a.q, o, lse, &op, NULL), KV_ERR_INVAL);
    op = kvk_attn_opts_default();
    op.rope = (kvk_rope_mode)9;
    assert_int_equal(kvk_write_kv(&a.g, &a.pg, 1, a.items, 1, a.k, a.v, &op), KV_ERR_INVAL);
    for (size_t i = 0; i < 128; i++)
        assert_true(o[i] == 42.0f);
    kvk_geom g3 = a.g;
    g3.head_dim = 15; /* odd: no RoPE */
    op = kvk_attn_opts_default();
    op.rope = KVK_ROPE_HALF;
    assert_int_equal(kvk_attn(&g3, &a.pg, 1, a.items, 1, a.q, o, lse, &op, NULL), KV_ERR_INVAL);
    assert_int_equal(kvk_attn(&a.g, &a.pg, 1, NULL, 0, NULL, NULL, NULL, NULL, NULL), 0);
    arena_free(&a);
}

static void test_pool(void **state)
{
    (void)state;
    assert_null(kvk_pool_create(0));
    assert_int_equal(kvk_pool_threads(NULL), 1);
    for (int n = 1; n <= 4; n++) {
        kvk_pool *p = kvk_pool_create(n);
        assert_non_null(p);
        assert_int_equal(kvk_pool_threads(p), n);
        kvk_pool_destroy(&p);
        assert_null(p);
        kvk_pool_destroy(&p); /* harmless twice */
    }
    /* Thread counts 1..3 give the same answer (checked by run_case with 2; here 3 and 1). */
    tcase tc = base_case(8, 2, 64, 16, KVK_F16);
    add_item(&tc, 900, 1);
    add_item(&tc, 0, 33);
    arena a;
    arena_build(&a, &tc);
    arena_fill(&a, &tc);
    size_t n_o = (size_t)a.rows * 8 * 64;
    float *o1 = malloc(n_o * 4), *o3 = malloc(n_o * 4);
    kvk_pool *p1 = kvk_pool_create(1), *p3 = kvk_pool_create(3);
    assert_int_equal(kvk_attn(&a.g, &a.pg, 1, a.items, 2, a.q, o1, NULL, NULL, p1), 0);
    assert_int_equal(kvk_attn(&a.g, &a.pg, 1, a.items, 2, a.q, o3, NULL, NULL, p3), 0);
    for (size_t i = 0; i < n_o; i++)
        assert_true(fabsf(o1[i] - o3[i]) <= 1e-5f);
    kvk_pool_destroy(&p1);
    kvk_pool_destroy(&p3);
    free(o1);
    free(o3);
    arena_free(&a);
}

static void test_isa(void **state)
{
    (void)state;
    const char *best = kvk_isa_name();
    assert_true(!strcmp(best, "scalar") || !strcmp(best, "avx2") || !strcmp(best, "avx512"));
    assert_int_equal(kvk_isa_set("sse9"), KV_ERR_INVAL);
    assert_int_equal(kvk_isa_set(NULL), KV_ERR_INVAL);
    assert_int_equal(kvk_isa_set("scalar"), 0);
    assert_string_equal(kvk_isa_name(), "scalar");
    assert_int_equal(kvk_isa_set(best), 0);
    printf("# best ISA: %s\n", best);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_f16_roundtrip_all),
        cmocka_unit_test(test_f16_rounding),
        cmocka_unit_test(test_bf16_rounding),
        cmocka_unit_test(test_geom),
        cmocka_unit_test(test_write_kv),
        cmocka_unit_test(test_attn_gqa),
        cmocka_unit_test(test_attn_page_sizes),
        cmocka_unit_test(test_attn_ragged_mixed),
        cmocka_unit_test(test_attn_dtypes_dims),
        cmocka_unit_test(test_attn_noncausal),
        cmocka_unit_test(test_attn_window),
        cmocka_unit_test(test_attn_softcap),
        cmocka_unit_test(test_attn_alibi),
        cmocka_unit_test(test_attn_far_positions),
        cmocka_unit_test(test_attn_rope),
        cmocka_unit_test(test_attn_all_options),
        cmocka_unit_test(test_attn_long_decode),
        cmocka_unit_test(test_attn_prefill_tiles),
        cmocka_unit_test(test_merge_states_split),
        cmocka_unit_test(test_merge_states_empty),
        cmocka_unit_test(test_attn_invalid),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_isa),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
