#!/usr/bin/env bash
# kvserver speaking systemd's notify protocol (Type=notify, WatchdogSec=) to a stand-in for
# systemd (notify_sink):
#  1. a socket path, a 400 ms watchdog for the server's pid, workers that take 1.5 s to
#     start: READY=1 (with its STATUS line) only once a worker is ready, WATCHDOG=1 at most
#     200 ms apart while it serves, the variables kept from the workers, STOPPING=1 at
#     SIGTERM;
#  2. an abstract socket ("@name") and a watchdog meant for another pid: READY=1, no pings;
#  3. an unusable NOTIFY_SOCKET: logged, and the server serves anyway;
#  4. stderr as the journal's stream ($JOURNAL_STREAM): every line of the server and its
#     workers with its priority; another stream's variable changes nothing.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
T="$KV_DIR.notify"
SINK_PID=
cleanup() {
    set +e
    [ -n "$SINK_PID" ] && kill "$SINK_PID" 2>/dev/null
    kv_cleanup
    rm -rf "$T"
}
mkdir -p "$T"
trap cleanup EXIT

# sink_start SOCKET LOG: a notify socket, bound before this returns.
sink_start() {
    : > "$2"
    "$B/tests/notify_sink" "$1" "$2" &
    SINK_PID=$!
    for _ in $(seq 100); do grep -q BOUND "$2" && return 0; sleep 0.02; done
    die "notify_sink did not bind $1"
}
sink_stop() { kill "$SINK_PID"; wait "$SINK_PID" || true; SINK_PID=; }

# server_start ENV...: kvserver with the given environment, WATCHDOG_PID=its own pid
# unless given, its workers started by a wrapper that records their environment and sleeps
# 1.5 s; waits until a worker is ready.
server_start() {
    # shellcheck disable=SC2016
    (export WATCHDOG_PID=$BASHPID "$@" &&
        exec "$B/kvserver" --config deploy/kvarena.ini --name "$KV_NAME" --runtime-dir "$KV_DIR" \
            --set server.worker_path="$T/slow_worker") > "$KV_DIR.log" 2>&1 &
    KV_PID=$!
    trap cleanup EXIT
    kv_wait_ready
}
printf '#!/bin/sh\nenv > "%s/worker.env.$$"\nsleep 1.5\nexec "%s/kvworker" "$@"\n' \
    "$T" "$PWD/$B" > "$T/slow_worker"
chmod +x "$T/slow_worker"

echo "== 1. a socket path, a watchdog, slow workers"
sink_start "$T/notify" "$T/notify.log"
server_start NOTIFY_SOCKET="$T/notify" WATCHDOG_USEC=400000
ready=$(awk '$2 ~ /^READY=1/ { print; exit }' "$T/notify.log")
[ -n "$ready" ] || die "no READY=1 when the workers were ready"
ready_ms=${ready%% *}
[ "$ready_ms" -ge 1500 ] || die "READY=1 at $ready_ms ms, before the slow workers were up (1.5 s)"
echo "$ready" | grep -q "STATUS=serving: arena /kvarena-$KV_NAME, 2048 pages, [12] of 2 workers ready" ||
    die "READY=1 without its status line: $ready"
echo "READY=1 at $ready_ms ms, after workers that take 1.5 s to start"
"$B/tests/e2e_client" "$KV_EP" alice 40 5 > "$T/client.out" 2>&1 ||
    { cat "$T/client.out" >&2; die "the client failed"; }
sleep 0.5
pings=$(awk -v r="$ready_ms" '$2 == "WATCHDOG=1" && $1 > r' "$T/notify.log" | wc -l)
gap=$(awk '$2 == "WATCHDOG=1" { if (last != "" && $1 - last > g) g = $1 - last; last = $1 } END { print g + 0 }' "$T/notify.log")
echo "watchdog: $pings pings since READY, longest gap $gap ms (WATCHDOG_USEC 400 ms)"
[ "$pings" -ge 4 ] || die "only $pings WATCHDOG=1 pings since READY=1"
[ "$gap" -lt 400 ] || die "WATCHDOG=1 pings $gap ms apart: systemd would have killed the server"
ls "$T"/worker.env.* >/dev/null || die "the workers did not run through the wrapper"
grep -hE "^(NOTIFY_SOCKET|WATCHDOG_USEC|WATCHDOG_PID)=" "$T"/worker.env.* &&
    die "a worker was started with systemd's notify variables"
kv_stop
trap cleanup EXIT
grep -q " STOPPING=1|STATUS=stopping" "$T/notify.log" || die "no STOPPING=1 at SIGTERM"
sink_stop

echo "== 2. an abstract socket, a watchdog meant for another pid"
sink_start "@kvarena-test-$KV_NAME" "$T/notify2.log"
server_start NOTIFY_SOCKET="@kvarena-test-$KV_NAME" WATCHDOG_USEC=400000 WATCHDOG_PID=1
grep -q " READY=1" "$T/notify2.log" || die "no READY=1 on the abstract socket"
sleep 0.5
grep -q "WATCHDOG=1" "$T/notify2.log" && die "WATCHDOG=1 sent although WATCHDOG_PID was not the server's"
kv_stop
trap cleanup EXIT
grep -q " STOPPING=1" "$T/notify2.log" || die "no STOPPING=1 on the abstract socket"
sink_stop
echo "abstract socket: READY=1, STOPPING=1, no pings for another pid's watchdog"

echo "== 3. an unusable NOTIFY_SOCKET"
server_start NOTIFY_SOCKET="relative/notify"
grep -q "NOTIFY_SOCKET=relative/notify is neither" "$KV_DIR.log" ||
    die "an unusable NOTIFY_SOCKET was not logged"
"$B/tests/e2e_client" "$KV_EP" alice 20 2 > /dev/null || die "the server with a bad NOTIFY_SOCKET does not serve"
kv_stop
trap cleanup EXIT
echo "== 4. stderr as the journal's stream (JOURNAL_STREAM)"
: > "$KV_DIR.log"
server_start JOURNAL_STREAM="$(stat -c %d:%i "$KV_DIR.log")" KVARENA_ISA=bogus # workers warn
cp "$KV_DIR.log" "$T/journal.log"
kv_stop
trap cleanup EXIT
grep -q "^<6>info \[[0-9]*\] worker 0 ready" "$T/journal.log" || die "no <6> info line: $(head -3 "$T/journal.log")"
grep -q "^<4>warn \[[0-9]*\] DEVELOPMENT MODE" "$T/journal.log" || die "no <4> warning line"
grep -q "^<4>warn \[[0-9]*\] worker 0: KVARENA_ISA=bogus" "$T/journal.log" ||
    die "the workers' lines lack their priority"
bad=$(grep -vc "^<[3467]>" "$T/journal.log" || true)
[ "$bad" -eq 0 ] || die "$bad lines without a priority: $(grep -v "^<[3467]>" "$T/journal.log" | head -3)"
server_start JOURNAL_STREAM="1:1"
grep -q "^[0-9][0-9]:[0-9][0-9]:[0-9][0-9]\.[0-9]* info " "$KV_DIR.log" || die "another stream's JOURNAL_STREAM changed the lines"
kv_stop
trap cleanup EXIT
echo "journal: every line of the server and its workers with its priority (<6> info, <4> warn)"
echo "test_notify: PASS"
