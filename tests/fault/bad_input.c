/* bad_input — bad input on every socket of a running kvserver (tests/fault/test_bad_input.sh).
 *
 * For each bad message, sent on a raw DEALER socket: the reply carries the typed error the
 * protocol promises (or, where there is no one to answer, there is no reply), the server's
 * counters are exactly as before (kvc_stats_get from a well-behaved client, before and
 * after), and that well-behaved client, interleaved after every case, keeps getting exact
 * attention outputs (client/examples/synth.h reference).
 *
 *   client socket  garbage, truncated and empty envelopes, too many frames, tensor frames
 *                  missing, extra or of the wrong size, unknown fields and message types
 *                  (replies, worker and admin messages), requests before Hello, bad Hello,
 *                  empty and oversized Extend/Lookup, Attend with no items, too many items,
 *                  n_new 0 or huge, sums past 2^32, out-of-range or "negative" (10-byte
 *                  varint -1) layers, NaN/Inf/negative scale, forged (other tenant, other
 *                  generation, 0, ~0) and stale (closed) sequence ids, wrong state, a
 *                  sequence named twice in a batch. Page ids never travel on this socket:
 *                  a Job naming forged pages is refused as a message type.
 *   NaN/Inf        in Q/K/V are passed through: the server never reads tensor data, so such
 *                  an Attend succeeds (status 0, frames of the right size) and only the
 *                  sending tenant's own sequence sees the values.
 *   admin socket   garbage, empty, too many frames, frames after Stats, every non-admin type.
 *   worker socket  garbage, empty, too many frames, forged Ready (unknown index, wrong pid,
 *                  pid 0, a real worker's index and pid without its token), Heartbeat with
 *                  a foreign pid or a wrong token, forged JobDone for job ids 1..N
 *                  with an O frame, a Job naming page 0xffffffff, and a socket that borrows
 *                  a real worker's routing id: all ignored, workers stay ready with the
 *                  same pids and no restart.
 *   max size       a 2 MiB frame with server.max_msg_bytes=1M on each socket: ZeroMQ drops
 *                  that peer, nothing is answered, the server keeps serving; an Attend of
 *                  three 700 KB frames (each under the limit) gets KV_ERR_PROTO.
 *   never reads    a DEALER flooding Stats without reading, on the client and the admin
 *                  socket: the other client still gets answers within 1 s, and the server's
 *                  VmRSS stays bounded (its ROUTER drops replies past the high-water mark).
 *
 * Usage: bad_input RUNTIME_DIR SERVER_PID (server started with server.max_msg_bytes=1M and
 * the default model). Exit 0 only if every check passed. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "client/examples/synth.h"
#include "client/kvclient.h"
#include "proto/kvarena.pb-c.h"
#include "proto/kverr.h"
#include "proto/wire.h"

#define NO_REPLY 1          /* "want" for a message nobody answers */
#define MAX_PARTS 16
#define BIG (2u << 20)      /* 2 MiB: over the 1M max_msg_bytes the script sets */

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define CALL(expr) do { int rc_ = (expr); if (rc_) { fprintf(stderr, "FAIL %s: %s (%s)\n", #expr, \
    kvc_strerror(rc_), kvc_last_error(good)); exit(1); } } while (0)

static void *zctx;
static char ep_client[512], ep_admin[512], ep_worker[512];
static int server_pid;
static kvc_client *good;          /* the well-behaved client (tenant alice) */
static const kvc_model *M;
static uint8_t *zeros;            /* BIG zero bytes: tensor and oversized frames */

/* ---- the well-behaved client: one sequence, extended and attended after every case ---- */

static uint64_t good_seq;
static uint32_t good_tokens[4096], good_len;

/* Extends the good sequence by n tokens and attends every layer; checks each row. */
static void good_step(uint32_t n)
{
    size_t qrow = (size_t)M->q_heads * M->head_dim, kvrow = (size_t)M->kv_heads * M->head_dim;
    float *q = malloc(sizeof(float) * qrow * n), *k = malloc(sizeof(float) * kvrow * n);
    float *v = malloc(sizeof(float) * kvrow * n), *o = malloc(sizeof(float) * qrow * n);
    double *ref = malloc(sizeof(double) * qrow);
    uint32_t cached = 0;
    CALL(kvc_seq_extend(good, good_seq, good_tokens + good_len, n, &cached));
    CHECK(cached == 0, "good sequence: %u tokens cached on a later extend", cached);
    for (uint32_t layer = 0; layer < M->layers; layer++) {
        kvs_fill_qkv(M, layer, good_tokens + good_len, good_len, n, q, k, v);
        kvc_item it = { good_seq, n };
        CALL(kvc_attend(good, layer, &it, 1, q, k, v, 0, o, NULL));
        for (uint32_t i = 0; i < n; i++) {
            double ref_max = 0;
            if (kvs_ref_row(M, layer, good_tokens, good_len + i, 0, ref, NULL) != 0)
                exit(1);
            double err = kvs_max_abs_err(o + i * qrow, ref, qrow, &ref_max);
            CHECK(err <= kvs_tolerance(M->dtype) * (ref_max > 0 ? ref_max : 1),
                  "good client: layer %u pos %u off by %.3g", layer, good_len + i, err);
        }
    }
    good_len += n;
    free(q); free(k); free(v); free(o); free(ref);
}

static void good_stats(kvc_stats *st)
{
    CALL(kvc_stats_get(good, st));
}

static int stats_equal(const kvc_stats *a, const kvc_stats *b)
{
    return a->pages_total == b->pages_total && a->pages_free == b->pages_free &&
           a->pages_in_use == b->pages_in_use && a->pages_cached == b->pages_cached &&
           a->prefix_hits == b->prefix_hits && a->prefix_misses == b->prefix_misses &&
           a->evictions == b->evictions && a->sequences == b->sequences &&
           a->jobs_done == b->jobs_done && a->jobs_failed == b->jobs_failed;
}

/* ---- raw sockets and frames ---- */

