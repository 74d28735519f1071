/* arena.h — the shared-memory arena format (version KVA_FORMAT_VERSION).
 *
 *   [ header                      ]  one 4 KiB block
 *   [ page descriptors            ]  n_pages records of desc_bytes each
 *   [ sequence table              ]  max_seqs records of sizeof(kva_seq)
 *   [ page data                   ]  n_pages pages of page_bytes each, 4 KiB aligned
 *
 * WHO WRITES WHAT: the kvserver is the only writer of the header, the descriptors and the
 * sequence table; it creates the region and is the only process that changes metadata, so
 * no lock lives in shared memory. A kvworker maps the whole region read/write but writes
 * only the page data of the slots a job grants it (the new tokens of that job's layer, and
 * that layer's copy of a shared partial tail: JobItem.cow_src) and reads only the pages the
 * job names.
 *
 * SELF-DESCRIBING: everything the server keeps in private memory (free list, LRU, prefix
 * hash index, page tables) is derived from the descriptors and the sequence table, so a
 * restarted server can rebuild it. A page's KV data is valid for its first `nvalid` tokens;
 * tokens between nvalid and ntok are reserved and may hold garbage.
 *
 * All integers are fixed width, native (little) endian; the region is only ever shared
 * between processes of one machine. */
#ifndef KVARENA_ARENA_H
#define KVARENA_ARENA_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kvkernels.h"

#define KVA_MAGIC 0x00414e4552415643ull /* "CVARENA\0" little-endian: 'C','V','A','R','E','N','A' */
#define KVA_FORMAT_VERSION 2u
#define KVA_HEADER_BYTES 4096u
#define KVA_NO_PAGE 0xffffffffu
#define KVA_HASH_BYTES 32u
#define KVA_ALIBI_MAX_BIAS 64.0f /* largest ALiBi max_bias accepted (models use 8) */

typedef struct kva_header {
    uint64_t magic;          /* KVA_MAGIC */
    uint32_t version;        /* KVA_FORMAT_VERSION */
    uint32_t layout_version; /* KVK_LAYOUT_VERSION: page data layout of kernels/ */
    uint32_t layers;         /* geometry, see kvk_geom */
    uint32_t q_heads;
    uint32_t kv_heads;
    uint32_t head_dim;
    uint32_t page_tokens;
    uint32_t dtype;          /* kvk_dtype */
    uint32_t n_pages;        /* page descriptors and data pages */
    uint32_t max_seqs;       /* sequence table records */
    uint64_t page_bytes;     /* kvk_page_bytes(geometry) */
    uint64_t desc_bytes;     /* bytes of one descriptor record (a multiple of 64) */
    uint64_t desc_off;       /* offsets from the start of the region */
    uint64_t seq_off;
    uint64_t data_off;
    uint64_t total_bytes;    /* size of the region */
    uint64_t epoch;          /* incremented by every server start on this region */
    uint64_t tick;           /* server's logical clock, for last-use ticks */
    uint64_t next_seq_gen;   /* generation counter for sequence ids */
    int32_t server_pid;      /* pid of the server that owns the region now */
    uint32_t max_batch_tokens; /* largest job (sum of n_new) the server sends a worker */
    uint8_t tenants_hash[KVA_HASH_BYTES]; /* BLAKE2b of the tenant names in order: page and
                                           * sequence tenant indexes mean the same on restart */
    uint32_t rope;           /* model attention, applied to every job: kvk_rope_mode */
    float rope_theta;        /* RoPE base (K is stored rotated: part of the page data) */
    uint32_t window;         /* sliding window (keys older than pos - window hidden), 0 none */
    float softcap;           /* logit soft-cap, 0 none */
    float alibi_max_bias;    /* ALiBi: slopes kvk_alibi_slopes(q_heads, this), 0 none (0 in
                              * arenas made before the field: the same meaning) */
} kva_header;

enum kva_page_state {
    KVA_PAGE_FREE = 0,       /* on the free list */
    KVA_PAGE_WRITING = 1,    /* allocated, no token valid yet: dropped by a restart */
    KVA_PAGE_OPEN = 2,       /* partial or being extended, private to its sequences */
    KVA_PAGE_COMMITTED = 3,  /* full, all layers written, hashed, immutable, shareable */
};

