/* arena_fixture.h — a kvarena arena in private memory for the unit tests of kvserver's page
 * allocator (pages.c) and sequences (seq.c).
 *
 * The region comes from arena_mem_new (laid out as kvserver/shm.c lays out the shared one,
 * in private memory), so a test needs no /dev/shm and no server.
 * Each test gets a fresh arena from the cmocka setup (fx_setup) and loses it in the teardown
 * (fx_teardown), so a failing assert leaks nothing. The size of the arena comes from the
 * test's prestate (an fx_cfg).
 *
 * fx_check() is what every test calls after each mutating step: kvs_pages_check() and the
 * accounting identity n_free + in use + cached == n, recounted from the descriptors. */
#ifndef KVARENA_ARENA_FIXTURE_H
#define KVARENA_ARENA_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sodium.h>

#include "kernels/kvkernels.h"
#include "kvserver/pages.h"
#include "tests/unit/arena_mem.h"
#include "kvserver/seq.h"
#include "proto/arena.h"
#include "proto/kverr.h"

/* Geometry: small but real (kvk_geom_check accepts it): 2 layers, GQA 4:2, 64-dim heads,
 * 4 tokens per page, fp32 -> 8 KiB pages. */
#define FX_LAYERS 2u
#define FX_P 4u

typedef struct fx_cfg {
    uint32_t n_pages;
    uint32_t max_seqs;
    uint32_t n_tenants;
} fx_cfg;

typedef struct fx {
    kva_header *h;      /* the region, h->total_bytes long */
    kvs_pages pg;
    kvs_seqs ss;
    uint8_t salt[KVS_MAX_TENANTS][KVA_HASH_BYTES];
} fx;

static inline int fx_setup(void **state)
{
    const fx_cfg *cfg = *state;
    fx *f = calloc(1, sizeof(*f));
    if (!f)
        return -1;
    f->h = arena_mem_new((kvk_geom){ FX_LAYERS, 4, 2, 64, FX_P, KVK_F32 }, cfg->n_pages,
                         cfg->max_seqs);
    if (!f->h || kva_header_check(f->h, f->h->total_bytes, NULL, 0) != 0)
        goto fail;
    for (uint32_t t = 0; t < KVS_MAX_TENANTS; t++)
        for (uint32_t i = 0; i < KVA_HASH_BYTES; i++)
            f->salt[t][i] = (uint8_t)(0x5a ^ (t * 31 + i));
    if (kvs_pages_init(&f->pg, f->h, cfg->n_tenants) != 0)
        goto fail;
    if (kvs_seqs_init(&f->ss, f->h, &f->pg, (const uint8_t (*)[KVA_HASH_BYTES])f->salt) != 0) {
        kvs_pages_free(&f->pg);
        goto fail;
    }
    *state = f;
    return 0;
fail:
    free(f->h);
    free(f);
    return -1;
}

static inline int fx_teardown(void **state)
{
    fx *f = *state;
    kvs_seqs_free(&f->ss);
    kvs_pages_free(&f->pg);
    free(f->h);
    free(f);
    return 0;
}

#define FX_TEST(fn, cfg) cmocka_unit_test_prestate_setup_teardown(fn, fx_setup, fx_teardown, (void *)(cfg))

/* Pages neither free nor cached, recounted from the descriptors. */
static inline uint32_t fx_in_use(const fx *f)
{
    uint32_t n = 0;
    for (uint32_t p = 0; p < f->pg.n; p++) {
        const kva_page *d = kvs_page(&f->pg, p);
        n += d->state != KVA_PAGE_FREE && !(d->state == KVA_PAGE_COMMITTED && d->ref == 0);
    }
    return n;
}

/* The allocator's own invariants (kvs_pages_check: counts against page states, the free
 * stack, the LRU, the index, parents and children). */
static inline void fx_check(const fx *f)
{
    assert_int_equal(kvs_pages_check(&f->pg), 0);
}

/* tokens[i] = base + i */
static inline void fx_tokens(uint32_t *tokens, uint32_t n, uint32_t base)
{
    for (uint32_t i = 0; i < n; i++)
        tokens[i] = base + i;
}

/* Runs the layers of a sequence's pending tokens (what the Attends of one extend do). */
static inline void fx_layers_done(fx *f, uint64_t id, uint32_t tenant)
{
    kva_seq *rec = kvs_seq_find(&f->ss, id, tenant);
    assert_non_null(rec);
    assert_true(rec->pending > 0);
    for (uint32_t l = 0; l < f->h->layers; l++) {
        assert_int_equal(rec->next_layer, l);
        kvs_seq_layer_done(&f->ss, rec);
        fx_check(f);
    }
    assert_int_equal(rec->pending, 0);
}

/* Opens a sequence of tenant, extends it with tokens (both as request 0) and completes every
 * layer; returns its id, the cached-prefix length in *cached. */
static inline uint64_t fx_seq_fill(fx *f, uint32_t tenant, const uint32_t *tokens, uint32_t n,
                                   uint32_t *cached)
{
    uint64_t id = 0;
    uint32_t c = UINT32_MAX;
    assert_int_equal(kvs_seq_open(&f->ss, tenant, 0, &id), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, id, tenant, 0, tokens, n, &c), 0);
    fx_check(f);
    fx_layers_done(f, id, tenant);
    if (cached)
        *cached = c;
    return id;
}

/* The page table of a live sequence (borrowed). */
static inline const kvs_seq *fx_priv(const fx *f, uint64_t id, uint32_t tenant)
{
    kva_seq *rec = kvs_seq_find(&f->ss, id, tenant);
    assert_non_null(rec);
    return kvs_seq_priv(&f->ss, rec);
}

static inline uint8_t *fx_page_data(const fx *f, uint32_t p)
{
    return kva_data(f->h) + (size_t)p * f->h->page_bytes;
}

#endif
