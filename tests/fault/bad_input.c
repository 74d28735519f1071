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
 *   admin socket   garbage, empty, too many frames, frames after Stats, every non-admin type,
 *                  SeqClose of forged ids.
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
 * The messages are built, sent and their replies checked by tests/fault/frames.c; this file
 * holds the cases and the well-behaved client.
 *
 * Usage: bad_input RUNTIME_DIR SERVER_PID (server started with server.max_msg_bytes=1M and
 * the default model). Exit 0 only if every check passed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "client/examples/synth.h"
#include "client/kvclient.h"
#include "proto/kverr.h"
#include "proto/wire.h"
#include "tests/fault/frames.h"

#define BIG FR_ZEROS_MAX    /* 2 MiB: over the 1M max_msg_bytes the script sets */

#define CALL(expr) do { int rc_ = (expr); if (rc_) { fprintf(stderr, "FAIL %s: %s (%s)\n", #expr, \
    kvc_strerror(rc_), kvc_last_error(good)); exit(1); } } while (0)

static char ep_client[512], ep_admin[512], ep_worker[512];
static int server_pid;
static kvc_client *good;          /* the well-behaved client (tenant alice) */
static const kvc_model *M;

/* ---- the well-behaved client: one sequence, extended and attended after every case ---- */

static uint64_t good_seq;
static uint32_t good_tokens[4096], good_len;

/* Extends the good sequence by n tokens and attends every layer; checks each row. */
static void good_step(uint32_t n)
{
    kvs_rows r = kvs_rows_alloc(M, n);
    float *q = r.q, *k = r.k, *v = r.v, *o = r.o;
    size_t qrow = r.qrow;
    double *ref = malloc(sizeof(double) * qrow);
    uint32_t cached = 0;
    CALL(kvc_seq_extend(good, good_seq, good_tokens + good_len, n, &cached));
    FR_CHECK(cached == 0, "good sequence: %u tokens cached on a later extend", cached);
    for (uint32_t layer = 0; layer < M->layers; layer++) {
        kvs_fill_qkv(M, layer, good_tokens + good_len, good_len, n, q, k, v);
        kvc_item it = { good_seq, n };
        CALL(kvc_attend(good, layer, &it, 1, q, k, v, 0, o, NULL));
        for (uint32_t i = 0; i < n; i++) {
            double ref_max = 0;
            if (kvs_ref_row(M, layer, good_tokens, good_len + i, 0, ref, NULL) != 0)
                exit(1);
            double err = kvs_max_abs_err(o + i * qrow, ref, qrow, &ref_max);
            FR_CHECK(err <= kvs_tolerance(M->dtype) * (ref_max > 0 ? ref_max : 1),
                     "good client: layer %u pos %u off by %.3g", layer, good_len + i, err);
        }
    }
    good_len += n;
    kvs_rows_free(&r);
    free(ref);
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

/* ---- the harness of every case ---- */

/* After bad messages: once the server has read them (wait_us), its counters are still
 * *before, and the good client still gets exact outputs. */
static void check_unchanged(const char *what, const kvc_stats *before, useconds_t wait_us)
{
    kvc_stats after;
    if (wait_us)
        usleep(wait_us);
    good_stats(&after);
    FR_CHECK(stats_equal(before, &after), "%s: the server's counters changed", what);
    good_step(1);
}

/* Counters before, the bad message (fr_expect: the reply it must get, or none), counters
 * after (equal), then a correct step of the good client. */
static int cases;
static void bad_case2(const char *what, void *s, frames *f, uint64_t req_id, int want, int want2)
{
    kvc_stats before;
    good_stats(&before);
    fr_expect(what, s, f, req_id, want, want2);
    /* a message nobody answers: let the server read it before the counters are compared */
    check_unchanged(what, &before, want == FR_NO_REPLY ? 50000 : 0);
    cases++;
}

static void bad_case(const char *what, void *s, frames *f, uint64_t req_id, int want)
{
    bad_case2(what, s, f, req_id, want, 0);
}

/* One Attend case: the envelope, then Q, K, V for t tokens. */
static void attend_case(const char *what, void *s, uint32_t layer, const uint64_t *seqs,
                        const uint32_t *n_new, size_t n_items, float scale, uint64_t t, int want)
{
    frames f = { 0 };
    uint64_t id = fr_attend(&f, layer, seqs, n_new, n_items, scale);
    fr_qkv(&f, t, 0, 0, 0);
    bad_case(what, s, &f, id, want);
}

/* Every message type in types[] on s, each refused with KV_ERR_PROTO. */
static void wrong_type_cases(const char *sock_name, void *s,
                             const Kvarena__Envelope__BodyCase *types, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char what[64];
        frames f = { 0 };
        snprintf(what, sizeof(what), "%s: message type %d", sock_name, (int)types[i]);
        uint64_t id = fr_body(&f, types[i]);
        bad_case(what, s, &f, id, KV_ERR_PROTO);
    }
}

