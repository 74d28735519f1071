/* config.h — kvserver configuration: an INI file (deploy/kvarena.ini documents every key)
 * plus command-line overrides `--set section.key=value`. */
#ifndef KVARENA_CONFIG_H
#define KVARENA_CONFIG_H

#include <stdint.h>

#include "kernels/kvkernels.h"

#include "pages.h"

#define KVS_NAME_MAX 64
#define KVS_PATH_MAX 256
#define KVS_HEARTBEAT_MIN_MS 100 /* workers wake every 50 ms; fencing waits 3 heartbeats */
#define KVS_TENANT_KEYS 4        /* client keys per tenant: an old and a new one while rotating */

typedef struct kvs_tenant_cfg {
    char name[KVS_NAME_MAX];   /* [tenant.NAME] */
    uint32_t quota_pages;      /* quota_pages = pages; 0 = unlimited */
    uint32_t max_seqs;         /* max_seqs = open sequences at most; 0 = no limit but the table */
    uint32_t weight;           /* weight = share of the job queue, >= 1 */
    char public_key[KVS_TENANT_KEYS][41]; /* public_key = its clients' Z85 CURVE keys, */
    uint32_t n_keys;                      /* separated by commas or blanks */
} kvs_tenant_cfg;

typedef struct kvs_config {
    /* [server] */
    char name[KVS_NAME_MAX];          /* name = arena name: shm "/kvarena-NAME" */
    char runtime_dir[KVS_PATH_MAX];   /* runtime_dir = 0700 directory of the ipc sockets */
    char client_ep[KVS_PATH_MAX];     /* client_endpoint (default ipc://DIR/client.sock) */
    char worker_ep[KVS_PATH_MAX];     /* worker_endpoint (default ipc://DIR/worker.sock) */
    char admin_ep[KVS_PATH_MAX];      /* admin_endpoint (default ipc://DIR/admin.sock) */
    char events_ep[KVS_PATH_MAX];     /* events_endpoint (default ipc://DIR/events.sock) */
    char worker_path[KVS_PATH_MAX];   /* worker_path (default: kvworker beside kvserver) */
    char snapshot[KVS_PATH_MAX];      /* snapshot: file of the prefix cache ("" = none) */
    char cold_dir[KVS_PATH_MAX];      /* cold_dir: directory of the cold tier, committed pages
                                       * on disk (cold.h; "" = none) */
    char secret_key_file[KVS_PATH_MAX]; /* secret_key_file: the server's Z85 CURVE secret key;
                                         * set = authenticated mode (tenants by client key) */
    char secret_key[41];              /* read from secret_key_file by kvs_config_finish */
    uint32_t workers;                 /* workers = kvworker processes */
    uint32_t threads;                 /* threads = kernel threads per worker */
    uint32_t heartbeat_ms;            /* heartbeat_ms: worker heartbeat interval */
    uint32_t job_timeout_ms;          /* job_timeout_ms: a job running longer fences its worker */
    uint32_t max_batch_tokens;        /* max_batch_tokens: sum of n_new in one Attend */
    uint32_t max_extend_tokens;       /* max_extend_tokens: tokens in one Extend */
    uint64_t max_msg_bytes;           /* max_msg_bytes: ZMQ_MAXMSGSIZE of every socket */
    uint32_t max_conns;               /* max_conns: client connections remembered after Hello */
    uint32_t snapshot_every_s;        /* snapshot_every_s: a snapshot written beside serving
                                       * this often (as kvctl snapshot); 0 = at stop only */
    uint32_t snapshot_mb_s;           /* snapshot_mb_s: K/V MB/s at most of one written beside
                                       * serving; 0 = unpaced */
    uint32_t cold_mb;                 /* cold_mb: the cold tier's files at most (MB) */
    uint32_t cold_mb_s;               /* cold_mb_s: K/V MB/s at most written to it; 0 = unpaced */
    uint32_t seq_idle_timeout_s;      /* seq_idle_timeout_s: a sequence no request names for
                                       * this long is closed (a dead client's); 0 = never */
    int keep_shm;                     /* keep_shm: leave the segment at exit */
    int fresh;                        /* fresh: discard an arena left behind instead of reusing it */
    int log_level;                    /* log_level = error|warn|info|debug */
    /* [model] */
    uint32_t layers, q_heads, kv_heads, head_dim, page_tokens;
    uint32_t dtype;                   /* dtype = fp32|fp16|bf16 */
    uint32_t rope;                    /* rope = none|half|interleaved (kvk_rope_mode) */
    float rope_theta;                 /* rope_theta (default 10000) */
    uint32_t window;                  /* window = sliding window in tokens, 0 = none */
    float softcap;                    /* softcap = logit soft-cap, 0 = none */
    float alibi_max_bias;             /* alibi_max_bias = ALiBi (8 for BLOOM, MPT), 0 = none */
    /* [arena] */
    uint32_t pages;                   /* pages = N, or */
    uint64_t arena_bytes;             /* bytes = size of page data (k, M, G suffixes) */
    uint32_t max_seqs;                /* max_seqs: sequence table records */
    /* [tenant.NAME] sections */
    kvs_tenant_cfg tenant[KVS_MAX_TENANTS];
    uint32_t n_tenants;
} kvs_config;

/* Config names of dtype (kvk_dtype order) and rope (kvk_rope_mode order). */
extern const char *const kvs_dtype_names[3];
extern const char *const kvs_rope_names[3];

/* The kernels' geometry of the configured model. */
static inline kvk_geom kvs_config_geom(const kvs_config *c)
{
    return (kvk_geom){ c->layers, c->q_heads, c->kv_heads, c->head_dim, c->page_tokens,
                       (kvk_dtype)c->dtype };
}

/* Defaults: a small fp16 model, 2 workers, runtime dir /tmp/kvarena, tenant "default". */
void kvs_config_defaults(kvs_config *c);
/* Reads path into c (keys not in the file keep their values). Returns 0 or KV_ERR_INVAL
 * with a message in err. */
int kvs_config_load(kvs_config *c, const char *path, char *err, size_t err_len);
/* Applies one "section.key=value" override. Returns 0 or KV_ERR_INVAL. */
int kvs_config_set(kvs_config *c, const char *assignment, char *err, size_t err_len);
/* Fills derived values (endpoints, page count) and checks ranges. 0 or KV_ERR_INVAL. */
int kvs_config_finish(kvs_config *c, char *err, size_t err_len);
/* The whole config from kvserver's command line: defaults, then every --config FILE, then
 * the flags (--set section.key=value, --workers N, ...) in order, then kvs_config_finish.
 * Run at start and again by a reload, on the same arguments. 0 or KV_ERR_INVAL with err. */
int kvs_config_build(kvs_config *c, int argc, char *const argv[], char *err, size_t err_len);
/* The tenant whose clients use the Z85 key z85: its index, or c->n_tenants if none. */
uint32_t kvs_config_key_tenant(const kvs_config *c, const char *z85);

#endif
