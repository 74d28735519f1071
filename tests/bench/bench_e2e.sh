#!/usr/bin/env bash
# make bench: the end-to-end latency benchmark against a real server (2 workers, 1 layer).
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
kv_start --set model.layers=1
"$B/tests/bench_e2e" "$KV_EP" alice "${BENCH_ITERS:-2000}"
kv_stop
