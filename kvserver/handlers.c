/* handlers.c — client and admin requests: validate everything, then apply, then answer.
 *
 * Tenant identity: in authenticated mode the ZAP handler (server.c) admits each CURVE
 * connection by its client key, which ZeroMQ stamps on every message as User-Id, and the
 * key's tenant in the current config is the request's (a key a reload removed is refused
 * from its next request on); in development mode a connection names its tenant in Hello.
 * Either way the server remembers it by the connection's routing id (which ZeroMQ assigns,
 * so a client cannot take another's), and no field of any later request can change it. */
#include "server.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cold.h"
#include "log.h"
#include "proto/kverr.h"
#include "proto/validate.h"

/* ---- connections ----
 * An open-addressing table of conn_slots (at least twice the most connections it holds)
 * keyed by routing id, so a lookup per message costs a hash and a probe or two. When it
 * holds cfg.max_conns, the stalest connection is dropped (it must say Hello again, which
 * libkvclient does by itself). */

static uint32_t rid_hash(const uint8_t *rid, size_t len)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++)
        h = (h ^ rid[i]) * 16777619u;
    return h;
}

static kvs_conn *conn_slot(kvs_server *s, const uint8_t *rid, size_t len)
{
    uint32_t i = rid_hash(rid, len) & (s->conn_slots - 1);
    for (;; i = (i + 1) & (s->conn_slots - 1)) { /* never full: at most half the slots */
        kvs_conn *c = &s->conns[i];
        if (c->rid_len == 0 || (c->rid_len == len && memcmp(c->rid, rid, len) == 0))
            return c;
    }
}

static kvs_conn *conn_find(kvs_server *s, zmq_msg_t *route)
{
    kvs_conn *c = conn_slot(s, zmq_msg_data(route), zmq_msg_size(route));
    return c->rid_len ? c : NULL;
}

/* Drops the stalest connection (a full table: rare), closing the gap it leaves in its probe
 * run by moving later entries back (linear-probing deletion, Knuth's algorithm R). */
static void conn_evict_stalest(kvs_server *s)
{
    const uint32_t mask = s->conn_slots - 1;
    uint32_t i = 0;
    for (uint32_t k = 1; k < s->conn_slots; k++)
        if (s->conns[k].rid_len && (!s->conns[i].rid_len || s->conns[k].last_seen_ms < s->conns[i].last_seen_ms))
            i = k;
    s->conns[i].rid_len = 0;
    s->n_conns--;
    for (uint32_t j = (i + 1) & mask; s->conns[j].rid_len; j = (j + 1) & mask) {
        uint32_t home = rid_hash(s->conns[j].rid, s->conns[j].rid_len) & mask;
        /* j stays if its home lies cyclically in (i, j] */
        if (i <= j ? (i < home && home <= j) : (i < home || home <= j))
            continue;
        s->conns[i] = s->conns[j];
        s->conns[j].rid_len = 0;
        i = j;
    }
}

static void conn_add(kvs_server *s, zmq_msg_t *route, uint32_t tenant)
{
    size_t len = zmq_msg_size(route);
    kvs_conn *c = conn_find(s, route);
    if (!c) {
        if (s->n_conns == s->cfg.max_conns)
            conn_evict_stalest(s);
        c = conn_slot(s, zmq_msg_data(route), len);
        s->n_conns++;
    }
    c->rid_len = (uint8_t)len;
    memcpy(c->rid, zmq_msg_data(route), len);
    c->tenant = tenant;
    c->last_seen_ms = kvs_now_ms();
}

#define KEY_REVOKED "this client key is no longer listed for any tenant (the server's config " \
                    "was reloaded without it)"

/* Authenticated mode: the tenant of the client key ZeroMQ stamped on this message (the ZAP
 * handler's User-Id) in the current config, or n_tenants if that key is no longer listed. */
static uint32_t key_tenant(const kvs_server *s, kvp_msg *m)
{
    const char *uid = zmq_msg_gets(&m->env, "User-Id");
    return uid ? kvs_config_key_tenant(&s->cfg, uid) : s->cfg.n_tenants;
}

static uint32_t tenant_index(const kvs_server *s, const char *name)
{
    uint32_t t = 0;
    while (t < s->cfg.n_tenants && strcmp(s->cfg.tenant[t].name, name) != 0)
        t++;
    return t;
}

/* ---- replies ---- */

/* Sends env (its body set by the caller) as the reply to request req_id. */
static void reply(void *sock, kvp_msg *m, uint64_t req_id, Kvarena__Envelope *env)
{
    env->req_id = req_id;
    if (kvp_send(sock, &m->route, env, NULL, 0) != 0)
        KVS_DEBUG("reply dropped: %s", zmq_strerror(zmq_errno()));
}

