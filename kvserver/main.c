/* kvserver — owns the KV arena, spawns the workers, serves clients. See server.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto/kverr.h"
#include "server.h"

static void usage(FILE *f)
{
    fprintf(f,
            "usage: kvserver [--config FILE] [--set section.key=value]... [--workers N]\n"
            "                [--threads T] [--name NAME] [--runtime-dir DIR] [--keep-shm] [--fresh]\n"
            "                [--log-level error|warn|info|debug]\n"
            "Serves the KV arena described by FILE (see deploy/kvarena.ini for every key). An arena\n"
            "left by a previous server (killed, or --keep-shm) is validated and reused: its\n"
            "committed pages and open sequences survive; --fresh discards it instead.\n");
}

int main(int argc, char **argv)
{
    static kvs_server srv;
    kvs_config *c = &srv.cfg;
    char err[512] = "";
    kvs_log_open();
    kvs_config_defaults(c);
    /* the config file first, so flags override it whatever their order */
    for (int i = 1; i < argc - 1; i++)
        if (!strcmp(argv[i], "--config") && kvs_config_load(c, argv[i + 1], err, sizeof(err))) {
            fprintf(stderr, "kvserver: %s\n", err);
            return 2;
        }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char set[512];
        int rc = 0, takes = 1;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--keep-shm")) {
            c->keep_shm = 1;
            takes = 0;
        } else if (!strcmp(a, "--fresh")) {
            c->fresh = 1;
            takes = 0;
        } else if (!v) {
            usage(stderr);
            return 2;
        } else if (!strcmp(a, "--config")) {
        } else if (!strcmp(a, "--set")) {
            rc = kvs_config_set(c, v, err, sizeof(err));
        } else {
            static const char *const flags[][2] = {
                { "--workers", "server.workers" }, { "--threads", "server.threads" },
                { "--name", "server.name" }, { "--runtime-dir", "server.runtime_dir" },
                { "--log-level", "server.log_level" },
            };
            size_t k = 0;
            while (k < sizeof(flags) / sizeof(flags[0]) && strcmp(a, flags[k][0]))
                k++;
            if (k == sizeof(flags) / sizeof(flags[0])) {
                fprintf(stderr, "kvserver: unknown option %s\n", a);
                usage(stderr);
                return 2;
            }
            snprintf(set, sizeof(set), "%s=%s", flags[k][1], v);
            rc = kvs_config_set(c, set, err, sizeof(err));
        }
        if (rc) {
            fprintf(stderr, "kvserver: %s\n", err);
            return 2;
        }
        i += takes;
    }
    if (kvs_config_finish(c, err, sizeof(err))) {
        fprintf(stderr, "kvserver: %s\n", err);
        return 2;
    }
    kvs_log_level = c->log_level;
    int rc = kvs_server_start(&srv);
    if (rc == 0)
        rc = kvs_server_run(&srv);
    else {
        KVS_ERROR("start failed: %s", kv_strerror(rc));
        kvs_notify_sendf(&srv.notify, "STATUS=start failed: %s (the log says why)", kv_strerror(rc));
    }
    kvs_server_stop(&srv);
    return rc == 0 ? 0 : 1;
}
