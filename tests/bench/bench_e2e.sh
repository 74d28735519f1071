#!/usr/bin/env bash
# make bench: the end-to-end benchmarks against a real server (2 workers, 1 layer): the
# latency of a tiny Attend, then a batched decode step of 8 sequences on one 2048-token
# prompt's pages against 8 on prompts of their own (a Llama-3-8B-shaped layer); then, with
# a cold tier and an arena of one 2048-token prompt and a page, a prompt evicted and read
# back from disk against its prefill (8 Llama-3-8B-shaped layers).
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
kv_start --set model.layers=1
"$B/tests/bench_e2e" "$KV_EP" alice "${BENCH_ITERS:-2000}"
kv_stop
kv_start --set model.layers=1 --set model.q_heads=32 --set model.kv_heads=8 \
    --set model.head_dim=128 --set model.page_tokens=16 --set arena.pages=2560 \
    --set tenant.alice.quota_pages=2560
"$B/tests/bench_e2e" "$KV_EP" alice shared 8 2048 "${BENCH_STEPS:-40}"
kv_stop
kv_start --set model.layers=8 --set model.q_heads=32 --set model.kv_heads=8 \
    --set model.head_dim=128 --set model.page_tokens=16 --set arena.pages=129 \
    --set tenant.alice.quota_pages=129 --set "server.cold_dir=$KV_DIR.cold"
"$B/tests/bench_e2e" "$KV_EP" alice cold 2048 "${BENCH_ROUNDS:-5}"
kv_stop
rm -rf "$KV_DIR.cold"
