/* config.c — INI parsing with inih; every key is documented in deploy/kvarena.ini. */
#include "config.h"

#include <errno.h>
#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "kernels/kvkernels.h"
#include "log.h"
#include "proto/kverr.h"

void kvs_config_defaults(kvs_config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->name, sizeof(c->name), "default");
    snprintf(c->runtime_dir, sizeof(c->runtime_dir), "/tmp/kvarena");
    c->workers = 2;
    c->threads = 1;
    c->heartbeat_ms = 1000;
    c->job_timeout_ms = 60000;
    c->max_batch_tokens = 16384;
    c->max_extend_tokens = 65536;
    c->max_msg_bytes = 256ull << 20;
    c->max_conns = 4096;
    c->seq_idle_timeout_s = 600;
    c->cold_mb = 4096;
    c->log_level = KVS_LOG_INFO;
    c->layers = 4;
    c->q_heads = 8;
    c->kv_heads = 2;
    c->head_dim = 64;
    c->page_tokens = 16;
    c->dtype = KVK_F16;
    c->rope_theta = 10000.0f;
    c->pages = 2048;
    c->max_seqs = 4096;
}

static int parse_u64(const char *v, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *v == '-')
        return -1;
    int shift = 0;
    switch (*end) {
    case 'k': case 'K': shift = 10; end++; break;
    case 'm': case 'M': shift = 20; end++; break;
    case 'g': case 'G': shift = 30; end++; break;
    }
    if (*end == 'i' || *end == 'B') end += (*end == 'i' && end[1] == 'B') ? 2 : 1;
    if (*end || (shift && x > (UINT64_MAX >> shift)))
        return -1;
    *out = (uint64_t)x << shift;
    return 0;
}

static int parse_u32(const char *v, uint32_t *out)
{
    uint64_t x;
    if (parse_u64(v, &x) || x > UINT32_MAX)
        return -1;
    *out = (uint32_t)x;
    return 0;
}

const char *const kvs_dtype_names[3] = { "fp32", "fp16", "bf16" };
const char *const kvs_rope_names[3] = { "none", "half", "interleaved" };

/* *out = the index of value in names[3]; -1 if it is not there. */
static int parse_name(const char *value, const char *const names[3], uint32_t *out)
{
    for (uint32_t i = 0; i < 3; i++)
        if (!strcmp(value, names[i])) {
            *out = i;
            return 0;
        }
    return -1;
}

