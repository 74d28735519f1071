/* server.h — the kvserver process: one thread, one zmq_poll loop.
 *
 * The server owns every piece of metadata (pages.c, seq.c over the arena of shm.c), turns
 * client requests into jobs (jobs.c), hands jobs to ready workers it spawned and
 * supervises (workers.c), and answers admin requests. Nothing here blocks except the
 * poll: a request is validated completely, then applied, then answered. */
#ifndef KVARENA_SERVER_H
#define KVARENA_SERVER_H

#include <stdint.h>
#include <sys/types.h>
#include <zmq.h>

#include "config.h"
#include "latency.h"
#include "notify.h"
#include "pages.h"
#include "proto/validate.h"
#include "proto/wire.h"
#include "seq.h"
#include "shm.h"

#define KVS_JOB_RETRIES 2

/* A client connection, known by its ROUTER routing id after Hello. */
typedef struct kvs_conn {
    uint8_t rid[KVP_MAX_ROUTE]; /* routing id */
    uint8_t rid_len;            /* 0: slot unused */
    uint32_t tenant;            /* tenant index it acts as */
    uint64_t last_seen_ms;      /* for replacing the stalest entry when the table is full */
} kvs_conn;

/* A sequence created by an open or fork request (handlers.c: answering resends). */
typedef struct kvs_created {
    uint64_t req_id;
    uint64_t seq;
    uint32_t tenant;
} kvs_created;
#define KVS_RECENT 1024

typedef struct kvs_job_item {
    uint64_t seq;               /* sequence id */
    uint32_t n_kv, n_new;       /* as in JobItem */
    int replay;                 /* retried and already applied: attend only, no write, no advance */
    uint32_t cow_src, cow_rows; /* cow_rows > 0: the layer's copy-on-write (JobItem) */
    uint32_t *pages;            /* pinned page table copy */
    uint32_t n_pages;
} kvs_job_item;

/* One Attend: one layer of a ragged batch, run by one worker. */
typedef struct kvs_job {
    uint64_t id;                /* unique, never reused: late replies are told apart */
    uint64_t req_id;            /* client's request id */
    uint32_t tenant;
    zmq_msg_t route;            /* client routing id */
    zmq_msg_t tensor[3];        /* Q, K, V as received (shared, never copied) */
    uint32_t layer;
    int want_lse;
    float scale;
    uint32_t tokens;            /* sum of n_new */
    kvs_job_item *items;
    uint32_t n_items;
    int tries;                  /* workers it was sent to */
    uint64_t sent_ms;
    uint64_t arrived_us;        /* kvs_now_us when it was made (latency.h) */
    uint64_t sent_us;           /* when last sent to a worker */
    struct kvs_job *next;       /* queue link */
} kvs_job;

enum kvs_worker_state { KVS_W_DOWN = 0, KVS_W_STARTING, KVS_W_READY, KVS_W_BUSY, KVS_W_FENCING };

typedef struct kvs_worker {
    int index;
    pid_t pid;                  /* 0 when not running */
    uint64_t token;             /* random secret of this process (its Ready and Heartbeats) */
    int state;                  /* kvs_worker_state */
    uint8_t rid[KVP_MAX_ROUTE]; /* routing id of its job socket (from Ready) */
    uint8_t rid_len;
    uint64_t last_seen_ms;      /* last message or heartbeat (server clock) */
    kvs_job *job;               /* job it is running */
    uint64_t jobs;              /* jobs completed */
    uint32_t restarts;
    char isa[16];               /* its kernels' instruction set, from its Ready ("" before) */
    uint32_t threads;           /* its kernel threads, from its Ready */
    uint32_t quick_deaths;      /* consecutive deaths before Ready, for back-off */
    int was_ready;              /* this process said Ready */
    uint64_t fenced_ms;         /* when it was sent SIGKILL (state FENCING) */
    int fence_warned;
    uint64_t restart_at_ms;     /* when a down worker may be started again */
} kvs_worker;

