/* test_kernels.c — unit tests of libkvkernels: fp16/bf16 conversions, geometry and page
 * layout, kvk_write_kv, attention against the fp64 oracle of attn_oracle.h (every case on
 * every instruction set this CPU supports, with and without a thread pool), merging of
 * partial states, errors, the thread pool and ISA selection. */
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
#include "kvk_internal.h"
#include "kvkernels.h"
#include "tests/unit/attn_oracle.h"

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
        uint32_t bits = (uint32_t)ao_rng_u64();
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
        uint32_t bits = (uint32_t)ao_rng_u64() & 0x7effffffu;
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

/* The published ALiBi slopes (BLOOM's get_slopes): 8 heads 2^-1 .. 2^-8; 12 heads the same
 * 8, then 2^-0.5, 2^-1.5, 2^-2.5, 2^-3.5 interleaved from the next power of two. */
static void test_alibi_slopes(void **state)
{
    (void)state;
    float s[12];
    kvk_alibi_slopes(8, 8.0f, s);
    for (int h = 0; h < 8; h++)
        assert_float_equal(s[h], ldexpf(1.0f, -(h + 1)), 0.0f);
    kvk_alibi_slopes(12, 8.0f, s);
    for (int h = 0; h < 8; h++)
        assert_float_equal(s[h], ldexpf(1.0f, -(h + 1)), 0.0f);
    for (int h = 8; h < 12; h++)
        assert_float_equal(s[h], (float)exp2(-0.5 - (h - 8)), 1e-7f);
    kvk_alibi_slopes(1, 8.0f, s);
    assert_float_equal(s[0], 1.0f / 256, 0.0f);
}

/* kvk_write_kv puts each row where the layout says, rounded to the dtype, RoPE on K only. */
static void test_write_kv(void **state)
{
    (void)state;
    for (int dt = 0; dt < 3; dt++)
        for (int rope = 0; rope < 3; rope++) {
            ao_case tc = ao_case_base(4, 2, 16, 5, (kvk_dtype)dt);
            tc.opts.rope = (kvk_rope_mode)rope;
            ao_case_add_item(&tc, 0, 13);
            ao_case_add_item(&tc, 0, 4);
            ao_arena a;
            ao_arena_init(&a, &tc);
            double tol = dt == KVK_F32 ? 1e-6 : dt == KVK_F16 ? 1e-3 : 8e-3;
            size_t row = 0;
            for (uint32_t i = 0; i < tc.n_items; i++)
                for (uint32_t pos = 0; pos < tc.n_new[i]; pos++, row++)
                    for (uint32_t h = 0; h < 2; h++) {
                        double k[16];
                        for (uint32_t d = 0; d < 16; d++)
                            k[d] = a.k[(row * 2 + h) * 16 + d];
                        if (rope)
                            ao_rope(k, 16, pos, (kvk_rope_mode)rope, 10000.0);
                        for (uint32_t d = 0; d < 16; d++) {
                            assert_true(fabs(ao_page_elem(&a, i, pos, h, 0, d) - k[d]) <= tol);
                            assert_true(fabs(ao_page_elem(&a, i, pos, h, 1, d)
                                             - a.v[(row * 2 + h) * 16 + d]) <= tol);
                        }
                    }
            ao_arena_free(&a);
        }
}

/* On every ISA, kvk_write_kv stores each value exactly as kvk_f32_to_f16 / kvk_f32_to_bf16
 * round it, bit for bit: ties, subnormals, the overflow threshold, infinities, NaNs with
 * payloads, random bit patterns; a head_dim (40) that leaves a tail after the vectors. */
