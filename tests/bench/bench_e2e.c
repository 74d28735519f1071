/* bench_e2e — latency of one tiny Attend through client -> server -> worker -> client on
 * ipc, next to the machine's own floor measured in the same run: a raw ZeroMQ ipc round
 * trip between two processes (DEALER <-> ROUTER echo), and twice that (our path has two
 * hops each way). Prints `BENCH name=<case> key=value ...` lines.
 * Usage: bench_e2e CLIENT_ENDPOINT TENANT [ITERATIONS]
 *        bench_e2e CLIENT_ENDPOINT TENANT shared N PROMPT STEPS: a decode step of N
 *        sequences batched in one Attend (layer 0 of 1), the N on one PROMPT-token prompt's
 *        pages (one prefill, N - 1 forks) against N on prompts of their own; STEPS steps each,
 *        alternated, p50 per step and the ratio.
 *        bench_e2e CLIENT_ENDPOINT TENANT cold PROMPT ROUNDS: with a cold tier and an arena
 *        of about one prompt, a prompt's prefill (extend + every layer's Attend) against the
 *        same prompt sent again after another evicted it (extend reading its pages back from
 *        disk + the Attends of its last page). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "client/examples/synth.h"
#include "client/kvclient.h"

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(double *v, int n, double p)
{
    qsort(v, (size_t)n, sizeof(double), cmp_double);
    int i = (int)(p * (n - 1) + 0.5);
    return v[i];
}

/* Raw floor: a forked echo process behind a ROUTER, this process a DEALER. */
static void raw_rtt(int iters, size_t bytes, double *p50, double *p99)
{
    char ep[128];
    snprintf(ep, sizeof(ep), "ipc:///tmp/kvarena-bench-echo-%d.sock", (int)getpid());
    pid_t pid = fork();
    if (pid == 0) {
        void *ctx = zmq_ctx_new(), *r = zmq_socket(ctx, ZMQ_ROUTER);
        zmq_bind(r, ep);
        for (int i = 0; i < iters + 10; i++) {
            zmq_msg_t id, body;
            zmq_msg_init(&id);
            zmq_msg_init(&body);
            zmq_msg_recv(&id, r, 0);
            zmq_msg_recv(&body, r, 0);
            zmq_msg_send(&id, r, ZMQ_SNDMORE);
            zmq_msg_send(&body, r, 0);
        }
        usleep(100000);
        _exit(0);
    }
    void *ctx = zmq_ctx_new(), *d = zmq_socket(ctx, ZMQ_DEALER);
    zmq_connect(d, ep);
    char *buf = calloc(1, bytes);
    double *lat = malloc(sizeof(double) * (size_t)iters);
    for (int i = 0; i < iters + 10; i++) {
        double t0 = now_us();
        zmq_send(d, buf, bytes, 0);
        zmq_recv(d, buf, bytes, 0);
        if (i >= 10) lat[i - 10] = now_us() - t0;
    }
    *p50 = pct(lat, iters, 0.5);
    *p99 = pct(lat, iters, 0.99);
    int linger = 0;
    zmq_setsockopt(d, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_close(d);
    zmq_ctx_term(ctx);
    waitpid(pid, NULL, 0);
    unlink(ep + 6);
    free(buf);
    free(lat);
}

#define CALL(expr) do { int rc_ = (expr); if (rc_) { fprintf(stderr, "bench_e2e: %s: %s (%s)\n", #expr, \
    kvc_strerror(rc_), kvc_last_error(c)); exit(1); } } while (0)

/* n sequences of a model of one layer, each holding `prompt` tokens: one prefilled and
 * n - 1 forks of it (shared), or each prefilled on a prompt of its own (stream base + i). */
static void open_batch(kvc_client *c, uint64_t *seqs, int n, uint32_t prompt, int shared,
                       uint64_t base)
{
    const kvc_model *m = kvc_model_info(c);
    kvs_rows r = kvs_rows_alloc(m, prompt);
    uint32_t *tokens = malloc(sizeof(uint32_t) * prompt);
    for (int i = 0; i < n; i++) {
        if (shared && i) {
            CALL(kvc_seq_fork(c, seqs[0], &seqs[i]));
            continue;
        }
        for (uint32_t t = 0; t < prompt; t++)
            tokens[t] = kvs_token(base + (uint64_t)i, t);
        uint32_t cached = 0;
        CALL(kvc_seq_open(c, &seqs[i]));
        CALL(kvc_seq_extend(c, seqs[i], tokens, prompt, &cached));
        kvs_fill_qkv(m, 0, tokens + cached, cached, prompt - cached, r.q, r.k, r.v);
        kvc_item it = { seqs[i], prompt - cached };
        CALL(kvc_attend(c, 0, &it, 1, r.q, r.k, r.v, 0, r.o, NULL));
    }
    kvs_rows_free(&r);
    free(tokens);
}