static void reply_status(kvs_server *s, kvp_msg *m, uint64_t req_id, int status, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void reply_status(kvs_server *s, kvp_msg *m, uint64_t req_id, int status, const char *fmt, ...)
{
    char msg[256] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
    } else if (status) {
        snprintf(msg, sizeof(msg), "%s", kv_strerror(status));
    }
    kvp_send_status(s->client, &m->route, req_id, status, msg);
}

/* ---- requests ---- */

static void on_hello(kvs_server *s, kvp_msg *m, const Kvarena__Envelope *e)
{
    const Kvarena__Hello *h = e->hello;
    if (zmq_msg_size(&m->route) > KVP_MAX_ROUTE) {
        reply_status(s, m, e->req_id, KV_ERR_PROTO, "routing id too long");
        return;
    }
    if (h->version != KVP_VERSION) {
        reply_status(s, m, e->req_id, KV_ERR_PROTO, "protocol version %u, server speaks %u",
                     h->version, KVP_VERSION);
        return;
    }
    const char *want = h->tenant && h->tenant[0] ? h->tenant : s->cfg.tenant[0].name;
    if (s->cfg.secret_key[0]) {
        /* the key decides; a Hello may only confirm it */
        uint32_t kt = key_tenant(s, m);
        if (kt == s->cfg.n_tenants) {
            reply_status(s, m, e->req_id, KV_ERR_REVOKED, KEY_REVOKED);
            return;
        }
        if (h->tenant && h->tenant[0] && strcmp(h->tenant, s->cfg.tenant[kt].name) != 0) {
            reply_status(s, m, e->req_id, KV_ERR_AUTH, "this client key belongs to tenant '%s', not '%.64s'",
                         s->cfg.tenant[kt].name, h->tenant);
            return;
        }
        want = s->cfg.tenant[kt].name;
    }
    uint32_t t = tenant_index(s, want);
    if (t == s->cfg.n_tenants) {
        reply_status(s, m, e->req_id, KV_ERR_AUTH, "unknown tenant '%.64s'", want);
        return;
    }
    conn_add(s, &m->route, t);
    KVS_DEBUG("hello from %s as tenant %s", h->client_name ? h->client_name : "?", want);
    Kvarena__HelloReply hr = KVARENA__HELLO_REPLY__INIT;
    hr.version = KVP_VERSION;
    hr.tenant = s->cfg.tenant[t].name;
    hr.layers = s->cfg.layers;
    hr.q_heads = s->cfg.q_heads;
    hr.kv_heads = s->cfg.kv_heads;
    hr.head_dim = s->cfg.head_dim;
    hr.page_tokens = s->cfg.page_tokens;
    hr.dtype = s->cfg.dtype;
    hr.max_batch_tokens = s->cfg.max_batch_tokens;
    hr.rope = s->cfg.rope;
    hr.rope_theta = s->cfg.rope_theta;
    hr.window = s->cfg.window;
    hr.softcap = s->cfg.softcap;
    hr.alibi_max_bias = s->cfg.alibi_max_bias;
    Kvarena__Envelope r = KVARENA__ENVELOPE__INIT;
    r.body_case = KVARENA__ENVELOPE__BODY_HELLO_REPLY;
    r.hello_reply = &hr;
    reply(s->client, m, e->req_id, &r);
}

static const char *seq_err(int rc)
{
    switch (rc) {
    case KV_ERR_NOSEQ: return "no such sequence for this tenant";
    case KV_ERR_EXPIRED: return "sequence expired: no request named it for the server's "
                                "seq_idle_timeout_s; open a new one (its full pages are still cached)";
    case KV_ERR_BUSY: return "sequence has a job in flight";
    case KV_ERR_STATE: return "sequence has pending tokens: attend every layer first";
    case KV_ERR_NOMEM: return "out of KV memory: every page is in use, nothing is evictable";
    case KV_ERR_QUOTA: return "tenant quota exceeded: its pages are all in use";
    default: return kv_strerror(rc);
    }
}

/* rc and *why for an operation on sequence id of t; where rc says NOSEQ, why it is gone:
 * expired (rc becomes KV_ERR_EXPIRED), closed by an operator, or never there. */
static int seq_gone(const kvs_server *s, int rc, uint64_t id, uint32_t t, const char **why)
{
    uint64_t who;
    int known = rc == KV_ERR_NOSEQ && kvs_seq_closer(&s->seqs, id, t, &who);
    if (known && who == KVS_REQ_EXPIRED)
        rc = KV_ERR_EXPIRED;
    *why = known && who == KVS_REQ_ADMIN ? "sequence closed by an operator (kvctl close)"
                                         : seq_err(rc);
    return rc;
}