static void test_write_kv_bits(void **state)
{
    (void)state;
    static const char *const isas[] = { "scalar", "avx2", "avx512", "amx" };
    static const uint32_t special[] = {
        0x00000000, 0x80000000, 0x00000001, 0x807fffff, 0x33000000, 0x33000001, 0x337fffff,
        0x38800000, 0x387fc000, 0x387fe000, 0x3f801000, 0x3f803000, 0x3f800fff, 0x477fefff,
        0x477ff000, 0x477fe000, 0xc77ff000, 0x7f7fffff, 0xff7fffff, 0x7f800000, 0xff800000,
        0x7f800001, 0x7fc00000, 0xffa5a5a5, 0x7fbfffff, 0x3f808000, 0x3f818000, 0x3f80ffff,
    };
    const char *best = kvk_isa_name();
    for (int dt = 1; dt < 3; dt++) {
        kvk_geom g = { 1, 1, 1, 40, 4, (kvk_dtype)dt };
        const uint32_t n = 6, N = n * 40;
        size_t pb = kvk_page_bytes(&g);
        uint8_t *base = calloc(2, pb);
        float *k = malloc(N * sizeof(float)), *v = malloc(N * sizeof(float));
        assert_non_null(base);
        assert_non_null(k);
        assert_non_null(v);
        uint32_t x = 12345;
        for (uint32_t i = 0; i < N; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            uint32_t bits = i < 28 ? special[i] : i % 3 ? x : (x & 0x83ffffff) | 0x38000000;
            memcpy(&k[i], &bits, 4);
            bits ^= 0x80000000;
            memcpy(&v[i], &bits, 4);
        }
        uint32_t pages[2] = { 1, 0 };
        kvk_item it = { pages, 0, n };
        kvk_pages pg = { base, 2 };
        for (size_t s = 0; s < sizeof(isas) / sizeof(*isas); s++) {
            if (kvk_isa_set(isas[s]))
                continue;
            memset(base, 0, 2 * pb);
            assert_int_equal(kvk_write_kv(&g, &pg, 0, &it, 1, k, v, NULL), 0);
            for (uint32_t i = 0; i < N; i++)
                for (int kind = 0; kind < 2; kind++) {
                    uint32_t t = i / 40;
                    float f = kind ? v[i] : k[i];
                    uint16_t want = dt == KVK_F16 ? kvk_f32_to_f16(f) : kvk_f32_to_bf16(f), got;
                    memcpy(&got, base + pages[t / 4] * pb + kvk_block_offset(&g, 0, 0, kind)
                                     + ((t % 4) * 40 + i % 40) * 2, 2);
                    if (got != want)
                        fail_msg("isa %s dtype %d element %u kind %d: %#06x, want %#06x",
                                 isas[s], dt, i, kind, got, want);
                }
        }
        free(base);
        free(k);
        free(v);
    }
    assert_int_equal(kvk_isa_set(best), 0);
}

/* RoPE tables walked position by position (kvk_write_kv, kvk_attn's Q tables) stay within a
 * float's rounding of the ones computed afresh, over several anchors, and after a jump; at
 * huge positions within the rounding of the angle itself (pos * freq in double: 2^-53 of
 * pos), which both carry. */
static void test_rope_walk(void **state)
{
    (void)state;
    static const uint32_t starts[] = { 0, 1000, 3000000000u, 0xfffffffeu - 310 };
    static const uint32_t dims[] = { 128, 80 };
    static const float thetas[] = { 10000.0f, 1e6f };
    float got[KVK_MAX_HEAD_DIM], want[KVK_MAX_HEAD_DIM];
    double worst = 0; /* over the tolerance of each position */
    for (int di = 0; di < 2; di++)
        for (int ti = 0; ti < 2; ti++) {
            kvk_rope_walk w;
            kvk__rope_walk_init(&w, dims[di], thetas[ti]);
            for (int si = 0; si < 4; si++)
                for (uint32_t k = 0; k < 300; k++) {
                    uint32_t pos = starts[si] + k + (k >= 200 ? 7 : 0); /* a jump at 200 */
                    kvk__rope_walk_at(&w, pos, got);
                    kvk__rope_table(want, dims[di], pos, thetas[ti]);
                    double tol = 1.2e-7 + 2.0 * pos * 0x1p-53; /* a float ulp near 1 */
                    for (uint32_t i = 0; i < dims[di]; i++)
                        worst = fmax(worst, fabs((double)got[i] - want[i]) / tol);
                }
        }
    assert_true(worst <= 1.0);
}

