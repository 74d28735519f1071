/* kvdemo — a synthetic model runner against a kvserver, checking every sampled output.
 *
 * Each tenant is its own connection and thread. A tenant runs several conversations that
 * share a per-tenant system prompt followed by a unique user part:
 *   round 1  prefill the first conversation alone (it fills the system prompt's pages),
 *            then the others batched (they find the system prompt cached), then
 *            decode-steps steps of one token for all conversations, batched per layer;
 *   round 2  close round 1's sequences and start new conversations that continue round 1's
 *            histories with a new user turn: their whole history's full pages are found in
 *            the cache; prefill and decode them too.
 * Q/K/V come from the synthetic model (synth.h), which depends only on token ids and
 * positions, so a cached prefix's K/V are exactly what the runner would have computed.
 * Sampled outputs (first and last new row of each prefill, every check-every-th decode
 * step and the last) are compared on every layer with an fp64 reference on contiguous KV
 * rounded to the arena dtype, and their LSE too.
 *
 * Exit status: 0 if every call succeeded and every check passed, 1 otherwise, 2 usage. */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/examples/synth.h"
#include "client/kvclient.h"

#define MAX_TENANTS 16
#define ROUND2_CONVS 2      /* round 2 continues this many of round 1's conversations */
#define ROUND2_TURN 16      /* tokens of round 2's new user turn */
#define ROUND2_STEPS 8      /* at most this many decode steps in round 2 */
#define WORKER_RETRIES 3    /* KVC_ERR_WORKER means "safe to retry" */

typedef struct demo_cfg {
    const char *endpoint;
    const char *tenants[MAX_TENANTS];
    int n_tenants;
    uint32_t conversations, prompt_len, system_len, decode_steps, check_every;
    uint64_t seed;
    int timeout_ms;
    int verbose;
} demo_cfg;

typedef struct conv {
    uint32_t id;         /* conversation number within its tenant and round */
    uint64_t seq;        /* server sequence id */
    int open;            /* seq is open on the server */
    uint32_t *tok;       /* every token id known: prompt, then generated */
    uint32_t len, cap;   /* tokens in tok, allocated */
    uint32_t ext;        /* tok[0 .. ext) were sent with extend */
    uint32_t first_new;  /* position of the first row computed in the current step */
    uint32_t n_new;      /* rows computed in the current step */
    int check;           /* verify the current step's rows */
} conv;

typedef struct tally {
    uint64_t prompt_tokens;   /* prompt tokens extended */
    uint64_t cached_tokens;   /* of which found in the prefix cache */
    uint64_t expect_cached;   /* cached tokens this run alone makes sure of, if nothing is evicted */
    uint64_t prefill_rows;    /* rows computed during prefill */
    int64_t prefill_ns;
    uint64_t decode_tokens;
    int64_t decode_ns;
} tally;

typedef struct tenant {
    const demo_cfg *cfg;
    int idx;
    const char *name;
    kvc_client *c;
    kvc_model m;
    conv cv[2][64];           /* [round][conversation] */
    uint32_t n_cv[2];
    tally r[2];
    uint64_t checks, checks_failed;
    double max_rel, max_rel_lse;
    int failed;               /* a call failed: the run stops */
    char err[512];            /* first failure */
    float *q, *k, *v, *o, *lse;
    uint32_t buf_rows;        /* rows the buffers hold */
    pthread_t th;
} tenant;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

__attribute__((format(printf, 3, 4)))
static int fail(tenant *t, int rc, const char *fmt, ...)
{
    if (!t->failed) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(t->err, sizeof t->err, fmt, ap);
        va_end(ap);
        if (rc < 0 && n >= 0 && (size_t)n < sizeof t->err)
            snprintf(t->err + n, sizeof t->err - (size_t)n, ": %s (%s)", kvc_strerror(rc),
                     kvc_last_error(t->c));
    }
    t->failed = 1;
    return rc < 0 ? rc : KVC_ERR_INVAL;
}

static int conv_push(conv *cv, uint32_t token)
{
    if (cv->len == cv->cap) {
        uint32_t cap = cv->cap ? 2 * cv->cap : 256;
        uint32_t *p = realloc(cv->tok, cap * sizeof *p);
        if (!p)
            return -1;
        cv->tok = p;
        cv->cap = cap;
    }
    cv->tok[cv->len++] = token;
    return 0;
}

