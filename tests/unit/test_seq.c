/* test_seq.c — unit tests of kvserver's sequences (seq.c) over the page allocator: prefix
 * reuse through extend (and the "at least one token left" rule), hit/miss counters, out of
 * memory and quotas changing nothing, copy-on-write fork, id validation, busy sequences,
 * expiry of idle ones, per-tenant limits of open sequences, and deduplication of blocks
 * written twice concurrently.
 *
 * Every test runs on a fresh arena in private memory (arena_fixture.h) and checks every
 * invariant of pages.h plus the accounting identity after each mutating step (fx_check). */
#include "arena_fixture.h"

#define NONE KVA_NO_PAGE

static const fx_cfg cfg16 = { .n_pages = 16, .max_seqs = 8, .n_tenants = 2 };
static const fx_cfg cfg12 = { .n_pages = 12, .max_seqs = 8, .n_tenants = 2 };
static const fx_cfg cfg8 = { .n_pages = 8, .max_seqs = 8, .n_tenants = 2 };
static const fx_cfg cfg3 = { .n_pages = 3, .max_seqs = 8, .n_tenants = 1 };
static const fx_cfg cfg4 = { .n_pages = 4, .max_seqs = 8, .n_tenants = 1 };

/* ---- prefix cache ---- */

static void test_prefix_reuse(void **state)
{
    fx *f = *state;
    const uint32_t n = 3 * FX_P + FX_P / 2; /* 3.5 pages */
    uint32_t tok[4 * FX_P], cached = 99;
    fx_tokens(tok, 4 * FX_P, 10);

    uint64_t a = fx_seq_fill(f, 0, tok, n, &cached);
    assert_int_equal(cached, 0);
    assert_int_equal(f->pg.hits, 0);
    assert_int_equal(f->pg.misses, 3);
    const kva_seq *ra = kvs_seq_find(&f->ss, a, 0);
    assert_int_equal(ra->len, n);
    assert_int_equal(ra->pending, 0);
    uint32_t ap[4];
    assert_int_equal(fx_priv(f, a, 0)->n_pt, 4);
    memcpy(ap, fx_priv(f, a, 0)->pt, sizeof(ap));
    assert_int_equal(ra->tail, ap[3]);
    for (uint32_t i = 0; i < 3; i++) {
        const kva_page *d = kvs_page(&f->pg, ap[i]);
        assert_int_equal(d->state, KVA_PAGE_COMMITTED);
        assert_int_equal(d->parent, i ? ap[i - 1] : NONE);
        assert_int_equal(d->nvalid, FX_P);
    }
    assert_int_equal(kvs_page(&f->pg, ap[3])->state, KVA_PAGE_OPEN);
    assert_int_equal(kvs_page(&f->pg, ap[3])->nvalid, FX_P / 2);
    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 3);
    assert_int_equal(f->pg.n_free, 13);
    assert_int_equal(kvs_page(&f->pg, ap[3])->state, KVA_PAGE_FREE);

    /* the lookup agrees with what an extend will attach */
    uint32_t mp[4];
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, n, mp), 3 * FX_P);
    assert_memory_equal(mp, ap, 3 * sizeof(uint32_t));
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, 3 * FX_P + 1, NULL), 3 * FX_P);
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, 3 * FX_P, NULL), 2 * FX_P);
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, FX_P + 1, NULL), FX_P);
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, FX_P, NULL), 0);
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, 1, NULL), 0);
    assert_int_equal(kvs_prefix_match(&f->ss, 1, tok, n, NULL), 0);
    uint32_t other[4 * FX_P];
    memcpy(other, tok, sizeof(other));
    other[FX_P + 1] = 77777; /* second page differs */
    assert_int_equal(kvs_prefix_match(&f->ss, 0, other, n, NULL), FX_P);
    other[0] = 77777;        /* first page differs: nothing, though later pages agree */
    other[FX_P + 1] = tok[FX_P + 1];
    assert_int_equal(kvs_prefix_match(&f->ss, 0, other, n, NULL), 0);
    assert_int_equal(f->pg.hits, 0); /* lookups count nothing */
    assert_int_equal(f->pg.misses, 3);

    /* B: same 3.5 pages, 3 pages attached */
    uint64_t b;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &b), 0);
    cached = 99;
    assert_int_equal(kvs_seq_extend(&f->ss, b, 0, 0, tok, n, &cached), 0);
    fx_check(f);
    assert_int_equal(cached, 3 * FX_P);
    assert_int_equal(f->pg.hits, 3);
    assert_int_equal(f->pg.misses, 3);
    const kva_seq *rb = kvs_seq_find(&f->ss, b, 0);
    assert_int_equal(rb->len, 3 * FX_P);
    assert_int_equal(rb->pending, FX_P / 2);
    assert_int_equal(fx_priv(f, b, 0)->n_pt, 4);
    assert_memory_equal(fx_priv(f, b, 0)->pt, ap, 3 * sizeof(uint32_t));
    assert_int_equal(f->pg.n_cached, 0);
    assert_int_equal(f->pg.n_free, 12);
    for (uint32_t i = 0; i < 3; i++)
        assert_int_equal(kvs_page(&f->pg, ap[i])->ref, 1);
    fx_layers_done(f, b, 0);
    assert_int_equal(rb->len, n);
    assert_int_equal(kvs_seq_close(&f->ss, b, 0, 0), 0);
    fx_check(f);

    /* C: exactly 3 pages: the last token must be computed, so only 2 pages attach */
    uint64_t c;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &c), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, c, 0, 0, tok, 3 * FX_P, &cached), 0);
    fx_check(f);
    assert_int_equal(cached, 2 * FX_P);
    assert_int_equal(f->pg.hits, 5);
    assert_int_equal(f->pg.misses, 4);
    const kva_seq *rc = kvs_seq_find(&f->ss, c, 0);
    assert_int_equal(rc->len, 2 * FX_P);
    assert_int_equal(rc->pending, FX_P);
    uint32_t fresh = fx_priv(f, c, 0)->pt[2];
    assert_int_not_equal(fresh, ap[2]);
    assert_int_equal(kvs_page(&f->pg, fresh)->parent, ap[1]);
    assert_int_equal(kvs_page(&f->pg, ap[1])->children, 2);
    fx_layers_done(f, c, 0);
    /* the recomputed page is the cached one: C switches to it, its copy is freed */
    assert_int_equal(fx_priv(f, c, 0)->pt[2], ap[2]);
    assert_int_equal(rc->tail, ap[2]);
    assert_int_equal(kvs_page(&f->pg, fresh)->state, KVA_PAGE_FREE);
    assert_int_equal(kvs_page(&f->pg, ap[1])->children, 1);
    assert_int_equal(f->pg.n_free, 13);
    assert_int_equal(kvs_seq_close(&f->ss, c, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 3);

    /* tenant 1, same tokens: nothing attached, its own pages */
    uint64_t d = fx_seq_fill(f, 1, tok, n, &cached);
    assert_int_equal(cached, 0);
    assert_int_equal(f->pg.hits, 5);
    assert_int_equal(f->pg.misses, 7);
    for (uint32_t i = 0; i < 4; i++)
        for (uint32_t j = 0; j < 3; j++)
            assert_int_not_equal(fx_priv(f, d, 1)->pt[i], ap[j]);
    assert_int_equal(f->pg.tenant[0].pages, 3);
    assert_int_equal(f->pg.tenant[1].pages, 4);
    assert_int_equal(kvs_seq_close(&f->ss, d, 1, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 6);
    assert_int_equal(f->pg.n_free, 10);
    assert_int_equal(f->pg.evictions, 0);
}

/* A sequence grown by extends of 1..7 tokens to 10 pages: its page table is the parent
 * chain of its tail, pages commit as they fill, and the whole prompt is then cached. */
static void test_long_sequence(void **state)
{
    fx *f = *state;
    enum { N = 10 * FX_P };
    uint32_t tok[N + 1], len = 0, step = 1;
    fx_tokens(tok, N + 1, 70000);
    uint64_t s;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &s), 0);
    while (len < N) {
        uint32_t n = len + step > N ? N - len : step, cached = 9;
        assert_int_equal(kvs_seq_extend(&f->ss, s, 0, 0, tok + len, n, &cached), 0);
        assert_int_equal(cached, 0);
        fx_check(f);
        fx_layers_done(f, s, 0);
        len += n;
        step = step % 7 + 1;
        const kva_seq *rec = kvs_seq_find(&f->ss, s, 0);
        const kvs_seq *ps = fx_priv(f, s, 0);
        assert_int_equal(rec->len, len);
        assert_int_equal(ps->n_pt, (len + FX_P - 1) / FX_P);
        assert_int_equal(rec->tail, ps->pt[ps->n_pt - 1]);
        for (uint32_t i = 0; i < ps->n_pt; i++) {
            const kva_page *d = kvs_page(&f->pg, ps->pt[i]);
            uint32_t in_page = len - i * FX_P < FX_P ? len - i * FX_P : FX_P;
            assert_int_equal(d->parent, i ? ps->pt[i - 1] : NONE);
            assert_int_equal(d->ntok, in_page);
            assert_int_equal(d->nvalid, in_page);
            assert_int_equal(d->state, in_page == FX_P ? KVA_PAGE_COMMITTED : KVA_PAGE_OPEN);
            assert_memory_equal(d->tokens, tok + i * FX_P, in_page * sizeof(uint32_t));
        }
    }
    assert_int_equal(f->pg.n_free, 6);
    assert_int_equal(f->pg.misses, 0); /* only a first extend counts */
    uint32_t pages[10];
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, N + 1, pages), N);
    assert_memory_equal(pages, fx_priv(f, s, 0)->pt, sizeof(pages));
    assert_int_equal(kvs_seq_close(&f->ss, s, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 10);
    uint32_t cached = 0;
    uint64_t t = fx_seq_fill(f, 0, tok, N + 1, &cached);
    assert_int_equal(cached, N);
    assert_int_equal(f->pg.hits, 10);
    assert_int_equal(fx_priv(f, t, 0)->n_pt, 11);
    assert_int_equal(kvs_seq_close(&f->ss, t, 0, 0), 0);
    fx_check(f);
}

