/* attn_avx512.c — the tile kernel (attn_simd.h) on AVX-512 F/BW/VL (attn_avx512.h). */
#include "attn_avx512.h"
#include "kvk_vexp.h"
#include "attn_simd.h"

int kvk__attn_avx512(const kvk_call *c, kvk_pool *pool)
{
    return kvk__attn_tiled(c, pool, &tile_ops);
}

void kvk__store_avx512(uint8_t *dst, const float *src, uint32_t n, kvk_dtype dt)
{
    store_run(dst, src, n, dt);
}
