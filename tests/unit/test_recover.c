/* test_recover — a server's restart on the arena its predecessor left (kvserver/recover.c),
 * in private memory: the private state is thrown away, kvs_arena_recover validates the
 * descriptors and records, kvs_pages_init / kvs_seqs_init rebuild from them. */
#include "arena_fixture.h"

#include "kvserver/log.h"
#include "kvserver/recover.h"

static const fx_cfg small = { 48, 16, 2 };

/* What a kill -9 + restart does to the allocator and sequences of f. */
static kvs_recover_stats restart(fx *f)
{
    kvs_seqs_free(&f->ss);
    kvs_pages_free(&f->pg);
    kvs_recover_stats st;
    assert_int_equal(kvs_arena_recover(f->h, small.n_tenants, (const uint8_t (*)[KVA_HASH_BYTES])f->salt, &st), 0);
    assert_int_equal(kvs_pages_init(&f->pg, f->h, small.n_tenants), 0);
    assert_int_equal(kvs_seqs_init(&f->ss, f->h, &f->pg, (const uint8_t (*)[KVA_HASH_BYTES])f->salt), 0);
    fx_check(f);
    return st;
}

/* Live sequences (complete and mid-layers) come back with their ids; committed pages of a
 * closed sequence are still prefix hits. */
static void test_state_survives(void **state)
{
    fx *f = *state;
    uint32_t a_tok[10], b_tok[9], c_tok[5];
    fx_tokens(a_tok, 10, 100);
    fx_tokens(b_tok, 9, 500);
    fx_tokens(c_tok, 5, 900);
    uint64_t a = fx_seq_fill(f, 0, a_tok, 10, NULL);
    uint64_t b = fx_seq_fill(f, 1, b_tok, 8, NULL);
    assert_int_equal(kvs_seq_close(&f->ss, b, 1, 0), 0);
    uint64_t c;
    assert_int_equal(kvs_seq_open(&f->ss, 0, 0, &c), 0);
    assert_int_equal(kvs_seq_extend(&f->ss, c, 0, 0, c_tok, 5, NULL), 0);
    kvs_seq_layer_done(&f->ss, kvs_seq_find(&f->ss, c, 0)); /* layer 0 of 2 written */
    uint32_t cached_before = f->pg.n_cached;

    kvs_recover_stats st = restart(f);
    assert_int_equal(st.seqs, 2);
    assert_int_equal(st.seqs_dropped, 0);
    assert_int_equal(st.committed, 2 + 2); /* a's two full pages, b's two */
    kva_seq *ra = kvs_seq_find(&f->ss, a, 0), *rc = kvs_seq_find(&f->ss, c, 0);
    assert_non_null(ra);
    assert_non_null(rc);
    assert_int_equal(ra->len, 10);
    assert_int_equal(rc->pending, 5);
    assert_int_equal(rc->next_layer, 1);
    assert_int_equal(f->pg.n_cached, cached_before);
    /* c continues where it was: its last layer completes it */
    kvs_seq_layer_done(&f->ss, rc);
    assert_int_equal(rc->len, 5);
    fx_check(f);
    /* b's committed pages are hits: 9 tokens -> 2 pages (8 tokens) cached */
    uint32_t cached = 0;
    uint64_t d = fx_seq_fill(f, 1, b_tok, 9, &cached);
    assert_int_equal(cached, 8);
    assert_int_equal(kvs_seq_close(&f->ss, d, 1, 0), 0);
    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    assert_int_equal(kvs_seq_close(&f->ss, c, 0, 0), 0);
    fx_check(f);
    assert_int_equal(fx_in_use(f), 0);
}

/* The evictable pages come back in the order of their last use: the least recently used
 * before the restart is evicted first after it. */
