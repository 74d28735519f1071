/* snapshot.c — the prefix cache on disk (see snapshot.h). */
#include "snapshot.h"

#include <errno.h>
#include <fcntl.h>
#include <lz4.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "proto/kverr.h"

#define NONE KVA_NO_PAGE
#define SNAP_MAGIC "KVSNAP\0\0"
#define SNAP_VERSION 1u
#define SUM_BYTES 16u         /* BLAKE2b-128 of a page's data */
#define REC_RAW 1u            /* record flag: data stored without LZ4 */

/* What must match for stored K/V to mean the same: the page layout and the options that
 * change K as it is stored (RoPE), and the tenants (hash salts, tenant indexes). */
typedef struct snap_header {
    char magic[8];
    uint32_t version, layout_version;
    uint32_t layers, q_heads, kv_heads, head_dim, page_tokens, dtype;
    uint32_t rope;
    float rope_theta;
    uint64_t page_bytes;
    uint8_t tenants_hash[KVA_HASH_BYTES];
    uint32_t n_records, reserved;
} snap_header;

typedef struct snap_record {
    uint32_t tenant;
    uint32_t parent;          /* record index, NONE for a first page */
    uint32_t flags;           /* REC_RAW */
    uint32_t data_len;        /* bytes of data that follow the token ids */
    uint8_t hash[KVA_HASH_BYTES];
    uint8_t sum[SUM_BYTES];
    /* then uint32_t tokens[page_tokens], then data_len bytes */
} snap_record;