static void *raw_open(const char *ep, const void *rid, size_t rid_len)
{
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    int linger = 0, tmo = 2000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof(tmo));
    if (rid)
        zmq_setsockopt(s, ZMQ_ROUTING_ID, rid, rid_len);
    if (!s || zmq_connect(s, ep) != 0) {
        fprintf(stderr, "zmq_connect(%s): %s\n", ep, zmq_strerror(errno));
        exit(1);
    }
    return s;
}

typedef struct frames {
    int n;
    const void *p[MAX_PARTS];
    size_t len[MAX_PARTS];
    uint8_t *owned[MAX_PARTS];   /* packed envelopes, freed by frames_free */
} frames;

static void fr_bytes(frames *f, const void *p, size_t len)
{
    f->owned[f->n] = NULL;
    f->p[f->n] = p;
    f->len[f->n++] = len;
}

static void fr_env(frames *f, const Kvarena__Envelope *e)
{
    size_t len = kvarena__envelope__get_packed_size(e);
    uint8_t *buf = malloc(len ? len : 1);
    kvarena__envelope__pack(e, buf);
    fr_bytes(f, buf, len);
    f->owned[f->n - 1] = buf;
}

/* Q, K, V frames for t tokens of the model; dq, dk, dv bytes added to each size. */
static void fr_qkv(frames *f, uint64_t t, long dq, long dk, long dv)
{
    size_t q = t * M->q_heads * M->head_dim * sizeof(float);
    size_t kv = t * M->kv_heads * M->head_dim * sizeof(float);
    fr_bytes(f, zeros, q + dq);
    fr_bytes(f, zeros, kv + dk);
    fr_bytes(f, zeros, kv + dv);
}

static void frames_free(frames *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->owned[i]);
    f->n = 0;
}

static void raw_send(void *s, const frames *f)
{
    for (int i = 0; i < f->n; i++)
        if (zmq_send(s, f->p[i], f->len[i], i + 1 < f->n ? ZMQ_SNDMORE : 0) < 0) {
            fprintf(stderr, "zmq_send: %s\n", zmq_strerror(errno));
            exit(1);
        }
}

/* One reply within timeout_ms: its envelope (caller frees) and frame sizes, or NULL. */
static Kvarena__Envelope *raw_recv(void *s, int timeout_ms, size_t *sizes, int *n_frames)
{
    zmq_pollitem_t it = { s, 0, ZMQ_POLLIN, 0 };
    if (zmq_poll(&it, 1, timeout_ms) <= 0)
        return NULL;
    kvp_msg m;
    Kvarena__Envelope *e = NULL;
    if (kvp_recv(s, &m, 0, ZMQ_DONTWAIT) == 0) {
        e = kvp_decode(&m.env);
        for (int i = 0; i < m.n_tensors && sizes; i++)
            sizes[i] = zmq_msg_size(&m.tensor[i]);
        if (n_frames)
            *n_frames = m.n_tensors;
    }
    kvp_msg_close(&m);
    return e;
}

/* ---- envelopes ---- */

static uint64_t next_req = 1000;

static Kvarena__Envelope env_init(void)
{
    Kvarena__Envelope e = KVARENA__ENVELOPE__INIT;
    e.req_id = next_req++;
    return e;
}

/* Sends f, expects the reply status want (or no reply at all for NO_REPLY; want2 is a
 * second acceptable status, 0 if none), echoing req_id when the sender gave one. */
static void expect2(const char *what, void *s, frames *f, uint64_t req_id, int want, int want2)
{
    raw_send(s, f);
    Kvarena__Envelope *r = raw_recv(s, want == NO_REPLY ? 300 : 3000, NULL, NULL);
    if (want == NO_REPLY) {
        CHECK(!r, "%s: got a reply (status %d), expected none", what, r ? r->status : 0);
    } else if (!r) {
        CHECK(0, "%s: no reply, expected %s", what, kv_strerror(want));
    } else {
        CHECK(r->status == want || (want2 && r->status == want2),
              "%s: status %d (%s: %s), expected %d (%s)", what, r->status,
              kv_strerror(r->status), r->error ? r->error : "", want, kv_strerror(want));
        CHECK(r->req_id == req_id, "%s: reply req_id %llu, expected %llu", what,
              (unsigned long long)r->req_id, (unsigned long long)req_id);
        if (r->status)
            CHECK(r->error && r->error[0], "%s: typed error without a reason", what);
    }
    if (r)
        kvarena__envelope__free_unpacked(r, NULL);
    frames_free(f);
}

/* The harness of every case: counters before, the bad message, counters after (equal),
 * then a correct step of the good client. */
static int cases;
static void bad_case2(const char *what, void *s, frames *f, uint64_t req_id, int want, int want2)
{
    kvc_stats before, after;
    good_stats(&before);
    expect2(what, s, f, req_id, want, want2);
    if (want == NO_REPLY)
        usleep(50000); /* let the server read it before the counters are compared */
    good_stats(&after);
    CHECK(stats_equal(&before, &after), "%s: the server's counters changed", what);
    good_step(1);
    cases++;
}

static void bad_case(const char *what, void *s, frames *f, uint64_t req_id, int want)
{
    bad_case2(what, s, f, req_id, want, 0);
}

/* A whole request on s: sends f (an envelope with req_id, then any tensor frames) and
 * empties it; returns the reply (caller frees) or exits. */
static Kvarena__Envelope *call(void *s, frames *f, uint64_t req_id, size_t *sizes, int *n_frames)
{
    raw_send(s, f);
    frames_free(f);
    Kvarena__Envelope *r = raw_recv(s, 5000, sizes, n_frames);
    if (!r || r->req_id != req_id) {
        fprintf(stderr, "FAIL: no reply to request %llu\n", (unsigned long long)req_id);
        exit(1);
    }
    return r;
}

static int call_status(void *s, frames *f, uint64_t req_id)
{
    Kvarena__Envelope *r = call(s, f, req_id, NULL, NULL);
    int st = r->status;
    kvarena__envelope__free_unpacked(r, NULL);
    return st;
}

/* An Attend envelope (items borrowed from the caller's arrays) packed as f's first frame;
 * returns its req_id. */
