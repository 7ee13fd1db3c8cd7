#!/usr/bin/env bash
# Line coverage of the whole test suite (the library's unit tests and tests/api, with the
# `tenantry serve` and CLI subprocesses those tests start) measured by cargo-tarpaulin's LLVM
# engine (docs/testing.md#coverage). Prints the total figure and the 15 least covered files,
# writes the summary to bench/results/coverage.txt and tarpaulin's reports (lcov, json, log) to
# target/coverage/, and exits non-zero when a test fails or when the figure is below
# COVERAGE_MIN percent (default 85).
#
# Only the tenantry crate is instrumented (scripts/coverage-rustc.sh): the dependencies keep the
# dev build's fingerprints, so a run after `cargo test` or clippy rebuilds the crate alone, in the
# same target dir. Same services, client packages and RUST_TEST_THREADS as scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

CARGO_TARPAULIN_VERSION=0.37.5
min=${COVERAGE_MIN:-85}
out=target/coverage
summary=bench/results/coverage.txt

scripts/services.sh
require_cargo
prepare_tests
ensure_tool tarpaulin "$CARGO_TARPAULIN_VERSION"

mkdir -p "$out"
rm -f "$out/lcov.info" "$out/tarpaulin-report.json"
profraws="$(target_dir)/tarpaulin/profraws"
rm -rf "$profraws"
failures=$out/failed-binaries
: >"$failures"
host=$(rustc -vV | sed -n 's/^host: //p' | tr 'a-z-' 'A-Z_')
echo "== cargo tarpaulin --engine llvm (RUST_TEST_THREADS=$RUST_TEST_THREADS)"
start=$SECONDS
status=0
# The LLVM engine: each instrumented process writes its counters to a file when it exits
# (LLVM_PROFILE_FILE, which the servers and CLI runs the tests start inherit), so the code only
# they run (main, the serve loop, the subcommands) counts. A server the tests kill with SIGKILL
# writes nothing; tests/api/helpers.rs stops the others with SIGTERM under coverage.
# RUSTC_WORKSPACE_WRAPPER instruments the tenantry crate only, and the `cargo` tarpaulin runs is
# scripts/coverage-bin/cargo, which drops tarpaulin's RUSTFLAGS: they would change every
# dependency's fingerprint and rebuild them all.
# The tests themselves, the benches and the vendored tokio-postgres are not the code under test:
# out of the denominator.
# scripts/coverage-bin/test-runner runs each test binary and records a failure instead of
# letting tarpaulin drop that binary's coverage.
# --tests: every test target once (the library's and the binary's unit tests, tests/api); the
# `tenantry` binary those tests start is built too and its counters are mapped.
# --timeout: per test binary; tests/api runs for many minutes on a loaded machine.
# --implicit-test-threads: RUST_TEST_THREADS decides, not tarpaulin's one thread per core.
env COVERAGE_REAL_CARGO="$(command -v cargo)" PATH="$(pwd)/scripts/coverage-bin:$PATH" \
    RUSTC_WORKSPACE_WRAPPER="$(pwd)/scripts/coverage-rustc.sh" \
    "CARGO_TARGET_${host}_RUNNER=$(pwd)/scripts/coverage-bin/test-runner" \
    COVERAGE_FAILURES="$(pwd)/$failures" \
    cargo tarpaulin --locked --engine llvm --skip-clean \
    --tests --no-fail-fast --timeout 3600 --implicit-test-threads \
    --exclude-files 'tests/*' 'bench/*' 'benches/*' 'vendor/*' \
    --out Lcov --out Json --output-dir "$out" 2>&1 | tee "$out/tarpaulin.log" || status=$?
elapsed=$((SECONDS - start))
rm -f build_rs_cov.profraw
if [ -s "$failures" ]; then
    echo "error: tests failed (coverage still counted):" >&2
    cat "$failures" >&2
    [ "$status" -ne 0 ] || status=101
fi
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
    echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), cargo-tarpaulin $CARGO_TARPAULIN_VERSION (LLVM engine)," \
        "RUST_TEST_THREADS=$RUST_TEST_THREADS, $elapsed s, load: $(uptime | sed 's/.*load average: //')"
    echo
    echo "15 least covered files (covered/lines, lines missed):"
    awk '{printf "%6.1f%%  %5d/%-5d  %5d  %s\n", 100 * $1 / $2, $1, $2, $2 - $1, $3}' <<<"$table" |
        sort -n | awk 'NR <= 15' # not head: it stops reading, and pipefail turns sort's SIGPIPE into exit 141
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
