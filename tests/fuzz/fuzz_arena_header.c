/* fuzz_arena_header — libFuzzer target: arbitrary bytes as a mapped arena header (padded
 * to KVA_HEADER_BYTES, as a region always has a whole header block) with an arbitrary
 * region size, through kva_header_check.
 *
 * When the check accepts, a worker trusts the header to address the region, so every
 * part must lie inside it, in order, without overlap and without any sum or product
 * overflowing: the header block, n_pages descriptors of desc_bytes (each large enough for
 * its page_tokens token ids), max_seqs sequence records, and n_pages pages of page_bytes
 * (each large enough for the kernels' K and V blocks of every layer and head), data
 * 4 KiB aligned. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/kvkernels.h"
#include "proto/arena.h"
#include "proto/kverr.h"
#include "tests/fuzz/fuzz_input.h"

#define REQUIRE(c) do { if (!(c)) { fprintf(stderr, "invariant failed: %s\n", #c); abort(); } } while (0)

/* a + b * c without overflow, else abort */
static uint64_t span_end(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t p, s;
    REQUIRE(!__builtin_mul_overflow(b, c, &p));
    REQUIRE(!__builtin_add_overflow(a, p, &s));
    return s;
}

static void check_accepted(const kva_header *h, uint64_t region)
{
    REQUIRE(h->magic == KVA_MAGIC && h->version == KVA_FORMAT_VERSION);
    kvk_geom g = { h->layers, h->q_heads, h->kv_heads, h->head_dim, h->page_tokens,
                   (kvk_dtype)h->dtype };
    REQUIRE(kvk_geom_check(&g) == 0);
    REQUIRE(h->n_pages >= 1 && h->max_seqs >= 1);
    REQUIRE(h->desc_bytes % 64 == 0);
    REQUIRE(h->desc_bytes >= span_end(sizeof(kva_page), h->page_tokens, sizeof(uint32_t)));
    uint64_t block = span_end(0, (uint64_t)h->page_tokens * h->head_dim, kvk_dtype_size(g.dtype));
    REQUIRE(h->page_bytes >= span_end(0, 2ull * h->layers * h->kv_heads, block));
    REQUIRE(h->desc_off >= KVA_HEADER_BYTES);
    REQUIRE(span_end(h->desc_off, h->n_pages, h->desc_bytes) <= h->seq_off);
    REQUIRE(span_end(h->seq_off, h->max_seqs, sizeof(kva_seq)) <= h->data_off);
    REQUIRE(h->data_off % 4096 == 0);
    REQUIRE(span_end(h->data_off, h->n_pages, h->page_bytes) <= h->total_bytes);
    REQUIRE(h->total_bytes <= region);
    /* the accessors' offsets for the last record of each table stay inside the region */
    const uint8_t *base = (const uint8_t *)h;
    REQUIRE((uint64_t)((const uint8_t *)kva_page_at(h, h->n_pages - 1) - base) + h->desc_bytes <= h->seq_off);
    REQUIRE((uint64_t)((const uint8_t *)(kva_seq_at(h, h->max_seqs - 1) + 1) - base) <= h->data_off);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t region = fz_le64(data);
    static _Alignas(64) uint8_t block[KVA_HEADER_BYTES];
    size_t n = size - 8 < sizeof(block) ? size - 8 : sizeof(block);
    memset(block, 0, sizeof(block));
    memcpy(block, data + 8, n);
    const kva_header *h = (const kva_header *)block;
    char why[256] = "";
    int rc = kva_header_check(h, region, why, sizeof(why));
    if (rc == 0)
        check_accepted(h, region);
    else
        REQUIRE(rc == KV_ERR_INVAL && why[0] != '\0');
    REQUIRE(kva_header_check(h, region, NULL, 0) == rc);
    return 0;
}
