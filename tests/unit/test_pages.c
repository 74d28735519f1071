/* test_pages.c — unit tests of kvserver's page allocator (pages.c): allocation until full,
 * the free list and generations, kvs_pages_can_alloc against real allocation, the chained
 * block hash and tenant scoping, LRU order, eviction of leaves only, pinned pages.
 *
 * Every test runs on a fresh arena in private memory (arena_fixture.h) and checks every
 * invariant of pages.h plus the accounting identity after each mutating step (fx_check).
 * Numbers are exact: page counts, eviction counters, which prefixes still hit. */
#include "arena_fixture.h"

#define NONE KVA_NO_PAGE

static const fx_cfg cfg8 = { .n_pages = 8, .max_seqs = 8, .n_tenants = 2 };
static const fx_cfg cfg6 = { .n_pages = 6, .max_seqs = 8, .n_tenants = 1 };
static const fx_cfg cfg5 = { .n_pages = 5, .max_seqs = 8, .n_tenants = 1 };

/* Allocates a page under parent, fills it with FX_P tokens base.., and commits it. */
static uint32_t page_committed(fx *f, uint32_t t, uint32_t parent, uint32_t base)
{
    int err = 0;
    uint32_t p = kvs_page_alloc(&f->pg, t, parent, &err);
    assert_int_not_equal(p, NONE);
    kva_page *d = kvs_page(&f->pg, p);
    fx_tokens(d->tokens, FX_P, base);
    d->ntok = d->nvalid = FX_P;
    d->state = KVA_PAGE_OPEN;
    assert_int_equal(kvs_page_commit(&f->pg, p, f->salt[t]), p);
    assert_int_equal(d->state, KVA_PAGE_COMMITTED);
    fx_check(f);
    return p;
}

/* Tokens cached for tenant t of the FX_P tokens base.. followed by one more token. */
static uint32_t match1(fx *f, uint32_t t, uint32_t base)
{
    uint32_t tok[FX_P + 1];
    fx_tokens(tok, FX_P + 1, base);
    return kvs_prefix_match(&f->ss, t, tok, FX_P + 1, NULL);
}

/* ---- allocator ---- */

static void test_alloc_until_full(void **state)
{
    fx *f = *state;
    fx_check(f);
    assert_int_equal(f->pg.n_free, 8);
    assert_int_equal(f->pg.n_cached, 0);
    /* the check sees a free stack naming a page twice */
    uint32_t saved = f->pg.free_stack[0];
    f->pg.free_stack[0] = f->pg.free_stack[1];
    assert_int_equal(kvs_pages_check(&f->pg), KV_ERR_INTERNAL);
    f->pg.free_stack[0] = saved;
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 8, 0), 0);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 9, 0), KV_ERR_NOMEM);

    uint32_t pages[8];
    uint8_t seen[8] = { 0 };
    uint64_t tick = f->h->tick;
    for (uint32_t i = 0; i < 8; i++) {
        assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 1, 0), 0);
        assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 8 - i, 0), 0);
        assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 9 - i, 0), KV_ERR_NOMEM);
        int err = 0;
        uint32_t p = kvs_page_alloc(&f->pg, 0, NONE, &err);
        assert_true(p < 8);
        assert_int_equal(seen[p], 0);
        seen[p] = 1;
        pages[i] = p;
        const kva_page *d = kvs_page(&f->pg, p);
        assert_int_equal(d->state, KVA_PAGE_WRITING);
        assert_int_equal(d->ref, 1);
        assert_int_equal(d->tenant, 0);
        assert_int_equal(d->ntok, 0);
        assert_int_equal(d->parent, NONE);
        assert_int_equal(d->gen, 1);
        assert_true(d->tick > tick);
        tick = d->tick;
        assert_int_equal(f->pg.n_free, 7 - i);
        assert_int_equal(f->pg.tenant[0].pages, i + 1);
        assert_int_equal(fx_in_use(f), i + 1);
        fx_check(f);
    }
    /* nothing free, nothing evictable */
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 1, 0), KV_ERR_NOMEM);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 1, 1, 0), KV_ERR_NOMEM);
    int err = 0;
    assert_int_equal(kvs_page_alloc(&f->pg, 0, NONE, &err), NONE);
    assert_int_equal(err, KV_ERR_NOMEM);
    err = 0;
    assert_int_equal(kvs_page_alloc(&f->pg, 1, NONE, &err), NONE);
    assert_int_equal(err, KV_ERR_NOMEM);
    assert_int_equal(f->pg.n_free, 0);
    assert_int_equal(f->pg.evictions, 0);
    fx_check(f);

    /* free list reuse: the page freed last is the next one allocated, one generation on */
    kvs_page_unref(&f->pg, pages[3]);
    fx_check(f);
    assert_int_equal(kvs_page(&f->pg, pages[3])->state, KVA_PAGE_FREE);
    assert_int_equal(f->pg.n_free, 1);
    assert_int_equal(f->pg.tenant[0].pages, 7);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 1, 1, 0), 0);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 1, 2, 0), KV_ERR_NOMEM);
    uint32_t p = kvs_page_alloc(&f->pg, 1, NONE, &err);
    assert_int_equal(p, pages[3]);
    assert_int_equal(kvs_page(&f->pg, p)->gen, 2);
    assert_int_equal(kvs_page(&f->pg, p)->tenant, 1);
    assert_int_equal(f->pg.tenant[0].pages, 7);
    assert_int_equal(f->pg.tenant[1].pages, 1);
    fx_check(f);
    kvs_page_unref(&f->pg, p);
    p = kvs_page_alloc(&f->pg, 0, NONE, &err);
    assert_int_equal(p, pages[3]);
    assert_int_equal(kvs_page(&f->pg, p)->gen, 3);
    fx_check(f);

    /* a parent link counts a child; freeing the child gives it back */
    kvs_page_unref(&f->pg, pages[7]);
    uint32_t c = kvs_page_alloc(&f->pg, 0, pages[0], &err);
    assert_int_equal(c, pages[7]);
    assert_int_equal(kvs_page(&f->pg, c)->parent, pages[0]);
    assert_int_equal(kvs_page(&f->pg, pages[0])->children, 1);
    fx_check(f);
    kvs_page_unref(&f->pg, c);
    assert_int_equal(kvs_page(&f->pg, pages[0])->children, 0);
    fx_check(f);

    for (uint32_t i = 0; i < 7; i++) {
        kvs_page_unref(&f->pg, pages[i]);
        fx_check(f);
    }
    assert_int_equal(f->pg.n_free, 8);
    assert_int_equal(f->pg.tenant[0].pages, 0);
    assert_int_equal(f->pg.tenant[1].pages, 0);
    assert_int_equal(f->pg.evictions, 0);
}

