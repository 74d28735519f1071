#!/usr/bin/env bash
# kvctl and kvdemo against kvmock, for each KV dtype: the demo must pass its checks, kvctl
# must print stats (table and valid JSON) and fail cleanly (exit 1) with no server.
set -eu
B=${B:-build}
dir=$(mktemp -d /tmp/kvclient-mock.XXXXXX)
mock=""
cleanup() { [ -n "$mock" ] && kill "$mock" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"; }
trap cleanup EXIT
for dtype in 0 1 2; do
    rm -f "$dir"/*.sock
    "$B/kvmock" "ipc://$dir/c.sock" "ipc://$dir/a.sock" --dtype $dtype --max-batch 64 &
    mock=$!
    sleep 0.2
    "$B/kvctl" --endpoint "ipc://$dir/a.sock" ping
    "$B/kvdemo" --endpoint "ipc://$dir/c.sock" --tenants a,b,c --conversations 4 \
        --prompt-len 100 --decode-steps 12 --check-every 3
    "$B/kvctl" --endpoint "ipc://$dir/a.sock" stats
    "$B/kvctl" --endpoint "ipc://$dir/a.sock" stats --json | python3 -m json.tool >/dev/null
    # a server that sends no latency histograms (the mock): the rest of the metrics still
    "$B/kvctl" --endpoint "ipc://$dir/a.sock" metrics | grep -q '^kvarena_pages{state="free"} '
    kill "$mock"; wait "$mock" 2>/dev/null || true; mock=""
done
rc=0; "$B/kvctl" --endpoint "ipc://$dir/a.sock" --timeout 200 ping || rc=$?
[ "$rc" = 1 ]
rc=0; "$B/kvctl" frobnicate 2>/dev/null || rc=$?
[ "$rc" = 2 ]
echo "client mock tests passed"
