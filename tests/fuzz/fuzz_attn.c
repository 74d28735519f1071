/* fuzz_attn — differential fuzzing of kvk_attn's planner and tile kernels: a ragged batch
 * read from the input (geometry, options, items, page tables with shared prefixes) runs on
 * every SIMD instruction set this CPU has, with a 2-thread pool (so long keys are split into
 * parts), and each result must match the scalar reference within 1e-4 of its largest output
 * (lse within 1e-4, infinities exactly). The reference walks every item's own page table key
 * by key; the SIMD paths group items that share pages, split, merge: any slip in that
 * bookkeeping shows as a mismatch (abort), any overrun as a sanitizer report. amx is left
 * out (bf16 rounding needs a looser, logit-dependent tolerance).
 *
 * Input (tests/fuzz/fuzz_attn_input.h reads it):
 *   byte 0  heads: index into fa_heads          byte 1  head_dim: index into fa_dims
 *   byte 2  page_tokens - 1 (mod 40)            byte 3  bits 0-1 dtype, 2 causal, 3 window,
 *                                                       4 softcap, 5 ALiBi, 6-7 RoPE mode
 *   byte 4  window_left / 4, softcap - 4        byte 5  bits 0-2 items - 1, 3 far (positions
 *                                                       past 2^23, a window, page >= 32),
 *                                                       4 dup (any pages may be shared),
 *                                                       5 the SIMD runs without a pool
 *   per item 5 bytes: n_kv (little-endian uint16, mod FA_MAX_KV), n_new (bit 7: mod 70,
 *           else mod 5), share_of (mod item index: an earlier item), share_pages
 *   the rest seeds the values of Q, K and V.
 * Table entries before the first page an item's rows can see point to page 0 (a window's
 * placeholders, as the unit tests' arena has them); pages start zeroed, so whatever a call
 * reads is finite and the same for every ISA. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kvkernels.h"
#include "tests/fuzz/fuzz_attn_input.h"

static kvk_pool *pool;

static uint64_t rng;

static float rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((double)(rng >> 11) * 0x1p-52 - 1.0);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p)
        abort();
    return p;
}

static void check(const char *isa, const float *o, const float *ref, size_t n_o,
                  const float *lse, const float *lse_ref, size_t n_lse)
{
    double mx = 0, err = 0;
    for (size_t i = 0; i < n_o; i++)
        mx = fmax(mx, fabs(ref[i]));
    for (size_t i = 0; i < n_o; i++) {
        if (isnan(o[i]) || isnan(ref[i])) {
            fprintf(stderr, "%s: NaN at output %zu\n", isa, i);
            abort();
        }
        err = fmax(err, fabs(o[i] - ref[i]));
    }
    if (err > FA_TOL * mx + 1e-30) {
        fprintf(stderr, "%s: max |o - ref| %g against max |ref| %g\n", isa, err, mx);
        abort();
    }
    for (size_t i = 0; i < n_lse; i++)
        if (isinf(lse_ref[i]) ? lse[i] != lse_ref[i]
                              : !(fabs(lse[i] - lse_ref[i]) <= FA_TOL * fmax(1.0, fabs(lse_ref[i])))) {
            fprintf(stderr, "%s: lse %zu: %g against %g\n", isa, i, lse[i], lse_ref[i]);
            abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fa_case fc;
    if (!fa_parse(data, size, &fc))
        return 0;
    if (!pool)
        pool = kvk_pool_create(2);
    if (!pool)
        abort();
    const kvk_geom *g = &fc.g;
    uint32_t pt = g->page_tokens, n = fc.n_items, total = 0, rows = 0;
    uint32_t np[FA_MAX_ITEMS], own[FA_MAX_ITEMS];
    for (uint32_t i = 0; i < n; i++) {
        np[i] = (fc.items[i].n_kv + fc.items[i].n_new + pt - 1) / pt;
        own[i] = fc.first[i] / pt > fc.share_pages[i] ? fc.first[i] / pt : fc.share_pages[i];
        own[i] = own[i] < np[i] ? own[i] : np[i];
        total += np[i] - own[i];
        rows += fc.items[i].n_new;
    }
    size_t pb = kvk_page_bytes(g);
    kvk_pages pg = { xcalloc(total + 1, pb), total + 1 };
    uint32_t *tables[FA_MAX_ITEMS], next = 1; /* page 0 is never used */
    kvk_item items[FA_MAX_ITEMS];
    rng = fc.seed | 1;
    for (uint32_t i = 0; i < n; i++) {
        tables[i] = xcalloc(np[i] + 1, sizeof(uint32_t));
        for (uint32_t p = 0; p < np[i]; p++)
            tables[i][p] = p < fc.share_pages[i] ? tables[fc.share_of[i]][p]
                           : p < own[i] ? 0 : next++;
        items[i] = (kvk_item){ tables[i], fc.items[i].n_kv, fc.items[i].n_new };
        /* the old K/V its rows see on its own pages; shared pages are their owner's */
        uint32_t j0 = own[i] * pt > fc.first[i] ? own[i] * pt : fc.first[i];
        j0 = j0 < fc.items[i].n_kv ? j0 : fc.items[i].n_kv;
        kvk_item old = { tables[i], j0, fc.items[i].n_kv - j0 };
        size_t nkv = ((size_t)old.n_new + 1) * g->kv_heads * g->head_dim;
        float *k = xcalloc(nkv, sizeof(float)), *v = xcalloc(nkv, sizeof(float));
        for (size_t e = 0; e < nkv; e++)
            k[e] = rnd(), v[e] = rnd();
        if (kvk_write_kv(g, &pg, 0, &old, 1, k, v, &fc.opts) != 0)
            abort();
        free(k);
        free(v);
    }
    size_t nq = ((size_t)rows + 1) * g->q_heads * g->head_dim;
    size_t nk = ((size_t)rows + 1) * g->kv_heads * g->head_dim, nl = (size_t)rows * g->q_heads;
    float *q = xcalloc(nq, sizeof(float)), *k = xcalloc(nk, sizeof(float));
    float *v = xcalloc(nk, sizeof(float));
    for (size_t e = 0; e < nq; e++)
        q[e] = rnd() * fc.q_gain;
    for (size_t e = 0; e < nk; e++)
        k[e] = rnd(), v[e] = rnd();
    if (kvk_write_kv(g, &pg, 0, items, n, k, v, &fc.opts) != 0)
        abort();
    float *ref = xcalloc(nq, sizeof(float)), *o = xcalloc(nq, sizeof(float));
    float *lse_ref = xcalloc(nl + 1, sizeof(float)), *lse = xcalloc(nl + 1, sizeof(float));
    const char *best = kvk_isa_name();
    if (kvk_isa_set("scalar") || kvk_attn(g, &pg, 0, items, n, q, ref, lse_ref, &fc.opts, NULL))
        abort();
    static const char *const simd[] = { "avx2", "avx512" };
    for (int s = 0; s < 2; s++) {
        if (kvk_isa_set(simd[s]) != 0)
            continue;
        memset(o, 0xff, nq * sizeof(float)); /* NaN: an output never written fails */
        memset(lse, 0xff, (nl + 1) * sizeof(float));
        if (kvk_attn(g, &pg, 0, items, n, q, o, lse, &fc.opts, fc.no_pool ? NULL : pool) != 0)
            abort();
        check(simd[s], o, ref, (size_t)rows * g->q_heads * g->head_dim, lse, lse_ref, nl);
    }
    kvk_isa_set(best);
    for (uint32_t i = 0; i < n; i++)
        free(tables[i]);
    free(pg.base);
    free(q);
    free(k);
    free(v);
    free(ref);
    free(o);
    free(lse_ref);
    free(lse);
    return 0;
}