/* ---- out of memory, quota ---- */

typedef struct snap {
    uint8_t *meta;           /* header, descriptors, sequence table */
    size_t meta_bytes;
    kvs_pages pg;            /* counters and list heads */
    uint32_t free_stack[64];
} snap;

static void snap_take(const fx *f, snap *s)
{
    s->meta_bytes = f->h->data_off;
    s->meta = malloc(s->meta_bytes);
    assert_non_null(s->meta);
    memcpy(s->meta, f->h, s->meta_bytes);
    s->pg = f->pg;
    assert_true(f->pg.n <= 64);
    memcpy(s->free_stack, f->pg.free_stack, sizeof(uint32_t) * f->pg.n_free);
}

/* Asserts nothing changed since s, and frees s. */
static void snap_same(const fx *f, snap *s)
{
    int same = memcmp(s->meta, f->h, s->meta_bytes) == 0;
    free(s->meta);
    assert_true(same);
    assert_memory_equal(&s->pg, &f->pg, sizeof(s->pg));
    assert_memory_equal(s->free_stack, f->pg.free_stack, sizeof(uint32_t) * f->pg.n_free);
}

static void test_out_of_memory(void **state)
{
    fx *f = *state;
    uint32_t ta[2 * FX_P + 1], tb[6], x[FX_P + 1];
    fx_tokens(ta, 2 * FX_P + 1, 10);
    fx_tokens(tb, 6, 500);
    fx_tokens(x, FX_P + 1, 900);
    uint64_t a = fx_seq_fill(f, 0, ta, 2 * FX_P, NULL); /* 2 committed pages */
    uint64_t b = fx_seq_fill(f, 0, tb, 6, NULL);         /* 1 committed + 1 partial */
    uint64_t c, d;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &c), 0);
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &d), 0);
    assert_int_equal(f->pg.n_free, 0);
    assert_int_equal(f->pg.n_cached, 0);
    assert_int_equal(fx_in_use(f), 4);
    fx_check(f);

    snap s;
    uint32_t cached = 1234;
    snap_take(f, &s);
    assert_int_equal(kvs_seq_extend(&f->ss, c, 0, 0, x, 1, &cached), KV_ERR_NOMEM);
    assert_int_equal(kvs_seq_extend(&f->ss, a, 0, 0, x, 1, &cached), KV_ERR_NOMEM);
    assert_int_equal(kvs_seq_extend(&f->ss, b, 0, 0, x, 3, &cached), KV_ERR_NOMEM); /* 2 fit */
    /* 2 pages of a's prefix would attach (they are in use), 1 new page does not fit */
    assert_int_equal(kvs_seq_extend(&f->ss, d, 0, 0, ta, 2 * FX_P + 1, &cached), KV_ERR_NOMEM);
    assert_int_equal(cached, 1234);
    snap_same(f, &s);
    fx_check(f);

    /* what fits in the tail still works; the prefix alone too */
    assert_int_equal(kvs_seq_extend(&f->ss, b, 0, 0, x, 2, &cached), 0);
    assert_int_equal(cached, 0);
    fx_check(f);
    fx_layers_done(f, b, 0);
    assert_int_equal(kvs_seq_find(&f->ss, b, 0)->len, 8);
    assert_int_equal(f->pg.n_free, 0);

    /* closing a frees what only it used; a's pages become cached and evictable */
    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 2);
    /* a's 2 cached pages would attach to d: they are not evictable for d's third page */
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 1, 0), 0);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 1, 2), KV_ERR_NOMEM);
    snap_take(f, &s);
    assert_int_equal(kvs_seq_extend(&f->ss, d, 0, 0, ta, 2 * FX_P + 1, &cached), KV_ERR_NOMEM);
    snap_same(f, &s);
    assert_int_equal(kvs_seq_extend(&f->ss, c, 0, 0, x, FX_P + 1, &cached), 0);
    fx_check(f);
    assert_int_equal(f->pg.evictions, 2);
    assert_int_equal(kvs_seq_close(&f->ss, c, 0, 0), 0);
    assert_int_equal(kvs_seq_close(&f->ss, d, 0, 0), 0);
    assert_int_equal(kvs_seq_close(&f->ss, b, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_free, 2);
    assert_int_equal(f->pg.n_cached, 2);
}

