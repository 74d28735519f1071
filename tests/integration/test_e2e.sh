#!/usr/bin/env bash
# Server + 2 workers, one client: prefill + 64 decode steps over 4 layers, every output
# checked against the reference (fp32 KV: 1e-4, fp16 KV: 2e-3 of max |ref|), a prefix hit,
# a copy-on-write fork, consistent stats, and a clean shutdown. Page sizes 16 and 5.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
for cfg in "fp32 16" "fp16 16" "fp16 5" "bf16 8"; do
    set -- $cfg
    echo "== dtype $1, page_tokens $2"
    kv_start --set model.dtype="$1" --set model.page_tokens="$2" --set model.layers=4
    "$B/tests/e2e_client" "$KV_EP" alice 100 64
    kv_stop
done
echo "test_e2e: PASS"
