/* kvmock — a fake kvserver in one process, for testing libkvclient, kvctl and kvdemo
 * without the real server. It speaks the same wire protocol (proto/wire.h framing) and
 * keeps the semantics a client can observe: sequences, pending tokens, layer order, a
 * prefix cache of full pages per tenant (always leaving one token to compute), fork,
 * lookup, stats, the admin endpoint. Attention is computed with synth.h's fp64 reference
 * on K/V rounded to the dtype, so a client checking against that reference should see
 * errors at fp32 rounding level.
 *
 *   kvmock CLIENT_EP ADMIN_EP [--dtype 0|1|2] [--max-batch N] [--late K]
 *
 * --late K: every K-th client request's reply is held back and sent just before the next
 * reply, to exercise a client's timeout and stale-reply filtering. Not a server: no limits
 * beyond memory, no quotas, no eviction, O(pages) lookups. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "client/examples/synth.h"
#include "proto/kverr.h"
#include "proto/wire.h"

typedef struct mseq {
    uint64_t id;
    char tenant[64];
    int open;
    uint32_t *tok, len, pending, cap;  /* tok[0 .. len+pending) */
    uint32_t next_layer;               /* layer the pending rows attend next */
    float *k, *v;                      /* [layer][cap][kv row], rounded */
} mseq;

typedef struct mpage {                 /* a committed page of the prefix cache */
    char tenant[64];
    uint64_t hash;                     /* chained over every token up to the page's end */
    float *k, *v;                      /* [layer][page_tokens][kv row] */
} mpage;

static kvc_model M = { .layers = 2, .q_heads = 4, .kv_heads = 2, .head_dim = 16,
                       .page_tokens = 16, .dtype = 0, .max_batch_tokens = 64 };
static mseq *seqs;
static size_t n_seqs;
static mpage *pages;
static size_t n_pages;
static uint64_t hits, misses, jobs;
static size_t KR;                      /* floats per kv row */

static uint64_t chain(uint64_t h, const uint32_t *tok, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++)
        h = kvs_mix(h ^ tok[i]);
    return h;
}

static mpage *page_find(const char *tenant, uint64_t h)
{
    for (size_t i = 0; i < n_pages; i++)
        if (pages[i].hash == h && !strcmp(pages[i].tenant, tenant))
            return &pages[i];
    return NULL;
}

static mseq *seq_find(const char *tenant, uint64_t id)
{
    if (id == 0 || id > n_seqs)
        return NULL;
    mseq *s = &seqs[id - 1];
    return s->open && !strcmp(s->tenant, tenant) ? s : NULL;
}

static void seq_reserve(mseq *s, uint32_t need)
{
    if (need <= s->cap)
        return;
    uint32_t cap = s->cap ? s->cap : 64;
    while (cap < need)
        cap *= 2;
    s->tok = realloc(s->tok, cap * sizeof *s->tok);
    float *k = calloc((size_t)M.layers * cap * KR, sizeof *k);
    float *v = calloc((size_t)M.layers * cap * KR, sizeof *v);
    for (uint32_t l = 0; l < M.layers && s->cap; l++) {
        memcpy(k + l * cap * KR, s->k + l * s->cap * KR, s->cap * KR * sizeof *k);
        memcpy(v + l * cap * KR, s->v + l * s->cap * KR, s->cap * KR * sizeof *v);
    }
    free(s->k);
    free(s->v);
    s->k = k;
    s->v = v;
    s->cap = cap;
}

static mseq *seq_new(const char *tenant)
{
    seqs = realloc(seqs, (n_seqs + 1) * sizeof *seqs);
    mseq *s = &seqs[n_seqs++];
    memset(s, 0, sizeof *s);
    s->id = n_seqs;
    s->open = 1;
    snprintf(s->tenant, sizeof s->tenant, "%s", tenant);
    return s;
}

