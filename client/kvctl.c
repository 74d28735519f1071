/* kvctl — operator's tool: talks to the kvserver's admin endpoint.
 *
 *   kvctl [--endpoint ADMIN_EP] [--timeout MS] stats [--json] | metrics [--listen ADDR]
 *   kvctl [--endpoint ADMIN_EP] [--timeout MS] seqs [--json]
 *   kvctl [--endpoint ADMIN_EP] [--timeout MS] close SEQ
 *   kvctl [--endpoint ADMIN_EP] [--timeout MS] ping | check | snapshot | reload
 *   kvctl keygen
 *
 * Exit status: 0 success, 1 the request failed (no server, timeout, error reply),
 * 2 usage error. The endpoint defaults to $KVARENA_ADMIN, then the default install's. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "client/kvmetrics.h"
#include "client/kvrpc.h"
#include "proto/kverr.h"

#define DEFAULT_ADMIN "ipc:///tmp/kvarena/admin.sock"
#define DEFAULT_TIMEOUT_MS 5000

static const char usage_text[] =
    "usage: kvctl [--endpoint ADMIN_EP] [--timeout MS] COMMAND\n"
    "commands:\n"
    "  stats [--json]   arena, prefix cache, jobs and their latency, workers and tenants\n"
    "  metrics [--listen ADDR]\n"
    "                   the same in Prometheus' text format; with --listen, served over\n"
    "                   HTTP at ADDR (HOST:PORT, [V6]:PORT, :PORT) on /metrics, fresh per\n"
    "                   scrape, until killed\n"
    "  seqs [--json]    open sequences: id, tenant, tokens, pending, pages, idle time\n"
    "  close SEQ        closes sequence SEQ (an id from seqs) of whichever tenant; its\n"
    "                   client's later calls on it fail, saying an operator closed it\n"
    "  ping             round-trip time to the server\n"
    "  check            the server checks its invariants (page counts, LRU, index, refs)\n"
    "  snapshot         writes the prefix cache to server.snapshot now, while serving; waits\n"
    "                   until the file is in place (MS defaults to 600000 for it)\n"
    "  reload           the server applies its edited config (as SIGHUP): log level,\n"
    "                   timeouts, snapshot pace, tenants' quotas, weights and keys; nothing\n"
    "                   if a key that needs a restart changed (they are named)\n"
    "  keygen           a new CURVE key pair (Z85): a tenant's public_key for the server's\n"
    "                   config and the pair for its clients, or the server's own key\n"
    "ADMIN_EP defaults to $KVARENA_ADMIN or " DEFAULT_ADMIN "; MS to 5000.\n";

static int usage(const char *why)
{
    if (why)
        fprintf(stderr, "kvctl: %s\n", why);
    fputs(usage_text, stderr);
    return 2;
}

/* One admin round trip on a fresh socket. On success *rep holds the reply (status 0). */
static int admin_call(const char *ep, int timeout_ms, Kvarena__Envelope *req, kvr_reply *rep,
                      Kvarena__Envelope__BodyCase want, const char *what)
{
    memset(rep, 0, sizeof *rep);
    void *ctx = zmq_ctx_new();
    void *sock = ctx ? kvr_socket_open(ctx, ep, NULL) : NULL;
    if (!sock) {
        fprintf(stderr, "kvctl: cannot connect to %s: %s\n", ep, zmq_strerror(errno));
        if (ctx)
            zmq_ctx_term(ctx);
        return 1;
    }
    req->req_id = kvr_random_id();
    int rc = kvr_call(sock, req, NULL, 0, timeout_ms, rep);
    int ret = 0;
    if (rc == KV_ERR_TIMEOUT) {
        fprintf(stderr, "kvctl: %s: no reply from %s within %d ms (%s)\n", what, ep,
                timeout_ms, req->body_case == KVARENA__ENVELOPE__BODY_SNAPSHOT
                                ? "the server may still be writing it: see its log"
                                : "is kvserver running?");
        ret = 1;
    } else if (rc != 0) {
        fprintf(stderr, "kvctl: %s: %s%s%s\n", what, kv_strerror(rc),
                rc == KV_ERR_IO ? ": " : "", rc == KV_ERR_IO ? zmq_strerror(errno) : "");
        ret = 1;
    } else if (rep->env->status != 0) {
        fprintf(stderr, "kvctl: %s: %s%s%s\n", what, kv_strerror(rep->env->status),
                rep->env->error[0] ? ": " : "", rep->env->error);
        ret = 1;
    } else if (rep->env->body_case != want) {
        fprintf(stderr, "kvctl: %s: unexpected reply (body %d)\n", what,
                (int)rep->env->body_case);
        ret = 1;
    }
    if (ret != 0)
        kvr_reply_clear(rep);
    zmq_close(sock);
    zmq_ctx_term(ctx);
    return ret;
}

