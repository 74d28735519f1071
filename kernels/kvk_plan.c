/* kvk_plan.c — cuts a kvk_attn call into tasks for the tile kernels, runs them on the pool
 * and merges split results. Nothing here depends on the instruction set.
 *
 * Tiles: for each item and KV head, rows are taken KVK_TILE_M / G at a time, so a tile is
 * about KVK_TILE_M query vectors: all G q heads of the group share every K/V byte the tile
 * reads (GQA read once per KV head), and a prefill tile reuses each key KVK_TILE_M times.
 * Items of KVK_LONG_ROWS new rows or more take the ISA's tile_m_long (128; 256 on amx): more
 * reuse per key block; on shorter ones the larger masked diagonal of each causal tile costs
 * more than that.
 * A tile's keys are the union of its rows' visible ranges, so causal and window tiles never
 * visit a block that no row can see.
 *
 * Splits: with several threads, a tile whose key range is longer than the chunk size is cut
 * into parts (decode on a long context: few tiles, many keys). The chunk size depends only
 * on the call and the thread count, so a given call is always cut the same way. Parts are
 * merged by log-sum-exp after all tasks ran.
 *
 * Shared prefixes (groups): items of a few rows (decode) whose page tables start with the
 * same pages (a prefix cache hit, a fork) form a group; for each KV head one tile holds the
 * query vectors of every member and reads the shared pages once for all of them, as a
 * prefill tile reuses its keys, instead of once per item (a cascade, as FlashInfer's, found
 * from the page tables). Each member's own tile then covers only its keys past the prefix;
 * the group tile's result for a member's rows is copied into that tile's first parts and
 * merged with the rest as split parts are. Items are sorted by page table, so those sharing
 * the longest prefixes sit side by side, and taken greedily while each member's window sees
 * KVK_SHARE_MIN keys or more of the prefix and the keys the group saves do not shrink.
 *
 * Scheduling: tasks sorted by cost (largest first, generation order on ties) and handed out
 * by an atomic counter; which thread runs a task does not change its result. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "kverr.h"
#include "kvk_internal.h"

#define KVK_TILE_M 64       /* query vectors per tile (prefill) */
#define KVK_LONG_ROWS 512
#define KVK_SPLIT_MIN 512   /* never split a tile's keys into parts shorter than this */
#define KVK_SPLIT_ALIGN 64  /* part boundaries fall on multiples of this many keys */
#define KVK_TASKS_PER_THREAD 8
#define KVK_SHARE_MIN 64    /* keys: a shared prefix shorter than this makes no group */
#define KVK_NO_GROUP UINT32_MAX

typedef struct group {
    uint32_t t0, n;         /* its query rows: trows[t0 .. t0 + n) */
    uint32_t item;          /* the member whose page table its tasks read */
    uint32_t lo, keys;      /* its tiles' keys [lo, keys): on the same pages for every member */
    uint32_t parts;         /* parts its tiles are cut into (plan_cut) */
} group;

typedef struct plan {
    const kvk_call *c;
    const kvk_tile_ops *ops;
    kvk_task *tasks;
    uint32_t n_tasks;
    uint32_t n_slots;
    uint32_t mcap;            /* query vectors per tile at most, over all the call's items:
                               * every task's result slot and scratch is laid out for it */
    uint32_t chunk;           /* keys per part when a tile is split; 0: never split */
    size_t *row0;             /* [n_items] global row of each item's row 0 */
    float *slots;             /* [n_slots] partial results, slot_floats each */
    size_t slot_floats;
    float *scratch;           /* [nth] tile scratch + staging result, thr_floats each */
    size_t thr_floats;
    atomic_uint next;         /* next task to hand out */
    /* shared prefixes */
    group *groups;
    uint32_t n_groups;
    kvk_trow *trows;          /* the groups' query rows */
    uint32_t *grp;            /* [n_items] an item's group, or KVK_NO_GROUP */
    uint32_t *slot0, *parts;  /* [n_items] a member's first slot (KV head 0) and parts per
                               * tile: its tile of KV head h has slots slot0 + h parts .. */
} plan;

static size_t out_floats(uint32_t mcap, uint32_t head_dim)
{
    return (size_t)mcap * (2 + head_dim);
}

