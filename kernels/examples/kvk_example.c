/* kvk_example.c — libkvkernels on its own, as an engine would call it: no server, no
 * sockets, just page data, page tables and queries.
 *
 *   1. a sequence of 300 tokens is prefilled: its K/V written into pages, attention run;
 *   2. one ragged batch: a new 100-token prompt (prefill) beside a decode step of the first
 *      sequence, K/V written for both, one kvk_attn call on a 2-thread pool;
 *   3. a cascade: the decode row attends to keys 0..255 and 256..300 in two calls, and
 *      kvk_merge_states combines the parts (shared-prefix attention, as in FlashInfer).
 * Rows of 2 and the merged row of 3 are checked against attention computed here directly
 * (fp64, over the same fp16-rounded K/V). Build: make (build/kvk_example). Exit 0 if every
 * check passes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kvkernels.h"

#define Q_HEADS 8
#define KV_HEADS 2
#define HEAD_DIM 128
#define PAGE 16
#define MAX_TOKENS 320 /* per sequence */

/* One sequence: its page table and, for the direct check, its K/V as stored (fp16-rounded). */
typedef struct seq {
    uint32_t pages[MAX_TOKENS / PAGE];
    float k[MAX_TOKENS][KV_HEADS][HEAD_DIM], v[MAX_TOKENS][KV_HEADS][HEAD_DIM];
} seq;

static uint32_t rng = 12345;
static float rnd(void) /* uniform in [-1, 1) */
{
    rng = rng * 1664525u + 1013904223u;
    return (float)(rng >> 8) / (float)(1u << 23) - 1.0f;
}

/* New K/V rows of s at positions pos .. pos+n-1, in the layout kvk_write_kv takes; s keeps
 * them rounded as the pages will hold them. */
static void make_kv(seq *s, uint32_t pos, uint32_t n, float *k, float *v)
{
    for (size_t i = 0; i < (size_t)n * KV_HEADS * HEAD_DIM; i++) {
        k[i] = rnd();
        v[i] = rnd();
        (&s->k[pos][0][0])[i] = kvk_f16_to_f32(kvk_f32_to_f16(k[i]));
        (&s->v[pos][0][0])[i] = kvk_f16_to_f32(kvk_f32_to_f16(v[i]));
    }
}

/* Largest error of o (one row, all heads) against attention of q over keys [0, n_keys) of
 * s, relative to the largest |output|. */
static double check_row(const seq *s, const float *q, const float *o, uint32_t n_keys)
{
    double err = 0.0, omax = 1e-30, scale = 1.0 / sqrt(HEAD_DIM);
    for (uint32_t h = 0; h < Q_HEADS; h++) {
        uint32_t kvh = h / (Q_HEADS / KV_HEADS);
        double w[MAX_TOKENS], mx = -INFINITY, l = 0.0, ref[HEAD_DIM] = { 0 };
        for (uint32_t j = 0; j < n_keys; j++) {
            w[j] = 0.0;
            for (uint32_t d = 0; d < HEAD_DIM; d++)
                w[j] += (double)q[h * HEAD_DIM + d] * s->k[j][kvh][d];
            w[j] *= scale;
            mx = fmax(mx, w[j]);
        }
        for (uint32_t j = 0; j < n_keys; j++) {
            w[j] = exp(w[j] - mx);
            l += w[j];
            for (uint32_t d = 0; d < HEAD_DIM; d++)
                ref[d] += w[j] * s->v[j][kvh][d];
        }
        for (uint32_t d = 0; d < HEAD_DIM; d++) {
            omax = fmax(omax, fabs(ref[d] / l));
            err = fmax(err, fabs(o[h * HEAD_DIM + d] - ref[d] / l));
        }
    }
    return err / omax;
}