/* Stamps sequence id of t (if live) as named by a request now: see seqs_expire. */
static void seq_touch(kvs_server *s, uint64_t id, uint32_t t)
{
    const kva_seq *rec = kvs_seq_find(&s->seqs, id, t);
    if (rec)
        kvs_seq_touch(&s->seqs, rec, s->clock_ms);
}

/* The live sequence that open or fork request req_id of tenant t created, or 0: the answer
 * to a resend. A resend can overtake its original (the client's new connection may be read
 * first), so every open and fork asks: the recent creations are remembered in a small ring;
 * a marked retry after a restart (ring gone) falls back to a scan of the sequence table. */
static uint64_t created_by(kvs_server *s, uint32_t t, uint64_t req_id, int retry)
{
    for (uint32_t i = 0; i < KVS_RECENT; i++) {
        const kvs_created *c = &s->recent[i];
        if (c->req_id != req_id || c->tenant != t || !c->seq)
            continue;
        const kva_seq *rec = kvs_seq_find(&s->seqs, c->seq, t);
        return rec && rec->last_req == req_id ? c->seq : 0;
    }
    for (uint32_t slot = 0; retry && slot < s->cfg.max_seqs; slot++) {
        const kva_seq *rec = kva_seq_at(s->shm.h, slot);
        if (rec->state == KVA_SEQ_LIVE && rec->tenant == t && rec->last_req == req_id)
            return rec->id;
    }
    return 0;
}

/* SeqOpen and Fork: both create a sequence and answer its id. */
static void on_create(kvs_server *s, kvp_msg *m, const Kvarena__Envelope *e, uint32_t t)
{
    int fork = e->body_case == KVARENA__ENVELOPE__BODY_FORK;
    if (fork) /* named: alive, whether or not the fork can be made */
        seq_touch(s, e->fork->seq, t);
    uint64_t id = created_by(s, t, e->req_id, e->retry);
    if (!id) {
        int rc = fork ? kvs_seq_fork(&s->seqs, e->fork->seq, t, e->req_id, &id)
                      : kvs_seq_open(&s->seqs, t, e->req_id, &id);
        const char *why = seq_err(rc);
        if (fork)
            rc = seq_gone(s, rc, e->fork->seq, t, &why);
        if (rc) {
            if (rc == KV_ERR_QUOTA)
                reply_status(s, m, e->req_id, rc, "tenant %s has its max_seqs = %u sequences "
                             "open: close some first", s->cfg.tenant[t].name,
                             s->cfg.tenant[t].max_seqs);
            else
                reply_status(s, m, e->req_id, rc, "%s", rc == KV_ERR_NOMEM ? "sequence table full" : why);
            return;
        }
        s->recent[s->recent_next++ % KVS_RECENT] = (kvs_created){ e->req_id, id, t };
    }
    seq_touch(s, id, t);
    Kvarena__SeqOpenReply so = KVARENA__SEQ_OPEN_REPLY__INIT;
    Kvarena__ForkReply fr = KVARENA__FORK_REPLY__INIT;
    so.seq = fr.seq = id;
    Kvarena__Envelope r = KVARENA__ENVELOPE__INIT;
    if (fork) {
        r.body_case = KVARENA__ENVELOPE__BODY_FORK_REPLY;
        r.fork_reply = &fr;
    } else {
        r.body_case = KVARENA__ENVELOPE__BODY_SEQ_OPEN_REPLY;
        r.seq_open_reply = &so;
    }
    reply(s->client, m, e->req_id, &r);
}

static void on_seq_close(kvs_server *s, kvp_msg *m, const Kvarena__Envelope *e, uint32_t t)
{
    uint64_t id = e->seq_close->seq;
    int rc = kvs_seq_close(&s->seqs, id, t, e->req_id);
    uint64_t who;
    if (rc == KV_ERR_NOSEQ && kvs_seq_closer(&s->seqs, id, t, &who)
        && (who == e->req_id || who == KVS_REQ_EXPIRED || who == KVS_REQ_ADMIN))
        rc = 0; /* closed by the first try of this request, expired or closed by an operator */
    if (rc)
        reply_status(s, m, e->req_id, rc, "%s", seq_err(rc));
    else
        reply_status(s, m, e->req_id, 0, NULL);
}

