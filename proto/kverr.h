/* kverr.h — the error codes shared by every kvarena process and the wire.
 *
 * One convention everywhere: functions return int, 0 on success, a negative KV_ERR_* code on
 * failure; a failing call changes nothing. The same numbers travel in Envelope.status, and
 * libkvclient exposes them as KVC_ERR_* (client/kvclient.h asserts they agree). */
#ifndef KVARENA_KVERR_H
#define KVARENA_KVERR_H

enum kv_err {
    KV_OK = 0,
    KV_ERR_INVAL = -1,      /* malformed or out-of-range request */
    KV_ERR_NOMEM = -2,      /* out of KV memory: nothing evictable */
    KV_ERR_QUOTA = -3,      /* the tenant's page quota is used up by pinned pages */
    KV_ERR_NOSEQ = -4,      /* unknown, closed or foreign sequence id */
    KV_ERR_BUSY = -5,       /* the sequence has a job in flight */
    KV_ERR_STATE = -6,      /* request not valid in the sequence's state */
    KV_ERR_PROTO = -7,      /* undecodable message or frames that disagree with it */
    KV_ERR_TIMEOUT = -8,    /* no reply within the call's timeout */
    KV_ERR_WORKER = -9,     /* the worker running the job died; safe to retry */
    KV_ERR_AUTH = -10,      /* tenant unknown or not allowed */
    KV_ERR_IO = -11,        /* system call failed (see the log) */
    KV_ERR_SHUTDOWN = -12,  /* the server is shutting down */
    KV_ERR_TOOBIG = -13,    /* batch or message larger than the configured maximum */
    KV_ERR_INTERNAL = -14,  /* a bug: please report with the server log */
    KV_ERR_EXPIRED = -15,   /* the server closed the sequence: idle past seq_idle_timeout_s */
    KV_ERR_REVOKED = -16,   /* the client key is no longer listed (a config reload removed it) */
};
#define KV_ERR_COUNT 17

/* Returns a static string describing code (never NULL). */
const char *kv_strerror(int code);

#endif
