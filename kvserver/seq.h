/* seq.h — sequences: page tables, extend with prefix reuse, fork with copy-on-write,
 * layer-by-layer completion and commit of full pages, close.
 *
 * A sequence's record lives in the arena's sequence table (so a restart can find it); its
 * page table (the parent chain of its tail page, as an array) and its busy flag live here.
 * Life of an extend: kvs_seq_extend reserves `pending` tokens (pages allocated, token ids
 * written to descriptors); each layer's Attend writes their K/V; after the last layer
 * kvs_seq_layer_done makes them valid and commits the pages that became full.
 * Every function validates first and changes nothing when it fails.
 *
 * req_id: open, fork, extend and close take the id of the client request they apply and
 * write it into the record they change (kva_seq.last_req), in the same stores as the change
 * itself, so it survives a restart with it. That is how a retry or resend of the same
 * request is recognised and answered instead of being applied twice (see handlers.c).
 *
 * Expiry: a client that dies leaves its sequences open, their pages pinned. Every request
 * that names a sequence stamps it with the server's clock (kvs_seq_touch); kvs_seq_expire
 * closes those left unnamed for the configured idle time, as a close by the reserved
 * request id KVS_REQ_EXPIRED, so the record's tombstone tells a late caller why its
 * sequence is gone (kvs_seq_expired). Full pages stay cached like after any close.
 * A tombstone lives until its slot is taken again; the last KVS_GONE_KEPT closes by the
 * server itself (expiry, operator) are also kept aside, so a client that comes back after
 * many other opens still learns why its sequence is gone (not across a restart). */
#ifndef KVARENA_SEQ_H
#define KVARENA_SEQ_H

#include <stdint.h>

#include "pages.h"

typedef struct kvs_seq {
    uint32_t *pt;        /* page table: pages holding tokens 0 .. len+pending-1 */
    uint32_t n_pt;       /* entries in pt */
    uint32_t cap;        /* allocated entries */
    uint64_t busy_job;   /* job in flight for this sequence, 0 if none */
    uint64_t used_ms;    /* server clock when a request last named it; 0: not yet (a
                          * sequence found at a restart: kvs_seq_expire starts its clock) */
} kvs_seq;

/* A close by a reserved request id (KVS_REQ_EXPIRED, KVS_REQ_ADMIN), kept after its slot's
 * tombstone is reused. */
typedef struct kvs_gone {
    uint64_t id;
    uint64_t req_id;
    uint32_t tenant;
} kvs_gone;
#define KVS_GONE_KEPT 4096

typedef struct kvs_seqs {
    kva_header *h;
    kvs_pages *pg;
    kvs_seq *s;              /* max_seqs entries, indexed by slot */
    uint32_t *free_slots;    /* ring of max_seqs entries: free slots, longest free first (a
                              * closed slot's tombstone lives until its slot is taken again) */
    uint32_t free_head;      /* the next free slot to take is free_slots[free_head] */
    uint32_t n_free;
    kvs_gone *gone;          /* ring of KVS_GONE_KEPT entries, oldest overwritten first */
    uint32_t gone_next;      /* the entry the next such close overwrites */
    uint32_t live;           /* open sequences */
    uint32_t per_tenant[KVS_MAX_TENANTS]; /* open sequences per tenant */
    uint32_t tenant_max[KVS_MAX_TENANTS]; /* most a tenant may have open; 0 = no limit */
    uint8_t (*salt)[KVA_HASH_BYTES];      /* per-tenant hash salts, n_tenants entries */
} kvs_seqs;

/* Sets up the private state for the arena's sequence table. Live records found in it (left
 * consistent by kvs_arena_recover, their page references counted) get their page tables
 * back. salts: one per tenant, copied.
 * Returns 0 or KV_ERR_NOMEM. */
int kvs_seqs_init(kvs_seqs *ss, kva_header *h, kvs_pages *pg, const uint8_t (*salts)[KVA_HASH_BYTES]);
void kvs_seqs_free(kvs_seqs *ss);

/* The live record of id owned by tenant, or NULL (forged, stale, foreign: KV_ERR_NOSEQ). */
kva_seq *kvs_seq_find(const kvs_seqs *ss, uint64_t id, uint32_t tenant);
/* The live record of id whatever its tenant (the admin socket's view), or NULL. */
kva_seq *kvs_seq_live(const kvs_seqs *ss, uint64_t id);
static inline kvs_seq *kvs_seq_priv(const kvs_seqs *ss, const kva_seq *rec)
{
    return &ss->s[(uint32_t)rec->id];
}

