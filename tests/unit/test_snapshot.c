/* test_snapshot — the prefix cache on disk (kvserver/snapshot.c), on arenas in private
 * memory: a snapshot restored into a fresh arena gives back every committed page (tokens,
 * hash, parent, K/V) as cached pages; damage anywhere in the file (a byte changed every few
 * bytes, in two ways, and cuts at as many lengths) never restores a page that differs from
 * the one saved, never breaks the allocator, and keeps the pages of the records before the
 * damage; a record repeated is refused; a full arena or a tenant at its quota restores what
 * fits; another tenant list, or a file others may write, restores nothing; restored pages
 * are evicted in the order of their last use before the snapshot; pages reused between a
 * snapshot's plan and its write (one written while serving) are left out, with their
 * descendants; a cancelled one leaves the last file as it was. */
#include "arena_fixture.h"

#include <lz4frame.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kvserver/log.h"
#include "kvserver/snapshot.h"

static const fx_cfg cfg16 = { 16, 8, 2 };

/* Each fixture builds its own arena; the second one (g) is set up here by hand. */
static fx *fx_new(const fx_cfg *cfg)
{
    void *st = (void *)cfg;
    assert_int_equal(fx_setup(&st), 0);
    return st;
}

static void fx_del(fx *f)
{
    void *st = f;
    fx_teardown(&st);
}

/* A tree of committed pages: two tenants, a shared root with two children for tenant 0
 * (one with a grandchild), one page of tenant 1, a partial page (not saved); K/V filled
 * with a pattern per page. Returns the number of committed pages. */
static uint32_t build(fx *f)
{
    uint32_t a[13], b[9], c[5];
    fx_tokens(a, 13, 100);
    fx_tokens(b, 9, 100);
    b[4] = 7; /* b shares a's first page only */
    fx_tokens(c, 5, 900);
    uint64_t ids[3] = { fx_seq_fill(f, 0, a, 13, NULL), fx_seq_fill(f, 0, b, 9, NULL),
                        fx_seq_fill(f, 1, c, 5, NULL) };
    for (uint32_t p = 0; p < f->pg.n; p++) {
        uint8_t *d = fx_page_data(f, p);
        for (size_t i = 0; i < f->h->page_bytes; i++)
            d[i] = (uint8_t)(p * 37 + i * 11 + (i >> 7));
    }
    assert_int_equal(kvs_seq_close(&f->ss, ids[1], 0, 0), 0); /* some cached, some in use */
    uint32_t n = 0;
    for (uint32_t p = 0; p < f->pg.n; p++)
        n += kvs_page(&f->pg, p)->state == KVA_PAGE_COMMITTED;
    return n; /* a: 3 full pages, b: 1 more, c: 1 */
}

/* Every page restored in g is a committed page of f with the same hash, tokens, tenant,
 * parent's hash and data; returns how many g holds. */
static uint32_t same_pages(const fx *f, const fx *g)
{
    uint32_t n = 0;
    for (uint32_t q = 0; q < g->pg.n; q++) {
        const kva_page *dq = kvs_page(&g->pg, q);
        if (dq->state == KVA_PAGE_FREE)
            continue;
        assert_int_equal(dq->state, KVA_PAGE_COMMITTED);
        assert_int_equal(dq->ref, 0);
        uint32_t p = kvs_prefix_find(&f->pg, dq->hash);
        assert_int_not_equal(p, KVA_NO_PAGE);
        const kva_page *dp = kvs_page(&f->pg, p);
        assert_int_equal(dp->tenant, dq->tenant);
        assert_memory_equal(dp->tokens, dq->tokens, FX_P * sizeof(uint32_t));
        assert_int_equal(dp->parent == KVA_NO_PAGE, dq->parent == KVA_NO_PAGE);
        if (dp->parent != KVA_NO_PAGE)
            assert_memory_equal(kvs_page(&f->pg, dp->parent)->hash,
                                kvs_page(&g->pg, dq->parent)->hash, KVA_HASH_BYTES);
        assert_memory_equal(fx_page_data(f, p), fx_page_data(g, q), f->h->page_bytes);
        n++;
    }
    assert_int_equal(n, g->pg.n_cached);
    return n;
}

static int load(fx *g, const char *path, kvs_snap_stats *st)
{
    char why[256];
    return kvs_snapshot_load(&g->pg, (const uint8_t (*)[KVA_HASH_BYTES])g->salt, path, st,
                             why, sizeof(why));
}

