/* test_cold — the cold tier (kvserver/cold.c) on arenas in private memory: committed pages
 * written to a directory are found again by a fresh arena (the index rebuilt from the
 * segment files) for their tenant only and read back exactly, parents first; a damaged
 * record is not read back (nor the pages after it in the chain) and leaves the index; a
 * segment cut short keeps the records before the cut; under a small cap the oldest pages
 * go with their segments, but a page committed again from the older half is written again;
 * paced writes keep their pace but never hold up a read back;
 * a record whose token ids are not its hash's ends its segment; a
 * file of another kind is removed at open; a directory others may
 * write, or one another server holds, is refused. */
#include "arena_fixture.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "kvserver/cold.h"
#include "kvserver/log.h"
#include "kvserver/snapshot.h"

static const fx_cfg cfg32 = { 32, 8, 2 };

static fx *fx_new(void)
{
    void *st = (void *)&cfg32;
    assert_int_equal(fx_setup(&st), 0);
    return st;
}

static void fx_del(fx *f)
{
    void *st = f;
    fx_teardown(&st);
}

/* A name with glob characters and a space: the tier lists its directory, never globs it. */
static void tmp_dir(char *dir, size_t len)
{
    snprintf(dir, len, "/tmp/kvarena-test-cold [*?]-%d", (int)getpid());
}