/* An admin request whose body is an empty message (Stats, SeqList, Check, Snapshot, Reload,
 * Ping): d its descriptor, bc its case. The oneof's members are all pointers in one union,
 * so any of them can hold it; protobuf-c packs it by bc's field. */
static int admin_empty(const char *ep, int timeout_ms, Kvarena__Envelope__BodyCase bc,
                       const ProtobufCMessageDescriptor *d, kvr_reply *rep,
                       Kvarena__Envelope__BodyCase want, const char *what)
{
    assert(d->sizeof_message == sizeof(ProtobufCMessage)); /* no fields: nothing read past */
    ProtobufCMessage body = PROTOBUF_C_MESSAGE_INIT(d);
    Kvarena__Envelope req = KVARENA__ENVELOPE__INIT;
    req.body_case = bc;
    req.ping = (Kvarena__Ping *)&body;
    return admin_call(ep, timeout_ms, &req, rep, want, what);
}

static void json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if (*p < 0x20)
            printf("\\u%04x", *p);
        else
            putchar(*p);
    }
    putchar('"');
}

static double pct(uint64_t part, uint64_t whole)
{
    return whole ? 100.0 * (double)part / (double)whole : 0.0;
}

/* ---- latency histograms (kvserver/latency.h): counts per bucket, bounds in us ---- */

static uint64_t hist_count(const Kvarena__LatencyHist *h)
{
    uint64_t n = 0;
    for (size_t i = 0; i < h->n_counts; i++)
        n += h->counts[i];
    return n;
}

/* The q-quantile in ms, interpolated within its bucket as Prometheus' histogram_quantile
 * does (the last bound for samples above every bound); 0 with no samples. */
static double hist_quantile_ms(const Kvarena__StatsReply *s, const Kvarena__LatencyHist *h,
                               double q)
{
    uint64_t n = hist_count(h), below = 0;
    if (!n || h->n_counts != s->n_latency_bounds_us + 1)
        return 0;
    double rank = q * (double)n;
    for (size_t i = 0; i < s->n_latency_bounds_us; i++) {
        if ((double)(below + h->counts[i]) >= rank) {
            double lo = i ? (double)s->latency_bounds_us[i - 1] : 0;
            double hi = (double)s->latency_bounds_us[i];
            return (lo + (hi - lo) * (rank - (double)below) / (double)h->counts[i]) / 1e3;
        }
        below += h->counts[i];
    }
    size_t nb = s->n_latency_bounds_us;
    return nb ? (double)s->latency_bounds_us[nb - 1] / 1e3 : 0;
}

