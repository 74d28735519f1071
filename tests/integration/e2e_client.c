/* e2e_client — black-box check of a running kvserver + workers through libkvclient.
 *
 * One sequence: prefill a prompt, then decode steps over every layer; every output row is
 * compared with the synthetic model's reference attention (client/examples/synth.h) on
 * contiguous KV. Then: a second sequence with the same prompt must hit the prefix cache; a
 * fork must diverge correctly (copy-on-write of the shared partial tail); the three then
 * decode in one batch (sharing the prompt's pages); the stats must add up at every stage
 * and come back to nothing in use after closing.
 * Usage: e2e_client ENDPOINT TENANT PROMPT_LEN DECODE_STEPS [ATTEMPT_MS]. Exit 0 only if
 * all passed. Fault tests run it while they kill workers or the server; with E2E_FORKS=N
 * it also forks the second sequence N times, each child appending one token (a copy of the
 * shared tail made by the workers, layer by layer) and checked, so faults land mid-copy.
 * E2E_STREAM=X fixes the tokens (else they are new for every run); with E2E_WARM=1 the
 * prompt's full pages must be cached from the start (test_snapshot: a restored cache), with
 * E2E_WARM=any any number of them may be. E2E_SHARED=1: other clients use the server at
 * the same time, so the server-wide sequence and page counts are not checked. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client/examples/synth.h"
#include "client/kvclient.h"

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define CALL(expr) do { int rc_ = (expr); if (rc_) { fprintf(stderr, "FAIL %s: %s (%s)\n", #expr, \
    kvc_strerror(rc_), kvc_last_error(c)); exit(1); } } while (0)

typedef struct seq_state {
    uint64_t id;
    uint32_t *tokens;        /* every token of the sequence */
    uint32_t n;              /* tokens written */
} seq_state;

static double worst_rel;      /* max over rows of max|err| / max|ref| */
static int worker_retries;    /* attends made again after KVC_ERR_WORKER */

/* Checks rows [pos0, pos0+n) of one layer's output o against the reference. */
static void check_rows(const kvc_model *m, uint32_t layer, const seq_state *s, uint32_t pos0,
                       uint32_t n, const float *o)
{
    size_t row = (size_t)m->q_heads * m->head_dim;
    for (uint32_t i = 0; i < n; i++) {
        double rel;
        int rc = kvs_check_row(m, layer, s->tokens, pos0 + i, o + i * row, NULL, &rel);
        if (rel > worst_rel) worst_rel = rel;
        CHECK(rc == 0, "layer %u pos %u: rel err %.3g > %.3g%s", layer, pos0 + i, rel,
              kvs_tolerance(m->dtype), rc < 0 ? " (no memory for the reference)" : "");
    }
}

/* kvc_attend, made again after KVC_ERR_WORKER: the worker died under the job (fault tests
 * kill them); the sequences are unchanged, so the same call may simply be made again. */
static void attend(kvc_client *c, uint32_t layer, const kvc_item *it, uint32_t n,
                   const float *q, const float *k, const float *v, float *o)
{
    int rc, tries = 0;
    while ((rc = kvc_attend(c, layer, it, n, q, k, v, 0, o, NULL)) == KVC_ERR_WORKER && ++tries < 10)
        worker_retries++;
    CALL(rc);
}

/* Extends s by tokens[s->n .. s->n+n) and runs every layer; returns the cached count. */
static uint32_t step(kvc_client *c, seq_state *s, uint32_t n)
{
    const kvc_model *m = kvc_model_info(c);
    uint32_t cached = 0;
    CALL(kvc_seq_extend(c, s->id, s->tokens + s->n, n, &cached));
    uint32_t pos0 = s->n + cached, t = n - cached;
    kvs_rows r = kvs_rows_alloc(m, t);
    for (uint32_t layer = 0; layer < m->layers; layer++) {
        kvs_fill_qkv(m, layer, s->tokens + pos0, pos0, t, r.q, r.k, r.v);
        kvc_item it = { s->id, t };
        attend(c, layer, &it, 1, r.q, r.k, r.v, r.o);
        check_rows(m, layer, s, pos0, t, r.o);
    }
    kvs_rows_free(&r);
    s->n += n;
    return cached;
}

/* One decode step of n sequences in one Attend per layer, as a serving engine batches them:
 * those sharing a prompt's pages are read as a group by the kernels. Every row checked. */