static void test_quota(void **state)
{
    fx *f = *state;
    f->pg.tenant[1].quota = 3;
    uint32_t t1[3 * FX_P], t0[2 * FX_P + 1], x[FX_P];
    fx_tokens(t1, 3 * FX_P, 100);
    fx_tokens(t0, 2 * FX_P + 1, 200);
    fx_tokens(x, FX_P, 300);

    /* tenant 0 caches 2 pages first: the coldest pages of the arena */
    uint64_t z = fx_seq_fill(f, 0, t0, 2 * FX_P, NULL);
    assert_int_equal(kvs_seq_close(&f->ss, z, 0, 0), 0);
    fx_check(f);

    /* tenant 1 holds its 3 pages in use: quota, though 7 pages are free */
    uint64_t s1, s2;
    assert_int_equal(kvs_seq_open(&f->ss, 1, 0, &s1), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, s1, 1, 0, t1, 3 * FX_P, NULL), 0);
    fx_check(f);
    assert_int_equal(f->pg.tenant[1].pages, 3);
    assert_int_equal(f->pg.n_free, 7);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 1, 1, 0), KV_ERR_QUOTA);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 0, 1, 0), 0);
    int err = 0;
    assert_int_equal(kvs_page_alloc(&f->pg, 1, NONE, &err), NONE);
    assert_int_equal(err, KV_ERR_QUOTA);
    assert_int_equal(kvs_seq_open(&f->ss, 1, 0, &s2), 0);
    snap s;
    snap_take(f, &s);
    assert_int_equal(kvs_seq_extend(&f->ss, s2, 1, 0, x, 1, NULL), KV_ERR_QUOTA);
    snap_same(f, &s);
    fx_check(f);

    /* completed and closed, its pages are cached: at quota it evicts its own, not tenant
     * 0's (which are older) */
    fx_layers_done(f, s1, 1);
    assert_int_equal(kvs_seq_close(&f->ss, s1, 1, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.tenant[1].cached, 3);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 1, 3, 0), 0);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 1, 4, 0), KV_ERR_QUOTA);
    assert_int_equal(kvs_pages_can_alloc(&f->pg, 1, 3, 1), KV_ERR_QUOTA);
    assert_int_equal(kvs_seq_extend(&f->ss, s2, 1, 0, x, FX_P, NULL), 0);
    fx_check(f);
    assert_int_equal(f->pg.evictions, 1);
    assert_int_equal(f->pg.tenant[1].pages, 3);
    assert_int_equal(f->pg.tenant[1].cached, 2);
    assert_int_equal(f->pg.tenant[0].pages, 2);
    assert_int_equal(f->pg.tenant[0].cached, 2);
    assert_int_equal(kvs_prefix_match(&f->ss, 0, t0, 2 * FX_P + 1, NULL), 2 * FX_P);
    uint32_t m[3 * FX_P + 1];
    memcpy(m, t1, sizeof(t1));
    m[3 * FX_P] = 1;
    assert_int_equal(kvs_prefix_match(&f->ss, 1, m, 3 * FX_P + 1, NULL), 2 * FX_P); /* tail gone */
    assert_int_equal(f->pg.n_free, 7); /* one evicted, one allocated */
    fx_layers_done(f, s2, 1);
    assert_int_equal(kvs_seq_close(&f->ss, s2, 1, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.tenant[1].pages, 3);
    assert_int_equal(f->pg.tenant[1].cached, 3);
}

/* ---- fork, copy-on-write, ids ---- */

static void fill_pattern(fx *f, uint32_t p, uint8_t seed)
{
    uint8_t *d = fx_page_data(f, p);
    for (size_t i = 0; i < f->h->page_bytes; i++)
        d[i] = (uint8_t)(seed + i * 7 + (i >> 8));
}