static int parse_bool(const char *v, int *out)
{
    if (!strcmp(v, "1") || !strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on"))
        *out = 1;
    else if (!strcmp(v, "0") || !strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off"))
        *out = 0;
    else
        return -1;
    return 0;
}

/* The whole field is written (zeros after the string): a reload compares fields whole. */
static int parse_str(const char *v, char *out, size_t len)
{
    if (strlen(v) >= len)
        return -1;
    memset(out, 0, len);
    memcpy(out, v, strlen(v));
    return 0;
}

/* The tenant named name, added if new; NULL if the table is full or the name is not 1..63
 * of [A-Za-z0-9_.-] (names go into logs and JSON events as they are). */
static kvs_tenant_cfg *tenant_get(kvs_config *c, const char *name)
{
    for (uint32_t i = 0; i < c->n_tenants; i++)
        if (!strcmp(c->tenant[i].name, name))
            return &c->tenant[i];
    size_t len = strlen(name);
    if (c->n_tenants == KVS_MAX_TENANTS || len == 0 || len >= KVS_NAME_MAX ||
        strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != len)
        return NULL;
    kvs_tenant_cfg *t = &c->tenant[c->n_tenants++];
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->weight = 1;
    return t;
}

/* public_key = K1[, K2 ...]: up to KVS_TENANT_KEYS Z85 keys of 40 characters. */
static int parse_keys(const char *value, kvs_tenant_cfg *t)
{
    t->n_keys = 0;
    for (const char *p = value + strspn(value, ", \t"); *p; p += strspn(p, ", \t")) {
        size_t len = strcspn(p, ", \t");
        uint8_t raw[32];
        if (len != 40 || t->n_keys == KVS_TENANT_KEYS)
            return -1;
        memcpy(t->public_key[t->n_keys], p, 40);
        t->public_key[t->n_keys][40] = 0;
        if (!zmq_z85_decode(raw, t->public_key[t->n_keys]))
            return -1;
        t->n_keys++;
        p += len;
    }
    return t->n_keys ? 0 : -1;
}

uint32_t kvs_config_key_tenant(const kvs_config *c, const char *z85)
{
    for (uint32_t t = 0; t < c->n_tenants; t++)
        for (uint32_t k = 0; k < c->tenant[t].n_keys; k++)
            if (!strcmp(z85, c->tenant[t].public_key[k]))
                return t;
    return c->n_tenants;
}

#define U32(sec, key, field) if (!strcmp(section, sec) && !strcmp(name, key)) return parse_u32(value, &c->field)
#define U64(sec, key, field) if (!strcmp(section, sec) && !strcmp(name, key)) return parse_u64(value, &c->field)
#define STR(sec, key, field) if (!strcmp(section, sec) && !strcmp(name, key)) return parse_str(value, c->field, sizeof(c->field))

/* Returns 0 if (section, name, value) was applied, -1 if the value is bad, -2 if unknown,
 * -3 if a tenant section names no tenant that may be added. */
static int apply(kvs_config *c, const char *section, const char *name, const char *value)
{
    STR("server", "name", name);
    STR("server", "runtime_dir", runtime_dir);
    STR("server", "client_endpoint", client_ep);
    STR("server", "worker_endpoint", worker_ep);
    STR("server", "admin_endpoint", admin_ep);
    STR("server", "events_endpoint", events_ep);
    STR("server", "worker_path", worker_path);
    STR("server", "snapshot", snapshot);
    STR("server", "cold_dir", cold_dir);
    STR("server", "secret_key_file", secret_key_file);
    U32("server", "workers", workers);
    U32("server", "threads", threads);
    U32("server", "heartbeat_ms", heartbeat_ms);
    U32("server", "job_timeout_ms", job_timeout_ms);
    U32("server", "max_batch_tokens", max_batch_tokens);
    U32("server", "max_extend_tokens", max_extend_tokens);
    U64("server", "max_msg_bytes", max_msg_bytes);
    U32("server", "max_conns", max_conns);
    U32("server", "seq_idle_timeout_s", seq_idle_timeout_s);
    U32("server", "snapshot_every_s", snapshot_every_s);
    U32("server", "snapshot_mb_s", snapshot_mb_s);
    U32("server", "cold_mb", cold_mb);
    U32("server", "cold_mb_s", cold_mb_s);
    if (!strcmp(section, "server") && !strcmp(name, "keep_shm"))
        return parse_bool(value, &c->keep_shm);
    if (!strcmp(section, "server") && !strcmp(name, "fresh"))
        return parse_bool(value, &c->fresh);
    if (!strcmp(section, "server") && !strcmp(name, "log_level"))
        return (c->log_level = kvs_log_parse(value)) < 0 ? -1 : 0;
    U32("model", "layers", layers);
    U32("model", "q_heads", q_heads);
    U32("model", "kv_heads", kv_heads);
    U32("model", "head_dim", head_dim);
    U32("model", "page_tokens", page_tokens);
    if (!strcmp(section, "model") && !strcmp(name, "dtype"))
        return parse_name(value, kvs_dtype_names, &c->dtype);
    U32("model", "window", window);
    if (!strcmp(section, "model") && !strcmp(name, "rope"))
        return parse_name(value, kvs_rope_names, &c->rope);
    float *f = NULL, max = 1e30f;
    if (!strcmp(section, "model") && !strcmp(name, "rope_theta"))
        f = &c->rope_theta;
    if (!strcmp(section, "model") && !strcmp(name, "softcap"))
        f = &c->softcap;
    if (!strcmp(section, "model") && !strcmp(name, "alibi_max_bias"))
        f = &c->alibi_max_bias, max = KVA_ALIBI_MAX_BIAS;
    if (f) {
        char *end;
        float x = strtof(value, &end);
        if (*end || !(x >= 0 && x <= max))
            return -1;
        *f = x;
        return 0;
    }
    U32("arena", "pages", pages);
    U64("arena", "bytes", arena_bytes);
    U32("arena", "max_seqs", max_seqs);
    if (!strncmp(section, "tenant.", 7)) {
        kvs_tenant_cfg *t = tenant_get(c, section + 7);
        if (!t)
            return -3;
        if (!strcmp(name, "quota_pages"))
            return parse_u32(value, &t->quota_pages);
        if (!strcmp(name, "max_seqs"))
            return parse_u32(value, &t->max_seqs);
        if (!strcmp(name, "weight"))
            return parse_u32(value, &t->weight) || t->weight == 0 ? -1 : 0;
        if (!strcmp(name, "public_key"))
            return parse_keys(value, t);
    }
    return -2;
}

typedef struct load_ctx {
    kvs_config *c;
    char *err;
    size_t err_len;
} load_ctx;

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    load_ctx *ctx = user;
    int rc = apply(ctx->c, section, name, value);
    if (rc == 0)
        return 1;
    if (rc == -3)
        snprintf(ctx->err, ctx->err_len, "bad tenant section [%s]: names are 1..%d of "
                 "[A-Za-z0-9_.-], at most %d tenants", section, KVS_NAME_MAX - 1, KVS_MAX_TENANTS);
    else
        snprintf(ctx->err, ctx->err_len, rc == -2 ? "unknown key %s.%s" : "bad value for %s.%s: '%s'",
                 section, name, value);
    return 0;
}

int kvs_config_load(kvs_config *c, const char *path, char *err, size_t err_len)
{
    load_ctx ctx = { c, err, err_len };
    err[0] = 0;
    struct stat st; /* ini_parse reads a directory as an empty file: refuse it here */
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
        snprintf(err, err_len, "cannot read config %s: not a regular file", path);
        return KV_ERR_INVAL;
    }
    int rc = ini_parse(path, on_key, &ctx);
    if (rc == -1) {
        snprintf(err, err_len, "cannot open config %s: %s", path, strerror(errno));
        return KV_ERR_INVAL;
    }
    if (rc != 0) {
        size_t n = strlen(err);
        snprintf(err + n, err_len - n, "%s%s line %d", n ? " at " : "error at ", path, rc);
        return KV_ERR_INVAL;
    }
    return 0;
}