static void on_extend(kvs_server *s, kvp_msg *m, const Kvarena__Envelope *e, uint32_t t)
{
    const Kvarena__Extend *x = e->extend;
    kva_seq *rec = kvs_seq_find(&s->seqs, x->seq, t);
    if (rec) /* named: alive, whether or not the extend can be applied */
        kvs_seq_touch(&s->seqs, rec, s->clock_ms);
    uint32_t cached = 0;
    int rc = 0;
    const char *why = NULL;
    if (e->retry && rec && rec->last_req == e->req_id && rec->pending > 0) {
        cached = rec->last_cached; /* applied by the first try: answer from the record */
    } else if (rec && kvs_cold_park_dup(s, x->seq, t, e->req_id, &m->route)) {
        return; /* the first try waits for the cold tier: its answer comes */
    } else if (rec && !s->cold_replay && !kvs_seq_priv(&s->seqs, rec)->busy_job &&
               rec->pending == 0 &&
               kvs_cold_park(s, m, e->req_id, rec, t, x->tokens, (uint32_t)x->n_tokens)) {
        return; /* answered when its pages are read back */
    } else {
        rc = seq_gone(s, kvs_seq_extend(&s->seqs, x->seq, t, e->req_id, x->tokens,
                                        (uint32_t)x->n_tokens, &cached), x->seq, t, &why);
    }
    if (rc) {
        reply_status(s, m, e->req_id, rc, "%s", why);
        return;
    }
    Kvarena__ExtendReply xr = KVARENA__EXTEND_REPLY__INIT;
    xr.cached = cached;
    xr.len = rec->len;
    xr.pending = rec->pending;
    Kvarena__Envelope r = KVARENA__ENVELOPE__INIT;
    r.body_case = KVARENA__ENVELOPE__BODY_EXTEND_REPLY;
    r.extend_reply = &xr;
    reply(s->client, m, e->req_id, &r);
}

static void on_lookup(kvs_server *s, kvp_msg *m, const Kvarena__Envelope *e, uint32_t t)
{
    const Kvarena__Lookup *l = e->lookup;
    Kvarena__LookupReply lr = KVARENA__LOOKUP_REPLY__INIT;
    const uint32_t n = (uint32_t)l->n_tokens, P = s->shm.h->page_tokens;
    uint32_t *hits = malloc(sizeof(uint32_t) * (n / P + 1)), n_hits = 0;
    uint8_t (*hash)[KVA_HASH_BYTES] = malloc(KVA_HASH_BYTES * (size_t)(n / P + 1));
    if (!hits || !hash) {
        free(hits);
        free(hash);
        reply_status(s, m, e->req_id, KV_ERR_NOMEM, "server out of memory");
        return;
    }
    lr.on_disk = kvs_cold_chain(s, t, l->tokens, n, hits, &n_hits, hash) * P;
    lr.cached = n_hits * P;
    free(hits);
    free(hash);
    Kvarena__Envelope r = KVARENA__ENVELOPE__INIT;
    r.body_case = KVARENA__ENVELOPE__BODY_LOOKUP_REPLY;
    r.lookup_reply = &lr;
    reply(s->client, m, e->req_id, &r);
}

/* How one item of an Attend is served. */
enum item_kind { ITEM_BAD = 0, ITEM_RUN, ITEM_REPLAY };

/* A retried Attend may find its item already applied (the reply was lost to a timeout or a
 * server restart): then the layer is REPLAYED — attention over the K/V the first try
 * wrote, nothing written or advanced again. Anything else must be the normal next step. */
static int item_kind(const kvs_server *s, const kva_seq *rec, const Kvarena__Attend *a,
                     const Kvarena__AttendItem *it, int retry, uint64_t req_id)
{
    if (rec->pending > 0 && it->n_new == rec->pending && a->layer == rec->next_layer)
        return ITEM_RUN;
    if (!retry || rec->last_req != req_id)
        return ITEM_BAD;
    if (rec->pending > 0 && it->n_new == rec->pending && a->layer + 1 == rec->next_layer)
        return ITEM_REPLAY;
    if (rec->pending == 0 && a->layer + 1 == s->cfg.layers && it->n_new <= rec->len)
        return ITEM_REPLAY;
    return ITEM_BAD;
}

/* The job in flight (queued or running) with this id, or NULL. */
static kvs_job *job_find(kvs_server *s, uint64_t id)
{
    for (uint32_t i = 0; i < s->cfg.workers; i++)
        if (s->workers[i].job && s->workers[i].job->id == id)
            return s->workers[i].job;
    for (uint32_t t = 0; t < s->cfg.n_tenants; t++)
        for (kvs_job *j = s->queue_head[t]; j; j = j->next)
            if (j->id == id)
                return j;
    return NULL;
}

/* Checks an Attend (already checked by kvp_check_request) against the sequences' state; on
 * success fills the job's items (pages not yet pinned). KV_ERR_BUSY with *dup set: the same
 * request is still in flight (a retry that came too early). */
