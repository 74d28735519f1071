/* server.c — process setup, the poll loop and shutdown of kvserver (see server.h).
 *
 * Signals arrive through a signalfd polled with the sockets, so a SIGCHLD (a worker died)
 * or SIGTERM is handled between two messages, never inside one. */
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "cold.h"
#include "log.h"
#include "proto/kverr.h"
#include "recover.h"
#include "snapshot.h"

uint64_t kvs_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000 + (uint64_t)ts.tv_nsec / 1000;
}

uint64_t kvs_now_ms(void)
{
    return kvs_now_us() / 1000;
}

static int ipc_path(const char *ep, const char **path)
{
    if (strncmp(ep, "ipc://", 6) != 0)
        return 0;
    *path = ep + 6;
    return 1;
}

enum { SOCK_CURVE = 1, SOCK_MANDATORY = 2 };

/* A bound socket. SOCK_CURVE: a CURVE server when a secret key is configured;
 * SOCK_MANDATORY: a send to a peer that is gone fails instead of vanishing. */
static void *open_socket(kvs_server *s, int type, const char *ep, const char *what, int flags)
{
    void *sock = zmq_socket(s->zctx, type);
    if (!sock) {
        KVS_ERROR("zmq_socket(%s) failed: %s", what, zmq_strerror(errno));
        return NULL;
    }
    int linger = 0, one = 1;
    int64_t maxmsg = (int64_t)s->cfg.max_msg_bytes;
    zmq_setsockopt(sock, ZMQ_LINGER, &linger, sizeof(linger));
    if ((flags & SOCK_CURVE) && s->cfg.secret_key[0]) {
        zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof(one));
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, s->cfg.secret_key, 40);
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "kvarena", 7);
    }
    if (type == ZMQ_ROUTER) {
        zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &maxmsg, sizeof(maxmsg));
        if (flags & SOCK_MANDATORY)
            zmq_setsockopt(sock, ZMQ_ROUTER_MANDATORY, &one, sizeof(one));
    }
    if (zmq_bind(sock, ep) != 0) {
        KVS_ERROR("zmq_bind(%s socket, %s) failed: %s", what, ep, zmq_strerror(errno));
        zmq_close(sock);
        return NULL;
    }
    const char *path;
    if (ipc_path(ep, &path))
        chmod(path, 0600);
    return sock;
}

static int runtime_dir(const kvs_config *c)
{
    if (mkdir(c->runtime_dir, 0700) != 0 && errno != EEXIST) {
        KVS_ERROR("mkdir(%s, 0700) failed: %s", c->runtime_dir, strerror(errno));
        return KV_ERR_IO;
    }
    struct stat st;
    if (stat(c->runtime_dir, &st) != 0 || st.st_uid != getuid() || (st.st_mode & 077)) {
        KVS_ERROR("runtime_dir %s must be a directory owned by uid %d with mode 0700",
                  c->runtime_dir, (int)getuid());
        return KV_ERR_IO;
    }
    return 0;
}

/* The runtime dir is one server's: two sharing it would bind over each other's ipc files
 * (zmq_bind replaces a socket file) and unlink them on exit. A lock file in it, flock'ed
 * (released when the process ends, however it ends), holds the owner's pid. */
static void lock_path(const kvs_server *s, char path[KVS_PATH_MAX + 16])
{
    snprintf(path, KVS_PATH_MAX + 16, "%s/kvserver.lock", s->cfg.runtime_dir);
}

static int runtime_lock(kvs_server *s)
{
    char path[KVS_PATH_MAX + 16], pid[32] = "";
    lock_path(s, path);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        KVS_ERROR("open(%s) failed: %s", path, strerror(errno));
        return KV_ERR_IO;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ssize_t n = pread(fd, pid, sizeof(pid) - 1, 0);
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        KVS_ERROR("runtime_dir %s is in use by kvserver pid %s: each server needs its own "
                  "server.runtime_dir", s->cfg.runtime_dir, pid[0] ? pid : "?");
        close(fd);
        return KV_ERR_INVAL;
    }
    struct stat held, named; /* locked a file its owner unlinked on its way out: again */
    if (fstat(fd, &held) != 0 || stat(path, &named) != 0 || held.st_ino != named.st_ino) {
        close(fd);
        return runtime_lock(s);
    }
    int len = snprintf(pid, sizeof(pid), "%d\n", (int)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)len, 0) != len) {
        KVS_ERROR("writing %s failed: %s", path, strerror(errno));
        close(fd);
        return KV_ERR_IO;
    }
    s->lock_fd = fd;
    return 0;
}