static uint64_t fr_attend(frames *f, uint32_t layer, const uint64_t *seqs, const uint32_t *n_new,
                          size_t n_items, float scale)
{
    Kvarena__AttendItem *items = calloc(n_items ? n_items : 1, sizeof(*items));
    Kvarena__AttendItem **ptrs = calloc(n_items ? n_items : 1, sizeof(*ptrs));
    for (size_t i = 0; i < n_items; i++) {
        kvarena__attend_item__init(&items[i]);
        items[i].seq = seqs[i];
        items[i].n_new = n_new[i];
        ptrs[i] = &items[i];
    }
    Kvarena__Attend a = KVARENA__ATTEND__INIT;
    a.layer = layer;
    a.items = ptrs;
    a.n_items = n_items;
    a.scale = scale;
    Kvarena__Envelope e = env_init();
    e.body_case = KVARENA__ENVELOPE__BODY_ATTEND;
    e.attend = &a;
    fr_env(f, &e);
    free(items);
    free(ptrs);
    return e.req_id;
}

/* One Attend case: the envelope, then Q, K, V for t tokens with size offsets. */
static void attend_case(const char *what, void *s, uint32_t layer, const uint64_t *seqs,
                        const uint32_t *n_new, size_t n_items, float scale, uint64_t t, int want)
{
    frames f = { 0 };
    uint64_t id = fr_attend(&f, layer, seqs, n_new, n_items, scale);
    fr_qkv(&f, t, 0, 0, 0);
    bad_case(what, s, &f, id, want);
}

/* An envelope with only a body case set (empty body message) packed into f. */
static uint64_t fr_body(frames *f, Kvarena__Envelope__BodyCase body)
{
    Kvarena__Envelope e = env_init();
    static Kvarena__Ready rd = KVARENA__READY__INIT;
    static Kvarena__JobDone jd = KVARENA__JOB_DONE__INIT;
    static Kvarena__HelloReply hr = KVARENA__HELLO_REPLY__INIT;
    static Kvarena__StatsReply sr = KVARENA__STATS_REPLY__INIT;
    static Kvarena__Ping pg = KVARENA__PING__INIT;
    static Kvarena__Stats st = KVARENA__STATS__INIT;
    static Kvarena__Hello he = KVARENA__HELLO__INIT;
    static Kvarena__Heartbeat hb = KVARENA__HEARTBEAT__INIT;
    static Kvarena__SeqOpen so = KVARENA__SEQ_OPEN__INIT;
    e.body_case = body;
    switch (body) {
    case KVARENA__ENVELOPE__BODY_READY: e.ready = &rd; break;
    case KVARENA__ENVELOPE__BODY_JOB_DONE: e.job_done = &jd; break;
    case KVARENA__ENVELOPE__BODY_HELLO_REPLY: e.hello_reply = &hr; break;
    case KVARENA__ENVELOPE__BODY_STATS_REPLY: e.stats_reply = &sr; break;
    case KVARENA__ENVELOPE__BODY_PING: e.ping = &pg; break;
    case KVARENA__ENVELOPE__BODY_STATS: e.stats = &st; break;
    case KVARENA__ENVELOPE__BODY_HELLO: he.version = KVP_VERSION; e.hello = &he; break;
    case KVARENA__ENVELOPE__BODY_HEARTBEAT: e.heartbeat = &hb; break;
    case KVARENA__ENVELOPE__BODY_SEQ_OPEN: e.seq_open = &so; break;
    default: fprintf(stderr, "fr_body: %d\n", (int)body); exit(1);
    }
    fr_env(f, &e);
    return e.req_id;
}

/* A Job envelope naming page 0xffffffff (a forged page id) packed into f. */
static uint64_t fr_forged_job(frames *f, uint64_t job_id)
{
    uint32_t pages[2] = { 0xffffffffu, 0 };
    Kvarena__JobItem it = KVARENA__JOB_ITEM__INIT, *itp = &it;
    it.pages = pages;
    it.n_pages = 2;
    it.n_kv = 16;
    it.n_new = 1;
    Kvarena__Job j = KVARENA__JOB__INIT;
    j.job_id = job_id;
    j.items = &itp;
    j.n_items = 1;
    Kvarena__Envelope e = env_init();
    e.req_id = job_id;
    e.body_case = KVARENA__ENVELOPE__BODY_JOB;
    e.job = &j;
    fr_env(f, &e);
    return e.req_id;
}

/* Frame builders for the other request types: each packs one envelope into f and returns
 * its req_id. */

/* A Hello; client_name NULL leaves the field out. */
static uint64_t fr_hello(frames *f, uint32_t version, const char *tenant, const char *client_name)
{
    Kvarena__Hello h = KVARENA__HELLO__INIT;
    h.version = version;
    h.tenant = (char *)tenant;
    if (client_name)
        h.client_name = (char *)client_name;
    Kvarena__Envelope e = env_init();
    e.body_case = KVARENA__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    fr_env(f, &e);
    return e.req_id;
}

/* An Extend of n tokens (borrowed from the caller). */
static uint64_t fr_extend(frames *f, uint64_t seq, const uint32_t *tokens, size_t n)
{
    Kvarena__Extend x = KVARENA__EXTEND__INIT;
    x.seq = seq;
    x.tokens = (uint32_t *)tokens;
    x.n_tokens = n;
    Kvarena__Envelope e = env_init();
    e.body_case = KVARENA__ENVELOPE__BODY_EXTEND;
    e.extend = &x;
    fr_env(f, &e);
    return e.req_id;
}

static uint64_t fr_fork(frames *f, uint64_t seq)
{
    Kvarena__Fork fk = KVARENA__FORK__INIT;
    fk.seq = seq;
    Kvarena__Envelope e = env_init();
    e.body_case = KVARENA__ENVELOPE__BODY_FORK;
    e.fork = &fk;
    fr_env(f, &e);
    return e.req_id;
}

static uint64_t fr_seq_close(frames *f, uint64_t seq)
{
    Kvarena__SeqClose sc = KVARENA__SEQ_CLOSE__INIT;
    sc.seq = seq;
    Kvarena__Envelope e = env_init();
    e.body_case = KVARENA__ENVELOPE__BODY_SEQ_CLOSE;
    e.seq_close = &sc;
    fr_env(f, &e);
    return e.req_id;
}