/* Opens an empty sequence for tenant, created by request req_id (its record's last_req: a
 * resent open finds the sequence it made). Returns 0 with its id in *id, KV_ERR_NOMEM
 * (sequence table full) or KV_ERR_QUOTA (the tenant has tenant_max open). */
int kvs_seq_open(kvs_seqs *ss, uint32_t tenant, uint64_t req_id, uint64_t *id);
/* Closes it for request req_id and releases its pages; the freed slot keeps req_id
 * (kvs_seq_closer) until it is taken again. Errors: KV_ERR_NOSEQ, KV_ERR_BUSY. */
int kvs_seq_close(kvs_seqs *ss, uint64_t id, uint32_t tenant, uint64_t req_id);
/* The request id of closes made by kvs_seq_expire (clients count theirs up from below
 * 2^63; a close sent with this id would be reported as an expiry afterwards). */
#define KVS_REQ_EXPIRED UINT64_MAX
/* The request id of closes asked for on the admin socket (kvctl close). */
#define KVS_REQ_ADMIN (UINT64_MAX - 1)
/* 1 with *req_id the request that closed id of tenant, if that is still known: its slot has
 * not been taken since (the record keeps it in shared memory, across restarts), or it is
 * among the last KVS_GONE_KEPT closes by the reserved ids above. Else 0. */
int kvs_seq_closer(const kvs_seqs *ss, uint64_t id, uint32_t tenant, uint64_t *req_id);
/* 1 if request req_id of tenant closed id, as far as kvs_seq_closer knows: a resent close is
 * then answered success. */
static inline int kvs_seq_closed_by(const kvs_seqs *ss, uint64_t id, uint32_t tenant,
                                    uint64_t req_id)
{
    uint64_t who;
    return kvs_seq_closer(ss, id, tenant, &who) && who == req_id;
}

/* Stamps the sequence of rec as named by a request at now (ms). */
static inline void kvs_seq_touch(kvs_seqs *ss, const kva_seq *rec, uint64_t now)
{
    kvs_seq_priv(ss, rec)->used_ms = now;
}

/* Called by kvs_seq_expire with each sequence it is about to close and its page count. */
typedef void (*kvs_seq_expire_fn)(void *arg, const kva_seq *rec, uint32_t n_pages);

/* Closes every live sequence not named since now - idle_ms and with no job in flight, as
 * kvs_seq_close by request KVS_REQ_EXPIRED, calling fn first for each (fn may be NULL).
 * Returns how many it closed. */
uint32_t kvs_seq_expire(kvs_seqs *ss, uint64_t now, uint64_t idle_ms, kvs_seq_expire_fn fn,
                        void *arg);
/* 1 if kvs_seq_expire closed id of tenant (see kvs_seq_closer). */
static inline int kvs_seq_expired(const kvs_seqs *ss, uint64_t id, uint32_t tenant)
{
    return kvs_seq_closed_by(ss, id, tenant, KVS_REQ_EXPIRED);
}

/* A new sequence sharing every page of id, created by request req_id (the child's
 * last_req, as for open). Returns 0 with its id in *child. Errors: NOSEQ, BUSY, STATE
 * (tokens pending), NOMEM (table full), QUOTA (as for open). */
int kvs_seq_fork(kvs_seqs *ss, uint64_t id, uint32_t tenant, uint64_t req_id, uint64_t *child);
/* Reserves n tokens for request req_id (see kvclient.h for the cached-prefix rule); the
 * record keeps req_id and *cached (last_req, last_cached) until its next change, so a
 * retried extend is answered from it. *cached (may be NULL): leading tokens of this call
 * attached from the prefix cache. Errors: NOSEQ, BUSY, STATE, INVAL (n 0), NOMEM, QUOTA. */
int kvs_seq_extend(kvs_seqs *ss, uint64_t id, uint32_t tenant, uint64_t req_id,
                   const uint32_t *tokens, uint32_t n, uint32_t *cached);
/* Leading tokens of tokens[0..n) cached for tenant now (full pages, at most n-1 tokens:
 * what an extend of a new sequence would attach). Read-only. */
uint32_t kvs_prefix_match(const kvs_seqs *ss, uint32_t tenant, const uint32_t *tokens,
                          uint32_t n, uint32_t *pages_out);
/* One layer of the pending tokens is written. After the last layer they become valid and
 * full pages are committed (and deduplicated against the prefix index). */
void kvs_seq_layer_done(kvs_seqs *ss, kva_seq *rec);

/* Takes (pin = 1) or drops (pin = 0) one reference on each of pages[0..n), so a job's
 * pages outlive anything that happens to their sequence while the job runs. */
void kvs_pages_pin(kvs_pages *pg, const uint32_t *pages, uint32_t n, int pin);

#endif
