/* bench_kernels.c — libkvkernels throughput against this machine's measured limits.
 *
 * In one run: read bandwidth (a STREAM-like sum over 1 GiB) and fp32 FMA peak (a
 * register-only loop) for each ISA, with the same thread count as the kernels; then decode
 * (GB/s of K+V read, against bandwidth) and causal prefill (GFLOP/s, against FMA peak) for
 * each ISA, plus a naive non-paged baseline and, for decode, two streaming baselines: a plain
 * loop doing decode's arithmetic over the same pages, in the kernel's order and in whole
 * pages (how much bandwidth is left once there is compute between the loads, on this
 * machine). Decode pages are scattered over a 2 GiB arena and every iteration reads a
 * different part of it, so K/V come from DRAM, not the LLC.
 * Big buffers ask for transparent hugepages, as the arena does (DESIGN.md), so page walks
 * do not distort the figures. The slow baselines (scalar reference, naive) are timed on one
 * call for decode and on the last 64 query rows for prefill, to keep the run short. Each
 * SIMD figure is the median of ROUNDS rounds (the kernel between two limit measurements).
 * Last, kvk_write_kv of a 2048-token prefill's K and V with RoPE (one thread: it takes no
 * pool), in GB/s of fp32 read plus fp16 written, against the read bandwidth.
 * Usage: bench_kernels [all|limits|decode|prefill|write [isa|naive]] (default: all, every
 * ISA).
 * Output: one `BENCH name=... isa=... value=... unit=... limit=... pct=...` line per figure. */
#include <immintrin.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "kvkernels.h"

#define NTH 2
#define Q_HEADS 32
#define KV_HEADS 8
#define HEAD_DIM 128
#define PAGE 16
#define ARENA_BYTES (2ull << 30)
#define BW_BYTES (1ull << 30)
#define TAIL 64               /* query rows the slow prefill baselines are timed on */

static const char *const isa_names[] = { "scalar", "avx2", "avx512", "amx" };
enum { N_ISA = 4, ISA_AMX = 3 }; /* amx: prefill only (decode here: 4 q heads per KV head,
                                  * avx512's narrow tiles) */

/* Page-aligned memory with hugepages advised; never freed before exit unless by the caller
 * with munmap. */
static void *big_alloc(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(1);
    }
    madvise(p, bytes, MADV_HUGEPAGE);
    return p;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void bench_line(const char *name, const char *isa, double value, const char *unit,
                       double limit)
{
    printf("BENCH name=%s isa=%s value=%.2f unit=%s limit=%.2f pct=%.1f\n", name, isa, value,
           unit, limit, limit > 0 ? 100.0 * value / limit : 0.0);
    fflush(stdout);
}

/* The speed of this VM moves by tens of percent from one second to the next, so a figure is
 * taken in ROUNDS rounds, each timing the kernel between two measurements of its limit and
 * compared with the larger of the two (a limit measured in a slow moment cannot inflate a
 * ratio); the round with the median ratio is reported (and the spread on a comment line). */
#define ROUNDS 5

typedef struct paired {
    double value, limit;
} paired;

/* The limit of a round: the larger of *before (updated to after, the next round's before)
 * and after. */
static double limit_around(double *before, double after)
{
    double l = *before > after ? *before : after;
    *before = after;
    return l;
}

static int paired_cmp(const void *a, const void *b)
{
    const paired *x = a, *y = b;
    double rx = x->value / x->limit, ry = y->value / y->limit;
    return (rx > ry) - (rx < ry);
}

static int dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void bench_median(const char *name, const char *isa, const char *unit, paired *r, int n)
{
    qsort(r, n, sizeof(*r), paired_cmp);
    if (n > 1)
        printf("# %s isa=%s pct over %d rounds: min %.1f median %.1f max %.1f\n", name, isa, n,
               100 * r[0].value / r[0].limit, 100 * r[n / 2].value / r[n / 2].limit,
               100 * r[n - 1].value / r[n - 1].limit);
    bench_line(name, isa, r[n / 2].value, unit, r[n / 2].limit);
}

/* Runs fn(arg, ith) on NTH threads (the caller is one) and returns the wall time. */
static double par_run(void *(*fn)(void *), void **args)
{
    pthread_t t[NTH];
    double t0 = now();
    for (int i = 1; i < NTH; i++)
        pthread_create(&t[i], NULL, fn, args[i]);
    fn(args[0]);
    for (int i = 1; i < NTH; i++)
        pthread_join(t[i], NULL);
    return now() - t0;
}

