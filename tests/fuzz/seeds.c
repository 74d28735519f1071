/* seeds — writes the seed corpus of the fuzz targets: a few valid serialized messages per
 * target in the format of tests/fuzz/fuzz_input.h, and valid arena headers.
 * Usage: seeds DIR (writes DIR/fuzz_envelope/, DIR/fuzz_job/, DIR/fuzz_arena_header/, ...
 * which must exist). Run by `make fuzz-corpus`; its output is committed under
 * tests/fuzz/corpus/. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kvkernels.h"
#include "proto/arena.h"
#include "tests/fuzz/fuzz_attn_input.h"
#include "tests/fuzz/fuzz_input.h"

static const char *dir;

static void write_file(const char *target, const char *name, const void *a, size_t na,
                       const void *b, size_t nb)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s/%s", dir, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(a, 1, na, f) != na || (nb && fwrite(b, 1, nb, f) != nb) || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* [flags][sizes][envelope] */
static void message(const char *target, const char *name, int config, int honest,
                    const uint32_t *frames, int n_frames, const Kvarena__Envelope *e)
{
    uint8_t head[1 + 4 * KVP_MAX_FRAMES];
    head[0] = (uint8_t)(n_frames | (honest ? FZ_HONEST : 0) | config << 5);
    for (int i = 0; i < n_frames; i++)
        for (int b = 0; b < 4; b++)
            head[1 + 4 * i + b] = (uint8_t)(frames[i] >> (8 * b));
    size_t len = kvarena__envelope__get_packed_size(e);
    uint8_t *buf = malloc(len ? len : 1);
    kvarena__envelope__pack(e, buf);
    write_file(target, name, head, 1 + 4 * (size_t)n_frames, buf, len);
    free(buf);
}

static void envelope_seeds(void)
{
    Kvarena__Envelope e = KVARENA__ENVELOPE__INIT;
    e.req_id = 7;
    Kvarena__Hello h = KVARENA__HELLO__INIT;
    h.version = KVP_VERSION;
    h.tenant = (char *)"alice";
    h.client_name = (char *)"seed";
    e.body_case = KVARENA__ENVELOPE__BODY_HELLO;
    e.hello = &h;
    message("fuzz_envelope", "hello", 0, 0, NULL, 0, &e);

    uint32_t toks[5] = { 1, 2, 3, 40000, 0xffffffffu };
    Kvarena__Extend x = KVARENA__EXTEND__INIT;
    x.seq = 0x100000003ull;
    x.tokens = toks;
    x.n_tokens = 5;
    e.body_case = KVARENA__ENVELOPE__BODY_EXTEND;
    e.extend = &x;
    message("fuzz_envelope", "extend", 1, 0, NULL, 0, &e);

    Kvarena__Lookup l = KVARENA__LOOKUP__INIT;
    l.tokens = toks;
    l.n_tokens = 3;
    e.body_case = KVARENA__ENVELOPE__BODY_LOOKUP;
    e.lookup = &l;
    message("fuzz_envelope", "lookup", 0, 0, NULL, 0, &e);

    Kvarena__Fork fk = KVARENA__FORK__INIT;
    fk.seq = 0x200000001ull;
    e.body_case = KVARENA__ENVELOPE__BODY_FORK;
    e.fork = &fk;
    message("fuzz_envelope", "fork", 0, 0, NULL, 0, &e);

    Kvarena__Stats st = KVARENA__STATS__INIT;
    e.body_case = KVARENA__ENVELOPE__BODY_STATS;
    e.stats = &st;
    message("fuzz_envelope", "stats", 0, 0, NULL, 0, &e);

    Kvarena__AttendItem it[2] = { KVARENA__ATTEND_ITEM__INIT, KVARENA__ATTEND_ITEM__INIT };
    Kvarena__AttendItem *itp[2] = { &it[0], &it[1] };
    it[0].seq = 0x100000000ull;
    it[0].n_new = 3;
    it[1].seq = 0x100000001ull;
    it[1].n_new = 1;
    Kvarena__Attend a = KVARENA__ATTEND__INIT;
    a.layer = 1;
    a.items = itp;
    a.n_items = 2;
    a.want_lse = 1;
    a.scale = 0.125f;
    e.body_case = KVARENA__ENVELOPE__BODY_ATTEND;
    e.attend = &a;
    size_t f[3];
    fz_qkv_bytes(&fz_configs[1].lim, 4, f);
    uint32_t frames[3] = { (uint32_t)f[0], (uint32_t)f[1], (uint32_t)f[2] };
    message("fuzz_envelope", "attend_exact", 1, 0, frames, 3, &e);
    message("fuzz_envelope", "attend_honest", 0, 1, frames, 3, &e);
    frames[2] -= 4;
    message("fuzz_envelope", "attend_short_v", 1, 0, frames, 3, &e);
}