/* Rows per tile of item it. */
static uint32_t tile_rows(const kvk_call *c, const kvk_tile_ops *ops, const kvk_item *it)
{
    uint32_t G = c->g->q_heads / c->g->kv_heads;
    uint32_t m = it->n_new >= KVK_LONG_ROWS ? ops->tile_m_long : KVK_TILE_M;
    return G >= m ? 1 : m / G;
}

/* Keys [lo, hi) cut into parts of *len keys (a multiple of KVK_SPLIT_ALIGN) when longer
 * than the chunk; returns the number of parts, at least 1 (*len 0: no keys). */
static uint32_t plan_cut(const plan *p, uint32_t lo, uint32_t hi, uint32_t *len)
{
    uint32_t nk = hi > lo ? hi - lo : 0, parts = 1;
    *len = nk;
    if (p->chunk && nk > p->chunk) {
        parts = (nk + p->chunk - 1) / p->chunk;
        *len = (nk + parts - 1) / parts;
        *len = (*len + KVK_SPLIT_ALIGN - 1) / KVK_SPLIT_ALIGN * KVK_SPLIT_ALIGN;
        parts = (nk + *len - 1) / *len;
    }
    return parts;
}

/* Appends the tasks of one tile, copies of proto (whose parts counts them all) with their
 * keys: [lo, hi) cut into parts numbered from part0, part k in slot `slot + k`
 * (KVK_NO_SLOT: none). Returns the number of parts it cut. */
static uint32_t plan_tile(plan *p, uint32_t *n, kvk_task proto, uint32_t lo, uint32_t hi,
                          uint32_t part0, uint32_t slot)
{
    uint32_t G = p->c->g->q_heads / p->c->g->kv_heads, len;
    uint32_t parts = plan_cut(p, lo, hi, &len);
    for (uint32_t k = 0; k < parts; k++, (*n)++) {
        uint32_t k0 = lo + k * len, k1 = k0 + len < hi ? k0 + len : hi;
        if (!p->tasks)
            continue;
        kvk_task *t = &p->tasks[*n];
        *t = proto;
        t->k0 = k0;
        t->k1 = len ? k1 : k0;
        t->part = part0 + k;
        t->slot = slot == KVK_NO_SLOT ? KVK_NO_SLOT : slot + part0 + k;
        t->order = *n;
        t->cost = (uint64_t)(t->r1 - t->r0) * G * (t->k1 - t->k0) + 1;
    }
    return parts;
}

/* Visits every tile (and part) in generation order, groups' first; fills p->tasks when it
 * is not NULL, and the members' slots. */
static void plan_walk(plan *p)
{
    const kvk_call *c = p->c;
    uint32_t n = 0, slots = 0, len;
    for (uint32_t gi = 0; gi < p->n_groups; gi++) {
        const group *gr = &p->groups[gi];
        for (uint32_t h = 0; h < c->g->kv_heads; h++) {
            kvk_task proto = { .item = gr->item, .kv_head = h, .r0 = 0, .r1 = gr->n,
                               .parts = gr->parts, .trows = p->trows + gr->t0 };
            plan_tile(p, &n, proto, gr->lo, gr->keys, 0, KVK_NO_SLOT);
        }
    }
    for (uint32_t i = 0; i < c->n_items; i++) {
        const kvk_item *it = &c->items[i];
        uint32_t R = tile_rows(c, p->ops, it), gi = p->grp[i];
        uint32_t shared = gi == KVK_NO_GROUP ? 0 : p->groups[gi].keys;
        uint32_t part0 = gi == KVK_NO_GROUP ? 0 : p->groups[gi].parts;
        p->slot0[i] = slots;
        for (uint32_t h = 0; h < c->g->kv_heads; h++)
            for (uint32_t r0 = 0; r0 < it->n_new; r0 += R) {
                uint32_t r1 = r0 + R < it->n_new ? r0 + R : it->n_new;
                uint32_t lo, hi, lo1, hi0;
                kvk__visible(&c->opts, it->n_kv + r0, it->n_kv + it->n_new, &lo, &hi0);
                kvk__visible(&c->opts, it->n_kv + r1 - 1, it->n_kv + it->n_new, &lo1, &hi);
                lo = lo > shared ? lo : shared; /* a member: its keys past the prefix */
                uint32_t parts = part0 + plan_cut(p, lo, hi, &len);
                kvk_task proto = { .item = i, .kv_head = h, .r0 = r0, .r1 = r1,
                                   .parts = parts };
                plan_tile(p, &n, proto, lo, hi, part0, parts > 1 ? slots : KVK_NO_SLOT);
                if (parts > 1)
                    slots += parts;
                p->parts[i] = parts;
            }
    }
    p->n_tasks = n;
    p->n_slots = slots;
}

