/* kvclient.c — libkvclient: the model runner's side of the kvarena wire protocol.
 *
 * Each call builds one Envelope, checks its arguments before anything is sent, makes one
 * round trip with kvr_call() (deadline, req_id filtering) and checks the reply's body and
 * frame sizes before touching an output argument, so a failed call changes nothing on the
 * caller's side. Request ids start at a random 63-bit number and count up: a reply that
 * arrives after its call timed out never matches a later call. */
#include "client/kvclient.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "client/kvrpc.h"
#include "proto/kvarena.pb-c.h"
#include "proto/kverr.h"

#define CHECK_CODE(n) _Static_assert((int)KVC_ERR_##n == (int)KV_ERR_##n, "KVC_ERR_" #n " != KV_ERR_" #n)
CHECK_CODE(INVAL); CHECK_CODE(NOMEM); CHECK_CODE(QUOTA); CHECK_CODE(NOSEQ);
CHECK_CODE(BUSY); CHECK_CODE(STATE); CHECK_CODE(PROTO); CHECK_CODE(TIMEOUT);
CHECK_CODE(WORKER); CHECK_CODE(AUTH); CHECK_CODE(IO); CHECK_CODE(SHUTDOWN);
CHECK_CODE(TOOBIG); CHECK_CODE(INTERNAL); CHECK_CODE(EXPIRED); CHECK_CODE(REVOKED);
_Static_assert((int)KVC_OK == (int)KV_OK, "KVC_OK");
_Static_assert((int)KVC_ERR_REVOKED == -(KV_ERR_COUNT - 1), "new KV_ERR_* code: add it to kvclient.h");

#define KVC_DEFAULT_TIMEOUT 10000  /* ms */
#define KVC_DEFAULT_ATTEMPT 2000   /* ms */
#define KVC_ERRLEN 256

struct kvc_client {
    void *ctx;                 /* own ZeroMQ context: clients are independent of each other */
    void *sock;                /* DEALER connected to the server's client endpoint */
    int timeout_ms;            /* per call */
    int attempt_ms;            /* per try before reconnecting and resending */
    char endpoint[256];        /* to reconnect to */
    char hello_tenant[128];    /* Hello fields, sent again after a reconnect */
    char hello_name[128];
    kvr_curve curve;           /* CURVE keys, when has_curve */
    int has_curve;
    uint64_t next_id;          /* req_id of the next request */
    kvc_model model;           /* from the Hello reply */
    char tenant[128];          /* from the Hello reply */
    char err[KVC_ERRLEN];      /* detail of the last failed call, "" after a success */
};

static _Thread_local char connect_err[2 * KVC_ERRLEN];

const char *kvc_strerror(int code) { return kv_strerror(code); }

const char *kvc_last_error(const kvc_client *c) { return c ? c->err : connect_err; }

const kvc_model *kvc_model_info(const kvc_client *c) { return c ? &c->model : NULL; }

const char *kvc_tenant(const kvc_client *c) { return c ? c->tenant : ""; }

int kvc_set_timeout(kvc_client *c, int timeout_ms)
{
    if (!c || timeout_ms <= 0)
        return KVC_ERR_INVAL;
    c->timeout_ms = timeout_ms;
    return KVC_OK;
}

/* Records a failure's detail and returns code, so error paths read `return fail(...)`. */
__attribute__((format(printf, 3, 4)))
static int fail(kvc_client *c, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err, sizeof c->err, fmt, ap);
    va_end(ap);
    return code;
}

/* The Hello of this client: h and env are filled, env points to h. */
static void hello_init(kvc_client *c, Kvarena__Hello *h, Kvarena__Envelope *env)
{
    kvarena__hello__init(h);
    h->version = KVP_VERSION;
    h->tenant = c->hello_tenant;
    h->client_name = c->hello_name;
    kvarena__envelope__init(env);
    env->body_case = KVARENA__ENVELOPE__BODY_HELLO;
    env->hello = h;
}

