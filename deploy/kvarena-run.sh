#!/usr/bin/env bash
# Launches kvserver (which spawns its workers) on a config, runs the demo model runner
# against it, prints the server's stats, shuts everything down and checks that nothing is
# left behind. Exit status: the demo's (0 only if its checks passed) or 1 on a leftover.
#   deploy/kvarena-run.sh [CONFIG] [-- kvdemo options]
set -u
B=${B:-build}
conf=${1:-deploy/kvarena.ini}
shift || true
[ "${1:-}" = "--" ] && shift
tenants=$(sed -n 's/^\[tenant\.\([^]]*\)\].*/\1/p' "$conf" | paste -sd, -)
[ -n "$tenants" ] || tenants=default
rundir=$(sed -n 's/^runtime_dir *= *\([^ ;]*\).*/\1/p' "$conf")
rundir=${rundir:-/tmp/kvarena}
name=$(sed -n 's/^name *= *\([^ ;]*\).*/\1/p' "$conf")
name=${name:-default}
export KVARENA_ENDPOINT="ipc://$rundir/client.sock" KVARENA_ADMIN="ipc://$rundir/admin.sock"

echo "== kvserver --config $conf"
"$B/kvserver" --config "$conf" &
server=$!
trap 'kill -TERM $server 2>/dev/null; wait $server 2>/dev/null' EXIT
# wait (10 s at most) until the server answers and a worker has said Ready
ready=0
for _ in $(seq 100); do
    kill -0 $server 2>/dev/null || { echo "kvserver exited during start" >&2; exit 1; }
    [ "$("$B/kvctl" stats --json 2>/dev/null | grep -o '"state": *"ready"' | wc -l)" -ge 1 ] &&
        { ready=1; break; }
    sleep 0.1
done
[ $ready -eq 1 ] || { echo "no worker ready after 10 s" >&2; exit 1; }

echo "== kvdemo --tenants $tenants $*"
"$B/kvdemo" --tenants "$tenants" "$@"
rc=$?

echo "== kvctl stats"
"$B/kvctl" stats

echo "== shutting down"
kill -TERM $server
wait $server
src=$?
trap - EXIT
left=0
if [ -e "/dev/shm/kvarena-$name" ]; then echo "leftover: /dev/shm/kvarena-$name" >&2; left=1; fi
if ls "$rundir"/*.sock >/dev/null 2>&1; then echo "leftover sockets in $rundir" >&2; left=1; fi
if pgrep -f "kvworker --shm /kvarena-$name" >/dev/null 2>&1; then
    echo "leftover worker processes" >&2; left=1
fi
[ $src -eq 0 ] || { echo "kvserver exited with status $src" >&2; left=1; }
[ $left -eq 0 ] && echo "clean shutdown: no shared memory, sockets or processes left"
[ $rc -eq 0 ] && [ $left -eq 0 ] && echo "make run: PASS" || echo "make run: FAIL"
[ $rc -eq 0 ] && exit $left
exit $rc