static int grow_buffers(tenant *t, uint32_t rows)
{
    if (rows <= t->buf_rows)
        return 0;
    const size_t qr = (size_t)t->m.q_heads * t->m.head_dim;
    const size_t kr = (size_t)t->m.kv_heads * t->m.head_dim;
    float **bufs[5] = { &t->q, &t->k, &t->v, &t->o, &t->lse };
    const size_t row[5] = { qr, kr, kr, qr, t->m.q_heads };
    for (int i = 0; i < 5; i++) {
        float *p = realloc(*bufs[i], rows * row[i] * sizeof(float));
        if (!p)
            return -1;
        *bufs[i] = p;
    }
    t->buf_rows = rows;
    return 0;
}

/* Compares row `pos` of cv (output o_row, lse_row) with the reference for `layer`. */
static void check_row(tenant *t, const conv *cv, uint32_t layer, uint32_t pos,
                      const float *o_row, const float *lse_row)
{
    const kvc_model *m = &t->m;
    const size_t n = (size_t)m->q_heads * m->head_dim;
    double *ref = malloc((n + m->q_heads) * sizeof *ref);
    if (!ref || kvs_ref_row(m, layer, cv->tok, pos, 0.0f, ref, ref + n) != 0) {
        free(ref);
        fail(t, 0, "out of memory in the reference");
        return;
    }
    double ref_max, lse_max;
    double err = kvs_max_abs_err(o_row, ref, n, &ref_max);
    double lse_err = kvs_max_abs_err(lse_row, ref + n, m->q_heads, &lse_max);
    double rel = err / (ref_max > 0 ? ref_max : 1.0);
    double rel_lse = lse_err / (lse_max > 1.0 ? lse_max : 1.0);
    double tol = kvs_tolerance(m->dtype);
    t->checks++;
    if (rel > t->max_rel)
        t->max_rel = rel;
    if (rel_lse > t->max_rel_lse)
        t->max_rel_lse = rel_lse;
    if (!(rel <= tol) || !(rel_lse <= tol)) {
        if (t->checks_failed++ < 5)
            fprintf(stderr, "kvdemo: %s: CHECK FAILED seq %" PRIu64 " pos %u layer %u: "
                    "max abs err %.3g (max |ref| %.3g, rel %.3g), lse rel err %.3g, "
                    "tolerance %.1g\n", t->name, cv->seq, pos, layer, err, ref_max, rel,
                    rel_lse, tol);
    }
    free(ref);
}

/* One kvc_attend, retried while the worker running it died. */
static int attend(tenant *t, uint32_t layer, const kvc_item *items, uint32_t n_items,
                  int want_lse)
{
    int rc;
    for (int tries = 0;; tries++) {
        rc = kvc_attend(t->c, layer, items, n_items, t->q, t->k, t->v, 0.0f, t->o,
                        want_lse ? t->lse : NULL);
        if (rc != KVC_ERR_WORKER || tries == WORKER_RETRIES)
            break;
        fprintf(stderr, "kvdemo: %s: layer %u: worker failed, retrying\n", t->name, layer);
    }
    return rc;
}

/* Runs every layer for one batch of conversations whose rows are pending. Returns the
 * nanoseconds spent outside the reference checks, or -1 on failure. */
