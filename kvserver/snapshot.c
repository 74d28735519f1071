/* snapshot.c — the prefix cache on disk (see snapshot.h). */
#include "snapshot.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <lz4frame.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "proto/kverr.h"

#define NONE KVA_NO_PAGE

snap_header kvs_snap_header(const kva_header *h, const char *magic, uint32_t n_records)
{
    snap_header s;
    memset(&s, 0, sizeof(s));
    memcpy(s.magic, magic, sizeof(s.magic));
    s.version = KVS_SNAP_VERSION;
    s.layout_version = h->layout_version;
    s.layers = h->layers;
    s.q_heads = h->q_heads;
    s.kv_heads = h->kv_heads;
    s.head_dim = h->head_dim;
    s.page_tokens = h->page_tokens;
    s.dtype = h->dtype;
    s.rope = h->rope;
    s.rope_theta = h->rope_theta;
    s.page_bytes = h->page_bytes;
    memcpy(s.tenants_hash, h->tenants_hash, KVA_HASH_BYTES);
    s.n_records = n_records;
    return s;
}

/* Byte planes of a page: byte b of every element, for b < esize, one plane after another;
 * runs of similar bytes (exponents) are what LZ4 finds. unplane is its inverse. */
void kvs_page_planes(uint8_t *dst, const uint8_t *src, size_t bytes, size_t esize)
{
    size_t n = bytes / esize;
    if (esize == 2) { /* the page's dtype: a loop over whole elements the compiler vectorizes */
        for (size_t i = 0; i < n; i++) {
            uint16_t v;
            memcpy(&v, src + 2 * i, 2);
            dst[i] = (uint8_t)v;
            dst[n + i] = (uint8_t)(v >> 8);
        }
        return;
    }
    for (size_t b = 0; b < esize; b++)
        for (size_t i = 0; i < n; i++)
            dst[b * n + i] = src[i * esize + b];
}

void kvs_page_unplanes(uint8_t *dst, const uint8_t *src, size_t bytes, size_t esize)
{
    size_t n = bytes / esize;
    if (esize == 2) {
        for (size_t i = 0; i < n; i++) {
            uint16_t v = (uint16_t)(src[i] | src[n + i] << 8);
            memcpy(dst + 2 * i, &v, 2);
        }
        return;
    }
    for (size_t b = 0; b < esize; b++)
        for (size_t i = 0; i < n; i++)
            dst[i * esize + b] = src[b * n + i];
}

static size_t elem_size(const kva_header *h)
{
    return kvk_dtype_size((kvk_dtype)h->dtype);
}

/* XXH32 (seed 0), the content checksum of an LZ4 frame, as the xxHash specification
 * gives it. liblz4 1.9.4 verifies it at 1.9 GB/s on the Zen 5 VM of the README's figures;
 * this loop runs at 11-12 GB/s there, so frames are decoded with the library's checks off
 * and checked here (a 2 MiB page: 54 GB/s decoded, then this). */
#define XXH_P1 2654435761u
#define XXH_P2 2246822519u
#define XXH_P3 3266489917u
#define XXH_P4 668265263u
#define XXH_P5 374761393u

static inline uint32_t xxh_rotl(uint32_t x, int r)
{
    return (x << r) | (x >> (32 - r));
}

