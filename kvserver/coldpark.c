/* coldpark.c — extends that wait for pages read back from the cold tier (cold.h).
 *
 * The first extend of a sequence looks its prompt up in the arena's prefix cache, page by
 * page along the hash chain. Where the chain leaves the arena, the cold tier may still hold
 * the next pages: then pages are allocated for them (their token ids set, WRITING, so
 * nothing else touches them), the cached pages before them are pinned, the sequence is
 * marked busy, and the request is parked while the cold tier's thread reads the records
 * back. When it reports, the pages read whole are committed (a twin committed meanwhile is
 * taken instead) and left cached, the rest freed, and the parked request is handled again
 * from the start, as if it had just arrived: the extend then finds the restored pages in
 * the prefix cache. The server's thread never waits for the disk. */
#include <stdlib.h>
#include <string.h>

#include "cold.h"
#include "log.h"
#include "proto/kverr.h"
#include "server.h"

struct kvs_cold_park {
    uint64_t busy_id;        /* the sequence's busy mark while parked */
    uint64_t seq, req_id;
    uint32_t tenant;
    zmq_msg_t route, env;    /* the request, handled again when the pages are back */
    uint32_t *pins, n_pins;  /* the cached pages before them, pinned */
    uint32_t *pages, n;      /* the pages being read back, a chain (ref 1 each) */
    struct kvs_cold_park *next;
};

static void park_free(struct kvs_cold_park *k)
{
    zmq_msg_close(&k->route);
    zmq_msg_close(&k->env);
    free(k->pins);
    free(k->pages);
    free(k);
}

/* Lets go of the pages (children first: committed ones stay cached, the others are freed),
 * of the pins and, once parked, of the sequence's busy mark. */
static void park_release(kvs_server *s, struct kvs_cold_park *k)
{
    for (uint32_t i = k->n; i-- > 0;)
        kvs_page_unref(&s->pages, k->pages[i]);
    kvs_pages_pin(&s->pages, k->pins, k->n_pins, 0);
    kva_seq *rec = k->busy_id ? kvs_seq_live(&s->seqs, k->seq) : NULL;
    if (rec && kvs_seq_priv(&s->seqs, rec)->busy_job == k->busy_id)
        kvs_seq_priv(&s->seqs, rec)->busy_job = 0;
}

int kvs_cold_park_dup(kvs_server *s, uint64_t seq, uint32_t t, uint64_t req_id, zmq_msg_t *route)
{
    for (struct kvs_cold_park *k = s->parks; k; k = k->next)
        if (k->seq == seq && k->tenant == t && k->req_id == req_id) {
            zmq_msg_copy(&k->route, route); /* the answer goes to the latest connection */
            return 1;
        }
    return 0;
}

uint32_t kvs_cold_chain(const kvs_server *s, uint32_t t, const uint32_t *tokens, uint32_t n,
                        uint32_t *hits, uint32_t *n_hits, uint8_t (*hash)[KVA_HASH_BYTES])
{
    const uint32_t P = s->shm.h->page_tokens, max_pages = n ? (n - 1) / P : 0;
    *n_hits = kvs_prefix_match(&s->seqs, t, tokens, n, hits) / P;
    if (!s->cold)
        return 0;
    const uint8_t *parent = *n_hits ? kvs_page(&s->pages, hits[*n_hits - 1])->hash : NULL;
    uint32_t c = 0;
    for (uint32_t i = *n_hits; i < max_pages; i++, c++) { /* the chain on past the arena */
        kvs_block_hash(parent, s->seqs.salt[t], tokens + (size_t)i * P, P, hash[c]);
        if (!kvs_cold_has(s->cold, hash[c], t))
            break;
        parent = hash[c];
    }
    return c;
}