static int task_cmp(const void *a, const void *b)
{
    const kvk_task *x = a, *y = b;
    if (x->cost != y->cost)
        return x->cost > y->cost ? -1 : 1;
    return x->order < y->order ? -1 : 1;
}

/* Chunk size: about KVK_TASKS_PER_THREAD tasks per thread over the call's key work (a
 * group's shared keys counted once). */
static uint32_t plan_chunk(plan *p, int nth)
{
    if (nth <= 1)
        return 0;
    uint64_t keys = 0;
    for (uint32_t i = 0; i < p->c->n_items; i++) {
        const kvk_item *it = &p->c->items[i];
        uint32_t R = tile_rows(p->c, p->ops, it);
        uint32_t shared = p->grp[i] == KVK_NO_GROUP ? 0 : p->groups[p->grp[i]].keys;
        keys += (uint64_t)(it->n_kv + it->n_new - shared) * ((it->n_new + R - 1) / R);
    }
    for (uint32_t g = 0; g < p->n_groups; g++)
        keys += p->groups[g].keys - p->groups[g].lo;
    keys *= p->c->g->kv_heads;
    uint64_t chunk = keys / ((uint64_t)nth * KVK_TASKS_PER_THREAD);
    return chunk < KVK_SPLIT_MIN ? KVK_SPLIT_MIN : chunk > UINT32_MAX / 2 ? UINT32_MAX / 2 : (uint32_t)chunk;
}

/* ---- shared prefixes ---- */

/* An item that may join a group: its page table and its pages wholly before its new rows. */
typedef struct cand {
    const uint32_t *pages;
    uint32_t full, item;
    uint32_t lo;            /* the first key its first row can see (its window's start) */
} cand;

static uint32_t common_pages(const cand *a, const cand *b)
{
    uint32_t n = a->full < b->full ? a->full : b->full, k = 0;
    while (k < n && a->pages[k] == b->pages[k])
        k++;
    return k;
}

/* Page tables in lexicographic order (then length, then item: a total order). */
static int cand_cmp(const void *x, const void *y)
{
    const cand *a = x, *b = y;
    uint32_t k = common_pages(a, b);
    if (k < a->full && k < b->full)
        return a->pages[k] < b->pages[k] ? -1 : 1;
    if (a->full != b->full)
        return a->full < b->full ? -1 : 1;
    return a->item < b->item ? -1 : 1;
}

