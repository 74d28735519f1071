/* test_kvclient — libkvclient against kvmock (a fake server started here, $B/kvmock):
 * argument checks, error replies and their detail, the request flow, timeouts and
 * filtering of late replies. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "client/kvclient.h"

static char dir[64], ep[128], admin[128];

/* Starts kvmock with extra arguments; returns its pid. */
static pid_t mock_start(const char *late)
{
    const char *b = getenv("B");
    char path[256];
    snprintf(path, sizeof path, "%s/kvmock", b && *b ? b : "build");
    snprintf(dir, sizeof dir, "/tmp/kvclient-test-%d", (int)getpid());
    mkdir(dir, 0700);
    snprintf(ep, sizeof ep, "ipc://%s/c.sock", dir);
    snprintf(admin, sizeof admin, "ipc://%s/a.sock", dir);
    pid_t pid = fork();
    if (pid == 0) {
        execl(path, path, ep, admin, "--late", late, (char *)NULL);
        _exit(127);
    }
    usleep(200000);
    return pid;
}

static void mock_stop(pid_t pid)
{
    kill(pid, SIGTERM);
    waitpid(pid, NULL, 0);
    char p[128];
    snprintf(p, sizeof p, "%s/c.sock", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/a.sock", dir);
    unlink(p);
    rmdir(dir);
}

static void test_connect_errors(void **state)
{
    (void)state;
    kvc_client *c = NULL;
    assert_int_equal(kvc_connect(NULL, NULL, &c), KVC_ERR_INVAL);
    assert_int_equal(kvc_connect("ipc:///tmp/x", NULL, NULL), KVC_ERR_INVAL);
    assert_int_equal(kvc_connect("nonsense://x", NULL, &c), KVC_ERR_INVAL);
    assert_non_null(strstr(kvc_last_error(NULL), "nonsense://x"));
    kvc_opts o = { .timeout_ms = 150 };
    assert_int_equal(kvc_connect("ipc:///tmp/kvclient-test-nobody/c.sock", &o, &c),
                     KVC_ERR_TIMEOUT);
    assert_null(c);
    kvc_close(&c);   /* NULL-safe */
    kvc_close(NULL);
    assert_string_equal(kvc_strerror(KVC_ERR_NOSEQ), "no such sequence");
}

static void test_flow(void **state)
{
    (void)state;
    pid_t pid = mock_start("0");
    kvc_client *c = NULL;
    kvc_opts o = { .tenant = "t1", .name = "test", .timeout_ms = 2000 };
    assert_int_equal(kvc_connect(ep, &o, &c), 0);
    const kvc_model *m = kvc_model_info(c);
    assert_int_equal(m->layers, 2);
    assert_string_equal(kvc_tenant(c), "t1");
    uint64_t s;
    assert_int_equal(kvc_seq_open(c, &s), 0);

    uint32_t tok[40];
    for (uint32_t i = 0; i < 40; i++)
        tok[i] = i;
    uint32_t cached = 99;
    assert_int_equal(kvc_seq_extend(c, s, tok, 0, &cached), KVC_ERR_INVAL);
    assert_int_equal(kvc_seq_extend(c, s, tok, 40, &cached), 0);
    assert_int_equal(cached, 0);
    assert_int_equal(kvc_seq_extend(c, s, tok, 1, &cached), KVC_ERR_STATE);
    assert_true(kvc_last_error(c)[0] != '\0');

    size_t qn = 40 * m->q_heads * m->head_dim, kn = 40 * m->kv_heads * m->head_dim;
    float *q = calloc(qn, 4), *k = calloc(kn, 4), *v = calloc(kn, 4), *out = calloc(qn, 4);
    float lse[40 * 4];
    kvc_item it[2] = { { s, 40 }, { s, 1 } };
    assert_int_equal(kvc_attend(c, 2, it, 1, q, k, v, 0, out, NULL), KVC_ERR_INVAL);
    assert_int_equal(kvc_attend(c, 0, it, 2, q, k, v, 0, out, NULL), KVC_ERR_INVAL);
    assert_int_equal(kvc_attend(c, 0, it, 1, q, k, v, -1.0f, out, NULL), KVC_ERR_INVAL);
    kvc_item big = { s, 100 };
    assert_int_equal(kvc_attend(c, 0, &big, 1, q, k, v, 0, out, NULL), KVC_ERR_TOOBIG);
    assert_int_equal(kvc_attend(c, 1, it, 1, q, k, v, 0, out, NULL), KVC_ERR_STATE);
    for (uint32_t l = 0; l < m->layers; l++)
        assert_int_equal(kvc_attend(c, l, it, 1, q, k, v, 0, out, lse), 0);
    /* Zero Q: uniform softmax over zero V. */
    assert_true(out[0] == 0.0f);

    uint32_t hit = 0;
    assert_int_equal(kvc_lookup(c, tok, 40, &hit), 0);
    assert_int_equal(hit, 32);
    uint32_t disk = 7;
    assert_int_equal(kvc_lookup_tiers(c, tok, 40, &hit, &disk), 0);
    assert_int_equal(hit, 32);
    assert_int_equal(disk, 0); /* the mock has no cold tier */
    assert_int_equal(kvc_lookup_tiers(c, tok, 40, &hit, NULL), KVC_ERR_INVAL);
    uint64_t child;
    assert_int_equal(kvc_seq_fork(c, s, &child), 0);
    assert_true(child != s);
    kvc_extend_info info;
    uint64_t s2;
    assert_int_equal(kvc_seq_open(c, &s2), 0);
    assert_int_equal(kvc_seq_extend_ex(c, s2, tok, 33, &info), 0);
    assert_int_equal(info.cached, 32);
    assert_int_equal(info.len, 32);
    assert_int_equal(info.pending, 1);

    kvc_stats st;
    assert_int_equal(kvc_stats_get(c, &st), 0);
    assert_int_equal(st.sequences, 3);
    assert_int_equal(kvc_seq_close(c, 424242), KVC_ERR_NOSEQ);
    assert_string_equal(kvc_last_error(c), "no such sequence");
    assert_int_equal(kvc_seq_close(c, child), 0);
    assert_string_equal(kvc_last_error(c), "");
    assert_int_equal(kvc_set_timeout(c, 0), KVC_ERR_INVAL);
    free(q); free(k); free(v); free(out);
    kvc_close(&c);
    assert_null(c);
    mock_stop(pid);
}

static void test_late_replies(void **state)
{
    (void)state;
    pid_t pid = mock_start("3");          /* the 3rd request's reply comes late */
    kvc_client *c = NULL;
    kvc_opts o = { .tenant = "t1", .timeout_ms = 300 };
    assert_int_equal(kvc_connect(ep, &o, &c), 0);              /* request 1 */
    uint64_t a = 0, b = 0, x = 0;
    assert_int_equal(kvc_seq_open(c, &a), 0);                  /* 2 */
    assert_int_equal(kvc_seq_open(c, &x), KVC_ERR_TIMEOUT);    /* 3: held back */
    assert_int_equal(x, 0);                                    /* untouched */
    assert_int_equal(kvc_seq_open(c, &b), 0);                  /* 4: after the late 3 */
    assert_int_equal(b, a + 2);  /* its own reply, not the late one (a + 1) */
    kvc_close(&c);
    mock_stop(pid);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_flow),
        cmocka_unit_test(test_late_replies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
