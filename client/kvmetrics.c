/* kvmetrics.c — Prometheus text format and a one-connection-at-a-time HTTP endpoint for it
 * (kvmetrics.h). */
#define _GNU_SOURCE /* accept4 */
#include "client/kvmetrics.h"

#include <errno.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* ---- the text exposition format 0.0.4 ---- */

/* A label value with \\, " and newlines escaped. */
static void prom_label(FILE *f, const char *v)
{
    for (; *v; v++)
        if (*v == '\\' || *v == '"')
            fprintf(f, "\\%c", *v);
        else if (*v == '\n')
            fprintf(f, "\\n");
        else
            fputc(*v, f);
}

static void prom_head(FILE *f, const char *name, const char *type, const char *help)
{
    fprintf(f, "# HELP kvarena_%s %s\n# TYPE kvarena_%s %s\n", name, help, name, type);
}

/* A metric of one unlabelled sample. */
static void prom_one(FILE *f, const char *name, const char *type, const char *help,
                     uint64_t v)
{
    prom_head(f, name, type, help);
    fprintf(f, "kvarena_%s %" PRIu64 "\n", name, v);
}

void kvm_print(FILE *f, const Kvarena__StatsReply *s)
{
    prom_head(f, "pages", "gauge", "Arena pages by state.");
    fprintf(f, "kvarena_pages{state=\"free\"} %u\nkvarena_pages{state=\"in_use\"} %u\n"
            "kvarena_pages{state=\"cached\"} %u\n", s->pages_free, s->pages_in_use,
            s->pages_cached);
    prom_one(f, "arena_bytes", "gauge", "Size of the arena's shared memory.", s->arena_bytes);
    prom_one(f, "prefix_hits_total", "counter", "Full pages found in the prefix cache.",
             s->prefix_hits);
    prom_one(f, "prefix_misses_total", "counter", "Full pages looked up and not found.",
             s->prefix_misses);
    prom_one(f, "evictions_total", "counter", "Cached pages evicted.", s->evictions);
    prom_one(f, "sequences", "gauge", "Open sequences.", s->sequences);
    prom_one(f, "sequences_expired_total", "counter", "Sequences closed for idleness.",
             s->seqs_expired);
    prom_head(f, "jobs_total", "counter", "Attend jobs completed, and failed in the end.");
    fprintf(f, "kvarena_jobs_total{result=\"done\"} %" PRIu64 "\n"
            "kvarena_jobs_total{result=\"failed\"} %" PRIu64 "\n", s->jobs_done, s->jobs_failed);
    prom_one(f, "job_retries_total", "counter", "Runs given to another worker after theirs died.",
             s->jobs_retried);
    prom_one(f, "jobs_queued", "gauge", "Attend jobs waiting for a worker.", s->jobs_queued);
    prom_head(f, "attend_rows_total", "counter", "Query rows attended by completed jobs.");
    fprintf(f, "kvarena_attend_rows_total{kind=\"prefill\"} %" PRIu64 "\n"
            "kvarena_attend_rows_total{kind=\"decode\"} %" PRIu64 "\n", s->rows_prefill,
            s->rows_decode);
    prom_head(f, "attend_latency_seconds", "histogram", "Completed Attend jobs: wait (arrival to "
              "last dispatch), run (last dispatch to reply), total.");
    for (size_t i = 0; i < s->n_latency; i++) {
        const Kvarena__LatencyHist *h = s->latency[i];
        if (h->n_counts != s->n_latency_bounds_us + 1)
            continue;
        uint64_t cum = 0;
        for (size_t b = 0; b < h->n_counts; b++) {
            cum += h->counts[b];
            fprintf(f, "kvarena_attend_latency_seconds_bucket{kind=\"%s\",stage=\"%s\",le=\"",
                    h->kind, h->stage);
            if (b < s->n_latency_bounds_us)
                fprintf(f, "%g", (double)s->latency_bounds_us[b] / 1e6);
            else
                fprintf(f, "+Inf");
            fprintf(f, "\"} %" PRIu64 "\n", cum);
        }
        fprintf(f, "kvarena_attend_latency_seconds_sum{kind=\"%s\",stage=\"%s\"} %.6f\n", h->kind,
                h->stage, (double)h->sum_us / 1e6);
        fprintf(f, "kvarena_attend_latency_seconds_count{kind=\"%s\",stage=\"%s\"} %" PRIu64 "\n",
                h->kind, h->stage, cum);
    }
    prom_head(f, "workers", "gauge", "Workers by state.");
    static const char *const states[] = { "starting", "ready", "busy", "fencing", "down" };
    for (size_t k = 0; k < sizeof(states) / sizeof(states[0]); k++) {
        uint32_t n = 0;
        for (size_t i = 0; i < s->n_workers; i++)
            n += !strcmp(s->workers[i]->state, states[k]);
        fprintf(f, "kvarena_workers{state=\"%s\"} %u\n", states[k], n);
    }
    prom_head(f, "worker_restarts_total", "counter", "Worker processes started again.");
    for (size_t i = 0; i < s->n_workers; i++)
        fprintf(f, "kvarena_worker_restarts_total{worker=\"%u\"} %u\n", s->workers[i]->index,
                s->workers[i]->restarts);
    static const char *const tenant_metrics[][3] = {
        { "tenant_pages", "gauge", "Pages charged to a tenant (in use and cached)." },
        { "tenant_quota_pages", "gauge", "A tenant's page quota (0: none)." },
        { "tenant_sequences", "gauge", "A tenant's open sequences." },
        { "tenant_jobs_total", "counter", "A tenant's completed Attend jobs." },
    };
    for (int k = 0; k < 4; k++) {
        prom_head(f, tenant_metrics[k][0], tenant_metrics[k][1], tenant_metrics[k][2]);
        for (size_t i = 0; i < s->n_tenants; i++) {
            const Kvarena__TenantStats *t = s->tenants[i];
            uint64_t v = k == 0 ? t->pages : k == 1 ? t->quota : k == 2 ? t->sequences : t->jobs;
            fprintf(f, "kvarena_%s{tenant=\"", tenant_metrics[k][0]);
            prom_label(f, t->name);
            fprintf(f, "\"} %" PRIu64 "\n", v);
        }
    }
    if (*s->cold_dir) {
        prom_one(f, "cold_pages", "gauge", "Pages in the cold tier's files.", s->cold_pages);
        prom_one(f, "cold_bytes", "gauge", "Bytes of the cold tier's files.", s->cold_bytes);
        prom_head(f, "cold_events_total", "counter", "Cold tier pages written, read back, failed "
                  "to read back, skipped, dropped.");
        const char *ev[] = { "stored", "restored", "failed", "skipped", "dropped" };
        uint64_t v[] = { s->cold_stored, s->cold_restored, s->cold_failed, s->cold_skipped,
                         s->cold_dropped };
        for (int k = 0; k < 5; k++)
            fprintf(f, "kvarena_cold_events_total{event=\"%s\"} %" PRIu64 "\n", ev[k], v[k]);
    }
    if (*s->snapshot_path && s->snapshot_age_ms) {
        prom_head(f, "snapshot_age_seconds", "gauge",
                  "Since a snapshot was last written beside serving.");
        fprintf(f, "kvarena_snapshot_age_seconds %.3f\n", s->snapshot_age_ms / 1e3);
    }
    prom_head(f, "uptime_seconds", "gauge", "Since the server started.");
    fprintf(f, "kvarena_uptime_seconds %.3f\n", s->uptime_ms / 1e3);
}

