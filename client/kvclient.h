/* kvclient.h — libkvclient: talk to a kvserver from a model runner.
 *
 * A kvc_client is one connection (a ZeroMQ DEALER socket) to the server's client endpoint.
 * It is not thread-safe: use one client per thread. Every call is synchronous, carries a
 * request id, and waits at most the client's timeout for the reply. A call that gets no
 * reply within attempt_ms (the server was restarted, say) reconnects and resends the same
 * request: the caller sees a delay, not an error, and nothing is applied twice.
 *
 * ERRORS: every int function returns 0 (KVC_OK) on success or a negative KVC_ERR_* code;
 * kvc_strerror() describes it and kvc_last_error() returns the server's detail message for
 * the last failed call. A failed call leaves output arguments untouched.
 *
 * TENSORS: fp32, row-major, little-endian. T below is the sum of n_new over a batch's items.
 *
 * OWNERSHIP: the caller allocates every buffer it passes and owns it after the call returns;
 * the library keeps no pointer to it. */
#ifndef KVARENA_KVCLIENT_H
#define KVARENA_KVCLIENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Same values as the server's wire status codes. */
enum kvc_err {
    KVC_OK = 0,
    KVC_ERR_INVAL = -1,     /* malformed or out-of-range request */
    KVC_ERR_NOMEM = -2,     /* out of KV memory: nothing evictable */
    KVC_ERR_QUOTA = -3,     /* the tenant's page quota is used up by pinned pages */
    KVC_ERR_NOSEQ = -4,     /* unknown, closed or foreign sequence id */
    KVC_ERR_BUSY = -5,      /* the sequence has a job in flight */
    KVC_ERR_STATE = -6,     /* request not valid in the sequence's state */
    KVC_ERR_PROTO = -7,     /* undecodable message */
    KVC_ERR_TIMEOUT = -8,   /* no reply within the timeout */
    KVC_ERR_WORKER = -9,    /* the worker running the job died; safe to retry */
    KVC_ERR_AUTH = -10,     /* tenant unknown or not allowed */
    KVC_ERR_IO = -11,       /* local system or ZeroMQ call failed */
    KVC_ERR_SHUTDOWN = -12, /* the server is shutting down */
    KVC_ERR_TOOBIG = -13,   /* batch larger than the server's maximum */
    KVC_ERR_INTERNAL = -14, /* server bug */
    KVC_ERR_EXPIRED = -15,  /* the server closed the sequence after it was idle longer than
                             * its seq_idle_timeout_s: open a new one (its full pages are
                             * still cached, so an extend finds them) */
    KVC_ERR_REVOKED = -16,  /* authenticated mode: this client's key is no longer listed for
                             * any tenant (the server's config was reloaded without it); final,
                             * not retried */
};

typedef struct kvc_client kvc_client;

typedef struct kvc_opts {
    const char *tenant;      /* development mode: tenant to act as; NULL = "default" */
    const char *name;        /* free text shown in the server's log; may be NULL */
    int timeout_ms;          /* per call, retries included; 0 means 10000 */
    int attempt_ms;          /* per try: with no reply by then the client reconnects and sends
                              * the request again, same request id, until timeout_ms; the
                              * server answers a request it already applied from its record.
                              * 0 means 2000 */
    const char *server_key;  /* authenticated mode: the server's CURVE public key (Z85, 40
                              * characters); with public_key and secret_key, this client's
                              * key pair. The server knows the tenant from the key. NULL =
                              * development mode (ipc only, tenant named above). */
    const char *public_key;
    const char *secret_key;
} kvc_opts;

/* Model shape the server's arena was built for (from the Hello reply). */
typedef struct kvc_model {
    uint32_t layers, q_heads, kv_heads, head_dim, page_tokens;
    uint32_t dtype;           /* 0 fp32, 1 fp16, 2 bf16 */
    uint32_t max_batch_tokens;
    /* the model's attention, applied by the server: send Q and K unrotated when rope != 0 */
    uint32_t rope;            /* 0 none, 1 half (NeoX), 2 interleaved (GPT-J) */
    float rope_theta;
    uint32_t window;          /* a row at position p sees keys p - window .. p; 0 = all */
    float softcap;            /* logits = softcap * tanh(logits / softcap); 0 = none */
    float alibi_max_bias;     /* ALiBi: logits of head h += slope_h * (key pos - query pos),
                               * slopes kvk_alibi_slopes(q_heads, alibi_max_bias); 0 = none */
} kvc_model;

/* Connects to endpoint (e.g. "ipc:///tmp/kvarena-0/client.sock") and says Hello, retried
 * like any call until timeout_ms, so a client may start before its server (or during a
 * restart). On success *out is a new client the caller destroys with kvc_close().
 * Errors: KVC_ERR_INVAL (NULL args), KVC_ERR_IO, KVC_ERR_TIMEOUT, KVC_ERR_AUTH. */
int kvc_connect(const char *endpoint, const kvc_opts *opts, kvc_client **out);
/* Closes the connection, frees the client and sets *c to NULL. NULL-safe. Sequences stay
 * open on the server (close them first). */
void kvc_close(kvc_client **c);
/* The model shape; valid until kvc_close(). */
const kvc_model *kvc_model_info(const kvc_client *c);

