#!/usr/bin/env bash
# The server refuses what it cannot serve, with a message that names the setting, and
# leaves nothing behind: bad values and unknown keys in the config; an arena kept from a
# run with other model options (here ALiBi) is refused rather than reused with the wrong
# attention, until --fresh discards it.
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
[ -e "/dev/shm/kvarena-$KV_NAME" ] && die "a refused config left an arena behind"

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
kv_start --fresh                        # other options after --fresh: a new arena
"$B/tests/e2e_client" "$KV_EP" alice 40 4 >/dev/null

# a second server on the name of a live one: refused, and the first one's arena and ipc
# files stay (new clients connect, killed workers come back: they map the arena by name)
refuse "is in use by kvserver pid $KV_PID"
[ -e "/dev/shm/kvarena-$KV_NAME" ] || die "a refused second server removed the live arena"
for f in client worker admin events; do
    [ -S "$KV_DIR/$f.sock" ] || die "a refused second server removed $f.sock"
done
pkill -KILL -f "kvworker --shm /kvarena-$KV_NAME"
sleep 0.2
kv_wait_ready
"$B/tests/e2e_client" "$KV_EP" alice 40 4 >/dev/null
kv_stop
echo "test_config: PASS"