/* A new arena restored from path: `pages` pages, each f's committed page unchanged. */
static fx *restored(const fx *f, const char *path, uint32_t pages)
{
    kvs_snap_stats st;
    fx *g = fx_new(&cfg16);
    assert_int_equal(load(g, path, &st), 0);
    assert_int_equal(st.pages, pages);
    fx_check(g);
    assert_int_equal(same_pages(f, g), pages);
    return g;
}

static void tmp_path(char *path, size_t len)
{
    snprintf(path, len, "/tmp/kvarena-test-snapshot-%d", (int)getpid());
}

static void test_round_trip(void **state)
{
    (void)state;
    fx *f = fx_new(&cfg16);
    uint32_t n = build(f);
    char path[128], why[256];
    tmp_path(path, sizeof(path));
    kvs_snap_stats st;
    assert_int_equal(kvs_snapshot_save(&f->pg, path, &st, why, sizeof(why)), 0);
    assert_int_equal(st.pages, n);
    fx *g = restored(f, path, n);
    /* the evictable ones in the order of their last use in f, oldest at the tail */
    uint32_t leaves = 0;
    uint64_t last = 0;
    for (uint32_t q = g->pg.lru_tail; q != KVA_NO_PAGE; q = g->pg.lru_prev[q], leaves++) {
        uint64_t t = kvs_page(&f->pg, kvs_prefix_find(&f->pg, kvs_page(&g->pg, q)->hash))->tick;
        assert_true(t > last);
        last = t;
    }
    assert_int_equal(leaves, 3); /* a's last full page, b's own, c's */
    /* a restored prefix is found: a's 13 tokens give 3 full pages */
    uint32_t a[13];
    fx_tokens(a, 13, 100);
    assert_int_equal(kvs_prefix_match(&g->ss, 0, a, 13, NULL), 12);
    fx_del(g);

    /* room for 3 pages: what fits, parents first; a tenant at its quota gets none */
    const fx_cfg small = { 3, 8, 2 };
    g = fx_new(&small);
    assert_int_equal(load(g, path, &st), 0);
    assert_int_equal(st.pages, 3);
    fx_check(g);
    same_pages(f, g);
    fx_del(g);
    g = fx_new(&cfg16);
    g->pg.tenant[0].quota = 1;
    assert_int_equal(load(g, path, &st), 0);
    assert_int_equal(st.pages, 2); /* tenant 0's root, tenant 1's page */
    fx_check(g);
    same_pages(f, g);
    fx_del(g);

    /* a file others may write: nothing (whoever can write it could plant K/V) */
    assert_int_equal(chmod(path, 0666), 0);
    g = fx_new(&cfg16);
    assert_int_equal(kvs_snapshot_load(&g->pg, (const uint8_t (*)[KVA_HASH_BYTES])g->salt, path,
                                       &st, why, sizeof(why)), KV_ERR_INVAL);
    assert_non_null(strstr(why, "writable by it alone"));
    assert_int_equal(g->pg.n_cached, 0);
    fx_del(g);
    assert_int_equal(chmod(path, 0600), 0);

    /* another tenant list (salts): nothing, and the header says why */
    g = fx_new(&cfg16);
    g->h->tenants_hash[0] ^= 1;
    assert_int_equal(kvs_snapshot_load(&g->pg, (const uint8_t (*)[KVA_HASH_BYTES])g->salt, path,
                                       &st, why, sizeof(why)), KV_ERR_INVAL);
    assert_non_null(strstr(why, "another tenant list"));
    assert_int_equal(g->pg.n_cached, 0);
    fx_del(g);
    unlink(path);
    fx_del(f);
}

/* A page of f's planned snapshot evicted and reused before its data is written: as the
 * allocator does, its generation moves, then new data lands in it. */
static void reuse_page(fx *f, uint32_t p)
{
    kva_page *d = kvs_page(&f->pg, p);
    __atomic_store_n(&d->gen, d->gen + 1, __ATOMIC_RELEASE);
    memset(fx_page_data(f, p), 0x5a, f->h->page_bytes);
}

/* Plans a snapshot of f, reuses page p, writes the snapshot to path: `pages` written and
 * `skipped` left out; then restores it into a new arena, returned, holding exactly those
 * pages unchanged. */
static fx *save_reusing(fx *f, uint32_t p, const char *path, uint32_t pages, uint32_t skipped)
{
    char why[256];
    kvs_snap_stats st;
    kvs_snap_plan *pl = kvs_snapshot_plan(&f->pg);
    assert_non_null(pl);
    reuse_page(f, p);
    assert_int_equal(kvs_snapshot_write(pl, path, 0, &st, why, sizeof(why)), 0);
    kvs_snapshot_plan_free(pl);
    assert_int_equal(st.pages, pages);
    assert_int_equal(st.skipped, skipped);
    return restored(f, path, pages);
}