static snap_header header_of(const kva_header *h, uint32_t n_records)
{
    snap_header s;
    memset(&s, 0, sizeof(s));
    memcpy(s.magic, SNAP_MAGIC, sizeof(s.magic));
    s.version = SNAP_VERSION;
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
static void plane(uint8_t *dst, const uint8_t *src, size_t bytes, size_t esize)
{
    size_t n = bytes / esize;
    for (size_t b = 0; b < esize; b++)
        for (size_t i = 0; i < n; i++)
            dst[b * n + i] = src[i * esize + b];
}

static void unplane(uint8_t *dst, const uint8_t *src, size_t bytes, size_t esize)
{
    size_t n = bytes / esize;
    for (size_t b = 0; b < esize; b++)
        for (size_t i = 0; i < n; i++)
            dst[i * esize + b] = src[b * n + i];
}

static size_t elem_size(const kva_header *h)
{
    return kvk_dtype_size((kvk_dtype)h->dtype);
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

int kvs_snapshot_save(const kvs_pages *pg, const char *path, kvs_snap_stats *st, char *why,
                      size_t why_len)
{
    const kva_header *h = pg->h;
    const size_t pb = h->page_bytes, es = elem_size(h);
    const uint32_t P = h->page_tokens;
    memset(st, 0, sizeof(*st));
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int rc = 0;
    FILE *f = NULL;
    uint32_t *depth = calloc(pg->n, sizeof(uint32_t)), *order = malloc(sizeof(uint32_t) * pg->n);
    uint32_t *rec_of = malloc(sizeof(uint32_t) * pg->n);
    int cap = LZ4_compressBound((int)pb);
    uint8_t *planes = malloc(pb), *comp = malloc((size_t)cap);
    if (!depth || !order || !rec_of || !planes || !comp || pb > (size_t)INT32_MAX)
        FAIL(KV_ERR_NOMEM, "out of memory for a snapshot of %zu-byte pages", pb);
    /* committed pages, parents first: by depth (a committed page's parent is committed) */
    uint32_t n = 0, max_depth = 0;
    for (uint32_t p = 0; p < pg->n; p++) {
        if (kvs_page(pg, p)->state != KVA_PAGE_COMMITTED)
            continue;
        uint32_t d = 1;
        for (uint32_t q = kvs_page(pg, p)->parent; q != NONE; q = kvs_page(pg, q)->parent)
            d++;
        depth[p] = d;
        max_depth = d > max_depth ? d : max_depth;
        n++;
    }
    uint32_t k = 0;
    for (uint32_t d = 1; d <= max_depth; d++)
        for (uint32_t p = 0; p < pg->n; p++)
            if (depth[p] == d) {
                rec_of[p] = k;
                order[k++] = p;
            }
    if (!(f = fopen(tmp, "wb")))
        FAIL(KV_ERR_IO, "cannot create %s: %s", tmp, strerror(errno));
    snap_header sh = header_of(h, n);
    if (fwrite(&sh, sizeof(sh), 1, f) != 1)
        FAIL(KV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    const uint8_t *data = kva_data(h);
    for (uint32_t i = 0; i < n; i++) {
        const kva_page *d = kvs_page(pg, order[i]);
        const uint8_t *page = data + (size_t)order[i] * pb;
        snap_record r;
        memset(&r, 0, sizeof(r));
        r.tenant = d->tenant;
        r.parent = d->parent == NONE ? NONE : rec_of[d->parent];
        memcpy(r.hash, d->hash, KVA_HASH_BYTES);
        crypto_generichash(r.sum, SUM_BYTES, page, pb, NULL, 0);
        plane(planes, page, pb, es);
        int c = LZ4_compress_default((const char *)planes, (char *)comp, (int)pb, cap);
        const uint8_t *body = c > 0 && (size_t)c < pb ? comp : planes;
        r.flags = body == planes ? REC_RAW : 0;
        r.data_len = body == planes ? (uint32_t)pb : (uint32_t)c;
        if (fwrite(&r, sizeof(r), 1, f) != 1 || fwrite(d->tokens, sizeof(uint32_t), P, f) != P ||
            fwrite(body, 1, r.data_len, f) != r.data_len)
            FAIL(KV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
        st->pages++;
        st->data_bytes += pb;
    }
    if (fflush(f) != 0 || fsync(fileno(f)) != 0)
        FAIL(KV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    st->file_bytes = (uint64_t)ftell(f);
    if (fclose(f) != 0) {
        f = NULL;
        FAIL(KV_ERR_IO, "cannot write %s: %s", tmp, strerror(errno));
    }
    f = NULL;
    if (rename(tmp, path) != 0)
        FAIL(KV_ERR_IO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
    sync_dir(path);
out:
    if (f) {
        fclose(f);
        unlink(tmp);
    }
    free(depth);
    free(order);
    free(rec_of);
    free(planes);
    free(comp);
    return rc;
}

/* Why a snapshot header does not fit the arena h, or NULL. */
static const char *header_mismatch(const snap_header *s, const kva_header *h)
{
    snap_header want = header_of(h, s->n_records);
    if (memcmp(s->magic, SNAP_MAGIC, sizeof(s->magic)) != 0)
        return "not a kvarena snapshot";
    if (s->version != SNAP_VERSION)
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
    uint32_t *map = NULL, *tokens = malloc(sizeof(uint32_t) * P);
    uint8_t (*hashes)[KVA_HASH_BYTES] = NULL;
    uint8_t *planes = malloc(pb), *comp = malloc(pb), *page = malloc(pb);
    FILE *f = fopen(path, "rb");
    if (!f)
        FAIL(KV_ERR_IO, "cannot open %s: %s", path, strerror(errno));
    if (!tokens || !planes || !comp || !page || pb > (size_t)INT32_MAX)
        FAIL(KV_ERR_NOMEM, "out of memory");
    snap_header sh;
    const char *bad;
    if (fread(&sh, sizeof(sh), 1, f) != 1)
        FAIL(KV_ERR_INVAL, "%s: too short for a snapshot header", path);
    if ((bad = header_mismatch(&sh, h)))
        FAIL(KV_ERR_INVAL, "%s does not fit this arena: %s", path, bad);
    struct stat fs; /* each record takes at least its header and token ids */
    if (fstat(fileno(f), &fs) != 0 ||
        sh.n_records > (uint64_t)fs.st_size / (sizeof(snap_record) + sizeof(uint32_t) * P))
        FAIL(KV_ERR_INVAL, "%s: %u records cannot fit its %lld bytes", path, sh.n_records,
             (long long)fs.st_size);
    map = malloc(sizeof(uint32_t) * (sh.n_records ? sh.n_records : 1));
    hashes = malloc(KVA_HASH_BYTES * (size_t)(sh.n_records ? sh.n_records : 1));
    if (!map || !hashes)
        FAIL(KV_ERR_NOMEM, "out of memory for %u records", sh.n_records);
    for (uint32_t i = 0; i < sh.n_records; i++) {
        snap_record r;
        map[i] = NONE;
        if (fread(&r, sizeof(r), 1, f) != 1 || fread(tokens, sizeof(uint32_t), P, f) != P)
            FAIL(KV_ERR_INVAL, "%s: record %u of %u is cut short", path, i, sh.n_records);
        if (r.tenant >= pg->n_tenants || (r.parent != NONE && r.parent >= i) ||
            r.data_len > pb || (r.flags & REC_RAW && r.data_len != pb) || r.flags & ~REC_RAW)
            FAIL(KV_ERR_INVAL, "%s: record %u is malformed", path, i);
        uint8_t want[KVA_HASH_BYTES], sum[SUM_BYTES];
        kvs_block_hash(r.parent == NONE ? NULL : hashes[r.parent], salt[r.tenant], tokens, P,
                       want);
        memcpy(hashes[i], r.hash, KVA_HASH_BYTES);
        if (memcmp(want, r.hash, KVA_HASH_BYTES) != 0)
            FAIL(KV_ERR_INVAL, "%s: record %u: its block hash is not its tokens'", path, i);
        if (fread(r.flags & REC_RAW ? planes : comp, 1, r.data_len, f) != r.data_len)
            FAIL(KV_ERR_INVAL, "%s: record %u: its data is cut short", path, i);
        if (!(r.flags & REC_RAW) &&
            LZ4_decompress_safe((const char *)comp, (char *)planes, (int)r.data_len, (int)pb) != (int)pb)
            FAIL(KV_ERR_INVAL, "%s: record %u: its data does not decompress to a page", path, i);
        unplane(page, planes, pb, es);
        crypto_generichash(sum, SUM_BYTES, page, pb, NULL, 0);
        if (memcmp(sum, r.sum, SUM_BYTES) != 0)
            FAIL(KV_ERR_INVAL, "%s: record %u: its data fails its checksum", path, i);
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
        memcpy(kva_data(h) + (size_t)p * pb, page, pb);
        kvs_page_commit(pg, p, salt[r.tenant]); /* the hash checked above: p itself */
        kvs_page_unref(pg, p);                   /* cached */
        map[i] = p;
        st->pages++;
        st->data_bytes += pb;
    }
out:
    if (f) {
        st->file_bytes = (uint64_t)ftell(f);
        fclose(f);
    }
    free(map);
    free(hashes);
    free(tokens);
    free(planes);
    free(comp);
    free(page);
    return rc;
}
