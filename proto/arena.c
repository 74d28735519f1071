/* arena.c — layout and validation of the shared-memory arena header (see arena.h).
 * Used by the server when it creates or re-attaches a region and by workers on attach;
 * kva_header_check is also a fuzz target, so it trusts nothing it reads. */
#include "arena.h"

#include <stdio.h>
#include <string.h>

#include "kernels/kvkernels.h"
#include "kverr.h"

#define ALIGN_UP(x, a) (((x) + (a) - 1) / (a) * (a))

static uint64_t desc_bytes_for(uint32_t page_tokens)
{
    return ALIGN_UP(sizeof(kva_page) + (uint64_t)page_tokens * sizeof(uint32_t), 64);
}

int kva_layout(kva_header *h)
{
    const uint64_t limit = 1ull << 46; /* 64 TiB: far above any real arena, no overflow */
    if (h->n_pages == 0 || h->max_seqs == 0 || h->page_bytes == 0 || h->page_bytes > limit)
        return KV_ERR_INVAL;
    h->desc_bytes = desc_bytes_for(h->page_tokens);
    h->desc_off = KVA_HEADER_BYTES;
    h->seq_off = ALIGN_UP(h->desc_off + h->desc_bytes * h->n_pages, 64);
    h->data_off = ALIGN_UP(h->seq_off + (uint64_t)sizeof(kva_seq) * h->max_seqs, 4096);
    if (h->page_bytes > limit / h->n_pages)
        return KV_ERR_INVAL;
    h->total_bytes = h->data_off + h->page_bytes * h->n_pages;
    return h->total_bytes > limit ? KV_ERR_INVAL : 0;
}

#define FAIL(...) do { if (why) snprintf(why, why_len, __VA_ARGS__); return KV_ERR_INVAL; } while (0)

int kva_header_check(const kva_header *h, uint64_t region_bytes, char *why, size_t why_len)
{
    if (region_bytes < KVA_HEADER_BYTES)
        FAIL("region of %llu bytes is smaller than a header", (unsigned long long)region_bytes);
    if (h->magic != KVA_MAGIC)
        FAIL("bad magic %#llx: not a kvarena arena", (unsigned long long)h->magic);
    if (h->version != KVA_FORMAT_VERSION)
        FAIL("arena format version %u, this build reads %u", h->version, KVA_FORMAT_VERSION);
    if (h->layout_version != KVK_LAYOUT_VERSION)
        FAIL("page layout version %u, this build uses %u", h->layout_version, KVK_LAYOUT_VERSION);
    kvk_geom g = kva_geom(h);
    if (h->dtype > KVK_BF16 || kvk_geom_check(&g) != 0)
        FAIL("unsupported geometry layers=%u q_heads=%u kv_heads=%u head_dim=%u page_tokens=%u dtype=%u",
             h->layers, h->q_heads, h->kv_heads, h->head_dim, h->page_tokens, h->dtype);
    if (h->rope > KVK_ROPE_INTERLEAVED || !(h->rope_theta >= 0 && h->rope_theta < 1e30f) ||
        !(h->softcap >= 0 && h->softcap < 1e30f) || (h->rope && h->head_dim % 2) ||
        !(h->alibi_max_bias >= 0 && h->alibi_max_bias <= KVA_ALIBI_MAX_BIAS))
        FAIL("bad attention options rope=%u rope_theta=%g window=%u softcap=%g "
             "alibi_max_bias=%g", h->rope, (double)h->rope_theta, h->window,
             (double)h->softcap, (double)h->alibi_max_bias);
    if (h->page_bytes != kvk_page_bytes(&g))
        FAIL("page_bytes %llu does not match the geometry (%zu)",
             (unsigned long long)h->page_bytes, kvk_page_bytes(&g));
    kva_header want = *h;
    if (kva_layout(&want) != 0)
        FAIL("n_pages %u / max_seqs %u give no valid layout", h->n_pages, h->max_seqs);
    if (want.desc_bytes != h->desc_bytes || want.desc_off != h->desc_off ||
        want.seq_off != h->seq_off || want.data_off != h->data_off ||
        want.total_bytes != h->total_bytes)
        FAIL("offsets disagree with the geometry");
    if (h->total_bytes > region_bytes)
        FAIL("arena needs %llu bytes, region has %llu", (unsigned long long)h->total_bytes,
             (unsigned long long)region_bytes);
    return 0;
}
