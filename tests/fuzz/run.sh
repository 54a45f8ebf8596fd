#!/usr/bin/env bash
# Fuzz each target for SECONDS, one after the other (one core each):
#   tests/fuzz/run.sh SECONDS [newick|table|api ...]
# FUZZ_RUNS=N stops each target after N executions instead (SECONDS still
# caps the time).
# Builds the libFuzzer binaries with clang, ASan and UBSan into build-fuzz/
# (or $FUZZ_BUILD), grows a working corpus there from the committed seeds,
# and prints executions and crashes per target. Exits 1 if any target
# crashed; the input is in build-fuzz/fuzz-crashes/: fix the bug, then copy
# the input into tests/fuzz/corpus/TARGET/ so that it stays a regression
# test (the fuzz_TARGET_corpus unit tests replay that directory).
set -euo pipefail
secs="${1:?usage: run.sh SECONDS [TARGET...]}"
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(newick table api)
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
build="${FUZZ_BUILD:-$root/build-fuzz}"

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$root" -Dfuzz=true -Dexamples=false \
        -Db_sanitize=address,undefined -Db_lundef=false \
        -Dc_args="-fsanitize=fuzzer-no-link -fno-sanitize-recover=all" \
        >/dev/null
fi
if ! ninja -C "$build" "${targets[@]/#/tests/fuzz/fuzz_}" >"$build/build.log" 2>&1; then
    grep -m 5 "error:" "$build/build.log"
    echo "fuzz: the clang build failed (log: $build/build.log)"
    exit 2
fi

failed=0
mkdir -p "$build/fuzz-crashes"
for t in "${targets[@]}"; do
    work="$build/fuzz-corpus/$t"
    log="$build/fuzz-$t.log"
    mkdir -p "$work"
    dict=()
    [ -f "$here/$t.dict" ] && dict=(-dict="$here/$t.dict")
    rc=0
    runs_arg=()
    [ -n "${FUZZ_RUNS:-}" ] && runs_arg=(-runs="$FUZZ_RUNS")
    "$build/tests/fuzz/fuzz_$t" -max_total_time="$secs" -timeout=10 "${runs_arg[@]}" \
        -max_len=8192 -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$build/fuzz-crashes/$t-" \
        "$work" "$here/corpus/$t" >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    crashes=$(grep -c '^==[0-9]*==ERROR\|^SUMMARY: \|check failed' "$log" || true)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1 s/p' "$log")
    echo "fuzz_$t: ${runs:-?} executions in ${took:-less than $secs s}, corpus $(ls "$work" | wc -l) inputs, exit $rc"
    if [ "$rc" -ne 0 ]; then
        failed=1
        echo "fuzz_$t: CRASH ($crashes reports); log $log:"
        grep -m 20 -A 12 'ERROR\|check failed\|deadly signal' "$log" || tail -30 "$log"
    fi
done
exit $failed
