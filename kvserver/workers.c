/* workers.c — spawning, supervising and fencing kvworker processes.
 *
 * The server is the workers' parent: it forks and execs them (they get PR_SET_PDEATHSIG so
 * they die with the server), learns of their death from SIGCHLD, and declares a silent one
 * dead after 3 heartbeat intervals (or a job past job_timeout_ms). A dead or declared-dead
 * worker is FENCED: SIGKILL + waitpid before anything it was granted is reused, so a
 * frozen worker that wakes up later cannot write into pages that now belong to someone
 * else. Its job goes back to the queue (up to KVS_JOB_RETRIES) or fails with
 * KV_ERR_WORKER; rewriting the same K/V slots is idempotent, so a retry is safe. */
#include "server.h"

#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <sodium.h>

#include "log.h"
#include "proto/kverr.h"

const char *kvs_worker_state_name(int state)
{
    static const char *const names[] = { "down", "starting", "ready", "busy", "fencing" };
    return state >= 0 && state <= KVS_W_FENCING ? names[state] : "?";
}

extern char **environ;

/* What a worker is started with, built by the parent before fork(): the server has threads
 * (ZeroMQ's), so the child may only make async-signal-safe calls until execve. */
typedef struct spawn_args {
    char idx[16], threads[16], hb[16], lvl[16], tok[48];
    char *argv[16];
    char **envp;                /* environ + KVARENA_WORKER_TOKEN (not argv: environ is private) */
} spawn_args;

static int spawn_args_build(const kvs_server *s, const kvs_worker *w, spawn_args *a)
{
    snprintf(a->idx, sizeof(a->idx), "%d", w->index);
    snprintf(a->threads, sizeof(a->threads), "%u", s->cfg.threads);
    snprintf(a->hb, sizeof(a->hb), "%u", s->cfg.heartbeat_ms);
    snprintf(a->lvl, sizeof(a->lvl), "%d", kvs_log_level);
    snprintf(a->tok, sizeof(a->tok), "KVARENA_WORKER_TOKEN=%llu", (unsigned long long)w->token);
    char *argv[] = { (char *)"kvworker", (char *)"--shm", (char *)s->shm.name, (char *)"--endpoint",
                     (char *)s->cfg.worker_ep, (char *)"--index", a->idx, (char *)"--threads",
                     a->threads, (char *)"--heartbeat-ms", a->hb, (char *)"--log-level", a->lvl, NULL };
    memcpy(a->argv, argv, sizeof(argv));
    size_t n = 0;
    while (environ[n])
        n++;
    a->envp = malloc(sizeof(char *) * (n + 2));
    if (!a->envp)
        return KV_ERR_NOMEM;
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (strncmp(environ[i], "KVARENA_WORKER_TOKEN=", 21) != 0)
            a->envp[k++] = environ[i];
    a->envp[k++] = a->tok;
    a->envp[k] = NULL;
    return 0;
}

static void exec_worker(const kvs_server *s, const spawn_args *a)
{
    sigset_t none;
    sigemptyset(&none);
    /* the server's reload: a SIGHUP sent to the group must not kill the workers (ignored
     * stays ignored across execve; set before the unblock, it discards one pending) */
    signal(SIGHUP, SIG_IGN);
    sigprocmask(SIG_SETMASK, &none, NULL); /* the server's blocked set is inherited */
    signal(SIGPIPE, SIG_DFL);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != s->pid) /* the server died before prctl: nobody would kill us */
        _exit(1);
    execve(s->cfg.worker_path, a->argv, a->envp);
    static const char msg[] = "kvworker: execve of worker_path failed\n";
    ssize_t rc = write(STDERR_FILENO, msg, sizeof(msg) - 1);
    (void)rc;
    _exit(127);
}

static int spawn(kvs_server *s, kvs_worker *w)
{
    randombytes_buf(&w->token, sizeof(w->token));
    spawn_args a;
    if (spawn_args_build(s, w, &a) != 0) {
        KVS_ERROR("malloc for worker %d's environment failed", w->index);
        return KV_ERR_NOMEM;
    }
    pid_t pid = fork();
    if (pid == 0)
        exec_worker(s, &a);
    free(a.envp);
    if (pid < 0) {
        KVS_ERROR("fork() for worker %d failed: %s", w->index, strerror(errno));
        return KV_ERR_IO;
    }
    w->pid = pid;
    w->state = KVS_W_STARTING;
    w->isa[0] = '\0'; /* until its Ready says */
    w->threads = 0;
    w->fence_warned = 0;
    w->rid_len = 0;
    w->last_seen_ms = s->clock_ms;
    KVS_INFO("worker %d started, pid %d", w->index, (int)pid);
    kvs_event(s, "worker", "{\"event\":\"started\",\"index\":%d,\"pid\":%d}", w->index, (int)pid);
    return 0;
}