static void print_json(const Kvarena__StatsReply *s)
{
    printf("{\"pages\":{\"total\":%u,\"free\":%u,\"in_use\":%u,\"cached\":%u},",
           s->pages_total, s->pages_free, s->pages_in_use, s->pages_cached);
    printf("\"prefix\":{\"hits\":%" PRIu64 ",\"misses\":%" PRIu64 ",\"hit_rate\":%.4f},",
           s->prefix_hits, s->prefix_misses,
           pct(s->prefix_hits, s->prefix_hits + s->prefix_misses) / 100.0);
    printf("\"evictions\":%" PRIu64 ",\"sequences\":%u,\"sequences_expired\":%" PRIu64 ",",
           s->evictions, s->sequences, s->seqs_expired);
    printf("\"jobs\":{\"done\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"queued\":%" PRIu64
           ",\"retried\":%" PRIu64 "},", s->jobs_done, s->jobs_failed, s->jobs_queued,
           s->jobs_retried);
    printf("\"epoch\":%" PRIu64 ",\"arena_bytes\":%" PRIu64 ",\"uptime_ms\":%" PRIu64 ",",
           s->epoch, s->arena_bytes, s->uptime_ms);
    printf("\"snapshot\":{\"path\":");
    json_str(s->snapshot_path);
    printf(",\"age_ms\":%" PRIu64 ",\"pages\":%u,\"running\":%s},", s->snapshot_age_ms,
           s->snapshot_pages, s->snapshot_running ? "true" : "false");
    printf("\"cold\":{\"dir\":");
    json_str(s->cold_dir);
    printf(",\"pages\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"stored\":%" PRIu64
           ",\"restored\":%" PRIu64 ",\"failed\":%" PRIu64 ",\"skipped\":%" PRIu64
           ",\"dropped\":%" PRIu64 "},", s->cold_pages, s->cold_bytes, s->cold_stored,
           s->cold_restored, s->cold_failed, s->cold_skipped, s->cold_dropped);
    printf("\"rows\":{\"prefill\":%" PRIu64 ",\"decode\":%" PRIu64 "},", s->rows_prefill,
           s->rows_decode);
    printf("\"latency\":{\"bounds_us\":[");
    for (size_t i = 0; i < s->n_latency_bounds_us; i++)
        printf("%s%" PRIu64, i ? "," : "", s->latency_bounds_us[i]);
    printf("],\"hists\":[");
    for (size_t i = 0; i < s->n_latency; i++) {
        const Kvarena__LatencyHist *h = s->latency[i];
        printf("%s{\"kind\":", i ? "," : "");
        json_str(h->kind);
        printf(",\"stage\":");
        json_str(h->stage);
        printf(",\"count\":%" PRIu64 ",\"sum_us\":%" PRIu64 ",\"counts\":[", hist_count(h),
               h->sum_us);
        for (size_t b = 0; b < h->n_counts; b++)
            printf("%s%" PRIu64, b ? "," : "", h->counts[b]);
        printf("]}");
    }
    printf("]},");
    printf("\"workers\":[");
    for (size_t i = 0; i < s->n_workers; i++) {
        const Kvarena__WorkerStats *w = s->workers[i];
        printf("%s{\"index\":%u,\"pid\":%d,\"state\":", i ? "," : "", w->index, w->pid);
        json_str(w->state);
        printf(",\"jobs\":%" PRIu64 ",\"restarts\":%u,\"isa\":", w->jobs, w->restarts);
        json_str(w->isa);
        printf(",\"threads\":%u}", w->threads);
    }
    printf("],\"tenants\":[");
    for (size_t i = 0; i < s->n_tenants; i++) {
        const Kvarena__TenantStats *t = s->tenants[i];
        printf("%s{\"name\":", i ? "," : "");
        json_str(t->name);
        printf(",\"pages\":%u,\"quota\":%u,\"sequences\":%u,\"jobs\":%" PRIu64 "}",
               t->pages, t->quota, t->sequences, t->jobs);
    }
    printf("]}\n");
}