static int attend_check(kvs_server *s, const Kvarena__Envelope *e, uint32_t t, kvs_job *job,
                        kvs_job **dup, char *why, size_t why_len)
{
    const Kvarena__Attend *a = e->attend;
    const uint32_t P = s->cfg.page_tokens;
    s->stamp_now++;
    job->items = calloc(a->n_items, sizeof(kvs_job_item));
    if (!job->items)
        return KV_ERR_NOMEM;
    for (size_t i = 0; i < a->n_items; i++) {
        const Kvarena__AttendItem *it = a->items[i];
        kva_seq *rec = kvs_seq_find(&s->seqs, it->seq, t);
        if (!rec) {
            const char *gone;
            int rc = seq_gone(s, KV_ERR_NOSEQ, it->seq, t, &gone);
            snprintf(why, why_len, "item %zu: sequence %#llx: %s", i,
                     (unsigned long long)it->seq, gone);
            return rc;
        }
        kvs_seq_touch(&s->seqs, rec, s->clock_ms);
        uint32_t slot = (uint32_t)rec->id;
        if (s->stamp[slot] == s->stamp_now) {
            snprintf(why, why_len, "item %zu: sequence named twice in one batch", i);
            return KV_ERR_INVAL;
        }
        s->stamp[slot] = s->stamp_now;
        kvs_seq *sq = kvs_seq_priv(&s->seqs, rec);
        if (sq->busy_job) {
            kvs_job *j = job_find(s, sq->busy_job);
            if (e->retry && j && j->req_id == e->req_id)
                *dup = j;
            snprintf(why, why_len, "item %zu: sequence has a job in flight", i);
            return KV_ERR_BUSY;
        }
        int kind = item_kind(s, rec, a, it, e->retry, e->req_id);
        if (kind == ITEM_BAD) {
            snprintf(why, why_len, "item %zu: sequence expects layer %u with n_new %u, got layer %u n_new %u",
                     i, rec->next_layer, rec->pending, a->layer, it->n_new);
            return KV_ERR_STATE;
        }
        kvs_job_item *ji = &job->items[job->n_items++];
        ji->seq = rec->id;
        ji->replay = kind == ITEM_REPLAY;
        ji->n_new = it->n_new;
        ji->n_kv = rec->pending ? rec->len : rec->len - it->n_new;
        /* seq.c: copy-on-write, unless a restart undid a last layer after the copy had
         * been committed (then it is the cached twin of the copy: valid and immutable) */
        if (kind == ITEM_RUN && rec->cow_src != KVA_NO_PAGE &&
            kvs_page(&s->pages, sq->pt[rec->len / P])->state != KVA_PAGE_COMMITTED) {
            ji->cow_src = rec->cow_src;
            ji->cow_rows = rec->len % P;
        }
        ji->n_pages = (ji->n_kv + ji->n_new + P - 1) / P;
        ji->pages = malloc(sizeof(uint32_t) * ji->n_pages);
        if (!ji->pages)
            return KV_ERR_NOMEM;
        memcpy(ji->pages, sq->pt, sizeof(uint32_t) * ji->n_pages);
        job->tokens += it->n_new;
    }
    return 0;
}

static void on_attend(kvs_server *s, kvp_msg *m, const Kvarena__Envelope *e, uint32_t t)
{
    kvs_job *job = calloc(1, sizeof(*job)), *dup = NULL;
    char why[256] = "";
    if (!job) {
        reply_status(s, m, e->req_id, KV_ERR_NOMEM, "server out of memory");
        return;
    }
    zmq_msg_init(&job->route);
    for (int i = 0; i < 3; i++)
        zmq_msg_init(&job->tensor[i]);
    int rc = attend_check(s, e, t, job, &dup, why, sizeof(why));
    if (rc) {
        kvs_job_free(job);
        if (dup) /* the first try is still running: its reply goes to this connection */
            zmq_msg_copy(&dup->route, &m->route);
        else
            reply_status(s, m, e->req_id, rc, "%s", why);
        return;
    }
    job->id = s->next_job_id++;
    job->arrived_us = kvs_now_us();
    job->req_id = e->req_id;
    job->tenant = t;
    job->layer = e->attend->layer;
    job->want_lse = e->attend->want_lse;
    job->scale = e->attend->scale;
    zmq_msg_move(&job->route, &m->route);
    for (int i = 0; i < 3; i++)
        zmq_msg_move(&job->tensor[i], &m->tensor[i]);
    for (uint32_t i = 0; i < job->n_items; i++) {
        kvs_job_item *ji = &job->items[i];
        kvs_pages_pin(&s->pages, ji->pages, ji->n_pages, 1);
        s->seqs.s[(uint32_t)ji->seq].busy_job = job->id; /* attend_check found it: its slot */
    }
    kvs_job_enqueue(s, job, 0);
}