/* Commits the full pages of s that are not in the cache yet. */
static void commit_pages(mseq *s)
{
    const uint32_t pt = M.page_tokens;
    uint64_t h = 0;                    /* chain over tok[0 .. (p+1)*pt), one page at a time */
    for (uint32_t p = 0; (p + 1) * pt <= s->len; p++) {
        h = chain(h, s->tok + p * pt, pt);
        if (page_find(s->tenant, h))
            continue;
        pages = realloc(pages, (n_pages + 1) * sizeof *pages);
        mpage *pg = &pages[n_pages++];
        snprintf(pg->tenant, sizeof pg->tenant, "%s", s->tenant);
        pg->hash = h;
        pg->k = malloc((size_t)M.layers * pt * KR * sizeof(float));
        pg->v = malloc((size_t)M.layers * pt * KR * sizeof(float));
        for (uint32_t l = 0; l < M.layers; l++) {
            memcpy(pg->k + l * pt * KR, s->k + (l * s->cap + p * pt) * KR, pt * KR * 4);
            memcpy(pg->v + l * pt * KR, s->v + (l * s->cap + p * pt) * KR, pt * KR * 4);
        }
    }
}

/* Full cached pages of tok[0 .. n) for tenant, leaving one token; copies them into s if
 * s is not NULL. Returns the cached token count. */
static uint32_t prefix_attach(const char *tenant, const uint32_t *tok, uint32_t n, mseq *s)
{
    const uint32_t pt = M.page_tokens;
    uint64_t h = 0;                    /* chain over tok[0 .. (p+1)*pt), one page at a time */
    uint32_t p = 0;
    for (; (p + 1) * pt <= n - 1; p++) {
        h = chain(h, tok + p * pt, pt);
        mpage *pg = page_find(tenant, h);
        if (s)
            (pg ? hits++ : misses++);
        if (!pg)
            break;
        if (s)
            for (uint32_t l = 0; l < M.layers; l++) {
                memcpy(s->k + (l * s->cap + p * pt) * KR, pg->k + l * pt * KR, pt * KR * 4);
                memcpy(s->v + (l * s->cap + p * pt) * KR, pg->v + l * pt * KR, pt * KR * 4);
            }
    }
    return p * pt;
}

typedef struct out {                  /* a reply being built */
    Kvarena__Envelope env;
    zmq_msg_t t[2];
    int n_t;
    char err[128];
} out;

static int err(out *o, int code, const char *msg)
{
    o->env.status = code;
    snprintf(o->err, sizeof o->err, "%s", msg);
    o->env.error = o->err;
    return code;
}

