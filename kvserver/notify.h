/* notify.h — the systemd service protocol (sd_notify(3)) for a Type=notify unit, spoken
 * without libsystemd: datagrams of "KEY=value" lines to the socket named by $NOTIFY_SOCKET.
 *
 * kvserver says READY=1 once it serves (sockets bound, arena recovered, snapshot restored,
 * a worker ready), so `systemctl start` returns when requests can be answered; WATCHDOG=1
 * from its poll loop (WatchdogSec=): a loop that hangs is killed and restarted by systemd;
 * STOPPING=1 and STATUS= lines for `systemctl status`. Without $NOTIFY_SOCKET every call is
 * a no-op. The variables are taken out of the environment at open, so the workers (spawned
 * with the server's environment) do not speak for the service. */
#ifndef KVARENA_NOTIFY_H
#define KVARENA_NOTIFY_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

typedef struct kvs_notify {
    int fd;                     /* datagram socket, or 0: not run by systemd */
    struct sockaddr_un addr;    /* $NOTIFY_SOCKET: a path, or '@' for the abstract namespace */
    socklen_t addr_len;
    uint64_t watchdog_ms;       /* $WATCHDOG_USEC / 1000 for this process, 0 = no watchdog */
    uint64_t pinged_ms;         /* kvs_now_ms of the last WATCHDOG=1 */
    int ready;                  /* READY=1 sent */
    int stopping;               /* STOPPING=1 sent: no more pings */
    int warned;                 /* a failed send was logged at warn level */
} kvs_notify;

/* Reads and unsets $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (call it before any
 * thread starts: unsetenv). A watchdog is kept only if $WATCHDOG_PID is absent or ours. An
 * unusable $NOTIFY_SOCKET is logged and left unused; the server runs on either way. */
void kvs_notify_open(kvs_notify *n);
/* Sends msg ("KEY=value" lines). A failed send is logged, at warn level the first time
 * (systemd not hearing READY=1 would kill the server at TimeoutStartSec), then at debug;
 * it is no reason to stop serving. */
void kvs_notify_send(kvs_notify *n, const char *msg);
void kvs_notify_sendf(kvs_notify *n, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* WATCHDOG=1 if a quarter of the watchdog interval has passed since the last one. The
 * caller's loop must come round at least that often (kvs_notify_poll_ms). */
void kvs_notify_ping(kvs_notify *n, uint64_t now_ms);
/* The longest poll timeout that keeps the watchdog fed: tick_ms, or a quarter of the
 * watchdog interval if that is shorter. */
long kvs_notify_poll_ms(const kvs_notify *n, long tick_ms);
/* STOPPING=1 with status: from here on no pings (systemd re-arms its watchdog on any ping,
 * even while the service stops), and the watchdog interval set to an hour, so one that a
 * late ping re-armed cannot abort a long stop (the snapshot written at stop). */
void kvs_notify_stopping(kvs_notify *n, const char *status);
/* EXTEND_TIMEOUT_USEC: the current start or stop may take 30 s longer from now, plus the
 * time to move `bytes` (a snapshot read or written) at a slow 50 MB/s. */
void kvs_notify_extend(kvs_notify *n, uint64_t bytes);
void kvs_notify_close(kvs_notify *n);

#endif
