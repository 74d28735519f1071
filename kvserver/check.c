/* check.c — the server's self-check (admin Check, `kvctl check`), run by the fault tests
 * after every fault: the allocator's own invariants (kvs_pages_check), and every page's
 * ref count equal to what holds it: the page tables of live sequences, the shared pages
 * their copies-on-write are made from, the pins of jobs queued or running, and the pages
 * of extends waiting for the cold tier. A leak or a
 * double release shows here at once. */
#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "proto/kverr.h"
#include "server.h"

static void count_job(uint32_t *refs, const kvs_job *job)
{
    for (uint32_t i = 0; i < job->n_items; i++)
        for (uint32_t p = 0; p < job->items[i].n_pages; p++)
            refs[job->items[i].pages[p]]++;
}

int kvs_server_check(kvs_server *s, char *why, size_t why_len)
{
    if (kvs_pages_check(&s->pages) != 0) {
        snprintf(why, why_len, "page allocator invariants broken (see the server log)");
        return KV_ERR_INTERNAL;
    }
    uint32_t n = s->pages.n, *refs = calloc(n, sizeof(uint32_t));
    if (!refs) {
        snprintf(why, why_len, "out of memory");
        return KV_ERR_NOMEM;
    }
    uint32_t live = 0;
    for (uint32_t slot = 0; slot < s->cfg.max_seqs; slot++) {
        const kva_seq *rec = kva_seq_at(s->shm.h, slot);
        if (rec->state != KVA_SEQ_LIVE)
            continue;
        live++;
        const kvs_seq *sq = kvs_seq_priv(&s->seqs, rec);
        for (uint32_t i = 0; i < sq->n_pt; i++)
            refs[sq->pt[i]]++;
        if (rec->cow_src != KVA_NO_PAGE)
            refs[rec->cow_src]++;
    }
    for (uint32_t w = 0; w < s->cfg.workers; w++)
        if (s->workers[w].job)
            count_job(refs, s->workers[w].job);
    for (uint32_t t = 0; t < s->cfg.n_tenants; t++)
        for (const kvs_job *j = s->queue_head[t]; j; j = j->next)
            count_job(refs, j);
    kvs_cold_count_refs(s, refs);
    int rc = 0;
    if (live != s->seqs.live) {
        snprintf(why, why_len, "%u live sequence records, %u counted", live, s->seqs.live);
        rc = KV_ERR_INTERNAL;
    }
    for (uint32_t p = 0; p < n && rc == 0; p++)
        if (kvs_page(&s->pages, p)->ref != refs[p]) {
            snprintf(why, why_len, "page %u has ref %u, held %u times", p,
                     kvs_page(&s->pages, p)->ref, refs[p]);
            rc = KV_ERR_INTERNAL;
        }
    free(refs);
    if (rc)
        KVS_ERROR("self-check: %s", why);
    return rc;
}