/* One decode step of the batch: every sequence one new token, one Attend; its time in us. */
static double step_batch(kvc_client *c, const uint64_t *seqs, int n, uint32_t pos,
                         uint64_t base, const kvs_rows *r)
{
    kvc_item it[64];
    for (int i = 0; i < n; i++) {
        uint32_t tok = kvs_token(base + (uint64_t)i, pos);
        CALL(kvc_seq_extend(c, seqs[i], &tok, 1, NULL));
        it[i] = (kvc_item){ seqs[i], 1 };
    }
    double t0 = now_us();
    CALL(kvc_attend(c, 0, it, (uint32_t)n, r->q, r->k, r->v, 0, r->o, NULL));
    return now_us() - t0;
}

static int bench_shared(kvc_client *c, int n, uint32_t prompt, int steps)
{
    const kvc_model *m = kvc_model_info(c);
    if (n < 2 || n > 64 || m->layers != 1 || !prompt || steps < 1) {
        fprintf(stderr, "bench_e2e shared: 2..64 sequences, a model of 1 layer, a prompt, steps\n");
        return 2;
    }
    uint64_t sh[64], pr[64], base = (uint64_t)getpid() << 20;
    open_batch(c, sh, n, prompt, 1, base);
    open_batch(c, pr, n, prompt, 0, base + 1000);
    kvs_rows r = kvs_rows_alloc(m, (uint32_t)n);
    for (size_t i = 0; i < r.qrow * n; i++)
        r.q[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < r.kvrow * n; i++)
        r.k[i] = r.v[i] = (float)(i % 7) * 0.1f;
    double *ts = malloc(sizeof(double) * steps), *tp = malloc(sizeof(double) * steps);
    for (int s = 0; s < steps; s++) { /* alternated, so both see the same minutes */
        ts[s] = step_batch(c, sh, n, prompt + s, base + 2000, &r);
        tp[s] = step_batch(c, pr, n, prompt + s, base + 3000, &r);
    }
    double s50 = pct(ts, steps, 0.5), p50 = pct(tp, steps, 0.5);
    printf("BENCH name=attend_decode_shared seqs=%d prompt=%u layers=1 p50_us=%.1f p99_us=%.1f "
           "steps=%d\n", n, prompt, s50, pct(ts, steps, 0.99), steps);
    printf("BENCH name=attend_decode_private seqs=%d prompt=%u layers=1 p50_us=%.1f p99_us=%.1f "
           "steps=%d\n", n, prompt, p50, pct(tp, steps, 0.99), steps);
    printf("BENCH name=attend_decode_shared_vs_private p50_ratio=%.2f\n", p50 / s50);
    for (int i = 0; i < n; i++) {
        CALL(kvc_seq_close(c, sh[i]));
        CALL(kvc_seq_close(c, pr[i]));
    }
    kvs_rows_free(&r);
    free(ts); free(tp);
    return 0;
}

/* Extends a new sequence by the prompt of stream base and attends every layer over its
 * uncached tokens; returns the sequence, the time of those calls (not of making Q/K/V) in
 * *us, the cached tokens in *cached. */
static uint64_t prefill(kvc_client *c, uint64_t base, uint32_t prompt, const kvs_rows *r,
                        double *us, uint32_t *cached)
{
    const kvc_model *m = kvc_model_info(c);
    uint32_t *tokens = malloc(sizeof(uint32_t) * prompt);
    for (uint32_t t = 0; t < prompt; t++)
        tokens[t] = kvs_token(base, t);
    uint64_t s;
    CALL(kvc_seq_open(c, &s));
    double t0 = now_us();
    CALL(kvc_seq_extend(c, s, tokens, prompt, cached));
    *us = now_us() - t0;
    uint32_t n = prompt - *cached;
    kvc_item it = { s, n };
    for (uint32_t layer = 0; layer < m->layers; layer++) {
        kvs_fill_qkv(m, layer, tokens + *cached, *cached, n, r->q, r->k, r->v);
        t0 = now_us();
        CALL(kvc_attend(c, layer, &it, 1, r->q, r->k, r->v, 0, r->o, NULL));
        *us += now_us() - t0;
    }
    free(tokens);
    return s;
}

/* The cold tier: a prompt prefilled (the server's part: extend + every layer's Attend over
 * all its tokens), then evicted by another as long, then sent again: its extend waits for
 * its pages read back from disk, leaving one page's tokens to attend. The arena must hold
 * little more than one prompt. */
