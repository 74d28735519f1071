/* kvserver — owns the KV arena, spawns the workers, serves clients. See server.h. */
#include <signal.h>
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
    sigset_t hup; /* a reload asked for before the server is up is done when it is */
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    sigprocmask(SIG_BLOCK, &hup, NULL);
    kvs_log_init();
    kvs_notify_open(&srv.notify); /* before any thread: it edits the environment */
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    if (kvs_config_build(c, argc, argv, err, sizeof(err))) {
        /* logged (a priority in the journal) and told to systemd; the unit does not restart
         * on exit status 2: a config fails the same way every time */
        KVS_ERROR("%s", err);
        kvs_notify_sendf(&srv.notify, "STATUS=refused its config: %s", err);
        if (!strncmp(err, "unknown option", 14) || strstr(err, "needs a value"))
            usage(stderr);
        kvs_notify_close(&srv.notify);
        return 2;
    }
    srv.argc = argc; /* a reload builds the config again from them */
    srv.argv = argv;
    kvs_log_level = c->log_level;
    int rc = kvs_server_start(&srv);
    if (rc == 0)
        rc = kvs_server_run(&srv);
    else {
        KVS_ERROR("start failed: %s", kv_strerror(rc));
        kvs_notify_sendf(&srv.notify, "STATUS=start failed: %s (the log says why)",
                         kv_strerror(rc));
    }
    kvs_server_stop(&srv);
    return rc == 0 ? 0 : 1;
}
