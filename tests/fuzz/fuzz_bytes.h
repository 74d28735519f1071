/* fuzz_bytes.h — for the structure-aware fuzz targets that build a file from their input
 * (fuzz_snapshot, fuzz_cold): the input read a byte at a time (zeros past its end; set
 * in, in_len and in_pos = 0 per input), and the file's bytes put into a growing buffer
 * (blen = 0 per input). One target per process: plain statics. */
#ifndef KVARENA_FUZZ_BYTES_H
#define KVARENA_FUZZ_BYTES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const uint8_t *in;
static size_t in_len, in_pos;
static uint8_t u8(void) { return in_pos < in_len ? in[in_pos++] : 0; }

static uint8_t *buf;
static size_t blen, bcap;
static void put(const void *p, size_t n)
{
    if (blen + n > bcap) {
        bcap = (blen + n) * 2;
        buf = realloc(buf, bcap);
        if (!buf)
            abort();
    }
    memcpy(buf + blen, p, n);
    blen += n;
}

#endif
