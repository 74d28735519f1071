#!/usr/bin/env bash
# An edited config applied to a running server (kvctl reload, SIGHUP), its arena and
# clients kept:
#  1. no edit, or an edit of a key the command line overrides: "no change";
#  2. live keys (a tenant's quota and weight, the log level, the idle timeout): each one
#     listed, and in force: a prompt over the lowered quota refused, debug lines logged;
#  3. a key that needs a restart (model.layers) edited with a live one: refused, the key
#     named, nothing applied (the quota stays); a syntax error and a new tenant refused the
#     same way; the server serves on; restored, the quota raised, the prompt passes;
#  4. SIGHUP: the same reload, its outcome logged; the workers ignore it (a group's
#     SIGHUP); a job timeout of 0 refused;
#  5. authenticated mode: a client key removed while its client runs, that client refused
#     at its next request; the new key admitted, the old one refused at the handshake;
#     both listed (rotation): both admitted; a key listed for two tenants refused; a key
#     moved to another tenant while its client runs: refused at once and told why, and
#     across a crash and restart (a reconnect's Hello accepted for bob is not taken).
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
KV_CONF="$KV_DIR.ini"
cp deploy/kvarena.ini "$KV_CONF"
cleanup() { kv_cleanup; rm -f "$KV_CONF"; }
kv_start
trap cleanup EXIT
ctl() { "$B/kvctl" --endpoint "$KV_ADMIN" "$@"; }
# set_key SECTION KEY VALUE: edits (or adds) KEY in [SECTION] of the config
set_key() {
    python3 - "$KV_CONF" "$1" "$2" "$3" <<'EOF'
import re, sys
path, sec, key, val = sys.argv[1:]
lines = open(path).read().split("\n"); cur = None; done = False
for i, l in enumerate(lines):
    m = re.match(r"\[([^]]*)\]", l)
    if m:
        if cur == sec and not done: lines.insert(i, "%s = %s" % (key, val)); done = True; break
        cur = m.group(1)
    elif cur == sec and re.match(r"%s\s*=" % re.escape(key), l):
        lines[i] = "%s = %s" % (key, val); done = True; break
if not done:
    if cur != sec: lines.append("[%s]" % sec)
    lines.append("%s = %s" % (key, val))
open(path, "w").write("\n".join(lines))
EOF
}
alice_quota() { ctl stats --json | python3 -c 'import json,sys; print([t["quota"] for t in json.load(sys.stdin)["tenants"] if t["name"] == "alice"][0])'; }

echo "== 1. no edit"
out=$(ctl reload)
[ "$out" = "reloaded: no change" ] || die "reload without an edit: $out"
# a key the command line overrides (--name): its edit in the file changes nothing
set_key server name "a_name_longer_than_the_one_on_the_command_line"
out=$(ctl reload)
[ "$out" = "reloaded: no change" ] || die "an overridden key's edit: $out"

echo "== 2. live keys"
set_key tenant.alice quota_pages 8
set_key tenant.bob weight 3
set_key server log_level debug
set_key server seq_idle_timeout_s 300
out=$(ctl reload)
echo "$out"
for want in "tenant.alice.quota_pages 1024 -> 8" "tenant.bob.weight 1 -> 3" \
            "server.log_level info -> debug" "server.seq_idle_timeout_s 600 -> 300"; do
    echo "$out" | grep -qF "$want" || die "reload did not list '$want'"
done
[ "$(alice_quota)" = 8 ] || die "alice's quota is $(alice_quota), not 8"
if "$B/tests/e2e_client" "$KV_EP" alice 200 1 > "$KV_DIR.client" 2>&1; then
    die "a 13-page prompt passed alice's quota of 8 pages"
fi
grep -q "quota" "$KV_DIR.client" || { cat "$KV_DIR.client" >&2; die "the client did not fail on the quota"; }
grep -q " debug \[" "$KV_DIR.log" || die "no debug line logged after log_level debug"
echo "alice's quota of 8 pages in force; debug lines logged"