/* Forms the groups (p->groups, p->trows, p->grp) of the call's items. cands: [n_items]. */
static void plan_groups(plan *p, cand *cands)
{
    const kvk_call *c = p->c;
    uint32_t G = c->g->q_heads / c->g->kv_heads, pt = c->g->page_tokens, nc = 0, nt = 0;
    uint32_t max_rows = KVK_TILE_M / G; /* a group is one tile per KV head */
    for (uint32_t i = 0; i < c->n_items; i++) {
        const kvk_item *it = &c->items[i];
        uint32_t lo, hi;
        p->grp[i] = KVK_NO_GROUP;
        kvk__visible(&c->opts, it->n_kv, it->n_kv + it->n_new, &lo, &hi);
        if (it->n_new && 2 * it->n_new <= max_rows && it->n_kv / pt * pt >= KVK_SHARE_MIN)
            cands[nc++] = (cand){ it->pages, it->n_kv / pt, i, lo };
    }
    qsort(cands, nc, sizeof(cand), cand_cmp);
    for (uint32_t a = 0, b; a < nc; a = b) {
        /* take the next items while each sees KVK_SHARE_MIN keys or more of the prefix and
         * the keys the group saves (members - 1 reads of the part of the prefix its rows
         * see) do not shrink */
        uint32_t common = cands[a].full, lo = cands[a].lo, lo_max = lo, members = 1;
        uint32_t rows = c->items[cands[a].item].n_new;
        uint64_t seen = common * pt > lo ? common * pt - lo : 0;
        for (b = a + 1; b < nc; b++, members++) {
            uint32_t cp = common_pages(&cands[b - 1], &cands[b]);
            cp = cp < common ? cp : common;
            uint32_t nlo = cands[b].lo < lo ? cands[b].lo : lo;
            uint32_t nlo_max = cands[b].lo > lo_max ? cands[b].lo : lo_max;
            uint32_t nr = rows + c->items[cands[b].item].n_new;
            uint64_t nseen = cp * pt > nlo ? cp * pt - nlo : 0;
            if (nr > max_rows || (uint64_t)nlo_max + KVK_SHARE_MIN > cp * pt
                || members * nseen < (members - 1) * seen)
                break;
            common = cp;
            lo = nlo;
            lo_max = nlo_max;
            seen = nseen;
            rows = nr;
        }
        if (members < 2)
            continue;
        group *gr = &p->groups[p->n_groups];
        *gr = (group){ .t0 = nt, .n = rows, .item = cands[a].item, .lo = lo,
                       .keys = common * pt };
        for (uint32_t m = a; m < b; m++) {
            const kvk_item *it = &c->items[cands[m].item];
            for (uint32_t r = 0; r < it->n_new; r++)
                p->trows[nt + r] = (kvk_trow){ (uint32_t)p->row0[cands[m].item] + r,
                                               it->n_kv + r, it->n_kv + it->n_new,
                                               cands[m].item, r };
            nt += it->n_new;
            p->grp[cands[m].item] = p->n_groups;
        }
        p->n_groups++;
    }
}

/* Allocates the plan's per-item arrays and forms the groups of p->c. Returns 0 or -1 (out
 * of memory; plan_groups_free releases what was allocated either way). */
static int plan_groups_init(plan *p)
{
    const kvk_call *c = p->c;
    size_t n = (size_t)c->n_items + 1;
    p->row0 = malloc(n * sizeof(size_t));
    p->grp = malloc(3 * n * sizeof(uint32_t));
    p->groups = malloc(n * sizeof(group));
    p->trows = malloc(((size_t)c->rows + 1) * sizeof(kvk_trow));
    cand *cands = malloc(n * sizeof(cand));
    if (!p->row0 || !p->grp || !p->groups || !p->trows || !cands) {
        free(cands);
        return -1;
    }
    p->slot0 = p->grp + n;
    p->parts = p->slot0 + n;
    for (uint32_t i = 0, r = 0; i < c->n_items; r += c->items[i].n_new, i++)
        p->row0[i] = r;
    plan_groups(p, cands);
    free(cands);
    return 0;
}

static void plan_groups_free(plan *p)
{
    free(p->row0);
    free(p->grp);
    free(p->groups);
    free(p->trows);
}

/* A group task's result for each member row, copied into that member's tile slot of the
 * same KV head and part. */
static void group_scatter(const plan *p, const kvk_task *t, const float *out)
{
    uint32_t G = p->c->g->q_heads / p->c->g->kv_heads, D = p->c->g->head_dim, mcap = p->mcap;
    for (uint32_t r = t->r0; r < t->r1; r++) {
        const kvk_trow *tr = &t->trows[r];
        size_t slot = p->slot0[tr->item] + (size_t)t->kv_head * p->parts[tr->item] + t->part;
        float *dst = p->slots + slot * p->slot_floats;
        for (uint32_t g = 0; g < G; g++) {
            uint32_t ms = (r - t->r0) * G + g, md = tr->r * G + g;
            kvk__out_m(dst, mcap)[md] = kvk__out_m((float *)out, mcap)[ms];
            kvk__out_l(dst, mcap)[md] = kvk__out_l((float *)out, mcap)[ms];
            memcpy(kvk__out_acc(dst, mcap) + (size_t)md * D,
                   kvk__out_acc((float *)out, mcap) + (size_t)ms * D, D * sizeof(float));
        }
    }
}