/* A worker's Ready (1 thread) without the spawn-time token. */
static uint64_t fr_ready(frames *f, uint32_t index, int32_t pid)
{
    Kvarena__Ready rd = KVARENA__READY__INIT;
    rd.index = index;
    rd.pid = pid;
    rd.threads = 1;
    Kvarena__Envelope e = env_init();
    e.body_case = KVARENA__ENVELOPE__BODY_READY;
    e.ready = &rd;
    fr_env(f, &e);
    return e.req_id;
}

static void *hello(const char *tenant)
{
    void *s = raw_open(ep_client, NULL, 0);
    frames f = { 0 };
    uint64_t id = fr_hello(&f, KVP_VERSION, tenant, "bad_input");
    if (call_status(s, &f, id) != 0) {
        fprintf(stderr, "FAIL: Hello as %s refused\n", tenant);
        exit(1);
    }
    return s;
}

static uint64_t seq_open(void *s)
{
    frames f = { 0 };
    uint64_t id = fr_body(&f, KVARENA__ENVELOPE__BODY_SEQ_OPEN);
    Kvarena__Envelope *r = call(s, &f, id, NULL, NULL);
    if (r->status || r->body_case != KVARENA__ENVELOPE__BODY_SEQ_OPEN_REPLY) {
        fprintf(stderr, "FAIL: SeqOpen: %d\n", r->status);
        exit(1);
    }
    uint64_t seq = r->seq_open_reply->seq;
    kvarena__envelope__free_unpacked(r, NULL);
    return seq;
}

static int seq_close(void *s, uint64_t seq)
{
    frames f = { 0 };
    uint64_t id = fr_seq_close(&f, seq);
    return call_status(s, &f, id);
}

static int extend(void *s, uint64_t seq, uint32_t n)
{
    uint32_t *tok = calloc(n ? n : 1, sizeof(uint32_t));
    for (uint32_t i = 0; i < n; i++)
        tok[i] = kvs_token(1234, i);
    frames f = { 0 };
    uint64_t id = fr_extend(&f, seq, tok, n);
    int st = call_status(s, &f, id);
    free(tok);
    return st;
}

/* ---- the cases, socket by socket ---- */

static const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0x0f, 0x82, 0x01, 0x08, 0xde, 0xad };

/* Malformed frames and messages any socket must refuse; reply_want: the client and admin
 * sockets answer KV_ERR_PROTO, the worker socket answers nothing. */
static void framing_cases(const char *sock_name, void *s, int reply_want)
{
    char what[128];
    frames f = { 0 };
    fr_bytes(&f, garbage, sizeof(garbage));
    snprintf(what, sizeof(what), "%s: garbage envelope", sock_name);
    bad_case(what, s, &f, 0, reply_want);

    /* an Extend envelope cut inside its packed token list */
    uint32_t tok[64];
    for (int i = 0; i < 64; i++)
        tok[i] = 100000 + (uint32_t)i;
    fr_extend(&f, 1, tok, 64);
    f.len[0] /= 2;
    snprintf(what, sizeof(what), "%s: truncated envelope", sock_name);
    bad_case(what, s, &f, 0, reply_want);

    fr_bytes(&f, "", 0); /* decodes as an envelope without a body */
    snprintf(what, sizeof(what), "%s: empty frame", sock_name);
    bad_case(what, s, &f, 0, reply_want);

    /* a length prefix far past the frame ("negative" 10-byte varint length) */
    static const uint8_t neg_len[] = { 0x08, 0x05, 0x72, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0xff, 0xff, 0xff, 0x01, 0x01 };
    fr_bytes(&f, neg_len, sizeof(neg_len));
    snprintf(what, sizeof(what), "%s: negative length prefix", sock_name);
    bad_case(what, s, &f, 0, reply_want);

    fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
    for (int i = 0; i < 11; i++)
        fr_bytes(&f, zeros, 16);
    snprintf(what, sizeof(what), "%s: 12 frames (more than KVP_MAX_FRAMES)", sock_name);
    bad_case(what, s, &f, 0, reply_want);
}

