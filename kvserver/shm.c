/* shm.c — creating the arena region. MAP_SHARED so workers see the same pages; the kernel
 * is advised to back the data with transparent huge pages (fewer TLB misses when kernels
 * stream K/V). The region is zero-filled by ftruncate, so FREE = 0 needs no write pass. */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/kvkernels.h"
#include "log.h"
#include "proto/kverr.h"

int kvs_shm_create(kvs_shm *shm, const kvs_config *c)
{
    memset(shm, 0, sizeof(*shm));
    snprintf(shm->name, sizeof(shm->name), "/kvarena-%s", c->name);
    kvk_geom g = { c->layers, c->q_heads, c->kv_heads, c->head_dim, c->page_tokens,
                   (kvk_dtype)c->dtype };
    kva_header hd = {
        .magic = KVA_MAGIC, .version = KVA_FORMAT_VERSION, .layout_version = KVK_LAYOUT_VERSION,
        .layers = c->layers, .q_heads = c->q_heads, .kv_heads = c->kv_heads,
        .head_dim = c->head_dim, .page_tokens = c->page_tokens, .dtype = c->dtype,
        .n_pages = c->pages, .max_seqs = c->max_seqs, .page_bytes = kvk_page_bytes(&g),
        .epoch = 1, .server_pid = getpid(), .max_batch_tokens = c->max_batch_tokens,
    };
    if (kva_layout(&hd) != 0) {
        KVS_ERROR("arena of %u pages of %llu bytes is too large", c->pages,
                  (unsigned long long)hd.page_bytes);
        return KV_ERR_INVAL;
    }
    if (shm_unlink(shm->name) == 0)
        KVS_WARN("replaced an old shared memory segment %s", shm->name);
    int fd = shm_open(shm->name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        KVS_ERROR("shm_open(%s, O_CREAT|O_EXCL, 0600) failed: %s", shm->name, strerror(errno));
        return KV_ERR_IO;
    }
    if (ftruncate(fd, (off_t)hd.total_bytes) != 0) {
        KVS_ERROR("ftruncate(%s, %llu) failed: %s", shm->name,
                  (unsigned long long)hd.total_bytes, strerror(errno));
        goto fail;
    }
    void *p = mmap(NULL, hd.total_bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        KVS_ERROR("mmap(%s, %llu bytes) failed: %s", shm->name,
                  (unsigned long long)hd.total_bytes, strerror(errno));
        goto fail;
    }
    close(fd);
    madvise((uint8_t *)p + hd.data_off, hd.total_bytes - hd.data_off, MADV_HUGEPAGE);
    shm->h = p;
    shm->bytes = hd.total_bytes;
    *shm->h = hd;
    for (uint32_t i = 0; i < hd.n_pages; i++)
        kva_page_at(shm->h, i)->parent = KVA_NO_PAGE;
    KVS_INFO("arena %s: %u pages of %llu bytes (%u tokens), %.1f MiB", shm->name, hd.n_pages,
             (unsigned long long)hd.page_bytes, hd.page_tokens, hd.total_bytes / 1048576.0);
    return 0;
fail:
    close(fd);
    shm_unlink(shm->name);
    return KV_ERR_IO;
}

void kvs_shm_close(kvs_shm *shm, int unlink_name)
{
    if (shm->h)
        munmap(shm->h, shm->bytes);
    if (unlink_name && shm->name[0] && shm_unlink(shm->name) != 0 && errno != ENOENT)
        KVS_WARN("shm_unlink(%s) failed: %s", shm->name, strerror(errno));
    shm->h = NULL;
}