static inline uint32_t xxh_read(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint32_t xxh_round(uint32_t acc, uint32_t in)
{
    return xxh_rotl(acc + in * XXH_P2, 13) * XXH_P1;
}

uint32_t kvs_xxh32(const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len;
    uint32_t h;
    if (len >= 16) {
        uint32_t v1 = XXH_P1 + XXH_P2, v2 = XXH_P2, v3 = 0, v4 = 0u - XXH_P1;
        for (; end - p >= 16; p += 16) {
            v1 = xxh_round(v1, xxh_read(p));
            v2 = xxh_round(v2, xxh_read(p + 4));
            v3 = xxh_round(v3, xxh_read(p + 8));
            v4 = xxh_round(v4, xxh_read(p + 12));
        }
        h = xxh_rotl(v1, 1) + xxh_rotl(v2, 7) + xxh_rotl(v3, 12) + xxh_rotl(v4, 18);
    } else {
        h = XXH_P5;
    }
    h += (uint32_t)len;
    for (; end - p >= 4; p += 4)
        h = xxh_rotl(h + xxh_read(p) * XXH_P3, 17) * XXH_P4;
    for (; p < end; p++)
        h = xxh_rotl(h + *p * XXH_P5, 11) * XXH_P1;
    h ^= h >> 15;
    h *= XXH_P2;
    h ^= h >> 13;
    h *= XXH_P3;
    return h ^ (h >> 16);
}

/* A page's frame: blocks of 4 MiB (a page of a large model fills one or two), its size and
 * content checksum in the frame, so a decoder checks both. */
static LZ4F_preferences_t frame_prefs(size_t page_bytes)
{
    LZ4F_preferences_t p;
    memset(&p, 0, sizeof(p));
    p.frameInfo.blockSizeID = LZ4F_max4MB;
    p.frameInfo.blockMode = LZ4F_blockIndependent;
    p.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
    p.frameInfo.contentSize = page_bytes;
    return p;
}

size_t kvs_frame_bound(size_t page_bytes)
{
    LZ4F_preferences_t prefs = frame_prefs(page_bytes);
    return LZ4F_compressFrameBound(page_bytes, &prefs);
}

size_t kvs_frame_pack(uint8_t *dst, size_t cap, const uint8_t *planes, size_t page_bytes)
{
    /* liblz4 without its content checksum (it computes it at 1.9 GB/s), then made the frame
     * it writes with one: the flag set in the descriptor (FLG, BD, the 8-byte content size),
     * the descriptor's checksum byte after it recomputed, the page's XXH32 after the end mark
     * (test_snapshot compares the two frames byte for byte) */
    LZ4F_preferences_t prefs = frame_prefs(page_bytes);
    prefs.frameInfo.contentChecksumFlag = LZ4F_noContentChecksum;
    size_t c = LZ4F_compressFrame(dst, cap, planes, page_bytes, &prefs);
    if (LZ4F_isError(c) || c + 4 > cap || c + 4 > UINT32_MAX)
        return 0;
    uint8_t *desc = dst + 4; /* after the magic number */
    if ((desc[0] & 0x0d) != 0x08) /* content size declared, no checksum, no dictionary */
        return 0;
    desc[0] |= 1u << 2;
    desc[10] = (uint8_t)(kvs_xxh32(desc, 10) >> 8);
    uint32_t sum = kvs_xxh32(planes, page_bytes);
    for (int i = 0; i < 4; i++)
        dst[c + (size_t)i] = (uint8_t)(sum >> 8 * i);
    return c + 4;
}

const char *kvs_frame_unpack(LZ4F_dctx *dctx, const uint8_t *frame, size_t len,
                             uint8_t *planes, size_t page_bytes)
{
    /* a frame that declares a page and its checksum (a frame may omit both: then nothing
     * would check the data), decoded whole to exactly a page, its last 4 bytes (the
     * content checksum) the XXH32 of what it decoded to */
    size_t head = len, out = page_bytes, in, left;
    LZ4F_frameInfo_t fi;
    LZ4F_decompressOptions_t opt = { .skipChecksums = 1 };
    LZ4F_resetDecompressionContext(dctx);
    left = LZ4F_getFrameInfo(dctx, &fi, frame, &head);
    if (LZ4F_isError(left) || fi.contentChecksumFlag != LZ4F_contentChecksumEnabled ||
        fi.contentSize != page_bytes)
        return "its frame does not declare a checksummed page";
    in = len - head;
    left = LZ4F_decompress(dctx, planes, &out, frame + head, &in, &opt);
    if (LZ4F_isError(left))
        return LZ4F_getErrorName(left);
    if (left != 0 || in != len - head || out != page_bytes || len - head < 4)
        return "its data is not a whole page";
    if (kvs_xxh32(planes, page_bytes) != xxh_read(frame + len - 4))
        return "its content checksum does not match its data";
    return NULL;
}

/* Makes a rename in path's directory durable (best effort: the file itself is synced). */
static void sync_dir(const char *path)
{
    char dir[4200];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *(slash == dir ? slash + 1 : slash) = '\0';
    int fd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        fsync(fd);
        close(fd);
    }
}