static void step_batch(kvc_client *c, seq_state **s, uint32_t n)
{
    const kvc_model *m = kvc_model_info(c);
    kvs_rows r = kvs_rows_alloc(m, n);
    kvc_item *it = malloc(sizeof(kvc_item) * n);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t cached = 0;
        CALL(kvc_seq_extend(c, s[i]->id, s[i]->tokens + s[i]->n, 1, &cached));
        CHECK(cached == 0, "a decode step found its one token cached");
        it[i] = (kvc_item){ s[i]->id, 1 };
    }
    for (uint32_t layer = 0; layer < m->layers; layer++) {
        for (uint32_t i = 0; i < n; i++)
            kvs_fill_qkv(m, layer, s[i]->tokens + s[i]->n, s[i]->n, 1, r.q + i * r.qrow,
                         r.k + i * r.kvrow, r.v + i * r.kvrow);
        attend(c, layer, it, n, r.q, r.k, r.v, r.o);
        for (uint32_t i = 0; i < n; i++)
            check_rows(m, layer, s[i], s[i]->n, 1, r.o + i * r.qrow);
    }
    for (uint32_t i = 0; i < n; i++)
        s[i]->n++;
    kvs_rows_free(&r);
    free(it);
}

static int shared_server; /* E2E_SHARED */

static void check_stats(kvc_client *c, const char *when, uint32_t seqs, int none_in_use)
{
    kvc_stats st;
    CALL(kvc_stats_get(c, &st));
    CHECK(st.pages_free + st.pages_in_use + st.pages_cached == st.pages_total,
          "%s: free %u + in use %u + cached %u != total %u", when, st.pages_free,
          st.pages_in_use, st.pages_cached, st.pages_total);
    CHECK(shared_server || st.sequences == seqs, "%s: %u sequences, expected %u", when,
          st.sequences, seqs);
    if (none_in_use && !shared_server)
        CHECK(st.pages_in_use == 0, "%s: %u pages still in use", when, st.pages_in_use);
    printf("stats %-14s free %u in_use %u cached %u hits %llu misses %llu jobs %llu\n", when,
           st.pages_free, st.pages_in_use, st.pages_cached, (unsigned long long)st.prefix_hits,
           (unsigned long long)st.prefix_misses, (unsigned long long)st.jobs_done);
}

