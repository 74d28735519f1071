/* bench_snapshot — the prefix cache on disk (kvserver/snapshot.c) against this machine's
 * own file speed, measured in the same run on the same bytes.
 *
 * An arena in private memory with a Llama-3-8B-shaped page (32 layers, 8 KV heads of 128,
 * 16 tokens, fp16: 2 MiB) holds N committed pages in chains of 16 (finite fp16 values in
 * [-1, 1), their high bytes as varied as real activations' are not: the compression ratio
 * here is a floor). kvs_snapshot_save is timed against writing the same number of bytes
 * to a file with one write + fsync; kvs_snapshot_load into a fresh arena against reading
 * that file back (both from the page cache: what a restart right after a stop sees).
 * Then the cold tier (kvserver/cold.c) on the same pages, against the same two speeds:
 * writing every page (as the server queues each page it commits) and reading them all back
 * into a fresh arena as one prompt's chain (segment files in the page cache too).
 * Usage: bench_snapshot [DIR [PAGES]] (default /tmp, 256 pages = 512 MiB).
 * Output: `BENCH name=... value=... unit=MB/s limit=... pct=...` lines. */
#include <fcntl.h>
#include <poll.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "kvserver/cold.h"
#include "kvserver/log.h"
#include "kvserver/pages.h"
#include "kvserver/snapshot.h"
#include "proto/kverr.h"
#include "tests/unit/arena_mem.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_snapshot: %s\n", what);
    exit(1);
}

/* MB/s of writing `bytes` (src repeated) to path in writes of 64 MiB, then an fsync. */
static double raw_write_rate(const char *path, const uint8_t *src, size_t src_bytes, size_t bytes)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        die("cannot create the raw file");
    double t0 = now();
    for (size_t off = 0; off < bytes;) {
        size_t chunk = bytes - off < (64u << 20) ? bytes - off : (64u << 20);
        ssize_t w = write(fd, src + off % src_bytes, chunk);
        if (w <= 0)
            die("raw write");
        off += (size_t)w;
    }
    fsync(fd);
    double t = now() - t0;
    close(fd);
    return (double)bytes / 1e6 / t;
}

/* A fresh arena of n Llama-3-8B-shaped pages in private memory. */
static kva_header *arena(uint32_t n, kvs_pages *pg)
{
    kva_header *h = arena_mem_new((kvk_geom){ 32, 32, 8, 128, 16, KVK_F16 }, n, 8);
    if (!h)
        die("no arena of that size");
    if (kvs_pages_init(pg, h, 1) != 0)
        die("kvs_pages_init");
    return h;
}

static void on_done(void *arg, void *tag, const uint8_t *ok, uint32_t n)
{
    (void)tag;
    for (uint32_t i = 0; i < n; i++)
        if (!ok[i])
            die("a page was not read back from the cold tier");
    *(int *)arg = 1;
}

/* Waits for the cold tier's reports until *done or every page of pg is stored (done NULL). */
static void cold_wait(kvs_cold *c, const kvs_pages *pg, int *done)
{
    for (;;) {
        struct pollfd p = { kvs_cold_fd(c), POLLIN, 0 };
        poll(&p, 1, 100);
        kvs_cold_poll(c, on_done, done);
        kvs_cold_stats st;
        kvs_cold_stats_get(c, &st);
        if (st.skipped || st.failed)
            die("the cold tier skipped or failed a page");
        if (done ? *done : st.stored == pg->n)
            return;
    }
}

/* The cold tier on the same pages: every committed page written (as the server queues each
 * one it commits), then all of them read back into a fresh arena as one prompt's chain
 * (what an extend after their eviction asks for; the tier opened again on that arena, its
 * index read from the files); against the same file speeds. */