#define FAIL(rc_, ...) do { snprintf(why, why_len, __VA_ARGS__); rc = (rc_); goto out; } while (0)

/* The committed pages of pg, parents first (by depth: a committed page's parent is
 * committed), into order; rec_of[p] their index there. Depths are found once per page
 * (the path up to a page of known depth is walked and filled in), then counting-sorted:
 * O(pages) whatever the chains' lengths. Returns how many. */
static uint32_t parents_first(const kvs_pages *pg, uint32_t *depth, uint32_t *order,
                              uint32_t *rec_of)
{
    uint32_t n = 0, max_depth = 0;
    for (uint32_t p = 0; p < pg->n; p++) {
        if (kvs_page(pg, p)->state != KVA_PAGE_COMMITTED || depth[p])
            continue;
        uint32_t k = 0, q = p; /* order[] holds the path up, for now */
        while (q != NONE && !depth[q]) {
            order[k++] = q;
            q = kvs_page(pg, q)->parent;
        }
        uint32_t d = q == NONE ? 0 : depth[q];
        while (k > 0) {
            depth[order[--k]] = ++d;
            max_depth = d > max_depth ? d : max_depth;
        }
    }
    uint32_t *start = calloc((size_t)max_depth + 2, sizeof(uint32_t));
    if (!start)
        return UINT32_MAX;
    for (uint32_t p = 0; p < pg->n; p++)
        if (depth[p])
            start[depth[p] + 1]++, n++;
    for (uint32_t d = 1; d <= max_depth + 1; d++)
        start[d] += start[d - 1];
    for (uint32_t p = 0; p < pg->n; p++)
        if (depth[p]) {
            rec_of[p] = start[depth[p]]++;
            order[rec_of[p]] = p;
        }
    free(start);
    return n;
}

struct kvs_snap_plan {
    snap_header sh;            /* n_records: the planned pages */
    const uint8_t *data;       /* the arena's page data */
    size_t pb, es;
    uint32_t P, n;
    const kva_page **desc;     /* [n] the planned pages' descriptors, parents first */
    uint32_t *page;            /* [n] their indexes */
    uint64_t *gen;             /* [n] their generations when planned */
    snap_record *rec;          /* [n] their records; parent a plan index, data_len unset */
    uint32_t *tokens;          /* [n][P] their token ids */
    int cancel;                /* set by kvs_snapshot_cancel: the writer gives up */
};

void kvs_snapshot_cancel(kvs_snap_plan *pl)
{
    __atomic_store_n(&pl->cancel, 1, __ATOMIC_RELAXED);
}

void kvs_snapshot_plan_free(kvs_snap_plan *pl)
{
    if (!pl)
        return;
    free(pl->desc);
    free(pl->page);
    free(pl->gen);
    free(pl->rec);
    free(pl->tokens);
    free(pl);
}