echo "== 3. keys that need a restart: nothing applied"
set_key tenant.alice quota_pages 1024
set_key model layers 8
rc=0; out=$(ctl reload 2>&1) || rc=$?
[ "$rc" -ne 0 ] || die "a reload changing model.layers succeeded"
echo "$out" | grep -q "need a restart: model.layers" || die "model.layers not named: $out"
[ "$(alice_quota)" = 8 ] || die "a refused reload applied alice's quota"
set_key model layers 4
echo "this line is not INI" >> "$KV_CONF"
rc=0; out=$(ctl reload 2>&1) || rc=$?
[ "$rc" -ne 0 ] && echo "$out" | grep -q "line" || die "a config with a bad line: $out"
sed -i '$d' "$KV_CONF"
printf '\n[tenant.carol]\nweight = 1\n' >> "$KV_CONF"
rc=0; out=$(ctl reload 2>&1) || rc=$?
[ "$rc" -ne 0 ] && echo "$out" | grep -q "the tenants (2, now 3)" || die "a new tenant: $out"
head -n -3 "$KV_CONF" > "$KV_CONF.tmp" && mv "$KV_CONF.tmp" "$KV_CONF"
ctl ping > /dev/null || die "the server stopped answering after refused reloads"
[ "$(alice_quota)" = 8 ] || die "a refused reload changed the quota"
out=$(ctl reload)
echo "$out" | grep -qF "tenant.alice.quota_pages 8 -> 1024" || die "the restored config: $out"
# (the refused client left its sequence open: counts of sequences are not checked)
E2E_SHARED=1 "$B/tests/e2e_client" "$KV_EP" alice 200 4 > "$KV_DIR.client" 2>&1 ||
    { cat "$KV_DIR.client" >&2; die "the prompt failed under the raised quota"; }
echo "refused: model.layers, a bad line, a new tenant; then applied: quota 1024, the prompt passes"

echo "== 4. SIGHUP"
set_key tenant.alice max_seqs 50
kill -HUP "$KV_PID"
for _ in $(seq 100); do grep -q "reload: tenant.alice.max_seqs 0 -> 50" "$KV_DIR.log" && break; sleep 0.05; done
grep -q "reload: tenant.alice.max_seqs 0 -> 50" "$KV_DIR.log" || die "SIGHUP did not reload"
kill -0 "$KV_PID" || die "SIGHUP stopped the server"
# a SIGHUP to the whole group (a terminal hangup, systemctl kill -s HUP) reaches the workers
pkill -HUP -f "kvworker --shm /kvarena-$KV_NAME"
sleep 0.3
restarts=$(ctl stats --json | grep -o '"restarts": *[0-9]*' | awk -F: '{ n += $2 } END { print n + 0 }')
[ "$restarts" -eq 0 ] || die "SIGHUP killed $restarts workers"
# a job timeout under 3 heartbeats would fence busy workers: refused
set_key server job_timeout_ms 0
rc=0; out=$(ctl reload 2>&1) || rc=$?
[ "$rc" -ne 0 ] && echo "$out" | grep -q "job_timeout_ms (0) must be at least 3 heartbeats" ||
    die "job_timeout_ms 0: $out"
set_key server job_timeout_ms 60000
echo "SIGHUP: reloaded; the workers ignore it; a job timeout of 0 refused"
kv_stop
trap cleanup EXIT

