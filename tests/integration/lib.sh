# lib.sh — start and stop a real kvserver (with its workers) for a black-box test.
# Each test gets its own arena name and runtime dir, so tests never share a server.
B=${B:-build}
# under ASan (make test SANITIZE=1) freed memory sits in a quarantine that would read as
# growth in the tests that bound the server's memory: keep it small
export ASAN_OPTIONS=${ASAN_OPTIONS:-quarantine_size_mb=4}
KV_NAME="t$$-$RANDOM"
KV_DIR="/tmp/kvarena-test-$KV_NAME"
KV_EP="ipc://$KV_DIR/client.sock"
KV_ADMIN="ipc://$KV_DIR/admin.sock"
KV_PID=

die() { echo "FAIL: $*" >&2; exit 1; }

# kv_start [kvserver options...]: starts the server (on $KV_CONF, deploy/kvarena.ini by
# default) and waits until its workers are ready.
kv_start() {
    "$B/kvserver" --config "${KV_CONF:-deploy/kvarena.ini}" --name "$KV_NAME" --runtime-dir "$KV_DIR" "$@" \
        >"$KV_DIR.log" 2>&1 &
    KV_PID=$!
    trap kv_cleanup EXIT
    kv_wait_ready
}

# kv_wait_ready: waits up to 10 s until the server's 2 workers are ready (dies otherwise).
kv_wait_ready() {
    for _ in $(seq 200); do
        kill -0 "$KV_PID" 2>/dev/null || { cat "$KV_DIR.log" >&2; die "kvserver exited"; }
        [ "$(kv_ready_workers)" -ge 2 ] && return 0
        sleep 0.05
    done
    cat "$KV_DIR.log" >&2
    die "workers not ready after 10 s"
}

# kv_stop: SIGTERM, then checks that the server exited 0 and left nothing behind.
kv_stop() {
    kv_self_check
    kill -TERM "$KV_PID"
    wait "$KV_PID"; local rc=$?
    [ "$rc" -eq 0 ] || die "kvserver exited with $rc"
    [ -e "/dev/shm/kvarena-$KV_NAME" ] && die "shared memory segment left behind"
    ls "$KV_DIR"/*.sock >/dev/null 2>&1 && die "ipc sockets left behind"
    pgrep -f "kvworker --shm /kvarena-$KV_NAME" >/dev/null && die "worker processes left behind"
    trap - EXIT
    rmdir "$KV_DIR" 2>/dev/null
    rm -f "$KV_DIR.log"
    return 0
}

kv_cleanup() {
    set +e   # runs from the EXIT trap of a `set -e` script: every step must run
    [ -n "$KV_PID" ] && kill -KILL "$KV_PID" 2>/dev/null
    sleep 0.1
    pkill -KILL -f "kvworker --shm /kvarena-$KV_NAME" 2>/dev/null
    rm -f "/dev/shm/kvarena-$KV_NAME"
    [ -f "$KV_DIR.log" ] && tail -20 "$KV_DIR.log" >&2
    rm -rf "$KV_DIR" "$KV_DIR".*
}

# kv_ready_workers: how many workers the server lists as ready.
kv_ready_workers() {
    "$B/kvctl" --endpoint "$KV_ADMIN" stats --json 2>/dev/null | grep -o '"state": *"ready"' | wc -l
}

# json_num JSON SECTION KEY: the number at SECTION.KEY of `kvctl stats --json` output.
json_num() {
    echo "$1" | grep -o "\"$2\":{[^}]*}" | grep -o "\"$3\":[0-9]*" | head -1 | cut -d: -f2
}

# kv_self_check: the server checks its own invariants (kvctl check: allocator, LRU, index,
# every page's ref count against the sequences and jobs that hold it).
kv_self_check() {
    "$B/kvctl" --endpoint "$KV_ADMIN" check >/dev/null || die "server self-check failed (see above)"
}

# kv_check_pages: free + in use + cached == total; with "idle", nothing in use; self-check.
kv_check_pages() {
    kv_self_check
    local json total free used cached
    json=$("$B/kvctl" --endpoint "$KV_ADMIN" stats --json)   # one snapshot
    total=$(json_num "$json" pages total); free=$(json_num "$json" pages free)
    used=$(json_num "$json" pages in_use); cached=$(json_num "$json" pages cached)
    [ $((free + used + cached)) -eq "$total" ] || die "free $free + in use $used + cached $cached != total $total"
    [ "${1:-}" != idle ] || [ "$used" -eq 0 ] || die "$used pages still in use with no sequence open"
}

# kv_clients_start ARGS...: runs e2e_client ARGS again and again in the background (each
# run on fresh tokens) until kv_clients_stop, so a fault test can go on as long as it likes.
kv_clients_start() {
    rm -f "$KV_DIR.stop" "$KV_DIR.failed"
    (
        runs=0
        while [ ! -e "$KV_DIR.stop" ]; do
            if ! "$B/tests/e2e_client" "$KV_EP" alice "$@" > "$KV_DIR.client" 2>&1; then
                cp "$KV_DIR.client" "$KV_DIR.failed"
                break
            fi
            runs=$((runs + 1))
            echo "$runs" > "$KV_DIR.runs"
        done
    ) &
    KV_CLIENTS=$!
}

# kv_clients_stop: lets the current run finish; fails the test if any run failed.
kv_clients_stop() {
    touch "$KV_DIR.stop"
    wait "$KV_CLIENTS" || true
    if [ -e "$KV_DIR.failed" ]; then
        cat "$KV_DIR.failed" >&2
        die "a client run failed"
    fi
    echo "client runs completed: $(cat "$KV_DIR.runs" 2>/dev/null || echo 0)"
    grep -h "retries\|max relative\|forks" "$KV_DIR.client" || true
    rm -f "$KV_DIR.stop" "$KV_DIR.client" "$KV_DIR.runs"
}

# kv_clients_alive: the client loop is still running (no run failed).
kv_clients_alive() { kill -0 "$KV_CLIENTS" 2>/dev/null; }

# sink_start SOCKET LOG: a stand-in for systemd's notify socket (notify_sink) logging what
# it receives to LOG, bound before this returns; sink_stop ends it (and does nothing if
# none runs).
SINK_PID=
sink_start() {
    : > "$2"
    "$B/tests/notify_sink" "$1" "$2" &
    SINK_PID=$!
    for _ in $(seq 100); do grep -q BOUND "$2" && return 0; sleep 0.02; done
    die "notify_sink did not bind $1"
}
sink_stop() {
    [ -n "$SINK_PID" ] || return 0
    kill "$SINK_PID" 2>/dev/null; wait "$SINK_PID" || true; SINK_PID=
}

# sink_wait LOG PATTERN: waits up to 10 s for a line of LOG matching PATTERN (grep -E).
sink_wait() {
    for _ in $(seq 200); do grep -qE "$2" "$1" && return 0; sleep 0.05; done
    return 1
}

# kv_keypair: a new CURVE key pair, "PUBLIC SECRET" (kvctl keygen; $KVCTL, else the build's).
kv_keypair() { "${KVCTL:-$B/kvctl}" keygen | cut -d' ' -f3 | paste -sd' '; }
# kv_server_key FILE: a new server key pair, its secret in FILE (mode 600); prints its public.
kv_server_key() {
    local pub sec
    read -r pub sec < <(kv_keypair)
    printf '%s\n' "$sec" > "$1"
    chmod 600 "$1"
    echo "$pub"
}
