/* recover.h — a server starting on an arena a previous server left behind (it was killed,
 * or stopped with keep_shm): validate every descriptor and sequence record in place, so
 * that kvs_pages_init / kvs_seqs_init can rebuild the private indexes from them. */
#ifndef KVARENA_RECOVER_H
#define KVARENA_RECOVER_H

#include <stdint.h>

#include "proto/arena.h"

typedef struct kvs_recover_stats {
    uint32_t committed;      /* committed pages kept (prefix cache entries) */
    uint32_t open;           /* partial or pending pages kept for live sequences */
    uint32_t dropped;        /* pages dropped: invalid, orphaned, or written by nobody */
    uint32_t seqs;           /* sequences restored */
    uint32_t seqs_dropped;   /* sequence records that failed validation */
    uint32_t seqs_undone;    /* records caught half-changed, put back as they were */
} kvs_recover_stats;

/* Checks every page descriptor (known state, tenant, counts, parent chain without cycles,
 * committed pages: full, committed parent, block hash recomputed with salt[tenant]) and
 * every live sequence record (its tail chain covers exactly len + pending tokens, of its
 * tenant, with valid KV for the first len). Keeps what passes, FREEs the rest, and sets
 * each page's ref to the number of live sequences that hold it; frees uncommitted pages no
 * sequence holds. Returns 0 or KV_ERR_NOMEM. */
int kvs_arena_recover(kva_header *h, uint32_t n_tenants, const uint8_t (*salt)[KVA_HASH_BYTES],
                      kvs_recover_stats *st);

#endif
