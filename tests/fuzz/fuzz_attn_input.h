/* fuzz_attn_input.h — the input format of fuzz_attn (described there) and its parser,
 * shared with the seed generator (tests/fuzz/seeds.c), so a seed is exactly what the
 * target reads. */
#ifndef KVARENA_FUZZ_ATTN_INPUT_H
#define KVARENA_FUZZ_ATTN_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kvkernels.h"

#define FA_MAX_ITEMS 8
#define FA_MAX_KV 1200          /* keys of an item: enough for splits across 2 threads */
#define FA_MAX_WORK 8000000.0   /* query vectors x keys x head_dim of a call, at most */
#define FA_HEADER 6
#define FA_ITEM 5
#define FA_TOL 1e-4
#define FA_FAR ((1u << 23) + 3) /* "far" calls: positions past 2^23 (the scalar masking path) */

static const uint32_t fa_heads[8][2] = { { 1, 1 }, { 4, 4 }, { 8, 2 },  { 8, 1 },
                                         { 12, 3 }, { 16, 1 }, { 32, 8 }, { 6, 2 } };
static const uint32_t fa_dims[8] = { 8, 64, 80, 96, 128, 16, 32, 256 };

typedef struct fa_case {
    kvk_geom g;
    kvk_attn_opts opts;
    float q_gain;
    float slopes[64];
    uint32_t n_items;
    kvk_item items[FA_MAX_ITEMS];      /* n_kv and n_new only: pages are the target's */
    uint32_t share_of[FA_MAX_ITEMS], share_pages[FA_MAX_ITEMS];
    uint32_t first[FA_MAX_ITEMS];      /* the first key an item's rows can see */
    int no_pool;                       /* the SIMD runs without a pool (no splits) */
    uint64_t seed;
} fa_case;

/* Reads data into *fc; 0 if it is too short or the call would be too large. */
static inline int fa_parse(const uint8_t *d, size_t size, fa_case *fc)
{
    if (size < FA_HEADER)
        return 0;
    uint32_t n = 1 + d[5] % FA_MAX_ITEMS, far = (d[5] >> 3) & 1, dup = (d[5] >> 4) & 1;
    if (size < FA_HEADER + (size_t)n * FA_ITEM)
        return 0;
    const uint32_t *hd = fa_heads[d[0] % 8];
    *fc = (fa_case){ .g = { 1, hd[0], hd[1], fa_dims[d[1] % 8], 1 + d[2] % 40,
                            (kvk_dtype)(d[3] % 3) },
                     .opts = kvk_attn_opts_default(), .n_items = n };
    fc->opts.causal = (d[3] >> 2) & 1;
    fc->opts.window_left = (d[3] >> 3) & 1 ? 4 * d[4] : far ? 8 + 4 * d[4] : -1;
    fc->no_pool = (d[5] >> 5) & 1;
    if (far && fc->g.page_tokens < 32) /* page tables of 2^23 / 32 entries at most */
        fc->g.page_tokens += 32;
    fc->opts.softcap = (d[3] >> 4) & 1 ? 4.0f + d[4] : 0.0f;
    if ((d[3] >> 5) & 1) {
        kvk_alibi_slopes(fc->g.q_heads, 8.0f, fc->slopes);
        fc->opts.alibi = fc->slopes;
    }
    fc->opts.rope = (kvk_rope_mode)((d[3] >> 6) % 3);
    fc->q_gain = fc->opts.softcap > 0 || fc->opts.alibi ? 3.0f : 1.0f;
    uint32_t pt = fc->g.page_tokens;
    double work = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *it = d + FA_HEADER + (size_t)i * FA_ITEM;
        uint32_t n_kv = (it[0] | (uint32_t)it[1] << 8) % (FA_MAX_KV + 1) + far * FA_FAR;
        uint32_t n_new = it[2] & 0x80 ? (it[2] & 0x7f) % 70 : it[2] % 5;
        int32_t w = fc->opts.window_left;
        fc->items[i] = (kvk_item){ NULL, n_kv, n_new };
        fc->first[i] = w >= 0 && n_kv > (uint32_t)w ? n_kv - (uint32_t)w : 0;
        if (i) {
            /* pages wholly before both items' new rows; "dup": any of both items' pages
             * (new rows, partial pages, identical tables); far: counted from the first
             * page src's rows can see */
            uint32_t src = it[3] % i, n_src = fc->items[src].n_kv;
            uint32_t sh = it[4] + (far ? fc->first[src] / pt : 0);
            uint32_t lim = dup ? (n_kv + n_new + pt - 1) / pt : n_kv / pt;
            uint32_t lim_src = dup ? (n_src + fc->items[src].n_new + pt - 1) / pt : n_src / pt;
            lim = lim < lim_src ? lim : lim_src;
            fc->share_of[i] = src;
            fc->share_pages[i] = sh < lim ? sh : lim;
        }
        work += (double)n_new * fc->g.q_heads * (n_kv + n_new - fc->first[i]) * fc->g.head_dim;
    }
    if (work > FA_MAX_WORK)
        return 0;
    size_t at = FA_HEADER + (size_t)n * FA_ITEM;
    for (size_t i = at; i < size && i < at + 8; i++)
        fc->seed = fc->seed << 8 | d[i];
    return 1;
}

#endif