static void do_attend(const char *tenant, const Kvarena__Attend *a, kvp_msg *in, out *o,
                      Kvarena__AttendReply *ar)
{
    uint64_t T = 0;
    if (a->layer >= M.layers || a->n_items == 0) {
        err(o, KV_ERR_INVAL, "bad layer or no items");
        return;
    }
    for (size_t i = 0; i < a->n_items; i++) {
        mseq *s = seq_find(tenant, a->items[i]->seq);
        if (!s) {
            err(o, KV_ERR_NOSEQ, "no such sequence");
            return;
        }
        if (s->pending == 0 || a->items[i]->n_new != s->pending || s->next_layer != a->layer) {
            err(o, KV_ERR_STATE, "n_new or layer disagrees with the sequence");
            return;
        }
        T += a->items[i]->n_new;
    }
    if (M.max_batch_tokens && T > M.max_batch_tokens) {
        err(o, KV_ERR_TOOBIG, "batch too big");
        return;
    }
    const size_t QR = (size_t)M.q_heads * M.head_dim;
    if (in->n_tensors != 3 || zmq_msg_size(&in->tensor[0]) != T * QR * 4 ||
        zmq_msg_size(&in->tensor[1]) != T * KR * 4 ||
        zmq_msg_size(&in->tensor[2]) != T * KR * 4) {
        err(o, KV_ERR_PROTO, "tensor frames disagree with the items");
        return;
    }
    /* Frame data need not be 4-byte aligned: copy Q out before reading floats (K and V
     * are only memcpy'd). */
    float *q = malloc(T * QR * 4);
    memcpy(q, zmq_msg_data(&in->tensor[0]), T * QR * 4);
    const char *k = zmq_msg_data(&in->tensor[1]), *v = zmq_msg_data(&in->tensor[2]);
    /* the LSE frame and its scratch only when the client asked for it */
    const int lse = a->want_lse != 0;
    float *O = malloc(T * QR * 4), *L = lse ? malloc(T * M.q_heads * 4) : NULL;
    double *od = malloc(QR * sizeof *od), *ld = lse ? malloc(M.q_heads * sizeof *ld) : NULL;
    size_t row = 0;
    for (size_t i = 0; i < a->n_items; i++) {
        mseq *s = seq_find(tenant, a->items[i]->seq);
        uint32_t l = a->layer, n = a->items[i]->n_new;
        float *sk = s->k + (size_t)l * s->cap * KR, *sv = s->v + (size_t)l * s->cap * KR;
        memcpy(sk + s->len * KR, k + row * KR * 4, n * KR * 4);
        memcpy(sv + s->len * KR, v + row * KR * 4, n * KR * 4);
        kvs_round_vec(M.dtype, sk + s->len * KR, n * KR);
        kvs_round_vec(M.dtype, sv + s->len * KR, n * KR);
        for (uint32_t r = 0; r < n; r++, row++) {
            kvs_ref_attn(&M, q + row * QR, sk, sv, s->len + r + 1, a->scale, od, ld);
            for (size_t x = 0; x < QR; x++)
                O[row * QR + x] = (float)od[x];
            for (uint32_t h = 0; lse && h < M.q_heads; h++)
                L[row * M.q_heads + h] = (float)ld[h];
        }
        if (++s->next_layer == M.layers) {
            s->len += s->pending;
            s->pending = 0;
            s->next_layer = 0;
            commit_pages(s);
        }
    }
    zmq_msg_init_size(&o->t[0], T * QR * 4);
    memcpy(zmq_msg_data(&o->t[0]), O, T * QR * 4);
    if (lse) {
        zmq_msg_init_size(&o->t[1], T * M.q_heads * 4);
        memcpy(zmq_msg_data(&o->t[1]), L, T * M.q_heads * 4);
    }
    o->n_t = 1 + lse;
    free(O);
    free(L);
    free(od);
    free(ld);
    free(q);
    jobs++;
    ar->tokens = (uint32_t)T;
    o->env.body_case = KVARENA__ENVELOPE__BODY_ATTEND_REPLY;
    o->env.attend_reply = ar;
}

