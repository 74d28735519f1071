/* fuzz_job — libFuzzer target: arbitrary bytes as the envelope frame a kvworker receives,
 * with arbitrary Q/K/V frame sizes, through kvp_check_job against a fixed arena geometry
 * (tests/fuzz/fuzz_input.h).
 *
 * When the check passes, the worker hands the job straight to the kernels, so every
 * promise the kernels rely on is asserted here: at least one item, the layer in range,
 * each item's page table exactly ceil((n_kv + n_new) / page_tokens) pages, every page
 * index below n_pages, every position and position + 1 representable in uint32 (the
 * kernels' kvk_item), the slots written (n_kv .. n_kv + n_new - 1) inside the page table,
 * the token sum within max_batch_tokens, Q, K, V of exactly that many rows, and a
 * copy-on-write only of the tokens before n_kv in its page, from another page in range. */
#include <stdio.h>
#include <stdlib.h>

#include "proto/kverr.h"
#include "tests/fuzz/fuzz_input.h"

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "invariant failed: %s\n", #c); abort(); } } while (0)

static void check_accepted(const Kvarena__Job *j, const fz_input *in, uint64_t tokens)
{
    const fz_config *cfg = in->cfg;
    REQUIRE(j->n_items >= 1 && j->n_items <= cfg->lim.max_batch_tokens);
    REQUIRE(j->layer < cfg->lim.layers);
    uint64_t t = 0;
    for (size_t i = 0; i < j->n_items; i++) {
        const Kvarena__JobItem *it = j->items[i];
        uint64_t len = (uint64_t)it->n_kv + it->n_new;
        REQUIRE(it->n_new >= 1);
        REQUIRE(len <= UINT32_MAX - 1);
        REQUIRE(it->n_pages == (len + cfg->page_tokens - 1) / cfg->page_tokens);
        REQUIRE((len - 1) / cfg->page_tokens < it->n_pages); /* last slot written */
        for (size_t p = 0; p < it->n_pages; p++)
            REQUIRE(it->pages[p] < cfg->n_pages);
        if (it->cow_rows) { /* what kvk_copy_tokens needs, the copy before the new rows */
            REQUIRE(it->cow_rows == it->n_kv % cfg->page_tokens && !it->skip_write);
            REQUIRE(it->cow_src < cfg->n_pages);
            REQUIRE(it->cow_src != it->pages[it->n_kv / cfg->page_tokens]);
        }
        t += it->n_new;
    }
    REQUIRE(t == tokens && t <= cfg->lim.max_batch_tokens);
    size_t want[3];
    fz_qkv_bytes(&cfg->lim, t, want);
    REQUIRE(in->n_frames == 3);
    for (int i = 0; i < 3; i++)
        REQUIRE(in->frames[i] == want[i]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in;
    if (fz_parse(data, size, &in) != 0)
        return 0;
    Kvarena__Envelope *e = kvarena__envelope__unpack(NULL, in.msg_len, in.msg);
    if (!e)
        return 0;
    if (e->body_case == KVARENA__ENVELOPE__BODY_JOB) { /* the worker runs nothing else */
        const Kvarena__Job *j = e->job;
        if (in.honest) {
            uint64_t t = 0;
            for (size_t i = 0; i < j->n_items; i++)
                t += j->items[i]->n_new;
            fz_make_honest(&in, t);
        }
        uint64_t tokens = 0;
        char why[256] = "";
        int rc = kvp_check_job(j, &in.cfg->lim, in.cfg->n_pages, in.cfg->page_tokens, in.frames,
                               in.n_frames, &tokens, why, sizeof(why));
        if (rc == 0)
            check_accepted(j, &in, tokens);
        else
            REQUIRE((rc == KV_ERR_INVAL || rc == KV_ERR_PROTO) && why[0] != '\0');
    }
    kvarena__envelope__free_unpacked(e, NULL);
    return 0;
}