/* One page descriptor; the record is desc_bytes long (tokens[] has page_tokens entries). */
typedef struct kva_page {
    uint32_t state;          /* kva_page_state */
    uint32_t ref;            /* page-table references + pins of jobs in flight */
    uint32_t tenant;         /* tenant index charged for the page */
    uint32_t ntok;           /* tokens reserved in the page (token ids below are set) */
    uint32_t nvalid;         /* tokens whose KV is written for all layers */
    uint32_t parent;         /* previous page of the chain, KVA_NO_PAGE for a first page */
    uint32_t children;       /* pages whose parent is this page */
    uint32_t reserved0;
    uint64_t tick;           /* last use (header tick) */
    uint64_t gen;            /* incremented each time the page is allocated */
    uint8_t hash[KVA_HASH_BYTES]; /* chained block hash, valid when COMMITTED */
    uint32_t tokens[];       /* token ids, page_tokens entries */
} kva_page;

enum kva_seq_state { KVA_SEQ_FREE = 0, KVA_SEQ_LIVE = 1 };

/* The fields of a sequence record that a request changes. */
typedef struct kva_seq_fields {
    uint64_t last_req;       /* request id of the last request that changed it (open, fork,
                              * extend, attend): a retried request is answered, not re-applied */
    uint32_t len;            /* tokens whose KV is written for all layers */
    uint32_t pending;        /* tokens reserved after len, being written layer by layer */
    uint32_t next_layer;     /* next layer to attend for the pending tokens */
    uint32_t tail;           /* last page, KVA_NO_PAGE when empty */
    uint32_t last_cached;    /* the cached count answered to last_req when it was an extend */
    uint32_t closed_gen;     /* free record: generation (id >> 32) of the sequence last closed
                              * in this slot, last_req the request that closed it */
    uint32_t cow_src;        /* while pending: the shared partial page the tail was copied
                              * from (held by this record), its first len % page_tokens tokens
                              * copied a layer at a time by the pending layers' jobs;
                              * KVA_NO_PAGE when there is no copy to make */
    uint32_t reserved1;
} kva_seq_fields;

/* One sequence table record. The page table of a live sequence is the parent chain of
 * its tail page; len + pending tokens are reserved in it. A change of several fields is
 * bracketed by `dirty`: the fields as they were are saved in `undo` first, so a server
 * killed half-way leaves a record that recovery puts back as it was before the request. */
typedef struct kva_seq {
    uint64_t id;             /* (generation << 32) | slot; 0 when free */
    uint32_t state;          /* kva_seq_state; LIVE is written last when a record is made */
    uint32_t tenant;         /* owner tenant index */
    union {
        kva_seq_fields f;    /* (the same fields, as one block for undo) */
        struct {
            uint64_t last_req;
            uint32_t len, pending, next_layer, tail, last_cached, closed_gen, cow_src,
                reserved1;
        };
    };
    uint32_t dirty;          /* 1 while the fields above are being changed */
    uint32_t pad0;
    kva_seq_fields undo;     /* the fields before the change, valid while dirty */
    uint8_t pad[24];         /* two cache lines per record */
} kva_seq;

_Static_assert(sizeof(kva_header) <= KVA_HEADER_BYTES, "header fits its block");
_Static_assert(sizeof(kva_seq) == 128, "sequence records are two cache lines");
_Static_assert(sizeof(kva_seq_fields) == 40, "undo block");

static inline kva_page *kva_page_at(const kva_header *h, uint32_t p)
{
    return (kva_page *)((uint8_t *)h + h->desc_off + (uint64_t)p * h->desc_bytes);
}
static inline kva_seq *kva_seq_at(const kva_header *h, uint32_t slot)
{
    return (kva_seq *)((uint8_t *)h + h->seq_off) + slot;
}
static inline uint8_t *kva_data(const kva_header *h)
{
    return (uint8_t *)h + h->data_off;
}
/* The kernels' geometry of the arena's pages. */
static inline kvk_geom kva_geom(const kva_header *h)
{
    return (kvk_geom){ h->layers, h->q_heads, h->kv_heads, h->head_dim, h->page_tokens,
                       (kvk_dtype)h->dtype };
}

/* Layout for a geometry: fills the size and offset fields of h from its geometry, n_pages,
 * max_seqs and page_bytes. Returns 0, or KV_ERR_INVAL if the sizes overflow. */
int kva_layout(kva_header *h);
/* Checks a mapped header of region_bytes: magic, version, layout version, offsets and
 * sizes consistent with the geometry and inside the region. Returns 0 or KV_ERR_INVAL and
 * writes a reason to why (may be NULL) of why_len bytes. Pure: reads h only. */
int kva_header_check(const kva_header *h, uint64_t region_bytes, char *why, size_t why_len);

#endif
