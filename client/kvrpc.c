/* kvrpc.c — request/reply over a DEALER with a deadline and req_id filtering.
 *
 * Why filtering is enough to stay usable after a timeout: a DEALER has no REQ-style state
 * machine, so a call that gave up leaves nothing behind but a reply that may still arrive;
 * the next call reads it, sees a foreign req_id and drops it. Multipart messages are
 * delivered whole, so once poll says readable the whole message can be read. */
#include "client/kvrpc.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "proto/kverr.h"

int64_t kvr_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void *kvr_socket_open(void *ctx, const char *endpoint, const kvr_curve *curve)
{
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    if (!s)
        return NULL;
    int linger = 0;
    if (zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        (curve && (zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, curve->server_key, 40) != 0 ||
                   zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, curve->public_key, 40) != 0 ||
                   zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, curve->secret_key, 40) != 0)) ||
        zmq_connect(s, endpoint) != 0) {
        int e = errno;
        zmq_close(s);
        errno = e;
        return NULL;
    }
    return s;
}

uint64_t kvr_random_id(void)
{
    uint64_t x = 0;
    if (getrandom(&x, sizeof x, GRND_NONBLOCK) != (ssize_t)sizeof x)
        x = (uint64_t)kvr_now_ns() * 0x9E3779B97F4A7C15ull ^ ((uint64_t)getpid() << 32);
    /* Keep clear of 0 (proto3 default: "no id") and leave room for the counter. */
    x &= 0x7fffffffffffffffull;
    return x ? x : 1;
}

/* Waits until sock has events (ZMQ_POLLIN / ZMQ_POLLOUT) or the deadline passes. */
static int wait_for(void *sock, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - kvr_now_ns();
        if (left <= 0)
            return KV_ERR_TIMEOUT;
        zmq_pollitem_t it = { .socket = sock, .events = events };
        long ms = (long)((left + 999999) / 1000000);
        int rc = zmq_poll(&it, 1, ms);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            return KV_ERR_IO;
        }
        if (rc > 0 && (it.revents & events))
            return 0;
    }
}

static int send_request(void *sock, const Kvarena__Envelope *req, const kvr_frame *frames,
                        int n_frames, int64_t deadline)
{
    size_t len = kvarena__envelope__get_packed_size(req);
    zmq_msg_t m;
    if (zmq_msg_init_size(&m, len) != 0)
        return KV_ERR_NOMEM;
    kvarena__envelope__pack(req, zmq_msg_data(&m));
    int more = n_frames > 0 ? ZMQ_SNDMORE : 0;
    for (;;) {
        int rc = wait_for(sock, ZMQ_POLLOUT, deadline);
        if (rc != 0) {
            zmq_msg_close(&m);
            return rc;
        }
        if (zmq_msg_send(&m, sock, ZMQ_DONTWAIT | more) >= 0)
            break;
        if (errno != EAGAIN && errno != EINTR) {
            int e = errno;
            zmq_msg_close(&m);
            errno = e;
            return KV_ERR_IO;
        }
    }
    /* The header is queued: the rest of a multipart message is accepted as a whole. */
    for (int i = 0; i < n_frames; i++) {
        int flags = i + 1 < n_frames ? ZMQ_SNDMORE : 0;
        while (zmq_send(sock, frames[i].data, frames[i].size, flags) < 0)
            if (errno != EINTR)
                return KV_ERR_IO;
    }
    return 0;
}

int kvr_call(void *sock, const Kvarena__Envelope *req, const kvr_frame *frames,
             int n_frames, int timeout_ms, kvr_reply *rep)
{
    memset(rep, 0, sizeof *rep);
    int64_t deadline = kvr_now_ns() + (int64_t)timeout_ms * 1000000;
    int rc = send_request(sock, req, frames, n_frames, deadline);
    if (rc != 0)
        return rc;
    for (;;) {
        rc = wait_for(sock, ZMQ_POLLIN, deadline);
        if (rc != 0)
            return rc;
        rc = kvp_recv(sock, &rep->msg, 0, ZMQ_DONTWAIT);
        if (rc == KV_ERR_IO && (errno == EAGAIN || errno == EINTR)) {
            kvp_msg_close(&rep->msg);
            continue;
        }
        Kvarena__Envelope *env = rc == KV_ERR_IO ? NULL : kvp_decode(&rep->msg.env);
        if (!env) {
            /* Cannot tell whose reply it was: report it rather than wait for nothing. */
            kvp_msg_close(&rep->msg);
            return rc == KV_ERR_IO ? rc : KV_ERR_PROTO;
        }
        if (env->req_id != req->req_id) {   /* a late reply to an abandoned call */
            kvarena__envelope__free_unpacked(env, NULL);
            kvp_msg_close(&rep->msg);
            continue;
        }
        rep->env = env;
        if (rc != 0)                        /* ours, but with too many frames */
            kvr_reply_clear(rep);
        return rc;
    }
}

void kvr_reply_clear(kvr_reply *rep)
{
    if (rep->env)
        kvarena__envelope__free_unpacked(rep->env, NULL);
    rep->env = NULL;
    kvp_msg_close(&rep->msg);
}
