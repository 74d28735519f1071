/* synth.h — a synthetic model for exercising kvarena end to end, and the reference
 * attention its outputs are checked against.
 *
 * Q, K and V are pure functions of (token id, position, layer, head, dim) through a cheap
 * integer hash, mapped to floats in [-1, 1) with 24 bits of mantissa. They never depend on
 * a seed, a conversation or a tenant: K/V cached at position p by one conversation are
 * exactly what any other conversation with the same token ids would compute, so a prefix
 * hit can be verified, and runs of the demo can share a server's cache across restarts.
 *
 * The reference computes softmax(scale * q.k) v in double precision, on contiguous K/V
 * rounded to the arena's dtype first (what the server stores), causal, with grouped-query
 * heads: q head h reads kv head h / (q_heads / kv_heads), and the model's attention options
 * (kvc_model: RoPE on Q and on K before it is stored, sliding window, logit soft-cap).
 *
 * Used by client/examples/kvdemo.c, the mock server and the black-box tests. Allocation:
 * none, except kvs_ref_row()'s and kvs_check_row()'s scratch, freed before they return. */
#ifndef KVARENA_SYNTH_H
#define KVARENA_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#include "client/kvclient.h"

enum kvs_kind { KVS_Q = 0, KVS_K = 1, KVS_V = 2 };

#define KVS_VOCAB 32000u   /* token ids the token helpers produce are below this */

/* 64-bit mix (splitmix64 finaliser). */
uint64_t kvs_mix(uint64_t x);
/* A token id in [0, KVS_VOCAB) from two keys (e.g. a stream id and an index). */
uint32_t kvs_token(uint64_t a, uint64_t b);

/* Rows for n consecutive positions pos0 .. pos0+n-1 holding tokens[0 .. n): q is
 * [n][q_heads][head_dim], k and v are [n][kv_heads][head_dim], all fp32 as sent to the
 * server (not rounded). Any of q, k, v may be NULL to skip it. */
void kvs_fill_qkv(const kvc_model *m, uint32_t layer, const uint32_t *tokens, uint32_t pos0,
                  uint32_t n, float *q, float *k, float *v);

/* The buffers of an Attend of `rows` rows, fp32: q and o [rows][q_heads][head_dim], k and v
 * [rows][kv_heads][head_dim]; qrow and kvrow the floats of one row of each. kvs_rows_free
 * releases them. */
typedef struct kvs_rows {
    float *q, *k, *v, *o;
    size_t qrow, kvrow;
} kvs_rows;
kvs_rows kvs_rows_alloc(const kvc_model *m, uint32_t rows);
void kvs_rows_free(kvs_rows *r);

/* x rounded to dtype (0 fp32, 1 fp16, 2 bf16, round to nearest even) and back. */
float kvs_round(uint32_t dtype, float x);
/* Rounds x[0 .. n) in place with kvs_round(). */
void kvs_round_vec(uint32_t dtype, float *x, size_t n);

/* Reference attention of one query row over keys 0 .. n_keys-1 (all visible: pass only the
 * keys the row may see; the row is at the position of the last one, for ALiBi's distances;
 * the model's soft-cap and ALiBi applied). q [q_heads][head_dim]; k, v [n_keys][kv_heads][head_dim], already
 * rounded to the arena dtype; o [q_heads][head_dim] written; lse [q_heads] (natural log of
 * the sum of exp of the scaled logits) written if not NULL. scale 0 = 1/sqrt(head_dim).
 * n_keys 0 gives o = 0, lse = -inf. */
void kvs_ref_attn(const kvc_model *m, const float *q, const float *k, const float *v,
                  uint32_t n_keys, float scale, double *o, double *lse);

/* The synthetic model's reference for the row at position pos of a sequence whose tokens
 * are tokens[0 .. pos] (causal: keys 0 .. pos), for one layer: Q, K, V from kvs_fill_qkv,
 * K and V rounded to m->dtype. o [q_heads][head_dim], lse [q_heads] or NULL.
 * Returns 0 or KVC_ERR_IO if scratch memory could not be allocated. */
int kvs_ref_row(const kvc_model *m, uint32_t layer, const uint32_t *tokens, uint32_t pos,
                float scale, double *o, double *lse);

/* Largest |got[i] - ref[i]| over n elements; *ref_max (may be NULL) gets max |ref[i]|. */
double kvs_max_abs_err(const float *got, const double *ref, size_t n, double *ref_max);

/* Allowed error relative to max |ref| for outputs over KV of dtype: 1e-4 for fp32,
 * 2e-3 for fp16 and bf16; 2e-2 for any when KVARENA_ISA=amx (bf16 products). */
double kvs_tolerance(uint32_t dtype);

/* Checks one output row o_row [q_heads][head_dim], layer `layer`'s output at position pos
 * of a sequence of tokens tokens[0 .. pos], against kvs_ref_row() (default scale). The row
 * passes if its largest absolute error is at most kvs_tolerance(m->dtype) times max |ref|
 * (times 1 if the reference row is all zero). *err gets that largest error and *rel the
 * error divided by the same max |ref| (or 1); either may be NULL.
 * Returns 0 if the row passes, 1 if it does not, KVC_ERR_IO if the reference could not be
 * computed (no memory: *err and *rel are then INFINITY); anything but 0 is a failed check. */
int kvs_check_row(const kvc_model *m, uint32_t layer, const uint32_t *tokens, uint32_t pos,
                  const float *o_row, double *err, double *rel);

#endif
