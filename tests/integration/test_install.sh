#!/usr/bin/env bash
# make install, then use only what it installed, as a user of the package would:
#  1. the layout under a fresh PREFIX (binaries, versioned shared libraries exporting their
#     API only, headers, pkg-config files, the systemd unit with its paths filled in, the
#     default config); systemd-analyze verify on the unit where systemd is installed;
#  2. programs built against the installed headers and libraries through pkg-config alone:
#     the kernels' example (checks its own results) and the black-box client (every output
#     against the reference attention), linked to the shared libraries;
#  3. the installed kvserver started by the unit's own ExecStart line (its %i, %t, %S filled
#     in as systemd would) under a stand-in for systemd's notify socket: READY=1 with its
#     status line, WATCHDOG=1, the client's run and the installed kvctl against it,
#     STOPPING=1 at SIGTERM, a clean exit (test_notify.sh: the protocol's edges); the
#     metrics unit's ExecStart serving that server's metrics over HTTP;
#  4. DESTDIR staging for PREFIX=/usr (config in /etc); make uninstall removing everything
#     but the operator's config, which a second install leaves as it was.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
T="$KV_DIR.install"
P="$T/prefix"
cleanup() {
    set +e
    sink_stop 2>/dev/null
    [ -n "$SERVER" ] && kill -KILL "$SERVER" 2>/dev/null
    [ -n "$METRICS" ] && kill "$METRICS" 2>/dev/null
    kv_cleanup
    rm -rf "$T" "/dev/shm/kvarena-inst$$"
}
SERVER= METRICS=
trap cleanup EXIT
mkdir -p "$T"
# a make run from a make recipe: the outer make's flags (its jobserver) are not ours
# (LDCONFIG=:, a test prefix is none of the system's library directories)
mk() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -s B="$B" LDCONFIG=: "$@"; }

echo "== 1. make install PREFIX=$P"
mk install PREFIX="$P" > "$T/install.log"
expect_files="bin/kvctl bin/kvserver bin/kvworker etc/kvarena/default.ini include/kvarena/kvclient.h
include/kvarena/kvkernels.h lib/libkvclient.a lib/libkvclient.so lib/libkvclient.so.0
lib/libkvclient.so.0.1.0 lib/libkvkernels.a lib/libkvkernels.so lib/libkvkernels.so.0
lib/libkvkernels.so.0.1.0 lib/pkgconfig/kvclient.pc lib/pkgconfig/kvkernels.pc
lib/systemd/system/kvarena@.service lib/systemd/system/kvarena-metrics@.service
share/kvarena/kvarena.ini"
got=$(cd "$P" && find . ! -type d | sed 's|^\./||' | sort | tr '\n' ' ')
[ "$got" = "$(echo $expect_files | tr ' ' '\n' | sort | tr '\n' ' ')" ] ||
    die "installed files: $got"