int kvs_workers_start(kvs_server *s)
{
    for (uint32_t i = 0; i < s->cfg.workers; i++) {
        s->workers[i].index = (int)i;
        int rc = spawn(s, &s->workers[i]);
        if (rc)
            return rc;
    }
    return 0;
}

/* The worker is gone (reaped): give its job back, schedule its restart. */
static void worker_lost(kvs_server *s, kvs_worker *w, const char *why)
{
    uint64_t now = s->clock_ms;
    KVS_WARN("worker %d (pid %d) %s", w->index, (int)w->pid, why);
    kvs_event(s, "worker", "{\"event\":\"died\",\"index\":%d,\"pid\":%d,\"why\":\"%s\"}",
              w->index, (int)w->pid, why);
    kvs_job *job = w->job;
    /* back off when it dies before Ready again and again (bad binary, bad arena) */
    w->quick_deaths = w->was_ready ? 0 : w->quick_deaths + 1;
    w->was_ready = 0;
    w->restart_at_ms = now + (w->quick_deaths > 3 ? 1000 : 0);
    w->job = NULL;
    w->pid = 0;
    w->rid_len = 0;
    w->state = KVS_W_DOWN;
    if (job) {
        if (job->tries <= KVS_JOB_RETRIES && !s->stopping) {
            s->jobs_retried++;
            kvs_job_enqueue(s, job, 1);
        } else {
            s->jobs_failed++;
            kvs_job_finish(s, job, KV_ERR_WORKER, "the worker running this job died", NULL, 0);
        }
    }
}

/* Fence: SIGKILL now; its job stays pinned and unassigned until SIGCHLD says the process is
 * reaped (kvs_workers_reap -> worker_lost), so nothing it was granted is reused while it
 * could still write. The poll loop does not wait: a process stuck in the kernel delays
 * only its own job. Its messages are dropped from now on (routing id forgotten). */
void kvs_worker_fence(kvs_server *s, kvs_worker *w, const char *why)
{
    if (w->state == KVS_W_FENCING)
        return;
    KVS_WARN("worker %d (pid %d) %s", w->index, (int)w->pid, why);
    kvs_event(s, "worker", "{\"event\":\"fenced\",\"index\":%d,\"pid\":%d}", w->index, (int)w->pid);
    w->state = KVS_W_FENCING;
    w->rid_len = 0;
    w->fenced_ms = s->clock_ms;
    if (w->pid > 0 && kill(w->pid, SIGKILL) != 0 && errno == ESRCH)
        KVS_WARN("kill(%d, SIGKILL): already gone, waiting for SIGCHLD", (int)w->pid);
}

void kvs_workers_reap(kvs_server *s)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        for (uint32_t i = 0; i < s->cfg.workers; i++) {
            kvs_worker *w = &s->workers[i];
            if (w->pid != pid)
                continue;
            char why[64];
            if (WIFSIGNALED(status))
                snprintf(why, sizeof(why), "killed by signal %d", WTERMSIG(status));
            else
                snprintf(why, sizeof(why), "exited with status %d", WEXITSTATUS(status));
            worker_lost(s, w, why);
        }
    }
}

/* Times here are on the server's clock (s->clock_ms), which does not count the server's own
 * stalls: a worker's heartbeats wait in the socket meanwhile (see clock_advance). */
void kvs_workers_tick(kvs_server *s)
{
    uint64_t now = s->clock_ms;
    uint64_t silent = 3ull * s->cfg.heartbeat_ms;
    for (uint32_t i = 0; i < s->cfg.workers; i++) {
        kvs_worker *w = &s->workers[i];
        if (w->state == KVS_W_DOWN) {
            if (!s->stopping && now >= w->restart_at_ms && spawn(s, w) == 0)
                w->restarts++;
            continue;
        }
        if (w->state == KVS_W_FENCING) {
            if (now - w->fenced_ms > 5000 && !w->fence_warned) {
                KVS_ERROR("worker %d (pid %d) not reaped 5 s after SIGKILL (stuck in the kernel?): "
                          "its job waits", w->index, (int)w->pid);
                w->fence_warned = 1;
            }
            continue;
        }
        if (now - w->last_seen_ms > silent + (w->state == KVS_W_STARTING ? 10000 : 0))
            kvs_worker_fence(s, w, "stopped sending heartbeats: fenced");
        else if (w->job && now - w->job->sent_ms > s->cfg.job_timeout_ms)
            kvs_worker_fence(s, w, "ran a job past job_timeout_ms: fenced");
    }
}

