#!/usr/bin/env bash
# A worker frozen with SIGSTOP past its heartbeat timeout, under load: the server declares
# it dead and fences it (SIGKILL + waitpid: it can never write again, so a late reply or a
# late page write cannot happen), its job runs elsewhere, a new worker takes its place,
# and the client sees correct outputs only.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
FREEZES=${FREEZES:-4}
kv_start --set server.heartbeat_ms=100
"$B/tests/e2e_client" "$KV_EP" alice 100 700 > "$KV_DIR.client" 2>&1 &
client=$!
for i in $(seq "$FREEZES"); do
    sleep 0.1
    victim=$(pgrep -f "kvworker --shm /kvarena-$KV_NAME" | shuf -n 1)
    kill -STOP "$victim"
    gone=0
    for _ in $(seq 40); do   # 3 heartbeats = 300 ms; allow 2 s
        if ! kill -0 "$victim" 2>/dev/null; then gone=1; break; fi
        sleep 0.05
    done
    kill -CONT "$victim" 2>/dev/null || true
    [ $gone -eq 1 ] || die "frozen worker $victim was not fenced within 2 s"
    grep -q "stopped sending heartbeats: fenced" "$KV_DIR.log" || die "no fencing in the server log"
    echo "freeze $i: worker $victim fenced"
done
kill -0 $client 2>/dev/null || die "the client finished before the freezes were done"
wait $client || { cat "$KV_DIR.client"; die "client failed while workers froze"; }
tail -3 "$KV_DIR.client"
rm -f "$KV_DIR.client"
kv_check_pages idle
kv_stop
echo "test_worker_freeze: PASS"
