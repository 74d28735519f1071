/* wire.c — bounded multipart receive and send of kvarena messages (see wire.h). */
#include "wire.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "kverr.h"

static int more_frames(void *sock)
{
    int more = 0;
    size_t len = sizeof(more);
    zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &len);
    return more;
}

/* Reads and drops the rest of a message. */
static void drain(void *sock, kvp_msg *m)
{
    zmq_msg_t f;
    while (more_frames(sock)) {
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, sock, 0) < 0) {
            zmq_msg_close(&f);
            return;
        }
        m->n_frames++;
        zmq_msg_close(&f);
    }
}

int kvp_recv(void *sock, kvp_msg *m, int router, int flags)
{
    memset(m, 0, sizeof(*m));
    if (router) {
        zmq_msg_init(&m->route);
        m->has_route = 1;
        if (zmq_msg_recv(&m->route, sock, flags) < 0)
            return KV_ERR_IO;
        m->n_frames = 1;
        if (!more_frames(sock))
            return KV_ERR_PROTO;
        flags = 0;
    }
    zmq_msg_init(&m->env);
    m->has_env = 1;
    if (zmq_msg_recv(&m->env, sock, flags) < 0)
        return router ? KV_ERR_PROTO : KV_ERR_IO; /* a router has a route to answer */
    m->n_frames++;
    while (more_frames(sock)) {
        if (m->n_tensors == KVP_MAX_FRAMES) {
            drain(sock, m);
            return KV_ERR_PROTO;
        }
        zmq_msg_t *f = &m->tensor[m->n_tensors++];
        zmq_msg_init(f);
        m->n_frames++;
        if (zmq_msg_recv(f, sock, 0) < 0)
            return KV_ERR_PROTO;
    }
    return 0;
}

void kvp_msg_close(kvp_msg *m)
{
    if (m->has_route)
        zmq_msg_close(&m->route);
    if (m->has_env)
        zmq_msg_close(&m->env);
    for (int i = 0; i < m->n_tensors; i++)
        zmq_msg_close(&m->tensor[i]);
    memset(m, 0, sizeof(*m));
}

Kvarena__Envelope *kvp_decode(const zmq_msg_t *frame)
{
    zmq_msg_t *f = (zmq_msg_t *)frame; /* zmq's accessors are not const-correct */
    return kvarena__envelope__unpack(NULL, zmq_msg_size(f), zmq_msg_data(f));
}

static int send_frame(void *sock, zmq_msg_t *f, int more)
{
    return zmq_msg_send(f, sock, more ? ZMQ_SNDMORE : 0) < 0 ? KV_ERR_IO : 0;
}

int kvp_send(void *sock, zmq_msg_t *route, const Kvarena__Envelope *env,
             zmq_msg_t *tensors, int n_tensors)
{
    int rc = 0;
    size_t len = kvarena__envelope__get_packed_size(env);
    zmq_msg_t head;
    if (zmq_msg_init_size(&head, len) != 0) {
        rc = KV_ERR_IO;
        goto out;
    }
    kvarena__envelope__pack(env, zmq_msg_data(&head));
    if (route) {
        zmq_msg_t r;
        zmq_msg_init(&r);
        zmq_msg_copy(&r, route);
        rc = send_frame(sock, &r, 1);
        zmq_msg_close(&r);
    }
    if (rc == 0)
        rc = send_frame(sock, &head, n_tensors > 0);
    zmq_msg_close(&head);
    for (int i = 0; i < n_tensors && rc == 0; i++)
        rc = send_frame(sock, &tensors[i], i + 1 < n_tensors);
out:
    for (int i = 0; i < n_tensors; i++) { /* moved: leave them empty either way */
        zmq_msg_close(&tensors[i]);
        zmq_msg_init(&tensors[i]);
    }
    return rc;
}

int kvp_send_status(void *sock, zmq_msg_t *route, uint64_t req_id, int status, const char *error)
{
    Kvarena__Envelope e = KVARENA__ENVELOPE__INIT;
    e.req_id = req_id;
    e.status = status;
    e.error = (char *)(error ? error : "");
    return kvp_send(sock, route, &e, NULL, 0);
}
