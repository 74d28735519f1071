/* kvk_pool.c — a fixed pool of pthreads that runs one function on every thread at once.
 *
 * The caller is thread 0 and works too, so kvk_pool_create(n) starts n - 1 threads. A run
 * publishes (fn, arg) under the mutex and bumps `gen`; each worker runs fn once per
 * generation and the last one to finish signals the caller. Work is split by the function
 * itself from (ith, nth), ggml style, so the pool knows nothing about attention.
 * run_mu serializes callers: two threads sharing a pool simply take turns.
 *
 * Waking a sleeping thread costs 70-150 us on a VM (measured: a futex wake there goes through
 * the hypervisor), as long as a decode call of a few MB. So both sides spin first: a worker
 * watches `gen` for POOL_SPIN_NS after each run, the caller watches `pending`; only then do
 * they sleep on the condition variables. gen, pending and stop are written under mu with
 * atomic stores, so the spinning reads need no lock.
 *
 * The pool also owns the kernels' scratch memory, grown on demand and kept: a decode call
 * every few milliseconds then allocates nothing. scratch_mu is held by a call from
 * kvk__pool_scratch to kvk__pool_scratch_done, around its runs (taken before run_mu). */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "kvk_internal.h"

struct kvk_pool {
    int n;                    /* threads including the caller */
    pthread_t *threads;       /* [n - 1] workers */
    pthread_mutex_t run_mu;   /* held by the caller for a whole run */
    pthread_mutex_t mu;       /* guards everything below */
    pthread_cond_t start;     /* gen changed or stop set */
    pthread_cond_t done;      /* pending reached 0 */
    uint64_t gen;             /* bumped once per run */
    uint64_t pending;         /* workers still inside fn of this run */
    uint64_t stop;            /* set by destroy */
    kvk_pool_fn fn;           /* this run's function and argument */
    void *arg;
    pthread_mutex_t scratch_mu; /* held by the call using the scratch */
    void *scratch;            /* 64-byte aligned, scratch_bytes long, or NULL */
    size_t scratch_bytes;
};

#define POOL_SPIN_NS 200000 /* longer than a wake-up costs, short next to a decode step */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spins up to POOL_SPIN_NS while (*x == v) == eq; *x is written atomically by another
 * thread. */
static void spin_while(const uint64_t *x, uint64_t v, int eq)
{
    uint64_t t0 = mono_ns();
    for (unsigned i = 1; (__atomic_load_n(x, __ATOMIC_ACQUIRE) == v) == eq; i++) {
        __builtin_ia32_pause();
        if (i % 64 == 0 && mono_ns() - t0 > POOL_SPIN_NS)
            return;
    }
}

typedef struct worker_arg {
    kvk_pool *pool;
    int ith;
} worker_arg;

static void *worker_main(void *p)
{
    worker_arg wa = *(worker_arg *)p;
    kvk_pool *pool = wa.pool;
    free(p);
    uint64_t seen = 0;
    pthread_mutex_lock(&pool->mu);
    for (;;) {
        pthread_mutex_unlock(&pool->mu);
        spin_while(&pool->gen, seen, 1); /* stop comes with a gen bump */
        pthread_mutex_lock(&pool->mu);
        while (pool->gen == seen && !pool->stop)
            pthread_cond_wait(&pool->start, &pool->mu);
        if (pool->stop)
            break;
        seen = pool->gen;
        kvk_pool_fn fn = pool->fn;
        void *arg = pool->arg;
        pthread_mutex_unlock(&pool->mu);
        fn(arg, wa.ith, pool->n);
        pthread_mutex_lock(&pool->mu);
        if (__atomic_sub_fetch(&pool->pending, 1, __ATOMIC_RELEASE) == 0)
            pthread_cond_signal(&pool->done);
    }
    pthread_mutex_unlock(&pool->mu);
    return NULL;
}

