#!/usr/bin/env bash
# Runs each test given (an executable: a cmocka binary or a script) and prints one line per
# test, then the summary line "N passed, N failed". Exits non-zero if any failed.
# Output of each test goes to $B/test-logs/<name>.log and is shown when it fails.
set -u
B=${B:-build}
logs="$B/test-logs"
mkdir -p "$logs"
pass=0; fail=0; failed=()
for t in "$@"; do
    name=$(basename "$t")
    start=$(date +%s.%N)
    if timeout "${KV_TEST_TIMEOUT:-600}" "$t" >"$logs/$name.log" 2>&1; then
        pass=$((pass + 1)); res=PASS
    else
        fail=$((fail + 1)); res=FAIL; failed+=("$name")
    fi
    printf '%-4s %-40s %6.1fs\n' "$res" "$name" "$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{print b-a}')"
    if [ "$res" = FAIL ]; then sed 's/^/    | /' "$logs/$name.log" | tail -60; fi
done
[ "$fail" -eq 0 ] || echo "failed: ${failed[*]}"
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