static void test_lru_order_survives(void **state)
{
    fx *f = *state;
    uint32_t ta[FX_P], tb[FX_P], tc[FX_P];
    fx_tokens(tb, FX_P, 300); /* b's page is used first, then c's, then a's */
    fx_tokens(tc, FX_P, 500);
    fx_tokens(ta, FX_P, 100);
    uint64_t b = fx_seq_fill(f, 0, tb, FX_P, NULL);
    uint32_t pb = kvs_seq_priv(&f->ss, kvs_seq_find(&f->ss, b, 0))->pt[0];
    assert_int_equal(kvs_seq_close(&f->ss, b, 0, 0), 0);
    uint64_t c = fx_seq_fill(f, 0, tc, FX_P, NULL);
    uint32_t pc = kvs_seq_priv(&f->ss, kvs_seq_find(&f->ss, c, 0))->pt[0];
    assert_int_equal(kvs_seq_close(&f->ss, c, 0, 0), 0);
    uint64_t a = fx_seq_fill(f, 0, ta, FX_P, NULL);
    uint32_t pa = kvs_seq_priv(&f->ss, kvs_seq_find(&f->ss, a, 0))->pt[0];
    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    /* page numbers are not in the order of use (pages come off the top of the free stack),
     * so an LRU rebuilt in page order would fail below */
    assert_false(pb < pc && pc < pa);
    restart(f);
    assert_int_equal(f->pg.lru_tail, pb);
    assert_int_equal(f->pg.lru_prev[pb], pc);
    assert_int_equal(f->pg.lru_head, pa);
}

/* A server killed in the middle of an extend: the record is put back as it was before the
 * request (undo), the pages the extend took are freed, the partial tail truncated. */
static void test_half_applied_extend(void **state)
{
    fx *f = *state;
    uint32_t tok[13];
    fx_tokens(tok, 13, 40);
    uint64_t a = fx_seq_fill(f, 0, tok, 6, NULL);
    kva_seq *rec = kvs_seq_find(&f->ss, a, 0);
    kva_seq_fields before = rec->f;
    uint32_t free_before = f->pg.n_free;
    assert_int_equal(kvs_seq_extend(&f->ss, a, 0, 0, tok + 6, 7, NULL), 0);
    assert_true(f->pg.n_free < free_before);
    /* as if killed just before change_end(): every store of the extend done, still dirty */
    rec->undo = before;
    rec->dirty = 1;

    kvs_recover_stats st = restart(f);
    assert_int_equal(st.seqs_undone, 1);
    rec = kvs_seq_find(&f->ss, a, 0);
    assert_non_null(rec);
    assert_int_equal(rec->len, 6);
    assert_int_equal(rec->pending, 0);
    assert_int_equal(rec->dirty, 0);
    assert_int_equal(kvs_page(&f->pg, rec->tail)->ntok, 2); /* 6 = 4 + 2 */
    assert_int_equal(f->pg.n_free, free_before);
    /* the client's resend applies it once */
    assert_int_equal(kvs_seq_extend(&f->ss, a, 0, 0, tok + 6, 7, NULL), 0);
    fx_layers_done(f, a, 0);
    assert_int_equal(rec->len, 13);
    assert_int_equal(kvs_seq_close(&f->ss, a, 0, 0), 0);
    fx_check(f);
}

/* A committed page whose tokens no longer match its hash is dropped with everything that
 * hangs from it; the sequence using it is dropped; the rest is kept. */
static void test_corrupt_page_dropped(void **state)
{
    fx *f = *state;
    uint32_t x[12], y[8];
    fx_tokens(x, 12, 7000);
    fx_tokens(y, 8, 8000);
    uint64_t a = fx_seq_fill(f, 0, x, 12, NULL);
    uint64_t b = fx_seq_fill(f, 0, y, 8, NULL);
    kva_seq *ra = kvs_seq_find(&f->ss, a, 0);
    const kvs_seq *sa = kvs_seq_priv(&f->ss, ra);
    kvs_page(&f->pg, sa->pt[1])->tokens[0] ^= 1; /* page 1 of 3: pages 1 and 2 go */

    kvs_log_level = KVS_LOG_ERROR; /* the dropped record is logged as a warning */
    kvs_recover_stats st = restart(f);
    assert_int_equal(st.seqs, 1);
    assert_int_equal(st.seqs_dropped, 1);
    assert_null(kvs_seq_find(&f->ss, a, 0));
    assert_non_null(kvs_seq_find(&f->ss, b, 0));
    uint32_t hit = kvs_prefix_match(&f->ss, 0, x, 12, NULL);
    assert_int_equal(hit, 4); /* only page 0 of x is still a valid block */
    assert_int_equal(kvs_seq_close(&f->ss, b, 0, 0), 0);
    fx_check(f);
    assert_int_equal(fx_in_use(f), 0);
}