static void rm_dir(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static kvs_cold *cold_open(fx *f, const char *dir, uint64_t cap)
{
    kvs_cold *c = NULL;
    char why[256];
    int rc = kvs_cold_open(&c, &f->pg, (const uint8_t (*)[KVA_HASH_BYTES])f->salt, dir, cap, 0,
                           why, sizeof(why));
    if (rc)
        fail_msg("kvs_cold_open: %s", why);
    return c;
}

/* A fresh arena in *f and a cold tier of cap_pages pages' bytes on an empty directory. */
static kvs_cold *fresh(char *dir, size_t len, uint64_t cap_pages, fx **f)
{
    tmp_dir(dir, len);
    rm_dir(dir);
    *f = fx_new();
    return cold_open(*f, dir, cap_pages * (*f)->h->page_bytes);
}

static void finish(fx *f, const char *dir)
{
    fx_del(f);
    rm_dir(dir);
}

typedef struct done_rec {
    int calls;
    uint8_t ok[16];
    uint32_t n;
} done_rec;

static void on_done(void *arg, void *tag, const uint8_t *ok, uint32_t n)
{
    done_rec *d = arg;
    assert_ptr_equal(tag, d);
    assert_true(n <= 16);
    memcpy(d->ok, ok, n);
    d->n = n;
    d->calls++;
}

/* Applies the thread's reports until stored + skipped reaches n (want_done 0) or a restore
 * is reported (want_done 1); 10 s at most. The counts are read before the reports are
 * applied (the thread counts a page before it reports it), so what they count is applied. */
static void cold_wait(kvs_cold *c, uint64_t n, done_rec *d, int want_done)
{
    for (int i = 0; i < 1000; i++) {
        struct pollfd p = { kvs_cold_fd(c), POLLIN, 0 };
        poll(&p, 1, 10);
        kvs_cold_stats st;
        kvs_cold_stats_get(c, &st);
        kvs_cold_poll(c, on_done, d);
        if (want_done ? d->calls > 0 : st.stored + st.skipped >= n)
            return;
    }
    fail_msg("the cold tier did not report in 10 s");
}

/* Applies the thread's reports until the page of hash is on disk for tenant: then every
 * page queued before it is reported too (one thread writes them in order). */
static void cold_wait_has(kvs_cold *c, const uint8_t *hash, uint32_t tenant)
{
    for (int i = 0; i < 1000 && !kvs_cold_has(c, hash, tenant); i++) {
        struct pollfd p = { kvs_cold_fd(c), POLLIN, 0 };
        poll(&p, 1, 10);
        kvs_cold_poll(c, on_done, NULL);
    }
    assert_true(kvs_cold_has(c, hash, tenant));
}

/* Two chains: tenant 0's prompt of 4 full pages (+1 token) into chain, tenant 1's of 2 into
 * t1; K/V filled with random bytes; with c, each committed page stored, chain then t1,
 * parents first. Returns how many were stored. */
static uint32_t build(fx *f, kvs_cold *c, uint32_t chain[4], uint32_t t1[2])
{
    uint32_t a[17], b[9];
    fx_tokens(a, 17, 100);
    fx_tokens(b, 9, 500);
    uint64_t ida = fx_seq_fill(f, 0, a, 17, NULL), idb = fx_seq_fill(f, 1, b, 9, NULL);
    for (uint32_t p = 0; p < f->pg.n; p++) { /* xorshift: as incompressible as K/V are */
        uint8_t *d = fx_page_data(f, p);
        uint32_t x = 0x9e3779b9u ^ (p * 2654435761u);
        for (size_t i = 0; i < f->h->page_bytes; i++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            d[i] = (uint8_t)x;
        }
    }
    memcpy(chain, fx_priv(f, ida, 0)->pt, 4 * sizeof(uint32_t));
    memcpy(t1, fx_priv(f, idb, 1)->pt, 2 * sizeof(uint32_t));
    if (!c)
        return 0;
    for (uint32_t i = 0; i < 4; i++)
        kvs_cold_store(c, chain[i]);
    for (uint32_t i = 0; i < 2; i++)
        kvs_cold_store(c, t1[i]);
    cold_wait(c, 6, NULL, 0);
    return 6;
}

/* In g, reads back f's chain[0 .. n) into new pages and returns what was reported. */
static done_rec read_back(fx *f, fx *g, kvs_cold *c, const uint32_t *chain, uint32_t n,
                          uint32_t *pages)
{
    uint8_t hash[16][KVA_HASH_BYTES];
    uint32_t up = KVA_NO_PAGE;
    for (uint32_t i = 0; i < n; i++) {
        const kva_page *src = kvs_page(&f->pg, chain[i]);
        int err = 0;
        pages[i] = up = kvs_page_alloc(&g->pg, 0, up, &err);
        assert_int_not_equal(up, KVA_NO_PAGE);
        kva_page *d = kvs_page(&g->pg, up);
        memcpy(d->tokens, src->tokens, sizeof(uint32_t) * FX_P);
        d->ntok = FX_P;
        memcpy(hash[i], src->hash, KVA_HASH_BYTES);
    }
    done_rec d = { 0 };
    assert_int_equal(kvs_cold_restore(c, pages, (const uint8_t (*)[KVA_HASH_BYTES])hash, n, &d), 0);
    cold_wait(c, 0, &d, 1);
    assert_int_equal(d.n, n);
    return d;
}

/* Frees the pages read_back allocated, children first. */
static void let_go(fx *g, const uint32_t *pages, uint32_t n)
{
    for (uint32_t i = n; i-- > 0;)
        kvs_page_unref(&g->pg, pages[i]);
    fx_check(g);
}

static void test_round_trip(void **state)
{
    (void)state;
    char dir[128];
    fx *f;
    kvs_cold *c = fresh(dir, sizeof(dir), 128, &f);
    uint32_t chain[4], t1[2], pages[4];
    uint32_t n = build(f, c, chain, t1);
    kvs_cold_stats st;
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.stored, n);
    assert_int_equal(st.pages, n);
    kvs_cold_close(c);
    struct stat ds;
    assert_int_equal(stat(dir, &ds), 0);
    assert_int_equal(ds.st_mode & 0777, 0700);

    fx *g = fx_new(); /* a fresh arena: the index comes from the files */
    c = cold_open(g, dir, 1 << 20);
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.pages, n);
    for (uint32_t i = 0; i < 4; i++) { /* found for their tenant only */
        assert_true(kvs_cold_has(c, kvs_page(&f->pg, chain[i])->hash, 0));
        assert_false(kvs_cold_has(c, kvs_page(&f->pg, chain[i])->hash, 1));
    }
    done_rec d = read_back(f, g, c, chain, 4, pages);
    for (uint32_t i = 0; i < 4; i++) {
        assert_true(d.ok[i]);
        assert_memory_equal(fx_page_data(f, chain[i]), fx_page_data(g, pages[i]),
                            f->h->page_bytes);
        kva_page *pd = kvs_page(&g->pg, pages[i]); /* committed as coldpark.c does */
        pd->nvalid = FX_P;
        pd->state = KVA_PAGE_OPEN;
        assert_int_equal(kvs_page_commit(&g->pg, pages[i], g->salt[0]), pages[i]);
        assert_memory_equal(pd->hash, kvs_page(&f->pg, chain[i])->hash, KVA_HASH_BYTES);
    }
    let_go(g, pages, 4);
    assert_int_equal(g->pg.n_cached, 4);
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.restored, 4);
    assert_int_equal(st.failed, 0);
    kvs_cold_close(c);
    fx_del(g);
    finish(f, dir);
}

