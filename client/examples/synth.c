/* synth.c — the synthetic model and its reference attention (see synth.h). */
#include "client/examples/synth.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kvkernels.h"

uint64_t kvs_mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

uint32_t kvs_token(uint64_t a, uint64_t b)
{
    return (uint32_t)(kvs_mix(kvs_mix(a) ^ b) % KVS_VOCAB);
}

/* Key of the (token, pos) part: shared by every element of one row. */
static uint64_t row_key(uint32_t token, uint32_t pos)
{
    return kvs_mix(((uint64_t)token << 32) | pos);
}

/* Key of the (kind, layer, head) part. */
static uint64_t head_key(enum kvs_kind kind, uint32_t layer, uint32_t head)
{
    return kvs_mix(((uint64_t)kind << 56) ^ ((uint64_t)layer << 32) ^ head);
}

static float value_of(uint64_t row, uint64_t head, uint32_t dim)
{
    uint64_t h = kvs_mix(row ^ head ^ ((uint64_t)dim * 0xD6E8FEB86659FD93ull));
    /* 24 random bits -> [-1, 1) in steps of 2^-23: exact in fp32. */
    return (float)(h >> 40) * (1.0f / 8388608.0f) - 1.0f;
}

static void fill_rows(enum kvs_kind kind, uint32_t heads, uint32_t head_dim, uint32_t layer,
                      const uint32_t *tokens, uint32_t pos0, uint32_t n, float *out)
{
    for (uint32_t i = 0; i < n; i++) {
        uint64_t row = row_key(tokens[i], pos0 + i);
        for (uint32_t h = 0; h < heads; h++) {
            uint64_t hk = head_key(kind, layer, h);
            float *x = out + ((size_t)i * heads + h) * head_dim;
            for (uint32_t d = 0; d < head_dim; d++)
                x[d] = value_of(row, hk, d);
        }
    }
}

kvs_rows kvs_rows_alloc(const kvc_model *m, uint32_t rows)
{
    kvs_rows r = { .qrow = (size_t)m->q_heads * m->head_dim,
                   .kvrow = (size_t)m->kv_heads * m->head_dim };
    r.q = malloc(sizeof(float) * (r.qrow * rows + 1));
    r.k = malloc(sizeof(float) * (r.kvrow * rows + 1));
    r.v = malloc(sizeof(float) * (r.kvrow * rows + 1));
    r.o = malloc(sizeof(float) * (r.qrow * rows + 1));
    return r;
}

void kvs_rows_free(kvs_rows *r)
{
    free(r->q);
    free(r->k);
    free(r->v);
    free(r->o);
    *r = (kvs_rows){ 0 };
}

void kvs_fill_qkv(const kvc_model *m, uint32_t layer, const uint32_t *tokens, uint32_t pos0,
                  uint32_t n, float *q, float *k, float *v)
{
    if (q)
        fill_rows(KVS_Q, m->q_heads, m->head_dim, layer, tokens, pos0, n, q);
    if (k)
        fill_rows(KVS_K, m->kv_heads, m->head_dim, layer, tokens, pos0, n, k);
    if (v)
        fill_rows(KVS_V, m->kv_heads, m->head_dim, layer, tokens, pos0, n, v);
}

float kvs_round(uint32_t dtype, float x)
{
    switch (dtype) {
    case KVK_F16:
        return kvk_f16_to_f32(kvk_f32_to_f16(x));
    case KVK_BF16:
        return kvk_bf16_to_f32(kvk_f32_to_bf16(x));
    default:
        return x;
    }
}

void kvs_round_vec(uint32_t dtype, float *x, size_t n)
{
    if (dtype == KVK_F32)
        return;
    for (size_t i = 0; i < n; i++)
        x[i] = kvs_round(dtype, x[i]);
}

/* One scaled logit, soft-capped if the model says so, plus bias (ALiBi's, or 0). */
static double logit(const kvc_model *m, const float *q, const float *k, double scale,
                    double bias)
{
    double dot = 0;
    for (uint32_t d = 0; d < m->head_dim; d++)
        dot += (double)q[d] * (double)k[d];
    dot *= scale;
    return (m->softcap > 0 ? m->softcap * tanh(dot / m->softcap) : dot) + bias;
}

void kvs_ref_attn(const kvc_model *m, const float *q, const float *k, const float *v,
                  uint32_t n_keys, float scale, double *o, double *lse)
{
    const uint32_t D = m->head_dim, group = m->q_heads / m->kv_heads;
    const double s = scale > 0.0f ? (double)scale : 1.0 / sqrt((double)D);
    for (uint32_t h = 0; h < m->q_heads; h++) {
        const float *qh = q + (size_t)h * D;
        const uint32_t kvh = h / group;
        /* ALiBi: slope * (key position - the row's, the last key's) */
        const double sl = m->alibi_max_bias > 0
                              ? kvk_alibi_slope(h, m->q_heads, m->alibi_max_bias) : 0.0;
        const double last = (double)n_keys - 1;
        double *oh = o + (size_t)h * D;
        memset(oh, 0, D * sizeof *oh);
        /* Two passes: the max logit first, so exp never overflows. */
        double mx = -INFINITY;
        for (uint32_t j = 0; j < n_keys; j++) {
            const float *kj = k + ((size_t)j * m->kv_heads + kvh) * D;
            double l = logit(m, qh, kj, s, sl * ((double)j - last));
            if (l > mx)
                mx = l;
        }
        double sum = 0;
        for (uint32_t j = 0; j < n_keys; j++) {
            const float *kj = k + ((size_t)j * m->kv_heads + kvh) * D;
            const float *vj = v + ((size_t)j * m->kv_heads + kvh) * D;
            double p = exp(logit(m, qh, kj, s, sl * ((double)j - last)) - mx);
            sum += p;
            for (uint32_t d = 0; d < D; d++)
                oh[d] += p * (double)vj[d];
        }
        if (n_keys > 0)
            for (uint32_t d = 0; d < D; d++)
                oh[d] /= sum;
        if (lse)
            lse[h] = n_keys > 0 ? mx + log(sum) : -INFINITY;
    }
}