kvs_snap_plan *kvs_snapshot_plan(const kvs_pages *pg)
{
    const kva_header *h = pg->h;
    kvs_snap_plan *pl = calloc(1, sizeof(*pl));
    uint32_t *depth = calloc(pg->n, sizeof(uint32_t)), *order = malloc(sizeof(uint32_t) * pg->n);
    uint32_t *rec_of = malloc(sizeof(uint32_t) * pg->n), n = UINT32_MAX;
    kvs_tick_ref *by_use = malloc(sizeof(kvs_tick_ref) * (pg->n ? pg->n : 1));
    if (pl && depth && order && rec_of && by_use)
        n = parents_first(pg, depth, order, rec_of);
    if (n != UINT32_MAX) {
        pl->P = h->page_tokens;
        pl->desc = malloc(sizeof(*pl->desc) * (n + 1));
        pl->page = malloc(sizeof(uint32_t) * (n + 1));
        pl->gen = malloc(sizeof(uint64_t) * (n + 1));
        pl->rec = calloc(n + 1, sizeof(snap_record));
        pl->tokens = malloc(sizeof(uint32_t) * ((size_t)n * pl->P + 1));
    }
    if (n == UINT32_MAX || !pl->desc || !pl->page || !pl->gen || !pl->rec || !pl->tokens) {
        kvs_snapshot_plan_free(pl);
        pl = NULL;
        goto out;
    }
    pl->sh = kvs_snap_header(h, KVS_SNAP_MAGIC, n);
    pl->data = kva_data(h);
    pl->pb = h->page_bytes;
    pl->es = elem_size(h);
    pl->n = n;
    for (uint32_t i = 0; i < n; i++) { /* ages: the records by their pages' last use */
        by_use[i].tick = kvs_page(pg, order[i])->tick;
        by_use[i].idx = i;
    }
    qsort(by_use, n, sizeof(*by_use), kvs_tick_cmp);
    for (uint32_t i = 0; i < n; i++)
        pl->rec[by_use[i].idx].age = i;
    for (uint32_t i = 0; i < n; i++) {
        const kva_page *d = kvs_page(pg, order[i]);
        snap_record *r = &pl->rec[i];
        pl->desc[i] = d;
        pl->page[i] = order[i];
        pl->gen[i] = d->gen;
        r->tenant = d->tenant;
        r->parent = d->parent == NONE ? NONE : rec_of[d->parent];
        memcpy(r->hash, d->hash, KVA_HASH_BYTES);
        memcpy(pl->tokens + (size_t)i * pl->P, d->tokens, sizeof(uint32_t) * pl->P);
    }
out:
    free(depth);
    free(order);
    free(rec_of);
    free(by_use);
    return pl;
}

/* The generation of a planned page now (the server's thread may be changing it). */
static uint64_t gen_now(const kva_page *d)
{
    return __atomic_load_n(&d->gen, __ATOMIC_ACQUIRE);
}

/* Ages of the n records written (out[i]: plan index of written record i) renumbered
 * 0 .. n-1 in their planned order, and the header's count, put into the file. */