/* ---- the cases, socket by socket ---- */

/* A case named "<sock_name>: <what>" whose message carries no req_id to echo. */
static void sock_case(const char *sock_name, const char *what, void *s, frames *f, int want)
{
    char name[128];
    snprintf(name, sizeof(name), "%s: %s", sock_name, what);
    bad_case(name, s, f, 0, want);
}

static const uint8_t garbage[] = { 0xff, 0xff, 0xff, 0xff, 0x0f, 0x82, 0x01, 0x08, 0xde, 0xad };

/* Malformed frames and messages any socket must refuse; reply_want: the client and admin
 * sockets answer KV_ERR_PROTO, the worker socket answers nothing. */
static void framing_cases(const char *sock_name, void *s, int reply_want)
{
    frames f = { 0 };
    fr_bytes(&f, garbage, sizeof(garbage));
    sock_case(sock_name, "garbage envelope", s, &f, reply_want);

    /* an Extend envelope cut inside its packed token list */
    uint32_t tok[64];
    for (int i = 0; i < 64; i++)
        tok[i] = 100000 + (uint32_t)i;
    fr_extend(&f, 1, tok, 64);
    f.len[0] /= 2;
    sock_case(sock_name, "truncated envelope", s, &f, reply_want);

    fr_bytes(&f, "", 0); /* decodes as an envelope without a body */
    sock_case(sock_name, "empty frame", s, &f, reply_want);

    /* a length prefix far past the frame ("negative" 10-byte varint length) */
    static const uint8_t neg_len[] = { 0x08, 0x05, 0x72, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                       0xff, 0xff, 0xff, 0x01, 0x01 };
    fr_bytes(&f, neg_len, sizeof(neg_len));
    sock_case(sock_name, "negative length prefix", s, &f, reply_want);

    fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
    for (int i = 0; i < 11; i++)
        fr_zeros(&f, 16);
    sock_case(sock_name, "12 frames (more than KVP_MAX_FRAMES)", s, &f, reply_want);
}

/* Messages the client socket does not take, on a socket past Hello. */
static void client_type_cases(void *alice)
{
    frames f = { 0 };
    uint64_t id = fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
    fr_zeros(&f, 8);
    bad_case("Stats with a tensor frame", alice, &f, id, KV_ERR_PROTO);

    /* unknown field 99 only: a message type this server does not know */
    uint8_t unknown[16] = { 0x08, 0x07, 0x98, 0x06, 0x01 }; /* req_id 7, field 99 = 1 */
    fr_bytes(&f, unknown, 5);
    bad_case("unknown message type (field 99)", alice, &f, 7, KV_ERR_PROTO);
    static const Kvarena__Envelope__BodyCase not_client[] = {
        KVARENA__ENVELOPE__BODY_READY, KVARENA__ENVELOPE__BODY_JOB_DONE,
        KVARENA__ENVELOPE__BODY_HELLO_REPLY, KVARENA__ENVELOPE__BODY_STATS_REPLY,
        KVARENA__ENVELOPE__BODY_PING, KVARENA__ENVELOPE__BODY_HEARTBEAT };
    wrong_type_cases("client", alice, not_client, sizeof(not_client) / sizeof(not_client[0]));
    id = fr_forged_job(&f, 1);
    fr_qkv(&f, 1, 0, 0, 0);
    bad_case("Job naming page 0xffffffff on the client socket", alice, &f, id, KV_ERR_PROTO);
}

