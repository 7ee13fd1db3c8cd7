#!/usr/bin/env bash
# The security scan CI runs (called by scripts/test.sh; docs/security.md):
#   1. `cargo audit` against the RustSec advisory database snapshot kept beside the clone in
#      ../shared/advisory-db (ADVISORY_DB overrides it): any vulnerability fails;
#   2. `cargo deny check licenses bans` with deny.toml: licences compatible with Apache-2.0,
#      no OpenSSL;
#   3. vendor/tokio-postgres, which cargo-audit cannot see (a path dependency), is the published
#      crate it claims to be, changed only by the reviewed diff in vendor/tokio-postgres.diff;
#      then that published version is audited like the rest.
# cargo-audit and cargo-deny are installed with `cargo install --locked` at pinned versions when
# absent (a fresh machine spends several minutes building them once).
#
# `scripts/audit.sh --write-vendor-diff` rewrites vendor/tokio-postgres.diff after a deliberate
# change to the vendored crate (review the diff it prints before committing it);
# `scripts/audit.sh --vendor-only` runs the third check alone.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

CARGO_AUDIT_VERSION=0.22.2
CARGO_DENY_VERSION=0.20.2

say() { printf 'audit: %s\n' "$*" >&2; }
die() { printf 'audit: error: %s\n' "$*" >&2; exit 1; }

require_cargo

vendor_check() {
    local name=tokio-postgres dir=vendor/tokio-postgres
    local version
    version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$dir/Cargo.toml" | head -1)
    [ -n "$version" ] || die "$dir/Cargo.toml names no version"
    grep -q "^# $name $version," "$dir/README.md" ||
        die "$dir/README.md does not say it is $name $version"
    # The lockfile must resolve the crate to the vendored copy at that version.
    awk -v n="$name" -v v="$version" '
        $0 == "name = \"" n "\"" { getline; if ($0 == "version = \"" v "\"") found = 1 }
        END { exit !found }' Cargo.lock || die "Cargo.lock does not hold $name $version"

    local work
    work=$(mktemp -d)
    # shellcheck disable=SC2064 # expand now: the directory is local to this function
    trap "rm -rf '$work'" RETURN
    # cargo itself fetches the published crate into its registry cache, checking it against the
    # checksum the registry's index publishes; that checksum lands in the probe's lockfile.
    mkdir -p "$work/probe/src"
    : >"$work/probe/src/lib.rs"
    printf '[package]\nname = "probe"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = { version = "=%s", default-features = false }\n' \
        "$name" "$version" >"$work/probe/Cargo.toml"
    (cd "$work/probe" && CARGO_TARGET_DIR="$work/probe/target" cargo fetch --quiet) ||
        die "cargo could not fetch $name $version from the registry"
    local want got crate
    want=$(awk -v n="$name" -v v="$version" '
        $0 == "name = \"" n "\"" { getline; if ($0 == "version = \"" v "\"") hit = 1; next }
        hit && /^checksum = / { gsub(/"/, "", $3); print $3; exit }
        /^$/ { hit = 0 }' "$work/probe/Cargo.lock")
    [ -n "$want" ] || die "the registry gives no checksum for $name $version"
    crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/"$name-$version.crate" 2>/dev/null |
        head -1 || true)
    [ -n "$crate" ] || die "$name-$version.crate is not in cargo's registry cache after the fetch"
    got=$(sha256sum "$crate" | awk '{print $1}')
    [ "$got" = "$want" ] || die "$name-$version.crate has sha256 $got, the index says $want"
    tar -xzf "$crate" -C "$work"
    local upstream="$work/$name-$version"

    # Files of the published crate that were left out on purpose (README.md says so).
    local left_out=(.cargo_vcs_info.json CHANGELOG.md Cargo.lock Cargo.toml.orig benches tests)
    local excludes=() item
    for item in "${left_out[@]}"; do
        [ -e "$upstream/$item" ] || die "$name $version has no $item: update the left-out list"
        rm -rf "${upstream:?}/$item"
    done
    # README.md is tenantry's description of the copy, not the crate's.
    excludes+=(--exclude=README.md)
    mkdir -p "$work/vendor"
    cp -r "$dir" "$work/vendor/"
    local diff_out="$work/vendor.diff"
    # Without timestamps, so the same trees always give the same text.
    (cd "$work" && diff -ruN "${excludes[@]}" "$name-$version" "$dir" |
        sed 's#^\(---\|+++\) \([^	]*\)	.*#\1 \2#') >"$diff_out" || true
    if [ "${1:-}" = write ]; then
        cp "$diff_out" "$dir.diff"
        cat "$dir.diff"
        say "wrote $dir.diff"
        return 0
    fi
    [ -f "$dir.diff" ] || die "$dir.diff is missing (scripts/audit.sh --write-vendor-diff)"
    if ! cmp -s "$diff_out" "$dir.diff"; then
        say "$dir differs from $name $version otherwise than $dir.diff says:"
        diff -u "$dir.diff" "$diff_out" >&2 || true
        die "vendored $name is not the published crate plus the reviewed change"
    fi
    # Every added line of source in the reviewed change sits in a block marked "tenantry"; a
    # change smuggled into the diff without the marker is refused here too.
    if ! awk '
        function end_hunk() { if (adds && !marked) bad = 1; adds = 0; marked = 0 }
        /^diff / || /^--- / { next }
        /^\+\+\+ / { end_hunk(); file = $2; next }
        /^@@/ { end_hunk(); next }
        file !~ /\.rs$/ { next }
        /^\+/ { if ($0 ~ /tenantry/) marked = 1; else if ($0 !~ /^\+use /) adds = 1; next }
        /^-/ && $0 !~ /^-use / { bad = 1 }
        END { end_hunk(); exit bad }' "$dir.diff"; then
        die "$dir.diff adds source outside a block marked \"tenantry\""
    fi
    say "$dir is $name $version as published (sha256 $got) plus $dir.diff"
    # So the published version's advisories apply to the copy: a lockfile of that one crate,
    # audited like the project's.
    if [ -n "${2:-}" ]; then
        printf 'version = 4\n\n[[package]]\nname = "%s"\nversion = "%s"\nsource = "%s"\nchecksum = "%s"\n' \
            "$name" "$version" "registry+https://github.com/rust-lang/crates.io-index" "$want" \
            >"$work/Cargo.lock"
        cargo audit --db "$2" --no-fetch --stale --file "$work/Cargo.lock"
    fi
}

case "${1:-}" in
--write-vendor-diff) vendor_check write; exit 0 ;;
--vendor-only) vendor_check; exit 0 ;;
"") ;;
*) die "unknown argument $1 (--write-vendor-diff, --vendor-only or none)" ;;
esac

db=${ADVISORY_DB:-../shared/advisory-db}
if [ ! -d "$db/crates" ]; then
    die "no RustSec advisory database at $db (from $(pwd)): CI lays shared/ beside the clone;
       elsewhere set ADVISORY_DB to a copy of https://github.com/rustsec/advisory-db"
fi

ensure_tool audit "$CARGO_AUDIT_VERSION" --no-default-features
ensure_tool deny "$CARGO_DENY_VERSION"

echo "== cargo audit (advisory database: $db)"
# --deny warnings would also fail on unmaintained or yanked crates; only vulnerabilities fail.
cargo audit --db "$db" --no-fetch --stale

echo "== cargo deny check licenses bans"
cargo deny --locked check licenses bans

echo "== vendor/tokio-postgres against the published crate, then its advisories"
vendor_check check "$db"
