#include "kverr.h"

const char *kv_strerror(int code)
{
    static const char *const msg[KV_ERR_COUNT] = {
        "success",
        "invalid argument",
        "out of KV memory",
        "tenant quota exceeded",
        "no such sequence",
        "sequence busy",
        "invalid sequence state",
        "protocol error",
        "timed out",
        "worker failed, retry",
        "not authorized",
        "I/O error",
        "server shutting down",
        "request too large",
        "internal error",
        "sequence expired",
        "client key revoked",
    };
    if (code > 0 || code <= -KV_ERR_COUNT)
        return "unknown error";
    return msg[-code];
}