static void test_fork_cow(void **state)
{
    fx *f = *state;
    uint32_t tok[6], one = 100, two = 200, cached = 9;
    fx_tokens(tok, 6, 1);
    uint64_t s = fx_seq_fill(f, 1, tok, 6, NULL);
    uint32_t s0 = fx_priv(f, s, 1)->pt[0], s1 = fx_priv(f, s, 1)->pt[1];
    assert_int_equal(kvs_page(&f->pg, s1)->state, KVA_PAGE_OPEN);
    fill_pattern(f, s0, 3);
    fill_pattern(f, s1, 11);
    const size_t pb = f->h->page_bytes;
    uint8_t *copy0 = malloc(pb), *copy1 = malloc(pb);
    assert_non_null(copy0);
    assert_non_null(copy1);
    memcpy(copy0, fx_page_data(f, s0), pb);
    memcpy(copy1, fx_page_data(f, s1), pb);
    uint32_t free0 = f->pg.n_free;

    uint64_t c = 0;
    assert_int_equal(kvs_seq_fork(&f->ss, s, 1, 0, &c), 0);
    fx_check(f);
    assert_int_not_equal(c, s);
    const kva_seq *rc = kvs_seq_find(&f->ss, c, 1), *rs = kvs_seq_find(&f->ss, s, 1);
    assert_non_null(rc);
    assert_int_equal(rc->len, 6);
    assert_int_equal(rc->tail, s1);
    assert_int_equal(fx_priv(f, c, 1)->n_pt, 2);
    assert_memory_equal(fx_priv(f, c, 1)->pt, fx_priv(f, s, 1)->pt, 2 * sizeof(uint32_t));
    assert_int_equal(kvs_page(&f->pg, s0)->ref, 2);
    assert_int_equal(kvs_page(&f->pg, s1)->ref, 2);
    assert_int_equal(f->pg.n_free, free0);

    /* the child appends to the shared partial tail: it gets a page of its own, whose K/V
     * its layers' jobs copy from the shared page, held by its record meanwhile; the server
     * copies token ids only, never page data */
    assert_int_equal(kvs_seq_extend(&f->ss, c, 1, 0, &one, 1, &cached), 0);
    fx_check(f);
    assert_int_equal(cached, 0);
    uint32_t c1 = fx_priv(f, c, 1)->pt[1];
    assert_int_not_equal(c1, s1);
    assert_int_equal(fx_priv(f, c, 1)->pt[0], s0);
    assert_int_equal(rc->tail, c1);
    assert_int_equal(rc->cow_src, s1);
    assert_int_equal(f->pg.n_free, free0 - 1);
    const kva_page *dc = kvs_page(&f->pg, c1), *ds = kvs_page(&f->pg, s1);
    assert_memory_equal(fx_page_data(f, s1), copy1, pb);
    assert_memory_equal(fx_page_data(f, s0), copy0, pb);
    assert_int_equal(dc->parent, s0);
    assert_int_equal(dc->ntok, 3);
    assert_int_equal(dc->nvalid, 0);
    assert_int_equal(dc->tokens[0], 5);
    assert_int_equal(dc->tokens[1], 6);
    assert_int_equal(dc->tokens[2], 100);
    assert_int_equal(dc->ref, 1);
    assert_int_equal(ds->ref, 2);
    assert_int_equal(ds->ntok, 2);
    assert_int_equal(ds->nvalid, 2);
    assert_int_equal(ds->parent, s0);
    assert_int_equal(kvs_page(&f->pg, s0)->ref, 2);
    assert_int_equal(kvs_page(&f->pg, s0)->children, 2);
    assert_int_equal(rs->len, 6);
    assert_int_equal(rs->tail, s1);
    fx_layers_done(f, c, 1); /* the copy is made: the hold goes */
    assert_int_equal(rc->cow_src, KVA_NO_PAGE);
    assert_int_equal(dc->nvalid, 3);
    assert_int_equal(ds->ref, 1);

    /* the parent now holds its tail alone: no copy */
    assert_int_equal(kvs_seq_extend(&f->ss, s, 1, 0, &two, 1, NULL), 0);
    fx_check(f);
    assert_int_equal(fx_priv(f, s, 1)->pt[1], s1);
    assert_int_equal(rs->cow_src, KVA_NO_PAGE);
    assert_int_equal(f->pg.n_free, free0 - 1);
    assert_int_equal(ds->ntok, 3);
    assert_int_equal(ds->tokens[2], 200);
    assert_int_equal(dc->tokens[2], 100);

    fx_layers_done(f, s, 1);
    assert_int_equal(rc->len, 7);
    assert_int_equal(rs->len, 7);
    assert_int_equal(kvs_seq_close(&f->ss, c, 1, 0), 0);
    fx_check(f);
    assert_int_equal(kvs_seq_close(&f->ss, s, 1, 0), 0);
    fx_check(f);
    /* back to baseline: only the full first page stays, cached */
    assert_int_equal(kvs_page(&f->pg, s0)->ref, 0);
    assert_int_equal(kvs_page(&f->pg, s0)->children, 0);
    assert_int_equal(kvs_page(&f->pg, s0)->state, KVA_PAGE_COMMITTED);
    assert_int_equal(f->pg.n_free, 7);
    assert_int_equal(f->pg.n_cached, 1);
    assert_int_equal(f->pg.tenant[1].pages, 1);
    assert_int_equal(f->ss.live, 0);
    free(copy0);
    free(copy1);
}

static void test_seq_errors(void **state)
{
    fx *f = *state;
    uint32_t tok[6], cached;
    fx_tokens(tok, 6, 1);
    uint64_t s = fx_seq_fill(f, 0, tok, 6, NULL), c = 0;
    snap sn;
    snap_take(f, &sn);
    const uint32_t slot = (uint32_t)s;
    const uint64_t forged[] = {
        0, s ^ (1ull << 32), s + 1, (uint64_t)f->h->max_seqs, 0x1234567800000003ull,
        (s & ~0xffffffffull) | f->h->max_seqs, UINT64_MAX,
    };
    for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
        assert_int_equal(kvs_seq_fork(&f->ss, forged[i], 0, 0, &c), KV_ERR_NOSEQ);
        assert_int_equal(kvs_seq_extend(&f->ss, forged[i], 0, 0, tok, 1, &cached), KV_ERR_NOSEQ);
        assert_int_equal(kvs_seq_close(&f->ss, forged[i], 0, 0), KV_ERR_NOSEQ);
        assert_null(kvs_seq_find(&f->ss, forged[i], 0));
    }
    /* another tenant's id */
    assert_int_equal(kvs_seq_fork(&f->ss, s, 1, 0, &c), KV_ERR_NOSEQ);
    assert_int_equal(kvs_seq_extend(&f->ss, s, 1, 0, tok, 1, &cached), KV_ERR_NOSEQ);
    assert_int_equal(kvs_seq_close(&f->ss, s, 1, 0), KV_ERR_NOSEQ);
    /* busy */
    kvs_seq *ps = kvs_seq_priv(&f->ss, kvs_seq_find(&f->ss, s, 0));
    ps->busy_job = 42;
    assert_int_equal(kvs_seq_fork(&f->ss, s, 0, 0, &c), KV_ERR_BUSY);
    assert_int_equal(kvs_seq_extend(&f->ss, s, 0, 0, tok, 1, &cached), KV_ERR_BUSY);
    assert_int_equal(kvs_seq_close(&f->ss, s, 0, 0), KV_ERR_BUSY);
    ps->busy_job = 0;
    assert_int_equal(kvs_seq_extend(&f->ss, s, 0, 0, tok, 0, &cached), KV_ERR_INVAL);
    snap_same(f, &sn);
    fx_check(f);

    /* pending tokens: no fork, no second extend */
    assert_int_equal(kvs_seq_extend(&f->ss, s, 0, 0, tok, 1, &cached), 0);
    fx_check(f);
    snap_take(f, &sn);
    assert_int_equal(kvs_seq_fork(&f->ss, s, 0, 0, &c), KV_ERR_STATE);
    assert_int_equal(kvs_seq_extend(&f->ss, s, 0, 0, tok, 1, &cached), KV_ERR_STATE);
    snap_same(f, &sn);
    fx_layers_done(f, s, 0);

    /* closed: the id is stale, also once its slot is reused */
    assert_int_equal(kvs_seq_close(&f->ss, s, 0, 0), 0);
    fx_check(f);
    assert_int_equal(kvs_seq_close(&f->ss, s, 0, 0), KV_ERR_NOSEQ);
    assert_int_equal(kvs_seq_fork(&f->ss, s, 0, 0, &c), KV_ERR_NOSEQ);
    assert_int_equal(kvs_seq_extend(&f->ss, s, 0, 0, tok, 1, &cached), KV_ERR_NOSEQ);
    uint64_t s2, others[8];
    uint32_t n_others = 0; /* free slots are reused longest free first: s's comes last */
    for (;;) {
        assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &s2), 0);
        if ((uint32_t)s2 == slot)
            break;
        assert_true(n_others < 8);
        others[n_others++] = s2;
    }
    assert_int_equal(n_others, f->h->max_seqs - 1);
    for (uint32_t i = 0; i < n_others; i++)
        assert_int_equal(kvs_seq_close(&f->ss, others[i], 0, 0), 0);
    assert_int_not_equal(s2, s);
    assert_int_equal(kvs_seq_fork(&f->ss, s, 0, 0, &c), KV_ERR_NOSEQ);
    assert_int_equal(kvs_seq_close(&f->ss, s, 0, 0), KV_ERR_NOSEQ);
    assert_non_null(kvs_seq_find(&f->ss, s2, 0));
    assert_int_equal(kvs_seq_close(&f->ss, s2, 0, 0), 0);
    fx_check(f);

    /* a full sequence table */
    uint64_t ids[8];
    for (uint32_t i = 0; i < 8; i++)
        assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &ids[i]), 0);
    uint64_t extra;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &extra), KV_ERR_NOMEM);
    assert_int_equal(kvs_seq_fork(&f->ss, ids[0], 0, 0, &extra), KV_ERR_NOMEM);
    for (uint32_t i = 0; i < 8; i++)
        assert_int_equal(kvs_seq_close(&f->ss, ids[i], 0, 0), 0);
    assert_int_equal(f->ss.live, 0);
    fx_check(f);
}

