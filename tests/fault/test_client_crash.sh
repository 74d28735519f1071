#!/usr/bin/env bash
# A client killed with SIGKILL while it holds sequences (one of them half-way through a
# request): an operator lists them (kvctl seqs) and closes one (kvctl close); after
# server.seq_idle_timeout_s the server closes the others, their pages come back (in use 0,
# the full ones still cached and found by a lookup), the stats count them. A client that
# keeps using its sequence more slowly than the timeout in total but faster at each step
# keeps it; one that sleeps past the timeout gets KVC_ERR_EXPIRED, one whose sequence an
# operator closed gets KVC_ERR_NOSEQ saying so; both can close it and find their prompt
# cached in a new sequence.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
kv_start --set server.seq_idle_timeout_s=1
stats() { "$B/kvctl" --endpoint "$KV_ADMIN" stats --json; }
json_top() { echo "$1" | grep -o "\"$2\":[0-9]*" | head -1 | cut -d: -f2; }

"$B/tests/idle_client" "$KV_EP" alice hold 4 >"$KV_DIR.client" 2>&1 &
client=$!
for _ in $(seq 200); do
    grep -q held "$KV_DIR.client" && break
    kill -0 "$client" 2>/dev/null || { cat "$KV_DIR.client" >&2; die "idle_client hold failed"; }
    sleep 0.05
done
grep -q held "$KV_DIR.client" || die "idle_client did not get its sequences in 10 s"
json=$(stats)
[ "$(json_top "$json" sequences)" -eq 4 ] || die "expected 4 open sequences: $json"
used=$(json_num "$json" pages in_use)
[ "$used" -gt 0 ] || die "the held sequences pin no page"
"$B/kvctl" --endpoint "$KV_ADMIN" seqs
seqs=$("$B/kvctl" --endpoint "$KV_ADMIN" seqs --json)
[ "$(grep -o '"tenant":"alice"' <<<"$seqs" | wc -l)" -eq 4 ] || die "kvctl seqs: $seqs"
half=$(grep -o '{"id":[0-9]*,"tenant":"alice","len":0,"pending":[1-9][0-9]*' <<<"$seqs" |
       grep -o '"id":[0-9]*' | cut -d: -f2)
[ -n "$half" ] || die "kvctl seqs shows no sequence with pending tokens: $seqs"
"$B/kvctl" --endpoint "$KV_ADMIN" close "$half"
"$B/kvctl" --endpoint "$KV_ADMIN" close "$half" 2>&1 | grep -q "no such open sequence" ||
    die "a second kvctl close of the same id did not say it is gone"
[ "$(json_top "$(stats)" sequences)" -eq 3 ] || die "kvctl close left 4 sequences open"
kill -KILL "$client"
wait "$client" 2>/dev/null || true
t0=$(date +%s.%N)
for _ in $(seq 100); do
    json=$(stats)
    [ "$(json_top "$json" sequences)" -eq 0 ] && break
    sleep 0.05
done
t=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.2f", b-a}')
[ "$(json_top "$json" sequences)" -eq 0 ] || die "the dead client's sequences are still open after ${t} s: $json"
[ "$(json_top "$json" sequences_expired)" -eq 3 ] || die "expected 3 expired sequences: $json"
echo "the dead client's other 3 sequences ($used pages in use before) expired ${t} s after its kill"
grep -q "expired: no request named it for 1 s" "$KV_DIR.log" || die "no expiry in the server log"
kv_check_pages idle
"$B/tests/idle_client" "$KV_EP" alice lookup 4

"$B/tests/idle_client" "$KV_EP" alice pause 300 8 alive
"$B/tests/idle_client" "$KV_EP" alice pause 2500 1 expired
# an operator closes the sequence of a client that sleeps less than the timeout
"$B/tests/idle_client" "$KV_EP" alice pause 800 1 closed &
client=$!
for _ in $(seq 100); do
    seqs=$("$B/kvctl" --endpoint "$KV_ADMIN" seqs --json)
    id=$(grep -o '{"id":[0-9]*,"tenant":"alice","len":[1-9][0-9]*,"pending":0' <<<"$seqs" |
         grep -o '"id":[0-9]*' | cut -d: -f2)   # once prefilled
    [ -n "$id" ] && break
    sleep 0.02
done
[ -n "$id" ] || die "the pausing client's sequence never showed in kvctl seqs"
"$B/kvctl" --endpoint "$KV_ADMIN" close "$id"
wait "$client" || die "idle_client pause closed failed"
kv_check_pages idle
kv_stop
rm -f "$KV_DIR.client"
echo "test_client_crash: PASS"
