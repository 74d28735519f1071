#include "log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int kvs_log_level = KVS_LOG_INFO;
static const char *const names[] = { "error", "warn", "info", "debug" };
const char *kvs_log_name(int level)
{
    return level >= 0 && level < 4 ? names[level] : "?";
}

static int to_journal; /* stderr is the journal's stream: syslog priorities, no time */

void kvs_log_init(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    to_journal = js && sscanf(js, "%llu:%llu", &dev, &ino) == 2 && fstat(STDERR_FILENO, &st) == 0
                 && (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

int kvs_log_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

void kvs_log(int level, const char *fmt, ...)
{
    if (level > kvs_log_level)
        return;
    char line[1024];
    int n;
    if (to_journal) { /* sd-daemon.h: <3> error, <4> warning, <6> info, <7> debug */
        static const char prio[] = { '3', '4', '6', '7' };
        n = snprintf(line, sizeof(line), "<%c>%s [%d] ", prio[level], names[level], (int)getpid());
    } else {
        struct timeval tv;
        gettimeofday(&tv, NULL);
        struct tm tm;
        localtime_r(&tv.tv_sec, &tm);
        n = snprintf(line, sizeof(line), "%02d:%02d:%02d.%03d %-5s [%d] ", tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), names[level], (int)getpid());
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = strlen(line);
    line[len] = '\n';
    /* one write per line so lines of the server and its workers do not interleave */
    ssize_t rc = write(STDERR_FILENO, line, len + 1);
    (void)rc;
}