/* ---- machine limits ---- */

typedef struct bw_arg {
    const float *p;
    size_t n;
    int isa;
    float out;
} bw_arg;

static float sum_scalar(const float *p, size_t n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (size_t i = 0; i < n; i += 4) {
        s0 += p[i];
        s1 += p[i + 1];
        s2 += p[i + 2];
        s3 += p[i + 3];
    }
    return s0 + s1 + s2 + s3;
}

__attribute__((target("avx2"))) static float sum_avx2(const float *p, size_t n)
{
    __m256 a = _mm256_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 32) {
        a = _mm256_add_ps(a, _mm256_load_ps(p + i));
        b = _mm256_add_ps(b, _mm256_load_ps(p + i + 8));
        c = _mm256_add_ps(c, _mm256_load_ps(p + i + 16));
        d = _mm256_add_ps(d, _mm256_load_ps(p + i + 24));
    }
    float r[8];
    _mm256_storeu_ps(r, _mm256_add_ps(_mm256_add_ps(a, b), _mm256_add_ps(c, d)));
    return r[0] + r[1] + r[2] + r[3] + r[4] + r[5] + r[6] + r[7];
}

__attribute__((target("avx512f"))) static float sum_avx512(const float *p, size_t n)
{
    __m512 a = _mm512_setzero_ps(), b = a, c = a, d = a;
    for (size_t i = 0; i < n; i += 64) {
        a = _mm512_add_ps(a, _mm512_load_ps(p + i));
        b = _mm512_add_ps(b, _mm512_load_ps(p + i + 16));
        c = _mm512_add_ps(c, _mm512_load_ps(p + i + 32));
        d = _mm512_add_ps(d, _mm512_load_ps(p + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a, b), _mm512_add_ps(c, d)));
}

static void *bw_thread(void *p)
{
    bw_arg *a = p;
    a->out = a->isa == 2 ? sum_avx512(a->p, a->n) : a->isa == 1 ? sum_avx2(a->p, a->n)
                                                                 : sum_scalar(a->p, a->n);
    return NULL;
}

static double measure_bw(const float *buf, int isa)
{
    bw_arg a[NTH];
    void *args[NTH];
    size_t n = BW_BYTES / sizeof(float) / NTH;
    double best = 1e30;
    for (int i = 0; i < NTH; i++) {
        a[i] = (bw_arg){ buf + i * n, n, isa, 0 };
        args[i] = &a[i];
    }
    for (int rep = 0; rep < 4; rep++)
        best = fmin(best, par_run(bw_thread, args));
    if (a[0].out == 12345.0f) /* keep the sums alive */
        printf("#\n");
    return BW_BYTES / best / 1e9;
}

#define FMA_ITERS 10000000L

typedef struct fma_arg {
    int isa;
    float out;
} fma_arg;

/* FMA_CHAINS independent chains per thread: the 4-cycle FMA latency times 2 ports needs 8,
 * 12 leave slack for the loop. Each chain is a named variable (an array would live on the
 * stack) and an empty asm keeps all of them in registers and alive. */
#define FMA_CHAINS 12
#define FMA_STEP4(a, b, c_, d)                                                           \
    a = FMA(a, m, c); b = FMA(b, m, c); c_ = FMA(c_, m, c); d = FMA(d, m, c);             \
    __asm__ volatile("" : "+x"(a), "+x"(b), "+x"(c_), "+x"(d));
#define FMA_BODY(T, SET1, REDUCE)                                                         \
    T x0 = SET1(1.0f), x1 = SET1(1.1f), x2 = SET1(1.2f), x3 = SET1(1.3f), x4 = SET1(1.4f), \
      x5 = SET1(1.5f), x6 = SET1(1.6f), x7 = SET1(1.7f), x8 = SET1(1.8f), x9 = SET1(1.9f), \
      x10 = SET1(2.0f), x11 = SET1(2.1f), m = SET1(0.999999f), c = SET1(1e-7f);          \
    for (long i = 0; i < FMA_ITERS; i++) {                                                \
        FMA_STEP4(x0, x1, x2, x3)                                                         \
        FMA_STEP4(x4, x5, x6, x7)                                                         \
        FMA_STEP4(x8, x9, x10, x11)                                                       \
    }                                                                                     \
    return REDUCE(x0) + REDUCE(x1) + REDUCE(x2) + REDUCE(x3) + REDUCE(x4) + REDUCE(x5) +  \
           REDUCE(x6) + REDUCE(x7) + REDUCE(x8) + REDUCE(x9) + REDUCE(x10) + REDUCE(x11);