/* Opens an empty sequence. *seq is its id, valid for this tenant until kvc_seq_close(), or
 * until the server closes it because no call named it for its seq_idle_timeout_s (10 min
 * by default; what frees the pages of a client that died): calls naming it then fail with
 * KVC_ERR_EXPIRED (the server tells that for its last 4096 such closes, and for older ones
 * whose table slot no new sequence took yet; beyond that, KVC_ERR_NOSEQ). A sequence kept idle on purpose costs little to lose: a new one extended
 * with the same tokens finds every full page in the prefix cache, so only the tokens of
 * the last, partial page are computed again. Errors: KVC_ERR_QUOTA (the tenant has its
 * max_seqs open), KVC_ERR_NOMEM (the server's sequence table is full). */
int kvc_seq_open(kvc_client *c, uint64_t *seq);
/* Closes a sequence: its pages are released (full pages stay cached for reuse).
 * Closing a sequence the server expired or an operator closed succeeds. Errors: KVC_ERR_NOSEQ,
 * KVC_ERR_BUSY. */
int kvc_seq_close(kvc_client *c, uint64_t seq);
/* New sequence sharing all of seq's pages (copy-on-write of a partial tail).
 * Errors: KVC_ERR_NOSEQ, KVC_ERR_EXPIRED, KVC_ERR_STATE (seq has pending tokens),
 * KVC_ERR_QUOTA, KVC_ERR_NOMEM (as for kvc_seq_open). */
int kvc_seq_fork(kvc_client *c, uint64_t seq, uint64_t *child);
/* Appends n token ids and reserves their KV slots. *cached (may be NULL) receives how many
 * leading tokens were found in the prefix cache (only on a sequence's first extend): the
 * caller then passes only tokens[*cached:] to kvc_attend, as n_new = n - *cached.
 * Errors: KVC_ERR_NOSEQ, KVC_ERR_EXPIRED, KVC_ERR_STATE (tokens pending), KVC_ERR_NOMEM,
 * KVC_ERR_QUOTA, KVC_ERR_TOOBIG. */
int kvc_seq_extend(kvc_client *c, uint64_t seq, const uint32_t *tokens, uint32_t n,
                   uint32_t *cached);

typedef struct kvc_item {
    uint64_t seq;            /* sequence id */
    uint32_t n_new;          /* its pending tokens: all of them, every layer */
} kvc_item;

/* One layer of attention for a ragged batch. q [T][q_heads][head_dim], k and v
 * [T][kv_heads][head_dim], o [T][q_heads][head_dim] written, lse [T][q_heads] written if not
 * NULL. scale 0 means 1/sqrt(head_dim). Layers must be attended in order 0..layers-1; after
 * the last layer the tokens count as written. Errors: KVC_ERR_NOSEQ, KVC_ERR_EXPIRED,
 * KVC_ERR_STATE (wrong layer or n_new), KVC_ERR_BUSY, KVC_ERR_WORKER (retry),
 * KVC_ERR_TOOBIG, KVC_ERR_INVAL. Decode steps of sequences sharing a prompt's pages (prefix
 * cache hits, forks) are best sent in one call: the worker reads the shared pages once for
 * each group of up to 64 query vectors of them. */
int kvc_attend(kvc_client *c, uint32_t layer, const kvc_item *items, uint32_t n_items,
               const float *q, const float *k, const float *v, float scale, float *o,
               float *lse);

/* How many leading tokens of tokens[0..n) are in this tenant's prefix cache now (in the
 * arena; whole pages, at most n - 1: what an extend of a new sequence would attach). */
int kvc_lookup(kvc_client *c, const uint32_t *tokens, uint32_t n, uint32_t *cached);
/* The same, and in *on_disk how many tokens after those the server's cold tier holds (an
 * extend now reads them back from disk and attaches them too; 0 without a cold tier). */
int kvc_lookup_tiers(kvc_client *c, const uint32_t *tokens, uint32_t n, uint32_t *cached,
                     uint32_t *on_disk);

typedef struct kvc_stats {
    uint32_t pages_total, pages_free, pages_in_use, pages_cached;
    uint64_t prefix_hits, prefix_misses, evictions;
    uint32_t sequences;
    uint64_t jobs_done, jobs_failed;
    uint64_t seqs_expired;   /* sequences the server closed for idleness (seq_idle_timeout_s) */
} kvc_stats;
/* Server-wide counters. */
int kvc_stats_get(kvc_client *c, kvc_stats *st);

/* Static description of code; never NULL. */
const char *kvc_strerror(int code);
/* The server's message for the last failed call on c ("" if none); valid until the next call.
 * For errors found locally (bad arguments, timeout, ZeroMQ failure) it describes those.
 * kvc_last_error(NULL) returns the detail of the last failed kvc_connect() on the calling
 * thread (e.g. the server's reason for refusing the Hello); valid until that thread's next
 * kvc_connect(). */
const char *kvc_last_error(const kvc_client *c);

/* ---- additions (after the first contract) ---- */

/* Sets the per-call timeout (ms, > 0) for later calls. Errors: KVC_ERR_INVAL. */
int kvc_set_timeout(kvc_client *c, int timeout_ms);
/* The tenant this connection acts as, as the server named it in the Hello reply; valid
 * until kvc_close(). */
const char *kvc_tenant(const kvc_client *c);

/* What an extend did to the sequence (the whole ExtendReply). */
typedef struct kvc_extend_info {
    uint32_t cached;         /* leading tokens of this call found in the prefix cache */
    uint32_t len;            /* tokens with KV written, after attaching the prefix */
    uint32_t pending;        /* tokens reserved and waiting for kvc_attend on every layer */
} kvc_extend_info;
/* kvc_seq_extend() that returns the whole reply in *info (may be NULL). Same errors. */
int kvc_seq_extend_ex(kvc_client *c, uint64_t seq, const uint32_t *tokens, uint32_t n,
                      kvc_extend_info *info);

#ifdef __cplusplus
}
#endif
#endif