/* ---- stats (client and admin) ---- */

/* What only the admin socket is told: per tenant, per worker, latency, the files' paths
 * (Stats on the client socket, which any tenant may ask, carries the server-wide counts). */
typedef struct stats_parts {
    Kvarena__LatencyHist lh[KVS_LAT_KINDS * KVS_LAT_STAGES], *lp[KVS_LAT_KINDS * KVS_LAT_STAGES];
    Kvarena__WorkerStats ws[256], *wp[256];
    Kvarena__TenantStats ts[KVS_MAX_TENANTS], *tp[KVS_MAX_TENANTS];
} stats_parts;

static void stats_admin(const kvs_server *s, Kvarena__StatsReply *st, stats_parts *p)
{
    st->snapshot_path = (char *)s->cfg.snapshot;
    st->cold_dir = (char *)s->cfg.cold_dir;
    for (int k = 0, i = 0; k < KVS_LAT_KINDS; k++)
        for (int g = 0; g < KVS_LAT_STAGES; g++, i++) {
            const kvs_hist *h = &s->latency.h[k][g];
            kvarena__latency_hist__init(&p->lh[i]);
            p->lh[i].kind = (char *)kvs_lat_kind_names[k];
            p->lh[i].stage = (char *)kvs_lat_stage_names[g];
            p->lh[i].counts = (uint64_t *)h->counts;
            p->lh[i].n_counts = KVS_LAT_BUCKETS;
            p->lh[i].sum_us = h->sum_us;
            p->lp[i] = &p->lh[i];
        }
    st->latency = p->lp;
    st->n_latency = KVS_LAT_KINDS * KVS_LAT_STAGES;
    st->latency_bounds_us = (uint64_t *)kvs_lat_bounds_us;
    st->n_latency_bounds_us = KVS_LAT_BUCKETS - 1;
    for (uint32_t i = 0; i < s->cfg.workers; i++) {
        kvarena__worker_stats__init(&p->ws[i]);
        p->ws[i].index = i;
        p->ws[i].pid = s->workers[i].pid;
        p->ws[i].state = (char *)kvs_worker_state_name(s->workers[i].state);
        p->ws[i].jobs = s->workers[i].jobs;
        p->ws[i].restarts = s->workers[i].restarts;
        p->ws[i].isa = (char *)s->workers[i].isa;
        p->ws[i].threads = s->workers[i].threads;
        p->wp[i] = &p->ws[i];
    }
    st->workers = p->wp;
    st->n_workers = s->cfg.workers;
    for (uint32_t t = 0; t < s->cfg.n_tenants; t++) {
        kvarena__tenant_stats__init(&p->ts[t]);
        p->ts[t].name = (char *)s->cfg.tenant[t].name;
        p->ts[t].pages = s->pages.tenant[t].pages;
        p->ts[t].quota = s->pages.tenant[t].quota;
        p->ts[t].sequences = s->seqs.per_tenant[t];
        p->ts[t].jobs = s->tenant_jobs[t];
        p->tp[t] = &p->ts[t];
    }
    st->tenants = p->tp;
    st->n_tenants = s->cfg.n_tenants;
}

static void on_stats(kvs_server *s, void *sock, kvp_msg *m, uint64_t req_id)
{
    const kvs_pages *pg = &s->pages;
    Kvarena__StatsReply st = KVARENA__STATS_REPLY__INIT;
    st.pages_total = pg->n;
    st.pages_free = pg->n_free;
    st.pages_cached = pg->n_cached;
    st.pages_in_use = pg->n - pg->n_free - pg->n_cached;
    st.prefix_hits = pg->hits;
    st.prefix_misses = pg->misses;
    st.evictions = pg->evictions;
    st.sequences = s->seqs.live;
    st.seqs_expired = s->seqs_expired;
    st.jobs_done = s->jobs_done;
    st.jobs_failed = s->jobs_failed;
    st.jobs_retried = s->jobs_retried;
    st.jobs_queued = s->jobs_queued;
    st.epoch = s->shm.h->epoch;
    st.arena_bytes = s->shm.bytes;
    st.uptime_ms = kvs_now_ms() - s->start_ms;
    st.snapshot_age_ms = s->snap_done_ms ? kvs_now_ms() - s->snap_done_ms + 1 : 0;
    st.snapshot_pages = s->snap_done_pages;
    st.snapshot_running = s->snap != NULL;
    if (s->cold) {
        kvs_cold_stats cs;
        kvs_cold_stats_get(s->cold, &cs);
        st.cold_pages = cs.pages;
        st.cold_bytes = cs.bytes;
        st.cold_stored = cs.stored;
        st.cold_restored = cs.restored;
        st.cold_failed = cs.failed;
        st.cold_skipped = cs.skipped;
        st.cold_dropped = cs.dropped;
    }
    st.rows_prefill = s->latency.rows[KVS_LAT_PREFILL];
    st.rows_decode = s->latency.rows[KVS_LAT_DECODE];
    stats_parts parts;
    if (sock == s->admin)
        stats_admin(s, &st, &parts);
    Kvarena__Envelope r = KVARENA__ENVELOPE__INIT;
    r.body_case = KVARENA__ENVELOPE__BODY_STATS_REPLY;
    r.stats_reply = &st;
    reply(sock, m, req_id, &r);
}