/* Authentication, on a socket that never said a good Hello. */
static void hello_cases(void *anon)
{
    frames f = { 0 };
    uint64_t id = fr_body(&f, KVARENA__ENVELOPE__BODY_SEQ_OPEN);
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
    free(longname);
    id = fr_body(&f, KVARENA__ENVELOPE__BODY_SEQ_OPEN);
    bad_case("SeqOpen after refused Hellos", anon, &f, id, KV_ERR_AUTH);
}

/* Extend and Lookup of no tokens or too many, on alice's fresh sequence mine. */
static void token_count_cases(void *alice, uint64_t mine)
{
    uint32_t max_ext = 65536; /* deploy/kvarena.ini max_extend_tokens */
    frames f = { 0 };
    uint64_t id = fr_extend(&f, mine, NULL, 0);
    bad_case("Extend with no tokens", alice, &f, id, KV_ERR_INVAL);
    uint32_t *many = malloc(sizeof(uint32_t) * (max_ext + 1));
    for (uint32_t i = 0; i <= max_ext; i++)
        many[i] = 0xffffffffu;
    id = fr_extend(&f, mine, many, max_ext + 1);
    bad_case("Extend of max_extend_tokens + 1", alice, &f, id, KV_ERR_TOOBIG);
    Kvarena__Lookup l = KVARENA__LOOKUP__INIT;
    l.tokens = many;
    l.n_tokens = max_ext + 1;
    id = fr_msg(&f, KVARENA__ENVELOPE__BODY_LOOKUP, &l);
    bad_case("Lookup of max_extend_tokens + 1", alice, &f, id, KV_ERR_TOOBIG);
    free(many);
}

/* Attends whose header is wrong in one way each; alice's mine has 3 pending tokens. */
static void attend_header_cases(void *alice, uint64_t mine)
{
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
    frames f = { 0 };
    uint64_t id = fr_attend_layer_minus1(&f, mine, 3);
    fr_qkv(&f, 3, 0, 0, 0);
    bad_case2("Attend with layer -1 (10-byte varint)", alice, &f, id, KV_ERR_INVAL, KV_ERR_PROTO);
}

/* Attends of 3 tokens of mine whose tensor frames disagree with the header. */
static void attend_frame_cases(void *alice, uint64_t mine)
{
    uint32_t n3 = 3;
    frames f = { 0 };
    uint64_t id = fr_attend(&f, 0, &mine, &n3, 1, 0);
    fr_qkv(&f, 3, 0, 0, 0);
    f.n = 3; /* Q and K only */
    bad_case("Attend with 2 tensor frames", alice, &f, id, KV_ERR_PROTO);
    id = fr_attend(&f, 0, &mine, &n3, 1, 0);
    fr_qkv(&f, 3, 0, 0, 0);
    fr_zeros(&f, 4);
    bad_case("Attend with 4 tensor frames", alice, &f, id, KV_ERR_PROTO);
    id = fr_attend(&f, 0, &mine, &n3, 1, 0);
    fr_qkv(&f, 3, 0, 0, -4);
    bad_case("Attend with V 4 bytes short", alice, &f, id, KV_ERR_PROTO);
    id = fr_attend(&f, 0, &mine, &n3, 1, 0);
    fr_qkv(&f, 3, 4, 0, 0);
    bad_case("Attend with Q 4 bytes long", alice, &f, id, KV_ERR_PROTO);
    id = fr_attend(&f, 0, &mine, &n3, 1, 0);
    fr_qkv(&f, 3, -(long)(3 * M->q_heads * M->head_dim * 4), 0, 0);
    bad_case("Attend with an empty Q frame", alice, &f, id, KV_ERR_PROTO);
    id = fr_attend(&f, 0, &mine, &n3, 1, 0);
    fr_zeros(&f, 700000);
    fr_zeros(&f, 700000);
    fr_zeros(&f, 700000);
    bad_case("Attend with three 700 kB frames", alice, &f, id, KV_ERR_PROTO);
}

