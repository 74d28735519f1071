/* fuzz_snapshot — libFuzzer target: kvs_snapshot_load (kvserver/snapshot.c) on a small
 * arena in private memory (tests/unit/arena_fixture.h), against snapshot files the input
 * describes. Structure-aware: most inputs describe records whose hash and LZ4 frame are
 * made valid, with optional damage (a hash bit, a frame without its checksum or size, a
 * data length, the age field, a frame byte, an exact duplicate, a cut, a record count
 * off by a few),
 * so the fuzzer reaches the allocator; with bit 0 of the first byte the rest of the input is
 * the file's body verbatim after a valid header. Arena size and tenant quotas vary too.
 * After each load: the allocator's invariants, every restored page cached and equal to a
 * record it was described by (tokens, tenant, parent's hash, data), parent and child of one
 * tenant; then an eviction sweep and the invariants again. */
#include "tests/unit/arena_fixture.h"

#include <lz4frame.h>
#include <stdio.h>
#include <unistd.h>

#include "kvserver/log.h"
#include "kvserver/snapshot.h"
#include "tests/fuzz/fuzz_bytes.h"

#define NONE KVA_NO_PAGE

#define MAXR 40
typedef struct spec {
    uint8_t hash[KVA_HASH_BYTES], phash[KVA_HASH_BYTES];
    int has_parent;
    uint32_t tenant, tokens[FX_P];
    uint8_t *page;
} spec;
static spec sp[MAXR];

