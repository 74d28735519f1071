/* coldindex.c — the cold tier's index (see coldindex.h). */
#include "coldindex.h"

#include <stdlib.h>
#include <string.h>

#include "proto/kverr.h"

static uint32_t bucket_of(const cold_index *ix, const uint8_t *hash)
{
    uint32_t b;
    memcpy(&b, hash, sizeof(b)); /* a BLAKE2b hash: any four bytes are uniform */
    return b & ix->bucket_mask;
}

cold_entry *kvs_cold_index_find(const cold_index *ix, const uint8_t *hash)
{
    for (uint32_t e = ix->bucket[bucket_of(ix, hash)]; e != KVA_NO_PAGE; e = ix->ent[e].next)
        if (!memcmp(ix->ent[e].hash, hash, KVA_HASH_BYTES))
            return &ix->ent[e];
    return NULL;
}

static int grow(cold_index *ix)
{
    uint32_t cap = ix->cap ? 2 * ix->cap : 1024;
    cold_entry *ent = realloc(ix->ent, sizeof(*ent) * cap);
    uint32_t *bucket = malloc(sizeof(uint32_t) * cap);
    if (!ent || !bucket) {
        if (ent)
            ix->ent = ent;
        free(bucket);
        return KV_ERR_NOMEM;
    }
    ix->ent = ent;
    for (uint32_t e = ix->cap; e < cap; e++) /* the new entries join the free list */
        ent[e].next = e + 1 < cap ? e + 1 : ix->free_ent;
    ix->free_ent = ix->cap;
    /* rehash the entries in use: those reachable from the old buckets */
    memset(bucket, 0xff, sizeof(uint32_t) * cap);
    uint32_t old_mask = ix->bucket_mask, *old = ix->bucket;
    ix->bucket = bucket;
    ix->bucket_mask = cap - 1;
    for (uint32_t b = 0; old && b <= old_mask; b++)
        for (uint32_t e = old[b], nx; e != KVA_NO_PAGE; e = nx) {
            nx = ent[e].next;
            uint32_t nb = bucket_of(ix, ent[e].hash);
            ent[e].next = bucket[nb];
            bucket[nb] = e;
        }
    free(old);
    ix->cap = cap;
    return 0;
}

int kvs_cold_index_put(cold_index *ix, const uint8_t *hash, uint32_t tenant, cold_loc loc)
{
    cold_entry *x = kvs_cold_index_find(ix, hash);
    if (!x) {
        if (ix->free_ent == KVA_NO_PAGE && grow(ix) != 0)
            return KV_ERR_NOMEM;
        uint32_t e = ix->free_ent, b = bucket_of(ix, hash);
        x = &ix->ent[e];
        ix->free_ent = x->next;
        memcpy(x->hash, hash, KVA_HASH_BYTES);
        x->next = ix->bucket[b];
        ix->bucket[b] = e;
        ix->n++;
    }
    x->tenant = tenant;
    x->loc = loc;
    x->rewriting = 0;
    return 0;
}

uint32_t kvs_cold_index_remove_seg(cold_index *ix, uint32_t seg)
{
    uint32_t n = 0;
    for (uint32_t b = 0; ix->bucket && b <= ix->bucket_mask; b++)
        for (uint32_t *link = &ix->bucket[b]; *link != KVA_NO_PAGE;) {
            uint32_t e = *link;
            if (ix->ent[e].loc.seg != seg) {
                link = &ix->ent[e].next;
                continue;
            }
            *link = ix->ent[e].next;
            ix->ent[e].next = ix->free_ent;
            ix->free_ent = e;
            ix->n--;
            n++;
        }
    return n;
}

void kvs_cold_index_remove_at(cold_index *ix, const uint8_t *hash, cold_loc loc)
{
    for (uint32_t *link = &ix->bucket[bucket_of(ix, hash)]; *link != KVA_NO_PAGE;
         link = &ix->ent[*link].next) {
        cold_entry *x = &ix->ent[*link];
        if (memcmp(x->hash, hash, KVA_HASH_BYTES))
            continue;
        if (x->loc.seg == loc.seg && x->loc.off == loc.off) {
            uint32_t e = *link;
            *link = x->next;
            x->next = ix->free_ent;
            ix->free_ent = e;
            ix->n--;
        }
        return;
    }
}

int kvs_cold_index_init(cold_index *ix)
{
    memset(ix, 0, sizeof(*ix));
    ix->free_ent = KVA_NO_PAGE;
    return grow(ix);
}

void kvs_cold_index_free(cold_index *ix)
{
    free(ix->ent);
    free(ix->bucket);
    memset(ix, 0, sizeof(*ix));
}