static inline float id1(float x) { return x; }
__attribute__((target("fma"))) static float fma_scalar(void)
{
#define FMA fmaf
    FMA_BODY(float, id1, id1)
#undef FMA
}

__attribute__((target("avx2,fma"))) static inline float red8(__m256 x) { return _mm256_cvtss_f32(x); }
__attribute__((target("avx2,fma"))) static float fma_avx2(void)
{
#define FMA _mm256_fmadd_ps
    FMA_BODY(__m256, _mm256_set1_ps, red8)
#undef FMA
}

__attribute__((target("avx512f"))) static inline float red16(__m512 x) { return _mm512_cvtss_f32(x); }
__attribute__((target("avx512f"))) static float fma_avx512(void)
{
#define FMA _mm512_fmadd_ps
    FMA_BODY(__m512, _mm512_set1_ps, red16)
#undef FMA
}

/* AMX: four independent bf16 tile products (16 x 16 x 32 each) per step, operands in tiles. */
#define AMX_ITERS 1000000L
typedef struct amx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_cfg;
__attribute__((target("amx-tile,amx-bf16"))) static float amx_peak(void)
{
    uint16_t ones[16 * 32]; /* bf16 1.0 */
    float out[16 * 16];
    for (int i = 0; i < 16 * 32; i++)
        ones[i] = 0x3f80;
    amx_cfg cfg;
    memset(&cfg, 0, sizeof(cfg));
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) {
        cfg.colsb[i] = 64;
        cfg.rows[i] = 16;
    }
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_loadd(4, ones, 64);
    _tile_loadd(5, ones, 64);
    _tile_loadd(6, ones, 64);
    _tile_loadd(7, ones, 64);
    for (long i = 0; i < AMX_ITERS; i++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0];
}

static void *fma_thread(void *p)
{
    fma_arg *a = p;
    a->out = a->isa == ISA_AMX ? amx_peak() : a->isa == 2 ? fma_avx512()
             : a->isa == 1 ? fma_avx2() : fma_scalar();
    return NULL;
}

static double measure_fma(int isa)
{
    fma_arg a[NTH];
    void *args[NTH];
    for (int i = 0; i < NTH; i++) {
        a[i] = (fma_arg){ isa, 0 };
        args[i] = &a[i];
    }
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) /* best of several: a busy machine only slows it */
        best = fmin(best, par_run(fma_thread, args));
    if (isa == ISA_AMX) /* bf16 products accumulated in fp32 */
        return (double)NTH * AMX_ITERS * 4 * (16 * 16 * 32 * 2) / best / 1e9;
    int lanes = isa == 2 ? 16 : isa == 1 ? 8 : 1;
    return (double)NTH * FMA_ITERS * FMA_CHAINS * lanes * 2 / best / 1e9;
}

/* ---- the arena ---- */

typedef struct bench {
    kvk_geom g;
    kvk_pages pg;
    uint32_t *perm;          /* shuffled page indices */
    uint32_t next;           /* where the next call takes its pages from in perm */
    kvk_pool *pool;
    float *q, *o;
} bench;

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

typedef struct fill_arg {
    uint16_t *p;
    size_t n;
} fill_arg;

/* Finite fp16 values in [-1, 1): keeps logits realistic and never NaN. */
static void *fill_thread(void *p)
{
    fill_arg *a = p;
    uint32_t x = (uint32_t)(uintptr_t)a->p | 1;
    for (size_t i = 0; i < a->n; i++) {
        x ^= x << 13, x ^= x >> 17, x ^= x << 5;
        a->p[i] = (uint16_t)(x & 0xbbff);
    }
    return NULL;
}