/* Written beside a serving server (kvctl snapshot): pages reused between the plan and the
 * write are left out with their descendants; what is written restores whole, unchanged. */
static void test_reused_meanwhile(void **state)
{
    (void)state;
    fx *f = fx_new(&cfg16);
    uint32_t n = build(f), root = KVA_NO_PAGE, deep = KVA_NO_PAGE, other = KVA_NO_PAGE, a[13];
    for (uint32_t p = 0; p < f->pg.n; p++) {
        const kva_page *d = kvs_page(&f->pg, p);
        if (d->state != KVA_PAGE_COMMITTED)
            continue;
        if (d->tenant == 1)
            other = p;
        else if (d->parent == KVA_NO_PAGE)
            root = p;
        else if (kvs_page(&f->pg, d->parent)->parent != KVA_NO_PAGE)
            deep = p; /* a's third page: a leaf */
    }
    assert_int_not_equal(root, KVA_NO_PAGE);
    assert_int_not_equal(deep, KVA_NO_PAGE);
    assert_int_not_equal(other, KVA_NO_PAGE);
    fx_tokens(a, 13, 100);
    char path[128];
    tmp_path(path, sizeof(path));
    /* tenant 1's page: a record before tenant 0's deeper ones (parents first, by depth), so
     * their parent indexes move down by one in the file */
    fx *g = save_reusing(f, other, path, n - 1, 1);
    assert_int_equal(kvs_prefix_match(&g->ss, 0, a, 13, NULL), 12);
    fx_del(g);
    /* a leaf: it alone is left out; the others' ages are renumbered to fit the count */
    g = save_reusing(f, deep, path, n - 1, 1);
    assert_int_equal(kvs_prefix_match(&g->ss, 0, a, 13, NULL), 8);
    fx_del(g);
    /* the root of tenant 0's tree: all of tenant 0 goes, tenant 1's page stays */
    g = save_reusing(f, root, path, 1, n - 1);
    assert_int_equal(kvs_page(&g->pg, g->pg.lru_tail)->tenant, 1);
    fx_del(g);
    /* cancelled (the server stopping): an error, the last file as it was, no temporary */
    struct stat before, after;
    char why[256], tmp[200];
    kvs_snap_stats st;
    assert_int_equal(stat(path, &before), 0);
    kvs_snap_plan *pl = kvs_snapshot_plan(&f->pg);
    assert_non_null(pl);
    kvs_snapshot_cancel(pl);
    assert_int_equal(kvs_snapshot_write(pl, path, 0, &st, why, sizeof(why)), KV_ERR_SHUTDOWN);
    kvs_snapshot_plan_free(pl);
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(before.st_ino, after.st_ino);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    assert_int_not_equal(access(tmp, F_OK), 0);
    unlink(path);
    fx_del(f);
}

/* A temporary file of a process that is gone (a server killed while writing) is removed at
 * start; a live process's, and names we do not make, stay. */
static void test_clean_tmp(void **state)
{
    (void)state;
    char path[128], dead[160], live[160], other[160];
    tmp_path(path, sizeof(path));
    pid_t child = fork();
    if (child == 0)
        _exit(0);
    assert_true(child > 0);
    assert_int_equal(waitpid(child, NULL, 0), child);
    snprintf(dead, sizeof(dead), "%s.tmp.%d", path, (int)child);
    snprintf(live, sizeof(live), "%s.tmp.%d", path, (int)getpid());
    snprintf(other, sizeof(other), "%s.tmp.notapid", path);
    const char *files[] = { dead, live, other };
    for (int i = 0; i < 3; i++) {
        FILE *f = fopen(files[i], "w");
        assert_non_null(f);
        fclose(f);
    }
    assert_int_equal(kvs_snapshot_clean(path), 1);
    assert_int_not_equal(access(dead, F_OK), 0);
    assert_int_equal(access(live, F_OK), 0);
    assert_int_equal(access(other, F_OK), 0);
    unlink(live);
    unlink(other);
}

