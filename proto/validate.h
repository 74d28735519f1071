/* validate.h — stateless checks of decoded messages against the arena geometry and the
 * server's limits: everything that can be checked without the server's state (sequence
 * ids, pending counts are checked by the server after this). Pure functions: they read
 * their arguments only, so they are also the fuzz targets' oracles. */
#ifndef KVARENA_VALIDATE_H
#define KVARENA_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "proto/kvarena.pb-c.h"

typedef struct kvp_limits {
    uint32_t layers, q_heads, kv_heads, head_dim; /* geometry of the arena */
    uint32_t max_batch_tokens;   /* sum of n_new in one Attend; also bounds its items */
    uint32_t max_extend_tokens;  /* tokens in one Extend or Lookup */
} kvp_limits;

/* A request on the client socket: its body is a client request, sizes within limits, and
 * the tensor frames (sizes in frames[0..n_frames)) agree with it: exactly Q, K, V for an
 * Attend, none otherwise. On success *tokens (may be NULL) is the Attend's sum of n_new.
 * Returns 0 or KV_ERR_PROTO / KV_ERR_INVAL / KV_ERR_TOOBIG with a reason in why. */
int kvp_check_request(const Kvarena__Envelope *e, const kvp_limits *lim, const size_t *frames,
                      int n_frames, uint64_t *tokens, char *why, size_t why_len);

/* A Job as the worker receives it, against the arena's geometry (n_pages pages of
 * page_tokens tokens): items, page tables and frames Q, K, V consistent, each item's
 * n_kv + n_new below 2^32 - 1 (the kernels' positions are uint32), and a copy-on-write
 * (cow_rows > 0) of the n_kv % page_tokens tokens before the new ones, from a page in range
 * other than its destination, in an item that writes.
 * On success *tokens is the sum of n_new. 0 or KV_ERR_INVAL / KV_ERR_PROTO. */
int kvp_check_job(const Kvarena__Job *j, const kvp_limits *lim, uint32_t n_pages,
                  uint32_t page_tokens, const size_t *frames, int n_frames, uint64_t *tokens,
                  char *why, size_t why_len);

#endif
