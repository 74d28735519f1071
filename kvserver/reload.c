/* reload.c — an edited config applied to the running server (SIGHUP, kvctl reload), without
 * dropping the arena, its sequences or its connections.
 *
 * The config is built again from the server's own command line (its --config files, then
 * its flags), as at start. Live keys are applied; every other key must be as it was, else
 * nothing is applied and the answer names the keys that need a restart: a reload changes
 * all it asks or nothing. Live: server.log_level, job_timeout_ms, seq_idle_timeout_s,
 * snapshot_every_s, snapshot_mb_s, keep_shm; per tenant quota_pages, max_seqs, weight and
 * public_key (the tenants themselves, their names and order, salt the arena's hashes and
 * need a restart). `fresh` only matters at start and is ignored. A quota lowered below a
 * tenant's pages makes it evict its own pages as it allocates; a client key removed (or
 * moved to another tenant) is refused from its connection's next request on (handlers.c).
 * The workers keep the log level they were started with (one restarted takes the new one);
 * a snapshot pace applies from the next snapshot. */
#include "server.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "proto/kverr.h"

/* Copies the live keys of src into dst (tenants matched by position). */
static void live_copy(kvs_config *dst, const kvs_config *src)
{
    dst->log_level = src->log_level;
    dst->job_timeout_ms = src->job_timeout_ms;
    dst->seq_idle_timeout_s = src->seq_idle_timeout_s;
    dst->snapshot_every_s = src->snapshot_every_s;
    dst->snapshot_mb_s = src->snapshot_mb_s;
    dst->keep_shm = src->keep_shm;
    dst->fresh = src->fresh;
    for (uint32_t t = 0; t < dst->n_tenants && t < src->n_tenants; t++) {
        kvs_tenant_cfg *d = &dst->tenant[t];
        const kvs_tenant_cfg *s = &src->tenant[t];
        d->quota_pages = s->quota_pages;
        d->max_seqs = s->max_seqs;
        d->weight = s->weight;
        d->n_keys = s->n_keys;
        memcpy(d->public_key, s->public_key, sizeof(d->public_key));
    }
}

/* Keys that need a restart, by where they are in kvs_config, to name the ones that changed. */
#define F(key, field) { key, offsetof(kvs_config, field), sizeof(((kvs_config *)0)->field) }
static const struct { const char *key; size_t off, size; } restart_keys[] = {
    F("server.name", name), F("server.runtime_dir", runtime_dir),
    F("server.client_endpoint", client_ep), F("server.worker_endpoint", worker_ep),
    F("server.admin_endpoint", admin_ep), F("server.events_endpoint", events_ep),
    F("server.worker_path", worker_path), F("server.snapshot", snapshot),
    F("server.cold_dir", cold_dir), F("server.secret_key_file", secret_key_file),
    F("server.secret_key_file's key", secret_key), F("server.workers", workers),
    F("server.threads", threads), F("server.heartbeat_ms", heartbeat_ms),
    F("server.max_batch_tokens", max_batch_tokens),
    F("server.max_extend_tokens", max_extend_tokens), F("server.max_msg_bytes", max_msg_bytes),
    F("server.max_conns", max_conns), F("server.cold_mb", cold_mb),
    F("server.cold_mb_s", cold_mb_s), F("model.layers", layers), F("model.q_heads", q_heads),
    F("model.kv_heads", kv_heads), F("model.head_dim", head_dim),
    F("model.page_tokens", page_tokens), F("model.dtype", dtype), F("model.rope", rope),
    F("model.rope_theta", rope_theta), F("model.window", window), F("model.softcap", softcap),
    F("model.alibi_max_bias", alibi_max_bias), F("arena.pages or arena.bytes", pages),
    F("arena.bytes", arena_bytes), F("arena.max_seqs", max_seqs),
};
#undef F

