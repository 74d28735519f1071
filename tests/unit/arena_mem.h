/* arena_mem.h — a kvarena arena in private memory, laid out the way kvserver/shm.c lays out
 * the shared one (header with magic and versions, kva_layout, zeroed descriptors whose
 * parent is KVA_NO_PAGE), for programs that test or measure kvserver's modules without
 * /dev/shm or a server: the unit tests' fixture (arena_fixture.h), bench_snapshot. */
#ifndef KVARENA_ARENA_MEM_H
#define KVARENA_ARENA_MEM_H

#include <stdlib.h>
#include <string.h>

#include "kernels/kvkernels.h"
#include "proto/arena.h"

/* A fresh region of geometry g with n_pages pages and max_seqs sequence records (free it
 * with free()), or NULL: a geometry the kernels refuse, sizes that overflow, no memory. */
static inline kva_header *arena_mem_new(kvk_geom g, uint32_t n_pages, uint32_t max_seqs)
{
    kva_header hd = {
        .magic = KVA_MAGIC, .version = KVA_FORMAT_VERSION, .layout_version = KVK_LAYOUT_VERSION,
        .layers = g.layers, .q_heads = g.q_heads, .kv_heads = g.kv_heads,
        .head_dim = g.head_dim, .page_tokens = g.page_tokens, .dtype = g.dtype,
        .n_pages = n_pages, .max_seqs = max_seqs,
    };
    if (kvk_geom_check(&g) != 0)
        return NULL;
    hd.page_bytes = kvk_page_bytes(&g);
    if (kva_layout(&hd) != 0)
        return NULL;
    kva_header *h = aligned_alloc(4096, (hd.total_bytes + 4095) / 4096 * 4096);
    if (!h)
        return NULL;
    memset(h, 0, hd.total_bytes);
    *h = hd;
    for (uint32_t p = 0; p < n_pages; p++)
        kva_page_at(h, p)->parent = KVA_NO_PAGE;
    return h;
}

#endif