/* Cached pages count as allocatable; pages the caller is about to reference do not. */
static void test_can_alloc_agrees(void **state)
{
    fx *f = *state;
    uint32_t cached[3], held[3];
    for (uint32_t i = 0; i < 3; i++)
        cached[i] = page_committed(f, 0, NONE, 100 * (i + 1));
    for (uint32_t i = 0; i < 3; i++) {
        kvs_page_unref(&f->pg, cached[i]);
        fx_check(f);
    }
    assert_int_equal(f->pg.n_cached, 3);
    assert_int_equal(f->pg.tenant[0].cached, 3);
    int err = 0;
    for (uint32_t i = 0; i < 3; i++) {
        held[i] = kvs_page_alloc(&f->pg, 0, NONE, &err);
        assert_int_not_equal(held[i], NONE);
        fx_check(f);
    }
    assert_int_equal(f->pg.n_free, 0);
    assert_int_equal(f->pg.evictions, 0);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 3, 0), 0);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 4, 0), KV_ERR_NOMEM);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 3, 1), KV_ERR_NOMEM);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 2, 1), 0);

    /* can_alloc(1) says yes exactly as often as an allocation succeeds */
    uint32_t n = 0;
    while (kvs_pages_can_alloc(&f->pg, 0, 1, 0) == 0) {
        assert_true(n < 3);
        uint32_t p = kvs_page_alloc(&f->pg, 0, NONE, &err);
        assert_int_not_equal(p, NONE);
        assert_int_equal(p, cached[0 + n]); /* closed first = least recently used */
        assert_int_equal(f->pg.evictions, n + 1);
        n++;
        fx_check(f);
    }
    assert_int_equal(n, 3);
    assert_int_equal(f->pg.n_cached, 0);
    assert_int_equal(kvs_page_alloc(&f->pg, 0, NONE, &err), NONE);
    assert_int_equal(err, KV_ERR_NOMEM);
    fx_check(f);
    for (uint32_t i = 0; i < 3; i++) {
        kvs_page_unref(&f->pg, held[i]);
        kvs_page_unref(&f->pg, cached[i]); /* now WRITING pages of their new owner */
        fx_check(f);
    }
    assert_int_equal(f->pg.n_free, 6);
}