static kvc_model model_of(const Kvarena__HelloReply *r)
{
    return (kvc_model){ r->layers, r->q_heads, r->kv_heads, r->head_dim, r->page_tokens,
                        r->dtype, r->max_batch_tokens, r->rope, r->rope_theta, r->window,
                        r->softcap, r->alibi_max_bias };
}

/* A Hello accepted again after a reconnect must name this connection's tenant and model
 * (a restarted server may know the key as another tenant's, or serve another model): 0, or
 * the final error with its reason in c->err. */
static int hello_same(kvc_client *c, const Kvarena__HelloReply *r)
{
    kvc_model m = model_of(r);
    const kvc_model *o = &c->model;
    if (strcmp(r->tenant ? r->tenant : "", c->tenant)) {
        snprintf(c->err, sizeof c->err, "the server now knows this client as tenant '%.64s', "
                 "not '%.64s': connect again", r->tenant ? r->tenant : "", c->tenant);
        return KV_ERR_REVOKED;
    }
    if (m.layers != o->layers || m.q_heads != o->q_heads || m.kv_heads != o->kv_heads ||
        m.head_dim != o->head_dim || m.page_tokens != o->page_tokens || m.dtype != o->dtype ||
        m.rope != o->rope || m.rope_theta != o->rope_theta || m.window != o->window ||
        m.softcap != o->softcap || m.alibi_max_bias != o->alibi_max_bias) {
        snprintf(c->err, sizeof c->err, "the server now serves another model (or its options "
                 "changed): connect again");
        return KV_ERR_PROTO;
    }
    return 0;
}

/* A fresh socket after a timeout (the old one may be queued behind a dead peer); and, unless
 * the request being retried is the Hello itself, a Hello (one try): the server may have been
 * restarted and forgotten this connection. Returns the status of a Hello the server refused
 * (its tenant or key no longer allowed) or KV_ERR_REVOKED / KV_ERR_PROTO for one it
 * accepted for another tenant or model (hello_same): final, the reason in c->err; else 0:
 * other failures are left to the caller's next try. */
static int reconnect(kvc_client *c, int attempt_ms, int hello)
{
    void *s = kvr_socket_open(c->ctx, c->endpoint, c->has_curve ? &c->curve : NULL);
    if (!s)
        return 0;
    zmq_close(c->sock);
    c->sock = s;
    if (!hello)
        return 0;
    Kvarena__Hello h;
    Kvarena__Envelope env;
    hello_init(c, &h, &env);
    env.req_id = c->next_id++;
    kvr_reply rep;
    int refused = 0;
    if (kvr_call(c->sock, &env, NULL, 0, attempt_ms, &rep) == 0) {
        if (rep.env->status < 0 && rep.env->status != KV_ERR_SHUTDOWN) {
            refused = rep.env->status;
            snprintf(c->err, sizeof c->err, "%s", rep.env->error ? rep.env->error : "");
        } else if (rep.env->status == 0 &&
                   rep.env->body_case == KVARENA__ENVELOPE__BODY_HELLO_REPLY) {
            refused = hello_same(c, rep.env->hello_reply);
        }
    }
    kvr_reply_clear(&rep);
    return refused;
}

/* Whether a try should be repeated: no reply (a server not up yet, restarting, or stalled),
 * or a server that is going away or does not know this connection (it restarted; a Hello
 * refused for its tenant or key is final). */
static int retriable(const Kvarena__Envelope *env, int rc, const kvr_reply *rep)
{
    if (rc == KV_ERR_TIMEOUT || rc == KV_ERR_IO)
        return 1;
    return rc == 0 && (rep->env->status == KV_ERR_SHUTDOWN ||
                       (rep->env->status == KV_ERR_AUTH &&
                        env->body_case != KVARENA__ENVELOPE__BODY_HELLO));
}

/* One request: sends env (+frames) and receives the reply into *rep, resending it (same
 * req_id, retry flag) on a new connection while retriable() and time is left. Turns a reply
 * status into the call's result and checks the body case. On a nonzero return *rep is
 * empty. */