/* cow_rows > 0: the item also asks for a copy-on-write of that many tokens */
static void job_seed(const char *name, int config, uint32_t n_kv, uint32_t n_new,
                     uint32_t cow_rows)
{
    const fz_config *c = &fz_configs[config];
    uint64_t len = (uint64_t)n_kv + n_new;
    uint32_t np = (uint32_t)((len + c->page_tokens - 1) / c->page_tokens);
    uint32_t *pages = malloc(sizeof(uint32_t) * np);
    for (uint32_t p = 0; p < np; p++)
        pages[p] = (p * 7 + 1) % c->n_pages;
    Kvarena__JobItem it = KVARENA__JOB_ITEM__INIT, *itp = &it;
    it.pages = pages;
    it.n_pages = np;
    it.n_kv = n_kv;
    it.n_new = n_new;
    it.cow_rows = cow_rows;
    if (cow_rows)
        it.cow_src = (pages[n_kv / c->page_tokens] + 1) % c->n_pages;
    Kvarena__Job j = KVARENA__JOB__INIT;
    j.job_id = 42;
    j.layer = c->lim.layers - 1;
    j.items = &itp;
    j.n_items = 1;
    j.scale = 0;
    j.epoch = 3;
    Kvarena__Envelope e = KVARENA__ENVELOPE__INIT;
    e.req_id = 42;
    e.body_case = KVARENA__ENVELOPE__BODY_JOB;
    e.job = &j;
    size_t f[3];
    fz_qkv_bytes(&c->lim, n_new, f);
    uint32_t frames[3] = { (uint32_t)f[0], (uint32_t)f[1], (uint32_t)f[2] };
    message("fuzz_job", name, config, 1, frames, 3, &e);
    free(pages);
}

static void header_seed(const char *name, kvk_geom g, uint32_t n_pages, uint32_t max_seqs,
                        int64_t region_delta)
{
    static kva_header h;
    memset(&h, 0, sizeof(h));
    h.magic = KVA_MAGIC;
    h.version = KVA_FORMAT_VERSION;
    h.layout_version = KVK_LAYOUT_VERSION;
    h.layers = g.layers;
    h.q_heads = g.q_heads;
    h.kv_heads = g.kv_heads;
    h.head_dim = g.head_dim;
    h.page_tokens = g.page_tokens;
    h.dtype = g.dtype;
    h.n_pages = n_pages;
    h.max_seqs = max_seqs;
    h.page_bytes = kvk_page_bytes(&g);
    h.epoch = 1;
    h.max_batch_tokens = 16384;
    if (kva_layout(&h) != 0) {
        fprintf(stderr, "seed %s: no layout\n", name);
        exit(1);
    }
    uint64_t region = h.total_bytes + (uint64_t)region_delta;
    uint8_t r[8];
    for (int b = 0; b < 8; b++)
        r[b] = (uint8_t)(region >> (8 * b));
    write_file("fuzz_arena_header", name, r, 8, &h, sizeof(h));
}

/* fuzz_snapshot's inputs (see its header): [mode][arena pages][quotas] then, structured,
 * [records][count adjust] and per record [tenant][parent][flags][data seed][4 tokens]. */