/* The weight exp(m_part - mx) of one of n parts' result for query vector m (1 if n = 1:
 * the common case skips the exp). */
static float part_weight(float *part, uint32_t n, uint32_t mcap, uint32_t m, float mx)
{
    return n == 1 ? 1.0f : expf(kvk__out_m(part, mcap)[m] - mx);
}

/* Merges n parts (stride floats apart) of the result of task t's tile into o and lse;
 * n = 1 just normalizes. Also built for AVX-512 (picked at load time where the CPU has it):
 * it writes every output row, a few percent of a prefill on amx. */
__attribute__((target_clones("avx512f", "default")))
static void plan_write(const plan *p, const kvk_task *t, float *part, size_t stride,
                       uint32_t n)
{
    const kvk_call *c = p->c;
    uint32_t D = c->g->head_dim, G = c->g->q_heads / c->g->kv_heads, mcap = p->mcap;
    uint32_t M = (t->r1 - t->r0) * G;
    for (uint32_t m = 0; m < M; m++) {
        float mx = -INFINITY, l = 0.0f;
        for (uint32_t k = 0; k < n; k++)
            mx = fmaxf(mx, kvk__out_m(part + k * stride, mcap)[m]);
        size_t row = p->row0[t->item] + t->r0 + m / G;
        size_t qi = row * c->g->q_heads + (size_t)t->kv_head * G + m % G;
        float *restrict o = c->o + qi * D;
        for (uint32_t k = 0; k < n && mx > -INFINITY; k++) { /* a part that saw nothing: 0 */
            float *pk = part + k * stride;
            l += part_weight(pk, n, mcap, m, mx) * kvk__out_l(pk, mcap)[m];
        }
        float inv = l > 0.0f ? 1.0f / l : 0.0f;
        if (inv == 0.0f) /* nothing visible: zeros, whatever the accumulators hold */
            memset(o, 0, (size_t)D * sizeof(float));
        for (uint32_t k = 0; k < n && inv > 0.0f; k++) { /* n = 1: one vectorized pass */
            const float *restrict acc = kvk__out_acc(part + k * stride, mcap) + (size_t)m * D;
            float w = part_weight(part + k * stride, n, mcap, m, mx) * inv;
            if (k == 0)
                for (uint32_t d = 0; d < D; d++)
                    o[d] = acc[d] * w;
            else
                for (uint32_t d = 0; d < D; d++)
                    o[d] += acc[d] * w;
        }
        if (c->lse)
            c->lse[qi] = l > 0.0f ? mx + logf(l) : -INFINITY;
    }
}

static void plan_worker(void *arg, int ith, int nth)
{
    (void)nth;
    plan *p = arg;
    float *scratch = p->scratch + (size_t)ith * p->thr_floats;
    float *stage = scratch + p->thr_floats - p->slot_floats;
    for (;;) {
        uint32_t i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= p->n_tasks)
            break;
        const kvk_task *t = &p->tasks[i];
        float *out = t->slot == KVK_NO_SLOT ? stage : p->slots + t->slot * p->slot_floats;
        p->ops->run(p->c, t, p->row0[t->item], scratch, out, p->mcap);
        if (t->trows)
            group_scatter(p, t, out);
        else if (t->slot == KVK_NO_SLOT)
            plan_write(p, t, out, 0, 1);
    }
}

/* After the run: merges the parts of each tile with slots (split, or a group member's),
 * once per tile: by its task holding its first own part (0, or after its group's parts).
 * Tiles are shared out statically by index. */
static void plan_merge_worker(void *arg, int ith, int nth)
{
    plan *p = arg;
    for (uint32_t i = (uint32_t)ith; i < p->n_tasks; i += (uint32_t)nth) {
        const kvk_task *t = &p->tasks[i];
        uint32_t gi = p->grp[t->item], first = gi == KVK_NO_GROUP ? 0 : p->groups[gi].parts;
        if (!t->trows && t->slot != KVK_NO_SLOT && t->part == first)
            plan_write(p, t, p->slots + (t->slot - t->part) * p->slot_floats, p->slot_floats,
                       t->parts);
    }
}