typedef struct kvs_server {
    kvs_config cfg;
    int argc;                   /* kvserver's command line, for a reload (reload.c) */
    char **argv;
    pid_t pid;                  /* the server's own pid (workers check it is still their parent) */
    kvp_limits limits;          /* geometry and request limits, for kvp_check_request */
    kvs_shm shm;
    int shm_attached;           /* the arena was left by an earlier server (not created now) */
    int started;                /* kvs_server_start succeeded */
    kvs_pages pages;
    kvs_seqs seqs;
    void *zctx;
    void *client, *worker_sock, *admin, *events; /* ROUTER, ROUTER, ROUTER, PUB */
    void *zap;                  /* ZAP handler (REP), authenticated mode only */
    int sigfd;                  /* signalfd: SIGCHLD, SIGINT, SIGTERM, SIGHUP (reload) */
    struct kvs_cold *cold;      /* the cold tier (server.cold_dir), or NULL */
    struct kvs_cold_park *parks; /* extends waiting for pages from it (coldpark.c) */
    int cold_replay;            /* handling a parked request again: never parked twice */
    struct kvs_snap_job *snap;  /* a snapshot being written beside serving (server.c), or NULL */
    int snap_fd;                /* eventfd its thread signals when the file is in place */
    uint64_t snap_next_ms;      /* clock_ms of the next periodic one (snapshot_every_s) */
    uint64_t snap_done_ms;      /* kvs_now_ms when the last one was in place, 0 none yet */
    uint32_t snap_done_pages;   /* pages it holds */
    int lock_fd;                /* runtime_dir/kvserver.lock, flock'ed while we run; 0 none */
    int stopping;
    kvs_notify notify;          /* systemd's NOTIFY_SOCKET (notify.h), fd 0 without one */
    kvs_conn *conns;            /* hash table of conn_slots entries (handlers.c) */
    uint32_t conn_slots;        /* a power of two, at least twice cfg.max_conns */
    uint32_t n_conns;
    kvs_worker *workers;
    kvs_job *queue_head[KVS_MAX_TENANTS], *queue_tail[KVS_MAX_TENANTS];
    uint32_t rr_tenant, rr_served;  /* weighted round robin over tenant queues */
    uint32_t rr_worker;             /* worker that got the last job */
    uint64_t next_job_id;
    uint64_t jobs_done, jobs_failed, jobs_queued;
    uint64_t jobs_retried;      /* runs given to another worker after theirs died */
    uint64_t tenant_jobs[KVS_MAX_TENANTS];
    kvs_latency latency;        /* completed jobs' wait, run and total times (latency.h) */
    kvs_created recent[KVS_RECENT]; /* the last creations, a ring */
    uint32_t recent_next;
    uint64_t *stamp;            /* per sequence slot: last Attend that named it */
    uint64_t clock_ms;          /* the server's clock (ms, from 1) for worker liveness, job
                                 * timeouts and sequence idleness: wall time, less the
                                 * server's own stalls (clock_advance in server.c) */
    uint64_t clock_wall_ms;     /* wall time when clock_ms last moved */
    uint64_t expire_at_ms;      /* clock_ms of the next expiry scan */
    uint64_t seqs_expired;      /* sequences closed for idleness */
    uint64_t stamp_now;
    uint64_t start_ms;
    uint64_t dropped;           /* worker-socket messages dropped since the last warning */
    uint64_t dropped_warn_ms;   /* when that warning was logged (one per second at most) */
} kvs_server;

uint64_t kvs_now_ms(void);
uint64_t kvs_now_us(void); /* CLOCK_MONOTONIC, as kvs_now_ms */

/* server.c */
int kvs_server_start(kvs_server *s);
int kvs_server_run(kvs_server *s);
void kvs_server_stop(kvs_server *s);
void kvs_event(kvs_server *s, const char *topic, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Admin Snapshot: plans a snapshot of the prefix cache and writes it in a thread beside the
 * serving loop; the request in m is answered when the file is in place (or at once with
 * why not: no server.snapshot, one already being written, out of memory). Also started by
 * the loop every server.snapshot_every_s, with no one to answer. */
void kvs_snapshot_request(kvs_server *s, kvp_msg *m, uint64_t req_id);

/* coldpark.c: an extend whose prompt goes on, past the arena's cached pages, with pages in
 * the cold tier is parked (1; 0: handle it now) until they are read back, then handled
 * again (kvs_cold_reports). kvs_cold_park_dup: 1 if that request is parked (a resend: its
 * answer goes to route). kvs_cold_stop: the tier closed, parked requests answered
 * KV_ERR_SHUTDOWN and their pages freed. kvs_cold_count_refs: the pages they hold. */
int kvs_cold_park(kvs_server *s, kvp_msg *m, uint64_t req_id, kva_seq *rec, uint32_t t,
                  const uint32_t *tokens, uint32_t n);
int kvs_cold_park_dup(kvs_server *s, uint64_t seq, uint32_t t, uint64_t req_id, zmq_msg_t *route);
void kvs_cold_reports(kvs_server *s);
/* The prompt's pages in the arena (hits[0 .. *n_hits), at most (n - 1) / page_tokens), and
 * how many after those the cold tier holds, their hashes in hash[] (room for as many). */
uint32_t kvs_cold_chain(const kvs_server *s, uint32_t t, const uint32_t *tokens, uint32_t n,
                        uint32_t *hits, uint32_t *n_hits, uint8_t (*hash)[KVA_HASH_BYTES]);
void kvs_cold_stop(kvs_server *s);
void kvs_cold_count_refs(const kvs_server *s, uint32_t *refs);

/* reload.c: builds the config again from the command line and applies its live keys, or
 * nothing if any other key changed. 0 (msg lists the changes, or "no change") or
 * KV_ERR_INVAL (msg says why nothing was applied). */
int kvs_server_reload(kvs_server *s, char *msg, size_t len);

/* check.c: every invariant of pages, sequences and jobs; 0 or KV_ERR_INTERNAL + why. */
int kvs_server_check(kvs_server *s, char *why, size_t why_len);

/* handlers.c: one client or admin message (m is consumed by the caller afterwards) */
void kvs_handle_client(kvs_server *s, kvp_msg *m);
void kvs_handle_admin(kvs_server *s, kvp_msg *m);

/* jobs.c */
void kvs_job_enqueue(kvs_server *s, kvs_job *job, int at_front);
void kvs_job_finish(kvs_server *s, kvs_job *job, int status, const char *error,
                    zmq_msg_t *out, int n_out);
void kvs_jobs_dispatch(kvs_server *s);
void kvs_job_free(kvs_job *job);

/* workers.c */
int kvs_workers_start(kvs_server *s);
void kvs_workers_stop(kvs_server *s);
void kvs_handle_worker(kvs_server *s, kvp_msg *m);
void kvs_workers_reap(kvs_server *s);
void kvs_workers_tick(kvs_server *s);
int kvs_worker_send_job(kvs_server *s, kvs_worker *w, kvs_job *job);
/* SIGKILL + waitpid, then its job back to the queue and a restart (see workers.c). */
void kvs_worker_fence(kvs_server *s, kvs_worker *w, const char *why);
const char *kvs_worker_state_name(int state);

#endif
