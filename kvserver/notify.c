/* notify.c — sd_notify(3) by hand (see notify.h): one connectionless AF_UNIX datagram per
 * message, as libsystemd sends it. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "notify.h"

/* $WATCHDOG_USEC in ms if it is meant for this process, else 0. */
static uint64_t watchdog_env_ms(void)
{
    const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
    char *end;
    if (!usec)
        return 0;
    if (pid && strtol(pid, &end, 10) != (long)getpid())
        return 0;
    errno = 0;
    unsigned long long us = strtoull(usec, &end, 10);
    if (errno || end == usec || *end || us < 1000) {
        KVS_WARN("WATCHDOG_USEC=%s is not a number of microseconds >= 1000: no watchdog pings",
                 usec);
        return 0;
    }
    return us / 1000;
}

void kvs_notify_open(kvs_notify *n)
{
    *n = (kvs_notify){ 0 };
    const char *path = getenv("NOTIFY_SOCKET");
    uint64_t watchdog_ms = watchdog_env_ms();
    if (path && path[0]) {
        size_t len = strlen(path);
        /* a path needs room for its NUL, an abstract name ('@' for its leading NUL) none */
        size_t room = sizeof(n->addr.sun_path) - (path[0] == '/');
        if ((path[0] != '/' && path[0] != '@') || len > room) {
            KVS_WARN("NOTIFY_SOCKET=%s is neither an absolute path nor an abstract name ('@') "
                     "of at most %zu bytes: systemd will not hear from this server", path,
                     sizeof(n->addr.sun_path) - 1);
        } else if ((n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
            KVS_WARN("socket(AF_UNIX, SOCK_DGRAM) for NOTIFY_SOCKET failed: %s", strerror(errno));
            n->fd = 0;
        } else {
            if (n->fd == 0) { /* stdin was closed: 0 means "none" here, move it */
                int fd = fcntl(0, F_DUPFD_CLOEXEC, 3);
                close(0);
                n->fd = fd < 0 ? 0 : fd;
            }
            n->addr.sun_family = AF_UNIX;
            memcpy(n->addr.sun_path, path, len);
            if (path[0] == '@')
                n->addr.sun_path[0] = '\0';
            n->addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len
                                      + (path[0] == '/'));
            n->watchdog_ms = watchdog_ms;
        }
    }
    unsetenv("NOTIFY_SOCKET");
    unsetenv("WATCHDOG_USEC");
    unsetenv("WATCHDOG_PID");
    if (n->watchdog_ms)
        KVS_INFO("systemd watchdog: %llu ms", (unsigned long long)n->watchdog_ms);
}

void kvs_notify_send(kvs_notify *n, const char *msg)
{
    if (n->fd <= 0)
        return;
    if (sendto(n->fd, msg, strlen(msg), MSG_NOSIGNAL, (const struct sockaddr *)&n->addr,
               n->addr_len) >= 0)
        return;
    if (!n->warned)
        KVS_WARN("sendto(NOTIFY_SOCKET, \"%.40s\") failed: %s (systemd may not hear this "
                 "server; later failures are logged at debug level)", msg, strerror(errno));
    else
        KVS_DEBUG("sendto(NOTIFY_SOCKET, \"%.40s\") failed: %s", msg, strerror(errno));
    n->warned = 1;
}

void kvs_notify_sendf(kvs_notify *n, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    kvs_notify_send(n, msg);
}

void kvs_notify_ping(kvs_notify *n, uint64_t now_ms)
{
    if (!n->watchdog_ms || n->stopping || now_ms - n->pinged_ms < n->watchdog_ms / 4)
        return;
    n->pinged_ms = now_ms;
    kvs_notify_send(n, "WATCHDOG=1");
}

long kvs_notify_poll_ms(const kvs_notify *n, long tick_ms)
{
    long quarter = (long)(n->watchdog_ms / 4);
    return n->watchdog_ms && quarter < tick_ms ? (quarter ? quarter : 1) : tick_ms;
}

void kvs_notify_stopping(kvs_notify *n, const char *status)
{
    n->stopping = 1;
    if (n->watchdog_ms)
        kvs_notify_sendf(n, "STOPPING=1\nWATCHDOG_USEC=3600000000\nSTATUS=%s", status);
    else
        kvs_notify_sendf(n, "STOPPING=1\nSTATUS=%s", status);
}

void kvs_notify_extend(kvs_notify *n, uint64_t bytes)
{
    uint64_t ms = 30000 + bytes / 50000;
    kvs_notify_sendf(n, "EXTEND_TIMEOUT_USEC=%llu", (unsigned long long)ms * 1000);
}

void kvs_notify_close(kvs_notify *n)
{
    if (n->fd > 0)
        close(n->fd);
    n->fd = 0;
}