int kvs_cold_park(kvs_server *s, kvp_msg *m, uint64_t req_id, kva_seq *rec, uint32_t t,
                  const uint32_t *tokens, uint32_t n)
{
    const uint32_t P = s->shm.h->page_tokens, max_pages = n ? (n - 1) / P : 0;
    if (!s->cold || rec->len != 0 || max_pages == 0)
        return 0;
    struct kvs_cold_park *k = calloc(1, sizeof(*k));
    uint8_t (*hash)[KVA_HASH_BYTES] = malloc(KVA_HASH_BYTES * (size_t)max_pages);
    uint32_t *hits = malloc(sizeof(uint32_t) * max_pages);
    int parked = 0;
    if (k) {
        zmq_msg_init(&k->route);
        zmq_msg_init(&k->env);
    }
    if (!k || !hash || !hits)
        goto out;
    uint32_t n_hits, reserved = 0, c = kvs_cold_chain(s, t, tokens, n, hits, &n_hits, hash);
    for (uint32_t i = 0; i < n_hits; i++)
        reserved += kvs_page(&s->pages, hits[i])->ref == 0;
    /* none on disk, or no room (then the extend itself fails as without a cold tier) */
    if (c == 0 || kvs_pages_can_alloc(&s->pages, t, c, reserved) != 0)
        goto out;
    k->pages = malloc(sizeof(uint32_t) * c);
    if (!k->pages || zmq_msg_copy(&k->route, &m->route) || zmq_msg_copy(&k->env, &m->env))
        goto out;
    k->pins = hits;
    k->n_pins = n_hits;
    hits = NULL;
    kvs_pages_pin(&s->pages, k->pins, k->n_pins, 1); /* not evicted by the pages below */
    uint32_t up = n_hits ? k->pins[n_hits - 1] : KVA_NO_PAGE;
    for (; k->n < c; k->n++) {
        int err = 0;
        uint32_t p = kvs_page_alloc(&s->pages, t, up, &err);
        if (p == KVA_NO_PAGE) /* can_alloc said there is room: never */
            break;
        kva_page *d = kvs_page(&s->pages, p);
        memcpy(d->tokens, tokens + (size_t)(n_hits + k->n) * P, sizeof(uint32_t) * P);
        d->ntok = P;
        k->pages[k->n] = up = p;
    }
    if (k->n < c || kvs_cold_restore(s->cold, k->pages, (const uint8_t (*)[KVA_HASH_BYTES])hash,
                                     k->n, k) != 0) {
        park_release(s, k);
        goto out;
    }
    k->busy_id = s->next_job_id++;
    k->seq = rec->id;
    k->req_id = req_id;
    k->tenant = t;
    kvs_seq_priv(&s->seqs, rec)->busy_job = k->busy_id;
    k->next = s->parks;
    s->parks = k;
    parked = 1;
    KVS_DEBUG("extend of seq %llx waits for %u pages from the cold tier",
              (unsigned long long)rec->id, c);
out:
    if (!parked && k)
        park_free(k);
    free(hash);
    free(hits);
    return parked;
}

static struct kvs_cold_park *park_unlink(kvs_server *s, struct kvs_cold_park *k)
{
    for (struct kvs_cold_park **l = &s->parks; *l; l = &(*l)->next)
        if (*l == k) {
            *l = k->next;
            return k;
        }
    return NULL;
}

/* The cold tier read a park's pages back (kvs_cold_poll). */
static void park_done(void *arg, void *tag, const uint8_t *ok, uint32_t n)
{
    kvs_server *s = arg;
    struct kvs_cold_park *k = park_unlink(s, tag);
    const uint32_t t = k->tenant;
    uint32_t good = 0;
    for (; good < n && ok[good]; good++) {
        uint32_t p = k->pages[good];
        kva_page *d = kvs_page(&s->pages, p);
        d->nvalid = d->ntok;
        d->state = KVA_PAGE_OPEN;
        uint32_t q = kvs_page_commit(&s->pages, p, s->seqs.salt[t]);
        if (q != p) { /* the same block committed meanwhile (computed): that one is kept */
            if (good + 1 < n)
                kvs_page_reparent(&s->pages, k->pages[good + 1], q);
            kvs_page_ref(&s->pages, q);
            kvs_page_unref(&s->pages, p);
            k->pages[good] = q;
        }
    }
    park_release(s, k); /* the pages read back are cached now, the others freed */
    KVS_DEBUG("cold tier: %u of %u pages read back for seq %llx", good, n,
              (unsigned long long)k->seq);
    kvp_msg m;
    memset(&m, 0, sizeof(m));
    zmq_msg_init(&m.route);
    zmq_msg_init(&m.env);
    zmq_msg_move(&m.route, &k->route);
    zmq_msg_move(&m.env, &k->env);
    m.has_route = m.has_env = 1;
    m.n_frames = 1;
    s->cold_replay = 1; /* handled as it arrived, but never parked again */
    kvs_handle_client(s, &m);
    s->cold_replay = 0;
    kvp_msg_close(&m);
    park_free(k);
}

void kvs_cold_reports(kvs_server *s)
{
    kvs_cold_poll(s->cold, park_done, s);
}

void kvs_cold_stop(kvs_server *s)
{
    kvs_cold_close(s->cold); /* its thread is done with the pages */
    s->cold = NULL;
    s->pages.on_commit = NULL;
    s->pages.on_hit = NULL;
    while (s->parks) {
        struct kvs_cold_park *k = park_unlink(s, s->parks);
        park_release(s, k);
        kvp_send_status(s->client, &k->route, k->req_id, KV_ERR_SHUTDOWN,
                        "server shutting down");
        park_free(k);
    }
}

void kvs_cold_count_refs(const kvs_server *s, uint32_t *refs)
{
    for (const struct kvs_cold_park *k = s->parks; k; k = k->next) {
        for (uint32_t i = 0; i < k->n_pins; i++)
            refs[k->pins[i]]++;
        for (uint32_t i = 0; i < k->n; i++)
            refs[k->pages[i]]++;
    }
}
