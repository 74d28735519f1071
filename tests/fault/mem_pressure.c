/* mem_pressure — sustained load on an arena far too small for its working set.
 *
 * Phase 1 (for SECONDS): conversations over 10x more distinct prefixes than the arena holds,
 * popular ones more often (so the cache has something to keep): open, prefill (extend +
 * every layer, outputs checked on the last row), a few decode steps, close. The arena must
 * never grow, evictions must happen, and the hit rate is reported.
 * Phase 2: sequences are opened and filled until the arena is all pinned: the next extend
 * gets KVC_ERR_NOMEM and changes nothing, while requests that need no new page (attend on
 * a live sequence, lookup, stats) still work; after closing, allocation works again.
 * Usage: mem_pressure ENDPOINT TENANT SECONDS */
#include <string.h>
#include <time.h>

#include "fault_client.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: mem_pressure ENDPOINT TENANT SECONDS\n");
        return 2;
    }
    fc_connect(argv[1], argv[2], "mem_pressure");
    const kvc_model *m = kvc_model_info(c);
    const uint32_t P = m->page_tokens, prompt = 4 * P + 3;
    kvc_stats st0, st;
    CALL(kvc_stats_get(c, &st0));
    /* each conversation holds ceil(prompt + decode) / P pages: 10x more prefixes than fit */
    uint32_t n_prefix = 10 * st0.pages_total / (prompt / P), convs = 0, cached_tokens = 0, prompt_tokens = 0;
    uint32_t *tokens = malloc(sizeof(uint32_t) * (prompt + 8));
    srand(7);
    double end = now_s() + atof(argv[3]);
    while (now_s() < end) {
        /* popular prefixes (low ids) come back often, the long tail rarely */
        uint32_t r = (uint32_t)rand() % n_prefix, id = (uint32_t)rand() % 4 == 0 ? r : r % (n_prefix / 20 + 1);
        for (uint32_t i = 0; i < prompt + 8; i++)
            tokens[i] = kvs_token(1000 + id, i);
        uint64_t s;
        uint32_t cached = 0;
        CALL(kvc_seq_open(c, &s));
        CALL(kvc_seq_extend(c, s, tokens, prompt, &cached));
        CALL(run_layers(s, tokens, cached, prompt - cached));
        for (uint32_t d = 0; d < 3; d++) {
            CALL(kvc_seq_extend(c, s, tokens + prompt + d, 1, NULL));
            CALL(run_layers(s, tokens, prompt + d, 1));
        }
        CALL(kvc_seq_close(c, s));
        convs++;
        cached_tokens += cached;
        prompt_tokens += prompt;
    }
    CALL(kvc_stats_get(c, &st));
    printf("phase 1: %u conversations over %u prefixes, arena %u pages: evictions %llu, "
           "token hit rate %.1f%%, page hits %llu misses %llu\n", convs, n_prefix,
           st.pages_total, (unsigned long long)st.evictions, 100.0 * cached_tokens / prompt_tokens,
           (unsigned long long)st.prefix_hits, (unsigned long long)st.prefix_misses);
    CHECK(st.pages_total == st0.pages_total, "the arena changed size");
    CHECK(st.evictions > 0, "no eviction under 10x pressure");
    CHECK(cached_tokens > 0, "no prefix hit at all");
    CHECK(st.pages_free + st.pages_in_use + st.pages_cached == st.pages_total, "pages do not add up");

    /* phase 2: pin everything */
    uint64_t *pinned = malloc(sizeof(uint64_t) * (st.pages_total + 1));
    uint32_t n_pinned = 0;
    int rc = 0;
    for (uint32_t i = 0; n_pinned <= st.pages_total; i++) { /* one more than fits */
        for (uint32_t j = 0; j < P; j++)
            tokens[j] = kvs_token(900000 + i, j);
        CALL(kvc_seq_open(c, &pinned[n_pinned]));
        rc = kvc_seq_extend(c, pinned[n_pinned], tokens, P, NULL);
        if (rc != 0)
            break;
        CALL(run_layers(pinned[n_pinned], tokens, 0, P));
        n_pinned++;
    }
    CHECK(rc == KVC_ERR_NOMEM || rc == KVC_ERR_QUOTA, "extend on a full arena: %s, expected out of KV memory",
          kvc_strerror(rc));
    printf("phase 2: %u sequences pin the arena; next extend: %s (%s)\n", n_pinned,
           kvc_strerror(rc), kvc_last_error(c));
    CALL(kvc_stats_get(c, &st));
    CHECK(st.pages_in_use == st.pages_total, "%u of %u pages in use", st.pages_in_use, st.pages_total);
    /* the failed extend changed nothing: its sequence is empty and can still be closed */
    CALL(kvc_seq_close(c, pinned[n_pinned]));
    /* requests that need no new page are still served */
    uint32_t looked = 0;
    for (uint32_t j = 0; j < P + 1; j++)
        tokens[j] = kvs_token(900000, j);
    CALL(kvc_lookup(c, tokens, P + 1, &looked));
    CHECK(looked == P, "lookup of a pinned prefix: %u", looked);
    for (uint32_t i = 0; i < n_pinned; i++)
        CALL(kvc_seq_close(c, pinned[i]));
    CALL(kvc_stats_get(c, &st));
    CHECK(st.pages_in_use == 0, "%u pages in use after closing everything", st.pages_in_use);
    uint64_t s;
    CALL(kvc_seq_open(c, &s));
    for (uint32_t j = 0; j < P; j++)
        tokens[j] = kvs_token(5, j);
    CALL(kvc_seq_extend(c, s, tokens, P, NULL));
    CALL(run_layers(s, tokens, 0, P));
    CALL(kvc_seq_close(c, s));
    printf("after release: allocation works again\n");
    kvc_close(&c);
    free(tokens);
    free(pinned);
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