static int call(kvc_client *c, Kvarena__Envelope *env, const kvr_frame *frames, int n_frames,
                Kvarena__Envelope__BodyCase want, kvr_reply *rep)
{
    c->err[0] = '\0';
    env->req_id = c->next_id++; /* starts below 2^63 (kvr_random_id): never wraps to 0 */
    env->retry = 0;
    int64_t deadline = kvr_now_ns() + (int64_t)c->timeout_ms * 1000000;
    int rc, shut = 0; /* a try was answered "shutting down" */
    for (;;) {
        int64_t left = (deadline - kvr_now_ns()) / 1000000;
        int attempt = left < c->attempt_ms ? (int)left : c->attempt_ms;
        rc = attempt > 0 ? kvr_call(c->sock, env, frames, n_frames, attempt, rep) : KV_ERR_TIMEOUT;
        if (attempt <= 0 || !retriable(env, rc, rep) || kvr_now_ns() >= deadline)
            break;
        if (rc == 0) {
            int shutting_down = rep->env->status == KV_ERR_SHUTDOWN;
            shut |= shutting_down;
            kvr_reply_clear(rep);
            if (shutting_down && kvr_now_ns() + 50000000 < deadline) /* let it go first */
                nanosleep(&(struct timespec){ 0, 50000000 }, NULL);
        }
        int refused = reconnect(c, attempt, env->body_case != KVARENA__ENVELOPE__BODY_HELLO);
        if (refused)
            return refused; /* *rep is empty: cleared above or never filled */
        env->retry = 1;
    }
    switch (rc) {
    case 0:
        break;
    case KV_ERR_TIMEOUT:
        if (shut) /* the reason, not the symptom */
            return fail(c, KV_ERR_SHUTDOWN, "the server shut down and no server answered "
                        "within %d ms", c->timeout_ms);
        return fail(c, rc, "no reply within %d ms", c->timeout_ms);
    case KV_ERR_IO:
        return fail(c, rc, "zmq: %s", zmq_strerror(errno));
    case KV_ERR_PROTO:
        return fail(c, rc, "undecodable reply");
    default:
        return fail(c, rc, "%s", kv_strerror(rc));
    }
    const Kvarena__Envelope *r = rep->env;
    if (r->status != 0) {
        int st = r->status;
        snprintf(c->err, sizeof c->err, "%s", r->error ? r->error : "");
        kvr_reply_clear(rep);
        if (st > 0)
            return fail(c, KVC_ERR_PROTO, "reply status %d is not an error code", st);
        return st;
    }
    if (r->body_case != want) {
        int got = r->body_case;
        kvr_reply_clear(rep);
        return fail(c, KVC_ERR_PROTO, "reply body %d, expected %d", got, (int)want);
    }
    return 0;
}

static int model_check(const Kvarena__HelloReply *h)
{
    return h->layers > 0 && h->q_heads > 0 && h->kv_heads > 0 && h->head_dim > 0 &&
           h->page_tokens > 0 && h->q_heads % h->kv_heads == 0 && h->dtype <= 2 && h->rope <= 2;
}

static int hello(kvc_client *c)
{
    Kvarena__Hello h;
    Kvarena__Envelope env;
    hello_init(c, &h, &env);
    kvr_reply rep;
    int rc = call(c, &env, NULL, 0, KVARENA__ENVELOPE__BODY_HELLO_REPLY, &rep);
    if (rc != 0)
        return rc;
    const Kvarena__HelloReply *r = rep.env->hello_reply;
    if (r->version != KVP_VERSION || !model_check(r)) {
        rc = fail(c, KVC_ERR_PROTO, "server speaks version %u or sent a bad model shape "
                  "(layers %u, heads %u/%u, head_dim %u, page_tokens %u, dtype %u)",
                  r->version, r->layers, r->q_heads, r->kv_heads, r->head_dim,
                  r->page_tokens, r->dtype);
        kvr_reply_clear(&rep);
        return rc;
    }
    c->model = model_of(r);
    snprintf(c->tenant, sizeof c->tenant, "%s", r->tenant ? r->tenant : "");
    kvr_reply_clear(&rep);
    return 0;
}

