/* kvkernels.h — libkvkernels: paged attention over a KV arena, on the CPU.
 *
 * Usable on its own (no ZeroMQ, no server): give it page data, page tables and queries.
 *
 * PAGE LAYOUT (part of the arena format, KVK_LAYOUT_VERSION): a page holds page_tokens
 * tokens of K and V for every layer. Inside a page, for layer l and KV head h, the K block
 * and then the V block of that head follow each other, each [page_tokens][head_dim] in the
 * KV dtype, token-major:
 *     offset(l, h, kind) = ((l * kv_heads + h) * 2 + kind) * page_tokens * head_dim * esize
 * with kind 0 = K, 1 = V. kvk_page_bytes() rounds the page up to 64 bytes.
 *
 * THREADS: kernels take a kvk_pool (created once, e.g. per worker) or NULL to run on the
 * calling thread. Results do not depend on the thread count beyond fp32 rounding.
 *
 * ERRORS: int functions return 0 or a negative KV_ERR_* code (proto/kverr.h); on error
 * nothing is written. */
#ifndef KVARENA_KVKERNELS_H
#define KVARENA_KVKERNELS_H

#include <stddef.h>
#include <stdint.h>

#define KVK_LAYOUT_VERSION 1
/* Largest head_dim kvk_geom_check accepts. */
#define KVK_MAX_HEAD_DIM 512

typedef enum kvk_dtype { KVK_F32 = 0, KVK_F16 = 1, KVK_BF16 = 2 } kvk_dtype;

typedef struct kvk_geom {
    uint32_t layers;      /* transformer layers stored in a page */
    uint32_t q_heads;     /* query heads, a multiple of kv_heads (GQA/MQA) */
    uint32_t kv_heads;    /* KV heads */
    uint32_t head_dim;    /* elements per head vector */
    uint32_t page_tokens; /* tokens per page */
    kvk_dtype dtype;      /* element type of K and V in pages */
} kvk_geom;

/* Returns 0 if g is a geometry the kernels support, else KV_ERR_INVAL: every count >= 1,
 * q_heads a multiple of kv_heads, head_dim <= KVK_MAX_HEAD_DIM, a known dtype. */
int kvk_geom_check(const kvk_geom *g);
/* Bytes per element of dtype (4, 2, 2). */
size_t kvk_dtype_size(kvk_dtype dtype);
/* Bytes of one page, a multiple of 64. */
size_t kvk_page_bytes(const kvk_geom *g);
/* Byte offset inside a page of the K (kind 0) or V (kind 1) block of (layer, kv_head). */
size_t kvk_block_offset(const kvk_geom *g, uint32_t layer, uint32_t kv_head, int kind);

/* One sequence of a ragged batch. Its KV holds n_kv tokens before the call and n_new after
 * the call's new rows: positions n_kv .. n_kv+n_new-1. pages[] lists the page index of every
 * page holding positions 0 .. n_kv+n_new-1 (ceil((n_kv+n_new)/page_tokens) entries). */
typedef struct kvk_item {
    const uint32_t *pages; /* page table; borrowed for the call */
    uint32_t n_kv;         /* tokens already in the KV before the call */
    uint32_t n_new;        /* new query rows (and new K/V rows for kvk_write_kv) */
} kvk_item;

/* The arena's page data: page p starts at base + p * kvk_page_bytes(g). */
typedef struct kvk_pages {
    uint8_t *base;        /* first byte of page 0 */
    uint32_t n_pages;     /* pages in the arena; every page index must be below */
} kvk_pages;

typedef enum kvk_rope_mode { KVK_ROPE_NONE = 0, KVK_ROPE_HALF = 1, KVK_ROPE_INTERLEAVED = 2 } kvk_rope_mode;

typedef struct kvk_attn_opts {
    float scale;          /* softmax scale; 0 means 1/sqrt(head_dim) */
    int causal;           /* 1: row i of an item sees keys 0 .. n_kv+i (bottom-right aligned) */
    int32_t window_left;  /* >= 0: also hide keys older than pos - window_left; -1: none */
    float softcap;        /* > 0: logits = softcap * tanh(logits / softcap) */
    const float *alibi;   /* [q_heads] slopes or NULL: logit += slope * (key_pos - query_pos) */
    /* The logit of a key is scale * q.k, then soft-capped, then ALiBi added; the softmax and
     * the LSE are over these logits. RoPE needs an even head_dim. */
    kvk_rope_mode rope;   /* applied to Q in kvk_attn and to K in kvk_write_kv */
    float rope_theta;     /* 0 means 10000 */
} kvk_attn_opts;

/* Options: scale 0, causal 1, no window, no softcap, no ALiBi, no RoPE. */
kvk_attn_opts kvk_attn_opts_default(void);