static int patch_ages(int fd, const kvs_snap_plan *pl, const uint32_t *out, const off_t *at,
                      uint32_t n)
{
    kvs_tick_ref *by_age = malloc(sizeof(kvs_tick_ref) * (n ? n : 1));
    if (!by_age)
        return -1;
    for (uint32_t i = 0; i < n; i++)
        by_age[i] = (kvs_tick_ref){ .tick = pl->rec[out[i]].age, .idx = i };
    qsort(by_age, n, sizeof(*by_age), kvs_tick_cmp);
    int rc = 0;
    for (uint32_t k = 0; k < n && rc == 0; k++)
        if (pwrite(fd, &k, sizeof(k), at[by_age[k].idx] + offsetof(snap_record, age)) != sizeof(k))
            rc = -1;
    free(by_age);
    if (rc == 0 && pwrite(fd, &n, sizeof(n), offsetof(snap_header, n_records)) != sizeof(n))
        rc = -1;
    return rc;
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Sleeps until `bytes` took at least bytes / rate seconds since t0 (rate 0: never). */
static void pace(double t0, uint64_t bytes, uint64_t rate)
{
    if (!rate)
        return;
    double wait = (double)bytes / (double)rate - (mono_s() - t0);
    if (wait > 0) {
        struct timespec ts = { (time_t)wait, (long)((wait - (time_t)wait) * 1e9) };
        nanosleep(&ts, NULL);
    }
}

int kvs_snapshot_write(const kvs_snap_plan *pl, const char *path, uint64_t rate,
                       kvs_snap_stats *st, char *why, size_t why_len)
{
    double t0 = mono_s();
    const size_t pb = pl->pb;
    memset(st, 0, sizeof(*st));
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid()); /* never another's */
    int rc = 0, made = 0;
    FILE *f = NULL;
    size_t cap = kvs_frame_bound(pb);
    uint8_t *planes = malloc(pb), *comp = malloc(cap);
    uint32_t *written = malloc(sizeof(uint32_t) * (pl->n + 1)); /* plan index -> record */
    uint32_t *out = malloc(sizeof(uint32_t) * (pl->n + 1)), n = 0; /* record -> plan index */
    off_t *at = malloc(sizeof(off_t) * (pl->n + 1));
    if (!planes || !comp || !written || !out || !at)
        FAIL(KV_ERR_NOMEM, "out of memory for a snapshot of %zu-byte pages", pb);
    /* the owner's alone, as the arena is (every tenant's K/V is in it); a link is refused */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        FAIL(KV_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    made = 1;
    if (!(f = fdopen(fd, "wb"))) {
        close(fd);
        FAIL(KV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    }
    if (fwrite(&pl->sh, sizeof(pl->sh), 1, f) != 1)
        FAIL(KV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    for (uint32_t i = 0; i < pl->n; i++) {
        snap_record r = pl->rec[i];
        written[i] = NONE;
        if (__atomic_load_n(&pl->cancel, __ATOMIC_RELAXED))
            FAIL(KV_ERR_SHUTDOWN, "cancelled after %u of %u pages", i, pl->n);
        /* a page evicted and reused since the plan (its generation moved) is left out, and
         * so are its descendants; its data is copied between two reads of the generation
         * (reuse bumps it before anything is written to the page), so what is written is
         * the committed page's */
        if ((r.parent != NONE && written[r.parent] == NONE) || gen_now(pl->desc[i]) != pl->gen[i]) {
            st->skipped++;
            continue;
        }
        kvs_page_planes(planes, pl->data + (size_t)pl->page[i] * pb, pb, pl->es);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (gen_now(pl->desc[i]) != pl->gen[i]) {
            st->skipped++;
            continue;
        }
        size_t c = kvs_frame_pack(comp, cap, planes, pb);
        if (!c)
            FAIL(KV_ERR_INTERNAL, "LZ4 frame of a %zu-byte page failed", pb);
        r.data_len = (uint32_t)c;
        r.parent = r.parent == NONE ? NONE : written[r.parent];
        at[n] = ftello(f);
        if (fwrite(&r, sizeof(r), 1, f) != 1 ||
            fwrite(pl->tokens + (size_t)i * pl->P, sizeof(uint32_t), pl->P, f) != pl->P ||
            fwrite(comp, 1, c, f) != c)
            FAIL(KV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        written[i] = n;
        out[n++] = i;
        st->pages++;
        st->data_bytes += pb;
        pace(t0, st->data_bytes, rate);
    }
    if (fflush(f) != 0 || (n < pl->n && patch_ages(fileno(f), pl, out, at, n) != 0) ||
        fsync(fileno(f)) != 0)
        FAIL(KV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    st->file_bytes = (uint64_t)ftello(f);
    int closed = fclose(f);
    f = NULL;
    if (closed != 0)
        FAIL(KV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    if (rename(tmp, path) != 0)
        FAIL(KV_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    made = 0;
    sync_dir(path);
out:
    if (f)
        fclose(f);
    if (made)
        unlink(tmp);
    free(planes);
    free(comp);
    free(written);
    free(out);
    free(at);
    return rc;
}

int kvs_snapshot_save(const kvs_pages *pg, const char *path, kvs_snap_stats *st, char *why,
                      size_t why_len)
{
    kvs_snap_plan *pl = kvs_snapshot_plan(pg);
    if (!pl) {
        memset(st, 0, sizeof(*st));
        snprintf(why, why_len, "out of memory for a snapshot of %u pages", pg->n);
        return KV_ERR_NOMEM;
    }
    int rc = kvs_snapshot_write(pl, path, 0, st, why, why_len);
    kvs_snapshot_plan_free(pl);
    return rc;
}

uint32_t kvs_snapshot_clean(const char *path)
{
    char pattern[4200];
    snprintf(pattern, sizeof(pattern), "%s.tmp.*", path);
    glob_t g;
    uint32_t n = 0;
    if (glob(pattern, GLOB_NOSORT, NULL, &g) != 0)
        return 0;
    for (size_t i = 0; i < g.gl_pathc; i++) {
        char *end;
        long pid = strtol(g.gl_pathv[i] + strlen(path) + 5, &end, 10); /* after ".tmp." */
        if (*end || pid <= 0 || kill((pid_t)pid, 0) == 0 || errno != ESRCH)
            continue; /* not a name we make, or its writer may be running */
        if (unlink(g.gl_pathv[i]) == 0)
            n++;
    }
    globfree(&g);
    return n;
}

const char *kvs_snap_header_mismatch(const snap_header *s, const kva_header *h,
                                     const char *magic)
{
    snap_header want = kvs_snap_header(h, magic, s->n_records);
    if (memcmp(s->magic, magic, sizeof(s->magic)) != 0)
        return "not a kvarena file of this kind";
    if (s->version != KVS_SNAP_VERSION)
        return "another snapshot format version";
    if (s->layout_version != want.layout_version || s->page_bytes != want.page_bytes ||
        s->layers != want.layers || s->q_heads != want.q_heads ||
        s->kv_heads != want.kv_heads || s->head_dim != want.head_dim ||
        s->page_tokens != want.page_tokens || s->dtype != want.dtype)
        return "it holds another model shape or page layout";
    if (s->rope != want.rope || s->rope_theta != want.rope_theta)
        return "it holds K rotated with another RoPE setting";
    if (memcmp(s->tenants_hash, want.tenants_hash, KVA_HASH_BYTES) != 0)
        return "it was made with another tenant list";
    return NULL;
}

int kvs_snapshot_load(kvs_pages *pg, const uint8_t (*salt)[KVA_HASH_BYTES], const char *path,
                      kvs_snap_stats *st, char *why, size_t why_len)
{
    const kva_header *h = pg->h;
    const size_t pb = h->page_bytes, es = elem_size(h);
    const uint32_t P = h->page_tokens;
    memset(st, 0, sizeof(*st));
    int rc = 0;
    uint32_t *map = NULL, *tenant_of = NULL, *tokens = malloc(sizeof(uint32_t) * P);
    uint64_t base = 0, tick_end = 0; /* restored pages get ticks base + 1 + age */
    uint8_t (*hashes)[KVA_HASH_BYTES] = NULL;
    size_t cap = kvs_frame_bound(pb);
    uint8_t *planes = malloc(pb), *comp = malloc(cap);
    LZ4F_dctx *dctx = NULL;
    FILE *f = fopen(path, "rb");
    if (!f)
        FAIL(KV_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (!tokens || !planes || !comp ||
        LZ4F_isError(LZ4F_createDecompressionContext(&dctx, LZ4F_VERSION)))
        FAIL(KV_ERR_NOMEM, "out of memory");
    struct stat fs;
    if (fstat(fileno(f), &fs) != 0)
        FAIL(KV_ERR_IO, "cannot stat %s: %s", path, strerror(errno));
    /* whoever can write the file can plant K/V under any prefix: the server's own only */
    if (fs.st_uid != geteuid() || (fs.st_mode & 022))
        FAIL(KV_ERR_INVAL, "%s is not restored: it must belong to uid %d and be writable by it "
             "alone (it is uid %d, mode %03o)", path, (int)geteuid(), (int)fs.st_uid,
             (unsigned)(fs.st_mode & 0777));
    snap_header sh;
    const char *bad;
    if (fread(&sh, sizeof(sh), 1, f) != 1)
        FAIL(KV_ERR_INVAL, "%s: too short for a snapshot header", path);
    if ((bad = kvs_snap_header_mismatch(&sh, h, KVS_SNAP_MAGIC)))
        FAIL(KV_ERR_INVAL, "%s does not fit this arena: %s", path, bad);
    /* each record takes at least its header and token ids */
    if (sh.n_records > (uint64_t)fs.st_size / (sizeof(snap_record) + sizeof(uint32_t) * P))
        FAIL(KV_ERR_INVAL, "%s: %u records cannot fit its %lld bytes", path, sh.n_records,
             (long long)fs.st_size);
    size_t nr = sh.n_records ? sh.n_records : 1;
    base = h->tick;
    tick_end = base + 1 + sh.n_records;
    map = malloc(sizeof(uint32_t) * nr);
    tenant_of = malloc(sizeof(uint32_t) * nr);
    hashes = malloc(KVA_HASH_BYTES * nr);
    if (!map || !tenant_of || !hashes)
        FAIL(KV_ERR_NOMEM, "out of memory for %u records", sh.n_records);
    for (uint32_t i = 0; i < sh.n_records; i++) {
        snap_record r;
        map[i] = NONE;
        if (fread(&r, sizeof(r), 1, f) != 1 || fread(tokens, sizeof(uint32_t), P, f) != P)
            FAIL(KV_ERR_INVAL, "%s: record %u of %u is cut short", path, i, sh.n_records);
        if (r.tenant >= pg->n_tenants || (r.parent != NONE && r.parent >= i) ||
            (r.parent != NONE && tenant_of[r.parent] != r.tenant) || r.data_len > cap ||
            r.age >= sh.n_records)
            FAIL(KV_ERR_INVAL, "%s: record %u is malformed", path, i);
        tenant_of[i] = r.tenant;
        uint8_t want[KVA_HASH_BYTES];
        kvs_block_hash(r.parent == NONE ? NULL : hashes[r.parent], salt[r.tenant], tokens, P,
                       want);
        memcpy(hashes[i], r.hash, KVA_HASH_BYTES);
        if (memcmp(want, r.hash, KVA_HASH_BYTES) != 0)
            FAIL(KV_ERR_INVAL, "%s: record %u: its block hash is not its tokens'", path, i);
        if (fread(comp, 1, r.data_len, f) != r.data_len)
            FAIL(KV_ERR_INVAL, "%s: record %u: its data is cut short", path, i);
        if ((bad = kvs_frame_unpack(dctx, comp, r.data_len, planes, pb)))
            FAIL(KV_ERR_INVAL, "%s: record %u: %s", path, i, bad);
        uint32_t parent = r.parent == NONE ? NONE : map[r.parent];
        const kvs_tenant_pages *tp = &pg->tenant[r.tenant];
        if ((r.parent != NONE && parent == NONE) || (tp->quota && tp->pages >= tp->quota))
            continue; /* its parent was not restored, or its tenant is at its quota */
        if (pg->n_free == 0)
            break; /* the arena is full: what fits is restored */
        if (kvs_prefix_find(pg, r.hash) != NONE)
            FAIL(KV_ERR_INVAL, "%s: record %u: a second copy of a block", path, i);
        int err = 0;
        uint32_t p = kvs_page_alloc(pg, r.tenant, parent, &err);
        kva_page *d = kvs_page(pg, p);
        memcpy(d->tokens, tokens, sizeof(uint32_t) * P);
        d->ntok = d->nvalid = P;
        d->state = KVA_PAGE_OPEN;
        kvs_page_unplanes(kva_data(h) + (size_t)p * pb, planes, pb, es); /* checked: its sum */
        uint32_t q = kvs_page_commit(pg, p, salt[r.tenant]);
        assert(q == p && !memcmp(d->hash, r.hash, KVA_HASH_BYTES)); /* checked above */
        (void)q;
        kvs_page_unref(pg, p); /* cached */
        d->tick = base + 1 + r.age; /* the header's tick moves past them all at the end */
        map[i] = p;
        st->pages++;
        st->data_bytes += pb;
    }
out:
    if (st->pages) { /* every restored page's tick is base + 1 + its age: oldest evicted first */
        if (pg->h->tick < tick_end)
            pg->h->tick = tick_end;
        kvs_pages_lru_by_tick(pg); /* out of memory: load order, still a valid LRU */
    }
    if (f) {
        st->file_bytes = (uint64_t)ftell(f);
        fclose(f);
    }
    LZ4F_freeDecompressionContext(dctx);
    free(map);
    free(tenant_of);
    free(hashes);
    free(tokens);
    free(planes);
    free(comp);
    return rc;
}
