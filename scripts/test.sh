#!/usr/bin/env bash
# Everything CI checks, in the order CI checks it: services, formatting, lints (warnings are
# errors), then every test target against the real PostgreSQL and Redis. Exits non-zero on the
# first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

scripts/services.sh
require_cargo
require_component fmt rustfmt
require_component clippy clippy

# Test databases are dropped by each test when it ends; a killed run leaves some behind. Drop
# those nobody uses that are older than ten minutes, so a concurrent test run on the same
# server keeps its own.
leftovers=$(psql -X -w -q -h 127.0.0.1 -U postgres -d postgres -Atc "
    select datname from pg_database d
    where datname like 'tenantry\_test\_%'
      and not exists (select 1 from pg_stat_activity a where a.datname = d.datname)
      and (pg_stat_file('base/' || d.oid || '/PG_VERSION')).modification
          < now() - interval '10 minutes'" 2>/dev/null || true)
if [ -n "$leftovers" ]; then
    echo "dropping $(wc -l <<<"$leftovers") leftover test database(s)"
    while read -r db; do
        psql -X -w -q -h 127.0.0.1 -U postgres -d postgres \
            -c "drop database if exists \"$db\"" >/dev/null 2>&1 || true
    done <<<"$leftovers"
fi

# schemathesis (tests/api/schemathesis.rs), pinned in tests/clients/requirements-schemathesis.txt,
# in a venv under target/, reinstalled when the pins change. Without python3 a local run skips
# that test; CI must run it.
if command -v python3 >/dev/null 2>&1; then
    venv=target/schemathesis-venv
    if ! cmp -s tests/clients/requirements-schemathesis.txt "$venv/installed.txt"; then
        echo "== pip install -r tests/clients/requirements-schemathesis.txt"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements-schemathesis.txt
        cp tests/clients/requirements-schemathesis.txt "$venv/installed.txt"
    fi
elif [ "${CI:-}" = true ]; then
    echo "error: python3 is required under CI (the schemathesis test)" >&2
    exit 1
else
    echo "warning: python3 is missing: the schemathesis test will be skipped" >&2
fi

# The JavaScript OFREP client (tests/api/ofrep.rs) runs with the packages of the committed
# lockfile, installed once here rather than by the test. Without Node a local run skips that
# test; CI must run it.
if command -v npm >/dev/null 2>&1 && command -v node >/dev/null 2>&1; then
    echo "== npm ci --prefix tests/clients"
    npm ci --prefix tests/clients --no-audit --no-fund --loglevel=error
    # The dashboard's browser tests (tests/api/dashboard.rs): Playwright with Debian's Chromium,
    # never Playwright's own browser download.
    echo "== npm ci --prefix tests/browser"
    PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
elif [ "${CI:-}" = true ]; then
    echo "error: node and npm are required under CI (scripts/services.sh installs them)" >&2
    exit 1
else
    echo "warning: node or npm is missing: the JavaScript OFREP client test will be skipped" >&2
fi

# The Python Standard Webhooks client (tests/api/webhooks.rs) runs from a venv of the pinned
# tests/clients/requirements.txt; without python3 a local run skips that test, CI must run it.
if command -v python3 >/dev/null 2>&1; then
    venv=target/webhooks-venv
    if ! cmp -s tests/clients/requirements.txt "$venv/installed.txt"; then
        echo "== pip install -r tests/clients/requirements.txt"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt
        cp tests/clients/requirements.txt "$venv/installed.txt"
    fi
elif [ "${CI:-}" = true ]; then
    echo "error: python3 is required under CI" >&2
    exit 1
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
# cargo audit (RustSec, ../shared/advisory-db), licences and bans, the vendored crate's origin.
scripts/audit.sh
echo "== cargo test"
# Each test runs its own server and database with a few connections each; bound the parallel
# tests so a many-core machine stays under PostgreSQL's default max_connections (100).
if [ -z "${RUST_TEST_THREADS:-}" ]; then
    threads=$(nproc 2>/dev/null || echo 4)
    export RUST_TEST_THREADS=$((threads > 8 ? 8 : threads))
fi
# Benches are left out: they are compiled by clippy above and run on demand (bench/), where
# they load millions of rows.
# No doctests (the crate has no examples in its docs); the summary below adds up every runner.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --locked --lib --bins --tests 2>&1 | tee "$log"
passed=$(grep -Eo 'test result: [a-zA-Z]+\. [0-9]+ passed' "$log" | awk '{s += $4} END {print s + 0}')
failed=$(grep -Eo '[0-9]+ failed' "$log" | awk '{s += $1} END {print s + 0}')
echo "== all checks passed"
echo "tests: $passed passed, $failed failed"
