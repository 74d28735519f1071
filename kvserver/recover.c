/* recover.c — validation of a left-behind arena (see recover.h).
 *
 * Trust nothing: the previous server may have died between any two stores. Metadata is
 * only ever written by one server at a time, so what we find is a prefix of its updates:
 * a page may be allocated but not linked, a sequence may name pages that were being
 * written. The rules keep exactly what is provably consistent:
 *   - a COMMITTED page is kept if its block hash still verifies and its parent is a kept
 *     COMMITTED page: then every lookup that reaches it is right (0 lost, 0 wrong);
 *   - a sequence is kept if its whole chain is kept and covers len + pending tokens; the
 *     K/V of its pending tokens stays as the workers left it: next_layer says how far
 *     that went, and an Attend repeated for that layer simply writes it again (and copies
 *     again the layer of a copy-on-write, whose source page the record holds);
 *   - anything else is freed. */
#include "recover.h"

#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "pages.h"
#include "proto/kverr.h"

enum { UNKNOWN = 0, VISITING, GOOD, BAD };

static int own_ok(const kva_header *h, const kva_page *d, uint32_t n_tenants)
{
    uint32_t P = h->page_tokens;
    if (d->state != KVA_PAGE_WRITING && d->state != KVA_PAGE_OPEN && d->state != KVA_PAGE_COMMITTED)
        return 0;
    if (d->tenant >= n_tenants || d->ntok > P || d->nvalid > d->ntok)
        return 0;
    if (d->parent != KVA_NO_PAGE && d->parent >= h->n_pages)
        return 0;
    return d->state != KVA_PAGE_COMMITTED || d->nvalid == P;
}

/* Whether p links correctly to its (GOOD) parent. */
static int link_ok(const kva_header *h, const kva_page *d, const uint8_t (*salt)[KVA_HASH_BYTES])
{
    const kva_page *pd = d->parent == KVA_NO_PAGE ? NULL : kva_page_at(h, d->parent);
    if (pd && (pd->tenant != d->tenant || pd->ntok != h->page_tokens))
        return 0; /* a chain is one tenant's, and only full pages have children */
    if (d->state != KVA_PAGE_COMMITTED)
        return 1;
    if (pd && pd->state != KVA_PAGE_COMMITTED)
        return 0;
    uint8_t want[KVA_HASH_BYTES];
    kvs_block_hash(pd ? pd->hash : NULL, salt[d->tenant], d->tokens, d->ntok, want);
    return memcmp(want, d->hash, KVA_HASH_BYTES) == 0;
}

/* Marks every page GOOD or BAD, walking each chain once (a cycle is BAD). */
static void mark_pages(const kva_header *h, uint32_t n_tenants,
                       const uint8_t (*salt)[KVA_HASH_BYTES], uint8_t *mark, uint32_t *stack)
{
    for (uint32_t p = 0; p < h->n_pages; p++) {
        if (mark[p] != UNKNOWN)
            continue;
        uint32_t n = 0, q = p;
        /* climb to the first page whose fate is known (or the root) */
        for (;;) {
            const kva_page *d = kva_page_at(h, q);
            if (d->state == KVA_PAGE_FREE || !own_ok(h, d, n_tenants)) {
                mark[q] = BAD;
                break;
            }
            mark[q] = VISITING;
            stack[n++] = q;
            if (d->parent == KVA_NO_PAGE || mark[d->parent] != UNKNOWN)
                break;
            q = d->parent;
        }
        /* descend, deciding each page from its parent */
        while (n > 0) {
            uint32_t c = stack[--n];
            const kva_page *d = kva_page_at(h, c);
            int parent_good = d->parent == KVA_NO_PAGE || mark[d->parent] == GOOD;
            mark[c] = parent_good && link_ok(h, d, salt) ? GOOD : BAD; /* VISITING parent: cycle */
        }
    }
}