/* Requests the state of mine (3 tokens pending, layer 0 next) does not allow. */
static void state_cases(void *alice, uint64_t mine)
{
    uint64_t s1[2] = { mine, mine };
    uint32_t n3[2] = { 3, 3 }, n2 = 2, one = 5;
    attend_case("Attend at layer 1, sequence expects 0", alice, 1, s1, n3, 1, 0, 3, KV_ERR_STATE);
    attend_case("Attend with n_new 2 of 3 pending", alice, 0, s1, &n2, 1, 0, 2, KV_ERR_STATE);
    attend_case("Attend naming a sequence twice", alice, 0, s1, n3, 2, 0, 6, KV_ERR_INVAL);
    frames f = { 0 };
    uint64_t id = fr_fork(&f, mine);
    bad_case("Fork with pending tokens", alice, &f, id, KV_ERR_STATE);
    id = fr_extend(&f, mine, &one, 1);
    bad_case("Extend with tokens pending", alice, &f, id, KV_ERR_STATE);
}

/* Every sequence request naming a sequence its sender may not use: another tenant's, another
 * generation's, a closed one, ids that never were. mine: alice's, with 3 tokens pending. */
static void forged_seq_cases(void *alice, void *bob, uint64_t mine)
{
    uint64_t stale = fr_call_seq_open(alice);
    FR_CHECK(fr_call_seq_close(alice, stale) == 0, "close");
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
    frames f = { 0 };
    uint32_t one = 5;
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        char what[128];
        uint64_t sq = forged[i].seq, id;
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
}

/* NaN and Inf in Q/K/V: passed through (the server never reads tensor data), on every layer
 * of a sequence of bob's. */
static void nan_cases(void *bob)
{
    uint64_t nan_seq = fr_call_seq_open(bob);
    FR_CHECK(fr_call_extend(bob, nan_seq, 2) == 0, "extend for the NaN case");
    size_t qn = 2ull * M->q_heads * M->head_dim, kvn = 2ull * M->kv_heads * M->head_dim;
    float *q = malloc(qn * 4), *k = malloc(kvn * 4), *v = malloc(kvn * 4);
    for (size_t i = 0; i < qn; i++)
        q[i] = i % 3 ? NAN : 1.0f;
    for (size_t i = 0; i < kvn; i++) {
        k[i] = i % 2 ? INFINITY : -INFINITY;
        v[i] = i % 5 ? NAN : INFINITY;
    }
    frames f = { 0 };
    for (uint32_t layer = 0; layer < M->layers; layer++) {
        uint32_t n2 = 2;
        uint64_t id = fr_attend(&f, layer, &nan_seq, &n2, 1, 0);
        fr_bytes(&f, q, qn * 4);
        fr_bytes(&f, k, kvn * 4);
        fr_bytes(&f, v, kvn * 4);
        size_t sizes[KVP_MAX_FRAMES];
        int nf = 0;
        Kvarena__Envelope *r = fr_call(bob, &f, id, sizes, &nf);
        FR_CHECK(r->status == 0 && nf == 1 && sizes[0] == qn * 4,
                 "NaN/Inf attend layer %u: status %d, %d frames (passed through expected)", layer,
                 r->status, nf);
        kvarena__envelope__free_unpacked(r, NULL);
    }
    free(q); free(k); free(v);
    FR_CHECK(fr_call_seq_close(bob, nan_seq) == 0, "close of the NaN sequence");
}

static void client_cases(void)
{
    void *alice = fr_open_hello(ep_client, "alice"), *bob = fr_open_hello(ep_client, "bob");
    void *anon = fr_open(ep_client, NULL, 0);
    framing_cases("client", alice, KV_ERR_PROTO);
    framing_cases("client before Hello", anon, KV_ERR_PROTO);
    client_type_cases(alice);
    hello_cases(anon);
    uint64_t mine = fr_call_seq_open(alice);
    token_count_cases(alice, mine);
    /* a sequence with 3 pending tokens: the requests below are wrong in one way each */
    FR_CHECK(fr_call_extend(alice, mine, 3) == 0, "extend of a fresh sequence");
    attend_header_cases(alice, mine);
    attend_frame_cases(alice, mine);
    state_cases(alice, mine);
    forged_seq_cases(alice, bob, mine);
    FR_CHECK(fr_call_seq_close(alice, mine) == 0, "close of the pending sequence");
    nan_cases(bob);
    good_step(1);
    zmq_close(alice);
    zmq_close(bob);
    zmq_close(anon);
}