/* A resent close is answered from the tombstone the first one left: only for the same
 * request, id and tenant, and only until the slot is taken again. */
static void test_close_tombstone(void **state)
{
    fx *f = *state;
    uint64_t s = 0, s2 = 0;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 41, &s), 0);
    assert_int_equal(kvs_seq_find(&f->ss, s, 0)->last_req, 41); /* a resent open finds it */
    assert_int_equal(kvs_seq_closed_by(&f->ss, s, 0, 41), 0); /* live: not closed */
    assert_int_equal(kvs_seq_close(&f->ss, s, 0, 42), 0);
    assert_int_equal(kvs_seq_close(&f->ss, s, 0, 42), KV_ERR_NOSEQ);
    assert_int_equal(kvs_seq_closed_by(&f->ss, s, 0, 42), 1);
    assert_int_equal(kvs_seq_closed_by(&f->ss, s, 0, 43), 0);  /* another request */
    assert_int_equal(kvs_seq_closed_by(&f->ss, s, 1, 42), 0);  /* another tenant */
    assert_int_equal(kvs_seq_closed_by(&f->ss, s ^ (1ull << 32), 0, 42), 0); /* generation */
    assert_int_equal(kvs_seq_closed_by(&f->ss, (uint64_t)f->h->max_seqs, 0, 42), 0);
    assert_int_equal(kvs_seq_closed_by(&f->ss, UINT64_MAX, 0, 42), 0);
    /* free slots are taken longest free first: the tombstone outlives every other slot's
     * use, and is gone once its own slot is taken again */
    uint64_t others[8];
    for (uint32_t i = 0; i + 1 < f->h->max_seqs; i++) {
        assert_int_equal(kvs_seq_open(&f->ss, 0, 50 + i, &others[i]), 0);
        assert_int_not_equal((uint32_t)others[i], (uint32_t)s);
        assert_int_equal(kvs_seq_closed_by(&f->ss, s, 0, 42), 1);
    }
    for (uint32_t i = 0; i + 1 < f->h->max_seqs; i++)
        assert_int_equal(kvs_seq_close(&f->ss, others[i], 0, 60 + i), 0);
    assert_int_equal(kvs_seq_open(&f->ss, 0, 44, &s2), 0);
    assert_int_equal((uint32_t)s2, (uint32_t)s);
    assert_int_equal(kvs_seq_closed_by(&f->ss, s, 0, 42), 0);
    assert_int_equal(kvs_seq_close(&f->ss, s2, 0, 44), 0);
    fx_check(f);
}

static void count_expired(void *arg, const kva_seq *rec, uint32_t n_pages)
{
    uint32_t *seen = arg;
    assert_int_equal(rec->state, KVA_SEQ_LIVE); /* told before it is closed */
    seen[0]++;
    seen[1] += n_pages;
}

/* Expiry closes exactly the sequences left unnamed for the idle time and not busy, as a
 * close (full pages cached, the rest freed, pending tokens dropped) whose tombstone says
 * expired; a sequence whose clock never started (found at a restart) gets a full period. */
