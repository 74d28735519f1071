/* kvworker — maps the server's arena and runs attention jobs on its pages in place.
 *
 * Started by kvserver (never by hand): it dies with its parent (PR_SET_PDEATHSIG, set by
 * the server before exec). It writes only the K/V slots of the new tokens a job names and
 * reads only the pages a job lists; it never touches descriptors or the sequence table.
 * A heartbeat thread with its own socket tells the server it is alive even while a long
 * job keeps the main thread computing. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "kernels/kvkernels.h"
#include "kvserver/log.h"
#include "proto/arena.h"
#include "proto/kverr.h"
#include "proto/validate.h"
#include "proto/wire.h"

typedef struct worker {
    const char *shm_name, *endpoint;
    int index, threads, heartbeat_ms;
    uint64_t token;         /* KVARENA_WORKER_TOKEN: proves to the server we are its child */
    kva_header *h;          /* the mapped arena */
    size_t bytes;
    kvk_geom g;
    kvk_pages pages;
    kvk_attn_opts model;    /* the arena's attention options (RoPE, window, soft-cap, ALiBi) */
    float *alibi;           /* [q_heads] ALiBi slopes (model.alibi), NULL without ALiBi */
    kvp_limits lim;         /* what a job may ask, from the arena header */
    kvk_pool *pool;
    void *zctx, *sock;
} worker;

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static int map_arena(worker *w)
{
    int fd = shm_open(w->shm_name, O_RDWR, 0);
    if (fd < 0) {
        KVS_ERROR("shm_open(%s, O_RDWR) failed: %s", w->shm_name, strerror(errno));
        return KV_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        KVS_ERROR("fstat(%s) failed: %s", w->shm_name, strerror(errno));
        close(fd);
        return KV_ERR_IO;
    }
    void *p = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    close(fd);
    if (p == MAP_FAILED) {
        KVS_ERROR("mmap(%s, %lld bytes) failed: %s", w->shm_name, (long long)st.st_size, strerror(errno));
        return KV_ERR_IO;
    }
    w->h = p;
    w->bytes = (size_t)st.st_size;
    char why[256];
    if (kva_header_check(w->h, w->bytes, why, sizeof(why)) != 0) {
        KVS_ERROR("arena %s rejected: %s", w->shm_name, why);
        return KV_ERR_INVAL;
    }
    const kva_header *h = w->h;
    w->g = kva_geom(h);
    w->pages = (kvk_pages){ kva_data(h), h->n_pages };
    w->lim = (kvp_limits){ h->layers, h->q_heads, h->kv_heads, h->head_dim, h->max_batch_tokens, 0 };
    w->model = kvk_attn_opts_default();
    w->model.rope = (kvk_rope_mode)h->rope;
    w->model.rope_theta = h->rope_theta;
    w->model.window_left = h->window ? (int32_t)h->window : -1;
    w->model.softcap = h->softcap;
    if (h->alibi_max_bias > 0) {
        w->alibi = malloc(sizeof(float) * h->q_heads);
        if (!w->alibi) {
            KVS_ERROR("malloc(%u ALiBi slopes) failed", h->q_heads);
            return KV_ERR_NOMEM;
        }
        kvk_alibi_slopes(h->q_heads, h->alibi_max_bias, w->alibi);
        w->model.alibi = w->alibi;
    }
    return 0;
}

