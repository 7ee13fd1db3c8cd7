#!/usr/bin/env bash
# Runs tenantry locally: services, a release build, `tenantry migrate` (creates and migrates the
# database), `tenantry demo` (prints the demo tenant and its login), then `tenantry serve`.
# Every variable of docs/configuration.md can be given in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

scripts/services.sh
require_cargo

echo "== building tenantry (release)"
cargo build --release --locked --bin tenantry
bin="$(target_dir)/release/tenantry"
[ -x "$bin" ] || { echo "error: $bin was not built" >&2; exit 1; }

export LOG_FORMAT=${LOG_FORMAT:-pretty}
if [ -z "${PLATFORM_ADMIN_TOKEN:-}" ]; then
    # A well-known value is fine on 127.0.0.1; set your own for anything reachable by others.
    export PLATFORM_ADMIN_TOKEN=dev-operator-token
    dev_token=1
fi

echo "== tenantry migrate"
"$bin" migrate
echo "== tenantry demo"
"$bin" demo

bind=${BIND:-127.0.0.1:8080}
echo
echo "operator token (PLATFORM_ADMIN_TOKEN): $PLATFORM_ADMIN_TOKEN${dev_token:+   (development default)}"
echo "try:  curl -s http://$bind/healthz"
echo "      curl -s http://$bind/admin/tenants -H 'Authorization: Bearer $PLATFORM_ADMIN_TOKEN'"
if [ -n "${dev_token:-}" ] && [[ "$bind" != 127.* && "$bind" != localhost:* && "$bind" != "[::1]":* ]]; then
    echo "warning: BIND=$bind is reachable from other machines and the operator token is the" >&2
    echo "         development default; set PLATFORM_ADMIN_TOKEN" >&2
fi
echo "== tenantry serve on $bind (Ctrl-C stops it)"
exec "$bin" serve
