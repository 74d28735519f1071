/* kvmetrics.h — kvctl's Prometheus side: the server's stats in the text exposition format
 * (0.0.4), printed (`kvctl metrics`) or served over HTTP (`kvctl metrics --listen ADDR`). */
#ifndef KVARENA_KVMETRICS_H
#define KVARENA_KVMETRICS_H

#include <stddef.h>
#include <stdio.h>

#include "client/kvrpc.h"

/* Writes every figure of s as Prometheus metrics (kvarena_*) to f. */
void kvm_print(FILE *f, const Kvarena__StatsReply *s);

/* Fetches the server's stats into *rep (an envelope with a StatsReply): 0, or nonzero with
 * why in err (len bytes) and *rep empty. */
typedef int (*kvm_fetch_fn)(void *arg, kvr_reply *rep, char *err, size_t len);

/* Serves GET /metrics on addr ("HOST:PORT" on every address HOST has, "[V6]:PORT", or
 * ":PORT" on all of them), one connection at a time (a scrape is one small request; one
 * whose head takes more than 5 s is dropped): each scrape fetches fresh stats; 503 when the
 * server does not answer (fetch's reason in the body), 404 for other paths, 405 for other
 * methods. Returns only on a setup failure (1, said on stderr). */
int kvm_serve(const char *addr, kvm_fetch_fn fetch, void *arg);

#endif
