# Shared by the scripts under scripts/ (sourced, not executed).

# cargo from rustup lives in ~/.cargo/bin, which a non-login shell may not have on its PATH.
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
fi

require_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        cat >&2 <<'MSG'
error: cargo (the Rust toolchain) is not installed. Install it with rustup:

    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal \
        --component rustfmt,clippy
    . "$HOME/.cargo/env"

then run this script again.
MSG
        exit 1
    fi
}

# rustfmt and clippy are rustup components; add them when the toolchain lacks them.
require_component() {
    local tool=$1 component=$2
    if ! cargo "$tool" --version >/dev/null 2>&1; then
        if command -v rustup >/dev/null 2>&1; then
            echo "adding the $component component with rustup" >&2
            rustup component add "$component"
        else
            echo "error: 'cargo $tool' is missing; install the $component component" >&2
            exit 1
        fi
    fi
}

# The binaries built by cargo, wherever CARGO_TARGET_DIR points.
target_dir() {
    if [ -n "${CARGO_TARGET_DIR:-}" ]; then
        printf '%s' "$CARGO_TARGET_DIR"
    else
        cargo metadata --format-version 1 --no-deps 2>/dev/null |
            sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p'
    fi
}

# What the test suite needs besides the services (scripts/test.sh and scripts/coverage.sh):
# leftover test databases dropped, the Python venvs and npm packages of the client tests, and
# RUST_TEST_THREADS bounded.
prepare_tests() {
    # Once per run: scripts/test.sh prepares, then may hand over to scripts/coverage.sh.
    if [ -n "${TENANTRY_TESTS_PREPARED:-}" ]; then
        return 0
    fi
    # Test databases are dropped by each test when it ends; a killed run leaves some behind. Drop
    # those nobody uses that are older than ten minutes, so a concurrent test run on the same
    # server keeps its own.
    local leftovers venv db
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

    # schemathesis (tests/api/schemathesis.rs), pinned in
    # tests/clients/requirements-schemathesis.txt, in a venv under target/, reinstalled when the
    # pins change. Without python3 a local run skips that test; CI must run it.
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

    # Each test runs its own server and database with a few connections each; bound the parallel
    # tests so a many-core machine stays under PostgreSQL's default max_connections (100).
    if [ -z "${RUST_TEST_THREADS:-}" ]; then
        local threads
        threads=$(nproc 2>/dev/null || echo 4)
        export RUST_TEST_THREADS=$((threads > 8 ? 8 : threads))
    fi
    export TENANTRY_TESTS_PREPARED=1
}

# Installs `cargo <tool>` at the pinned version with `cargo install --locked` unless that version
# is already there (extra arguments go to cargo install). A fresh machine builds it once.
ensure_tool() {
    local tool=$1 version=$2
    shift 2
    local have
    have=$(cargo "$tool" --version 2>/dev/null | awk '{print $2}' || true)
    if [ "$have" = "$version" ]; then
        return 0
    fi
    echo "installing cargo-$tool $version (was: ${have:-absent}); this builds it once" >&2
    local start=$SECONDS
    if ! cargo install --locked --quiet "cargo-$tool@$version" "$@"; then
        echo "error: could not install cargo-$tool $version" >&2
        exit 1
    fi
    echo "cargo-$tool $version installed in $((SECONDS - start)) s" >&2
}