int kvc_connect(const char *endpoint, const kvc_opts *opts, kvc_client **out)
{
    static const kvc_opts no_opts;
    connect_err[0] = '\0';
    if (!endpoint || !out) {
        snprintf(connect_err, sizeof connect_err, "kvc_connect: NULL endpoint or out");
        return KVC_ERR_INVAL;
    }
    if (!opts)
        opts = &no_opts;
    if (strlen(endpoint) >= sizeof(((kvc_client *)0)->endpoint)) {
        snprintf(connect_err, sizeof connect_err, "endpoint longer than 255 bytes");
        return KVC_ERR_INVAL;
    }
    if (opts->timeout_ms < 0) {
        snprintf(connect_err, sizeof connect_err, "negative timeout_ms %d", opts->timeout_ms);
        return KVC_ERR_INVAL;
    }
    kvc_client *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(connect_err, sizeof connect_err, "out of memory");
        return KVC_ERR_IO;
    }
    c->timeout_ms = opts->timeout_ms ? opts->timeout_ms : KVC_DEFAULT_TIMEOUT;
    c->attempt_ms = opts->attempt_ms > 0 ? opts->attempt_ms : KVC_DEFAULT_ATTEMPT;
    snprintf(c->endpoint, sizeof c->endpoint, "%s", endpoint);
    /* with keys, the server knows the tenant: a Hello that names none just confirms it */
    snprintf(c->hello_tenant, sizeof c->hello_tenant, "%s",
             opts->tenant ? opts->tenant : opts->server_key ? "" : "default");
    snprintf(c->hello_name, sizeof c->hello_name, "%s", opts->name ? opts->name : "");
    c->next_id = kvr_random_id();
    int rc = KVC_ERR_IO;
    if (opts->server_key) {
        const char *keys[3] = { opts->server_key, opts->public_key, opts->secret_key };
        char *dst[3] = { c->curve.server_key, c->curve.public_key, c->curve.secret_key };
        uint8_t raw[32];
        for (int i = 0; i < 3; i++) {
            if (!keys[i] || strlen(keys[i]) != 40 || !zmq_z85_decode(raw, keys[i])) {
                snprintf(connect_err, sizeof connect_err, "server_key, public_key and secret_key "
                         "must be 40-character Z85 keys");
                rc = KVC_ERR_INVAL;
                goto fail;
            }
            memcpy(dst[i], keys[i], 41);
        }
        c->has_curve = 1;
    }
    c->ctx = zmq_ctx_new();
    if (!c->ctx) {
        snprintf(connect_err, sizeof connect_err, "zmq_ctx_new() failed: %s",
                 zmq_strerror(errno));
        goto fail;
    }
    c->sock = kvr_socket_open(c->ctx, endpoint, c->has_curve ? &c->curve : NULL);
    if (!c->sock) {
        int e = errno;
        snprintf(connect_err, sizeof connect_err, "zmq_connect(\"%.200s\") failed: %s",
                 endpoint, zmq_strerror(e));
        rc = (e == EINVAL || e == EPROTONOSUPPORT) ? KVC_ERR_INVAL : KVC_ERR_IO;
        goto fail;
    }
    rc = hello(c);
    if (rc != 0) {
        snprintf(connect_err, sizeof connect_err, "hello to %.200s: %s%s%s", endpoint,
                 kv_strerror(rc), c->err[0] ? ": " : "", c->err);
        goto fail;
    }
    *out = c;
    return KVC_OK;
fail:
    kvc_close(&c);
    return rc;
}

void kvc_close(kvc_client **c)
{
    if (!c || !*c)
        return;
    if ((*c)->sock)
        zmq_close((*c)->sock);
    if ((*c)->ctx)
        zmq_ctx_term((*c)->ctx);
    free(*c);
    *c = NULL;
}

