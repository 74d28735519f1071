/* frames — raw DEALER sockets, hand-built messages and their replies for the bad-input test
 * (frames.h says what each function promises). */
#include "tests/fault/frames.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "client/examples/synth.h"
#include "proto/kverr.h"
#include "proto/wire.h"

int fr_failures;

static void *zctx;
static const kvc_model *M;
static uint8_t *zeros;                /* FR_ZEROS_MAX zero bytes: tensor and oversized frames */
static uint64_t next_req = 1000;

void fr_init(const kvc_model *model)
{
    M = model;
    zctx = zmq_ctx_new();
    zeros = calloc(1, FR_ZEROS_MAX);
    if (!zctx || !zeros) {
        fprintf(stderr, "fr_init: %s\n", zctx ? "out of memory" : zmq_strerror(errno));
        exit(1);
    }
}

void fr_term(void)
{
    zmq_ctx_term(zctx);
    zctx = NULL;
    free(zeros);
    zeros = NULL;
}

void *fr_open(const char *ep, const void *rid, size_t rid_len)
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

/* ---- frames ---- */

void fr_reset(frames *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->owned[i]);
    f->n = 0;
}

void fr_bytes(frames *f, const void *p, size_t len)
{
    if (f->n == FR_MAX_PARTS) {
        fprintf(stderr, "fr_bytes: more than %d frames\n", FR_MAX_PARTS);
        exit(1);
    }
    f->owned[f->n] = NULL;
    f->p[f->n] = p;
    f->len[f->n++] = len;
}

/* Appends buf (malloc'd, len bytes) as the next frame, owned by f. */
static void fr_owned(frames *f, uint8_t *buf, size_t len)
{
    fr_bytes(f, buf, len);
    f->owned[f->n - 1] = buf;
}

void fr_zeros(frames *f, size_t len)
{
    if (len > FR_ZEROS_MAX) {
        fprintf(stderr, "fr_zeros: %zu bytes\n", len);
        exit(1);
    }
    fr_bytes(f, zeros, len);
}

void fr_qkv(frames *f, uint64_t t, long dq, long dk, long dv)
{
    size_t q = t * M->q_heads * M->head_dim * sizeof(float);
    size_t kv = t * M->kv_heads * M->head_dim * sizeof(float);
    fr_zeros(f, q + dq);
    fr_zeros(f, kv + dk);
    fr_zeros(f, kv + dv);
}

/* ---- envelopes ---- */

/* The Envelope field of a body case: the oneof's members are the fields numbered as their
 * body cases, so one descriptor lookup serves every message type. */
static const ProtobufCFieldDescriptor *body_field(Kvarena__Envelope__BodyCase body)
{
    const ProtobufCFieldDescriptor *fd =
        protobuf_c_message_descriptor_get_field(&kvarena__envelope__descriptor, (unsigned)body);
    if (!fd || fd->type != PROTOBUF_C_TYPE_MESSAGE) {
        fprintf(stderr, "frames: body case %d is not a message\n", (int)body);
        exit(1);
    }
    return fd;
}

uint64_t fr_msg_req(frames *f, uint64_t req_id, Kvarena__Envelope__BodyCase body, const void *msg)
{
    const ProtobufCFieldDescriptor *fd = body_field(body);
    if (((const ProtobufCMessage *)msg)->descriptor != fd->descriptor) {
        fprintf(stderr, "frames: body case %d given a %s\n", (int)body,
                ((const ProtobufCMessage *)msg)->descriptor->name);
        exit(1);
    }
    Kvarena__Envelope e = KVARENA__ENVELOPE__INIT;
    e.req_id = req_id;
    e.body_case = body;
    memcpy((char *)&e + fd->offset, &msg, sizeof(msg));   /* the oneof's pointer */
    size_t len = kvarena__envelope__get_packed_size(&e);
    uint8_t *buf = malloc(len ? len : 1);
    kvarena__envelope__pack(&e, buf);
    fr_owned(f, buf, len);
    return req_id;
}

uint64_t fr_msg(frames *f, Kvarena__Envelope__BodyCase body, const void *msg)
{
    return fr_msg_req(f, next_req++, body, msg);
}

uint64_t fr_body(frames *f, Kvarena__Envelope__BodyCase body)
{
    const ProtobufCMessageDescriptor *d = body_field(body)->descriptor;
    ProtobufCMessage *m = calloc(1, d->sizeof_message);
    protobuf_c_message_init(d, m);
    if (body == KVARENA__ENVELOPE__BODY_HELLO)
        ((Kvarena__Hello *)m)->version = KVP_VERSION;
    uint64_t id = fr_msg(f, body, m);
    free(m);
    return id;
}

