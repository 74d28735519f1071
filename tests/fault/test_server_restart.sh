#!/usr/bin/env bash
# kvserver killed with SIGKILL while a client prefills and decodes, then started again on
# the same arena, several times: the client sees delays, not errors (libkvclient resends,
# the server answers what it had applied from its records), every output still matches the
# reference, open sequences continue with the same handles, committed pages are still
# prefix hits (0 lost), the old workers are gone and new ones serve.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
RESTARTS=${RESTARTS:-8}
kv_start
"$B/tests/e2e_client" "$KV_EP" alice 300 600 300 > "$KV_DIR.client" 2>&1 &
client=$!
for i in $(seq "$RESTARTS"); do
    sleep "0.$((RANDOM % 5 + 2))"
    kill -0 $client 2>/dev/null || break
    old=$KV_PID
    kill -KILL "$old"
    wait "$old" 2>/dev/null || true
    # workers die with their parent (PR_SET_PDEATHSIG)
    for _ in $(seq 50); do pgrep -f "kvworker --shm /kvarena-$KV_NAME" >/dev/null || break; sleep 0.05; done
    pgrep -f "kvworker --shm /kvarena-$KV_NAME" >/dev/null && die "workers of the killed server still run"
    kv_start
    grep -q "recovered:" "$KV_DIR.log" || die "restart $i did not recover the arena"
    grep "recovered:" "$KV_DIR.log" | tail -1
    echo "restart $i done"
done
wait $client || { cat "$KV_DIR.client"; die "client failed across server restarts"; }
cat "$KV_DIR.client"
rm -f "$KV_DIR.client"
kv_check_pages idle
kv_stop
echo "test_server_restart: PASS"