int main(int argc, char **argv)
{
    if (argc < 5 || argc > 7) {
        fprintf(stderr, "usage: e2e_client ENDPOINT TENANT PROMPT_LEN DECODE_STEPS [ATTEMPT_MS "
                        "[TIMEOUT_MS]]\n");
        return 2;
    }
    uint32_t prompt = (uint32_t)atoi(argv[3]), steps = (uint32_t)atoi(argv[4]);
    kvc_opts opts = { .tenant = argv[2], .name = "e2e_client",
                      .timeout_ms = argc == 7 ? atoi(argv[6]) : 60000,
                      .attempt_ms = argc >= 6 ? atoi(argv[5]) : 0,
                      /* authenticated mode (test_curve.sh): keys from the environment */
                      .server_key = getenv("KVARENA_SERVER_KEY"),
                      .public_key = getenv("KVARENA_PUBLIC_KEY"),
                      .secret_key = getenv("KVARENA_SECRET_KEY") };
    kvc_client *c = NULL;
    int rc = kvc_connect(argv[1], &opts, &c);
    if (rc) {
        fprintf(stderr, "connect %s: %s (%s)\n", argv[1], kvc_strerror(rc), kvc_last_error(NULL));
        return 1;
    }
    const kvc_model *m = kvc_model_info(c);
    const uint32_t P = m->page_tokens, total = prompt + steps;
    const uint32_t spare = 4 * P + 64; /* tokens past `total`: the fork and batch steps */
    printf("model: %u layers, %u/%u heads x %u, page %u, dtype %u\n", m->layers, m->q_heads,
           m->kv_heads, m->head_dim, P, m->dtype);
    uint32_t *tokens = malloc(sizeof(uint32_t) * (total + spare));
    /* tokens of this run only: a server that served other runs has nothing of them cached */
    uint64_t stream = getenv("E2E_STREAM") ? strtoull(getenv("E2E_STREAM"), NULL, 0)
                                           : (uint64_t)getpid() << 16 ^ (uint64_t)time(NULL);
    const char *warm_env = getenv("E2E_WARM");
    shared_server = getenv("E2E_SHARED") && atoi(getenv("E2E_SHARED"));
    int warm = warm_env ? (!strcmp(warm_env, "any") ? 2 : atoi(warm_env) != 0) : 0;
    for (uint32_t i = 0; i < total + spare; i++)
        tokens[i] = kvs_token(stream, i);
    check_stats(c, "start", 0, 1);

    /* 1. prefill + decode, every row checked; before it, what the server holds of the
     * prompt, in the arena or (cold tier) on disk: all its full pages when warm */
    uint32_t first_want = warm ? (prompt - 1) / P * P : 0, in_arena = 0, on_disk = 0;
    CALL(kvc_lookup_tiers(c, tokens, prompt, &in_arena, &on_disk));
    printf("lookup before: cached %u on disk %u\n", in_arena, on_disk);
    CHECK(warm == 2 || in_arena + on_disk == first_want,
          "lookup before: %u cached + %u on disk, expected %u", in_arena, on_disk, first_want);
    seq_state a = { 0, tokens, 0 };
    CALL(kvc_seq_open(c, &a.id));
    uint32_t first = step(c, &a, prompt);
    CHECK(first == first_want || (warm == 2 && first % P == 0 && first <= first_want),
          "first sequence: cached %u, expected %u (%s)", first, first_want,
          warm ? "the prompt's full pages restored" : "a fresh server has nothing cached");
    for (uint32_t i = 0; i < steps; i++)
        step(c, &a, 1);
    check_stats(c, "after decode", 1, 0);

    /* 2. same prompt again: whole pages cached, at least one token left to compute */
    seq_state b = { 0, tokens, 0 };
    CALL(kvc_seq_open(c, &b.id));
    uint32_t want = (prompt - 1) / P * P, got = step(c, &b, prompt);
    CHECK(got == want, "second sequence: cached %u, expected %u", got, want);
    uint32_t looked = 0;
    CALL(kvc_lookup(c, tokens, total, &looked));
    CHECK(looked == (total - 1) / P * P, "lookup: %u cached, expected %u", looked, (total - 1) / P * P);

    /* 3. fork b (partial tail shared), then both continue with different tokens */
    seq_state f = { 0, malloc(sizeof(uint32_t) * (total + spare)), b.n };
    memcpy(f.tokens, tokens, sizeof(uint32_t) * b.n);
    for (uint32_t i = b.n; i < total + spare; i++)
        f.tokens[i] = kvs_token(stream + 1, i);
    CALL(kvc_seq_fork(c, b.id, &f.id));
    for (uint32_t i = 0; i < 2 * P + 3; i++) {
        step(c, &f, 1);
        step(c, &b, 1);
    }
    check_stats(c, "after fork", 3, 0);
    /* 3b. the three decode together (they share the prompt's pages) */
    seq_state *batch[3] = { &a, &b, &f };
    for (uint32_t i = 0; i < 2 * P + 3; i++)
        step_batch(c, batch, 3);
    check_stats(c, "after batch", 3, 0);
    const char *forks_env = getenv("E2E_FORKS");
    uint32_t forks = forks_env ? (uint32_t)atoi(forks_env) : 0;
    seq_state g = { 0, malloc(sizeof(uint32_t) * (b.n + 1)), b.n };
    memcpy(g.tokens, b.tokens, sizeof(uint32_t) * b.n);
    for (uint32_t i = 0; i < forks; i++) {
        g.tokens[b.n] = kvs_token(stream + 2 + i, b.n);
        g.n = b.n;
        CALL(kvc_seq_fork(c, b.id, &g.id));
        step(c, &g, 1);
        CALL(kvc_seq_close(c, g.id));
    }
    free(g.tokens);
    if (forks)
        printf("forks of a shared partial tail (%u of %u tokens): %u, each child checked\n",
               b.n % P, P, forks);

    /* 4. errors change nothing: forged id, wrong layer, unknown sequence close */
    kvc_item bad = { a.id ^ 0x1234500000000ull, 1 };
    float dummy[1 << 14] = { 0 };
    CHECK(kvc_attend(c, 0, &bad, 1, dummy, dummy, dummy, 0, dummy, NULL) == KVC_ERR_NOSEQ,
          "forged sequence id must be refused");
    CHECK(kvc_seq_close(c, 12345) == KVC_ERR_NOSEQ, "closing an unknown id must fail");
    check_stats(c, "after errors", 3, 0);

    CALL(kvc_seq_close(c, a.id));
    CALL(kvc_seq_close(c, b.id));
    CALL(kvc_seq_close(c, f.id));
    check_stats(c, "closed", 0, 1);
    uint32_t dtype = m->dtype; /* m is the client's: gone after kvc_close */
    kvc_close(&c);
    printf("attend retries after a worker died: %d\n", worker_retries);
    printf("max relative error %.3g (tolerance %.0e); %s\n", worst_rel, kvs_tolerance(dtype),
           failures ? "FAILED" : "all checks passed");
    free(tokens);
    free(f.tokens);
    return failures ? 1 : 0;
}
