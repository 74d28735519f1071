/* notify_sink — what systemd does with a Type=notify service's $NOTIFY_SOCKET, for the
 * tests: binds an AF_UNIX datagram socket (a path, or "@name" in the abstract namespace) and
 * appends each datagram received to OUT as one line, "MS MESSAGE": MS the milliseconds since
 * the sink started, the message's newlines written as '|'. The first line, "0 BOUND", says
 * the socket is bound. Runs until SIGTERM or SIGINT.
 *   notify_sink SOCKET OUT */
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: notify_sink SOCKET OUT\n");
        return 2;
    }
    const char *name = argv[1];
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    size_t len = strlen(name);
    if (len >= sizeof(a.sun_path)) {
        fprintf(stderr, "notify_sink: socket name too long\n");
        return 2;
    }
    memcpy(a.sun_path, name, len);
    if (name[0] == '@')
        a.sun_path[0] = '\0';
    socklen_t alen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (name[0] != '@'));
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, alen) != 0) {
        fprintf(stderr, "notify_sink: bind(%s) failed: %s\n", name, strerror(errno));
        return 1;
    }
    FILE *out = fopen(argv[2], "a");
    if (!out) {
        fprintf(stderr, "notify_sink: fopen(%s) failed: %s\n", argv[2], strerror(errno));
        return 1;
    }
    struct sigaction sa = { .sa_handler = on_signal }; /* no SA_RESTART: recv returns EINTR */
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    uint64_t t0 = now_ms();
    fprintf(out, "0 BOUND\n");
    fflush(out);
    char buf[4096];
    while (!stop) {
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fprintf(stderr, "notify_sink: recv failed: %s\n", strerror(errno));
            return 1;
        }
        for (ssize_t i = 0; i < n; i++)
            if (buf[i] == '\n')
                buf[i] = '|';
        buf[n] = '\0';
        fprintf(out, "%llu %s\n", (unsigned long long)(now_ms() - t0), buf);
        fflush(out);
    }
    fclose(out);
    if (name[0] == '/')
        unlink(name);
    return 0;
}
