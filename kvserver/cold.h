/* cold.h — the cold tier: committed pages kept on disk, so a prefix the arena has evicted
 * is read back instead of computed again (server.cold_dir, at most server.cold_mb).
 *
 * Every page the server commits is queued (kvs_cold_store) for a thread that appends it to
 * the current segment file of the directory: a record with its tenant, block hash, parent's
 * hash, token ids and K/V as one LZ4 frame with its size and checksum (as in snapshots:
 * snapshot.h). When the segments pass the cap, the oldest is deleted with its pages (first
 * in, first out; but a page committed again, as one read back is, while its copy is in the
 * older half of the segments is written again: a second chance for pages in use). The
 * server's thread keeps the index of the pages on disk (coldindex.h: block hash ->
 * segment, offset), built at start by reading every segment's records (each hash checked
 * against its parent's hash, tenant salt and tokens; a segment ends at its first bad or cut
 * record) and kept up to date from the thread's reports (kvs_cold_poll).
 *
 * An extend whose prompt goes on, past the pages cached in the arena, with pages on disk
 * has them read back (kvs_cold_restore) into pages allocated for them before it is answered
 * (handlers.c); a record that does not read back whole (its checksum, its hash, its token
 * ids) is dropped from the index and its tokens are computed as for any miss.
 *
 * A page is written while it may be evicted and reused: its data is copied between two
 * reads of its generation (as kvs_snapshot_write does), so a reused page is never written.
 * Nothing is synced: a crash may cut a segment's last records, which the next start finds.
 * The directory is the server's alone (its uid, not writable by others; files 0600), since
 * whoever writes a segment chooses the K/V of any prefix; one server uses it at a time (an
 * flock). Segments of another model shape, RoPE setting or tenant list are removed. */
#ifndef KVARENA_COLD_H
#define KVARENA_COLD_H

#include <stdint.h>

#include "pages.h"

/* A segment file: a snap_header (snapshot.h) with this magic, then records: a cold_record,
 * the page's token ids (uint32_t each), then its frame (data_len bytes). Native endian. */
#define KVS_COLD_MAGIC "KVCOLD\0\0"

typedef struct cold_record {
    uint32_t tenant;
    uint32_t data_len;       /* bytes of the frame */
    uint32_t has_parent, reserved;
    uint8_t hash[KVA_HASH_BYTES];
    uint8_t parent[KVA_HASH_BYTES]; /* the parent page's hash; zeros for a first page */
} cold_record;

typedef struct kvs_cold kvs_cold;

typedef struct kvs_cold_stats {
    uint64_t pages;     /* pages on disk (in the index) */
    uint64_t bytes;     /* bytes of the segment files */
    uint64_t stored;    /* pages written since start */
    uint64_t skipped;   /* queued and not written: reused first, or the queue was full */
    uint64_t restored;  /* pages read back into the arena */
    uint64_t failed;    /* records that did not read back (damaged, their segment gone;
                         * the pages after one in its chain are not tried) */
    uint64_t dropped;   /* pages deleted with their segments to stay within the cap */
} kvs_cold_stats;

/* Opens (creates) the directory, reads its segments into the index and starts the thread.
 * pg and salt (one per tenant) must outlive it. cap_bytes: the segments' size at most;
 * rate: bytes of K/V written per second at most (0: as fast as it goes). Returns 0, or
 * KV_ERR_IO / KV_ERR_INVAL / KV_ERR_NOMEM with why. */
int kvs_cold_open(kvs_cold **out, kvs_pages *pg, const uint8_t (*salt)[KVA_HASH_BYTES],
                  const char *dir, uint64_t cap_bytes, uint64_t rate, char *why,
                  size_t why_len);
/* Stops the thread (a page being written or read back is finished first; what is queued is
 * dropped: restores queued are never reported) and frees everything. */
void kvs_cold_close(kvs_cold *c);
/* An eventfd readable when the thread has reports for kvs_cold_poll. */
int kvs_cold_fd(const kvs_cold *c);

/* Page p was just committed: queue it to be written (not if its hash is on disk already,
 * unless in the older half of the segments, and then once until that copy is written). */
void kvs_cold_store(kvs_cold *c, uint32_t p);
/* Committed page p was attached by a prefix hit: queue a newer copy if its copy on disk is
 * in the older half of the segments (as kvs_cold_store; nothing if it has none), so the
 * pages in use keep a copy while the tier drops its oldest files: LRU more than FIFO. */
void kvs_cold_touch(kvs_cold *c, uint32_t p);
/* Whether the page of this hash and tenant is on disk. */
int kvs_cold_has(const kvs_cold *c, const uint8_t hash[KVA_HASH_BYTES], uint32_t tenant);
/* KVARENA_COLD_READ_DELAY_MS=N in the environment (tests only) makes the thread wait N ms
 * before each restore, as a slow disk would: extends then wait long enough to race. */
/* Reads back the pages of hashes[0 .. n) (each kvs_cold_has; a chain, parents first) into
 * pages[0 .. n): allocated (WRITING), their token ids in their descriptors, not touched by
 * the caller until it is reported (kvs_cold_poll, with tag). Returns 0 or KV_ERR_NOMEM. */
int kvs_cold_restore(kvs_cold *c, const uint32_t *pages, const uint8_t (*hashes)[KVA_HASH_BYTES],
                     uint32_t n, void *tag);

/* A restore is done: ok[i] says page i holds the K/V of its record; after the first that
 * does not, none does. */
typedef void (*kvs_cold_done_fn)(void *arg, void *tag, const uint8_t *ok, uint32_t n);
/* Applies the thread's reports (pages written, segments deleted, restores done: fn each). */
void kvs_cold_poll(kvs_cold *c, kvs_cold_done_fn fn, void *arg);
void kvs_cold_stats_get(kvs_cold *c, kvs_cold_stats *st);

#endif
