/* pages.c — page allocator, prefix index and LRU of the arena (see pages.h).
 *
 * Why an LRU of leaves only: a cached page's children extend its prefix; evicting a parent
 * before its children would leave children that no lookup can reach (the hash chain runs
 * from the root). So a cached page enters the LRU when it has no children, and a parent
 * enters at the cold end when its last child is evicted (it was used no later than them).
 * Private arrays are indexed by page number; all links use KVA_NO_PAGE as "none". */
#include "pages.h"

#include <assert.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto/kverr.h"

#define NONE KVA_NO_PAGE

/* ---- LRU lists: global and per tenant, head = most recently used ---- */

static void lru_link(uint32_t *prev, uint32_t *next, uint32_t *head, uint32_t *tail,
                     uint32_t p, int at_head)
{
    if (at_head) {
        prev[p] = NONE;
        next[p] = *head;
        if (*head != NONE) prev[*head] = p; else *tail = p;
        *head = p;
    } else {
        next[p] = NONE;
        prev[p] = *tail;
        if (*tail != NONE) next[*tail] = p; else *head = p;
        *tail = p;
    }
}

static void lru_unlink(uint32_t *prev, uint32_t *next, uint32_t *head, uint32_t *tail, uint32_t p)
{
    if (prev[p] != NONE) next[prev[p]] = next[p]; else *head = next[p];
    if (next[p] != NONE) prev[next[p]] = prev[p]; else *tail = prev[p];
    prev[p] = next[p] = NONE;
}

static void lru_insert(kvs_pages *pg, uint32_t p, int at_head)
{
    kvs_tenant_pages *t = &pg->tenant[kvs_page(pg, p)->tenant];
    assert(!pg->in_lru[p]);
    lru_link(pg->lru_prev, pg->lru_next, &pg->lru_head, &pg->lru_tail, p, at_head);
    lru_link(pg->tlru_prev, pg->tlru_next, &t->lru_head, &t->lru_tail, p, at_head);
    pg->in_lru[p] = 1;
}

static void lru_remove(kvs_pages *pg, uint32_t p)
{
    kvs_tenant_pages *t = &pg->tenant[kvs_page(pg, p)->tenant];
    if (!pg->in_lru[p])
        return;
    lru_unlink(pg->lru_prev, pg->lru_next, &pg->lru_head, &pg->lru_tail, p);
    lru_unlink(pg->tlru_prev, pg->tlru_next, &t->lru_head, &t->lru_tail, p);
    pg->in_lru[p] = 0;
}

/* ---- prefix index: chained hash table keyed by the block hash ---- */

static uint32_t bucket_of(const kvs_pages *pg, const uint8_t hash[KVA_HASH_BYTES])
{
    uint32_t b;
    memcpy(&b, hash, sizeof(b)); /* BLAKE2b output is uniform: any 4 bytes do */
    return b & pg->bucket_mask;
}

static void index_insert(kvs_pages *pg, uint32_t p)
{
    uint32_t b = bucket_of(pg, kvs_page(pg, p)->hash);
    pg->hnext[p] = pg->buckets[b];
    pg->buckets[b] = p;
}

static void index_remove(kvs_pages *pg, uint32_t p)
{
    uint32_t *link = &pg->buckets[bucket_of(pg, kvs_page(pg, p)->hash)];
    while (*link != NONE && *link != p)
        link = &pg->hnext[*link];
    assert(*link == p);
    *link = pg->hnext[p];
    pg->hnext[p] = NONE;
}

uint32_t kvs_prefix_find(const kvs_pages *pg, const uint8_t hash[KVA_HASH_BYTES])
{
    for (uint32_t p = pg->buckets[bucket_of(pg, hash)]; p != NONE; p = pg->hnext[p])
        if (memcmp(kvs_page(pg, p)->hash, hash, KVA_HASH_BYTES) == 0)
            return p;
    return NONE;
}