/* Fills the RoPE table of the call's rows (kvk_call.rope_cs), rows shared out statically. */
static void rope_worker(void *arg, int ith, int nth)
{
    kvk_call *c = arg;
    float *cs = (float *)c->rope_cs;
    kvk_rope_walk walk;
    kvk__rope_walk_init(&walk, c->g->head_dim, c->opts.rope_theta);
    size_t r0 = (size_t)c->rows * ith / nth, r1 = (size_t)c->rows * (ith + 1) / nth, row = 0;
    for (uint32_t i = 0; i < c->n_items && row < r1; row += c->items[i].n_new, i++)
        for (size_t r = row < r0 ? r0 - row : 0; r < c->items[i].n_new && row + r < r1; r++)
            kvk__rope_walk_at(&walk, c->items[i].n_kv + (uint32_t)r,
                              cs + (row + r) * c->g->head_dim);
}

int kvk__attn_tiled(const kvk_call *call, kvk_pool *pool, const kvk_tile_ops *ops)
{
    /* RoPE tables once per row of the call, not once per task that reads the row */
    kvk_call cc = *call, *c = &cc;
    float *rope = NULL;
    if (c->opts.rope != KVK_ROPE_NONE) {
        rope = malloc(((size_t)c->rows * c->g->head_dim + 1) * sizeof(float));
        if (!rope)
            return KV_ERR_NOMEM;
        cc.rope_cs = rope;
        kvk__pool_run(pool, rope_worker, c);
    }
    int nth = kvk_pool_threads(pool), rc = KV_ERR_NOMEM;
    uint32_t G = c->g->q_heads / c->g->kv_heads, D = c->g->head_dim;
    plan p = { .c = c, .ops = ops };
    uint32_t rows_max = 1;
    for (uint32_t i = 0; i < c->n_items; i++) {
        uint32_t R = tile_rows(c, ops, &c->items[i]);
        rows_max = R > rows_max ? R : rows_max;
    }
    p.mcap = (rows_max * G + 3) & ~3u; /* tile kernels work on query vectors 4 at a time */
    float *buf = NULL;
    if (plan_groups_init(&p) != 0)
        goto out;
    p.chunk = plan_chunk(&p, nth);
    for (uint32_t g = 0, len; g < p.n_groups; g++)
        p.groups[g].parts = plan_cut(&p, p.groups[g].lo, p.groups[g].keys, &len);
    plan_walk(&p);
    uint32_t mp = (p.mcap + ops->m_align - 1) / ops->m_align * ops->m_align;
    p.slot_floats = out_floats(p.mcap, D);
    p.thr_floats = ops->scratch_floats(D, mp) + p.slot_floats;
    p.thr_floats = (p.thr_floats + 15) & ~(size_t)15; /* keep each thread's part 64-byte aligned */
    p.tasks = malloc(((size_t)p.n_tasks + 1) * sizeof(kvk_task));
    size_t slot_total = ((size_t)p.n_slots * p.slot_floats + 15) & ~(size_t)15;
    buf = kvk__pool_scratch(pool, (slot_total + (size_t)nth * p.thr_floats) * sizeof(float));
    if (p.tasks && buf) {
        p.slots = buf;
        p.scratch = buf + slot_total;
        plan_walk(&p);
        qsort(p.tasks, p.n_tasks, sizeof(kvk_task), task_cmp);
        atomic_init(&p.next, 0);
        kvk__pool_run(pool, plan_worker, &p);
        if (p.n_slots)
            kvk__pool_run(pool, plan_merge_worker, &p);
        rc = 0;
    }
out:
    if (buf)
        kvk__pool_scratch_done(pool, buf);
    free(p.tasks);
    plan_groups_free(&p);
    free(rope);
    return rc;
}

int kvk__plan_groups(const kvk_call *c, uint32_t *grp)
{
    plan p = { .c = c };
    int n = plan_groups_init(&p) == 0 ? (int)p.n_groups : -1;
    for (uint32_t i = 0; i < c->n_items && n >= 0; i++)
        grp[i] = p.grp[i];
    plan_groups_free(&p);
    return n;
}