static void test_damage(void **state)
{
    (void)state;
    fx *f = fx_new(&cfg16);
    uint32_t n = build(f);
    char path[128], bad[160], why[256];
    tmp_path(path, sizeof(path));
    snprintf(bad, sizeof(bad), "%s.bad", path);
    kvs_snap_stats st;
    assert_int_equal(kvs_snapshot_save(&f->pg, path, &st, why, sizeof(why)), 0);
    FILE *in = fopen(path, "rb");
    assert_non_null(in);
    size_t size = (size_t)st.file_bytes;
    uint8_t *file = malloc(size);
    assert_non_null(file);
    assert_int_equal(fread(file, 1, size, in), size);
    fclose(in);
    /* where each record ends: a page whose record is whole and before the damage is restored */
    size_t *end = malloc(sizeof(size_t) * (n + 1)), at_rec = sizeof(snap_header);
    assert_non_null(end);
    for (uint32_t k = 0; k < n; k++) {
        snap_record r;
        memcpy(&r, file + at_rec, sizeof(r));
        at_rec += sizeof(r) + FX_P * sizeof(uint32_t) + r.data_len;
        end[k] = at_rec;
    }
    assert_int_equal(at_rec, size);
    kvs_log_level = KVS_LOG_ERROR;
    uint32_t worst = n;
    /* a byte in every 7 changed (in two ways), then a cut at every 7th length */
    for (size_t i = 0; i < 3 * size; i += 7) {
        size_t at = i % size, len = i < 2 * size ? size : at;
        uint8_t saved = file[at];
        if (i < 2 * size)
            file[at] ^= i < size ? 0x01 : 0xff;
        FILE *out = fopen(bad, "wb");
        assert_non_null(out);
        assert_int_equal(fwrite(file, 1, len, out), len);
        fclose(out);
        file[at] = saved;
        fx *g = fx_new(&cfg16);
        int rc = load(g, bad, &st);
        assert_true(rc == 0 || rc == KV_ERR_INVAL);
        fx_check(g);
        assert_int_equal(same_pages(f, g), st.pages);
        uint32_t whole = 0; /* records wholly before the damaged byte or the cut */
        while (whole < n && end[whole] <= (i < 2 * size ? at : len))
            whole++;
        if (i < 2 * size && at >= sizeof(snap_header))
            assert_true(st.pages >= whole);
        else if (i >= 2 * size)
            assert_int_equal(st.pages, whole);
        worst = st.pages < worst ? st.pages : worst;
        fx_del(g);
    }
    assert_int_equal(worst, 0); /* some damage was caught before the first page */

    /* a record repeated (the first one again at the end): refused, the others restored */
    snap_header sh;
    memcpy(&sh, file, sizeof(sh));
    sh.n_records++;
    FILE *out = fopen(bad, "wb");
    assert_non_null(out);
    assert_int_equal(fwrite(&sh, sizeof(sh), 1, out), 1);
    assert_int_equal(fwrite(file + sizeof(sh), 1, size - sizeof(sh), out), size - sizeof(sh));
    assert_int_equal(fwrite(file + sizeof(sh), 1, end[0] - sizeof(sh), out), end[0] - sizeof(sh));
    fclose(out);
    fx *g = fx_new(&cfg16);
    assert_int_equal(kvs_snapshot_load(&g->pg, (const uint8_t (*)[KVA_HASH_BYTES])g->salt, bad,
                                       &st, why, sizeof(why)), KV_ERR_INVAL);
    assert_non_null(strstr(why, "a second copy"));
    assert_int_equal(st.pages, n);
    fx_check(g);
    same_pages(f, g);
    fx_del(g);

    /* the first record's frame made again without its checksum (a valid LZ4 frame, the
     * same data): refused, as nothing would detect damage in it */
    size_t pb = f->h->page_bytes, cap = LZ4F_compressFrameBound(pb, NULL);
    uint8_t *plain = malloc(pb), *frame = malloc(cap);
    assert_non_null(plain);
    assert_non_null(frame);
    snap_record r0;
    memcpy(&r0, file + sizeof(snap_header), sizeof(r0));
    size_t at0 = sizeof(snap_header) + sizeof(r0) + FX_P * sizeof(uint32_t);
    LZ4F_dctx *dctx;
    assert_false(LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)));
    size_t dec = pb, src = r0.data_len;
    assert_int_equal(LZ4F_decompress(dctx, plain, &dec, file + at0, &src, NULL), 0);
    LZ4F_freeDecompressionContext(dctx);
    size_t c = LZ4F_compressFrame(frame, cap, plain, pb, NULL); /* defaults: no checksum */
    assert_false(LZ4F_isError(c));
    r0.data_len = (uint32_t)c;
    FILE *o2 = fopen(bad, "wb");
    assert_non_null(o2);
    assert_int_equal(fwrite(file, 1, sizeof(snap_header), o2), sizeof(snap_header));
    assert_int_equal(fwrite(&r0, sizeof(r0), 1, o2), 1);
    assert_int_equal(fwrite(file + sizeof(snap_header) + sizeof(r0), 1, FX_P * 4, o2), FX_P * 4);
    assert_int_equal(fwrite(frame, 1, c, o2), c);
    assert_int_equal(fwrite(file + end[0], 1, size - end[0], o2), size - end[0]);
    fclose(o2);
    g = fx_new(&cfg16);
    assert_int_equal(kvs_snapshot_load(&g->pg, (const uint8_t (*)[KVA_HASH_BYTES])g->salt, bad,
                                       &st, why, sizeof(why)), KV_ERR_INVAL);
    assert_non_null(strstr(why, "does not declare a checksummed page"));
    assert_int_equal(st.pages, 0);
    fx_del(g);
    free(plain);
    free(frame);
    free(end);
    free(file);
    unlink(path);
    unlink(bad);
    fx_del(f);
}