/* K rotated by RoPE is the same bit for bit however its rows are split into calls (the
 * tables of a position do not depend on the walk that reached it): 300 rows written in one
 * call, in calls of 37 rows, and one row at a time, at positions past 3 million (where two
 * ways of reaching an angle differ the most: about 1e-10). The page table maps the
 * positions before them, never written, to page 0. */
static void test_write_kv_splits(void **state)
{
    (void)state;
    kvk_geom g = { 1, 2, 1, 128, 16, KVK_F32 };
    const uint32_t n0 = 3000070, n = 300, np = n / 16 + 2, nt = (n0 + n + 15) / 16;
    size_t pb = kvk_page_bytes(&g);
    uint8_t *base = calloc(np, pb), *once = malloc(np * pb);
    float *k = malloc(sizeof(float) * n * 128), *v = malloc(sizeof(float) * n * 128);
    uint32_t *pages = calloc(nt, sizeof(uint32_t));
    assert_non_null(base);
    assert_non_null(once);
    assert_non_null(k);
    assert_non_null(v);
    assert_non_null(pages);
    for (uint32_t i = n0 / 16; i < nt; i++)
        pages[i] = np - 1 - (i - n0 / 16);
    for (uint32_t i = 0; i < n * 128; i++) {
        k[i] = sinf((float)i * 0.37f);
        v[i] = cosf((float)i * 0.11f);
    }
    kvk_pages pg = { base, np };
    kvk_attn_opts o = kvk_attn_opts_default();
    o.rope = KVK_ROPE_HALF;
    o.rope_theta = 500000.0f;
    kvk_item whole = { pages, n0, n };
    assert_int_equal(kvk_write_kv(&g, &pg, 0, &whole, 1, k, v, &o), 0);
    memcpy(once, base, np * pb);
    static const uint32_t steps[] = { 37, 1 };
    for (int s = 0; s < 2; s++) {
        memset(base, 0, np * pb);
        for (uint32_t r = 0; r < n; r += steps[s]) {
            uint32_t m = n - r < steps[s] ? n - r : steps[s];
            kvk_item part = { pages, n0 + r, m };
            assert_int_equal(kvk_write_kv(&g, &pg, 0, &part, 1, k + (size_t)r * 128,
                                          v + (size_t)r * 128, &o), 0);
        }
        assert_memory_equal(base, once, np * pb);
    }
    free(base);
    free(once);
    free(k);
    free(v);
    free(pages);
}

/* kvk_copy_tokens copies the first n tokens of one layer, every head, K and V, and nothing
 * else; bad arguments change nothing. */
