/* cold.c — the cold tier (see cold.h). */
#include "cold.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "coldindex.h"
#include "log.h"
#include "proto/kverr.h"
#include "snapshot.h"

#define NONE KVA_NO_PAGE
#define QUEUE_MAX 1024 /* pages waiting to be written; more are skipped (counted) */
#define SEGMENTS 8     /* the cap is spent on about this many segments */

typedef struct cold_seg {
    uint32_t id;
    int fd;
    uint64_t size;
    uint32_t pages;          /* records found in it at start */
} cold_seg;

typedef struct store_req {
    uint32_t page;
    uint64_t gen;
    int rewrite;             /* a newer copy of a page on disk (its entry is rewriting) */
    cold_record rec;
} store_req;

typedef struct restore_req {
    void *tag;
    uint32_t n;
    uint32_t *pages;
    cold_loc *loc;
    uint8_t (*hash)[KVA_HASH_BYTES];
    uint8_t *ok;
    struct restore_req *next;
} restore_req;

/* What the thread tells the server's thread. */
typedef struct report {
    int kind;                /* REP_STORED (hash, tenant, loc), REP_DROPPED (loc.seg
                              * deleted, oldest the oldest one left: ids may have gaps) or
                              * REP_NOT_REWRITTEN (hash: its rewrite was skipped) */
    uint8_t hash[KVA_HASH_BYTES];
    uint32_t tenant;
    cold_loc loc;
    uint32_t oldest;
} report;
enum { REP_STORED, REP_DROPPED, REP_NOT_REWRITTEN };

struct kvs_cold {
    kvs_pages *pg;
    const uint8_t (*salt)[KVA_HASH_BYTES];
    char dir[4096];
    int dir_fd, lock_fd, event_fd;
    uint64_t cap, seg_cap, rate;
    size_t pb, es, frame_cap;
    uint32_t P;
    snap_header sh;
    cold_index ix;            /* the server's thread's */
    uint32_t seg_lo, seg_hi;  /* its oldest segment, its newest (from the reports) */
    /* the thread's own */
    cold_seg *seg;
    uint32_t n_seg, cap_seg, next_seg;
    uint32_t cur_seg;        /* the segment this run appends to (NONE: none yet); never one
                              * found at start, whose end may be cut */
    uint8_t *planes, *frame, *rec_buf;
    uint32_t *tokens;        /* [P] the page being written */
    LZ4F_dctx *dctx;
    pthread_t thread;
    int started;
    /* shared, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;                /* atomic: also read unlocked */
    uint32_t read_delay_ms;  /* KVARENA_COLD_READ_DELAY_MS (tests: a slow disk) */
    store_req *q;            /* ring of QUEUE_MAX */
    uint32_t *q_tokens;      /* [QUEUE_MAX][P] */
    uint32_t q_head, q_len;
    restore_req *rq_head, *rq_tail, *done_head, *done_tail;
    report *rep;
    uint32_t n_rep, cap_rep;
    uint64_t bytes;          /* segment bytes (atomic: the thread changes it unlocked) */
    kvs_cold_stats st;       /* but pages and bytes */
};

/* ---- segments (the thread's, and kvs_cold_open's before it starts) ---- */

static void seg_name(uint32_t id, char *name, size_t len)
{
    snprintf(name, len, "cold-%010u.seg", id);
}

static cold_seg *seg_find(kvs_cold *c, uint32_t id)
{
    for (uint32_t i = 0; i < c->n_seg; i++)
        if (c->seg[i].id == id)
            return &c->seg[i];
    return NULL;
}

static cold_seg *seg_add(kvs_cold *c, uint32_t id, int fd, uint64_t size)
{
    if (c->n_seg == c->cap_seg) {
        uint32_t cap = c->cap_seg ? 2 * c->cap_seg : 16;
        cold_seg *s = realloc(c->seg, sizeof(*s) * cap);
        if (!s)
            return NULL;
        c->seg = s;
        c->cap_seg = cap;
    }
    cold_seg *s = &c->seg[c->n_seg++];
    *s = (cold_seg){ id, fd, size, 0 };
    return s;
}

/* The id of the oldest segment (the next one's if none). */
static uint32_t seg_oldest(const kvs_cold *c)
{
    return c->n_seg ? c->seg[0].id : c->next_seg;
}

/* Deletes the oldest segment; its pages leave the index when the server's thread reads the
 * report. */
