#!/usr/bin/env bash
# SIGTERM while a client waits on a job, and no server comes back: the server answers the
# job "server shutting down", exits 0 and leaves nothing behind; the client keeps trying
# until its timeout (a restarted server would have answered) and then reports that the
# server shut down, not a bare timeout.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
kv_start
# tries of 4 s: the reply comes when the server has stopped its workers (2 s for stopped ones)
"$B/tests/e2e_client" "$KV_EP" alice 200 100000 4000 6000 >"$KV_DIR.client" 2>&1 &
client=$!
sleep 0.5
pkill -STOP -f "kvworker --shm /kvarena-$KV_NAME"   # the client's next job stays in flight
sleep 0.5
kill -0 "$client" 2>/dev/null || { cat "$KV_DIR.client" >&2; die "the client ended early"; }
kv_stop
rc=0
wait "$client" || rc=$?
[ "$rc" -ne 0 ] || die "the client completed although its server stopped"
grep -q "shutting down" "$KV_DIR.client" ||
    { cat "$KV_DIR.client" >&2; die "the client did not report the shutdown"; }
grep -h "^FAIL" "$KV_DIR.client" | head -1
rm -f "$KV_DIR.client"
echo "test_shutdown: PASS"