/* Appends "; " and the formatted text to msg (cut at len). */
static void add(char *msg, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add(char *msg, size_t len, const char *fmt, ...)
{
    size_t n = strlen(msg);
    if (n && n + 2 < len)
        memcpy(msg + n, "; ", 3), n += 2;
    va_list ap;
    va_start(ap, fmt);
    if (n < len)
        vsnprintf(msg + n, len - n, fmt, ap);
    va_end(ap);
}

/* Why next cannot be applied to cur (the keys that need a restart), or "" if it can. */
static void restart_needed(const kvs_config *cur, const kvs_config *next, char *why, size_t len)
{
    why[0] = 0;
    if (cur->n_tenants != next->n_tenants)
        add(why, len, "the tenants (%u, now %u)", cur->n_tenants, next->n_tenants);
    for (uint32_t t = 0; t < cur->n_tenants && t < next->n_tenants; t++)
        if (strcmp(cur->tenant[t].name, next->tenant[t].name))
            add(why, len, "tenant %u's name (%s, now %s)", t + 1, cur->tenant[t].name,
                next->tenant[t].name);
    static kvs_config probe; /* 18 KB, as next */
    probe = *next;
    live_copy(&probe, cur);
    for (size_t i = 0; i < sizeof(restart_keys) / sizeof(restart_keys[0]); i++)
        if (memcmp((const char *)cur + restart_keys[i].off,
                   (const char *)&probe + restart_keys[i].off, restart_keys[i].size))
            add(why, len, "%s", restart_keys[i].key);
    if (!why[0] && memcmp(cur, &probe, sizeof(probe)))
        add(why, len, "a setting that is read at start only");
}

static int has_key(const kvs_tenant_cfg *t, const char *z85)
{
    for (uint32_t k = 0; k < t->n_keys; k++)
        if (!strcmp(t->public_key[k], z85))
            return 1;
    return 0;
}

/* Applies next's live keys to the server, listing what changed in msg. */
static void apply(kvs_server *s, const kvs_config *next, char *msg, size_t len)
{
    kvs_config *c = &s->cfg;
#define CHANGED(field, key)                                                                  \
    if (c->field != next->field)                                                             \
        add(msg, len, key " %llu -> %llu", (unsigned long long)c->field,                     \
            (unsigned long long)next->field)
    if (c->log_level != next->log_level)
        add(msg, len, "server.log_level %s -> %s", kvs_log_name(c->log_level),
            kvs_log_name(next->log_level));
    CHANGED(job_timeout_ms, "server.job_timeout_ms");
    CHANGED(seq_idle_timeout_s, "server.seq_idle_timeout_s");
    CHANGED(snapshot_every_s, "server.snapshot_every_s");
    CHANGED(snapshot_mb_s, "server.snapshot_mb_s");
    CHANGED(keep_shm, "server.keep_shm");
    for (uint32_t t = 0; t < c->n_tenants; t++) {
        const kvs_tenant_cfg *a = &c->tenant[t], *b = &next->tenant[t];
        if (a->quota_pages != b->quota_pages)
            add(msg, len, "tenant.%s.quota_pages %u -> %u", a->name, a->quota_pages,
                b->quota_pages);
        if (a->max_seqs != b->max_seqs)
            add(msg, len, "tenant.%s.max_seqs %u -> %u", a->name, a->max_seqs, b->max_seqs);
        if (a->weight != b->weight)
            add(msg, len, "tenant.%s.weight %u -> %u", a->name, a->weight, b->weight);
        uint32_t added = 0, removed = 0;
        for (uint32_t k = 0; k < b->n_keys; k++)
            added += !has_key(a, b->public_key[k]);
        for (uint32_t k = 0; k < a->n_keys; k++)
            removed += !has_key(b, a->public_key[k]);
        if (added || removed)
            add(msg, len, "tenant.%s.public_key %u added, %u removed (%u now)", a->name, added,
                removed, b->n_keys);
        s->pages.tenant[t].quota = b->quota_pages;
        s->seqs.tenant_max[t] = b->max_seqs;
    }
#undef CHANGED
    if (c->seq_idle_timeout_s != next->seq_idle_timeout_s)
        s->expire_at_ms = 0;    /* the next scan at once, with the new period */
    if (c->snapshot_every_s != next->snapshot_every_s)
        s->snap_next_ms = 0;    /* the next periodic one counted from now */
    live_copy(c, next);
    kvs_log_level = c->log_level;
    if (!msg[0])
        snprintf(msg, len, "no change");
}

int kvs_server_reload(kvs_server *s, char *msg, size_t len)
{
    static kvs_config next; /* 18 KB: kept off the loop's stack */
    char err[1024] = "", why[512];
    if (s->notify.ready) /* before READY=1 the start is not over: nothing to say */
        kvs_notify_sendf(&s->notify, "RELOADING=1\nMONOTONIC_USEC=%llu",
                         (unsigned long long)kvs_now_us());
    int rc = kvs_config_build(&next, s->argc, s->argv, err, sizeof(err));
    if (!rc) {
        restart_needed(&s->cfg, &next, why, sizeof(why));
        if (why[0]) {
            snprintf(err, sizeof(err), "these keys changed and need a restart: %s", why);
            rc = KV_ERR_INVAL;
        }
    }
    if (rc) {
        snprintf(msg, len, "the config was not applied: %s", err);
        KVS_ERROR("reload: %s", msg);
    } else {
        msg[0] = 0;
        apply(s, &next, msg, len);
        KVS_INFO("reload: %s", msg);
    }
    kvs_event(s, "server", rc ? "reload refused" : "reloaded");
    if (s->notify.ready)
        kvs_notify_send(&s->notify, rc ? "READY=1\nSTATUS=serving; a reload was refused (see "
                                         "the log)"
                                       : "READY=1\nSTATUS=serving; config reloaded");
    return rc;
}