/* ---- block hash chain ---- */

static void test_block_hash(void **state)
{
    fx *f = *state;
    uint32_t tok[FX_P];
    uint8_t h0[KVA_HASH_BYTES], h[KVA_HASH_BYTES], zeros[KVA_HASH_BYTES] = { 0 };
    fx_tokens(tok, FX_P, 7);
    kvs_block_hash(NULL, f->salt[0], tok, FX_P, h0);
    kvs_block_hash(NULL, f->salt[0], tok, FX_P, h);
    assert_memory_equal(h, h0, KVA_HASH_BYTES);           /* deterministic */
    kvs_block_hash(zeros, f->salt[0], tok, FX_P, h);
    assert_memory_equal(h, h0, KVA_HASH_BYTES);           /* no parent = zero parent */
    assert_memory_not_equal(h0, zeros, KVA_HASH_BYTES);

    uint8_t parent[KVA_HASH_BYTES];
    memcpy(parent, h0, sizeof(parent));
    kvs_block_hash(parent, f->salt[0], tok, FX_P, h);
    assert_memory_not_equal(h, h0, KVA_HASH_BYTES);       /* depends on the parent */
    uint8_t h1[KVA_HASH_BYTES];
    memcpy(h1, h, sizeof(h1));
    parent[KVA_HASH_BYTES - 1] ^= 1;
    kvs_block_hash(parent, f->salt[0], tok, FX_P, h);
    assert_memory_not_equal(h, h1, KVA_HASH_BYTES);       /* on every byte of it */

    kvs_block_hash(NULL, f->salt[1], tok, FX_P, h);
    assert_memory_not_equal(h, h0, KVA_HASH_BYTES);       /* on the salt */
    for (uint32_t i = 0; i < FX_P; i++) {                 /* on every token */
        uint32_t t2[FX_P];
        memcpy(t2, tok, sizeof(t2));
        t2[i] ^= 1u << 24;                                /* a high byte: all 4 bytes count */
        kvs_block_hash(NULL, f->salt[0], t2, FX_P, h);
        assert_memory_not_equal(h, h0, KVA_HASH_BYTES);
    }
    kvs_block_hash(NULL, f->salt[0], tok, FX_P - 1, h);
    assert_memory_not_equal(h, h0, KVA_HASH_BYTES);       /* on the count */

    /* a committed page carries exactly the chain hash, and only its tenant's salt finds it */
    uint32_t p0 = page_committed(f, 0, NONE, 7);
    assert_memory_equal(kvs_page(&f->pg, p0)->hash, h0, KVA_HASH_BYTES);
    assert_int_equal(kvs_prefix_find(&f->pg, h0), p0);
    uint32_t p1 = page_committed(f, 0, p0, 7);
    kvs_block_hash(h0, f->salt[0], tok, FX_P, h);
    assert_memory_equal(kvs_page(&f->pg, p1)->hash, h, KVA_HASH_BYTES);
    assert_int_equal(kvs_prefix_find(&f->pg, h), p1);
    kvs_block_hash(NULL, f->salt[1], tok, FX_P, h);
    assert_int_equal(kvs_prefix_find(&f->pg, h), NONE);

    /* committing an identical block returns the page already committed, p left alone */
    int err = 0;
    uint32_t q = kvs_page_alloc(&f->pg, 0, NONE, &err);
    kva_page *d = kvs_page(&f->pg, q);
    fx_tokens(d->tokens, FX_P, 7);
    d->ntok = d->nvalid = FX_P;
    d->state = KVA_PAGE_OPEN;
    assert_int_equal(kvs_page_commit(&f->pg, q, f->salt[0]), p0);
    assert_int_equal(d->state, KVA_PAGE_OPEN);
    fx_check(f);
    kvs_page_unref(&f->pg, q);
    kvs_page_unref(&f->pg, p1);
    kvs_page_unref(&f->pg, p0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 2);
    assert_int_equal(f->pg.n_free, 6);
}