static void *heartbeat_main(void *arg)
{
    worker *w = arg;
    void *hb = zmq_socket(w->zctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(hb, ZMQ_LINGER, &linger, sizeof(linger));
    if (zmq_connect(hb, w->endpoint) != 0) {
        KVS_ERROR("heartbeat zmq_connect(%s) failed: %s", w->endpoint, zmq_strerror(errno));
        zmq_close(hb);
        return NULL;
    }
    Kvarena__Heartbeat b = KVARENA__HEARTBEAT__INIT;
    b.index = (uint32_t)w->index;
    b.pid = getpid();
    b.token = w->token;
    Kvarena__Envelope e = KVARENA__ENVELOPE__INIT;
    e.body_case = KVARENA__ENVELOPE__BODY_HEARTBEAT;
    e.heartbeat = &b;
    while (!stop) {
        kvp_send(hb, NULL, &e, NULL, 0);
        for (int slept = 0; slept < w->heartbeat_ms && !stop; slept += 50)
            nanosleep(&(struct timespec){ 0, 50000000L }, NULL); /* wake for stop */
    }
    zmq_close(hb);
    return NULL;
}

/* Checks a job against the arena and its frames; fills items. Returns 0 or an error. */
static int job_check(const worker *w, const Kvarena__Job *j, const kvp_msg *m, kvk_item *items,
                     uint64_t *tokens, char *why, size_t why_len)
{
    const kva_header *h = w->h;
    if (j->epoch != h->epoch) {
        snprintf(why, why_len, "job for arena epoch %llu, arena is at %llu",
                 (unsigned long long)j->epoch, (unsigned long long)h->epoch);
        return KV_ERR_INVAL;
    }
    size_t frames[KVP_MAX_FRAMES];
    for (int i = 0; i < m->n_tensors; i++)
        frames[i] = zmq_msg_size((zmq_msg_t *)&m->tensor[i]);
    int rc = kvp_check_job(j, &w->lim, h->n_pages, h->page_tokens, frames, m->n_tensors, tokens,
                           why, why_len);
    for (size_t i = 0; rc == 0 && i < j->n_items; i++)
        items[i] = (kvk_item){ j->items[i]->pages, j->items[i]->n_kv, j->items[i]->n_new };
    return rc;
}

/* A frame's data as floats. ZeroMQ does not promise alignment (small messages live inside
 * the zmq_msg_t), so a misaligned frame is copied into *scratch (freed by the caller). */
static const float *frame_floats(zmq_msg_t *f, float **scratch)
{
    void *p = zmq_msg_data(f);
    if ((uintptr_t)p % _Alignof(float) == 0)
        return p;
    *scratch = malloc(zmq_msg_size(f) ? zmq_msg_size(f) : 1);
    if (*scratch)
        memcpy(*scratch, p, zmq_msg_size(f));
    return *scratch;
}

static void free_frame(void *data, void *hint)
{
    (void)hint;
    free(data);
}

/* An output frame of n floats in a malloc'ed (aligned) buffer ZeroMQ sends without a copy:
 * zmq_msg_init_size would put a small frame inside the zmq_msg_t, misaligned. */
static int out_frame(zmq_msg_t *f, size_t n)
{
    float *p = malloc(n ? n * sizeof(float) : 1);
    if (!p || zmq_msg_init_data(f, p, n * sizeof(float), free_frame, NULL) != 0) {
        free(p);
        return KV_ERR_NOMEM;
    }
    return 0;
}

/* Writes the new K/V rows of the job's items, except items marked skip_write (a replay of
 * a layer whose K/V the first try wrote: those pages may be committed, hence immutable):
 * one kvk_write_kv per run of items to write (one per job when nothing is replayed). An
 * item's copy-on-write of this layer (cow_rows) comes first: the rows before the new ones. */
static int write_kv(const worker *w, const Kvarena__Job *j, const kvk_item *items,
                    const float *k, const float *v, const kvk_attn_opts *opts)
{
    size_t row = (size_t)w->g.kv_heads * w->g.head_dim, off = 0;
    int rc = 0;
    for (size_t i = 0; i < j->n_items && rc == 0; i++) {
        const Kvarena__JobItem *it = j->items[i];
        if (it->cow_rows)
            rc = kvk_copy_tokens(&w->g, &w->pages, j->layer, it->cow_src,
                                 it->pages[it->n_kv / w->g.page_tokens], it->cow_rows);
    }
    for (size_t i = 0, run; i < j->n_items && rc == 0; i += run) {
        size_t rows = 0;
        int skip = j->items[i]->skip_write;
        for (run = 0; i + run < j->n_items && j->items[i + run]->skip_write == skip; run++)
            rows += items[i + run].n_new;
        if (!skip)
            rc = kvk_write_kv(&w->g, &w->pages, j->layer, &items[i], (uint32_t)run, k + off,
                              v + off, opts);
        off += row * rows;
    }
    return rc;
}

static void run_job(worker *w, kvp_msg *m, const Kvarena__Envelope *e)
{
    const Kvarena__Job *j = e->job;
    char why[256] = "";
    uint64_t tokens = 0;
    zmq_msg_t out[2];
    int n_out = 0, rc;
    kvk_item *items = calloc(j->n_items ? j->n_items : 1, sizeof(kvk_item)); /* before checks: n_items is bounded by the message size */
    if (!items) {
        rc = KV_ERR_NOMEM;
        goto reply;
    }
    rc = job_check(w, j, m, items, &tokens, why, sizeof(why));
    if (rc)
        goto reply;
    if ((rc = out_frame(&out[n_out], tokens * w->g.q_heads * w->g.head_dim)) == 0)
        n_out++;
    if (rc == 0 && j->want_lse && (rc = out_frame(&out[n_out], tokens * w->g.q_heads)) == 0)
        n_out++;
    if (rc)
        goto reply;
    kvk_attn_opts opts = w->model;
    opts.scale = j->scale;
    float *scratch[3] = { NULL, NULL, NULL };
    const float *q = frame_floats(&m->tensor[0], &scratch[0]);
    const float *k = frame_floats(&m->tensor[1], &scratch[1]);
    const float *v = frame_floats(&m->tensor[2], &scratch[2]);
    rc = q && k && v ? 0 : KV_ERR_NOMEM;
    if (rc == 0)
        rc = write_kv(w, j, items, k, v, &opts);
    if (rc == 0)
        rc = kvk_attn(&w->g, &w->pages, j->layer, items, (uint32_t)j->n_items, q,
                      zmq_msg_data(&out[0]), j->want_lse ? zmq_msg_data(&out[1]) : NULL, &opts,
                      w->pool);
    for (int i = 0; i < 3; i++)
        free(scratch[i]);
    if (rc)
        snprintf(why, sizeof(why), "kernel failed: %s", kv_strerror(rc));
reply:
    free(items);
    if (rc) {
        KVS_WARN("job %llu rejected: %s", (unsigned long long)e->req_id, why);
        for (int i = 0; i < n_out; i++)
            zmq_msg_close(&out[i]);
        n_out = 0;
    }
    Kvarena__JobDone d = KVARENA__JOB_DONE__INIT;
    d.job_id = e->req_id;
    Kvarena__Envelope r = KVARENA__ENVELOPE__INIT;
    r.req_id = e->req_id;
    r.status = rc;
    r.error = why;
    r.body_case = KVARENA__ENVELOPE__BODY_JOB_DONE;
    r.job_done = &d;
    if (kvp_send(w->sock, NULL, &r, out, n_out) != 0)
        KVS_WARN("reply to job %llu failed: %s", (unsigned long long)e->req_id, zmq_strerror(errno));
}

static int serve(worker *w)
{
    Kvarena__Ready rd = KVARENA__READY__INIT;
    rd.pid = getpid();
    rd.threads = (uint32_t)w->threads;
    rd.isa = (char *)kvk_isa_name();
    rd.index = (uint32_t)w->index;
    rd.token = w->token;
    Kvarena__Envelope e = KVARENA__ENVELOPE__INIT;
    e.body_case = KVARENA__ENVELOPE__BODY_READY;
    e.ready = &rd;
    if (kvp_send(w->sock, NULL, &e, NULL, 0) != 0) {
        KVS_ERROR("sending Ready failed: %s", zmq_strerror(errno));
        return KV_ERR_IO;
    }
    while (!stop) {
        zmq_pollitem_t it = { w->sock, 0, ZMQ_POLLIN, 0 };
        if (zmq_poll(&it, 1, 500) <= 0)
            continue;
        kvp_msg m;
        int rc = kvp_recv(w->sock, &m, 0, ZMQ_DONTWAIT);
        Kvarena__Envelope *job = rc == 0 ? kvp_decode(&m.env) : NULL;
        if (job && job->body_case == KVARENA__ENVELOPE__BODY_JOB)
            run_job(w, &m, job);
        else if (rc != KV_ERR_IO)
            KVS_WARN("unexpected message from the server: dropped");
        if (job)
            kvarena__envelope__free_unpacked(job, NULL);
        kvp_msg_close(&m);
    }
    return 0;
}

int main(int argc, char **argv)
{
    worker w = { .index = -1, .threads = 1, .heartbeat_ms = 1000 };
    kvs_log_init();
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--shm")) w.shm_name = v;
        else if (!strcmp(a, "--endpoint")) w.endpoint = v;
        else if (!strcmp(a, "--index")) w.index = atoi(v);
        else if (!strcmp(a, "--threads")) w.threads = atoi(v);
        else if (!strcmp(a, "--heartbeat-ms")) w.heartbeat_ms = atoi(v);
        else if (!strcmp(a, "--log-level")) kvs_log_level = atoi(v);
        else {
            fprintf(stderr, "kvworker: unknown option %s\n", a);
            return 2;
        }
    }
    if (!w.shm_name || !w.endpoint || w.index < 0 || w.threads < 1 || w.heartbeat_ms < 1) {
        fprintf(stderr, "usage: kvworker --shm NAME --endpoint EP --index I [--threads T] "
                        "[--heartbeat-ms MS] (started by kvserver)\n");
        return 2;
    }
    const char *tok = getenv("KVARENA_WORKER_TOKEN");
    w.token = tok ? strtoull(tok, NULL, 10) : 0;
    unsetenv("KVARENA_WORKER_TOKEN");
    struct sigaction sa = { .sa_handler = on_signal };
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (map_arena(&w) != 0)
        return 1;
    w.pool = kvk_pool_create(w.threads);
    if (!w.pool) {
        KVS_ERROR("kvk_pool_create(%d) failed: %s", w.threads, strerror(errno));
        return 1;
    }
    w.zctx = zmq_ctx_new();
    w.sock = zmq_socket(w.zctx, ZMQ_DEALER);
    char rid[32];
    snprintf(rid, sizeof(rid), "w%d-%d", w.index, (int)getpid());
    int linger = 0;
    zmq_setsockopt(w.sock, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(w.sock, ZMQ_ROUTING_ID, rid, strlen(rid));
    if (zmq_connect(w.sock, w.endpoint) != 0) {
        KVS_ERROR("zmq_connect(%s) failed: %s", w.endpoint, zmq_strerror(errno));
        return 1;
    }
    pthread_t hb;
    if (pthread_create(&hb, NULL, heartbeat_main, &w) != 0) {
        KVS_ERROR("pthread_create(heartbeat) failed");
        return 1;
    }
    KVS_DEBUG("worker %d: arena %s mapped, isa %s, %d threads", w.index, w.shm_name,
              kvk_isa_name(), w.threads);
    const char *want = getenv("KVARENA_ISA");
    if (want && strcmp(want, kvk_isa_name()))
        KVS_WARN("worker %d: KVARENA_ISA=%s is unknown or not on this CPU (scalar, avx2, avx512, "
                 "amx): using %s", w.index, want, kvk_isa_name());
    int rc = serve(&w);
    stop = 1;
    pthread_join(hb, NULL);
    zmq_close(w.sock);
    zmq_ctx_term(w.zctx);
    kvk_pool_destroy(&w.pool);
    free(w.alibi);
    munmap(w.h, w.bytes);
    return rc ? 1 : 0;
}