static void test_copy_tokens(void **state)
{
    (void)state;
    for (int dt = 0; dt < 3; dt++) {
        kvk_geom g = { 3, 4, 2, 16, 5, (kvk_dtype)dt };
        size_t pb = kvk_page_bytes(&g), es = kvk_dtype_size(g.dtype), row = 16 * es;
        uint8_t *base = malloc(4 * pb), *before = malloc(4 * pb);
        assert_non_null(base);
        assert_non_null(before);
        for (size_t i = 0; i < 4 * pb; i++)
            base[i] = (uint8_t)(i * 131 + (i >> 9));
        memcpy(before, base, 4 * pb);
        kvk_pages pg = { base, 4 };
        assert_int_equal(kvk_copy_tokens(&g, &pg, 1, 2, 0, 3), 0);
        for (uint32_t layer = 0; layer < 3; layer++)
            for (uint32_t h = 0; h < 2; h++)
                for (int kind = 0; kind < 2; kind++)
                    for (uint32_t t = 0; t < 5; t++) {
                        size_t off = kvk_block_offset(&g, layer, h, kind) + t * row;
                        const uint8_t *want = layer == 1 && t < 3 ? before + 2 * pb + off
                                                                  : before + off;
                        assert_memory_equal(base + off, want, row);
                    }
        assert_memory_equal(base + pb, before + pb, 3 * pb); /* pages 1..3 untouched */
        memcpy(before, base, 4 * pb);
        assert_int_equal(kvk_copy_tokens(&g, &pg, 3, 2, 0, 3), KV_ERR_INVAL);
        assert_int_equal(kvk_copy_tokens(&g, &pg, 0, 4, 0, 3), KV_ERR_INVAL);
        assert_int_equal(kvk_copy_tokens(&g, &pg, 0, 2, 4, 3), KV_ERR_INVAL);
        assert_int_equal(kvk_copy_tokens(&g, &pg, 0, 2, 2, 3), KV_ERR_INVAL);
        assert_int_equal(kvk_copy_tokens(&g, &pg, 0, 2, 0, 6), KV_ERR_INVAL);
        assert_memory_equal(base, before, 4 * pb);
        free(base);
        free(before);
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
        ao_case tc = ao_case_base(heads[i][0], heads[i][1], 64, 16, KVK_F16);
        ao_case_add_item(&tc, 37, 1);
        ao_case_add_item(&tc, 0, 21);
        ao_case_add_item(&tc, 50, 3);
        ao_run_case(&tc);
    }
}

static void test_attn_page_sizes(void **state)
{
    (void)state;
    static const uint32_t pts[] = { 1, 2, 3, 5, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 128, 256 };
    for (size_t i = 0; i < sizeof(pts) / sizeof(*pts); i++) {
        ao_case tc = ao_case_base(8, 2, 32, pts[i], KVK_F16);
        ao_case_add_item(&tc, 100, 1);          /* decode, length not a multiple of the page */
        ao_case_add_item(&tc, 0, 45);           /* prefill from empty */
        ao_case_add_item(&tc, 13, 9);           /* chunked prefill on a partial page */
        ao_run_case(&tc);
    }
}

static void test_attn_ragged_mixed(void **state)
{
    (void)state;
    ao_case tc = ao_case_base(16, 4, 128, 16, KVK_BF16);
    ao_case_add_item(&tc, 300, 1);
    ao_case_add_item(&tc, 0, 70);
    ao_case_add_item(&tc, 1, 1);
    ao_case_add_item(&tc, 0, 1);
    ao_case_add_item(&tc, 129, 33);
    ao_case_add_item(&tc, 64, 0);               /* no rows: must be skipped */
    ao_case_add_item(&tc, 17, 2);
    ao_run_case(&tc);
}

static void test_attn_dtypes_dims(void **state)
{
    (void)state;
    static const uint32_t dims[] = { 8, 20, 24, 40, 64, 72, 80, 96, 128, 256 };
    for (int dt = 0; dt < 3; dt++)
        for (size_t i = 0; i < sizeof(dims) / sizeof(*dims); i++) {
            ao_case tc = ao_case_base(4, 2, dims[i], 16, (kvk_dtype)dt);
            ao_case_add_item(&tc, 40, 2);
            ao_case_add_item(&tc, 0, 19);
            ao_run_case(&tc);
        }
}

static void test_attn_noncausal(void **state)
{
    (void)state;
    ao_case tc = ao_case_base(8, 2, 64, 16, KVK_F32);
    tc.opts.causal = 0;
    tc.opts.scale = 0.3f;
    ao_case_add_item(&tc, 20, 17);
    ao_case_add_item(&tc, 0, 40);
    ao_run_case(&tc);
}