/* Two tenants with the same tokens: separate pages, no cross-tenant hit. */
static void test_tenants_never_share(void **state)
{
    fx *f = *state;
    uint32_t tok[9], c0 = 99, c1 = 99;
    fx_tokens(tok, 9, 1000);
    uint64_t a = fx_seq_fill(f, 0, tok, 8, &c0);
    assert_int_equal(c0, 0);
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, 9, NULL), 8);
    assert_int_equal(kvs_prefix_match(&f->ss, 1, tok, 9, NULL), 0);
    uint64_t b = fx_seq_fill(f, 1, tok, 8, &c1);
    assert_int_equal(c1, 0);
    const kvs_seq *sa = fx_priv(f, a, 0), *sb = fx_priv(f, b, 1);
    assert_int_equal(sa->n_pt, 2);
    assert_int_equal(sb->n_pt, 2);
    for (uint32_t i = 0; i < 2; i++)
        for (uint32_t j = 0; j < 2; j++)
            assert_int_not_equal(sa->pt[i], sb->pt[j]);
    for (uint32_t i = 0; i < 2; i++) {
        assert_int_equal(kvs_page(&f->pg, sa->pt[i])->state, KVA_PAGE_COMMITTED);
        assert_int_equal(kvs_page(&f->pg, sb->pt[i])->state, KVA_PAGE_COMMITTED);
        assert_int_equal(kvs_page(&f->pg, sa->pt[i])->tenant, 0);
        assert_int_equal(kvs_page(&f->pg, sb->pt[i])->tenant, 1);
        assert_int_equal(kvs_page(&f->pg, sa->pt[i])->ref, 1);
        assert_int_equal(kvs_page(&f->pg, sb->pt[i])->ref, 1);
    }
    uint32_t pa[2], pb[2];
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, 9, pa), 8);
    assert_int_equal(kvs_prefix_match(&f->ss, 1, tok, 9, pb), 8);
    assert_memory_equal(pa, sa->pt, sizeof(pa));
    assert_memory_equal(pb, sb->pt, sizeof(pb));
    assert_int_equal(f->pg.tenant[0].pages, 2);
    assert_int_equal(f->pg.tenant[1].pages, 2);
    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    assert_int_equal(kvs_seq_close(&f->ss, b, 1, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 4);
    assert_int_equal(f->pg.hits, 0);
    assert_int_equal(f->pg.misses, 4);
}

/* ---- LRU ---- */

/* Three independent one-page prefixes; a reuse moves one to the hot end; allocation under
 * pressure evicts in least-recently-used order. */
static void test_lru_order(void **state)
{
    fx *f = *state;
    uint32_t tok[FX_P + 1];
    uint64_t x, y, z;
    fx_tokens(tok, FX_P, 100);
    x = fx_seq_fill(f, 0, tok, FX_P, NULL);
    fx_tokens(tok, FX_P, 200);
    y = fx_seq_fill(f, 0, tok, FX_P, NULL);
    fx_tokens(tok, FX_P, 300);
    z = fx_seq_fill(f, 0, tok, FX_P, NULL);
    assert_int_equal(kvs_seq_close(&f->ss, x, 0, 0), 0);
    fx_check(f);
    assert_int_equal(kvs_seq_close(&f->ss, y, 0, 0), 0);
    fx_check(f);
    assert_int_equal(kvs_seq_close(&f->ss, z, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 3);
    assert_int_equal(f->pg.n_free, 3);
    assert_int_equal(match1(f, 0, 100), FX_P);
    assert_int_equal(match1(f, 0, 200), FX_P);
    assert_int_equal(match1(f, 0, 300), FX_P);

    /* reuse X: LRU from cold to hot is now Y, Z, X */
    uint64_t r;
    uint32_t cached = 0;
    fx_tokens(tok, FX_P + 1, 100);
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &r), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, r, 0, 0, tok, FX_P + 1, &cached), 0);
    assert_int_equal(cached, FX_P);
    fx_check(f);
    assert_int_equal(kvs_seq_close(&f->ss, r, 0, 0), 0); /* pending tail page is freed */
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 3);
    assert_int_equal(f->pg.n_free, 3);
    assert_int_equal(f->pg.hits, 1);

    /* W takes 4 pages: 3 free + the LRU leaf Y */
    uint32_t wt[4 * FX_P];
    fx_tokens(wt, 4 * FX_P, 5000);
    uint64_t w = fx_seq_fill(f, 0, wt, 4 * FX_P, NULL);
    assert_int_equal(f->pg.evictions, 1);
    assert_int_equal(match1(f, 0, 200), 0);
    assert_int_equal(match1(f, 0, 100), FX_P);
    assert_int_equal(match1(f, 0, 300), FX_P);
    assert_int_equal(f->pg.n_free, 0);
    assert_int_equal(f->pg.n_cached, 2);

    /* one more page for W: Z goes, then X */
    uint32_t more[FX_P];
    fx_tokens(more, FX_P, 6000);
    assert_int_equal(kvs_seq_extend(&f->ss, w, 0, 0, more, FX_P, NULL), 0);
    fx_check(f);
    fx_layers_done(f, w, 0);
    assert_int_equal(f->pg.evictions, 2);
    assert_int_equal(match1(f, 0, 300), 0);
    assert_int_equal(match1(f, 0, 100), FX_P);
    fx_tokens(more, FX_P, 7000);
    assert_int_equal(kvs_seq_extend(&f->ss, w, 0, 0, more, FX_P, NULL), 0);
    fx_check(f);
    fx_layers_done(f, w, 0);
    assert_int_equal(f->pg.evictions, 3);
    assert_int_equal(match1(f, 0, 100), 0);
    assert_int_equal(f->pg.n_cached, 0);
    assert_int_equal(fx_in_use(f), 6);

    /* every page referenced by W: out of memory, nothing evicted */
    fx_tokens(more, 1, 8000);
    assert_int_equal(kvs_seq_extend(&f->ss, w, 0, 0, more, 1, NULL), KV_ERR_NOMEM);
    assert_int_equal(f->pg.evictions, 3);
    fx_check(f);
    assert_int_equal(kvs_seq_close(&f->ss, w, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 6);
}