static void test_expire(void **state)
{
    fx *f = *state;
    uint32_t tok[3 * FX_P], seen[2] = { 0, 0 };
    fx_tokens(tok, 3 * FX_P, 500);
    uint64_t idle = fx_seq_fill(f, 0, tok, 2 * FX_P + 1, NULL); /* 2 full pages + 1 token */
    uint64_t fresh = fx_seq_fill(f, 1, tok, FX_P, NULL);
    uint64_t busy = fx_seq_fill(f, 0, tok + FX_P, FX_P, NULL);
    uint64_t half = 0, unset = 0;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 7, &half), 0); /* a client died mid-request */
    assert_int_equal(kvs_seq_extend(&f->ss, half, 0, 8, tok, 2 * FX_P, NULL), 0);
    assert_int_equal(kvs_seq_open(&f->ss, 1, 9, &unset), 0);
    kvs_seq_touch(&f->ss, kvs_seq_find(&f->ss, idle, 0), 1000);
    kvs_seq_touch(&f->ss, kvs_seq_find(&f->ss, fresh, 1), 4500);
    kvs_seq_touch(&f->ss, kvs_seq_find(&f->ss, busy, 0), 1000);
    kvs_seq_touch(&f->ss, kvs_seq_find(&f->ss, half, 0), 2000);
    kvs_seq_priv(&f->ss, kvs_seq_find(&f->ss, busy, 0))->busy_job = 77;
    assert_int_equal(f->ss.live, 5);

    assert_int_equal(kvs_seq_expire(&f->ss, 4999, 4000, count_expired, seen), 0); /* 1 ms early */
    assert_int_equal(kvs_seq_expire(&f->ss, 5000, 4000, count_expired, seen), 1);
    fx_check(f);
    assert_int_equal(seen[0], 1);
    assert_int_equal(seen[1], 3);
    assert_null(kvs_seq_find(&f->ss, idle, 0));
    assert_int_equal(kvs_seq_expired(&f->ss, idle, 0), 1);
    assert_int_equal(kvs_seq_expired(&f->ss, idle, 1), 0);     /* another tenant's id */
    assert_int_equal(kvs_seq_expired(&f->ss, fresh, 1), 0);    /* live */
    assert_int_equal(kvs_seq_close(&f->ss, idle, 0, 5), KV_ERR_NOSEQ);
    uint64_t newer; /* an open takes a never used slot: the tombstone stays */
    assert_int_equal(kvs_seq_open(&f->ss, 1, 10, &newer), 0);
    assert_int_not_equal((uint32_t)newer, (uint32_t)idle);
    assert_int_equal(kvs_seq_expired(&f->ss, idle, 0), 1);
    assert_int_equal(kvs_seq_close(&f->ss, newer, 1, 11), 0);
    /* its 2 full pages stay cached: the same prompt finds them */
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, 2 * FX_P + 1, NULL), 2 * FX_P);

    assert_int_equal(kvs_seq_expire(&f->ss, 6000, 4000, count_expired, seen), 1); /* half */
    fx_check(f);
    assert_int_equal(kvs_seq_expired(&f->ss, half, 0), 1);
    assert_int_equal(kvs_prefix_match(&f->ss, 0, tok, 2 * FX_P + 1, NULL), 2 * FX_P);
    assert_non_null(kvs_seq_find(&f->ss, unset, 1)); /* its clock started at the first scan */
    assert_int_equal(kvs_seq_expire(&f->ss, 8998, 4000, count_expired, seen), 1); /* fresh */
    assert_non_null(kvs_seq_find(&f->ss, unset, 1));
    assert_int_equal(kvs_seq_expire(&f->ss, 8999, 4000, count_expired, seen), 1); /* unset */
    assert_int_equal(seen[0], 4);
    assert_int_equal(kvs_seq_expire(&f->ss, 1u << 30, 4000, NULL, NULL), 0); /* busy stays */
    assert_int_equal(f->ss.live, 1);
    kvs_seq_priv(&f->ss, kvs_seq_find(&f->ss, busy, 0))->busy_job = 0;
    assert_int_equal(kvs_seq_expire(&f->ss, 1u << 30, 4000, NULL, NULL), 1);
    assert_int_equal(f->ss.live, 0);
    fx_check(f);
    assert_int_equal(f->pg.n_free + f->pg.n_cached, f->pg.n); /* nothing left pinned */
}

/* Closes by the server itself (expiry, operator) are still told after their slots were
 * reused by many other opens, up to the last KVS_GONE_KEPT of them; client closes are not. */
static void test_gone_kept(void **state)
{
    fx *f = *state;
    uint64_t exp, adm, mine, x;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 1, &exp), 0);
    assert_int_equal(kvs_seq_open(&f->ss, 1, 2, &adm), 0);
    assert_int_equal(kvs_seq_open(&f->ss, 0, 3, &mine), 0);
    assert_int_equal(kvs_seq_close(&f->ss, adm, 1, KVS_REQ_ADMIN), 0);
    assert_int_equal(kvs_seq_close(&f->ss, mine, 0, 4), 0);
    kvs_seq_touch(&f->ss, kvs_seq_find(&f->ss, exp, 0), 10);
    assert_int_equal(kvs_seq_expire(&f->ss, 20, 10, NULL, NULL), 1);
    for (uint32_t i = 0; i < 3 * f->h->max_seqs; i++) { /* every slot taken again */
        assert_int_equal(kvs_seq_open(&f->ss, 0, 100 + i, &x), 0);
        assert_int_equal(kvs_seq_close(&f->ss, x, 0, 100 + i), 0);
    }
    assert_int_equal(kvs_seq_expired(&f->ss, exp, 0), 1);
    assert_int_equal(kvs_seq_expired(&f->ss, exp, 1), 0);             /* not tenant 1's */
    assert_int_equal(kvs_seq_closed_by(&f->ss, exp, 0, KVS_REQ_ADMIN), 0);
    assert_int_equal(kvs_seq_closed_by(&f->ss, adm, 1, KVS_REQ_ADMIN), 1);
    assert_int_equal(kvs_seq_expired(&f->ss, adm, 1), 0);
    assert_int_equal(kvs_seq_closed_by(&f->ss, mine, 0, 4), 0);       /* tombstone reused */
    for (uint32_t i = 0; i < KVS_GONE_KEPT - 2; i++) {                /* fill the ring but one */
        assert_int_equal(kvs_seq_open(&f->ss, 0, 1, &x), 0);
        assert_int_equal(kvs_seq_close(&f->ss, x, 0, KVS_REQ_ADMIN), 0);
    }
    assert_int_equal(kvs_seq_closed_by(&f->ss, adm, 1, KVS_REQ_ADMIN), 1);
    assert_int_equal(kvs_seq_expired(&f->ss, exp, 0), 1);
    assert_int_equal(kvs_seq_open(&f->ss, 0, 1, &x), 0);              /* the oldest goes */
    assert_int_equal(kvs_seq_close(&f->ss, x, 0, KVS_REQ_ADMIN), 0);
    assert_int_equal(kvs_seq_closed_by(&f->ss, adm, 1, KVS_REQ_ADMIN), 0);
    assert_int_equal(kvs_seq_expired(&f->ss, exp, 0), 1);
    assert_int_equal(kvs_seq_closed_by(&f->ss, x, 0, KVS_REQ_ADMIN), 1);
    fx_check(f);
}

/* A tenant's limit of open sequences: open and fork past it fail with QUOTA and change
 * nothing; other tenants are not limited by it; a close makes room. */