static void seg_drop_oldest(kvs_cold *c, report *r)
{
    cold_seg s = c->seg[0];
    char name[64];
    seg_name(s.id, name, sizeof(name));
    close(s.fd);
    if (unlinkat(c->dir_fd, name, 0) != 0)
        KVS_WARN("cold tier: cannot remove %s/%s: %s", c->dir, name, strerror(errno));
    memmove(c->seg, c->seg + 1, sizeof(*c->seg) * --c->n_seg);
    *r = (report){ .kind = REP_DROPPED, .loc = { .seg = s.id }, .oldest = seg_oldest(c) };
    __atomic_sub_fetch(&c->bytes, s.size, __ATOMIC_RELAXED);
}

/* ---- the thread ---- */

static void post(kvs_cold *c, const report *r) /* under mu */
{
    if (c->n_rep == c->cap_rep) {
        uint32_t cap = c->cap_rep ? 2 * c->cap_rep : 64;
        report *x = realloc(c->rep, sizeof(*x) * cap);
        if (!x) { /* a page not indexed is only a page that will not be found */
            KVS_WARN("cold tier: out of memory for a report: a page on disk not indexed");
            return;
        }
        c->rep = x;
        c->cap_rep = cap;
    }
    c->rep[c->n_rep++] = *r;
}

static void wake_server(kvs_cold *c)
{
    uint64_t one = 1;
    if (write(c->event_fd, &one, sizeof(one)) != sizeof(one))
        abort(); /* an eventfd counter cannot overflow here: the server would never hear */
}

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Writes one queued page (unlocked). Returns 1 if written, 0 if skipped; *r the report. */
static int store_one(kvs_cold *c, const store_req *q, const uint32_t *tokens, report *r,
                     int *dropped, report *drop)
{
    const kva_page *d = kvs_page(c->pg, q->page);
    const uint8_t *data = kva_data(c->pg->h) + (size_t)q->page * c->pb;
    *dropped = 0;
    if (__atomic_load_n(&d->gen, __ATOMIC_ACQUIRE) != q->gen)
        return 0;
    kvs_page_planes(c->planes, data, c->pb, c->es);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&d->gen, __ATOMIC_ACQUIRE) != q->gen)
        return 0; /* evicted and reused while copied */
    size_t n = kvs_frame_pack(c->frame, c->frame_cap, c->planes, c->pb);
    if (!n)
        return 0;
    cold_record rec = q->rec;
    rec.data_len = (uint32_t)n;
    uint32_t len = (uint32_t)(sizeof(rec) + sizeof(uint32_t) * c->P + n);
    cold_seg *s = c->n_seg ? &c->seg[c->n_seg - 1] : NULL;
    if (!s || s->id != c->cur_seg || s->size + len > c->seg_cap) { /* a new segment */
        char name[64];
        int fd = -1;
        for (int tries = 0; fd < 0 && tries < 16; tries++) { /* a name taken: the next one */
            seg_name(c->next_seg, name, sizeof(name));
            fd = openat(c->dir_fd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (fd < 0 && errno == EEXIST)
                c->next_seg++;
            else if (fd < 0)
                break;
        }
        const char *err = fd < 0 ? strerror(errno) : NULL;
        if (!err && pwrite(fd, &c->sh, sizeof(c->sh), 0) != sizeof(c->sh))
            err = "cannot write its header";
        if (!err && !(s = seg_add(c, c->next_seg, fd, sizeof(c->sh))))
            err = "out of memory";
        if (err) {
            KVS_WARN("cold tier: cannot start %s/%s: %s", c->dir, name, err);
            if (fd >= 0) {
                close(fd);
                unlinkat(c->dir_fd, name, 0);
            }
            return 0;
        }
        c->cur_seg = c->next_seg++;
        __atomic_add_fetch(&c->bytes, sizeof(c->sh), __ATOMIC_RELAXED);
    }
    struct iovec iov[3] = { { &rec, sizeof(rec) },
                            { (void *)tokens, sizeof(uint32_t) * c->P },
                            { c->frame, n } };
    ssize_t w = pwritev(s->fd, iov, 3, (off_t)s->size);
    if (w != (ssize_t)len) { /* a part written is a cut record: past the segment's end */
        KVS_WARN("cold tier: cannot write segment %u: %s", s->id,
                 w < 0 ? strerror(errno) : "short write");
        return 0;
    }
    *r = (report){ .kind = REP_STORED, .tenant = rec.tenant, .loc = { s->id, len, s->size } };
    memcpy(r->hash, rec.hash, KVA_HASH_BYTES);
    s->size += len;
    /* past the cap: the oldest segment goes (one per page written: each report posted) */
    if (__atomic_add_fetch(&c->bytes, len, __ATOMIC_RELAXED) > c->cap && c->n_seg > 1) {
        seg_drop_oldest(c, drop);
        *dropped = 1;
    }
    return 1;
}