static int64_t run_batch(tenant *t, conv **batch, uint32_t n, uint32_t rows)
{
    const kvc_model *m = &t->m;
    const size_t qr = (size_t)m->q_heads * m->head_dim, kr = (size_t)m->kv_heads * m->head_dim;
    kvc_item items[64];
    int want_lse = 0;
    for (uint32_t i = 0; i < n; i++) {
        items[i] = (kvc_item){ batch[i]->seq, batch[i]->n_new };
        want_lse |= batch[i]->check;
    }
    if (grow_buffers(t, rows) != 0)
        return fail(t, 0, "out of memory"), -1;
    int64_t busy = 0;
    for (uint32_t layer = 0; layer < m->layers; layer++) {
        int64_t t0 = now_ns();
        uint32_t off = 0;
        for (uint32_t i = 0; i < n; i++) {
            const conv *cv = batch[i];
            kvs_fill_qkv(m, layer, cv->tok + cv->first_new, cv->first_new, cv->n_new,
                         t->q + off * qr, t->k + off * kr, t->v + off * kr);
            off += cv->n_new;
        }
        int rc = attend(t, layer, items, n, want_lse);
        busy += now_ns() - t0;
        if (rc != 0)
            return fail(t, rc, "attend layer %u, %u items, %u rows", layer, n, rows), -1;
        off = 0;
        for (uint32_t i = 0; i < n; i++) {
            const conv *cv = batch[i];
            if (cv->check) {
                /* Decode: its one row. Prefill: the first and the last new rows. */
                uint32_t last = cv->first_new + cv->n_new - 1;
                check_row(t, cv, layer, last, t->o + (off + cv->n_new - 1) * qr,
                          t->lse + (off + cv->n_new - 1) * m->q_heads);
                if (cv->n_new > 1)
                    check_row(t, cv, layer, cv->first_new, t->o + off * qr,
                              t->lse + (size_t)off * m->q_heads);
            }
            off += cv->n_new;
        }
    }
    return busy;
}

/* One step: extends each conversation of set[] by up to `chunk` of its tokens not yet
 * sent, then attends the new rows on every layer, batched under the server's maximum.
 * Prefill steps add to ta's prompt and cache counts. Returns 0 or a negative code. */
static int step(tenant *t, conv **set, uint32_t n, uint32_t chunk, int prefill,
                int check, tally *ta)
{
    int64_t busy = 0, t0 = now_ns();
    for (uint32_t i = 0; i < n; i++) {
        conv *cv = set[i];
        uint32_t cnt = cv->len - cv->ext < chunk ? cv->len - cv->ext : chunk;
        cv->n_new = 0;
        cv->check = check;
        if (cnt == 0)
            continue;
        int rc;
        if (prefill && cv->ext == 0 && cv->len > chunk) {
            /* Only the first extend attaches a cached prefix, and only the rows after it
             * count against the batch limit: make the first chunk cached + chunk long. */
            uint32_t hit;
            if ((rc = kvc_lookup(t->c, cv->tok, cv->len, &hit)) != 0)
                return fail(t, rc, "lookup of %u tokens", cv->len);
            cnt = cv->len - hit < chunk ? cv->len : hit + chunk;
        }
        kvc_extend_info info;
        rc = kvc_seq_extend_ex(t->c, cv->seq, cv->tok + cv->ext, cnt, &info);
        if (rc != 0)
            return fail(t, rc, "extend seq %" PRIu64 " by %u tokens", cv->seq, cnt);
        if (info.len != cv->ext + info.cached || info.pending != cnt - info.cached)
            return fail(t, 0, "extend seq %" PRIu64 " at %u by %u: server says cached %u, "
                        "len %u, pending %u; expected len %u, pending %u", cv->seq, cv->ext,
                        cnt, info.cached, info.len, info.pending, cv->ext + info.cached,
                        cnt - info.cached);
        cv->first_new = cv->ext + info.cached;
        cv->n_new = cnt - info.cached;
        if (cv->n_new > chunk)
            return fail(t, 0, "seq %" PRIu64 ": %u rows to compute exceed the batch limit "
                        "%u (cached prefix evicted between lookup and extend?)", cv->seq,
                        cv->n_new, chunk);
        cv->ext += cnt;
        if (prefill) {
            ta->prompt_tokens += cnt;
            ta->cached_tokens += info.cached;
            ta->prefill_rows += cv->n_new;
        }
    }
    busy += now_ns() - t0;
    /* Batches in order, each under max_batch_tokens (chunk guarantees one item fits). */
    const uint32_t max_rows = t->m.max_batch_tokens ? t->m.max_batch_tokens : UINT32_MAX;
    conv *batch[64];
    uint32_t nb = 0, rows = 0;
    for (uint32_t i = 0; i <= n; i++) {
        conv *cv = i < n ? set[i] : NULL;
        if (cv && cv->n_new == 0)
            continue;
        if (nb > 0 && (!cv || rows + cv->n_new > max_rows)) {
            int64_t b = run_batch(t, batch, nb, rows);
            if (b < 0)
                return KVC_ERR_INVAL;
            busy += b;
            nb = rows = 0;
        }
        if (cv) {
            batch[nb++] = cv;
            rows += cv->n_new;
        }
    }
    if (prefill)
        ta->prefill_ns += busy;
    else
        ta->decode_ns += busy;
    return 0;
}

