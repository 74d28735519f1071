#!/usr/bin/env bash
# Workers killed with SIGKILL at random moments while clients prefill and decode: every
# output still matches the reference (the server re-runs a dead worker's job or answers a
# retriable error), dead workers are restarted, and the page accounting adds up after.
# KILLS=N (default 100; `make soak` runs thousands).
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
KILLS=${KILLS:-100}
kv_start --set server.heartbeat_ms=200
export E2E_FORKS=40 # children copying a shared tail while the faults land
kv_clients_start 100 200
killed=0
while [ $killed -lt "$KILLS" ]; do
    kv_clients_alive || break
    victim=$(pgrep -f "kvworker --shm /kvarena-$KV_NAME" | shuf -n 1 || true)
    [ -n "$victim" ] && kill -KILL "$victim" 2>/dev/null && killed=$((killed + 1))
    sleep "0.0$((RANDOM % 9 + 1))"
    kv_self_check   # ref counts, free + in use + cached == total, after every kill
done
kv_clients_stop
[ "$killed" -ge "$KILLS" ] || die "only $killed of $KILLS kills happened"
echo "killed $killed workers"
kv_wait_ready   # every worker comes back
"$B/kvctl" --endpoint "$KV_ADMIN" stats
kv_check_pages idle
kv_stop
echo "test_worker_kill: PASS"
