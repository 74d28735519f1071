/* wire.h — framing of kvarena messages on ZeroMQ sockets (see kvarena.proto).
 *
 * A message is [route frame if read from a ROUTER] [Envelope] [tensor frames...]. kvp_msg
 * holds the frames as zmq_msg_t so tensors can be handed on with zmq_msg_move, never
 * copied. Every receive is bounded: at most KVP_MAX_FRAMES frames are kept; a longer
 * message is drained and reported as KV_ERR_PROTO. */
#ifndef KVARENA_WIRE_H
#define KVARENA_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "proto/kvarena.pb-c.h"

#define KVP_VERSION 1u
#define KVP_MAX_FRAMES 8
#define KVP_MAX_ROUTE 255

typedef struct kvp_msg {
    zmq_msg_t route;              /* routing id (ROUTER sockets only) */
    int has_route;                /* route is initialised */
    zmq_msg_t env;                /* the Envelope frame */
    int has_env;                  /* env is initialised */
    zmq_msg_t tensor[KVP_MAX_FRAMES]; /* raw frames after the envelope */
    int n_tensors;                /* initialised tensor frames */
    int n_frames;                 /* frames the message had in all (may exceed what is kept) */
} kvp_msg;

/* Receives one whole message (blocking unless flags has ZMQ_DONTWAIT). router: the first
 * frame is a routing id. Returns 0, KV_ERR_PROTO (frame count wrong: m still holds the route
 * when there was one, so the sender can be answered), or KV_ERR_IO with errno set (EAGAIN
 * when nothing was there). On any return kvp_msg_close(m) must be called. */
int kvp_recv(void *sock, kvp_msg *m, int router, int flags);
/* Closes every initialised frame of m. */
void kvp_msg_close(kvp_msg *m);

/* Decodes the envelope frame; returns NULL if it is not a valid Envelope. The caller frees
 * the result with kvarena__envelope__free_unpacked(e, NULL). */
Kvarena__Envelope *kvp_decode(const zmq_msg_t *frame);

/* Sends [route] [env] [tensors...]. route may be NULL (DEALER side). The tensors are moved
 * (left empty) whether or not the send succeeds. Returns 0 or KV_ERR_IO (errno set). */
int kvp_send(void *sock, zmq_msg_t *route, const Kvarena__Envelope *env,
             zmq_msg_t *tensors, int n_tensors);

/* Sends a reply with only a status: [route] Envelope{req_id, status, error}. */
int kvp_send_status(void *sock, zmq_msg_t *route, uint64_t req_id, int status, const char *error);

#endif