static void seg_path(const char *dir, uint32_t id, char *path, size_t len)
{
    snprintf(path, len, "%s/cold-%010u.seg", dir, id);
}

static off_t file_size(const char *path)
{
    struct stat s;
    assert_int_equal(stat(path, &s), 0);
    return s.st_size;
}

/* A byte of the last record's frame changed: it is not read back, nor would anything after
 * it in a chain be; the pages before it are; the record leaves the index. */
static void test_damaged(void **state)
{
    (void)state;
    char dir[128], path[200];
    fx *f;
    kvs_cold *c = fresh(dir, sizeof(dir), 128, &f);
    uint32_t chain[4], t1[2], pages[4];
    build(f, c, chain, t1);
    kvs_cold_close(c);
    seg_path(dir, 0, path, sizeof(path));
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t x; /* the very last byte: the checksum of t1[1]'s frame, stored last */
    off_t end = file_size(path);
    assert_int_equal(pread(fd, &x, 1, end - 1), 1);
    x ^= 0x40;
    assert_int_equal(pwrite(fd, &x, 1, end - 1), 1);
    close(fd);

    fx *g = fx_new();
    c = cold_open(g, dir, 1 << 20);
    uint8_t hash1[KVA_HASH_BYTES];
    memcpy(hash1, kvs_page(&f->pg, t1[1])->hash, KVA_HASH_BYTES);
    assert_true(kvs_cold_has(c, hash1, 1)); /* its header is sound: found at open */
    done_rec d = read_back(f, g, c, t1, 2, pages);
    assert_true(d.ok[0]);
    assert_false(d.ok[1]);
    assert_memory_equal(fx_page_data(f, t1[0]), fx_page_data(g, pages[0]), f->h->page_bytes);
    assert_false(kvs_cold_has(c, hash1, 1)); /* never tried again */
    let_go(g, pages, 2);
    kvs_cold_stats st;
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.failed, 1);
    assert_int_equal(st.restored, 1);
    /* the same damage first in a chain: nothing after it is read back */
    uint32_t back[2] = { t1[1], t1[0] };
    kvs_cold_close(c);
    c = cold_open(g, dir, 1 << 20); /* indexed again from the file */
    d = read_back(f, g, c, back, 2, pages);
    assert_false(d.ok[0]);
    assert_false(d.ok[1]);
    let_go(g, pages, 2);
    kvs_cold_close(c);
    fx_del(g);
    finish(f, dir);
}

/* A segment cut inside its last record keeps the records before it; the next server writes
 * to a segment of its own, under a name no file (here a directory) has. */