void kvs_block_hash(const uint8_t parent[KVA_HASH_BYTES], const uint8_t salt[KVA_HASH_BYTES],
                    const uint32_t *tokens, uint32_t n, uint8_t out[KVA_HASH_BYTES])
{
    static const uint8_t zeros[KVA_HASH_BYTES];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, KVA_HASH_BYTES);
    crypto_generichash_update(&st, parent ? parent : zeros, KVA_HASH_BYTES);
    crypto_generichash_update(&st, salt, KVA_HASH_BYTES);
    for (uint32_t i = 0; i < n; i++) { /* little-endian on every host */
        uint8_t le[4] = { (uint8_t)tokens[i], (uint8_t)(tokens[i] >> 8),
                          (uint8_t)(tokens[i] >> 16), (uint8_t)(tokens[i] >> 24) };
        crypto_generichash_update(&st, le, sizeof(le));
    }
    crypto_generichash_final(&st, out, KVA_HASH_BYTES);
}

/* ---- state transitions ---- */

/* A cached page whose last child went becomes an evictable leaf. */
static void parent_lost_child(kvs_pages *pg, uint32_t parent)
{
    kva_page *d = kvs_page(pg, parent);
    assert(d->children > 0);
    if (--d->children == 0 && d->ref == 0 && d->state == KVA_PAGE_COMMITTED)
        lru_insert(pg, parent, 0);
}

/* Returns an unreferenced, childless page to the free list; its parent loses a child. */
static void page_free(kvs_pages *pg, uint32_t p)
{
    kva_page *d = kvs_page(pg, p);
    assert(d->ref == 0 && d->children == 0 && !pg->in_lru[p]);
    uint32_t parent = d->parent;
    pg->tenant[d->tenant].pages--;
    d->state = KVA_PAGE_FREE;
    d->ntok = d->nvalid = 0;
    d->parent = NONE;
    pg->free_stack[pg->n_free++] = p;
    if (parent != NONE)
        parent_lost_child(pg, parent);
}

void kvs_page_reparent(kvs_pages *pg, uint32_t child, uint32_t new_parent)
{
    kva_page *d = kvs_page(pg, child);
    uint32_t old = d->parent;
    if (new_parent != NONE) {
        kva_page *np = kvs_page(pg, new_parent);
        if (np->children++ == 0 && pg->in_lru[new_parent])
            lru_remove(pg, new_parent);
    }
    d->parent = new_parent;
    if (old != NONE)
        parent_lost_child(pg, old);
}

static void evict(kvs_pages *pg, uint32_t p)
{
    kva_page *d = kvs_page(pg, p);
    assert(d->state == KVA_PAGE_COMMITTED && d->ref == 0 && d->children == 0);
    lru_remove(pg, p);
    index_remove(pg, p);
    pg->n_cached--;
    pg->tenant[d->tenant].cached--;
    pg->evictions++;
    page_free(pg, p);
}

int kvs_pages_can_alloc(const kvs_pages *pg, uint32_t t, uint32_t need, uint32_t reserved_cached)
{
    const kvs_tenant_pages *tp = &pg->tenant[t];
    if (tp->quota) {
        /* after the allocation the tenant holds pages + need - (pages it must evict) */
        uint32_t evictable = tp->cached - reserved_cached;
        uint64_t after = (uint64_t)tp->pages + need;
        if (after > tp->quota && after - tp->quota > evictable)
            return KV_ERR_QUOTA;
    }
    uint64_t avail = (uint64_t)pg->n_free + pg->n_cached - reserved_cached;
    return need <= avail ? 0 : KV_ERR_NOMEM;
}

