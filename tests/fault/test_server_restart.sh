#!/usr/bin/env bash
# kvserver killed with SIGKILL while clients prefill and decode, then started again on the
# same arena, again and again: the clients see delays, not errors (libkvclient resends,
# the server answers what it had applied from its records), every output still matches
# the reference, open sequences continue with the same handles, committed pages are still
# prefix hits (0 lost), the old workers are gone and new ones serve. RESTARTS=N (default 8).
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
RESTARTS=${RESTARTS:-8}
kv_start
export E2E_FORKS=40 # children copying a shared tail while the faults land
kv_clients_start 300 100 300
for i in $(seq "$RESTARTS"); do
    sleep "0.$((RANDOM % 5 + 2))"
    kv_clients_alive || break
    old=$KV_PID
    kill -KILL "$old"
    wait "$old" 2>/dev/null || true
    # workers die with their parent (PR_SET_PDEATHSIG)
    for _ in $(seq 50); do pgrep -f "kvworker --shm /kvarena-$KV_NAME" >/dev/null || break; sleep 0.05; done
    pgrep -f "kvworker --shm /kvarena-$KV_NAME" >/dev/null && die "workers of the killed server still run"
    kv_start
    kv_self_check
    line=$(grep "recovered:" "$KV_DIR.log" | tail -1) || true
    [ -n "$line" ] || die "restart $i did not recover the arena"
    echo "restart $i: recovered${line#*recovered}"
done
kv_clients_stop
kv_check_pages idle
kv_stop
echo "test_server_restart: PASS"