static void client_cases(void)
{
    void *alice = hello("alice"), *bob = hello("bob"), *anon = raw_open(ep_client, NULL, 0);
    frames f = { 0 };
    uint64_t id;

    framing_cases("client", alice, KV_ERR_PROTO);
    framing_cases("client before Hello", anon, KV_ERR_PROTO);

    id = fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
    fr_bytes(&f, zeros, 8);
    bad_case("Stats with a tensor frame", alice, &f, id, KV_ERR_PROTO);

    /* unknown field 99 only: a message type this server does not know */
    uint8_t unknown[16] = { 0x08, 0x07, 0x98, 0x06, 0x01 }; /* req_id 7, field 99 = 1 */
    fr_bytes(&f, unknown, 5);
    bad_case("unknown message type (field 99)", alice, &f, 7, KV_ERR_PROTO);
    static const Kvarena__Envelope__BodyCase not_client[] = {
        KVARENA__ENVELOPE__BODY_READY, KVARENA__ENVELOPE__BODY_JOB_DONE,
        KVARENA__ENVELOPE__BODY_HELLO_REPLY, KVARENA__ENVELOPE__BODY_STATS_REPLY,
        KVARENA__ENVELOPE__BODY_PING, KVARENA__ENVELOPE__BODY_HEARTBEAT };
    for (size_t i = 0; i < sizeof(not_client) / sizeof(not_client[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "message type %d on the client socket", (int)not_client[i]);
        id = fr_body(&f, not_client[i]);
        bad_case(what, alice, &f, id, KV_ERR_PROTO);
    }
    id = fr_forged_job(&f, 1);
    fr_qkv(&f, 1, 0, 0, 0);
    bad_case("Job naming page 0xffffffff on the client socket", alice, &f, id, KV_ERR_PROTO);

    /* authentication */
    id = fr_body(&f, KVARENA__ENVELOPE__BODY_SEQ_OPEN);
    bad_case("SeqOpen before Hello", anon, &f, id, KV_ERR_AUTH);
    id = fr_hello(&f, KVP_VERSION + 1, "alice", NULL);
    bad_case("Hello with a wrong version", anon, &f, id, KV_ERR_PROTO);
    char *longname = malloc(100001);
    memset(longname, 'm', 100000);
    longname[100000] = 0;
    const char *tenants[] = { "mallory", longname };
    for (int i = 0; i < 2; i++) {
        id = fr_hello(&f, KVP_VERSION, tenants[i], NULL);
        bad_case(i == 0 ? "Hello as an unknown tenant" : "Hello with a 100 kB tenant name", anon,
                 &f, id, KV_ERR_AUTH);
    }
    frames_free(&f);
    free(longname);
    id = fr_body(&f, KVARENA__ENVELOPE__BODY_SEQ_OPEN);
    bad_case("SeqOpen after refused Hellos", anon, &f, id, KV_ERR_AUTH);

    /* sizes */
    uint32_t max_ext = 65536; /* deploy/kvarena.ini max_extend_tokens */
    uint64_t mine = seq_open(alice);
    id = fr_extend(&f, mine, NULL, 0);
    bad_case("Extend with no tokens", alice, &f, id, KV_ERR_INVAL);
    uint32_t *many = malloc(sizeof(uint32_t) * (max_ext + 1));
    for (uint32_t i = 0; i <= max_ext; i++)
        many[i] = 0xffffffffu;
    id = fr_extend(&f, mine, many, max_ext + 1);
    bad_case("Extend of max_extend_tokens + 1", alice, &f, id, KV_ERR_TOOBIG);
    Kvarena__Lookup l = KVARENA__LOOKUP__INIT;
    l.tokens = many;
    l.n_tokens = max_ext + 1;
    Kvarena__Envelope e = env_init();
    e.body_case = KVARENA__ENVELOPE__BODY_LOOKUP;
    e.lookup = &l;
    fr_env(&f, &e);
    bad_case("Lookup of max_extend_tokens + 1", alice, &f, e.req_id, KV_ERR_TOOBIG);
    free(many);

    /* a sequence with 3 pending tokens: the Attends below are wrong in one way each */
    CHECK(extend(alice, mine, 3) == 0, "extend of a fresh sequence");
    uint64_t s1[2] = { mine, mine };
    uint32_t n3[2] = { 3, 3 };
    attend_case("Attend with no items", alice, 0, s1, n3, 0, 0, 3, KV_ERR_INVAL);
    uint32_t max_batch = M->max_batch_tokens;
    uint64_t *seqs = calloc(max_batch + 1, sizeof(uint64_t));
    uint32_t *ones = calloc(max_batch + 1, sizeof(uint32_t));
    for (uint32_t i = 0; i <= max_batch; i++) {
        seqs[i] = mine;
        ones[i] = 1;
    }
    attend_case("Attend with max_batch_tokens + 1 items", alice, 0, seqs, ones, max_batch + 1, 0,
                1, KV_ERR_TOOBIG);
    free(seqs);
    free(ones);
    uint32_t n0 = 0, nhuge = 0xffffffffu, nhalf[2] = { 0x80000000u, 0x80000000u };
    attend_case("Attend with n_new 0", alice, 0, s1, &n0, 1, 0, 0, KV_ERR_INVAL);
    attend_case("Attend with n_new 2^32-1", alice, 0, s1, &nhuge, 1, 0, 1, KV_ERR_TOOBIG);
    attend_case("Attend whose n_new sum passes 2^32", alice, 0, s1, nhalf, 2, 0, 1, KV_ERR_TOOBIG);
    attend_case("Attend with layer == layers", alice, M->layers, s1, n3, 1, 0, 3, KV_ERR_INVAL);
    attend_case("Attend with layer 2^32-1", alice, 0xffffffffu, s1, n3, 1, 0, 3, KV_ERR_INVAL);
    attend_case("Attend with scale NaN", alice, 0, s1, n3, 1, NAN, 3, KV_ERR_INVAL);
    attend_case("Attend with scale +Inf", alice, 0, s1, n3, 1, INFINITY, 3, KV_ERR_INVAL);
    attend_case("Attend with scale -1", alice, 0, s1, n3, 1, -1.0f, 3, KV_ERR_INVAL);
    /* layer as a 10-byte varint -1: protobuf-c keeps its low 32 bits */
    uint8_t neg[64], *p = neg;
    uint8_t item[16];
    size_t il = 0;
    item[il++] = 0x08; /* AttendItem.seq */
    for (uint64_t v = mine; ; v >>= 7) {
        item[il++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80)
            break;
    }
    item[il++] = 0x10; /* n_new 3 */
    item[il++] = 0x03;
    *p++ = 0x08; *p++ = 0x2a;                 /* Envelope.req_id = 42 */
    *p++ = 0x82; *p++ = 0x01;                 /* Envelope.attend (field 16) */
    *p++ = (uint8_t)(11 + 2 + il);
    *p++ = 0x08;                              /* Attend.layer = -1 as int64 */
    for (int i = 0; i < 9; i++)
        *p++ = 0xff;
    *p++ = 0x01;
    *p++ = 0x12; *p++ = (uint8_t)il;          /* Attend.items */
    memcpy(p, item, il);
    p += il;
    fr_bytes(&f, neg, (size_t)(p - neg));
    fr_qkv(&f, 3, 0, 0, 0);
    bad_case2("Attend with layer -1 (10-byte varint)", alice, &f, 42, KV_ERR_INVAL, KV_ERR_PROTO);

    /* frames that disagree with the header */
    id = fr_attend(&f, 0, s1, n3, 1, 0);
    fr_qkv(&f, 3, 0, 0, 0);
    f.n = 3; /* Q and K only */
    bad_case("Attend with 2 tensor frames", alice, &f, id, KV_ERR_PROTO);
    id = fr_attend(&f, 0, s1, n3, 1, 0);
    fr_qkv(&f, 3, 0, 0, 0);
    fr_bytes(&f, zeros, 4);
    bad_case("Attend with 4 tensor frames", alice, &f, id, KV_ERR_PROTO);
    id = fr_attend(&f, 0, s1, n3, 1, 0);
    fr_qkv(&f, 3, 0, 0, -4);
    bad_case("Attend with V 4 bytes short", alice, &f, id, KV_ERR_PROTO);
    id = fr_attend(&f, 0, s1, n3, 1, 0);
    fr_qkv(&f, 3, 4, 0, 0);
    bad_case("Attend with Q 4 bytes long", alice, &f, id, KV_ERR_PROTO);
    id = fr_attend(&f, 0, s1, n3, 1, 0);
    fr_qkv(&f, 3, -(long)(3 * M->q_heads * M->head_dim * 4), 0, 0);
    bad_case("Attend with an empty Q frame", alice, &f, id, KV_ERR_PROTO);
    id = fr_attend(&f, 0, s1, n3, 1, 0);
    fr_bytes(&f, zeros, 700000);
    fr_bytes(&f, zeros, 700000);
    fr_bytes(&f, zeros, 700000);
    bad_case("Attend with three 700 kB frames", alice, &f, id, KV_ERR_PROTO);

    /* state */
    uint32_t n2 = 2;
    attend_case("Attend at layer 1, sequence expects 0", alice, 1, s1, n3, 1, 0, 3, KV_ERR_STATE);
    attend_case("Attend with n_new 2 of 3 pending", alice, 0, s1, &n2, 1, 0, 2, KV_ERR_STATE);
    attend_case("Attend naming a sequence twice", alice, 0, s1, n3, 2, 0, 6, KV_ERR_INVAL);
    id = fr_fork(&f, mine);
    bad_case("Fork with pending tokens", alice, &f, id, KV_ERR_STATE);
    uint32_t one = 5;
    id = fr_extend(&f, mine, &one, 1);
    bad_case("Extend with tokens pending", alice, &f, id, KV_ERR_STATE);

    /* forged and stale sequence ids */
    uint64_t stale = seq_open(alice);
    CHECK(seq_close(alice, stale) == 0, "close");
    const struct { const char *who; void *s; uint64_t seq; } forged[] = {
        { "other tenant's sequence", bob, good_seq },
        { "other tenant's sequence (own pending)", bob, mine },
        { "other generation of a live slot", alice, good_seq ^ (1ull << 32) },
        { "other generation of a live slot (+1)", alice, good_seq + (1ull << 32) },
        { "stale (closed) sequence", alice, stale },
        { "sequence 0", alice, 0 },
        { "sequence 2^64-1", alice, ~0ull },
        { "slot past max_seqs", alice, (1ull << 32) | 0xfffffffu },
    };
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        char what[128];
        uint64_t sq = forged[i].seq;
        uint32_t n1 = 1;
        snprintf(what, sizeof(what), "Attend on %s", forged[i].who);
        attend_case(what, forged[i].s, 0, &sq, &n1, 1, 0, 1, KV_ERR_NOSEQ);
        snprintf(what, sizeof(what), "Extend on %s", forged[i].who);
        id = fr_extend(&f, sq, &one, 1);
        bad_case(what, forged[i].s, &f, id, KV_ERR_NOSEQ);
        snprintf(what, sizeof(what), "Fork of %s", forged[i].who);
        id = fr_fork(&f, sq);
        bad_case(what, forged[i].s, &f, id, KV_ERR_NOSEQ);
        snprintf(what, sizeof(what), "SeqClose of %s", forged[i].who);
        id = fr_seq_close(&f, sq);
        bad_case(what, forged[i].s, &f, id, KV_ERR_NOSEQ);
    }
    /* one bad item spoils the batch and nothing of the good item changes */
    uint64_t mix[2] = { mine, good_seq ^ (1ull << 32) };
    uint32_t nmix[2] = { 3, 1 };
    attend_case("Attend with one forged item after a valid one", alice, 0, mix, nmix, 2, 0, 4,
                KV_ERR_NOSEQ);
    CHECK(seq_close(alice, mine) == 0, "close of the pending sequence");

    /* NaN and Inf in Q/K/V: passed through (the server never reads tensor data) */
    uint64_t nan_seq = seq_open(bob);
    CHECK(extend(bob, nan_seq, 2) == 0, "extend for the NaN case");
    size_t qn = 2ull * M->q_heads * M->head_dim, kvn = 2ull * M->kv_heads * M->head_dim;
    float *q = malloc(qn * 4), *k = malloc(kvn * 4), *v = malloc(kvn * 4);
    for (size_t i = 0; i < qn; i++)
        q[i] = i % 3 ? NAN : 1.0f;
    for (size_t i = 0; i < kvn; i++) {
        k[i] = i % 2 ? INFINITY : -INFINITY;
        v[i] = i % 5 ? NAN : INFINITY;
    }
    for (uint32_t layer = 0; layer < M->layers; layer++) {
        uint32_t n2b = 2;
        uint64_t aid = fr_attend(&f, layer, &nan_seq, &n2b, 1, 0);
        fr_bytes(&f, q, qn * 4);
        fr_bytes(&f, k, kvn * 4);
        fr_bytes(&f, v, kvn * 4);
        size_t sizes[KVP_MAX_FRAMES];
        int nf = 0;
        Kvarena__Envelope *r = call(bob, &f, aid, sizes, &nf);
        CHECK(r->status == 0 && nf == 1 && sizes[0] == qn * 4,
              "NaN/Inf attend layer %u: status %d, %d frames (passed through expected)", layer,
              r->status, nf);
        kvarena__envelope__free_unpacked(r, NULL);
    }
    free(q); free(k); free(v);
    CHECK(seq_close(bob, nan_seq) == 0, "close of the NaN sequence");
    good_step(1);
    zmq_close(alice);
    zmq_close(bob);
    zmq_close(anon);
}