static void test_attn_window(void **state)
{
    (void)state;
    static const int32_t wins[] = { 0, 1, 7, 16, 33, 1000 };
    for (size_t i = 0; i < sizeof(wins) / sizeof(*wins); i++)
        for (int causal = 0; causal < 2; causal++) {
            ao_case tc = ao_case_base(8, 4, 64, 8, KVK_F16);
            tc.opts.window_left = wins[i];
            tc.opts.causal = causal;
            ao_case_add_item(&tc, 90, 1);
            ao_case_add_item(&tc, 0, 50);
            ao_case_add_item(&tc, 30, 20);
            ao_case_add_item(&tc, 60, 3); /* 6 query vectors: a narrow tile on every ISA */
            ao_run_case(&tc);
        }
}

static void test_attn_softcap(void **state)
{
    (void)state;
    ao_case tc = ao_case_base(8, 2, 64, 16, KVK_F16);
    tc.opts.softcap = 5.0f;
    tc.qk_gain = 8.0f; /* logits up to ~|60|: the cap really bites */
    ao_case_add_item(&tc, 77, 1);
    ao_case_add_item(&tc, 0, 40);
    ao_run_case(&tc);
}

static void test_attn_alibi(void **state)
{
    (void)state;
    ao_case tc = ao_case_base(8, 2, 64, 16, KVK_BF16);
    tc.use_alibi = 1;
    ao_case_add_item(&tc, 77, 1);
    ao_case_add_item(&tc, 5, 40);
    ao_run_case(&tc);
}

/* Positions past 2^23, where floats no longer hold key + 0.5 exactly (masking and ALiBi take
 * the scalar path), and past 2^24, where they no longer hold the positions: a sliding window,
 * ALiBi, decode and prefill rows; items of 2^23 - 1 keys (the last on the vector path) and of
 * 2^23 (the first on the scalar one). Only the window's pages exist. */
static void test_attn_far_positions(void **state)
{
    (void)state;
    ao_case tc = ao_case_base(8, 2, 64, 16, KVK_F16);
    tc.opts.window_left = 70;
    tc.use_alibi = 1;
    ao_case_add_item(&tc, (1u << 24) + 37, 1);
    ao_case_add_item(&tc, (1u << 23) + 5, 20);
    ao_case_add_item(&tc, (1u << 23) - 40, 20);
    ao_case_add_item(&tc, (1u << 23) - 2, 1);
    ao_case_add_item(&tc, (1u << 23) - 1, 1);
    ao_run_case(&tc);
}

static void test_attn_rope(void **state)
{
    (void)state;
    for (int mode = 1; mode <= 2; mode++) {
        ao_case tc = ao_case_base(8, 2, 64, 16, KVK_F32);
        tc.opts.rope = (kvk_rope_mode)mode;
        tc.opts.rope_theta = mode == 1 ? 0.0f : 500000.0f;
        ao_case_add_item(&tc, 300, 1);
        ao_case_add_item(&tc, 0, 30);
        ao_run_case(&tc);
    }
}

static void test_attn_all_options(void **state)
{
    (void)state;
    ao_case tc = ao_case_base(12, 4, 128, 7, KVK_F16);
    tc.opts.rope = KVK_ROPE_HALF;
    tc.opts.softcap = 20.0f;
    tc.opts.window_left = 40;
    tc.use_alibi = 1;
    tc.qk_gain = 3.0f;
    ao_case_add_item(&tc, 200, 1);
    ao_case_add_item(&tc, 0, 60);
    ao_case_add_item(&tc, 50, 5);
    ao_case_add_item(&tc, 120, 2); /* 6 query vectors of two rows: narrow on every ISA */
    ao_run_case(&tc);
}

/* Long contexts: the SIMD decode path splits keys across threads and merges the parts. */
static void test_attn_long_decode(void **state)
{
    (void)state;
    ao_case tc = ao_case_base(8, 2, 128, 16, KVK_F16);
    ao_case_add_item(&tc, 6000, 1);
    ao_case_add_item(&tc, 2500, 2);
    ao_case_add_item(&tc, 1, 1);
    ao_run_case(&tc);
}