/* Local sockets (workers, admin, events) are ipc files in the 0700 runtime dir; the client
 * socket may be tcp only when clients authenticate with CURVE keys. */
static int check_endpoints(const kvs_config *c)
{
    const char *local[] = { c->worker_ep, c->admin_ep, c->events_ep }, *path;
    for (int i = 0; i < 3; i++)
        if (!ipc_path(local[i], &path)) {
            KVS_ERROR("endpoint %s: worker, admin and events endpoints must be ipc://", local[i]);
            return KV_ERR_INVAL;
        }
    if (!ipc_path(c->client_ep, &path) && !c->secret_key[0]) {
        KVS_ERROR("client endpoint %s: a network endpoint needs CURVE authentication "
                  "(server.secret_key_file and a public_key per tenant)", c->client_ep);
        return KV_ERR_INVAL;
    }
    return 0;
}

/* The ZAP handler (RFC 27): a REP socket in the server's context that ZeroMQ asks, during
 * each CURVE handshake on the client socket, whether a client key may connect. Listed keys
 * get the key itself (Z85) as User-Id, which then comes with every message of that
 * connection, so each request is mapped to its tenant by the config of the moment (a key
 * a reload removed stops working at once); unknown keys are refused before any request is
 * read. */
static void *zap_open(kvs_server *s)
{
    void *zap = zmq_socket(s->zctx, ZMQ_REP);
    int linger = 0;
    zmq_setsockopt(zap, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_bind(zap, "inproc://zeromq.zap.01") != 0) {
        KVS_ERROR("zmq_bind(inproc://zeromq.zap.01) failed: %s", zmq_strerror(errno));
        zmq_close(zap);
        return NULL;
    }
    return zap;
}

