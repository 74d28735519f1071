/* kvk_internal.h — what the files of libkvkernels share with each other; not installed.
 *
 * A kvk_call is one validated kvk_attn call with its options resolved (scale, theta), so
 * every implementation (scalar reference, AVX2, AVX-512, AMX) starts from the same facts and
 * never re-checks arguments. Cross-file internal names use the kvk__ prefix. */
#ifndef KVARENA_KVK_INTERNAL_H
#define KVARENA_KVK_INTERNAL_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "kvkernels.h"

typedef struct kvk_call {
    const kvk_geom *g;
    const kvk_pages *pg;
    const kvk_item *items;
    uint32_t n_items;
    const float *q;       /* [rows][q_heads][head_dim] */
    float *o;             /* same shape */
    float *lse;           /* [rows][q_heads] or NULL */
    kvk_attn_opts opts;   /* scale and rope_theta resolved (never 0) */
    size_t page_bytes;    /* kvk_page_bytes(g) */
    size_t esize;         /* bytes per K/V element */
    size_t k_off;         /* offset of this layer's K block of KV head 0 inside a page */
    size_t head_stride;   /* bytes from one KV head's K block to the next one's */
    size_t v_off;         /* bytes from a head's K block to its V block */
    uint32_t rows;        /* sum of n_new over the items */
    const float *rope_cs; /* tiled paths, RoPE on: [rows][head_dim] cos/sin of each row's
                           * position (kvk__rope_table), made once per call; else NULL */
} kvk_call;

/* Checks geometry, pages, layer, items and options (opts may be NULL) as kvk_write_kv and
 * kvk_attn need them; on success fills *c (q, o, lse left NULL). Returns 0 or KV_ERR_INVAL. */
int kvk__call_init(kvk_call *c, const kvk_geom *g, const kvk_pages *pg, uint32_t layer,
                   const kvk_item *items, uint32_t n_items, const kvk_attn_opts *opts);

/* Address of token `pos` of an item's K (kind 0) or V (kind 1) for KV head h. */
static inline uint8_t *kvk__kv_row(const kvk_call *c, const kvk_item *it, uint32_t pos,
                                         uint32_t h, int kind)
{
    uint32_t pt = c->g->page_tokens;
    uint8_t *page = c->pg->base + (size_t)it->pages[pos / pt] * c->page_bytes;
    return page + c->k_off + h * c->head_stride + (size_t)kind * c->v_off
           + (size_t)(pos % pt) * c->g->head_dim * c->esize;
}

/* Element i of a K/V row in dtype dt, as fp32 (exact). */
static inline float kvk__load(const uint8_t *row, kvk_dtype dt, size_t i)
{
    if (dt == KVK_F32) {
        float f;
        __builtin_memcpy(&f, row + 4 * i, 4);
        return f;
    }
    uint16_t h;
    __builtin_memcpy(&h, row + 2 * i, 2);
    return dt == KVK_F16 ? kvk_f16_to_f32(h) : kvk_bf16_to_f32(h);
}

/* RoPE: cs gets cos/sin pairs [head_dim/2][2] for position pos (computed in double, so
 * positions far beyond 2^24 / head_dim keep their precision); rope_apply rotates x. */
void kvk__rope_table(float *cs, uint32_t head_dim, uint32_t pos, float theta);
void kvk__rope_apply(float *x, uint32_t head_dim, kvk_rope_mode mode, const float *cs);

/* The tables of consecutive positions without a sin and cos per pair and position: the
 * angles at a multiple of KVK_ROPE_ANCHOR (an anchor) are computed as kvk__rope_table does,
 * those of the next positions by turning them one position's angle at a time (angle
 * addition in double), so they stay within ~1e-14 of it, far below a float's rounding.
 * Every position's table is the same whichever calls and rows led to it (the turns from
 * its anchor, in the same order): K written in one call or in several, and Q tables made
 * by any number of threads, are bit for bit the same. Any pos may be asked. */