/* Eight decode rows on one prefix of 18 pages, own tails of 0 .. 100 keys. */
static ao_case case_one_prefix(void)
{
    ao_case tc = ao_case_base(8, 2, 64, 16, KVK_F16);
    ao_case_add_item(&tc, 300, 1);
    for (uint32_t i = 1; i < 8; i++)
        ao_case_add_sharing(&tc, 288 + 15 * i, 1, 0, 18);
    return tc;
}

/* Nested prefixes: 0-2 share 20 pages; 3 shares 10 of them, 4-5 share 25 of 3's; rows of
 * 1..3 (speculative decode), a prefill and an item sharing nothing in the same call. */
static ao_case case_nested(void)
{
    ao_case tc = ao_case_base(8, 2, 64, 16, KVK_BF16);
    ao_case_add_item(&tc, 330, 2);
    ao_case_add_sharing(&tc, 320, 1, 0, 20);
    ao_case_add_sharing(&tc, 341, 3, 0, 20);
    ao_case_add_sharing(&tc, 400, 1, 0, 10);
    ao_case_add_sharing(&tc, 401, 1, 3, 25);
    ao_case_add_sharing(&tc, 420, 2, 3, 25);
    ao_case_add_item(&tc, 0, 40);
    ao_case_add_item(&tc, 77, 1);
    return tc;
}

/* Items sharing the pages of a prefix (a prefix-cache hit, forks) run as groups: the shared
 * keys once for every member's rows, then each member's own keys, merged. */
static void test_attn_shared_prefix(void **state)
{
    (void)state;
    ao_case one = case_one_prefix(), nest = case_nested();
    ao_run_case(&one);
    ao_run_case(&nest);
    /* every option at once: window (members see different parts of the prefix), ALiBi,
     * soft-cap, RoPE, lse; then the same without causal masking */
    for (int causal = 1; causal >= 0; causal--) {
        ao_case opt = ao_case_base(8, 2, 64, 16, KVK_F16);
        opt.opts.causal = causal;
        opt.opts.window_left = causal ? 150 : -1;
        opt.opts.softcap = 20.0f;
        opt.opts.rope = KVK_ROPE_HALF;
        opt.use_alibi = 1;
        opt.qk_gain = 3.0f;
        ao_case_add_item(&opt, 256, 1);
        ao_case_add_sharing(&opt, 300, 1, 0, 16);
        ao_case_add_sharing(&opt, 350, 2, 0, 16);
        ao_case_add_sharing(&opt, 260, 1, 0, 16);
        ao_run_case(&opt);
    }
    /* a long prefix (split into parts across threads), MHA (one q head per KV head: a
     * group of many rows) and MQA (16: few rows per group), fp32 and head_dim 128 */
    ao_case lng = ao_case_base(8, 2, 128, 32, KVK_F32);
    ao_case_add_item(&lng, 4000, 1);
    ao_case_add_sharing(&lng, 4100, 1, 0, 125);
    ao_case_add_sharing(&lng, 4001, 1, 0, 125);
    ao_run_case(&lng);
    static const uint32_t heads[][2] = { { 4, 4 }, { 16, 1 }, { 12, 3 } };
    for (size_t h = 0; h < sizeof(heads) / sizeof(*heads); h++) {
        ao_case g = ao_case_base(heads[h][0], heads[h][1], 64, 8, KVK_F16);
        ao_case_add_item(&g, 200, 1);
        for (uint32_t i = 1; i < 6; i++)
            ao_case_add_sharing(&g, 200 + i, 1, 0, 25);
        ao_run_case(&g);
    }
}

