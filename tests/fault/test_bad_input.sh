#!/usr/bin/env bash
# Bad input on every socket (client, admin, worker) of a real server with 2 workers:
# each bad message gets a typed error or a disconnect, changes nothing, and a well-behaved
# client interleaved with them keeps getting exact outputs (tests/fault/bad_input.c says
# which cases). max_msg_bytes is 1M so a 2 MiB frame is over ZMQ_MAXMSGSIZE. NaN/Inf in
# Q/K/V are passed through by design: the server never reads tensor data.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
kv_start --set server.max_msg_bytes=1M
"$B/tests/bad_input" "$KV_DIR" "$KV_PID"
# the server is still whole: both workers ready (never restarted), pages add up
ready=$(kv_ready_workers)
[ "$ready" -eq 2 ] || die "$ready workers ready after the bad input, expected 2"
kv_check_pages idle
grep -E "^[0-9:.]+ error " "$KV_DIR.log" && die "the server logged errors"
kv_stop
echo "test_bad_input: PASS"