static int bench_cold(kvc_client *c, uint32_t prompt, int rounds)
{
    const kvc_model *m = kvc_model_info(c);
    if (!prompt || rounds < 1) {
        fprintf(stderr, "bench_e2e cold: a prompt, rounds\n");
        return 2;
    }
    kvs_rows r = kvs_rows_alloc(m, prompt);
    double *tp = malloc(sizeof(double) * 2 * rounds), *tc = malloc(sizeof(double) * rounds);
    uint64_t base = (uint64_t)getpid() << 20;
    uint32_t cached, hits = 0;
    for (int i = 0; i < rounds; i++) {
        uint64_t a = base + 2 * (uint64_t)i;
        CALL(kvc_seq_close(c, prefill(c, a, prompt, &r, &tp[2 * i], &cached)));
        usleep(500000); /* time for the tier to write its pages before they are evicted */
        CALL(kvc_seq_close(c, prefill(c, a + 1, prompt, &r, &tp[2 * i + 1], &cached)));
        CALL(kvc_seq_close(c, prefill(c, a, prompt, &r, &tc[i], &cached)));
        hits += cached;
    }
    double p50 = pct(tp, 2 * rounds, 0.5), c50 = pct(tc, rounds, 0.5);
    printf("# cold: %u of %u tokens per prompt cached at its second extend (mean over %d "
           "rounds: read back from disk, but pages the other prompt left in the arena), the "
           "rest attended\n", hits / (uint32_t)rounds, prompt, rounds);
    printf("BENCH name=prefill_attend prompt=%u layers=%u p50_us=%.1f rounds=%d\n", prompt,
           m->layers, p50, 2 * rounds);
    printf("BENCH name=cold_prompt_readback prompt=%u layers=%u p50_us=%.1f rounds=%d\n",
           prompt, m->layers, c50, rounds);
    printf("BENCH name=cold_readback_vs_prefill p50_ratio=%.2f\n", p50 / c50);
    kvs_rows_free(&r);
    free(tp);
    free(tc);
    return hits ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_e2e CLIENT_ENDPOINT TENANT [ITERATIONS | shared N PROMPT "
                        "STEPS | cold PROMPT ROUNDS]\n");
        return 2;
    }
    int iters = argc > 3 ? atoi(argv[3]) : 2000;
    kvc_opts opts = { .tenant = argv[2], .name = "bench_e2e", .timeout_ms = 60000 };
    kvc_client *c = NULL;
    if (kvc_connect(argv[1], &opts, &c)) {
        fprintf(stderr, "bench_e2e: connect: %s\n", kvc_last_error(NULL));
        return 1;
    }
    if (argc == 7 && !strcmp(argv[3], "shared")) {
        int rc = bench_shared(c, atoi(argv[4]), (uint32_t)atoi(argv[5]), atoi(argv[6]));
        kvc_close(&c);
        return rc;
    }
    if (argc == 6 && !strcmp(argv[3], "cold")) {
        int rc = bench_cold(c, (uint32_t)atoi(argv[4]), atoi(argv[5]));
        kvc_close(&c);
        return rc;
    }
    const kvc_model *m = kvc_model_info(c);
    const uint32_t ctx_len = 16;
    uint32_t tokens[64];
    for (uint32_t i = 0; i < 64; i++)
        tokens[i] = kvs_token(3, i);
    kvs_rows r = kvs_rows_alloc(m, ctx_len);
    float *q = r.q, *k = r.k, *v = r.v, *o = r.o;
    size_t qrow = r.qrow;

    /* a base sequence of 16 written tokens; each iteration forks it, so every timed
     * Attend sees exactly 1 new token over 16 cached, on layer 0 */
    uint64_t base;
    CALL(kvc_seq_open(c, &base));
    CALL(kvc_seq_extend(c, base, tokens, ctx_len, NULL));
    for (uint32_t layer = 0; layer < m->layers; layer++) {
        kvs_fill_qkv(m, layer, tokens, 0, ctx_len, q, k, v);
        kvc_item it = { base, ctx_len };
        CALL(kvc_attend(c, layer, &it, 1, q, k, v, 0, o, NULL));
    }
    kvs_fill_qkv(m, 0, tokens + ctx_len, ctx_len, 1, q, k, v);
    double *lat = malloc(sizeof(double) * (size_t)iters);
    for (int i = 0; i < iters + 10; i++) {
        uint64_t s;
        CALL(kvc_seq_fork(c, base, &s));
        CALL(kvc_seq_extend(c, s, tokens + ctx_len, 1, NULL));
        kvc_item it = { s, 1 };
        double t0 = now_us();
        CALL(kvc_attend(c, 0, &it, 1, q, k, v, 0, o, NULL));
        double dt = now_us() - t0;
        if (i >= 10) lat[i - 10] = dt;
        /* finish the other layers so the fork can be closed in a clean state */
        for (uint32_t layer = 1; layer < m->layers; layer++)
            CALL(kvc_attend(c, layer, &it, 1, q, k, v, 0, o, NULL));
        CALL(kvc_seq_close(c, s));
    }
    double a50 = pct(lat, iters, 0.5), a99 = pct(lat, iters, 0.99);
    double r50, r99;
    raw_rtt(iters, qrow * sizeof(float), &r50, &r99);
    printf("BENCH name=zmq_ipc_rtt bytes=%zu p50_us=%.1f p99_us=%.1f iters=%d\n",
           qrow * sizeof(float), r50, r99, iters);
    printf("BENCH name=attend_tiny new=1 cached=%u layers=1 p50_us=%.1f p99_us=%.1f iters=%d\n",
           ctx_len, a50, a99, iters);
    printf("BENCH name=attend_tiny_vs_raw p50_ratio=%.2f p50_ratio_vs_2hops=%.2f p99_ratio=%.2f\n",
           a50 / r50, a50 / (2 * r50), a99 / r99);
    CALL(kvc_seq_close(c, base));
    kvc_close(&c);
    kvs_rows_free(&r);
    free(lat);
    return 0;
}