/* kvk__plan_groups on tc's arena: the number of groups, each item's in grp. */
static int groups_of(const ao_case *tc, uint32_t *grp)
{
    ao_arena a;
    kvk_call c;
    ao_arena_init(&a, tc);
    assert_int_equal(kvk__call_init(&c, &a.g, &a.pg, 1, a.items, tc->n_items, &tc->opts), 0);
    int n = kvk__plan_groups(&c, grp);
    ao_arena_free(&a);
    return n;
}

/* The planner groups tc's items as want numbers them (the same group where want has the same
 * number, whatever the planner calls it; none where -1). */
static void expect_groups(const ao_case *tc, const int *want, const char *what)
{
    uint32_t grp[AO_MAX_ITEMS];
    int n = groups_of(tc, grp), most = -1;
    for (uint32_t i = 0; i < tc->n_items; i++) {
        most = want[i] > most ? want[i] : most;
        if ((want[i] < 0) != (grp[i] == UINT32_MAX))
            fail_msg("%s: item %u %s a group", what, i, want[i] < 0 ? "in" : "not in");
        for (uint32_t j = 0; j < i; j++)
            if ((want[i] == want[j]) != (grp[i] == grp[j]))
                fail_msg("%s: items %u and %u %s", what, j, i,
                         want[i] == want[j] ? "apart" : "together");
    }
    assert_int_equal(n, most + 1);
}

/* Item 0 of n_kv0 keys and items 1, 2 sharing its first s1, s2 pages, under a window. */
static ao_case case_window(int32_t window, uint32_t n_kv0, uint32_t n_kv1, uint32_t s1,
                           uint32_t n_kv2, uint32_t s2)
{
    ao_case tc = ao_case_base(8, 2, 64, 16, KVK_F16);
    tc.opts.window_left = window;
    ao_case_add_item(&tc, n_kv0, 1);
    ao_case_add_sharing(&tc, n_kv1, 1, 0, s1);
    ao_case_add_sharing(&tc, n_kv2, 1, 0, s2);
    return tc;
}

static void test_plan_groups(void **state)
{
    (void)state;
    ao_case one = case_one_prefix(), nest = case_nested();
    expect_groups(&one, (const int[]){ 0, 0, 0, 0, 0, 0, 0, 0 }, "one prefix");
    /* two groups; the prefill and the item of its own stay out */
    expect_groups(&nest, (const int[]){ 0, 0, 0, 1, 1, 1, -1, -1 }, "nested");
    /* 48 shared keys: too few */
    ao_case shrt = ao_case_base(8, 2, 64, 16, KVK_F16);
    ao_case_add_item(&shrt, 100, 1);
    ao_case_add_sharing(&shrt, 120, 1, 0, 3);
    expect_groups(&shrt, (const int[]){ -1, -1 }, "short prefix");
    /* 8 q heads per KV head: 8 rows a group at most, so 6 items of 2 rows make a group of 4
     * and one of 2 (which items go together follows the sorted page tables) */
    ao_case big = ao_case_base(16, 2, 64, 16, KVK_F16);
    ao_case_add_item(&big, 200, 2);
    for (uint32_t i = 1; i < 6; i++)
        ao_case_add_sharing(&big, 200 + i, 2, 0, 12);
    uint32_t grp[AO_MAX_ITEMS], size[2] = { 0, 0 };
    assert_int_equal(groups_of(&big, grp), 2);
    for (uint32_t i = 0; i < 6; i++) {
        assert_true(grp[i] < 2);
        size[grp[i]]++;
    }
    assert_true(size[0] * size[1] == 8);
    /* windows: an item whose window starts past the shared pages stays out, and so does one
     * sharing only pages before the others' windows (placeholders, as a window leaves them) */
    ao_case win = case_window(100, 330, 340, 20, 600, 20);
    expect_groups(&win, (const int[]){ 0, 0, -1 }, "window past the prefix");
    ao_case ph = case_window(200, 1700, 1700, 106, 1700, 93);
    expect_groups(&ph, (const int[]){ 0, 0, -1 }, "placeholder pages");
}

