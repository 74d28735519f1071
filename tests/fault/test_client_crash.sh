#!/usr/bin/env bash
# Sequences of clients that die or go quiet (server.seq_idle_timeout_s = 3 here):
# - a client SIGKILLed holding 4 sequences (one extended but never attended; 4 is alice's
#   max_seqs: a fifth is refused with KVC_ERR_QUOTA, bob is not limited by it): an operator
#   lists them (kvctl seqs) and closes one (kvctl close); the server closes the others once
#   idle, their pages come back (in use 0, the full ones still cached and found by a
#   lookup), the stats count them;
# - clients that keep naming their sequence more slowly than the timeout in total but
#   faster at each step keep it: decode steps, or the attends of one step alone;
# - a stall of the server itself (SIGSTOP, longer than the timeout) is not idleness;
# - a client idle past the timeout gets KVC_ERR_EXPIRED, one whose sequence an operator
#   closed gets KVC_ERR_NOSEQ saying so, even after 40 other opens took its slot again
#   (arena.max_seqs = 16 here); both can close it and find their prompt cached;
# - a client killed while its job waits on stopped workers: the sequence stays open while the
#   job is in flight (longer than the timeout), gets a full period from the job's end, then
#   goes.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
kv_start --set server.seq_idle_timeout_s=3 --set tenant.alice.max_seqs=4 --set arena.max_seqs=16
stats() { "$B/kvctl" --endpoint "$KV_ADMIN" stats --json; }
seqs() { "$B/kvctl" --endpoint "$KV_ADMIN" seqs --json; }
json_top() { echo "$1" | grep -o "\"$2\":[0-9]*" | head -1 | cut -d: -f2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
# wait_open N SECONDS: until N sequences are open (dies after SECONDS)
wait_open() {
    local t0 json
    t0=$(now)
    while :; do
        json=$(stats)
        [ "$(json_top "$json" sequences)" -eq "$1" ] && return 0
        awk -v a="$t0" -v b="$(now)" -v s="$2" 'BEGIN{exit !(b-a > s)}' &&
            die "$(json_top "$json" sequences) sequences open after $2 s, expected $1"
        sleep 0.05
    done
}
# prefilled_id: the id of the one open sequence once it is prefilled (len > 0, none pending)
prefilled_id() {
    local id=
    for _ in $(seq 200); do
        id=$(grep -o '{"id":[0-9]*,"tenant":"alice","len":[1-9][0-9]*,"pending":0' <<<"$(seqs)" |
             grep -o '"id":[0-9]*' | cut -d: -f2)
        [ -n "$id" ] && break
        sleep 0.02
    done
    [ -n "$id" ] || die "no prefilled sequence showed in kvctl seqs"
    echo "$id"
}

# a dead client's sequences
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
out=$("$B/tests/idle_client" "$KV_EP" alice hold 1 2>&1) && die "alice opened a 5th sequence"
grep -q "tenant alice has its max_seqs = 4 sequences open" <<<"$out" || die "5th open: $out"
"$B/tests/idle_client" "$KV_EP" bob hold 1 >"$KV_DIR.bob" 2>&1 &
bob=$!
for _ in $(seq 200); do grep -q held "$KV_DIR.bob" && break; sleep 0.05; done
grep -q held "$KV_DIR.bob" || die "bob could not open a sequence beside alice's 4"
kill -KILL "$bob"
wait "$bob" 2>/dev/null || true
rm -f "$KV_DIR.bob"
"$B/kvctl" --endpoint "$KV_ADMIN" close \
    "$(grep -o '"id":[0-9]*,"tenant":"bob"' <<<"$(seqs)" | grep -o '[0-9]*' | head -1)"
"$B/kvctl" --endpoint "$KV_ADMIN" seqs
list=$(seqs)
[ "$(grep -o '"tenant":"alice"' <<<"$list" | wc -l)" -eq 4 ] || die "kvctl seqs: $list"
half=$(grep -o '{"id":[0-9]*,"tenant":"alice","len":0,"pending":[1-9][0-9]*' <<<"$list" |
       grep -o '"id":[0-9]*' | cut -d: -f2)
[ -n "$half" ] || die "kvctl seqs shows no sequence with pending tokens: $list"
"$B/kvctl" --endpoint "$KV_ADMIN" close "$half"
"$B/kvctl" --endpoint "$KV_ADMIN" close "$half" 2>&1 | grep -q "no such open sequence" ||
    die "a second kvctl close of the same id did not say it is gone"
[ "$(json_top "$(stats)" sequences)" -eq 3 ] || die "kvctl close left 4 sequences open"
kill -KILL "$client"
wait "$client" 2>/dev/null || true
t0=$(now)
wait_open 0 8
json=$(stats)
[ "$(json_top "$json" sequences_expired)" -eq 3 ] || die "expected 3 expired sequences: $json"
echo "the dead client's other 3 sequences ($used pages in use before) expired $(since "$t0") s after its kill"
grep -q "expired: no request named it for 3 s" "$KV_DIR.log" || die "no expiry in the server log"
kv_check_pages idle
"$B/tests/idle_client" "$KV_EP" alice lookup 4

# steady clients keep their sequences; an idle one loses it (in parallel: independent)
"$B/tests/idle_client" "$KV_EP" alice pause 800 5 alive & a=$!
"$B/tests/idle_client" "$KV_EP" alice slow 1000 & b=$!
"$B/tests/idle_client" "$KV_EP" alice pause 4000 1 expired 40 & x=$!
wait "$a" || die "a client stepping every 0.8 s lost its sequence"
wait "$b" || die "a client attending every 1 s lost its sequence"
wait "$x" || die "idle_client pause expired failed"

# the server's own stall (4 s, longer than the timeout) is not the client's idleness
"$B/tests/idle_client" "$KV_EP" alice pause 1500 2 alive & a=$!
prefilled_id >/dev/null
kill -STOP "$KV_PID"
sleep 4
kill -CONT "$KV_PID"
wait "$a" || die "a client lost its sequence to the server's own stall"
grep -q "server loop stalled" "$KV_DIR.log" || die "the server's stall was not logged"

# an operator closes the sequence of a client that sleeps less than the timeout
"$B/tests/idle_client" "$KV_EP" alice pause 1000 1 closed 40 & a=$!
"$B/kvctl" --endpoint "$KV_ADMIN" close "$(prefilled_id)"
wait "$a" || die "idle_client pause closed failed"

# a dead client's job in flight: its sequence waits for the job, then a full period
pkill -STOP -f "kvworker --shm /kvarena-$KV_NAME"
"$B/tests/idle_client" "$KV_EP" alice hold 2 >"$KV_DIR.client" 2>&1 &
client=$!
wait_open 1 5   # the first sequence's first attend waits on the stopped workers
for _ in $(seq 100); do grep -q '"busy":true' <<<"$(seqs)" && break; sleep 0.02; done
list=$(seqs)
grep -q '"idle_ms":0,"busy":true' <<<"$list" || die "kvctl seqs: no busy sequence with idle_ms 0: $list"
sleep 0.3
kill -KILL "$client"
wait "$client" 2>/dev/null || true
t0=$(now)
sleep 4.5       # the timeout and then some: the job keeps it (fenced workers come back)
[ "$(json_top "$(stats)" sequences)" -eq 1 ] ||
    die "a sequence with a job in flight (or done less than the timeout ago) was closed"
pkill -CONT -f "kvworker --shm /kvarena-$KV_NAME" || true
wait_open 0 12
echo "a dead client's sequence with a job in flight went $(since "$t0") s after the kill"
kv_wait_ready
kv_check_pages idle
kv_stop
rm -f "$KV_DIR.client"
echo "test_client_crash: PASS"
