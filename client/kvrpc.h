/* kvrpc.h — one request/reply round trip over a ZeroMQ DEALER (internal to client/).
 *
 * Shared by libkvclient and kvctl so the rules of the wire live in one place:
 *   - a request is one multipart message [Envelope][raw frames...]; the reply has the same
 *     shape and echoes the request's req_id;
 *   - replies whose req_id differs (late answers to calls that timed out) are dropped;
 *   - every call ends by a deadline: the whole call, send and receive, waits at most
 *     timeout_ms.
 * Framing is proto/wire.h's (kvp_recv), the same code the server uses.
 * Errors are KV_ERR_* codes (proto/kverr.h). These names are not part of libkvclient's
 * ABI: they are hidden in the shared library. */
#ifndef KVARENA_KVRPC_H
#define KVARENA_KVRPC_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "proto/kvarena.pb-c.h"
#include "proto/wire.h"

#define KVR_API __attribute__((visibility("hidden")))

typedef struct kvr_frame {
    const void *data;      /* borrowed for the call */
    size_t size;           /* bytes */
} kvr_frame;

typedef struct kvr_reply {
    Kvarena__Envelope *env;  /* unpacked header; owned, freed by kvr_reply_clear */
    kvp_msg msg;             /* the frames: msg.tensor[0 .. msg.n_tensors) */
} kvr_reply;

/* CURVE keys of a client (Z85, 40 characters each), for a server in authenticated mode. */
typedef struct kvr_curve {
    char server_key[41];   /* the server's public key */
    char public_key[41];   /* this client's key pair */
    char secret_key[41];
} kvr_curve;

/* A DEALER socket connected to endpoint, ZMQ_LINGER 0, a CURVE client if curve is not NULL.
 * NULL on failure with errno set (EINVAL / EPROTONOSUPPORT for a malformed endpoint). */
KVR_API void *kvr_socket_open(void *ctx, const char *endpoint, const kvr_curve *curve);

/* A random nonzero 64-bit number (getrandom; time and pid if that fails): the first
 * request id of a connection, so ids of two connections or two runs do not collide. */
KVR_API uint64_t kvr_random_id(void);

/* Sends req (its req_id already set) followed by frames[0 .. n_frames), then waits for the
 * reply with the same req_id. On success *rep holds the reply (status not interpreted) and
 * the caller calls kvr_reply_clear(rep). Returns 0, KV_ERR_TIMEOUT, KV_ERR_IO (errno set),
 * KV_ERR_NOMEM or KV_ERR_PROTO (undecodable reply, or more than KVP_MAX_FRAMES frames); on
 * error *rep is empty (kvr_reply_clear is still safe). */
KVR_API int kvr_call(void *sock, const Kvarena__Envelope *req, const kvr_frame *frames,
                     int n_frames, int timeout_ms, kvr_reply *rep);

/* Frees what kvr_call put in rep and leaves it empty. */
KVR_API void kvr_reply_clear(kvr_reply *rep);

/* Monotonic clock in nanoseconds. */
KVR_API int64_t kvr_now_ns(void);

#endif
