/* fuzz_input.h — the input format shared by the message fuzz targets and their seed
 * generator (tests/fuzz/seeds.c), so a seed file is exactly what a target reads.
 *
 *   byte 0       bits 0-3: frame count (capped at KVP_MAX_FRAMES, as kvp_recv keeps no more)
 *                bit 4:    honest sizes: frames 0..2 get the sizes the message asks for
 *                bits 5-6: which fixed configuration (limits, arena size) to check against
 *   4 * count    frame sizes, little-endian uint32 (ignored for frames 0..2 when honest)
 *   the rest     the serialized Envelope
 *
 * The arena header target reads [uint64 region size, little-endian][header bytes]. */
#ifndef KVARENA_FUZZ_INPUT_H
#define KVARENA_FUZZ_INPUT_H

#include <stddef.h>
#include <stdint.h>

#include "proto/validate.h"
#include "proto/wire.h"

#define FZ_HONEST 0x10u
#define FZ_CONFIG(b) (((b) >> 5) & 3u)

/* Configurations: the server's defaults, a tiny model (limits reachable by small inputs),
 * and odd page sizes, including a huge one where n_kv + n_new can pass 2^32 cheaply. */
typedef struct fz_config {
    kvp_limits lim;
    uint32_t n_pages, page_tokens;
} fz_config;

static const fz_config fz_configs[4] = {
    { { 4, 8, 2, 64, 16384, 65536 }, 2048, 16 },
    { { 2, 4, 1, 8, 64, 128 }, 8, 3 },
    { { 1, 2, 2, 4, 16, 32 }, 1, 1 },
    { { 3, 6, 3, 2, 1000, 1000 }, 4, 1u << 31 },
};

typedef struct fz_input {
    const fz_config *cfg;
    int honest;
    int n_frames;
    size_t frames[KVP_MAX_FRAMES];
    const uint8_t *msg;   /* the Envelope bytes */
    size_t msg_len;
} fz_input;

static inline uint32_t fz_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static inline uint64_t fz_le64(const uint8_t *p)
{
    return (uint64_t)fz_le32(p) | (uint64_t)fz_le32(p + 4) << 32;
}

/* Splits data into an fz_input; returns 0, or -1 if it is too short for its own header. */
static inline int fz_parse(const uint8_t *data, size_t size, fz_input *in)
{
    if (size < 1)
        return -1;
    in->cfg = &fz_configs[FZ_CONFIG(data[0])];
    in->honest = (data[0] & FZ_HONEST) != 0;
    in->n_frames = data[0] & 15;
    if (in->n_frames > KVP_MAX_FRAMES)
        in->n_frames = KVP_MAX_FRAMES;
    size_t head = 1 + 4 * (size_t)in->n_frames;
    if (size < head)
        return -1;
    for (int i = 0; i < in->n_frames; i++)
        in->frames[i] = fz_le32(data + 1 + 4 * i);
    in->msg = data + head;
    in->msg_len = size - head;
    return 0;
}

/* Frame sizes of Q, K, V for t tokens under lim (64-bit arithmetic, as the checks use). */
static inline void fz_qkv_bytes(const kvp_limits *lim, uint64_t t, size_t out[3])
{
    out[0] = (size_t)(t * lim->q_heads * lim->head_dim * sizeof(float));
    out[1] = out[2] = (size_t)(t * lim->kv_heads * lim->head_dim * sizeof(float));
}

/* Honest mode: frames 0..2 (those present) get the sizes of t tokens. */
static inline void fz_make_honest(fz_input *in, uint64_t t)
{
    size_t want[3];
    fz_qkv_bytes(&in->cfg->lim, t, want);
    for (int i = 0; i < in->n_frames && i < 3; i++)
        in->frames[i] = want[i];
}

#endif
