#!/usr/bin/env bash
# Server + 2 workers, one client: prefill + 64 decode steps over 4 layers, every output
# checked against the reference (fp32 KV: 1e-4, fp16 KV: 2e-3 of max |ref|), a prefix hit,
# a copy-on-write fork, consistent stats, and a clean shutdown. Page sizes 16, 5 and 8;
# the model's attention options (RoPE both ways, sliding window, soft-cap, ALiBi) on top;
# then the amx ISA where the CPU has it.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
for cfg in "fp32 16" "fp16 16" "fp16 5" "bf16 8" \
           "fp32 16 half 10000 40 30" "fp16 8 interleaved 500000 0 0" "fp32 5 none 0 7 0" \
           "fp16 16 none 0 0 0 8" "fp32 5 half 10000 40 30 8"; do
    set -- $cfg
    echo "== dtype $1, page_tokens $2, rope ${3:-none} theta ${4:-} window ${5:-0}" \
         "softcap ${6:-0} alibi_max_bias ${7:-0}"
    kv_start --set model.dtype="$1" --set model.page_tokens="$2" --set model.layers=4 \
             --set model.rope="${3:-none}" --set model.rope_theta="${4:-10000}" \
             --set model.window="${5:-0}" --set model.softcap="${6:-0}" \
             --set model.alibi_max_bias="${7:-0}"
    "$B/tests/e2e_client" "$KV_EP" alice 100 64
    kv_stop
done
# where the CPU has AMX: workers told KVARENA_ISA=amx run prefill on AMX tiles (each output
# then checked at 2e-2 of max |ref|: kvs_tolerance)
if grep -qw amx_bf16 /proc/cpuinfo; then
    echo "== KVARENA_ISA=amx"
    export KVARENA_ISA=amx
    kv_start --set model.dtype=fp16 --set model.layers=4
    "$B/tests/e2e_client" "$KV_EP" alice 100 64
    json=$("$B/kvctl" --endpoint "$KV_ADMIN" stats --json)
    [ "$(grep -o '"isa":"amx"' <<<"$json" | wc -l)" -eq 2 ] || die "workers not on amx: $json"
    kv_stop
    unset KVARENA_ISA
fi
echo "test_e2e: PASS"