for b in kvctl kvserver kvworker; do [ -x "$P/bin/$b" ] || die "bin/$b is not executable"; done
[ "$(readlink "$P/lib/libkvclient.so.0")" = libkvclient.so.0.1.0 ] || die "libkvclient.so.0 link"
for l in kvclient kvkernels; do
    soname=$(readelf -d "$P/lib/lib$l.so.0.1.0" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
    [ "$soname" = "lib$l.so.0" ] || die "lib$l soname '$soname'"
done
# the shared libraries export their headers' functions and nothing else
exported() { nm -D --defined-only "$1" | awk '$2 ~ /^[TDBRVW]$/ {print $3}' | sort | tr '\n' ' '; }
declared() { grep -oE "\b$2[a-z0-9_]+\(" "$1" | tr -d '(' | sort -u | tr '\n' ' '; }
[ "$(exported "$P/lib/libkvclient.so")" = "$(declared client/kvclient.h kvc_)" ] ||
    die "libkvclient.so exports: $(exported "$P/lib/libkvclient.so")"
[ "$(exported "$P/lib/libkvkernels.so")" = "$(declared kernels/kvkernels.h kvk_)" ] ||
    die "libkvkernels.so exports: $(exported "$P/lib/libkvkernels.so")"
globals=$(nm -g --defined-only "$P/lib/libkvclient.a" | awk 'NF == 3 { print $3 }' | sort | tr '\n' ' ')
[ "$globals" = "$(declared client/kvclient.h kvc_)" ] || die "libkvclient.a defines globally: $globals"
unit="$P/lib/systemd/system/kvarena@.service"
grep -q "^ExecStart=$P/bin/kvserver --config $P/etc/kvarena/%i.ini " "$unit" ||
    die "the unit's ExecStart: $(grep ExecStart "$unit")"
cmp -s deploy/kvarena.ini "$P/etc/kvarena/default.ini" || die "etc/kvarena/default.ini differs"
if command -v systemd-analyze >/dev/null; then
    out=$(systemd-analyze verify "$P/lib/systemd/system/kvarena@t.service" \
          "$P/lib/systemd/system/kvarena-metrics@t.service" 2>&1) ||
        die "systemd-analyze verify: $out"
    # what it says about this unit (not about the machine's other units)
    ! echo "$out" | grep "kvarena@" || die "systemd-analyze verify warns about the unit"
    echo "systemd-analyze verify: unit clean"
else
    echo "systemd-analyze not installed: the unit's syntax not checked here"
fi

echo "== 2. programs built with pkg-config against the installed files only"
export PKG_CONFIG_PATH="$P/lib/pkgconfig"
CC=${CC:-cc}
san=""   # a sanitized build's libraries need the sanitizer runtime in the program too
readelf -d "$P/lib/libkvclient.so" | grep -q libasan && san="-fsanitize=address,undefined"
# the repo's test sources include headers by their repo paths: point those at the installed
# ones (synth.h, the test's own helper, comes from the repo)
mkdir -p "$T/inc/client/examples" "$T/inc/kernels"
ln -s "$P/include/kvarena/kvclient.h" "$T/inc/client/kvclient.h"
ln -s "$P/include/kvarena/kvkernels.h" "$T/inc/kernels/kvkernels.h"
ln -s "$PWD/client/examples/synth.h" "$T/inc/client/examples/synth.h"
# shellcheck disable=SC2046
$CC -O2 $san -o "$T/kvk_example" kernels/examples/kvk_example.c \
    $(pkg-config --cflags --libs kvkernels) -Wl,-rpath,"$P/lib" -lm
# shellcheck disable=SC2046
$CC -O2 $san -I"$T/inc" -o "$T/e2e_client" tests/integration/e2e_client.c \
    client/examples/synth.c $(pkg-config --cflags --libs kvclient kvkernels) \
    -Wl,-rpath,"$P/lib" -lm
# the same client linked with the static libraries (libkvclient's wire code kept local)
# shellcheck disable=SC2046
$CC -O2 $san -I"$T/inc" -o "$T/e2e_client_static" tests/integration/e2e_client.c \
    client/examples/synth.c $(pkg-config --cflags kvclient kvkernels) "$P/lib/libkvclient.a" \
    "$P/lib/libkvkernels.a" $(pkg-config --libs libzmq libprotobuf-c) -lpthread -lm
ldd "$T/e2e_client_static" | grep -q "libkv" && die "e2e_client_static loads a shared libkv*"
for prog in kvk_example e2e_client; do
    ldd "$T/$prog" | grep -q "libkv.*=> $P/lib/" || die "$prog does not load the installed libraries"
done
"$T/kvk_example" > "$T/kvk_example.out" || { cat "$T/kvk_example.out" >&2; die "kvk_example failed"; }
tail -1 "$T/kvk_example.out"

echo "== 3. the installed server, started by the unit's ExecStart under its address families"
# the config of an authenticated server with a tcp client endpoint, as the README advises
name="inst$$"
mkdir -p -m 700 "$T/keys"
export KVCTL="$P/bin/kvctl"
srv_pub=$(kv_server_key "$T/keys/server.key")
read -r a_pub a_sec < <(kv_keypair)
read -r b_pub _ < <(kv_keypair)
port=$((20000 + RANDOM % 20000))
sed -e "/^\[server\]/a client_endpoint = tcp://127.0.0.1:$port\nsecret_key_file = $T/keys/server.key" \
    -e "/^\[tenant.alice\]/a public_key = $a_pub" -e "/^\[tenant.bob\]/a public_key = $b_pub" \
    "$P/etc/kvarena/default.ini" > "$P/etc/kvarena/$name.ini"
mkdir -p "$T/run/kvarena" "$T/state/kvarena/$name"
exec_start=$(sed -n 's/^ExecStart=//p' "$unit" | sed -e "s|%i|$name|g" -e "s|%t|$T/run|g" -e "s|%S|$T/state|g")
families=$(sed -n 's/^RestrictAddressFamilies=//p' "$unit")
restrict_af="$(cd "$B/tests" && pwd)/restrict_af"
rundir="$T/run/kvarena/$name"
sink_start "$T/notify" "$T/notify.log"
# shellcheck disable=SC2086
(cd "$T/state/kvarena/$name" && export NOTIFY_SOCKET="$T/notify" WATCHDOG_USEC=400000 \
    WATCHDOG_PID=$BASHPID && exec "$restrict_af" "$families" $exec_start) > "$T/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 200); do grep -q "READY=1" "$T/notify.log" && break; sleep 0.05; done
grep -q "READY=1" "$T/notify.log" || { cat "$T/server.log" >&2; die "no READY=1 in 10 s"; }
grep "READY=1" "$T/notify.log" | grep -q "STATUS=serving: arena /kvarena-$name" ||
    die "READY without its status line: $(grep READY "$T/notify.log")"
admin="ipc://$rundir/admin.sock"
"$P/bin/kvctl" --endpoint "$admin" stats --json | grep -q '"state": *"ready"' ||
    die "READY=1 sent, but kvctl lists no ready worker"
KVARENA_SERVER_KEY=$srv_pub KVARENA_PUBLIC_KEY=$a_pub KVARENA_SECRET_KEY=$a_sec \
    "$T/e2e_client" "tcp://127.0.0.1:$port" "" 40 5 > "$T/client.out" 2>&1 ||
    { cat "$T/client.out" >&2; die "the client built against the installation failed"; }
grep -h "max relative" "$T/client.out" || true
KVARENA_SERVER_KEY=$srv_pub KVARENA_PUBLIC_KEY=$a_pub KVARENA_SECRET_KEY=$a_sec \
    "$T/e2e_client_static" "tcp://127.0.0.1:$port" "" 20 2 > "$T/client.out" 2>&1 ||
    { cat "$T/client.out" >&2; die "the client linked with the installed libkvclient.a failed"; }
"$P/bin/kvctl" --endpoint "$admin" stats > "$T/stats.out" || die "installed kvctl stats failed"
grep -q "jobs" "$T/stats.out" || die "kvctl stats: $(cat "$T/stats.out")"
grep -q "WATCHDOG=1" "$T/notify.log" || die "no WATCHDOG=1 from the installed server"
# the metrics unit's ExecStart, under its own address families, against that server
munit="$P/lib/systemd/system/kvarena-metrics@.service"
mport=$((port + 1))
mstart=$(sed -n 's/^ExecStart=//p' "$munit" | sed -e "s|%i|$name|g" -e "s|%t|$T/run|g" \
         -e "s|\${KVARENA_METRICS_LISTEN}|127.0.0.1:$mport|")
# shellcheck disable=SC2086
"$restrict_af" "$(sed -n 's/^RestrictAddressFamilies=//p' "$munit")" $mstart 2> "$T/metrics.log" &
METRICS=$!
for _ in $(seq 100); do
    { exec 3<>"/dev/tcp/127.0.0.1/$mport"; } 2>/dev/null && break
    sleep 0.05
done
printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3
got=$(tr -d '\r' <&3)
exec 3<&-
kill "$METRICS"; wait "$METRICS" 2>/dev/null || true; METRICS=
echo "$got" | head -1 | grep -q " 200 " && echo "$got" | grep -q '^kvarena_jobs_total{result="done"} [1-9]' ||
    { cat "$T/metrics.log" >&2; die "the metrics unit's ExecStart did not serve: $(echo "$got" | head -3)"; }
echo "kvarena-metrics@: its ExecStart served the installed server's metrics over HTTP"
kill -TERM "$SERVER"
rc=0; wait "$SERVER" || rc=$?
SERVER=
[ "$rc" -eq 0 ] || { cat "$T/server.log" >&2; die "the installed kvserver exited with $rc"; }
grep -q "STOPPING=1" "$T/notify.log" || die "no STOPPING=1 at SIGTERM"
[ -e "/dev/shm/kvarena-$name" ] && die "shared memory left behind"
ls "$rundir"/*.sock >/dev/null 2>&1 && die "sockets left behind"
sink_stop
echo "RestrictAddressFamilies=$families: served CURVE over tcp; READY=1, WATCHDOG=1, STOPPING=1"

echo "== 4. DESTDIR staging, uninstall, an operator's config kept"
mk install PREFIX=/usr DESTDIR="$T/stage" > /dev/null
for f in usr/bin/kvserver usr/lib/libkvclient.so.0 usr/lib/pkgconfig/kvclient.pc \
         usr/lib/systemd/system/kvarena@.service etc/kvarena/default.ini; do
    [ -e "$T/stage/$f" ] || die "DESTDIR install: no $f"
done
grep -q "^ExecStart=/usr/bin/kvserver --config /etc/kvarena/%i.ini " \
    "$T/stage/usr/lib/systemd/system/kvarena@.service" || die "staged unit's paths"
grep -q "^libdir=/usr/lib$" "$T/stage/usr/lib/pkgconfig/kvclient.pc" || die "staged kvclient.pc"
echo "layers = 8 ; the operator's" >> "$P/etc/kvarena/default.ini"
mk install PREFIX="$P" > "$T/install2.log"
grep -q "the operator's" "$P/etc/kvarena/default.ini" || die "a second install overwrote the config"
grep -q "kept .*default.ini" "$T/install2.log" || die "the kept config was not reported"
mk uninstall PREFIX="$P" > "$T/uninstall.log"
left=$(cd "$P" && find . ! -type d | sed 's|^\./||' | sort | tr '\n' ' ')
[ "$left" = "etc/kvarena/default.ini etc/kvarena/$name.ini " ] || die "left after uninstall: $left"
echo "uninstall: only the configuration in etc/kvarena is left"
echo "test_install: PASS"