static void print_table(const char *ep, const Kvarena__StatsReply *s)
{
    uint64_t up = s->uptime_ms / 1000;
    printf("kvserver %s  uptime %" PRIu64 "h%02" PRIu64 "m%02" PRIu64 "s  epoch %" PRIu64
           "  arena %.1f MiB\n", ep, up / 3600, up / 60 % 60, up % 60, s->epoch,
           (double)s->arena_bytes / (1024.0 * 1024.0));
    printf("pages       total %u  free %u  in use %u  cached %u\n", s->pages_total,
           s->pages_free, s->pages_in_use, s->pages_cached);
    printf("prefix      hits %" PRIu64 "  misses %" PRIu64 "  hit rate %.1f%%\n",
           s->prefix_hits, s->prefix_misses,
           pct(s->prefix_hits, s->prefix_hits + s->prefix_misses));
    printf("evictions   %" PRIu64 "\n", s->evictions);
    printf("sequences   %u  expired %" PRIu64 "\n", s->sequences, s->seqs_expired);
    printf("jobs        done %" PRIu64 "  failed %" PRIu64 "  queued %" PRIu64 "  retried %"
           PRIu64 " (re-run after their worker died)\n", s->jobs_done, s->jobs_failed,
           s->jobs_queued, s->jobs_retried);
    if (*s->snapshot_path) {
        printf("snapshot    %s  ", s->snapshot_path);
        if (s->snapshot_age_ms)
            printf("last written beside serving %.1f s ago, %u pages", s->snapshot_age_ms / 1e3,
                   s->snapshot_pages);
        else
            printf("none written beside serving yet (one is at a clean stop)");
        printf("%s\n", s->snapshot_running ? "; one being written now" : "");
    }
    if (*s->cold_dir)
        printf("cold tier   %s  %" PRIu64 " pages on disk (%.1f MB)  stored %" PRIu64
               "  read back %" PRIu64 "  failed %" PRIu64 "  skipped %" PRIu64 "  dropped %"
               PRIu64 "\n", s->cold_dir, s->cold_pages, s->cold_bytes / 1e6, s->cold_stored,
               s->cold_restored, s->cold_failed, s->cold_skipped, s->cold_dropped);
    printf("rows        prefill %" PRIu64 "  decode %" PRIu64 " (query rows of completed jobs)\n",
           s->rows_prefill, s->rows_decode);
    printf("\nlatency of completed jobs, ms (percentiles within buckets)\n  %-8s %-6s %-10s "
           "%-9s %-9s %-9s %s\n", "kind", "stage", "count", "mean", "p50", "p90", "p99");
    for (size_t i = 0; i < s->n_latency; i++) {
        const Kvarena__LatencyHist *h = s->latency[i];
        uint64_t n = hist_count(h);
        printf("  %-8s %-6s %-10" PRIu64 " %-9.3f %-9.3f %-9.3f %.3f\n", h->kind, h->stage, n,
               n ? (double)h->sum_us / (double)n / 1e3 : 0.0, hist_quantile_ms(s, h, 0.5),
               hist_quantile_ms(s, h, 0.9), hist_quantile_ms(s, h, 0.99));
    }
    printf("\nworkers (%zu)\n  %-6s %-8s %-9s %-12s %-9s %-8s %s\n", s->n_workers, "index",
           "pid", "state", "jobs", "restarts", "isa", "threads");
    for (size_t i = 0; i < s->n_workers; i++) {
        const Kvarena__WorkerStats *w = s->workers[i];
        printf("  %-6u %-8d %-9s %-12" PRIu64 " %-9u %-8s %u\n", w->index, w->pid, w->state,
               w->jobs, w->restarts, *w->isa ? w->isa : "-", w->threads);
    }
    printf("\ntenants (%zu)\n  %-16s %-8s %-8s %-10s %s\n", s->n_tenants, "name", "pages",
           "quota", "sequences", "jobs");
    for (size_t i = 0; i < s->n_tenants; i++) {
        const Kvarena__TenantStats *t = s->tenants[i];
        char quota[16];
        if (t->quota)
            snprintf(quota, sizeof quota, "%u", t->quota);
        else
            snprintf(quota, sizeof quota, "-");
        printf("  %-16s %-8u %-8s %-10u %" PRIu64 "\n", t->name, t->pages, quota,
               t->sequences, t->jobs);
    }
}

enum { OUT_TABLE, OUT_JSON, OUT_METRICS };

typedef struct fetch_args {
    const char *ep;
    int timeout_ms;
} fetch_args;

/* One Stats request (kvm_fetch_fn: `metrics --listen` makes one per scrape). */
static int fetch_stats(void *arg, kvr_reply *rep, char *err, size_t len)
{
    const fetch_args *a = arg;
    if (admin_empty(a->ep, a->timeout_ms, KVARENA__ENVELOPE__BODY_STATS,
                    &kvarena__stats__descriptor, rep, KVARENA__ENVELOPE__BODY_STATS_REPLY,
                    "stats") == 0)
        return 0;
    snprintf(err, len, "no stats from %s (kvctl's stderr says why)", a->ep);
    return 1;
}

static int cmd_stats(const char *ep, int timeout_ms, int out)
{
    kvr_reply rep;
    fetch_args a = { ep, timeout_ms };
    char err[256];
    if (fetch_stats(&a, &rep, err, sizeof(err)))
        return 1; /* admin_call said why */
    if (out == OUT_JSON)
        print_json(rep.env->stats_reply);
    else if (out == OUT_METRICS)
        kvm_print(stdout, rep.env->stats_reply);
    else
        print_table(ep, rep.env->stats_reply);
    kvr_reply_clear(&rep);
    return 0;
}