/* Reads one record back into its page (unlocked): 1 if the page holds it whole. */
static int restore_one(kvs_cold *c, uint32_t page, const uint8_t *hash, cold_loc loc)
{
    cold_seg *s = seg_find(c, loc.seg);
    size_t head = sizeof(cold_record) + sizeof(uint32_t) * c->P;
    if (!s || loc.len < head || loc.len - head > c->frame_cap)
        return 0; /* its segment is gone (the cap), or the index is wrong */
    if (pread(s->fd, c->rec_buf, loc.len, (off_t)loc.off) != (ssize_t)loc.len)
        return 0;
    cold_record rec;
    memcpy(&rec, c->rec_buf, sizeof(rec));
    const kva_page *d = kvs_page(c->pg, page);
    /* the record the index named, for the tokens the caller put in the page */
    if (memcmp(rec.hash, hash, KVA_HASH_BYTES) || rec.data_len != loc.len - head ||
        memcmp(c->rec_buf + sizeof(rec), d->tokens, sizeof(uint32_t) * c->P))
        return 0;
    if (kvs_frame_unpack(c->dctx, c->rec_buf + head, rec.data_len, c->planes, c->pb))
        return 0;
    kvs_page_unplanes(kva_data(c->pg->h) + (size_t)page * c->pb, c->planes, c->pb, c->es);
    return 1;
}

/* Waits on cv until the monotonic time `until` (s), a stop, or with restores_wake a restore
 * queued; under mu. */
static void wait_until(kvs_cold *c, double until, int restores_wake)
{
    while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED) && !(restores_wake && c->rq_head)) {
        double left = until - mono_s();
        if (left <= 0)
            return;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        double t = ts.tv_sec + ts.tv_nsec * 1e-9 + left;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        pthread_cond_timedwait(&c->cv, &c->mu, &ts);
    }
}

