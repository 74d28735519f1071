/* coldindex.h — the cold tier's index (cold.c): which pages are on disk and where, by
 * block hash. A chained hash table of entries in one array (a free list through the unused
 * ones), grown by doubling; used by the server's thread only. */
#ifndef KVARENA_COLDINDEX_H
#define KVARENA_COLDINDEX_H

#include <stdint.h>

#include "proto/arena.h"

typedef struct cold_loc {
    uint32_t seg;            /* segment id */
    uint32_t len;            /* the whole record's bytes */
    uint64_t off;            /* its offset in the segment */
} cold_loc;

typedef struct cold_entry {
    uint8_t hash[KVA_HASH_BYTES];
    uint32_t tenant;
    uint32_t next;           /* next in its bucket or in the free list, KVA_NO_PAGE at the end */
    uint32_t rewriting;      /* a newer copy is queued (cold.c): not queued again meanwhile */
    cold_loc loc;
} cold_entry;

typedef struct cold_index {
    cold_entry *ent;
    uint32_t n, cap, free_ent;
    uint32_t *bucket, bucket_mask; /* cap buckets */
} cold_index;

/* An empty index (its first entries allocated): 0 or KV_ERR_NOMEM. */
int kvs_cold_index_init(cold_index *ix);
void kvs_cold_index_free(cold_index *ix);
cold_entry *kvs_cold_index_find(const cold_index *ix, const uint8_t *hash);
/* Adds the entry of hash, or moves it (a page written again: the newer copy; no longer
 * rewriting). 0 or KV_ERR_NOMEM. */
int kvs_cold_index_put(cold_index *ix, const uint8_t *hash, uint32_t tenant, cold_loc loc);
/* Removes the entries of segment seg (deleted); returns how many. */
uint32_t kvs_cold_index_remove_seg(cold_index *ix, uint32_t seg);
/* Removes the entry of hash if it is still the one at loc (not a newer copy). */
void kvs_cold_index_remove_at(cold_index *ix, const uint8_t *hash, cold_loc loc);

#endif