static void test_cut(void **state)
{
    (void)state;
    char dir[128], path[200], path1[200];
    fx *f;
    kvs_cold *c = fresh(dir, sizeof(dir), 128, &f);
    uint32_t chain[4], t1[2], pages[4];
    uint32_t n = build(f, c, chain, t1);
    kvs_cold_close(c);
    seg_path(dir, 0, path, sizeof(path));
    assert_int_equal(truncate(path, file_size(path) - 10), 0);
    off_t cut = file_size(path);
    seg_path(dir, 1, path1, sizeof(path1)); /* a name a new segment would take, unusable */
    assert_int_equal(mkdir(path1, 0700), 0);
    fx *g = fx_new();
    c = cold_open(g, dir, 1 << 20);
    kvs_cold_stats st;
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.pages, n - 1);
    assert_false(kvs_cold_has(c, kvs_page(&f->pg, t1[1])->hash, 1));
    done_rec d = read_back(f, g, c, chain, 4, pages);
    for (uint32_t i = 0; i < 4; i++)
        assert_true(d.ok[i]);
    let_go(g, pages, 4);
    uint32_t x[5];
    fx_tokens(x, 5, 900);
    fx_seq_fill(g, 0, x, 5, NULL);
    for (uint32_t p = 0; p < g->pg.n; p++)
        if (kvs_page(&g->pg, p)->state == KVA_PAGE_COMMITTED && kvs_page(&g->pg, p)->ref)
            kvs_cold_store(c, p);
    cold_wait(c, 1, NULL, 0);
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.stored, 1);
    seg_path(dir, 2, path1, sizeof(path1)); /* past the names in use */
    assert_true(file_size(path1) > 0);
    assert_int_equal(file_size(path), cut);
    kvs_cold_close(c);
    fx_del(g);
    finish(f, dir);
}

/* Under a cap of a few pages the oldest go with their segments; the newest stay. */
static void test_cap(void **state)
{
    (void)state;
    char dir[128];
    fx *f;
    kvs_cold *c = fresh(dir, sizeof(dir), 3, &f);
    uint32_t chain[4], t1[2];
    uint32_t n = build(f, c, chain, t1);
    kvs_cold_poll(c, on_done, NULL);
    kvs_cold_stats st;
    kvs_cold_stats_get(c, &st);
    assert_true(st.dropped > 0);
    assert_int_equal(st.pages + st.dropped, n);
    assert_false(kvs_cold_has(c, kvs_page(&f->pg, chain[0])->hash, 0)); /* stored first */
    kvs_cold_close(c);
    /* what is left on disk is what the index held */
    fx *g = fx_new();
    c = cold_open(g, dir, 3 * f->h->page_bytes);
    kvs_cold_stats st2;
    kvs_cold_stats_get(c, &st2);
    assert_int_equal(st2.pages, st.pages);
    assert_true(st2.bytes <= 3 * f->h->page_bytes + 2 * f->h->page_bytes);
    kvs_cold_close(c);
    fx_del(g);
    finish(f, dir);
}

/* A tier in dir of a 5-page cap (4 segments of one page each fit) holding build()'s chain,
 * one page per segment, oldest first; h their hashes. */
static kvs_cold *chain_on_disk(char *dir, size_t len, fx **f, uint32_t chain[4], uint32_t t1[2],
                               const uint8_t *h[4])
{
    kvs_cold *c = fresh(dir, len, 5, f);
    build(*f, NULL, chain, t1);
    for (uint32_t i = 0; i < 4; i++) {
        h[i] = kvs_page(&(*f)->pg, chain[i])->hash;
        kvs_cold_store(c, chain[i]);
    }
    cold_wait_has(c, h[3], 0);
    return c;
}

/* A page committed again (as one read back is) while its copy is in the older half of the
 * segments is written again and outlives its first segment; one in the newer half is not. */
static void test_second_chance(void **state)
{
    (void)state;
    char dir[128];
    fx *f;
    uint32_t chain[4], t1[2], pages[1];
    const uint8_t *h[4];
    kvs_cold *c = chain_on_disk(dir, sizeof(dir), &f, chain, t1, h);
    const uint8_t *u0 = kvs_page(&f->pg, t1[0])->hash, *u1 = kvs_page(&f->pg, t1[1])->hash;
    kvs_cold_store(c, chain[3]); /* in the newest segment: not written again */
    kvs_cold_store(c, chain[0]); /* in the oldest: written again, the oldest segment goes */
    kvs_cold_store(c, t1[0]);    /* the next oldest goes, chain[1] with it */
    cold_wait_has(c, u0, 1);
    kvs_cold_stats st;
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.stored, 6); /* chain[3] was not written again */
    assert_int_equal(st.dropped, 1); /* chain[1]; chain[0]'s first copy went with no page */
    assert_int_equal(st.pages, 4);
    kvs_cold_store(c, t1[1]);
    cold_wait_has(c, u1, 1);
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.dropped, 2);
    assert_true(kvs_cold_has(c, h[0], 0)); /* its second copy */
    assert_false(kvs_cold_has(c, h[1], 0));
    assert_false(kvs_cold_has(c, h[2], 0));
    assert_true(kvs_cold_has(c, h[3], 0));
    kvs_cold_close(c);
    fx *g = fx_new(); /* the second copy reads back whole */
    c = cold_open(g, dir, 5 * f->h->page_bytes);
    done_rec d = read_back(f, g, c, chain, 1, pages);
    assert_true(d.ok[0]);
    assert_memory_equal(fx_page_data(f, chain[0]), fx_page_data(g, pages[0]), f->h->page_bytes);
    let_go(g, pages, 1);
    kvs_cold_close(c);
    fx_del(g);
    finish(f, dir);
}