static void test_attn_prefill_tiles(void **state)
{
    (void)state;
    ao_case tc = ao_case_base(8, 2, 64, 16, KVK_F16);
    ao_case_add_item(&tc, 0, 150);
    ao_case_add_item(&tc, 64, 64);
    ao_run_case(&tc);
    ao_case mqa = ao_case_base(16, 1, 64, 32, KVK_BF16);
    ao_case_add_item(&mqa, 10, 70);
    ao_run_case(&mqa);
    /* a long prefill (larger tiles) in one call with a short one and a decode row */
    ao_case mixed = ao_case_base(8, 2, 64, 16, KVK_F16);
    ao_case_add_item(&mixed, 100, 600);
    ao_case_add_item(&mixed, 0, 30);
    ao_case_add_item(&mixed, 700, 1);
    ao_run_case(&mixed);
    /* large tiles split into parts across threads (one head: few tiles, long keys), then
     * the same under a window with ALiBi */
    for (int opts = 0; opts < 2; opts++) {
        ao_case split = ao_case_base(1, 1, 64, 16, KVK_F16);
        split.opts.window_left = opts ? 700 : -1;
        split.use_alibi = opts;
        ao_case_add_item(&split, 3000, 512);
        ao_case_add_item(&split, 900, 1);
        ao_run_case(&split);
    }
}

/* ---- merge_states ---- */

/* Attention over keys [0, s) and [s, n) (two items with split page tables, non-causal so
 * positions do not matter) merged equals attention over [0, n). */
static void test_merge_states_split(void **state)
{
    (void)state;
    const uint32_t pt = 8, n = 200, split = 96, D = 64, qh = 4, rows = 3;
    ao_case tc = ao_case_base(qh, 2, D, pt, KVK_F16);
    tc.opts.causal = 0;
    ao_case_add_item(&tc, n - rows, rows);
    ao_arena a;
    ao_arena_init(&a, &tc);
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
    ao_compare(o_a, ro, no, l_a, rl, nl, AO_TOL, "merge");
    free(ro);
    free(rl);
    free(o_full);
    free(o_a);
    free(o_b);
    free(l_full);
    free(l_a);
    free(l_b);
    ao_arena_free(&a);
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
    ao_case tc = ao_case_base(4, 2, 16, 4, KVK_F16);
    ao_case_add_item(&tc, 5, 2);
    ao_arena a;
    ao_arena_init(&a, &tc);
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
    ao_arena_free(&a);
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
    /* Thread counts 1..3 give the same answer (checked by ao_run_case with 2; here 3 and 1). */
    ao_case tc = ao_case_base(8, 2, 64, 16, KVK_F16);
    ao_case_add_item(&tc, 900, 1);
    ao_case_add_item(&tc, 0, 33);
    ao_arena a;
    ao_arena_init(&a, &tc);
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
    ao_arena_free(&a);
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
    if (kvk_isa_set("amx") == 0) { /* never chosen by itself (bf16 rounding), only named */
        assert_string_equal(kvk_isa_name(), "amx");
        printf("# amx: available when named\n");
    }
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
        cmocka_unit_test(test_alibi_slopes),
        cmocka_unit_test(test_write_kv),
        cmocka_unit_test(test_write_kv_bits),
        cmocka_unit_test(test_copy_tokens),
        cmocka_unit_test(test_rope_walk),
        cmocka_unit_test(test_write_kv_splits),
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
        cmocka_unit_test(test_attn_shared_prefix),
        cmocka_unit_test(test_plan_groups),
        cmocka_unit_test(test_merge_states_split),
        cmocka_unit_test(test_merge_states_empty),
        cmocka_unit_test(test_attn_invalid),
        cmocka_unit_test(test_pool),
        cmocka_unit_test(test_isa),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