/* RoPE of one head vector at position pos, in double (the server's kernels rotate in fp32). */
static void rope(const kvc_model *m, float *x, uint32_t pos)
{
    const uint32_t D = m->head_dim, half = D / 2;
    double theta = m->rope_theta > 0 ? m->rope_theta : 10000.0;
    for (uint32_t i = 0; i < half; i++) {
        double a = pos * pow(theta, -2.0 * i / D), c = cos(a), sn = sin(a);
        float *x0 = m->rope == 1 ? &x[i] : &x[2 * i], *x1 = m->rope == 1 ? &x[i + half] : &x[2 * i + 1];
        double u = *x0, w = *x1;
        *x0 = (float)(u * c - w * sn);
        *x1 = (float)(u * sn + w * c);
    }
}

int kvs_ref_row(const kvc_model *m, uint32_t layer, const uint32_t *tokens, uint32_t pos,
                float scale, double *o, double *lse)
{
    const size_t n = (size_t)pos + 1, kv_row = (size_t)m->kv_heads * m->head_dim;
    float *q = malloc((size_t)m->q_heads * m->head_dim * sizeof *q);
    float *k = malloc(n * kv_row * sizeof *k);
    float *v = malloc(n * kv_row * sizeof *v);
    if (!q || !k || !v) {
        free(q);
        free(k);
        free(v);
        return KVC_ERR_IO;
    }
    kvs_fill_qkv(m, layer, tokens + pos, pos, 1, q, NULL, NULL);
    kvs_fill_qkv(m, layer, tokens, 0, (uint32_t)n, NULL, k, v);
    if (m->rope) { /* Q at pos, each K at its own position, before K is stored (rounded) */
        for (uint32_t h = 0; h < m->q_heads; h++)
            rope(m, q + (size_t)h * m->head_dim, pos);
        for (size_t j = 0; j < n; j++)
            for (uint32_t h = 0; h < m->kv_heads; h++)
                rope(m, k + j * kv_row + (size_t)h * m->head_dim, (uint32_t)j);
    }
    kvs_round_vec(m->dtype, k, n * kv_row);
    kvs_round_vec(m->dtype, v, n * kv_row);
    /* a sliding window hides keys older than pos - window */
    size_t first = m->window && pos > m->window ? pos - m->window : 0;
    kvs_ref_attn(m, q, k + first * kv_row, v + first * kv_row, (uint32_t)(n - first), scale, o, lse);
    free(q);
    free(k);
    free(v);
    return 0;
}

double kvs_max_abs_err(const float *got, const double *ref, size_t n, double *ref_max)
{
    double err = 0, mx = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)got[i] - ref[i]);
        if (!(e <= err))      /* also catches NaN in got */
            err = isnan(e) ? INFINITY : e;
        if (fabs(ref[i]) > mx)
            mx = fabs(ref[i]);
    }
    if (ref_max)
        *ref_max = mx;
    return err;
}

double kvs_tolerance(uint32_t dtype)
{
    const char *isa = getenv("KVARENA_ISA"); /* as the workers have it: the same environment */
    if (isa && !strcmp(isa, "amx"))
        return 2e-2; /* bf16 tile products (kernels/attn_amx.c) */
    return dtype == KVK_F32 ? 1e-4 : 2e-3;
}

int kvs_check_row(const kvc_model *m, uint32_t layer, const uint32_t *tokens, uint32_t pos,
                  const float *o_row, double *err, double *rel)
{
    const size_t n = (size_t)m->q_heads * m->head_dim;
    double *ref = malloc(n * sizeof *ref);
    if (!ref || kvs_ref_row(m, layer, tokens, pos, 0.0f, ref, NULL) != 0) {
        free(ref);
        if (err)
            *err = INFINITY;
        if (rel)
            *rel = INFINITY;
        return KVC_ERR_IO;
    }
    double ref_max = 0, e = kvs_max_abs_err(o_row, ref, n, &ref_max);
    free(ref);
    /* relative to max |ref|; an all-zero reference row makes the tolerance absolute */
    const double scale = ref_max > 0 ? ref_max : 1.0;
    if (err)
        *err = e;
    if (rel)
        *rel = e / scale;
    return e <= kvs_tolerance(m->dtype) * scale ? 0 : 1;
}