int kvs_config_set(kvs_config *c, const char *assignment, char *err, size_t err_len)
{
    char buf[512];
    if (snprintf(buf, sizeof(buf), "%s", assignment) >= (int)sizeof(buf))
        goto bad;
    char *eq = strchr(buf, '='), *dot = strchr(buf, '.');
    if (!eq || !dot || dot > eq)
        goto bad;
    *eq = 0;
    /* the key is after the last dot before '=' so [tenant.NAME] sections work */
    char *key = strrchr(buf, '.');
    *key = 0;
    load_ctx ctx = { c, err, err_len };
    return on_key(&ctx, buf, key + 1, eq + 1) ? 0 : KV_ERR_INVAL;
bad:
    snprintf(err, err_len, "--set wants section.key=value, got '%s'", assignment);
    return KV_ERR_INVAL;
}

static void default_ep(char *ep, const char *dir, const char *file)
{
    if (!ep[0])
        snprintf(ep, KVS_PATH_MAX, "ipc://%.200s/%s", dir, file);
}

/* Reads the server's Z85 secret key (first 40 characters of the file, which must not be
 * readable by others). */
static int read_secret(kvs_config *c, char *err, size_t err_len)
{
    struct stat st;
    FILE *f = fopen(c->secret_key_file, "r");
    if (!f) {
        snprintf(err, err_len, "cannot open secret_key_file %s: %s", c->secret_key_file, strerror(errno));
        return -1;
    }
    char buf[64] = "";
    int ok = fstat(fileno(f), &st) == 0 && fgets(buf, sizeof(buf), f) != NULL;
    fclose(f);
    if (ok && (st.st_mode & 077)) {
        snprintf(err, err_len, "secret_key_file %s is readable by others (chmod 600)", c->secret_key_file);
        return -1;
    }
    buf[strcspn(buf, " \t\r\n")] = 0;
    uint8_t raw[32];
    if (!ok || strlen(buf) != 40 || !zmq_z85_decode(raw, buf)) {
        snprintf(err, err_len, "secret_key_file %s does not hold a 40-character Z85 key "
                 "(kvctl keygen makes one)", c->secret_key_file);
        return -1;
    }
    memcpy(c->secret_key, buf, 41);
    return 0;
}

