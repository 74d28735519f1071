/* latency.c — Attend latency histograms (latency.h). */
#include "latency.h"

/* 50 us to 10 s: a decode step of one layer here takes 0.1-5 ms, a long prefill seconds */
const uint64_t kvs_lat_bounds_us[KVS_LAT_BUCKETS - 1] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 500000,
    1000000, 2500000, 5000000, 10000000,
};
const char *const kvs_lat_kind_names[KVS_LAT_KINDS] = { "prefill", "decode" };
const char *const kvs_lat_stage_names[KVS_LAT_STAGES] = { "wait", "run", "total" };

static void hist_add(kvs_hist *h, uint64_t us)
{
    int b = 0;
    while (b < KVS_LAT_BUCKETS - 1 && us > kvs_lat_bounds_us[b])
        b++;
    h->counts[b]++;
    h->sum_us += us;
}

void kvs_latency_job(kvs_latency *l, uint32_t rows, uint32_t items, uint64_t arrived_us,
                     uint64_t sent_us, uint64_t now_us)
{
    int k = rows == items ? KVS_LAT_DECODE : KVS_LAT_PREFILL; /* every n_new >= 1 */
    hist_add(&l->h[k][KVS_LAT_WAIT], sent_us - arrived_us);
    hist_add(&l->h[k][KVS_LAT_RUN], now_us - sent_us);
    hist_add(&l->h[k][KVS_LAT_TOTAL], now_us - arrived_us);
    l->rows[k] += rows;
}
