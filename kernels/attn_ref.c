/* attn_ref.c — the scalar reference of kvk_attn: the ground truth every SIMD path is tested
 * against, and the path used when KVARENA_ISA=scalar.
 *
 * Written for obviousness, not speed: one query row of one head at a time, keys in position
 * order through the page table, online softmax (running max m, running sum l, accumulator)
 * in fp32 exactly as the header defines the logits. Work units are (row, KV-head group),
 * split statically into nth contiguous ranges, so a run's split depends only on nth. */
#include <math.h>
#include <string.h>

#include "kverr.h"
#include "kvk_internal.h"

typedef struct ref_state {
    float m;                        /* running max of logits seen */
    float l;                        /* running sum of exp(logit - m) */
    float acc[KVK_MAX_HEAD_DIM];    /* running sum of exp(logit - m) * v */
} ref_state;

/* Folds key j's logit s and V row into the running state. */
static void ref_fold(ref_state *st, float s, const uint8_t *v, kvk_dtype dt, uint32_t D)
{
    if (s > st->m) {
        /* New max: rescale what was accumulated under the old one (exp(-inf) = 0). */
        float alpha = expf(st->m - s);
        st->l *= alpha;
        for (uint32_t d = 0; d < D; d++)
            st->acc[d] *= alpha;
        st->m = s;
    }
    float p = expf(s - st->m);
    st->l += p;
    for (uint32_t d = 0; d < D; d++)
        st->acc[d] += p * kvk__load(v, dt, d);
}

/* One query row r of item it (global row `row`) for query head qh. cs: RoPE table of the
 * row's position, or NULL. */
static void ref_row(const kvk_call *c, const kvk_item *it, size_t row, uint32_t r,
                    uint32_t qh, const float *cs)
{
    const kvk_geom *g = c->g;
    uint32_t D = g->head_dim, kvh = qh / (g->q_heads / g->kv_heads);
    uint32_t pos = it->n_kv + r, lo, hi;
    size_t qi = row * g->q_heads + qh;
    float q[KVK_MAX_HEAD_DIM];
    memcpy(q, c->q + qi * D, (size_t)D * 4);
    if (cs)
        kvk__rope_apply(q, D, c->opts.rope, cs);
    float slope = c->opts.alibi ? c->opts.alibi[qh] : 0.0f;

    static ref_state st_init = { .m = -INFINITY };
    ref_state st = st_init;
    kvk__visible(&c->opts, pos, it->n_kv + it->n_new, &lo, &hi);
    for (uint32_t j = lo; j < hi; j++) {
        const uint8_t *k = kvk__kv_row(c, it, j, kvh, 0);
        float s = 0.0f;
        for (uint32_t d = 0; d < D; d++)
            s += q[d] * kvk__load(k, g->dtype, d);
        s = kvk__logit(&c->opts, s * c->opts.scale, slope, j, pos);
        ref_fold(&st, s, kvk__kv_row(c, it, j, kvh, 1), g->dtype, D);
    }

    float inv = st.l > 0.0f ? 1.0f / st.l : 0.0f;
    for (uint32_t d = 0; d < D; d++)
        c->o[qi * D + d] = st.acc[d] * inv;
    if (c->lse)
        c->lse[qi] = st.l > 0.0f ? st.m + logf(st.l) : -INFINITY;
}

static void ref_worker(void *arg, int ith, int nth)
{
    const kvk_call *c = arg;
    const kvk_geom *g = c->g;
    uint32_t G = g->q_heads / g->kv_heads;
    size_t units = (size_t)c->rows * g->kv_heads;
    size_t u0 = units * ith / nth, u1 = units * (ith + 1) / nth, row = 0;
    float cs[KVK_MAX_HEAD_DIM];
    for (uint32_t i = 0; i < c->n_items; i++) {
        const kvk_item *it = &c->items[i];
        for (uint32_t r = 0; r < it->n_new; r++, row++) {
            size_t first = row * g->kv_heads; /* unit of (row, group 0) */
            if (first + g->kv_heads <= u0 || first >= u1)
                continue;
            if (c->opts.rope != KVK_ROPE_NONE)
                kvk__rope_table(cs, g->head_dim, it->n_kv + r, c->opts.rope_theta);
            for (uint32_t h = 0; h < g->kv_heads; h++) {
                if (first + h < u0 || first + h >= u1)
                    continue;
                for (uint32_t qh = h * G; qh < (h + 1) * G; qh++)
                    ref_row(c, it, row, r, qh, c->opts.rope != KVK_ROPE_NONE ? cs : NULL);
            }
        }
    }
}

int kvk__attn_ref(const kvk_call *c, kvk_pool *pool)
{
    kvk__pool_run(pool, ref_worker, (void *)c);
    return 0;
}
