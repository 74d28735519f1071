/* shm.h — the POSIX shared-memory region of the arena: create, map, unmap, unlink. */
#ifndef KVARENA_SHM_H
#define KVARENA_SHM_H

#include <stddef.h>

#include "config.h"
#include "proto/arena.h"

typedef struct kvs_shm {
    char name[KVS_NAME_MAX + 16]; /* shm_open name, "/kvarena-NAME" */
    kva_header *h;                /* mapping of the whole region */
    size_t bytes;                 /* mapped bytes */
} kvs_shm;

/* Maps the arena /kvarena-NAME. One a live kvserver owns is refused first, with or without
 * c->fresh. If one exists (a previous server was killed, or kept it) and c->fresh is not
 * set, it is attached: its header must pass kva_header_check and match the configured
 * geometry, size and tenants (tenants_hash); its epoch is incremented and *attached is 1. Otherwise a fresh region is created:
 * header written, all pages FREE, all sequences free, epoch 1, *attached 0.
 * Returns 0, KV_ERR_IO (logged), or KV_ERR_INVAL (mismatch or in use; logged). */
int kvs_shm_open(kvs_shm *shm, const kvs_config *c, const uint8_t tenants_hash[KVA_HASH_BYTES],
                 int *attached);
/* Unmaps a region kvs_shm_open opened, and unlinks its name too if unlink_name. Nothing when
 * kvs_shm_open failed: a refused arena (kept, or another server's) is left as it was. */
void kvs_shm_close(kvs_shm *shm, int unlink_name);

#endif
