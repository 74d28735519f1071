/* kvk_attn.c — the public kvk_attn entry: checks the call, then hands it to the
 * implementation of the instruction set chosen once per process.
 *
 * The choice is made on first use from cpuid (best available), unless KVARENA_ISA names
 * one the CPU supports; kvk_isa_set overrides it for tests and benchmarks. "amx" rounds
 * Q, K, V and probabilities to bf16, so it is used only when named that way. An ISA whose
 * width does not divide head_dim falls back to a narrower one, down to scalar. */
#include <cpuid.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kverr.h"
#include "kvk_internal.h"

typedef int (*attn_fn)(const kvk_call *c, kvk_pool *pool);

typedef struct isa_desc {
    const char *name;
    uint32_t width;       /* head_dim must be a multiple (fp32 lanes; AMX: a tile row) */
    attn_fn attn;
    int named_only;       /* less precise: never chosen unless named */
    kvk_store_fn store;   /* kvk_write_kv's rows (any head_dim) */
} isa_desc;

enum { ISA_SCALAR, ISA_AVX2, ISA_AVX512, ISA_AMX, ISA_COUNT };

static const isa_desc isas[ISA_COUNT] = {
    [ISA_SCALAR] = { "scalar", 1, kvk__attn_ref, 0, kvk__store_ref },
    [ISA_AVX2] = { "avx2", 8, kvk__attn_avx2, 0, kvk__store_avx2 },
    [ISA_AVX512] = { "avx512", 16, kvk__attn_avx512, 0, kvk__store_avx512 },
    [ISA_AMX] = { "amx", 32, kvk__attn_amx, 1, kvk__store_avx512 },
};

/* AMX-BF16 tiles and AVX512-BF16 conversions, and the kernel's leave to use the tiles' state
 * (Linux grants it per process: arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA). */
static int amx_usable(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 22)) || !(d & (1u << 24)))
        return 0;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d) || !(a & (1u << 5)))
        return 0;
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
}

static pthread_once_t isa_once = PTHREAD_ONCE_INIT;
static int isa_cur = ISA_SCALAR;

static int cpu_has(int isa)
{
    switch (isa) {
    case ISA_SCALAR:
        return 1;
    case ISA_AVX2: {
        unsigned a, b, c, d;
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
        return f16c && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    case ISA_AVX512:
        return cpu_has(ISA_AVX2) && __builtin_cpu_supports("avx512f")
               && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
    case ISA_AMX:
        return cpu_has(ISA_AVX512) && amx_usable();
    }
    return 0;
}

static int isa_by_name(const char *name)
{
    for (int i = 0; name && i < ISA_COUNT; i++)
        if (!strcmp(name, isas[i].name))
            return i;
    return -1;
}

static void isa_init(void)
{
    __builtin_cpu_init();
    int want = isa_by_name(getenv("KVARENA_ISA"));
    if (want >= 0 && cpu_has(want)) {
        isa_cur = want;
        return;
    }
    for (int i = ISA_COUNT - 1; i >= 0; i--)
        if (!isas[i].named_only && cpu_has(i)) {
            isa_cur = i;
            return;
        }
}

const char *kvk_isa_name(void)
{
    pthread_once(&isa_once, isa_init);
    return isas[isa_cur].name;
}

int kvk_isa_set(const char *name)
{
    pthread_once(&isa_once, isa_init);
    int i = isa_by_name(name);
    if (i < 0 || !cpu_has(i))
        return KV_ERR_INVAL;
    isa_cur = i;
    return 0;
}

kvk_store_fn kvk__store_fn(void)
{
    pthread_once(&isa_once, isa_init);
    return isas[isa_cur].store;
}

int kvk_attn(const kvk_geom *g, const kvk_pages *pg, uint32_t layer,
             const kvk_item *items, uint32_t n_items, const float *q, float *o,
             float *lse, const kvk_attn_opts *opts, kvk_pool *pool)
{
    kvk_call c;
    if (kvk__call_init(&c, g, pg, layer, items, n_items, opts))
        return KV_ERR_INVAL;
    if (c.rows && (!q || !o))
        return KV_ERR_INVAL;
    if (!c.rows)
        return 0;
    c.q = q;
    c.o = o;
    c.lse = lse;
    pthread_once(&isa_once, isa_init);
    int isa = isa_cur;
    while (g->head_dim % isas[isa].width)
        isa--;
    return isas[isa].attn(&c, pool);
}