static kvs_worker *by_route(kvs_server *s, zmq_msg_t *route)
{
    size_t len = zmq_msg_size(route);
    for (uint32_t i = 0; i < s->cfg.workers; i++) {
        kvs_worker *w = &s->workers[i];
        if (w->rid_len == len && memcmp(w->rid, zmq_msg_data(route), len) == 0)
            return w;
    }
    return NULL;
}

static kvs_worker *by_token(kvs_server *s, uint32_t index, int32_t pid, uint64_t token)
{
    if (index >= s->cfg.workers || pid <= 0 || s->workers[index].pid != pid ||
        s->workers[index].token != token)
        return NULL;
    return &s->workers[index];
}

/* Forged or stale messages on the worker socket are dropped; say so once a second at most,
 * so a flood cannot flood the log too. */
static void dropped(kvs_server *s, const char *what)
{
    uint64_t now = kvs_now_ms();
    s->dropped++;
    if (now - s->dropped_warn_ms < 1000)
        return;
    KVS_WARN("worker socket: dropped %llu message(s), last: %s", (unsigned long long)s->dropped, what);
    s->dropped = 0;
    s->dropped_warn_ms = now;
}

int kvs_worker_send_job(kvs_server *s, kvs_worker *w, kvs_job *job)
{
    Kvarena__Job jm = KVARENA__JOB__INIT;
    Kvarena__JobItem *items = calloc(job->n_items, sizeof(*items));
    Kvarena__JobItem **ptrs = calloc(job->n_items, sizeof(*ptrs));
    int rc = KV_ERR_NOMEM;
    if (!items || !ptrs)
        goto out;
    for (uint32_t i = 0; i < job->n_items; i++) {
        kvarena__job_item__init(&items[i]);
        items[i].pages = job->items[i].pages;
        items[i].n_pages = job->items[i].n_pages;
        items[i].n_kv = job->items[i].n_kv;
        items[i].n_new = job->items[i].n_new;
        items[i].skip_write = job->items[i].replay;
        items[i].cow_rows = job->items[i].cow_rows;
        items[i].cow_src = job->items[i].cow_src;
        ptrs[i] = &items[i];
    }
    jm.job_id = job->id;
    jm.layer = job->layer;
    jm.items = ptrs;
    jm.n_items = job->n_items;
    jm.want_lse = job->want_lse;
    jm.scale = job->scale;
    jm.epoch = s->shm.h->epoch;
    Kvarena__Envelope env = KVARENA__ENVELOPE__INIT;
    env.req_id = job->id;
    env.body_case = KVARENA__ENVELOPE__BODY_JOB;
    env.job = &jm;
    /* copies share the buffers (zmq ref-counts them): the job keeps Q/K/V for a retry */
    zmq_msg_t t[3];
    for (int i = 0; i < 3; i++) {
        zmq_msg_init(&t[i]);
        zmq_msg_copy(&t[i], &job->tensor[i]);
    }
    zmq_msg_t route;
    zmq_msg_init_size(&route, w->rid_len);
    memcpy(zmq_msg_data(&route), w->rid, w->rid_len);
    rc = kvp_send(s->worker_sock, &route, &env, t, 3);
    zmq_msg_close(&route);
    if (rc == 0) {
        job->sent_ms = s->clock_ms;
        job->sent_us = kvs_now_us();
        job->tries++;
        w->job = job;
        w->state = KVS_W_BUSY;
    } else {
        KVS_WARN("sending job %llu to worker %d failed: %s", (unsigned long long)job->id,
                 w->index, zmq_strerror(errno));
    }
out:
    free(items);
    free(ptrs);
    return rc;
}

