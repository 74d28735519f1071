/* attn_oracle — the harness of libkvkernels' unit tests (tests/unit/test_kernels.c): an
 * attention scenario (ao_case), the paged K/V it runs on (ao_arena), a naive fp64 attention
 * as the oracle and the comparison of kernel outputs against it.
 *
 * The oracle attends over contiguous K/V that it reads back from the pages through the layout
 * formula of kvkernels.h (ao_page_elem, not library code), so it sees exactly the
 * dtype-rounded values the kernels see and the comparison measures only the attention
 * arithmetic: max |o - o_ref| <= AO_TOL * max |o_ref| (AO_TOL_BF16 for amx). ao_run_case runs
 * a scenario on every instruction set this CPU supports (scalar reference, AVX2, AVX-512,
 * AMX), with and without a thread pool, and poisons the outputs with NaN first so an unwritten row fails.
 *
 * Failures are cmocka failures (assert_*, fail_msg): call these only from inside a cmocka
 * test. All random data comes from one deterministic stream (ao_rng_u64), shared with the
 * tests that draw from it, so a run is reproducible. Single-threaded. */
#ifndef KVARENA_TESTS_ATTN_ORACLE_H
#define KVARENA_TESTS_ATTN_ORACLE_H

#include <stddef.h>
#include <stdint.h>

#include "kernels/kvkernels.h"

#define AO_TOL 1e-4       /* relative tolerance of paths that compute in fp32 */
#define AO_TOL_BF16 2e-2  /* of a path rounding Q, K, V and probabilities to bf16 (amx) */
#define AO_MAX_ITEMS 8    /* items a scenario may have */

/* One attention scenario: a geometry and a ragged batch of items. */
typedef struct ao_case {
    uint32_t q_heads, kv_heads, head_dim, page_tokens;
    kvk_dtype dtype;
    uint32_t n_items;
    uint32_t n_kv[AO_MAX_ITEMS], n_new[AO_MAX_ITEMS];
    /* item i's first share_pages[i] table entries are those of item share_of[i] (< i): a
     * shared prefix, as a prefix cache or a fork leaves it (0: none) */
    uint32_t share_of[AO_MAX_ITEMS], share_pages[AO_MAX_ITEMS];
    kvk_attn_opts opts;     /* alibi: filled in by ao_run_case when use_alibi */
    int use_alibi;
    float qk_gain;          /* scales Q so logits span a useful range (softcap, ALiBi); 0 = 1 */
} ao_case;

/* The data of one scenario, in layer 1 of two-layer pages (layer 0 and every page no item
 * uses hold random bytes the kernels must never read). All pointers are owned by the arena
 * and released by ao_arena_free. */
typedef struct ao_arena {
    kvk_geom g;                         /* 2 layers, the case's heads, dim, page and dtype */
    kvk_pages pg;                       /* every item's pages, shuffled together */
    uint32_t *tables[AO_MAX_ITEMS];     /* page table of item i (items[i].pages) */
    kvk_item items[AO_MAX_ITEMS];       /* the case's items, as kvk_attn takes them */
    uint32_t rows;                      /* sum of n_new: the call's query rows */
    float *q, *k, *v;                   /* the call's inputs: [rows][heads][head_dim] */
    float alibi[64];                    /* ALiBi-like slopes of q heads 0..63 */
} ao_arena;

/* The next number of the shared xorshift64 stream. */
uint64_t ao_rng_u64(void);

/* Builds the arena of tc into *a (its old contents are not freed): the pages of all items
 * come from one shuffled pool, so no item's pages are contiguous; table entries before an
 * item's sliding window (keys no new row can see) all point to one page that is never
 * written or read, so a context of millions of tokens needs pages only for its window.
 * Then writes each item's old K/V (the visible part of 0 .. n_kv-1) and the call's new rows
 * with kvk_write_kv and tc->opts, as a server would over two steps, and fills q (scaled by
 * qk_gain), k and v. The caller releases the arena with ao_arena_free. */
void ao_arena_init(ao_arena *a, const ao_case *tc);

/* Frees what ao_arena_init allocated (not *a itself) and zeroes *a, so a second call is
 * harmless. */
void ao_arena_free(ao_arena *a);

/* Element d of head h of token pos of item i in layer 1, kind 0 for K and 1 for V, read per
 * the layout formula of kvkernels.h and converted from the page dtype. */
double ao_page_elem(const ao_arena *a, uint32_t i, uint32_t pos, uint32_t h, int kind,
                    uint32_t d);

/* RoPE in fp64 on the D-element vector x (D even) at position pos, in place. */
void ao_rope(double *x, uint32_t D, uint32_t pos, kvk_rope_mode mode, double theta);

/* Fails the test (fail_msg, with what in the message) unless
 * max |o - o_ref| <= tol * max |o_ref| over n_o outputs and, when lse is not NULL,
 * max |lse - lse_ref| <= tol * max(1, max finite |lse_ref|) over n_lse values, where an
 * infinite lse_ref must be matched exactly. A NaN anywhere in o or lse fails. */
void ao_compare(const float *o, const double *o_ref, size_t n_o, const float *lse,
                const double *lse_ref, size_t n_lse, double tol, const char *what);

/* Builds tc's arena, computes the oracle once, then runs kvk_attn on every ISA the CPU has,
 * each with pool NULL and with a 2-thread pool, and compares o and lse with ao_compare.
 * Restores the best ISA and frees everything it allocated. */
void ao_run_case(const ao_case *tc);

/* A scenario with no items and default options (kvk_attn_opts_default). */
ao_case ao_case_base(uint32_t q_heads, uint32_t kv_heads, uint32_t head_dim,
                     uint32_t page_tokens, kvk_dtype dtype);

/* Appends an item with n_kv cached and n_new new tokens; at most AO_MAX_ITEMS. */
void ao_case_add_item(ao_case *tc, uint32_t n_kv, uint32_t n_new);

/* Appends an item as ao_case_add_item does whose first `pages` pages are item src's (both
 * items must hold them whole before their new rows, and src's window must start no later
 * than the new item's: src writes the keys both see). */
void ao_case_add_sharing(ao_case *tc, uint32_t n_kv, uint32_t n_new, uint32_t src,
                         uint32_t pages);

#endif