static void zap_handle(kvs_server *s)
{
    zmq_msg_t f[8];
    int n = 0, more = 1;
    while (more && n < 8) {
        zmq_msg_init(&f[n]);
        if (zmq_msg_recv(&f[n], s->zap, ZMQ_DONTWAIT) < 0) {
            zmq_msg_close(&f[n]);
            return;
        }
        more = zmq_msg_more(&f[n++]);
    }
    const char *user = NULL;
    char z85[41];
    /* version, request id, domain, address, routing id, mechanism, client key */
    if (n == 7 && zmq_msg_size(&f[5]) == 5 && !memcmp(zmq_msg_data(&f[5]), "CURVE", 5) &&
        zmq_msg_size(&f[6]) == 32) {
        zmq_z85_encode(z85, zmq_msg_data(&f[6]), 32);
        if (kvs_config_key_tenant(&s->cfg, z85) < s->cfg.n_tenants)
            user = z85;
        else
            KVS_WARN("refused a client with unknown key %s", z85);
    }
    const char *code = user ? "200" : "400";
    const char *text = user ? "OK" : "unknown client key";
    zmq_send(s->zap, "1.0", 3, ZMQ_SNDMORE);
    zmq_send(s->zap, n > 1 ? zmq_msg_data(&f[1]) : "", n > 1 ? zmq_msg_size(&f[1]) : 0, ZMQ_SNDMORE);
    zmq_send(s->zap, code, 3, ZMQ_SNDMORE);
    zmq_send(s->zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(s->zap, user ? user : "", user ? strlen(user) : 0, ZMQ_SNDMORE);
    zmq_send(s->zap, "", 0, 0);
    while (more) { /* drop the rest of an over-long request */
        zmq_msg_t x;
        zmq_msg_init(&x);
        if (zmq_msg_recv(&x, s->zap, ZMQ_DONTWAIT) < 0)
            more = 0;
        else
            more = zmq_msg_more(&x);
        zmq_msg_close(&x);
    }
    for (int i = 0; i < n; i++)
        zmq_msg_close(&f[i]);
}

/* Tenant salts: BLAKE2b-256 of the tenant's name, so a restarted server finds the same
 * hashes, and two tenants never share a block even with the same tokens. */
static void tenant_salts(const kvs_config *c, uint8_t (*salt)[KVA_HASH_BYTES])
{
    for (uint32_t t = 0; t < c->n_tenants; t++)
        crypto_generichash(salt[t], KVA_HASH_BYTES, (const uint8_t *)c->tenant[t].name,
                           strlen(c->tenant[t].name), (const uint8_t *)"kvarena-tenant", 14);
}

/* A fresh arena starts from the snapshot of the prefix cache, if there is a usable one (a
 * kept arena has its own cache, newer). Never fatal: at worst the cache starts empty. A
 * snapshot not restored whole is moved to PATH.rejected, so the one written at this server's
 * stop does not destroy it (another model's, a damaged one an operator may want back). */
static void snapshot_restore(kvs_server *s, const uint8_t (*salts)[KVA_HASH_BYTES])
{
    const char *path = s->cfg.snapshot;
    uint32_t stale = kvs_snapshot_clean(path);
    if (stale)
        KVS_INFO("snapshot %s: removed %u temporary file(s) of servers killed while writing one",
                 path, stale);
    if (s->shm_attached) {
        KVS_INFO("snapshot %s: not read, the arena left behind holds the cache", path);
        return;
    }
    if (access(path, F_OK) != 0 && errno == ENOENT) {
        KVS_INFO("snapshot %s: none yet (one is written at a clean shutdown)", path);
        return;
    }
    struct stat fst; /* systemd's start timeout covers reading it */
    if (stat(path, &fst) == 0)
        kvs_notify_extend(&s->notify, (uint64_t)fst.st_size);
    kvs_snap_stats st;
    char why[512] = "";
    uint64_t t0 = kvs_now_ms();
    int rc = kvs_snapshot_load(&s->pages, salts, path, &st, why, sizeof(why));
    if (rc) {
        char kept[KVS_PATH_MAX + 16];
        snprintf(kept, sizeof(kept), "%s.rejected", path);
        int moved = rename(path, kept) == 0;
        KVS_WARN("snapshot: %s; %u pages restored before that; the file %s", why, st.pages,
                 moved ? "is kept as .rejected" : "could not be moved aside");
    }
    if (st.pages)
        KVS_INFO("snapshot %s: restored %u committed pages (%.1f MB of K/V from a %.1f MB "
                 "file) in %llu ms", path, st.pages, st.data_bytes / 1e6, st.file_bytes / 1e6,
                 (unsigned long long)(kvs_now_ms() - t0));
}

/* At a clean shutdown, every committed page to the snapshot file. */
static void snapshot_write(kvs_server *s)
{
    kvs_snap_stats st;
    char why[512] = "";
    uint64_t t0 = kvs_now_ms();
    if (kvs_snapshot_save(&s->pages, s->cfg.snapshot, &st, why, sizeof(why)) != 0) {
        KVS_ERROR("snapshot not written: %s", why);
        return;
    }
    KVS_INFO("snapshot %s: %u committed pages written (%.1f MB of K/V, %.1f MB with LZ4: "
             "ratio %.2f) in %llu ms", s->cfg.snapshot, st.pages, st.data_bytes / 1e6,
             st.file_bytes / 1e6, st.file_bytes ? (double)st.data_bytes / st.file_bytes : 0.0,
             (unsigned long long)(kvs_now_ms() - t0));
}

/* ---- snapshots beside serving (kvctl snapshot) ---- */

typedef struct kvs_snap_job {
    pthread_t thread;
    kvs_snap_plan *plan;
    char path[KVS_PATH_MAX];
    uint64_t rate;              /* bytes/s at most (server.snapshot_mb_s), 0 unpaced */
    int fd;                     /* the server's snap_fd */
    kvs_snap_stats st;
    int rc;
    char why[512];
    zmq_msg_t route;            /* the admin request to answer (has_route), or none:
                                 * a periodic one */
    int has_route;
    uint64_t req_id, t0;
} kvs_snap_job;

static void *snap_thread(void *arg)
{
    kvs_snap_job *j = arg;
    j->rc = kvs_snapshot_write(j->plan, j->path, j->rate, &j->st, j->why, sizeof(j->why));
    uint64_t one = 1;
    if (write(j->fd, &one, sizeof(one)) != sizeof(one))
        abort(); /* an eventfd counter cannot overflow here: the server would wait forever */
    return NULL;
}

/* Starts a snapshot beside serving for the request m (NULL: a periodic one). Returns 0, or
 * an error code with *why. */
static int snapshot_begin(kvs_server *s, kvp_msg *m, uint64_t req_id, const char **why)
{
    kvs_snap_job *j = NULL;
    *why = !s->cfg.snapshot[0] ? "no snapshot file: set server.snapshot"
           : s->snap           ? "a snapshot is being written already"
                               : NULL;
    if (*why)
        return KV_ERR_INVAL;
    if (!(j = calloc(1, sizeof(*j))) || !(j->plan = kvs_snapshot_plan(&s->pages))) {
        free(j);
        *why = "server out of memory for a snapshot's plan";
        return KV_ERR_NOMEM;
    }
    snprintf(j->path, sizeof(j->path), "%s", s->cfg.snapshot);
    j->rate = (uint64_t)s->cfg.snapshot_mb_s * 1000000;
    j->fd = s->snap_fd;
    j->req_id = req_id;
    j->t0 = kvs_now_ms();
    zmq_msg_init(&j->route);
    if (m)
        j->has_route = zmq_msg_copy(&j->route, &m->route) == 0;
    if (pthread_create(&j->thread, NULL, snap_thread, j) != 0) {
        zmq_msg_close(&j->route);
        kvs_snapshot_plan_free(j->plan);
        free(j);
        *why = "cannot start a thread";
        return KV_ERR_INTERNAL;
    }
    s->snap = j;
    KVS_INFO("snapshot %s: being written beside serving (%s)", j->path,
             m ? "asked by an operator" : "every server.snapshot_every_s");
    return 0;
}

void kvs_snapshot_request(kvs_server *s, kvp_msg *m, uint64_t req_id)
{
    const char *why = NULL;
    int rc = snapshot_begin(s, m, req_id, &why);
    if (rc)
        kvp_send_status(s->admin, &m->route, req_id, rc, why);
}

/* Every server.snapshot_every_s, from the loop (one already being written: the next one
 * waits for it). */
static void snapshot_tick(kvs_server *s)
{
    uint64_t every = (uint64_t)s->cfg.snapshot_every_s * 1000;
    if (!every || s->clock_ms < s->snap_next_ms || s->snap)
        return;
    const char *why = NULL;
    if (s->snap_next_ms && snapshot_begin(s, NULL, 0, &why) != 0)
        KVS_ERROR("periodic snapshot not started: %s", why);
    s->snap_next_ms = s->clock_ms + every;
}

/* The snapshot thread is done (or is waited for: stopping): answer and log. */
static void snapshot_finish(kvs_server *s)
{
    kvs_snap_job *j = s->snap;
    uint64_t n;
    pthread_join(j->thread, NULL);
    if (read(s->snap_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        KVS_WARN("snapshot eventfd: %s", strerror(errno));
    uint64_t ms = kvs_now_ms() - j->t0;
    Kvarena__Envelope env = KVARENA__ENVELOPE__INIT;
    Kvarena__SnapshotReply r = KVARENA__SNAPSHOT_REPLY__INIT;
    env.req_id = j->req_id;
    env.status = j->rc;
    env.error = j->rc ? j->why : "";
    if (j->rc == 0) {
        KVS_INFO("snapshot %s: %u committed pages written (%.1f MB of K/V, %.1f MB file), %u "
                 "left out (reused meanwhile), in %llu ms beside serving", j->path, j->st.pages,
                 j->st.data_bytes / 1e6, j->st.file_bytes / 1e6, j->st.skipped,
                 (unsigned long long)ms);
        kvs_event(s, "snapshot", "{\"event\":\"written\",\"pages\":%u,\"skipped\":%u,"
                  "\"ms\":%llu}", j->st.pages, j->st.skipped, (unsigned long long)ms);
        s->snap_done_ms = kvs_now_ms();
        s->snap_done_pages = j->st.pages;
        r.pages = j->st.pages;
        r.skipped = j->st.skipped;
        r.data_bytes = j->st.data_bytes;
        r.file_bytes = j->st.file_bytes;
        r.ms = ms;
        r.path = j->path;
        env.body_case = KVARENA__ENVELOPE__BODY_SNAPSHOT_REPLY;
        env.snapshot_reply = &r;
    } else if (j->rc == KV_ERR_SHUTDOWN) {
        snprintf(j->why, sizeof(j->why), "the server is stopping: the snapshot written at its "
                 "stop replaces this one");
        KVS_INFO("snapshot beside serving: %s", j->why);
    } else {
        KVS_ERROR("snapshot not written: %s", j->why);
    }
    if (j->has_route && kvp_send(s->admin, &j->route, &env, NULL, 0) != 0)
        KVS_DEBUG("snapshot reply to an operator who went away: dropped");
    zmq_msg_close(&j->route);
    kvs_snapshot_plan_free(j->plan);
    free(j);
    s->snap = NULL;
}

/* ---- the cold tier (cold.h, coldpark.c) ---- */

static void cold_on_commit(void *arg, uint32_t p)
{
    kvs_cold_store(arg, p);
}

static void cold_on_hit(void *arg, uint32_t p)
{
    kvs_cold_touch(arg, p);
}

static int cold_start(kvs_server *s)
{
    const kvs_config *c = &s->cfg;
    char why[512];
    int rc = kvs_cold_open(&s->cold, &s->pages, (const uint8_t(*)[KVA_HASH_BYTES])s->seqs.salt,
                           c->cold_dir, (uint64_t)c->cold_mb * 1000000,
                           (uint64_t)c->cold_mb_s * 1000000, why, sizeof(why));
    if (rc) {
        KVS_ERROR("cold tier not opened: %s", why);
        return rc;
    }
    s->pages.on_commit = cold_on_commit;
    s->pages.on_hit = cold_on_hit;
    s->pages.hook_arg = s->cold;
    kvs_cold_stats st;
    kvs_cold_stats_get(s->cold, &st);
    KVS_INFO("cold tier %s: %llu pages on disk (%.1f MB of files, at most %u MB)", c->cold_dir,
             (unsigned long long)st.pages, st.bytes / 1e6, c->cold_mb);
    return 0;
}

int kvs_server_start(kvs_server *s)
{
    kvs_config *c = &s->cfg;
    s->start_ms = kvs_now_ms();
    s->clock_ms = 1; /* a sequence stamp of 0 means "not yet" (kvs_seq_expire) */
    s->pid = getpid();
    s->limits = (kvp_limits){ c->layers, c->q_heads, c->kv_heads, c->head_dim,
                              c->max_batch_tokens, c->max_extend_tokens };
    s->next_job_id = 1;
    if (sodium_init() < 0) {
        KVS_ERROR("sodium_init failed");
        return KV_ERR_INTERNAL;
    }
    int rc = check_endpoints(c);
    if (rc || (rc = runtime_dir(c)) || (rc = runtime_lock(s)))
        return rc;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGCHLD);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    sigprocmask(SIG_BLOCK, &set, NULL);
    signal(SIGPIPE, SIG_IGN);
    s->sigfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (s->sigfd < 0) {
        KVS_ERROR("signalfd failed: %s", strerror(errno));
        return KV_ERR_IO;
    }
    s->snap_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->snap_fd < 0) {
        KVS_ERROR("eventfd failed: %s", strerror(errno));
        return KV_ERR_IO;
    }
    uint8_t salts[KVS_MAX_TENANTS][KVA_HASH_BYTES], thash[KVA_HASH_BYTES];
    tenant_salts(c, salts);
    crypto_generichash(thash, sizeof(thash), salts[0], sizeof(salts[0]) * c->n_tenants, NULL, 0);
    if ((rc = kvs_shm_open(&s->shm, c, thash, &s->shm_attached)))
        return rc;
    if (s->shm_attached) {
        kvs_recover_stats st;
        if ((rc = kvs_arena_recover(s->shm.h, c->n_tenants, (const uint8_t(*)[KVA_HASH_BYTES])salts, &st)))
            return rc;
        KVS_INFO("recovered: %u committed pages, %u open pages, %u sequences (%u rolled back "
                 "to before a half-applied request); dropped %u pages and %u sequence records",
                 st.committed, st.open, st.seqs, st.seqs_undone, st.dropped, st.seqs_dropped);
    }
    if ((rc = kvs_pages_init(&s->pages, s->shm.h, c->n_tenants)))
        return rc;
    for (uint32_t t = 0; t < c->n_tenants; t++)
        s->pages.tenant[t].quota = c->tenant[t].quota_pages;
    if ((rc = kvs_seqs_init(&s->seqs, s->shm.h, &s->pages, (const uint8_t(*)[KVA_HASH_BYTES])salts)))
        return rc;
    for (uint32_t t = 0; t < c->n_tenants; t++)
        s->seqs.tenant_max[t] = c->tenant[t].max_seqs;
    if (c->snapshot[0])
        snapshot_restore(s, (const uint8_t(*)[KVA_HASH_BYTES])salts);
    if (c->cold_dir[0] && (rc = cold_start(s)))
        return rc;
    for (s->conn_slots = 2; s->conn_slots < 2 * c->max_conns; s->conn_slots *= 2)
        ;
    s->conns = calloc(s->conn_slots, sizeof(kvs_conn));
    s->workers = calloc(c->workers, sizeof(kvs_worker));
    s->stamp = calloc(c->max_seqs, sizeof(uint64_t));
    if (!s->conns || !s->workers || !s->stamp)
        return KV_ERR_NOMEM;
    s->zctx = zmq_ctx_new();
    if (!s->zctx || (c->secret_key[0] && !(s->zap = zap_open(s))) ||
        !(s->client = open_socket(s, ZMQ_ROUTER, c->client_ep, "client", SOCK_CURVE)) ||
        !(s->worker_sock = open_socket(s, ZMQ_ROUTER, c->worker_ep, "worker", SOCK_MANDATORY)) ||
        !(s->admin = open_socket(s, ZMQ_ROUTER, c->admin_ep, "admin", 0)) ||
        !(s->events = open_socket(s, ZMQ_PUB, c->events_ep, "events", 0)))
        return KV_ERR_IO;
    if (c->secret_key[0]) {
        char pub[41];
        zmq_curve_public(pub, c->secret_key);
        KVS_INFO("authenticated mode: CURVE, server public key %s; a client's tenant is the one "
                 "its key is listed under", pub);
    } else {
        KVS_WARN("DEVELOPMENT MODE: no CURVE keys; clients name their tenant in Hello. Sockets "
                 "are ipc files in %s (0700): only uid %d can connect.", c->runtime_dir, (int)getuid());
    }
    for (uint32_t t = 0; t < c->n_tenants; t++)
        KVS_INFO("tenant %s: quota %u pages, at most %u sequences, weight %u", c->tenant[t].name,
                 c->tenant[t].quota_pages, c->tenant[t].max_seqs ? c->tenant[t].max_seqs : c->max_seqs,
                 c->tenant[t].weight);
    KVS_INFO("model: layers=%u q_heads=%u kv_heads=%u head_dim=%u page_tokens=%u dtype=%s "
             "rope=%s (theta %g) window=%u softcap=%g alibi_max_bias=%g", c->layers,
             c->q_heads, c->kv_heads, c->head_dim, c->page_tokens, kvs_dtype_names[c->dtype],
             kvs_rope_names[c->rope], (double)c->rope_theta, c->window, (double)c->softcap,
             (double)c->alibi_max_bias);
    KVS_INFO("listening: client %s, admin %s, events %s", c->client_ep, c->admin_ep, c->events_ep);
    s->clock_wall_ms = kvs_now_ms(); /* the clock runs from here: recovery was no stall */
    if ((rc = kvs_workers_start(s)))
        return rc;
    s->started = 1;
    return 0;
}

void kvs_event(kvs_server *s, const char *topic, const char *fmt, ...)
{
    char body[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(body, sizeof(body), fmt, ap);
    va_end(ap);
    if (!s->events)
        return;
    zmq_send(s->events, topic, strlen(topic), ZMQ_SNDMORE | ZMQ_DONTWAIT);
    zmq_send(s->events, body, strlen(body), ZMQ_DONTWAIT);
}

static void handle_signals(kvs_server *s)
{
    struct signalfd_siginfo si;
    while (read(s->sigfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
        if (si.ssi_signo == SIGCHLD) {
            kvs_workers_reap(s);
        } else if (si.ssi_signo == SIGHUP) {
            char msg[1024];
            if (!s->stopping)
                kvs_server_reload(s, msg, sizeof(msg)); /* it logs the outcome */
        } else if (!s->stopping) {
            KVS_INFO("signal %d: shutting down", (int)si.ssi_signo);
            s->stopping = 1;
        }
    }
}

typedef void (*kvs_handler)(kvs_server *, kvp_msg *);

/* Reads up to a batch of messages from one socket without blocking. */
static void drain_socket(kvs_server *s, void *sock, kvs_handler fn)
{
    for (int i = 0; i < 256; i++) {
        kvp_msg m;
        int rc = kvp_recv(sock, &m, 1, ZMQ_DONTWAIT);
        if (rc == KV_ERR_IO) {
            kvp_msg_close(&m);
            if (errno != EAGAIN && errno != EINTR)
                KVS_WARN("zmq_msg_recv failed: %s", zmq_strerror(errno));
            return;
        }
        if (rc == KV_ERR_PROTO) {
            if (sock != s->worker_sock)
                kvp_send_status(sock, &m.route, 0, KV_ERR_PROTO, "malformed message: frame count");
            KVS_DEBUG("dropped a message of %d frames", m.n_frames);
        } else {
            fn(s, &m);
        }
        kvp_msg_close(&m);
    }
}

/* Moves the server's clock on by the wall time since its last move, at most heartbeat_ms:
 * the loop wakes every heartbeat_ms / 2 at least, so a longer gap is a stall of the server
 * itself (stopped, swapped out, a long operation). Its workers' heartbeats and its clients'
 * requests wait in the sockets meanwhile: the stall is not held against either. */
static void clock_advance(kvs_server *s)
{
    uint64_t now = kvs_now_ms(), gap = now - s->clock_wall_ms;
    if (gap > s->cfg.heartbeat_ms) {
        KVS_WARN("server loop stalled for %llu ms: not held against workers or sequences",
                 (unsigned long long)gap);
        gap = s->cfg.heartbeat_ms;
    }
    s->clock_ms += gap;
    s->clock_wall_ms = now;
}

static void on_expired(void *arg, const kva_seq *rec, uint32_t n_pages)
{
    kvs_server *s = arg;
    const char *tenant = s->cfg.tenant[rec->tenant].name;
    KVS_INFO("sequence %#llx of tenant %s expired: no request named it for %u s; %u tokens "
             "(%u pending), %u pages released", (unsigned long long)rec->id, tenant,
             s->cfg.seq_idle_timeout_s, rec->len, rec->pending, n_pages);
    kvs_event(s, "seq", "{\"event\":\"expired\",\"seq\":%llu,\"tenant\":\"%s\",\"pages\":%u}",
              (unsigned long long)rec->id, tenant, n_pages);
}

/* Closes the sequences left idle past seq_idle_timeout_s, scanning every quarter of it
 * (a second at most). */
static void seqs_expire(kvs_server *s)
{
    uint64_t idle = (uint64_t)s->cfg.seq_idle_timeout_s * 1000;
    if (!idle || s->clock_ms < s->expire_at_ms)
        return;
    s->expire_at_ms = s->clock_ms + (idle / 4 < 1000 ? idle / 4 : 1000);
    s->seqs_expired += kvs_seq_expire(&s->seqs, s->clock_ms, idle, on_expired, s);
}

/* READY=1 for systemd once a worker has said Ready: from then on requests are served. */
static void notify_ready(kvs_server *s)
{
    uint32_t i = 0;
    while (i < s->cfg.workers && !s->workers[i].was_ready)
        i++;
    if (i == s->cfg.workers)
        return;
    s->notify.ready = 1;
    kvs_notify_sendf(&s->notify, "READY=1\nSTATUS=serving: arena %s, %u pages, %u workers, "
                     "client endpoint %s", s->shm.name, s->shm.h->n_pages, s->cfg.workers,
                     s->cfg.client_ep);
}

int kvs_server_run(kvs_server *s)
{
    zmq_pollitem_t items[7] = {
        { s->worker_sock, 0, ZMQ_POLLIN, 0 },
        { s->client, 0, ZMQ_POLLIN, 0 },
        { s->admin, 0, ZMQ_POLLIN, 0 },
        { NULL, s->sigfd, ZMQ_POLLIN, 0 },
        { NULL, s->snap_fd, ZMQ_POLLIN, 0 },
    };
    int n_items = 5, zap_at = -1, cold_at = -1;
    if (s->zap)
        items[zap_at = n_items++] = (zmq_pollitem_t){ s->zap, 0, ZMQ_POLLIN, 0 };
    if (s->cold)
        items[cold_at = n_items++] = (zmq_pollitem_t){ NULL, kvs_cold_fd(s->cold), ZMQ_POLLIN, 0 };
    long tick = kvs_notify_poll_ms(&s->notify, s->cfg.heartbeat_ms / 2);
    while (!s->stopping) {
        int n = zmq_poll(items, n_items, tick);
        if (n < 0 && errno != EINTR) {
            KVS_ERROR("zmq_poll failed: %s", zmq_strerror(errno));
            return KV_ERR_IO;
        }
        clock_advance(s);
        if (items[3].revents & ZMQ_POLLIN)
            handle_signals(s);
        if (!s->stopping) /* a ping while systemd stops the service would re-arm its watchdog */
            kvs_notify_ping(&s->notify, s->clock_wall_ms);
        if (items[0].revents & ZMQ_POLLIN)
            drain_socket(s, s->worker_sock, kvs_handle_worker);
        if (items[1].revents & ZMQ_POLLIN)
            drain_socket(s, s->client, kvs_handle_client);
        if (items[2].revents & ZMQ_POLLIN)
            drain_socket(s, s->admin, kvs_handle_admin);
        if ((items[4].revents & ZMQ_POLLIN) && s->snap)
            snapshot_finish(s);
        if (zap_at >= 0 && (items[zap_at].revents & ZMQ_POLLIN))
            zap_handle(s);
        if (cold_at >= 0 && (items[cold_at].revents & ZMQ_POLLIN))
            kvs_cold_reports(s);
        kvs_workers_tick(s);
        seqs_expire(s);
        snapshot_tick(s);
        kvs_jobs_dispatch(s);
        if (!s->notify.ready)
            notify_ready(s);
    }
    return 0;
}

static void unlink_ipc(const char *ep)
{
    const char *path;
    if (ipc_path(ep, &path) && unlink(path) != 0 && errno != ENOENT)
        KVS_WARN("unlink(%s) failed: %s", path, strerror(errno));
}

void kvs_server_stop(kvs_server *s)
{
    kvs_event(s, "server", "stopping");
    if (s->started)
        kvs_notify_stopping(&s->notify, "stopping: answering queued requests, stopping workers, "
                            "writing the snapshot if one is configured");
    if (s->snap) { /* the snapshot at stop below replaces it; its operator is told */
        kvs_snapshot_cancel(s->snap->plan);
        snapshot_finish(s);
    }
    if (s->workers)
        kvs_workers_stop(s);
    kvs_cold_stop(s); /* before the sockets close: parked extends are answered */
    /* answer what is still queued so no client waits for its timeout */
    for (uint32_t t = 0; t < KVS_MAX_TENANTS; t++)
        while (s->queue_head[t]) {
            kvs_job *j = s->queue_head[t];
            s->queue_head[t] = j->next;
            kvs_job_finish(s, j, KV_ERR_SHUTDOWN, "server shutting down", NULL, 0);
        }
    /* only the endpoints this server bound: a server that stopped before (refused config or
     * arena, another server already running) must not unlink a live server's ipc files */
    void *socks[] = { s->client, s->worker_sock, s->admin, s->events, s->zap };
    const char *eps[] = { s->cfg.client_ep, s->cfg.worker_ep, s->cfg.admin_ep, s->cfg.events_ep,
                          NULL };
    for (int i = 0; i < 5; i++)
        if (socks[i])
            zmq_close(socks[i]);
    if (s->zctx)
        zmq_ctx_term(s->zctx);
    for (int i = 0; i < 5; i++)
        if (socks[i] && eps[i])
            unlink_ipc(eps[i]);
    if (s->started && s->cfg.snapshot[0]) { /* the workers are gone: no page changes now */
        uint64_t bytes = (uint64_t)(s->pages.n - s->pages.n_free) * s->shm.h->page_bytes;
        kvs_notify_extend(&s->notify, bytes);
        snapshot_write(s);
    }
    kvs_seqs_free(&s->seqs);
    kvs_pages_free(&s->pages);
    /* an arena this server attached and then failed to start on stays for the next one */
    int keep = s->cfg.keep_shm || (s->shm_attached && !s->started);
    if (keep && s->shm.h)
        KVS_INFO("kept shared memory segment %s", s->shm.name);
    kvs_shm_close(&s->shm, !keep);
    free(s->conns);
    free(s->workers);
    free(s->stamp);
    if (s->sigfd > 0)
        close(s->sigfd);
    if (s->snap_fd > 0)
        close(s->snap_fd);
    if (s->lock_fd > 0) { /* removed while still held (runtime_lock checks for that) */
        char path[KVS_PATH_MAX + 16];
        lock_path(s, path);
        unlink(path);
        close(s->lock_fd);
    }
    kvs_notify_close(&s->notify);
    KVS_INFO("stopped");
}