static void admin_cases(void)
{
    void *s = raw_open(ep_admin, NULL, 0);
    frames f = { 0 };
    framing_cases("admin", s, KV_ERR_PROTO);
    uint64_t id = fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
    fr_bytes(&f, zeros, 8);
    bad_case("admin: Stats with a tensor frame", s, &f, id, KV_ERR_PROTO);
    static const Kvarena__Envelope__BodyCase not_admin[] = {
        KVARENA__ENVELOPE__BODY_HELLO, KVARENA__ENVELOPE__BODY_SEQ_OPEN,
        KVARENA__ENVELOPE__BODY_READY, KVARENA__ENVELOPE__BODY_JOB_DONE,
        KVARENA__ENVELOPE__BODY_STATS_REPLY, KVARENA__ENVELOPE__BODY_HEARTBEAT };
    for (size_t i = 0; i < sizeof(not_admin) / sizeof(not_admin[0]); i++) {
        char what[64];
        snprintf(what, sizeof(what), "admin: message type %d", (int)not_admin[i]);
        id = fr_body(&f, not_admin[i]);
        bad_case(what, s, &f, id, KV_ERR_PROTO);
    }
    uint64_t sq = good_seq;
    uint32_t n1 = 1;
    id = fr_attend(&f, 0, &sq, &n1, 1, 0);
    fr_qkv(&f, 1, 0, 0, 0);
    bad_case("admin: Attend", s, &f, id, KV_ERR_PROTO);
    id = fr_body(&f, KVARENA__ENVELOPE__BODY_PING);
    bad_case("admin: Ping still answered", s, &f, id, 0);
    zmq_close(s);
}

