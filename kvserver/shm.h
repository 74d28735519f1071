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

/* Creates a fresh region for the configured geometry (an old one of the same name is
 * replaced), maps it, writes the header, all pages FREE, all sequences free, epoch 1.
 * Returns 0, KV_ERR_IO (logged) or KV_ERR_INVAL (geometry too large). */
int kvs_shm_create(kvs_shm *shm, const kvs_config *c);
/* Unmaps; unlinks the name too if unlink_name. */
void kvs_shm_close(kvs_shm *shm, int unlink_name);

#endif