/* ---- HTTP ---- */

/* Writes all of buf (a peer gone is no error of ours). */
static void write_all(int fd, const char *buf, size_t len)
{
    while (len) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        buf += n, len -= (size_t)n;
    }
}

static void respond(int fd, const char *status, const char *type, const char *body, size_t len,
                    int head_only)
{
    char hdr[320];
    int n = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "%sConnection: close\r\n\r\n", status, type, len,
                     !strncmp(status, "405", 3) ? "Allow: GET, HEAD\r\n" : "");
    write_all(fd, hdr, (size_t)n);
    if (!head_only)
        write_all(fd, body, len);
}

static int64_t now_ms(void)
{
    return kvr_now_ns() / 1000000;
}

/* One connection: reads the request head (8 KiB at most, 5 s in all however it trickles
 * in; what came before the client closed its side counts), answers, returns. */
static void serve_one(int fd, kvm_fetch_fn fetch, void *arg)
{
    struct timeval tv = { 5, 0 };
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char req[8192];
    size_t got = 0;
    int64_t deadline = now_ms() + 5000;
    while (got < sizeof(req) - 1) {
        struct pollfd p = { fd, POLLIN, 0 };
        int64_t left = deadline - now_ms();
        int r = left > 0 ? poll(&p, 1, (int)left) : 0;
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return; /* silent, or trickling, for 5 s */
        ssize_t n = recv(fd, req + got, sizeof(req) - 1 - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break; /* closed: answer what came */
        got += (size_t)n;
        req[got] = '\0';
        if (strstr(req, "\r\n\r\n") || strstr(req, "\n\n"))
            break;
    }
    req[got] = '\0';
    char method[8] = "", path[256] = "";
    const char *text = "text/plain; charset=utf-8";
    if (sscanf(req, "%7s %255s", method, path) != 2) {
        respond(fd, "400 Bad Request", text, "bad request\n", 12, 0);
        return;
    }
    int head = !strcmp(method, "HEAD");
    path[strcspn(path, "?")] = '\0';
    if (strcmp(method, "GET") && !head) {
        respond(fd, "405 Method Not Allowed", text, "GET /metrics\n", 13, 0);
        return;
    }
    if (strcmp(path, "/metrics")) {
        respond(fd, "404 Not Found", text, "the metrics are at /metrics\n", 28, head);
        return;
    }
    kvr_reply rep;
    char why[256] = "", msg[320];
    if (fetch(arg, &rep, why, sizeof(why)) != 0) {
        int n = snprintf(msg, sizeof(msg), "kvserver did not answer: %s\n", why);
        respond(fd, "503 Service Unavailable", text, msg, (size_t)n, head);
        return;
    }
    char *body = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&body, &len);
    if (f) {
        kvm_print(f, rep.env->stats_reply);
        fclose(f);
    }
    kvr_reply_clear(&rep);
    if (!f || !body)
        respond(fd, "500 Internal Server Error", text, "out of memory\n", 14, head);
    else
        respond(fd, "200 OK", "text/plain; version=0.0.4; charset=utf-8", body, len, head);
    free(body);
}

