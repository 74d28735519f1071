/* fuzz_cold — libFuzzer target: the cold tier (kvserver/cold.c) opening a directory whose
 * segment file the input describes, then reading back every page it indexed, on a small
 * arena in private memory (tests/unit/arena_fixture.h). Structure-aware: most inputs
 * describe records made valid (hash chained from the parent's, LZ4 frame with size and
 * checksum) with optional damage (a hash bit, a tenant out of range, a data length off, a
 * frame without its checksum, a frame byte, a cut at the end); with bit 0 of the first byte
 * the rest of the input is the segment's body verbatim after a valid header.
 * Checks: opening never fails on the file's content; a page read back holds exactly the K/V
 * of a record described with its hash, tenant and tokens, never from a frame without its
 * checksum, a damaged hash or a wrong length; the allocator's invariants after all. A
 * damaged frame byte may leave the K/V as they were (an LZ4 match offset moved within a run
 * of equal bytes: the content checksum still holds), so such a record may be read back,
 * its K/V compared like any other's. */
#include "tests/unit/arena_fixture.h"

#include <fcntl.h>
#include <lz4frame.h>
#include <poll.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kvserver/cold.h"
#include "kvserver/log.h"
#include "kvserver/snapshot.h"
#include "tests/fuzz/fuzz_bytes.h"

#define MAXR 24
typedef struct spec {
    cold_record rec;         /* as written (tenant, hash maybe damaged) */
    uint32_t tokens[FX_P];
    int sound;               /* written whole, with its checksum: may be read back (if a
                              * damaged byte left its K/V as they were: compared below) */
    uint8_t *page;           /* its K/V */
} spec;
static spec sp[MAXR];

#define DIE(...) do { fprintf(stderr, "FUZZ CHECK: " __VA_ARGS__); fprintf(stderr, "\n"); abort(); } while (0)

