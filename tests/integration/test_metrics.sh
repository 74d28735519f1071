#!/usr/bin/env bash
# Attend latency histograms and `kvctl metrics` (Prometheus text) against a real server:
#  1. after a client's prefills and decode steps: every completed job counted once in each
#     stage (wait, run, total) of its kind, prefill + decode = jobs done, total = wait + run
#     to the microsecond, rows at least one per job;
#  2. the Prometheus text parses: each sample's metric declared with # TYPE first, bucket
#     counts cumulative and non-decreasing, +Inf = _count = the JSON count, jobs_total and
#     the tenants' pages as `kvctl stats --json` says;
#  3. a prefill held 800 ms by stopped workers lands in the run and total buckets above
#     0.5 s, and not in the wait stage (it was not queued);
#  4. `kvctl metrics --listen`: GET /metrics 200 with the content type, length and figures
#     of kvctl stats, 404, 405, HEAD without a body, a silent client dropped, 503 with the
#     reason while the server does not answer, served again after.
set -eu
cd "$(dirname "$0")/../.."
. tests/integration/lib.sh
kv_start
"$B/tests/e2e_client" "$KV_EP" alice 100 10 > "$KV_DIR.client" 2>&1 ||
    { cat "$KV_DIR.client" >&2; die "the client failed"; }

check() {   # check STEP: the JSON stats and the metrics text against each other
    "$B/kvctl" --endpoint "$KV_ADMIN" stats --json > "$KV_DIR.json"
    "$B/kvctl" --endpoint "$KV_ADMIN" metrics > "$KV_DIR.prom"
    python3 - "$KV_DIR.json" "$KV_DIR.prom" "$1" <<'EOF'
import json, re, sys
st = json.load(open(sys.argv[1])); prom = open(sys.argv[2]).read(); step = sys.argv[3]
def fail(why): sys.exit("FAIL: " + why)
lat = st["latency"]; nb = len(lat["bounds_us"])
h = {(x["kind"], x["stage"]): x for x in lat["hists"]}
done = st["jobs"]["done"]
for x in lat["hists"]:
    if len(x["counts"]) != nb + 1 or sum(x["counts"]) != x["count"]:
        fail("histogram %s/%s: %d counts summing to %d, count %d" % (x["kind"], x["stage"], len(x["counts"]), sum(x["counts"]), x["count"]))
for k in ("prefill", "decode"):
    n = {g: h[(k, g)]["count"] for g in ("wait", "run", "total")}
    if len(set(n.values())) != 1: fail("%s stages count differently: %s" % (k, n))
    if h[(k, "total")]["sum_us"] != h[(k, "wait")]["sum_us"] + h[(k, "run")]["sum_us"]:
        fail("%s: total %d us != wait + run %d us" % (k, h[(k, "total")]["sum_us"], h[(k, "wait")]["sum_us"] + h[(k, "run")]["sum_us"]))
    if st["rows"][k] < n["total"]: fail("%s: %d rows for %d jobs" % (k, st["rows"][k], n["total"]))
if h[("prefill", "total")]["count"] + h[("decode", "total")]["count"] != done:
    fail("prefill + decode jobs != %d done" % done)
if h[("decode", "total")]["count"] == 0 or h[("prefill", "total")]["count"] == 0:
    fail("no decode or no prefill job counted")
# the exposition format: samples of declared metrics, histograms cumulative
types, samples = {}, {}
for line in prom.splitlines():
    m = re.match(r"# TYPE (kvarena_\w+) (counter|gauge|histogram)$", line)
    if m:
        if m.group(1) in types: fail("# TYPE %s twice" % m.group(1))
        types[m.group(1)] = m.group(2); continue
    if line.startswith("# HELP kvarena_"): continue
    m = re.match(r'(kvarena_\w+)(\{(?:\w+="[^"\\]*",?)*\})? (-?[0-9.e+-]+|\+Inf)$', line)
    if not m: fail("not a sample line: %r" % line)
    name, labels, v = m.group(1), m.group(2) or "", float(m.group(3))
    base = re.sub(r"_(bucket|sum|count)$", "", name) if name.startswith("kvarena_attend_latency") else name
    if base not in types: fail("%s sampled before its # TYPE" % name)
    samples[name + labels] = v
def s(key):
    if key not in samples: fail("no sample " + key)
    return samples[key]
for (k, g), x in h.items():
    lab = 'kind="%s",stage="%s"' % (k, g); cum = []
    for b in lat["bounds_us"] + [None]:
        le = "+Inf" if b is None else "%g" % (b / 1e6)
        cum.append(s('kvarena_attend_latency_seconds_bucket{%s,le="%s"}' % (lab, le)))
    if cum != sorted(cum): fail("%s buckets not cumulative: %s" % (lab, cum))
    if cum[-1] != x["count"] or s("kvarena_attend_latency_seconds_count{%s}" % lab) != x["count"]:
        fail("%s: +Inf %d, count %d, JSON %d" % (lab, cum[-1], s("kvarena_attend_latency_seconds_count{%s}" % lab), x["count"]))
    if abs(s("kvarena_attend_latency_seconds_sum{%s}" % lab) - x["sum_us"] / 1e6) > 1e-6: fail(lab + " sum")
if s('kvarena_jobs_total{result="done"}') != done: fail("jobs_total")
for t in st["tenants"]:
    if s('kvarena_tenant_pages{tenant="%s"}' % t["name"]) != t["pages"]: fail("tenant pages")
if step == "held":   # one prefill held 800 ms in a stopped worker
    i = lat["bounds_us"].index(500000)
    for g in ("run", "total"):
        if sum(h[("prefill", g)]["counts"][i + 1:]) < 1: fail("no prefill %s above 0.5 s: %s" % (g, h[("prefill", g)]["counts"]))
    if sum(h[("prefill", "wait")]["counts"][i + 1:]) != 0: fail("a prefill waited 0.5 s in the queue")
print("%s: %d jobs (%d prefill, %d decode), %d metric samples check out" % (step, done, h[("prefill", "total")]["count"], h[("decode", "total")]["count"], len(samples)))
EOF
}
check "after a client"