static void admin_cases(void)
{
    void *s = fr_open(ep_admin, NULL, 0);
    frames f = { 0 };
    framing_cases("admin", s, KV_ERR_PROTO);
    uint64_t id = fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
    fr_zeros(&f, 8);
    bad_case("admin: Stats with a tensor frame", s, &f, id, KV_ERR_PROTO);
    static const Kvarena__Envelope__BodyCase not_admin[] = {
        KVARENA__ENVELOPE__BODY_HELLO, KVARENA__ENVELOPE__BODY_SEQ_OPEN,
        KVARENA__ENVELOPE__BODY_READY, KVARENA__ENVELOPE__BODY_JOB_DONE,
        KVARENA__ENVELOPE__BODY_STATS_REPLY, KVARENA__ENVELOPE__BODY_HEARTBEAT };
    wrong_type_cases("admin", s, not_admin, sizeof(not_admin) / sizeof(not_admin[0]));
    uint64_t sq = good_seq;
    uint32_t n1 = 1;
    attend_case("admin: Attend", s, 0, &sq, &n1, 1, 0, 1, KV_ERR_PROTO);
    /* an operator's close of ids that name no open sequence: the good one stays open */
    const uint64_t forged[] = { 0, good_seq ^ (1ull << 32), good_seq | 0xffffffffull, UINT64_MAX };
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        id = fr_seq_close(&f, forged[i]);
        bad_case("admin: SeqClose of a forged id", s, &f, id, KV_ERR_NOSEQ);
    }
    id = fr_body(&f, KVARENA__ENVELOPE__BODY_PING);
    bad_case("admin: Ping still answered", s, &f, id, 0);
    zmq_close(s);
}

static void worker_cases(void)
{
    int pids[64], pids2[64], up, up2;
    uint32_t restarts[64], restarts2[64];
    int n = fr_call_worker_states(ep_admin, pids, restarts, 64, &up);
    FR_CHECK(n >= 1 && up == n, "before the worker cases: %d of %d workers up", up, n);
    void *s = fr_open(ep_worker, NULL, 0);
    frames f = { 0 };
    framing_cases("worker", s, FR_NO_REPLY);

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
        bad_case(readies[i].what, s, &f, 0, FR_NO_REPLY);
    }
    Kvarena__Heartbeat hb = KVARENA__HEARTBEAT__INIT;
    hb.index = 0;
    hb.pid = (int32_t)getpid();
    fr_msg(&f, KVARENA__ENVELOPE__BODY_HEARTBEAT, &hb);
    bad_case("Heartbeat with a foreign pid", s, &f, 0, FR_NO_REPLY);
    hb.pid = pids[0];
    hb.token = 12345;
    fr_msg(&f, KVARENA__ENVELOPE__BODY_HEARTBEAT, &hb);
    bad_case("Heartbeat of a real worker with a wrong token", s, &f, 0, FR_NO_REPLY);

    /* forged JobDone for every job id so far and the next ones, with an O frame */
    kvc_stats before;
    good_stats(&before);
    uint64_t last = before.jobs_done + before.jobs_failed + 64;
    fr_send_job_dones(s, last);
    char what[96];
    snprintf(what, sizeof(what), "forged JobDone for job ids 1..%llu", (unsigned long long)last);
    check_unchanged(what, &before, 100000);
    fr_forged_job(&f, 7);
    fr_qkv(&f, 1, 0, 0, 0);
    bad_case("Job naming page 0xffffffff on the worker socket", s, &f, 0, FR_NO_REPLY);
    zmq_close(s);

    /* a socket that borrows a live worker's routing id (kvworker names itself w<i>-<pid>):
     * the ROUTER refuses a second peer with the same id, so nothing it says arrives */
    char rid[32];
    snprintf(rid, sizeof(rid), "w0-%d", pids[0]);
    s = fr_open(ep_worker, rid, strlen(rid));
    usleep(50000);
    good_stats(&before);
    fr_send_job_dones(s, last + 8);
    fr_ready(&f, 0, pids[0]);
    fr_send(s, &f);
    check_unchanged("a peer with a worker's routing id", &before, 100000);
    zmq_close(s);

    int n2 = fr_call_worker_states(ep_admin, pids2, restarts2, 64, &up2);
    FR_CHECK(n2 == n && up2 == n, "after the worker cases: %d of %d workers up", up2, n2);
    for (int i = 0; i < n && i < n2; i++)
        FR_CHECK(pids2[i] == pids[i] && restarts2[i] == restarts[i],
                 "worker %d: pid %d -> %d, restarts %u -> %u", i, pids[i], pids2[i], restarts[i],
                 restarts2[i]);
}