static void test_tenant_max_seqs(void **state)
{
    fx *f = *state;
    f->ss.tenant_max[0] = 2;
    uint64_t a, b, c, d;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 1, &a), 0);
    assert_int_equal(kvs_seq_open(&f->ss, 0, 2, &b), 0);
    assert_int_equal(kvs_seq_open(&f->ss, 0, 3, &c), KV_ERR_QUOTA);
    assert_int_equal(kvs_seq_fork(&f->ss, a, 0, 4, &c), KV_ERR_QUOTA);
    assert_int_equal(f->ss.live, 2);
    assert_int_equal(f->ss.per_tenant[0], 2);
    assert_int_equal(kvs_seq_open(&f->ss, 1, 5, &d), 0); /* tenant 1: no limit */
    assert_int_equal(kvs_seq_close(&f->ss, b, 0, 6), 0);
    assert_int_equal(kvs_seq_fork(&f->ss, a, 0, 7, &c), 0);
    assert_int_equal(f->ss.per_tenant[0], 2);
    fx_check(f);
}

/* Fork of an empty sequence (into a slot never used before), and fork of a fork. */
static void test_fork_empty(void **state)
{
    fx *f = *state;
    uint64_t e, c, g;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &e), 0);
    assert_int_equal(kvs_seq_fork(&f->ss, e, 0, 0, &c), 0);
    fx_check(f);
    const kva_seq *rc = kvs_seq_find(&f->ss, c, 0);
    assert_non_null(rc);
    assert_int_equal(rc->len, 0);
    assert_int_equal(rc->tail, NONE);
    uint32_t tok[FX_P + 1], cached = 9;
    fx_tokens(tok, FX_P + 1, 50);
    assert_int_equal(kvs_seq_extend(&f->ss, c, 0, 0, tok, FX_P + 1, &cached), 0);
    assert_int_equal(cached, 0);
    fx_check(f);
    fx_layers_done(f, c, 0);
    assert_int_equal(kvs_seq_fork(&f->ss, c, 0, 0, &g), 0);
    fx_check(f);
    assert_int_equal(kvs_page(&f->pg, fx_priv(f, c, 0)->pt[0])->ref, 2);
    assert_int_equal(kvs_seq_close(&f->ss, e, 0, 0), 0);
    assert_int_equal(kvs_seq_close(&f->ss, c, 0, 0), 0);
    assert_int_equal(kvs_seq_close(&f->ss, g, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 1);
    assert_int_equal(f->pg.n_free, 7);
}

/* While a copy is pending the shared page stays held: the parent appending then gets a copy
 * too, and a sequence closed before its copy is done drops its hold; the shared page goes
 * with the last hold. */
static void test_cow_hold(void **state)
{
    fx *f = *state;
    uint32_t tok[6], x = 70, y = 80;
    fx_tokens(tok, 6, 1);
    uint64_t s = fx_seq_fill(f, 0, tok, 6, NULL), c;
    assert_int_equal(kvs_seq_fork(&f->ss, s, 0, 0, &c), 0);
    uint32_t shared = fx_priv(f, s, 0)->pt[1], free0 = f->pg.n_free;
    assert_int_equal(kvs_seq_extend(&f->ss, c, 0, 0, &x, 1, NULL), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, s, 0, 0, &y, 1, NULL), 0);
    fx_check(f);
    const kva_seq *rs = kvs_seq_find(&f->ss, s, 0), *rc = kvs_seq_find(&f->ss, c, 0);
    assert_int_equal(rs->cow_src, shared);
    assert_int_equal(rc->cow_src, shared);
    assert_int_not_equal(fx_priv(f, s, 0)->pt[1], shared);
    assert_int_not_equal(fx_priv(f, c, 0)->pt[1], fx_priv(f, s, 0)->pt[1]);
    assert_int_equal(kvs_page(&f->pg, shared)->ref, 2);
    assert_int_equal(f->pg.n_free, free0 - 2);
    kvs_seq_layer_done(&f->ss, kvs_seq_find(&f->ss, c, 0)); /* layer 0 of 2 copied */
    assert_int_equal(kvs_seq_close(&f->ss, c, 0, 0), 0);
    fx_check(f);
    assert_int_equal(kvs_page(&f->pg, shared)->ref, 1);
    assert_int_equal(f->pg.n_free, free0 - 1); /* the child's page, not the shared one */
    fx_layers_done(f, s, 0);
    fx_check(f);
    assert_int_equal(kvs_page(&f->pg, shared)->state, KVA_PAGE_FREE);
    assert_int_equal(f->pg.n_free, free0);
    assert_int_equal(kvs_seq_close(&f->ss, s, 0, 0), 0);
    fx_check(f);
}

/* The copy of a shared tail counts as an allocation: with one free page, a child can
 * append within its tail (copy) but not also take a new page. */
static void test_fork_cow_pressure(void **state)
{
    fx *f = *state;
    uint32_t tok[6], x[3] = { 91, 92, 93 };
    fx_tokens(tok, 6, 1);
    uint64_t s = fx_seq_fill(f, 0, tok, 6, NULL), c;
    assert_int_equal(kvs_seq_fork(&f->ss, s, 0, 0, &c), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_free, 1);
    snap sn;
    snap_take(f, &sn);
    assert_int_equal(kvs_seq_extend(&f->ss, c, 0, 0, x, 3, NULL), KV_ERR_NOMEM);
    snap_same(f, &sn);
    fx_check(f);
    assert_int_equal(kvs_seq_extend(&f->ss, c, 0, 0, x, 2, NULL), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_free, 0);
    assert_int_not_equal(fx_priv(f, c, 0)->pt[1], fx_priv(f, s, 0)->pt[1]);
    fx_layers_done(f, c, 0);
    assert_int_equal(kvs_page(&f->pg, fx_priv(f, c, 0)->pt[1])->state, KVA_PAGE_COMMITTED);
    /* the parent's tail is its own now: appending needs no page */
    assert_int_equal(kvs_seq_extend(&f->ss, s, 0, 0, x + 2, 1, NULL), 0);
    fx_check(f);
    fx_layers_done(f, s, 0);
    assert_int_equal(kvs_seq_close(&f->ss, s, 0, 0), 0);
    assert_int_equal(kvs_seq_close(&f->ss, c, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 2);
    assert_int_equal(f->pg.n_free, 1);
}

/* ---- dedup ---- */

/* B wrote the same blocks while A committed them and was closed: B attaches to the cached
 * pages (they leave the LRU) and frees its copies. */
static void test_dedup_against_cached(void **state)
{
    fx *f = *state;
    uint32_t tok[2 * FX_P + 1];
    fx_tokens(tok, 2 * FX_P + 1, 4500);
    uint64_t a, b;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &a), 0);
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &b), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, a, 0, 0, tok, 2 * FX_P, NULL), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, b, 0, 0, tok, 2 * FX_P + 1, NULL), 0);
    fx_check(f);
    uint32_t ap[2], bp[3];
    memcpy(ap, fx_priv(f, a, 0)->pt, sizeof(ap));
    memcpy(bp, fx_priv(f, b, 0)->pt, sizeof(bp));
    fx_layers_done(f, a, 0);
    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 2);
    assert_int_equal(f->pg.in_lru[ap[1]], 1);
    fx_layers_done(f, b, 0);
    assert_int_equal(fx_priv(f, b, 0)->pt[0], ap[0]);
    assert_int_equal(fx_priv(f, b, 0)->pt[1], ap[1]);
    assert_int_equal(fx_priv(f, b, 0)->pt[2], bp[2]);
    assert_int_equal(kvs_page(&f->pg, bp[2])->parent, ap[1]);
    assert_int_equal(f->pg.n_cached, 0);
    assert_int_equal(f->pg.in_lru[ap[1]], 0);
    assert_int_equal(kvs_page(&f->pg, ap[0])->ref, 1);
    assert_int_equal(kvs_page(&f->pg, ap[1])->ref, 1);
    assert_int_equal(kvs_page(&f->pg, bp[0])->state, KVA_PAGE_FREE);
    assert_int_equal(kvs_page(&f->pg, bp[1])->state, KVA_PAGE_FREE);
    assert_int_equal(f->pg.n_free, 5);
    assert_int_equal(kvs_seq_close(&f->ss, b, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 2);
    assert_int_equal(f->pg.n_free, 6);
}

