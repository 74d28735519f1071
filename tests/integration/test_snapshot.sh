#!/usr/bin/env bash
# The prefix cache survives a full stop (a reboot empties /dev/shm): a server with
# server.snapshot writes its committed pages at a clean shutdown; the next one, on a fresh
# arena, restores them, and a client sending the same prompt finds its full pages cached,
# every output still equal to the reference (the restored K/V are right, not only the
# tokens). The file is the server user's alone (mode 600). A corrupted snapshot restores the
# pages before the damage and the server serves on; one made for another model shape is
# refused with the reason; either is moved aside (PATH.rejected), not overwritten at stop.
# kvctl snapshot writes one while serving, which a server crashed and rebooted restores.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
SNAP="$KV_DIR.snap"
STREAM=0x5eed$$

# kv_term: SIGTERM, exit 0, the log kept for the checks below
kv_term() {
    kv_self_check
    kill -TERM "$KV_PID"
    wait "$KV_PID" || die "kvserver exited with $?"
}
log_has() { grep -q "$1" "$KV_DIR.log" || { cat "$KV_DIR.log" >&2; die "log lacks: $1"; }; }
client() { "$B/tests/e2e_client" "$KV_EP" alice 300 20 >"$KV_DIR.client" 2>&1 ||
           { cat "$KV_DIR.client" >&2; die "client run failed ($*)"; }; }
# crash_reboot: the server and its workers SIGKILLed (no snapshot at stop), then what a
# reboot does to /dev/shm
crash_reboot() {
    kill -KILL "$KV_PID"
    wait "$KV_PID" 2>/dev/null || true
    pkill -KILL -f "kvworker --shm /kvarena-$KV_NAME" || true
    rm -f "/dev/shm/kvarena-$KV_NAME"
}

# 1. a run, then a clean stop writes the snapshot
kv_start --set "server.snapshot=$SNAP"
log_has "snapshot $SNAP: none yet"
E2E_STREAM=$STREAM client "first run"
kv_term
log_has "snapshot $SNAP: [1-9][0-9]* committed pages written"
[ -s "$SNAP" ] || die "no snapshot file"
[ "$(stat -c %a "$SNAP")" = 600 ] || die "snapshot mode $(stat -c %a "$SNAP"), not 600"
grep "committed pages written" "$KV_DIR.log"

# 2. a fresh arena restores it: the same prompt is a prefix hit, every output checked
kv_start --set "server.snapshot=$SNAP"
log_has "snapshot $SNAP: restored [1-9][0-9]* committed pages"
grep "restored" "$KV_DIR.log"
E2E_STREAM=$STREAM E2E_WARM=1 client "after the restore"
kv_check_pages idle
kv_term

# 3. damage in the middle of the file: the pages before it come back, the server serves
size=$(stat -c %s "$SNAP")
printf '\377\377\377\377' | dd of="$SNAP" bs=1 seek=$((size / 2)) conv=notrunc status=none
damaged=$(sha256sum <"$SNAP")
kv_start --set "server.snapshot=$SNAP"
log_has "snapshot: $SNAP: record [0-9]*.*; [1-9][0-9]* pages restored before that; the file is kept as .rejected"
grep "record" "$KV_DIR.log"
[ "$(sha256sum <"$SNAP.rejected")" = "$damaged" ] || die "the damaged file was not kept"
client "after a damaged snapshot"
kv_check_pages idle
kv_term

# 4. a snapshot of another model shape is not restored, says why, and is kept
good=$(stat -c %s "$SNAP")
kv_start --set "server.snapshot=$SNAP" --set model.head_dim=32
log_has "does not fit this arena: it holds another model shape"
client "another model shape"
kv_stop
[ "$(stat -c %s "$SNAP.rejected")" = "$good" ] || die "the other model's snapshot was not kept"
rm -f "$SNAP.rejected" "$SNAP"

# 5. on demand while serving (kvctl snapshot, under load), then a crash (SIGKILL: no
#    snapshot at stop) and a reboot (the segment gone): the next server restores what kvctl
#    wrote. Without server.snapshot, kvctl snapshot says what to set.
kv_start
"$B/kvctl" --endpoint "$KV_ADMIN" snapshot 2>"$KV_DIR.snapout" && die "snapshot without a file"
grep -q "set server.snapshot" "$KV_DIR.snapout" || { cat "$KV_DIR.snapout" >&2; die "no reason"; }
kv_stop
STREAM=0x5eee$$
kv_start --set "server.snapshot=$SNAP"
E2E_STREAM=$STREAM client "before kvctl snapshot"
kv_clients_start 200 10
"$B/kvctl" --endpoint "$KV_ADMIN" snapshot >"$KV_DIR.snapout" || die "kvctl snapshot failed"
cat "$KV_DIR.snapout"
grep -q "snapshot $SNAP: [1-9][0-9]* committed pages" "$KV_DIR.snapout" || die "kvctl snapshot output"
"$B/kvctl" --endpoint "$KV_ADMIN" stats | grep "^snapshot .*last written beside serving .* s ago, [1-9]" ||
    die "kvctl stats does not show the snapshot"
"$B/kvctl" --endpoint "$KV_ADMIN" stats --json | grep -q '"snapshot":{"path":"[^"]*","age_ms":[1-9][0-9]*,"pages":[1-9]' ||
    die "kvctl stats --json does not show the snapshot"
