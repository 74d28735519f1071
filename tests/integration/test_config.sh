#!/usr/bin/env bash
# The server refuses what it cannot serve, with a message that names the setting, and
# leaves nothing behind: bad values and unknown keys in the config; an arena larger than
# /dev/shm has room for; a file in the arena's place that is no arena; an arena kept from a run with other model options (here ALiBi) is
# refused rather than reused with the wrong attention, until --fresh discards it.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh

# refuse EXPECTED [kvserver options...]: kvserver exits non-zero at once, says EXPECTED.
workers() { pgrep -f "kvworker --shm /kvarena-$KV_NAME" | sort | tr '\n' ' '; }
refuse() {
    local want=$1 out rc=0 before
    shift
    before=$(workers)
    out=$(timeout 20 "$B/kvserver" --config deploy/kvarena.ini --name "$KV_NAME" \
          --runtime-dir "$KV_DIR" "$@" 2>&1) || rc=$?
    [ "$rc" -ne 0 ] || die "kvserver $* started; it should have refused"
    [ "$rc" -ne 124 ] || die "kvserver $* did not exit"
    grep -qF -- "$want" <<<"$out" || { echo "$out" >&2; die "kvserver $*: no \"$want\""; }
    [ "$(workers)" = "$before" ] || die "kvserver $*: workers started or stopped"
    echo "refused: $* -> $want"
}

for v in -1 65 abc 8x; do
    refuse "bad value for model.alibi_max_bias: '$v'" --set model.alibi_max_bias="$v"
done
refuse "bad value for model.softcap: '-3'" --set model.softcap=-3
refuse "unknown key model.alibi" --set model.alibi=8
refuse "heartbeat_ms (>= 100)" --set server.heartbeat_ms=10
refuse "bad value for server.seq_idle_timeout_s: '1.5'" --set server.seq_idle_timeout_s=1.5
refuse "server.snapshot_every_s needs server.snapshot" --set server.snapshot_every_s=60
refuse "server.cold_mb must be at least 1 with server.cold_dir" --set server.cold_dir=/tmp/x \
    --set server.cold_mb=0
refuse "cold tier not opened: cannot create /nonexistent/cold" \
    --set server.cold_dir=/nonexistent/cold
refuse "bad tenant section [tenant.a\"b]: names are 1..63 of [A-Za-z0-9_.-]" \
    --set 'tenant.a"b.quota_pages=5'
refuse "worker_path /nonexistent/kvworker cannot be executed: No such file or directory" \
    --set server.worker_path=/nonexistent/kvworker
# an arena larger than /dev/shm has free: refused at start, not a SIGBUS under load later
free=$(df -B1 --output=avail /dev/shm | tail -1)
refuse "of /dev/shm, which has" --set arena.bytes=$((free + (1 << 30)))
out=$("$B/kvserver" --config /tmp --name "$KV_NAME" 2>&1) && die "a directory as config: started"
grep -qF "cannot read config /tmp: not a regular file" <<<"$out" || die "config /tmp: $out"
[ -e "/dev/shm/kvarena-$KV_NAME" ] && die "a refused config left an arena behind"
# a file under the arena's name that is no arena (empty, zeros): refused, --fresh named
: >"/dev/shm/kvarena-$KV_NAME"
refuse "cannot be reused: it is 0 bytes, smaller than an arena's header"
head -c 1048576 /dev/zero >"/dev/shm/kvarena-$KV_NAME"
refuse "; start with --fresh to discard it"
rm -f "/dev/shm/kvarena-$KV_NAME"

# an arena kept by a server with ALiBi: refused under a config without, and the reverse
kv_start --set model.alibi_max_bias=8 --keep-shm
kill -TERM "$KV_PID"
wait "$KV_PID" || die "kvserver --keep-shm exited with $?"
[ -e "/dev/shm/kvarena-$KV_NAME" ] || die "--keep-shm: the arena is gone"
refuse "was built with alibi_max_bias = 8, the config says 0" --set model.alibi_max_bias=0
refuse "was built with alibi_max_bias = 8, the config says 4.5" --set model.alibi_max_bias=4.5
[ -e "/dev/shm/kvarena-$KV_NAME" ] || die "a refused start removed the kept arena"
# attached and recovered, then failing later (an endpoint it cannot bind): the arena stays
refuse "zmq_bind(client socket, ipc:///nonexistent-kvarena/c.sock) failed" \
    --set model.alibi_max_bias=8 --set server.client_endpoint=ipc:///nonexistent-kvarena/c.sock
[ -e "/dev/shm/kvarena-$KV_NAME" ] || die "a start that failed after attaching removed the arena"
kv_start --set model.alibi_max_bias=8   # the same options: reused
"$B/tests/e2e_client" "$KV_EP" alice 40 4 >/dev/null
kv_stop
kv_start --set model.alibi_max_bias=8 --keep-shm
kill -TERM "$KV_PID"
wait "$KV_PID" || die "kvserver --keep-shm exited with $?"
# a client started before the server (tries of 500 ms) waits for it instead of giving up
"$B/tests/e2e_client" "$KV_EP" alice 40 4 500 >"$KV_DIR.early" 2>&1 &
early=$!
sleep 1.5
kv_start --fresh                        # other options after --fresh: a new arena
wait "$early" || { cat "$KV_DIR.early" >&2; die "a client started before the server gave up"; }
rm -f "$KV_DIR.early"

# a second server on the name of a live one (also with --fresh, also from another runtime
# dir), or on its runtime dir under another name: refused, and the first one's arena and
# ipc files stay (new clients connect, killed workers come back: they map the arena by name)
refuse "runtime_dir $KV_DIR is in use by kvserver pid $KV_PID"
refuse "runtime_dir $KV_DIR is in use by kvserver pid $KV_PID" --fresh
refuse "runtime_dir $KV_DIR is in use by kvserver pid $KV_PID" --name "$KV_NAME-b"
[ -e "/dev/shm/kvarena-$KV_NAME-b" ] && die "a refused server on a used runtime dir made an arena"
refuse "arena /kvarena-$KV_NAME is in use by kvserver pid $KV_PID" --runtime-dir "$KV_DIR.b"
refuse "arena /kvarena-$KV_NAME is in use by kvserver pid $KV_PID: neither reused nor" \
    --runtime-dir "$KV_DIR.b" --fresh
[ -e "/dev/shm/kvarena-$KV_NAME" ] || die "a refused second server removed the live arena"
for f in client worker admin events; do
    [ -S "$KV_DIR/$f.sock" ] || die "a refused second server removed $f.sock"
done
pkill -KILL -f "kvworker --shm /kvarena-$KV_NAME"
sleep 0.2
kv_wait_ready
"$B/tests/e2e_client" "$KV_EP" alice 40 4 >/dev/null
kv_stop
rm -rf "$KV_DIR.b"
echo "test_config: PASS"
