/* fault_client.h — what the fault tests' client programs (mem_pressure, idle_client) share:
 * one connection and a failure count per process, the CHECK / CALL macros, the connect and
 * a prefill or decode step over every layer. Included once, by the program's main file. */
#ifndef KVARENA_FAULT_CLIENT_H
#define KVARENA_FAULT_CLIENT_H

#include <stdio.h>
#include <stdlib.h>

#include "client/examples/synth.h"
#include "client/kvclient.h"

static kvc_client *c;
static int failures;
/* CHECK: counts and reports a failed expectation; CALL: a call that must work, or exit 1. */
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } } while (0)
#define CALL(expr) do { int rc_ = (expr); if (rc_) { fprintf(stderr, "FAIL %s: %s (%s)\n", #expr, \
    kvc_strerror(rc_), kvc_last_error(c)); exit(1); } } while (0)

/* Connects c to endpoint as tenant (30 s per call), or exits 1 saying why. */
static void fc_connect(const char *endpoint, const char *tenant, const char *name)
{
    kvc_opts opts = { .tenant = tenant, .name = name, .timeout_ms = 30000 };
    if (kvc_connect(endpoint, &opts, &c)) {
        fprintf(stderr, "connect: %s\n", kvc_last_error(NULL));
        exit(1);
    }
}

/* Runs every layer for the pending tokens tokens[pos0 .. pos0+n) of seq; checks the last
 * row of the last layer against the reference. Returns the first failing attend's status. */
static int run_layers(uint64_t seq, const uint32_t *tokens, uint32_t pos0, uint32_t n)
{
    const kvc_model *m = kvc_model_info(c);
    size_t qrow = (size_t)m->q_heads * m->head_dim, kvrow = (size_t)m->kv_heads * m->head_dim;
    float *q = malloc(sizeof(float) * qrow * n), *k = malloc(sizeof(float) * kvrow * n);
    float *v = malloc(sizeof(float) * kvrow * n), *o = malloc(sizeof(float) * qrow * n);
    int rc = 0;
    for (uint32_t layer = 0; layer < m->layers && rc == 0; layer++) {
        kvs_fill_qkv(m, layer, tokens + pos0, pos0, n, q, k, v);
        kvc_item it = { seq, n };
        rc = kvc_attend(c, layer, &it, 1, q, k, v, 0, o, NULL);
        if (rc == 0 && layer + 1 == m->layers) {
            double err; /* INFINITY if there was no memory for the reference */
            CHECK(kvs_check_row(m, layer, tokens, pos0 + n - 1, o + (n - 1) * qrow, &err, NULL) == 0,
                  "pos %u: err %.3g", pos0 + n - 1, err);
        }
    }
    free(q); free(k); free(v); free(o);
    return rc;
}

#endif