static void on_done(void *arg, void *tag, const uint8_t *ok, uint32_t n)
{
    (void)tag;
    if (n != 1)
        DIE("a restore of 1 page reported %u", n);
    *(int *)arg = 1 + ok[0];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    static char dir[64], seg[96];
    if (!init) {
        if (sodium_init() < 0)
            abort();
        kvs_log_level = KVS_LOG_ERROR;
        snprintf(dir, sizeof(dir), "/tmp/fuzzcold-%d", (int)getpid());
        snprintf(seg, sizeof(seg), "%s/cold-0000000000.seg", dir);
        init = 1;
    }
    if (size < 2)
        return 0;
    in = data, in_len = size, in_pos = 0;
    uint8_t mode = u8();
    fx_cfg cfg = { 16, 8, 2 };
    void *stp = &cfg;
    if (fx_setup(&stp))
        abort();
    fx *f = stp;
    const size_t pb = f->h->page_bytes, es = 4;
    snap_header sh = kvs_snap_header(f->h, KVS_COLD_MAGIC, 0);
    blen = 0;
    put(&sh, sizeof(sh));
    uint32_t nspec = 0;
    if (mode & 1) {
        put(data + in_pos, size - in_pos);
    } else {
        uint32_t n = u8() % MAXR;
        size_t cap = kvs_frame_bound(pb);
        uint8_t *planes = malloc(pb), *frame = malloc(cap);
        for (uint32_t i = 0; i < n; i++) {
            spec *s = &sp[nspec++];
            s->page = malloc(pb);
            uint8_t tb = u8(), pbyte = u8(), fl = u8();
            cold_record *r = &s->rec;
            memset(r, 0, sizeof(*r));
            r->tenant = fl & 1 ? tb : tb % 2;
            for (uint32_t t = 0; t < FX_P; t++)
                s->tokens[t] = u8() & 7;
            const spec *up = i && pbyte != 0xff ? &sp[pbyte % i] : NULL;
            r->has_parent = up != NULL;
            if (up)
                memcpy(r->parent, up->rec.hash, KVA_HASH_BYTES);
            kvs_block_hash(up ? up->rec.hash : NULL, f->salt[r->tenant % KVS_MAX_TENANTS],
                           s->tokens, FX_P, r->hash);
            if (fl & 2)
                r->hash[u8() % KVA_HASH_BYTES] ^= 1;
            /* the K/V follow from the hash: records of one hash hold the same page */
            for (size_t j = 0; j < pb; j++) {
                uint8_t h = r->hash[j % KVA_HASH_BYTES];
                s->page[j] = fl & 0x40 ? (uint8_t)(h ^ (j * 2654435761u >> 13))
                                       : (uint8_t)(r->hash[0] + j / (1 + r->hash[1] % 64));
            }
            kvs_page_planes(planes, s->page, pb, es);
            size_t c;
            if (fl & 4) { /* a frame without its checksum */
                LZ4F_preferences_t pr;
                memset(&pr, 0, sizeof(pr));
                pr.frameInfo.contentSize = pb;
                c = LZ4F_compressFrame(frame, cap, planes, pb, &pr);
                if (LZ4F_isError(c))
                    abort();
            } else if (!(c = kvs_frame_pack(frame, cap, planes, pb))) {
                abort();
            }
            r->data_len = (uint32_t)c;
            if (fl & 8) /* off by a few, never by 0 */
                r->data_len += (uint32_t)(int8_t)(u8() | 1);
            s->sound = r->tenant < f->pg.n_tenants && !(fl & (2 | 4 | 8));
            put(r, sizeof(*r));
            put(s->tokens, sizeof(s->tokens));
            if (fl & 0x80) { /* a damaged frame byte (the change read first, as the corpus was
                              * made) */
                uint8_t x = u8() | 1;
                frame[u8() % c] ^= x;
            }
            put(frame, c);
        }
        free(planes);
        free(frame);
        if (mode & 4 && blen > sizeof(sh)) /* a cut */
            blen -= (u8() | (size_t)u8() << 8) % (blen - sizeof(sh));
    }
    mkdir(dir, 0700);
    int fd = open(seg, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || write(fd, buf, blen) != (ssize_t)blen)
        abort();
    close(fd);
    kvs_cold *c = NULL;
    char why[256];
    if (kvs_cold_open(&c, &f->pg, (const uint8_t (*)[KVA_HASH_BYTES])f->salt, dir, 1 << 20, 0,
                      why, sizeof(why)) != 0)
        DIE("open: %s", why);
    /* every described hash the tier says it holds, read back into a page of its own */
    for (uint32_t i = 0; i < nspec; i++) {
        spec *s = &sp[i];
        if (s->rec.tenant >= f->pg.n_tenants || !kvs_cold_has(c, s->rec.hash, s->rec.tenant))
            continue;
        int err = 0;
        uint32_t p = kvs_page_alloc(&f->pg, s->rec.tenant, KVA_NO_PAGE, &err);
        if (p == KVA_NO_PAGE)
            DIE("no page");
        kva_page *d = kvs_page(&f->pg, p);
        memcpy(d->tokens, s->tokens, sizeof(s->tokens));
        d->ntok = FX_P;
        memset(fx_page_data(f, p), 0xa5, pb);
        int done = 0;
        if (kvs_cold_restore(c, &p, (const uint8_t (*)[KVA_HASH_BYTES])s->rec.hash, 1, &done))
            abort();
        for (int k = 0; !done; k++) {
            if (k == 10000)
                DIE("no report in 10 s");
            struct pollfd pf = { kvs_cold_fd(c), POLLIN, 0 };
            poll(&pf, 1, 1);
            kvs_cold_poll(c, on_done, &done);
        }
        if (done == 2) { /* read back: a sound record of this hash and tokens, its page */
            int match = 0;
            for (uint32_t k = 0; k < nspec && !match; k++)
                match = sp[k].sound && !memcmp(sp[k].rec.hash, s->rec.hash, KVA_HASH_BYTES) &&
                        !memcmp(sp[k].tokens, s->tokens, sizeof(s->tokens)) &&
                        !memcmp(sp[k].page, fx_page_data(f, p), pb);
            if (!match)
                DIE("record %u read back as no sound record holds it", i);
        }
        kvs_page_unref(&f->pg, p);
    }
    kvs_cold_close(c);
    if (kvs_pages_check(&f->pg) != 0)
        DIE("pages check");
    unlink(seg);
    char lock[96];
    snprintf(lock, sizeof(lock), "%s/lock", dir);
    unlink(lock);
    for (uint32_t k = 0; k < nspec; k++)
        free(sp[k].page);
    void *fs = f;
    fx_teardown(&fs);
    return 0;
}