/* Stops and joins the first `started` workers, then frees the pool. */
static void pool_free(kvk_pool *pool, int started)
{
    pthread_mutex_lock(&pool->mu);
    __atomic_store_n(&pool->stop, 1, __ATOMIC_RELAXED);
    __atomic_store_n(&pool->gen, pool->gen + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool->start);
    pthread_mutex_unlock(&pool->mu);
    for (int i = 0; i < started; i++)
        pthread_join(pool->threads[i], NULL);
    pthread_cond_destroy(&pool->done);
    pthread_cond_destroy(&pool->start);
    pthread_mutex_destroy(&pool->mu);
    pthread_mutex_destroy(&pool->run_mu);
    pthread_mutex_destroy(&pool->scratch_mu);
    free(pool->scratch);
    free(pool->threads);
    free(pool);
}

kvk_pool *kvk_pool_create(int n_threads)
{
    if (n_threads < 1) {
        errno = EINVAL;
        return NULL;
    }
    kvk_pool *pool = calloc(1, sizeof(*pool));
    if (!pool)
        return NULL;
    pool->n = n_threads;
    pool->threads = calloc((size_t)n_threads, sizeof(pthread_t));
    if (!pool->threads) {
        free(pool);
        return NULL;
    }
    pthread_mutex_init(&pool->run_mu, NULL);
    pthread_mutex_init(&pool->scratch_mu, NULL);
    pthread_mutex_init(&pool->mu, NULL);
    pthread_cond_init(&pool->start, NULL);
    pthread_cond_init(&pool->done, NULL);
    for (int i = 1; i < n_threads; i++) {
        worker_arg *wa = malloc(sizeof(*wa));
        int rc = wa ? 0 : ENOMEM;
        if (wa) {
            *wa = (worker_arg){ pool, i };
            rc = pthread_create(&pool->threads[i - 1], NULL, worker_main, wa);
            if (rc)
                free(wa);
        }
        if (rc) {
            pool_free(pool, i - 1);
            errno = rc;
            return NULL;
        }
    }
    return pool;
}

void kvk_pool_destroy(kvk_pool **pool)
{
    if (!pool || !*pool)
        return;
    pool_free(*pool, (*pool)->n - 1);
    *pool = NULL;
}

int kvk_pool_threads(const kvk_pool *pool)
{
    return pool ? pool->n : 1;
}

void kvk__pool_run(kvk_pool *pool, kvk_pool_fn fn, void *arg)
{
    if (!pool || pool->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    pthread_mutex_lock(&pool->run_mu);
    pthread_mutex_lock(&pool->mu);
    pool->fn = fn;
    pool->arg = arg;
    __atomic_store_n(&pool->pending, (uint64_t)pool->n - 1, __ATOMIC_RELAXED);
    __atomic_store_n(&pool->gen, pool->gen + 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool->start);
    pthread_mutex_unlock(&pool->mu);
    fn(arg, 0, pool->n);
    spin_while(&pool->pending, 0, 0);
    pthread_mutex_lock(&pool->mu);
    while (pool->pending)
        pthread_cond_wait(&pool->done, &pool->mu);
    pthread_mutex_unlock(&pool->mu);
    pthread_mutex_unlock(&pool->run_mu);
}

void *kvk__pool_scratch(kvk_pool *pool, size_t bytes)
{
    void *p = NULL;
    if (!pool)
        return posix_memalign(&p, 64, bytes ? bytes : 1) ? NULL : p;
    pthread_mutex_lock(&pool->scratch_mu);
    if (pool->scratch_bytes < bytes) {
        free(pool->scratch);
        pool->scratch_bytes = 0;
        pool->scratch = posix_memalign(&p, 64, bytes) ? NULL : p;
        if (!pool->scratch) {
            pthread_mutex_unlock(&pool->scratch_mu);
            return NULL;
        }
        pool->scratch_bytes = bytes;
    }
    return pool->scratch;
}

void kvk__pool_scratch_done(kvk_pool *pool, void *scratch)
{
    if (!pool)
        free(scratch);
    else
        pthread_mutex_unlock(&pool->scratch_mu);
}