static int open_convs(tenant *t, int round)
{
    for (uint32_t i = 0; i < t->n_cv[round]; i++) {
        conv *cv = &t->cv[round][i];
        int rc = kvc_seq_open(t->c, &cv->seq);
        if (rc != 0)
            return fail(t, rc, "seq_open");
        cv->open = 1;
    }
    return 0;
}

static void close_convs(tenant *t, int round)
{
    for (uint32_t i = 0; i < t->n_cv[round]; i++) {
        conv *cv = &t->cv[round][i];
        if (!cv->open)
            continue;
        int rc = kvc_seq_close(t->c, cv->seq);
        if (rc != 0)
            fail(t, rc, "seq_close %" PRIu64, cv->seq);
        cv->open = 0;
    }
}

/* Prefill chunk: the whole prompt unless the server bounds a batch. */
static uint32_t prefill_chunk(const tenant *t)
{
    return t->m.max_batch_tokens ? t->m.max_batch_tokens : UINT32_MAX;
}

/* Prefills the n conversations of set, step after step, until every prompt is sent. */
static int prefill_all(tenant *t, conv **set, uint32_t n, tally *r)
{
    int rc = 0;
    for (int more = 1; rc == 0 && more;) {
        rc = step(t, set, n, prefill_chunk(t), 1, 1, r);
        more = 0;
        for (uint32_t i = 0; i < n; i++)
            more |= set[i]->ext < set[i]->len;
    }
    return rc;
}

/* set[i] = conversation i of the round. */
static void round_set(tenant *t, int round, conv **set)
{
    for (uint32_t i = 0; i < t->n_cv[round]; i++)
        set[i] = &t->cv[round][i];
}

static int decode(tenant *t, int round, uint32_t steps)
{
    conv *set[64];
    uint32_t n = t->n_cv[round];
    round_set(t, round, set);
    for (uint32_t s = 0; s < steps; s++) {
        for (uint32_t i = 0; i < n; i++) {
            conv *cv = set[i];
            uint32_t prev = cv->tok[cv->len - 1];
            if (conv_push(cv, kvs_token(kvs_mix(t->cfg->seed) ^ cv->id,
                                        ((uint64_t)prev << 32) | cv->len)) != 0)
                return fail(t, 0, "out of memory");
        }
        int check = s + 1 == steps ||
                    (t->cfg->check_every && s % t->cfg->check_every == 0);
        int rc = step(t, set, n, 1, 0, check, &t->r[round]);
        if (rc != 0)
            return rc;
        t->r[round].decode_tokens += n;
    }
    return 0;
}

