/* seq.c — sequences over the page allocator (see seq.h).
 *
 * Copy-on-write: a sequence that appends to a partial tail page shared by forks gets a page
 * of its own first. The server copies only the descriptor (token ids) and keeps a reference
 * to the shared page in the record (cow_src); the K/V of its valid tokens are copied by the
 * workers, each Attend job copying its own layer before writing the new rows (JobItem
 * cow_src), so no page data crosses the server's poll loop. The shared page's valid tokens
 * are immutable while it is held; the last layer drops the hold. */
#include "seq.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "proto/kverr.h"

#define NONE KVA_NO_PAGE
#define SLOT_BITS 32

static uint32_t page_tokens(const kvs_seqs *ss) { return ss->h->page_tokens; }

/* Brackets a change of several record fields (see kva_seq): the stores are ordered for the
 * compiler; a killed process leaves its earlier stores in shared memory, in order. */
static void change_begin(kva_seq *rec)
{
    rec->undo = rec->f;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    rec->dirty = 1;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

static void change_end(kva_seq *rec)
{
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    rec->dirty = 0;
}

static int pt_reserve(kvs_seq *s, uint32_t n)
{
    if (n <= s->cap)
        return 0;
    uint32_t cap = s->cap ? s->cap : 8;
    while (cap < n) cap *= 2;
    uint32_t *pt = realloc(s->pt, sizeof(uint32_t) * cap);
    if (!pt)
        return KV_ERR_NOMEM;
    s->pt = pt;
    s->cap = cap;
    return 0;
}

void kvs_pages_pin(kvs_pages *pg, const uint32_t *pages, uint32_t n, int pin)
{
    for (uint32_t i = n; i-- > 0;) { /* tail first: leaves are released before parents */
        if (pin) kvs_page_ref(pg, pages[i]);
        else kvs_page_unref(pg, pages[i]);
    }
}

kva_seq *kvs_seq_live(const kvs_seqs *ss, uint64_t id)
{
    uint32_t slot = (uint32_t)id;
    if (id == 0 || slot >= ss->h->max_seqs)
        return NULL;
    kva_seq *rec = kva_seq_at(ss->h, slot);
    return rec->state == KVA_SEQ_LIVE && rec->id == id ? rec : NULL;
}

kva_seq *kvs_seq_find(const kvs_seqs *ss, uint64_t id, uint32_t tenant)
{
    kva_seq *rec = kvs_seq_live(ss, id);
    return rec && rec->tenant == tenant ? rec : NULL;
}

/* Takes a free slot with room for a page table of pt_min entries (8 at least: a live
 * sequence always has a page table array) and fills its record as created by request
 * req_id; slot_publish makes it LIVE when it is complete. NULL with *rc KV_ERR_NOMEM (table
 * full, out of memory) or KV_ERR_QUOTA (the tenant's limit); nothing changed then. */
static kva_seq *slot_take(kvs_seqs *ss, uint32_t tenant, uint64_t req_id, uint32_t pt_min,
                          int *rc)
{
    *rc = ss->tenant_max[tenant] && ss->per_tenant[tenant] >= ss->tenant_max[tenant]
          ? KV_ERR_QUOTA : ss->n_free == 0 ? KV_ERR_NOMEM : 0;
    if (*rc)
        return NULL;
    uint32_t slot = ss->free_slots[ss->free_head];
    if ((*rc = pt_reserve(&ss->s[slot], pt_min > 8 ? pt_min : 8)) != 0)
        return NULL;
    ss->free_head = (ss->free_head + 1) % ss->h->max_seqs;
    ss->n_free--;
    kva_seq *rec = kva_seq_at(ss->h, slot);
    memset(rec, 0, sizeof(*rec));
    if ((uint32_t)++ss->h->next_seq_gen == 0) /* generation 0 would make id 0 possible */
        ss->h->next_seq_gen++;
    rec->id = ((uint64_t)(uint32_t)ss->h->next_seq_gen << SLOT_BITS) | slot;
    rec->tenant = tenant;
    rec->tail = NONE;
    rec->cow_src = NONE;
    rec->last_req = req_id;
    ss->s[slot].n_pt = 0;
    ss->s[slot].busy_job = 0;
    ss->s[slot].used_ms = 0;
    ss->live++;
    ss->per_tenant[tenant]++;
    return rec;
}

/* Marks a complete record LIVE, last: a record is either absent or complete. */
static uint64_t slot_publish(kva_seq *rec)
{
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    rec->state = KVA_SEQ_LIVE;
    return rec->id;
}

/* Puts slot at the end of the free ring. */
static void slot_free_push(kvs_seqs *ss, uint32_t slot)
{
    ss->free_slots[(ss->free_head + ss->n_free++) % ss->h->max_seqs] = slot;
}

/* Frees a record, leaving a tombstone until the slot is taken again: the closed id's
 * generation and the closing request req_id (kvs_seq_closer). */
static void slot_release(kvs_seqs *ss, kva_seq *rec, uint64_t req_id)
{
    uint32_t slot = (uint32_t)rec->id;
    ss->live--;
    ss->per_tenant[rec->tenant]--;
    rec->closed_gen = (uint32_t)(rec->id >> SLOT_BITS);
    rec->last_req = req_id;
    rec->state = KVA_SEQ_FREE;
    if (req_id >= KVS_REQ_ADMIN) {
        ss->gone[ss->gone_next] = (kvs_gone){ rec->id, req_id, rec->tenant };
        ss->gone_next = (ss->gone_next + 1) % KVS_GONE_KEPT;
    }
    rec->id = 0;
    ss->s[slot].n_pt = 0;
    slot_free_push(ss, slot);
}

int kvs_seq_open(kvs_seqs *ss, uint32_t tenant, uint64_t req_id, uint64_t *id)
{
    int rc;
    kva_seq *rec = slot_take(ss, tenant, req_id, 0, &rc);
    if (!rec)
        return rc;
    *id = slot_publish(rec);
    return 0;
}

/* The record of id if it may change now: live, the tenant's, no job in flight and (unless
 * pending_ok) no pending tokens. Else NULL with *rc NOSEQ, BUSY or STATE. */
static kva_seq *seq_idle(const kvs_seqs *ss, uint64_t id, uint32_t tenant, int pending_ok, int *rc)
{
    kva_seq *rec = kvs_seq_find(ss, id, tenant);
    *rc = !rec ? KV_ERR_NOSEQ : kvs_seq_priv(ss, rec)->busy_job ? KV_ERR_BUSY
          : rec->pending && !pending_ok ? KV_ERR_STATE : 0;
    return *rc ? NULL : rec;
}

int kvs_seq_close(kvs_seqs *ss, uint64_t id, uint32_t tenant, uint64_t req_id)
{
    int rc;
    kva_seq *rec = seq_idle(ss, id, tenant, 1, &rc);
    if (!rec)
        return rc;
    kvs_seq *s = kvs_seq_priv(ss, rec);
    uint32_t src = rec->cow_src; /* closed before its copy was done: the hold goes last, so a
                                  * server killed before the record is freed finds it whole */
    kvs_pages_pin(ss->pg, s->pt, s->n_pt, 0);
    slot_release(ss, rec, req_id);
    if (src != NONE)
        kvs_page_unref(ss->pg, src);
    return 0;
}

int kvs_seq_closer(const kvs_seqs *ss, uint64_t id, uint32_t tenant, uint64_t *req_id)
{
    uint32_t slot = (uint32_t)id, gen = (uint32_t)(id >> SLOT_BITS);
    if (slot >= ss->h->max_seqs || gen == 0)
        return 0;
    const kva_seq *rec = kva_seq_at(ss->h, slot);
    if (rec->state == KVA_SEQ_FREE && rec->closed_gen == gen && rec->tenant == tenant) {
        *req_id = rec->last_req;
        return 1;
    }
    for (uint32_t i = 0; i < KVS_GONE_KEPT; i++)
        if (ss->gone[i].id == id && ss->gone[i].tenant == tenant) {
            *req_id = ss->gone[i].req_id;
            return 1;
        }
    return 0;
}

uint32_t kvs_seq_expire(kvs_seqs *ss, uint64_t now, uint64_t idle_ms, kvs_seq_expire_fn fn,
                        void *arg)
{
    uint32_t n = 0;
    for (uint32_t slot = 0; slot < ss->h->max_seqs && ss->live > 0; slot++) {
        kva_seq *rec = kva_seq_at(ss->h, slot);
        kvs_seq *s = &ss->s[slot];
        if (rec->state != KVA_SEQ_LIVE || s->busy_job)
            continue;
        if (s->used_ms == 0)
            s->used_ms = now;
        if (now - s->used_ms < idle_ms)
            continue;
        if (fn)
            fn(arg, rec, s->n_pt);
        int rc = kvs_seq_close(ss, rec->id, rec->tenant, KVS_REQ_EXPIRED);
        assert(rc == 0);
        (void)rc;
        n++;
    }
    return n;
}

int kvs_seq_fork(kvs_seqs *ss, uint64_t id, uint32_t tenant, uint64_t req_id, uint64_t *child)
{
    int rc;
    kva_seq *rec = seq_idle(ss, id, tenant, 0, &rc);
    if (!rec)
        return rc;
    kvs_seq *s = kvs_seq_priv(ss, rec);
    kva_seq *crec = slot_take(ss, tenant, req_id, s->n_pt, &rc);
    if (!crec)
        return rc;
    kvs_seq *c = kvs_seq_priv(ss, crec);
    memcpy(c->pt, s->pt, sizeof(uint32_t) * s->n_pt);
    c->n_pt = s->n_pt;
    kvs_pages_pin(ss->pg, c->pt, c->n_pt, 1);
    crec->len = rec->len;
    crec->tail = rec->tail;
    *child = slot_publish(crec);
    return 0;
}

uint32_t kvs_prefix_match(const kvs_seqs *ss, uint32_t tenant, const uint32_t *tokens,
                          uint32_t n, uint32_t *pages_out)
{
    const uint32_t P = page_tokens(ss);
    uint32_t max_pages = n ? (n - 1) / P : 0, hits = 0;
    const uint8_t *parent = NULL;
    uint8_t h[KVA_HASH_BYTES];
    for (; hits < max_pages; hits++) {
        kvs_block_hash(parent, ss->salt[tenant], tokens + (size_t)hits * P, P, h);
        uint32_t p = kvs_prefix_find(ss->pg, h);
        if (p == NONE)
            break;
        if (pages_out)
            pages_out[hits] = p;
        parent = kvs_page(ss->pg, p)->hash;
    }
    return hits * P;
}

/* Writes token ids into page p from its ntok on; returns how many fit. */
static uint32_t page_fill(kvs_seqs *ss, uint32_t p, const uint32_t *tokens, uint32_t n)
{
    kva_page *d = kvs_page(ss->pg, p);
    uint32_t k = page_tokens(ss) - d->ntok;
    if (k > n) k = n;
    memcpy(d->tokens + d->ntok, tokens, sizeof(uint32_t) * k);
    d->ntok += k;
    return k;
}

/* Replaces the shared partial tail of s with a page of its own (allocation checked before)
 * whose K/V the pending layers' jobs copy from the shared one, held meanwhile in
 * rec->cow_src (the page table's reference moves there); returns the new page. */
static uint32_t tail_copy(kvs_seqs *ss, kvs_seq *s, kva_seq *rec)
{
    uint32_t old = s->pt[s->n_pt - 1], rows = rec->len % page_tokens(ss);
    kva_page *od = kvs_page(ss->pg, old);
    int err = 0;
    uint32_t p = kvs_page_alloc(ss->pg, rec->tenant, od->parent, &err);
    assert(p != NONE);
    kva_page *d = kvs_page(ss->pg, p);
    memcpy(d->tokens, od->tokens, sizeof(uint32_t) * rows);
    d->ntok = rows; /* nvalid stays 0: no layer is copied yet */
    d->state = KVA_PAGE_OPEN;
    s->pt[s->n_pt - 1] = p;
    rec->cow_src = old;
    return p;
}

int kvs_seq_extend(kvs_seqs *ss, uint64_t id, uint32_t tenant, uint64_t req_id,
                   const uint32_t *tokens, uint32_t n, uint32_t *cached)
{
    const uint32_t P = page_tokens(ss);
    int rc;
    kva_seq *rec = seq_idle(ss, id, tenant, 0, &rc);
    if (!rec)
        return rc;
    kvs_seq *s = kvs_seq_priv(ss, rec);
    if (n == 0 || (uint64_t)rec->len + n > UINT32_MAX / 2)
        return KV_ERR_INVAL;

    /* 1. prefix: only on the first extend of an empty sequence */
    uint32_t hit = 0, *hit_pages = NULL, reserved = 0;
    if (rec->len == 0) {
        hit_pages = malloc(sizeof(uint32_t) * (n / P + 1));
        if (!hit_pages)
            return KV_ERR_NOMEM;
        hit = kvs_prefix_match(ss, tenant, tokens, n, hit_pages);
        for (uint32_t i = 0; i < hit / P; i++)
            reserved += kvs_page(ss->pg, hit_pages[i])->ref == 0;
    }
    /* 2. pages needed for the new tokens: room in the tail, a CoW copy, new pages */
    uint32_t m = n - hit, used = rec->len % P, room = 0, cow = 0;
    if (hit == 0 && used) {
        room = P - used;
        cow = kvs_page(ss->pg, rec->tail)->ref > 1;
    }
    uint32_t rest = m > room ? m - room : 0;
    uint32_t need = cow + (rest + P - 1) / P;
    rc = kvs_pages_can_alloc(ss->pg, tenant, need, reserved);
    if (rc == 0)
        rc = pt_reserve(s, s->n_pt + hit / P + need + 1);
    if (rc) {
        free(hit_pages);
        return rc;
    }
    /* 3. nothing can fail from here. The record is written last, in one place: a server
     * killed in between leaves the record as it was (kvs_arena_recover truncates the tail
     * page and frees the pages no record names). */
    uint32_t tail = rec->tail;
    change_begin(rec);
    for (uint32_t i = 0; i < hit / P; i++) {
        kvs_page_ref(ss->pg, hit_pages[i]);
        s->pt[s->n_pt++] = hit_pages[i];
        tail = hit_pages[i];
        if (ss->pg->on_hit)
            ss->pg->on_hit(ss->pg->hook_arg, hit_pages[i]);
    }
    free(hit_pages);
    uint32_t full_pages = n / P; /* full pages of the prompt: hits or misses for the stats */
    if (rec->len == 0) {
        ss->pg->hits += hit / P;
        ss->pg->misses += full_pages - hit / P;
    }
    if (cow)
        tail = tail_copy(ss, s, rec);
    const uint32_t *t = tokens + hit;
    uint32_t left = m;
    if (room)
        left -= page_fill(ss, tail, t, left);
    while (left) {
        int err = 0;
        uint32_t p = kvs_page_alloc(ss->pg, tenant, tail, &err);
        assert(p != NONE);
        left -= page_fill(ss, p, t + (m - left), left);
        s->pt[s->n_pt++] = p;
        tail = p;
    }
    rec->tail = tail;
    rec->len += hit;
    rec->pending = m;
    rec->next_layer = 0;
    rec->last_req = req_id;
    rec->last_cached = hit;
    change_end(rec);
    if (cached)
        *cached = hit;
    return 0;
}

void kvs_seq_layer_done(kvs_seqs *ss, kva_seq *rec)
{
    const uint32_t P = page_tokens(ss);
    kvs_seq *s = kvs_seq_priv(ss, rec);
    assert(rec->pending > 0 && rec->next_layer < ss->h->layers);
    if (rec->next_layer + 1 < ss->h->layers) {
        rec->next_layer++;
        return;
    }
    /* the last layer: pages first, the record last; a server killed in between leaves the
     * record at the last layer (undo), and repeating that layer is harmless */
    change_begin(rec);
    for (uint32_t i = rec->len / P; i < s->n_pt; i++) {
        uint32_t p = s->pt[i];
        kva_page *d = kvs_page(ss->pg, p);
        if (d->state == KVA_PAGE_COMMITTED)
            continue;
        d->nvalid = d->ntok;
        d->state = KVA_PAGE_OPEN;
        if (d->ntok < P)
            continue;
        uint32_t q = kvs_page_commit(ss->pg, p, ss->salt[rec->tenant]);
        if (q == p)
            continue;
        /* the same block is cached already: share it and drop our copy */
        kvs_page_ref(ss->pg, q);
        if (i + 1 < s->n_pt)
            kvs_page_reparent(ss->pg, s->pt[i + 1], q);
        else /* p was the tail: both states of the record name q (same block) before p goes */
            rec->tail = rec->undo.tail = q;
        s->pt[i] = q;
        kvs_page_unref(ss->pg, p);
    }
    rec->tail = s->n_pt ? s->pt[s->n_pt - 1] : NONE;
    rec->len += rec->pending;
    rec->pending = 0;
    rec->next_layer = 0;
    uint32_t src = rec->cow_src; /* every layer is copied: the hold goes, after the record */
    rec->cow_src = NONE;
    change_end(rec);
    if (src != NONE)
        kvs_page_unref(ss->pg, src);
}

/* The page table of a live record (validated by kvs_arena_recover): its tail's parent chain,
 * root first. Page references are already counted in the descriptors. */
static int seq_rebuild(kvs_seqs *ss, const kva_seq *rec)
{
    kvs_seq *s = kvs_seq_priv(ss, rec);
    uint32_t n = 0;
    for (uint32_t p = rec->tail; p != NONE; p = kvs_page(ss->pg, p)->parent)
        n++;
    if (pt_reserve(s, n + 8) != 0)
        return KV_ERR_NOMEM;
    s->n_pt = n;
    for (uint32_t p = rec->tail; p != NONE; p = kvs_page(ss->pg, p)->parent)
        s->pt[--n] = p;
    s->busy_job = 0;
    ss->live++;
    ss->per_tenant[rec->tenant]++;
    return 0;
}

int kvs_seqs_init(kvs_seqs *ss, kva_header *h, kvs_pages *pg, const uint8_t (*salts)[KVA_HASH_BYTES])
{
    memset(ss, 0, sizeof(*ss));
    ss->h = h;
    ss->pg = pg;
    ss->s = calloc(h->max_seqs, sizeof(kvs_seq));
    ss->free_slots = malloc(sizeof(uint32_t) * h->max_seqs);
    ss->salt = malloc(KVA_HASH_BYTES * (size_t)pg->n_tenants);
    ss->gone = calloc(KVS_GONE_KEPT, sizeof(kvs_gone));
    if (!ss->s || !ss->free_slots || !ss->salt || !ss->gone) {
        kvs_seqs_free(ss);
        return KV_ERR_NOMEM;
    }
    memcpy(ss->salt, salts, KVA_HASH_BYTES * (size_t)pg->n_tenants);
    for (uint32_t slot = 0; slot < h->max_seqs; slot++) {
        kva_seq *rec = kva_seq_at(h, slot);
        if (rec->state == KVA_SEQ_LIVE && seq_rebuild(ss, rec) == 0)
            continue;
        if (rec->state == KVA_SEQ_LIVE) {
            kvs_seqs_free(ss);
            return KV_ERR_NOMEM;
        }
        rec->id = 0;
        slot_free_push(ss, slot);
    }
    return 0;
}

void kvs_seqs_free(kvs_seqs *ss)
{
    if (ss->s)
        for (uint32_t i = 0; i < ss->h->max_seqs; i++)
            free(ss->s[i].pt);
    free(ss->s);
    free(ss->free_slots);
    free(ss->salt);
    free(ss->gone);
    memset(ss, 0, sizeof(*ss));
}
