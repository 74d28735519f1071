#!/usr/bin/env bash
# The cold tier (server.cold_dir): every committed page is also written to disk, so a prompt
# whose pages the arena has evicted is read back, not computed again. A small arena is
# filled by other prompts until the first one's pages are all evicted; that prompt sent
# again must find every full page cached (E2E_WARM=1) and every output must equal the
# reference (the K/V read back are right, not only the tokens). The same after a crash and
# a reboot (the index rebuilt from the segment files), with clients racing for the same
# pages, a client resending while it waits, a SIGTERM while one waits, a damaged record
# (the pages before it read back, the rest computed), and within a cap (the oldest files
# deleted). A directory others may write is
# refused at start with the reason. kvctl check after each step: no page leaked.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
COLD="$KV_DIR.cold"
A=0xc01d$$

log_has() { grep -q "$1" "$KV_DIR.log" || { cat "$KV_DIR.log" >&2; die "log lacks: $1"; }; }
run() { # run STREAM WARM: one e2e_client run on prompt STREAM
    E2E_STREAM=$1 E2E_WARM=$2 "$B/tests/e2e_client" "$KV_EP" alice 300 4 >"$KV_DIR.client" 2>&1 ||
        { cat "$KV_DIR.client" >&2; die "client run on stream $1 (warm $2) failed"; }
}
stat_of() { json_num "$("$B/kvctl" --endpoint "$KV_ADMIN" stats --json)" cold "$1"; }
evictions() { "$B/kvctl" --endpoint "$KV_ADMIN" stats --json | grep -o '"evictions":[0-9]*' | cut -d: -f2; }
crash_reboot() {
    kill -KILL "$KV_PID"
    wait "$KV_PID" 2>/dev/null || true
    pkill -KILL -f "kvworker --shm /kvarena-$KV_NAME" || true
    rm -f "/dev/shm/kvarena-$KV_NAME"
}
# start / stop: kv_start and kv_stop, the cold tier's directory removed however the test ends
start() { kv_start "$@"; trap 'kv_cleanup; rm -rf "$COLD"' EXIT; }
stop() { kv_stop; trap 'rm -rf "$COLD"' EXIT; }
trap 'rm -rf "$COLD"' EXIT

# 1. prompt A, then eight others through a 96-page arena: A's pages evicted, on disk
start --set "server.cold_dir=$COLD" --set arena.pages=96
log_has "cold tier $COLD: 0 pages on disk"
run "$A" 0
for i in $(seq 1 8); do run $((A + i)) 0; done
[ "$(evictions)" -gt 0 ] || die "nothing was evicted"
[ "$(stat -c %a "$COLD")" = 700 ] || die "cold dir mode $(stat -c %a "$COLD"), not 700"
for f in "$COLD"/cold-*.seg; do
    [ "$(stat -c %a "$f")" = 600 ] || die "$f mode $(stat -c %a "$f"), not 600"
done
stored=$(stat_of stored)
[ "$stored" -gt 0 ] || die "no page written to the cold tier"

# 2. A again: every full page read back from disk (a lookup says so first), every output
#    right
run "$A" 1
grep -q "lookup before: cached [0-9]* on disk [1-9]" "$KV_DIR.client" ||
    { cat "$KV_DIR.client" >&2; die "a lookup did not count A's pages on disk"; }
restored=$(stat_of restored)
[ "$restored" -ge 18 ] || die "only $restored pages read back (A has 18 full pages)"
kv_self_check

# 3. a crash and a reboot: the index is rebuilt from the files, A read back again. This
#    server's disk reads take 1 s each (KVARENA_COLD_READ_DELAY_MS), so extends wait long
#    enough for what follows.
crash_reboot
export KVARENA_COLD_READ_DELAY_MS=1000
start --set "server.cold_dir=$COLD" --set arena.pages=96
unset KVARENA_COLD_READ_DELAY_MS
log_has "cold tier $COLD: [1-9][0-9]* pages on disk"
run "$A" 1
restored=$(stat_of restored)
[ "$restored" -ge 18 ] || die "A not read back after the reboot"

# 4. four clients at once on a prompt only the disk holds: each extend waits for its own
#    read back (the same pages read back again and again: the first committed is kept,
#    later copies dropped for it), every output right
pids=""
for i in 1 2 3 4; do
    E2E_STREAM=$((A + 1)) E2E_WARM=1 E2E_SHARED=1 "$B/tests/e2e_client" "$KV_EP" alice 300 4 \
        >"$KV_DIR.client.$i" 2>&1 &
    pids="$pids $!"