static void bench_init(bench *b)
{
    b->g = (kvk_geom){ 2, Q_HEADS, KV_HEADS, HEAD_DIM, PAGE, KVK_F16 };
    size_t pb = kvk_page_bytes(&b->g);
    b->pg.n_pages = (uint32_t)(ARENA_BYTES / pb);
    b->pg.base = big_alloc((size_t)b->pg.n_pages * pb);
    fill_arg fa[NTH];
    void *args[NTH];
    size_t n = (size_t)b->pg.n_pages * pb / 2 / NTH;
    for (int i = 0; i < NTH; i++) {
        fa[i] = (fill_arg){ (uint16_t *)b->pg.base + i * n, n };
        args[i] = &fa[i];
    }
    par_run(fill_thread, args);
    b->perm = malloc(b->pg.n_pages * sizeof(uint32_t));
    for (uint32_t i = 0; i < b->pg.n_pages; i++)
        b->perm[i] = i;
    for (uint32_t i = b->pg.n_pages - 1; i > 0; i--) {
        uint32_t j = (uint32_t)(rnd() % (i + 1)), t = b->perm[i];
        b->perm[i] = b->perm[j];
        b->perm[j] = t;
    }
    b->pool = kvk_pool_create(NTH);
    size_t qn = (size_t)2048 * Q_HEADS * HEAD_DIM;
    b->q = malloc(qn * sizeof(float));
    b->o = malloc(qn * sizeof(float));
    for (size_t i = 0; i < qn; i++)
        b->q[i] = (float)((double)(rnd() >> 11) * 0x1p-53 * 2 - 1);
}

/* Page tables for `batch` items of n_kv + n_new tokens, taken round-robin from the shuffled
 * pages so consecutive calls touch different memory. */
static void take_items(bench *b, kvk_item *items, uint32_t **tables, int batch, uint32_t n_kv,
                       uint32_t n_new)
{
    uint32_t np = (n_kv + n_new + PAGE - 1) / PAGE;
    for (int i = 0; i < batch; i++) {
        if (b->next + np > b->pg.n_pages)
            b->next = 0;
        tables[i] = b->perm + b->next;
        b->next += np;
        items[i] = (kvk_item){ tables[i], n_kv, n_new };
    }
}

/* ---- the streaming baseline ----
 *
 * What a plain streaming loop doing decode's arithmetic gets out of this machine's memory.
 * It reads the K and V blocks of a decode item's pages for every KV head (the same scattered
 * 8 KiB runs, KV heads shared out between the threads, the kernel's two levels of prefetch)
 * and spends on each 64-byte line what the decode kernel must: 32 fp16 widened to fp32 and
 * 8 FMAs into independent accumulators (4 query vectors per KV head: one FMA per element
 * for Q.K, one for P.V). No softmax, no dependency chains, no bookkeeping. On a machine that
 * overlaps compute with memory well it runs at the read bandwidth; where it does not, the
 * decode figures are to be read against it as well.
 * decode_stream_pages: the same loop in the longest runs this layout has, each page's K/V of
 * every KV head in one go (64 KiB; the threads share out the pages): what the arithmetic
 * leaves of the bandwidth when the memory is read in the best order there is. */
typedef struct stream_arg {
    const bench *b;
    const uint32_t *pages;
    uint32_t n_pages, h0;
    int isa, whole; /* whole: every KV head of a page in one run */
    float out;
} stream_arg;

#define STREAM_LEAD 3  /* pages: the kernel leads by 3 blocks of 16 keys */
#define STREAM_NEXT 1  /* pages: the kernel prefetches one block of 16 keys ahead */

/* Asks for the start of the K and V runs of page i + STREAM_LEAD (whole pages: the start and
 * the middle of the run) and returns the run of page i + STREAM_NEXT, whose lines the caller
 * asks for one per line it reads: the two levels of prefetch of the decode kernel, into L1
 * as the kernel's. */
static const uint8_t *stream_lead(const stream_arg *a, uint32_t i, size_t pb, size_t off,
                                 size_t run)
{
    if (i + STREAM_LEAD < a->n_pages) {
        const uint8_t *n = a->b->pg.base + (size_t)a->pages[i + STREAM_LEAD] * pb + off;
        for (size_t o = 0; o < 512; o += 64) {
            __builtin_prefetch(n + o, 0, 3);
            __builtin_prefetch(n + run / 2 + o, 0, 3);
        }
    }
    uint32_t nx = i + STREAM_NEXT < a->n_pages ? i + STREAM_NEXT : i;
    return a->b->pg.base + (size_t)a->pages[nx] * pb + off;
}

/* The loop of the streaming baseline for one ISA: T the vector type, CVT(p) STEP bytes of
 * fp16 as a T of fp32, FMA/ADD/SET1 its arithmetic; two conversions per 64-byte line on
 * AVX-512, four on AVX2 (each feeding 4 FMAs: 8 FMAs of 16 lanes per line either way). */