/* Handles one client request from `tenant` (set by Hello). */
static void handle(char *tenant, const Kvarena__Envelope *e, kvp_msg *in, out *o)
{
    static Kvarena__HelloReply hr;
    static Kvarena__SeqOpenReply sor;
    static Kvarena__ExtendReply er;
    static Kvarena__AttendReply ar;
    static Kvarena__LookupReply lr;
    static Kvarena__ForkReply fr;
    mseq *s;
    switch (e->body_case) {
    case KVARENA__ENVELOPE__BODY_HELLO:
        if (e->hello->version != KVP_VERSION || !e->hello->tenant[0]) {
            err(o, KV_ERR_AUTH, "bad version or no tenant");
            return;
        }
        snprintf(tenant, 64, "%s", e->hello->tenant);
        kvarena__hello_reply__init(&hr);
        hr.version = KVP_VERSION;
        hr.tenant = tenant;
        hr.layers = M.layers;
        hr.q_heads = M.q_heads;
        hr.kv_heads = M.kv_heads;
        hr.head_dim = M.head_dim;
        hr.page_tokens = M.page_tokens;
        hr.dtype = M.dtype;
        hr.max_batch_tokens = M.max_batch_tokens;
        o->env.body_case = KVARENA__ENVELOPE__BODY_HELLO_REPLY;
        o->env.hello_reply = &hr;
        return;
    default:
        break;
    }
    if (!tenant[0]) {
        err(o, KV_ERR_AUTH, "hello first");
        return;
    }
    switch (e->body_case) {
    case KVARENA__ENVELOPE__BODY_SEQ_OPEN:
        kvarena__seq_open_reply__init(&sor);
        sor.seq = seq_new(tenant)->id;
        o->env.body_case = KVARENA__ENVELOPE__BODY_SEQ_OPEN_REPLY;
        o->env.seq_open_reply = &sor;
        break;
    case KVARENA__ENVELOPE__BODY_SEQ_CLOSE:
        if (!(s = seq_find(tenant, e->seq_close->seq)))
            err(o, KV_ERR_NOSEQ, "no such sequence");
        else
            s->open = 0;
        break;
    case KVARENA__ENVELOPE__BODY_EXTEND: {
        const Kvarena__Extend *x = e->extend;
        if (!(s = seq_find(tenant, x->seq))) {
            err(o, KV_ERR_NOSEQ, "no such sequence");
            break;
        }
        if (s->pending || x->n_tokens == 0) {
            err(o, KV_ERR_STATE, "tokens pending or none given");
            break;
        }
        seq_reserve(s, s->len + (uint32_t)x->n_tokens);
        uint32_t cached = s->len == 0
                              ? prefix_attach(tenant, x->tokens, (uint32_t)x->n_tokens, s) : 0;
        memcpy(s->tok + s->len, x->tokens, x->n_tokens * 4);
        s->len += cached;
        s->pending = (uint32_t)x->n_tokens - cached;
        kvarena__extend_reply__init(&er);
        er.cached = cached;
        er.len = s->len;
        er.pending = s->pending;
        o->env.body_case = KVARENA__ENVELOPE__BODY_EXTEND_REPLY;
        o->env.extend_reply = &er;
        break;
    }
    case KVARENA__ENVELOPE__BODY_ATTEND:
        kvarena__attend_reply__init(&ar);
        do_attend(tenant, e->attend, in, o, &ar);
        break;
    case KVARENA__ENVELOPE__BODY_LOOKUP:
        kvarena__lookup_reply__init(&lr);
        lr.cached = e->lookup->n_tokens
                        ? prefix_attach(tenant, e->lookup->tokens,
                                        (uint32_t)e->lookup->n_tokens, NULL) : 0;
        o->env.body_case = KVARENA__ENVELOPE__BODY_LOOKUP_REPLY;
        o->env.lookup_reply = &lr;
        break;
    case KVARENA__ENVELOPE__BODY_FORK: {
        mseq *p = seq_find(tenant, e->fork->seq);
        if (!p) {
            err(o, KV_ERR_NOSEQ, "no such sequence");
            break;
        }
        if (p->pending) {
            err(o, KV_ERR_STATE, "tokens pending");
            break;
        }
        size_t pi = (size_t)(p - seqs);
        mseq *c = seq_new(tenant);
        p = &seqs[pi];
        seq_reserve(c, p->cap);
        memcpy(c->tok, p->tok, p->len * 4);
        memcpy(c->k, p->k, (size_t)M.layers * p->cap * KR * 4);
        memcpy(c->v, p->v, (size_t)M.layers * p->cap * KR * 4);
        c->len = p->len;
        kvarena__fork_reply__init(&fr);
        fr.seq = c->id;
        o->env.body_case = KVARENA__ENVELOPE__BODY_FORK_REPLY;
        o->env.fork_reply = &fr;
        break;
    }
    case KVARENA__ENVELOPE__BODY_STATS:
        break;   /* handled by the caller, shared with the admin socket */
    default:
        err(o, KV_ERR_PROTO, "unexpected request");
    }
}