done
for p in $pids; do
    wait "$p" || { cat "$KV_DIR".client.* >&2; die "a client racing for the same pages failed"; }
done
now=$(stat_of restored)
[ "$now" -ge $((restored + 36)) ] || die "racing clients read back $((now - restored)) pages, not 2 x 18 or more"
[ "$(stat_of failed)" -eq 0 ] || die "a read back failed"
kv_self_check
rm -f "$KV_DIR".client.*

# 5. a client that resends its extend while it waits (attempts of 300 ms): answered once,
#    its pages read back, every output right
E2E_STREAM=$((A + 2)) E2E_WARM=1 "$B/tests/e2e_client" "$KV_EP" alice 300 4 300 >"$KV_DIR.client" 2>&1 ||
    { cat "$KV_DIR.client" >&2; die "a client resending while its pages are read back failed"; }
kv_self_check

# 6. SIGTERM while an extend waits for the disk: it is answered "server shutting down", the
#    server exits 0 and leaves nothing behind
E2E_STREAM=$((A + 3)) E2E_WARM=1 E2E_SHARED=1 "$B/tests/e2e_client" "$KV_EP" alice 300 4 4000 6000 \
    >"$KV_DIR.client2" 2>&1 &
waiting=$!
for _ in $(seq 100); do # until its extend waits (its sequence busy, no Attend sent yet)
    "$B/kvctl" --endpoint "$KV_ADMIN" seqs --json | grep -q '"busy":true' && break
    sleep 0.05
done
"$B/kvctl" --endpoint "$KV_ADMIN" seqs --json | grep -q '"busy":true' || die "no extend waited"
stop
wait "$waiting" && die "the client waiting for the disk completed although its server stopped"
grep -q "shutting down" "$KV_DIR.client2" ||
    { cat "$KV_DIR.client2" >&2; die "the waiting client did not report the shutdown"; }
rm -f "$KV_DIR.client2"

# 7. a byte changed in the fifth record of A's chain (the first written): its first four
#    pages are read back, the rest computed, every output right; the record is counted
seg0="$COLD/cold-0000000000.seg"
frame_len() { od -An -tu4 -j $(($1 + 4)) -N4 "$seg0" | tr -d ' '; } # a record's data_len
off=96 # the header; a record: 80 bytes, 16 token ids, then its frame
for _ in 1 2 3 4; do off=$((off + 80 + 64 + $(frame_len $off))); done
len=$(frame_len $off)
[ "$len" -gt 1000 ] && [ "$len" -lt 40000 ] || die "segment not laid out as this test reads it"
at=$((off + 80 + 64 + len / 2))
byte=$(od -An -tu1 -j "$at" -N1 "$seg0" | tr -d ' ')
printf "$(printf '\\%03o' $((byte ^ 0x55)))" | dd of="$seg0" bs=1 seek="$at" conv=notrunc status=none
start --set "server.cold_dir=$COLD" --set arena.pages=96
run "$A" any
[ "$(stat_of restored)" -eq 4 ] && [ "$(stat_of failed)" -eq 1 ] ||
    die "damaged fifth record: $(stat_of restored) pages read back, $(stat_of failed) failed (want 4, 1)"
stop

# 8. a cap of 2 MB: the oldest files go, the directory stays within it
start --set "server.cold_dir=$COLD" --set arena.pages=96 --set server.cold_mb=2
for i in $(seq 20 27); do run $((A + i)) 0; done
[ "$(stat_of dropped)" -gt 0 ] || die "nothing dropped under a 2 MB cap"
bytes=$(du -cb "$COLD"/cold-*.seg | tail -1 | cut -f1)
[ "$bytes" -le 2000000 ] || die "the cold tier holds $bytes bytes, over its 2 MB cap"
stop

# 9. a directory others may write is refused, with the reason
chmod 0777 "$COLD"
"$B/kvserver" --config deploy/kvarena.ini --name "$KV_NAME" --runtime-dir "$KV_DIR" \
    --set "server.cold_dir=$COLD" >"$KV_DIR.log" 2>&1 && die "a world-writable cold dir was used"
log_has "writable by it alone"
rm -f "$KV_DIR.log" "$KV_DIR.client"
rm -rf "$COLD"
rmdir "$KV_DIR" 2>/dev/null || true # made by the refused server
echo "test_cold: PASS"
