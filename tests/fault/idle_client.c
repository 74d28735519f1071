/* idle_client — the client side of test_client_crash.sh: sequences left behind by a client
 * that died, and sequences that stay idle too long (server.seq_idle_timeout_s).
 *
 * Usage: idle_client ENDPOINT TENANT MODE ...
 *   hold N         opens N sequences, each with its own prompt of 2 pages + 3 tokens: the
 *                  first N-1 prefilled over every layer, the last only extended (a client
 *                  that died between its Extend and its Attends); prints "held" and waits
 *                  to be killed.
 *   lookup N       the full pages of those N prompts are cached: 2 pages each for the
 *                  prefilled ones, none for the last.
 *   pause MS STEPS alive|expired|closed [CHURN]
 *                  prefills a sequence, then STEPS times sleeps MS, opens and closes CHURN
 *                  other sequences (more than arena.max_seqs: its slot is taken again) and
 *                  runs a decode step.
 *                  alive: every step works. expired: the first step gets KVC_ERR_EXPIRED
 *                  (and so does an attend naming it), closing it still succeeds, and a new
 *                  sequence with the same prompt finds its full pages in the cache.
 *                  closed: the same, but an operator closed it (kvctl close) meanwhile:
 *                  KVC_ERR_NOSEQ saying so.
 *   slow MS        prefills a sequence, extends it by one token and attends its layers one
 *                  by one, MS apart: attends alone keep it alive.
 * Exit 0 only if everything was as described. */
#include <string.h>
#include <unistd.h>

#include "fault_client.h"

/* The prompt of sequence i: 2 pages + 3 tokens, then room for decode steps. */
static uint32_t *prompt(uint32_t i, uint32_t n)
{
    uint32_t *t = malloc(sizeof(uint32_t) * n);
    for (uint32_t j = 0; j < n; j++)
        t[j] = kvs_token(70000 + i, j);
    return t;
}

/* Opens a sequence and prefills tokens[0 .. n): extend, then every layer. */
static uint64_t prefill(const uint32_t *tokens, uint32_t n, uint32_t *cached)
{
    uint64_t s;
    CALL(kvc_seq_open(c, &s));
    CALL(kvc_seq_extend(c, s, tokens, n, cached));
    CALL(run_layers(s, tokens, *cached, n - *cached));
    return s;
}

static void hold(uint32_t n, uint32_t len)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t *t = prompt(i, len), cached = 0;
        if (i + 1 < n) {
            prefill(t, len, &cached);
        } else {
            uint64_t s;
            CALL(kvc_seq_open(c, &s));
            CALL(kvc_seq_extend(c, s, t, len, &cached));
        }
        free(t);
    }
    printf("held %u sequences\n", n);
    fflush(stdout);
    for (;;)
        pause();
}

static void lookup(uint32_t n, uint32_t len, uint32_t P)
{
    for (uint32_t i = 0; i < n; i++) {
        uint32_t *t = prompt(i, len), cached = 0;
        CALL(kvc_lookup(c, t, len, &cached));
        uint32_t want = i + 1 < n ? 2 * P : 0;
        CHECK(cached == want, "prompt %u: %u tokens cached, expected %u", i, cached, want);
        free(t);
    }
}

/* expect: KVC_OK (alive), KVC_ERR_EXPIRED or KVC_ERR_NOSEQ (closed by an operator). */
static void pause_steps(uint32_t ms, uint32_t steps, int expect, uint32_t churn, uint32_t len,
                        uint32_t P)
{
    const char *says = expect == KVC_ERR_EXPIRED ? "seq_idle_timeout_s" : "by an operator";
    uint32_t *t = prompt(1000 + ms, len + steps), cached = 0;
    uint64_t s = prefill(t, len, &cached);
    for (uint32_t i = 0; i < steps; i++) {
        usleep(ms * 1000u);
        for (uint32_t j = 0; j < churn; j++) {
            uint64_t other;
            CALL(kvc_seq_open(c, &other));
            CALL(kvc_seq_close(c, other));
        }
        int rc = kvc_seq_extend(c, s, t + len + i, 1, NULL);
        if (rc == 0)
            rc = run_layers(s, t, len + i, 1);
        if (expect == KVC_OK) {
            CHECK(rc == 0, "step %u after %u ms idle: %s (%s)", i, ms, kvc_strerror(rc),
                  kvc_last_error(c));
            continue;
        }
        CHECK(rc == expect, "extend after %u ms idle: %s, expected %s", ms, kvc_strerror(rc),
              kvc_strerror(expect));
        CHECK(strstr(kvc_last_error(c), says) != NULL, "the error does not say why: '%s'",
              kvc_last_error(c));
        printf("after %u ms idle: %s (%s)\n", ms, kvc_strerror(rc), kvc_last_error(c));
        rc = run_layers(s, t, len, 1);
        CHECK(rc == expect, "attend naming it: %s, expected %s", kvc_strerror(rc),
              kvc_strerror(expect));
        CHECK(strstr(kvc_last_error(c), says) != NULL, "the attend's error does not say why: '%s'",
              kvc_last_error(c));
        CALL(kvc_seq_close(c, s));
        uint64_t again = prefill(t, len, &cached);
        CHECK(cached == 2 * P, "new sequence, same prompt: %u tokens cached, expected %u",
              cached, 2 * P);
        s = again;
        break;
    }
    CALL(kvc_seq_close(c, s));
    free(t);
}

static void slow_layers(uint32_t ms, uint32_t len)
{
    const kvc_model *m = kvc_model_info(c);
    uint32_t *t = prompt(2000 + ms, len + 1), cached = 0;
    uint64_t s = prefill(t, len, &cached);
    CALL(kvc_seq_extend(c, s, t + len, 1, NULL));
    kvs_rows r = kvs_rows_alloc(m, 1);
    float *q = r.q, *k = r.k, *v = r.v, *o = r.o;
    for (uint32_t layer = 0; layer < m->layers; layer++) {
        usleep(ms * 1000u);
        kvs_fill_qkv(m, layer, t + len, len, 1, q, k, v);
        kvc_item it = { s, 1 };
        CALL(kvc_attend(c, layer, &it, 1, q, k, v, 0, o, NULL));
    }
    CALL(kvc_seq_close(c, s));
    kvs_rows_free(&r);
    free(t);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: idle_client ENDPOINT TENANT hold|lookup N | slow MS | pause MS STEPS alive|expired|closed [CHURN]\n");
        return 2;
    }
    fc_connect(argv[1], argv[2], "idle_client");
    const uint32_t P = kvc_model_info(c)->page_tokens, len = 2 * P + 3;
    if (!strcmp(argv[3], "hold"))
        hold((uint32_t)atoi(argv[4]), len);
    else if (!strcmp(argv[3], "lookup"))
        lookup((uint32_t)atoi(argv[4]), len, P);
    else if (!strcmp(argv[3], "slow"))
        slow_layers((uint32_t)atoi(argv[4]), len);
    else if (!strcmp(argv[3], "pause") && (argc == 7 || argc == 8))
        pause_steps((uint32_t)atoi(argv[4]), (uint32_t)atoi(argv[5]),
                    !strcmp(argv[6], "expired") ? KVC_ERR_EXPIRED
                    : !strcmp(argv[6], "closed") ? KVC_ERR_NOSEQ : KVC_OK,
                    argc == 8 ? (uint32_t)atoi(argv[7]) : 0, len, P);
    else {
        fprintf(stderr, "idle_client: unknown mode %s\n", argv[3]);
        return 2;
    }
    kvc_close(&c);
    return failures ? 1 : 0;
}