/* Closes a connection after its answer: our side first, then what the client still sends
 * read for 200 ms at most (closing with unread bytes would reset the connection and could
 * discard the answer at the client). */
static void conn_close(int fd)
{
    shutdown(fd, SHUT_WR);
    char buf[512];
    int64_t end = now_ms() + 200;
    struct pollfd p = { fd, POLLIN, 0 };
    while (now_ms() < end && poll(&p, 1, (int)(end - now_ms())) > 0 &&
           recv(fd, buf, sizeof(buf), 0) > 0)
        ;
    close(fd);
}

#define MAX_LISTEN 4

int kvm_serve(const char *addr, kvm_fetch_fn fetch, void *arg)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (!colon || !colon[1] || (size_t)(colon - addr) >= sizeof(host)) {
        fprintf(stderr, "kvctl: --listen takes HOST:PORT, [V6]:PORT or :PORT, not '%s'\n", addr);
        return 1;
    }
    memcpy(host, addr, (size_t)(colon - addr));
    host[colon - addr] = '\0';
    if (host[0] == '[' && host[strlen(host) - 1] == ']') { /* [::1] */
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = '\0';
    }
    struct addrinfo hints = { .ai_flags = AI_PASSIVE, .ai_socktype = SOCK_STREAM }, *ai;
    int rc = getaddrinfo(host[0] ? host : NULL, colon + 1, &hints, &ai);
    if (rc) {
        fprintf(stderr, "kvctl: --listen %s: %s\n", addr, gai_strerror(rc));
        return 1;
    }
    /* every address the name has ("localhost": ::1 and 127.0.0.1; none: :: and 0.0.0.0) */
    struct pollfd lfd[MAX_LISTEN];
    int n = 0, on = 1, err = 0;
    for (struct addrinfo *a = ai; a && n < MAX_LISTEN; a = a->ai_next) {
        int fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
        if (a->ai_family == AF_INET6) /* :: beside 0.0.0.0, not over it */
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
        if (bind(fd, a->ai_addr, a->ai_addrlen) != 0 || listen(fd, 16) != 0) {
            err = errno;
            close(fd);
            continue;
        }
        lfd[n++] = (struct pollfd){ fd, POLLIN, 0 };
    }
    freeaddrinfo(ai);
    if (!n) {
        fprintf(stderr, "kvctl: listening on %s failed: %s\n", addr, strerror(err));
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    fprintf(stderr, "kvctl: serving the server's metrics on http://%s/metrics\n", addr);
    for (;;) {
        if (poll(lfd, (nfds_t)n, -1) < 0)
            continue; /* EINTR */
        for (int i = 0; i < n; i++) {
            if (!(lfd[i].revents & POLLIN))
                continue;
            int c = accept4(lfd[i].fd, NULL, NULL, SOCK_CLOEXEC);
            if (c < 0) {
                if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                    usleep(100000); /* out of descriptors: not a busy loop */
                if (errno != EINTR && errno != ECONNABORTED && errno != EAGAIN)
                    fprintf(stderr, "kvctl: accept failed: %s\n", strerror(errno));
                continue;
            }
            serve_one(c, fetch, arg);
            conn_close(c);
        }
    }
}
