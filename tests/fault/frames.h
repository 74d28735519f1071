/* frames — the raw side of the bad-input test (tests/fault/bad_input.c): DEALER sockets on a
 * running kvserver's client, admin and worker endpoints, messages built frame by frame (a
 * well-formed Envelope or any bytes at all, then tensor frames of any size), and sending
 * them, receiving and checking the replies. Nothing here goes through libkvclient.
 *
 * A failed check is reported on stderr ("FAIL file:line: ...") and counted in fr_failures;
 * the test exits non-zero if any failed. A failure of the harness itself (a socket that will
 * not connect, a send that fails, a request fr_call expects an answer to that goes
 * unanswered) is no result at all: it prints why and exits 1.
 *
 * Single-threaded; fr_init before anything else, fr_term after every socket is closed. */
#ifndef KVARENA_TESTS_FRAMES_H
#define KVARENA_TESTS_FRAMES_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "client/kvclient.h"
#include "proto/kvarena.pb-c.h"

#define FR_MAX_PARTS 16               /* frames a message built here may have */
#define FR_ZEROS_MAX (2u << 20)       /* the longest frame fr_zeros appends: 2 MiB */
#define FR_NO_REPLY 1                 /* fr_expect's "want" for a message nobody answers */

extern int fr_failures;               /* checks failed so far */
#define FR_CHECK(cond, ...) do { if (!(cond)) { fr_failures++; \
    fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); \
    fputc('\n', stderr); } } while (0)

/* Creates the ZeroMQ context fr_open uses and the zero bytes of fr_zeros. model (borrowed,
 * must outlive fr_term) gives the tensor sizes of fr_qkv. */
void fr_init(const kvc_model *model);
/* Terminates the context (every socket from fr_open must be closed) and frees the zeros. */
void fr_term(void);

/* A DEALER connected to ep (linger 0, 2 s send timeout), with routing id rid when rid is not
 * NULL. The caller closes it with zmq_close. */
void *fr_open(const char *ep, const void *rid, size_t rid_len);

/* One message being built: n frames, p[i] of len[i] bytes. p[i] is borrowed from the caller
 * and must stay valid until the message is sent, except the packed envelopes, which f owns
 * (owned[i]) until fr_reset. `frames f = { 0 }` is an empty message; a case may change n or
 * len[] after building to cut the message short. */
typedef struct frames {
    int n;                            /* frames so far */
    const void *p[FR_MAX_PARTS];      /* each frame's bytes */
    size_t len[FR_MAX_PARTS];         /* each frame's size */
    uint8_t *owned[FR_MAX_PARTS];     /* packed envelopes (else NULL), freed by fr_reset */
} frames;

/* Frees what f owns and empties it for the next message. */
void fr_reset(frames *f);

/* Appends len bytes at p (borrowed) as the next frame; exits 1 past FR_MAX_PARTS. */
void fr_bytes(frames *f, const void *p, size_t len);
/* Appends len zero bytes (len <= FR_ZEROS_MAX) as the next frame. */
void fr_zeros(frames *f, size_t len);
/* Appends Q, K and V frames for t tokens of the model, dq, dk and dv bytes added to each
 * size (negative to make them short). */
void fr_qkv(frames *f, uint64_t t, long dq, long dk, long dv);

/* Envelope builders: each packs one Envelope as f's next frame and returns its req_id, a
 * fresh one (counting up from 1000) unless the builder takes it. Whatever they are given
 * (messages, strings, arrays) is borrowed only until they return. */

/* body msg, a message of the type the body case names (checked: exits 1 if it is not). */
uint64_t fr_msg(frames *f, Kvarena__Envelope__BodyCase body, const void *msg);
/* The same with the given req_id. */
uint64_t fr_msg_req(frames *f, uint64_t req_id, Kvarena__Envelope__BodyCase body, const void *msg);
/* An empty message of the type body names (a Hello has version KVP_VERSION). */
uint64_t fr_body(frames *f, Kvarena__Envelope__BodyCase body);
/* A Hello; client_name NULL leaves the field out. */
uint64_t fr_hello(frames *f, uint32_t version, const char *tenant, const char *client_name);
/* An Extend of seq by n tokens. */
uint64_t fr_extend(frames *f, uint64_t seq, const uint32_t *tokens, size_t n);
uint64_t fr_fork(frames *f, uint64_t seq);
uint64_t fr_seq_close(frames *f, uint64_t seq);
/* An Attend of n_items items (seqs[i], n_new[i]); Q, K, V are for the caller to append. */
uint64_t fr_attend(frames *f, uint32_t layer, const uint64_t *seqs, const uint32_t *n_new,
                   size_t n_items, float scale);
/* An Attend of one item (seq, n_new) whose layer is -1 as a 10-byte varint (protobuf-c
 * keeps the low 32 bits of a uint32 field sent as int64 -1). */
uint64_t fr_attend_layer_minus1(frames *f, uint64_t seq, uint32_t n_new);
/* A worker's Ready (1 thread) without the spawn-time token. */
uint64_t fr_ready(frames *f, uint32_t index, int32_t pid);
/* A Job with req_id job_id, naming page 0xffffffff (a forged page id). */
uint64_t fr_forged_job(frames *f, uint64_t job_id);

/* Sends f on s as one message and empties it (fr_reset). */
void fr_send(void *s, frames *f);
/* One message on s within timeout_ms: its envelope (the caller frees it with
 * kvarena__envelope__free_unpacked), and when sizes / n_frames are not NULL the sizes of its
 * tensor frames (sizes holds KVP_MAX_FRAMES) and how many there are. NULL if nothing came
 * or the envelope does not decode. */
Kvarena__Envelope *fr_recv(void *s, int timeout_ms, size_t *sizes, int *n_frames);

/* Sends f (which fr_send empties) and checks the reply: status want, or want2 when want2 is
 * not 0, with req_id echoed and a reason with every error; for want FR_NO_REPLY, checks that
 * nothing comes within 300 ms. what names the case in failures. */
void fr_expect(const char *what, void *s, frames *f, uint64_t req_id, int want, int want2);

/* A whole request on s: sends f (an envelope with req_id, then any tensor frames; emptied)
 * and returns the reply (the caller frees it; sizes and n_frames as for fr_recv); exits 1
 * if no reply to req_id comes within 5 s. */
Kvarena__Envelope *fr_call(void *s, frames *f, uint64_t req_id, size_t *sizes, int *n_frames);
/* fr_call for the reply's status alone. */
int fr_call_status(void *s, frames *f, uint64_t req_id);

/* Whole requests through fr_call (so each exits 1 when unanswered): */
/* A DEALER on the client endpoint ep that has said Hello as tenant; exits 1 if refused. */
void *fr_open_hello(const char *ep, const char *tenant);
/* A new sequence on s (a socket past Hello); its id. Exits 1 if refused. */
uint64_t fr_call_seq_open(void *s);
/* Closes seq on s; the reply's status. */
int fr_call_seq_close(void *s, uint64_t seq);
/* Extends seq on s by n tokens (kvs_token(1234, i)); the reply's status. */
int fr_call_extend(void *s, uint64_t seq, uint32_t n);
/* The workers, from a Stats on the admin endpoint ep: fills pids[] and restarts[] for up to
 * max of them; returns how many it filled and, in *up, how many of those are ready or busy. */
int fr_call_worker_states(const char *ep, int *pids, uint32_t *restarts, int max, int *up);

/* Sends a JobDone for every job id 1..last on s (req_id = job_id), each with an O frame of
 * one row of the model, and reads nothing. */
void fr_send_job_dones(void *s, uint64_t last);

#endif