void kvs_handle_client(kvs_server *s, kvp_msg *m)
{
    Kvarena__Envelope *e = kvp_decode(&m->env);
    if (!e) {
        reply_status(s, m, 0, KV_ERR_PROTO, "undecodable envelope (%zu bytes)", zmq_msg_size(&m->env));
        return;
    }
    size_t frames[KVP_MAX_FRAMES];
    for (int i = 0; i < m->n_tensors; i++)
        frames[i] = zmq_msg_size(&m->tensor[i]);
    char why[256];
    int rc = kvp_check_request(e, &s->limits, frames, m->n_tensors, NULL, why, sizeof(why));
    if (rc) {
        reply_status(s, m, e->req_id, rc, "%s", why);
        goto out;
    }
    if (e->body_case == KVARENA__ENVELOPE__BODY_HELLO) {
        on_hello(s, m, e);
        goto out;
    }
    kvs_conn *c = conn_find(s, &m->route);
    if (!c) {
        reply_status(s, m, e->req_id, KV_ERR_AUTH, "say Hello first");
        goto out;
    }
    uint32_t kt = s->cfg.secret_key[0] ? key_tenant(s, m) : c->tenant;
    if (kt == s->cfg.n_tenants) {
        reply_status(s, m, e->req_id, KV_ERR_REVOKED, KEY_REVOKED);
        goto out;
    }
    if (kt != c->tenant) { /* a reload moved the key: this connection's tenant is not its own */
        reply_status(s, m, e->req_id, KV_ERR_REVOKED, "this client key now belongs to tenant "
                     "'%s', not to this connection's '%s' (the server's config was reloaded): "
                     "connect again", s->cfg.tenant[kt].name, s->cfg.tenant[c->tenant].name);
        goto out;
    }
    c->last_seen_ms = kvs_now_ms();
    if (s->stopping) {
        reply_status(s, m, e->req_id, KV_ERR_SHUTDOWN, NULL);
        goto out;
    }
    switch (e->body_case) {
    case KVARENA__ENVELOPE__BODY_SEQ_OPEN:
    case KVARENA__ENVELOPE__BODY_FORK: on_create(s, m, e, c->tenant); break;
    case KVARENA__ENVELOPE__BODY_SEQ_CLOSE: on_seq_close(s, m, e, c->tenant); break;
    case KVARENA__ENVELOPE__BODY_EXTEND: on_extend(s, m, e, c->tenant); break;
    case KVARENA__ENVELOPE__BODY_LOOKUP: on_lookup(s, m, e, c->tenant); break;
    case KVARENA__ENVELOPE__BODY_ATTEND: on_attend(s, m, e, c->tenant); break;
    case KVARENA__ENVELOPE__BODY_STATS: on_stats(s, s->client, m, e->req_id); break;
    default: /* kvp_check_request let only client requests through */
        reply_status(s, m, e->req_id, KV_ERR_INTERNAL, "unhandled message type %d", (int)e->body_case);
    }
out:
    kvarena__envelope__free_unpacked(e, NULL);
}

