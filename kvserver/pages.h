/* pages.h — the page allocator of the arena: free list, ref counts, prefix index, LRU.
 *
 * INVARIANTS (checked by kvs_pages_check):
 *  - every page is in exactly one of: the free list (FREE), in use (ref > 0, or WRITING /
 *    OPEN), cached (COMMITTED with ref 0);
 *  - a cached page with no children is in the LRU (global and its tenant's); a cached page
 *    with children is not (it becomes evictable when its last child goes);
 *  - a child holding a reference implies its parent holds one: page tables name the whole
 *    parent chain, so every cached subtree is evictable from its leaves upwards;
 *  - the prefix index maps the hash of every COMMITTED page to it (one page per hash).
 * Only the server writes descriptors; this module is its only writer of page descriptors. */
#ifndef KVARENA_PAGES_H
#define KVARENA_PAGES_H

#include <stdint.h>

#include "proto/arena.h"

#define KVS_MAX_TENANTS 64

typedef struct kvs_tenant_pages {
    uint32_t pages;   /* pages charged: in use + cached */
    uint32_t cached;  /* of which cached (evictable) */
    uint32_t quota;   /* 0 = unlimited */
    uint32_t lru_head, lru_tail; /* the tenant's evictable leaves, head = most recent */
} kvs_tenant_pages;

typedef struct kvs_pages {
    kva_header *h;            /* the mapped arena */
    uint32_t n;               /* pages */
    uint32_t *free_stack;     /* free page indices */
    uint32_t n_free;
    uint32_t n_cached;        /* COMMITTED with ref 0 */
    uint32_t *lru_prev, *lru_next;   /* global LRU links, KVA_NO_PAGE terminated */
    uint32_t *tlru_prev, *tlru_next; /* per-tenant LRU links */
    uint8_t *in_lru;          /* 1 if linked in the LRUs */
    uint32_t lru_head, lru_tail;     /* head = most recently used */
    uint32_t *buckets;        /* prefix index: hash -> first page of the chain */
    uint32_t *hnext;          /* next page in the bucket chain */
    uint32_t bucket_mask;
    uint32_t n_tenants;
    kvs_tenant_pages tenant[KVS_MAX_TENANTS];
    uint64_t hits, misses, evictions; /* counters since start */
    /* called by kvs_page_commit with each page it commits, and by an extend with each
     * cached page it attaches (a prefix hit), or NULL; set after kvs_pages_init. The cold
     * tier queues the first, and the second if its copy on disk is old (so pages in use
     * keep a copy: the tier drops its oldest files first). */
    void (*on_commit)(void *arg, uint32_t p);
    void (*on_hit)(void *arg, uint32_t p);
    void *hook_arg;
} kvs_pages;

/* Builds the private indexes from the descriptors of arena h: a fresh one (all FREE) or one
 * kvs_arena_recover() made consistent (states, ref counts, no orphans). Children counts are
 * recomputed; the evictable pages are queued in the order of their last use (page ticks), so
 * the LRU survives a restart. Returns 0, KV_ERR_NOMEM (malloc) or KV_ERR_INTERNAL. */
int kvs_pages_init(kvs_pages *pg, kva_header *h, uint32_t n_tenants);
void kvs_pages_free(kvs_pages *pg);

/* Whether `need` new pages can be allocated for tenant t right now (free pages, then
 * eviction of cached pages, within the tenant's quota), not counting `reserved_cached`
 * cached pages of t the caller is about to reference. Returns 0, KV_ERR_NOMEM or KV_ERR_QUOTA. */
int kvs_pages_can_alloc(const kvs_pages *pg, uint32_t t, uint32_t need, uint32_t reserved_cached);
/* Allocates a page for tenant t, evicting if needed: state WRITING, ref 1, no tokens,
 * parent as given (its children count grows). Returns the page or KVA_NO_PAGE with *err. */
uint32_t kvs_page_alloc(kvs_pages *pg, uint32_t t, uint32_t parent, int *err);
/* Takes a reference (a cached page leaves the LRU). */
void kvs_page_ref(kvs_pages *pg, uint32_t p);
/* Drops a reference. At zero a COMMITTED page becomes cached; any other page is freed. */
void kvs_page_unref(kvs_pages *pg, uint32_t p);
/* Moves child from its parent to new_parent (children counts follow). */
void kvs_page_reparent(kvs_pages *pg, uint32_t child, uint32_t new_parent);

/* Chained block hash: BLAKE2b-256(parent hash or zeros, salt, token ids little-endian). */
void kvs_block_hash(const uint8_t parent[KVA_HASH_BYTES], const uint8_t salt[KVA_HASH_BYTES],
                    const uint32_t *tokens, uint32_t n, uint8_t out[KVA_HASH_BYTES]);
/* The COMMITTED page with this hash, or KVA_NO_PAGE. */
uint32_t kvs_prefix_find(const kvs_pages *pg, const uint8_t hash[KVA_HASH_BYTES]);
/* Commits a full page whose tokens are all valid: computes its hash with salt. If a page
 * with the same hash is already committed, p is left as it is and that page is returned
 * (the caller switches to it); else p becomes COMMITTED, is indexed, and p is returned. */
uint32_t kvs_page_commit(kvs_pages *pg, uint32_t p, const uint8_t salt[KVA_HASH_BYTES]);

/* A tick with what it belongs to (a page, a record); kvs_tick_cmp orders them for qsort by
 * tick, ties by index: the order of last use. */
typedef struct kvs_tick_ref {
    uint64_t tick;
    uint32_t idx;
} kvs_tick_ref;
int kvs_tick_cmp(const void *a, const void *b);

/* Puts the evictable pages in the LRU in the order of their ticks (the oldest evicted
 * first), as kvs_pages_init does: for ticks set afresh (a restored snapshot). 0, or
 * KV_ERR_NOMEM with the order unchanged. */
int kvs_pages_lru_by_tick(kvs_pages *pg);

/* Consistency check of every invariant above; returns 0 or KV_ERR_INTERNAL and logs why. */
int kvs_pages_check(const kvs_pages *pg);

static inline kva_page *kvs_page(const kvs_pages *pg, uint32_t p)
{
    return kva_page_at(pg->h, p);
}

#endif
