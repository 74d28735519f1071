/* fuzz_envelope — libFuzzer target: arbitrary bytes as the envelope frame of a client
 * request (what kvp_decode unpacks), with arbitrary tensor frame sizes, through
 * kvp_check_request under fixed limits (tests/fuzz/fuzz_input.h).
 *
 * Oracle: an independent reading of the contract in validate.h and kvarena.proto. The
 * check must accept exactly the requests the contract allows, return a typed error code
 * otherwise, and on acceptance report the Attend's token count; sanitizers catch any
 * out-of-bounds read or overflow on the way. */
#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "proto/kverr.h"
#include "tests/fuzz/fuzz_input.h"

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "invariant failed: %s\n", #c); abort(); } } while (0)

/* The contract, read independently: is e with these frames a valid client request? */
static int contract_allows(const Kvarena__Envelope *e, const fz_input *in, uint64_t *tokens)
{
    const kvp_limits *lim = &in->cfg->lim;
    switch (e->body_case) {
    case KVARENA__ENVELOPE__BODY_ATTEND: {
        const Kvarena__Attend *a = e->attend;
        if (a->n_items == 0 || a->n_items > lim->max_batch_tokens || a->layer >= lim->layers ||
            isnan(a->scale) || isinf(a->scale) || a->scale < 0)
            return 0;
        uint64_t t = 0;
        for (size_t i = 0; i < a->n_items; i++) {
            if (a->items[i]->n_new == 0)
                return 0;
            t += a->items[i]->n_new;
        }
        if (t > lim->max_batch_tokens)
            return 0;
        size_t want[3];
        fz_qkv_bytes(lim, t, want);
        if (in->n_frames != 3)
            return 0;
        for (int i = 0; i < 3; i++)
            if (in->frames[i] != want[i])
                return 0;
        *tokens = t;
        return 1;
    }
    case KVARENA__ENVELOPE__BODY_EXTEND:
        return in->n_frames == 0 && e->extend->n_tokens >= 1 &&
               e->extend->n_tokens <= lim->max_extend_tokens;
    case KVARENA__ENVELOPE__BODY_LOOKUP:
        return in->n_frames == 0 && e->lookup->n_tokens <= lim->max_extend_tokens;
    case KVARENA__ENVELOPE__BODY_HELLO:
    case KVARENA__ENVELOPE__BODY_SEQ_OPEN:
    case KVARENA__ENVELOPE__BODY_SEQ_CLOSE:
    case KVARENA__ENVELOPE__BODY_FORK:
    case KVARENA__ENVELOPE__BODY_STATS:
        return in->n_frames == 0;
    default: /* replies, worker and admin messages, no body */
        return 0;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fz_input in;
    if (fz_parse(data, size, &in) != 0)
        return 0;
    Kvarena__Envelope *e = kvarena__envelope__unpack(NULL, in.msg_len, in.msg);
    if (!e)
        return 0;
    if (in.honest && e->body_case == KVARENA__ENVELOPE__BODY_ATTEND) {
        uint64_t t = 0;
        for (size_t i = 0; i < e->attend->n_items; i++)
            t += e->attend->items[i]->n_new;
        fz_make_honest(&in, t);
    }
    uint64_t tokens = ~0ull, want_tokens = 0;
    char why[256] = "";
    int rc = kvp_check_request(e, &in.cfg->lim, in.frames, in.n_frames, &tokens, why, sizeof(why));
    int allowed = contract_allows(e, &in, &want_tokens);
    if ((rc == 0) != allowed) {
        fprintf(stderr, "kvp_check_request returned %d (%s), the contract says %s\n", rc, why,
                allowed ? "valid" : "invalid");
        abort();
    }
    if (rc == 0) {
        if (e->body_case == KVARENA__ENVELOPE__BODY_ATTEND)
            REQUIRE(tokens == want_tokens && tokens >= 1 && tokens <= in.cfg->lim.max_batch_tokens);
        else
            REQUIRE(tokens == ~0ull); /* untouched: only an Attend has tokens */
    } else {
        REQUIRE(rc == KV_ERR_PROTO || rc == KV_ERR_INVAL || rc == KV_ERR_TOOBIG);
        REQUIRE(why[0] != '\0');
    }
    /* kvp_check_request with no tokens and no reason buffer must give the same answer */
    REQUIRE(kvp_check_request(e, &in.cfg->lim, in.frames, in.n_frames, NULL, NULL, 0) == rc);
    kvarena__envelope__free_unpacked(e, NULL);
    return 0;
}