/* FNV-1a of a tenant name: keys its system prompt. */
static uint64_t name_key(const char *name)
{
    uint64_t h = 1469598103934665603ull;
    for (const char *p = name; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    return h;
}

static int round1(tenant *t)
{
    const demo_cfg *cfg = t->cfg;
    /* The system prompt depends on the tenant's name only (not on --seed): a rerun finds
     * it cached. The user part depends on the seed and the conversation. */
    const uint64_t nk = name_key(t->name), pt = t->m.page_tokens;
    t->n_cv[0] = cfg->conversations;
    for (uint32_t i = 0; i < cfg->conversations; i++) {
        conv *cv = &t->cv[0][i];
        cv->id = i;
        for (uint32_t j = 0; j < cfg->prompt_len; j++) {
            uint32_t tok = j < cfg->system_len
                               ? kvs_token(nk, j)
                               : kvs_token(kvs_mix(cfg->seed) ^ nk ^ kvs_mix(i + 1), j);
            if (conv_push(cv, tok) != 0)
                return fail(t, 0, "out of memory");
        }
    }
    /* The conversations after the first find its full system-prompt pages. */
    t->r[0].expect_cached = (t->n_cv[0] - 1) * (cfg->system_len / pt * pt);
    int rc = open_convs(t, 0);
    if (rc != 0)
        return rc;
    conv *set[64];
    round_set(t, 0, set);
    /* The first conversation alone, so its system-prompt pages are committed before the
     * others look them up. */
    rc = prefill_all(t, set, 1, &t->r[0]);
    if (rc == 0)
        rc = prefill_all(t, set + 1, t->n_cv[0] - 1, &t->r[0]);
    if (rc != 0)
        return rc;
    return decode(t, 0, cfg->decode_steps);
}

static int round2(tenant *t)
{
    const demo_cfg *cfg = t->cfg;
    const uint32_t pt = t->m.page_tokens;
    t->n_cv[1] = t->n_cv[0] < ROUND2_CONVS ? t->n_cv[0] : ROUND2_CONVS;
    for (uint32_t i = 0; i < t->n_cv[1]; i++) {
        const conv *old = &t->cv[0][i];
        conv *cv = &t->cv[1][i];
        cv->id = 64 + i;
        for (uint32_t j = 0; j < old->len; j++)
            if (conv_push(cv, old->tok[j]) != 0)
                return fail(t, 0, "out of memory");
        for (uint32_t j = 0; j < ROUND2_TURN; j++)
            if (conv_push(cv, kvs_token(kvs_mix(cfg->seed + 2) ^ name_key(t->name) ^ i,
                                        j)) != 0)
                return fail(t, 0, "out of memory");
        /* Every full page of the old history was committed; one token is always left. */
        t->r[1].expect_cached += old->ext / pt * pt;
    }
    int rc = open_convs(t, 1);
    if (rc != 0)
        return rc;
    conv *set[64];
    round_set(t, 1, set);
    rc = prefill_all(t, set, t->n_cv[1], &t->r[1]);
    if (rc != 0)
        return rc;
    return decode(t, 1, cfg->decode_steps < ROUND2_STEPS ? cfg->decode_steps : ROUND2_STEPS);
}

static void *tenant_main(void *arg)
{
    tenant *t = arg;
    if (round1(t) == 0) {
        close_convs(t, 0);   /* their full pages stay cached for round 2 */
        if (!t->failed)
            round2(t);
    }
    close_convs(t, 0);
    close_convs(t, 1);
    return NULL;
}

static double per_s(uint64_t n, int64_t ns)
{
    return ns > 0 ? (double)n * 1e9 / (double)ns : 0.0;
}

static void report_tenant(const tenant *t)
{
    printf("tenant %s (%s): %u conversations\n", t->name, kvc_tenant(t->c), t->n_cv[0]);
    for (int r = 0; r < 2; r++) {
        const tally *a = &t->r[r];
        if (!a->prompt_tokens)
            continue;
        printf("  round %d  prompt %" PRIu64 " tokens, cached %" PRIu64 " (hit rate %.1f%%)",
               r + 1, a->prompt_tokens, a->cached_tokens,
               100.0 * (double)a->cached_tokens / (double)a->prompt_tokens);
        printf(", %" PRIu64 " expected at least", a->expect_cached);
        printf("\n           prefill %" PRIu64 " rows in %.3f s = %.0f tokens/s; "
               "decode %" PRIu64 " tokens in %.3f s = %.0f tokens/s\n", a->prefill_rows,
               (double)a->prefill_ns / 1e9, per_s(a->prefill_rows, a->prefill_ns),
               a->decode_tokens, (double)a->decode_ns / 1e9,
               per_s(a->decode_tokens, a->decode_ns));
    }
    printf("  checks   %" PRIu64 " passed, %" PRIu64 " failed; max rel err %.3g (lse %.3g), "
           "tolerance %.0e\n", t->checks - t->checks_failed, t->checks_failed, t->max_rel,
           t->max_rel_lse, kvs_tolerance(t->m.dtype));
    if (t->failed)
        printf("  FAILED   %s\n", t->err);
}

static void report_server(kvc_client *c)
{
    kvc_stats st;
    int rc = kvc_stats_get(c, &st);
    if (rc != 0) {
        printf("server stats: %s (%s)\n", kvc_strerror(rc), kvc_last_error(c));
        return;
    }
    uint64_t looked = st.prefix_hits + st.prefix_misses;
    printf("server: pages %u total, %u free, %u in use, %u cached; prefix pages %" PRIu64
           " hits, %" PRIu64 " misses (%.1f%%); %" PRIu64 " evictions; %u sequences; "
           "jobs %" PRIu64 " done, %" PRIu64 " failed\n", st.pages_total, st.pages_free,
           st.pages_in_use, st.pages_cached, st.prefix_hits, st.prefix_misses,
           looked ? 100.0 * (double)st.prefix_hits / (double)looked : 0.0, st.evictions,
           st.sequences, st.jobs_done, st.jobs_failed);
}

static const char usage_text[] =
    "usage: kvdemo [options]\n"
    "  --endpoint EP        server client endpoint ($KVARENA_ENDPOINT or\n"
    "                       ipc:///tmp/kvarena/client.sock)\n"
    "  --tenants A,B[,...]  tenants, one connection each, at least 2 (alice,bob)\n"
    "  --conversations N    conversations per tenant (8, at most 64)\n"
    "  --prompt-len N       prompt tokens per conversation (96)\n"
    "  --system-len N       of which the tenant's shared system prompt (48)\n"
    "  --decode-steps N     decode steps (32)\n"
    "  --check-every K      check every K-th decode step, 0 = only the last (4)\n"
    "  --seed S             user parts and generated tokens (1)\n"
    "  --timeout MS         per call (30000)\n";

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end || v < lo || v > hi)
        return -1;
    *out = (uint32_t)v;
    return 0;
}