/* Worker states from the admin socket: fills pids[] and restarts[] (up to 64 workers);
 * returns how many workers there are and how many are ready or busy in *up. */
static int worker_states(int *pids, uint32_t *restarts, int *up)
{
    void *s = raw_open(ep_admin, NULL, 0);
    frames f = { 0 };
    uint64_t id = fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
    Kvarena__Envelope *r = call(s, &f, id, NULL, NULL);
    int n = 0;
    *up = 0;
    if (r->body_case == KVARENA__ENVELOPE__BODY_STATS_REPLY) {
        const Kvarena__StatsReply *sr = r->stats_reply;
        for (size_t i = 0; i < sr->n_workers && i < 64; i++, n++) {
            pids[i] = sr->workers[i]->pid;
            restarts[i] = sr->workers[i]->restarts;
            *up += !strcmp(sr->workers[i]->state, "ready") || !strcmp(sr->workers[i]->state, "busy");
        }
    }
    kvarena__envelope__free_unpacked(r, NULL);
    zmq_close(s);
    return n;
}

/* Forged JobDone for job ids 1..last (req_id = job_id), each with an O frame of one row. */
static void send_forged_job_dones(void *s, uint64_t last)
{
    size_t o_bytes = (size_t)M->q_heads * M->head_dim * sizeof(float);
    for (uint64_t j = 1; j <= last; j++) {
        Kvarena__JobDone jd = KVARENA__JOB_DONE__INIT;
        jd.job_id = j;
        Kvarena__Envelope e = env_init();
        e.req_id = j;
        e.body_case = KVARENA__ENVELOPE__BODY_JOB_DONE;
        e.job_done = &jd;
        frames f = { 0 };
        fr_env(&f, &e);
        fr_bytes(&f, zeros, o_bytes);
        raw_send(s, &f);
        frames_free(&f);
    }
}

static void worker_cases(void)
{
    int pids[64], pids2[64], up, up2;
    uint32_t restarts[64], restarts2[64];
    int n = worker_states(pids, restarts, &up);
    CHECK(n >= 1 && up == n, "before the worker cases: %d of %d workers up", up, n);
    void *s = raw_open(ep_worker, NULL, 0);
    frames f = { 0 };
    framing_cases("worker", s, NO_REPLY);

    const struct { const char *what; uint32_t index; int32_t pid; } readies[] = {
        { "Ready with an unknown index", 99, pids[0] },
        { "Ready with a foreign pid", 0, (int32_t)getpid() },
        { "Ready with pid 0", 0, 0 },
        { "Ready with pid -1", 0, -1 },
        { "Ready with index 2^32-1", 0xffffffffu, pids[0] },
        /* the real index and pid, published by stats, without the spawn-time token */
        { "Ready of a real worker without its token", 0, pids[0] },
    };
    for (size_t i = 0; i < sizeof(readies) / sizeof(readies[0]); i++) {
        fr_ready(&f, readies[i].index, readies[i].pid);
        bad_case(readies[i].what, s, &f, 0, NO_REPLY);
    }
    Kvarena__Heartbeat hb = KVARENA__HEARTBEAT__INIT;
    hb.index = 0;
    hb.pid = (int32_t)getpid();
    Kvarena__Envelope e = env_init();
    e.body_case = KVARENA__ENVELOPE__BODY_HEARTBEAT;
    e.heartbeat = &hb;
    fr_env(&f, &e);
    bad_case("Heartbeat with a foreign pid", s, &f, 0, NO_REPLY);
    hb.pid = pids[0];
    hb.token = 12345;
    fr_env(&f, &e);
    bad_case("Heartbeat of a real worker with a wrong token", s, &f, 0, NO_REPLY);

    /* forged JobDone for every job id so far and the next ones, with an O frame */
    kvc_stats before, after;
    good_stats(&before);
    uint64_t last = before.jobs_done + before.jobs_failed + 64;
    send_forged_job_dones(s, last);
    usleep(100000);
    good_stats(&after);
    CHECK(stats_equal(&before, &after), "forged JobDone for job ids 1..%llu changed the counters",
          (unsigned long long)last);
    good_step(1);
    fr_forged_job(&f, 7);
    fr_qkv(&f, 1, 0, 0, 0);
    bad_case("Job naming page 0xffffffff on the worker socket", s, &f, 0, NO_REPLY);
    zmq_close(s);

    /* a socket that borrows a live worker's routing id (kvworker names itself w<i>-<pid>):
     * the ROUTER refuses a second peer with the same id, so nothing it says arrives */
    char rid[32];
    snprintf(rid, sizeof(rid), "w0-%d", pids[0]);
    s = raw_open(ep_worker, rid, strlen(rid));
    usleep(50000);
    good_stats(&before);
    send_forged_job_dones(s, last + 8);
    fr_ready(&f, 0, pids[0]);
    raw_send(s, &f);
    frames_free(&f);
    usleep(100000);
    good_stats(&after);
    CHECK(stats_equal(&before, &after), "a peer with a worker's routing id changed the counters");
    good_step(1);
    zmq_close(s);

    int n2 = worker_states(pids2, restarts2, &up2);
    CHECK(n2 == n && up2 == n, "after the worker cases: %d of %d workers up", up2, n2);
    for (int i = 0; i < n && i < n2; i++)
        CHECK(pids2[i] == pids[i] && restarts2[i] == restarts[i],
              "worker %d: pid %d -> %d, restarts %u -> %u", i, pids[i], pids2[i], restarts[i],
              restarts2[i]);
}

