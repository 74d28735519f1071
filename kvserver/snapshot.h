/* snapshot.h — the prefix cache on disk: every committed page (token ids, chained hash, K/V)
 * written at a clean shutdown and read back into a fresh arena at start (server.snapshot),
 * so a reboot, which empties /dev/shm, does not empty the cache.
 *
 * Also written on demand while serving (kvctl snapshot; see kvs_snapshot_plan).
 *
 * File: a header (magic, format version, the arena's page layout and the model options
 * that shape stored K/V, the tenant list's hash), then one record per page, parents before
 * children: tenant, parent record, block hash, token ids, and the page data split into byte
 * planes (every element's first bytes, then its second...) as one LZ4 frame carrying its
 * content size and xxHash32 content checksum (incompressible blocks are stored as they are).
 * Written to a temporary file, synced, then renamed over PATH: a crash leaves the old file
 * or the new one.
 *
 * Reading trusts nothing: a record is restored only if its tenant and parent are valid, its
 * block hash is the one its parent, tenant and tokens give, and its frame decodes to
 * exactly a page with its checksum; the first bad record ends the restore (the pages before
 * it stay). Restored pages are cached (reference count 0), evictable as any other; restoring
 * stops when the arena has no free page left. The evictable pages restored are evicted in
 * the order they were last used before the snapshot (record ages), as after a restart on a
 * kept arena. */
#ifndef KVARENA_SNAPSHOT_H
#define KVARENA_SNAPSHOT_H

#include <lz4frame.h>
#include <stddef.h>
#include <stdint.h>

#include "pages.h"

/* The file format (native endian: a snapshot stays on its machine or one like it). */
#define KVS_SNAP_MAGIC "KVSNAP\0\0"
#define KVS_SNAP_VERSION 2u

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

/* The header of a file of this arena's pages (magic: 8 bytes, a snapshot's or another
 * kind's); why a header does not fit the arena h, or NULL. */
snap_header kvs_snap_header(const kva_header *h, const char *magic, uint32_t n_records);
const char *kvs_snap_header_mismatch(const snap_header *s, const kva_header *h,
                                     const char *magic);

typedef struct snap_record {
    uint32_t tenant;
    uint32_t parent;          /* record index, KVA_NO_PAGE for a first page */
    uint32_t data_len;        /* bytes of the LZ4 frame that follows the token ids */
    uint32_t age;             /* order of last use among the records, 0 the least recent */
    uint8_t hash[KVA_HASH_BYTES];
    /* then uint32_t tokens[page_tokens], then the frame */
} snap_record;

typedef struct kvs_snap_stats {
    uint32_t pages;        /* pages written or restored */
    uint32_t skipped;      /* planned pages left out: evicted and reused meanwhile (writing) */
    uint64_t data_bytes;   /* their K/V bytes */
    uint64_t file_bytes;   /* the file's size */
} kvs_snap_stats;

/* A snapshot in two steps, so the second can run beside a serving server (kvctl snapshot):
 * kvs_snapshot_plan, in the server's thread, takes what describes every COMMITTED page
 * (index, generation, tenant, parent, order of last use, hash, token ids; parents first);
 * kvs_snapshot_write, in any thread, reads their K/V and writes the file. Committed pages
 * are not written (but for a last layer a client sends again after a server restart on a
 * kept arena: recovery undid it, and the rows written again are the same K/V over the same
 * values), but one may be evicted and reused meanwhile: reuse bumps its
 * generation before anything writes the page, and its data is copied between two reads of
 * the generation, so a page that changed is left out (and its descendants, whose parent the
 * file would lack), never written half old, half new. rate: K/V bytes per second at most
 * (0: as fast as it goes), so a snapshot beside serving leaves the disk and memory to the
 * serving. kvs_snapshot_plan returns NULL when out of memory. */
typedef struct kvs_snap_plan kvs_snap_plan;
kvs_snap_plan *kvs_snapshot_plan(const kvs_pages *pg);
int kvs_snapshot_write(const kvs_snap_plan *plan, const char *path, uint64_t rate,
                       kvs_snap_stats *st, char *why, size_t why_len);
void kvs_snapshot_plan_free(kvs_snap_plan *plan);
/* Makes a kvs_snapshot_write of plan running in another thread give up at its next page
 * (KV_ERR_SHUTDOWN; the file is left as it was). */
void kvs_snapshot_cancel(kvs_snap_plan *plan);

/* Removes the temporary files (PATH.tmp.PID) that processes no longer running left, as a
 * server killed while writing one does; returns how many. */
uint32_t kvs_snapshot_clean(const char *path);

/* Both at once (nothing runs beside it: a clean shutdown). 0 or KV_ERR_IO / KV_ERR_NOMEM
 * with why. */
int kvs_snapshot_save(const kvs_pages *pg, const char *path, kvs_snap_stats *st, char *why,
                      size_t why_len);

/* Restores the pages of the snapshot at path into pg, which must hold no committed page
 * yet, with the tenants' hash salts. Returns 0 when every record was read (restored, or
 * left out: the arena full, a tenant at its quota), else with why: KV_ERR_IO (no file,
 * unreadable), KV_ERR_NOMEM, KV_ERR_INVAL (another layout or model, a bad record: the pages
 * before it are restored, st counts them). */
int kvs_snapshot_load(kvs_pages *pg, const uint8_t (*salt)[KVA_HASH_BYTES], const char *path,
                      kvs_snap_stats *st, char *why, size_t why_len);

/* ---- a page's K/V as one LZ4 frame (snapshots, and the cold tier: cold.c) ----
 * The page's bytes go into byte planes (every element's first bytes, then its second...),
 * then into a frame declaring its size and an xxHash32 content checksum. */
void kvs_page_planes(uint8_t *planes, const uint8_t *page, size_t page_bytes, size_t esize);
void kvs_page_unplanes(uint8_t *page, const uint8_t *planes, size_t page_bytes, size_t esize);
/* The largest frame of a page of page_bytes. */
size_t kvs_frame_bound(size_t page_bytes);
/* planes as a frame in dst (cap bytes): its size, 0 if it fails. */
size_t kvs_frame_pack(uint8_t *dst, size_t cap, const uint8_t *planes, size_t page_bytes);
/* XXH32 with seed 0 of len bytes: an LZ4 frame's content checksum. */
uint32_t kvs_xxh32(const uint8_t *p, size_t len);
/* Decodes the frame (len bytes) into planes (page_bytes): NULL, or why it is not exactly a
 * page with its checksum verified. */
const char *kvs_frame_unpack(LZ4F_dctx *dctx, const uint8_t *frame, size_t len,
                             uint8_t *planes, size_t page_bytes);

#endif
