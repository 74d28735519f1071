#!/usr/bin/env bash
# Workers killed with SIGKILL at random moments while a client prefills and decodes: every
# output still matches the reference (the server re-runs a dead worker's job or answers a
# retriable error), dead workers are restarted, and the page accounting adds up after.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
KILLS=${KILLS:-100}
kv_start --set server.heartbeat_ms=200
"$B/tests/e2e_client" "$KV_EP" alice 200 800 > "$KV_DIR.client" 2>&1 &
client=$!
killed=0
while [ $killed -lt "$KILLS" ] && kill -0 $client 2>/dev/null; do
    pids=$(pgrep -f "kvworker --shm /kvarena-$KV_NAME" || true)
    if [ -n "$pids" ]; then
        victim=$(echo "$pids" | shuf -n 1)
        kill -KILL "$victim" 2>/dev/null && killed=$((killed + 1))
    fi
    sleep "0.0$((RANDOM % 9 + 1))"
done
wait $client || { cat "$KV_DIR.client"; die "client failed while workers were being killed"; }
cat "$KV_DIR.client"
rm -f "$KV_DIR.client"
[ "$killed" -ge "$KILLS" ] || die "only $killed of $KILLS kills happened: the client finished too early"
echo "killed $killed workers"
# all workers come back
for _ in $(seq 100); do
    [ "$("$B/kvctl" --endpoint "$KV_ADMIN" stats --json | grep -o '"state": *"ready"' | wc -l)" -eq 2 ] && break
    sleep 0.1
done
"$B/kvctl" --endpoint "$KV_ADMIN" stats
kv_check_pages idle
kv_stop
echo "test_worker_kill: PASS"