static void snapshot_seeds(void)
{
    static const uint8_t tree[] = { 0, 11, 0, 6, 1,
                                    0, 0xff, 0, 1, 1, 2, 3, 4,      /* a root */
                                    0, 0, 0x40, 2, 5, 6, 7, 0,      /* its child */
                                    1, 0xff, 0, 3, 1, 2, 3, 4,      /* tenant 1's root */
                                    0, 1, 0, 4, 3, 3, 3, 3,         /* a grandchild */
                                    0, 0, 0x20, 0, 0, 0, 0, 0,      /* a duplicate */
                                    1, 2, 0x80, 5, 1, 1, 2, 2 };    /* a damaged body */
    static const uint8_t raw[] = { 1, 5, 0, 3, 0, 'K', 'V', 'S', 'N', 'A', 'P', 0, 0 };
    /* regression: a frame without its checksum, damaged, was restored (found by this target) */
    static const uint8_t unchecked[] = {
        0x00, 0x0b, 0x0d, 0xeb, 0x1c, 0x0b, 0x95, 0xa2, 0x01, 0x00, 0x00, 0x00,
        0xad, 0x30, 0xd5, 0xad, 0x7a, 0x82, 0x77, 0x6c, 0x94, 0x84, 0x99, 0xc0,
        0xe4, 0xef, 0x23, 0x36, 0x05, 0x41, 0x00, 0x02, 0x12,
    };
    write_file("fuzz_snapshot", "tree", tree, sizeof(tree), NULL, 0);
    write_file("fuzz_snapshot", "frame_unchecked", unchecked, sizeof(unchecked), NULL, 0);
    write_file("fuzz_snapshot", "raw_body", raw, sizeof(raw), NULL, 0);
}

/* fuzz_cold's inputs (see its header): [mode] then, structured, [records] and per record
 * [tenant][parent][flags][4 tokens] (+ a byte for some damage). */
static void cold_seeds(void)
{
    static const uint8_t chain[] = { 0, 6,
                                     0, 0xff, 0, 1, 2, 3, 4,       /* a root */
                                     0, 0, 0x40, 5, 6, 7, 0,       /* its child */
                                     1, 0xff, 0, 1, 2, 3, 4,       /* tenant 1's root */
                                     0, 1, 0, 3, 3, 3, 3,          /* a grandchild */
                                     0, 0, 0x80, 5, 6, 7, 0, 9, 3, /* the child again, damaged */
                                     0, 0xff, 4, 1, 1, 1, 1 };     /* a frame without checksum */
    static const uint8_t cut[] = { 4, 3, 0, 0xff, 0, 1, 2, 3, 4, 0, 0, 0, 5, 6, 7, 0,
                                   0, 1, 0x40, 1, 1, 1, 1, 0x37, 0x01 };
    static const uint8_t raw[] = { 1, 0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0 };
    write_file("fuzz_cold", "chain", chain, sizeof(chain), NULL, 0);
    write_file("fuzz_cold", "cut", cut, sizeof(cut), NULL, 0);
    write_file("fuzz_cold", "raw_body", raw, sizeof(raw), NULL, 0);
}

/* fuzz_attn: [header][items][value seed], as tests/fuzz/fuzz_attn_input.h reads them. */
static void attn_seed(const char *name, const uint8_t hdr[FA_HEADER], const uint32_t (*it)[4],
                      uint32_t n)
{
    uint8_t b[FA_HEADER + FA_MAX_ITEMS * FA_ITEM + 8];
    memcpy(b, hdr, FA_HEADER);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t *p = b + FA_HEADER + i * FA_ITEM;
        p[0] = (uint8_t)it[i][0], p[1] = (uint8_t)(it[i][0] >> 8);
        p[2] = (uint8_t)it[i][1], p[3] = (uint8_t)it[i][2], p[4] = (uint8_t)it[i][3];
    }
    memcpy(b + FA_HEADER + n * FA_ITEM, "kvarena!", 8);
    fa_case fc;
    if (!fa_parse(b, FA_HEADER + n * FA_ITEM + 8, &fc)) {
        fprintf(stderr, "seed %s: not a valid fuzz_attn input\n", name);
        exit(1);
    }
    write_file("fuzz_attn", name, b, FA_HEADER + n * FA_ITEM + 8, NULL, 0);
}