#define KVK_ROPE_ANCHOR 16
typedef struct kvk_rope_walk {
    double c[KVK_MAX_HEAD_DIM / 2], s[KVK_MAX_HEAD_DIM / 2];   /* the angles of pos */
    const double *dc, *ds; /* one position's turn (the calling thread's: a walk stays on it) */
    uint32_t half, pos, started;
    float theta;
} kvk_rope_walk;
void kvk__rope_walk_init(kvk_rope_walk *w, uint32_t head_dim, float theta);
void kvk__rope_walk_at(kvk_rope_walk *w, uint32_t pos, float *cs);

/* The visible key range [*lo, *hi) of the query at position pos of an item holding n_keys
 * keys; empty when *lo >= *hi. */
static inline void kvk__visible(const kvk_attn_opts *o, uint32_t pos, uint32_t n_keys,
                                uint32_t *lo, uint32_t *hi)
{
    *hi = o->causal ? pos + 1 : n_keys;
    *lo = (o->window_left >= 0 && pos > (uint32_t)o->window_left)
              ? pos - (uint32_t)o->window_left : 0;
}

/* The ALiBi bias of key kpos for query qpos: the distance taken in integers, so it is exact
 * at any position while the distance itself is below 2^24 (floats of the positions are not
 * exact past 2^24). */
static inline float kvk__alibi(float slope, uint32_t kpos, uint32_t qpos)
{
    return slope * (float)((int64_t)kpos - (int64_t)qpos);
}

/* Applies softcap and ALiBi (slope, or 0) to a scaled logit of key kpos for query qpos. */
static inline float kvk__logit(const kvk_attn_opts *o, float s, float slope, uint32_t kpos,
                               uint32_t qpos)
{
    if (o->softcap > 0.0f)
        s = o->softcap * tanhf(s / o->softcap);
    if (slope != 0.0f)
        s += kvk__alibi(slope, kpos, qpos);
    return s;
}

/* Thread pool: runs fn(arg, ith, nth) on every thread of the pool (the caller is ith 0)
 * and returns when all are done. pool NULL runs fn(arg, 0, 1). Callers are serialized. */
typedef void (*kvk_pool_fn)(void *arg, int ith, int nth);
void kvk__pool_run(kvk_pool *pool, kvk_pool_fn fn, void *arg);
/* Scratch of at least `bytes` (64-byte aligned) for one call, or NULL (out of memory). The
 * pool's own, reused across calls and reserved to the caller until kvk__pool_scratch_done;
 * pool NULL: allocated for the call and freed by kvk__pool_scratch_done. */
void *kvk__pool_scratch(kvk_pool *pool, size_t bytes);
void kvk__pool_scratch_done(kvk_pool *pool, void *scratch);

/* ---- tiled attention (kvk_plan.c drives, attn_<isa>.c computes) ----
 *
 * A task is the attention of the q heads of one KV-head group, for a tile of an item's rows
 * (or the rows of a group of items, over the prefix of pages they share), over a range of
 * keys. The planner cuts the call into tasks (splitting long key ranges so every thread gets
 * work), threads pull tasks in a fixed order, and each task's result (m, l, acc) is either
 * final (written to o/lse) or one part of a split merged afterwards. */
/* A query row of a task that gathers rows of several items (a shared-prefix group, see
 * kvk_plan.c): its global row in the call, position and item's key count; item and r (the
 * row within the item) tell the planner where its result goes. */
typedef struct kvk_trow {
    uint32_t row, pos, n_keys;
    uint32_t item, r;
} kvk_trow;