static int cmd_seqs(const char *ep, int timeout_ms, int json)
{
    kvr_reply rep;
    if (admin_empty(ep, timeout_ms, KVARENA__ENVELOPE__BODY_SEQ_LIST,
                    &kvarena__seq_list__descriptor, &rep,
                    KVARENA__ENVELOPE__BODY_SEQ_LIST_REPLY, "seqs"))
        return 1;
    const Kvarena__SeqListReply *r = rep.env->seq_list_reply;
    if (json)
        printf("{\"sequences\":[");
    else
        printf("%zu open sequences\n  %-18s %-16s %-8s %-8s %-6s %-6s %-9s %s\n", r->n_seqs,
               "id", "tenant", "tokens", "pending", "layer", "pages", "idle_s", "busy");
    for (size_t i = 0; i < r->n_seqs; i++) {
        const Kvarena__SeqInfo *x = r->seqs[i];
        if (json) {
            printf("%s{\"id\":%" PRIu64 ",\"tenant\":", i ? "," : "", x->id);
            json_str(x->tenant);
            printf(",\"len\":%u,\"pending\":%u,\"next_layer\":%u,\"pages\":%u,"
                   "\"idle_ms\":%" PRIu64 ",\"busy\":%s}", x->len, x->pending, x->next_layer,
                   x->pages, x->idle_ms, x->busy ? "true" : "false");
        } else {
            printf("  %#-18" PRIx64 " %-16s %-8u %-8u %-6u %-6u %-9.1f %s\n", x->id, x->tenant,
                   x->len, x->pending, x->next_layer, x->pages, (double)x->idle_ms / 1000.0,
                   x->busy ? "yes" : "");
        }
    }
    if (json)
        printf("]}\n");
    kvr_reply_clear(&rep);
    return 0;
}

static int cmd_close(const char *ep, int timeout_ms, const char *arg)
{
    char *end;
    errno = 0;
    uint64_t id = strtoull(arg, &end, 0);
    if (!*arg || *end || errno)
        return usage("close takes a sequence id (decimal or 0x hex, as seqs prints it)");
    Kvarena__SeqClose body = KVARENA__SEQ_CLOSE__INIT;
    body.seq = id;
    Kvarena__Envelope req = KVARENA__ENVELOPE__INIT;
    req.body_case = KVARENA__ENVELOPE__BODY_SEQ_CLOSE;
    req.seq_close = &body;
    kvr_reply rep;
    if (admin_call(ep, timeout_ms, &req, &rep, KVARENA__ENVELOPE__BODY__NOT_SET, "close"))
        return 1;
    kvr_reply_clear(&rep);
    printf("closed sequence %#" PRIx64 "\n", id);
    return 0;
}

/* Asks the server to check its invariants; exit 0 if they hold. */
static int cmd_check(const char *ep, int timeout_ms)
{
    kvr_reply rep;
    if (admin_empty(ep, timeout_ms, KVARENA__ENVELOPE__BODY_CHECK, &kvarena__check__descriptor,
                    &rep, KVARENA__ENVELOPE__BODY__NOT_SET, "check"))
        return 1;
    kvr_reply_clear(&rep);
    printf("server invariants hold\n");
    return 0;
}

/* Has the server write its snapshot now; prints what was written. */
static int cmd_snapshot(const char *ep, int timeout_ms)
{
    kvr_reply rep;
    if (admin_empty(ep, timeout_ms, KVARENA__ENVELOPE__BODY_SNAPSHOT,
                    &kvarena__snapshot__descriptor, &rep,
                    KVARENA__ENVELOPE__BODY_SNAPSHOT_REPLY, "snapshot"))
        return 1;
    const Kvarena__SnapshotReply *r = rep.env->snapshot_reply;
    printf("snapshot %s: %u committed pages (%.1f MB of K/V, %.1f MB file) in %" PRIu64
           " ms; %u left out (evicted and reused while it was written)\n", r->path, r->pages,
           r->data_bytes / 1e6, r->file_bytes / 1e6, r->ms, r->skipped);
    kvr_reply_clear(&rep);
    return 0;
}

/* Has the server apply its edited config; prints what changed or why nothing did. */
static int cmd_reload(const char *ep, int timeout_ms)
{
    kvr_reply rep;
    if (admin_empty(ep, timeout_ms, KVARENA__ENVELOPE__BODY_RELOAD, &kvarena__reload__descriptor,
                    &rep, KVARENA__ENVELOPE__BODY_RELOAD_REPLY, "reload"))
        return 1;
    printf("reloaded: %s\n", rep.env->reload_reply->changes);
    kvr_reply_clear(&rep);
    return 0;
}

static int cmd_ping(const char *ep, int timeout_ms)
{
    kvr_reply rep;
    int64_t t0 = kvr_now_ns();
    /* The reply to a ping is an empty envelope: no body. */
    if (admin_empty(ep, timeout_ms, KVARENA__ENVELOPE__BODY_PING, &kvarena__ping__descriptor,
                    &rep, KVARENA__ENVELOPE__BODY__NOT_SET, "ping"))
        return 1;
    int64_t t1 = kvr_now_ns();
    kvr_reply_clear(&rep);
    printf("pong from %s: %.3f ms (includes connect)\n", ep, (double)(t1 - t0) / 1e6);
    return 0;
}