static void touch_hook(void *arg, uint32_t p)
{
    kvs_cold_touch(arg, p);
}

/* Prefix hits keep hot pages on disk: a second sequence on the prompt attaches its 4 pages
 * through the hit hook; the two whose copies are in the older half of the segments are
 * written again (once, though hit twice before the writer reported), the two in the newer
 * half are not; when the cap then drops the oldest segments, every page of the prompt is
 * still on disk. A page with no copy gets none from a hit. */
static void test_hit_refresh(void **state)
{
    (void)state;
    char dir[128];
    fx *f;
    uint32_t chain[4], t1[2], a[17];
    const uint8_t *h[4];
    kvs_cold *c = chain_on_disk(dir, sizeof(dir), &f, chain, t1, h);
    f->pg.on_hit = touch_hook;
    f->pg.hook_arg = c;
    fx_tokens(a, 17, 100); /* build()'s prompt: its 4 full pages are prefix hits */
    uint32_t cached = 0;
    fx_seq_fill(f, 0, a, 17, &cached);
    assert_int_equal(cached, 16);
    kvs_cold_touch(c, chain[0]); /* a hit again before the writer reported: not queued */
    kvs_cold_touch(c, t1[0]);    /* no copy on disk: a hit writes none */
    cold_wait(c, 6, NULL, 0);
    kvs_cold_stats st;
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.stored, 6);  /* chain[0] and chain[1] again */
    assert_int_equal(st.skipped, 0);
    /* over the cap the two oldest segments went, their pages with newer copies: none lost */
    assert_int_equal(st.dropped, 0);
    assert_int_equal(st.pages, 4);
    for (uint32_t i = 0; i < 4; i++)
        assert_true(kvs_cold_has(c, h[i], 0));
    /* a page committed now is written after all queued before it: none was queued twice,
     * and the hit of a page with no copy queued none */
    kvs_cold_store(c, t1[1]);
    cold_wait_has(c, kvs_page(&f->pg, t1[1])->hash, 1);
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.stored, 7);
    assert_false(kvs_cold_has(c, kvs_page(&f->pg, t1[0])->hash, 1));
    kvs_cold_close(c);
    finish(f, dir);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

/* Paced at 4 pages a second: five pages queued take at least a second to write, and a read
 * back asked for meanwhile does not wait for them. */
