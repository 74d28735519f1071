#!/usr/bin/env bash
# Authenticated mode over tcp on loopback: CURVE keys, a ZAP handler mapping client keys to
# tenants. Keys decide the tenant; unknown keys are refused; the whole e2e check passes
# over the encrypted connection; without keys a tcp endpoint is refused at start.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
mkdir -p -m 700 "$KV_DIR"
srv_pub=$(kv_server_key "$KV_DIR/server.key")
read -r a_pub a_sec < <(kv_keypair)
read -r b_pub b_sec < <(kv_keypair)
port=$((20000 + RANDOM % 20000))
EP="tcp://127.0.0.1:$port"

# a tcp endpoint without keys: refused with a clear error
if "$B/kvserver" --config deploy/kvarena.ini --name "$KV_NAME" --runtime-dir "$KV_DIR" \
        --set server.client_endpoint="$EP" > "$KV_DIR/nokeys.log" 2>&1; then
    die "kvserver served tcp without CURVE keys"
fi
grep -q "needs CURVE authentication" "$KV_DIR/nokeys.log" || { cat "$KV_DIR/nokeys.log"; die "no clear error"; }
echo "ok: tcp without keys refused"

kv_start --set server.client_endpoint="$EP" --set server.secret_key_file="$KV_DIR/server.key" \
         --set tenant.alice.public_key="$a_pub" --set tenant.bob.public_key="$b_pub"
grep -q "authenticated mode" "$KV_DIR.log" || die "server did not start in authenticated mode"
"$B/tests/curve_client" "$EP" "$srv_pub" "$a_pub" "$a_sec" "$b_pub" "$b_sec"
KVARENA_SERVER_KEY=$srv_pub KVARENA_PUBLIC_KEY=$a_pub KVARENA_SECRET_KEY=$a_sec \
    "$B/tests/e2e_client" "$EP" "" 100 16
rm -f "$KV_DIR/server.key" "$KV_DIR/nokeys.log"
kv_stop
echo "test_curve: PASS"