static void test_dedup_concurrent(void **state)
{
    fx *f = *state;
    const uint32_t n = 2 * FX_P + 2;
    uint32_t tok[2 * FX_P + 2], ca = 9, cb = 9;
    fx_tokens(tok, n, 3000);
    uint64_t a, b;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &a), 0);
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &b), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, a, 0, 0, tok, n, &ca), 0);
    fx_check(f);
    assert_int_equal(kvs_seq_extend(&f->ss, b, 0, 0, tok, n, &cb), 0);
    fx_check(f);
    assert_int_equal(ca, 0);
    assert_int_equal(cb, 0); /* nothing committed yet */
    assert_int_equal(f->pg.n_free, 10);
    assert_int_equal(f->pg.misses, 4);
    uint32_t ap[3], bp[3];
    memcpy(ap, fx_priv(f, a, 0)->pt, sizeof(ap));
    memcpy(bp, fx_priv(f, b, 0)->pt, sizeof(bp));
    for (uint32_t i = 0; i < 3; i++)
        for (uint32_t j = 0; j < 3; j++)
            assert_int_not_equal(ap[i], bp[j]);

    fx_layers_done(f, a, 0);
    assert_int_equal(f->pg.n_free, 10);
    fx_layers_done(f, b, 0);
    /* b switched to a's committed pages; its copies are freed; its partial tail is its own */
    const kvs_seq *sb = fx_priv(f, b, 0);
    assert_int_equal(sb->n_pt, 3);
    assert_int_equal(sb->pt[0], ap[0]);
    assert_int_equal(sb->pt[1], ap[1]);
    assert_int_equal(sb->pt[2], bp[2]);
    assert_int_equal(kvs_page(&f->pg, bp[0])->state, KVA_PAGE_FREE);
    assert_int_equal(kvs_page(&f->pg, bp[1])->state, KVA_PAGE_FREE);
    assert_int_equal(kvs_page(&f->pg, bp[2])->parent, ap[1]);
    assert_int_equal(kvs_page(&f->pg, bp[2])->state, KVA_PAGE_OPEN);
    assert_int_equal(kvs_page(&f->pg, ap[0])->ref, 2);
    assert_int_equal(kvs_page(&f->pg, ap[1])->ref, 2);
    assert_int_equal(kvs_page(&f->pg, ap[0])->children, 1);
    assert_int_equal(kvs_page(&f->pg, ap[1])->children, 2);
    assert_int_equal(kvs_seq_find(&f->ss, b, 0)->len, n);
    assert_int_equal(kvs_seq_find(&f->ss, b, 0)->tail, bp[2]);
    assert_int_equal(f->pg.n_free, 12);
    assert_int_equal(f->pg.tenant[0].pages, 4);

    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    fx_check(f);
    assert_int_equal(kvs_seq_close(&f->ss, b, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 2);
    assert_int_equal(f->pg.n_free, 14);
    assert_int_equal(f->pg.tenant[0].pages, 2);
}

/* Full pages only, the second sequence completing first. */
static void test_dedup_full_pages(void **state)
{
    fx *f = *state;
    uint32_t tok[2 * FX_P];
    fx_tokens(tok, 2 * FX_P, 4000);
    uint64_t a, b;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &a), 0);
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &b), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, a, 0, 0, tok, 2 * FX_P, NULL), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, b, 0, 0, tok, 2 * FX_P, NULL), 0);
    fx_check(f);
    uint32_t bp[2];
    memcpy(bp, fx_priv(f, b, 0)->pt, sizeof(bp));
    fx_layers_done(f, b, 0);
    fx_layers_done(f, a, 0);
    assert_memory_equal(fx_priv(f, a, 0)->pt, bp, sizeof(bp));
    assert_int_equal(kvs_page(&f->pg, bp[0])->ref, 2);
    assert_int_equal(kvs_page(&f->pg, bp[1])->ref, 2);
    assert_int_equal(kvs_page(&f->pg, bp[0])->children, 1);
    assert_int_equal(kvs_seq_find(&f->ss, a, 0)->tail, bp[1]);
    assert_int_equal(f->pg.n_free, 6);
    assert_int_equal(kvs_seq_close(&f->ss, b, 0, 0), 0);
    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    fx_check(f);
    assert_int_equal(f->pg.n_cached, 2);
    assert_int_equal(f->pg.n_free, 6);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        FX_TEST(test_prefix_reuse, &cfg16),
        FX_TEST(test_long_sequence, &cfg16),
        FX_TEST(test_out_of_memory, &cfg4),
        FX_TEST(test_quota, &cfg12),
        FX_TEST(test_fork_cow, &cfg8),
        FX_TEST(test_seq_errors, &cfg8),
        FX_TEST(test_close_tombstone, &cfg8),
        FX_TEST(test_expire, &cfg16),
        FX_TEST(test_gone_kept, &cfg8),
        FX_TEST(test_tenant_max_seqs, &cfg8),
        FX_TEST(test_fork_empty, &cfg8),
        FX_TEST(test_cow_hold, &cfg8),
        FX_TEST(test_fork_cow_pressure, &cfg3),
        FX_TEST(test_dedup_concurrent, &cfg16),
        FX_TEST(test_dedup_against_cached, &cfg8),
        FX_TEST(test_dedup_full_pages, &cfg8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