static void *cold_thread(void *arg)
{
    kvs_cold *c = arg;
    uint32_t *tokens = c->tokens;
    double next_store = 0; /* paced: when the next page may be written */
    pthread_mutex_lock(&c->mu);
    while (!__atomic_load_n(&c->stop, __ATOMIC_RELAXED)) {
        if (c->rq_head) { /* restores first: an extend waits for each */
            if (c->read_delay_ms) /* a test's slow disk (KVARENA_COLD_READ_DELAY_MS) */
                wait_until(c, mono_s() + c->read_delay_ms / 1e3, 0);
            restore_req *q = c->rq_head;
            c->rq_head = q->next;
            if (!c->rq_head)
                c->rq_tail = NULL;
            pthread_mutex_unlock(&c->mu);
            uint32_t ok = 0;
            for (uint32_t i = 0; i < q->n && !__atomic_load_n(&c->stop, __ATOMIC_RELAXED); i++)
                ok += q->ok[i] = (i == 0 || q->ok[i - 1]) &&
                                 restore_one(c, q->pages[i], q->hash[i], q->loc[i]);
            pthread_mutex_lock(&c->mu);
            c->st.restored += ok;
            /* the first record not read back (the rest not tried), unless stopping */
            c->st.failed += ok < q->n && !__atomic_load_n(&c->stop, __ATOMIC_RELAXED);
            q->next = NULL;
            if (c->done_tail)
                c->done_tail->next = q;
            else
                c->done_head = q;
            c->done_tail = q;
            wake_server(c);
        } else if (c->q_len && c->rate && mono_s() < next_store) {
            wait_until(c, next_store, 1); /* a restore or a stop ends it */
        } else if (c->q_len) {
            store_req q = c->q[c->q_head];
            memcpy(tokens, c->q_tokens + (size_t)c->q_head * c->P, sizeof(uint32_t) * c->P);
            c->q_head = (c->q_head + 1) % QUEUE_MAX;
            c->q_len--;
            pthread_mutex_unlock(&c->mu);
            report r, drop;
            int dropped;
            double t0 = mono_s();
            int ok = store_one(c, &q, tokens, &r, &dropped, &drop);
            if (ok && c->rate) /* no credit for idle time: a burst is paced from its start */
                next_store = (next_store > t0 ? next_store : t0) + (double)c->pb / (double)c->rate;
            pthread_mutex_lock(&c->mu);
            if (ok) {
                c->st.stored++;
                post(c, &r);
            } else {
                c->st.skipped++;
                if (q.rewrite) { /* its entry may be rewritten again */
                    r = (report){ .kind = REP_NOT_REWRITTEN };
                    memcpy(r.hash, q.rec.hash, KVA_HASH_BYTES);
                    post(c, &r);
                }
            }
            if (dropped)
                post(c, &drop);
            if (ok || dropped || q.rewrite)
                wake_server(c);
        } else {
            pthread_cond_wait(&c->cv, &c->mu);
        }
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

/* ---- the server's side ---- */

int kvs_cold_fd(const kvs_cold *c)
{
    return c->event_fd;
}

int kvs_cold_has(const kvs_cold *c, const uint8_t hash[KVA_HASH_BYTES], uint32_t tenant)
{
    const cold_entry *e = kvs_cold_index_find(&c->ix, hash);
    return e && e->tenant == tenant;
}

/* Queues page p (committed) to be written: not if its hash is on disk already, unless in
 * the older half of the segments (a page in use gets a newer copy before its segment goes),
 * and then once until that copy is written or skipped; with hit, only in that case. */
static void store(kvs_cold *c, uint32_t p, int hit)
{
    const kva_page *d = kvs_page(c->pg, p);
    cold_entry *e = kvs_cold_index_find(&c->ix, d->hash);
    if (e ? e->rewriting || c->seg_hi < c->seg_lo ||
                e->loc.seg >= c->seg_lo + (c->seg_hi - c->seg_lo + 1) / 2
          : hit)
        return;
    store_req q = { .page = p, .gen = d->gen, .rewrite = e != NULL };
    q.rec.tenant = d->tenant;
    q.rec.has_parent = d->parent != NONE;
    memcpy(q.rec.hash, d->hash, KVA_HASH_BYTES);
    if (d->parent != NONE)
        memcpy(q.rec.parent, kvs_page(c->pg, d->parent)->hash, KVA_HASH_BYTES);
    pthread_mutex_lock(&c->mu);
    if (c->q_len == QUEUE_MAX) {
        c->st.skipped++;
    } else {
        uint32_t at = (c->q_head + c->q_len++) % QUEUE_MAX;
        c->q[at] = q;
        memcpy(c->q_tokens + (size_t)at * c->P, d->tokens, sizeof(uint32_t) * c->P);
        pthread_cond_signal(&c->cv);
        if (e)
            e->rewriting = 1;
    }
    pthread_mutex_unlock(&c->mu);
}

void kvs_cold_store(kvs_cold *c, uint32_t p)
{
    store(c, p, 0);
}

void kvs_cold_touch(kvs_cold *c, uint32_t p)
{
    store(c, p, 1);
}

static void restore_free(restore_req *q)
{
    if (!q)
        return;
    free(q->pages);
    free(q->loc);
    free(q->hash);
    free(q->ok);
    free(q);
}

int kvs_cold_restore(kvs_cold *c, const uint32_t *pages, const uint8_t (*hashes)[KVA_HASH_BYTES],
                     uint32_t n, void *tag)
{
    restore_req *q = calloc(1, sizeof(*q));
    if (q) {
        q->pages = malloc(sizeof(uint32_t) * n);
        q->loc = malloc(sizeof(cold_loc) * n);
        q->hash = malloc(KVA_HASH_BYTES * (size_t)n);
        q->ok = calloc(n, 1);
    }
    if (!q || !q->pages || !q->loc || !q->hash || !q->ok) {
        restore_free(q);
        return KV_ERR_NOMEM;
    }
    q->tag = tag;
    q->n = n;
    memcpy(q->pages, pages, sizeof(uint32_t) * n);
    memcpy(q->hash, hashes, KVA_HASH_BYTES * (size_t)n);
    for (uint32_t i = 0; i < n; i++) {
        const cold_entry *e = kvs_cold_index_find(&c->ix, hashes[i]);
        q->loc[i] = e ? e->loc : (cold_loc){ 0, 0, 0 }; /* len 0: fails, as a gone segment */
    }
    pthread_mutex_lock(&c->mu);
    if (c->rq_tail)
        c->rq_tail->next = q;
    else
        c->rq_head = q;
    c->rq_tail = q;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return 0;
}

void kvs_cold_poll(kvs_cold *c, kvs_cold_done_fn fn, void *arg)
{
    uint64_t n;
    if (read(c->event_fd, &n, sizeof(n)) < 0 && errno != EAGAIN)
        KVS_WARN("cold tier eventfd: %s", strerror(errno));
    pthread_mutex_lock(&c->mu);
    report *rep = c->rep;
    uint32_t n_rep = c->n_rep;
    restore_req *done = c->done_head;
    c->rep = NULL;
    c->n_rep = c->cap_rep = 0;
    c->done_head = c->done_tail = NULL;
    pthread_mutex_unlock(&c->mu);
    uint64_t dropped = 0;
    for (uint32_t i = 0; i < n_rep; i++) { /* in the order they happened */
        const report *r = &rep[i];
        if (r->kind == REP_DROPPED) {
            dropped += kvs_cold_index_remove_seg(&c->ix, r->loc.seg);
            c->seg_lo = r->oldest;
            continue;
        }
        if (r->kind == REP_NOT_REWRITTEN) {
            cold_entry *e = kvs_cold_index_find(&c->ix, r->hash);
            if (e)
                e->rewriting = 0;
            continue;
        }
        c->seg_hi = r->loc.seg > c->seg_hi ? r->loc.seg : c->seg_hi;
        if (kvs_cold_index_put(&c->ix, r->hash, r->tenant, r->loc) != 0)
            KVS_WARN("cold tier: out of memory for the index: a page on disk not indexed");
    }
    free(rep);
    while (done) {
        restore_req *q = done;
        done = q->next;
        for (uint32_t i = 0; i < q->n; i++)
            if (!q->ok[i]) { /* damaged or gone: never tried again */
                kvs_cold_index_remove_at(&c->ix, q->hash[i], q->loc[i]);
                break;
            }
        fn(arg, q->tag, q->ok, q->n);
        restore_free(q);
    }
    pthread_mutex_lock(&c->mu);
    c->st.dropped += dropped;
    pthread_mutex_unlock(&c->mu);
}

void kvs_cold_stats_get(kvs_cold *c, kvs_cold_stats *st)
{
    pthread_mutex_lock(&c->mu);
    *st = c->st;
    st->pages = c->ix.n;
    st->bytes = __atomic_load_n(&c->bytes, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&c->mu);
}

/* ---- opening: the directory and its segments ---- */

#define FAIL(rc_, ...) do { snprintf(why, why_len, __VA_ARGS__); rc = (rc_); goto out; } while (0)

/* The records of segment file fd (size bytes) into the index; returns the end of the last
 * good one (a bad or cut record ends the segment; what follows is never read). */
static uint64_t seg_scan(kvs_cold *c, int fd, uint32_t id, uint64_t size, uint32_t *pages)
{
    uint64_t off = sizeof(snap_header);
    size_t head = sizeof(cold_record) + sizeof(uint32_t) * c->P;
    uint32_t *tokens = (uint32_t *)(c->rec_buf + sizeof(cold_record));
    *pages = 0;
    while (off + head <= size) {
        cold_record rec;
        if (pread(fd, c->rec_buf, head, (off_t)off) != (ssize_t)head)
            break;
        memcpy(&rec, c->rec_buf, sizeof(rec));
        uint8_t want[KVA_HASH_BYTES];
        if (rec.tenant >= c->pg->n_tenants || rec.data_len > c->frame_cap ||
            rec.has_parent > 1 || off + head + rec.data_len > size)
            break;
        kvs_block_hash(rec.has_parent ? rec.parent : NULL, c->salt[rec.tenant], tokens, c->P,
                       want);
        if (memcmp(want, rec.hash, KVA_HASH_BYTES))
            break;
        cold_loc loc = { id, (uint32_t)(head + rec.data_len), off };
        if (kvs_cold_index_put(&c->ix, rec.hash, rec.tenant, loc) != 0)
            break;
        (*pages)++;
        off += loc.len;
    }
    return off;
}

static int seg_id_cmp(const void *a, const void *b)
{
    uint32_t x = ((const cold_seg *)a)->id, y = ((const cold_seg *)b)->id;
    return (x > y) - (x < y);
}

/* The id of a segment's file name (cold-NNNNNNNNNN.seg, ten digits), or -1. */
static int64_t seg_id_of(const char *name)
{
    if (strlen(name) != 19 || strncmp(name, "cold-", 5) || strcmp(name + 15, ".seg"))
        return -1;
    int64_t id = 0;
    for (int i = 5; i < 15; i++) {
        if (name[i] < '0' || name[i] > '9')
            return -1;
        id = id * 10 + (name[i] - '0');
    }
    return id < UINT32_MAX ? id : -1;
}

/* Every segment of the directory that fits the arena, oldest first. A file of another kind,
 * model or tenant list is removed; one that cannot be opened now is left and skipped. */
static int segs_load(kvs_cold *c, char *why, size_t why_len)
{
    int dfd = openat(c->dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
    if (!d) {
        snprintf(why, why_len, "cannot list %s: %s", c->dir, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return KV_ERR_IO;
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        int64_t id = seg_id_of(e->d_name);
        if (id < 0)
            continue;
        if ((uint32_t)id >= c->next_seg) /* new ones never take a name in use */
            c->next_seg = (uint32_t)id + 1;
        int fd = openat(c->dir_fd, e->d_name, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        struct stat fs;
        snap_header sh;
        const char *bad = NULL;
        if (fd < 0 || fstat(fd, &fs) != 0) {
            KVS_WARN("cold tier: %s/%s skipped: %s", c->dir, e->d_name, strerror(errno));
            if (fd >= 0)
                close(fd);
            continue;
        }
        if (!S_ISREG(fs.st_mode) || fs.st_uid != geteuid() || (fs.st_mode & 022))
            bad = "not a file of this uid writable by it alone";
        else if (pread(fd, &sh, sizeof(sh), 0) != sizeof(sh))
            bad = "too short for a header";
        else
            bad = kvs_snap_header_mismatch(&sh, c->pg->h, KVS_COLD_MAGIC);
        if (bad) {
            KVS_WARN("cold tier: %s/%s removed: %s", c->dir, e->d_name, bad);
            close(fd);
            unlinkat(c->dir_fd, e->d_name, S_ISDIR(fs.st_mode) ? AT_REMOVEDIR : 0);
            continue;
        }
        if (!seg_add(c, (uint32_t)id, fd, (uint64_t)fs.st_size)) {
            close(fd);
            snprintf(why, why_len, "out of memory");
            rc = KV_ERR_NOMEM;
        }
    }
    closedir(d);
    if (rc)
        return rc;
    if (c->n_seg)
        qsort(c->seg, c->n_seg, sizeof(*c->seg), seg_id_cmp);
    for (uint32_t i = 0; i < c->n_seg; i++) { /* older first: a page in two, the newer wins */
        cold_seg *s = &c->seg[i];
        uint64_t end = seg_scan(c, s->fd, s->id, s->size, &s->pages);
        if (end < s->size)
            KVS_WARN("cold tier: segment %u ends at a bad or cut record (%llu of %llu bytes "
                     "read, %u pages)", s->id, (unsigned long long)end,
                     (unsigned long long)s->size, s->pages);
        c->bytes += s->size;
    }
    return 0;
}

int kvs_cold_open(kvs_cold **out, kvs_pages *pg, const uint8_t (*salt)[KVA_HASH_BYTES],
                  const char *dir, uint64_t cap_bytes, uint64_t rate, char *why,
                  size_t why_len)
{
    int rc = 0;
    kvs_cold *c = calloc(1, sizeof(*c));
    *out = NULL;
    if (!c) {
        snprintf(why, why_len, "out of memory");
        return KV_ERR_NOMEM;
    }
    c->pg = pg;
    c->salt = salt;
    c->dir_fd = c->lock_fd = c->event_fd = -1;
    c->cur_seg = NONE;
    c->cap = cap_bytes;
    c->rate = rate;
    c->pb = pg->h->page_bytes;
    c->es = kvk_dtype_size((kvk_dtype)pg->h->dtype);
    c->P = pg->h->page_tokens;
    c->frame_cap = kvs_frame_bound(c->pb);
    c->sh = kvs_snap_header(pg->h, KVS_COLD_MAGIC, 0);
    uint64_t rec_max = sizeof(cold_record) + sizeof(uint32_t) * c->P + c->frame_cap;
    c->seg_cap = cap_bytes / SEGMENTS > sizeof(snap_header) + rec_max
                     ? cap_bytes / SEGMENTS : sizeof(snap_header) + rec_max;
    snprintf(c->dir, sizeof(c->dir), "%s", dir);
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca; /* timed waits on the monotonic clock (pacing) */
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    const char *delay = getenv("KVARENA_COLD_READ_DELAY_MS");
    c->read_delay_ms = delay ? (uint32_t)strtoul(delay, NULL, 10) : 0;
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        FAIL(KV_ERR_IO, "cannot create %s: %s", dir, strerror(errno));
    struct stat ds;
    if ((c->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0 ||
        fstat(c->dir_fd, &ds) != 0)
        FAIL(KV_ERR_IO, "cannot open %s: %s", dir, strerror(errno));
    /* whoever can put a file in it can plant K/V under any prefix: the server's own only */
    if (ds.st_uid != geteuid() || (ds.st_mode & 022))
        FAIL(KV_ERR_INVAL, "%s must belong to uid %d and be writable by it alone (it is uid "
             "%d, mode %03o)", dir, (int)geteuid(), (int)ds.st_uid, (unsigned)(ds.st_mode & 0777));
    if ((c->lock_fd = openat(c->dir_fd, "lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                             0600)) < 0)
        FAIL(KV_ERR_IO, "cannot open %s/lock: %s", dir, strerror(errno));
    if (flock(c->lock_fd, LOCK_EX | LOCK_NB) != 0)
        FAIL(KV_ERR_INVAL, "%s is used by another server (%s/lock is held)", dir, dir);
    c->q = malloc(sizeof(store_req) * QUEUE_MAX);
    c->q_tokens = malloc(sizeof(uint32_t) * QUEUE_MAX * c->P);
    c->planes = malloc(c->pb);
    c->frame = malloc(c->frame_cap);
    c->rec_buf = malloc(rec_max);
    c->tokens = malloc(sizeof(uint32_t) * c->P);
    if (!c->q || !c->q_tokens || !c->planes || !c->frame || !c->rec_buf || !c->tokens ||
        LZ4F_isError(LZ4F_createDecompressionContext(&c->dctx, LZ4F_VERSION)) ||
        kvs_cold_index_init(&c->ix) != 0)
        FAIL(KV_ERR_NOMEM, "out of memory");
    if ((c->event_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
        FAIL(KV_ERR_IO, "eventfd: %s", strerror(errno));
    if ((rc = segs_load(c, why, why_len)) != 0)
        goto out;
    while (c->bytes > c->cap && c->n_seg > 0) { /* a smaller cap than last time */
        report r;
        seg_drop_oldest(c, &r);
        c->st.dropped += kvs_cold_index_remove_seg(&c->ix, r.loc.seg);
    }
    c->seg_lo = seg_oldest(c);
    c->seg_hi = c->n_seg ? c->seg[c->n_seg - 1].id : c->next_seg;
    if (pthread_create(&c->thread, NULL, cold_thread, c) != 0)
        FAIL(KV_ERR_INTERNAL, "cannot start a thread");
    c->started = 1;
    *out = c;
out:
    if (rc)
        kvs_cold_close(c);
    return rc;
}

void kvs_cold_close(kvs_cold *c)
{
    if (!c)
        return;
    if (c->started) {
        pthread_mutex_lock(&c->mu);
        __atomic_store_n(&c->stop, 1, __ATOMIC_RELAXED);
        pthread_cond_signal(&c->cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->thread, NULL);
    }
    for (restore_req *q = c->rq_head, *nx; q; q = nx) {
        nx = q->next;
        restore_free(q);
    }
    for (restore_req *q = c->done_head, *nx; q; q = nx) {
        nx = q->next;
        restore_free(q);
    }
    for (uint32_t i = 0; i < c->n_seg; i++)
        close(c->seg[i].fd);
    if (c->dir_fd >= 0)
        close(c->dir_fd);
    if (c->lock_fd >= 0)
        close(c->lock_fd);
    if (c->event_fd >= 0)
        close(c->event_fd);
    LZ4F_freeDecompressionContext(c->dctx);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c->seg);
    kvs_cold_index_free(&c->ix);
    free(c->q);
    free(c->q_tokens);
    free(c->planes);
    free(c->frame);
    free(c->rec_buf);
    free(c->tokens);
    free(c->rep);
    free(c);
}
