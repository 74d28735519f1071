#!/usr/bin/env bash
# The prefix cache survives a full stop (a reboot empties /dev/shm): a server with
# server.snapshot writes its committed pages at a clean shutdown; the next one, on a fresh
# arena, restores them, and a client sending the same prompt finds its full pages cached,
# every output still equal to the reference (the restored K/V are right, not only the
# tokens). The file is the server user's alone (mode 600). A corrupted snapshot restores the
# pages before the damage and the server serves on; one made for another model shape is
# refused with the reason; either is moved aside (PATH.rejected), not overwritten at stop.
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
rm -f "$SNAP.rejected"
rm -f "$SNAP" "$KV_DIR.client"
echo "test_snapshot: PASS"