static Kvarena__StatsReply *stats(void)
{
    static Kvarena__StatsReply st;
    static Kvarena__WorkerStats w, *wp[1] = { &w };
    static Kvarena__TenantStats t, *tp[1] = { &t };
    kvarena__stats_reply__init(&st);
    kvarena__worker_stats__init(&w);
    kvarena__tenant_stats__init(&t);
    w.index = 0;
    w.pid = getpid();
    w.state = "ready";
    w.jobs = jobs;
    t.name = "\"mock\"";
    t.pages = (uint32_t)n_pages;
    uint32_t open = 0;
    for (size_t i = 0; i < n_seqs; i++)
        open += (uint32_t)seqs[i].open;
    st.pages_total = 1000;
    st.pages_cached = (uint32_t)n_pages;
    st.pages_free = 1000 - (uint32_t)n_pages;
    st.prefix_hits = hits;
    st.prefix_misses = misses;
    st.sequences = open;
    st.jobs_done = jobs;
    st.n_workers = 1;
    st.workers = wp;
    st.n_tenants = 1;
    st.tenants = tp;
    st.uptime_ms = 3723000;
    return &st;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: kvmock CLIENT_EP ADMIN_EP [--dtype D] [--max-batch N] "
                        "[--late K]\n");
        return 2;
    }
    long late = 0;
    for (int i = 3; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--dtype"))
            M.dtype = (uint32_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--max-batch"))
            M.max_batch_tokens = (uint32_t)atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--late"))
            late = atol(argv[i + 1]);
    }
    KR = (size_t)M.kv_heads * M.head_dim;
    void *ctx = zmq_ctx_new();
    void *cs = zmq_socket(ctx, ZMQ_ROUTER), *as = zmq_socket(ctx, ZMQ_ROUTER);
    if (zmq_bind(cs, argv[1]) || zmq_bind(as, argv[2])) {
        fprintf(stderr, "kvmock: bind: %s\n", zmq_strerror(errno));
        return 1;
    }
    /* Tenant per connection, by routing id (bounded table: this is a test tool). */
    struct { char rid[256]; size_t n; char tenant[64]; } conns[64];
    int n_conns = 0;
    long count = 0;
    zmq_msg_t held_route, held[3];
    int held_n = 0, have_held = 0;
    fprintf(stderr, "kvmock: listening on %s and %s\n", argv[1], argv[2]);
    for (;;) {
        zmq_pollitem_t it[2] = { { cs, 0, ZMQ_POLLIN, 0 }, { as, 0, ZMQ_POLLIN, 0 } };
        if (zmq_poll(it, 2, -1) < 0)
            break;
        for (int which = 0; which < 2; which++) {
            if (!(it[which].revents & ZMQ_POLLIN))
                continue;
            void *sock = which ? as : cs;
            kvp_msg in;
            int rc = kvp_recv(sock, &in, 1, ZMQ_DONTWAIT);
            Kvarena__Envelope *e = rc == 0 ? kvp_decode(&in.env) : NULL;
            if (!e) {
                kvp_msg_close(&in);
                continue;
            }
            out o;
            memset(&o, 0, sizeof o);
            kvarena__envelope__init(&o.env);
            o.env.req_id = e->req_id;
            if (e->body_case == KVARENA__ENVELOPE__BODY_STATS) {
                o.env.body_case = KVARENA__ENVELOPE__BODY_STATS_REPLY;
                o.env.stats_reply = stats();
            } else if (which) {
                if (e->body_case != KVARENA__ENVELOPE__BODY_PING)
                    err(&o, KV_ERR_PROTO, "admin: stats or ping");
            } else {
                size_t rn = zmq_msg_size(&in.route);
                int ci = 0;
                while (ci < n_conns && !(conns[ci].n == rn &&
                                         !memcmp(conns[ci].rid, zmq_msg_data(&in.route), rn)))
                    ci++;
                if (ci == n_conns && n_conns < 64 && rn <= 256) {
                    memcpy(conns[ci].rid, zmq_msg_data(&in.route), rn);
                    conns[ci].n = rn;
                    conns[ci].tenant[0] = '\0';
                    n_conns++;
                }
                handle(conns[ci].tenant, e, &in, &o);
            }
            if (!which && late && ++count % late == 0) {
                /* Hold this reply: pack it now, send it before the next one. */
                held_n = o.n_t;
                zmq_msg_init(&held_route);
                zmq_msg_copy(&held_route, &in.route);
                size_t len = kvarena__envelope__get_packed_size(&o.env);
                zmq_msg_init_size(&held[0], len);
                kvarena__envelope__pack(&o.env, zmq_msg_data(&held[0]));
                for (int i = 0; i < o.n_t; i++) {
                    zmq_msg_init(&held[1 + i]);
                    zmq_msg_move(&held[1 + i], &o.t[i]);
                }
                have_held = 1;
            } else {
                if (!which && have_held) {
                    zmq_msg_send(&held_route, sock, ZMQ_SNDMORE);
                    for (int i = 0; i <= held_n; i++)
                        zmq_msg_send(&held[i], sock, i < held_n ? ZMQ_SNDMORE : 0);
                    have_held = 0;
                }
                kvp_send(sock, &in.route, &o.env, o.t, o.n_t); /* sends and closes o.t */
            }
            kvarena__envelope__free_unpacked(e, NULL);
            kvp_msg_close(&in);
        }
    }
    return 0;
}