uint64_t fr_hello(frames *f, uint32_t version, const char *tenant, const char *client_name)
{
    Kvarena__Hello h = KVARENA__HELLO__INIT;
    h.version = version;
    h.tenant = (char *)tenant;
    if (client_name)
        h.client_name = (char *)client_name;
    return fr_msg(f, KVARENA__ENVELOPE__BODY_HELLO, &h);
}

uint64_t fr_extend(frames *f, uint64_t seq, const uint32_t *tokens, size_t n)
{
    Kvarena__Extend x = KVARENA__EXTEND__INIT;
    x.seq = seq;
    x.tokens = (uint32_t *)tokens;
    x.n_tokens = n;
    return fr_msg(f, KVARENA__ENVELOPE__BODY_EXTEND, &x);
}

uint64_t fr_fork(frames *f, uint64_t seq)
{
    Kvarena__Fork fk = KVARENA__FORK__INIT;
    fk.seq = seq;
    return fr_msg(f, KVARENA__ENVELOPE__BODY_FORK, &fk);
}

uint64_t fr_seq_close(frames *f, uint64_t seq)
{
    Kvarena__SeqClose sc = KVARENA__SEQ_CLOSE__INIT;
    sc.seq = seq;
    return fr_msg(f, KVARENA__ENVELOPE__BODY_SEQ_CLOSE, &sc);
}

uint64_t fr_attend(frames *f, uint32_t layer, const uint64_t *seqs, const uint32_t *n_new,
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
    uint64_t id = fr_msg(f, KVARENA__ENVELOPE__BODY_ATTEND, &a);
    free(items);
    free(ptrs);
    return id;
}

/* A protobuf varint at p; returns the end. */
static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    for (; v >= 0x80; v >>= 7)
        *p++ = (uint8_t)((v & 0x7f) | 0x80);
    *p++ = (uint8_t)v;
    return p;
}

/* A length-delimited field (wire type 2) at p: tag, length, the len bytes at data. */
static uint8_t *put_bytes_field(uint8_t *p, uint32_t field, const uint8_t *data, size_t len)
{
    p = put_varint(p, (uint64_t)field << 3 | 2);
    p = put_varint(p, len);
    memcpy(p, data, len);
    return p + len;
}

/* Packed by hand: protobuf-c cannot write a uint32 field as the 10-byte varint of -1. */
uint64_t fr_attend_layer_minus1(frames *f, uint64_t seq, uint32_t n_new)
{
    uint8_t item[32], *i = item;
    *i++ = 0x08;                              /* AttendItem.seq (1, varint) */
    i = put_varint(i, seq);
    *i++ = 0x10;                              /* AttendItem.n_new (2, varint) */
    i = put_varint(i, n_new);
    uint8_t attend[64], *a = attend;
    *a++ = 0x08;                              /* Attend.layer (1, varint): int64 -1 */
    a = put_varint(a, UINT64_MAX);
    a = put_bytes_field(a, 2, item, (size_t)(i - item));     /* Attend.items */
    uint64_t req_id = next_req++;
    uint8_t *buf = malloc(128), *e = buf;
    *e++ = 0x08;                              /* Envelope.req_id (1, varint) */
    e = put_varint(e, req_id);
    e = put_bytes_field(e, KVARENA__ENVELOPE__BODY_ATTEND, attend, (size_t)(a - attend));
    fr_owned(f, buf, (size_t)(e - buf));
    return req_id;
}

uint64_t fr_ready(frames *f, uint32_t index, int32_t pid)
{
    Kvarena__Ready rd = KVARENA__READY__INIT;
    rd.index = index;
    rd.pid = pid;
    rd.threads = 1;
    return fr_msg(f, KVARENA__ENVELOPE__BODY_READY, &rd);
}

uint64_t fr_forged_job(frames *f, uint64_t job_id)
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
    return fr_msg_req(f, job_id, KVARENA__ENVELOPE__BODY_JOB, &j);
}

/* ---- sending and receiving ---- */

void fr_send(void *s, frames *f)
{
    for (int i = 0; i < f->n; i++)
        if (zmq_send(s, f->p[i], f->len[i], i + 1 < f->n ? ZMQ_SNDMORE : 0) < 0) {
            fprintf(stderr, "zmq_send: %s\n", zmq_strerror(errno));
            exit(1);
        }
    fr_reset(f);
}

Kvarena__Envelope *fr_recv(void *s, int timeout_ms, size_t *sizes, int *n_frames)
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