echo "== a prefill held 800 ms by stopped workers"
pkill -STOP -f "kvworker --shm /kvarena-$KV_NAME"
"$B/tests/e2e_client" "$KV_EP" alice 20 1 > "$KV_DIR.client" 2>&1 &
client=$!
for _ in $(seq 200); do   # its first prefill sent to a (stopped) worker: held from here
    "$B/kvctl" --endpoint "$KV_ADMIN" stats --json | grep -q '"state": *"busy"' && break
    sleep 0.02
done
sleep 0.8
pkill -CONT -f "kvworker --shm /kvarena-$KV_NAME"
wait "$client" || { cat "$KV_DIR.client" >&2; die "the held client failed"; }
check held
max=$("$B/kvctl" --endpoint "$KV_ADMIN" stats | awk '$1 == "prefill" && $2 == "run" { print $7 }')
echo "kvctl stats: prefill run p99 $max ms"

echo "== kvctl metrics --listen: the same text over HTTP"
port=$((20000 + RANDOM % 20000))
# ":PORT": every address (0.0.0.0 and ::, both bound), scraped here on 127.0.0.1
"$B/kvctl" --endpoint "$KV_ADMIN" --timeout 1000 metrics --listen ":$port" 2> "$KV_DIR.exporter" &
exporter=$!
cleanup() { kill "$exporter" 2>/dev/null; kv_cleanup; }
trap cleanup EXIT
# http PATH [METHOD]: the whole response (status line, headers, body) from the exporter
http() {
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf '%s %s HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n' "${2:-GET}" "$1" >&3
    tr -d '\r' <&3
    exec 3<&-
}
for _ in $(seq 100); do http /metrics > "$KV_DIR.http" 2>/dev/null && break; sleep 0.05; done
head -1 "$KV_DIR.http" | grep -q "^HTTP/1.1 200 OK$" || die "GET /metrics: $(head -3 "$KV_DIR.http")"
grep -q "^Content-Type: text/plain; version=0.0.4" "$KV_DIR.http" || die "no Prometheus content type"
sed '1,/^$/d' "$KV_DIR.http" > "$KV_DIR.body"
len=$(sed -n 's/^Content-Length: //p' "$KV_DIR.http")
[ "$len" -eq "$(wc -c < "$KV_DIR.body")" ] || die "Content-Length $len, body $(wc -c < "$KV_DIR.body") bytes"
done_http=$(sed -n 's/^kvarena_jobs_total{result="done"} //p' "$KV_DIR.body")
[ "$done_http" = "$(json_num "$("$B/kvctl" --endpoint "$KV_ADMIN" stats --json | tr -d ' ')" jobs done)" ] ||
    die "served jobs_total $done_http differs from kvctl stats"
http /other | head -1 | grep -q " 404 " || die "GET /other was not 404"
http /metrics POST | head -1 | grep -q " 405 " || die "POST /metrics was not 405"
http /metrics HEAD > "$KV_DIR.http"
head -1 "$KV_DIR.http" | grep -q " 200 " && [ "$(sed '1,/^$/d' "$KV_DIR.http" | wc -c)" -eq 0 ] ||
    die "HEAD /metrics: a status other than 200, or a body"
exec 4<>"/dev/tcp/127.0.0.1/$port"   # a client that never sends: dropped after 5 s, not a hang
http /metrics | head -1 | grep -q " 200 " || die "a silent client blocked the exporter for good"
exec 4<&-
echo "GET /metrics 200 ($len bytes, jobs_total as kvctl stats), /other 404, POST 405, HEAD no body"
kill -STOP "$KV_PID"   # a server that does not answer: 503 with the reason
http /metrics > "$KV_DIR.http"
kill -CONT "$KV_PID"
head -1 "$KV_DIR.http" | grep -q " 503 " || die "no 503 while the server did not answer: $(head -1 "$KV_DIR.http")"
grep -q "kvserver did not answer" "$KV_DIR.http" || die "the 503 does not say why"
echo "a server that does not answer: 503, then served again"
http /metrics | head -1 | grep -q " 200 " || die "not served again after the server came back"
kill "$exporter"; wait "$exporter" 2>/dev/null || true
trap kv_cleanup EXIT
rm -f "$KV_DIR.client" "$KV_DIR.json" "$KV_DIR.prom" "$KV_DIR.http" "$KV_DIR.body" "$KV_DIR.exporter"
kv_stop
echo "test_metrics: PASS"