int kvs_config_finish(kvs_config *c, char *err, size_t err_len)
{
    kvk_geom g = kvs_config_geom(c);
    if (kvk_geom_check(&g) != 0) {
        snprintf(err, err_len, "unsupported model geometry: layers=%u q_heads=%u kv_heads=%u head_dim=%u page_tokens=%u",
                 c->layers, c->q_heads, c->kv_heads, c->head_dim, c->page_tokens);
        return KV_ERR_INVAL;
    }
    if (c->arena_bytes) {
        uint64_t n = c->arena_bytes / kvk_page_bytes(&g);
        if (n == 0 || n > UINT32_MAX - 1) {
            snprintf(err, err_len, "arena.bytes=%llu holds %llu pages of %zu bytes",
                     (unsigned long long)c->arena_bytes, (unsigned long long)n, kvk_page_bytes(&g));
            return KV_ERR_INVAL;
        }
        c->pages = (uint32_t)n;
    }
    if (c->pages == 0 || c->max_seqs == 0 || c->workers == 0 || c->workers > 256 ||
        c->threads == 0 || c->threads > 256 || c->heartbeat_ms < KVS_HEARTBEAT_MIN_MS ||
        c->max_batch_tokens == 0 || c->max_extend_tokens == 0 || c->max_conns == 0 ||
        c->max_conns > (1u << 24)) {
        snprintf(err, err_len, "pages, max_seqs, workers (1..256), threads (1..256), "
                               "heartbeat_ms (>= %d), token limits and max_conns (1..2^24) must be set",
                 KVS_HEARTBEAT_MIN_MS);
        return KV_ERR_INVAL;
    }
    if (c->job_timeout_ms < 3ull * c->heartbeat_ms) {
        snprintf(err, err_len, "server.job_timeout_ms (%u) must be at least 3 heartbeats "
                 "(server.heartbeat_ms %u): a shorter one fences workers that are only busy",
                 c->job_timeout_ms, c->heartbeat_ms);
        return KV_ERR_INVAL;
    }
    if (c->cold_dir[0] && c->cold_mb == 0) {
        snprintf(err, err_len, "server.cold_mb must be at least 1 with server.cold_dir");
        return KV_ERR_INVAL;
    }
    if (c->snapshot_every_s && !c->snapshot[0]) {
        snprintf(err, err_len, "server.snapshot_every_s needs server.snapshot (the file)");
        return KV_ERR_INVAL;
    }
    if (c->n_tenants == 0)
        tenant_get(c, "default");
    if (c->secret_key_file[0] && read_secret(c, err, err_len) != 0)
        return KV_ERR_INVAL;
    for (uint32_t t = 0; c->secret_key_file[0] && t < c->n_tenants; t++)
        if (!c->tenant[t].n_keys) {
            snprintf(err, err_len, "tenant %s has no public_key: with secret_key_file every "
                     "tenant is known by its clients' CURVE key", c->tenant[t].name);
            return KV_ERR_INVAL;
        }
    for (uint32_t t = 0; t < c->n_tenants; t++) /* a key names one tenant, once */
        for (uint32_t k = 0; k < c->tenant[t].n_keys; k++)
            for (uint32_t u = 0; u <= t; u++) /* against every key listed before it */
                for (uint32_t j = 0; j < (u == t ? k : c->tenant[u].n_keys); j++)
                    if (!strcmp(c->tenant[t].public_key[k], c->tenant[u].public_key[j])) {
                        snprintf(err, err_len, "public_key %s is listed twice (tenants %s and %s)",
                                 c->tenant[t].public_key[k], c->tenant[u].name, c->tenant[t].name);
                        return KV_ERR_INVAL;
                    }
    default_ep(c->client_ep, c->runtime_dir, "client.sock");
    default_ep(c->worker_ep, c->runtime_dir, "worker.sock");
    default_ep(c->admin_ep, c->runtime_dir, "admin.sock");
    default_ep(c->events_ep, c->runtime_dir, "events.sock");
    if (!c->worker_path[0]) {
        char self[KVS_PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0) {
            snprintf(err, err_len, "readlink(/proc/self/exe) failed: %s", strerror(errno));
            return KV_ERR_INVAL;
        }
        self[n] = 0;
        char *slash = strrchr(self, '/');
        *slash = 0;
        snprintf(c->worker_path, sizeof(c->worker_path), "%.240s/kvworker", self);
    }
    if (access(c->worker_path, X_OK) != 0) { /* else every worker dies at exec, forever */
        snprintf(err, err_len, "worker_path %s cannot be executed: %s", c->worker_path,
                 strerror(errno));
        return KV_ERR_INVAL;
    }
    return 0;
}

int kvs_config_build(kvs_config *c, int argc, char *const argv[], char *err, size_t err_len)
{
    kvs_config_defaults(c);
    /* the config files first, so flags override them whatever their order */
    for (int i = 1; i < argc - 1; i++)
        if (!strcmp(argv[i], "--config") && kvs_config_load(c, argv[++i], err, err_len))
            return KV_ERR_INVAL;
    static const char *const flags[][2] = {
        { "--workers", "server.workers" }, { "--threads", "server.threads" },
        { "--name", "server.name" }, { "--runtime-dir", "server.runtime_dir" },
        { "--log-level", "server.log_level" },
    };
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char set[512];
        if (!strcmp(a, "--keep-shm") || !strcmp(a, "--fresh")) {
            *(a[2] == 'k' ? &c->keep_shm : &c->fresh) = 1;
            continue;
        }
        size_t k = 0;
        while (k < sizeof(flags) / sizeof(flags[0]) && strcmp(a, flags[k][0]))
            k++;
        if (k == sizeof(flags) / sizeof(flags[0]) && strcmp(a, "--config") && strcmp(a, "--set")) {
            snprintf(err, err_len, "unknown option %s", a);
            return KV_ERR_INVAL;
        }
        if (!v) {
            snprintf(err, err_len, "%s needs a value", a);
            return KV_ERR_INVAL;
        }
        i++;
        if (!strcmp(a, "--config"))
            continue;
        if (!strcmp(a, "--set"))
            snprintf(set, sizeof(set), "%s", v);
        else
            snprintf(set, sizeof(set), "%s=%s", flags[k][1], v);
        if (kvs_config_set(c, set, err, err_len))
            return KV_ERR_INVAL;
    }
    return kvs_config_finish(c, err, err_len);
}
