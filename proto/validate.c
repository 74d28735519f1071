/* validate.c — see validate.h. Every count is checked before it is multiplied, and every
 * product is computed in 64 bits, so no input can overflow a size. */
#include "validate.h"

#include <math.h>
#include <stdio.h>

#include "kverr.h"

#define FAIL(code, ...) do { if (why) snprintf(why, why_len, __VA_ARGS__); return (code); } while (0)

/* 1 if frames are exactly Q, K and V for t tokens; *q and *kv get their sizes. */
static int qkv_frames_ok(const kvp_limits *lim, uint64_t t, const size_t *frames, int n_frames,
                         uint64_t *q, uint64_t *kv)
{
    *q = t * lim->q_heads * lim->head_dim * sizeof(float);
    *kv = t * lim->kv_heads * lim->head_dim * sizeof(float);
    return n_frames == 3 && frames[0] == *q && frames[1] == *kv && frames[2] == *kv;
}

static int check_attend(const Kvarena__Attend *a, const kvp_limits *lim, const size_t *frames,
                        int n_frames, uint64_t *tokens, char *why, size_t why_len)
{
    if (a->n_items == 0)
        FAIL(KV_ERR_INVAL, "attend has no items");
    if (a->n_items > lim->max_batch_tokens)
        FAIL(KV_ERR_TOOBIG, "attend has %zu items, at most %u", a->n_items, lim->max_batch_tokens);
    if (a->layer >= lim->layers)
        FAIL(KV_ERR_INVAL, "layer %u out of range (model has %u)", a->layer, lim->layers);
    if (!isfinite(a->scale) || a->scale < 0)
        FAIL(KV_ERR_INVAL, "scale must be finite and >= 0");
    uint64_t t = 0;
    for (size_t i = 0; i < a->n_items; i++) {
        if (!a->items[i] || a->items[i]->n_new == 0)
            FAIL(KV_ERR_INVAL, "item %zu: n_new must be >= 1", i);
        t += a->items[i]->n_new;
    }
    if (t > lim->max_batch_tokens)
        FAIL(KV_ERR_TOOBIG, "batch of %llu tokens, max_batch_tokens is %u",
             (unsigned long long)t, lim->max_batch_tokens);
    uint64_t q, kv;
    if (!qkv_frames_ok(lim, t, frames, n_frames, &q, &kv))
        FAIL(KV_ERR_PROTO, "attend wants 3 frames Q (%llu bytes), K and V (%llu bytes each)",
             (unsigned long long)q, (unsigned long long)kv);
    if (tokens)
        *tokens = t;
    return 0;
}

int kvp_check_request(const Kvarena__Envelope *e, const kvp_limits *lim, const size_t *frames,
                      int n_frames, uint64_t *tokens, char *why, size_t why_len)
{
    if (e->body_case == KVARENA__ENVELOPE__BODY_ATTEND)
        return check_attend(e->attend, lim, frames, n_frames, tokens, why, why_len);
    if (n_frames != 0)
        FAIL(KV_ERR_PROTO, "unexpected tensor frames");
    switch (e->body_case) {
    case KVARENA__ENVELOPE__BODY_EXTEND:
        if (e->extend->n_tokens == 0)
            FAIL(KV_ERR_INVAL, "extend takes at least one token");
        if (e->extend->n_tokens > lim->max_extend_tokens)
            FAIL(KV_ERR_TOOBIG, "extend takes at most %u tokens, got %zu",
                 lim->max_extend_tokens, e->extend->n_tokens);
        return 0;
    case KVARENA__ENVELOPE__BODY_LOOKUP:
        if (e->lookup->n_tokens > lim->max_extend_tokens)
            FAIL(KV_ERR_TOOBIG, "lookup takes at most %u tokens", lim->max_extend_tokens);
        return 0;
    case KVARENA__ENVELOPE__BODY_HELLO:
    case KVARENA__ENVELOPE__BODY_SEQ_OPEN:
    case KVARENA__ENVELOPE__BODY_SEQ_CLOSE:
    case KVARENA__ENVELOPE__BODY_FORK:
    case KVARENA__ENVELOPE__BODY_STATS:
        return 0;
    default:
        FAIL(KV_ERR_PROTO, "message type %d is not a client request", (int)e->body_case);
    }
}

int kvp_check_job(const Kvarena__Job *j, const kvp_limits *lim, uint32_t n_pages,
                  uint32_t page_tokens, const size_t *frames, int n_frames, uint64_t *tokens,
                  char *why, size_t why_len)
{
    if (j->layer >= lim->layers || j->n_items == 0 || j->n_items > lim->max_batch_tokens)
        FAIL(KV_ERR_INVAL, "job layer %u / %zu items do not fit the arena", j->layer, j->n_items);
    uint64_t t = 0;
    for (size_t i = 0; i < j->n_items; i++) {
        const Kvarena__JobItem *it = j->items[i];
        uint64_t len = (uint64_t)it->n_kv + it->n_new;
        if (len > UINT32_MAX - 1) /* the kernels' positions and position + 1 are uint32 */
            FAIL(KV_ERR_INVAL, "item %zu: %llu tokens do not fit 32-bit positions", i,
                 (unsigned long long)len);
        if (it->n_new == 0 || it->n_pages != (len + page_tokens - 1) / page_tokens)
            FAIL(KV_ERR_INVAL, "item %zu: %zu pages for %llu tokens", i, it->n_pages,
                 (unsigned long long)len);
        for (size_t p = 0; p < it->n_pages; p++)
            if (it->pages[p] >= n_pages)
                FAIL(KV_ERR_INVAL, "item %zu: page %u out of range", i, it->pages[p]);
        if (it->cow_rows && (it->cow_rows != it->n_kv % page_tokens || it->skip_write ||
                             it->cow_src >= n_pages ||
                             it->cow_src == it->pages[it->n_kv / page_tokens]))
            FAIL(KV_ERR_INVAL, "item %zu: copy of %u tokens from page %u does not fit it", i,
                 it->cow_rows, it->cow_src);
        t += it->n_new;
    }
    if (t > lim->max_batch_tokens)
        FAIL(KV_ERR_INVAL, "job of %llu tokens", (unsigned long long)t);
    uint64_t q, kv;
    if (!qkv_frames_ok(lim, t, frames, n_frames, &q, &kv))
        FAIL(KV_ERR_PROTO, "job frames disagree with its items");
    *tokens = t;
    return 0;
}
