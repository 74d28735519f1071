#!/usr/bin/env bash
# kvserver speaking systemd's notify protocol (Type=notify, WatchdogSec=) to a stand-in for
# systemd (notify_sink):
#  1. a socket path, a 400 ms watchdog for the server's pid, workers that take 1.5 s to
#     start: READY=1 (with its STATUS line) only once a worker is ready, at least 4 pings
#     in 0.5 s and none 400 ms apart while it serves, the variables kept from the workers,
#     STOPPING=1 at SIGTERM with the watchdog set to an hour, no ping after it;
#  2. an abstract socket ("@name") and a watchdog meant for another pid: READY=1, no pings;
#  3. an unusable NOTIFY_SOCKET: logged, and the server serves anyway;
#  4. stderr as the journal's stream ($JOURNAL_STREAM): every line of the server and its
#     workers with its priority; another stream's variable changes nothing;
#  5. a refused config: exit status 2 (the unit does not restart it), an error line, the
#     reason as STATUS.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
T="$KV_DIR.notify"
cleanup() {
    set +e
    sink_stop
    kv_cleanup
    rm -rf "$T"
}
mkdir -p "$T"
trap cleanup EXIT

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
sink_wait "$T/notify.log" "^[0-9]+ READY=1" || true   # sent in the loop turn kvctl saw ready in
ready=$(awk '$2 ~ /^READY=1/ { print; exit }' "$T/notify.log")
[ -n "$ready" ] || die "no READY=1 when the workers were ready"
ready_ms=${ready%% *}
[ "$ready_ms" -ge 1500 ] || die "READY=1 at $ready_ms ms, before the slow workers were up (1.5 s)"
echo "$ready" | grep -q "STATUS=serving: arena /kvarena-$KV_NAME, 2048 pages, 2 workers" ||
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
grep -q " STOPPING=1|WATCHDOG_USEC=3600000000|STATUS=stopping" "$T/notify.log" ||
    die "no STOPPING=1 (with the watchdog set to an hour) at SIGTERM"
# systemd re-arms its watchdog on any ping, even while the service stops
awk '$2 ~ /^STOPPING=1/ { s = 1 } s && $2 == "WATCHDOG=1" { exit 1 }' "$T/notify.log" ||
    die "WATCHDOG=1 after STOPPING=1"
sink_stop

echo "== 2. an abstract socket, a watchdog meant for another pid"
sink_start "@kvarena-test-$KV_NAME" "$T/notify2.log"
server_start NOTIFY_SOCKET="@kvarena-test-$KV_NAME" WATCHDOG_USEC=400000 WATCHDOG_PID=1
sink_wait "$T/notify2.log" " READY=1" || die "no READY=1 on the abstract socket"
sleep 0.5
grep -q "WATCHDOG=1" "$T/notify2.log" && die "WATCHDOG=1 sent although WATCHDOG_PID was not the server's"
kv_stop
trap cleanup EXIT
grep -q " STOPPING=1|STATUS" "$T/notify2.log" ||
    die "no STOPPING=1 (and no watchdog interval: none was kept) on the abstract socket"
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

echo "== 5. a refused config: exit status 2, the reason as an error and as the STATUS"
sink_start "$T/notify" "$T/notify3.log"
: > "$KV_DIR.log"
rc=0
NOTIFY_SOCKET="$T/notify" JOURNAL_STREAM="$(stat -c %d:%i "$KV_DIR.log")" "$B/kvserver" \
    --config "$T/missing.ini" --name "$KV_NAME" --runtime-dir "$KV_DIR" > "$KV_DIR.log" 2>&1 || rc=$?
[ "$rc" -eq 2 ] || die "a missing config: exit status $rc, not 2 (the unit's RestartPreventExitStatus)"
grep -q "^<3>error \[[0-9]*\] cannot open config $T/missing.ini" "$KV_DIR.log" ||
    die "the refusal is not an error line: $(cat "$KV_DIR.log")"
sink_wait "$T/notify3.log" " STATUS=refused its config: cannot open config $T/missing.ini" ||
    die "no STATUS for the refused config: $(cat "$T/notify3.log")"
sink_stop
rm -f "$KV_DIR.log"
echo "a refused config: exit 2, <3> error line, STATUS=refused its config: ..."
echo "test_notify: PASS"