/* Validates one live record; on success adds a reference to each page of its chain. */
static int seq_restore(kva_header *h, const kva_seq *rec, uint32_t slot, uint32_t n_tenants,
                       const uint8_t *mark, uint32_t *refs, uint32_t *chain)
{
    const uint32_t P = h->page_tokens;
    if ((uint32_t)rec->id != slot || rec->id >> 32 == 0 || rec->tenant >= n_tenants || rec->next_layer >= h->layers ||
        (rec->pending == 0 && rec->next_layer != 0) || (uint64_t)rec->len + rec->pending > UINT32_MAX / 2)
        return 0;
    uint64_t total = (uint64_t)rec->len + rec->pending, want = (total + P - 1) / P, n = 0;
    for (uint32_t p = rec->tail; p != KVA_NO_PAGE; p = kva_page_at(h, p)->parent) {
        if (p >= h->n_pages || mark[p] != GOOD || n == want)
            return 0;
        chain[n++] = p;
    }
    if (n != want)
        return 0;
    /* a copy-on-write in progress: the shared page it copies from is whole and held; the
     * copy (page len / P) has valid K/V only in the layers done, so its nvalid is not asked */
    uint32_t src = rec->cow_src, cow_rows = rec->len % P;
    if (src != KVA_NO_PAGE) {
        const kva_page *sd = src < h->n_pages ? kva_page_at(h, src) : NULL;
        if (!sd || rec->pending == 0 || cow_rows == 0 || mark[src] != GOOD ||
            sd->tenant != rec->tenant || sd->nvalid < cow_rows)
            return 0;
    }
    for (uint64_t i = 0; i < n; i++) { /* chain[0] is the tail: page n-1-i of the sequence */
        const kva_page *d = kva_page_at(h, chain[i]);
        uint64_t first = (n - 1 - i) * P, ntok = total - first < P ? total - first : P;
        uint64_t valid = rec->len > first ? (rec->len - first < P ? rec->len - first : P) : 0;
        if (src != KVA_NO_PAGE && first == rec->len - cow_rows) {
            if (chain[i] == src)
                return 0;
            valid = 0;
        }
        /* the tail may hold tokens of an extend the record never took: truncated below */
        if (d->tenant != rec->tenant || d->nvalid < valid || d->ntok < ntok || (i > 0 && d->ntok != ntok))
            return 0;
    }
    if (n > 0 && kva_page_at(h, chain[0])->state == KVA_PAGE_COMMITTED &&
        total - (n - 1) * P != P)
        return 0; /* a committed page is full and immutable: it cannot be a partial tail */
    if (n > 0) {
        kva_page *tail = kva_page_at(h, chain[0]);
        tail->ntok = (uint32_t)(total - (n - 1) * P);
        if (tail->nvalid > tail->ntok)
            tail->nvalid = tail->ntok;
    }
    for (uint64_t i = 0; i < n; i++)
        refs[chain[i]]++;
    if (src != KVA_NO_PAGE)
        refs[src]++;
    return 1;
}

int kvs_arena_recover(kva_header *h, uint32_t n_tenants, const uint8_t (*salt)[KVA_HASH_BYTES],
                      kvs_recover_stats *st)
{
    uint32_t n = h->n_pages;
    uint8_t *mark = calloc(n, 1);
    uint32_t *stack = malloc(sizeof(uint32_t) * n), *refs = calloc(n, sizeof(uint32_t));
    if (!mark || !stack || !refs) {
        free(mark); free(stack); free(refs);
        return KV_ERR_NOMEM;
    }
    memset(st, 0, sizeof(*st));
    mark_pages(h, n_tenants, salt, mark, stack);
    for (uint32_t slot = 0; slot < h->max_seqs; slot++) {
        kva_seq *rec = kva_seq_at(h, slot);
        if (rec->state == KVA_SEQ_FREE)
            continue;
        if (rec->dirty) { /* killed while changing it: back to the state before the request */
            rec->f = rec->undo;
            rec->dirty = 0;
            st->seqs_undone++;
        }
        if (rec->state == KVA_SEQ_LIVE && seq_restore(h, rec, slot, n_tenants, mark, refs, stack)) {
            st->seqs++;
            continue;
        }
        KVS_WARN("recover: sequence record %u (id %#llx) is inconsistent: dropped", slot,
                 (unsigned long long)rec->id);
        memset(rec, 0, sizeof(*rec));
        st->seqs_dropped++;
    }
    for (uint32_t p = 0; p < n; p++) {
        kva_page *d = kva_page_at(h, p);
        if (d->state == KVA_PAGE_FREE)
            continue;
        int keep = mark[p] == GOOD && (d->state == KVA_PAGE_COMMITTED || refs[p] > 0);
        if (!keep) {
            d->state = KVA_PAGE_FREE; /* kvs_pages_init clears the rest */
            st->dropped++;
            continue;
        }
        if (d->state == KVA_PAGE_WRITING && d->nvalid > 0)
            d->state = KVA_PAGE_OPEN;
        d->ref = refs[p];
        if (d->state == KVA_PAGE_COMMITTED)
            st->committed++;
        else
            st->open++;
    }
    free(mark);
    free(stack);
    free(refs);
    return 0;
}
