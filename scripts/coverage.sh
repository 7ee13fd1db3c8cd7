#!/usr/bin/env bash
# Line coverage of the whole test suite (the library's unit tests and tests/api, with the
# `tenantry serve` and CLI subprocesses those tests start) measured by cargo-tarpaulin's ptrace
# engine, which needs no LLVM tools (docs/testing.md). Prints the total figure and the 15 least
# covered files, writes the summary to bench/results/coverage.txt and tarpaulin's reports (lcov,
# json, log) to target/coverage/, and exits non-zero when a test fails or when the figure is
# below COVERAGE_MIN percent (default 85).
#
# Slow: the instrumented build goes to its own target dir (COVERAGE_TARGET_DIR, default
# target/tarpaulin, so the dev build in target/debug stays), and every test runs under ptrace.
# Same services, client packages and RUST_TEST_THREADS as scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

CARGO_TARPAULIN_VERSION=0.37.5
min=${COVERAGE_MIN:-85}
out=target/coverage
build=${COVERAGE_TARGET_DIR:-target/tarpaulin}
summary=bench/results/coverage.txt

scripts/services.sh
require_cargo
prepare_tests
ensure_tool tarpaulin "$CARGO_TARPAULIN_VERSION"

mkdir -p "$out"
rm -f "$out/lcov.info" "$out/tarpaulin-report.json"
echo "== cargo tarpaulin (RUST_TEST_THREADS=$RUST_TEST_THREADS)"
start=$SECONDS
status=0
# --follow-exec: the servers and CLI runs the tests start are traced too, so the code only they
# run (main, the serve loop, the subcommands) counts. The tests themselves, the benches and the
# vendored tokio-postgres are not the code under test: out of the denominator.
# --timeout: a long test (schemathesis, the browser tests) under ptrace takes minutes.
# --implicit-test-threads: RUST_TEST_THREADS decides, not tarpaulin's one thread per core.
cargo tarpaulin --locked --engine ptrace --skip-clean --target-dir "$build" \
    --lib --bins --tests --follow-exec --no-fail-fast --timeout 1800 --implicit-test-threads \
    --exclude-files 'tests/*' 'bench/*' 'benches/*' 'vendor/*' \
    --out Lcov --out Json --output-dir "$out" 2>&1 | tee "$out/tarpaulin.log" || status=$?
elapsed=$((SECONDS - start))
[ -f "$out/lcov.info" ] || { echo "error: tarpaulin wrote no report (see $out/tarpaulin.log)" >&2; exit 1; }

# Per file from the lcov report: its coverable lines (DA:<line>,<hits>) and those hit.
table=$(awk -v root="$(pwd)/" '
    /^SF:/ { file = substr($0, 4); if (index(file, root) == 1) file = substr(file, length(root) + 1) }
    /^DA:/ { split(substr($0, 4), da, ","); found[file]++; if (da[2] > 0) hit[file]++ }
    END { for (f in found) printf "%d %d %s\n", hit[f], found[f], f }' "$out/lcov.info")
read -r hit found < <(awk '{h += $1; f += $2} END {print h + 0, f + 0}' <<<"$table")
[ "$found" -gt 0 ] || { echo "error: the lcov report counts no lines" >&2; exit 1; }
figure=$(awk -v h="$hit" -v f="$found" 'BEGIN {printf "%.2f", 100 * h / f}')

{
    echo "line coverage: $figure% ($hit of $found lines), $(date -u +%F)"
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), cargo-tarpaulin $CARGO_TARPAULIN_VERSION (ptrace, --follow-exec)," \
        "RUST_TEST_THREADS=$RUST_TEST_THREADS, $elapsed s, load: $(uptime | sed 's/.*load average: //')"
    echo
    echo "15 least covered files (covered/lines, lines missed):"
    awk '{printf "%6.1f%%  %5d/%-5d  %5d  %s\n", 100 * $1 / $2, $1, $2, $2 - $1, $3}' <<<"$table" |
        sort -n | head -15
} | tee "$summary"
echo "(per line: $out/lcov.info, $out/tarpaulin-report.json; summary: $summary)"

if [ "$status" -ne 0 ]; then
    echo "error: the test run failed under tarpaulin (exit $status): see $out/tarpaulin.log" >&2
    exit "$status"
fi
if awk -v x="$figure" -v m="$min" 'BEGIN {exit !(x < m)}'; then
    echo "error: line coverage $figure% is below COVERAGE_MIN=$min%" >&2
    exit 1
fi
echo "== coverage $figure% >= $min%"