#define STREAM_BODY(T, CVT, STEP, FMA, ADD, SET1)                                           \
    size_t pb = kvk_page_bytes(&a->b->g), run = 2 * (size_t)PAGE * HEAD_DIM * 2;           \
    uint32_t h_step = NTH;                                                                \
    if (a->whole)                                                                         \
        run *= KV_HEADS, h_step = KV_HEADS;                                               \
    T acc[8], q[4];                                                                       \
    for (int k = 0; k < 8; k++)                                                           \
        acc[k] = SET1(0.0f);                                                              \
    for (int k = 0; k < 4; k++)                                                           \
        q[k] = SET1(0.5f + 0.1f * k);                                                     \
    for (uint32_t h = a->h0; h < KV_HEADS; h += h_step) {                                 \
        size_t off = kvk_block_offset(&a->b->g, 1, h, 0);                                 \
        for (uint32_t i = 0; i < a->n_pages; i++) {                                       \
            const uint8_t *p = a->b->pg.base + (size_t)a->pages[i] * pb + off;            \
            const uint8_t *pf = stream_lead(a, i, pb, off, run);                          \
            for (size_t o = 0; o < run; o += 2 * STEP) {                                  \
                if (o % 64 == 0)                                                          \
                    __builtin_prefetch(pf + o, 0, 3);                                     \
                T x0 = CVT(p + o), x1 = CVT(p + o + STEP);                                \
                for (int k = 0; k < 4; k++) {                                             \
                    acc[k] = FMA(x0, q[k], acc[k]);                                       \
                    acc[4 + k] = FMA(x1, q[k], acc[4 + k]);                               \
                }                                                                         \
            }                                                                             \
        }                                                                                 \
    }                                                                                     \
    for (int k = 1; k < 8; k++)                                                           \
        acc[0] = ADD(acc[0], acc[k]);

#define CVT512(p) _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)(p)))
#define CVT256(p) _mm256_cvtph_ps(_mm_load_si128((const __m128i *)(p)))

__attribute__((target("avx512f,fma"))) static float stream_avx512(const stream_arg *a)
{
    STREAM_BODY(__m512, CVT512, 32, _mm512_fmadd_ps, _mm512_add_ps, _mm512_set1_ps)
    return _mm512_reduce_add_ps(acc[0]);
}

__attribute__((target("avx2,fma,f16c"))) static float stream_avx2(const stream_arg *a)
{
    STREAM_BODY(__m256, CVT256, 16, _mm256_fmadd_ps, _mm256_add_ps, _mm256_set1_ps)
    float r[8];
    _mm256_storeu_ps(r, acc[0]);
    return r[0] + r[1] + r[2] + r[3] + r[4] + r[5] + r[6] + r[7];
}

static void *stream_thread(void *p)
{
    stream_arg *a = p;
    a->out = a->isa == 2 ? stream_avx512(a) : stream_avx2(a);
    return NULL;
}

/* GB/s of the streaming baseline over the pages of one fresh item of n_kv tokens; whole:
 * every KV head of a page in one run, each thread a share of the pages. */
static double stream_run(bench *b, int isa, uint32_t n_kv, int whole)
{
    kvk_item item;
    uint32_t *table, n_pages = (n_kv + PAGE - 1) / PAGE;
    take_items(b, &item, &table, 1, n_kv, 0);
    stream_arg a[NTH];
    void *args[NTH];
    for (uint32_t i = 0; i < NTH; i++) {
        uint32_t p0 = whole ? n_pages * i / NTH : 0, p1 = whole ? n_pages * (i + 1) / NTH : n_pages;
        a[i] = (stream_arg){ b, table + p0, p1 - p0, whole ? 0 : i, isa, whole, 0 };
        args[i] = &a[i];
    }
    double t = par_run(stream_thread, args);
    if (a[0].out == 12345.0f) /* keep the sums alive */
        printf("#\n");
    return (double)n_pages * KV_HEADS * 2 * PAGE * HEAD_DIM * 2 / t / 1e9;
}

/* ---- the naive non-paged baseline: contiguous fp16 K/V per head, plain loops ---- */

typedef struct naive_arg {
    const uint16_t *k, *v;   /* [kv_heads][n][D] */
    const float *q;          /* [n_q][Q_HEADS][D] */
    float *o;
    uint32_t n, n_q, h0, h1; /* keys, query rows (the last n_q positions), q heads [h0, h1) */
} naive_arg;

