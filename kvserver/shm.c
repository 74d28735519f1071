/* shm.c — creating the arena region. MAP_SHARED so workers see the same pages; the kernel
 * is advised to back the data with transparent huge pages (fewer TLB misses when kernels
 * stream K/V). The region is zero-filled by ftruncate, so FREE = 0 needs no write pass.
 *
 * Every byte of the region is reserved in /dev/shm at start (posix_fallocate): a tmpfs file
 * is sparse, and a page first touched when the file system is full raises SIGBUS in
 * whichever process touches it, a worker in the middle of a job or the server itself. An
 * arena that does not fit is refused at start instead, with the numbers. */
#include "shm.h"

#include <errno.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "kernels/kvkernels.h"
#include "log.h"
#include "proto/kverr.h"

/* The header fields the config decides: geometry, sizes, model attention and tenants. */
static kva_header config_header(const kvs_config *c, const uint8_t tenants_hash[KVA_HASH_BYTES])
{
    kvk_geom g = kvs_config_geom(c);
    kva_header h = {
        .layers = c->layers, .q_heads = c->q_heads, .kv_heads = c->kv_heads,
        .head_dim = c->head_dim, .page_tokens = c->page_tokens, .dtype = c->dtype,
        .n_pages = c->pages, .max_seqs = c->max_seqs, .page_bytes = kvk_page_bytes(&g),
        .rope = c->rope, .rope_theta = c->rope_theta, .window = c->window,
        .softcap = c->softcap, .alibi_max_bias = c->alibi_max_bias,
    };
    memcpy(h.tenants_hash, tenants_hash, KVA_HASH_BYTES);
    return h;
}

/* Reserves bytes of fd (the arena called name) in /dev/shm: 0, or KV_ERR_NOMEM when they
 * do not fit (said with the numbers). */
static int reserve(int fd, const char *name, uint64_t bytes)
{
    struct statvfs vs;
    uint64_t st_bytes = 0;
    struct stat st;
    if (fstat(fd, &st) == 0)
        st_bytes = (uint64_t)st.st_blocks * 512; /* already allocated (a kept arena) */
    if (fstatvfs(fd, &vs) == 0 && bytes > st_bytes &&
        bytes - st_bytes > (uint64_t)vs.f_bavail * vs.f_frsize) {
        KVS_ERROR("arena %s needs %.1f MiB more of /dev/shm, which has %.1f MiB free: lower "
                  "arena.pages or arena.bytes, or enlarge /dev/shm (mount -o remount,size=...)",
                  name, (double)(bytes - st_bytes) / 1048576.0,
                  (double)vs.f_bavail * vs.f_frsize / 1048576.0);
        return KV_ERR_NOMEM;
    }
    int e = posix_fallocate(fd, 0, (off_t)bytes);
    if (e != 0) {
        KVS_ERROR("posix_fallocate(%s, %llu bytes) failed: %s: the arena cannot be reserved in "
                  "/dev/shm (full, or a memory limit)", name, (unsigned long long)bytes,
                  strerror(e));
        return e == ENOSPC || e == ENOMEM ? KV_ERR_NOMEM : KV_ERR_IO;
    }
    return 0;
}

static int create(kvs_shm *shm, const kvs_config *c, const uint8_t tenants_hash[KVA_HASH_BYTES])
{
    kva_header hd = config_header(c, tenants_hash);
    hd.magic = KVA_MAGIC;
    hd.version = KVA_FORMAT_VERSION;
    hd.layout_version = KVK_LAYOUT_VERSION;
    hd.epoch = 1;
    hd.server_pid = getpid();
    hd.max_batch_tokens = c->max_batch_tokens;
    if (kva_layout(&hd) != 0) {
        KVS_ERROR("arena of %u pages of %llu bytes is too large", c->pages,
                  (unsigned long long)hd.page_bytes);
        return KV_ERR_INVAL;
    }
    int fd = shm_open(shm->name, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) {
        KVS_ERROR("shm_open(%s, O_CREAT|O_EXCL, 0600) failed: %s", shm->name, strerror(errno));
        return KV_ERR_IO;
    }
    int rc = KV_ERR_IO;
    if (ftruncate(fd, (off_t)hd.total_bytes) != 0) {
        KVS_ERROR("ftruncate(%s, %llu) failed: %s", shm->name,
                  (unsigned long long)hd.total_bytes, strerror(errno));
        goto fail;
    }
    if ((rc = reserve(fd, shm->name, hd.total_bytes)) != 0)
        goto fail;
    rc = KV_ERR_IO;
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
    KVS_INFO("created arena %s: %u pages of %llu bytes (%u tokens), %.1f MiB", shm->name, hd.n_pages,
             (unsigned long long)hd.page_bytes, hd.page_tokens, hd.total_bytes / 1048576.0);
    return 0;
fail:
    close(fd);
    shm_unlink(shm->name);
    return rc;
}