kv_clients_stop
log_has "snapshot $SNAP: [1-9][0-9]* committed pages written .* beside serving"
kv_self_check
crash_reboot
kv_start --set "server.snapshot=$SNAP"
log_has "snapshot $SNAP: restored [1-9][0-9]* committed pages"
E2E_STREAM=$STREAM E2E_WARM=1 client "after a crash and a reboot"
kv_check_pages idle
kv_stop

# 5b. the same every server.snapshot_every_s, with no operator: a crash after one, and the
#     reboot restores it
rm -f "$SNAP"
STREAM=0x5eef$$
kv_start --set "server.snapshot=$SNAP" --set server.snapshot_every_s=1
E2E_STREAM=$STREAM client "before a periodic snapshot"
written() { grep -c "committed pages written .* beside serving" "$KV_DIR.log" || true; }
n0=$(written) # the second one from now was planned after the client's last page
for _ in $(seq 100); do
    [ "$(written)" -ge $((n0 + 2)) ] && break
    sleep 0.05
done
log_has "being written beside serving (every server.snapshot_every_s)"
log_has "snapshot $SNAP: [1-9][0-9]* committed pages written .* beside serving"
crash_reboot
kv_start --set "server.snapshot=$SNAP"
log_has "snapshot $SNAP: restored [1-9][0-9]* committed pages"
E2E_STREAM=$STREAM E2E_WARM=1 client "after a periodic snapshot, a crash and a reboot"
kv_stop

# 5c. a clean stop while a paced snapshot is written: it is given up (its operator told),
#     the stop does not wait for it, and the snapshot at stop is written
rm -f "$SNAP"
kv_start --set "server.snapshot=$SNAP" --set server.snapshot_mb_s=1
client "before a stop during a snapshot"
"$B/kvctl" --endpoint "$KV_ADMIN" snapshot 2>"$KV_DIR.snapout" &
ASKED=$!
for _ in $(seq 100); do grep -q "being written beside serving" "$KV_DIR.log" && break; sleep 0.02; done
kv_term
wait "$ASKED" && die "kvctl snapshot succeeded though the server stopped during it"
grep -q "the server is stopping" "$KV_DIR.snapout" || { cat "$KV_DIR.snapout" >&2; die "kvctl not told"; }
log_has "snapshot $SNAP: [1-9][0-9]* committed pages written (.*ratio"
[ -s "$SNAP" ] || die "no snapshot at stop"
ls "$SNAP".tmp.* 2>/dev/null && die "a temporary file was left"

# 6. snapshots paced to 1 MB/s (server.snapshot_mb_s) while a small arena evicts under
#    load, so pages are reused while one is written; right after one that left pages out, a
#    crash and a reboot; the same prompts are then sent again, every output checked against
#    the reference: what was restored is the K/V of its tokens (a page reused meanwhile is
#    left out, never written half old, half new)
rm -f "$SNAP" "$KV_DIR.runs"
kv_start --set "server.snapshot=$SNAP" --set arena.pages=96 --set server.snapshot_mb_s=1
( for i in $(seq 1000); do
      s=$((0x7000 + i % 8))
      if E2E_STREAM=$s "$B/tests/e2e_client" "$KV_EP" alice 200 4 >"$KV_DIR.load" 2>&1; then
          echo "ok $s" >>"$KV_DIR.runs"
      else
          echo "failed $s" >>"$KV_DIR.runs"
          exit 1
      fi
  done ) &
LOAD=$!
stop_load() {
    kill -KILL "$LOAD" 2>/dev/null || true
    pkill -KILL -f "e2e_client $KV_EP" 2>/dev/null || true
    wait "$LOAD" 2>/dev/null || true
}
trap 'stop_load; kv_cleanup' EXIT
for _ in $(seq 600); do # the arena full of cached pages first: then every run evicts
    [ "$(cat "$KV_DIR.runs" 2>/dev/null | wc -l)" -ge 3 ] && break
    sleep 0.05
done
left=0 snaps=0
while [ "$left" -eq 0 ] && [ "$snaps" -lt 20 ]; do
    "$B/kvctl" --endpoint "$KV_ADMIN" snapshot >"$KV_DIR.snapout" || die "kvctl snapshot failed"
    left=$(grep -o "; [0-9]* left out" "$KV_DIR.snapout" | awk '{ print $2 }')
    snaps=$((snaps + 1))
done
crash_reboot
stop_load
cat "$KV_DIR.snapout"
[ "$left" -gt 0 ] || die "no page was reused while $snaps snapshots were written"
grep -q failed "$KV_DIR.runs" && { cat "$KV_DIR.load" >&2; die "a run before the crash failed"; }
echo "client runs before the crash: $(wc -l <"$KV_DIR.runs"); snapshots: $snaps"
kv_start --set "server.snapshot=$SNAP" --set arena.pages=96
log_has "snapshot $SNAP: restored [1-9][0-9]* committed pages"
grep "restored" "$KV_DIR.log"
for i in $(seq 0 7); do
    E2E_STREAM=$((0x7000 + i)) E2E_WARM=any "$B/tests/e2e_client" "$KV_EP" alice 200 4 \
        >"$KV_DIR.client" 2>&1 || { cat "$KV_DIR.client" >&2; die "replay $i after the restore"; }
done
kv_check_pages idle
kv_stop
rm -f "$SNAP" "$KV_DIR.client" "$KV_DIR.snapout" "$KV_DIR.runs" "$KV_DIR.load"
echo "test_snapshot: PASS"