static void *naive_thread(void *p)
{
    naive_arg *a = p;
    float *s = malloc(a->n * sizeof(float));
    float scale = 1.0f / sqrtf(HEAD_DIM);
    for (uint32_t r = 0; r < a->n_q; r++)
        for (uint32_t qh = a->h0; qh < a->h1; qh++) {
            const float *q = a->q + ((size_t)r * Q_HEADS + qh) * HEAD_DIM;
            size_t kvh = qh / (Q_HEADS / KV_HEADS);
            uint32_t keys = a->n - a->n_q + r + 1; /* causal */
            float mx = -INFINITY, l = 0;
            for (uint32_t j = 0; j < keys; j++) {
                const uint16_t *k = a->k + (kvh * a->n + j) * HEAD_DIM;
                float x = 0;
                for (int d = 0; d < HEAD_DIM; d++)
                    x += q[d] * kvk_f16_to_f32(k[d]);
                s[j] = x * scale;
                mx = fmaxf(mx, s[j]);
            }
            float *o = a->o + ((size_t)r * Q_HEADS + qh) * HEAD_DIM;
            memset(o, 0, HEAD_DIM * sizeof(float));
            for (uint32_t j = 0; j < keys; j++) {
                float e = expf(s[j] - mx);
                const uint16_t *v = a->v + (kvh * a->n + j) * HEAD_DIM;
                l += e;
                for (int d = 0; d < HEAD_DIM; d++)
                    o[d] += e * kvk_f16_to_f32(v[d]);
            }
            for (int d = 0; d < HEAD_DIM; d++)
                o[d] /= l;
        }
    free(s);
    return NULL;
}

static double naive_run(const uint16_t *k, const uint16_t *v, const float *q, float *o,
                        uint32_t n, uint32_t n_q)
{
    naive_arg a[NTH];
    void *args[NTH];
    for (int i = 0; i < NTH; i++) {
        a[i] = (naive_arg){ k, v, q, o, n, n_q, Q_HEADS * i / NTH, Q_HEADS * (i + 1) / NTH };
        args[i] = &a[i];
    }
    return par_run(naive_thread, args);
}

/* Seconds of the naive baseline over n keys (the last n_q of them as query rows), on one
 * contiguous copy of a sequence's K and V made for it. */
static double naive_time(const bench *b, uint32_t n, uint32_t n_q)
{
    uint16_t *k = malloc((size_t)KV_HEADS * n * HEAD_DIM * 2);
    uint16_t *v = malloc((size_t)KV_HEADS * n * HEAD_DIM * 2);
    fill_arg fk = { k, (size_t)KV_HEADS * n * HEAD_DIM }, fv = { v, fk.n };
    fill_thread(&fk);
    fill_thread(&fv);
    double t = naive_run(k, v, b->q, b->o, n, n_q);
    free(k);
    free(v);
    return t;
}

/* ---- cases ---- */

/* Page tables for `batch` items as take_items gives them, with the first `prefix` tokens (a
 * multiple of PAGE) of items 1.. on item 0's pages when prefix > 0 (a prefix cache hit: the
 * kernel reads them once for the batch); own: room for batch tables of np entries. */
static void take_sharing(bench *b, kvk_item *items, int batch, uint32_t n_kv, uint32_t n_new,
                         uint32_t prefix, uint32_t *own, uint32_t np)
{
    uint32_t *tables[8];
    take_items(b, items, tables, batch, n_kv, n_new);
    for (int i = 0; prefix && i < batch; i++) {
        uint32_t *t = own + (size_t)i * np;
        memcpy(t, tables[i], np * sizeof(uint32_t));
        if (i)
            memcpy(t, own, prefix / PAGE * sizeof(uint32_t));
        items[i].pages = t;
    }
}

/* Seconds per call of kvk_attn: repeated (fresh pages each time) for about `budget` s; the
 * items share their first `prefix` tokens' pages (0: none, see take_sharing). */
static double time_attn(bench *b, int batch, uint32_t n_kv, uint32_t n_new, double budget,
                        int min_iters, uint32_t prefix)
{
    kvk_item items[8];
    uint32_t np = (n_kv + n_new + PAGE - 1) / PAGE;
    uint32_t *own = prefix ? malloc((size_t)batch * np * sizeof(uint32_t)) : NULL;
    kvk_attn_opts op = kvk_attn_opts_default();
    double total = 0;
    int iters = 0;
    for (int warm = min_iters > 1; total < budget || iters < min_iters; warm = 0) {
        take_sharing(b, items, batch, n_kv, n_new, prefix, own, np);
        double t0 = now();
        int rc = kvk_attn(&b->g, &b->pg, 1, items, batch, b->q, b->o, NULL, &op, b->pool);
        if (rc) {
            fprintf(stderr, "kvk_attn failed: %d\n", rc);
            exit(1);
        }
        if (!warm) { /* a first call warms the pool threads and the outputs' pages */
            total += now() - t0;
            iters++;
        }
    }
    free(own);
    return total / iters;
}