static void test_paced(void **state)
{
    (void)state;
    char dir[128], why[256];
    fx *f;
    kvs_cold *c = fresh(dir, sizeof(dir), 128, &f);
    kvs_cold_close(c);
    const size_t pb = f->h->page_bytes;
    assert_int_equal(kvs_cold_open(&c, &f->pg, (const uint8_t (*)[KVA_HASH_BYTES])f->salt, dir,
                                   128 * pb, 4 * pb, why, sizeof(why)), 0);
    uint32_t chain[4], t1[2];
    build(f, NULL, chain, t1);
    const uint8_t *h0 = kvs_page(&f->pg, chain[0])->hash;
    kvs_cold_store(c, chain[0]);
    cold_wait_has(c, h0, 0);
    double t0 = now_s();
    for (uint32_t i = 1; i < 4; i++)
        kvs_cold_store(c, chain[i]);
    kvs_cold_store(c, t1[0]);
    kvs_cold_store(c, t1[1]);
    int err = 0; /* chain[0] read back into a page of its own */
    uint32_t p = kvs_page_alloc(&f->pg, 0, KVA_NO_PAGE, &err);
    memcpy(kvs_page(&f->pg, p)->tokens, kvs_page(&f->pg, chain[0])->tokens, 4 * FX_P);
    kvs_page(&f->pg, p)->ntok = FX_P;
    done_rec d = { 0 };
    usleep(50000); /* the writer waits for its next turn by now */
    double t_ask = now_s();
    assert_int_equal(kvs_cold_restore(c, &p, (const uint8_t (*)[KVA_HASH_BYTES])h0, 1, &d), 0);
    cold_wait(c, 0, &d, 1);
    double t_read = now_s() - t_ask;
    assert_true(d.ok[0]);
    assert_memory_equal(fx_page_data(f, chain[0]), fx_page_data(f, p), pb);
    assert_true(t_read < 0.1); /* not when the writer's turn comes (0.2 s from now) */
    cold_wait(c, 6, NULL, 0);
    assert_true(now_s() - t0 >= 1.0 * 0.99); /* five writes, a quarter second apart */
    kvs_page_unref(&f->pg, p);
    kvs_cold_close(c);
    finish(f, dir);
}

/* A record whose token ids are not the ones its hash was made of ends its segment at open:
 * neither it nor the records after it are indexed. */
static void test_forged(void **state)
{
    (void)state;
    char dir[128], path[200];
    fx *f;
    kvs_cold *c = fresh(dir, sizeof(dir), 128, &f);
    uint32_t chain[4], t1[2];
    build(f, c, chain, t1);
    kvs_cold_close(c);
    seg_path(dir, 0, path, sizeof(path));
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint32_t tok; /* the first record's first token id */
    off_t at = sizeof(snap_header) + sizeof(cold_record);
    assert_int_equal(pread(fd, &tok, sizeof(tok), at), (ssize_t)sizeof(tok));
    assert_int_equal(tok, 100);
    tok = 101;
    assert_int_equal(pwrite(fd, &tok, sizeof(tok), at), (ssize_t)sizeof(tok));
    close(fd);
    c = cold_open(f, dir, 1 << 20);
    kvs_cold_stats st;
    kvs_cold_stats_get(c, &st);
    assert_int_equal(st.pages, 0);
    kvs_cold_close(c);
    finish(f, dir);
}

/* A segment of another kind or shape is removed at open; a directory others may write, or
 * one another server holds, is refused. */
static void test_refused(void **state)
{
    (void)state;
    char dir[128], path[200], why[256];
    fx *f;
    kvs_cold *c = fresh(dir, sizeof(dir), 128, &f);
    kvs_cold *c2 = NULL;
    assert_int_equal(kvs_cold_open(&c2, &f->pg, (const uint8_t (*)[KVA_HASH_BYTES])f->salt, dir,
                                   1 << 20, 0, why, sizeof(why)), KV_ERR_INVAL);
    assert_non_null(strstr(why, "another server"));
    kvs_cold_close(c);
    seg_path(dir, 7, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT, 0600);
    assert_true(fd >= 0);
    char junk[512];
    memset(junk, 'x', sizeof(junk));
    assert_int_equal(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
    close(fd);
    c = cold_open(f, dir, 1 << 20);
    assert_int_equal(access(path, F_OK), -1); /* removed */
    kvs_cold_close(c);
    assert_int_equal(chmod(dir, 0777), 0);
    assert_int_equal(kvs_cold_open(&c2, &f->pg, (const uint8_t (*)[KVA_HASH_BYTES])f->salt, dir,
                                   1 << 20, 0, why, sizeof(why)), KV_ERR_INVAL);
    assert_non_null(strstr(why, "writable by it alone"));
    finish(f, dir);
}

int main(void)
{
    kvs_log_level = KVS_LOG_ERROR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip), cmocka_unit_test(test_damaged),
        cmocka_unit_test(test_cut),        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_second_chance), cmocka_unit_test(test_hit_refresh),
        cmocka_unit_test(test_paced),
        cmocka_unit_test(test_forged),
        cmocka_unit_test(test_refused),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