static void cold_bench(kvs_pages *pg, const uint8_t (*salt)[KVA_HASH_BYTES], const char *dir,
                       double lim_w, double lim_r)
{
    char cdir[512], why[256];
    snprintf(cdir, sizeof(cdir), "%s/kvarena-bench-%d.cold", dir, (int)getpid());
    const size_t pb = pg->h->page_bytes;
    const uint32_t n = pg->n;
    kvs_cold *c = NULL;
    if (kvs_cold_open(&c, pg, salt, cdir, 4 * (uint64_t)n * pb, 0, why, sizeof(why)) != 0)
        die(why);
    double t0 = now();
    for (uint32_t p = 0; p < n; p++)
        kvs_cold_store(c, p);
    cold_wait(c, pg, NULL);
    double t_store = now() - t0;
    kvs_cold_stats st;
    kvs_cold_stats_get(c, &st);
    kvs_pages pg3;
    kva_header *h3 = arena(n, &pg3);
    uint32_t *pages = malloc(sizeof(uint32_t) * n), up = KVA_NO_PAGE;
    uint8_t (*hash)[KVA_HASH_BYTES] = malloc(KVA_HASH_BYTES * (size_t)n);
    if (!pages || !hash)
        die("out of memory");
    for (uint32_t i = 0; i < n; i++) { /* page i of the first chain of 16 is page i */
        int err = 0;
        const kva_page *src = kvs_page(pg, i);
        pages[i] = up = kvs_page_alloc(&pg3, 0, i % 16 ? up : KVA_NO_PAGE, &err);
        memcpy(kvs_page(&pg3, up)->tokens, src->tokens, 16 * sizeof(uint32_t));
        kvs_page(&pg3, up)->ntok = 16;
        memcpy(hash[i], src->hash, KVA_HASH_BYTES);
    }
    kvs_cold_close(c); /* a tier serves one arena: opened again on the fresh one */
    if (kvs_cold_open(&c, &pg3, salt, cdir, 4 * (uint64_t)n * pb, 0, why, sizeof(why)) != 0)
        die(why);
    int done = 0;
    t0 = now();
    if (kvs_cold_restore(c, pages, (const uint8_t (*)[KVA_HASH_BYTES])hash, n, &done) != 0)
        die("kvs_cold_restore");
    cold_wait(c, pg, &done);
    double t_restore = now() - t0;
    for (uint32_t i = 0; i < n; i++)
        if (memcmp(kva_data(pg->h) + (size_t)i * pb, kva_data(h3) + (size_t)pages[i] * pb, pb))
            die("a page read back differs");
    double mb = (double)n * pb / 1e6;
    printf("# cold tier: %u pages, %.0f MB of K/V in %.0f MB of segment files\n", n, mb,
           st.bytes / 1e6);
    printf("BENCH name=cold_store value=%.1f unit=MB/s limit=%.1f pct=%.1f\n", mb / t_store,
           lim_w, 100.0 * (mb / t_store) / lim_w);
    printf("BENCH name=cold_restore value=%.1f unit=MB/s limit=%.1f pct=%.1f\n", mb / t_restore,
           lim_r, 100.0 * (mb / t_restore) / lim_r);
    kvs_cold_close(c);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", cdir);
    if (system(cmd) != 0)
        die("cannot remove the cold tier's directory");
    kvs_pages_free(&pg3);
    free(h3);
    free(pages);
    free(hash);
}

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : "/tmp";
    uint32_t n = argc > 2 ? (uint32_t)atoi(argv[2]) : 256;
    if (sodium_init() < 0 || n == 0)
        die("sodium_init");
    kvs_log_level = KVS_LOG_ERROR;
    uint8_t salt[1][KVA_HASH_BYTES] = { { 7 } };
    kvs_pages pg, pg2;
    kva_header *h = arena(n, &pg);
    const size_t pb = h->page_bytes;
    uint32_t x = 12345, tok = 0, parent = KVA_NO_PAGE;
    for (uint32_t i = 0; i < n; i++) { /* chains of 16 pages */
        int err = 0;
        uint32_t p = kvs_page_alloc(&pg, 0, i % 16 ? parent : KVA_NO_PAGE, &err);
        kva_page *d = kvs_page(&pg, p);
        for (uint32_t t = 0; t < 16; t++)
            d->tokens[t] = tok++;
        d->ntok = d->nvalid = 16;
        uint16_t *v = (uint16_t *)(kva_data(h) + (size_t)p * pb);
        for (size_t e = 0; e < pb / 2; e++) {
            x ^= x << 13, x ^= x >> 17, x ^= x << 5;
            v[e] = (uint16_t)(x & 0xbbff);
        }
        if (kvs_page_commit(&pg, p, salt[0]) != p)
            die("commit");
        parent = p;
    }
    char path[512], raw[512], why[256];
    snprintf(path, sizeof(path), "%s/kvarena-bench-%d.snap", dir, (int)getpid());
    snprintf(raw, sizeof(raw), "%s/kvarena-bench-%d.raw", dir, (int)getpid());
    kvs_snap_stats st;
    /* the write limit: the same bytes in plain writes + fsync, before and after the save (this
     * VM's /tmp syncs at very different speeds from one second to the next): the faster */
    size_t data = (size_t)n * pb;
    double w_before = raw_write_rate(raw, kva_data(h), data, data);
    double t0 = now();
    if (kvs_snapshot_save(&pg, path, &st, why, sizeof(why)) != 0)
        die(why);
    double t_save = now() - t0;
    double w_after = raw_write_rate(raw, kva_data(h), data, st.file_bytes);
    double w_limit = w_before > w_after ? w_before : w_after;
    uint8_t *buf = malloc(st.file_bytes);
    int fd = open(raw, O_RDONLY);
    if (!buf || fd < 0)
        die("raw read");
    memset(buf, 0, st.file_bytes); /* resident, as the arena the snapshot is loaded into */
    t0 = now();
    for (size_t off = 0; off < st.file_bytes;) {
        ssize_t r = read(fd, buf + off, st.file_bytes - off);
        if (r <= 0)
            die("raw read");
        off += (size_t)r;
    }
    double t_raw_r = now() - t0;
    close(fd);
    kva_header *h2 = arena(n, &pg2);
    t0 = now();
    if (kvs_snapshot_load(&pg2, (const uint8_t (*)[KVA_HASH_BYTES])salt, path, &st, why,
                          sizeof(why)) != 0 || st.pages != n)
        die(why);
    double t_load = now() - t0;
    for (uint32_t p = 0; p < n; p++) { /* each page found by its hash, with its data */
        uint32_t q = kvs_prefix_find(&pg2, kvs_page(&pg, p)->hash);
        if (q == KVA_NO_PAGE || memcmp(kva_data(h) + (size_t)p * pb, kva_data(h2) + (size_t)q * pb, pb))
            die("a restored page differs");
    }
    double mb = (double)st.data_bytes / 1e6, fmb = (double)st.file_bytes / 1e6;
    printf("# %u pages of %zu bytes: %.0f MB of K/V in a %.0f MB file (ratio %.3f)\n", n, pb, mb,
           fmb, mb / fmb);
    printf("BENCH name=snapshot_save value=%.1f unit=MB/s limit=%.1f pct=%.1f\n", mb / t_save,
           w_limit, 100.0 * (mb / t_save) / w_limit);
    printf("BENCH name=snapshot_restore value=%.1f unit=MB/s limit=%.1f pct=%.1f\n", mb / t_load,
           fmb / t_raw_r, 100.0 * (mb / t_load) / (fmb / t_raw_r));
    cold_bench(&pg, salt, dir, w_limit, fmb / t_raw_r);
    unlink(path);
    unlink(raw);
    kvs_pages_free(&pg);
    kvs_pages_free(&pg2);
    free(h);
    free(h2);
    free(buf);
    return 0;
}