#define CALL(x)                                                                  \
    do {                                                                         \
        int rc_ = (x);                                                           \
        if (rc_ != 0) {                                                          \
            fprintf(stderr, "kvk_example: %s failed: %d\n", #x, rc_);            \
            return 1;                                                            \
        }                                                                        \
    } while (0)

int main(void)
{
    const kvk_geom g = { 1, Q_HEADS, KV_HEADS, HEAD_DIM, PAGE, KVK_F16 };
    const size_t row = (size_t)Q_HEADS * HEAD_DIM, kv_row = (size_t)KV_HEADS * HEAD_DIM;
    const double tol = strcmp(kvk_isa_name(), "amx") ? 1e-4 : 2e-2; /* amx: bf16 products */
    static seq a, b; /* a: 300 tokens, then a decode step; b: a 100-token prompt */
    kvk_pages pg = { NULL, 2 * MAX_TOKENS / PAGE };
    pg.base = aligned_alloc(64, pg.n_pages * kvk_page_bytes(&g));
    float *q = malloc(sizeof(float) * 300 * row), *o = malloc(sizeof(float) * 300 * row);
    float *k = malloc(sizeof(float) * 300 * kv_row), *v = malloc(sizeof(float) * 300 * kv_row);
    float *lse = malloc(sizeof(float) * 300 * Q_HEADS);
    kvk_pool *pool = kvk_pool_create(2);
    if (!pg.base || !q || !o || !k || !v || !lse || !pool) {
        fprintf(stderr, "kvk_example: out of memory\n");
        return 1;
    }
    for (uint32_t i = 0; i < MAX_TOKENS / PAGE; i++) { /* any pages, in any order */
        a.pages[i] = 2 * i;
        b.pages[i] = pg.n_pages - 1 - 2 * i;
    }
    kvk_attn_opts opts = kvk_attn_opts_default(); /* causal, scale 1/sqrt(head_dim) */

    /* 1. prefill of a: 300 new rows over an empty KV */
    kvk_item pre = { a.pages, 0, 300 };
    make_kv(&a, 0, 300, k, v);
    for (size_t i = 0; i < 300 * row; i++)
        q[i] = rnd();
    CALL(kvk_write_kv(&g, &pg, 0, &pre, 1, k, v, &opts));
    CALL(kvk_attn(&g, &pg, 0, &pre, 1, q, o, lse, &opts, pool));
    double worst = check_row(&a, q + 299 * row, o + 299 * row, 300);

    /* 2. one batch: b's 100-token prompt and a's decode step (row 100 of the call) */
    kvk_item batch[2] = { { b.pages, 0, 100 }, { a.pages, 300, 1 } };
    make_kv(&b, 0, 100, k, v);
    make_kv(&a, 300, 1, k + 100 * kv_row, v + 100 * kv_row);
    for (size_t i = 0; i < 101 * row; i++)
        q[i] = rnd();
    CALL(kvk_write_kv(&g, &pg, 0, batch, 2, k, v, &opts));
    CALL(kvk_attn(&g, &pg, 0, batch, 2, q, o, lse, &opts, pool));
    for (uint32_t r = 0; r < 100; r += 33) /* prompt row r sees keys 0 .. r */
        worst = fmax(worst, check_row(&b, q + r * row, o + r * row, r + 1));
    worst = fmax(worst, check_row(&a, q + 100 * row, o + 100 * row, 301));

    /* 3. the same decode row as a cascade: keys 0..255 (16 pages) and 256..300, merged. An
     * item's keys are positions 0 .. n_kv+n_new-1 of its page table, so the second part
     * starts its table at page 16; non-causal, its one row sees every key of its part. */
    kvk_attn_opts all = opts;
    all.causal = 0;
    kvk_item part0 = { a.pages, 255, 1 }, part1 = { a.pages + 256 / PAGE, 44, 1 };
    float *o0 = o + 200 * row, *o1 = o + 201 * row, *l0 = lse + 200 * Q_HEADS;
    float *l1 = lse + 201 * Q_HEADS, *qd = q + 100 * row;
    CALL(kvk_attn(&g, &pg, 0, &part0, 1, qd, o0, l0, &all, pool));
    CALL(kvk_attn(&g, &pg, 0, &part1, 1, qd, o1, l1, &all, pool));
    kvk_merge_states(Q_HEADS, HEAD_DIM, o0, l0, o1, l1, o0, l0);
    worst = fmax(worst, check_row(&a, qd, o0, 301));

    printf("kvk_example: isa %s, 2 threads: prefill, a ragged batch and a cascade; largest "
           "error %.2g of max |output| (tolerance %.0e)\n", kvk_isa_name(), worst, tol);
    kvk_pool_destroy(&pool);
    free(pg.base);
    free(q);
    free(o);
    free(k);
    free(v);
    free(lse);
    return worst <= tol ? 0 : 1;
}