/* A cached chain of 3 pages: the tail goes before its parent, a parent is never evicted
 * while a cached child exists, referenced and pinned pages are never evicted. */
static void test_evict_leaves_only(void **state)
{
    fx *f = *state;
    uint32_t tok[3 * FX_P];
    fx_tokens(tok, 3 * FX_P, 40);
    uint64_t a = fx_seq_fill(f, 0, tok, 3 * FX_P, NULL);
    uint32_t c[3];
    memcpy(c, fx_priv(f, a, 0)->pt, sizeof(c));

    /* referenced by an open sequence: nothing to evict beyond the 2 free pages */
    int err = 0;
    uint32_t held[2];
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 2, 0), 0);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 3, 0), KV_ERR_NOMEM);
    for (uint32_t i = 0; i < 2; i++) {
        held[i] = kvs_page_alloc(&f->pg, 0, NONE, &err);
        assert_int_not_equal(held[i], NONE);
    }
    fx_check(f);
    assert_int_equal(kvs_page_alloc(&f->pg, 0, NONE, &err), NONE);
    assert_int_equal(err, KV_ERR_NOMEM);
    assert_int_equal(f->pg.evictions, 0);

    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 3);
    assert_int_equal(kvs_page(&f->pg, c[0])->children, 1);
    assert_int_equal(kvs_page(&f->pg, c[1])->children, 1);
    assert_int_equal(kvs_page(&f->pg, c[2])->children, 0);
    assert_int_equal(f->pg.in_lru[c[0]], 0);
    assert_int_equal(f->pg.in_lru[c[1]], 0);
    assert_int_equal(f->pg.in_lru[c[2]], 1);
    assert_int_equal(f->pg.lru_head, c[2]);
    assert_int_equal(f->pg.lru_tail, c[2]);

    /* pinned, the whole chain is out of reach */
    kvs_pages_pin(&f->pg, c, 3, 1);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 0);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 1, 0), KV_ERR_NOMEM);
    assert_int_equal(kvs_page_alloc(&f->pg, 0, NONE, &err), NONE);
    assert_int_equal(err, KV_ERR_NOMEM);
    assert_int_equal(f->pg.evictions, 0);
    kvs_pages_pin(&f->pg, c, 3, 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 3);
    assert_int_equal(f->pg.lru_tail, c[2]);

    /* only the root pinned: the tail goes first, then its parent; the root stays */
    kvs_pages_pin(&f->pg, c, 1, 1);
    fx_check(f);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 2, 0), 0);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 3, 0), KV_ERR_NOMEM);
    uint32_t p = kvs_page_alloc(&f->pg, 0, NONE, &err);
    assert_int_equal(p, c[2]);
    assert_int_equal(kvs_page(&f->pg, p)->gen, 2);
    assert_int_equal(f->pg.evictions, 1);
    fx_check(f);
    uint32_t m[3 * FX_P + 1];
    memcpy(m, tok, sizeof(tok));
    m[3 * FX_P] = 1;
    assert_int_equal(kvs_prefix_match(&f->ss, 0, m, 3 * FX_P + 1, NULL), 2 * FX_P);
    assert_int_equal(f->pg.in_lru[c[1]], 1);  /* now a leaf */
    assert_int_equal(kvs_page(&f->pg, c[0])->children, 1);
    kvs_page_unref(&f->pg, p);                /* a free page is taken before any eviction */
    p = kvs_page_alloc(&f->pg, 0, NONE, &err);
    assert_int_equal(p, c[2]);
    assert_int_equal(f->pg.evictions, 1);
    uint32_t p2 = kvs_page_alloc(&f->pg, 0, NONE, &err);
    assert_int_equal(p2, c[1]);
    assert_int_equal(f->pg.evictions, 2);
    fx_check(f);
    assert_int_equal(kvs_prefix_match(&f->ss, 0, m, 3 * FX_P + 1, NULL), FX_P);
    assert_int_equal(kvs_page(&f->pg, c[0])->children, 0);
    assert_int_equal(f->pg.in_lru[c[0]], 0);  /* pinned: childless but not evictable */
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 1, 0), KV_ERR_NOMEM);
    assert_int_equal(kvs_page_alloc(&f->pg, 0, NONE, &err), NONE);
    assert_int_equal(err, KV_ERR_NOMEM);
    assert_int_equal(f->pg.evictions, 2);

    /* unpinned, the root is the last evictable page */
    kvs_pages_pin(&f->pg, c, 1, 0);
    fx_check(f);
    assert_int_equal(f->pg.in_lru[c[0]], 1);
    assert_int_equal(kvs_page_alloc(&f->pg, 0, NONE, &err), c[0]);
    assert_int_equal(f->pg.evictions, 3);
    assert_int_equal(kvs_prefix_match(&f->ss, 0, m, 3 * FX_P + 1, NULL), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 0);
    assert_int_equal(f->pg.n_free, 0);
    uint32_t all[5] = { held[0], held[1], c[0], c[1], c[2] };
    for (uint32_t i = 0; i < 5; i++)
        kvs_page_unref(&f->pg, all[i]);
    fx_check(f);
    assert_int_equal(f->pg.n_free, 5);
}