int kvc_seq_open(kvc_client *c, uint64_t *seq)
{
    if (!c)
        return KVC_ERR_INVAL;
    if (!seq)
        return fail(c, KVC_ERR_INVAL, "kvc_seq_open: NULL seq");
    Kvarena__SeqOpen m = KVARENA__SEQ_OPEN__INIT;
    Kvarena__Envelope env = KVARENA__ENVELOPE__INIT;
    env.body_case = KVARENA__ENVELOPE__BODY_SEQ_OPEN;
    env.seq_open = &m;
    kvr_reply rep;
    int rc = call(c, &env, NULL, 0, KVARENA__ENVELOPE__BODY_SEQ_OPEN_REPLY, &rep);
    if (rc != 0)
        return rc;
    *seq = rep.env->seq_open_reply->seq;
    kvr_reply_clear(&rep);
    return KVC_OK;
}

int kvc_seq_close(kvc_client *c, uint64_t seq)
{
    if (!c)
        return KVC_ERR_INVAL;
    Kvarena__SeqClose m = KVARENA__SEQ_CLOSE__INIT;
    m.seq = seq;
    Kvarena__Envelope env = KVARENA__ENVELOPE__INIT;
    env.body_case = KVARENA__ENVELOPE__BODY_SEQ_CLOSE;
    env.seq_close = &m;
    kvr_reply rep;
    int rc = call(c, &env, NULL, 0, KVARENA__ENVELOPE__BODY__NOT_SET, &rep);
    if (rc != 0)
        return rc;
    kvr_reply_clear(&rep);
    return KVC_OK;
}

int kvc_seq_fork(kvc_client *c, uint64_t seq, uint64_t *child)
{
    if (!c)
        return KVC_ERR_INVAL;
    if (!child)
        return fail(c, KVC_ERR_INVAL, "kvc_seq_fork: NULL child");
    Kvarena__Fork m = KVARENA__FORK__INIT;
    m.seq = seq;
    Kvarena__Envelope env = KVARENA__ENVELOPE__INIT;
    env.body_case = KVARENA__ENVELOPE__BODY_FORK;
    env.fork = &m;
    kvr_reply rep;
    int rc = call(c, &env, NULL, 0, KVARENA__ENVELOPE__BODY_FORK_REPLY, &rep);
    if (rc != 0)
        return rc;
    *child = rep.env->fork_reply->seq;
    kvr_reply_clear(&rep);
    return KVC_OK;
}

int kvc_seq_extend_ex(kvc_client *c, uint64_t seq, const uint32_t *tokens, uint32_t n,
                      kvc_extend_info *info)
{
    if (!c)
        return KVC_ERR_INVAL;
    if (!tokens || n == 0)
        return fail(c, KVC_ERR_INVAL, "kvc_seq_extend: no tokens");
    Kvarena__Extend m = KVARENA__EXTEND__INIT;
    m.seq = seq;
    m.n_tokens = n;
    m.tokens = (uint32_t *)tokens;
    Kvarena__Envelope env = KVARENA__ENVELOPE__INIT;
    env.body_case = KVARENA__ENVELOPE__BODY_EXTEND;
    env.extend = &m;
    kvr_reply rep;
    int rc = call(c, &env, NULL, 0, KVARENA__ENVELOPE__BODY_EXTEND_REPLY, &rep);
    if (rc != 0)
        return rc;
    const Kvarena__ExtendReply *r = rep.env->extend_reply;
    if (r->cached > n || r->pending < n - r->cached) {
        rc = fail(c, KVC_ERR_PROTO, "extend of %u tokens: reply cached %u, pending %u",
                  n, r->cached, r->pending);
        kvr_reply_clear(&rep);
        return rc;
    }
    if (info)
        *info = (kvc_extend_info){ r->cached, r->len, r->pending };
    kvr_reply_clear(&rep);
    return KVC_OK;
}