/* SeqList: every open sequence, in slot order. */
static void on_seq_list(kvs_server *s, kvp_msg *m, uint64_t req_id)
{
    uint32_t n = s->seqs.live, k = 0;
    Kvarena__SeqInfo *info = calloc(n + 1, sizeof(*info));
    Kvarena__SeqInfo **ptr = calloc(n + 1, sizeof(*ptr));
    if (!info || !ptr) {
        kvp_send_status(s->admin, &m->route, req_id, KV_ERR_NOMEM, "server out of memory");
    } else {
        for (uint32_t slot = 0; slot < s->cfg.max_seqs && k < n; slot++) {
            const kva_seq *rec = kva_seq_at(s->shm.h, slot);
            if (rec->state != KVA_SEQ_LIVE)
                continue;
            const kvs_seq *sq = kvs_seq_priv(&s->seqs, rec);
            Kvarena__SeqInfo *x = &info[k];
            kvarena__seq_info__init(x);
            x->id = rec->id;
            x->tenant = s->cfg.tenant[rec->tenant].name;
            x->len = rec->len;
            x->pending = rec->pending;
            x->next_layer = rec->next_layer;
            x->pages = sq->n_pt;
            x->idle_ms = sq->used_ms && !sq->busy_job ? s->clock_ms - sq->used_ms : 0;
            x->busy = sq->busy_job != 0;
            ptr[k++] = x;
        }
        Kvarena__SeqListReply lr = KVARENA__SEQ_LIST_REPLY__INIT;
        lr.seqs = ptr;
        lr.n_seqs = k;
        Kvarena__Envelope r = KVARENA__ENVELOPE__INIT;
        r.body_case = KVARENA__ENVELOPE__BODY_SEQ_LIST_REPLY;
        r.seq_list_reply = &lr;
        reply(s->admin, m, req_id, &r);
    }
    free(info);
    free(ptr);
}

/* SeqClose on the admin socket: closes a sequence of any tenant, as its client would; the
 * tombstone tells that client an operator closed it. */
static void on_admin_close(kvs_server *s, kvp_msg *m, const Kvarena__Envelope *e)
{
    uint64_t id = e->seq_close->seq;
    const kva_seq *rec = kvs_seq_live(&s->seqs, id);
    uint32_t t = rec ? rec->tenant : 0;
    int rc = rec ? kvs_seq_close(&s->seqs, id, t, KVS_REQ_ADMIN) : KV_ERR_NOSEQ;
    if (rc == 0)
        KVS_INFO("sequence %#llx of tenant %s closed by an operator",
                 (unsigned long long)id, s->cfg.tenant[t].name);
    kvp_send_status(s->admin, &m->route, e->req_id, rc,
                    rc == KV_ERR_NOSEQ ? "no such open sequence" : rc ? seq_err(rc) : "");
}

static void on_reload(kvs_server *s, kvp_msg *m, uint64_t req_id)
{
    char msg[1024];
    if (kvs_server_reload(s, msg, sizeof(msg)) != 0) {
        kvp_send_status(s->admin, &m->route, req_id, KV_ERR_INVAL, msg);
        return;
    }
    Kvarena__ReloadReply rr = KVARENA__RELOAD_REPLY__INIT;
    rr.changes = msg;
    Kvarena__Envelope r = KVARENA__ENVELOPE__INIT;
    r.body_case = KVARENA__ENVELOPE__BODY_RELOAD_REPLY;
    r.reload_reply = &rr;
    reply(s->admin, m, req_id, &r);
}

void kvs_handle_admin(kvs_server *s, kvp_msg *m)
{
    Kvarena__Envelope *e = kvp_decode(&m->env);
    if (!e) {
        kvp_send_status(s->admin, &m->route, 0, KV_ERR_PROTO, "undecodable envelope");
        return;
    }
    if (m->n_tensors)
        kvp_send_status(s->admin, &m->route, e->req_id, KV_ERR_PROTO, "unexpected tensor frames");
    else if (e->body_case == KVARENA__ENVELOPE__BODY_STATS)
        on_stats(s, s->admin, m, e->req_id);
    else if (e->body_case == KVARENA__ENVELOPE__BODY_PING)
        kvp_send_status(s->admin, &m->route, e->req_id, 0, "");
    else if (e->body_case == KVARENA__ENVELOPE__BODY_SEQ_LIST)
        on_seq_list(s, m, e->req_id);
    else if (e->body_case == KVARENA__ENVELOPE__BODY_SEQ_CLOSE)
        on_admin_close(s, m, e);
    else if (e->body_case == KVARENA__ENVELOPE__BODY_SNAPSHOT)
        kvs_snapshot_request(s, m, e->req_id);
    else if (e->body_case == KVARENA__ENVELOPE__BODY_RELOAD)
        on_reload(s, m, e->req_id);
    else if (e->body_case == KVARENA__ENVELOPE__BODY_CHECK) {
        char why[256] = "";
        int rc = kvs_server_check(s, why, sizeof(why));
        kvp_send_status(s->admin, &m->route, e->req_id, rc, why);
    }
    else
        kvp_send_status(s->admin, &m->route, e->req_id, KV_ERR_PROTO, "admin takes Stats, Ping, "
                        "Check, SeqList, SeqClose, Snapshot or Reload");
    kvarena__envelope__free_unpacked(e, NULL);
}
