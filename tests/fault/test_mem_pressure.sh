#!/usr/bin/env bash
# A small arena under 10x more distinct prefixes than it holds, for a fixed time, then
# completely pinned: evictions, a bounded server, out-of-memory errors that change nothing.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
kv_start --set arena.pages=96 --set tenant.alice.quota_pages=0
rss0=$(awk '/VmRSS/ {print $2}' /proc/$KV_PID/status)
"$B/tests/mem_pressure" "$KV_EP" alice "${SECONDS_LOAD:-5}"
rss1=$(awk '/VmRSS/ {print $2}' /proc/$KV_PID/status)
echo "server RSS ${rss0} kB -> ${rss1} kB"
[ "$rss1" -lt $((rss0 + 20000)) ] || die "server memory grew by $((rss1 - rss0)) kB"
kv_check_pages idle
kv_stop
echo "test_mem_pressure: PASS"
