/* restrict_af — runs a command as systemd's RestrictAddressFamilies= runs a service:
 * socket(2) with an address family not listed fails with EAFNOSUPPORT (a seccomp filter,
 * as systemd installs). test_install.sh runs the installed server under its unit's list.
 *   restrict_af "AF_UNIX AF_INET ..." COMMAND [ARGS...]     (x86-64) */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MAX_FAMILIES 16

static int family(const char *name, size_t len)
{
    static const struct { const char *name; int af; } known[] = {
        { "AF_UNIX", AF_UNIX }, { "AF_LOCAL", AF_LOCAL }, { "AF_INET", AF_INET },
        { "AF_INET6", AF_INET6 }, { "AF_NETLINK", AF_NETLINK }, { "AF_PACKET", AF_PACKET },
    };
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++)
        if (strlen(known[i].name) == len && !memcmp(known[i].name, name, len))
            return known[i].af;
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: restrict_af \"AF_UNIX AF_INET ...\" COMMAND [ARGS...]\n");
        return 2;
    }
    int af[MAX_FAMILIES], n = 0;
    for (const char *p = argv[1] + strspn(argv[1], " ,"); *p; p += strspn(p, " ,")) {
        size_t len = strcspn(p, " ,");
        if (n == MAX_FAMILIES || (af[n++] = family(p, len)) < 0) {
            fprintf(stderr, "restrict_af: unknown or too many families in '%s'\n", argv[1]);
            return 2;
        }
        p += len;
    }
    /* 0 arch, 1 not x86-64: allow, 2 nr, 3 not socket: allow, 4 args[0], 5.. listed:
     * allow, then EAFNOSUPPORT, then allow; jumps are relative to the next instruction */
    struct sock_filter f[8 + MAX_FAMILIES];
    int k = 0, allow = 5 + n + 1;
#define LOAD(field) (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, \
                                                 offsetof(struct seccomp_data, field))
#define JEQ(x, t, e) (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (x), (t), (e))
#define RET(x) (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, (x))
    f[k++] = LOAD(arch);
    f[k] = JEQ(AUDIT_ARCH_X86_64, 0, allow - k - 1), k++;
    f[k++] = LOAD(nr);
    f[k] = JEQ(__NR_socket, 0, allow - k - 1), k++;
    f[k++] = LOAD(args[0]);
    for (int i = 0; i < n; i++, k++)
        f[k] = JEQ((unsigned)af[i], allow - k - 1, 0);
    f[k++] = RET(SECCOMP_RET_ERRNO | EAFNOSUPPORT);
    f[k++] = RET(SECCOMP_RET_ALLOW);
    struct sock_fprog prog = { (unsigned short)k, f };
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        fprintf(stderr, "restrict_af: installing the seccomp filter failed: %s\n", strerror(errno));
        return 1;
    }
    execvp(argv[2], argv + 2);
    fprintf(stderr, "restrict_af: exec %s failed: %s\n", argv[2], strerror(errno));
    return 127;
}
