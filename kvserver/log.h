/* log.h — leveled logging to stderr: "time level [pid] message". Log once, where a system
 * call failed, with the call, its arguments and errno; callers above return the code. */
#ifndef KVARENA_LOG_H
#define KVARENA_LOG_H

enum kvs_log_level { KVS_LOG_ERROR = 0, KVS_LOG_WARN, KVS_LOG_INFO, KVS_LOG_DEBUG };

extern int kvs_log_level;
/* Call once at start, before any thread: when stderr is systemd's journal ($JOURNAL_STREAM
 * names its device and inode), lines carry their priority as a "<N>" prefix (journalctl -p
 * filters on it) and no time of their own (the journal stamps them). */
void kvs_log_init(void);
/* Parses "error|warn|info|debug"; returns the level or -1. */
int kvs_log_parse(const char *name);
/* The name of a level ("error" .. "debug"). */
const char *kvs_log_name(int level);
void kvs_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define KVS_ERROR(...) kvs_log(KVS_LOG_ERROR, __VA_ARGS__)
#define KVS_WARN(...) kvs_log(KVS_LOG_WARN, __VA_ARGS__)
#define KVS_INFO(...) kvs_log(KVS_LOG_INFO, __VA_ARGS__)
#define KVS_DEBUG(...) do { if (kvs_log_level >= KVS_LOG_DEBUG) kvs_log(KVS_LOG_DEBUG, __VA_ARGS__); } while (0)

#endif