/* Returns the value of option `name` at argv[*i] ("--name V" or "--name=V"), advancing *i;
 * NULL if argv[*i] is not that option. *missing is set if the value is absent. */
static const char *opt_value(int argc, char **argv, int *i, const char *name, int *missing)
{
    size_t n = strlen(name);
    if (strncmp(argv[*i], name, n) != 0)
        return NULL;
    if (argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (argv[*i][n] != '\0')
        return NULL;
    if (*i + 1 >= argc) {
        *missing = 1;
        return NULL;
    }
    return argv[++*i];
}

int main(int argc, char **argv)
{
    const char *ep = getenv("KVARENA_ADMIN");
    if (!ep || !*ep)
        ep = DEFAULT_ADMIN;
    int timeout_ms = DEFAULT_TIMEOUT_MS, timeout_set = 0, json = 0;
    const char *cmd = NULL, *arg = NULL, *listen = NULL;
    for (int i = 1; i < argc; i++) {
        int missing = 0;
        const char *v;
        if ((v = opt_value(argc, argv, &i, "--endpoint", &missing))) {
            ep = v;
        } else if ((v = opt_value(argc, argv, &i, "--listen", &missing))) {
            listen = v;
        } else if ((v = opt_value(argc, argv, &i, "--timeout", &missing))) {
            char *end;
            long t = strtol(v, &end, 10);
            if (*end || t <= 0 || t > 3600000)
                return usage("--timeout takes milliseconds, 1 to 3600000");
            timeout_ms = (int)t;
            timeout_set = 1;
        } else if (missing) {
            fprintf(stderr, "kvctl: %s needs a value\n", argv[i]);
            return usage(NULL);
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            fputs(usage_text, stdout);
            return 0;
        } else if (argv[i][0] == '-') {
            fprintf(stderr, "kvctl: unknown option %s\n", argv[i]);
            return usage(NULL);
        } else if (!cmd) {
            cmd = argv[i];
        } else if (!arg && !strcmp(cmd, "close")) {
            arg = argv[i];
        } else {
            fprintf(stderr, "kvctl: unexpected argument %s\n", argv[i]);
            return usage(NULL);
        }
    }
    if (!cmd)
        return usage("no command");
    if (listen && strcmp(cmd, "metrics"))
        return usage("--listen goes with metrics");
    if (!strcmp(cmd, "stats"))
        return cmd_stats(ep, timeout_ms, json ? OUT_JSON : OUT_TABLE);
    if (!strcmp(cmd, "metrics") && listen) {
        fetch_args a = { ep, timeout_ms };
        return json ? usage("--json goes with stats or seqs") : kvm_serve(listen, fetch_stats, &a);
    }
    if (!strcmp(cmd, "metrics"))
        return json ? usage("--json goes with stats or seqs")
                    : cmd_stats(ep, timeout_ms, OUT_METRICS);
    if (!strcmp(cmd, "seqs"))
        return cmd_seqs(ep, timeout_ms, json);
    if (!strcmp(cmd, "close"))
        return arg ? cmd_close(ep, timeout_ms, arg) : usage("close takes a sequence id");
    if (!strcmp(cmd, "check"))
        return cmd_check(ep, timeout_ms);
    if (!strcmp(cmd, "reload"))
        return cmd_reload(ep, timeout_ms);
    if (!strcmp(cmd, "snapshot"))
        return cmd_snapshot(ep, timeout_set ? timeout_ms : 600000);
    if (!strcmp(cmd, "keygen")) {
        char pub[41], sec[41];
        if (zmq_curve_keypair(pub, sec) != 0) {
            fprintf(stderr, "kvctl: zmq_curve_keypair failed: %s\n", zmq_strerror(errno));
            return 1;
        }
        printf("public_key = %s\nsecret_key = %s\n", pub, sec);
        return 0;
    }
    if (!strcmp(cmd, "ping")) {
        if (json)
            return usage("--json goes with stats or seqs");
        return cmd_ping(ep, timeout_ms);
    }
    fprintf(stderr, "kvctl: unknown command %s\n", cmd);
    return usage(NULL);
}