/* An older chain against a newer single page: the chain goes leaf by leaf (each parent
 * enters the LRU at the cold end when its last child goes), the newer page last. */
static void test_evict_chain_before_newer(void **state)
{
    fx *f = *state;
    uint32_t tok[3 * FX_P];
    fx_tokens(tok, 3 * FX_P, 40);
    uint64_t a = fx_seq_fill(f, 0, tok, 3 * FX_P, NULL);
    uint32_t c[3];
    memcpy(c, fx_priv(f, a, 0)->pt, sizeof(c));
    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    fx_tokens(tok, FX_P, 900);
    uint64_t q = fx_seq_fill(f, 0, tok, FX_P, NULL);
    uint32_t qp = fx_priv(f, q, 0)->pt[0];
    assert_int_equal(kvs_seq_close(&f->ss, q, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 4);
    assert_int_equal(f->pg.n_free, 1);

    int err = 0;
    uint32_t first = kvs_page_alloc(&f->pg, 0, NONE, &err); /* the free page */
    assert_int_equal(f->pg.evictions, 0);
    uint32_t want[4] = { c[2], c[1], c[0], qp };
    for (uint32_t i = 0; i < 4; i++) {
        /* while a child is cached, its parent is not evictable */
        for (uint32_t j = i + 1; j < 3; j++)
            assert_int_equal(kvs_page(&f->pg, want[j])->state, KVA_PAGE_COMMITTED);
        uint32_t p = kvs_page_alloc(&f->pg, 0, NONE, &err);
        assert_int_equal(p, want[i]);
        assert_int_equal(f->pg.evictions, i + 1);
        fx_check(f);
    }
    assert_int_equal(kvs_page_alloc(&f->pg, 0, NONE, &err), NONE);
    assert_int_equal(err, KV_ERR_NOMEM);
    kvs_page_unref(&f->pg, first);
    for (uint32_t i = 0; i < 4; i++)
        kvs_page_unref(&f->pg, want[i]);
    fx_check(f);
    assert_int_equal(f->pg.n_free, 5);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        FX_TEST(test_alloc_until_full, &cfg8),
        FX_TEST(test_can_alloc_agrees, &cfg6),
        FX_TEST(test_block_hash, &cfg8),
        FX_TEST(test_tenants_never_share, &cfg8),
        FX_TEST(test_lru_order, &cfg6),
        FX_TEST(test_evict_leaves_only, &cfg5),
        FX_TEST(test_evict_chain_before_newer, &cfg5),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