/* The ALiBi slope of query head h of n_heads (BLOOM, MPT; the max_bias form of ggml): with
 * n the largest power of two <= n_heads, head h < n gets 2^(-max_bias (h + 1) / n), the
 * others 2^(-max_bias (2 (h - n) + 1) / (2 n)). max_bias 8 gives the published slopes
 * (1/2, 1/4, ..., 1/256 for 8 heads). kvk_alibi_slopes: all n_heads into slopes[n_heads]. */
float kvk_alibi_slope(uint32_t h, uint32_t n_heads, float max_bias);
void kvk_alibi_slopes(uint32_t n_heads, float max_bias, float *slopes);

/* Writes the new K and V rows of one layer into the pages: for item i, rows
 * n_kv .. n_kv+n_new-1. k and v are fp32 [sum n_new][kv_heads][head_dim], items in order;
 * converted to the page dtype (round to nearest even). RoPE on K per opts (may be NULL). */
int kvk_write_kv(const kvk_geom *g, const kvk_pages *pg, uint32_t layer,
                 const kvk_item *items, uint32_t n_items,
                 const float *k, const float *v, const kvk_attn_opts *opts);

/* Copies the K and V of tokens 0 .. n-1 of one layer, every KV head, from page src to page
 * dst (the same slots): a copy-on-write of a shared partial page done a layer at a time, by
 * whoever runs that layer. Returns 0, or KV_ERR_INVAL (geometry, layer, page out of range,
 * src == dst, n > page_tokens). */
int kvk_copy_tokens(const kvk_geom *g, const kvk_pages *pg, uint32_t layer, uint32_t src,
                    uint32_t dst, uint32_t n);

typedef struct kvk_pool kvk_pool;

/* Paged attention of one layer for a ragged batch (prefill and decode items together).
 * Errors: KV_ERR_INVAL (bad geometry, layer, page index, options or NULL tensors),
 * KV_ERR_NOMEM (scratch memory could not be allocated); on error o and lse are untouched.
 * q: fp32 [sum n_new][q_heads][head_dim]; o: same shape, written; lse: [sum n_new][q_heads]
 * natural-log sum-exp of the scaled logits, or NULL. Keys are positions 0 .. n_kv+n_new-1
 * (the new rows must already be written). A row that sees no key gets o = 0, lse = -inf.
 * Items of a few new rows whose page tables begin with the same pages (a prefix cache hit,
 * forks: at least 64 tokens of whole pages before their new rows) are found by the SIMD
 * paths, and those pages are read once for each group of them (a cascade: shared part, own
 * part, merged; a group holds 64 query vectors at most, and each row's window must see 64
 * keys or more of the prefix); put such decode rows in one call. */
int kvk_attn(const kvk_geom *g, const kvk_pages *pg, uint32_t layer,
             const kvk_item *items, uint32_t n_items, const float *q, float *o,
             float *lse, const kvk_attn_opts *opts, kvk_pool *pool);

/* Merges two partial results over disjoint key sets (cascade): rows of (o_a, lse_a) and
 * (o_b, lse_b) for n rows of dim elements; writes o and lse (may alias a). */
void kvk_merge_states(uint32_t n, uint32_t dim, const float *o_a, const float *lse_a,
                      const float *o_b, const float *lse_b, float *o, float *lse);

/* Thread pool. kvk_pool_create returns NULL on failure (errno set); n_threads >= 1 and
 * counts the calling thread. kvk_pool_destroy joins the threads and sets *pool to NULL. */
kvk_pool *kvk_pool_create(int n_threads);
void kvk_pool_destroy(kvk_pool **pool);
int kvk_pool_threads(const kvk_pool *pool);

/* The instruction set in use: "scalar", "avx2", "avx512" or "amx". Chosen once from cpuid
 * (never "amx"), or forced by KVARENA_ISA=scalar|avx2|avx512|amx in the environment.
 * "amx" (AMX-BF16 CPUs) computes tiles of 16 query vectors or more per KV head (prefill;
 * decode of GQA groups of 16+ heads; decode rows over a prefix of pages they share, 16 query
 * vectors or more together) with Q, K, V and probabilities rounded to bf16: outputs
 * within 2e-2 of fp64 attention for logits of moderate size (the error grows with |logit|:
 * 2-4% with logits of +-40), against 1e-4 on the others; it loads and releases the AMX tile
 * state of every thread it runs on, the caller's included. */
const char *kvk_isa_name(void);
/* Forces the instruction set for the whole process (tests, benchmarks): a name as above.
 * Returns 0, or KV_ERR_INVAL if the name is unknown or the CPU lacks it. Not to be
 * called while another thread is inside kvk_attn. */
int kvk_isa_set(const char *name);

/* fp16 / bf16 conversions (round to nearest even), exposed for tests and clients. */
uint16_t kvk_f32_to_f16(float f);
float kvk_f16_to_f32(uint16_t h);
uint16_t kvk_f32_to_bf16(float f);
float kvk_bf16_to_f32(uint16_t h);

#endif