/* {n_kv, n_new byte, share_of, share_pages} per item. */
static void attn_seeds(void)
{
    /* 8 decode rows on one prefix of 18 pages (8 q heads / 2, d 128, page 16, fp16) */
    static const uint32_t one[8][4] = { { 300, 1, 0, 0 },  { 310, 1, 0, 18 }, { 320, 1, 0, 18 },
                                        { 330, 1, 0, 18 }, { 340, 1, 0, 18 }, { 350, 1, 0, 18 },
                                        { 360, 1, 0, 18 }, { 370, 1, 0, 18 } };
    attn_seed("shared8", (const uint8_t[]){ 2, 4, 15, 1 | 4, 0, 7 }, one, 8);
    /* nested prefixes under a window of 160 with ALiBi, bf16, page 8, rows of 1..3 */
    static const uint32_t nest[6][4] = { { 330, 2, 0, 0 },  { 320, 1, 0, 40 }, { 341, 3, 0, 40 },
                                         { 400, 1, 0, 20 }, { 401, 1, 3, 50 }, { 420, 2, 3, 50 } };
    attn_seed("nested_window_alibi", (const uint8_t[]){ 2, 1, 7, 2 | 4 | 8 | 32, 40, 5 }, nest, 6);
    /* a long prefix split across threads, MHA, fp32, page 32, RoPE (rotate-half) */
    static const uint32_t lng[3][4] = { { 1100, 1, 0, 0 }, { 1150, 1, 0, 34 }, { 1199, 1, 0, 34 } };
    attn_seed("long_split", (const uint8_t[]){ 0, 4, 31, 0 | 4 | 64, 0, 2 }, lng, 3);
    /* a prefill beside decode rows sharing with it, non-causal, soft-cap, interleaved RoPE */
    static const uint32_t mix[4][4] = { { 200, 0x80 | 30, 0, 0 }, { 260, 1, 0, 12 },
                                        { 250, 2, 0, 12 }, { 90, 4, 1, 5 } };
    attn_seed("prefill_noncausal_softcap", (const uint8_t[]){ 4, 1, 15, 1 | 16 | 128, 10, 3 },
              mix, 4);
    /* far: positions past 2^23 under a window of 208 (page 48): two share pages they see,
     * one only the window's placeholder pages before them */
    static const uint32_t far[4][4] = { { 1000, 1, 0, 0 }, { 1000, 1, 0, 3 },
                                        { 1100, 2, 0, 3 }, { 990, 1, 0, 0 } };
    attn_seed("far_placeholders", (const uint8_t[]){ 2, 1, 15, 1 | 4, 50, 3 | 8 }, far, 4);
    /* dup: identical tables, and pages holding another item's new rows */
    static const uint32_t dup[4][4] = { { 300, 1, 0, 0 }, { 300, 1, 0, 255 },
                                        { 280, 3, 0, 255 }, { 100, 2, 1, 255 } };
    attn_seed("dup_tables", (const uint8_t[]){ 2, 1, 15, 1 | 4, 0, 3 | 16 }, dup, 4);
    /* no pool: long keys unsplit */
    static const uint32_t np[2][4] = { { 1200, 1, 0, 0 }, { 1150, 1, 0, 60 } };
    attn_seed("no_pool", (const uint8_t[]){ 2, 4, 15, 1 | 4, 0, 1 | 32 }, np, 2);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seeds DIR\n");
        return 2;
    }
    dir = argv[1];
    envelope_seeds();
    snapshot_seeds();
    cold_seeds();
    attn_seeds();
    job_seed("job_default", 0, 20, 5, 0);
    job_seed("job_tiny", 1, 0, 7, 0);
    job_seed("job_one_page", 2, 0, 1, 0);
    job_seed("job_huge_pages", 3, 100, 1, 0);
    job_seed("job_len_max", 3, 0xfffffffdu, 1, 0);   /* 2^32 - 2 tokens: the largest accepted */
    job_seed("job_len_2_32", 3, 0xffffffffu, 1, 0); /* regression: was accepted */
    job_seed("job_cow", 0, 21, 3, 5);                /* copy-on-write of a 5-token tail */
    job_seed("job_cow_rows_wrong", 0, 21, 3, 4);
    header_seed("default", (kvk_geom){ 4, 8, 2, 64, 16, KVK_F16 }, 2048, 4096, 0);
    header_seed("fp32_odd", (kvk_geom){ 3, 6, 3, 40, 5, KVK_F32 }, 7, 3, 4096);
    header_seed("bf16_small", (kvk_geom){ 1, 1, 1, 8, 1, KVK_BF16 }, 1, 1, 0);
    header_seed("short_region", (kvk_geom){ 2, 4, 2, 16, 8, KVK_F16 }, 16, 16, -1);
    return 0;
}