/* A copy-on-write in progress survives: the record keeps holding the shared page its
 * remaining layers copy from; half-applied, the extend is undone and the copy freed; a
 * record naming a source that is not a whole held page is dropped. */
static void test_cow_survives(void **state)
{
    fx *f = *state;
    uint32_t tok[6], x = 60, y = 61;
    fx_tokens(tok, 6, 3000);
    uint64_t s = fx_seq_fill(f, 0, tok, 6, NULL), c, d;
    assert_int_equal(kvs_seq_fork(&f->ss, s, 0, 0, &c), 0);
    assert_int_equal(kvs_seq_fork(&f->ss, s, 0, 0, &d), 0);
    uint32_t shared = fx_priv(f, s, 0)->pt[1];
    assert_int_equal(kvs_seq_extend(&f->ss, c, 0, 0, &x, 1, NULL), 0);
    kvs_seq_layer_done(&f->ss, kvs_seq_find(&f->ss, c, 0)); /* layer 0 of 2 copied */
    kva_seq *rd = kvs_seq_find(&f->ss, d, 0);
    kva_seq_fields before = rd->f;
    assert_int_equal(kvs_seq_extend(&f->ss, d, 0, 0, &y, 1, NULL), 0);
    rd->undo = before; /* as if killed before d's extend ended */
    rd->dirty = 1;
    uint32_t free_before = f->pg.n_free + 1; /* d's copy goes back */

    kvs_recover_stats st = restart(f);
    assert_int_equal(st.seqs, 3);
    assert_int_equal(st.seqs_undone, 1);
    kva_seq *rc = kvs_seq_find(&f->ss, c, 0);
    rd = kvs_seq_find(&f->ss, d, 0);
    assert_int_equal(rc->cow_src, shared);
    assert_int_equal(rc->next_layer, 1);
    assert_int_equal(rd->cow_src, KVA_NO_PAGE);
    assert_int_equal(rd->tail, shared);
    assert_int_equal(kvs_page(&f->pg, shared)->ref, 3); /* s and d's tables, c's hold */
    assert_int_equal(f->pg.n_free, free_before);
    kvs_seq_layer_done(&f->ss, rc);
    assert_int_equal(rc->cow_src, KVA_NO_PAGE);
    assert_int_equal(kvs_page(&f->pg, shared)->ref, 2);
    fx_check(f);

    /* d copies again; then its record names a free page as its source: dropped */
    assert_int_equal(kvs_seq_extend(&f->ss, d, 0, 0, &y, 1, NULL), 0);
    assert_int_equal(rd->cow_src, shared);
    for (uint32_t p = 0; p < f->pg.n; p++)
        if (kvs_page(&f->pg, p)->state == KVA_PAGE_FREE)
            rd->cow_src = p;
    assert_int_equal(kvs_page(&f->pg, rd->cow_src)->state, KVA_PAGE_FREE);
    kvs_log_level = KVS_LOG_ERROR; /* the dropped record is logged as a warning */
    st = restart(f);
    assert_int_equal(st.seqs, 2);
    assert_int_equal(st.seqs_dropped, 1);
    assert_null(kvs_seq_find(&f->ss, d, 0));
    assert_int_equal(kvs_page(&f->pg, shared)->ref, 1);
    assert_int_equal(kvs_seq_close(&f->ss, s, 0, 0), 0);
    assert_int_equal(kvs_seq_close(&f->ss, c, 0, 0), 0);
    fx_check(f);
    assert_int_equal(fx_in_use(f), 0);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        FX_TEST(test_state_survives, &small),
        FX_TEST(test_lru_order_survives, &small),
        FX_TEST(test_half_applied_extend, &small),
        FX_TEST(test_corrupt_page_dropped, &small),
        FX_TEST(test_cow_survives, &small),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