/* Another live kvserver owning the region would be a second metadata writer. */
static int owner_alive(pid_t pid)
{
    char path[64], comm[64] = "";
    if (pid <= 0 || pid == getpid() || kill(pid, 0) != 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
    FILE *f = fopen(path, "r");
    if (f) {
        if (!fgets(comm, sizeof(comm), f))
            comm[0] = 0;
        fclose(f);
    }
    return strncmp(comm, "kvserver", 8) == 0;
}

/* The live kvserver that owns the arena called name, or 0 (none, no such arena, or not one
 * with a readable header). */
static pid_t live_owner(const char *name)
{
    int fd = shm_open(name, O_RDONLY, 0);
    if (fd < 0)
        return 0;
    struct stat st;
    pid_t pid = 0;
    if (fstat(fd, &st) == 0 && (size_t)st.st_size >= sizeof(kva_header)) {
        const kva_header *h = mmap(NULL, sizeof(kva_header), PROT_READ, MAP_SHARED, fd, 0);
        if (h != MAP_FAILED) {
            pid = h->magic == KVA_MAGIC && owner_alive(h->server_pid) ? h->server_pid : 0;
            munmap((void *)h, sizeof(kva_header));
        }
    }
    close(fd);
    return pid;
}

#define MISMATCH(field) \
    if (h->field != want->field) { \
        KVS_ERROR("arena %s was built with " #field " = %g, the config says %g: start with " \
                  "--fresh to discard it (its cache is lost)", shm->name, \
                  (double)h->field, (double)want->field); \
        return KV_ERR_INVAL; \
    }

static int attach_check(const kvs_shm *shm, const kva_header *h, const kva_header *want)
{
    char why[256];
    if (kva_header_check(h, shm->bytes, why, sizeof(why)) != 0) {
        KVS_ERROR("arena %s cannot be reused: %s; start with --fresh to discard it", shm->name, why);
        return KV_ERR_INVAL;
    }
    MISMATCH(layers) MISMATCH(q_heads) MISMATCH(kv_heads) MISMATCH(head_dim)
    MISMATCH(page_tokens) MISMATCH(dtype) MISMATCH(n_pages) MISMATCH(max_seqs)
    MISMATCH(rope) MISMATCH(rope_theta) MISMATCH(window) MISMATCH(softcap)
    MISMATCH(alibi_max_bias)
    if (memcmp(h->tenants_hash, want->tenants_hash, KVA_HASH_BYTES) != 0) {
        KVS_ERROR("arena %s was built for other tenants (names or order changed): start with "
                  "--fresh to discard it", shm->name);
        return KV_ERR_INVAL;
    }
    return 0;
}

static int attach(kvs_shm *shm, int fd, const kvs_config *c, const uint8_t tenants_hash[KVA_HASH_BYTES])
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        KVS_ERROR("fstat(%s) failed: %s", shm->name, strerror(errno));
        return KV_ERR_IO;
    }
    if ((uint64_t)st.st_size < KVA_HEADER_BYTES) { /* not even a header: nothing to map */
        KVS_ERROR("arena %s cannot be reused: it is %lld bytes, smaller than an arena's "
                  "header (%u); start with --fresh to discard it", shm->name,
                  (long long)st.st_size, (unsigned)KVA_HEADER_BYTES);
        return KV_ERR_INVAL;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        KVS_ERROR("mmap(%s, %lld bytes) failed: %s", shm->name, (long long)st.st_size, strerror(errno));
        return KV_ERR_IO;
    }
    shm->h = p;
    shm->bytes = (size_t)st.st_size;
    kva_header want = config_header(c, tenants_hash);
    int rc = attach_check(shm, shm->h, &want);
    if (rc == 0) /* pages its last server never touched are not reserved yet */
        rc = reserve(fd, shm->name, shm->bytes);
    if (rc) {
        munmap(p, shm->bytes);
        shm->h = NULL;
        return rc;
    }
    KVS_INFO("attaching arena %s left by pid %d: epoch %llu, %u pages", shm->name,
             (int)shm->h->server_pid, (unsigned long long)shm->h->epoch + 1, shm->h->n_pages);
    shm->h->epoch++; /* jobs of the old server's workers no longer match */
    shm->h->server_pid = getpid();
    shm->h->max_batch_tokens = c->max_batch_tokens;
    return 0;
}

int kvs_shm_open(kvs_shm *shm, const kvs_config *c, const uint8_t tenants_hash[KVA_HASH_BYTES],
                 int *attached)
{
    memset(shm, 0, sizeof(*shm));
    snprintf(shm->name, sizeof(shm->name), "/kvarena-%s", c->name);
    *attached = 0;
    pid_t owner = live_owner(shm->name); /* first: a live server's arena is never touched */
    if (owner) {
        KVS_ERROR("arena %s is in use by kvserver pid %d: neither reused nor discarded "
                  "(--fresh) while that server runs", shm->name, (int)owner);
        return KV_ERR_INVAL;
    }
    if (c->fresh) {
        if (shm_unlink(shm->name) == 0)
            KVS_WARN("--fresh: discarded the old arena %s", shm->name);
        return create(shm, c, tenants_hash);
    }
    int fd = shm_open(shm->name, O_RDWR, 0);
    if (fd < 0 && errno == ENOENT)
        return create(shm, c, tenants_hash);
    if (fd < 0) {
        KVS_ERROR("shm_open(%s, O_RDWR) failed: %s", shm->name, strerror(errno));
        return KV_ERR_IO;
    }
    int rc = attach(shm, fd, c, tenants_hash);
    close(fd);
    *attached = rc == 0;
    return rc;
}

void kvs_shm_close(kvs_shm *shm, int unlink_name)
{
    if (!shm->h) /* never opened, or refused: the name belongs to someone else (a kept arena,
                  * a live server) and stays */
        return;
    munmap(shm->h, shm->bytes);
    if (unlink_name && shm_unlink(shm->name) != 0 && errno != ENOENT)
        KVS_WARN("shm_unlink(%s) failed: %s", shm->name, strerror(errno));
    shm->h = NULL;
}
