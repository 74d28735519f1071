/* latency.h — where an Attend's time goes, kept as histograms a reader can turn into
 * percentiles or export (kvctl stats, kvctl metrics):
 *   wait   its arrival at the server to its last dispatch to a worker (the queue; for a
 *          job re-run after its worker died, also the runs lost and the queue again),
 *   run    its last dispatch to the worker's reply (kernels, K/V write, transfer to and
 *          from the worker),
 *   total  its arrival to the reply to its client: wait + run,
 * each for decode jobs (every item one new row: a decode step of a batch) and prefill jobs
 * (any other: prompts, chunks, speculative rows, mixed batches), with the rows each kind
 * attended. Jobs that fail are counted in jobs_failed, not here. Buckets are fixed
 * (kvs_lat_bounds_us), counts per bucket (not cumulative). Written by the server's thread. */
#ifndef KVARENA_LATENCY_H
#define KVARENA_LATENCY_H

#include <stdint.h>

#define KVS_LAT_BUCKETS 18 /* 17 upper bounds, then everything above the last */

enum { KVS_LAT_PREFILL = 0, KVS_LAT_DECODE, KVS_LAT_KINDS };
enum { KVS_LAT_WAIT = 0, KVS_LAT_RUN, KVS_LAT_TOTAL, KVS_LAT_STAGES };

typedef struct kvs_hist {
    uint64_t counts[KVS_LAT_BUCKETS]; /* samples <= bound i (and > bound i - 1) */
    uint64_t sum_us;
} kvs_hist;

typedef struct kvs_latency {
    kvs_hist h[KVS_LAT_KINDS][KVS_LAT_STAGES];
    uint64_t rows[KVS_LAT_KINDS];     /* query rows attended by completed jobs */
} kvs_latency;

extern const uint64_t kvs_lat_bounds_us[KVS_LAT_BUCKETS - 1];
extern const char *const kvs_lat_kind_names[KVS_LAT_KINDS];   /* "prefill", "decode" */
extern const char *const kvs_lat_stage_names[KVS_LAT_STAGES]; /* "wait", "run", "total" */

/* One completed job: `rows` query rows over `items` items (decode when equal), the times
 * (microseconds, one clock) it arrived, was last sent to a worker, and now. */
void kvs_latency_job(kvs_latency *l, uint32_t rows, uint32_t items, uint64_t arrived_us,
                     uint64_t sent_us, uint64_t now_us);

#endif