typedef struct kvk_task {
    uint32_t item;        /* index into the call's items (of a group: the one whose page
                           * table the task reads; every member's names the same pages) */
    uint32_t kv_head;     /* KV head; its group is q heads kv_head*G .. kv_head*G+G-1 */
    uint32_t r0, r1;      /* rows of the item: query vector m is row r0 + m/G, head m%G */
    uint32_t k0, k1;      /* keys [k0, k1): never a block invisible to every row */
    uint32_t part, parts; /* this task is part `part` of `parts` over the tile's keys */
    uint32_t slot;        /* partial-result slot (parts of a tile are consecutive), or
                           * KVK_NO_SLOT when parts == 1: the task writes o/lse itself */
    uint32_t order;       /* generation index: a fixed tie-break for scheduling */
    uint64_t cost;        /* query vectors x keys, for scheduling big tasks first */
    const kvk_trow *trows; /* NULL: rows r0 .. r1 of item `item`; else a group's task, whose
                            * query rows are trows[r0 .. r1) (keys of the shared prefix) */
} kvk_task;
#define KVK_NO_SLOT UINT32_MAX

/* Query row r of task t (row0: the global row of row 0 of t's item, for a task without
 * trows). */
static inline kvk_trow kvk__task_row(const kvk_call *c, const kvk_task *t, size_t row0,
                                     uint32_t r)
{
    if (t->trows)
        return t->trows[r];
    const kvk_item *it = &c->items[t->item];
    return (kvk_trow){ (uint32_t)(row0 + r), it->n_kv + r, it->n_kv + it->n_new, t->item, r };
}

/* A task's result, for query vectors m < M of capacity mcap: m[mcap], l[mcap], acc[mcap][D]:
 * running max, sum of exp(logit - max), and sum of exp(logit - max) * v. */
static inline float *kvk__out_m(float *out, uint32_t mcap) { (void)mcap; return out; }
static inline float *kvk__out_l(float *out, uint32_t mcap) { return out + mcap; }
static inline float *kvk__out_acc(float *out, uint32_t mcap) { return out + 2 * (size_t)mcap; }

typedef struct kvk_tile_ops {
    uint32_t m_align;     /* query vectors are padded to a multiple of this */
    uint32_t tile_m_long; /* query vectors per tile of items with many new rows (kvk_plan.c) */
    /* fp32 scratch one thread needs for tiles of up to mp (padded) query vectors */
    size_t (*scratch_floats)(uint32_t head_dim, uint32_t mp);
    /* computes task t (item rows start at global row row0) into out (capacity mcap) */
    void (*run)(const kvk_call *c, const kvk_task *t, size_t row0, float *scratch,
                float *out, uint32_t mcap);
} kvk_tile_ops;

/* Runs a call through tile kernels. Returns 0 or KV_ERR_NOMEM. */
int kvk__attn_tiled(const kvk_call *c, kvk_pool *pool, const kvk_tile_ops *ops);

/* The shared-prefix groups kvk__attn_tiled forms for call c (tests): returns their number
 * (-1: out of memory) and puts each item's group in grp[n_items] (UINT32_MAX: none). */
int kvk__plan_groups(const kvk_call *c, uint32_t *grp);

/* Stores n fp32 values as a K/V row of dtype dt, rounded as kvk_f32_to_f16 / kvk_f32_to_bf16
 * round, bit for bit: one per ISA, kvk__store_fn() is the chosen ISA's (kvk_attn.c). */
typedef void (*kvk_store_fn)(uint8_t *dst, const float *src, uint32_t n, kvk_dtype dt);
void kvk__store_ref(uint8_t *dst, const float *src, uint32_t n, kvk_dtype dt);
void kvk__store_avx2(uint8_t *dst, const float *src, uint32_t n, kvk_dtype dt);
void kvk__store_avx512(uint8_t *dst, const float *src, uint32_t n, kvk_dtype dt);
kvk_store_fn kvk__store_fn(void);

/* Implementations of kvk_attn on a validated call. They return 0 or KV_ERR_NOMEM. */
int kvk__attn_ref(const kvk_call *c, kvk_pool *pool);
int kvk__attn_avx2(const kvk_call *c, kvk_pool *pool);
int kvk__attn_avx512(const kvk_call *c, kvk_pool *pool);
int kvk__attn_amx(const kvk_call *c, kvk_pool *pool);

#endif