#define DIE(...) do { fprintf(stderr, "FUZZ CHECK: " __VA_ARGS__); fprintf(stderr, "\n"); abort(); } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    static char path[64];
    if (!init) {
        if (sodium_init() < 0)
            abort();
        kvs_log_level = KVS_LOG_ERROR;
        snprintf(path, sizeof(path), "/tmp/fuzzsnap-%d", (int)getpid());
        init = 1;
    }
    if (size < 3)
        return 0;
    in = data, in_len = size, in_pos = 0;
    uint8_t mode = u8();
    fx_cfg cfg = { 1 + u8() % 12, 8, 2 };
    void *stp = &cfg;
    if (fx_setup(&stp))
        abort();
    fx *f = stp;
    uint8_t q = u8();
    f->pg.tenant[0].quota = q & 3;
    f->pg.tenant[1].quota = (q >> 2) & 3;
    const kva_header *h = f->h;
    const size_t pb = h->page_bytes, es = 4;
    snap_header sh;
    memset(&sh, 0, sizeof(sh));
    memcpy(sh.magic, KVS_SNAP_MAGIC, 8);
    sh.version = KVS_SNAP_VERSION;
    sh.layout_version = h->layout_version;
    sh.layers = h->layers, sh.q_heads = h->q_heads, sh.kv_heads = h->kv_heads;
    sh.head_dim = h->head_dim, sh.page_tokens = h->page_tokens, sh.dtype = h->dtype;
    sh.rope = h->rope, sh.rope_theta = h->rope_theta, sh.page_bytes = h->page_bytes;
    memcpy(sh.tenants_hash, h->tenants_hash, KVA_HASH_BYTES);
    blen = 0;
    uint32_t nspec = 0;
    if (mode & 1) {
        sh.n_records = u8() | (uint32_t)u8() << 8;
        if (mode & 2)
            sh.n_records |= (uint32_t)u8() << 24;
        put(&sh, sizeof(sh));
        put(data + in_pos, size - in_pos);
    } else {
        uint32_t n = u8() % MAXR;
        uint8_t adj = u8();
        sh.n_records = n + (adj & 1 ? 0 : (adj >> 1) % 3) - (adj & 1 ? 0 : 1);
        put(&sh, sizeof(sh));
        LZ4F_preferences_t prefs;
        memset(&prefs, 0, sizeof(prefs));
        prefs.frameInfo.blockSizeID = LZ4F_max4MB;
        prefs.frameInfo.contentChecksumFlag = LZ4F_contentChecksumEnabled;
        prefs.frameInfo.contentSize = pb;
        size_t cap = LZ4F_compressFrameBound(pb, &prefs);
        uint8_t *planes = malloc(pb), *comp = malloc(cap);
        for (uint32_t i = 0; i < n; i++) {
            spec *s = &sp[nspec++];
            s->page = malloc(pb);
            uint8_t tb = u8(), pbyte = u8(), fl = u8(), dseed = u8();
            snap_record r;
            memset(&r, 0, sizeof(r));
            r.tenant = tb & 0x80 ? tb : tb % 2;
            r.parent = i == 0 || pbyte == 0xff ? NONE : pbyte == 0xfe ? i : pbyte % i;
            for (uint32_t t = 0; t < FX_P; t++)
                s->tokens[t] = u8() & 7;
            if (fl & 0x20 && i > 0) { /* an exact duplicate of an earlier record */
                spec *o = &sp[dseed % i];
                r.tenant = o->tenant;
                memcpy(s->tokens, o->tokens, sizeof(s->tokens));
                memcpy(s->page, o->page, pb);
                r.parent = NONE;
                if (o->has_parent)
                    for (uint32_t k = 0; k < i; k++)
                        if (!memcmp(sp[k].hash, o->phash, KVA_HASH_BYTES)) {
                            r.parent = k;
                            break;
                        }
            } else {
                for (size_t j = 0; j < pb; j++)
                    s->page[j] = fl & 0x40 ? (uint8_t)((j * 2654435761u + dseed) >> 13)
                                           : (uint8_t)(dseed + j / (1 + dseed % 64));
            }
            s->tenant = r.tenant;
            s->has_parent = r.parent != NONE && r.parent < i;
            if (s->has_parent)
                memcpy(s->phash, sp[r.parent].hash, KVA_HASH_BYTES);
            kvs_block_hash(s->has_parent ? sp[r.parent].hash : NULL,
                           f->salt[r.tenant & (KVS_MAX_TENANTS - 1)], s->tokens, FX_P, r.hash);
            if (fl & 1)
                r.hash[u8() % KVA_HASH_BYTES] ^= 1;
            memcpy(s->hash, r.hash, KVA_HASH_BYTES);
            for (size_t b = 0; b < es; b++)
                for (size_t j = 0; j < pb / es; j++)
                    planes[b * (pb / es) + j] = s->page[j * es + b];
            LZ4F_preferences_t pr = prefs; /* without checksum or size, or a size off by one */
            if (fl & 2)
                pr.frameInfo.contentChecksumFlag = LZ4F_noContentChecksum;
            if (fl & 4)
                pr.frameInfo.contentSize = fl & 1 ? 0 : pb - es;
            size_t c = LZ4F_compressFrame(comp, cap, planes, fl & 4 && !(fl & 1) ? pb - es : pb,
                                          &pr);
            if (LZ4F_isError(c))
                abort();
            const uint8_t *body = comp;
            r.data_len = (uint32_t)c;
            uint32_t wlen = r.data_len;
            if (fl & 8)
                r.data_len += (uint32_t)(int8_t)u8();
            if (fl & 0x10)
                r.age ^= 1u << (u8() % 32);
            put(&r, sizeof(r));
            put(s->tokens, sizeof(s->tokens));
            if (fl & 0x80 && wlen > 1) { /* a damaged body byte */
                uint8_t *tmp = malloc(wlen);
                memcpy(tmp, body, wlen);
                tmp[u8() % wlen] ^= u8() | 1;
                put(tmp, wlen);
                free(tmp);
            } else {
                put(body, wlen);
            }
        }
        free(planes);
        free(comp);
        if (mode & 4 && blen > sizeof(sh)) /* a cut */
            blen -= (u8() | (size_t)u8() << 8) % (blen - sizeof(sh));
    }
    FILE *o = fopen(path, "wb");
    if (!o || fwrite(buf, 1, blen, o) != blen)
        abort();
    fclose(o);
    kvs_snap_stats st;
    char why[256];
    int rc = kvs_snapshot_load(&f->pg, (const uint8_t (*)[KVA_HASH_BYTES])f->salt, path, &st,
                               why, sizeof(why));
    if (rc != 0 && rc != KV_ERR_INVAL && rc != KV_ERR_NOMEM)
        DIE("rc %d", rc);
    if (kvs_pages_check(&f->pg) != 0)
        DIE("pages check after load (rc %d, %s)", rc, why);
    uint32_t used = 0;
    for (uint32_t p = 0; p < f->pg.n; p++) {
        const kva_page *d = kvs_page(&f->pg, p);
        if (d->state == KVA_PAGE_FREE)
            continue;
        used++;
        if (d->state != KVA_PAGE_COMMITTED || d->ref != 0)
            DIE("page %u state %d ref %u", p, d->state, d->ref);
        if (d->tenant >= f->pg.n_tenants)
            DIE("page %u tenant %u", p, d->tenant);
        int found = 0;
        for (uint32_t k = 0; k < nspec && !found; k++) {
            const spec *s = &sp[k];
            if (memcmp(s->hash, d->hash, KVA_HASH_BYTES) || s->tenant != d->tenant ||
                memcmp(s->tokens, d->tokens, sizeof(s->tokens)) ||
                memcmp(s->page, fx_page_data(f, p), pb))
                continue;
            if (s->has_parent != (d->parent != NONE))
                continue;
            if (s->has_parent && memcmp(s->phash, kvs_page(&f->pg, d->parent)->hash, KVA_HASH_BYTES))
                continue;
            found = 1;
        }
        if (!found && !(mode & 1))
            DIE("page %u matches no record", p);
        if (d->parent != NONE && kvs_page(&f->pg, d->parent)->tenant != d->tenant)
            DIE("page %u (tenant %u) has a parent of tenant %u", p, d->tenant,
                kvs_page(&f->pg, d->parent)->tenant);
    }
    if (used != st.pages)
        DIE("%u pages used, st.pages %u", used, st.pages);
    /* eviction sweep: every page allocated once for tenant 0 then for tenant 1 */
    for (uint32_t t = 0; t < 2; t++)
        for (uint32_t k = 0; k < f->pg.n; k++) {
            int err = 0;
            uint32_t p = kvs_page_alloc(&f->pg, t, NONE, &err);
            if (p == NONE)
                break;
            kvs_page_unref(&f->pg, p);
        }
    if (kvs_pages_check(&f->pg) != 0)
        DIE("pages check after eviction sweep");
    for (uint32_t k = 0; k < nspec; k++)
        free(sp[k].page);
    void *fs = f;
    fx_teardown(&fs);
    return 0;
}