/* A 2 MiB frame on each socket: ZeroMQ drops the peer (ZMQ_MAXMSGSIZE), nobody answers. */
static void oversized_cases(void)
{
    const char *eps[3] = { ep_client, ep_admin, ep_worker };
    const char *names[3] = { "client: 2 MiB frame", "admin: 2 MiB frame", "worker: 2 MiB frame" };
    for (int i = 0; i < 3; i++) {
        void *s = i == 0 ? fr_open_hello(ep_client, "alice") : fr_open(eps[i], NULL, 0);
        frames f = { 0 };
        fr_zeros(&f, BIG);
        bad_case(names[i], s, &f, 0, FR_NO_REPLY);
        /* a Stats in the same message: the peer is cut before any of it is read */
        uint64_t id = fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
        fr_zeros(&f, BIG);
        bad_case(names[i], s, &f, id, FR_NO_REPLY);
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
    fr_reset(&f);
    double secs = (now_ms() - t0) / 1e3;
    usleep(300000);
    long rss1 = rss_kb(), got = 0;
    rss_max = rss1 > rss_max ? rss1 : rss_max;
    /* what reached us is bounded by the high-water marks: the rest was dropped */
    Kvarena__Envelope *r;
    while ((r = fr_recv(s, got ? 50 : 1000, NULL, NULL)) != NULL) {
        got++;
        kvarena__envelope__free_unpacked(r, NULL);
    }
    printf("%s: %ld requests never read in %.1f s, %ld replies kept for the reader; other "
           "client's worst stats %.1f ms; server VmRSS %ld -> max %ld -> %ld kB\n", what, sent,
           secs, got, worst, rss0, rss_max, rss1);
    FR_CHECK(sent >= n / 4, "%s: only %ld requests sent", what, sent);
    FR_CHECK(got >= 1 && got < sent / 4, "%s: %ld of %ld replies arrived: dropping expected", what,
             got, sent);
    FR_CHECK(worst < 1000, "%s: the other client waited %.0f ms", what, worst);
    FR_CHECK(rss_max - rss0 < 32 * 1024, "%s: server VmRSS grew by %ld kB", what, rss_max - rss0);
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
    kvc_opts opts = { .tenant = "alice", .name = "bad_input good client", .timeout_ms = 10000 };
    int rc = kvc_connect(ep_client, &opts, &good);
    if (rc) {
        fprintf(stderr, "connect: %s (%s)\n", kvc_strerror(rc), kvc_last_error(NULL));
        return 1;
    }
    M = kvc_model_info(good);
    fr_init(M);
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

    void *c = fr_open_hello(ep_client, "alice");
    flood("client socket", c, 200000);
    zmq_close(c);
    void *a = fr_open(ep_admin, NULL, 0);
    flood("admin socket", a, 200000);
    zmq_close(a);

    CALL(kvc_seq_close(good, good_seq));
    kvc_stats st;
    good_stats(&st);
    FR_CHECK(st.sequences == 0 && st.pages_in_use == 0, "at the end: %u sequences, %u pages in use",
             st.sequences, st.pages_in_use);
    printf("%d bad-input cases, good sequence at %u tokens, every output exact; %s\n", cases,
           good_len, fr_failures ? "FAILED" : "all checks passed");
    kvc_close(&good);
    fr_term();
    return fr_failures ? 1 : 0;
}