int main(int argc, char **argv)
{
    const char *only = argc > 1 && strcmp(argv[1], "all") ? argv[1] : "";
    const char *isa_only = argc > 2 ? argv[2] : NULL;
    int run_naive = !isa_only || !strcmp(isa_only, "naive");
    int do_lim = !*only || !strcmp(only, "limits"), do_dec = !*only || !strcmp(only, "decode");
    int do_pre = !*only || !strcmp(only, "prefill"), do_wr = !*only || !strcmp(only, "write");
    double bw, peak;
    int have[N_ISA];
    const char *best = kvk_isa_name();
    float *buf = big_alloc(BW_BYTES);
    memset(buf, 0, BW_BYTES);
    for (int i = 0; i < N_ISA; i++) {
        have[i] = kvk_isa_set(isa_names[i]) == 0 && (!isa_only || !strcmp(isa_only, isa_names[i]));
        if (!have[i] || !do_lim)
            continue;
        if (i == ISA_AMX) {
            peak = measure_fma(i);
            bench_line("amx_bf16_peak", isa_names[i], peak, "GFLOP/s", peak);
            continue;
        }
        bw = measure_bw(buf, i);
        bench_line("read_bandwidth", isa_names[i], bw, "GB/s", bw);
        peak = measure_fma(i);
        bench_line("fma_peak", isa_names[i], peak, "GFLOP/s", peak);
    }

    bench b;
    bench_init(&b);
    for (int i = 1; i < N_ISA && do_dec; i++) {
        if (!have[i] || i == ISA_AMX)
            continue;
        for (int whole = 0; whole < 2; whole++) {
            paired pr[ROUNDS];
            double lim = measure_bw(buf, i);
            for (int r = 0; r < ROUNDS; r++) {
                double gbs = stream_run(&b, i, 32768, whole);
                pr[r] = (paired){ gbs, limit_around(&lim, measure_bw(buf, i)) };
            }
            bench_median(whole ? "decode_stream_pages" : "decode_stream_baseline", isa_names[i],
                         "GB/s", pr, ROUNDS);
        }
    }
    static const uint32_t lens[] = { 4096, 32768 };
    static const int batches[] = { 1, 8 };
    for (int li = 0; li < 2 * do_dec; li++)
        for (int bi = 0; bi < 2; bi++) {
            char name[64];
            uint32_t len = lens[li];
            int batch = batches[bi];
            double bytes = (double)batch * len * KV_HEADS * HEAD_DIM * 2 * 2;
            snprintf(name, sizeof(name), "decode_b%d_kv%u", batch, len);
            for (int i = 0; i < N_ISA; i++) {
                if (!have[i] || i == ISA_AMX)
                    continue;
                kvk_isa_set(isa_names[i]);
                paired pr[ROUNDS];
                int nr = i ? ROUNDS : 1; /* the scalar reference: one call, one round */
                double lim = measure_bw(buf, i);
                for (int r = 0; r < nr; r++) {
                    double t = time_attn(&b, batch, len - 1, 1, i ? 0.5 / nr : 0.0, i ? 3 : 1, 0);
                    pr[r] = (paired){ bytes / t / 1e9, limit_around(&lim, measure_bw(buf, i)) };
                }
                bench_median(name, isa_names[i], "GB/s", pr, nr);
            }
            if (run_naive) /* batch 1 suffices for its rate */
                bench_line(name, "naive", bytes / batch / naive_time(&b, len, 1) / 1e9, "GB/s",
                           measure_bw(buf, 0));
        }
    /* a batch on a shared prefix: K+V bytes attended per second (the prefix's pages are
     * read once for the batch, so it may pass the read bandwidth), and against the same
     * batch on private pages, the two alternated round by round */
    for (int i = 1; i < N_ISA && do_dec; i++) {
        if (!have[i])
            continue;
        kvk_isa_set(isa_names[i]);
        const uint32_t len = 4096, prefix = len - 64;
        int bw_isa = i == ISA_AMX ? 2 : i; /* amx reads with avx512 loads */
        double bytes = 8.0 * len * KV_HEADS * HEAD_DIM * 2 * 2, lim = measure_bw(buf, bw_isa);
        paired pr[ROUNDS];
        double gain[ROUNDS];
        for (int r = 0; r < ROUNDS; r++) {
            double ts = time_attn(&b, 8, len - 1, 1, 0.1, 3, prefix);
            double tp = time_attn(&b, 8, len - 1, 1, 0.1, 3, 0);
            pr[r] = (paired){ bytes / ts / 1e9, limit_around(&lim, measure_bw(buf, bw_isa)) };
            gain[r] = tp / ts;
        }
        qsort(gain, ROUNDS, sizeof(double), dbl_cmp);
        printf("# decode_shared_b8_kv4096 isa=%s: 8 items sharing %u of their %u tokens' pages; "
               "%.2fx the same batch on private pages (median of %d rounds, min %.2f max %.2f)%s\n",
               isa_names[i], prefix, len, gain[ROUNDS / 2], ROUNDS, gain[0], gain[ROUNDS - 1],
               i == ISA_AMX ? "; the shared part in bf16 tiles" : "");
        bench_median("decode_shared_b8_kv4096", isa_names[i], "GB/s", pr, ROUNDS);
    }
    static const uint32_t plens[] = { 512, 2048 };
    for (int li = 0; li < 2 * do_pre; li++) {
        char name[64];
        uint32_t n = plens[li];
        double flops = 4.0 * n * n * HEAD_DIM * Q_HEADS / 2;
        snprintf(name, sizeof(name), "prefill_%u", n);
        /* baselines: the last TAIL rows (the costliest ones), counted exactly */
        double tail_flops = 0;
        for (uint32_t r = n - TAIL; r < n; r++)
            tail_flops += 4.0 * (r + 1) * HEAD_DIM * Q_HEADS;
        for (int i = 0; i < N_ISA; i++) {
            if (!have[i])
                continue;
            kvk_isa_set(isa_names[i]);
            paired pr[ROUNDS];
            int nr = i ? ROUNDS : 1;
            int fp32 = i == ISA_AMX ? 2 : i; /* amx too is held to the fp32 FMA peak */
            double lim = measure_fma(fp32);
            for (int r = 0; r < nr; r++) {
                double t = i ? time_attn(&b, 1, 0, n, 1.0 / nr, 3, 0)
                             : time_attn(&b, 1, n - TAIL, TAIL, 0, 1, 0);
                pr[r] = (paired){ (i ? flops : tail_flops) / t / 1e9,
                                  limit_around(&lim, measure_fma(fp32)) };
            }
            bench_median(name, isa_names[i], "GFLOP/s", pr, nr);
            if (i == ISA_AMX) {
                double amx = measure_fma(i);
                printf("# %s isa=amx: %.1f%% of the measured AMX bf16 peak (%.0f GFLOP/s)\n",
                       name, 100.0 * pr[nr / 2].value / amx, amx);
            }
        }
        if (run_naive)
            bench_line(name, "naive", tail_flops / naive_time(&b, n, TAIL) / 1e9, "GFLOP/s",
                       measure_fma(0));
    }
    for (int i = 0; i < N_ISA && do_wr; i++) {
        if (!have[i] || i == ISA_AMX) /* amx writes with avx512's conversions */
            continue;
        kvk_isa_set(isa_names[i]);
        const uint32_t n = 2048;
        double bytes = (double)n * KV_HEADS * HEAD_DIM * 2 * (4 + 2);
        kvk_item it;
        uint32_t *table;
        kvk_attn_opts op = kvk_attn_opts_default();
        op.rope = KVK_ROPE_HALF;
        const float *k = b.q, *v = b.q + (size_t)n * KV_HEADS * HEAD_DIM;
        paired pr[ROUNDS];
        int nr = i ? ROUNDS : 1;
        double lim = measure_bw(buf, i);
        for (int r = 0; r < nr; r++) {
            double t = 1e30;
            for (int rep = 0; rep < 5; rep++) { /* the best of 5 calls, fresh pages each */
                take_items(&b, &it, &table, 1, 0, n);
                double t0 = now();
                kvk_write_kv(&b.g, &b.pg, 1, &it, 1, k, v, &op);
                t = fmin(t, now() - t0);
            }
            pr[r] = (paired){ bytes / t / 1e9, limit_around(&lim, measure_bw(buf, i)) };
        }
        bench_median("write_kv_2048_rope", isa_names[i], "GB/s", pr, nr);
    }
    kvk_isa_set(best);
    munmap(buf, BW_BYTES);
    kvk_pool_destroy(&b.pool);
    munmap(b.pg.base, (size_t)b.pg.n_pages * kvk_page_bytes(&b.g));
    free(b.perm);
    free(b.q);
    free(b.o);
    return 0;
}