void fr_expect(const char *what, void *s, frames *f, uint64_t req_id, int want, int want2)
{
    fr_send(s, f);
    Kvarena__Envelope *r = fr_recv(s, want == FR_NO_REPLY ? 300 : 3000, NULL, NULL);
    if (want == FR_NO_REPLY) {
        FR_CHECK(!r, "%s: got a reply (status %d), expected none", what, r ? r->status : 0);
    } else if (!r) {
        FR_CHECK(0, "%s: no reply, expected %s", what, kv_strerror(want));
    } else {
        FR_CHECK(r->status == want || (want2 && r->status == want2),
                 "%s: status %d (%s: %s), expected %d (%s)", what, r->status,
                 kv_strerror(r->status), r->error ? r->error : "", want, kv_strerror(want));
        FR_CHECK(r->req_id == req_id, "%s: reply req_id %llu, expected %llu", what,
                 (unsigned long long)r->req_id, (unsigned long long)req_id);
        if (r->status)
            FR_CHECK(r->error && r->error[0], "%s: typed error without a reason", what);
    }
    if (r)
        kvarena__envelope__free_unpacked(r, NULL);
}

Kvarena__Envelope *fr_call(void *s, frames *f, uint64_t req_id, size_t *sizes, int *n_frames)
{
    fr_send(s, f);
    Kvarena__Envelope *r = fr_recv(s, 5000, sizes, n_frames);
    if (!r || r->req_id != req_id) {
        fprintf(stderr, "FAIL: no reply to request %llu\n", (unsigned long long)req_id);
        exit(1);
    }
    return r;
}

int fr_call_status(void *s, frames *f, uint64_t req_id)
{
    Kvarena__Envelope *r = fr_call(s, f, req_id, NULL, NULL);
    int st = r->status;
    kvarena__envelope__free_unpacked(r, NULL);
    return st;
}

/* ---- whole requests ---- */

void *fr_open_hello(const char *ep, const char *tenant)
{
    void *s = fr_open(ep, NULL, 0);
    frames f = { 0 };
    uint64_t id = fr_hello(&f, KVP_VERSION, tenant, "bad_input");
    if (fr_call_status(s, &f, id) != 0) {
        fprintf(stderr, "FAIL: Hello as %s refused\n", tenant);
        exit(1);
    }
    return s;
}

uint64_t fr_call_seq_open(void *s)
{
    frames f = { 0 };
    uint64_t id = fr_body(&f, KVARENA__ENVELOPE__BODY_SEQ_OPEN);
    Kvarena__Envelope *r = fr_call(s, &f, id, NULL, NULL);
    if (r->status || r->body_case != KVARENA__ENVELOPE__BODY_SEQ_OPEN_REPLY) {
        fprintf(stderr, "FAIL: SeqOpen: %d\n", r->status);
        exit(1);
    }
    uint64_t seq = r->seq_open_reply->seq;
    kvarena__envelope__free_unpacked(r, NULL);
    return seq;
}

int fr_call_seq_close(void *s, uint64_t seq)
{
    frames f = { 0 };
    uint64_t id = fr_seq_close(&f, seq);
    return fr_call_status(s, &f, id);
}

int fr_call_extend(void *s, uint64_t seq, uint32_t n)
{
    uint32_t *tok = calloc(n ? n : 1, sizeof(uint32_t));
    for (uint32_t i = 0; i < n; i++)
        tok[i] = kvs_token(1234, i);
    frames f = { 0 };
    uint64_t id = fr_extend(&f, seq, tok, n);
    int st = fr_call_status(s, &f, id);
    free(tok);
    return st;
}

int fr_call_worker_states(const char *ep, int *pids, uint32_t *restarts, int max, int *up)
{
    void *s = fr_open(ep, NULL, 0);
    frames f = { 0 };
    uint64_t id = fr_body(&f, KVARENA__ENVELOPE__BODY_STATS);
    Kvarena__Envelope *r = fr_call(s, &f, id, NULL, NULL);
    int n = 0;
    *up = 0;
    if (r->body_case == KVARENA__ENVELOPE__BODY_STATS_REPLY) {
        const Kvarena__StatsReply *sr = r->stats_reply;
        for (size_t i = 0; i < sr->n_workers && n < max; i++, n++) {
            const char *state = sr->workers[i]->state;
            pids[i] = sr->workers[i]->pid;
            restarts[i] = sr->workers[i]->restarts;
            *up += !strcmp(state, "ready") || !strcmp(state, "busy");
        }
    }
    kvarena__envelope__free_unpacked(r, NULL);
    zmq_close(s);
    return n;
}

void fr_send_job_dones(void *s, uint64_t last)
{
    size_t o_bytes = (size_t)M->q_heads * M->head_dim * sizeof(float);
    for (uint64_t j = 1; j <= last; j++) {
        Kvarena__JobDone jd = KVARENA__JOB_DONE__INIT;
        jd.job_id = j;
        frames f = { 0 };
        fr_msg_req(&f, j, KVARENA__ENVELOPE__BODY_JOB_DONE, &jd);
        fr_zeros(&f, o_bytes);
        fr_send(s, &f);
    }
}