int kvc_seq_extend(kvc_client *c, uint64_t seq, const uint32_t *tokens, uint32_t n,
                   uint32_t *cached)
{
    kvc_extend_info info;
    int rc = kvc_seq_extend_ex(c, seq, tokens, n, &info);
    if (rc == 0 && cached)
        *cached = info.cached;
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Checks an Attend batch; on success *tokens = T. */
static int attend_check(kvc_client *c, uint32_t layer, const kvc_item *items,
                        uint32_t n_items, float scale, uint32_t *tokens)
{
    const kvc_model *m = &c->model;
    if (layer >= m->layers)
        return fail(c, KVC_ERR_INVAL, "layer %u of %u", layer, m->layers);
    if (!(scale >= 0.0f) || !isfinite(scale))
        return fail(c, KVC_ERR_INVAL, "scale %g", (double)scale);
    uint64_t t = 0;
    for (uint32_t i = 0; i < n_items; i++) {
        if (items[i].n_new == 0)
            return fail(c, KVC_ERR_INVAL, "item %u (seq %llu): n_new 0", i,
                        (unsigned long long)items[i].seq);
        t += items[i].n_new;
    }
    if (t > UINT32_MAX || (m->max_batch_tokens && t > m->max_batch_tokens))
        return fail(c, KVC_ERR_TOOBIG, "batch of %llu tokens, server maximum %u",
                    (unsigned long long)t, m->max_batch_tokens);
    uint64_t *ids = malloc(n_items * sizeof *ids);
    if (!ids)
        return fail(c, KVC_ERR_IO, "out of memory");
    for (uint32_t i = 0; i < n_items; i++)
        ids[i] = items[i].seq;
    qsort(ids, n_items, sizeof *ids, cmp_u64);
    for (uint32_t i = 1; i < n_items; i++)
        if (ids[i] == ids[i - 1]) {
            unsigned long long dup = ids[i];
            free(ids);
            return fail(c, KVC_ERR_INVAL, "seq %llu appears twice in one batch", dup);
        }
    free(ids);
    *tokens = (uint32_t)t;
    return 0;
}

int kvc_attend(kvc_client *c, uint32_t layer, const kvc_item *items, uint32_t n_items,
               const float *q, const float *k, const float *v, float scale, float *o,
               float *lse)
{
    if (!c)
        return KVC_ERR_INVAL;
    if (!items || n_items == 0 || !q || !k || !v || !o)
        return fail(c, KVC_ERR_INVAL, "kvc_attend: NULL or empty argument");
    uint32_t t = 0;
    int rc = attend_check(c, layer, items, n_items, scale, &t);
    if (rc != 0)
        return rc;
    const kvc_model *m = &c->model;
    size_t q_bytes = (size_t)t * m->q_heads * m->head_dim * sizeof(float);
    size_t kv_bytes = (size_t)t * m->kv_heads * m->head_dim * sizeof(float);
    size_t lse_bytes = (size_t)t * m->q_heads * sizeof(float);

    Kvarena__AttendItem *it = malloc(n_items * sizeof *it);
    Kvarena__AttendItem **itp = malloc(n_items * sizeof *itp);
    if (!it || !itp) {
        free(it);
        free(itp);
        return fail(c, KVC_ERR_IO, "out of memory");
    }
    for (uint32_t i = 0; i < n_items; i++) {
        kvarena__attend_item__init(&it[i]);
        it[i].seq = items[i].seq;
        it[i].n_new = items[i].n_new;
        itp[i] = &it[i];
    }
    Kvarena__Attend a = KVARENA__ATTEND__INIT;
    a.layer = layer;
    a.n_items = n_items;
    a.items = itp;
    a.want_lse = lse != NULL;
    a.scale = scale;
    Kvarena__Envelope env = KVARENA__ENVELOPE__INIT;
    env.body_case = KVARENA__ENVELOPE__BODY_ATTEND;
    env.attend = &a;
    const kvr_frame frames[3] = { { q, q_bytes }, { k, kv_bytes }, { v, kv_bytes } };
    kvr_reply rep;
    rc = call(c, &env, frames, 3, KVARENA__ENVELOPE__BODY_ATTEND_REPLY, &rep);
    free(it);
    free(itp);
    if (rc != 0)
        return rc;

    int want_frames = lse ? 2 : 1;
    if (rep.env->attend_reply->tokens != t || rep.msg.n_tensors != want_frames ||
        zmq_msg_size(&rep.msg.tensor[0]) != q_bytes ||
        (lse && zmq_msg_size(&rep.msg.tensor[1]) != lse_bytes)) {
        rc = fail(c, KVC_ERR_PROTO,
                  "attend reply: %u tokens, %d frames (%zu, %zu bytes); expected %u tokens, "
                  "%d frames (%zu, %zu bytes)", rep.env->attend_reply->tokens, rep.msg.n_tensors,
                  rep.msg.n_tensors > 0 ? zmq_msg_size(&rep.msg.tensor[0]) : 0,
                  rep.msg.n_tensors > 1 ? zmq_msg_size(&rep.msg.tensor[1]) : 0, t, want_frames,
                  q_bytes, lse ? lse_bytes : 0);
        kvr_reply_clear(&rep);
        return rc;
    }
    memcpy(o, zmq_msg_data(&rep.msg.tensor[0]), q_bytes);
    if (lse)
        memcpy(lse, zmq_msg_data(&rep.msg.tensor[1]), lse_bytes);
    kvr_reply_clear(&rep);
    return KVC_OK;
}

int kvc_lookup(kvc_client *c, const uint32_t *tokens, uint32_t n, uint32_t *cached)
{
    uint32_t on_disk;
    return kvc_lookup_tiers(c, tokens, n, cached, &on_disk);
}

int kvc_lookup_tiers(kvc_client *c, const uint32_t *tokens, uint32_t n, uint32_t *cached,
                     uint32_t *on_disk)
{
    if (!c)
        return KVC_ERR_INVAL;
    if (!cached || !on_disk || (n > 0 && !tokens))
        return fail(c, KVC_ERR_INVAL, "kvc_lookup: NULL argument");
    c->err[0] = '\0';
    if (n == 0) {
        *cached = *on_disk = 0;
        return KVC_OK;
    }
    Kvarena__Lookup m = KVARENA__LOOKUP__INIT;
    m.n_tokens = n;
    m.tokens = (uint32_t *)tokens;
    Kvarena__Envelope env = KVARENA__ENVELOPE__INIT;
    env.body_case = KVARENA__ENVELOPE__BODY_LOOKUP;
    env.lookup = &m;
    kvr_reply rep;
    int rc = call(c, &env, NULL, 0, KVARENA__ENVELOPE__BODY_LOOKUP_REPLY, &rep);
    if (rc != 0)
        return rc;
    uint32_t got = rep.env->lookup_reply->cached, disk = rep.env->lookup_reply->on_disk;
    kvr_reply_clear(&rep);
    if (got > n || disk > n - got)
        return fail(c, KVC_ERR_PROTO, "lookup of %u tokens: %u cached, %u on disk", n, got, disk);
    *cached = got;
    *on_disk = disk;
    return KVC_OK;
}

int kvc_stats_get(kvc_client *c, kvc_stats *st)
{
    if (!c)
        return KVC_ERR_INVAL;
    if (!st)
        return fail(c, KVC_ERR_INVAL, "kvc_stats_get: NULL st");
    Kvarena__Stats m = KVARENA__STATS__INIT;
    Kvarena__Envelope env = KVARENA__ENVELOPE__INIT;
    env.body_case = KVARENA__ENVELOPE__BODY_STATS;
    env.stats = &m;
    kvr_reply rep;
    int rc = call(c, &env, NULL, 0, KVARENA__ENVELOPE__BODY_STATS_REPLY, &rep);
    if (rc != 0)
        return rc;
    const Kvarena__StatsReply *r = rep.env->stats_reply;
    *st = (kvc_stats){
        .pages_total = r->pages_total, .pages_free = r->pages_free,
        .pages_in_use = r->pages_in_use, .pages_cached = r->pages_cached,
        .prefix_hits = r->prefix_hits, .prefix_misses = r->prefix_misses,
        .evictions = r->evictions, .sequences = r->sequences,
        .jobs_done = r->jobs_done, .jobs_failed = r->jobs_failed,
        .seqs_expired = r->seqs_expired,
    };
    kvr_reply_clear(&rep);
    return KVC_OK;
}