/* A 2 MiB frame on each socket: ZeroMQ drops the peer (ZMQ_MAXMSGSIZE), nobody answers. */
static void oversized_cases(void)
{
    const char *eps[3] = { ep_client, ep_admin, ep_worker };
    const char *names[3] = { "client: 2 MiB frame", "admin: 2 MiB frame", "worker: 2 MiB frame" };
    for (int i = 0; i < 3; i++) {
        void *s = i == 0 ? hello("alice") : raw_open(eps[i], NULL, 0);
        frames f = { 0 };
        fr_bytes(&f, zeros, BIG);
        bad_case(names[i], s, &f, 0, NO_REPLY);
        /* a Stats in the same message: the peer is cut before any of it is read */
        uint64_t id = fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
        fr_bytes(&f, zeros, BIG);
        bad_case(names[i], s, &f, id, NO_REPLY);
        zmq_close(s);
    }
}

static long rss_kb(void)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", server_pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A DEALER that sends Stats as fast as it can and never reads a reply. */
static void flood(const char *what, void *s, long n)
{
    int tmo = 0;
    zmq_setsockopt(s, ZMQ_SNDTIMEO, &tmo, sizeof(tmo));
    long rss0 = rss_kb(), rss_max = rss0, sent = 0;
    double worst = 0, t0 = now_ms();
    frames f = { 0 };
    fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
    while (sent < n && now_ms() - t0 < 8000) {
        int full = zmq_send(s, f.p[0], f.len[0], ZMQ_DONTWAIT) < 0;
        sent += !full;
        if (full || sent % 5000 == 0) { /* meanwhile, the other client and the server's RSS */
            kvc_stats st;
            double a = now_ms();
            good_stats(&st);
            double d = now_ms() - a;
            worst = d > worst ? d : worst;
            long r = rss_kb();
            rss_max = r > rss_max ? r : rss_max;
            if (full)
                usleep(1000); /* our send queue is full: the server is answering nobody */
        }
    }
    frames_free(&f);
    double secs = (now_ms() - t0) / 1e3;
    usleep(300000);
    long rss1 = rss_kb(), got = 0;
    rss_max = rss1 > rss_max ? rss1 : rss_max;
    /* what reached us is bounded by the high-water marks: the rest was dropped */
    Kvarena__Envelope *r;
    while ((r = raw_recv(s, got ? 50 : 1000, NULL, NULL)) != NULL) {
        got++;
        kvarena__envelope__free_unpacked(r, NULL);
    }
    printf("%s: %ld requests never read in %.1f s, %ld replies kept for the reader; other "
           "client's worst stats %.1f ms; server VmRSS %ld -> max %ld -> %ld kB\n", what, sent,
           secs, got, worst, rss0, rss_max, rss1);
    CHECK(sent >= n / 4, "%s: only %ld requests sent", what, sent);
    CHECK(got >= 1 && got < sent / 4, "%s: %ld of %ld replies arrived: dropping expected", what,
          got, sent);
    CHECK(worst < 1000, "%s: the other client waited %.0f ms", what, worst);
    CHECK(rss_max - rss0 < 32 * 1024, "%s: server VmRSS grew by %ld kB", what, rss_max - rss0);
    good_step(1);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: bad_input RUNTIME_DIR SERVER_PID\n");
        return 2;
    }
    snprintf(ep_client, sizeof(ep_client), "ipc://%s/client.sock", argv[1]);
    snprintf(ep_admin, sizeof(ep_admin), "ipc://%s/admin.sock", argv[1]);
    snprintf(ep_worker, sizeof(ep_worker), "ipc://%s/worker.sock", argv[1]);
    server_pid = atoi(argv[2]);
    zctx = zmq_ctx_new();
    zeros = calloc(1, BIG);
    kvc_opts opts = { .tenant = "alice", .name = "bad_input good client", .timeout_ms = 10000 };
    int rc = kvc_connect(ep_client, &opts, &good);
    if (rc) {
        fprintf(stderr, "connect: %s (%s)\n", kvc_strerror(rc), kvc_last_error(NULL));
        return 1;
    }
    M = kvc_model_info(good);
    for (uint32_t i = 0; i < sizeof(good_tokens) / sizeof(good_tokens[0]); i++)
        good_tokens[i] = kvs_token(77, i);
    CALL(kvc_seq_open(good, &good_seq));
    good_step(21); /* a prompt, then one token after every case */

    client_cases();
    printf("client socket: %d cases\n", cases);
    admin_cases();
    printf("admin socket: %d cases\n", cases);
    worker_cases();
    printf("worker socket: %d cases\n", cases);
    oversized_cases();
    printf("oversized frames: %d cases\n", cases);

    void *c = hello("alice");
    flood("client socket", c, 200000);
    zmq_close(c);
    void *a = raw_open(ep_admin, NULL, 0);
    flood("admin socket", a, 200000);
    zmq_close(a);

    CALL(kvc_seq_close(good, good_seq));
    kvc_stats st;
    good_stats(&st);
    CHECK(st.sequences == 0 && st.pages_in_use == 0, "at the end: %u sequences, %u pages in use",
          st.sequences, st.pages_in_use);
    printf("%d bad-input cases, good sequence at %u tokens, every output exact; %s\n", cases,
           good_len, failures ? "FAILED" : "all checks passed");
    kvc_close(&good);
    zmq_ctx_term(zctx);
    free(zeros);
    return failures ? 1 : 0;
}