/* kvs_xxh32 is the checksum liblz4 stores (every tail length, and a page); kvs_frame_pack
 * writes liblz4's frame; a frame whose stored data byte changed still decodes, and
 * kvs_frame_unpack refuses it for its checksum (liblz4's own check is off there). */
static void test_xxh32(void **state)
{
    (void)state;
    size_t big = (2u << 20) + 3;
    uint8_t *data = malloc(big);
    assert_non_null(data);
    uint32_t x = 99;
    for (size_t i = 0; i < big; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        data[i] = (uint8_t)x;
    }
    LZ4F_preferences_t pr;
    memset(&pr, 0, sizeof(pr));
    pr.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    size_t cap = LZ4F_compressFrameBound(big, &pr);
    uint8_t *frame = malloc(cap);
    assert_non_null(frame);
    assert_int_equal(kvs_xxh32(data, 0), 0x02cc5d05u); /* the specification's empty input */
    for (size_t n = 1; n <= big; n = n < 100 ? n + 1 : big) {
        size_t c = LZ4F_compressFrame(frame, cap, data, n, &pr);
        assert_false(LZ4F_isError(c));
        uint32_t stored = (uint32_t)frame[c - 4] | (uint32_t)frame[c - 3] << 8 |
                          (uint32_t)frame[c - 2] << 16 | (uint32_t)frame[c - 1] << 24;
        assert_int_equal(kvs_xxh32(data, n), stored);
        if (n == big)
            break;
    }
    size_t pb = 2u << 20;
    /* kvs_frame_pack writes the frame liblz4 writes with its own checksum, byte for byte
     * (random data, and compressible data) */
    uint8_t *lib = malloc(cap), *half = malloc(pb);
    assert_non_null(lib);
    assert_non_null(half);
    for (int k = 0; k < 2; k++) {
        const uint8_t *src = data;
        if (k == 1) { /* a plane of zero bytes (high bytes of tiny values): compressed */
            for (size_t i = 0; i < pb; i++)
                half[i] = i < pb / 2 ? 0 : data[i];
            src = half;
        }
        LZ4F_preferences_t lp;
        memset(&lp, 0, sizeof(lp));
        lp.frameInfo.blockSizeID = LZ4F_max4MB;
        lp.frameInfo.blockMode = LZ4F_blockIndependent;
        lp.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
        lp.frameInfo.contentSize = pb;
        size_t want = LZ4F_compressFrame(lib, cap, src, pb, &lp);
        assert_false(LZ4F_isError(want));
        size_t got = kvs_frame_pack(frame, cap, src, pb);
        assert_int_equal(got, want);
        assert_memory_equal(frame, lib, want);
        if (k == 1)
            assert_true(got < pb * 3 / 4);
    }
    free(lib);
    free(half);
    size_t c = kvs_frame_pack(frame, cap, data, pb);
    assert_true(c > 0);
    uint8_t *out = malloc(pb);
    assert_non_null(out);
    LZ4F_dctx *dctx;
    assert_false(LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)));
    assert_null(kvs_frame_unpack(dctx, frame, c, out, pb));
    assert_memory_equal(out, data, pb);
    frame[c / 2] ^= 0x10; /* random data is stored as is: the byte decodes changed */
    const char *why = kvs_frame_unpack(dctx, frame, c, out, pb);
    assert_non_null(why);
    assert_non_null(strstr(why, "content checksum"));
    LZ4F_freeDecompressionContext(dctx);
    free(out);
    free(frame);
    free(data);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_reused_meanwhile),
        cmocka_unit_test(test_clean_tmp),
        cmocka_unit_test(test_damage),
        cmocka_unit_test(test_xxh32),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
