/* curve_client — authenticated mode from the outside: a tenant is whoever its CURVE key
 * says, whatever a Hello claims, and one tenant cannot touch another's sequences.
 * Usage: curve_client ENDPOINT SERVER_PUB ALICE_PUB ALICE_SEC BOB_PUB BOB_SEC */
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "client/kvclient.h"

static int failures;
#define CHECK(cond, ...) do { if (!(cond)) { failures++; fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
    fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); } else printf("ok: " __VA_ARGS__), putchar('\n'); } while (0)

static int connect_as(const char *ep, const char *srv, const char *pub, const char *sec,
                      const char *claim, kvc_client **c)
{
    kvc_opts o = { .tenant = claim, .name = "curve_client", .timeout_ms = 1500,
                   .attempt_ms = 1500, .server_key = srv, .public_key = pub, .secret_key = sec };
    return kvc_connect(ep, &o, c);
}

int main(int argc, char **argv)
{
    if (argc != 7) {
        fprintf(stderr, "usage: curve_client ENDPOINT SERVER_PUB ALICE_PUB ALICE_SEC BOB_PUB BOB_SEC\n");
        return 2;
    }
    const char *ep = argv[1], *srv = argv[2];
    kvc_client *a = NULL, *b = NULL, *x = NULL;
    int rc = connect_as(ep, srv, argv[3], argv[4], NULL, &a);
    CHECK(rc == 0 && !strcmp(kvc_tenant(a), "alice"), "alice's key connects as alice (%s)", kvc_strerror(rc));
    rc = connect_as(ep, srv, argv[5], argv[6], "alice", &x);
    CHECK(rc == KVC_ERR_AUTH, "bob's key claiming tenant alice is refused (%s: %s)", kvc_strerror(rc),
          kvc_last_error(NULL));
    rc = connect_as(ep, srv, argv[5], argv[6], NULL, &b);
    CHECK(rc == 0 && !strcmp(kvc_tenant(b), "bob"), "bob's key connects as bob (%s)", kvc_strerror(rc));
    char pub[41], sec[41];
    zmq_curve_keypair(pub, sec);
    rc = connect_as(ep, srv, pub, sec, "alice", &x);
    CHECK(rc != 0 && x == NULL, "an unknown key gets no answer at all (%s)", kvc_strerror(rc));
    char wrong_srv[41], wsec[41];
    zmq_curve_keypair(wrong_srv, wsec);
    rc = connect_as(ep, wrong_srv, argv[3], argv[4], NULL, &x);
    CHECK(rc != 0, "a client with the wrong server key cannot talk to the server (%s)", kvc_strerror(rc));
    if (!a || !b)
        return 1;
    uint64_t sa = 0;
    uint32_t toks[40];
    for (uint32_t i = 0; i < 40; i++)
        toks[i] = 100 + i;
    CHECK(kvc_seq_open(a, &sa) == 0 && kvc_seq_extend(a, sa, toks, 40, NULL) == 0, "alice opens and extends a sequence");
    CHECK(kvc_seq_extend(b, sa, toks, 1, NULL) == KVC_ERR_NOSEQ, "bob cannot extend alice's sequence");
    CHECK(kvc_seq_close(b, sa) == KVC_ERR_NOSEQ, "bob cannot close alice's sequence");
    uint64_t child;
    CHECK(kvc_seq_fork(b, sa, &child) == KVC_ERR_NOSEQ, "bob cannot fork alice's sequence");
    CHECK(kvc_seq_close(a, sa) == 0, "alice closes her sequence");
    kvc_close(&a);
    kvc_close(&b);
    printf("%s\n", failures ? "FAILED" : "all checks passed");
    return failures ? 1 : 0;
}