static int parse_args(int argc, char **argv, demo_cfg *cfg, char *tenant_buf, size_t buf_len)
{
    static const struct option opts[] = {
        { "endpoint", required_argument, 0, 'e' }, { "tenants", required_argument, 0, 't' },
        { "conversations", required_argument, 0, 'c' },
        { "prompt-len", required_argument, 0, 'p' }, { "system-len", required_argument, 0, 'y' },
        { "decode-steps", required_argument, 0, 'd' },
        { "check-every", required_argument, 0, 'k' }, { "seed", required_argument, 0, 's' },
        { "timeout", required_argument, 0, 'T' }, { "verbose", no_argument, 0, 'v' },
        { "help", no_argument, 0, 'h' }, { 0, 0, 0, 0 },
    };
    const char *tenants = "alice,bob";
    int sys_set = 0, opt;
    uint32_t v;
    while ((opt = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (opt) {
        case 'e': cfg->endpoint = optarg; break;
        case 't': tenants = optarg; break;
        case 'c': if (parse_u32(optarg, 1, 64, &cfg->conversations)) goto bad; break;
        case 'p': if (parse_u32(optarg, 2, 1u << 20, &cfg->prompt_len)) goto bad; break;
        case 'y': if (parse_u32(optarg, 0, 1u << 20, &cfg->system_len)) goto bad;
                  sys_set = 1; break;
        case 'd': if (parse_u32(optarg, 0, 1u << 20, &cfg->decode_steps)) goto bad; break;
        case 'k': if (parse_u32(optarg, 0, 1u << 20, &cfg->check_every)) goto bad; break;
        case 's': cfg->seed = strtoull(optarg, NULL, 0); break;
        case 'T': if (parse_u32(optarg, 1, 3600000, &v)) goto bad;
                  cfg->timeout_ms = (int)v; break;
        case 'v': cfg->verbose = 1; break;
        case 'h': fputs(usage_text, stdout); exit(0);
        default: goto usage;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "kvdemo: unexpected argument %s\n", argv[optind]);
        goto usage;
    }
    if (cfg->system_len >= cfg->prompt_len) {
        if (sys_set) {
            fprintf(stderr, "kvdemo: --system-len must be below --prompt-len\n");
            goto usage;
        }
        cfg->system_len = cfg->prompt_len / 2;
    }
    snprintf(tenant_buf, buf_len, "%s", tenants);
    for (char *save = NULL, *tok = strtok_r(tenant_buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (cfg->n_tenants == MAX_TENANTS) {
            fprintf(stderr, "kvdemo: at most %d tenants\n", MAX_TENANTS);
            goto usage;
        }
        cfg->tenants[cfg->n_tenants++] = tok;
    }
    if (cfg->n_tenants < 2) {
        fprintf(stderr, "kvdemo: --tenants needs at least 2 names\n");
        goto usage;
    }
    return 0;
bad:
    fprintf(stderr, "kvdemo: bad value for an option: %s\n", optarg);
usage:
    fputs(usage_text, stderr);
    return -1;
}

static const char *dtype_name(uint32_t d)
{
    return d == 0 ? "fp32" : d == 1 ? "fp16" : d == 2 ? "bf16" : "?";
}

int main(int argc, char **argv)
{
    demo_cfg cfg = {
        .conversations = 8, .prompt_len = 96, .system_len = 48, .decode_steps = 32,
        .check_every = 4, .seed = 1, .timeout_ms = 30000,
    };
    cfg.endpoint = getenv("KVARENA_ENDPOINT");
    if (!cfg.endpoint || !*cfg.endpoint)
        cfg.endpoint = "ipc:///tmp/kvarena/client.sock";
    char tenant_buf[1024];
    if (parse_args(argc, argv, &cfg, tenant_buf, sizeof tenant_buf) != 0)
        return 2;

    static tenant ts[MAX_TENANTS];
    int ok = 1, n = cfg.n_tenants;
    for (int i = 0; i < n; i++) {
        tenant *t = &ts[i];
        t->cfg = &cfg;
        t->idx = i;
        t->name = cfg.tenants[i];
        char name[64];
        snprintf(name, sizeof name, "kvdemo/%s", t->name);
        kvc_opts o = { .tenant = t->name, .name = name, .timeout_ms = cfg.timeout_ms };
        int rc = kvc_connect(cfg.endpoint, &o, &t->c);
        if (rc != 0) {
            fprintf(stderr, "kvdemo: connect as %s: %s: %s\n", t->name, kvc_strerror(rc),
                    kvc_last_error(NULL));
            ok = 0;
            n = i;
            break;
        }
        t->m = *kvc_model_info(t->c);
        if (memcmp(&t->m, &ts[0].m, sizeof t->m) != 0) {
            fprintf(stderr, "kvdemo: tenants see different model shapes\n");
            ok = 0;
            n = i + 1;
            break;
        }
    }
    if (ok) {
        const kvc_model *m = &ts[0].m;
        char maxb[32] = "unlimited";
        if (m->max_batch_tokens)
            snprintf(maxb, sizeof maxb, "%u tokens", m->max_batch_tokens);
        printf("kvdemo: %s: %u layers, %u/%u heads x %u, %u tokens/page, %s KV, max batch "
               "%s\n", cfg.endpoint, m->layers, m->q_heads, m->kv_heads, m->head_dim,
               m->page_tokens, dtype_name(m->dtype), maxb);
        printf("kvdemo: %d tenants x %u conversations, prompt %u tokens (system %u), %u "
               "decode steps, check every %u\n", n, cfg.conversations, cfg.prompt_len,
               cfg.system_len, cfg.decode_steps, cfg.check_every);
        fflush(stdout);
        int started = 0;
        for (int i = 0; i < n; i++, started++)
            if (pthread_create(&ts[i].th, NULL, tenant_main, &ts[i]) != 0) {
                fprintf(stderr, "kvdemo: pthread_create failed\n");
                ok = 0;
                break;
            }
        for (int i = 0; i < started; i++)
            pthread_join(ts[i].th, NULL);
        for (int i = 0; i < started; i++) {
            report_tenant(&ts[i]);
            if (ts[i].failed || ts[i].checks_failed || ts[i].checks == 0)
                ok = 0;
        }
        report_server(ts[0].c);
    }
    for (int i = 0; i < n; i++) {
        kvc_close(&ts[i].c);
        for (int r = 0; r < 2; r++)
            for (int j = 0; j < 64; j++)
                free(ts[i].cv[r][j].tok);
        free(ts[i].q); free(ts[i].k); free(ts[i].v); free(ts[i].o); free(ts[i].lse);
    }
    printf("kvdemo: %s\n", ok ? "PASS" : "FAIL");
    return ok ? 0 : 1;
}
