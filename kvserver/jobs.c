/* jobs.c — the job queue: per-tenant FIFOs served by weighted round robin, dispatch to
 * ready workers, and completion (unpin, advance the sequences, answer the client).
 *
 * A job pins every page of its items when it is created (handlers.c) and marks their
 * sequences busy; kvs_job_finish is the one place that undoes both, whatever the outcome. */
#include "server.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proto/kverr.h"

void kvs_job_free(kvs_job *job)
{
    zmq_msg_close(&job->route);
    for (int i = 0; i < 3; i++)
        zmq_msg_close(&job->tensor[i]);
    for (uint32_t i = 0; i < job->n_items; i++)
        free(job->items[i].pages);
    free(job->items);
    free(job);
}

void kvs_job_enqueue(kvs_server *s, kvs_job *job, int at_front)
{
    uint32_t t = job->tenant;
    if (at_front) {
        job->next = s->queue_head[t];
        s->queue_head[t] = job;
        if (!s->queue_tail[t])
            s->queue_tail[t] = job;
    } else {
        job->next = NULL;
        if (s->queue_tail[t])
            s->queue_tail[t]->next = job;
        else
            s->queue_head[t] = job;
        s->queue_tail[t] = job;
    }
    s->jobs_queued++;
}

/* Next job by weighted round robin: a tenant gets up to `weight` jobs in a row. */
static kvs_job *dequeue(kvs_server *s)
{
    uint32_t n = s->cfg.n_tenants;
    for (uint32_t k = 0; k <= n; k++) {
        uint32_t t = s->rr_tenant;
        if (s->queue_head[t] && s->rr_served < s->cfg.tenant[t].weight) {
            kvs_job *job = s->queue_head[t];
            s->queue_head[t] = job->next;
            if (!s->queue_head[t])
                s->queue_tail[t] = NULL;
            job->next = NULL;
            s->rr_served++;
            s->jobs_queued--;
            return job;
        }
        s->rr_tenant = (t + 1) % n;
        s->rr_served = 0;
    }
    return NULL;
}

void kvs_jobs_dispatch(kvs_server *s)
{
    /* start after the worker that got the last job, so load spreads over all workers */
    for (uint32_t k = 0; k < s->cfg.workers && s->jobs_queued; k++) {
        uint32_t i = (s->rr_worker + 1 + k) % s->cfg.workers;
        kvs_worker *w = &s->workers[i];
        if (w->state != KVS_W_READY)
            continue;
        kvs_job *job = dequeue(s);
        if (!job)
            return;
        if (kvs_worker_send_job(s, w, job) != 0) {
            kvs_job_enqueue(s, job, 1);
            kvs_worker_fence(s, w, "could not be sent a job: fenced");
        } else {
            s->rr_worker = i;
        }
    }
}

void kvs_job_finish(kvs_server *s, kvs_job *job, int status, const char *error,
                    zmq_msg_t *out, int n_out)
{
    for (uint32_t i = 0; i < job->n_items; i++) {
        kvs_job_item *it = &job->items[i];
        kvs_pages_pin(&s->pages, it->pages, it->n_pages, 0);
        kva_seq *rec = kvs_seq_find(&s->seqs, it->seq, job->tenant);
        assert(rec); /* a busy sequence cannot be closed */
        kvs_seq *sq = kvs_seq_priv(&s->seqs, rec);
        if (sq->busy_job == job->id)
            sq->busy_job = 0;
        kvs_seq_touch(&s->seqs, rec, s->clock_ms); /* idle from now, not from the request */
        if (status == 0 && !it->replay) {
            rec->last_req = job->req_id; /* first: a retry then finds the layer applied */
            kvs_seq_layer_done(&s->seqs, rec);
        }
    }
    Kvarena__Envelope env = KVARENA__ENVELOPE__INIT;
    Kvarena__AttendReply ar = KVARENA__ATTEND_REPLY__INIT;
    env.req_id = job->req_id;
    env.status = status;
    env.error = (char *)(error ? error : (status ? kv_strerror(status) : ""));
    if (status == 0) {
        ar.tokens = job->tokens;
        env.body_case = KVARENA__ENVELOPE__BODY_ATTEND_REPLY;
        env.attend_reply = &ar;
    }
    if (kvp_send(s->client, &job->route, &env, out, status == 0 ? n_out : 0) != 0)
        KVS_DEBUG("reply to a client that went away: dropped");
    kvs_job_free(job);
}
