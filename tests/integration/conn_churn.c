/* conn_churn — more client connections than the server remembers (server.max_conns): the
 * stalest are forgotten, answered "say Hello again", and libkvclient says Hello again by
 * itself; every call of every client must still succeed and every output be exact, which
 * also exercises the server's connection table (inserts, evictions, lookups after them).
 * Usage: conn_churn ENDPOINT TENANT CLIENTS ROUNDS */
#include <stdio.h>
#include <stdlib.h>

#include "client/examples/synth.h"
#include "client/kvclient.h"

int main(int argc, char **argv)
{
    if (argc != 5) {
        fprintf(stderr, "usage: conn_churn ENDPOINT TENANT CLIENTS ROUNDS\n");
        return 2;
    }
    int n = atoi(argv[3]), rounds = atoi(argv[4]), failures = 0;
    kvc_client **c = calloc((size_t)n, sizeof(*c));
    kvc_opts o = { .tenant = argv[2], .name = "conn_churn", .timeout_ms = 20000, .attempt_ms = 2000 };
    for (int i = 0; i < n; i++)
        if (kvc_connect(argv[1], &o, &c[i]) != 0) {
            fprintf(stderr, "connect %d: %s\n", i, kvc_last_error(NULL));
            return 1;
        }
    const kvc_model *m = kvc_model_info(c[0]);
    const uint32_t T = 5;
    kvs_rows buf = kvs_rows_alloc(m, T);
    float *q = buf.q, *k = buf.k, *v = buf.v, *out = buf.o;
    for (int r = 0; r < rounds; r++)
        for (int i = 0; i < n; i++) {
            uint32_t tokens[T];
            for (uint32_t j = 0; j < T; j++)
                tokens[j] = kvs_token((uint64_t)r * 1000 + (uint64_t)i, j);
            uint64_t s;
            uint32_t cached = 0;
            int rc = kvc_seq_open(c[i], &s);
            if (rc == 0)
                rc = kvc_seq_extend(c[i], s, tokens, T, &cached);
            for (uint32_t layer = 0; rc == 0 && layer < m->layers; layer++) {
                kvs_fill_qkv(m, layer, tokens, 0, T, q, k, v);
                kvc_item it = { s, T };
                rc = kvc_attend(c[i], layer, &it, 1, q, k, v, 0, out, NULL);
                int bad = rc ? 0 : kvs_check_row(m, layer, tokens, T - 1, out + (T - 1) * buf.qrow,
                                                 NULL, NULL);
                if (bad < 0)
                    rc = bad; /* no memory for the reference: counted as a failure */
                else if (bad) {
                    fprintf(stderr, "client %d round %d layer %u: wrong output\n", i, r, layer);
                    failures++;
                }
            }
            if (rc == 0)
                rc = kvc_seq_close(c[i], s);
            if (rc != 0) {
                fprintf(stderr, "client %d round %d: %s (%s)\n", i, r, kvc_strerror(rc), kvc_last_error(c[i]));
                failures++;
            }
        }
    kvc_stats st;
    if (kvc_stats_get(c[0], &st) != 0 || st.sequences != 0 || st.pages_in_use != 0) {
        fprintf(stderr, "after the churn: %u sequences, %u pages in use\n", st.sequences, st.pages_in_use);
        failures++;
    }
    for (int i = 0; i < n; i++)
        kvc_close(&c[i]);
    printf("%d clients x %d rounds over a table of fewer connections: %s\n", n, rounds,
           failures ? "FAILED" : "all calls succeeded, outputs exact");
    free(c);
    kvs_rows_free(&buf);
    return failures ? 1 : 0;
}