uint32_t kvs_page_alloc(kvs_pages *pg, uint32_t t, uint32_t parent, int *err)
{
    kvs_tenant_pages *tp = &pg->tenant[t];
    if (tp->quota && tp->pages >= tp->quota) {
        if (tp->lru_tail == NONE) {
            *err = KV_ERR_QUOTA;
            return NONE;
        }
        evict(pg, tp->lru_tail); /* under quota pressure a tenant evicts its own pages */
    }
    if (pg->n_free == 0) {
        if (pg->lru_tail == NONE) {
            *err = KV_ERR_NOMEM;
            return NONE;
        }
        evict(pg, pg->lru_tail);
    }
    uint32_t p = pg->free_stack[--pg->n_free];
    kva_page *d = kvs_page(pg, p);
    assert(d->state == KVA_PAGE_FREE);
    d->state = KVA_PAGE_WRITING;
    d->ref = 1;
    d->tenant = t;
    d->ntok = d->nvalid = 0;
    d->children = 0;
    d->parent = NONE;
    d->tick = ++pg->h->tick;
    /* the new generation before any write to the page can be seen (kvs_snapshot_write
     * copies a page between two reads of it) */
    __atomic_store_n(&d->gen, d->gen + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memset(d->hash, 0, sizeof(d->hash));
    tp->pages++;
    if (parent != NONE)
        kvs_page_reparent(pg, p, parent);
    return p;
}

void kvs_page_ref(kvs_pages *pg, uint32_t p)
{
    kva_page *d = kvs_page(pg, p);
    assert(d->state != KVA_PAGE_FREE);
    if (d->ref++ == 0 && d->state == KVA_PAGE_COMMITTED) {
        lru_remove(pg, p);
        pg->n_cached--;
        pg->tenant[d->tenant].cached--;
    }
    d->tick = ++pg->h->tick;
}

void kvs_page_unref(kvs_pages *pg, uint32_t p)
{
    kva_page *d = kvs_page(pg, p);
    assert(d->ref > 0);
    if (--d->ref > 0)
        return;
    d->tick = ++pg->h->tick;
    if (d->state == KVA_PAGE_COMMITTED) {
        pg->n_cached++;
        pg->tenant[d->tenant].cached++;
        if (d->children == 0)
            lru_insert(pg, p, 1);
        return;
    }
    /* a partial page is private: nobody can find it again. Its children (if any) hold
     * references to it, so with ref 0 it has none. */
    assert(d->children == 0);
    page_free(pg, p);
}

uint32_t kvs_page_commit(kvs_pages *pg, uint32_t p, const uint8_t salt[KVA_HASH_BYTES])
{
    kva_page *d = kvs_page(pg, p);
    assert(d->state == KVA_PAGE_OPEN || d->state == KVA_PAGE_WRITING);
    assert(d->ntok == pg->h->page_tokens && d->nvalid == d->ntok);
    const uint8_t *ph = d->parent == NONE ? NULL : kvs_page(pg, d->parent)->hash;
    uint8_t h[KVA_HASH_BYTES];
    kvs_block_hash(ph, salt, d->tokens, d->ntok, h);
    uint32_t twin = kvs_prefix_find(pg, h);
    if (twin != NONE)
        return twin;
    memcpy(d->hash, h, sizeof(h));
    d->state = KVA_PAGE_COMMITTED;
    index_insert(pg, p);
    if (pg->on_commit)
        pg->on_commit(pg->hook_arg, p);
    return p;
}

int kvs_tick_cmp(const void *a, const void *b)
{
    const kvs_tick_ref *x = a, *y = b;
    return x->tick != y->tick ? (x->tick > y->tick ? 1 : -1) : (x->idx > y->idx) - (x->idx < y->idx);
}

/* ---- init / rebuild ---- */

static int alloc_arrays(kvs_pages *pg)
{
    uint32_t n = pg->n, nb = 1;
    while (nb < n) nb <<= 1;
    pg->bucket_mask = nb - 1;
    pg->free_stack = malloc(sizeof(uint32_t) * n);
    pg->lru_prev = malloc(sizeof(uint32_t) * n);
    pg->lru_next = malloc(sizeof(uint32_t) * n);
    pg->tlru_prev = malloc(sizeof(uint32_t) * n);
    pg->tlru_next = malloc(sizeof(uint32_t) * n);
    pg->hnext = malloc(sizeof(uint32_t) * n);
    pg->buckets = malloc(sizeof(uint32_t) * nb);
    pg->in_lru = calloc(n, 1);
    if (!pg->free_stack || !pg->lru_prev || !pg->lru_next || !pg->tlru_prev ||
        !pg->tlru_next || !pg->hnext || !pg->buckets || !pg->in_lru)
        return KV_ERR_NOMEM;
    memset(pg->buckets, 0xff, sizeof(uint32_t) * nb);
    memset(pg->hnext, 0xff, sizeof(uint32_t) * n);
    memset(pg->lru_prev, 0xff, sizeof(uint32_t) * n);
    memset(pg->lru_next, 0xff, sizeof(uint32_t) * n);
    memset(pg->tlru_prev, 0xff, sizeof(uint32_t) * n);
    memset(pg->tlru_next, 0xff, sizeof(uint32_t) * n);
    return 0;
}

int kvs_pages_init(kvs_pages *pg, kva_header *h, uint32_t n_tenants)
{
    memset(pg, 0, sizeof(*pg));
    if (n_tenants == 0 || n_tenants > KVS_MAX_TENANTS)
        return KV_ERR_INVAL;
    pg->h = h;
    pg->n = h->n_pages;
    pg->n_tenants = n_tenants;
    pg->lru_head = pg->lru_tail = NONE;
    for (uint32_t t = 0; t < KVS_MAX_TENANTS; t++)
        pg->tenant[t].lru_head = pg->tenant[t].lru_tail = NONE;
    int rc = alloc_arrays(pg);
    if (rc) {
        kvs_pages_free(pg);
        return rc;
    }
    /* Pass 1: free list, tenant counts, prefix index. */
    for (uint32_t p = 0; p < pg->n; p++) {
        kva_page *d = kvs_page(pg, p);
        d->children = 0;
        if (d->state == KVA_PAGE_FREE || d->tenant >= n_tenants) {
            uint64_t gen = d->gen;
            memset(d, 0, sizeof(*d));
            d->gen = gen;
            d->parent = NONE;
            pg->free_stack[pg->n_free++] = p;
            continue;
        }
        pg->tenant[d->tenant].pages++;
        if (d->state != KVA_PAGE_COMMITTED)
            continue;
        if (kvs_prefix_find(pg, d->hash) == NONE)
            index_insert(pg, p);
        else
            d->state = KVA_PAGE_OPEN; /* a duplicate block: still valid data, not shareable */
    }
    /* Pass 2: children counts from parent links (kvs_arena_recover left no orphan). */
    for (uint32_t p = 0; p < pg->n; p++) {
        kva_page *d = kvs_page(pg, p);
        if (d->state != KVA_PAGE_FREE && d->parent != NONE)
            kvs_page(pg, d->parent)->children++;
    }
    /* Pass 3: unreferenced committed pages are cached; leaves among them are evictable, in
     * the order of their last use before the restart (the page ticks), oldest evicted first. */
    for (uint32_t p = 0; p < pg->n; p++) {
        kva_page *d = kvs_page(pg, p);
        if (d->state == KVA_PAGE_COMMITTED && d->ref == 0) {
            pg->n_cached++;
            pg->tenant[d->tenant].cached++;
        }
    }
    if ((rc = kvs_pages_lru_by_tick(pg)) != 0) {
        kvs_pages_free(pg);
        return rc;
    }
    return kvs_pages_check(pg);
}

int kvs_pages_lru_by_tick(kvs_pages *pg)
{
    kvs_tick_ref *leaves = malloc(sizeof(*leaves) * (pg->n ? pg->n : 1));
    uint32_t n_leaves = 0;
    if (!leaves)
        return KV_ERR_NOMEM;
    for (uint32_t p = 0; p < pg->n; p++) {
        const kva_page *d = kvs_page(pg, p);
        if (d->state == KVA_PAGE_COMMITTED && d->ref == 0 && d->children == 0)
            leaves[n_leaves++] = (kvs_tick_ref){ d->tick, p };
    }
    qsort(leaves, n_leaves, sizeof(*leaves), kvs_tick_cmp);
    for (uint32_t i = 0; i < n_leaves; i++) {
        lru_remove(pg, leaves[i].idx);
        lru_insert(pg, leaves[i].idx, 1);
    }
    free(leaves);
    return 0;
}

void kvs_pages_free(kvs_pages *pg)
{
    free(pg->free_stack);
    free(pg->lru_prev);
    free(pg->lru_next);
    free(pg->tlru_prev);
    free(pg->tlru_next);
    free(pg->hnext);
    free(pg->buckets);
    free(pg->in_lru);
    memset(pg, 0, sizeof(*pg));
}

#define CHECK(cond, ...) do { if (!(cond)) { KVS_ERROR("pages check: " __VA_ARGS__); return KV_ERR_INTERNAL; } } while (0)

int kvs_pages_check(const kvs_pages *pg)
{
    uint32_t n_free = 0, n_cached = 0, in_lru = 0;
    uint32_t tpages[KVS_MAX_TENANTS] = { 0 }, tcached[KVS_MAX_TENANTS] = { 0 };
    uint32_t *children = calloc(pg->n ? pg->n : 1, sizeof(uint32_t));
    CHECK(children, "out of memory");
    for (uint32_t p = 0; p < pg->n; p++) {
        const kva_page *d = kvs_page(pg, p);
        if (d->state != KVA_PAGE_FREE && d->parent != NONE)
            children[d->parent]++;
    }
    int rc = 0;
    for (uint32_t p = 0; p < pg->n && rc == 0; p++) {
        const kva_page *d = kvs_page(pg, p);
        if (d->state == KVA_PAGE_FREE) {
            n_free++;
            continue;
        }
        tpages[d->tenant]++;
        if (children[p] != d->children) {
            KVS_ERROR("pages check: page %u children %u, counted %u", p, d->children, children[p]);
            rc = KV_ERR_INTERNAL;
        }
        if (d->parent != NONE && kvs_page(pg, d->parent)->ref < d->ref) {
            KVS_ERROR("pages check: page %u ref %u > parent ref", p, d->ref);
            rc = KV_ERR_INTERNAL;
        }
        int want_lru = d->state == KVA_PAGE_COMMITTED && d->ref == 0 && d->children == 0;
        if (want_lru != pg->in_lru[p]) {
            KVS_ERROR("pages check: page %u in_lru %d, expected %d", p, pg->in_lru[p], want_lru);
            rc = KV_ERR_INTERNAL;
        }
        if (d->state == KVA_PAGE_COMMITTED && d->ref == 0) {
            n_cached++;
            tcached[d->tenant]++;
        }
        if (d->state != KVA_PAGE_COMMITTED && d->ref == 0) {
            KVS_ERROR("pages check: uncommitted page %u has no reference", p);
            rc = KV_ERR_INTERNAL;
        }
        if (d->state == KVA_PAGE_COMMITTED && kvs_prefix_find(pg, d->hash) != p) {
            KVS_ERROR("pages check: committed page %u not indexed", p);
            rc = KV_ERR_INTERNAL;
        }
    }
    /* the free stack: n_free distinct pages, each FREE (children is reused as the marks) */
    memset(children, 0, (pg->n ? pg->n : 1) * sizeof(uint32_t));
    for (uint32_t i = 0; i < pg->n_free && i < pg->n && rc == 0; i++) {
        uint32_t p = pg->free_stack[i];
        if (p >= pg->n || children[p]++ || kvs_page(pg, p)->state != KVA_PAGE_FREE) {
            KVS_ERROR("pages check: free stack entry %u (page %u) is not a distinct free page", i, p);
            rc = KV_ERR_INTERNAL;
        }
    }
    free(children);
    if (rc)
        return rc;
    for (uint32_t p = pg->lru_head; p != NONE; p = pg->lru_next[p])
        in_lru++;
    uint32_t lru_count = 0;
    for (uint32_t p = 0; p < pg->n; p++)
        lru_count += pg->in_lru[p];
    CHECK(in_lru == lru_count, "LRU list has %u pages, %u flagged", in_lru, lru_count);
    CHECK(n_free == pg->n_free, "free %u, counted %u", pg->n_free, n_free);
    CHECK(n_cached == pg->n_cached, "cached %u, counted %u", pg->n_cached, n_cached);
    for (uint32_t t = 0; t < pg->n_tenants; t++) {
        CHECK(tpages[t] == pg->tenant[t].pages, "tenant %u pages %u, counted %u", t,
              pg->tenant[t].pages, tpages[t]);
        CHECK(tcached[t] == pg->tenant[t].cached, "tenant %u cached %u, counted %u", t,
              pg->tenant[t].cached, tcached[t]);
    }
    return 0;
}