echo "== 5. authenticated mode: keys removed, added, rotated"
mkdir -p -m 700 "$KV_DIR"
srv_pub=$(kv_server_key "$KV_DIR/server.key")
read -r a1_pub a1_sec < <(kv_keypair)
read -r a2_pub a2_sec < <(kv_keypair)
read -r b_pub _ < <(kv_keypair)
port=$((20000 + RANDOM % 20000))
EP="tcp://127.0.0.1:$port"
cp deploy/kvarena.ini "$KV_CONF"
set_key server client_endpoint "$EP"
set_key server secret_key_file "$KV_DIR/server.key"
set_key tenant.alice public_key "$a1_pub"
set_key tenant.bob public_key "$b_pub"
kv_start
trap cleanup EXIT
as() {  # as PUB SEC ARGS...: e2e_client with that key pair (after the revoked client's
        # sequence, left open, the server-wide counts are not checked)
    local pub=$1 sec=$2; shift 2
    KVARENA_SERVER_KEY=$srv_pub KVARENA_PUBLIC_KEY=$pub KVARENA_SECRET_KEY=$sec E2E_SHARED=1 \
        "$B/tests/e2e_client" "$EP" "" "$@"
}
# long_client PUB SEC: a client decoding for long in the background, once it has a sequence
# of its own (earlier clients' sequences are left open: counted before it starts, or it may
# not have said Hello yet when the test goes on, and then connects as whoever its key is)
alice_seqs() { ctl seqs --json | grep -o '"tenant": *"alice"' | wc -l; }
long_client() {  # long_client PUB SEC [ATTEMPT_MS]
    local before
    before=$(alice_seqs)
    as "$1" "$2" 64 3000 ${3:-} > "$KV_DIR.client" 2>&1 &
    client=$!
    for _ in $(seq 200); do
        [ "$(alice_seqs)" -gt "$before" ] && return 0
        kill -0 "$client" 2>/dev/null || break
        sleep 0.05
    done
    cat "$KV_DIR.client" >&2
    die "the long client has no sequence"
}
long_client "$a1_pub" "$a1_sec"
set_key tenant.alice public_key "$a2_pub"
ctl reload | grep -qF "tenant.alice.public_key 1 added, 1 removed (1 now)" || die "the key change was not listed"
rc=0; wait "$client" || rc=$?
[ "$rc" -ne 0 ] || die "a client whose key was removed went on to the end"
grep -q "no longer listed" "$KV_DIR.client" || { cat "$KV_DIR.client" >&2; die "not refused for its removed key"; }
echo "a running client with the removed key: refused at its next request"
as "$a2_pub" "$a2_sec" 40 4 > "$KV_DIR.client" 2>&1 || { cat "$KV_DIR.client" >&2; die "the new key refused"; }
if as "$a1_pub" "$a1_sec" 40 4 1000 2000 > "$KV_DIR.client" 2>&1; then die "the removed key connected"; fi
grep -q "no reply" "$KV_DIR.client" || { cat "$KV_DIR.client" >&2; die "the removed key: not refused at the handshake"; }
set_key tenant.alice public_key "$a1_pub, $a2_pub"
ctl reload | grep -qF "tenant.alice.public_key 1 added, 0 removed (2 now)" || die "two keys not listed"
as "$a1_pub" "$a1_sec" 40 4 > "$KV_DIR.client" 2>&1 || { cat "$KV_DIR.client" >&2; die "key 1 of 2 refused"; }
as "$a2_pub" "$a2_sec" 40 4 > "$KV_DIR.client" 2>&1 || { cat "$KV_DIR.client" >&2; die "key 2 of 2 refused"; }
echo "the new key admitted, the old one refused; both listed: both admitted"
set_key tenant.bob public_key "$b_pub $a2_pub"
rc=0; out=$(ctl reload 2>&1) || rc=$?
[ "$rc" -ne 0 ] && echo "$out" | grep -q "listed twice" || die "a key of two tenants: $out"
# a key moved to another tenant while its client runs: refused at once, not retried
long_client "$a1_pub" "$a1_sec"
set_key tenant.alice public_key "$a2_pub"
set_key tenant.bob public_key "$b_pub, $a1_pub"
ctl reload > /dev/null
t0=$(date +%s%N)
rc=0; wait "$client" || rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$rc" -ne 0 ] || die "a client whose key moved to bob went on as alice"
grep -q "now belongs to tenant 'bob'" "$KV_DIR.client" || { cat "$KV_DIR.client" >&2; die "not told its key moved"; }
[ "$ms" -lt 5000 ] || die "the moved key's client took $ms ms to give up (reconnecting?)"
echo "a key moved to another tenant: its running client refused in $ms ms, told why"
# the same across a crash: the server restarted (on its arena) with alice's key now bob's;
# the client, reconnecting on its own, is not let on as bob
set_key tenant.alice public_key "$a1_pub"
set_key tenant.bob public_key "$b_pub"
ctl reload > /dev/null
long_client "$a1_pub" "$a1_sec" 300
kill -KILL "$KV_PID"; wait "$KV_PID" 2>/dev/null || true
set_key tenant.alice public_key "$a2_pub"
set_key tenant.bob public_key "$b_pub, $a1_pub"
kv_start
trap cleanup EXIT
rc=0; wait "$client" || rc=$?
[ "$rc" -ne 0 ] || die "after a restart the client went on as another tenant"
grep -q "now knows this client as tenant 'bob', not 'alice'" "$KV_DIR.client" ||
    { cat "$KV_DIR.client" >&2; die "the reconnecting client was not told its key is bob's now"; }
echo "after a crash and a restart with the key moved: the reconnecting client refused, told why"
rm -f "$KV_DIR/server.key" "$KV_DIR.client"
kv_stop
trap - EXIT
rm -f "$KV_CONF"
echo "test_reload: PASS"
