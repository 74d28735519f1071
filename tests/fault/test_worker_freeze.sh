#!/usr/bin/env bash
# A worker frozen with SIGSTOP past its heartbeat timeout, under load: the server declares
# it dead and fences it (SIGKILL + waitpid: it can never write again, so a late reply or a
# late page write cannot happen), its job runs elsewhere, a new worker takes its place,
# and the clients see correct outputs only. FREEZES=N (default 4). Then the server itself
# frozen for 10 heartbeats: its workers kept heartbeating, so none may be fenced for it.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
FREEZES=${FREEZES:-4}
kv_start --set server.heartbeat_ms=100
kv_clients_start 100 200
for i in $(seq "$FREEZES"); do
    sleep 0.1
    kv_clients_alive || break
    victim=$(pgrep -f "kvworker --shm /kvarena-$KV_NAME" | shuf -n 1)
    kill -STOP "$victim"
    gone=0
    for _ in $(seq 40); do   # 3 heartbeats = 300 ms; allow 2 s
        if ! kill -0 "$victim" 2>/dev/null; then gone=1; break; fi
        sleep 0.05
    done
    kill -CONT "$victim" 2>/dev/null || true
    [ $gone -eq 1 ] || die "frozen worker $victim was not fenced within 2 s"
    echo "freeze $i: worker $victim fenced"
    kv_self_check
done
fences=$(grep -c "stopped sending heartbeats: fenced" "$KV_DIR.log")
[ "$fences" -ge "$FREEZES" ] || die "fencing missing from the server log"
kill -STOP "$KV_PID"
sleep 1
kill -CONT "$KV_PID"
sleep 0.5
kv_clients_alive || die "a client failed across the server's own stall"
[ "$(grep -c "stopped sending heartbeats: fenced" "$KV_DIR.log")" -eq "$fences" ] ||
    die "workers fenced for the server's own stall"
grep -q "server loop stalled" "$KV_DIR.log" || die "the server's stall was not logged"
echo "server stalled 1 s: no worker fenced"
kv_clients_stop
kv_check_pages idle
kv_stop
echo "test_worker_freeze: PASS"