static void on_ready(kvs_server *s, kvp_msg *m, const Kvarena__Ready *r)
{
    kvs_worker *w = by_token(s, r->index, r->pid, r->token);
    if (!w || w->state == KVS_W_FENCING || zmq_msg_size(&m->route) > KVP_MAX_ROUTE) {
        dropped(s, "Ready from an unknown worker");
        return;
    }
    if (w->job) /* a worker only says Ready again after losing its job: treat as lost */
        kvs_worker_fence(s, w, "announced itself again while running a job: fenced");
    else {
        w->rid_len = (uint8_t)zmq_msg_size(&m->route);
        memcpy(w->rid, zmq_msg_data(&m->route), w->rid_len);
        w->state = KVS_W_READY;
        w->was_ready = 1;
        w->last_seen_ms = s->clock_ms;
        size_t n = 0; /* kept if a short name of [a-z0-9], else "?" */
        while (r->isa && n + 1 < sizeof(w->isa) && (islower((unsigned char)r->isa[n])
                                                    || isdigit((unsigned char)r->isa[n])))
            n++;
        snprintf(w->isa, sizeof(w->isa), "%s", n && !r->isa[n] ? r->isa : "?");
        w->threads = r->threads;
        KVS_INFO("worker %d ready (pid %d, %u threads, isa %s)", w->index, r->pid, r->threads,
                 w->isa);
    }
}

static void on_job_done(kvs_server *s, kvs_worker *w, kvp_msg *m, const Kvarena__Envelope *e)
{
    kvs_job *job = w->job;
    if (!job || job->id != e->req_id) {
        dropped(s, "reply for a job the worker is not running");
        return;
    }
    w->job = NULL;
    w->state = KVS_W_READY;
    if (e->status != 0) {
        s->jobs_failed++;
        kvs_job_finish(s, job, e->status, e->error, NULL, 0);
        return;
    }
    size_t o_bytes = (size_t)job->tokens * s->cfg.q_heads * s->cfg.head_dim * sizeof(float);
    size_t l_bytes = (size_t)job->tokens * s->cfg.q_heads * sizeof(float);
    int want = job->want_lse ? 2 : 1;
    if (m->n_tensors != want || zmq_msg_size(&m->tensor[0]) != o_bytes ||
        (want == 2 && zmq_msg_size(&m->tensor[1]) != l_bytes)) {
        s->jobs_failed++;
        KVS_ERROR("worker %d: job %llu reply has wrong frames", w->index, (unsigned long long)job->id);
        kvs_job_finish(s, job, KV_ERR_INTERNAL, "worker reply had wrong frames", NULL, 0);
        return;
    }
    w->jobs++;
    s->jobs_done++;
    s->tenant_jobs[job->tenant]++;
    kvs_latency_job(&s->latency, job->tokens, job->n_items, job->arrived_us, job->sent_us,
                    kvs_now_us());
    kvs_job_finish(s, job, 0, NULL, m->tensor, m->n_tensors);
}

void kvs_handle_worker(kvs_server *s, kvp_msg *m)
{
    Kvarena__Envelope *e = kvp_decode(&m->env);
    if (!e) {
        dropped(s, "undecodable");
        return;
    }
    if (e->body_case == KVARENA__ENVELOPE__BODY_HEARTBEAT) {
        kvs_worker *w = by_token(s, e->heartbeat->index, e->heartbeat->pid, e->heartbeat->token);
        if (w)
            w->last_seen_ms = s->clock_ms;
        else
            dropped(s, "Heartbeat from an unknown worker");
    } else if (e->body_case == KVARENA__ENVELOPE__BODY_READY) {
        on_ready(s, m, e->ready);
    } else {
        kvs_worker *w = by_route(s, &m->route);
        if (!w)
            dropped(s, "message from an unknown or fenced worker");
        else if (e->body_case == KVARENA__ENVELOPE__BODY_JOB_DONE) {
            w->last_seen_ms = s->clock_ms;
            on_job_done(s, w, m, e);
        } else
            dropped(s, "unexpected message type from a worker");
    }
    kvarena__envelope__free_unpacked(e, NULL);
}

void kvs_workers_stop(kvs_server *s)
{
    for (uint32_t i = 0; i < s->cfg.workers; i++)
        if (s->workers[i].pid > 0)
            kill(s->workers[i].pid, SIGTERM);
    uint64_t deadline = kvs_now_ms() + 2000;
    for (uint32_t i = 0; i < s->cfg.workers; i++) {
        kvs_worker *w = &s->workers[i];
        while (w->pid > 0) {
            pid_t r = waitpid(w->pid, NULL, WNOHANG);
            if (r == w->pid || (r < 0 && errno == ECHILD))
                break;
            if (kvs_now_ms() > deadline) {
                kill(w->pid, SIGKILL);
                waitpid(w->pid, NULL, 0);
                break;
            }
            usleep(5000);
        }
        w->pid = 0;
        if (w->job) {
            kvs_job_finish(s, w->job, KV_ERR_SHUTDOWN, "server shutting down", NULL, 0);
            w->job = NULL;
        }
    }
}
